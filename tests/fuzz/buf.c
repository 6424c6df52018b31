/* Drives km_buf's readers with arbitrary bytes. The first byte picks a sequence of
 * accessors so every reader meets every length; nothing may read out of bounds. */
#include <stdint.h>
#include <stdlib.h>

#include "core/buf.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct km_buf b;
    km_buf_init_view(&b, data, size);
    uint8_t op = 0;
    struct km_buf copy;
    km_buf_init(&copy, 4096);
    /* Each step consumes at least the op byte, so the loop is bounded by size. */
    while (km_buf_get_u8(&b, &op) == 0) {
        const uint8_t *p;
        size_t len;
        char *s;
        struct km_buf sub;
        int r;
        switch (op % 9) {
        case 0:
            r = km_buf_get_u16(&b, NULL);
            break;
        case 1:
            r = km_buf_get_u32(&b, NULL);
            break;
        case 2:
            r = km_buf_get_u64(&b, NULL);
            break;
        case 3:
            r = km_buf_get_string8_view(&b, &p, &len);
            if (r == 0) {
                r = km_buf_put_string8(&copy, p, len);
            }
            break;
        case 4:
            r = km_buf_get_string16_view(&b, &p, &len);
            if (r == 0) {
                r = km_buf_put_string16(&copy, p, len);
            }
            break;
        case 5:
            r = km_buf_get_string_view(&b, &p, &len);
            if (r == 0) {
                r = km_buf_put_string(&copy, p, len);
            }
            break;
        case 6:
            r = km_buf_get_cstring(&b, &s, &len);
            free(s);
            break;
        case 7:
            r = km_buf_get_stringb(&b, &sub);
            if (r == 0) {
                r = km_buf_put_stringb(&copy, &sub);
            }
            break;
        default:
            r = km_buf_skip(&b, op / 9u);
            break;
        }
        if (r == KM_ERR_TOO_LARGE) {
            km_buf_clear(&copy);
        }
    }
    int end = km_buf_get_end(&b); /* exercised; the result does not matter here */
    (void)end;
    km_buf_reset(&copy);
    return 0;
}
