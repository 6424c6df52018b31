/* Fuzz target: km_dns_answer, the DNS server's whole pure path from query bytes to answer
 * bytes, against a fixed backend that knows an alias, a VIP and several paths. The first
 * byte chooses the transport (bit 0: TCP) and the requester class (bits 1-2); the rest is
 * the DNS message. Every answer must parse back and keep within the transport's size. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "discovery/dns.h"
#include "identity/derive.h"
#include "tests/fuzz/fuzz.h"

/* RFC 8032 section 7.1 test 1's public key. */
static const struct km_pubkey key1 = {{0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7,
                                       0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
                                       0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25,
                                       0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a}};

static int alias(void *arg, const char *label, struct km_pubkey *out)
{
    (void)arg;
    if (strcmp(label, "box") != 0) {
        return KM_ERR_NOT_FOUND;
    }
    *out = key1;
    return 0;
}

static int vip(void *arg, const uint8_t v[16], struct km_pubkey *out)
{
    uint8_t mine[16];
    (void)arg;
    km_vip(&key1, KM_DEFAULT_PREFIX, mine);
    if (memcmp(v, mine, 16) != 0) {
        return KM_ERR_NOT_FOUND;
    }
    *out = key1;
    return 0;
}

static size_t paths(void *arg, const struct km_pubkey *k, struct km_path *out, size_t max)
{
    (void)arg;
    (void)k;
    size_t n = 0;
    for (int i = 0; i < 40 && n < max; i++, n++) {
        memset(&out[n], 0, sizeof out[n]);
        out[n].kind = (enum km_path_kind)(i % KM_PATH_KIND_N);
        if (i % 2 == 0) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&out[n].addr;
            sin->sin_family = AF_INET;
            sin->sin_port = htons((uint16_t)(15022 + i));
            sin->sin_addr.s_addr = htonl(0xc0000200u + (uint32_t)i);
        } else {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out[n].addr;
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons(15022);
            sin6->sin6_addr.s6_addr[0] = 0xfe;
            sin6->sin6_addr.s6_addr[1] = 0x80;
            sin6->sin6_addr.s6_addr[15] = (uint8_t)i;
        }
        out[n].has_via = i % 3 != 0;
        out[n].via = key1;
    }
    return n;
}

static enum km_requester who;

static enum km_requester classify(void *arg, const struct sockaddr *from)
{
    (void)arg;
    (void)from;
    return who;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    struct km_dns_opts o;
    km_dns_opts_default(&o);
    struct km_dns_backend b = {alias, vip, paths, classify, NULL};
    bool tcp = (data[0] & 1) != 0;
    who = (enum km_requester)((data[0] >> 1) % 3);
    struct sockaddr_in from = {.sin_family = AF_INET};
    /* An exact-size copy so reading past the end is caught. */
    size_t len = size - 1;
    uint8_t *q = malloc(len > 0 ? len : 1);
    if (q == NULL) {
        return 0;
    }
    memcpy(q, data + 1, len);
    struct km_buf out;
    km_buf_init(&out, 65535);
    if (km_dns_answer(&o, &b, q, len, (const struct sockaddr *)&from, tcp, &out) == 0) {
        size_t n = km_buf_len(&out);
        ldns_pkt *p = NULL;
        if (n < 12 || (!tcp && n > o.udp_max) ||
            ldns_wire2pkt(&p, km_buf_peek_ptr(&out), n) != LDNS_STATUS_OK) {
            abort();
        }
        ldns_pkt_free(p);
    }
    km_buf_reset(&out);
    free(q);
    return 0;
}
