/* The event loop: one libuv loop for the whole daemon, with signal handling and a
 * leak-checking close (STYLE.md section 8).
 *
 * Signals are received through libuv's uv_signal_t, whose handler only writes to a pipe;
 * the callbacks below run later on the loop, never in signal context. SIGINT and SIGTERM
 * call stop_cb, SIGHUP calls reload_cb; SIGPIPE is ignored process-wide (writes to closed
 * sockets return EPIPE instead). */
#ifndef KM_CORE_LOOP_H
#define KM_CORE_LOOP_H

#include <uv.h>

#include "core/err.h"

struct km_loop;

typedef void (*km_loop_signal_cb)(struct km_loop *l, int signum, void *arg);

/* Create a loop. Returns 0 or a negative code; *out is NULL on failure. */
KM_MUST_CHECK int km_loop_new(struct km_loop **out);

/* The libuv loop, borrowed for the lifetime of l. */
uv_loop_t *km_loop_uv(struct km_loop *l);

/* Watch SIGINT/SIGTERM (stop_cb) and SIGHUP (reload_cb; may be NULL to ignore SIGHUP).
 * The signal handles do not keep the loop alive by themselves (they are unref'ed), so the
 * loop ends once every other handle is closed. */
KM_MUST_CHECK int km_loop_watch_signals(struct km_loop *l, km_loop_signal_cb stop_cb,
                                        km_loop_signal_cb reload_cb, void *arg);

/* Run until no active handles remain. Returns 0 or a negative libuv code. */
KM_MUST_CHECK int km_loop_run(struct km_loop *l);

/* Close l's own handles (the signal watchers); SIGINT, SIGTERM and SIGHUP are ignored from
 * then on (the process is shutting down). Idempotent. */
void km_loop_unwatch_signals(struct km_loop *l);

/* Close the signal watchers, drain pending close callbacks, then close and free the loop.
 * Returns 0, or -EBUSY when other handles were still open (a leak: those handles
 * are listed by km_loop_leaks before this returns and then force-closed). Accepts NULL. */
int km_loop_free(struct km_loop *l);

/* Number of handles still open on the loop that l does not own itself. */
unsigned km_loop_leaks(struct km_loop *l);

#endif
