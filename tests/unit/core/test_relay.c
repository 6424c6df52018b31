/* km_uvstream and km_relay on a real loop over loopback TCP: a client pushes 16 MiB through
 * a relaying proxy to an echo server and reads it back while writing (so backpressure is
 * exercised both ways); a server's reset reaches the client as a reset, not an EOF; connect
 * errors are reported; every handle is closed at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/relay.h"
#include "core/uvstream.h"

#define TOTAL (16u << 20)

struct fix {
    uv_loop_t loop;
    uv_tcp_t *echo_l;
    uv_tcp_t *proxy_l;
    int echo_port;
    int proxy_port;
    uv_poll_t done;
    int result_fd;
    int relays_done;
    int relay_err;
    uint64_t relay_bytes;
    int client_ok;
};

/* ---- echo server: each accepted stream writes back what it reads ---- */

/* test_relay_abort: the server aborts its stream at the first bytes instead of echoing. */
static bool g_server_aborts;

static void echo_data(struct km_stream *s, const uint8_t *d, size_t n)
{
    if (g_server_aborts) {
        km_stream_abort(s);
        return;
    }
    assert_int_equal(km_stream_write(s, d, n), 0);
    if (km_stream_write_queue(s) > KM_STREAM_HIGH_WATER) {
        km_stream_read_stop(s);
    }
}

static void echo_drain(struct km_stream *s)
{
    km_stream_read_start(s);
}

static void echo_end(struct km_stream *s, int err)
{
    if (err == 0) {
        km_stream_shutdown(s);
    }
    km_stream_close(s);
}

static void on_echo_conn(uv_stream_t *l, int status)
{
    assert_int_equal(status, 0);
    struct km_stream *s;
    assert_int_equal(km_uvstream_accept(l, &s), 0);
    s->on_data = echo_data;
    s->on_drain = echo_drain;
    s->on_end = echo_end;
    km_stream_read_start(s);
}

/* ---- proxy: accept, connect upstream, relay ---- */

static void relay_done(void *arg, int err, uint64_t ab, uint64_t ba)
{
    struct fix *f = arg;
    f->relays_done++;
    f->relay_err = err;
    f->relay_bytes = ab + ba;
}

static void on_upstream(struct km_stream *up, int err, void *arg)
{
    struct km_stream *client = arg;
    assert_int_equal(err, 0);
    struct fix *f = client->data;
    static const uint8_t hello[] = "HELLO";
    /* The pending bytes stand in for what a proxy read past its request header. */
    assert_int_equal(km_relay_start(client, up, hello, 5, relay_done, f), 0);
}

static void on_proxy_conn(uv_stream_t *l, int status)
{
    assert_int_equal(status, 0);
    struct fix *f = l->data;
    struct km_stream *client;
    assert_int_equal(km_uvstream_accept(l, &client), 0);
    client->data = f;
    struct sockaddr_in up;
    uv_ip4_addr("127.0.0.1", f->echo_port, &up);
    struct km_stream *s;
    assert_int_equal(
        km_uvstream_connect(l->loop, (struct sockaddr *)&up, 2000, on_upstream, client, &s), 0);
}

/* ---- client: a child process (threads misbehave under qemu-user), one poll loop that
 * writes the pattern and reads the echo at the same time ---- */

static int run_client(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        return 0;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    static uint8_t chunk[65536];
    uint8_t buf[65536];
    size_t sent = 0;
    size_t got = 0;
    bool shut = false;
    /* Bounded: 30 s of polling at most. */
    for (int rounds = 0; rounds < 30000; rounds++) {
        struct pollfd p = {.fd = fd, .events = POLLIN | (sent < TOTAL ? POLLOUT : 0)};
        if (poll(&p, 1, 1000) < 0) {
            return 0;
        }
        if ((p.revents & POLLOUT) && sent < TOTAL) {
            size_t n = TOTAL - sent < sizeof chunk ? TOTAL - sent : sizeof chunk;
            for (size_t i = 0; i < n; i++) {
                chunk[i] = (uint8_t)((sent + i) * 7u);
            }
            ssize_t w = send(fd, chunk, n, MSG_NOSIGNAL);
            if (w > 0) {
                sent += (size_t)w;
            }
        }
        if (sent == TOTAL && !shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        if (p.revents & (POLLIN | POLLHUP)) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n == 0) {
                break;
            }
            for (ssize_t i = 0; i < n; i++, got++) {
                uint8_t want = got < 5 ? (uint8_t) "HELLO"[got] : (uint8_t)((got - 5) * 7u);
                if (buf[i] != want) {
                    return 0;
                }
            }
        }
    }
    close(fd);
    return got == TOTAL + 5;
}

/* The client of test_relay_abort: write a byte and read; the reset must come back as an
 * error (a clean EOF would let a cut transfer pass for a whole one). The proxy sends HELLO
 * upstream as soon as it connects, so the reset may already be there for the write. */
static int run_abort_client(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 20};
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
        return 0;
    }
    ssize_t n = send(fd, "x", 1, MSG_NOSIGNAL);
    if (n == 1) {
        uint8_t buf[64];
        n = recv(fd, buf, sizeof buf, 0);
    }
    int e = errno;
    close(fd);
    return n < 0 && (e == ECONNRESET || e == EPIPE);
}

static void on_child_done(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    struct fix *f = h->data;
    uint8_t ok = 0;
    f->client_ok = read(f->result_fd, &ok, 1) == 1 && ok == 1;
    uv_close((uv_handle_t *)h, NULL);
    km_uvstream_listener_close(f->proxy_l);
    km_uvstream_listener_close(f->echo_l);
}

static int port_of(uv_tcp_t *t)
{
    struct sockaddr_in sa;
    int len = sizeof sa;
    assert_int_equal(uv_tcp_getsockname(t, (struct sockaddr *)&sa, &len), 0);
    return ntohs(sa.sin_port);
}

/* Listeners, then a child process running client(port of the proxy); runs the loop until
 * the child reported, and returns its verdict. */
static void run_with_client(struct fix *f, int (*client)(int port))
{
    assert_int_equal(uv_loop_init(&f->loop), 0);
    struct sockaddr_in any;
    uv_ip4_addr("127.0.0.1", 0, &any);
    assert_int_equal(
        km_uvstream_listen_tcp(&f->loop, (struct sockaddr *)&any, 16, on_echo_conn, f, &f->echo_l),
        0);
    assert_int_equal(km_uvstream_listen_tcp(&f->loop, (struct sockaddr *)&any, 16, on_proxy_conn, f,
                                            &f->proxy_l),
                     0);
    f->echo_port = port_of(f->echo_l);
    f->proxy_port = port_of(f->proxy_l);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        uint8_t ok = (uint8_t)client(f->proxy_port);
        _exit(write(pfd[1], &ok, 1) == 1 ? 0 : 1);
    }
    close(pfd[1]);
    f->result_fd = pfd[0];
    assert_int_equal(uv_poll_init(&f->loop, &f->done, pfd[0]), 0);
    f->done.data = f;
    assert_int_equal(uv_poll_start(&f->done, UV_READABLE, on_child_done), 0);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    int wst;
    assert_int_equal(waitpid(child, &wst, 0), child);
    close(pfd[0]);
}

static void test_relay_abort(void **state)
{
    (void)state;
    struct fix f = {0};
    g_server_aborts = true;
    run_with_client(&f, run_abort_client);
    g_server_aborts = false;
    assert_true(f.client_ok);
    assert_int_equal(f.relays_done, 1);
    assert_true(f.relay_err < 0); /* the server's reset ended the relay */
    assert_int_equal(uv_loop_close(&f.loop), 0);
}

static void test_relay_bulk(void **state)
{
    (void)state;
    struct fix f = {0};
    run_with_client(&f, run_client);
    assert_true(f.client_ok);
    assert_int_equal(f.relays_done, 1);
    assert_int_equal(f.relay_err, 0);
    /* HELLO goes to the echo server and comes back: counted each way. */
    assert_true(f.relay_bytes == 2ull * TOTAL + 10);
    assert_int_equal(uv_loop_close(&f.loop), 0);
}

/* ---- connect errors ---- */

static int connect_result;

static void on_refused(struct km_stream *s, int err, void *arg)
{
    (void)s;
    (void)arg;
    connect_result = err;
}

static void test_connect_refused(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    /* Find a port nobody listens on: bind, read it, close. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    struct km_stream *s;
    connect_result = 1;
    assert_int_equal(km_uvstream_connect(&loop, (struct sockaddr *)&sa, 2000, on_refused, NULL, &s),
                     0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(connect_result, UV_ECONNREFUSED);
    /* A connect closed before it completes never calls back. */
    connect_result = 1;
    assert_int_equal(km_uvstream_connect(&loop, (struct sockaddr *)&sa, 2000, on_refused, NULL, &s),
                     0);
    km_stream_close(s);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(connect_result, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relay_bulk),
        cmocka_unit_test(test_relay_abort),
        cmocka_unit_test(test_connect_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
