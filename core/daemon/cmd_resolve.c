/* keymesh resolve: what the running daemon knows of a name. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctl.h"
#include "core/daemon/cli.h"

static const char help[] =
    "Usage: keymesh resolve [options] NAME\n"
    "\n"
    "Show the node a name stands for and the paths to it, best first, as the running daemon\n"
    "ranks them for this machine. NAME is <node-id>.<suffix>, <alias>.<suffix>, a VIP or a\n"
    "bare node ID.\n"
    "\n"
    "Options:\n"
    "      --json            print the daemon's answer as JSON\n"
    "  -t, --timeout MS      how long to wait for the reply (default 2000)\n" KM_CLI_COMMON_HELP;

static const char *str(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v != NULL && v[0] != '\0' ? v : "-";
}

int km_cmd_resolve(int argc, char **argv)
{
    struct km_cli cli;
    km_cli_init(&cli, "resolve");
    static const struct option opts[] = {
        {"json", no_argument, NULL, KM_OPT_JSON},
        {"timeout", required_argument, NULL, 't'},
        KM_CLI_COMMON_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    long timeout_ms = 2000;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "+:t:d:c:h", opts, NULL)) != -1) {
        if (km_cli_common_opt(&cli, c, optarg)) {
            continue;
        }
        switch (c) {
        case KM_OPT_JSON:
            cli.json = true;
            break;
        case 't':
            if (km_cli_parse_timeout(&cli, optarg, &timeout_ms) != 0) {
                return KM_EXIT_USAGE;
            }
            break;
        case 'h':
        case KM_OPT_HELP:
            fputs(help, stdout);
            return KM_EXIT_OK;
        default:
            return km_cli_bad_option(&cli, c, argv);
        }
    }
    if (argc - optind != 1) {
        return km_cli_usage_error(&cli, argc == optind ? "missing NAME" : "too many arguments");
    }
    char sock[KM_CONFIG_PATH_MAX];
    int sr = km_cli_daemon_socket(&cli, false, sock, sizeof sock);
    if (sr != 0) {
        return sr;
    }
    json_t *req = json_pack("{s:s, s:s}", "cmd", "resolve", "name", argv[optind]);
    json_t *reply = NULL;
    int r = req != NULL ? km_ctl_call(sock, req, &reply, (int)timeout_ms) : -ENOMEM;
    json_decref(req);
    if (r == KM_ERR_NOT_RUNNING) {
        km_cli_error(&cli, "the daemon is not running (no control socket at %s)", sock);
        return KM_EXIT_DOWN;
    }
    if (r != 0) {
        return km_cli_error(&cli, "%s: %s", sock, km_strerror(r));
    }
    if (!json_is_true(json_object_get(reply, "ok"))) {
        km_cli_error(&cli, "%s: %s", argv[optind], str(reply, "error"));
        json_decref(reply);
        return KM_EXIT_FAIL;
    }
    json_object_del(reply, "ok");
    if (cli.json) {
        return km_cli_print_json(reply);
    }
    printf("%-11s %s\n%-11s %s\n%-11s %s\n%-11s %s\n", "node_id", str(reply, "node_id"), "fqdn",
           str(reply, "fqdn"), "vip", str(reply, "vip"), "name", str(reply, "name"));
    json_t *paths = json_object_get(reply, "paths");
    printf("%-11s %zu\n", "paths", json_array_size(paths));
    size_t i;
    json_t *p;
    json_array_foreach (paths, i, p) {
        printf("  %" JSON_INTEGER_FORMAT ". %-10s %-40s (%s)\n",
               json_integer_value(json_object_get(p, "rank")), str(p, "kind"), str(p, "address"),
               str(p, "source"));
    }
    json_decref(reply);
    return KM_EXIT_OK;
}
