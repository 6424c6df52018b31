/* Generic INI reading on top of libinih, and the shared value parsers.
 *
 * Debian's libinih (release 55) is built with INI_MAX_LINE 200 (longer lines are split
 * silently), INI_STOP_ON_FIRST_ERROR 0, INI_ALLOW_MULTILINE 1 (an indented line continues
 * the previous value), inline ';' comments, and a handler without a line number. To get exact
 * "<file>:<line>:" errors and a first-error stop anyway, we check the whole text first (size,
 * NUL bytes, line length), then feed inih one line at a time through ini_parse_stream() with
 * our own reader. inih reads a line, handles it completely, then asks for the next one, so the
 * reader's line counter is the line the handler is looking at. The reader also does the
 * checks inih cannot be asked for: it handles the UTF-8 BOM and CRLF itself, rejects indented
 * lines (which inih would treat as continuations), parses section headers so that empty
 * sections reach section_cb, and stops the parse by returning NULL after the first error. */
#include "core/conf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/fsutil.h"

struct reader {
    /* input */
    const char *text;
    size_t len;
    size_t pos;
    const char *filename;
    km_conf_cb cb;
    km_conf_section_cb section_cb;
    void *ctx;
    /* state */
    int lineno;                         /* line most recently handed to inih */
    bool key_line;                      /* that line must reach the handler */
    bool handled;                       /* the handler ran for it */
    char section[KM_CONF_MAX_LINE + 1]; /* current section, "" before the first header */
    /* result */
    int rc;
    char *err;
    size_t errsz;
};

static void set_err(struct reader *rd, int rc, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Record the first error as "<file>:<line>: <message>". */
static void set_err(struct reader *rd, int rc, int line, const char *fmt, ...)
{
    if (rd->rc != 0) {
        return;
    }
    rd->rc = rc;
    if (rd->errsz == 0) {
        return;
    }
    char msg[KM_CONF_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) {
        msg[0] = '\0';
    }
    (void)snprintf(rd->err, rd->errsz, "%s:%d: %s", rd->filename, line, msg);
}

/* Length of the line starting at text[pos], without its "\n" or "\r\n"; *next receives the
 * offset of the following line. */
static size_t line_at(const char *text, size_t len, size_t pos, size_t *next)
{
    const char *nl = memchr(text + pos, '\n', len - pos);
    size_t end = nl != NULL ? (size_t)(nl - text) : len;
    *next = nl != NULL ? end + 1 : len;
    size_t n = end - pos;
    /* A trailing CR is part of the line ending (CRLF files, or a last line ending in CR). */
    if (n > 0 && text[pos + n - 1] == '\r') {
        n--;
    }
    return n;
}

static bool is_bom(const char *p, size_t n)
{
    return n >= 3 && (unsigned char)p[0] == 0xef && (unsigned char)p[1] == 0xbb &&
           (unsigned char)p[2] == 0xbf;
}

/* The first pass: nothing reaches a callback unless the whole text is acceptable. */
static int check_text(struct reader *rd)
{
    int line = 0;
    size_t pos = 0;
    while (pos < rd->len) {
        size_t next;
        size_t n = line_at(rd->text, rd->len, pos, &next);
        line++;
        const char *p = rd->text + pos;
        if (line == 1 && is_bom(p, n)) {
            p += 3;
            n -= 3;
        }
        if (memchr(p, '\0', n) != NULL) {
            set_err(rd, KM_ERR_CONFIG, line, "NUL byte in line (not a text file?)");
            return rd->rc;
        }
        if (n > KM_CONF_MAX_LINE) {
            set_err(rd, KM_ERR_CONFIG, line, "line too long (max %d characters)", KM_CONF_MAX_LINE);
            return rd->rc;
        }
        pos = next;
    }
    return 0;
}

static bool is_space(char c)
{
    return isspace((unsigned char)c) != 0;
}

/* Parse a "[name]" header line (already known to start with '['). Whitespace around the name
 * is ignored; after ']' only whitespace or a ';' or '#' comment may follow, because inih would
 * silently drop anything else (such as a key written on the same line). */
static int parse_header(struct reader *rd, const char *p, size_t n)
{
    const char *close = memchr(p, ']', n);
    if (close == NULL) {
        set_err(rd, KM_ERR_CONFIG, rd->lineno, "syntax error: section header without ']'");
        return rd->rc;
    }
    const char *s = p + 1;
    const char *e = close;
    while (s < e && is_space(*s)) {
        s++;
    }
    while (e > s && is_space(e[-1])) {
        e--;
    }
    if (s == e) {
        set_err(rd, KM_ERR_CONFIG, rd->lineno, "syntax error: empty section name");
        return rd->rc;
    }
    for (const char *q = s; q < e; q++) {
        /* inih ends a header at " ;" (an inline comment) before looking for ']'. */
        if (*q == ';' || *q == '[') {
            set_err(rd, KM_ERR_CONFIG, rd->lineno, "syntax error: '%c' in section name", *q);
            return rd->rc;
        }
    }
    const char *t = close + 1;
    const char *end = p + n;
    while (t < end && is_space(*t)) {
        t++;
    }
    if (t < end && *t != ';' && *t != '#') {
        set_err(rd, KM_ERR_CONFIG, rd->lineno, "syntax error: text after the section header's ']'");
        return rd->rc;
    }
    size_t sl = (size_t)(e - s);
    memcpy(rd->section, s, sl);
    rd->section[sl] = '\0';
    if (rd->section_cb != NULL) {
        char msg[KM_CONF_ERR_LEN] = "";
        int r = rd->section_cb(rd->ctx, rd->section, rd->lineno, msg, sizeof msg);
        if (r != 0) {
            set_err(rd, r == -ENOMEM ? r : KM_ERR_CONFIG, rd->lineno, "%s",
                    msg[0] != '\0' ? msg : km_strerror(r));
            return rd->rc;
        }
    }
    return 0;
}

/* The ini_reader: hands inih the next line (fgets-style, at most num - 1 characters plus
 * NUL), or NULL at the end or after the first error. */
static char *read_line(char *str, int num, void *stream)
{
    struct reader *rd = stream;
    if (rd->rc != 0) {
        return NULL;
    }
    /* A key line the handler never saw is one inih rejected: no '=' or ':' before a
     * comment. inih itself would only report that at the very end. */
    if (rd->key_line && !rd->handled) {
        set_err(rd, KM_ERR_CONFIG, rd->lineno, "syntax error: expected key = value");
        return NULL;
    }
    rd->key_line = false;
    if (rd->pos >= rd->len) {
        return NULL;
    }
    size_t next;
    size_t n = line_at(rd->text, rd->len, rd->pos, &next);
    const char *p = rd->text + rd->pos;
    rd->pos = next;
    rd->lineno++;
    if (rd->lineno == 1 && is_bom(p, n)) {
        p += 3;
        n -= 3;
    }
    if (num < 2 || n > (size_t)num - 2) {
        /* Only if someone lowered inih's run-time ini_max_line below our limit. */
        set_err(rd, KM_ERR_CONFIG, rd->lineno, "line too long (max %d characters)",
                num > 2 ? num - 2 : 0);
        return NULL;
    }
    size_t i = 0;
    while (i < n && is_space(p[i])) {
        i++;
    }
    bool blank = i == n || p[i] == ';' || p[i] == '#';
    if (!blank && i > 0) {
        /* inih would append this line to the previous key's value (Python configparser
         * style). Continuations are easy to create by accident, so they are refused. */
        set_err(rd, KM_ERR_CONFIG, rd->lineno,
                "line starts with whitespace (continuation lines are not supported; remove "
                "the indentation)");
        return NULL;
    }
    if (!blank && p[0] == '[') {
        if (parse_header(rd, p, n) != 0) {
            return NULL;
        }
    } else if (!blank) {
        rd->key_line = true;
        rd->handled = false;
    }
    memcpy(str, p, n);
    str[n] = '\n';
    str[n + 1] = '\0';
    return str;
}

/* The ini_handler: called once per "key = value" line. Nonzero means go on; errors are kept
 * in rd and the reader ends the parse. */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
    (void)section; /* inih truncates long section names; rd->section is exact */
    struct reader *rd = user;
    rd->handled = true;
    if (rd->rc != 0) {
        return 1;
    }
    if (name[0] == '\0') {
        set_err(rd, KM_ERR_CONFIG, rd->lineno, "syntax error: missing key name");
        return 1;
    }
    char msg[KM_CONF_ERR_LEN] = "";
    int r = rd->cb(rd->ctx, rd->section, name, value, rd->lineno, msg, sizeof msg);
    if (r != 0) {
        set_err(rd, r == -ENOMEM ? r : KM_ERR_CONFIG, rd->lineno, "%s",
                msg[0] != '\0' ? msg : km_strerror(r));
    }
    return 1;
}

int km_conf_parse(const char *text, size_t len, const char *filename, km_conf_cb cb,
                  km_conf_section_cb section_cb, void *ctx, char *err, size_t errsz)
{
    if (errsz > 0) {
        err[0] = '\0';
    }
    if (filename == NULL) {
        filename = "<config>";
    }
    if (len > KM_CONF_MAX_SIZE) {
        if (errsz > 0) {
            (void)snprintf(err, errsz, "%s: file too large (%zu bytes, max %u)", filename, len,
                           KM_CONF_MAX_SIZE);
        }
        return KM_ERR_TOO_LARGE;
    }
    struct reader rd = {
        .text = text,
        .len = len,
        .filename = filename,
        .cb = cb,
        .section_cb = section_cb,
        .ctx = ctx,
        .err = err,
        .errsz = errsz,
    };
    int r = check_text(&rd);
    if (r != 0) {
        return r;
    }
    int ir = ini_parse_stream(read_line, &rd, on_key, &rd);
    if (rd.rc != 0) {
        return rd.rc;
    }
    if (ir == -2) {
        if (errsz > 0) {
            (void)snprintf(err, errsz, "%s: %s", filename, km_strerror(-ENOMEM));
        }
        return -ENOMEM;
    }
    if (ir != 0) {
        /* Not reached: the reader sees every error inih can find first. */
        set_err(&rd, KM_ERR_CONFIG, ir > 0 ? ir : rd.lineno, "syntax error");
        return rd.rc;
    }
    return 0;
}

int km_conf_parse_file(const char *path, km_conf_cb cb, km_conf_section_cb section_cb, void *ctx,
                       char *err, size_t errsz)
{
    if (errsz > 0) {
        err[0] = '\0';
    }
    struct km_buf b;
    km_buf_init(&b, KM_CONF_MAX_SIZE);
    int r = km_fs_read_file(path, &b, NULL);
    if (r != 0) {
        if (errsz > 0) {
            const char *why = r == KM_ERR_INVALID     ? "not a regular file"
                              : r == KM_ERR_TOO_LARGE ? "file too large"
                                                      : km_strerror(r);
            (void)snprintf(err, errsz, "%s: %s", path, why);
        }
        goto out;
    }
    r = km_conf_parse((const char *)km_buf_peek_ptr(&b), km_buf_len(&b), path, cb, section_cb, ctx,
                      err, errsz);
out:
    km_buf_reset(&b);
    return r;
}

/* Value parsers. */

/* Decimal digits only: strtoul/strtoull would also take leading whitespace, '+' and '-'
 * (and wrap negative numbers around). Returns the number of digits. */
static size_t digits(const char *s)
{
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9') {
        n++;
    }
    return n;
}

/* Parse the leading decimal number of s into *out; *end points after it. */
static int parse_u64(const char *s, uint64_t *out, const char **end)
{
    if (digits(s) == 0) {
        return KM_ERR_INVALID;
    }
    errno = 0;
    char *e;
    unsigned long long v = strtoull(s, &e, 10);
    if (errno != 0 || e == s) {
        return KM_ERR_INVALID;
    }
    *out = (uint64_t)v;
    *end = e;
    return 0;
}

int km_conf_port(const char *s, uint16_t *out)
{
    uint64_t v;
    const char *end;
    if (parse_u64(s, &v, &end) != 0 || *end != '\0' || v < 1 || v > 65535) {
        return KM_ERR_INVALID;
    }
    *out = (uint16_t)v;
    return 0;
}

int km_conf_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return KM_ERR_INVALID;
}

#define MS_PER_DAY (86400u * 1000u)

int km_conf_duration_ms(const char *s, uint64_t *out)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", MS_PER_DAY},
    };
    uint64_t v;
    const char *end;
    if (parse_u64(s, &v, &end) != 0) {
        return KM_ERR_INVALID;
    }
    const uint64_t max = (uint64_t)366 * MS_PER_DAY;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) == 0) {
            if (v > max / units[i].ms) {
                return KM_ERR_INVALID;
            }
            *out = v * units[i].ms;
            return 0;
        }
    }
    return KM_ERR_INVALID;
}

int km_conf_size(const char *s, uint64_t *out)
{
    uint64_t v;
    const char *end;
    if (parse_u64(s, &v, &end) != 0) {
        return KM_ERR_INVALID;
    }
    unsigned shift;
    switch (end[0]) {
    case '\0':
        shift = 0;
        break;
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    default:
        return KM_ERR_INVALID;
    }
    if (shift != 0 && end[1] != '\0') {
        return KM_ERR_INVALID;
    }
    const uint64_t max = (uint64_t)1 << 40;
    if (v > (max >> shift)) {
        return KM_ERR_INVALID;
    }
    *out = v << shift;
    return 0;
}

/* Parse an IP literal of n characters into canonical text (inet_ntop form). family 0 tries
 * IPv4 then IPv6. */
static int parse_ip(const char *s, size_t n, int family, char out[46])
{
    char tmp[64];
    if (n == 0 || n >= sizeof tmp) {
        return KM_ERR_INVALID;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    unsigned char bin[16];
    if ((family == 0 || family == AF_INET) && inet_pton(AF_INET, tmp, bin) == 1) {
        return inet_ntop(AF_INET, bin, out, 46) != NULL ? 0 : KM_ERR_INVALID;
    }
    if ((family == 0 || family == AF_INET6) && inet_pton(AF_INET6, tmp, bin) == 1) {
        return inet_ntop(AF_INET6, bin, out, 46) != NULL ? 0 : KM_ERR_INVALID;
    }
    return KM_ERR_INVALID;
}

int km_conf_listen_addr(const char *s, const char *def_host, struct km_conf_addr *out)
{
    struct km_conf_addr a;
    memset(&a, 0, sizeof a);
    const char *port;
    if (s[0] == '[') {
        /* "[v6]:port"; brackets are required for IPv6 so the port is unambiguous. */
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':' ||
            parse_ip(s + 1, (size_t)(close - s - 1), AF_INET6, a.host) != 0) {
            return KM_ERR_INVALID;
        }
        port = close + 2;
    } else {
        const char *colon = strchr(s, ':');
        if (colon == NULL) {
            /* A bare port. */
            if (def_host == NULL || parse_ip(def_host, strlen(def_host), 0, a.host) != 0) {
                return KM_ERR_INVALID;
            }
            port = s;
        } else {
            /* "v4:port"; an unbracketed IPv6 address has more colons and fails here. */
            if (parse_ip(s, (size_t)(colon - s), AF_INET, a.host) != 0) {
                return KM_ERR_INVALID;
            }
            port = colon + 1;
        }
    }
    if (km_conf_port(port, &a.port) != 0) {
        return KM_ERR_INVALID;
    }
    *out = a;
    return 0;
}

/* An address in one comparable form: IPv4-mapped IPv6 addresses count as IPv4, because a
 * dual-stack socket bound to ::ffff:a.b.c.d takes a.b.c.d. */
struct bin_addr {
    int family;
    unsigned char b[16];
};

static bool to_bin(const char *host, struct bin_addr *out)
{
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, host, out->b) == 1) {
        out->family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, host, out->b) != 1) {
        return false;
    }
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(out->b, mapped, sizeof mapped) == 0) {
        memmove(out->b, out->b + 12, 4);
        memset(out->b + 4, 0, 12);
        out->family = AF_INET;
    } else {
        out->family = AF_INET6;
    }
    return true;
}

static bool is_any(const struct bin_addr *a)
{
    static const unsigned char zero[16];
    return memcmp(a->b, zero, a->family == AF_INET ? 4 : 16) == 0;
}

/* Does a wildcard bind on w take address o? "::" is dual-stack (the Linux default,
 * net.ipv6.bindv6only=0), so it takes IPv4 too; "0.0.0.0" takes IPv4 only, including the
 * IPv4 half of "::". */
static bool covers(const struct bin_addr *w, const struct bin_addr *o)
{
    if (!is_any(w)) {
        return false;
    }
    if (w->family == AF_INET6) {
        return true;
    }
    return o->family == AF_INET || is_any(o);
}

bool km_conf_addr_conflict(const struct km_conf_addr *a, const struct km_conf_addr *b)
{
    if (a->port != b->port) {
        return false;
    }
    struct bin_addr x;
    struct bin_addr y;
    if (!to_bin(a->host, &x) || !to_bin(b->host, &y)) {
        return strcmp(a->host, b->host) == 0;
    }
    if (x.family == y.family && memcmp(x.b, y.b, sizeof x.b) == 0) {
        return true;
    }
    return covers(&x, &y) || covers(&y, &x);
}
