/* Fuzz target: node IDs, FQDNs, base32 and mesh prefixes. The first byte chooses the
 * parser; the rest is its input, copied into an exact-size heap buffer (NUL-terminated for
 * the string APIs). Accepted input must round-trip through the matching formatter. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "identity/base32.h"
#include "identity/derive.h"
#include "tests/fuzz/fuzz.h"

static void fuzz_node_id(const char *s, size_t len)
{
    struct km_pubkey pk;
    if (km_node_id_parse(s, len, &pk) == 0) {
        char id[KM_NODE_ID_LEN + 1];
        km_node_id(&pk, id);
        if (strncasecmp(id, s, len) != 0) {
            abort(); /* one spelling per key, up to case */
        }
    }
}

static void fuzz_fqdn(const char *s)
{
    struct km_pubkey pk;
    if (km_fqdn_parse(s, KM_DEFAULT_SUFFIX, &pk) == 0) {
        char name[KM_FQDN_MAX];
        struct km_pubkey back;
        if (km_fqdn(&pk, KM_DEFAULT_SUFFIX, name, sizeof name) != 0 ||
            km_fqdn_parse(name, KM_DEFAULT_SUFFIX, &back) != 0 || !km_pubkey_equal(&pk, &back)) {
            abort();
        }
    }
    /* Results do not matter here, only that nothing misbehaves; gcc ignores (void) casts
     * on warn_unused_result, hence the sum. */
    int r = km_fqdn_parse(s, "m.example.com", &pk) + km_suffix_check(s);
    if (r > 0) {
        abort(); /* both return 0 or a negative code */
    }
}

static void fuzz_base32(const char *s, size_t len)
{
    uint8_t out[512];
    size_t n = 0;
    if (km_base32_decode(s, len, out, sizeof out, &n) == 0) {
        char enc[1024];
        if (km_base32_encode(out, n, enc, sizeof enc) != 0 || strlen(enc) != len ||
            strncasecmp(enc, s, len) != 0) {
            abort();
        }
    }
}

static void fuzz_prefix(const char *s)
{
    uint16_t p = 0;
    if (km_prefix_parse(s, &p) == 0) {
        char text[16];
        uint16_t back = 0;
        km_prefix_str(p, text);
        if (km_prefix_parse(text, &back) != 0 || back != p) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    uint8_t mode = data[0];
    size_t len = size - 1;
    char *s = malloc(len + 1);
    if (s == NULL) {
        return 0;
    }
    if (len > 0) {
        memcpy(s, data + 1, len);
    }
    s[len] = '\0';
    switch (mode % 4) {
    case 0:
        fuzz_node_id(s, len);
        break;
    case 1:
        fuzz_fqdn(s);
        break;
    case 2:
        fuzz_base32(s, len);
        break;
    default:
        fuzz_prefix(s);
        break;
    }
    free(s);
    return 0;
}
