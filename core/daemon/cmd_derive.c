/* keymesh derive: the identity of any key or node ID. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/buf.h"
#include "core/daemon/cli.h"
#include "core/fsutil.h"
#include "identity/derive.h"

static const char help[] =
    "Usage: keymesh derive [options] KEY|NODE-ID|FQDN|FILE\n"
    "\n"
    "Print the node ID, FQDN and VIP that belong to a public key. The argument may be a\n"
    "node ID (52 base32 characters), an FQDN under the mesh suffix, an OpenSSH public key\n"
    "line or its base64, 64 hex digits of a raw key, or the path of a .pub file or an\n"
    "OpenSSH private key file.\n"
    "\n"
    "Options:\n"
    "      --json           print an object with node_id, fqdn, vip, public_key\n"
    "      --suffix SUFFIX  DNS suffix (default: the configuration's, mesh.internal)\n"
    "      --prefix PREFIX  VIP prefix (default: the configuration's, "
    "fd6b::/16)\n" KM_CLI_COMMON_HELP;

enum { OPT_SUFFIX = 0x200, OPT_PREFIX };

#define MAX_KEY_FILE (64u * 1024u)

/* Read a key file: a private key yields its public half, anything else is parsed as public
 * key text (its first line). */
static int key_from_file(const char *path, struct km_pubkey *out)
{
    struct km_buf b;
    km_buf_init(&b, MAX_KEY_FILE);
    int r = km_fs_read_file(path, &b, NULL);
    if (r == 0) {
        const char *text = (const char *)km_buf_peek_ptr(&b);
        size_t len = km_buf_len(&b);
        static const char armour[] = "-----BEGIN OPENSSH PRIVATE KEY-----";
        if (len >= sizeof armour - 1 && memcmp(text, armour, sizeof armour - 1) == 0) {
            struct km_key *k = NULL;
            r = km_key_parse_openssh(text, len, &k, NULL);
            if (r == 0) {
                *out = *km_key_pub(k);
            }
            km_key_free(k);
        } else {
            const char *nl = memchr(text, '\n', len);
            r = km_pubkey_parse(text, nl != NULL ? (size_t)(nl - text) : len, out);
        }
    }
    km_buf_reset(&b);
    return r;
}

int km_cmd_derive(int argc, char **argv)
{
    struct km_cli cli;
    km_cli_init(&cli, "derive");
    static const struct option opts[] = {
        {"json", no_argument, NULL, KM_OPT_JSON},
        {"suffix", required_argument, NULL, OPT_SUFFIX},
        {"prefix", required_argument, NULL, OPT_PREFIX},
        KM_CLI_COMMON_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    const char *suffix = NULL;
    const char *prefix_s = NULL;
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
        case OPT_SUFFIX:
            suffix = optarg;
            break;
        case OPT_PREFIX:
            prefix_s = optarg;
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
        return km_cli_usage_error(&cli, argc == optind ? "missing KEY, NODE-ID or FILE"
                                                       : "too many arguments");
    }
    const char *arg = argv[optind];
    struct km_config *cfg = malloc(sizeof *cfg);
    if (cfg == NULL) {
        return km_cli_error(&cli, "out of memory");
    }
    int status = KM_EXIT_FAIL;
    if (km_cli_load_config(&cli, cfg) != 0) {
        goto out;
    }
    if (suffix != NULL) {
        if (km_suffix_check(suffix) != 0 || strlen(suffix) >= sizeof cfg->suffix) {
            status = km_cli_usage_error(&cli, "--suffix '%s' is not a DNS suffix", suffix);
            goto out;
        }
        snprintf(cfg->suffix, sizeof cfg->suffix, "%s", suffix);
    }
    if (prefix_s != NULL && km_prefix_parse(prefix_s, &cfg->prefix) != 0) {
        status = km_cli_usage_error(
            &cli, "--prefix '%s' is not an IPv6 /16 prefix (like fd6b::/16)", prefix_s);
        goto out;
    }
    struct km_pubkey pk;
    struct stat st;
    int r;
    if (km_node_id_parse(arg, strlen(arg), &pk) == 0 || km_fqdn_parse(arg, cfg->suffix, &pk) == 0) {
        r = 0;
    } else if (stat(arg, &st) == 0) {
        r = key_from_file(arg, &pk);
        if (r != 0) {
            km_cli_error(&cli, "%s: not a usable ed25519 key file: %s", arg, km_strerror(r));
            goto out;
        }
    } else {
        r = km_pubkey_parse(arg, strlen(arg), &pk);
        if (r == KM_ERR_KEY_TYPE) {
            km_cli_error(&cli, "only ssh-ed25519 keys have a keymesh identity");
            goto out;
        }
        if (r != 0) {
            status = km_cli_usage_error(&cli, "'%s' is not a node ID, FQDN, public key or key file",
                                        arg);
            goto out;
        }
    }
    status = km_cli_print_identity(&cli, km_cli_identity_json(&pk, cfg->suffix, cfg->prefix));
out:
    free(cfg);
    return status;
}
