#include "core/ctl.h"

#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/uvstream.h"

/* ---- request parsing (pure) ---- */

int km_ctl_parse_request(const uint8_t *line, size_t len, json_t **out, const char **cmd)
{
    *out = NULL;
    *cmd = NULL;
    if (len > KM_CTL_MAX_LINE) {
        return KM_ERR_TOO_LARGE;
    }
    json_error_t jerr;
    json_t *req = json_loadb((const char *)line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (req == NULL) {
        return KM_ERR_INVALID;
    }
    const char *c = NULL;
    json_t *jc = json_object_get(req, "cmd");
    if (!json_is_object(req) || !json_is_string(jc)) {
        goto invalid;
    }
    c = json_string_value(jc);
    size_t clen = json_string_length(jc);
    if (clen == 0 || clen > KM_CTL_CMD_MAX || strlen(c) != clen) {
        goto invalid;
    }
    for (size_t i = 0; i < clen; i++) {
        char ch = c[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-')) {
            goto invalid;
        }
    }
    *out = req;
    *cmd = c;
    return 0;
invalid:
    json_decref(req);
    return KM_ERR_INVALID;
}

/* ---- server ---- */

struct km_ctl_conn {
    struct km_stream *st;
    struct km_ctl_server *srv;
    struct km_buf in;
    struct km_ctl_conn *next;
    bool taken;
    bool close_after_write;
};

struct km_ctl_server {
    uv_pipe_t listener;
    km_ctl_handler handler;
    void *arg;
    struct km_ctl_conn *clients;
    unsigned n_clients;
    bool closing;
    bool listener_closed;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static void maybe_free_server(struct km_ctl_server *s)
{
    if (s->closing && s->listener_closed && s->clients == NULL) {
        free(s);
    }
}

static void unlink_client(struct km_ctl_conn *c)
{
    struct km_ctl_server *s = c->srv;
    for (struct km_ctl_conn **pp = &s->clients; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    s->n_clients--;
}

/* Close and forget a client (its stream frees itself later). */
static void client_close(struct km_ctl_conn *c)
{
    struct km_ctl_server *s = c->srv;
    km_stream_close(c->st);
    unlink_client(c);
    km_buf_reset(&c->in);
    free(c);
    maybe_free_server(s);
}

static void send_reply(struct km_ctl_conn *c, json_t *reply)
{
    char *text = json_dumps(reply, JSON_COMPACT);
    if (text == NULL) {
        c->close_after_write = true;
        return;
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* replaces the NUL: len + 1 bytes go out */
    if (km_stream_write(c->st, (const uint8_t *)text, len + 1) != 0) {
        c->close_after_write = true;
    }
    free(text);
}

static void send_error(struct km_ctl_conn *c, const char *msg)
{
    json_t *reply = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
    if (reply != NULL) {
        send_reply(c, reply);
        json_decref(reply);
    }
}

struct km_stream *km_ctl_take(struct km_ctl_conn *c, uint8_t *pending, size_t pending_cap,
                              size_t *n_pending)
{
    *n_pending = 0;
    if (c->taken || c->srv->closing) {
        return NULL;
    }
    c->taken = true;
    size_t n = km_buf_len(&c->in);
    if (n > pending_cap) {
        n = pending_cap;
    }
    if (km_buf_get_bytes(&c->in, pending, n) == 0) {
        *n_pending = n;
    }
    struct km_stream *st = c->st;
    km_stream_read_stop(st);
    st->on_data = NULL;
    st->on_end = NULL;
    st->on_drain = NULL;
    st->data = NULL;
    return st;
}

static void handle_line(struct km_ctl_conn *c, const uint8_t *line, size_t len)
{
    json_t *req;
    const char *cmd;
    if (km_ctl_parse_request(line, len, &req, &cmd) != 0) {
        KM_INFO("ctl: malformed request (%zu bytes)", len);
        send_error(c, "malformed request: expected one JSON object with a \"cmd\" string");
        return;
    }
    json_t *reply = c->srv->handler(c->srv->arg, cmd, req, c);
    json_decref(req);
    if (c->taken) {
        json_decref(reply);
        return;
    }
    if (reply == NULL || !json_is_object(reply)) {
        json_decref(reply);
        send_error(c, "internal error");
        return;
    }
    if (json_object_get(reply, "ok") == NULL) {
        (void)json_object_set_new(reply, "ok", json_true());
    }
    send_reply(c, reply);
    json_decref(reply);
}

static void on_data(struct km_stream *st, const uint8_t *data, size_t len)
{
    struct km_ctl_conn *c = st->data;
    if (c->close_after_write) {
        return;
    }
    if (km_buf_put_bytes(&c->in, data, len) != 0) {
        KM_INFO("ctl: request line over %u bytes, dropping client", KM_CTL_MAX_LINE);
        km_stream_read_stop(st);
        send_error(c, "request too large");
        c->close_after_write = true;
        km_stream_shutdown(st);
        return;
    }
    /* Answer every complete line in the buffer. */
    while (!c->taken && !c->close_after_write) {
        const uint8_t *p = km_buf_peek_ptr(&c->in);
        const uint8_t *nl = memchr(p, '\n', km_buf_len(&c->in));
        if (nl == NULL) {
            break;
        }
        const uint8_t *line;
        size_t llen = (size_t)(nl - p);
        if (km_buf_get_view(&c->in, llen + 1, &line) != 0) {
            break; /* unreachable: the newline is inside the buffer */
        }
        handle_line(c, line, llen);
    }
    if (c->taken) {
        /* The new owner has the stream; this record goes. */
        struct km_ctl_server *s = c->srv;
        unlink_client(c);
        km_buf_reset(&c->in);
        free(c);
        maybe_free_server(s);
        return;
    }
    km_buf_compact(&c->in);
    if (c->close_after_write) {
        km_stream_shutdown(st);
    }
}

static void on_end(struct km_stream *st, int err)
{
    struct km_ctl_conn *c = st->data;
    /* EOF: queued replies still go out (shutdown, then a graceful close). */
    if (err == 0) {
        km_stream_shutdown(st);
    }
    client_close(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct km_ctl_server *s = listener->data;
    if (status < 0 || s->closing) {
        return;
    }
    struct km_stream *st;
    if (km_uvstream_accept(listener, &st) != 0) {
        return;
    }
    struct km_ctl_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        km_stream_close(st);
        return;
    }
    c->st = st;
    c->srv = s;
    /* One more than a line: the newline must fit. */
    km_buf_init(&c->in, KM_CTL_MAX_LINE + 1);
    c->next = s->clients;
    s->clients = c;
    s->n_clients++;
    st->data = c;
    st->on_data = on_data;
    st->on_end = on_end;
    if (s->n_clients > KM_CTL_MAX_CLIENTS) {
        KM_INFO("ctl: more than %d clients, refusing one", KM_CTL_MAX_CLIENTS);
        send_error(c, "too many control clients");
        km_stream_shutdown(st);
        client_close(c);
        return;
    }
    km_stream_read_start(st);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct km_ctl_server *s = h->data;
    s->listener_closed = true;
    maybe_free_server(s);
}

int km_ctl_server_new(uv_loop_t *loop, const char *path, km_ctl_handler handler, void *arg,
                      struct km_ctl_server **out)
{
    *out = NULL;
    struct km_ctl_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return -ENOMEM;
    }
    size_t plen = strlen(path);
    if (plen >= sizeof s->path) {
        free(s);
        return -ENAMETOOLONG;
    }
    memcpy(s->path, path, plen + 1);
    s->handler = handler;
    s->arg = arg;
    int r = uv_pipe_init(loop, &s->listener, 0);
    if (r != 0) {
        free(s);
        return r;
    }
    s->listener.data = s;
    /* Create the socket file 0600 from the start: no window in which others may connect. */
    mode_t old = umask(0177);
    r = uv_pipe_bind(&s->listener, path);
    umask(old);
    if (r == 0) {
        r = uv_listen((uv_stream_t *)&s->listener, 16, on_connection);
    }
    if (r != 0) {
        s->closing = true;
        s->path[0] = '\0'; /* not ours to unlink: bind failed or it was someone else's */
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
        return r;
    }
    *out = s;
    return 0;
}

void km_ctl_server_close(struct km_ctl_server *s)
{
    if (s == NULL || s->closing) {
        return;
    }
    s->closing = true;
    if (s->path[0] != '\0') {
        (void)unlink(s->path);
    }
    while (s->clients != NULL) {
        struct km_ctl_conn *c = s->clients;
        s->clients = c->next;
        km_stream_close(c->st);
        km_buf_reset(&c->in);
        free(c);
    }
    s->n_clients = 0;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
}

/* ---- client ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            return -ETIMEDOUT;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -errno;
        }
        if (n > 0) {
            return 0;
        }
    }
}

int km_ctl_call(const char *path, const json_t *req, json_t **reply, int timeout_ms)
{
    *reply = NULL;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t plen = strlen(path);
    if (plen >= sizeof sa.sun_path) {
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, plen + 1);
    int64_t deadline = now_ms() + timeout_ms;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -errno;
    }
    int r = 0;
    char *text = NULL;
    struct km_buf in;
    km_buf_init(&in, KM_CTL_MAX_LINE + 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno == ENOENT || errno == ECONNREFUSED) {
            r = KM_ERR_NOT_RUNNING;
        } else if (errno == EAGAIN) {
            r = -EAGAIN; /* backlog full: the daemon is alive but swamped */
        } else {
            r = -errno;
        }
        goto out;
    }
    text = json_dumps(req, JSON_COMPACT);
    if (text == NULL) {
        r = -ENOMEM;
        goto out;
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* replaces the NUL; len + 1 bytes are sent */
    size_t off = 0;
    while (off < len + 1) {
        if ((r = wait_fd(fd, POLLOUT, deadline)) != 0) {
            goto out;
        }
        ssize_t w = send(fd, text + off, len + 1 - off, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            continue;
        }
        if (w < 0) {
            r = -errno;
            goto out;
        }
        off += (size_t)w;
    }
    for (;;) {
        const uint8_t *p = km_buf_peek_ptr(&in);
        const uint8_t *nl = memchr(p, '\n', km_buf_len(&in));
        if (nl != NULL) {
            json_error_t jerr;
            json_t *j = json_loadb((const char *)p, (size_t)(nl - p), 0, &jerr);
            if (j == NULL || !json_is_object(j)) {
                json_decref(j);
                r = KM_ERR_CTL_PROTO;
                goto out;
            }
            *reply = j;
            r = 0;
            goto out;
        }
        if ((r = wait_fd(fd, POLLIN, deadline)) != 0) {
            goto out;
        }
        uint8_t chunk[4096];
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            continue;
        }
        if (n < 0) {
            r = -errno;
            goto out;
        }
        if (n == 0) {
            r = KM_ERR_CTL_PROTO; /* closed before a full reply */
            goto out;
        }
        if (km_buf_put_bytes(&in, chunk, (size_t)n) != 0) {
            r = KM_ERR_CTL_PROTO;
            goto out;
        }
    }
out:
    free(text);
    km_buf_reset(&in);
    close(fd);
    return r;
}
