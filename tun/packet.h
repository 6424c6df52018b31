/* IPv6 packets as they come off the TUN device: classify, and build the few replies the node
 * writes back itself (TCP RST, ICMPv6 echo reply and destination unreachable).
 *
 * Everything here is a pure function of its input bytes: no state, no allocation, no lwIP.
 * km_pkt_parse is the only code that reads raw TUN bytes before lwIP does, so it checks every
 * length against the buffer and the IPv6 payload length, and has a fuzz target
 * (tests/fuzz/tun_packet.c). */
#ifndef KM_TUN_PACKET_H
#define KM_TUN_PACKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KM_PKT_IP6_HLEN 40u
#define KM_PKT_TCP_HLEN 20u
/* The largest packet the node accepts from or writes to the device. */
#define KM_PKT_MAX 65535u
/* ICMPv6 errors quote as much of the offending packet as fits the IPv6 minimum MTU. */
#define KM_PKT_ICMP_ERR_MAX 1280u

#define KM_TCP_FIN 0x01u
#define KM_TCP_SYN 0x02u
#define KM_TCP_RST 0x04u
#define KM_TCP_PSH 0x08u
#define KM_TCP_ACK 0x10u

/* What a packet is. Everything from KM_PKT_DROP_FIRST on is dropped, and counted under its
 * reason (km_pkt_kind_name). */
enum km_pkt_kind {
    KM_PKT_TCP,        /* a TCP segment to a mesh address */
    KM_PKT_ECHO,       /* an ICMPv6 echo request to a mesh address */
    KM_PKT_OTHER_L4,   /* UDP or another protocol to a mesh address: answered unreachable */
    KM_PKT_DROP_FIRST, /* not a kind: the first drop reason */
    KM_PKT_TRUNCATED = KM_PKT_DROP_FIRST, /* shorter than its headers or payload length */
    KM_PKT_NOT_IPV6,                      /* version field is not 6 (IPv4 is not routed) */
    KM_PKT_OVERSIZE,                      /* longer than the device MTU */
    KM_PKT_TRAILING,                      /* bytes after the IPv6 payload length */
    KM_PKT_EXT_HEADER,                    /* extension headers, fragments among them */
    KM_PKT_NOT_MESH,                      /* destination outside the mesh prefix */
    KM_PKT_BAD_SOURCE,                    /* source multicast, unspecified or in the prefix
                                             but not this node's VIP */
    KM_PKT_BAD_TCP,                       /* TCP data offset or port 0 */
    KM_PKT_ICMP_OTHER,                    /* ICMPv6 other than echo request */
    KM_PKT_KIND_COUNT
};

/* "truncated", "not-ipv6", ... for counters and logs. */
const char *km_pkt_kind_name(enum km_pkt_kind k);

/* A parsed packet. The pointers point into the caller's buffer. */
struct km_pkt {
    enum km_pkt_kind kind;
    const uint8_t *src; /* 16 bytes */
    const uint8_t *dst; /* 16 bytes */
    uint8_t next_header;
    size_t len;        /* IPv6 header + payload */
    const uint8_t *l4; /* the transport header */
    size_t l4_len;     /* transport header + data */
    /* TCP only */
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t flags;
    size_t data_len; /* TCP payload bytes */
    /* ICMPv6 echo only */
    uint16_t echo_id, echo_seq;
};

/* What the node accepts: destinations in prefix::/16, and (when self_vip is not NULL)
 * sources that are either outside the prefix or exactly self_vip; nothing longer than mtu. */
struct km_pkt_policy {
    uint16_t prefix;
    const uint8_t *self_vip; /* 16 bytes, or NULL */
    size_t mtu;
};

/* Classify len bytes. Always fills out->kind; the other fields only as far as they were read.
 * Returns out->kind. */
enum km_pkt_kind km_pkt_parse(const uint8_t *p, size_t len, const struct km_pkt_policy *pol,
                              struct km_pkt *out);

/* True when the transport checksum of a parsed TCP or ICMPv6 packet is right. */
bool km_pkt_l4_checksum_ok(const struct km_pkt *pk);

/* Build a RST answering TCP segment in (RFC 9293 section 3.10.7.1: for a segment with ACK,
 * seq = its ack; else seq 0 and ack = its seq + data length, SYN and FIN counting one).
 * out needs KM_PKT_IP6_HLEN + KM_PKT_TCP_HLEN bytes. Returns the length, or 0 when in is
 * itself a RST (never answered). */
size_t km_pkt_build_rst(const struct km_pkt *in, uint8_t *out, size_t cap);

/* Build the echo reply to echo request in, from in's destination. Returns the length (in's
 * length), or 0 when cap is too small. */
size_t km_pkt_build_echo_reply(const struct km_pkt *in, uint8_t *out, size_t cap);

/* ICMPv6 destination unreachable codes (RFC 4443 section 3.1). */
#define KM_ICMP6_UNREACH_NOROUTE 0u
#define KM_ICMP6_UNREACH_ADMIN 1u
#define KM_ICMP6_UNREACH_ADDR 3u
#define KM_ICMP6_UNREACH_PORT 4u

/* Build a destination unreachable error about in, sent from in's destination and quoting as
 * much of in as fits KM_PKT_ICMP_ERR_MAX. Returns the length, or 0 when cap is too small
 * or in is itself an ICMPv6 error (never answered). */
size_t km_pkt_build_unreach(const struct km_pkt *in, uint8_t code, uint8_t *out, size_t cap);

/* The Internet checksum of an IPv6 upper-layer packet (RFC 8200 section 8.1). */
uint16_t km_pkt_checksum6(const uint8_t src[16], const uint8_t dst[16], uint8_t next_header,
                          const uint8_t *l4, size_t l4_len);

#endif
