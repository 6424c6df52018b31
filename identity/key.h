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

/* Limits. A key file is about 400 bytes; anything near these is not a key. */
#define KM_KEY_FILE_MAX (64u * 1024u) /* bytes of private key file text */
#define KM_KEY_COMMENT_MAX 1024u      /* bytes of key comment */
#define KM_PUBKEY_TEXT_MAX 8192u      /* bytes of text given to km_pubkey_parse */
/* Buffer size that holds any km_pubkey_format_openssh() line with a comment of at most
 * KM_KEY_COMMENT_MAX bytes, plus a newline and the NUL: "ssh-ed25519 " (12) + base64 of
 * the 51-byte blob (68) + " " + comment + "\n" + NUL. */
#define KM_PUBKEY_LINE_MAX (12u + 68u + 1u + KM_KEY_COMMENT_MAX + 2u)

/* A public key. Plain value type: copy it freely. */
struct km_pubkey {
    uint8_t b[KM_PUBKEY_LEN];
};

/* A key pair (secret and public). Opaque; the secret is wiped by km_key_free. */
struct km_key;

/* Generate a new key pair with libsodium (calls sodium_init()). Returns 0, -ENOMEM or
 * KM_ERR_CRYPTO if libsodium cannot initialise; *out is NULL on failure. */
KM_MUST_CHECK int km_key_generate(struct km_key **out);

/* Build a key pair from a 32-byte Ed25519 seed (RFC 8032 secret key). The caller keeps
 * and wipes seed. Returns 0, -ENOMEM or KM_ERR_CRYPTO; *out is NULL on failure. */
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

/* Constant-time equality: 1 if equal, 0 if not. */
int km_pubkey_equal(const struct km_pubkey *a, const struct km_pubkey *b);

/* Parse an unencrypted OpenSSH private key file's text ("-----BEGIN OPENSSH PRIVATE
 * KEY-----", PROTOCOL.key). Pure: no I/O. On success *out owns a new key and, if comment is
 * non-NULL, *comment a new NUL-terminated string (caller frees both). Errors:
 * KM_ERR_KEY_ENCRYPTED (cipher or KDF other than "none"), KM_ERR_KEY_TYPE (not ssh-ed25519),
 * KM_ERR_KEY_MISMATCH (public half does not match the secret), KM_ERR_KEY_CORRUPT
 * (everything else malformed: armour, base64, truncation, check bytes, padding, trailing
 * bytes, more than one key, a comment longer than KM_KEY_COMMENT_MAX or containing NUL),
 * KM_ERR_TOO_LARGE (len > KM_KEY_FILE_MAX), -ENOMEM. Accepts LF or CRLF line endings and
 * whitespace after the END line, nothing else around the armour. An encrypted key is
 * reported as such as soon as its cipher/KDF names are read, before anything else. */
KM_MUST_CHECK int km_key_parse_openssh(const void *text, size_t len, struct km_key **out,
                                       char **comment);

/* Append k as an unencrypted openssh-key-v1 PEM text to out (all of it or nothing), with
 * comment (NULL or ""; at most KM_KEY_COMMENT_MAX bytes, else KM_ERR_TOO_LARGE). The text
 * holds the secret: out should be an owned km_buf, which wipes on reset. Other errors are
 * those of km_buf writes. */
KM_MUST_CHECK int km_key_format_openssh(const struct km_key *k, const char *comment,
                                        struct km_buf *out);

/* Load a private key file. Refuses with KM_ERR_KEY_PERMS a file whose mode has any group or
 * other bit set (mode & 077, like OpenSSH); KM_ERR_TOO_LARGE beyond KM_KEY_FILE_MAX;
 * KM_ERR_INVALID if path is not a regular file; otherwise as km_key_parse_openssh or
 * -errno. */
KM_MUST_CHECK int km_key_load(const char *path, struct km_key **out, char **comment);

/* Save k to path (mode 0600) and its public key line to "<path>.pub" (mode 0644), each
 * written atomically (temporary file, fsync, rename). Without force, -EEXIST if either file
 * exists (both are checked before either is written) and an existing file is never
 * replaced. With force both are replaced. comment may be NULL; KM_ERR_INVALID if it holds a
 * line break, KM_ERR_TOO_LARGE if longer than KM_KEY_COMMENT_MAX; otherwise -errno. */
KM_MUST_CHECK int km_key_save(const struct km_key *k, const char *path, const char *comment,
                              int force);

/* Format "ssh-ed25519 <base64 blob>[ <comment>]" (the OpenSSH public key line; comment may
 * be NULL or "", then no space follows the key) into out, NUL-terminated, no newline.
 * Returns 0, KM_ERR_TOO_LARGE (KM_PUBKEY_LINE_MAX always suffices for a bounded comment),
 * or KM_ERR_INVALID if comment contains CR or LF. */
KM_MUST_CHECK int km_pubkey_format_openssh(const struct km_pubkey *pk, const char *comment,
                                           char *out, size_t outsz);

/* Parse a public key given as text: an OpenSSH line "ssh-ed25519 <base64> [comment]", the
 * bare base64 of the SSH wire blob, the base64 of the raw 32 bytes, or 64 hex digits.
 * Surrounding whitespace is ignored; text must not contain NUL. Returns 0, KM_ERR_KEY_TYPE
 * for another SSH key type ("ssh-rsa ...", "ecdsa-...", a certificate, or a bare blob of
 * one), KM_ERR_TOO_LARGE if len > KM_PUBKEY_TEXT_MAX, or KM_ERR_INVALID. */
KM_MUST_CHECK int km_pubkey_parse(const char *text, size_t len, struct km_pubkey *out);

/* Write the SSH wire blob of pk (string "ssh-ed25519", string key: 51 bytes) to out, all
 * or nothing. Errors are those of km_buf writes. */
KM_MUST_CHECK int km_pubkey_put_blob(const struct km_pubkey *pk, struct km_buf *out);

/* Read the two fields of an ssh-ed25519 wire blob from b (string type, string key),
 * consuming them; bytes after them are left for the caller (check km_buf_get_end when the
 * blob was a whole string). Returns 0, KM_ERR_KEY_TYPE for another type name, or
 * KM_ERR_INVALID (truncated, key not 32 bytes). On failure b is not advanced. */
KM_MUST_CHECK int km_pubkey_get_blob(struct km_buf *b, struct km_pubkey *out);

#endif
