/* mDNS/DNS-SD on the local link (RFC 6762, RFC 6763; DESIGN.md section 6, docs/MDNS.md).
 *
 * Each node publishes the service instance "<node ID>._keymesh._tcp.local" (PTR, SRV to
 * "<node ID>.local" at the mesh port, TXT "v=keymesh1" "k=<base64 key>" ["a=<base64>"...]) and
 * the host name's A and AAAA records, and browses for the other instances on the link.
 *
 * Two layers: the pure wire part (km_mdns_answer, km_mdns_build_*, km_mdns_parse_response:
 * bytes to bytes or bytes to results, no I/O, no clock, fuzzed by tests/fuzz/mdns.c) and the
 * libuv part (struct km_mdns: sockets on UDP 5353 per interface, timers, callbacks). */
#ifndef KM_DISCOVERY_MDNS_H
#define KM_DISCOVERY_MDNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "core/buf.h"
#include "core/err.h"
#include "discovery/announce.h"
#include "discovery/path.h"
#include "identity/key.h"

#define KM_MDNS_PORT 5353
/* Largest mDNS message we build or accept (RFC 6762 section 17). */
#define KM_MDNS_PKT_MAX 9000u
/* TTLs (RFC 6762 section 10): host name records, and everything else. */
#define KM_MDNS_TTL_HOST 120u
#define KM_MDNS_TTL_OTHER 4500u
/* Legacy unicast responses carry TTLs of at most this (RFC 6762 section 6.7). */
#define KM_MDNS_TTL_LEGACY 10u
/* Addresses published per interface, and kept per discovered instance. */
#define KM_MDNS_ADDRS_MAX 8u
/* Instances reported from one response; more are ignored (counted as dropped). */
#define KM_MDNS_INSTANCES_MAX 8u
/* Interfaces one km_mdns serves. */
#define KM_MDNS_IFACES_MAX 16u

/* ---- the pure wire part ---- */

/* What this node publishes on one interface. A parse-free value: the caller fills it. */
struct km_mdns_self {
    struct km_pubkey key;
    uint16_t port;                                    /* the mesh port (SRV) */
    struct sockaddr_storage addrs[KM_MDNS_ADDRS_MAX]; /* AF_INET / AF_INET6; port ignored */
    size_t n_addrs;
    const char *announcement; /* "a=<base64>" from km_announce_to_text, or NULL */
};

/* How a response to a query must be sent. */
enum km_mdns_reply {
    KM_MDNS_REPLY_NONE = 0,  /* nothing of ours was asked: stay silent */
    KM_MDNS_REPLY_MULTICAST, /* to the group, port 5353 */
    KM_MDNS_REPLY_UNICAST,   /* to the querier's address and port (QU bit or legacy) */
};

/* Answer the query q[0..len) received from UDP source port src_port. Matches PTR
 * "_services._dns-sd._udp.local" and "_keymesh._tcp.local", SRV/TXT/ANY of our instance and
 * A/AAAA/ANY of our host name, with the additional records of RFC 6763 section 12. A query
 * from a port other than 5353 is a legacy unicast query (RFC 6762 section 6.7): the reply
 * echoes the ID and question, caps TTLs at 10 s and sets no cache-flush bits. If every
 * question we answer has the unicast-response (QU) bit, the reply is unicast. Appends the
 * response to out (cleared first) and sets *how; *how is KM_MDNS_REPLY_NONE and out empty if
 * nothing matched or the message is a response. Returns 0, KM_ERR_INVALID for a malformed
 * message (truncation, bad names, compression loops, trailing bytes), KM_ERR_TOO_LARGE if
 * len > KM_MDNS_PKT_MAX or the answer does not fit out, -ENOMEM. */
KM_MUST_CHECK int km_mdns_answer(const struct km_mdns_self *self, const uint8_t *q, size_t len,
                                 uint16_t src_port, struct km_buf *out, enum km_mdns_reply *how);

/* Append an unsolicited response with all our records to out (cleared first): TTLs as in
 * normal answers, or all 0 with goodbye (RFC 6762 sections 8.3 and 10.1). Returns 0,
 * KM_ERR_TOO_LARGE, -ENOMEM. */
KM_MUST_CHECK int km_mdns_build_announce(const struct km_mdns_self *self, bool goodbye,
                                         struct km_buf *out);

/* Append the browse query (one question: PTR "_keymesh._tcp.local", QM) to out (cleared
 * first). Returns 0, KM_ERR_TOO_LARGE, -ENOMEM. */
KM_MUST_CHECK int km_mdns_build_query(struct km_buf *out);

/* One instance found in a response. A parse result: caller-provided storage. */
struct km_mdns_instance {
    struct km_pubkey key; /* from the instance name (node ID), confirmed by the TXT key */
    uint16_t port;        /* from SRV; 0 in a goodbye without SRV */
    uint32_t ttl;         /* smallest TTL of PTR/SRV/TXT seen; 0 = goodbye: forget it */
    struct sockaddr_storage addrs[KM_MDNS_ADDRS_MAX]; /* A/AAAA of the SRV target, port 0 */
    size_t n_addrs;
    uint8_t announcement[KM_ANNOUNCE_MAX]; /* decoded "a=" bytes, not verified */
    size_t announcement_len;               /* 0 if none */
};

/* Counters of one km_mdns_parse_response call. */
struct km_mdns_parse_stats {
    size_t rejected; /* instances with a TXT key that is not their node ID, or no v=keymesh1 */
    size_t dropped;  /* instances beyond the caller's capacity or incomplete (no SRV/TXT) */
};

/* Parse the response msg[0..len) into out[0..cap) and store the count in *n. Only instances
 * of "_keymesh._tcp.local" whose first label is a node ID are reported, and only if (unless
 * it is a goodbye: a PTR or SRV with TTL 0) the message carries their SRV and their TXT with
 * v=keymesh1 and k= equal to the key the node ID names (self-certifying); an instance with a
 * mismatching TXT is rejected. Every name is walked with bounded length, labels and
 * backward-only compression jumps. Pure: no I/O, no allocation. Returns 0 (*n may be 0),
 * KM_ERR_INVALID for a malformed message or a query, KM_ERR_TOO_LARGE if len >
 * KM_MDNS_PKT_MAX; *n is 0 on failure. st may be NULL. */
KM_MUST_CHECK int km_mdns_parse_response(const uint8_t *msg, size_t len,
                                         struct km_mdns_instance *out, size_t cap, size_t *n,
                                         struct km_mdns_parse_stats *st);

/* The path kind of an address: KM_PATH_LINK_LOCAL for fe80::/10 and 169.254.0.0/16,
 * KM_PATH_LAN otherwise. */
enum km_path_kind km_mdns_addr_kind(const struct sockaddr_storage *ss);

/* ---- the libuv part ---- */

struct km_mdns;

/* One discovered path, valid only during the callback. */
struct km_mdns_found {
    struct km_pubkey key;
    struct km_path path;         /* source KM_PATH_SRC_MDNS; addr with the SRV port (and the IPv6
                                    scope of the receiving interface); expires_ms = now + ttl */
    uint32_t ttl;                /* 0 = goodbye: forget the key's mDNS paths (path.addr is then
                                    AF_UNSPEC and expires_ms 0) */
    const uint8_t *announcement; /* decoded "a=" bytes, or NULL: give to km_announce_parse */
    size_t announcement_len;
};

/* Called once per discovered path (per address of an instance). */
typedef void (*km_mdns_found_cb)(void *arg, const struct km_mdns_found *found);

struct km_mdns_opts {
    struct km_pubkey key;      /* this node */
    uint16_t port;             /* the mesh port published in SRV */
    const char *const *ifaces; /* interface names; n_ifaces == 0 means every up,
                                  multicast-capable, non-loopback interface */
    size_t n_ifaces;
    const char *announcement; /* "a=<base64>" or NULL; copied */
};

struct km_mdns_stats {
    uint64_t rx;        /* datagrams received */
    uint64_t queries;   /* queries answered */
    uint64_t responses; /* responses parsed */
    uint64_t found;     /* paths reported to the callback (goodbyes included) */
    uint64_t rejected;  /* instances with a mismatching TXT key */
    uint64_t invalid;   /* malformed datagrams */
    uint64_t ignored;   /* responses not from port 5353, our own records, ... */
    uint64_t tx;        /* datagrams sent */
    uint64_t tx_errors; /* sends that failed (mDNS is best effort: not retried) */
    size_t n_sockets;   /* sockets open (one per interface and address family) */
};

/* Open UDP 5353 (SO_REUSEADDR/SO_REUSEPORT, so avahi may share it) on each interface, join
 * 224.0.0.251 and ff02::fb there, announce three times 1 s apart and browse (queries at 0, 1,
 * 2, 4, ... 32 s, then every 60 s). Found paths go to cb with arg. Our own instance is never
 * reported. Returns 0 and *out (close with km_mdns_close); KM_ERR_INVALID for bad options or
 * an unknown interface, KM_ERR_NOT_FOUND if no interface could be opened, -errno, -ENOMEM.
 * Needs CAP_NET_RAW (SO_BINDTODEVICE). */
KM_MUST_CHECK int km_mdns_new(uv_loop_t *loop, const struct km_mdns_opts *o, km_mdns_found_cb cb,
                              void *arg, struct km_mdns **out);

/* Replace the announcement text (NULL removes it) and announce once. Returns 0,
 * KM_ERR_TOO_LARGE if text is longer than KM_ANNOUNCE_TEXT_MAX - 1, KM_ERR_INVALID if it does
 * not start with "a=". */
KM_MUST_CHECK int km_mdns_set_announcement(struct km_mdns *m, const char *text);

/* Copy the counters. */
void km_mdns_get_stats(const struct km_mdns *m, struct km_mdns_stats *st);

/* Send goodbyes, stop, close every handle; the memory is freed in the last close callback,
 * so run the loop afterwards. Idempotent; accepts NULL. No callback runs after this. */
void km_mdns_close(struct km_mdns *m);

#endif
