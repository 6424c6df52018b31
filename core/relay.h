/* The stream relay: splice two km_streams, each direction with backpressure (DESIGN.md
 * section 1, "stream relay").
 *
 * Bytes read from one side are written to the other; when the other side's write queue
 * passes KM_STREAM_HIGH_WATER the reading side is paused until on_drain. An EOF from one side
 * becomes shutdown() of the other; the relay ends when both directions have ended, or at the
 * first error, and then closes both streams (gracefully where they were shut down). */
#ifndef KM_CORE_RELAY_H
#define KM_CORE_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/stream.h"

struct km_relay;

/* Called once when the relay ends: err 0 when both directions ended with EOF, else the first
 * error. a_to_b and b_to_a count payload bytes delivered to write(). */
typedef void (*km_relay_done_cb)(void *arg, int err, uint64_t a_to_b, uint64_t b_to_a);

/* Start splicing a and b, taking ownership of both (they are closed when the relay ends or if
 * this call fails). pending[0..n) are bytes already read from a (e.g. past a proxy request
 * header) that go to b first. done may be NULL. Returns 0 or -ENOMEM. */
KM_MUST_CHECK int km_relay_start(struct km_stream *a, struct km_stream *b, const uint8_t *pending,
                                 size_t n, km_relay_done_cb done, void *arg);

/* End every relay still running (daemon shutdown): each finishes with KM_ERR_CLOSED, its
 * streams closed and its done callback called. */
void km_relay_close_all(void);

/* Number of relays running. */
unsigned km_relay_count(void);

#endif
