/* Messages on a node's registration channel, both ways (docs/PROTOCOL.md section 6).
 * Each is a frame: u16 length, then that many bytes: u8 type and the body. Pure parser and
 * builder over km_buf; no I/O. */
#ifndef KM_PROTO_RELAY_MSG_H
#define KM_PROTO_RELAY_MSG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/err.h"
#include "identity/key.h"

/* The direct-tcpip targets of the gateway protocol (port 1): a node registers with
 * KM_RELAY_REGISTER_HOST; a gateway opens KM_RELAY_RELAYED_HOST to a registered node for each
 * relayed stream. The `@` keeps them out of DNS. */
#define KM_RELAY_REGISTER_HOST "relay@keymesh"
#define KM_RELAY_RELAYED_HOST "relayed@keymesh"

/* A frame's content is at most this long; a longer length is KM_ERR_TOO_LARGE. */
#define KM_RELAY_MSG_MAX 512u

enum km_relay_msg_type {
    KM_RELAY_MSG_REFLEXIVE = 1,     /* gateway -> node: the address:port it sees the session from */
    KM_RELAY_MSG_LISTEN = 2,        /* node -> gateway: the mesh port the node punches from */
    KM_RELAY_MSG_PUNCH_REQUEST = 3, /* node -> gateway: coordinate a hole punch to key */
    KM_RELAY_MSG_PUNCH = 4,         /* gateway -> node: punch to key at addr now */
};

/* PUNCH flags: bit 0 set tells the node to run the SSH client on the punched connection
 * (the node that asked); clear, its SSH server. Other bits must be 0. */
#define KM_RELAY_PUNCH_CLIENT 0x01u

struct km_relay_msg {
    uint8_t type;                 /* a known type; unknown ones are skipped by the parser */
    struct sockaddr_storage addr; /* REFLEXIVE, PUNCH: AF_INET or AF_INET6 with port */
    struct km_pubkey key;         /* PUNCH_REQUEST: the target; PUNCH: the other node */
    uint16_t port;                /* LISTEN: non-zero */
    uint8_t flags;                /* PUNCH: KM_RELAY_PUNCH_* */
};

/* Take the next known message (of any type: each side ignores the types it does not expect) from
 * the front of in (a read buffer). Frames of unknown types are consumed and skipped (for later
 * versions). Returns 0 with *out filled and the frame consumed; KM_ERR_INCOMPLETE when no complete
 * known frame is buffered (nothing but skipped frames consumed); KM_ERR_TOO_LARGE for a length
 * above KM_RELAY_MSG_MAX; KM_ERR_INVALID for a malformed known frame (empty, bad family, port 0,
 * unknown flags, trailing bytes). The last two mean: drop the channel. */
KM_MUST_CHECK int km_relay_msg_get(struct km_buf *in, struct km_relay_msg *out);

/* Append a REFLEXIVE frame for addr (AF_INET or AF_INET6). 0, KM_ERR_INVALID for another
 * family, or a km_buf error. */
KM_MUST_CHECK int km_relay_msg_put_reflexive(struct km_buf *w, const struct sockaddr *addr);

/* Append a LISTEN frame (port non-zero). 0, KM_ERR_INVALID for port 0, or a km_buf error. */
KM_MUST_CHECK int km_relay_msg_put_listen(struct km_buf *w, uint16_t port);

/* Append a PUNCH_REQUEST frame naming target. 0 or a km_buf error. */
KM_MUST_CHECK int km_relay_msg_put_punch_request(struct km_buf *w, const struct km_pubkey *target);

/* Append a PUNCH frame: punch to peer at addr (AF_INET or AF_INET6, port non-zero) with flags
 * (KM_RELAY_PUNCH_*). 0, KM_ERR_INVALID for another family, port 0 or unknown flags, or a
 * km_buf error. */
KM_MUST_CHECK int km_relay_msg_put_punch(struct km_buf *w, const struct km_pubkey *peer,
                                         const struct sockaddr *addr, uint8_t flags);

#endif
