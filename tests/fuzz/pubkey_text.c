/* Fuzz target: public key text (km_pubkey_parse). The input is copied into a NUL-terminated
 * heap buffer of exactly size + 1 bytes so ASan catches reads past the counted length. A
 * parsed key is formatted and must parse back to itself. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "identity/key.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL) {
        return 0;
    }
    if (size > 0) {
        memcpy(text, data, size);
    }
    text[size] = '\0';
    struct km_pubkey pk;
    if (km_pubkey_parse(text, size, &pk) == 0) {
        char line[KM_PUBKEY_LINE_MAX];
        struct km_pubkey back;
        if (km_pubkey_format_openssh(&pk, "fuzz", line, sizeof line) != 0 ||
            km_pubkey_parse(line, strlen(line), &back) != 0 || !km_pubkey_equal(&pk, &back)) {
            abort();
        }
    }
    free(text);
    return 0;
}
