/* The DNS server: authoritative for the mesh suffix and for the VIP prefix's ip6.arpa zone,
 * never recursive (DESIGN.md section 6; docs/DNS.md).
 *
 *   <node-id>.<suffix>   AAAA = VIP, TXT = "v=keymesh1 k=<base64 key>", SVCB = one record per
 *                        usable path ranked for the requester (SvcPriority 1 = best)
 *   <alias>.<suffix>     the same for the alias's key
 *   <suffix>             SOA, NS
 *   VIP reverse name     PTR = <node-id>.<suffix> for keys the backend knows
 * Every valid node ID exists (its AAAA and TXT derive from the name itself); other names under
 * the suffix are NXDOMAIN; names outside both zones are REFUSED. */
#ifndef KM_DISCOVERY_DNS_H
#define KM_DISCOVERY_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "core/buf.h"
#include "core/err.h"
#include "discovery/path.h"
#include "identity/key.h"

/* What the server asks of the node. Every function may be NULL (then: nothing known). */
struct km_dns_backend {
    /* label: the lowercase part of the name before ".<suffix>" (one or more labels). Store
     * the key of an alias and return 0, or KM_ERR_NOT_FOUND. Node IDs are handled by the
     * server itself and never reach this. */
    int (*lookup_alias)(void *arg, const char *label, struct km_pubkey *out);
    /* The key whose VIP is vip, among the keys the node knows; 0 or KM_ERR_NOT_FOUND. */
    int (*lookup_vip)(void *arg, const uint8_t vip[16], struct km_pubkey *out);
    /* Up to max paths for key, unranked; the server ranks them for the requester. */
    size_t (*paths)(void *arg, const struct km_pubkey *key, struct km_path *out, size_t max);
    /* How the requester at from relates to this node (same link, VPN, other). */
    enum km_requester (*classify)(void *arg, const struct sockaddr *from);
    void *arg;
};

struct km_dns_opts {
    char suffix[254];    /* e.g. "mesh.internal" (lowercase, no trailing dot) */
    uint16_t prefix;     /* VIP prefix, e.g. 0xfd6b */
    uint32_t ttl;        /* seconds, for every answer record and negative caching (60) */
    uint32_t soa_serial; /* (1) */
    unsigned rate_limit; /* UDP responses per second per source (IPv4 address, IPv6 /64),
                          * burst of the same size; 0 = unlimited (default 0) */
    /* Added with the implementation; km_dns_opts_default sets each. */
    uint16_t udp_max;        /* largest UDP answer whatever EDNS asks, 512..4096 (1232) */
    unsigned rate_table;     /* sources tracked by the rate limiter, least recent replaced
                              * (1024) */
    unsigned tcp_max_conns;  /* TCP connections at once; more are accepted and closed (64) */
    unsigned tcp_idle_ms;    /* a TCP connection idle this long is closed (10000) */
    unsigned tcp_max_queued; /* answers queued on one TCP connection before it stops being
                              * read (pipelining bound, 16) */
};

/* Fill o with the defaults above: suffix KM_DEFAULT_SUFFIX, prefix KM_DEFAULT_PREFIX. */
void km_dns_opts_default(struct km_dns_opts *o);

/* Largest number of paths asked of the backend for one SVCB answer. */
#define KM_DNS_MAX_PATHS 64

/* Answer one query (pure: no I/O, no clock). query[0..len) is the DNS message as received
 * (without the TCP length prefix); from is the requester (NULL: treated as KM_REQ_OTHER); tcp
 * says which transport (UDP answers are kept within the requester's EDNS size clamped to
 * 512..o->udp_max, or 512 without EDNS, and truncated with TC=1 when larger). On 0, the
 * response is appended to out (an owned buffer of at least 65535 bytes' room). KM_ERR_INVALID:
 * drop silently (shorter than a header, or QR=1: answering responses invites loops);
 * KM_ERR_INVALID also for an invalid o (bad suffix). FORMERR, REFUSED, NXDOMAIN, NOTIMP and
 * BADVERS are responses, returned with 0. -ENOMEM or KM_ERR_TOO_LARGE from out otherwise. */
KM_MUST_CHECK int km_dns_answer(const struct km_dns_opts *o, const struct km_dns_backend *b,
                                const uint8_t *query, size_t len, const struct sockaddr *from,
                                bool tcp, struct km_buf *out);

struct km_dns_server;

/* Serve on addr, UDP and TCP on the same port (port 0: an ephemeral port free for both, see
 * km_dns_server_port). o and b are copied; b->arg must outlive the server. Returns 0,
 * KM_ERR_INVALID for a bad suffix, or a negative libuv code (e.g. -EADDRINUSE); *out is NULL
 * on failure. */
KM_MUST_CHECK int km_dns_server_new(uv_loop_t *loop, const struct sockaddr *addr,
                                    const struct km_dns_opts *o, const struct km_dns_backend *b,
                                    struct km_dns_server **out);

/* The port the server is bound to (host order). */
uint16_t km_dns_server_port(const struct km_dns_server *s);

/* Counters for status. */
struct km_dns_stats {
    uint64_t queries;
    uint64_t dropped; /* malformed beyond an answer, or rate limited */
    uint64_t rate_limited;
    uint64_t cache_hits; /* UDP answers reused from the packet cache (docs/DNS.md) */
};
void km_dns_server_stats(const struct km_dns_server *s, struct km_dns_stats *out);

/* Stop serving at once and free the server once its handles have closed (run the loop to let
 * them). Accepts NULL. */
void km_dns_server_close(struct km_dns_server *s);

#endif
