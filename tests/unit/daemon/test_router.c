/* The router: name resolution (FQDN, alias, peer label, VIP), the private-range rule, the
 * egress policy and the inbound policy hooks, against a parsed configuration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cap/cert.h"
#include "cap/store.h"
#include "core/daemon/router.h"
#include "core/log.h"
#include "identity/derive.h"

/* RFC 8032 test keys 1 and 2 (DESIGN.md section 3). */
#define N1 "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena"
#define N2 "hvabpq7iioevvevxbktu2g36xsojqlgpf3cjndgazvk7ckxumyga"
#define VIP1 "fd6b:21fe:31df:a154:a261:626b:f854:46f"
#define VIP2 "fd6b:39f7:13d0:a644:253f:452:9421:b9f5"

static const char conf_text[] = "[mesh]\n"
                                "expose = 22\n"
                                "[peer web]\n"
                                "node = " N1 "\n"
                                "address = 127.0.0.1:15022\n"
                                "expose = 8080\n"
                                "[peer " N2 "]\n"
                                "allow = false\n"
                                "exit = true\n";

struct fix {
    struct km_config *cfg;
    struct km_key *self;
    struct km_router *r;
    uv_loop_t loop;
};

static int setup(void **state)
{
    struct fix *f = calloc(1, sizeof *f);
    f->cfg = malloc(sizeof *f->cfg);
    km_config_defaults(f->cfg);
    char err[KM_CONF_ERR_LEN];
    if (km_config_parse(f->cfg, conf_text, sizeof conf_text - 1, "t.conf", err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    if (uv_loop_init(&f->loop) != 0 || km_key_generate(&f->self) != 0 ||
        km_router_new(&f->loop, f->cfg, km_key_pub(f->self), &f->r) != 0) {
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;
    km_router_free(f->r);
    km_key_free(f->self);
    free(f->cfg);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int r = uv_loop_close(&f->loop);
    free(f);
    return r;
}

static void test_resolve(void **state)
{
    struct fix *f = *state;
    struct km_pubkey k1, k2, self, got;
    assert_int_equal(km_node_id_parse(N1, strlen(N1), &k1), 0);
    assert_int_equal(km_node_id_parse(N2, strlen(N2), &k2), 0);
    self = *km_key_pub(f->self);
    char self_fqdn[KM_FQDN_MAX];
    char self_vip[KM_VIP_STRLEN];
    assert_int_equal(km_fqdn(&self, "mesh.internal", self_fqdn, sizeof self_fqdn), 0);
    km_vip_str(&self, KM_DEFAULT_PREFIX, self_vip);
    static const struct {
        const char *host;
        int want;
        int which; /* 1, 2, 3 = self */
    } cases[] = {
        {N1 ".mesh.internal", 0, 1},
        {N1 ".MESH.INTERNAL.", 0, 1},
        {"web.mesh.internal", 0, 1},
        {"WEB.mesh.internal", 0, 1},
        {N2 ".mesh.internal", 0, 2},
        {VIP1, 0, 1},
        {VIP2, 0, 2},
        {"nobody.mesh.internal", KM_ERR_NOT_FOUND, 0},
        {"a.b.mesh.internal", KM_ERR_NOT_FOUND, 0},
        {"fd6b::1", KM_ERR_NOT_FOUND, 0},
        {"example.com", KM_ERR_INVALID, 0},
        {"mesh.internal", KM_ERR_INVALID, 0},
        {"xmesh.internal", KM_ERR_INVALID, 0},
        {"2001:db8::1", KM_ERR_INVALID, 0},
        {"192.0.2.1", KM_ERR_INVALID, 0},
        {"", KM_ERR_INVALID, 0},
        {".", KM_ERR_INVALID, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r = km_router_resolve(f->r, cases[i].host, &got);
        if (r != cases[i].want) {
            fail_msg("'%s': got %d want %d", cases[i].host, r, cases[i].want);
        }
        if (r == 0) {
            const struct km_pubkey *want = cases[i].which == 1 ? &k1 : &k2;
            assert_true(km_pubkey_equal(&got, want));
        }
    }
    assert_int_equal(km_router_resolve(f->r, self_fqdn, &got), 0);
    assert_true(km_pubkey_equal(&got, &self));
    assert_int_equal(km_router_resolve(f->r, self_vip, &got), 0);
    assert_true(km_pubkey_equal(&got, &self));
}

static void test_private_ranges(void **state)
{
    (void)state;
    static const struct {
        const char *ip;
        bool priv;
    } cases[] = {
        {"127.0.0.1", true},
        {"10.1.2.3", true},
        {"172.16.0.1", true},
        {"172.31.255.255", true},
        {"172.32.0.1", false},
        {"192.168.1.1", true},
        {"169.254.169.254", true},
        {"100.64.0.1", true},
        {"100.128.0.1", false},
        {"0.0.0.0", true},
        {"224.0.0.1", true},
        {"255.255.255.255", true},
        {"8.8.8.8", false},
        {"192.0.2.1", false},
        {"::1", true},
        {"::", true},
        {"fe80::1", true},
        {"fd6b::1", true},
        {"fc00::1", true},
        {"ff02::1", true},
        {"::ffff:127.0.0.1", true},
        {"::ffff:8.8.8.8", false},
        {"2001:db8::1", false},
        {"2606:4700::1", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sockaddr_storage ss;
        if (uv_ip4_addr(cases[i].ip, 1, (struct sockaddr_in *)&ss) != 0) {
            assert_int_equal(uv_ip6_addr(cases[i].ip, 1, (struct sockaddr_in6 *)&ss), 0);
        }
        if (km_router_addr_is_private((struct sockaddr *)&ss) != cases[i].priv) {
            fail_msg("%s: want private=%d", cases[i].ip, cases[i].priv);
        }
    }
}

static void never_called(void *arg, int err, struct km_stream *s)
{
    (void)arg;
    (void)err;
    (void)s;
    fail_msg("egress callback ran");
}

struct result {
    bool done;
    int err;
};

static void record(void *arg, int err, struct km_stream *s)
{
    struct result *r = arg;
    r->done = true;
    r->err = err;
    km_stream_close(s);
}

static void test_egress_policy(void **state)
{
    struct fix *f = *state;
    struct km_egress *e = km_router_egress(f->r);
    struct km_egress_req *req;
    /* Default policy: refuse anything outside the mesh, synchronously. */
    assert_int_equal(e->open(e, "example.com", 80, "t", never_called, NULL, &req), KM_ERR_REFUSED);
    assert_int_equal(e->open(e, "192.0.2.1", 80, "t", never_called, NULL, &req), KM_ERR_REFUSED);
    /* A mesh name that is no node. */
    assert_int_equal(e->open(e, "nobody.mesh.internal", 80, "t", never_called, NULL, &req),
                     KM_ERR_NOT_FOUND);
    /* Direct egress still refuses private ranges, synchronously for literals. */
    f->cfg->egress = KM_EGRESS_DIRECT;
    assert_int_equal(e->open(e, "127.0.0.1", 80, "t", never_called, NULL, &req), KM_ERR_REFUSED);
    assert_int_equal(e->open(e, "10.0.0.1", 80, "t", never_called, NULL, &req), KM_ERR_REFUSED);
    /* With allow_private the connect is tried, and its outcome arrives asynchronously. */
    f->cfg->allow_private = true;
    struct result res = {0};
    assert_int_equal(e->open(e, "127.0.0.1", 1, "t", record, &res, &req), 0);
    assert_false(res.done);
    for (int i = 0; i < 1000 && !res.done; i++) {
        uv_run(&f->loop, UV_RUN_ONCE);
    }
    assert_true(res.done);
    assert_int_equal(res.err, UV_ECONNREFUSED);
    /* A cancelled request never calls back. */
    struct result res2 = {0};
    assert_int_equal(e->open(e, "127.0.0.1", 1, "t", record, &res2, &req), 0);
    e->cancel(e, req);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_false(res2.done);
    f->cfg->egress = KM_EGRESS_REFUSE;
    f->cfg->allow_private = false;
}

static void test_inbound_policy(void **state)
{
    struct fix *f = *state;
    struct km_ssh_hooks h;
    km_router_ssh_hooks(f->r, &h);
    struct km_pubkey k1, k2;
    assert_int_equal(km_node_id_parse(N1, strlen(N1), &k1), 0);
    assert_int_equal(km_node_id_parse(N2, strlen(N2), &k2), 0);
    struct km_key *stranger;
    assert_int_equal(km_key_generate(&stranger), 0);
    /* Login: listed and allowed, as user keymesh only. */
    assert_int_equal(h.authorize(h.arg, &k1, "keymesh"), 0);
    assert_int_equal(h.authorize(h.arg, &k1, "root"), KM_ERR_REFUSED);
    assert_int_equal(h.authorize(h.arg, &k2, "keymesh"), KM_ERR_REFUSED); /* allow = false */
    assert_int_equal(h.authorize(h.arg, km_key_pub(stranger), "keymesh"), KM_ERR_REFUSED);
    /* Streams: [mesh] expose for everyone allowed, the peer's own list for it. */
    assert_int_equal(h.allow_direct(h.arg, &k1, NULL, "localhost", 22), 0);
    assert_int_equal(h.allow_direct(h.arg, &k1, NULL, "localhost", 8080), 0);
    assert_int_equal(h.allow_direct(h.arg, &k1, NULL, "127.0.0.1", 8080), 0);
    assert_int_equal(h.allow_direct(h.arg, &k1, NULL, "localhost", 8081), KM_ERR_REFUSED);
    assert_int_equal(h.allow_direct(h.arg, &k1, NULL, "192.0.2.1", 22),
                     KM_ERR_REFUSED); /* no exit */
    assert_int_equal(h.allow_direct(h.arg, &k2, NULL, "localhost", 22),
                     KM_ERR_REFUSED); /* allow=0 */
    assert_int_equal(h.allow_direct(h.arg, km_key_pub(stranger), NULL, "localhost", 22),
                     KM_ERR_REFUSED);
    /* allow_unknown: a key with no [peer] logs in and opens [mesh] expose ports only. */
    f->cfg->allow_unknown = true;
    assert_int_equal(h.authorize(h.arg, km_key_pub(stranger), "keymesh"), 0);
    assert_int_equal(h.allow_direct(h.arg, km_key_pub(stranger), NULL, "localhost", 22), 0);
    assert_int_equal(h.allow_direct(h.arg, km_key_pub(stranger), NULL, "localhost", 8080),
                     KM_ERR_REFUSED);
    assert_int_equal(h.allow_direct(h.arg, km_key_pub(stranger), NULL, "192.0.2.1", 22),
                     KM_ERR_REFUSED);
    assert_int_equal(h.authorize(h.arg, &k2, "keymesh"), KM_ERR_REFUSED); /* allow=0 wins */
    f->cfg->allow_unknown = false;
    km_key_free(stranger);
}

/* Capability logins (docs/CAPABILITIES.md): the router's hooks build the policy from the
 * config and the state directory and decide. */
static void make_cert(const struct km_key *signer, const struct km_pubkey *grantee,
                      const struct km_pubkey *target, uint64_t serial, struct km_buf *out)
{
    struct km_cert *c = calloc(1, sizeof *c);
    c->nonce_len = 32;
    c->key = *grantee;
    c->serial = serial;
    c->type = KM_CERT_USER;
    km_node_id(target, c->principals[0]);
    c->n_principals = 1;
    c->valid_after = (uint64_t)time(NULL) - 10;
    c->valid_before = (uint64_t)time(NULL) + 100;
    c->ext = KM_CERT_EXT_SHELL | KM_CERT_EXT_PORT_FWD | KM_CERT_EXT_PORTS;
    c->ports[0] = 8080;
    c->n_ports = 1;
    km_buf_init(out, KM_CERT_BLOB_MAX);
    assert_int_equal(km_cert_sign(c, signer, out), 0);
    free(c);
}

static int cert_login(const struct km_ssh_hooks *h, const struct km_buf *b, struct km_pubkey *key,
                      struct km_ssh_grant *g, char *why)
{
    return h->authorize_cert(h->arg, km_buf_peek_ptr(b), km_buf_len(b), "alice", "127.0.0.1", key,
                             g, why, 256);
}

static void test_cert_policy(void **state)
{
    struct fix *f = *state;
    struct km_ssh_hooks h;
    km_router_ssh_hooks(f->r, &h);
    struct km_key *grantee;
    struct km_key *owner;
    assert_int_equal(km_key_generate(&grantee), 0);
    assert_int_equal(km_key_generate(&owner), 0);
    snprintf(f->cfg->cap_account, sizeof f->cfg->cap_account, "alice");
    struct km_buf b;
    struct km_pubkey key;
    struct km_ssh_grant g;
    char why[256];
    /* Signed by this node: accepted; the grant carries ports, shell and the account. */
    make_cert(f->self, km_key_pub(grantee), km_key_pub(f->self), 41, &b);
    assert_int_equal(cert_login(&h, &b, &key, &g, why), 0);
    assert_true(km_pubkey_equal(&key, km_key_pub(grantee)));
    assert_true(g.shell);
    assert_false(g.exec);
    assert_int_equal(g.n_ports, 1);
    assert_int_equal(g.serial, 41);
    assert_string_equal(g.account, "alice");
    /* [cap] account_for picks another account for this grantee. */
    f->cfg->cap_accounts[0].key = *km_key_pub(grantee);
    snprintf(f->cfg->cap_accounts[0].account, sizeof f->cfg->cap_accounts[0].account, "bob");
    f->cfg->n_cap_accounts = 1;
    assert_int_equal(cert_login(&h, &b, &key, &g, why), 0);
    assert_string_equal(g.account, "bob");
    f->cfg->n_cap_accounts = 0;
    /* Streams for a certificate login: the granted port and the node's own SSH port only. */
    assert_int_equal(h.allow_direct(h.arg, &key, &g, "localhost", 8080), 0);
    assert_int_equal(h.allow_direct(h.arg, &key, &g, "localhost", 8081), KM_ERR_REFUSED);
    assert_int_equal(h.allow_direct(h.arg, &key, &g, "192.0.2.1", 8080), KM_ERR_REFUSED);
    assert_int_equal(h.allow_direct(h.arg, &key, &g, "localhost", f->cfg->mesh_listen[0].port), 0);
    km_buf_reset(&b);
    /* Signed by an owner: refused until the config trusts it. */
    make_cert(owner, km_key_pub(grantee), km_key_pub(f->self), 42, &b);
    assert_int_equal(cert_login(&h, &b, &key, &g, why), KM_ERR_REFUSED);
    assert_non_null(strstr(why, "is not trusted"));
    f->cfg->cap_owners[0] = *km_key_pub(owner);
    f->cfg->n_cap_owners = 1;
    assert_int_equal(cert_login(&h, &b, &key, &g, why), 0);
    /* The revocation list in the state directory is read at every login. */
    char dir[] = "/tmp/km-test-router-XXXXXX";
    assert_non_null(mkdtemp(dir));
    km_router_set_dir(f->r, dir);
    assert_int_equal(km_cap_store_revoke(dir, "serial 42"), 0);
    assert_int_equal(cert_login(&h, &b, &key, &g, why), KM_ERR_REFUSED);
    assert_non_null(strstr(why, "serial 42 is revoked"));
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, KM_CAP_REVOKED);
    FILE *fp = fopen(path, "a");
    assert_non_null(fp);
    fputs("garbage\n", fp);
    fclose(fp);
    km_buf_reset(&b);
    make_cert(f->self, km_key_pub(grantee), km_key_pub(f->self), 43, &b);
    assert_int_equal(cert_login(&h, &b, &key, &g, why), KM_ERR_REFUSED); /* fails closed */
    assert_non_null(strstr(why, "revocation list unusable"));
    unlink(path);
    km_buf_reset(&b);
    /* Client side: a held certificate for this node's key is offered to the node it names. */
    struct km_pubkey k1, k2;
    assert_int_equal(km_node_id_parse(N1, strlen(N1), &k1), 0);
    assert_int_equal(km_node_id_parse(N2, strlen(N2), &k2), 0);
    make_cert(owner, km_key_pub(f->self), &k1, 44, &b);
    assert_int_equal(km_cap_store_save(dir, KM_CAP_HELD, km_buf_peek_ptr(&b), km_buf_len(&b), 44,
                                       NULL, path, sizeof path),
                     0);
    struct km_buf held;
    km_buf_init(&held, KM_CERT_BLOB_MAX);
    assert_int_equal(h.client_cert(h.arg, &k1, &held), 0);
    assert_int_equal(km_buf_len(&held), km_buf_len(&b));
    km_buf_clear(&held);
    assert_int_equal(h.client_cert(h.arg, &k2, &held), KM_ERR_NOT_FOUND);
    unlink(path);
    snprintf(path, sizeof path, "%s/caps/held", dir);
    rmdir(path);
    snprintf(path, sizeof path, "%s/caps", dir);
    rmdir(path);
    rmdir(dir);
    km_buf_reset(&held);
    km_buf_reset(&b);
    km_key_free(grantee);
    km_key_free(owner);
}

int main(void)
{
    km_log_set_level(KM_LOG_OFF);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_resolve, setup, teardown),
        cmocka_unit_test(test_private_ranges),
        cmocka_unit_test_setup_teardown(test_egress_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbound_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cert_policy, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
