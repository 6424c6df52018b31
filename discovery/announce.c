/* Signed announcements: build, parse and verify, text form (docs/PROTOCOL.md section 3). */
#include "discovery/announce.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <string.h>

#include <sodium.h>

/* PROTOCOL.md 3: the record type and format version. */
static const uint8_t magic[4] = {'K', 'M', 'A', '1'};
#define VERSION 1u

/* PROTOCOL.md 3: signed before the body but never sent, so that no other keymesh (or SSH)
 * signature by the same key can be passed off as an announcement, and vice versa. The
 * terminating NUL is part of the context. */
static const char context[] = "keymesh announce v1";
#define CONTEXT_LEN sizeof context

#define FAMILY_V4 4u
#define FAMILY_V6 6u

/* Wire family of a path, with its address bytes and port; 0 or KM_ERR_INVALID. */
static int path_addr(const struct km_path *p, uint8_t *family, const uint8_t **addr,
                     size_t *addr_len, uint16_t *port)
{
    if (p->addr.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&p->addr;
        *family = FAMILY_V4;
        *addr = (const uint8_t *)&sin->sin_addr;
        *addr_len = 4;
        *port = ntohs(sin->sin_port);
    } else if (p->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&p->addr;
        *family = FAMILY_V6;
        *addr = sin6->sin6_addr.s6_addr;
        *addr_len = 16;
        *port = ntohs(sin6->sin6_port);
    } else {
        return KM_ERR_INVALID;
    }
    return *port == 0 ? KM_ERR_INVALID : 0;
}

static int put_path(struct km_buf *b, const struct km_path *p)
{
    uint8_t family = 0;
    const uint8_t *addr = NULL;
    size_t addr_len = 0;
    uint16_t port = 0;
    int r;

    if ((int)p->kind < 0 || (int)p->kind >= KM_PATH_KIND_N ||
        (p->kind == KM_PATH_RELAY && !p->has_via)) {
        return KM_ERR_INVALID;
    }
    if ((r = path_addr(p, &family, &addr, &addr_len, &port)) != 0) {
        return r;
    }
    if ((r = km_buf_put_u8(b, (uint8_t)p->kind)) != 0 || (r = km_buf_put_u8(b, family)) != 0 ||
        (r = km_buf_put_bytes(b, addr, addr_len)) != 0 || (r = km_buf_put_u16(b, port)) != 0) {
        return r;
    }
    if (p->kind == KM_PATH_RELAY && (r = km_buf_put_bytes(b, p->via.b, KM_PUBKEY_LEN)) != 0) {
        return r;
    }
    return 0;
}

int km_announce_build(const struct km_key *k, uint64_t seq, uint64_t expires_unix,
                      const struct km_path *paths, size_t n, struct km_buf *out)
{
    if (k == NULL || out == NULL || (paths == NULL && n > 0)) {
        return KM_ERR_INVALID;
    }
    if (n > KM_ANNOUNCE_PATHS_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    /* The signed message is context || body; the body and the signature are then appended
     * to out with one write, so out gets all of it or nothing. */
    uint8_t mem[CONTEXT_LEN + KM_ANNOUNCE_MAX];
    struct km_buf msg;
    int r;

    km_buf_init_fixed(&msg, mem, sizeof mem);
    if ((r = km_buf_put_bytes(&msg, context, CONTEXT_LEN)) != 0 ||
        (r = km_buf_put_bytes(&msg, magic, sizeof magic)) != 0 ||
        (r = km_buf_put_u8(&msg, VERSION)) != 0 ||
        (r = km_buf_put_bytes(&msg, km_key_pub(k)->b, KM_PUBKEY_LEN)) != 0 ||
        (r = km_buf_put_u64(&msg, seq)) != 0 || (r = km_buf_put_u64(&msg, expires_unix)) != 0 ||
        (r = km_buf_put_u8(&msg, (uint8_t)n)) != 0) {
        return r;
    }
    for (size_t i = 0; i < n; i++) {
        if ((r = put_path(&msg, &paths[i])) != 0) {
            return r;
        }
    }
    uint8_t *sig = NULL;
    size_t msg_len = km_buf_len(&msg);
    /* Raw pointers: the signature is crypto output over the bytes just written. */
    if ((r = km_buf_reserve(&msg, KM_SIG_LEN, &sig)) != 0 ||
        (r = km_key_sign(k, km_buf_peek_ptr(&msg), msg_len, sig)) != 0) {
        return r;
    }
    return km_buf_put_bytes(out, km_buf_peek_ptr(&msg) + CONTEXT_LEN,
                            km_buf_len(&msg) - CONTEXT_LEN);
}

/* Truncation of a complete record is malformed, not "wait for more". */
static int malformed(int r)
{
    return r == KM_ERR_INCOMPLETE || r == KM_ERR_TRAILING ? KM_ERR_INVALID : r;
}

static int get_path(struct km_buf *b, struct km_path *p)
{
    uint8_t kind = 0;
    uint8_t family = 0;
    uint16_t port = 0;
    int r;

    /* kind, family */
    if ((r = km_buf_get_u8(b, &kind)) != 0 || (r = km_buf_get_u8(b, &family)) != 0) {
        return malformed(r);
    }
    if (kind >= KM_PATH_KIND_N) {
        return KM_ERR_INVALID;
    }
    p->kind = (enum km_path_kind)kind;
    /* address, port */
    if (family == FAMILY_V4) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&p->addr;
        sin->sin_family = AF_INET;
        if ((r = km_buf_get_bytes(b, &sin->sin_addr, 4)) != 0 ||
            (r = km_buf_get_u16(b, &port)) != 0) {
            return malformed(r);
        }
        sin->sin_port = htons(port);
    } else if (family == FAMILY_V6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&p->addr;
        sin6->sin6_family = AF_INET6;
        if ((r = km_buf_get_bytes(b, sin6->sin6_addr.s6_addr, 16)) != 0 ||
            (r = km_buf_get_u16(b, &port)) != 0) {
            return malformed(r);
        }
        sin6->sin6_port = htons(port);
    } else {
        return KM_ERR_INVALID;
    }
    if (port == 0) {
        return KM_ERR_INVALID;
    }
    /* via (relay only) */
    if (p->kind == KM_PATH_RELAY) {
        if ((r = km_buf_get_bytes(b, p->via.b, KM_PUBKEY_LEN)) != 0) {
            return malformed(r);
        }
        p->has_via = true;
    }
    p->source = KM_PATH_SRC_GOSSIP;
    p->expires_ms = 0;
    return 0;
}

static int parse(const uint8_t *data, size_t len, uint64_t now_unix, struct km_announce *out)
{
    struct km_buf b;
    uint8_t m[sizeof magic];
    uint8_t version = 0;
    uint8_t n = 0;
    int r;

    if (len > KM_ANNOUNCE_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    km_buf_init_view(&b, data, len);
    /* magic, version */
    if ((r = km_buf_get_bytes(&b, m, sizeof m)) != 0) {
        return malformed(r);
    }
    if (memcmp(m, magic, sizeof magic) != 0) {
        return KM_ERR_INVALID;
    }
    if ((r = km_buf_get_u8(&b, &version)) != 0) {
        return malformed(r);
    }
    if (version != VERSION) {
        return KM_ERR_UNSUPPORTED;
    }
    /* key, seq, expires, path count */
    if ((r = km_buf_get_bytes(&b, out->key.b, KM_PUBKEY_LEN)) != 0 ||
        (r = km_buf_get_u64(&b, &out->seq)) != 0 || (r = km_buf_get_u64(&b, &out->expires)) != 0 ||
        (r = km_buf_get_u8(&b, &n)) != 0) {
        return malformed(r);
    }
    if (n > KM_ANNOUNCE_PATHS_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    /* paths */
    for (size_t i = 0; i < n; i++) {
        if ((r = get_path(&b, &out->paths[i])) != 0) {
            return r;
        }
    }
    out->n_paths = n;
    /* signature, then nothing */
    size_t body_len = len - km_buf_len(&b);
    uint8_t sig[KM_SIG_LEN];
    if ((r = km_buf_get_bytes(&b, sig, sizeof sig)) != 0 || (r = km_buf_get_end(&b)) != 0) {
        return malformed(r);
    }
    /* The signed message is context || body (PROTOCOL.md 3); len is bounded above. */
    uint8_t msg[CONTEXT_LEN + KM_ANNOUNCE_MAX];
    memcpy(msg, context, CONTEXT_LEN);
    memcpy(msg + CONTEXT_LEN, data, body_len);
    if ((r = km_pubkey_verify(&out->key, msg, CONTEXT_LEN + body_len, sig)) != 0) {
        return KM_ERR_CRYPTO;
    }
    /* Expiry last: an expired record is one the key really signed, worth telling apart
     * from a forgery in the counters. */
    if (out->expires <= now_unix) {
        return KM_ANNOUNCE_ERR_EXPIRED;
    }
    return 0;
}

int km_announce_parse(const uint8_t *data, size_t len, uint64_t now_unix, struct km_announce *out)
{
    if (out == NULL) {
        return KM_ERR_INVALID;
    }
    memset(out, 0, sizeof *out);
    if (data == NULL) {
        return KM_ERR_INVALID;
    }
    int r = parse(data, len, now_unix, out);
    if (r != 0) {
        memset(out, 0, sizeof *out);
    }
    return r;
}

#define TEXT_PREFIX "a="
#define TEXT_PREFIX_LEN 2u

int km_announce_to_text(const uint8_t *data, size_t len, char *out, size_t outsz)
{
    if (out == NULL || outsz == 0) {
        return KM_ERR_TOO_LARGE;
    }
    out[0] = '\0';
    if (data == NULL || len > KM_ANNOUNCE_MAX) {
        return data == NULL ? KM_ERR_INVALID : KM_ERR_TOO_LARGE;
    }
    size_t b64_size = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    if (outsz - 1 < TEXT_PREFIX_LEN || outsz - TEXT_PREFIX_LEN < b64_size) {
        return KM_ERR_TOO_LARGE;
    }
    memcpy(out, TEXT_PREFIX, TEXT_PREFIX_LEN);
    sodium_bin2base64(out + TEXT_PREFIX_LEN, b64_size, data, len, sodium_base64_VARIANT_ORIGINAL);
    return 0;
}

static bool b64_digit(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

int km_announce_from_text(const char *text, size_t len, uint8_t *out, size_t outsz, size_t *out_len)
{
    if (out_len == NULL) {
        return KM_ERR_INVALID;
    }
    *out_len = 0;
    if (text == NULL || out == NULL) {
        return KM_ERR_INVALID;
    }
    if (len >= KM_ANNOUNCE_TEXT_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    if (len < TEXT_PREFIX_LEN || memcmp(text, TEXT_PREFIX, TEXT_PREFIX_LEN) != 0) {
        return KM_ERR_INVALID;
    }
    const char *b64 = text + TEXT_PREFIX_LEN;
    size_t b64_len = len - TEXT_PREFIX_LEN;
    /* Padded base64 is a whole number of quads; checking first keeps the decoder's partial
     * output out of the caller's buffer for the obvious cases. */
    if (b64_len == 0 || b64_len % 4 != 0) {
        return KM_ERR_INVALID;
    }
    size_t pad = (size_t)(b64[b64_len - 1] == '=') + (size_t)(b64[b64_len - 2] == '=');
    /* Check the alphabet ourselves: libsodium 1.0.18 on arm64 (unsigned char) decodes some
     * bytes >= 0x80 as base64 digits (found by tests/fuzz/announce.c). Padding only at the
     * end, at most two. */
    for (size_t i = 0; i < b64_len - pad; i++) {
        if (!b64_digit(b64[i])) {
            return KM_ERR_INVALID;
        }
    }
    if (b64_len / 4 * 3 - pad > outsz) {
        return KM_ERR_TOO_LARGE;
    }
    const char *end = NULL;
    size_t n = 0;
    /* libsodium rejects non-zero padding bits and missing or misplaced padding; the end
     * pointer catches any other character, including an embedded NUL. */
    if (sodium_base642bin(out, outsz, b64, b64_len, NULL, &n, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != b64 + b64_len) {
        return KM_ERR_INVALID;
    }
    *out_len = n;
    return 0;
}
