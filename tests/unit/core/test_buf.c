/* km_buf: bounds, big-endian accessors, length-prefixed strings with hostile lengths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/buf.h"

static void test_view_reads(void **state)
{
    (void)state;
    static const uint8_t in[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
                                 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f};
    struct km_buf b;
    km_buf_init_view(&b, in, sizeof in);
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    assert_int_equal(km_buf_get_u8(&b, &u8), 0);
    assert_int_equal(u8, 0x01);
    assert_int_equal(km_buf_get_u16(&b, &u16), 0);
    assert_int_equal(u16, 0x0203);
    assert_int_equal(km_buf_get_u32(&b, &u32), 0);
    assert_int_equal(u32, 0x04050607);
    assert_int_equal(km_buf_get_u64(&b, &u64), 0);
    assert_true(u64 == 0x08090a0b0c0d0e0fULL);
    assert_int_equal(km_buf_len(&b), 0);
    assert_int_equal(km_buf_get_end(&b), 0);
    /* Every read past the end fails and clears the out-parameter. */
    u8 = 7;
    assert_int_equal(km_buf_get_u8(&b, &u8), KM_ERR_INCOMPLETE);
    assert_int_equal(u8, 0);
    assert_int_equal(km_buf_put_u8(&b, 1), KM_ERR_READONLY);
}

static void test_short_reads_do_not_consume(void **state)
{
    (void)state;
    static const uint8_t in[] = {0xaa, 0xbb, 0xcc};
    struct km_buf b;
    km_buf_init_view(&b, in, sizeof in);
    uint32_t v = 99;
    assert_int_equal(km_buf_get_u32(&b, &v), KM_ERR_INCOMPLETE);
    assert_int_equal(v, 0);
    assert_int_equal(km_buf_len(&b), 3);
    assert_int_equal(km_buf_get_u64(&b, NULL), KM_ERR_INCOMPLETE);
    assert_int_equal(km_buf_skip(&b, 4), KM_ERR_INCOMPLETE);
    assert_int_equal(km_buf_skip(&b, 3), 0);
    assert_int_equal(km_buf_get_end(&b), 0);
    /* Peeks at an offset beyond the data, including offsets that would overflow. */
    km_buf_init_view(&b, in, sizeof in);
    assert_int_equal(km_buf_peek_u16(&b, 2, NULL), KM_ERR_INCOMPLETE);
    assert_int_equal(km_buf_peek_u16(&b, SIZE_MAX, NULL), KM_ERR_INCOMPLETE);
    assert_int_equal(km_buf_peek_u32(&b, SIZE_MAX - 1, NULL), KM_ERR_INCOMPLETE);
    assert_int_equal(km_buf_peek_u8(&b, 3, NULL), KM_ERR_INCOMPLETE);
    uint8_t u8;
    assert_int_equal(km_buf_peek_u8(&b, 2, &u8), 0);
    assert_int_equal(u8, 0xcc);
    assert_int_equal(km_buf_get_end(&b), KM_ERR_TRAILING);
}

/* Hostile length prefixes: declared length 0, exact, one more than present, maximum. */
struct prefixed_case {
    const char *name;
    uint8_t in[12];
    size_t in_len;
    int width; /* 1, 2 or 4 */
    int expect;
    size_t expect_len;
};

static const struct prefixed_case prefixed_cases[] = {
    {"u8 empty string", {0x00}, 1, 1, 0, 0},
    {"u8 exact", {0x02, 'h', 'i'}, 3, 1, 0, 2},
    {"u8 one short", {0x03, 'h', 'i'}, 3, 1, KM_ERR_INCOMPLETE, 0},
    {"u8 max", {0xff, 'x'}, 2, 1, KM_ERR_INCOMPLETE, 0},
    {"u8 no prefix", {0}, 0, 1, KM_ERR_INCOMPLETE, 0},
    {"u16 exact", {0x00, 0x01, 'z'}, 3, 2, 0, 1},
    {"u16 half prefix", {0x00}, 1, 2, KM_ERR_INCOMPLETE, 0},
    {"u16 max", {0xff, 0xff, 'a', 'b'}, 4, 2, KM_ERR_INCOMPLETE, 0},
    {"u32 zero", {0, 0, 0, 0}, 4, 4, 0, 0},
    {"u32 exact", {0, 0, 0, 3, 'a', 'b', 'c'}, 7, 4, 0, 3},
    {"u32 one short", {0, 0, 0, 4, 'a', 'b', 'c'}, 7, 4, KM_ERR_INCOMPLETE, 0},
    {"u32 max", {0xff, 0xff, 0xff, 0xff, 'a'}, 5, 4, KM_ERR_INCOMPLETE, 0},
    {"u32 2^31", {0x80, 0, 0, 0, 'a'}, 5, 4, KM_ERR_INCOMPLETE, 0},
    {"u32 three-byte prefix", {0, 0, 0}, 3, 4, KM_ERR_INCOMPLETE, 0},
};

static void test_prefixed_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof prefixed_cases / sizeof prefixed_cases[0]; i++) {
        const struct prefixed_case *c = &prefixed_cases[i];
        struct km_buf b;
        km_buf_init_view(&b, c->in, c->in_len);
        const uint8_t *p = (const uint8_t *)"x";
        size_t len = 42;
        int r;
        if (c->width == 1) {
            r = km_buf_get_string8_view(&b, &p, &len);
        } else if (c->width == 2) {
            r = km_buf_get_string16_view(&b, &p, &len);
        } else {
            r = km_buf_get_string_view(&b, &p, &len);
        }
        if (r != c->expect) {
            fail_msg("case '%s': got %d, want %d", c->name, r, c->expect);
        }
        if (r == 0) {
            assert_int_equal(len, c->expect_len);
            assert_ptr_equal(p, c->in + c->width);
            assert_int_equal(km_buf_get_end(&b), 0);
        } else {
            assert_null(p);
            assert_int_equal(len, 0);
            assert_int_equal(km_buf_len(&b), c->in_len); /* nothing consumed */
        }
    }
}

static void test_cstring(void **state)
{
    (void)state;
    static const uint8_t ok[] = {0, 0, 0, 3, 'a', 'b', 'c'};
    static const uint8_t nul[] = {0, 0, 0, 3, 'a', 0, 'c'};
    struct km_buf b;
    char *s;
    size_t len;
    km_buf_init_view(&b, ok, sizeof ok);
    assert_int_equal(km_buf_get_cstring(&b, &s, &len), 0);
    assert_string_equal(s, "abc");
    assert_int_equal(len, 3);
    free(s);
    km_buf_init_view(&b, nul, sizeof nul);
    assert_int_equal(km_buf_get_cstring(&b, &s, &len), KM_ERR_INVALID);
    assert_null(s);
    assert_int_equal(km_buf_len(&b), sizeof nul);
}

static void test_stringb_nested(void **state)
{
    (void)state;
    /* string { string "ab", u32 7 } */
    static const uint8_t in[] = {0, 0, 0, 10, 0, 0, 0, 2, 'a', 'b', 0, 0, 0, 7};
    struct km_buf b;
    struct km_buf sub;
    km_buf_init_view(&b, in, sizeof in);
    assert_int_equal(km_buf_get_stringb(&b, &sub), 0);
    assert_int_equal(km_buf_get_end(&b), 0);
    size_t len;
    assert_int_equal(km_buf_get_string_view(&sub, NULL, &len), 0);
    assert_int_equal(len, 2);
    uint32_t v;
    assert_int_equal(km_buf_get_u32(&sub, &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(km_buf_get_end(&sub), 0);
    /* The nested view is read-only. */
    assert_int_equal(km_buf_put_u8(&sub, 1), KM_ERR_READONLY);
}

static void test_owned_growth_and_max(void **state)
{
    (void)state;
    struct km_buf b;
    km_buf_init(&b, 10);
    assert_int_equal(km_buf_put_u32(&b, 0x01020304), 0);
    assert_int_equal(km_buf_put_u32(&b, 0x05060708), 0);
    assert_int_equal(km_buf_avail(&b), 2);
    /* A write that does not fit fails whole and changes nothing. */
    assert_int_equal(km_buf_put_u32(&b, 0x090a0b0c), KM_ERR_TOO_LARGE);
    assert_int_equal(km_buf_len(&b), 8);
    assert_int_equal(km_buf_put_string8(&b, "x", 1), 0);
    assert_int_equal(km_buf_len(&b), 10);
    assert_int_equal(km_buf_put_u8(&b, 0), KM_ERR_TOO_LARGE);
    /* Reading frees room that a later write reuses. */
    assert_int_equal(km_buf_skip(&b, 4), 0);
    assert_int_equal(km_buf_put_u32(&b, 0xdeadbeef), 0);
    uint32_t v;
    assert_int_equal(km_buf_get_u32(&b, &v), 0);
    assert_int_equal(v, 0x05060708);
    assert_int_equal(km_buf_skip(&b, 2), 0);
    assert_int_equal(km_buf_get_u32(&b, &v), 0);
    assert_int_equal(v, 0xdeadbeef);
    km_buf_reset(&b);
    assert_int_equal(km_buf_len(&b), 0);
    /* A large buffer grows in steps. */
    km_buf_init(&b, 1 << 20);
    for (uint32_t i = 0; i < 100000; i++) {
        assert_int_equal(km_buf_put_u32(&b, i), 0);
    }
    for (uint32_t i = 0; i < 100000; i++) {
        assert_int_equal(km_buf_get_u32(&b, &v), 0);
        assert_int_equal(v, i);
    }
    km_buf_reset(&b);
}

static void test_fixed(void **state)
{
    (void)state;
    uint8_t mem[6];
    struct km_buf b;
    km_buf_init_fixed(&b, mem, sizeof mem);
    assert_int_equal(km_buf_put_string(&b, "ab", 2), 0);
    assert_int_equal(km_buf_put_string(&b, "", 0), KM_ERR_TOO_LARGE);
    assert_int_equal(mem[3], 2);
    assert_int_equal(mem[4], 'a');
    uint8_t *p;
    km_buf_clear(&b);
    assert_int_equal(km_buf_reserve(&b, 6, &p), 0);
    assert_ptr_equal(p, mem);
    assert_int_equal(km_buf_reserve(&b, 1, &p), KM_ERR_TOO_LARGE);
    assert_null(p);
}

static void test_prefix_overflow_on_write(void **state)
{
    (void)state;
    struct km_buf b;
    km_buf_init(&b, 1 << 20);
    static uint8_t big[70000];
    assert_int_equal(km_buf_put_string8(&b, big, 256), KM_ERR_TOO_LARGE);
    assert_int_equal(km_buf_put_string16(&b, big, 65536), KM_ERR_TOO_LARGE);
    assert_int_equal(km_buf_put_string16(&b, big, 65535), 0);
    assert_int_equal(km_buf_len(&b), 65537);
    km_buf_reset(&b);
}

static void test_round_trip_and_stringb(void **state)
{
    (void)state;
    struct km_buf a;
    struct km_buf b;
    km_buf_init(&a, 256);
    km_buf_init(&b, 256);
    assert_int_equal(km_buf_put_cstring(&a, "ssh-ed25519"), 0);
    assert_int_equal(km_buf_put_u64(&a, UINT64_MAX), 0);
    assert_int_equal(km_buf_put_u16(&a, 0xbeef), 0);
    assert_int_equal(km_buf_put_stringb(&b, &a), 0);
    assert_int_equal(km_buf_put_stringb(&b, &b), KM_ERR_INVALID);
    struct km_buf sub;
    assert_int_equal(km_buf_get_stringb(&b, &sub), 0);
    char *s;
    assert_int_equal(km_buf_get_cstring(&sub, &s, NULL), 0);
    assert_string_equal(s, "ssh-ed25519");
    free(s);
    uint64_t v64;
    uint16_t v16;
    assert_int_equal(km_buf_get_u64(&sub, &v64), 0);
    assert_true(v64 == UINT64_MAX);
    assert_int_equal(km_buf_get_u16(&sub, &v16), 0);
    assert_int_equal(v16, 0xbeef);
    assert_int_equal(km_buf_get_end(&sub), 0);
    km_buf_reset(&a);
    km_buf_reset(&b);
}

static void test_new_free(void **state)
{
    (void)state;
    struct km_buf *b = km_buf_new(16);
    assert_non_null(b);
    assert_int_equal(km_buf_put_bytes(b, "0123456789abcdef", 16), 0);
    assert_int_equal(km_buf_put_u8(b, 0), KM_ERR_TOO_LARGE);
    km_buf_free(b);
    km_buf_free(NULL);
    /* max_size is clamped. */
    struct km_buf c;
    km_buf_init(&c, SIZE_MAX);
    assert_int_equal(km_buf_avail(&c), KM_BUF_MAX_SIZE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_reads),
        cmocka_unit_test(test_short_reads_do_not_consume),
        cmocka_unit_test(test_prefixed_table),
        cmocka_unit_test(test_cstring),
        cmocka_unit_test(test_stringb_nested),
        cmocka_unit_test(test_owned_growth_and_max),
        cmocka_unit_test(test_fixed),
        cmocka_unit_test(test_prefix_overflow_on_write),
        cmocka_unit_test(test_round_trip_and_stringb),
        cmocka_unit_test(test_new_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
