/* The mesh: streams to peers by key, over one SSH connection per peer, dialled on demand,
 * racing the lookup's addresses in order with a short stagger (happy eyeballs).
 *
 * km_mesh_open(peer, host, port) finds the ready connection to that peer or dials one,
 * trying each address the lookup hook returns, and opens a direct-tcpip channel on it.
 * Requests that arrive while a dial is in progress wait for it. A failed dial is retried with
 * exponential backoff while requests are waiting (each request gives up at its own deadline);
 * a refused host key or authentication fails the waiting requests at once. Connections idle
 * for idle_timeout_ms are closed. A relayed connection (through a gateway, after every
 * direct address failed) keeps trying the direct addresses in the background with backoff
 * (1 s doubling to 60 s) and hands over to the first that works; each round also asks the
 * punch hook (if set) to coordinate a TCP hole punch through the gateways, whose connection
 * is handed in with km_mesh_punched. */
#ifndef KM_PROTO_MESH_H
#define KM_PROTO_MESH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/err.h"
#include "core/stream.h"
#include "identity/key.h"
#include "proto/ssh.h"

#define KM_MESH_MAX_ADDRS 8
#define KM_MESH_MAX_RELAYS 4

/* The direct-tcpip target a node asks a gateway for to reach <node-id> through it:
 * "<node-id>" KM_MESH_RELAY_SUFFIX, port 1 (docs/PROTOCOL.md section 6). */
#define KM_MESH_RELAY_SUFFIX ".relay@keymesh"

/* Where a peer can be reached, as the lookup hook reports it. */
struct km_mesh_target {
    struct sockaddr_storage addrs[KM_MESH_MAX_ADDRS];
    size_t n_addrs;
    /* Gateways the peer is registered with, tried in order after every address failed: a
     * stream to the gateway naming the peer, spliced by the gateway to the peer's session,
     * carries an SSH session of its own whose host key is checked against the peer's key. */
    struct km_pubkey relays[KM_MESH_MAX_RELAYS];
    size_t n_relays;
    char user[64]; /* SSH user to log in as ("keymesh" for keymesh nodes) */
};

/* Fill *out for peer. Return 0, or KM_ERR_NOT_FOUND when no address is known. */
typedef int (*km_mesh_lookup_cb)(void *arg, const struct km_pubkey *peer,
                                 struct km_mesh_target *out);

struct km_mesh_opts {
    unsigned idle_timeout_ms;    /* close a connection with no stream for this long (0: never) */
    unsigned request_timeout_ms; /* how long a stream request may wait for a connection */
    unsigned backoff_min_ms;
    unsigned backoff_max_ms;
    /* Hears how each dial of an address went (arg: the lookup arg), so the address book can
     * offer what worked first next time. May be NULL. */
    void (*report)(void *arg, const struct km_pubkey *peer, const struct sockaddr *addr, bool ok);
};

void km_mesh_opts_default(struct km_mesh_opts *o);

struct km_mesh;
struct km_mesh_req;

/* Result of km_mesh_open: a stream the callee owns, or KM_ERR_UNREACHABLE (no working path:
 * every address failed, host key mismatch, authentication refused), KM_ERR_REFUSED (the peer
 * refused the stream), KM_ERR_CLOSED. Never synchronous. */
typedef void (*km_mesh_open_cb)(void *arg, int err, struct km_stream *s);

/* node must outlive the mesh. */
KM_MUST_CHECK int km_mesh_new(uv_loop_t *loop, struct km_ssh_node *node,
                              const struct km_mesh_opts *o, km_mesh_lookup_cb lookup,
                              void *lookup_arg, struct km_mesh **out);

/* Ask for a stream to host:port on peer. Returns 0 with a handle, or KM_ERR_NOT_FOUND (no
 * address known for peer) / -ENOMEM, in which case cb is never called. */
KM_MUST_CHECK int km_mesh_open(struct km_mesh *m, const struct km_pubkey *peer, const char *host,
                               uint16_t port, km_mesh_open_cb cb, void *arg,
                               struct km_mesh_req **req);

/* Abandon a request: cb will not be called. */
void km_mesh_cancel(struct km_mesh_req *req);

/* The punch hook: asked to coordinate a hole punch to peer (docs/NAT.md) on each background
 * upgrade round of a relayed connection. Replaces any previous hook; cb NULL unsets it. */
typedef void (*km_mesh_punch_cb)(void *arg, const struct km_pubkey *peer);
void km_mesh_set_punch(struct km_mesh *m, km_mesh_punch_cb cb, void *arg);

/* A ready client conn over a punched TCP connection to addr (the peer's host key checked):
 * it replaces a relayed conn to that peer (streams open there finish there) and the path
 * becomes `punched`. Otherwise (no relayed conn, a direct one already) c is closed. The mesh
 * owns c. */
void km_mesh_punched(struct km_mesh *m, struct km_ssh_conn *c, const struct sockaddr *addr);

/* The SSH node's on_conn_accepted hook forwards here: a peer that dialled us is reached over
 * its own session when we have none to it (one connection per pair of nodes), or when ours
 * is relayed and the new session is not (the relayed one retires). */
void km_mesh_conn_accepted(struct km_mesh *m, struct km_ssh_conn *c);

/* The SSH node's on_conn_closed hook must forward here. */
void km_mesh_conn_closed(struct km_mesh *m, struct km_ssh_conn *c, int err);

/* Per-peer state for status output. */
struct km_mesh_peer_info {
    struct km_pubkey key;
    const char *state; /* "connected", "dialing", "backoff", "idle" */
    const char *addr;  /* the address of the connection in use ("relay:<first 12 of the gateway's
                          ID>..." for a  relayed one), or "" */
    bool relayed;      /* the connection runs through a gateway */
    bool punched;      /* the connection is a hole punched through NAT (docs/NAT.md) */
    const char *cipher;
    unsigned streams;
    int last_err;
};
typedef void (*km_mesh_peer_cb)(void *arg, const struct km_mesh_peer_info *info);
void km_mesh_foreach(const struct km_mesh *m, km_mesh_peer_cb cb, void *arg);

/* Close every connection and free the mesh; waiting requests fail with KM_ERR_CLOSED.
 * Accepts NULL. */
void km_mesh_close(struct km_mesh *m);

#endif
