/* DNS server tests: km_dns_answer from bytes to bytes (queries built and answers parsed with
 * ldns), a hostile-packet table, EDNS sizes, and the server on a real loop over loopback
 * (in-process sockets; "live" adds dig and kdig as child processes).
 *
 * Run without arguments for the in-process tests, with "live" for the ones that spawn. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <ldns/ldns.h>
#include <uv.h>

#include "discovery/dns.h"
#include "identity/derive.h"

/* RFC 8032 section 7.1 tests 1 and 2 (DESIGN.md section 3 test vectors). */
static const struct km_pubkey key1 = {{0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7,
                                       0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
                                       0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25,
                                       0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a}};
static const struct km_pubkey key2 = {{0x3d, 0x40, 0x17, 0xc3, 0xe8, 0x43, 0x89, 0x5a,
                                       0x92, 0xb7, 0x0a, 0xa7, 0x4d, 0x1b, 0x7e, 0xbc,
                                       0x9c, 0x98, 0x2c, 0xcf, 0x2e, 0xc4, 0x96, 0x8c,
                                       0xc0, 0xcd, 0x55, 0xf1, 0x2a, 0xf4, 0x66, 0x0c}};
#define ID1 "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena"
#define ID2 "hvabpq7iioevvevxbktu2g36xsojqlgpf3cjndgazvk7ckxumyga"
#define FQDN1 ID1 ".mesh.internal."
#define FQDN2 ID2 ".mesh.internal."
#define VIP1 "fd6b:21fe:31df:a154:a261:626b:f854:46f"
#define VIP2 "fd6b:39f7:13d0:a644:253f:452:9421:b9f5"
#define REV1 "f.6.4.0.4.5.8.f.b.6.2.6.1.6.2.a.4.5.1.a.f.d.1.3.e.f.1.2.b.6.d.f.ip6.arpa."

/* ---- the test backend ---- */

/* How many paths key2 has: each an IPv6 "mapped" address, to make answers large. */
static size_t many_paths = 40;

static int tb_alias(void *arg, const char *label, struct km_pubkey *out)
{
    (void)arg;
    if (strcmp(label, "box") == 0) {
        *out = key1;
        return 0;
    }
    if (strcmp(label, "work.team") == 0) {
        *out = key2;
        return 0;
    }
    return KM_ERR_NOT_FOUND;
}

static int tb_vip(void *arg, const uint8_t vip[16], struct km_pubkey *out)
{
    uint8_t v[16];
    (void)arg;
    km_vip(&key1, KM_DEFAULT_PREFIX, v);
    if (memcmp(v, vip, 16) == 0) {
        *out = key1;
        return 0;
    }
    /* A lying backend: claims key2 for any VIP ending in 0x77; the server must check. */
    if (vip[15] == 0x77) {
        *out = key2;
        return 0;
    }
    return KM_ERR_NOT_FOUND;
}

static void set4(struct km_path *p, enum km_path_kind kind, const char *ip, uint16_t port)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&p->addr;
    memset(p, 0, sizeof *p);
    p->kind = kind;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
}

static void set6(struct km_path *p, enum km_path_kind kind, const char *ip, uint16_t port)
{
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&p->addr;
    memset(p, 0, sizeof *p);
    p->kind = kind;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
}

static size_t tb_paths(void *arg, const struct km_pubkey *k, struct km_path *out, size_t max)
{
    (void)arg;
    size_t n = 0;
    if (km_pubkey_equal(k, &key1)) {
        /* Deliberately not in any ranking's order. */
        struct km_path p[4];
        set4(&p[0], KM_PATH_RELAY, "198.51.100.9", 15022);
        p[0].via = key2;
        p[0].has_via = true;
        set4(&p[1], KM_PATH_MAPPED, "203.0.113.7", 40000);
        set4(&p[2], KM_PATH_LAN, "192.168.1.10", 15022);
        set6(&p[3], KM_PATH_LINK_LOCAL, "fe80::1", 15022);
        for (; n < 4 && n < max; n++) {
            out[n] = p[n];
        }
        return n;
    }
    if (km_pubkey_equal(k, &key2)) {
        for (; n < many_paths && n < max; n++) {
            char ip[64];
            snprintf(ip, sizeof ip, "2001:db8::%zx", n + 1);
            set6(&out[n], KM_PATH_MAPPED, ip, 15022);
        }
    }
    return n;
}

/* 192.168.1.0/24 shares the node's link; everyone else is "other". */
static enum km_requester tb_classify(void *arg, const struct sockaddr *from)
{
    (void)arg;
    if (from->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)from;
        if ((ntohl(sin->sin_addr.s_addr) >> 8) == 0xc0a801) {
            return KM_REQ_SAME_LINK;
        }
    }
    return KM_REQ_OTHER;
}

static const struct km_dns_backend tb = {tb_alias, tb_vip, tb_paths, tb_classify, NULL};

static struct sockaddr_in from4(const char *ip)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(5353)};
    assert_int_equal(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
    return sin;
}

/* ---- helpers ---- */

/* A query for name/type as wire bytes (caller frees); edns 0: no OPT. */
static uint8_t *make_query(const char *name, ldns_rr_type type, uint16_t edns, size_t *len)
{
    ldns_rdf *qn = ldns_dname_new_frm_str(name);
    assert_non_null(qn);
    ldns_pkt *p = ldns_pkt_query_new(qn, type, LDNS_RR_CLASS_IN, LDNS_RD);
    assert_non_null(p);
    ldns_pkt_set_id(p, 0x4242);
    if (edns != 0) {
        ldns_pkt_set_edns_udp_size(p, edns);
    }
    uint8_t *w = NULL;
    assert_int_equal(ldns_pkt2wire(&w, p, len), LDNS_STATUS_OK);
    ldns_pkt_free(p);
    return w;
}

struct answer {
    int rc;
    uint8_t wire[65535];
    size_t len;
    ldns_pkt *p; /* NULL when rc != 0 */
};

static void ask_raw(const struct km_dns_opts *o, const uint8_t *q, size_t qlen, const char *from,
                    bool tcp, struct answer *a)
{
    struct sockaddr_in f = from4(from != NULL ? from : "203.0.113.99");
    struct km_buf out;
    km_buf_init(&out, 65535);
    a->p = NULL;
    a->len = 0;
    a->rc = km_dns_answer(o, &tb, q, qlen, (const struct sockaddr *)&f, tcp, &out);
    if (a->rc == 0) {
        a->len = km_buf_len(&out);
        memcpy(a->wire, km_buf_peek_ptr(&out), a->len);
        assert_int_equal(ldns_wire2pkt(&a->p, a->wire, a->len), LDNS_STATUS_OK);
    }
    km_buf_reset(&out);
}

static struct answer *ask(const char *name, ldns_rr_type type, uint16_t edns, const char *from,
                          bool tcp)
{
    static struct answer a;
    struct km_dns_opts o;
    size_t qlen = 0;
    km_dns_opts_default(&o);
    uint8_t *q = make_query(name, type, edns, &qlen);
    ask_raw(&o, q, qlen, from, tcp, &a);
    free(q);
    assert_int_equal(a.rc, 0);
    assert_true(ldns_pkt_qr(a.p));
    assert_int_equal(ldns_pkt_id(a.p), 0x4242);
    assert_false(ldns_pkt_ra(a.p));
    return &a;
}

static void done(struct answer *a)
{
    ldns_pkt_free(a->p);
    a->p = NULL;
}

static char *rdf_str(const ldns_rdf *f)
{
    char *s = ldns_rdf2str(f);
    assert_non_null(s);
    return s;
}

static void assert_rdf_str(const ldns_rdf *f, const char *want)
{
    char *s = rdf_str(f);
    assert_string_equal(s, want);
    free(s);
}

/* The negative-answer shape: no answers, the zone's SOA in authority. */
static void assert_negative(struct answer *a, ldns_pkt_rcode rcode, const char *zone)
{
    assert_int_equal(ldns_pkt_get_rcode(a->p), rcode);
    assert_true(ldns_pkt_aa(a->p));
    assert_int_equal(ldns_pkt_ancount(a->p), 0);
    assert_int_equal(ldns_pkt_nscount(a->p), 1);
    ldns_rr *soa = ldns_rr_list_rr(ldns_pkt_authority(a->p), 0);
    assert_int_equal(ldns_rr_get_type(soa), LDNS_RR_TYPE_SOA);
    assert_rdf_str(ldns_rr_owner(soa), zone);
    assert_int_equal(ldns_rr_ttl(soa), 60);
    assert_rdf_str(ldns_rr_rdf(soa, 0), "mesh.internal.");
    assert_rdf_str(ldns_rr_rdf(soa, 1), "hostmaster.mesh.internal.");
    assert_int_equal(ldns_rdf2native_int32(ldns_rr_rdf(soa, 6)), 60);
}

/* ---- positive answers ---- */

static void test_aaaa_vectors(void **state)
{
    (void)state;
    struct {
        const char *name, *vip;
    } v[] = {{FQDN1, VIP1},
             {FQDN2, VIP2},
             {"box.mesh.internal.", VIP1},
             {"Work.TEAM.mesh.internal.", VIP2}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        struct answer *a = ask(v[i].name, LDNS_RR_TYPE_AAAA, 0, NULL, false);
        assert_int_equal(ldns_pkt_get_rcode(a->p), LDNS_RCODE_NOERROR);
        assert_true(ldns_pkt_aa(a->p));
        assert_int_equal(ldns_pkt_ancount(a->p), 1);
        assert_int_equal(ldns_pkt_nscount(a->p), 0);
        ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_answer(a->p), 0);
        assert_int_equal(ldns_rr_get_type(rr), LDNS_RR_TYPE_AAAA);
        assert_int_equal(ldns_rr_ttl(rr), 60);
        assert_rdf_str(ldns_rr_owner(rr), v[i].name); /* the question's spelling */
        assert_rdf_str(ldns_rr_rdf(rr, 0), v[i].vip);
        done(a);
    }
    /* Upper-case node IDs are the same node. */
    char upper[] = FQDN1;
    for (size_t i = 0; i < KM_NODE_ID_LEN; i++) {
        upper[i] = (char)(upper[i] >= 'a' && upper[i] <= 'z' ? upper[i] - 32 : upper[i]);
    }
    struct answer *a = ask(upper, LDNS_RR_TYPE_AAAA, 0, NULL, false);
    assert_int_equal(ldns_pkt_ancount(a->p), 1);
    assert_rdf_str(ldns_rr_rdf(ldns_rr_list_rr(ldns_pkt_answer(a->p), 0), 0), VIP1);
    done(a);
}

static void test_txt(void **state)
{
    (void)state;
    struct answer *a = ask(FQDN1, LDNS_RR_TYPE_TXT, 0, NULL, false);
    assert_int_equal(ldns_pkt_ancount(a->p), 1);
    ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_answer(a->p), 0);
    assert_int_equal(ldns_rr_get_type(rr), LDNS_RR_TYPE_TXT);
    assert_int_equal(ldns_rr_rd_count(rr), 1);
    assert_rdf_str(ldns_rr_rdf(rr, 0),
                   "\"v=keymesh1 k=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"");
    done(a);
}

/* One expected SVCB record: priority, target, and the SvcParams bytes. */
static void assert_svcb(ldns_rr *rr, uint16_t prio, const char *target, const uint8_t *params,
                        size_t plen)
{
    assert_int_equal(ldns_rr_get_type(rr), LDNS_RR_TYPE_SVCB);
    assert_rdf_str(ldns_rr_owner(rr), FQDN1);
    assert_int_equal(ldns_rr_rd_count(rr), 3);
    assert_int_equal(ldns_rdf2native_int16(ldns_rr_rdf(rr, 0)), prio);
    assert_rdf_str(ldns_rr_rdf(rr, 1), target);
    ldns_rdf *p = ldns_rr_rdf(rr, 2);
    assert_int_equal(ldns_rdf_size(p), plen);
    assert_memory_equal(ldns_rdf_data(p), params, plen);
}

/* port 15022 (0x3aae), 40000 (0x9c40) */
static const uint8_t sp_ll[] = {
    0, 3, 0, 2, 0x3a, 0xae, 0,    6, 0, 16, 0xfe, 0x80, 0,   0,   0,   0,   0,   0,   0,   0,
    0, 0, 0, 0, 0,    1,    0xff, 0, 0, 10, 'l',  'i',  'n', 'k', '-', 'l', 'o', 'c', 'a', 'l'};
static const uint8_t sp_lan[] = {0,   3, 0,  2,    0x3a, 0xae, 0, 4,   0,   4,  192,
                                 168, 1, 10, 0xff, 0,    0,    3, 'l', 'a', 'n'};
static const uint8_t sp_mapped[] = {0,   3, 0,    2, 0x9c, 0x40, 0,   4,   0,   4,   203, 0,
                                    113, 7, 0xff, 0, 0,    6,    'm', 'a', 'p', 'p', 'e', 'd'};
static const uint8_t sp_relay[] = {0,   3, 0,    2, 0x3a, 0xae, 0,   4,   0,   4,   198, 51,
                                   100, 9, 0xff, 0, 0,    5,    'r', 'e', 'l', 'a', 'y'};

static void test_svcb_ranked_per_requester(void **state)
{
    (void)state;
    /* Same link: link-local, lan, mapped, relay. */
    struct answer *a = ask(FQDN1, LDNS_RR_TYPE_SVCB, 0, "192.168.1.5", false);
    assert_int_equal(ldns_pkt_get_rcode(a->p), LDNS_RCODE_NOERROR);
    assert_int_equal(ldns_pkt_ancount(a->p), 4);
    ldns_rr_list *l = ldns_pkt_answer(a->p);
    assert_svcb(ldns_rr_list_rr(l, 0), 1, ".", sp_ll, sizeof sp_ll);
    assert_svcb(ldns_rr_list_rr(l, 1), 2, ".", sp_lan, sizeof sp_lan);
    assert_svcb(ldns_rr_list_rr(l, 2), 3, ".", sp_mapped, sizeof sp_mapped);
    assert_svcb(ldns_rr_list_rr(l, 3), 4, FQDN2, sp_relay, sizeof sp_relay);
    /* RFC 9460 section 2.2: TargetName is not compressed, so the gateway's full name is on the
     * wire even though the owner already spelt "mesh.internal". */
    static const uint8_t target[] = "\x34" ID2 "\x04mesh\x08internal";
    bool found = false;
    for (size_t i = 0; i + sizeof target <= a->len; i++) {
        found = found || memcmp(a->wire + i, target, sizeof target) == 0;
    }
    assert_true(found);
    /* The printed form dig and kdig show. */
    char *s = ldns_rr2str(ldns_rr_list_rr(l, 0));
    assert_non_null(strstr(s, "SVCB\t1 . port=15022 ipv6hint=fe80::1 key65280=link-local"));
    free(s);
    done(a);

    /* Anyone else: mapped, relay; local addresses are left out. */
    a = ask(FQDN1, LDNS_RR_TYPE_SVCB, 0, "198.18.0.1", false);
    assert_int_equal(ldns_pkt_ancount(a->p), 2);
    l = ldns_pkt_answer(a->p);
    assert_svcb(ldns_rr_list_rr(l, 0), 1, ".", sp_mapped, sizeof sp_mapped);
    assert_svcb(ldns_rr_list_rr(l, 1), 2, FQDN2, sp_relay, sizeof sp_relay);
    done(a);

    /* No requester address at all: ranked as "other". */
    struct km_dns_opts o;
    size_t qlen = 0;
    km_dns_opts_default(&o);
    uint8_t *q = make_query(FQDN1, LDNS_RR_TYPE_SVCB, 0, &qlen);
    struct km_buf out;
    km_buf_init(&out, 65535);
    assert_int_equal(km_dns_answer(&o, &tb, q, qlen, NULL, false, &out), 0);
    ldns_pkt *p = NULL;
    assert_int_equal(ldns_wire2pkt(&p, km_buf_peek_ptr(&out), km_buf_len(&out)), LDNS_STATUS_OK);
    assert_int_equal(ldns_pkt_ancount(p), 2);
    ldns_pkt_free(p);
    km_buf_reset(&out);
    free(q);
}

static void test_ptr_and_reverse_zone(void **state)
{
    (void)state;
    struct answer *a = ask(REV1, LDNS_RR_TYPE_PTR, 0, NULL, false);
    assert_int_equal(ldns_pkt_get_rcode(a->p), LDNS_RCODE_NOERROR);
    assert_true(ldns_pkt_aa(a->p));
    assert_int_equal(ldns_pkt_ancount(a->p), 1);
    ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_answer(a->p), 0);
    assert_int_equal(ldns_rr_get_type(rr), LDNS_RR_TYPE_PTR);
    assert_rdf_str(ldns_rr_owner(rr), REV1);
    assert_rdf_str(ldns_rr_rdf(rr, 0), FQDN1);
    done(a);
    /* Same name, other type: NODATA. */
    a = ask(REV1, LDNS_RR_TYPE_AAAA, 0, NULL, false);
    assert_negative(a, LDNS_RCODE_NOERROR, "b.6.d.f.ip6.arpa.");
    done(a);
    /* A VIP nobody has; one the backend maps to a key that does not hash to it. */
    a = ask("0.6.4.0.4.5.8.f.b.6.2.6.1.6.2.a.4.5.1.a.f.d.1.3.e.f.1.2.b.6.d.f.ip6.arpa.",
            LDNS_RR_TYPE_PTR, 0, NULL, false);
    assert_negative(a, LDNS_RCODE_NXDOMAIN, "b.6.d.f.ip6.arpa.");
    done(a);
    a = ask("7.7.4.0.4.5.8.f.b.6.2.6.1.6.2.a.4.5.1.a.f.d.1.3.e.f.1.2.b.6.d.f.ip6.arpa.",
            LDNS_RR_TYPE_PTR, 0, NULL, false);
    assert_negative(a, LDNS_RCODE_NXDOMAIN, "b.6.d.f.ip6.arpa.");
    done(a);
    /* An empty non-terminal: NOERROR without data (RFC 8020). Bad nibbles: NXDOMAIN. */
    a = ask("1.2.b.6.d.f.ip6.arpa.", LDNS_RR_TYPE_PTR, 0, NULL, false);
    assert_negative(a, LDNS_RCODE_NOERROR, "b.6.d.f.ip6.arpa.");
    done(a);
    a = ask("x.2.b.6.d.f.ip6.arpa.", LDNS_RR_TYPE_PTR, 0, NULL, false);
    assert_negative(a, LDNS_RCODE_NXDOMAIN, "b.6.d.f.ip6.arpa.");
    done(a);
    a = ask("12.b.6.d.f.ip6.arpa.", LDNS_RR_TYPE_PTR, 0, NULL, false);
    assert_negative(a, LDNS_RCODE_NXDOMAIN, "b.6.d.f.ip6.arpa.");
    done(a);
    /* The apexes: SOA and NS. */
    a = ask("b.6.d.f.ip6.arpa.", LDNS_RR_TYPE_SOA, 0, NULL, false);
    assert_int_equal(ldns_pkt_ancount(a->p), 1);
    rr = ldns_rr_list_rr(ldns_pkt_answer(a->p), 0);
    assert_int_equal(ldns_rr_get_type(rr), LDNS_RR_TYPE_SOA);
    assert_rdf_str(ldns_rr_owner(rr), "b.6.d.f.ip6.arpa.");
    done(a);
    a = ask("mesh.internal.", LDNS_RR_TYPE_SOA, 0, NULL, false);
    assert_int_equal(ldns_pkt_ancount(a->p), 1);
    rr = ldns_rr_list_rr(ldns_pkt_answer(a->p), 0);
    assert_int_equal(ldns_rdf2native_int32(ldns_rr_rdf(rr, 2)), 1);
    done(a);
    a = ask("MESH.internal.", LDNS_RR_TYPE_NS, 0, NULL, false);
    assert_int_equal(ldns_pkt_ancount(a->p), 1);
    rr = ldns_rr_list_rr(ldns_pkt_answer(a->p), 0);
    assert_int_equal(ldns_rr_get_type(rr), LDNS_RR_TYPE_NS);
    /* ldns compresses the target against the question's spelling: same name. */
    char *ns = rdf_str(ldns_rr_rdf(rr, 0));
    assert_int_equal(strcasecmp(ns, "mesh.internal."), 0);
    free(ns);
    done(a);
}

static void test_negative_answers(void **state)
{
    (void)state;
    const char *nx[] = {"nope.mesh.internal.", "x." FQDN1, "a.box.mesh.internal.",
                        /* 52 characters but not a node ID (bad trailing bits) */
                        "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenb.mesh.internal.",
                        "bad\\000label.mesh.internal."};
    for (size_t i = 0; i < sizeof nx / sizeof nx[0]; i++) {
        struct answer *a = ask(nx[i], LDNS_RR_TYPE_AAAA, 0, NULL, false);
        assert_negative(a, LDNS_RCODE_NXDOMAIN, "mesh.internal.");
        done(a);
    }
    /* NODATA: the name exists, the type does not. */
    ldns_rr_type nodata[] = {LDNS_RR_TYPE_MX, LDNS_RR_TYPE_A, LDNS_RR_TYPE_HTTPS, LDNS_RR_TYPE_PTR};
    for (size_t i = 0; i < sizeof nodata / sizeof nodata[0]; i++) {
        struct answer *a = ask(FQDN1, nodata[i], 0, NULL, false);
        assert_negative(a, LDNS_RCODE_NOERROR, "mesh.internal.");
        done(a);
    }
    struct answer *a = ask("mesh.internal.", LDNS_RR_TYPE_AAAA, 0, NULL, false);
    assert_negative(a, LDNS_RCODE_NOERROR, "mesh.internal.");
    done(a);
    /* A node with no path usable by this requester: NODATA too. */
    many_paths = 0;
    a = ask(FQDN2, LDNS_RR_TYPE_SVCB, 0, NULL, false);
    assert_negative(a, LDNS_RCODE_NOERROR, "mesh.internal.");
    done(a);
    many_paths = 40;
}

static void test_refused(void **state)
{
    (void)state;
    const char *names[] = {"example.com.",
                           "internal.",
                           ".",
                           "mesh.internal.evil.com.",
                           "xmesh.internal.",
                           "c.6.d.f.ip6.arpa.",
                           "6.d.f.ip6.arpa.",
                           "1.0.0.127.in-addr.arpa."};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct answer *a = ask(names[i], LDNS_RR_TYPE_A, 0, NULL, false);
        assert_int_equal(ldns_pkt_get_rcode(a->p), LDNS_RCODE_REFUSED);
        assert_false(ldns_pkt_aa(a->p));
        assert_int_equal(ldns_pkt_ancount(a->p) + ldns_pkt_nscount(a->p), 0);
        assert_int_equal(ldns_pkt_qdcount(a->p), 1);
        done(a);
    }
    /* Zone transfers: refused. */
    struct answer *a = ask("mesh.internal.", LDNS_RR_TYPE_AXFR, 0, NULL, true);
    assert_int_equal(ldns_pkt_get_rcode(a->p), LDNS_RCODE_REFUSED);
    done(a);
    /* Class CHAOS (version.bind-style probes): refused. */
    ldns_pkt *p =
        ldns_pkt_query_new(ldns_dname_new_frm_str(FQDN1), LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_CH, 0);
    uint8_t *w = NULL;
    size_t wl = 0;
    assert_int_equal(ldns_pkt2wire(&w, p, &wl), LDNS_STATUS_OK);
    ldns_pkt_free(p);
    struct km_dns_opts o;
    km_dns_opts_default(&o);
    static struct answer b;
    ask_raw(&o, w, wl, NULL, false, &b);
    free(w);
    assert_int_equal(b.rc, 0);
    assert_int_equal(ldns_pkt_get_rcode(b.p), LDNS_RCODE_REFUSED);
    done(&b);
}

static void test_any_is_minimal(void **state)
{
    (void)state;
    const char *names[] = {FQDN1, "mesh.internal.", REV1};
    for (size_t i = 0; i < 3; i++) {
        struct answer *a = ask(names[i], LDNS_RR_TYPE_ANY, 0, NULL, i == 2);
        assert_int_equal(ldns_pkt_get_rcode(a->p), LDNS_RCODE_NOERROR);
        assert_int_equal(ldns_pkt_ancount(a->p), 1);
        ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_answer(a->p), 0);
        assert_int_equal(ldns_rr_get_type(rr), LDNS_RR_TYPE_HINFO);
        assert_rdf_str(ldns_rr_rdf(rr, 0), "\"RFC8482\"");
        assert_rdf_str(ldns_rr_rdf(rr, 1), "\"\"");
        done(a);
    }
    struct answer *a = ask("nope.mesh.internal.", LDNS_RR_TYPE_ANY, 0, NULL, false);
    assert_negative(a, LDNS_RCODE_NXDOMAIN, "mesh.internal.");
    done(a);
}

/* ---- hostile packets ---- */

enum want {
    W_SILENT,
    W_FORMERR,
    W_NOTIMP,
};

static void expect(const uint8_t *q, size_t len, enum want w, const char *what)
{
    static struct answer a;
    struct km_dns_opts o;
    km_dns_opts_default(&o);
    struct km_buf out;
    km_buf_init(&out, 65535);
    int rc = km_dns_answer(&o, &tb, q, len, NULL, false, &out);
    if (w == W_SILENT) {
        if (rc != KM_ERR_INVALID || km_buf_len(&out) != 0) {
            fail_msg("%s: expected silence, got rc %d len %zu", what, rc, km_buf_len(&out));
        }
        km_buf_reset(&out);
        return;
    }
    if (rc != 0 || km_buf_len(&out) != 12) {
        fail_msg("%s: expected a 12-byte error, got rc %d len %zu", what, rc, km_buf_len(&out));
    }
    memcpy(a.wire, km_buf_peek_ptr(&out), 12);
    km_buf_reset(&out);
    /* ID echoed, QR=1, the rcode, and no records. */
    assert_memory_equal(a.wire, q, 2);
    assert_true((a.wire[2] & 0x80) != 0);
    unsigned rcode = a.wire[3] & 0xfu;
    if (rcode != (w == W_FORMERR ? 1u : 4u)) {
        fail_msg("%s: rcode %u", what, rcode);
    }
    assert_memory_equal(a.wire + 4, "\0\0\0\0\0\0\0\0", 8);
}

static void test_hostile_table(void **state)
{
    (void)state;
    size_t qlen = 0;
    uint8_t *q = make_query(FQDN1, LDNS_RR_TYPE_AAAA, 1232, &qlen);
    /* Every truncation of a valid query: silence without a header, FORMERR with one. */
    for (size_t n = 0; n < qlen; n++) {
        char what[64];
        snprintf(what, sizeof what, "truncated at %zu of %zu", n, qlen);
        expect(q, n, n < 12 ? W_SILENT : W_FORMERR, what);
    }
    /* The whole query is fine. */
    static struct answer a;
    struct km_dns_opts o;
    km_dns_opts_default(&o);
    ask_raw(&o, q, qlen, NULL, false, &a);
    assert_int_equal(a.rc, 0);
    done(&a);

    uint8_t buf[600];
    /* Trailing bytes. */
    memcpy(buf, q, qlen);
    buf[qlen] = 0;
    expect(buf, qlen + 1, W_FORMERR, "trailing byte");
    free(q);

    static const uint8_t hdr[12] = {0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    struct {
        const char *what;
        const uint8_t *tail;
        size_t tail_len;
        uint8_t flags_hi, qd, an, ar;
        enum want w;
    } t[] = {
        {"pointer to itself", (const uint8_t *)"\xc0\x0c\0\1\0\1", 6, 0x01, 1, 0, 0, W_FORMERR},
        {"forward pointer", (const uint8_t *)"\xc0\x12\0\1\0\1\0\0", 8, 0x01, 1, 0, 0, W_FORMERR},
        {"pointer into the header", (const uint8_t *)"\xc0\x02\0\1\0\1", 6, 0x01, 1, 0, 0,
         W_FORMERR},
        /* The question "a.", then an answer RR whose name is label "b" + pointer to itself. */
        {"pointer loop in a record",
         (const uint8_t *)"\1a\0\0\1\0\1\1b\xc0\x13\0\1\0\1\0\0\0\0\0\0", 22, 0x01, 1, 1, 0,
         W_FORMERR},
        {"label length 64",
         (const uint8_t
              *)"\x40xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\0\0\1\0\1",
         69, 0x01, 1, 0, 0, W_FORMERR},
        {"label type 0x40", (const uint8_t *)"\x41\0\0\1\0\1", 6, 0x01, 1, 0, 0, W_FORMERR},
        {"label type 0x80", (const uint8_t *)"\x81\0\0\1\0\1", 6, 0x01, 1, 0, 0, W_FORMERR},
        {"qdcount 0", (const uint8_t *)"", 0, 0x01, 0, 0, 0, W_FORMERR},
        {"qdcount 2", (const uint8_t *)"\1a\0\0\1\0\1\1b\0\0\1\0\1", 14, 0x01, 2, 0, 0, W_FORMERR},
        {"qdcount 2, one question", (const uint8_t *)"\1a\0\0\1\0\1", 7, 0x01, 2, 0, 0, W_FORMERR},
        {"ancount beyond the data", (const uint8_t *)"\1a\0\0\1\0\1", 7, 0x01, 1, 200, 0,
         W_FORMERR},
        {"arcount beyond the data", (const uint8_t *)"\1a\0\0\1\0\1", 7, 0x01, 1, 0, 255,
         W_FORMERR},
        {"QR set", (const uint8_t *)"\1a\0\0\1\0\1", 7, 0x81, 1, 0, 0, W_SILENT},
        {"opcode IQUERY", (const uint8_t *)"\1a\0\0\1\0\1", 7, 0x09, 1, 0, 0, W_NOTIMP},
        {"opcode STATUS", (const uint8_t *)"\1a\0\0\1\0\1", 7, 0x11, 1, 0, 0, W_NOTIMP},
        {"opcode NOTIFY", (const uint8_t *)"\1a\0\0\6\0\1", 7, 0x21, 1, 0, 0, W_NOTIMP},
        {"opcode UPDATE", (const uint8_t *)"\1a\0\0\6\0\1", 7, 0x29, 1, 0, 0, W_NOTIMP},
        {"opcode UPDATE, garbage", (const uint8_t *)"\xff", 1, 0x29, 0, 0, 0, W_NOTIMP},
        {"two OPT records",
         (const uint8_t *)"\1a\0\0\1\0\1\0\0\x29\4\0\0\0\0\0\0\0\0\0\x29\4\0\0\0\0\0\0\0", 29, 0x01,
         1, 0, 2, W_FORMERR},
        {"OPT not owned by the root", (const uint8_t *)"\1a\0\0\1\0\1\1a\0\0\x29\4\0\0\0\0\0\0\0",
         20, 0x01, 1, 0, 1, W_FORMERR},
        {"OPT in the answer section", (const uint8_t *)"\1a\0\0\1\0\1\0\0\x29\4\0\0\0\0\0\0\0", 18,
         0x01, 1, 1, 0, W_FORMERR},
        {"EDNS option overrunning RDATA",
         (const uint8_t *)"\1a\0\0\1\0\1\0\0\x29\4\0\0\0\0\0\0\4\0\12\0\x09", 22, 0x01, 1, 0, 1,
         W_FORMERR},
        {"RDLENGTH overrunning the message",
         (const uint8_t *)"\1a\0\0\1\0\1\0\0\x29\4\0\0\0\0\0\0\x10", 18, 0x01, 1, 0, 1, W_FORMERR},
        {"A record with a 3-byte RDATA (ldns disagrees)",
         (const uint8_t *)"\1a\0\0\1\0\1\0\0\1\0\1\0\0\0\0\0\3\1\2\3", 21, 0x01, 1, 0, 1,
         W_FORMERR},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        memcpy(buf, hdr, 12);
        buf[2] = t[i].flags_hi;
        buf[5] = t[i].qd;
        buf[7] = t[i].an;
        buf[11] = t[i].ar;
        memcpy(buf + 12, t[i].tail, t[i].tail_len);
        expect(buf, 12 + t[i].tail_len, t[i].w, t[i].what);
    }

    /* A name over 255 bytes: five labels of 63 characters. */
    size_t n = 12;
    memcpy(buf, hdr, 12);
    for (int l = 0; l < 5; l++) {
        buf[n++] = 63;
        memset(buf + n, 'a', 63);
        n += 63;
    }
    buf[n++] = 0;
    memcpy(buf + n, "\0\1\0\1", 4);
    expect(buf, n + 4, W_FORMERR, "name of 321 bytes");

    /* A chain of 20 backward pointers (each to the previous one) in 20 answer records: each
     * name alone needs up to 20 jumps, beyond the limit. */
    memcpy(buf, hdr, 12);
    buf[7] = 20;
    n = 12;
    memcpy(buf + n, "\1a\0\0\1\0\1", 7);
    n += 7;
    size_t prev = 12;
    for (int i = 0; i < 20; i++) {
        size_t here = n;
        buf[n++] = (uint8_t)(0xc0 | (prev >> 8));
        buf[n++] = (uint8_t)prev;
        memcpy(buf + n, "\0\1\0\1\0\0\0\0\0\0", 10);
        n += 10;
        prev = here;
    }
    expect(buf, n, W_FORMERR, "pointer chain of 20");

    /* An invalid suffix in the options: silence (a configuration error, not the peer's). */
    km_dns_opts_default(&o);
    memcpy(o.suffix, "bad..suffix", 12);
    q = make_query(FQDN1, LDNS_RR_TYPE_AAAA, 0, &qlen);
    struct km_buf out;
    km_buf_init(&out, 65535);
    assert_int_equal(km_dns_answer(&o, &tb, q, qlen, NULL, false, &out), KM_ERR_INVALID);
    km_buf_reset(&out);
    free(q);
}

/* ---- sizes ---- */

static void test_edns_sizes(void **state)
{
    (void)state;
    /* 15 paths: about 800 bytes, beyond 512 and within 1232. */
    many_paths = 15;
    struct answer *a = ask(FQDN2, LDNS_RR_TYPE_SVCB, 0, NULL, false);
    assert_true(ldns_pkt_tc(a->p));
    assert_true(a->len <= 512);
    assert_true(ldns_pkt_ancount(a->p) > 0 && ldns_pkt_ancount(a->p) < 15);
    assert_false(ldns_pkt_edns(a->p)); /* no OPT without one in the query */
    done(a);
    a = ask(FQDN2, LDNS_RR_TYPE_SVCB, 4096, NULL, false);
    assert_false(ldns_pkt_tc(a->p));
    assert_true(a->len > 512);
    assert_int_equal(ldns_pkt_ancount(a->p), 15);
    assert_int_equal(ldns_pkt_edns_udp_size(a->p), 1232); /* OPT echoed with our size */
    done(a);
    /* An EDNS size below 512 means 512. */
    a = ask(FQDN2, LDNS_RR_TYPE_SVCB, 100, NULL, false);
    assert_true(ldns_pkt_tc(a->p));
    assert_true(a->len <= 512 && a->len > 400);
    done(a);
    a = ask(FQDN2, LDNS_RR_TYPE_SVCB, 0, NULL, true);
    assert_false(ldns_pkt_tc(a->p));
    assert_int_equal(ldns_pkt_ancount(a->p), 15);
    done(a);

    /* 40 paths: over 1232 bytes, so EDNS 4096 is capped at udp_max... */
    many_paths = 40;
    a = ask(FQDN2, LDNS_RR_TYPE_SVCB, 4096, NULL, false);
    assert_true(ldns_pkt_tc(a->p));
    assert_true(a->len <= 1232 && a->len > 1000);
    done(a);
    /* ...and an EDNS size in between is honoured exactly. */
    a = ask(FQDN2, LDNS_RR_TYPE_SVCB, 700, NULL, false);
    assert_true(ldns_pkt_tc(a->p));
    assert_true(a->len <= 700 && a->len > 600);
    done(a);
    /* TCP gets everything. */
    a = ask(FQDN2, LDNS_RR_TYPE_SVCB, 0, NULL, true);
    assert_false(ldns_pkt_tc(a->p));
    assert_int_equal(ldns_pkt_ancount(a->p), 40);
    assert_true(a->len > 1232);
    for (uint16_t i = 0; i < 40; i++) {
        ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_answer(a->p), i);
        assert_int_equal(ldns_rdf2native_int16(ldns_rr_rdf(rr, 0)), i + 1);
    }
    done(a);
    /* A larger udp_max lets it through UDP. */
    struct km_dns_opts o;
    km_dns_opts_default(&o);
    o.udp_max = 4096;
    size_t qlen = 0;
    uint8_t *q = make_query(FQDN2, LDNS_RR_TYPE_SVCB, 4096, &qlen);
    static struct answer b;
    ask_raw(&o, q, qlen, NULL, false, &b);
    free(q);
    assert_int_equal(b.rc, 0);
    assert_false(ldns_pkt_tc(b.p));
    assert_int_equal(ldns_pkt_ancount(b.p), 40);
    assert_int_equal(ldns_pkt_edns_udp_size(b.p), 4096);
    done(&b);
}

static void test_edns_badvers(void **state)
{
    (void)state;
    size_t qlen = 0;
    uint8_t *q = make_query(FQDN1, LDNS_RR_TYPE_AAAA, 1232, &qlen);
    /* The OPT record is last: its TTL's second byte is the version. */
    assert_int_equal(q[qlen - 11 + 2], 0x29);
    q[qlen - 11 + 6] = 1;
    static struct answer a;
    struct km_dns_opts o;
    km_dns_opts_default(&o);
    ask_raw(&o, q, qlen, NULL, false, &a);
    free(q);
    assert_int_equal(a.rc, 0);
    assert_int_equal(ldns_pkt_get_rcode(a.p), 0);
    assert_int_equal(ldns_pkt_edns_extended_rcode(a.p), 1); /* BADVERS = 16 */
    assert_int_equal(ldns_pkt_edns_version(a.p), 0);
    assert_int_equal(ldns_pkt_ancount(a.p), 0);
    done(&a);
}

/* ---- the server on a real loop, with in-process clients ---- */

static uv_loop_t loop;

static void run_for(unsigned ms)
{
    uint64_t until = uv_now(&loop) + ms;
    while (uv_now(&loop) < until) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(1000);
        uv_update_time(&loop);
    }
}

static struct km_dns_server *start(struct km_dns_opts *o)
{
    struct sockaddr_in a = from4("127.0.0.1");
    a.sin_port = 0;
    struct km_dns_server *s = NULL;
    assert_int_equal(km_dns_server_new(&loop, (const struct sockaddr *)&a, o, &tb, &s), 0);
    assert_non_null(s);
    assert_int_not_equal(km_dns_server_port(s), 0);
    return s;
}

static void stop(struct km_dns_server *s)
{
    km_dns_server_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static int client(int type, uint16_t port)
{
    int fd = socket(AF_INET, type, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = from4("127.0.0.1");
    a.sin_port = htons(port);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Read what is there without blocking. */
static size_t drain(int fd, uint8_t *buf, size_t cap)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + n, cap - n, MSG_DONTWAIT);
        if (r <= 0) {
            return n;
        }
        n += (size_t)r;
    }
}

static void test_server_udp_tcp(void **state)
{
    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_dns_opts o;
    km_dns_opts_default(&o);
    struct km_dns_server *s = start(&o);
    uint16_t port = km_dns_server_port(s);
    size_t qlen = 0;
    uint8_t *q = make_query(FQDN1, LDNS_RR_TYPE_AAAA, 0, &qlen);

    /* UDP */
    int u = client(SOCK_DGRAM, port);
    assert_int_equal(send(u, q, qlen, 0), (ssize_t)qlen);
    assert_int_equal(send(u, "\1\2\3", 3, 0), 3); /* no header: silence */
    run_for(100);
    static uint8_t buf[70000];
    ssize_t r = recv(u, buf, sizeof buf, MSG_DONTWAIT);
    assert_true(r > 12);
    ldns_pkt *p = NULL;
    assert_int_equal(ldns_wire2pkt(&p, buf, (size_t)r), LDNS_STATUS_OK);
    assert_int_equal(ldns_pkt_ancount(p), 1);
    ldns_pkt_free(p);
    assert_true(recv(u, buf, sizeof buf, MSG_DONTWAIT) < 0);
    close(u);

    /* TCP: two pipelined queries in one write, the second split from its length. */
    int t = client(SOCK_STREAM, port);
    uint8_t *big = make_query(FQDN2, LDNS_RR_TYPE_SVCB, 0, &qlen);
    uint8_t frames[1024];
    size_t fl = 0;
    for (int i = 0; i < 2; i++) {
        frames[fl++] = (uint8_t)(qlen >> 8);
        frames[fl++] = (uint8_t)qlen;
        memcpy(frames + fl, big, qlen);
        fl += qlen;
    }
    assert_int_equal(send(t, frames, fl - 5, 0), (ssize_t)(fl - 5));
    run_for(50);
    assert_int_equal(send(t, frames + fl - 5, 5, 0), 5);
    run_for(100);
    size_t got = drain(t, buf, sizeof buf);
    size_t off = 0;
    for (int i = 0; i < 2; i++) {
        assert_true(got - off >= 2);
        size_t len = (size_t)buf[off] << 8 | buf[off + 1];
        assert_true(got - off - 2 >= len);
        assert_int_equal(ldns_wire2pkt(&p, buf + off + 2, len), LDNS_STATUS_OK);
        assert_false(ldns_pkt_tc(p));
        assert_int_equal(ldns_pkt_ancount(p), 40);
        ldns_pkt_free(p);
        off += 2 + len;
    }
    assert_int_equal(off, got);
    close(t);
    free(big);
    free(q);

    struct km_dns_stats st;
    km_dns_server_stats(s, &st);
    assert_int_equal(st.queries, 4);
    assert_int_equal(st.dropped, 1);
    assert_int_equal(st.rate_limited, 0);
    stop(s);
}

/* One UDP query and its answer (waits for it). */
static size_t udp_ask(int u, const uint8_t *q, size_t qlen, uint8_t *buf, size_t cap)
{
    assert_int_equal(send(u, q, qlen, 0), (ssize_t)qlen);
    ssize_t r = -1;
    for (int i = 0; i < 200 && r < 0; i++) {
        run_for(2);
        r = recv(u, buf, cap, MSG_DONTWAIT);
    }
    assert_true(r > 12);
    return (size_t)r;
}

static size_t svcb_count(const uint8_t *buf, size_t len)
{
    ldns_pkt *p = NULL;
    assert_int_equal(ldns_wire2pkt(&p, buf, len), LDNS_STATUS_OK);
    size_t n = ldns_pkt_ancount(p);
    ldns_pkt_free(p);
    return n;
}

/* The UDP packet cache: the same query from the same source is answered from the cache with
 * its own ID; a different query is not; a change in the backend shows after PC_TTL_MS. */
static void test_server_packet_cache(void **state)
{
    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_dns_opts o;
    km_dns_opts_default(&o);
    struct km_dns_server *s = start(&o);
    int u = client(SOCK_DGRAM, km_dns_server_port(s));
    size_t saved = many_paths;
    many_paths = 2;
    size_t qlen = 0;
    uint8_t *q = make_query(FQDN2, LDNS_RR_TYPE_SVCB, 1232, &qlen);
    static uint8_t a1[4096], a2[4096];
    size_t l1 = udp_ask(u, q, qlen, a1, sizeof a1);
    assert_int_equal(svcb_count(a1, l1), 2);
    q[0] = 0xbe; /* a new ID, otherwise the same query */
    q[1] = 0xef;
    many_paths = 3; /* not seen until the cached answer is older than PC_TTL_MS */
    size_t l2 = udp_ask(u, q, qlen, a2, sizeof a2);
    assert_int_equal(l2, l1);
    assert_int_equal(a2[0], 0xbe);
    assert_int_equal(a2[1], 0xef);
    assert_memory_equal(a2 + 2, a1 + 2, l1 - 2);
    struct km_dns_stats st;
    km_dns_server_stats(s, &st);
    assert_int_equal(st.cache_hits, 1);

    /* Another type is another entry. */
    size_t tlen = 0;
    uint8_t *tq = make_query(FQDN2, LDNS_RR_TYPE_TXT, 1232, &tlen);
    (void)udp_ask(u, tq, tlen, a2, sizeof a2);
    km_dns_server_stats(s, &st);
    assert_int_equal(st.cache_hits, 1);

    run_for(1100);
    l2 = udp_ask(u, q, qlen, a2, sizeof a2);
    assert_int_equal(svcb_count(a2, l2), 3);
    km_dns_server_stats(s, &st);
    assert_int_equal(st.cache_hits, 1);
    assert_int_equal(st.queries, 4);

    many_paths = saved;
    close(u);
    free(tq);
    free(q);
    stop(s);
}

static void test_server_rate_limit(void **state)
{
    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_dns_opts o;
    km_dns_opts_default(&o);
    o.rate_limit = 5;
    struct km_dns_server *s = start(&o);
    size_t qlen = 0;
    uint8_t *q = make_query(FQDN1, LDNS_RR_TYPE_AAAA, 0, &qlen);
    int u = client(SOCK_DGRAM, km_dns_server_port(s));
    for (int i = 0; i < 20; i++) {
        assert_int_equal(send(u, q, qlen, 0), (ssize_t)qlen);
    }
    run_for(100);
    int answers = 0;
    uint8_t buf[512];
    while (recv(u, buf, sizeof buf, MSG_DONTWAIT) > 0) {
        answers++;
    }
    /* A burst of 5, and at most one more token refilled while the loop ran. */
    assert_true(answers >= 5 && answers <= 6);
    struct km_dns_stats st;
    km_dns_server_stats(s, &st);
    assert_int_equal(st.queries, 20);
    assert_int_equal(st.rate_limited, (uint64_t)(20 - answers));
    /* A second later the bucket is full again. */
    run_for(1100);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(send(u, q, qlen, 0), (ssize_t)qlen);
    }
    run_for(50);
    answers = 0;
    while (recv(u, buf, sizeof buf, MSG_DONTWAIT) > 0) {
        answers++;
    }
    assert_int_equal(answers, 5);
    close(u);
    free(q);
    stop(s);
}

static void test_server_tcp_limits(void **state)
{
    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_dns_opts o;
    km_dns_opts_default(&o);
    o.tcp_max_conns = 1;
    o.tcp_idle_ms = 200;
    struct km_dns_server *s = start(&o);
    uint16_t port = km_dns_server_port(s);
    int t1 = client(SOCK_STREAM, port);
    run_for(30);
    int t2 = client(SOCK_STREAM, port);
    run_for(30);
    uint8_t buf[16];
    /* The second connection is over the limit: closed at once (EOF). */
    assert_int_equal(recv(t2, buf, sizeof buf, MSG_DONTWAIT), 0);
    /* The first is still open, until it idles out. */
    assert_true(recv(t1, buf, sizeof buf, MSG_DONTWAIT) < 0);
    run_for(300);
    assert_int_equal(recv(t1, buf, sizeof buf, MSG_DONTWAIT), 0);
    close(t1);
    close(t2);
    /* A frame of garbage closes the connection; a real query then works on a new one. */
    int t3 = client(SOCK_STREAM, port);
    assert_int_equal(send(t3, "\0\3abc", 5, 0), 5);
    run_for(50);
    assert_int_equal(recv(t3, buf, sizeof buf, MSG_DONTWAIT), 0);
    close(t3);
    /* Closing the server with a connection open frees everything. */
    int t4 = client(SOCK_STREAM, port);
    run_for(30);
    stop(s);
    assert_int_equal(recv(t4, buf, sizeof buf, MSG_DONTWAIT), 0);
    close(t4);
}

static void test_server_bind_errors(void **state)
{
    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_dns_opts o;
    km_dns_opts_default(&o);
    struct km_dns_server *s = start(&o);
    struct sockaddr_in a = from4("127.0.0.1");
    a.sin_port = htons(km_dns_server_port(s));
    struct km_dns_server *s2 = (struct km_dns_server *)&a;
    assert_int_equal(km_dns_server_new(&loop, (const struct sockaddr *)&a, &o, &tb, &s2),
                     -EADDRINUSE);
    assert_null(s2);
    memcpy(o.suffix, "-bad", 5);
    a.sin_port = 0;
    assert_int_equal(km_dns_server_new(&loop, (const struct sockaddr *)&a, &o, &tb, &s2),
                     KM_ERR_INVALID);
    km_dns_server_close(NULL);
    stop(s);
}

/* ---- live: dig and kdig against the server ---- */

struct child {
    uv_process_t proc;
    uv_pipe_t out;
    char buf[8192];
    size_t len;
    int64_t status;
    int open;
};

static void child_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    struct child *c = h->data;
    (void)sz;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - 1 - c->len));
}

static void child_closed(uv_handle_t *h)
{
    struct child *c = h->data;
    c->open--;
}

static void child_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct child *c = st->data;
    (void)b;
    if (n > 0) {
        c->len += (size_t)n;
    } else if (n < 0) {
        uv_close((uv_handle_t *)st, child_closed);
    }
}

static void child_exit(uv_process_t *p, int64_t status, int sig)
{
    struct child *c = p->data;
    c->status = sig != 0 ? -sig : status;
    uv_close((uv_handle_t *)p, child_closed);
}

/* Run argv with the server on the loop; returns its stdout (static, NUL-terminated). */
static const char *run_tool(char **argv)
{
    static struct child c;
    memset(&c, 0, sizeof c);
    c.proc.data = &c;
    c.out.data = &c;
    assert_int_equal(uv_pipe_init(&loop, &c.out, 0), 0);
    uv_stdio_container_t io[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c.out},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    uv_process_options_t po = {
        .exit_cb = child_exit, .file = argv[0], .args = argv, .stdio = io, .stdio_count = 3};
    int r = uv_spawn(&loop, &c.proc, &po);
    if (r != 0) {
        uv_close((uv_handle_t *)&c.out, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        fail_msg("spawn %s: %s", argv[0], uv_strerror(r));
    }
    c.open = 2;
    assert_int_equal(uv_read_start((uv_stream_t *)&c.out, child_alloc, child_read), 0);
    while (c.open > 0) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    c.buf[c.len] = '\0';
    if (c.status != 0) {
        fail_msg("%s exited with %lld: %s", argv[0], (long long)c.status, c.buf);
    }
    return c.buf;
}

static void test_live_dig_kdig(void **state)
{
    (void)state;
    if (access("/usr/bin/dig", X_OK) != 0 || access("/usr/bin/kdig", X_OK) != 0) {
        skip();
    }
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_dns_opts o;
    km_dns_opts_default(&o);
    struct km_dns_server *s = start(&o);
    char port[8];
    snprintf(port, sizeof port, "%u", km_dns_server_port(s));
    const char *out;
    {
        char *argv[] = {"/usr/bin/dig", "@127.0.0.1", "-p",  port,   "+short",
                        "+tries=1",     "+time=2",    FQDN1, "AAAA", NULL};
        out = run_tool(argv);
        assert_string_equal(out, VIP1 "\n");
    }
    {
        char *argv[] = {"/usr/bin/dig", "@127.0.0.1", "-p",  port,  "+short", "+tcp",
                        "+tries=1",     "+time=2",    FQDN1, "TXT", NULL};
        out = run_tool(argv);
        assert_string_equal(out, "\"v=keymesh1 k=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"\n");
    }
    {
        char *argv[] = {"/usr/bin/dig", "@127.0.0.1", "-p", port, "+short",
                        "+tries=1",     "+time=2",    "-x", VIP1, NULL};
        out = run_tool(argv);
        assert_string_equal(out, FQDN1 "\n");
    }
    {
        /* The requester is 127.0.0.1: "other", so mapped then relay. */
        char *argv[] = {"/usr/bin/dig", "@127.0.0.1", "-p",  port,   "+short",
                        "+tries=1",     "+time=2",    FQDN1, "SVCB", NULL};
        out = run_tool(argv);
        assert_string_equal(out, "1 . port=40000 ipv4hint=203.0.113.7 key65280=\"mapped\"\n"
                                 "2 " FQDN2 " port=15022 ipv4hint=198.51.100.9 "
                                 "key65280=\"relay\"\n");
    }
    {
        /* Without EDNS over UDP the 40-path answer is truncated and dig retries over TCP. */
        char *argv[] = {"/usr/bin/dig", "@127.0.0.1", "-p",  port,   "+noedns",
                        "+tries=1",     "+time=2",    FQDN2, "SVCB", NULL};
        out = run_tool(argv);
        assert_non_null(strstr(out, "Truncated, retrying in TCP mode"));
        assert_non_null(strstr(out, "ANSWER: 40,"));
        assert_non_null(strstr(out, "flags: qr aa rd;"));
    }
    {
        char *argv[] = {"/usr/bin/dig", "@127.0.0.1",         "-p",   port, "+tries=1",
                        "+time=2",      "nope.mesh.internal", "AAAA", NULL};
        out = run_tool(argv);
        assert_non_null(strstr(out, "status: NXDOMAIN"));
        assert_non_null(strstr(out, "mesh.internal.\t\t60\tIN\tSOA\tmesh.internal. "
                                    "hostmaster.mesh.internal. 1 3600 600 86400 60"));
    }
    {
        char *argv[] = {"/usr/bin/dig", "@127.0.0.1",  "-p", port, "+tries=1",
                        "+time=2",      "example.com", "A",  NULL};
        out = run_tool(argv);
        assert_non_null(strstr(out, "status: REFUSED"));
    }
    {
        char *argv[] = {"/usr/bin/kdig", "@127.0.0.1",        "-p",   port, "+short",
                        "+tcp",          "box.mesh.internal", "AAAA", NULL};
        out = run_tool(argv);
        assert_string_equal(out, VIP1 "\n");
    }
    {
        char *argv[] = {"/usr/bin/kdig", "@127.0.0.1", "-p", port, "+short", FQDN1, "SVCB", NULL};
        out = run_tool(argv);
        if (strstr(out, "1 . port=40000 ipv4hint=203.0.113.7 key65280=\"mapped\"") == NULL) {
            fail_msg("kdig printed: %s", out);
        }
    }
    stop(s);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest pure[] = {
        cmocka_unit_test(test_aaaa_vectors),
        cmocka_unit_test(test_txt),
        cmocka_unit_test(test_svcb_ranked_per_requester),
        cmocka_unit_test(test_ptr_and_reverse_zone),
        cmocka_unit_test(test_negative_answers),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_any_is_minimal),
        cmocka_unit_test(test_hostile_table),
        cmocka_unit_test(test_edns_sizes),
        cmocka_unit_test(test_edns_badvers),
        cmocka_unit_test(test_server_udp_tcp),
        cmocka_unit_test(test_server_packet_cache),
        cmocka_unit_test(test_server_rate_limit),
        cmocka_unit_test(test_server_tcp_limits),
        cmocka_unit_test(test_server_bind_errors),
    };
    const struct CMUnitTest live[] = {
        cmocka_unit_test(test_live_dig_kdig),
    };
    if (argc > 1 && strcmp(argv[1], "live") == 0) {
        return cmocka_run_group_tests_name("dns_live", live, NULL, NULL);
    }
    return cmocka_run_group_tests_name("dns", pure, NULL, NULL);
}
