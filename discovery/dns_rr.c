/* Resource record construction for answers and UPDATEs (discovery/dns_rr.h). */
#include "discovery/dns_rr.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

void km_dns_txt_key(const struct km_pubkey *k, char out[KM_DNS_TXT_SIZE])
{
    memcpy(out, KM_DNS_TXT_PREFIX, sizeof KM_DNS_TXT_PREFIX - 1);
    sodium_bin2base64(out + sizeof KM_DNS_TXT_PREFIX - 1,
                      KM_DNS_TXT_SIZE - (sizeof KM_DNS_TXT_PREFIX - 1), k->b, KM_PUBKEY_LEN,
                      sodium_base64_VARIANT_ORIGINAL);
}

ldns_rdf *km_dns_str_rdf(const char *s, size_t len)
{
    uint8_t d[256];
    if (len > 255) {
        return NULL;
    }
    d[0] = (uint8_t)len;
    memcpy(d + 1, s, len);
    return ldns_rdf_new_frm_data(LDNS_RDF_TYPE_STR, len + 1, d);
}

int km_dns_rr_new(ldns_rdf *owner, ldns_rr_type type, ldns_rr_class cls, uint32_t ttl,
                  ldns_rdf **rdfs, size_t n, ldns_rr **out)
{
    *out = NULL;
    ldns_rr *rr = ldns_rr_new();
    bool ok = rr != NULL && owner != NULL;
    for (size_t i = 0; i < n; i++) {
        ok = ok && rdfs[i] != NULL;
    }
    if (!ok) {
        ldns_rr_free(rr);
        ldns_rdf_deep_free(owner);
        for (size_t i = 0; i < n; i++) {
            ldns_rdf_deep_free(rdfs[i]);
        }
        return -ENOMEM;
    }
    ldns_rr_set_owner(rr, owner);
    ldns_rr_set_type(rr, type);
    ldns_rr_set_class(rr, cls);
    ldns_rr_set_ttl(rr, ttl);
    if (n == 0) {
        ldns_rr_set_question(rr, true);
    }
    for (size_t i = 0; i < n; i++) {
        if (!ldns_rr_push_rdf(rr, rdfs[i])) {
            for (size_t j = i; j < n; j++) {
                ldns_rdf_deep_free(rdfs[j]);
            }
            ldns_rr_free(rr);
            return -ENOMEM;
        }
    }
    *out = rr;
    return 0;
}
