/* Fuzz target: the capability certificate parser and decision (km_cert_parse,
 * km_cap_check) and the text decoder. Input starting with "ssh-" is decoded as the text form
 * first; anything else is taken as a wire blob. A certificate that parses is re-signed with
 * our own writer and must parse back with the same fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cap/cert.h"
#include "cap/policy.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct km_cert c;
    static struct km_cert c2;
    static struct km_cap_policy pol;
    struct km_buf text_blob;
    km_buf_init(&text_blob, KM_CERT_BLOB_MAX);
    if (size >= 4 && memcmp(data, "ssh-", 4) == 0) {
        if (km_cert_decode_text((const char *)data, size, &text_blob) != 0) {
            goto out;
        }
        data = km_buf_peek_ptr(&text_blob);
        size = km_buf_len(&text_blob);
    }
    if (km_cert_parse(data, size, &c) != 0) {
        goto out;
    }
    int sig = km_cert_verify_sig(&c, data, size);
    /* Decide it as the signer's own node would (so the signature check passes when valid). */
    km_cap_policy_init(&pol, &c.signer);
    struct km_cap_grant g;
    char why[KM_CAP_WHY_MAX];
    int r = km_cap_check(&pol, data, size, c.valid_after, "127.0.0.1", &g, why, sizeof why);
    if (memchr(why, '\0', sizeof why) == NULL || (r == 0 && sig != 0) ||
        (r == 0 && !g.shell && !g.exec && g.n_ports == 0 && !g.expose)) {
        abort(); /* accepted without a valid signature, or granting nothing */
    }
    /* Re-sign what we parsed (when our writer accepts it) and parse it back. */
    uint8_t seed[32] = {7};
    struct km_key *k = NULL;
    struct km_buf b;
    km_buf_init(&b, KM_CERT_BLOB_MAX);
    if (km_key_from_seed(seed, &k) == 0 && km_cert_sign(&c, k, &b) == 0) {
        if (km_cert_parse(km_buf_peek_ptr(&b), km_buf_len(&b), &c2) != 0 || c2.serial != c.serial ||
            c2.n_principals != c.n_principals || c2.ext != c.ext || c2.n_ports != c.n_ports ||
            strcmp(c2.force_command, c.force_command) != 0 ||
            km_cert_verify_sig(&c2, km_buf_peek_ptr(&b), km_buf_len(&b)) != 0) {
            abort(); /* a certificate we accept must survive our own writer */
        }
    }
    km_key_free(k);
    km_buf_reset(&b);
out:
    km_buf_reset(&text_blob);
    return 0;
}
