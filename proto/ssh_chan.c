/* km_stream over one SSH channel.
 *
 * Flow control: writes go to libssh up to the peer's window; the rest waits in a bounded
 * queue that the conn's processing pass flushes whenever the window has room. libssh 0.10
 * does not report WINDOW_ADJUST through the write-won't-block callback, so the pass polls
 * ssh_channel_window_size instead (DESIGN.md section 2). Reads: while the consumer is
 * paused the data callback consumes nothing, libssh keeps the bytes and does not grow our
 * window, and the peer stalls: backpressure end to end.
 *
 * libssh may call these callbacks from inside ssh_channel_write or read, so nothing here is
 * freed inside a callback: closes set flags and the pass reaps. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "proto/ssh_int.h"

struct km_ssh_chan {
    struct km_stream s; /* first */
    struct km_ssh_conn *conn;
    struct km_ssh_node *node;
    ssh_channel ch;
    struct ssh_channel_callbacks_struct cb;
    struct km_buf out;
    bool reading;
    bool eof_in;         /* the peer sent EOF or CLOSE */
    bool closed_in;      /* the peer sent CLOSE: nothing more may be written */
    bool shut_requested; /* our user asked to send EOF */
    bool eof_sent;
    bool closed_sent;
    bool user_closed;
    bool ended;    /* on_end delivered */
    int write_err; /* a write to libssh failed: on_end(write_err) is due */
    bool above_high;
    bool detached; /* the conn is gone */
    bool exit_pending;
    int exit_status;
    char exit_signal[16];
    struct km_ssh_chan *next;
    char desc[96];
};

static void deliver_end(struct km_ssh_chan *c, int err)
{
    if (c->ended || c->user_closed) {
        return;
    }
    c->ended = true;
    if (c->s.on_end != NULL) {
        c->s.on_end(&c->s, err);
    }
}

/* ---- libssh callbacks ---- */

static int on_ch_data(ssh_session s, ssh_channel ch, void *data, uint32_t len, int is_stderr,
                      void *userdata)
{
    (void)s;
    (void)ch;
    struct km_ssh_chan *c = userdata;
    if (is_stderr) {
        return (int)len; /* direct-tcpip has no stderr; drop it */
    }
    if (c->user_closed) {
        return (int)len; /* nobody will read it */
    }
    if (!c->reading || c->ended) {
        return 0; /* keep it in libssh: the window stays closed */
    }
    if (c->s.on_data != NULL) {
        c->s.on_data(&c->s, data, len);
    }
    return (int)len;
}

static void on_ch_eof(ssh_session s, ssh_channel ch, void *userdata)
{
    (void)s;
    (void)ch;
    struct km_ssh_chan *c = userdata;
    c->eof_in = true;
    km__ssh_conn_kick(c->conn);
}

static void on_ch_close(ssh_session s, ssh_channel ch, void *userdata)
{
    (void)s;
    (void)ch;
    struct km_ssh_chan *c = userdata;
    c->eof_in = true; /* a CLOSE without EOF still ends the byte stream cleanly */
    c->closed_in = true;
    km__ssh_conn_kick(c->conn);
}

static int on_ch_wontblock(ssh_session s, ssh_channel ch, uint32_t bytes, void *userdata)
{
    (void)s;
    (void)ch;
    (void)bytes;
    struct km_ssh_chan *c = userdata;
    km__ssh_conn_kick(c->conn);
    return 0;
}

/* ---- writing ---- */

/* Push queued bytes into the channel as far as the window allows. Fires no callback, so
 * op_write may call it (the stream contract: nothing fires from inside write()); a failure
 * is kept in write_err and reported by the pass. */
static void push(struct km_ssh_chan *c)
{
    while (km_buf_len(&c->out) > 0 && c->ch != NULL && !c->closed_sent) {
        size_t n = km_buf_len(&c->out);
        uint32_t chunk = n > 65536 ? 65536 : (uint32_t)n;
        int w = ssh_channel_write(c->ch, km_buf_peek_ptr(&c->out), chunk);
        if (w < 0) {
            KM_DEBUG("%s: write: %s", c->desc, ssh_get_error(c->conn->s));
            km_buf_clear(&c->out);
            c->write_err = KM_ERR_SSH;
            return;
        }
        if (w == 0) {
            break;
        }
        if (km_buf_skip(&c->out, (size_t)w) != 0) {
            break; /* unreachable: w <= chunk <= len */
        }
    }
    if (km_buf_len(&c->out) == 0) {
        km_buf_clear(&c->out);
    }
}

/* push, then the callbacks it may call for: from the conn's pass only. */
static void flush(struct km_ssh_chan *c)
{
    push(c);
    if (c->write_err != 0) {
        deliver_end(c, c->write_err);
        return;
    }
    if (c->above_high && km_buf_len(&c->out) <= KM_STREAM_LOW_WATER) {
        c->above_high = false;
        if (!c->user_closed && c->s.on_drain != NULL) {
            c->s.on_drain(&c->s);
        }
    }
}

static int op_write(struct km_stream *s, const uint8_t *data, size_t len)
{
    struct km_ssh_chan *c = (struct km_ssh_chan *)s;
    /* An EOF from the peer ends only its direction: writing goes on (half-close). */
    if (c->user_closed || c->shut_requested || c->detached || c->closed_in) {
        return KM_ERR_CLOSED;
    }
    if (c->write_err != 0) {
        return c->write_err;
    }
    if (len == 0) {
        return 0;
    }
    int r = km_buf_put_bytes(&c->out, data, len);
    if (r != 0) {
        return r;
    }
    if (km_buf_len(&c->out) > KM_STREAM_HIGH_WATER) {
        c->above_high = true;
    }
    /* Write through at once when we can: the pass would only add latency. But never from
     * inside a libssh pass (ssh_channel_write re-enters the session). */
    if (!c->conn->in_pass) {
        c->conn->in_pass = true;
        push(c);
        c->conn->in_pass = false;
    }
    km__ssh_conn_kick(c->conn);
    return 0;
}

static size_t op_write_queue(const struct km_stream *s)
{
    return km_buf_len(&((const struct km_ssh_chan *)s)->out);
}

static void op_read_start(struct km_stream *s)
{
    struct km_ssh_chan *c = (struct km_ssh_chan *)s;
    if (!c->reading && !c->user_closed) {
        c->reading = true;
        km__ssh_conn_kick(c->conn); /* deliver what libssh buffered while we were paused */
    }
}

static void op_read_stop(struct km_stream *s)
{
    ((struct km_ssh_chan *)s)->reading = false;
}

static void op_shutdown(struct km_stream *s)
{
    struct km_ssh_chan *c = (struct km_ssh_chan *)s;
    if (!c->shut_requested && !c->user_closed) {
        c->shut_requested = true;
        km__ssh_conn_kick(c->conn);
    }
}

static void op_close(struct km_stream *s)
{
    struct km_ssh_chan *c = (struct km_ssh_chan *)s;
    if (c->user_closed) {
        return;
    }
    c->user_closed = true;
    c->reading = false;
    if (!c->shut_requested) {
        km_buf_clear(&c->out); /* an abortive close drops what was queued */
    }
    if (c->detached) {
        km__ssh_node_kick_reaper(c->node);
        return;
    }
    km__ssh_conn_kick(c->conn);
}

static const char *op_describe(const struct km_stream *s)
{
    return ((const struct km_ssh_chan *)s)->desc;
}

static const struct km_stream_ops chan_ops = {
    .write = op_write,
    .write_queue = op_write_queue,
    .read_start = op_read_start,
    .read_stop = op_read_stop,
    .shutdown = op_shutdown,
    .close = op_close,
    .describe = op_describe,
};

/* ---- reading buffered data ---- */

/* Hand the consumer everything libssh buffered while it was paused, in one read.
 *
 * Why one read: after every ssh_channel_read* call, libssh 0.10 grants the peer a whole new
 * window whenever its local window is below half, however much is still buffered. Reading a
 * large buffer in small pieces therefore keeps granting windows to a peer that is sending
 * faster than the consumer takes, and libssh's buffer grows without bound (measured: 1 GB
 * for six slow streams). Reading it all at once makes each grant match bytes that really
 * left libssh, so a stream holds at most about two windows. */
static void drain(struct km_ssh_chan *c)
{
    /* Bounded: each round empties libssh's buffer or stops on a paused consumer. */
    for (int round = 0; round < 64; round++) {
        if (!c->reading || c->ended || c->user_closed || c->ch == NULL) {
            return;
        }
        int avail = ssh_channel_poll(c->ch, 0);
        if (avail <= 0) {
            return;
        }
        size_t n = (size_t)avail;
        if (n > KM_SSH_CHAN_QUEUE_MAX) {
            n = KM_SSH_CHAN_QUEUE_MAX; /* never expected: libssh holds about one window */
        }
        uint8_t *buf = malloc(n);
        if (buf == NULL) {
            return; /* retried on the next pass */
        }
        int got = ssh_channel_read_nonblocking(c->ch, buf, (uint32_t)n, 0);
        if (got > 0 && c->s.on_data != NULL) {
            c->s.on_data(&c->s, buf, (size_t)got);
        }
        free(buf);
        if (got <= 0) {
            return;
        }
    }
}

/* ---- service, called by the conn's pass ---- */

bool km__ssh_chan_service(struct km_ssh_chan *c)
{
    if (c->detached) {
        return c->user_closed;
    }
    flush(c);
    drain(c);
    if (c->eof_in && c->reading && !c->ended && ssh_channel_poll(c->ch, 0) <= 0) {
        deliver_end(c, 0);
    }
    if (c->shut_requested && !c->eof_sent && km_buf_len(&c->out) == 0 && !c->closed_sent) {
        c->eof_sent = true;
        if (ssh_channel_send_eof(c->ch) != SSH_OK) {
            KM_DEBUG("%s: send eof: %s", c->desc, ssh_get_error(c->conn->s));
        }
    }
    if (c->user_closed && !c->closed_sent && km_buf_len(&c->out) == 0) {
        c->closed_sent = true;
        if (c->exit_pending && !ssh_channel_is_closed(c->ch)) {
            c->exit_pending = false;
            int rc = c->exit_signal[0] != '\0'
                         ? ssh_channel_request_send_exit_signal(c->ch, c->exit_signal, 0, "", "")
                         : ssh_channel_request_send_exit_status(c->ch, c->exit_status);
            if (rc != SSH_OK) {
                KM_DEBUG("%s: send exit status: %s", c->desc, ssh_get_error(c->conn->s));
            }
        }
        if (!ssh_channel_is_closed(c->ch)) {
            (void)ssh_channel_close(c->ch);
        }
    }
    return c->user_closed && c->closed_sent;
}

bool km__ssh_chan_peer_closed(const struct km_ssh_chan *c)
{
    return c->closed_in;
}

void km__ssh_chan_set_exit(struct km_ssh_chan *c, int status, const char *signame)
{
    c->exit_pending = true;
    c->exit_status = status;
    snprintf(c->exit_signal, sizeof c->exit_signal, "%s", signame != NULL ? signame : "");
}

/* ---- lifetime ---- */

struct km_ssh_chan *km__ssh_chan_new(struct km_ssh_conn *conn, ssh_channel ch, const char *what)
{
    struct km_ssh_chan *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    c->s.ops = &chan_ops;
    c->conn = conn;
    c->node = conn->node;
    c->ch = ch;
    km_buf_init(&c->out, KM_SSH_CHAN_QUEUE_MAX);
    c->cb.userdata = c;
    c->cb.channel_data_function = on_ch_data;
    c->cb.channel_eof_function = on_ch_eof;
    c->cb.channel_close_function = on_ch_close;
    c->cb.channel_write_wontblock_function = on_ch_wontblock;
    ssh_callbacks_init(&c->cb);
    if (ssh_set_channel_callbacks(ch, &c->cb) != SSH_OK) {
        km_buf_reset(&c->out);
        free(c);
        return NULL;
    }
    snprintf(c->desc, sizeof c->desc, "%s %s", km_ssh_conn_describe(conn), what);
    return c;
}

struct km_stream *km__ssh_chan_stream(struct km_ssh_chan *c)
{
    return &c->s;
}

ssh_channel km__ssh_chan_channel(const struct km_ssh_chan *c)
{
    return c->ch;
}

bool km__ssh_chan_detach(struct km_ssh_chan *c, int err)
{
    if (c->ch != NULL) {
        ssh_remove_channel_callbacks(c->ch, &c->cb);
        c->ch = NULL; /* ssh_free releases it with the session */
    }
    c->detached = true;
    c->conn = NULL;
    km_buf_clear(&c->out);
    deliver_end(c, err);
    return c->user_closed;
}

void km__ssh_chan_free(struct km_ssh_chan *c)
{
    if (c == NULL) {
        return;
    }
    if (c->ch != NULL) {
        ssh_remove_channel_callbacks(c->ch, &c->cb);
        ssh_channel_free(c->ch);
    }
    km_buf_reset(&c->out);
    free(c);
}

bool km__ssh_chan_wants_service(const struct km_ssh_chan *c)
{
    if (c->ch == NULL || c->detached || c->closed_sent) {
        return false;
    }
    /* Only checks that read nothing from the socket: anything that can read (poll, read,
     * write) may consume another channel's WINDOW_ADJUST. Data for a reading channel needs
     * no check: libssh hands it to the data callback wherever it is read. */
    return km_buf_len(&c->out) > 0 && ssh_channel_window_size(c->ch) > 0;
}

bool km__ssh_chan_closed_by_user(const struct km_ssh_chan *c)
{
    return c->user_closed;
}

struct km_ssh_chan *km__ssh_chan_next(const struct km_ssh_chan *c)
{
    return c->next;
}

void km__ssh_chan_set_next(struct km_ssh_chan *c, struct km_ssh_chan *next)
{
    c->next = next;
}

struct km_ssh_conn *km_ssh_direct_conn(const struct km_ssh_direct *d)
{
    return d->conn;
}
