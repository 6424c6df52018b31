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

struct client {
    uv_pipe_t pipe;
    struct km_ctl_server *srv;
    struct km_buf in;
    struct client *next;
    unsigned pending_writes;
    bool closing;
    bool close_after_write;
};

struct km_ctl_server {
    uv_pipe_t listener;
    km_ctl_handler handler;
    void *arg;
    struct client *clients;
    unsigned n_clients;
    unsigned pending_closes;
    bool closing;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

struct write_req {
    uv_write_t req;
    struct client *c;
    size_t len;
    char data[];
};

static void maybe_free_server(struct km_ctl_server *s)
{
    if (s->closing && s->pending_closes == 0) {
        free(s);
    }
}

static void on_client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    struct km_ctl_server *s = c->srv;
    struct client **pp = &s->clients;
    while (*pp != c) {
        pp = &(*pp)->next;
    }
    *pp = c->next;
    s->n_clients--;
    s->pending_closes--;
    km_buf_reset(&c->in);
    free(c);
    maybe_free_server(s);
}

static void client_close(struct client *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    c->srv->pending_closes++;
    uv_close((uv_handle_t *)&c->pipe, on_client_closed);
}

static void on_written(uv_write_t *w, int status)
{
    struct write_req *wr = (struct write_req *)w;
    struct client *c = wr->c;
    free(wr);
    c->pending_writes--;
    if (c->closing) {
        return;
    }
    if (status < 0 || (c->close_after_write && c->pending_writes == 0)) {
        client_close(c);
    }
}

static void send_reply(struct client *c, json_t *reply)
{
    char *text = json_dumps(reply, JSON_COMPACT);
    if (text == NULL) {
        client_close(c);
        return;
    }
    size_t len = strlen(text);
    struct write_req *wr = malloc(sizeof *wr + len + 1);
    if (wr == NULL) {
        free(text);
        client_close(c);
        return;
    }
    memcpy(wr->data, text, len);
    wr->data[len] = '\n';
    wr->len = len + 1;
    wr->c = c;
    free(text);
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
    int r = uv_write(&wr->req, (uv_stream_t *)&c->pipe, &b, 1, on_written);
    if (r != 0) {
        free(wr);
        client_close(c);
        return;
    }
    c->pending_writes++;
}

static void send_error(struct client *c, const char *msg)
{
    json_t *reply = json_pack("{s:b, s:s}", "ok", 0, "error", msg);
    if (reply == NULL) {
        client_close(c);
        return;
    }
    send_reply(c, reply);
    json_decref(reply);
}

static void handle_line(struct client *c, const uint8_t *line, size_t len)
{
    json_t *req;
    const char *cmd;
    if (km_ctl_parse_request(line, len, &req, &cmd) != 0) {
        KM_INFO("ctl: malformed request (%zu bytes)", len);
        send_error(c, "malformed request: expected one JSON object with a \"cmd\" string");
        return;
    }
    json_t *reply = c->srv->handler(c->srv->arg, cmd, req);
    json_decref(req);
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

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    static char slab[4096]; /* one loop thread; read_cb copies out before the next read */
    b->base = slab;
    b->len = sizeof slab;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct client *c = st->data;
    if (c->closing || nread == 0) {
        return;
    }
    if (nread < 0) {
        /* EOF or error: let queued replies go out first (uv_close would cancel them). */
        if (c->pending_writes == 0) {
            client_close(c);
        } else {
            c->close_after_write = true;
            uv_read_stop(st);
        }
        return;
    }
    if (km_buf_put_bytes(&c->in, b->base, (size_t)nread) != 0) {
        KM_INFO("ctl: request line over %u bytes, dropping client", KM_CTL_MAX_LINE);
        c->close_after_write = true;
        uv_read_stop(st);
        send_error(c, "request too large");
        return;
    }
    /* Answer every complete line in the buffer. */
    for (;;) {
        const uint8_t *p = km_buf_peek_ptr(&c->in);
        size_t avail = km_buf_len(&c->in);
        const uint8_t *nl = memchr(p, '\n', avail);
        if (nl == NULL) {
            break;
        }
        size_t llen = (size_t)(nl - p);
        const uint8_t *line;
        if (km_buf_get_view(&c->in, llen + 1, &line) != 0) {
            break; /* unreachable: the newline is inside the buffer */
        }
        handle_line(c, line, llen);
        if (c->closing) {
            return;
        }
    }
    km_buf_compact(&c->in);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct km_ctl_server *s = listener->data;
    if (status < 0 || s->closing) {
        return;
    }
    struct client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return;
    }
    c->srv = s;
    /* One more than a line: the newline must fit. */
    km_buf_init(&c->in, KM_CTL_MAX_LINE + 1);
    if (uv_pipe_init(listener->loop, &c->pipe, 0) != 0) {
        free(c);
        return;
    }
    c->pipe.data = c;
    c->next = s->clients;
    s->clients = c;
    s->n_clients++;
    if (uv_accept(listener, (uv_stream_t *)&c->pipe) != 0) {
        client_close(c);
        return;
    }
    if (s->n_clients > KM_CTL_MAX_CLIENTS) {
        KM_INFO("ctl: more than %d clients, refusing one", KM_CTL_MAX_CLIENTS);
        c->close_after_write = true;
        send_error(c, "too many control clients");
        return;
    }
    if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) != 0) {
        client_close(c);
    }
}

static void on_listener_closed(uv_handle_t *h)
{
    struct km_ctl_server *s = h->data;
    s->pending_closes--;
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
        s->pending_closes = 1;
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
    for (struct client *c = s->clients; c != NULL; c = c->next) {
        client_close(c);
    }
    s->pending_closes++;
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
