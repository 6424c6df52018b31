/* core/daemon/config: keymesh's schema. Every key good and bad, exact "<file>:<line>:" errors,
 * defaults and their replacement, listener conflicts, aliases, and the shipped example. */
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
        "[node]\n[log]\n[control]\n[mesh]\n[socks5]\n[http]\n[aliases]\n",
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

#define A63 "abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789abc"
#define S107                                                                                     \
    "/run/keymesh/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
    "xxxxxxxxxxxx.sock"

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
    {"[foo]\n", "k.conf:1: unknown section [foo] (expected node, log, control, mesh, socks5, "
                "http or aliases)"},
    {"[node]\n\n[Node]\nsuffix = x\n", "k.conf:3: unknown section [Node] (expected node, log, "
                                       "control, mesh, socks5, http or aliases)"},
    {"[a\x01\"b]\n", "k.conf:1: unknown section [a\\x01\\x22b] (expected node, log, control, "
                     "mesh, socks5, http or aliases)"},
    {"listen = 80\n", "k.conf:1: key \"listen\" is outside any section (add a [section] header "
                      "above it)"},
    {"[mesh]\nport = 15022\n", "k.conf:2: unknown key \"port\" in [mesh]"},
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

/* examples/keymesh.conf must always parse (it is what users copy). */
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
        cmocka_unit_test_setup_teardown(test_example_file, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
