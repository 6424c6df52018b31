/* Shared plumbing of the `keymesh` subcommands: common options, state directory, config and
 * key paths, error and JSON output. Each subcommand lives in its own cmd_<name>.c. */
#ifndef KM_DAEMON_CLI_H
#define KM_DAEMON_CLI_H

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/daemon/config.h"
#include "identity/key.h"

/* Exit statuses shared by every command (docs/CLI.md). */
enum {
    KM_EXIT_OK = 0,
    KM_EXIT_FAIL = 1,  /* the operation failed */
    KM_EXIT_USAGE = 2, /* bad command line */
    KM_EXIT_DOWN = 3,  /* the daemon is not running (status) */
};

struct km_cli {
    const char *cmd; /* subcommand name, for messages */
    char dir[KM_CONFIG_PATH_MAX];
    char config_path[KM_CONFIG_PATH_MAX];
    bool config_explicit;
    bool json;
};

/* Options every subcommand accepts. Values above 0xff so they never clash with short ones. */
enum { KM_OPT_DIR = 0x100, KM_OPT_CONFIG, KM_OPT_JSON, KM_OPT_HELP };
#define KM_CLI_COMMON_LONGOPTS                              \
    {"dir", required_argument, NULL, KM_OPT_DIR},           \
        {"config", required_argument, NULL, KM_OPT_CONFIG}, \
    {                                                       \
        "help", no_argument, NULL, KM_OPT_HELP              \
    }

/* Help text for the common options, to append to each command's usage. */
#define KM_CLI_COMMON_HELP                                                             \
    "  -d, --dir DIR      state directory (default: /var/lib/keymesh as root,\n"       \
    "                     $XDG_STATE_HOME/keymesh otherwise; env KEYMESH_DIR)\n"       \
    "  -c, --config FILE  configuration file (default: DIR/keymesh.conf if present)\n" \
    "  -h, --help         show this help\n"

/* Fill cli with defaults (state directory from the environment; config under it). */
void km_cli_init(struct km_cli *cli, const char *cmd);

/* Handle a common option (KM_OPT_DIR, KM_OPT_CONFIG, 'd', 'c'). Returns true if handled. */
bool km_cli_common_opt(struct km_cli *cli, int opt, const char *arg);

/* Print "keymesh <cmd>: <message>" to stderr. Returns KM_EXIT_FAIL for convenience. */
int km_cli_error(const struct km_cli *cli, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Report a usage error and point at --help. Returns KM_EXIT_USAGE. */
int km_cli_usage_error(const struct km_cli *cli, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Report getopt_long's refusal of argv[optind - 1] (opt is '?' or ':'). Returns
 * KM_EXIT_USAGE. Option strings must start with "+:" so getopt reports instead of printing. */
int km_cli_bad_option(const struct km_cli *cli, int opt, char **argv);

/* Parse a --timeout argument: milliseconds, 1..600000. On error prints a usage error and
 * returns KM_EXIT_USAGE; returns 0 and sets *ms otherwise. */
int km_cli_parse_timeout(const struct km_cli *cli, const char *arg, long *ms);

/* Load the configuration (defaults when the default file is absent). Prints the error and
 * returns non-zero on failure. */
int km_cli_load_config(const struct km_cli *cli, struct km_config *cfg);

/* The node key's path for cfg: key_file, relative to the state directory. */
int km_cli_key_path(const struct km_cli *cli, const struct km_config *cfg, char *out, size_t outsz);

/* The control socket's path for cfg. */
int km_cli_sock_path(const struct km_cli *cli, const struct km_config *cfg, char *out,
                     size_t outsz);

/* The running daemon's control socket path into out. A configuration file that does not load
 * falls back to the defaults: the daemon keeps its old settings when a file breaks (SIGHUP
 * refuses bad files), so it is asked anyway; with say_fallback the command says so on stderr.
 * Returns 0, or an exit status after printing the error. */
int km_cli_daemon_socket(const struct km_cli *cli, bool say_fallback, char *out, size_t outsz);

/* {"node_id", "fqdn", "vip", "public_key"} for pk; NULL on allocation failure. */
json_t *km_cli_identity_json(const struct km_pubkey *pk, const char *suffix, uint16_t prefix);

/* Print an identity object as aligned "key  value" lines, or as JSON with --json. */
int km_cli_print_identity(const struct km_cli *cli, json_t *id);

/* Print j as indented JSON and a newline on stdout; consumes the reference. */
int km_cli_print_json(json_t *j);

/* Subcommands: each returns a KM_EXIT_* status. argv[0] is the subcommand name. */
int km_cmd_init(int argc, char **argv);
int km_cmd_id(int argc, char **argv);
int km_cmd_derive(int argc, char **argv);
int km_cmd_up(int argc, char **argv);
int km_cmd_status(int argc, char **argv);
int km_cmd_connect(int argc, char **argv);
int km_cmd_peers(int argc, char **argv);
int km_cmd_resolve(int argc, char **argv);
int km_cmd_grant(int argc, char **argv);
int km_cmd_cap(int argc, char **argv);
int km_cmd_ping(int argc, char **argv);

/* The whole CLI: `keymesh [--version] [--help] <command> [args]`. */
int km_cli_main(int argc, char **argv);

#endif
