/* The user-space TCP endpoint for the TUN device: lwIP terminates TCP connections that local
 * programs open to any address of the mesh prefix, and hands each one over as a km_stream.
 *
 * This is the only code that includes lwIP. Debian's liblwip accepts TCP only for its own
 * netif addresses, and the mesh has 2^112 of them, so segments skip lwIP's IP layer:
 * tcp_input() is called directly with lwIP's per-packet globals (ip_data) filled in the way
 * ip6_input() fills them (DESIGN.md section 7, the "direct" approach). lwIP then answers from
 * whatever address the segment was sent to. tests/unit/tun/test_tcpstack.c pins that
 * behaviour against the installed lwIP: a handshake, data both ways, FIN and RST to an
 * address lwIP never heard of.
 *
 * lwIP keeps global state and is not thread-safe: one stack per process, used from the
 * thread that runs its loop. Every lwIP callback only records what happened and schedules a
 * pass on the loop; stream callbacks run from that pass, never from inside lwIP, so nothing
 * a consumer does can free a pcb under lwIP's feet. */
#ifndef KM_TUN_TCPSTACK_H
#define KM_TUN_TCPSTACK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <uv.h>

#include "core/err.h"
#include "core/stream.h"
#include "tun/packet.h"

/* A connection as the local program sees it: from src:sport to dst:dport. */
struct km_tcp_flow_id {
    uint8_t src[16];
    uint8_t dst[16];
    uint16_t sport;
    uint16_t dport;
};

struct km_tcpstack_hooks {
    /* Write one IPv6 packet, given as iov[0..n), to the device. */
    void (*output)(void *arg, const struct iovec *iov, size_t n);
    /* lwIP completed the handshake of id. s is the connection's stream and belongs to the
     * callee from now on (closing it without a shutdown sends a RST). Runs from the stack's
     * pass on the loop. */
    void (*accepted)(void *arg, const struct km_tcp_flow_id *id, struct km_stream *s);
    void *arg;
};

struct km_tcpstack;

/* Create the process's stack; mtu is the device's (lwIP's MSS follows it). Returns 0,
 * -ENOMEM, or KM_ERR_UNSUPPORTED when a stack already exists in this process. */
KM_MUST_CHECK int km_tcpstack_new(uv_loop_t *loop, unsigned mtu, const struct km_tcpstack_hooks *h,
                                  struct km_tcpstack **out);

/* Hand a TCP segment (pk, parsed by km_pkt_parse with kind KM_PKT_TCP) to lwIP. A SYN first
 * gets a listener on its destination port. Returns 0 or -ENOMEM (the segment is dropped;
 * TCP retransmits). */
KM_MUST_CHECK int km_tcpstack_input(struct km_tcpstack *st, const struct km_pkt *pk);

struct km_tcpstack_stats {
    uint64_t streams;   /* connections handed over and not yet closed by their owner */
    uint64_t listeners; /* ports with a listener */
    uint64_t accepted;  /* handshakes completed, total */
    uint64_t resets;    /* connections ended by RST or lwIP error, total */
    uint64_t pkts_out;
};
void km_tcpstack_stats(const struct km_tcpstack *st, struct km_tcpstack_stats *out);

/* Abort every connection (their streams end with KM_ERR_CLOSED, still to be closed by their
 * owners) and free the stack. lwIP's own state (TIME-WAIT pcbs) stays with the process.
 * Accepts NULL. */
void km_tcpstack_free(struct km_tcpstack *st);

#endif
