/* Fuzz target: the parser of SSDP answers (discovery/ssdp.h), which any host on the LAN can
 * send. The first four bytes are the sender's IPv4 address, the rest the datagram. An
 * accepted answer must give a NUL-terminated "http://" URL of visible ASCII that fits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "discovery/ssdp.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) {
        return 0;
    }
    uint32_t from;
    memcpy(&from, data, 4);
    size_t len = size - 4;
    uint8_t *p = malloc(len + 1); /* exact size, so ASan sees any over-read */
    if (p == NULL) {
        return 0;
    }
    memcpy(p, data + 4, len);
    char url[64];
    int r = km_ssdp_parse_response(p, len, from, url, sizeof url);
    if (r == 0) {
        size_t n = strnlen(url, sizeof url);
        if (n == sizeof url || strncasecmp(url, "http://", 7) != 0) {
            abort();
        }
        for (size_t i = 0; i < n; i++) {
            if (url[i] < 0x21 || url[i] > 0x7e) {
                abort();
            }
        }
    } else if (r != KM_ERR_INVALID && r != KM_ERR_TOO_LARGE) {
        abort();
    }
    free(p);
    return 0;
}
