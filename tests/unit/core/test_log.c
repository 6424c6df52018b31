/* Logging: level parsing and filtering, escaping of untrusted bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"
#include "core/log.h"

static void test_levels(void **state)
{
    (void)state;
    enum km_log_level l;
    assert_int_equal(km_log_level_parse("DEBUG", &l), 0);
    assert_int_equal(l, KM_LOG_DEBUG);
    assert_int_equal(km_log_level_parse("off", &l), 0);
    assert_int_equal(l, KM_LOG_OFF);
    assert_int_equal(km_log_level_parse("verbose", &l), KM_ERR_INVALID);
    assert_int_equal(km_log_level_parse("", &l), KM_ERR_INVALID);
    km_log_set_level(KM_LOG_WARN);
    assert_false(km_log_enabled(KM_LOG_INFO));
    assert_true(km_log_enabled(KM_LOG_ERROR));
    km_log_set_level(KM_LOG_OFF);
    assert_false(km_log_enabled(KM_LOG_ERROR));
    assert_string_equal(km_log_level_name(KM_LOG_WARN), "warn");
    assert_string_equal(km_log_level_name((enum km_log_level)42), "?");
    km_log_set_level(KM_LOG_DEBUG);
    KM_DEBUG_R(-ENOENT, "test line %d", 1); /* exercised for the sanitizers */
}

struct esc_case {
    const char *in;
    size_t len;
    size_t outsz;
    const char *want;
};

static const struct esc_case esc_cases[] = {
    {"plain", 5, 64, "plain"},
    {"a\"b\\c", 5, 64, "a\\x22b\\x5cc"},
    {"\x00\x1b[2J\n", 6, 64, "\\x00\\x1b[2J\\x0a"},
    {"\xff\x80", 2, 64, "\\xff\\x80"},
    {"abcdefghij", 10, 8, "abcd..."},
    {"\n\n\n", 3, 8, "\\x0a..."},
    {"", 0, 1, ""},
    {"abc", 3, 4, "abc"},
    {"abcd", 4, 5, "abcd"},
    {"abcde", 5, 5, "a..."},
};

static void test_escape(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof esc_cases / sizeof esc_cases[0]; i++) {
        char out[64];
        memset(out, 'Z', sizeof out);
        km_log_escape(out, esc_cases[i].outsz, esc_cases[i].in, esc_cases[i].len);
        if (strcmp(out, esc_cases[i].want) != 0) {
            fail_msg("case %zu: got '%s', want '%s'", i, out, esc_cases[i].want);
        }
        assert_true(strlen(out) < esc_cases[i].outsz);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
