/* SOCKS5: the pure parsers and writers against hostile tables, then the server on a real
 * loop with a loopback echo server behind it and blocking clients in a second thread. */
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
#include "proto/socks5.h"

#define B(s) (const uint8_t *)(s), sizeof(s) - 1

struct pcase {
    const uint8_t *in;
    size_t len;
    int expect;
    size_t consumed;
};

/* ---- greeting ---- */

static const struct pcase greet_cases[] = {
    {B("\x05\x01\x00"), 0, 3},
    {B("\x05\x02\x00\x02"), 0, 4},
    {B("\x05\x01\x00\xaa\xbb"), 0, 3},  /* trailing bytes stay for the next message */
    {B("\x05\x00"), KM_ERR_INVALID, 0}, /* NMETHODS 0 */
    {B("\x04\x01\x00"), KM_ERR_INVALID, 0},
    {B("\x00"), KM_ERR_INVALID, 0},
    {B(""), KM_ERR_INCOMPLETE, 0},
    {B("\x05"), KM_ERR_INCOMPLETE, 0},
    {B("\x05\x02\x00"), KM_ERR_INCOMPLETE, 0}, /* NMETHODS past the end */
    {B("\x05\xff\x00"), KM_ERR_INCOMPLETE, 0},
};

static void run_cases(const struct pcase *c, size_t n, int (*parse)(struct km_buf *))
{
    for (size_t i = 0; i < n; i++) {
        struct km_buf b;
        km_buf_init_view(&b, c[i].in, c[i].len);
        int r = parse(&b);
        if (r != c[i].expect) {
            fail_msg("case %zu: got %s want %s", i, km_err_name(r), km_err_name(c[i].expect));
        }
        if (km_buf_len(&b) != c[i].len - c[i].consumed) {
            fail_msg("case %zu: consumed %zu want %zu", i, c[i].len - km_buf_len(&b),
                     c[i].consumed);
        }
    }
}

static int parse_greeting(struct km_buf *b)
{
    struct km_socks5_greeting g;
    return km_socks5_parse_greeting(b, &g);
}

static int parse_auth(struct km_buf *b)
{
    struct km_socks5_auth a;
    return km_socks5_parse_auth(b, &a);
}

static struct km_socks5_request last_req;

static int parse_request(struct km_buf *b)
{
    return km_socks5_parse_request(b, &last_req);
}

/* Every strict prefix of a valid message is INCOMPLETE and consumes nothing. */
static void check_truncations(const uint8_t *m, size_t len, int (*parse)(struct km_buf *))
{
    for (size_t k = 0; k < len; k++) {
        struct km_buf b;
        km_buf_init_view(&b, m, k);
        int r = parse(&b);
        if (r != KM_ERR_INCOMPLETE || km_buf_len(&b) != k) {
            fail_msg("prefix %zu/%zu: got %s", k, len, km_err_name(r));
        }
    }
    struct km_buf b;
    km_buf_init_view(&b, m, len);
    assert_int_equal(parse(&b), 0);
    assert_int_equal(km_buf_len(&b), 0);
}

static void test_greeting(void **state)
{
    (void)state;
    run_cases(greet_cases, sizeof greet_cases / sizeof greet_cases[0], parse_greeting);
    /* NMETHODS at its maximum, 255. */
    uint8_t m[257] = {5, 255};
    for (size_t i = 0; i < 255; i++) {
        m[2 + i] = (uint8_t)i;
    }
    check_truncations(m, sizeof m, parse_greeting);
    struct km_socks5_greeting g;
    struct km_buf b;
    km_buf_init_view(&b, m, sizeof m);
    assert_int_equal(km_socks5_parse_greeting(&b, &g), 0);
    assert_int_equal(g.n_methods, 255);
    assert_true(km_socks5_greeting_has(&g, 0x02));
    assert_false(km_socks5_greeting_has(&g, 0xff));
}

/* ---- RFC 1929 ---- */

static const struct pcase auth_cases[] = {
    {B("\x01\x04user\x06secret"), 0, 13},
    {B("\x01\x01u\x01pX"), 0, 5},
    {B("\x01\x00\x01p"), KM_ERR_INVALID, 0},  /* ULEN 0 */
    {B("\x01\x01u\x00"), KM_ERR_INVALID, 0},  /* PLEN 0 */
    {B("\x05\x01u\x01p"), KM_ERR_INVALID, 0}, /* VER 5 */
    {B("\x02\x01u\x01p"), KM_ERR_INVALID, 0},
    {B("\x01\x05user\x01p"), KM_ERR_INCOMPLETE, 0}, /* ULEN one past the bytes */
    {B("\x01\x04user\x02p"), KM_ERR_INCOMPLETE, 0},
    {B(""), KM_ERR_INCOMPLETE, 0},
};

static void test_auth(void **state)
{
    (void)state;
    run_cases(auth_cases, sizeof auth_cases / sizeof auth_cases[0], parse_auth);
    /* ULEN and PLEN at 255 (max); a NUL inside is data, not a terminator. */
    uint8_t m[1 + 1 + 255 + 1 + 255];
    m[0] = 1;
    m[1] = 255;
    memset(&m[2], 'u', 255);
    m[3] = 0;
    m[257] = 255;
    memset(&m[258], 'p', 255);
    check_truncations(m, sizeof m, parse_auth);
    struct km_socks5_auth a;
    struct km_buf b;
    km_buf_init_view(&b, m, sizeof m);
    assert_int_equal(km_socks5_parse_auth(&b, &a), 0);
    assert_int_equal(a.user_len, 255);
    assert_int_equal(a.pass_len, 255);
    assert_int_equal(a.user[1], 0);
}

/* ---- request ---- */

struct rcase {
    const uint8_t *in;
    size_t len;
    int expect;
    uint8_t rep;
    const char *host;
    uint16_t port;
};

static const struct rcase req_cases[] = {
    {B("\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90"), 0, 0, "127.0.0.1", 8080},
    {B("\x05\x01\x00\x03\x0b"
       "example.com\x00\x50"),
     0, 0, "example.com", 80},
    {B("\x05\x01\x00\x04\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
       "\xff\xff"),
     0, 0, "2001:db8::1", 65535},
    {B("\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x01"
       "trailing"),
     0, 0, "10.0.0.1", 1},
    {B("\x05\x01\x00\x03\x00\x00\x50"), KM_ERR_INVALID, 1, "", 0}, /* empty domain */
    {B("\x05\x01\x00\x03\x03"
       "a\x00"
       "b\x00\x50"),
     KM_ERR_INVALID, 1, "", 0},                                                    /* NUL */
    {B("\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x00"), KM_ERR_INVALID, 1, "", 0},     /* port 0 */
    {B("\x05\x01\x01\x01\x7f\x00\x00\x01\x00\x50"), KM_ERR_INVALID, 1, "", 0},     /* RSV */
    {B("\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50"), KM_ERR_INVALID, 1, "", 0},     /* VER */
    {B("\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50"), KM_ERR_UNSUPPORTED, 7, "", 0}, /* BIND */
    {B("\x05\x03\x00\x01\x7f\x00\x00\x01\x00\x50"), KM_ERR_UNSUPPORTED, 7, "", 0}, /* UDP */
    {B("\x05\x00\x00\x01"), KM_ERR_UNSUPPORTED, 7, "", 0},
    {B("\x05\x01\x00\x02\x7f\x00\x00\x01\x00\x50"), KM_ERR_UNSUPPORTED, 8, "", 0}, /* ATYP */
    {B("\x05\x01\x00\x00"), KM_ERR_UNSUPPORTED, 8, "", 0},
    {B("\x05\x01\x00\x05"), KM_ERR_UNSUPPORTED, 8, "", 0},
    {B("\x05\x01\x00\xff"), KM_ERR_UNSUPPORTED, 8, "", 0},
    {B("\x05\x01\x00\x03\x0b"
       "example.co"),
     KM_ERR_INCOMPLETE, 1, "", 0},
    {B("\x05\x01\x00\x03\xff"
       "short"),
     KM_ERR_INCOMPLETE, 1, "", 0},
    {B("\x05\x01\x00"), KM_ERR_INCOMPLETE, 1, "", 0},
};

static void test_request(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof req_cases / sizeof req_cases[0]; i++) {
        const struct rcase *c = &req_cases[i];
        struct km_buf b;
        km_buf_init_view(&b, c->in, c->len);
        struct km_socks5_request q;
        int r = km_socks5_parse_request(&b, &q);
        if (r != c->expect) {
            fail_msg("case %zu: got %s want %s", i, km_err_name(r), km_err_name(c->expect));
        }
        assert_int_equal(q.rep, c->rep);
        assert_string_equal(q.host, c->host);
        assert_int_equal(q.port, c->port);
        if (r != 0) {
            assert_int_equal(km_buf_len(&b), c->len);
        }
        if (i < 3) {
            check_truncations(c->in, c->len, parse_request);
        }
    }
    /* Domain length at its maximum, 255. */
    uint8_t m[4 + 1 + 255 + 2] = {5, 1, 0, 3, 255};
    memset(&m[5], 'a', 255);
    m[260] = 0x01;
    m[261] = 0xbb;
    check_truncations(m, sizeof m, parse_request);
    assert_int_equal(strlen(last_req.host), 255);
    assert_int_equal(last_req.port, 443);
}

static void test_writers(void **state)
{
    (void)state;
    uint8_t mem[64];
    struct km_buf b;
    km_buf_init_fixed(&b, mem, sizeof mem);
    assert_int_equal(km_socks5_put_method(&b, 0x00), 0);
    assert_int_equal(km_socks5_put_auth_status(&b, 0x01), 0);
    assert_int_equal(km_socks5_put_reply(&b, 0x05, NULL), 0);
    struct sockaddr_in a4;
    assert_int_equal(uv_ip4_addr("192.0.2.7", 1080, &a4), 0);
    assert_int_equal(km_socks5_put_reply(&b, 0x00, (struct sockaddr *)&a4), 0);
    struct sockaddr_in6 a6;
    assert_int_equal(uv_ip6_addr("::1", 443, &a6), 0);
    assert_int_equal(km_socks5_put_reply(&b, 0x00, (struct sockaddr *)&a6), 0);
    static const uint8_t want[] = {5, 0, 1,   1, 5, 5, 0,    1,    0, 0, 0, 0, 0,    0,   5, 0,
                                   0, 1, 192, 0, 2, 7, 0x04, 0x38, 5, 0, 0, 4, 0,    0,   0, 0,
                                   0, 0, 0,   0, 0, 0, 0,    0,    0, 0, 0, 1, 0x01, 0xbb};
    assert_int_equal(km_buf_len(&b), sizeof want);
    assert_memory_equal(km_buf_peek_ptr(&b), want, sizeof want);
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(km_socks5_put_reply(&b, 0, &un), KM_ERR_INVALID);
    /* A full buffer refuses and stays unchanged. */
    uint8_t small[4];
    km_buf_init_fixed(&b, small, sizeof small);
    assert_int_equal(km_socks5_put_reply(&b, 0, NULL), KM_ERR_TOO_LARGE);
    assert_int_equal(km_buf_len(&b), 0);
}

static void test_rep_map(void **state)
{
    (void)state;
    static const struct {
        int err;
        uint8_t rep;
    } t[] = {
        {0, 0x00},
        {KM_ERR_REFUSED, 0x02},
        {KM_ERR_NOT_FOUND, 0x04},
        {KM_ERR_UNREACHABLE, 0x04},
        {-EHOSTUNREACH, 0x04},
        {UV_EAI_NONAME, 0x04},
        {-ENETUNREACH, 0x03},
        {-ECONNREFUSED, 0x05},
        {-ETIMEDOUT, 0x06},
        {KM_ERR_UNSUPPORTED, 0x07},
        {-ENOMEM, 0x01},
        {KM_ERR_INVALID, 0x01},
        {KM_ERR_HOST_KEY, 0x01},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        assert_int_equal(km_socks5_rep_from_err(t[i].err), t[i].rep);
    }
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

/* ---- loopback echo server on the loop ---- */

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

/* ---- live test ---- */

struct fixture {
    uv_loop_t loop;
    uv_async_t done;
    uv_tcp_t *echo;
    struct tegress eg, bad, hang;
    struct km_socks5_server *open, *auth, *failing, *pending, *tiny;
    uint16_t echo_port, closed_port, p_open, p_auth, p_fail, p_pend, p_tiny;
    int result;
};

static void on_done(uv_async_t *a)
{
    struct fixture *f = a->data;
    km_socks5_server_close(f->open);
    km_socks5_server_close(f->auth);
    km_socks5_server_close(f->failing);
    km_socks5_server_close(f->pending);
    km_socks5_server_close(f->tiny);
    km_uvstream_listener_close(f->echo);
    uv_close((uv_handle_t *)a, NULL);
}

static const uint8_t OK_REPLY[10] = {5, 0, 0, 1, 0, 0, 0, 0, 0, 0};

/* Greeting + IPv4 CONNECT to port, optimistic data in the same segment; the method choice,
 * the reply and the echo come back. */
static bool connect_ipv4(uint16_t srv, uint16_t port, bool split)
{
    int fd = tcp_connect(srv);
    uint8_t m[] = {5,   1,   0,   5,  1, 0, 1, 127, 0, 0, 1, (uint8_t)(port >> 8), (uint8_t)port,
                   'p', 'i', 'n', 'g'};
    if (split) {
        /* Every byte in its own segment: the parser must resume at each one. */
        for (size_t i = 0; i < sizeof m; i++) {
            send_all(fd, &m[i], 1);
            usleep(2000);
        }
    } else {
        send_all(fd, m, sizeof m);
    }
    uint8_t got[2 + 10 + 4];
    bool ok = recv_exact(fd, got, sizeof got) && memcmp(got, "\x05\x00", 2) == 0 &&
              memcmp(got + 2, OK_REPLY, 10) == 0 && memcmp(got + 12, "ping", 4) == 0;
    send_all(fd, "more", 4);
    ok = ok && recv_exact(fd, got, 4) && memcmp(got, "more", 4) == 0;
    close(fd);
    return ok;
}

/* Send raw bytes, expect exactly want (n bytes) and then the server closing. */
static bool expect_reply_close(uint16_t srv, const void *send_bytes, size_t sn, const void *want,
                               size_t wn)
{
    int fd = tcp_connect(srv);
    send_all(fd, send_bytes, sn);
    uint8_t got[64];
    bool ok = wn == 0 || (recv_exact(fd, got, wn) && memcmp(got, want, wn) == 0);
    ok = ok && recv_eof(fd);
    close(fd);
    return ok;
}

static bool reply_for(struct fixture *f, int err, uint8_t rep)
{
    __atomic_store_n(&f->bad.fail, err, __ATOMIC_SEQ_CST);
    const uint8_t m[] = {5,   1,   0,   5,   1,   0,   3,   9, 'l', 'o',
                         'c', 'a', 'l', 'h', 'o', 's', 't', 0, 80};
    const uint8_t want[] = {5, 0, 5, rep, 0, 1, 0, 0, 0, 0, 0, 0};
    return expect_reply_close(f->p_fail, m, sizeof m, want, sizeof want);
}

static void client_thread(void *arg)
{
    struct fixture *f = arg;
    int bad = 0;
    /* 1. CONNECT by IPv4, whole and byte by byte; by domain name. */
    if (!connect_ipv4(f->p_open, f->echo_port, false)) {
        bad |= 1 << 0;
    }
    if (!connect_ipv4(f->p_open, f->echo_port, true)) {
        bad |= 1 << 1;
    }
    {
        int fd = tcp_connect(f->p_open);
        uint8_t m[] = {5,
                       2,
                       2,
                       0,
                       5,
                       1,
                       0,
                       3,
                       9,
                       'l',
                       'o',
                       'c',
                       'a',
                       'l',
                       'h',
                       'o',
                       's',
                       't',
                       (uint8_t)(f->echo_port >> 8),
                       (uint8_t)f->echo_port};
        send_all(fd, m, sizeof m);
        uint8_t got[12];
        if (!recv_exact(fd, got, 12) || memcmp(got, "\x05\x00", 2) != 0 ||
            memcmp(got + 2, OK_REPLY, 10) != 0) {
            bad |= 1 << 2;
        }
        send_all(fd, "x", 1);
        if (!recv_exact(fd, got, 1) || got[0] != 'x') {
            bad |= 1 << 2;
        }
        close(fd);
    }
    /* 2. Refusals with their exact replies, then close. */
    const uint8_t bind[] = {5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80};
    const uint8_t r7[] = {5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0};
    if (!expect_reply_close(f->p_open, bind, sizeof bind, r7, sizeof r7)) {
        bad |= 1 << 3;
    }
    const uint8_t atyp[] = {5, 1, 0, 5, 1, 0, 9, 1, 2, 3, 4, 5, 6};
    const uint8_t r8[] = {5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0};
    if (!expect_reply_close(f->p_open, atyp, sizeof atyp, r8, sizeof r8)) {
        bad |= 1 << 4;
    }
    const uint8_t nul[] = {5, 1, 0, 5, 1, 0, 3, 3, 'a', 0, 'b', 0, 80};
    const uint8_t r1[] = {5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0};
    if (!expect_reply_close(f->p_open, nul, sizeof nul, r1, sizeof r1)) {
        bad |= 1 << 5;
    }
    if (!expect_reply_close(f->p_open, "\x04\x01\x00", 3, NULL, 0)) {
        bad |= 1 << 6; /* SOCKS4 / bad version: closed without a reply */
    }
    if (!expect_reply_close(f->p_open, "\x05\x01\x02", 3, "\x05\xff", 2)) {
        bad |= 1 << 7; /* no acceptable method */
    }
    /* 3. A closed port gives "connection refused". */
    {
        const uint8_t m[] = {5,
                             1,
                             0,
                             5,
                             1,
                             0,
                             1,
                             127,
                             0,
                             0,
                             1,
                             (uint8_t)(f->closed_port >> 8),
                             (uint8_t)f->closed_port};
        const uint8_t r5[] = {5, 0, 5, 5, 0, 1, 0, 0, 0, 0, 0, 0};
        if (!expect_reply_close(f->p_open, m, sizeof m, r5, sizeof r5)) {
            bad |= 1 << 8;
        }
    }
    /* 4. Every egress error code and its reply. */
    if (!reply_for(f, KM_ERR_REFUSED, 2) || !reply_for(f, KM_ERR_NOT_FOUND, 4) ||
        !reply_for(f, KM_ERR_UNREACHABLE, 4) || !reply_for(f, -EHOSTUNREACH, 4) ||
        !reply_for(f, -ENETUNREACH, 3) || !reply_for(f, -ECONNREFUSED, 5) ||
        !reply_for(f, -ETIMEDOUT, 6) || !reply_for(f, -EIO, 1)) {
        bad |= 1 << 9;
    }
    /* 5. Username/password: right, wrong (same length), wrong length, no method offered. */
    {
        int fd = tcp_connect(f->p_auth);
        uint8_t m[] = {5,
                       1,
                       2,
                       1,
                       5,
                       'a',
                       'l',
                       'i',
                       'c',
                       'e',
                       3,
                       'p',
                       'w',
                       '1',
                       5,
                       1,
                       0,
                       1,
                       127,
                       0,
                       0,
                       1,
                       (uint8_t)(f->echo_port >> 8),
                       (uint8_t)f->echo_port};
        send_all(fd, m, sizeof m);
        uint8_t got[14];
        if (!recv_exact(fd, got, 14) || memcmp(got, "\x05\x02\x01\x00", 4) != 0 ||
            memcmp(got + 4, OK_REPLY, 10) != 0) {
            bad |= 1 << 10;
        }
        close(fd);
        const uint8_t wrong[] = {5, 1, 2, 1, 5, 'a', 'l', 'i', 'c', 'e', 3, 'p', 'w', '2'};
        const uint8_t wrong_len[] = {5, 1, 2, 1, 5, 'a', 'l', 'i', 'c', 'e', 2, 'p', 'w'};
        if (!expect_reply_close(f->p_auth, wrong, sizeof wrong, "\x05\x02\x01\x01", 4) ||
            !expect_reply_close(f->p_auth, wrong_len, sizeof wrong_len, "\x05\x02\x01\x01", 4) ||
            !expect_reply_close(f->p_auth, "\x05\x01\x00", 3, "\x05\xff", 2)) {
            bad |= 1 << 11;
        }
    }
    /* 6. A client that leaves while egress->open is pending cancels it. */
    {
        int fd = tcp_connect(f->p_pend);
        const uint8_t m[] = {5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80};
        send_all(fd, m, sizeof m);
        uint8_t got[2];
        if (!recv_exact(fd, got, 2)) {
            bad |= 1 << 12;
        }
        usleep(100000);
        close(fd);
    }
    /* 7. Limits: one client at a time, and an idle client is dropped by the timeout. */
    {
        int a = tcp_connect(f->p_tiny);
        usleep(50000);
        int b = tcp_connect(f->p_tiny);
        if (!recv_eof(b)) {
            bad |= 1 << 13; /* over the limit: closed at once */
        }
        close(b);
        struct timeval t0, t1;
        gettimeofday(&t0, NULL);
        if (!recv_eof(a)) {
            bad |= 1 << 14; /* idle: closed by the 300 ms handshake timeout */
        }
        gettimeofday(&t1, NULL);
        long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
        if (ms < 150 || ms > 2000) {
            bad |= 1 << 14;
        }
        close(a);
    }
    usleep(100000); /* let the relays see the last EOFs */
    f->result = bad;
    uv_async_send(&f->done);
}

static uint16_t listen_port(struct km_socks5_server *s)
{
    struct sockaddr_storage ss;
    assert_int_equal(km_socks5_server_addr(s, &ss), 0);
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
    /* A port nobody listens on. */
    int tmp = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    assert_int_equal(bind(tmp, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(tmp, (struct sockaddr *)&a, &al), 0);
    f.closed_port = ntohs(a.sin_port);
    close(tmp);

    assert_int_equal(
        km_socks5_server_new(&f.loop, (struct sockaddr *)&lo, &f.eg.e, NULL, NULL, NULL, &f.open),
        0);
    assert_int_equal(km_socks5_server_new(&f.loop, (struct sockaddr *)&lo, &f.eg.e, "alice", "pw1",
                                          NULL, &f.auth),
                     0);
    assert_int_equal(km_socks5_server_new(&f.loop, (struct sockaddr *)&lo, &f.bad.e, NULL, NULL,
                                          NULL, &f.failing),
                     0);
    assert_int_equal(km_socks5_server_new(&f.loop, (struct sockaddr *)&lo, &f.hang.e, NULL, NULL,
                                          NULL, &f.pending),
                     0);
    struct km_socks5_limits lim = {.max_clients = 1, .handshake_timeout_ms = 300};
    assert_int_equal(
        km_socks5_server_new(&f.loop, (struct sockaddr *)&lo, &f.eg.e, NULL, NULL, &lim, &f.tiny),
        0);
    /* Bad credentials and a busy port fail cleanly. */
    struct km_socks5_server *x;
    assert_int_equal(
        km_socks5_server_new(&f.loop, (struct sockaddr *)&lo, &f.eg.e, "u", "", NULL, &x),
        KM_ERR_INVALID);
    assert_null(x);
    f.p_open = listen_port(f.open);
    f.p_auth = listen_port(f.auth);
    f.p_fail = listen_port(f.failing);
    f.p_pend = listen_port(f.pending);
    f.p_tiny = listen_port(f.tiny);
    struct sockaddr_in busy;
    assert_int_equal(uv_ip4_addr("127.0.0.1", f.p_open, &busy), 0);
    assert_int_not_equal(
        km_socks5_server_new(&f.loop, (struct sockaddr *)&busy, &f.eg.e, NULL, NULL, NULL, &x), 0);
    assert_null(x);

    uv_thread_t th;
    assert_int_equal(uv_thread_create(&th, client_thread, &f), 0);
    assert_int_equal(uv_run(&f.loop, UV_RUN_DEFAULT), 0);
    uv_thread_join(&th);
    if (f.result != 0) {
        fail_msg("client checks failed: mask 0x%x", (unsigned)f.result);
    }
    assert_int_equal(f.hang.opens, 1);
    assert_int_equal(f.hang.cancels, 1);
    assert_int_equal(f.eg.cancels, 0);
    assert_int_equal(uv_loop_close(&f.loop), 0);
}

int main(void)
{
    km_log_set_level(KM_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greeting), cmocka_unit_test(test_auth),
        cmocka_unit_test(test_request),  cmocka_unit_test(test_writers),
        cmocka_unit_test(test_rep_map),  cmocka_unit_test(test_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
