/* The control socket's request parser. */
#include <stdint.h>

#include "core/ctl.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *req;
    const char *cmd;
    if (km_ctl_parse_request(data, size, &req, &cmd) == 0) {
        json_decref(req);
    }
    return 0;
}
