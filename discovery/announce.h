/* Signed announcements: a node's own list of paths, signed with its Ed25519 key, with a
 * sequence number and an expiry (DESIGN.md section 6; wire format in docs/PROTOCOL.md
 * section 3). They travel verbatim by mDNS, gossip and DNS, so any receiver can verify them
 * without trusting the carrier. */
#ifndef KM_DISCOVERY_ANNOUNCE_H
#define KM_DISCOVERY_ANNOUNCE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "discovery/path.h"
#include "identity/key.h"

/* At most this many paths in one announcement (the count is a u8 on the wire). */
#define KM_ANNOUNCE_PATHS_MAX 16

/* Largest binary announcement: header 54 bytes, 16 relay paths over IPv6 of 52 bytes each,
 * and the 64-byte signature (PROTOCOL.md section 3). */
#define KM_ANNOUNCE_MAX (54u + KM_ANNOUNCE_PATHS_MAX * 52u + KM_SIG_LEN)

/* Buffer size that holds any km_announce_to_text() output: "a=", the padded base64 of
 * KM_ANNOUNCE_MAX bytes, and the NUL. */
#define KM_ANNOUNCE_TEXT_MAX (2u + ((KM_ANNOUNCE_MAX + 2u) / 3u) * 4u + 1u)

/* Returned by km_announce_parse for an authentic announcement whose expiry has passed.
 * XXX(discovery): core/err.h has no "expired" code yet; until the lead adds KM_ERR_EXPIRED
 * this is -ETIME ("Timer expired"), distinct from every code the parser otherwise returns. */
#define KM_ANNOUNCE_ERR_EXPIRED KM_ERR_SYS(ETIME)

/* A parsed, verified announcement. A parse result: the caller stack-allocates it. */
struct km_announce {
    /* read-only, filled by km_announce_parse */
    struct km_pubkey key; /* the announcing node, which signed the record */
    uint64_t seq;         /* higher replaces lower */
    uint64_t expires;     /* unix seconds; the record is void from this second on */
    struct km_path paths[KM_ANNOUNCE_PATHS_MAX];
    size_t n_paths;
};

/* Append the signed announcement of paths[0..n) by k to out, all of it or nothing.
 * Each path must be AF_INET or AF_INET6 with a non-zero port and a valid kind; a relay path
 * must have has_via. The source and expires_ms fields and the IPv6 scope and flow are not
 * carried. Returns 0, KM_ERR_TOO_LARGE if n > KM_ANNOUNCE_PATHS_MAX (or a km_buf write
 * limit), KM_ERR_INVALID for a bad path, KM_ERR_CRYPTO if signing fails, -ENOMEM. */
KM_MUST_CHECK int km_announce_build(const struct km_key *k, uint64_t seq, uint64_t expires_unix,
                                    const struct km_path *paths, size_t n, struct km_buf *out);

/* Parse and verify the announcement data[0..len). Pure: no I/O, no allocation. Checks, in
 * order, the structure, the signature by the embedded key, then the expiry against
 * now_unix (expires <= now_unix is expired). Parsed paths have source KM_PATH_SRC_GOSSIP
 * and expires_ms 0: the receiver sets both. Returns 0; KM_ERR_INVALID for anything
 * malformed (bad magic, truncation, bad kind, family or port, trailing bytes, a relay path
 * whose via key is missing); KM_ERR_UNSUPPORTED for another version; KM_ERR_TOO_LARGE for
 * more than KM_ANNOUNCE_PATHS_MAX paths or len > KM_ANNOUNCE_MAX; KM_ERR_CRYPTO for a bad
 * signature; KM_ANNOUNCE_ERR_EXPIRED. *out is zeroed on failure. */
KM_MUST_CHECK int km_announce_parse(const uint8_t *data, size_t len, uint64_t now_unix,
                                    struct km_announce *out);

/* Write "a=<base64 of data[0..len)>" (RFC 4648 with padding), NUL-terminated, into out.
 * For a DNS TXT record the caller splits the text into character-strings of at most 255
 * bytes; receivers concatenate them (as DKIM does). Returns 0, KM_ERR_TOO_LARGE if
 * len > KM_ANNOUNCE_MAX or outsz is too small (out is then ""). KM_ANNOUNCE_TEXT_MAX always
 * suffices. */
KM_MUST_CHECK int km_announce_to_text(const uint8_t *data, size_t len, char *out, size_t outsz);

/* Decode the text form text[0..len) (need not be NUL-terminated) into out[0..outsz),
 * storing the byte count in *out_len. Exactly "a=" and canonical padded base64, nothing
 * around it. Does not verify: pass the bytes to km_announce_parse. Returns 0,
 * KM_ERR_TOO_LARGE if len >= KM_ANNOUNCE_TEXT_MAX or the bytes do not fit outsz, or
 * KM_ERR_INVALID (*out_len is then 0). */
KM_MUST_CHECK int km_announce_from_text(const char *text, size_t len, uint8_t *out, size_t outsz,
                                        size_t *out_len);

#endif
