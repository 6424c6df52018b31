/* The DNS server's I/O: UDP and TCP on one port, per-source rate limiting, TCP connection
 * limits (discovery/dns.h, docs/DNS.md). Every answer comes from km_dns_answer.
 *
 * Owner recovery is through handle->data everywhere in this file (STYLE.md section 8). The
 * server is freed only once its own two handles have closed and every connection object
 * (which points back to it) has been freed.
 *
 * UDP answers go through a small packet cache (as PowerDNS's authoritative server does): the
 * same query bytes (ID aside) from the same source address within PC_TTL_MS get the same
 * answer bytes with the query's ID, without parsing or building. km_dns_answer is a pure
 * function of those inputs and the backend's state, so the only cost is that a change in the
 * peer table shows up to PC_TTL_MS late, far inside the records' own TTL. */
#include "discovery/dns.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "identity/derive.h"

#define TCP_FRAME_MAX 65535u     /* RFC 7766 section 8: a 2-byte length prefix */
#define TCP_INITIAL 514u         /* enough for the prefix and a typical query */
#define UDP_QUEUE_MAX (1u << 20) /* bytes of UDP answers waiting for the socket to drain */
#define BIND_TRIES 16
#define RL_WAYS 4
#define RL_TABLE_MIN 16u
#define RL_TABLE_MAX 65536u
#define UDP_MMSG_CHUNKS                                                 \
    8u /* datagrams per recvmmsg; each chunk is libuv's 64 KiB maximum, \
        * but only the pages a datagram touches become resident */
#define UDP_CHUNK 65536u
#define PC_SLOTS 1024u    /* direct-mapped by keyed SipHash; table allocated on first use */
#define PC_TTL_MS 1000u   /* how long a cached answer is reused */
#define PC_QUERY_MAX 256u /* longer queries are not cached (typical: 30-60 bytes) */
#define PC_ANSWER_MAX 512u

/* One cached UDP answer. src is the requester's address (family, address, scope) since the
 * SVCB ranking depends on it; blob holds the query then the answer, both without their ID. */
struct pc_entry {
    uint64_t at_ms; /* 0 = empty */
    uint8_t src[21];
    uint16_t q_len, a_len;
    uint8_t *blob; /* owned; q_len + a_len bytes */
};

struct rl_entry {
    uint8_t key[16];  /* IPv4 address (mapped) or IPv6 /64 */
    uint64_t tokens;  /* in thousandths of a response */
    uint64_t last_ms; /* loop time of the last refill */
    bool used;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct km_dns_server *s;
    struct conn *prev, *next;
    struct sockaddr_storage peer;
    uint8_t *in; /* received bytes not yet answered */
    size_t in_len, in_cap;
    unsigned queued; /* answers written but not yet completed */
    unsigned pending_closes;
    bool closing, eof, reading;
};

struct tcp_write {
    uv_write_t req;
    struct conn *c;
    uint8_t data[];
};

struct udp_send {
    uv_udp_send_t req;
    uint8_t data[];
};

struct km_dns_server {
    uv_loop_t *loop;
    struct km_dns_opts o;
    struct km_dns_backend b;
    uv_udp_t udp;
    uv_tcp_t tcp;
    uint16_t port;
    unsigned pending_closes;
    unsigned conns_alive; /* conn objects not yet freed (open or closing) */
    unsigned conns_open;
    struct conn *conns;
    bool closing;
    struct km_dns_stats stats;
    struct rl_entry *rl;
    size_t rl_sets;
    uint8_t rl_hash_key[crypto_shorthash_KEYBYTES]; /* also keys the packet cache */
    struct pc_entry *pc;                            /* PC_SLOTS entries, or NULL */
    uint8_t *mbuf; /* UDP_MMSG_CHUNKS datagram-sized chunks for recvmmsg (libuv splits it) */
    uint8_t obuf[TCP_FRAME_MAX]; /* one answer at a time */
};

/* ---- rate limiting ---- */

static void rl_key(const struct sockaddr *sa, uint8_t key[16])
{
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        key[10] = 0xff;
        key[11] = 0xff;
        memcpy(key + 12, &sin->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            memcpy(key, sin6->sin6_addr.s6_addr, 16);
        } else {
            memcpy(key, sin6->sin6_addr.s6_addr, 8); /* one subnet, one bucket */
        }
    }
}

/* A token bucket per source: rate per second, burst of rate. The table is set-associative
 * (RL_WAYS entries per set, chosen by keyed SipHash so a sender cannot aim at one set); a new
 * source replaces the least recently refilled entry of its set. */
static bool rl_allow(struct km_dns_server *s, const struct sockaddr *from, uint64_t now_ms)
{
    if (s->o.rate_limit == 0 || s->rl == NULL) {
        return true;
    }
    uint8_t key[16];
    uint8_t h[crypto_shorthash_BYTES];
    uint64_t hv = 0;
    rl_key(from, key);
    crypto_shorthash(h, key, sizeof key, s->rl_hash_key);
    for (size_t i = 0; i < sizeof hv; i++) {
        hv = hv << 8 | h[i];
    }
    struct rl_entry *set = &s->rl[(hv % s->rl_sets) * RL_WAYS];
    uint64_t rate = s->o.rate_limit, cap = rate * 1000u;
    struct rl_entry *e = NULL, *victim = &set[0];
    for (size_t i = 0; i < RL_WAYS; i++) {
        if (set[i].used && memcmp(set[i].key, key, 16) == 0) {
            e = &set[i];
            break;
        }
        if (!set[i].used || (victim->used && set[i].last_ms < victim->last_ms)) {
            victim = &set[i];
        }
    }
    if (e == NULL) {
        e = victim;
        memcpy(e->key, key, 16);
        e->used = true;
        e->tokens = cap;
        e->last_ms = now_ms;
    }
    if (now_ms > e->last_ms) {
        uint64_t add = (now_ms - e->last_ms) * rate; /* rate/s = rate thousandths per ms */
        e->tokens = add >= cap || e->tokens >= cap - add ? cap : e->tokens + add;
        e->last_ms = now_ms;
    }
    if (e->tokens < 1000u) {
        return false;
    }
    e->tokens -= 1000u;
    return true;
}

/* ---- lifetime ---- */

static void server_free(struct km_dns_server *s)
{
    free(s->rl);
    for (size_t i = 0; s->pc != NULL && i < PC_SLOTS; i++) {
        free(s->pc[i].blob);
    }
    free(s->pc);
    free(s->mbuf);
    free(s);
}

static void server_maybe_free(struct km_dns_server *s)
{
    if (s->closing && s->pending_closes == 0 && s->conns_alive == 0) {
        server_free(s);
    }
}

static void server_handle_closed(uv_handle_t *h)
{
    struct km_dns_server *s = h->data;
    s->pending_closes--;
    server_maybe_free(s);
}

static void conn_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->pending_closes > 0) {
        return;
    }
    struct km_dns_server *s = c->s;
    free(c->in);
    free(c);
    s->conns_alive--;
    server_maybe_free(s);
}

static void conn_close(struct conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    struct km_dns_server *s = c->s;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    s->conns_open--;
    c->pending_closes = 2;
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

/* ---- UDP ---- */

/* ---- UDP packet cache ---- */

static void pc_src(const struct sockaddr *sa, uint8_t src[21])
{
    memset(src, 0, 21);
    src[0] = (uint8_t)sa->sa_family;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        memcpy(src + 1, &sin->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(src + 1, &sin6->sin6_addr, 16);
        memcpy(src + 17, &sin6->sin6_scope_id, 4);
    }
}

/* The slot for (src, query without ID); NULL when the query cannot be cached. */
static struct pc_entry *pc_slot(struct km_dns_server *s, const uint8_t src[21], const uint8_t *q,
                                size_t len)
{
    if (len <= 2 || len - 2 > PC_QUERY_MAX) {
        return NULL;
    }
    if (s->pc == NULL && (s->pc = calloc(PC_SLOTS, sizeof *s->pc)) == NULL) {
        return NULL;
    }
    uint8_t key[21 + PC_QUERY_MAX];
    memcpy(key, src, 21);
    memcpy(key + 21, q + 2, len - 2);
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, key, 21 + (len - 2), s->rl_hash_key);
    uint32_t hv = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16;
    return &s->pc[hv % PC_SLOTS];
}

/* A fresh cached answer to q from src, written to s->obuf with q's ID. Returns its length or
 * 0 on a miss. */
static size_t pc_lookup(struct km_dns_server *s, const struct pc_entry *e, const uint8_t src[21],
                        const uint8_t *q, size_t len, uint64_t now_ms)
{
    if (e == NULL || e->at_ms == 0 || now_ms - e->at_ms >= PC_TTL_MS || e->q_len != len - 2 ||
        memcmp(e->src, src, 21) != 0 || memcmp(e->blob, q + 2, len - 2) != 0) {
        return 0;
    }
    s->obuf[0] = q[0];
    s->obuf[1] = q[1];
    memcpy(s->obuf + 2, e->blob + e->q_len, e->a_len);
    return (size_t)e->a_len + 2;
}

static void pc_store(struct pc_entry *e, const uint8_t src[21], const uint8_t *q, size_t len,
                     const uint8_t *a, size_t a_len, uint64_t now_ms)
{
    if (e == NULL || a_len <= 2 || a_len - 2 > PC_ANSWER_MAX) {
        return;
    }
    size_t need = (len - 2) + (a_len - 2);
    uint8_t *blob = (size_t)e->q_len + e->a_len >= need ? e->blob : realloc(e->blob, need);
    if (blob == NULL) {
        return; /* the old entry stays valid */
    }
    e->blob = blob;
    e->at_ms = now_ms == 0 ? 1 : now_ms;
    memcpy(e->src, src, 21);
    e->q_len = (uint16_t)(len - 2);
    e->a_len = (uint16_t)(a_len - 2);
    memcpy(e->blob, q + 2, e->q_len);
    memcpy(e->blob + e->q_len, a + 2, e->a_len);
}

static void udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct km_dns_server *s = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)s->mbuf, UDP_MMSG_CHUNKS * UDP_CHUNK);
}

static void udp_sent(uv_udp_send_t *req, int status)
{
    (void)status;
    free(req); /* struct udp_send begins with req */
}

static void udp_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                     unsigned flags)
{
    struct km_dns_server *s = h->data;
    const uint8_t *q = (const uint8_t *)buf->base; /* this datagram's chunk */
    if (s->closing || nread < 0 || addr == NULL || (nread == 0 && addr == NULL)) {
        return;
    }
    s->stats.queries++;
    if ((flags & UV_UDP_PARTIAL) != 0) {
        s->stats.dropped++; /* larger than any DNS message */
        return;
    }
    uint64_t now = uv_now(s->loop);
    if (!rl_allow(s, addr, now)) {
        s->stats.rate_limited++;
        s->stats.dropped++;
        return;
    }
    uint8_t src[21];
    pc_src(addr, src);
    struct pc_entry *e = pc_slot(s, src, q, (size_t)nread);
    size_t len = pc_lookup(s, e, src, q, (size_t)nread, now);
    if (len > 0) {
        s->stats.cache_hits++;
    } else {
        struct km_buf out;
        km_buf_init_fixed(&out, s->obuf, sizeof s->obuf);
        if (km_dns_answer(&s->o, &s->b, q, (size_t)nread, addr, false, &out) != 0) {
            s->stats.dropped++;
            return;
        }
        len = km_buf_len(&out);
        pc_store(e, src, q, (size_t)nread, s->obuf, len, now);
    }
    uv_buf_t ob = uv_buf_init((char *)s->obuf, (unsigned)len);
    int r = uv_udp_try_send(&s->udp, &ob, 1, addr);
    if (r >= 0) {
        return;
    }
    if (r != UV_EAGAIN || uv_udp_get_send_queue_size(&s->udp) > UDP_QUEUE_MAX) {
        s->stats.dropped++;
        return;
    }
    struct udp_send *u = malloc(sizeof *u + len);
    if (u == NULL) {
        s->stats.dropped++;
        return;
    }
    memcpy(u->data, s->obuf, len);
    ob = uv_buf_init((char *)u->data, (unsigned)len);
    if (uv_udp_send(&u->req, &s->udp, &ob, 1, addr, udp_sent) != 0) {
        free(u);
        s->stats.dropped++;
    }
}

/* ---- TCP ---- */

static void conn_read_start(struct conn *c);

static void conn_idle(uv_timer_t *t)
{
    conn_close(t->data);
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    size_t need = TCP_INITIAL;
    if (c->in_len >= 2) {
        need = 2u + ((size_t)c->in[0] << 8 | c->in[1]);
    }
    if (need < c->in_len + 1) {
        need = c->in_len + 1; /* a complete frame waits: read is stopped, this is defensive */
    }
    if (c->in_cap < need) {
        uint8_t *p = realloc(c->in, need);
        if (p == NULL) {
            *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
            return;
        }
        c->in = p;
        c->in_cap = need;
    }
    *buf = uv_buf_init((char *)c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void conn_written(uv_write_t *req, int status)
{
    struct tcp_write *w = (struct tcp_write *)(void *)req;
    struct conn *c = w->c;
    free(w);
    c->queued--;
    if (c->closing) {
        return;
    }
    if (status != 0) {
        conn_close(c);
        return;
    }
    conn_read_start(c);
    if (!c->closing && c->eof && c->queued == 0) {
        conn_close(c); /* the peer half-closed and has every answer */
    }
}

/* Answer every complete frame in c->in while fewer than tcp_max_queued answers are queued. */
static void conn_process(struct conn *c)
{
    struct km_dns_server *s = c->s;
    size_t off = 0;
    while (!c->closing && c->queued < s->o.tcp_max_queued && c->in_len - off >= 2) {
        struct km_buf frame;
        const uint8_t *msg = NULL;
        size_t mlen = 0;
        km_buf_init_view(&frame, c->in + off, c->in_len - off);
        if (km_buf_get_string16_view(&frame, &msg, &mlen) != 0) {
            break; /* incomplete */
        }
        off += 2u + mlen;
        s->stats.queries++;
        struct km_buf out;
        km_buf_init_fixed(&out, s->obuf, sizeof s->obuf);
        if (km_dns_answer(&s->o, &s->b, msg, mlen, (const struct sockaddr *)&c->peer, true, &out) !=
            0) {
            s->stats.dropped++;
            conn_close(c); /* RFC 7766 section 6.2.4 lets us: nothing sensible to answer */
            break;
        }
        size_t len = km_buf_len(&out);
        struct tcp_write *w = malloc(sizeof *w + 2 + len);
        if (w == NULL) {
            conn_close(c);
            break;
        }
        w->c = c;
        w->data[0] = (uint8_t)(len >> 8);
        w->data[1] = (uint8_t)len;
        memcpy(w->data + 2, s->obuf, len);
        uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)(2 + len));
        if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, conn_written) != 0) {
            free(w);
            conn_close(c);
            break;
        }
        c->queued++;
        uv_timer_again(&c->timer);
    }
    if (off > 0 && !c->closing) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
}

static void conn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = st->data;
    (void)buf;
    if (c->closing || nread == 0) {
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF && c->queued > 0) {
            c->eof = true; /* half-closed: finish the answers first */
            uv_read_stop(st);
            c->reading = false;
            return;
        }
        conn_close(c);
        return;
    }
    c->in_len += (size_t)nread;
    conn_process(c);
    if (!c->closing && c->queued >= c->s->o.tcp_max_queued) {
        uv_read_stop(st); /* pipelining bound: resume as answers drain */
        c->reading = false;
    }
}

static void conn_read_start(struct conn *c)
{
    conn_process(c);
    if (!c->closing && !c->reading && !c->eof && c->queued < c->s->o.tcp_max_queued) {
        if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read) != 0) {
            conn_close(c);
            return;
        }
        c->reading = true;
    }
}

static void tcp_accept(uv_stream_t *l, int status)
{
    struct km_dns_server *s = l->data;
    if (status != 0 || s->closing) {
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return; /* the connection waits in the backlog */
    }
    c->s = s;
    if (uv_tcp_init(s->loop, &c->tcp) != 0) {
        free(c);
        return;
    }
    c->tcp.data = c;
    s->conns_alive++;
    s->conns_open++;
    c->next = s->conns;
    if (s->conns != NULL) {
        s->conns->prev = c;
    }
    s->conns = c;
    if (uv_timer_init(s->loop, &c->timer) != 0) {
        /* Only the TCP handle to close. */
        c->closing = true;
        if (c->next != NULL) {
            c->next->prev = NULL;
        }
        s->conns = c->next;
        s->conns_open--;
        c->pending_closes = 1;
        uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
        return;
    }
    c->timer.data = c;
    int addrlen = (int)sizeof c->peer;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0 ||
        uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &addrlen) != 0 ||
        s->conns_open > s->o.tcp_max_conns) {
        conn_close(c); /* at the limit: existing connections go on, this one is refused */
        return;
    }
    (void)uv_tcp_nodelay(&c->tcp, 1); /* DESIGN.md section 4; a failure only costs latency */
    uint64_t idle = s->o.tcp_idle_ms > 0 ? s->o.tcp_idle_ms : 10000;
    if (uv_timer_start(&c->timer, conn_idle, idle, idle) != 0) {
        conn_close(c);
        return;
    }
    conn_read_start(c);
}

/* ---- set-up ---- */

/* Bind a UDP and a TCP socket to the same address and port; with port 0, retry until an
 * ephemeral port is free for both. */
static int bind_pair(const struct sockaddr *addr, int *ufd, int *tfd, uint16_t *port)
{
    struct sockaddr_storage a;
    socklen_t alen =
        addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6) {
        return KM_ERR_INVALID;
    }
    int r = 0;
    for (int i = 0; i < BIND_TRIES; i++) {
        memset(&a, 0, sizeof a);
        memcpy(&a, addr, alen);
        int u = socket(addr->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int t = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        r = 0;
        if (u < 0 || t < 0) {
            r = KM_ERR_SYS(errno);
        } else if (bind(u, (struct sockaddr *)&a, alen) != 0) {
            r = KM_ERR_SYS(errno);
        } else {
            socklen_t got = sizeof a;
            if (getsockname(u, (struct sockaddr *)&a, &got) != 0 ||
                setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
                bind(t, (struct sockaddr *)&a, alen) != 0) {
                r = KM_ERR_SYS(errno);
            }
        }
        if (r == 0) {
            *ufd = u;
            *tfd = t;
            *port = ntohs(a.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&a)->sin6_port
                                                  : ((struct sockaddr_in *)&a)->sin_port);
            return 0;
        }
        if (u >= 0) {
            close(u);
        }
        if (t >= 0) {
            close(t);
        }
        uint16_t want = ntohs(addr->sa_family == AF_INET6
                                  ? ((const struct sockaddr_in6 *)(const void *)addr)->sin6_port
                                  : ((const struct sockaddr_in *)(const void *)addr)->sin_port);
        if (want != 0 || r != -EADDRINUSE) {
            break;
        }
    }
    return r;
}

int km_dns_server_new(uv_loop_t *loop, const struct sockaddr *addr, const struct km_dns_opts *o,
                      const struct km_dns_backend *b, struct km_dns_server **out)
{
    *out = NULL;
    if (km_suffix_check(o->suffix) != 0 || sodium_init() < 0) {
        return KM_ERR_INVALID;
    }
    struct km_dns_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return -ENOMEM;
    }
    s->mbuf = malloc(UDP_MMSG_CHUNKS * UDP_CHUNK);
    if (s->mbuf == NULL) {
        free(s);
        return -ENOMEM;
    }
    s->loop = loop;
    s->o = *o;
    if (b != NULL) {
        s->b = *b;
    }
    if (s->o.tcp_max_queued == 0) {
        s->o.tcp_max_queued = 1;
    }
    if (s->o.rate_limit > 0) {
        size_t n = s->o.rate_table;
        n = n < RL_TABLE_MIN ? RL_TABLE_MIN : n > RL_TABLE_MAX ? RL_TABLE_MAX : n;
        s->rl_sets = n / RL_WAYS;
        s->rl = calloc(s->rl_sets * RL_WAYS, sizeof *s->rl);
        if (s->rl == NULL) {
            server_free(s);
            return -ENOMEM;
        }
    }
    randombytes_buf(s->rl_hash_key, sizeof s->rl_hash_key);
    int ufd = -1, tfd = -1;
    int r = bind_pair(addr, &ufd, &tfd, &s->port);
    if (r != 0) {
        server_free(s);
        return r;
    }
    /* From here on the handles own the descriptors; failures close through the loop. */
    s->udp.data = s;
    s->tcp.data = s;
    /* recvmmsg: a burst of queries costs one system call, not one each. */
    if ((r = uv_udp_init_ex(loop, &s->udp, AF_UNSPEC | UV_UDP_RECVMMSG)) != 0) {
        close(ufd);
        close(tfd);
        server_free(s);
        return r;
    }
    s->pending_closes++;
    if ((r = uv_tcp_init(loop, &s->tcp)) != 0) {
        close(tfd);
        (void)uv_udp_open(&s->udp, ufd);
        km_dns_server_close(s);
        return r;
    }
    s->pending_closes++;
    if ((r = uv_udp_open(&s->udp, ufd)) != 0) {
        close(ufd);
        close(tfd);
        km_dns_server_close(s);
        return r;
    }
    if ((r = uv_tcp_open(&s->tcp, tfd)) != 0) {
        close(tfd);
        km_dns_server_close(s);
        return r;
    }
    if ((r = uv_udp_recv_start(&s->udp, udp_alloc, udp_recv)) != 0 ||
        (r = uv_listen((uv_stream_t *)&s->tcp, 128, tcp_accept)) != 0) {
        km_dns_server_close(s);
        return r;
    }
    *out = s;
    return 0;
}

uint16_t km_dns_server_port(const struct km_dns_server *s)
{
    return s->port;
}

void km_dns_server_stats(const struct km_dns_server *s, struct km_dns_stats *out)
{
    *out = s->stats;
}

void km_dns_server_close(struct km_dns_server *s)
{
    if (s == NULL || s->closing) {
        return;
    }
    s->closing = true;
    while (s->conns != NULL) {
        conn_close(s->conns);
    }
    /* pending_closes counts the handles initialised; close exactly those. */
    unsigned n = s->pending_closes;
    if (n >= 1) {
        uv_close((uv_handle_t *)&s->udp, server_handle_closed);
    }
    if (n >= 2) {
        uv_close((uv_handle_t *)&s->tcp, server_handle_closed);
    }
    if (n == 0) {
        server_maybe_free(s);
    }
}
