/* keymesh cap add|list|revoke: held, issued and revoked capabilities (docs/CAPABILITIES.md). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cap/cert.h"
#include "cap/policy.h"
#include "cap/store.h"
#include "core/daemon/cli.h"
#include "identity/derive.h"

static const char help[] =
    "Usage: keymesh cap add FILE [options]\n"
    "       keymesh cap list [--json] [options]\n"
    "       keymesh cap revoke SERIAL | --key KEY [options]\n"
    "\n"
    "Manage capabilities (OpenSSH user certificates, see 'keymesh grant').\n"
    "  add FILE     install a certificate issued to this node's key; the daemon presents it\n"
    "               when it dials a node the certificate names (DIR/caps/held/)\n"
    "  list         show held and issued certificates: serial, signer or grantee, nodes,\n"
    "               validity, what they allow, and whether they are valid, expired or\n"
    "               revoked\n"
    "  revoke       add a serial number, or a key (node ID or public key; a grantee or a\n"
    "               signer), to this node's revocation list (DIR/caps/revoked); the daemon\n"
    "               reads it at every certificate login\n"
    "\n"
    "Options:\n"
    "  -k, --key KEY      (revoke) revoke a key instead of a serial\n"
    "      --json         (list) print {\"held\": [...], \"issued\": [...]}\n" KM_CLI_COMMON_HELP;

static int cap_add(struct km_cli *cli, const char *file)
{
    struct km_config *cfg = calloc(1, sizeof *cfg);
    struct km_cert *c = calloc(1, sizeof *c);
    struct km_key *k = NULL;
    struct km_buf blob;
    km_buf_init(&blob, KM_CERT_BLOB_MAX);
    int rc = KM_EXIT_FAIL;
    char path[KM_CONFIG_PATH_MAX];
    int r;
    if (cfg == NULL || c == NULL || km_cli_load_config(cli, cfg) != 0) {
        goto out;
    }
    if ((r = km_cap_store_read(file, &blob)) != 0 ||
        (r = km_cert_parse(km_buf_peek_ptr(&blob), km_buf_len(&blob), c)) != 0) {
        km_cli_error(cli, "%s: not a keymesh certificate: %s", file, km_strerror(r));
        goto out;
    }
    if (km_cert_verify_sig(c, km_buf_peek_ptr(&blob), km_buf_len(&blob)) != 0) {
        km_cli_error(cli, "%s: bad signature", file);
        goto out;
    }
    if (km_cli_key_path(cli, cfg, path, sizeof path) != 0 ||
        (r = km_key_load(path, &k, NULL)) != 0) {
        km_cli_error(cli, "%s: %s", path, km_strerror(r));
        goto out;
    }
    if (!km_pubkey_equal(&c->key, km_key_pub(k))) {
        char id[KM_NODE_ID_LEN + 1];
        km_node_id(&c->key, id);
        km_cli_error(cli, "%s: issued to %s, not to this node", file, id);
        goto out;
    }
    char comment[64];
    snprintf(comment, sizeof comment, "keymesh-grant-%" PRIu64, c->serial);
    if ((r = km_cap_store_save(cli->dir, KM_CAP_HELD, km_buf_peek_ptr(&blob), km_buf_len(&blob),
                               c->serial, comment, path, sizeof path)) != 0) {
        km_cli_error(cli, "saving: %s", km_strerror(r));
        goto out;
    }
    printf("%s\n", path);
    rc = KM_EXIT_OK;
out:
    km_key_free(k);
    km_buf_reset(&blob);
    free(cfg);
    free(c);
    return rc;
}

struct lister {
    const struct km_cap_policy *pol;
    json_t *arr;
    bool held;
    bool json;
    uint64_t now;
};

static void fmt_time(uint64_t t, char *out, size_t outsz)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (t > (uint64_t)INT64_MAX / 2 || gmtime_r(&tt, &tm) == NULL) {
        snprintf(out, outsz, "forever");
        return;
    }
    strftime(out, outsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void list_cb(void *arg, const char *path, const struct km_cert *c, const uint8_t *blob,
                    size_t len, int err)
{
    struct lister *l = arg;
    if (c == NULL) {
        if (l->json) {
            json_array_append_new(l->arr,
                                  json_pack("{s:s, s:s}", "file", path, "error", km_strerror(err)));
        } else {
            printf("  %s: unreadable: %s\n", path, km_strerror(err));
        }
        return;
    }
    const char *status = "valid";
    if (km_cert_verify_sig(c, blob, len) != 0) {
        status = "bad-signature";
    } else if (km_cap_policy_serial_revoked(l->pol, c->serial) ||
               km_cap_policy_key_revoked(l->pol, &c->key) ||
               km_cap_policy_key_revoked(l->pol, &c->signer)) {
        status = "revoked";
    } else if (l->now >= c->valid_before) {
        status = "expired";
    } else if (l->now < c->valid_after) {
        status = "not-yet-valid";
    }
    char signer[KM_NODE_ID_LEN + 1];
    char grantee[KM_NODE_ID_LEN + 1];
    km_node_id(&c->signer, signer);
    km_node_id(&c->key, grantee);
    char allow[KM_CERT_COMMAND_MAX + 256] = "";
    size_t o = 0;
    if (c->ext & KM_CERT_EXT_SHELL && !c->has_force_command) {
        o += (size_t)snprintf(allow + o, sizeof allow - o, "shell ");
    }
    if (c->has_force_command) {
        o += (size_t)snprintf(allow + o, sizeof allow - o, "exec:%s ", c->force_command);
    }
    if ((c->ext & KM_CERT_EXT_PORTS) && (c->ext & KM_CERT_EXT_PORT_FWD)) {
        o += (size_t)snprintf(allow + o, sizeof allow - o, "port:");
        for (size_t i = 0; i < c->n_ports && o < sizeof allow; i++) {
            o += (size_t)snprintf(allow + o, sizeof allow - o, "%s%u", i > 0 ? "," : "",
                                  c->ports[i]);
        }
        if (o < sizeof allow) {
            o += (size_t)snprintf(allow + o, sizeof allow - o, " ");
        }
    }
    if (c->ext & KM_CERT_EXT_EXPOSE && o < sizeof allow) {
        o += (size_t)snprintf(allow + o, sizeof allow - o, "expose ");
    }
    if (o > 0 && o <= sizeof allow) {
        allow[o - 1] = '\0';
    }
    char from[32];
    char until[32];
    fmt_time(c->valid_after, from, sizeof from);
    fmt_time(c->valid_before, until, sizeof until);
    if (l->json) {
        json_t *nodes = json_array();
        for (size_t i = 0; i < c->n_principals; i++) {
            json_array_append_new(nodes, json_string(c->principals[i]));
        }
        json_array_append_new(
            l->arr, json_pack("{s:s, s:I, s:s, s:s, s:s, s:o, s:I, s:I, s:s, s:s}", "file", path,
                              "serial", (json_int_t)c->serial, "key_id", c->key_id, "signer",
                              signer, "grantee", grantee, "nodes", nodes, "valid_after",
                              (json_int_t)c->valid_after, "valid_before",
                              (json_int_t)c->valid_before, "allow", allow, "status", status));
        return;
    }
    printf("  serial %" PRIu64 " %s\n", c->serial, status);
    printf("    %s %s\n", l->held ? "signer " : "grantee", l->held ? signer : grantee);
    for (size_t i = 0; i < c->n_principals; i++) {
        printf("    node    %s\n", c->principals[i]);
    }
    printf("    valid   %s .. %s\n", from, until);
    printf("    allow   %s\n", allow);
    if (c->has_source_address) {
        printf("    from    %s\n", c->source_address);
    }
}

static int cap_list(struct km_cli *cli)
{
    struct km_cap_policy *pol = calloc(1, sizeof *pol);
    int rc = KM_EXIT_FAIL;
    if (pol == NULL) {
        return rc;
    }
    struct km_pubkey none = {{0}};
    km_cap_policy_init(pol, &none);
    size_t line;
    int r = km_cap_store_load_revoked(cli->dir, pol, &line);
    if (r != 0) {
        km_cli_error(cli, "%s/%s:%zu: %s", cli->dir, KM_CAP_REVOKED, line, km_strerror(r));
    }
    struct lister l = {pol, NULL, true, cli->json, (uint64_t)time(NULL)};
    json_t *root = cli->json ? json_object() : NULL;
    static const char *const subs[2] = {KM_CAP_HELD, KM_CAP_ISSUED};
    for (int i = 0; i < 2; i++) {
        l.held = i == 0;
        if (cli->json) {
            l.arr = json_array();
            json_object_set_new(root, i == 0 ? "held" : "issued", l.arr);
        } else {
            printf("%s:\n", i == 0 ? "held" : "issued");
        }
        if ((r = km_cap_store_each(cli->dir, subs[i], list_cb, &l)) != 0) {
            km_cli_error(cli, "%s/%s: %s", cli->dir, subs[i], km_strerror(r));
        }
    }
    rc = cli->json ? km_cli_print_json(root) : KM_EXIT_OK;
    free(pol);
    return rc;
}

static int cap_revoke(struct km_cli *cli, const char *serial, const char *key)
{
    char line[128];
    if (key != NULL) {
        struct km_pubkey k;
        if (km_node_id_parse(key, strlen(key), &k) != 0 &&
            km_pubkey_parse(key, strlen(key), &k) != 0) {
            return km_cli_usage_error(cli, "--key %s: not a node ID or public key", key);
        }
        char id[KM_NODE_ID_LEN + 1];
        km_node_id(&k, id);
        snprintf(line, sizeof line, "key %s", id);
    } else {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(serial, &end, 10);
        if (serial[0] < '0' || serial[0] > '9' || *end != '\0' || errno != 0) {
            return km_cli_usage_error(cli, "%s: not a serial number", serial);
        }
        snprintf(line, sizeof line, "serial %llu", v);
    }
    int r = km_cap_store_revoke(cli->dir, line);
    if (r != 0) {
        return km_cli_error(cli, "%s/%s: %s", cli->dir, KM_CAP_REVOKED, km_strerror(r));
    }
    printf("%s\n", line);
    return KM_EXIT_OK;
}

int km_cmd_cap(int argc, char **argv)
{
    struct km_cli cli;
    km_cli_init(&cli, "cap");
    static const struct option opts[] = {
        {"key", required_argument, NULL, 'k'},
        {"json", no_argument, NULL, KM_OPT_JSON},
        KM_CLI_COMMON_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    const char *key = NULL;
    int c;
    optind = 0;
    /* Options may follow the action word: "cap list --json". */
    while ((c = getopt_long(argc, argv, ":k:d:c:h", opts, NULL)) != -1) {
        if (km_cli_common_opt(&cli, c, optarg)) {
            continue;
        }
        switch (c) {
        case 'k':
            key = optarg;
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
    if (optind >= argc) {
        return km_cli_usage_error(&cli, "expected add, list or revoke");
    }
    const char *what = argv[optind];
    int nargs = argc - optind - 1;
    if (strcmp(what, "add") == 0 && nargs == 1 && key == NULL) {
        return cap_add(&cli, argv[optind + 1]);
    }
    if (strcmp(what, "list") == 0 && nargs == 0 && key == NULL) {
        return cap_list(&cli);
    }
    if (strcmp(what, "revoke") == 0 &&
        ((key != NULL && nargs == 0) || (key == NULL && nargs == 1))) {
        return cap_revoke(&cli, key == NULL ? argv[optind + 1] : NULL, key);
    }
    return km_cli_usage_error(&cli, "expected 'add FILE', 'list' or 'revoke SERIAL|--key KEY'");
}
