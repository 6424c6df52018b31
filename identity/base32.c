/* RFC 4648 section 6 base32, lowercase alphabet, no padding (DESIGN.md section 3).
 *
 * Every 5 input bytes become 8 characters of 5 bits each. A final group of 1..4 bytes becomes
 * 2, 4, 5 or 7 characters; the bits of the last character beyond the input are zero. The
 * decoder insists on that, so each byte string has exactly one accepted spelling and a node
 * ID cannot be written two ways. */
#include "identity/base32.h"

#include <stdint.h>

static const char alphabet[32] = "abcdefghijklmnopqrstuvwxyz234567";

/* Characters for a final group of r bytes (r = 0..4), RFC 4648 section 6 cases (1)-(5). */
static const uint8_t tail_chars[5] = {0, 2, 4, 5, 7};

/* Bytes encoded by a final group of c characters (c = 0..7); 0xff marks a length that no
 * byte count encodes to (1, 3 or 6 characters). */
static const uint8_t tail_bytes[8] = {0, 0xff, 1, 0xff, 2, 3, 0xff, 4};

size_t km_base32_encoded_len(size_t n)
{
    return n / 5 * 8 + tail_chars[n % 5];
}

/* Value of one base32 character, either case, or -1. */
static int char_value(char c)
{
    if (c >= 'a' && c <= 'z') {
        return c - 'a';
    }
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= '2' && c <= '7') {
        return c - '2' + 26;
    }
    return -1;
}

int km_base32_encode(const uint8_t *in, size_t n, char *out, size_t outsz)
{
    /* n / 5 * 8 overflows only for absurd n; refuse rather than wrap. */
    if (n / 5 > (SIZE_MAX - 16) / 8) {
        return KM_ERR_TOO_LARGE;
    }
    size_t need = km_base32_encoded_len(n);
    if (outsz == 0 || need > outsz - 1) {
        return KM_ERR_TOO_LARGE;
    }
    size_t o = 0;
    uint32_t acc = 0; /* bit accumulator; never holds more than 12 bits */
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8 | in[i]) & 0xfffu;
        bits += 8;
        while (bits >= 5) {
            bits -= 5;
            out[o++] = alphabet[(acc >> bits) & 31u];
        }
    }
    if (bits > 0) {
        /* The final partial character, padded with zero bits on the right. */
        out[o++] = alphabet[(acc << (5 - bits)) & 31u];
    }
    out[o] = '\0';
    return 0;
}

int km_base32_decode(const char *in, size_t inlen, uint8_t *out, size_t outsz, size_t *outlen)
{
    if (outlen != NULL) {
        *outlen = 0;
    }
    uint8_t tail = tail_bytes[inlen % 8];
    if (tail == 0xff) {
        return KM_ERR_INVALID;
    }
    size_t n = inlen / 8 * 5 + tail;
    if (n > outsz) {
        return KM_ERR_TOO_LARGE;
    }
    /* Validate every character before writing anything, so a failed call leaves out as it
     * was. '=' padding is not in the alphabet and falls out here too. */
    for (size_t i = 0; i < inlen; i++) {
        if (char_value(in[i]) < 0) {
            return KM_ERR_INVALID;
        }
    }
    /* The unused low bits of the last character must be zero (RFC 4648 section 3.5 allows
     * decoders to reject otherwise; we must, for one spelling per node ID). */
    if (inlen > 0) {
        unsigned used = (unsigned)(tail * 8) % 5; /* bits of the last char that carry data */
        if (used != 0) {
            unsigned last = (unsigned)char_value(in[inlen - 1]);
            if ((last & ((1u << (5 - used)) - 1u)) != 0) {
                return KM_ERR_INVALID;
            }
        }
    }
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < inlen; i++) {
        acc = (acc << 5 | (unsigned)char_value(in[i])) & 0xfffu; /* at most 12 bits live */
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (outlen != NULL) {
        *outlen = o;
    }
    return 0;
}
