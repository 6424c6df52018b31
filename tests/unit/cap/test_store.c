/* Unit tests for cap/store.c: held/issued files, the revocation list, and the choice of the
 * held certificate to present. */
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

#include "cap/store.h"
#include "identity/derive.h"

static struct km_key *key_from(uint8_t fill)
{
    uint8_t seed[32];
    memset(seed, fill, sizeof seed);
    struct km_key *k = NULL;
    assert_int_equal(km_key_from_seed(seed, &k), 0);
    return k;
}

/* A certificate for grantee naming target, valid [now + from, now + to). */
static void make(const struct km_key *signer, const struct km_pubkey *grantee,
                 const struct km_pubkey *target, uint64_t serial, int64_t from, int64_t to,
                 struct km_buf *out)
{
    struct km_cert *c = calloc(1, sizeof *c);
    uint64_t now = (uint64_t)time(NULL);
    c->key = *grantee;
    c->serial = serial;
    c->type = KM_CERT_USER;
    km_node_id(target, c->principals[0]);
    c->n_principals = 1;
    c->valid_after = (uint64_t)((int64_t)now + from);
    c->valid_before = (uint64_t)((int64_t)now + to);
    c->ext = KM_CERT_EXT_SHELL;
    km_buf_init(out, KM_CERT_BLOB_MAX);
    assert_int_equal(km_cert_sign(c, signer, out), 0);
    free(c);
}

struct seen {
    int n;
    int bad;
    uint64_t serials[8];
};

static void each_cb(void *arg, const char *path, const struct km_cert *c, const uint8_t *blob,
                    size_t len, int err)
{
    (void)path;
    (void)blob;
    (void)len;
    struct seen *s = arg;
    if (c == NULL) {
        assert_int_not_equal(err, 0);
        s->bad++;
        return;
    }
    s->serials[s->n++] = c->serial;
}

static void test_store(void **state)
{
    (void)state;
    char dir[] = "/tmp/km-test-store-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct km_key *self = key_from(1);
    struct km_key *signer = key_from(2);
    struct km_key *other = key_from(3);
    struct km_key *target = key_from(4);
    struct km_buf b1, b2, b3, b4;
    /* Valid for an hour; valid for a day (preferred); expired; for another key. */
    make(signer, km_key_pub(self), km_key_pub(target), 10, -5, 3600, &b1);
    make(signer, km_key_pub(self), km_key_pub(target), 11, -5, 86400, &b2);
    make(signer, km_key_pub(self), km_key_pub(target), 12, -100, -50, &b3);
    make(signer, km_key_pub(other), km_key_pub(target), 13, -5, 999999, &b4);
    char path[512];
    struct km_buf *all[] = {&b1, &b2, &b3, &b4};
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(km_cap_store_save(dir, KM_CAP_HELD, km_buf_peek_ptr(all[i]),
                                           km_buf_len(all[i]), 10 + i, "c", path, sizeof path),
                         0);
    }
    /* A file that does not parse is reported, not fatal. */
    snprintf(path, sizeof path, "%s/%s/junk.cert", dir, KM_CAP_HELD);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("ssh-ed25519-cert-v01@openssh.com AAAA\n", f);
    fclose(f);
    struct seen s = {0};
    assert_int_equal(km_cap_store_each(dir, KM_CAP_HELD, each_cb, &s), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.bad, 1);
    /* Round trip of one file. */
    struct km_buf rd;
    km_buf_init(&rd, KM_CERT_BLOB_MAX);
    snprintf(path, sizeof path, "%s/%s/10.cert", dir, KM_CAP_HELD);
    assert_int_equal(km_cap_store_read(path, &rd), 0);
    assert_int_equal(km_buf_len(&rd), km_buf_len(&b1));
    assert_memory_equal(km_buf_peek_ptr(&rd), km_buf_peek_ptr(&b1), km_buf_len(&b1));
    /* Pick: this node's key, naming the target, valid now, longest-lived. */
    km_buf_clear(&rd);
    assert_int_equal(
        km_cap_store_pick(dir, km_key_pub(self), km_key_pub(target), (uint64_t)time(NULL), &rd), 0);
    assert_memory_equal(km_buf_peek_ptr(&rd), km_buf_peek_ptr(&b2), km_buf_len(&b2));
    km_buf_clear(&rd);
    assert_int_equal(
        km_cap_store_pick(dir, km_key_pub(self), km_key_pub(other), (uint64_t)time(NULL), &rd),
        KM_ERR_NOT_FOUND);
    /* A missing directory is empty. */
    s = (struct seen){0};
    assert_int_equal(km_cap_store_each(dir, KM_CAP_ISSUED, each_cb, &s), 0);
    assert_int_equal(s.n, 0);
    /* Revocations: appended lines, read back into a policy. */
    struct km_cap_policy *p = malloc(sizeof *p);
    km_cap_policy_init(p, km_key_pub(target));
    size_t line;
    assert_int_equal(km_cap_store_load_revoked(dir, p, &line), 0); /* no file: empty */
    assert_int_equal(p->n_revoked_serials, 0);
    char id[KM_NODE_ID_LEN + 1];
    char entry[80];
    km_node_id(km_key_pub(other), id);
    snprintf(entry, sizeof entry, "key %s", id);
    assert_int_equal(km_cap_store_revoke(dir, "serial 11"), 0);
    assert_int_equal(km_cap_store_revoke(dir, entry), 0);
    assert_int_equal(km_cap_store_load_revoked(dir, p, &line), 0);
    assert_true(km_cap_policy_serial_revoked(p, 11));
    assert_false(km_cap_policy_serial_revoked(p, 10));
    assert_true(km_cap_policy_key_revoked(p, km_key_pub(other)));
    assert_int_equal(km_cap_store_revoke(dir, "bogus"), 0); /* written as asked... */
    km_cap_policy_init(p, km_key_pub(target));
    assert_int_equal(km_cap_store_load_revoked(dir, p, &line), KM_ERR_INVALID); /* ...refused */
    assert_int_equal(line, 3);
    free(p);
    /* Clean up. */
    const char *files[] = {"held/10.cert", "held/11.cert",   "held/12.cert",
                           "held/13.cert", "held/junk.cert", "revoked"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/caps/%s", dir, files[i]);
        assert_int_equal(unlink(path), 0);
    }
    snprintf(path, sizeof path, "%s/caps/held", dir);
    assert_int_equal(rmdir(path), 0);
    snprintf(path, sizeof path, "%s/caps", dir);
    assert_int_equal(rmdir(path), 0);
    assert_int_equal(rmdir(dir), 0);
    km_buf_reset(&rd);
    for (unsigned i = 0; i < 4; i++) {
        km_buf_reset(all[i]);
    }
    km_key_free(self);
    km_key_free(signer);
    km_key_free(other);
    km_key_free(target);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
