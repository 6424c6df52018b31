/* Unit tests for tun/packet.c: classification of every kind, a hostile table (each drop
 * reason, every truncation of a valid packet), and the replies the node builds (RST, echo
 * reply, destination unreachable) checked field by field and by checksum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tests/unit/tun/pktgen.h"
#include "tun/packet.h"

#define SELF "fd6b:1::1"
#define PEER "fd6b:2::2"

static uint8_t self_vip[16];

static struct km_pkt_policy policy(void)
{
    (void)inet_pton(AF_INET6, SELF, self_vip);
    return (struct km_pkt_policy){.prefix = 0xfd6b, .self_vip = self_vip, .mtu = 1500};
}

static size_t syn(uint8_t *out)
{
    return pg_tcp(out, &(struct pg_tcp){.src = SELF,
                                        .dst = PEER,
                                        .sport = 40000,
                                        .dport = 80,
                                        .seq = 1000,
                                        .flags = KM_TCP_SYN});
}

static void test_kinds(void **state)
{
    (void)state;
    struct km_pkt_policy pol = policy();
    uint8_t b[2048];
    struct km_pkt pk;

    size_t n = pg_tcp(b, &(struct pg_tcp){.src = SELF,
                                          .dst = PEER,
                                          .sport = 40000,
                                          .dport = 80,
                                          .seq = 7,
                                          .ack = 9,
                                          .flags = KM_TCP_ACK | KM_TCP_PSH,
                                          .data = "hello",
                                          .len = 5});
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TCP);
    assert_int_equal(pk.sport, 40000);
    assert_int_equal(pk.dport, 80);
    assert_int_equal(pk.seq, 7);
    assert_int_equal(pk.ack, 9);
    assert_int_equal(pk.flags, KM_TCP_ACK | KM_TCP_PSH);
    assert_int_equal(pk.data_len, 5);
    assert_int_equal(pk.len, n);
    assert_true(km_pkt_l4_checksum_ok(&pk));
    b[n - 1] ^= 1;
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TCP);
    assert_false(km_pkt_l4_checksum_ok(&pk));

    n = pg_icmp(b, SELF, PEER, 128, 0, 0x12340005, "ping", 4);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_ECHO);
    assert_int_equal(pk.echo_id, 0x1234);
    assert_int_equal(pk.echo_seq, 5);
    assert_true(km_pkt_l4_checksum_ok(&pk));

    pg_ip6(b, SELF, PEER, 8, 17);
    memset(b + 40, 0, 8);
    assert_int_equal(km_pkt_parse(b, 48, &pol, &pk), KM_PKT_OTHER_L4);
    assert_false(km_pkt_l4_checksum_ok(&pk)); /* only TCP and echo are checked */

    /* A source outside the prefix is fine (a program bound to another local address). */
    n = pg_tcp(b,
               &(struct pg_tcp){
                   .src = "2001:db8::1", .dst = PEER, .sport = 1, .dport = 2, .flags = KM_TCP_SYN});
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TCP);
    /* Without a self VIP any source in the prefix is taken. */
    pol.self_vip = NULL;
    n = pg_tcp(b, &(struct pg_tcp){
                      .src = "fd6b::9", .dst = PEER, .sport = 1, .dport = 2, .flags = KM_TCP_SYN});
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TCP);
}

static void test_hostile(void **state)
{
    (void)state;
    struct km_pkt_policy pol = policy();
    uint8_t b[2048];
    struct km_pkt pk;
    size_t n;

    /* Every truncation of a valid SYN. */
    n = syn(b);
    for (size_t cut = 0; cut < n; cut++) {
        assert_int_equal(km_pkt_parse(b, cut, &pol, &pk), KM_PKT_TRUNCATED);
    }
    assert_int_equal(km_pkt_parse(NULL, 0, &pol, &pk), KM_PKT_TRUNCATED);

    /* Payload length beyond the bytes, and bytes beyond the payload length. */
    n = syn(b);
    pg_put16(b + 4, (uint16_t)(n - 40 + 1));
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TRUNCATED);
    n = syn(b);
    b[n] = 0;
    assert_int_equal(km_pkt_parse(b, n + 1, &pol, &pk), KM_PKT_TRAILING);
    /* A jumbogram's zero payload length. */
    n = syn(b);
    pg_put16(b + 4, 0);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TRAILING);

    /* IPv4, and other versions. */
    memset(b, 0, 60);
    b[0] = 0x45;
    assert_int_equal(km_pkt_parse(b, 60, &pol, &pk), KM_PKT_NOT_IPV6);
    b[0] = 0x00;
    assert_int_equal(km_pkt_parse(b, 60, &pol, &pk), KM_PKT_NOT_IPV6);

    /* Oversize: longer than the MTU, even if well formed. */
    static const uint8_t big[1500];
    n = pg_tcp(b, &(struct pg_tcp){.src = SELF,
                                   .dst = PEER,
                                   .sport = 1,
                                   .dport = 2,
                                   .flags = KM_TCP_ACK,
                                   .data = big,
                                   .len = 1441});
    assert_int_equal(n, 1501);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_OVERSIZE);

    /* Extension headers: fragment, hop-by-hop, routing, destination options, no next. */
    static const uint8_t ext[] = {0, 43, 44, 50, 51, 59, 60, 135, 139, 140};
    for (size_t i = 0; i < sizeof ext; i++) {
        n = syn(b);
        b[6] = ext[i];
        assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_EXT_HEADER);
    }

    /* Destinations outside the prefix: another ULA, link-local, multicast. */
    static const char *const not_mesh[] = {"fd6c::1", "fe80::1", "ff02::1", "::1", "2001:db8::"};
    for (size_t i = 0; i < sizeof not_mesh / sizeof not_mesh[0]; i++) {
        n = pg_tcp(
            b, &(struct pg_tcp){
                   .src = SELF, .dst = not_mesh[i], .sport = 1, .dport = 2, .flags = KM_TCP_SYN});
        assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_NOT_MESH);
    }

    /* Sources: another VIP (spoofing a peer), multicast, unspecified. */
    static const char *const bad_src[] = {"fd6b::dead", "ff02::1", "::"};
    for (size_t i = 0; i < sizeof bad_src / sizeof bad_src[0]; i++) {
        n = pg_tcp(
            b, &(struct pg_tcp){
                   .src = bad_src[i], .dst = PEER, .sport = 1, .dport = 2, .flags = KM_TCP_SYN});
        assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_BAD_SOURCE);
    }

    /* TCP: data offset below 5 and past the end; port 0 either side; too short for a header. */
    n = pg_tcp(b,
               &(struct pg_tcp){.src = SELF, .dst = PEER, .sport = 1, .dport = 2, .off_words = 4});
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_BAD_TCP);
    n = syn(b);
    b[40 + 12] = 0xf0;
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_BAD_TCP);
    n = pg_tcp(b, &(struct pg_tcp){.src = SELF, .dst = PEER, .sport = 0, .dport = 2});
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_BAD_TCP);
    n = pg_tcp(b, &(struct pg_tcp){.src = SELF, .dst = PEER, .sport = 1, .dport = 0});
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_BAD_TCP);
    pg_ip6(b, SELF, PEER, 10, 6);
    assert_int_equal(km_pkt_parse(b, 50, &pol, &pk), KM_PKT_TRUNCATED);

    /* ICMPv6 other than echo request: neighbour solicitation, echo reply, an error; and an
     * echo request with a non-zero code or no identifier. */
    n = pg_icmp(b, SELF, PEER, 135, 0, 0, NULL, 0);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_ICMP_OTHER);
    n = pg_icmp(b, SELF, PEER, 129, 0, 0, NULL, 0);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_ICMP_OTHER);
    n = pg_icmp(b, SELF, PEER, 1, 3, 0, NULL, 0);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_ICMP_OTHER);
    n = pg_icmp(b, SELF, PEER, 128, 1, 0, NULL, 0);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_ICMP_OTHER);
    pg_ip6(b, SELF, PEER, 6, 58);
    b[40] = 128;
    b[41] = 0;
    assert_int_equal(km_pkt_parse(b, 46, &pol, &pk), KM_PKT_TRUNCATED);
    pg_ip6(b, SELF, PEER, 2, 58);
    assert_int_equal(km_pkt_parse(b, 42, &pol, &pk), KM_PKT_TRUNCATED);

    /* Names for every kind, and for nonsense. */
    for (int k = 0; k < KM_PKT_KIND_COUNT; k++) {
        assert_string_not_equal(km_pkt_kind_name((enum km_pkt_kind)k), "unknown");
    }
    assert_string_equal(km_pkt_kind_name(KM_PKT_KIND_COUNT), "unknown");
    assert_string_equal(km_pkt_kind_name((enum km_pkt_kind) - 1), "unknown");
}

static void test_rst(void **state)
{
    (void)state;
    struct km_pkt_policy pol = policy();
    uint8_t b[2048], r[128];
    struct km_pkt pk, rp;

    /* A SYN: RST|ACK acknowledging the SYN, from the address it was sent to. */
    size_t n = syn(b);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TCP);
    size_t rn = km_pkt_build_rst(&pk, r, sizeof r);
    assert_int_equal(rn, 60);
    struct km_pkt_policy any = {.prefix = 0xfd6b, .mtu = 1500};
    assert_int_equal(km_pkt_parse(r, rn, &any, &rp), KM_PKT_TCP);
    assert_memory_equal(rp.src, pk.dst, 16);
    assert_memory_equal(rp.dst, pk.src, 16);
    assert_int_equal(rp.sport, 80);
    assert_int_equal(rp.dport, 40000);
    assert_int_equal(rp.flags, KM_TCP_RST | KM_TCP_ACK);
    assert_int_equal(rp.seq, 0);
    assert_int_equal(rp.ack, 1001);
    assert_true(km_pkt_l4_checksum_ok(&rp));

    /* A segment with ACK: RST with seq = its ack. FIN and data count in the ack otherwise. */
    n = pg_tcp(b, &(struct pg_tcp){.src = SELF,
                                   .dst = PEER,
                                   .sport = 5,
                                   .dport = 6,
                                   .seq = 10,
                                   .ack = 77,
                                   .flags = KM_TCP_ACK});
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TCP);
    rn = km_pkt_build_rst(&pk, r, sizeof r);
    assert_int_equal(km_pkt_parse(r, rn, &any, &rp), KM_PKT_TCP);
    assert_int_equal(rp.flags, KM_TCP_RST);
    assert_int_equal(rp.seq, 77);
    n = pg_tcp(b, &(struct pg_tcp){.src = SELF,
                                   .dst = PEER,
                                   .sport = 5,
                                   .dport = 6,
                                   .seq = 0xffffffffu,
                                   .flags = KM_TCP_FIN,
                                   .data = "ab",
                                   .len = 2});
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TCP);
    rn = km_pkt_build_rst(&pk, r, sizeof r);
    assert_int_equal(km_pkt_parse(r, rn, &any, &rp), KM_PKT_TCP);
    assert_int_equal(rp.ack, 2); /* wraps: 0xffffffff + 2 + 1 */

    /* Never a RST for a RST; never into too small a buffer; never for a non-TCP packet. */
    n = pg_tcp(
        b, &(struct pg_tcp){.src = SELF, .dst = PEER, .sport = 5, .dport = 6, .flags = KM_TCP_RST});
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TCP);
    assert_int_equal(km_pkt_build_rst(&pk, r, sizeof r), 0);
    n = syn(b);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TCP);
    assert_int_equal(km_pkt_build_rst(&pk, r, 59), 0);
    n = pg_icmp(b, SELF, PEER, 128, 0, 1, NULL, 0);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_ECHO);
    assert_int_equal(km_pkt_build_rst(&pk, r, sizeof r), 0);
}

static void test_echo_reply(void **state)
{
    (void)state;
    struct km_pkt_policy pol = policy();
    uint8_t b[2048], r[2048];
    struct km_pkt pk;
    size_t n = pg_icmp(b, SELF, PEER, 128, 0, 0x00070009, "0123456789", 10);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_ECHO);
    size_t rn = km_pkt_build_echo_reply(&pk, r, sizeof r);
    assert_int_equal(rn, n);
    assert_memory_equal(r + 8, b + 24, 16);
    assert_memory_equal(r + 24, b + 8, 16);
    assert_int_equal(r[40], 129);
    assert_memory_equal(r + 44, b + 44, n - 44); /* identifier, sequence and data echoed */
    assert_int_equal(km_pkt_checksum6(r + 8, r + 24, 58, r + 40, rn - 40), 0);
    assert_int_equal(km_pkt_build_echo_reply(&pk, r, n - 1), 0);
    n = syn(b);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TCP);
    assert_int_equal(km_pkt_build_echo_reply(&pk, r, sizeof r), 0);
}

static void test_unreach(void **state)
{
    (void)state;
    struct km_pkt_policy pol = policy();
    uint8_t b[2048], r[2048];
    struct km_pkt pk;

    size_t n = syn(b);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TCP);
    size_t rn = km_pkt_build_unreach(&pk, KM_ICMP6_UNREACH_ADDR, r, sizeof r);
    assert_int_equal(rn, 40 + 8 + n);
    assert_int_equal(r[6], 58);
    assert_memory_equal(r + 8, b + 24, 16);
    assert_memory_equal(r + 24, b + 8, 16);
    assert_int_equal(r[40], 1);
    assert_int_equal(r[41], 3);
    assert_memory_equal(r + 48, b, n);
    assert_int_equal(km_pkt_checksum6(r + 8, r + 24, 58, r + 40, rn - 40), 0);

    /* In place (out == the packet): the quote moves, the header is rebuilt. */
    uint8_t copy[2048];
    memcpy(copy, b, n);
    rn = km_pkt_build_unreach(&pk, KM_ICMP6_UNREACH_PORT, b, sizeof b);
    assert_int_equal(rn, 48 + n);
    assert_memory_equal(b + 48, copy, n);

    /* A long packet is quoted up to the IPv6 minimum MTU. */
    static const uint8_t data[1400];
    n = pg_tcp(b, &(struct pg_tcp){.src = SELF,
                                   .dst = PEER,
                                   .sport = 1,
                                   .dport = 2,
                                   .flags = KM_TCP_ACK,
                                   .data = data,
                                   .len = sizeof data});
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_TCP);
    rn = km_pkt_build_unreach(&pk, 0, r, sizeof r);
    assert_int_equal(rn, KM_PKT_ICMP_ERR_MAX);
    assert_int_equal(km_pkt_checksum6(r + 8, r + 24, 58, r + 40, rn - 40), 0);
    assert_int_equal(km_pkt_build_unreach(&pk, 0, r, KM_PKT_ICMP_ERR_MAX - 1), 0);

    /* Never about an ICMPv6 error or a dropped packet; but about an echo request, yes. */
    n = pg_icmp(b, SELF, PEER, 1, 0, 0, NULL, 0);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_ICMP_OTHER);
    assert_int_equal(km_pkt_build_unreach(&pk, 0, r, sizeof r), 0);
    n = pg_icmp(b, SELF, PEER, 128, 0, 0, NULL, 0);
    assert_int_equal(km_pkt_parse(b, n, &pol, &pk), KM_PKT_ECHO);
    assert_int_not_equal(km_pkt_build_unreach(&pk, 0, r, sizeof r), 0);
    assert_int_equal(km_pkt_parse(b, 3, &pol, &pk), KM_PKT_TRUNCATED);
    assert_int_equal(km_pkt_build_unreach(&pk, 0, r, sizeof r), 0);
}

static void test_checksum(void **state)
{
    (void)state;
    /* RFC 1071's example words, in a pseudo-header with zero addresses: a known sum. */
    uint8_t z[16] = {0};
    static const uint8_t data[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
    /* 0x0001 + 0xf203 + 0xf4f5 + 0xf6f7 = 0x2ddf0 -> 0xddf2; + length 8 + next header 6. */
    uint16_t c = km_pkt_checksum6(z, z, 6, data, sizeof data);
    assert_int_equal(c, (uint16_t) ~(0xddf2 + 8 + 6));
    /* An odd length pads with a zero byte. */
    static const uint8_t odd[] = {0xff};
    assert_int_equal(km_pkt_checksum6(z, z, 0, odd, 1), (uint16_t) ~(0xff00 + 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kinds),   cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_rst),     cmocka_unit_test(test_echo_reply),
        cmocka_unit_test(test_unreach), cmocka_unit_test(test_checksum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
