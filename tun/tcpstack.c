/* lwIP glue for the TUN device (tcpstack.h): single-threaded lwIP (lwip_init, timers from a
 * libuv timer), segments injected with tcp_input, one pcb per local connection exposed as a
 * km_stream.
 *
 * Ownership (STYLE.md section 9): a flow is the stream's memory and points at its pcb; the
 * pcb's arg points back. lwIP's error callback means the pcb is already gone: it only clears
 * flow->pcb. Closing detaches every callback from the pcb before tcp_close/tcp_abort, so
 * lwIP never calls into a freed flow. Received pbuf chains queue on the flow (one owner)
 * until the consumer takes them; only then does tcp_recved open lwIP's window, which is the
 * backpressure towards the local program. */
#include "tun/tcpstack.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lwip/init.h>
#include <lwip/ip.h>
#include <lwip/ip6.h>
#include <lwip/netif.h>
#include <lwip/pbuf.h>
#include <lwip/priv/tcp_priv.h>
#include <lwip/prot/ip6.h>
#include <lwip/tcp.h>
#include <lwip/timeouts.h>

#include "core/buf.h"
#include "core/log.h"

/* lwIP's TCP timers want a tick every TCP_TMR_INTERVAL (250 ms) while any pcb exists; after
 * the last connection the tick goes on through TIME-WAIT (2 MSL), then stops so an idle
 * node does not wake up. */
#define TICK_MS TCP_TMR_INTERVAL
#define IDLE_TICKS ((2u * TCP_MSL + 10000u) / TICK_MS)
#define MAX_LISTENERS 64u
/* Bytes a stream queues beyond lwIP's own send buffer (the relay stops writing at
 * KM_STREAM_HIGH_WATER; this is the hard ceiling). */
#define TX_QUEUE_MAX (4u << 20)
/* The send buffer each connection gets: what lwIP's segment queue can hold, less headroom. */
#define SND_BUF ((tcpwnd_size_t)((TCP_SND_QUEUELEN - 8) * TCP_MSS))

struct flow {
    struct km_stream s;     /* first */
    struct km_tcpstack *st; /* NULL once the stack is gone */
    struct tcp_pcb *pcb;    /* NULL once lwIP freed it or we let go of it */
    struct km_tcp_flow_id id;
    struct pbuf *rxq; /* received, not yet delivered */
    struct km_buf txq;
    int end_err;      /* why lwIP ended it (valid when ended_lwip) */
    bool handed_over; /* the accepted hook has it */
    bool reading;
    bool eof_in;         /* FIN received (queued after rxq) */
    bool ended_lwip;     /* lwIP reported an error: the pcb is gone */
    bool end_delivered;  /* on_end called */
    bool shut_requested; /* consumer asked for FIN */
    bool shut_done;      /* FIN handed to lwIP */
    bool user_closed;
    bool above_high;
    bool queued; /* on the pass list */
    struct flow *next_pass;
    struct flow *prev, *next; /* all flows of the stack */
    char desc[80];
};

struct listener {
    struct tcp_pcb *pcb;
    uint16_t port;
    uint64_t last_used;
};

struct km_tcpstack {
    uv_loop_t *loop;
    struct km_tcpstack_hooks hooks;
    struct netif nif;
    uv_timer_t tick;
    uv_idle_t pass;
    bool tick_running;
    unsigned idle_ticks;
    struct flow *flows;
    struct flow *pass_head;
    struct listener listeners[MAX_LISTENERS];
    size_t n_listeners;
    uint64_t use_clock;
    struct km_tcpstack_stats stats;
    int closing_handles;
    uint8_t scratch[TCP_WND]; /* one flow's delivery at a time (deliver) */
};

static bool lwip_ready;
static struct km_tcpstack *the_stack;

/* ---- the pass: everything consumers see happens here, outside lwIP ---- */

static void on_pass(uv_idle_t *h);

static void kick(struct flow *f)
{
    if (f->queued || f->st == NULL) {
        return;
    }
    f->queued = true;
    f->next_pass = f->st->pass_head;
    f->st->pass_head = f;
    (void)uv_idle_start(&f->st->pass, on_pass);
}

static void unlink_flow(struct flow *f)
{
    struct km_tcpstack *st = f->st;
    if (st == NULL) {
        return;
    }
    if (f->prev != NULL) {
        f->prev->next = f->next;
    } else {
        st->flows = f->next;
    }
    if (f->next != NULL) {
        f->next->prev = f->prev;
    }
    f->prev = f->next = NULL;
}

/* Stop lwIP from calling us about this pcb. */
static void detach_pcb(struct tcp_pcb *pcb)
{
    tcp_arg(pcb, NULL);
    tcp_recv(pcb, NULL);
    tcp_sent(pcb, NULL);
    tcp_err(pcb, NULL);
}

static void flow_free(struct flow *f)
{
    if (f->rxq != NULL) {
        pbuf_free(f->rxq);
    }
    km_buf_reset(&f->txq);
    free(f);
}

/* Let go of the pcb: a clean close when both directions finished, else RST. */
static void release_pcb(struct flow *f)
{
    struct tcp_pcb *pcb = f->pcb;
    if (pcb == NULL) {
        return;
    }
    f->pcb = NULL;
    detach_pcb(pcb);
    /* Graceful when our FIN is out (or was asked for and nothing is queued) and nothing
     * received is left unread; tcp_close sends the FIN if it is not out yet. */
    bool clean =
        (f->shut_done || (f->shut_requested && km_buf_len(&f->txq) == 0)) && f->rxq == NULL;
    if (clean) {
        if (tcp_close(pcb) == ERR_OK) {
            return;
        }
    }
    tcp_abort(pcb);
}

static void deliver_end(struct flow *f, int err)
{
    if (f->end_delivered || f->user_closed) {
        return;
    }
    f->end_delivered = true;
    if (f->s.on_end != NULL) {
        f->s.on_end(&f->s, err);
    }
}

/* Move queued bytes into lwIP's send buffer. */
/* Copy up to len bytes into lwIP's send buffer; returns how many it took. more: further
 * bytes follow at once (no PSH yet). */
static size_t write_some(struct tcp_pcb *pcb, const uint8_t *data, size_t len, bool more)
{
    size_t done = 0;
    /* Bounded: each round takes bytes or stops. */
    while (done < len) {
        size_t room = tcp_sndbuf(pcb);
        if (room == 0 || tcp_sndqueuelen(pcb) >= TCP_SND_QUEUELEN - 1) {
            break;
        }
        size_t n = len - done;
        n = n > room ? room : n;
        /* In 16 KiB pieces, so the last ones still fit when the segment queue is nearly full. */
        n = n > 16384u ? 16384u : n;
        u8_t flags = TCP_WRITE_FLAG_COPY;
        if (more || done + n < len) {
            flags |= TCP_WRITE_FLAG_MORE;
        }
        if (tcp_write(pcb, data + done, (u16_t)n, flags) != ERR_OK) {
            break; /* out of memory or queue slots: retried on the next ACK */
        }
        done += n;
    }
    return done;
}

/* Move queued bytes into lwIP's send buffer. Safe inside lwIP's sent callback: it calls no
 * consumer callback and never frees the pcb. */
static bool push_queued(struct flow *f)
{
    size_t len = km_buf_len(&f->txq);
    if (f->pcb == NULL || len == 0) {
        return false;
    }
    size_t n = write_some(f->pcb, km_buf_peek_ptr(&f->txq), len, false);
    if (km_buf_skip(&f->txq, n) != 0 || km_buf_len(&f->txq) == 0) {
        km_buf_clear(&f->txq);
    }
    return n > 0;
}

/* push_queued, then the FIN once everything is in, and send. */
static void push(struct flow *f)
{
    struct tcp_pcb *pcb = f->pcb;
    if (pcb == NULL) {
        return;
    }
    bool wrote = push_queued(f);
    if (km_buf_len(&f->txq) == 0 && f->shut_requested && !f->shut_done) {
        if (tcp_shutdown(pcb, 0, 1) == ERR_OK) {
            f->shut_done = true;
            wrote = true;
        }
    }
    if (wrote) {
        (void)tcp_output(pcb);
    }
}

/* Deliver queued bytes to the consumer while it reads. The segments lwIP queued (up to its
 * 64 KiB window) go out as one contiguous block: the mesh then sends a few large SSH packets
 * instead of one per TCP segment, which is most of the cost per byte. */
static void deliver(struct flow *f)
{
    struct km_tcpstack *st = f->st;
    /* Bounded: each round consumes at least one pbuf or stops. */
    while (f->rxq != NULL && f->reading && !f->user_closed) {
        size_t n = 0;
        struct pbuf *q = f->rxq;
        while (q != NULL && n + q->len <= sizeof st->scratch) {
            memcpy(st->scratch + n, q->payload, q->len);
            n += q->len;
            struct pbuf *next = q->next;
            /* Unchain q: the rest of the chain keeps the reference q held on it. */
            q->next = NULL;
            q->tot_len = q->len;
            pbuf_free(q);
            q = next;
        }
        f->rxq = q;
        if (n == 0) {
            return; /* not reached: a pbuf is never longer than the scratch buffer */
        }
        if (f->pcb != NULL) {
            tcp_recved(f->pcb, (u16_t)n);
        }
        if (f->s.on_data != NULL) {
            f->s.on_data(&f->s, st->scratch, n);
        }
    }
}

static void flow_pass(struct flow *f)
{
    struct km_tcpstack *st = f->st;
    if (f->user_closed) {
        /* A close after shutdown is graceful: what was queued still goes out, then FIN. */
        if (f->shut_requested && f->pcb != NULL && !f->ended_lwip) {
            push(f);
            if (km_buf_len(&f->txq) > 0) {
                return; /* the next ACK kicks us again */
            }
        }
        release_pcb(f);
        unlink_flow(f);
        if (st != NULL && st->stats.streams > 0 && f->handed_over) {
            st->stats.streams--;
        }
        flow_free(f);
        return;
    }
    if (!f->handed_over) {
        f->handed_over = true;
        st->stats.streams++;
        st->hooks.accepted(st->hooks.arg, &f->id, &f->s);
        if (f->user_closed) {
            kick(f);
            return;
        }
    }
    push(f);
    if (f->above_high && km_buf_len(&f->txq) <= KM_STREAM_LOW_WATER) {
        f->above_high = false;
        if (f->s.on_drain != NULL) {
            f->s.on_drain(&f->s);
        }
    }
    deliver(f);
    if (f->user_closed) {
        kick(f);
        return;
    }
    if (f->rxq == NULL && f->eof_in && f->reading) {
        deliver_end(f, 0);
    } else if (f->ended_lwip) {
        deliver_end(f, f->end_err);
    }
    if (f->user_closed) {
        kick(f);
    }
}

static void on_pass(uv_idle_t *h)
{
    struct km_tcpstack *st = h->data;
    /* Take the list: flows kicked while it runs go on a fresh list for the next pass. */
    struct flow *list = st->pass_head;
    st->pass_head = NULL;
    while (list != NULL) {
        struct flow *f = list;
        list = f->next_pass;
        f->queued = false;
        f->next_pass = NULL;
        flow_pass(f);
    }
    if (st->pass_head == NULL) {
        (void)uv_idle_stop(&st->pass);
    }
}

/* ---- lwIP callbacks: record and kick, nothing more ---- */

static err_t on_recv(void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err)
{
    (void)pcb;
    struct flow *f = arg;
    if (f == NULL) { /* not reached: callbacks are detached first */
        if (p != NULL) {
            pbuf_free(p);
        }
        return ERR_OK;
    }
    if (p == NULL) {
        f->eof_in = true;
    } else if (err != ERR_OK) {
        pbuf_free(p);
    } else if (f->rxq == NULL) {
        f->rxq = p;
    } else {
        pbuf_cat(f->rxq, p); /* takes over p's reference */
    }
    kick(f);
    return ERR_OK;
}

static err_t on_sent(void *arg, struct tcp_pcb *pcb, u16_t len)
{
    (void)pcb;
    (void)len;
    struct flow *f = arg;
    if (f != NULL) {
        /* Refill lwIP's send buffer now rather than a loop turn later (tcp_input sends it on
         * return); the pass tells the consumer about the drained queue. */
        (void)push_queued(f);
        kick(f);
    }
    return ERR_OK;
}

static void on_err(void *arg, err_t err)
{
    struct flow *f = arg;
    if (f == NULL) {
        return;
    }
    f->pcb = NULL; /* already freed by lwIP */
    f->ended_lwip = true;
    f->end_err = err == ERR_RST ? -ECONNRESET : err == ERR_ABRT ? -ECONNABORTED : -ETIMEDOUT;
    if (f->st != NULL) {
        f->st->stats.resets++;
    }
    kick(f);
}

/* ---- the km_stream face ---- */

static int op_write(struct km_stream *s, const uint8_t *data, size_t len)
{
    struct flow *f = (struct flow *)s;
    if (f->user_closed || f->shut_requested || f->pcb == NULL) {
        return KM_ERR_CLOSED;
    }
    if (len == 0) {
        return 0;
    }
    /* Straight into lwIP's send buffer when nothing waits before these bytes; queue the rest. */
    size_t done = 0;
    if (km_buf_len(&f->txq) == 0) {
        done = write_some(f->pcb, data, len, false);
    }
    if (done < len) {
        int r = km_buf_put_bytes(&f->txq, data + done, len - done);
        if (r != 0) {
            if (done > 0) {
                (void)tcp_output(f->pcb);
            }
            return r; /* not reached below TX_QUEUE_MAX: the relay pauses at the high mark */
        }
        if (km_buf_len(&f->txq) > KM_STREAM_HIGH_WATER) {
            f->above_high = true;
        }
    }
    (void)tcp_output(f->pcb); /* tcp_write/tcp_output call no callback of ours */
    return 0;
}

static size_t op_write_queue(const struct km_stream *s)
{
    return km_buf_len(&((const struct flow *)s)->txq);
}

static void op_read_start(struct km_stream *s)
{
    struct flow *f = (struct flow *)s;
    if (!f->reading && !f->user_closed) {
        f->reading = true;
        kick(f);
    }
}

static void op_read_stop(struct km_stream *s)
{
    ((struct flow *)s)->reading = false;
}

static void op_shutdown(struct km_stream *s)
{
    struct flow *f = (struct flow *)s;
    if (!f->shut_requested && !f->user_closed) {
        f->shut_requested = true;
        kick(f);
    }
}

static void op_close(struct km_stream *s)
{
    struct flow *f = (struct flow *)s;
    if (f->user_closed) {
        return;
    }
    f->user_closed = true;
    f->reading = false;
    if (f->st == NULL) { /* the stack is gone: nothing references f */
        flow_free(f);
        return;
    }
    kick(f);
}

static const char *op_describe(const struct km_stream *s)
{
    return ((const struct flow *)s)->desc;
}

static const struct km_stream_ops flow_ops = {
    .write = op_write,
    .write_queue = op_write_queue,
    .read_start = op_read_start,
    .read_stop = op_read_stop,
    .shutdown = op_shutdown,
    .close = op_close,
    .describe = op_describe,
};

/* ---- accepting ---- */

static void ip6_to_bytes(const ip_addr_t *a, uint8_t out[16])
{
    memcpy(out, ip_2_ip6(a)->addr, 16);
}

static err_t on_accept(void *arg, struct tcp_pcb *pcb, err_t err)
{
    struct km_tcpstack *st = arg;
    if (err != ERR_OK || pcb == NULL) {
        return ERR_VAL;
    }
    if (!IP_IS_V6(&pcb->local_ip)) {
        tcp_abort(pcb);
        return ERR_ABRT;
    }
    struct flow *f = calloc(1, sizeof *f);
    if (f == NULL) {
        tcp_abort(pcb);
        return ERR_ABRT;
    }
    f->s.ops = &flow_ops;
    f->st = st;
    f->pcb = pcb;
    km_buf_init(&f->txq, TX_QUEUE_MAX);
    ip6_to_bytes(&pcb->remote_ip, f->id.src);
    ip6_to_bytes(&pcb->local_ip, f->id.dst);
    f->id.sport = pcb->remote_port;
    f->id.dport = pcb->local_port;
    char a[48];
    ip6addr_ntoa_r(ip_2_ip6(&pcb->local_ip), a, sizeof a);
    snprintf(f->desc, sizeof f->desc, "tun [%s]:%u", a, (unsigned)pcb->local_port);
    f->next = st->flows;
    if (st->flows != NULL) {
        st->flows->prev = f;
    }
    st->flows = f;
    tcp_arg(pcb, f);
    tcp_recv(pcb, on_recv);
    tcp_sent(pcb, on_sent);
    tcp_err(pcb, on_err);
    tcp_nagle_disable(pcb);
    /* Debian's lwIP is built with a 64 KiB send buffer, which caps the bytes in flight
     * towards the local program at 64 KiB per loop turn. Its queue allows TCP_SND_QUEUELEN
     * segments, so let the buffer use them (an lwIP internal, pinned in test_tcpstack). */
    if (pcb->snd_buf < SND_BUF) {
        pcb->snd_buf = SND_BUF;
    }
    st->stats.accepted++;
    kick(f); /* the pass hands it over */
    return ERR_OK;
}

/* A listener on port, created on first use; the least recently used one goes when the table
 * is full (connections it accepted live on; a handshake it had in progress is reset). */
static int ensure_listener(struct km_tcpstack *st, uint16_t port)
{
    st->use_clock++;
    size_t victim = 0;
    for (size_t i = 0; i < st->n_listeners; i++) {
        if (st->listeners[i].port == port) {
            st->listeners[i].last_used = st->use_clock;
            return 0;
        }
        if (st->listeners[i].last_used < st->listeners[victim].last_used) {
            victim = i;
        }
    }
    struct tcp_pcb *pcb = tcp_new_ip_type(IPADDR_TYPE_V6);
    if (pcb == NULL) {
        return -ENOMEM;
    }
    if (tcp_bind(pcb, IP6_ADDR_ANY, port) != ERR_OK) {
        tcp_abort(pcb);
        return -ENOMEM;
    }
    struct tcp_pcb *lpcb = tcp_listen_with_backlog(pcb, 255);
    if (lpcb == NULL) {
        tcp_abort(pcb);
        return -ENOMEM;
    }
    tcp_arg(lpcb, st);
    tcp_accept(lpcb, on_accept);
    size_t slot = st->n_listeners;
    if (slot == MAX_LISTENERS) {
        slot = victim;
        (void)tcp_close(st->listeners[slot].pcb); /* closing a listener cannot fail */
    } else {
        st->n_listeners++;
    }
    st->listeners[slot] = (struct listener){.pcb = lpcb, .port = port, .last_used = st->use_clock};
    st->stats.listeners = st->n_listeners;
    return 0;
}

/* ---- lwIP's clock and the device ---- */

static void on_tick(uv_timer_t *t)
{
    struct km_tcpstack *st = t->data;
    sys_check_timeouts();
    if (st->flows != NULL) {
        st->idle_ticks = 0;
    } else if (++st->idle_ticks > IDLE_TICKS) {
        (void)uv_timer_stop(&st->tick);
        st->tick_running = false;
    }
}

static void tick_start(struct km_tcpstack *st)
{
    st->idle_ticks = 0;
    if (!st->tick_running) {
        st->tick_running = uv_timer_start(&st->tick, on_tick, TICK_MS, TICK_MS) == 0;
    }
}

static err_t nif_output6(struct netif *nif, struct pbuf *p, const ip6_addr_t *dst)
{
    (void)dst;
    struct km_tcpstack *st = nif->state;
    struct iovec iov[8];
    size_t n = 0;
    for (struct pbuf *q = p; q != NULL; q = q->next) {
        if (n == sizeof iov / sizeof iov[0]) {
            return ERR_MEM; /* not reached: TCP builds one pbuf per segment */
        }
        iov[n].iov_base = q->payload;
        iov[n].iov_len = q->len;
        n++;
    }
    st->stats.pkts_out++;
    st->hooks.output(st->hooks.arg, iov, n);
    return ERR_OK;
}

static err_t nif_output4(struct netif *nif, struct pbuf *p, const ip4_addr_t *dst)
{
    (void)nif;
    (void)p;
    (void)dst;
    return ERR_RTE; /* the mesh is IPv6 only */
}

static err_t nif_init(struct netif *nif)
{
    nif->name[0] = 'k';
    nif->name[1] = 'm';
    nif->output = nif_output4;
    nif->output_ip6 = nif_output6;
    nif->flags = 0; /* point-to-point: no ARP, no neighbour discovery */
    return ERR_OK;
}

int km_tcpstack_input(struct km_tcpstack *st, const struct km_pkt *pk)
{
    if (pk->kind != KM_PKT_TCP || pk->len < KM_PKT_IP6_HLEN || pk->len > 0xffffu) {
        return KM_ERR_INVALID;
    }
    if ((pk->flags & (KM_TCP_SYN | KM_TCP_ACK)) == KM_TCP_SYN) {
        int r = ensure_listener(st, pk->dport);
        if (r != 0) {
            return r;
        }
    }
    struct pbuf *p = pbuf_alloc(PBUF_RAW, (u16_t)pk->len, PBUF_RAM);
    if (p == NULL) {
        return -ENOMEM;
    }
    memcpy(p->payload, pk->l4 - KM_PKT_IP6_HLEN, pk->len);
    tick_start(st);

    /* What ip6_input would have set up for a packet addressed to this netif. */
    struct ip6_hdr *h = p->payload;
    ip_data.current_netif = &st->nif;
    ip_data.current_input_netif = &st->nif;
    ip_data.current_ip4_header = NULL;
    ip_data.current_ip6_header = h;
    ip_data.current_ip_header_tot_len = IP6_HLEN;
    ip_addr_copy_from_ip6_packed(ip_data.current_iphdr_dest, h->dest);
    ip_addr_copy_from_ip6_packed(ip_data.current_iphdr_src, h->src);
    ip6_addr_clear_zone(ip_2_ip6(&ip_data.current_iphdr_dest));
    ip6_addr_clear_zone(ip_2_ip6(&ip_data.current_iphdr_src));
    if (pbuf_remove_header(p, IP6_HLEN) != 0) {
        pbuf_free(p); /* not reached: len >= IP6_HLEN */
    } else {
        tcp_input(p, &st->nif); /* consumes p */
    }
    ip_data.current_netif = NULL;
    ip_data.current_input_netif = NULL;
    ip_data.current_ip6_header = NULL;
    ip_data.current_ip_header_tot_len = 0;
    ip_addr_set_zero_ip6(&ip_data.current_iphdr_dest);
    ip_addr_set_zero_ip6(&ip_data.current_iphdr_src);
    return 0;
}

int km_tcpstack_new(uv_loop_t *loop, unsigned mtu, const struct km_tcpstack_hooks *h,
                    struct km_tcpstack **out)
{
    *out = NULL;
    if (the_stack != NULL) {
        return KM_ERR_UNSUPPORTED;
    }
    if (mtu < 1280 || mtu > 65535) {
        return KM_ERR_INVALID;
    }
    struct km_tcpstack *st = calloc(1, sizeof *st);
    if (st == NULL) {
        return -ENOMEM;
    }
    if (!lwip_ready) {
        lwip_init();
        lwip_ready = true;
    }
    st->loop = loop;
    st->hooks = *h;
    if (uv_timer_init(loop, &st->tick) != 0 || uv_idle_init(loop, &st->pass) != 0) {
        free(st); /* not reached: these inits only store pointers */
        return -ENOMEM;
    }
    st->tick.data = st;
    st->pass.data = st;
    if (netif_add(&st->nif, NULL, NULL, NULL, st, nif_init, netif_input) == NULL) {
        uv_close((uv_handle_t *)&st->tick, NULL);
        uv_close((uv_handle_t *)&st->pass, NULL);
        free(st); /* the handles never started: closing needs no callback */
        return -ENOMEM;
    }
    st->nif.mtu = (u16_t)mtu;
    netif_set_default(&st->nif);
    netif_set_up(&st->nif);
    netif_set_link_up(&st->nif);
    the_stack = st;
    *out = st;
    return 0;
}

void km_tcpstack_stats(const struct km_tcpstack *st, struct km_tcpstack_stats *out)
{
    *out = st->stats;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct km_tcpstack *st = h->data;
    if (--st->closing_handles == 0) {
        free(st);
    }
}

void km_tcpstack_free(struct km_tcpstack *st)
{
    if (st == NULL) {
        return;
    }
    /* Flows the pass still had to finish: closed ones are freed, open ones orphaned. */
    for (struct flow *f = st->flows, *next; f != NULL; f = next) {
        next = f->next;
        struct tcp_pcb *pcb = f->pcb;
        f->pcb = NULL;
        f->prev = f->next = NULL;
        f->queued = false;
        f->st = NULL;
        if (pcb != NULL) {
            detach_pcb(pcb);
            tcp_abort(pcb);
        }
        if (f->user_closed || !f->handed_over) {
            flow_free(f);
        } else if (!f->end_delivered) {
            f->end_delivered = true;
            if (f->s.on_end != NULL) {
                f->s.on_end(&f->s, KM_ERR_CLOSED); /* the owner closes it later */
            }
        }
    }
    st->flows = NULL;
    st->pass_head = NULL;
    for (size_t i = 0; i < st->n_listeners; i++) {
        (void)tcp_close(st->listeners[i].pcb);
    }
    netif_remove(&st->nif);
    the_stack = NULL;
    st->closing_handles = 2;
    uv_close((uv_handle_t *)&st->tick, on_handle_closed);
    uv_close((uv_handle_t *)&st->pass, on_handle_closed);
}
