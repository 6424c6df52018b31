/* Unit tests for identity/key.c: RFC 8032 vectors, the openssh-key-v1 file (round trip,
 * hostile files, permissions, save semantics), interop with the real ssh-keygen, and the
 * public key text forms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "identity/key.h"

#define N_ITEMS(a) (sizeof(a) / sizeof((a)[0]))
#define SSH_KEYGEN "/usr/bin/ssh-keygen"

/* ---- fixtures ---- */

/* A key made by `ssh-keygen -t ed25519 -N '' -C golden@keymesh` for these tests only. */
static const char golden_key[] =
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACA3SAiBx/2uoyNRFbz+80PRhBQ0GsQHe79LwMp5JzFDqgAAAJhWozDdVqMw\n"
    "3QAAAAtzc2gtZWQyNTUxOQAAACA3SAiBx/2uoyNRFbz+80PRhBQ0GsQHe79LwMp5JzFDqg\n"
    "AAAEBVl62sIFUVX+mherNKzSou4QdL3IJ1G56Viii0dVdlDzdICIHH/a6jI1EVvP7zQ9GE\n"
    "FDQaxAd7v0vAynknMUOqAAAADmdvbGRlbkBrZXltZXNoAQIDBAUGBw==\n"
    "-----END OPENSSH PRIVATE KEY-----\n";
static const char golden_pub[] =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDdICIHH/a6jI1EVvP7zQ9GEFDQaxAd7v0vAynknMUOq";

/* The same tool with -N pass (aes256-ctr, bcrypt). */
static const char encrypted_key[] =
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABCKj5PEzY\n"
    "pKZZTA0IL2Ly64AAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIDCiMTyWtl/7VWee\n"
    "ZiZux4uca0l87c/j+qiq7GNTvpz9AAAAkEOAuThLXCTya0z9sFu7OtYi5V6O4eZQRjwCPH\n"
    "+vLTTeh8beMxIVGxT3sJ2t7eUPcReRUUxVZJ8MOjdzkzqtdGr5NSu3a7uVbaWE/dVm03Gv\n"
    "9VbhlUdACDBUUqZSq0/o2aSpESCyornqINPM9HY6Q19wvDu6fF4HF02tq5pnUFbDCdkfFP\n"
    "/5IhIyMvoWIG0lXg==\n"
    "-----END OPENSSH PRIVATE KEY-----\n";

/* `ssh-keygen -t ecdsa -N '' -C ec`. */
static const char ecdsa_key[] =
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAaAAAABNlY2RzYS\n"
    "1zaGEyLW5pc3RwMjU2AAAACG5pc3RwMjU2AAAAQQSVZnMlWUNNfxvhID1GOgzSWAbcv65p\n"
    "AV6gNX7kuPlYXIjcxPsJUNGvZ7GvSm7xHvaSaRc/UXDizA+iBUkNd/HeAAAAoGdFh+ZnRY\n"
    "fmAAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJVmcyVZQ01/G+Eg\n"
    "PUY6DNJYBty/rmkBXqA1fuS4+VhciNzE+wlQ0a9nsa9KbvEe9pJpFz9RcOLMD6IFSQ138d\n"
    "4AAAAhAImlR4QmdolgbN+KKiDSloySjXvp1m1lJVLCmVDoyBKuAAAAAmVjAQIDBAU=\n"
    "-----END OPENSSH PRIVATE KEY-----\n";

static const char rsa_pub[] =
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC+Uj9X26TGH/y0LX1iJ6a6ASfRIyfVYZ2DSg1BeGLhtN467oe+s23"
    "V/ZH1ej56tk5x+LN+ElsZjGvgAh6nGgRbGqbP/xwhcnRzu3+xGkTpiRm2vUVso0sY43DePnaAnhY7H7TLqvEULmKQDI"
    "xR8kIE+NU4zQbipn7mgrLQMup5mw== r";
static const char ecdsa_pub[] =
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJVmcyVZQ01/G+EgPU"
    "Y6DNJYBty/rmkBXqA1fuS4+VhciNzE+wlQ0a9nsa9KbvEe9pJpFz9RcOLMD6IFSQ138d4= ec";

/* RFC 8032 section 7.1, tests 1 and 2. */
static const struct {
    const char *seed;
    const char *pk;
    const char *msg;
    const char *sig;
} rfc8032[] = {
    {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
     "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
    {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
};

static size_t hex(const char *h, uint8_t *out, size_t outsz)
{
    size_t n = 0;
    assert_int_equal(sodium_hex2bin(out, outsz, h, strlen(h), NULL, &n, NULL), 0);
    return n;
}

/* Per-test temporary directory. */
struct tmp {
    char dir[64];
};

static int tmp_setup(void **state)
{
    struct tmp *t = calloc(1, sizeof *t);
    if (t == NULL) {
        return -1;
    }
    snprintf(t->dir, sizeof t->dir, "/tmp/km-test-key-XXXXXX");
    if (mkdtemp(t->dir) == NULL) {
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static int tmp_teardown(void **state)
{
    struct tmp *t = *state;
    char cmd[128];
    /* The name came from mkdtemp: no quoting surprises. */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    int r = system(cmd);
    free(t);
    return r == 0 ? 0 : -1;
}

static void path_in(const struct tmp *t, const char *name, char *out, size_t outsz)
{
    int n = snprintf(out, outsz, "%s/%s", t->dir, name);
    assert_true(n > 0 && (size_t)n < outsz);
}

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

/* Read a whole small file into a NUL-terminated static buffer. */
static const char *slurp(const char *path)
{
    static char buf[8192];
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* First line of a command's output, without the newline. */
static void run_line(const char *cmd, char *out, size_t outsz)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    out[0] = '\0';
    if (fgets(out, (int)outsz, p) == NULL) {
        out[0] = '\0';
    }
    assert_int_equal(pclose(p), 0);
    out[strcspn(out, "\r\n")] = '\0';
}

/* The first two space-separated fields of an OpenSSH public key line. */
static void key_fields(const char *line, char *out, size_t outsz)
{
    const char *sp = strchr(line, ' ');
    assert_non_null(sp);
    const char *sp2 = strchr(sp + 1, ' ');
    size_t n = sp2 != NULL ? (size_t)(sp2 - line) : strlen(line);
    assert_true(n < outsz);
    memcpy(out, line, n);
    out[n] = '\0';
}

static int parse_text(const char *text, size_t len, struct km_pubkey *pk_out, char **comment)
{
    struct km_key *k = (struct km_key *)(uintptr_t)1; /* must be cleared by the call */
    int r = km_key_parse_openssh(text, len, &k, comment);
    if (r == 0) {
        assert_non_null(k);
        if (pk_out != NULL) {
            *pk_out = *km_key_pub(k);
        }
    } else {
        assert_null(k);
        if (comment != NULL) {
            assert_null(*comment);
        }
    }
    km_key_free(k);
    return r;
}

/* Wrap a binary blob in the armour (70-column lines) and parse it. */
static int parse_bin(const uint8_t *bin, size_t len, struct km_pubkey *pk_out, char **comment)
{
    size_t b64_size = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = malloc(b64_size);
    char *text = malloc(2 * b64_size + 128);
    assert_non_null(b64);
    assert_non_null(text);
    sodium_bin2base64(b64, b64_size, bin, len, sodium_base64_VARIANT_ORIGINAL);
    static const char begin[] = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
    static const char end[] = "-----END OPENSSH PRIVATE KEY-----\n";
    memcpy(text, begin, sizeof begin - 1);
    size_t o = sizeof begin - 1;
    size_t b64_len = strlen(b64);
    for (size_t i = 0; i < b64_len; i += 70) {
        size_t n = b64_len - i < 70 ? b64_len - i : 70;
        memcpy(text + o, b64 + i, n);
        o += n;
        text[o++] = '\n';
    }
    memcpy(text + o, end, sizeof end - 1);
    o += sizeof end - 1;
    int r = parse_text(text, o, pk_out, comment);
    free(b64);
    free(text);
    return r;
}

/* Decode the golden file's body. */
static size_t golden_bin(uint8_t *out, size_t outsz)
{
    const char *body = golden_key + strlen("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    const char *end = strstr(body, "-----END");
    size_t bin_len = 0;
    assert_int_equal(sodium_base642bin(out, outsz, body, (size_t)(end - body), "\n", &bin_len, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    return bin_len;
}

static struct km_pubkey golden_pk(void)
{
    struct km_pubkey pk;
    assert_int_equal(km_pubkey_parse(golden_pub, strlen(golden_pub), &pk), 0);
    return pk;
}

/* ---- RFC 8032, sign and verify ---- */

static void test_rfc8032(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ITEMS(rfc8032); i++) {
        uint8_t seed[32];
        uint8_t pk[32];
        uint8_t msg[8];
        uint8_t want_sig[64];
        assert_int_equal(hex(rfc8032[i].seed, seed, sizeof seed), 32);
        assert_int_equal(hex(rfc8032[i].pk, pk, sizeof pk), 32);
        size_t msg_len = hex(rfc8032[i].msg, msg, sizeof msg);
        assert_int_equal(hex(rfc8032[i].sig, want_sig, sizeof want_sig), 64);

        struct km_key *k = NULL;
        assert_int_equal(km_key_from_seed(seed, &k), 0);
        assert_memory_equal(km_key_pub(k)->b, pk, 32);
        uint8_t sig[KM_SIG_LEN];
        assert_int_equal(km_key_sign(k, msg, msg_len, sig), 0);
        assert_memory_equal(sig, want_sig, 64);
        assert_int_equal(km_pubkey_verify(km_key_pub(k), msg, msg_len, sig), 0);
        km_key_free(k);
    }
}

static void test_sign_verify(void **state)
{
    (void)state;
    struct km_key *a = NULL;
    struct km_key *b = NULL;
    assert_int_equal(km_key_generate(&a), 0);
    assert_int_equal(km_key_generate(&b), 0);
    assert_false(km_pubkey_equal(km_key_pub(a), km_key_pub(b)));
    assert_true(km_pubkey_equal(km_key_pub(a), km_key_pub(a)));

    static const char msg[] = "keymesh announcement";
    uint8_t sig[KM_SIG_LEN];
    assert_int_equal(km_key_sign(a, msg, sizeof msg, sig), 0);
    assert_int_equal(km_pubkey_verify(km_key_pub(a), msg, sizeof msg, sig), 0);
    /* Wrong key, wrong message, any flipped bit of the signature. */
    assert_int_equal(km_pubkey_verify(km_key_pub(b), msg, sizeof msg, sig), KM_ERR_CRYPTO);
    assert_int_equal(km_pubkey_verify(km_key_pub(a), msg, sizeof msg - 1, sig), KM_ERR_CRYPTO);
    for (size_t i = 0; i < KM_SIG_LEN * 8; i++) {
        sig[i / 8] ^= (uint8_t)(1u << (i % 8));
        assert_int_equal(km_pubkey_verify(km_key_pub(a), msg, sizeof msg, sig), KM_ERR_CRYPTO);
        sig[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    km_key_free(a);
    km_key_free(b);
    km_key_free(NULL);
}

/* ---- openssh-key-v1: round trip ---- */

static void test_golden_parse(void **state)
{
    (void)state;
    struct km_pubkey pk;
    char *comment = NULL;
    assert_int_equal(parse_text(golden_key, strlen(golden_key), &pk, &comment), 0);
    struct km_pubkey want = golden_pk();
    assert_true(km_pubkey_equal(&pk, &want));
    assert_string_equal(comment, "golden@keymesh");
    free(comment);
    /* comment may be NULL when the caller does not want it. */
    assert_int_equal(parse_text(golden_key, strlen(golden_key), &pk, NULL), 0);
}

static void test_round_trip(void **state)
{
    (void)state;
    static const char *const comments[] = {"", "a", "node@host", "with spaces and\ttab",
                                           "0123456789abcdef"};
    for (size_t i = 0; i < N_ITEMS(comments); i++) {
        struct km_key *k = NULL;
        assert_int_equal(km_key_generate(&k), 0);
        struct km_buf text;
        km_buf_init(&text, KM_KEY_FILE_MAX);
        assert_int_equal(km_key_format_openssh(k, comments[i], &text), 0);

        /* 70-column lines between the markers, like ssh-keygen. */
        const char *s = (const char *)km_buf_peek_ptr(&text);
        size_t len = km_buf_len(&text);
        assert_true(len > 100);
        assert_memory_equal(s, "-----BEGIN OPENSSH PRIVATE KEY-----\n", 36);
        assert_memory_equal(s + len - 34, "-----END OPENSSH PRIVATE KEY-----\n", 34);
        size_t line = 0;
        for (size_t j = 36; j < len - 34; j++) {
            if (s[j] == '\n') {
                assert_true(line > 0 && line <= 70);
                line = 0;
            } else {
                line++;
            }
        }

        struct km_pubkey pk;
        char *comment = NULL;
        assert_int_equal(parse_text(s, len, &pk, &comment), 0);
        assert_true(km_pubkey_equal(&pk, km_key_pub(k)));
        assert_string_equal(comment, comments[i]);
        free(comment);
        km_buf_reset(&text);
        km_key_free(k);
    }
}

static void test_format_comment_limits(void **state)
{
    (void)state;
    struct km_key *k = NULL;
    assert_int_equal(km_key_generate(&k), 0);
    char long_comment[KM_KEY_COMMENT_MAX + 2];
    memset(long_comment, 'c', sizeof long_comment);
    long_comment[KM_KEY_COMMENT_MAX] = '\0';
    struct km_buf text;
    km_buf_init(&text, KM_KEY_FILE_MAX);
    assert_int_equal(km_key_format_openssh(k, long_comment, &text), 0);
    char *comment = NULL;
    assert_int_equal(
        parse_text((const char *)km_buf_peek_ptr(&text), km_buf_len(&text), NULL, &comment), 0);
    assert_int_equal(strlen(comment), KM_KEY_COMMENT_MAX);
    free(comment);
    km_buf_reset(&text);
    long_comment[KM_KEY_COMMENT_MAX] = 'c';
    long_comment[KM_KEY_COMMENT_MAX + 1] = '\0';
    assert_int_equal(km_key_format_openssh(k, long_comment, &text), KM_ERR_TOO_LARGE);
    assert_int_equal(km_buf_len(&text), 0);
    /* A NULL comment is "". */
    assert_int_equal(km_key_format_openssh(k, NULL, &text), 0);
    assert_int_equal(
        parse_text((const char *)km_buf_peek_ptr(&text), km_buf_len(&text), NULL, &comment), 0);
    assert_string_equal(comment, "");
    free(comment);
    km_buf_reset(&text);
    /* An output too small for the file gets nothing at all. */
    struct km_buf small;
    km_buf_init(&small, 100);
    assert_int_equal(km_key_format_openssh(k, "x", &small), KM_ERR_TOO_LARGE);
    assert_int_equal(km_buf_len(&small), 0);
    km_buf_reset(&small);
    km_key_free(k);
}

/* ---- openssh-key-v1: hostile text ---- */

static void test_text_truncated(void **state)
{
    (void)state;
    size_t len = strlen(golden_key);
    for (size_t n = 0; n <= len; n++) {
        /* A fresh heap copy of exactly n bytes so ASan sees any over-read. */
        char *exact = malloc(n > 0 ? n : 1);
        assert_non_null(exact);
        memcpy(exact, golden_key, n);
        int r = parse_text(exact, n, NULL, NULL);
        free(exact);
        /* Only the last newline is optional. */
        if (n >= len - 1) {
            assert_int_equal(r, 0);
        } else if (r != KM_ERR_KEY_CORRUPT) {
            fail_msg("prefix of %zu bytes: got %d", n, r);
        }
    }
}

static void test_text_byte_replaced(void **state)
{
    (void)state;
    size_t len = strlen(golden_key);
    char *copy = malloc(len);
    assert_non_null(copy);
    static const char repl[] = {'!', ' ', '\0', '-', '\r'};
    for (size_t i = 0; i < len; i++) {
        for (size_t j = 0; j < sizeof repl; j++) {
            memcpy(copy, golden_key, len);
            if (copy[i] == repl[j]) {
                continue;
            }
            /* A '\r' just before a '\n' makes a valid CRLF ending; a space replacing the
             * final newline is trailing whitespace. Both are allowed. */
            if ((repl[j] == '\r' && golden_key[i] == '\n' && i + 1 == len) ||
                (repl[j] == ' ' && i + 1 == len)) {
                continue;
            }
            copy[i] = repl[j];
            int r = parse_text(copy, len, NULL, NULL);
            if (r != KM_ERR_KEY_CORRUPT) {
                fail_msg("byte %zu replaced by 0x%02x: got %d", i, (unsigned)repl[j], r);
            }
        }
    }
    free(copy);
}

static void test_text_table(void **state)
{
    (void)state;
    /* The golden key with different surroundings and line layouts. */
    static const char begin[] = "-----BEGIN OPENSSH PRIVATE KEY-----";
    static const char end[] = "-----END OPENSSH PRIVATE KEY-----";
    char body[512]; /* the base64 in one line */
    size_t bo = 0;
    for (const char *p = golden_key + strlen(begin) + 1; strncmp(p, "-----END", 8) != 0; p++) {
        if (*p != '\n') {
            body[bo++] = *p;
        }
    }
    body[bo] = '\0';

    struct {
        char text[2048];
        int want;
        const char *what;
    } t[20];
    size_t n = 0;
#define CASE(want_, what_, ...)                             \
    do {                                                    \
        assert_true(n < N_ITEMS(t));                        \
        snprintf(t[n].text, sizeof t[n].text, __VA_ARGS__); \
        t[n].want = (want_);                                \
        t[n].what = (what_);                                \
        n++;                                                \
    } while (0)
    CASE(0, "one long line", "%s\n%s\n%s\n", begin, body, end);
    CASE(0, "no final newline", "%s\n%s\n%s", begin, body, end);
    CASE(0, "CRLF", "%s\r\n%.70s\r\n%s\r\n%s\r\n", begin, body, body + 70, end);
    CASE(0, "trailing whitespace", "%s\n%s\n%s\n \t\r\n\n\n", begin, body, end);
    CASE(0, "uneven lines", "%s\n%.64s\n%.64s\n%.64s\n%.64s\n%s\n%s\n", begin, body, body + 64,
         body + 128, body + 192, body + 256, end);
    CASE(KM_ERR_KEY_CORRUPT, "trailing junk", "%s\n%s\n%s\nx", begin, body, end);
    CASE(KM_ERR_KEY_CORRUPT, "second key", "%s\n%s\n%s\n%s\n%s\n%s\n", begin, body, end, begin,
         body, end);
    CASE(KM_ERR_KEY_CORRUPT, "leading blank line", "\n%s\n%s\n%s\n", begin, body, end);
    CASE(KM_ERR_KEY_CORRUPT, "leading space", " %s\n%s\n%s\n", begin, body, end);
    CASE(KM_ERR_KEY_CORRUPT, "text before", "key:\n%s\n%s\n%s\n", begin, body, end);
    CASE(KM_ERR_KEY_CORRUPT, "space after BEGIN", "%s \n%s\n%s\n", begin, body, end);
    CASE(KM_ERR_KEY_CORRUPT, "blank line inside", "%s\n%.70s\n\n%s\n%s\n", begin, body, body + 70,
         end);
    CASE(KM_ERR_KEY_CORRUPT, "space in body", "%s\n%.70s %s\n%s\n", begin, body, body + 70, end);
    CASE(KM_ERR_KEY_CORRUPT, "CR alone", "%s\r%s\n%s\n", begin, body, end);
    CASE(KM_ERR_KEY_CORRUPT, "no END", "%s\n%s\n", begin, body);
    CASE(KM_ERR_KEY_CORRUPT, "no body", "%s\n%s\n", begin, end);
    CASE(KM_ERR_KEY_CORRUPT, "RSA armour", "-----BEGIN RSA PRIVATE KEY-----\n%s\n%s\n", body, end);
    CASE(KM_ERR_KEY_CORRUPT, "padding dropped", "%s\n%.*s\n%s\n", begin, (int)(bo - 2), body, end);
    CASE(KM_ERR_KEY_CORRUPT, "extra padding", "%s\n%s==\n%s\n", begin, body, end);
    CASE(KM_ERR_KEY_CORRUPT, "empty", "%s", "");
#undef CASE
    for (size_t i = 0; i < n; i++) {
        int r = parse_text(t[i].text, strlen(t[i].text), NULL, NULL);
        if (r != t[i].want) {
            fail_msg("case %zu (%s): got %d want %d", i, t[i].what, r, t[i].want);
        }
    }
}

static void test_text_too_large(void **state)
{
    (void)state;
    /* A valid key padded with whitespace past the limit. */
    size_t len = KM_KEY_FILE_MAX + 1;
    char *big = malloc(len);
    assert_non_null(big);
    memset(big, '\n', len);
    memcpy(big, golden_key, strlen(golden_key));
    assert_int_equal(parse_text(big, len, NULL, NULL), KM_ERR_TOO_LARGE);
    assert_int_equal(parse_text(big, len - 1, NULL, NULL), 0);
    free(big);
}

static void test_fixed_foreign_keys(void **state)
{
    (void)state;
    assert_int_equal(parse_text(encrypted_key, strlen(encrypted_key), NULL, NULL),
                     KM_ERR_KEY_ENCRYPTED);
    assert_int_equal(parse_text(ecdsa_key, strlen(ecdsa_key), NULL, NULL), KM_ERR_KEY_TYPE);
}

/* ---- openssh-key-v1: hostile binary, built field by field ---- */

/* Every field of the file, defaulting to the golden key; tests change one thing. */
struct spec {
    uint8_t magic[16];
    size_t magic_len;
    const char *cipher;
    const char *kdf;
    size_t kdfopts_len;
    uint32_t nkeys;
    const char *pub_type;
    uint8_t pub_pk[33];
    size_t pub_pk_len;
    size_t pub_trailing;
    uint32_t check1;
    uint32_t check2;
    const char *priv_type;
    uint8_t priv_pk[33];
    size_t priv_pk_len;
    uint8_t sk[65];
    size_t sk_len;
    uint8_t comment[KM_KEY_COMMENT_MAX + 2];
    size_t comment_len;
    int pad; /* 0 right, 1 wrong value, 2 a block too many, 3 one short, 4 zeros */
    size_t outer_trailing;
};

static void spec_default(struct spec *s)
{
    memset(s, 0, sizeof *s);
    memcpy(s->magic, "openssh-key-v1", 15);
    s->magic_len = 15;
    s->cipher = "none";
    s->kdf = "none";
    s->nkeys = 1;
    s->pub_type = "ssh-ed25519";
    s->priv_type = "ssh-ed25519";
    s->check1 = s->check2 = 0x56a330dd; /* the golden file's */
    /* The golden key's seed is known from its file: decode and take it. */
    uint8_t bin[1024];
    size_t len = golden_bin(bin, sizeof bin);
    struct km_buf b;
    km_buf_init_view(&b, bin, len);
    struct km_buf priv;
    /* Skip magic, cipher, kdf, kdfoptions, N, public blob; then checkints, type, pk. */
    assert_int_equal(km_buf_skip(&b, 15), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(km_buf_get_string_view(&b, NULL, NULL), 0);
    }
    assert_int_equal(km_buf_skip(&b, 4), 0);
    assert_int_equal(km_buf_get_string_view(&b, NULL, NULL), 0);
    assert_int_equal(km_buf_get_stringb(&b, &priv), 0);
    assert_int_equal(km_buf_skip(&priv, 8), 0);
    assert_int_equal(km_buf_get_string_view(&priv, NULL, NULL), 0);
    assert_int_equal(km_buf_get_string_view(&priv, NULL, NULL), 0);
    const uint8_t *sk;
    size_t sk_len;
    assert_int_equal(km_buf_get_string_view(&priv, &sk, &sk_len), 0);
    assert_int_equal(sk_len, 64);
    memcpy(s->sk, sk, 64);
    s->sk_len = 64;
    memcpy(s->pub_pk, sk + 32, 32);
    memcpy(s->priv_pk, sk + 32, 32);
    s->pub_pk_len = s->priv_pk_len = 32;
    memcpy(s->comment, "golden@keymesh", 14);
    s->comment_len = 14;
}

static size_t spec_build(const struct spec *s, uint8_t *out, size_t outsz)
{
    struct km_buf priv;
    struct km_buf pub;
    struct km_buf bin;
    km_buf_init(&priv, 4096);
    km_buf_init(&pub, 4096);
    km_buf_init_fixed(&bin, out, outsz);
    assert_int_equal(km_buf_put_u32(&priv, s->check1), 0);
    assert_int_equal(km_buf_put_u32(&priv, s->check2), 0);
    assert_int_equal(km_buf_put_cstring(&priv, s->priv_type), 0);
    assert_int_equal(km_buf_put_string(&priv, s->priv_pk, s->priv_pk_len), 0);
    assert_int_equal(km_buf_put_string(&priv, s->sk, s->sk_len), 0);
    assert_int_equal(km_buf_put_string(&priv, s->comment, s->comment_len), 0);
    size_t pad = (8 - km_buf_len(&priv) % 8) % 8;
    if (s->pad == 2) {
        pad += 8;
    } else if (s->pad == 3) {
        assert_true(pad > 0);
        pad--;
    }
    for (size_t i = 1; i <= pad; i++) {
        uint8_t v = (uint8_t)i;
        if ((s->pad == 1 && i == pad) || s->pad == 4) {
            v = 0;
        }
        assert_int_equal(km_buf_put_u8(&priv, v), 0);
    }
    assert_int_equal(km_buf_put_cstring(&pub, s->pub_type), 0);
    assert_int_equal(km_buf_put_string(&pub, s->pub_pk, s->pub_pk_len), 0);
    for (size_t i = 0; i < s->pub_trailing; i++) {
        assert_int_equal(km_buf_put_u8(&pub, 0), 0);
    }
    static const uint8_t opts[32];
    assert_int_equal(km_buf_put_bytes(&bin, s->magic, s->magic_len), 0);
    assert_int_equal(km_buf_put_cstring(&bin, s->cipher), 0);
    assert_int_equal(km_buf_put_cstring(&bin, s->kdf), 0);
    assert_int_equal(km_buf_put_string(&bin, opts, s->kdfopts_len), 0);
    assert_int_equal(km_buf_put_u32(&bin, s->nkeys), 0);
    assert_int_equal(km_buf_put_stringb(&bin, &pub), 0);
    assert_int_equal(km_buf_put_stringb(&bin, &priv), 0);
    for (size_t i = 0; i < s->outer_trailing; i++) {
        assert_int_equal(km_buf_put_u8(&bin, 0), 0);
    }
    km_buf_reset(&priv);
    km_buf_reset(&pub);
    return km_buf_len(&bin);
}

static void mut_none(struct spec *s)
{
    (void)s;
}
static void mut_magic_v2(struct spec *s)
{
    s->magic[13] = '2';
}
static void mut_magic_no_nul(struct spec *s)
{
    s->magic_len = 14;
}
static void mut_encrypted(struct spec *s)
{
    s->cipher = "aes256-ctr";
    s->kdf = "bcrypt";
    s->kdfopts_len = 24;
}
static void mut_kdf_only(struct spec *s)
{
    s->kdf = "bcrypt";
}
static void mut_cipher_only(struct spec *s)
{
    s->cipher = "aes256-ctr";
}
static void mut_cipher_empty(struct spec *s)
{
    s->cipher = "";
}
static void mut_cipher_none_nul(struct spec *s)
{
    s->cipher = "nonee";
}
static void mut_kdfopts(struct spec *s)
{
    s->kdfopts_len = 1;
}
static void mut_nkeys0(struct spec *s)
{
    s->nkeys = 0;
}
static void mut_nkeys2(struct spec *s)
{
    s->nkeys = 2;
}
static void mut_nkeys_max(struct spec *s)
{
    s->nkeys = UINT32_MAX;
}
static void mut_pub_rsa(struct spec *s)
{
    s->pub_type = "ssh-rsa";
}
static void mut_pub_ecdsa(struct spec *s)
{
    s->pub_type = "ecdsa-sha2-nistp256";
}
static void mut_pub_cert(struct spec *s)
{
    s->pub_type = "ssh-ed25519-cert-v01@openssh.com";
}
static void mut_pub_short(struct spec *s)
{
    s->pub_pk_len = 31;
}
static void mut_pub_long(struct spec *s)
{
    s->pub_pk_len = 33;
}
static void mut_pub_trailing(struct spec *s)
{
    s->pub_trailing = 1;
}
static void mut_check(struct spec *s)
{
    s->check2 ^= 1;
}
static void mut_priv_rsa(struct spec *s)
{
    s->priv_type = "ssh-rsa";
}
static void mut_priv_short(struct spec *s)
{
    s->priv_pk_len = 31;
}
static void mut_priv_pk(struct spec *s)
{
    s->priv_pk[0] ^= 1;
}
static void mut_pub_pk(struct spec *s)
{
    s->pub_pk[31] ^= 0x80;
}
static void mut_sk_short(struct spec *s)
{
    s->sk_len = 32;
}
static void mut_sk_long(struct spec *s)
{
    s->sk_len = 65;
}
static void mut_sk_pk(struct spec *s)
{
    s->sk[40] ^= 4;
}
static void mut_seed(struct spec *s)
{
    s->sk[0] ^= 1;
}
static void mut_comment_nul(struct spec *s)
{
    s->comment[3] = '\0';
}
static void mut_comment_empty(struct spec *s)
{
    s->comment_len = 0;
}
static void mut_comment_max(struct spec *s)
{
    memset(s->comment, 'c', KM_KEY_COMMENT_MAX);
    s->comment_len = KM_KEY_COMMENT_MAX;
}
static void mut_comment_max1(struct spec *s)
{
    memset(s->comment, 'c', KM_KEY_COMMENT_MAX + 1);
    s->comment_len = KM_KEY_COMMENT_MAX + 1;
}
static void mut_pad_value(struct spec *s)
{
    s->pad = 1;
}
static void mut_pad_block(struct spec *s)
{
    s->pad = 2;
}
static void mut_pad_short(struct spec *s)
{
    s->pad = 3;
}
static void mut_pad_zero(struct spec *s)
{
    s->pad = 4;
}
static void mut_outer_trailing(struct spec *s)
{
    s->outer_trailing = 1;
}

/* A different, self-consistent key (RFC 8032 test 1): valid. */
static void mut_other_key(struct spec *s)
{
    uint8_t seed[32];
    uint8_t pk[32];
    hex(rfc8032[0].seed, seed, sizeof seed);
    crypto_sign_seed_keypair(pk, s->sk, seed);
    memcpy(s->pub_pk, pk, 32);
    memcpy(s->priv_pk, pk, 32);
}

/* The secret of another key with this key's public halves everywhere: a spliced file. */
static void mut_spliced(struct spec *s)
{
    uint8_t seed[32];
    uint8_t pk[32];
    uint8_t sk[64];
    hex(rfc8032[0].seed, seed, sizeof seed);
    crypto_sign_seed_keypair(pk, sk, seed);
    memcpy(s->sk, seed, 32); /* sk[32..64] keeps the golden public key */
}

static const struct {
    const char *name;
    void (*mutate)(struct spec *);
    int want;
} spec_table[] = {
    {"golden", mut_none, 0},
    {"magic v2", mut_magic_v2, KM_ERR_KEY_CORRUPT},
    {"magic without NUL", mut_magic_no_nul, KM_ERR_KEY_CORRUPT},
    {"encrypted", mut_encrypted, KM_ERR_KEY_ENCRYPTED},
    {"kdf only", mut_kdf_only, KM_ERR_KEY_ENCRYPTED},
    {"cipher only", mut_cipher_only, KM_ERR_KEY_ENCRYPTED},
    {"cipher empty", mut_cipher_empty, KM_ERR_KEY_ENCRYPTED},
    {"cipher nonee", mut_cipher_none_nul, KM_ERR_KEY_ENCRYPTED},
    {"kdfoptions", mut_kdfopts, KM_ERR_KEY_CORRUPT},
    {"nkeys 0", mut_nkeys0, KM_ERR_KEY_CORRUPT},
    {"nkeys 2", mut_nkeys2, KM_ERR_KEY_CORRUPT},
    {"nkeys max", mut_nkeys_max, KM_ERR_KEY_CORRUPT},
    {"public ssh-rsa", mut_pub_rsa, KM_ERR_KEY_TYPE},
    {"public ecdsa", mut_pub_ecdsa, KM_ERR_KEY_TYPE},
    {"public cert", mut_pub_cert, KM_ERR_KEY_TYPE},
    {"public 31 bytes", mut_pub_short, KM_ERR_KEY_CORRUPT},
    {"public 33 bytes", mut_pub_long, KM_ERR_KEY_CORRUPT},
    {"public blob trailing", mut_pub_trailing, KM_ERR_KEY_CORRUPT},
    {"checkint mismatch", mut_check, KM_ERR_KEY_CORRUPT},
    {"private ssh-rsa", mut_priv_rsa, KM_ERR_KEY_MISMATCH},
    {"private pk 31", mut_priv_short, KM_ERR_KEY_CORRUPT},
    {"private pk differs", mut_priv_pk, KM_ERR_KEY_MISMATCH},
    {"public pk differs", mut_pub_pk, KM_ERR_KEY_MISMATCH},
    {"sk 32 bytes", mut_sk_short, KM_ERR_KEY_CORRUPT},
    {"sk 65 bytes", mut_sk_long, KM_ERR_KEY_CORRUPT},
    {"sk public half differs", mut_sk_pk, KM_ERR_KEY_MISMATCH},
    {"seed differs", mut_seed, KM_ERR_KEY_MISMATCH},
    {"spliced seed", mut_spliced, KM_ERR_KEY_MISMATCH},
    {"other consistent key", mut_other_key, 0},
    {"comment with NUL", mut_comment_nul, KM_ERR_KEY_CORRUPT},
    {"comment empty", mut_comment_empty, 0},
    {"comment max", mut_comment_max, 0},
    {"comment max+1", mut_comment_max1, KM_ERR_KEY_CORRUPT},
    {"padding value", mut_pad_value, KM_ERR_KEY_CORRUPT},
    {"padding extra block", mut_pad_block, KM_ERR_KEY_CORRUPT},
    {"padding short", mut_pad_short, KM_ERR_KEY_CORRUPT},
    {"padding zeros", mut_pad_zero, KM_ERR_KEY_CORRUPT},
    {"trailing byte", mut_outer_trailing, KM_ERR_KEY_CORRUPT},
};

static void test_binary_table(void **state)
{
    (void)state;
    /* The builder with no change reproduces the golden file's binary. */
    struct spec s;
    spec_default(&s);
    uint8_t gold[1024];
    size_t gold_len = golden_bin(gold, sizeof gold);
    uint8_t bin[4096];
    size_t len = spec_build(&s, bin, sizeof bin);
    assert_int_equal(len, gold_len);
    assert_memory_equal(bin, gold, len);

    for (size_t i = 0; i < N_ITEMS(spec_table); i++) {
        spec_default(&s);
        spec_table[i].mutate(&s);
        len = spec_build(&s, bin, sizeof bin);
        char *comment = NULL;
        struct km_pubkey pk;
        int r = parse_bin(bin, len, &pk, &comment);
        if (r != spec_table[i].want) {
            fail_msg("case %zu (%s): got %d want %d", i, spec_table[i].name, r, spec_table[i].want);
        }
        if (r == 0) {
            assert_memory_equal(pk.b, s.pub_pk, 32);
            assert_int_equal(strlen(comment), s.comment_len);
            assert_memory_equal(comment, s.comment, s.comment_len);
        }
        free(comment);
    }
}

static void test_binary_truncated(void **state)
{
    (void)state;
    uint8_t bin[1024];
    size_t len = golden_bin(bin, sizeof bin);
    for (size_t n = 0; n < len; n++) {
        int r = parse_bin(bin, n, NULL, NULL);
        if (r == 0 || r == KM_ERR_KEY_ENCRYPTED) {
            fail_msg("binary prefix of %zu bytes: got %d", n, r);
        }
    }
    assert_int_equal(parse_bin(bin, len, NULL, NULL), 0);
}

/* Each byte of the binary changed two ways: parsing never crashes, and succeeds only when
 * the change fell inside the comment (then the key is unchanged). */
static void test_binary_byte_flipped(void **state)
{
    (void)state;
    uint8_t bin[1024];
    size_t len = golden_bin(bin, sizeof bin);
    struct km_pubkey want = golden_pk();
    size_t accepted = 0;
    static const uint8_t masks[] = {0x01, 0x80};
    for (size_t i = 0; i < len; i++) {
        for (size_t m = 0; m < sizeof masks; m++) {
            bin[i] ^= masks[m];
            char *comment = NULL;
            struct km_pubkey pk;
            int r = parse_bin(bin, len, &pk, &comment);
            bin[i] ^= masks[m];
            if (r == 0) {
                assert_true(km_pubkey_equal(&pk, &want));
                assert_string_not_equal(comment, "golden@keymesh");
                accepted++;
            } else {
                assert_true(r < 0);
            }
            free(comment);
        }
    }
    /* "golden@keymesh": 14 comment bytes, two flips each (0x80 keeps no NUL). */
    assert_int_equal(accepted, 28);
}

/* ---- files ---- */

static void test_load_perms(void **state)
{
    struct tmp *t = *state;
    char path[128];
    path_in(t, "key", path, sizeof path);
    static const struct {
        mode_t mode;
        int want;
    } modes[] = {
        {0600, 0},
        {0400, 0},
        {0700, 0},
        {0640, KM_ERR_KEY_PERMS},
        {0604, KM_ERR_KEY_PERMS},
        {0660, KM_ERR_KEY_PERMS},
        {0644, KM_ERR_KEY_PERMS},
        {0610, KM_ERR_KEY_PERMS},
        {0601, KM_ERR_KEY_PERMS},
        {0602, KM_ERR_KEY_PERMS},
        {0620, KM_ERR_KEY_PERMS},
        {0666, KM_ERR_KEY_PERMS},
    };
    for (size_t i = 0; i < N_ITEMS(modes); i++) {
        write_file(path, golden_key, strlen(golden_key), modes[i].mode);
        struct km_key *k = NULL;
        char *comment = NULL;
        int r = km_key_load(path, &k, &comment);
        if (r != modes[i].want) {
            fail_msg("mode %04o: got %d want %d", (unsigned)modes[i].mode, r, modes[i].want);
        }
        if (r == 0) {
            struct km_pubkey want = golden_pk();
            assert_true(km_pubkey_equal(km_key_pub(k), &want));
            assert_string_equal(comment, "golden@keymesh");
        } else {
            assert_null(k);
            assert_null(comment);
        }
        km_key_free(k);
        free(comment);
        assert_int_equal(unlink(path), 0);
    }
}

static void test_load_errors(void **state)
{
    struct tmp *t = *state;
    char path[128];
    struct km_key *k = NULL;
    path_in(t, "missing", path, sizeof path);
    assert_int_equal(km_key_load(path, &k, NULL), -ENOENT);
    assert_null(k);
    /* A directory is not a key file. */
    assert_int_equal(km_key_load(t->dir, &k, NULL), KM_ERR_INVALID);
    /* Too large, even if it starts with a key. */
    path_in(t, "big", path, sizeof path);
    size_t len = KM_KEY_FILE_MAX + 1;
    char *big = malloc(len);
    assert_non_null(big);
    memset(big, '\n', len);
    memcpy(big, golden_key, strlen(golden_key));
    write_file(path, big, len, 0600);
    free(big);
    assert_int_equal(km_key_load(path, &k, NULL), KM_ERR_TOO_LARGE);
    /* Encrypted and ecdsa files come back with their own codes. */
    path_in(t, "enc", path, sizeof path);
    write_file(path, encrypted_key, strlen(encrypted_key), 0600);
    assert_int_equal(km_key_load(path, &k, NULL), KM_ERR_KEY_ENCRYPTED);
    assert_null(k);
}

static void test_save(void **state)
{
    struct tmp *t = *state;
    char path[128];
    char pub[140];
    path_in(t, "node.key", path, sizeof path);
    snprintf(pub, sizeof pub, "%s.pub", path);

    struct km_key *a = NULL;
    struct km_key *b = NULL;
    struct km_key *k = NULL;
    assert_int_equal(km_key_generate(&a), 0);
    assert_int_equal(km_key_generate(&b), 0);

    assert_int_equal(km_key_save(a, path, "a@test", 0), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(stat(pub, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    char line[KM_PUBKEY_LINE_MAX];
    assert_int_equal(km_pubkey_format_openssh(km_key_pub(a), "a@test", line, sizeof line), 0);
    line[strlen(line) + 1] = '\0';
    line[strlen(line)] = '\n';
    assert_string_equal(slurp(pub), line);

    /* Without force, an existing key is never replaced. */
    assert_int_equal(km_key_save(b, path, "b@test", 0), -EEXIST);
    assert_int_equal(km_key_load(path, &k, NULL), 0);
    assert_true(km_pubkey_equal(km_key_pub(k), km_key_pub(a)));
    km_key_free(k);
    assert_string_equal(slurp(pub), line);

    /* An existing .pub alone also stops it, and the private key is not written. */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(km_key_save(b, path, "b@test", 0), -EEXIST);
    assert_int_equal(access(path, F_OK), -1);

    /* A dangling symlink in the way counts as existing. */
    assert_int_equal(unlink(pub), 0);
    assert_int_equal(symlink("/nonexistent/km-test", path), 0);
    assert_int_equal(km_key_save(b, path, "b@test", 0), -EEXIST);
    assert_int_equal(unlink(path), 0);

    /* With force, both are replaced. */
    assert_int_equal(km_key_save(a, path, "a@test", 0), 0);
    assert_int_equal(km_key_save(b, path, "b@test", 1), 0);
    char *comment = NULL;
    assert_int_equal(km_key_load(path, &k, &comment), 0);
    assert_true(km_pubkey_equal(km_key_pub(k), km_key_pub(b)));
    assert_string_equal(comment, "b@test");
    free(comment);
    km_key_free(k);
    assert_int_equal(km_pubkey_format_openssh(km_key_pub(b), "b@test", line, sizeof line), 0);
    line[strlen(line) + 1] = '\0';
    line[strlen(line)] = '\n';
    assert_string_equal(slurp(pub), line);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);

    /* A comment with a line break would corrupt the .pub: refused, nothing written. */
    char path2[128];
    path_in(t, "other.key", path2, sizeof path2);
    assert_int_equal(km_key_save(a, path2, "two\nlines", 0), KM_ERR_INVALID);
    assert_int_equal(access(path2, F_OK), -1);
    /* No temporaries are left behind. */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 2", t->dir);
    assert_int_equal(system(cmd), 0);

    km_key_free(a);
    km_key_free(b);
}

/* ---- interop with the real ssh-keygen ---- */

static void test_ssh_keygen_reads_ours(void **state)
{
    struct tmp *t = *state;
    char path[128];
    path_in(t, "ours", path, sizeof path);
    struct km_key *k = NULL;
    assert_int_equal(km_key_generate(&k), 0);
    assert_int_equal(km_key_save(k, path, "ours@keymesh", 0), 0);

    char cmd[256];
    char got[KM_PUBKEY_LINE_MAX];
    char got_key[KM_PUBKEY_LINE_MAX];
    char want[KM_PUBKEY_LINE_MAX];
    snprintf(cmd, sizeof cmd, SSH_KEYGEN " -y -f '%s' 2>/dev/null", path);
    run_line(cmd, got, sizeof got);
    key_fields(got, got_key, sizeof got_key);
    assert_int_equal(km_pubkey_format_openssh(km_key_pub(k), NULL, want, sizeof want), 0);
    assert_string_equal(got_key, want);

    /* ssh-keygen rewrites our file with a new comment (its own checkints and padding); we
     * read its output back. */
    snprintf(cmd, sizeof cmd, SSH_KEYGEN " -q -c -C renamed@keymesh -P '' -f '%s' >/dev/null",
             path);
    assert_int_equal(system(cmd), 0);
    struct km_key *back = NULL;
    char *comment = NULL;
    assert_int_equal(km_key_load(path, &back, &comment), 0);
    assert_true(km_pubkey_equal(km_key_pub(back), km_key_pub(k)));
    assert_string_equal(comment, "renamed@keymesh");
    free(comment);
    km_key_free(back);
    km_key_free(k);
}

static void test_adopt_ssh_keygen_key(void **state)
{
    struct tmp *t = *state;
    char path[128];
    char pub[140];
    char cmd[512];
    path_in(t, "adopted", path, sizeof path);
    snprintf(pub, sizeof pub, "%s.pub", path);
    snprintf(cmd, sizeof cmd, SSH_KEYGEN " -q -t ed25519 -N '' -C adopted@test -f '%s'", path);
    assert_int_equal(system(cmd), 0);

    struct km_key *k = NULL;
    char *comment = NULL;
    assert_int_equal(km_key_load(path, &k, &comment), 0);
    assert_string_equal(comment, "adopted@test");
    struct km_pubkey want;
    const char *line = slurp(pub);
    assert_int_equal(km_pubkey_parse(line, strlen(line), &want), 0);
    assert_true(km_pubkey_equal(km_key_pub(k), &want));
    /* The adopted key signs. */
    uint8_t sig[KM_SIG_LEN];
    assert_int_equal(km_key_sign(k, "m", 1, sig), 0);
    assert_int_equal(km_pubkey_verify(&want, "m", 1, sig), 0);
    /* Our .pub line for it matches ssh-keygen's, comment included. */
    char ours[KM_PUBKEY_LINE_MAX];
    assert_int_equal(km_pubkey_format_openssh(km_key_pub(k), comment, ours, sizeof ours), 0);
    assert_int_equal(strncmp(line, ours, strlen(ours)), 0);
    free(comment);
    km_key_free(k);

    /* ssh-keygen's encrypted and ecdsa keys are refused with their own codes. */
    path_in(t, "enc", path, sizeof path);
    snprintf(cmd, sizeof cmd, SSH_KEYGEN " -q -t ed25519 -N pass -f '%s'", path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(km_key_load(path, &k, &comment), KM_ERR_KEY_ENCRYPTED);
    path_in(t, "ec", path, sizeof path);
    snprintf(cmd, sizeof cmd, SSH_KEYGEN " -q -t ecdsa -N '' -f '%s'", path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(km_key_load(path, &k, &comment), KM_ERR_KEY_TYPE);
    assert_null(k);
    assert_null(comment);
}

/* ---- public key text and blobs ---- */

static void test_pubkey_format(void **state)
{
    (void)state;
    struct km_pubkey pk = golden_pk();
    char out[KM_PUBKEY_LINE_MAX];
    assert_int_equal(km_pubkey_format_openssh(&pk, NULL, out, sizeof out), 0);
    assert_string_equal(out, golden_pub);
    assert_int_equal(km_pubkey_format_openssh(&pk, "", out, sizeof out), 0);
    assert_string_equal(out, golden_pub);
    assert_int_equal(km_pubkey_format_openssh(&pk, "golden@keymesh", out, sizeof out), 0);
    assert_string_equal(out,
                        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDdICIHH/a6jI1EVvP7zQ9GEFDQaxAd7v0v"
                        "AynknMUOq golden@keymesh");
    /* Every buffer size short of the line and its NUL fails, leaving an empty string. */
    size_t need = strlen(out) + 1;
    for (size_t sz = 1; sz < need; sz++) {
        assert_int_equal(km_pubkey_format_openssh(&pk, "golden@keymesh", out, sz),
                         KM_ERR_TOO_LARGE);
        assert_string_equal(out, "");
    }
    assert_int_equal(km_pubkey_format_openssh(&pk, "golden@keymesh", out, 0), KM_ERR_TOO_LARGE);
    assert_int_equal(km_pubkey_format_openssh(&pk, "golden@keymesh", out, need), 0);
    assert_int_equal(km_pubkey_format_openssh(&pk, "a\nb", out, sizeof out), KM_ERR_INVALID);
    assert_int_equal(km_pubkey_format_openssh(&pk, "a\rb", out, sizeof out), KM_ERR_INVALID);
}

static void test_pubkey_parse_table(void **state)
{
    (void)state;
    static const char b64_blob[] =
        "AAAAC3NzaC1lZDI1NTE5AAAAIDdICIHH/a6jI1EVvP7zQ9GEFDQaxAd7v0vAynknMUOq";
    static const char b64_raw[] = "N0gIgcf9rqMjURW8/vND0YQUNBrEB3u/S8DKeScxQ6o=";
    static const char hex_lower[] =
        "37480881c7fdaea3235115bcfef343d18414341ac4077bbf4bc0ca79273143aa";
    static const char hex_upper[] =
        "37480881C7FDAEA3235115BCFEF343D18414341AC4077BBF4BC0CA79273143AA";
    /* Blobs that are not ed25519 keys: RSA (from rsa_pub), an ed25519 blob with a trailing
     * byte, one with a 31-byte key. */
    static const char rsa_blob[] =
        "AAAAB3NzaC1yc2EAAAADAQABAAAAgQC+Uj9X26TGH/y0LX1iJ6a6ASfRIyfVYZ2DSg1BeGLhtN467oe+s23V/"
        "ZH1ej56tk5x+LN+ElsZjGvgAh6nGgRbGqbP/"
        "xwhcnRzu3+xGkTpiRm2vUVso0sY43DePnaAnhY7H7TLqvEULmKQDIxR8kIE+NU4zQbipn7mgrLQMup5mw==";
    static const char blob_trailing[] =
        "AAAAC3NzaC1lZDI1NTE5AAAAIDdICIHH/a6jI1EVvP7zQ9GEFDQaxAd7v0vAynknMUOqAA==";
    static const char blob_short[] =
        "AAAAC3NzaC1lZDI1NTE5AAAAHzdICIHH/a6jI1EVvP7zQ9GEFDQaxAd7v0vAynknMUM=";
    struct {
        char text[1024];
        int want;
    } t[40];
    size_t n = 0;
#define P(want_, ...)                                       \
    do {                                                    \
        assert_true(n < N_ITEMS(t));                        \
        snprintf(t[n].text, sizeof t[n].text, __VA_ARGS__); \
        t[n++].want = (want_);                              \
    } while (0)
    P(0, "ssh-ed25519 %s golden@keymesh", b64_blob);
    P(0, "ssh-ed25519 %s", b64_blob);
    P(0, "ssh-ed25519 %s comment with  spaces\tand tabs", b64_blob);
    P(0, "  \tssh-ed25519\t \t%s  x \r\n", b64_blob);
    P(0, "%s", b64_blob);
    P(0, "\n%s\n", b64_blob);
    P(0, "%s", b64_raw);
    P(0, "%s", hex_lower);
    P(0, "%s", hex_upper);
    P(0, " %s\n", hex_lower);
    P(0, "37480881c7fdaea3235115bcfef343d18414341ac4077bbf4bc0CA79273143Aa");
    P(KM_ERR_INVALID, "%.63s", hex_lower);
    P(KM_ERR_INVALID, "%s0", hex_lower);
    P(KM_ERR_INVALID, "%.62sg0", hex_lower);
    P(KM_ERR_INVALID, "0x%.62s", hex_lower);
    P(KM_ERR_INVALID, "%.43s", b64_raw);   /* unpadded */
    P(KM_ERR_INVALID, "%.42sp=", b64_raw); /* non-canonical bits */
    P(KM_ERR_INVALID, "%.67s", b64_blob);
    P(KM_ERR_INVALID, "ssh-ed25519");
    P(KM_ERR_INVALID, "ssh-ed25519 ");
    P(KM_ERR_INVALID, "ssh-ed25519 %s", b64_raw); /* raw key where the blob goes */
    P(KM_ERR_INVALID, "ssh-ed25519 %s", blob_trailing);
    P(KM_ERR_INVALID, "ssh-ed25519 %s", blob_short);
    P(KM_ERR_INVALID, "%s", blob_trailing);
    P(KM_ERR_INVALID, "%s", blob_short);
    P(KM_ERR_INVALID, "ssh-ed25519 %s", rsa_blob); /* type and blob disagree */
    P(KM_ERR_INVALID, "ssh-ed25519 %s!", b64_blob);
    P(KM_ERR_INVALID, "SSH-ED25519 %s", b64_blob);
    P(KM_ERR_INVALID, "foo %s", b64_blob);
    P(KM_ERR_INVALID, "%s", "");
    P(KM_ERR_INVALID, "%s", " \t\r\n");
    P(KM_ERR_INVALID, "%s", "AAAA");
    P(KM_ERR_KEY_TYPE, "%s", rsa_pub);
    P(KM_ERR_KEY_TYPE, "%s", ecdsa_pub);
    P(KM_ERR_KEY_TYPE, "%s", rsa_blob);
    P(KM_ERR_KEY_TYPE, "ssh-ed25519-cert-v01@openssh.com %s", b64_blob);
    P(KM_ERR_KEY_TYPE, "sk-ssh-ed25519@openssh.com %s", b64_blob);
    P(KM_ERR_KEY_TYPE, "ssh-dss");
#undef P
    struct km_pubkey want = golden_pk();
    for (size_t i = 0; i < n; i++) {
        struct km_pubkey pk;
        memset(&pk, 0xa5, sizeof pk);
        int r = km_pubkey_parse(t[i].text, strlen(t[i].text), &pk);
        if (r != t[i].want) {
            fail_msg("case %zu \"%s\": got %d want %d", i, t[i].text, r, t[i].want);
        }
        if (r == 0) {
            assert_true(km_pubkey_equal(&pk, &want));
        } else {
            static const struct km_pubkey zero;
            assert_memory_equal(pk.b, zero.b, sizeof zero.b);
        }
    }
}

static void test_pubkey_parse_bounds(void **state)
{
    (void)state;
    struct km_pubkey pk;
    /* An embedded NUL inside the counted length. */
    char line[128];
    int len = snprintf(line, sizeof line, "%s x", golden_pub);
    line[len - 1] = '\0';
    assert_int_equal(km_pubkey_parse(line, (size_t)len, &pk), KM_ERR_INVALID);
    assert_int_equal(km_pubkey_parse(line, (size_t)len - 2, &pk), 0);
    /* Only the counted bytes are read: a prefix of a valid line is not valid. */
    for (size_t n = 0; n < strlen(golden_pub); n++) {
        char *exact = malloc(n > 0 ? n : 1);
        assert_non_null(exact);
        memcpy(exact, golden_pub, n);
        assert_int_not_equal(km_pubkey_parse(exact, n, &pk), 0);
        free(exact);
    }
    /* Length limit. */
    size_t big_len = KM_PUBKEY_TEXT_MAX + 1;
    char *big = malloc(big_len);
    assert_non_null(big);
    memset(big, ' ', big_len);
    memcpy(big, golden_pub, strlen(golden_pub));
    assert_int_equal(km_pubkey_parse(big, big_len, &pk), KM_ERR_TOO_LARGE);
    assert_int_equal(km_pubkey_parse(big, big_len - 1, &pk), 0);
    free(big);
}

static void test_blob(void **state)
{
    (void)state;
    struct km_pubkey pk = golden_pk();
    struct km_buf b;
    km_buf_init(&b, 1024);
    assert_int_equal(km_pubkey_put_blob(&pk, &b), 0);
    assert_int_equal(km_buf_len(&b), 51);
    uint8_t want[51];
    size_t n = 0;
    assert_int_equal(sodium_base642bin(want, sizeof want, golden_pub + 12, 68, NULL, &n, NULL,
                                       sodium_base64_VARIANT_ORIGINAL),
                     0);
    assert_int_equal(n, 51);
    assert_memory_equal(km_buf_peek_ptr(&b), want, 51);

    /* A trailing byte is left for the caller. */
    assert_int_equal(km_buf_put_u8(&b, 7), 0);
    struct km_pubkey got;
    assert_int_equal(km_pubkey_get_blob(&b, &got), 0);
    assert_true(km_pubkey_equal(&got, &pk));
    assert_int_equal(km_buf_len(&b), 1);
    km_buf_reset(&b);

    /* Every truncation fails without consuming anything. */
    for (size_t len = 0; len < 51; len++) {
        struct km_buf v;
        km_buf_init_view(&v, want, len);
        int r = km_pubkey_get_blob(&v, &got);
        assert_int_equal(r, KM_ERR_INVALID);
        assert_int_equal(km_buf_len(&v), len);
    }
    /* Another type. */
    uint8_t rsa[64];
    struct km_buf w;
    km_buf_init_fixed(&w, rsa, sizeof rsa);
    assert_int_equal(km_buf_put_cstring(&w, "ssh-rsa"), 0);
    assert_int_equal(km_buf_put_string(&w, pk.b, 32), 0);
    assert_int_equal(km_pubkey_get_blob(&w, &got), KM_ERR_KEY_TYPE);
    assert_int_equal(km_buf_len(&w), 4 + 7 + 4 + 32);
    /* A full output buffer gets nothing. */
    uint8_t small[50];
    km_buf_init_fixed(&w, small, sizeof small);
    assert_int_equal(km_pubkey_put_blob(&pk, &w), KM_ERR_TOO_LARGE);
    assert_int_equal(km_buf_len(&w), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc8032),
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_golden_parse),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_format_comment_limits),
        cmocka_unit_test(test_text_truncated),
        cmocka_unit_test(test_text_byte_replaced),
        cmocka_unit_test(test_text_table),
        cmocka_unit_test(test_text_too_large),
        cmocka_unit_test(test_fixed_foreign_keys),
        cmocka_unit_test(test_binary_table),
        cmocka_unit_test(test_binary_truncated),
        cmocka_unit_test(test_binary_byte_flipped),
        cmocka_unit_test_setup_teardown(test_load_perms, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_load_errors, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_save, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_ssh_keygen_reads_ours, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_adopt_ssh_keygen_key, tmp_setup, tmp_teardown),
        cmocka_unit_test(test_pubkey_format),
        cmocka_unit_test(test_pubkey_parse_table),
        cmocka_unit_test(test_pubkey_parse_bounds),
        cmocka_unit_test(test_blob),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
