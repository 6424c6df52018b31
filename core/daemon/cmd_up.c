/* keymesh up: run the daemon. */
#include <stdio.h>

#include "core/daemon/cli.h"
#include "core/daemon/daemon.h"
#include "core/fsutil.h"

static const char help[] =
    "Usage: keymesh up [options]\n"
    "\n"
    "Run the keymesh daemon in the foreground, logging to stderr, until SIGINT or SIGTERM.\n"
    "SIGHUP re-reads the configuration. With no configuration file the built-in defaults\n"
    "apply. On first start the node creates its key in the state directory.\n"
    "\n"
    "Options:\n"
    "  -l, --log-level LEVEL  debug, info, warn, error or off (overrides [log] "
    "level)\n"
    "  -t, --tun              create the TUN device (as [tun] enabled = true; needs\n"
    "                         CAP_NET_ADMIN): programs reach peers by VIP and "
    "FQDN\n" KM_CLI_COMMON_HELP;

enum { OPT_LOG = 0x200 };

int km_cmd_up(int argc, char **argv)
{
    struct km_cli cli;
    km_cli_init(&cli, "up");
    static const struct option opts[] = {
        {"log-level", required_argument, NULL, 'l'},
        {"tun", no_argument, NULL, 't'},
        KM_CLI_COMMON_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    struct km_daemon_opts o = {0};
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "+:l:td:c:h", opts, NULL)) != -1) {
        if (km_cli_common_opt(&cli, c, optarg)) {
            continue;
        }
        switch (c) {
        case 'l':
            if (km_log_level_parse(optarg, &o.log_level) != 0) {
                return km_cli_usage_error(&cli,
                                          "--log-level '%s': expected debug, info, warn, "
                                          "error or off",
                                          optarg);
            }
            o.log_level_set = true;
            break;
        case 't':
            o.tun = true;
            break;
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
    if (!cli.config_explicit &&
        km_fs_join(cli.config_path, sizeof cli.config_path, cli.dir, "keymesh.conf") != 0) {
        return km_cli_error(&cli, "state directory path too long");
    }
    o.dir = cli.dir;
    o.config_path = cli.config_path;
    o.config_explicit = cli.config_explicit;
    return km_daemon_run(&o);
}
