/* RFC 2136 UPDATE with TSIG (RFC 8945): the message builder and response checker (pure), and
 * the publisher on libuv (discovery/dnsupdate.h, docs/DNS-UPDATE.md).
 *
 * The record builders of discovery/dns_answer.c are static, so the same shapes (AAAA = VIP,
 * TXT "v=keymesh1 k=...", SVCB with port, ipv4hint/ipv6hint and key65280 = kind) are built
 * here again; docs/DNS.md is the reference for both. */
#include "discovery/dnsupdate.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ldns/ldns.h>
#include <sodium.h>

#include "discovery/dns_rr.h"
#include "identity/derive.h"

#define TSIG_FUDGE 300 /* seconds, RFC 8945 section 10 recommends 300 */
#define MSG_MAX 65535
#define HDR_LEN 12
#define RANK_INPUT_MAX 64 /* paths considered by km_dnsupdate_set_paths */

/* TSIG error values (RFC 8945 section 5.3). */
#define TSIG_BADSIG 16
#define TSIG_BADKEY 17
#define TSIG_BADTIME 18

static const char *const result_names[KM_DNSUPDATE_RESULT_N] = {
    "ok",    "notauth",      "refused",  "badsig",    "badkey",  "badtime",
    "rcode", "bad-response", "wrong-id", "truncated", "timeout", "network",
};

const char *km_dnsupdate_result_name(enum km_dnsupdate_result r)
{
    if ((unsigned)r >= KM_DNSUPDATE_RESULT_N) {
        return "?";
    }
    return result_names[r];
}

void km_dnsupdate_opts_default(struct km_dnsupdate_opts *o)
{
    memset(o, 0, sizeof *o);
    memcpy(o->zone, KM_DEFAULT_SUFFIX, sizeof KM_DEFAULT_SUFFIX);
    o->prefix = KM_DEFAULT_PREFIX;
    memcpy(o->tsig_algorithm, "hmac-sha256", sizeof "hmac-sha256");
    o->ttl = 60;
    o->timeout_ms = 2000;
    o->retries = 3;
    o->backoff_ms = 500;
}

/* ---- building ---- */

static bool str_bounded(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL && s[0] != '\0';
}

/* The TSIG parameters as ldns wants them: names with a trailing dot. */
struct tsig_args {
    char name[256];
    char alg[40];
};

static int tsig_args(const struct km_dnsupdate_opts *o, struct tsig_args *t)
{
    if (!str_bounded(o->tsig_name, sizeof o->tsig_name) ||
        !str_bounded(o->tsig_algorithm, sizeof o->tsig_algorithm) ||
        !str_bounded(o->tsig_secret, sizeof o->tsig_secret)) {
        return KM_ERR_INVALID;
    }
    size_t nl = strlen(o->tsig_name), al = strlen(o->tsig_algorithm);
    memcpy(t->name, o->tsig_name, nl + 1);
    if (t->name[nl - 1] != '.') {
        t->name[nl] = '.';
        t->name[nl + 1] = '\0';
    }
    memcpy(t->alg, o->tsig_algorithm, al + 1);
    if (t->alg[al - 1] != '.') {
        t->alg[al] = '.';
        t->alg[al + 1] = '\0';
    }
    /* Only the algorithms ldns signs with (RFC 8945 section 6). Checked here because
     * ldns_pkt_tsig_sign leaks its half-built TSIG record when it fails on an unknown one. */
    static const char *const algs[] = {"hmac-md5.sig-alg.reg.int.",
                                       "hmac-sha1.",
                                       "hmac-sha224.",
                                       "hmac-sha256.",
                                       "hmac-sha384.",
                                       "hmac-sha512."};
    bool known = false;
    for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
        known = known || strcasecmp(t->alg, algs[i]) == 0;
    }
    if (!known) {
        return KM_ERR_INVALID;
    }
    /* The secret must be base64 (ldns would otherwise sign with garbage). */
    uint8_t bin[128];
    size_t bin_len = 0;
    int bad = sodium_base642bin(bin, sizeof bin, o->tsig_secret, strlen(o->tsig_secret), NULL,
                                &bin_len, NULL, sodium_base64_VARIANT_ORIGINAL);
    sodium_memzero(bin, sizeof bin);
    return bad != 0 || bin_len == 0 ? KM_ERR_INVALID : 0;
}

/* A new RR at a clone of owner with rdfs (taken, n of them, any NULL means failure), pushed on
 * list. 0 or -ENOMEM; everything is freed on failure. */
static int push_rr(ldns_rr_list *list, const ldns_rdf *owner, ldns_rr_type type, ldns_rr_class cls,
                   uint32_t ttl, ldns_rdf **rdfs, size_t n)
{
    ldns_rr *rr;
    int e = km_dns_rr_new(ldns_rdf_clone(owner), type, cls, ttl, rdfs, n, &rr);
    if (e != 0) {
        return e;
    }
    if (!ldns_rr_list_push_rr(list, rr)) {
        ldns_rr_free(rr);
        return -ENOMEM;
    }
    return 0;
}

/* "<id>.<zone>." */
static ldns_rdf *fqdn_rdf(const struct km_pubkey *k, const char *zone)
{
    char name[KM_FQDN_MAX + 2];
    if (km_fqdn(k, zone, name, sizeof name - 1) != 0) {
        return NULL;
    }
    size_t l = strlen(name);
    if (l == 0 || name[l - 1] != '.') {
        name[l] = '.';
        name[l + 1] = '\0';
    }
    return ldns_dname_new_frm_str(name);
}

/* The additions: AAAA, TXT, and the ranked SVCB records. */
static int add_records(const struct km_dnsupdate_opts *o, const struct km_pubkey *key,
                       const ldns_rdf *owner, const struct km_path *paths, size_t n,
                       ldns_rr_list *up)
{
    uint8_t vip[16];
    km_vip(key, o->prefix, vip);
    ldns_rdf *aaaa[1] = {ldns_rdf_new_frm_data(LDNS_RDF_TYPE_AAAA, sizeof vip, vip)};
    int r = push_rr(up, owner, LDNS_RR_TYPE_AAAA, LDNS_RR_CLASS_IN, o->ttl, aaaa, 1);
    if (r != 0) {
        return r;
    }
    char txt[KM_DNS_TXT_SIZE];
    km_dns_txt_key(key, txt);
    ldns_rdf *t[1] = {km_dns_str_rdf(txt, strlen(txt))};
    if ((r = push_rr(up, owner, LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_IN, o->ttl, t, 1)) != 0) {
        return r;
    }
    size_t order[KM_DNSUPDATE_MAX_PATHS];
    if (n > KM_DNSUPDATE_MAX_PATHS) {
        n = KM_DNSUPDATE_MAX_PATHS;
    }
    /* Public resolvers answer everyone: rank as for a requester that shares nothing. */
    size_t m = km_path_rank(paths, n, KM_REQ_OTHER, order);
    uint16_t prio = 0;
    for (size_t i = 0; i < m && i < n; i++) {
        if (order[i] >= n) {
            continue;
        }
        const struct km_path *p = &paths[order[i]];
        if (p->kind == KM_PATH_RELAY && !p->has_via) {
            continue; /* a relay without its gateway cannot be named */
        }
        uint8_t pbuf[64];
        struct km_buf w;
        km_buf_init_fixed(&w, pbuf, sizeof pbuf);
        if (km_path_svc_params(p, &w) != 0) {
            continue;
        }
        static const uint8_t root[1] = {0};
        ldns_rdf *rd[3] = {
            ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, ++prio),
            p->kind == KM_PATH_RELAY ? fqdn_rdf(&p->via, o->zone)
                                     : ldns_dname_new_frm_data(sizeof root, root),
            ldns_rdf_new_frm_data(LDNS_RDF_TYPE_SVCPARAMS, km_buf_len(&w), km_buf_peek_ptr(&w)),
        };
        if ((r = push_rr(up, owner, LDNS_RR_TYPE_SVCB, LDNS_RR_CLASS_IN, o->ttl, rd, 3)) != 0) {
            return r;
        }
    }
    return 0;
}

int km_dnsupdate_build(const struct km_dnsupdate_opts *o, const struct km_pubkey *key,
                       const struct km_path *paths, size_t n, bool remove, uint16_t id,
                       struct km_buf *out, struct km_dnsupdate_req *req)
{
    struct tsig_args t;
    ldns_rr_list *pr = NULL, *up = NULL;
    ldns_rdf *owner = NULL, *zone = NULL, *apex = NULL;
    ldns_pkt *p = NULL;
    uint8_t *wire = NULL;
    size_t wl = 0;
    int rc;
    memset(req, 0, sizeof *req);
    if (o == NULL || key == NULL || (n > 0 && paths == NULL) ||
        !str_bounded(o->zone, sizeof o->zone) || km_suffix_check(o->zone) != 0 ||
        tsig_args(o, &t) != 0) {
        return KM_ERR_INVALID;
    }
    char zname[sizeof o->zone + 1];
    size_t zl = strlen(o->zone);
    memcpy(zname, o->zone, zl);
    zname[zl] = '.';
    zname[zl + 1] = '\0';
    rc = -ENOMEM;
    if ((owner = fqdn_rdf(key, o->zone)) == NULL ||
        (zone = ldns_dname_new_frm_str(zname)) == NULL ||
        (apex = ldns_dname_new_frm_str(zname)) == NULL || (pr = ldns_rr_list_new()) == NULL ||
        (up = ldns_rr_list_new()) == NULL) {
        goto out;
    }
    /* Prerequisite: the zone's SOA RRset exists (RFC 2136 section 2.4.1, class ANY, TTL 0, no
     * RDATA), so an UPDATE sent to a server that lost the zone fails loudly. */
    if ((rc = push_rr(pr, apex, LDNS_RR_TYPE_SOA, LDNS_RR_CLASS_ANY, 0, NULL, 0)) != 0) {
        goto out;
    }
    /* Delete our RRsets (RFC 2136 section 2.5.2: class ANY, TTL 0, no RDATA); then add. */
    static const ldns_rr_type ours[] = {LDNS_RR_TYPE_AAAA, LDNS_RR_TYPE_TXT, LDNS_RR_TYPE_SVCB};
    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++) {
        if ((rc = push_rr(up, owner, ours[i], LDNS_RR_CLASS_ANY, 0, NULL, 0)) != 0) {
            goto out;
        }
    }
    if (!remove && (rc = add_records(o, key, owner, paths, n, up)) != 0) {
        goto out;
    }
    p = ldns_update_pkt_new(zone, LDNS_RR_CLASS_IN, pr, up, NULL);
    zone = NULL; /* taken by ldns_update_pkt_new, even on failure */
    if (p == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    ldns_pkt_set_id(p, id);
    ldns_pkt_set_rd(p, false); /* the header bit is Z in UPDATE (RFC 2136 section 2.2) */
    if (ldns_pkt_tsig_sign(p, t.name, o->tsig_secret, TSIG_FUDGE, t.alg, NULL) != LDNS_STATUS_OK) {
        rc = KM_ERR_INVALID; /* unknown algorithm */
        goto out;
    }
    const ldns_rr *ts = ldns_pkt_tsig(p);
    const ldns_rdf *mac = ts != NULL ? ldns_rr_rdf(ts, 3) : NULL;
    if (mac == NULL || ldns_rdf_size(mac) > sizeof req->mac) {
        rc = KM_ERR_INVALID;
        goto out;
    }
    if (ldns_pkt2wire(&wire, p, &wl) != LDNS_STATUS_OK || wire == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if (wl > MSG_MAX) {
        rc = KM_ERR_TOO_LARGE;
        goto out;
    }
    if ((rc = km_buf_put_bytes(out, wire, wl)) != 0) {
        goto out;
    }
    req->id = id;
    req->mac_len = ldns_rdf_size(mac);
    memcpy(req->mac, ldns_rdf_data(mac), req->mac_len);
    rc = 0;
out:
    free(wire);
    ldns_pkt_free(p);
    ldns_rr_list_deep_free(pr);
    ldns_rr_list_deep_free(up);
    ldns_rdf_deep_free(owner);
    ldns_rdf_deep_free(zone);
    ldns_rdf_deep_free(apex);
    sodium_memzero(&t, sizeof t);
    return rc;
}

/* ---- checking ---- */

enum km_dnsupdate_result km_dnsupdate_check(const struct km_dnsupdate_opts *o,
                                            const struct km_dnsupdate_req *req, const uint8_t *msg,
                                            size_t len)
{
    struct tsig_args t;
    ldns_pkt *p = NULL;
    ldns_rdf *mac = NULL;
    enum km_dnsupdate_result res = KM_DNSUPDATE_BAD_RESPONSE;
    uint16_t id = 0, flags = 0;
    struct km_buf b;
    if (o == NULL || req == NULL || msg == NULL || tsig_args(o, &t) != 0) {
        return KM_DNSUPDATE_BAD_RESPONSE;
    }
    /* ID, flags (RFC 1035 section 4.1.1), read before ldns sees anything. */
    km_buf_init_view(&b, msg, len);
    if (len < HDR_LEN || km_buf_get_u16(&b, &id) != 0 || km_buf_get_u16(&b, &flags) != 0) {
        goto out;
    }
    if (id != req->id) {
        res = KM_DNSUPDATE_WRONG_ID;
        goto out;
    }
    if ((flags & 0x8000u) == 0 || ((flags >> 11) & 0xfu) != LDNS_PACKET_UPDATE) {
        goto out; /* not a response, or not to an UPDATE */
    }
    if ((flags & 0x0200u) != 0) {
        res = KM_DNSUPDATE_TRUNCATED;
        goto out;
    }
    if (ldns_wire2pkt(&p, msg, len) != LDNS_STATUS_OK || p == NULL) {
        goto out;
    }
    const ldns_rr *ts = ldns_pkt_tsig(p);
    if (ts == NULL || ldns_rr_rd_count(ts) < 6) {
        goto out; /* unsigned: anyone on the path could have sent it */
    }
    const ldns_rdf *err = ldns_rr_rdf(ts, 5);
    uint16_t terr = err != NULL && ldns_rdf_size(err) == 2 ? ldns_rdf2native_int16(err) : 0;
    if (terr != 0) {
        /* RFC 8945 section 5.3.2: the server could not check our MAC, so its reply carries
         * the error and no MAC. It cannot be verified; it only ends this transaction. */
        res = terr == TSIG_BADSIG    ? KM_DNSUPDATE_BADSIG
              : terr == TSIG_BADKEY  ? KM_DNSUPDATE_BADKEY
              : terr == TSIG_BADTIME ? KM_DNSUPDATE_BADTIME
                                     : KM_DNSUPDATE_BAD_RESPONSE;
        goto out;
    }
    mac = ldns_rdf_new_frm_data(LDNS_RDF_TYPE_INT16_DATA, req->mac_len, req->mac);
    if (mac == NULL || !ldns_pkt_tsig_verify(p, msg, len, t.name, o->tsig_secret, mac)) {
        goto out;
    }
    switch (ldns_pkt_get_rcode(p)) {
    case LDNS_RCODE_NOERROR:
        res = KM_DNSUPDATE_OK;
        break;
    case LDNS_RCODE_NOTAUTH:
        res = KM_DNSUPDATE_NOTAUTH;
        break;
    case LDNS_RCODE_REFUSED:
        res = KM_DNSUPDATE_REFUSED;
        break;
    default:
        res = KM_DNSUPDATE_RCODE;
        break;
    }
out:
    ldns_rdf_deep_free(mac);
    ldns_pkt_free(p);
    sodium_memzero(&t, sizeof t);
    return res;
}

/* ---- the publisher ---- */

struct tcp_tx {
    uv_tcp_t h;
    uv_connect_t conn;
    uv_write_t w;
    struct km_dnsupdate *u;
    bool dead; /* abandoned: callbacks return at once, the close callback frees */
    size_t in_len;
    uint8_t out[2 + MSG_MAX];
    uint8_t in[2 + MSG_MAX];
};

struct udp_send {
    uv_udp_send_t req;
    struct km_dnsupdate *u;
    uint8_t msg[];
};

struct km_dnsupdate {
    uv_loop_t *loop;
    struct km_dnsupdate_opts o;
    struct km_pubkey key;
    km_dnsupdate_cb cb;
    void *arg;
    km_dnsupdate_cb done;
    void *done_arg;
    uv_udp_t udp;
    uv_timer_t timeout; /* the attempt in flight */
    uv_timer_t next;    /* a retry's backoff, or the next refresh */
    unsigned pending_closes;
    bool closing;
    bool removing;
    bool busy;  /* a transaction is in progress (sending, waiting or backing off) */
    bool dirty; /* the paths changed during it: publish again when it ends */
    bool tcp;   /* this transaction uses TCP */
    unsigned attempt;
    struct km_path paths[KM_DNSUPDATE_MAX_PATHS];
    size_t n_paths;
    struct km_dnsupdate_req req;
    size_t msg_len;
    uint8_t msg[MSG_MAX];
    struct tcp_tx *tx;
    struct km_dnsupdate_stats stats;
    uint8_t rbuf[MSG_MAX];
};

static void send_attempt(struct km_dnsupdate *u);
static void start_tx(struct km_dnsupdate *u);

static void maybe_free(struct km_dnsupdate *u)
{
    if (u->closing && u->pending_closes == 0) {
        sodium_memzero(&u->o, sizeof u->o);
        free(u);
    }
}

static void handle_closed(uv_handle_t *h)
{
    struct km_dnsupdate *u = h->data;
    u->pending_closes--;
    maybe_free(u);
}

static void tx_closed(uv_handle_t *h)
{
    struct tcp_tx *tx = h->data;
    struct km_dnsupdate *u = tx->u;
    free(tx);
    u->pending_closes--;
    maybe_free(u);
}

static void tx_abort(struct km_dnsupdate *u)
{
    if (u->tx != NULL) {
        u->tx->dead = true;
        uv_close((uv_handle_t *)&u->tx->h, tx_closed);
        u->tx = NULL;
    }
}

static bool retryable(enum km_dnsupdate_result r)
{
    return r == KM_DNSUPDATE_TIMEOUT || r == KM_DNSUPDATE_NETWORK || r == KM_DNSUPDATE_RCODE ||
           r == KM_DNSUPDATE_BADTIME || r == KM_DNSUPDATE_BAD_RESPONSE ||
           r == KM_DNSUPDATE_WRONG_ID;
}

static uint64_t refresh_ms(const struct km_dnsupdate *u)
{
    if (u->o.refresh_ms != 0) {
        return u->o.refresh_ms;
    }
    uint64_t ms = (uint64_t)u->o.ttl * 1000u / 2u;
    return ms < 1000 ? 1000 : ms;
}

static void finish(struct km_dnsupdate *u, enum km_dnsupdate_result r)
{
    u->busy = false;
    u->stats.last = r;
    if (r == KM_DNSUPDATE_OK) {
        u->stats.ok++;
    } else {
        u->stats.failed++;
    }
    if (u->removing) {
        km_dnsupdate_cb done = u->done;
        u->done = NULL;
        if (done != NULL) {
            done(u->done_arg, r);
        }
        return; /* nothing more is sent */
    }
    if (u->cb != NULL) {
        u->cb(u->arg, r);
    }
    if (u->closing || u->removing || u->busy) {
        return; /* the callback closed, removed or republished */
    }
    if (u->dirty) {
        u->dirty = false;
        start_tx(u);
        return;
    }
    /* attempt_done schedules the refresh: before the TTL runs out, also after a failure, so
     * the records come back. */
}

static void next_fired(uv_timer_t *t)
{
    struct km_dnsupdate *u = t->data;
    if (u->closing) {
        return;
    }
    if (u->busy) {
        send_attempt(u); /* a retry after its backoff */
    } else {
        start_tx(u); /* the periodic refresh */
    }
}

static void schedule_refresh(struct km_dnsupdate *u)
{
    (void)uv_timer_start(&u->next, next_fired, refresh_ms(u), 0);
}

static void attempt_done(struct km_dnsupdate *u, enum km_dnsupdate_result r)
{
    uv_timer_stop(&u->timeout);
    tx_abort(u);
    if (r == KM_DNSUPDATE_TRUNCATED && !u->tcp) {
        u->tcp = true; /* RFC 2136 section 6.2 style fallback: the same UPDATE over TCP */
        send_attempt(u);
        return;
    }
    if (retryable(r) && u->attempt < u->o.retries) {
        uint64_t backoff = (uint64_t)u->o.backoff_ms << (u->attempt < 16 ? u->attempt : 16);
        u->attempt++;
        (void)uv_timer_start(&u->next, next_fired, backoff, 0);
        return;
    }
    finish(u, r);
    if (!u->closing && !u->removing && !u->busy) {
        schedule_refresh(u);
    }
}

static void timed_out(uv_timer_t *t)
{
    struct km_dnsupdate *u = t->data;
    if (!u->closing && u->busy) {
        attempt_done(u, KM_DNSUPDATE_TIMEOUT);
    }
}

/* ---- UDP ---- */

static void udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct km_dnsupdate *u = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)u->rbuf, sizeof u->rbuf);
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr *b)
{
    if (b == NULL || a->ss_family != b->sa_family) {
        return false;
    }
    if (b->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
    const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

static void udp_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
                     unsigned flags)
{
    struct km_dnsupdate *u = h->data;
    (void)buf;
    if (u->closing || !u->busy || u->tcp || nread <= 0 || (flags & UV_UDP_PARTIAL) != 0 ||
        !same_addr(&u->o.server, from) || !uv_is_active((uv_handle_t *)&u->timeout)) {
        return;
    }
    enum km_dnsupdate_result r = km_dnsupdate_check(&u->o, &u->req, u->rbuf, (size_t)nread);
    if (r == KM_DNSUPDATE_WRONG_ID || r == KM_DNSUPDATE_BAD_RESPONSE) {
        return; /* a stray or forged datagram: keep waiting for the real answer */
    }
    attempt_done(u, r);
}

static void udp_sent(uv_udp_send_t *req, int status)
{
    struct udp_send *s = (struct udp_send *)req;
    struct km_dnsupdate *u = s->u;
    free(s);
    if (status < 0 && !u->closing && u->busy && !u->tcp) {
        attempt_done(u, KM_DNSUPDATE_NETWORK);
    }
}

/* ---- TCP (RFC 1035 section 4.2.2: a two-byte length before each message) ---- */

static void tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct tcp_tx *tx = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)tx->in + tx->in_len, (unsigned)(sizeof tx->in - tx->in_len));
}

static void tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct tcp_tx *tx = s->data;
    (void)buf;
    if (tx->dead || nread == 0) {
        return;
    }
    struct km_dnsupdate *u = tx->u;
    if (nread < 0) {
        attempt_done(u, KM_DNSUPDATE_NETWORK);
        return;
    }
    tx->in_len += (size_t)nread;
    if (tx->in_len < 2) {
        return;
    }
    size_t need = ((size_t)tx->in[0] << 8 | tx->in[1]);
    if (tx->in_len < 2 + need) {
        return;
    }
    attempt_done(u, km_dnsupdate_check(&u->o, &u->req, tx->in + 2, need));
}

static void tcp_written(uv_write_t *w, int status)
{
    struct tcp_tx *tx = w->data;
    if (!tx->dead && status < 0) {
        attempt_done(tx->u, KM_DNSUPDATE_NETWORK);
    }
}

static void tcp_connected(uv_connect_t *c, int status)
{
    struct tcp_tx *tx = c->data;
    if (tx->dead) {
        return;
    }
    if (status < 0) {
        attempt_done(tx->u, KM_DNSUPDATE_NETWORK);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)tx->out, (unsigned)(2 + tx->u->msg_len));
    tx->w.data = tx;
    if (uv_write(&tx->w, (uv_stream_t *)&tx->h, &b, 1, tcp_written) != 0 ||
        uv_read_start((uv_stream_t *)&tx->h, tcp_alloc, tcp_read) != 0) {
        attempt_done(tx->u, KM_DNSUPDATE_NETWORK);
    }
}

static int tcp_send(struct km_dnsupdate *u)
{
    struct tcp_tx *tx = calloc(1, sizeof *tx);
    if (tx == NULL) {
        return -ENOMEM;
    }
    tx->u = u;
    tx->out[0] = (uint8_t)(u->msg_len >> 8);
    tx->out[1] = (uint8_t)u->msg_len;
    memcpy(tx->out + 2, u->msg, u->msg_len);
    int r = uv_tcp_init(u->loop, &tx->h);
    if (r != 0) {
        free(tx);
        return r;
    }
    tx->h.data = tx;
    tx->conn.data = tx;
    u->pending_closes++;
    u->tx = tx;
    if ((r = uv_tcp_connect(&tx->conn, &tx->h, (const struct sockaddr *)&u->o.server,
                            tcp_connected)) != 0) {
        tx_abort(u);
        return r;
    }
    return 0;
}

/* ---- transactions ---- */

static void send_attempt(struct km_dnsupdate *u)
{
    struct km_buf out;
    km_buf_init_fixed(&out, u->msg, sizeof u->msg);
    /* A fresh ID and TSIG time for every attempt (RFC 8945 section 5.2.3: the time must be
     * within the fudge when the server sees it). */
    uint16_t id = (uint16_t)randombytes_uniform(65536);
    int r =
        km_dnsupdate_build(&u->o, &u->key, u->paths, u->n_paths, u->removing, id, &out, &u->req);
    if (r != 0) {
        attempt_done(u, KM_DNSUPDATE_NETWORK);
        return;
    }
    u->msg_len = km_buf_len(&out);
    u->stats.sent++;
    (void)uv_timer_start(&u->timeout, timed_out, u->o.timeout_ms, 0);
    if (u->tcp) {
        if (tcp_send(u) != 0) {
            attempt_done(u, KM_DNSUPDATE_NETWORK);
        }
        return;
    }
    struct udp_send *s = malloc(sizeof *s + u->msg_len);
    if (s == NULL) {
        attempt_done(u, KM_DNSUPDATE_NETWORK);
        return;
    }
    s->u = u;
    memcpy(s->msg, u->msg, u->msg_len);
    uv_buf_t b = uv_buf_init((char *)s->msg, (unsigned)u->msg_len);
    if (uv_udp_send(&s->req, &u->udp, &b, 1, (const struct sockaddr *)&u->o.server, udp_sent) !=
        0) {
        free(s);
        attempt_done(u, KM_DNSUPDATE_NETWORK);
    }
}

static void start_tx(struct km_dnsupdate *u)
{
    uv_timer_stop(&u->next);
    u->busy = true;
    u->attempt = 0;
    u->tcp = u->o.tcp;
    send_attempt(u);
}

int km_dnsupdate_new(uv_loop_t *loop, const struct km_dnsupdate_opts *o,
                     const struct km_pubkey *key, km_dnsupdate_cb cb, void *arg,
                     struct km_dnsupdate **out)
{
    *out = NULL;
    if (loop == NULL || o == NULL || key == NULL ||
        (o->server.ss_family != AF_INET && o->server.ss_family != AF_INET6) ||
        !str_bounded(o->zone, sizeof o->zone) || km_suffix_check(o->zone) != 0) {
        return KM_ERR_INVALID;
    }
    struct tsig_args t;
    int r = tsig_args(o, &t);
    sodium_memzero(&t, sizeof t);
    if (r != 0) {
        return r;
    }
    struct km_dnsupdate *u = calloc(1, sizeof *u);
    if (u == NULL) {
        return -ENOMEM;
    }
    u->loop = loop;
    u->o = *o;
    u->key = *key;
    u->cb = cb;
    u->arg = arg;
    if ((r = uv_udp_init(loop, &u->udp)) != 0) {
        free(u);
        return r;
    }
    u->udp.data = u;
    (void)uv_timer_init(loop, &u->timeout);
    (void)uv_timer_init(loop, &u->next);
    u->timeout.data = u;
    u->next.data = u;
    struct sockaddr_storage any;
    memset(&any, 0, sizeof any);
    any.ss_family = o->server.ss_family; /* the wildcard address, an ephemeral port */
    if ((r = uv_udp_bind(&u->udp, (const struct sockaddr *)&any, 0)) != 0 ||
        (r = uv_udp_recv_start(&u->udp, udp_alloc, udp_recv)) != 0) {
        km_dnsupdate_close(u);
        return r;
    }
    *out = u;
    return 0;
}

int km_dnsupdate_set_paths(struct km_dnsupdate *u, const struct km_path *paths, size_t n)
{
    if (u->closing || u->removing || (n > 0 && paths == NULL)) {
        return KM_ERR_INVALID;
    }
    /* Keep the ones that will be published, best first, so the cap drops the worst. */
    size_t order[RANK_INPUT_MAX];
    size_t m = n > RANK_INPUT_MAX ? RANK_INPUT_MAX : n;
    size_t k = m > 0 ? km_path_rank(paths, m, KM_REQ_OTHER, order) : 0;
    u->n_paths = 0;
    for (size_t i = 0; i < k && u->n_paths < KM_DNSUPDATE_MAX_PATHS; i++) {
        if (order[i] < m) {
            u->paths[u->n_paths++] = paths[order[i]];
        }
    }
    if (u->busy) {
        u->dirty = true;
    } else {
        start_tx(u);
    }
    return 0;
}

void km_dnsupdate_remove(struct km_dnsupdate *u, km_dnsupdate_cb done, void *arg)
{
    if (u == NULL || u->closing || u->removing) {
        return;
    }
    u->removing = true;
    u->done = done;
    u->done_arg = arg;
    uv_timer_stop(&u->timeout);
    tx_abort(u);
    u->dirty = false;
    start_tx(u);
}

void km_dnsupdate_stats(const struct km_dnsupdate *u, struct km_dnsupdate_stats *out)
{
    *out = u->stats;
}

void km_dnsupdate_close(struct km_dnsupdate *u)
{
    if (u == NULL || u->closing) {
        return;
    }
    u->closing = true;
    tx_abort(u);
    uv_close((uv_handle_t *)&u->udp, handle_closed);
    uv_close((uv_handle_t *)&u->timeout, handle_closed);
    uv_close((uv_handle_t *)&u->next, handle_closed);
    u->pending_closes += 3;
}
