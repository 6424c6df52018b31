/* Port mapping: ask the router in front of this node to forward a public TCP port to the
 * mesh port, with UPnP-IGD (libminiupnpc) or NAT-PMP (libnatpmp), renew it before it
 * expires and delete it on close (docs/NAT.md). The IGD is found by an SSDP search on the
 * loop (discovery/ssdp.h), so a close never waits for it; the libraries' other calls block, so
 * each runs on libuv's thread pool and its result comes back on the loop. One request at a
 * time per object.
 * The library layer does not log: the owner gets every change of state through a callback
 * and decides what to print. */
#ifndef KM_DISCOVERY_PORTMAP_H
#define KM_DISCOVERY_PORTMAP_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/err.h"

/* Which protocols to try, in this order: UPnP-IGD, then NAT-PMP. */
enum km_portmap_mode {
    KM_PORTMAP_OFF = 0,
    KM_PORTMAP_ANY,    /* UPnP-IGD, then NAT-PMP */
    KM_PORTMAP_UPNP,   /* UPnP-IGD only */
    KM_PORTMAP_NATPMP, /* NAT-PMP only */
};

/* "off", "on", "upnp", "natpmp"; "?" otherwise. */
const char *km_portmap_mode_name(enum km_portmap_mode m);

/* How the current mapping was made. */
enum km_portmap_method {
    KM_PORTMAP_NONE = 0,
    KM_PORTMAP_BY_UPNP,
    KM_PORTMAP_BY_NATPMP,
};

/* "none", "upnp", "natpmp". */
const char *km_portmap_method_name(enum km_portmap_method m);

/* Requested leases are clamped to this range; a router's answer too. */
#define KM_PORTMAP_LEASE_MIN_S 120u
#define KM_PORTMAP_LEASE_MAX_S 86400u
/* A failed attempt is retried after 30 s, doubling up to 10 minutes (plus jitter). */
#define KM_PORTMAP_RETRY_MIN_MS 30000u
#define KM_PORTMAP_RETRY_MAX_MS 600000u

struct km_portmap_opts {
    enum km_portmap_mode mode;
    uint16_t port;         /* the local TCP port to map (the mesh port), non-zero */
    uint32_t lease_s;      /* requested lifetime; clamped to the range above */
    uint32_t discover_ms;  /* how long UPnP discovery (SSDP) waits for routers; default 1500 */
    uint32_t natpmp_ms;    /* how long one NAT-PMP exchange may take; default 2000 */
    uint32_t retry_min_ms; /* first retry after a failure; 0 = KM_PORTMAP_RETRY_MIN_MS */
};

/* Fill o with the defaults: mode ANY, lease 3600 s, discover 1500 ms, NAT-PMP 2000 ms. */
void km_portmap_opts_default(struct km_portmap_opts *o);

/* The current state, as given to the callback and by km_portmap_get. */
struct km_portmap_state {
    bool mapped;                   /* a mapping is held now */
    enum km_portmap_method method; /* how (NONE when not mapped) */
    struct sockaddr_in external;   /* the router's public address and the mapped port */
    uint32_t lease_s;              /* lifetime the router granted (0 never happens: clamped) */
    uint64_t renew_at_ms;          /* loop time of the next renewal or retry */
    uint64_t attempts;             /* mapping or renewal requests made */
    uint64_t failures;             /* of which failed */
    const char *error;             /* the last failure ("" when the last attempt worked) */
};

struct km_portmap;

/* Called on the loop after every attempt whose outcome differs from the previous one's
 * (mapped or not, a different address or port, a different error text), so the owner can
 * re-announce its paths and log a failure once rather than at every retry. */
typedef void (*km_portmap_cb)(void *arg, const struct km_portmap_state *st);

/* Start mapping o->port now. Returns 0 and *out, KM_ERR_INVALID for mode OFF or port 0,
 * -ENOMEM, or a libuv error. */
KM_MUST_CHECK int km_portmap_new(uv_loop_t *loop, const struct km_portmap_opts *o, km_portmap_cb cb,
                                 void *arg, struct km_portmap **out);

/* The current state; st->error is valid until the next loop iteration. */
void km_portmap_get(const struct km_portmap *pm, struct km_portmap_state *st);

/* Stop: no more callbacks. A held mapping is deleted at the router (on the thread pool,
 * bounded by the protocol timeouts above), then the object frees itself; the loop must run
 * for that. Accepts NULL. */
void km_portmap_close(struct km_portmap *pm);

/* ---- pure checks of what a router answered (exposed for tests and fuzzing) ---- */

/* Check a UPnP answer: ext_ip is the text GetExternalIPAddress returned (at most 15
 * characters, dotted quad), ext_port the port asked for and granted. Fills out. Returns 0, or
 * KM_ERR_INVALID when the text is not an IPv4 address or is an address nobody could connect
 * to (0.0.0.0/8, loopback, link-local, multicast, broadcast), or the port is 0. */
KM_MUST_CHECK int km_portmap_check_upnp(const char *ext_ip, size_t len, uint16_t ext_port,
                                        struct sockaddr_in *out);

/* Check a NAT-PMP answer (RFC 6886): the public address (network order), the mapped public
 * port and the granted lifetime. Fills out and *lease_s (clamped to the range above).
 * Returns 0 or KM_ERR_INVALID as for UPnP, also for a lifetime of 0 (a deletion). */
KM_MUST_CHECK int km_portmap_check_natpmp(uint32_t public_addr, uint16_t public_port,
                                          uint32_t lifetime_s, struct sockaddr_in *out,
                                          uint32_t *lease_s);

/* When to renew a lease granted for lease_s seconds: at half of it, in ms. */
uint64_t km_portmap_renew_ms(uint32_t lease_s);

/* The delay before retry number n (0-based) after failures: retry_min_ms doubled n times,
 * capped at KM_PORTMAP_RETRY_MAX_MS, plus up to a quarter of it from jitter (0..65535 scaled). */
uint64_t km_portmap_retry_ms(uint32_t retry_min_ms, unsigned n, uint16_t jitter);

#endif
