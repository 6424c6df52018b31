#include "core/daemon/gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "core/addr.h"
#include "core/buf.h"
#include "core/conf.h"
#include "core/log.h"
#include "core/daemon/punch.h"
#include "core/relay.h"
#include "core/uvstream.h"
#include "identity/derive.h"
#include "proto/relay_msg.h"

#define MAX_NODES 256                      /* registrations a gateway holds */
#define REG_RETRY_MIN_MS 250u              /* first re-registration delay ... */
#define REG_RETRY_MAX_MS 5000u             /* ... doubling to this, plus up to 50 % jitter */
#define REG_IN_MAX (4u * KM_RELAY_MSG_MAX) /* buffered control bytes */
#define PUNCH_EVERY_MS 1000u     /* a node's punch requests coordinated at most this often */
#define PUNCH_HELD_MAX MAX_NODES /* PUNCH frames held back at once; past it they go at once */
#define PUNCH_FRAME_MAX 80u      /* a PUNCH frame with an IPv6 address fits */

/* ---- node role: one registration per configured gateway ---- */

struct reg {
    struct km_gateway *g;
    struct km_pubkey key;
    struct sockaddr_storage addr; /* the gateway's configured address (announced) */
    bool resolved;
    struct km_mesh_req *req; /* registration channel being opened */
    struct km_stream *s;     /* open registration channel */
    struct km_buf in;
    uv_timer_t timer;
    unsigned backoff_ms;
    bool has_reflexive;
    struct sockaddr_storage reflexive;
};

/* ---- gateway role ---- */

struct node {
    struct km_gateway *g;
    struct km_pubkey key;
    struct km_stream *ctl; /* the registration channel; NULL when not registered */
    /* The session ctl runs on, for its RTT: valid while ctl is (a conn ends its channels,
     * on_ctl_end, before it goes). */
    struct km_ssh_conn *conn;
    struct km_buf in; /* frames the node sent on it */
    bool has_seen;    /* the reflexive address of its registered session */
    struct sockaddr_storage seen;
    uint16_t listen_port; /* its LISTEN: the mesh port it punches from (0: none said) */
    uint64_t last_punch_ms;
    unsigned streams; /* relayed streams at once, as source or target */
    uint64_t bytes;   /* relayed bytes so far */
    char id[16];
};

/* A PUNCH frame held back so that it reaches its node together with the other one. */
struct held_punch {
    uv_timer_t timer;
    struct km_gateway *g;
    struct km_pubkey to;
    uint8_t frame[PUNCH_FRAME_MAX];
    size_t len;
    struct held_punch *next;
};

/* One relayed stream being set up or running. */
struct splice {
    struct km_gateway *g;
    struct km_pubkey from, to;
    struct km_ssh_direct *direct; /* the requester's channel, until answered */
    struct km_mesh_req *req;      /* the channel to the target, being opened */
    bool running;
    struct splice *next;
};

struct km_gateway {
    uv_loop_t *loop;
    const struct km_config *cfg;
    struct km_router *router;
    struct km_ssh_node *node;
    struct km_mesh *mesh;
    void (*changed)(void *arg);
    void *changed_arg;
    bool stopping;
    bool started;
    struct reg regs[KM_CONFIG_MAX_GATEWAYS];
    size_t n_regs;
    struct node nodes[MAX_NODES];
    size_t n_nodes;
    struct splice *splices;
    unsigned relayed;
    uint64_t relayed_total;
    uint64_t relayed_bytes;
    uint64_t refused;
    struct km_punches punches; /* node role: hole punches in progress */
    struct held_punch *held;   /* gateway role: PUNCH frames waiting for their time */
    unsigned n_held;
};

/* Only tests/integration's keymesh-swapgw is built with KM_TEST_SWAP_GATEWAY: a gateway that
 * answers every relay request with its own SSH server, as an impersonating gateway would, so
 * nat.sh can show the requester refusing it on the host key. The keymesh binary has no such
 * path (the branches below fold away). */
#ifdef KM_TEST_SWAP_GATEWAY
#define TEST_SWAP 1
#else
#define TEST_SWAP 0
#endif

static void id12(const struct km_pubkey *k, char out[16])
{
    char id[KM_NODE_ID_LEN + 1];
    km_node_id(k, id);
    snprintf(out, 16, "%.12s", id);
}

static const struct km_config_peer *cfg_peer(const struct km_config *c, const struct km_pubkey *k)
{
    for (size_t i = 0; i < c->n_peers; i++) {
        if (km_pubkey_equal(&c->peers[i].key, k)) {
            return &c->peers[i];
        }
    }
    return NULL;
}

static bool is_my_gateway(const struct km_gateway *g, const struct km_pubkey *k)
{
    for (size_t i = 0; i < g->n_regs; i++) {
        if (g->regs[i].resolved && km_pubkey_equal(&g->regs[i].key, k)) {
            return true;
        }
    }
    return false;
}

/* ---- node role ---- */

static void reg_schedule(struct reg *r);

static void reg_lost(struct reg *r, const char *why)
{
    struct km_gateway *g = r->g;
    bool was = r->s != NULL;
    if (r->s != NULL) {
        r->s->data = NULL;
        km_stream_close(r->s);
        r->s = NULL;
    }
    km_buf_reset(&r->in);
    r->has_reflexive = false;
    if (was) {
        char id[16];
        id12(&r->key, id);
        KM_INFO("gateway %s...: registration lost (%s); re-registering", id, why);
        if (g->changed != NULL) {
            g->changed(g->changed_arg);
        }
    }
    reg_schedule(r);
}

static void on_reg_data(struct km_stream *s, const uint8_t *data, size_t len)
{
    struct reg *r = s->data;
    if (r == NULL) {
        return;
    }
    struct km_gateway *g = r->g;
    if (km_buf_put_bytes(&r->in, data, len) != 0) {
        reg_lost(r, "too much control data");
        return;
    }
    for (;;) {
        struct km_relay_msg m;
        int e = km_relay_msg_get(&r->in, &m);
        if (e == KM_ERR_INCOMPLETE) {
            km_buf_compact(&r->in);
            return;
        }
        if (e != 0) {
            reg_lost(r, km_strerror(e));
            return;
        }
        if (m.type == KM_RELAY_MSG_PUNCH) {
            /* Trusted as coming from this gateway: only it writes on this channel, which we
             * opened on the session whose host key is the gateway's. Frames of this type on any
             * other stream are never read as such. */
            uint16_t port = g->node != NULL ? km_ssh_node_listen_port(g->node, 0) : 0;
            if (port != 0 && km_punch_start(&g->punches, g->loop, g->node, g->mesh, &m.key,
                                            (const struct sockaddr *)&m.addr, port,
                                            (m.flags & KM_RELAY_PUNCH_CLIENT) != 0) != 0) {
                KM_DEBUG("gateway: cannot start a hole punch");
            }
            continue;
        }
        if (m.type == KM_RELAY_MSG_REFLEXIVE) {
            /* Only the gateway we registered with writes on this channel: it is the one
             * source trusted for it, and only as a hint (a later hole punch). */
            bool changed = !r->has_reflexive || memcmp(&r->reflexive, &m.addr, sizeof m.addr);
            r->reflexive = m.addr;
            r->has_reflexive = true;
            if (changed) {
                char a[KM_ADDR_STRLEN];
                char id[16];
                id12(&r->key, id);
                KM_INFO("gateway %s...: registered; it sees us at %s", id,
                        km_addr_str((const struct sockaddr *)&m.addr, a, sizeof a));
            }
        }
    }
}

static void on_reg_end(struct km_stream *s, int err)
{
    struct reg *r = s->data;
    if (r == NULL) {
        km_stream_close(s);
        return;
    }
    reg_lost(r, err == 0 ? "closed by the gateway" : km_strerror(err));
}

static void on_reg_open(void *arg, int err, struct km_stream *s)
{
    struct reg *r = arg;
    struct km_gateway *g = r->g;
    r->req = NULL;
    if (err != 0) {
        char id[16];
        id12(&r->key, id);
        KM_DEBUG("gateway %s...: registration failed: %s", id, km_strerror(err));
        reg_schedule(r);
        return;
    }
    if (g->stopping) {
        km_stream_close(s);
        return;
    }
    r->s = s;
    r->backoff_ms = 0;
    km_buf_init(&r->in, REG_IN_MAX);
    s->data = r;
    s->on_data = on_reg_data;
    s->on_end = on_reg_end;
    km_stream_read_start(s);
    /* Tell the gateway the port we punch from (our first mesh listener). */
    uint16_t port = g->node != NULL ? km_ssh_node_listen_port(g->node, 0) : 0;
    uint8_t mem[8];
    struct km_buf w;
    km_buf_init_fixed(&w, mem, sizeof mem);
    if (port != 0 && km_relay_msg_put_listen(&w, port) == 0) {
        (void)km_stream_write(s, km_buf_peek_ptr(&w), km_buf_len(&w));
    }
    if (g->changed != NULL) {
        g->changed(g->changed_arg); /* announce the relay path now */
    }
}

static void reg_start(struct reg *r)
{
    struct km_gateway *g = r->g;
    if (g->stopping || r->s != NULL || r->req != NULL || !r->resolved || g->mesh == NULL) {
        return;
    }
    int e = km_mesh_open(g->mesh, &r->key, KM_RELAY_REGISTER_HOST, 1, on_reg_open, r, &r->req);
    if (e != 0) {
        r->req = NULL;
        reg_schedule(r);
    }
}

static void on_reg_timer(uv_timer_t *t)
{
    reg_start(t->data);
}

/* Next attempt after backoff with jitter: a gateway that restarts is not hit by every node
 * at the same instant. */
static void reg_schedule(struct reg *r)
{
    if (r->g->stopping) {
        return;
    }
    unsigned b = r->backoff_ms == 0 ? REG_RETRY_MIN_MS : r->backoff_ms * 2;
    r->backoff_ms = b > REG_RETRY_MAX_MS ? REG_RETRY_MAX_MS : b;
    uint64_t delay = r->backoff_ms + randombytes_uniform(r->backoff_ms / 2 + 1);
    (void)uv_timer_start(&r->timer, on_reg_timer, delay, 0);
}

/* Resolve the configured gateway names to keys and addresses. */
static void regs_load(struct km_gateway *g)
{
    const struct km_config *c = g->cfg;
    for (size_t i = 0; i < g->n_regs; i++) {
        struct reg *r = &g->regs[i];
        const char *name = c->nat_gateways[i];
        const struct km_pubkey *k = km_config_alias(c, name);
        struct km_pubkey pk;
        if (k == NULL && km_node_id_parse(name, strlen(name), &pk) == 0) {
            k = &pk;
        }
        r->resolved = false;
        if (k == NULL) {
            KM_WARN("gateway \"%s\": no such [peer] or node ID; not registering", name);
            continue;
        }
        r->key = *k;
        r->resolved = true;
        memset(&r->addr, 0, sizeof r->addr);
        const struct km_config_peer *p = cfg_peer(c, k);
        if (p != NULL && p->n_addrs > 0) {
            const struct km_conf_addr *a = &p->addrs[0];
            if (uv_ip4_addr(a->host, a->port, (struct sockaddr_in *)&r->addr) != 0 &&
                uv_ip6_addr(a->host, a->port, (struct sockaddr_in6 *)&r->addr) != 0) {
                memset(&r->addr, 0, sizeof r->addr);
            }
        }
        if (r->addr.ss_family == 0) {
            KM_WARN("gateway \"%s\": its [peer] section has no address to announce", name);
        }
    }
}

/* A registered gateway opens a channel for one relayed session: run this node's SSH server
 * on it, through a socketpair whose other end is spliced to the channel. */
static void accept_relayed(struct km_gateway *g, const struct km_pubkey *gw,
                           struct km_ssh_direct *d)
{
    struct km_stream *ch;
    if (km_ssh_direct_accept(d, &ch) != 0) {
        return;
    }
    int sv[2];
    struct km_stream *fs;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        km_stream_close(ch);
        return;
    }
    if (km_uvstream_open_fds(g->loop, sv[0], sv[0], &fs) != 0) {
        close(sv[0]);
        close(sv[1]);
        km_stream_close(ch);
        return;
    }
    if (km_relay_start(ch, fs, NULL, 0, NULL, NULL) != 0) {
        close(sv[1]);
        return;
    }
    char gid[16];
    id12(gw, gid);
    char label[48];
    snprintf(label, sizeof label, "relay via %s...", gid);
    int e = km_ssh_accept_fd(g->node, sv[1], label);
    if (e != 0) {
        KM_INFO("gateway %s...: relayed session refused: %s", gid, km_strerror(e));
    }
}

/* ---- gateway role ---- */

static struct node *find_node(struct km_gateway *g, const struct km_pubkey *k)
{
    for (size_t i = 0; i < g->n_nodes; i++) {
        if (km_pubkey_equal(&g->nodes[i].key, k)) {
            return &g->nodes[i];
        }
    }
    return NULL;
}

static struct node *get_node(struct km_gateway *g, const struct km_pubkey *k)
{
    struct node *n = find_node(g, k);
    if (n != NULL || g->n_nodes >= MAX_NODES) {
        return n;
    }
    n = &g->nodes[g->n_nodes++];
    memset(n, 0, sizeof *n);
    n->g = g;
    km_buf_init(&n->in, REG_IN_MAX);
    n->key = *k;
    id12(k, n->id);
    return n;
}

/* What a registration told us, forgotten when it ends. */
static void reg_forget(struct node *n)
{
    n->ctl = NULL;
    n->conn = NULL;
    km_buf_reset(&n->in);
    n->has_seen = false;
    n->listen_port = 0;
}

static void ctl_drop(struct node *n)
{
    if (n->ctl != NULL) {
        n->ctl->data = NULL;
        km_stream_close(n->ctl);
    }
    reg_forget(n);
}

/* addr's address with port. */
static void with_port(const struct sockaddr_storage *addr, uint16_t port,
                      struct sockaddr_storage *out)
{
    *out = *addr;
    if (out->ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)out)->sin6_port = htons(port);
    } else {
        ((struct sockaddr_in *)out)->sin_port = htons(port);
    }
}

static void held_unlink(struct held_punch *h)
{
    struct km_gateway *g = h->g;
    for (struct held_punch **pp = &g->held; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == h) {
            *pp = h->next;
            g->n_held--;
            return;
        }
    }
}

static void on_held_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_held_timer(uv_timer_t *t)
{
    struct held_punch *h = t->data;
    struct node *n = find_node(h->g, &h->to);
    if (n != NULL && n->ctl != NULL) {
        (void)km_stream_write(n->ctl, h->frame, h->len);
    }
    held_unlink(h);
    uv_close((uv_handle_t *)&h->timer, on_held_closed);
}

/* Tell `to` to punch to `other`, now or after delay_ms. */
static void send_punch(struct km_gateway *g, struct node *to, const struct node *other,
                       uint8_t flags, uint64_t delay_ms)
{
    struct sockaddr_storage a;
    with_port(&other->seen, other->listen_port, &a);
    uint8_t mem[PUNCH_FRAME_MAX];
    struct km_buf w;
    km_buf_init_fixed(&w, mem, sizeof mem);
    if (km_relay_msg_put_punch(&w, &other->key, (const struct sockaddr *)&a, flags) != 0) {
        return;
    }
    struct held_punch *h = NULL;
    if (delay_ms > 0 && g->n_held < PUNCH_HELD_MAX) {
        h = calloc(1, sizeof *h);
    }
    if (h == NULL || uv_timer_init(g->loop, &h->timer) != 0) {
        free(h);
        (void)km_stream_write(to->ctl, km_buf_peek_ptr(&w), km_buf_len(&w));
        return;
    }
    h->timer.data = h;
    h->g = g;
    h->to = to->key;
    h->len = km_buf_len(&w);
    memcpy(h->frame, km_buf_peek_ptr(&w), h->len);
    h->next = g->held;
    g->held = h;
    g->n_held++;
    (void)uv_timer_start(&h->timer, on_held_timer, delay_ms, 0);
}

/* Half the RTT of n's registered session (km_ssh_conn_rtt_us), in microseconds: the time a
 * frame takes to reach it. 0 when the kernel has no figure. */
static uint64_t one_way_us(const struct node *n)
{
    uint32_t rtt;
    return n->conn != NULL && km_ssh_conn_rtt_us(n->conn, &rtt) == 0 ? rtt / 2u : 0;
}

/* f asks for a hole punch to target: when both are registered here and said their mesh
 * ports, tell each the other's punch address (the address its session comes from, with
 * its mesh port), f as the SSH client. Anything else is ignored: the node stays relayed.
 *
 * Each node's SYN must leave its own NAT before the other's arrives there: a NAT that answers
 * an unsolicited SYN with a reset keeps that flow closed for a while, and the other node's
 * mapping cannot then keep its port. So the two frames should arrive at once, and the one to
 * the nearer node is held back by the difference of the one-way times (half of each session's
 * RTT, as the kernel measures it; km_punch_hold_ms). With one figure missing both go at once. */
static void coordinate(struct km_gateway *g, struct node *f, const struct km_pubkey *target)
{
    struct node *t = find_node(g, target);
    uint64_t now = uv_now(g->loop);
    if (t == NULL || t == f || t->ctl == NULL || !t->has_seen || !f->has_seen ||
        t->listen_port == 0 || f->listen_port == 0 || t->seen.ss_family != f->seen.ss_family ||
        (f->last_punch_ms != 0 && now - f->last_punch_ms < PUNCH_EVERY_MS)) {
        return;
    }
    f->last_punch_ms = now;
    uint64_t ow_f = one_way_us(f), ow_t = one_way_us(t);
    uint64_t hold_f = km_punch_hold_ms(ow_f, ow_t), hold_t = km_punch_hold_ms(ow_t, ow_f);
    send_punch(g, t, f, 0, hold_t);
    send_punch(g, f, t, KM_RELAY_PUNCH_CLIENT, hold_f);
    KM_INFO("gateway: coordinating a hole punch from %s... to %s... (one-way %.1f / %.1f ms; "
            "held %llu / %llu ms)",
            f->id, t->id, (double)ow_f / 1000.0, (double)ow_t / 1000.0, (unsigned long long)hold_f,
            (unsigned long long)hold_t);
}

static void on_ctl_data(struct km_stream *s, const uint8_t *data, size_t len)
{
    struct node *n = s->data;
    if (n == NULL || n->ctl != s) {
        return;
    }
    if (km_buf_put_bytes(&n->in, data, len) != 0) {
        KM_INFO("gateway: node %s... sent too much on its registration; dropped", n->id);
        ctl_drop(n);
        return;
    }
    for (;;) {
        struct km_relay_msg m;
        int e = km_relay_msg_get(&n->in, &m);
        if (e == KM_ERR_INCOMPLETE) {
            km_buf_compact(&n->in);
            return;
        }
        if (e != 0) {
            KM_INFO("gateway: node %s... sent a bad frame (%s); registration dropped", n->id,
                    km_strerror(e));
            ctl_drop(n);
            return;
        }
        if (m.type == KM_RELAY_MSG_LISTEN) {
            n->listen_port = m.port;
        } else if (m.type == KM_RELAY_MSG_PUNCH_REQUEST) {
            coordinate(n->g, n, &m.key);
        } /* the gateway's own types coming back are ignored */
    }
}

static void on_ctl_end(struct km_stream *s, int err)
{
    struct node *n = s->data;
    (void)err;
    if (n != NULL && n->ctl == s) {
        KM_INFO("gateway: node %s... unregistered", n->id);
        reg_forget(n);
    }
    km_stream_close(s);
}

/* The requested target of "<node-id>.relay@keymesh". */
static int relay_target(const char *host, struct km_pubkey *out)
{
    size_t n = strlen(host);
    size_t sl = sizeof KM_MESH_RELAY_SUFFIX - 1;
    if (n != KM_NODE_ID_LEN + sl || strcmp(host + KM_NODE_ID_LEN, KM_MESH_RELAY_SUFFIX) != 0) {
        return KM_ERR_INVALID;
    }
    return km_node_id_parse(host, KM_NODE_ID_LEN, out);
}

static int hook_allow(void *arg, const struct km_pubkey *peer, const char *host, uint16_t port)
{
    struct km_gateway *g = arg;
    (void)port;
    if (g->stopping) {
        return KM_ERR_REFUSED;
    }
    if (strcmp(host, KM_RELAY_RELAYED_HOST) == 0) {
        /* Only a gateway we registered with may hand us relayed sessions. */
        return is_my_gateway(g, peer) ? 0 : KM_ERR_REFUSED;
    }
    if (!g->cfg->gateway_enabled) {
        g->refused++;
        return KM_ERR_REFUSED;
    }
    if (strcmp(host, KM_RELAY_REGISTER_HOST) == 0) {
        const struct km_config_peer *p = cfg_peer(g->cfg, peer);
        if (p == NULL || !p->relay || !p->allow) {
            char id[16];
            id12(peer, id);
            KM_INFO("gateway: registration from %s... refused (not a [peer] with relay = true)",
                    id);
            g->refused++;
            return KM_ERR_REFUSED;
        }
        return 0;
    }
    struct km_pubkey target;
    if (relay_target(host, &target) != 0) {
        g->refused++;
        return KM_ERR_REFUSED;
    }
    const struct km_config *c = g->cfg;
    const struct km_config_peer *p = cfg_peer(c, peer);
    if ((p == NULL && !c->allow_unknown) || (p != NULL && !p->allow)) {
        g->refused++;
        return KM_ERR_REFUSED;
    }
    struct node *t = find_node(g, &target);
    struct node *f = find_node(g, peer);
    if (!TEST_SWAP && (t == NULL || t->ctl == NULL)) {
        g->refused++;
        return KM_ERR_REFUSED; /* not registered here */
    }
    uint64_t max_s = c->gateway_max_streams;
    uint64_t max_b = c->gateway_max_bytes;
    if ((t != NULL && (t->streams >= max_s || (max_b != 0 && t->bytes >= max_b))) ||
        (f != NULL && (f->streams >= max_s || (max_b != 0 && f->bytes >= max_b)))) {
        KM_INFO("gateway: relay to %s... refused: per-node limit", t != NULL ? t->id : "?");
        g->refused++;
        return KM_ERR_REFUSED;
    }
    return 0;
}

static void splice_unlink(struct km_gateway *g, struct splice *sp)
{
    for (struct splice **pp = &g->splices; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == sp) {
            *pp = sp->next;
            return;
        }
    }
}

static void count(struct km_gateway *g, const struct km_pubkey *k, int d, uint64_t bytes)
{
    struct node *n = d > 0 ? get_node(g, k) : find_node(g, k);
    if (n == NULL) {
        return;
    }
    if (d > 0) {
        n->streams++;
    } else if (n->streams > 0) {
        n->streams--;
    }
    n->bytes += bytes;
}

static void on_splice_done(void *arg, int err, uint64_t a_to_b, uint64_t b_to_a)
{
    struct splice *sp = arg;
    struct km_gateway *g = sp->g;
    (void)err;
    if (g == NULL) {
        free(sp); /* the gateway is gone (daemon shutdown) */
        return;
    }
    g->relayed--;
    g->relayed_bytes += a_to_b + b_to_a;
    count(g, &sp->from, -1, a_to_b + b_to_a);
    count(g, &sp->to, -1, a_to_b + b_to_a);
    splice_unlink(g, sp);
    free(sp);
}

static void splice_run(struct splice *sp, struct km_stream *to)
{
    struct km_gateway *g = sp->g;
    struct km_stream *from;
    struct km_ssh_direct *d = sp->direct;
    sp->direct = NULL;
    if (km_ssh_direct_accept(d, &from) != 0) {
        km_stream_close(to);
        splice_unlink(g, sp);
        free(sp);
        return;
    }
    count(g, &sp->from, 1, 0);
    count(g, &sp->to, 1, 0);
    g->relayed++;
    g->relayed_total++;
    sp->running = true;
    if (km_relay_start(from, to, NULL, 0, on_splice_done, sp) != 0) {
        on_splice_done(sp, -ENOMEM, 0, 0);
    }
}

static void on_target_open(void *arg, int err, struct km_stream *s)
{
    struct splice *sp = arg;
    struct km_gateway *g = sp->g;
    sp->req = NULL;
    if (err != 0) {
        KM_INFO("gateway: relay to a registered node failed: %s", km_strerror(err));
        km_ssh_direct_reject(sp->direct, err);
        sp->direct = NULL;
        splice_unlink(g, sp);
        free(sp);
        return;
    }
    splice_run(sp, s);
}

/* TEST_SWAP only: instead of the target, splice the requester to this gateway's own SSH
 * server; the requester's host-key check must refuse it. */
static void splice_to_self(struct splice *sp)
{
    struct km_gateway *g = sp->g;
    int sv[2];
    struct km_stream *fs;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        on_target_open(sp, -errno, NULL);
        return;
    }
    if (km_uvstream_open_fds(g->loop, sv[0], sv[0], &fs) != 0) {
        close(sv[0]);
        close(sv[1]);
        on_target_open(sp, KM_ERR_CLOSED, NULL);
        return;
    }
    if (km_ssh_accept_fd(g->node, sv[1], "impersonation test") != 0) {
        km_stream_close(fs);
        on_target_open(sp, KM_ERR_CLOSED, NULL);
        return;
    }
    KM_WARN("gateway: test build: answering a relay request with our own key");
    splice_run(sp, fs);
}

static void hook_on_direct(void *arg, const struct km_pubkey *peer, const char *host, uint16_t port,
                           struct km_ssh_direct *d)
{
    struct km_gateway *g = arg;
    (void)port;
    if (strcmp(host, KM_RELAY_RELAYED_HOST) == 0) {
        accept_relayed(g, peer, d);
        return;
    }
    if (strcmp(host, KM_RELAY_REGISTER_HOST) == 0) {
        struct node *n = get_node(g, peer);
        struct km_stream *s;
        if (n == NULL) {
            km_ssh_direct_reject(d, KM_ERR_TOO_LARGE);
            g->refused++;
            return;
        }
        struct km_ssh_conn *c = km_ssh_direct_conn(d);
        struct sockaddr_storage seen;
        bool has_seen = c != NULL && km_ssh_conn_peer_addr(c, &seen) == 0;
        if (km_ssh_direct_accept(d, &s) != 0) {
            return;
        }
        ctl_drop(n); /* replaced, if any: the node re-registered on a new session */
        km_buf_init(&n->in, REG_IN_MAX);
        n->has_seen = has_seen;
        if (has_seen) {
            n->seen = seen;
        }
        n->ctl = s;
        n->conn = c;
        s->data = n;
        s->on_data = on_ctl_data;
        s->on_end = on_ctl_end;
        km_stream_read_start(s);
        char a[KM_ADDR_STRLEN] = "?";
        if (has_seen) {
            uint8_t mem[64];
            struct km_buf w;
            km_buf_init_fixed(&w, mem, sizeof mem);
            if (km_relay_msg_put_reflexive(&w, (const struct sockaddr *)&seen) == 0) {
                (void)km_stream_write(s, km_buf_peek_ptr(&w), km_buf_len(&w));
            }
            km_addr_str((const struct sockaddr *)&seen, a, sizeof a);
        }
        KM_INFO("gateway: node %s... registered from %s", n->id, a);
        return;
    }
    struct splice *sp = calloc(1, sizeof *sp);
    if (sp == NULL || relay_target(host, &sp->to) != 0) {
        free(sp);
        km_ssh_direct_reject(d, -ENOMEM);
        return;
    }
    sp->g = g;
    sp->from = *peer;
    sp->direct = d;
    sp->next = g->splices;
    g->splices = sp;
    if (TEST_SWAP) {
        splice_to_self(sp);
        return;
    }
    /* The target's registered session carries the channel (the mesh uses the session the
     * node dialled to us: we have no address of our own for it). */
    int e = km_mesh_open(g->mesh, &sp->to, KM_RELAY_RELAYED_HOST, 1, on_target_open, sp, &sp->req);
    if (e != 0) {
        sp->req = NULL;
        on_target_open(sp, e, NULL);
    }
}

/* ---- node role: asking for hole punches (the mesh's punch hook) ---- */

/* The mesh holds a relayed connection to peer and asks for a direct path: ask every gateway
 * we are registered with to coordinate a punch (one that does not hold peer ignores it). */
static void on_mesh_punch(void *arg, const struct km_pubkey *peer)
{
    struct km_gateway *g = arg;
    if (g->stopping || !g->cfg->nat_punch || g->node == NULL ||
        km_ssh_node_listen_port(g->node, 0) == 0) {
        return;
    }
    uint8_t mem[64];
    struct km_buf w;
    km_buf_init_fixed(&w, mem, sizeof mem);
    if (km_relay_msg_put_punch_request(&w, peer) != 0) {
        return;
    }
    for (size_t i = 0; i < g->n_regs; i++) {
        if (g->regs[i].s != NULL) {
            (void)km_stream_write(g->regs[i].s, km_buf_peek_ptr(&w), km_buf_len(&w));
        }
    }
}

/* ---- lifetime ---- */

int km_gateway_new(uv_loop_t *loop, const struct km_config *cfg, struct km_router *router,
                   void (*changed)(void *arg), void *arg, struct km_gateway **out)
{
    *out = NULL;
    struct km_gateway *g = calloc(1, sizeof *g);
    if (g == NULL) {
        return -ENOMEM;
    }
    g->loop = loop;
    g->cfg = cfg;
    g->router = router;
    g->changed = changed;
    g->changed_arg = arg;
    for (size_t i = 0; i < KM_CONFIG_MAX_GATEWAYS; i++) {
        struct reg *r = &g->regs[i];
        r->g = g;
        (void)uv_timer_init(loop, &r->timer);
        r->timer.data = r;
        km_buf_init(&r->in, REG_IN_MAX);
    }
    g->n_regs = cfg->n_nat_gateways;
    regs_load(g);
    *out = g;
    return 0;
}

void km_gateway_start(struct km_gateway *g, struct km_ssh_node *node, struct km_mesh *mesh)
{
    g->node = node;
    g->mesh = mesh;
    g->started = true;
    struct km_router_nat h = {hook_allow, hook_on_direct, g};
    km_router_set_nat(g->router, &h);
    if (mesh != NULL) {
        km_mesh_set_punch(mesh, on_mesh_punch, g);
    }
    if (g->cfg->gateway_enabled) {
        KM_INFO("gateway: relaying for registered nodes (max %llu streams per node)",
                (unsigned long long)g->cfg->gateway_max_streams);
    }
    for (size_t i = 0; i < g->n_regs; i++) {
        reg_start(&g->regs[i]);
    }
}

static void reg_stop(struct reg *r)
{
    (void)uv_timer_stop(&r->timer);
    if (r->req != NULL) {
        km_mesh_cancel(r->req);
        r->req = NULL;
    }
    if (r->s != NULL) {
        r->s->data = NULL;
        km_stream_close(r->s);
        r->s = NULL;
    }
    km_buf_reset(&r->in);
    r->has_reflexive = false;
    r->backoff_ms = 0;
}

void km_gateway_set_config(struct km_gateway *g, const struct km_config *cfg)
{
    const struct km_config *old = g->cfg;
    g->cfg = cfg;
    /* The same gateway list keeps its registrations (a reload must not make every relay path
     * disappear and come back); their keys and addresses are looked up again all the same. */
    bool same = old->n_nat_gateways == cfg->n_nat_gateways;
    for (size_t i = 0; same && i < cfg->n_nat_gateways; i++) {
        same = strcmp(old->nat_gateways[i], cfg->nat_gateways[i]) == 0;
    }
    struct reg before[KM_CONFIG_MAX_GATEWAYS];
    memcpy(before, g->regs, sizeof before);
    if (same) {
        regs_load(g);
        for (size_t i = 0; i < g->n_regs; i++) {
            struct reg *r = &g->regs[i];
            if (!r->resolved || !km_pubkey_equal(&r->key, &before[i].key)) {
                reg_stop(r); /* the name now means another key */
                reg_start(r);
            }
        }
    } else {
        for (size_t i = 0; i < g->n_regs; i++) {
            reg_stop(&g->regs[i]);
        }
        g->n_regs = cfg->n_nat_gateways;
        regs_load(g);
        if (g->started && !g->stopping) {
            for (size_t i = 0; i < g->n_regs; i++) {
                reg_start(&g->regs[i]);
            }
        }
    }
    if (g->changed != NULL) {
        g->changed(g->changed_arg);
    }
}

size_t km_gateway_registered(const struct km_gateway *g, struct km_pubkey *keys,
                             struct sockaddr_storage *addrs, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; g != NULL && i < g->n_regs && n < max; i++) {
        const struct reg *r = &g->regs[i];
        if (r->s != NULL && r->addr.ss_family != 0) {
            keys[n] = r->key;
            addrs[n] = r->addr;
            n++;
        }
    }
    return n;
}

void km_gateway_stats(const struct km_gateway *g, struct km_gateway_stats *out)
{
    memset(out, 0, sizeof *out);
    if (g == NULL) {
        return;
    }
    out->gateways = g->n_regs;
    for (size_t i = 0; i < g->n_regs; i++) {
        if (g->regs[i].s != NULL) {
            out->registered++;
            if (g->regs[i].has_reflexive && !out->has_reflexive) {
                out->has_reflexive = true;
                out->reflexive = g->regs[i].reflexive;
            }
        }
    }
    for (size_t i = 0; i < g->n_nodes; i++) {
        out->nodes += g->nodes[i].ctl != NULL ? 1 : 0;
    }
    out->relayed = g->relayed;
    out->relayed_total = g->relayed_total;
    out->relayed_bytes = g->relayed_bytes;
    out->refused = g->refused;
}

static void on_reg_timer_closed(uv_handle_t *h)
{
    (void)h; /* the memory is the gateway's, freed by km_gateway_free after the loop ends */
}

void km_gateway_stop(struct km_gateway *g)
{
    if (g == NULL || g->stopping) {
        return;
    }
    g->stopping = true;
    struct km_router_nat none = {NULL, NULL, NULL};
    km_router_set_nat(g->router, &none);
    if (g->mesh != NULL) {
        km_mesh_set_punch(g->mesh, NULL, NULL);
    }
    for (size_t i = 0; i < KM_CONFIG_MAX_GATEWAYS; i++) {
        reg_stop(&g->regs[i]);
    }
    for (size_t i = 0; i < g->n_nodes; i++) {
        ctl_drop(&g->nodes[i]);
    }
    km_punch_stop_all(&g->punches);
    while (g->held != NULL) {
        struct held_punch *h = g->held;
        held_unlink(h);
        uv_close((uv_handle_t *)&h->timer, on_held_closed);
    }
    /* Splices being set up: cancel and refuse. Running ones end with km_relay_close_all. */
    struct splice **pp = &g->splices;
    while (*pp != NULL) {
        struct splice *sp = *pp;
        if (sp->running) {
            pp = &sp->next;
            continue;
        }
        *pp = sp->next;
        km_mesh_cancel(sp->req);
        if (sp->direct != NULL) {
            km_ssh_direct_reject(sp->direct, KM_ERR_CLOSED);
        }
        free(sp);
    }
    for (size_t i = 0; i < KM_CONFIG_MAX_GATEWAYS; i++) {
        uv_close((uv_handle_t *)&g->regs[i].timer, on_reg_timer_closed);
    }
}

void km_gateway_free(struct km_gateway *g)
{
    if (g == NULL) {
        return;
    }
    km_gateway_stop(g);
    for (size_t i = 0; i < g->n_nodes; i++) {
        km_buf_reset(&g->nodes[i].in);
    }
    /* Running splices hold g in their done callback: detach them (the daemon ends every
     * relay with km_relay_close_all before this). */
    while (g->splices != NULL) {
        struct splice *sp = g->splices;
        g->splices = sp->next;
        sp->g = NULL;
    }
    free(g);
}
