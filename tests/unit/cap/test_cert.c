/* Unit tests for cap/cert.c and cap/policy.c: round trips, an independent encoder, and the
 * hostile-input table (truncation at every length, trailing bytes, every byte flipped, wrong
 * signer, wrong and empty principals, expired, not yet valid, revoked, unknown critical
 * option, unsorted and duplicate options). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cap/cert.h"
#include "cap/policy.h"
#include "identity/derive.h"

#define NOW 1800000000u

static struct km_key *key_from(uint8_t fill)
{
    uint8_t seed[32];
    memset(seed, fill, sizeof seed);
    struct km_key *k = NULL;
    assert_int_equal(km_key_from_seed(seed, &k), 0);
    return k;
}

struct fx {
    struct km_key *node;  /* the target node (self) */
    struct km_key *owner; /* a trusted owner */
    struct km_key *stranger;
    struct km_key *grantee;
    struct km_cap_policy *pol;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    f->node = key_from(1);
    f->owner = key_from(2);
    f->stranger = key_from(3);
    f->grantee = key_from(4);
    f->pol = malloc(sizeof *f->pol);
    km_cap_policy_init(f->pol, km_key_pub(f->node));
    assert_int_equal(km_cap_policy_add_signer(f->pol, km_key_pub(f->owner)), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    km_key_free(f->node);
    km_key_free(f->owner);
    km_key_free(f->stranger);
    km_key_free(f->grantee);
    free(f->pol);
    free(f);
    return 0;
}

static void base_cert(struct fx *f, struct km_cert *c)
{
    memset(c, 0, sizeof *c);
    c->nonce_len = 32;
    memset(c->nonce, 0xab, 32);
    c->key = *km_key_pub(f->grantee);
    c->serial = 77;
    c->type = KM_CERT_USER;
    snprintf(c->key_id, sizeof c->key_id, "test grant");
    km_node_id(km_key_pub(f->node), c->principals[0]);
    c->n_principals = 1;
    c->valid_after = NOW - 100;
    c->valid_before = NOW + 100;
    c->ext = KM_CERT_EXT_SHELL | KM_CERT_EXT_PTY | KM_CERT_EXT_PORT_FWD | KM_CERT_EXT_PORTS;
    c->ports[0] = 22;
    c->ports[1] = 8080;
    c->n_ports = 2;
}

static void sign(const struct km_cert *c, const struct km_key *k, struct km_buf *out)
{
    km_buf_init(out, KM_CERT_BLOB_MAX);
    assert_int_equal(km_cert_sign(c, k, out), 0);
}

static int check(struct fx *f, const struct km_buf *b, uint64_t now, const char *peer,
                 struct km_cap_grant *g, char *why)
{
    return km_cap_check(f->pol, km_buf_peek_ptr(b), km_buf_len(b), now, peer, g, why,
                        KM_CAP_WHY_MAX);
}

static void test_round_trip(void **state)
{
    struct fx *f = *state;
    struct km_cert c;
    base_cert(f, &c);
    c.has_source_address = true;
    snprintf(c.source_address, sizeof c.source_address, "10.0.0.0/8,::1");
    struct km_buf b;
    sign(&c, f->node, &b);
    struct km_cert p;
    assert_int_equal(km_cert_parse(km_buf_peek_ptr(&b), km_buf_len(&b), &p), 0);
    assert_int_equal(km_cert_verify_sig(&p, km_buf_peek_ptr(&b), km_buf_len(&b)), 0);
    assert_true(km_pubkey_equal(&p.key, &c.key));
    assert_true(km_pubkey_equal(&p.signer, km_key_pub(f->node)));
    assert_int_equal(p.serial, 77);
    assert_int_equal(p.n_principals, 1);
    assert_string_equal(p.principals[0], c.principals[0]);
    assert_string_equal(p.key_id, "test grant");
    assert_int_equal(p.ext, c.ext);
    assert_int_equal(p.n_ports, 2);
    assert_int_equal(p.ports[0], 22);
    assert_int_equal(p.ports[1], 8080);
    assert_true(p.has_source_address);
    assert_string_equal(p.source_address, "10.0.0.0/8,::1");
    assert_int_equal(p.unknown_critical[0], '\0');

    /* Text form round trip. */
    struct km_buf t;
    struct km_buf b2;
    km_buf_init(&t, KM_CERT_TEXT_MAX);
    km_buf_init(&b2, KM_CERT_BLOB_MAX);
    assert_int_equal(km_cert_format_text(km_buf_peek_ptr(&b), km_buf_len(&b), "a comment", &t), 0);
    assert_int_equal(km_cert_decode_text((const char *)km_buf_peek_ptr(&t), km_buf_len(&t), &b2),
                     0);
    assert_int_equal(km_buf_len(&b2), km_buf_len(&b));
    assert_memory_equal(km_buf_peek_ptr(&b2), km_buf_peek_ptr(&b), km_buf_len(&b));
    km_buf_clear(&b2);
    assert_int_equal(km_cert_decode_text("ssh-ed25519 AAAA", 16, &b2), KM_ERR_KEY_TYPE);
    assert_int_equal(km_cert_decode_text("  ", 2, &b2), KM_ERR_INVALID);
    assert_int_equal(
        km_cert_decode_text(KM_CERT_TYPE_NAME " !!!!", sizeof KM_CERT_TYPE_NAME + 4, &b2),
        KM_ERR_INVALID);
    km_buf_reset(&t);
    km_buf_reset(&b2);
    km_buf_reset(&b);
}

static void test_grant_decision(void **state)
{
    struct fx *f = *state;
    struct km_cert c;
    base_cert(f, &c);
    struct km_buf b;
    sign(&c, f->owner, &b); /* an owner key signs for the node */
    struct km_cap_grant g;
    char why[KM_CAP_WHY_MAX];
    assert_int_equal(check(f, &b, NOW, "192.0.2.1", &g, why), 0);
    assert_true(g.shell);
    assert_false(g.exec);
    assert_true(g.pty);
    assert_int_equal(g.n_ports, 2);
    assert_false(g.expose);
    assert_int_equal(g.ends_at, NOW + 100 + KM_CAP_SKEW_DEFAULT_S);
    km_buf_reset(&b);

    /* force-command: exec only, never a shell. */
    c.has_force_command = true;
    snprintf(c.force_command, sizeof c.force_command, "echo hi");
    sign(&c, f->node, &b);
    assert_int_equal(check(f, &b, NOW, NULL, &g, why), 0);
    assert_false(g.shell);
    assert_true(g.exec);
    assert_string_equal(g.command, "echo hi");
    km_buf_reset(&b);

    /* Ports need permit-port-forwarding as well as the list. */
    base_cert(f, &c);
    c.ext = KM_CERT_EXT_PORTS;
    sign(&c, f->node, &b);
    assert_int_equal(check(f, &b, NOW, NULL, &g, why), KM_ERR_REFUSED);
    assert_string_equal(why, "grants nothing");
    km_buf_reset(&b);

    /* Expose alone. */
    c.ext = KM_CERT_EXT_EXPOSE;
    c.n_ports = 0;
    sign(&c, f->node, &b);
    assert_int_equal(check(f, &b, NOW, NULL, &g, why), 0);
    assert_true(g.expose);
    assert_int_equal(g.n_ports, 0);
    km_buf_reset(&b);
}

/* Each case changes a valid certificate or the policy; all must be refused with a reason
 * containing the expected text. */
static void test_refusals(void **state)
{
    struct fx *f = *state;
    struct km_cap_grant g;
    char why[KM_CAP_WHY_MAX];
    struct km_cert c;
    struct km_buf b;
    struct {
        const char *what;
        int mode;
        const char *reason;
    } cases[] = {
        {"wrong signer", 0, "is not trusted"},
        {"wrong principal", 1, "principals do not name this node"},
        {"expired", 2, "expired"},
        {"not yet valid", 3, "not yet valid"},
        {"revoked serial", 4, "serial 77 is revoked"},
        {"revoked key", 5, "is revoked"},
        {"source address", 6, "source address 192.0.2.1 is not allowed"},
        {"host certificate", 7, "not a user certificate"},
        {"inverted window", 8, "empty validity window"},
        {"revoked signer", 9, "signer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        base_cert(f, &c);
        struct km_cap_policy *pol = f->pol;
        struct km_cap_policy saved = *pol;
        const struct km_key *signer = f->node;
        uint64_t now = NOW;
        size_t line;
        switch (cases[i].mode) {
        case 0:
            signer = f->stranger;
            break;
        case 1:
            km_node_id(km_key_pub(f->stranger), c.principals[0]);
            break;
        case 2:
            now = NOW + 100 + KM_CAP_SKEW_DEFAULT_S;
            break;
        case 3:
            now = NOW - 100 - KM_CAP_SKEW_DEFAULT_S - 1;
            break;
        case 4:
            assert_int_equal(km_cap_policy_add_revocations(pol, "# x\nserial 77\n", 14, &line), 0);
            break;
        case 5: {
            char id[KM_NODE_ID_LEN + 1];
            char line_text[80];
            km_node_id(km_key_pub(f->grantee), id);
            int n = snprintf(line_text, sizeof line_text, "key %s", id);
            assert_int_equal(km_cap_policy_add_revocations(pol, line_text, (size_t)n, &line), 0);
            break;
        }
        case 6:
            c.has_source_address = true;
            snprintf(c.source_address, sizeof c.source_address, "10.0.0.0/8");
            break;
        case 7:
            c.type = KM_CERT_HOST;
            break;
        case 8:
            c.valid_after = NOW + 200;
            break;
        case 9: {
            char id[KM_NODE_ID_LEN + 1];
            char line_text[80];
            signer = f->owner;
            km_node_id(km_key_pub(f->owner), id);
            int n = snprintf(line_text, sizeof line_text, "key %s", id);
            assert_int_equal(km_cap_policy_add_revocations(pol, line_text, (size_t)n, &line), 0);
            break;
        }
        }
        sign(&c, signer, &b);
        int r = check(f, &b, now, "192.0.2.1", &g, why);
        print_message("%s: %s\n", cases[i].what, why);
        assert_int_equal(r, KM_ERR_REFUSED);
        assert_non_null(strstr(why, cases[i].reason));
        assert_false(g.shell || g.exec || g.n_ports > 0 || g.expose);
        km_buf_reset(&b);
        *pol = saved;
    }
    /* The skew allowance, both edges. */
    base_cert(f, &c);
    sign(&c, f->node, &b);
    assert_int_equal(check(f, &b, NOW - 100 - KM_CAP_SKEW_DEFAULT_S, NULL, &g, why), 0);
    assert_int_equal(check(f, &b, NOW + 100 + KM_CAP_SKEW_DEFAULT_S - 1, NULL, &g, why), 0);
    km_buf_reset(&b);
}

static void test_truncated_trailing_flipped(void **state)
{
    struct fx *f = *state;
    struct km_cert c;
    base_cert(f, &c);
    struct km_buf b;
    sign(&c, f->node, &b);
    size_t len = km_buf_len(&b);
    uint8_t *m = malloc(len + 1);
    memcpy(m, km_buf_peek_ptr(&b), len);
    struct km_cert p;
    struct km_cap_grant g;
    char why[KM_CAP_WHY_MAX];
    for (size_t n = 0; n < len; n++) {
        assert_int_not_equal(km_cert_parse(m, n, &p), 0);
        assert_int_not_equal(km_cap_check(f->pol, m, n, NOW, NULL, &g, why, sizeof why), 0);
        assert_non_null(strstr(why, "malformed"));
    }
    m[len] = 0;
    assert_int_equal(km_cert_parse(m, len + 1, &p), KM_ERR_INVALID);
    for (size_t i = 0; i < len; i++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            m[i] ^= (uint8_t)(1u << bit);
            int r = km_cap_check(f->pol, m, len, NOW, NULL, &g, why, sizeof why);
            if (r == 0) {
                fail_msg("byte %zu bit %u flipped was accepted", i, bit);
            }
            m[i] ^= (uint8_t)(1u << bit);
        }
    }
    assert_int_equal(km_cap_check(f->pol, m, len, NOW, NULL, &g, why, sizeof why), 0);
    free(m);
    km_buf_reset(&b);
}

/* ---- an independent encoder, for what our signer refuses to write ---- */

struct raw {
    const char *principals[3];
    size_t n_principals;
    const char *crit_names[3];
    const char *crit_values[3];
    size_t n_crit;
    const char *ext_names[3];
    size_t n_ext;
};

static void raw_cert(struct fx *f, const struct raw *rw, struct km_buf *out)
{
    struct km_buf seq;
    struct km_buf tmp;
    km_buf_init(out, KM_CERT_BLOB_MAX);
    km_buf_init(&seq, KM_CERT_BLOB_MAX);
    km_buf_init(&tmp, KM_CERT_BLOB_MAX);
    uint8_t nonce[32] = {0};
    assert_int_equal(km_buf_put_cstring(out, KM_CERT_TYPE_NAME), 0);
    assert_int_equal(km_buf_put_string(out, nonce, 32), 0);
    assert_int_equal(km_buf_put_string(out, km_key_pub(f->grantee)->b, 32), 0);
    assert_int_equal(km_buf_put_u64(out, 5), 0);
    assert_int_equal(km_buf_put_u32(out, 1), 0);
    assert_int_equal(km_buf_put_cstring(out, "raw"), 0);
    for (size_t i = 0; i < rw->n_principals; i++) {
        assert_int_equal(km_buf_put_cstring(&seq, rw->principals[i]), 0);
    }
    assert_int_equal(km_buf_put_stringb(out, &seq), 0);
    assert_int_equal(km_buf_put_u64(out, NOW - 10), 0);
    assert_int_equal(km_buf_put_u64(out, NOW + 10), 0);
    km_buf_clear(&seq);
    for (size_t i = 0; i < rw->n_crit; i++) {
        km_buf_clear(&tmp);
        assert_int_equal(km_buf_put_cstring(&tmp, rw->crit_values[i]), 0);
        assert_int_equal(km_buf_put_cstring(&seq, rw->crit_names[i]), 0);
        assert_int_equal(km_buf_put_stringb(&seq, &tmp), 0);
    }
    assert_int_equal(km_buf_put_stringb(out, &seq), 0);
    km_buf_clear(&seq);
    for (size_t i = 0; i < rw->n_ext; i++) {
        assert_int_equal(km_buf_put_cstring(&seq, rw->ext_names[i]), 0);
        assert_int_equal(km_buf_put_string(&seq, NULL, 0), 0);
    }
    assert_int_equal(km_buf_put_stringb(out, &seq), 0);
    assert_int_equal(km_buf_put_string(out, NULL, 0), 0);
    km_buf_clear(&seq);
    assert_int_equal(km_pubkey_put_blob(km_key_pub(f->node), &seq), 0);
    assert_int_equal(km_buf_put_stringb(out, &seq), 0);
    uint8_t s[KM_SIG_LEN];
    assert_int_equal(km_key_sign(f->node, km_buf_peek_ptr(out), km_buf_len(out), s), 0);
    km_buf_clear(&seq);
    assert_int_equal(km_buf_put_cstring(&seq, "ssh-ed25519"), 0);
    assert_int_equal(km_buf_put_string(&seq, s, sizeof s), 0);
    assert_int_equal(km_buf_put_stringb(out, &seq), 0);
    km_buf_reset(&seq);
    km_buf_reset(&tmp);
}

static void test_raw_hostile(void **state)
{
    struct fx *f = *state;
    char self[KM_NODE_ID_LEN + 1];
    km_node_id(km_key_pub(f->node), self);
    struct {
        const char *what;
        struct raw rw;
        int code;
        const char *reason;
    } cases[] = {
        {"valid (independent encoder)",
         {{self}, 1, {0}, {0}, 0, {"permit-shell@keymesh"}, 1},
         0,
         ""},
        {"empty principals",
         {{0}, 0, {0}, {0}, 0, {"permit-shell@keymesh"}, 1},
         KM_ERR_REFUSED,
         "no principals"},
        {"an empty principal",
         {{""}, 1, {0}, {0}, 0, {"permit-shell@keymesh"}, 1},
         KM_ERR_INVALID,
         "malformed"},
        {"unknown critical option",
         {{self}, 1, {"verify-required-x"}, {"1"}, 1, {"permit-shell@keymesh"}, 1},
         KM_ERR_REFUSED,
         "unknown critical option \"verify-required-x\""},
        {"unsorted critical options",
         {{self}, 1, {"source-address", "force-command"}, {"::1", "ls"}, 2, {0}, 0},
         KM_ERR_INVALID,
         "malformed"},
        {"duplicate extension",
         {{self}, 1, {0}, {0}, 0, {"permit-pty", "permit-pty"}, 2},
         KM_ERR_INVALID,
         "malformed"},
        {"unknown extension ignored",
         {{self}, 1, {0}, {0}, 0, {"aaa@example", "permit-shell@keymesh"}, 2},
         0,
         ""},
        {"only unknown extensions",
         {{self}, 1, {0}, {0}, 0, {"zzz@example"}, 1},
         KM_ERR_REFUSED,
         "grants nothing"},
        {"empty force-command value is allowed",
         {{self}, 1, {"force-command"}, {""}, 1, {0}, 0},
         0,
         ""},
        {"empty source-address",
         {{self}, 1, {"source-address"}, {""}, 1, {0}, 0},
         KM_ERR_INVALID,
         "malformed"},
        {"principal list with another node first",
         {{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", self},
          2,
          {0},
          {0},
          0,
          {"permit-shell@keymesh"},
          1},
         0,
         ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct km_buf b;
        raw_cert(f, &cases[i].rw, &b);
        struct km_cap_grant g;
        char why[KM_CAP_WHY_MAX];
        int r = check(f, &b, NOW, NULL, &g, why);
        print_message("%s: %d %s\n", cases[i].what, r, why);
        assert_int_equal(r, cases[i].code);
        assert_non_null(strstr(why, cases[i].reason));
        km_buf_reset(&b);
    }
}

static void test_sign_refuses_bad_profile(void **state)
{
    struct fx *f = *state;
    struct km_cert c;
    struct km_buf b;
    km_buf_init(&b, KM_CERT_BLOB_MAX);
    base_cert(f, &c);
    c.n_principals = 0;
    assert_int_equal(km_cert_sign(&c, f->node, &b), KM_ERR_INVALID);
    base_cert(f, &c);
    c.principals[0][0] = '\0';
    assert_int_equal(km_cert_sign(&c, f->node, &b), KM_ERR_INVALID);
    base_cert(f, &c);
    c.ports[1] = 22;
    assert_int_equal(km_cert_sign(&c, f->node, &b), KM_ERR_INVALID);
    base_cert(f, &c);
    c.ext &= ~KM_CERT_EXT_PORTS;
    assert_int_equal(km_cert_sign(&c, f->node, &b), KM_ERR_INVALID);
    assert_int_equal(km_buf_len(&b), 0);
    km_buf_reset(&b);
}

static void test_revocation_list(void **state)
{
    struct fx *f = *state;
    size_t line;
    static const char bad1[] = "serial 1\nserial x\n";
    static const char bad2[] = "serial 1\n\nbogus\n";
    static const char bad3[] = "serial 99999999999999999999999\n";
    static const char bad4[] = "key notakey\n";
    assert_int_equal(km_cap_policy_add_revocations(f->pol, bad1, sizeof bad1 - 1, &line),
                     KM_ERR_INVALID);
    assert_int_equal(line, 2);
    assert_int_equal(km_cap_policy_add_revocations(f->pol, bad2, sizeof bad2 - 1, &line),
                     KM_ERR_INVALID);
    assert_int_equal(line, 3);
    assert_int_equal(km_cap_policy_add_revocations(f->pol, bad3, sizeof bad3 - 1, &line),
                     KM_ERR_INVALID);
    assert_int_equal(km_cap_policy_add_revocations(f->pol, bad4, sizeof bad4 - 1, &line),
                     KM_ERR_INVALID);
    assert_true(km_cap_policy_serial_revoked(f->pol, 1));
    assert_false(km_cap_policy_serial_revoked(f->pol, 2));
}

static void test_addr_list(void **state)
{
    (void)state;
    assert_true(km_cap_addr_in_list("10.1.2.3", "10.0.0.0/8"));
    assert_true(km_cap_addr_in_list("10.1.2.3", "192.0.2.0/24,10.1.2.3"));
    assert_false(km_cap_addr_in_list("11.1.2.3", "10.0.0.0/8"));
    assert_true(km_cap_addr_in_list("::ffff:10.1.2.3", "10.0.0.0/8"));
    assert_true(km_cap_addr_in_list("2001:db8::5", "2001:db8::/32"));
    assert_false(km_cap_addr_in_list("2001:db9::5", "2001:db8::/32"));
    assert_false(km_cap_addr_in_list("10.1.2.3", "10.0.0.0/33"));
    assert_false(km_cap_addr_in_list("10.1.2.3", "10.0.0.0/"));
    assert_false(km_cap_addr_in_list("10.1.2.3", ""));
    assert_false(km_cap_addr_in_list(NULL, "0.0.0.0/0"));
    assert_true(km_cap_addr_in_list("10.1.2.3", "0.0.0.0/0"));
    assert_true(km_cap_addr_in_list("10.1.2.3", "10.1.2.0/23"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grant_decision, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_trailing_flipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_hostile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sign_refuses_bad_profile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revocation_list, setup, teardown),
        cmocka_unit_test(test_addr_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
