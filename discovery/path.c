/* Path kind names and per-requester ranking (DESIGN.md section 6). */
#include "discovery/path.h"

#include <string.h>

static const char *const kind_names[KM_PATH_KIND_N] = {
    [KM_PATH_LINK_LOCAL] = "link-local", [KM_PATH_LAN] = "lan",         [KM_PATH_VPN] = "vpn",
    [KM_PATH_MAPPED] = "mapped",         [KM_PATH_PUNCHED] = "punched", [KM_PATH_RELAY] = "relay",
};

const char *km_path_kind_name(enum km_path_kind k)
{
    /* The enum may hold any int value if the caller cast one in. */
    if ((int)k < 0 || (int)k >= KM_PATH_KIND_N) {
        return "?";
    }
    return kind_names[k];
}

int km_path_kind_parse(const char *s, size_t len, enum km_path_kind *out)
{
    if (out != NULL) {
        *out = KM_PATH_LINK_LOCAL;
    }
    if (s == NULL) {
        return KM_ERR_INVALID;
    }
    for (int k = 0; k < KM_PATH_KIND_N; k++) {
        size_t nlen = strlen(kind_names[k]);
        if (len == nlen && memcmp(s, kind_names[k], nlen) == 0) {
            if (out != NULL) {
                *out = (enum km_path_kind)k;
            }
            return 0;
        }
    }
    return KM_ERR_INVALID;
}

/* Kinds in preference order for each requester class; KM_PATH_KIND_N ends a list early.
 * A VPN requester can still use a LAN address as a last resort (the VPN may bridge it);
 * anyone else cannot reach private or VPN addresses at all. */
static const enum km_path_kind rank_order[3][KM_PATH_KIND_N] = {
    [KM_REQ_SAME_LINK] = {KM_PATH_LINK_LOCAL, KM_PATH_LAN, KM_PATH_VPN, KM_PATH_MAPPED,
                          KM_PATH_PUNCHED, KM_PATH_RELAY},
    [KM_REQ_VPN] = {KM_PATH_VPN, KM_PATH_MAPPED, KM_PATH_PUNCHED, KM_PATH_RELAY, KM_PATH_LAN,
                    KM_PATH_KIND_N},
    [KM_REQ_OTHER] = {KM_PATH_MAPPED, KM_PATH_PUNCHED, KM_PATH_RELAY, KM_PATH_KIND_N,
                      KM_PATH_KIND_N, KM_PATH_KIND_N},
};

size_t km_path_rank(const struct km_path *paths, size_t n, enum km_requester who, size_t *order)
{
    if (paths == NULL || order == NULL || (int)who < 0 || (int)who > KM_REQ_OTHER) {
        return 0;
    }
    /* One pass per kind in preference order keeps equal kinds in input order (stable)
     * without a sort; n is small (a peer has at most a few dozen paths). */
    size_t m = 0;
    for (size_t r = 0; r < KM_PATH_KIND_N; r++) {
        enum km_path_kind want = rank_order[who][r];
        if (want == KM_PATH_KIND_N) {
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (paths[i].kind == want) {
                order[m++] = i;
            }
        }
    }
    return m;
}
