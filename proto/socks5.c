/* SOCKS5 (RFC 1928) with RFC 1929 username/password: parsers, writers and the server.
 * Behaviour, limits and the error-to-reply table: docs/PROXY.md. */
#include "proto/socks5.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/relay.h"
#include "core/uvstream.h"

/* ---- parsers (pure: no I/O, no allocation) ---- */

/* Consume what the scratch copy t read from b. */
static int commit(struct km_buf *b, const struct km_buf *t)
{
    return km_buf_skip(b, km_buf_len(b) - km_buf_len(t));
}

int km_socks5_parse_greeting(struct km_buf *b, struct km_socks5_greeting *out)
{
    memset(out, 0, sizeof *out);
    struct km_buf t = *b; /* read through a copy so a short message consumes nothing */
    uint8_t ver, n;
    int r;
    /* +----+----------+----------+
     * |VER | NMETHODS | METHODS  |
     * | 1  |    1     | 1 to 255 |   RFC 1928 section 3 */
    if ((r = km_buf_get_u8(&t, &ver)) != 0) {
        return r;
    }
    if (ver != KM_SOCKS5_VERSION) {
        return KM_ERR_INVALID;
    }
    if ((r = km_buf_get_u8(&t, &n)) != 0) {
        return r;
    }
    if (n == 0) {
        return KM_ERR_INVALID;
    }
    if ((r = km_buf_get_bytes(&t, out->methods, n)) != 0) {
        memset(out, 0, sizeof *out);
        return r;
    }
    out->n_methods = n;
    return commit(b, &t);
}

bool km_socks5_greeting_has(const struct km_socks5_greeting *g, uint8_t method)
{
    for (size_t i = 0; i < g->n_methods; i++) {
        if (g->methods[i] == method) {
            return true;
        }
    }
    return false;
}

int km_socks5_parse_auth(struct km_buf *b, struct km_socks5_auth *out)
{
    memset(out, 0, sizeof *out);
    struct km_buf t = *b;
    uint8_t ver;
    const uint8_t *p;
    size_t n;
    int r;
    /* +----+------+----------+------+----------+
     * |VER | ULEN |  UNAME   | PLEN |  PASSWD  |
     * | 1  |  1   | 1 to 255 |  1   | 1 to 255 |   RFC 1929 section 2 */
    if ((r = km_buf_get_u8(&t, &ver)) != 0) {
        return r;
    }
    if (ver != KM_SOCKS5_AUTH_VERSION) {
        return KM_ERR_INVALID;
    }
    /* ULEN, UNAME */
    if ((r = km_buf_get_string8_view(&t, &p, &n)) != 0) {
        return r;
    }
    if (n == 0) {
        return KM_ERR_INVALID;
    }
    memcpy(out->user, p, n);
    out->user_len = n;
    /* PLEN, PASSWD */
    if ((r = km_buf_get_string8_view(&t, &p, &n)) != 0) {
        sodium_memzero(out, sizeof *out);
        return r;
    }
    if (n == 0) {
        sodium_memzero(out, sizeof *out);
        return KM_ERR_INVALID;
    }
    memcpy(out->pass, p, n);
    out->pass_len = n;
    return commit(b, &t);
}

int km_socks5_parse_request(struct km_buf *b, struct km_socks5_request *out)
{
    memset(out, 0, sizeof *out);
    out->rep = KM_SOCKS5_REP_GENERAL_FAILURE;
    struct km_buf t = *b;
    uint8_t ver, cmd, rsv, atyp;
    int r;
    /* +----+-----+-------+------+----------+----------+
     * |VER | CMD |  RSV  | ATYP | DST.ADDR | DST.PORT |
     * | 1  |  1  | X'00' |  1   | Variable |    2     |   RFC 1928 section 4 */
    if ((r = km_buf_get_u8(&t, &ver)) != 0) {
        return r;
    }
    if (ver != KM_SOCKS5_VERSION) {
        return KM_ERR_INVALID;
    }
    if ((r = km_buf_get_u8(&t, &cmd)) != 0 || (r = km_buf_get_u8(&t, &rsv)) != 0) {
        return r;
    }
    if (rsv != 0) {
        return KM_ERR_INVALID;
    }
    if ((r = km_buf_get_u8(&t, &atyp)) != 0) {
        return r;
    }
    out->cmd = cmd;
    out->atyp = atyp;
    if (cmd != KM_SOCKS5_CMD_CONNECT) {
        out->rep = KM_SOCKS5_REP_CMD_UNSUPPORTED;
        return KM_ERR_UNSUPPORTED;
    }
    /* DST.ADDR */
    if (atyp == KM_SOCKS5_ATYP_IPV4) {
        uint8_t a4[4];
        if ((r = km_buf_get_bytes(&t, a4, sizeof a4)) != 0) {
            return r;
        }
        inet_ntop(AF_INET, a4, out->host, sizeof out->host);
    } else if (atyp == KM_SOCKS5_ATYP_IPV6) {
        uint8_t a6[16];
        if ((r = km_buf_get_bytes(&t, a6, sizeof a6)) != 0) {
            return r;
        }
        inet_ntop(AF_INET6, a6, out->host, sizeof out->host);
    } else if (atyp == KM_SOCKS5_ATYP_DOMAIN) {
        /* One length octet, then the name without a terminating NUL. */
        const uint8_t *p;
        size_t n;
        if ((r = km_buf_get_string8_view(&t, &p, &n)) != 0) {
            return r;
        }
        if (n == 0 || memchr(p, 0, n) != NULL) {
            memset(out->host, 0, sizeof out->host);
            return KM_ERR_INVALID;
        }
        memcpy(out->host, p, n);
        out->host[n] = '\0';
    } else {
        out->rep = KM_SOCKS5_REP_ATYP_UNSUPPORTED;
        return KM_ERR_UNSUPPORTED;
    }
    /* DST.PORT */
    uint16_t port;
    if ((r = km_buf_get_u16(&t, &port)) != 0) {
        memset(out->host, 0, sizeof out->host);
        return r;
    }
    if (port == 0) {
        memset(out->host, 0, sizeof out->host);
        return KM_ERR_INVALID;
    }
    out->port = port;
    out->rep = KM_SOCKS5_REP_SUCCEEDED;
    return commit(b, &t);
}

/* ---- writers ---- */

int km_socks5_put_method(struct km_buf *b, uint8_t method)
{
    uint8_t m[2] = {KM_SOCKS5_VERSION, method};
    return km_buf_put_bytes(b, m, sizeof m);
}

int km_socks5_put_auth_status(struct km_buf *b, uint8_t status)
{
    uint8_t m[2] = {KM_SOCKS5_AUTH_VERSION, status};
    return km_buf_put_bytes(b, m, sizeof m);
}

int km_socks5_put_reply(struct km_buf *b, uint8_t rep, const struct sockaddr *bnd)
{
    uint8_t m[22] = {KM_SOCKS5_VERSION, rep, 0x00};
    size_t n;
    if (bnd == NULL) {
        m[3] = KM_SOCKS5_ATYP_IPV4;
        n = 10; /* 0.0.0.0:0 */
    } else if (bnd->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)bnd;
        m[3] = KM_SOCKS5_ATYP_IPV4;
        memcpy(&m[4], &a->sin_addr, 4);
        memcpy(&m[8], &a->sin_port, 2); /* already network order */
        n = 10;
    } else if (bnd->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)bnd;
        m[3] = KM_SOCKS5_ATYP_IPV6;
        memcpy(&m[4], &a->sin6_addr, 16);
        memcpy(&m[20], &a->sin6_port, 2);
        n = 22;
    } else {
        return KM_ERR_INVALID;
    }
    return km_buf_put_bytes(b, m, n);
}

uint8_t km_socks5_rep_from_err(int err)
{
    switch (err) {
    case 0:
        return KM_SOCKS5_REP_SUCCEEDED;
    case KM_ERR_REFUSED:
        return KM_SOCKS5_REP_NOT_ALLOWED;
    case KM_ERR_NOT_FOUND:
    case KM_ERR_UNREACHABLE:
    case -EHOSTUNREACH:
    case -EHOSTDOWN:
    case UV_EAI_NONAME:
    case UV_EAI_NODATA:
    case UV_EAI_AGAIN:
    case UV_EAI_FAIL:
        return KM_SOCKS5_REP_HOST_UNREACHABLE;
    case -ENETUNREACH:
    case -ENETDOWN:
        return KM_SOCKS5_REP_NET_UNREACHABLE;
    case -ECONNREFUSED:
        return KM_SOCKS5_REP_CONN_REFUSED;
    case -ETIMEDOUT:
        return KM_SOCKS5_REP_TTL_EXPIRED;
    case KM_ERR_UNSUPPORTED:
        return KM_SOCKS5_REP_CMD_UNSUPPORTED;
    default:
        return KM_SOCKS5_REP_GENERAL_FAILURE;
    }
}

/* ---- server ---- */

#define LINGER_MS 2000u
#define IN_MAX (128u * 1024u)  /* client bytes buffered before the relay starts */
#define IN_PAUSE (64u * 1024u) /* stop reading the client past this while connecting */

enum state {
    ST_GREETING,
    ST_AUTH,
    ST_REQUEST,
    ST_CONNECTING,
    ST_LINGER, /* error reply sent, waiting for the client's EOF or the linger timer */
    ST_RELAY,
    ST_DEAD,
};

struct session {
    struct km_socks5_server *srv;
    struct session *prev, *next; /* srv->sessions: those not yet relaying */
    struct km_stream *client;    /* NULL once the relay owns it */
    struct km_egress_req *req;   /* pending egress->open */
    uv_timer_t timer;
    struct km_buf in;
    enum state st;
    unsigned refs; /* timer handle + relay */
    char name[80]; /* "socks5 127.0.0.1:5555" */
};

struct km_socks5_server {
    uv_loop_t *loop;
    uv_tcp_t *listener;
    struct km_egress *egress;
    struct km_socks5_limits lim;
    bool auth;
    size_t user_len, pass_len;
    uint8_t user[255], pass[255];
    struct session *sessions;
    unsigned n_clients;
    unsigned refs; /* 1 while open + one per session */
    bool closing;
    struct km_log_ratelimit log_rl; /* for log lines a client can cause */
};

static void server_unref(struct km_socks5_server *srv)
{
    if (--srv->refs == 0) {
        sodium_memzero(srv->pass, sizeof srv->pass);
        free(srv);
    }
}

static void session_unref(struct session *s)
{
    if (--s->refs > 0) {
        return;
    }
    struct km_socks5_server *srv = s->srv;
    km_buf_reset(&s->in);
    free(s);
    srv->n_clients--;
    server_unref(srv);
}

static void on_timer_close(uv_handle_t *h)
{
    session_unref(h->data);
}

/* Unlink from the server's list and close the timer (dropping its reference). */
static void session_detach(struct session *s, enum state st)
{
    s->st = st;
    if (s->prev != NULL) {
        s->prev->next = s->next;
    } else {
        s->srv->sessions = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    }
    s->prev = s->next = NULL;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_timer_close);
}

/* End a session that has not handed its client to the relay. Idempotent. */
static void session_end(struct session *s)
{
    if (s->st == ST_DEAD || s->st == ST_RELAY) {
        return;
    }
    if (s->req != NULL) {
        s->srv->egress->cancel(s->srv->egress, s->req);
        s->req = NULL;
    }
    if (s->client != NULL) {
        s->client->data = NULL;
        km_stream_close(s->client);
        s->client = NULL;
    }
    session_detach(s, ST_DEAD);
}

static void on_timer(uv_timer_t *t);

/* Send an error reply (already in msg), then half-close and wait briefly for the client to
 * read it: closing at once could reset the connection and lose the reply. */
static void send_and_linger(struct session *s, const struct km_buf *msg)
{
    if (km_stream_write(s->client, km_buf_peek_ptr(msg), km_buf_len(msg)) != 0) {
        session_end(s);
        return;
    }
    km_stream_shutdown(s->client);
    km_stream_read_start(s->client);
    s->st = ST_LINGER;
    uv_timer_start(&s->timer, on_timer, LINGER_MS, 0);
}

static void reply_and_linger(struct session *s, uint8_t rep)
{
    uint8_t mem[32];
    struct km_buf m;
    km_buf_init_fixed(&m, mem, sizeof mem);
    if (km_socks5_put_reply(&m, rep, NULL) != 0) {
        session_end(s);
        return;
    }
    send_and_linger(s, &m);
}

static int send_small(struct session *s, const uint8_t m[2])
{
    return km_stream_write(s->client, m, 2);
}

static void on_relay_done(void *arg, int err, uint64_t a_to_b, uint64_t b_to_a)
{
    struct session *s = arg;
    KM_DEBUG("%s: closed (%s), %llu bytes up, %llu down", s->name, km_strerror(err),
             (unsigned long long)a_to_b, (unsigned long long)b_to_a);
    session_unref(s);
}

static void on_egress(void *arg, int err, struct km_stream *target)
{
    struct session *s = arg;
    s->req = NULL;
    if (err != 0) {
        KM_INFO_R(err, "%s: connect failed", s->name);
        reply_and_linger(s, km_socks5_rep_from_err(err));
        return;
    }
    /* BND.ADDR/PORT: a mesh stream has no local socket address to report, so we send
     * 0.0.0.0:0 as OpenSSH's ssh -D does; clients use it only for BIND. */
    uint8_t mem[32];
    struct km_buf m;
    km_buf_init_fixed(&m, mem, sizeof mem);
    if (km_socks5_put_reply(&m, KM_SOCKS5_REP_SUCCEEDED, NULL) != 0 ||
        km_stream_write(s->client, km_buf_peek_ptr(&m), km_buf_len(&m)) != 0) {
        km_stream_close(target);
        session_end(s);
        return;
    }
    KM_DEBUG("%s: connected", s->name);
    struct km_stream *client = s->client;
    s->client = NULL;
    client->data = NULL;
    session_detach(s, ST_RELAY); /* the timer's reference goes */
    s->refs++;                   /* the relay's */
    /* Bytes the client sent after its request (optimistic data) go first. */
    int r = km_relay_start(client, target, km_buf_peek_ptr(&s->in), km_buf_len(&s->in),
                           on_relay_done, s);
    km_buf_reset(&s->in);
    if (r != 0) {
        KM_WARN_R(r, "%s: relay", s->name);
        session_unref(s); /* the relay closed both streams and will not call back */
    }
}

static bool log_ok(struct km_socks5_server *srv)
{
    return km_log_ratelimit_ok(&srv->log_rl, uv_now(srv->loop));
}

static void bad_client(struct session *s, int r, const char *what)
{
    if (log_ok(s->srv)) {
        KM_INFO_R(r, "%s: %s", s->name, what);
    }
}

static void start_connect(struct session *s, const struct km_socks5_request *req)
{
    char esc[300];
    km_log_escape(esc, sizeof esc, req->host, strlen(req->host));
    KM_DEBUG("%s: CONNECT \"%s\" port %u", s->name, esc, req->port);
    s->st = ST_CONNECTING;
    uv_timer_start(&s->timer, on_timer, s->srv->lim.connect_timeout_ms, 0);
    struct km_egress *e = s->srv->egress;
    int r = e->open(e, req->host, req->port, s->name, on_egress, s, &s->req);
    if (r != 0) {
        s->req = NULL;
        KM_INFO_R(r, "%s: connect \"%s\" port %u", s->name, esc, req->port);
        reply_and_linger(s, km_socks5_rep_from_err(r));
    }
}

static bool check_auth(const struct km_socks5_server *srv, const struct km_socks5_auth *a)
{
    /* Lengths are not secret; the contents are compared in constant time. */
    bool ok = a->user_len == srv->user_len && a->pass_len == srv->pass_len;
    if (ok) {
        int u = sodium_memcmp(a->user, srv->user, srv->user_len);
        int p = sodium_memcmp(a->pass, srv->pass, srv->pass_len);
        ok = (u | p) == 0;
    }
    return ok;
}

/* Run the handshake over the buffered input until it needs more bytes. */
static void process(struct session *s)
{
    struct km_socks5_server *srv = s->srv;
    for (;;) {
        int r;
        if (s->st == ST_GREETING) {
            struct km_socks5_greeting g;
            if ((r = km_socks5_parse_greeting(&s->in, &g)) == KM_ERR_INCOMPLETE) {
                return;
            }
            if (r != 0) {
                bad_client(s, r, "bad greeting");
                session_end(s); /* no reply is defined for a bad version */
                return;
            }
            uint8_t want = srv->auth ? KM_SOCKS5_METHOD_USERPASS : KM_SOCKS5_METHOD_NONE;
            if (!km_socks5_greeting_has(&g, want)) {
                bad_client(s, 0, "no acceptable authentication method");
                uint8_t m[2] = {KM_SOCKS5_VERSION, KM_SOCKS5_METHOD_NO_ACCEPTABLE};
                struct km_buf mb;
                km_buf_init_view(&mb, m, sizeof m);
                send_and_linger(s, &mb);
                return;
            }
            uint8_t m[2] = {KM_SOCKS5_VERSION, want};
            if (send_small(s, m) != 0) {
                session_end(s);
                return;
            }
            s->st = srv->auth ? ST_AUTH : ST_REQUEST;
        } else if (s->st == ST_AUTH) {
            struct km_socks5_auth a;
            if ((r = km_socks5_parse_auth(&s->in, &a)) == KM_ERR_INCOMPLETE) {
                return;
            }
            bool ok = r == 0 && check_auth(srv, &a);
            sodium_memzero(&a, sizeof a);
            /* RFC 1929: a non-zero STATUS means failure and the server closes. */
            uint8_t m[2] = {KM_SOCKS5_AUTH_VERSION, ok ? 0x00 : 0x01};
            if (!ok) {
                bad_client(s, r, r != 0 ? "bad authentication request" : "wrong credentials");
                struct km_buf mb;
                km_buf_init_view(&mb, m, sizeof m);
                send_and_linger(s, &mb);
                return;
            }
            if (send_small(s, m) != 0) {
                session_end(s);
                return;
            }
            s->st = ST_REQUEST;
        } else if (s->st == ST_REQUEST) {
            struct km_socks5_request req;
            if ((r = km_socks5_parse_request(&s->in, &req)) == KM_ERR_INCOMPLETE) {
                return;
            }
            if (r != 0) {
                bad_client(s, r, "bad request");
                reply_and_linger(s, req.rep);
                return;
            }
            km_buf_compact(&s->in);
            start_connect(s, &req);
            return;
        } else {
            return;
        }
    }
}

static void on_client_data(struct km_stream *c, const uint8_t *data, size_t len)
{
    struct session *s = c->data;
    if (s == NULL || s->st == ST_LINGER || s->st == ST_DEAD) {
        return; /* discard what a refused client still sends */
    }
    km_buf_compact(&s->in);
    if (km_buf_put_bytes(&s->in, data, len) != 0) {
        bad_client(s, KM_ERR_TOO_LARGE, "input");
        session_end(s);
        return;
    }
    if (s->st == ST_CONNECTING) {
        if (km_buf_len(&s->in) >= IN_PAUSE) {
            km_stream_read_stop(c); /* backpressure until the target is connected */
        }
        return;
    }
    process(s);
}

static void on_client_end(struct km_stream *c, int err)
{
    struct session *s = c->data;
    if (s == NULL) {
        return;
    }
    if (s->st != ST_LINGER) {
        KM_DEBUG("%s: client went away%s (%s)", s->name,
                 s->st == ST_CONNECTING ? " while connecting" : "", km_strerror(err));
    }
    session_end(s); /* cancels a pending egress request */
}

static void on_timer(uv_timer_t *t)
{
    struct session *s = t->data;
    if (s->st == ST_CONNECTING) {
        KM_INFO("%s: connect timed out", s->name);
        if (s->req != NULL) {
            s->srv->egress->cancel(s->srv->egress, s->req);
            s->req = NULL;
        }
        reply_and_linger(s, KM_SOCKS5_REP_TTL_EXPIRED);
        return;
    }
    if (s->st != ST_LINGER) {
        bad_client(s, 0, "handshake timed out");
    }
    session_end(s);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct km_socks5_server *srv = listener->data;
    if (status < 0 || srv == NULL || srv->closing) {
        return;
    }
    struct km_stream *c;
    int r = km_uvstream_accept(listener, &c);
    if (r != 0) {
        KM_WARN_R(r, "socks5: accept");
        return;
    }
    char pn[64];
    km_uvstream_peer_str(c, pn, sizeof pn);
    if (srv->n_clients >= srv->lim.max_clients) {
        if (log_ok(srv)) {
            KM_INFO("socks5 %s: refused, %u clients already", pn, srv->n_clients);
        }
        km_stream_close(c);
        return;
    }
    struct session *s = calloc(1, sizeof *s);
    if (s == NULL) {
        km_stream_close(c);
        return;
    }
    snprintf(s->name, sizeof s->name, "socks5 %s", pn);
    s->srv = srv;
    s->client = c;
    s->st = ST_GREETING;
    s->refs = 1;
    km_buf_init(&s->in, IN_MAX);
    uv_timer_init(srv->loop, &s->timer);
    s->timer.data = s;
    srv->n_clients++;
    srv->refs++;
    s->next = srv->sessions;
    if (s->next != NULL) {
        s->next->prev = s;
    }
    srv->sessions = s;
    c->data = s;
    c->on_data = on_client_data;
    c->on_end = on_client_end;
    c->on_drain = NULL;
    uv_timer_start(&s->timer, on_timer, srv->lim.handshake_timeout_ms, 0);
    km_stream_read_start(c);
    KM_DEBUG("%s: accepted", s->name);
}

int km_socks5_server_new(uv_loop_t *loop, const struct sockaddr *addr, struct km_egress *egress,
                         const char *username, const char *password,
                         const struct km_socks5_limits *limits, struct km_socks5_server **out)
{
    *out = NULL;
    struct km_socks5_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        return -ENOMEM;
    }
    srv->loop = loop;
    srv->egress = egress;
    srv->refs = 1;
    if (limits != NULL) {
        srv->lim = *limits;
    }
    if (srv->lim.max_clients == 0) {
        srv->lim.max_clients = 1024;
    }
    if (srv->lim.handshake_timeout_ms == 0) {
        srv->lim.handshake_timeout_ms = 10000;
    }
    if (srv->lim.connect_timeout_ms == 0) {
        srv->lim.connect_timeout_ms = 30000;
    }
    if (username != NULL) {
        size_t ul = strlen(username);
        size_t pl = password != NULL ? strlen(password) : 0;
        if (ul == 0 || ul > 255 || pl == 0 || pl > 255) {
            free(srv);
            return KM_ERR_INVALID;
        }
        srv->auth = true;
        memcpy(srv->user, username, ul);
        memcpy(srv->pass, password, pl);
        srv->user_len = ul;
        srv->pass_len = pl;
    }
    int r = km_uvstream_listen_tcp(loop, addr, 128, on_connection, srv, &srv->listener);
    if (r != 0) {
        sodium_memzero(srv->pass, sizeof srv->pass);
        free(srv);
        return r;
    }
    srv->listener->data = srv;
    *out = srv;
    return 0;
}

int km_socks5_server_addr(const struct km_socks5_server *s, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    int len = (int)sizeof *out;
    return uv_tcp_getsockname(s->listener, (struct sockaddr *)out, &len);
}

unsigned km_socks5_server_clients(const struct km_socks5_server *s)
{
    return s->n_clients;
}

void km_socks5_server_close(struct km_socks5_server *s)
{
    if (s == NULL || s->closing) {
        return;
    }
    s->closing = true;
    s->listener->data = NULL;
    km_uvstream_listener_close(s->listener);
    s->listener = NULL;
    while (s->sessions != NULL) {
        session_end(s->sessions);
    }
    server_unref(s);
}
