/* mDNS wire tests: announce -> parse round trip, answers to each kind of query (multicast, QU,
 * legacy unicast), and a hostile-packet table (truncations, compression loops, forward
 * pointers, wrong TXT key, goodbyes, oversized messages, trailing bytes). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>
#include <uv.h>

#include "discovery/announce.h"
#include "discovery/mdns.h"
#include "identity/derive.h"

/* RFC 8032 section 7.1 test keys 1 and 2. */
static const struct km_pubkey key1 = {{0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7,
                                       0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
                                       0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25,
                                       0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a}};
static const struct km_pubkey key2 = {{0x3d, 0x40, 0x17, 0xc3, 0xe8, 0x43, 0x89, 0x5a,
                                       0x92, 0xb7, 0x0a, 0xa7, 0x4d, 0x1b, 0x7e, 0xbc,
                                       0x9c, 0x98, 0x2c, 0xcf, 0x2e, 0xc4, 0x96, 0x8c,
                                       0xc0, 0xcd, 0x55, 0xf1, 0x2a, 0xf4, 0x66, 0x0c}};
#define ID1 "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena"
#define SVC "\x08_keymesh\x04_tcp\x05local"

static void self_init(struct km_mdns_self *s, const struct km_pubkey *k)
{
    memset(s, 0, sizeof *s);
    s->key = *k;
    s->port = 15022;
    struct sockaddr_in *a = (struct sockaddr_in *)&s->addrs[0];
    a->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, "192.0.2.1", &a->sin_addr), 1);
    struct sockaddr_in6 *b = (struct sockaddr_in6 *)&s->addrs[1];
    b->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, "fe80::1", &b->sin6_addr), 1);
    s->n_addrs = 2;
}

static struct km_mdns_instance inst[KM_MDNS_INSTANCES_MAX];

static void test_roundtrip(void **state)
{
    (void)state;
    struct km_mdns_self s;
    self_init(&s, &key1);
    struct km_buf b;
    km_buf_init(&b, KM_MDNS_PKT_MAX);
    assert_int_equal(km_mdns_build_announce(&s, false, &b), 0);
    size_t n = 0;
    struct km_mdns_parse_stats st;
    assert_int_equal(km_mdns_parse_response(km_buf_peek_ptr(&b), km_buf_len(&b), inst, 8, &n, &st),
                     0);
    assert_int_equal(n, 1);
    assert_memory_equal(inst[0].key.b, key1.b, 32);
    assert_int_equal(inst[0].port, 15022);
    assert_int_equal(inst[0].ttl, KM_MDNS_TTL_HOST);
    assert_int_equal(inst[0].n_addrs, 2);
    assert_int_equal(km_mdns_addr_kind(&inst[0].addrs[0]), KM_PATH_LAN);
    assert_int_equal(km_mdns_addr_kind(&inst[0].addrs[1]), KM_PATH_LINK_LOCAL);
    assert_int_equal(inst[0].announcement_len, 0);

    /* Goodbye: TTL 0 everywhere. */
    assert_int_equal(km_mdns_build_announce(&s, true, &b), 0);
    assert_int_equal(km_mdns_parse_response(km_buf_peek_ptr(&b), km_buf_len(&b), inst, 8, &n, &st),
                     0);
    assert_int_equal(n, 1);
    assert_int_equal(inst[0].ttl, 0);
    assert_int_equal(inst[0].n_addrs, 0);
    km_buf_reset(&b);
}

static void test_announcement_split(void **state)
{
    (void)state;
    struct km_key *k;
    assert_int_equal(km_key_generate(&k), 0);
    struct km_path p[16];
    memset(p, 0, sizeof p);
    for (size_t i = 0; i < 16; i++) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&p[i].addr;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(15022);
        s6->sin6_addr.s6_addr[0] = 0x20;
        s6->sin6_addr.s6_addr[15] = (uint8_t)i;
        p[i].kind = KM_PATH_MAPPED;
    }
    struct km_buf an;
    km_buf_init(&an, KM_ANNOUNCE_MAX);
    assert_int_equal(km_announce_build(k, 7, 4000000000u, p, 16, &an), 0);
    char text[KM_ANNOUNCE_TEXT_MAX];
    assert_int_equal(km_announce_to_text(km_buf_peek_ptr(&an), km_buf_len(&an), text, sizeof text),
                     0);
    assert_true(strlen(text) > 2 * 255);
    struct km_mdns_self s;
    self_init(&s, km_key_pub(k));
    s.announcement = text;
    struct km_buf b;
    km_buf_init(&b, KM_MDNS_PKT_MAX);
    assert_int_equal(km_mdns_build_announce(&s, false, &b), 0);
    size_t n = 0;
    assert_int_equal(km_mdns_parse_response(km_buf_peek_ptr(&b), km_buf_len(&b), inst, 8, &n, NULL),
                     0);
    assert_int_equal(n, 1);
    assert_int_equal(inst[0].announcement_len, km_buf_len(&an));
    assert_memory_equal(inst[0].announcement, km_buf_peek_ptr(&an), km_buf_len(&an));
    struct km_announce parsed;
    assert_int_equal(
        km_announce_parse(inst[0].announcement, inst[0].announcement_len, 1700000000u, &parsed), 0);
    assert_int_equal(parsed.n_paths, 16);
    km_buf_reset(&b);
    km_buf_reset(&an);
    km_key_free(k);
}

/* A query for one name and type, with optional QU bit. */
static size_t query(uint8_t *out, const char *name, size_t name_len, uint16_t type, bool qu)
{
    static const uint8_t hdr[12] = {0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    memcpy(out, hdr, 12);
    memcpy(out + 12, name, name_len);
    size_t o = 12 + name_len;
    out[o++] = (uint8_t)(type >> 8);
    out[o++] = (uint8_t)type;
    out[o++] = qu ? 0x80 : 0;
    out[o++] = 1;
    return o;
}

struct answer_case {
    const char *what;
    const char *name;
    size_t name_len;
    uint16_t type;
    bool qu;
    uint16_t src_port;
    enum km_mdns_reply how;
    uint16_t an, ar;
};

#define NM(s) s, sizeof s /* with the root label */

static const struct answer_case answer_cases[] = {
    {"browse", NM(SVC), 12, false, 5353, KM_MDNS_REPLY_MULTICAST, 1, 4},
    {"browse QU", NM(SVC), 12, true, 5353, KM_MDNS_REPLY_UNICAST, 1, 4},
    {"browse legacy", NM(SVC), 12, false, 40000, KM_MDNS_REPLY_UNICAST, 1, 4},
    {"service enumeration", NM("\x09_services\x07_dns-sd\x04_udp\x05local"), 12, false, 5353,
     KM_MDNS_REPLY_MULTICAST, 1, 0},
    {"SRV", NM("\x34" ID1 SVC), 33, false, 5353, KM_MDNS_REPLY_MULTICAST, 1, 2},
    {"TXT", NM("\x34" ID1 SVC), 16, false, 5353, KM_MDNS_REPLY_MULTICAST, 1, 0},
    {"ANY instance", NM("\x34" ID1 SVC), 255, false, 5353, KM_MDNS_REPLY_MULTICAST, 2, 2},
    {"A", NM("\x34" ID1 "\x05local"), 1, false, 5353, KM_MDNS_REPLY_MULTICAST, 1, 1},
    {"AAAA upper case",
     NM("\x34"
        "25NJQAMCWEFLPVKL73J4SZAHHIHOC4XT3KTCGJNPAINGR5YHKENA\x05LOCAL"),
     28, false, 5353, KM_MDNS_REPLY_MULTICAST, 1, 1},
    {"other service", NM("\x05_http\x04_tcp\x05local"), 12, false, 5353, KM_MDNS_REPLY_NONE, 0, 0},
    {"MX of host", NM("\x34" ID1 "\x05local"), 15, false, 5353, KM_MDNS_REPLY_NONE, 0, 0},
};

static void test_answers(void **state)
{
    (void)state;
    struct km_mdns_self s;
    self_init(&s, &key1);
    struct km_buf b;
    km_buf_init(&b, KM_MDNS_PKT_MAX);
    for (size_t i = 0; i < sizeof answer_cases / sizeof answer_cases[0]; i++) {
        const struct answer_case *c = &answer_cases[i];
        uint8_t q[512];
        size_t len = query(q, c->name, c->name_len, c->type, c->qu);
        enum km_mdns_reply how;
        int r = km_mdns_answer(&s, q, len, c->src_port, &b, &how);
        if (r != 0 || how != c->how) {
            fail_msg("%s: r=%d how=%d", c->what, r, (int)how);
        }
        if (how == KM_MDNS_REPLY_NONE) {
            assert_int_equal(km_buf_len(&b), 0);
            continue;
        }
        const uint8_t *p = km_buf_peek_ptr(&b);
        bool legacy = c->src_port != 5353;
        assert_int_equal(p[0], legacy ? 0x12 : 0);
        assert_int_equal(p[5], legacy ? 1 : 0);
        if (p[7] != c->an || p[11] != c->ar) {
            fail_msg("%s: an=%d ar=%d", c->what, p[7], p[11]);
        }
        if (c->type == 12 && c->name_len == sizeof SVC) {
            /* Our own answer parses back into our instance, with capped TTLs when legacy. */
            size_t n = 0;
            assert_int_equal(km_mdns_parse_response(p, km_buf_len(&b), inst, 8, &n, NULL), 0);
            assert_int_equal(n, 1);
            assert_int_equal(inst[0].ttl, legacy ? 10 : 120);
        }
    }
    km_buf_reset(&b);
}

/* ---- hostile responses ---- */

/* A response header with an answer count. */
#define RH(an) "\x00\x00\x84\x00\x00\x00\x00" an "\x00\x00\x00\x00"

struct hostile {
    const char *what;
    const char *bytes;
    size_t len;
    int rc;
    size_t n;
};

#define H(w, b, rc, n)            \
    {                             \
        w, b, sizeof b - 1, rc, n \
    }

static const struct hostile hostile[] = {
    H("empty", "", KM_ERR_INVALID, 0),
    H("short header", "\x00\x00\x84\x00\x00", KM_ERR_INVALID, 0),
    H("query, not response", "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", KM_ERR_INVALID, 0),
    H("no records", RH("\x00"), 0, 0),
    H("rcode set: ignored", "\x00\x00\x84\x03\x00\x00\x00\x01\x00\x00\x00\x00", 0, 0),
    H("count beyond data", RH("\x01"), KM_ERR_INVALID, 0),
    H("pointer to itself",
      RH("\x01") "\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x78\x00\x04\x01\x02\x03\x04", KM_ERR_INVALID,
      0),
    H("forward pointer",
      RH("\x01") "\xc0\x0e\x00\x01\x00\x01\x00\x00\x00\x78\x00\x04\x01\x02\x03\x04", KM_ERR_INVALID,
      0),
    H("pointer loop via label",
      RH("\x01") "\x01x\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x78\x00\x04\x01\x02\x03\x04",
      KM_ERR_INVALID, 0),
    H("extended label type",
      RH("\x01") "\x41x\x00\x00\x01\x00\x01\x00\x00\x00\x78\x00\x04\x01\x02\x03\x04",
      KM_ERR_INVALID, 0),
    H("label past end",
      RH("\x01") "\x3f"
                 "abc",
      KM_ERR_INVALID, 0),
    H("rdlength past end", RH("\x01") "\x00\x00\x01\x00\x01\x00\x00\x00\x78\x00\x09\x01\x02",
      KM_ERR_INVALID, 0),
    H("A with rdlength 4 ok",
      RH("\x01") "\x00\x00\x01\x00\x01\x00\x00\x00\x78\x00\x04\x01\x02\x03\x04", 0, 0),
    H("trailing byte",
      RH("\x01") "\x00\x00\x01\x00\x01\x00\x00\x00\x78\x00\x04\x01\x02\x03\x04\x00", KM_ERR_INVALID,
      0),
    H("PTR with rdlength shorter than its name",
      RH("\x01") SVC "\x00\x00\x0c\x00\x01\x00\x00\x11\x94\x00\x02\x01x\x00", KM_ERR_INVALID, 0),
    H("PTR alone: incomplete, dropped",
      RH("\x01") SVC "\x00\x00\x0c\x00\x01\x00\x00\x11\x94\x00\x02\xc0\x0c", 0, 0),
};

static void test_hostile(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        const struct hostile *h = &hostile[i];
        /* Exactly-sized heap copy so ASan sees over-reads. */
        uint8_t *p = malloc(h->len + 1);
        assert_non_null(p);
        memcpy(p, h->bytes, h->len);
        size_t n = 99;
        int r = km_mdns_parse_response(p, h->len, inst, 8, &n, NULL);
        if (r != h->rc || n != h->n) {
            fail_msg("%s: r=%d n=%zu", h->what, r, n);
        }
        struct km_mdns_self s;
        self_init(&s, &key1);
        struct km_buf b;
        km_buf_init(&b, KM_MDNS_PKT_MAX);
        enum km_mdns_reply how;
        int ra = km_mdns_answer(&s, p, h->len, 5353, &b, &how);
        assert_true(ra == 0 || ra == KM_ERR_INVALID);
        assert_int_equal(how, KM_MDNS_REPLY_NONE);
        km_buf_reset(&b);
        free(p);
    }
}

/* Every prefix of a valid announcement is rejected as invalid, never crashes. */
static void test_truncations(void **state)
{
    (void)state;
    struct km_mdns_self s;
    self_init(&s, &key1);
    struct km_buf b;
    km_buf_init(&b, KM_MDNS_PKT_MAX);
    assert_int_equal(km_mdns_build_announce(&s, false, &b), 0);
    size_t len = km_buf_len(&b);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *p = malloc(cut + 1);
        assert_non_null(p);
        memcpy(p, km_buf_peek_ptr(&b), cut);
        size_t n = 5;
        assert_int_equal(km_mdns_parse_response(p, cut, inst, 8, &n, NULL), KM_ERR_INVALID);
        assert_int_equal(n, 0);
        free(p);
    }
    km_buf_reset(&b);
}

/* An instance whose TXT key is someone else's is rejected; oversized messages are refused. */
static void test_wrong_key_and_size(void **state)
{
    (void)state;
    struct km_mdns_self s;
    self_init(&s, &key1);
    struct km_buf b;
    km_buf_init(&b, KM_MDNS_PKT_MAX);
    assert_int_equal(km_mdns_build_announce(&s, false, &b), 0);
    uint8_t *p = malloc(KM_MDNS_PKT_MAX + 1);
    assert_non_null(p);
    size_t len = km_buf_len(&b);
    memcpy(p, km_buf_peek_ptr(&b), len);
    /* Replace the base64 key in the TXT with key2's. */
    char k1[45], k2[45];
    sodium_bin2base64(k1, sizeof k1, key1.b, 32, sodium_base64_VARIANT_ORIGINAL);
    sodium_bin2base64(k2, sizeof k2, key2.b, 32, sodium_base64_VARIANT_ORIGINAL);
    uint8_t *at = memmem(p, len, k1, 44);
    assert_non_null(at);
    memcpy(at, k2, 44);
    size_t n = 9;
    struct km_mdns_parse_stats st;
    assert_int_equal(km_mdns_parse_response(p, len, inst, 8, &n, &st), 0);
    assert_int_equal(n, 0);
    assert_int_equal(st.rejected, 1);
    /* Not base64 at all. */
    memcpy(at, "!!!!", 4);
    assert_int_equal(km_mdns_parse_response(p, len, inst, 8, &n, &st), 0);
    assert_int_equal(n, 0);
    assert_int_equal(st.rejected, 1);
    /* Oversized. */
    memset(p, 0, KM_MDNS_PKT_MAX + 1);
    assert_int_equal(km_mdns_parse_response(p, KM_MDNS_PKT_MAX + 1, inst, 8, &n, &st),
                     KM_ERR_TOO_LARGE);
    enum km_mdns_reply how;
    assert_int_equal(km_mdns_answer(&s, p, KM_MDNS_PKT_MAX + 1, 5353, &b, &how), KM_ERR_TOO_LARGE);
    /* Capacity 0: counted as dropped. */
    assert_int_equal(km_mdns_build_announce(&s, false, &b), 0);
    assert_int_equal(km_mdns_parse_response(km_buf_peek_ptr(&b), km_buf_len(&b), inst, 0, &n, &st),
                     0);
    assert_int_equal(n, 0);
    assert_int_equal(st.dropped, 1);
    free(p);
    km_buf_reset(&b);
}

static void test_query(void **state)
{
    (void)state;
    struct km_buf b;
    km_buf_init(&b, 512);
    assert_int_equal(km_mdns_build_query(&b), 0);
    assert_int_equal(km_buf_len(&b), 12 + sizeof SVC + 4);
    struct km_mdns_self s;
    self_init(&s, &key2);
    struct km_buf r;
    km_buf_init(&r, KM_MDNS_PKT_MAX);
    enum km_mdns_reply how;
    assert_int_equal(km_mdns_answer(&s, km_buf_peek_ptr(&b), km_buf_len(&b), 5353, &r, &how), 0);
    assert_int_equal(how, KM_MDNS_REPLY_MULTICAST);
    size_t n = 0;
    assert_int_equal(km_mdns_parse_response(km_buf_peek_ptr(&r), km_buf_len(&r), inst, 8, &n, NULL),
                     0);
    assert_int_equal(n, 1);
    assert_memory_equal(inst[0].key.b, key2.b, 32);
    km_buf_reset(&b);
    km_buf_reset(&r);
}

static void on_found(void *arg, const struct km_mdns_found *f)
{
    (void)arg;
    (void)f;
}

/* Bad options fail synchronously and leave no handle behind on the loop. */
static void test_new_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_mdns_opts o;
    memset(&o, 0, sizeof o);
    o.key = key1;
    struct km_mdns *m = (struct km_mdns *)&o;
    assert_int_equal(km_mdns_new(&loop, &o, on_found, NULL, &m), KM_ERR_INVALID); /* port 0 */
    assert_null(m);
    o.port = 15022;
    const char *const bad_if[] = {"km-no-such-if0"};
    o.ifaces = bad_if;
    o.n_ifaces = 1;
    assert_int_equal(km_mdns_new(&loop, &o, on_found, NULL, &m), KM_ERR_INVALID);
    o.n_ifaces = 0;
    o.announcement = "b=AAAA";
    assert_int_equal(km_mdns_new(&loop, &o, on_found, NULL, &m), KM_ERR_INVALID);
    assert_null(m);
    km_mdns_close(NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),   cmocka_unit_test(test_announcement_split),
        cmocka_unit_test(test_answers),     cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_truncations), cmocka_unit_test(test_wrong_key_and_size),
        cmocka_unit_test(test_query),       cmocka_unit_test(test_new_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
