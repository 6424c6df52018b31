/* RFC 4648 base32 with the lowercase alphabet a-z2-7 and no padding (DESIGN.md section 3). */
#ifndef KM_IDENTITY_BASE32_H
#define KM_IDENTITY_BASE32_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Characters needed to encode n bytes, without padding and without the NUL. */
size_t km_base32_encoded_len(size_t n);

/* Encode in[0..n) as lowercase base32 into out, NUL-terminated. Returns 0, or
 * KM_ERR_TOO_LARGE if out cannot hold km_base32_encoded_len(n) + 1 bytes (out untouched). */
KM_MUST_CHECK int km_base32_encode(const uint8_t *in, size_t n, char *out, size_t outsz);

/* Decode inlen characters (upper or lower case, no padding, no whitespace) into out.
 * Rejects with KM_ERR_INVALID: characters outside the alphabet, '=' padding, a length that
 * no byte count encodes to, and non-zero unused trailing bits (so every byte string has one
 * encoding). KM_ERR_TOO_LARGE if out is too small. *outlen receives the byte count (0 on failure);
 * out is written only on success. */
KM_MUST_CHECK int km_base32_decode(const char *in, size_t inlen, uint8_t *out, size_t outsz,
                                   size_t *outlen);

#endif
