#include "core/daemon/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/daemon/daemon_int.h"
#include "core/fsutil.h"
#include "core/relay.h"
#include "core/loop.h"
#include "core/version.h"
#include "identity/derive.h"
#include "identity/key.h"

/* Resolve a configured path: absolute as is, relative under the state directory. */
static int state_path(const struct km_daemon *d, const char *p, char *out, size_t outsz)
{
    if (p[0] == '/') {
        size_t n = strlen(p);
        if (n >= outsz) {
            return KM_ERR_TOO_LARGE;
        }
        memcpy(out, p, n + 1);
        return 0;
    }
    return km_fs_join(out, outsz, d->opts->dir, p);
}

/* Parse the configuration into cfg: defaults, then the file if there is one. */
static int load_config(const struct km_daemon_opts *o, struct km_config *cfg, bool *loaded)
{
    char err[KM_CONF_ERR_LEN];
    *loaded = false;
    if (!o->config_explicit && access(o->config_path, F_OK) != 0) {
        km_config_defaults(cfg);
        return 0;
    }
    int r = km_config_load(cfg, o->config_path, err, sizeof err);
    if (r != 0) {
        KM_ERROR("%s", err);
        return r;
    }
    *loaded = true;
    return 0;
}

static int take_lock(struct km_daemon *d)
{
    char path[KM_CONFIG_PATH_MAX];
    int r = km_fs_join(path, sizeof path, d->opts->dir, "keymesh.lock");
    if (r != 0) {
        return r;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        r = -errno;
        KM_ERROR_R(r, "cannot open lock file %s", path);
        return r;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        r = errno == EWOULDBLOCK ? KM_ERR_ALREADY_RUNNING : -errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        KM_ERROR("another keymesh daemon (pid %s) is using %s", pid[0] ? pid : "?", d->opts->dir);
        close(fd);
        return r;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        KM_WARN("cannot record pid in %s", path);
    }
    d->lock_fd = fd;
    return 0;
}

static int load_or_create_key(struct km_daemon *d)
{
    int r = state_path(d, d->cfg->key_file, d->key_path, sizeof d->key_path);
    if (r != 0) {
        KM_ERROR("key_file path too long");
        return r;
    }
    r = km_key_load(d->key_path, &d->key, NULL);
    if (r == -ENOENT) {
        /* First start: the node makes its own identity. Never replaces an existing file. */
        if ((r = km_key_generate(&d->key)) != 0 ||
            (r = km_key_save(d->key, d->key_path, "keymesh node key", 0)) != 0) {
            KM_ERROR_R(r, "cannot create node key %s", d->key_path);
            return r;
        }
        KM_INFO("generated a new node key in %s", d->key_path);
        return 0;
    }
    if (r != 0) {
        KM_ERROR_R(r, "cannot load node key %s", d->key_path);
    }
    return r;
}

static int conf_sockaddr(const struct km_conf_addr *a, struct sockaddr_storage *ss)
{
    if (uv_ip4_addr(a->host, a->port, (struct sockaddr_in *)ss) == 0 ||
        uv_ip6_addr(a->host, a->port, (struct sockaddr_in6 *)ss) == 0) {
        return 0;
    }
    return KM_ERR_INVALID;
}

static void addr_text(const struct km_conf_addr *a, char out[64])
{
    snprintf(out, 64, strchr(a->host, ':') != NULL ? "[%s]:%u" : "%s:%u", a->host, a->port);
}

/* The SSH node, its listeners and the mesh above it. */
static int start_mesh(struct km_daemon *d)
{
    const struct km_config *c = d->cfg;
    struct km_ssh_opts so;
    km_ssh_opts_default(&so);
    so.login_grace_ms = (unsigned)c->login_grace_ms;
    so.connect_timeout_ms = (unsigned)c->connect_timeout_ms;
    so.keepalive_ms = (unsigned)c->keepalive_ms;
    so.max_sessions = (unsigned)c->max_sessions;
    so.max_channels = (unsigned)c->max_channels;
    if (c->ciphers == KM_CIPHER_AES) {
        so.prefer_aes = true;
    } else if (c->ciphers == KM_CIPHER_CHACHA) {
        so.prefer_aes = false;
    }
    struct km_ssh_hooks hooks;
    km_router_ssh_hooks(d->router, &hooks);
    int r = km_ssh_node_new(km_loop_uv(d->loop), d->key, &so, &hooks, &d->ssh);
    if (r != 0) {
        KM_ERROR_R(r, "cannot set up the SSH node");
        return r;
    }
    for (size_t i = 0; i < c->n_mesh_listen; i++) {
        struct sockaddr_storage ss;
        char at[64];
        addr_text(&c->mesh_listen[i], at);
        if ((r = conf_sockaddr(&c->mesh_listen[i], &ss)) != 0 ||
            (r = km_ssh_node_listen(d->ssh, (struct sockaddr *)&ss)) != 0) {
            KM_ERROR_R(r, "cannot listen for mesh peers on %s", at);
            return r;
        }
        KM_INFO("mesh: listening on %s (%s first)", at, so.prefer_aes ? "AES-GCM" : "ChaCha20");
    }
    struct km_mesh_opts mo;
    km_mesh_opts_default(&mo);
    mo.idle_timeout_ms = (unsigned)c->idle_timeout_ms;
    mo.report = km_discover_report;
    if ((r = km_mesh_new(km_loop_uv(d->loop), d->ssh, &mo, km_discover_lookup, d->disc,
                         &d->mesh)) != 0) {
        KM_ERROR_R(r, "cannot set up the mesh");
        return r;
    }
    km_router_set_mesh(d->router, d->mesh);
    return 0;
}

/* SOCKS5 and HTTP proxy front ends on their listeners. */
static int start_proxies(struct km_daemon *d)
{
    const struct km_config *c = d->cfg;
    struct km_egress *e = km_router_egress(d->router);
    int r;
    for (size_t i = 0; c->socks5_enabled && i < c->n_socks5_listen; i++) {
        struct sockaddr_storage ss;
        char at[64];
        addr_text(&c->socks5_listen[i], at);
        const char *user = c->socks5_username[0] != '\0' ? c->socks5_username : NULL;
        const char *pass = c->socks5_password[0] != '\0' ? c->socks5_password : NULL;
        if ((r = conf_sockaddr(&c->socks5_listen[i], &ss)) != 0 ||
            (r = km_socks5_server_new(km_loop_uv(d->loop), (struct sockaddr *)&ss, e, user, pass,
                                      NULL, &d->socks5[i])) != 0) {
            KM_ERROR_R(r, "cannot listen for SOCKS5 on %s", at);
            return r;
        }
        KM_INFO("socks5: listening on %s%s", at, user != NULL ? " (username/password)" : "");
    }
    for (size_t i = 0; c->http_enabled && i < c->n_http_listen; i++) {
        struct sockaddr_storage ss;
        char at[64];
        addr_text(&c->http_listen[i], at);
        if ((r = conf_sockaddr(&c->http_listen[i], &ss)) != 0 ||
            (r = km_http_server_new(km_loop_uv(d->loop), (struct sockaddr *)&ss, e, NULL,
                                    &d->http[i])) != 0) {
            KM_ERROR_R(r, "cannot listen for the HTTP proxy on %s", at);
            return r;
        }
        KM_INFO("http proxy: listening on %s", at);
    }
    return 0;
}

static bool tun_known(void *arg, const uint8_t vip[16])
{
    return km_router_vip_known(arg, vip);
}

static int tun_echo(void *arg, const uint8_t vip[16], void (*done)(void *, int), void *done_arg,
                    void **handle)
{
    return km_router_ping(arg, vip, done, done_arg, handle);
}

/* The TUN device, before DNS so that a resolver on the VIP can bind. */
static int start_tun(struct km_daemon *d)
{
    const struct km_config *c = d->cfg;
    if (!c->tun_enabled && !d->opts->tun) {
        return 0;
    }
    struct km_tun_opts o;
    km_tun_opts_default(&o);
    snprintf(o.name, sizeof o.name, "%s", c->tun_name);
    o.mtu = c->tun_mtu;
    o.max_flows = c->tun_max_flows;
    o.prefix = c->prefix;
    km_vip(km_key_pub(d->key), c->prefix, o.vip);
    struct km_tun_hooks h = {.egress = km_router_egress(d->router),
                             .known = tun_known,
                             .echo = tun_echo,
                             .echo_cancel = km_router_ping_cancel,
                             .arg = d->router};
    const char *step = "create";
    int r = km_tun_new(km_loop_uv(d->loop), &o, &h, &d->tun, &step);
    if (r == -EPERM || r == -EACCES) {
        KM_ERROR("tun: cannot create device %s: %s needs CAP_NET_ADMIN (run as root, or "
                 "setcap cap_net_admin+ep on the keymesh binary; or set [tun] enabled = false)",
                 o.name, step);
        return r;
    }
    if (r != 0) {
        KM_ERROR_R(r, "tun: cannot set up device %s (%s)", o.name, step);
        return r;
    }
    char prefix[16];
    km_prefix_str(c->prefix, prefix);
    KM_INFO("tun: device %s up, vip %s, routing %s, mtu %u, at most %u connections",
            km_tun_ifname(d->tun), d->vip, prefix, o.mtu, o.max_flows);
    return 0;
}

/* Close every service; the loop ends once their handles are closed. Idempotent. */
static void stop_services(struct km_daemon *d)
{
    for (size_t i = 0; i < KM_CONFIG_MAX_LISTEN; i++) {
        km_socks5_server_close(d->socks5[i]);
        d->socks5[i] = NULL;
        km_http_server_close(d->http[i]);
        d->http[i] = NULL;
    }
    km_ctl_server_close(d->ctl);
    d->ctl = NULL;
    if (d->disc != NULL) {
        km_discover_stop(d->disc);
    }
    /* Before the router: held TUN connections cancel their egress requests. The device and
     * its address and route go with its descriptor. */
    km_tun_close(d->tun);
    d->tun = NULL;
    /* Streams in flight end now (clients see their connections close). */
    km_relay_close_all();
    if (d->router != NULL) {
        km_router_shutdown(d->router);
    }
    km_mesh_close(d->mesh);
    d->mesh = NULL;
    km_ssh_node_close(d->ssh);
    d->ssh = NULL;
    km_relay_close_all(); /* relays the node's final callbacks may have ended */
}

static void on_stop(struct km_loop *l, int signum, void *arg)
{
    (void)l;
    struct km_daemon *d = arg;
    /* The watchers stay installed until the loop is freed (they do not keep it alive), so a
     * second signal during shutdown is caught here instead of killing the process. */
    if (d->stopping) {
        KM_INFO("signal %d: already shutting down", signum);
        return;
    }
    d->stopping = true;
    KM_INFO("signal %d: shutting down", signum);
    stop_services(d);
}

/* SIGHUP: re-read the configuration. A bad file is reported and the running one kept. */
static void on_reload(struct km_loop *l, int signum, void *arg)
{
    (void)l;
    (void)signum;
    struct km_daemon *d = arg;
    struct km_config *n = malloc(sizeof *n);
    if (n == NULL) {
        KM_ERROR("reload: out of memory");
        return;
    }
    bool loaded;
    if (load_config(d->opts, n, &loaded) != 0) {
        KM_ERROR("reload: keeping the running configuration");
        free(n);
        return;
    }
    if (!d->opts->log_level_set) {
        km_log_set_level(n->log_level);
    }
    if (strcmp(n->key_file, d->cfg->key_file) != 0 || strcmp(n->suffix, d->cfg->suffix) != 0 ||
        n->prefix != d->cfg->prefix || strcmp(n->control_socket, d->cfg->control_socket) != 0) {
        KM_WARN("reload: changes to key_file, suffix, prefix or control socket take effect "
                "after a restart");
        /* Keep identity-related settings as running; take the rest. */
        memcpy(n->key_file, d->cfg->key_file, sizeof n->key_file);
        memcpy(n->suffix, d->cfg->suffix, sizeof n->suffix);
        n->prefix = d->cfg->prefix;
        memcpy(n->control_socket, d->cfg->control_socket, sizeof n->control_socket);
    }
    km_router_set_config(d->router, n);
    km_discover_set_config(d->disc, n);
    free(d->cfg);
    d->cfg = n;
    d->config_loaded = loaded;
    d->reloads++;
    KM_INFO("reloaded configuration (log level %s)", km_log_level_name(km_log_get_level()));
}

static int start(struct km_daemon *d)
{
    const struct km_daemon_opts *o = d->opts;
    int r = km_fs_mkdir_p(o->dir, 0700);
    if (r != 0) {
        KM_ERROR_R(r, "cannot create state directory %s", o->dir);
        return r;
    }
    if ((r = take_lock(d)) != 0) {
        return r;
    }
    if ((r = load_config(o, d->cfg, &d->config_loaded)) != 0) {
        return r;
    }
    km_log_set_level(o->log_level_set ? o->log_level : d->cfg->log_level);
    if ((r = load_or_create_key(d)) != 0) {
        return r;
    }
    const struct km_pubkey *pk = km_key_pub(d->key);
    km_node_id(pk, d->node_id);
    km_vip_str(pk, d->cfg->prefix, d->vip);
    if ((r = km_fqdn(pk, d->cfg->suffix, d->fqdn, sizeof d->fqdn)) != 0) {
        KM_ERROR_R(r, "suffix %s", d->cfg->suffix);
        return r;
    }
    if ((r = state_path(d, d->cfg->control_socket, d->sock_path, sizeof d->sock_path)) != 0) {
        KM_ERROR("control socket path is longer than %d bytes", KM_CONFIG_SOCK_MAX - 1);
        return r;
    }
    /* We hold the lock, so a socket file left here is from a daemon that died. */
    (void)unlink(d->sock_path);
    if ((r = km_ctl_server_new(km_loop_uv(d->loop), d->sock_path, km__daemon_on_ctl, d, &d->ctl)) !=
        0) {
        KM_ERROR_R(r, "cannot listen on control socket %s", d->sock_path);
        return r;
    }
    if ((r = km_router_new(km_loop_uv(d->loop), d->cfg, km_key_pub(d->key), &d->router)) == 0) {
        km_router_set_dir(d->router, d->opts->dir);
    }
    if (r != 0 ||
        (r = km_discover_new(km_loop_uv(d->loop), d->cfg, km_key_pub(d->key), d->router,
                             &d->disc)) != 0 ||
        (r = start_mesh(d)) != 0 || (r = start_proxies(d)) != 0 || (r = start_tun(d)) != 0 ||
        (r = km_discover_start_dns(d->disc)) != 0 ||
        (r = km_discover_start_publish(d->disc, d->opts->dir)) != 0 ||
        (r = km_discover_start_gossip(d->disc, d->key)) != 0 ||
        (r = km_discover_start_mdns(d->disc, d->key)) != 0 ||
        (r = km_discover_start_portmap(d->disc)) != 0 ||
        (r = km_discover_start_gateway(d->disc, d->ssh)) != 0) {
        return r;
    }
    if ((r = km_loop_watch_signals(d->loop, on_stop, on_reload, d)) != 0) {
        KM_ERROR_R(r, "cannot watch signals");
        return r;
    }
    d->started = time(NULL);
    KM_INFO("keymesh %s up: node %s, fqdn %s, vip %s, control %s", KM_VERSION, d->node_id, d->fqdn,
            d->vip, d->sock_path);
    return 0;
}

int km_daemon_run(const struct km_daemon_opts *opts)
{
    struct km_daemon d = {.opts = opts, .lock_fd = -1};
    int status = 1;
    d.cfg = malloc(sizeof *d.cfg);
    if (d.cfg == NULL) {
        KM_ERROR("out of memory");
        return 1;
    }
    int r = km_loop_new(&d.loop);
    if (r != 0) {
        KM_ERROR_R(r, "cannot create event loop");
        free(d.cfg);
        return 1;
    }
    if (start(&d) == 0) {
        r = km_loop_run(d.loop);
        status = r == 0 ? 0 : 1;
    }
    stop_services(&d);
    /* Let the closes finish: SSH sessions are torn down on the next loop turns. */
    if (km_loop_run(d.loop) != 0) {
        status = 1;
    }
    if (km_loop_free(d.loop) != 0) {
        KM_ERROR("handles leaked at shutdown");
        status = 1;
    }
    km_discover_free(d.disc);
    km_router_free(d.router);
    km_key_free(d.key);
    free(d.cfg);
    if (d.lock_fd >= 0) {
        close(d.lock_fd); /* releases the lock; the file stays for the next start */
    }
    if (status == 0) {
        KM_INFO("stopped cleanly");
    }
    return status;
}
