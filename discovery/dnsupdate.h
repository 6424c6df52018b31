/* Publishing this node to a real authoritative DNS server by RFC 2136 UPDATE signed with TSIG
 * (RFC 8945), so that any resolver finds it under a delegated zone (DESIGN.md section 6;
 * docs/DNS-UPDATE.md).
 *
 * One UPDATE for the zone replaces the node's RRsets at <node-id>.<zone>: AAAA = VIP, TXT =
 * "v=keymesh1 k=<base64 key>", SVCB = one record per path ranked for KM_REQ_OTHER (public
 * resolvers serve everyone), the same record shapes as the DNS server (discovery/dns.h).
 * Removal deletes those three RRsets. */
#ifndef KM_DISCOVERY_DNSUPDATE_H
#define KM_DISCOVERY_DNSUPDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "core/buf.h"
#include "core/err.h"
#include "discovery/path.h"
#include "identity/key.h"

/* Largest number of paths published (SVCB records in one UPDATE). */
#define KM_DNSUPDATE_MAX_PATHS 16

/* The outcome of one UPDATE transaction. */
enum km_dnsupdate_result {
    KM_DNSUPDATE_OK = 0,       /* NOERROR, response TSIG verified */
    KM_DNSUPDATE_NOTAUTH,      /* NOTAUTH without a TSIG error: not authoritative, or the key
                                * is not allowed to update */
    KM_DNSUPDATE_REFUSED,      /* REFUSED: policy (no update ACL for this key or zone) */
    KM_DNSUPDATE_BADSIG,       /* the server says our MAC is wrong (wrong secret) */
    KM_DNSUPDATE_BADKEY,       /* the server does not know our key name or algorithm */
    KM_DNSUPDATE_BADTIME,      /* clocks differ by more than the fudge */
    KM_DNSUPDATE_RCODE,        /* another RCODE (SERVFAIL, NOTZONE, ...) */
    KM_DNSUPDATE_BAD_RESPONSE, /* malformed, not a response, unsigned, or its TSIG fails */
    KM_DNSUPDATE_WRONG_ID,     /* the response's ID is not ours (UDP: ignored, keep waiting) */
    KM_DNSUPDATE_TRUNCATED,    /* TC=1: retry over TCP */
    KM_DNSUPDATE_TIMEOUT,      /* no answer within timeout_ms, after every retry */
    KM_DNSUPDATE_NETWORK,      /* a socket error */
    KM_DNSUPDATE_RESULT_N,
};

/* A short stable name ("ok", "notauth", "refused", "badsig", ...). Never NULL. */
const char *km_dnsupdate_result_name(enum km_dnsupdate_result r);

struct km_dnsupdate_opts {
    char zone[254];                 /* the delegated zone = the mesh suffix, no trailing dot */
    uint16_t prefix;                /* VIP prefix for the AAAA (KM_DEFAULT_PREFIX) */
    struct sockaddr_storage server; /* the primary's address and port */
    char tsig_name[254];            /* TSIG key name, e.g. "keymesh-test" */
    char tsig_algorithm[32];        /* "hmac-sha256" (default); any ldns knows */
    char tsig_secret[128];          /* base64 secret; wiped by km_dnsupdate_close */
    uint32_t ttl;                   /* seconds, for every published record (60) */
    bool tcp;                       /* always use TCP (default: UDP, TCP when truncated) */
    unsigned timeout_ms;            /* per attempt (2000) */
    unsigned retries;               /* further attempts after the first (3) */
    unsigned backoff_ms;            /* before the first retry, doubling each time (500) */
    unsigned refresh_ms;            /* republish interval; 0 = ttl / 2 */
};

/* Fill o with the defaults above (zone KM_DEFAULT_SUFFIX, no server, no key). */
void km_dnsupdate_opts_default(struct km_dnsupdate_opts *o);

/* What a sent UPDATE needs to check its response. */
struct km_dnsupdate_req {
    uint16_t id;
    uint8_t mac[2 + 64]; /* the request MAC as its TSIG rdata field: u16 length, bytes */
    size_t mac_len;
};

/* Build one signed UPDATE (pure but for the TSIG time, which ldns takes from the clock) with
 * message ID id: zone section <zone> SOA; prerequisite: the zone's SOA exists; updates: delete
 * the AAAA, TXT and SVCB RRsets of <node-id>.<zone>, then (unless remove) add the current AAAA,
 * TXT and one SVCB per path in paths[0..n) usable by KM_REQ_OTHER, ranked by km_path_rank
 * (at most KM_DNSUPDATE_MAX_PATHS; relay paths without a gateway and addresses other than
 * IPv4/IPv6 are skipped). The message is appended to out; req is filled for
 * km_dnsupdate_check. Returns 0, KM_ERR_INVALID (bad zone, key name, secret or algorithm),
 * KM_ERR_TOO_LARGE (out has no room, or over 65535 bytes) or -ENOMEM. */
KM_MUST_CHECK int km_dnsupdate_build(const struct km_dnsupdate_opts *o, const struct km_pubkey *key,
                                     const struct km_path *paths, size_t n, bool remove,
                                     uint16_t id, struct km_buf *out, struct km_dnsupdate_req *req);

/* Check the response msg[0..len) (without a TCP length prefix) to the request req (pure):
 * the ID, QR and opcode, TC, the TSIG (an error in it is reported as BADSIG/BADKEY/BADTIME
 * even unsigned, as RFC 8945 section 5.3.2 has the server send it; otherwise the MAC must
 * verify with the key over the request MAC), then the RCODE. */
enum km_dnsupdate_result km_dnsupdate_check(const struct km_dnsupdate_opts *o,
                                            const struct km_dnsupdate_req *req, const uint8_t *msg,
                                            size_t len);

struct km_dnsupdate;

/* Called with the final outcome of each transaction (after retries). */
typedef void (*km_dnsupdate_cb)(void *arg, enum km_dnsupdate_result r);

/* A publisher on loop for key. o is copied. Nothing is sent until the first
 * km_dnsupdate_set_paths. cb (may be NULL) hears every transaction's outcome. Returns 0,
 * KM_ERR_INVALID for bad options (no server, bad zone, key or secret), or a negative libuv
 * code; *out is NULL on failure. */
KM_MUST_CHECK int km_dnsupdate_new(uv_loop_t *loop, const struct km_dnsupdate_opts *o,
                                   const struct km_pubkey *key, km_dnsupdate_cb cb, void *arg,
                                   struct km_dnsupdate **out);

/* Replace the published paths (copied; at most KM_DNSUPDATE_MAX_PATHS ranked ones are used)
 * and publish now (or right after the transaction in flight). Afterwards the records are
 * republished every refresh_ms. Returns 0, or KM_ERR_INVALID after km_dnsupdate_remove. */
KM_MUST_CHECK int km_dnsupdate_set_paths(struct km_dnsupdate *u, const struct km_path *paths,
                                         size_t n);

/* Stop refreshing and send a removal UPDATE (abandoning any transaction in flight), with the
 * usual retries; done(arg, result) is called once when it finishes. The caller bounds its wait
 * with its own timer and then calls km_dnsupdate_close (done is then not called). */
void km_dnsupdate_remove(struct km_dnsupdate *u, km_dnsupdate_cb done, void *arg);

/* Counters for status. */
struct km_dnsupdate_stats {
    uint64_t sent;   /* messages sent, retries included */
    uint64_t ok;     /* transactions that succeeded */
    uint64_t failed; /* transactions that failed after their retries */
    enum km_dnsupdate_result last;
};
void km_dnsupdate_stats(const struct km_dnsupdate *u, struct km_dnsupdate_stats *out);

/* Stop at once and free u once its handles have closed (run the loop). No callback runs
 * after this. Accepts NULL. */
void km_dnsupdate_close(struct km_dnsupdate *u);

#endif
