/* Unit tests for discovery/dns_rr.c: the TXT text, character-strings at and over their limit,
 * and RR construction including every failure path (owner or an rdf missing: all freed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>

#include <cmocka.h>

#include "discovery/dns_rr.h"

static void test_txt_key(void **state)
{
    (void)state;
    struct km_pubkey k;
    memset(k.b, 0, sizeof k.b);
    char txt[KM_DNS_TXT_SIZE];
    km_dns_txt_key(&k, txt);
    assert_string_equal(txt, "v=keymesh1 k=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert_int_equal(strlen(txt) + 1, KM_DNS_TXT_SIZE);
}

static void test_str_rdf(void **state)
{
    (void)state;
    char s[256];
    memset(s, 'x', sizeof s);
    ldns_rdf *r = km_dns_str_rdf(s, 255);
    assert_non_null(r);
    assert_int_equal(ldns_rdf_size(r), 256);
    assert_int_equal(ldns_rdf_data(r)[0], 255);
    ldns_rdf_deep_free(r);
    assert_null(km_dns_str_rdf(s, 256));
    r = km_dns_str_rdf("", 0);
    assert_non_null(r);
    assert_int_equal(ldns_rdf_size(r), 1);
    ldns_rdf_deep_free(r);
}

static void test_rr_new(void **state)
{
    (void)state;
    ldns_rr *rr = NULL;
    ldns_rdf *rd[2] = {km_dns_str_rdf("a", 1), km_dns_str_rdf("b", 1)};
    assert_int_equal(km_dns_rr_new(ldns_dname_new_frm_str("x.mesh.internal."), LDNS_RR_TYPE_HINFO,
                                   LDNS_RR_CLASS_IN, 60, rd, 2, &rr),
                     0);
    assert_non_null(rr);
    assert_int_equal(ldns_rr_rd_count(rr), 2);
    assert_int_equal(ldns_rr_ttl(rr), 60);
    assert_false(ldns_rr_is_question(rr));
    ldns_rr_free(rr);

    /* No RDATA: an RFC 2136 "delete" RR. */
    assert_int_equal(km_dns_rr_new(ldns_dname_new_frm_str("x.mesh.internal."), LDNS_RR_TYPE_ANY,
                                   LDNS_RR_CLASS_ANY, 0, NULL, 0, &rr),
                     0);
    assert_true(ldns_rr_is_question(rr));
    assert_int_equal(ldns_rr_get_class(rr), LDNS_RR_CLASS_ANY);
    ldns_rr_free(rr);

    /* A missing rdf or owner: -ENOMEM, nothing returned, everything taken freed (ASan and
     * valgrind check the last part). */
    ldns_rdf *bad[2] = {km_dns_str_rdf("a", 1), NULL};
    assert_int_equal(km_dns_rr_new(ldns_dname_new_frm_str("x."), LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_IN,
                                   1, bad, 2, &rr),
                     -ENOMEM);
    assert_null(rr);
    ldns_rdf *ok[1] = {km_dns_str_rdf("a", 1)};
    assert_int_equal(km_dns_rr_new(NULL, LDNS_RR_TYPE_TXT, LDNS_RR_CLASS_IN, 1, ok, 1, &rr),
                     -ENOMEM);
    assert_null(rr);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt_key),
        cmocka_unit_test(test_str_rdf),
        cmocka_unit_test(test_rr_new),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
