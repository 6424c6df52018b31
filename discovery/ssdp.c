#include "discovery/ssdp.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Header lines looked at in one answer; a longer one is refused. */
#define MAX_LINES 64u
/* Largest answer read: an SSDP answer is a few hundred bytes. */
#define RX_MAX 2048u

/* What we search for, as miniupnpc's upnpDiscover does (less "upnp:rootdevice", which every
 * UPnP device answers). */
static const char *const search_targets[] = {
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
};

/* ---- the pure wire part ---- */

size_t km_ssdp_format_search(char *out, size_t cap, const char *st, unsigned mx_s)
{
    int n = snprintf(out, cap,
                     "M-SEARCH * HTTP/1.1\r\n"
                     "HOST: " KM_SSDP_GROUP ":%u\r\n"
                     "MAN: \"ssdp:discover\"\r\n"
                     "MX: %u\r\n"
                     "ST: %s\r\n"
                     "\r\n",
                     KM_SSDP_PORT, mx_s, st);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

static bool starts_with_ci(const uint8_t *p, size_t len, const char *s)
{
    size_t n = strlen(s);
    return len >= n && strncasecmp((const char *)p, s, n) == 0;
}

/* Does v[0..len) contain s, ignoring case? */
static bool contains_ci(const uint8_t *v, size_t len, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i + n <= len; i++) {
        if (strncasecmp((const char *)v + i, s, n) == 0) {
            return true;
        }
    }
    return false;
}

/* The status line: "HTTP/1.<digit> 200" then a space or the end of the line. */
static bool status_ok(const uint8_t *l, size_t len)
{
    static const char pre[] = "HTTP/1.";
    size_t n = sizeof pre - 1;
    if (len < n + 5 || memcmp(l, pre, n) != 0 || l[n] < '0' || l[n] > '9' || l[n + 1] != ' ' ||
        memcmp(l + n + 2, "200", 3) != 0) {
        return false;
    }
    return len == n + 5 || l[n + 5] == ' ';
}

/* Check an "http://a.b.c.d[:port][/path]" URL of visible ASCII whose host is from. */
static int check_url(const uint8_t *v, size_t len, uint32_t from)
{
    static const char scheme[] = "http://";
    size_t n = sizeof scheme - 1;
    if (!starts_with_ci(v, len, scheme)) {
        return KM_ERR_INVALID;
    }
    for (size_t i = 0; i < len; i++) {
        if (v[i] < 0x21 || v[i] > 0x7e) {
            return KM_ERR_INVALID;
        }
    }
    size_t h = n;
    while (h < len && v[h] != ':' && v[h] != '/') {
        h++;
    }
    char host[INET_ADDRSTRLEN];
    if (h - n == 0 || h - n >= sizeof host) {
        return KM_ERR_INVALID;
    }
    memcpy(host, v + n, h - n);
    host[h - n] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) != 1 || a.s_addr != from) {
        return KM_ERR_INVALID;
    }
    size_t i = h;
    if (i < len && v[i] == ':') {
        uint32_t port = 0;
        size_t digits = 0;
        for (i++; i < len && v[i] >= '0' && v[i] <= '9' && digits < 5; i++, digits++) {
            port = port * 10u + (uint32_t)(v[i] - '0');
        }
        if (digits == 0 || port == 0 || port > 65535u) {
            return KM_ERR_INVALID;
        }
    }
    return i == len || v[i] == '/' ? 0 : KM_ERR_INVALID;
}

int km_ssdp_parse_response(const uint8_t *p, size_t len, uint32_t from, char *url, size_t cap)
{
    if (cap > 0) {
        url[0] = '\0';
    }
    const uint8_t *loc = NULL, *st = NULL;
    size_t loc_len = 0, st_len = 0;
    size_t pos = 0;
    for (unsigned line = 0;; line++) {
        if (pos >= len || line > MAX_LINES) {
            return KM_ERR_INVALID; /* the headers must end with an empty line */
        }
        const uint8_t *l = p + pos;
        const uint8_t *nl = memchr(l, '\n', len - pos);
        if (nl == NULL) {
            return KM_ERR_INVALID;
        }
        size_t l_len = (size_t)(nl - l);
        pos += l_len + 1;
        if (l_len > 0 && l[l_len - 1] == '\r') {
            l_len--;
        }
        if (line == 0) {
            if (!status_ok(l, l_len)) {
                return KM_ERR_INVALID;
            }
            continue;
        }
        if (l_len == 0) {
            break;
        }
        const uint8_t *colon = memchr(l, ':', l_len);
        if (colon == NULL || colon == l) {
            return KM_ERR_INVALID;
        }
        size_t name_len = (size_t)(colon - l);
        const uint8_t *v = colon + 1;
        size_t v_len = l_len - name_len - 1;
        while (v_len > 0 && (v[0] == ' ' || v[0] == '\t')) {
            v++;
            v_len--;
        }
        while (v_len > 0 && (v[v_len - 1] == ' ' || v[v_len - 1] == '\t')) {
            v_len--;
        }
        if (name_len == 8 && strncasecmp((const char *)l, "LOCATION", 8) == 0) {
            if (loc != NULL) {
                return KM_ERR_INVALID; /* two locations: which one is meant? */
            }
            loc = v;
            loc_len = v_len;
        } else if (name_len == 2 && strncasecmp((const char *)l, "ST", 2) == 0) {
            if (st != NULL) {
                return KM_ERR_INVALID;
            }
            st = v;
            st_len = v_len;
        }
    }
    if (st == NULL || loc == NULL ||
        !(contains_ci(st, st_len, ":device:InternetGatewayDevice:") ||
          contains_ci(st, st_len, ":service:WANIPConnection:") ||
          contains_ci(st, st_len, ":service:WANPPPConnection:"))) {
        return KM_ERR_INVALID;
    }
    int r = check_url(loc, loc_len, from);
    if (r != 0) {
        return r;
    }
    if (loc_len >= cap) {
        return KM_ERR_TOO_LARGE;
    }
    memcpy(url, loc, loc_len);
    url[loc_len] = '\0';
    return 0;
}

/* ---- the loop part ---- */

struct km_ssdp {
    uv_udp_t udp;
    uv_timer_t timer;
    km_ssdp_cb cb; /* NULL once cancelled or reported */
    void *arg;
    int n_open; /* handles not yet closed */
    struct km_ssdp_result res;
    uint8_t rx[RX_MAX];
};

static void on_closed(uv_handle_t *h)
{
    struct km_ssdp *s = h->data;
    if (--s->n_open == 0) {
        free(s);
    }
}

static void shut(struct km_ssdp *s)
{
    s->cb = NULL;
    if (!uv_is_closing((uv_handle_t *)&s->udp)) {
        uv_close((uv_handle_t *)&s->udp, on_closed);
        uv_close((uv_handle_t *)&s->timer, on_closed);
    }
}

static void report(struct km_ssdp *s)
{
    km_ssdp_cb cb = s->cb;
    shut(s); /* the handles close after this iteration: res stays valid for the call */
    if (cb != NULL) {
        cb(s->arg, &s->res);
    }
}

static void on_timer(uv_timer_t *t)
{
    report(t->data);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    struct km_ssdp *s = h->data;
    *buf = uv_buf_init((char *)s->rx, sizeof s->rx);
}

static void on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags)
{
    struct km_ssdp *s = h->data;
    if (nread <= 0 || addr == NULL || addr->sa_family != AF_INET || s->cb == NULL) {
        return;
    }
    if ((flags & UV_UDP_PARTIAL) != 0) {
        s->res.n_ignored++;
        return;
    }
    const struct sockaddr_in *from = (const struct sockaddr_in *)addr;
    char url[KM_SSDP_URL_MAX];
    if (km_ssdp_parse_response((const uint8_t *)buf->base, (size_t)nread, from->sin_addr.s_addr,
                               url, sizeof url) != 0) {
        s->res.n_ignored++;
        return;
    }
    for (size_t i = 0; i < s->res.n_urls; i++) {
        if (strcmp(s->res.urls[i], url) == 0) {
            return; /* the same router answering another search target */
        }
    }
    if (s->res.n_urls == KM_SSDP_URLS_MAX) {
        return;
    }
    memcpy(s->res.urls[s->res.n_urls++], url, sizeof url);
    if (s->res.n_urls == 1 && uv_timer_get_due_in(&s->timer) > KM_SSDP_GRACE_MS) {
        (void)uv_timer_start(&s->timer, on_timer, KM_SSDP_GRACE_MS, 0);
    }
}

/* Send every search; returns how many went out, and the last error in s->res.send_error. */
static size_t send_searches(struct km_ssdp *s, const struct sockaddr_in *to)
{
    size_t sent = 0;
    for (size_t i = 0; i < sizeof search_targets / sizeof search_targets[0]; i++) {
        char msg[256];
        size_t n = km_ssdp_format_search(msg, sizeof msg, search_targets[i], 1);
        uv_buf_t b = uv_buf_init(msg, (unsigned)n);
        int r = uv_udp_try_send(&s->udp, &b, 1, (const struct sockaddr *)to);
        if (r < 0) {
            s->res.send_error = r;
        } else {
            sent++;
        }
    }
    if (sent > 0) {
        s->res.send_error = 0;
    }
    return sent;
}

int km_ssdp_search(uv_loop_t *loop, uint32_t timeout_ms, const struct sockaddr_in *to,
                   km_ssdp_cb cb, void *arg, struct km_ssdp **out)
{
    *out = NULL;
    if (timeout_ms == 0) {
        return KM_ERR_INVALID;
    }
    struct km_ssdp *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return -ENOMEM;
    }
    s->cb = cb;
    s->arg = arg;
    int r = uv_timer_init(loop, &s->timer);
    if (r != 0) {
        free(s);
        return r;
    }
    s->timer.data = s;
    s->n_open = 1;
    if ((r = uv_udp_init(loop, &s->udp)) != 0) {
        uv_close((uv_handle_t *)&s->timer, on_closed);
        return r;
    }
    s->udp.data = s;
    s->n_open = 2;
    struct sockaddr_in any = {.sin_family = AF_INET};
    struct sockaddr_in group = {.sin_family = AF_INET, .sin_port = htons(KM_SSDP_PORT)};
    (void)inet_pton(AF_INET, KM_SSDP_GROUP, &group.sin_addr);
    /* TTL 2, as UDA 1.1 suggests (and miniupnpc sends): the router is one hop away. */
    if ((r = uv_udp_bind(&s->udp, (const struct sockaddr *)&any, 0)) != 0 ||
        (r = uv_udp_set_multicast_ttl(&s->udp, 2)) != 0 ||
        (r = uv_udp_recv_start(&s->udp, on_alloc, on_recv)) != 0) {
        shut(s);
        return r;
    }
    bool none_sent = send_searches(s, to != NULL ? to : &group) == 0;
    (void)uv_timer_start(&s->timer, on_timer, none_sent ? 0 : timeout_ms, 0);
    *out = s;
    return 0;
}

void km_ssdp_cancel(struct km_ssdp *s)
{
    if (s != NULL) {
        shut(s);
    }
}
