#include "core/daemon/discover.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "core/addr.h"
#include "core/log.h"
#include "core/fsutil.h"
#include "core/daemon/gateway.h"
#include "discovery/dns.h"
#include "discovery/announce.h"
#include "discovery/dnsupdate.h"
#include "discovery/mdns.h"
#include "discovery/peers.h"
#include "discovery/portmap.h"
#include "identity/derive.h"
#include "proto/mesh.h"

#define MAX_LOCAL_NETS 64
#define GOSSIP_STORE 64              /* signed records kept for passing on */
#define GOSSIP_SEND_MAX 32           /* records sent in one exchange */
#define GOSSIP_PUSH_MAX 32           /* connected peers offered a new own record at once */
#define GOSSIP_MAX_BYTES (64u << 10) /* bytes accepted from a peer in one exchange */

/* A verified announcement as received, kept to pass it on unchanged. */
struct gossip_rec {
    struct km_pubkey key;
    uint64_t seq;
    uint64_t expires;
    uint8_t blob[KM_ANNOUNCE_MAX];
    size_t len;
};

/* One exchange on one stream: send our records, read theirs until EOF. */
struct gossip_sess {
    struct km_discover *d;
    struct km_stream *s;
    struct km_buf in;
    bool opener; /* we opened the channel: we send first, then read */
    struct km_pubkey peer_key;
    char peer[16];
    struct gossip_sess *next;
};
#define IFADDRS_REFRESH_MS 2000
#define OWN_RECORD_LIFE_S 3600     /* validity of this node's signed path list */
#define OWN_RECORD_RESIGN_S 1200   /* re-signed when a third of that is gone ... */
#define OWN_RECORD_CHECK_MS 30000u /* ... or when its paths change, checked this often */

/* A subnet of one of this machine's interfaces. */
struct local_net {
    int family;
    uint8_t addr[16];
    uint8_t mask[16];
};

struct km_discover {
    uv_loop_t *loop;
    const struct km_config *cfg;
    struct km_pubkey self;
    struct km_router *router;
    struct km_peers *peers;
    struct km_dns_server *dns[KM_CONFIG_MAX_LISTEN];
    struct km_dnsupdate *pub;
    struct km_mdns *mdns;
    struct gossip_rec store[GOSSIP_STORE];
    size_t n_store;
    struct gossip_sess *gossips;
    bool stopping;
    uint64_t gossip_accepted;
    uint64_t gossip_rejected;
    uv_timer_t pub_timer; /* bounds the removal UPDATE at shutdown */
    bool pub_timer_init;
    const struct km_key *key; /* borrowed from the daemon; signs this node's record */
    uv_timer_t own_timer;
    bool own_timer_init;
    struct km_path own_paths[KM_ANNOUNCE_PATHS_MAX]; /* as last signed */
    size_t n_own_paths;
    uint64_t own_signed_s; /* unix time of the last signature; 0 = never */
    struct local_net nets[MAX_LOCAL_NETS];
    size_t n_nets;
    uint64_t nets_at_ms;
    bool nets_valid;
    struct km_portmap *pm; /* NULL when [nat] portmap is off */
    struct km_portmap_state pm_st;
    bool pm_failure_logged; /* a failure was logged since the last success */
    bool pm_started;        /* km_discover_start_portmap was called */
    struct km_gateway *gw;  /* registrations with gateways, and the gateway role */
};

/* ---- this machine's networks ---- */

/* An address inside the mesh prefix (a VIP). */
static bool in_mesh_prefix(const struct km_discover *d, const struct sockaddr *sa)
{
    if (sa->sa_family != AF_INET6) {
        return false;
    }
    const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    return ((unsigned)a[0] << 8 | a[1]) == d->cfg->prefix;
}

static void refresh_nets(struct km_discover *d)
{
    uint64_t now = uv_now(d->loop);
    if (d->nets_valid && now - d->nets_at_ms < IFADDRS_REFRESH_MS) {
        return;
    }
    d->nets_at_ms = now;
    d->nets_valid = true;
    d->n_nets = 0;
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) != 0) {
        return;
    }
    for (struct ifaddrs *i = ifs; i != NULL && d->n_nets < MAX_LOCAL_NETS; i = i->ifa_next) {
        /* Addresses on the loopback interface share no link with anyone (127/8 and ::1,
         * this machine itself, are classified before this). */
        if (i->ifa_addr == NULL || i->ifa_netmask == NULL || !(i->ifa_flags & IFF_UP) ||
            (i->ifa_flags & IFF_LOOPBACK)) {
            continue;
        }
        if (in_mesh_prefix(d, i->ifa_addr)) {
            continue; /* our VIP on the TUN device: not a link to anyone, never a path */
        }
        struct local_net *n = &d->nets[d->n_nets];
        memset(n, 0, sizeof *n);
        if (i->ifa_addr->sa_family == AF_INET) {
            n->family = AF_INET;
            memcpy(n->addr, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, 4);
            memcpy(n->mask, &((struct sockaddr_in *)i->ifa_netmask)->sin_addr, 4);
        } else if (i->ifa_addr->sa_family == AF_INET6) {
            n->family = AF_INET6;
            memcpy(n->addr, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, 16);
            memcpy(n->mask, &((struct sockaddr_in6 *)i->ifa_netmask)->sin6_addr, 16);
        } else {
            continue;
        }
        d->n_nets++;
    }
    freeifaddrs(ifs);
}

static bool on_local_net(struct km_discover *d, const struct sockaddr *sa)
{
    const uint8_t *a;
    size_t len;
    if (sa->sa_family == AF_INET) {
        a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        len = 4;
    } else if (sa->sa_family == AF_INET6) {
        a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        len = 16;
    } else {
        return false;
    }
    refresh_nets(d);
    for (size_t i = 0; i < d->n_nets; i++) {
        const struct local_net *n = &d->nets[i];
        if (n->family != sa->sa_family) {
            continue;
        }
        bool match = true;
        for (size_t k = 0; k < len && match; k++) {
            match = (a[k] & n->mask[k]) == (n->addr[k] & n->mask[k]);
        }
        if (match) {
            return true;
        }
    }
    return false;
}

/* The kind of a path given by address alone (a configured peer address). */
static enum km_path_kind kind_of_addr(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET6) {
        const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) {
            return KM_PATH_LINK_LOCAL;
        }
    } else if (sa->sa_family == AF_INET) {
        uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
        if ((a >> 16) == (169u << 8 | 254)) {
            return KM_PATH_LINK_LOCAL;
        }
    }
    return km_router_addr_is_private(sa) ? KM_PATH_LAN : KM_PATH_MAPPED;
}

static int conf_sockaddr(const struct km_conf_addr *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (uv_ip4_addr(a->host, a->port, (struct sockaddr_in *)ss) == 0 ||
        uv_ip6_addr(a->host, a->port, (struct sockaddr_in6 *)ss) == 0) {
        return 0;
    }
    return KM_ERR_INVALID;
}

/* Seed the table with every configured peer's addresses. */
static void load_config(struct km_discover *d)
{
    const struct km_config *c = d->cfg;
    km_peers_clear_config(d->peers); /* a reload may have dropped or changed peers */
    for (size_t i = 0; i < c->n_peers; i++) {
        const struct km_config_peer *p = &c->peers[i];
        struct km_path paths[KM_CONFIG_MAX_PEER_ADDRS];
        size_t n = 0;
        for (size_t k = 0; k < p->n_addrs; k++) {
            memset(&paths[n], 0, sizeof paths[n]);
            if (conf_sockaddr(&p->addrs[k], &paths[n].addr) != 0) {
                continue;
            }
            paths[n].kind = kind_of_addr((struct sockaddr *)&paths[n].addr);
            paths[n].source = KM_PATH_SRC_CONFIG;
            n++;
        }
        if (km_peers_set_config(d->peers, &p->key, paths, n) != 0) {
            KM_WARN("discovery: cannot record the addresses of peer %s", p->name);
        }
    }
}

/* The public address and port the router maps to the mesh port, as a path (0 or 1). */
static size_t mapped_path(const struct km_discover *d, struct km_path *out, size_t max)
{
    if (d->pm == NULL || !d->pm_st.mapped || max == 0) {
        return 0;
    }
    memset(out, 0, sizeof *out);
    struct sockaddr_in *in = (struct sockaddr_in *)&out->addr;
    *in = d->pm_st.external;
    /* A router that reports a wrong public address (e.g. behind another NAT that forwards
     * the port) is corrected by [nat] external_address; the mapped port stays the router's. */
    if (d->cfg->nat_external_address[0] != '\0') {
        (void)inet_pton(AF_INET, d->cfg->nat_external_address, &in->sin_addr);
    }
    out->kind = KM_PATH_MAPPED;
    out->source = KM_PATH_SRC_SELF;
    return 1;
}

/* A relay path per gateway this node is registered with: the gateway's address and key. */
static size_t relay_paths(const struct km_discover *d, struct km_path *out, size_t max)
{
    struct km_pubkey keys[KM_CONFIG_MAX_GATEWAYS];
    struct sockaddr_storage addrs[KM_CONFIG_MAX_GATEWAYS];
    size_t n = km_gateway_registered(d->gw, keys, addrs, KM_CONFIG_MAX_GATEWAYS);
    size_t k = 0;
    for (size_t i = 0; i < n && k < max; i++) {
        memset(&out[k], 0, sizeof out[k]);
        out[k].kind = KM_PATH_RELAY;
        out[k].source = KM_PATH_SRC_SELF;
        out[k].addr = addrs[i];
        out[k].via = keys[i];
        out[k].has_via = true;
        k++;
    }
    return k;
}

/* This node's own paths: its mesh listeners, or every interface address for a wildcard. */
static size_t self_paths(struct km_discover *d, struct km_path *out, size_t max)
{
    const struct km_config *c = d->cfg;
    size_t n = 0;
    for (size_t i = 0; i < c->n_mesh_listen && n < max; i++) {
        struct sockaddr_storage ss;
        if (conf_sockaddr(&c->mesh_listen[i], &ss) != 0) {
            continue;
        }
        bool wildcard = (ss.ss_family == AF_INET &&
                         ((struct sockaddr_in *)&ss)->sin_addr.s_addr == htonl(INADDR_ANY)) ||
                        (ss.ss_family == AF_INET6 &&
                         IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&ss)->sin6_addr));
        if (!wildcard) {
            memset(&out[n], 0, sizeof out[n]);
            out[n].addr = ss;
            out[n].kind = kind_of_addr((struct sockaddr *)&ss);
            out[n].source = KM_PATH_SRC_SELF;
            n++;
            continue;
        }
        refresh_nets(d);
        for (size_t k = 0; k < d->n_nets && n < max; k++) {
            const struct local_net *ln = &d->nets[k];
            struct km_path *p = &out[n];
            memset(p, 0, sizeof *p);
            if (ln->family == AF_INET) {
                struct sockaddr_in *in = (struct sockaddr_in *)&p->addr;
                in->sin_family = AF_INET;
                memcpy(&in->sin_addr, ln->addr, 4);
                in->sin_port = htons(c->mesh_listen[i].port);
                if ((ntohl(in->sin_addr.s_addr) >> 24) == 127) {
                    continue;
                }
            } else {
                if (ss.ss_family == AF_INET) {
                    continue; /* an IPv4 wildcard does not listen on IPv6 */
                }
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&p->addr;
                in6->sin6_family = AF_INET6;
                memcpy(&in6->sin6_addr, ln->addr, 16);
                in6->sin6_port = htons(c->mesh_listen[i].port);
                if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) {
                    continue;
                }
            }
            p->kind = kind_of_addr((struct sockaddr *)&p->addr);
            p->source = KM_PATH_SRC_SELF;
            n++;
        }
    }
    n += mapped_path(d, out + n, max - n);
    n += relay_paths(d, out + n, max - n);
    return n;
}

/* ---- the DNS backend ---- */

static int be_alias(void *arg, const char *label, struct km_pubkey *out)
{
    struct km_discover *d = arg;
    const struct km_pubkey *k = km_config_alias(d->cfg, label);
    if (k == NULL) {
        return KM_ERR_NOT_FOUND;
    }
    *out = *k;
    return 0;
}

static int be_vip(void *arg, const uint8_t vip[16], struct km_pubkey *out)
{
    struct km_discover *d = arg;
    char text[KM_VIP_STRLEN];
    if (inet_ntop(AF_INET6, vip, text, sizeof text) == NULL) {
        return KM_ERR_NOT_FOUND;
    }
    return km_router_resolve(d->router, text, out) == 0 ? 0 : KM_ERR_NOT_FOUND;
}

static size_t be_paths(void *arg, const struct km_pubkey *key, struct km_path *out, size_t max)
{
    struct km_discover *d = arg;
    if (km_pubkey_equal(key, &d->self)) {
        return self_paths(d, out, max);
    }
    return km_peers_paths(d->peers, key, uv_now(d->loop), out, max);
}

static enum km_requester be_classify(void *arg, const struct sockaddr *from)
{
    struct km_discover *d = arg;
    if (from->sa_family == AF_INET &&
        (ntohl(((const struct sockaddr_in *)from)->sin_addr.s_addr) >> 24) == 127) {
        return KM_REQ_SAME_LINK; /* this machine */
    }
    if (from->sa_family == AF_INET6 &&
        IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)from)->sin6_addr)) {
        return KM_REQ_SAME_LINK;
    }
    return on_local_net(d, from) ? KM_REQ_SAME_LINK : KM_REQ_OTHER;
}

/* ---- public ---- */

struct vip_search {
    uint8_t vip[16];
    uint16_t prefix;
    struct km_pubkey found;
};

static int vip_match(const struct km_peer_info *info, void *arg)
{
    struct vip_search *q = arg;
    uint8_t v[16];
    km_vip(&info->key, q->prefix, v);
    if (memcmp(v, q->vip, 16) != 0) {
        return 0;
    }
    q->found = info->key;
    return 1;
}

/* The router's VIP lookup for keys discovery learned (one hash per known key: VIPs are
 * looked up per new TUN connection or echo, not per packet). */
static bool find_vip(void *arg, const uint8_t vip[16], struct km_pubkey *out)
{
    struct km_discover *d = arg;
    struct vip_search q = {.prefix = d->cfg->prefix};
    memcpy(q.vip, vip, 16);
    if (km_peers_foreach(d->peers, vip_match, &q) == 0) {
        return false;
    }
    *out = q.found;
    return true;
}

int km_discover_new(uv_loop_t *loop, const struct km_config *cfg, const struct km_pubkey *self,
                    struct km_router *router, struct km_discover **out)
{
    *out = NULL;
    struct km_discover *d = calloc(1, sizeof *d);
    if (d == NULL) {
        return -ENOMEM;
    }
    d->peers = km_peers_new(0);
    if (d->peers == NULL) {
        free(d);
        return -ENOMEM;
    }
    d->loop = loop;
    d->cfg = cfg;
    d->self = *self;
    d->router = router;
    load_config(d);
    struct km_router_vips v = {find_vip, d};
    km_router_set_vips(router, &v);
    *out = d;
    return 0;
}

int km_discover_start_dns(struct km_discover *d)
{
    const struct km_config *c = d->cfg;
    if (!c->dns_enabled) {
        return 0;
    }
    struct km_dns_opts o;
    km_dns_opts_default(&o);
    snprintf(o.suffix, sizeof o.suffix, "%s", c->suffix);
    o.prefix = c->prefix;
    o.ttl = c->dns_ttl_s;
    o.rate_limit = c->dns_rate_limit;
    struct km_dns_backend b = {be_alias, be_vip, be_paths, be_classify, d};
    for (size_t i = 0; i < c->n_dns_listen; i++) {
        struct sockaddr_storage ss;
        char at[64];
        const struct km_conf_addr *a = &c->dns_listen[i];
        snprintf(at, sizeof at, strchr(a->host, ':') != NULL ? "[%s]:%u" : "%s:%u", a->host,
                 a->port);
        int r = conf_sockaddr(a, &ss);
        if (r == 0) {
            r = km_dns_server_new(d->loop, (struct sockaddr *)&ss, &o, &b, &d->dns[i]);
        }
        if (r != 0) {
            KM_ERROR_R(r, "cannot serve DNS on %s", at);
            return r;
        }
        KM_INFO("dns: serving %s and its reverse zone on %s (UDP and TCP)", c->suffix, at);
    }
    return 0;
}

static void on_published(void *arg, enum km_dnsupdate_result r)
{
    struct km_discover *d = arg;
    (void)d;
    if (r == KM_DNSUPDATE_OK) {
        KM_DEBUG("publish: records updated");
    } else {
        KM_WARN("publish: update failed: %s", km_dnsupdate_result_name(r));
    }
}

/* Read a TSIG secret file: base64 text on one line, mode 0600 like a key. */
static int read_secret(const char *path, char *out, size_t outsz)
{
    struct km_buf b;
    km_buf_init(&b, 4096);
    mode_t mode;
    int r = km_fs_read_file(path, &b, &mode);
    if (r == 0 && (mode & 077) != 0) {
        r = KM_ERR_KEY_PERMS;
    }
    if (r == 0) {
        size_t n = km_buf_len(&b);
        const char *t = (const char *)km_buf_peek_ptr(&b);
        while (n > 0 && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' ')) {
            n--;
        }
        if (n == 0 || n >= outsz || memchr(t, '\n', n) != NULL) {
            r = KM_ERR_INVALID;
        } else {
            memcpy(out, t, n);
            out[n] = '\0';
        }
    }
    km_buf_reset(&b); /* wipes the secret */
    return r;
}

/* ---- the announcement exchange (docs/PROTOCOL.md section 4) ---- */

/* Keep rec's bytes for passing on: replace the key's older record, else the one that expires
 * first when the store is full. */
static void store_record(struct km_discover *d, const struct km_announce *a, const uint8_t *blob,
                         size_t len)
{
    struct gossip_rec *slot = NULL;
    for (size_t i = 0; i < d->n_store; i++) {
        if (km_pubkey_equal(&d->store[i].key, &a->key)) {
            if (d->store[i].seq >= a->seq) {
                return;
            }
            slot = &d->store[i];
            break;
        }
    }
    if (slot == NULL && d->n_store < GOSSIP_STORE) {
        slot = &d->store[d->n_store++];
    }
    if (slot == NULL) {
        slot = &d->store[0];
        for (size_t i = 1; i < d->n_store; i++) {
            if (d->store[i].expires < slot->expires) {
                slot = &d->store[i];
            }
        }
    }
    if (len > sizeof slot->blob) {
        return;
    }
    slot->key = a->key;
    slot->seq = a->seq;
    slot->expires = a->expires;
    memcpy(slot->blob, blob, len);
    slot->len = len;
}

/* Verify and take one received record. Returns true if it was new and valid. */
static bool take_record(struct km_discover *d, const uint8_t *blob, size_t len,
                        enum km_path_source src)
{
    struct km_announce a;
    uint64_t now_unix = (uint64_t)time(NULL);
    int r = km_announce_parse(blob, len, now_unix, &a);
    if (r != 0) {
        km_peers_note_parse_error(d->peers, r);
        d->gossip_rejected++;
        return false;
    }
    if (km_pubkey_equal(&a.key, &d->self)) {
        return false; /* our own record, passed back */
    }
    r = km_peers_accept(d->peers, &a, src, now_unix, uv_now(d->loop));
    if (r != 0) {
        d->gossip_rejected += r == KM_ERR_REFUSED ? 1 : 0; /* a replay */
        return false;
    }
    store_record(d, &a, blob, len);
    d->gossip_accepted++;
    return true;
}

static void gossip_end(struct gossip_sess *g)
{
    struct km_discover *d = g->d;
    for (struct gossip_sess **pp = &d->gossips; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    }
    km_stream_close(g->s); /* after shutdown: what we wrote still goes out */
    km_buf_reset(&g->in);
    free(g);
}

/* Our record and up to GOSSIP_SEND_MAX others, each a u16-length-prefixed blob. */
static void gossip_send(struct gossip_sess *g, const struct km_pubkey *peer)
{
    struct km_discover *d = g->d;
    struct km_buf out;
    km_buf_init(&out, GOSSIP_MAX_BYTES);
    uint64_t now = (uint64_t)time(NULL);
    size_t sent = 0;
    for (size_t i = 0; i < d->n_store && sent < GOSSIP_SEND_MAX; i++) {
        const struct gossip_rec *rec = &d->store[i];
        if (rec->expires <= now || (peer != NULL && km_pubkey_equal(&rec->key, peer))) {
            continue;
        }
        if (km_buf_put_string16(&out, rec->blob, rec->len) != 0) {
            break;
        }
        sent++;
    }
    if (km_buf_len(&out) > 0) {
        (void)km_stream_write(g->s, km_buf_peek_ptr(&out), km_buf_len(&out));
    }
    km_stream_shutdown(g->s);
    km_buf_reset(&out);
}

static void gossip_push_except(struct km_discover *d, const struct km_pubkey *except);

static void gossip_take_all(struct gossip_sess *g)
{
    size_t n = 0;
    const uint8_t *blob;
    size_t len;
    /* Bounded by GOSSIP_MAX_BYTES of input; a malformed tail is simply ignored. */
    while (km_buf_get_string16_view(&g->in, &blob, &len) == 0) {
        n += take_record(g->d, blob, len, KM_PATH_SRC_GOSSIP) ? 1 : 0;
    }
    if (n > 0) {
        KM_DEBUG("gossip %s: %zu new record(s)", g->peer, n);
        if (g->d->cfg->gateway_enabled) {
            /* A gateway is where nodes behind NAT meet: hand what it learned on to the other
             * connected peers now, not at their next session (their records may be the
             * only way they can find each other). Records are taken only when newer, so this
             * ends. */
            gossip_push_except(g->d, &g->peer_key);
        }
    }
}

static void on_gossip_data(struct km_stream *s, const uint8_t *data, size_t len)
{
    struct gossip_sess *g = s->data;
    if (km_buf_put_bytes(&g->in, data, len) != 0) {
        KM_INFO("gossip %s: more than %u bytes, dropping the exchange", g->peer, GOSSIP_MAX_BYTES);
        gossip_end(g);
    }
}

static void on_gossip_end(struct km_stream *s, int err)
{
    struct gossip_sess *g = s->data;
    if (err == 0) {
        gossip_take_all(g);
        if (!g->opener) {
            gossip_send(g, NULL); /* answer after reading theirs */
        }
    }
    gossip_end(g);
}

static struct gossip_sess *gossip_new(struct km_discover *d, struct km_stream *s, bool opener,
                                      const struct km_pubkey *peer)
{
    struct gossip_sess *g = calloc(1, sizeof *g);
    if (g == NULL) {
        km_stream_close(s);
        return NULL;
    }
    g->d = d;
    g->s = s;
    g->opener = opener;
    g->peer_key = *peer;
    char id[KM_NODE_ID_LEN + 1];
    km_node_id(peer, id);
    snprintf(g->peer, sizeof g->peer, "%.12s", id);
    km_buf_init(&g->in, GOSSIP_MAX_BYTES);
    g->next = d->gossips;
    d->gossips = g;
    s->data = g;
    s->on_data = on_gossip_data;
    s->on_end = on_gossip_end;
    km_stream_read_start(s);
    return g;
}

/* A peer offers its records: take the channel, read, then answer with ours. */
static void gossip_accept(void *arg, const struct km_pubkey *peer, struct km_ssh_direct *req)
{
    struct km_discover *d = arg;
    struct km_stream *s;
    if (d->stopping || km_ssh_direct_accept(req, &s) != 0) {
        if (d->stopping) {
            km_ssh_direct_reject(req, KM_ERR_CLOSED);
        }
        return;
    }
    (void)gossip_new(d, s, false, peer);
}

struct gossip_open {
    struct km_discover *d;
    struct km_pubkey peer;
};

static void on_gossip_open(void *arg, int err, struct km_stream *s)
{
    struct gossip_open *o = arg;
    struct km_discover *d = o->d;
    if (err == 0 && !d->stopping) {
        struct gossip_sess *g = gossip_new(d, s, true, &o->peer);
        if (g != NULL) {
            gossip_send(g, &o->peer);
        }
    } else if (err == 0) {
        km_stream_close(s);
    }
    free(o);
}

/* A peer dialled us: offer our records over its session (it answers with its own). Only
 * keymesh nodes: OpenSSH clients refuse channels a server opens. */
static void gossip_conn_accepted(void *arg, struct km_ssh_conn *c)
{
    struct km_discover *d = arg;
    if (d->stopping || !km_ssh_conn_reverse_ok(c)) {
        return;
    }
    struct gossip_open *o = malloc(sizeof *o);
    if (o == NULL) {
        return;
    }
    o->d = d;
    o->peer = *km_ssh_conn_peer(c);
    struct km_ssh_open *req;
    if (km_ssh_open_direct(c, KM_GOSSIP_HOST, 1, on_gossip_open, o, &req) != 0) {
        free(o);
    }
}

struct connected {
    struct km_pubkey keys[GOSSIP_PUSH_MAX];
    size_t n;
};

static void collect_connected(void *arg, const struct km_mesh_peer_info *info)
{
    struct connected *c = arg;
    if (c->n < GOSSIP_PUSH_MAX && strcmp(info->state, "connected") == 0) {
        c->keys[c->n++] = info->key;
    }
}

/* A newly signed own record: offer it at once to every peer we have a session with, so a
 * change of paths does not wait for the next session. */
static void gossip_push(struct km_discover *d)
{
    gossip_push_except(d, NULL);
}

/* Offer our records to every connected peer but except (NULL: all). */
static void gossip_push_except(struct km_discover *d, const struct km_pubkey *except)
{
    struct km_mesh *m = km_router_mesh(d->router);
    if (m == NULL || d->stopping) {
        return;
    }
    struct connected c = {.n = 0};
    km_mesh_foreach(m, collect_connected, &c);
    for (size_t i = 0; i < c.n; i++) {
        if (except != NULL && km_pubkey_equal(&c.keys[i], except)) {
            continue;
        }
        struct gossip_open *o = malloc(sizeof *o);
        if (o == NULL) {
            return;
        }
        o->d = d;
        o->peer = c.keys[i];
        struct km_mesh_req *req;
        if (km_mesh_open(m, &c.keys[i], KM_GOSSIP_HOST, 1, on_gossip_open, o, &req) != 0) {
            free(o);
        }
    }
    if (c.n > 0) {
        KM_DEBUG("gossip: offered the new record to %zu connected peer(s)", c.n);
    }
}

/* ---- mDNS ---- */

static void on_mdns_found(void *arg, const struct km_mdns_found *f)
{
    struct km_discover *d = arg;
    uint64_t now = uv_now(d->loop);
    if (f->ttl > 0 && km_peers_learn(d->peers, &f->key, &f->path, f->path.expires_ms, now) == 0) {
        char a[KM_ADDR_STRLEN];
        char id[KM_NODE_ID_LEN + 1];
        km_node_id(&f->key, id);
        KM_DEBUG("mdns: %.12s... at %s (%s)", id,
                 km_addr_str((const struct sockaddr *)&f->path.addr, a, sizeof a),
                 km_path_kind_name(f->path.kind));
    }
    if (f->announcement != NULL) {
        (void)take_record(d, f->announcement, f->announcement_len, KM_PATH_SRC_MDNS);
    }
}

/* Sign this node's current paths and keep the record to send (gossip) and announce (mDNS).
 * The sequence number is the time in milliseconds: newer after every restart, no state on
 * disk. Done again when the paths change or a third of the validity is gone, so the record
 * peers hold never lapses while the node runs. force signs even when nothing changed.
 * Returns 0, 1 when nothing needed signing, or a negative code. */
static int sign_own_record(struct km_discover *d, bool force)
{
    struct km_path paths[KM_ANNOUNCE_PATHS_MAX];
    memset(paths, 0, sizeof paths);
    size_t n = self_paths(d, paths, KM_ANNOUNCE_PATHS_MAX);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now_s = (uint64_t)ts.tv_sec;
    bool same = n == d->n_own_paths && memcmp(paths, d->own_paths, n * sizeof paths[0]) == 0;
    if (!force && same && d->own_signed_s != 0 && now_s < d->own_signed_s + OWN_RECORD_RESIGN_S) {
        return 1;
    }
    struct km_buf b;
    km_buf_init(&b, KM_ANNOUNCE_MAX);
    uint64_t seq = now_s * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    uint64_t expires = now_s + OWN_RECORD_LIFE_S;
    int r = km_announce_build(d->key, seq, expires, paths, n, &b);
    if (r == 0) {
        struct km_announce a = {.key = d->self, .seq = seq, .expires = expires};
        store_record(d, &a, km_buf_peek_ptr(&b), km_buf_len(&b));
        memcpy(d->own_paths, paths, n * sizeof paths[0]);
        d->n_own_paths = n;
        d->own_signed_s = now_s;
        KM_DEBUG("announce: signed this node's record (%zu path(s), seq %llu%s)", n,
                 (unsigned long long)seq, same ? "" : ", paths changed");
    }
    km_buf_reset(&b);
    return r;
}

/* This node's record as "a=<base64>" for the mDNS TXT record. */
static int own_announcement(struct km_discover *d, char *out, size_t outsz)
{
    for (size_t i = 0; i < d->n_store; i++) {
        if (km_pubkey_equal(&d->store[i].key, &d->self)) {
            return km_announce_to_text(d->store[i].blob, d->store[i].len, out, outsz);
        }
    }
    return KM_ERR_NOT_FOUND;
}

/* Re-sign if due, and hand a new record to mDNS (which announces it again). */
static void refresh_own_record(struct km_discover *d)
{
    if (d->key == NULL || d->stopping) {
        return;
    }
    int r = sign_own_record(d, false);
    if (r < 0) {
        KM_WARN_R(r, "announce: cannot sign this node's path list");
        return;
    }
    if (r == 0) {
        gossip_push(d);
    }
    char text[KM_ANNOUNCE_TEXT_MAX];
    if (r == 0 && d->mdns != NULL && own_announcement(d, text, sizeof text) == 0 &&
        (r = km_mdns_set_announcement(d->mdns, text)) != 0) {
        KM_WARN_R(r, "mdns: cannot announce the new path list");
    }
}

/* ---- port mapping (docs/NAT.md) ---- */

static void on_portmap(void *arg, const struct km_portmap_state *st)
{
    struct km_discover *d = arg;
    bool was = d->pm_st.mapped;
    struct sockaddr_in old = d->pm_st.external;
    d->pm_st = *st;
    char a[KM_ADDR_STRLEN];
    if (st->mapped) {
        d->pm_failure_logged = false;
        if (!was || memcmp(&old, &st->external, sizeof old) != 0) {
            KM_INFO("portmap: %s maps %s to mesh port %u (lease %u s)",
                    km_portmap_method_name(st->method),
                    km_addr_str((const struct sockaddr *)&st->external, a, sizeof a),
                    d->cfg->mesh_listen[0].port, st->lease_s);
        }
    } else if (!d->pm_failure_logged) {
        /* The first failure since start or since the last success, once; the retries (and a
         * router whose answers change from one to the next) go to the debug log. */
        d->pm_failure_logged = true;
        KM_INFO("portmap: %s%s; retrying in the background", was ? "mapping lost: " : "",
                st->error);
    } else {
        KM_DEBUG("portmap: attempt %llu failed: %s", (unsigned long long)st->attempts, st->error);
    }
    if (was != st->mapped || memcmp(&old, &st->external, sizeof old) != 0) {
        refresh_own_record(d); /* the mapped path appeared, moved or went */
    }
}

static void portmap_start(struct km_discover *d)
{
    const struct km_config *c = d->cfg;
    if (c->nat_portmap == KM_PORTMAP_OFF || c->n_mesh_listen == 0 || d->stopping) {
        return;
    }
    struct km_portmap_opts o;
    km_portmap_opts_default(&o);
    o.mode = c->nat_portmap;
    o.port = c->mesh_listen[0].port;
    o.lease_s = c->nat_portmap_lease_s;
    o.retry_min_ms = c->nat_portmap_retry_ms;
    memset(&d->pm_st, 0, sizeof d->pm_st);
    d->pm_failure_logged = false;
    int r = km_portmap_new(d->loop, &o, on_portmap, d, &d->pm);
    if (r != 0) {
        KM_WARN_R(r, "portmap: cannot start");
        d->pm = NULL;
        return;
    }
    KM_DEBUG("portmap: asking the router for port %u (%s)", o.port, km_portmap_mode_name(o.mode));
}

static void portmap_stop(struct km_discover *d)
{
    km_portmap_close(d->pm); /* deletes a held mapping, then frees itself */
    d->pm = NULL;
    memset(&d->pm_st, 0, sizeof d->pm_st);
}

static void on_gateway_changed(void *arg)
{
    refresh_own_record(arg); /* a relay path appeared or went */
}

int km_discover_start_gateway(struct km_discover *d, struct km_ssh_node *node)
{
    int r = km_gateway_new(d->loop, d->cfg, d->router, on_gateway_changed, d, &d->gw);
    if (r != 0) {
        return r;
    }
    km_gateway_start(d->gw, node, km_router_mesh(d->router));
    return 0;
}

void km_discover_gateway_stats(const struct km_discover *d, struct km_gateway_stats *out)
{
    km_gateway_stats(d->gw, out);
}

int km_discover_start_portmap(struct km_discover *d)
{
    d->pm_started = true;
    portmap_start(d);
    return 0;
}

static void on_own_timer(uv_timer_t *t)
{
    refresh_own_record(t->data);
}

int km_discover_start_gossip(struct km_discover *d, const struct km_key *key)
{
    d->key = key;
    int r = sign_own_record(d, true);
    if (r != 0) {
        KM_WARN_R(r, "gossip: cannot sign this node's path list");
    }
    if ((r = uv_timer_init(d->loop, &d->own_timer)) != 0) {
        return r;
    }
    d->own_timer_init = true;
    d->own_timer.data = d;
    (void)uv_timer_start(&d->own_timer, on_own_timer, OWN_RECORD_CHECK_MS, OWN_RECORD_CHECK_MS);
    struct km_router_gossip g = {gossip_accept, gossip_conn_accepted, d};
    km_router_set_gossip(d->router, &g);
    return 0;
}

int km_discover_start_mdns(struct km_discover *d, const struct km_key *key)
{
    (void)key;
    const struct km_config *c = d->cfg;
    if (!c->mdns_enabled || c->n_mesh_listen == 0) {
        return 0;
    }
    const char *ifs[8];
    for (size_t i = 0; i < c->n_mdns_ifaces; i++) {
        ifs[i] = c->mdns_ifaces[i];
    }
    char text[KM_ANNOUNCE_TEXT_MAX];
    struct km_mdns_opts o = {
        .key = d->self,
        .port = c->mesh_listen[0].port,
        .ifaces = ifs,
        .n_ifaces = c->n_mdns_ifaces,
        .announcement = own_announcement(d, text, sizeof text) == 0 ? text : NULL,
    };
    int r = km_mdns_new(d->loop, &o, on_mdns_found, d, &d->mdns);
    if (r != 0) {
        /* LAN discovery is a convenience: without it the node still works from its
         * configuration, so this is reported, not fatal. */
        KM_WARN_R(r, "mdns: LAN discovery is off");
        d->mdns = NULL;
        return 0;
    }
    struct km_mdns_stats st;
    km_mdns_get_stats(d->mdns, &st);
    KM_INFO("mdns: announcing _keymesh._tcp on %zu socket(s)", st.n_sockets);
    return 0;
}

int km_discover_start_publish(struct km_discover *d, const char *state_dir)
{
    const struct km_config *c = d->cfg;
    if (!c->publish_enabled) {
        return 0;
    }
    struct km_dnsupdate_opts o;
    km_dnsupdate_opts_default(&o);
    snprintf(o.zone, sizeof o.zone, "%s", c->publish_zone[0] != '\0' ? c->publish_zone : c->suffix);
    o.prefix = c->prefix;
    snprintf(o.tsig_name, sizeof o.tsig_name, "%s", c->publish_tsig_name);
    snprintf(o.tsig_algorithm, sizeof o.tsig_algorithm, "%s", c->publish_tsig_algorithm);
    o.ttl = c->publish_ttl_s;
    o.tcp = c->publish_tcp;
    int r = conf_sockaddr(&c->publish_server, &o.server);
    char path[KM_CONFIG_PATH_MAX];
    if (r == 0) {
        const char *f = c->publish_tsig_secret_file;
        r = f[0] == '/'
                ? (snprintf(path, sizeof path, "%s", f) < (int)sizeof path ? 0 : KM_ERR_TOO_LARGE)
                : km_fs_join(path, sizeof path, state_dir, f);
    }
    if (r == 0 && (r = read_secret(path, o.tsig_secret, sizeof o.tsig_secret)) != 0) {
        KM_ERROR_R(r, "publish: cannot use the TSIG secret file %s", path);
    }
    if (r == 0 && (r = km_dnsupdate_new(d->loop, &o, &d->self, on_published, d, &d->pub)) != 0) {
        KM_ERROR_R(r, "publish: cannot set up the DNS UPDATE publisher");
    }
    sodium_memzero(o.tsig_secret, sizeof o.tsig_secret);
    if (r != 0) {
        return r;
    }
    struct km_path paths[KM_MESH_MAX_ADDRS * 2];
    size_t n = self_paths(d, paths, sizeof paths / sizeof paths[0]);
    if ((r = km_dnsupdate_set_paths(d->pub, paths, n)) != 0) {
        return r;
    }
    KM_INFO("publish: this node's records go to zone %s on %s:%u", o.zone, c->publish_server.host,
            c->publish_server.port);
    return 0;
}

void km_discover_set_config(struct km_discover *d, const struct km_config *cfg)
{
    bool restart_pm = d->pm_started && (cfg->nat_portmap != d->cfg->nat_portmap ||
                                        cfg->nat_portmap_lease_s != d->cfg->nat_portmap_lease_s ||
                                        cfg->nat_portmap_retry_ms != d->cfg->nat_portmap_retry_ms ||
                                        (cfg->n_mesh_listen > 0 && d->cfg->n_mesh_listen > 0 &&
                                         cfg->mesh_listen[0].port != d->cfg->mesh_listen[0].port));
    d->cfg = cfg;
    if (d->gw != NULL) {
        km_gateway_set_config(d->gw, cfg);
    }
    if (restart_pm) {
        portmap_stop(d);
        portmap_start(d);
    }
    d->nets_valid = false; /* [vpn] interfaces may have changed what a path's kind is */
    load_config(d);
    refresh_own_record(d);
}

int km_discover_lookup(void *arg, const struct km_pubkey *peer, struct km_mesh_target *out)
{
    struct km_discover *d = arg;
    memset(out, 0, sizeof *out);
    struct km_path paths[KM_MESH_MAX_ADDRS];
    size_t n = km_peers_paths(d->peers, peer, uv_now(d->loop), paths, KM_MESH_MAX_ADDRS);
    for (size_t i = 0; i < n; i++) {
        if (paths[i].kind == KM_PATH_RELAY) {
            /* Through the gateway named by its key (docs/NAT.md); each gateway once. */
            bool dup = !paths[i].has_via || km_pubkey_equal(&paths[i].via, peer);
            for (size_t k = 0; k < out->n_relays && !dup; k++) {
                dup = km_pubkey_equal(&out->relays[k], &paths[i].via);
            }
            if (!dup && out->n_relays < KM_MESH_MAX_RELAYS) {
                out->relays[out->n_relays++] = paths[i].via;
            }
            continue;
        }
        if (in_mesh_prefix(d, (const struct sockaddr *)&paths[i].addr)) {
            continue; /* a VIP routes into our own TUN device: never a way to reach a peer */
        }
        out->addrs[out->n_addrs++] = paths[i].addr;
    }
    const char *user = "keymesh";
    for (size_t i = 0; i < d->cfg->n_peers; i++) {
        if (km_pubkey_equal(&d->cfg->peers[i].key, peer) && d->cfg->peers[i].user[0] != '\0') {
            user = d->cfg->peers[i].user;
        }
    }
    snprintf(out->user, sizeof out->user, "%s", user);
    return out->n_addrs > 0 || out->n_relays > 0 ? 0 : KM_ERR_NOT_FOUND;
}

void km_discover_report(void *arg, const struct km_pubkey *peer, const struct sockaddr *addr,
                        bool ok)
{
    struct km_discover *d = arg;
    if (km_peers_report(d->peers, peer, addr, ok, uv_now(d->loop)) != 0) {
        KM_DEBUG("mesh: dial result for an address the table does not hold");
    }
}

size_t km_discover_paths(struct km_discover *d, const struct km_pubkey *key, struct km_path *out,
                         size_t max)
{
    return be_paths(d, key, out, max);
}

void km_discover_stats(const struct km_discover *d, struct km_discover_stats *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < KM_CONFIG_MAX_LISTEN; i++) {
        if (d->dns[i] != NULL) {
            struct km_dns_stats s;
            km_dns_server_stats(d->dns[i], &s);
            out->dns_queries += s.queries;
            out->dns_dropped += s.dropped;
            out->dns_cache_hits += s.cache_hits;
        }
    }
    struct km_peers_stats ps;
    km_peers_stats(d->peers, &ps);
    out->known_keys = ps.n_keys;
    out->announce_accepted = ps.accepted;
    out->announce_rejected = ps.replayed + ps.forged + ps.expired + ps.invalid;
    out->gossip_accepted = d->gossip_accepted;
    if (d->mdns != NULL) {
        struct km_mdns_stats ms;
        km_mdns_get_stats(d->mdns, &ms);
        out->mdns_found = ms.found;
        out->mdns_sockets = ms.n_sockets;
    }
    if (d->pub != NULL) {
        struct km_dnsupdate_stats us;
        km_dnsupdate_stats(d->pub, &us);
        out->publish_ok = us.ok;
        out->publish_failed = us.failed;
        out->publish_last = km_dnsupdate_result_name(us.last);
    }
    out->portmap_mode = d->cfg->nat_portmap;
    out->portmap_on = d->pm != NULL;
    if (d->pm != NULL) {
        km_portmap_get(d->pm, &out->portmap);
    }
    out->n_mapped = mapped_path(d, &out->mapped, 1);
}

static void on_timer_closed(uv_handle_t *h)
{
    (void)h;
}

static void pub_finish(struct km_discover *d)
{
    km_dnsupdate_close(d->pub);
    d->pub = NULL;
    if (d->pub_timer_init && !uv_is_closing((uv_handle_t *)&d->pub_timer)) {
        uv_close((uv_handle_t *)&d->pub_timer, on_timer_closed);
    }
}

static void on_removed(void *arg, enum km_dnsupdate_result r)
{
    struct km_discover *d = arg;
    KM_INFO("publish: records removed (%s)", km_dnsupdate_result_name(r));
    pub_finish(d);
}

static void on_pub_timeout(uv_timer_t *t)
{
    struct km_discover *d = t->data;
    KM_WARN("publish: no answer to the removal within 3 s; leaving the records to expire");
    pub_finish(d);
}

void km_discover_stop(struct km_discover *d)
{
    d->stopping = true;
    portmap_stop(d);
    km_gateway_stop(d->gw);
    if (d->own_timer_init && !uv_is_closing((uv_handle_t *)&d->own_timer)) {
        uv_close((uv_handle_t *)&d->own_timer, on_timer_closed);
    }
    while (d->gossips != NULL) {
        gossip_end(d->gossips);
    }
    km_mdns_close(d->mdns); /* sends the goodbye */
    d->mdns = NULL;
    if (d->pub != NULL && !d->pub_timer_init) {
        /* Remove the records on a clean shutdown, bounded by a timer. */
        if (uv_timer_init(d->loop, &d->pub_timer) == 0) {
            d->pub_timer_init = true;
            d->pub_timer.data = d;
            (void)uv_timer_start(&d->pub_timer, on_pub_timeout, 3000, 0);
            km_dnsupdate_remove(d->pub, on_removed, d);
        } else {
            pub_finish(d);
        }
    }
    for (size_t i = 0; i < KM_CONFIG_MAX_LISTEN; i++) {
        km_dns_server_close(d->dns[i]);
        d->dns[i] = NULL;
    }
}

void km_discover_free(struct km_discover *d)
{
    if (d == NULL) {
        return;
    }
    km_discover_stop(d);
    km_dnsupdate_close(d->pub); /* when the loop was never run to let the removal finish */
    km_gateway_free(d->gw);
    km_peers_free(d->peers);
    free(d);
}
