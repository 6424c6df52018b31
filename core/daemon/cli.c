#include "core/daemon/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/version.h"
#include "identity/derive.h"

static void default_dir(char *out, size_t outsz)
{
    const char *env = getenv("KEYMESH_DIR");
    if (env != NULL && env[0] != '\0') {
        snprintf(out, outsz, "%s", env);
        return;
    }
    if (geteuid() == 0) {
        snprintf(out, outsz, "/var/lib/keymesh");
        return;
    }
    const char *xdg = getenv("XDG_STATE_HOME");
    if (xdg != NULL && xdg[0] == '/') {
        snprintf(out, outsz, "%s/keymesh", xdg);
        return;
    }
    const char *home = getenv("HOME");
    snprintf(out, outsz, "%s/.local/state/keymesh", home != NULL ? home : ".");
}

void km_cli_init(struct km_cli *cli, const char *cmd)
{
    memset(cli, 0, sizeof *cli);
    cli->cmd = cmd;
    default_dir(cli->dir, sizeof cli->dir);
}

bool km_cli_common_opt(struct km_cli *cli, int opt, const char *arg)
{
    switch (opt) {
    case 'd':
    case KM_OPT_DIR:
        snprintf(cli->dir, sizeof cli->dir, "%s", arg);
        return true;
    case 'c':
    case KM_OPT_CONFIG:
        snprintf(cli->config_path, sizeof cli->config_path, "%s", arg);
        cli->config_explicit = true;
        return true;
    default:
        return false;
    }
}

__attribute__((format(printf, 2, 0))) static void vreport(const struct km_cli *cli, const char *fmt,
                                                          va_list ap)
{
    fprintf(stderr, "keymesh %s: ", cli->cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int km_cli_error(const struct km_cli *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cli, fmt, ap);
    va_end(ap);
    return KM_EXIT_FAIL;
}

int km_cli_usage_error(const struct km_cli *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cli, fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try 'keymesh %s --help'.\n", cli->cmd);
    return KM_EXIT_USAGE;
}

int km_cli_parse_timeout(const struct km_cli *cli, const char *arg, long *ms)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || v < 1 || v > 600000) {
        return km_cli_usage_error(cli, "--timeout '%s': expected 1..600000 ms", arg);
    }
    *ms = v;
    return 0;
}

int km_cli_bad_option(const struct km_cli *cli, int opt, char **argv)
{
    const char *arg = argv[optind - 1];
    if (opt == ':') {
        return km_cli_usage_error(cli, "option '%s' needs a value", arg);
    }
    if (optopt != 0 && arg[0] == '-' && arg[1] != '-') {
        return km_cli_usage_error(cli, "unknown option '-%c'", optopt);
    }
    return km_cli_usage_error(cli, "unknown option '%s'", arg);
}

static void resolve_config_path(const struct km_cli *cli, char *out, size_t outsz)
{
    if (cli->config_explicit) {
        snprintf(out, outsz, "%s", cli->config_path);
    } else if (km_fs_join(out, outsz, cli->dir, "keymesh.conf") != 0) {
        out[0] = '\0';
    }
}

int km_cli_load_config(const struct km_cli *cli, struct km_config *cfg)
{
    char path[KM_CONFIG_PATH_MAX];
    resolve_config_path(cli, path, sizeof path);
    if (!cli->config_explicit && access(path, F_OK) != 0) {
        km_config_defaults(cfg);
        return 0;
    }
    char err[KM_CONF_ERR_LEN];
    if (km_config_load(cfg, path, err, sizeof err) != 0) {
        km_cli_error(cli, "%s", err);
        return -1;
    }
    return 0;
}

static int under_dir(const struct km_cli *cli, const char *p, char *out, size_t outsz)
{
    if (p[0] == '/') {
        int n = snprintf(out, outsz, "%s", p);
        return (n < 0 || (size_t)n >= outsz) ? KM_ERR_TOO_LARGE : 0;
    }
    return km_fs_join(out, outsz, cli->dir, p);
}

int km_cli_key_path(const struct km_cli *cli, const struct km_config *cfg, char *out, size_t outsz)
{
    return under_dir(cli, cfg->key_file, out, outsz);
}

int km_cli_sock_path(const struct km_cli *cli, const struct km_config *cfg, char *out, size_t outsz)
{
    return under_dir(cli, cfg->control_socket, out, outsz);
}

int km_cli_daemon_socket(const struct km_cli *cli, bool say_fallback, char *out, size_t outsz)
{
    struct km_config *cfg = malloc(sizeof *cfg);
    if (cfg == NULL) {
        return km_cli_error(cli, "out of memory");
    }
    if (km_cli_load_config(cli, cfg) != 0) {
        if (say_fallback) {
            fprintf(stderr, "keymesh %s: asking the daemon on the default control socket\n",
                    cli->cmd);
        }
        km_config_defaults(cfg);
    }
    int r = km_cli_sock_path(cli, cfg, out, outsz);
    free(cfg);
    return r != 0 ? km_cli_error(cli, "control socket path too long") : 0;
}

json_t *km_cli_identity_json(const struct km_pubkey *pk, const char *suffix, uint16_t prefix)
{
    char id[KM_NODE_ID_LEN + 1];
    char fqdn[KM_FQDN_MAX];
    char vip[KM_VIP_STRLEN];
    char line[256];
    km_node_id(pk, id);
    km_vip_str(pk, prefix, vip);
    if (km_fqdn(pk, suffix, fqdn, sizeof fqdn) != 0 ||
        km_pubkey_format_openssh(pk, NULL, line, sizeof line) != 0) {
        return NULL;
    }
    return json_pack("{s:s, s:s, s:s, s:s}", "node_id", id, "fqdn", fqdn, "vip", vip, "public_key",
                     line);
}

int km_cli_print_json(json_t *j)
{
    if (j == NULL) {
        return KM_EXIT_FAIL;
    }
    int r = json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (r != 0 || fputc('\n', stdout) == EOF) {
        return KM_EXIT_FAIL;
    }
    return KM_EXIT_OK;
}

int km_cli_print_identity(const struct km_cli *cli, json_t *id)
{
    if (id == NULL) {
        return km_cli_error(cli, "out of memory");
    }
    if (cli->json) {
        return km_cli_print_json(id);
    }
    const char *k;
    json_t *v;
    json_object_foreach (id, k, v) {
        if (json_is_string(v)) {
            printf("%-11s %s\n", k, json_string_value(v));
        }
    }
    json_decref(id);
    return KM_EXIT_OK;
}

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"init", km_cmd_init, "create this node's key (its identity) in the state directory"},
    {"id", km_cmd_id, "print this node's node ID, FQDN, VIP and public key"},
    {"derive", km_cmd_derive, "print the node ID, FQDN and VIP of any key or node ID"},
    {"up", km_cmd_up, "run the daemon in the foreground"},
    {"status", km_cmd_status, "ask the running daemon for its state"},
    {"peers", km_cmd_peers, "list the peers and the connection to each"},
    {"resolve", km_cmd_resolve, "show a name's node and its ranked paths"},
    {"connect", km_cmd_connect, "splice stdin/stdout to a mesh stream (ssh ProxyCommand)"},
    {"grant", km_cmd_grant, "issue a capability (an OpenSSH user certificate) to a key"},
    {"cap", km_cmd_cap, "add, list and revoke capabilities"},
    {"ping", km_cmd_ping, "measure round trips to a node and show the path that answered"},
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: keymesh <command> [options]\n\n"
               "A mesh proxy whose node identity is its Ed25519 key.\n\nCommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(f, "\nRun 'keymesh <command> --help' for a command's options.\n"
               "  -h, --help     show this help\n"
               "  -V, --version  print the version\n");
}

int km_cli_main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return KM_EXIT_USAGE;
    }
    const char *c = argv[1];
    if (strcmp(c, "-h") == 0 || strcmp(c, "--help") == 0 || strcmp(c, "help") == 0) {
        if (strcmp(c, "help") == 0 && argc > 2) {
            char *sub[] = {argv[2], (char *)"--help", NULL};
            for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
                if (strcmp(commands[i].name, argv[2]) == 0) {
                    return commands[i].fn(2, sub);
                }
            }
        }
        usage(stdout);
        return KM_EXIT_OK;
    }
    if (strcmp(c, "-V") == 0 || strcmp(c, "--version") == 0) {
        printf("keymesh %s\n", KM_VERSION);
        return KM_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(commands[i].name, c) == 0) {
            return commands[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "keymesh: unknown command '%s'\nTry 'keymesh --help'.\n", c);
    return KM_EXIT_USAGE;
}
