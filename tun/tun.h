/* TUN egress (DESIGN.md section 7): local programs reach peers by VIP through a TUN device.
 *
 * Every packet read from the device is classified (tun/packet.h). TCP to a mesh address is
 * terminated by lwIP (tun/tcpstack.h), but a connection is admitted first: the SYN is held
 * while the node opens the mesh stream it will be relayed to (through the egress, as SOCKS5
 * does), and only then does lwIP see it. So a refused port answers RST, an unknown or
 * unreachable node answers ICMPv6 address unreachable, and nothing is accepted that cannot
 * be carried. ICMPv6 echo to a known node is answered once the peer itself answered a round
 * trip over the mesh, so ping shows the path's real latency; other protocols get port
 * unreachable.
 * Everything else is dropped and counted by reason.
 *
 * Limits: at most max_flows connections exist at once (held, handshaking or relayed); a SYN
 * beyond that is answered with RST and counted, and connections already relayed go on.
 * ICMPv6 errors are rate-limited (RFC 4443 section 2.4 f). */
#ifndef KM_TUN_TUN_H
#define KM_TUN_TUN_H

#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/err.h"
#include "proto/egress.h"
#include "tun/packet.h"

struct km_tun_opts {
    char name[IFNAMSIZ]; /* device name; "" = the kernel's choice */
    unsigned mtu;        /* 1280..65535 */
    unsigned max_flows;
    uint16_t prefix;           /* the mesh prefix (first 16 bits) */
    uint8_t vip[16];           /* this node's VIP */
    unsigned admit_timeout_ms; /* from SYN to a completed handshake */
};

void km_tun_opts_default(struct km_tun_opts *o);

struct km_tun_hooks {
    /* Opens the streams that carry connections; the target is the VIP literal and port. */
    struct km_egress *egress;
    /* Does a known node key hash to vip? */
    bool (*known)(void *arg, const uint8_t vip[16]);
    /* Start a round trip to the node at vip (an echo request is answered when the peer
     * answered): done(done_arg, err) once, never synchronously, err 0 when it answered.
     * Returns 0 with *handle, or an error (no such node: then done is never called). */
    int (*echo)(void *arg, const uint8_t vip[16], void (*done)(void *done_arg, int err),
                void *done_arg, void **handle);
    void (*echo_cancel)(void *handle);
    void *arg;
};

struct km_tun;

/* Create the device (tun/dev.h) and start. Needs CAP_NET_ADMIN: -EPERM without it. *step
 * names what failed (for the error message). o and hooks are copied; egress must outlive
 * the tun. */
KM_MUST_CHECK int km_tun_new(uv_loop_t *loop, const struct km_tun_opts *o,
                             const struct km_tun_hooks *h, struct km_tun **out, const char **step);

/* The same on a packet descriptor the caller opened (a TUN fd, or one end of a
 * SOCK_SEQPACKET socketpair in tests). The tun owns fd from now on, even on failure. */
KM_MUST_CHECK int km_tun_new_fd(uv_loop_t *loop, int fd, const struct km_tun_opts *o,
                                const struct km_tun_hooks *h, struct km_tun **out);

/* The device name. */
const char *km_tun_ifname(const struct km_tun *t);

struct km_tun_stats {
    uint64_t pkts_in, pkts_out, bytes_in, bytes_out;
    uint64_t drops[KM_PKT_KIND_COUNT]; /* by classification; TCP/ECHO/OTHER_L4 stay 0 */
    uint64_t write_errors;             /* packets the device refused */
    uint64_t nomem;                    /* packets dropped for want of memory */
    uint64_t flows_opened;             /* connections admitted into lwIP */
    uint64_t flows_refused;            /* RST: port closed or refused by policy */
    uint64_t flows_unreach;            /* ICMPv6 unreachable: unknown or unreachable node */
    uint64_t flows_limit;              /* RST: max_flows reached */
    uint64_t flows_timeout;            /* admitted, handshake never completed */
    uint64_t echo_replies;
    uint64_t echo_dropped; /* too many echoes in flight, or the round trip failed */
    uint64_t icmp_ratelimited;
    unsigned flows_pending; /* waiting for their mesh stream or handshake */
    unsigned flows_live;    /* relayed now */
};
void km_tun_stats(const struct km_tun *t, struct km_tun_stats *out);

/* Stop reading, abort held connections, close the device (the kernel removes its address
 * and route) and free. Relayed connections end with KM_ERR_CLOSED. Accepts NULL. */
void km_tun_close(struct km_tun *t);

#endif
