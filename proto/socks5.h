/* SOCKS5 front-end (RFC 1928, with RFC 1929 username/password): pure message parsers and
 * writers over km_buf, and a libuv server that turns CONNECT requests into km_egress streams
 * relayed to the client (docs/PROXY.md).
 *
 * Parsers consume the message on success. KM_ERR_INCOMPLETE means "wait for more bytes" and
 * leaves the buffer untouched; KM_ERR_INVALID means malformed (drop the client);
 * KM_ERR_UNSUPPORTED means well-formed but refused with a protocol reply code. */
#ifndef KM_PROTO_SOCKS5_H
#define KM_PROTO_SOCKS5_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "core/buf.h"
#include "core/err.h"
#include "proto/egress.h"

#define KM_SOCKS5_VERSION 0x05
#define KM_SOCKS5_AUTH_VERSION 0x01 /* RFC 1929 sub-negotiation version */

/* METHOD values (RFC 1928 section 3). */
#define KM_SOCKS5_METHOD_NONE 0x00
#define KM_SOCKS5_METHOD_GSSAPI 0x01
#define KM_SOCKS5_METHOD_USERPASS 0x02
#define KM_SOCKS5_METHOD_NO_ACCEPTABLE 0xff

/* CMD values (RFC 1928 section 4). */
#define KM_SOCKS5_CMD_CONNECT 0x01
#define KM_SOCKS5_CMD_BIND 0x02
#define KM_SOCKS5_CMD_UDP_ASSOCIATE 0x03

/* ATYP values (RFC 1928 section 5). */
#define KM_SOCKS5_ATYP_IPV4 0x01
#define KM_SOCKS5_ATYP_DOMAIN 0x03
#define KM_SOCKS5_ATYP_IPV6 0x04

/* REP values (RFC 1928 section 6). */
#define KM_SOCKS5_REP_SUCCEEDED 0x00
#define KM_SOCKS5_REP_GENERAL_FAILURE 0x01
#define KM_SOCKS5_REP_NOT_ALLOWED 0x02
#define KM_SOCKS5_REP_NET_UNREACHABLE 0x03
#define KM_SOCKS5_REP_HOST_UNREACHABLE 0x04
#define KM_SOCKS5_REP_CONN_REFUSED 0x05
#define KM_SOCKS5_REP_TTL_EXPIRED 0x06
#define KM_SOCKS5_REP_CMD_UNSUPPORTED 0x07
#define KM_SOCKS5_REP_ATYP_UNSUPPORTED 0x08

/* Client greeting: VER NMETHODS METHODS[NMETHODS]. */
struct km_socks5_greeting {
    uint8_t n_methods; /* 1..255 */
    uint8_t methods[255];
};

/* RFC 1929 request: VER ULEN UNAME PLEN PASSWD. Strings may contain any byte (even NUL: the
 * RFC does not forbid it), so compare them by length; each is also NUL-terminated. */
struct km_socks5_auth {
    size_t user_len; /* 1..255 */
    size_t pass_len; /* 1..255 */
    uint8_t user[256];
    uint8_t pass[256];
};

/* Request: VER CMD RSV ATYP DST.ADDR DST.PORT. */
struct km_socks5_request {
    uint8_t cmd;
    uint8_t atyp;
    /* The destination as text for km_egress: the domain name (1..255 bytes, no NUL), or the
     * address printed by inet_ntop (IPv6 without brackets). NUL-terminated. */
    char host[256];
    uint16_t port; /* 1..65535 */
    /* The reply code to send when parsing failed with KM_ERR_UNSUPPORTED or KM_ERR_INVALID
     * (KM_SOCKS5_REP_CMD_UNSUPPORTED, _ATYP_UNSUPPORTED or _GENERAL_FAILURE). */
    uint8_t rep;
};

/* Parse a greeting. KM_ERR_INVALID for VER != 5 or NMETHODS == 0. Leaves bytes after the
 * greeting in b (a client may pipeline its next message). */
KM_MUST_CHECK int km_socks5_parse_greeting(struct km_buf *b, struct km_socks5_greeting *out);

/* True if the greeting offers method. */
bool km_socks5_greeting_has(const struct km_socks5_greeting *g, uint8_t method);

/* Parse an RFC 1929 username/password request. KM_ERR_INVALID for VER != 1 or an empty
 * username or password. The secret is in out: wipe it with sodium_memzero when done. */
KM_MUST_CHECK int km_socks5_parse_auth(struct km_buf *b, struct km_socks5_auth *out);

/* Parse a request. KM_ERR_INVALID for VER != 5, RSV != 0, an empty domain, a domain with a
 * NUL byte, or port 0; KM_ERR_UNSUPPORTED for a CMD other than CONNECT (out->rep is then
 * KM_SOCKS5_REP_CMD_UNSUPPORTED) or an unknown ATYP (out->rep KM_SOCKS5_REP_ATYP_UNSUPPORTED).
 * An unsupported CMD is reported as soon as the fixed header (4 bytes) is in. */
KM_MUST_CHECK int km_socks5_parse_request(struct km_buf *b, struct km_socks5_request *out);

/* Append the method selection message (VER METHOD). */
KM_MUST_CHECK int km_socks5_put_method(struct km_buf *b, uint8_t method);

/* Append the RFC 1929 status message (VER=1 STATUS; 0 is success). */
KM_MUST_CHECK int km_socks5_put_auth_status(struct km_buf *b, uint8_t status);

/* Append a reply (VER REP RSV ATYP BND.ADDR BND.PORT). bnd may be NULL for 0.0.0.0:0; an
 * AF_INET or AF_INET6 address is written with its type. KM_ERR_INVALID for other families. */
KM_MUST_CHECK int km_socks5_put_reply(struct km_buf *b, uint8_t rep, const struct sockaddr *bnd);

/* The REP code for a km_egress or parse failure (table in docs/PROXY.md). */
uint8_t km_socks5_rep_from_err(int err);

/* ---- server ---- */

struct km_socks5_server;

struct km_socks5_limits {
    unsigned max_clients;          /* concurrent clients incl. relaying ones; 0: 1024 */
    unsigned handshake_timeout_ms; /* accept to request parsed; 0: 10000 */
    unsigned connect_timeout_ms;   /* egress open to reply; 0: 30000 */
};

/* Listen on addr and serve SOCKS5 clients through egress (borrowed; must outlive the server).
 * With username non-NULL, only RFC 1929 authentication with these exact credentials (each
 * 1..255 bytes) is accepted; otherwise only "no authentication". limits may be NULL for the
 * defaults. Returns 0 and the server in *out, or a negative code (libuv's for bind errors,
 * KM_ERR_INVALID for bad credentials) with *out NULL. */
KM_MUST_CHECK int km_socks5_server_new(uv_loop_t *loop, const struct sockaddr *addr,
                                       struct km_egress *egress, const char *username,
                                       const char *password, const struct km_socks5_limits *limits,
                                       struct km_socks5_server **out);

/* The address the server listens on (to learn an ephemeral port). */
KM_MUST_CHECK int km_socks5_server_addr(const struct km_socks5_server *s,
                                        struct sockaddr_storage *out);

/* Number of clients currently held (handshaking, connecting or relaying). */
unsigned km_socks5_server_clients(const struct km_socks5_server *s);

/* Stop listening and close every client still in its handshake (pending egress requests are
 * cancelled). Relayed connections go on until either side ends them. Asynchronous: the memory
 * is freed once every handle is closed and the last relay ended (possibly within this call),
 * so s must not be used afterwards; a second call while the memory lives is a no-op.
 * Accepts NULL. */
void km_socks5_server_close(struct km_socks5_server *s);

#endif
