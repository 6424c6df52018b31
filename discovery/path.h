/* Paths: the ways a peer can be reached right now (DESIGN.md section 6), and their ranking
 * for a given requester. */
#ifndef KM_DISCOVERY_PATH_H
#define KM_DISCOVERY_PATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/err.h"
#include "identity/key.h"

enum km_path_kind {
    KM_PATH_LINK_LOCAL = 0, /* same link, learned by mDNS */
    KM_PATH_LAN,            /* a private address on a shared network */
    KM_PATH_VPN,            /* an address on a configured VPN interface */
    KM_PATH_MAPPED,         /* a public address:port from UPnP-IGD / NAT-PMP */
    KM_PATH_PUNCHED,        /* a NAT hole coordinated through a gateway */
    KM_PATH_RELAY,          /* through a gateway node (addr is the gateway's) */
    KM_PATH_KIND_N,
};

/* Where a path was learned. */
enum km_path_source {
    KM_PATH_SRC_CONFIG = 0,
    KM_PATH_SRC_MDNS,
    KM_PATH_SRC_GOSSIP,
    KM_PATH_SRC_DNS,
    KM_PATH_SRC_SELF,
};

struct km_path {
    enum km_path_kind kind;
    enum km_path_source source;
    struct sockaddr_storage addr; /* the peer's mesh listener, or the gateway's for relay */
    struct km_pubkey via;         /* relay: the gateway's key */
    bool has_via;
    uint64_t expires_ms; /* loop time after which the path is forgotten; 0 = never */
};

/* The kind's wire name, used as the SVCB private key65280 value and in status output:
 * "link-local", "lan", "vpn", "mapped", "punched", "relay". "?" for an invalid kind. */
const char *km_path_kind_name(enum km_path_kind k);

/* Parse a wire name of len bytes. Returns 0 or KM_ERR_INVALID. */
KM_MUST_CHECK int km_path_kind_parse(const char *s, size_t len, enum km_path_kind *out);

/* Who is asking, as far as ranking goes. */
enum km_requester {
    KM_REQ_SAME_LINK = 0, /* the requester shares a link with the node */
    KM_REQ_VPN,           /* the requester is on a configured VPN subnet */
    KM_REQ_OTHER,         /* anyone else: only publicly usable paths help */
};

/* Rank paths[0..n) for who: order[] receives indices of the usable paths, best first (ties
 * keep their input order); returns how many. Same link: link-local, lan, vpn, mapped,
 * punched, relay. VPN: vpn, mapped, punched, relay, lan. Other: mapped, punched, relay
 * (link-local, lan and vpn addresses are useless to them and left out). */
size_t km_path_rank(const struct km_path *paths, size_t n, enum km_requester who, size_t *order);

/* Append the SVCB SvcParams of one path to w, keys in ascending order (RFC 9460 section 2.2):
 * port (when set), ipv4hint or ipv6hint, and key65280 = the kind name (docs/DNS.md). 0, a
 * km_buf error, or KM_ERR_UNSUPPORTED for an address family that cannot be hinted. The DNS
 * server's answers and DNS UPDATE publishing both write paths this way. */
int km_path_svc_params(const struct km_path *p, struct km_buf *w);

#endif
