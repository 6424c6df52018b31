/* mDNS/DNS-SD wire part (discovery/mdns.h, docs/MDNS.md): answers, announcements, the browse
 * query, and the response parser. Pure: no I/O, no clock, no allocation.
 *
 * Names are walked by our own bounded reader over km_buf (STYLE.md section 7): at most 255
 * bytes of wire form, labels of 1-63 bytes, and compression pointers that must point strictly
 * before the previous jump's target (so loops and forward references are impossible), at
 * most NAME_MAX_JUMPS times. ldns is not needed: mDNS uses only PTR, SRV, TXT, A and AAAA.
 * Messages are built in a fixed buffer so RDLENGTH and the counts can be patched in place. */
#include "discovery/mdns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "identity/derive.h"

#define NAME_WIRE_MAX 255 /* RFC 1035 section 3.1, including the root label */
#define NAME_MAX_JUMPS 16
#define HDR_LEN 12
#define DICT_MAX 32
#define QUESTIONS_MAX 8
#define ADDR_RECS_MAX 32

#define F_QR 0x8000u
#define F_AA 0x0400u
#define OPCODE(f) (((f) >> 11) & 0xfu)
#define RCODE(f) ((f)&0xfu)

#define T_A 1
#define T_PTR 12
#define T_TXT 16
#define T_AAAA 28
#define T_SRV 33
#define T_ANY 255
#define C_IN 1
#define C_ANY 255
/* The top bit of the class: cache-flush in responses, QU in questions (RFC 6762 10.2, 5.4). */
#define C_FLUSH 0x8000u

/* Our record sets. */
#define B_ENUM 0x01u /* _services._dns-sd._udp.local PTR _keymesh._tcp.local */
#define B_PTR 0x02u  /* _keymesh._tcp.local PTR <id>._keymesh._tcp.local */
#define B_SRV 0x04u
#define B_TXT 0x08u
#define B_A 0x10u
#define B_AAAA 0x20u

static const uint8_t N_SVC[] = "\x08_keymesh\x04_tcp\x05local";
static const uint8_t N_ENUM[] = "\x09_services\x07_dns-sd\x04_udp\x05local";
static const uint8_t N_LOCAL[] = "\x05local";

/* Our names in wire form (lowercase, uncompressed). */
struct names {
    uint8_t inst[1 + KM_NODE_ID_LEN + sizeof N_SVC];
    uint8_t host[1 + KM_NODE_ID_LEN + sizeof N_LOCAL];
};

static void make_names(const struct km_pubkey *key, struct names *n)
{
    char id[KM_NODE_ID_LEN + 1];
    km_node_id(key, id);
    n->inst[0] = KM_NODE_ID_LEN;
    memcpy(n->inst + 1, id, KM_NODE_ID_LEN);
    memcpy(n->inst + 1 + KM_NODE_ID_LEN, N_SVC, sizeof N_SVC);
    n->host[0] = KM_NODE_ID_LEN;
    memcpy(n->host + 1, id, KM_NODE_ID_LEN);
    memcpy(n->host + 1 + KM_NODE_ID_LEN, N_LOCAL, sizeof N_LOCAL);
}

/* ---- reading ---- */

/* Absolute offset of rd's next byte in the message (rd is a view over the message's tail). */
static size_t rd_pos(const struct km_buf *msg, const struct km_buf *rd)
{
    return km_buf_len(msg) - km_buf_len(rd);
}

/* Read a (possibly compressed) name at rd into out (uncompressed, lowercased wire form) and
 * advance rd past it. msg is the whole message, for pointers. */
static int read_name(const struct km_buf *msg, struct km_buf *rd, uint8_t out[NAME_WIRE_MAX],
                     size_t *out_len)
{
    size_t start = rd_pos(msg, rd);
    size_t pos = start;
    size_t limit = start; /* the next pointer must point strictly before this */
    size_t end = 0;       /* where rd continues, once known */
    size_t olen = 0;
    unsigned jumps = 0;
    *out_len = 0;
    for (;;) {
        uint8_t c;
        if (km_buf_peek_u8(msg, pos, &c) != 0) {
            return KM_ERR_INVALID;
        }
        if (c == 0) {
            /* The root label. */
            out[olen++] = 0;
            if (end == 0) {
                end = pos + 1;
            }
            break;
        }
        if ((c & 0xc0u) == 0xc0u) {
            /* A compression pointer (RFC 1035 section 4.1.4). */
            uint8_t c2;
            if (km_buf_peek_u8(msg, pos + 1, &c2) != 0) {
                return KM_ERR_INVALID;
            }
            size_t target = ((size_t)(c & 0x3fu) << 8) | c2;
            if (target >= limit || ++jumps > NAME_MAX_JUMPS) {
                return KM_ERR_INVALID;
            }
            if (end == 0) {
                end = pos + 2;
            }
            limit = target;
            pos = target;
            continue;
        }
        if ((c & 0xc0u) != 0) {
            return KM_ERR_INVALID; /* extended label types (RFC 6891) are not used by mDNS */
        }
        if (olen + 1u + c + 1u > NAME_WIRE_MAX) {
            return KM_ERR_INVALID;
        }
        out[olen++] = c;
        for (size_t i = 1; i <= c; i++) {
            uint8_t ch;
            if (km_buf_peek_u8(msg, pos + i, &ch) != 0) {
                return KM_ERR_INVALID;
            }
            if (ch >= 'A' && ch <= 'Z') {
                ch = (uint8_t)(ch - 'A' + 'a');
            }
            out[olen++] = ch;
        }
        pos += 1u + c;
    }
    if (km_buf_skip(rd, end - start) != 0) {
        return KM_ERR_INVALID;
    }
    *out_len = olen;
    return 0;
}

static bool name_eq(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

/* If name is "<node ID>._keymesh._tcp.local", store the key and return true. */
static bool instance_key(const uint8_t *name, size_t len, struct km_pubkey *key)
{
    if (len != 1 + KM_NODE_ID_LEN + sizeof N_SVC || name[0] != KM_NODE_ID_LEN ||
        memcmp(name + 1 + KM_NODE_ID_LEN, N_SVC, sizeof N_SVC) != 0) {
        return false;
    }
    return km_node_id_parse((const char *)name + 1, KM_NODE_ID_LEN, key) == 0;
}

struct header {
    uint16_t id, flags, qd, an, ns, ar;
};

static int read_header(struct km_buf *rd, struct header *h)
{
    if (km_buf_get_u16(rd, &h->id) != 0 || km_buf_get_u16(rd, &h->flags) != 0 ||
        km_buf_get_u16(rd, &h->qd) != 0 || km_buf_get_u16(rd, &h->an) != 0 ||
        km_buf_get_u16(rd, &h->ns) != 0 || km_buf_get_u16(rd, &h->ar) != 0) {
        return KM_ERR_INVALID;
    }
    return 0;
}

/* A resource record's fixed part; rd is left at the start of RDATA. */
struct rr {
    uint8_t name[NAME_WIRE_MAX];
    size_t name_len;
    uint16_t type, cls;
    uint32_t ttl;
    uint16_t rdlen;
};

static int read_rr(const struct km_buf *msg, struct km_buf *rd, struct rr *r)
{
    int e;
    if ((e = read_name(msg, rd, r->name, &r->name_len)) != 0) {
        return e;
    }
    if (km_buf_get_u16(rd, &r->type) != 0 || km_buf_get_u16(rd, &r->cls) != 0 ||
        km_buf_get_u32(rd, &r->ttl) != 0 || km_buf_get_u16(rd, &r->rdlen) != 0 ||
        r->rdlen > km_buf_len(rd)) {
        return KM_ERR_INVALID;
    }
    return 0;
}

/* ---- writing ---- */

struct writer {
    struct km_buf b; /* fixed, over mem */
    uint8_t mem[KM_MDNS_PKT_MAX];
    struct {
        uint16_t off;
        const uint8_t *p; /* the uncompressed suffix, owned by the caller for the build */
        size_t len;
    } dict[DICT_MAX];
    size_t n_dict;
    uint16_t n_an, n_ar;
    bool legacy;
    bool goodbye;
};

static void w_init(struct writer *w)
{
    km_buf_init_fixed(&w->b, w->mem, sizeof w->mem);
    w->n_dict = 0;
    w->n_an = 0;
    w->n_ar = 0;
    w->legacy = false;
    w->goodbye = false;
}

static int w_err(int e)
{
    return e == KM_ERR_INVALID || e == KM_ERR_READONLY ? KM_ERR_TOO_LARGE : e;
}

/* Write name (uncompressed wire form, alive for the whole build) with compression. */
static int w_name(struct writer *w, const uint8_t *name, size_t len)
{
    size_t pos = 0;
    while (pos < len && name[pos] != 0) {
        for (size_t i = 0; i < w->n_dict; i++) {
            if (name_eq(w->dict[i].p, w->dict[i].len, name + pos, len - pos)) {
                return km_buf_put_u16(&w->b, (uint16_t)(0xc000u | w->dict[i].off));
            }
        }
        size_t here = km_buf_len(&w->b);
        if (here < 0x3fffu && w->n_dict < DICT_MAX) {
            w->dict[w->n_dict].off = (uint16_t)here;
            w->dict[w->n_dict].p = name + pos;
            w->dict[w->n_dict].len = len - pos;
            w->n_dict++;
        }
        int e = km_buf_put_bytes(&w->b, name + pos, 1u + name[pos]);
        if (e != 0) {
            return e;
        }
        pos += 1u + name[pos];
    }
    return km_buf_put_u8(&w->b, 0);
}

/* Write a record's owner, type, class, TTL and a zero RDLENGTH; *rdlen_off receives where
 * RDLENGTH is, for w_end_rr. */
static int w_begin_rr(struct writer *w, const uint8_t *name, size_t len, uint16_t type, bool unique,
                      uint32_t ttl, size_t *rdlen_off)
{
    uint16_t cls = C_IN;
    if (unique && !w->legacy) {
        cls |= C_FLUSH;
    }
    if (w->goodbye) {
        ttl = 0;
    } else if (w->legacy && ttl > KM_MDNS_TTL_LEGACY) {
        ttl = KM_MDNS_TTL_LEGACY;
    }
    int e;
    if ((e = w_name(w, name, len)) != 0 || (e = km_buf_put_u16(&w->b, type)) != 0 ||
        (e = km_buf_put_u16(&w->b, cls)) != 0 || (e = km_buf_put_u32(&w->b, ttl)) != 0) {
        return e;
    }
    *rdlen_off = km_buf_len(&w->b);
    return km_buf_put_u16(&w->b, 0);
}

static void w_end_rr(struct writer *w, size_t rdlen_off)
{
    size_t n = km_buf_len(&w->b) - rdlen_off - 2u;
    /* Patching our own fixed buffer: RDLENGTH is only known after the RDATA (n < 9000). */
    w->mem[rdlen_off] = (uint8_t)(n >> 8);
    w->mem[rdlen_off + 1] = (uint8_t)(n & 0xffu);
}

static int w_txt(struct writer *w, const struct km_mdns_self *self)
{
    char k[2 + sodium_base64_ENCODED_LEN(KM_PUBKEY_LEN, sodium_base64_VARIANT_ORIGINAL)];
    k[0] = 'k';
    k[1] = '=';
    sodium_bin2base64(k + 2, sizeof k - 2, self->key.b, KM_PUBKEY_LEN,
                      sodium_base64_VARIANT_ORIGINAL);
    int e;
    static const char v[] = "v=keymesh1";
    if ((e = km_buf_put_string8(&w->b, v, sizeof v - 1)) != 0 ||
        (e = km_buf_put_string8(&w->b, k, strlen(k))) != 0) {
        return e;
    }
    if (self->announcement != NULL) {
        /* Split over character-strings of at most 255 bytes; "a=" comes last, so the strings
         * after it are its continuation (docs/MDNS.md). */
        size_t len = strnlen(self->announcement, KM_ANNOUNCE_TEXT_MAX);
        for (size_t off = 0; off < len; off += 255u) {
            size_t n = len - off < 255u ? len - off : 255u;
            if ((e = km_buf_put_string8(&w->b, self->announcement + off, n)) != 0) {
                return e;
            }
        }
    }
    return 0;
}

/* Write the record sets in bits into the current section, counting them in *count. */
static int w_records(struct writer *w, const struct km_mdns_self *self, const struct names *n,
                     unsigned bits, uint16_t *count)
{
    size_t off;
    int e;
    if (bits & B_ENUM) {
        if ((e = w_begin_rr(w, N_ENUM, sizeof N_ENUM, T_PTR, false, KM_MDNS_TTL_OTHER, &off)) !=
                0 ||
            (e = w_name(w, N_SVC, sizeof N_SVC)) != 0) {
            return e;
        }
        w_end_rr(w, off);
        (*count)++;
    }
    if (bits & B_PTR) {
        if ((e = w_begin_rr(w, N_SVC, sizeof N_SVC, T_PTR, false, KM_MDNS_TTL_OTHER, &off)) != 0 ||
            (e = w_name(w, n->inst, sizeof n->inst)) != 0) {
            return e;
        }
        w_end_rr(w, off);
        (*count)++;
    }
    if (bits & B_SRV) {
        /* SRV: priority 0, weight 0, port, target (RFC 2782). Host-name TTL: its RDATA holds
         * a host name (RFC 6762 section 10). */
        if ((e = w_begin_rr(w, n->inst, sizeof n->inst, T_SRV, true, KM_MDNS_TTL_HOST, &off)) !=
                0 ||
            (e = km_buf_put_u16(&w->b, 0)) != 0 || (e = km_buf_put_u16(&w->b, 0)) != 0 ||
            (e = km_buf_put_u16(&w->b, self->port)) != 0 ||
            (e = w_name(w, n->host, sizeof n->host)) != 0) {
            return e;
        }
        w_end_rr(w, off);
        (*count)++;
    }
    if (bits & B_TXT) {
        if ((e = w_begin_rr(w, n->inst, sizeof n->inst, T_TXT, true, KM_MDNS_TTL_OTHER, &off)) !=
                0 ||
            (e = w_txt(w, self)) != 0) {
            return e;
        }
        w_end_rr(w, off);
        (*count)++;
    }
    for (size_t i = 0; i < self->n_addrs && i < KM_MDNS_ADDRS_MAX; i++) {
        const struct sockaddr_storage *ss = &self->addrs[i];
        if (ss->ss_family == AF_INET && (bits & B_A)) {
            const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
            if ((e = w_begin_rr(w, n->host, sizeof n->host, T_A, true, KM_MDNS_TTL_HOST, &off)) !=
                    0 ||
                (e = km_buf_put_bytes(&w->b, &s4->sin_addr, 4)) != 0) {
                return e;
            }
        } else if (ss->ss_family == AF_INET6 && (bits & B_AAAA)) {
            const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
            if ((e = w_begin_rr(w, n->host, sizeof n->host, T_AAAA, true, KM_MDNS_TTL_HOST,
                                &off)) != 0 ||
                (e = km_buf_put_bytes(&w->b, &s6->sin6_addr, 16)) != 0) {
                return e;
            }
        } else {
            continue;
        }
        w_end_rr(w, off);
        (*count)++;
    }
    return 0;
}

/* Patch the counts and copy the message to out. */
static int w_finish(struct writer *w, uint16_t qd, struct km_buf *out)
{
    w->mem[4] = (uint8_t)(qd >> 8);
    w->mem[5] = (uint8_t)qd;
    w->mem[6] = (uint8_t)(w->n_an >> 8);
    w->mem[7] = (uint8_t)w->n_an;
    w->mem[10] = (uint8_t)(w->n_ar >> 8);
    w->mem[11] = (uint8_t)w->n_ar;
    return w_err(km_buf_put_bytes(out, w->mem, km_buf_len(&w->b)));
}

static int w_header(struct writer *w, uint16_t id, uint16_t flags)
{
    int e;
    if ((e = km_buf_put_u16(&w->b, id)) != 0 || (e = km_buf_put_u16(&w->b, flags)) != 0) {
        return e;
    }
    for (int i = 0; i < 4; i++) {
        if ((e = km_buf_put_u16(&w->b, 0)) != 0) {
            return e;
        }
    }
    return 0;
}

int km_mdns_build_announce(const struct km_mdns_self *self, bool goodbye, struct km_buf *out)
{
    km_buf_clear(out);
    struct writer *w = malloc(sizeof *w);
    if (w == NULL) {
        return -ENOMEM;
    }
    w_init(w);
    w->goodbye = goodbye;
    struct names n;
    make_names(&self->key, &n);
    int e;
    if ((e = w_header(w, 0, F_QR | F_AA)) == 0 &&
        (e = w_records(w, self, &n, B_ENUM | B_PTR | B_SRV | B_TXT | B_A | B_AAAA, &w->n_an)) ==
            0) {
        e = w_finish(w, 0, out);
    }
    free(w);
    return w_err(e);
}

int km_mdns_build_query(struct km_buf *out)
{
    km_buf_clear(out);
    /* ID 0, flags 0, one question: _keymesh._tcp.local PTR IN, multicast response (QM). */
    static const uint8_t hdr[HDR_LEN] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    int e;
    if ((e = km_buf_put_bytes(out, hdr, sizeof hdr)) != 0 ||
        (e = km_buf_put_bytes(out, N_SVC, sizeof N_SVC)) != 0 ||
        (e = km_buf_put_u16(out, T_PTR)) != 0 || (e = km_buf_put_u16(out, C_IN)) != 0) {
        return w_err(e);
    }
    return 0;
}

/* ---- answering ---- */

struct question {
    uint8_t name[NAME_WIRE_MAX];
    size_t name_len;
    uint16_t type, cls;
};

/* Which of our record sets question q asks for; *add receives the additional records. */
static unsigned match(const struct names *n, const struct question *q, unsigned *add)
{
    uint16_t cls = (uint16_t)(q->cls & ~C_FLUSH);
    if (cls != C_IN && cls != C_ANY) {
        return 0;
    }
    bool any = q->type == T_ANY;
    if (name_eq(q->name, q->name_len, N_ENUM, sizeof N_ENUM)) {
        return (any || q->type == T_PTR) ? B_ENUM : 0;
    }
    if (name_eq(q->name, q->name_len, N_SVC, sizeof N_SVC)) {
        if (any || q->type == T_PTR) {
            *add |= B_SRV | B_TXT | B_A | B_AAAA; /* RFC 6763 section 12.1 */
            return B_PTR;
        }
        return 0;
    }
    if (name_eq(q->name, q->name_len, n->inst, sizeof n->inst)) {
        unsigned r = 0;
        if (any || q->type == T_SRV) {
            r |= B_SRV;
            *add |= B_A | B_AAAA; /* RFC 6763 section 12.2 */
        }
        if (any || q->type == T_TXT) {
            r |= B_TXT;
        }
        return r;
    }
    if (name_eq(q->name, q->name_len, n->host, sizeof n->host)) {
        /* The other address type goes in the additional section (RFC 6762 section 6.2). */
        if (any) {
            return B_A | B_AAAA;
        }
        if (q->type == T_A) {
            *add |= B_AAAA;
            return B_A;
        }
        if (q->type == T_AAAA) {
            *add |= B_A;
            return B_AAAA;
        }
    }
    return 0;
}

/* Walk and discard count records (known answers, authority, additional). */
static int skip_rrs(const struct km_buf *msg, struct km_buf *rd, size_t count)
{
    struct rr r;
    for (size_t i = 0; i < count; i++) {
        int e;
        if ((e = read_rr(msg, rd, &r)) != 0) {
            return e;
        }
        if (km_buf_skip(rd, r.rdlen) != 0) {
            return KM_ERR_INVALID;
        }
    }
    return 0;
}

int km_mdns_answer(const struct km_mdns_self *self, const uint8_t *q, size_t len, uint16_t src_port,
                   struct km_buf *out, enum km_mdns_reply *how)
{
    *how = KM_MDNS_REPLY_NONE;
    km_buf_clear(out);
    if (len > KM_MDNS_PKT_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    struct km_buf msg, rd;
    km_buf_init_view(&msg, q, len);
    km_buf_init_view(&rd, q, len);
    struct header h;
    if (read_header(&rd, &h) != 0) {
        return KM_ERR_INVALID;
    }
    if ((h.flags & F_QR) != 0 || OPCODE(h.flags) != 0) {
        return 0; /* responses are not answered; other opcodes are ignored (RFC 6762 18.3) */
    }
    struct names n;
    make_names(&self->key, &n);
    bool legacy = src_port != KM_MDNS_PORT;
    struct writer *w = malloc(sizeof *w);
    struct question *qs = malloc(QUESTIONS_MAX * sizeof *qs);
    int e = -ENOMEM;
    if (w == NULL || qs == NULL) {
        goto out;
    }
    unsigned ans = 0, add = 0;
    bool all_qu = true;
    size_t n_qs = 0;
    struct question tmp;
    for (size_t i = 0; i < h.qd; i++) {
        struct question *cur = n_qs < QUESTIONS_MAX ? &qs[n_qs] : &tmp;
        if ((e = read_name(&msg, &rd, cur->name, &cur->name_len)) != 0) {
            goto out;
        }
        if (km_buf_get_u16(&rd, &cur->type) != 0 || km_buf_get_u16(&rd, &cur->cls) != 0) {
            e = KM_ERR_INVALID;
            goto out;
        }
        if (cur != &tmp) {
            n_qs++;
        }
        unsigned m = match(&n, cur, &add);
        if (m != 0) {
            ans |= m;
            if ((cur->cls & C_FLUSH) == 0) {
                all_qu = false;
            }
        }
    }
    if ((e = skip_rrs(&msg, &rd, (size_t)h.an + h.ns + h.ar)) != 0) {
        goto out;
    }
    if (km_buf_get_end(&rd) != 0) {
        e = KM_ERR_INVALID;
        goto out;
    }
    /* Drop sets we cannot answer (no address of that family). */
    bool has4 = false, has6 = false;
    for (size_t i = 0; i < self->n_addrs && i < KM_MDNS_ADDRS_MAX; i++) {
        has4 |= self->addrs[i].ss_family == AF_INET;
        has6 |= self->addrs[i].ss_family == AF_INET6;
    }
    if (!has4) {
        ans &= ~B_A;
        add &= ~B_A;
    }
    if (!has6) {
        ans &= ~B_AAAA;
        add &= ~B_AAAA;
    }
    add &= ~ans;
    e = 0;
    if (ans == 0) {
        goto out;
    }
    w_init(w);
    w->legacy = legacy;
    /* A legacy reply echoes the ID and the question(s) (RFC 6762 section 6.7). */
    if ((e = w_header(w, legacy ? h.id : 0, F_QR | F_AA)) != 0) {
        goto out;
    }
    uint16_t qd = 0;
    if (legacy) {
        for (size_t i = 0; i < n_qs; i++, qd++) {
            if ((e = w_name(w, qs[i].name, qs[i].name_len)) != 0 ||
                (e = km_buf_put_u16(&w->b, qs[i].type)) != 0 ||
                (e = km_buf_put_u16(&w->b, qs[i].cls)) != 0) {
                goto out;
            }
        }
    }
    if ((e = w_records(w, self, &n, ans, &w->n_an)) != 0 ||
        (e = w_records(w, self, &n, add, &w->n_ar)) != 0 || (e = w_finish(w, qd, out)) != 0) {
        goto out;
    }
    *how = (legacy || all_qu) ? KM_MDNS_REPLY_UNICAST : KM_MDNS_REPLY_MULTICAST;
out:
    free(w);
    free(qs);
    if (e != 0) {
        km_buf_clear(out);
        *how = KM_MDNS_REPLY_NONE;
        return e == KM_ERR_INVALID ? e : w_err(e);
    }
    return 0;
}

/* ---- parsing responses ---- */

enum txt_state { TXT_NONE = 0, TXT_OK, TXT_BAD };

struct work {
    struct km_pubkey key;
    bool has_ptr, has_srv;
    uint32_t ptr_ttl, srv_ttl, txt_ttl;
    uint16_t port;
    uint8_t target[NAME_WIRE_MAX];
    size_t target_len;
    enum txt_state txt;
    char ann[KM_ANNOUNCE_TEXT_MAX];
    size_t ann_len; /* 0 if none or unusable */
};

struct addr_rec {
    uint8_t name[NAME_WIRE_MAX];
    size_t name_len;
    struct sockaddr_storage ss;
};

struct parse_state {
    struct work w[KM_MDNS_INSTANCES_MAX];
    size_t n_w;
    size_t overflow;
    struct addr_rec a[ADDR_RECS_MAX];
    size_t n_a;
};

static struct work *find_work(struct parse_state *ps, const struct km_pubkey *key)
{
    for (size_t i = 0; i < ps->n_w; i++) {
        if (memcmp(ps->w[i].key.b, key->b, KM_PUBKEY_LEN) == 0) {
            return &ps->w[i];
        }
    }
    if (ps->n_w == KM_MDNS_INSTANCES_MAX) {
        ps->overflow++;
        return NULL;
    }
    struct work *w = &ps->w[ps->n_w++];
    memset(w, 0, sizeof *w);
    w->key = *key;
    return w;
}

/* TXT RDATA of an instance (RFC 6763 section 6): v=keymesh1, k=<base64 key>, and a=<base64>
 * continued by every following string. */
static int parse_txt(struct km_buf *rd, size_t rdlen, struct work *w)
{
    struct km_buf t;
    const uint8_t *p;
    if (km_buf_get_view(rd, rdlen, &p) != 0) {
        return KM_ERR_INVALID;
    }
    km_buf_init_view(&t, p, rdlen);
    bool v_ok = false, k_ok = false, k_bad = false, in_ann = false, ann_bad = false;
    size_t ann_len = 0;
    while (km_buf_len(&t) > 0) {
        const uint8_t *s;
        size_t n;
        if (km_buf_get_string8_view(&t, &s, &n) != 0) {
            return KM_ERR_INVALID;
        }
        if (in_ann) {
            /* falls through to the append below */
        } else if (n == 10 && memcmp(s, "v=keymesh1", 10) == 0) {
            v_ok = true;
            continue;
        } else if (n >= 2 && memcmp(s, "k=", 2) == 0) {
            uint8_t bin[KM_PUBKEY_LEN];
            size_t bin_len = 0;
            const char *end = NULL;
            if (sodium_base642bin(bin, sizeof bin, (const char *)s + 2, n - 2, NULL, &bin_len, &end,
                                  sodium_base64_VARIANT_ORIGINAL) == 0 &&
                end == (const char *)s + n && bin_len == KM_PUBKEY_LEN &&
                memcmp(bin, w->key.b, KM_PUBKEY_LEN) == 0) {
                k_ok = true;
            } else {
                k_bad = true;
            }
            continue;
        } else if (n >= 2 && memcmp(s, "a=", 2) == 0) {
            in_ann = true;
        } else {
            continue; /* other keys: ignored, for later versions */
        }
        if (n > sizeof w->ann - 1 - ann_len) {
            ann_bad = true;
        } else if (!ann_bad) {
            memcpy(w->ann + ann_len, s, n);
            ann_len += n;
        }
    }
    w->txt = (v_ok && k_ok && !k_bad) ? TXT_OK : TXT_BAD;
    w->ann_len = ann_bad ? 0 : ann_len;
    return 0;
}

static int parse_rr(const struct km_buf *msg, struct km_buf *rd, struct parse_state *ps)
{
    struct rr r;
    int e;
    if ((e = read_rr(msg, rd, &r)) != 0) {
        return e;
    }
    size_t before = km_buf_len(rd);
    struct km_pubkey key;
    if ((r.cls & ~C_FLUSH) != C_IN) {
        return km_buf_skip(rd, r.rdlen) == 0 ? 0 : KM_ERR_INVALID;
    }
    if (r.type == T_PTR && name_eq(r.name, r.name_len, N_SVC, sizeof N_SVC)) {
        uint8_t t[NAME_WIRE_MAX];
        size_t tlen;
        if ((e = read_name(msg, rd, t, &tlen)) != 0) {
            return e;
        }
        struct work *w;
        if (instance_key(t, tlen, &key) && (w = find_work(ps, &key)) != NULL) {
            w->ptr_ttl = w->has_ptr && w->ptr_ttl < r.ttl ? w->ptr_ttl : r.ttl;
            w->has_ptr = true;
        }
    } else if (r.type == T_SRV && instance_key(r.name, r.name_len, &key)) {
        uint16_t prio, weight, port;
        uint8_t t[NAME_WIRE_MAX];
        size_t tlen;
        if (km_buf_get_u16(rd, &prio) != 0 || km_buf_get_u16(rd, &weight) != 0 ||
            km_buf_get_u16(rd, &port) != 0) {
            return KM_ERR_INVALID;
        }
        if ((e = read_name(msg, rd, t, &tlen)) != 0) {
            return e;
        }
        struct work *w = find_work(ps, &key);
        if (w != NULL) {
            w->has_srv = true;
            w->srv_ttl = r.ttl;
            w->port = port;
            memcpy(w->target, t, tlen);
            w->target_len = tlen;
        }
    } else if (r.type == T_TXT && instance_key(r.name, r.name_len, &key)) {
        struct work *w = find_work(ps, &key);
        if (w == NULL) {
            return km_buf_skip(rd, r.rdlen) == 0 ? 0 : KM_ERR_INVALID;
        }
        enum txt_state prev = w->txt;
        if ((e = parse_txt(rd, r.rdlen, w)) != 0) {
            return e;
        }
        if (prev == TXT_BAD) {
            w->txt = TXT_BAD; /* one bad TXT spoils the instance */
        }
        w->txt_ttl = r.ttl;
    } else if ((r.type == T_A && r.rdlen == 4) || (r.type == T_AAAA && r.rdlen == 16)) {
        if (ps->n_a < ADDR_RECS_MAX && r.ttl > 0) {
            struct addr_rec *a = &ps->a[ps->n_a++];
            memset(a, 0, sizeof *a);
            memcpy(a->name, r.name, r.name_len);
            a->name_len = r.name_len;
            if (r.type == T_A) {
                struct sockaddr_in *s4 = (struct sockaddr_in *)&a->ss;
                s4->sin_family = AF_INET;
                if (km_buf_get_bytes(rd, &s4->sin_addr, 4) != 0) {
                    return KM_ERR_INVALID;
                }
            } else {
                struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->ss;
                s6->sin6_family = AF_INET6;
                if (km_buf_get_bytes(rd, &s6->sin6_addr, 16) != 0) {
                    return KM_ERR_INVALID;
                }
            }
        } else if (km_buf_skip(rd, r.rdlen) != 0) {
            return KM_ERR_INVALID;
        }
    } else if (km_buf_skip(rd, r.rdlen) != 0) {
        return KM_ERR_INVALID;
    }
    /* The RDATA must be exactly RDLENGTH bytes. */
    return before - km_buf_len(rd) == r.rdlen ? 0 : KM_ERR_INVALID;
}

static uint32_t min_ttl(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

int km_mdns_parse_response(const uint8_t *msg_bytes, size_t len, struct km_mdns_instance *out,
                           size_t cap, size_t *n, struct km_mdns_parse_stats *st)
{
    *n = 0;
    struct km_mdns_parse_stats dummy;
    if (st == NULL) {
        st = &dummy;
    }
    memset(st, 0, sizeof *st);
    if (len > KM_MDNS_PKT_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    struct km_buf msg, rd;
    km_buf_init_view(&msg, msg_bytes, len);
    km_buf_init_view(&rd, msg_bytes, len);
    struct header h;
    if (read_header(&rd, &h) != 0 || (h.flags & F_QR) == 0) {
        return KM_ERR_INVALID;
    }
    if (OPCODE(h.flags) != 0 || RCODE(h.flags) != 0) {
        return 0; /* silently ignored (RFC 6762 section 18.3, 18.11) */
    }
    struct parse_state *ps = malloc(sizeof *ps);
    if (ps == NULL) {
        return -ENOMEM;
    }
    ps->n_w = 0;
    ps->n_a = 0;
    ps->overflow = 0;
    int e = 0;
    /* Questions (normally none in a response). */
    for (size_t i = 0; i < h.qd && e == 0; i++) {
        uint8_t name[NAME_WIRE_MAX];
        size_t nlen;
        if ((e = read_name(&msg, &rd, name, &nlen)) == 0 && km_buf_skip(&rd, 4) != 0) {
            e = KM_ERR_INVALID;
        }
    }
    size_t total = (size_t)h.an + h.ns + h.ar;
    for (size_t i = 0; i < total && e == 0; i++) {
        e = parse_rr(&msg, &rd, ps);
    }
    if (e == 0 && km_buf_get_end(&rd) != 0) {
        e = KM_ERR_INVALID;
    }
    if (e != 0) {
        free(ps);
        return e == -ENOMEM ? e : KM_ERR_INVALID;
    }
    st->dropped = ps->overflow;
    for (size_t i = 0; i < ps->n_w; i++) {
        struct work *w = &ps->w[i];
        if (w->txt == TXT_BAD) {
            st->rejected++;
            continue;
        }
        bool goodbye = (w->has_ptr && w->ptr_ttl == 0) || (w->has_srv && w->srv_ttl == 0);
        if (!goodbye && (!w->has_srv || w->txt != TXT_OK)) {
            st->dropped++;
            continue;
        }
        if (*n == cap) {
            st->dropped++;
            continue;
        }
        struct km_mdns_instance *o = &out[(*n)++];
        memset(o, 0, sizeof *o);
        o->key = w->key;
        o->port = w->has_srv ? w->port : 0;
        if (goodbye) {
            o->ttl = 0;
            continue;
        }
        o->ttl = w->srv_ttl;
        o->ttl = min_ttl(o->ttl, w->txt_ttl);
        if (w->has_ptr) {
            o->ttl = min_ttl(o->ttl, w->ptr_ttl);
        }
        for (size_t j = 0; j < ps->n_a && o->n_addrs < KM_MDNS_ADDRS_MAX; j++) {
            if (name_eq(ps->a[j].name, ps->a[j].name_len, w->target, w->target_len)) {
                o->addrs[o->n_addrs++] = ps->a[j].ss;
            }
        }
        if (w->ann_len > 0 &&
            km_announce_from_text(w->ann, w->ann_len, o->announcement, sizeof o->announcement,
                                  &o->announcement_len) != 0) {
            o->announcement_len = 0;
        }
    }
    free(ps);
    return 0;
}

enum km_path_kind km_mdns_addr_kind(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const uint8_t *a = (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr;
        return (a[0] == 169 && a[1] == 254) ? KM_PATH_LINK_LOCAL : KM_PATH_LAN;
    }
    if (ss->ss_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
        return (a[0] == 0xfe && (a[1] & 0xc0u) == 0x80u) ? KM_PATH_LINK_LOCAL : KM_PATH_LAN;
    }
    return KM_PATH_LAN;
}
