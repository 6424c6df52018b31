/* Unit tests for discovery/portmap.c: the checks of what a router answers (hostile tables
 * for UPnP's address text and NAT-PMP's numbers), the renewal and retry schedule, and the
 * object's life on a real loop in an empty network namespace (argument "live", as root; it uses
 * libuv's thread pool, so the arm64 run under qemu-user skips it): with no router
 * every attempt fails, the callback reports it once per change, and close frees everything
 * (uv_loop_close == 0), also while a request is in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

#include <cmocka.h>

#include "discovery/portmap.h"

#define N_ITEMS(a) (sizeof(a) / sizeof((a)[0]))

static void test_check_upnp(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint16_t port;
        int want;
    } cases[] = {
        {"198.51.100.7", 15022, 0},
        {"11.0.0.10", 1, 0},
        {"10.1.2.3", 15022, 0}, /* behind another NAT: still useful on that network */
        {"198.51.100.7", 0, KM_ERR_INVALID},
        {"", 15022, KM_ERR_INVALID},
        {"0.0.0.0", 15022, KM_ERR_INVALID},
        {"0.1.2.3", 15022, KM_ERR_INVALID},
        {"127.0.0.1", 15022, KM_ERR_INVALID},
        {"169.254.1.1", 15022, KM_ERR_INVALID},
        {"224.0.0.1", 15022, KM_ERR_INVALID},
        {"255.255.255.255", 15022, KM_ERR_INVALID},
        {"256.1.1.1", 15022, KM_ERR_INVALID},
        {"1.2.3", 15022, KM_ERR_INVALID},
        {"1.2.3.4.", 15022, KM_ERR_INVALID},
        {"1.2.3.4 ", 15022, KM_ERR_INVALID},
        {" 1.2.3.4", 15022, KM_ERR_INVALID},
        {"1.2.3.4\n", 15022, KM_ERR_INVALID},
        {"::1", 15022, KM_ERR_INVALID},
        {"2001:db8::1", 15022, KM_ERR_INVALID},
        {"example.com", 15022, KM_ERR_INVALID},
        {"1.2.3.4%eth0", 15022, KM_ERR_INVALID},
        {"0001.0002.0003.0004", 15022, KM_ERR_INVALID}, /* 19 characters: too long */
        {"01.2.3.4", 15022, KM_ERR_INVALID},            /* inet_pton refuses leading zeros */
        {"1..3.4", 15022, KM_ERR_INVALID},
    };
    for (size_t i = 0; i < N_ITEMS(cases); i++) {
        struct sockaddr_in out;
        memset(&out, 0xa5, sizeof out);
        int r = km_portmap_check_upnp(cases[i].text, strlen(cases[i].text), cases[i].port, &out);
        if (r != cases[i].want) {
            fail_msg("case %zu \"%s\": got %d, want %d", i, cases[i].text, r, cases[i].want);
        }
        if (r == 0) {
            char back[INET_ADDRSTRLEN];
            assert_int_equal(out.sin_family, AF_INET);
            assert_int_equal(ntohs(out.sin_port), cases[i].port);
            assert_non_null(inet_ntop(AF_INET, &out.sin_addr, back, sizeof back));
            assert_string_equal(back, cases[i].text);
        } else {
            assert_int_equal(out.sin_family, 0); /* cleared on failure */
        }
    }
    /* Not NUL-terminated within len, NULL, and a length past the text's room. */
    struct sockaddr_in out;
    assert_int_equal(km_portmap_check_upnp("1.2.3.45", 7, 1, &out), 0);
    assert_int_equal(out.sin_addr.s_addr, inet_addr("1.2.3.4"));
    assert_int_equal(km_portmap_check_upnp(NULL, 0, 1, &out), KM_ERR_INVALID);
    char big[200];
    memset(big, '1', sizeof big);
    assert_int_equal(km_portmap_check_upnp(big, sizeof big, 1, &out), KM_ERR_INVALID);
}

static void test_check_natpmp(void **state)
{
    (void)state;
    static const struct {
        const char *addr;
        uint16_t port;
        uint32_t life;
        int want;
        uint32_t lease;
    } cases[] = {
        {"198.51.100.7", 40000, 3600, 0, 3600},
        {"198.51.100.7", 40000, 1, 0, KM_PORTMAP_LEASE_MIN_S},
        {"198.51.100.7", 40000, 0xffffffffu, 0, KM_PORTMAP_LEASE_MAX_S},
        {"198.51.100.7", 40000, 0, KM_ERR_INVALID, 0}, /* lifetime 0 is a deletion */
        {"198.51.100.7", 0, 3600, KM_ERR_INVALID, 0},
        {"0.0.0.0", 40000, 3600, KM_ERR_INVALID, 0},
        {"127.0.0.1", 40000, 3600, KM_ERR_INVALID, 0},
        {"239.1.1.1", 40000, 3600, KM_ERR_INVALID, 0},
        {"255.255.255.255", 40000, 3600, KM_ERR_INVALID, 0},
    };
    for (size_t i = 0; i < N_ITEMS(cases); i++) {
        struct sockaddr_in out;
        uint32_t lease = 77;
        int r = km_portmap_check_natpmp(inet_addr(cases[i].addr), cases[i].port, cases[i].life,
                                        &out, &lease);
        if (r != cases[i].want || lease != cases[i].lease) {
            fail_msg("case %zu: got %d lease %u", i, r, lease);
        }
        if (r == 0) {
            assert_int_equal(out.sin_addr.s_addr, inet_addr(cases[i].addr));
            assert_int_equal(ntohs(out.sin_port), cases[i].port);
        }
    }
}

static void test_schedule(void **state)
{
    (void)state;
    assert_int_equal(km_portmap_renew_ms(3600), 1800000u);
    assert_int_equal(km_portmap_renew_ms(0), KM_PORTMAP_LEASE_MIN_S * 500u);
    assert_int_equal(km_portmap_renew_ms(0xffffffffu), KM_PORTMAP_LEASE_MAX_S * 500u);
    assert_int_equal(km_portmap_retry_ms(30000, 0, 0), 30000u);
    assert_int_equal(km_portmap_retry_ms(0, 0, 0), KM_PORTMAP_RETRY_MIN_MS);
    assert_int_equal(km_portmap_retry_ms(30000, 1, 0), 60000u);
    assert_int_equal(km_portmap_retry_ms(30000, 4, 0), 480000u);
    assert_int_equal(km_portmap_retry_ms(30000, 5, 0), KM_PORTMAP_RETRY_MAX_MS);
    assert_int_equal(km_portmap_retry_ms(30000, 1000000, 0), KM_PORTMAP_RETRY_MAX_MS);
    assert_int_equal(km_portmap_retry_ms(1000, 0, 65535), 1250u); /* jitter: at most +25 % */
    assert_int_equal(km_portmap_retry_ms(0xffffffffu, 3, 65535),
                     KM_PORTMAP_RETRY_MAX_MS + KM_PORTMAP_RETRY_MAX_MS / 4);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(km_portmap_mode_name(KM_PORTMAP_OFF), "off");
    assert_string_equal(km_portmap_mode_name(KM_PORTMAP_ANY), "on");
    assert_string_equal(km_portmap_mode_name(KM_PORTMAP_UPNP), "upnp");
    assert_string_equal(km_portmap_mode_name(KM_PORTMAP_NATPMP), "natpmp");
    assert_string_equal(km_portmap_mode_name((enum km_portmap_mode)99), "?");
    assert_string_equal(km_portmap_method_name(KM_PORTMAP_BY_UPNP), "upnp");
    assert_string_equal(km_portmap_method_name((enum km_portmap_method)99), "?");
}

struct seen {
    int calls;
    struct km_portmap_state last;
    char err[128];
    uv_loop_t *loop;
    struct km_portmap *pm;
    int stop_after;
};

static void on_state(void *arg, const struct km_portmap_state *st)
{
    struct seen *s = arg;
    s->calls++;
    s->last = *st;
    snprintf(s->err, sizeof s->err, "%s", st->error);
    if (s->calls >= s->stop_after) {
        km_portmap_close(s->pm);
        s->pm = NULL;
    }
}

/* Only in a network namespace of our own: otherwise the test would ask the real network's
 * router for a mapping. */
static int own_netns(void **state)
{
    (void)state;
    if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0) {
        return -1;
    }
    return 0;
}

static void test_no_router(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        skip();
    }
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_portmap_opts o;
    km_portmap_opts_default(&o);
    o.port = 15022;
    o.discover_ms = 200;
    o.natpmp_ms = 200;
    o.retry_min_ms = 50;
    struct seen s = {.loop = &loop, .stop_after = 1};
    o.mode = KM_PORTMAP_OFF;
    assert_int_equal(km_portmap_new(&loop, &o, on_state, &s, &s.pm), KM_ERR_INVALID);
    assert_null(s.pm);
    o.mode = KM_PORTMAP_ANY;
    o.port = 0;
    assert_int_equal(km_portmap_new(&loop, &o, on_state, &s, &s.pm), KM_ERR_INVALID);
    o.port = 15022;
    assert_int_equal(km_portmap_new(&loop, &o, on_state, &s, &s.pm), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(s.calls, 1);
    assert_false(s.last.mapped);
    assert_int_equal(s.last.attempts, 1);
    assert_int_equal(s.last.failures, 1);
    assert_true(strstr(s.err, "UPnP") != NULL && strstr(s.err, "NAT-PMP") != NULL);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_retries_report_changes_only(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_portmap_opts o;
    km_portmap_opts_default(&o);
    o.mode = KM_PORTMAP_NATPMP;
    o.port = 15022;
    o.natpmp_ms = 100;
    o.retry_min_ms = 20;
    struct seen s = {.loop = &loop, .stop_after = 1000};
    assert_int_equal(km_portmap_new(&loop, &o, on_state, &s, &s.pm), 0);
    /* Run until three attempts were made: the same failure each time, one callback. */
    struct km_portmap_state st;
    for (int i = 0; i < 2000; i++) {
        (void)uv_run(&loop, UV_RUN_ONCE);
        km_portmap_get(s.pm, &st);
        if (st.attempts >= 3) {
            break;
        }
    }
    assert_true(st.attempts >= 3);
    assert_int_equal(s.calls, 1);
    assert_false(st.mapped);
    km_portmap_close(s.pm);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_close_in_flight(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_portmap_opts o;
    km_portmap_opts_default(&o);
    o.port = 15022;
    o.discover_ms = 100;
    struct seen s = {.loop = &loop, .stop_after = 1};
    assert_int_equal(km_portmap_new(&loop, &o, on_state, &s, &s.pm), 0);
    km_portmap_close(s.pm); /* the first request is queued or running */
    km_portmap_close(NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(s.calls, 0); /* no callback after close */
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_check_upnp),
        cmocka_unit_test(test_check_natpmp),
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_names),
    };
    const struct CMUnitTest live[] = {
        cmocka_unit_test(test_no_router),
        cmocka_unit_test(test_retries_report_changes_only),
        cmocka_unit_test(test_close_in_flight),
    };
    if (argc < 2 || strcmp(argv[1], "live") != 0) {
        return cmocka_run_group_tests_name("portmap", pure, NULL, NULL);
    }
    if (geteuid() != 0) {
        printf("portmap live: skipped (needs root for a network namespace of its own)\n");
        return 0;
    }
    return cmocka_run_group_tests_name("portmap live (empty netns)", live, own_netns, NULL);
}
