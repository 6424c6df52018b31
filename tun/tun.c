/* TUN egress engine (tun.h): device I/O, admission of connections, ICMPv6 answers. */
#include "tun/tun.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/log.h"
#include "core/relay.h"
#include "tun/dev.h"
#include "tun/tcpstack.h"

/* Packets read per readable event before yielding to the rest of the loop. */
#define READ_BATCH 256
#define RX_BUF 65536u
/* ICMPv6 errors: a token bucket of ICMP_BURST, refilled at ICMP_RATE per second. */
#define ICMP_RATE 200u
#define ICMP_BURST 50u
#define SWEEP_MS 1000u
/* Echo requests waiting for their round trip; more are dropped, as a busy router would. */
#define MAX_ECHOES 64u

enum pend_state {
    PEND_OPENING,  /* SYN held, mesh stream being opened */
    PEND_ADMITTED, /* SYN handed to lwIP, waiting for the handshake */
};

/* A connection between its SYN and its hand-over to a relay. */
struct pend {
    struct km_tcp_flow_id id;
    enum pend_state state;
    struct km_tun *tun;
    struct km_egress_req *req; /* PEND_OPENING */
    struct km_stream *remote;  /* PEND_ADMITTED: the mesh side */
    uint8_t *syn;              /* the held SYN */
    size_t syn_len;
    uint64_t deadline_ms;
    struct pend *next_bucket;
    struct pend *prev, *next; /* all pends */
};

/* An echo request waiting for the peer's answer. */
struct echo {
    struct km_tun *tun;
    void *handle; /* NULL: the slot is free */
    uint8_t *pkt;
    size_t len;
};

struct km_tun {
    uv_loop_t *loop;
    struct km_tun_opts o;
    struct km_tun_hooks hooks;
    int fd;
    char ifname[IFNAMSIZ];
    uv_poll_t poll;
    uv_timer_t sweep;
    bool sweep_running;
    struct km_tcpstack *stack;
    struct km_pkt_policy policy;
    uint8_t *rx;
    uint8_t tx[KM_PKT_ICMP_ERR_MAX];
    struct pend **buckets;
    size_t n_buckets; /* a power of two */
    uint64_t seed;
    struct pend *pends;
    unsigned n_pend;
    unsigned n_live;
    bool closing;
    int closing_handles;
    struct echo echoes[MAX_ECHOES];
    double icmp_tokens;
    uint64_t icmp_last_ms;
    struct km_tun_stats st;
};

void km_tun_opts_default(struct km_tun_opts *o)
{
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "keymesh0");
    o->mtu = 1500;
    o->max_flows = 4096;
    o->prefix = 0xfd6b;
    o->admit_timeout_ms = 20000; /* lwIP's own TCP_SYN_RCVD_TIMEOUT */
}

const char *km_tun_ifname(const struct km_tun *t)
{
    return t->ifname;
}

void km_tun_stats(const struct km_tun *t, struct km_tun_stats *out)
{
    *out = t->st;
    out->flows_pending = t->n_pend;
    out->flows_live = t->n_live;
}

/* ---- writing to the device ---- */

static void write_iov(struct km_tun *t, const struct iovec *iov, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += iov[i].iov_len;
    }
    ssize_t w = writev(t->fd, iov, (int)n);
    if (w < 0 || (size_t)w != total) {
        t->st.write_errors++; /* a full device queue: TCP retransmits */
        return;
    }
    t->st.pkts_out++;
    t->st.bytes_out += total;
}

static void write_pkt(struct km_tun *t, const uint8_t *p, size_t len)
{
    if (len == 0) {
        return;
    }
    struct iovec iov = {.iov_base = (void *)p, .iov_len = len};
    write_iov(t, &iov, 1);
}

static void stack_output(void *arg, const struct iovec *iov, size_t n)
{
    write_iov(arg, iov, n);
}

static bool icmp_allowed(struct km_tun *t)
{
    uint64_t now = uv_now(t->loop);
    t->icmp_tokens += (double)(now - t->icmp_last_ms) * ICMP_RATE / 1000.0;
    t->icmp_last_ms = now;
    if (t->icmp_tokens > ICMP_BURST) {
        t->icmp_tokens = ICMP_BURST;
    }
    if (t->icmp_tokens < 1.0) {
        t->st.icmp_ratelimited++;
        return false;
    }
    t->icmp_tokens -= 1.0;
    return true;
}

static void send_unreach(struct km_tun *t, const struct km_pkt *pk, uint8_t code)
{
    if (icmp_allowed(t)) {
        write_pkt(t, t->tx, km_pkt_build_unreach(pk, code, t->tx, sizeof t->tx));
    }
}

static void send_rst(struct km_tun *t, const struct km_pkt *pk)
{
    write_pkt(t, t->tx, km_pkt_build_rst(pk, t->tx, sizeof t->tx));
}

/* ---- the table of held connections ---- */

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 31);
}

static size_t bucket_of(const struct km_tun *t, const struct km_tcp_flow_id *id)
{
    uint64_t h = t->seed;
    uint64_t w;
    for (size_t i = 0; i < 16; i += 8) {
        memcpy(&w, id->src + i, 8);
        h = mix(h, w);
        memcpy(&w, id->dst + i, 8);
        h = mix(h, w);
    }
    h = mix(h, (uint64_t)id->sport << 16 | id->dport);
    return (size_t)h & (t->n_buckets - 1);
}

static bool id_equal(const struct km_tcp_flow_id *a, const struct km_tcp_flow_id *b)
{
    return a->sport == b->sport && a->dport == b->dport && memcmp(a->src, b->src, 16) == 0 &&
           memcmp(a->dst, b->dst, 16) == 0;
}

static struct pend *pend_find(const struct km_tun *t, const struct km_tcp_flow_id *id)
{
    for (struct pend *p = t->buckets[bucket_of(t, id)]; p != NULL; p = p->next_bucket) {
        if (id_equal(&p->id, id)) {
            return p;
        }
    }
    return NULL;
}

static void pend_unlink(struct km_tun *t, struct pend *p)
{
    struct pend **pp = &t->buckets[bucket_of(t, &p->id)];
    while (*pp != NULL && *pp != p) {
        pp = &(*pp)->next_bucket;
    }
    if (*pp == p) {
        *pp = p->next_bucket;
    }
    if (p->prev != NULL) {
        p->prev->next = p->next;
    } else {
        t->pends = p->next;
    }
    if (p->next != NULL) {
        p->next->prev = p->prev;
    }
    t->n_pend--;
}

/* Drop a held connection and whatever it holds. */
static void pend_free(struct km_tun *t, struct pend *p)
{
    pend_unlink(t, p);
    if (p->req != NULL) {
        t->hooks.egress->cancel(t->hooks.egress, p->req);
    }
    km_stream_close(p->remote);
    free(p->syn);
    free(p);
}

static void id_from_pkt(const struct km_pkt *pk, struct km_tcp_flow_id *id)
{
    memcpy(id->src, pk->src, 16);
    memcpy(id->dst, pk->dst, 16);
    id->sport = pk->sport;
    id->dport = pk->dport;
}

static void on_sweep(uv_timer_t *h);

static void sweep_start(struct km_tun *t)
{
    if (!t->sweep_running) {
        t->sweep_running = uv_timer_start(&t->sweep, on_sweep, SWEEP_MS, SWEEP_MS) == 0;
    }
}

static void on_sweep(uv_timer_t *h)
{
    struct km_tun *t = h->data;
    uint64_t now = uv_now(t->loop);
    for (struct pend *p = t->pends, *next; p != NULL; p = next) {
        next = p->next;
        if (p->state == PEND_ADMITTED && now >= p->deadline_ms) {
            t->st.flows_timeout++;
            pend_free(t, p);
        }
    }
    if (t->pends == NULL) {
        (void)uv_timer_stop(&t->sweep);
        t->sweep_running = false;
    }
}

/* ---- admission ---- */

static void stack_input(struct km_tun *t, const struct km_pkt *pk)
{
    if (km_tcpstack_input(t->stack, pk) != 0) {
        t->st.nomem++; /* dropped: TCP retransmits */
    }
}

static void on_relay_done(void *arg, int err, uint64_t a_to_b, uint64_t b_to_a)
{
    (void)err;
    (void)a_to_b;
    (void)b_to_a;
    struct km_tun *t = arg;
    t->n_live--;
    if (t->closing && t->n_live == 0 && t->closing_handles == 0) {
        free(t);
    }
}

/* lwIP completed a handshake: splice it to the stream that was opened for it. */
static void on_accepted(void *arg, const struct km_tcp_flow_id *id, struct km_stream *s)
{
    struct km_tun *t = arg;
    struct pend *p = pend_find(t, id);
    if (p == NULL || p->state != PEND_ADMITTED) {
        km_stream_close(s); /* not admitted by us: reset */
        return;
    }
    struct km_stream *remote = p->remote;
    p->remote = NULL;
    pend_free(t, p);
    t->n_live++;
    if (km_relay_start(s, remote, NULL, 0, on_relay_done, t) != 0) {
        t->n_live--; /* the relay closed both streams */
    }
}

static uint8_t unreach_code(int err)
{
    switch (err) {
    case KM_ERR_REFUSED:
        return KM_ICMP6_UNREACH_ADMIN;
    case -ENETUNREACH:
        return KM_ICMP6_UNREACH_NOROUTE;
    default:
        return KM_ICMP6_UNREACH_ADDR;
    }
}

static void on_opened(void *arg, int err, struct km_stream *target)
{
    struct pend *p = arg;
    struct km_tun *t = p->tun;
    p->req = NULL;
    struct km_pkt pk;
    enum km_pkt_kind k = km_pkt_parse(p->syn, p->syn_len, &t->policy, &pk);
    if (err != 0 || k != KM_PKT_TCP) {
        char a[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, p->id.dst, a, sizeof a);
        KM_DEBUG("tun: [%s]:%u: %s", a, p->id.dport, km_strerror(err));
        km_stream_close(target);
        if (err == -ECONNREFUSED || err == KM_ERR_REFUSED) {
            /* A closed or unexposed port: the program sees "connection refused". */
            t->st.flows_refused++;
            send_rst(t, &pk);
        } else {
            t->st.flows_unreach++;
            send_unreach(t, &pk, unreach_code(err));
        }
        pend_free(t, p);
        return;
    }
    p->remote = target;
    p->state = PEND_ADMITTED;
    p->deadline_ms = uv_now(t->loop) + t->o.admit_timeout_ms;
    t->st.flows_opened++;
    sweep_start(t);
    if (km_tcpstack_input(t->stack, &pk) != 0) {
        pend_free(t, p); /* out of memory: the program's SYN retry starts over */
    }
}

static void admit(struct km_tun *t, const struct km_pkt *pk)
{
    struct km_tcp_flow_id id;
    id_from_pkt(pk, &id);
    struct pend *p = pend_find(t, &id);
    if (p != NULL) {
        if (p->state == PEND_ADMITTED) {
            stack_input(t, pk); /* a retransmitted SYN: lwIP answers */
        }
        return; /* still opening: the retransmission waits with the first */
    }
    if (t->n_pend + t->n_live >= t->o.max_flows) {
        t->st.flows_limit++;
        send_rst(t, pk);
        return;
    }
    if (!km_pkt_l4_checksum_ok(pk)) {
        t->st.drops[KM_PKT_BAD_TCP]++;
        return;
    }
    p = calloc(1, sizeof *p);
    uint8_t *syn = malloc(pk->len);
    if (p == NULL || syn == NULL) {
        free(p);
        free(syn);
        return; /* the program retries the SYN */
    }
    memcpy(syn, pk->l4 - KM_PKT_IP6_HLEN, pk->len);
    p->id = id;
    p->tun = t;
    p->syn = syn;
    p->syn_len = pk->len;
    p->state = PEND_OPENING;
    size_t b = bucket_of(t, &id);
    p->next_bucket = t->buckets[b];
    t->buckets[b] = p;
    p->next = t->pends;
    if (t->pends != NULL) {
        t->pends->prev = p;
    }
    t->pends = p;
    t->n_pend++;

    char host[INET6_ADDRSTRLEN];
    char origin[INET6_ADDRSTRLEN + 16];
    inet_ntop(AF_INET6, pk->dst, host, sizeof host);
    inet_ntop(AF_INET6, pk->src, origin, sizeof origin);
    snprintf(origin + strlen(origin), sizeof origin - strlen(origin), " port %u", pk->sport);
    int r = t->hooks.egress->open(t->hooks.egress, host, pk->dport, origin, on_opened, p, &p->req);
    if (r != 0) {
        p->req = NULL;
        t->st.flows_unreach++;
        send_unreach(t, pk, unreach_code(r));
        pend_free(t, p);
    }
}

/* A segment for a held connection. While its stream is being opened lwIP has not seen the
 * SYN, so the segment is dropped (true); once admitted it goes to lwIP (false). A RST from
 * the program ends the hold either way. */
static bool held(struct km_tun *t, const struct km_pkt *pk)
{
    if (t->n_pend == 0) {
        return false;
    }
    struct km_tcp_flow_id id;
    id_from_pkt(pk, &id);
    struct pend *p = pend_find(t, &id);
    if (p == NULL) {
        return false;
    }
    bool opening = p->state == PEND_OPENING;
    if ((pk->flags & KM_TCP_RST) && km_pkt_l4_checksum_ok(pk)) {
        pend_free(t, p); /* the program gave up */
    }
    return opening;
}

static void on_echo_done(void *arg, int err)
{
    struct echo *e = arg;
    struct km_tun *t = e->tun;
    struct km_pkt pk;
    e->handle = NULL;
    if (km_pkt_parse(e->pkt, e->len, &t->policy, &pk) == KM_PKT_ECHO) {
        if (err == 0) {
            t->st.echo_replies++;
            write_pkt(t, t->rx + RX_BUF, km_pkt_build_echo_reply(&pk, t->rx + RX_BUF, RX_BUF));
        } else {
            t->st.echo_dropped++;
            send_unreach(t, &pk, KM_ICMP6_UNREACH_ADDR);
        }
    }
    free(e->pkt);
    e->pkt = NULL;
}

/* Answer an echo request once the peer answered a round trip over the mesh. */
static void echo(struct km_tun *t, const struct km_pkt *pk)
{
    struct echo *e = NULL;
    for (size_t i = 0; i < MAX_ECHOES && e == NULL; i++) {
        if (t->echoes[i].pkt == NULL) {
            e = &t->echoes[i];
        }
    }
    if (e == NULL || (e->pkt = malloc(pk->len)) == NULL) {
        t->st.echo_dropped++;
        return;
    }
    memcpy(e->pkt, pk->l4 - KM_PKT_IP6_HLEN, pk->len);
    e->len = pk->len;
    e->tun = t;
    if (t->hooks.echo(t->hooks.arg, pk->dst, on_echo_done, e, &e->handle) != 0) {
        free(e->pkt);
        e->pkt = NULL;
        e->handle = NULL;
        send_unreach(t, pk, KM_ICMP6_UNREACH_ADDR); /* no node has that VIP */
    }
}

static void handle(struct km_tun *t, const uint8_t *buf, size_t len)
{
    struct km_pkt pk;
    enum km_pkt_kind k = km_pkt_parse(buf, len, &t->policy, &pk);
    switch (k) {
    case KM_PKT_TCP:
        if ((pk.flags & (KM_TCP_SYN | KM_TCP_ACK | KM_TCP_RST)) == KM_TCP_SYN) {
            admit(t, &pk);
        } else if (!held(t, &pk)) {
            stack_input(t, &pk); /* lwIP's pcbs, or its RST */
        }
        return;
    case KM_PKT_ECHO:
        if (!km_pkt_l4_checksum_ok(&pk)) {
            t->st.drops[KM_PKT_ICMP_OTHER]++;
        } else {
            echo(t, &pk);
        }
        return;
    case KM_PKT_OTHER_L4:
        send_unreach(t, &pk,
                     t->hooks.known(t->hooks.arg, pk.dst) ? KM_ICMP6_UNREACH_PORT
                                                          : KM_ICMP6_UNREACH_ADDR);
        return;
    default:
        t->st.drops[k]++;
        return;
    }
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)events;
    struct km_tun *t = h->data;
    if (status < 0) {
        KM_WARN("tun %s: %s", t->ifname, uv_strerror(status));
        return;
    }
    for (int i = 0; i < READ_BATCH && !t->closing; i++) {
        ssize_t n = read(t->fd, t->rx, RX_BUF);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                KM_WARN("tun %s: read: %s", t->ifname, strerror(errno));
            }
            return;
        }
        t->st.pkts_in++;
        t->st.bytes_in += (uint64_t)n;
        handle(t, t->rx, (size_t)n);
    }
}

/* ---- life cycle ---- */

int km_tun_new_fd(uv_loop_t *loop, int fd, const struct km_tun_opts *o,
                  const struct km_tun_hooks *h, struct km_tun **out)
{
    *out = NULL;
    if (o->mtu < 1280 || o->mtu > 65535 || o->max_flows == 0) {
        close(fd);
        return KM_ERR_INVALID;
    }
    struct km_tun *t = calloc(1, sizeof *t);
    if (t == NULL) {
        close(fd);
        return -ENOMEM;
    }
    t->fd = fd;
    t->loop = loop;
    t->o = *o;
    t->hooks = *h;
    snprintf(t->ifname, sizeof t->ifname, "%s", o->name);
    t->policy = (struct km_pkt_policy){.prefix = o->prefix, .self_vip = t->o.vip, .mtu = o->mtu};
    t->icmp_tokens = ICMP_BURST;
    t->icmp_last_ms = uv_now(loop);
    t->n_buckets = 64;
    while (t->n_buckets < o->max_flows) {
        t->n_buckets <<= 1;
    }
    if (getrandom(&t->seed, sizeof t->seed, 0) != (ssize_t)sizeof t->seed) {
        t->seed = (uint64_t)uv_hrtime();
    }
    /* One buffer for reads, and past it one for echo replies, which are as long. */
    t->rx = malloc(2 * (size_t)RX_BUF);
    t->buckets = calloc(t->n_buckets, sizeof *t->buckets);
    if (t->rx == NULL || t->buckets == NULL) {
        free(t->rx);
        free(t->buckets);
        free(t);
        close(fd);
        return -ENOMEM;
    }
    int r = uv_poll_init(loop, &t->poll, fd);
    if (r != 0) {
        free(t->rx);
        free(t->buckets);
        free(t);
        close(fd);
        return r;
    }
    t->poll.data = t;
    (void)uv_timer_init(loop, &t->sweep); /* cannot fail */
    t->sweep.data = t;
    struct km_tcpstack_hooks sh = {.output = stack_output, .accepted = on_accepted, .arg = t};
    if ((r = km_tcpstack_new(loop, o->mtu, &sh, &t->stack)) != 0 ||
        (r = uv_poll_start(&t->poll, UV_READABLE, on_readable)) != 0) {
        km_tun_close(t); /* frees t once the handles closed */
        return r;
    }
    *out = t;
    return 0;
}

int km_tun_new(uv_loop_t *loop, const struct km_tun_opts *o, const struct km_tun_hooks *h,
               struct km_tun **out, const char **step)
{
    *out = NULL;
    int fd = -1;
    char ifname[IFNAMSIZ];
    int r = km_tundev_open(o->name, o->vip, 16, o->mtu, &fd, ifname, step);
    if (r != 0) {
        return r;
    }
    struct km_tun_opts o2 = *o;
    snprintf(o2.name, sizeof o2.name, "%s", ifname);
    *step = "start";
    return km_tun_new_fd(loop, fd, &o2, h, out);
}

static void on_closed(uv_handle_t *h)
{
    struct km_tun *t = h->data;
    if (--t->closing_handles == 0) {
        close(t->fd);
        free(t->rx);
        free(t->buckets);
        if (t->n_live == 0) {
            free(t);
        }
    }
}

void km_tun_close(struct km_tun *t)
{
    if (t == NULL || t->closing) {
        return;
    }
    t->closing = true;
    t->closing_handles = 2; /* first: relays ending below must not free t */
    while (t->pends != NULL) {
        pend_free(t, t->pends);
    }
    for (size_t i = 0; i < MAX_ECHOES; i++) {
        if (t->echoes[i].handle != NULL) {
            t->hooks.echo_cancel(t->echoes[i].handle);
        }
        free(t->echoes[i].pkt);
        t->echoes[i].pkt = NULL;
    }
    km_tcpstack_free(t->stack); /* relayed connections end (now or later) */
    t->stack = NULL;
    uv_close((uv_handle_t *)&t->poll, on_closed);
    uv_close((uv_handle_t *)&t->sweep, on_closed);
}
