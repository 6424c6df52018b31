#include "proto/relay_msg.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

/* REFLEXIVE body: family u8 (4 or 6), address (4 or 16 bytes), port u16 (non-zero). */
static int parse_reflexive(struct km_buf *b, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    uint8_t fam;
    uint16_t port;
    if (km_buf_get_u8(b, &fam) != 0) {
        return KM_ERR_INVALID;
    }
    if (fam == 4) {
        struct sockaddr_in *in = (struct sockaddr_in *)out;
        in->sin_family = AF_INET;
        if (km_buf_get_bytes(b, &in->sin_addr, 4) != 0 || km_buf_get_u16(b, &port) != 0) {
            return KM_ERR_INVALID;
        }
        in->sin_port = htons(port);
    } else if (fam == 6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
        in6->sin6_family = AF_INET6;
        if (km_buf_get_bytes(b, &in6->sin6_addr, 16) != 0 || km_buf_get_u16(b, &port) != 0) {
            return KM_ERR_INVALID;
        }
        in6->sin6_port = htons(port);
    } else {
        return KM_ERR_INVALID;
    }
    if (port == 0 || km_buf_get_end(b) != 0) {
        memset(out, 0, sizeof *out);
        return KM_ERR_INVALID;
    }
    return 0;
}

int km_relay_msg_get(struct km_buf *in, struct km_relay_msg *out)
{
    memset(out, 0, sizeof *out);
    for (;;) {
        uint16_t len;
        /* length u16 */
        if (km_buf_peek_u16(in, 0, &len) != 0) {
            return KM_ERR_INCOMPLETE;
        }
        if (len > KM_RELAY_MSG_MAX) {
            return KM_ERR_TOO_LARGE;
        }
        if (len == 0) {
            return KM_ERR_INVALID;
        }
        if (km_buf_len(in) - 2 < len) {
            return KM_ERR_INCOMPLETE;
        }
        const uint8_t *frame;
        if (km_buf_skip(in, 2) != 0 || km_buf_get_view(in, len, &frame) != 0) {
            return KM_ERR_INVALID; /* cannot happen: both lengths were checked */
        }
        struct km_buf f;
        km_buf_init_view(&f, frame, len);
        uint8_t type;
        if (km_buf_get_u8(&f, &type) != 0) {
            return KM_ERR_INVALID;
        }
        if (type == KM_RELAY_MSG_REFLEXIVE) {
            int r = parse_reflexive(&f, &out->addr);
            if (r != 0) {
                memset(out, 0, sizeof *out); /* nothing half-filled */
                return r;
            }
            out->type = type;
            return 0;
        }
        /* An unknown type: skipped, for later versions. */
    }
}

int km_relay_msg_put_reflexive(struct km_buf *w, const struct sockaddr *addr)
{
    int r;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        if ((r = km_buf_put_u16(w, 1 + 1 + 4 + 2)) != 0 ||
            (r = km_buf_put_u8(w, KM_RELAY_MSG_REFLEXIVE)) != 0 || (r = km_buf_put_u8(w, 4)) != 0 ||
            (r = km_buf_put_bytes(w, &in->sin_addr, 4)) != 0 ||
            (r = km_buf_put_u16(w, ntohs(in->sin_port))) != 0) {
            return r;
        }
        return 0;
    }
    if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
        if ((r = km_buf_put_u16(w, 1 + 1 + 16 + 2)) != 0 ||
            (r = km_buf_put_u8(w, KM_RELAY_MSG_REFLEXIVE)) != 0 || (r = km_buf_put_u8(w, 6)) != 0 ||
            (r = km_buf_put_bytes(w, &in6->sin6_addr, 16)) != 0 ||
            (r = km_buf_put_u16(w, ntohs(in6->sin6_port))) != 0) {
            return r;
        }
        return 0;
    }
    return KM_ERR_INVALID;
}
