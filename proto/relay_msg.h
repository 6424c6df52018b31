/* Messages a gateway sends down a node's registration channel (docs/PROTOCOL.md section 6).
 * Each is a frame: u16 length, then that many bytes: u8 type and the body. Pure parser and
 * builder over km_buf; no I/O. */
#ifndef KM_PROTO_RELAY_MSG_H
#define KM_PROTO_RELAY_MSG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/err.h"

/* The direct-tcpip targets of the gateway protocol (port 1): a node registers with
 * KM_RELAY_REGISTER_HOST; a gateway opens KM_RELAY_RELAYED_HOST to a registered node for each
 * relayed stream. The `@` keeps them out of DNS. */
#define KM_RELAY_REGISTER_HOST "relay@keymesh"
#define KM_RELAY_RELAYED_HOST "relayed@keymesh"

/* A frame's content is at most this long; a longer length is KM_ERR_TOO_LARGE. */
#define KM_RELAY_MSG_MAX 512u

enum km_relay_msg_type {
    KM_RELAY_MSG_REFLEXIVE = 1, /* the address:port the gateway sees the node's session from */
};

struct km_relay_msg {
    uint8_t type;                 /* a known type; unknown ones are skipped by the parser */
    struct sockaddr_storage addr; /* REFLEXIVE: AF_INET or AF_INET6 with port */
};

/* Take the next known message from the front of in (a read buffer). Frames of unknown types
 * are consumed and skipped (for later versions). Returns 0 with *out filled and the frame
 * consumed; KM_ERR_INCOMPLETE when no complete known frame is buffered (nothing but skipped
 * frames consumed); KM_ERR_TOO_LARGE for a length above KM_RELAY_MSG_MAX; KM_ERR_INVALID for
 * a malformed known frame (empty, bad family, port 0, trailing bytes). The last two mean:
 * drop the channel. */
KM_MUST_CHECK int km_relay_msg_get(struct km_buf *in, struct km_relay_msg *out);

/* Append a REFLEXIVE frame for addr (AF_INET or AF_INET6). 0, KM_ERR_INVALID for another
 * family, or a km_buf error. */
KM_MUST_CHECK int km_relay_msg_put_reflexive(struct km_buf *w, const struct sockaddr *addr);

#endif
