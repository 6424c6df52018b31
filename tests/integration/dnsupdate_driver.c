/* Drives km_dnsupdate once for tests/integration/dnsupdate.sh:
 *   dnsupdate_driver publish|remove SERVER-IP:PORT ZONE TSIG-NAME SECRET NODE-ID [tcp]
 *                    [KIND=IPv4:PORT...]
 * Prints the outcome's name; exits 0 for "ok", 3 otherwise, 2 for bad usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/dnsupdate.h"
#include "identity/derive.h"

static enum km_dnsupdate_result outcome = KM_DNSUPDATE_RESULT_N;

static void on_result(void *arg, enum km_dnsupdate_result r)
{
    struct km_dnsupdate *u = *(struct km_dnsupdate **)arg;
    outcome = r;
    km_dnsupdate_close(u);
}

static int parse_addr(const char *s, struct sockaddr_storage *out)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof host) {
        return -1;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end = NULL;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port > 65535) {
        return -1;
    }
    memset(out, 0, sizeof *out);
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out);
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr,
                "usage: %s publish|remove SERVER ZONE TSIG-NAME SECRET NODE-ID [tcp] "
                "[KIND=IP:PORT...]\n",
                argv[0]);
        return 2;
    }
    struct km_dnsupdate_opts o;
    km_dnsupdate_opts_default(&o);
    struct km_pubkey key;
    if (parse_addr(argv[2], &o.server) != 0 || strlen(argv[3]) >= sizeof o.zone ||
        strlen(argv[4]) >= sizeof o.tsig_name || strlen(argv[5]) >= sizeof o.tsig_secret ||
        km_node_id_parse(argv[6], strlen(argv[6]), &key) != 0) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    memcpy(o.zone, argv[3], strlen(argv[3]) + 1);
    memcpy(o.tsig_name, argv[4], strlen(argv[4]) + 1);
    memcpy(o.tsig_secret, argv[5], strlen(argv[5]) + 1);
    o.timeout_ms = 1000;
    o.retries = 1;
    o.backoff_ms = 100;
    struct km_path paths[KM_DNSUPDATE_MAX_PATHS];
    size_t n = 0;
    memset(paths, 0, sizeof paths);
    for (int i = 7; i < argc; i++) {
        if (strcmp(argv[i], "tcp") == 0) {
            o.tcp = true;
            continue;
        }
        const char *eq = strchr(argv[i], '=');
        if (eq == NULL || n == KM_DNSUPDATE_MAX_PATHS ||
            km_path_kind_parse(argv[i], (size_t)(eq - argv[i]), &paths[n].kind) != 0 ||
            parse_addr(eq + 1, &paths[n].addr) != 0) {
            fprintf(stderr, "bad path %s\n", argv[i]);
            return 2;
        }
        paths[n].source = KM_PATH_SRC_SELF;
        n++;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct km_dnsupdate *u = NULL;
    int r = km_dnsupdate_new(&loop, &o, &key, on_result, &u, &u);
    if (r != 0) {
        fprintf(stderr, "km_dnsupdate_new: %s\n", km_strerror(r));
        return 2;
    }
    if (strcmp(argv[1], "remove") == 0) {
        km_dnsupdate_remove(u, on_result, &u);
    } else if (km_dnsupdate_set_paths(u, paths, n) != 0) {
        return 2;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) {
        fprintf(stderr, "handles left open\n");
        return 4;
    }
    printf("%s\n", km_dnsupdate_result_name(outcome));
    return outcome == KM_DNSUPDATE_OK ? 0 : 3;
}
