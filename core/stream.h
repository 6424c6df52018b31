/* km_stream: a bidirectional byte stream endpoint, whatever carries it: a TCP socket, a
 * Unix socket, stdio, or an SSH channel. The relay (core/relay.h) splices two of them with
 * backpressure, so proxies and the mesh never copy bytes between transports themselves.
 *
 * Implementations embed struct km_stream and fill ops; consumers set the event callbacks.
 * Contract for every implementation:
 *   - write() takes a copy of (or consumes) the bytes and returns 0, or a negative code if
 *     the stream is closed or broken; queued bytes are sent in order.
 *   - write_queue() reports bytes accepted by write() and not yet handed to the transport;
 *     when it falls to KM_STREAM_LOW_WATER or below after having exceeded
 *     KM_STREAM_HIGH_WATER, on_drain fires once.
 *   - read_start()/read_stop() toggle on_data delivery; while stopped the transport applies
 *     backpressure to the far end (TCP window, SSH channel window).
 *   - shutdown() sends EOF after the queued bytes; close() drops everything and frees the
 *     stream later (never inside the call); abort() does the same and tells the far end it
 *     was an error (TCP: RST). After close() or abort() no callback fires.
 *   - Callbacks never fire synchronously from inside write()/read_start()/shutdown(); an
 *     implementation defers them to the loop. on_end fires once: err 0 for a clean EOF from
 *     the far end, negative on error or reset. */
#ifndef KM_CORE_STREAM_H
#define KM_CORE_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define KM_STREAM_HIGH_WATER (256u * 1024u)
#define KM_STREAM_LOW_WATER (64u * 1024u)

struct km_stream;

struct km_stream_ops {
    int (*write)(struct km_stream *s, const uint8_t *data, size_t len);
    size_t (*write_queue)(const struct km_stream *s);
    void (*read_start)(struct km_stream *s);
    void (*read_stop)(struct km_stream *s);
    void (*shutdown)(struct km_stream *s);
    void (*close)(struct km_stream *s);
    /* Optional: close, telling the far end this is an error and not an end (TCP: a reset,
     * queued bytes dropped). NULL: the same as close. */
    void (*abort)(struct km_stream *s);
    /* One line describing the stream for logs ("tcp 127.0.0.1:5000", "chan 3 peer abcd..."). */
    const char *(*describe)(const struct km_stream *s);
};

struct km_stream {
    /* public: set by the consumer */
    void (*on_data)(struct km_stream *s, const uint8_t *data, size_t len);
    void (*on_end)(struct km_stream *s, int err);
    void (*on_drain)(struct km_stream *s);
    void *data; /* the consumer's pointer */
    /* read-only: set by the implementation */
    const struct km_stream_ops *ops;
};

static inline int km_stream_write(struct km_stream *s, const uint8_t *data, size_t len)
{
    return s->ops->write(s, data, len);
}

static inline size_t km_stream_write_queue(const struct km_stream *s)
{
    return s->ops->write_queue(s);
}

static inline void km_stream_read_start(struct km_stream *s)
{
    s->ops->read_start(s);
}

static inline void km_stream_read_stop(struct km_stream *s)
{
    s->ops->read_stop(s);
}

static inline void km_stream_shutdown(struct km_stream *s)
{
    s->ops->shutdown(s);
}

static inline void km_stream_close(struct km_stream *s)
{
    if (s != NULL) {
        s->ops->close(s);
    }
}

/* Close after a failure elsewhere: the far end sees an error (a TCP reset) rather than a
 * clean end, so a transfer cut short cannot pass for a complete one. */
static inline void km_stream_abort(struct km_stream *s)
{
    if (s != NULL) {
        if (s->ops->abort != NULL) {
            s->ops->abort(s);
        } else {
            s->ops->close(s);
        }
    }
}

static inline const char *km_stream_describe(const struct km_stream *s)
{
    return s->ops->describe(s);
}

#endif
