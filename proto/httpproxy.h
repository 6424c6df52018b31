/* HTTP/1.1 proxy front-end: pure parsers for request and response heads, body framing and the
 * chunked transfer coding over km_buf, and a libuv server for CONNECT and absolute-form
 * requests through km_egress (docs/PROXY.md).
 *
 * Parsers return 0 on success, KM_ERR_INCOMPLETE to wait for more bytes (nothing consumed),
 * KM_ERR_INVALID for malformed input (400 / 502), KM_ERR_TOO_LARGE past a limit (431 / 502)
 * and KM_ERR_UNSUPPORTED for well-formed input we do not serve (505 / 501). */
#ifndef KM_PROTO_HTTPPROXY_H
#define KM_PROTO_HTTPPROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "core/buf.h"
#include "core/err.h"
#include "proto/egress.h"

#define KM_HTTP_MAX_HEAD (16u * 1024u) /* request or response head, incl. the blank line */
#define KM_HTTP_MAX_HEADERS 100u

/* A borrowed span of a head (not NUL-terminated). */
struct km_http_view {
    const char *p;
    size_t len;
};

struct km_http_header {
    struct km_http_view name;  /* a token */
    struct km_http_view value; /* without leading and trailing whitespace */
};

struct km_http_request {
    struct km_http_view method; /* a token */
    struct km_http_view target; /* visible ASCII, as sent */
    int minor_version;          /* HTTP/1.x */
    struct km_http_header *headers;
    size_t n_headers;
    size_t head_len; /* bytes consumed, incl. empty lines ignored before the request line */
};

struct km_http_response {
    int minor_version;
    int status; /* 100..599 */
    struct km_http_view reason;
    struct km_http_header *headers;
    size_t n_headers;
    size_t head_len;
};

/* Parse a request head (RFC 9112 sections 2-5) from b, at most KM_HTTP_MAX_HEAD bytes and
 * max_hdrs headers stored in hdrs[]. Lines end in CRLF or a bare LF; a bare CR, a NUL or other
 * control byte, obs-fold, whitespace before a colon, a bad method token or a version other
 * than HTTP/1.x are refused (KM_ERR_UNSUPPORTED for HTTP/2+). On success the head is consumed
 * and the views point into b's storage: valid until b is next written, compacted or reset. */
KM_MUST_CHECK int km_http_parse_request(struct km_buf *b, struct km_http_request *out,
                                        struct km_http_header *hdrs, size_t max_hdrs);

/* Parse a response head the same way: "HTTP/1.x SP 3DIGIT [SP reason]". */
KM_MUST_CHECK int km_http_parse_response(struct km_buf *b, struct km_http_response *out,
                                         struct km_http_header *hdrs, size_t max_hdrs);

/* The first header named name (case-insensitive) at index >= *pos, or NULL; *pos is set past
 * it so a loop finds them all. pos may be NULL to find the first. */
const struct km_http_header *km_http_header_find(const struct km_http_header *hdrs, size_t n,
                                                 const char *name, size_t *pos);

/* True if a comma-separated token list (e.g. a Connection value) contains token,
 * case-insensitively. */
bool km_http_list_has(struct km_http_view list, const char *token, size_t token_len);

enum km_http_body {
    KM_HTTP_BODY_NONE,
    KM_HTTP_BODY_LENGTH,  /* Content-Length bytes */
    KM_HTTP_BODY_CHUNKED, /* Transfer-Encoding: chunked */
    KM_HTTP_BODY_CLOSE,   /* until the connection closes (responses only) */
};

/* Body framing of a request (RFC 9112 section 6). KM_ERR_INVALID for a bad or conflicting
 * Content-Length, both Content-Length and Transfer-Encoding, or Transfer-Encoding in HTTP/1.0;
 * KM_ERR_UNSUPPORTED for a transfer coding other than exactly "chunked". */
KM_MUST_CHECK int km_http_request_body(const struct km_http_request *r, enum km_http_body *kind,
                                       uint64_t *len);

/* Body framing of a response to a request whose method was HEAD (head_request) or not:
 * none for HEAD, 1xx, 204 and 304. KM_ERR_INVALID as for requests. */
KM_MUST_CHECK int km_http_response_body(const struct km_http_response *r, bool head_request,
                                        enum km_http_body *kind, uint64_t *len);

/* Parse "host:port" (authority-form, CONNECT) into host (NUL-terminated, IPv6 without
 * brackets) and port. A missing port gives default_port, or KM_ERR_INVALID if that is 0.
 * Refuses userinfo, empty hosts, port 0 and bytes outside the URI host syntax. */
KM_MUST_CHECK int km_http_parse_authority(struct km_http_view a, uint16_t default_port,
                                          char host[static 256], uint16_t *port);

/* Split an absolute-form "http://authority[/path][?query]" target. *authority and *path are
 * views into target (path empty when the target has none: send "/"). KM_ERR_UNSUPPORTED for
 * another scheme, KM_ERR_INVALID otherwise. */
KM_MUST_CHECK int km_http_split_absolute(struct km_http_view target, struct km_http_view *authority,
                                         struct km_http_view *path);

/* Incremental decoder of the chunked transfer coding (RFC 9112 section 7.1): it only finds the
 * end of the body, so the bytes can be forwarded unchanged. Chunk-size lines and trailer lines
 * are limited to 4 KiB, the trailer section to KM_HTTP_MAX_HEAD. */
struct km_http_chunked {
    /* private */
    int state;
    uint64_t remaining; /* of the current chunk's data */
    size_t line_len;
    size_t trailer_len;
    unsigned digits;
};

void km_http_chunked_init(struct km_http_chunked *c);

/* Consume from b the bytes that belong to the body. Returns 0 once the last byte of the body
 * (the end of the trailer section) is consumed, KM_ERR_INCOMPLETE when all of b was consumed
 * and the body goes on, or KM_ERR_INVALID / KM_ERR_TOO_LARGE. */
KM_MUST_CHECK int km_http_chunked_feed(struct km_http_chunked *c, struct km_buf *b);

/* ---- server ---- */

struct km_http_server;

struct km_http_limits {
    unsigned max_clients;        /* 0: 1024 */
    unsigned head_timeout_ms;    /* accept to first request head; 0: 10000 */
    unsigned idle_timeout_ms;    /* keep-alive wait for the next request; 0: 30000 */
    unsigned connect_timeout_ms; /* egress open; 0: 30000 */
};

/* Listen on addr and serve HTTP proxy clients through egress (borrowed; must outlive the
 * server). limits may be NULL. Returns 0 and *out, or a negative code with *out NULL. */
KM_MUST_CHECK int km_http_server_new(uv_loop_t *loop, const struct sockaddr *addr,
                                     struct km_egress *egress, const struct km_http_limits *limits,
                                     struct km_http_server **out);

/* The address the server listens on. */
KM_MUST_CHECK int km_http_server_addr(const struct km_http_server *s, struct sockaddr_storage *out);

/* Clients held (reading, connecting, exchanging or tunnelling). */
unsigned km_http_server_clients(const struct km_http_server *s);

/* Stop listening and close every client that is not tunnelling (CONNECT relays go on until
 * they end). Asynchronous: freed once the last handle and relay are gone (possibly within this
 * call), so s must not be used afterwards; a repeated call while it lives is a no-op. Accepts
 * NULL. */
void km_http_server_close(struct km_http_server *s);

#endif
