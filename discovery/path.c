/* Path kind names and per-requester ranking (DESIGN.md section 6). */
#include "discovery/path.h"

#include <arpa/inet.h>
#include <netinet/in.h>
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

enum {
    SVC_PORT = 3,
    SVC_IPV4HINT = 4,
    SVC_IPV6HINT = 6,
    SVC_KM_KIND = 65280, /* private-use key (RFC 9460 section 14.3.1) */
};

int km_path_svc_params(const struct km_path *p, struct km_buf *w)
{
    uint16_t port = 0;
    uint8_t a4[4], a6[16];
    bool v4 = false;
    if (p->addr.ss_family == AF_INET) {
        struct sockaddr_in sin;
        memcpy(&sin, &p->addr, sizeof sin);
        port = ntohs(sin.sin_port);
        memcpy(a4, &sin.sin_addr, 4);
        v4 = true;
    } else if (p->addr.ss_family == AF_INET6) {
        struct sockaddr_in6 sin6;
        memcpy(&sin6, &p->addr, sizeof sin6);
        port = ntohs(sin6.sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr)) {
            memcpy(a4, sin6.sin6_addr.s6_addr + 12, 4);
            v4 = true;
        } else {
            memcpy(a6, sin6.sin6_addr.s6_addr, 16);
        }
    } else {
        return KM_ERR_UNSUPPORTED;
    }
    const char *kind = km_path_kind_name(p->kind);
    int r;
    if (port != 0 && ((r = km_buf_put_u16(w, SVC_PORT)) != 0 || (r = km_buf_put_u16(w, 2)) != 0 ||
                      (r = km_buf_put_u16(w, port)) != 0)) {
        return r;
    }
    if (v4 ? ((r = km_buf_put_u16(w, SVC_IPV4HINT)) != 0 ||
              (r = km_buf_put_string16(w, a4, sizeof a4)) != 0)
           : ((r = km_buf_put_u16(w, SVC_IPV6HINT)) != 0 ||
              (r = km_buf_put_string16(w, a6, sizeof a6)) != 0)) {
        return r;
    }
    if ((r = km_buf_put_u16(w, SVC_KM_KIND)) != 0 ||
        (r = km_buf_put_string16(w, kind, strlen(kind))) != 0) {
        return r;
    }
    return 0;
}
