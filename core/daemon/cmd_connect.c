/* keymesh connect: splice stdin/stdout to a stream opened by the daemon, for
 * `ssh -o ProxyCommand='keymesh connect %h %p'`. */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/ctl.h"
#include "core/daemon/cli.h"

static const char help[] =
    "Usage: keymesh connect [options] HOST PORT\n"
    "\n"
    "Ask the running daemon for a stream to HOST:PORT and connect it to standard input and\n"
    "output. HOST is a node ID FQDN (<node-id>.mesh.internal), an alias FQDN, a VIP, or any\n"
    "other destination the egress policy allows. Made for OpenSSH:\n"
    "\n"
    "  ssh -o ProxyCommand='keymesh connect %h %p' user@<node-id>.mesh.internal\n"
    "\n"
    "Exits 0 when the stream ends cleanly, 1 when it cannot be opened (the reason on stderr).\n"
    "\n"
    "Options:\n" KM_CLI_COMMON_HELP;

#define BUF 65536

/* Read the reply line byte by byte so no stream byte after it is consumed here. */
static int read_reply(int fd, char *line, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 30000) <= 0) {
            return -ETIMEDOUT;
        }
        ssize_t r = read(fd, line + n, 1);
        if (r <= 0) {
            return KM_ERR_CTL_PROTO;
        }
        if (line[n] == '\n') {
            line[n] = '\0';
            return 0;
        }
        n++;
    }
    return KM_ERR_CTL_PROTO;
}

struct pipe_buf {
    uint8_t data[BUF];
    size_t off;
    size_t len;
};

/* Move bytes both ways until the daemon's side ends. stdin EOF half-closes the socket. */
static int splice_stdio(int sock)
{
    static struct pipe_buf up;   /* stdin -> sock */
    static struct pipe_buf down; /* sock -> stdout */
    bool in_eof = false;
    bool sock_eof = false;
    bool shut = false;
    for (;;) {
        struct pollfd p[3] = {
            {.fd = (!in_eof && up.len == 0) ? 0 : -1, .events = POLLIN},
            {.fd = sock,
             .events =
                 (short)(((!sock_eof && down.len == 0) ? POLLIN : 0) | (up.len > 0 ? POLLOUT : 0))},
            {.fd = down.len > 0 ? 1 : -1, .events = POLLOUT},
        };
        if (sock_eof && down.len == 0) {
            return 0;
        }
        if (poll(p, 3, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = read(0, up.data, sizeof up.data);
            if (r > 0) {
                up.off = 0;
                up.len = (size_t)r;
            } else {
                in_eof = true;
            }
        }
        if (p[1].revents & POLLOUT && up.len > 0) {
            ssize_t w = send(sock, up.data + up.off, up.len, MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN) {
                return -errno;
            }
            if (w > 0) {
                up.off += (size_t)w;
                up.len -= (size_t)w;
            }
        }
        if (in_eof && up.len == 0 && !shut) {
            shutdown(sock, SHUT_WR);
            shut = true;
        }
        if (p[1].revents & (POLLIN | POLLHUP | POLLERR) && down.len == 0 && !sock_eof) {
            ssize_t r = recv(sock, down.data, sizeof down.data, 0);
            if (r > 0) {
                down.off = 0;
                down.len = (size_t)r;
            } else if (r == 0 || errno != EAGAIN) {
                sock_eof = true;
            }
        }
        if (p[2].revents & (POLLOUT | POLLERR) && down.len > 0) {
            ssize_t w = write(1, down.data + down.off, down.len);
            if (w < 0) {
                return -errno; /* stdout gone: nobody reads any more */
            }
            down.off += (size_t)w;
            down.len -= (size_t)w;
        }
    }
}

int km_cmd_connect(int argc, char **argv)
{
    struct km_cli cli;
    km_cli_init(&cli, "connect");
    static const struct option opts[] = {
        KM_CLI_COMMON_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "+:d:c:h", opts, NULL)) != -1) {
        if (km_cli_common_opt(&cli, c, optarg)) {
            continue;
        }
        if (c == 'h' || c == KM_OPT_HELP) {
            fputs(help, stdout);
            return KM_EXIT_OK;
        }
        return km_cli_bad_option(&cli, c, argv);
    }
    if (argc - optind != 2) {
        return km_cli_usage_error(&cli, "expected HOST and PORT");
    }
    const char *host = argv[optind];
    char *end;
    errno = 0;
    unsigned long port = strtoul(argv[optind + 1], &end, 10);
    if (errno != 0 || end == argv[optind + 1] || *end != '\0' || port < 1 || port > 65535 ||
        argv[optind + 1][0] == '-') {
        return km_cli_usage_error(&cli, "PORT '%s' is not 1-65535", argv[optind + 1]);
    }
    if (strlen(host) == 0 || strlen(host) > 255) {
        return km_cli_usage_error(&cli, "HOST must be 1-255 characters");
    }
    struct km_config *cfg = malloc(sizeof *cfg);
    if (cfg == NULL) {
        return km_cli_error(&cli, "out of memory");
    }
    char path[KM_CONFIG_PATH_MAX];
    int lr = km_cli_load_config(&cli, cfg);
    int pr = lr == 0 ? km_cli_sock_path(&cli, cfg, path, sizeof path) : 0;
    free(cfg);
    if (lr != 0) {
        return KM_EXIT_FAIL;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (pr != 0 || strlen(path) >= sizeof sa.sun_path) {
        return km_cli_error(&cli, "control socket path too long");
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        if (e == ENOENT || e == ECONNREFUSED) {
            km_cli_error(&cli, "the daemon is not running (no control socket at %s)", path);
            return KM_EXIT_DOWN;
        }
        return km_cli_error(&cli, "%s: %s", path, strerror(e));
    }
    json_t *req = json_pack("{s:s, s:s, s:i}", "cmd", "connect", "host", host, "port", (int)port);
    char *text = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    int status = KM_EXIT_FAIL;
    char line[1024];
    if (text == NULL) {
        km_cli_error(&cli, "out of memory");
        goto out;
    }
    size_t len = strlen(text);
    text[len] = '\n';
    if (send(fd, text, len + 1, MSG_NOSIGNAL) != (ssize_t)(len + 1)) {
        km_cli_error(&cli, "cannot talk to the daemon: %s", strerror(errno));
        goto out;
    }
    int r = read_reply(fd, line, sizeof line);
    if (r != 0) {
        km_cli_error(&cli, "no reply from the daemon: %s", km_strerror(r));
        goto out;
    }
    json_error_t jerr;
    json_t *reply = json_loads(line, 0, &jerr);
    if (!json_is_true(json_object_get(reply, "ok"))) {
        const char *e = json_string_value(json_object_get(reply, "error"));
        km_cli_error(&cli, "%s port %lu: %s", host, port, e != NULL ? e : "refused");
        json_decref(reply);
        goto out;
    }
    json_decref(reply);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    r = splice_stdio(fd);
    status = r == 0 ? KM_EXIT_OK : KM_EXIT_FAIL;
out:
    free(text);
    close(fd);
    return status;
}
