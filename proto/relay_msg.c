#include "proto/relay_msg.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

/* An address: family u8 (4 or 6), address (4 or 16 bytes), port u16 (non-zero). */
static int get_addr(struct km_buf *b, struct sockaddr_storage *out)
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
    return port == 0 ? KM_ERR_INVALID : 0;
}

static int put_addr(struct km_buf *w, const struct sockaddr *addr)
{
    int r;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        if ((r = km_buf_put_u8(w, 4)) != 0 || (r = km_buf_put_bytes(w, &in->sin_addr, 4)) != 0 ||
            (r = km_buf_put_u16(w, ntohs(in->sin_port))) != 0) {
            return r;
        }
        return 0;
    }
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)addr;
    if ((r = km_buf_put_u8(w, 6)) != 0 || (r = km_buf_put_bytes(w, &in6->sin6_addr, 16)) != 0 ||
        (r = km_buf_put_u16(w, ntohs(in6->sin6_port))) != 0) {
        return r;
    }
    return 0;
}

/* The body length of addr, or 0 when it cannot be sent (family, port 0). */
static size_t addr_len(const struct sockaddr *addr)
{
    if (addr->sa_family == AF_INET) {
        return ((const struct sockaddr_in *)addr)->sin_port != 0 ? 1 + 4 + 2 : 0;
    }
    if (addr->sa_family == AF_INET6) {
        return ((const struct sockaddr_in6 *)addr)->sin6_port != 0 ? 1 + 16 + 2 : 0;
    }
    return 0;
}

/* The body of a known frame type into out. */
static int parse_body(uint8_t type, struct km_buf *f, struct km_relay_msg *out)
{
    switch (type) {
    case KM_RELAY_MSG_REFLEXIVE:
        if (get_addr(f, &out->addr) != 0) {
            return KM_ERR_INVALID;
        }
        break;
    case KM_RELAY_MSG_LISTEN:
        if (km_buf_get_u16(f, &out->port) != 0 || out->port == 0) {
            return KM_ERR_INVALID;
        }
        break;
    case KM_RELAY_MSG_PUNCH_REQUEST:
        if (km_buf_get_bytes(f, out->key.b, KM_PUBKEY_LEN) != 0) {
            return KM_ERR_INVALID;
        }
        break;
    case KM_RELAY_MSG_PUNCH:
        if (km_buf_get_bytes(f, out->key.b, KM_PUBKEY_LEN) != 0 ||
            km_buf_get_u8(f, &out->flags) != 0 || (out->flags & ~KM_RELAY_PUNCH_CLIENT) != 0 ||
            get_addr(f, &out->addr) != 0) {
            return KM_ERR_INVALID;
        }
        break;
    default:
        return KM_ERR_UNSUPPORTED;
    }
    return km_buf_get_end(f) != 0 ? KM_ERR_INVALID : 0;
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
        int r = parse_body(type, &f, out);
        if (r == 0) {
            out->type = type;
            return 0;
        }
        memset(out, 0, sizeof *out); /* nothing half-filled */
        if (r != KM_ERR_UNSUPPORTED) {
            return r;
        }
        /* An unknown type: skipped, for later versions. */
    }
}

int km_relay_msg_put_reflexive(struct km_buf *w, const struct sockaddr *addr)
{
    int r;
    if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6) {
        return KM_ERR_INVALID;
    }
    size_t al = addr->sa_family == AF_INET ? 1 + 4 + 2 : 1 + 16 + 2;
    if ((r = km_buf_put_u16(w, (uint16_t)(1 + al))) != 0 ||
        (r = km_buf_put_u8(w, KM_RELAY_MSG_REFLEXIVE)) != 0 || (r = put_addr(w, addr)) != 0) {
        return r;
    }
    return 0;
}

int km_relay_msg_put_listen(struct km_buf *w, uint16_t port)
{
    int r;
    if (port == 0) {
        return KM_ERR_INVALID;
    }
    if ((r = km_buf_put_u16(w, 1 + 2)) != 0 || (r = km_buf_put_u8(w, KM_RELAY_MSG_LISTEN)) != 0 ||
        (r = km_buf_put_u16(w, port)) != 0) {
        return r;
    }
    return 0;
}

int km_relay_msg_put_punch_request(struct km_buf *w, const struct km_pubkey *target)
{
    int r;
    if ((r = km_buf_put_u16(w, 1 + KM_PUBKEY_LEN)) != 0 ||
        (r = km_buf_put_u8(w, KM_RELAY_MSG_PUNCH_REQUEST)) != 0 ||
        (r = km_buf_put_bytes(w, target->b, KM_PUBKEY_LEN)) != 0) {
        return r;
    }
    return 0;
}

int km_relay_msg_put_punch(struct km_buf *w, const struct km_pubkey *peer,
                           const struct sockaddr *addr, uint8_t flags)
{
    size_t al = addr_len(addr);
    int r;
    if (al == 0 || (flags & ~KM_RELAY_PUNCH_CLIENT) != 0) {
        return KM_ERR_INVALID;
    }
    if ((r = km_buf_put_u16(w, (uint16_t)(1 + KM_PUBKEY_LEN + 1 + al))) != 0 ||
        (r = km_buf_put_u8(w, KM_RELAY_MSG_PUNCH)) != 0 ||
        (r = km_buf_put_bytes(w, peer->b, KM_PUBKEY_LEN)) != 0 ||
        (r = km_buf_put_u8(w, flags)) != 0 || (r = put_addr(w, addr)) != 0) {
        return r;
    }
    return 0;
}
