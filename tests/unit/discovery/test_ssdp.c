/* Unit tests for discovery/ssdp.c: the M-SEARCH text, a hostile table of answers for the
 * parser, and searches on a real loop against a responder on loopback (the search's
 * destination is the test's socket instead of the SSDP group): answers collected and
 * de-duplicated, the report soon after the first answer, the timeout when nobody answers, an
 * unsendable request, and a cancel that frees everything (uv_loop_close == 0). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <stdio.h>

#include <cmocka.h>

#include "discovery/ssdp.h"

#define N_ITEMS(a) (sizeof(a) / sizeof((a)[0]))
#define ROUTER "192.168.1.1"

static uint32_t addr(const char *s)
{
    struct in_addr a;
    assert_int_equal(inet_pton(AF_INET, s, &a), 1);
    return a.s_addr;
}

static int parse(const char *text, const char *from, char *url, size_t cap)
{
    return km_ssdp_parse_response((const uint8_t *)text, strlen(text), addr(from), url, cap);
}

static void test_format_search(void **state)
{
    (void)state;
    char out[256];
    size_t n = km_ssdp_format_search(out, sizeof out,
                                     "urn:schemas-upnp-org:device:InternetGatewayDevice:1", 1);
    static const char want[] = "M-SEARCH * HTTP/1.1\r\n"
                               "HOST: 239.255.255.250:1900\r\n"
                               "MAN: \"ssdp:discover\"\r\n"
                               "MX: 1\r\n"
                               "ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
                               "\r\n";
    assert_int_equal(n, sizeof want - 1);
    assert_memory_equal(out, want, n);
    assert_true(km_ssdp_format_search(out, n, "urn:x", 1) > 0); /* shorter: fits */
    assert_int_equal(km_ssdp_format_search(out, 20, "urn:schemas-upnp-org:device:x:1", 1), 0);
}

#define OK_HEAD "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n"
#define IGD_ST "ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"

static void test_parse_accepts(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *url;
    } cases[] = {
        /* What miniupnpd sends. */
        {OK_HEAD IGD_ST "USN: uuid:1::urn:x\r\nEXT:\r\nSERVER: Debian/12 UPnP/1.1\r\n"
                        "LOCATION: http://" ROUTER ":5000/rootDesc.xml\r\n\r\n",
         "http://" ROUTER ":5000/rootDesc.xml"},
        /* Lower-case names, bare LF, HTTP/1.0, no reason phrase, a service target. */
        {"HTTP/1.0 200\nst: urn:schemas-upnp-org:service:WANIPConnection:1\n"
         "location:http://" ROUTER "/d.xml\n\n",
         "http://" ROUTER "/d.xml"},
        {OK_HEAD "ST: urn:schemas-upnp-org:service:WANPPPConnection:1\r\n"
                 "Location: \t HTTP://" ROUTER ":80 \t\r\n\r\n",
         "HTTP://" ROUTER ":80"},
        /* IGD version 2, and a body after the headers (ignored). */
        {OK_HEAD "ST: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n"
                 "LOCATION: http://" ROUTER ":65535/\r\n\r\ntrailing",
         "http://" ROUTER ":65535/"},
    };
    for (size_t i = 0; i < N_ITEMS(cases); i++) {
        char url[KM_SSDP_URL_MAX];
        int r = parse(cases[i].text, ROUTER, url, sizeof url);
        if (r != 0) {
            print_error("case %zu: %d\n", i, r);
        }
        assert_int_equal(r, 0);
        assert_string_equal(url, cases[i].url);
    }
}

static void test_parse_refuses(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "",
        "\r\n\r\n",
        /* Not a 200 answer, or not HTTP/1.x. */
        "HTTP/1.1 404 Not Found\r\n" IGD_ST "LOCATION: http://" ROUTER "/d\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n" IGD_ST "LOCATION: http://" ROUTER "/d\r\n\r\n",
        "HTTP/2.0 200 OK\r\n" IGD_ST "LOCATION: http://" ROUTER "/d\r\n\r\n",
        "NOTIFY * HTTP/1.1\r\n" IGD_ST "LOCATION: http://" ROUTER "/d\r\n\r\n",
        "HTTP/1.1  200 OK\r\n" IGD_ST "LOCATION: http://" ROUTER "/d\r\n\r\n",
        /* No ST, an ST that is not a gateway, or no LOCATION. */
        OK_HEAD "LOCATION: http://" ROUTER "/d\r\n\r\n",
        OK_HEAD "ST: upnp:rootdevice\r\nLOCATION: http://" ROUTER "/d\r\n\r\n",
        OK_HEAD "ST: urn:schemas-upnp-org:device:MediaServer:1\r\n"
                "LOCATION: http://" ROUTER "/d\r\n\r\n",
        OK_HEAD IGD_ST "\r\n",
        OK_HEAD IGD_ST "LOCATION:\r\n\r\n",
        /* Two LOCATIONs or two STs. */
        OK_HEAD IGD_ST "LOCATION: http://" ROUTER "/a\r\nLOCATION: http://" ROUTER "/b\r\n\r\n",
        OK_HEAD IGD_ST IGD_ST "LOCATION: http://" ROUTER "/a\r\n\r\n",
        /* Headers that never end, a line without a colon, an empty header name. */
        OK_HEAD IGD_ST "LOCATION: http://" ROUTER "/d\r\n",
        OK_HEAD IGD_ST "LOCATION: http://" ROUTER "/d",
        OK_HEAD IGD_ST "garbage\r\nLOCATION: http://" ROUTER "/d\r\n\r\n",
        OK_HEAD IGD_ST ": x\r\nLOCATION: http://" ROUTER "/d\r\n\r\n",
        /* URLs: another scheme, another host than the sender, a name, bad ports, bytes that
         * are not visible ASCII, no host. */
        OK_HEAD IGD_ST "LOCATION: https://" ROUTER "/d\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http://192.168.1.2/d\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http://router.lan/d\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http://" ROUTER ":0/d\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http://" ROUTER ":65536/d\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http://" ROUTER ":/d\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http://" ROUTER ":123456/d\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http://" ROUTER ":80x/d\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http://" ROUTER "@evil/d\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http://" ROUTER "/a b\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http://" ROUTER "/a\x01\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http://" ROUTER "/\xc3\xa9\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http:///d\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http://\r\n\r\n",
        OK_HEAD IGD_ST "LOCATION: http://1922.168.1.1/d\r\n\r\n",
    };
    for (size_t i = 0; i < N_ITEMS(cases); i++) {
        char url[KM_SSDP_URL_MAX];
        int r = parse(cases[i], ROUTER, url, sizeof url);
        if (r != KM_ERR_INVALID) {
            print_error("case %zu: %d (url %s)\n", i, r, url);
        }
        assert_int_equal(r, KM_ERR_INVALID);
        assert_string_equal(url, "");
    }
}

static void test_parse_limits(void **state)
{
    (void)state;
    /* A URL that fits exactly, and one byte too long. */
    const char *text = OK_HEAD IGD_ST "LOCATION: http://" ROUTER "/d.xml\r\n\r\n";
    size_t url_len = strlen("http://" ROUTER "/d.xml");
    char url[KM_SSDP_URL_MAX];
    assert_int_equal(parse(text, ROUTER, url, url_len + 1), 0);
    assert_string_equal(url, "http://" ROUTER "/d.xml");
    assert_int_equal(parse(text, ROUTER, url, url_len), KM_ERR_TOO_LARGE);
    /* At most 64 header lines. */
    char big[4096];
    size_t n = (size_t)snprintf(big, sizeof big, "%s", OK_HEAD IGD_ST);
    for (int i = 0; i < 70; i++) {
        n += (size_t)snprintf(big + n, sizeof big - n, "X-%d: y\r\n", i);
    }
    snprintf(big + n, sizeof big - n, "LOCATION: http://" ROUTER "/d\r\n\r\n");
    assert_int_equal(parse(big, ROUTER, url, sizeof url), KM_ERR_INVALID);
    /* A NUL inside the headers is a byte like any other: not a terminator. */
    static const char nul[] = OK_HEAD IGD_ST "LOCATION: http://" ROUTER "/d\0x\r\n\r\n";
    assert_int_equal(
        km_ssdp_parse_response((const uint8_t *)nul, sizeof nul - 1, addr(ROUTER), url, sizeof url),
        KM_ERR_INVALID);
}

/* ---- searches on a real loop ---- */

struct responder {
    uv_udp_t udp;
    struct sockaddr_in addr; /* where it listens */
    int searches;            /* M-SEARCH requests received */
    bool answer;
    char first[512]; /* the first request received */
};

struct outcome {
    int calls;
    struct km_ssdp_result res;
    uint64_t at_ms; /* loop time of the report; after search(), ms since the start */
    uv_loop_t *loop;
};

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    static char mem[2048];
    *buf = uv_buf_init(mem, sizeof mem);
}

static void answer(struct responder *rs, const struct sockaddr *to, const char *text)
{
    uv_buf_t b = uv_buf_init((char *)text, (unsigned)strlen(text));
    assert_true(uv_udp_try_send(&rs->udp, &b, 1, to) >= 0);
}

static void on_request(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
                       unsigned flags)
{
    (void)flags;
    struct responder *rs = h->data;
    if (nread <= 0 || from == NULL) {
        return;
    }
    if (rs->searches++ == 0) {
        size_t n = (size_t)nread < sizeof rs->first - 1 ? (size_t)nread : sizeof rs->first - 1;
        memcpy(rs->first, buf->base, n);
        rs->first[n] = '\0';
    }
    if (!rs->answer) {
        return;
    }
    /* Garbage, an answer, the same answer again, a second router (same address, another
     * description), and one whose URL names another host. */
    answer(rs, from, "garbage");
    answer(rs, from, OK_HEAD IGD_ST "LOCATION: http://127.0.0.1:5000/a.xml\r\n\r\n");
    answer(rs, from, OK_HEAD IGD_ST "LOCATION: http://127.0.0.1:5000/a.xml\r\n\r\n");
    answer(rs, from, OK_HEAD IGD_ST "LOCATION: http://127.0.0.1:5001/b.xml\r\n\r\n");
    answer(rs, from, OK_HEAD IGD_ST "LOCATION: http://10.1.2.3:5000/c.xml\r\n\r\n");
}

static void responder_open(uv_loop_t *loop, struct responder *rs, bool answers)
{
    memset(rs, 0, sizeof *rs);
    rs->answer = answers;
    assert_int_equal(uv_udp_init(loop, &rs->udp), 0);
    rs->udp.data = rs;
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(uv_udp_bind(&rs->udp, (const struct sockaddr *)&a, 0), 0);
    int len = sizeof rs->addr;
    assert_int_equal(uv_udp_getsockname(&rs->udp, (struct sockaddr *)&rs->addr, &len), 0);
    assert_int_equal(uv_udp_recv_start(&rs->udp, on_alloc, on_request), 0);
}

static void on_result(void *arg, const struct km_ssdp_result *res)
{
    struct outcome *o = arg;
    o->calls++;
    o->res = *res;
    uv_update_time(o->loop);
    o->at_ms = uv_now(o->loop);
}

/* One search on a loop of its own against a responder (answering or not) at rs, or at
 * to when given: run until it reported (bounded), close everything, and record in o what it
 * found and how long it took. */
static void search(bool answers, uint32_t timeout_ms, const struct sockaddr_in *to,
                   struct responder *rs, struct outcome *o)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    responder_open(&loop, rs, answers);
    memset(o, 0, sizeof *o);
    o->loop = &loop;
    struct km_ssdp *s;
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    assert_int_equal(
        km_ssdp_search(&loop, timeout_ms, to != NULL ? to : &rs->addr, on_result, o, &s), 0);
    for (int i = 0; i < 1000 && o->calls == 0; i++) {
        (void)uv_run(&loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&rs->udp, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    o->loop = NULL;
    o->at_ms -= t0;
}

static void test_search_collects(void **state)
{
    (void)state;
    struct responder rs;
    struct outcome o;
    search(true, 10000, NULL, &rs, &o);
    assert_int_equal(o.calls, 1);
    /* Three search targets, each answered by the "routers" above. */
    assert_int_equal(rs.searches, 3);
    assert_non_null(strstr(rs.first, "M-SEARCH * HTTP/1.1\r\n"));
    assert_non_null(strstr(rs.first, "MAN: \"ssdp:discover\"\r\n"));
    assert_non_null(strstr(rs.first, "ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1"));
    assert_int_equal(o.res.send_error, 0);
    assert_int_equal(o.res.n_urls, 2);
    assert_string_equal(o.res.urls[0], "http://127.0.0.1:5000/a.xml");
    assert_string_equal(o.res.urls[1], "http://127.0.0.1:5001/b.xml");
    assert_int_equal(o.res.n_ignored, 3 * 2); /* garbage and the foreign host, per search */
    /* Reported after the grace period, long before the 10 s timeout. */
    assert_true(o.at_ms >= KM_SSDP_GRACE_MS);
    assert_true(o.at_ms < 5000);
}

static void test_search_times_out(void **state)
{
    (void)state;
    struct responder rs;
    struct outcome o;
    search(false, 100, NULL, &rs, &o);
    assert_int_equal(o.calls, 1);
    assert_int_equal(rs.searches, 3);
    assert_int_equal(o.res.n_urls, 0);
    assert_int_equal(o.res.n_ignored, 0);
    assert_int_equal(o.res.send_error, 0);
    assert_true(o.at_ms >= 100);
}

static void test_search_cannot_send(void **state)
{
    (void)state;
    struct responder rs;
    struct outcome o;
    struct sockaddr_in nowhere = {.sin_family = AF_INET}; /* port 0: sendto refuses it */
    nowhere.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    search(false, 10000, &nowhere, &rs, &o);
    assert_int_equal(o.calls, 1);
    assert_int_equal(rs.searches, 0);
    assert_int_equal(o.res.n_urls, 0);
    assert_true(o.res.send_error < 0);
}

static void test_search_cancel(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct responder rs;
    responder_open(&loop, &rs, true);
    struct outcome o = {.loop = &loop};
    struct km_ssdp *s;
    assert_int_equal(km_ssdp_search(&loop, 10000, &rs.addr, on_result, &o, &s), 0);
    /* Let the responder get the requests and answer them, then cancel before the search
     * reads the answers. */
    for (int i = 0; i < 100 && rs.searches < 3; i++) {
        (void)uv_run(&loop, UV_RUN_ONCE);
    }
    assert_int_equal(rs.searches, 3);
    km_ssdp_cancel(s);
    km_ssdp_cancel(NULL);
    uv_close((uv_handle_t *)&rs.udp, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0); /* ends: nothing is left open */
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(o.calls, 0);
    /* A zero timeout is refused. */
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(km_ssdp_search(&loop, 0, NULL, on_result, &o, &s), KM_ERR_INVALID);
    assert_null(s);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_search),      cmocka_unit_test(test_parse_accepts),
        cmocka_unit_test(test_parse_refuses),      cmocka_unit_test(test_parse_limits),
        cmocka_unit_test(test_search_collects),    cmocka_unit_test(test_search_times_out),
        cmocka_unit_test(test_search_cannot_send), cmocka_unit_test(test_search_cancel),
    };
    return cmocka_run_group_tests_name("ssdp", tests, NULL, NULL);
}
