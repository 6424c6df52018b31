/* Reverse forwards for capability holders with `expose` (RFC 4254 section 7.1,
 * docs/CAPABILITIES.md): "tcpip-forward" makes this node listen on 127.0.0.1:PORT, and each
 * connection there becomes a "forwarded-tcpip" channel to the client, spliced by the relay.
 * The listener always binds loopback, whatever address the client named: exposing a service
 * beyond this machine is the gateway's job (a later issue). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/relay.h"
#include "core/uvstream.h"
#include "proto/ssh_int.h"

#define FWD_MAX 8u /* reverse forwards per connection */

struct km_ssh_fwd {
    struct km_ssh_conn *conn;
    uv_tcp_t *listener;
    char addr[256];    /* the address the client asked for, echoed in channel opens */
    uint16_t req_port; /* the port it asked for (0: any) */
    uint16_t port;     /* the port bound */
    struct km_ssh_fwd *next;
};

static void on_open(void *arg, int err, struct km_stream *chan)
{
    struct km_stream *s = arg;
    if (err != 0) {
        KM_DEBUG("%s: forwarded-tcpip refused: %s", km_stream_describe(s), km_strerror(err));
        km_stream_close(s);
        return;
    }
    if (km_relay_start(s, chan, NULL, 0, NULL, NULL) != 0) {
        KM_WARN("reverse forward: cannot start a relay");
    }
}

static void on_connection(uv_stream_t *l, int status)
{
    struct km_ssh_fwd *f = l->data;
    struct km_stream *s = NULL;
    if (status < 0 || km_uvstream_accept(l, &s) != 0) {
        return;
    }
    struct km_ssh_conn *c = f->conn;
    struct sockaddr_storage ss;
    char ip[INET6_ADDRSTRLEN] = "127.0.0.1";
    uint16_t oport = 0;
    if (km_uvstream_peername(s, &ss) == 0 && ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
        oport = ntohs(sin->sin_port);
    }
    struct km_ssh_open *req;
    uint16_t port = f->req_port != 0 ? f->req_port : f->port;
    if (km__ssh_open(c, f->addr, port, ip, oport, on_open, s, &req) != 0) {
        KM_INFO("%s: reverse forward %u: cannot open a channel", c->desc, f->port);
        km_stream_close(s);
    }
}

static void refuse(struct km_ssh_conn *c, ssh_message m, const char *why, int port)
{
    KM_INFO("%s: reverse forward of port %d refused: %s", c->desc, port, why);
    (void)ssh_message_reply_default(m);
    ssh_message_free(m);
}

static void fwd_free(struct km_ssh_fwd *f)
{
    km_uvstream_listener_close(f->listener);
    free(f);
}

void km__ssh_fwd_request(struct km_ssh_conn *c, ssh_message m)
{
    const char *addr = ssh_message_global_request_address(m);
    int port = ssh_message_global_request_port(m);
    if (addr == NULL) {
        addr = "";
    }
    if (ssh_message_subtype(m) == SSH_GLOBAL_REQUEST_CANCEL_TCPIP_FORWARD) {
        for (struct km_ssh_fwd **pp = &c->fwds; *pp != NULL; pp = &(*pp)->next) {
            struct km_ssh_fwd *f = *pp;
            if (port > 0 && (f->req_port == port || f->port == port) &&
                strcmp(f->addr, addr) == 0) {
                *pp = f->next;
                c->n_fwds--;
                KM_INFO("%s: reverse forward on 127.0.0.1:%u cancelled", c->desc, f->port);
                fwd_free(f);
                (void)ssh_message_global_request_reply_success(m, 0);
                ssh_message_free(m);
                return;
            }
        }
        refuse(c, m, "no such forward", port);
        return;
    }
    if (!c->has_grant || !c->grant.expose) {
        refuse(c, m, "the capability does not grant expose", port);
        return;
    }
    if (port < 0 || port > 65535 || (port > 0 && port < 1024)) {
        refuse(c, m, "ports below 1024 are not exposed", port);
        return;
    }
    if (c->n_fwds >= FWD_MAX || strlen(addr) >= sizeof c->fwds->addr) {
        refuse(c, m, "too many forwards", port);
        return;
    }
    struct km_ssh_fwd *f = calloc(1, sizeof *f);
    if (f == NULL) {
        refuse(c, m, "out of memory", port);
        return;
    }
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = km_uvstream_listen_tcp(c->node->loop, (const struct sockaddr *)&sin, 16, on_connection,
                                   f, &f->listener);
    if (r != 0) {
        free(f);
        refuse(c, m, uv_strerror(r), port);
        return;
    }
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getsockname(f->listener, (struct sockaddr *)&ss, &sl) == 0 &&
        ss.ss_family == AF_INET) {
        f->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    f->conn = c;
    f->req_port = (uint16_t)port;
    snprintf(f->addr, sizeof f->addr, "%s", addr);
    f->next = c->fwds;
    c->fwds = f;
    c->n_fwds++;
    KM_INFO("%s: reverse forward: 127.0.0.1:%u now reaches the client", c->desc, f->port);
    (void)ssh_message_global_request_reply_success(m, f->port);
    ssh_message_free(m);
}

void km__ssh_fwd_conn_gone(struct km_ssh_conn *c)
{
    while (c->fwds != NULL) {
        struct km_ssh_fwd *f = c->fwds;
        c->fwds = f->next;
        fwd_free(f);
    }
    c->n_fwds = 0;
}
