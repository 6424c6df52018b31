/* The daemon object, shared by daemon.c (lifecycle) and daemon_ctl.c (control commands). */
#ifndef KM_DAEMON_DAEMON_INT_H
#define KM_DAEMON_DAEMON_INT_H

#include <jansson.h>
#include <stdbool.h>
#include <time.h>

#include "core/ctl.h"
#include "core/daemon/config.h"
#include "core/daemon/daemon.h"
#include "core/daemon/discover.h"
#include "core/daemon/router.h"
#include "core/loop.h"
#include "identity/derive.h"
#include "identity/key.h"
#include "proto/httpproxy.h"
#include "proto/mesh.h"
#include "proto/socks5.h"
#include "proto/ssh.h"
#include "tun/tun.h"

struct km_daemon {
    const struct km_daemon_opts *opts;
    struct km_loop *loop;
    struct km_ctl_server *ctl;
    struct km_router *router;
    struct km_discover *disc;
    struct km_ssh_node *ssh;
    struct km_mesh *mesh;
    struct km_socks5_server *socks5[KM_CONFIG_MAX_LISTEN];
    struct km_http_server *http[KM_CONFIG_MAX_LISTEN];
    struct km_tun *tun; /* [tun] enabled */
    struct km_config *cfg;
    struct km_key *key;
    int lock_fd;
    bool config_loaded; /* a file was read (not just defaults) */
    bool stopping;
    unsigned reloads;
    time_t started;
    char key_path[KM_CONFIG_PATH_MAX];
    char sock_path[KM_CONFIG_SOCK_MAX];
    char node_id[KM_NODE_ID_LEN + 1];
    char fqdn[KM_FQDN_MAX];
    char vip[KM_VIP_STRLEN];
};

/* The control socket's command handler (daemon_ctl.c). */
json_t *km__daemon_on_ctl(void *arg, const char *cmd, const json_t *req, struct km_ctl_conn *conn);

#endif
