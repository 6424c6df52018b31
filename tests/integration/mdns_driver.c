/* Test driver for tests/integration/mdns.sh: runs km_mdns with a fresh key on the given
 * interfaces for a few seconds and prints what it finds, one line per path:
 *
 *   self <node ID>
 *   found <node ID> <address> <port> <kind> ttl=<s> ann=<ok|none|bad>
 *   stats rx=.. tx=.. queries=.. responses=.. found=.. rejected=.. invalid=.. ignored=..
 *
 * Usage: mdns_driver SECONDS MESH-PORT [--announce] [IFACE...]. With --announce it publishes
 * a signed announcement of one LAN path (192.0.2.1 at the mesh port). Exits 0 only if every
 * handle closed (uv_loop_close returns 0). The lead replaces it with the daemon later. */
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "discovery/announce.h"
#include "discovery/mdns.h"
#include "identity/derive.h"

static struct km_mdns *mdns;

static void on_found(void *arg, const struct km_mdns_found *f)
{
    (void)arg;
    char id[KM_NODE_ID_LEN + 1];
    km_node_id(&f->key, id);
    char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2] = "-";
    unsigned port = 0;
    if (f->path.addr.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&f->path.addr;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        port = ntohs(s4->sin_port);
    } else if (f->path.addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&f->path.addr;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        port = ntohs(s6->sin6_port);
    }
    const char *ann = "none";
    if (f->announcement != NULL) {
        struct km_announce a;
        ann = km_announce_parse(f->announcement, f->announcement_len, (uint64_t)time(NULL), &a) ==
                          0 &&
                      km_pubkey_equal(&a.key, &f->key)
                  ? "ok"
                  : "bad";
    }
    printf("found %s %s %u %s ttl=%u ann=%s\n", id, host, port,
           f->ttl == 0 ? "goodbye" : km_path_kind_name(f->path.kind), (unsigned)f->ttl, ann);
    fflush(stdout);
}

static void on_stop(uv_timer_t *t)
{
    struct km_mdns_stats st;
    km_mdns_get_stats(mdns, &st);
    printf("stats rx=%llu tx=%llu queries=%llu responses=%llu found=%llu rejected=%llu "
           "invalid=%llu ignored=%llu sockets=%zu\n",
           (unsigned long long)st.rx, (unsigned long long)st.tx, (unsigned long long)st.queries,
           (unsigned long long)st.responses, (unsigned long long)st.found,
           (unsigned long long)st.rejected, (unsigned long long)st.invalid,
           (unsigned long long)st.ignored, st.n_sockets);
    fflush(stdout);
    km_mdns_close(mdns);
    uv_close((uv_handle_t *)t, NULL);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: mdns_driver SECONDS MESH-PORT [--announce] [IFACE...]\n");
        return 2;
    }
    char *end;
    unsigned long secs = strtoul(argv[1], &end, 10);
    if (*end != '\0' || secs == 0 || secs > 3600) {
        return 2;
    }
    unsigned long port = strtoul(argv[2], &end, 10);
    if (*end != '\0' || port == 0 || port > 65535) {
        return 2;
    }
    int first_if = 3;
    bool with_ann = argc > 3 && strcmp(argv[3], "--announce") == 0;
    if (with_ann) {
        first_if = 4;
    }
    struct km_key *k;
    if (km_key_generate(&k) != 0) {
        return 1;
    }
    char id[KM_NODE_ID_LEN + 1];
    km_node_id(km_key_pub(k), id);
    printf("self %s\n", id);
    fflush(stdout);

    char text[KM_ANNOUNCE_TEXT_MAX];
    struct km_mdns_opts o;
    memset(&o, 0, sizeof o);
    o.key = *km_key_pub(k);
    o.port = (uint16_t)port;
    o.ifaces = (const char *const *)(argv + first_if);
    o.n_ifaces = (size_t)(argc - first_if);
    if (with_ann) {
        struct km_path p;
        memset(&p, 0, sizeof p);
        p.kind = KM_PATH_LAN;
        struct sockaddr_in *s4 = (struct sockaddr_in *)&p.addr;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        s4->sin_addr.s_addr = htonl(0xc0000201u);
        struct km_buf b;
        km_buf_init(&b, KM_ANNOUNCE_MAX);
        if (km_announce_build(k, 1, (uint64_t)time(NULL) + 3600, &p, 1, &b) != 0 ||
            km_announce_to_text(km_buf_peek_ptr(&b), km_buf_len(&b), text, sizeof text) != 0) {
            return 1;
        }
        km_buf_reset(&b);
        o.announcement = text;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    int r = km_mdns_new(&loop, &o, on_found, NULL, &mdns);
    if (r != 0) {
        fprintf(stderr, "mdns_driver: %s\n", km_strerror(r));
        return 1;
    }
    uv_timer_t stop;
    uv_timer_init(&loop, &stop);
    uv_timer_start(&stop, on_stop, (uint64_t)secs * 1000u, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    km_key_free(k);
    r = uv_loop_close(&loop);
    if (r != 0) {
        fprintf(stderr, "mdns_driver: handles left open\n");
        return 1;
    }
    return 0;
}
