/* km_buf: the one safe byte buffer for every byte that comes off the network or a file
 * (STYLE.md section 7). A blob with a read offset, a write offset and a hard maximum.
 *
 * Three kinds:
 *   - owned:  km_buf_init()/km_buf_new(); grows on demand up to max_size; heap memory is
 *             wiped and freed by km_buf_reset()/km_buf_free().
 *   - fixed:  km_buf_init_fixed() writes into caller memory of a fixed capacity.
 *   - view:   km_buf_init_view() reads caller memory without copying; writes fail with
 *             KM_ERR_READONLY.
 *
 * Reads fail with KM_ERR_INCOMPLETE when fewer bytes remain than requested and leave the
 * read offset unchanged. Writes fail with KM_ERR_TOO_LARGE past max_size (-ENOMEM if the
 * allocator fails) and leave the buffer unchanged. Every out-parameter may be NULL to skip a
 * field; out-parameters are cleared on entry. Integers are big-endian (network order).
 *
 * The struct is public so it can live on the stack or inside another object; its fields are
 * private: use the functions. */
#ifndef KM_CORE_BUF_H
#define KM_CORE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct km_buf {
    /* private */
    uint8_t *data;
    size_t cap;      /* bytes allocated or lent */
    size_t max_size; /* hard limit for cap */
    size_t roff;     /* next byte to read */
    size_t woff;     /* next byte to write; roff <= woff <= cap */
    bool owned;      /* data is heap memory this buffer frees */
    bool readonly;   /* a view over caller memory */
};

/* Largest max_size accepted by km_buf_init (256 MiB); anything larger is a bug. */
#define KM_BUF_MAX_SIZE ((size_t)256 << 20)

/* Initialise an empty owned buffer that may grow to max_size bytes (clamped to
 * KM_BUF_MAX_SIZE). Allocates nothing until the first write. */
void km_buf_init(struct km_buf *b, size_t max_size);

/* Initialise a buffer that writes into mem[0..cap). The caller owns mem and must keep it
 * alive while the buffer is used. */
void km_buf_init_fixed(struct km_buf *b, void *mem, size_t cap);

/* Initialise a read-only view of mem[0..len). No copy; mem must outlive the view. */
void km_buf_init_view(struct km_buf *b, const void *mem, size_t len);

/* Release an owned buffer's memory (wiped first: it may have held secrets) and leave b
 * empty with the same kind and max_size. For fixed buffers the lent memory is wiped. */
void km_buf_reset(struct km_buf *b);

/* Heap-allocated owned buffer. Returns NULL only when allocation fails. */
struct km_buf *km_buf_new(size_t max_size);

/* Reset and free a buffer from km_buf_new. Accepts NULL. */
void km_buf_free(struct km_buf *b);

/* Bytes available to read. */
size_t km_buf_len(const struct km_buf *b);

/* Bytes that may still be written before max_size is reached. */
size_t km_buf_avail(const struct km_buf *b);

/* Borrowed pointer to the unread bytes; valid until the next write or reset. For crypto and
 * syscall interfaces only: protocol code uses the typed accessors. */
const uint8_t *km_buf_peek_ptr(const struct km_buf *b);

/* Discard all content (wiping it) but keep the memory for reuse. */
void km_buf_clear(struct km_buf *b);

/* Move the unread bytes to the start of the storage so the space already read is reusable. */
void km_buf_compact(struct km_buf *b);

/* ---- reading ---- */

KM_MUST_CHECK int km_buf_get_u8(struct km_buf *b, uint8_t *out);
KM_MUST_CHECK int km_buf_get_u16(struct km_buf *b, uint16_t *out);
KM_MUST_CHECK int km_buf_get_u32(struct km_buf *b, uint32_t *out);
KM_MUST_CHECK int km_buf_get_u64(struct km_buf *b, uint64_t *out);
KM_MUST_CHECK int km_buf_peek_u8(const struct km_buf *b, size_t offset, uint8_t *out);
KM_MUST_CHECK int km_buf_peek_u16(const struct km_buf *b, size_t offset, uint16_t *out);
KM_MUST_CHECK int km_buf_peek_u32(const struct km_buf *b, size_t offset, uint32_t *out);

/* Copy len bytes out (out may be NULL to skip them). */
KM_MUST_CHECK int km_buf_get_bytes(struct km_buf *b, void *out, size_t len);

/* Skip len bytes. */
KM_MUST_CHECK int km_buf_skip(struct km_buf *b, size_t len);

/* Consume len bytes and return a borrowed pointer to them in *out; valid until the next write
 * or reset. */
KM_MUST_CHECK int km_buf_get_view(struct km_buf *b, size_t len, const uint8_t **out);

/* Length-prefixed strings with a u8 (SOCKS5), u16 (DNS over TCP) or u32 (SSH) length.
 * *out receives a borrowed pointer into the buffer (valid until the next write or reset) and
 * *len its length; nothing is consumed on failure. */
KM_MUST_CHECK int km_buf_get_string8_view(struct km_buf *b, const uint8_t **out, size_t *len);
KM_MUST_CHECK int km_buf_get_string16_view(struct km_buf *b, const uint8_t **out, size_t *len);
KM_MUST_CHECK int km_buf_get_string_view(struct km_buf *b, const uint8_t **out, size_t *len);

/* A u32-prefixed string copied into a new NUL-terminated heap string (caller frees).
 * Fails with KM_ERR_INVALID if the string contains a NUL byte. */
KM_MUST_CHECK int km_buf_get_cstring(struct km_buf *b, char **out, size_t *len);

/* A u32-prefixed string into a sub-buffer view (for nested SSH structures). */
KM_MUST_CHECK int km_buf_get_stringb(struct km_buf *b, struct km_buf *sub);

/* Succeeds only if no unread bytes remain; KM_ERR_TRAILING otherwise. */
KM_MUST_CHECK int km_buf_get_end(const struct km_buf *b);

/* ---- writing ---- */

KM_MUST_CHECK int km_buf_put_u8(struct km_buf *b, uint8_t v);
KM_MUST_CHECK int km_buf_put_u16(struct km_buf *b, uint16_t v);
KM_MUST_CHECK int km_buf_put_u32(struct km_buf *b, uint32_t v);
KM_MUST_CHECK int km_buf_put_u64(struct km_buf *b, uint64_t v);
KM_MUST_CHECK int km_buf_put_bytes(struct km_buf *b, const void *p, size_t len);

/* Length-prefixed strings; KM_ERR_TOO_LARGE if len does not fit the prefix. */
KM_MUST_CHECK int km_buf_put_string8(struct km_buf *b, const void *p, size_t len);
KM_MUST_CHECK int km_buf_put_string16(struct km_buf *b, const void *p, size_t len);
KM_MUST_CHECK int km_buf_put_string(struct km_buf *b, const void *p, size_t len);
KM_MUST_CHECK int km_buf_put_cstring(struct km_buf *b, const char *s);

/* Write the unread contents of src as a u32-prefixed string (src is not consumed). */
KM_MUST_CHECK int km_buf_put_stringb(struct km_buf *b, const struct km_buf *src);

/* Reserve len writable bytes at the end and return a pointer to them in *out (valid until the
 * next write or reset); they count as written. For crypto output only. */
KM_MUST_CHECK int km_buf_reserve(struct km_buf *b, size_t len, uint8_t **out);

#endif
