/* SOCKS5 parsers. The first byte picks the message: 0 greeting, 1 RFC 1929 auth, 2 request,
 * 3 a whole handshake (greeting then request on one buffer, as a pipelining client sends). */
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "proto/socks5.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    struct km_buf b;
    km_buf_init_view(&b, data + 1, size - 1);
    size_t before = km_buf_len(&b);
    int r = 0;
    switch (data[0] % 4) {
    case 0: {
        struct km_socks5_greeting g;
        r = km_socks5_parse_greeting(&b, &g);
        break;
    }
    case 1: {
        struct km_socks5_auth a;
        r = km_socks5_parse_auth(&b, &a);
        break;
    }
    case 2: {
        struct km_socks5_request q;
        r = km_socks5_parse_request(&b, &q);
        if (r == 0 && (q.port == 0 || strlen(q.host) == 0)) {
            __builtin_trap();
        }
        break;
    }
    default: {
        struct km_socks5_greeting g;
        struct km_socks5_request q;
        if ((r = km_socks5_parse_greeting(&b, &g)) == 0) {
            r = km_socks5_parse_request(&b, &q);
        }
        break;
    }
    }
    /* Incomplete input consumes nothing from a fresh buffer. */
    if (r == KM_ERR_INCOMPLETE && data[0] % 4 != 3 && km_buf_len(&b) != before) {
        __builtin_trap();
    }
    return 0;
}
