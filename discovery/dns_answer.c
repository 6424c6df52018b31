/* The DNS server's pure part: one query's bytes to one response's bytes (discovery/dns.h,
 * docs/DNS.md). No I/O, no clock, no logging.
 *
 * Every query is first walked by our own bounded parser over km_buf (STYLE.md section 7):
 * header, the one question, every resource record the counts announce, and the end of the
 * message. Names are walked with a limit on total length (255 bytes of wire form, hence at
 * most 127 labels) and on compression: a pointer must point strictly before the start of
 * the name, and before the previous pointer's target, at most NAME_MAX_JUMPS times, so loops
 * and forward references cannot happen. Only a query that passes is given to ldns_wire2pkt
 * (as a second opinion, and for its RR objects); the response is built as an ldns_pkt and
 * written with ldns_pkt2wire. */
#include "discovery/dns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include <ldns/ldns.h>
#include <sodium.h>

#include "discovery/dns_rr.h"
#include "identity/derive.h"

#define NAME_WIRE_MAX 255 /* RFC 1035 section 3.1, including the root label */
#define NAME_LABELS_MAX 127
#define NAME_MAX_JUMPS 16
#define HDR_LEN 12
#define UDP_MIN 512 /* RFC 1035 section 4.2.1; EDNS sizes below it mean 512 (RFC 6891 6.2.5) */
#define TCP_MAX 65535

/* Header flag bits (RFC 1035 section 4.1.1). */
#define F_QR 0x8000u
#define F_RD 0x0100u
#define F_CD 0x0010u
#define OPCODE(f) (((f) >> 11) & 0xfu)
#define OPCODE_QUERY 0

#define T_OPT 41
#define T_SVCB 64
#define T_ANY 255
#define C_IN 1
#define C_ANY 255

/* The query as our walker saw it. */
struct query {
    uint16_t id;
    uint16_t flags;
    uint8_t name[NAME_WIRE_MAX]; /* uncompressed wire form, lowercased */
    size_t name_len;
    size_t label_off[NAME_LABELS_MAX + 1]; /* offset of each non-root label */
    size_t n_labels;
    uint16_t qtype;
    uint16_t qclass;
    bool edns;
    uint16_t edns_size;
    uint8_t edns_version;
    bool edns_do;
};

void km_dns_opts_default(struct km_dns_opts *o)
{
    memset(o, 0, sizeof *o);
    memcpy(o->suffix, KM_DEFAULT_SUFFIX, sizeof KM_DEFAULT_SUFFIX);
    o->prefix = KM_DEFAULT_PREFIX;
    o->ttl = 60;
    o->soa_serial = 1;
    o->rate_limit = 0;
    o->udp_max = 1232; /* the DNS Flag Day 2020 size: no IP fragmentation on common paths */
    o->rate_table = 1024;
    o->tcp_max_conns = 64;
    o->tcp_idle_ms = 10000;
    o->tcp_max_queued = 16;
}

/* ---- the walker ---- */

/* b positioned at absolute offset pos of the message whole (a view). */
static int view_at(const struct km_buf *whole, size_t pos, struct km_buf *b)
{
    *b = *whole; /* a read-only view: copying it shares no ownership */
    return km_buf_skip(b, pos);
}

static size_t offset_of(const struct km_buf *whole, const struct km_buf *cur)
{
    return km_buf_len(whole) - km_buf_len(cur);
}

/* Read the (possibly compressed) name at cur's position into out (lowercased wire form, at
 * most NAME_WIRE_MAX bytes) and advance cur past it. KM_ERR_INVALID on any violation. */
static int get_name(const struct km_buf *whole, struct km_buf *cur, uint8_t *out, size_t *out_len,
                    size_t *label_off, size_t *n_labels)
{
    size_t start = offset_of(whole, cur);
    size_t pos = start;
    size_t limit = start; /* a pointer must land strictly before this */
    size_t resume = 0;    /* where cur continues: after the first pointer or the root */
    bool jumped = false;
    unsigned jumps = 0;
    size_t n = 0, labels = 0;
    for (;;) {
        struct km_buf at;
        uint8_t len = 0;
        if (view_at(whole, pos, &at) != 0 || km_buf_get_u8(&at, &len) != 0) {
            return KM_ERR_INVALID; /* truncated */
        }
        if ((len & 0xc0) == 0xc0) {
            /* Compression pointer (RFC 1035 section 4.1.4). */
            uint8_t lo = 0;
            if (km_buf_get_u8(&at, &lo) != 0) {
                return KM_ERR_INVALID;
            }
            size_t target = ((size_t)(len & 0x3f) << 8) | lo;
            if (!jumped) {
                resume = pos + 2;
                jumped = true;
            }
            if (target >= limit || target < HDR_LEN || ++jumps > NAME_MAX_JUMPS) {
                return KM_ERR_INVALID; /* forward, self, looping or into the header */
            }
            limit = target;
            pos = target;
            continue;
        }
        if ((len & 0xc0) != 0) {
            return KM_ERR_INVALID; /* 0x40/0x80: extended label types, or a length > 63 */
        }
        if (n + 1u + len > NAME_WIRE_MAX) {
            return KM_ERR_INVALID;
        }
        if (len == 0) {
            out[n++] = 0;
            if (!jumped) {
                resume = pos + 1;
            }
            break;
        }
        if (labels >= NAME_LABELS_MAX) {
            return KM_ERR_INVALID;
        }
        if (label_off != NULL) {
            label_off[labels] = n;
        }
        labels++;
        out[n++] = len;
        if (km_buf_get_bytes(&at, out + n, len) != 0) {
            return KM_ERR_INVALID;
        }
        for (size_t i = 0; i < len; i++) {
            if (out[n + i] >= 'A' && out[n + i] <= 'Z') {
                out[n + i] = (uint8_t)(out[n + i] + ('a' - 'A'));
            }
        }
        n += len;
        pos += 1u + len;
    }
    *out_len = n;
    if (n_labels != NULL) {
        *n_labels = labels;
    }
    return km_buf_skip(cur, resume - start) == 0 ? 0 : KM_ERR_INVALID;
}

/* One resource record of the answer, authority or additional section. */
static int get_rr(const struct km_buf *whole, struct km_buf *cur, bool additional, struct query *q)
{
    uint8_t name[NAME_WIRE_MAX];
    size_t name_len = 0;
    uint16_t type = 0, rclass = 0, rdlength = 0;
    uint32_t ttl = 0;
    /* NAME, TYPE, CLASS, TTL, RDLENGTH, RDATA (RFC 1035 section 4.1.3) */
    if (get_name(whole, cur, name, &name_len, NULL, NULL) != 0 || km_buf_get_u16(cur, &type) != 0 ||
        km_buf_get_u16(cur, &rclass) != 0 || km_buf_get_u32(cur, &ttl) != 0 ||
        km_buf_get_u16(cur, &rdlength) != 0) {
        return KM_ERR_INVALID;
    }
    struct km_buf rdata;
    if (view_at(whole, offset_of(whole, cur), &rdata) != 0 || km_buf_skip(cur, rdlength) != 0) {
        return KM_ERR_INVALID;
    }
    if (type != T_OPT) {
        return 0;
    }
    /* OPT (RFC 6891 section 6.1): only in the additional section, only once, owned by the
     * root; CLASS = requester's UDP payload size, TTL = extended RCODE, VERSION, DO, Z. */
    if (!additional || q->edns || name_len != 1) {
        return KM_ERR_INVALID;
    }
    q->edns = true;
    q->edns_size = rclass;
    q->edns_version = (uint8_t)(ttl >> 16);
    q->edns_do = (ttl & 0x8000u) != 0;
    /* Options: {OPTION-CODE, OPTION-LENGTH, OPTION-DATA}* exactly filling RDATA. */
    size_t left = rdlength;
    while (left > 0) {
        uint16_t code = 0, olen = 0;
        if (left < 4 || km_buf_get_u16(&rdata, &code) != 0 || km_buf_get_u16(&rdata, &olen) != 0 ||
            olen > left - 4 || km_buf_skip(&rdata, olen) != 0) {
            return KM_ERR_INVALID;
        }
        left -= 4u + olen;
    }
    return 0;
}

/* Outcome of the walk: answerable, FORMERR, NOTIMP, or silence. */
enum walk {
    WALK_OK,
    WALK_FORMERR,
    WALK_NOTIMP,
    WALK_DROP,
};

static enum walk walk_query(const uint8_t *msg, size_t len, struct query *q)
{
    struct km_buf whole, cur;
    uint16_t qd = 0, an = 0, ns = 0, ar = 0;
    memset(q, 0, sizeof *q);
    km_buf_init_view(&whole, msg, len);
    cur = whole;
    /* ID, flags, QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT (RFC 1035 section 4.1.1) */
    if (km_buf_get_u16(&cur, &q->id) != 0 || km_buf_get_u16(&cur, &q->flags) != 0 ||
        km_buf_get_u16(&cur, &qd) != 0 || km_buf_get_u16(&cur, &an) != 0 ||
        km_buf_get_u16(&cur, &ns) != 0 || km_buf_get_u16(&cur, &ar) != 0) {
        return WALK_DROP; /* no header to answer */
    }
    if ((q->flags & F_QR) != 0) {
        return WALK_DROP; /* a response: answering it could start a loop between servers */
    }
    if (OPCODE(q->flags) != OPCODE_QUERY) {
        return WALK_NOTIMP; /* NOTIFY, UPDATE, IQUERY, STATUS... */
    }
    if (qd != 1) {
        return WALK_FORMERR;
    }
    /* QNAME, QTYPE, QCLASS (RFC 1035 section 4.1.2) */
    if (get_name(&whole, &cur, q->name, &q->name_len, q->label_off, &q->n_labels) != 0 ||
        km_buf_get_u16(&cur, &q->qtype) != 0 || km_buf_get_u16(&cur, &q->qclass) != 0) {
        return WALK_FORMERR;
    }
    /* Counts are bounded by the input: each RR takes at least 11 bytes or the walk fails. */
    unsigned total = (unsigned)an + ns + ar;
    for (unsigned i = 0; i < total; i++) {
        if (get_rr(&whole, &cur, i >= (unsigned)an + ns, q) != 0) {
            return WALK_FORMERR;
        }
    }
    if (km_buf_get_end(&cur) != 0) {
        return WALK_FORMERR; /* trailing bytes */
    }
    return WALK_OK;
}

/* A response with only a header: ID and opcode echoed, RD copied, QDCOUNT 0. For FORMERR and
 * NOTIMP, where the question may be unreadable (RFC 1035 leaves it optional). */
static int put_header_only(const struct query *q, unsigned rcode, struct km_buf *out)
{
    uint16_t flags = (uint16_t)(F_QR | (q->flags & (0xfu << 11)) | (q->flags & F_RD) | rcode);
    int r;
    if ((r = km_buf_put_u16(out, q->id)) != 0 || (r = km_buf_put_u16(out, flags)) != 0 ||
        (r = km_buf_put_u16(out, 0)) != 0 || (r = km_buf_put_u16(out, 0)) != 0 ||
        (r = km_buf_put_u16(out, 0)) != 0 || (r = km_buf_put_u16(out, 0)) != 0) {
        return r;
    }
    return 0;
}

/* ---- names and zones ---- */

/* The suffix's wire form (lowercase), with the root label. */
static int suffix_wire(const char *suffix, uint8_t *out, size_t *out_len)
{
    if (km_suffix_check(suffix) != 0) {
        return KM_ERR_INVALID;
    }
    size_t n = 0, len = strlen(suffix), start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && suffix[i] != '.') {
            continue;
        }
        out[n++] = (uint8_t)(i - start);
        for (size_t j = start; j < i; j++) {
            char c = suffix[j];
            out[n++] = (uint8_t)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
        }
        start = i + 1;
    }
    out[n++] = 0;
    *out_len = n;
    return 0;
}

/* The reverse zone of a /16 prefix: four nibble labels, "ip6", "arpa" (RFC 3596 section 2.5). */
static void reverse_wire(uint16_t prefix, uint8_t *out, size_t *out_len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (unsigned i = 0; i < 4; i++) {
        out[n++] = 1;
        out[n++] = (uint8_t)hex[(prefix >> (4 * i)) & 0xf];
    }
    static const uint8_t tail[] = {3, 'i', 'p', '6', 4, 'a', 'r', 'p', 'a', 0};
    memcpy(out + n, tail, sizeof tail);
    *out_len = n + sizeof tail;
}

/* If q's name is zone or below it, the number of labels before the zone; else -1. */
static int labels_below(const struct query *q, const uint8_t *zone, size_t zone_len)
{
    if (q->name_len < zone_len) {
        return -1;
    }
    size_t tail = q->name_len - zone_len;
    if (tail == 0) {
        return memcmp(q->name, zone, zone_len) == 0 ? 0 : -1;
    }
    for (size_t i = 0; i < q->n_labels; i++) {
        if (q->label_off[i] == tail) {
            return memcmp(q->name + tail, zone, zone_len) == 0 ? (int)i : -1;
        }
    }
    return -1; /* the zone's bytes would start inside a label */
}

static ldns_rdf *dname_rdf(const uint8_t *wire, size_t len)
{
    return ldns_dname_new_frm_data((uint16_t)len, wire);
}

/* "<node id>.<suffix>." as a dname. */
static ldns_rdf *fqdn_rdf(const struct km_pubkey *k, const uint8_t *sfx, size_t sfx_len)
{
    uint8_t w[NAME_WIRE_MAX];
    char id[KM_NODE_ID_LEN + 1];
    if (1u + KM_NODE_ID_LEN + sfx_len > sizeof w) {
        return NULL; /* cannot happen: km_suffix_check bounds the suffix */
    }
    km_node_id(k, id);
    w[0] = KM_NODE_ID_LEN;
    memcpy(w + 1, id, KM_NODE_ID_LEN);
    memcpy(w + 1 + KM_NODE_ID_LEN, sfx, sfx_len);
    return dname_rdf(w, 1u + KM_NODE_ID_LEN + sfx_len);
}

/* ---- records ---- */

struct ctx {
    const struct km_dns_opts *o;
    const struct km_dns_backend *b;
    const struct sockaddr *from;
    const struct query *q;
    ldns_pkt *r;
    const ldns_rdf *qname; /* the question's name as sent (case kept), borrowed */
    uint8_t sfx[NAME_WIRE_MAX];
    size_t sfx_len;
    uint8_t rev[NAME_WIRE_MAX];
    size_t rev_len;
};

/* A new RR owned by owner (taken) with rdfs (taken, n of them), pushed into section. 0, or
 * -ENOMEM with everything freed. */
static int push_rr(ldns_pkt *r, ldns_pkt_section sec, ldns_rdf *owner, ldns_rr_type type,
                   uint32_t ttl, ldns_rdf **rdfs, size_t n)
{
    ldns_rr *rr;
    int e = km_dns_rr_new(owner, type, LDNS_RR_CLASS_IN, ttl, rdfs, n, &rr);
    if (e != 0) {
        return e;
    }
    if (!ldns_pkt_push_rr(r, sec, rr)) {
        ldns_rr_free(rr);
        return -ENOMEM;
    }
    return 0;
}

static ldns_rdf *qname_dup(const struct ctx *c)
{
    return ldns_rdf_clone(c->qname);
}

static int push_soa(struct ctx *c, bool reverse, ldns_pkt_section sec)
{
    /* MNAME is the suffix apex (the server has no name of its own), RNAME hostmaster at it;
     * MINIMUM, the negative-caching TTL (RFC 2308), is the answer TTL. */
    uint8_t rname[NAME_WIRE_MAX];
    static const uint8_t hm[] = {10, 'h', 'o', 's', 't', 'm', 'a', 's', 't', 'e', 'r'};
    if (sizeof hm + c->sfx_len > sizeof rname) {
        return KM_ERR_TOO_LARGE;
    }
    memcpy(rname, hm, sizeof hm);
    memcpy(rname + sizeof hm, c->sfx, c->sfx_len);
    ldns_rdf *rd[7] = {
        dname_rdf(c->sfx, c->sfx_len),
        dname_rdf(rname, sizeof hm + c->sfx_len),
        ldns_native2rdf_int32(LDNS_RDF_TYPE_INT32, c->o->soa_serial),
        ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, 3600),
        ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, 600),
        ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, 86400),
        ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, c->o->ttl),
    };
    ldns_rdf *owner = reverse ? dname_rdf(c->rev, c->rev_len) : dname_rdf(c->sfx, c->sfx_len);
    return push_rr(c->r, sec, owner, LDNS_RR_TYPE_SOA, c->o->ttl, rd, 7);
}

static int push_ns(struct ctx *c)
{
    ldns_rdf *rd[1] = {dname_rdf(c->sfx, c->sfx_len)};
    return push_rr(c->r, LDNS_SECTION_ANSWER, qname_dup(c), LDNS_RR_TYPE_NS, c->o->ttl, rd, 1);
}

/* RFC 8482 section 4.2: a synthesized HINFO instead of every type at the name. */
static int push_hinfo(struct ctx *c)
{
    ldns_rdf *rd[2] = {km_dns_str_rdf("RFC8482", 7), km_dns_str_rdf("", 0)};
    return push_rr(c->r, LDNS_SECTION_ANSWER, qname_dup(c), LDNS_RR_TYPE_HINFO, c->o->ttl, rd, 2);
}

static int push_aaaa(struct ctx *c, const struct km_pubkey *k)
{
    uint8_t vip[16];
    km_vip(k, c->o->prefix, vip);
    ldns_rdf *rd[1] = {ldns_rdf_new_frm_data(LDNS_RDF_TYPE_AAAA, sizeof vip, vip)};
    return push_rr(c->r, LDNS_SECTION_ANSWER, qname_dup(c), LDNS_RR_TYPE_AAAA, c->o->ttl, rd, 1);
}

static int push_txt(struct ctx *c, const struct km_pubkey *k)
{
    char txt[KM_DNS_TXT_SIZE];
    km_dns_txt_key(k, txt);
    ldns_rdf *rd[1] = {km_dns_str_rdf(txt, strlen(txt))};
    return push_rr(c->r, LDNS_SECTION_ANSWER, qname_dup(c), LDNS_RR_TYPE_TXT, c->o->ttl, rd, 1);
}

static int push_ptr(struct ctx *c, const struct km_pubkey *k)
{
    ldns_rdf *rd[1] = {fqdn_rdf(k, c->sfx, c->sfx_len)};
    return push_rr(c->r, LDNS_SECTION_ANSWER, qname_dup(c), LDNS_RR_TYPE_PTR, c->o->ttl, rd, 1);
}

static int push_svcb(struct ctx *c, const struct km_pubkey *k)
{
    struct km_path paths[KM_DNS_MAX_PATHS];
    size_t order[KM_DNS_MAX_PATHS];
    if (c->b == NULL || c->b->paths == NULL) {
        return 0;
    }
    memset(paths, 0, sizeof paths);
    size_t n = c->b->paths(c->b->arg, k, paths, KM_DNS_MAX_PATHS);
    if (n > KM_DNS_MAX_PATHS) {
        n = KM_DNS_MAX_PATHS;
    }
    enum km_requester who = KM_REQ_OTHER;
    if (c->from != NULL && c->b->classify != NULL) {
        who = c->b->classify(c->b->arg, c->from);
        if (who != KM_REQ_SAME_LINK && who != KM_REQ_VPN) {
            who = KM_REQ_OTHER;
        }
    }
    size_t m = km_path_rank(paths, n, who, order);
    uint16_t prio = 0;
    for (size_t i = 0; i < m && i < n; i++) {
        const struct km_path *p = &paths[order[i] < n ? order[i] : 0];
        if (order[i] >= n || (p->kind == KM_PATH_RELAY && !p->has_via)) {
            continue; /* a relay without its gateway cannot be named */
        }
        uint8_t pbuf[64];
        struct km_buf w;
        km_buf_init_fixed(&w, pbuf, sizeof pbuf);
        if (km_path_svc_params(p, &w) != 0) {
            continue;
        }
        /* SvcPriority, TargetName, SvcParams (RFC 9460 section 2.2). "." means the owner
         * name's own addresses; a relay names its gateway. */
        static const uint8_t root[1] = {0};
        ldns_rdf *rd[3] = {
            ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, ++prio),
            p->kind == KM_PATH_RELAY ? fqdn_rdf(&p->via, c->sfx, c->sfx_len)
                                     : dname_rdf(root, sizeof root),
            ldns_rdf_new_frm_data(LDNS_RDF_TYPE_SVCPARAMS, km_buf_len(&w), km_buf_peek_ptr(&w)),
        };
        int r =
            push_rr(c->r, LDNS_SECTION_ANSWER, qname_dup(c), LDNS_RR_TYPE_SVCB, c->o->ttl, rd, 3);
        if (r != 0) {
            return r;
        }
    }
    return 0;
}

/* ---- lookups ---- */

enum found {
    NAME_NONE, /* NXDOMAIN */
    NAME_APEX,
    NAME_NODE,
    NAME_PTR,
    NAME_EMPTY, /* exists, no records (an empty non-terminal of the reverse tree) */
};

/* Under the suffix: a node ID, or an alias of letters, digits, '-' and '_' labels. */
static enum found find_forward(const struct ctx *c, int below, struct km_pubkey *key)
{
    const struct query *q = c->q;
    if (below == 0) {
        return NAME_APEX;
    }
    const uint8_t *first = q->name + 1;
    if (below == 1 && q->name[0] == KM_NODE_ID_LEN &&
        km_node_id_parse((const char *)first, KM_NODE_ID_LEN, key) == 0) {
        return NAME_NODE;
    }
    if (c->b == NULL || c->b->lookup_alias == NULL) {
        return NAME_NONE;
    }
    /* The labels before the suffix in text form: they only hold [a-z0-9_-] (lowercased), so
     * the dots are unambiguous. */
    char label[NAME_WIRE_MAX];
    size_t n = 0;
    size_t end = q->name_len - c->sfx_len;
    for (size_t i = 0; i < end;) {
        uint8_t len = q->name[i++];
        if (n > 0) {
            label[n++] = '.';
        }
        for (size_t j = 0; j < len; j++, i++) {
            uint8_t ch = q->name[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_')) {
                return NAME_NONE;
            }
            label[n++] = (char)ch;
        }
    }
    label[n] = '\0';
    return c->b->lookup_alias(c->b->arg, label, key) == 0 ? NAME_NODE : NAME_NONE;
}

static int nibble(uint8_t ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    return -1;
}

/* Under the reverse zone: 28 nibbles name a VIP, fewer are empty non-terminals (NOERROR, so
 * RFC 8020 resolvers do not prune the tree). */
static enum found find_reverse(const struct ctx *c, int below, struct km_pubkey *key)
{
    const struct query *q = c->q;
    uint8_t vip[16] = {(uint8_t)(c->o->prefix >> 8), (uint8_t)c->o->prefix};
    if (below == 0) {
        return NAME_APEX;
    }
    if (below > 28) {
        return NAME_NONE;
    }
    for (int i = 0; i < below; i++) {
        const uint8_t *l = q->name + q->label_off[i];
        int v = l[0] == 1 ? nibble(l[1]) : -1;
        if (v < 0) {
            return NAME_NONE;
        }
        /* The last label before the zone is nibble 4 (the high half of byte 2). */
        unsigned idx = 31u - (unsigned)i - (unsigned)(28 - below);
        vip[idx / 2] = (uint8_t)(vip[idx / 2] | (idx % 2 == 0 ? v << 4 : v));
    }
    if (below < 28) {
        return NAME_EMPTY;
    }
    uint8_t check[16];
    if (c->b == NULL || c->b->lookup_vip == NULL || c->b->lookup_vip(c->b->arg, vip, key) != 0) {
        return NAME_NONE;
    }
    /* DESIGN.md section 3: a VIP maps to a node only through a key that hashes to it. */
    km_vip(key, c->o->prefix, check);
    return memcmp(check, vip, 16) == 0 ? NAME_PTR : NAME_NONE;
}

/* Fill c->r's answer (and authority) for the question. */
static int answer_question(struct ctx *c)
{
    const struct query *q = c->q;
    bool reverse = false;
    int below = labels_below(q, c->sfx, c->sfx_len);
    if (below < 0) {
        below = labels_below(q, c->rev, c->rev_len);
        reverse = below >= 0;
    }
    if (below < 0 || (q->qclass != C_IN && q->qclass != C_ANY)) {
        ldns_pkt_set_rcode(c->r, LDNS_RCODE_REFUSED); /* not ours: never recursive */
        return 0;
    }
    if (q->qtype == LDNS_RR_TYPE_AXFR || q->qtype == LDNS_RR_TYPE_IXFR) {
        ldns_pkt_set_rcode(c->r, LDNS_RCODE_REFUSED); /* no zone transfers: the zone is
                                                       * synthesized and unbounded */
        return 0;
    }
    if (q->qtype == LDNS_RR_TYPE_MAILA || q->qtype == LDNS_RR_TYPE_MAILB) {
        ldns_pkt_set_rcode(c->r, LDNS_RCODE_NOTIMPL);
        return 0;
    }
    ldns_pkt_set_aa(c->r, true);
    struct km_pubkey key;
    enum found f = reverse ? find_reverse(c, below, &key) : find_forward(c, below, &key);
    int r = 0;
    switch (f) {
    case NAME_NONE:
        ldns_pkt_set_rcode(c->r, LDNS_RCODE_NXDOMAIN);
        return push_soa(c, reverse, LDNS_SECTION_AUTHORITY);
    case NAME_EMPTY:
        break;
    case NAME_APEX:
        if (q->qtype == LDNS_RR_TYPE_SOA) {
            r = push_soa(c, reverse, LDNS_SECTION_ANSWER);
        } else if (q->qtype == LDNS_RR_TYPE_NS) {
            r = push_ns(c);
        } else if (q->qtype == T_ANY) {
            r = push_hinfo(c);
        }
        break;
    case NAME_NODE:
        if (q->qtype == LDNS_RR_TYPE_AAAA) {
            r = push_aaaa(c, &key);
        } else if (q->qtype == LDNS_RR_TYPE_TXT) {
            r = push_txt(c, &key);
        } else if (q->qtype == T_SVCB) {
            r = push_svcb(c, &key);
        } else if (q->qtype == T_ANY) {
            r = push_hinfo(c);
        }
        break;
    case NAME_PTR:
        if (q->qtype == LDNS_RR_TYPE_PTR) {
            r = push_ptr(c, &key);
        } else if (q->qtype == T_ANY) {
            r = push_hinfo(c);
        }
        break;
    }
    sodium_memzero(&key, sizeof key);
    if (r != 0) {
        return r;
    }
    if (ldns_pkt_ancount(c->r) == 0) {
        return push_soa(c, reverse, LDNS_SECTION_AUTHORITY); /* NODATA (RFC 2308 section 2.2) */
    }
    return 0;
}

/* Write r, dropping answer, then authority records from the end until it fits limit (TC=1
 * when anything was dropped). */
static int encode_within(ldns_pkt *r, size_t limit, struct km_buf *out)
{
    for (;;) {
        uint8_t *wire = NULL;
        size_t wl = 0;
        if (ldns_pkt2wire(&wire, r, &wl) != LDNS_STATUS_OK || wire == NULL) {
            free(wire);
            return -ENOMEM;
        }
        if (wl <= limit) {
            int rc = km_buf_put_bytes(out, wire, wl);
            free(wire);
            return rc;
        }
        free(wire);
        ldns_pkt_set_tc(r, true);
        ldns_rr_list *l = ldns_pkt_answer(r);
        ldns_pkt_section sec = LDNS_SECTION_ANSWER;
        if (ldns_rr_list_rr_count(l) == 0) {
            l = ldns_pkt_authority(r);
            sec = LDNS_SECTION_AUTHORITY;
        }
        if (ldns_rr_list_rr_count(l) == 0) {
            return KM_ERR_TOO_LARGE; /* header, question and OPT always fit 512 */
        }
        ldns_rr_free(ldns_rr_list_pop_rr(l));
        if (sec == LDNS_SECTION_ANSWER) {
            ldns_pkt_set_ancount(r, (uint16_t)ldns_rr_list_rr_count(l));
        } else {
            ldns_pkt_set_nscount(r, (uint16_t)ldns_rr_list_rr_count(l));
        }
    }
}

int km_dns_answer(const struct km_dns_opts *o, const struct km_dns_backend *b, const uint8_t *query,
                  size_t len, const struct sockaddr *from, bool tcp, struct km_buf *out)
{
    struct query q;
    struct ctx c;
    ldns_pkt *qp = NULL;
    int rc = 0;
    memset(&c, 0, sizeof c);
    if (o == NULL || query == NULL || suffix_wire(o->suffix, c.sfx, &c.sfx_len) != 0) {
        return KM_ERR_INVALID;
    }
    reverse_wire(o->prefix, c.rev, &c.rev_len);
    switch (walk_query(query, len, &q)) {
    case WALK_DROP:
        return KM_ERR_INVALID;
    case WALK_NOTIMP:
        return put_header_only(&q, LDNS_RCODE_NOTIMPL, out);
    case WALK_FORMERR:
        return put_header_only(&q, LDNS_RCODE_FORMERR, out);
    case WALK_OK:
        break;
    }
    /* Our walker accepted it; ldns must agree, or we answer FORMERR. */
    if (ldns_wire2pkt(&qp, query, len) != LDNS_STATUS_OK || qp == NULL ||
        ldns_pkt_qdcount(qp) != 1 || ldns_rr_list_rr_count(ldns_pkt_question(qp)) != 1) {
        ldns_pkt_free(qp);
        return put_header_only(&q, LDNS_RCODE_FORMERR, out);
    }
    ldns_rr *qrr = ldns_rr_list_rr(ldns_pkt_question(qp), 0);
    c.o = o;
    c.b = b;
    c.from = from;
    c.q = &q;
    c.qname = ldns_rr_owner(qrr);
    c.r = ldns_pkt_new();
    ldns_rr *qcopy = ldns_rr_clone(qrr);
    if (c.r == NULL || qcopy == NULL || !ldns_pkt_push_rr(c.r, LDNS_SECTION_QUESTION, qcopy)) {
        ldns_rr_free(qcopy);
        rc = -ENOMEM;
        goto out;
    }
    ldns_pkt_set_id(c.r, q.id);
    ldns_pkt_set_qr(c.r, true);
    ldns_pkt_set_opcode(c.r, LDNS_PACKET_QUERY);
    ldns_pkt_set_rd(c.r, (q.flags & F_RD) != 0);
    ldns_pkt_set_cd(c.r, (q.flags & F_CD) != 0);
    ldns_pkt_set_ra(c.r, false);
    size_t limit = TCP_MAX;
    if (!tcp) {
        limit = UDP_MIN;
    }
    if (q.edns) {
        /* RFC 6891 section 6.1.1: echo OPT with our own payload size. */
        uint16_t udp_max = o->udp_max < UDP_MIN ? UDP_MIN : o->udp_max;
        ldns_pkt_set_edns_udp_size(c.r, udp_max);
        ldns_pkt_set_edns_version(c.r, 0);
        ldns_pkt_set_edns_do(c.r, q.edns_do);
        if (!tcp && q.edns_size > UDP_MIN) {
            limit = q.edns_size < udp_max ? q.edns_size : udp_max;
        }
        if (q.edns_version != 0) {
            /* BADVERS (16): upper 8 bits in OPT, lower 4 in the header (RFC 6891 6.1.3). */
            ldns_pkt_set_edns_extended_rcode(c.r, 1);
            ldns_pkt_set_rcode(c.r, 0);
            rc = encode_within(c.r, limit, out);
            goto out;
        }
    }
    if ((rc = answer_question(&c)) != 0) {
        goto out;
    }
    rc = encode_within(c.r, limit, out);
out:
    ldns_pkt_free(c.r);
    ldns_pkt_free(qp);
    return rc;
}
