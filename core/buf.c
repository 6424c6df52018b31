#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

void km_buf_init(struct km_buf *b, size_t max_size)
{
    memset(b, 0, sizeof *b);
    b->max_size = max_size > KM_BUF_MAX_SIZE ? KM_BUF_MAX_SIZE : max_size;
    b->owned = true;
}

void km_buf_init_fixed(struct km_buf *b, void *mem, size_t cap)
{
    memset(b, 0, sizeof *b);
    b->data = mem;
    b->cap = cap;
    b->max_size = cap;
}

void km_buf_init_view(struct km_buf *b, const void *mem, size_t len)
{
    memset(b, 0, sizeof *b);
    /* The cast drops const only for storage; readonly makes every write path refuse. */
    b->data = (uint8_t *)(uintptr_t)mem;
    b->cap = len;
    b->max_size = len;
    b->woff = len;
    b->readonly = true;
}

void km_buf_reset(struct km_buf *b)
{
    if (b->readonly) {
        b->roff = 0;
        return;
    }
    if (b->data != NULL) {
        sodium_memzero(b->data, b->cap);
    }
    if (b->owned) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
    b->roff = 0;
    b->woff = 0;
}

struct km_buf *km_buf_new(size_t max_size)
{
    struct km_buf *b = malloc(sizeof *b);
    if (b != NULL) {
        km_buf_init(b, max_size);
    }
    return b;
}

void km_buf_free(struct km_buf *b)
{
    if (b == NULL) {
        return;
    }
    km_buf_reset(b);
    free(b);
}

size_t km_buf_len(const struct km_buf *b)
{
    return b->woff - b->roff;
}

size_t km_buf_avail(const struct km_buf *b)
{
    if (b->readonly) {
        return 0;
    }
    return b->max_size - km_buf_len(b);
}

const uint8_t *km_buf_peek_ptr(const struct km_buf *b)
{
    return b->data == NULL ? (const uint8_t *)"" : b->data + b->roff;
}

void km_buf_clear(struct km_buf *b)
{
    if (b->readonly) {
        b->roff = b->woff;
        return;
    }
    if (b->data != NULL) {
        sodium_memzero(b->data, b->woff);
    }
    b->roff = 0;
    b->woff = 0;
}

void km_buf_compact(struct km_buf *b)
{
    if (b->readonly || b->roff == 0) {
        return;
    }
    size_t n = km_buf_len(b);
    memmove(b->data, b->data + b->roff, n);
    sodium_memzero(b->data + n, b->woff - n);
    b->roff = 0;
    b->woff = n;
}

/* Make room for len more bytes at the write offset. */
static int ensure(struct km_buf *b, size_t len)
{
    if (b->readonly) {
        return KM_ERR_READONLY;
    }
    if (len <= b->cap - b->woff) {
        return 0;
    }
    /* Reuse space already read before growing. */
    if (b->roff > 0 && len <= b->cap - km_buf_len(b)) {
        km_buf_compact(b);
        return 0;
    }
    size_t used = km_buf_len(b);
    if (len > b->max_size - used) {
        return KM_ERR_TOO_LARGE;
    }
    if (!b->owned) {
        return KM_ERR_TOO_LARGE;
    }
    size_t need = used + len;
    size_t ncap = b->cap < 64 ? 64 : b->cap;
    while (ncap < need) {
        ncap = ncap > b->max_size / 2 ? b->max_size : ncap * 2;
    }
    if (ncap > b->max_size) {
        ncap = b->max_size;
    }
    /* Not realloc: the old block may hold secrets and must be wiped before it is released. */
    uint8_t *nd = malloc(ncap);
    if (nd == NULL) {
        return -ENOMEM;
    }
    if (used > 0) {
        memcpy(nd, b->data + b->roff, used);
    }
    if (b->data != NULL) {
        sodium_memzero(b->data, b->cap);
        free(b->data);
    }
    b->data = nd;
    b->cap = ncap;
    b->roff = 0;
    b->woff = used;
    return 0;
}

int km_buf_peek_u8(const struct km_buf *b, size_t offset, uint8_t *out)
{
    if (out != NULL) {
        *out = 0;
    }
    if (offset >= km_buf_len(b)) {
        return KM_ERR_INCOMPLETE;
    }
    if (out != NULL) {
        *out = b->data[b->roff + offset];
    }
    return 0;
}

int km_buf_peek_u16(const struct km_buf *b, size_t offset, uint16_t *out)
{
    if (out != NULL) {
        *out = 0;
    }
    if (offset > km_buf_len(b) || km_buf_len(b) - offset < 2) {
        return KM_ERR_INCOMPLETE;
    }
    const uint8_t *p = b->data + b->roff + offset;
    if (out != NULL) {
        *out = (uint16_t)((unsigned)p[0] << 8 | p[1]);
    }
    return 0;
}

int km_buf_peek_u32(const struct km_buf *b, size_t offset, uint32_t *out)
{
    if (out != NULL) {
        *out = 0;
    }
    if (offset > km_buf_len(b) || km_buf_len(b) - offset < 4) {
        return KM_ERR_INCOMPLETE;
    }
    const uint8_t *p = b->data + b->roff + offset;
    if (out != NULL) {
        *out = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    }
    return 0;
}

int km_buf_get_u8(struct km_buf *b, uint8_t *out)
{
    int r = km_buf_peek_u8(b, 0, out);
    if (r == 0) {
        b->roff += 1;
    }
    return r;
}

int km_buf_get_u16(struct km_buf *b, uint16_t *out)
{
    int r = km_buf_peek_u16(b, 0, out);
    if (r == 0) {
        b->roff += 2;
    }
    return r;
}

int km_buf_get_u32(struct km_buf *b, uint32_t *out)
{
    int r = km_buf_peek_u32(b, 0, out);
    if (r == 0) {
        b->roff += 4;
    }
    return r;
}

int km_buf_get_u64(struct km_buf *b, uint64_t *out)
{
    if (out != NULL) {
        *out = 0;
    }
    if (km_buf_len(b) < 8) {
        return KM_ERR_INCOMPLETE;
    }
    uint32_t hi = 0;
    uint32_t lo = 0;
    if (km_buf_get_u32(b, &hi) != 0 || km_buf_get_u32(b, &lo) != 0) {
        return KM_ERR_INCOMPLETE; /* unreachable: length checked above */
    }
    if (out != NULL) {
        *out = (uint64_t)hi << 32 | lo;
    }
    return 0;
}

int km_buf_get_view(struct km_buf *b, size_t len, const uint8_t **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (len > km_buf_len(b)) {
        return KM_ERR_INCOMPLETE;
    }
    if (out != NULL) {
        *out = km_buf_peek_ptr(b);
    }
    b->roff += len;
    return 0;
}

int km_buf_get_bytes(struct km_buf *b, void *out, size_t len)
{
    const uint8_t *p = NULL;
    int r = km_buf_get_view(b, len, &p);
    if (r == 0 && out != NULL && len > 0) {
        memcpy(out, p, len);
    }
    return r;
}

int km_buf_skip(struct km_buf *b, size_t len)
{
    return km_buf_get_view(b, len, NULL);
}

/* Shared body of the length-prefixed readers: the prefix is prefix_len bytes wide. */
static int get_prefixed(struct km_buf *b, size_t prefix_len, const uint8_t **out, size_t *len)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (len != NULL) {
        *len = 0;
    }
    size_t slen;
    int r;
    if (prefix_len == 1) {
        uint8_t v;
        r = km_buf_peek_u8(b, 0, &v);
        slen = v;
    } else if (prefix_len == 2) {
        uint16_t v;
        r = km_buf_peek_u16(b, 0, &v);
        slen = v;
    } else {
        uint32_t v;
        r = km_buf_peek_u32(b, 0, &v);
        slen = v;
    }
    if (r != 0) {
        return r;
    }
    /* Compare against what remains after the prefix; never add to an offset. */
    if (slen > km_buf_len(b) - prefix_len) {
        return KM_ERR_INCOMPLETE;
    }
    b->roff += prefix_len;
    if (out != NULL) {
        *out = km_buf_peek_ptr(b);
    }
    if (len != NULL) {
        *len = slen;
    }
    b->roff += slen;
    return 0;
}

int km_buf_get_string8_view(struct km_buf *b, const uint8_t **out, size_t *len)
{
    return get_prefixed(b, 1, out, len);
}

int km_buf_get_string16_view(struct km_buf *b, const uint8_t **out, size_t *len)
{
    return get_prefixed(b, 2, out, len);
}

int km_buf_get_string_view(struct km_buf *b, const uint8_t **out, size_t *len)
{
    return get_prefixed(b, 4, out, len);
}

int km_buf_get_cstring(struct km_buf *b, char **out, size_t *len)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (len != NULL) {
        *len = 0;
    }
    size_t save = b->roff;
    const uint8_t *p;
    size_t n;
    int r = km_buf_get_string_view(b, &p, &n);
    if (r != 0) {
        return r;
    }
    if (n > 0 && memchr(p, 0, n) != NULL) {
        b->roff = save;
        return KM_ERR_INVALID;
    }
    if (out != NULL) {
        char *s = malloc(n + 1);
        if (s == NULL) {
            b->roff = save;
            return -ENOMEM;
        }
        if (n > 0) {
            memcpy(s, p, n);
        }
        s[n] = '\0';
        *out = s;
    }
    if (len != NULL) {
        *len = n;
    }
    return 0;
}

int km_buf_get_stringb(struct km_buf *b, struct km_buf *sub)
{
    const uint8_t *p;
    size_t n;
    int r = km_buf_get_string_view(b, &p, &n);
    if (r != 0) {
        km_buf_init_view(sub, "", 0);
        return r;
    }
    km_buf_init_view(sub, p, n);
    return 0;
}

int km_buf_get_end(const struct km_buf *b)
{
    return km_buf_len(b) == 0 ? 0 : KM_ERR_TRAILING;
}

int km_buf_put_bytes(struct km_buf *b, const void *p, size_t len)
{
    int r = ensure(b, len);
    if (r != 0) {
        return r;
    }
    if (len > 0) {
        memcpy(b->data + b->woff, p, len);
    }
    b->woff += len;
    return 0;
}

int km_buf_put_u8(struct km_buf *b, uint8_t v)
{
    return km_buf_put_bytes(b, &v, 1);
}

int km_buf_put_u16(struct km_buf *b, uint16_t v)
{
    uint8_t p[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    return km_buf_put_bytes(b, p, sizeof p);
}

int km_buf_put_u32(struct km_buf *b, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return km_buf_put_bytes(b, p, sizeof p);
}

int km_buf_put_u64(struct km_buf *b, uint64_t v)
{
    uint8_t p[8];
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (56 - 8 * i));
    }
    return km_buf_put_bytes(b, p, sizeof p);
}

/* Shared body of the length-prefixed writers; all or nothing. */
static int put_prefixed(struct km_buf *b, size_t prefix_len, const void *p, size_t len)
{
    uint8_t pre[4];
    if (prefix_len == 1) {
        if (len > UINT8_MAX) {
            return KM_ERR_TOO_LARGE;
        }
        pre[0] = (uint8_t)len;
    } else if (prefix_len == 2) {
        if (len > UINT16_MAX) {
            return KM_ERR_TOO_LARGE;
        }
        pre[0] = (uint8_t)(len >> 8);
        pre[1] = (uint8_t)len;
    } else {
        if (len > UINT32_MAX) {
            return KM_ERR_TOO_LARGE;
        }
        pre[0] = (uint8_t)(len >> 24);
        pre[1] = (uint8_t)(len >> 16);
        pre[2] = (uint8_t)(len >> 8);
        pre[3] = (uint8_t)len;
    }
    if (len > SIZE_MAX - prefix_len) {
        return KM_ERR_TOO_LARGE;
    }
    int r = ensure(b, prefix_len + len);
    if (r != 0) {
        return r;
    }
    memcpy(b->data + b->woff, pre, prefix_len);
    if (len > 0) {
        memcpy(b->data + b->woff + prefix_len, p, len);
    }
    b->woff += prefix_len + len;
    return 0;
}

int km_buf_put_string8(struct km_buf *b, const void *p, size_t len)
{
    return put_prefixed(b, 1, p, len);
}

int km_buf_put_string16(struct km_buf *b, const void *p, size_t len)
{
    return put_prefixed(b, 2, p, len);
}

int km_buf_put_string(struct km_buf *b, const void *p, size_t len)
{
    return put_prefixed(b, 4, p, len);
}

int km_buf_put_cstring(struct km_buf *b, const char *s)
{
    return put_prefixed(b, 4, s, strlen(s));
}

int km_buf_put_stringb(struct km_buf *b, const struct km_buf *src)
{
    /* src may be b itself only if nothing reallocates; forbid that aliasing outright. */
    if (src == b) {
        return KM_ERR_INVALID;
    }
    return put_prefixed(b, 4, km_buf_peek_ptr(src), km_buf_len(src));
}

int km_buf_reserve(struct km_buf *b, size_t len, uint8_t **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    int r = ensure(b, len);
    if (r != 0) {
        return r;
    }
    if (out != NULL) {
        *out = b->data + b->woff;
    }
    b->woff += len;
    return 0;
}
