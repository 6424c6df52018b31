#include "core/daemon/router.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cap/policy.h"
#include "cap/store.h"
#include "core/log.h"
#include "core/relay.h"
#include "core/uvstream.h"
#include "identity/derive.h"

#define MAX_CANDIDATES 8

/* One connection attempt in progress: an outbound request from a local client, or an inbound
 * mesh stream being connected to its target. */
struct km_egress_req {
    struct km_router *r;
    /* outbound: report to the front-end */
    km_egress_done_cb cb;
    void *arg;
    /* inbound: the peer's request, answered once connected */
    struct km_ssh_direct *direct;
    struct km_mesh_req *mreq;
    uv_getaddrinfo_t gai;
    bool gai_pending;
    struct km_stream *connecting;
    struct sockaddr_storage cand[MAX_CANDIDATES];
    size_t n_cand;
    size_t next_cand;
    bool check_private;
    bool cancelled;
    bool in_open;   /* inside egress_open: a failure is returned, not called back */
    bool sync_done; /* finished while in_open */
    int sync_err;
    int last_err;
    uint16_t port;
    char host[256];
    char origin[96];
    struct km_egress_req *next;
    struct km_egress_req *prev;
};

struct km_router {
    uv_loop_t *loop;
    const struct km_config *cfg;
    struct km_pubkey self;
    uint8_t self_vip[16];
    char self_fqdn[KM_FQDN_MAX];
    struct km_mesh *mesh;
    struct km_router_vips vips;
    struct km_egress egress;
    struct km_egress_req *reqs; /* every request in flight, for cancellation at free */
    struct km_router_gossip gossip;
    char dir[KM_CONFIG_PATH_MAX]; /* state directory (capability files); "" = none */
    struct km_router_nat nat;
};

/* A reserved gateway-protocol host: "...@keymesh" (never a DNS name). */
static bool is_nat_host(const char *host)
{
    static const char sfx[] = "@keymesh";
    size_t n = strlen(host);
    return n >= sizeof sfx - 1 && strcmp(host + n - (sizeof sfx - 1), sfx) == 0 &&
           strcmp(host, KM_GOSSIP_HOST) != 0 && strcmp(host, KM_PING_HOST) != 0;
}

/* ---- names ---- */

/* Copy host lowercased without one trailing dot. Returns false if it does not fit. */
static bool norm_name(const char *host, char *out, size_t outsz)
{
    size_t n = strlen(host);
    if (n > 0 && host[n - 1] == '.') {
        n--;
    }
    if (n == 0 || n >= outsz) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = host[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    out[n] = '\0';
    return true;
}

static const struct km_config_peer *find_peer(const struct km_config *c, const struct km_pubkey *k)
{
    for (size_t i = 0; i < c->n_peers; i++) {
        if (km_pubkey_equal(&c->peers[i].key, k)) {
            return &c->peers[i];
        }
    }
    return NULL;
}

/* A VIP maps to a node only through a key that hashes to it: search the keys we know. */
static bool vip_to_key(const struct km_router *r, const uint8_t vip[16], struct km_pubkey *out)
{
    const struct km_config *c = r->cfg;
    uint8_t v[16];
    if (memcmp(vip, r->self_vip, 16) == 0) {
        *out = r->self;
        return true;
    }
    for (size_t i = 0; i < c->n_peers; i++) {
        km_vip(&c->peers[i].key, c->prefix, v);
        if (memcmp(v, vip, 16) == 0) {
            *out = c->peers[i].key;
            return true;
        }
    }
    for (size_t i = 0; i < c->n_aliases; i++) {
        km_vip(&c->aliases[i].key, c->prefix, v);
        if (memcmp(v, vip, 16) == 0) {
            *out = c->aliases[i].key;
            return true;
        }
    }
    return r->vips.find != NULL && r->vips.find(r->vips.arg, vip, out);
}

void km_router_set_vips(struct km_router *r, const struct km_router_vips *v)
{
    r->vips = *v;
}

bool km_router_vip_known(const struct km_router *r, const uint8_t vip[16])
{
    struct km_pubkey k;
    return vip_to_key(r, vip, &k);
}

int km_router_resolve(const struct km_router *r, const char *host, struct km_pubkey *out)
{
    const struct km_config *c = r->cfg;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        if (((unsigned)a6.s6_addr[0] << 8 | a6.s6_addr[1]) != c->prefix) {
            return KM_ERR_INVALID;
        }
        return vip_to_key(r, a6.s6_addr, out) ? 0 : KM_ERR_NOT_FOUND;
    }
    char name[KM_FQDN_MAX];
    if (!norm_name(host, name, sizeof name)) {
        return KM_ERR_INVALID;
    }
    size_t n = strlen(name);
    size_t sl = strlen(c->suffix);
    if (n <= sl + 1 || name[n - sl - 1] != '.' || strcmp(name + n - sl, c->suffix) != 0) {
        return KM_ERR_INVALID; /* not under the mesh suffix */
    }
    if (km_fqdn_parse(name, c->suffix, out) == 0) {
        return 0;
    }
    name[n - sl - 1] = '\0'; /* the label(s) before the suffix */
    const struct km_pubkey *k = km_config_alias(c, name);
    if (k != NULL) {
        *out = *k;
        return 0;
    }
    return KM_ERR_NOT_FOUND;
}

static bool is_self(const struct km_router *r, const struct km_pubkey *k)
{
    return km_pubkey_equal(&r->self, k);
}

/* Names a service on this node: localhost, loopback, or this node's FQDN, alias or VIP. */
static bool is_local_target(const struct km_router *r, const char *host)
{
    if (strcasecmp(host, "localhost") == 0 || strcmp(host, "127.0.0.1") == 0 ||
        strcmp(host, "::1") == 0) {
        return true;
    }
    struct km_pubkey k;
    return km_router_resolve(r, host, &k) == 0 && is_self(r, &k);
}

/* Not an open proxy (SECURITY.md 4): loopback, private, link-local (cloud metadata
 * included), CGNAT, multicast and reserved ranges are refused for direct egress. */
/* a in host byte order. */
static bool v4_private(uint32_t a)
{
    return (a >> 24) == 0 || (a >> 24) == 10 || (a >> 24) == 127 ||
           (a >> 22) == (100u << 2 | 1) || /* 100.64/10 */
           (a >> 16) == (169u << 8 | 254) || (a >> 20) == (172u << 4 | 1) ||
           (a >> 16) == (192u << 8 | 168) || (a >> 28) >= 14; /* 224/4 and 240/4 */
}

bool km_router_addr_is_private(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        return v4_private(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
    }
    const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(b, mapped, 12) == 0) {
        return v4_private((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 |
                          b[15]);
    }
    static const uint8_t zero[15] = {0};
    if (memcmp(b, zero, 15) == 0) {
        return true; /* :: and ::1 */
    }
    return (b[0] & 0xfe) == 0xfc ||                   /* fc00::/7 (the mesh prefix too) */
           (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || /* fe80::/10 */
           b[0] == 0xff;                              /* multicast */
}

/* ---- request bookkeeping ---- */

static struct km_egress_req *req_new(struct km_router *r, const char *host, uint16_t port)
{
    struct km_egress_req *q = calloc(1, sizeof *q);
    if (q == NULL) {
        return NULL;
    }
    q->r = r;
    q->port = port;
    snprintf(q->host, sizeof q->host, "%s", host);
    q->next = r->reqs;
    if (r->reqs != NULL) {
        r->reqs->prev = q;
    }
    r->reqs = q;
    return q;
}

static void req_free(struct km_egress_req *q)
{
    struct km_router *r = q->r;
    if (q->prev != NULL) {
        q->prev->next = q->next;
    } else {
        r->reqs = q->next;
    }
    if (q->next != NULL) {
        q->next->prev = q->prev;
    }
    free(q);
}

static void on_inbound_done(void *arg, int err, uint64_t in, uint64_t out)
{
    (void)arg;
    KM_DEBUG("mesh stream ended (%s), %llu bytes in, %llu out", km_strerror(err),
             (unsigned long long)in, (unsigned long long)out);
}

/* Deliver the outcome: to the front-end (outbound) or by splicing the channel (inbound). */
static void finish(struct km_egress_req *q, int err, struct km_stream *s)
{
    if (q->in_open) {
        /* Still inside egress_open: the front end learns it from the return value, since the
         * callback must never run synchronously. A stream cannot exist yet here. */
        q->sync_done = true;
        q->sync_err = err != 0 ? err : KM_ERR_UNREACHABLE;
        km_stream_close(s);
        return;
    }
    if (q->direct != NULL) {
        struct km_stream *chan = NULL;
        if (err != 0) {
            km_ssh_direct_reject(q->direct, err);
        } else if (km_ssh_direct_accept(q->direct, &chan) != 0) {
            km_stream_close(s); /* the peer went away while we connected */
        } else if (km_relay_start(chan, s, NULL, 0, on_inbound_done, NULL) != 0) {
            KM_DEBUG("mesh stream to %s:%u: relay failed", q->host, q->port);
        }
    } else if (!q->cancelled) {
        q->cb(q->arg, err, s);
    } else {
        km_stream_close(s);
    }
    req_free(q);
}

/* ---- direct connections ---- */

static void try_next(struct km_egress_req *q);

static void on_connected(struct km_stream *s, int err, void *arg)
{
    struct km_egress_req *q = arg;
    q->connecting = NULL;
    if (err == 0) {
        finish(q, 0, s);
        return;
    }
    q->last_err = err;
    try_next(q);
}

static void try_next(struct km_egress_req *q)
{
    const struct km_config *c = q->r->cfg;
    while (q->next_cand < q->n_cand) {
        struct sockaddr *sa = (struct sockaddr *)&q->cand[q->next_cand++];
        if (q->check_private && !c->allow_private && km_router_addr_is_private(sa)) {
            q->last_err = KM_ERR_REFUSED;
            continue;
        }
        if (sa->sa_family == AF_INET) {
            ((struct sockaddr_in *)sa)->sin_port = htons(q->port);
        } else {
            ((struct sockaddr_in6 *)sa)->sin6_port = htons(q->port);
        }
        int r = km_uvstream_connect(q->r->loop, sa, (unsigned)c->connect_timeout_ms, on_connected,
                                    q, &q->connecting);
        if (r == 0) {
            return;
        }
        q->last_err = r;
    }
    finish(q, q->last_err != 0 ? q->last_err : -EHOSTUNREACH, NULL);
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    struct km_egress_req *q = g->data;
    q->gai_pending = false;
    if (q->cancelled) {
        uv_freeaddrinfo(res);
        req_free(q);
        return;
    }
    if (status != 0) {
        uv_freeaddrinfo(res);
        finish(q, KM_ERR_NOT_FOUND, NULL);
        return;
    }
    for (struct addrinfo *a = res; a != NULL && q->n_cand < MAX_CANDIDATES; a = a->ai_next) {
        if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) &&
            a->ai_addrlen <= sizeof q->cand[0]) {
            memcpy(&q->cand[q->n_cand++], a->ai_addr, a->ai_addrlen);
        }
    }
    uv_freeaddrinfo(res);
    try_next(q);
}

/* Connect q to q->host:q->port directly. local: the target is a service on this node. */
static int start_direct(struct km_egress_req *q, bool local)
{
    q->check_private = !local;
    if (local) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&q->cand[0];
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&q->cand[1];
        (void)uv_ip4_addr("127.0.0.1", 0, v4);
        (void)uv_ip6_addr("::1", 0, v6);
        q->n_cand = 2;
        try_next(q);
        return 0;
    }
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    if (uv_ip4_addr(q->host, 0, &a4) == 0) {
        memcpy(&q->cand[0], &a4, sizeof a4);
        q->n_cand = 1;
        try_next(q);
        return 0;
    }
    if (uv_ip6_addr(q->host, 0, &a6) == 0) {
        memcpy(&q->cand[0], &a6, sizeof a6);
        q->n_cand = 1;
        try_next(q);
        return 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
    q->gai.data = q;
    int r = uv_getaddrinfo(q->r->loop, &q->gai, on_resolved, q->host, NULL, &hints);
    if (r == 0) {
        q->gai_pending = true;
    }
    return r;
}

/* ---- outbound (egress) ---- */

static void on_mesh_done(void *arg, int err, struct km_stream *s)
{
    struct km_egress_req *q = arg;
    q->mreq = NULL;
    finish(q, err, s);
}

static int mesh_open(struct km_egress_req *q, const struct km_pubkey *peer, const char *host)
{
    if (q->r->mesh == NULL) {
        return KM_ERR_UNREACHABLE;
    }
    return km_mesh_open(q->r->mesh, peer, host, q->port, on_mesh_done, q, &q->mreq);
}

static int egress_open(struct km_egress *e, const char *host, uint16_t port, const char *origin,
                       km_egress_done_cb cb, void *arg, struct km_egress_req **out)
{
    struct km_router *r = e->data;
    const struct km_config *c = r->cfg;
    *out = NULL;
    struct km_pubkey key;
    int m = km_router_resolve(r, host, &key);
    if (m == KM_ERR_NOT_FOUND) {
        return KM_ERR_NOT_FOUND;
    }
    if (m != 0 && c->egress == KM_EGRESS_REFUSE) {
        return KM_ERR_REFUSED;
    }
    struct km_egress_req *q = req_new(r, host, port);
    if (q == NULL) {
        return -ENOMEM;
    }
    q->cb = cb;
    q->arg = arg;
    snprintf(q->origin, sizeof q->origin, "%s", origin != NULL ? origin : "");
    int rc;
    q->in_open = true;
    if (m == 0 && is_self(r, &key)) {
        rc = start_direct(q, true);
    } else if (m == 0) {
        rc = mesh_open(q, &key, "localhost");
    } else if (c->egress == KM_EGRESS_EXIT && c->has_exit_node) {
        rc = mesh_open(q, &c->exit_node, host);
    } else if (c->egress == KM_EGRESS_DIRECT) {
        rc = start_direct(q, false);
    } else {
        rc = KM_ERR_REFUSED;
    }
    q->in_open = false;
    if (rc == 0 && q->sync_done) {
        rc = q->sync_err; /* e.g. a literal address in a refused range */
    }
    if (rc != 0) {
        req_free(q);
        return rc == KM_ERR_NOT_FOUND && m == 0 ? KM_ERR_UNREACHABLE : rc;
    }
    *out = q;
    return 0;
}

static void egress_cancel(struct km_egress *e, struct km_egress_req *q)
{
    (void)e;
    if (q == NULL || q->cancelled) {
        return;
    }
    q->cancelled = true;
    if (q->mreq != NULL) {
        km_mesh_cancel(q->mreq);
        req_free(q);
    } else if (q->connecting != NULL) {
        km_stream_close(q->connecting);
        req_free(q);
    } else if (q->gai_pending) {
        (void)uv_cancel((uv_req_t *)&q->gai); /* on_resolved frees it */
    }
}

/* ---- inbound (SSH hooks) ---- */

static bool port_listed(const uint16_t *ports, size_t n, uint16_t port)
{
    for (size_t i = 0; i < n; i++) {
        if (ports[i] == port) {
            return true;
        }
    }
    return false;
}

static int hook_authorize(void *arg, const struct km_pubkey *key, const char *user)
{
    struct km_router *r = arg;
    const struct km_config_peer *p = find_peer(r->cfg, key);
    if (strcmp(user, "keymesh") != 0) {
        return KM_ERR_REFUSED;
    }
    if (p == NULL) {
        return r->cfg->allow_unknown ? 0 : KM_ERR_REFUSED;
    }
    return p->allow ? 0 : KM_ERR_REFUSED;
}

/* A capability certificate login (docs/CAPABILITIES.md). The policy is built afresh each
 * time, so a revocation or a config reload applies to the next login at once. */
static int hook_authorize_cert(void *arg, const uint8_t *blob, size_t len, const char *user,
                               const char *peer, struct km_pubkey *key, struct km_ssh_grant *grant,
                               char *why, size_t whysz)
{
    (void)user; /* any login name: sessions run as [cap] account */
    struct km_router *r = arg;
    memset(grant, 0, sizeof *grant);
    struct km_cap_policy *pol = malloc(sizeof *pol);
    if (pol == NULL) {
        snprintf(why, whysz, "out of memory");
        return -ENOMEM;
    }
    km_cap_policy_init(pol, &r->self);
    pol->skew_s = r->cfg->cap_skew_s;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < r->cfg->n_cap_owners; i++) {
        rc = km_cap_policy_add_signer(pol, &r->cfg->cap_owners[i]);
    }
    size_t line = 0;
    if (rc == 0 && r->dir[0] != '\0' && (rc = km_cap_store_load_revoked(r->dir, pol, &line)) != 0) {
        /* Fail closed: an unreadable revocation list refuses every certificate. */
        snprintf(why, whysz, "revocation list unusable (line %zu: %s)", line, km_strerror(rc));
        free(pol);
        return KM_ERR_REFUSED;
    }
    struct km_cap_grant g;
    rc = km_cap_check(pol, blob, len, (uint64_t)time(NULL), peer[0] != '\0' ? peer : NULL, &g, why,
                      whysz);
    free(pol);
    if (rc != 0) {
        return rc;
    }
    *key = g.key;
    grant->serial = g.serial;
    grant->ends_at_s = g.ends_at;
    grant->shell = g.shell;
    grant->exec = g.exec;
    grant->pty = g.pty;
    grant->expose = g.expose;
    snprintf(grant->command, sizeof grant->command, "%s", g.command);
    snprintf(grant->account, sizeof grant->account, "%s", r->cfg->cap_account);
    for (size_t i = 0; i < r->cfg->n_cap_accounts; i++) {
        if (km_pubkey_equal(&r->cfg->cap_accounts[i].key, &g.key)) {
            snprintf(grant->account, sizeof grant->account, "%s", r->cfg->cap_accounts[i].account);
        }
    }
    for (size_t i = 0; i < g.n_ports && i < KM_SSH_GRANT_MAX_PORTS; i++) {
        grant->ports[grant->n_ports++] = g.ports[i];
    }
    return 0;
}

static int hook_client_cert(void *arg, const struct km_pubkey *target, struct km_buf *out)
{
    struct km_router *r = arg;
    if (r->dir[0] == '\0') {
        return KM_ERR_NOT_FOUND;
    }
    return km_cap_store_pick(r->dir, &r->self, target, (uint64_t)time(NULL), out);
}

/* A certificate holder reaches exactly the local ports its grant lists, and this node's own
 * SSH server (the mesh port, which it can reach over the network anyway): there a nested
 * session presents a certificate again and gets what that one grants (stock ssh through
 * `keymesh connect`). */
static int grant_allows(const struct km_router *r, const struct km_ssh_grant *g, const char *host,
                        uint16_t port)
{
    if (!is_local_target(r, host)) {
        return KM_ERR_REFUSED;
    }
    if (port_listed(g->ports, g->n_ports, port)) {
        return 0;
    }
    for (size_t i = 0; i < r->cfg->n_mesh_listen; i++) {
        if (r->cfg->mesh_listen[i].port == port) {
            return 0;
        }
    }
    return KM_ERR_REFUSED;
}

static int hook_allow_direct(void *arg, const struct km_pubkey *peer,
                             const struct km_ssh_grant *grant, const char *host, uint16_t port)
{
    if (strcmp(host, KM_GOSSIP_HOST) == 0) {
        /* Any authenticated peer may offer announcements: they are verified one by one. */
        return ((struct km_router *)arg)->gossip.accept != NULL ? 0 : KM_ERR_REFUSED;
    }
    if (strcmp(host, KM_PING_HOST) == 0) {
        return 0; /* a round trip reveals nothing the login did not */
    }
    struct km_router *r = arg;
    if (is_nat_host(host)) {
        return r->nat.allow != NULL ? r->nat.allow(r->nat.arg, peer, host, port) : KM_ERR_REFUSED;
    }
    if (grant != NULL) {
        return grant_allows(r, grant, host, port);
    }
    const struct km_config *c = r->cfg;
    const struct km_config_peer *p = find_peer(c, peer);
    if ((p == NULL && !c->allow_unknown) || (p != NULL && !p->allow)) {
        return KM_ERR_REFUSED;
    }
    if (is_local_target(r, host)) {
        return port_listed(c->mesh_expose, c->n_mesh_expose, port) ||
                       (p != NULL && port_listed(p->expose, p->n_expose, port))
                   ? 0
                   : KM_ERR_REFUSED;
    }
    return p != NULL && p->exit ? 0 : KM_ERR_REFUSED;
}

static void ping_on_data(struct km_stream *s, const uint8_t *data, size_t len)
{
    (void)s;
    (void)data;
    (void)len; /* a ping channel carries nothing; whatever comes is dropped */
}

static void ping_on_end(struct km_stream *s, int err)
{
    (void)err;
    km_stream_close(s);
}

static void hook_on_direct(void *arg, const struct km_pubkey *peer, const char *host, uint16_t port,
                           struct km_ssh_direct *d)
{
    (void)peer;
    struct km_router *r = arg;
    if (strcmp(host, KM_GOSSIP_HOST) == 0) {
        r->gossip.accept(r->gossip.arg, peer, d);
        return;
    }
    if (strcmp(host, KM_PING_HOST) == 0) {
        /* The confirmation is the answer; the pinger closes the channel. Closing it here at
         * once could overtake the confirmation in libssh. */
        struct km_stream *s;
        if (km_ssh_direct_accept(d, &s) == 0) {
            s->on_data = ping_on_data;
            s->on_end = ping_on_end;
            km_stream_read_start(s);
        }
        return;
    }
    if (is_nat_host(host)) {
        r->nat.on_direct(r->nat.arg, peer, host, port, d); /* allow checked it is set */
        return;
    }
    struct km_egress_req *q = req_new(r, host, port);
    if (q == NULL) {
        km_ssh_direct_reject(d, -ENOMEM);
        return;
    }
    q->direct = d;
    if (start_direct(q, is_local_target(r, host)) != 0) {
        finish(q, KM_ERR_NOT_FOUND, NULL);
    }
}

struct ping {
    km_router_ping_cb cb;
    void *arg;
    struct km_mesh_req *req;
};

static void on_ping_open(void *arg, int err, struct km_stream *s)
{
    struct ping *p = arg;
    km_stream_close(s);
    /* A refusal is an answer too: the peer (or an older keymesh) is there. */
    p->cb(p->arg, err == KM_ERR_REFUSED ? 0 : err);
    free(p);
}

int km_router_ping(struct km_router *r, const uint8_t vip[16], km_router_ping_cb cb, void *arg,
                   void **handle)
{
    struct km_pubkey key;
    *handle = NULL;
    if (r->mesh == NULL) {
        return KM_ERR_CLOSED;
    }
    if (!vip_to_key(r, vip, &key) || is_self(r, &key)) {
        return KM_ERR_NOT_FOUND;
    }
    struct ping *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return -ENOMEM;
    }
    p->cb = cb;
    p->arg = arg;
    int rc = km_mesh_open(r->mesh, &key, KM_PING_HOST, 1, on_ping_open, p, &p->req);
    if (rc != 0) {
        free(p);
        return rc;
    }
    *handle = p;
    return 0;
}

void km_router_ping_cancel(void *handle)
{
    struct ping *p = handle;
    if (p != NULL) {
        km_mesh_cancel(p->req);
        free(p);
    }
}

void km_router_set_nat(struct km_router *r, const struct km_router_nat *n)
{
    r->nat = *n;
}

void km_router_set_gossip(struct km_router *r, const struct km_router_gossip *g)
{
    r->gossip = *g;
}

static void hook_conn_accepted(void *arg, struct km_ssh_conn *c)
{
    struct km_router *r = arg;
    if (r->gossip.conn_accepted != NULL) {
        r->gossip.conn_accepted(r->gossip.arg, c);
    }
    if (r->mesh != NULL) {
        km_mesh_conn_accepted(r->mesh, c);
    }
}

static void hook_conn_closed(void *arg, struct km_ssh_conn *c, int err)
{
    struct km_router *r = arg;
    if (r->mesh != NULL) {
        km_mesh_conn_closed(r->mesh, c, err);
    }
}

void km_router_ssh_hooks(struct km_router *r, struct km_ssh_hooks *out)
{
    memset(out, 0, sizeof *out);
    out->authorize = hook_authorize;
    out->authorize_cert = hook_authorize_cert;
    out->client_cert = hook_client_cert;
    out->allow_direct = hook_allow_direct;
    out->on_direct = hook_on_direct;
    out->on_conn_accepted = hook_conn_accepted;
    out->on_conn_closed = hook_conn_closed;
    out->arg = r;
}

/* ---- lifetime ---- */

static void set_identity(struct km_router *r)
{
    km_vip(&r->self, r->cfg->prefix, r->self_vip);
    if (km_fqdn(&r->self, r->cfg->suffix, r->self_fqdn, sizeof r->self_fqdn) != 0) {
        r->self_fqdn[0] = '\0';
    }
}

int km_router_new(uv_loop_t *loop, const struct km_config *cfg, const struct km_pubkey *self,
                  struct km_router **out)
{
    *out = NULL;
    struct km_router *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return -ENOMEM;
    }
    r->loop = loop;
    r->cfg = cfg;
    r->self = *self;
    set_identity(r);
    r->egress.open = egress_open;
    r->egress.cancel = egress_cancel;
    r->egress.data = r;
    *out = r;
    return 0;
}

void km_router_set_mesh(struct km_router *r, struct km_mesh *mesh)
{
    r->mesh = mesh;
}

struct km_mesh *km_router_mesh(const struct km_router *r)
{
    return r->mesh;
}

void km_router_set_dir(struct km_router *r, const char *dir)
{
    snprintf(r->dir, sizeof r->dir, "%s", dir);
}

void km_router_set_config(struct km_router *r, const struct km_config *cfg)
{
    r->cfg = cfg;
    set_identity(r);
}

struct km_egress *km_router_egress(struct km_router *r)
{
    return &r->egress;
}

void km_router_shutdown(struct km_router *r)
{
    r->mesh = NULL;
    while (r->reqs != NULL) {
        struct km_egress_req *q = r->reqs;
        if (q->direct != NULL) {
            km_ssh_direct_reject(q->direct, KM_ERR_CLOSED);
            q->direct = NULL;
            q->cancelled = true;
        }
        if (q->gai_pending) {
            /* Freed by on_resolved after uv_cancel; detach it from this router first. */
            (void)uv_cancel((uv_req_t *)&q->gai);
            r->reqs = q->next;
            q->prev = q->next = NULL;
            q->cancelled = true;
            continue;
        }
        egress_cancel(&r->egress, q);
        if (r->reqs == q) {
            req_free(q);
        }
    }
}

void km_router_free(struct km_router *r)
{
    if (r == NULL) {
        return;
    }
    km_router_shutdown(r);
    free(r);
}
