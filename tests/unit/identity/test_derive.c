/* Unit tests for identity/derive.c: DESIGN.md section 3 vectors, node ID, FQDN, suffix,
 * VIP and prefix parsing with hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "identity/derive.h"

#define N_ITEMS(a) (sizeof(a) / sizeof((a)[0]))

/* DESIGN.md section 3: the public keys of RFC 8032 section 7.1 tests 1 and 2. */
static const struct {
    const char *pk_hex;
    const char *node_id;
    const char *vip;
} vectors[] = {
    {"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
     "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena",
     "fd6b:21fe:31df:a154:a261:626b:f854:46f"},
    {"3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
     "hvabpq7iioevvevxbktu2g36xsojqlgpf3cjndgazvk7ckxumyga",
     "fd6b:39f7:13d0:a644:253f:452:9421:b9f5"},
};

static struct km_pubkey pk_from_hex(const char *hex)
{
    struct km_pubkey pk;
    size_t n = 0;
    assert_int_equal(sodium_hex2bin(pk.b, sizeof pk.b, hex, strlen(hex), NULL, &n, NULL), 0);
    assert_int_equal(n, sizeof pk.b);
    return pk;
}

static void test_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ITEMS(vectors); i++) {
        struct km_pubkey pk = pk_from_hex(vectors[i].pk_hex);
        char id[KM_NODE_ID_LEN + 1];
        km_node_id(&pk, id);
        assert_string_equal(id, vectors[i].node_id);

        char vip[KM_VIP_STRLEN];
        km_vip_str(&pk, KM_DEFAULT_PREFIX, vip);
        assert_string_equal(vip, vectors[i].vip);

        /* Bytes 2-15 are SHA-256(pk)[0..14), independently computed. */
        uint8_t h[crypto_hash_sha256_BYTES];
        uint8_t a[16];
        crypto_hash_sha256(h, pk.b, sizeof pk.b);
        km_vip(&pk, 0x1234, a);
        assert_int_equal(a[0], 0x12);
        assert_int_equal(a[1], 0x34);
        assert_memory_equal(a + 2, h, 14);

        struct km_pubkey back;
        assert_int_equal(km_node_id_parse(id, strlen(id), &back), 0);
        assert_memory_equal(back.b, pk.b, sizeof pk.b);

        /* Upper case is the same key. */
        char upper[KM_NODE_ID_LEN + 1];
        for (size_t j = 0; j <= KM_NODE_ID_LEN; j++) {
            char c = id[j];
            upper[j] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
        }
        assert_int_equal(km_node_id_parse(upper, KM_NODE_ID_LEN, &back), 0);
        assert_memory_equal(back.b, pk.b, sizeof pk.b);

        char fqdn[KM_FQDN_MAX];
        assert_int_equal(km_fqdn(&pk, KM_DEFAULT_SUFFIX, fqdn, sizeof fqdn), 0);
        char want[KM_FQDN_MAX];
        snprintf(want, sizeof want, "%s.mesh.internal", vectors[i].node_id);
        assert_string_equal(fqdn, want);
        assert_int_equal(km_fqdn_parse(fqdn, KM_DEFAULT_SUFFIX, &back), 0);
        assert_memory_equal(back.b, pk.b, sizeof pk.b);
    }
}

static void test_node_id_bad(void **state)
{
    (void)state;
    const char *good = vectors[0].node_id;
    struct km_pubkey pk;
    char buf[80];

    /* Every length but 52. */
    for (size_t len = 0; len < sizeof buf; len++) {
        memset(buf, 'a', sizeof buf);
        if (len == KM_NODE_ID_LEN) {
            continue;
        }
        assert_int_equal(km_node_id_parse(buf, len, &pk), KM_ERR_NODE_ID);
    }
    /* Every byte value at an inner position. */
    for (int c = 0; c < 256; c++) {
        memcpy(buf, good, KM_NODE_ID_LEN);
        buf[10] = (char)c;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7');
        assert_int_equal(km_node_id_parse(buf, KM_NODE_ID_LEN, &pk), ok ? 0 : KM_ERR_NODE_ID);
    }
    /* 52 characters carry 260 bits: the last 4 must be zero, so the final character is
     * 'a' (0) or 'q' (16) and nothing else. */
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyz234567";
    for (unsigned v = 0; v < 32; v++) {
        memcpy(buf, good, KM_NODE_ID_LEN);
        buf[KM_NODE_ID_LEN - 1] = alpha[v];
        int ok = (v & 15u) == 0;
        int r = km_node_id_parse(buf, KM_NODE_ID_LEN, &pk);
        assert_int_equal(r, ok ? 0 : KM_ERR_NODE_ID);
        if (!ok) {
            static const struct km_pubkey zero;
            assert_memory_equal(pk.b, zero.b, sizeof zero.b); /* cleared on failure */
        }
    }
    /* Padding and whitespace. */
    assert_int_equal(
        km_node_id_parse("25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhken=", 52, &pk),
        KM_ERR_NODE_ID);
    assert_int_equal(
        km_node_id_parse(" 5njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena", 52, &pk),
        KM_ERR_NODE_ID);
}

static void test_fqdn_parse_table(void **state)
{
    (void)state;
    const char *id = vectors[0].node_id;
    const char *ID = "25NJQAMCWEFLPVKL73J4SZAHHIHOC4XT3KTCGJNPAINGR5YHKENA";
    struct {
        char name[400];
        const char *suffix;
        int want;
    } t[] = {
        {"", "mesh.internal", 0},
        {"", "mesh.internal", 0},
        {"", "mesh.internal", 0},
        {"", "MESH.Internal", 0},
        {"", "mesh.internal", KM_ERR_INVALID},
        {"", "mesh.internal", KM_ERR_INVALID},
        {"", "mesh.internal", KM_ERR_INVALID},
        {"", "mesh.internal", KM_ERR_INVALID},
        {"", "mesh.internal", KM_ERR_INVALID},
        {"", "mesh.internal", KM_ERR_INVALID},
        {"", "mesh.internal", KM_ERR_NODE_ID},
        {"", "mesh.internal", KM_ERR_INVALID},
        {"", "mesh.internal", KM_ERR_INVALID},
        {"", "mesh.internal", KM_ERR_INVALID},
        {"", "m.example.com", 0},
        {"", "", KM_ERR_INVALID},
        {"", "mesh.internal", KM_ERR_INVALID},
        {"", "mesh.internal.", 0},
    };
    size_t i = 0;
    snprintf(t[i++].name, sizeof t[0].name, "%s.mesh.internal", id);
    snprintf(t[i++].name, sizeof t[0].name, "%s.mesh.internal.", id);    /* absolute */
    snprintf(t[i++].name, sizeof t[0].name, "%s.MESH.INTERNAL", ID);     /* case */
    snprintf(t[i++].name, sizeof t[0].name, "%s.mesh.internal", id);     /* suffix case */
    snprintf(t[i++].name, sizeof t[0].name, "%s.mesh.internal..", id);   /* two dots */
    snprintf(t[i++].name, sizeof t[0].name, "www.%s.mesh.internal", id); /* extra label */
    snprintf(t[i++].name, sizeof t[0].name, "%s.xmesh.internal", id);    /* not under */
    snprintf(t[i++].name, sizeof t[0].name, "%s.mesh.internal.com", id); /* not under */
    snprintf(t[i++].name, sizeof t[0].name, "mesh.internal");            /* no label */
    snprintf(t[i++].name, sizeof t[0].name, ".mesh.internal"); /* empty label: not a name */
    snprintf(t[i++].name, sizeof t[0].name, "%.51s.mesh.internal", id);     /* short id */
    snprintf(t[i++].name, sizeof t[0].name, "%s", id);                      /* id only */
    snprintf(t[i++].name, sizeof t[0].name, "%s..mesh.internal", id);       /* double dot */
    snprintf(t[i++].name, sizeof t[0].name, "%s.%s.mesh.internal", id, id); /* two ids */
    snprintf(t[i++].name, sizeof t[0].name, "%s.m.example.com", id);
    snprintf(t[i++].name, sizeof t[0].name, "%s.", id); /* empty sfx */
    memset(t[i].name, 'a', 300);                        /* too long */
    t[i++].name[300] = '\0';
    snprintf(t[i++].name, sizeof t[0].name, "%s.mesh.internal", id); /* abs suffix */
    assert_int_equal(i, N_ITEMS(t));

    struct km_pubkey want = pk_from_hex(vectors[0].pk_hex);
    for (i = 0; i < N_ITEMS(t); i++) {
        struct km_pubkey pk;
        int r = km_fqdn_parse(t[i].name, t[i].suffix, &pk);
        if (r != t[i].want) {
            fail_msg("case %zu \"%s\" / \"%s\": got %d want %d", i, t[i].name, t[i].suffix, r,
                     t[i].want);
        }
        if (r == 0) {
            assert_memory_equal(pk.b, want.b, sizeof want.b);
        }
    }
}

static void test_fqdn_too_small(void **state)
{
    (void)state;
    struct km_pubkey pk = pk_from_hex(vectors[0].pk_hex);
    char out[KM_FQDN_MAX];
    size_t need = KM_NODE_ID_LEN + 1 + strlen("mesh.internal") + 1;
    for (size_t sz = 0; sz < need; sz++) {
        assert_int_equal(km_fqdn(&pk, "mesh.internal", out, sz), KM_ERR_TOO_LARGE);
    }
    assert_int_equal(km_fqdn(&pk, "mesh.internal", out, need), 0);

    /* The longest suffix fits a 253-character name; one more does not. */
    char suffix[KM_SUFFIX_MAX + 2];
    memset(suffix, 'a', sizeof suffix);
    suffix[KM_SUFFIX_MAX] = '\0';
    assert_int_equal(km_fqdn(&pk, suffix, out, sizeof out), 0);
    assert_int_equal(strlen(out), 253);
    suffix[KM_SUFFIX_MAX] = 'a';
    suffix[KM_SUFFIX_MAX + 1] = '\0';
    assert_int_equal(km_fqdn(&pk, suffix, out, sizeof out), KM_ERR_TOO_LARGE);
}

static void test_suffix_check(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int want;
    } t[] = {
        {"mesh.internal", 0},
        {"m.example.com", 0},
        {"MESH.Internal", 0},
        {"a", 0},
        {"x-1.y2", 0},
        {"", KM_ERR_INVALID},
        {".", KM_ERR_INVALID},
        {"mesh.internal.", KM_ERR_INVALID},
        {".mesh.internal", KM_ERR_INVALID},
        {"mesh..internal", KM_ERR_INVALID},
        {"-mesh.internal", KM_ERR_INVALID},
        {"mesh-.internal", KM_ERR_INVALID},
        {"mesh.internal-", KM_ERR_INVALID},
        {"me_sh.internal", KM_ERR_INVALID},
        {"mesh internal", KM_ERR_INVALID},
        {"mesh.intérnal", KM_ERR_INVALID},
        {"mesh/internal", KM_ERR_INVALID},
    };
    for (size_t i = 0; i < N_ITEMS(t); i++) {
        int r = km_suffix_check(t[i].s);
        if (r != t[i].want) {
            fail_msg("case %zu \"%s\": got %d want %d", i, t[i].s, r, t[i].want);
        }
    }
    /* Label length 63 is fine, 64 is not; total length KM_SUFFIX_MAX is fine, +1 is not. */
    char s[KM_SUFFIX_MAX + 2];
    memset(s, 'a', 63);
    s[63] = '\0';
    assert_int_equal(km_suffix_check(s), 0);
    memset(s, 'a', 64);
    s[64] = '\0';
    assert_int_equal(km_suffix_check(s), KM_ERR_INVALID);
    for (size_t i = 0; i < sizeof s - 1; i++) {
        s[i] = (i % 40 == 20) ? '.' : 'a';
    }
    s[KM_SUFFIX_MAX] = '\0';
    assert_int_equal(km_suffix_check(s), 0);
    s[KM_SUFFIX_MAX] = 'a';
    s[KM_SUFFIX_MAX + 1] = '\0';
    assert_int_equal(km_suffix_check(s), KM_ERR_INVALID);
}

static void test_prefix_parse(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int want;
        uint16_t prefix;
    } t[] = {
        {"fd6b::/16", 0, 0xfd6b},
        {"FD6B::/16", 0, 0xfd6b},
        {"fd6b:0::/16", 0, 0xfd6b},
        {"fd6b:0:0:0:0:0:0:0/16", 0, 0xfd6b},
        {"fd00::/16", 0, 0xfd00},
        {"::/16", 0, 0x0000},
        {"fd6b::1/16", KM_ERR_INVALID, 0},
        {"fd6b:1::/16", KM_ERR_INVALID, 0},
        {"fd6b::/15", KM_ERR_INVALID, 0},
        {"fd6b::/17", KM_ERR_INVALID, 0},
        {"fd6b::/016", KM_ERR_INVALID, 0},
        {"fd6b::/+16", KM_ERR_INVALID, 0},
        {"fd6b::/16 ", KM_ERR_INVALID, 0},
        {" fd6b::/16", KM_ERR_INVALID, 0},
        {"fd6b::/", KM_ERR_INVALID, 0},
        {"fd6b::", KM_ERR_INVALID, 0},
        {"/16", KM_ERR_INVALID, 0},
        {"", KM_ERR_INVALID, 0},
        {"fd6b::/16/16", KM_ERR_INVALID, 0},
        {"10.0.0.0/16", KM_ERR_INVALID, 0},
        {"fd6b/16", KM_ERR_INVALID, 0},
        {"fd6bb::/16", KM_ERR_INVALID, 0},
        {"0000:0000:0000:0000:0000:0000:0000:0000:0000/16", KM_ERR_INVALID, 0},
        {"0000000000000000000000000000000000000000000000000000000000000::/16", KM_ERR_INVALID, 0},
    };
    for (size_t i = 0; i < N_ITEMS(t); i++) {
        uint16_t p = 0x5555;
        int r = km_prefix_parse(t[i].s, &p);
        if (r != t[i].want) {
            fail_msg("case %zu \"%s\": got %d want %d", i, t[i].s, r, t[i].want);
        }
        assert_int_equal(p, t[i].prefix);
    }
}

static void test_prefix_str(void **state)
{
    (void)state;
    char s[16];
    km_prefix_str(0xfd6b, s);
    assert_string_equal(s, "fd6b::/16");
    km_prefix_str(0xffff, s);
    assert_string_equal(s, "ffff::/16");
    km_prefix_str(0x0001, s);
    assert_string_equal(s, "1::/16");
    /* Every prefix survives the round trip through its text. */
    for (uint32_t v = 0; v <= 0xffff; v += 0x0101) {
        uint16_t back = 0;
        km_prefix_str((uint16_t)v, s);
        assert_int_equal(km_prefix_parse(s, &back), 0);
        assert_int_equal(back, v);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),          cmocka_unit_test(test_node_id_bad),
        cmocka_unit_test(test_fqdn_parse_table), cmocka_unit_test(test_fqdn_too_small),
        cmocka_unit_test(test_suffix_check),     cmocka_unit_test(test_prefix_parse),
        cmocka_unit_test(test_prefix_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
