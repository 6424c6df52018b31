/* keymesh init: make (or adopt) this node's key. */
#include <stdio.h>
#include <stdlib.h>

#include "core/daemon/cli.h"
#include "core/fsutil.h"

static const char help[] =
    "Usage: keymesh init [options]\n"
    "\n"
    "Create this node's Ed25519 key in the state directory. The key is the node's identity:\n"
    "its node ID, FQDN and VIP derive from it. An existing key is never replaced unless\n"
    "--force is given. 'keymesh up' creates a key by itself on first start; use init to\n"
    "learn the identity first or to adopt an existing OpenSSH ed25519 key.\n"
    "\n"
    "Options:\n"
    "  -a, --adopt FILE   use this OpenSSH ed25519 private key (unencrypted, mode 0600)\n"
    "                     instead of generating one; it is copied into the state directory\n"
    "  -f, --force        replace an existing node key (the node gets a new identity)\n"
    "      --json         print the identity as JSON\n" KM_CLI_COMMON_HELP;

int km_cmd_init(int argc, char **argv)
{
    struct km_cli cli;
    km_cli_init(&cli, "init");
    static const struct option opts[] = {
        {"adopt", required_argument, NULL, 'a'},
        {"force", no_argument, NULL, 'f'},
        {"json", no_argument, NULL, KM_OPT_JSON},
        KM_CLI_COMMON_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    const char *adopt = NULL;
    int force = 0;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "+:a:fd:c:h", opts, NULL)) != -1) {
        if (km_cli_common_opt(&cli, c, optarg)) {
            continue;
        }
        switch (c) {
        case 'a':
            adopt = optarg;
            break;
        case 'f':
            force = 1;
            break;
        case KM_OPT_JSON:
            cli.json = true;
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
    int r = km_fs_mkdir_p(cli.dir, 0700);
    if (r != 0) {
        km_cli_error(&cli, "cannot create state directory %s: %s", cli.dir, km_strerror(r));
        goto out;
    }
    if (adopt != NULL) {
        r = km_key_load(adopt, &key, NULL);
        if (r != 0) {
            km_cli_error(&cli, "cannot adopt %s: %s", adopt, km_strerror(r));
            goto out;
        }
    } else if ((r = km_key_generate(&key)) != 0) {
        km_cli_error(&cli, "cannot generate a key: %s", km_strerror(r));
        goto out;
    }
    r = km_key_save(key, path, "keymesh node key", force);
    if (r == -EEXIST) {
        km_cli_error(&cli,
                     "%s already exists; keymesh never replaces a node key silently "
                     "(pass --force to replace it: the node gets a new identity)",
                     path);
        goto out;
    }
    if (r != 0) {
        km_cli_error(&cli, "cannot write %s: %s", path, km_strerror(r));
        goto out;
    }
    json_t *id = km_cli_identity_json(km_key_pub(key), cfg->suffix, cfg->prefix);
    if (id != NULL) {
        json_object_set_new(id, "key_file", json_string(path));
    }
    status = km_cli_print_identity(&cli, id);
out:
    km_key_free(key);
    free(cfg);
    return status;
}
