/* Hole punching: the gateway's hold of a PUNCH frame (a table), bad arguments, and a punch to
 * a port nobody listens on, run on a real loop: refused attempts retried through the window,
 * then given up with everything freed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/daemon/punch.h"

static void test_hold_table(void **state)
{
    (void)state;
    static const struct {
        uint64_t self_us, other_us, want_ms;
    } t[] = {
        {1000, 21000, 20}, /* the nearer node waits the difference */
        {21000, 1000, 0},  /* the farther one goes at once */
        {5000, 5000, 0},   /* as far as each other */
        {0, 21000, 0},     /* own time unknown */
        {21000, 0, 0},     /* the other's unknown */
        {0, 0, 0},
        {1000, 1499, 0}, /* rounded to the millisecond */
        {1000, 1500, 1},
        {1000, 1000 + 999499, 999}, /* just under the cap */
        {1000, 1000 + 999500, 1000},
        {1000, 1000 + 1000000, KM_PUNCH_HOLD_MAX_MS},
        {1, UINT64_MAX, KM_PUNCH_HOLD_MAX_MS}, /* no overflow */
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        assert_int_equal(km_punch_hold_ms(t[i].self_us, t[i].other_us), t[i].want_ms);
    }
}

/* 127.0.0.1:port. */
static struct sockaddr_in loopback(uint16_t port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void test_bad_arguments(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_punches ps = {0};
    struct km_pubkey peer;
    memset(&peer, 7, sizeof peer);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    assert_int_equal(
        km_punch_start(&ps, &loop, NULL, NULL, &peer, (struct sockaddr *)&un, 15022, true),
        KM_ERR_INVALID);
    struct sockaddr_in in = loopback(9);
    assert_int_equal(km_punch_start(&ps, &loop, NULL, NULL, &peer, (struct sockaddr *)&in, 0, true),
                     KM_ERR_INVALID);
    assert_null(ps.head);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A free TCP port on loopback (bound, read, released). */
static uint16_t free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    struct sockaddr_in a = loopback(0);
    socklen_t l = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &l), 0);
    close(s);
    return ntohs(a.sin_port);
}

/* Nobody listens at the punch address: every attempt is refused and retried until the window
 * ends; then the punch is gone and the loop has nothing left. No SSH node or mesh is needed,
 * since no attempt connects. A second start for the same peer meanwhile is left alone. */
static void test_refused_until_the_window_ends(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_punches ps = {0};
    struct km_pubkey peer;
    memset(&peer, 7, sizeof peer);
    struct sockaddr_in to = loopback(free_port());
    uint16_t from = free_port();
    uint64_t t0 = uv_now(&loop);
    assert_int_equal(
        km_punch_start(&ps, &loop, NULL, NULL, &peer, (struct sockaddr *)&to, from, true), 0);
    assert_non_null(ps.head);
    struct km_punch *first = ps.head;
    assert_int_equal(
        km_punch_start(&ps, &loop, NULL, NULL, &peer, (struct sockaddr *)&to, from, false), 0);
    assert_ptr_equal(ps.head, first);
    /* The window is 3 s; the loop ends once the punch has given up and closed its handles. */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    uv_update_time(&loop);
    uint64_t took = uv_now(&loop) - t0;
    assert_null(ps.head);
    assert_true(took >= KM_PUNCH_WINDOW_MS - 200u && took < KM_PUNCH_WINDOW_MS + 2000u);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Stopped while its attempts go on: freed at once, the loop closes. */
static void test_stop_all(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_punches ps = {0};
    struct km_pubkey a, b;
    memset(&a, 1, sizeof a);
    memset(&b, 2, sizeof b);
    struct sockaddr_in to = loopback(free_port());
    assert_int_equal(
        km_punch_start(&ps, &loop, NULL, NULL, &a, (struct sockaddr *)&to, free_port(), true), 0);
    assert_int_equal(
        km_punch_start(&ps, &loop, NULL, NULL, &b, (struct sockaddr *)&to, free_port(), false), 0);
    for (int i = 0; i < 3; i++) {
        (void)uv_run(&loop, UV_RUN_NOWAIT);
    }
    km_punch_stop_all(&ps);
    assert_null(ps.head);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hold_table),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_refused_until_the_window_ends),
        cmocka_unit_test(test_stop_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
