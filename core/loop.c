#include "core/loop.h"

#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>

#include "core/log.h"

struct km_loop {
    uv_loop_t uv;
    uv_signal_t sig_int;
    uv_signal_t sig_term;
    uv_signal_t sig_hup;
    bool watching;
    km_loop_signal_cb stop_cb;
    km_loop_signal_cb reload_cb;
    void *arg;
};

int km_loop_new(struct km_loop **out)
{
    *out = NULL;
    struct km_loop *l = calloc(1, sizeof *l);
    if (l == NULL) {
        return -ENOMEM;
    }
    int r = uv_loop_init(&l->uv);
    if (r != 0) {
        free(l);
        return r;
    }
    l->uv.data = l;
    /* A write to a peer that went away must not kill the daemon. */
    signal(SIGPIPE, SIG_IGN);
    *out = l;
    return 0;
}

uv_loop_t *km_loop_uv(struct km_loop *l)
{
    return &l->uv;
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct km_loop *l = h->data;
    if (signum == SIGHUP) {
        if (l->reload_cb != NULL) {
            l->reload_cb(l, signum, l->arg);
        }
        return;
    }
    if (l->stop_cb != NULL) {
        l->stop_cb(l, signum, l->arg);
    }
}

static int watch(struct km_loop *l, uv_signal_t *h, int signum)
{
    int r = uv_signal_init(&l->uv, h);
    if (r != 0) {
        return r;
    }
    h->data = l;
    uv_unref((uv_handle_t *)h);
    return uv_signal_start(h, on_signal, signum);
}

int km_loop_watch_signals(struct km_loop *l, km_loop_signal_cb stop_cb, km_loop_signal_cb reload_cb,
                          void *arg)
{
    if (l->watching) {
        return -EALREADY;
    }
    l->stop_cb = stop_cb;
    l->reload_cb = reload_cb;
    l->arg = arg;
    l->watching = true;
    int r;
    if ((r = watch(l, &l->sig_int, SIGINT)) != 0 || (r = watch(l, &l->sig_term, SIGTERM)) != 0 ||
        (r = watch(l, &l->sig_hup, SIGHUP)) != 0) {
        km_loop_unwatch_signals(l);
        return r;
    }
    return 0;
}

int km_loop_run(struct km_loop *l)
{
    return uv_run(&l->uv, UV_RUN_DEFAULT);
}

static void close_if_open(uv_signal_t *h)
{
    /* A handle whose init failed has type UV_UNKNOWN_HANDLE and must not be closed. */
    if (h->type == UV_SIGNAL && !uv_is_closing((uv_handle_t *)h)) {
        uv_close((uv_handle_t *)h, NULL);
    }
}

void km_loop_unwatch_signals(struct km_loop *l)
{
    if (!l->watching) {
        return;
    }
    l->watching = false;
    close_if_open(&l->sig_int);
    close_if_open(&l->sig_term);
    close_if_open(&l->sig_hup);
    /* Closing the watchers restores the default action, which would let a late second
     * signal kill a process that is already shutting down cleanly: ignore them instead. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
}

static bool is_own(const struct km_loop *l, const uv_handle_t *h)
{
    return h == (const uv_handle_t *)&l->sig_int || h == (const uv_handle_t *)&l->sig_term ||
           h == (const uv_handle_t *)&l->sig_hup;
}

static void count_leak(uv_handle_t *h, void *arg)
{
    struct km_loop *l = h->loop->data;
    if (!is_own(l, h) && !uv_is_closing(h)) {
        (*(unsigned *)arg)++;
        KM_ERROR("loop: handle %p of type %s still open", (void *)h,
                 uv_handle_type_name(uv_handle_get_type(h)));
    }
}

unsigned km_loop_leaks(struct km_loop *l)
{
    unsigned n = 0;
    uv_walk(&l->uv, count_leak, &n);
    return n;
}

static void force_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) {
        uv_close(h, NULL);
    }
}

int km_loop_free(struct km_loop *l)
{
    if (l == NULL) {
        return 0;
    }
    km_loop_unwatch_signals(l);
    /* Let pending close callbacks run. */
    (void)uv_run(&l->uv, UV_RUN_NOWAIT);
    int r = 0;
    if (km_loop_leaks(l) > 0) {
        r = -EBUSY;
        /* Leaked handles belong to objects we cannot free from here; closing them at least lets
         * the loop be closed. Their owners' memory is leaked and reported by the sanitizers. */
        uv_walk(&l->uv, force_close, NULL);
        (void)uv_run(&l->uv, UV_RUN_DEFAULT);
    }
    if (uv_loop_close(&l->uv) != 0 && r == 0) {
        r = -EBUSY;
    }
    free(l);
    return r;
}
