/* km_stream over libuv: TCP sockets and file descriptors (stdio, Unix sockets).
 * Every TCP socket gets TCP_NODELAY (DESIGN.md section 4). */
#ifndef KM_CORE_UVSTREAM_H
#define KM_CORE_UVSTREAM_H

#include <sys/socket.h>
#include <uv.h>

#include "core/err.h"
#include "core/stream.h"

/* Called once when an outgoing connection completes (err 0) or fails (err < 0; the stream
 * is then already closed and must not be used). Not called if the stream is closed first. */
typedef void (*km_uvstream_connect_cb)(struct km_stream *s, int err, void *arg);

/* Accept one pending connection from a listening uv_tcp_t or uv_pipe_t into a new stream.
 * Returns 0 or a negative code; *out is NULL on failure. Reading is stopped until
 * km_stream_read_start. */
KM_MUST_CHECK int km_uvstream_accept(uv_stream_t *listener, struct km_stream **out);

/* Start a TCP connection to addr. The stream is returned at once in *out (so the caller can
 * close it to cancel) and cb reports the outcome. timeout_ms > 0 bounds the connect. */
KM_MUST_CHECK int km_uvstream_connect(uv_loop_t *loop, const struct sockaddr *addr,
                                      unsigned timeout_ms, km_uvstream_connect_cb cb, void *arg,
                                      struct km_stream **out);

/* Wrap already-open descriptors (e.g. stdin 0 and stdout 1 for `keymesh connect`, or one
 * socket twice). The stream owns nothing it did not open: the fds are not closed, only
 * their libuv handles. Reading is stopped until km_stream_read_start. */
KM_MUST_CHECK int km_uvstream_open_fds(uv_loop_t *loop, int fd_in, int fd_out,
                                       struct km_stream **out);

/* Listen for TCP on addr with backlog; on_connection is libuv's. The caller owns *listener
 * (a heap uv_tcp_t, freed after uv_close). Sets SO_REUSEADDR (libuv does) and, for IPv6
 * wildcard addresses, keeps dual-stack. Returns 0 or a negative libuv code. */
KM_MUST_CHECK int km_uvstream_listen_tcp(uv_loop_t *loop, const struct sockaddr *addr, int backlog,
                                         uv_connection_cb on_connection, void *data,
                                         uv_tcp_t **listener);

/* Close and free a listener made by km_uvstream_listen_tcp. Accepts NULL. */
void km_uvstream_listener_close(uv_tcp_t *listener);

/* The peer's address of a TCP stream from this module (for logs and policy). */
KM_MUST_CHECK int km_uvstream_peername(const struct km_stream *s, struct sockaddr_storage *out);

/* The peer's address as "ip:port" or "[ip]:port" ("?" when unknown). Returns out. */
char *km_uvstream_peer_str(const struct km_stream *s, char *out, size_t outsz);

/* Bytes waiting in the write queues of every stream of this module. */
size_t km_uvstream_total_queued(void);

#endif
