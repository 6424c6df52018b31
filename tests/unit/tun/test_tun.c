/* Unit tests for tun/tun.c, the engine, with one end of a SOCK_SEQPACKET socketpair as the
 * device and a real TCP egress: the "known" VIP's streams are real loopback TCP connections
 * to an echo server this test runs (port 1: nothing listens, so the connect is refused).
 * Checks admission (SYN-ACK only after the stream opened, RST for a refused port, ICMPv6
 * unreachable for an unknown VIP), data end to end, ping, UDP, hostile packets, the flow
 * limit and the ICMP rate limit. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "core/uvstream.h"
#include "tests/unit/tun/pktgen.h"
#include "tun/tun.h"

#define SELF "fd6b:1::1"
#define KNOWN "fd6b:2::2"
#define UNKNOWN "fd6b:3::3"

/* ---- a real egress: TCP to 127.0.0.1 for the known VIP ---- */

struct req {
    struct km_egress_req *self_unused;
    km_egress_done_cb cb;
    void *arg;
    struct km_stream *s; /* connecting */
    uv_timer_t fail;     /* reports NOT_FOUND on the next turn */
    int err;
};

static void req_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_fail(uv_timer_t *t)
{
    struct req *r = t->data;
    r->cb(r->arg, r->err, NULL);
    uv_close((uv_handle_t *)&r->fail, req_closed);
}

static void on_connected(struct km_stream *s, int err, void *arg)
{
    struct req *r = arg;
    r->cb(r->arg, err, err == 0 ? s : NULL);
    uv_close((uv_handle_t *)&r->fail, req_closed);
}

static int eg_open(struct km_egress *e, const char *host, uint16_t port, const char *origin,
                   km_egress_done_cb cb, void *arg, struct km_egress_req **out)
{
    (void)origin;
    uv_loop_t *loop = e->data;
    struct req *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->cb = cb;
    r->arg = arg;
    assert_int_equal(uv_timer_init(loop, &r->fail), 0);
    r->fail.data = r;
    *out = (struct km_egress_req *)r;
    if (strcmp(host, KNOWN) != 0) {
        r->err = KM_ERR_NOT_FOUND;
        assert_int_equal(uv_timer_start(&r->fail, on_fail, 0, 0), 0);
        return 0;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return km_uvstream_connect(loop, (struct sockaddr *)&sa, 2000, on_connected, r, &r->s);
}

static void eg_cancel(struct km_egress *e, struct km_egress_req *req)
{
    (void)e;
    struct req *r = (struct req *)req;
    if (r->s != NULL && !uv_is_active((uv_handle_t *)&r->fail)) {
        km_stream_close(r->s); /* the connect callback will not run */
    }
    uv_close((uv_handle_t *)&r->fail, req_closed);
}

/* ---- an echo server ---- */

static void echo_data(struct km_stream *s, const uint8_t *d, size_t n)
{
    (void)km_stream_write(s, d, n);
}

static void echo_end(struct km_stream *s, int err)
{
    (void)err;
    km_stream_close(s);
}

static void on_echo_conn(uv_stream_t *l, int status)
{
    struct km_stream *s;
    if (status == 0 && km_uvstream_accept(l, &s) == 0) {
        s->on_data = echo_data;
        s->on_end = echo_end;
        km_stream_read_start(s);
    }
}

/* ---- the world ---- */

struct world {
    uv_loop_t loop;
    struct km_egress eg;
    struct km_tun *tun;
    int dev; /* the test's end of the "device" */
    uv_tcp_t *echo;
    uint16_t echo_port;
};

static bool known(void *arg, const uint8_t vip[16])
{
    (void)arg;
    uint8_t k[16];
    (void)inet_pton(AF_INET6, KNOWN, k);
    return memcmp(vip, k, 16) == 0;
}

/* A round trip for echoes: the known VIP answers on the next loop turn, as a peer over the
 * mesh would after its round trip; anything else is no node. */
struct rtt {
    uv_timer_t t;
    void (*done)(void *, int);
    void *arg;
};

static void rtt_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_rtt(uv_timer_t *t)
{
    struct rtt *r = t->data;
    r->done(r->arg, 0);
    uv_close((uv_handle_t *)&r->t, rtt_closed);
}

static int echo(void *arg, const uint8_t vip[16], void (*done)(void *, int), void *done_arg,
                void **handle)
{
    struct world *w = arg;
    if (!known(arg, vip)) {
        return KM_ERR_NOT_FOUND;
    }
    struct rtt *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->done = done;
    r->arg = done_arg;
    assert_int_equal(uv_timer_init(&w->loop, &r->t), 0);
    r->t.data = r;
    assert_int_equal(uv_timer_start(&r->t, on_rtt, 1, 0), 0);
    *handle = r;
    return 0;
}

static void echo_cancel(void *handle)
{
    struct rtt *r = handle;
    uv_close((uv_handle_t *)&r->t, rtt_closed);
}

static struct world *world_new(unsigned max_flows)
{
    struct world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    assert_int_equal(uv_loop_init(&w->loop), 0);
    w->eg = (struct km_egress){.open = eg_open, .cancel = eg_cancel, .data = &w->loop};
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(
        km_uvstream_listen_tcp(&w->loop, (struct sockaddr *)&sa, 64, on_echo_conn, w, &w->echo), 0);
    struct sockaddr_in bound;
    int len = sizeof bound;
    assert_int_equal(uv_tcp_getsockname(w->echo, (struct sockaddr *)&bound, &len), 0);
    w->echo_port = ntohs(bound.sin_port);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv), 0);
    w->dev = sv[0];
    struct km_tun_opts o;
    km_tun_opts_default(&o);
    snprintf(o.name, sizeof o.name, "test0");
    o.max_flows = max_flows;
    o.admit_timeout_ms = 1000;
    (void)inet_pton(AF_INET6, SELF, o.vip);
    struct km_tun_hooks h = {
        .egress = &w->eg, .known = known, .echo = echo, .echo_cancel = echo_cancel, .arg = w};
    assert_int_equal(km_tun_new_fd(&w->loop, sv[1], &o, &h, &w->tun), 0);
    assert_string_equal(km_tun_ifname(w->tun), "test0");
    return w;
}

static void world_free(struct world *w)
{
    km_tun_close(w->tun);
    km_uvstream_listener_close(w->echo);
    close(w->dev);
    for (int i = 0; i < 1000 && uv_run(&w->loop, UV_RUN_NOWAIT) != 0; i++) {
    }
    assert_int_equal(uv_loop_close(&w->loop), 0);
    free(w);
}

static void put(struct world *w, const uint8_t *p, size_t n)
{
    assert_int_equal(write(w->dev, p, n), (ssize_t)n);
}

/* Run the loop until the device has a packet for us (at most 3 s). Returns its length. */
static size_t get(struct world *w, uint8_t *out, size_t cap)
{
    for (int i = 0; i < 3000; i++) {
        ssize_t n = read(w->dev, out, cap);
        if (n > 0) {
            return (size_t)n;
        }
        uv_run(&w->loop, UV_RUN_NOWAIT);
        struct timespec ts = {.tv_nsec = 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Run the loop a little and return whether the device stayed silent. */
static bool silent(struct world *w)
{
    uint8_t b[2048];
    for (int i = 0; i < 50; i++) {
        uv_run(&w->loop, UV_RUN_NOWAIT);
        struct timespec ts = {.tv_nsec = 1000000};
        nanosleep(&ts, NULL);
    }
    return read(w->dev, b, sizeof b) < 0;
}

static struct km_pkt parse_out(const uint8_t *b, size_t n)
{
    static const struct km_pkt_policy any = {.prefix = 0xfd6b, .mtu = 65535};
    struct km_pkt pk;
    (void)km_pkt_parse(b, n, &any, &pk);
    return pk;
}

static size_t syn_to(uint8_t *b, const char *dst, uint16_t sport, uint16_t dport)
{
    return pg_tcp(b, &(struct pg_tcp){.src = SELF,
                                      .dst = dst,
                                      .sport = sport,
                                      .dport = dport,
                                      .seq = 1,
                                      .flags = KM_TCP_SYN});
}

static void test_connection_end_to_end(void **state)
{
    (void)state;
    struct world *w = world_new(16);
    uint8_t b[2048];
    put(w, b, syn_to(b, KNOWN, 5000, w->echo_port));
    size_t n = get(w, b, sizeof b);
    struct km_pkt sa = parse_out(b, n);
    assert_int_equal(sa.kind, KM_PKT_TCP);
    assert_int_equal(sa.flags, KM_TCP_SYN | KM_TCP_ACK);
    assert_int_equal(sa.ack, 2);
    put(w, b,
        pg_tcp(b, &(struct pg_tcp){.src = SELF,
                                   .dst = KNOWN,
                                   .sport = 5000,
                                   .dport = w->echo_port,
                                   .seq = 2,
                                   .ack = sa.seq + 1,
                                   .flags = KM_TCP_ACK | KM_TCP_PSH,
                                   .data = "ping!",
                                   .len = 5}));
    /* The echo comes back through the relay as a data segment (after a possible pure ACK). */
    struct km_pkt d = {0};
    for (int i = 0; i < 4 && d.data_len == 0; i++) {
        n = get(w, b, sizeof b);
        assert_int_not_equal(n, 0);
        d = parse_out(b, n);
    }
    assert_int_equal(d.data_len, 5);
    assert_memory_equal(d.l4 + 20, "ping!", 5);
    struct km_tun_stats st;
    km_tun_stats(w->tun, &st);
    assert_int_equal(st.flows_opened, 1);
    assert_int_equal(st.flows_live, 1);
    assert_int_equal(st.flows_pending, 0);
    world_free(w);
}

static void test_refused_and_unknown(void **state)
{
    (void)state;
    struct world *w = world_new(16);
    uint8_t b[2048];
    /* Port 1 on loopback: connection refused becomes a RST. */
    put(w, b, syn_to(b, KNOWN, 5001, 1));
    size_t n = get(w, b, sizeof b);
    struct km_pkt r = parse_out(b, n);
    assert_int_equal(r.kind, KM_PKT_TCP);
    assert_int_equal(r.flags, KM_TCP_RST | KM_TCP_ACK);
    assert_int_equal(r.ack, 2);
    /* An unknown VIP: ICMPv6 address unreachable quoting the SYN. */
    put(w, b, syn_to(b, UNKNOWN, 5002, 80));
    n = get(w, b, sizeof b);
    assert_true(n > 48);
    assert_int_equal(b[6], 58);
    assert_int_equal(b[40], 1);
    assert_int_equal(b[41], KM_ICMP6_UNREACH_ADDR);
    assert_int_equal(km_pkt_checksum6(b + 8, b + 24, 58, b + 40, n - 40), 0);
    struct km_tun_stats st;
    km_tun_stats(w->tun, &st);
    assert_int_equal(st.flows_refused, 1);
    assert_int_equal(st.flows_unreach, 1);
    assert_int_equal(st.flows_pending, 0);
    world_free(w);
}

static void test_ping_udp_hostile(void **state)
{
    (void)state;
    struct world *w = world_new(16);
    uint8_t b[2048];
    put(w, b, pg_icmp(b, SELF, KNOWN, 128, 0, 0x00010001, "abc", 3));
    size_t n = get(w, b, sizeof b);
    assert_int_equal(b[40], 129);
    assert_int_equal(n, 40 + 8 + 3);
    put(w, b, pg_icmp(b, SELF, UNKNOWN, 128, 0, 0x00010002, "abc", 3));
    n = get(w, b, sizeof b);
    assert_int_equal(b[40], 1);
    assert_int_equal(b[41], KM_ICMP6_UNREACH_ADDR);
    /* UDP to a known VIP: port unreachable. */
    pg_ip6(b, SELF, KNOWN, 8, 17);
    memset(b + 40, 0, 8);
    put(w, b, 48);
    n = get(w, b, sizeof b);
    assert_int_equal(b[41], KM_ICMP6_UNREACH_PORT);
    /* Hostile packets: silence, counted. */
    static const uint8_t v4[40] = {0x45};
    put(w, v4, sizeof v4);
    n = syn_to(b, KNOWN, 6000, 80);
    b[6] = 44;
    put(w, b, n);
    n = syn_to(b, "fd6b::99", 6001, 80);
    memcpy(b + 24, b + 8, 16);
    (void)inet_pton(AF_INET6, "fd6b::99", b + 8);
    put(w, b, n);
    put(w, b, 3);
    /* A SYN with a wrong checksum opens nothing. */
    n = syn_to(b, KNOWN, 6002, w->echo_port);
    b[n - 1] ^= 0x55;
    put(w, b, n);
    assert_true(silent(w));
    struct km_tun_stats st;
    km_tun_stats(w->tun, &st);
    assert_int_equal(st.drops[KM_PKT_NOT_IPV6], 1);
    assert_int_equal(st.drops[KM_PKT_EXT_HEADER], 1);
    assert_int_equal(st.drops[KM_PKT_BAD_SOURCE], 1);
    assert_int_equal(st.drops[KM_PKT_TRUNCATED], 1);
    assert_int_equal(st.drops[KM_PKT_BAD_TCP], 1);
    assert_int_equal(st.echo_replies, 1);
    assert_int_equal(st.flows_opened, 0);
    world_free(w);
}

static void test_close_with_echo_in_flight(void **state)
{
    (void)state;
    struct world *w = world_new(16);
    uint8_t b[2048];
    put(w, b, pg_icmp(b, SELF, KNOWN, 128, 0, 0x00010001, "abc", 3));
    put(w, b, syn_to(b, KNOWN, 5003, w->echo_port)); /* and a connection being opened */
    uv_run(&w->loop, UV_RUN_NOWAIT);
    struct km_tun_stats st;
    km_tun_stats(w->tun, &st);
    assert_int_equal(st.echo_replies, 0);
    world_free(w); /* cancels both; ASan and the loop-close check catch leftovers */
}

static void test_flow_limit(void **state)
{
    (void)state;
    struct world *w = world_new(1);
    uint8_t b[2048];
    /* The first SYN gets its SYN-ACK and holds the only slot (never completed here). */
    put(w, b, syn_to(b, KNOWN, 7000, w->echo_port));
    size_t n = get(w, b, sizeof b);
    assert_int_equal(parse_out(b, n).flags, KM_TCP_SYN | KM_TCP_ACK);
    /* The second is refused at once. */
    put(w, b, syn_to(b, KNOWN, 7001, w->echo_port));
    n = get(w, b, sizeof b);
    struct km_pkt r = parse_out(b, n);
    assert_int_equal(r.flags, KM_TCP_RST | KM_TCP_ACK);
    assert_int_equal(r.dport, 7001);
    struct km_tun_stats st;
    km_tun_stats(w->tun, &st);
    assert_int_equal(st.flows_limit, 1);
    assert_int_equal(st.flows_pending, 1);
    /* The held slot times out (admit_timeout 1 s, swept every second) and is free again. */
    for (int i = 0; i < 300 && st.flows_pending > 0; i++) {
        uv_run(&w->loop, UV_RUN_NOWAIT);
        struct timespec ts = {.tv_nsec = 10000000};
        nanosleep(&ts, NULL);
        km_tun_stats(w->tun, &st);
    }
    assert_int_equal(st.flows_pending, 0);
    assert_int_equal(st.flows_timeout, 1);
    world_free(w);
}

static void test_icmp_rate_limit(void **state)
{
    (void)state;
    struct world *w = world_new(16);
    uint8_t b[2048];
    pg_ip6(b, SELF, UNKNOWN, 8, 17);
    memset(b + 40, 0, 8);
    for (int i = 0; i < 120; i++) {
        put(w, b, 48);
    }
    for (int i = 0; i < 50; i++) {
        uv_run(&w->loop, UV_RUN_NOWAIT);
    }
    unsigned got = 0;
    uint8_t r[2048];
    while (read(w->dev, r, sizeof r) > 0 && got < 1000) {
        got++;
    }
    struct km_tun_stats st;
    km_tun_stats(w->tun, &st);
    /* The burst, plus what the 200/s refill allowed while the test ran. */
    assert_true(got >= 50 && got < 100);
    assert_int_equal(got + st.icmp_ratelimited, 120);
    world_free(w);
}

static void test_bad_options(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_tun_opts o;
    km_tun_opts_default(&o);
    o.mtu = 1000;
    struct km_egress eg = {.open = eg_open, .cancel = eg_cancel, .data = &loop};
    struct km_tun_hooks h = {
        .egress = &eg, .known = known, .echo = echo, .echo_cancel = echo_cancel};
    struct km_tun *t;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
    assert_int_equal(km_tun_new_fd(&loop, sv[1], &o, &h, &t), KM_ERR_INVALID);
    assert_null(t);
    assert_int_equal(fcntl(sv[1], F_GETFD), -1); /* the fd was closed */
    close(sv[0]);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connection_end_to_end),
        cmocka_unit_test(test_refused_and_unknown),
        cmocka_unit_test(test_ping_udp_hostile),
        cmocka_unit_test(test_close_with_echo_in_flight),
        cmocka_unit_test(test_flow_limit),
        cmocka_unit_test(test_icmp_rate_limit),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
