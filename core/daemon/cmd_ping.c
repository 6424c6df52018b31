/* keymesh ping: round trips to a node over the mesh, and which path answered. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctl.h"
#include "core/daemon/cli.h"

static const char help[] =
    "Usage: keymesh ping [options] NODE\n"
    "\n"
    "Measure round trips to NODE over the mesh through the running daemon: each round opens\n"
    "and closes a channel on the SSH connection to NODE (dialling it first if needed, which\n"
    "is timed apart), and shows the path that answered (direct, punched or relay) and its "
    "address.\n"
    "NODE is <node-id>.<suffix>, <alias>.<suffix>, a VIP or a bare node ID.\n"
    "Exits 0 when every round got an answer, 1 otherwise.\n"
    "\n"
    "Options:\n"
    "  -n, --count N         rounds (1-100, default 4)\n"
    "      --json            print the daemon's answer as JSON\n"
    "  -t, --timeout MS      how long to wait for the whole answer (default "
    "15000)\n" KM_CLI_COMMON_HELP;

static const char *str(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v != NULL && v[0] != '\0' ? v : "-";
}

int km_cmd_ping(int argc, char **argv)
{
    struct km_cli cli;
    km_cli_init(&cli, "ping");
    static const struct option opts[] = {
        {"json", no_argument, NULL, KM_OPT_JSON},
        {"count", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 't'},
        KM_CLI_COMMON_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    long timeout_ms = 15000;
    long count = 4;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "+:n:t:d:c:h", opts, NULL)) != -1) {
        if (km_cli_common_opt(&cli, c, optarg)) {
            continue;
        }
        switch (c) {
        case KM_OPT_JSON:
            cli.json = true;
            break;
        case 'n': {
            char *end = NULL;
            count = strtol(optarg, &end, 10);
            if (end == optarg || *end != '\0' || count < 1 || count > 100) {
                return km_cli_usage_error(&cli, "bad count '%s' (expected 1-100)", optarg);
            }
            break;
        }
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
        return km_cli_usage_error(&cli, argc == optind ? "missing NODE" : "too many arguments");
    }
    char sock[KM_CONFIG_PATH_MAX];
    int sr = km_cli_daemon_socket(&cli, false, sock, sizeof sock);
    if (sr != 0) {
        return sr;
    }
    json_t *req = json_pack("{s:s, s:s, s:I}", "cmd", "ping-node", "name", argv[optind], "count",
                            (json_int_t)count);
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
    bool all = json_integer_value(json_object_get(reply, "lost")) == 0;
    if (cli.json) {
        int st = km_cli_print_json(reply);
        return st == KM_EXIT_OK && !all ? KM_EXIT_FAIL : st;
    }
    printf("ping %.12s... via %s %s\n", str(reply, "node_id"), str(reply, "path"),
           str(reply, "address"));
    json_t *cm = json_object_get(reply, "connect_ms");
    if (json_is_number(cm)) {
        printf("  connect  %.3f ms\n", json_number_value(cm));
    }
    size_t i;
    json_t *v;
    json_array_foreach (json_object_get(reply, "rtt_ms"), i, v) {
        printf("  rtt %-4zu %.3f ms\n", i + 1, json_number_value(v));
    }
    printf("  min/avg/max %.3f/%.3f/%.3f ms, %" JSON_INTEGER_FORMAT " lost%s%s\n",
           json_number_value(json_object_get(reply, "min_ms")),
           json_number_value(json_object_get(reply, "avg_ms")),
           json_number_value(json_object_get(reply, "max_ms")),
           json_integer_value(json_object_get(reply, "lost")), all ? "" : ": ",
           all ? "" : str(reply, "error"));
    json_decref(reply);
    return all ? KM_EXIT_OK : KM_EXIT_FAIL;
}
