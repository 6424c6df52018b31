/* RFC 2136 UPDATE publisher tests: the built message parsed back with ldns (zone,
 * prerequisite, deletions, additions, TSIG verifying with the key), invalid options, a table
 * of hostile responses to km_dnsupdate_check, and the publisher on a real loop against an
 * in-process UDP server (answers, silence, retries, removal). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <ldns/ldns.h>
#include <uv.h>

#include "discovery/dnsupdate.h"
#include "identity/derive.h"

/* RFC 8032 section 7.1 test 1 (DESIGN.md section 3 test vector). */
static const struct km_pubkey key1 = {{0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7,
                                       0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
                                       0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25,
                                       0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a}};
#define ID1 "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena"
#define ZONE "m.example.test"
#define FQDN1 ID1 "." ZONE "."
#define SECRET "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ="
#define WRONG "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmct"
#define KEYNAME "keymesh-test."
#define ALG "hmac-sha256."

static void opts(struct km_dnsupdate_opts *o)
{
    km_dnsupdate_opts_default(o);
    memcpy(o->zone, ZONE, sizeof ZONE);
    memcpy(o->tsig_name, "keymesh-test", sizeof "keymesh-test");
    memcpy(o->tsig_secret, SECRET, sizeof SECRET);
    struct sockaddr_in *sin = (struct sockaddr_in *)&o->server;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(53);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

static void path4(struct km_path *p, enum km_path_kind kind, const char *ip, int port)
{
    memset(p, 0, sizeof *p);
    p->kind = kind;
    assert_int_equal(uv_ip4_addr(ip, port, (struct sockaddr_in *)&p->addr), 0);
}

static void path6(struct km_path *p, enum km_path_kind kind, const char *ip, int port)
{
    memset(p, 0, sizeof *p);
    p->kind = kind;
    assert_int_equal(uv_ip6_addr(ip, port, (struct sockaddr_in6 *)&p->addr), 0);
}

/* Four paths: lan (not public), punched v6, mapped v4, relay through key1 itself. */
static size_t sample_paths(struct km_path *p)
{
    path4(&p[0], KM_PATH_LAN, "10.0.0.5", 15022);
    path6(&p[1], KM_PATH_PUNCHED, "2001:db8::7", 4000);
    path4(&p[2], KM_PATH_MAPPED, "198.51.100.7", 15022);
    path4(&p[3], KM_PATH_RELAY, "203.0.113.9", 15022);
    p[3].via = key1;
    p[3].has_via = true;
    return 4;
}

static ldns_pkt *build(const struct km_dnsupdate_opts *o, bool remove, uint16_t id, uint8_t *wire,
                       size_t *wl, struct km_dnsupdate_req *req)
{
    struct km_path p[4];
    size_t n = sample_paths(p);
    struct km_buf out;
    km_buf_init_fixed(&out, wire, 65535);
    assert_int_equal(km_dnsupdate_build(o, &key1, p, n, remove, id, &out, req), 0);
    *wl = km_buf_len(&out);
    ldns_pkt *pkt = NULL;
    assert_int_equal(ldns_wire2pkt(&pkt, wire, *wl), LDNS_STATUS_OK);
    return pkt;
}

static void assert_rr(const ldns_rr *rr, const char *owner, ldns_rr_type type, ldns_rr_class cls,
                      uint32_t ttl)
{
    char *s = ldns_rdf2str(ldns_rr_owner(rr));
    assert_string_equal(s, owner);
    free(s);
    assert_int_equal(ldns_rr_get_type(rr), type);
    assert_int_equal(ldns_rr_get_class(rr), cls);
    if (ttl != UINT32_MAX) { /* a question has no TTL on the wire */
        assert_int_equal(ldns_rr_ttl(rr), ttl);
    }
}

static void test_build_publish(void **state)
{
    (void)state;
    struct km_dnsupdate_opts o;
    opts(&o);
    static uint8_t wire[65535];
    size_t wl = 0;
    struct km_dnsupdate_req req;
    ldns_pkt *p = build(&o, false, 0x1234, wire, &wl, &req);
    assert_int_equal(ldns_pkt_id(p), 0x1234);
    assert_int_equal(req.id, 0x1234);
    assert_int_equal(ldns_pkt_get_opcode(p), LDNS_PACKET_UPDATE);
    assert_false(ldns_pkt_qr(p));
    /* Zone section: the zone, SOA, IN. */
    assert_int_equal(ldns_rr_list_rr_count(ldns_pkt_question(p)), 1);
    assert_rr(ldns_rr_list_rr(ldns_pkt_question(p), 0), ZONE ".", LDNS_RR_TYPE_SOA,
              LDNS_RR_CLASS_IN, UINT32_MAX);
    /* Prerequisite: the SOA RRset exists. */
    assert_int_equal(ldns_rr_list_rr_count(ldns_pkt_answer(p)), 1);
    assert_rr(ldns_rr_list_rr(ldns_pkt_answer(p), 0), ZONE ".", LDNS_RR_TYPE_SOA, LDNS_RR_CLASS_ANY,
              0);
    assert_int_equal(ldns_rr_rd_count(ldns_rr_list_rr(ldns_pkt_answer(p), 0)), 0);
    /* Updates: three RRset deletions, AAAA, TXT, then SVCB mapped, punched, relay. */
    const ldns_rr_list *up = ldns_pkt_authority(p);
    assert_int_equal(ldns_rr_list_rr_count(up), 8);
    static const ldns_rr_type del[] = {LDNS_RR_TYPE_AAAA, LDNS_RR_TYPE_TXT, LDNS_RR_TYPE_SVCB};
    for (size_t i = 0; i < 3; i++) {
        assert_rr(ldns_rr_list_rr(up, i), FQDN1, del[i], LDNS_RR_CLASS_ANY, 0);
        assert_int_equal(ldns_rr_rd_count(ldns_rr_list_rr(up, i)), 0);
    }
    static const char *const want[] = {
        FQDN1 "\t60\tIN\tAAAA\tfd6b:21fe:31df:a154:a261:626b:f854:46f\n",
        FQDN1 "\t60\tIN\tTXT\t\"v=keymesh1 k=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"\n",
        FQDN1 "\t60\tIN\tSVCB\t1 . port=15022 ipv4hint=198.51.100.7 key65280=mapped\n",
        FQDN1 "\t60\tIN\tSVCB\t2 . port=4000 ipv6hint=2001:db8::7 key65280=punched\n",
        FQDN1 "\t60\tIN\tSVCB\t3 " FQDN1 " port=15022 ipv4hint=203.0.113.9 key65280=relay\n",
    };
    for (size_t i = 0; i < 5; i++) {
        char *s = ldns_rr2str(ldns_rr_list_rr(up, 3 + i));
        assert_string_equal(s, want[i]);
        free(s);
    }
    /* TSIG: present, verifies with the key, not with another secret or name. */
    assert_non_null(ldns_pkt_tsig(p));
    assert_int_equal(req.mac_len, 2 + 32);
    assert_true(ldns_pkt_tsig_verify(p, wire, wl, KEYNAME, SECRET, NULL));
    ldns_pkt_free(p);
    p = build(&o, false, 0x1234, wire, &wl, &req);
    assert_false(ldns_pkt_tsig_verify(p, wire, wl, KEYNAME, WRONG, NULL));
    ldns_pkt_free(p);
    p = build(&o, false, 0x1234, wire, &wl, &req);
    assert_false(ldns_pkt_tsig_verify(p, wire, wl, "other-key.", SECRET, NULL));
    ldns_pkt_free(p);
}

static void test_build_remove(void **state)
{
    (void)state;
    struct km_dnsupdate_opts o;
    opts(&o);
    static uint8_t wire[65535];
    size_t wl = 0;
    struct km_dnsupdate_req req;
    ldns_pkt *p = build(&o, true, 7, wire, &wl, &req);
    const ldns_rr_list *up = ldns_pkt_authority(p);
    assert_int_equal(ldns_rr_list_rr_count(up), 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(ldns_rr_get_class(ldns_rr_list_rr(up, i)), LDNS_RR_CLASS_ANY);
        assert_int_equal(ldns_rr_rd_count(ldns_rr_list_rr(up, i)), 0);
    }
    assert_true(ldns_pkt_tsig_verify(p, wire, wl, KEYNAME, SECRET, NULL));
    ldns_pkt_free(p);
}

static void test_build_invalid(void **state)
{
    (void)state;
    uint8_t wire[4096];
    struct km_buf out;
    struct km_dnsupdate_req req;
    struct km_dnsupdate_opts o;
    struct {
        const char *field;
        const char *value;
    } bad[] = {
        {"secret", "not base64!"}, {"secret", ""},           {"name", ""}, {"zone", ""},
        {"zone", "a..b"},          {"alg", "hmac-nonsense"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        opts(&o);
        char *f = strcmp(bad[i].field, "secret") == 0 ? o.tsig_secret
                  : strcmp(bad[i].field, "name") == 0 ? o.tsig_name
                  : strcmp(bad[i].field, "zone") == 0 ? o.zone
                                                      : o.tsig_algorithm;
        memcpy(f, bad[i].value, strlen(bad[i].value) + 1);
        km_buf_init_fixed(&out, wire, sizeof wire);
        int r = km_dnsupdate_build(&o, &key1, NULL, 0, false, 1, &out, &req);
        if (r != KM_ERR_INVALID) {
            fail_msg("case %zu (%s=\"%s\"): %d", i, bad[i].field, bad[i].value, r);
        }
    }
    /* No room in out. */
    opts(&o);
    km_buf_init_fixed(&out, wire, 100);
    assert_int_equal(km_dnsupdate_build(&o, &key1, NULL, 0, false, 1, &out, &req),
                     KM_ERR_TOO_LARGE);
}

/* ---- responses ---- */

enum mutation {
    M_NONE,
    M_WRONG_ID,
    M_UNSIGNED,
    M_WRONG_SECRET,
    M_NO_REQUEST_MAC,
    M_TC,
    M_QUERY_BIT,
    M_TSIG_ERR,
};

/* A response to req's message: rcode, signed with secret over the request MAC unless the
 * mutation says otherwise. Written to resp; returns its length. */
static size_t respond(const uint8_t *wire, size_t wl, const struct km_dnsupdate_req *req,
                      ldns_pkt_rcode rcode, enum mutation m, uint16_t tsig_err, uint8_t *resp)
{
    ldns_pkt *q = NULL;
    assert_int_equal(ldns_wire2pkt(&q, wire, wl), LDNS_STATUS_OK);
    ldns_pkt *r = ldns_pkt_new();
    ldns_pkt_set_id(r, m == M_WRONG_ID ? (uint16_t)(req->id + 1) : req->id);
    ldns_pkt_set_opcode(r, LDNS_PACKET_UPDATE);
    ldns_pkt_set_qr(r, m != M_QUERY_BIT);
    ldns_pkt_set_tc(r, m == M_TC);
    ldns_pkt_set_rcode(r, (uint8_t)rcode);
    ldns_pkt_push_rr(r, LDNS_SECTION_QUESTION,
                     ldns_rr_clone(ldns_rr_list_rr(ldns_pkt_question(q), 0)));
    ldns_rdf *mac = ldns_rdf_new_frm_data(LDNS_RDF_TYPE_INT16_DATA, req->mac_len, req->mac);
    if (m == M_TSIG_ERR) {
        /* What a server sends when it cannot check our MAC: our TSIG with an error, no MAC. */
        ldns_rr *t = ldns_rr_clone(ldns_pkt_tsig(q));
        uint8_t empty[2] = {0, 0};
        ldns_rdf_deep_free(
            ldns_rr_set_rdf(t, ldns_rdf_new_frm_data(LDNS_RDF_TYPE_INT16_DATA, 2, empty), 3));
        ldns_rdf_deep_free(
            ldns_rr_set_rdf(t, ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, tsig_err), 5));
        ldns_pkt_set_tsig(r, t);
    } else if (m != M_UNSIGNED) {
        assert_int_equal(ldns_pkt_tsig_sign(r, KEYNAME, m == M_WRONG_SECRET ? WRONG : SECRET, 300,
                                            ALG, m == M_NO_REQUEST_MAC ? NULL : mac),
                         LDNS_STATUS_OK);
    }
    uint8_t *w = NULL;
    size_t len = 0;
    assert_int_equal(ldns_pkt2wire(&w, r, &len), LDNS_STATUS_OK);
    memcpy(resp, w, len);
    free(w);
    ldns_rdf_deep_free(mac);
    ldns_pkt_free(q);
    ldns_pkt_free(r);
    return len;
}

static void test_check_table(void **state)
{
    (void)state;
    static const struct {
        ldns_pkt_rcode rcode;
        enum mutation m;
        uint16_t tsig_err;
        enum km_dnsupdate_result want;
    } t[] = {
        {LDNS_RCODE_NOERROR, M_NONE, 0, KM_DNSUPDATE_OK},
        {LDNS_RCODE_NOTAUTH, M_NONE, 0, KM_DNSUPDATE_NOTAUTH},
        {LDNS_RCODE_REFUSED, M_NONE, 0, KM_DNSUPDATE_REFUSED},
        {LDNS_RCODE_SERVFAIL, M_NONE, 0, KM_DNSUPDATE_RCODE},
        {LDNS_RCODE_NOTZONE, M_NONE, 0, KM_DNSUPDATE_RCODE},
        {LDNS_RCODE_NOERROR, M_WRONG_ID, 0, KM_DNSUPDATE_WRONG_ID},
        {LDNS_RCODE_NOERROR, M_UNSIGNED, 0, KM_DNSUPDATE_BAD_RESPONSE},
        {LDNS_RCODE_REFUSED, M_UNSIGNED, 0, KM_DNSUPDATE_BAD_RESPONSE},
        {LDNS_RCODE_NOERROR, M_WRONG_SECRET, 0, KM_DNSUPDATE_BAD_RESPONSE},
        {LDNS_RCODE_NOERROR, M_NO_REQUEST_MAC, 0, KM_DNSUPDATE_BAD_RESPONSE},
        {LDNS_RCODE_NOERROR, M_TC, 0, KM_DNSUPDATE_TRUNCATED},
        {LDNS_RCODE_NOERROR, M_QUERY_BIT, 0, KM_DNSUPDATE_BAD_RESPONSE},
        {LDNS_RCODE_NOTAUTH, M_TSIG_ERR, 16, KM_DNSUPDATE_BADSIG},
        {LDNS_RCODE_NOTAUTH, M_TSIG_ERR, 17, KM_DNSUPDATE_BADKEY},
        {LDNS_RCODE_NOTAUTH, M_TSIG_ERR, 18, KM_DNSUPDATE_BADTIME},
        {LDNS_RCODE_NOTAUTH, M_TSIG_ERR, 99, KM_DNSUPDATE_BAD_RESPONSE},
    };
    struct km_dnsupdate_opts o;
    opts(&o);
    static uint8_t wire[65535], resp[65535];
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        size_t wl = 0;
        struct km_dnsupdate_req req;
        ldns_pkt_free(build(&o, false, (uint16_t)(100 + i), wire, &wl, &req));
        size_t rl = respond(wire, wl, &req, t[i].rcode, t[i].m, t[i].tsig_err, resp);
        enum km_dnsupdate_result got = km_dnsupdate_check(&o, &req, resp, rl);
        if (got != t[i].want) {
            fail_msg("case %zu: got %s, want %s", i, km_dnsupdate_result_name(got),
                     km_dnsupdate_result_name(t[i].want));
        }
        /* The same response checked with another secret never passes. */
        struct km_dnsupdate_opts w = o;
        memcpy(w.tsig_secret, WRONG, sizeof WRONG);
        if (t[i].want == KM_DNSUPDATE_OK) {
            assert_int_equal(km_dnsupdate_check(&w, &req, resp, rl), KM_DNSUPDATE_BAD_RESPONSE);
            /* Every truncation fails; so does a flipped bit in the MAC (the last TSIG
             * fields after it are original ID, error and other length: 6 bytes). */
            for (size_t cut = 0; cut < rl; cut++) {
                assert_int_not_equal(km_dnsupdate_check(&o, &req, resp, cut), KM_DNSUPDATE_OK);
            }
            resp[rl - 7] ^= 0x01;
            assert_int_equal(km_dnsupdate_check(&o, &req, resp, rl), KM_DNSUPDATE_BAD_RESPONSE);
        }
    }
}

static void test_result_names(void **state)
{
    (void)state;
    assert_string_equal(km_dnsupdate_result_name(KM_DNSUPDATE_OK), "ok");
    assert_string_equal(km_dnsupdate_result_name(KM_DNSUPDATE_BADSIG), "badsig");
    assert_string_equal(km_dnsupdate_result_name(KM_DNSUPDATE_TIMEOUT), "timeout");
    assert_string_equal(km_dnsupdate_result_name(KM_DNSUPDATE_RESULT_N), "?");
}

/* ---- the publisher on a loop ---- */

struct fake {
    uv_udp_t udp;
    struct km_dnsupdate_opts o; /* for the secret */
    ldns_pkt_rcode rcode;
    bool silent;
    unsigned seen;
    unsigned removals;
    uint8_t rbuf[65535];
    uint8_t resp[65535];
};

struct run {
    struct km_dnsupdate *u;
    enum km_dnsupdate_result results[8];
    unsigned n;
    bool done;
    enum km_dnsupdate_result done_r;
};

static void fake_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
    struct fake *f = h->data;
    (void)sz;
    *b = uv_buf_init((char *)f->rbuf, sizeof f->rbuf);
}

static void fake_sent(uv_udp_send_t *req, int status)
{
    (void)status;
    free(req);
}

static void fake_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *b, const struct sockaddr *from,
                      unsigned flags)
{
    struct fake *f = h->data;
    (void)b;
    (void)flags;
    if (nread <= 0 || from == NULL) {
        return;
    }
    f->seen++;
    ldns_pkt *q = NULL;
    assert_int_equal(ldns_wire2pkt(&q, f->rbuf, (size_t)nread), LDNS_STATUS_OK);
    /* The request must verify with the key, as a real server checks it. */
    assert_true(ldns_pkt_tsig_verify(q, f->rbuf, (size_t)nread, KEYNAME, SECRET, NULL));
    if (ldns_rr_list_rr_count(ldns_pkt_authority(q)) == 3) {
        f->removals++;
    }
    if (f->silent) {
        ldns_pkt_free(q);
        return;
    }
    struct km_dnsupdate_req req;
    memset(&req, 0, sizeof req);
    req.id = ldns_pkt_id(q);
    const ldns_rdf *mac = ldns_rr_rdf(ldns_pkt_tsig(q), 3);
    req.mac_len = ldns_rdf_size(mac);
    memcpy(req.mac, ldns_rdf_data(mac), req.mac_len);
    size_t rl = respond(f->rbuf, (size_t)nread, &req, f->rcode, M_NONE, 0, f->resp);
    ldns_pkt_free(q);
    uv_udp_send_t *s = malloc(sizeof *s);
    uv_buf_t out = uv_buf_init((char *)f->resp, (unsigned)rl);
    assert_int_equal(uv_udp_send(s, h, &out, 1, from, fake_sent), 0);
}

static void on_result(void *arg, enum km_dnsupdate_result r)
{
    struct run *run = arg;
    if (run->n < 8) {
        run->results[run->n] = r;
    }
    run->n++;
    /* After the first refresh cycle completes, remove. */
}

static void on_removed(void *arg, enum km_dnsupdate_result r)
{
    struct run *run = arg;
    run->done = true;
    run->done_r = r;
    km_dnsupdate_close(run->u);
}

static void run_until(uv_loop_t *loop, bool *flag, unsigned *count, unsigned want)
{
    for (int i = 0; i < 2000; i++) {
        if ((flag != NULL && *flag) || (count != NULL && *count >= want)) {
            return;
        }
        uv_run(loop, UV_RUN_ONCE);
    }
    fail_msg("loop did not get there");
}

static void fake_start(uv_loop_t *loop, struct fake *f, struct km_dnsupdate_opts *o)
{
    struct sockaddr_in a;
    assert_int_equal(uv_ip4_addr("127.0.0.1", 0, &a), 0);
    assert_int_equal(uv_udp_init(loop, &f->udp), 0);
    f->udp.data = f;
    assert_int_equal(uv_udp_bind(&f->udp, (const struct sockaddr *)&a, 0), 0);
    int len = sizeof o->server;
    assert_int_equal(uv_udp_getsockname(&f->udp, (struct sockaddr *)&o->server, &len), 0);
    assert_int_equal(uv_udp_recv_start(&f->udp, fake_alloc, fake_recv), 0);
}

static void test_loop_publish_refresh_remove(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    static struct fake f;
    memset(&f, 0, sizeof f);
    struct km_dnsupdate_opts o;
    opts(&o);
    fake_start(&loop, &f, &o);
    f.rcode = LDNS_RCODE_NOERROR;
    o.refresh_ms = 50;
    struct run run;
    memset(&run, 0, sizeof run);
    assert_int_equal(km_dnsupdate_new(&loop, &o, &key1, on_result, &run, &run.u), 0);
    struct km_path p[4];
    size_t n = sample_paths(p);
    assert_int_equal(km_dnsupdate_set_paths(run.u, p, n), 0);
    /* The first publish, then refreshes on their own. */
    run_until(&loop, NULL, &run.n, 3);
    assert_int_equal(run.results[0], KM_DNSUPDATE_OK);
    assert_int_equal(run.results[2], KM_DNSUPDATE_OK);
    /* New paths publish at once. */
    unsigned before = run.n;
    assert_int_equal(km_dnsupdate_set_paths(run.u, p, 1), 0);
    run_until(&loop, NULL, &run.n, before + 1);
    struct km_dnsupdate_stats st;
    km_dnsupdate_stats(run.u, &st);
    assert_true(st.ok >= 4);
    assert_int_equal(st.failed, 0);
    /* Removal, then nothing more. */
    km_dnsupdate_remove(run.u, on_removed, &run);
    assert_int_equal(km_dnsupdate_set_paths(run.u, p, 1), KM_ERR_INVALID);
    run_until(&loop, &run.done, NULL, 0);
    assert_int_equal(run.done_r, KM_DNSUPDATE_OK);
    assert_int_equal(f.removals, 1);
    uv_close((uv_handle_t *)&f.udp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_loop_refused_and_timeout(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    static struct fake f;
    memset(&f, 0, sizeof f);
    struct km_dnsupdate_opts o;
    opts(&o);
    fake_start(&loop, &f, &o);
    o.timeout_ms = 30;
    o.backoff_ms = 5;
    o.retries = 2;
    o.refresh_ms = 60000;
    /* REFUSED is final: no retry. */
    f.rcode = LDNS_RCODE_REFUSED;
    struct run run;
    memset(&run, 0, sizeof run);
    assert_int_equal(km_dnsupdate_new(&loop, &o, &key1, on_result, &run, &run.u), 0);
    assert_int_equal(km_dnsupdate_set_paths(run.u, NULL, 0), 0);
    run_until(&loop, NULL, &run.n, 1);
    assert_int_equal(run.results[0], KM_DNSUPDATE_REFUSED);
    assert_int_equal(f.seen, 1);
    /* Silence: the first attempt and two retries, then TIMEOUT. */
    f.silent = true;
    assert_int_equal(km_dnsupdate_set_paths(run.u, NULL, 0), 0);
    run_until(&loop, NULL, &run.n, 2);
    assert_int_equal(run.results[1], KM_DNSUPDATE_TIMEOUT);
    assert_int_equal(f.seen, 4);
    /* Removal times out too; closing before done means done is never called. */
    km_dnsupdate_remove(run.u, on_removed, &run);
    km_dnsupdate_close(run.u);
    uv_close((uv_handle_t *)&f.udp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_false(run.done);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_new_invalid(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct km_dnsupdate_opts o;
    opts(&o);
    struct km_dnsupdate *u = (struct km_dnsupdate *)&o;
    o.server.ss_family = AF_UNIX;
    assert_int_equal(km_dnsupdate_new(&loop, &o, &key1, NULL, NULL, &u), KM_ERR_INVALID);
    assert_null(u);
    opts(&o);
    memcpy(o.tsig_secret, "!!", 3);
    assert_int_equal(km_dnsupdate_new(&loop, &o, &key1, NULL, NULL, &u), KM_ERR_INVALID);
    km_dnsupdate_close(NULL);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_publish),
        cmocka_unit_test(test_build_remove),
        cmocka_unit_test(test_build_invalid),
        cmocka_unit_test(test_check_table),
        cmocka_unit_test(test_result_names),
        cmocka_unit_test(test_loop_publish_refresh_remove),
        cmocka_unit_test(test_loop_refused_and_timeout),
        cmocka_unit_test(test_new_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
