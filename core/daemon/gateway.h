/* Gateways and relayed streams (docs/NAT.md, docs/PROTOCOL.md section 6).
 *
 * Node role: for each `[nat] gateway`, keep a registration channel open on the SSH session to
 * that gateway (re-opened with backoff and jitter whenever it ends, so it comes back after
 * either side restarts); accept relayed sessions that a registered gateway opens, running
 * this node's SSH server inside each (the peer's key is authenticated end to end).
 * Gateway role (`[gateway] enabled`): accept registrations from peers with `relay = true`,
 * tell each the address it is seen from, and splice a peer's stream naming a registered node
 * to a channel on that node's session, within per-node limits. */
#ifndef KM_DAEMON_GATEWAY_H
#define KM_DAEMON_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "core/daemon/config.h"
#include "core/daemon/router.h"
#include "identity/key.h"
#include "proto/mesh.h"
#include "proto/ssh.h"

struct km_gateway;

/* cfg and router are borrowed and must outlive the object. changed (may be NULL) is called
 * when this node's registrations change, so its announced relay paths can be re-signed. */
KM_MUST_CHECK int km_gateway_new(uv_loop_t *loop, const struct km_config *cfg,
                                 struct km_router *router, void (*changed)(void *arg), void *arg,
                                 struct km_gateway **out);

/* Start both roles once the SSH node and the mesh run: installs the router's gateway-protocol
 * hooks and starts registering with the configured gateways. */
void km_gateway_start(struct km_gateway *g, struct km_ssh_node *node, struct km_mesh *mesh);

/* A reloaded configuration: registrations follow the new gateway list. */
void km_gateway_set_config(struct km_gateway *g, const struct km_config *cfg);

/* This node's registered gateways: for i < the count returned, key[i] and the configured
 * address of each (the relay path to announce). */
size_t km_gateway_registered(const struct km_gateway *g, struct km_pubkey *keys,
                             struct sockaddr_storage *addrs, size_t max);

struct km_gateway_stats {
    size_t gateways;    /* configured */
    size_t registered;  /* with an open registration */
    bool has_reflexive; /* a gateway told us how it sees us */
    struct sockaddr_storage reflexive;
    size_t nodes;     /* gateway role: nodes registered here */
    unsigned relayed; /* relayed streams open now */
    uint64_t relayed_total;
    uint64_t relayed_bytes;
    uint64_t refused; /* registrations and relay requests refused */
};
void km_gateway_stats(const struct km_gateway *g, struct km_gateway_stats *out);

/* Close registrations and streams being set up, detach from the router, close the timers
 * (the loop must run for that). Running relayed streams end with km_relay_close_all. */
void km_gateway_stop(struct km_gateway *g);

/* Free, after km_gateway_stop and once the loop has run the closes. Accepts NULL. */
void km_gateway_free(struct km_gateway *g);

#endif
