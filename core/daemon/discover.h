/* The daemon's discovery glue: the peer table seeded from the configuration, this node's own
 * paths, the DNS servers and the backend they query, and the mesh's address lookup. */
#ifndef KM_DAEMON_DISCOVER_H
#define KM_DAEMON_DISCOVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/daemon/config.h"
#include "core/daemon/router.h"
#include "discovery/path.h"
#include "discovery/portmap.h"
#include "identity/key.h"
#include "proto/mesh.h"

struct km_discover;

/* cfg, self and router are borrowed and must outlive the object. */
KM_MUST_CHECK int km_discover_new(uv_loop_t *loop, const struct km_config *cfg,
                                  const struct km_pubkey *self, struct km_router *router,
                                  struct km_discover **out);

/* Start the DNS servers of [dns] (none when disabled). Returns 0 or the first error. */
KM_MUST_CHECK int km_discover_start_dns(struct km_discover *d);

/* Start publishing this node's records by DNS UPDATE when [publish] is enabled (the TSIG
 * secret file, relative to state_dir, must be mode 0600). Returns 0 or the first error. */
KM_MUST_CHECK int km_discover_start_publish(struct km_discover *d, const char *state_dir);

/* Sign this node's path list and exchange signed records with every keymesh peer that dials
 * us (docs/PROTOCOL.md section 4): records are verified one by one, newer ones replace a key's
 * announced paths, forged and replayed ones are dropped and counted. Returns 0. */
KM_MUST_CHECK int km_discover_start_gossip(struct km_discover *d, const struct km_key *key);

/* Announce this node and browse for others on the LAN by mDNS when [mdns] is enabled; key
 * signs the path list carried in the TXT record. A failure is logged and LAN discovery stays
 * off (returns 0); found peers feed the table. */
KM_MUST_CHECK int km_discover_start_mdns(struct km_discover *d, const struct km_key *key);

/* Ask the router for a mapping of the mesh port when [nat] portmap is on, and announce the
 * public address:port as a `mapped` path while it is held (docs/NAT.md). Failures are
 * logged once each and retried in the background; returns 0. */
KM_MUST_CHECK int km_discover_start_portmap(struct km_discover *d);

/* Register with the configured gateways and take the gateway role when enabled
 * (core/daemon/gateway.h); node is the SSH node relayed sessions run on. Relay paths of the
 * registered gateways join this node's signed record. Returns 0 or -ENOMEM. */
KM_MUST_CHECK int km_discover_start_gateway(struct km_discover *d, struct km_ssh_node *node);

struct km_gateway_stats;
/* Gateway counters for status (zeros before km_discover_start_gateway). */
void km_discover_gateway_stats(const struct km_discover *d, struct km_gateway_stats *out);

/* A reloaded configuration: re-seed the configured peer addresses; restart port mapping when
 * its keys or the mesh port changed. */
void km_discover_set_config(struct km_discover *d, const struct km_config *cfg);

/* The mesh's lookup hook (arg: the km_discover): the peer's candidate addresses, best
 * first, and its SSH user. */
int km_discover_lookup(void *arg, const struct km_pubkey *peer, struct km_mesh_target *out);

/* The mesh's report hook (arg: the km_discover): remember which address worked, so it is
 * offered first next time, and which failed. */
void km_discover_report(void *arg, const struct km_pubkey *peer, const struct sockaddr *addr,
                        bool ok);

/* Unranked candidate paths of key (this node's own for its own key). */
size_t km_discover_paths(struct km_discover *d, const struct km_pubkey *key, struct km_path *out,
                         size_t max);

struct km_discover_stats {
    uint64_t dns_queries;
    uint64_t dns_dropped;
    uint64_t dns_cache_hits; /* UDP answers from the packet cache */
    size_t known_keys;
    uint64_t announce_accepted;
    uint64_t announce_rejected;
    uint64_t gossip_accepted; /* records taken from peers over SSH */
    uint64_t mdns_found;      /* paths learned by mDNS */
    size_t mdns_sockets;      /* 0 when LAN discovery is off */
    uint64_t publish_ok;      /* DNS UPDATE transactions that succeeded */
    uint64_t publish_failed;
    const char *publish_last;          /* result of the last one, or NULL when not publishing */
    enum km_portmap_mode portmap_mode; /* as configured */
    bool portmap_on;                   /* a port mapper runs */
    struct km_portmap_state portmap;   /* its state when it runs */
    struct km_path mapped;             /* the announced mapped path, when n_mapped is 1 */
    size_t n_mapped;
};
void km_discover_stats(const struct km_discover *d, struct km_discover_stats *out);

/* Close the DNS servers and send the removal UPDATE (bounded to 3 s; the loop must run for it
 * to finish); the table stays until km_discover_free. */
void km_discover_stop(struct km_discover *d);

/* Stop and free. Accepts NULL. */
void km_discover_free(struct km_discover *d);

#endif
