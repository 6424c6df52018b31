/* Control-socket commands of the daemon (docs/PROTOCOL.md section 1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/daemon/daemon_int.h"
#include "core/daemon/gateway.h"
#include "core/addr.h"
#include "core/log.h"
#include "core/relay.h"
#include "core/uvstream.h"
#include "core/version.h"

static json_t *addr_list(const struct km_conf_addr *a, size_t n, bool enabled)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && enabled && i < n; i++) {
        char t[64]; /* "[" 45 characters "]:65535" (host holds INET6_ADDRSTRLEN) */
        snprintf(t, sizeof t, strchr(a[i].host, ':') != NULL ? "[%.45s]:%u" : "%.45s:%u", a[i].host,
                 a[i].port);
        json_array_append_new(arr, json_string(t));
    }
    return arr;
}

/* The paths the dialer would try for key, in its order: "kind address", with "via <id>" for
 * a relay. */
static json_t *candidates_json(const struct km_daemon *d, const struct km_pubkey *key)
{
    json_t *arr = json_array();
    struct km_path p[KM_MESH_MAX_ADDRS * 2];
    size_t n = km_discover_paths(d->disc, key, p, sizeof p / sizeof p[0]);
    for (size_t i = 0; arr != NULL && i < n; i++) {
        char a[KM_ADDR_STRLEN];
        char t[KM_ADDR_STRLEN + 64];
        km_addr_str((const struct sockaddr *)&p[i].addr, a, sizeof a);
        if (p[i].kind == KM_PATH_RELAY && p[i].has_via) {
            char via[KM_NODE_ID_LEN + 1];
            km_node_id(&p[i].via, via);
            snprintf(t, sizeof t, "relay %s via %.12s...", a, via);
        } else {
            snprintf(t, sizeof t, "%s %s", km_path_kind_name(p[i].kind), a);
        }
        json_array_append_new(arr, json_string(t));
    }
    return arr;
}

static json_t *peer_json(const struct km_daemon *d, const struct km_pubkey *key)
{
    char id[KM_NODE_ID_LEN + 1];
    char fqdn[KM_FQDN_MAX];
    char vip[KM_VIP_STRLEN];
    km_node_id(key, id);
    km_vip_str(key, d->cfg->prefix, vip);
    if (km_fqdn(key, d->cfg->suffix, fqdn, sizeof fqdn) != 0) {
        fqdn[0] = '\0';
    }
    json_t *p = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i}", "node_id", id, "name", "", "fqdn",
                          fqdn, "vip", vip, "state", "idle", "address", "", "streams", 0);
    for (size_t i = 0; p != NULL && i < d->cfg->n_peers; i++) {
        if (km_pubkey_equal(&d->cfg->peers[i].key, key)) {
            json_object_set_new(p, "name", json_string(d->cfg->peers[i].name));
        }
    }
    if (p != NULL && d->disc != NULL) {
        json_object_set_new(p, "candidates", candidates_json(d, key));
    }
    return p;
}

static json_t *find_peer_json(json_t *peers, const struct km_pubkey *key)
{
    char id[KM_NODE_ID_LEN + 1];
    km_node_id(key, id);
    size_t i;
    json_t *p;
    json_array_foreach (peers, i, p) {
        const char *pid = json_string_value(json_object_get(p, "node_id"));
        if (pid != NULL && strcmp(pid, id) == 0) {
            return p;
        }
    }
    return NULL;
}

struct peers_ctx {
    const struct km_daemon *d;
    json_t *peers;
};

static void add_mesh_peer(void *arg, const struct km_mesh_peer_info *info)
{
    struct peers_ctx *ctx = arg;
    json_t *p = find_peer_json(ctx->peers, &info->key);
    if (p == NULL) {
        p = peer_json(ctx->d, &info->key);
        if (p == NULL || json_array_append_new(ctx->peers, p) != 0) {
            return;
        }
    }
    json_object_set_new(p, "state", json_string(info->state));
    json_object_set_new(p, "address", json_string(info->addr));
    if (strcmp(info->state, "connected") == 0) {
        json_object_set_new(p, "path",
                            json_string(info->relayed   ? "relay"
                                        : info->punched ? "punched"
                                                        : "direct"));
    }
    json_object_set_new(p, "streams", json_integer(info->streams));
    if (info->cipher[0] != '\0') {
        json_object_set_new(p, "cipher", json_string(info->cipher));
    }
    if (info->last_err != 0) {
        json_object_set_new(p, "last_error", json_string(km_strerror(info->last_err)));
    }
}

/* Configured peers first, in file order, with the mesh's view of each merged in. */
static json_t *peers_json(const struct km_daemon *d)
{
    json_t *peers = json_array();
    for (size_t i = 0; peers != NULL && i < d->cfg->n_peers; i++) {
        json_array_append_new(peers, peer_json(d, &d->cfg->peers[i].key));
    }
    struct peers_ctx ctx = {d, peers};
    if (peers != NULL && d->mesh != NULL) {
        km_mesh_foreach(d->mesh, add_mesh_peer, &ctx);
    }
    return peers;
}

static json_t *discovery_json(const struct km_daemon *d)
{
    struct km_discover_stats s = {0};
    if (d->disc != NULL) {
        km_discover_stats(d->disc, &s);
    }
    json_t *pub = s.publish_last == NULL
                      ? json_null()
                      : json_pack("{s:I, s:I, s:s}", "ok", (json_int_t)s.publish_ok, "failed",
                                  (json_int_t)s.publish_failed, "last", s.publish_last);
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:I, s:I, s:I}", "queries",
                     (json_int_t)s.dns_queries, "dropped", (json_int_t)s.dns_dropped, "cache_hits",
                     (json_int_t)s.dns_cache_hits, "known_keys", (json_int_t)s.known_keys,
                     "announcements_accepted", (json_int_t)s.announce_accepted,
                     "announcements_rejected", (json_int_t)s.announce_rejected, "listen",
                     addr_list(d->cfg->dns_listen, d->cfg->n_dns_listen, d->cfg->dns_enabled),
                     "publish", pub != NULL ? pub : json_null(), "mdns_sockets",
                     (json_int_t)s.mdns_sockets, "mdns_found", (json_int_t)s.mdns_found,
                     "gossip_accepted", (json_int_t)s.gossip_accepted);
}

static json_t *tun_json(const struct km_daemon *d)
{
    if (d->tun == NULL) {
        return json_null();
    }
    struct km_tun_stats s;
    km_tun_stats(d->tun, &s);
    json_t *o = json_object();
    json_t *drops = json_object();
    uint64_t total = 0;
    for (int k = KM_PKT_DROP_FIRST; k < KM_PKT_KIND_COUNT; k++) {
        json_object_set_new(drops, km_pkt_kind_name((enum km_pkt_kind)k),
                            json_integer((json_int_t)s.drops[k]));
        total += s.drops[k];
    }
    const struct {
        const char *name;
        uint64_t v;
    } counters[] = {
        {"packets_in", s.pkts_in},
        {"packets_out", s.pkts_out},
        {"bytes_in", s.bytes_in},
        {"bytes_out", s.bytes_out},
        {"dropped", total},
        {"write_errors", s.write_errors},
        {"no_memory", s.nomem},
        {"flows_live", s.flows_live},
        {"flows_pending", s.flows_pending},
        {"flows_opened", s.flows_opened},
        {"flows_refused", s.flows_refused},
        {"flows_unreachable", s.flows_unreach},
        {"flows_over_limit", s.flows_limit},
        {"flows_timed_out", s.flows_timeout},
        {"echo_replies", s.echo_replies},
        {"echo_dropped", s.echo_dropped},
        {"icmp_rate_limited", s.icmp_ratelimited},
    };
    json_object_set_new(o, "device", json_string(km_tun_ifname(d->tun)));
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
        json_object_set_new(o, counters[i].name, json_integer((json_int_t)counters[i].v));
    }
    json_object_set_new(o, "drops", drops);
    return o;
}

/* The "nat" object of status: port mapping (docs/CLI.md). */
static json_t *nat_json(const struct km_daemon *d)
{
    struct km_discover_stats s = {0};
    if (d->disc != NULL) {
        km_discover_stats(d->disc, &s);
    }
    char ext[KM_ADDR_STRLEN] = "";
    char ann[KM_ADDR_STRLEN] = "";
    if (s.portmap.mapped) {
        (void)km_addr_str((const struct sockaddr *)&s.portmap.external, ext, sizeof ext);
    }
    if (s.n_mapped > 0) {
        (void)km_addr_str((const struct sockaddr *)&s.mapped.addr, ann, sizeof ann);
    }
    json_t *pm = json_pack(
        "{s:s, s:b, s:s, s:s?, s:s?, s:I, s:I, s:I, s:s?}", "mode",
        km_portmap_mode_name(s.portmap_mode), "mapped", s.portmap.mapped, "method",
        km_portmap_method_name(s.portmap.method), "external", ext[0] != '\0' ? ext : NULL,
        "announced", ann[0] != '\0' ? ann : NULL, "lease_s", (json_int_t)s.portmap.lease_s,
        "attempts", (json_int_t)s.portmap.attempts, "failures", (json_int_t)s.portmap.failures,
        "error", s.portmap.error != NULL && s.portmap.error[0] != '\0' ? s.portmap.error : NULL);
    struct km_gateway_stats g;
    memset(&g, 0, sizeof g);
    if (d->disc != NULL) {
        km_discover_gateway_stats(d->disc, &g);
    }
    char refl[KM_ADDR_STRLEN] = "";
    if (g.has_reflexive) {
        (void)km_addr_str((const struct sockaddr *)&g.reflexive, refl, sizeof refl);
    }
    json_t *gw = json_pack("{s:b, s:I, s:I, s:I, s:I, s:I}", "enabled", d->cfg->gateway_enabled,
                           "nodes", (json_int_t)g.nodes, "relayed", (json_int_t)g.relayed,
                           "relayed_total", (json_int_t)g.relayed_total, "relayed_bytes",
                           (json_int_t)g.relayed_bytes, "refused", (json_int_t)g.refused);
    return json_pack("{s:o, s:I, s:I, s:s?, s:o}", "portmap", pm != NULL ? pm : json_null(),
                     "gateways", (json_int_t)g.gateways, "registered", (json_int_t)g.registered,
                     "reflexive", refl[0] != '\0' ? refl : NULL, "gateway",
                     gw != NULL ? gw : json_null());
}

static json_t *status_json(const struct km_daemon *d)
{
    KM_DEBUG("status: %zu bytes queued on sockets", km_uvstream_total_queued());
    const struct km_config *c = d->cfg;
    char prefix[16];
    km_prefix_str(c->prefix, prefix);
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s?, s:s, s:I, s:o, s:o, s:o, s:I, s:I, "
        "s:o, "
        "s:o, s:o, s:o}",
        "version", KM_VERSION, "node_id", d->node_id, "fqdn", d->fqdn, "vip", d->vip, "prefix",
        prefix, "pid", (json_int_t)getpid(), "uptime_s", (json_int_t)(time(NULL) - d->started),
        "state_dir", d->opts->dir, "config", d->config_loaded ? d->opts->config_path : NULL,
        "log_level", km_log_level_name(km_log_get_level()), "reloads", (json_int_t)d->reloads,
        "mesh_listen", addr_list(c->mesh_listen, c->n_mesh_listen, true), "socks5_listen",
        addr_list(c->socks5_listen, c->n_socks5_listen, c->socks5_enabled), "http_listen",
        addr_list(c->http_listen, c->n_http_listen, c->http_enabled), "sessions",
        (json_int_t)(d->ssh != NULL ? km_ssh_node_sessions(d->ssh) : 0), "streams",
        (json_int_t)km_relay_count(), "peers", peers_json(d), "dns", discovery_json(d), "nat",
        nat_json(d), "tun", tun_json(d));
}

static json_t *cmd_connect(struct km_daemon *d, const json_t *req, struct km_ctl_conn *conn);
static json_t *cmd_resolve(struct km_daemon *d, const json_t *req);
static json_t *cmd_ping_node(struct km_daemon *d, const json_t *req, struct km_ctl_conn *conn);

json_t *km__daemon_on_ctl(void *arg, const char *cmd, const json_t *req, struct km_ctl_conn *conn)
{
    struct km_daemon *d = arg;
    if (strcmp(cmd, "status") == 0) {
        return status_json(d);
    }
    if (strcmp(cmd, "ping") == 0) {
        return json_object();
    }
    if (strcmp(cmd, "resolve") == 0) {
        return cmd_resolve(d, req);
    }
    if (strcmp(cmd, "connect") == 0) {
        return cmd_connect(d, req, conn);
    }
    if (strcmp(cmd, "ping-node") == 0) {
        return cmd_ping_node(d, req, conn);
    }
    KM_DEBUG("ctl: unknown command \"%s\"", cmd); /* cmd is [a-z0-9-] only */
    return json_pack("{s:b, s:s+}", "ok", 0, "error", "unknown command: ", cmd);
}

/* ---- connect: a byte stream for `keymesh connect HOST PORT` ----
 *
 * The client's connection is taken over: the reply line {"ok":true} is followed by the raw
 * stream, or {"ok":false,"error":...} by a close. */

struct connect_req {
    struct km_stream *client;
    uint8_t pending[1024];
    size_t n_pending;
    char what[300];
};

static void connect_reply(struct km_stream *client, int err)
{
    char line[256];
    if (err == 0) {
        snprintf(line, sizeof line, "{\"ok\":true}\n");
    } else {
        snprintf(line, sizeof line, "{\"ok\":false,\"error\":\"%s\"}\n", km_strerror(err));
    }
    (void)km_stream_write(client, (const uint8_t *)line, strlen(line));
}

static void on_connect_relay_done(void *arg, int err, uint64_t up, uint64_t down)
{
    (void)arg;
    KM_DEBUG("connect: stream ended (%s), %llu bytes up, %llu down", km_strerror(err),
             (unsigned long long)up, (unsigned long long)down);
}

static void on_connect_done(void *arg, int err, struct km_stream *target)
{
    struct connect_req *c = arg;
    connect_reply(c->client, err);
    if (err != 0) {
        KM_INFO("connect %s: %s", c->what, km_strerror(err));
        km_stream_shutdown(c->client);
        km_stream_close(c->client);
    } else if (km_relay_start(c->client, target, c->pending, c->n_pending, on_connect_relay_done,
                              NULL) != 0) {
        KM_INFO("connect %s: relay failed", c->what);
    }
    free(c);
}

static json_t *cmd_connect(struct km_daemon *d, const json_t *req, struct km_ctl_conn *conn)
{
    const char *host = json_string_value(json_object_get(req, "host"));
    json_int_t port = json_integer_value(json_object_get(req, "port"));
    if (host == NULL || host[0] == '\0' || strlen(host) > 255 || port < 1 || port > 65535) {
        return json_pack("{s:b, s:s}", "ok", 0, "error",
                         "connect needs \"host\" (1-255 characters) and \"port\" (1-65535)");
    }
    struct connect_req *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    char h[280];
    km_log_escape(h, sizeof h, host, strlen(host));
    snprintf(c->what, sizeof c->what, "\"%s\":%d", h, (int)port);
    c->client = km_ctl_take(conn, c->pending, sizeof c->pending, &c->n_pending);
    if (c->client == NULL) {
        free(c);
        return NULL;
    }
    struct km_egress *e = km_router_egress(d->router);
    struct km_egress_req *er;
    int r = e->open(e, host, (uint16_t)port, "connect", on_connect_done, c, &er);
    if (r != 0) {
        KM_INFO("connect %s: %s", c->what, km_strerror(r));
        connect_reply(c->client, r);
        km_stream_shutdown(c->client);
        km_stream_close(c->client);
        free(c);
    }
    return NULL;
}

/* ---- resolve: a name's identity and its paths, ranked as for a requester on this node ---- */

static json_t *cmd_resolve(struct km_daemon *d, const json_t *req)
{
    const char *name = json_string_value(json_object_get(req, "name"));
    if (name == NULL || name[0] == '\0' || strlen(name) > 253) {
        return json_pack("{s:b, s:s}", "ok", 0, "error", "resolve needs \"name\"");
    }
    struct km_pubkey key;
    int r = km_router_resolve(d->router, name, &key);
    if (r != 0 && km_node_id_parse(name, strlen(name), &key) == 0) {
        r = 0; /* a bare node ID */
    }
    if (r != 0) {
        return json_pack("{s:b, s:s}", "ok", 0, "error",
                         r == KM_ERR_NOT_FOUND ? "no such node or name"
                                               : "not a mesh name, node ID or VIP");
    }
    json_t *o = peer_json(d, &key);
    json_t *paths = json_array();
    if (o == NULL || paths == NULL) {
        json_decref(o);
        json_decref(paths);
        return NULL;
    }
    struct km_path p[KM_MESH_MAX_ADDRS * 2];
    size_t order[KM_MESH_MAX_ADDRS * 2];
    size_t n = km_discover_paths(d->disc, &key, p, sizeof p / sizeof p[0]);
    size_t ranked = km_path_rank(p, n, KM_REQ_SAME_LINK, order);
    static const char *const sources[] = {"config", "mdns", "gossip", "dns", "self"};
    for (size_t i = 0; i < ranked; i++) {
        const struct km_path *x = &p[order[i]];
        char a[KM_ADDR_STRLEN];
        json_array_append_new(
            paths, json_pack("{s:I, s:s, s:s, s:s}", "rank", (json_int_t)(i + 1), "kind",
                             km_path_kind_name(x->kind), "address",
                             km_addr_str((const struct sockaddr *)&x->addr, a, sizeof a), "source",
                             (unsigned)x->source < 5 ? sources[x->source] : "?"));
    }
    json_object_del(o, "state");
    json_object_del(o, "address");
    json_object_del(o, "streams");
    json_object_del(o, "candidates"); /* "paths" below says it with ranks and sources */
    json_object_set_new(o, "self", json_boolean(km_pubkey_equal(&key, km_key_pub(d->key))));
    json_object_set_new(o, "paths", paths);
    return o;
}

/* ---- ping-node: round trips to a peer over the mesh (docs/PROTOCOL.md section 7) ----
 *
 * Each round opens a channel to KM_PING_HOST on the peer's connection: the time from the
 * open to its confirmation is one round trip over the path in use. The first round also
 * dials when there is no connection yet; that time is reported apart. The reply is written
 * when all rounds are done, on the client's connection taken over for it. */

#define PING_MAX 100

struct ping_req {
    struct km_daemon *d;
    struct km_stream *client;
    struct km_pubkey key;
    unsigned count, done;
    bool was_connected; /* a connection existed when the ping started */
    bool need_dial;     /* the next open will dial first */
    uint64_t t0_ns;
    double rtt_ms[PING_MAX];
    double connect_ms;
    uint8_t pending[16];
    size_t n_pending;
};

struct ping_find {
    const struct km_pubkey *key;
    bool found;
    bool connected;
    bool relayed;
    bool punched;
    char addr[64];
};

static void ping_find_cb(void *arg, const struct km_mesh_peer_info *info)
{
    struct ping_find *f = arg;
    if (km_pubkey_equal(&info->key, f->key)) {
        f->found = true;
        f->connected = strcmp(info->state, "connected") == 0;
        f->relayed = info->relayed;
        f->punched = info->punched;
        snprintf(f->addr, sizeof f->addr, "%s", info->addr);
    }
}

static void ping_finish(struct ping_req *p, int err)
{
    json_t *o;
    if (err != 0 && p->done == 0) {
        o = json_pack("{s:b, s:s}", "ok", 0, "error", km_strerror(err));
    } else {
        struct ping_find f = {.key = &p->key};
        if (p->d->mesh != NULL) {
            km_mesh_foreach(p->d->mesh, ping_find_cb, &f);
        }
        char id[KM_NODE_ID_LEN + 1];
        km_node_id(&p->key, id);
        json_t *rtts = json_array();
        double min = 0, sum = 0, max = 0;
        for (unsigned i = 0; i < p->done; i++) {
            json_array_append_new(rtts, json_real(p->rtt_ms[i]));
            min = i == 0 || p->rtt_ms[i] < min ? p->rtt_ms[i] : min;
            max = p->rtt_ms[i] > max ? p->rtt_ms[i] : max;
            sum += p->rtt_ms[i];
        }
        o = json_pack("{s:b, s:s, s:s, s:s, s:o, s:f, s:f, s:f, s:o, s:I, s:s?}", "ok", 1,
                      "node_id", id, "path",
                      f.relayed   ? "relay"
                      : f.punched ? "punched"
                                  : "direct",
                      "address", f.addr, "rtt_ms", rtts != NULL ? rtts : json_array(), "min_ms",
                      min, "avg_ms", p->done > 0 ? sum / p->done : 0.0, "max_ms", max, "connect_ms",
                      p->was_connected ? json_null() : json_real(p->connect_ms), "lost",
                      (json_int_t)(p->count - p->done), "error",
                      err != 0 ? km_strerror(err) : NULL);
    }
    char *line = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (line != NULL) {
        (void)km_stream_write(p->client, (const uint8_t *)line, strlen(line));
        (void)km_stream_write(p->client, (const uint8_t *)"\n", 1);
        free(line);
    }
    km_stream_shutdown(p->client);
    km_stream_close(p->client);
    free(p);
}

static void ping_round(struct ping_req *p);

static void on_ping_open(void *arg, int err, struct km_stream *s)
{
    struct ping_req *p = arg;
    double ms = (double)(uv_hrtime() - p->t0_ns) / 1e6;
    if (err != 0) {
        ping_finish(p, err);
        return;
    }
    km_stream_close(s);
    if (p->need_dial) {
        p->need_dial = false; /* that open dialled first: its time is the connect time */
        p->connect_ms = ms;
    } else {
        p->rtt_ms[p->done++] = ms;
    }
    if (p->done >= p->count || p->d->stopping) {
        ping_finish(p, 0);
        return;
    }
    ping_round(p);
}

static void ping_round(struct ping_req *p)
{
    struct km_mesh_req *mr;
    p->t0_ns = uv_hrtime();
    int r = p->d->mesh != NULL
                ? km_mesh_open(p->d->mesh, &p->key, KM_PING_HOST, 1, on_ping_open, p, &mr)
                : KM_ERR_CLOSED;
    if (r != 0) {
        ping_finish(p, r);
    }
}

static json_t *cmd_ping_node(struct km_daemon *d, const json_t *req, struct km_ctl_conn *conn)
{
    const char *name = json_string_value(json_object_get(req, "name"));
    json_int_t count = json_integer_value(json_object_get(req, "count"));
    if (name == NULL || name[0] == '\0' || strlen(name) > 253 || count < 1 || count > PING_MAX) {
        return json_pack("{s:b, s:s}", "ok", 0, "error",
                         "ping-node needs \"name\" and \"count\" (1-100)");
    }
    struct km_pubkey key;
    int r = km_router_resolve(d->router, name, &key);
    if (r != 0 && km_node_id_parse(name, strlen(name), &key) == 0) {
        r = 0;
    }
    if (r != 0) {
        return json_pack("{s:b, s:s}", "ok", 0, "error",
                         r == KM_ERR_NOT_FOUND ? "no such node or name"
                                               : "not a mesh name, node ID or VIP");
    }
    if (km_pubkey_equal(&key, km_key_pub(d->key))) {
        return json_pack("{s:b, s:s}", "ok", 0, "error", "that is this node");
    }
    struct ping_req *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return NULL;
    }
    p->d = d;
    p->key = key;
    p->count = (unsigned)count;
    struct ping_find f = {.key = &key};
    if (d->mesh != NULL) {
        km_mesh_foreach(d->mesh, ping_find_cb, &f);
    }
    p->was_connected = f.connected;
    p->need_dial = !f.connected;
    p->client = km_ctl_take(conn, p->pending, sizeof p->pending, &p->n_pending);
    if (p->client == NULL) {
        free(p);
        return NULL;
    }
    ping_round(p);
    return NULL;
}
