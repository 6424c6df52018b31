/* The router: where a stream goes, and who may open one here.
 *
 * Outbound (the km_egress that SOCKS5, the HTTP proxy and `keymesh connect` use):
 *   <node-id>.<suffix>, <alias>.<suffix> and VIPs go into the mesh to that node's
 *   "localhost"; this node's own names connect locally; everything else follows the egress
 *   policy: refuse, direct (with private ranges refused unless allowed), or through the exit
 *   node.
 * Inbound (the SSH hooks): a peer may log in as "keymesh" when a [peer] section allows its
 * key, and open a local port listed in [mesh] expose or its own expose list; a peer marked
 * `exit = true` may also reach outside destinations through this node. */
#ifndef KM_DAEMON_ROUTER_H
#define KM_DAEMON_ROUTER_H

#include <stdbool.h>
#include <uv.h>

#include "core/daemon/config.h"
#include "core/err.h"
#include "proto/egress.h"
#include "proto/mesh.h"
#include "proto/ssh.h"

struct km_router;

/* cfg and self are borrowed and must outlive the router (the daemon replaces cfg only
 * through km_router_set_config). */
KM_MUST_CHECK int km_router_new(uv_loop_t *loop, const struct km_config *cfg,
                                const struct km_pubkey *self, struct km_router **out);

/* Attach the mesh once it exists (the mesh needs the router's lookup first). */
void km_router_set_mesh(struct km_router *r, struct km_mesh *mesh);

/* The state directory, where capability files live (cap/store.h): certificate logins read
 * its revocation list, dials present its held certificates. Copied. */
void km_router_set_dir(struct km_router *r, const char *dir);

/* Switch to a reloaded configuration. */
void km_router_set_config(struct km_router *r, const struct km_config *cfg);

/* The reserved direct-tcpip target of the announcement exchange (docs/PROTOCOL.md section 4):
 * not a DNS name, so it never collides with a real destination. */
#define KM_GOSSIP_HOST "gossip@keymesh"

/* The reserved direct-tcpip target of a mesh round trip (docs/PROTOCOL.md section 7): any
 * authenticated peer may open it; the node confirms the channel and sends nothing, and the
 * opener closes it, so the time from open to confirmation is one round trip over the session.
 * A peer that does not know the name refuses the open, which is as good an answer. */
#define KM_PING_HOST "ping@keymesh"

/* A round trip to the node whose VIP is vip, over its mesh connection (dialled if needed):
 * cb(arg, 0) when the peer answered, or an error (KM_ERR_NOT_FOUND: no known node has that
 * VIP; KM_ERR_UNREACHABLE ...). Returns 0 with a handle for km_router_ping_cancel, or an error
 * (then cb is never called). Never synchronous. Used by the TUN device for ICMPv6 echo. */
typedef void (*km_router_ping_cb)(void *arg, int err);
KM_MUST_CHECK int km_router_ping(struct km_router *r, const uint8_t vip[16], km_router_ping_cb cb,
                                 void *arg, void **handle);
void km_router_ping_cancel(void *handle);

/* Who handles the announcement exchange (the discovery glue). accept gets each gossip
 * request a peer sends (answer it with km_ssh_direct_accept/reject); conn_accepted hears of
 * every session a peer opened to us. */
struct km_router_gossip {
    void (*accept)(void *arg, const struct km_pubkey *peer, struct km_ssh_direct *d);
    void (*conn_accepted)(void *arg, struct km_ssh_conn *c);
    void *arg;
};
void km_router_set_gossip(struct km_router *r, const struct km_router_gossip *g);

/* Where VIPs of nodes that are not configured are looked up (the discovery glue: keys learned
 * by mDNS or gossip). find returns true and the key whose VIP is vip. */
struct km_router_vips {
    bool (*find)(void *arg, const uint8_t vip[16], struct km_pubkey *out);
    void *arg;
};
void km_router_set_vips(struct km_router *r, const struct km_router_vips *v);
/* Who handles the gateway protocol (docs/PROTOCOL.md section 6): every direct-tcpip request
 * for a reserved host ending in "@keymesh" other than gossip. allow decides (0 or
 * KM_ERR_REFUSED); on_direct then answers the request. */
struct km_router_nat {
    int (*allow)(void *arg, const struct km_pubkey *peer, const char *host, uint16_t port);
    void (*on_direct)(void *arg, const struct km_pubkey *peer, const char *host, uint16_t port,
                      struct km_ssh_direct *d);
    void *arg;
};
void km_router_set_nat(struct km_router *r, const struct km_router_nat *n);

/* The mesh set with km_router_set_mesh, or NULL. */
struct km_mesh *km_router_mesh(const struct km_router *r);

/* The egress interface for front-ends. */
struct km_egress *km_router_egress(struct km_router *r);

/* Hooks for km_ssh_node_new; arg is the router. */
void km_router_ssh_hooks(struct km_router *r, struct km_ssh_hooks *out);

/* Resolve a host name or literal to a peer key when it names a mesh node (FQDN, alias,
 * VIP). Returns 0, KM_ERR_NOT_FOUND for a mesh name that is no node, or KM_ERR_INVALID when
 * host is not a mesh name at all. */
KM_MUST_CHECK int km_router_resolve(const struct km_router *r, const char *host,
                                    struct km_pubkey *out);

/* True when a key the node knows (itself, a [peer], an alias, or one discovery learned)
 * hashes to vip. */
bool km_router_vip_known(const struct km_router *r, const uint8_t vip[16]);

/* True for addresses direct egress refuses unless [egress] allow_private: unspecified,
 * loopback, RFC 1918, CGNAT, link-local (cloud metadata included), ULA (the mesh prefix
 * too), multicast and reserved ranges; IPv4-mapped IPv6 as its IPv4 address. */
bool km_router_addr_is_private(const struct sockaddr *sa);

/* Cancel everything in flight and detach the mesh (daemon shutdown). The SSH hooks stay
 * callable until km_router_free. */
void km_router_shutdown(struct km_router *r);

/* km_router_shutdown and free. Accepts NULL. */
void km_router_free(struct km_router *r);

#endif
