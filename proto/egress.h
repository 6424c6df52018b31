/* What a local proxy front-end (SOCKS5, HTTP proxy, `keymesh connect`) asks of the node:
 * "open a byte stream to host:port for my client". The daemon supplies the implementation
 * (core/daemon/router.c), which sends mesh names and VIPs into the mesh and everything else
 * through the egress policy; front-ends only parse their protocol and relay. */
#ifndef KM_PROTO_EGRESS_H
#define KM_PROTO_EGRESS_H

#include <stdint.h>

#include "core/err.h"
#include "core/stream.h"

struct km_egress_req;

/* Completion: err 0 with target a connected stream the callee now owns; or a negative code
 * and target NULL. Never called synchronously from km_egress.open, and never after cancel.
 * Codes a front-end maps to its protocol's replies:
 *   KM_ERR_REFUSED      policy forbids it (egress refused, port not exposed)
 *   KM_ERR_NOT_FOUND    a name under the mesh suffix that is not a node ID or alias
 *   KM_ERR_UNREACHABLE  no working path to the peer, or it refused us (host key, auth)
 *   -ECONNREFUSED       the target port is closed
 *   -ETIMEDOUT          connecting timed out
 *   -EHOSTUNREACH, -ENETUNREACH, -EAI_... (as negative errno) for direct egress failures */
typedef void (*km_egress_done_cb)(void *arg, int err, struct km_stream *target);

struct km_egress {
    /* Begin opening host:port (host: a DNS name or an IPv4/IPv6 literal without brackets).
     * origin describes the client for logs and policy ("socks5 127.0.0.1:5123"). Returns 0
     * and a request handle in *req, or a negative code (then cb is never called). */
    int (*open)(struct km_egress *e, const char *host, uint16_t port, const char *origin,
                km_egress_done_cb cb, void *arg, struct km_egress_req **req);
    /* Abandon a request whose client went away; cb will not be called. */
    void (*cancel)(struct km_egress *e, struct km_egress_req *req);
    void *data; /* the implementation's */
};

#endif
