/* Unit tests for discovery/path.c: kind names both ways with hostile names, and the ranking
 * for each requester class (order, stability, exclusions), and the SVCB SvcParams a path
 * is written as. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "core/buf.h"
#include "discovery/path.h"

#define N_ITEMS(a) (sizeof(a) / sizeof((a)[0]))

static void test_names_round_trip(void **state)
{
    (void)state;
    static const char *const want[KM_PATH_KIND_N] = {"link-local", "lan",     "vpn",
                                                     "mapped",     "punched", "relay"};
    for (int k = 0; k < KM_PATH_KIND_N; k++) {
        const char *name = km_path_kind_name((enum km_path_kind)k);
        assert_string_equal(name, want[k]);
        enum km_path_kind back = KM_PATH_KIND_N;
        assert_int_equal(km_path_kind_parse(name, strlen(name), &back), 0);
        assert_int_equal(back, k);
    }
    assert_string_equal(km_path_kind_name(KM_PATH_KIND_N), "?");
    assert_string_equal(km_path_kind_name((enum km_path_kind) - 1), "?");
    assert_string_equal(km_path_kind_name((enum km_path_kind)1000), "?");
}

static void test_parse_hostile(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t len;
    } bad[] = {
        {"", 0},          {"lan", 2},       {"lan", 0},     {"lan2", 4},
        {"LAN", 3},       {"Lan", 3},       {" lan", 4},    {"lan ", 4},
        {"link-loca", 9}, {"linklocal", 9}, {"relay\0", 6}, {"vpn\0x", 5},
        {"?", 1},         {"mappedx", 7},   {"punche", 6},  {"link-local-", 11},
    };
    for (size_t i = 0; i < N_ITEMS(bad); i++) {
        enum km_path_kind k = KM_PATH_RELAY;
        assert_int_equal(km_path_kind_parse(bad[i].s, bad[i].len, &k), KM_ERR_INVALID);
        assert_int_equal(k, KM_PATH_LINK_LOCAL);
    }
    /* A prefix of a longer string, counted exactly, is accepted. */
    enum km_path_kind k = KM_PATH_LAN;
    assert_int_equal(km_path_kind_parse("relayxyz", 5, &k), 0);
    assert_int_equal(k, KM_PATH_RELAY);
    assert_int_equal(km_path_kind_parse(NULL, 3, &k), KM_ERR_INVALID);
}

/* Inputs: every kind, some twice, in a scrambled order, plus an invalid kind. */
static const enum km_path_kind input[] = {
    KM_PATH_RELAY,  KM_PATH_LAN,     KM_PATH_MAPPED, KM_PATH_LINK_LOCAL,
    KM_PATH_VPN,    KM_PATH_PUNCHED, KM_PATH_LAN,    KM_PATH_RELAY,
    KM_PATH_KIND_N, KM_PATH_MAPPED,  KM_PATH_VPN,    KM_PATH_LINK_LOCAL,
};

static void test_rank_table(void **state)
{
    (void)state;
    static const struct {
        enum km_requester who;
        size_t n;
        size_t order[N_ITEMS(input)];
    } cases[] = {
        /* link-local 3,11; lan 1,6; vpn 4,10; mapped 2,9; punched 5; relay 0,7 */
        {KM_REQ_SAME_LINK, 11, {3, 11, 1, 6, 4, 10, 2, 9, 5, 0, 7}},
        /* vpn, mapped, punched, relay, lan */
        {KM_REQ_VPN, 9, {4, 10, 2, 9, 5, 0, 7, 1, 6}},
        /* mapped, punched, relay */
        {KM_REQ_OTHER, 5, {2, 9, 5, 0, 7}},
    };
    struct km_path paths[N_ITEMS(input)];
    memset(paths, 0, sizeof paths);
    for (size_t i = 0; i < N_ITEMS(input); i++) {
        paths[i].kind = input[i];
    }
    for (size_t c = 0; c < N_ITEMS(cases); c++) {
        size_t order[N_ITEMS(input)];
        memset(order, 0xff, sizeof order);
        size_t n = km_path_rank(paths, N_ITEMS(input), cases[c].who, order);
        assert_int_equal(n, cases[c].n);
        assert_memory_equal(order, cases[c].order, n * sizeof order[0]);
    }
}

static void test_rank_edges(void **state)
{
    (void)state;
    struct km_path paths[3];
    memset(paths, 0, sizeof paths);
    size_t order[3] = {9, 9, 9};
    /* Nothing to rank. */
    assert_int_equal(km_path_rank(paths, 0, KM_REQ_SAME_LINK, order), 0);
    assert_int_equal(km_path_rank(NULL, 3, KM_REQ_SAME_LINK, order), 0);
    assert_int_equal(km_path_rank(paths, 3, KM_REQ_SAME_LINK, NULL), 0);
    /* Only private paths: useless to an outsider. */
    paths[0].kind = KM_PATH_LAN;
    paths[1].kind = KM_PATH_LINK_LOCAL;
    paths[2].kind = KM_PATH_VPN;
    assert_int_equal(km_path_rank(paths, 3, KM_REQ_OTHER, order), 0);
    /* A VPN requester never gets link-local. */
    assert_int_equal(km_path_rank(paths, 3, KM_REQ_VPN, order), 2);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 0);
    /* An invalid requester class ranks nothing. */
    assert_int_equal(km_path_rank(paths, 3, (enum km_requester)7, order), 0);
    assert_int_equal(km_path_rank(paths, 3, (enum km_requester) - 1, order), 0);
    /* All of one kind keep their order. */
    paths[0].kind = paths[1].kind = paths[2].kind = KM_PATH_MAPPED;
    assert_int_equal(km_path_rank(paths, 3, KM_REQ_OTHER, order), 3);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 1);
    assert_int_equal(order[2], 2);
}

static void svc_expect(const struct km_path *p, const uint8_t *want, size_t want_len)
{
    struct km_buf b;
    km_buf_init(&b, 256);
    assert_int_equal(km_path_svc_params(p, &b), 0);
    assert_int_equal(km_buf_len(&b), want_len);
    assert_memory_equal(km_buf_peek_ptr(&b), want, want_len);
    km_buf_reset(&b);
}

static void test_svc_params(void **state)
{
    (void)state;
    struct km_path p;
    memset(&p, 0, sizeof p);

    /* IPv4: port 15022 (0x3aae), ipv4hint 192.0.2.7, key65280 "lan". */
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(15022)};
    inet_pton(AF_INET, "192.0.2.7", &sin.sin_addr);
    memcpy(&p.addr, &sin, sizeof sin);
    p.kind = KM_PATH_LAN;
    static const uint8_t v4[] = {0, 3, 0, 2,    0x3a, 0xae, 0, 4,   0,   4,  192,
                                 0, 2, 7, 0xff, 0,    0,    3, 'l', 'a', 'n'};
    svc_expect(&p, v4, sizeof v4);

    /* IPv4-mapped IPv6 is hinted as IPv4; no port means no port key. */
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &sin6.sin6_addr);
    memcpy(&p.addr, &sin6, sizeof sin6);
    p.kind = KM_PATH_VPN;
    static const uint8_t mapped[] = {0, 4, 0, 4, 192, 0, 2, 7, 0xff, 0, 0, 3, 'v', 'p', 'n'};
    svc_expect(&p, mapped, sizeof mapped);

    /* IPv6: ipv6hint, kind "link-local". */
    sin6.sin6_port = htons(1);
    inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr);
    memcpy(&p.addr, &sin6, sizeof sin6);
    p.kind = KM_PATH_LINK_LOCAL;
    static const uint8_t v6[] = {
        0, 3, 0, 2, 0, 1, 0,    6, 0, 16, 0x20, 0x01, 0x0d, 0xb8, 0,   0,   0,   0,   0,   0,
        0, 0, 0, 0, 0, 1, 0xff, 0, 0, 10, 'l',  'i',  'n',  'k',  '-', 'l', 'o', 'c', 'a', 'l'};
    svc_expect(&p, v6, sizeof v6);

    /* Unknown family: refused, nothing written. */
    struct km_buf b;
    km_buf_init(&b, 256);
    p.addr.ss_family = AF_UNIX;
    assert_int_equal(km_path_svc_params(&p, &b), KM_ERR_UNSUPPORTED);
    assert_int_equal(km_buf_len(&b), 0);

    /* Every too-small buffer fails with an error, never a partial success. */
    memcpy(&p.addr, &sin, sizeof sin);
    p.kind = KM_PATH_LAN;
    for (size_t cap = 0; cap < sizeof v4; cap++) {
        km_buf_reset(&b);
        km_buf_init(&b, cap);
        assert_int_not_equal(km_path_svc_params(&p, &b), 0);
    }
    km_buf_reset(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_round_trip), cmocka_unit_test(test_parse_hostile),
        cmocka_unit_test(test_rank_table),       cmocka_unit_test(test_rank_edges),
        cmocka_unit_test(test_svc_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
