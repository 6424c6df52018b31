/* The peer table: for each known key, its candidate paths from configuration, signed
 * announcements and single learned paths (mDNS), with where each came from, when it expires
 * and what worked last (DESIGN.md section 6). No I/O and no clock: callers pass the loop time
 * (now_ms) and, for announcements, unix time. Not thread-safe. */
#ifndef KM_DISCOVERY_PEERS_H
#define KM_DISCOVERY_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/err.h"
#include "discovery/announce.h"
#include "discovery/path.h"
#include "identity/key.h"

/* Default and largest number of keys in one table. */
#define KM_PEERS_KEYS_MAX 1024u
/* Paths kept per key in each group: configured, announced, learned. */
#define KM_PEERS_PATHS_MAX 16u
/* An announcement's paths are kept at most this long, whatever expiry it claims, so a record
 * signed with a far-future expiry cannot pin stale addresses (7 days, in ms). */
#define KM_PEERS_ANNOUNCE_HOLD_MAX_MS (7ull * 24 * 3600 * 1000)

struct km_peers;

/* Counters for status output. */
struct km_peers_stats {
    uint64_t accepted; /* announcements that replaced a key's announced paths */
    uint64_t replayed; /* valid announcements with a sequence number not above the last */
    uint64_t forged;   /* parse failures with KM_ERR_CRYPTO (bad signature) */
    uint64_t expired;  /* authentic announcements past their expiry */
    uint64_t invalid;  /* other parse failures (malformed, unsupported, too large) */
    uint64_t refused;  /* new keys or paths refused because a limit was reached */
    uint64_t swept;    /* paths removed by km_peers_sweep */
    size_t n_keys;
};

/* One key as seen by km_peers_foreach; valid only during the callback. */
struct km_peer_info {
    struct km_pubkey key;
    bool has_seq;     /* an announcement was accepted for this key */
    uint64_t seq;     /* its sequence number */
    uint64_t expires; /* its expiry, unix seconds */
    size_t n_config, n_announced, n_learned;
    bool has_ok;                     /* some address worked */
    struct sockaddr_storage last_ok; /* the last one that did */
};

/* Called for each key; a non-zero return stops the iteration and is returned by
 * km_peers_foreach. The callback must not modify the table. */
typedef int (*km_peers_cb)(const struct km_peer_info *info, void *arg);

/* New empty table for at most max_keys keys (0 means KM_PEERS_KEYS_MAX; larger values are
 * clamped to it). Returns NULL only if allocation fails. */
struct km_peers *km_peers_new(size_t max_keys);

/* Free the table. Accepts NULL. */
void km_peers_free(struct km_peers *p);

/* Replace the configured (static) paths of key with paths[0..n), copied with source
 * KM_PATH_SRC_CONFIG and no expiry; n == 0 just makes the key known. Adds the key if new.
 * Returns 0, KM_ERR_TOO_LARGE if n > KM_PEERS_PATHS_MAX or the table is full (nothing
 * changes), KM_ERR_INVALID for a path that is neither AF_INET nor AF_INET6, -ENOMEM. */
KM_MUST_CHECK int km_peers_set_config(struct km_peers *p, const struct km_pubkey *key,
                                      const struct km_path *paths, size_t n);

/* Forget every configured path and unmark every key as configured, so that a reload can set
 * the configuration afresh: a peer removed from the file loses its paths and becomes
 * sweepable; what was announced or learned for it stays. */
void km_peers_clear_config(struct km_peers *p);

/* Offer a verified announcement (from km_announce_parse) received through src. If its
 * sequence number is above the last accepted for its key, its paths replace that key's
 * announced paths (configured and learned ones are kept) with source src, expiring with the
 * record (at most KM_PEERS_ANNOUNCE_HOLD_MAX_MS from now_ms). Returns 0 if accepted;
 * KM_ERR_REFUSED for a replay (sequence equal or older: dropped and counted);
 * KM_ANNOUNCE_ERR_EXPIRED if a->expires <= now_unix; KM_ERR_TOO_LARGE if the key is new and
 * the table is full; -ENOMEM. The sequence number of a key is remembered as long as the key
 * is, so a sweep cannot reopen the door to a replay before the record expires. */
KM_MUST_CHECK int km_peers_accept(struct km_peers *p, const struct km_announce *a,
                                  enum km_path_source src, uint64_t now_unix, uint64_t now_ms);

/* Count a km_announce_parse failure err in the statistics (forged, expired or invalid). */
void km_peers_note_parse_error(struct km_peers *p, int err);

/* Learn one path of key (e.g. from mDNS), kept until expires_ms (loop time, > 0). A path with
 * the same address already learned is refreshed (kind, source, via and expiry updated).
 * Adds the key if new. Returns 0; KM_ERR_INVALID if expires_ms is 0 or the family is not
 * AF_INET/AF_INET6; KM_ERR_TOO_LARGE if the key already has KM_PEERS_PATHS_MAX learned paths
 * (after dropping expired ones) or the table is full; -ENOMEM. */
KM_MUST_CHECK int km_peers_learn(struct km_peers *p, const struct km_pubkey *key,
                                 const struct km_path *path, uint64_t expires_ms, uint64_t now_ms);

/* Copy the candidate paths of key that have not expired at now_ms into out[0..max),
 * deduplicated by address (family, address, port, IPv6 scope; the first in this order
 * wins): the address last reported working first, then paths not failing (configured,
 * announced, learned), then paths whose latest report was a failure. Returns the number
 * copied (0 for an unknown key); extra candidates are left out. */
size_t km_peers_paths(const struct km_peers *p, const struct km_pubkey *key, uint64_t now_ms,
                      struct km_path *out, size_t max);

/* Record that a connection to key at addr worked (ok) or failed at now_ms. A working
 * address is offered first next time; a failing one last, until it works again. Returns 0,
 * or KM_ERR_NOT_FOUND if key or addr is unknown. */
KM_MUST_CHECK int km_peers_report(struct km_peers *p, const struct km_pubkey *key,
                                  const struct sockaddr *addr, bool ok, uint64_t now_ms);

/* Drop every path expired at now_ms, and every key left with no path, no configuration and
 * no announcement still within its hold time. Returns the number of paths dropped. */
size_t km_peers_sweep(struct km_peers *p, uint64_t now_ms);

/* Call cb for every key (order unspecified). Returns 0 or the first non-zero return of cb. */
int km_peers_foreach(const struct km_peers *p, km_peers_cb cb, void *arg);

/* Current counters. */
void km_peers_stats(const struct km_peers *p, struct km_peers_stats *out);

#endif
