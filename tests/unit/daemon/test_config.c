/* core/daemon/config: keymesh's schema. Every key good and bad, exact "<file>:<line>:" errors,
 * defaults and their replacement, listener conflicts, aliases, [peer NAME] sections, egress,
 * SOCKS5 credentials, and the shipped example. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/daemon/config.h"

/* RFC 8032 section 7.1 tests 1 and 2 (DESIGN.md section 3). */
#define ID1 "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena"
#define ID2 "hvabpq7iioevvevxbktu2g36xsojqlgpf3cjndgazvk7ckxumyga"
#define ID1_UPPER "25NJQAMCWEFLPVKL73J4SZAHHIHOC4XT3KTCGJNPAINGR5YHKENA"

static const uint8_t PK1[32] = {0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe,
                                0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6,
                                0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a};
static const uint8_t PK2[32] = {0x3d, 0x40, 0x17, 0xc3, 0xe8, 0x43, 0x89, 0x5a, 0x92, 0xb7, 0x0a,
                                0xa7, 0x4d, 0x1b, 0x7e, 0xbc, 0x9c, 0x98, 0x2c, 0xcf, 0x2e, 0xc4,
                                0x96, 0x8c, 0xc0, 0xcd, 0x55, 0xf1, 0x2a, 0xf4, 0x66, 0x0c};

#define LISTEN_EXPECT "(expected HOST:PORT with an IP literal, [IPV6]:PORT or PORT, port 1-65535)"
#define SECTIONS                                                                                \
    "(expected node, log, control, mesh, peer NAME, egress, socks5, http, dns, mdns, publish, " \
    "cap, nat, gateway, aliases or tun)"
#define PORTS_EXPECT "a port list (expected ports 1-65535 separated by commas or spaces)"
#define DURATION_EXPECT                                                                   \
    "a duration (expected a number with unit ms, s, m, h or d, such as 30s; at most 366 " \
    "days)"
#define PEER_HDR_EXPECT                                                                       \
    "(expected [peer NODE-ID] or [peer NAME] with one space, NAME 1-63 of a-z, 0-9 and '-', " \
    "not starting or ending with '-')"
#define MISSING_NODE(name) \
    "[peer " name "] missing \"node = NODE-ID\" (a peer named by a label needs the node ID)"
#define USER_EXPECT \
    "a user name (expected 1-63 of A-Z, a-z, 0-9, '.', '_' and '-', not starting with '-')"
#define PEER_ADDR_EXPECT                                                               \
    "a peer address (expected IPV4:PORT or [IPV6]:PORT with an IP literal other than " \
    "0.0.0.0 or ::, port 1-65535)"
#define EXIT_EXPECT                                                                            \
    "a node ID or name (expected 52 base32 characters a-z, 2-7, or the name of a [peer NAME] " \
    "section or an alias)"
#define INDENT_ERR                                                                   \
    "line starts with whitespace (continuation lines are not supported; remove the " \
    "indentation)"

static int setup(void **state)
{
    struct km_config *c = malloc(sizeof *c);
    if (c == NULL) {
        return -1;
    }
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

static int parse(struct km_config *c, const char *text, char *err, size_t errsz)
{
    km_config_defaults(c);
    return km_config_parse(c, text, strlen(text), "k.conf", err, errsz);
}

static void addr_eq(const struct km_conf_addr *a, const char *host, uint16_t port)
{
    assert_string_equal(a->host, host);
    assert_int_equal(a->port, port);
}

static void assert_defaults(const struct km_config *c)
{
    assert_string_equal(c->key_file, "node.key");
    assert_string_equal(c->suffix, "mesh.internal");
    assert_int_equal(c->prefix, 0xfd6b);
    assert_int_equal(c->log_level, KM_LOG_INFO);
    assert_string_equal(c->control_socket, "control.sock");
    assert_int_equal(c->n_mesh_listen, 1);
    addr_eq(&c->mesh_listen[0], "::", 15022);
    assert_true(c->socks5_enabled);
    assert_int_equal(c->n_socks5_listen, 1);
    addr_eq(&c->socks5_listen[0], "127.0.0.1", 1080);
    assert_true(c->http_enabled);
    assert_int_equal(c->n_http_listen, 1);
    addr_eq(&c->http_listen[0], "127.0.0.1", 8080);
    assert_int_equal(c->n_aliases, 0);
    assert_int_equal(c->n_mesh_expose, 0);
    assert_int_equal(c->idle_timeout_ms, 300000);
    assert_int_equal(c->connect_timeout_ms, 5000);
    assert_int_equal(c->keepalive_ms, 15000);
    assert_int_equal(c->login_grace_ms, 10000);
    assert_int_equal(c->max_sessions, 256);
    assert_int_equal(c->max_channels, 2048);
    assert_int_equal(c->ciphers, KM_CIPHER_AUTO);
    assert_int_equal(c->n_peers, 0);
    assert_int_equal(c->egress, KM_EGRESS_REFUSE);
    assert_false(c->has_exit_node);
    assert_false(c->allow_private);
    assert_string_equal(c->socks5_username, "");
    assert_string_equal(c->socks5_password, "");
}

static void test_defaults(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    km_config_defaults(c);
    assert_defaults(c);
    static const char *const empties[] = {
        "",
        "\n",
        "; nothing\n# at all\n",
        "\xef\xbb\xbf",
        "[node]\n[log]\n[control]\n[mesh]\n[socks5]\n[http]\n[aliases]\n[egress]\n",
        "\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof empties / sizeof empties[0]; i++) {
        assert_int_equal(parse(c, empties[i], err, sizeof err), 0);
        assert_string_equal(err, "");
        assert_defaults(c);
    }
}

static void test_full(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    const char *text = "\xef\xbb\xbf; every key\r\n"
                       "[node]\r\n"
                       "key_file = /etc/keymesh/node.key\r\n"
                       "suffix = M.Example.COM\r\n"
                       "prefix = fd00::/16\r\n"
                       "[log]\r\n"
                       "level = DEBUG ; inline comment\r\n"
                       "[control]\r\n"
                       "socket = /run/keymesh.sock\r\n"
                       "[mesh]\r\n"
                       "listen = [::1]:2222\r\n"
                       "listen = 192.0.2.1:2222\r\n"
                       "listen: 2223\r\n"
                       "[socks5]\r\n"
                       "enabled = yes\r\n"
                       "listen = 1081\r\n"
                       "[http]\r\n"
                       "enabled = off\r\n"
                       "listen = [::1]:2222\r\n" /* disabled: no conflict with [mesh] */
                       "[aliases]\r\n"
                       "Laptop = " ID1 "\r\n"
                       "nas-2 = " ID1_UPPER "\r\n"
                       "x = " ID2 "\r\n";
    assert_int_equal(parse(c, text, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_string_equal(c->key_file, "/etc/keymesh/node.key");
    assert_string_equal(c->suffix, "m.example.com");
    assert_int_equal(c->prefix, 0xfd00);
    assert_int_equal(c->log_level, KM_LOG_DEBUG);
    assert_string_equal(c->control_socket, "/run/keymesh.sock");
    assert_int_equal(c->n_mesh_listen, 3);
    addr_eq(&c->mesh_listen[0], "::1", 2222);
    addr_eq(&c->mesh_listen[1], "192.0.2.1", 2222);
    addr_eq(&c->mesh_listen[2], "::", 2223);
    assert_true(c->socks5_enabled);
    assert_int_equal(c->n_socks5_listen, 1);
    addr_eq(&c->socks5_listen[0], "127.0.0.1", 1081);
    assert_false(c->http_enabled);
    assert_int_equal(c->n_http_listen, 1);
    addr_eq(&c->http_listen[0], "::1", 2222);
    assert_int_equal(c->n_aliases, 3);
    assert_string_equal(c->aliases[0].name, "laptop");
    assert_memory_equal(c->aliases[0].key.b, PK1, 32);
    assert_string_equal(c->aliases[1].name, "nas-2");
    assert_memory_equal(c->aliases[1].key.b, PK1, 32);
    assert_string_equal(c->aliases[2].name, "x");
    assert_memory_equal(c->aliases[2].key.b, PK2, 32);

    assert_ptr_equal(km_config_alias(c, "LAPTOP"), &c->aliases[0].key);
    assert_ptr_equal(km_config_alias(c, "laptop"), &c->aliases[0].key);
    assert_ptr_equal(km_config_alias(c, "X"), &c->aliases[2].key);
    assert_null(km_config_alias(c, "lap"));
    assert_null(km_config_alias(c, ""));
    assert_null(km_config_alias(c, ID1));
}

/* Good values, one key at a time, with a check of the field it sets. */
struct good_case {
    const char *text;
    void (*check)(const struct km_config *c);
};

static void chk_key_rel(const struct km_config *c)
{
    assert_string_equal(c->key_file, "keys/me.key");
}
static void chk_key_spaces(const struct km_config *c)
{
    assert_string_equal(c->key_file, "/a b/c");
}
static void chk_suffix_one(const struct km_config *c)
{
    assert_string_equal(c->suffix, "mesh");
}
static void chk_suffix_long(const struct km_config *c)
{
    assert_string_equal(c->suffix, "a-b.c0.example");
}
static void chk_prefix(const struct km_config *c)
{
    assert_int_equal(c->prefix, 0xfd6b);
}
static void chk_prefix_2001(const struct km_config *c)
{
    assert_int_equal(c->prefix, 0x2001);
}
static void chk_off(const struct km_config *c)
{
    assert_int_equal(c->log_level, KM_LOG_OFF);
}
static void chk_warn(const struct km_config *c)
{
    assert_int_equal(c->log_level, KM_LOG_WARN);
}
static void chk_error(const struct km_config *c)
{
    assert_int_equal(c->log_level, KM_LOG_ERROR);
}
static void chk_sock(const struct km_config *c)
{
    assert_string_equal(c->control_socket, "ctl");
}
static void chk_sock_107(const struct km_config *c)
{
    assert_int_equal(strlen(c->control_socket), 107);
}
static void chk_mesh_v4(const struct km_config *c)
{
    assert_int_equal(c->n_mesh_listen, 1);
    addr_eq(&c->mesh_listen[0], "0.0.0.0", 15022);
}
static void chk_mesh_8(const struct km_config *c)
{
    assert_int_equal(c->n_mesh_listen, 8);
    addr_eq(&c->mesh_listen[7], "::", 8);
}
static void chk_socks_off(const struct km_config *c)
{
    assert_false(c->socks5_enabled);
    assert_true(c->http_enabled);
}
static void chk_http_off(const struct km_config *c)
{
    assert_true(c->socks5_enabled);
    assert_false(c->http_enabled);
}
static void chk_cap(const struct km_config *c)
{
    assert_int_equal(c->n_cap_owners, 2);
    assert_string_equal(c->cap_account, "alice");
    assert_int_equal(c->cap_skew_s, 5);
}
static void chk_cap_accounts(const struct km_config *c)
{
    assert_int_equal(c->n_cap_accounts, 2);
    assert_string_equal(c->cap_accounts[0].account, "bob");
    assert_string_equal(c->cap_accounts[1].account, "carol.x");
}
static void chk_cap_default(const struct km_config *c)
{
    assert_int_equal(c->n_cap_owners, 0);
    assert_string_equal(c->cap_account, "");
    assert_int_equal(c->cap_skew_s, 60);
}
static void chk_socks_port(const struct km_config *c)
{
    assert_int_equal(c->n_socks5_listen, 1);
    addr_eq(&c->socks5_listen[0], "127.0.0.1", 9050);
}
static void chk_http_two(const struct km_config *c)
{
    assert_int_equal(c->n_http_listen, 2);
    addr_eq(&c->http_listen[0], "127.0.0.1", 3128);
    addr_eq(&c->http_listen[1], "::1", 3128);
}
static void chk_alias_63(const struct km_config *c)
{
    assert_int_equal(c->n_aliases, 1);
    assert_int_equal(strlen(c->aliases[0].name), 63);
}
static void chk_alias_digits(const struct km_config *c)
{
    assert_int_equal(c->n_aliases, 2);
    assert_string_equal(c->aliases[0].name, "0");
    assert_string_equal(c->aliases[1].name, "a-0");
}
static void chk_defaults(const struct km_config *c)
{
    assert_defaults(c);
}

static void ports_eq(const uint16_t *got, size_t n, const uint16_t *want, size_t n_want)
{
    assert_int_equal(n, n_want);
    for (size_t i = 0; i < n_want; i++) {
        assert_int_equal(got[i], want[i]);
    }
}
static void chk_expose_one(const struct km_config *c)
{
    static const uint16_t w[] = {22};
    ports_eq(c->mesh_expose, c->n_mesh_expose, w, 1);
}
static void chk_expose_mixed(const struct km_config *c)
{
    static const uint16_t w[] = {22, 80, 443, 8080, 1, 65535};
    ports_eq(c->mesh_expose, c->n_mesh_expose, w, 6);
}
static void chk_expose_dups(const struct km_config *c)
{
    static const uint16_t w[] = {22, 80, 443};
    ports_eq(c->mesh_expose, c->n_mesh_expose, w, 3);
}
static void chk_expose_32(const struct km_config *c)
{
    assert_int_equal(c->n_mesh_expose, 32);
    assert_int_equal(c->mesh_expose[0], 1);
    assert_int_equal(c->mesh_expose[31], 32);
}
static void chk_idle_0(const struct km_config *c)
{
    assert_int_equal(c->idle_timeout_ms, 0);
}
static void chk_idle_1h(const struct km_config *c)
{
    assert_int_equal(c->idle_timeout_ms, 3600000);
}
static void chk_idle_max(const struct km_config *c)
{
    assert_int_equal(c->idle_timeout_ms, 366ull * 86400000);
}
static void chk_connect_250(const struct km_config *c)
{
    assert_int_equal(c->connect_timeout_ms, 250);
}
static void chk_keepalive_1s(const struct km_config *c)
{
    assert_int_equal(c->keepalive_ms, 1000);
}
static void chk_keepalive_2m(const struct km_config *c)
{
    assert_int_equal(c->keepalive_ms, 120000);
}
static void chk_grace_1ms(const struct km_config *c)
{
    assert_int_equal(c->login_grace_ms, 1);
}
static void chk_grace_30(const struct km_config *c)
{
    assert_int_equal(c->login_grace_ms, 30000);
}
static void chk_sessions_1(const struct km_config *c)
{
    assert_int_equal(c->max_sessions, 1);
    assert_int_equal(c->max_channels, 2048);
}
static void chk_channels_max(const struct km_config *c)
{
    assert_int_equal(c->max_sessions, 256);
    assert_int_equal(c->max_channels, 65535);
}
static void chk_channels_42(const struct km_config *c)
{
    assert_int_equal(c->max_channels, 42);
}
static void chk_aes(const struct km_config *c)
{
    assert_int_equal(c->ciphers, KM_CIPHER_AES);
}
static void chk_chacha(const struct km_config *c)
{
    assert_int_equal(c->ciphers, KM_CIPHER_CHACHA);
}
static void chk_auto(const struct km_config *c)
{
    assert_int_equal(c->ciphers, KM_CIPHER_AUTO);
}
static void chk_direct(const struct km_config *c)
{
    assert_int_equal(c->egress, KM_EGRESS_DIRECT);
    assert_false(c->has_exit_node);
    assert_false(c->allow_private);
}
static void chk_refuse_private(const struct km_config *c)
{
    assert_int_equal(c->egress, KM_EGRESS_REFUSE);
    assert_true(c->allow_private);
}
static void chk_exit_id2(const struct km_config *c)
{
    assert_int_equal(c->egress, KM_EGRESS_EXIT);
    assert_true(c->has_exit_node);
    assert_memory_equal(c->exit_node.b, PK2, 32);
}
static void chk_exit_node_only(const struct km_config *c)
{
    assert_int_equal(c->egress, KM_EGRESS_DIRECT);
    assert_true(c->has_exit_node);
    assert_memory_equal(c->exit_node.b, PK1, 32);
}
static void chk_socks_auth(const struct km_config *c)
{
    assert_string_equal(c->socks5_username, "alice");
    assert_string_equal(c->socks5_password, "p a;ss#w\"rd");
}
static void chk_socks_auth_disabled(const struct km_config *c)
{
    assert_false(c->socks5_enabled);
    assert_string_equal(c->socks5_username, "u");
    assert_string_equal(c->socks5_password, "p");
}
static void chk_peer_id(const struct km_config *c)
{
    assert_int_equal(c->n_peers, 1);
    const struct km_config_peer *p = &c->peers[0];
    assert_string_equal(p->name, "");
    assert_memory_equal(p->key.b, PK1, 32);
    assert_int_equal(p->n_addrs, 0);
    assert_string_equal(p->user, "keymesh");
    assert_int_equal(p->n_expose, 0);
    assert_true(p->allow);
    assert_false(p->exit);
    assert_null(km_config_alias(c, ""));
}
static void chk_peer_label(const struct km_config *c)
{
    assert_int_equal(c->n_peers, 1);
    const struct km_config_peer *p = &c->peers[0];
    assert_string_equal(p->name, "nas-2");
    assert_memory_equal(p->key.b, PK2, 32);
    assert_ptr_equal(km_config_alias(c, "NAS-2"), &p->key);
}
static void chk_peer_addrs(const struct km_config *c)
{
    assert_int_equal(c->n_peers, 1);
    const struct km_config_peer *p = &c->peers[0];
    assert_int_equal(p->n_addrs, 3);
    addr_eq(&p->addrs[0], "192.0.2.1", 15022);
    addr_eq(&p->addrs[1], "2001:db8::1", 443);
    addr_eq(&p->addrs[2], "::ffff:192.0.2.1", 15022);
}
static void chk_peer_opts(const struct km_config *c)
{
    assert_int_equal(c->n_peers, 1);
    const struct km_config_peer *p = &c->peers[0];
    assert_string_equal(p->user, "Svc.user_1-x");
    assert_false(p->allow);
    assert_true(p->exit);
    static const uint16_t w[] = {22, 5432, 80};
    ports_eq(p->expose, p->n_expose, w, 3);
    assert_int_equal(c->n_mesh_expose, 0);
}
static void chk_peer_user_63(const struct km_config *c)
{
    assert_int_equal(strlen(c->peers[0].user), 63);
}
static void chk_peer_51(const struct km_config *c)
{
    /* 51 characters is not a node ID: a label, which then needs `node`. */
    assert_int_equal(c->n_peers, 1);
    assert_int_equal(strlen(c->peers[0].name), 51);
    assert_memory_equal(c->peers[0].key.b, PK1, 32);
}
static void chk_two_peers(const struct km_config *c)
{
    assert_int_equal(c->n_peers, 2);
    assert_memory_equal(c->peers[0].key.b, PK1, 32);
    assert_memory_equal(c->peers[1].key.b, PK2, 32);
    assert_string_equal(c->peers[1].name, "b");
}

#define A63 "abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789abc"
#define S107                                                                                     \
    "/run/keymesh/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
    "xxxxxxxxxxxx.sock"

static void chk_nat_off(const struct km_config *c)
{
    assert_int_equal(c->nat_portmap, KM_PORTMAP_OFF);
    assert_true(c->nat_punch); /* the default */
}

static void chk_punch_off(const struct km_config *c)
{
    assert_false(c->nat_punch);
}

static void chk_nat_upnp(const struct km_config *c)
{
    assert_int_equal(c->nat_portmap, KM_PORTMAP_UPNP);
    assert_int_equal(c->nat_portmap_lease_s, 120);
    assert_int_equal(c->nat_portmap_retry_ms, 1000);
    assert_string_equal(c->nat_external_address, "192.0.2.11");
}

static void chk_gateway(const struct km_config *c)
{
    assert_true(c->gateway_enabled);
    assert_int_equal(c->gateway_max_streams, 3);
    assert_int_equal(c->gateway_max_bytes, 1u << 30);
    assert_true(c->peers[0].relay);
    assert_int_equal(c->n_nat_gateways, 2);
    assert_string_equal(c->nat_gateways[0], "x");
    assert_string_equal(c->nat_gateways[1], ID2);
}

static void chk_nat_natpmp(const struct km_config *c)
{
    assert_int_equal(c->nat_portmap, KM_PORTMAP_NATPMP);
    assert_int_equal(c->nat_portmap_lease_s, 86400);
    assert_int_equal(c->nat_portmap_retry_ms, 600000);
    assert_string_equal(c->nat_external_address, "");
}

static const struct good_case good_cases[] = {
    {"[node]\nkey_file = keys/me.key\n", chk_key_rel},
    {"[node]\nkey_file = /a b/c\n", chk_key_spaces},
    {"[node]\nsuffix = MESH\n", chk_suffix_one},
    {"[node]\nsuffix = A-b.c0.example\n", chk_suffix_long},
    {"[node]\nprefix = fd6b::/16\n", chk_prefix},
    {"[node]\nprefix = 2001::/16\n", chk_prefix_2001},
    {"[log]\nlevel = off\n", chk_off},
    {"[log]\nlevel = Warn\n", chk_warn},
    {"[log]\nlevel = error\n", chk_error},
    {"[control]\nsocket = ctl\n", chk_sock},
    {"[control]\nsocket = " S107 "\n", chk_sock_107},
    {"[mesh]\nlisten = 0.0.0.0:15022\n", chk_mesh_v4},
    {"[mesh]\nlisten=1\nlisten=2\nlisten=3\nlisten=4\nlisten=5\nlisten=6\nlisten=7\nlisten=8\n",
     chk_mesh_8},
    {"[socks5]\nenabled = false\n", chk_socks_off},
    {"[http]\nenabled = 0\n", chk_http_off},
    {"[cap]\nowner = " ID1 "\nowner = ssh-ed25519 "
     "AAAAC3NzaC1lZDI1NTE5AAAAID1AF8PoQ4laksOqp00bfrycmCzPLsSWjMDNVfEq9GYM x\nowner = " ID1
     "\naccount = alice\nclock_skew = 5s\n",
     chk_cap},
    {"[cap]\n", chk_cap_default},
    {"[cap]\naccount_for = " ID1 " bob\naccount_for = " ID2 "\t carol.x\n", chk_cap_accounts},
    {"[socks5]\nlisten = 9050\n", chk_socks_port},
    {"[http]\nlisten = 3128\nlisten = [::1]:3128\n", chk_http_two},
    {"[aliases]\n" A63 " = " ID1 "\n", chk_alias_63},
    {"[aliases]\n0 = " ID1 "\na-0 = " ID2 "\n", chk_alias_digits},
    /* Explicit values equal to the defaults are fine (no conflict with themselves). */
    {"[mesh]\nlisten = [::]:15022\n[socks5]\nlisten = 127.0.0.1:1080\n[http]\nlisten = "
     "127.0.0.1:8080\n",
     chk_defaults},
    /* Same port, different loopback hosts. */
    {"[socks5]\nlisten = 127.0.0.1:1080\n[http]\nlisten = 127.0.0.2:1080\n", NULL},
    /* A replaced default cannot conflict: [socks5] no longer has 127.0.0.1:1080. */
    {"[socks5]\nlisten = 127.0.0.1:1081\n[http]\nlisten = 127.0.0.1:1080\n", NULL},
    /* A disabled service's listeners take no part in the check. */
    {"[socks5]\nenabled = false\n[http]\nlisten = 127.0.0.1:1080\n", NULL},
    {"[http]\nenabled = no\nlisten = [::]:15022\n", NULL},
    /* IPv6 loopback and IPv4 wildcard are separate. */
    {"[mesh]\nlisten = 0.0.0.0:1\n[http]\nlisten = [::1]:1\n", NULL},
    /* [mesh] expose: comma and/or blank separated, repeatable, duplicates kept once. */
    {"[mesh]\nexpose = 22\n", chk_expose_one},
    {"[mesh]\nexpose = 22, 80 443,8080\t1 ,65535\n", chk_expose_mixed},
    {"[mesh]\nexpose = 22 80\nexpose = 80, 443\n[node]\n[mesh]\nexpose = 22,22\n", chk_expose_dups},
    {"[mesh]\nexpose = 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 "
     "28 29 30 31 32\nexpose = 32, 1\n",
     chk_expose_32},
    /* [mesh] timeouts and limits, each at its minimum and elsewhere. */
    {"[mesh]\nidle_timeout = 0\n", chk_idle_0},
    {"[mesh]\nidle_timeout = 0ms\n", chk_idle_0},
    {"[mesh]\nidle_timeout = 1h\n", chk_idle_1h},
    {"[mesh]\nidle_timeout = 366d\n", chk_idle_max},
    {"[mesh]\nconnect_timeout = 250ms\n", chk_connect_250},
    {"[mesh]\nkeepalive = 1s\n", chk_keepalive_1s},
    {"[mesh]\nkeepalive = 1000ms\n", chk_keepalive_1s},
    {"[mesh]\nkeepalive = 2m\n", chk_keepalive_2m},
    {"[mesh]\nlogin_grace = 1ms\n", chk_grace_1ms},
    {"[mesh]\nlogin_grace = 30\n", chk_grace_30},
    {"[mesh]\nmax_sessions = 1\n", chk_sessions_1},
    {"[mesh]\nmax_channels = 65535\n", chk_channels_max},
    {"[mesh]\nmax_channels = 00042\n", chk_channels_42},
    {"[mesh]\nciphers = AES\n", chk_aes},
    {"[mesh]\nciphers = chacha20\n", chk_chacha},
    {"[mesh]\nciphers = auto\n", chk_auto},
    /* [egress] */
    {"[egress]\npolicy = direct\n", chk_direct},
    {"[egress]\npolicy = refuse\nallow_private = yes\n", chk_refuse_private},
    {"[egress]\npolicy = EXIT\nexit_node = " ID2 "\n", chk_exit_id2},
    {"[egress]\nexit_node = " ID1_UPPER "\npolicy = direct\n", chk_exit_node_only},
    /* [socks5] credentials: any bytes, ';' and '#' without whitespace before are kept. */
    {"[socks5]\nusername = alice\npassword = p a;ss#w\"rd ; comment\n", chk_socks_auth},
    {"[socks5]\nenabled = false\npassword = p\nusername = u\n", chk_socks_auth_disabled},
    /* [peer NAME] */
    {"[peer " ID1 "]\n", chk_peer_id},
    {"[peer " ID1_UPPER "]\n", chk_peer_id},
    {"[ peer " ID1 " ] ; the reader trims blanks around the whole name\n", chk_peer_id},
    {"[peer NAS-2]\nnode = " ID2 "\n", chk_peer_label},
    {"[peer " ID1 "]\naddress = 192.0.2.1:15022\naddress = [2001:db8:0::1]:443\n"
     "address = 192.0.2.1:15022\naddress = [::ffff:192.0.2.1]:15022\n",
     chk_peer_addrs},
    {"[peer x]\nexpose = 22, 5432\nnode = " ID1 "\nuser = Svc.user_1-x\nallow = no\nexit = on\n"
     "expose = 80 22\n",
     chk_peer_opts},
    {"[peer " ID1 "]\nuser = " A63 "\n", chk_peer_user_63},
    {"[peer 25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhken]\nnode = " ID1 "\n", chk_peer_51},
    {"[peer " ID1 "]\n[mesh]\n[peer b]\nnode = " ID2 "\n", chk_two_peers},
    /* The same key under an alias and a peer name is fine; only names must be unique. */
    {"[aliases]\nlaptop = " ID1 "\n[peer lap]\nnode = " ID1 "\n", NULL},
    /* [nat] */
    {"[nat]\nportmap = off\n", chk_nat_off},
    {"[nat]\npunch = off\n", chk_punch_off},
    {"[nat]\nportmap = UPnP\nportmap_lease = 2m\nportmap_retry = 1s\n"
     "external_address = 192.0.2.11\n",
     chk_nat_upnp},
    {"[nat]\nportmap = natpmp\nportmap_lease = 1d\nportmap_retry = 10m\n", chk_nat_natpmp},
    {"[gateway]\nenabled = on\nmax_streams = 3\nmax_bytes = 1G\n[peer x]\nnode = " ID1
     "\nrelay = true\n[nat]\ngateway = x\ngateway = " ID2 "\n",
     chk_gateway},
};

static void test_good_table(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    for (size_t i = 0; i < sizeof good_cases / sizeof good_cases[0]; i++) {
        int rc = parse(c, good_cases[i].text, err, sizeof err);
        if (rc != 0) {
            fail_msg("case %zu: rc %d, err \"%s\"", i, rc, err);
        }
        if (good_cases[i].check != NULL) {
            good_cases[i].check(c);
        }
    }
}

struct bad_case {
    const char *text;
    const char *err;
};

static const struct bad_case bad_cases[] = {
    /* Structure. */
    {"[foo]\n", "k.conf:1: unknown section [foo] " SECTIONS},
    {"[node]\n\n[Node]\nsuffix = x\n", "k.conf:3: unknown section [Node] " SECTIONS},
    {"[a\x01\"b]\n", "k.conf:1: unknown section [a\\x01\\x22b] " SECTIONS},
    {"[peers]\n", "k.conf:1: unknown section [peers] " SECTIONS},
    {"[Peer x]\n", "k.conf:1: unknown section [Peer x] " SECTIONS},
    {"[Egress]\n", "k.conf:1: unknown section [Egress] " SECTIONS},
    {"listen = 80\n", "k.conf:1: key \"listen\" is outside any section (add a [section] header "
                      "above it)"},
    {"[mesh]\nport = 15022\n", "k.conf:2: unknown key \"port\" in [mesh]"},
    {"[cap]\nowner = nope\n", "k.conf:2: [cap] owner: \"nope\" is not an owner key (a node ID or "
                              "an \"ssh-ed25519 ...\" public key line)"},
    {"[cap]\naccount = a/b\n", "k.conf:2: [cap] account: \"a/b\" is not a local account name "
                               "(letters, digits, '_', '-', '.'; at most 32)"},
    {"[cap]\naccount_for = " ID1 "\n", "k.conf:2: [cap] account_for: \"" ID1 "\" is not NODE-ID "
                                       "ACCOUNT (a grantee's node ID and a local account name)"},
    {"[cap]\naccount_for = " ID1 " a\naccount_for = " ID1 " b\n",
     "k.conf:3: [cap] account_for: this node ID already has an account"},
    {"[cap]\nclock_skew = 2h\n",
     "k.conf:2: [cap] clock_skew: \"2h\" is not a duration from 0 to 1h "
     "(like 60s or 5m)"},
    {"[node]\nlisten = 1\n", "k.conf:2: unknown key \"listen\" in [node]"},
    {"[mesh]\nenabled = true\n", "k.conf:2: unknown key \"enabled\" in [mesh]"},
    {"[node]\nSuffix = x\n", "k.conf:2: unknown key \"Suffix\" in [node]"},
    {"[log]\nle\tvel = info\n", "k.conf:2: unknown key \"le\\x09vel\" in [log]"},
    {"[mesh]\nlisten = [::1]:80\n  listen = [::1]:81\n", "k.conf:3: " INDENT_ERR},
    {"[mesh]\nlisten\n", "k.conf:2: syntax error: expected key = value"},
    {"[node]\nsuffix = a\nx"
     "\n",
     "k.conf:3: syntax error: expected key = value"},
    {"[node]\n= x\n", "k.conf:2: syntax error: missing key name"},
    {"[node\n", "k.conf:1: syntax error: section header without ']'"},
    {"[node] suffix = a\n", "k.conf:1: syntax error: text after the section header's ']'"},
    /* Duplicates of single-valued keys, also across repeated sections. */
    {"[node]\nsuffix = a\nsuffix = b\n",
     "k.conf:3: [node] duplicate key \"suffix\" (first set on line 2)"},
    {"[node]\nkey_file = a\n[log]\nlevel = info\n[node]\nkey_file = a\n",
     "k.conf:6: [node] duplicate key \"key_file\" (first set on line 2)"},
    {"[node]\nprefix = fd6b::/16\nprefix: fd6b::/16\n",
     "k.conf:3: [node] duplicate key \"prefix\" (first set on line 2)"},
    {"[log]\nlevel = info\n\n\nlevel = debug\n",
     "k.conf:5: [log] duplicate key \"level\" (first set on line 2)"},
    {"[control]\nsocket = a\nsocket = a\n",
     "k.conf:3: [control] duplicate key \"socket\" (first set on line 2)"},
    {"[socks5]\nenabled = true\nenabled = true\n",
     "k.conf:3: [socks5] duplicate key \"enabled\" (first set on line 2)"},
    {"[http]\nenabled = true\nenabled = false\n",
     "k.conf:3: [http] duplicate key \"enabled\" (first set on line 2)"},
    /* [nat] */
    {"[nat]\nportmap = maybe\n",
     "k.conf:2: [nat] portmap: \"maybe\" is not on, off, upnp or natpmp"},
    {"[nat]\nportmap = on\nportmap = off\n",
     "k.conf:3: [nat] duplicate key \"portmap\" (first set on line 2)"},
    {"[nat]\nportmap_lease = 119s\n",
     "k.conf:2: [nat] portmap_lease: \"119s\" is not a duration from 2m to 1d (like 1h)"},
    {"[nat]\nportmap_lease = 2d\n",
     "k.conf:2: [nat] portmap_lease: \"2d\" is not a duration from 2m to 1d (like 1h)"},
    {"[nat]\nportmap_retry = 999ms\n",
     "k.conf:2: [nat] portmap_retry: \"999ms\" is not a duration from 1s to 10m (like 30s)"},
    {"[nat]\nexternal_address = 2001:db8::1\n",
     "k.conf:2: [nat] external_address: \"2001:db8::1\" is not an IPv4 address"},
    {"[nat]\nexternal_address = 192.0.2.256\n",
     "k.conf:2: [nat] external_address: \"192.0.2.256\" is not an IPv4 address"},
    {"[nat]\nexternal_address = 192.0.2.1111111111111\n",
     "k.conf:2: [nat] external_address: \"192.0.2.1111111111111\" is not an IPv4 address"},
    {"[nat]\ngateway = -x\n",
     "k.conf:2: [nat] gateway: \"-x\" is not a node ID or the name of a [peer NAME] section"},
    {"[nat]\ngateway = a\ngateway = b\ngateway = c\ngateway = d\ngateway = e\n",
     "k.conf:6: [nat] gateway: too many gateways (max 4)"},
    {"[gateway]\nenabled = maybe\n",
     "k.conf:2: [gateway] enabled: \"maybe\" is not a boolean (expected true or false)"},
    {"[nat]\npunch = maybe\n",
     "k.conf:2: [nat] punch: \"maybe\" is not a boolean (expected true or false)"},
    {"[gateway]\nmax_streams = 0\n",
     "k.conf:2: [gateway] max_streams: \"0\" is not a number from 1 to 65535"},
    {"[gateway]\nmax_bytes = lots\n",
     "k.conf:2: [gateway] max_bytes: \"lots\" is not a size (like 10G; 0 = no limit)"},
    {"[gateway]\nallow = x\n", "k.conf:2: unknown key \"allow\" in [gateway]"},
    /* Bad values, every key. */
    {"[node]\nkey_file =\n", "k.conf:2: [node] key_file: empty value (expected a path)"},
    {"[node]\nsuffix =\n", "k.conf:2: [node] suffix: \"\" is not a DNS suffix (expected labels "
                           "of a-z, 0-9 and '-' separated by dots, no trailing dot)"},
    {"[node]\nsuffix = mesh.internal.\n",
     "k.conf:2: [node] suffix: \"mesh.internal.\" is not a DNS suffix (expected labels of a-z, "
     "0-9 and '-' separated by dots, no trailing dot)"},
    {"[node]\nsuffix = a..b\n", "k.conf:2: [node] suffix: \"a..b\" is not a DNS suffix (expected "
                                "labels of a-z, 0-9 and '-' separated by dots, no trailing dot)"},
    {"[node]\nsuffix = -a.b\n", "k.conf:2: [node] suffix: \"-a.b\" is not a DNS suffix (expected "
                                "labels of a-z, 0-9 and '-' separated by dots, no trailing dot)"},
    {"[node]\nsuffix = a_b\n", "k.conf:2: [node] suffix: \"a_b\" is not a DNS suffix (expected "
                               "labels of a-z, 0-9 and '-' separated by dots, no trailing dot)"},
    {"[node]\nsuffix = m\xc3\xa9sh\n",
     "k.conf:2: [node] suffix: \"m\\xc3\\xa9sh\" is not a DNS suffix (expected labels of a-z, "
     "0-9 and '-' separated by dots, no trailing dot)"},
    {"[node]\nprefix = fd6b::\n", "k.conf:2: [node] prefix: \"fd6b::\" is not a mesh prefix "
                                  "(expected an IPv6 /16 such as fd6b::/16)"},
    {"[node]\nprefix = fd6b::/17\n", "k.conf:2: [node] prefix: \"fd6b::/17\" is not a mesh "
                                     "prefix (expected an IPv6 /16 such as fd6b::/16)"},
    {"[node]\nprefix = fd6b::1/16\n", "k.conf:2: [node] prefix: \"fd6b::1/16\" is not a mesh "
                                      "prefix (expected an IPv6 /16 such as fd6b::/16)"},
    {"[node]\nprefix = 10.0.0.0/16\n", "k.conf:2: [node] prefix: \"10.0.0.0/16\" is not a mesh "
                                       "prefix (expected an IPv6 /16 such as fd6b::/16)"},
    {"[log]\nlevel = verbose\n", "k.conf:2: [log] level: \"verbose\" is not a log level "
                                 "(expected debug, info, warn, error or off)"},
    {"[log]\nlevel =\n", "k.conf:2: [log] level: \"\" is not a log level (expected debug, info, "
                         "warn, error or off)"},
    {"[log]\nlevel = \x1b[31minfo\n", "k.conf:2: [log] level: \"\\x1b[31minfo\" is not a log "
                                      "level (expected debug, info, warn, error or off)"},
    {"[control]\nsocket =\n", "k.conf:2: [control] socket: empty value (expected a path)"},
    {"[control]\nsocket = " S107 "x\n",
     "k.conf:2: [control] socket: path too long (max 107 characters)"},
    {"[mesh]\nlisten = foo:99999\n",
     "k.conf:2: [mesh] listen: \"foo:99999\" is not a listen address " LISTEN_EXPECT},
    {"[mesh]\nlisten = localhost:15022\n",
     "k.conf:2: [mesh] listen: \"localhost:15022\" is not a listen address " LISTEN_EXPECT},
    {"[mesh]\nlisten = 0\n",
     "k.conf:2: [mesh] listen: \"0\" is not a listen address " LISTEN_EXPECT},
    {"[mesh]\nlisten = 65536\n",
     "k.conf:2: [mesh] listen: \"65536\" is not a listen address " LISTEN_EXPECT},
    {"[mesh]\nlisten = ::1:80\n",
     "k.conf:2: [mesh] listen: \"::1:80\" is not a listen address " LISTEN_EXPECT},
    {"[mesh]\nlisten =\n", "k.conf:2: [mesh] listen: \"\" is not a listen address " LISTEN_EXPECT},
    {"[socks5]\nlisten = 127.0.0.1\n",
     "k.conf:2: [socks5] listen: \"127.0.0.1\" is not a listen address " LISTEN_EXPECT},
    {"[http]\nlisten = -1\n",
     "k.conf:2: [http] listen: \"-1\" is not a listen address " LISTEN_EXPECT},
    {"[socks5]\nenabled = maybe\n",
     "k.conf:2: [socks5] enabled: \"maybe\" is not a boolean (expected true or false)"},
    {"[http]\nenabled =\n", "k.conf:2: [http] enabled: \"\" is not a boolean (expected true or "
                            "false)"},
    /* Too many listeners. */
    {"[socks5]\nlisten=1\nlisten=2\nlisten=3\nlisten=4\nlisten=5\nlisten=6\nlisten=7\n"
     "listen=8\nlisten=9\n",
     "k.conf:10: [socks5] listen: too many listeners (max 8)"},
    /* Listener conflicts: the later line is reported, naming the earlier one. */
    {"[mesh]\nlisten = 127.0.0.1:1080\n",
     "k.conf:2: [mesh] listen 127.0.0.1:1080 conflicts with [socks5] listen 127.0.0.1:1080 "
     "(default)"},
    {"[socks5]\nlisten = 0.0.0.0:15022\n",
     "k.conf:2: [socks5] listen 0.0.0.0:15022 conflicts with [mesh] listen [::]:15022 "
     "(default)"},
    {"[http]\nlisten = [::1]:15022\n",
     "k.conf:2: [http] listen [::1]:15022 conflicts with [mesh] listen [::]:15022 (default)"},
    {"[socks5]\nlisten = 1080\n[http]\nlisten = 127.0.0.1:1080\n",
     "k.conf:4: [http] listen 127.0.0.1:1080 conflicts with [socks5] listen 127.0.0.1:1080 on "
     "line 2"},
    {"[http]\nlisten = 127.0.0.1:1080\n[socks5]\nlisten = 1080\n",
     "k.conf:4: [socks5] listen 127.0.0.1:1080 conflicts with [http] listen 127.0.0.1:1080 on "
     "line 2"},
    {"[mesh]\nlisten = 2222\nlisten = 2223\nlisten = 127.0.0.1:2222\n",
     "k.conf:4: [mesh] listen 127.0.0.1:2222 conflicts with [mesh] listen [::]:2222 on line 2"},
    {"[mesh]\nlisten = 192.0.2.1:2222\nlisten = 0.0.0.0:2222\n",
     "k.conf:3: [mesh] listen 0.0.0.0:2222 conflicts with [mesh] listen 192.0.2.1:2222 on line "
     "2"},
    {"[mesh]\nlisten = [::1]:2222\nlisten = [0::1]:2222\n",
     "k.conf:3: [mesh] listen [::1]:2222 conflicts with [mesh] listen [::1]:2222 on line 2"},
    {"[mesh]\nlisten = [::ffff:127.0.0.1]:1080\n",
     "k.conf:2: [mesh] listen [::ffff:127.0.0.1]:1080 conflicts with [socks5] listen "
     "127.0.0.1:1080 (default)"},
    {"[mesh]\nlisten = 1\n[socks5]\nlisten = 2\n[http]\nenabled = true\nlisten = 0.0.0.0:2\n",
     "k.conf:7: [http] listen 0.0.0.0:2 conflicts with [socks5] listen 127.0.0.1:2 on line 4"},
    /* Aliases. */
    {"[aliases]\nlaptop = " ID1 "\nLAPTOP = " ID2 "\n",
     "k.conf:3: [aliases] duplicate alias \"laptop\" (first set on line 2)"},
    {"[aliases]\nlaptop = " ID1 "\nlaptop = " ID1 "\n",
     "k.conf:3: [aliases] duplicate alias \"laptop\" (first set on line 2)"},
    {"[aliases]\nlaptop = 25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhken\n",
     "k.conf:2: [aliases] laptop: \"25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhken\" is "
     "not a node ID (expected 52 base32 characters a-z, 2-7)"},
    {"[aliases]\nlaptop = " ID1 "a\n", "k.conf:2: [aliases] laptop: \"" ID1 "a\" is not a node ID "
                                       "(expected 52 base32 characters a-z, 2-7)"},
    {"[aliases]\nlaptop = 05njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena\n",
     "k.conf:2: [aliases] laptop: \"05njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkena\" is "
     "not a node ID (expected 52 base32 characters a-z, 2-7)"},
    {"[aliases]\nlaptop =\n", "k.conf:2: [aliases] laptop: \"\" is not a node ID (expected 52 "
                              "base32 characters a-z, 2-7)"},
    {"[aliases]\nlap_top = " ID1 "\n",
     "k.conf:2: [aliases] \"lap_top\" is not an alias name (expected one DNS label: 1-63 of a-z, "
     "0-9 and '-', not starting or ending with '-')"},
    {"[aliases]\nlap.top = " ID1 "\n",
     "k.conf:2: [aliases] \"lap.top\" is not an alias name (expected one DNS label: 1-63 of a-z, "
     "0-9 and '-', not starting or ending with '-')"},
    {"[aliases]\n-lap = " ID1 "\n",
     "k.conf:2: [aliases] \"-lap\" is not an alias name (expected one DNS label: 1-63 of a-z, "
     "0-9 and '-', not starting or ending with '-')"},
    {"[aliases]\nlap- = " ID1 "\n",
     "k.conf:2: [aliases] \"lap-\" is not an alias name (expected one DNS label: 1-63 of a-z, "
     "0-9 and '-', not starting or ending with '-')"},
    {"[aliases]\nmy laptop = " ID1 "\n",
     "k.conf:2: [aliases] \"my laptop\" is not an alias name (expected one DNS label: 1-63 of "
     "a-z, 0-9 and '-', not starting or ending with '-')"},
    {"[aliases]\n" A63 "d = " ID1 "\n",
     "k.conf:2: [aliases] \"" A63 "d\" is not an alias name (expected one DNS label: 1-63 of "
     "a-z, 0-9 and '-', not starting or ending with '-')"},
    {"[aliases]\n" ID2 " = " ID1 "\n",
     "k.conf:2: [aliases] \"" ID2 "\": an alias name cannot be a node ID"},
    {"[aliases]\n" ID1_UPPER " = " ID1 "\n",
     "k.conf:2: [aliases] \"" ID1 "\": an alias name cannot be a node ID"},
    /* [mesh] expose. */
    {"[mesh]\nexpose =\n", "k.conf:2: [mesh] expose: \"\" is not " PORTS_EXPECT},
    {"[mesh]\nexpose = 0\n", "k.conf:2: [mesh] expose: \"0\" is not " PORTS_EXPECT},
    {"[mesh]\nexpose = 22 65536\n", "k.conf:2: [mesh] expose: \"22 65536\" is not " PORTS_EXPECT},
    {"[mesh]\nexpose = ,22\n", "k.conf:2: [mesh] expose: \",22\" is not " PORTS_EXPECT},
    {"[mesh]\nexpose = 22,\n", "k.conf:2: [mesh] expose: \"22,\" is not " PORTS_EXPECT},
    {"[mesh]\nexpose = 22,,80\n", "k.conf:2: [mesh] expose: \"22,,80\" is not " PORTS_EXPECT},
    {"[mesh]\nexpose = 22 , , 80\n", "k.conf:2: [mesh] expose: \"22 , , 80\" is not " PORTS_EXPECT},
    {"[mesh]\nexpose = 22;80\n", "k.conf:2: [mesh] expose: \"22;80\" is not " PORTS_EXPECT},
    {"[mesh]\nexpose = ssh\n", "k.conf:2: [mesh] expose: \"ssh\" is not " PORTS_EXPECT},
    {"[mesh]\nexpose = +22\n", "k.conf:2: [mesh] expose: \"+22\" is not " PORTS_EXPECT},
    {"[mesh]\nexpose = 22-25\n", "k.conf:2: [mesh] expose: \"22-25\" is not " PORTS_EXPECT},
    {"[mesh]\nexpose = 22 100000\n", "k.conf:2: [mesh] expose: \"22 100000\" is not " PORTS_EXPECT},
    {"[mesh]\nexpose = 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 "
     "28 29 30 31 32\nexpose = 1, 33\n",
     "k.conf:3: [mesh] expose: too many ports (max 32)"},
    /* [mesh] durations. */
    {"[mesh]\nidle_timeout = soon\n",
     "k.conf:2: [mesh] idle_timeout: \"soon\" is not " DURATION_EXPECT},
    {"[mesh]\nidle_timeout = -1\n",
     "k.conf:2: [mesh] idle_timeout: \"-1\" is not " DURATION_EXPECT},
    {"[mesh]\nidle_timeout = 1.5s\n",
     "k.conf:2: [mesh] idle_timeout: \"1.5s\" is not " DURATION_EXPECT},
    {"[mesh]\nidle_timeout = 5 s\n",
     "k.conf:2: [mesh] idle_timeout: \"5 s\" is not " DURATION_EXPECT},
    {"[mesh]\nidle_timeout = 367d\n",
     "k.conf:2: [mesh] idle_timeout: \"367d\" is not " DURATION_EXPECT},
    {"[mesh]\nidle_timeout =\n", "k.conf:2: [mesh] idle_timeout: \"\" is not " DURATION_EXPECT},
    {"[mesh]\nconnect_timeout = 0\n",
     "k.conf:2: [mesh] connect_timeout: \"0\" is too short (min 1ms)"},
    {"[mesh]\nconnect_timeout = 5x\n",
     "k.conf:2: [mesh] connect_timeout: \"5x\" is not " DURATION_EXPECT},
    {"[mesh]\nkeepalive = 999ms\n", "k.conf:2: [mesh] keepalive: \"999ms\" is too short (min 1s)"},
    {"[mesh]\nkeepalive = 0\n", "k.conf:2: [mesh] keepalive: \"0\" is too short (min 1s)"},
    {"[mesh]\nlogin_grace = 0s\n", "k.conf:2: [mesh] login_grace: \"0s\" is too short (min 1ms)"},
    {"[mesh]\nlogin_grace = 10S\n",
     "k.conf:2: [mesh] login_grace: \"10S\" is not " DURATION_EXPECT},
    /* [mesh] limits and ciphers. */
    {"[mesh]\nmax_sessions = 0\n",
     "k.conf:2: [mesh] max_sessions: \"0\" is not a number from 1 to 65535"},
    {"[mesh]\nmax_sessions = 65536\n",
     "k.conf:2: [mesh] max_sessions: \"65536\" is not a number from 1 to 65535"},
    {"[mesh]\nmax_sessions = -1\n",
     "k.conf:2: [mesh] max_sessions: \"-1\" is not a number from 1 to 65535"},
    {"[mesh]\nmax_sessions = 0x10\n",
     "k.conf:2: [mesh] max_sessions: \"0x10\" is not a number from 1 to 65535"},
    {"[mesh]\nmax_sessions =\n",
     "k.conf:2: [mesh] max_sessions: \"\" is not a number from 1 to 65535"},
    {"[mesh]\nmax_channels = 99999999999999999999999\n",
     "k.conf:2: [mesh] max_channels: \"99999999999999999999999\" is not a number from 1 to 65535"},
    {"[mesh]\nmax_channels = 1e3\n",
     "k.conf:2: [mesh] max_channels: \"1e3\" is not a number from 1 to 65535"},
    {"[mesh]\nciphers = aes128-gcm\n", "k.conf:2: [mesh] ciphers: \"aes128-gcm\" is not a cipher "
                                       "choice (expected auto, aes or chacha20)"},
    {"[mesh]\nciphers =\n",
     "k.conf:2: [mesh] ciphers: \"\" is not a cipher choice (expected auto, aes or chacha20)"},
    {"[mesh]\nidle_timeout = 1m\n[log]\n[mesh]\nidle_timeout = 1m\n",
     "k.conf:5: [mesh] duplicate key \"idle_timeout\" (first set on line 2)"},
    {"[mesh]\nciphers = aes\nciphers = aes\n",
     "k.conf:3: [mesh] duplicate key \"ciphers\" (first set on line 2)"},
    {"[mesh]\nmax_sessions = 1\nmax_sessions = 2\n",
     "k.conf:3: [mesh] duplicate key \"max_sessions\" (first set on line 2)"},
    {"[mesh]\nexpose_ports = 22\n", "k.conf:2: unknown key \"expose_ports\" in [mesh]"},
    /* [peer NAME] headers. */
    {"[peer]\n", "k.conf:1: bad peer section [peer] " PEER_HDR_EXPECT},
    {"[peer  laptop]\n", "k.conf:1: bad peer section [peer  laptop] " PEER_HDR_EXPECT},
    {"[peer\tlaptop]\n", "k.conf:1: bad peer section [peer\\x09laptop] " PEER_HDR_EXPECT},
    {"[peer lap_top]\n", "k.conf:1: bad peer section [peer lap_top] " PEER_HDR_EXPECT},
    {"[peer -lap]\n", "k.conf:1: bad peer section [peer -lap] " PEER_HDR_EXPECT},
    {"[peer a b]\n", "k.conf:1: bad peer section [peer a b] " PEER_HDR_EXPECT},
    {"[peer " A63 "d]\n", "k.conf:1: bad peer section [peer " A63 "d] " PEER_HDR_EXPECT},
    {"[peer lap.top]\n", "k.conf:1: bad peer section [peer lap.top] " PEER_HDR_EXPECT},
    /* A labelled peer without `node`: at its header, when the section ends. */
    {"[peer laptop]\naddress = 192.0.2.1:22\n", "k.conf:1: " MISSING_NODE("laptop")},
    {"[mesh]\n[peer Laptop]\nuser = x\n\n[egress]\npolicy = bogus\n",
     "k.conf:2: " MISSING_NODE("Laptop")},
    {"[peer a]\n[peer b]\nnode = " ID1 "\n", "k.conf:1: " MISSING_NODE("a")},
    {"[peer a]\n[nope]\n", "k.conf:1: " MISSING_NODE("a")},
    {"[peer a]\nnode = " ID1 "\n[peer b]\n", "k.conf:3: " MISSING_NODE("b")},
    /* Peer keys. */
    {"[peer " ID1 "]\nnode = " ID1 "\n",
     "k.conf:2: [peer " ID1 "] node: not allowed when the section is named by its node ID (use "
     "[peer NAME] with node = NODE-ID, or drop this line)"},
    {"[peer x]\nnode = foo\n",
     "k.conf:2: [peer x] node: \"foo\" is not a node ID (expected 52 base32 characters a-z, 2-7)"},
    {"[peer x]\nnode =\n",
     "k.conf:2: [peer x] node: \"\" is not a node ID (expected 52 base32 characters a-z, 2-7)"},
    {"[peer x]\nnode = " ID1 "\nnode = " ID1 "\n",
     "k.conf:3: [peer x] duplicate key \"node\" (first set on line 2)"},
    {"[peer x]\nnode = " ID1 "\nuser = a\nuser = b\n",
     "k.conf:4: [peer x] duplicate key \"user\" (first set on line 3)"},
    {"[peer " ID1 "]\nallow = yes\nallow = yes\n",
     "k.conf:3: [peer " ID1 "] duplicate key \"allow\" (first set on line 2)"},
    {"[peer " ID1 "]\nexit = no\nexit = no\n",
     "k.conf:3: [peer " ID1 "] duplicate key \"exit\" (first set on line 2)"},
    {"[peer x]\nnode = " ID1 "\nport = 22\n", "k.conf:3: unknown key \"port\" in [peer x]"},
    {"[peer " ID1 "]\nlisten = 1\n", "k.conf:2: unknown key \"listen\" in [peer " ID1 "]"},
    {"[peer " ID1 "]\nuser =\n", "k.conf:2: [peer " ID1 "] user: \"\" is not " USER_EXPECT},
    {"[peer " ID1 "]\nuser = -oProxyCommand\n",
     "k.conf:2: [peer " ID1 "] user: \"-oProxyCommand\" is not " USER_EXPECT},
    {"[peer " ID1 "]\nuser = a b\n", "k.conf:2: [peer " ID1 "] user: \"a b\" is not " USER_EXPECT},
    {"[peer " ID1 "]\nuser = a@b\n", "k.conf:2: [peer " ID1 "] user: \"a@b\" is not " USER_EXPECT},
    {"[peer " ID1 "]\nuser = j\xc3\xbcrg\n",
     "k.conf:2: [peer " ID1 "] user: \"j\\xc3\\xbcrg\" is not " USER_EXPECT},
    {"[peer " ID1 "]\nuser = " A63 "d\n",
     "k.conf:2: [peer " ID1 "] user: \"" A63 "d\" is not " USER_EXPECT},
    {"[peer " ID1 "]\nallow = maybe\n",
     "k.conf:2: [peer " ID1 "] allow: \"maybe\" is not a boolean (expected true or false)"},
    {"[peer " ID1 "]\nexit = 2\n",
     "k.conf:2: [peer " ID1 "] exit: \"2\" is not a boolean (expected true or false)"},
    {"[peer " ID1 "]\nexpose = 22,\n",
     "k.conf:2: [peer " ID1 "] expose: \"22,\" is not " PORTS_EXPECT},
    {"[peer x]\naddress = 22\n", "k.conf:2: [peer x] address: \"22\" is not " PEER_ADDR_EXPECT},
    {"[peer x]\naddress = nas.example:22\n",
     "k.conf:2: [peer x] address: \"nas.example:22\" is not " PEER_ADDR_EXPECT},
    {"[peer x]\naddress = 0.0.0.0:22\n",
     "k.conf:2: [peer x] address: \"0.0.0.0:22\" is not " PEER_ADDR_EXPECT},
    {"[peer x]\naddress = [::]:22\n",
     "k.conf:2: [peer x] address: \"[::]:22\" is not " PEER_ADDR_EXPECT},
    {"[peer x]\naddress = [::ffff:0.0.0.0]:22\n",
     "k.conf:2: [peer x] address: \"[::ffff:0.0.0.0]:22\" is not " PEER_ADDR_EXPECT},
    {"[peer x]\naddress = ::1:22\n",
     "k.conf:2: [peer x] address: \"::1:22\" is not " PEER_ADDR_EXPECT},
    {"[peer x]\naddress = 192.0.2.1\n",
     "k.conf:2: [peer x] address: \"192.0.2.1\" is not " PEER_ADDR_EXPECT},
    {"[peer x]\naddress = 192.0.2.1:0\n",
     "k.conf:2: [peer x] address: \"192.0.2.1:0\" is not " PEER_ADDR_EXPECT},
    {"[peer x]\naddress = [fe80::1%eth0]:22\n",
     "k.conf:2: [peer x] address: \"[fe80::1%eth0]:22\" is not " PEER_ADDR_EXPECT},
    {"[peer x]\naddress =\n", "k.conf:2: [peer x] address: \"\" is not " PEER_ADDR_EXPECT},
    {"[peer " ID1 "]\naddress=10.0.0.1:1\naddress=10.0.0.1:2\naddress=10.0.0.1:3\n"
     "address=10.0.0.1:4\naddress=10.0.0.1:5\naddress=10.0.0.1:6\naddress=10.0.0.1:7\n"
     "address=10.0.0.1:8\naddress=10.0.0.1:8\naddress=10.0.0.1:9\n",
     "k.conf:11: [peer " ID1 "] address: too many addresses (max 8)"},
    /* Duplicate peers: the same label, the same key, a name shared with an alias. */
    {"[peer x]\nnode = " ID1 "\n[peer X]\nnode = " ID2 "\n",
     "k.conf:3: [peer X] duplicate peer \"x\" (first on line 1)"},
    {"[peer " ID1 "]\n[peer " ID1_UPPER "]\n",
     "k.conf:2: [peer " ID1_UPPER "] duplicate peer (node " ID1 " is already [peer " ID1
     "] on line 1)"},
    {"[peer " ID1 "]\n[peer lap]\nnode = " ID1 "\n",
     "k.conf:3: [peer lap] node: duplicate peer (node " ID1 " is already [peer " ID1
     "] on line 1)"},
    {"[peer lap]\nnode = " ID1 "\n[peer " ID1 "]\n",
     "k.conf:3: [peer " ID1 "] duplicate peer (node " ID1 " is already [peer lap] on line 1)"},
    {"[peer a]\nnode = " ID2 "\n[peer b]\nnode = " ID2 "\n",
     "k.conf:4: [peer b] node: duplicate peer (node " ID2 " is already [peer a] on line 1)"},
    {"[aliases]\nnas = " ID1 "\n[peer NAS]\nnode = " ID2 "\n",
     "k.conf:3: [peer NAS] duplicate name \"nas\": already an alias on line 2"},
    {"[peer nas]\nnode = " ID2 "\n[aliases]\nNas = " ID1 "\n",
     "k.conf:4: [aliases] duplicate name \"nas\": already [peer nas] on line 1"},
    /* [egress] */
    {"[egress]\npolicy = bogus\n", "k.conf:2: [egress] policy: \"bogus\" is not an egress policy "
                                   "(expected refuse, direct or exit)"},
    {"[egress]\npolicy = exit\n", "k.conf:2: [egress] policy = exit needs exit_node"},
    {"[egress]\n\npolicy = exit\nallow_private = yes\n[peer gw]\nnode = " ID1 "\n",
     "k.conf:3: [egress] policy = exit needs exit_node"},
    {"[egress]\nexit_node = gw\n", "k.conf:2: [egress] exit_node: no [peer gw] section or alias "
                                   "\"gw\" (expected a node ID, a peer name or an alias)"},
    {"[egress]\npolicy = exit\nexit_node = GW\n[aliases]\ngw2 = " ID1 "\n",
     "k.conf:3: [egress] exit_node: no [peer gw] section or alias \"gw\" (expected a node ID, a "
     "peer name or an alias)"},
    {"[egress]\nexit_node = gw_1\n", "k.conf:2: [egress] exit_node: \"gw_1\" is not " EXIT_EXPECT},
    {"[egress]\nexit_node =\n", "k.conf:2: [egress] exit_node: \"\" is not " EXIT_EXPECT},
    {"[egress]\nexit_node = gw.mesh.internal\n",
     "k.conf:2: [egress] exit_node: \"gw.mesh.internal\" is not " EXIT_EXPECT},
    {"[egress]\nallow_private = maybe\n",
     "k.conf:2: [egress] allow_private: \"maybe\" is not a boolean (expected true or false)"},
    {"[egress]\npolicy = direct\npolicy = refuse\n",
     "k.conf:3: [egress] duplicate key \"policy\" (first set on line 2)"},
    {"[egress]\nexit_node = " ID1 "\nexit_node = " ID1 "\n",
     "k.conf:3: [egress] duplicate key \"exit_node\" (first set on line 2)"},
    {"[egress]\nexit = " ID1 "\n", "k.conf:2: unknown key \"exit\" in [egress]"},
    /* [socks5] credentials; the password is never quoted. */
    {"[socks5]\nusername = alice\n",
     "k.conf:2: [socks5] username is set but password is not (set both or neither)"},
    {"[socks5]\n\npassword = hunter2\n",
     "k.conf:3: [socks5] password is set but username is not (set both or neither)"},
    {"[socks5]\nusername =\n", "k.conf:2: [socks5] username: empty value (expected 1-255 bytes)"},
    {"[socks5]\nusername = a\npassword = ;hunter2\n",
     "k.conf:3: [socks5] password: empty value (expected 1-255 bytes)"},
    {"[socks5]\nusername = a\nusername = a\n",
     "k.conf:3: [socks5] duplicate key \"username\" (first set on line 2)"},
    {"[socks5]\npassword = a\npassword = a\n",
     "k.conf:3: [socks5] duplicate key \"password\" (first set on line 2)"},
    {"[socks5]\nuser = alice\n", "k.conf:2: unknown key \"user\" in [socks5]"},
    /* Whole-file checks run in a fixed order: listeners, egress, SOCKS5 credentials. */
    {"[socks5]\nusername = u\n[egress]\npolicy = exit\n",
     "k.conf:4: [egress] policy = exit needs exit_node"},
    {"[egress]\npolicy = exit\n[mesh]\nlisten = 127.0.0.1:8080\n",
     "k.conf:4: [mesh] listen 127.0.0.1:8080 conflicts with [http] listen 127.0.0.1:8080 "
     "(default)"},
};

static void test_bad_table(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        int rc = parse(c, bad_cases[i].text, err, sizeof err);
        if (rc != KM_ERR_CONFIG || strcmp(err, bad_cases[i].err) != 0) {
            fail_msg("case %zu: rc %d\n  got  \"%s\"\n  want \"%s\"", i, rc, err, bad_cases[i].err);
        }
        if (strchr(err, '\n') != NULL) {
            fail_msg("case %zu: error is not one line", i);
        }
    }
}

static void test_too_many_aliases(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    size_t cap = 64 * (KM_CONFIG_MAX_ALIASES + 2);
    char *text = malloc(cap);
    assert_non_null(text);
    size_t o = (size_t)snprintf(text, cap, "[aliases]\n");
    for (int i = 0; i < KM_CONFIG_MAX_ALIASES; i++) {
        o += (size_t)snprintf(text + o, cap - o, "a%d = %s\n", i, i % 2 ? ID1 : ID2);
    }
    assert_int_equal(parse(c, text, err, sizeof err), 0);
    assert_int_equal(c->n_aliases, KM_CONFIG_MAX_ALIASES);
    assert_ptr_equal(km_config_alias(c, "A255"), &c->aliases[255].key);
    (void)snprintf(text + o, cap - o, "b = %s\n", ID1);
    assert_int_equal(parse(c, text, err, sizeof err), KM_ERR_CONFIG);
    assert_string_equal(err, "k.conf:258: [aliases] too many aliases (max 256)");
    free(text);
}

/* Errors stop at the first one, and a later conflict is not reported before an earlier
 * syntax error. */
static void test_first_error_only(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    const char *text = "[mesh]\nlisten = 127.0.0.1:1080\n[log]\nlevel = loud\n[nope]\n";
    assert_int_equal(parse(c, text, err, sizeof err), KM_ERR_CONFIG);
    assert_string_equal(err, "k.conf:4: [log] level: \"loud\" is not a log level (expected "
                             "debug, info, warn, error or off)");
}

static void test_long_value_quoted_truncated(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    char text[256];
    char val[180];
    memset(val, 'v', sizeof val - 1);
    val[sizeof val - 1] = '\0';
    (void)snprintf(text, sizeof text, "[log]\nlevel = %s\n", val);
    assert_int_equal(parse(c, text, err, sizeof err), KM_ERR_CONFIG);
    assert_non_null(strstr(err, "k.conf:2: [log] level: \"vvvv"));
    assert_non_null(strstr(err, "v...\" is not a log level"));
    assert_true(strlen(err) < 220);
}

static void test_limits(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    const char nul[] = "[log]\nlevel = in\0fo\n";
    km_config_defaults(c);
    assert_int_equal(km_config_parse(c, nul, sizeof nul - 1, "k.conf", err, sizeof err),
                     KM_ERR_CONFIG);
    assert_string_equal(err, "k.conf:2: NUL byte in line (not a text file?)");

    char line[256];
    memset(line, 'x', sizeof line);
    memcpy(line, "[node]\nkey_file = ", 18);
    line[7 + 199] = '\n';
    km_config_defaults(c);
    assert_int_equal(km_config_parse(c, line, 7 + 200, "k.conf", err, sizeof err), KM_ERR_CONFIG);
    assert_string_equal(err, "k.conf:2: line too long (max 198 characters)");

    size_t big = KM_CONF_MAX_SIZE + 1;
    char *text = malloc(big);
    assert_non_null(text);
    memset(text, '\n', big);
    km_config_defaults(c);
    assert_int_equal(km_config_parse(c, text, big, "k.conf", err, sizeof err), KM_ERR_TOO_LARGE);
    assert_string_equal(err, "k.conf: file too large (1048577 bytes, max 1048576)");
    free(text);
}

static void test_load(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    char path[] = "/tmp/km-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "[node]\nsuffix = lan.example\n[mesh]\nlisten = 127.0.0.1:8080\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    memset(c, 0x5a, sizeof *c);
    assert_int_equal(km_config_load(c, path, err, sizeof err), KM_ERR_CONFIG);
    char want[256];
    (void)snprintf(want, sizeof want,
                   "%s:4: [mesh] listen 127.0.0.1:8080 conflicts with [http] listen "
                   "127.0.0.1:8080 (default)",
                   path);
    assert_string_equal(err, want);

    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    text = "[node]\nsuffix = lan.example\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    memset(c, 0x5a, sizeof *c);
    assert_int_equal(km_config_load(c, path, err, sizeof err), 0);
    assert_string_equal(c->suffix, "lan.example");
    assert_string_equal(c->key_file, "node.key");
    assert_int_equal(c->n_mesh_listen, 1);
    unlink(path);

    assert_int_equal(km_config_load(c, path, err, sizeof err), -ENOENT);
    (void)snprintf(want, sizeof want, "%s: No such file or directory", path);
    assert_string_equal(err, want);
}

/* Every new key at once: two peers (one by node ID, one by label), egress through a peer named
 * before it is defined, SOCKS5 credentials. */
static void test_full_mesh(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    const char *text = "[mesh]\n"
                       "listen = 15022\n"
                       "expose = 22, 80\n"
                       "expose = 443\n"
                       "idle_timeout = 0\n"
                       "connect_timeout = 3s\n"
                       "keepalive = 20s\n"
                       "login_grace = 5s\n"
                       "max_sessions = 100\n"
                       "max_channels = 500\n"
                       "ciphers = chacha20\n"
                       "[egress]\n"
                       "policy = exit\n"
                       "exit_node = Gateway\n"
                       "allow_private = true\n"
                       "[peer " ID1 "]\n"
                       "address = 192.0.2.10:15022\n"
                       "address = [2001:db8::10]:15022\n"
                       "expose = 5432\n"
                       "[peer gateway]\n"
                       "node = " ID2 "\n"
                       "address = 198.51.100.7:443\n"
                       "user = mesh\n"
                       "allow = false\n"
                       "exit = true\n"
                       "[socks5]\n"
                       "username = alice\n"
                       "password = s3cret\n"
                       "[aliases]\n"
                       "laptop = " ID1 "\n";
    assert_int_equal(parse(c, text, err, sizeof err), 0);
    assert_string_equal(err, "");
    static const uint16_t mesh_ports[] = {22, 80, 443};
    ports_eq(c->mesh_expose, c->n_mesh_expose, mesh_ports, 3);
    assert_int_equal(c->idle_timeout_ms, 0);
    assert_int_equal(c->connect_timeout_ms, 3000);
    assert_int_equal(c->keepalive_ms, 20000);
    assert_int_equal(c->login_grace_ms, 5000);
    assert_int_equal(c->max_sessions, 100);
    assert_int_equal(c->max_channels, 500);
    assert_int_equal(c->ciphers, KM_CIPHER_CHACHA);
    assert_int_equal(c->egress, KM_EGRESS_EXIT);
    assert_true(c->has_exit_node);
    assert_memory_equal(c->exit_node.b, PK2, 32);
    assert_true(c->allow_private);
    assert_string_equal(c->socks5_username, "alice");
    assert_string_equal(c->socks5_password, "s3cret");

    assert_int_equal(c->n_peers, 2);
    const struct km_config_peer *a = &c->peers[0];
    assert_string_equal(a->name, "");
    assert_memory_equal(a->key.b, PK1, 32);
    assert_int_equal(a->n_addrs, 2);
    addr_eq(&a->addrs[0], "192.0.2.10", 15022);
    addr_eq(&a->addrs[1], "2001:db8::10", 15022);
    assert_string_equal(a->user, "keymesh");
    static const uint16_t a_ports[] = {5432};
    ports_eq(a->expose, a->n_expose, a_ports, 1);
    assert_true(a->allow);
    assert_false(a->exit);
    const struct km_config_peer *b = &c->peers[1];
    assert_string_equal(b->name, "gateway");
    assert_memory_equal(b->key.b, PK2, 32);
    assert_int_equal(b->n_addrs, 1);
    addr_eq(&b->addrs[0], "198.51.100.7", 443);
    assert_string_equal(b->user, "mesh");
    assert_int_equal(b->n_expose, 0);
    assert_false(b->allow);
    assert_true(b->exit);

    /* Peer labels are names too: km_config_alias finds them, case-insensitively, next to
     * the [aliases] entries. A peer named by its node ID adds no name. */
    assert_ptr_equal(km_config_alias(c, "gateway"), &b->key);
    assert_ptr_equal(km_config_alias(c, "GateWay"), &b->key);
    assert_ptr_equal(km_config_alias(c, "laptop"), &c->aliases[0].key);
    assert_null(km_config_alias(c, "gate"));
    assert_null(km_config_alias(c, ""));
    assert_null(km_config_alias(c, ID1));
}

/* exit_node names resolve after the whole file: peers and aliases before or after [egress],
 * in any case; a node ID needs no peer. */
static void test_exit_node_refs(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    static const struct {
        const char *text;
        const uint8_t *key;
    } cases[] = {
        /* Backward: the peer comes first. */
        {"[peer gw]\nnode = " ID2 "\n[egress]\npolicy = exit\nexit_node = gw\n", PK2},
        /* Forward: [egress] names a peer defined later. */
        {"[egress]\npolicy = exit\nexit_node = GW\n[peer Gw]\nnode = " ID1 "\n", PK1},
        /* Forward to an alias. */
        {"[egress]\nexit_node = home\npolicy = exit\n[aliases]\nhome = " ID2 "\n", PK2},
        /* Backward to an alias. */
        {"[aliases]\nhome = " ID1 "\n[egress]\npolicy = exit\nexit_node = home\n", PK1},
        /* A node ID that is no peer of ours. */
        {"[egress]\npolicy = exit\nexit_node = " ID2 "\n", PK2},
        /* Forward to a peer that is itself named by a label, last in the file. */
        {"[egress]\npolicy = exit\nexit_node = z\n[peer a]\nnode = " ID1 "\n[peer z]\nnode "
         "= " ID2 "\n",
         PK2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = parse(c, cases[i].text, err, sizeof err);
        if (rc != 0) {
            fail_msg("case %zu: rc %d, err \"%s\"", i, rc, err);
        }
        assert_int_equal(c->egress, KM_EGRESS_EXIT);
        assert_true(c->has_exit_node);
        assert_memory_equal(c->exit_node.b, cases[i].key, 32);
    }
}

/* A labelled peer's missing `node` is reported at its header as soon as the section ends, so
 * it wins over any later error; up to then the section's own errors come first. */
static void test_missing_node_order(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    assert_int_equal(parse(c, "[log]\n[peer x]\nuser = ok\n[peer y]\n[nope]\n", err, sizeof err),
                     KM_ERR_CONFIG);
    assert_string_equal(err, "k.conf:2: " MISSING_NODE("x"));
    assert_int_equal(parse(c, "[peer x]\nuser = -bad\n", err, sizeof err), KM_ERR_CONFIG);
    assert_string_equal(err, "k.conf:2: [peer x] user: \"-bad\" is not " USER_EXPECT);
    /* The same through km_config_load: the file name is the path. */
    char path[] = "/tmp/km-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "[peer x]\n\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    assert_int_equal(km_config_load(c, path, err, sizeof err), KM_ERR_CONFIG);
    char want[256];
    (void)snprintf(want, sizeof want, "%s:1: " MISSING_NODE("x"), path);
    assert_string_equal(err, want);
    unlink(path);
}

static void test_too_many_peers(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    size_t cap = 128 * (KM_CONFIG_MAX_PEERS + 2);
    char *text = malloc(cap);
    assert_non_null(text);
    size_t o = 0;
    char id[KM_NODE_ID_LEN + 1];
    struct km_pubkey pk;
    memset(&pk, 0, sizeof pk);
    for (int i = 0; i <= KM_CONFIG_MAX_PEERS; i++) {
        pk.b[0] = (uint8_t)i;
        km_node_id(&pk, id);
        if (i % 2 == 0) {
            o += (size_t)snprintf(text + o, cap - o, "[peer %s]\n", id);
        } else {
            o += (size_t)snprintf(text + o, cap - o, "[peer p%d]\nnode = %s\n", i, id);
        }
        if (i == KM_CONFIG_MAX_PEERS - 1) {
            assert_int_equal(parse(c, text, err, sizeof err), 0);
            assert_int_equal(c->n_peers, KM_CONFIG_MAX_PEERS);
            assert_ptr_equal(km_config_alias(c, "P63"), &c->peers[63].key);
            assert_string_equal(c->peers[62].name, "");
        }
    }
    /* 32 even ID sections (1 line) and 32 odd labelled ones (2 lines): the 65th is line 97. */
    assert_int_equal(parse(c, text, err, sizeof err), KM_ERR_CONFIG);
    char want[160];
    pk.b[0] = KM_CONFIG_MAX_PEERS;
    km_node_id(&pk, id);
    (void)snprintf(want, sizeof want, "k.conf:97: [peer %s] too many peers (max 64)", id);
    assert_string_equal(err, want);
    free(text);
}

static void test_too_many_peer_ports(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    char text[1024];
    size_t o = (size_t)snprintf(text, sizeof text, "[peer " ID1 "]\n");
    for (int i = 1; i <= KM_CONFIG_MAX_PORTS; i++) {
        o += (size_t)snprintf(text + o, sizeof text - o, "expose = %d,%d\n", i, i);
    }
    assert_int_equal(parse(c, text, err, sizeof err), 0);
    assert_int_equal(c->peers[0].n_expose, KM_CONFIG_MAX_PORTS);
    assert_int_equal(c->n_mesh_expose, 0);
    (void)snprintf(text + o, sizeof text - o, "expose = 7 65535\n");
    assert_int_equal(parse(c, text, err, sizeof err), KM_ERR_CONFIG);
    assert_string_equal(err, "k.conf:34: [peer " ID1 "] expose: too many ports (max 32)");
}

/* examples/keymesh.conf must always parse (it is what users copy). */
static void test_dns_section(void **state)
{
    (void)state;
    struct km_config *c = malloc(sizeof *c);
    char err[KM_CONF_ERR_LEN];
    km_config_defaults(c);
    assert_true(c->dns_enabled);
    assert_int_equal(c->dns_listen[0].port, 5354);
    assert_int_equal(c->dns_ttl_s, 60);
    static const char good[] = "[dns]\nlisten = 127.0.0.1:53\nttl = 5m\nrate_limit = 200\n";
    assert_int_equal(km_config_parse(c, good, sizeof good - 1, "t.conf", err, sizeof err), 0);
    assert_int_equal(c->dns_listen[0].port, 53);
    assert_int_equal(c->dns_ttl_s, 300);
    assert_int_equal(c->dns_rate_limit, 200);
    static const struct {
        const char *text;
        const char *want;
    } bad[] = {
        {"[dns]\nttl = 0\n", "t.conf:2: [dns] ttl: \"0\" is not a duration from 1s to 1d"},
        {"[dns]\nrate_limit = -1\n", "t.conf:2: [dns] rate_limit"},
        {"[dns]\nbogus = 1\n", "t.conf:2: unknown key \"bogus\" in [dns]"},
        {"[dns]\nlisten = 127.0.0.1:1080\n", "conflicts with [socks5] listen"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        km_config_defaults(c);
        int r = km_config_parse(c, bad[i].text, strlen(bad[i].text), "t.conf", err, sizeof err);
        assert_int_equal(r, KM_ERR_CONFIG);
        if (strstr(err, bad[i].want) == NULL) {
            fail_msg("case %zu: '%s' lacks '%s'", i, err, bad[i].want);
        }
    }
    /* A disabled DNS server's listener does not conflict. */
    static const char off[] = "[dns]\nenabled = false\nlisten = 127.0.0.1:1080\n";
    km_config_defaults(c);
    assert_int_equal(km_config_parse(c, off, sizeof off - 1, "t.conf", err, sizeof err), 0);
    free(c);
}

static void test_tun_section(void **state)
{
    (void)state;
    struct km_config *c = malloc(sizeof *c);
    char err[KM_CONF_ERR_LEN];
    km_config_defaults(c);
    assert_false(c->tun_enabled);
    assert_string_equal(c->tun_name, "keymesh0");
    assert_int_equal(c->tun_mtu, 1500);
    assert_int_equal(c->tun_max_flows, 4096);
    static const char good[] = "[tun]\nenabled = true\nname = km-0.x_y\nmtu = 9000\n"
                               "max_flows = 100\n";
    assert_int_equal(km_config_parse(c, good, sizeof good - 1, "t.conf", err, sizeof err), 0);
    assert_true(c->tun_enabled);
    assert_string_equal(c->tun_name, "km-0.x_y");
    assert_int_equal(c->tun_mtu, 9000);
    assert_int_equal(c->tun_max_flows, 100);
    static const struct {
        const char *text;
        const char *want;
    } bad[] = {
        {"[tun]\nenabled = maybe\n", "t.conf:2: [tun] enabled"},
        {"[tun]\nname = \n", "t.conf:2: [tun] name"},
        {"[tun]\nname = 0123456789abcdef\n", "an interface name"},
        {"[tun]\nname = a/b\n", "an interface name"},
        {"[tun]\nname = a b\n", "an interface name"},
        {"[tun]\nmtu = 1279\n", "from 1280"},
        {"[tun]\nmtu = 65536\n", "t.conf:2: [tun] mtu"},
        {"[tun]\nmax_flows = 0\n", "t.conf:2: [tun] max_flows"},
        {"[tun]\nmax_flows = 1e3\n", "t.conf:2: [tun] max_flows"},
        {"[tun]\nbogus = 1\n", "t.conf:2: unknown key \"bogus\" in [tun]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        km_config_defaults(c);
        int r = km_config_parse(c, bad[i].text, strlen(bad[i].text), "t.conf", err, sizeof err);
        assert_int_equal(r, KM_ERR_CONFIG);
        if (strstr(err, bad[i].want) == NULL) {
            fail_msg("case %zu: '%s' lacks '%s'", i, err, bad[i].want);
        }
    }
    free(c);
}

static void test_example_file(void **state)
{
    struct km_config *c = *state;
    char err[KM_CONF_ERR_LEN];
    const char *src = getenv("KM_SRCDIR");
    if (src == NULL) {
        skip();
    }
    char path[4096];
    (void)snprintf(path, sizeof path, "%s/examples/keymesh.conf", src);
    int rc = km_config_load(c, path, err, sizeof err);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_string_equal(c->suffix, "mesh.internal");
    assert_int_equal(c->n_aliases, 1);
    assert_non_null(km_config_alias(c, "laptop"));
    assert_int_equal(c->n_peers, 2);
    assert_ptr_equal(km_config_alias(c, "nas"), &c->peers[1].key);
    assert_memory_equal(c->peers[1].key.b, PK2, 32);
    assert_int_equal(c->egress, KM_EGRESS_REFUSE);
    assert_int_equal(c->idle_timeout_ms, 300000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_good_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_many_aliases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_error_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_value_quoted_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_mesh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_node_refs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_node_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_many_peers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_many_peer_ports, setup, teardown),
        cmocka_unit_test(test_dns_section),
        cmocka_unit_test(test_tun_section),
        cmocka_unit_test_setup_teardown(test_example_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
