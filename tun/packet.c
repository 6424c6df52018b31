/* IPv6 packet classification and the node's own replies (packet.h). */
#include "tun/packet.h"

#include <string.h>

#include "core/buf.h"

#define NH_TCP 6u
#define NH_UDP 17u
#define NH_ICMP6 58u

#define ICMP6_UNREACH 1u
#define ICMP6_ECHO_REQUEST 128u
#define ICMP6_ECHO_REPLY 129u

#define REPLY_HOP_LIMIT 64u

static const char *const kind_names[KM_PKT_KIND_COUNT] = {
    [KM_PKT_TCP] = "tcp",           [KM_PKT_ECHO] = "echo",
    [KM_PKT_OTHER_L4] = "other-l4", [KM_PKT_TRUNCATED] = "truncated",
    [KM_PKT_NOT_IPV6] = "not-ipv6", [KM_PKT_OVERSIZE] = "oversize",
    [KM_PKT_TRAILING] = "trailing", [KM_PKT_EXT_HEADER] = "ext-header",
    [KM_PKT_NOT_MESH] = "not-mesh", [KM_PKT_BAD_SOURCE] = "bad-source",
    [KM_PKT_BAD_TCP] = "bad-tcp",   [KM_PKT_ICMP_OTHER] = "icmp-other",
};

const char *km_pkt_kind_name(enum km_pkt_kind k)
{
    if ((unsigned)k < KM_PKT_KIND_COUNT && kind_names[k] != NULL) {
        return kind_names[k];
    }
    return "unknown";
}

static bool in_prefix(const uint8_t a[16], uint16_t prefix)
{
    return ((unsigned)a[0] << 8 | a[1]) == prefix;
}

static bool is_unspecified(const uint8_t a[16])
{
    static const uint8_t zero[16];
    return memcmp(a, zero, 16) == 0;
}

static enum km_pkt_kind parse_tcp(struct km_buf *b, struct km_pkt *out)
{
    uint8_t off_byte = 0;
    if (km_buf_get_u16(b, &out->sport) != 0 || km_buf_get_u16(b, &out->dport) != 0 ||
        km_buf_get_u32(b, &out->seq) != 0 || km_buf_get_u32(b, &out->ack) != 0 ||
        km_buf_get_u8(b, &off_byte) != 0 || km_buf_get_u8(b, &out->flags) != 0) {
        return KM_PKT_TRUNCATED;
    }
    size_t hlen = (size_t)(off_byte >> 4) * 4u;
    if (hlen < KM_PKT_TCP_HLEN || hlen > out->l4_len) {
        return KM_PKT_BAD_TCP;
    }
    if (out->sport == 0 || out->dport == 0) {
        return KM_PKT_BAD_TCP;
    }
    out->data_len = out->l4_len - hlen;
    return KM_PKT_TCP;
}

static enum km_pkt_kind parse_icmp6(struct km_buf *b, struct km_pkt *out)
{
    uint8_t type = 0;
    uint8_t code = 0;
    if (km_buf_get_u8(b, &type) != 0 || km_buf_get_u8(b, &code) != 0 || km_buf_skip(b, 2) != 0) {
        return KM_PKT_TRUNCATED;
    }
    if (type != ICMP6_ECHO_REQUEST || code != 0) {
        return KM_PKT_ICMP_OTHER;
    }
    if (km_buf_get_u16(b, &out->echo_id) != 0 || km_buf_get_u16(b, &out->echo_seq) != 0) {
        return KM_PKT_TRUNCATED;
    }
    return KM_PKT_ECHO;
}

static enum km_pkt_kind classify(const uint8_t *p, size_t len, const struct km_pkt_policy *pol,
                                 struct km_pkt *out)
{
    struct km_buf b;
    km_buf_init_view(&b, p, len);
    uint8_t vtc = 0;
    uint16_t plen = 0;
    if (km_buf_get_u8(&b, &vtc) != 0) {
        return KM_PKT_TRUNCATED;
    }
    if ((vtc >> 4) != 6) {
        return KM_PKT_NOT_IPV6;
    }
    if (len > pol->mtu) {
        return KM_PKT_OVERSIZE;
    }
    if (km_buf_skip(&b, 3) != 0 || km_buf_get_u16(&b, &plen) != 0 ||
        km_buf_get_u8(&b, &out->next_header) != 0 || km_buf_skip(&b, 1) != 0 ||
        km_buf_get_view(&b, 16, &out->src) != 0 || km_buf_get_view(&b, 16, &out->dst) != 0) {
        return KM_PKT_TRUNCATED;
    }
    if (km_buf_len(&b) < plen) {
        return KM_PKT_TRUNCATED;
    }
    if (km_buf_len(&b) > plen) {
        return KM_PKT_TRAILING; /* also a jumbogram's zero payload length */
    }
    out->len = KM_PKT_IP6_HLEN + plen;
    out->l4 = p + KM_PKT_IP6_HLEN;
    out->l4_len = plen;
    if (!in_prefix(out->dst, pol->prefix)) {
        return KM_PKT_NOT_MESH;
    }
    if (out->src[0] == 0xff || is_unspecified(out->src) ||
        (pol->self_vip != NULL && in_prefix(out->src, pol->prefix) &&
         memcmp(out->src, pol->self_vip, 16) != 0)) {
        return KM_PKT_BAD_SOURCE;
    }
    switch (out->next_header) {
    case NH_TCP:
        return parse_tcp(&b, out);
    case NH_ICMP6:
        return parse_icmp6(&b, out);
    case NH_UDP:
        return KM_PKT_OTHER_L4;
    case 0:   /* hop-by-hop */
    case 43:  /* routing */
    case 44:  /* fragment */
    case 50:  /* ESP */
    case 51:  /* AH */
    case 59:  /* no next header */
    case 60:  /* destination options */
    case 135: /* mobility */
    case 139: /* HIP */
    case 140: /* shim6 */
        return KM_PKT_EXT_HEADER;
    default:
        return KM_PKT_OTHER_L4;
    }
}

enum km_pkt_kind km_pkt_parse(const uint8_t *p, size_t len, const struct km_pkt_policy *pol,
                              struct km_pkt *out)
{
    memset(out, 0, sizeof *out);
    out->kind = classify(p, len, pol, out);
    return out->kind;
}

/* ---- checksums ---- */

static uint32_t sum_bytes(uint32_t acc, const uint8_t *p, size_t len)
{
    size_t i = 0;
    for (; i + 1 < len; i += 2) {
        acc += (uint32_t)p[i] << 8 | p[i + 1];
    }
    if (i < len) {
        acc += (uint32_t)p[i] << 8;
    }
    /* Folding here keeps acc far from overflow for packets of any length. */
    while (acc >> 16) {
        acc = (acc & 0xffffu) + (acc >> 16);
    }
    return acc;
}

uint16_t km_pkt_checksum6(const uint8_t src[16], const uint8_t dst[16], uint8_t next_header,
                          const uint8_t *l4, size_t l4_len)
{
    uint32_t acc = 0;
    acc = sum_bytes(acc, src, 16);
    acc = sum_bytes(acc, dst, 16);
    acc += (uint32_t)(l4_len >> 16) + (uint32_t)(l4_len & 0xffffu);
    acc += next_header;
    acc = sum_bytes(acc, l4, l4_len);
    while (acc >> 16) {
        acc = (acc & 0xffffu) + (acc >> 16);
    }
    return (uint16_t)~acc;
}

bool km_pkt_l4_checksum_ok(const struct km_pkt *pk)
{
    if (pk->l4 == NULL || (pk->kind != KM_PKT_TCP && pk->kind != KM_PKT_ECHO)) {
        return false;
    }
    /* Summing a packet with its checksum in place gives zero (as ~0xffff). */
    return km_pkt_checksum6(pk->src, pk->dst, pk->next_header, pk->l4, pk->l4_len) == 0;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

/* An IPv6 header from src to dst carrying plen bytes of next_header. */
static void put_ip6(uint8_t *out, const uint8_t src[16], const uint8_t dst[16], size_t plen,
                    uint8_t next_header)
{
    memset(out, 0, KM_PKT_IP6_HLEN);
    out[0] = 0x60;
    put16(out + 4, (uint16_t)plen);
    out[6] = next_header;
    out[7] = REPLY_HOP_LIMIT;
    memcpy(out + 8, src, 16);
    memcpy(out + 24, dst, 16);
}

static void fill_checksum(uint8_t *pkt, size_t len, size_t csum_off)
{
    uint8_t *l4 = pkt + KM_PKT_IP6_HLEN;
    put16(l4 + csum_off, 0);
    uint16_t c = km_pkt_checksum6(pkt + 8, pkt + 24, pkt[6], l4, len - KM_PKT_IP6_HLEN);
    put16(l4 + csum_off, c);
}

size_t km_pkt_build_rst(const struct km_pkt *in, uint8_t *out, size_t cap)
{
    const size_t len = KM_PKT_IP6_HLEN + KM_PKT_TCP_HLEN;
    if (in->kind != KM_PKT_TCP || (in->flags & KM_TCP_RST) != 0 || cap < len) {
        return 0;
    }
    put_ip6(out, in->dst, in->src, KM_PKT_TCP_HLEN, NH_TCP);
    uint8_t *t = out + KM_PKT_IP6_HLEN;
    memset(t, 0, KM_PKT_TCP_HLEN);
    put16(t, in->dport);
    put16(t + 2, in->sport);
    if (in->flags & KM_TCP_ACK) {
        put32(t + 4, in->ack);
        t[13] = KM_TCP_RST;
    } else {
        uint32_t n = (uint32_t)in->data_len;
        n += (in->flags & KM_TCP_SYN) ? 1u : 0u;
        n += (in->flags & KM_TCP_FIN) ? 1u : 0u;
        put32(t + 8, in->seq + n);
        t[13] = KM_TCP_RST | KM_TCP_ACK;
    }
    t[12] = (uint8_t)((KM_PKT_TCP_HLEN / 4u) << 4);
    fill_checksum(out, len, 16);
    return len;
}

size_t km_pkt_build_echo_reply(const struct km_pkt *in, uint8_t *out, size_t cap)
{
    if (in->kind != KM_PKT_ECHO || cap < in->len) {
        return 0;
    }
    put_ip6(out, in->dst, in->src, in->l4_len, NH_ICMP6);
    memcpy(out + KM_PKT_IP6_HLEN, in->l4, in->l4_len);
    out[KM_PKT_IP6_HLEN] = ICMP6_ECHO_REPLY;
    fill_checksum(out, in->len, 2);
    return in->len;
}

size_t km_pkt_build_unreach(const struct km_pkt *in, uint8_t code, uint8_t *out, size_t cap)
{
    if (in->l4 == NULL || in->kind >= KM_PKT_DROP_FIRST) {
        return 0;
    }
    if (in->next_header == NH_ICMP6 && in->kind != KM_PKT_ECHO) {
        return 0; /* never an error about an error (RFC 4443 section 2.4 e) */
    }
    size_t quote = in->len;
    if (quote > KM_PKT_ICMP_ERR_MAX - KM_PKT_IP6_HLEN - 8u) {
        quote = KM_PKT_ICMP_ERR_MAX - KM_PKT_IP6_HLEN - 8u;
    }
    size_t len = KM_PKT_IP6_HLEN + 8u + quote;
    if (cap < len) {
        return 0;
    }
    const uint8_t *orig = in->l4 - KM_PKT_IP6_HLEN;
    uint8_t src[16];
    uint8_t dst[16];
    memcpy(src, in->dst, 16); /* copies: out may overlap in */
    memcpy(dst, in->src, 16);
    memmove(out + KM_PKT_IP6_HLEN + 8u, orig, quote);
    put_ip6(out, src, dst, 8u + quote, NH_ICMP6);
    uint8_t *icmp = out + KM_PKT_IP6_HLEN;
    memset(icmp, 0, 8);
    icmp[0] = ICMP6_UNREACH;
    icmp[1] = code;
    fill_checksum(out, len, 2);
    return len;
}
