/* The control socket: how the CLI talks to a running daemon (DESIGN.md section 9).
 *
 * Protocol (docs/PROTOCOL.md, "Control socket"): a Unix stream socket in the state
 * directory, mode 0600. The client writes one JSON object per line, {"cmd": "<name>", ...};
 * the server answers each with one JSON object per line, carrying "ok": true or
 * "ok": false with "error": "<message>". Lines are at most KM_CTL_MAX_LINE bytes. */
#ifndef KM_CORE_CTL_H
#define KM_CORE_CTL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/err.h"
#include "core/stream.h"

#define KM_CTL_MAX_LINE (64u * 1024u)
#define KM_CTL_MAX_CLIENTS 16
#define KM_CTL_CMD_MAX 32

/* Parse one request line (without its newline). Pure. On success *out is a new reference to
 * the request object and *cmd points into it (valid while *out lives). KM_ERR_INVALID when the
 * bytes are not one JSON object whose "cmd" is a string of 1..KM_CTL_CMD_MAX characters from
 * [a-z0-9-]; KM_ERR_TOO_LARGE past KM_CTL_MAX_LINE. */
KM_MUST_CHECK int km_ctl_parse_request(const uint8_t *line, size_t len, json_t **out,
                                       const char **cmd);

/* One client connection of the control server. */
struct km_ctl_conn;

/* Answers one request: return a new reference to a JSON object (the server adds "ok": true
 * unless the object already has "ok"), or NULL for an internal error. A handler that calls
 * km_ctl_take(conn) returns NULL and answers on the taken stream itself. */
typedef json_t *(*km_ctl_handler)(void *arg, const char *cmd, const json_t *req,
                                  struct km_ctl_conn *conn);

/* Take over a client's connection from inside the handler, e.g. to splice it into a mesh
 * stream after a reply line. The server forgets the client; the caller owns the returned
 * stream (reading stopped, callbacks cleared). Bytes the client sent after the request line
 * are copied to pending (at most KM_CTL_MAX_LINE; *n_pending set). Returns NULL if the
 * connection is already closing. */
struct km_stream *km_ctl_take(struct km_ctl_conn *conn, uint8_t *pending, size_t pending_cap,
                              size_t *n_pending);

struct km_ctl_server;

/* Listen on a Unix socket at path (which must not exist: the caller removes a stale one after
 * taking the state directory's lock). Returns 0 or a negative code. */
KM_MUST_CHECK int km_ctl_server_new(uv_loop_t *loop, const char *path, km_ctl_handler handler,
                                    void *arg, struct km_ctl_server **out);

/* Stop listening, drop every client, unlink the socket path and free s once all handles have
 * closed (on a later loop iteration). Idempotent; accepts NULL. */
void km_ctl_server_close(struct km_ctl_server *s);

/* Client side, blocking: connect to path, send req as one line, wait up to timeout_ms for
 * one reply line. Returns 0 with *reply a new reference to the reply object;
 * KM_ERR_NOT_RUNNING when nobody listens at path; -ETIMEDOUT; KM_ERR_CTL_PROTO for a reply
 * that is not one JSON object; other -errno. */
KM_MUST_CHECK int km_ctl_call(const char *path, const json_t *req, json_t **reply, int timeout_ms);

#endif
