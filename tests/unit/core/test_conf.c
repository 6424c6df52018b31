/* core/conf: INI reading (line numbers, first-error stop, limits, inih quirks) and the
 * value parsers. Table-driven; adversarial cases first-class (STYLE.md section 13). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/conf.h"

/* What the callbacks saw, as "S<line>[<section>] K<line>[<section>]<key>=<value> ...". */
struct rec {
    char log[4096];
    const char *refuse_key;     /* the key callback refuses this key */
    const char *refuse_section; /* the section callback refuses this section */
};

static void rec_add(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void rec_add(struct rec *r, const char *fmt, ...)
{
    size_t n = strlen(r->log);
    if (n > 0 && n + 1 < sizeof r->log) {
        r->log[n++] = ' ';
        r->log[n] = '\0';
    }
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(r->log + n, sizeof r->log - n, fmt, ap);
    va_end(ap);
}

static int on_key(void *ctx, const char *section, const char *key, const char *value, int line,
                  char *err, size_t errsz)
{
    struct rec *r = ctx;
    if (r->refuse_key != NULL && strcmp(key, r->refuse_key) == 0) {
        (void)snprintf(err, errsz, "refused %s", key);
        return KM_ERR_INVALID;
    }
    rec_add(r, "K%d[%s]%s=%s", line, section, key, value);
    return 0;
}

static int on_section(void *ctx, const char *section, int line, char *err, size_t errsz)
{
    struct rec *r = ctx;
    if (r->refuse_section != NULL && strcmp(section, r->refuse_section) == 0) {
        (void)snprintf(err, errsz, "no section %s", section);
        return KM_ERR_INVALID;
    }
    rec_add(r, "S%d[%s]", line, section);
    return 0;
}

struct parse_case {
    const char *name;
    const char *text;
    size_t len; /* 0: strlen(text) */
    int rc;
    const char *err; /* exact message, or NULL when rc == 0 */
    const char *log; /* callbacks seen (also on error: nothing after the first error) */
};

#define LONG198                                                                                    \
    "k="                                                                                           \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
    "xxxxxxxx"                                                                                     \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
    "xxxx"
#define X196                                                                                       \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
    "xxxxxxxx"                                                                                     \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
    "xxxx"

static const struct parse_case parse_cases[] = {
    {"empty", "", 0, 0, NULL, ""},
    {"blank lines", "\n\n   \n\t\n", 0, 0, NULL, ""},
    {"basic", "[a]\nk = v\n", 0, 0, NULL, "S1[a] K2[a]k=v"},
    {"no final newline", "[a]\nk=v", 0, 0, NULL, "S1[a] K2[a]k=v"},
    {"colon separator", "[a]\nk: v\n", 0, 0, NULL, "S1[a] K2[a]k=v"},
    {"empty value", "[a]\nk =\n", 0, 0, NULL, "S1[a] K2[a]k="},
    {"value keeps inner spaces", "[a]\nk =  a  b  \n", 0, 0, NULL, "S1[a] K2[a]k=a  b"},
    {"value with = and :", "[a]\nk = [::1]:80=x\n", 0, 0, NULL, "S1[a] K2[a]k=[::1]:80=x"},
    {"key outside section", "k = v\n[a]\n", 0, 0, NULL, "K1[]k=v S2[a]"},
    {"empty sections", "[a]\n[b]\n\n[c]", 0, 0, NULL, "S1[a] S2[b] S4[c]"},
    {"repeated section", "[a]\nx=1\n[a]\nx=2\n", 0, 0, NULL, "S1[a] K2[a]x=1 S3[a] K4[a]x=2"},
    {"section name trimmed", "[ a b ]\n", 0, 0, NULL, "S1[a b]"},
    {"long section name kept", "[" X196 "]\nk=v\n", 0, 0, NULL, "S1[" X196 "] K2[" X196 "]k=v"},
    {"comments",
     "; one\n# two\n  ; indented\n\t# tab\n[a] ; after header\n[b] # hash\n"
     "k = v ; inline\nk2 = v;not\nk3 = a # b\n",
     0, 0, NULL, "S5[a] S6[b] K7[b]k=v K8[b]k2=v;not K9[b]k3=a # b"},
    {"BOM", "\xef\xbb\xbf[a]\nk=v\n", 0, 0, NULL, "S1[a] K2[a]k=v"},
    {"BOM only", "\xef\xbb\xbf", 0, 0, NULL, ""},
    {"BOM before key", "\xef\xbb\xbfk=v\n", 0, 0, NULL, "K1[]k=v"},
    {"CRLF", "[a]\r\nk = v\r\n\r\nk2=w\r\n", 0, 0, NULL, "S1[a] K2[a]k=v K4[a]k2=w"},
    {"CR at end of file", "[a]\r\nk=v\r", 0, 0, NULL, "S1[a] K2[a]k=v"},
    {"line of 198", "[a]\n" LONG198 "\n", 0, 0, NULL, NULL},
    {"line of 198 CRLF", "[a]\r\n" LONG198 "\r\n", 0, 0, NULL, NULL},
    {"line of 199", "[a]\n" LONG198 "x\n", 0, KM_ERR_CONFIG,
     "t.conf:2: line too long (max 198 characters)", ""},
    {"line of 199 last", "[a]\nk=v\n" LONG198 "x", 0, KM_ERR_CONFIG,
     "t.conf:3: line too long (max 198 characters)", ""},
    {"long comment", "[a]\n;" LONG198 "\n", 0, KM_ERR_CONFIG,
     "t.conf:2: line too long (max 198 characters)", ""},
    {"NUL byte", "[a]\nk=v\0w\n", 12, KM_ERR_CONFIG,
     "t.conf:2: NUL byte in line (not a text file?)", ""},
    {"NUL in comment", "[a]\n\n;\0\n", 8, KM_ERR_CONFIG,
     "t.conf:3: NUL byte in line (not a text file?)", ""},
    {"NUL alone", "\0", 1, KM_ERR_CONFIG, "t.conf:1: NUL byte in line (not a text file?)", ""},
    {"syntax: no =", "[a]\nk=v\njunk\nk2=w\n", 0, KM_ERR_CONFIG,
     "t.conf:3: syntax error: expected key = value", "S1[a] K2[a]k=v"},
    {"syntax: no = last line", "[a]\njunk", 0, KM_ERR_CONFIG,
     "t.conf:2: syntax error: expected key = value", "S1[a]"},
    {"syntax: = after comment", "[a]\nk ; x = y\n", 0, KM_ERR_CONFIG,
     "t.conf:2: syntax error: expected key = value", "S1[a]"},
    {"syntax: header without ]", "[a]\n[b\nk=v\n", 0, KM_ERR_CONFIG,
     "t.conf:2: syntax error: section header without ']'", "S1[a]"},
    {"syntax: empty header", "[]\n", 0, KM_ERR_CONFIG, "t.conf:1: syntax error: empty section name",
     ""},
    {"syntax: blank header", "[  ]\n", 0, KM_ERR_CONFIG,
     "t.conf:1: syntax error: empty section name", ""},
    {"syntax: text after header", "[a] k = v\n", 0, KM_ERR_CONFIG,
     "t.conf:1: syntax error: text after the section header's ']'", ""},
    {"syntax: double ]", "[a]]\n", 0, KM_ERR_CONFIG,
     "t.conf:1: syntax error: text after the section header's ']'", ""},
    {"syntax: ; in header", "[a ;b]\n", 0, KM_ERR_CONFIG,
     "t.conf:1: syntax error: ';' in section name", ""},
    {"syntax: [ in header", "[[a]\n", 0, KM_ERR_CONFIG,
     "t.conf:1: syntax error: '[' in section name", ""},
    {"syntax: missing key", "[a]\n= v\n", 0, KM_ERR_CONFIG,
     "t.conf:2: syntax error: missing key name", "S1[a]"},
    {"continuation refused", "[a]\nk = v\n  more\nk2 = w\n", 0, KM_ERR_CONFIG,
     "t.conf:3: line starts with whitespace (continuation lines are not supported; remove the "
     "indentation)",
     "S1[a] K2[a]k=v"},
    {"indented key refused", "[a]\n\tk = v\n", 0, KM_ERR_CONFIG,
     "t.conf:2: line starts with whitespace (continuation lines are not supported; remove the "
     "indentation)",
     "S1[a]"},
    {"indented header refused", " [a]\n", 0, KM_ERR_CONFIG,
     "t.conf:1: line starts with whitespace (continuation lines are not supported; remove the "
     "indentation)",
     ""},
    {"CR-indented refused", "[a]\n\rk=v\n", 0, KM_ERR_CONFIG,
     "t.conf:2: line starts with whitespace (continuation lines are not supported; remove the "
     "indentation)",
     "S1[a]"},
    {"only first error", "[a]\njunk\n[b\n", 0, KM_ERR_CONFIG,
     "t.conf:2: syntax error: expected key = value", "S1[a]"},
    {"refused key stops", "[a]\nk=1\nbad=2\nk=3\n[b]\n", 0, KM_ERR_CONFIG, "t.conf:3: refused bad",
     "S1[a] K2[a]k=1"},
    {"refused section stops", "[a]\nk=1\n[nope]\nk=2\n", 0, KM_ERR_CONFIG,
     "t.conf:3: no section nope", "S1[a] K2[a]k=1"},
    {"refused empty section", "[a]\n[nope]\n", 0, KM_ERR_CONFIG, "t.conf:2: no section nope",
     "S1[a]"},
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const struct parse_case *tc = &parse_cases[i];
        struct rec r = {.refuse_key = "bad", .refuse_section = "nope"};
        char err[KM_CONF_ERR_LEN];
        memset(err, 'Z', sizeof err);
        size_t len = tc->len != 0 ? tc->len : strlen(tc->text);
        int rc = km_conf_parse(tc->text, len, "t.conf", on_key, on_section, &r, err, sizeof err);
        if (rc != tc->rc) {
            fail_msg("%s: rc %d, want %d (err \"%s\")", tc->name, rc, tc->rc, err);
        }
        const char *want_err = tc->err != NULL ? tc->err : "";
        if (strcmp(err, want_err) != 0) {
            fail_msg("%s: err \"%s\", want \"%s\"", tc->name, err, want_err);
        }
        if (tc->log != NULL && strcmp(r.log, tc->log) != 0) {
            fail_msg("%s: saw \"%s\", want \"%s\"", tc->name, r.log, tc->log);
        }
    }
}

/* The value of the longest line arrives whole (inih would split it at its buffer size). */
static void test_parse_long_value_whole(void **state)
{
    (void)state;
    struct rec r = {0};
    char err[KM_CONF_ERR_LEN];
    const char *text = "[a]\n" LONG198 "\n";
    assert_int_equal(
        km_conf_parse(text, strlen(text), "t", on_key, on_section, &r, err, sizeof err), 0);
    assert_string_equal(r.log, "S1[a] K2[a]" LONG198);
}

static void test_parse_section_cb_null(void **state)
{
    (void)state;
    struct rec r = {0};
    char err[KM_CONF_ERR_LEN];
    const char *text = "[a]\nk=v\n[b]\n";
    assert_int_equal(km_conf_parse(text, strlen(text), "t", on_key, NULL, &r, err, sizeof err), 0);
    assert_string_equal(r.log, "K2[a]k=v");
}

/* The text need not be NUL-terminated: bytes past len are never read. */
static void test_parse_not_terminated(void **state)
{
    (void)state;
    char text[] = "[a]\nk=vXXXX";
    struct rec r = {0};
    char err[KM_CONF_ERR_LEN];
    assert_int_equal(km_conf_parse(text, 7, "t", on_key, on_section, &r, err, sizeof err), 0);
    assert_string_equal(r.log, "S1[a] K2[a]k=v");
}

static void test_parse_line_numbers_far(void **state)
{
    (void)state;
    size_t cap = 20000;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t o = 0;
    o += (size_t)snprintf(text + o, cap - o, "[a]\n");
    for (int i = 2; i < 1000; i++) {
        o += (size_t)snprintf(text + o, cap - o,
                              i % 3 == 0   ? "; c\n"
                              : i % 3 == 1 ? "\n"
                                           : "k=v\n");
    }
    o += (size_t)snprintf(text + o, cap - o, "oops\n");
    struct rec r = {0};
    char err[KM_CONF_ERR_LEN];
    assert_int_equal(km_conf_parse(text, o, "f.ini", on_key, on_section, &r, err, sizeof err),
                     KM_ERR_CONFIG);
    assert_string_equal(err, "f.ini:1000: syntax error: expected key = value");
    free(text);
}

static void test_parse_size_limit(void **state)
{
    (void)state;
    size_t max = KM_CONF_MAX_SIZE;
    char *text = malloc(max + 1);
    assert_non_null(text);
    /* Comment lines of 100 characters up to exactly the limit. */
    for (size_t i = 0; i < max + 1; i++) {
        text[i] = i % 100 == 99 ? '\n' : '#';
    }
    struct rec r = {0};
    char err[KM_CONF_ERR_LEN];
    assert_int_equal(km_conf_parse(text, max, "big", on_key, on_section, &r, err, sizeof err), 0);
    assert_int_equal(km_conf_parse(text, max + 1, "big", on_key, on_section, &r, err, sizeof err),
                     KM_ERR_TOO_LARGE);
    assert_string_equal(err, "big: file too large (1048577 bytes, max 1048576)");
    assert_string_equal(r.log, "");
    free(text);
}

static void test_parse_small_err_buffer(void **state)
{
    (void)state;
    struct rec r = {0};
    char err[8];
    const char *text = "junk\n";
    assert_int_equal(
        km_conf_parse(text, strlen(text), "t.conf", on_key, on_section, &r, err, sizeof err),
        KM_ERR_CONFIG);
    assert_string_equal(err, "t.conf:");
    assert_int_equal(km_conf_parse(text, strlen(text), "t.conf", on_key, on_section, &r, NULL, 0),
                     KM_ERR_CONFIG);
}

static void test_parse_file(void **state)
{
    (void)state;
    char path[] = "/tmp/km-test-conf-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "[a]\nk = v\nbad = 1\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    struct rec r = {.refuse_key = "bad"};
    char err[KM_CONF_ERR_LEN];
    char want[256];
    assert_int_equal(km_conf_parse_file(path, on_key, on_section, &r, err, sizeof err),
                     KM_ERR_CONFIG);
    (void)snprintf(want, sizeof want, "%s:3: refused bad", path);
    assert_string_equal(err, want);
    assert_string_equal(r.log, "S1[a] K2[a]k=v");
    unlink(path);

    assert_int_equal(km_conf_parse_file(path, on_key, on_section, &r, err, sizeof err), -ENOENT);
    (void)snprintf(want, sizeof want, "%s: No such file or directory", path);
    assert_string_equal(err, want);

    assert_int_equal(km_conf_parse_file("/tmp", on_key, on_section, &r, err, sizeof err),
                     KM_ERR_INVALID);
    assert_string_equal(err, "/tmp: not a regular file");
}

/* Value parsers. */

struct u64_case {
    const char *in;
    int rc;
    uint64_t want;
};

static void test_port(void **state)
{
    (void)state;
    static const struct u64_case cases[] = {
        {"1", 0, 1},
        {"80", 0, 80},
        {"080", 0, 80},
        {"65535", 0, 65535},
        {"0", KM_ERR_INVALID, 0},
        {"00", KM_ERR_INVALID, 0},
        {"65536", KM_ERR_INVALID, 0},
        {"4294967376", KM_ERR_INVALID, 0}, /* 2^32 + 80 */
        {"18446744073709551696", KM_ERR_INVALID, 0},
        {"-1", KM_ERR_INVALID, 0},
        {"-65535", KM_ERR_INVALID, 0},
        {"+80", KM_ERR_INVALID, 0},
        {" 80", KM_ERR_INVALID, 0},
        {"\t80", KM_ERR_INVALID, 0},
        {"80 ", KM_ERR_INVALID, 0},
        {"80x", KM_ERR_INVALID, 0},
        {"0x50", KM_ERR_INVALID, 0},
        {"8 0", KM_ERR_INVALID, 0},
        {"", KM_ERR_INVALID, 0},
        {"http", KM_ERR_INVALID, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t v = 4242;
        int rc = km_conf_port(cases[i].in, &v);
        if (rc != cases[i].rc) {
            fail_msg("port \"%s\": rc %d, want %d", cases[i].in, rc, cases[i].rc);
        }
        if (v != (rc == 0 ? cases[i].want : 4242)) {
            fail_msg("port \"%s\": got %u", cases[i].in, v);
        }
    }
}

static void test_bool(void **state)
{
    (void)state;
    static const struct u64_case cases[] = {
        {"true", 0, 1},
        {"TRUE", 0, 1},
        {"yes", 0, 1},
        {"Yes", 0, 1},
        {"on", 0, 1},
        {"1", 0, 1},
        {"false", 0, 0},
        {"False", 0, 0},
        {"no", 0, 0},
        {"off", 0, 0},
        {"0", 0, 0},
        {"", KM_ERR_INVALID, 0},
        {"maybe", KM_ERR_INVALID, 0},
        {" true", KM_ERR_INVALID, 0},
        {"true ", KM_ERR_INVALID, 0},
        {"2", KM_ERR_INVALID, 0},
        {"tru", KM_ERR_INVALID, 0},
        {"01", KM_ERR_INVALID, 0},
        {"y", KM_ERR_INVALID, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool v = true;
        bool w = false;
        int rc = km_conf_bool(cases[i].in, &v);
        int rc2 = km_conf_bool(cases[i].in, &w);
        if (rc != cases[i].rc || rc2 != rc) {
            fail_msg("bool \"%s\": rc %d, want %d", cases[i].in, rc, cases[i].rc);
        }
        if (rc == 0 && (v != (cases[i].want != 0) || w != v)) {
            fail_msg("bool \"%s\": got %d", cases[i].in, v);
        }
        if (rc != 0 && (!v || w)) {
            fail_msg("bool \"%s\": out changed on failure", cases[i].in);
        }
    }
}

#define DAY_MS 86400000ull

static void test_duration(void **state)
{
    (void)state;
    static const struct u64_case cases[] = {
        {"0", 0, 0},
        {"0ms", 0, 0},
        {"0d", 0, 0},
        {"1ms", 0, 1},
        {"250ms", 0, 250},
        {"1", 0, 1000},
        {"30s", 0, 30000},
        {"5m", 0, 300000},
        {"2h", 0, 7200000},
        {"1d", 0, DAY_MS},
        {"366d", 0, 366 * DAY_MS},
        {"8784h", 0, 366 * DAY_MS},
        {"527040m", 0, 366 * DAY_MS},
        {"31622400", 0, 366 * DAY_MS},
        {"31622400s", 0, 366 * DAY_MS},
        {"31622400000ms", 0, 366 * DAY_MS},
        {"367d", KM_ERR_INVALID, 0},
        {"8785h", KM_ERR_INVALID, 0},
        {"31622401", KM_ERR_INVALID, 0},
        {"31622400001ms", KM_ERR_INVALID, 0},
        {"18446744073709551615ms", KM_ERR_INVALID, 0},
        {"18446744073709551616", KM_ERR_INVALID, 0},
        {"213503982334601d", KM_ERR_INVALID, 0}, /* wraps to a small value if unchecked */
        {"99999999999999999999999999d", KM_ERR_INVALID, 0},
        {"-1", KM_ERR_INVALID, 0},
        {"-1s", KM_ERR_INVALID, 0},
        {"+1s", KM_ERR_INVALID, 0},
        {" 1s", KM_ERR_INVALID, 0},
        {"1 s", KM_ERR_INVALID, 0},
        {"1s ", KM_ERR_INVALID, 0},
        {"1S", KM_ERR_INVALID, 0},
        {"1sec", KM_ERR_INVALID, 0},
        {"1w", KM_ERR_INVALID, 0},
        {"1.5s", KM_ERR_INVALID, 0},
        {"1s1", KM_ERR_INVALID, 0},
        {"s", KM_ERR_INVALID, 0},
        {"ms", KM_ERR_INVALID, 0},
        {"", KM_ERR_INVALID, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t v = 4242;
        int rc = km_conf_duration_ms(cases[i].in, &v);
        if (rc != cases[i].rc) {
            fail_msg("duration \"%s\": rc %d, want %d", cases[i].in, rc, cases[i].rc);
        }
        if (v != (rc == 0 ? cases[i].want : 4242)) {
            fail_msg("duration \"%s\": got %llu", cases[i].in, (unsigned long long)v);
        }
    }
}

static void test_size(void **state)
{
    (void)state;
    static const struct u64_case cases[] = {
        {"0", 0, 0},
        {"1", 0, 1},
        {"0K", 0, 0},
        {"1K", 0, 1024},
        {"1k", 0, 1024},
        {"64M", 0, 64ull << 20},
        {"2g", 0, 2ull << 30},
        {"1024G", 0, 1ull << 40},
        {"1048576M", 0, 1ull << 40},
        {"1099511627776", 0, 1ull << 40},
        {"1099511627777", KM_ERR_INVALID, 0},
        {"1025G", KM_ERR_INVALID, 0},
        {"1073741825K", KM_ERR_INVALID, 0},
        {"17179869184G", KM_ERR_INVALID, 0}, /* 2^34 G wraps to 0 if unchecked */
        {"18446744073709551616", KM_ERR_INVALID, 0},
        {"99999999999999999999K", KM_ERR_INVALID, 0},
        {"1T", KM_ERR_INVALID, 0},
        {"1KB", KM_ERR_INVALID, 0},
        {"1KiB", KM_ERR_INVALID, 0},
        {"1 K", KM_ERR_INVALID, 0},
        {"-1", KM_ERR_INVALID, 0},
        {"+1", KM_ERR_INVALID, 0},
        {" 1", KM_ERR_INVALID, 0},
        {"1 ", KM_ERR_INVALID, 0},
        {"K", KM_ERR_INVALID, 0},
        {"0x10", KM_ERR_INVALID, 0},
        {"", KM_ERR_INVALID, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t v = 4242;
        int rc = km_conf_size(cases[i].in, &v);
        if (rc != cases[i].rc) {
            fail_msg("size \"%s\": rc %d, want %d", cases[i].in, rc, cases[i].rc);
        }
        if (v != (rc == 0 ? cases[i].want : 4242)) {
            fail_msg("size \"%s\": got %llu", cases[i].in, (unsigned long long)v);
        }
    }
}

struct addr_case {
    const char *in;
    const char *def_host;
    int rc;
    const char *host;
    uint16_t port;
};

static void test_listen_addr(void **state)
{
    (void)state;
    static const struct addr_case cases[] = {
        {"[::1]:80", "::", 0, "::1", 80},
        {"127.0.0.1:80", "::", 0, "127.0.0.1", 80},
        {"80", "::", 0, "::", 80},
        {"80", "127.0.0.1", 0, "127.0.0.1", 80},
        {"[::]:15022", NULL, 0, "::", 15022},
        {"0.0.0.0:1", NULL, 0, "0.0.0.0", 1},
        {"[0:0::0]:65535", NULL, 0, "::", 65535},
        {"[FD6B::0001]:22", NULL, 0, "fd6b::1", 22},
        {"[::ffff:127.0.0.1]:80", NULL, 0, "::ffff:127.0.0.1", 80},
        {"[2001:db8:1:2:3:4:5:6]:443", NULL, 0, "2001:db8:1:2:3:4:5:6", 443},
        {"80", NULL, KM_ERR_INVALID, NULL, 0},
        {"80", "localhost", KM_ERR_INVALID, NULL, 0},
        {"localhost:80", "::", KM_ERR_INVALID, NULL, 0},
        {"example.com:80", "::", KM_ERR_INVALID, NULL, 0},
        {"[localhost]:80", "::", KM_ERR_INVALID, NULL, 0},
        {"127.0.0.1", "::", KM_ERR_INVALID, NULL, 0},
        {"127.0.0.1:", "::", KM_ERR_INVALID, NULL, 0},
        {"[::1]", "::", KM_ERR_INVALID, NULL, 0},
        {"[::1]:", "::", KM_ERR_INVALID, NULL, 0},
        {"[::1]80", "::", KM_ERR_INVALID, NULL, 0},
        {"[::1", "::", KM_ERR_INVALID, NULL, 0},
        {"::1", "::", KM_ERR_INVALID, NULL, 0},
        {"::1:80", "::", KM_ERR_INVALID, NULL, 0},
        {"::", "::", KM_ERR_INVALID, NULL, 0},
        {":80", "::", KM_ERR_INVALID, NULL, 0},
        {"[]:80", "::", KM_ERR_INVALID, NULL, 0},
        {"127.0.0.1:0", "::", KM_ERR_INVALID, NULL, 0},
        {"[::1]:0", "::", KM_ERR_INVALID, NULL, 0},
        {"0", "::", KM_ERR_INVALID, NULL, 0},
        {"127.0.0.1:65536", "::", KM_ERR_INVALID, NULL, 0},
        {"foo:99999", "::", KM_ERR_INVALID, NULL, 0},
        {"65536", "::", KM_ERR_INVALID, NULL, 0},
        {"-1", "::", KM_ERR_INVALID, NULL, 0},
        {"127.0.0.1:-80", "::", KM_ERR_INVALID, NULL, 0},
        {"127.0.0.1:+80", "::", KM_ERR_INVALID, NULL, 0},
        {"+80", "::", KM_ERR_INVALID, NULL, 0},
        {"127.0.0.1: 80", "::", KM_ERR_INVALID, NULL, 0},
        {"127.0.0.1 :80", "::", KM_ERR_INVALID, NULL, 0},
        {" 127.0.0.1:80", "::", KM_ERR_INVALID, NULL, 0},
        {"[ ::1]:80", "::", KM_ERR_INVALID, NULL, 0},
        {" 80", "::", KM_ERR_INVALID, NULL, 0},
        {"80 ", "::", KM_ERR_INVALID, NULL, 0},
        {"[::1]:80x", "::", KM_ERR_INVALID, NULL, 0},
        {"[::1]:80:80", "::", KM_ERR_INVALID, NULL, 0},
        {"127.0.0.1:80:80", "::", KM_ERR_INVALID, NULL, 0},
        {"[127.0.0.1]:80", "::", KM_ERR_INVALID, NULL, 0},
        {"[fe80::1%eth0]:80", "::", KM_ERR_INVALID, NULL, 0},
        {"1.2.3:80", "::", KM_ERR_INVALID, NULL, 0},
        {"256.0.0.1:80", "::", KM_ERR_INVALID, NULL, 0},
        {"0x7f.0.0.1:80", "::", KM_ERR_INVALID, NULL, 0},
        {"2130706433:80", "::", KM_ERR_INVALID, NULL, 0},
        {"[[::1]]:80", "::", KM_ERR_INVALID, NULL, 0},
        {"[::1]]:80", "::", KM_ERR_INVALID, NULL, 0},
        {"[1:2:3:4:5:6:7:8:9]:80", "::", KM_ERR_INVALID, NULL, 0},
        {"[0000000000000000000000000000000000000000000000000000000000000000000::]:80",
         "::", KM_ERR_INVALID, NULL, 0},
        {"junk", "::", KM_ERR_INVALID, NULL, 0},
        {"", "::", KM_ERR_INVALID, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct km_conf_addr a = {.host = "sentinel", .port = 4242};
        int rc = km_conf_listen_addr(cases[i].in, cases[i].def_host, &a);
        if (rc != cases[i].rc) {
            fail_msg("listen \"%s\": rc %d, want %d", cases[i].in, rc, cases[i].rc);
        }
        const char *host = rc == 0 ? cases[i].host : "sentinel";
        uint16_t port = rc == 0 ? cases[i].port : 4242;
        if (strcmp(a.host, host) != 0 || a.port != port) {
            fail_msg("listen \"%s\": got %s port %u, want %s port %u", cases[i].in, a.host, a.port,
                     host, port);
        }
    }
}

struct conflict_case {
    const char *a;
    uint16_t ap;
    const char *b;
    uint16_t bp;
    bool want;
};

static void test_addr_conflict(void **state)
{
    (void)state;
    static const struct conflict_case cases[] = {
        {"127.0.0.1", 80, "127.0.0.1", 80, true},
        {"127.0.0.1", 80, "127.0.0.1", 81, false},
        {"127.0.0.1", 80, "127.0.0.2", 80, false},
        {"0.0.0.0", 80, "127.0.0.1", 80, true},
        {"0.0.0.0", 80, "0.0.0.0", 80, true},
        {"0.0.0.0", 80, "0.0.0.0", 81, false},
        {"0.0.0.0", 80, "::1", 80, false},
        {"0.0.0.0", 80, "::", 80, true},
        {"0.0.0.0", 80, "::ffff:10.0.0.1", 80, true},
        {"::", 80, "127.0.0.1", 80, true},
        {"::", 80, "::1", 80, true},
        {"::", 80, "::", 80, true},
        {"::", 80, "::", 81, false},
        {"::", 80, "0:0::0", 80, true},
        {"::1", 80, "::1", 80, true},
        {"::1", 80, "::2", 80, false},
        {"::1", 80, "127.0.0.1", 80, false},
        {"::1", 80, "0:0:0:0:0:0:0:1", 80, true},
        {"::ffff:127.0.0.1", 80, "127.0.0.1", 80, true},
        {"::ffff:127.0.0.1", 80, "127.0.0.2", 80, false},
        {"::ffff:0.0.0.0", 80, "127.0.0.1", 80, true},
        {"fd6b::1", 15022, "fd6b::1", 15022, true},
        {"fd6b::1", 15022, "fd6b::2", 15022, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct km_conf_addr a = {.port = cases[i].ap};
        struct km_conf_addr b = {.port = cases[i].bp};
        (void)snprintf(a.host, sizeof a.host, "%s", cases[i].a);
        (void)snprintf(b.host, sizeof b.host, "%s", cases[i].b);
        if (km_conf_addr_conflict(&a, &b) != cases[i].want ||
            km_conf_addr_conflict(&b, &a) != cases[i].want) {
            fail_msg("conflict %s:%u / %s:%u: want %d", cases[i].a, cases[i].ap, cases[i].b,
                     cases[i].bp, cases[i].want);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_long_value_whole),
        cmocka_unit_test(test_parse_section_cb_null),
        cmocka_unit_test(test_parse_not_terminated),
        cmocka_unit_test(test_parse_line_numbers_far),
        cmocka_unit_test(test_parse_size_limit),
        cmocka_unit_test(test_parse_small_err_buffer),
        cmocka_unit_test(test_parse_file),
        cmocka_unit_test(test_port),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_listen_addr),
        cmocka_unit_test(test_addr_conflict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
