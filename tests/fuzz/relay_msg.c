/* Fuzz target: the frames of a registration channel (proto/relay_msg.h), read as either end
 * reads them: all messages from the input until one is incomplete or bad. A message taken
 * must re-encode to a frame that parses to the same message. */
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
        uint8_t mem[128];
        struct km_buf w;
        km_buf_init_fixed(&w, mem, sizeof mem);
        struct km_relay_msg back;
        int r = -1;
        const struct sockaddr *sa = (const struct sockaddr *)&m.addr;
        switch (m.type) {
        case KM_RELAY_MSG_REFLEXIVE:
            r = km_relay_msg_put_reflexive(&w, sa);
            break;
        case KM_RELAY_MSG_LISTEN:
            r = km_relay_msg_put_listen(&w, m.port);
            break;
        case KM_RELAY_MSG_PUNCH_REQUEST:
            r = km_relay_msg_put_punch_request(&w, &m.key);
            break;
        case KM_RELAY_MSG_PUNCH:
            r = km_relay_msg_put_punch(&w, &m.key, sa, m.flags);
            break;
        default:
            abort(); /* the parser returned a type it does not know */
        }
        if (r != 0 || km_relay_msg_get(&w, &back) != 0 || memcmp(&back, &m, sizeof m) != 0) {
            abort();
        }
        n++;
    }
    return 0;
}
