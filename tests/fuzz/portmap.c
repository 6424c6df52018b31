/* Fuzz target: the checks of what a UPnP-IGD or NAT-PMP router answered (discovery/portmap.h).
 * The first byte chooses the check; for UPnP the next two bytes are the port and the rest the
 * address text, for NAT-PMP the next ten bytes are the address, port and lifetime. Accepted
 * input must give a usable IPv4 address and a non-zero port. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/portmap.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) {
        return 0;
    }
    struct sockaddr_in out;
    if (data[0] % 2 == 0) {
        uint16_t port = (uint16_t)(data[1] << 8 | data[2]);
        size_t len = size - 3;
        char *s = malloc(len + 1); /* exact size, so ASan sees any over-read */
        if (s == NULL) {
            return 0;
        }
        memcpy(s, data + 3, len);
        s[len] = '\0';
        if (km_portmap_check_upnp(s, len, port, &out) == 0 &&
            (out.sin_family != AF_INET || out.sin_port == 0 || out.sin_addr.s_addr == 0)) {
            abort();
        }
        free(s);
        return 0;
    }
    if (size < 11) {
        return 0;
    }
    uint32_t addr;
    memcpy(&addr, data + 1, 4);
    uint16_t port = (uint16_t)(data[5] << 8 | data[6]);
    uint32_t life =
        (uint32_t)data[7] << 24 | (uint32_t)data[8] << 16 | (uint32_t)data[9] << 8 | data[10];
    uint32_t lease;
    if (km_portmap_check_natpmp(addr, port, life, &out, &lease) == 0 &&
        (out.sin_port == 0 || lease < KM_PORTMAP_LEASE_MIN_S || lease > KM_PORTMAP_LEASE_MAX_S)) {
        abort();
    }
    return 0;
}
