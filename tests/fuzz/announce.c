/* Fuzz target: signed announcements (km_announce_parse) and their text form
 * (km_announce_from_text). The first byte picks the mode: even = the rest is a binary
 * announcement; odd = the rest is "a=<base64>" text, decoded and then parsed. The input is
 * copied to a heap buffer of exactly its size so ASan catches reads past the counted length.
 * Decoded text must encode back to the same text. The clock is fixed: the seed corpus holds
 * records that expire in 2096. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/announce.h"
#include "tests/fuzz/fuzz.h"

#define NOW_UNIX 1700000000u

static void check(const struct km_announce *an)
{
    if (an->n_paths > KM_ANNOUNCE_PATHS_MAX) {
        abort();
    }
    for (size_t i = 0; i < an->n_paths; i++) {
        const struct km_path *p = &an->paths[i];
        if ((int)p->kind >= KM_PATH_KIND_N || (p->kind == KM_PATH_RELAY) != p->has_via ||
            (p->addr.ss_family != AF_INET && p->addr.ss_family != AF_INET6)) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    uint8_t mode = data[0];
    size_t len = size - 1;
    uint8_t *in = malloc(len == 0 ? 1 : len);
    if (in == NULL) {
        return 0;
    }
    if (len > 0) {
        memcpy(in, data + 1, len);
    }
    struct km_announce an;
    if ((mode & 1) == 0) {
        if (km_announce_parse(in, len, NOW_UNIX, &an) == 0) {
            check(&an);
        }
    } else {
        uint8_t bin[KM_ANNOUNCE_MAX];
        size_t n = 0;
        if (km_announce_from_text((const char *)in, len, bin, sizeof bin, &n) == 0) {
            char text[KM_ANNOUNCE_TEXT_MAX];
            if (km_announce_to_text(bin, n, text, sizeof text) != 0 || strlen(text) != len ||
                memcmp(text, in, len) != 0) {
                abort();
            }
            if (km_announce_parse(bin, n, NOW_UNIX, &an) == 0) {
                check(&an);
            }
        }
    }
    free(in);
    return 0;
}
