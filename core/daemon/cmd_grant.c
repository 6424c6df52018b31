/* keymesh grant: issue a capability (an OpenSSH user certificate, docs/CAPABILITIES.md). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "cap/cert.h"
#include "cap/store.h"
#include "core/conf.h"
#include "core/daemon/cli.h"
#include "core/fsutil.h"
#include "identity/derive.h"

static const char help[] =
    "Usage: keymesh grant --to GRANTEE --allow WHAT... (--valid DURATION | --until DATE)\n"
    "                     [--node TARGET]... [--from CIDR[,CIDR...]] [--signer KEYFILE]\n"
    "                     [--id TEXT] [-o FILE] [options]\n"
    "\n"
    "Issue a capability: an OpenSSH user certificate (ssh-ed25519-cert-v01@openssh.com) for\n"
    "the grantee's key, signed by this node's key or by an owner key. The grantee installs\n"
    "it with 'keymesh cap add FILE' and may present it with stock ssh (CertificateFile).\n"
    "'ssh-keygen -L -f FILE' shows it. A copy is kept in DIR/caps/issued/.\n"
    "\n"
    "Options:\n"
    "  -t, --to GRANTEE     the grantee: a node ID, an \"ssh-ed25519 ...\" line or a .pub file\n"
    "  -n, --node TARGET    a node ID the grant is valid on (repeatable, at most 16);\n"
    "                       default: this node (required with --signer)\n"
    "  -a, --allow WHAT     what is granted (repeatable):\n"
    "                         shell        a login shell, with a pty when asked for\n"
    "                         exec:CMD     only the command CMD (force-command)\n"
    "                         port:N[,M]   direct-tcpip to these local ports of the node\n"
    "                         expose       register reverse forwards (ssh -R) on loopback\n"
    "  -v, --valid DURATION validity from now, like 30s, 8h or 7d (at most 366d)\n"
    "  -u, --until DATE     validity until DATE: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (UTC) or\n"
    "                       @SECONDS since the epoch\n"
    "  -f, --from CIDR      accept the certificate only from these client addresses\n"
    "                       (critical option source-address)\n"
    "  -s, --signer KEYFILE sign with this OpenSSH ed25519 private key (an owner key) instead\n"
    "                       of this node's key\n"
    "  -i, --id TEXT        the certificate's key id (default: \"keymesh grant to ID\")\n"
    "  -o, --out FILE       write the certificate there (default: standard output)\n"
    "      --json           with --out: print {serial, file, issued_copy, key_id,\n"
    "                       valid_after, valid_before}\n" KM_CLI_COMMON_HELP;

enum { OPT_FROM = 0x300 };

/* "exec:CMD", "port:N[,M]", "shell", "expose" into c. */
static int add_allow(const struct km_cli *cli, struct km_cert *c, const char *a)
{
    if (strcmp(a, "shell") == 0) {
        c->ext |= KM_CERT_EXT_SHELL | KM_CERT_EXT_PTY;
        return 0;
    }
    if (strcmp(a, "expose") == 0) {
        c->ext |= KM_CERT_EXT_EXPOSE;
        return 0;
    }
    if (strncmp(a, "exec:", 5) == 0) {
        if (c->has_force_command) {
            return km_cli_usage_error(cli, "only one --allow exec:CMD");
        }
        if (a[5] == '\0' || strlen(a + 5) > KM_CERT_COMMAND_MAX) {
            return km_cli_usage_error(cli, "--allow exec:CMD needs a command of 1 to %u bytes",
                                      KM_CERT_COMMAND_MAX);
        }
        c->has_force_command = true;
        snprintf(c->force_command, sizeof c->force_command, "%s", a + 5);
        return 0;
    }
    if (strncmp(a, "port:", 5) == 0) {
        const char *s = a + 5;
        while (*s != '\0') {
            char *end;
            unsigned long v = strtoul(s, &end, 10);
            if (*s < '0' || *s > '9' || v < 1 || v > 65535 || (*end != ',' && *end != '\0') ||
                (*end == ',' && end[1] == '\0')) {
                return km_cli_usage_error(cli, "--allow %s: expected port:N[,M...] (1-65535)", a);
            }
            bool dup = false;
            for (size_t i = 0; i < c->n_ports; i++) {
                dup = dup || c->ports[i] == v;
            }
            if (!dup) {
                if (c->n_ports == KM_CERT_MAX_PORTS) {
                    return km_cli_usage_error(cli, "at most %u ports", KM_CERT_MAX_PORTS);
                }
                c->ports[c->n_ports++] = (uint16_t)v;
            }
            s = *end == ',' ? end + 1 : end;
        }
        if (c->n_ports == 0) {
            return km_cli_usage_error(cli, "--allow %s: no port", a);
        }
        c->ext |= KM_CERT_EXT_PORT_FWD | KM_CERT_EXT_PORTS;
        return 0;
    }
    return km_cli_usage_error(cli, "--allow %s: expected shell, exec:CMD, port:N[,M] or expose", a);
}

static int parse_until(const char *s, uint64_t *out)
{
    if (s[0] == '@') {
        char *end;
        unsigned long long v = strtoull(s + 1, &end, 10);
        if (s[1] < '0' || s[1] > '9' || *end != '\0') {
            return -1;
        }
        *out = v;
        return 0;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (end == NULL || *end != '\0') {
        memset(&tm, 0, sizeof tm);
        end = strptime(s, "%Y-%m-%d", &tm);
        if (end == NULL || *end != '\0') {
            return -1;
        }
    }
    time_t t = timegm(&tm);
    if (t < 0) {
        return -1;
    }
    *out = (uint64_t)t;
    return 0;
}

/* The grantee: a node ID, a public key line, or a file holding one. */
static int parse_grantee(const char *s, struct km_pubkey *out)
{
    if (km_node_id_parse(s, strlen(s), out) == 0 || km_pubkey_parse(s, strlen(s), out) == 0) {
        return 0;
    }
    struct km_buf b;
    km_buf_init(&b, KM_PUBKEY_TEXT_MAX);
    int r = km_fs_read_file(s, &b, NULL);
    if (r == 0) {
        r = km_pubkey_parse((const char *)km_buf_peek_ptr(&b), km_buf_len(&b), out);
    }
    km_buf_reset(&b);
    return r;
}

int km_cmd_grant(int argc, char **argv)
{
    struct km_cli cli;
    km_cli_init(&cli, "grant");
    static const struct option opts[] = {
        {"to", required_argument, NULL, 't'},
        {"node", required_argument, NULL, 'n'},
        {"allow", required_argument, NULL, 'a'},
        {"valid", required_argument, NULL, 'v'},
        {"until", required_argument, NULL, 'u'},
        {"from", required_argument, NULL, 'f'},
        {"signer", required_argument, NULL, 's'},
        {"id", required_argument, NULL, 'i'},
        {"out", required_argument, NULL, 'o'},
        {"json", no_argument, NULL, KM_OPT_JSON},
        KM_CLI_COMMON_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    struct km_cert *cert = calloc(1, sizeof *cert);
    struct km_config *cfg = calloc(1, sizeof *cfg);
    struct km_key *signer = NULL;
    struct km_buf blob;
    km_buf_init(&blob, KM_CERT_BLOB_MAX);
    int rc = KM_EXIT_FAIL;
    if (cert == NULL || cfg == NULL) {
        goto out;
    }
    const char *to = NULL;
    const char *signer_path = NULL;
    const char *out_path = NULL;
    const char *valid = NULL;
    const char *until = NULL;
    bool have_id = false;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "+:t:n:a:v:u:f:s:i:o:d:c:h", opts, NULL)) != -1) {
        if (km_cli_common_opt(&cli, c, optarg)) {
            continue;
        }
        switch (c) {
        case 't':
            to = optarg;
            break;
        case 'n':
            if (cert->n_principals == KM_CERT_MAX_PRINCIPALS) {
                rc = km_cli_usage_error(&cli, "at most %u --node", KM_CERT_MAX_PRINCIPALS);
                goto out;
            }
            struct km_pubkey t;
            if (km_node_id_parse(optarg, strlen(optarg), &t) != 0) {
                rc = km_cli_usage_error(&cli, "--node %s: not a node ID", optarg);
                goto out;
            }
            km_node_id(&t, cert->principals[cert->n_principals++]);
            break;
        case 'a':
            if ((rc = add_allow(&cli, cert, optarg)) != 0) {
                goto out;
            }
            rc = KM_EXIT_FAIL;
            break;
        case 'v':
            valid = optarg;
            break;
        case 'u':
            until = optarg;
            break;
        case 'f':
            if (strlen(optarg) == 0 || strlen(optarg) > KM_CERT_SOURCE_MAX) {
                rc = km_cli_usage_error(&cli, "--from: expected CIDR[,CIDR...]");
                goto out;
            }
            cert->has_source_address = true;
            snprintf(cert->source_address, sizeof cert->source_address, "%s", optarg);
            break;
        case 's':
            signer_path = optarg;
            break;
        case 'i':
            have_id = true;
            snprintf(cert->key_id, sizeof cert->key_id, "%s", optarg);
            break;
        case 'o':
            out_path = optarg;
            break;
        case KM_OPT_JSON:
            cli.json = true;
            break;
        case 'h':
        case KM_OPT_HELP:
            fputs(help, stdout);
            rc = KM_EXIT_OK;
            goto out;
        default:
            rc = km_cli_bad_option(&cli, c, argv);
            goto out;
        }
    }
    if (optind < argc) {
        rc = km_cli_usage_error(&cli, "unexpected argument \"%s\"", argv[optind]);
        goto out;
    }
    if (cli.json && out_path == NULL) {
        rc = km_cli_usage_error(&cli, "--json needs --out FILE");
        goto out;
    }
    if (to == NULL) {
        rc = km_cli_usage_error(&cli, "--to GRANTEE is required");
        goto out;
    }
    if (cert->ext == 0 && !cert->has_force_command) {
        rc = km_cli_usage_error(&cli, "at least one --allow is required");
        goto out;
    }
    if (cert->has_force_command && (cert->ext & KM_CERT_EXT_SHELL)) {
        rc = km_cli_usage_error(&cli, "--allow shell and --allow exec:CMD exclude each other");
        goto out;
    }
    if ((valid == NULL) == (until == NULL)) {
        rc = km_cli_usage_error(&cli, "exactly one of --valid and --until is required");
        goto out;
    }
    if (parse_grantee(to, &cert->key) != 0) {
        rc = km_cli_usage_error(&cli, "--to %s: not a node ID, public key or public key file", to);
        goto out;
    }
    uint64_t now = (uint64_t)time(NULL);
    cert->valid_after = now;
    if (valid != NULL) {
        uint64_t ms;
        if (km_conf_duration_ms(valid, &ms) != 0 || ms < 1000) {
            rc = km_cli_usage_error(&cli, "--valid %s: expected a duration like 30s, 8h or 7d",
                                    valid);
            goto out;
        }
        cert->valid_before = now + ms / 1000;
    } else if (parse_until(until, &cert->valid_before) != 0 || cert->valid_before <= now) {
        rc = km_cli_usage_error(&cli,
                                "--until %s: expected a future YYYY-MM-DD, "
                                "YYYY-MM-DDTHH:MM:SSZ or @SECONDS",
                                until);
        goto out;
    }
    if (km_cli_load_config(&cli, cfg) != 0) {
        goto out;
    }
    char path[KM_CONFIG_PATH_MAX];
    if (signer_path == NULL) {
        if (km_cli_key_path(&cli, cfg, path, sizeof path) != 0) {
            goto out;
        }
        signer_path = path;
    } else if (cert->n_principals == 0) {
        rc = km_cli_usage_error(&cli, "--signer needs at least one --node TARGET");
        goto out;
    }
    int r = km_key_load(signer_path, &signer, NULL);
    if (r != 0) {
        km_cli_error(&cli, "%s: %s", signer_path, km_strerror(r));
        goto out;
    }
    if (cert->n_principals == 0) {
        km_node_id(km_key_pub(signer), cert->principals[cert->n_principals++]);
    }
    char gid[KM_NODE_ID_LEN + 1];
    km_node_id(&cert->key, gid);
    if (!have_id) {
        snprintf(cert->key_id, sizeof cert->key_id, "keymesh grant to %s", gid);
    }
    cert->type = KM_CERT_USER;
    cert->nonce_len = 32;
    randombytes_buf(cert->nonce, 32);
    randombytes_buf(&cert->serial, sizeof cert->serial);
    cert->serial &= INT64_MAX; /* positive in every signed representation */
    if ((r = km_cert_sign(cert, signer, &blob)) != 0) {
        km_cli_error(&cli, "signing: %s", km_strerror(r));
        goto out;
    }
    char comment[96];
    snprintf(comment, sizeof comment, "keymesh-grant-%" PRIu64, cert->serial);
    char kept[KM_CONFIG_PATH_MAX];
    if ((r = km_cap_store_save(cli.dir, KM_CAP_ISSUED, km_buf_peek_ptr(&blob), km_buf_len(&blob),
                               cert->serial, comment, kept, sizeof kept)) != 0) {
        km_cli_error(&cli, "%s/%s: %s", cli.dir, KM_CAP_ISSUED, km_strerror(r));
        goto out;
    }
    struct km_buf text;
    km_buf_init(&text, KM_CERT_TEXT_MAX);
    if ((r = km_cert_format_text(km_buf_peek_ptr(&blob), km_buf_len(&blob), comment, &text)) == 0 &&
        out_path != NULL) {
        r = km_fs_write_atomic(out_path, km_buf_peek_ptr(&text), km_buf_len(&text), 0644, 1);
    }
    if (r != 0) {
        km_buf_reset(&text);
        km_cli_error(&cli, "%s: %s", out_path != NULL ? out_path : "output", km_strerror(r));
        goto out;
    }
    if (cli.json) {
        json_t *j = json_pack("{s:I, s:s, s:s, s:s, s:I, s:I}", "serial", (json_int_t)cert->serial,
                              "file", out_path != NULL ? out_path : "", "issued_copy", kept,
                              "key_id", cert->key_id, "valid_after", (json_int_t)cert->valid_after,
                              "valid_before", (json_int_t)cert->valid_before);
        rc = j != NULL ? km_cli_print_json(j) : KM_EXIT_FAIL;
    } else {
        if (out_path == NULL) {
            fwrite(km_buf_peek_ptr(&text), 1, km_buf_len(&text), stdout);
        } else {
            fprintf(stderr, "keymesh grant: serial %" PRIu64 " for %s written to %s\n",
                    cert->serial, gid, out_path);
        }
        rc = KM_EXIT_OK;
    }
    km_buf_reset(&text);
out:
    km_key_free(signer);
    km_buf_reset(&blob);
    free(cert);
    free(cfg);
    return rc;
}
