/* keymesh status: ask the running daemon. */
#include <stdio.h>
#include <stdlib.h>

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
        printf("%-11s %s\n", k, json_string_value(v));
    } else if (json_is_integer(v)) {
        printf("%-11s %" JSON_INTEGER_FORMAT "\n", k, json_integer_value(v));
    } else if (json_is_null(v)) {
        printf("%-11s -\n", k);
    } else if (json_is_array(v)) {
        printf("%-11s", k);
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

int km_cmd_status(int argc, char **argv)
{
    struct km_cli cli;
    km_cli_init(&cli, "status");
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
        case 't': {
            char *end;
            errno = 0;
            timeout_ms = strtol(optarg, &end, 10);
            if (errno != 0 || end == optarg || *end != '\0' || timeout_ms < 1 ||
                timeout_ms > 600000) {
                return km_cli_usage_error(&cli, "--timeout '%s': expected 1..600000 ms", optarg);
            }
            break;
        }
        case 'h':
        case KM_OPT_HELP:
            fputs(help, stdout);
            return KM_EXIT_OK;
        default:
            return km_cli_bad_option(&cli, c, argv);
        }
    }
    if (optind < argc) {
        return km_cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
    }
    struct km_config *cfg = malloc(sizeof *cfg);
    if (cfg == NULL) {
        return km_cli_error(&cli, "out of memory");
    }
    char sock[KM_CONFIG_PATH_MAX];
    /* A configuration file broken after the daemon started must not hide the daemon: the
     * running one keeps its old settings (SIGHUP refuses bad files), so ask it anyway. */
    if (km_cli_load_config(&cli, cfg) != 0) {
        fprintf(stderr, "keymesh status: asking the daemon on the default control socket\n");
        km_config_defaults(cfg);
    }
    int pr = km_cli_sock_path(&cli, cfg, sock, sizeof sock);
    free(cfg);
    if (pr != 0) {
        return km_cli_error(&cli, "control socket path too long");
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
    if (cli.json) {
        return km_cli_print_json(reply);
    }
    printf("%-11s running\n", "state");
    const char *k;
    json_t *v;
    json_object_foreach (reply, k, v) {
        print_value(k, v);
    }
    json_decref(reply);
    return KM_EXIT_OK;
}
