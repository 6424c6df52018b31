#include "core/err.h"

#include <string.h>

const char *km_strerror(int err)
{
    switch (err) {
    case KM_OK:
        return "success";
#define KM_ERR_MSG(name, value, msg) \
    case KM_ERR_##name:              \
        return msg;
        KM_ERR_MAP(KM_ERR_MSG)
#undef KM_ERR_MSG
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        return strerror(-err); /* glibc's strerror is thread-safe for valid errnos */
    }
    return "unknown error";
}

const char *km_err_name(int err)
{
    switch (err) {
    case KM_OK:
        return "KM_OK";
#define KM_ERR_NAME(name, value, msg) \
    case KM_ERR_##name:               \
        return "KM_ERR_" #name;
        KM_ERR_MAP(KM_ERR_NAME)
#undef KM_ERR_NAME
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        const char *n = strerrorname_np(-err);
        return n != NULL ? n : "UNKNOWN";
    }
    return "UNKNOWN";
}
