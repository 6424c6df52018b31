/* Unit tests for identity/base32.c: RFC 4648 vectors and hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "identity/base32.h"

/* RFC 4648 section 10, lowercased and without padding. */
static const struct {
    const char *plain;
    const char *enc;
} rfc_vectors[] = {
    {"", ""},
    {"f", "my"},
    {"fo", "mzxq"},
    {"foo", "mzxw6"},
    {"foob", "mzxw6yq"},
    {"fooba", "mzxw6ytb"},
    {"foobar", "mzxw6ytboi"},
};

#define N_ITEMS(a) (sizeof(a) / sizeof((a)[0]))

static void test_rfc4648_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ITEMS(rfc_vectors); i++) {
        const char *plain = rfc_vectors[i].plain;
        const char *enc = rfc_vectors[i].enc;
        size_t n = strlen(plain);
        char out[32];
        assert_int_equal(km_base32_encoded_len(n), strlen(enc));
        assert_int_equal(km_base32_encode((const uint8_t *)plain, n, out, sizeof out), 0);
        assert_string_equal(out, enc);

        uint8_t dec[32];
        size_t dlen = 99;
        assert_int_equal(km_base32_decode(enc, strlen(enc), dec, sizeof dec, &dlen), 0);
        assert_int_equal(dlen, n);
        assert_memory_equal(dec, plain, n);

        /* Upper case decodes to the same bytes. */
        char upper[32];
        for (size_t j = 0; j <= strlen(enc); j++) {
            char c = enc[j];
            upper[j] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
        }
        assert_int_equal(km_base32_decode(upper, strlen(upper), dec, sizeof dec, &dlen), 0);
        assert_int_equal(dlen, n);
        assert_memory_equal(dec, plain, n);
    }
}

static void test_encoded_len(void **state)
{
    (void)state;
    static const size_t want[] = {0, 2, 4, 5, 7, 8, 10, 12, 13, 15, 16};
    for (size_t n = 0; n < N_ITEMS(want); n++) {
        assert_int_equal(km_base32_encoded_len(n), want[n]);
    }
    assert_int_equal(km_base32_encoded_len(32), 52);
}

/* Every byte value at every position of an 8-character group: only a-z, A-Z, 2-7 pass. */
static void test_every_bad_char(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7');
        for (size_t pos = 0; pos < 7; pos++) { /* pos 7 would also hit the canonical check */
            char in[8];
            memset(in, 'a', sizeof in);
            in[pos] = (char)c;
            uint8_t out[5];
            size_t n = 99;
            int r = km_base32_decode(in, sizeof in, out, sizeof out, &n);
            assert_int_equal(r, ok ? 0 : KM_ERR_INVALID);
            assert_int_equal(n, ok ? 5 : 0);
        }
    }
}

static const struct {
    const char *in;
    int want;
} bad_table[] = {
    /* '=' padding is not accepted in any position. */
    {"my======", KM_ERR_INVALID},
    {"my==", KM_ERR_INVALID},
    {"mzxq====", KM_ERR_INVALID},
    {"mzxw6===", KM_ERR_INVALID},
    {"mzxw6yq=", KM_ERR_INVALID},
    {"=", KM_ERR_INVALID},
    /* Lengths that no byte count encodes to: 1, 3, 6 (mod 8). */
    {"m", KM_ERR_INVALID},
    {"mzx", KM_ERR_INVALID},
    {"mzxw6y", KM_ERR_INVALID},
    {"mzxw6ytbm", KM_ERR_INVALID},
    {"mzxw6ytbmzx", KM_ERR_INVALID},
    {"mzxw6ytbmzxw6y", KM_ERR_INVALID},
    /* Whitespace, digits 0, 1, 8, 9, and other punctuation. */
    {"my ", KM_ERR_INVALID},
    {" my", KM_ERR_INVALID},
    {"m0", KM_ERR_INVALID},
    {"m1", KM_ERR_INVALID},
    {"m8", KM_ERR_INVALID},
    {"m9", KM_ERR_INVALID},
    {"m-", KM_ERR_INVALID},
    /* Non-zero unused trailing bits: "my" is "f", "mz" has a stray 1 bit. */
    {"mz", KM_ERR_INVALID},
    {"mzxr", KM_ERR_INVALID},
    {"mzxw7", KM_ERR_INVALID},
    {"mzxw6yr", KM_ERR_INVALID},
    {"MZ", KM_ERR_INVALID},
    /* Still fine. */
    {"my", 0},
    {"MY", 0},
    {"mZxW6", 0},
};

static void test_bad_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ITEMS(bad_table); i++) {
        uint8_t out[16];
        size_t n = 99;
        int r = km_base32_decode(bad_table[i].in, strlen(bad_table[i].in), out, sizeof out, &n);
        if (r != bad_table[i].want) {
            fail_msg("case %zu \"%s\": got %d want %d", i, bad_table[i].in, r, bad_table[i].want);
        }
        if (r != 0) {
            assert_int_equal(n, 0);
        }
    }
}

/* For every final-group length, every value of the last character is accepted exactly when
 * the bits beyond the data are zero. */
static void test_non_canonical_bits(void **state)
{
    (void)state;
    static const struct {
        size_t chars;
        unsigned unused_bits;
    } tails[] = {{2, 2}, {4, 4}, {5, 1}, {7, 3}};
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyz234567";
    for (size_t t = 0; t < N_ITEMS(tails); t++) {
        for (unsigned v = 0; v < 32; v++) {
            char in[8];
            memset(in, 'a', sizeof in);
            in[tails[t].chars - 1] = alpha[v];
            uint8_t out[8];
            size_t n;
            int ok = (v & ((1u << tails[t].unused_bits) - 1u)) == 0;
            assert_int_equal(km_base32_decode(in, tails[t].chars, out, sizeof out, &n),
                             ok ? 0 : KM_ERR_INVALID);
        }
    }
}

static void test_output_too_small(void **state)
{
    (void)state;
    const uint8_t in[] = "foobar";
    char enc[32];
    /* Encoding 6 bytes needs 10 characters and the NUL. */
    for (size_t sz = 0; sz < 11; sz++) {
        assert_int_equal(km_base32_encode(in, 6, enc, sz), KM_ERR_TOO_LARGE);
    }
    assert_int_equal(km_base32_encode(in, 6, enc, 11), 0);
    assert_string_equal(enc, "mzxw6ytboi");

    uint8_t out[6];
    size_t n = 99;
    for (size_t sz = 0; sz < 6; sz++) {
        assert_int_equal(km_base32_decode("mzxw6ytboi", 10, out, sz, &n), KM_ERR_TOO_LARGE);
        assert_int_equal(n, 0);
    }
    assert_int_equal(km_base32_decode("mzxw6ytboi", 10, out, 6, &n), 0);
    assert_int_equal(n, 6);
    /* An empty input needs no output space at all. */
    assert_int_equal(km_base32_decode("", 0, NULL, 0, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(km_base32_encode(NULL, 0, enc, 1), 0);
    assert_string_equal(enc, "");
}

/* An embedded NUL inside the counted length is a bad character, not an end. */
static void test_embedded_nul(void **state)
{
    (void)state;
    uint8_t out[8];
    size_t n;
    assert_int_equal(km_base32_decode("my\0\0", 4, out, sizeof out, &n), KM_ERR_INVALID);
    assert_int_equal(km_base32_decode("mzxq", 4, out, sizeof out, &n), 0);
}

/* Every length 0..80 with pseudo-random bytes survives a round trip, in both cases. */
static void test_round_trip(void **state)
{
    (void)state;
    uint32_t x = 0x12345678u;
    for (size_t len = 0; len <= 80; len++) {
        uint8_t in[80];
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            in[i] = (uint8_t)(x >> 16);
        }
        char enc[160];
        assert_int_equal(km_base32_encode(in, len, enc, sizeof enc), 0);
        assert_int_equal(strlen(enc), km_base32_encoded_len(len));
        for (size_t i = 0; enc[i] != '\0'; i++) {
            assert_true((enc[i] >= 'a' && enc[i] <= 'z') || (enc[i] >= '2' && enc[i] <= '7'));
        }
        uint8_t dec[80];
        size_t n;
        assert_int_equal(km_base32_decode(enc, strlen(enc), dec, sizeof dec, &n), 0);
        assert_int_equal(n, len);
        assert_memory_equal(dec, in, len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),    cmocka_unit_test(test_encoded_len),
        cmocka_unit_test(test_every_bad_char),     cmocka_unit_test(test_bad_table),
        cmocka_unit_test(test_non_canonical_bits), cmocka_unit_test(test_output_too_small),
        cmocka_unit_test(test_embedded_nul),       cmocka_unit_test(test_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
