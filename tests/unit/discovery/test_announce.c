/* Unit tests for discovery/announce.c: round trips, the wire layout of PROTOCOL.md section 3
 * checked independently, every truncation, every flipped byte, wrong keys, missing domain
 * separation, expiry, limits, bad fields signed by the right key, trailing bytes, and the
 * text form with hostile strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>
#include <sodium.h>

#include "discovery/announce.h"

#define N_ITEMS(a) (sizeof(a) / sizeof((a)[0]))
#define NOW 1700000000ull
#define CONTEXT "keymesh announce v1" /* with its NUL: 20 bytes */

struct fixture {
    struct km_key *a, *b;
};

static int setup(void **state)
{
    static struct fixture f;
    uint8_t seed[32];
    memset(seed, 0x11, sizeof seed);
    if (km_key_from_seed(seed, &f.a) != 0) {
        return -1;
    }
    memset(seed, 0x22, sizeof seed);
    if (km_key_from_seed(seed, &f.b) != 0) {
        return -1;
    }
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    km_key_free(f->a);
    km_key_free(f->b);
    return 0;
}

static struct km_path v4(enum km_path_kind kind, const char *ip, uint16_t port)
{
    struct km_path p;
    memset(&p, 0, sizeof p);
    p.kind = kind;
    struct sockaddr_in *sin = (struct sockaddr_in *)&p.addr;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
    return p;
}

static struct km_path v6(enum km_path_kind kind, const char *ip, uint16_t port)
{
    struct km_path p;
    memset(&p, 0, sizeof p);
    p.kind = kind;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&p.addr;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
    return p;
}

static struct km_path relay(const char *ip, uint16_t port, uint8_t via_fill)
{
    struct km_path p = v6(KM_PATH_RELAY, ip, port);
    memset(p.via.b, via_fill, sizeof p.via.b);
    p.has_via = true;
    return p;
}

/* Three paths: LAN over IPv4, VPN over IPv6, relay over IPv4 with a via key. */
static size_t sample_paths(struct km_path *out)
{
    out[0] = v4(KM_PATH_LAN, "192.168.1.20", 4242);
    out[1] = v6(KM_PATH_VPN, "fd00::1:2", 22);
    out[2] = v4(KM_PATH_RELAY, "203.0.113.7", 443);
    memset(out[2].via.b, 0xab, sizeof out[2].via.b);
    out[2].has_via = true;
    return 3;
}

/* Build the sample announcement into a fresh owned buffer; returns its length. */
static size_t build_sample(const struct km_key *k, uint8_t *out, size_t outsz)
{
    struct km_path paths[3];
    size_t n = sample_paths(paths);
    struct km_buf b;
    km_buf_init(&b, KM_ANNOUNCE_MAX);
    assert_int_equal(km_announce_build(k, 7, NOW + 3600, paths, n, &b), 0);
    size_t len = km_buf_len(&b);
    assert_true(len <= outsz);
    memcpy(out, km_buf_peek_ptr(&b), len);
    km_buf_reset(&b);
    return len;
}

/* Sign an arbitrary body as PROTOCOL.md 3 says (context || body), independently of the
 * code under test, and append the signature. Returns the total length. */
static size_t sign_body(const struct km_key *k, const uint8_t *body, size_t len, uint8_t *out)
{
    uint8_t msg[sizeof CONTEXT + KM_ANNOUNCE_MAX + 64];
    memcpy(msg, CONTEXT, sizeof CONTEXT);
    memcpy(msg + sizeof CONTEXT, body, len);
    memcpy(out, body, len);
    assert_int_equal(km_key_sign(k, msg, sizeof CONTEXT + len, out + len), 0);
    return len + KM_SIG_LEN;
}

/* The header of an announcement by k with n_paths declared. */
static void put_header(struct km_buf *b, const struct km_key *k, uint64_t seq, uint64_t exp,
                       uint8_t n_paths)
{
    assert_int_equal(km_buf_put_bytes(b, "KMA1", 4), 0);
    assert_int_equal(km_buf_put_u8(b, 1), 0);
    assert_int_equal(km_buf_put_bytes(b, km_key_pub(k)->b, 32), 0);
    assert_int_equal(km_buf_put_u64(b, seq), 0);
    assert_int_equal(km_buf_put_u64(b, exp), 0);
    assert_int_equal(km_buf_put_u8(b, n_paths), 0);
}

static void test_round_trip(void **state)
{
    struct fixture *f = *state;
    uint8_t wire[KM_ANNOUNCE_MAX];
    size_t len = build_sample(f->a, wire, sizeof wire);
    /* 54 header + (1+1+4+2) + (1+1+16+2) + (1+1+4+2+32) + 64 signature */
    assert_int_equal(len, 54 + 8 + 20 + 40 + 64);

    struct km_announce an;
    assert_int_equal(km_announce_parse(wire, len, NOW, &an), 0);
    assert_true(km_pubkey_equal(&an.key, km_key_pub(f->a)));
    assert_int_equal(an.seq, 7);
    assert_int_equal(an.expires, NOW + 3600);
    assert_int_equal(an.n_paths, 3);
    struct km_path want[3];
    sample_paths(want);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(an.paths[i].kind, want[i].kind);
        assert_int_equal(an.paths[i].addr.ss_family, want[i].addr.ss_family);
        assert_int_equal(an.paths[i].source, KM_PATH_SRC_GOSSIP);
        assert_int_equal(an.paths[i].expires_ms, 0);
        assert_int_equal(an.paths[i].has_via, want[i].has_via);
        if (want[i].has_via) {
            assert_memory_equal(an.paths[i].via.b, want[i].via.b, 32);
        }
        if (want[i].addr.ss_family == AF_INET) {
            assert_memory_equal(&an.paths[i].addr, &want[i].addr, sizeof(struct sockaddr_in));
        } else {
            assert_memory_equal(&an.paths[i].addr, &want[i].addr, sizeof(struct sockaddr_in6));
        }
    }
    /* Zero paths is a valid announcement ("I have no direct path now"). */
    struct km_buf b;
    km_buf_init(&b, KM_ANNOUNCE_MAX);
    assert_int_equal(km_announce_build(f->a, 1, NOW + 1, NULL, 0, &b), 0);
    assert_int_equal(km_buf_len(&b), 54 + 64);
    assert_int_equal(km_announce_parse(km_buf_peek_ptr(&b), km_buf_len(&b), NOW, &an), 0);
    assert_int_equal(an.n_paths, 0);
    km_buf_reset(&b);
}

/* The layout and signature input of PROTOCOL.md 3, rebuilt by hand. */
static void test_wire_layout(void **state)
{
    struct fixture *f = *state;
    uint8_t wire[KM_ANNOUNCE_MAX];
    size_t len = build_sample(f->a, wire, sizeof wire);

    uint8_t body[KM_ANNOUNCE_MAX];
    struct km_buf b;
    km_buf_init_fixed(&b, body, sizeof body);
    put_header(&b, f->a, 7, NOW + 3600, 3);
    static const uint8_t p0[] = {1, 4, 192, 168, 1, 20, 0x10, 0x92};
    static const uint8_t p1[] = {2, 6, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 22};
    static const uint8_t p2[] = {5, 4, 203, 0, 113, 7, 0x01, 0xbb};
    uint8_t via[32];
    memset(via, 0xab, sizeof via);
    assert_int_equal(km_buf_put_bytes(&b, p0, sizeof p0), 0);
    assert_int_equal(km_buf_put_bytes(&b, p1, sizeof p1), 0);
    assert_int_equal(km_buf_put_bytes(&b, p2, sizeof p2), 0);
    assert_int_equal(km_buf_put_bytes(&b, via, sizeof via), 0);
    uint8_t want[KM_ANNOUNCE_MAX];
    size_t want_len = sign_body(f->a, body, km_buf_len(&b), want);
    assert_int_equal(len, want_len);
    /* Ed25519 is deterministic, so the signature must match byte for byte too. */
    assert_memory_equal(wire, want, len);
}

static void test_truncations(void **state)
{
    struct fixture *f = *state;
    uint8_t wire[KM_ANNOUNCE_MAX];
    size_t len = build_sample(f->a, wire, sizeof wire);
    for (size_t cut = 0; cut < len; cut++) {
        /* A heap copy of exactly cut bytes, so ASan sees any read past it. */
        uint8_t *p = malloc(cut + 1);
        assert_non_null(p);
        memcpy(p, wire, cut);
        struct km_announce an;
        int r = km_announce_parse(p, cut, NOW, &an);
        assert_int_equal(r, KM_ERR_INVALID);
        assert_int_equal(an.n_paths, 0);
        free(p);
    }
}

static void test_flipped_bytes(void **state)
{
    struct fixture *f = *state;
    uint8_t wire[KM_ANNOUNCE_MAX];
    size_t len = build_sample(f->a, wire, sizeof wire);
    for (size_t i = 0; i < len; i++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            uint8_t copy[KM_ANNOUNCE_MAX];
            memcpy(copy, wire, len);
            copy[i] ^= (uint8_t)(1u << bit);
            struct km_announce an;
            int r = km_announce_parse(copy, len, NOW, &an);
            assert_int_not_equal(r, 0);
            /* Outside the magic (0-3), version (4), count (53), and each path's kind and
             * family bytes (54,55 62,63 82,83), a flip keeps the structure valid and only
             * the signature can catch it. */
            bool structural =
                i <= 4 || i == 53 || i == 54 || i == 55 || i == 62 || i == 63 || i == 82 || i == 83;
            if (!structural) {
                assert_int_equal(r, KM_ERR_CRYPTO);
            }
        }
    }
}

static void test_wrong_key_and_context(void **state)
{
    struct fixture *f = *state;
    uint8_t wire[KM_ANNOUNCE_MAX];
    size_t len = build_sample(f->a, wire, sizeof wire);
    struct km_announce an;

    /* Signed by a, claiming to be b. */
    uint8_t copy[KM_ANNOUNCE_MAX];
    memcpy(copy, wire, len);
    memcpy(copy + 5, km_key_pub(f->b)->b, 32);
    assert_int_equal(km_announce_parse(copy, len, NOW, &an), KM_ERR_CRYPTO);

    /* Signed by b over a body claiming a. */
    uint8_t body[KM_ANNOUNCE_MAX];
    size_t body_len = len - KM_SIG_LEN;
    memcpy(body, wire, body_len);
    uint8_t msg[sizeof CONTEXT + KM_ANNOUNCE_MAX];
    memcpy(msg, CONTEXT, sizeof CONTEXT);
    memcpy(msg + sizeof CONTEXT, body, body_len);
    memcpy(copy, body, body_len);
    assert_int_equal(km_key_sign(f->b, msg, sizeof CONTEXT + body_len, copy + body_len), 0);
    assert_int_equal(km_announce_parse(copy, len, NOW, &an), KM_ERR_CRYPTO);

    /* Signed by a but without the context string: a signature made for another purpose. */
    assert_int_equal(km_key_sign(f->a, body, body_len, copy + body_len), 0);
    assert_int_equal(km_announce_parse(copy, len, NOW, &an), KM_ERR_CRYPTO);

    /* Context without its NUL. */
    assert_int_equal(km_key_sign(f->a, msg, sizeof CONTEXT - 1, copy + body_len), 0);
    memmove(msg + sizeof CONTEXT - 1, msg + sizeof CONTEXT, body_len);
    assert_int_equal(km_key_sign(f->a, msg, sizeof CONTEXT - 1 + body_len, copy + body_len), 0);
    assert_int_equal(km_announce_parse(copy, len, NOW, &an), KM_ERR_CRYPTO);

    /* An all-zero key (a small-order point) never verifies. */
    memcpy(copy, wire, len);
    memset(copy + 5, 0, 32);
    assert_int_equal(km_announce_parse(copy, len, NOW, &an), KM_ERR_CRYPTO);
}

static void test_expiry(void **state)
{
    struct fixture *f = *state;
    static const struct {
        uint64_t expires, now;
        int want;
    } cases[] = {
        {NOW + 1, NOW, 0},
        {NOW, NOW, KM_ANNOUNCE_ERR_EXPIRED},
        {NOW - 1, NOW, KM_ANNOUNCE_ERR_EXPIRED},
        {0, NOW, KM_ANNOUNCE_ERR_EXPIRED},
        {0, 0, KM_ANNOUNCE_ERR_EXPIRED},
        {UINT64_MAX, UINT64_MAX - 1, 0},
        {UINT64_MAX, UINT64_MAX, KM_ANNOUNCE_ERR_EXPIRED},
    };
    for (size_t i = 0; i < N_ITEMS(cases); i++) {
        struct km_buf b;
        km_buf_init(&b, KM_ANNOUNCE_MAX);
        struct km_path p = v4(KM_PATH_MAPPED, "198.51.100.1", 1);
        assert_int_equal(km_announce_build(f->a, 1, cases[i].expires, &p, 1, &b), 0);
        struct km_announce an;
        assert_int_equal(km_announce_parse(km_buf_peek_ptr(&b), km_buf_len(&b), cases[i].now, &an),
                         cases[i].want);
        km_buf_reset(&b);
    }
    /* The expired code is distinct from every other parser code. */
    assert_int_not_equal(KM_ANNOUNCE_ERR_EXPIRED, KM_ERR_INVALID);
    assert_int_not_equal(KM_ANNOUNCE_ERR_EXPIRED, KM_ERR_CRYPTO);
    assert_int_not_equal(KM_ANNOUNCE_ERR_EXPIRED, KM_ERR_TOO_LARGE);
    assert_int_not_equal(KM_ANNOUNCE_ERR_EXPIRED, KM_ERR_UNSUPPORTED);
}

static void test_limits(void **state)
{
    struct fixture *f = *state;
    struct km_path paths[KM_ANNOUNCE_PATHS_MAX + 1];
    for (size_t i = 0; i < N_ITEMS(paths); i++) {
        paths[i] = relay("2001:db8::1", (uint16_t)(1000 + i), (uint8_t)i);
    }
    struct km_buf b;
    km_buf_init(&b, 4096);
    /* 17 paths: refused, nothing written. */
    assert_int_equal(km_announce_build(f->a, 1, NOW + 60, paths, N_ITEMS(paths), &b),
                     KM_ERR_TOO_LARGE);
    assert_int_equal(km_buf_len(&b), 0);
    /* 16 IPv6 relay paths: exactly KM_ANNOUNCE_MAX bytes. */
    assert_int_equal(km_announce_build(f->a, 1, NOW + 60, paths, KM_ANNOUNCE_PATHS_MAX, &b), 0);
    assert_int_equal(km_buf_len(&b), KM_ANNOUNCE_MAX);
    struct km_announce an;
    assert_int_equal(km_announce_parse(km_buf_peek_ptr(&b), km_buf_len(&b), NOW, &an), 0);
    assert_int_equal(an.n_paths, KM_ANNOUNCE_PATHS_MAX);
    assert_int_equal(an.paths[15].via.b[0], 15);
    /* Its text form fills KM_ANNOUNCE_TEXT_MAX exactly. */
    char text[KM_ANNOUNCE_TEXT_MAX];
    assert_int_equal(km_announce_to_text(km_buf_peek_ptr(&b), km_buf_len(&b), text, sizeof text),
                     0);
    assert_int_equal(strlen(text), KM_ANNOUNCE_TEXT_MAX - 1);
    uint8_t back[KM_ANNOUNCE_MAX];
    size_t back_len = 1;
    assert_int_equal(km_announce_from_text(text, strlen(text), back, sizeof back, &back_len), 0);
    assert_int_equal(back_len, KM_ANNOUNCE_MAX);
    assert_memory_equal(back, km_buf_peek_ptr(&b), back_len);
    /* One byte more than the maximum (any content) is too large. */
    uint8_t big[KM_ANNOUNCE_MAX + 1];
    memcpy(big, km_buf_peek_ptr(&b), KM_ANNOUNCE_MAX);
    big[KM_ANNOUNCE_MAX] = 0;
    assert_int_equal(km_announce_parse(big, sizeof big, NOW, &an), KM_ERR_TOO_LARGE);
    km_buf_reset(&b);

    /* A declared count above 16, signed by the right key: too large, before any path. */
    static const uint8_t counts[] = {17, 128, 255};
    for (size_t i = 0; i < N_ITEMS(counts); i++) {
        uint8_t body[KM_ANNOUNCE_MAX];
        struct km_buf h;
        km_buf_init_fixed(&h, body, sizeof body);
        put_header(&h, f->a, 1, NOW + 60, counts[i]);
        uint8_t wire[KM_ANNOUNCE_MAX + 64];
        size_t len = sign_body(f->a, body, km_buf_len(&h), wire);
        assert_int_equal(km_announce_parse(wire, len, NOW, &an), KM_ERR_TOO_LARGE);
    }

    /* All or nothing: an output buffer too small for the record is left untouched. */
    km_buf_init(&b, 100);
    assert_int_equal(km_buf_put_u8(&b, 0x55), 0);
    assert_int_equal(km_announce_build(f->a, 1, NOW + 60, paths, 2, &b), KM_ERR_TOO_LARGE);
    assert_int_equal(km_buf_len(&b), 1);
    km_buf_reset(&b);
}

/* Bodies that are wrong in one field, correctly signed by the key they name. */
static void test_bad_fields_signed(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *what;
        uint8_t path[24];
        size_t path_len;
        int want;
    } cases[] = {
        {"family 0", {1, 0, 10, 0, 0, 1, 0, 22}, 8, KM_ERR_INVALID},
        {"family 5", {1, 5, 10, 0, 0, 1, 0, 22}, 8, KM_ERR_INVALID},
        {"family AF_INET6 (10)", {1, 10, 10, 0, 0, 1, 0, 22}, 8, KM_ERR_INVALID},
        {"family 255", {1, 255, 10, 0, 0, 1, 0, 22}, 8, KM_ERR_INVALID},
        {"kind 6", {6, 4, 10, 0, 0, 1, 0, 22}, 8, KM_ERR_INVALID},
        {"kind 255", {255, 4, 10, 0, 0, 1, 0, 22}, 8, KM_ERR_INVALID},
        {"port 0 v4", {1, 4, 10, 0, 0, 1, 0, 0}, 8, KM_ERR_INVALID},
        {"port 0 v6",
         {1, 6, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0},
         20,
         KM_ERR_INVALID},
        {"v6 family, v4 length", {1, 6, 10, 0, 0, 1, 0, 22}, 8, KM_ERR_INVALID},
        {"relay without via", {5, 4, 10, 0, 0, 1, 0, 22}, 8, KM_ERR_INVALID},
        {"good v4", {1, 4, 10, 0, 0, 1, 0, 22}, 8, 0},
        {"good v6 link-local",
         {0, 6, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 22},
         20,
         0},
    };
    for (size_t i = 0; i < N_ITEMS(cases); i++) {
        uint8_t body[KM_ANNOUNCE_MAX];
        struct km_buf h;
        km_buf_init_fixed(&h, body, sizeof body);
        put_header(&h, f->a, 1, NOW + 60, 1);
        assert_int_equal(km_buf_put_bytes(&h, cases[i].path, cases[i].path_len), 0);
        uint8_t wire[KM_ANNOUNCE_MAX + 64];
        size_t len = sign_body(f->a, body, km_buf_len(&h), wire);
        struct km_announce an;
        int r = km_announce_parse(wire, len, NOW, &an);
        if (r != cases[i].want) {
            fail_msg("%s: got %d, want %d", cases[i].what, r, cases[i].want);
        }
    }

    /* Bad magic and versions, signed. */
    static const struct {
        uint8_t head[5];
        int want;
    } heads[] = {
        {{'K', 'M', 'A', '2', 1}, KM_ERR_INVALID},
        {{'k', 'M', 'A', '1', 1}, KM_ERR_INVALID},
        {{0, 0, 0, 0, 1}, KM_ERR_INVALID},
        {{'K', 'M', 'A', '1', 0}, KM_ERR_UNSUPPORTED},
        {{'K', 'M', 'A', '1', 2}, KM_ERR_UNSUPPORTED},
        {{'K', 'M', 'A', '1', 255}, KM_ERR_UNSUPPORTED},
    };
    for (size_t i = 0; i < N_ITEMS(heads); i++) {
        uint8_t wire[KM_ANNOUNCE_MAX];
        size_t len = build_sample(f->a, wire, sizeof wire);
        memcpy(wire, heads[i].head, 5);
        uint8_t resigned[KM_ANNOUNCE_MAX];
        len = sign_body(f->a, wire, len - KM_SIG_LEN, resigned);
        struct km_announce an;
        assert_int_equal(km_announce_parse(resigned, len, NOW, &an), heads[i].want);
    }
}

static void test_trailing(void **state)
{
    struct fixture *f = *state;
    uint8_t wire[KM_ANNOUNCE_MAX + 8];
    size_t len = build_sample(f->a, wire, sizeof wire);
    struct km_announce an;
    for (size_t extra = 1; extra <= 8; extra++) {
        memset(wire + len, 0, extra);
        assert_int_equal(km_announce_parse(wire, len + extra, NOW, &an), KM_ERR_INVALID);
    }
    /* Extra bytes inside the signed part (one more path's worth than declared), correctly
     * signed: still malformed, found before the signature is checked. */
    uint8_t body[KM_ANNOUNCE_MAX];
    memcpy(body, wire, len - KM_SIG_LEN);
    static const uint8_t extra_path[] = {1, 4, 10, 0, 0, 1, 0, 22};
    memcpy(body + len - KM_SIG_LEN, extra_path, sizeof extra_path);
    uint8_t resigned[KM_ANNOUNCE_MAX + 64];
    size_t rlen = sign_body(f->a, body, len - KM_SIG_LEN + sizeof extra_path, resigned);
    assert_int_equal(km_announce_parse(resigned, rlen, NOW, &an), KM_ERR_INVALID);
}

static void test_build_rejects(void **state)
{
    struct fixture *f = *state;
    struct km_path bad[6];
    bad[0] = v4(KM_PATH_LAN, "10.0.0.1", 0);   /* port 0 */
    bad[1] = v4(KM_PATH_RELAY, "10.0.0.1", 1); /* relay without via */
    bad[2] = v4(KM_PATH_LAN, "10.0.0.1", 1);
    bad[2].addr.ss_family = AF_UNIX; /* bad family */
    bad[3] = v4(KM_PATH_LAN, "10.0.0.1", 1);
    bad[3].kind = KM_PATH_KIND_N; /* bad kind */
    bad[4] = v6(KM_PATH_LAN, "::1", 0);
    bad[5] = v4(KM_PATH_LAN, "10.0.0.1", 1);
    bad[5].kind = (enum km_path_kind) - 1;
    for (size_t i = 0; i < N_ITEMS(bad); i++) {
        struct km_buf b;
        km_buf_init(&b, KM_ANNOUNCE_MAX);
        assert_int_equal(km_announce_build(f->a, 1, NOW + 1, &bad[i], 1, &b), KM_ERR_INVALID);
        assert_int_equal(km_buf_len(&b), 0);
        km_buf_reset(&b);
    }
    struct km_buf b;
    km_buf_init(&b, KM_ANNOUNCE_MAX);
    assert_int_equal(km_announce_build(NULL, 1, NOW + 1, NULL, 0, &b), KM_ERR_INVALID);
    assert_int_equal(km_announce_build(f->a, 1, NOW + 1, NULL, 1, &b), KM_ERR_INVALID);
    /* A via on a non-relay path is not carried. */
    struct km_path p = v4(KM_PATH_LAN, "10.0.0.1", 1);
    p.has_via = true;
    memset(p.via.b, 1, 32);
    assert_int_equal(km_announce_build(f->a, 1, NOW + 1, &p, 1, &b), 0);
    struct km_announce an;
    assert_int_equal(km_announce_parse(km_buf_peek_ptr(&b), km_buf_len(&b), NOW, &an), 0);
    assert_false(an.paths[0].has_via);
    km_buf_reset(&b);
    assert_int_equal(km_announce_parse(NULL, 0, NOW, &an), KM_ERR_INVALID);
    assert_int_equal(km_announce_parse((const uint8_t *)"", 0, NOW, NULL), KM_ERR_INVALID);
}

static void test_text(void **state)
{
    struct fixture *f = *state;
    uint8_t wire[KM_ANNOUNCE_MAX];
    size_t len = build_sample(f->a, wire, sizeof wire);
    char text[KM_ANNOUNCE_TEXT_MAX];
    assert_int_equal(km_announce_to_text(wire, len, text, sizeof text), 0);
    assert_memory_equal(text, "a=S01BMQ", 8); /* "KMA1" 0x01 */
    uint8_t back[KM_ANNOUNCE_MAX];
    size_t back_len = 0;
    assert_int_equal(km_announce_from_text(text, strlen(text), back, sizeof back, &back_len), 0);
    assert_int_equal(back_len, len);
    assert_memory_equal(back, wire, len);
    struct km_announce an;
    assert_int_equal(km_announce_parse(back, back_len, NOW, &an), 0);

    /* to_text: output too small by one, and input too large. */
    size_t need = strlen(text) + 1;
    char small[KM_ANNOUNCE_TEXT_MAX];
    memset(small, 'x', sizeof small);
    assert_int_equal(km_announce_to_text(wire, len, small, need - 1), KM_ERR_TOO_LARGE);
    assert_int_equal(small[0], '\0');
    assert_int_equal(km_announce_to_text(wire, len, small, need), 0);
    assert_int_equal(km_announce_to_text(wire, len, small, 0), KM_ERR_TOO_LARGE);
    assert_int_equal(km_announce_to_text(wire, len, small, 1), KM_ERR_TOO_LARGE);
    uint8_t big[KM_ANNOUNCE_MAX + 1];
    memset(big, 0, sizeof big);
    assert_int_equal(km_announce_to_text(big, sizeof big, small, sizeof small), KM_ERR_TOO_LARGE);

    /* from_text: hostile strings. */
    static const struct {
        const char *s;
        size_t len;
        int want;
    } cases[] = {
        {"", 0, KM_ERR_INVALID},
        {"a", 1, KM_ERR_INVALID},
        {"a=", 2, KM_ERR_INVALID},
        {"b=AAAA", 6, KM_ERR_INVALID},
        {"A=AAAA", 6, KM_ERR_INVALID},
        {"a:AAAA", 6, KM_ERR_INVALID},
        {"a=AAA", 5, KM_ERR_INVALID},
        {"a=AAAAA", 7, KM_ERR_INVALID},
        {"a=AB==", 6, KM_ERR_INVALID}, /* non-zero padding bits */
        {"a=A===", 6, KM_ERR_INVALID},
        {"a===AA", 6, KM_ERR_INVALID},
        {"a=AA=A", 6, KM_ERR_INVALID},
        {"a= AAAA", 7, KM_ERR_INVALID},
        {"a=AAAA ", 7, KM_ERR_INVALID},
        {"a=AAAA\n", 7, KM_ERR_INVALID},
        {"a=AA\0A", 6, KM_ERR_INVALID},
        {"a=-_-_", 6, KM_ERR_INVALID},   /* URL-safe alphabet */
        {"a=AAAAAA", 8, KM_ERR_INVALID}, /* missing padding */
        {" a=AAAA", 7, KM_ERR_INVALID},
        {"a=AA\xee"
         "A",
         6, KM_ERR_INVALID}, /* libsodium 1.0.18 on arm64 took this as '/' */
        {"a=\xc1\xc1\xc1\xc1", 6, KM_ERR_INVALID},
        {"a=AA\x80=", 6, KM_ERR_INVALID},
        {"a=AA==", 6, 0}, /* decodes (one byte); parse rejects it later */
        {"a=AAAA", 6, 0},
    };
    for (size_t i = 0; i < N_ITEMS(cases); i++) {
        size_t n = 99;
        int r = km_announce_from_text(cases[i].s, cases[i].len, back, sizeof back, &n);
        if (r != cases[i].want) {
            fail_msg("case %zu \"%s\": got %d, want %d", i, cases[i].s, r, cases[i].want);
        }
        if (r != 0) {
            assert_int_equal(n, 0);
        }
    }
    /* Too long for any announcement. */
    char *huge = malloc(KM_ANNOUNCE_TEXT_MAX + 1);
    assert_non_null(huge);
    memset(huge, 'A', KM_ANNOUNCE_TEXT_MAX + 1);
    huge[0] = 'a';
    huge[1] = '=';
    assert_int_equal(
        km_announce_from_text(huge, KM_ANNOUNCE_TEXT_MAX, back, sizeof back, &back_len),
        KM_ERR_TOO_LARGE);
    free(huge);
    /* Output too small. */
    assert_int_equal(km_announce_from_text(text, strlen(text), back, len - 1, &back_len),
                     KM_ERR_TOO_LARGE);
    assert_int_equal(km_announce_from_text("a=AAAA", 6, back, 2, &back_len), KM_ERR_TOO_LARGE);
    assert_int_equal(km_announce_from_text("a=AA==", 6, back, 1, &back_len), 0);
    assert_int_equal(km_announce_from_text(NULL, 0, back, 1, &back_len), KM_ERR_INVALID);
    assert_int_equal(km_announce_from_text("a=AAAA", 6, back, 3, NULL), KM_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_wire_layout),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_flipped_bytes),
        cmocka_unit_test(test_wrong_key_and_context),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_bad_fields_signed),
        cmocka_unit_test(test_trailing),
        cmocka_unit_test(test_build_rejects),
        cmocka_unit_test(test_text),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
