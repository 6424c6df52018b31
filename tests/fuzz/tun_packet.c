/* TUN packet classification (tun/packet.c), the first code to read a packet from the device,
 * and the replies built from what it parsed: whatever the bytes, parsing stays inside them,
 * and every reply built from a parsed packet is itself well formed with a valid checksum. */
#include <stdint.h>
#include <string.h>

#include "tests/fuzz/fuzz.h"
#include "tun/packet.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t self[16] = {0xfd, 0x6b, 0, 1, [15] = 1};
    const struct km_pkt_policy pol = {.prefix = 0xfd6b, .self_vip = self, .mtu = 1500};
    struct km_pkt pk;
    enum km_pkt_kind k = km_pkt_parse(data, size, &pol, &pk);
    if (k >= KM_PKT_DROP_FIRST) {
        return 0;
    }
    if (pk.len != size || pk.l4 != data + KM_PKT_IP6_HLEN || pk.l4_len + KM_PKT_IP6_HLEN != size) {
        __builtin_trap();
    }
    (void)km_pkt_l4_checksum_ok(&pk);
    static uint8_t out[KM_PKT_MAX];
    struct km_pkt r;
    size_t n = km_pkt_build_rst(&pk, out, sizeof out);
    /* A reply goes to the packet's source, which may be outside the prefix. */
    const struct km_pkt_policy back = {.prefix = (uint16_t)(pk.src[0] << 8 | pk.src[1]),
                                       .mtu = 65535};
    if (n > 0 && (km_pkt_parse(out, n, &back, &r) != KM_PKT_TCP || !km_pkt_l4_checksum_ok(&r))) {
        __builtin_trap();
    }
    n = km_pkt_build_echo_reply(&pk, out, sizeof out);
    if (n > 0 && km_pkt_checksum6(out + 8, out + 24, 58, out + 40, n - 40) != 0) {
        __builtin_trap();
    }
    n = km_pkt_build_unreach(&pk, KM_ICMP6_UNREACH_ADDR, out, sizeof out);
    if (n > KM_PKT_ICMP_ERR_MAX ||
        (n > 0 && km_pkt_checksum6(out + 8, out + 24, 58, out + 40, n - 40) != 0)) {
        __builtin_trap();
    }
    return 0;
}
