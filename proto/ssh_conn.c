/* One SSH session on the loop, either role.
 *
 * libssh runs non-blocking on a socket that a uv_poll_t watches. Every event and every
 * deferred "kick" runs one processing pass: advance the handshake, let libssh read and
 * dispatch packets, retry channel opens (non-blocking opens return SSH_AGAIN until the peer
 * answers), service every channel (flush, drain, EOF, close), then re-arm the poll for
 * what libssh wants. Teardown never happens inside a pass or a libssh callback: closing
 * marks the conn and the node's reaper frees it on a later loop turn. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libssh/ssh2.h>
#include <sodium.h>

#include "core/addr.h"
#include "core/tcpinfo.h"
#include "core/log.h"
#include "identity/derive.h"
#include "proto/ssh_int.h"

static void process(struct km_ssh_conn *c);

/* ---- small helpers ---- */

static void short_id(const struct km_pubkey *pk, char out[13])
{
    char id[KM_NODE_ID_LEN + 1];
    km_node_id(pk, id);
    memcpy(out, id, 12);
    out[12] = '\0';
}

static void set_socket_options(int fd, unsigned keepalive_ms)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (keepalive_ms == 0) {
        return;
    }
    /* Dead peers are found by the kernel: keepalive probes on an idle connection, and
     * TCP_USER_TIMEOUT for data that is never acknowledged. */
    int idle = (int)(keepalive_ms / 1000 > 0 ? keepalive_ms / 1000 : 1);
    int intvl = idle / 3 > 0 ? idle / 3 : 1;
    int cnt = 3;
    unsigned user_timeout = keepalive_ms * 2;
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}

static void close_conn(struct km_ssh_conn *c);

/* Internal failure: the dial callback (if still pending) learns err. */
/* libssh closes its socket by itself when the peer goes away, while our uv_poll_t still
 * watches that descriptor number; the next accept() could then get the same number and
 * fail to be polled (EEXIST), or worse be watched as the old one. So libssh gets a dup()
 * and the descriptor we poll stays ours until the conn is freed. */
static int dup_for_ssh(const struct km_ssh_conn *c)
{
    return fcntl(c->fd, F_DUPFD_CLOEXEC, 0);
}

static void fail(struct km_ssh_conn *c, int err)
{
    if (c->close_err == 0) {
        c->close_err = err;
    }
    close_conn(c);
}

/* ---- poll management ---- */

static void on_poll(uv_poll_t *h, int status, int events);

static void update_poll(struct km_ssh_conn *c)
{
    if (c->closing || c->state == KM_SSH_DEAD) {
        return;
    }
    int ev = UV_READABLE;
    if (c->state == KM_SSH_TCP) {
        ev = UV_WRITABLE;
    } else if (c->state == KM_SSH_KEX ||
               (c->s != NULL && (ssh_get_poll_flags(c->s) & SSH_WRITE_PENDING))) {
        ev |= UV_WRITABLE;
    }
    if (ev != c->cur_events) {
        c->cur_events = ev;
        if (uv_poll_start(&c->poll, ev, on_poll) != 0) {
            fail(c, KM_ERR_SSH);
        }
    }
}

static void on_tick(uv_timer_t *t)
{
    struct km_ssh_conn *c = t->data;
    c->tick_pending = false;
    process(c);
}

void km__ssh_conn_kick(struct km_ssh_conn *c)
{
    if (c == NULL || c->closing || c->tick_pending) {
        return;
    }
    c->tick_pending = true;
    (void)uv_timer_start(&c->tick, on_tick, 0, 0);
}

/* ---- server authentication ---- */

static void become_ready(struct km_ssh_conn *c);

/* A certificate login (ssh-ed25519-cert-v01@openssh.com): the daemon decides what the
 * certificate grants here; libssh has verified the client's signature by the certified key
 * when sigstate is VALID (it imports the key from the same blob we pass on). */
static int auth_cert(struct km_ssh_conn *c, const char *user, ssh_key pubkey, int sigstate)
{
    struct km_ssh_node *n = c->node;
    /* libssh 0.10's public API exports a certificate key only as base64 of its blob. */
    char *b64 = NULL;
    if (n->hooks.authorize_cert == NULL || ssh_pki_export_pubkey_base64(pubkey, &b64) != SSH_OK ||
        b64 == NULL) {
        return SSH_AUTH_DENIED;
    }
    uint8_t *blob = malloc(KM_SSH_CERT_MAX);
    size_t len = 0;
    if (blob == NULL || sodium_base642bin(blob, KM_SSH_CERT_MAX, b64, strlen(b64), NULL, &len, NULL,
                                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        free(blob);
        ssh_string_free_char(b64);
        return SSH_AUTH_DENIED;
    }
    ssh_string_free_char(b64);
    struct km_pubkey key;
    struct km_ssh_grant g;
    char why[256] = "";
    int r = n->hooks.authorize_cert(n->hooks.arg, blob, len, user, c->peer_ip, &key, &g, why,
                                    sizeof why);
    if (r == 0 && sigstate == SSH_PUBLICKEY_STATE_VALID) {
        free(c->cert);
        c->cert = blob; /* kept for km__ssh_conn_recheck */
        c->cert_len = len;
        blob = NULL;
    }
    free(blob);
    char u[96];
    km_log_escape(u, sizeof u, user, strlen(user));
    if (r != 0) {
        if (!c->cert_refused_logged) {
            c->cert_refused_logged = true;
            KM_INFO("%s: certificate as user \"%s\" refused: %s", c->desc, u, why);
        }
        return SSH_AUTH_DENIED;
    }
    if (sigstate == SSH_PUBLICKEY_STATE_NONE) {
        return SSH_AUTH_SUCCESS;
    }
    if (sigstate != SSH_PUBLICKEY_STATE_VALID) {
        return SSH_AUTH_DENIED;
    }
    c->peer = key;
    c->peer_verified = true;
    c->grant = g;
    c->has_grant = true;
    snprintf(c->user, sizeof c->user, "%s", user);
    KM_INFO("%s: certificate serial %llu accepted as user \"%s\" (shell %s, exec %s, %zu port(s), "
            "expose %s)",
            c->desc, (unsigned long long)g.serial, u, g.shell ? "yes" : "no", g.exec ? "yes" : "no",
            g.n_ports, g.expose ? "yes" : "no");
    return SSH_AUTH_SUCCESS;
}

/* Decide a publickey authentication request (RFC 4252 section 7). */
static int auth_pubkey(struct km_ssh_conn *c, const char *user, ssh_key pubkey, int sigstate)
{
    struct km_ssh_node *n = c->node;
    struct km_pubkey pk;
    if (c->closing) {
        return SSH_AUTH_DENIED;
    }
    if (ssh_key_type(pubkey) == SSH_KEYTYPE_ED25519_CERT01) {
        return auth_cert(c, user, pubkey, sigstate);
    }
    if (ssh_key_type(pubkey) != SSH_KEYTYPE_ED25519 || km__ssh_key_to_pub(pubkey, &pk) != 0) {
        return SSH_AUTH_DENIED;
    }
    char who[13];
    short_id(&pk, who);
    if (n->hooks.authorize(n->hooks.arg, &pk, user) != 0) {
        char u[96];
        km_log_escape(u, sizeof u, user, strlen(user));
        KM_INFO("%s: key %s... as user \"%s\" is not allowed", c->desc, who, u);
        return SSH_AUTH_DENIED;
    }
    if (sigstate == SSH_PUBLICKEY_STATE_NONE) {
        return SSH_AUTH_SUCCESS; /* "this key would be accepted": the client signs next */
    }
    if (sigstate != SSH_PUBLICKEY_STATE_VALID) {
        return SSH_AUTH_DENIED;
    }
    /* Only a key whose signature libssh verified identifies the peer. */
    c->peer = pk;
    c->peer_verified = true;
    snprintf(c->user, sizeof c->user, "%s", user);
    return SSH_AUTH_SUCCESS;
}

/* ---- requests from the peer (either role) ----
 *
 * No message callback is installed: libssh queues what it does not handle itself, and the
 * pass takes the queue. That lets a direct-tcpip request wait for its answer until the
 * daemon has connected to the target (a callback's message is freed when it returns), so a
 * target that refuses is reported as an open failure, not as an open stream that ends. */

static void handle_direct(struct km_ssh_conn *c, ssh_message m)
{
    struct km_ssh_node *n = c->node;
    const char *host = ssh_message_channel_request_open_destination(m);
    int port = ssh_message_channel_request_open_destination_port(m);
    if (c->closing || !c->peer_verified || c->state != KM_SSH_READY || host == NULL ||
        strlen(host) > 255 || port < 1 || port > 65535) {
        (void)ssh_message_reply_default(m);
        ssh_message_free(m);
        return;
    }
    char h[300];
    km_log_escape(h, sizeof h, host, strlen(host));
    if (c->n_chans + c->n_directs >= n->opts.max_channels) {
        KM_INFO("%s: channel limit %u reached, refusing \"%s\":%d", c->desc, n->opts.max_channels,
                h, port);
        (void)ssh_message_reply_default(m);
        ssh_message_free(m);
        return;
    }
    if (n->hooks.allow_direct(n->hooks.arg, &c->peer, c->has_grant ? &c->grant : NULL, host,
                              (uint16_t)port) != 0) {
        KM_INFO("%s: refused direct-tcpip to \"%s\":%d", c->desc, h, port);
        (void)ssh_message_reply_default(m); /* SSH_OPEN_ADMINISTRATIVELY_PROHIBITED */
        ssh_message_free(m);
        return;
    }
    struct km_ssh_direct *d = calloc(1, sizeof *d);
    if (d == NULL) {
        (void)ssh_message_reply_default(m);
        ssh_message_free(m);
        return;
    }
    d->conn = c;
    d->msg = m;
    snprintf(d->what, sizeof d->what, "chan to \"%s\":%d", h, port);
    d->next = c->directs;
    c->directs = d;
    c->n_directs++;
    KM_DEBUG("%s: direct-tcpip to \"%s\":%d allowed, connecting", c->desc, h, port);
    n->hooks.on_direct(n->hooks.arg, &c->peer, host, (uint16_t)port, d);
}

/* libssh 0.10 marks the two message accessors below deprecated in favour of server
 * callbacks; they work, and callbacks would make libssh answer channel opens itself. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static int msg_pubkey_state(ssh_message m)
{
    return ssh_message_auth_publickey_state(m);
}

static ssh_key msg_pubkey(ssh_message m)
{
    return ssh_message_auth_pubkey(m);
}
#pragma GCC diagnostic pop

static void handle_auth(struct km_ssh_conn *c, ssh_message m)
{
    int rc = SSH_AUTH_DENIED;
    int state = msg_pubkey_state(m);
    if (ssh_message_subtype(m) == SSH_AUTH_METHOD_PUBLICKEY && !c->peer_verified) {
        const char *user = ssh_message_auth_user(m);
        rc = auth_pubkey(c, user != NULL ? user : "", msg_pubkey(m), state);
    }
    if (rc == SSH_AUTH_SUCCESS && state == SSH_PUBLICKEY_STATE_NONE) {
        (void)ssh_message_auth_reply_pk_ok_simple(m); /* "this key would do": sign next */
    } else if (rc == SSH_AUTH_SUCCESS) {
        (void)ssh_message_auth_reply_success(m, 0);
        ssh_message_free(m);
        /* Ready now: the peer's first channel open may be next in this very batch. */
        become_ready(c);
        return;
    } else {
        if (++c->auth_failures > 20) {
            KM_INFO("%s: too many authentication attempts", c->desc);
            fail(c, KM_ERR_AUTH);
        }
        ssh_message_auth_set_methods(m, SSH_AUTH_METHOD_PUBLICKEY);
        (void)ssh_message_reply_default(m);
    }
    ssh_message_free(m);
}

static void take_messages(struct km_ssh_conn *c)
{
    /* Bounded by what libssh has queued; each message is answered or kept once. */
    for (int i = 0; i < 1024 && !c->closing; i++) {
        ssh_message m = ssh_message_get(c->s);
        if (m == NULL) {
            return;
        }
        if (ssh_message_type(m) == SSH_REQUEST_CHANNEL_OPEN &&
            ssh_message_subtype(m) == SSH_CHANNEL_DIRECT_TCPIP) {
            handle_direct(c, m);
            continue;
        }
        if (ssh_message_type(m) == SSH_REQUEST_AUTH && c->server) {
            handle_auth(c, m);
            continue;
        }
        if (ssh_message_type(m) == SSH_REQUEST_CHANNEL_OPEN &&
            ssh_message_subtype(m) == SSH_CHANNEL_SESSION && c->server && c->peer_verified &&
            c->state == KM_SSH_READY && km__ssh_sess_open(c, m) == 0) {
            ssh_message_free(m);
            continue;
        }
        if (ssh_message_type(m) == SSH_REQUEST_CHANNEL && c->server && km__ssh_sess_request(c, m)) {
            continue;
        }
        if (ssh_message_type(m) == SSH_REQUEST_GLOBAL && c->server && c->peer_verified &&
            (ssh_message_subtype(m) == SSH_GLOBAL_REQUEST_TCPIP_FORWARD ||
             ssh_message_subtype(m) == SSH_GLOBAL_REQUEST_CANCEL_TCPIP_FORWARD)) {
            km__ssh_fwd_request(c, m);
            continue;
        }
        /* Sessions, forwards, global requests (keepalives), other auth methods: the default
         * reply is a refusal, or "continue" for service requests. */
        (void)ssh_message_reply_default(m);
        ssh_message_free(m);
    }
}

static void unlink_direct(struct km_ssh_conn *c, struct km_ssh_direct *d)
{
    for (struct km_ssh_direct **pp = &c->directs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            c->n_directs--;
            return;
        }
    }
}

int km_ssh_direct_accept(struct km_ssh_direct *d, struct km_stream **out)
{
    *out = NULL;
    struct km_ssh_conn *c = d->conn;
    if (c == NULL || c->closing) {
        if (c != NULL) {
            unlink_direct(c, d);
            ssh_message_free(d->msg);
        }
        free(d);
        return KM_ERR_CLOSED;
    }
    unlink_direct(c, d);
    ssh_channel ch = ssh_message_channel_request_open_reply_accept(d->msg);
    ssh_message_free(d->msg);
    struct km_ssh_chan *chan = ch != NULL ? km__ssh_chan_new(c, ch, d->what) : NULL;
    free(d);
    if (chan == NULL) {
        if (ch != NULL) {
            (void)ssh_channel_close(ch);
            ssh_channel_free(ch);
        }
        km__ssh_conn_kick(c);
        return KM_ERR_SSH;
    }
    km__ssh_chan_set_next(chan, c->chans);
    c->chans = chan;
    c->n_chans++;
    km__ssh_conn_kick(c);
    *out = km__ssh_chan_stream(chan);
    return 0;
}

void km_ssh_direct_reject(struct km_ssh_direct *d, int err)
{
    struct km_ssh_conn *c = d->conn;
    if (c != NULL) {
        KM_INFO("%s: %s: %s", c->desc, d->what, km_strerror(err));
        unlink_direct(c, d);
        if (!c->closing) {
            (void)ssh_message_reply_default(d->msg);
            km__ssh_conn_kick(c);
        }
        ssh_message_free(d->msg);
    }
    free(d);
}

/* ---- the processing pass ---- */

void km__ssh_conn_recheck(struct km_ssh_conn *c)
{
    struct km_ssh_node *n = c->node;
    if (c->closing || !c->has_grant || c->cert == NULL || c->state != KM_SSH_READY ||
        n->hooks.authorize_cert == NULL) {
        return;
    }
    struct km_pubkey key;
    struct km_ssh_grant g;
    char why[256] = "";
    if (n->hooks.authorize_cert(n->hooks.arg, c->cert, c->cert_len, c->user, c->peer_ip, &key, &g,
                                why, sizeof why) != 0) {
        KM_INFO("%s: certificate serial %llu no longer valid (%s): disconnecting", c->desc,
                (unsigned long long)c->grant.serial, why);
        fail(c, KM_ERR_REFUSED);
    }
}

/* A capability's validity ends: the session ends with it (SECURITY.md promise 5). */
static void on_grant_expired(uv_timer_t *t)
{
    struct km_ssh_conn *c = t->data;
    uint64_t now = (uint64_t)time(NULL);
    if (now < c->grant.ends_at_s) {
        /* The loop clock ran ahead of the wall clock: wait for the rest. */
        uint64_t left = c->grant.ends_at_s - now;
        (void)uv_timer_start(&c->timer, on_grant_expired, left * 1000, 0);
        return;
    }
    KM_INFO("%s: certificate serial %llu expired: disconnecting", c->desc,
            (unsigned long long)c->grant.serial);
    fail(c, KM_ERR_CAP_EXPIRED);
}

static void become_ready(struct km_ssh_conn *c)
{
    c->state = KM_SSH_READY;
    c->idle_since_ms = km__ssh_now_ms(c->node);
    uv_timer_stop(&c->timer);
    if (c->has_grant) {
        /* The login deadline timer is free from now on: it becomes the grant's end. */
        uint64_t now = (uint64_t)time(NULL);
        uint64_t left = c->grant.ends_at_s > now ? c->grant.ends_at_s - now : 0;
        if (left > UINT64_MAX / 2000) {
            left = UINT64_MAX / 2000;
        }
        (void)uv_timer_start(&c->timer, on_grant_expired, left * 1000, 0);
    }
    if (c->counted_unauth) {
        c->counted_unauth = false;
        c->node->n_unauth--;
    }
    char who[13];
    short_id(&c->peer, who);
    KM_INFO("%s: ready, peer %s... user %s, cipher %s", c->desc, who, c->user,
            km_ssh_conn_cipher(c));
    c->notified_ready = true;
    if (c->server && c->node->hooks.on_conn_accepted != NULL) {
        c->node->hooks.on_conn_accepted(c->node->hooks.arg, c);
    }
    if (c->ready_cb != NULL) {
        km_ssh_ready_cb cb = c->ready_cb;
        c->ready_cb = NULL;
        cb(c, 0, c->ready_arg);
    }
}

static int add_event(struct km_ssh_conn *c)
{
    c->ev = ssh_event_new();
    if (c->ev == NULL || ssh_event_add_session(c->ev, c->s) != SSH_OK) {
        return KM_ERR_SSH;
    }
    return 0;
}

static void verify_host_key(struct km_ssh_conn *c)
{
    ssh_key k = NULL;
    struct km_pubkey got;
    int ok = ssh_get_server_publickey(c->s, &k) == SSH_OK &&
             ssh_key_type(k) == SSH_KEYTYPE_ED25519 && km__ssh_key_to_pub(k, &got) == 0 &&
             km_pubkey_equal(&got, &c->peer);
    ssh_key_free(k);
    if (!ok) {
        char want[13];
        short_id(&c->peer, want);
        KM_WARN("%s: host key does not match node %s...: refusing the peer", c->desc, want);
        fail(c, KM_ERR_HOST_KEY);
        return;
    }
    c->peer_verified = true;
    c->state = KM_SSH_AUTH;
}

/* Our key with the certificate the daemon holds for this peer, in c->auth_key. */
static int client_cert_key(struct km_ssh_conn *c)
{
    struct km_ssh_node *n = c->node;
    if (n->hooks.client_cert == NULL) {
        return KM_ERR_NOT_FOUND;
    }
    struct km_buf blob;
    km_buf_init(&blob, 16384);
    int r = n->hooks.client_cert(n->hooks.arg, &c->peer, &blob);
    char *b64 = NULL;
    ssh_key cert = NULL;
    if (r == 0) {
        size_t sz = sodium_base64_ENCODED_LEN(km_buf_len(&blob), sodium_base64_VARIANT_ORIGINAL);
        b64 = malloc(sz);
        if (b64 != NULL) {
            sodium_bin2base64(b64, sz, km_buf_peek_ptr(&blob), km_buf_len(&blob),
                              sodium_base64_VARIANT_ORIGINAL);
        }
        r = b64 != NULL &&
                    ssh_pki_import_cert_base64(b64, SSH_KEYTYPE_ED25519_CERT01, &cert) == SSH_OK
                ? 0
                : KM_ERR_SSH;
    }
    if (r == 0) {
        c->auth_key = ssh_key_dup(n->key);
        if (c->auth_key == NULL || ssh_pki_copy_cert_to_privkey(cert, c->auth_key) != SSH_OK) {
            r = KM_ERR_SSH;
        }
    }
    if (r == KM_ERR_SSH) {
        KM_INFO("%s: cannot use the held certificate: %s", c->desc, ssh_get_error(c->s));
    } else if (r == 0) {
        KM_DEBUG("%s: the peer refused our plain key: presenting a certificate", c->desc);
    }
    free(b64);
    ssh_key_free(cert);
    km_buf_reset(&blob);
    return r;
}

static void handshake(struct km_ssh_conn *c)
{
    int rc;
    if (c->state == KM_SSH_KEX) {
        rc = c->server ? ssh_handle_key_exchange(c->s) : ssh_connect(c->s);
        if (rc == SSH_AGAIN) {
            return;
        }
        if (rc != SSH_OK) {
            KM_INFO("%s: key exchange failed: %s", c->desc, ssh_get_error(c->s));
            fail(c, KM_ERR_SSH);
            return;
        }
        if (c->server) {
            c->state = KM_SSH_AUTH;
            if (add_event(c) != 0) {
                fail(c, KM_ERR_SSH);
            }
            return;
        }
        verify_host_key(c);
    }
    if (c->state == KM_SSH_AUTH && !c->server) {
        rc = ssh_userauth_publickey(c->s, NULL, c->auth_step == 1 ? c->auth_key : c->node->key);
        if (rc == SSH_AUTH_AGAIN) {
            return;
        }
        /* Refused as a plain key: present a capability for this peer if we hold one. */
        if (rc == SSH_AUTH_DENIED && c->auth_step == 0 && client_cert_key(c) == 0) {
            c->auth_step = 1;
            km__ssh_conn_kick(c);
            return;
        }
        if (rc != SSH_AUTH_SUCCESS) {
            KM_INFO("%s: the peer refused our key: %s", c->desc, ssh_get_error(c->s));
            fail(c, KM_ERR_AUTH);
            return;
        }
        if (add_event(c) != 0) {
            fail(c, KM_ERR_SSH);
            return;
        }
        become_ready(c);
    }
}

/* The reason code of a refused channel open (RFC 4254 section 5.1), which libssh 0.10 only
 * reports inside its error text: "Channel opening failure: channel N error (CODE) ...". */
static int open_failure_err(ssh_session s)
{
    const char *e = ssh_get_error(s);
    const char *p = e != NULL ? strstr(e, "error (") : NULL;
    unsigned long code = 0;
    if (p != NULL) {
        char *end;
        code = strtoul(p + 7, &end, 10);
        if (*end != ')') {
            code = 0;
        }
    }
    switch (code) {
    case SSH2_OPEN_CONNECT_FAILED:
        return -ECONNREFUSED;
    case SSH2_OPEN_UNKNOWN_CHANNEL_TYPE:
    case SSH2_OPEN_RESOURCE_SHORTAGE:
        return KM_ERR_UNREACHABLE;
    default: /* SSH2_OPEN_ADMINISTRATIVELY_PROHIBITED, or unknown */
        return KM_ERR_REFUSED;
    }
}

static void run_opens(struct km_ssh_conn *c)
{
    /* Callbacks below may start new opens: take the list first. */
    struct km_ssh_open *list = c->opens;
    c->opens = NULL;
    struct km_ssh_open **keep = &list;
    while (*keep != NULL) {
        struct km_ssh_open *o = *keep;
        ssh_channel ch = km__ssh_chan_channel(o->chan);
        int rc = c->closing ? SSH_ERROR
                 : o->reverse
                     ? ssh_channel_open_reverse_forward(ch, o->host, o->port, o->orig, o->orig_port)
                     : ssh_channel_open_forward(ch, o->host, o->port, "127.0.0.1", 0);
        if (rc == SSH_AGAIN) {
            keep = &o->next;
            continue;
        }
        *keep = o->next;
        if (rc == SSH_OK && !o->cancelled) {
            km__ssh_chan_set_next(o->chan, c->chans);
            c->chans = o->chan;
            c->n_chans++;
            o->cb(o->arg, 0, km__ssh_chan_stream(o->chan));
        } else if (rc == SSH_OK) {
            /* Cancelled while the peer was answering: open, then close at once. */
            km__ssh_chan_set_next(o->chan, c->chans);
            c->chans = o->chan;
            c->n_chans++;
            km_stream_close(km__ssh_chan_stream(o->chan));
        } else {
            KM_DEBUG("%s: open to %s:%u refused: %s", c->desc, o->host, o->port,
                     ssh_get_error(c->s));
            int err = c->closing ? KM_ERR_CLOSED : open_failure_err(c->s);
            km__ssh_chan_free(o->chan);
            if (!o->cancelled) {
                o->cb(o->arg, err, NULL);
            }
        }
        free(o);
    }
    /* Re-append what is still pending behind anything added meanwhile. */
    struct km_ssh_open **tail = &c->opens;
    while (*tail != NULL) {
        tail = &(*tail)->next;
    }
    *tail = list;
}

static void service_chans(struct km_ssh_conn *c)
{
    struct km_ssh_chan *prev = NULL;
    struct km_ssh_chan *ch = c->chans;
    while (ch != NULL) {
        struct km_ssh_chan *next = km__ssh_chan_next(ch);
        if (!km__ssh_chan_service(ch)) {
            prev = ch;
            ch = next;
            continue;
        }
        /* Accepted opens are only ever pushed at the head, so prev is still ch's
         * predecessor; with no prev, ch was the head when we got here but may not be now. */
        if (prev != NULL) {
            km__ssh_chan_set_next(prev, next);
        } else if (c->chans == ch) {
            c->chans = next;
        } else {
            struct km_ssh_chan *p = c->chans;
            while (km__ssh_chan_next(p) != ch) {
                p = km__ssh_chan_next(p);
            }
            km__ssh_chan_set_next(p, next);
        }
        km__ssh_chan_free(ch);
        if (--c->n_chans == 0) {
            c->idle_since_ms = km__ssh_now_ms(c->node);
        }
        ch = next;
    }
}

static bool needs_another_round(const struct km_ssh_conn *c)
{
    for (const struct km_ssh_open *o = c->opens; o != NULL; o = o->next) {
        if (ssh_channel_is_open(km__ssh_chan_channel(o->chan))) {
            return true;
        }
    }
    for (const struct km_ssh_chan *ch = c->chans; ch != NULL; ch = km__ssh_chan_next(ch)) {
        if (km__ssh_chan_wants_service(ch)) {
            return true;
        }
    }
    return false;
}

static void process(struct km_ssh_conn *c)
{
    if (c->in_pass || c->closing || c->state == KM_SSH_DEAD || c->state == KM_SSH_TCP) {
        return;
    }
    c->in_pass = true;
    if (c->state != KM_SSH_READY) {
        handshake(c);
    }
    /* The server learns of authentication from inside the event poll. */
    if (!c->closing && c->ev != NULL && (c->state == KM_SSH_READY || c->server)) {
        int rc = ssh_event_dopoll(c->ev, 0);
        if (rc == SSH_ERROR || (ssh_get_status(c->s) & (SSH_CLOSED | SSH_CLOSED_ERROR))) {
            fail(c, KM_ERR_CLOSED);
        } else {
            take_messages(c);
        }
    }
    /* libssh also reads and dispatches packets inside ssh_channel_write, read and open
     * (it waits for window or confirmations that way), so a pass can consume an open
     * confirmation or a window adjust meant for a channel already serviced, or queue a
     * request (a channel open, say), with no socket event left to announce it. So each round
     * ends by taking the requests its calls read, and goes round again while a channel
     * needs it (bounded). A request left queued here waited for the peer's next packet: a
     * session channel opened just after login could wait forever (cap.sh, under load). */
    for (int round = 0; round < 4 && !c->closing && c->state == KM_SSH_READY; round++) {
        run_opens(c);
        service_chans(c);
        take_messages(c); /* requests read inside this round's calls */
        if (!needs_another_round(c)) {
            break;
        }
    }
    c->in_pass = false;
    /* The last libssh calls of the pass may have consumed a window grant or an open
     * confirmation that no socket event will announce again: look once more, later. */
    if (!c->closing && c->state == KM_SSH_READY && needs_another_round(c)) {
        km__ssh_conn_kick(c);
    }
    update_poll(c);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct km_ssh_conn *c = h->data;
    if (c->closing) {
        return;
    }
    if (c->state == KM_SSH_TCP) {
        /* libuv reports POLLERR as UV_EBADF: the socket's own error says what happened
         * (ECONNREFUSED, EHOSTUNREACH...). */
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            err = errno;
        }
        if (err != 0 || status < 0) {
            fail(c, err != 0 ? -err : status);
            return;
        }
        if (!(events & UV_WRITABLE)) {
            return;
        }
        /* TCP is up: hand libssh a duplicate of the socket (see give_fd). */
        int fd = dup_for_ssh(c);
        if (fd < 0 || ssh_options_set(c->s, SSH_OPTIONS_FD, &fd) != SSH_OK) {
            if (fd >= 0) {
                close(fd);
            }
            fail(c, KM_ERR_SSH);
            return;
        }
        c->state = KM_SSH_KEX;
        process(c);
        return;
    }
    if (status < 0) {
        fail(c, status);
        return;
    }
    process(c);
}

static void on_deadline(uv_timer_t *t)
{
    struct km_ssh_conn *c = t->data;
    if (c->state != KM_SSH_READY && !c->closing) {
        KM_INFO("%s: %s timed out", c->desc, c->server ? "login" : "connect");
        fail(c, -ETIMEDOUT);
    }
}

/* ---- creation ---- */

static struct km_ssh_conn *conn_new(struct km_ssh_node *n, bool server)
{
    struct km_ssh_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    c->node = n;
    c->server = server;
    c->fd = -1;
    c->id = ++n->next_id;
    if (uv_timer_init(n->loop, &c->timer) != 0 || uv_timer_init(n->loop, &c->tick) != 0) {
        free(c); /* uv_timer_init cannot fail on Linux; nothing to close */
        return NULL;
    }
    c->timer.data = c;
    c->tick.data = c;
    c->next = n->conns;
    n->conns = c;
    n->n_conns++;
    return c;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct km_ssh_conn *c = h->data;
    struct km_ssh_node *n = c->node;
    if (--c->pending_closes == 0) {
        free(c);
        n->pending_closes--;
        km__ssh_node_kick_reaper(n);
    }
}

int km__ssh_conn_accept(struct km_ssh_node *n, int fd)
{
    struct km_ssh_conn *c = conn_new(n, true);
    if (c == NULL) {
        close(fd);
        return -ENOMEM;
    }
    c->fd = fd;
    c->counted_unauth = true;
    n->n_unauth++;
    snprintf(c->desc, sizeof c->desc, "conn %u server", c->id);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        char a[KM_ADDR_STRLEN];
        snprintf(c->desc, sizeof c->desc, "conn %u from %s", c->id,
                 km_addr_str((struct sockaddr *)&ss, a, sizeof a));
        if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, c->peer_ip,
                      sizeof c->peer_ip);
        } else if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->peer_ip,
                      sizeof c->peer_ip);
        }
    }
    set_socket_options(fd, n->opts.keepalive_ms);
    c->s = ssh_new();
    if (c->s == NULL) {
        fail(c, -ENOMEM);
        return -ENOMEM;
    }
    int verbosity = SSH_LOG_NOLOG;
    (void)ssh_options_set(c->s, SSH_OPTIONS_LOG_VERBOSITY, &verbosity);
    int sfd = dup_for_ssh(c);
    if (sfd < 0 || ssh_bind_accept_fd(n->bind, c->s, sfd) != SSH_OK) {
        KM_INFO("%s: accept: %s", c->desc, sfd < 0 ? strerror(errno) : ssh_get_error(n->bind));
        if (sfd >= 0) {
            close(sfd);
        }
        fail(c, KM_ERR_SSH);
        return KM_ERR_SSH;
    }
    ssh_set_blocking(c->s, 0);
    /* No server callbacks: libssh then queues authentication and channel requests for the
     * pass to take (with callbacks it would answer unhandled requests itself at once). */
    ssh_set_auth_methods(c->s, SSH_AUTH_METHOD_PUBLICKEY);
    c->state = KM_SSH_KEX;
    int rc = uv_poll_init(n->loop, &c->poll, fd);
    if (rc != 0) {
        fail(c, rc);
        return rc;
    }
    c->poll.data = c;
    (void)uv_timer_start(&c->timer, on_deadline, n->opts.login_grace_ms, 0);
    c->cur_events = 0;
    update_poll(c);
    return 0;
}

int km_ssh_accept_fd(struct km_ssh_node *n, int fd, const char *label)
{
    if (n->closing || n->n_conns >= n->opts.max_sessions || n->n_unauth >= n->opts.max_unauth) {
        close(fd);
        return n->closing ? KM_ERR_CLOSED : KM_ERR_TOO_LARGE;
    }
    unsigned id = n->next_id + 1;
    int r = km__ssh_conn_accept(n, fd);
    if (r == 0) {
        for (struct km_ssh_conn *c = n->conns; c != NULL; c = c->next) {
            if (c->id == id) {
                snprintf(c->desc, sizeof c->desc, "conn %u from %s", c->id, label);
            }
        }
    }
    return r;
}

/* The client side once a socket exists (connecting, or already connected): libssh starts
 * when the socket is writable. */
static int dial_on_fd(struct km_ssh_node *n, int fd, const char *desc, const char *host,
                      const struct km_pubkey *expected, const char *user, km_ssh_ready_cb cb,
                      void *arg, struct km_ssh_conn **out)
{
    struct km_ssh_conn *c = conn_new(n, false);
    if (c == NULL) {
        close(fd);
        return -ENOMEM;
    }
    c->fd = fd;
    c->peer = *expected;
    c->ready_cb = cb;
    c->ready_arg = arg;
    snprintf(c->user, sizeof c->user, "%s", user);
    snprintf(c->desc, sizeof c->desc, "conn %u to %s", c->id, desc);
    *out = c;
    c->s = ssh_new();
    int rc;
    if (c->s == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = km__ssh_session_options(n, c->s)) != 0 ||
        ssh_options_set(c->s, SSH_OPTIONS_HOST, host) != SSH_OK ||
        ssh_options_set(c->s, SSH_OPTIONS_USER, user) != SSH_OK) {
        rc = KM_ERR_SSH;
        goto fail;
    }
    ssh_set_blocking(c->s, 0);
    if ((rc = uv_poll_init(n->loop, &c->poll, fd)) != 0) {
        goto fail;
    }
    c->poll.data = c;
    c->state = KM_SSH_TCP;
    (void)uv_timer_start(&c->timer, on_deadline, n->opts.connect_timeout_ms, 0);
    update_poll(c);
    return 0;
fail:
    /* Report through the return value, not the callback. */
    c->ready_cb = NULL;
    *out = NULL;
    fail(c, rc);
    return rc;
}

int km_ssh_dial_fd(struct km_ssh_node *n, int fd, const char *label,
                   const struct km_pubkey *expected, const char *user, km_ssh_ready_cb cb,
                   void *arg, struct km_ssh_conn **out)
{
    *out = NULL;
    if (n->closing || n->n_conns >= n->opts.max_sessions) {
        close(fd);
        return n->closing ? KM_ERR_CLOSED : KM_ERR_TOO_LARGE;
    }
    /* A TCP socket (a punched connection) gets what km_ssh_dial gives its own: without
     * TCP_NODELAY each small SSH packet waits for the peer's delayed ACK (~40 ms per round
     * trip). On a Unix socket (a relayed stream) the TCP options just fail. */
    set_socket_options(fd, n->opts.keepalive_ms);
    return dial_on_fd(n, fd, label, "relay", expected, user, cb, arg, out);
}

int km_ssh_dial(struct km_ssh_node *n, const struct sockaddr *addr,
                const struct km_pubkey *expected, const char *user, km_ssh_ready_cb cb, void *arg,
                struct km_ssh_conn **out)
{
    *out = NULL;
    if (n->closing) {
        return KM_ERR_CLOSED;
    }
    if (n->n_conns >= n->opts.max_sessions) {
        return KM_ERR_TOO_LARGE;
    }
    socklen_t alen =
        addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    set_socket_options(fd, n->opts.keepalive_ms);
    if (connect(fd, addr, alen) != 0 && errno != EINPROGRESS) {
        int e = -errno;
        close(fd);
        return e;
    }
    char a[KM_ADDR_STRLEN];
    char ip[INET6_ADDRSTRLEN] = "?";
    if (addr->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, ip, sizeof ip);
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, ip, sizeof ip);
    }
    return dial_on_fd(n, fd, km_addr_str(addr, a, sizeof a), ip, expected, user, cb, arg, out);
}

/* ---- channel opens ---- */

int km_ssh_open_direct(struct km_ssh_conn *c, const char *host, uint16_t port, km_ssh_open_cb cb,
                       void *arg, struct km_ssh_open **req)
{
    return km__ssh_open(c, host, port, NULL, 0, cb, arg, req);
}

int km__ssh_open(struct km_ssh_conn *c, const char *host, uint16_t port, const char *orig,
                 uint16_t orig_port, km_ssh_open_cb cb, void *arg, struct km_ssh_open **req)
{
    *req = NULL;
    if (c->closing || c->state != KM_SSH_READY) {
        return KM_ERR_CLOSED;
    }
    if (strlen(host) > 255) {
        return KM_ERR_TOO_LARGE;
    }
    if (c->n_chans >= c->node->opts.max_channels) {
        return KM_ERR_TOO_LARGE;
    }
    struct km_ssh_open *o = calloc(1, sizeof *o);
    if (o == NULL) {
        return -ENOMEM;
    }
    ssh_channel ch = ssh_channel_new(c->s);
    char what[300];
    snprintf(what, sizeof what, "chan to %s:%u", host, port);
    o->chan = ch != NULL ? km__ssh_chan_new(c, ch, what) : NULL;
    if (o->chan == NULL) {
        if (ch != NULL) {
            ssh_channel_free(ch);
        }
        free(o);
        return -ENOMEM;
    }
    o->conn = c;
    o->cb = cb;
    o->arg = arg;
    o->port = port;
    snprintf(o->host, sizeof o->host, "%s", host);
    if (orig != NULL) {
        o->reverse = true;
        o->orig_port = orig_port;
        snprintf(o->orig, sizeof o->orig, "%s", orig);
    }
    /* Append: opens are answered in order. */
    struct km_ssh_open **tail = &c->opens;
    while (*tail != NULL) {
        tail = &(*tail)->next;
    }
    *tail = o;
    *req = o;
    km__ssh_conn_kick(c);
    return 0;
}

void km_ssh_open_cancel(struct km_ssh_open *req)
{
    if (req != NULL) {
        req->cancelled = true;
    }
}

/* ---- teardown ---- */

void km_ssh_conn_close(struct km_ssh_conn *c)
{
    if (c == NULL || c->closing) {
        return;
    }
    c->ready_cb = NULL; /* a caller that closes a dial cancels it: no callback */
    close_conn(c);
}

static void close_conn(struct km_ssh_conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    if (c->state != KM_SSH_DEAD && c->cur_events != 0) {
        uv_poll_stop(&c->poll);
    }
    uv_timer_stop(&c->timer);
    uv_timer_stop(&c->tick);
    km__ssh_node_kick_reaper(c->node);
}

/* Called by the node's reaper, outside any libssh call stack. */
void km__ssh_conn_unlink(struct km_ssh_conn *c)
{
    struct km_ssh_node *n = c->node;
    km__ssh_sess_conn_gone(c);
    km__ssh_fwd_conn_gone(c);
    int err = c->close_err != 0 ? c->close_err : KM_ERR_CLOSED;
    for (struct km_ssh_conn **pp = &n->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    n->n_conns--;
    if (c->counted_unauth) {
        n->n_unauth--;
    }
    /* Pending opens fail. */
    while (c->opens != NULL) {
        struct km_ssh_open *o = c->opens;
        c->opens = o->next;
        km__ssh_chan_free(o->chan);
        if (!o->cancelled) {
            o->cb(o->arg, KM_ERR_CLOSED, NULL);
        }
        free(o);
    }
    /* Requests the daemon is still connecting: their answers will find the conn gone. */
    while (c->directs != NULL) {
        struct km_ssh_direct *d = c->directs;
        c->directs = d->next;
        ssh_message_free(d->msg);
        d->msg = NULL;
        d->conn = NULL;
    }
    c->n_directs = 0;
    /* Streams end; those still held by their users wait as orphans for close(). */
    while (c->chans != NULL) {
        struct km_ssh_chan *ch = c->chans;
        c->chans = km__ssh_chan_next(ch);
        if (km__ssh_chan_detach(ch, err)) {
            km__ssh_chan_free(ch);
        } else {
            km__ssh_node_adopt_orphan(n, ch);
        }
    }
    if (c->notified_ready && n->hooks.on_conn_closed != NULL) {
        n->hooks.on_conn_closed(n->hooks.arg, c, err);
    } else if (c->ready_cb != NULL) {
        km_ssh_ready_cb cb = c->ready_cb;
        c->ready_cb = NULL;
        cb(c, err, c->ready_arg);
    }
    if (c->notified_ready) {
        KM_INFO("%s: closed (%s)", c->desc, km_strerror(err));
    }
    if (c->ev != NULL) {
        ssh_event_remove_session(c->ev, c->s);
        ssh_event_free(c->ev);
    }
    ssh_key_free(c->auth_key);
    c->auth_key = NULL;
    free(c->cert);
    c->cert = NULL;
    if (c->s != NULL) {
        if (c->state != KM_SSH_TCP) {
            ssh_disconnect(c->s); /* closes libssh's duplicate of the socket */
        }
        ssh_free(c->s);
    }
    c->state = KM_SSH_DEAD;
    n->pending_closes++;
    c->pending_closes = 2;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tick, on_handle_closed);
    if (c->poll.type == UV_POLL) {
        c->pending_closes++;
        uv_close((uv_handle_t *)&c->poll, on_handle_closed);
    }
    /* uv_close has stopped the watcher: the descriptor we polled can go now. */
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

/* ---- accessors ---- */

const struct km_pubkey *km_ssh_conn_peer(const struct km_ssh_conn *c)
{
    return &c->peer;
}

const struct km_ssh_grant *km_ssh_conn_grant(const struct km_ssh_conn *c)
{
    return c->has_grant ? &c->grant : NULL;
}

bool km_ssh_conn_is_client(const struct km_ssh_conn *c)
{
    return !c->server;
}

bool km_ssh_conn_ready(const struct km_ssh_conn *c)
{
    return c->state == KM_SSH_READY && !c->closing;
}

bool km_ssh_conn_reverse_ok(const struct km_ssh_conn *c)
{
    if (!c->server) {
        return true;
    }
    const char *b = c->s != NULL ? ssh_get_clientbanner(c->s) : NULL;
    return b != NULL && strncmp(b, "SSH-2.0-libssh", 14) == 0;
}

unsigned km_ssh_conn_channels(const struct km_ssh_conn *c)
{
    return c->n_chans;
}

uint64_t km_ssh_conn_idle_ms(const struct km_ssh_conn *c)
{
    if (c->n_chans > 0 || c->opens != NULL || c->state != KM_SSH_READY) {
        return 0;
    }
    return km__ssh_now_ms(c->node) - c->idle_since_ms;
}

const char *km_ssh_conn_describe(const struct km_ssh_conn *c)
{
    return c->desc;
}

const char *km_ssh_conn_cipher(const struct km_ssh_conn *c)
{
    const char *ci = c->s != NULL ? ssh_get_cipher_out(c->s) : NULL;
    return ci != NULL ? ci : "none";
}

int km_ssh_conn_peer_addr(const struct km_ssh_conn *c, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    socklen_t len = sizeof *out;
    if (c->fd < 0 || getpeername(c->fd, (struct sockaddr *)out, &len) != 0) {
        return c->fd < 0 ? KM_ERR_CLOSED : -errno;
    }
    return out->ss_family == AF_INET || out->ss_family == AF_INET6 ? 0 : KM_ERR_UNSUPPORTED;
}

int km_ssh_conn_rtt_us(const struct km_ssh_conn *c, uint32_t *out)
{
    *out = 0;
    struct sockaddr_storage sa;
    int e = km_ssh_conn_peer_addr(c, &sa); /* a TCP conn, still open */
    return e != 0 ? e : km_tcp_rtt_us(c->fd, out);
}
