#include "discovery/portmap.h"

#include <arpa/inet.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <miniupnpc/miniupnpc.h>
#include <miniupnpc/upnpcommands.h>
#include <miniupnpc/upnperrors.h>
#include <natpmp.h>
#include <sodium.h>

#include "discovery/ssdp.h"

#define ERR_LEN 96
#define UPNP_CONFLICT 718       /* ConflictInMappingEntry: someone holds that external port */
#define UPNP_ONLY_PERMANENT 725 /* OnlyPermanentLeasesSupported: ask for lease 0 */
#define UPNP_PORT_TRIES 4       /* the mesh port itself, then random ones */
#define DESCRIPTION "keymesh"

enum job { JOB_MAP, JOB_DELETE };

/* A discovered Internet Gateway Device, kept for renewals and the deletion. Touched only by
 * the worker while a job runs, and by the loop when none does (freeing it). */
struct igd {
    bool have;
    struct UPNPUrls urls;
    struct IGDdatas data;
    char lan[64]; /* our address as the router sees it: the mapping's internal client */
};

/* What a job hands back to the loop. */
struct result {
    int rc; /* 0 or a KM error */
    enum km_portmap_method method;
    struct sockaddr_in ext;
    uint32_t lease_s;
    char err[ERR_LEN];
};

struct km_portmap {
    uv_loop_t *loop;
    struct km_portmap_opts o;
    km_portmap_cb cb;
    void *arg;
    uv_timer_t timer;
    uv_work_t work;
    bool busy;            /* a job is queued or running */
    struct km_ssdp *ssdp; /* an SSDP search on the loop, before a job that needs an IGD */
    bool closing;
    atomic_bool cancel; /* set by close: the worker gives up between blocking steps */
    /* Inputs of the running job, set by the loop before queueing it. */
    enum job job;
    uint16_t want_port;                 /* external port to ask for (kept across renewals) */
    enum km_portmap_method held_method; /* for renewal and deletion */
    struct igd igd;
    struct km_ssdp_result found; /* the description URLs the last search gave */
    struct result res;
    /* Loop-side state. */
    struct km_portmap_state st;
    char err[ERR_LEN];
    unsigned n_fail; /* consecutive failures, for the backoff */
};

const char *km_portmap_mode_name(enum km_portmap_mode m)
{
    switch (m) {
    case KM_PORTMAP_OFF:
        return "off";
    case KM_PORTMAP_ANY:
        return "on";
    case KM_PORTMAP_UPNP:
        return "upnp";
    case KM_PORTMAP_NATPMP:
        return "natpmp";
    }
    return "?";
}

const char *km_portmap_method_name(enum km_portmap_method m)
{
    switch (m) {
    case KM_PORTMAP_NONE:
        return "none";
    case KM_PORTMAP_BY_UPNP:
        return "upnp";
    case KM_PORTMAP_BY_NATPMP:
        return "natpmp";
    }
    return "?";
}

void km_portmap_opts_default(struct km_portmap_opts *o)
{
    memset(o, 0, sizeof *o);
    o->mode = KM_PORTMAP_ANY;
    o->lease_s = 3600;
    o->discover_ms = 1500;
    o->natpmp_ms = 2000;
    o->retry_min_ms = KM_PORTMAP_RETRY_MIN_MS;
}

/* ---- pure checks ---- */

/* An address a peer on the internet could connect to, as far as we can tell from the
 * address alone. Private ranges pass: a router behind another NAT reports one, and a mapping
 * is still useful to peers on that outer network. */
static bool connectable_v4(uint32_t a)
{
    uint32_t top = a >> 24;
    return top != 0 && top != 127 && (a >> 16) != (169u << 8 | 254) && top < 224;
}

int km_portmap_check_upnp(const char *ext_ip, size_t len, uint16_t ext_port,
                          struct sockaddr_in *out)
{
    memset(out, 0, sizeof *out);
    char text[INET_ADDRSTRLEN];
    /* The text comes from the router's SOAP reply: bounded, and only digits and dots. */
    if (ext_ip == NULL || len == 0 || len >= sizeof text || ext_port == 0) {
        return KM_ERR_INVALID;
    }
    for (size_t i = 0; i < len; i++) {
        if (!((ext_ip[i] >= '0' && ext_ip[i] <= '9') || ext_ip[i] == '.')) {
            return KM_ERR_INVALID;
        }
    }
    memcpy(text, ext_ip, len);
    text[len] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, text, &a) != 1 || !connectable_v4(ntohl(a.s_addr))) {
        return KM_ERR_INVALID;
    }
    out->sin_family = AF_INET;
    out->sin_addr = a;
    out->sin_port = htons(ext_port);
    return 0;
}

static uint32_t clamp_lease(uint32_t s)
{
    if (s < KM_PORTMAP_LEASE_MIN_S) {
        return KM_PORTMAP_LEASE_MIN_S;
    }
    return s > KM_PORTMAP_LEASE_MAX_S ? KM_PORTMAP_LEASE_MAX_S : s;
}

int km_portmap_check_natpmp(uint32_t public_addr, uint16_t public_port, uint32_t lifetime_s,
                            struct sockaddr_in *out, uint32_t *lease_s)
{
    memset(out, 0, sizeof *out);
    *lease_s = 0;
    if (public_port == 0 || lifetime_s == 0 || !connectable_v4(ntohl(public_addr))) {
        return KM_ERR_INVALID;
    }
    out->sin_family = AF_INET;
    out->sin_addr.s_addr = public_addr;
    out->sin_port = htons(public_port);
    *lease_s = clamp_lease(lifetime_s);
    return 0;
}

uint64_t km_portmap_renew_ms(uint32_t lease_s)
{
    return (uint64_t)clamp_lease(lease_s) * 1000u / 2u;
}

uint64_t km_portmap_retry_ms(uint32_t retry_min_ms, unsigned n, uint16_t jitter)
{
    uint64_t d = retry_min_ms == 0 ? KM_PORTMAP_RETRY_MIN_MS : retry_min_ms;
    for (unsigned i = 0; i < n && d < KM_PORTMAP_RETRY_MAX_MS; i++) {
        d *= 2;
    }
    if (d > KM_PORTMAP_RETRY_MAX_MS) {
        d = KM_PORTMAP_RETRY_MAX_MS;
    }
    return d + (d / 4) * jitter / 65535u;
}

/* ---- the worker side: blocking library calls ---- */

static void igd_free(struct igd *g)
{
    if (g->have) {
        FreeUPNPUrls(&g->urls);
        memset(g, 0, sizeof *g);
    }
}

/* Fetch the description of the first IGD the SSDP search found (on the loop, before this job). */
static int upnp_discover(struct km_portmap *pm, struct result *res)
{
    if (pm->igd.have) {
        return 0;
    }
    if (pm->found.n_urls == 0) {
        if (pm->found.send_error != 0) {
            snprintf(res->err, sizeof res->err, "UPnP: cannot search (%s)",
                     uv_strerror(pm->found.send_error));
        } else {
            snprintf(res->err, sizeof res->err, "UPnP: no IGD answered discovery");
        }
        return KM_ERR_NOT_FOUND;
    }
    struct igd *g = &pm->igd;
    int r = 0;
    for (size_t i = 0; i < pm->found.n_urls && r != 1 && !atomic_load(&pm->cancel); i++) {
        memset(g, 0, sizeof *g);
        /* 1 when the description was fetched and parsed; then it must name a WAN connection
         * service (what UPNP_GetValidIGD checks of a device list). */
        r = UPNP_GetIGDFromUrl(pm->found.urls[i], &g->urls, &g->data, g->lan, sizeof g->lan);
        if (r == 1 && (g->data.first.servicetype[0] == '\0' || g->urls.controlURL == NULL ||
                       g->urls.controlURL[0] == '\0')) {
            r = 0;
        }
        if (r != 1) {
            FreeUPNPUrls(&g->urls);
        }
    }
    if (r != 1) {
        memset(g, 0, sizeof *g);
        snprintf(res->err, sizeof res->err, "UPnP: no usable IGD description (%zu found)",
                 pm->found.n_urls);
        return KM_ERR_NOT_FOUND;
    }

    g->have = true;
    /* Our own address as the library found it; it becomes the mapping's target, so it must
     * be an address and nothing else. */
    struct in_addr lan;
    g->lan[sizeof g->lan - 1] = '\0';
    if (inet_pton(AF_INET, g->lan, &lan) != 1 || g->urls.controlURL == NULL) {
        igd_free(g);
        snprintf(res->err, sizeof res->err, "UPnP: the IGD gave no usable LAN address");
        return KM_ERR_INVALID;
    }
    return 0;
}

static int upnp_map(struct km_portmap *pm, struct result *res)
{
    int r = upnp_discover(pm, res);
    if (r != 0) {
        return r;
    }
    struct igd *g = &pm->igd;
    char ext_ip[64];
    memset(ext_ip, 0, sizeof ext_ip);
    int e = UPNP_GetExternalIPAddress(g->urls.controlURL, g->data.first.servicetype, ext_ip);
    if (e != UPNPCOMMAND_SUCCESS) {
        snprintf(res->err, sizeof res->err, "UPnP: GetExternalIPAddress failed (%d)", e);
        igd_free(g); /* rediscover next time: the router may have restarted */
        return KM_ERR_UNREACHABLE;
    }
    char in_port[8];
    snprintf(in_port, sizeof in_port, "%u", pm->o.port);
    char lease[16];
    snprintf(lease, sizeof lease, "%u", clamp_lease(pm->o.lease_s));
    uint16_t ext_port = pm->want_port != 0 ? pm->want_port : pm->o.port;
    char ext[8];
    for (int tries = 0; tries < UPNP_PORT_TRIES; tries++) {
        snprintf(ext, sizeof ext, "%u", ext_port);
        e = UPNP_AddPortMapping(g->urls.controlURL, g->data.first.servicetype, ext, in_port, g->lan,
                                DESCRIPTION, "TCP", NULL, lease);
        if (e == UPNP_ONLY_PERMANENT && strcmp(lease, "0") != 0) {
            snprintf(lease, sizeof lease, "0"); /* renewed all the same, and deleted on close */
            tries--;
            continue;
        }
        if (e == UPNP_CONFLICT) {
            ext_port = (uint16_t)(1024u + randombytes_uniform(65536u - 1024u));
            continue;
        }
        break;
    }
    if (e != UPNPCOMMAND_SUCCESS) {
        snprintf(res->err, sizeof res->err, "UPnP: AddPortMapping refused (%d %s)", e,
                 strupnperror(e) != NULL ? strupnperror(e) : "?");
        if (e < 0) {
            igd_free(g); /* a transport failure, not a refusal: rediscover */
        }
        return KM_ERR_REFUSED;
    }
    if (km_portmap_check_upnp(ext_ip, strnlen(ext_ip, sizeof ext_ip), ext_port, &res->ext) != 0) {
        snprintf(res->err, sizeof res->err, "UPnP: the IGD reports no usable external address");
        /* The mapping exists but is useless to announce; do not leave it behind. */
        (void)UPNP_DeletePortMapping(g->urls.controlURL, g->data.first.servicetype, ext, "TCP",
                                     NULL);
        return KM_ERR_INVALID;
    }
    res->method = KM_PORTMAP_BY_UPNP;
    res->lease_s = clamp_lease(pm->o.lease_s);
    return 0;
}

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000u;
}

/* Wait for the answer to the pending NAT-PMP request, at most timeout_ms in all (the
 * library's own retries would go on for over a minute). */
static int natpmp_wait(struct km_portmap *pm, natpmp_t *n, natpmpresp_t *resp, uint32_t timeout_ms,
                       bool cancellable)
{
    uint64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        struct timeval tv;
        int r = getnatpmprequesttimeout(n, &tv);
        uint64_t now = mono_ms();
        if (r < 0 || now >= deadline || (cancellable && atomic_load(&pm->cancel))) {
            return r < 0 ? r : NATPMP_ERR_NOGATEWAYSUPPORT;
        }
        uint64_t wait = (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
        if (wait > deadline - now) {
            wait = deadline - now;
        }
        if (wait > 100) {
            wait = 100; /* look at the cancel flag this often */
        }
        struct pollfd p = {.fd = n->s, .events = POLLIN};
        (void)poll(&p, 1, (int)wait + 1);
        r = readnatpmpresponseorretry(n, resp);
        if (r != NATPMP_TRYAGAIN) {
            return r;
        }
    }
}

static int natpmp_map(struct km_portmap *pm, struct result *res, bool delete_it)
{
    natpmp_t n;
    natpmpresp_t resp;
    memset(&resp, 0, sizeof resp);
    int r = initnatpmp(&n, 0, 0);
    if (r < 0) {
        snprintf(res->err, sizeof res->err, "NAT-PMP: no gateway to ask (%d)", r);
        return KM_ERR_NOT_FOUND;
    }
    uint32_t public_addr = 0;
    if (!delete_it) {
        if ((r = sendpublicaddressrequest(&n)) >= 0) {
            r = natpmp_wait(pm, &n, &resp, pm->o.natpmp_ms, true);
        }
        if (r < 0 || resp.type != NATPMP_RESPTYPE_PUBLICADDRESS) {
            snprintf(res->err, sizeof res->err, "NAT-PMP: no public address (%d)", r);
            closenatpmp(&n);
            return KM_ERR_UNREACHABLE;
        }
        public_addr = resp.pnu.publicaddress.addr.s_addr;
    }
    uint16_t want = pm->want_port != 0 ? pm->want_port : pm->o.port;
    /* A lifetime of 0 with public port 0 deletes the mapping (RFC 6886 section 3.4). */
    r = sendnewportmappingrequest(&n, NATPMP_PROTOCOL_TCP, pm->o.port, delete_it ? 0 : want,
                                  delete_it ? 0 : clamp_lease(pm->o.lease_s));
    if (r >= 0) {
        memset(&resp, 0, sizeof resp);
        r = natpmp_wait(pm, &n, &resp, pm->o.natpmp_ms, !delete_it);
    }
    closenatpmp(&n);
    if (r < 0 || resp.type != NATPMP_RESPTYPE_TCPPORTMAPPING) {
        snprintf(res->err, sizeof res->err, "NAT-PMP: %s refused or unanswered (%d)",
                 delete_it ? "deletion" : "mapping", r);
        return KM_ERR_REFUSED;
    }
    if (delete_it) {
        return 0;
    }
    if (resp.pnu.newportmapping.privateport != pm->o.port ||
        km_portmap_check_natpmp(public_addr, resp.pnu.newportmapping.mappedpublicport,
                                resp.pnu.newportmapping.lifetime, &res->ext, &res->lease_s) != 0) {
        snprintf(res->err, sizeof res->err, "NAT-PMP: the gateway's answer is unusable");
        return KM_ERR_INVALID;
    }
    res->method = KM_PORTMAP_BY_NATPMP;
    return 0;
}

/* Does the next mapping job try this method? A renewal goes to whoever granted the mapping;
 * otherwise the mode says. Read by the loop before queueing and by the job it queued. */
static bool uses(const struct km_portmap *pm, enum km_portmap_method method)
{
    if (pm->held_method != KM_PORTMAP_NONE) {
        return pm->held_method == method;
    }
    enum km_portmap_mode m = pm->o.mode;
    return m == KM_PORTMAP_ANY ||
           m == (method == KM_PORTMAP_BY_UPNP ? KM_PORTMAP_UPNP : KM_PORTMAP_NATPMP);
}

static void do_work(uv_work_t *w)
{
    struct km_portmap *pm = w->data;
    struct result *res = &pm->res;
    memset(res, 0, sizeof *res);
    if (pm->job == JOB_DELETE) {
        if (pm->held_method == KM_PORTMAP_BY_UPNP && pm->igd.have) {
            char ext[8];
            snprintf(ext, sizeof ext, "%u", pm->want_port);
            int e = UPNP_DeletePortMapping(pm->igd.urls.controlURL, pm->igd.data.first.servicetype,
                                           ext, "TCP", NULL);
            res->rc = e == UPNPCOMMAND_SUCCESS ? 0 : KM_ERR_REFUSED;
        } else if (pm->held_method == KM_PORTMAP_BY_NATPMP) {
            res->rc = natpmp_map(pm, res, true);
        }
        return;
    }
    bool upnp = uses(pm, KM_PORTMAP_BY_UPNP);
    bool natpmp = uses(pm, KM_PORTMAP_BY_NATPMP);
    res->rc = KM_ERR_NOT_FOUND;
    char upnp_err[ERR_LEN] = "";
    if (upnp && !atomic_load(&pm->cancel)) {
        res->rc = upnp_map(pm, res);
        snprintf(upnp_err, sizeof upnp_err, "%s", res->err);
    }
    if (res->rc != 0 && natpmp && !atomic_load(&pm->cancel)) {
        res->err[0] = '\0';
        res->rc = natpmp_map(pm, res, false);
        if (res->rc != 0 && upnp_err[0] != '\0') {
            char both[ERR_LEN];
            snprintf(both, sizeof both, "%.45s; %.45s", upnp_err, res->err);
            memcpy(res->err, both, sizeof both);
        }
    }
}

/* ---- the loop side ---- */

static void on_closed(uv_handle_t *h)
{
    struct km_portmap *pm = h->data;
    igd_free(&pm->igd);
    free(pm);
}

static void finish(struct km_portmap *pm)
{
    uv_close((uv_handle_t *)&pm->timer, on_closed);
}

static void after_work(uv_work_t *w, int status);

static int queue(struct km_portmap *pm, enum job j)
{
    pm->job = j;
    pm->work.data = pm;
    int r = uv_queue_work(pm->loop, &pm->work, do_work, after_work);
    pm->busy = r == 0;
    return r;
}

static void start_delete_or_finish(struct km_portmap *pm)
{
    if (pm->st.mapped && queue(pm, JOB_DELETE) == 0) {
        pm->st.mapped = false;
        return;
    }
    finish(pm);
}

static void on_timer(uv_timer_t *t);

static void on_searched(void *arg, const struct km_ssdp_result *res)
{
    struct km_portmap *pm = arg;
    pm->ssdp = NULL;
    pm->found = *res;
    if (queue(pm, JOB_MAP) != 0) {
        (void)uv_timer_start(&pm->timer, on_timer, KM_PORTMAP_RETRY_MIN_MS, 0);
    }
}

/* Start a mapping attempt: when it needs an IGD not yet known, an SSDP search on the loop
 * comes first (on_searched queues the job); otherwise the job is queued now. */
static int start_attempt(struct km_portmap *pm)
{
    if (uses(pm, KM_PORTMAP_BY_UPNP) && !pm->igd.have) {
        memset(&pm->found, 0, sizeof pm->found);
        int r = km_ssdp_search(pm->loop, pm->o.discover_ms, NULL, on_searched, pm, &pm->ssdp);
        if (r == 0) {
            return 0;
        }
        pm->found.send_error = r; /* the job reports it, and NAT-PMP is tried all the same */
    }
    return queue(pm, JOB_MAP);
}

static void on_timer(uv_timer_t *t)
{
    struct km_portmap *pm = t->data;
    if (!pm->busy && pm->ssdp == NULL && !pm->closing && start_attempt(pm) != 0) {
        (void)uv_timer_start(&pm->timer, on_timer, KM_PORTMAP_RETRY_MIN_MS, 0);
    }
}

static void after_work(uv_work_t *w, int status)
{
    struct km_portmap *pm = w->data;
    pm->busy = false;
    struct result *res = &pm->res;
    if (pm->closing) {
        if (pm->job == JOB_MAP && status == 0 && res->rc == 0) {
            pm->st.mapped = true; /* granted while we were closing: take it back */
            pm->held_method = res->method;
            pm->want_port = ntohs(res->ext.sin_port);
            start_delete_or_finish(pm);
            return;
        }
        if (pm->job == JOB_MAP) {
            start_delete_or_finish(pm);
            return;
        }
        finish(pm);
        return;
    }
    struct km_portmap_state old = pm->st;
    char old_err[ERR_LEN];
    memcpy(old_err, pm->err, sizeof old_err);
    pm->st.attempts++;
    uint64_t delay;
    if (status == 0 && res->rc == 0) {
        pm->n_fail = 0;
        pm->st.mapped = true;
        pm->st.method = res->method;
        pm->st.external = res->ext;
        pm->st.lease_s = res->lease_s;
        pm->held_method = res->method;
        pm->want_port = ntohs(res->ext.sin_port);
        pm->err[0] = '\0';
        delay = km_portmap_renew_ms(res->lease_s);
    } else {
        pm->st.failures++;
        /* A failed renewal loses the mapping: announce it no more, and start over (a router
         * that restarted has forgotten it anyway). */
        pm->st.mapped = false;
        pm->st.method = KM_PORTMAP_NONE;
        memset(&pm->st.external, 0, sizeof pm->st.external);
        pm->st.lease_s = 0;
        pm->held_method = KM_PORTMAP_NONE;
        snprintf(pm->err, sizeof pm->err, "%s", status != 0 ? "cancelled" : res->err);
        delay = km_portmap_retry_ms(pm->o.retry_min_ms, pm->n_fail,
                                    (uint16_t)randombytes_uniform(65536u));
        pm->n_fail++;
    }
    pm->st.renew_at_ms = uv_now(pm->loop) + delay;
    (void)uv_timer_start(&pm->timer, on_timer, delay, 0);
    bool changed = old.mapped != pm->st.mapped || old.method != pm->st.method ||
                   memcmp(&old.external, &pm->st.external, sizeof old.external) != 0 ||
                   strcmp(old_err, pm->err) != 0 || old.attempts == 0;
    if (changed && pm->cb != NULL) {
        struct km_portmap_state st;
        km_portmap_get(pm, &st);
        pm->cb(pm->arg, &st);
    }
}

int km_portmap_new(uv_loop_t *loop, const struct km_portmap_opts *o, km_portmap_cb cb, void *arg,
                   struct km_portmap **out)
{
    *out = NULL;
    if (o->mode == KM_PORTMAP_OFF || o->port == 0) {
        return KM_ERR_INVALID;
    }
    struct km_portmap *pm = calloc(1, sizeof *pm);
    if (pm == NULL) {
        return -ENOMEM;
    }
    pm->loop = loop;
    pm->o = *o;
    if (pm->o.discover_ms == 0) {
        pm->o.discover_ms = 1500;
    }
    if (pm->o.natpmp_ms == 0) {
        pm->o.natpmp_ms = 2000;
    }
    pm->cb = cb;
    pm->arg = arg;
    int r = uv_timer_init(loop, &pm->timer);
    if (r != 0) {
        free(pm);
        return r;
    }
    pm->timer.data = pm;
    if ((r = start_attempt(pm)) != 0) {
        pm->closing = true;
        finish(pm);
        return r;
    }
    *out = pm;
    return 0;
}

void km_portmap_get(const struct km_portmap *pm, struct km_portmap_state *st)
{
    *st = pm->st;
    st->error = pm->err;
}

void km_portmap_close(struct km_portmap *pm)
{
    if (pm == NULL || pm->closing) {
        return;
    }
    pm->closing = true;
    atomic_store(&pm->cancel, true); /* the deletion below is not affected: see do_work */
    pm->cb = NULL;
    (void)uv_timer_stop(&pm->timer);
    if (pm->ssdp != NULL) {
        km_ssdp_cancel(pm->ssdp); /* at once: nothing runs on a thread yet */
        pm->ssdp = NULL;
    }
    if (pm->busy) {
        /* A job not yet started is cancelled (after_work gets UV_ECANCELED); a running one
         * finishes, and after_work deletes what it made. */
        (void)uv_cancel((uv_req_t *)&pm->work);
        return;
    }
    start_delete_or_finish(pm);
}
