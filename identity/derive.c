/* Node ID, FQDN and VIP from a public key (DESIGN.md section 3). These are only ways to
 * find a key: whoever uses a name or a VIP still checks the peer's key against it. */
#include "identity/derive.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "identity/base32.h"

/* IPv6 text: 45 characters (INET6_ADDRSTRLEN - 1). */
#define ADDR_TEXT_MAX 45

void km_node_id(const struct km_pubkey *pk, char out[static KM_NODE_ID_LEN + 1])
{
    /* Cannot fail: 32 bytes encode to exactly KM_NODE_ID_LEN characters. */
    if (km_base32_encode(pk->b, KM_PUBKEY_LEN, out, KM_NODE_ID_LEN + 1) != 0) {
        out[0] = '\0';
    }
}

int km_node_id_parse(const char *s, size_t len, struct km_pubkey *out)
{
    size_t n = 0;
    memset(out, 0, sizeof *out);
    if (len != KM_NODE_ID_LEN) {
        return KM_ERR_NODE_ID;
    }
    /* The decoder rejects characters outside a-z/A-Z/2-7 and non-zero trailing bits, so the
     * 52 characters map to one key and one key to one (lowercased) node ID. */
    if (km_base32_decode(s, len, out->b, sizeof out->b, &n) != 0 || n != KM_PUBKEY_LEN) {
        memset(out, 0, sizeof *out);
        return KM_ERR_NODE_ID;
    }
    return 0;
}

int km_fqdn(const struct km_pubkey *pk, const char *suffix, char *out, size_t outsz)
{
    char id[KM_NODE_ID_LEN + 1];
    km_node_id(pk, id);
    if (outsz > 0) {
        out[0] = '\0';
    }
    /* DNS names are at most 253 characters in text form (RFC 1035 section 2.3.4). */
    if (strlen(suffix) > KM_SUFFIX_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    int n = snprintf(out, outsz, "%s.%s", id, suffix);
    if (n < 0 || (size_t)n >= outsz) {
        if (outsz > 0) {
            out[0] = '\0';
        }
        return KM_ERR_TOO_LARGE;
    }
    return 0;
}

/* ASCII-only lowercase; DNS case-insensitivity is ASCII only (RFC 4343), whatever the locale
 * says. */
static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static int equal_nocase(const char *a, const char *b, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (lower(a[i]) != lower(b[i])) {
            return 0;
        }
    }
    return 1;
}

int km_fqdn_parse(const char *name, const char *suffix, struct km_pubkey *out)
{
    memset(out, 0, sizeof *out);
    /* Bounded scan: a longer string cannot be a DNS name. */
    size_t len = strnlen(name, KM_FQDN_MAX + 1);
    size_t slen = strlen(suffix);
    if (slen > 0 && suffix[slen - 1] == '.') {
        slen--; /* tolerate an absolute suffix too */
    }
    if (len > KM_FQDN_MAX || slen == 0) {
        return KM_ERR_INVALID;
    }
    /* One optional trailing dot: the absolute form of the same name. */
    if (len > 0 && name[len - 1] == '.') {
        len--;
    }
    /* name = label "." suffix, with label non-empty. */
    if (len < slen + 2 || name[len - slen - 1] != '.' ||
        !equal_nocase(name + len - slen, suffix, slen)) {
        return KM_ERR_INVALID;
    }
    size_t label_len = len - slen - 1;
    if (memchr(name, '.', label_len) != NULL) {
        return KM_ERR_INVALID; /* more labels than <node ID>.<suffix> */
    }
    return km_node_id_parse(name, label_len, out);
}

static int is_ldh(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

int km_suffix_check(const char *suffix)
{
    size_t len = strnlen(suffix, KM_SUFFIX_MAX + 1);
    if (len == 0 || len > KM_SUFFIX_MAX) {
        return KM_ERR_INVALID;
    }
    /* Labels of 1-63 letters, digits and hyphens, no leading or trailing hyphen (RFC 1123
     * section 2.1 host names). An empty label also catches a leading, trailing or double
     * dot. */
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && suffix[i] != '.') {
            if (!is_ldh(suffix[i])) {
                return KM_ERR_INVALID;
            }
            continue;
        }
        size_t label_len = i - start;
        if (label_len == 0 || label_len > 63 || suffix[start] == '-' || suffix[i - 1] == '-') {
            return KM_ERR_INVALID;
        }
        start = i + 1;
    }
    return 0;
}

void km_vip(const struct km_pubkey *pk, uint16_t prefix, uint8_t out[static 16])
{
    uint8_t h[crypto_hash_sha256_BYTES];
    (void)crypto_hash_sha256(h, pk->b, KM_PUBKEY_LEN); /* cannot fail */
    out[0] = (uint8_t)(prefix >> 8);
    out[1] = (uint8_t)prefix;
    memcpy(out + 2, h, 14);
}

void km_vip_str(const struct km_pubkey *pk, uint16_t prefix, char out[static KM_VIP_STRLEN])
{
    uint8_t a[16];
    km_vip(pk, prefix, a);
    if (inet_ntop(AF_INET6, a, out, KM_VIP_STRLEN) == NULL) {
        out[0] = '\0'; /* unreachable: the buffer is INET6_ADDRSTRLEN */
    }
}

int km_prefix_parse(const char *s, uint16_t *out)
{
    *out = 0;
    const char *slash = strchr(s, '/');
    if (slash == NULL) {
        return KM_ERR_INVALID;
    }
    size_t alen = (size_t)(slash - s);
    if (alen == 0 || alen > ADDR_TEXT_MAX) {
        return KM_ERR_INVALID;
    }
    /* The length must be spelled exactly "16": the VIP layout fixes it. */
    if (strcmp(slash + 1, "16") != 0) {
        return KM_ERR_INVALID;
    }
    char addr[ADDR_TEXT_MAX + 1];
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    uint8_t a[16];
    if (inet_pton(AF_INET6, addr, a) != 1) {
        return KM_ERR_INVALID;
    }
    /* No host bits: bytes 2-15 belong to the key hash. */
    for (size_t i = 2; i < sizeof a; i++) {
        if (a[i] != 0) {
            return KM_ERR_INVALID;
        }
    }
    *out = (uint16_t)((unsigned)a[0] << 8 | a[1]);
    return 0;
}

void km_prefix_str(uint16_t prefix, char out[static 16])
{
    uint8_t a[16] = {(uint8_t)(prefix >> 8), (uint8_t)prefix};
    char addr[KM_VIP_STRLEN];
    /* inet_ntop spells it as RFC 5952 does: "fd6b::"; at most "ffff::" (6). */
    if (inet_ntop(AF_INET6, a, addr, sizeof addr) == NULL ||
        snprintf(out, 16, "%s/16", addr) >= 16) {
        out[0] = '\0';
    }
}
