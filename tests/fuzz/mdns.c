/* Fuzz target: mDNS messages. The first byte picks the mode: bit 0 clear = the rest is a
 * response for km_mdns_parse_response; set = the rest is a query for km_mdns_answer, from port
 * 5353 (bit 1 clear) or a legacy port (bit 1 set). The input is copied to a heap buffer of
 * exactly its size so ASan catches reads past the counted length. Every answer we produce
 * must parse back into exactly our own instance. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/mdns.h"
#include "tests/fuzz/fuzz.h"

static struct km_mdns_instance inst[KM_MDNS_INSTANCES_MAX];

static void check(const struct km_mdns_instance *in, size_t n)
{
    if (n > KM_MDNS_INSTANCES_MAX) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        if (in[i].n_addrs > KM_MDNS_ADDRS_MAX || in[i].announcement_len > KM_ANNOUNCE_MAX) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    uint8_t mode = data[0];
    size_t len = size - 1;
    uint8_t *in = malloc(len == 0 ? 1 : len);
    if (in == NULL) {
        return 0;
    }
    if (len > 0) {
        memcpy(in, data + 1, len);
    }
    size_t n = 0;
    if ((mode & 1) == 0) {
        if (km_mdns_parse_response(in, len, inst, KM_MDNS_INSTANCES_MAX, &n, NULL) == 0) {
            check(inst, n);
        }
    } else {
        struct km_mdns_self s;
        memset(&s, 0, sizeof s);
        s.key.b[0] = 1; /* any 32 bytes are a node ID */
        s.port = 15022;
        struct sockaddr_in *a = (struct sockaddr_in *)&s.addrs[0];
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(0xc0000201u);
        struct sockaddr_in6 *b = (struct sockaddr_in6 *)&s.addrs[1];
        b->sin6_family = AF_INET6;
        b->sin6_addr.s6_addr[0] = 0xfe;
        b->sin6_addr.s6_addr[1] = 0x80;
        b->sin6_addr.s6_addr[15] = 1;
        s.n_addrs = 2;
        s.announcement = "a=AAAA";
        struct km_buf out;
        km_buf_init(&out, KM_MDNS_PKT_MAX);
        enum km_mdns_reply how;
        if (km_mdns_answer(&s, in, len, (mode & 2) ? 40000 : 5353, &out, &how) == 0 &&
            how != KM_MDNS_REPLY_NONE) {
            int r = km_mdns_parse_response(km_buf_peek_ptr(&out), km_buf_len(&out), inst,
                                           KM_MDNS_INSTANCES_MAX, &n, NULL);
            if (r != 0 || n > 1 || (n == 1 && memcmp(inst[0].key.b, s.key.b, 32) != 0)) {
                abort();
            }
        }
        km_buf_reset(&out);
    }
    free(in);
    return 0;
}
