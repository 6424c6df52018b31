/* Capabilities as OpenSSH user certificates (DESIGN.md section 8, docs/CAPABILITIES.md).
 *
 * The wire form is OpenSSH's ssh-ed25519-cert-v01@openssh.com (PROTOCOL.certkeys):
 *
 *   string  "ssh-ed25519-cert-v01@openssh.com"
 *   string  nonce
 *   string  pk                  (the grantee's Ed25519 key, 32 bytes)
 *   uint64  serial
 *   uint32  type                (1 = user)
 *   string  key id
 *   string  valid principals    (a sequence of strings: target node IDs)
 *   uint64  valid after         (seconds since the epoch)
 *   uint64  valid before
 *   string  critical options    (a sequence of name, data pairs)
 *   string  extensions          (a sequence of name, data pairs)
 *   string  reserved
 *   string  signature key       (the signer's ssh-ed25519 public key blob)
 *   string  signature           (string "ssh-ed25519", string sig[64]) over every byte
 *                               from the start up to and including the signature key
 *
 * The parser is pure (no I/O, no allocation): bytes in, a km_cert out. It checks structure
 * and records everything a policy needs; it does not decide trust (cap/policy.h does). */
#ifndef KM_CAP_CERT_H
#define KM_CAP_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "identity/key.h"

#define KM_CERT_TYPE_NAME "ssh-ed25519-cert-v01@openssh.com"
#define KM_CERT_USER 1u
#define KM_CERT_HOST 2u

/* Limits; a keymesh certificate is about 400 bytes. */
#define KM_CERT_BLOB_MAX 8192u       /* bytes of certificate wire blob */
#define KM_CERT_TEXT_MAX 16384u      /* bytes of "type base64 comment" text */
#define KM_CERT_MAX_PRINCIPALS 16u   /* principals per certificate */
#define KM_CERT_PRINCIPAL_MAX 255u   /* bytes per principal */
#define KM_CERT_KEY_ID_MAX 255u      /* bytes of key id */
#define KM_CERT_COMMAND_MAX 1023u    /* bytes of force-command */
#define KM_CERT_SOURCE_MAX 1023u     /* bytes of source-address */
#define KM_CERT_MAX_PORTS 32u        /* ports in permit-ports@keymesh */
#define KM_CERT_NONCE_MAX 64u        /* bytes of nonce (OpenSSH uses 32) */
#define KM_CERT_OPTION_NAME_MAX 127u /* bytes of an option or extension name */

/* Extension bits (flags of struct km_cert). */
#define KM_CERT_EXT_PTY (1u << 0)       /* permit-pty */
#define KM_CERT_EXT_PORT_FWD (1u << 1)  /* permit-port-forwarding */
#define KM_CERT_EXT_SHELL (1u << 2)     /* permit-shell@keymesh */
#define KM_CERT_EXT_PORTS (1u << 3)     /* permit-ports@keymesh (ports[] holds them) */
#define KM_CERT_EXT_EXPOSE (1u << 4)    /* permit-expose@keymesh */
#define KM_CERT_EXT_USER_RC (1u << 5)   /* permit-user-rc (recognised, not used) */
#define KM_CERT_EXT_AGENT_FWD (1u << 6) /* permit-agent-forwarding (recognised, not used) */
#define KM_CERT_EXT_X11_FWD (1u << 7)   /* permit-X11-forwarding (recognised, not used) */
#define KM_CERT_EXT_NO_TOUCH (1u << 8)  /* no-touch-required (recognised, not used) */

/* A parsed certificate. Plain data: the caller allocates it (about 6 KiB). */
struct km_cert {
    uint8_t nonce[KM_CERT_NONCE_MAX];
    size_t nonce_len;
    struct km_pubkey key; /* the certified (grantee's) key */
    uint64_t serial;
    uint32_t type; /* KM_CERT_USER or KM_CERT_HOST */
    char key_id[KM_CERT_KEY_ID_MAX + 1];
    char principals[KM_CERT_MAX_PRINCIPALS][KM_CERT_PRINCIPAL_MAX + 1];
    size_t n_principals;
    uint64_t valid_after;  /* seconds since the epoch, inclusive */
    uint64_t valid_before; /* seconds since the epoch, exclusive */
    /* critical options */
    bool has_force_command;
    char force_command[KM_CERT_COMMAND_MAX + 1];
    bool has_source_address;
    char source_address[KM_CERT_SOURCE_MAX + 1];
    /* The first critical option this parser does not know ("" if none): such a
     * certificate must be refused by any verifier (PROTOCOL.certkeys). */
    char unknown_critical[KM_CERT_OPTION_NAME_MAX + 1];
    /* extensions (unknown ones are ignored, as OpenSSH does) */
    uint32_t ext; /* KM_CERT_EXT_* */
    uint16_t ports[KM_CERT_MAX_PORTS];
    size_t n_ports;
    struct km_pubkey signer; /* the signature key */
    uint8_t sig[KM_SIG_LEN];
    size_t signed_len; /* bytes of the blob the signature covers */
};

/* Parse a certificate wire blob (exactly len bytes, no trailing bytes). Pure; the signature
 * is NOT checked (km_cert_verify_sig). Returns 0, KM_ERR_KEY_TYPE when the blob is another
 * key or certificate type, KM_ERR_TOO_LARGE past a limit above, or KM_ERR_INVALID for
 * anything malformed: truncation, trailing bytes (in the blob or in any nested structure),
 * a principal, key id or option value containing NUL, an empty principal, options or
 * extensions not in strictly ascending order (duplicates), a malformed known option value
 * (force-command, source-address, permit-ports@keymesh), a key or signature of the wrong
 * length. *out is zeroed first. */
KM_MUST_CHECK int km_cert_parse(const uint8_t *blob, size_t len, struct km_cert *out);

/* Check the Ed25519 signature of a parsed certificate over blob (the same bytes it was
 * parsed from). Returns 0 or KM_ERR_CRYPTO. */
KM_MUST_CHECK int km_cert_verify_sig(const struct km_cert *c, const uint8_t *blob, size_t len);

/* Decode the text form "ssh-ed25519-cert-v01@openssh.com <base64> [comment]" (one line;
 * surrounding whitespace ignored) into the blob, appended to out. Returns 0, KM_ERR_KEY_TYPE
 * for another type name, KM_ERR_TOO_LARGE (text or blob past the limits), KM_ERR_INVALID. The
 * blob is not parsed: call km_cert_parse on it. */
KM_MUST_CHECK int km_cert_decode_text(const char *text, size_t len, struct km_buf *out);

/* Serialise c (every field but signer, sig and signed_len) and sign it with signer; the
 * blob is appended to out (all or nothing). Options and extensions are written in the
 * canonical (sorted) order. Returns 0, KM_ERR_INVALID when c breaks the profile the parser
 * enforces (no principals, an empty principal, an over-long field, type not user/host, ports
 * given without KM_CERT_EXT_PORTS, a port of 0), KM_ERR_CRYPTO, or a km_buf write error. */
KM_MUST_CHECK int km_cert_sign(const struct km_cert *c, const struct km_key *signer,
                               struct km_buf *out);

/* Format a blob as the one-line text form with comment (may be NULL or ""), with a
 * trailing newline and no NUL, appended to out. Returns 0, KM_ERR_INVALID for a comment with a
 * line break, or a km_buf write error. */
KM_MUST_CHECK int km_cert_format_text(const uint8_t *blob, size_t len, const char *comment,
                                      struct km_buf *out);

#endif
