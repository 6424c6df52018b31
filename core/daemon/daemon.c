#include "core/daemon/daemon.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/ctl.h"
#include "core/daemon/config.h"
#include "core/fsutil.h"
#include "core/loop.h"
#include "core/version.h"
#include "identity/derive.h"
#include "identity/key.h"

struct km_daemon {
    const struct km_daemon_opts *opts;
    struct km_loop *loop;
    struct km_ctl_server *ctl;
    struct km_config *cfg;
    struct km_key *key;
    int lock_fd;
    bool config_loaded; /* a file was read (not just defaults) */
    bool stopping;
    unsigned reloads;
    time_t started;
    char key_path[KM_CONFIG_PATH_MAX];
    char sock_path[KM_CONFIG_SOCK_MAX];
    char node_id[KM_NODE_ID_LEN + 1];
    char fqdn[KM_FQDN_MAX];
    char vip[KM_VIP_STRLEN];
};

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

static json_t *status_json(const struct km_daemon *d)
{
    char prefix[16];
    km_prefix_str(d->cfg->prefix, prefix);
    json_t *ls = json_array();
    for (size_t i = 0; ls != NULL && i < d->cfg->n_mesh_listen; i++) {
        char a[64];
        const struct km_conf_addr *l = &d->cfg->mesh_listen[i];
        snprintf(a, sizeof a, strchr(l->host, ':') ? "[%s]:%u" : "%s:%u", l->host, l->port);
        json_array_append_new(ls, json_string(a));
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s?, s:s, s:I, s:o, s:o}",
                     "version", KM_VERSION, "node_id", d->node_id, "fqdn", d->fqdn, "vip", d->vip,
                     "prefix", prefix, "pid", (json_int_t)getpid(), "uptime_s",
                     (json_int_t)(time(NULL) - d->started), "state_dir", d->opts->dir, "config",
                     d->config_loaded ? d->opts->config_path : NULL, "log_level",
                     km_log_level_name(km_log_get_level()), "reloads", (json_int_t)d->reloads,
                     "mesh_listen", ls != NULL ? ls : json_null(), "peers", json_array());
}

static json_t *on_ctl(void *arg, const char *cmd, const json_t *req)
{
    (void)req;
    struct km_daemon *d = arg;
    if (strcmp(cmd, "status") == 0) {
        return status_json(d);
    }
    if (strcmp(cmd, "ping") == 0) {
        return json_object();
    }
    KM_DEBUG("ctl: unknown command \"%s\"", cmd); /* cmd is [a-z0-9-] only */
    return json_pack("{s:b, s:s+}", "ok", 0, "error", "unknown command: ", cmd);
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
    km_ctl_server_close(d->ctl);
    d->ctl = NULL;
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
    if ((r = km_ctl_server_new(km_loop_uv(d->loop), d->sock_path, on_ctl, d, &d->ctl)) != 0) {
        KM_ERROR_R(r, "cannot listen on control socket %s", d->sock_path);
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
    km_ctl_server_close(d.ctl);
    if (km_loop_free(d.loop) != 0) {
        KM_ERROR("handles leaked at shutdown");
        status = 1;
    }
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
