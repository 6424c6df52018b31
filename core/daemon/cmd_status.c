/* keymesh status: ask the running daemon. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctl.h"
#include "core/daemon/cli.h"

static const char help[] =
    "Usage: keymesh status [options]\n"
    "\n"
    "Ask the daemon running on this state directory for its state over the control socket.\n"
    "Exits 3 when no daemon is running.\n"
    "\n"
    "Options:\n"
    "      --json            print the daemon's reply as JSON\n"
    "  -t, --timeout MS      how long to wait for the reply (default 2000)\n" KM_CLI_COMMON_HELP;

static void print_value(const char *k, json_t *v)
{
    if (json_is_string(v)) {
        printf("%-13s %s\n", k, json_string_value(v));
    } else if (json_is_integer(v)) {
        printf("%-13s %" JSON_INTEGER_FORMAT "\n", k, json_integer_value(v));
    } else if (json_is_null(v)) {
        printf("%-13s -\n", k);
    } else if (json_is_array(v) && strcmp(k, "peers") == 0) {
        printf("%-13s %zu\n", k, json_array_size(v));
    } else if (json_is_array(v)) {
        printf("%-13s", k);
        size_t i;
        json_t *e;
        if (json_array_size(v) == 0) {
            printf(" -");
        }
        json_array_foreach (v, i, e) {
            printf(" %s", json_is_string(e) ? json_string_value(e) : "?");
        }
        printf("\n");
    }
}

static const char peers_help[] =
    "Usage: keymesh peers [options]\n"
    "\n"
    "List the peers the running daemon knows: configured ones and those connected, with the\n"
    "state of the connection, the path in use (direct, punched or relay), its address, the\n"
    "cipher, the number of streams, and the candidate paths the dialer knows for each.\n"
    "\n"
    "Options:\n"
    "      --json            print the peers array as JSON\n"
    "  -t, --timeout MS      how long to wait for the reply (default 2000)\n" KM_CLI_COMMON_HELP;

static const char *str_or_dash(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    return v != NULL && v[0] != '\0' ? v : "-";
}

/* One line for the "nat"."portmap" object: "off", the announced mapping, or why there is
 * none. */
static void print_portmap(json_t *pm)
{
    const char *mode = json_string_value(json_object_get(pm, "mode"));
    if (mode == NULL) {
        return;
    }
    if (strcmp(mode, "off") == 0) {
        printf("%-13s off\n", "portmap");
    } else if (json_is_true(json_object_get(pm, "mapped"))) {
        printf("%-13s %s %s (router says %s, lease %" JSON_INTEGER_FORMAT " s)\n", "portmap",
               str_or_dash(pm, "method"), str_or_dash(pm, "announced"), str_or_dash(pm, "external"),
               json_integer_value(json_object_get(pm, "lease_s")));
    } else {
        printf("%-13s %s: no mapping (%s)\n", "portmap", mode, str_or_dash(pm, "error"));
    }
}

static int print_peers(json_t *reply, bool json)
{
    json_t *peers = json_object_get(reply, "peers");
    if (!json_is_array(peers)) {
        return KM_EXIT_FAIL;
    }
    if (json) {
        return km_cli_print_json(json_incref(peers));
    }
    printf("%-12s %-14s %-10s %-6s %-24s %-24s %s\n", "NAME", "NODE", "STATE", "PATH", "ADDRESS",
           "CIPHER", "STREAMS");
    size_t i;
    json_t *p;
    json_array_foreach (peers, i, p) {
        char node[16];
        snprintf(node, sizeof node, "%.12s..", str_or_dash(p, "node_id"));
        printf("%-12s %-14s %-10s %-6s %-24s %-24s %" JSON_INTEGER_FORMAT "\n",
               str_or_dash(p, "name"), node, str_or_dash(p, "state"), str_or_dash(p, "path"),
               str_or_dash(p, "address"), str_or_dash(p, "cipher"),
               json_integer_value(json_object_get(p, "streams")));
        size_t k;
        json_t *cand;
        json_array_foreach (json_object_get(p, "candidates"), k, cand) {
            printf("%-12s %s %s\n", "", k == 0 ? "candidates:" : "           ",
                   json_is_string(cand) ? json_string_value(cand) : "?");
        }
    }
    return KM_EXIT_OK;
}

static int status_or_peers(int argc, char **argv, const char *name, const char *help);

int km_cmd_status(int argc, char **argv)
{
    return status_or_peers(argc, argv, "status", help);
}

int km_cmd_peers(int argc, char **argv)
{
    return status_or_peers(argc, argv, "peers", peers_help);
}

static int status_or_peers(int argc, char **argv, const char *name, const char *usage)
{
    struct km_cli cli;
    km_cli_init(&cli, name);
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
            fputs(usage, stdout);
            return KM_EXIT_OK;
        default:
            return km_cli_bad_option(&cli, c, argv);
        }
    }
    if (optind < argc) {
        return km_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
    }
    char sock[KM_CONFIG_PATH_MAX];
    int sr = km_cli_daemon_socket(&cli, true, sock, sizeof sock);
    if (sr != 0) {
        return sr;
    }
    json_t *req = json_pack("{s:s}", "cmd", "status");
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
        const char *e = json_string_value(json_object_get(reply, "error"));
        km_cli_error(&cli, "daemon refused: %s", e != NULL ? e : "no reason given");
        json_decref(reply);
        return KM_EXIT_FAIL;
    }
    json_object_del(reply, "ok");
    if (strcmp(name, "peers") == 0) {
        int st = print_peers(reply, cli.json);
        json_decref(reply);
        return st;
    }
    if (cli.json) {
        return km_cli_print_json(reply);
    }
    printf("%-13s running\n", "state");
    const char *k;
    json_t *v;
    json_object_foreach (reply, k, v) {
        print_value(k, v);
    }
    print_portmap(json_object_get(json_object_get(reply, "nat"), "portmap"));
    json_decref(reply);
    return KM_EXIT_OK;
}
