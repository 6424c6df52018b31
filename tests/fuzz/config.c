/* Fuzz km_config_parse (core/conf.c reading plus the schema in core/daemon/config.c) over
 * arbitrary bytes. Checks the error contract too: success leaves err empty, failure gives
 * one non-empty line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/daemon/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct km_config c; /* large: keep it off the stack */
    char err[KM_CONF_ERR_LEN];
    km_config_defaults(&c);
    int r = km_config_parse(&c, (const char *)data, size, "fuzz.conf", err, sizeof err);
    size_t n = strnlen(err, sizeof err);
    if (n == sizeof err || (r == 0) != (n == 0) || memchr(err, '\n', n) != NULL) {
        abort();
    }
    if (r == 0 &&
        (c.n_mesh_listen > KM_CONFIG_MAX_LISTEN || c.n_socks5_listen > KM_CONFIG_MAX_LISTEN ||
         c.n_http_listen > KM_CONFIG_MAX_LISTEN || c.n_aliases > KM_CONFIG_MAX_ALIASES)) {
        abort();
    }
    if (r == 0) {
        for (size_t i = 0; i < c.n_aliases; i++) {
            if (km_config_alias(&c, c.aliases[i].name) != &c.aliases[i].key) {
                abort();
            }
        }
    }
    return 0;
}
