/* Fuzz target: the frames a gateway sends down a registration channel (proto/relay_msg.h),
 * read as a node reads them: all messages from the input until one is incomplete or bad. A
 * message taken must re-encode to a frame that parses to the same address. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "proto/relay_msg.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct km_buf b;
    km_buf_init_view(&b, data, size);
    struct km_relay_msg m;
    int n = 0;
    while (n < 1000 && km_relay_msg_get(&b, &m) == 0) {
        uint8_t mem[64];
        struct km_buf w;
        km_buf_init_fixed(&w, mem, sizeof mem);
        struct km_relay_msg back;
        if (km_relay_msg_put_reflexive(&w, (const struct sockaddr *)&m.addr) != 0 ||
            km_relay_msg_get(&w, &back) != 0 || memcmp(&back.addr, &m.addr, sizeof m.addr) != 0) {
            abort();
        }
        n++;
    }
    return 0;
}
