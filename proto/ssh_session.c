/* Session channels for capability holders (docs/CAPABILITIES.md): a login shell or the
 * forced command, as the grant's local account, with a pty when asked for and allowed.
 *
 * A session is a "session" channel (RFC 4254 section 6) whose data is a km_ssh_chan stream.
 * The child runs on a pty (forkpty) or on a socketpair; the session moves bytes between the
 * child's descriptor (a uv_poll_t) and the channel stream with backpressure both ways, and
 * learns of the child's exit from a pidfd (another uv_poll_t), so no process-wide SIGCHLD
 * handler is needed. When the child has exited and its output has ended, the exit status
 * (or signal) goes to the client, then EOF and CLOSE after the last byte.
 *
 * Sessions belong to the node, not the conn: a child may outlive its connection (it is sent
 * SIGHUP) and is still reaped. The session is freed once the child is reaped and both polls
 * are closed. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pty.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "core/log.h"
#include "proto/ssh_int.h"

#define SESS_IN_MAX (1u << 20) /* bytes from the client not yet taken by the child */
#define SESS_ENV_MAX 16        /* client environment variables kept */
#define SESS_READ 16384

struct km_ssh_sess {
    struct km_ssh_node *node;
    struct km_ssh_conn *conn; /* NULL once the conn is gone */
    ssh_channel ch;           /* NULL once the conn is gone */
    struct km_stream *chan;   /* the channel's data stream; NULL once closed */
    struct ssh_channel_callbacks_struct cb;
    struct km_ssh_grant grant;
    unsigned id;
    char desc[120];
    /* requests before the child starts */
    bool want_pty;
    char term[64];
    struct winsize ws;
    char env[SESS_ENV_MAX][256];
    size_t n_env;
    /* the child */
    bool started;
    pid_t pid;
    int fd;    /* pty master or our end of the socketpair */
    int pidfd; /* readable when the child exits */
    bool pty;
    uv_poll_t io;
    uv_poll_t exitp;
    int io_events;
    struct km_buf in; /* client -> child */
    bool in_eof;      /* the client sent EOF */
    bool out_eof;     /* the child's output ended */
    bool paused;      /* the channel's queue is above the high-water mark */
    bool exited;
    int wstatus;
    bool finished; /* exit status, EOF, CLOSE handed to the channel */
    bool closing;
    unsigned pending_closes;
    struct km_ssh_sess *next;
};

static void sess_check(struct km_ssh_sess *s);

/* ---- lookup ---- */

static struct km_ssh_sess *find(struct km_ssh_conn *c, ssh_channel ch)
{
    for (struct km_ssh_sess *s = c->node->sessions; s != NULL; s = s->next) {
        if (s->conn == c && s->ch == ch) {
            return s;
        }
    }
    return NULL;
}

/* ---- teardown ---- */

static void sess_free(struct km_ssh_sess *s)
{
    struct km_ssh_node *n = s->node;
    for (struct km_ssh_sess **pp = &n->sessions; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    if (s->fd >= 0) {
        close(s->fd);
    }
    if (s->pidfd >= 0) {
        close(s->pidfd);
    }
    km_buf_reset(&s->in);
    free(s);
    km__ssh_node_kick_reaper(n);
}

static void on_closed(uv_handle_t *h)
{
    struct km_ssh_sess *s = h->data;
    if (--s->pending_closes == 0) {
        sess_free(s);
    }
}

static void detach_channel(struct km_ssh_sess *s)
{
    if (s->ch != NULL) {
        ssh_remove_channel_callbacks(s->ch, &s->cb);
        s->ch = NULL;
    }
}

/* Free once the child is reaped (or never ran) and the channel stream is closed. A session
 * whose child never ran has no handles: the node's reaper frees it (never inside a libssh
 * callback). */
static void maybe_free(struct km_ssh_sess *s)
{
    if (s->closing || s->chan != NULL || (s->started && !s->exited)) {
        return;
    }
    s->closing = true;
    detach_channel(s);
    if (s->started) {
        s->pending_closes = 2;
        uv_close((uv_handle_t *)&s->io, on_closed);
        uv_close((uv_handle_t *)&s->exitp, on_closed);
    } else {
        km__ssh_node_kick_reaper(s->node);
    }
}

void km__ssh_sess_reap(struct km_ssh_node *n)
{
    struct km_ssh_sess *s = n->sessions;
    while (s != NULL) {
        struct km_ssh_sess *next = s->next;
        if (s->closing && !s->started) {
            sess_free(s);
        }
        s = next;
    }
}

static void kill_child(struct km_ssh_sess *s, int sig)
{
    if (s->started && !s->exited && s->pid > 0) {
        (void)kill(-s->pid, sig); /* the child leads its own process group */
        (void)kill(s->pid, sig);
    }
}

static void close_chan(struct km_ssh_sess *s)
{
    detach_channel(s); /* the channel may be freed once its stream is closed */
    if (s->chan != NULL) {
        struct km_stream *st = s->chan;
        s->chan = NULL;
        st->on_data = NULL;
        st->on_end = NULL;
        st->on_drain = NULL;
        km_stream_shutdown(st);
        km_stream_close(st);
    }
}

/* ---- child I/O ---- */

static void on_io(uv_poll_t *h, int status, int events);

static void update_io(struct km_ssh_sess *s)
{
    if (!s->started || s->closing) {
        return;
    }
    int ev = 0;
    if (!s->out_eof && !s->paused && s->chan != NULL) {
        ev |= UV_READABLE;
    }
    if (km_buf_len(&s->in) > 0) {
        ev |= UV_WRITABLE;
    }
    if (ev == s->io_events) {
        return;
    }
    s->io_events = ev;
    if (ev == 0) {
        uv_poll_stop(&s->io);
    } else {
        (void)uv_poll_start(&s->io, ev, on_io);
    }
}

static void flush_in(struct km_ssh_sess *s)
{
    while (km_buf_len(&s->in) > 0) {
        ssize_t w = write(s->fd, km_buf_peek_ptr(&s->in), km_buf_len(&s->in));
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0 && errno == EAGAIN) {
            return;
        }
        if (w <= 0) {
            km_buf_clear(&s->in); /* the child stopped reading for good */
            return;
        }
        if (km_buf_skip(&s->in, (size_t)w) != 0) {
            km_buf_clear(&s->in);
        }
    }
    km_buf_compact(&s->in);
    if (s->in_eof && !s->pty) {
        (void)shutdown(s->fd, SHUT_WR);
    }
    if (s->chan != NULL) {
        km_stream_read_start(s->chan);
    }
}

static void on_io(uv_poll_t *h, int status, int events)
{
    struct km_ssh_sess *s = h->data;
    if (s->closing) {
        return;
    }
    if (status < 0) {
        events = UV_READABLE; /* let read() report what happened */
    }
    if (events & UV_WRITABLE) {
        flush_in(s);
    }
    if ((events & UV_READABLE) && !s->out_eof && s->chan != NULL) {
        uint8_t buf[SESS_READ];
        ssize_t n = read(s->fd, buf, sizeof buf);
        if (n > 0) {
            if (km_stream_write(s->chan, buf, (size_t)n) != 0) {
                s->out_eof = true;
            } else if (km_stream_write_queue(s->chan) > KM_STREAM_HIGH_WATER) {
                s->paused = true;
            }
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            /* EOF, or EIO from a pty master once every slave descriptor is closed. */
            s->out_eof = true;
        }
    }
    update_io(s);
    sess_check(s);
}

static void on_child_exit(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    struct km_ssh_sess *s = h->data;
    if (s->exited) {
        return;
    }
    int st = 0;
    pid_t p = waitpid(s->pid, &st, WNOHANG);
    if (p == 0) {
        return;
    }
    s->exited = true;
    s->wstatus = p == s->pid ? st : 0;
    uv_poll_stop(&s->exitp);
    if (WIFEXITED(s->wstatus)) {
        KM_INFO("%s: exited with status %d", s->desc, WEXITSTATUS(s->wstatus));
    } else if (WIFSIGNALED(s->wstatus)) {
        KM_INFO("%s: killed by signal %d", s->desc, WTERMSIG(s->wstatus));
    }
    sess_check(s);
    maybe_free(s);
}

static const char *sig_name(int sig)
{
    switch (sig) {
    case SIGABRT:
        return "ABRT";
    case SIGALRM:
        return "ALRM";
    case SIGFPE:
        return "FPE";
    case SIGHUP:
        return "HUP";
    case SIGILL:
        return "ILL";
    case SIGINT:
        return "INT";
    case SIGKILL:
        return "KILL";
    case SIGPIPE:
        return "PIPE";
    case SIGQUIT:
        return "QUIT";
    case SIGSEGV:
        return "SEGV";
    case SIGTERM:
        return "TERM";
    case SIGUSR1:
        return "USR1";
    case SIGUSR2:
        return "USR2";
    default:
        return NULL;
    }
}

static int sig_number(const char *name)
{
    static const int sigs[] = {SIGABRT, SIGALRM, SIGFPE,  SIGHUP,  SIGILL,  SIGINT, SIGKILL,
                               SIGPIPE, SIGQUIT, SIGSEGV, SIGTERM, SIGUSR1, SIGUSR2};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        if (strcmp(sig_name(sigs[i]), name) == 0) {
            return sigs[i];
        }
    }
    return 0;
}

/* The child has exited and its output ended (or the channel is gone): report and close. */
static void sess_check(struct km_ssh_sess *s)
{
    if (s->finished || !s->exited) {
        return;
    }
    if (!s->out_eof && s->chan != NULL) {
        return; /* drain what the child wrote before it exited */
    }
    s->finished = true;
    if (s->chan != NULL) {
        if (WIFSIGNALED(s->wstatus)) {
            const char *nm = sig_name(WTERMSIG(s->wstatus));
            km__ssh_chan_set_exit((struct km_ssh_chan *)s->chan, -1, nm != NULL ? nm : "KILL");
        } else {
            km__ssh_chan_set_exit((struct km_ssh_chan *)s->chan,
                                  WIFEXITED(s->wstatus) ? WEXITSTATUS(s->wstatus) : 255, NULL);
        }
    }
    close_chan(s);
    maybe_free(s);
}

/* ---- channel stream callbacks ---- */

static void on_chan_data(struct km_stream *st, const uint8_t *data, size_t len)
{
    struct km_ssh_sess *s = st->data;
    /* Data may come before the shell/exec request is taken from libssh's queue (libssh
     * dispatches channel data while it reads, requests wait for the pass): keep it for the
     * child. */
    if (km_buf_put_bytes(&s->in, data, len) != 0) {
        KM_INFO("%s: input buffer full, dropping %zu bytes", s->desc, len);
    }
    if (km_buf_len(&s->in) > SESS_IN_MAX / 2) {
        km_stream_read_stop(st);
    }
    if (s->started) {
        flush_in(s);
        update_io(s);
    }
}

static void on_chan_end(struct km_stream *st, int err)
{
    struct km_ssh_sess *s = st->data;
    if (err == 0 && km__ssh_chan_peer_closed((struct km_ssh_chan *)st)) {
        err = KM_ERR_CLOSED; /* the client closed the channel: nobody is listening any more */
    }
    if (err == 0) {
        s->in_eof = true;
        if (s->started && km_buf_len(&s->in) == 0 && !s->pty) {
            (void)shutdown(s->fd, SHUT_WR);
        }
        return;
    }
    /* The channel or its connection is gone: the child loses its terminal. */
    KM_DEBUG("%s: channel ended (%s)", s->desc, km_strerror(err));
    kill_child(s, SIGHUP);
    close_chan(s);
    s->out_eof = true;
    update_io(s);
    maybe_free(s);
}

static void on_chan_drain(struct km_stream *st)
{
    struct km_ssh_sess *s = st->data;
    if (s->paused && km_stream_write_queue(st) < KM_STREAM_LOW_WATER) {
        s->paused = false;
        update_io(s);
    }
}

/* libssh callback: "signal" channel request (RFC 4254 section 6.9). */
static void on_signal(ssh_session session, ssh_channel channel, const char *signal, void *userdata)
{
    (void)session;
    (void)channel;
    struct km_ssh_sess *s = userdata;
    int sig = signal != NULL ? sig_number(signal) : 0;
    if (sig != 0 && s->started && !s->exited) {
        KM_DEBUG("%s: signal %s", s->desc, signal);
        kill_child(s, sig);
    }
}

/* ---- starting the child ---- */

static void env_add(char **envp, size_t *n, size_t max, char *storage, size_t storsz, const char *k,
                    const char *v)
{
    if (*n + 1 >= max) {
        return;
    }
    int w = snprintf(storage, storsz, "%s=%s", k, v);
    if (w < 0 || (size_t)w >= storsz) {
        return;
    }
    envp[(*n)++] = storage;
    envp[*n] = NULL;
}

/* Everything the child needs, prepared before fork so the child only makes system calls. */
struct spawn {
    uid_t uid;
    gid_t gid;
    gid_t groups[64];
    int n_groups;
    char shell[256];
    char home[512];
    char argv0[260];
    char *argv[4];
    char *envp[SESS_ENV_MAX + 12];
    char envs[SESS_ENV_MAX + 12][600];
    char command[KM_SSH_GRANT_COMMAND_MAX + 1];
};

static int prepare(struct km_ssh_sess *s, const char *client_cmd, struct spawn *sp)
{
    struct passwd pw;
    struct passwd *res = NULL;
    char pwbuf[4096];
    if (getpwnam_r(s->grant.account, &pw, pwbuf, sizeof pwbuf, &res) != 0 || res == NULL) {
        KM_WARN("%s: local account \"%s\" does not exist", s->desc, s->grant.account);
        return KM_ERR_REFUSED;
    }
    if (geteuid() != 0 && pw.pw_uid != geteuid()) {
        KM_WARN("%s: cannot run as \"%s\" without root", s->desc, s->grant.account);
        return KM_ERR_REFUSED;
    }
    sp->uid = pw.pw_uid;
    sp->gid = pw.pw_gid;
    sp->n_groups = (int)(sizeof sp->groups / sizeof sp->groups[0]);
    if (getgrouplist(pw.pw_name, pw.pw_gid, sp->groups, &sp->n_groups) < 0) {
        sp->groups[0] = pw.pw_gid;
        sp->n_groups = 1;
    }
    snprintf(sp->shell, sizeof sp->shell, "%s",
             pw.pw_shell != NULL && pw.pw_shell[0] == '/' ? pw.pw_shell : "/bin/sh");
    snprintf(sp->home, sizeof sp->home, "%s", pw.pw_dir != NULL ? pw.pw_dir : "/");
    /* What runs: the forced command whatever was asked; else the client's command; else a
     * login shell (argv[0] "-sh"). */
    const char *cmd = s->grant.exec ? s->grant.command : client_cmd;
    if (cmd != NULL) {
        snprintf(sp->command, sizeof sp->command, "%s", cmd);
        const char *base = strrchr(sp->shell, '/');
        snprintf(sp->argv0, sizeof sp->argv0, "%s", base != NULL ? base + 1 : sp->shell);
        sp->argv[0] = sp->argv0;
        sp->argv[1] = (char *)"-c";
        sp->argv[2] = sp->command;
        sp->argv[3] = NULL;
    } else {
        const char *base = strrchr(sp->shell, '/');
        snprintf(sp->argv0, sizeof sp->argv0, "-%s", base != NULL ? base + 1 : sp->shell);
        sp->argv[0] = sp->argv0;
        sp->argv[1] = NULL;
    }
    /* A clean environment: nothing of the daemon's, only what a login sets and the client
     * variables on the allow list (TERM from the pty request, LANG, LC_*). */
    size_t n = 0;
    size_t max = sizeof sp->envp / sizeof sp->envp[0];
    sp->envp[0] = NULL;
    size_t k = 0;
    env_add(sp->envp, &n, max, sp->envs[k++], sizeof sp->envs[0], "HOME", sp->home);
    env_add(sp->envp, &n, max, sp->envs[k++], sizeof sp->envs[0], "USER", pw.pw_name);
    env_add(sp->envp, &n, max, sp->envs[k++], sizeof sp->envs[0], "LOGNAME", pw.pw_name);
    env_add(sp->envp, &n, max, sp->envs[k++], sizeof sp->envs[0], "SHELL", sp->shell);
    env_add(sp->envp, &n, max, sp->envs[k++], sizeof sp->envs[0], "PATH",
            pw.pw_uid == 0 ? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                           : "/usr/local/bin:/usr/bin:/bin");
    if (s->want_pty && s->term[0] != '\0') {
        env_add(sp->envp, &n, max, sp->envs[k++], sizeof sp->envs[0], "TERM", s->term);
    }
    if (s->grant.exec && client_cmd != NULL) {
        env_add(sp->envp, &n, max, sp->envs[k++], sizeof sp->envs[0], "SSH_ORIGINAL_COMMAND",
                client_cmd);
    }
    char serial[32];
    snprintf(serial, sizeof serial, "%llu", (unsigned long long)s->grant.serial);
    env_add(sp->envp, &n, max, sp->envs[k++], sizeof sp->envs[0], "KEYMESH_GRANT_SERIAL", serial);
    for (size_t i = 0; i < s->n_env && k < sizeof sp->envs / sizeof sp->envs[0]; i++) {
        if (n + 1 < max) {
            snprintf(sp->envs[k], sizeof sp->envs[0], "%s", s->env[i]);
            sp->envp[n++] = sp->envs[k++];
            sp->envp[n] = NULL;
        }
    }
    return 0;
}

/* In the child, after fork: only system calls, then exec. */
static void __attribute__((noreturn)) child(const struct spawn *sp, int sock)
{
    if (sock >= 0) {
        (void)setsid();
        if (dup2(sock, 0) < 0 || dup2(sock, 1) < 0 || dup2(sock, 2) < 0) {
            _exit(126);
        }
    }
    sigset_t all;
    sigemptyset(&all);
    (void)sigprocmask(SIG_SETMASK, &all, NULL);
    for (int sig = 1; sig < NSIG; sig++) {
        (void)signal(sig, SIG_DFL);
    }
    if (setgroups((size_t)sp->n_groups, sp->groups) != 0 && geteuid() == 0) {
        _exit(126);
    }
    if (setgid(sp->gid) != 0 || setuid(sp->uid) != 0) {
        _exit(126);
    }
    if (chdir(sp->home) != 0 && chdir("/") != 0) {
        _exit(126);
    }
    (void)syscall(SYS_close_range, 3u, ~0u, 0u);
    execve(sp->shell, sp->argv, sp->envp);
    _exit(127);
}

static int start(struct km_ssh_sess *s, const char *client_cmd)
{
    struct spawn *sp = calloc(1, sizeof *sp);
    if (sp == NULL) {
        return -ENOMEM;
    }
    int r = prepare(s, client_cmd, sp);
    if (r != 0) {
        free(sp);
        return r;
    }
    int sv[2] = {-1, -1};
    pid_t pid;
    if (s->want_pty) {
        int master = -1;
        struct winsize ws = s->ws;
        pid = forkpty(&master, NULL, NULL, &ws);
        if (pid == 0) {
            child(sp, -1);
        }
        s->fd = master;
        s->pty = true;
    } else {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            free(sp);
            return -errno;
        }
        pid = fork();
        if (pid == 0) {
            close(sv[0]);
            child(sp, sv[1]);
        }
        close(sv[1]);
        s->fd = sv[0];
    }
    free(sp);
    if (pid < 0) {
        int e = -errno;
        if (s->fd >= 0) {
            close(s->fd);
            s->fd = -1;
        }
        return e;
    }
    s->pid = pid;
    s->started = true;
    s->exited = false;
    (void)fcntl(s->fd, F_SETFD, FD_CLOEXEC);
    (void)fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
    s->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    snprintf(s->desc + strlen(s->desc), sizeof s->desc - strlen(s->desc), " pid %d", (int)pid);
    if (s->pidfd < 0 || uv_poll_init(s->node->loop, &s->exitp, s->pidfd) != 0) {
        KM_WARN("%s: cannot watch the child: %s", s->desc, strerror(errno));
        (void)kill(pid, SIGKILL);
        (void)waitpid(pid, NULL, 0);
        s->started = false;
        return KM_ERR_SSH;
    }
    s->exitp.data = s;
    if (uv_poll_init(s->node->loop, &s->io, s->fd) != 0) {
        /* Give the session up: the exit watch closes and frees it. */
        KM_WARN("%s: cannot watch the child's terminal", s->desc);
        (void)kill(pid, SIGKILL);
        (void)waitpid(pid, NULL, 0);
        close_chan(s);
        s->closing = true;
        s->pending_closes = 1;
        uv_close((uv_handle_t *)&s->exitp, on_closed);
        return KM_ERR_SSH;
    }
    s->io.data = s;
    (void)uv_poll_start(&s->exitp, UV_READABLE, on_child_exit);
    update_io(s);
    return 0;
}

/* ---- requests ---- */

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static void pty_size(ssh_message m, struct winsize *ws)
{
    int w = ssh_message_channel_request_pty_width(m);
    int h = ssh_message_channel_request_pty_height(m);
    int pw = ssh_message_channel_request_pty_pxwidth(m);
    int ph = ssh_message_channel_request_pty_pxheight(m);
    ws->ws_col = (unsigned short)(w > 0 && w < 10000 ? w : 80);
    ws->ws_row = (unsigned short)(h > 0 && h < 10000 ? h : 24);
    ws->ws_xpixel = (unsigned short)(pw > 0 && pw < 65536 ? pw : 0);
    ws->ws_ypixel = (unsigned short)(ph > 0 && ph < 65536 ? ph : 0);
}

static const char *pty_term(ssh_message m)
{
    return ssh_message_channel_request_pty_term(m);
}
#pragma GCC diagnostic pop

static bool env_allowed(const char *name)
{
    return strcmp(name, "LANG") == 0 || strncmp(name, "LC_", 3) == 0;
}

static bool printable(const char *s, size_t max)
{
    size_t n = 0;
    for (; *s != '\0'; s++, n++) {
        if (n >= max || (unsigned char)*s < 0x20 || *s == 0x7f) {
            return false;
        }
    }
    return true;
}

bool km__ssh_sess_request(struct km_ssh_conn *c, ssh_message m)
{
    struct km_ssh_sess *s = find(c, ssh_message_channel_request_channel(m));
    if (s == NULL) {
        return false;
    }
    int sub = ssh_message_subtype(m);
    bool ok = false;
    switch (sub) {
    case SSH_CHANNEL_REQUEST_PTY: {
        const char *term = pty_term(m);
        if (s->started || !s->grant.pty) {
            KM_INFO("%s: pty refused (%s)", s->desc,
                    s->started ? "already started" : "not granted");
            break;
        }
        s->want_pty = true;
        snprintf(s->term, sizeof s->term, "%s",
                 term != NULL && printable(term, 63) ? term : "vt100");
        pty_size(m, &s->ws);
        ok = true;
        break;
    }
    case SSH_CHANNEL_REQUEST_WINDOW_CHANGE:
        if (s->pty && s->started && !s->exited) {
            struct winsize ws;
            pty_size(m, &ws);
            (void)ioctl(s->fd, TIOCSWINSZ, &ws);
        }
        ssh_message_free(m); /* window-change wants no reply */
        return true;
    case SSH_CHANNEL_REQUEST_ENV: {
        const char *k = ssh_message_channel_request_env_name(m);
        const char *v = ssh_message_channel_request_env_value(m);
        if (!s->started && k != NULL && v != NULL && env_allowed(k) && printable(k, 64) &&
            printable(v, 180) && s->n_env < SESS_ENV_MAX) {
            snprintf(s->env[s->n_env++], sizeof s->env[0], "%s=%s", k, v);
            ok = true;
        }
        break;
    }
    case SSH_CHANNEL_REQUEST_SHELL:
    case SSH_CHANNEL_REQUEST_EXEC: {
        const char *cmd =
            sub == SSH_CHANNEL_REQUEST_EXEC ? ssh_message_channel_request_command(m) : NULL;
        if (s->started || (sub == SSH_CHANNEL_REQUEST_EXEC && cmd == NULL)) {
            break;
        }
        if (!s->grant.exec && !s->grant.shell) {
            break;
        }
        char what[80];
        km_log_escape(what, sizeof what, cmd != NULL ? cmd : "", cmd != NULL ? strlen(cmd) : 0);
        int r = start(s, cmd);
        if (r != 0) {
            KM_INFO("%s: cannot start: %s", s->desc, km_strerror(r));
            break;
        }
        KM_INFO("%s: %s as \"%s\"%s%s%s", s->desc,
                s->grant.exec ? "forced command" : (cmd != NULL ? "exec" : "login shell"),
                s->grant.account, s->pty ? " on a pty" : "", cmd != NULL ? ": " : "",
                cmd != NULL ? what : "");
        ok = true;
        break;
    }
    default:
        break;
    }
    if (ok) {
        (void)ssh_message_channel_request_reply_success(m);
    } else {
        (void)ssh_message_reply_default(m);
    }
    ssh_message_free(m);
    km__ssh_conn_kick(c);
    return true;
}

int km__ssh_sess_open(struct km_ssh_conn *c, ssh_message m)
{
    struct km_ssh_node *n = c->node;
    const struct km_ssh_grant *g = c->has_grant ? &c->grant : NULL;
    const char *why = NULL;
    if (g == NULL) {
        why = "no capability";
    } else if (!g->shell && !g->exec) {
        why = "the capability grants neither shell nor exec";
    } else if (g->account[0] == '\0') {
        why = "no [cap] account is configured";
    } else if (c->n_chans + c->n_directs >= n->opts.max_channels) {
        why = "channel limit reached";
    }
    if (why != NULL) {
        KM_INFO("%s: session channel refused: %s", c->desc, why);
        return KM_ERR_REFUSED;
    }
    struct km_ssh_sess *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return -ENOMEM;
    }
    ssh_channel ch = ssh_message_channel_request_open_reply_accept(m);
    if (ch == NULL) {
        free(s);
        return KM_ERR_SSH;
    }
    s->node = n;
    s->conn = c;
    s->ch = ch;
    s->grant = *g;
    s->fd = -1;
    s->pidfd = -1;
    s->id = ++n->next_sess_id;
    km_buf_init(&s->in, SESS_IN_MAX);
    snprintf(s->desc, sizeof s->desc, "%s session %u", c->desc, s->id);
    struct km_ssh_chan *chan = km__ssh_chan_new(c, ch, "session");
    if (chan == NULL) {
        ssh_channel_free(ch);
        km_buf_reset(&s->in);
        free(s);
        return -ENOMEM;
    }
    s->chan = km__ssh_chan_stream(chan);
    s->chan->data = s;
    s->chan->on_data = on_chan_data;
    s->chan->on_end = on_chan_end;
    s->chan->on_drain = on_chan_drain;
    km__ssh_chan_set_next(chan, c->chans);
    c->chans = chan;
    c->n_chans++;
    memset(&s->cb, 0, sizeof s->cb);
    s->cb.userdata = s;
    s->cb.channel_signal_function = on_signal;
    ssh_callbacks_init(&s->cb);
    (void)ssh_add_channel_callbacks(ch, &s->cb);
    s->next = n->sessions;
    n->sessions = s;
    km_stream_read_start(s->chan);
    KM_DEBUG("%s: opened", s->desc);
    return 0;
}

void km__ssh_sess_conn_gone(struct km_ssh_conn *c)
{
    for (struct km_ssh_sess *s = c->node->sessions; s != NULL; s = s->next) {
        if (s->conn == c) {
            detach_channel(s);
            s->conn = NULL;
        }
    }
}

void km__ssh_sess_close_all(struct km_ssh_node *n)
{
    for (struct km_ssh_sess *s = n->sessions; s != NULL; s = s->next) {
        kill_child(s, SIGKILL);
    }
}
