/* HTTP proxy parsers. The first byte picks the mode: 0 request head (then its framing and,
 * for CONNECT or absolute-form, the target), 1 response head (then its framing), 2 a chunked
 * body, 3 authority-form. */
#include <stdint.h>

#include "core/buf.h"
#include "proto/httpproxy.h"
#include "tests/fuzz/fuzz.h"

/* Keeps results alive without -Wunused-result. */
static volatile int sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    struct km_buf b;
    km_buf_init_view(&b, data + 1, size - 1);
    struct km_http_header hdrs[KM_HTTP_MAX_HEADERS];
    enum km_http_body kind;
    uint64_t len;
    char host[256];
    uint16_t port;
    switch (data[0] % 4) {
    case 0: {
        struct km_http_request q;
        if (km_http_parse_request(&b, &q, hdrs, KM_HTTP_MAX_HEADERS) == 0) {
            if (q.head_len > KM_HTTP_MAX_HEAD || q.n_headers > KM_HTTP_MAX_HEADERS) {
                __builtin_trap();
            }
            sink += km_http_request_body(&q, &kind, &len);
            struct km_http_view auth, path;
            if (km_http_split_absolute(q.target, &auth, &path) == 0) {
                sink += km_http_parse_authority(auth, 80, host, &port);
            } else {
                sink += km_http_parse_authority(q.target, 0, host, &port);
            }
        }
        break;
    }
    case 1: {
        struct km_http_response p;
        if (km_http_parse_response(&b, &p, hdrs, KM_HTTP_MAX_HEADERS) == 0) {
            sink += km_http_response_body(&p, false, &kind, &len);
            sink += km_http_response_body(&p, true, &kind, &len);
        }
        break;
    }
    case 2: {
        struct km_http_chunked c;
        km_http_chunked_init(&c);
        /* Feed in two pieces to exercise resumption. */
        size_t half = km_buf_len(&b) / 2;
        struct km_buf b1, b2;
        km_buf_init_view(&b1, data + 1, half);
        km_buf_init_view(&b2, data + 1 + half, size - 1 - half);
        int r = km_http_chunked_feed(&c, &b1);
        if (r == KM_ERR_INCOMPLETE) {
            sink += km_http_chunked_feed(&c, &b2);
        }
        break;
    }
    default: {
        struct km_http_view a = {(const char *)data + 1, size - 1};
        sink += km_http_parse_authority(a, 443, host, &port);
        break;
    }
    }
    return 0;
}
