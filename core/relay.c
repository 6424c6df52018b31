#include "core/relay.h"

#include <stdbool.h>
#include <stdlib.h>

#include "core/log.h"

struct km_relay {
    struct km_stream *a;
    struct km_stream *b;
    uint64_t a_to_b;
    uint64_t b_to_a;
    km_relay_done_cb done;
    void *arg;
    bool a_ended; /* EOF received from a (and b shut down) */
    bool b_ended;
    bool a_paused; /* reading from a stopped: b's write queue is full */
    bool b_paused;
    struct km_relay *next; /* in the list of running relays */
    struct km_relay *prev;
};

/* Every running relay, so shutdown can end them (the loop is single-threaded). */
static struct km_relay *g_relays;
static unsigned g_n_relays;

static void finish(struct km_relay *r, int err)
{
    if (r->prev != NULL) {
        r->prev->next = r->next;
    } else {
        g_relays = r->next;
    }
    if (r->next != NULL) {
        r->next->prev = r->prev;
    }
    g_n_relays--;
    /* Streams that were shut down flush their queue and EOF before closing. After a failure
     * on either side both are aborted instead: the far ends see a reset, not a clean end
     * (a client must not take a transfer cut short for a whole one). */
    if (err != 0) {
        km_stream_abort(r->a);
        km_stream_abort(r->b);
    } else {
        km_stream_close(r->a);
        km_stream_close(r->b);
    }
    if (r->done != NULL) {
        r->done(r->arg, err, r->a_to_b, r->b_to_a);
    }
    free(r);
}

static void on_data(struct km_stream *s, const uint8_t *data, size_t len)
{
    struct km_relay *r = s->data;
    bool from_a = s == r->a;
    struct km_stream *dst = from_a ? r->b : r->a;
    int rc = km_stream_write(dst, data, len);
    if (rc != 0) {
        KM_DEBUG_R(rc, "relay %s -> %s: write", km_stream_describe(s), km_stream_describe(dst));
        finish(r, rc);
        return;
    }
    if (from_a) {
        r->a_to_b += len;
    } else {
        r->b_to_a += len;
    }
    if (km_stream_write_queue(dst) > KM_STREAM_HIGH_WATER) {
        km_stream_read_stop(s);
        if (from_a) {
            r->a_paused = true;
        } else {
            r->b_paused = true;
        }
    }
}

static void on_drain(struct km_stream *s)
{
    struct km_relay *r = s->data;
    /* s can take more: resume the side that writes into it. */
    if (s == r->b && r->a_paused) {
        r->a_paused = false;
        km_stream_read_start(r->a);
    } else if (s == r->a && r->b_paused) {
        r->b_paused = false;
        km_stream_read_start(r->b);
    }
}

static void on_end(struct km_stream *s, int err)
{
    struct km_relay *r = s->data;
    if (err != 0) {
        KM_DEBUG_R(err, "relay: %s ended", km_stream_describe(s));
        finish(r, err);
        return;
    }
    if (s == r->a) {
        r->a_ended = true;
        km_stream_shutdown(r->b);
    } else {
        r->b_ended = true;
        km_stream_shutdown(r->a);
    }
    if (r->a_ended && r->b_ended) {
        finish(r, 0);
    }
}

int km_relay_start(struct km_stream *a, struct km_stream *b, const uint8_t *pending, size_t n,
                   km_relay_done_cb done, void *arg)
{
    struct km_relay *r = calloc(1, sizeof *r);
    if (r == NULL) {
        km_stream_close(a);
        km_stream_close(b);
        return -ENOMEM;
    }
    r->a = a;
    r->b = b;
    r->done = done;
    r->arg = arg;
    a->data = r;
    b->data = r;
    a->on_data = b->on_data = on_data;
    a->on_end = b->on_end = on_end;
    a->on_drain = b->on_drain = on_drain;
    if (n > 0) {
        int rc = km_stream_write(b, pending, n);
        if (rc != 0) {
            /* No callback has been promised yet: report through the return value. */
            km_stream_close(a);
            km_stream_close(b);
            free(r);
            return rc;
        }
        r->a_to_b = n;
    }
    r->next = g_relays;
    if (g_relays != NULL) {
        g_relays->prev = r;
    }
    g_relays = r;
    g_n_relays++;
    km_stream_read_start(a);
    km_stream_read_start(b);
    return 0;
}

void km_relay_close_all(void)
{
    /* Bounded: each finish() removes one relay and starts none. */
    while (g_relays != NULL) {
        finish(g_relays, KM_ERR_CLOSED);
    }
}

unsigned km_relay_count(void)
{
    return g_n_relays;
}
