/* Derivations from a public key: node ID, FQDN, VIP (DESIGN.md section 3, exact).
 *
 *   node ID = base32(pubkey), 52 lowercase characters
 *   FQDN    = <node ID>.<suffix>
 *   VIP     = prefix (2 bytes) || SHA-256(pubkey)[0..14) */
#ifndef KM_IDENTITY_DERIVE_H
#define KM_IDENTITY_DERIVE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "identity/key.h"

#define KM_NODE_ID_LEN 52
#define KM_DEFAULT_SUFFIX "mesh.internal"
#define KM_DEFAULT_PREFIX 0xfd6bu
#define KM_FQDN_MAX 254  /* 253 characters and the NUL */
#define KM_VIP_STRLEN 46 /* INET6_ADDRSTRLEN */
#define KM_SUFFIX_MAX (KM_FQDN_MAX - 1 - KM_NODE_ID_LEN - 1)

/* The node ID of pk, NUL-terminated. */
void km_node_id(const struct km_pubkey *pk, char out[static KM_NODE_ID_LEN + 1]);

/* Parse a node ID of exactly len characters (upper case accepted; s need not be
 * NUL-terminated). Returns 0 or KM_ERR_NODE_ID for any other length, alphabet, or
 * non-canonical trailing bits (the last character must be one of a, q, A, Q); *out is zeroed
 * on failure. */
KM_MUST_CHECK int km_node_id_parse(const char *s, size_t len, struct km_pubkey *out);

/* "<node ID>.<suffix>" into out, NUL-terminated; suffix is copied as given (check it with
 * km_suffix_check first). Returns 0 or KM_ERR_TOO_LARGE if the name would exceed 253
 * characters or outsz (out is then ""). */
KM_MUST_CHECK int km_fqdn(const struct km_pubkey *pk, const char *suffix, char *out, size_t outsz);

/* If name is "<node ID>.<suffix>" (case-insensitive, one optional trailing dot), store the key
 * and return 0. KM_ERR_INVALID if name is not under suffix, has more labels, an empty first
 * label, or is longer than a DNS name; KM_ERR_NODE_ID if the first label is not a node ID.
 * *out is zeroed on failure. */
KM_MUST_CHECK int km_fqdn_parse(const char *name, const char *suffix, struct km_pubkey *out);

/* Check a DNS suffix: 1..KM_SUFFIX_MAX characters, labels of 1-63 characters from a-z, 0-9
 * and '-', not starting or ending with '-', no empty label, no trailing dot. Upper case is
 * accepted. Returns 0 or KM_ERR_INVALID. */
KM_MUST_CHECK int km_suffix_check(const char *suffix);

/* The 16-byte VIP of pk under the 16-bit prefix (0xfd6b by default). */
void km_vip(const struct km_pubkey *pk, uint16_t prefix, uint8_t out[static 16]);

/* The VIP as text (RFC 5952, as inet_ntop prints it). */
void km_vip_str(const struct km_pubkey *pk, uint16_t prefix, char out[static KM_VIP_STRLEN]);

/* Parse a mesh prefix "xxxx::/16": an IPv6 address (inet_pton syntax, no whitespace) whose
 * bytes 2-15 are zero, then "/16" exactly. Returns 0 or KM_ERR_INVALID (*out is then 0). */
KM_MUST_CHECK int km_prefix_parse(const char *s, uint16_t *out);

/* Format a prefix as "fd6b::/16" into out (at least 16 bytes), spelled as inet_ntop does. */
void km_prefix_str(uint16_t prefix, char out[static 16]);

#endif
