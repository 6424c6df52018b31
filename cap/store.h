/* Capability files in the state directory (docs/CAPABILITIES.md):
 *
 *   DIR/caps/held/<serial>.cert     certificates issued to this node (`keymesh cap add`)
 *   DIR/caps/issued/<serial>.cert   certificates this node signed (`keymesh grant`)
 *   DIR/caps/revoked                the revocation list (`keymesh cap revoke`)
 *
 * Certificate files are the OpenSSH one-line text form, so `ssh-keygen -L -f` reads them and
 * `ssh -o CertificateFile=` presents them. */
#ifndef KM_CAP_STORE_H
#define KM_CAP_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "cap/cert.h"
#include "cap/policy.h"
#include "core/buf.h"
#include "core/err.h"

#define KM_CAP_HELD "caps/held"
#define KM_CAP_ISSUED "caps/issued"
#define KM_CAP_REVOKED "caps/revoked"

/* Read a certificate text file and append its blob to blob. Returns 0, -errno, or the codes
 * of km_cert_decode_text. */
KM_MUST_CHECK int km_cap_store_read(const char *path, struct km_buf *blob);

/* Save a blob in text form as DIR/SUB/<serial>.cert (directories made as needed, mode
 * 0700; file mode 0644; atomic; an existing file is replaced). path receives the file name
 * when non-NULL. Returns 0, -errno or KM_ERR_TOO_LARGE. */
KM_MUST_CHECK int km_cap_store_save(const char *dir, const char *sub, const uint8_t *blob,
                                    size_t len, uint64_t serial, const char *comment, char *path,
                                    size_t pathsz);

/* Add DIR/caps/revoked to p; a missing file is an empty list. Returns 0, -errno, or the codes
 * of km_cap_policy_add_revocations (*line says where). */
KM_MUST_CHECK int km_cap_store_load_revoked(const char *dir, struct km_cap_policy *p, size_t *line);

/* Append one line ("serial N" or "key NODE-ID") to DIR/caps/revoked, atomically. */
KM_MUST_CHECK int km_cap_store_revoke(const char *dir, const char *line);

/* Visit every certificate file of DIR/SUB in name order: cb gets the path and the parsed
 * certificate (files that do not parse are passed with c == NULL and err set). Returns 0 or
 * -errno from opening the directory (a missing directory is empty). */
typedef void (*km_cap_store_cb)(void *arg, const char *path, const struct km_cert *c,
                                const uint8_t *blob, size_t len, int err);
KM_MUST_CHECK int km_cap_store_each(const char *dir, const char *sub, km_cap_store_cb cb,
                                    void *arg);

/* The held certificate to present to target at now_s: certified key == self, a principal
 * naming target, inside its validity window; of several, the one valid longest. The blob is
 * appended to out. Returns 0 or KM_ERR_NOT_FOUND. */
KM_MUST_CHECK int km_cap_store_pick(const char *dir, const struct km_pubkey *self,
                                    const struct km_pubkey *target, uint64_t now_s,
                                    struct km_buf *out);

#endif
