/* keymesh id: this node's identity. */
#include <stdio.h>
#include <stdlib.h>

#include "core/daemon/cli.h"
#include "identity/derive.h"

static const char help[] =
    "Usage: keymesh id [options]\n"
    "\n"
    "Print this node's node ID, FQDN, VIP and OpenSSH public key, derived from the key in\n"
    "the state directory.\n"
    "\n"
    "Options:\n"
    "      --json         print an object with node_id, fqdn, vip, public_key, key_file\n"
    "      --public-key   print only the OpenSSH public key line\n"
    "      --known-hosts  print a known_hosts line that lets stock ssh verify this node\n"
    "                     under its FQDN and VIP on the mesh port\n" KM_CLI_COMMON_HELP;

enum { OPT_PUB = 0x200, OPT_KNOWN };

static int print_known_hosts(const struct km_config *cfg, const struct km_pubkey *pk)
{
    char fqdn[KM_FQDN_MAX];
    char vip[KM_VIP_STRLEN];
    char line[256];
    if (km_fqdn(pk, cfg->suffix, fqdn, sizeof fqdn) != 0 ||
        km_pubkey_format_openssh(pk, NULL, line, sizeof line) != 0) {
        return KM_EXIT_FAIL;
    }
    km_vip_str(pk, cfg->prefix, vip);
    unsigned port = cfg->n_mesh_listen > 0 ? cfg->mesh_listen[0].port : 15022;
    /* known_hosts names a non-standard port as "[host]:port" (sshd(8), SSH_KNOWN_HOSTS). */
    if (port == 22) {
        printf("%s,%s %s\n", fqdn, vip, line);
    } else {
        printf("[%s]:%u,[%s]:%u %s\n", fqdn, port, vip, port, line);
    }
    return KM_EXIT_OK;
}

int km_cmd_id(int argc, char **argv)
{
    struct km_cli cli;
    km_cli_init(&cli, "id");
    static const struct option opts[] = {
        {"json", no_argument, NULL, KM_OPT_JSON},
        {"public-key", no_argument, NULL, OPT_PUB},
        {"known-hosts", no_argument, NULL, OPT_KNOWN},
        KM_CLI_COMMON_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    int mode = 0;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "+:d:c:h", opts, NULL)) != -1) {
        if (km_cli_common_opt(&cli, c, optarg)) {
            continue;
        }
        switch (c) {
        case KM_OPT_JSON:
            cli.json = true;
            break;
        case OPT_PUB:
        case OPT_KNOWN:
            if (mode != 0 && mode != c) {
                return km_cli_usage_error(&cli,
                                          "--public-key and --known-hosts exclude each other");
            }
            mode = c;
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
    if (mode != 0 && cli.json) {
        return km_cli_usage_error(&cli,
                                  "--json does not combine with --public-key or --known-hosts");
    }
    struct km_config *cfg = malloc(sizeof *cfg);
    struct km_key *key = NULL;
    int status = KM_EXIT_FAIL;
    char path[KM_CONFIG_PATH_MAX];
    if (cfg == NULL) {
        return km_cli_error(&cli, "out of memory");
    }
    if (km_cli_load_config(&cli, cfg) != 0) {
        goto out;
    }
    if (km_cli_key_path(&cli, cfg, path, sizeof path) != 0) {
        km_cli_error(&cli, "key path too long");
        goto out;
    }
    int r = km_key_load(path, &key, NULL);
    if (r == -ENOENT) {
        km_cli_error(&cli, "no node key at %s; run 'keymesh init' (or 'keymesh up') first", path);
        goto out;
    }
    if (r != 0) {
        km_cli_error(&cli, "%s: %s", path, km_strerror(r));
        goto out;
    }
    const struct km_pubkey *pk = km_key_pub(key);
    if (mode == OPT_KNOWN) {
        status = print_known_hosts(cfg, pk);
    } else if (mode == OPT_PUB) {
        char line[256];
        if (km_pubkey_format_openssh(pk, NULL, line, sizeof line) == 0) {
            printf("%s\n", line);
            status = KM_EXIT_OK;
        }
    } else {
        json_t *id = km_cli_identity_json(pk, cfg->suffix, cfg->prefix);
        if (id != NULL) {
            json_object_set_new(id, "key_file", json_string(path));
        }
        status = km_cli_print_identity(&cli, id);
    }
out:
    km_key_free(key);
    free(cfg);
    return status;
}
