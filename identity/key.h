/* Ed25519 node keys: generation, the OpenSSH "openssh-key-v1" private key file, and public
 * key text forms (DESIGN.md section 3). */
#ifndef KM_IDENTITY_KEY_H
#define KM_IDENTITY_KEY_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"

#define KM_PUBKEY_LEN 32
#define KM_SIG_LEN 64

/* A public key. Plain value type: copy it freely. */
struct km_pubkey {
    uint8_t b[KM_PUBKEY_LEN];
};

/* A key pair (secret and public). Opaque; the secret is wiped by km_key_free. */
struct km_key;

/* Generate a new key pair with libsodium. Returns 0 or -ENOMEM; *out is NULL on failure. */
KM_MUST_CHECK int km_key_generate(struct km_key **out);

/* Build a key pair from a 32-byte Ed25519 seed (RFC 8032 secret key). */
KM_MUST_CHECK int km_key_from_seed(const uint8_t seed[static 32], struct km_key **out);

/* Wipe and free. Accepts NULL. */
void km_key_free(struct km_key *k);

/* The public half; borrowed, valid as long as k. */
const struct km_pubkey *km_key_pub(const struct km_key *k);

/* Sign msg; sig receives KM_SIG_LEN bytes. Returns 0 or KM_ERR_CRYPTO. */
KM_MUST_CHECK int km_key_sign(const struct km_key *k, const void *msg, size_t len,
                              uint8_t sig[static KM_SIG_LEN]);

/* Verify a signature by pk over msg. Returns 0 or KM_ERR_CRYPTO. */
KM_MUST_CHECK int km_pubkey_verify(const struct km_pubkey *pk, const void *msg, size_t len,
                                   const uint8_t sig[static KM_SIG_LEN]);

/* Constant-time equality. */
int km_pubkey_equal(const struct km_pubkey *a, const struct km_pubkey *b);

/* Parse an unencrypted OpenSSH private key file's text ("-----BEGIN OPENSSH PRIVATE
 * KEY-----", PROTOCOL.key). Pure: no I/O. On success *out owns a new key and, if comment is
 * non-NULL, *comment a new NUL-terminated string (caller frees both). Errors:
 * KM_ERR_KEY_ENCRYPTED (cipher or KDF other than "none"), KM_ERR_KEY_TYPE (not ssh-ed25519),
 * KM_ERR_KEY_MISMATCH (public half does not match the secret), KM_ERR_KEY_CORRUPT
 * (everything else malformed: armour, base64, truncation, check bytes, padding, trailing
 * bytes, more than one key), -ENOMEM. */
KM_MUST_CHECK int km_key_parse_openssh(const void *text, size_t len, struct km_key **out,
                                       char **comment);

/* Append k as an unencrypted openssh-key-v1 PEM text to out, with comment (may be ""). */
KM_MUST_CHECK int km_key_format_openssh(const struct km_key *k, const char *comment,
                                        struct km_buf *out);

/* Load a private key file. Refuses with KM_ERR_KEY_PERMS a file that group or others may
 * read or write (like OpenSSH), otherwise as km_key_parse_openssh or -errno. */
KM_MUST_CHECK int km_key_load(const char *path, struct km_key **out, char **comment);

/* Save k to path (mode 0600) and its public key line to "<path>.pub" (mode 0644),
 * atomically. Without force an existing file is never replaced: -EEXIST. */
KM_MUST_CHECK int km_key_save(const struct km_key *k, const char *path, const char *comment,
                              int force);

/* Format "ssh-ed25519 <base64 blob>[ <comment>]" (the OpenSSH public key line; comment may
 * be NULL) into out. Returns 0 or KM_ERR_TOO_LARGE. */
KM_MUST_CHECK int km_pubkey_format_openssh(const struct km_pubkey *pk, const char *comment,
                                           char *out, size_t outsz);

/* Parse a public key given as text: an OpenSSH line "ssh-ed25519 <base64> [comment]", the
 * bare base64 of the SSH wire blob, the base64 of the raw 32 bytes, or 64 hex digits.
 * Surrounding whitespace is ignored. Returns 0, KM_ERR_KEY_TYPE for another SSH key type, or
 * KM_ERR_INVALID. */
KM_MUST_CHECK int km_pubkey_parse(const char *text, size_t len, struct km_pubkey *out);

/* Write the SSH wire blob of pk (string "ssh-ed25519", string key) to out. */
KM_MUST_CHECK int km_pubkey_put_blob(const struct km_pubkey *pk, struct km_buf *out);

/* Parse an SSH wire blob of an ssh-ed25519 public key from b, consuming it. */
KM_MUST_CHECK int km_pubkey_get_blob(struct km_buf *b, struct km_pubkey *out);

#endif
