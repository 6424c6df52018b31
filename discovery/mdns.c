/* mDNS/DNS-SD responder and browser on libuv (discovery/mdns.h, docs/MDNS.md). The wire
 * work is in mdns_wire.c; this file owns the sockets, the timers and the callbacks.
 *
 * One UDP socket per interface and address family, bound to port 5353 with SO_REUSEADDR and
 * SO_REUSEPORT (so avahi can share the port) and SO_BINDTODEVICE (so we know which interface
 * a query came in on, and publish that interface's addresses). Sends use uv_udp_try_send:
 * mDNS is best effort, and a datagram that cannot leave now is dropped and counted, so no
 * write request outlives the object. Multicast loopback stays on so that an avahi on the same
 * host sees us; our own records coming back are recognised by key and ignored. */
#include "discovery/mdns.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ANNOUNCE_COUNT 3          /* RFC 6762 section 8.3: at least two, one second apart */
#define ANNOUNCE_INTERVAL_MS 1000 /* ... */
#define QUERY_STEADY_MS 60000u    /* browse interval once the start-up burst is over */
#define QUERY_FIRST_STEPS 6       /* queries at 0, 1, 2, 4, 8, 16, 32 s: six doublings */

struct iface {
    struct km_mdns *m;
    char name[IF_NAMESIZE];
    unsigned index;
    uv_udp_t u4, u6;
    bool has4, has6;
    struct km_mdns_self self;
};

struct km_mdns {
    uv_loop_t *loop;
    km_mdns_found_cb cb;
    void *arg;
    struct km_pubkey key;
    uint16_t port;
    char ann[KM_ANNOUNCE_TEXT_MAX];
    bool has_ann;
    struct iface ifs[KM_MDNS_IFACES_MAX];
    size_t n_ifs;
    uv_timer_t t_announce, t_query;
    bool timers_open;
    unsigned n_announced, n_queries;
    bool closing;
    unsigned pending_closes;
    struct km_buf tx;
    uint8_t rx[KM_MDNS_PKT_MAX];
    struct km_mdns_instance inst[KM_MDNS_INSTANCES_MAX];
    struct km_mdns_stats st;
};

static void release(struct km_mdns *m)
{
    km_buf_reset(&m->tx);
    free(m);
}

static void on_close_udp(uv_handle_t *h)
{
    struct iface *f = h->data;
    struct km_mdns *m = f->m;
    if (--m->pending_closes == 0) {
        release(m);
    }
}

static void on_close_timer(uv_handle_t *h)
{
    struct km_mdns *m = h->data;
    if (--m->pending_closes == 0) {
        release(m);
    }
}

/* Refresh the published addresses of every interface: IPv4 and IPv6 link-local. */
static void refresh_addrs(struct km_mdns *m)
{
    struct ifaddrs *ifa = NULL;
    if (getifaddrs(&ifa) != 0) {
        return; /* keep the previous list */
    }
    for (size_t i = 0; i < m->n_ifs; i++) {
        struct iface *f = &m->ifs[i];
        f->self.n_addrs = 0;
        for (struct ifaddrs *p = ifa; p != NULL; p = p->ifa_next) {
            if (p->ifa_addr == NULL || strcmp(p->ifa_name, f->name) != 0 ||
                f->self.n_addrs == KM_MDNS_ADDRS_MAX) {
                continue;
            }
            struct sockaddr_storage *ss = &f->self.addrs[f->self.n_addrs];
            if (p->ifa_addr->sa_family == AF_INET) {
                memset(ss, 0, sizeof *ss);
                memcpy(ss, p->ifa_addr, sizeof(struct sockaddr_in));
                f->self.n_addrs++;
            } else if (p->ifa_addr->sa_family == AF_INET6) {
                memset(ss, 0, sizeof *ss);
                memcpy(ss, p->ifa_addr, sizeof(struct sockaddr_in6));
                if (km_mdns_addr_kind(ss) == KM_PATH_LINK_LOCAL) {
                    f->self.n_addrs++;
                }
            }
        }
    }
    freeifaddrs(ifa);
}

static void group_addr(const struct iface *f, int family, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(KM_MDNS_PORT);
        s4->sin_addr.s_addr = htonl(0xe00000fbu); /* 224.0.0.251 */
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(KM_MDNS_PORT);
        s6->sin6_addr.s6_addr[0] = 0xff; /* ff02::fb */
        s6->sin6_addr.s6_addr[1] = 0x02;
        s6->sin6_addr.s6_addr[15] = 0xfb;
        s6->sin6_scope_id = f->index;
    }
}

static void send_buf(struct km_mdns *m, uv_udp_t *h, const struct sockaddr *to)
{
    /* libuv does not write through base; uv_buf_t just has no const variant. */
    uv_buf_t b =
        uv_buf_init((char *)(uintptr_t)km_buf_peek_ptr(&m->tx), (unsigned)km_buf_len(&m->tx));
    if (uv_udp_try_send(h, &b, 1, to) < 0) {
        m->st.tx_errors++;
    } else {
        m->st.tx++;
    }
}

/* Send m->tx to the group on every open socket of f. */
static void send_group(struct km_mdns *m, struct iface *f, int family)
{
    struct sockaddr_storage g;
    group_addr(f, family, &g);
    if (family == AF_INET && f->has4) {
        send_buf(m, &f->u4, (const struct sockaddr *)&g);
    } else if (family == AF_INET6 && f->has6) {
        send_buf(m, &f->u6, (const struct sockaddr *)&g);
    }
}

static void announce(struct km_mdns *m, bool goodbye)
{
    for (size_t i = 0; i < m->n_ifs; i++) {
        struct iface *f = &m->ifs[i];
        f->self.announcement = m->has_ann ? m->ann : NULL;
        if (km_mdns_build_announce(&f->self, goodbye, &m->tx) != 0) {
            m->st.tx_errors++;
            continue;
        }
        send_group(m, f, AF_INET);
        send_group(m, f, AF_INET6);
    }
}

static void on_announce(uv_timer_t *t)
{
    struct km_mdns *m = t->data;
    if (m->closing) {
        return;
    }
    if (m->n_announced == 0) {
        refresh_addrs(m);
    }
    announce(m, false);
    if (++m->n_announced >= ANNOUNCE_COUNT) {
        uv_timer_stop(t);
    }
}

static void on_query(uv_timer_t *t)
{
    struct km_mdns *m = t->data;
    if (m->closing) {
        return;
    }
    refresh_addrs(m);
    if (km_mdns_build_query(&m->tx) == 0) {
        for (size_t i = 0; i < m->n_ifs; i++) {
            send_group(m, &m->ifs[i], AF_INET);
            send_group(m, &m->ifs[i], AF_INET6);
        }
    }
    uint64_t next = m->n_queries < QUERY_FIRST_STEPS
                        ? (m->n_queries == 0 ? 1000u : (1000u << (m->n_queries - 1)))
                        : QUERY_STEADY_MS;
    m->n_queries++;
    uv_timer_start(t, on_query, next, 0);
}

/* Report each path of one instance found on f; from is the packet's source. */
static void report(struct km_mdns *m, struct iface *f, const struct sockaddr *from,
                   const struct km_mdns_instance *in)
{
    struct km_mdns_found fd;
    memset(&fd, 0, sizeof fd);
    fd.key = in->key;
    fd.ttl = in->ttl;
    fd.path.source = KM_PATH_SRC_MDNS;
    fd.announcement = in->announcement_len > 0 ? in->announcement : NULL;
    fd.announcement_len = in->announcement_len;
    if (in->ttl == 0) {
        fd.path.addr.ss_family = AF_UNSPEC;
        m->st.found++;
        m->cb(m->arg, &fd);
        return;
    }
    if (in->port == 0) {
        m->st.ignored++;
        return;
    }
    uint64_t expires = uv_now(m->loop) + (uint64_t)in->ttl * 1000u;
    size_t n = in->n_addrs;
    for (size_t i = 0; i < (n == 0 ? 1 : n) && !m->closing; i++) {
        struct sockaddr_storage *a = &fd.path.addr;
        memset(a, 0, sizeof *a);
        if (n == 0) {
            /* No address records: the packet's source is the best we have. */
            memcpy(a, from,
                   from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                               : sizeof(struct sockaddr_in));
        } else {
            *a = in->addrs[i];
        }
        if (a->ss_family == AF_INET) {
            ((struct sockaddr_in *)a)->sin_port = htons(in->port);
        } else if (a->ss_family == AF_INET6) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)a;
            s6->sin6_port = htons(in->port);
            s6->sin6_flowinfo = 0;
            s6->sin6_scope_id = km_mdns_addr_kind(a) == KM_PATH_LINK_LOCAL ? f->index : 0;
        } else {
            continue;
        }
        fd.path.kind = km_mdns_addr_kind(a);
        fd.path.expires_ms = expires;
        m->st.found++;
        m->cb(m->arg, &fd);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct iface *f = h->data;
    /* One receive buffer per object: libuv calls alloc and recv back to back. */
    *buf = uv_buf_init((char *)f->m->rx, sizeof f->m->rx);
}

static void on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags)
{
    struct iface *f = h->data;
    struct km_mdns *m = f->m;
    if (m->closing || nread <= 0 || addr == NULL) {
        return; /* nothing, or a receive error: mDNS just waits for the next datagram */
    }
    m->st.rx++;
    if ((flags & UV_UDP_PARTIAL) != 0 || nread < 12) {
        m->st.invalid++;
        return;
    }
    const uint8_t *p = (const uint8_t *)buf->base;
    size_t len = (size_t)nread;
    uint16_t src_port =
        ntohs(addr->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)addr)->sin6_port
                                          : ((const struct sockaddr_in *)addr)->sin_port);
    if ((p[2] & 0x80u) == 0) {
        /* A query. */
        enum km_mdns_reply how;
        f->self.announcement = m->has_ann ? m->ann : NULL;
        if (km_mdns_answer(&f->self, p, len, src_port, &m->tx, &how) != 0) {
            m->st.invalid++;
            return;
        }
        if (how == KM_MDNS_REPLY_NONE) {
            return;
        }
        m->st.queries++;
        if (how == KM_MDNS_REPLY_UNICAST) {
            send_buf(m, h, addr);
        } else {
            send_group(m, f, addr->sa_family);
        }
        return;
    }
    /* A response: only from port 5353 (RFC 6762 section 6). */
    if (src_port != KM_MDNS_PORT) {
        m->st.ignored++;
        return;
    }
    size_t n = 0;
    struct km_mdns_parse_stats ps;
    if (km_mdns_parse_response(p, len, m->inst, KM_MDNS_INSTANCES_MAX, &n, &ps) != 0) {
        m->st.invalid++;
        return;
    }
    m->st.responses++;
    m->st.rejected += ps.rejected;
    for (size_t i = 0; i < n && !m->closing; i++) {
        if (memcmp(m->inst[i].key.b, m->key.b, KM_PUBKEY_LEN) == 0) {
            m->st.ignored++; /* our own records, looped back */
            continue;
        }
        report(m, f, addr, &m->inst[i]);
    }
}

/* Open, configure and register one socket of f; returns 0 or -errno. */
static int open_sock(struct km_mdns *m, struct iface *f, int family, uv_udp_t *h)
{
    int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return KM_ERR_SYS(errno);
    }
    int one = 1, ttl = 255;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    int r = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, f->name, (socklen_t)strlen(f->name)) != 0) {
        r = KM_ERR_SYS(errno);
        goto fail;
    }
    if (family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(KM_MDNS_PORT);
        sl = sizeof *s4;
        struct ip_mreqn mr;
        memset(&mr, 0, sizeof mr);
        mr.imr_multiaddr.s_addr = htonl(0xe00000fbu);
        mr.imr_ifindex = (int)f->index;
        /* TTL 255 on everything we send (RFC 6762 section 11). */
        if (bind(fd, (struct sockaddr *)&ss, sl) != 0 ||
            setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof mr) != 0 ||
            setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &mr, sizeof mr) != 0 ||
            setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl) != 0 ||
            setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &one, sizeof one) != 0) {
            r = KM_ERR_SYS(errno);
            goto fail;
        }
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(KM_MDNS_PORT);
        sl = sizeof *s6;
        struct ipv6_mreq mr;
        memset(&mr, 0, sizeof mr);
        group_addr(f, AF_INET6, &ss);
        mr.ipv6mr_multiaddr = ((struct sockaddr_in6 *)&ss)->sin6_addr;
        mr.ipv6mr_interface = f->index;
        memset(&ss, 0, sizeof ss);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(KM_MDNS_PORT);
        int idx = (int)f->index;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0 ||
            bind(fd, (struct sockaddr *)&ss, sl) != 0 ||
            setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &mr, sizeof mr) != 0 ||
            setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &idx, sizeof idx) != 0 ||
            setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &ttl, sizeof ttl) != 0 ||
            setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &one, sizeof one) != 0) {
            r = KM_ERR_SYS(errno);
            goto fail;
        }
    }
    if ((r = uv_udp_init(m->loop, h)) != 0) {
        goto fail;
    }
    h->data = f;
    m->pending_closes++; /* from here on the handle is closed through uv_close */
    if (family == AF_INET) {
        f->has4 = true;
    } else {
        f->has6 = true;
    }
    if ((r = uv_udp_open(h, fd)) != 0) {
        close(fd);
        return r;
    }
    m->st.n_sockets++;
    return uv_udp_recv_start(h, on_alloc, on_recv);
fail:
    close(fd);
    return r;
}

static void close_handles(struct km_mdns *m)
{
    for (size_t i = 0; i < m->n_ifs; i++) {
        struct iface *f = &m->ifs[i];
        if (f->has4) {
            uv_close((uv_handle_t *)&f->u4, on_close_udp);
            f->has4 = false;
        }
        if (f->has6) {
            uv_close((uv_handle_t *)&f->u6, on_close_udp);
            f->has6 = false;
        }
    }
    if (m->timers_open) {
        uv_close((uv_handle_t *)&m->t_announce, on_close_timer);
        uv_close((uv_handle_t *)&m->t_query, on_close_timer);
        m->timers_open = false;
    }
    if (m->pending_closes == 0) {
        release(m);
    }
}

static int add_iface(struct km_mdns *m, const char *name)
{
    for (size_t i = 0; i < m->n_ifs; i++) {
        if (strcmp(m->ifs[i].name, name) == 0) {
            return 0;
        }
    }
    if (m->n_ifs == KM_MDNS_IFACES_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    size_t len = strlen(name);
    unsigned idx = if_nametoindex(name);
    if (len == 0 || len >= IF_NAMESIZE || idx == 0) {
        return KM_ERR_INVALID;
    }
    struct iface *f = &m->ifs[m->n_ifs++];
    memset(f, 0, sizeof *f);
    f->m = m;
    memcpy(f->name, name, len + 1);
    f->index = idx;
    f->self.key = m->key;
    f->self.port = m->port;
    return 0;
}

static int pick_ifaces(struct km_mdns *m, const struct km_mdns_opts *o)
{
    int r;
    if (o->n_ifaces > 0) {
        for (size_t i = 0; i < o->n_ifaces; i++) {
            if (o->ifaces[i] == NULL || (r = add_iface(m, o->ifaces[i])) != 0) {
                return KM_ERR_INVALID;
            }
        }
        return 0;
    }
    struct ifaddrs *ifa = NULL;
    if (getifaddrs(&ifa) != 0) {
        return KM_ERR_SYS(errno);
    }
    for (struct ifaddrs *p = ifa; p != NULL; p = p->ifa_next) {
        unsigned fl = p->ifa_flags;
        if ((fl & IFF_UP) && (fl & IFF_MULTICAST) && !(fl & IFF_LOOPBACK)) {
            (void)add_iface(m, p->ifa_name); /* beyond KM_MDNS_IFACES_MAX: ignored */
        }
    }
    freeifaddrs(ifa);
    return 0;
}

int km_mdns_set_announcement(struct km_mdns *m, const char *text)
{
    if (text == NULL) {
        m->has_ann = false;
    } else {
        size_t len = strnlen(text, KM_ANNOUNCE_TEXT_MAX);
        if (len >= KM_ANNOUNCE_TEXT_MAX) {
            return KM_ERR_TOO_LARGE;
        }
        if (len < 2 || memcmp(text, "a=", 2) != 0) {
            return KM_ERR_INVALID;
        }
        memcpy(m->ann, text, len + 1);
        m->has_ann = true;
    }
    if (!m->closing && m->n_announced > 0) {
        announce(m, false); /* a changed record is announced again (RFC 6762 section 8.4) */
    }
    return 0;
}

int km_mdns_new(uv_loop_t *loop, const struct km_mdns_opts *o, km_mdns_found_cb cb, void *arg,
                struct km_mdns **out)
{
    *out = NULL;
    if (loop == NULL || o == NULL || cb == NULL || o->port == 0 ||
        (o->n_ifaces > 0 && o->ifaces == NULL)) {
        return KM_ERR_INVALID;
    }
    struct km_mdns *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return -ENOMEM;
    }
    m->loop = loop;
    m->cb = cb;
    m->arg = arg;
    m->key = o->key;
    m->port = o->port;
    km_buf_init(&m->tx, KM_MDNS_PKT_MAX);
    int r;
    if (o->announcement != NULL && (r = km_mdns_set_announcement(m, o->announcement)) != 0) {
        release(m);
        return r;
    }
    if ((r = pick_ifaces(m, o)) != 0) {
        release(m);
        return r;
    }
    for (size_t i = 0; i < m->n_ifs; i++) {
        /* A family that cannot be opened on an interface (no IPv6, say) is skipped. */
        (void)open_sock(m, &m->ifs[i], AF_INET, &m->ifs[i].u4);
        (void)open_sock(m, &m->ifs[i], AF_INET6, &m->ifs[i].u6);
    }
    if (m->st.n_sockets == 0) {
        m->closing = true;
        close_handles(m);
        return KM_ERR_NOT_FOUND;
    }
    if (uv_timer_init(loop, &m->t_announce) != 0 || uv_timer_init(loop, &m->t_query) != 0) {
        m->closing = true;
        close_handles(m);
        return -ENOMEM;
    }
    m->t_announce.data = m;
    m->t_query.data = m;
    m->timers_open = true;
    m->pending_closes += 2;
    uv_timer_start(&m->t_announce, on_announce, 0, ANNOUNCE_INTERVAL_MS);
    uv_timer_start(&m->t_query, on_query, 0, 0);
    *out = m;
    return 0;
}

void km_mdns_get_stats(const struct km_mdns *m, struct km_mdns_stats *st)
{
    *st = m->st;
}

void km_mdns_close(struct km_mdns *m)
{
    if (m == NULL || m->closing) {
        return;
    }
    if (m->n_announced > 0) {
        announce(m, true); /* goodbye: TTL 0 (RFC 6762 section 10.1) */
    }
    m->closing = true;
    close_handles(m);
}
