#include "core/uvstream.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/addr.h"
#include "core/log.h"

/* How long close() after shutdown() waits for queued bytes to reach the kernel. */
#define LINGER_MS 10000

struct uvs {
    struct km_stream s; /* first: a struct km_stream * is a struct uvs * */
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } in;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tcp_t tcp;
    } out_h;
    uv_stream_t *out; /* &in.stream, or &out_h.stream for a separate write descriptor */
    uv_connect_t conn;
    uv_timer_t timer; /* connect timeout, then linger on close */
    uv_shutdown_t shut;
    km_uvstream_connect_cb connect_cb;
    void *connect_arg;
    size_t queued;
    unsigned pending_closes;
    bool has_timer;
    bool connecting;
    bool reading;
    bool ended;
    bool above_high;
    bool shut_requested;
    bool shut_done;
    bool closing;
    bool released;
    bool reset; /* abort: close the TCP socket with RST */
    char desc[96];
};

struct wreq {
    uv_write_t req;
    struct uvs *u;
    size_t len;
    uint8_t data[];
};

/* Reads are delivered synchronously to on_data, which copies what it keeps, so one buffer
 * serves every stream of the (single-threaded) loop: no per-stream read memory. */
static char read_slab[64 * 1024];

/* Bytes accepted by write() and not yet written, over every stream (status output). */
static size_t g_queued;

static void deliver_end(struct uvs *u, int err)
{
    if (u->ended || u->closing) {
        return;
    }
    u->ended = true;
    if (u->s.on_end != NULL) {
        u->s.on_end(&u->s, err);
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    struct uvs *u = h->data;
    if (--u->pending_closes == 0) {
        free(u);
    }
}

static void close_handle(struct uvs *u, uv_handle_t *h)
{
    if (h->type != UV_UNKNOWN_HANDLE && !uv_is_closing(h)) {
        u->pending_closes++;
        uv_close(h, on_handle_closed);
    }
}

/* Close every handle; the struct is freed by the last close callback. */
static void release(struct uvs *u)
{
    if (u->released) {
        return;
    }
    u->released = true;
    u->closing = true;
    u->pending_closes++; /* guard: nothing frees u before this function returns */
    /* A reset is refused once a shutdown was requested: a plain close then. */
    if (u->reset && u->in.handle.type == UV_TCP && !u->shut_requested &&
        !uv_is_closing(&u->in.handle) && uv_tcp_close_reset(&u->in.tcp, on_handle_closed) == 0) {
        u->pending_closes++;
    } else {
        close_handle(u, &u->in.handle);
    }
    if (u->out != &u->in.stream) {
        close_handle(u, &u->out_h.handle);
    }
    if (u->has_timer) {
        close_handle(u, (uv_handle_t *)&u->timer);
    }
    if (--u->pending_closes == 0) {
        free(u);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    b->base = read_slab;
    b->len = sizeof read_slab;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct uvs *u = st->data;
    if (u->closing || nread == 0) {
        return;
    }
    if (nread > 0) {
        if (u->s.on_data != NULL) {
            u->s.on_data(&u->s, (const uint8_t *)b->base, (size_t)nread);
        }
        return;
    }
    uv_read_stop(st);
    u->reading = false;
    deliver_end(u, nread == UV_EOF ? 0 : (int)nread);
}

static void on_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct uvs *u = r->u;
    u->queued -= r->len;
    g_queued -= r->len;
    free(r);
    if (u->closing) {
        return;
    }
    if (status < 0) {
        deliver_end(u, status);
        return;
    }
    if (u->above_high && u->queued <= KM_STREAM_LOW_WATER) {
        u->above_high = false;
        if (u->s.on_drain != NULL) {
            u->s.on_drain(&u->s);
        }
    }
}

static int op_write(struct km_stream *s, const uint8_t *data, size_t len)
{
    struct uvs *u = (struct uvs *)s;
    if (u->closing || u->shut_requested || u->connecting) {
        return KM_ERR_CLOSED;
    }
    if (len == 0) {
        return 0;
    }
    if (len > UINT32_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    struct wreq *r = malloc(sizeof *r + len);
    if (r == NULL) {
        return -ENOMEM;
    }
    r->u = u;
    r->len = len;
    memcpy(r->data, data, len);
    uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)len);
    int rc = uv_write(&r->req, u->out, &b, 1, on_written);
    if (rc != 0) {
        free(r);
        return rc;
    }
    u->queued += len;
    g_queued += len;
    if (u->queued > KM_STREAM_HIGH_WATER) {
        u->above_high = true;
    }
    return 0;
}

static size_t op_write_queue(const struct km_stream *s)
{
    return ((const struct uvs *)s)->queued;
}

static void op_read_start(struct km_stream *s)
{
    struct uvs *u = (struct uvs *)s;
    if (u->closing || u->reading || u->ended || u->connecting) {
        return;
    }
    int rc = uv_read_start(&u->in.stream, on_alloc, on_read);
    if (rc == 0) {
        u->reading = true;
    } else {
        KM_DEBUG_R(rc, "%s: read_start", u->desc);
    }
}

static void op_read_stop(struct km_stream *s)
{
    struct uvs *u = (struct uvs *)s;
    if (u->reading && !u->closing) {
        uv_read_stop(&u->in.stream);
        u->reading = false;
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct uvs *u = req->data;
    u->shut_done = true;
    if (u->closing) {
        /* close() was waiting for the EOF to go out. */
        release(u);
        return;
    }
    if (status < 0 && status != UV_ECANCELED) {
        deliver_end(u, status);
    }
}

static void op_shutdown(struct km_stream *s)
{
    struct uvs *u = (struct uvs *)s;
    if (u->closing || u->shut_requested || u->connecting) {
        return;
    }
    u->shut_requested = true;
    u->shut.data = u;
    int rc = uv_shutdown(&u->shut, u->out, on_shutdown);
    if (rc != 0) {
        u->shut_done = true; /* nothing pending: e.g. the socket is already gone */
    }
}

static void on_linger_timeout(uv_timer_t *t)
{
    struct uvs *u = t->data;
    KM_DEBUG("%s: linger timeout, dropping %zu queued bytes", u->desc, u->queued);
    release(u);
}

/* The start of close and abort: no more callbacks. False if the stream is closing already. */
static bool begin_close(struct uvs *u)
{
    if (u->closing) {
        return false;
    }
    u->closing = true;
    if (u->reading) {
        uv_read_stop(&u->in.stream);
        u->reading = false;
    }
    return true;
}

static void op_close(struct km_stream *s)
{
    struct uvs *u = (struct uvs *)s;
    if (!begin_close(u)) {
        return;
    }
    if (u->shut_requested && !u->shut_done && u->has_timer) {
        /* Let the queued bytes and the EOF go out, bounded by the linger time. */
        uv_timer_stop(&u->timer);
        u->timer.data = u;
        if (uv_timer_start(&u->timer, on_linger_timeout, LINGER_MS, 0) == 0) {
            return;
        }
    }
    release(u);
}

static void op_abort(struct km_stream *s)
{
    struct uvs *u = (struct uvs *)s;
    if (!begin_close(u)) {
        return;
    }
    u->reset = true;
    release(u);
}

static const char *op_describe(const struct km_stream *s)
{
    return ((const struct uvs *)s)->desc;
}

static const struct km_stream_ops uvs_ops = {
    .write = op_write,
    .write_queue = op_write_queue,
    .read_start = op_read_start,
    .read_stop = op_read_stop,
    .shutdown = op_shutdown,
    .close = op_close,
    .abort = op_abort,
    .describe = op_describe,
};

static struct uvs *uvs_new(void)
{
    struct uvs *u = calloc(1, sizeof *u);
    if (u == NULL) {
        return NULL;
    }
    u->s.ops = &uvs_ops;
    u->out = &u->in.stream;
    u->in.handle.data = u;
    u->out_h.handle.data = u;
    return u;
}

static int init_timer(uv_loop_t *loop, struct uvs *u)
{
    int rc = uv_timer_init(loop, &u->timer);
    if (rc == 0) {
        u->has_timer = true;
        u->timer.data = u;
    }
    return rc;
}

static void describe_addr(char *out, size_t outsz, const char *kind, const struct sockaddr *sa)
{
    char a[KM_ADDR_STRLEN];
    snprintf(out, outsz, "%s %s", kind, km_addr_str(sa, a, sizeof a));
}

int km_uvstream_accept(uv_stream_t *listener, struct km_stream **out)
{
    *out = NULL;
    struct uvs *u = uvs_new();
    if (u == NULL) {
        return -ENOMEM;
    }
    int rc;
    bool tcp = listener->type == UV_TCP;
    if (tcp) {
        rc = uv_tcp_init(listener->loop, &u->in.tcp);
    } else {
        rc = uv_pipe_init(listener->loop, &u->in.pipe, 0);
    }
    if (rc != 0) {
        free(u);
        return rc;
    }
    u->in.handle.data = u;
    if ((rc = init_timer(listener->loop, u)) != 0 ||
        (rc = uv_accept(listener, &u->in.stream)) != 0) {
        release(u);
        return rc;
    }
    if (tcp) {
        (void)uv_tcp_nodelay(&u->in.tcp, 1);
        struct sockaddr_storage ss;
        int len = sizeof ss;
        if (uv_tcp_getpeername(&u->in.tcp, (struct sockaddr *)&ss, &len) == 0) {
            describe_addr(u->desc, sizeof u->desc, "tcp", (struct sockaddr *)&ss);
        } else {
            snprintf(u->desc, sizeof u->desc, "tcp ?");
        }
    } else {
        snprintf(u->desc, sizeof u->desc, "unix");
    }
    *out = &u->s;
    return 0;
}

static void on_connect_timeout(uv_timer_t *t)
{
    struct uvs *u = t->data;
    if (!u->connecting || u->closing) {
        return;
    }
    u->connecting = false;
    km_uvstream_connect_cb cb = u->connect_cb;
    void *arg = u->connect_arg;
    release(u); /* cancels the connect; its callback sees closing and returns */
    cb(&u->s, -ETIMEDOUT, arg);
}

static void on_connected(uv_connect_t *c, int status)
{
    struct uvs *u = c->data;
    if (u->closing || !u->connecting) {
        return;
    }
    u->connecting = false;
    if (u->has_timer) {
        uv_timer_stop(&u->timer);
    }
    if (status < 0) {
        release(u);
        u->connect_cb(&u->s, status, u->connect_arg);
        return;
    }
    u->connect_cb(&u->s, 0, u->connect_arg);
}

int km_uvstream_connect(uv_loop_t *loop, const struct sockaddr *addr, unsigned timeout_ms,
                        km_uvstream_connect_cb cb, void *arg, struct km_stream **out)
{
    *out = NULL;
    struct uvs *u = uvs_new();
    if (u == NULL) {
        return -ENOMEM;
    }
    int rc = uv_tcp_init(loop, &u->in.tcp);
    if (rc != 0) {
        free(u);
        return rc;
    }
    u->in.handle.data = u;
    if ((rc = init_timer(loop, u)) != 0) {
        release(u);
        return rc;
    }
    describe_addr(u->desc, sizeof u->desc, "tcp", addr);
    (void)uv_tcp_nodelay(&u->in.tcp, 1);
    u->connect_cb = cb;
    u->connect_arg = arg;
    u->conn.data = u;
    if ((rc = uv_tcp_connect(&u->conn, &u->in.tcp, addr, on_connected)) != 0) {
        release(u);
        return rc;
    }
    u->connecting = true;
    if (timeout_ms > 0) {
        (void)uv_timer_start(&u->timer, on_connect_timeout, timeout_ms, 0);
    }
    *out = &u->s;
    return 0;
}

/* Open fd as a libuv stream of the right kind into h. */
static int open_fd(uv_loop_t *loop, int fd, uv_handle_t *h, struct uvs *u)
{
    int rc;
    switch (uv_guess_handle(fd)) {
    case UV_TCP:
        if ((rc = uv_tcp_init(loop, (uv_tcp_t *)h)) == 0) {
            h->data = u;
            rc = uv_tcp_open((uv_tcp_t *)h, fd);
        }
        return rc;
    case UV_NAMED_PIPE:
        if ((rc = uv_pipe_init(loop, (uv_pipe_t *)h, 0)) == 0) {
            h->data = u;
            rc = uv_pipe_open((uv_pipe_t *)h, fd);
        }
        return rc;
    default:
        return -ENOTSOCK; /* terminals and regular files are not byte streams to splice */
    }
}

int km_uvstream_open_fds(uv_loop_t *loop, int fd_in, int fd_out, struct km_stream **out)
{
    *out = NULL;
    struct uvs *u = uvs_new();
    if (u == NULL) {
        return -ENOMEM;
    }
    int rc = open_fd(loop, fd_in, &u->in.handle, u);
    if (rc == 0) {
        rc = init_timer(loop, u);
    }
    if (rc == 0 && fd_out != fd_in) {
        u->out = &u->out_h.stream;
        rc = open_fd(loop, fd_out, &u->out_h.handle, u);
    }
    if (rc != 0) {
        if (u->in.handle.type == UV_UNKNOWN_HANDLE && u->out_h.handle.type == UV_UNKNOWN_HANDLE) {
            free(u);
        } else {
            release(u);
        }
        return rc;
    }
    snprintf(u->desc, sizeof u->desc, "fds %d/%d", fd_in, fd_out);
    *out = &u->s;
    return 0;
}

int km_uvstream_listen_tcp(uv_loop_t *loop, const struct sockaddr *addr, int backlog,
                           uv_connection_cb on_connection, void *data, uv_tcp_t **listener)
{
    *listener = NULL;
    uv_tcp_t *t = malloc(sizeof *t);
    if (t == NULL) {
        return -ENOMEM;
    }
    int rc = uv_tcp_init(loop, t);
    if (rc != 0) {
        free(t);
        return rc;
    }
    t->data = data;
    if ((rc = uv_tcp_bind(t, addr, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)t, backlog, on_connection)) != 0) {
        uv_close((uv_handle_t *)t, (uv_close_cb)free);
        return rc;
    }
    *listener = t;
    return 0;
}

void km_uvstream_listener_close(uv_tcp_t *listener)
{
    if (listener != NULL && !uv_is_closing((uv_handle_t *)listener)) {
        uv_close((uv_handle_t *)listener, (uv_close_cb)free);
    }
}

int km_uvstream_peername(const struct km_stream *s, struct sockaddr_storage *out)
{
    const struct uvs *u = (const struct uvs *)s;
    memset(out, 0, sizeof *out);
    if (s->ops != &uvs_ops || u->in.handle.type != UV_TCP) {
        return KM_ERR_UNSUPPORTED;
    }
    int len = sizeof *out;
    return uv_tcp_getpeername(&u->in.tcp, (struct sockaddr *)out, &len);
}

char *km_uvstream_peer_str(const struct km_stream *s, char *out, size_t outsz)
{
    struct sockaddr_storage ss;
    if (km_uvstream_peername(s, &ss) != 0) {
        snprintf(out, outsz, "?");
        return out;
    }
    return km_addr_str((const struct sockaddr *)&ss, out, outsz);
}

size_t km_uvstream_total_queued(void)
{
    return g_queued;
}
