/* Error codes: every code has a distinct name and message; errno values map through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/err.h"

static void test_every_code_named(void **state)
{
    (void)state;
    static const int codes[] = {
#define CODE(name, value, msg) value,
        KM_ERR_MAP(CODE)
#undef CODE
    };
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        assert_true(codes[i] <= -5000);
        assert_string_not_equal(km_strerror(codes[i]), "unknown error");
        assert_true(strncmp(km_err_name(codes[i]), "KM_ERR_", 7) == 0);
        for (size_t j = i + 1; j < n; j++) {
            assert_int_not_equal(codes[i], codes[j]);
            assert_string_not_equal(km_err_name(codes[i]), km_err_name(codes[j]));
        }
    }
}

static void test_errno_and_unknown(void **state)
{
    (void)state;
    assert_string_equal(km_strerror(0), "success");
    assert_string_equal(km_err_name(0), "KM_OK");
    assert_string_equal(km_strerror(-ENOENT), strerror(ENOENT));
    assert_string_equal(km_err_name(KM_ERR_SYS(ENOENT)), "ENOENT");
    assert_string_equal(km_strerror(-4999), "unknown error");
    assert_string_equal(km_err_name(12345), "UNKNOWN");
    assert_string_equal(km_err_name(KM_ERR_INVALID), "KM_ERR_INVALID");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_named),
        cmocka_unit_test(test_errno_and_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
