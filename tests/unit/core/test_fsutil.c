/* File helpers against a real temporary directory. */
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

#include "core/fsutil.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/km-fsutil-XXXXXX");
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_write_read(void **state)
{
    (void)state;
    char p[256];
    assert_int_equal(km_fs_join(p, sizeof p, dir, "f"), 0);
    assert_int_equal(km_fs_write_atomic(p, "hello", 5, 0600, 0), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* Never replaced without replace. */
    assert_int_equal(km_fs_write_atomic(p, "x", 1, 0600, 0), -EEXIST);
    struct km_buf b;
    km_buf_init(&b, 64);
    mode_t mode;
    assert_int_equal(km_fs_read_file(p, &b, &mode), 0);
    assert_int_equal(km_buf_len(&b), 5);
    assert_memory_equal(km_buf_peek_ptr(&b), "hello", 5);
    assert_int_equal(mode & 0777, 0600);
    km_buf_reset(&b);
    assert_int_equal(km_fs_write_atomic(p, "bye", 3, 0644, 1), 0);
    assert_int_equal(km_fs_read_file(p, &b, NULL), 0);
    assert_int_equal(km_buf_len(&b), 3);
    km_buf_reset(&b);
    /* Too large for the buffer's maximum. */
    km_buf_init(&b, 2);
    assert_int_equal(km_fs_read_file(p, &b, NULL), KM_ERR_TOO_LARGE);
    km_buf_reset(&b);
    /* Not a regular file, and missing. */
    km_buf_init(&b, 64);
    assert_int_equal(km_fs_read_file(dir, &b, NULL), KM_ERR_INVALID);
    assert_int_equal(km_fs_join(p, sizeof p, dir, "missing"), 0);
    assert_int_equal(km_fs_read_file(p, &b, NULL), -ENOENT);
    km_buf_reset(&b);
    /* No temporary files left behind. */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls '%s' | grep tmp)\"", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_mkdir_join(void **state)
{
    (void)state;
    char p[256];
    assert_int_equal(km_fs_join(p, sizeof p, dir, "a/b/c"), 0);
    assert_int_equal(km_fs_mkdir_p(p, 0700), 0);
    assert_int_equal(km_fs_mkdir_p(p, 0700), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(km_fs_mkdir_p("", 0700), -ENOENT);
    char f[256];
    assert_int_equal(km_fs_join(f, sizeof f, dir, "file"), 0);
    assert_int_equal(km_fs_write_atomic(f, "", 0, 0600, 0), 0);
    assert_int_equal(km_fs_mkdir_p(f, 0700), -ENOTDIR);
    char small[8];
    assert_int_equal(km_fs_join(small, sizeof small, "/abc/", "defg"), KM_ERR_TOO_LARGE);
    assert_int_equal(km_fs_join(small, sizeof small, "/abc/", "de"), 0);
    assert_string_equal(small, "/abc/de");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mkdir_join, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
