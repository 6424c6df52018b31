/* What a capability certificate grants on this node, now (DESIGN.md sections 8 and 11.5,
 * docs/CAPABILITIES.md).
 *
 * A policy is this node's key, the owner keys its config trusts as signers, the revocation
 * list and the clock-skew allowance. km_cap_check turns a certificate blob into a grant or a
 * one-line reason for refusing it; it fails closed. */
#ifndef KM_CAP_POLICY_H
#define KM_CAP_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cap/cert.h"
#include "core/err.h"
#include "identity/key.h"

#define KM_CAP_MAX_SIGNERS 16u
#define KM_CAP_MAX_REVOKED 1024u        /* serials, and keys, each */
#define KM_CAP_REVOKED_MAX (256u << 10) /* bytes of revocation list text */
#define KM_CAP_SKEW_DEFAULT_S 60u       /* allowance for clocks that disagree, each side */
#define KM_CAP_WHY_MAX 256u             /* a reason always fits in this many bytes */

/* Plain data; the caller allocates it (about 40 KiB: heap or static storage). */
struct km_cap_policy {
    struct km_pubkey self; /* this node: trusted as a signer, the principal it must see */
    struct km_pubkey signers[KM_CAP_MAX_SIGNERS]; /* owner keys */
    size_t n_signers;
    uint64_t revoked_serials[KM_CAP_MAX_REVOKED];
    size_t n_revoked_serials;
    struct km_pubkey revoked_keys[KM_CAP_MAX_REVOKED]; /* grantee or signer keys */
    size_t n_revoked_keys;
    uint32_t skew_s;
};

/* What one valid certificate allows here. */
struct km_cap_grant {
    struct km_pubkey key;    /* the grantee */
    struct km_pubkey signer; /* who signed */
    uint64_t serial;
    uint64_t valid_before; /* seconds since the epoch; the grant ends then (+ skew) */
    uint64_t ends_at;      /* valid_before + skew: when live sessions are cut */
    char key_id[KM_CERT_KEY_ID_MAX + 1];
    bool shell; /* a login shell (permit-shell@keymesh, no force-command) */
    bool exec;  /* the forced command (force-command) */
    char command[KM_CERT_COMMAND_MAX + 1];
    bool pty;                          /* permit-pty */
    uint16_t ports[KM_CERT_MAX_PORTS]; /* local ports direct-tcpip may reach */
    size_t n_ports;
    bool expose; /* may register reverse forwards (permit-expose@keymesh) */
};

/* An empty policy for self: no owners, nothing revoked, the default skew. */
void km_cap_policy_init(struct km_cap_policy *p, const struct km_pubkey *self);

/* Trust an owner key. Returns 0 (also when already trusted) or KM_ERR_TOO_LARGE. */
KM_MUST_CHECK int km_cap_policy_add_signer(struct km_cap_policy *p, const struct km_pubkey *k);

/* Parse a revocation list (docs/CAPABILITIES.md): one entry a line, "serial N" (decimal) or
 * "key KEY" (any text km_pubkey_parse accepts, or a node ID); '#' comments and blank lines
 * ignored. Entries are added to p. Returns 0, KM_ERR_TOO_LARGE (text or entry count), or
 * KM_ERR_INVALID with *line set to the 1-based line at fault. */
KM_MUST_CHECK int km_cap_policy_add_revocations(struct km_cap_policy *p, const char *text,
                                                size_t len, size_t *line);

bool km_cap_policy_serial_revoked(const struct km_cap_policy *p, uint64_t serial);
bool km_cap_policy_key_revoked(const struct km_cap_policy *p, const struct km_pubkey *k);

/* Decide a certificate blob for this node at time now_s (seconds since the epoch). peer is
 * the client's address as text (for source-address), or NULL when not known (then a
 * certificate restricted by source-address is refused). On success fills *out and returns 0.
 * Otherwise returns KM_ERR_REFUSED (or the parser's code for a malformed blob) and writes a
 * one-line reason to why (always NUL-terminated, fits KM_CAP_WHY_MAX): malformed, not a user
 * certificate, bad signature, untrusted signer, no principal naming this node, not yet
 * valid, expired, revoked serial, revoked key or signer, unknown critical option, source
 * address not allowed, or nothing granted. */
KM_MUST_CHECK int km_cap_check(const struct km_cap_policy *p, const uint8_t *blob, size_t len,
                               uint64_t now_s, const char *peer, struct km_cap_grant *out,
                               char *why, size_t whysz);

/* True if addr (IPv4 or IPv6 text) matches one entry of list, a comma-separated list of
 * addresses and CIDR blocks (OpenSSH's source-address syntax without wildcards). A malformed
 * list matches nothing. */
bool km_cap_addr_in_list(const char *addr, const char *list);

#endif
