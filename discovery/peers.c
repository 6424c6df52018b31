/* The peer table (DESIGN.md section 6). A flat array of heap entries searched linearly:
 * at most KM_PEERS_KEYS_MAX keys, and a lookup is a few microseconds at that size, far below
 * the cost of the DNS query or dial that triggers it. Each entry keeps three fixed groups of
 * paths (configured, announced, learned) so that no source can crowd out another. */
#include "discovery/peers.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

struct slot {
    struct km_path path;
    uint64_t last_ok_ms;   /* 0 = never reported working */
    uint64_t last_fail_ms; /* 0 = never reported failing */
};

struct peer {
    struct km_pubkey key;
    bool configured; /* km_peers_set_config was called: never swept */
    struct slot cfg[KM_PEERS_PATHS_MAX];
    struct slot ann[KM_PEERS_PATHS_MAX];
    struct slot lrn[KM_PEERS_PATHS_MAX];
    size_t n_cfg, n_ann, n_lrn;
    bool has_seq; /* an announcement was accepted: seq and expires are set */
    uint64_t seq;
    uint64_t expires_unix;
    uint64_t hold_until_ms; /* keep the key (and its seq) at least until then */
    bool has_ok;
    struct sockaddr_storage ok_addr;
};

struct km_peers {
    struct peer **v;
    size_t n, max;
    struct km_peers_stats st;
};

struct km_peers *km_peers_new(size_t max_keys)
{
    if (max_keys == 0 || max_keys > KM_PEERS_KEYS_MAX) {
        max_keys = KM_PEERS_KEYS_MAX;
    }
    struct km_peers *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return NULL;
    }
    p->v = calloc(max_keys, sizeof *p->v);
    if (p->v == NULL) {
        free(p);
        return NULL;
    }
    p->max = max_keys;
    return p;
}

void km_peers_free(struct km_peers *p)
{
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i]);
    }
    free(p->v);
    free(p);
}

static bool family_ok(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET || ss->ss_family == AF_INET6;
}

/* Same family, address, port and (IPv6) scope. b may be any sockaddr the caller holds, so
 * only the fields of its family are read. */
static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr *b)
{
    if (a->ss_family != b->sa_family) {
        return false;
    }
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)(const void *)b;
        return x->sin_port == y->sin_port &&
               memcmp(&x->sin_addr, &y->sin_addr, sizeof x->sin_addr) == 0;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)(const void *)b;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return false;
}

static const struct sockaddr *sa(const struct sockaddr_storage *ss)
{
    return (const struct sockaddr *)ss;
}

static bool expired(const struct km_path *path, uint64_t now_ms)
{
    return path->expires_ms != 0 && path->expires_ms <= now_ms;
}

static struct peer *find(const struct km_peers *p, const struct km_pubkey *key)
{
    /* Scan every entry with the constant-time compare (STYLE.md 7); keys are public, but
     * this keeps the table's lookup time independent of which key is asked for. */
    struct peer *found = NULL;
    for (size_t i = 0; i < p->n; i++) {
        if (km_pubkey_equal(&p->v[i]->key, key) && found == NULL) {
            found = p->v[i];
        }
    }
    return found;
}

/* Find key or add it; *out is NULL on failure. KM_ERR_TOO_LARGE at the limit. */
static int find_or_add(struct km_peers *p, const struct km_pubkey *key, struct peer **out)
{
    *out = find(p, key);
    if (*out != NULL) {
        return 0;
    }
    if (p->n >= p->max) {
        p->st.refused++;
        return KM_ERR_TOO_LARGE;
    }
    struct peer *e = calloc(1, sizeof *e);
    if (e == NULL) {
        return -ENOMEM;
    }
    e->key = *key;
    p->v[p->n++] = e;
    *out = e;
    return 0;
}

/* Carry the working/failing history of an address over when a group is replaced. */
static void carry_status(struct slot *to, const struct slot *from, size_t n_from)
{
    for (size_t i = 0; i < n_from; i++) {
        if (same_addr(&from[i].path.addr, sa(&to->path.addr))) {
            to->last_ok_ms = from[i].last_ok_ms;
            to->last_fail_ms = from[i].last_fail_ms;
            return;
        }
    }
}

/* Replace group[0..*n) by paths[0..m) with the given source and expiry, keeping the history
 * of addresses present before. */
static void replace_group(struct slot *group, size_t *n, const struct km_path *paths, size_t m,
                          enum km_path_source src, uint64_t expires_ms)
{
    struct slot old[KM_PEERS_PATHS_MAX];
    size_t n_old = *n;
    memcpy(old, group, n_old * sizeof old[0]);
    for (size_t i = 0; i < m; i++) {
        memset(&group[i], 0, sizeof group[i]);
        group[i].path = paths[i];
        group[i].path.source = src;
        group[i].path.expires_ms = expires_ms;
        if (group[i].path.kind != KM_PATH_RELAY) {
            group[i].path.has_via = false;
            memset(&group[i].path.via, 0, sizeof group[i].path.via);
        }
        carry_status(&group[i], old, n_old);
    }
    *n = m;
}

int km_peers_set_config(struct km_peers *p, const struct km_pubkey *key,
                        const struct km_path *paths, size_t n)
{
    if (p == NULL || key == NULL || (paths == NULL && n > 0)) {
        return KM_ERR_INVALID;
    }
    if (n > KM_PEERS_PATHS_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    for (size_t i = 0; i < n; i++) {
        if (!family_ok(&paths[i].addr)) {
            return KM_ERR_INVALID;
        }
    }
    struct peer *e = NULL;
    int r;
    if ((r = find_or_add(p, key, &e)) != 0) {
        return r;
    }
    replace_group(e->cfg, &e->n_cfg, paths, n, KM_PATH_SRC_CONFIG, 0);
    e->configured = true;
    return 0;
}

void km_peers_clear_config(struct km_peers *p)
{
    for (size_t i = 0; p != NULL && i < p->n; i++) {
        struct peer *e = p->v[i];
        memset(e->cfg, 0, sizeof e->cfg);
        e->n_cfg = 0;
        e->configured = false;
    }
}

int km_peers_accept(struct km_peers *p, const struct km_announce *a, enum km_path_source src,
                    uint64_t now_unix, uint64_t now_ms)
{
    if (p == NULL || a == NULL || a->n_paths > KM_ANNOUNCE_PATHS_MAX) {
        return KM_ERR_INVALID;
    }
    for (size_t i = 0; i < a->n_paths; i++) {
        if (!family_ok(&a->paths[i].addr)) {
            return KM_ERR_INVALID;
        }
    }
    /* km_announce_parse checked the expiry against its own clock; check again against ours,
     * since a record may be held between the two. */
    if (a->expires <= now_unix) {
        p->st.expired++;
        return KM_ANNOUNCE_ERR_EXPIRED;
    }
    struct peer *e = find(p, &a->key);
    /* Replay: equal is a replay too (the same record heard again through another carrier),
     * it changes nothing. */
    if (e != NULL && e->has_seq && a->seq <= e->seq) {
        p->st.replayed++;
        return KM_ERR_REFUSED;
    }
    int r;
    if (e == NULL && (r = find_or_add(p, &a->key, &e)) != 0) {
        return r;
    }
    uint64_t left_s = a->expires - now_unix;
    uint64_t hold_ms = left_s > KM_PEERS_ANNOUNCE_HOLD_MAX_MS / 1000 ? KM_PEERS_ANNOUNCE_HOLD_MAX_MS
                                                                     : left_s * 1000;
    uint64_t expires_ms = now_ms > UINT64_MAX - hold_ms ? UINT64_MAX : now_ms + hold_ms;
    replace_group(e->ann, &e->n_ann, a->paths, a->n_paths, src, expires_ms);
    e->has_seq = true;
    e->seq = a->seq;
    e->expires_unix = a->expires;
    /* A newer record may expire sooner than an older one; keep the key (and so its seq)
     * until the later of the two, so the older one cannot be replayed after a sweep. */
    if (expires_ms > e->hold_until_ms) {
        e->hold_until_ms = expires_ms;
    }
    p->st.accepted++;
    return 0;
}

void km_peers_note_parse_error(struct km_peers *p, int err)
{
    if (p == NULL || err == 0) {
        return;
    }
    if (err == KM_ERR_CRYPTO) {
        p->st.forged++;
    } else if (err == KM_ANNOUNCE_ERR_EXPIRED) {
        p->st.expired++;
    } else {
        p->st.invalid++;
    }
}

/* Remove expired slots from a group, keeping order; returns how many. */
static size_t sweep_group(struct slot *group, size_t *n, uint64_t now_ms)
{
    size_t w = 0;
    for (size_t i = 0; i < *n; i++) {
        if (!expired(&group[i].path, now_ms)) {
            if (w != i) {
                group[w] = group[i];
            }
            w++;
        }
    }
    size_t dropped = *n - w;
    *n = w;
    return dropped;
}

int km_peers_learn(struct km_peers *p, const struct km_pubkey *key, const struct km_path *path,
                   uint64_t expires_ms, uint64_t now_ms)
{
    if (p == NULL || key == NULL || path == NULL || expires_ms == 0 || !family_ok(&path->addr)) {
        return KM_ERR_INVALID;
    }
    struct peer *e = NULL;
    int r;
    if ((r = find_or_add(p, key, &e)) != 0) {
        return r;
    }
    p->st.swept += sweep_group(e->lrn, &e->n_lrn, now_ms);
    struct slot *s = NULL;
    for (size_t i = 0; i < e->n_lrn && s == NULL; i++) {
        if (same_addr(&e->lrn[i].path.addr, sa(&path->addr))) {
            s = &e->lrn[i];
        }
    }
    if (s == NULL) {
        if (e->n_lrn >= KM_PEERS_PATHS_MAX) {
            p->st.refused++;
            return KM_ERR_TOO_LARGE;
        }
        s = &e->lrn[e->n_lrn++];
        memset(s, 0, sizeof *s);
    }
    /* The history (last_ok/last_fail) of a refreshed address is kept. */
    s->path = *path;
    s->path.expires_ms = expires_ms;
    if (s->path.kind != KM_PATH_RELAY) {
        s->path.has_via = false;
        memset(&s->path.via, 0, sizeof s->path.via);
    }
    return 0;
}

static bool failing(const struct slot *s)
{
    return s->last_fail_ms != 0 && s->last_fail_ms >= s->last_ok_ms;
}

struct collect {
    struct km_path *out;
    size_t max, n;
};

static void add_unique(struct collect *c, const struct km_path *path)
{
    if (c->n >= c->max) {
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        if (same_addr(&c->out[i].addr, sa(&path->addr))) {
            return;
        }
    }
    c->out[c->n++] = *path;
}

size_t km_peers_paths(const struct km_peers *p, const struct km_pubkey *key, uint64_t now_ms,
                      struct km_path *out, size_t max)
{
    if (p == NULL || key == NULL || out == NULL || max == 0) {
        return 0;
    }
    const struct peer *e = find(p, key);
    if (e == NULL) {
        return 0;
    }
    const struct slot *groups[3] = {e->cfg, e->ann, e->lrn};
    const size_t counts[3] = {e->n_cfg, e->n_ann, e->n_lrn};
    struct collect c = {out, max, 0};
    /* Pass 0: the last working address; pass 1: the rest that are not failing; pass 2:
     * the failing ones. Within a pass, configured, then announced, then learned. */
    for (int pass = 0; pass < 3; pass++) {
        for (size_t g = 0; g < 3; g++) {
            for (size_t i = 0; i < counts[g]; i++) {
                const struct slot *s = &groups[g][i];
                if (expired(&s->path, now_ms)) {
                    continue;
                }
                bool is_ok = e->has_ok && same_addr(&s->path.addr, sa(&e->ok_addr));
                bool take = pass == 0 ? is_ok : pass == 1 ? !failing(s) : failing(s);
                if (take) {
                    add_unique(&c, &s->path);
                }
            }
        }
    }
    return c.n;
}

int km_peers_report(struct km_peers *p, const struct km_pubkey *key, const struct sockaddr *addr,
                    bool ok, uint64_t now_ms)
{
    if (p == NULL || key == NULL || addr == NULL) {
        return KM_ERR_INVALID;
    }
    struct peer *e = find(p, key);
    if (e == NULL) {
        return KM_ERR_NOT_FOUND;
    }
    struct slot *groups[3] = {e->cfg, e->ann, e->lrn};
    const size_t counts[3] = {e->n_cfg, e->n_ann, e->n_lrn};
    bool found = false;
    /* 0 would read as "never"; a report at loop time 0 still counts. */
    uint64_t t = now_ms == 0 ? 1 : now_ms;
    for (size_t g = 0; g < 3; g++) {
        for (size_t i = 0; i < counts[g]; i++) {
            struct slot *s = &groups[g][i];
            if (!same_addr(&s->path.addr, addr)) {
                continue;
            }
            if (ok) {
                s->last_ok_ms = t;
                if (!found) {
                    e->has_ok = true;
                    e->ok_addr = s->path.addr;
                }
            } else {
                s->last_fail_ms = t;
            }
            found = true;
        }
    }
    if (!found) {
        return KM_ERR_NOT_FOUND;
    }
    if (!ok && e->has_ok && same_addr(&e->ok_addr, addr)) {
        e->has_ok = false;
    }
    return 0;
}

size_t km_peers_sweep(struct km_peers *p, uint64_t now_ms)
{
    if (p == NULL) {
        return 0;
    }
    size_t dropped = 0;
    size_t i = 0;
    while (i < p->n) {
        struct peer *e = p->v[i];
        dropped += sweep_group(e->ann, &e->n_ann, now_ms);
        dropped += sweep_group(e->lrn, &e->n_lrn, now_ms);
        if (!e->configured && e->n_ann == 0 && e->n_lrn == 0 && e->hold_until_ms <= now_ms) {
            free(e);
            p->v[i] = p->v[--p->n];
            p->v[p->n] = NULL;
            continue;
        }
        i++;
    }
    p->st.swept += dropped;
    return dropped;
}

int km_peers_foreach(const struct km_peers *p, km_peers_cb cb, void *arg)
{
    if (p == NULL || cb == NULL) {
        return 0;
    }
    for (size_t i = 0; i < p->n; i++) {
        const struct peer *e = p->v[i];
        struct km_peer_info info;
        memset(&info, 0, sizeof info);
        info.key = e->key;
        info.has_seq = e->has_seq;
        info.seq = e->seq;
        info.expires = e->expires_unix;
        info.n_config = e->n_cfg;
        info.n_announced = e->n_ann;
        info.n_learned = e->n_lrn;
        info.has_ok = e->has_ok;
        if (e->has_ok) {
            info.last_ok = e->ok_addr;
        }
        int r = cb(&info, arg);
        if (r != 0) {
            return r;
        }
    }
    return 0;
}

void km_peers_stats(const struct km_peers *p, struct km_peers_stats *out)
{
    if (out == NULL) {
        return;
    }
    memset(out, 0, sizeof *out);
    if (p == NULL) {
        return;
    }
    *out = p->st;
    out->n_keys = p->n;
}
