/* Building IPv6 test packets for the tun unit tests (header-only, test code). */
#ifndef KM_TEST_TUN_PKTGEN_H
#define KM_TEST_TUN_PKTGEN_H

#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tun/packet.h"

struct pg_tcp {
    const char *src, *dst;
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t flags;
    uint8_t off_words; /* 0 = 5, or 6 with mss */
    uint16_t mss;      /* non-zero: an MSS option */
    const void *data;
    size_t len;
};

static inline void pg_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void pg_put32(uint8_t *p, uint32_t v)
{
    pg_put16(p, (uint16_t)(v >> 16));
    pg_put16(p + 2, (uint16_t)v);
}

static inline uint32_t pg_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* An IPv6 header from src to dst with plen payload bytes of next header nh. */
static inline void pg_ip6(uint8_t *out, const char *src, const char *dst, size_t plen, uint8_t nh)
{
    memset(out, 0, KM_PKT_IP6_HLEN);
    out[0] = 0x60;
    pg_put16(out + 4, (uint16_t)plen);
    out[6] = nh;
    out[7] = 64;
    (void)inet_pton(AF_INET6, src, out + 8);
    (void)inet_pton(AF_INET6, dst, out + 24);
}

/* A TCP segment with a correct checksum; returns its length. */
static inline size_t pg_tcp(uint8_t *out, const struct pg_tcp *t)
{
    uint8_t words = t->off_words ? t->off_words : t->mss ? 6 : 5;
    size_t hl = (size_t)words * 4u;
    size_t tl = (hl < 20 ? 20 : hl) + t->len;
    pg_ip6(out, t->src, t->dst, tl, 6);
    uint8_t *h = out + KM_PKT_IP6_HLEN;
    memset(h, 0, tl);
    pg_put16(h, t->sport);
    pg_put16(h + 2, t->dport);
    pg_put32(h + 4, t->seq);
    pg_put32(h + 8, t->ack);
    h[12] = (uint8_t)(words << 4);
    if (t->mss != 0 && hl >= 24) {
        h[20] = 2; /* MSS option */
        h[21] = 4;
        pg_put16(h + 22, t->mss);
    }
    h[13] = t->flags;
    pg_put16(h + 14, 65535);
    if (t->len > 0) {
        memcpy(h + (hl < 20 ? 20 : hl), t->data, t->len);
    }
    pg_put16(h + 16, km_pkt_checksum6(out + 8, out + 24, 6, h, tl));
    return KM_PKT_IP6_HLEN + tl;
}

/* An ICMPv6 message (type, code, 4 bytes of header rest, body) with a correct checksum. */
static inline size_t pg_icmp(uint8_t *out, const char *src, const char *dst, uint8_t type,
                             uint8_t code, uint32_t rest, const void *body, size_t len)
{
    size_t tl = 8 + len;
    pg_ip6(out, src, dst, tl, 58);
    uint8_t *h = out + KM_PKT_IP6_HLEN;
    h[0] = type;
    h[1] = code;
    h[2] = h[3] = 0;
    pg_put32(h + 4, rest);
    if (len > 0) {
        memcpy(h + 8, body, len);
    }
    pg_put16(h + 2, km_pkt_checksum6(out + 8, out + 24, 58, h, tl));
    return KM_PKT_IP6_HLEN + tl;
}

#endif
