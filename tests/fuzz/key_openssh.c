/* Fuzz target: the OpenSSH private key file parser (km_key_parse_openssh), the way
 * km_key_load feeds it a file's bytes. Input that starts with the binary magic
 * "openssh-key-v1" is first wrapped in the armour (base64, 70-column lines), so the fuzzer
 * can mutate the binary fields directly instead of having to find valid base64. A parsed key
 * is formatted again and must parse back to the same public key. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "identity/key.h"
#include "tests/fuzz/fuzz.h"

#define MAGIC "openssh-key-v1"

/* The armour around a binary blob, into an owned buffer. */
static int armour(const uint8_t *bin, size_t len, struct km_buf *out)
{
    static const char begin[] = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
    static const char end[] = "-----END OPENSSH PRIVATE KEY-----\n";
    size_t b64_size = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = malloc(b64_size);
    if (b64 == NULL) {
        return -ENOMEM;
    }
    sodium_bin2base64(b64, b64_size, bin, len, sodium_base64_VARIANT_ORIGINAL);
    size_t b64_len = strlen(b64);
    int r = km_buf_put_bytes(out, begin, sizeof begin - 1);
    for (size_t off = 0; r == 0 && off < b64_len; off += 70) {
        size_t n = b64_len - off < 70 ? b64_len - off : 70;
        if ((r = km_buf_put_bytes(out, b64 + off, n)) == 0) {
            r = km_buf_put_u8(out, '\n');
        }
    }
    if (r == 0) {
        r = km_buf_put_bytes(out, end, sizeof end - 1);
    }
    free(b64);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct km_buf in;
    struct km_key *k = NULL;
    char *comment = NULL;
    km_buf_init(&in, 2 * KM_KEY_FILE_MAX);
    if (size >= sizeof MAGIC - 1 && memcmp(data, MAGIC, sizeof MAGIC - 1) == 0) {
        if (armour(data, size, &in) != 0) {
            goto out;
        }
        data = km_buf_peek_ptr(&in);
        size = km_buf_len(&in);
    }
    if (km_key_parse_openssh(data, size, &k, &comment) == 0) {
        struct km_buf text;
        struct km_key *k2 = NULL;
        km_buf_init(&text, KM_KEY_FILE_MAX);
        if (km_key_format_openssh(k, comment, &text) != 0 ||
            km_key_parse_openssh(km_buf_peek_ptr(&text), km_buf_len(&text), &k2, NULL) != 0 ||
            !km_pubkey_equal(km_key_pub(k), km_key_pub(k2))) {
            abort(); /* a key we accept must survive our own writer */
        }
        km_key_free(k2);
        km_buf_reset(&text);
    }
out:
    km_key_free(k);
    free(comment);
    km_buf_reset(&in);
    return 0;
}
