/* The SSH transport and the mesh on a real loop over loopback: two nodes in one process.
 * Covers: dial + host key check + authentication, direct-tcpip streams in both directions
 * carrying data with half-close, policy refusals, a wrong host key, an unknown client key,
 * backpressure (a paused reader bounds the writer's queue), conn close ending streams, the
 * mesh dialer with a dead address, a write error reported from the loop (never from inside
 * write()), and a clean teardown (uv_loop_close == 0). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/log.h"
#include "proto/mesh.h"
#include "proto/ssh.h"

struct node {
    struct km_key *key;
    struct km_ssh_node *ssh;
    struct km_pubkey allowed; /* the one client key this node accepts */
    bool allow_any_port;
    int directs;            /* on_direct calls */
    int closed;             /* on_conn_closed calls */
    struct km_stream *last; /* last accepted stream (server side) */
};

static int authorize(void *arg, const struct km_pubkey *key, const char *user)
{
    struct node *n = arg;
    return km_pubkey_equal(key, &n->allowed) && strcmp(user, "keymesh") == 0 ? 0 : KM_ERR_REFUSED;
}

static int allow_direct(void *arg, const struct km_pubkey *peer, const struct km_ssh_grant *grant,
                        const char *host, uint16_t port)
{
    (void)peer;
    (void)grant;
    struct node *n = arg;
    return (strcmp(host, "localhost") == 0 && (n->allow_any_port || port == 7)) ? 0
                                                                                : KM_ERR_REFUSED;
}

/* Server side of a stream: an echo that upper-cases nothing, just echoes, and shuts down its
 * side when the client's EOF arrives. */
static void echo_data(struct km_stream *s, const uint8_t *d, size_t n)
{
    assert_int_equal(km_stream_write(s, d, n), 0);
}

static void echo_end(struct km_stream *s, int err)
{
    if (err == 0) {
        km_stream_shutdown(s);
    }
    km_stream_close(s);
}

static void on_direct(void *arg, const struct km_pubkey *peer, const char *host, uint16_t port,
                      struct km_ssh_direct *d)
{
    (void)peer;
    (void)host;
    struct node *n = arg;
    n->directs++;
    if (port == 5) {
        km_ssh_direct_reject(d, -ECONNREFUSED); /* as if nothing listened there */
        return;
    }
    struct km_stream *s;
    assert_int_equal(km_ssh_direct_accept(d, &s), 0);
    n->last = s;
    if (port == 7) {
        s->on_data = echo_data;
        s->on_end = echo_end;
        km_stream_read_start(s);
    }
    /* other ports: left unread (the backpressure test drives it) */
}

static void on_conn_closed(void *arg, struct km_ssh_conn *c, int err)
{
    (void)c;
    (void)err;
    struct node *n = arg;
    n->closed++;
}

static void node_init(uv_loop_t *loop, struct node *n, uint16_t port)
{
    memset(n, 0, sizeof *n);
    assert_int_equal(km_key_generate(&n->key), 0);
    struct km_ssh_opts o;
    km_ssh_opts_default(&o);
    o.connect_timeout_ms = 3000;
    struct km_ssh_hooks h = {.authorize = authorize,
                             .allow_direct = allow_direct,
                             .on_direct = on_direct,
                             .on_conn_closed = on_conn_closed,
                             .arg = n};
    assert_int_equal(km_ssh_node_new(loop, n->key, &o, &h, &n->ssh), 0);
    if (port != 0) {
        struct sockaddr_in sa;
        uv_ip4_addr("127.0.0.1", 0, &sa);
        assert_int_equal(km_ssh_node_listen(n->ssh, (struct sockaddr *)&sa), 0);
    }
}

/* ---- run the loop until a condition holds (bounded) ---- */

static void on_wake(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until cond holds or ms pass; a ticking timer bounds every blocking wait. */
static bool run_until(uv_loop_t *loop, bool (*cond)(void *), void *arg, unsigned ms)
{
    uv_timer_t wake;
    uv_timer_init(loop, &wake);
    uv_timer_start(&wake, on_wake, 100, 100);
    uint64_t end = uv_now(loop) + ms;
    bool ok = true;
    while (!cond(arg)) {
        if (uv_now(loop) > end) {
            ok = false;
            break;
        }
        uv_run(loop, UV_RUN_ONCE);
        uv_update_time(loop);
    }
    uv_close((uv_handle_t *)&wake, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

struct dial_result {
    bool done;
    int err;
    struct km_ssh_conn *conn;
};

static void on_ready(struct km_ssh_conn *c, int err, void *arg)
{
    struct dial_result *d = arg;
    d->done = true;
    d->err = err;
    d->conn = err == 0 ? c : NULL;
}

static bool dial_done(void *arg)
{
    return ((struct dial_result *)arg)->done;
}

static struct sockaddr_in listen_addr(struct node *n)
{
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", km_ssh_node_listen_port(n->ssh, 0), &sa);
    return sa;
}

/* ---- client side of a stream: send a payload, collect the echo ---- */

struct client {
    bool opened;
    int open_err;
    struct km_stream *s;
    uint8_t got[70000];
    size_t n_got;
    bool ended;
    int end_err;
};

static void cl_data(struct km_stream *s, const uint8_t *d, size_t n)
{
    struct client *c = s->data;
    assert_true(c->n_got + n <= sizeof c->got);
    memcpy(c->got + c->n_got, d, n);
    c->n_got += n;
}

static void cl_end(struct km_stream *s, int err)
{
    struct client *c = s->data;
    c->ended = true;
    c->end_err = err;
}

static void on_open(void *arg, int err, struct km_stream *s)
{
    struct client *c = arg;
    c->opened = true;
    c->open_err = err;
    c->s = s;
    if (s != NULL) {
        s->data = c;
        s->on_data = cl_data;
        s->on_end = cl_end;
        km_stream_read_start(s);
    }
}

static bool opened(void *arg)
{
    return ((struct client *)arg)->opened;
}

static bool ended(void *arg)
{
    return ((struct client *)arg)->ended;
}

static void teardown_nodes(uv_loop_t *loop, struct node *a, struct node *b)
{
    km_ssh_node_close(a->ssh);
    km_ssh_node_close(b->ssh);
    for (int i = 0; i < 200 && uv_run(loop, UV_RUN_NOWAIT) != 0; i++) {
        uv_sleep(5);
    }
    km_key_free(a->key);
    km_key_free(b->key);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_dial_stream_echo(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct node a, b;
    node_init(&loop, &a, 0);
    node_init(&loop, &b, 1);
    b.allowed = *km_key_pub(a.key);
    a.allowed = *km_key_pub(b.key);
    struct sockaddr_in sa = listen_addr(&b);
    struct dial_result d = {0};
    struct km_ssh_conn *c;
    assert_int_equal(
        km_ssh_dial(a.ssh, (struct sockaddr *)&sa, km_key_pub(b.key), "keymesh", on_ready, &d, &c),
        0);
    assert_true(run_until(&loop, dial_done, &d, 5000));
    assert_int_equal(d.err, 0);
    assert_true(km_ssh_conn_ready(c));
    assert_true(km_pubkey_equal(km_ssh_conn_peer(c), km_key_pub(b.key)));
    const char *cipher = km_ssh_conn_cipher(c);
    assert_true(strstr(cipher, "gcm") != NULL || strstr(cipher, "chacha20") != NULL);

    /* A stream to the echo port: 64 KiB out, the same back, then a clean end. */
    struct client cl = {0};
    struct km_ssh_open *req;
    assert_int_equal(km_ssh_open_direct(c, "localhost", 7, on_open, &cl, &req), 0);
    assert_false(cl.opened); /* never synchronous */
    assert_true(run_until(&loop, opened, &cl, 3000));
    assert_int_equal(cl.open_err, 0);
    static uint8_t payload[65536];
    for (size_t i = 0; i < sizeof payload; i++) {
        payload[i] = (uint8_t)(i * 13u);
    }
    assert_int_equal(km_stream_write(cl.s, payload, sizeof payload), 0);
    km_stream_shutdown(cl.s);
    assert_true(run_until(&loop, ended, &cl, 5000));
    assert_int_equal(cl.end_err, 0);
    assert_int_equal(cl.n_got, sizeof payload);
    assert_memory_equal(cl.got, payload, sizeof payload);
    assert_int_equal(km_stream_write(cl.s, payload, 1), KM_ERR_CLOSED);
    km_stream_close(cl.s);

    /* A port the policy does not expose: refused, and the server never saw a stream. */
    int before = b.directs;
    struct client refused = {0};
    assert_int_equal(km_ssh_open_direct(c, "localhost", 8, on_open, &refused, &req), 0);
    assert_true(run_until(&loop, opened, &refused, 3000));
    assert_int_equal(refused.open_err, KM_ERR_REFUSED);
    assert_null(refused.s);
    assert_int_equal(b.directs, before);

    /* Allowed, but the target refused: an open failure, not a stream that ends at once. */
    struct client closed_port = {0};
    assert_int_equal(km_ssh_open_direct(c, "localhost", 5, on_open, &closed_port, &req), 0);
    assert_true(run_until(&loop, opened, &closed_port, 3000));
    assert_int_not_equal(closed_port.open_err, 0);
    assert_null(closed_port.s);

    /* A cancelled open never calls back. */
    struct client cancelled = {0};
    assert_int_equal(km_ssh_open_direct(c, "localhost", 7, on_open, &cancelled, &req), 0);
    km_ssh_open_cancel(req);
    for (int i = 0; i < 50; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
    }
    assert_false(cancelled.opened);

    teardown_nodes(&loop, &a, &b);
}

static void test_wrong_host_key(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct node a, b;
    node_init(&loop, &a, 0);
    node_init(&loop, &b, 1);
    b.allowed = *km_key_pub(a.key);
    struct sockaddr_in sa = listen_addr(&b);
    /* Expect some other key at B's address: the handshake stops at the host key check. */
    struct km_key *other;
    assert_int_equal(km_key_generate(&other), 0);
    struct dial_result d = {0};
    struct km_ssh_conn *c;
    assert_int_equal(
        km_ssh_dial(a.ssh, (struct sockaddr *)&sa, km_key_pub(other), "keymesh", on_ready, &d, &c),
        0);
    assert_true(run_until(&loop, dial_done, &d, 5000));
    assert_int_equal(d.err, KM_ERR_HOST_KEY);
    km_key_free(other);
    teardown_nodes(&loop, &a, &b);
}

static void test_unknown_client_key(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct node a, b;
    node_init(&loop, &a, 0);
    node_init(&loop, &b, 1);
    /* b.allowed stays all-zero: A's key is not accepted. */
    struct sockaddr_in sa = listen_addr(&b);
    struct dial_result d = {0};
    struct km_ssh_conn *c;
    assert_int_equal(
        km_ssh_dial(a.ssh, (struct sockaddr *)&sa, km_key_pub(b.key), "keymesh", on_ready, &d, &c),
        0);
    assert_true(run_until(&loop, dial_done, &d, 5000));
    assert_int_equal(d.err, KM_ERR_AUTH);
    /* The right key but another user name is refused too. */
    b.allowed = *km_key_pub(a.key);
    struct dial_result d2 = {0};
    assert_int_equal(
        km_ssh_dial(a.ssh, (struct sockaddr *)&sa, km_key_pub(b.key), "root", on_ready, &d2, &c),
        0);
    assert_true(run_until(&loop, dial_done, &d2, 5000));
    assert_int_equal(d2.err, KM_ERR_AUTH);
    teardown_nodes(&loop, &a, &b);
}

static void test_connect_refused_and_cancel(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct node a, b;
    node_init(&loop, &a, 0);
    node_init(&loop, &b, 1);
    struct sockaddr_in sa = listen_addr(&b);
    km_ssh_node_close(b.ssh); /* nobody listens there any more */
    for (int i = 0; i < 20; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    b.ssh = NULL;
    struct dial_result d = {0};
    struct km_ssh_conn *c;
    assert_int_equal(
        km_ssh_dial(a.ssh, (struct sockaddr *)&sa, km_key_pub(b.key), "keymesh", on_ready, &d, &c),
        0);
    assert_true(run_until(&loop, dial_done, &d, 5000));
    assert_int_equal(d.err, -ECONNREFUSED);
    /* A dial closed by its caller never calls back. */
    struct dial_result d2 = {0};
    assert_int_equal(
        km_ssh_dial(a.ssh, (struct sockaddr *)&sa, km_key_pub(b.key), "keymesh", on_ready, &d2, &c),
        0);
    km_ssh_conn_close(c);
    for (int i = 0; i < 50; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_sleep(1);
    }
    assert_false(d2.done);
    teardown_nodes(&loop, &a, &b);
}

/* ---- backpressure: the server never reads; the client's queue stays bounded ---- */

struct bp {
    struct km_stream *s;
    bool drained;
    int writes_ok;
};

static void bp_drain(struct km_stream *s)
{
    struct bp *p = s->data;
    p->drained = true;
}

static void test_backpressure_and_close(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct node a, b;
    node_init(&loop, &a, 0);
    node_init(&loop, &b, 1);
    b.allowed = *km_key_pub(a.key);
    b.allow_any_port = true;
    struct sockaddr_in sa = listen_addr(&b);
    struct dial_result d = {0};
    struct km_ssh_conn *c;
    assert_int_equal(
        km_ssh_dial(a.ssh, (struct sockaddr *)&sa, km_key_pub(b.key), "keymesh", on_ready, &d, &c),
        0);
    assert_true(run_until(&loop, dial_done, &d, 5000));
    assert_int_equal(d.err, 0);
    struct client cl = {0};
    struct km_ssh_open *req;
    assert_int_equal(km_ssh_open_direct(c, "localhost", 9, on_open, &cl, &req), 0);
    assert_true(run_until(&loop, opened, &cl, 3000));
    assert_int_equal(cl.open_err, 0);
    struct bp p = {.s = cl.s};
    cl.s->data = &p;
    cl.s->on_drain = bp_drain;
    cl.s->on_data = NULL;
    cl.s->on_end = NULL;
    /* Write like a relay would: stop when the queue passes the high-water mark. The server
     * side never reads, so the peer's window closes after ~1-2 MiB and the queue must hold. */
    static uint8_t chunk[65536];
    for (int round = 0; round < 400; round++) {
        while (km_stream_write_queue(cl.s) <= KM_STREAM_HIGH_WATER) {
            assert_int_equal(km_stream_write(cl.s, chunk, sizeof chunk), 0);
            p.writes_ok++;
        }
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    /* Bounded: the peer's window (~1.3-2 MiB) plus our high-water mark and one chunk. */
    assert_true((size_t)p.writes_ok * sizeof chunk < (8u << 20));
    assert_true(km_stream_write_queue(cl.s) <= KM_STREAM_HIGH_WATER + sizeof chunk);
    /* Now the server reads: the queue drains and on_drain fires. */
    assert_non_null(b.last);
    b.last->on_data = NULL;
    km_stream_read_start(b.last);
    for (int i = 0; i < 2000 && !p.drained; i++) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    assert_true(p.drained);
    km_stream_close(b.last); /* the server's stream is ours to close */
    /* Closing the connection ends the remaining streams with KM_ERR_CLOSED. */
    struct client cl2 = {0};
    assert_int_equal(km_ssh_open_direct(c, "localhost", 7, on_open, &cl2, &req), 0);
    assert_true(run_until(&loop, opened, &cl2, 3000));
    km_ssh_conn_close(c);
    assert_true(run_until(&loop, ended, &cl2, 3000));
    assert_int_equal(cl2.end_err, KM_ERR_CLOSED);
    km_stream_close(cl2.s);
    km_stream_close(cl.s);
    teardown_nodes(&loop, &a, &b);
}

/* ---- a write that fails in libssh reports later, never from inside write() ---- */

struct sync_end {
    bool in_write;
    bool ended;
    bool ended_inside; /* on_end fired from inside km_stream_write: the contract broken */
    int err;
};

static void se_end(struct km_stream *s, int err)
{
    struct sync_end *e = s->data;
    e->ended_inside = e->ended_inside || e->in_write;
    e->ended = true;
    e->err = err;
}

static bool se_ended(void *arg)
{
    return ((struct sync_end *)arg)->ended;
}

static void test_write_error_is_deferred(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct node a, b;
    node_init(&loop, &a, 0);
    node_init(&loop, &b, 0);
    b.allowed = *km_key_pub(a.key);
    b.allow_any_port = true;
    /* Over a socketpair, so the test can break the transport under the session: a relayed
     * session runs the same way. */
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    int breaker = dup(sv[1]);
    assert_true(breaker >= 0);
    assert_int_equal(km_ssh_accept_fd(b.ssh, sv[1], "socketpair"), 0);
    struct dial_result d = {0};
    struct km_ssh_conn *c;
    assert_int_equal(
        km_ssh_dial_fd(a.ssh, sv[0], "socketpair", km_key_pub(b.key), "keymesh", on_ready, &d, &c),
        0);
    assert_true(run_until(&loop, dial_done, &d, 5000));
    assert_int_equal(d.err, 0);
    uint32_t rtt = 1;
    assert_int_equal(km_ssh_conn_rtt_us(c, &rtt), KM_ERR_UNSUPPORTED); /* not TCP */
    assert_int_equal(rtt, 0);
    struct client cl = {0};
    struct km_ssh_open *req;
    assert_int_equal(km_ssh_open_direct(c, "localhost", 9, on_open, &cl, &req), 0);
    assert_true(run_until(&loop, opened, &cl, 3000));
    assert_int_equal(cl.open_err, 0);
    struct sync_end e = {0};
    cl.s->data = &e;
    cl.s->on_data = NULL;
    cl.s->on_end = se_end;
    /* The far end goes away without a word; no loop turn lets the session notice. The next
     * writes reach libssh (the window is open) and fail there. */
    assert_int_equal(shutdown(breaker, SHUT_RDWR), 0);
    static uint8_t chunk[4096];
    int rc = 0;
    for (int i = 0; i < 64 && rc == 0; i++) {
        e.in_write = true;
        rc = km_stream_write(cl.s, chunk, sizeof chunk);
        e.in_write = false;
    }
    assert_false(e.ended_inside);
    assert_int_not_equal(rc, 0); /* a broken stream refuses more bytes */
    assert_false(e.ended);       /* ... and reports it from the loop */
    assert_true(run_until(&loop, se_ended, &e, 3000));
    assert_int_not_equal(e.err, 0);
    km_stream_close(cl.s);
    if (b.last != NULL) {
        km_stream_close(b.last);
    }
    close(breaker);
    teardown_nodes(&loop, &a, &b);
}

/* ---- a dialled TCP socket handed over (a punched connection) is tuned like a dial and
 * reports its RTT ---- */

static void test_dial_fd_tunes_tcp(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct node a, b;
    node_init(&loop, &a, 0);
    node_init(&loop, &b, 0);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &sl), 0);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    int peer = accept(l, NULL, NULL);
    assert_true(peer >= 0);
    int probe = dup(fd); /* the same socket, to read its options after the hand-over */
    struct dial_result d = {0};
    struct km_ssh_conn *c;
    assert_int_equal(
        km_ssh_dial_fd(a.ssh, fd, "punched", km_key_pub(b.key), "keymesh", on_ready, &d, &c), 0);
    int v = 0;
    socklen_t vl = sizeof v;
    assert_int_equal(getsockopt(probe, IPPROTO_TCP, TCP_NODELAY, &v, &vl), 0);
    assert_int_equal(v, 1);
    v = 0;
    assert_int_equal(getsockopt(probe, SOL_SOCKET, SO_KEEPALIVE, &v, &vl), 0);
    assert_int_equal(v, 1);
    /* The handshake gave the kernel its first RTT sample: loopback, well under a second
     * (qemu-user, in the arm64 run, has no TCP_INFO to give: UNSUPPORTED). */
    uint32_t rtt = 0;
    int r = km_ssh_conn_rtt_us(c, &rtt);
    if (r != KM_ERR_UNSUPPORTED) {
        assert_int_equal(r, 0);
        assert_true(rtt > 0 && rtt < 1000000);
    }
    km_ssh_conn_close(c); /* closed by its caller: no callback */
    for (int i = 0; i < 20; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    assert_false(d.done);
    close(probe);
    close(peer);
    close(l);
    teardown_nodes(&loop, &a, &b);
}

/* ---- the mesh dialer: a dead address first, then the live one ---- */

struct lookup {
    struct sockaddr_in dead;
    struct sockaddr_in live;
};

static int lookup(void *arg, const struct km_pubkey *peer, struct km_mesh_target *out)
{
    (void)peer;
    struct lookup *l = arg;
    memset(out, 0, sizeof *out);
    memcpy(&out->addrs[0], &l->dead, sizeof l->dead);
    memcpy(&out->addrs[1], &l->live, sizeof l->live);
    out->n_addrs = 2;
    return 0;
}

static void test_mesh_dials_next_address(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct node a, b, gone;
    node_init(&loop, &a, 0);
    node_init(&loop, &b, 1);
    node_init(&loop, &gone, 1);
    b.allowed = *km_key_pub(a.key);
    struct lookup l = {.dead = listen_addr(&gone), .live = listen_addr(&b)};
    km_ssh_node_close(gone.ssh);
    km_key_free(gone.key);
    struct km_mesh_opts mo;
    km_mesh_opts_default(&mo);
    struct km_mesh *m;
    assert_int_equal(km_mesh_new(&loop, a.ssh, &mo, lookup, &l, &m), 0);
    struct client cl = {0};
    struct km_mesh_req *req;
    assert_int_equal(km_mesh_open(m, km_key_pub(b.key), "localhost", 7, on_open, &cl, &req), 0);
    assert_true(run_until(&loop, opened, &cl, 5000));
    assert_int_equal(cl.open_err, 0);
    /* A second stream reuses the same connection. */
    struct client cl2 = {0};
    assert_int_equal(km_mesh_open(m, km_key_pub(b.key), "localhost", 7, on_open, &cl2, &req), 0);
    assert_true(run_until(&loop, opened, &cl2, 5000));
    assert_int_equal(cl2.open_err, 0);
    assert_int_equal(km_ssh_node_sessions(a.ssh), 1);
    km_stream_close(cl.s);
    km_stream_close(cl2.s);
    km_mesh_close(m);
    teardown_nodes(&loop, &a, &b);
}

/* ---- happy eyeballs: a first address that never answers does not hold the dial up ---- */

static void on_silent_conn(uv_stream_t *l, int status)
{
    (void)status;
    /* Accept and say nothing: an SSH handshake here hangs until the connect timeout. */
    uv_tcp_t *c = malloc(sizeof *c);
    uv_tcp_init(l->loop, c);
    if (uv_accept(l, (uv_stream_t *)c) != 0) {
        uv_close((uv_handle_t *)c, (uv_close_cb)free);
        return;
    }
    c->data = l->data;
    uv_tcp_t **slot = l->data;
    *slot = c;
}

static void test_mesh_races_a_silent_address(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct node a, b;
    node_init(&loop, &a, 0);
    node_init(&loop, &b, 1);
    b.allowed = *km_key_pub(a.key);
    uv_tcp_t silent;
    uv_tcp_t *accepted = NULL;
    assert_int_equal(uv_tcp_init(&loop, &silent), 0);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_bind(&silent, (struct sockaddr *)&sa, 0), 0);
    silent.data = &accepted;
    assert_int_equal(uv_listen((uv_stream_t *)&silent, 4, on_silent_conn), 0);
    int len = sizeof sa;
    assert_int_equal(uv_tcp_getsockname(&silent, (struct sockaddr *)&sa, &len), 0);
    struct lookup l = {.dead = sa, .live = listen_addr(&b)};
    struct km_mesh_opts mo;
    km_mesh_opts_default(&mo);
    struct km_mesh *m;
    assert_int_equal(km_mesh_new(&loop, a.ssh, &mo, lookup, &l, &m), 0);
    struct client cl = {0};
    struct km_mesh_req *req;
    uint64_t t0 = uv_now(&loop);
    assert_int_equal(km_mesh_open(m, km_key_pub(b.key), "localhost", 7, on_open, &cl, &req), 0);
    assert_true(run_until(&loop, opened, &cl, 2500));
    assert_int_equal(cl.open_err, 0);
    /* Well before the 3 s connect timeout of the silent address: the stagger raced the next. */
    assert_true(uv_now(&loop) - t0 < 2000);
    km_stream_close(cl.s);
    km_mesh_close(m);
    if (accepted != NULL) {
        uv_close((uv_handle_t *)accepted, (uv_close_cb)free);
    }
    uv_close((uv_handle_t *)&silent, NULL);
    teardown_nodes(&loop, &a, &b);
}

int main(void)
{
    km_log_set_level(KM_LOG_OFF);
    signal(SIGPIPE, SIG_IGN); /* as the daemon's loop does: a broken transport is an error */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dial_stream_echo),
        cmocka_unit_test(test_wrong_host_key),
        cmocka_unit_test(test_unknown_client_key),
        cmocka_unit_test(test_connect_refused_and_cancel),
        cmocka_unit_test(test_backpressure_and_close),
        cmocka_unit_test(test_write_error_is_deferred),
        cmocka_unit_test(test_dial_fd_tunes_tcp),
        cmocka_unit_test(test_mesh_dials_next_address),
        cmocka_unit_test(test_mesh_races_a_silent_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
