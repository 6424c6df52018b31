/* Building ldns resource records: shared by the DNS server's answers (dns_answer.c) and DNS
 * UPDATE publishing (dnsupdate.c), so both write the same records the same way. */
#ifndef KM_DISCOVERY_DNS_RR_H
#define KM_DISCOVERY_DNS_RR_H

#include <stddef.h>
#include <stdint.h>

#include <ldns/ldns.h>
#include <sodium.h>

#include "core/err.h"
#include "identity/key.h"

/* The node's TXT record text, "v=keymesh1 k=<base64 key>" (DESIGN.md section 6), with its
 * terminating NUL. */
#define KM_DNS_TXT_PREFIX "v=keymesh1 k="
#define KM_DNS_TXT_SIZE             \
    (sizeof KM_DNS_TXT_PREFIX - 1 + \
     sodium_base64_ENCODED_LEN(KM_PUBKEY_LEN, sodium_base64_VARIANT_ORIGINAL))
void km_dns_txt_key(const struct km_pubkey *k, char out[KM_DNS_TXT_SIZE]);

/* A <character-string> rdf of s[0..len); NULL if len > 255 or out of memory. */
ldns_rdf *km_dns_str_rdf(const char *s, size_t len);

/* A new RR: owner and the n rdfs are taken (any of them NULL means an earlier allocation
 * failed). n == 0 makes an RR without RDATA, as RFC 2136 sections 2.4.1 and 2.5.2 use (ldns
 * writes RDLENGTH 0 for "question" RRs). 0 with *out set, or -ENOMEM with everything freed. */
KM_MUST_CHECK int km_dns_rr_new(ldns_rdf *owner, ldns_rr_type type, ldns_rr_class cls, uint32_t ttl,
                                ldns_rdf **rdfs, size_t n, ldns_rr **out);

#endif
