/* Unit tests for tun/tcpstack.c against the installed lwIP. These pin the lwIP internals the
 * "direct" approach relies on (docs/TUN.md): segments handed to tcp_input with ip_data filled
 * in, to an address lwIP was never given, must be answered from that address, completed into
 * a connection, and carry data both ways, FIN and RST. A change in Debian's lwIP that breaks
 * any of it fails here.
 *
 * The test plays the local program: it writes segments into the stack and reads what lwIP
 * sends back through the output hook. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "tests/unit/tun/pktgen.h"
#include "tun/tcpstack.h"

#define CLIENT "fd6b:1::1"
#define VIP "fd6b:4242:1:2:3:4:5:6" /* nobody configured this address anywhere */

#define MAX_OUT 64

struct world {
    uv_loop_t loop;
    struct km_tcpstack *st;
    uint8_t out[MAX_OUT][2048];
    size_t out_len[MAX_OUT];
    size_t n_out;
    struct km_stream *accepted;
    struct km_tcp_flow_id id;
    uint8_t got[4096];
    size_t n_got;
    int ended;
    int end_err;
    bool close_on_end;
};

static struct km_pkt_policy any_policy = {.prefix = 0xfd6b, .mtu = 1500};

static void on_output(void *arg, const struct iovec *iov, size_t n)
{
    struct world *w = arg;
    if (w->n_out == MAX_OUT) {
        return;
    }
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(w->out[w->n_out] + len, iov[i].iov_base, iov[i].iov_len);
        len += iov[i].iov_len;
    }
    w->out_len[w->n_out++] = len;
}

static void on_data(struct km_stream *s, const uint8_t *data, size_t len)
{
    struct world *w = s->data;
    memcpy(w->got + w->n_got, data, len);
    w->n_got += len;
}

static void on_end(struct km_stream *s, int err)
{
    struct world *w = s->data;
    w->ended++;
    w->end_err = err;
    if (w->close_on_end) {
        km_stream_close(s);
        w->accepted = NULL;
    }
}

static void on_accepted(void *arg, const struct km_tcp_flow_id *id, struct km_stream *s)
{
    struct world *w = arg;
    w->accepted = s;
    w->id = *id;
    s->data = w;
    s->on_data = on_data;
    s->on_end = on_end;
    km_stream_read_start(s);
}

static int setup(void **state)
{
    struct world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    assert_int_equal(uv_loop_init(&w->loop), 0);
    struct km_tcpstack_hooks h = {.output = on_output, .accepted = on_accepted, .arg = w};
    assert_int_equal(km_tcpstack_new(&w->loop, 1500, &h, &w->st), 0);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    km_stream_close(w->accepted);
    km_tcpstack_free(w->st);
    assert_int_equal(uv_run(&w->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&w->loop), 0);
    free(w);
    return 0;
}

static void spin(struct world *w)
{
    for (int i = 0; i < 4; i++) {
        uv_run(&w->loop, UV_RUN_NOWAIT);
    }
}

static void send_seg(struct world *w, const struct pg_tcp *t)
{
    uint8_t b[2048];
    size_t n = pg_tcp(b, t);
    struct km_pkt pk;
    assert_int_equal(km_pkt_parse(b, n, &any_policy, &pk), KM_PKT_TCP);
    assert_int_equal(km_tcpstack_input(w->st, &pk), 0);
    spin(w);
}

/* The last segment lwIP sent, parsed. */
static struct km_pkt last_out(struct world *w)
{
    assert_true(w->n_out > 0);
    struct km_pkt pk;
    assert_int_equal(km_pkt_parse(w->out[w->n_out - 1], w->out_len[w->n_out - 1], &any_policy, &pk),
                     KM_PKT_TCP);
    assert_true(km_pkt_l4_checksum_ok(&pk));
    return pk;
}

/* SYN to VIP:port; checks the SYN-ACK and completes the handshake. Returns lwIP's ISN + 1. */
static uint32_t handshake(struct world *w, uint16_t sport, uint16_t dport)
{
    send_seg(w, &(struct pg_tcp){.src = CLIENT,
                                 .dst = VIP,
                                 .sport = sport,
                                 .dport = dport,
                                 .seq = 100,
                                 .flags = KM_TCP_SYN});
    struct km_pkt sa = last_out(w);
    uint8_t vip[16], client[16];
    (void)inet_pton(AF_INET6, VIP, vip);
    (void)inet_pton(AF_INET6, CLIENT, client);
    assert_memory_equal(sa.src, vip, 16); /* answered from the address it was sent to */
    assert_memory_equal(sa.dst, client, 16);
    assert_int_equal(sa.sport, dport);
    assert_int_equal(sa.dport, sport);
    assert_int_equal(sa.flags, KM_TCP_SYN | KM_TCP_ACK);
    assert_int_equal(sa.ack, 101);
    assert_null(w->accepted);
    send_seg(w, &(struct pg_tcp){.src = CLIENT,
                                 .dst = VIP,
                                 .sport = sport,
                                 .dport = dport,
                                 .seq = 101,
                                 .ack = sa.seq + 1,
                                 .flags = KM_TCP_ACK});
    return sa.seq + 1;
}

static void test_any_address(void **state)
{
    struct world *w = *state;
    uint32_t iss = handshake(w, 40000, 8080);
    assert_non_null(w->accepted);
    assert_int_equal(w->id.sport, 40000);
    assert_int_equal(w->id.dport, 8080);
    uint8_t vip[16];
    (void)inet_pton(AF_INET6, VIP, vip);
    assert_memory_equal(w->id.dst, vip, 16);
    struct km_tcpstack_stats s;
    km_tcpstack_stats(w->st, &s);
    assert_int_equal(s.streams, 1);
    assert_int_equal(s.listeners, 1);
    assert_int_equal(s.accepted, 1);

    /* Data in: delivered to the stream and acknowledged. */
    send_seg(w, &(struct pg_tcp){.src = CLIENT,
                                 .dst = VIP,
                                 .sport = 40000,
                                 .dport = 8080,
                                 .seq = 101,
                                 .ack = iss,
                                 .flags = KM_TCP_ACK | KM_TCP_PSH,
                                 .data = "hello",
                                 .len = 5});
    assert_int_equal(w->n_got, 5);
    assert_memory_equal(w->got, "hello", 5);

    /* Data out: one segment from the VIP carrying it. */
    size_t before = w->n_out;
    assert_int_equal(km_stream_write(w->accepted, (const uint8_t *)"world!", 6), 0);
    spin(w);
    assert_true(w->n_out > before);
    struct km_pkt d = last_out(w);
    assert_int_equal(d.data_len, 6);
    assert_memory_equal(d.l4 + 20, "world!", 6);
    assert_int_equal(d.seq, iss);
    assert_int_equal(d.ack, 106);

    /* FIN in: a clean end of the stream. */
    send_seg(w, &(struct pg_tcp){.src = CLIENT,
                                 .dst = VIP,
                                 .sport = 40000,
                                 .dport = 8080,
                                 .seq = 106,
                                 .ack = iss + 6,
                                 .flags = KM_TCP_ACK | KM_TCP_FIN});
    assert_int_equal(w->ended, 1);
    assert_int_equal(w->end_err, 0);

    /* Shutdown out: lwIP sends FIN; then close is graceful (no RST). */
    km_stream_shutdown(w->accepted);
    spin(w);
    struct km_pkt fin = last_out(w);
    assert_true(fin.flags & KM_TCP_FIN);
    km_stream_close(w->accepted);
    w->accepted = NULL;
    spin(w);
    assert_false(last_out(w).flags & KM_TCP_RST);
    km_tcpstack_stats(w->st, &s);
    assert_int_equal(s.streams, 0);
}

static void test_rst_in(void **state)
{
    struct world *w = *state;
    uint32_t iss = handshake(w, 40001, 22);
    assert_non_null(w->accepted);
    w->close_on_end = true;
    send_seg(w, &(struct pg_tcp){.src = CLIENT,
                                 .dst = VIP,
                                 .sport = 40001,
                                 .dport = 22,
                                 .seq = 101,
                                 .ack = iss,
                                 .flags = KM_TCP_RST});
    assert_int_equal(w->ended, 1);
    assert_int_equal(w->end_err, -ECONNRESET);
    assert_null(w->accepted);
    struct km_tcpstack_stats s;
    km_tcpstack_stats(w->st, &s);
    assert_int_equal(s.resets, 1);
}

static void test_abortive_close(void **state)
{
    struct world *w = *state;
    handshake(w, 40002, 443);
    assert_non_null(w->accepted);
    /* Closing without shutdown resets the program's connection. */
    km_stream_close(w->accepted);
    w->accepted = NULL;
    spin(w);
    assert_true(last_out(w).flags & KM_TCP_RST);
}

static void test_backpressure(void **state)
{
    struct world *w = *state;
    uint32_t iss = handshake(w, 40003, 9000);
    assert_non_null(w->accepted);
    km_stream_read_stop(w->accepted);
    static const uint8_t chunk[1000];
    for (uint32_t i = 0; i < 3; i++) {
        send_seg(w, &(struct pg_tcp){.src = CLIENT,
                                     .dst = VIP,
                                     .sport = 40003,
                                     .dport = 9000,
                                     .seq = 101 + i * 1000,
                                     .ack = iss,
                                     .flags = KM_TCP_ACK,
                                     .data = chunk,
                                     .len = sizeof chunk});
    }
    assert_int_equal(w->n_got, 0); /* held while the consumer does not read */
    km_stream_read_start(w->accepted);
    spin(w);
    assert_int_equal(w->n_got, 3000);
}

static void test_send_buffer(void **state)
{
    struct world *w = *state;
    handshake(w, 40005, 9001);
    assert_non_null(w->accepted);
    /* lwIP takes more than its compiled-in 64 KiB send buffer (tcpstack.c raises the pcb's
     * snd_buf; its segment queue is then the limit). */
    static uint8_t big[200000];
    assert_int_equal(km_stream_write(w->accepted, big, sizeof big), 0);
    assert_true(km_stream_write_queue(w->accepted) < sizeof big - 65535 - 16384);
}

static void test_no_listener_for_non_syn(void **state)
{
    struct world *w = *state;
    /* A stray ACK for no connection: lwIP answers RST, nothing is accepted. */
    send_seg(w, &(struct pg_tcp){.src = CLIENT,
                                 .dst = VIP,
                                 .sport = 40004,
                                 .dport = 7,
                                 .seq = 5,
                                 .ack = 6,
                                 .flags = KM_TCP_ACK});
    assert_true(last_out(w).flags & KM_TCP_RST);
    assert_null(w->accepted);
}

static void test_one_stack(void **state)
{
    struct world *w = *state;
    struct km_tcpstack *second;
    struct km_tcpstack_hooks h = {.output = on_output, .accepted = on_accepted, .arg = w};
    assert_int_equal(km_tcpstack_new(&w->loop, 1500, &h, &second), KM_ERR_UNSUPPORTED);
    assert_null(second);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_any_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rst_in, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abortive_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_buffer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_listener_for_non_syn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_stack, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
