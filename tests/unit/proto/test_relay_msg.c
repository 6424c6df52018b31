/* Unit tests for proto/relay_msg.c: the frames a gateway sends down a registration channel.
 * A hostile table (every length at 0, max and max+1, truncations, bad families, port 0,
 * trailing bytes, unknown types), round trips, and several frames in one buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>

#include <cmocka.h>

#include "core/buf.h"
#include "proto/relay_msg.h"

#define N_ITEMS(a) (sizeof(a) / sizeof((a)[0]))

static void test_hostile(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        uint8_t bytes[64];
        size_t len;
        int want;
    } cases[] = {
        {"empty", {0}, 0, KM_ERR_INCOMPLETE},
        {"one length byte", {0}, 1, KM_ERR_INCOMPLETE},
        {"length 0", {0, 0}, 2, KM_ERR_INVALID},
        {"length above max", {0x02, 0x01}, 2, KM_ERR_TOO_LARGE},
        {"length 0xffff", {0xff, 0xff}, 2, KM_ERR_TOO_LARGE},
        {"truncated body", {0, 8, 1, 4, 192, 0, 2}, 7, KM_ERR_INCOMPLETE},
        {"v4 ok", {0, 8, 1, 4, 192, 0, 2, 11, 0x3a, 0xae}, 10, 0},
        {"v4 port 0", {0, 8, 1, 4, 192, 0, 2, 11, 0, 0}, 10, KM_ERR_INVALID},
        {"v4 short in frame", {0, 7, 1, 4, 192, 0, 2, 11, 0x3a}, 9, KM_ERR_INVALID},
        {"v4 trailing in frame", {0, 9, 1, 4, 192, 0, 2, 11, 0x3a, 0xae, 0}, 11, KM_ERR_INVALID},
        {"family 5", {0, 8, 1, 5, 192, 0, 2, 11, 0x3a, 0xae}, 10, KM_ERR_INVALID},
        {"family missing", {0, 1, 1}, 3, KM_ERR_INVALID},
        {"v6 ok",
         {0, 20, 1, 6, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 22},
         22,
         0},
        {"v6 as v4 length", {0, 8, 1, 6, 192, 0, 2, 11, 0x3a, 0xae}, 10, KM_ERR_INVALID},
        {"unknown type skipped, nothing after", {0, 3, 9, 1, 2}, 5, KM_ERR_INCOMPLETE},
        {"unknown type then v4", {0, 2, 200, 0, 0, 8, 1, 4, 198, 51, 100, 7, 0, 80}, 14, 0},
        {"unknown type then a bad length", {0, 1, 7, 0xff, 0xff}, 5, KM_ERR_TOO_LARGE},
        {"listen ok", {0, 3, 2, 0x3a, 0xae}, 5, 0},
        {"listen port 0", {0, 3, 2, 0, 0}, 5, KM_ERR_INVALID},
        {"listen short", {0, 2, 2, 0x3a}, 4, KM_ERR_INVALID},
        {"listen trailing", {0, 4, 2, 0x3a, 0xae, 0}, 6, KM_ERR_INVALID},
        {"punch request ok", {0, 33, 3, [3] = 0xaa, [34] = 0xbb}, 35, 0},
        {"punch request short key", {0, 32, 3, [3] = 0xaa}, 34, KM_ERR_INVALID},
        {"punch request trailing", {0, 34, 3, [3] = 0xaa}, 36, KM_ERR_INVALID},
        {"punch v4 ok", {0, 41, 4, [3] = 0xaa, [35] = 1, 4, 192, 0, 2, 11, 0x3a, 0xae}, 43, 0},
        {"punch unknown flag",
         {0, 41, 4, [3] = 0xaa, [35] = 3, 4, 192, 0, 2, 11, 0x3a, 0xae},
         43,
         KM_ERR_INVALID},
        {"punch port 0",
         {0, 41, 4, [3] = 0xaa, [35] = 0, 4, 192, 0, 2, 11, 0, 0},
         43,
         KM_ERR_INVALID},
        {"punch family 5",
         {0, 41, 4, [3] = 0xaa, [35] = 0, 5, 192, 0, 2, 11, 0x3a, 0xae},
         43,
         KM_ERR_INVALID},
        {"punch no address", {0, 34, 4, [3] = 0xaa, [35] = 0}, 36, KM_ERR_INVALID},
        {"punch trailing",
         {0, 42, 4, [3] = 0xaa, [35] = 1, 4, 192, 0, 2, 11, 0x3a, 0xae, 0},
         44,
         KM_ERR_INVALID},
    };
    for (size_t i = 0; i < N_ITEMS(cases); i++) {
        struct km_buf b;
        km_buf_init_view(&b, cases[i].bytes, cases[i].len);
        struct km_relay_msg m;
        int r = km_relay_msg_get(&b, &m);
        if (r != cases[i].want) {
            fail_msg("case %zu (%s): got %d, want %d", i, cases[i].what, r, cases[i].want);
        }
        if (r == 0) {
            assert_true(m.type >= KM_RELAY_MSG_REFLEXIVE && m.type <= KM_RELAY_MSG_PUNCH);
            assert_int_equal(km_buf_len(&b), 0);
        } else if (r != KM_ERR_INCOMPLETE) {
            assert_int_equal(m.addr.ss_family, 0); /* nothing half-filled */
            assert_int_equal(m.type, 0);
            assert_int_equal(m.key.b[0], 0);
        }
    }
}

static void test_round_trip(void **state)
{
    (void)state;
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(51156)};
    inet_pton(AF_INET, "192.0.2.11", &in.sin_addr);
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(15022)};
    inet_pton(AF_INET6, "2001:db8::7", &in6.sin6_addr);
    struct km_buf w;
    km_buf_init(&w, 256);
    assert_int_equal(km_relay_msg_put_reflexive(&w, (struct sockaddr *)&in), 0);
    assert_int_equal(km_relay_msg_put_reflexive(&w, (struct sockaddr *)&in6), 0);
    struct sockaddr_storage bad = {.ss_family = AF_UNIX};
    assert_int_equal(km_relay_msg_put_reflexive(&w, (struct sockaddr *)&bad), KM_ERR_INVALID);
    /* Fed one byte at a time, as a stream delivers: incomplete until each frame is whole. */
    struct km_buf in_buf;
    km_buf_init(&in_buf, 256);
    const uint8_t *all = km_buf_peek_ptr(&w);
    size_t total = km_buf_len(&w);
    int got = 0;
    for (size_t i = 0; i < total; i++) {
        assert_int_equal(km_buf_put_bytes(&in_buf, all + i, 1), 0);
        struct km_relay_msg m;
        int r = km_relay_msg_get(&in_buf, &m);
        if (r == KM_ERR_INCOMPLETE) {
            continue;
        }
        assert_int_equal(r, 0);
        if (got == 0) {
            assert_int_equal(m.addr.ss_family, AF_INET);
            assert_memory_equal(&((struct sockaddr_in *)&m.addr)->sin_addr, &in.sin_addr, 4);
            assert_int_equal(((struct sockaddr_in *)&m.addr)->sin_port, in.sin_port);
        } else {
            assert_int_equal(m.addr.ss_family, AF_INET6);
            assert_memory_equal(&((struct sockaddr_in6 *)&m.addr)->sin6_addr, &in6.sin6_addr, 16);
            assert_int_equal(((struct sockaddr_in6 *)&m.addr)->sin6_port, in6.sin6_port);
        }
        got++;
    }
    assert_int_equal(got, 2);
    km_buf_reset(&in_buf);
    km_buf_reset(&w);
}

/* The frames nodes send and the PUNCH frame: each parses back to what was put. */
static void test_punch_round_trip(void **state)
{
    (void)state;
    struct km_pubkey k;
    for (size_t i = 0; i < sizeof k.b; i++) {
        k.b[i] = (uint8_t)(i * 7 + 1);
    }
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(15022)};
    inet_pton(AF_INET, "192.0.2.12", &in.sin_addr);
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(7)};
    inet_pton(AF_INET6, "2001:db8::9", &in6.sin6_addr);
    struct km_buf w;
    km_buf_init(&w, 512);
    assert_int_equal(km_relay_msg_put_listen(&w, 15022), 0);
    assert_int_equal(km_relay_msg_put_listen(&w, 0), KM_ERR_INVALID);
    assert_int_equal(km_relay_msg_put_punch_request(&w, &k), 0);
    assert_int_equal(km_relay_msg_put_punch(&w, &k, (struct sockaddr *)&in, KM_RELAY_PUNCH_CLIENT),
                     0);
    assert_int_equal(km_relay_msg_put_punch(&w, &k, (struct sockaddr *)&in6, 0), 0);
    struct sockaddr_in zero = {.sin_family = AF_INET};
    assert_int_equal(km_relay_msg_put_punch(&w, &k, (struct sockaddr *)&zero, 0), KM_ERR_INVALID);
    assert_int_equal(km_relay_msg_put_punch(&w, &k, (struct sockaddr *)&in, 2), KM_ERR_INVALID);
    struct km_relay_msg m;
    assert_int_equal(km_relay_msg_get(&w, &m), 0);
    assert_int_equal(m.type, KM_RELAY_MSG_LISTEN);
    assert_int_equal(m.port, 15022);
    assert_int_equal(km_relay_msg_get(&w, &m), 0);
    assert_int_equal(m.type, KM_RELAY_MSG_PUNCH_REQUEST);
    assert_memory_equal(m.key.b, k.b, sizeof k.b);
    assert_int_equal(km_relay_msg_get(&w, &m), 0);
    assert_int_equal(m.type, KM_RELAY_MSG_PUNCH);
    assert_memory_equal(m.key.b, k.b, sizeof k.b);
    assert_int_equal(m.flags, KM_RELAY_PUNCH_CLIENT);
    assert_int_equal(m.addr.ss_family, AF_INET);
    assert_memory_equal(&((struct sockaddr_in *)&m.addr)->sin_addr, &in.sin_addr, 4);
    assert_int_equal(((struct sockaddr_in *)&m.addr)->sin_port, in.sin_port);
    assert_int_equal(km_relay_msg_get(&w, &m), 0);
    assert_int_equal(m.type, KM_RELAY_MSG_PUNCH);
    assert_int_equal(m.flags, 0);
    assert_int_equal(m.addr.ss_family, AF_INET6);
    assert_int_equal(((struct sockaddr_in6 *)&m.addr)->sin6_port, in6.sin6_port);
    assert_int_equal(km_relay_msg_get(&w, &m), KM_ERR_INCOMPLETE);
    km_buf_reset(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_punch_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
