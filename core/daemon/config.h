/* keymesh's configuration schema: every key of the INI file, its default and its check.
 * docs/CONFIG.md documents each key; keep the two in step. */
#ifndef KM_DAEMON_CONFIG_H
#define KM_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/conf.h"
#include "core/err.h"
#include "core/log.h"
#include "discovery/portmap.h"
#include "identity/derive.h"
#include "identity/key.h"

#define KM_CONFIG_MAX_LISTEN 8
#define KM_CONFIG_MAX_ALIASES 256
#define KM_CONFIG_PATH_MAX 4096
#define KM_CONFIG_SOCK_MAX 108 /* sizeof(sockaddr_un.sun_path) */

#define KM_CONFIG_MAX_PEERS 64
#define KM_CONFIG_MAX_PEER_ADDRS 8
#define KM_CONFIG_MAX_PORTS 32
#define KM_CONFIG_MAX_OWNERS 16
#define KM_CONFIG_MAX_ACCOUNTS 64
#define KM_CONFIG_MAX_GATEWAYS 4

enum km_cipher_pref {
    KM_CIPHER_AUTO = 0, /* AES-GCM when the CPU has AES instructions, else ChaCha20 */
    KM_CIPHER_AES,
    KM_CIPHER_CHACHA,
};

enum km_egress_policy {
    KM_EGRESS_REFUSE = 0, /* destinations outside the mesh are refused (default) */
    KM_EGRESS_DIRECT,     /* connected from this node */
    KM_EGRESS_EXIT,       /* carried through an exit node */
};

/* A [peer NAME] section: a node this one talks to and/or accepts. */
struct km_config_peer {
    char name[64];        /* the section's label, lowercase; "" when the section is a node ID */
    struct km_pubkey key; /* from the section name or `node =` */
    struct km_conf_addr addrs[KM_CONFIG_MAX_PEER_ADDRS]; /* `address =`, repeatable */
    size_t n_addrs;
    char user[64];                        /* `user =`, SSH login name; default "keymesh" */
    uint16_t expose[KM_CONFIG_MAX_PORTS]; /* `expose =`, local ports this peer may open */
    size_t n_expose;
    bool allow; /* `allow =`, may log in here; default true */
    bool exit;  /* `exit =`, may use this node as an egress exit; default false */
    bool relay; /* `relay =`, may register with this node as its gateway; default false */
};

struct km_config_alias {
    char name[64]; /* one DNS label, lowercase */
    struct km_pubkey key;
};

/* A parse result: plain data, caller-allocated (it is large: heap or static storage). */
struct km_config {
    /* [node] */
    char key_file[KM_CONFIG_PATH_MAX]; /* relative paths are under the state dir */
    char suffix[KM_SUFFIX_MAX + 1];
    uint16_t prefix;
    /* [log] */
    enum km_log_level log_level;
    /* [control] */
    char control_socket[KM_CONFIG_SOCK_MAX]; /* relative paths are under the state dir */
    /* [mesh] */
    struct km_conf_addr mesh_listen[KM_CONFIG_MAX_LISTEN];
    size_t n_mesh_listen;
    uint16_t mesh_expose[KM_CONFIG_MAX_PORTS]; /* ports every allowed peer may open */
    size_t n_mesh_expose;
    uint64_t idle_timeout_ms;    /* default 300 s; 0 = never */
    uint64_t connect_timeout_ms; /* default 5 s */
    uint64_t keepalive_ms;       /* default 15 s */
    uint64_t login_grace_ms;     /* default 10 s */
    uint64_t max_sessions;       /* default 256 */
    uint64_t max_channels;       /* default 2048 per session */
    enum km_cipher_pref ciphers; /* `ciphers = auto|aes|chacha20` */
    bool allow_unknown;          /* `allow_unknown`: keys with no [peer] may log in and open
                                    [mesh] expose ports (zero-config LANs); default false */
    /* [peer NAME] */
    struct km_config_peer peers[KM_CONFIG_MAX_PEERS];
    size_t n_peers;
    /* [egress] */
    enum km_egress_policy egress; /* `policy = refuse|direct|exit` */
    struct km_pubkey exit_node;   /* `exit_node =`, node ID or peer/alias name */
    bool has_exit_node;
    bool allow_private; /* `allow_private =`: direct egress may reach private,
                           loopback and link-local ranges; default false */
    /* [socks5], [http]; a disabled front end's listeners are parsed but not bound, so they
     * take no part in the conflict check. */
    bool socks5_enabled;
    char socks5_username[256]; /* RFC 1929; both empty = no authentication */
    char socks5_password[256];
    struct km_conf_addr socks5_listen[KM_CONFIG_MAX_LISTEN];
    size_t n_socks5_listen;
    bool http_enabled;
    struct km_conf_addr http_listen[KM_CONFIG_MAX_LISTEN];
    size_t n_http_listen;
    /* [dns] */
    bool dns_enabled;
    struct km_conf_addr dns_listen[KM_CONFIG_MAX_LISTEN]; /* UDP and TCP on each */
    size_t n_dns_listen;
    uint32_t dns_ttl_s;      /* `ttl`, default 60 s */
    unsigned dns_rate_limit; /* `rate_limit`, answers per second per source; 0 = none */
    /* [mdns] */
    bool mdns_enabled;
    char mdns_ifaces[8][16]; /* `interfaces =`: names; none = every multicast interface */
    size_t n_mdns_ifaces;
    /* [publish]: RFC 2136 UPDATE of this node's records (docs/DNS-UPDATE.md) */
    bool publish_enabled;
    struct km_conf_addr publish_server;
    char publish_zone[KM_SUFFIX_MAX + 1]; /* "" = the suffix */
    char publish_tsig_name[254];
    char publish_tsig_algorithm[32];
    char publish_tsig_secret_file[KM_CONFIG_PATH_MAX]; /* relative: under the state dir */
    uint32_t publish_ttl_s;
    bool publish_tcp;
    /* [tun]: TUN egress (docs/TUN.md) */
    bool tun_enabled;
    char tun_name[16];      /* `name`, default keymesh0 */
    unsigned tun_mtu;       /* `mtu`, default 1500 */
    unsigned tun_max_flows; /* `max_flows`, default 4096 */
    /* [cap]: capabilities (docs/CAPABILITIES.md) */
    struct km_pubkey cap_owners[KM_CONFIG_MAX_OWNERS]; /* `owner =`, trusted signers */
    size_t n_cap_owners;
    char cap_account[33]; /* `account =`: local user for shell/exec grants; "" = none */
    struct {
        struct km_pubkey key;               /* a grantee */
        char account[33];                   /* the local user its sessions run as */
    } cap_accounts[KM_CONFIG_MAX_ACCOUNTS]; /* `account_for = NODE-ID ACCOUNT`, repeatable */
    size_t n_cap_accounts;
    uint32_t cap_skew_s; /* `clock_skew =`, default 60 s */
    /* [nat]: port mapping (docs/NAT.md) */
    enum km_portmap_mode nat_portmap; /* `portmap = on|off|upnp|natpmp`, default on */
    uint32_t nat_portmap_lease_s;     /* `portmap_lease`, default 1h (2m..1d) */
    uint32_t nat_portmap_retry_ms;    /* `portmap_retry`: first retry after a failure, doubling
                                         up to 10 min; default 30s (1s..10m) */
    char nat_external_address[16];    /* `external_address`: IPv4 announced instead of what
                                         the router reports; "" = the router's */
    char nat_gateways[KM_CONFIG_MAX_GATEWAYS][64]; /* `gateway =`, repeatable: [peer NAME]
                                                      labels or node IDs, resolved at use */
    size_t n_nat_gateways;
    bool nat_punch; /* `punch`, default true: ask gateways to coordinate hole punches */
    /* [gateway]: relaying for registered nodes (docs/NAT.md) */
    bool gateway_enabled;         /* `enabled`, default false */
    uint64_t gateway_max_streams; /* `max_streams`: relayed streams at once per node, 64 */
    uint64_t gateway_max_bytes;   /* `max_bytes`: relayed bytes per node (counted as streams
                                     end); 0 = no limit (default) */
    /* [aliases] */
    struct km_config_alias aliases[KM_CONFIG_MAX_ALIASES];
    size_t n_aliases;
};

/* Fill c with the built-in defaults (what `keymesh up` runs on with no file). */
void km_config_defaults(struct km_config *c);

/* Parse INI text over the values already in c (normally km_config_defaults). The first
 * `listen` of a section replaces that section's earlier listeners. On error returns
 * KM_ERR_CONFIG (KM_ERR_TOO_LARGE past KM_CONF_MAX_SIZE, or -ENOMEM) with err holding one
 * line "<filename>:<line>: <message>"; c is then unspecified. Unknown sections and keys, bad
 * values, duplicate single-valued keys, duplicate aliases, alias names that are node IDs, too
 * many entries and conflicting listeners (among the enabled services, after defaults are
 * replaced) are errors. */
KM_MUST_CHECK int km_config_parse(struct km_config *c, const char *text, size_t len,
                                  const char *filename, char *err, size_t errsz);

/* Load a file: km_config_defaults then km_config_parse. -errno (err "<path>: <reason>") if
 * the file cannot be read. */
KM_MUST_CHECK int km_config_load(struct km_config *c, const char *path, char *err, size_t errsz);

/* Look up a name (case-insensitive) among [aliases] and [peer LABEL] labels; NULL if none.
 * Borrowed from c. */
const struct km_pubkey *km_config_alias(const struct km_config *c, const char *name);

#endif
