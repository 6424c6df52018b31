#include "proto/mesh.h"

#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "core/addr.h"
#include "core/log.h"
#include "core/relay.h"
#include "core/uvstream.h"
#include "identity/derive.h"

#define SWEEP_MS 250
/* Happy eyeballs (RFC 8305 in spirit): while a dial is pending, the next address is tried
 * after this stagger, up to RACE_MAX handshakes at once; the first to finish wins. */
#define STAGGER_MS 250
#define RACE_MAX 3
/* A relayed connection tries a direct one again after this, doubling up to the max. */
#define UPGRADE_MIN_MS 1000u
#define UPGRADE_MAX_MS 60000u

struct km_mesh_req {
    struct km_mesh *mesh;
    km_mesh_open_cb cb;
    void *arg;
    char host[256];
    uint16_t port;
    uint64_t deadline_ms;
    int err;                   /* for deferred failures */
    struct km_ssh_open *sopen; /* once issued on a connection */
    struct km_mesh_req *next;  /* in a peer's waiting list or the mesh's failed list */
};

struct peer {
    struct km_mesh *mesh;
    struct km_pubkey key;
    struct km_ssh_conn *conn;            /* ready */
    struct km_ssh_conn *dials[RACE_MAX]; /* handshakes racing */
    size_t dial_addr[RACE_MAX];          /* their index in target.addrs */
    size_t n_dials;
    uint64_t last_dial_ms;
    struct km_mesh_target target;
    size_t addr_idx;
    bool fatal; /* a dial failed on host key or authentication */
    struct km_mesh_req *waiting;
    uint64_t next_dial_ms;
    unsigned backoff_ms;
    int last_err;
    unsigned issued;               /* opens outstanding on conn */
    struct km_mesh_req *relay_req; /* a stream to a gateway being opened for a relayed dial */
    size_t relay_idx;              /* next entry of target.relays to try */
    bool relayed;                  /* conn runs through a gateway */
    bool punched;                  /* conn is a punched TCP connection */
    bool dialled;                  /* conn is one we dialled (not accepted) */
    /* Upgrading a relayed conn to a direct one in the background (docs/NAT.md). */
    struct km_ssh_conn *upgrade;   /* a direct dial in flight */
    struct km_ssh_conn *retiring;  /* the replaced relayed conn, closed once it has no stream */
    struct km_mesh_target utarget; /* the addresses being tried */
    size_t upgrade_idx;
    uint64_t next_upgrade_ms;
    unsigned upgrade_backoff_ms;
    char addr[64];
    char id[13];
    struct peer *next;
};

struct km_mesh {
    uv_loop_t *loop;
    struct km_ssh_node *node;
    struct km_mesh_opts opts;
    km_mesh_lookup_cb lookup;
    void *lookup_arg;
    struct peer *peers;
    struct km_mesh_req *failed;
    km_mesh_punch_cb punch;
    void *punch_arg;
    uv_timer_t sweep;
    uv_timer_t defer;
    unsigned pending_closes;
    bool closing;
};

void km_mesh_opts_default(struct km_mesh_opts *o)
{
    o->idle_timeout_ms = 300000;
    o->request_timeout_ms = 10000;
    o->backoff_min_ms = 250;
    o->backoff_max_ms = 8000;
    o->report = NULL;
}

static uint64_t now_ms(const struct km_mesh *m)
{
    return uv_now(m->loop);
}

/* ---- deferred failures (callbacks are never synchronous) ---- */

static void on_defer(uv_timer_t *t)
{
    struct km_mesh *m = t->data;
    while (m->failed != NULL) {
        struct km_mesh_req *r = m->failed;
        m->failed = r->next;
        r->cb(r->arg, r->err, NULL);
        free(r);
    }
}

static void fail_later(struct km_mesh *m, struct km_mesh_req *r, int err)
{
    r->err = err;
    r->next = m->failed;
    m->failed = r;
    (void)uv_timer_start(&m->defer, on_defer, 0, 0);
}

static void fail_waiting(struct peer *p, struct km_mesh *m, int err)
{
    while (p->waiting != NULL) {
        struct km_mesh_req *r = p->waiting;
        p->waiting = r->next;
        fail_later(m, r, err);
    }
}

/* ---- issuing streams on a ready connection ---- */

static void on_open(void *arg, int err, struct km_stream *s)
{
    struct km_mesh_req *r = arg;
    km_mesh_open_cb cb = r->cb;
    void *cb_arg = r->arg;
    free(r);
    cb(cb_arg, err, s);
}

static void issue(struct km_mesh *m, struct peer *p, struct km_mesh_req *r)
{
    int e = km_ssh_open_direct(p->conn, r->host, r->port, on_open, r, &r->sopen);
    if (e != 0) {
        fail_later(m, r, e == KM_ERR_TOO_LARGE ? KM_ERR_TOO_LARGE : KM_ERR_UNREACHABLE);
    }
}

static void issue_waiting(struct km_mesh *m, struct peer *p)
{
    while (p->waiting != NULL) {
        struct km_mesh_req *r = p->waiting;
        p->waiting = r->next;
        issue(m, p, r);
    }
}

/* ---- dialling ---- */

static void dial_next(struct km_mesh *m, struct peer *p);
static bool start_relay(struct km_mesh *m, struct peer *p);
static void on_dialled(struct km_ssh_conn *c, int err, void *arg);

static void dial_failed(struct km_mesh *m, struct peer *p)
{
    unsigned b = p->backoff_ms == 0 ? m->opts.backoff_min_ms : p->backoff_ms * 2;
    p->backoff_ms = b > m->opts.backoff_max_ms ? m->opts.backoff_max_ms : b;
    p->next_dial_ms = now_ms(m) + p->backoff_ms;
    KM_INFO("mesh peer %s...: no address worked (%s); next try in %u ms", p->id,
            km_strerror(p->last_err), p->backoff_ms);
    /* The requests that waited for this dial fail now: their clients get a prompt error. */
    fail_waiting(p, m, KM_ERR_UNREACHABLE);
}

static void report(struct km_mesh *m, struct peer *p, size_t idx, bool ok)
{
    if (m->opts.report != NULL && idx < p->target.n_addrs) {
        m->opts.report(m->lookup_arg, &p->key, (const struct sockaddr *)&p->target.addrs[idx], ok);
    }
}

static void on_dialled(struct km_ssh_conn *c, int err, void *arg)
{
    struct peer *p = arg;
    struct km_mesh *m = p->mesh;
    size_t idx = SIZE_MAX;
    for (size_t i = 0; i < p->n_dials; i++) {
        if (p->dials[i] == c) {
            idx = p->dial_addr[i];
            p->dials[i] = p->dials[p->n_dials - 1];
            p->dial_addr[i] = p->dial_addr[p->n_dials - 1];
            p->n_dials--;
            break;
        }
    }
    report(m, p, idx, err == 0);
    if (err == 0) {
        /* The first handshake to finish wins; the others are dropped (their callbacks are
         * not called once closed). A session the peer opened meanwhile also wins. */
        while (p->n_dials > 0) {
            km_ssh_conn_close(p->dials[--p->n_dials]);
        }
        if (p->conn != NULL) {
            km_ssh_conn_close(c);
        } else {
            p->conn = c;
            p->backoff_ms = 0;
            p->fatal = false;
            p->relayed = idx >= p->target.n_addrs;
            p->punched = false;
            p->dialled = true;
            p->upgrade_backoff_ms = 0;
            p->next_upgrade_ms = now_ms(m) + UPGRADE_MIN_MS;
            if (!p->relayed) {
                km_addr_str((const struct sockaddr *)&p->target.addrs[idx], p->addr,
                            sizeof p->addr);
            } else {
                size_t g = p->relay_idx > 0 ? p->relay_idx - 1 : 0;
                char gid[KM_NODE_ID_LEN + 1];
                km_node_id(&p->target.relays[g], gid);
                snprintf(p->addr, sizeof p->addr, "relay:%.12s...", gid);
            }
        }
        issue_waiting(m, p);
        return;
    }
    p->last_err = err;
    if (err == KM_ERR_HOST_KEY || err == KM_ERR_AUTH) {
        p->fatal = true;
    }
    if (p->n_dials == 0) {
        dial_next(m, p); /* no stagger after a failure: try the next address now */
    }
}

/* ---- relayed dials (docs/NAT.md) ---- */

static void on_relay_open(void *arg, int err, struct km_stream *s)
{
    struct peer *p = arg;
    struct km_mesh *m = p->mesh;
    p->relay_req = NULL;
    if (err == 0 && p->conn == NULL) {
        /* The gateway spliced us to the peer's registered session. An SSH session of our own
         * runs inside: libssh wants a socket, so one end of a socketpair goes to it and the
         * other is spliced to the stream (the fd is closed with its libuv handle). */
        int sv[2];
        struct km_stream *fs = NULL;
        int r = socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv);
        if (r != 0) {
            r = -errno;
            km_stream_close(s);
        } else if ((r = km_uvstream_open_fds(m->loop, sv[0], sv[0], &fs)) != 0) {
            close(sv[0]);
            close(sv[1]);
            km_stream_close(s);
        } else if ((r = km_relay_start(s, fs, NULL, 0, NULL, NULL)) != 0) {
            close(sv[1]); /* the relay closed both streams */
        }
        if (r == 0) {
            size_t g = p->relay_idx - 1;
            char gid[KM_NODE_ID_LEN + 1];
            km_node_id(&p->target.relays[g], gid);
            char label[64];
            snprintf(label, sizeof label, "%.12s... (relay via %.12s...)", p->id, gid);
            struct km_ssh_conn *c;
            r = km_ssh_dial_fd(m->node, sv[1], label, &p->key, p->target.user, on_dialled, p, &c);
            if (r == 0) {
                p->dials[p->n_dials] = c;
                p->dial_addr[p->n_dials] = SIZE_MAX;
                p->n_dials++;
                p->last_dial_ms = now_ms(m);
                return;
            }
        }
        err = r;
    } else if (err == 0) {
        km_stream_close(s); /* a direct session won meanwhile */
        return;
    }
    p->last_err = err;
    KM_DEBUG("mesh peer %s...: relay %zu failed: %s", p->id, p->relay_idx, km_strerror(err));
    dial_next(m, p); /* the next gateway, or give up */
}

/* Ask the next gateway of the target for a stream to the peer. Returns true when one is
 * being opened. */
static bool start_relay(struct km_mesh *m, struct peer *p)
{
    while (p->relay_idx < p->target.n_relays && !p->fatal && !m->closing) {
        const struct km_pubkey *gw = &p->target.relays[p->relay_idx++];
        if (km_pubkey_equal(gw, &p->key)) {
            continue; /* a peer cannot be its own way in */
        }
        char id[KM_NODE_ID_LEN + 1];
        km_node_id(&p->key, id);
        char host[KM_NODE_ID_LEN + sizeof KM_MESH_RELAY_SUFFIX];
        snprintf(host, sizeof host, "%s%s", id, KM_MESH_RELAY_SUFFIX);
        if (km_mesh_open(m, gw, host, 1, on_relay_open, p, &p->relay_req) == 0) {
            return true;
        }
        p->relay_req = NULL;
    }
    return false;
}

/* Start one more handshake with the next address; fail the waiting requests when none is
 * left and none is in flight. */
static void dial_next(struct km_mesh *m, struct peer *p)
{
    while (p->addr_idx < p->target.n_addrs && p->n_dials < RACE_MAX) {
        size_t idx = p->addr_idx++;
        const struct sockaddr *sa = (const struct sockaddr *)&p->target.addrs[idx];
        struct km_ssh_conn *c;
        int r = km_ssh_dial(m->node, sa, &p->key, p->target.user, on_dialled, p, &c);
        if (r == 0) {
            p->dials[p->n_dials] = c;
            p->dial_addr[p->n_dials] = idx;
            p->n_dials++;
            p->last_dial_ms = now_ms(m);
            return;
        }
        p->last_err = r;
        report(m, p, idx, false);
    }
    if (p->n_dials == 0 && p->relay_req == NULL && start_relay(m, p)) {
        return;
    }
    if (p->n_dials == 0 && p->relay_req == NULL) {
        dial_failed(m, p);
    }
}

static void start_dial(struct km_mesh *m, struct peer *p)
{
    if (p->n_dials > 0 || p->conn != NULL || p->relay_req != NULL || m->closing) {
        return;
    }
    int r = m->lookup(m->lookup_arg, &p->key, &p->target);
    if (r != 0 || (p->target.n_addrs == 0 && p->target.n_relays == 0)) {
        p->last_err = KM_ERR_NOT_FOUND;
        fail_waiting(p, m, KM_ERR_UNREACHABLE);
        return;
    }
    if (p->target.user[0] == '\0') {
        snprintf(p->target.user, sizeof p->target.user, "keymesh");
    }
    p->addr_idx = 0;
    p->relay_idx = 0;
    p->fatal = false;
    dial_next(m, p);
}

/* ---- upgrading relayed connections ---- */

static void upgrade_next(struct km_mesh *m, struct peer *p);

static void upgrade_later(struct km_mesh *m, struct peer *p)
{
    unsigned b = p->upgrade_backoff_ms == 0 ? UPGRADE_MIN_MS : p->upgrade_backoff_ms * 2;
    p->upgrade_backoff_ms = b > UPGRADE_MAX_MS ? UPGRADE_MAX_MS : b;
    /* Jitter of up to a quarter, from the loop clock's low bits (no need for randomness). */
    p->next_upgrade_ms =
        now_ms(m) + p->upgrade_backoff_ms + (now_ms(m) % (p->upgrade_backoff_ms / 4 + 1));
}

static void on_upgrade_dialled(struct km_ssh_conn *c, int err, void *arg)
{
    struct peer *p = arg;
    struct km_mesh *m = p->mesh;
    p->upgrade = NULL;
    size_t idx = p->upgrade_idx - 1;
    if (m->opts.report != NULL && idx < p->utarget.n_addrs) {
        m->opts.report(m->lookup_arg, &p->key, (const struct sockaddr *)&p->utarget.addrs[idx],
                       err == 0);
    }
    if (err != 0) {
        upgrade_next(m, p); /* the next address, or wait */
        return;
    }
    if (p->conn != NULL && !p->relayed) {
        km_ssh_conn_close(c); /* a direct conn came some other way meanwhile */
        return;
    }
    if (p->retiring != NULL) {
        km_ssh_conn_close(p->retiring);
    }
    /* Streams open on the relayed conn finish there; new ones use the direct conn. */
    p->retiring = p->conn;
    p->conn = c;
    p->relayed = false;
    p->punched = false;
    p->upgrade_backoff_ms = 0;
    km_addr_str((const struct sockaddr *)&p->utarget.addrs[idx], p->addr, sizeof p->addr);
    KM_INFO("mesh peer %s...: moved from the relay to a direct connection at %s", p->id, p->addr);
    issue_waiting(m, p);
}

/* Try the next direct address of the upgrade round, or schedule the next round. */
static void upgrade_next(struct km_mesh *m, struct peer *p)
{
    while (p->upgrade_idx < p->utarget.n_addrs && !m->closing) {
        const struct sockaddr *sa = (const struct sockaddr *)&p->utarget.addrs[p->upgrade_idx++];
        if (km_ssh_dial(m->node, sa, &p->key, p->utarget.user, on_upgrade_dialled, p,
                        &p->upgrade) == 0) {
            return;
        }
        p->upgrade = NULL;
    }
    upgrade_later(m, p);
}

static void upgrade_start(struct km_mesh *m, struct peer *p)
{
    if (m->punch != NULL && p->dialled) {
        /* In parallel; km_mesh_punched hands in a result. Only the side that dialled the
         * relayed session asks, so the two nodes do not punch with crossed roles. */
        m->punch(m->punch_arg, &p->key);
    }
    memset(&p->utarget, 0, sizeof p->utarget);
    if (m->lookup(m->lookup_arg, &p->key, &p->utarget) != 0 || p->utarget.n_addrs == 0) {
        upgrade_later(m, p);
        return;
    }
    if (p->utarget.user[0] == '\0') {
        snprintf(p->utarget.user, sizeof p->utarget.user, "keymesh");
    }
    p->upgrade_idx = 0;
    upgrade_next(m, p);
}

/* ---- peers ---- */

static struct peer *find_peer(struct km_mesh *m, const struct km_pubkey *key)
{
    for (struct peer *p = m->peers; p != NULL; p = p->next) {
        if (km_pubkey_equal(&p->key, key)) {
            return p;
        }
    }
    return NULL;
}

static struct peer *get_peer(struct km_mesh *m, const struct km_pubkey *key)
{
    struct peer *p = find_peer(m, key);
    if (p != NULL) {
        return p;
    }
    p = calloc(1, sizeof *p);
    if (p == NULL) {
        return NULL;
    }
    p->mesh = m;
    p->key = *key;
    char id[KM_NODE_ID_LEN + 1];
    km_node_id(key, id);
    memcpy(p->id, id, 12);
    p->next = m->peers;
    m->peers = p;
    return p;
}

/* ---- periodic work ---- */

static void on_sweep(uv_timer_t *t)
{
    struct km_mesh *m = t->data;
    uint64_t now = now_ms(m);
    struct peer **pp = &m->peers;
    while (*pp != NULL) {
        struct peer *p = *pp;
        /* Requests past their deadline give up. */
        struct km_mesh_req **rp = &p->waiting;
        while (*rp != NULL) {
            struct km_mesh_req *r = *rp;
            if (r->deadline_ms <= now) {
                *rp = r->next;
                fail_later(m, r, KM_ERR_UNREACHABLE);
            } else {
                rp = &r->next;
            }
        }
        if (p->waiting != NULL && now >= p->next_dial_ms) {
            start_dial(m, p);
        }
        if (p->conn == NULL && p->n_dials > 0 && p->n_dials < RACE_MAX &&
            p->addr_idx < p->target.n_addrs && now - p->last_dial_ms >= STAGGER_MS) {
            dial_next(m, p); /* the pending handshake is slow: race the next address */
        }
        if (p->conn != NULL && p->relayed && p->upgrade == NULL && now >= p->next_upgrade_ms &&
            !m->closing) {
            upgrade_start(m, p);
        }
        if (p->retiring != NULL && km_ssh_conn_channels(p->retiring) == 0) {
            km_ssh_conn_close(p->retiring);
            p->retiring = NULL;
        }
        if (p->conn != NULL && m->opts.idle_timeout_ms > 0 &&
            km_ssh_conn_idle_ms(p->conn) >= m->opts.idle_timeout_ms) {
            KM_INFO("mesh peer %s...: idle for %u s, closing", p->id,
                    m->opts.idle_timeout_ms / 1000);
            km_ssh_conn_close(p->conn);
            p->conn = NULL;
        }
        /* Forget peers with nothing going on, once any backoff has passed. */
        if (p->conn == NULL && p->n_dials == 0 && p->relay_req == NULL && p->waiting == NULL &&
            p->upgrade == NULL && p->retiring == NULL && now >= p->next_dial_ms) {
            *pp = p->next;
            free(p);
            continue;
        }
        pp = &p->next;
    }
}

int km_mesh_new(uv_loop_t *loop, struct km_ssh_node *node, const struct km_mesh_opts *o,
                km_mesh_lookup_cb lookup, void *lookup_arg, struct km_mesh **out)
{
    *out = NULL;
    struct km_mesh *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return -ENOMEM;
    }
    m->loop = loop;
    m->node = node;
    m->opts = *o;
    m->lookup = lookup;
    m->lookup_arg = lookup_arg;
    (void)uv_timer_init(loop, &m->sweep);
    (void)uv_timer_init(loop, &m->defer);
    m->sweep.data = m;
    m->defer.data = m;
    (void)uv_timer_start(&m->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&m->sweep);
    *out = m;
    return 0;
}

int km_mesh_open(struct km_mesh *m, const struct km_pubkey *peer, const char *host, uint16_t port,
                 km_mesh_open_cb cb, void *arg, struct km_mesh_req **req)
{
    *req = NULL;
    if (m->closing) {
        return KM_ERR_CLOSED;
    }
    if (strlen(host) >= sizeof((struct km_mesh_req *)0)->host) {
        return KM_ERR_TOO_LARGE;
    }
    struct peer *p = get_peer(m, peer);
    if (p == NULL) {
        return -ENOMEM;
    }
    if (p->conn == NULL && p->n_dials == 0 && p->relay_req == NULL) {
        /* Fail at once for a peer nobody knows an address of. */
        struct km_mesh_target t;
        memset(&t, 0, sizeof t);
        if (m->lookup(m->lookup_arg, peer, &t) != 0 || (t.n_addrs == 0 && t.n_relays == 0)) {
            return KM_ERR_NOT_FOUND;
        }
    }
    struct km_mesh_req *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return -ENOMEM;
    }
    r->mesh = m;
    r->cb = cb;
    r->arg = arg;
    r->port = port;
    snprintf(r->host, sizeof r->host, "%s", host);
    r->deadline_ms = now_ms(m) + m->opts.request_timeout_ms;
    *req = r;
    if (p->conn != NULL && km_ssh_conn_ready(p->conn)) {
        issue(m, p, r);
        return 0;
    }
    uint64_t now = now_ms(m);
    if (p->n_dials == 0 && p->relay_req == NULL && now < p->next_dial_ms &&
        p->next_dial_ms >= r->deadline_ms) {
        /* In a backoff longer than the request may wait: say so at once. */
        fail_later(m, r, KM_ERR_UNREACHABLE);
        return 0;
    }
    r->next = p->waiting;
    p->waiting = r;
    if (now >= p->next_dial_ms) {
        start_dial(m, p);
    }
    return 0;
}

void km_mesh_cancel(struct km_mesh_req *r)
{
    if (r == NULL) {
        return;
    }
    struct km_mesh *m = r->mesh;
    if (r->sopen != NULL) {
        km_ssh_open_cancel(r->sopen);
        free(r);
        return;
    }
    /* Waiting for a dial, or queued to fail: unlink it wherever it is. */
    for (struct km_mesh_req **rp = &m->failed; *rp != NULL; rp = &(*rp)->next) {
        if (*rp == r) {
            *rp = r->next;
            free(r);
            return;
        }
    }
    for (struct peer *p = m->peers; p != NULL; p = p->next) {
        for (struct km_mesh_req **rp = &p->waiting; *rp != NULL; rp = &(*rp)->next) {
            if (*rp == r) {
                *rp = r->next;
                free(r);
                return;
            }
        }
    }
}

void km_mesh_set_punch(struct km_mesh *m, km_mesh_punch_cb cb, void *arg)
{
    m->punch = cb;
    m->punch_arg = arg;
}

/* Put c in place of p's relayed conn, which retires (closed once it has no stream). */
static void replace_relayed(struct peer *p, struct km_ssh_conn *c)
{
    if (p->retiring != NULL) {
        km_ssh_conn_close(p->retiring);
    }
    p->retiring = p->conn;
    p->conn = c;
    p->relayed = false;
    p->upgrade_backoff_ms = 0;
}

void km_mesh_punched(struct km_mesh *m, struct km_ssh_conn *c, const struct sockaddr *addr)
{
    struct peer *p = m->closing ? NULL : get_peer(m, km_ssh_conn_peer(c));
    if (p == NULL || (p->conn != NULL && !p->relayed)) {
        km_ssh_conn_close(c); /* nothing to replace: a direct conn is in use already */
        return;
    }
    if (p->conn != NULL) {
        replace_relayed(p, c);
    } else {
        p->conn = c;
        p->relayed = false;
        p->backoff_ms = 0;
    }
    p->punched = true;
    p->dialled = true;
    char a[KM_ADDR_STRLEN];
    snprintf(p->addr, sizeof p->addr, "%s", km_addr_str(addr, a, sizeof a));
    KM_INFO("mesh peer %s...: moved from the relay to a punched connection at %s", p->id, p->addr);
    if (p->n_dials == 0) {
        issue_waiting(m, p);
    }
}

void km_mesh_conn_accepted(struct km_mesh *m, struct km_ssh_conn *c)
{
    if (m->closing || !km_ssh_conn_reverse_ok(c)) {
        return;
    }
    struct peer *p = get_peer(m, km_ssh_conn_peer(c));
    if (p == NULL) {
        return;
    }
    /* A session over a relayed stream has no TCP peer address of its own. */
    struct sockaddr_storage ss;
    bool relayed = km_ssh_conn_peer_addr(c, &ss) == KM_ERR_UNSUPPORTED;
    if (p->conn != NULL && p->relayed && !relayed) {
        /* The peer reached us directly (its upgrade, or a punched connection we answered):
         * the relayed session retires. */
        replace_relayed(p, c);
        p->punched = false;
        p->dialled = false;
        snprintf(p->addr, sizeof p->addr, "(accepted)");
        KM_INFO("mesh peer %s...: moved from the relay to a connection it opened", p->id);
        return;
    }
    if (p->conn != NULL) {
        return;
    }
    p->conn = c;
    p->backoff_ms = 0;
    p->relayed = relayed;
    p->punched = false;
    p->dialled = false;
    snprintf(p->addr, sizeof p->addr, "%s", p->relayed ? "(accepted, relayed)" : "(accepted)");
    if (p->n_dials == 0) {
        issue_waiting(m, p);
    }
}

void km_mesh_conn_closed(struct km_mesh *m, struct km_ssh_conn *c, int err)
{
    for (struct peer *p = m->peers; p != NULL; p = p->next) {
        if (p->retiring == c) {
            p->retiring = NULL;
            return;
        }
        if (p->conn == c) {
            p->conn = NULL;
            p->last_err = err;
            if (p->waiting != NULL && !m->closing) {
                start_dial(m, p);
            }
            return;
        }
    }
}

void km_mesh_foreach(const struct km_mesh *m, km_mesh_peer_cb cb, void *arg)
{
    uint64_t now = now_ms(m);
    for (const struct peer *p = m->peers; p != NULL; p = p->next) {
        struct km_mesh_peer_info i = {
            .key = p->key,
            .addr = p->conn != NULL ? p->addr : "",
            .cipher = p->conn != NULL ? km_ssh_conn_cipher(p->conn) : "",
            .streams = p->conn != NULL ? km_ssh_conn_channels(p->conn) : 0,
            .last_err = p->last_err,
            .relayed = p->conn != NULL && p->relayed,
            .punched = p->conn != NULL && p->punched,
        };
        i.state = p->conn != NULL                          ? "connected"
                  : p->n_dials > 0 || p->relay_req != NULL ? "dialing"
                  : now < p->next_dial_ms                  ? "backoff"
                                                           : "idle";
        cb(arg, &i);
    }
}

static void on_timer_closed(uv_handle_t *h)
{
    struct km_mesh *m = h->data;
    if (--m->pending_closes == 0) {
        free(m);
    }
}

void km_mesh_close(struct km_mesh *m)
{
    if (m == NULL || m->closing) {
        return;
    }
    m->closing = true;
    /* Relayed dials wait on another peer's requests: drop them before any peer is freed. */
    for (struct peer *p = m->peers; p != NULL; p = p->next) {
        km_mesh_cancel(p->relay_req);
        p->relay_req = NULL;
    }
    while (m->peers != NULL) {
        struct peer *p = m->peers;
        m->peers = p->next;
        while (p->waiting != NULL) {
            struct km_mesh_req *r = p->waiting;
            p->waiting = r->next;
            r->cb(r->arg, KM_ERR_CLOSED, NULL);
            free(r);
        }
        while (p->n_dials > 0) {
            km_ssh_conn_close(p->dials[--p->n_dials]);
        }
        km_ssh_conn_close(p->conn);
        km_ssh_conn_close(p->upgrade);
        km_ssh_conn_close(p->retiring);
        free(p);
    }
    on_defer(&m->defer);
    m->pending_closes = 2;
    uv_close((uv_handle_t *)&m->sweep, on_timer_closed);
    uv_close((uv_handle_t *)&m->defer, on_timer_closed);
}
