/* Unit tests for discovery/peers.c: announcements accepted, replayed (same and older
 * sequence) and counted; configured paths surviving announcements; learned paths and their
 * refresh; deduplication; what worked first and what failed last; expiry and sweep; limits
 * on keys and paths; iteration and counters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "discovery/peers.h"

#define N_ITEMS(a) (sizeof(a) / sizeof((a)[0]))
#define NOW_UNIX 1700000000ull
#define NOW_MS 5000000ull

static struct km_pubkey key(uint8_t fill)
{
    struct km_pubkey k;
    memset(k.b, fill, sizeof k.b);
    return k;
}

static struct km_path v4(enum km_path_kind kind, const char *ip, uint16_t port)
{
    struct km_path p;
    memset(&p, 0, sizeof p);
    p.kind = kind;
    struct sockaddr_in *sin = (struct sockaddr_in *)&p.addr;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
    return p;
}

static struct km_path v6(enum km_path_kind kind, const char *ip, uint16_t port, uint32_t scope)
{
    struct km_path p;
    memset(&p, 0, sizeof p);
    p.kind = kind;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&p.addr;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    sin6->sin6_scope_id = scope;
    assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
    return p;
}

/* A verified announcement as km_announce_parse would return it. */
static struct km_announce announce(const struct km_pubkey *k, uint64_t seq, uint64_t expires,
                                   const struct km_path *paths, size_t n)
{
    struct km_announce a;
    memset(&a, 0, sizeof a);
    a.key = *k;
    a.seq = seq;
    a.expires = expires;
    for (size_t i = 0; i < n; i++) {
        a.paths[i] = paths[i];
        a.paths[i].source = KM_PATH_SRC_GOSSIP;
    }
    a.n_paths = n;
    return a;
}

static uint16_t port_of(const struct km_path *p)
{
    if (p->addr.ss_family == AF_INET) {
        return ntohs(((const struct sockaddr_in *)&p->addr)->sin_port);
    }
    return ntohs(((const struct sockaddr_in6 *)&p->addr)->sin6_port);
}

/* Ports of the current candidates of k, in order; returns the count. */
static size_t ports(const struct km_peers *p, const struct km_pubkey *k, uint64_t now_ms,
                    uint16_t *out)
{
    struct km_path paths[64];
    size_t n = km_peers_paths(p, k, now_ms, paths, N_ITEMS(paths));
    for (size_t i = 0; i < n; i++) {
        out[i] = port_of(&paths[i]);
    }
    return n;
}

static void assert_ports(const struct km_peers *p, const struct km_pubkey *k, uint64_t now_ms,
                         const uint16_t *want, size_t n_want)
{
    uint16_t got[64];
    size_t n = ports(p, k, now_ms, got);
    if (n != n_want || (n > 0 && memcmp(got, want, n * sizeof got[0]) != 0)) {
        char msg[512];
        size_t off = 0;
        for (size_t i = 0; i < n && off < sizeof msg - 8; i++) {
            off += (size_t)snprintf(msg + off, sizeof msg - off, "%u ", got[i]);
        }
        msg[off] = '\0';
        fail_msg("got %zu paths: %s(want %zu)", n, msg, n_want);
    }
}

static void test_accept_replay_newer(void **state)
{
    (void)state;
    struct km_peers *p = km_peers_new(0);
    assert_non_null(p);
    struct km_pubkey k = key(1);
    struct km_path a1[] = {v4(KM_PATH_LAN, "10.0.0.1", 101), v4(KM_PATH_MAPPED, "1.2.3.4", 102)};
    struct km_path a2[] = {v4(KM_PATH_MAPPED, "5.6.7.8", 201)};

    struct km_announce an = announce(&k, 10, NOW_UNIX + 600, a1, 2);
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_MDNS, NOW_UNIX, NOW_MS), 0);
    assert_ports(p, &k, NOW_MS, (const uint16_t[]){101, 102}, 2);
    struct km_path got[4];
    assert_int_equal(km_peers_paths(p, &k, NOW_MS, got, 4), 2);
    assert_int_equal(got[0].source, KM_PATH_SRC_MDNS);
    assert_int_equal(got[0].expires_ms, NOW_MS + 600 * 1000);

    /* The same record again, and an older one with other paths: dropped and counted. */
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), KM_ERR_REFUSED);
    struct km_announce old = announce(&k, 9, NOW_UNIX + 900, a2, 1);
    assert_int_equal(km_peers_accept(p, &old, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS),
                     KM_ERR_REFUSED);
    struct km_announce zero = announce(&k, 0, NOW_UNIX + 900, a2, 1);
    assert_int_equal(km_peers_accept(p, &zero, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS),
                     KM_ERR_REFUSED);
    assert_ports(p, &k, NOW_MS, (const uint16_t[]){101, 102}, 2);

    /* A newer one replaces the announced paths entirely. */
    struct km_announce newer = announce(&k, 11, NOW_UNIX + 60, a2, 1);
    assert_int_equal(km_peers_accept(p, &newer, KM_PATH_SRC_DNS, NOW_UNIX, NOW_MS), 0);
    assert_ports(p, &k, NOW_MS, (const uint16_t[]){201}, 1);
    /* ... and the old one is now a replay too. */
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), KM_ERR_REFUSED);
    /* An announcement of no paths withdraws them. */
    struct km_announce empty = announce(&k, UINT64_MAX, NOW_UNIX + 60, NULL, 0);
    assert_int_equal(km_peers_accept(p, &empty, KM_PATH_SRC_DNS, NOW_UNIX, NOW_MS), 0);
    assert_ports(p, &k, NOW_MS, NULL, 0);
    /* Nothing can follow UINT64_MAX. */
    empty.seq = UINT64_MAX;
    assert_int_equal(km_peers_accept(p, &empty, KM_PATH_SRC_DNS, NOW_UNIX, NOW_MS), KM_ERR_REFUSED);

    /* Expired by our clock: counted, not applied. */
    struct km_announce stale = announce(&k, 99, NOW_UNIX, a1, 2);
    assert_int_equal(km_peers_accept(p, &stale, KM_PATH_SRC_DNS, NOW_UNIX, NOW_MS),
                     KM_ANNOUNCE_ERR_EXPIRED);

    struct km_peers_stats st;
    km_peers_stats(p, &st);
    assert_int_equal(st.accepted, 3);
    assert_int_equal(st.replayed, 5);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.n_keys, 1);
    km_peers_free(p);
}

static void test_parse_errors_counted(void **state)
{
    (void)state;
    struct km_peers *p = km_peers_new(0);
    assert_non_null(p);
    static const int errs[] = {KM_ERR_CRYPTO,
                               KM_ERR_CRYPTO,
                               KM_ANNOUNCE_ERR_EXPIRED,
                               KM_ERR_INVALID,
                               KM_ERR_TOO_LARGE,
                               KM_ERR_UNSUPPORTED,
                               0};
    for (size_t i = 0; i < N_ITEMS(errs); i++) {
        km_peers_note_parse_error(p, errs[i]);
    }
    km_peers_note_parse_error(NULL, KM_ERR_CRYPTO);
    struct km_peers_stats st;
    km_peers_stats(p, &st);
    assert_int_equal(st.forged, 2);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.invalid, 3);
    assert_int_equal(st.accepted, 0);
    assert_int_equal(st.n_keys, 0);
    km_peers_free(p);
}

static void test_config_survives(void **state)
{
    (void)state;
    struct km_peers *p = km_peers_new(0);
    assert_non_null(p);
    struct km_pubkey k = key(3);
    struct km_path cfg[] = {v4(KM_PATH_VPN, "100.64.0.3", 1), v6(KM_PATH_LAN, "fd00::3", 2, 0)};
    cfg[0].expires_ms = 1; /* ignored: configured paths never expire */
    assert_int_equal(km_peers_set_config(p, &k, cfg, 2), 0);
    struct km_path ann[] = {v4(KM_PATH_MAPPED, "198.51.100.3", 3)};
    struct km_announce an = announce(&k, 1, NOW_UNIX + 10, ann, 1);
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), 0);
    assert_ports(p, &k, NOW_MS, (const uint16_t[]){1, 2, 3}, 3);
    struct km_path got[4];
    assert_int_equal(km_peers_paths(p, &k, NOW_MS, got, 4), 3);
    assert_int_equal(got[0].source, KM_PATH_SRC_CONFIG);
    assert_int_equal(got[0].expires_ms, 0);

    /* A newer announcement replaces only the announced paths. */
    an = announce(&k, 2, NOW_UNIX + 10, NULL, 0);
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), 0);
    assert_ports(p, &k, NOW_MS, (const uint16_t[]){1, 2}, 2);
    /* Long after everything else expired, and after a sweep, the configuration remains. */
    uint64_t later = NOW_MS + 365ull * 24 * 3600 * 1000;
    (void)km_peers_sweep(p, later);
    assert_ports(p, &k, later, (const uint16_t[]){1, 2}, 2);
    /* Replacing the configuration. */
    assert_int_equal(km_peers_set_config(p, &k, &cfg[1], 1), 0);
    assert_ports(p, &k, later, (const uint16_t[]){2}, 1);
    /* A known key with no paths at all stays known. */
    assert_int_equal(km_peers_set_config(p, &k, NULL, 0), 0);
    (void)km_peers_sweep(p, later + 1);
    struct km_peers_stats st;
    km_peers_stats(p, &st);
    assert_int_equal(st.n_keys, 1);

    /* Hostile configuration: too many paths, a bad family. Nothing changes. */
    struct km_path many[KM_PEERS_PATHS_MAX + 1];
    for (size_t i = 0; i < N_ITEMS(many); i++) {
        many[i] = v4(KM_PATH_LAN, "10.1.1.1", (uint16_t)(100 + i));
    }
    assert_int_equal(km_peers_set_config(p, &k, many, N_ITEMS(many)), KM_ERR_TOO_LARGE);
    assert_int_equal(km_peers_set_config(p, &k, many, KM_PEERS_PATHS_MAX), 0);
    struct km_path bad = v4(KM_PATH_LAN, "10.1.1.1", 5);
    bad.addr.ss_family = AF_UNIX;
    assert_int_equal(km_peers_set_config(p, &k, &bad, 1), KM_ERR_INVALID);
    assert_int_equal(km_peers_paths(p, &k, later, got, 4), 4);
    assert_int_equal(km_peers_set_config(p, &k, NULL, 1), KM_ERR_INVALID);
    km_peers_free(p);
}

/* A reload: clear, then set again. A peer still configured keeps only its new paths; one
 * dropped from the file keeps what it announced until that expires, then is swept. */
static void test_config_reload(void **state)
{
    (void)state;
    struct km_peers *p = km_peers_new(0);
    assert_non_null(p);
    struct km_pubkey kept = key(4), dropped = key(5);
    struct km_path a = v4(KM_PATH_LAN, "10.0.0.4", 1), b = v4(KM_PATH_LAN, "10.0.0.5", 2);
    assert_int_equal(km_peers_set_config(p, &kept, &a, 1), 0);
    assert_int_equal(km_peers_set_config(p, &dropped, &b, 1), 0);
    struct km_path ann = v4(KM_PATH_MAPPED, "198.51.100.5", 3);
    struct km_announce an = announce(&dropped, 1, NOW_UNIX + 10, &ann, 1);
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), 0);

    km_peers_clear_config(p);
    struct km_path a2 = v4(KM_PATH_LAN, "10.0.0.4", 7);
    assert_int_equal(km_peers_set_config(p, &kept, &a2, 1), 0);
    assert_ports(p, &kept, NOW_MS, (const uint16_t[]){7}, 1);
    assert_ports(p, &dropped, NOW_MS, (const uint16_t[]){3}, 1);

    uint64_t later = NOW_MS + 365ull * 24 * 3600 * 1000;
    (void)km_peers_sweep(p, later);
    struct km_peers_stats st;
    km_peers_stats(p, &st);
    assert_int_equal(st.n_keys, 1);
    assert_ports(p, &kept, later, (const uint16_t[]){7}, 1);
    km_peers_clear_config(NULL); /* accepted, does nothing */
    km_peers_free(p);
}

static void test_dedup_and_report(void **state)
{
    (void)state;
    struct km_peers *p = km_peers_new(0);
    assert_non_null(p);
    struct km_pubkey k = key(4);
    /* The same address from configuration, the announcement and mDNS appears once. */
    struct km_path cfg[] = {v4(KM_PATH_LAN, "10.0.0.4", 1)};
    assert_int_equal(km_peers_set_config(p, &k, cfg, 1), 0);
    struct km_path ann[] = {v4(KM_PATH_LAN, "10.0.0.4", 1), v4(KM_PATH_MAPPED, "1.1.1.4", 2),
                            v4(KM_PATH_MAPPED, "1.1.1.4", 2),
                            v6(KM_PATH_LINK_LOCAL, "fe80::4", 3, 0)};
    struct km_announce an = announce(&k, 1, NOW_UNIX + 3600, ann, N_ITEMS(ann));
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), 0);
    struct km_path l1 = v6(KM_PATH_LINK_LOCAL, "fe80::4", 3, 2); /* other scope: distinct */
    l1.source = KM_PATH_SRC_MDNS;
    struct km_path l2 = v4(KM_PATH_LAN, "10.0.0.4", 1); /* duplicate of config */
    l2.source = KM_PATH_SRC_MDNS;
    struct km_path l3 = v4(KM_PATH_LAN, "10.0.0.4", 4); /* other port: distinct */
    l3.source = KM_PATH_SRC_MDNS;
    assert_int_equal(km_peers_learn(p, &k, &l1, NOW_MS + 1000, NOW_MS), 0);
    assert_int_equal(km_peers_learn(p, &k, &l2, NOW_MS + 1000, NOW_MS), 0);
    assert_int_equal(km_peers_learn(p, &k, &l3, NOW_MS + 1000, NOW_MS), 0);
    assert_ports(p, &k, NOW_MS, (const uint16_t[]){1, 2, 3, 3, 4}, 5);
    struct km_path got[8];
    assert_int_equal(km_peers_paths(p, &k, NOW_MS, got, 8), 5);
    assert_int_equal(got[0].source, KM_PATH_SRC_CONFIG);
    assert_int_equal(got[3].source, KM_PATH_SRC_MDNS);
    /* max bounds the output. */
    assert_int_equal(km_peers_paths(p, &k, NOW_MS, got, 2), 2);
    assert_int_equal(km_peers_paths(p, &k, NOW_MS, got, 0), 0);

    /* What worked goes first; what failed goes last. */
    assert_int_equal(km_peers_report(p, &k, (const struct sockaddr *)&l3.addr, true, NOW_MS), 0);
    assert_ports(p, &k, NOW_MS, (const uint16_t[]){4, 1, 2, 3, 3}, 5);
    assert_int_equal(km_peers_report(p, &k, (const struct sockaddr *)&cfg[0].addr, false, NOW_MS),
                     0);
    assert_ports(p, &k, NOW_MS, (const uint16_t[]){4, 2, 3, 3, 1}, 5);
    /* The working one fails: it loses first place and joins the failing, in source order. */
    assert_int_equal(km_peers_report(p, &k, (const struct sockaddr *)&l3.addr, false, NOW_MS + 1),
                     0);
    assert_ports(p, &k, NOW_MS, (const uint16_t[]){2, 3, 3, 1, 4}, 5);
    /* The configured address works again. */
    assert_int_equal(
        km_peers_report(p, &k, (const struct sockaddr *)&cfg[0].addr, true, NOW_MS + 2), 0);
    assert_ports(p, &k, NOW_MS, (const uint16_t[]){1, 2, 3, 3, 4}, 5);

    /* Unknown address or key. */
    struct km_path other = v4(KM_PATH_LAN, "10.9.9.9", 1);
    assert_int_equal(km_peers_report(p, &k, (const struct sockaddr *)&other.addr, true, NOW_MS),
                     KM_ERR_NOT_FOUND);
    struct km_pubkey k2 = key(5);
    assert_int_equal(km_peers_report(p, &k2, (const struct sockaddr *)&l3.addr, true, NOW_MS),
                     KM_ERR_NOT_FOUND);
    assert_int_equal(km_peers_paths(p, &k2, NOW_MS, got, 8), 0);

    /* The history of an address survives a newer announcement that still lists it. */
    assert_int_equal(
        km_peers_report(p, &k, (const struct sockaddr *)&ann[1].addr, false, NOW_MS + 3), 0);
    an = announce(&k, 2, NOW_UNIX + 3600, ann, N_ITEMS(ann));
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), 0);
    assert_ports(p, &k, NOW_MS, (const uint16_t[]){1, 3, 3, 2, 4}, 5);
    km_peers_free(p);
}

static void test_learn_and_sweep(void **state)
{
    (void)state;
    struct km_peers *p = km_peers_new(0);
    assert_non_null(p);
    struct km_pubkey k = key(6);
    struct km_path l = v4(KM_PATH_LINK_LOCAL, "169.254.0.6", 6);
    l.source = KM_PATH_SRC_MDNS;
    assert_int_equal(km_peers_learn(p, &k, &l, 0, NOW_MS), KM_ERR_INVALID);
    assert_int_equal(km_peers_learn(p, &k, &l, NOW_MS + 100, NOW_MS), 0);
    /* Refresh: same address, later expiry, no duplicate. */
    assert_int_equal(km_peers_learn(p, &k, &l, NOW_MS + 200, NOW_MS + 50), 0);
    assert_ports(p, &k, NOW_MS + 150, (const uint16_t[]){6}, 1);
    /* Expired paths are not offered even before a sweep; expiry is exclusive. */
    assert_ports(p, &k, NOW_MS + 200, NULL, 0);
    assert_ports(p, &k, NOW_MS + 199, (const uint16_t[]){6}, 1);

    /* An announcement's paths expire with it (seconds to milliseconds). */
    struct km_path ann[] = {v4(KM_PATH_MAPPED, "192.0.2.6", 7)};
    struct km_announce an = announce(&k, 1, NOW_UNIX + 2, ann, 1);
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), 0);
    assert_ports(p, &k, NOW_MS + 150, (const uint16_t[]){7, 6}, 2);
    assert_ports(p, &k, NOW_MS + 1999, (const uint16_t[]){7}, 1);
    assert_ports(p, &k, NOW_MS + 2000, NULL, 0);

    struct km_peers_stats st;
    assert_int_equal(km_peers_sweep(p, NOW_MS + 150), 0);
    km_peers_stats(p, &st);
    assert_int_equal(st.n_keys, 1);
    assert_int_equal(km_peers_sweep(p, NOW_MS + 2000), 2);
    km_peers_stats(p, &st);
    assert_int_equal(st.swept, 2);
    assert_int_equal(st.n_keys, 0); /* nothing left and the announcement expired */

    /* An announcement claiming a far-future expiry is held at most the maximum. */
    an = announce(&k, 5, UINT64_MAX, ann, 1);
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), 0);
    struct km_path got[2];
    assert_int_equal(km_peers_paths(p, &k, NOW_MS, got, 2), 1);
    assert_int_equal(got[0].expires_ms, NOW_MS + KM_PEERS_ANNOUNCE_HOLD_MAX_MS);
    /* Saturating: a loop time near the end of time does not wrap. */
    struct km_pubkey k2 = key(7);
    an = announce(&k2, 1, NOW_UNIX + 10, ann, 1);
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, UINT64_MAX - 5), 0);
    assert_int_equal(km_peers_paths(p, &k2, UINT64_MAX - 5, got, 2), 1);
    assert_int_equal(got[0].expires_ms, UINT64_MAX);

    /* The sequence number outlives the paths: a newer record expiring sooner empties the
     * key after a sweep, yet the older record stays a replay while it could still be
     * valid. */
    struct km_pubkey k3 = key(8);
    an = announce(&k3, 10, NOW_UNIX + 100, ann, 1);
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), 0);
    struct km_announce newer = announce(&k3, 11, NOW_UNIX + 1, ann, 1);
    assert_int_equal(km_peers_accept(p, &newer, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), 0);
    assert_int_equal(km_peers_sweep(p, NOW_MS + 5000), 1);
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX + 5, NOW_MS + 5000),
                     KM_ERR_REFUSED);
    km_peers_free(p);
}

static void test_limits(void **state)
{
    (void)state;
    struct km_peers *p = km_peers_new(4);
    assert_non_null(p);
    struct km_path l = v4(KM_PATH_LAN, "10.0.0.9", 9);
    for (uint8_t i = 0; i < 4; i++) {
        struct km_pubkey k = key((uint8_t)(0x40 + i));
        assert_int_equal(km_peers_set_config(p, &k, &l, 1), 0);
    }
    /* Full: every way of adding a key is refused and counted; known keys still work. */
    struct km_pubkey extra = key(0x50);
    assert_int_equal(km_peers_set_config(p, &extra, &l, 1), KM_ERR_TOO_LARGE);
    assert_int_equal(km_peers_learn(p, &extra, &l, NOW_MS + 10, NOW_MS), KM_ERR_TOO_LARGE);
    struct km_announce an = announce(&extra, 1, NOW_UNIX + 10, &l, 1);
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS),
                     KM_ERR_TOO_LARGE);
    struct km_pubkey known = key(0x41);
    an = announce(&known, 1, NOW_UNIX + 10, &l, 1);
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), 0);
    struct km_peers_stats st;
    km_peers_stats(p, &st);
    assert_int_equal(st.refused, 3);
    assert_int_equal(st.n_keys, 4);

    /* Learned paths per key: 16, then refused, until one expires. */
    for (uint16_t i = 0; i < KM_PEERS_PATHS_MAX; i++) {
        struct km_path x = v4(KM_PATH_LINK_LOCAL, "169.254.1.1", (uint16_t)(1000 + i));
        assert_int_equal(km_peers_learn(p, &known, &x, NOW_MS + 10 + i, NOW_MS), 0);
    }
    struct km_path x = v4(KM_PATH_LINK_LOCAL, "169.254.1.1", 2000);
    assert_int_equal(km_peers_learn(p, &known, &x, NOW_MS + 100, NOW_MS), KM_ERR_TOO_LARGE);
    /* Refreshing a known one is still fine when full. */
    struct km_path y = v4(KM_PATH_LINK_LOCAL, "169.254.1.1", 1005);
    assert_int_equal(km_peers_learn(p, &known, &y, NOW_MS + 100, NOW_MS), 0);
    assert_int_equal(km_peers_learn(p, &known, &x, NOW_MS + 100, NOW_MS + 10), 0);
    /* The output holds all groups: 1 config + 1 announced (same address, deduplicated) +
     * 16 learned. */
    struct km_path got[64];
    assert_int_equal(km_peers_paths(p, &known, NOW_MS + 10, got, 64), 1 + 16);

    /* Bad arguments. */
    struct km_path bad = l;
    bad.addr.ss_family = AF_UNIX;
    assert_int_equal(km_peers_learn(p, &known, &bad, NOW_MS + 10, NOW_MS), KM_ERR_INVALID);
    an = announce(&known, 50, NOW_UNIX + 10, &bad, 1);
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), KM_ERR_INVALID);
    an.n_paths = KM_ANNOUNCE_PATHS_MAX + 1;
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), KM_ERR_INVALID);
    assert_int_equal(km_peers_accept(p, NULL, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS),
                     KM_ERR_INVALID);
    km_peers_free(p);
    km_peers_free(NULL);

    /* Oversized requests are clamped. */
    p = km_peers_new(1u << 30);
    assert_non_null(p);
    km_peers_free(p);
}

static int count_cb(const struct km_peer_info *info, void *arg)
{
    size_t *seen = arg;
    if (info->has_seq) {
        assert_int_equal(info->seq, 3);
        assert_int_equal(info->n_announced, 1);
    }
    (*seen)++;
    return 0;
}

static int stop_cb(const struct km_peer_info *info, void *arg)
{
    (void)info;
    size_t *seen = arg;
    return ++*seen == 2 ? 42 : 0;
}

static void test_foreach(void **state)
{
    (void)state;
    struct km_peers *p = km_peers_new(0);
    assert_non_null(p);
    struct km_path l = v4(KM_PATH_LAN, "10.0.0.9", 9);
    for (uint8_t i = 0; i < 5; i++) {
        struct km_pubkey k = key((uint8_t)(0x60 + i));
        assert_int_equal(km_peers_set_config(p, &k, &l, 1), 0);
    }
    struct km_pubkey k = key(0x60);
    struct km_announce an = announce(&k, 3, NOW_UNIX + 10, &l, 1);
    assert_int_equal(km_peers_accept(p, &an, KM_PATH_SRC_GOSSIP, NOW_UNIX, NOW_MS), 0);
    size_t seen = 0;
    assert_int_equal(km_peers_foreach(p, count_cb, &seen), 0);
    assert_int_equal(seen, 5);
    seen = 0;
    assert_int_equal(km_peers_foreach(p, stop_cb, &seen), 42);
    assert_int_equal(seen, 2);
    assert_int_equal(km_peers_foreach(NULL, stop_cb, &seen), 0);
    km_peers_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_replay_newer),
        cmocka_unit_test(test_parse_errors_counted),
        cmocka_unit_test(test_config_survives),
        cmocka_unit_test(test_config_reload),
        cmocka_unit_test(test_dedup_and_report),
        cmocka_unit_test(test_learn_and_sweep),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_foreach),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
