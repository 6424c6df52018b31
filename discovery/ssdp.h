/* SSDP search for a UPnP Internet Gateway Device (UPnP Device Architecture 1.1 section 1.3),
 * on the loop: one UDP socket sends M-SEARCH to 239.255.255.250:1900 and collects the
 * description URLs routers answer with. miniupnpc's upnpDiscover does the same on a thread,
 * but blocks it for at least a second per device type it asks for (four: 4 s without a
 * router) and cannot be interrupted, so a daemon shutting down had to wait for it. Here a
 * cancel takes effect at once; the port mapper (portmap.c) hands the URLs to miniupnpc for the
 * description and the SOAP calls.
 *
 * Two layers: the pure wire part (km_ssdp_format_search, km_ssdp_parse_response: no I/O,
 * fuzzed by tests/fuzz/ssdp.c) and the loop part (struct km_ssdp). */
#ifndef KM_DISCOVERY_SSDP_H
#define KM_DISCOVERY_SSDP_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "core/err.h"

#define KM_SSDP_PORT 1900
#define KM_SSDP_GROUP "239.255.255.250"
/* Description URLs kept from one search; further routers are ignored. */
#define KM_SSDP_URLS_MAX 4u
/* Longest description URL accepted, terminator included. */
#define KM_SSDP_URL_MAX 256u
/* After the first answer, how long a search waits for more before it reports. */
#define KM_SSDP_GRACE_MS 200u

/* ---- the pure wire part ---- */

/* Write the M-SEARCH request for search target st (e.g.
 * "urn:schemas-upnp-org:device:InternetGatewayDevice:1") with MX mx_s seconds into out.
 * Returns its length, or 0 if it does not fit in cap. */
size_t km_ssdp_format_search(char *out, size_t cap, const char *st, unsigned mx_s);

/* Parse one datagram p[0..len) received from IPv4 address from (network order) in answer to
 * a search. It must be "HTTP/1.x 200", with an ST header naming an Internet Gateway Device or
 * its WANIPConnection or WANPPPConnection service, and a LOCATION header holding an "http://"
 * URL of visible ASCII whose host is the dotted-quad address the answer came from (so no host
 * on the LAN can make this node fetch a URL from elsewhere). Copies the URL, NUL-terminated,
 * into url[0..cap). Returns 0, KM_ERR_INVALID, or KM_ERR_TOO_LARGE when the URL does not fit
 * in cap. */
KM_MUST_CHECK int km_ssdp_parse_response(const uint8_t *p, size_t len, uint32_t from, char *url,
                                         size_t cap);

/* ---- the loop part ---- */

/* What a search found. */
struct km_ssdp_result {
    size_t n_urls;
    char urls[KM_SSDP_URLS_MAX][KM_SSDP_URL_MAX]; /* distinct description URLs, first first */
    uint32_t n_ignored;                           /* answers that failed km_ssdp_parse_response */
    int send_error; /* 0, or why no request could be sent (-ENETUNREACH without a route) */
};

struct km_ssdp;

/* Called once, on the loop, when the search ends: KM_SSDP_GRACE_MS after the first usable
 * answer, at the timeout, or at once when nothing could be sent. The object is freed after
 * the callback returns; res is valid only during the call. */
typedef void (*km_ssdp_cb)(void *arg, const struct km_ssdp_result *res);

/* Start a search lasting at most timeout_ms (at least 1). to is where the requests go: NULL
 * for the SSDP group on port 1900 (tests give a loopback responder). Returns 0 and *out (owned
 * by the search until its callback or km_ssdp_cancel), KM_ERR_INVALID for a zero timeout,
 * -ENOMEM, or a libuv error opening the socket. */
KM_MUST_CHECK int km_ssdp_search(uv_loop_t *loop, uint32_t timeout_ms, const struct sockaddr_in *to,
                                 km_ssdp_cb cb, void *arg, struct km_ssdp **out);

/* Stop a search before its callback: no callback follows, and the object frees itself on the
 * next loop iteration. Not to be called from or after the callback. Accepts NULL. */
void km_ssdp_cancel(struct km_ssdp *s);

#endif
