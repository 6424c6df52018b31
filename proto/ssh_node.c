/* The SSH node: keys and algorithms, listeners, and the reaper that frees sessions and
 * orphaned streams outside any libssh call stack. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/version.h"
#include "proto/ssh_int.h"

/* Algorithms (DESIGN.md section 4). Strict KEX (kex-strict-*-v00@openssh.com) is added by
 * libssh 0.10.6 itself to every key exchange list. The MAC list only matters to peers that
 * pick a non-AEAD cipher, which these lists never offer; a common entry must still exist. */
#define KEX_ALGOS "curve25519-sha256,curve25519-sha256@libssh.org"
#define HOSTKEY_ALGOS "ssh-ed25519"
/* Client authentication: plain node keys, and capability certificates (docs/CAPABILITIES.md). */
#define USER_KEY_ALGOS "ssh-ed25519,ssh-ed25519-cert-v01@openssh.com"
#define CIPHERS_AES "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"
#define CIPHERS_CHACHA "chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes256-gcm@openssh.com"
#define MAC_ALGOS "hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com"

#define ACCEPT_BATCH 64

bool km_ssh_cpu_has_aes(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("aes") != 0;
#elif defined(__aarch64__)
    return (getauxval(AT_HWCAP) & (1UL << 3)) != 0; /* HWCAP_AES */
#else
    return false;
#endif
}

void km_ssh_opts_default(struct km_ssh_opts *o)
{
    memset(o, 0, sizeof *o);
    o->login_grace_ms = 10000;
    o->connect_timeout_ms = 5000;
    o->keepalive_ms = 15000;
    o->max_sessions = 256;
    o->max_unauth = 64;
    o->max_channels = 2048;
    o->prefer_aes = km_ssh_cpu_has_aes();
}

uint64_t km__ssh_now_ms(const struct km_ssh_node *n)
{
    return uv_now(n->loop);
}

int km__ssh_key_to_pub(ssh_key k, struct km_pubkey *out)
{
    char *b64 = NULL;
    if (ssh_pki_export_pubkey_base64(k, &b64) != SSH_OK || b64 == NULL) {
        return KM_ERR_SSH;
    }
    int r = km_pubkey_parse(b64, strlen(b64), out);
    ssh_string_free_char(b64);
    return r;
}

static int import_key(const struct km_key *key, ssh_key *out)
{
    struct km_buf pem;
    km_buf_init(&pem, 16384);
    int r = km_key_format_openssh(key, "", &pem);
    if (r == 0) {
        r = km_buf_put_u8(&pem, 0);
    }
    if (r == 0 && ssh_pki_import_privkey_base64((const char *)km_buf_peek_ptr(&pem), NULL, NULL,
                                                NULL, out) != SSH_OK) {
        r = KM_ERR_SSH;
    }
    km_buf_reset(&pem); /* wipes the private key text */
    return r;
}

int km__ssh_session_options(struct km_ssh_node *n, ssh_session s)
{
    int no = 0;
    int verbosity = SSH_LOG_NOLOG;
    if (ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no) != SSH_OK ||
        ssh_options_set(s, SSH_OPTIONS_LOG_VERBOSITY, &verbosity) != SSH_OK ||
        ssh_options_set(s, SSH_OPTIONS_KEY_EXCHANGE, KEX_ALGOS) != SSH_OK ||
        ssh_options_set(s, SSH_OPTIONS_HOSTKEYS, HOSTKEY_ALGOS) != SSH_OK ||
        ssh_options_set(s, SSH_OPTIONS_PUBLICKEY_ACCEPTED_TYPES, USER_KEY_ALGOS) != SSH_OK ||
        ssh_options_set(s, SSH_OPTIONS_CIPHERS_C_S, n->ciphers) != SSH_OK ||
        ssh_options_set(s, SSH_OPTIONS_CIPHERS_S_C, n->ciphers) != SSH_OK ||
        ssh_options_set(s, SSH_OPTIONS_HMAC_C_S, MAC_ALGOS) != SSH_OK ||
        ssh_options_set(s, SSH_OPTIONS_HMAC_S_C, MAC_ALGOS) != SSH_OK ||
        ssh_options_set(s, SSH_OPTIONS_COMPRESSION, "no") != SSH_OK) {
        return KM_ERR_SSH;
    }
    return 0;
}

static int bind_options(struct km_ssh_node *n, ssh_key key)
{
    int no = 0;
    int verbosity = SSH_LOG_NOLOG;
    ssh_key dup = ssh_key_dup(key);
    if (dup == NULL) {
        return -ENOMEM;
    }
    /* IMPORT_KEY takes ownership of the key it is given. */
    if (ssh_bind_options_set(n->bind, SSH_BIND_OPTIONS_IMPORT_KEY, dup) != SSH_OK) {
        ssh_key_free(dup);
        return KM_ERR_SSH;
    }
    if (ssh_bind_options_set(n->bind, SSH_BIND_OPTIONS_PROCESS_CONFIG, &no) != SSH_OK ||
        ssh_bind_options_set(n->bind, SSH_BIND_OPTIONS_BANNER, "keymesh_" KM_VERSION) != SSH_OK ||
        ssh_bind_options_set(n->bind, SSH_BIND_OPTIONS_LOG_VERBOSITY, &verbosity) != SSH_OK ||
        ssh_bind_options_set(n->bind, SSH_BIND_OPTIONS_KEY_EXCHANGE, KEX_ALGOS) != SSH_OK ||
        ssh_bind_options_set(n->bind, SSH_BIND_OPTIONS_HOSTKEY_ALGORITHMS, HOSTKEY_ALGOS) !=
            SSH_OK ||
        ssh_bind_options_set(n->bind, SSH_BIND_OPTIONS_PUBKEY_ACCEPTED_KEY_TYPES, USER_KEY_ALGOS) !=
            SSH_OK ||
        ssh_bind_options_set(n->bind, SSH_BIND_OPTIONS_CIPHERS_C_S, n->ciphers) != SSH_OK ||
        ssh_bind_options_set(n->bind, SSH_BIND_OPTIONS_CIPHERS_S_C, n->ciphers) != SSH_OK ||
        ssh_bind_options_set(n->bind, SSH_BIND_OPTIONS_HMAC_C_S, MAC_ALGOS) != SSH_OK ||
        ssh_bind_options_set(n->bind, SSH_BIND_OPTIONS_HMAC_S_C, MAC_ALGOS) != SSH_OK) {
        return KM_ERR_SSH;
    }
    return 0;
}

static void on_reap(uv_timer_t *t);

/* Certificate logins are decided again now and then, so that a revocation, or an owner key
 * removed from the config, ends live sessions too (SECURITY.md promise 5). */
static void on_recheck(uv_timer_t *t)
{
    struct km_ssh_node *n = t->data;
    for (struct km_ssh_conn *c = n->conns; c != NULL; c = c->next) {
        km__ssh_conn_recheck(c);
    }
}

int km_ssh_node_new(uv_loop_t *loop, const struct km_key *key, const struct km_ssh_opts *o,
                    const struct km_ssh_hooks *hooks, struct km_ssh_node **out)
{
    *out = NULL;
    if (ssh_init() != SSH_OK) {
        return KM_ERR_SSH;
    }
    struct km_ssh_node *n = calloc(1, sizeof *n);
    if (n == NULL) {
        ssh_finalize();
        return -ENOMEM;
    }
    n->loop = loop;
    n->opts = *o;
    n->hooks = *hooks;
    n->pub = *km_key_pub(key);
    snprintf(n->ciphers, sizeof n->ciphers, "%s", o->prefer_aes ? CIPHERS_AES : CIPHERS_CHACHA);
    int r = import_key(key, &n->key);
    if (r == 0) {
        n->bind = ssh_bind_new();
        r = n->bind == NULL ? -ENOMEM : bind_options(n, n->key);
    }
    if (r == 0) {
        r = uv_timer_init(loop, &n->reaper);
    }
    if (r != 0) {
        if (n->bind != NULL) {
            ssh_bind_free(n->bind);
        }
        ssh_key_free(n->key);
        free(n);
        ssh_finalize();
        return r;
    }
    n->reaper.data = n;
    uv_unref((uv_handle_t *)&n->reaper);
    /* uv_timer_init cannot fail on Linux once the first one succeeded. */
    (void)uv_timer_init(loop, &n->recheck);
    n->recheck.data = n;
    (void)uv_timer_start(&n->recheck, on_recheck, KM_SSH_RECHECK_MS, KM_SSH_RECHECK_MS);
    uv_unref((uv_handle_t *)&n->recheck);
    *out = n;
    return 0;
}

/* ---- listeners ---- */

static void on_accept(uv_poll_t *h, int status, int events)
{
    (void)events;
    struct km_ssh_listener *l = h->data;
    struct km_ssh_node *n = l->node;
    if (status < 0 || n->closing) {
        return;
    }
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                KM_WARN("mesh listener :%u: accept: %s", l->port, strerror(errno));
            }
            return;
        }
        /* Limits hold before any byte is parsed: a flood of unauthenticated connections
         * is shed here and cannot starve the sessions already up (SECURITY.md 1). */
        if (n->n_conns >= n->opts.max_sessions || n->n_unauth >= n->opts.max_unauth) {
            KM_DEBUG("mesh listener :%u: at the session limit, dropping a connection", l->port);
            close(fd);
            continue;
        }
        (void)km__ssh_conn_accept(n, fd);
    }
}

int km_ssh_node_listen(struct km_ssh_node *n, const struct sockaddr *addr)
{
    socklen_t alen =
        addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    int one = 1;
    int r = 0;
    /* The listener takes SO_REUSEPORT so hole punches can connect from the mesh port
     * (docs/NAT.md). That would also let a second daemon of the same user bind the port
     * silently: a probe without it finds a port in use first. */
    if (addr->sa_family == AF_INET || addr->sa_family == AF_INET6) {
        int probe = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0) {
            return -errno;
        }
        (void)setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        r = bind(probe, addr, alen) != 0 ? -errno : 0;
        close(probe);
        if (r != 0) {
            return r;
        }
    }
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, addr, alen) != 0 || listen(fd, 128) != 0) {
        r = -errno;
        close(fd);
        return r;
    }
    struct km_ssh_listener *l = calloc(1, sizeof *l);
    if (l == NULL) {
        close(fd);
        return -ENOMEM;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    }
    l->node = n;
    l->fd = fd;
    if ((r = uv_poll_init(n->loop, &l->poll, fd)) != 0) {
        close(fd);
        free(l);
        return r;
    }
    l->poll.data = l;
    if ((r = uv_poll_start(&l->poll, UV_READABLE, on_accept)) != 0) {
        uv_close((uv_handle_t *)&l->poll, (uv_close_cb)free);
        close(fd);
        return r;
    }
    /* Append, so listener indexes follow the order of the calls. */
    struct km_ssh_listener **tail = &n->listeners;
    while (*tail != NULL) {
        tail = &(*tail)->next;
    }
    *tail = l;
    return 0;
}

uint16_t km_ssh_node_listen_port(const struct km_ssh_node *n, unsigned i)
{
    const struct km_ssh_listener *l = n->listeners;
    while (l != NULL && i-- > 0) {
        l = l->next;
    }
    return l != NULL ? l->port : 0;
}

unsigned km_ssh_node_sessions(const struct km_ssh_node *n)
{
    return n->n_conns;
}

/* ---- reaping ---- */

void km__ssh_node_kick_reaper(struct km_ssh_node *n)
{
    if (n != NULL && !uv_is_closing((uv_handle_t *)&n->reaper)) {
        (void)uv_timer_start(&n->reaper, on_reap, 0, 0);
        uv_ref((uv_handle_t *)&n->reaper); /* finish the pending work before the loop ends */
    }
}

void km__ssh_node_adopt_orphan(struct km_ssh_node *n, struct km_ssh_chan *ch)
{
    km__ssh_chan_set_next(ch, n->orphans);
    n->orphans = ch;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct km_ssh_listener *l = h->data;
    close(l->fd);
    free(l);
}

static void node_free(struct km_ssh_node *n)
{
    ssh_bind_free(n->bind);
    ssh_key_free(n->key);
    free(n);
    ssh_finalize();
}

/* The reaper and recheck timers live inside the node: free it after the second of them is
 * closed. (libuv finishes closes newest first, and reads the next handle after calling
 * back, so freeing at the reaper's close would leave it reading the freed recheck.) */
static void on_timer_closed(uv_handle_t *h)
{
    struct km_ssh_node *n = h->data;
    if (++n->timers_closed == 2) {
        node_free(n);
    }
}

static void on_reap(uv_timer_t *t)
{
    struct km_ssh_node *n = t->data;
    uv_unref((uv_handle_t *)&n->reaper);
    /* Dead conns: each is unlinked and its handles closed (freed in their callbacks). */
    for (;;) {
        struct km_ssh_conn *c = n->conns;
        while (c != NULL && !c->closing) {
            c = c->next;
        }
        if (c == NULL) {
            break;
        }
        km__ssh_conn_unlink(c);
    }
    km__ssh_sess_reap(n);
    /* Orphaned streams whose users have closed them. */
    struct km_ssh_chan *prev = NULL;
    struct km_ssh_chan *ch = n->orphans;
    while (ch != NULL) {
        struct km_ssh_chan *next = km__ssh_chan_next(ch);
        if (km__ssh_chan_closed_by_user(ch)) {
            if (prev != NULL) {
                km__ssh_chan_set_next(prev, next);
            } else {
                n->orphans = next;
            }
            km__ssh_chan_free(ch);
        } else {
            prev = ch;
        }
        ch = next;
    }
    if (n->closing && n->conns == NULL && n->pending_closes == 0 && n->orphans == NULL &&
        n->sessions == NULL && n->listeners == NULL && !uv_is_closing((uv_handle_t *)&n->reaper)) {
        uv_close((uv_handle_t *)&n->reaper, on_timer_closed);
    }
}

void km_ssh_node_close(struct km_ssh_node *n)
{
    if (n == NULL || n->closing) {
        return;
    }
    n->closing = true;
    while (n->listeners != NULL) {
        struct km_ssh_listener *l = n->listeners;
        n->listeners = l->next;
        uv_close((uv_handle_t *)&l->poll, on_listener_closed);
    }
    for (struct km_ssh_conn *c = n->conns; c != NULL; c = c->next) {
        km_ssh_conn_close(c);
    }
    km__ssh_sess_close_all(n);
    uv_close((uv_handle_t *)&n->recheck, on_timer_closed);
    km__ssh_node_kick_reaper(n);
}
