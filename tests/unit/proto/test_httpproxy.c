/* HTTP proxy: the pure head parsers, framing, chunked decoder and authority parser against
 * hostile tables, then the server on a real loop in front of a loopback origin (a blocking
 * thread) and an echo server, driven by blocking clients in another thread. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/uvstream.h"
#include "proto/httpproxy.h"

struct hcase {
    const char *in;
    int expect;
};

static const struct hcase req_cases[] = {
    {"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 0},
    {"GET http://a/ HTTP/1.1\nHost: a\n\n", 0},    /* bare LF */
    {"\r\n\r\nGET http://a/ HTTP/1.0\r\n\r\n", 0}, /* leading empty lines */
    {"CONNECT [::1]:22 HTTP/1.1\r\n\r\n", 0},
    {"GET http://a/ HTTP/1.1\r\nX:\r\n\r\n", 0},           /* empty value */
    {"GET http://a/ HTTP/1.1\r\nX: \xe9t\xe9\r\n\r\n", 0}, /* obs-text */
    {"GET http://a/ HTTP/1.1\r\nHost: a\r\n", KM_ERR_INCOMPLETE},
    {"GET http://a/ HTTP/1.1\r\n\r", KM_ERR_INCOMPLETE},
    {"", KM_ERR_INCOMPLETE},
    {"GET http://a/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n", KM_ERR_INVALID}, /* obs-fold */
    {"GET http://a/ HTTP/1.1\r\n Host: a\r\n\r\n", KM_ERR_INVALID},
    {"GET http://a/ HTTP/1.1\r\nHost : a\r\n\r\n", KM_ERR_INVALID}, /* space before colon */
    {"GET http://a/ HTTP/1.1\r\nHost\r\n\r\n", KM_ERR_INVALID},
    {"GET http://a/ HTTP/1.1\r\n: a\r\n\r\n", KM_ERR_INVALID},
    {"GET http://a/ HTTP/1.1\r\nX: a\rb\r\n\r\n", KM_ERR_INVALID}, /* bare CR */
    {"GET http://a/ HTTP/1.1\r\nX: a\x01\r\n\r\n", KM_ERR_INVALID},
    {"GET http://a/ HTTP/1.1\r\nX: a\x7f\r\n\r\n", KM_ERR_INVALID},
    {"G(T http://a/ HTTP/1.1\r\n\r\n", KM_ERR_INVALID}, /* bad method token */
    {" GET http://a/ HTTP/1.1\r\n\r\n", KM_ERR_INVALID},
    {"GET  http://a/ HTTP/1.1\r\n\r\n", KM_ERR_INVALID}, /* two spaces */
    {"GET http://a/ HTTP/1.1 \r\n\r\n", KM_ERR_INVALID},
    {"GET http://a/\r\n\r\n", KM_ERR_INVALID}, /* HTTP/0.9 */
    {"GET http://a/ HTTP/1.10\r\n\r\n", KM_ERR_INVALID},
    {"GET http://a/ http/1.1\r\n\r\n", KM_ERR_INVALID},
    {"GET http://a/ HTTP/2.0\r\n\r\n", KM_ERR_UNSUPPORTED},
    {"GET http://a/ HTTP/0.9\r\n\r\n", KM_ERR_UNSUPPORTED},
    {"GET http://a/\xff HTTP/1.1\r\n\r\n", KM_ERR_INVALID},
    {"\r\nGET http://a/ HTTP/1.1\r\r\n\r\n", KM_ERR_INVALID},
};

static void test_request_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof req_cases / sizeof req_cases[0]; i++) {
        const char *in = req_cases[i].in;
        size_t n = strlen(in);
        struct km_buf b;
        km_buf_init_view(&b, in, n);
        struct km_http_header h[8];
        struct km_http_request q;
        int r = km_http_parse_request(&b, &q, h, 8);
        if (r != req_cases[i].expect) {
            fail_msg("case %zu: got %s want %s", i, km_err_name(r),
                     km_err_name(req_cases[i].expect));
        }
        assert_int_equal(km_buf_len(&b), r == 0 ? 0 : n);
        if (r == 0) {
            /* Every strict prefix is incomplete. */
            for (size_t k = 0; k < n; k++) {
                struct km_buf p;
                km_buf_init_view(&p, in, k);
                if (km_http_parse_request(&p, &q, h, 8) != KM_ERR_INCOMPLETE) {
                    fail_msg("case %zu prefix %zu", i, k);
                }
            }
        }
    }
    /* The views of a good head. */
    const char *in = "POST http://h:81/p?q HTTP/1.1\r\nHost: h\r\nX-A:  v  \r\n\r\nBODY";
    struct km_buf b;
    km_buf_init_view(&b, in, strlen(in));
    struct km_http_header h[4];
    struct km_http_request q;
    assert_int_equal(km_http_parse_request(&b, &q, h, 4), 0);
    assert_int_equal(q.head_len, strlen(in) - 4);
    assert_int_equal(km_buf_len(&b), 4);
    assert_int_equal(q.minor_version, 1);
    assert_int_equal(q.n_headers, 2);
    assert_memory_equal(q.method.p, "POST", 4);
    assert_int_equal(q.target.len, strlen("http://h:81/p?q"));
    assert_int_equal(h[1].value.len, 1);
    assert_memory_equal(h[1].value.p, "v", 1);
}

static void test_request_limits(void **state)
{
    (void)state;
    /* Header count: max passes, max+1 is TOO_LARGE. */
    char big[KM_HTTP_MAX_HEAD + 64];
    struct km_http_header h[KM_HTTP_MAX_HEADERS];
    struct km_http_request q;
    for (unsigned extra = 0; extra < 2; extra++) {
        size_t o = (size_t)snprintf(big, sizeof big, "GET http://a/ HTTP/1.1\r\n");
        for (unsigned i = 0; i < KM_HTTP_MAX_HEADERS + extra; i++) {
            o += (size_t)snprintf(big + o, sizeof big - o, "X%u: y\r\n", i);
        }
        o += (size_t)snprintf(big + o, sizeof big - o, "\r\n");
        struct km_buf b;
        km_buf_init_view(&b, big, o);
        assert_int_equal(km_http_parse_request(&b, &q, h, KM_HTTP_MAX_HEADERS),
                         extra == 0 ? 0 : KM_ERR_TOO_LARGE);
    }
    /* Head size: exactly KM_HTTP_MAX_HEAD passes, one more byte is TOO_LARGE, and a
     * shorter unterminated head is INCOMPLETE. */
    for (size_t total = KM_HTTP_MAX_HEAD; total <= KM_HTTP_MAX_HEAD + 1; total++) {
        size_t o = (size_t)snprintf(big, sizeof big, "GET http://a/ HTTP/1.1\r\nX: ");
        size_t fill = total - o - 4;
        memset(big + o, 'a', fill);
        memcpy(big + o + fill, "\r\n\r\n", 4);
        struct km_buf b;
        km_buf_init_view(&b, big, total);
        assert_int_equal(km_http_parse_request(&b, &q, h, KM_HTTP_MAX_HEADERS),
                         total == KM_HTTP_MAX_HEAD ? 0 : KM_ERR_TOO_LARGE);
        km_buf_init_view(&b, big, total - 1);
        assert_int_equal(km_http_parse_request(&b, &q, h, KM_HTTP_MAX_HEADERS),
                         total == KM_HTTP_MAX_HEAD ? KM_ERR_INCOMPLETE : KM_ERR_TOO_LARGE);
    }
}

struct fcase {
    const char *in;
    int expect;
    enum km_http_body kind;
    uint64_t len;
};

static const struct fcase reqbody_cases[] = {
    {"GET http://a/ HTTP/1.1\r\n\r\n", 0, KM_HTTP_BODY_NONE, 0},
    {"POST http://a/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 0, KM_HTTP_BODY_NONE, 0},
    {"POST http://a/ HTTP/1.1\r\nContent-Length: 12\r\n\r\n", 0, KM_HTTP_BODY_LENGTH, 12},
    {"POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", 0,
     KM_HTTP_BODY_LENGTH, 5},
    {"POST http://a/ HTTP/1.1\r\nContent-Length: 999999999999999999\r\n\r\n", 0,
     KM_HTTP_BODY_LENGTH, 999999999999999999u},
    {"POST http://a/ HTTP/1.1\r\nContent-Length: 9999999999999999999\r\n\r\n", KM_ERR_INVALID,
     KM_HTTP_BODY_NONE, 0},
    {"POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", KM_ERR_INVALID,
     KM_HTTP_BODY_NONE, 0},
    {"POST http://a/ HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE,
     0},
    {"POST http://a/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"POST http://a/ HTTP/1.1\r\nContent-Length: \r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"POST http://a/ HTTP/1.1\r\nContent-Length: +5\r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 0, KM_HTTP_BODY_CHUNKED, 0},
    {"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\n\r\n", 0, KM_HTTP_BODY_CHUNKED, 0},
    {"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
     KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"POST http://a/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", KM_ERR_INVALID,
     KM_HTTP_BODY_NONE, 0},
    {"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", KM_ERR_UNSUPPORTED,
     KM_HTTP_BODY_NONE, 0},
    {"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
     "\r\n",
     KM_ERR_UNSUPPORTED, KM_HTTP_BODY_NONE, 0},
};

static void test_request_body(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof reqbody_cases / sizeof reqbody_cases[0]; i++) {
        const struct fcase *c = &reqbody_cases[i];
        struct km_buf b;
        km_buf_init_view(&b, c->in, strlen(c->in));
        struct km_http_header h[8];
        struct km_http_request q;
        assert_int_equal(km_http_parse_request(&b, &q, h, 8), 0);
        enum km_http_body k;
        uint64_t len;
        int r = km_http_request_body(&q, &k, &len);
        if (r != c->expect || (r == 0 && (k != c->kind || len != c->len))) {
            fail_msg("case %zu: got %s kind %d len %llu", i, km_err_name(r), (int)k,
                     (unsigned long long)len);
        }
    }
}

static const struct fcase resp_cases[] = {
    {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", 0, KM_HTTP_BODY_LENGTH, 3},
    {"HTTP/1.1 200 OK\r\n\r\n", 0, KM_HTTP_BODY_CLOSE, 0},
    {"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\n", 0, KM_HTTP_BODY_CHUNKED, 0},
    {"HTTP/1.1 200 \r\nTransfer-Encoding: gzip\r\n\r\n", 0, KM_HTTP_BODY_CLOSE, 0},
    {"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n", 0, KM_HTTP_BODY_NONE, 0},
    {"HTTP/1.1 304 Not Modified\r\n\r\n", 0, KM_HTTP_BODY_NONE, 0},
    {"HTTP/1.1 100 Continue\r\n\r\n", 0, KM_HTTP_BODY_NONE, 0},
    {"HTTP/1.0 200 OK\nContent-Length: 0\n\n", 0, KM_HTTP_BODY_NONE, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", KM_ERR_INVALID,
     KM_HTTP_BODY_NONE, 0},
    {"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"HTTP/1.1 099 Low\r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"HTTP/1.1 600 High\r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"HTTP/1.1 20 OK\r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"HTTP/1.1 2000 OK\r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"HTTP/1.1  200 OK\r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"HTTP/2 200 OK\r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"HTTP/3.0 200 OK\r\n\r\n", KM_ERR_UNSUPPORTED, KM_HTTP_BODY_NONE, 0},
    {"ICY 200 OK\r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"HTTP/1.1 200 O\x01K\r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", KM_ERR_INVALID, KM_HTTP_BODY_NONE, 0},
    {"HTTP/1.1 200 OK\r\n", KM_ERR_INCOMPLETE, KM_HTTP_BODY_NONE, 0},
};

static void test_response(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof resp_cases / sizeof resp_cases[0]; i++) {
        const struct fcase *c = &resp_cases[i];
        struct km_buf b;
        km_buf_init_view(&b, c->in, strlen(c->in));
        struct km_http_header h[8];
        struct km_http_response p;
        int r = km_http_parse_response(&b, &p, h, 8);
        enum km_http_body k = KM_HTTP_BODY_NONE;
        uint64_t len = 0;
        if (r == 0) {
            r = km_http_response_body(&p, false, &k, &len);
        }
        if (r != c->expect || (r == 0 && (k != c->kind || len != c->len))) {
            fail_msg("case %zu: got %s kind %d", i, km_err_name(r), (int)k);
        }
    }
    /* A response to HEAD has no body whatever it says. */
    const char *in = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    struct km_buf b;
    km_buf_init_view(&b, in, strlen(in));
    struct km_http_header h[4];
    struct km_http_response p;
    assert_int_equal(km_http_parse_response(&b, &p, h, 4), 0);
    assert_int_equal(p.status, 200);
    assert_int_equal(p.reason.len, 2);
    enum km_http_body k;
    uint64_t len;
    assert_int_equal(km_http_response_body(&p, true, &k, &len), 0);
    assert_int_equal(k, KM_HTTP_BODY_NONE);
}

struct ccase {
    const char *in;
    int expect;
    size_t consumed; /* for 0: where the body ends */
};

static const struct ccase chunk_cases[] = {
    {"0\r\n\r\n", 0, 5},
    {"0\n\n", 0, 3},
    {"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\nNEXT", 0, 24},
    {"4;a=b;c\r\nWiki\r\n0\r\nT: 1\r\nU: 2\r\n\r\nX", 0, 32},
    {"A\r\n0123456789\r\n0\r\n\r\n", 0, 20},
    {"a \r\n0123456789\r\n0\r\n\r\n", 0, 21},
    {"4\r\nWiki\r\n", KM_ERR_INCOMPLETE, 9},
    {"0\r\nT: 1\r\n", KM_ERR_INCOMPLETE, 9},
    {"", KM_ERR_INCOMPLETE, 0},
    {"\r\n", KM_ERR_INVALID, 0},
    {"x\r\n", KM_ERR_INVALID, 0},
    {"-1\r\n", KM_ERR_INVALID, 0},
    {"4\r\nWikiX\r\n", KM_ERR_INVALID, 0},
    {"4\rX", KM_ERR_INVALID, 0},
    {"0\r\n T: 1\r\n\r\n", KM_ERR_INVALID, 0},
    {"0\r\nT: \x01\r\n\r\n", KM_ERR_INVALID, 0},
    {"4;\x01\r\n", KM_ERR_INVALID, 0},
    {"ffffffffffffffff\r\n", KM_ERR_INCOMPLETE, 18}, /* 16 digits: the largest size */
    {"10000000000000000\r\n", KM_ERR_TOO_LARGE, 0},  /* 17 digits */
};

static void test_chunked(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof chunk_cases / sizeof chunk_cases[0]; i++) {
        const struct ccase *c = &chunk_cases[i];
        size_t n = strlen(c->in);
        struct km_http_chunked ch;
        km_http_chunked_init(&ch);
        struct km_buf b;
        km_buf_init_view(&b, c->in, n);
        int r = km_http_chunked_feed(&ch, &b);
        if (r != c->expect) {
            fail_msg("case %zu: got %s want %s", i, km_err_name(r), km_err_name(c->expect));
        }
        if (r != KM_ERR_INVALID && r != KM_ERR_TOO_LARGE) {
            assert_int_equal(n - km_buf_len(&b), c->consumed);
        }
        if (r == 0) {
            /* Byte by byte gives the same end. */
            km_http_chunked_init(&ch);
            size_t k;
            for (k = 0; k < n; k++) {
                struct km_buf one;
                km_buf_init_view(&one, c->in + k, 1);
                r = km_http_chunked_feed(&ch, &one);
                if (r == 0) {
                    break;
                }
                assert_int_equal(r, KM_ERR_INCOMPLETE);
            }
            assert_int_equal(k + 1, c->consumed);
        }
    }
    /* An extension line over the limit. */
    char ext[5000];
    memset(ext, 'a', sizeof ext);
    ext[0] = '1';
    ext[1] = ';';
    struct km_http_chunked ch;
    km_http_chunked_init(&ch);
    struct km_buf b;
    km_buf_init_view(&b, ext, sizeof ext);
    assert_int_equal(km_http_chunked_feed(&ch, &b), KM_ERR_TOO_LARGE);
}

struct acase {
    const char *in;
    uint16_t dflt;
    int expect;
    const char *host;
    uint16_t port;
};

static const struct acase auth_cases[] = {
    {"example.com:443", 0, 0, "example.com", 443},
    {"example.com", 80, 0, "example.com", 80},
    {"example.com", 0, KM_ERR_INVALID, "", 0},
    {"[::1]:22", 0, 0, "::1", 22},
    {"[2001:db8::1]", 80, 0, "2001:db8::1", 80},
    {"127.0.0.1:65535", 0, 0, "127.0.0.1", 65535},
    {"127.0.0.1:65536", 0, KM_ERR_INVALID, "", 0},
    {"127.0.0.1:0", 0, KM_ERR_INVALID, "", 0},
    {"127.0.0.1:", 0, KM_ERR_INVALID, "", 0},
    {"127.0.0.1:080", 0, 0, "127.0.0.1", 80},
    {"127.0.0.1:000080", 0, KM_ERR_INVALID, "", 0},
    {":80", 0, KM_ERR_INVALID, "", 0},
    {"", 80, KM_ERR_INVALID, "", 0},
    {"user@host:80", 0, KM_ERR_INVALID, "", 0},
    {"[::1:22", 0, KM_ERR_INVALID, "", 0},
    {"[]:22", 0, KM_ERR_INVALID, "", 0},
    {"[nothex]:22", 0, KM_ERR_INVALID, "", 0},
    {"[::1]x:22", 0, KM_ERR_INVALID, "", 0},
    {"a b:80", 0, KM_ERR_INVALID, "", 0},
    {"a%00b:80", 0, KM_ERR_INVALID, "", 0},
};

static void test_authority(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof auth_cases / sizeof auth_cases[0]; i++) {
        const struct acase *c = &auth_cases[i];
        char host[256];
        uint16_t port;
        struct km_http_view v = {c->in, strlen(c->in)};
        int r = km_http_parse_authority(v, c->dflt, host, &port);
        if (r != c->expect) {
            fail_msg("case %zu '%s': got %s", i, c->in, km_err_name(r));
        }
        assert_string_equal(host, c->host);
        assert_int_equal(port, c->port);
    }
    /* A 255-byte host passes, 256 does not; a NUL in the middle is refused. */
    char longhost[300];
    memset(longhost, 'a', sizeof longhost);
    char host[256];
    uint16_t port;
    assert_int_equal(km_http_parse_authority((struct km_http_view){longhost, 255}, 80, host, &port),
                     0);
    assert_int_equal(km_http_parse_authority((struct km_http_view){longhost, 256}, 80, host, &port),
                     KM_ERR_INVALID);
    assert_int_equal(km_http_parse_authority((struct km_http_view){"a\0b", 3}, 80, host, &port),
                     KM_ERR_INVALID);
    /* Absolute-form splitting. */
    struct km_http_view a, p;
    assert_int_equal(km_http_split_absolute((struct km_http_view){"http://h:8/x?y", 14}, &a, &p),
                     0);
    assert_int_equal(a.len, 3);
    assert_int_equal(p.len, 4);
    assert_int_equal(km_http_split_absolute((struct km_http_view){"HTTP://h", 8}, &a, &p), 0);
    assert_int_equal(p.len, 0);
    assert_int_equal(km_http_split_absolute((struct km_http_view){"https://h/", 10}, &a, &p),
                     KM_ERR_UNSUPPORTED);
    assert_int_equal(km_http_split_absolute((struct km_http_view){"http:///x", 9}, &a, &p),
                     KM_ERR_INVALID);
    assert_int_equal(km_http_split_absolute((struct km_http_view){"/x", 2}, &a, &p),
                     KM_ERR_INVALID);
    assert_true(km_http_list_has((struct km_http_view){"a, Close ,b", 11}, "close", 5));
    assert_false(km_http_list_has((struct km_http_view){"closed", 6}, "close", 5));
}

/* ---- test egress: a real km_egress that connects directly over loopback TCP ----
 * fail != 0 reports that code instead; hang never completes (to test cancellation). */
struct tegress {
    struct km_egress e;
    uv_loop_t *loop;
    int fail;
    int hang;
    int opens;
    int cancels;
};

struct km_egress_req {
    struct tegress *t;
    struct km_stream *s;
    uv_timer_t timer;
    km_egress_done_cb cb;
    void *arg;
    int err;
};

static void treq_free(uv_handle_t *h)
{
    free(h->data);
}

static void treq_fail(uv_timer_t *tm)
{
    struct km_egress_req *q = tm->data;
    q->cb(q->arg, q->err, NULL);
    uv_close((uv_handle_t *)&q->timer, treq_free);
}

static void treq_connected(struct km_stream *s, int err, void *arg)
{
    struct km_egress_req *q = arg;
    q->s = NULL;
    q->cb(q->arg, err, err == 0 ? s : NULL);
    uv_close((uv_handle_t *)&q->timer, treq_free);
}

static int tegress_open(struct km_egress *e, const char *host, uint16_t port, const char *origin,
                        km_egress_done_cb cb, void *arg, struct km_egress_req **req)
{
    (void)origin;
    struct tegress *t = e->data;
    t->opens++;
    struct km_egress_req *q = calloc(1, sizeof *q);
    q->t = t;
    q->cb = cb;
    q->arg = arg;
    uv_timer_init(t->loop, &q->timer);
    q->timer.data = q;
    *req = q;
    if (__atomic_load_n(&t->hang, __ATOMIC_SEQ_CST)) {
        return 0;
    }
    int fail = __atomic_load_n(&t->fail, __ATOMIC_SEQ_CST);
    struct sockaddr_storage ss;
    if (strcmp(host, "localhost") == 0) {
        host = "127.0.0.1";
    }
    if (fail == 0 && uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        fail = KM_ERR_NOT_FOUND;
    }
    if (fail != 0) {
        q->err = fail;
        uv_timer_start(&q->timer, treq_fail, 0, 0);
        return 0;
    }
    int r = km_uvstream_connect(t->loop, (struct sockaddr *)&ss, 2000, treq_connected, q, &q->s);
    if (r != 0) {
        uv_close((uv_handle_t *)&q->timer, treq_free);
        *req = NULL;
    }
    return r;
}

static void tegress_cancel(struct km_egress *e, struct km_egress_req *q)
{
    struct tegress *t = e->data;
    t->cancels++;
    if (q->s != NULL) {
        km_stream_close(q->s);
        q->s = NULL;
    }
    uv_timer_stop(&q->timer);
    uv_close((uv_handle_t *)&q->timer, treq_free);
}

static void tegress_init(struct tegress *t, uv_loop_t *loop)
{
    memset(t, 0, sizeof *t);
    t->loop = loop;
    t->e.open = tegress_open;
    t->e.cancel = tegress_cancel;
    t->e.data = t;
}

/* ---- blocking client helpers (client thread) ---- */

static int tcp_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0) {
            return;
        }
        b += w;
        n -= (size_t)w;
    }
}

/* Read exactly n bytes; false on EOF, error or timeout. */
static bool recv_exact(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t r = recv(fd, b, n, 0);
        if (r <= 0) {
            return false;
        }
        b += r;
        n -= (size_t)r;
    }
    return true;
}

/* True if the peer closes (EOF or reset) before the timeout with no more bytes. */
static bool recv_eof(int fd)
{
    uint8_t c;
    ssize_t r = recv(fd, &c, 1, 0);
    return r == 0 || (r < 0 && errno == ECONNRESET);
}

static uint16_t addr_port(const struct sockaddr_storage *ss)
{
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* ---- loopback echo server on the loop (CONNECT target) ---- */

static void echo_data(struct km_stream *s, const uint8_t *d, size_t n)
{
    if (km_stream_write(s, d, n) != 0) {
        km_stream_close(s);
    }
}

static void echo_end(struct km_stream *s, int err)
{
    (void)err;
    km_stream_close(s);
}

static void echo_conn(uv_stream_t *l, int status)
{
    struct km_stream *s;
    if (status == 0 && km_uvstream_accept(l, &s) == 0) {
        s->on_data = echo_data;
        s->on_end = echo_end;
        km_stream_read_start(s);
    }
}

/* ---- origin server: a blocking thread, one connection at a time ---- */

struct origin {
    int lfd;
    uint16_t port;
    int conns;
    char last[4096]; /* the last request as received, head and body */
};

/* Read one request (head + Content-Length body) into o->last; false at EOF. */
static bool origin_read(struct origin *o, int fd, size_t *len)
{
    size_t n = 0;
    char *end = NULL;
    while (end == NULL) {
        ssize_t r = recv(fd, o->last + n, sizeof o->last - 1 - n, 0);
        if (r <= 0) {
            return false;
        }
        n += (size_t)r;
        o->last[n] = '\0';
        end = strstr(o->last, "\r\n\r\n");
    }
    size_t head = (size_t)(end - o->last) + 4;
    const char *cl = strstr(o->last, "Content-Length: ");
    size_t body = cl != NULL && cl < end ? strtoul(cl + 16, NULL, 10) : 0;
    while (n < head + body) {
        ssize_t r = recv(fd, o->last + n, head + body - n, 0);
        if (r <= 0) {
            return false;
        }
        n += (size_t)r;
    }
    o->last[n] = '\0';
    *len = n;
    return true;
}

static void origin_thread(void *arg)
{
    struct origin *o = arg;
    for (;;) {
        int fd = accept(o->lfd, NULL, NULL);
        if (fd < 0) {
            return;
        }
        __atomic_add_fetch(&o->conns, 1, __ATOMIC_SEQ_CST);
        size_t n;
        bool quit = false;
        while (origin_read(o, fd, &n)) {
            char resp[4200];
            int rl;
            if (strncmp(o->last, "QUIT", 4) == 0) {
                quit = true;
                break;
            }
            if (strncmp(o->last, "GET /hello ", 11) == 0) {
                rl = snprintf(resp, sizeof resp,
                              "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, "
                              "X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n\r\nhello");
            } else if (strncmp(o->last, "GET /chunked ", 13) == 0) {
                rl = snprintf(resp, sizeof resp,
                              "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\nhello\r\n0\r\n\r\n");
            } else if (strncmp(o->last, "HEAD ", 5) == 0) {
                rl = snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
            } else if (strncmp(o->last, "POST /echo ", 11) == 0) {
                const char *body = strstr(o->last, "\r\n\r\n") + 4;
                rl = snprintf(resp, sizeof resp,
                              "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                              "Content-Length: %zu\r\n\r\n%s",
                              strlen(body), body);
            } else if (strncmp(o->last, "GET /close ", 11) == 0) {
                rl = snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\n\r\nbye");
                send_all(fd, resp, (size_t)rl);
                break;
            } else {
                rl = snprintf(resp, sizeof resp, "garbage\r\n\r\n");
            }
            send_all(fd, resp, (size_t)rl);
        }
        close(fd);
        if (quit) {
            return;
        }
    }
}

/* ---- live test ---- */

struct fixture {
    uv_loop_t loop;
    uv_async_t done;
    uv_tcp_t *echo;
    struct origin origin;
    struct tegress eg, bad, hang;
    struct km_http_server *open, *failing, *pending, *tiny;
    uint16_t echo_port, p_open, p_fail, p_pend, p_tiny;
    int result;
};

static void on_done(uv_async_t *a)
{
    struct fixture *f = a->data;
    km_http_server_close(f->open);
    km_http_server_close(f->failing);
    km_http_server_close(f->pending);
    km_http_server_close(f->tiny);
    km_uvstream_listener_close(f->echo);
    uv_close((uv_handle_t *)a, NULL);
}

/* Send req on fd and expect exactly want back. */
static bool exchange(int fd, const char *req, const char *want)
{
    send_all(fd, req, strlen(req));
    size_t n = strlen(want);
    char got[4096];
    if (n >= sizeof got || !recv_exact(fd, got, n)) {
        return false;
    }
    got[n] = '\0';
    if (memcmp(got, want, n) != 0) {
        fprintf(stderr, "got:\n%s\nwant:\n%s\n", got, want);
        return false;
    }
    return true;
}

/* Send req on a new connection; the reply must start with status_line, carry
 * "Connection: close", and the server must then close. */
static bool expect_error(uint16_t port, const char *req, size_t req_len, const char *status_line)
{
    int fd = tcp_connect(port);
    send_all(fd, req, req_len);
    char got[2048];
    size_t n = 0;
    for (;;) {
        ssize_t r = recv(fd, got + n, sizeof got - 1 - n, 0);
        if (r <= 0) {
            break;
        }
        n += (size_t)r;
    }
    got[n] = '\0';
    close(fd);
    bool ok = strncmp(got, status_line, strlen(status_line)) == 0 &&
              strstr(got, "\r\nConnection: close\r\n") != NULL;
    if (!ok) {
        fprintf(stderr, "for %s got:\n%s\n", status_line, got);
    }
    return ok;
}

static bool status_for(struct fixture *f, int err, const char *status_line)
{
    __atomic_store_n(&f->bad.fail, err, __ATOMIC_SEQ_CST);
    const char *req = "GET http://localhost:1/ HTTP/1.1\r\n\r\n";
    return expect_error(f->p_fail, req, strlen(req), status_line);
}

static void client_thread(void *arg)
{
    struct fixture *f = arg;
    int bad = 0;
    char req[1024], want[1024];
    uint16_t op = f->origin.port;
    /* 1. Keep-alive: three requests on one client connection reuse one origin connection;
     *    hop-by-hop headers go in neither direction; Host comes from the target. */
    {
        int fd = tcp_connect(f->p_open);
        snprintf(req, sizeof req,
                 "GET http://127.0.0.1:%u/hello HTTP/1.1\r\nHost: wrong\r\nProxy-Connection: "
                 "keep-alive\r\nConnection: X-Drop\r\nX-Drop: 1\r\nX-Keep: 1\r\n"
                 "Proxy-Authorization: Basic eA==\r\nTE: trailers\r\n\r\n",
                 op);
        if (!exchange(fd, req, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")) {
            bad |= 1 << 0;
        }
        snprintf(want, sizeof want,
                 "GET /hello HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nX-Keep: 1\r\n\r\n", op);
        if (strcmp(f->origin.last, want) != 0) {
            fprintf(stderr, "origin got:\n%s\n", f->origin.last);
            bad |= 1 << 1;
        }
        /* Chunked response, byte-split request, then HEAD and a POST with 100-continue. */
        snprintf(req, sizeof req, "GET http://127.0.0.1:%u/chunked HTTP/1.1\r\n\r\n", op);
        if (!exchange(fd, req,
                      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                      "\r\n")) {
            bad |= 1 << 2;
        }
        snprintf(req, sizeof req, "HEAD http://127.0.0.1:%u/x HTTP/1.1\r\n\r\n", op);
        for (size_t i = 0; i + 1 < strlen(req); i++) {
            send_all(fd, &req[i], 1);
            usleep(1000);
        }
        if (!exchange(fd, req + strlen(req) - 1,
                      "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")) {
            bad |= 1 << 3;
        }
        snprintf(req, sizeof req,
                 "POST http://127.0.0.1:%u/echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", op);
        if (!exchange(fd, req,
                      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
                      "abc")) {
            bad |= 1 << 4;
        }
        if (__atomic_load_n(&f->origin.conns, __ATOMIC_SEQ_CST) != 1) {
            bad |= 1 << 5;
        }
        /* Read-until-close framing ends both connections. */
        snprintf(req, sizeof req, "GET http://127.0.0.1:%u/close HTTP/1.1\r\n\r\n", op);
        if (!exchange(fd, req, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbye") ||
            !recv_eof(fd)) {
            bad |= 1 << 6;
        }
        close(fd);
    }
    /* 2. HTTP/1.0 client: one response, then close. */
    {
        int fd = tcp_connect(f->p_open);
        snprintf(req, sizeof req, "GET http://127.0.0.1:%u/hello HTTP/1.0\r\n\r\n", op);
        if (!exchange(fd, req,
                      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello") ||
            !recv_eof(fd)) {
            bad |= 1 << 7;
        }
        close(fd);
    }
    /* 3. CONNECT tunnel with bytes pipelined after the head. */
    {
        int fd = tcp_connect(f->p_open);
        snprintf(req, sizeof req, "CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: x\r\n\r\nearly",
                 f->echo_port);
        if (!exchange(fd, req, "HTTP/1.1 200 Connection established\r\n\r\nearly") ||
            !exchange(fd, "late", "late")) {
            bad |= 1 << 8;
        }
        close(fd);
    }
    /* 4. Malformed and unsupported requests. */
    static char big[KM_HTTP_MAX_HEAD + 100];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET http://a/ HTTP/1.1\r\nX: ", 27);
    const char nul[] = "GET http://a/ HTTP/1.1\r\nX: \0\r\n\r\n";
    if (!expect_error(f->p_open, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27,
                      "HTTP/1.1 501 Not Implemented\r\n") ||
        !expect_error(f->p_open, "GET https://a/ HTTP/1.1\r\n\r\n", 28, "HTTP/1.1 501 ") ||
        !expect_error(f->p_open, "GET http://a/ HTTP/2.0\r\n\r\n", 27, "HTTP/1.1 505 ") ||
        !expect_error(f->p_open, "\x01\x02\x03\r\n\r\n", 7, "HTTP/1.1 400 Bad Request\r\n") ||
        !expect_error(f->p_open, "GET http://a/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 37,
                      "HTTP/1.1 400 ") ||
        !expect_error(f->p_open, nul, sizeof nul - 1, "HTTP/1.1 400 ") ||
        !expect_error(f->p_open, "CONNECT a HTTP/1.1\r\n\r\n", 22, "HTTP/1.1 400 ") ||
        !expect_error(f->p_open, big, sizeof big, "HTTP/1.1 431 ")) {
        bad |= 1 << 9;
    }
    /* 5. Egress errors and their statuses. */
    if (!status_for(f, KM_ERR_REFUSED, "HTTP/1.1 403 Forbidden\r\n") ||
        !status_for(f, KM_ERR_NOT_FOUND, "HTTP/1.1 404 Not Found\r\n") ||
        !status_for(f, KM_ERR_UNREACHABLE, "HTTP/1.1 502 Bad Gateway\r\n") ||
        !status_for(f, -ECONNREFUSED, "HTTP/1.1 502 ") ||
        !status_for(f, -EHOSTUNREACH, "HTTP/1.1 502 ") ||
        !status_for(f, -ETIMEDOUT, "HTTP/1.1 504 Gateway Timeout\r\n")) {
        bad |= 1 << 10;
    }
    /* 6. Leaving while egress->open is pending cancels it. */
    {
        int fd = tcp_connect(f->p_pend);
        send_all(fd, "CONNECT a:1 HTTP/1.1\r\n\r\n", 24);
        usleep(100000);
        close(fd);
    }
    /* 7. Client limit and head timeout. */
    {
        int a = tcp_connect(f->p_tiny);
        usleep(50000);
        int b = tcp_connect(f->p_tiny);
        if (!recv_eof(b)) {
            bad |= 1 << 11;
        }
        close(b);
        send_all(a, "GET http://a/", 13); /* never finished: 408 after 300 ms */
        char got[64] = {0};
        if (!recv_exact(a, got, 13) || memcmp(got, "HTTP/1.1 408 ", 13) != 0) {
            bad |= 1 << 12;
        }
        close(a);
    }
    /* Stop the origin. */
    int q = tcp_connect(op);
    send_all(q, "QUIT\r\n\r\n", 8);
    close(q);
    usleep(100000);
    f->result = bad;
    uv_async_send(&f->done);
}

static uint16_t listen_port(struct km_http_server *s)
{
    struct sockaddr_storage ss;
    assert_int_equal(km_http_server_addr(s, &ss), 0);
    return addr_port(&ss);
}

static void test_server(void **state)
{
    (void)state;
    static struct fixture f;
    memset(&f, 0, sizeof f);
    assert_int_equal(uv_loop_init(&f.loop), 0);
    assert_int_equal(uv_async_init(&f.loop, &f.done, on_done), 0);
    f.done.data = &f;
    tegress_init(&f.eg, &f.loop);
    tegress_init(&f.bad, &f.loop);
    tegress_init(&f.hang, &f.loop);
    f.hang.hang = 1;
    struct sockaddr_in lo;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &lo), 0);
    assert_int_equal(
        km_uvstream_listen_tcp(&f.loop, (struct sockaddr *)&lo, 16, echo_conn, NULL, &f.echo), 0);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    assert_int_equal(uv_tcp_getsockname(f.echo, (struct sockaddr *)&ss, &len), 0);
    f.echo_port = addr_port(&ss);
    f.origin.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    assert_int_equal(bind(f.origin.lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(f.origin.lfd, 8), 0);
    assert_int_equal(getsockname(f.origin.lfd, (struct sockaddr *)&a, &al), 0);
    f.origin.port = ntohs(a.sin_port);

    assert_int_equal(km_http_server_new(&f.loop, (struct sockaddr *)&lo, &f.eg.e, NULL, &f.open),
                     0);
    assert_int_equal(
        km_http_server_new(&f.loop, (struct sockaddr *)&lo, &f.bad.e, NULL, &f.failing), 0);
    assert_int_equal(
        km_http_server_new(&f.loop, (struct sockaddr *)&lo, &f.hang.e, NULL, &f.pending), 0);
    struct km_http_limits lim = {.max_clients = 1, .head_timeout_ms = 300};
    assert_int_equal(km_http_server_new(&f.loop, (struct sockaddr *)&lo, &f.eg.e, &lim, &f.tiny),
                     0);
    f.p_open = listen_port(f.open);
    f.p_fail = listen_port(f.failing);
    f.p_pend = listen_port(f.pending);
    f.p_tiny = listen_port(f.tiny);

    uv_thread_t th, oth;
    assert_int_equal(uv_thread_create(&oth, origin_thread, &f.origin), 0);
    assert_int_equal(uv_thread_create(&th, client_thread, &f), 0);
    assert_int_equal(uv_run(&f.loop, UV_RUN_DEFAULT), 0);
    uv_thread_join(&th);
    uv_thread_join(&oth);
    close(f.origin.lfd);
    if (f.result != 0) {
        fail_msg("client checks failed: mask 0x%x", (unsigned)f.result);
    }
    assert_int_equal(f.hang.opens, 1);
    assert_int_equal(f.hang.cancels, 1);
    assert_int_equal(uv_loop_close(&f.loop), 0);
}

int main(void)
{
    km_log_set_level(KM_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_table), cmocka_unit_test(test_request_limits),
        cmocka_unit_test(test_request_body),  cmocka_unit_test(test_response),
        cmocka_unit_test(test_chunked),       cmocka_unit_test(test_authority),
        cmocka_unit_test(test_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
