/* The loop wrapper against a real libuv loop: signals arrive as callbacks, the loop ends when
 * its work ends, and leaked handles are detected at close. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/loop.h"

struct sigs {
    int stops;
    int reloads;
    uv_timer_t timer;
};

static void on_stop(struct km_loop *l, int signum, void *arg)
{
    struct sigs *s = arg;
    assert_true(signum == SIGTERM || signum == SIGINT);
    s->stops++;
    uv_close((uv_handle_t *)&s->timer, NULL);
    km_loop_unwatch_signals(l);
}

static void on_reload(struct km_loop *l, int signum, void *arg)
{
    (void)l;
    struct sigs *s = arg;
    assert_int_equal(signum, SIGHUP);
    s->reloads++;
    /* After the reload, ask to stop. */
    raise(SIGTERM);
}

static void on_timeout(uv_timer_t *t)
{
    (void)t;
    fail_msg("signals were not delivered within 5 s");
}

static void test_signals(void **state)
{
    (void)state;
    struct km_loop *l;
    assert_int_equal(km_loop_new(&l), 0);
    struct sigs s = {0};
    assert_int_equal(km_loop_watch_signals(l, on_stop, on_reload, &s), 0);
    assert_int_equal(km_loop_watch_signals(l, on_stop, on_reload, &s), -EALREADY);
    /* The timer keeps the loop alive and bounds the test. */
    assert_int_equal(uv_timer_init(km_loop_uv(l), &s.timer), 0);
    assert_int_equal(uv_timer_start(&s.timer, on_timeout, 5000, 0), 0);
    raise(SIGHUP);
    assert_int_equal(km_loop_run(l), 0);
    assert_int_equal(s.reloads, 1);
    assert_int_equal(s.stops, 1);
    assert_int_equal(km_loop_leaks(l), 0);
    assert_int_equal(km_loop_free(l), 0);
}

static void test_leak_detected(void **state)
{
    (void)state;
    struct km_loop *l;
    assert_int_equal(km_loop_new(&l), 0);
    static uv_timer_t t; /* static: still valid when km_loop_free force-closes it */
    assert_int_equal(uv_timer_init(km_loop_uv(l), &t), 0);
    assert_int_equal(km_loop_leaks(l), 1);
    assert_int_equal(km_loop_free(l), -EBUSY);
    assert_int_equal(km_loop_free(NULL), 0);
}

static void test_idle_loop_ends(void **state)
{
    (void)state;
    struct km_loop *l;
    assert_int_equal(km_loop_new(&l), 0);
    struct sigs s = {0};
    /* Signal watchers alone do not keep the loop running. */
    assert_int_equal(km_loop_watch_signals(l, on_stop, NULL, &s), 0);
    assert_int_equal(km_loop_run(l), 0);
    assert_int_equal(km_loop_free(l), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signals),
        cmocka_unit_test(test_leak_detected),
        cmocka_unit_test(test_idle_loop_ends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
