/* HTTP/1.1 proxy: head parsers, framing, chunked decoding and the server.
 * Behaviour, limits and the error-to-status table: docs/PROXY.md. */
#include "proto/httpproxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/relay.h"
#include "core/uvstream.h"

/* ---- character classes (RFC 9110 section 5.6.2) ---- */

static bool is_tchar(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-vchar, SP and HTAB: everything but controls (obs-text 0x80-0xff is allowed). */
static bool is_field_char(uint8_t c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool is_ows(uint8_t c)
{
    return c == ' ' || c == '\t';
}

static bool view_eq(struct km_http_view v, const char *s)
{
    size_t n = strlen(s);
    return v.len == n && strncasecmp(v.p, s, n) == 0;
}

/* ---- head parsing ---- */

/* Find the end of a head in b: the offset just past the empty line, within KM_HTTP_MAX_HEAD.
 * Leading empty lines (RFC 9112 section 2.2 lets a server skip them) are counted in *skip. */
static int find_head(const struct km_buf *b, size_t *head_len, size_t *skip)
{
    size_t n = km_buf_len(b);
    size_t lim = n < KM_HTTP_MAX_HEAD ? n : KM_HTTP_MAX_HEAD;
    size_t line_start = 0;
    bool leading = true;
    *skip = 0;
    for (size_t i = 0; i < lim; i++) {
        uint8_t c;
        if (km_buf_peek_u8(b, i, &c) != 0) {
            return KM_ERR_INCOMPLETE;
        }
        if (c != '\n') {
            continue;
        }
        size_t len = i - line_start; /* without the LF */
        bool empty = len == 0;
        if (len == 1) {
            uint8_t c0;
            if (km_buf_peek_u8(b, line_start, &c0) == 0 && c0 == '\r') {
                empty = true;
            }
        }
        if (empty && leading) {
            *skip = i + 1;
        } else if (empty) {
            *head_len = i + 1;
            return 0;
        } else {
            leading = false;
        }
        line_start = i + 1;
    }
    return n >= KM_HTTP_MAX_HEAD ? KM_ERR_TOO_LARGE : KM_ERR_INCOMPLETE;
}

/* Cut the next line from the head view h; *line excludes CR LF. A CR anywhere but before the
 * LF is left in the line, where the character checks refuse it. */
static bool next_line(const char *h, size_t n, size_t *pos, struct km_http_view *line)
{
    if (*pos >= n) {
        return false;
    }
    size_t start = *pos;
    const char *lf = memchr(h + start, '\n', n - start);
    size_t end = lf != NULL ? (size_t)(lf - h) : n;
    size_t len = end - start;
    if (len > 0 && h[end - 1] == '\r') {
        len--;
    }
    line->p = h + start;
    line->len = len;
    *pos = end + 1;
    return true;
}

/* "HTTP/1.x" exactly: KM_ERR_UNSUPPORTED for another digit.digit major version. */
static int parse_version(struct km_http_view v, int *minor)
{
    if (v.len != 8 || memcmp(v.p, "HTTP/", 5) != 0 || v.p[6] != '.' || v.p[5] < '0' ||
        v.p[5] > '9' || v.p[7] < '0' || v.p[7] > '9') {
        return KM_ERR_INVALID;
    }
    if (v.p[5] != '1') {
        return KM_ERR_UNSUPPORTED;
    }
    *minor = v.p[7] - '0';
    return 0;
}

/* header-field = field-name ":" OWS field-value OWS (RFC 9112 section 5). */
static int parse_headers(const char *h, size_t n, size_t *pos, struct km_http_header *hdrs,
                         size_t max_hdrs, size_t *n_hdrs)
{
    struct km_http_view line;
    *n_hdrs = 0;
    while (next_line(h, n, pos, &line)) {
        if (line.len == 0) {
            return 0; /* the empty line ending the head */
        }
        /* A line starting with whitespace is obs-fold (or whitespace before the first
         * header): refused, as RFC 9112 section 5.2 allows, to avoid smuggling. */
        size_t i = 0;
        while (i < line.len && is_tchar((uint8_t)line.p[i])) {
            i++;
        }
        if (i == 0 || i == line.len || line.p[i] != ':') {
            return KM_ERR_INVALID;
        }
        struct km_http_view name = {line.p, i};
        i++;
        while (i < line.len && is_ows((uint8_t)line.p[i])) {
            i++;
        }
        size_t vstart = i, vend = i;
        for (; i < line.len; i++) {
            uint8_t c = (uint8_t)line.p[i];
            if (!is_field_char(c)) {
                return KM_ERR_INVALID;
            }
            if (!is_ows(c)) {
                vend = i + 1;
            }
        }
        if (*n_hdrs >= max_hdrs) {
            return KM_ERR_TOO_LARGE;
        }
        hdrs[*n_hdrs].name = name;
        hdrs[*n_hdrs].value = (struct km_http_view){line.p + vstart, vend - vstart};
        (*n_hdrs)++;
    }
    return KM_ERR_INVALID; /* unreachable: find_head saw the empty line */
}

/* Take the head's bytes from b through a scratch copy (nothing consumed on failure). */
static int take_head(struct km_buf *t, const char **h, size_t *n, size_t *total)
{
    size_t head_len, skip;
    int r = find_head(t, &head_len, &skip);
    if (r != 0) {
        return r;
    }
    const uint8_t *p;
    if ((r = km_buf_skip(t, skip)) != 0 || (r = km_buf_get_view(t, head_len - skip, &p)) != 0) {
        return r;
    }
    *h = (const char *)p;
    *n = head_len - skip;
    *total = head_len;
    return 0;
}

int km_http_parse_request(struct km_buf *b, struct km_http_request *out,
                          struct km_http_header *hdrs, size_t max_hdrs)
{
    memset(out, 0, sizeof *out);
    struct km_buf t = *b;
    const char *h;
    size_t n, total, pos = 0;
    int r = take_head(&t, &h, &n, &total);
    if (r != 0) {
        return r;
    }
    /* request-line = method SP request-target SP HTTP-version (RFC 9112 section 3) */
    struct km_http_view line;
    if (!next_line(h, n, &pos, &line)) {
        return KM_ERR_INVALID;
    }
    size_t i = 0;
    while (i < line.len && is_tchar((uint8_t)line.p[i])) {
        i++;
    }
    if (i == 0 || i == line.len || line.p[i] != ' ') {
        return KM_ERR_INVALID;
    }
    struct km_http_view method = {line.p, i};
    size_t tstart = ++i;
    while (i < line.len && (uint8_t)line.p[i] > 0x20 && (uint8_t)line.p[i] < 0x7f) {
        i++;
    }
    if (i == tstart || i == line.len || line.p[i] != ' ') {
        return KM_ERR_INVALID;
    }
    struct km_http_view target = {line.p + tstart, i - tstart};
    struct km_http_view version = {line.p + i + 1, line.len - i - 1};
    int minor;
    if ((r = parse_version(version, &minor)) != 0) {
        return r;
    }
    size_t nh;
    if ((r = parse_headers(h, n, &pos, hdrs, max_hdrs, &nh)) != 0) {
        return r;
    }
    if ((r = km_buf_skip(b, total)) != 0) {
        return r;
    }
    out->method = method;
    out->target = target;
    out->minor_version = minor;
    out->headers = hdrs;
    out->n_headers = nh;
    out->head_len = total;
    return 0;
}

int km_http_parse_response(struct km_buf *b, struct km_http_response *out,
                           struct km_http_header *hdrs, size_t max_hdrs)
{
    memset(out, 0, sizeof *out);
    struct km_buf t = *b;
    const char *h;
    size_t n, total, pos = 0;
    int r = take_head(&t, &h, &n, &total);
    if (r != 0) {
        return r;
    }
    /* status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 section 4);
     * a missing SP after the code is tolerated. */
    struct km_http_view line;
    if (!next_line(h, n, &pos, &line) || line.len < 12 || line.p[8] != ' ') {
        return KM_ERR_INVALID;
    }
    int minor;
    if ((r = parse_version((struct km_http_view){line.p, 8}, &minor)) != 0) {
        return r;
    }
    int status = 0;
    for (size_t i = 9; i < 12; i++) {
        if (line.p[i] < '0' || line.p[i] > '9') {
            return KM_ERR_INVALID;
        }
        status = status * 10 + (line.p[i] - '0');
    }
    if (status < 100 || status > 599) {
        return KM_ERR_INVALID;
    }
    struct km_http_view reason = {line.p + 12, 0};
    if (line.len > 12) {
        if (line.p[12] != ' ') {
            return KM_ERR_INVALID;
        }
        reason = (struct km_http_view){line.p + 13, line.len - 13};
        for (size_t i = 0; i < reason.len; i++) {
            if (!is_field_char((uint8_t)reason.p[i])) {
                return KM_ERR_INVALID;
            }
        }
    }
    size_t nh;
    if ((r = parse_headers(h, n, &pos, hdrs, max_hdrs, &nh)) != 0) {
        return r;
    }
    if ((r = km_buf_skip(b, total)) != 0) {
        return r;
    }
    out->minor_version = minor;
    out->status = status;
    out->reason = reason;
    out->headers = hdrs;
    out->n_headers = nh;
    out->head_len = total;
    return 0;
}

const struct km_http_header *km_http_header_find(const struct km_http_header *hdrs, size_t n,
                                                 const char *name, size_t *pos)
{
    for (size_t i = pos != NULL ? *pos : 0; i < n; i++) {
        if (view_eq(hdrs[i].name, name)) {
            if (pos != NULL) {
                *pos = i + 1;
            }
            return &hdrs[i];
        }
    }
    if (pos != NULL) {
        *pos = n;
    }
    return NULL;
}

bool km_http_list_has(struct km_http_view list, const char *token, size_t token_len)
{
    size_t i = 0;
    while (i < list.len) {
        while (i < list.len && (is_ows((uint8_t)list.p[i]) || list.p[i] == ',')) {
            i++;
        }
        size_t start = i;
        while (i < list.len && list.p[i] != ',') {
            i++;
        }
        size_t end = i;
        while (end > start && is_ows((uint8_t)list.p[end - 1])) {
            end--;
        }
        if (end - start == token_len && token_len > 0 &&
            strncasecmp(list.p + start, token, token_len) == 0) {
            return true;
        }
    }
    return false;
}

/* Content-Length = 1*DIGIT; several fields (or a list) must all agree (RFC 9110 8.6). */
static int content_length(const struct km_http_header *hdrs, size_t n, bool *present, uint64_t *len)
{
    *present = false;
    *len = 0;
    size_t pos = 0;
    const struct km_http_header *h;
    while ((h = km_http_header_find(hdrs, n, "content-length", &pos)) != NULL) {
        if (h->value.len == 0 || h->value.len > 18) {
            return KM_ERR_INVALID; /* 18 digits cannot overflow u64 */
        }
        uint64_t v = 0;
        for (size_t i = 0; i < h->value.len; i++) {
            char c = h->value.p[i];
            if (c < '0' || c > '9') {
                return KM_ERR_INVALID;
            }
            v = v * 10 + (uint64_t)(c - '0');
        }
        if (*present && v != *len) {
            return KM_ERR_INVALID;
        }
        *present = true;
        *len = v;
    }
    return 0;
}

/* 1: exactly one Transfer-Encoding field whose value is "chunked"; 0: none; 2: anything
 * else. */
static int transfer_encoding(const struct km_http_header *hdrs, size_t n)
{
    size_t pos = 0;
    const struct km_http_header *h = km_http_header_find(hdrs, n, "transfer-encoding", &pos);
    if (h == NULL) {
        return 0;
    }
    if (km_http_header_find(hdrs, n, "transfer-encoding", &pos) != NULL) {
        return 2;
    }
    return view_eq(h->value, "chunked") ? 1 : 2;
}

int km_http_request_body(const struct km_http_request *r, enum km_http_body *kind, uint64_t *len)
{
    *kind = KM_HTTP_BODY_NONE;
    *len = 0;
    bool has_cl;
    uint64_t cl;
    int rc = content_length(r->headers, r->n_headers, &has_cl, &cl);
    if (rc != 0) {
        return rc;
    }
    int te = transfer_encoding(r->headers, r->n_headers);
    if (te != 0) {
        /* RFC 9112 section 6.1: TE with CL, or TE in HTTP/1.0, is a smuggling attempt. */
        if (has_cl || r->minor_version == 0) {
            return KM_ERR_INVALID;
        }
        if (te != 1) {
            return KM_ERR_UNSUPPORTED;
        }
        *kind = KM_HTTP_BODY_CHUNKED;
        return 0;
    }
    if (has_cl && cl > 0) {
        *kind = KM_HTTP_BODY_LENGTH;
        *len = cl;
    }
    return 0;
}

int km_http_response_body(const struct km_http_response *r, bool head_request,
                          enum km_http_body *kind, uint64_t *len)
{
    *kind = KM_HTTP_BODY_NONE;
    *len = 0;
    bool has_cl;
    uint64_t cl;
    int rc = content_length(r->headers, r->n_headers, &has_cl, &cl);
    if (rc != 0) {
        return rc;
    }
    int te = transfer_encoding(r->headers, r->n_headers);
    if (te != 0 && has_cl) {
        return KM_ERR_INVALID; /* ambiguous framing: refuse rather than guess */
    }
    if (head_request || r->status < 200 || r->status == 204 || r->status == 304) {
        return 0;
    }
    if (te == 1) {
        *kind = KM_HTTP_BODY_CHUNKED;
    } else if (te == 2) {
        *kind = KM_HTTP_BODY_CLOSE; /* RFC 9112 6.3 rule 4 */
    } else if (has_cl) {
        *kind = cl > 0 ? KM_HTTP_BODY_LENGTH : KM_HTTP_BODY_NONE;
        *len = cl;
    } else {
        *kind = KM_HTTP_BODY_CLOSE;
    }
    return 0;
}

/* reg-name and IPv4 characters of RFC 3986 host, minus '%' escapes: unreserved and
 * sub-delims. */
static bool is_host_char(uint8_t c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    return c != 0 && strchr("-._~!$&'()*+,;=", c) != NULL;
}

int km_http_parse_authority(struct km_http_view a, uint16_t default_port, char host[static 256],
                            uint16_t *port)
{
    host[0] = '\0';
    *port = 0;
    size_t hs, he, i;
    if (a.len > 0 && a.p[0] == '[') {
        /* IP-literal: "[" IPv6address "]" */
        const char *rb = memchr(a.p, ']', a.len);
        if (rb == NULL) {
            return KM_ERR_INVALID;
        }
        hs = 1;
        he = (size_t)(rb - a.p);
        i = he + 1;
        char tmp[64];
        struct in6_addr a6;
        if (he - hs == 0 || he - hs >= sizeof tmp) {
            return KM_ERR_INVALID;
        }
        memcpy(tmp, a.p + hs, he - hs);
        tmp[he - hs] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1) {
            return KM_ERR_INVALID;
        }
    } else {
        hs = 0;
        i = 0;
        while (i < a.len && is_host_char((uint8_t)a.p[i])) {
            i++;
        }
        he = i;
        if (he == 0) {
            return KM_ERR_INVALID;
        }
    }
    if (he - hs > 255) {
        return KM_ERR_INVALID;
    }
    uint32_t p = default_port;
    if (i < a.len) {
        if (a.p[i] != ':' || i + 1 == a.len || a.len - i - 1 > 5) {
            return KM_ERR_INVALID;
        }
        p = 0;
        for (size_t j = i + 1; j < a.len; j++) {
            if (a.p[j] < '0' || a.p[j] > '9') {
                return KM_ERR_INVALID;
            }
            p = p * 10 + (uint32_t)(a.p[j] - '0');
        }
    }
    if (p == 0 || p > 65535) {
        return KM_ERR_INVALID;
    }
    memcpy(host, a.p + hs, he - hs);
    host[he - hs] = '\0';
    *port = (uint16_t)p;
    return 0;
}

int km_http_split_absolute(struct km_http_view target, struct km_http_view *authority,
                           struct km_http_view *path)
{
    *authority = (struct km_http_view){NULL, 0};
    *path = (struct km_http_view){NULL, 0};
    static const char scheme[] = "http://";
    size_t sl = sizeof scheme - 1;
    const char *colon = memchr(target.p, ':', target.len);
    if (colon == NULL) {
        return KM_ERR_INVALID;
    }
    if (target.len < sl || strncasecmp(target.p, scheme, sl) != 0) {
        return KM_ERR_UNSUPPORTED; /* https:// and others: not for a plain proxy */
    }
    size_t i = sl;
    while (i < target.len && target.p[i] != '/' && target.p[i] != '?' && target.p[i] != '#') {
        i++;
    }
    if (i == sl) {
        return KM_ERR_INVALID;
    }
    *authority = (struct km_http_view){target.p + sl, i - sl};
    *path = (struct km_http_view){target.p + i, target.len - i};
    return 0;
}

/* ---- chunked transfer coding (RFC 9112 section 7.1) ---- */

enum {
    CH_SIZE,     /* chunk-size hex digits */
    CH_EXT,      /* BWS / chunk-ext up to the end of the line */
    CH_SIZE_LF,  /* CR seen, LF must follow */
    CH_DATA,     /* chunk-data */
    CH_DATA_CR,  /* the CRLF after chunk-data */
    CH_DATA_LF,  /* CR seen after data */
    CH_TRAILER,  /* start of a trailer line or the final CRLF */
    CH_TLINE,    /* inside a trailer field line */
    CH_TLINE_LF, /* CR seen in a trailer line */
    CH_END_LF,   /* CR of the final empty line seen */
    CH_DONE,
};

#define CH_MAX_LINE 4096u

void km_http_chunked_init(struct km_http_chunked *c)
{
    memset(c, 0, sizeof *c);
    c->state = CH_SIZE;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* The chunk-size line ended: go to the data, or to the trailer after the last chunk. */
static void size_line_done(struct km_http_chunked *c)
{
    c->state = c->remaining > 0 ? CH_DATA : CH_TRAILER;
    c->line_len = 0;
    c->digits = 0;
}

int km_http_chunked_feed(struct km_http_chunked *c, struct km_buf *b)
{
    for (;;) {
        if (c->state == CH_DONE) {
            return 0;
        }
        if (c->state == CH_DATA) {
            size_t n = km_buf_len(b);
            if (n == 0) {
                return KM_ERR_INCOMPLETE;
            }
            size_t take = c->remaining < n ? (size_t)c->remaining : n;
            int r = km_buf_skip(b, take);
            if (r != 0) {
                return r;
            }
            c->remaining -= take;
            if (c->remaining == 0) {
                c->state = CH_DATA_CR;
            }
            continue;
        }
        uint8_t ch;
        if (km_buf_get_u8(b, &ch) != 0) {
            return KM_ERR_INCOMPLETE;
        }
        switch (c->state) {
        case CH_SIZE: {
            int v = hexval(ch);
            if (v >= 0) {
                if (++c->digits > 16) {
                    return KM_ERR_TOO_LARGE;
                }
                c->remaining = (c->remaining << 4) | (uint64_t)v;
            } else if (c->digits == 0) {
                return KM_ERR_INVALID;
            } else if (ch == ';' || is_ows(ch)) {
                c->state = CH_EXT;
            } else if (ch == '\r') {
                c->state = CH_SIZE_LF;
            } else if (ch == '\n') {
                size_line_done(c);
            } else {
                return KM_ERR_INVALID;
            }
            break;
        }
        case CH_EXT:
            if (++c->line_len > CH_MAX_LINE) {
                return KM_ERR_TOO_LARGE;
            }
            if (ch == '\r') {
                c->state = CH_SIZE_LF;
            } else if (ch == '\n') {
                size_line_done(c);
            } else if (!is_field_char(ch)) {
                return KM_ERR_INVALID;
            }
            break;
        case CH_SIZE_LF:
            if (ch != '\n') {
                return KM_ERR_INVALID;
            }
            size_line_done(c);
            break;
        case CH_DATA_CR:
            if (ch == '\r') {
                c->state = CH_DATA_LF;
            } else if (ch == '\n') {
                c->state = CH_SIZE;
            } else {
                return KM_ERR_INVALID;
            }
            break;
        case CH_DATA_LF:
            if (ch != '\n') {
                return KM_ERR_INVALID;
            }
            c->state = CH_SIZE;
            break;
        case CH_TRAILER:
            if (ch == '\r') {
                c->state = CH_END_LF;
            } else if (ch == '\n') {
                c->state = CH_DONE;
            } else if (!is_tchar(ch)) {
                return KM_ERR_INVALID; /* no obs-fold, no garbage */
            } else {
                c->state = CH_TLINE;
                c->line_len = 1;
                c->trailer_len++;
            }
            break;
        case CH_TLINE:
            if (++c->line_len > CH_MAX_LINE || ++c->trailer_len > KM_HTTP_MAX_HEAD) {
                return KM_ERR_TOO_LARGE;
            }
            if (ch == '\r') {
                c->state = CH_TLINE_LF;
            } else if (ch == '\n') {
                c->state = CH_TRAILER;
            } else if (!is_field_char(ch)) {
                return KM_ERR_INVALID;
            }
            break;
        case CH_TLINE_LF:
            if (ch != '\n') {
                return KM_ERR_INVALID;
            }
            c->state = CH_TRAILER;
            break;
        case CH_END_LF:
            if (ch != '\n') {
                return KM_ERR_INVALID;
            }
            c->state = CH_DONE;
            break;
        default:
            return KM_ERR_INVALID;
        }
    }
}

/* ---- server ---- */

#define LINGER_MS 5000u
#define IN_MAX (KM_HTTP_MAX_HEAD + 128u * 1024u) /* a head plus one read of body or pipeline */
#define IN_PAUSE (64u * 1024u)                   /* stop reading a side past this */
#define OUT_HEAD_MAX (KM_HTTP_MAX_HEAD + 1024u)  /* a rewritten head */

enum hstate {
    H_HEAD,       /* waiting for a request head */
    H_CONNECTING, /* egress->open pending */
    H_EXCHANGE,   /* request forwarded, response coming back */
    H_LINGER,     /* final bytes sent and half-closed, waiting for the client's EOF */
    H_RELAY,      /* CONNECT tunnel: the relay owns the client */
    H_DEAD,
};

struct body {
    enum km_http_body kind;
    uint64_t remaining;
    struct km_http_chunked ch;
    bool done;
};

struct hsess {
    struct km_http_server *srv;
    struct hsess *prev, *next;
    struct km_stream *client;
    struct km_stream *up; /* origin stream for absolute-form requests, kept alive between them */
    struct km_egress_req *req;
    uv_timer_t timer;
    struct km_buf in;  /* from the client */
    struct km_buf uin; /* from the origin */
    struct km_buf out; /* rewritten request head waiting for the origin connection */
    enum hstate st;
    unsigned refs; /* timer + relay */
    bool is_connect;
    bool head_method;
    bool client_close; /* close the client after this exchange */
    bool up_close;     /* the origin stream cannot be reused */
    bool resp_started; /* response bytes went to the client: no error status possible now */
    bool resp_head_done;
    bool up_full, client_full; /* write queue above the high-water mark */
    bool client_reading, up_reading;
    size_t linger_queue;
    char host[256];
    uint16_t port;
    char up_host[256];
    uint16_t up_port;
    struct body reqb, respb;
    char name[80];
};

struct km_http_server {
    uv_loop_t *loop;
    uv_tcp_t *listener;
    struct km_egress *egress;
    struct km_http_limits lim;
    struct hsess *sessions;
    unsigned n_clients;
    unsigned refs;
    bool closing;
    struct km_log_ratelimit log_rl; /* for log lines a client can cause */
};

static void process_client(struct hsess *s);
static void process_up(struct hsess *s);
static void on_htimer(uv_timer_t *t);

static bool log_ok(struct km_http_server *srv)
{
    return km_log_ratelimit_ok(&srv->log_rl, uv_now(srv->loop));
}

static void server_unref(struct km_http_server *srv)
{
    if (--srv->refs == 0) {
        free(srv);
    }
}

static void sess_unref(struct hsess *s)
{
    if (--s->refs > 0) {
        return;
    }
    struct km_http_server *srv = s->srv;
    km_buf_reset(&s->in);
    km_buf_reset(&s->uin);
    km_buf_reset(&s->out);
    free(s);
    srv->n_clients--;
    server_unref(srv);
}

static void on_htimer_close(uv_handle_t *h)
{
    sess_unref(h->data);
}

static void close_up(struct hsess *s)
{
    if (s->up != NULL) {
        s->up->data = NULL;
        km_stream_close(s->up);
        s->up = NULL;
    }
    s->up_full = false;
    s->up_reading = false;
    km_buf_clear(&s->uin);
}

static void sess_detach(struct hsess *s, enum hstate st)
{
    s->st = st;
    if (s->prev != NULL) {
        s->prev->next = s->next;
    } else {
        s->srv->sessions = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    }
    s->prev = s->next = NULL;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_htimer_close);
}

static void sess_end(struct hsess *s)
{
    if (s->st == H_DEAD || s->st == H_RELAY) {
        return;
    }
    if (s->req != NULL) {
        s->srv->egress->cancel(s->srv->egress, s->req);
        s->req = NULL;
    }
    close_up(s);
    if (s->client != NULL) {
        s->client->data = NULL;
        km_stream_close(s->client);
        s->client = NULL;
    }
    sess_detach(s, H_DEAD);
}

/* Read from each side only while the other side keeps up and our buffers have room. */
static void update_reads(struct hsess *s)
{
    if (s->client != NULL) {
        bool want = (s->st == H_HEAD || s->st == H_CONNECTING || s->st == H_EXCHANGE ||
                     s->st == H_LINGER) &&
                    !s->up_full && km_buf_len(&s->in) < IN_PAUSE;
        if (want != s->client_reading) {
            s->client_reading = want;
            want ? km_stream_read_start(s->client) : km_stream_read_stop(s->client);
        }
    }
    if (s->up != NULL) {
        bool want = !s->client_full && km_buf_len(&s->uin) < IN_PAUSE;
        if (want != s->up_reading) {
            s->up_reading = want;
            want ? km_stream_read_start(s->up) : km_stream_read_stop(s->up);
        }
    }
}

/* Half-close the client after its last bytes and wait for its EOF (bounded). */
static void linger(struct hsess *s)
{
    close_up(s);
    if (s->req != NULL) {
        s->srv->egress->cancel(s->srv->egress, s->req);
        s->req = NULL;
    }
    km_stream_shutdown(s->client);
    s->st = H_LINGER;
    s->linger_queue = km_stream_write_queue(s->client);
    km_buf_clear(&s->in);
    uv_timer_start(&s->timer, on_htimer, LINGER_MS, 0);
    update_reads(s);
}

static const char *status_text(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}

/* Answer with an error status and close; if response bytes already went out, just close. */
static void send_error(struct hsess *s, int status, const char *why)
{
    if (s->resp_started || s->client == NULL) {
        sess_end(s);
        return;
    }
    char msg[512];
    const char *text = status_text(status);
    int bl = (int)strlen(text) + (int)strlen(why) + 3;
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                     "Connection: close\r\nCache-Control: no-store\r\n\r\n%s: %s\n",
                     status, text, bl, text, why);
    if (n < 0 || (size_t)n >= sizeof msg ||
        km_stream_write(s->client, (const uint8_t *)msg, (size_t)n) != 0) {
        sess_end(s);
        return;
    }
    s->resp_started = true;
    linger(s);
}

/* HTTP status for a km_egress failure (docs/PROXY.md). */
static int status_from_err(int err)
{
    switch (err) {
    case KM_ERR_REFUSED:
        return 403;
    case KM_ERR_NOT_FOUND:
        return 404; /* the mesh knows no such name: final, unlike a 502 */
    case -ETIMEDOUT:
        return 504;
    default:
        return 502;
    }
}

static bool write_checked(struct hsess *s, struct km_stream *dst, const uint8_t *p, size_t n)
{
    if (n == 0) {
        return true;
    }
    if (km_stream_write(dst, p, n) != 0) {
        return false;
    }
    if (km_stream_write_queue(dst) > KM_STREAM_HIGH_WATER) {
        if (dst == s->up) {
            s->up_full = true;
        } else {
            s->client_full = true;
        }
    }
    return true;
}

/* Move the bytes of the current body from src to dst. Returns false if dst failed or the
 * framing is broken (r set). */
static bool forward_body(struct hsess *s, struct body *bd, struct km_buf *src,
                         struct km_stream *dst, int *r)
{
    *r = 0;
    if (bd->done) {
        return true;
    }
    const uint8_t *p = km_buf_peek_ptr(src);
    size_t before = km_buf_len(src);
    switch (bd->kind) {
    case KM_HTTP_BODY_NONE:
        bd->done = true;
        return true;
    case KM_HTTP_BODY_LENGTH: {
        size_t take = bd->remaining < before ? (size_t)bd->remaining : before;
        *r = km_buf_skip(src, take);
        bd->remaining -= take;
        bd->done = bd->remaining == 0;
        break;
    }
    case KM_HTTP_BODY_CHUNKED:
        *r = km_http_chunked_feed(&bd->ch, src);
        if (*r == 0) {
            bd->done = true;
        } else if (*r == KM_ERR_INCOMPLETE) {
            *r = 0;
        } else {
            return false;
        }
        break;
    case KM_HTTP_BODY_CLOSE:
        *r = km_buf_skip(src, before);
        break;
    }
    size_t took = before - km_buf_len(src);
    /* p stays valid: skipping does not move the storage. */
    if (!write_checked(s, dst, p, took)) {
        *r = KM_ERR_CLOSED;
        return false;
    }
    return true;
}

static bool is_hop_by_hop(struct km_http_view name, const struct km_http_header *hdrs, size_t n)
{
    static const char *const fixed[] = {
        "connection", "proxy-connection", "keep-alive", "proxy-authorization",
        "te",         "trailer",          "upgrade"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (view_eq(name, fixed[i])) {
            return true;
        }
    }
    /* Headers the Connection field lists are hop-by-hop too (RFC 9110 section 7.6.1). */
    size_t pos = 0;
    const struct km_http_header *c;
    while ((c = km_http_header_find(hdrs, n, "connection", &pos)) != NULL) {
        if (km_http_list_has(c->value, name.p, name.len)) {
            return true;
        }
    }
    return false;
}

static int put_str(struct km_buf *b, const char *s)
{
    return km_buf_put_bytes(b, s, strlen(s));
}

static int put_view(struct km_buf *b, struct km_http_view v)
{
    return km_buf_put_bytes(b, v.p, v.len);
}

/* Append the end-to-end headers (all but hop-by-hop ones and, if skip_host, Host). */
static int put_headers(struct km_buf *b, const struct km_http_header *h, size_t n, bool skip_host)
{
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        if (is_hop_by_hop(h[i].name, h, n) || (skip_host && view_eq(h[i].name, "host"))) {
            continue;
        }
        if ((r = put_view(b, h[i].name)) != 0 || (r = put_str(b, ": ")) != 0 ||
            (r = put_view(b, h[i].value)) != 0 || (r = put_str(b, "\r\n")) != 0) {
            break;
        }
    }
    return r;
}

/* The origin stream is writable: send the head, then whatever body bytes we have. */
static void send_request(struct hsess *s)
{
    s->st = H_EXCHANGE;
    uv_timer_stop(&s->timer);
    if (!write_checked(s, s->up, km_buf_peek_ptr(&s->out), km_buf_len(&s->out))) {
        send_error(s, 502, "origin connection lost");
        return;
    }
    km_buf_clear(&s->out);
    process_client(s);
    if (s->st == H_EXCHANGE) {
        process_up(s);
    }
}

static void on_up_data(struct km_stream *u, const uint8_t *data, size_t len)
{
    struct hsess *s = u->data;
    if (s == NULL) {
        return;
    }
    km_buf_compact(&s->uin);
    if (km_buf_put_bytes(&s->uin, data, len) != 0) {
        send_error(s, 502, "origin sent too much");
        return;
    }
    process_up(s);
}

static void finish_exchange(struct hsess *s);

static void on_up_end(struct km_stream *u, int err)
{
    struct hsess *s = u->data;
    if (s == NULL) {
        return;
    }
    if (s->st == H_EXCHANGE && s->resp_head_done && s->respb.kind == KM_HTTP_BODY_CLOSE &&
        err == 0) {
        s->respb.done = true; /* the body ended with the connection */
        s->client_close = true;
        s->up_close = true;
        finish_exchange(s);
        return;
    }
    if (s->st == H_EXCHANGE) {
        KM_DEBUG_R(err, "%s: origin closed mid-exchange", s->name);
        send_error(s, 502, "origin closed the connection");
        return;
    }
    close_up(s); /* an idle kept-alive origin stream went away */
}

static void on_up_drain(struct km_stream *u)
{
    struct hsess *s = u->data;
    if (s == NULL) {
        return;
    }
    s->up_full = false;
    process_client(s);
}

static void on_client_drain(struct km_stream *c)
{
    struct hsess *s = c->data;
    if (s == NULL) {
        return;
    }
    s->client_full = false;
    if (s->st == H_EXCHANGE) {
        process_up(s);
    } else {
        update_reads(s);
    }
}

static void on_relay_done(void *arg, int err, uint64_t a_to_b, uint64_t b_to_a)
{
    struct hsess *s = arg;
    KM_DEBUG("%s: tunnel closed (%s), %llu bytes up, %llu down", s->name, km_strerror(err),
             (unsigned long long)a_to_b, (unsigned long long)b_to_a);
    sess_unref(s);
}

static void on_egress(void *arg, int err, struct km_stream *target)
{
    struct hsess *s = arg;
    s->req = NULL;
    if (err != 0) {
        KM_INFO_R(err, "%s: connect to port %u failed", s->name, s->port);
        send_error(s, status_from_err(err), km_strerror(err));
        return;
    }
    if (s->is_connect) {
        static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
        if (km_stream_write(s->client, (const uint8_t *)ok, sizeof ok - 1) != 0) {
            km_stream_close(target);
            sess_end(s);
            return;
        }
        struct km_stream *c = s->client;
        s->client = NULL;
        c->data = NULL;
        sess_detach(s, H_RELAY);
        s->refs++;
        int r = km_relay_start(c, target, km_buf_peek_ptr(&s->in), km_buf_len(&s->in),
                               on_relay_done, s);
        km_buf_reset(&s->in);
        if (r != 0) {
            KM_WARN_R(r, "%s: relay", s->name);
            sess_unref(s);
        }
        return;
    }
    s->up = target;
    target->data = s;
    target->on_data = on_up_data;
    target->on_end = on_up_end;
    target->on_drain = on_up_drain;
    s->up_reading = false;
    memcpy(s->up_host, s->host, sizeof s->up_host);
    s->up_port = s->port;
    send_request(s);
}

static void start_open(struct hsess *s)
{
    s->st = H_CONNECTING;
    uv_timer_start(&s->timer, on_htimer, s->srv->lim.connect_timeout_ms, 0);
    struct km_egress *e = s->srv->egress;
    int r = e->open(e, s->host, s->port, s->name, on_egress, s, &s->req);
    if (r != 0) {
        s->req = NULL;
        KM_INFO_R(r, "%s: connect to port %u", s->name, s->port);
        send_error(s, status_from_err(r), km_strerror(r));
        return;
    }
    update_reads(s);
}

/* A complete request head is in req (views into s->in). */
static void handle_request(struct hsess *s, const struct km_http_request *req)
{
    char esc[200];
    KM_DEBUG("%s: %.*s \"%s\"", s->name, (int)req->method.len, req->method.p,
             km_log_escape(esc, sizeof esc, req->target.p, req->target.len));
    uv_timer_stop(&s->timer);
    s->resp_started = false;
    s->resp_head_done = false;
    s->up_close = false;
    s->head_method = view_eq(req->method, "HEAD");
    s->is_connect = view_eq(req->method, "CONNECT");
    s->client_close = req->minor_version == 0;
    size_t pos = 0;
    const struct km_http_header *h;
    while ((h = km_http_header_find(req->headers, req->n_headers, "connection", &pos)) != NULL) {
        if (km_http_list_has(h->value, "close", 5)) {
            s->client_close = true;
        }
    }
    if (s->is_connect) {
        if (km_http_parse_authority(req->target, 0, s->host, &s->port) != 0) {
            send_error(s, 400, "CONNECT needs host:port");
            return;
        }
        close_up(s);
        start_open(s);
        return;
    }
    if (req->target.p[0] == '/' || req->target.p[0] == '*') {
        send_error(s, 501, "this is a proxy: use an absolute URI or CONNECT");
        return;
    }
    struct km_http_view auth, path;
    int r = km_http_split_absolute(req->target, &auth, &path);
    if (r != 0) {
        send_error(s, r == KM_ERR_UNSUPPORTED ? 501 : 400,
                   r == KM_ERR_UNSUPPORTED ? "only http:// URIs" : "bad request target");
        return;
    }
    if (km_http_parse_authority(auth, 80, s->host, &s->port) != 0) {
        send_error(s, 400, "bad host in request target");
        return;
    }
    uint64_t blen;
    enum km_http_body bk;
    if ((r = km_http_request_body(req, &bk, &blen)) != 0) {
        send_error(s, r == KM_ERR_UNSUPPORTED ? 501 : 400, "bad message framing");
        return;
    }
    s->reqb = (struct body){.kind = bk, .remaining = blen, .done = bk == KM_HTTP_BODY_NONE};
    km_http_chunked_init(&s->reqb.ch);
    /* Origin-form request line, our own Host (RFC 9112 section 3.2.2), end-to-end headers. */
    km_buf_clear(&s->out);
    if ((r = put_view(&s->out, req->method)) != 0 || (r = put_str(&s->out, " ")) != 0 ||
        (r = path.len == 0 || path.p[0] == '?' ? put_str(&s->out, "/") : 0) != 0 ||
        (r = put_view(&s->out, path)) != 0 || (r = put_str(&s->out, " HTTP/1.1\r\nHost: ")) != 0 ||
        (r = put_view(&s->out, auth)) != 0 || (r = put_str(&s->out, "\r\n")) != 0 ||
        (r = put_headers(&s->out, req->headers, req->n_headers, true)) != 0 ||
        (r = put_str(&s->out, "\r\n")) != 0) {
        send_error(s, 431, "request head too large");
        return;
    }
    if (s->up != NULL && s->up_port == s->port && strcmp(s->up_host, s->host) == 0) {
        send_request(s); /* reuse the kept-alive origin stream */
        return;
    }
    close_up(s);
    start_open(s);
}

static void process_client(struct hsess *s)
{
    for (;;) {
        if (s->st == H_HEAD) {
            struct km_http_header hdrs[KM_HTTP_MAX_HEADERS];
            struct km_http_request req;
            int r = km_http_parse_request(&s->in, &req, hdrs, KM_HTTP_MAX_HEADERS);
            if (r == KM_ERR_INCOMPLETE) {
                break;
            }
            if (r != 0) {
                if (log_ok(s->srv)) {
                    KM_INFO_R(r, "%s: bad request head", s->name);
                }
                send_error(s,
                           r == KM_ERR_TOO_LARGE     ? 431
                           : r == KM_ERR_UNSUPPORTED ? 505
                                                     : 400,
                           r == KM_ERR_TOO_LARGE ? "request head too large" : "malformed request");
                return;
            }
            handle_request(s, &req);
            continue;
        }
        if (s->st == H_EXCHANGE && s->up != NULL && !s->reqb.done && !s->up_full) {
            int r;
            if (!forward_body(s, &s->reqb, &s->in, s->up, &r)) {
                send_error(s, r == KM_ERR_CLOSED ? 502 : 400, "bad request body");
                return;
            }
            if (s->reqb.done && s->respb.done && s->resp_head_done) {
                finish_exchange(s);
                continue;
            }
        }
        break;
    }
    if (s->st != H_DEAD && s->st != H_RELAY) {
        km_buf_compact(&s->in);
        update_reads(s);
    }
}

/* Build the response head for the client: our version, end-to-end headers, and
 * "Connection: close" when this is the last response on the connection. */
static int put_response_head(struct hsess *s, const struct km_http_response *resp)
{
    char line[64];
    snprintf(line, sizeof line, "HTTP/1.1 %03d ", resp->status);
    int r;
    km_buf_clear(&s->out);
    if ((r = put_str(&s->out, line)) != 0 || (r = put_view(&s->out, resp->reason)) != 0 ||
        (r = put_str(&s->out, "\r\n")) != 0 ||
        (r = put_headers(&s->out, resp->headers, resp->n_headers, false)) != 0) {
        return r;
    }
    if (s->client_close && resp->status >= 200) {
        if ((r = put_str(&s->out, "Connection: close\r\n")) != 0) {
            return r;
        }
    }
    return put_str(&s->out, "\r\n");
}

static void process_up(struct hsess *s)
{
    while (s->st == H_EXCHANGE && s->up != NULL) {
        if (!s->resp_head_done) {
            struct km_http_header hdrs[KM_HTTP_MAX_HEADERS];
            struct km_http_response resp;
            int r = km_http_parse_response(&s->uin, &resp, hdrs, KM_HTTP_MAX_HEADERS);
            if (r == KM_ERR_INCOMPLETE) {
                break;
            }
            if (r != 0 || resp.status == 101) {
                KM_INFO_R(r, "%s: bad response from the origin", s->name);
                send_error(s, 502, "bad response from the origin");
                return;
            }
            enum km_http_body bk = KM_HTTP_BODY_NONE;
            uint64_t blen = 0;
            if (resp.status >= 200 &&
                (r = km_http_response_body(&resp, s->head_method, &bk, &blen)) != 0) {
                send_error(s, 502, "bad response framing from the origin");
                return;
            }
            if (resp.status >= 200) {
                size_t pos = 0;
                const struct km_http_header *h;
                s->up_close = resp.minor_version == 0 || bk == KM_HTTP_BODY_CLOSE;
                while ((h = km_http_header_find(resp.headers, resp.n_headers, "connection",
                                                &pos)) != NULL) {
                    if (km_http_list_has(h->value, "close", 5)) {
                        s->up_close = true;
                    }
                }
                if (bk == KM_HTTP_BODY_CLOSE) {
                    s->client_close = true;
                }
            }
            if (put_response_head(s, &resp) != 0) {
                send_error(s, 502, "response head too large");
                return;
            }
            /* Interim 1xx responses go to HTTP/1.1 clients only, and the real one follows. */
            if (resp.status >= 200 || !s->client_close) {
                if (!write_checked(s, s->client, km_buf_peek_ptr(&s->out), km_buf_len(&s->out))) {
                    sess_end(s);
                    return;
                }
                s->resp_started = true;
            }
            km_buf_clear(&s->out);
            if (resp.status < 200) {
                continue;
            }
            s->resp_head_done = true;
            s->respb =
                (struct body){.kind = bk, .remaining = blen, .done = bk == KM_HTTP_BODY_NONE};
            km_http_chunked_init(&s->respb.ch);
        }
        if (s->client_full) {
            break;
        }
        int r;
        if (!forward_body(s, &s->respb, &s->uin, s->client, &r)) {
            if (r == KM_ERR_CLOSED) {
                sess_end(s);
            } else {
                KM_INFO_R(r, "%s: bad response body from the origin", s->name);
                sess_end(s); /* the head is out: all we can do is cut the connection */
            }
            return;
        }
        if (s->respb.done) {
            finish_exchange(s);
        }
        break;
    }
    if (s->st != H_DEAD && s->st != H_RELAY) {
        km_buf_compact(&s->uin);
        update_reads(s);
    }
}

/* The response is complete: keep both connections for the next request if allowed. */
static void finish_exchange(struct hsess *s)
{
    if (!s->respb.done || !s->resp_head_done) {
        return;
    }
    if (!s->reqb.done) {
        /* The origin answered before the request body ended (e.g. 413): the rest of the
         * body cannot be told from a next request, so this connection ends. */
        s->client_close = true;
        s->up_close = true;
    }
    if (km_buf_len(&s->uin) > 0) {
        s->up_close = true; /* the origin sent more than one response */
    }
    if (s->up_close) {
        close_up(s);
    }
    if (s->client_close) {
        linger(s);
        return;
    }
    s->st = H_HEAD;
    s->resp_head_done = false;
    uv_timer_start(&s->timer, on_htimer, s->srv->lim.idle_timeout_ms, 0);
    process_client(s); /* a pipelined request may be waiting */
}

static void on_client_data(struct km_stream *c, const uint8_t *data, size_t len)
{
    struct hsess *s = c->data;
    if (s == NULL || s->st == H_LINGER || s->st == H_DEAD) {
        return;
    }
    km_buf_compact(&s->in);
    if (km_buf_put_bytes(&s->in, data, len) != 0) {
        send_error(s, 431, "request too large");
        return;
    }
    process_client(s);
}

static void on_client_end(struct km_stream *c, int err)
{
    struct hsess *s = c->data;
    if (s == NULL) {
        return;
    }
    if (err == 0 && s->st == H_EXCHANGE && s->reqb.done) {
        /* Half-close after a complete request: still deliver the response. */
        s->client_close = true;
        s->client_reading = false;
        return;
    }
    if (s->st != H_LINGER) {
        KM_DEBUG_R(err, "%s: client went away", s->name);
    }
    sess_end(s); /* cancels a pending egress request */
}

static void on_htimer(uv_timer_t *t)
{
    struct hsess *s = t->data;
    switch (s->st) {
    case H_CONNECTING:
        KM_INFO("%s: connect timed out", s->name);
        send_error(s, 504, "connect timed out");
        break;
    case H_HEAD:
        if (km_buf_len(&s->in) > 0 && log_ok(s->srv)) {
            KM_INFO("%s: request head timed out", s->name);
        }
        if (km_buf_len(&s->in) > 0) {
            send_error(s, 408, "request head timed out");
        } else {
            sess_end(s);
        }
        break;
    case H_LINGER: {
        /* Wait on while a slow client is still draining the last response. */
        size_t q = km_stream_write_queue(s->client);
        if (q > 0 && q < s->linger_queue) {
            s->linger_queue = q;
            uv_timer_start(&s->timer, on_htimer, LINGER_MS, 0);
            break;
        }
        sess_end(s);
        break;
    }
    default:
        sess_end(s);
        break;
    }
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct km_http_server *srv = listener->data;
    if (status < 0 || srv == NULL || srv->closing) {
        return;
    }
    struct km_stream *c;
    int r = km_uvstream_accept(listener, &c);
    if (r != 0) {
        KM_WARN_R(r, "http: accept");
        return;
    }
    char pn[64];
    km_uvstream_peer_str(c, pn, sizeof pn);
    if (srv->n_clients >= srv->lim.max_clients) {
        if (log_ok(srv)) {
            KM_INFO("http %s: refused, %u clients already", pn, srv->n_clients);
        }
        km_stream_close(c);
        return;
    }
    struct hsess *s = calloc(1, sizeof *s);
    if (s == NULL) {
        km_stream_close(c);
        return;
    }
    snprintf(s->name, sizeof s->name, "http %s", pn);
    s->srv = srv;
    s->client = c;
    s->st = H_HEAD;
    s->refs = 1;
    km_buf_init(&s->in, IN_MAX);
    km_buf_init(&s->uin, IN_MAX);
    km_buf_init(&s->out, OUT_HEAD_MAX);
    uv_timer_init(srv->loop, &s->timer);
    s->timer.data = s;
    srv->n_clients++;
    srv->refs++;
    s->next = srv->sessions;
    if (s->next != NULL) {
        s->next->prev = s;
    }
    srv->sessions = s;
    c->data = s;
    c->on_data = on_client_data;
    c->on_end = on_client_end;
    c->on_drain = on_client_drain;
    uv_timer_start(&s->timer, on_htimer, srv->lim.head_timeout_ms, 0);
    update_reads(s);
}

int km_http_server_new(uv_loop_t *loop, const struct sockaddr *addr, struct km_egress *egress,
                       const struct km_http_limits *limits, struct km_http_server **out)
{
    *out = NULL;
    struct km_http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL) {
        return -ENOMEM;
    }
    srv->loop = loop;
    srv->egress = egress;
    srv->refs = 1;
    if (limits != NULL) {
        srv->lim = *limits;
    }
    if (srv->lim.max_clients == 0) {
        srv->lim.max_clients = 1024;
    }
    if (srv->lim.head_timeout_ms == 0) {
        srv->lim.head_timeout_ms = 10000;
    }
    if (srv->lim.idle_timeout_ms == 0) {
        srv->lim.idle_timeout_ms = 30000;
    }
    if (srv->lim.connect_timeout_ms == 0) {
        srv->lim.connect_timeout_ms = 30000;
    }
    int r = km_uvstream_listen_tcp(loop, addr, 128, on_connection, srv, &srv->listener);
    if (r != 0) {
        free(srv);
        return r;
    }
    srv->listener->data = srv;
    *out = srv;
    return 0;
}

int km_http_server_addr(const struct km_http_server *s, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    int len = (int)sizeof *out;
    return uv_tcp_getsockname(s->listener, (struct sockaddr *)out, &len);
}

unsigned km_http_server_clients(const struct km_http_server *s)
{
    return s->n_clients;
}

void km_http_server_close(struct km_http_server *s)
{
    if (s == NULL || s->closing) {
        return;
    }
    s->closing = true;
    s->listener->data = NULL;
    km_uvstream_listener_close(s->listener);
    s->listener = NULL;
    while (s->sessions != NULL) {
        sess_end(s->sessions);
    }
    server_unref(s);
}
