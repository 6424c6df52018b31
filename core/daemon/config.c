/* keymesh's configuration schema (docs/CONFIG.md). core/conf.c does the INI reading and
 * reports "<file>:<line>:"; this file knows the sections, keys, defaults and checks.
 *
 * Single-valued keys may appear once. `listen` is repeatable: the first one in a section
 * replaces that section's defaults. `expose` and peer `address` are repeatable and append;
 * a port or address given twice is kept once. Listener conflicts are checked once at the end,
 * over the effective listeners of the enabled services only, so a default that the file
 * replaced or disabled never causes an error.
 *
 * A [peer NAME] section is one peer: it opens in on_section and is closed (checked for its
 * `node`) by the next header or the end of the file. Checks that need the whole file run at
 * the end, in this order: the last peer's `node`, listener conflicts, `[egress] exit_node`
 * (names may refer to peers or aliases defined later), `policy = exit` without an exit node,
 * and SOCKS5 credentials given only half. */
#include "core/daemon/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Longest escaped key or value quoted in a message; longer ones end in "...". */
#define QUOTE_LEN 100

#define NODE_ID_EXPECT "(expected 52 base32 characters a-z, 2-7)"
#define LABEL_EXPECT "1-63 of a-z, 0-9 and '-', not starting or ending with '-'"

enum lsec { L_MESH, L_SOCKS5, L_HTTP, L_DNS, L_N };

static const char *const lsec_name[L_N] = {"mesh", "socks5", "http", "dns"};
static const char *const lsec_def_host[L_N] = {"::", "127.0.0.1", "127.0.0.1", "127.0.0.1"};

/* Single-valued keys, for the duplicate check. */
enum single {
    S_KEY_FILE,
    S_SUFFIX,
    S_PREFIX,
    S_LOG_LEVEL,
    S_CONTROL_SOCKET,
    S_IDLE_TIMEOUT,
    S_CONNECT_TIMEOUT,
    S_KEEPALIVE,
    S_LOGIN_GRACE,
    S_MAX_SESSIONS,
    S_MAX_CHANNELS,
    S_CIPHERS,
    S_POLICY,
    S_EXIT_NODE,
    S_ALLOW_PRIVATE,
    S_SOCKS5_ENABLED,
    S_SOCKS5_USERNAME,
    S_SOCKS5_PASSWORD,
    S_HTTP_ENABLED,
    S_DNS_ENABLED,
    S_DNS_TTL,
    S_DNS_RATE_LIMIT,
    S_ALLOW_UNKNOWN,
    S_MDNS_ENABLED,
    S_MDNS_IFACES,
    S_PUB_ENABLED,
    S_PUB_SERVER,
    S_PUB_ZONE,
    S_PUB_TSIG_NAME,
    S_PUB_TSIG_ALG,
    S_PUB_TSIG_SECRET_FILE,
    S_PUB_TTL,
    S_PUB_TCP,
    S_TUN_ENABLED,
    S_TUN_NAME,
    S_TUN_MTU,
    S_TUN_MAX_FLOWS,
    S_CAP_ACCOUNT,
    S_CAP_SKEW,
    S_NAT_PORTMAP,
    S_NAT_LEASE,
    S_NAT_RETRY,
    S_NAT_EXT_ADDR,
    S_GW_ENABLED,
    S_NAT_PUNCH,
    S_GW_MAX_STREAMS,
    S_GW_MAX_BYTES,
    S_N
};

/* Single-valued keys of a [peer NAME] section. */
enum pkey { P_NODE, P_USER, P_ALLOW, P_EXIT, P_RELAY, P_N };

static const char *const pkey_name[P_N] = {"node", "user", "allow", "exit", "relay"};

struct parse {
    struct km_config *c;
    int single_line[S_N];                       /* 0: not set by the file yet */
    bool listen_set[L_N];                       /* the file replaced the defaults */
    int listen_line[L_N][KM_CONFIG_MAX_LISTEN]; /* 0: a default */
    int alias_line[KM_CONFIG_MAX_ALIASES];
    /* [peer NAME] */
    int peer_line[KM_CONFIG_MAX_PEERS];             /* header line */
    int peer_key_line[KM_CONFIG_MAX_PEERS][P_N];    /* 0: not set yet */
    bool peer_is_id[KM_CONFIG_MAX_PEERS];           /* the section name is the node ID */
    char peer_section[KM_CONFIG_MAX_PEERS][64 + 5]; /* "peer NAME" as written */
    size_t cur_peer;                                /* index, or SIZE_MAX outside [peer] */
    /* [egress] exit_node given as a name, resolved at the end. */
    char exit_name[64];
    /* An error found when a section ends belongs to that section's header line, not to the
     * line that ended it: km_config_parse rewrites the reader's "<file>:<line>:" with it. */
    int close_line;
    char close_msg[KM_CONF_ERR_LEN];
};

static void msg(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void msg(char *err, size_t errsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
    if (n < 0 && errsz > 0) {
        err[0] = '\0';
    }
}

/* Untrusted text, escaped for a one-line message (no quotes added). */
static const char *esc(char out[QUOTE_LEN], const char *s)
{
    return km_log_escape(out, QUOTE_LEN, s, strlen(s));
}

/* A local user name as useradd(8) takes it: no path or shell metacharacters. */
static bool account_name_ok(const char *v, size_t cap)
{
    size_t n = strlen(v);
    bool ok = n > 0 && n < cap && v[0] != '-';
    for (size_t i = 0; ok && i < n; i++) {
        char ch = v[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '_' || ch == '-' || ch == '.';
    }
    return ok;
}

static int bad_value(char *err, size_t errsz, const char *section, const char *key,
                     const char *value, const char *what)
{
    char q[QUOTE_LEN];
    msg(err, errsz, "[%s] %s: \"%s\" is not %s", section, key, esc(q, value), what);
    return KM_ERR_CONFIG;
}

/* Copy a path-like value into dst[dstsz]; empty and over-long values are refused. */
static int set_string(char *dst, size_t dstsz, const char *section, const char *key,
                      const char *value, char *err, size_t errsz)
{
    size_t n = strlen(value);
    if (n == 0) {
        msg(err, errsz, "[%s] %s: empty value (expected a path)", section, key);
        return KM_ERR_CONFIG;
    }
    if (n >= dstsz) {
        msg(err, errsz, "[%s] %s: path too long (max %zu characters)", section, key, dstsz - 1);
        return KM_ERR_CONFIG;
    }
    memcpy(dst, value, n + 1);
    return 0;
}

/* A SOCKS5 credential (RFC 1929: 1-255 bytes, any octets). The value is never quoted in
 * messages: it may be a secret. */
static int set_secret(char *dst, size_t dstsz, const char *section, const char *key,
                      const char *value, char *err, size_t errsz)
{
    size_t n = strlen(value);
    if (n == 0) {
        msg(err, errsz, "[%s] %s: empty value (expected 1-%zu bytes)", section, key, dstsz - 1);
        return KM_ERR_CONFIG;
    }
    if (n >= dstsz) {
        msg(err, errsz, "[%s] %s: too long (max %zu bytes)", section, key, dstsz - 1);
        return KM_ERR_CONFIG;
    }
    memcpy(dst, value, n + 1);
    return 0;
}

static void lower(char *s)
{
    for (; *s != '\0'; s++) {
        *s = (char)tolower((unsigned char)*s);
    }
}

/* Write "host:port" or "[v6]:port". */
static void addr_str(const struct km_conf_addr *a, char out[64])
{
    if (strchr(a->host, ':') != NULL) {
        (void)snprintf(out, 64, "[%s]:%u", a->host, a->port);
    } else {
        (void)snprintf(out, 64, "%s:%u", a->host, a->port);
    }
}

static struct km_conf_addr *listen_arr(struct km_config *c, enum lsec s, size_t **n)
{
    switch (s) {
    case L_MESH:
        *n = &c->n_mesh_listen;
        return c->mesh_listen;
    case L_SOCKS5:
        *n = &c->n_socks5_listen;
        return c->socks5_listen;
    case L_DNS:
        *n = &c->n_dns_listen;
        return c->dns_listen;
    case L_HTTP:
    default:
        *n = &c->n_http_listen;
        return c->http_listen;
    }
}

static int add_listen(struct parse *p, enum lsec s, const char *value, int line, char *err,
                      size_t errsz)
{
    struct km_conf_addr a;
    if (km_conf_listen_addr(value, lsec_def_host[s], &a) != 0) {
        return bad_value(err, errsz, lsec_name[s], "listen", value,
                         "a listen address (expected HOST:PORT with an IP literal, "
                         "[IPV6]:PORT or PORT, port 1-65535)");
    }
    size_t *n;
    struct km_conf_addr *arr = listen_arr(p->c, s, &n);
    if (!p->listen_set[s]) {
        p->listen_set[s] = true;
        *n = 0;
    }
    if (*n >= KM_CONFIG_MAX_LISTEN) {
        msg(err, errsz, "[%s] listen: too many listeners (max %d)", lsec_name[s],
            KM_CONFIG_MAX_LISTEN);
        return KM_ERR_CONFIG;
    }
    arr[*n] = a;
    p->listen_line[s][*n] = line;
    (*n)++;
    return 0;
}

/* A port list: ports 1-65535 separated by commas and/or blanks ("22, 80 443"). Empty items
 * (a leading, trailing or doubled comma) are refused. Ports not yet in arr[0..*n) are
 * appended in order; a port already there is dropped, so the list stays a set and the
 * limit counts distinct ports. */
static int add_ports(uint16_t *arr, size_t *n, const char *section, const char *key,
                     const char *value, char *err, size_t errsz)
{
    static const char *const expect =
        "a port list (expected ports 1-65535 separated by commas or spaces)";
    uint16_t got[KM_CONF_MAX_LINE / 2 + 1];
    size_t n_got = 0;
    bool after_port = false; /* the last item was a port, not a comma */
    const char *s = value;
    for (;;) {
        while (*s == ' ' || *s == '\t') {
            s++;
        }
        if (*s == '\0') {
            break;
        }
        if (*s == ',') {
            if (!after_port) {
                return bad_value(err, errsz, section, key, value, expect);
            }
            after_port = false;
            s++;
            continue;
        }
        size_t len = strcspn(s, ", \t");
        char tok[8];
        if (len >= sizeof tok || n_got >= sizeof got / sizeof got[0]) {
            return bad_value(err, errsz, section, key, value, expect);
        }
        memcpy(tok, s, len);
        tok[len] = '\0';
        if (km_conf_port(tok, &got[n_got]) != 0) {
            return bad_value(err, errsz, section, key, value, expect);
        }
        n_got++;
        after_port = true;
        s += len;
    }
    if (!after_port) {
        return bad_value(err, errsz, section, key, value, expect);
    }
    for (size_t i = 0; i < n_got; i++) {
        bool dup = false;
        for (size_t j = 0; j < *n && !dup; j++) {
            dup = arr[j] == got[i];
        }
        if (dup) {
            continue;
        }
        if (*n >= KM_CONFIG_MAX_PORTS) {
            msg(err, errsz, "[%s] %s: too many ports (max %d)", section, key, KM_CONFIG_MAX_PORTS);
            return KM_ERR_CONFIG;
        }
        arr[(*n)++] = got[i];
    }
    return 0;
}

/* A duration of at least min_ms (min_text says it for the message). */
static int set_duration(uint64_t *out, uint64_t min_ms, const char *min_text, const char *section,
                        const char *key, const char *value, char *err, size_t errsz)
{
    uint64_t v;
    if (km_conf_duration_ms(value, &v) != 0) {
        return bad_value(err, errsz, section, key, value,
                         "a duration (expected a number with unit ms, s, m, h or d, such as "
                         "30s; at most 366 days)");
    }
    if (v < min_ms) {
        char q[QUOTE_LEN];
        msg(err, errsz, "[%s] %s: \"%s\" is too short (min %s)", section, key, esc(q, value),
            min_text);
        return KM_ERR_CONFIG;
    }
    *out = v;
    return 0;
}

/* A count 1..65535 in decimal digits only (STYLE.md section 7: strtoull, end, range). */
static int set_count(uint64_t *out, const char *section, const char *key, const char *value,
                     char *err, size_t errsz)
{
    /* strtoull alone would take a sign or leading blanks. */
    size_t n = strspn(value, "0123456789");
    if (n == 0 || n > 5 || value[n] != '\0') {
        return bad_value(err, errsz, section, key, value, "a number from 1 to 65535");
    }
    char *end;
    unsigned long v = strtoul(value, &end, 10);
    if (*end != '\0' || v < 1 || v > 65535) {
        return bad_value(err, errsz, section, key, value, "a number from 1 to 65535");
    }
    *out = (uint64_t)v;
    return 0;
}

static int set_bool(bool *out, const char *section, const char *key, const char *value, char *err,
                    size_t errsz)
{
    if (km_conf_bool(value, out) != 0) {
        return bad_value(err, errsz, section, key, value, "a boolean (expected true or false)");
    }
    return 0;
}

/* One DNS label: 1-63 of a-z, 0-9 and '-', not starting or ending with '-'. */
static bool is_label(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)s[i]) && s[i] != '-') {
            return false;
        }
    }
    return true;
}

/* The peer labelled name (lowercase), or NULL. */
static const struct km_config_peer *peer_by_label(const struct km_config *c, const char *name,
                                                  size_t *idx)
{
    for (size_t i = 0; i < c->n_peers && i < KM_CONFIG_MAX_PEERS; i++) {
        if (c->peers[i].name[0] != '\0' && strcasecmp(c->peers[i].name, name) == 0) {
            if (idx != NULL) {
                *idx = i;
            }
            return &c->peers[i];
        }
    }
    return NULL;
}

static int add_alias(struct parse *p, const char *name, const char *value, int line, char *err,
                     size_t errsz)
{
    struct km_config *c = p->c;
    char q[QUOTE_LEN];
    if (!is_label(name)) {
        msg(err, errsz,
            "[aliases] \"%s\" is not an alias name (expected one DNS label: " LABEL_EXPECT ")",
            esc(q, name));
        return KM_ERR_CONFIG;
    }
    char lname[64];
    memcpy(lname, name, strlen(name) + 1);
    lower(lname);
    /* "<alias>.<suffix>" must never shadow "<node ID>.<suffix>" of another key. */
    struct km_pubkey key;
    if (km_node_id_parse(lname, strlen(lname), &key) == 0) {
        msg(err, errsz, "[aliases] \"%s\": an alias name cannot be a node ID", lname);
        return KM_ERR_CONFIG;
    }
    for (size_t i = 0; i < c->n_aliases; i++) {
        if (strcmp(c->aliases[i].name, lname) == 0) {
            msg(err, errsz, "[aliases] duplicate alias \"%s\" (first set on line %d)", lname,
                p->alias_line[i]);
            return KM_ERR_CONFIG;
        }
    }
    size_t pi;
    if (peer_by_label(c, lname, &pi) != NULL) {
        msg(err, errsz, "[aliases] duplicate name \"%s\": already [peer %s] on line %d", lname,
            lname, p->peer_line[pi]);
        return KM_ERR_CONFIG;
    }
    if (km_node_id_parse(value, strlen(value), &key) != 0) {
        return bad_value(err, errsz, "aliases", lname, value, "a node ID " NODE_ID_EXPECT);
    }
    if (c->n_aliases >= KM_CONFIG_MAX_ALIASES) {
        msg(err, errsz, "[aliases] too many aliases (max %d)", KM_CONFIG_MAX_ALIASES);
        return KM_ERR_CONFIG;
    }
    struct km_config_alias *a = &c->aliases[c->n_aliases];
    memcpy(a->name, lname, sizeof lname);
    a->key = key;
    p->alias_line[c->n_aliases] = line;
    c->n_aliases++;
    return 0;
}

/* Claim a single-valued key (*slot is its first line, 0 if unset): refuses the second. */
static int once(int *slot, const char *section, const char *key, int line, char *err, size_t errsz)
{
    if (*slot != 0) {
        msg(err, errsz, "[%s] duplicate key \"%s\" (first set on line %d)", section, key, *slot);
        return KM_ERR_CONFIG;
    }
    *slot = line;
    return 0;
}

/* Another peer already holding key, or SIZE_MAX. Peers before the current one are closed,
 * so each has its key. */
static size_t peer_by_key(const struct parse *p, const struct km_pubkey *key, size_t skip)
{
    const struct km_config *c = p->c;
    for (size_t i = 0; i < c->n_peers && i < KM_CONFIG_MAX_PEERS; i++) {
        if (i != skip && (p->peer_is_id[i] || p->peer_key_line[i][P_NODE] != 0) &&
            memcmp(c->peers[i].key.b, key->b, sizeof key->b) == 0) {
            return i;
        }
    }
    return SIZE_MAX;
}

/* "[<section>] <what>duplicate peer (node <id> is already [peer <other>] on line N)". */
static int dup_peer(const struct parse *p, size_t other, const char *section, const char *what,
                    const struct km_pubkey *key, char *err, size_t errsz)
{
    char id[KM_NODE_ID_LEN + 1];
    km_node_id(key, id);
    const struct km_config_peer *o = &p->c->peers[other];
    msg(err, errsz, "[%s] %sduplicate peer (node %s is already [peer %s] on line %d)", section,
        what, id, o->name[0] != '\0' ? o->name : id, p->peer_line[other]);
    return KM_ERR_CONFIG;
}

/* The end of a [peer NAME] section: a labelled peer needs its `node`. */
static int close_peer(struct parse *p)
{
    size_t i = p->cur_peer;
    p->cur_peer = SIZE_MAX;
    if (i >= KM_CONFIG_MAX_PEERS || p->peer_is_id[i] || p->peer_key_line[i][P_NODE] != 0) {
        return 0;
    }
    p->close_line = p->peer_line[i];
    msg(p->close_msg, sizeof p->close_msg,
        "[%s] missing \"node = NODE-ID\" (a peer named by a label needs the node ID)",
        p->peer_section[i]);
    return KM_ERR_CONFIG;
}

/* A "[peer NAME]" header: NAME is a node ID or a label, after exactly one space. */
static int open_peer(struct parse *p, const char *section, int line, char *err, size_t errsz)
{
    struct km_config *c = p->c;
    const char *name = section + 4;
    struct km_pubkey key;
    bool is_id = false;
    bool ok = name[0] == ' ';
    if (ok) {
        name++;
        is_id = km_node_id_parse(name, strlen(name), &key) == 0;
        ok = is_id || is_label(name);
    }
    if (!ok) {
        char q[QUOTE_LEN];
        msg(err, errsz,
            "bad peer section [%s] (expected [peer NODE-ID] or [peer NAME] with one space, "
            "NAME " LABEL_EXPECT ")",
            esc(q, section));
        return KM_ERR_CONFIG;
    }
    char lname[64] = "";
    if (!is_id) {
        memcpy(lname, name, strlen(name) + 1);
        lower(lname);
        size_t other;
        if (peer_by_label(c, lname, &other) != NULL) {
            msg(err, errsz, "[%s] duplicate peer \"%s\" (first on line %d)", section, lname,
                p->peer_line[other]);
            return KM_ERR_CONFIG;
        }
        for (size_t i = 0; i < c->n_aliases && i < KM_CONFIG_MAX_ALIASES; i++) {
            if (strcmp(c->aliases[i].name, lname) == 0) {
                msg(err, errsz, "[%s] duplicate name \"%s\": already an alias on line %d", section,
                    lname, p->alias_line[i]);
                return KM_ERR_CONFIG;
            }
        }
    } else {
        size_t other = peer_by_key(p, &key, SIZE_MAX);
        if (other != SIZE_MAX) {
            return dup_peer(p, other, section, "", &key, err, errsz);
        }
    }
    if (c->n_peers >= KM_CONFIG_MAX_PEERS) {
        msg(err, errsz, "[%s] too many peers (max %d)", section, KM_CONFIG_MAX_PEERS);
        return KM_ERR_CONFIG;
    }
    size_t i = c->n_peers++;
    struct km_config_peer *peer = &c->peers[i];
    memset(peer, 0, sizeof *peer);
    memcpy(peer->name, lname, sizeof lname);
    if (is_id) {
        peer->key = key;
    }
    memcpy(peer->user, "keymesh", sizeof "keymesh");
    peer->allow = true;
    peer->exit = false;
    memset(p->peer_key_line[i], 0, sizeof p->peer_key_line[i]);
    p->peer_line[i] = line;
    p->peer_is_id[i] = is_id;
    (void)snprintf(p->peer_section[i], sizeof p->peer_section[i], "%s", section);
    p->cur_peer = i;
    return 0;
}

/* An SSH login name: 1-63 of A-Z, a-z, 0-9, '.', '_', '-', not starting with '-' (the
 * POSIX portable user name rule; a leading '-' would read as an option to many tools). */
static bool is_user(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 63 && s[0] != '-' &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* A peer address: an IP literal and port (no default host, so a bare port is refused), and
 * not a wildcard (connecting to 0.0.0.0 or :: reaches this host). */
static int add_peer_addr(struct km_config_peer *peer, const char *section, const char *value,
                         char *err, size_t errsz)
{
    struct km_conf_addr a;
    bool ok = km_conf_listen_addr(value, NULL, &a) == 0;
    if (ok) {
        uint8_t b[16];
        static const uint8_t zero[16];
        static const uint8_t mapped0[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0};
        if (inet_pton(AF_INET, a.host, b) == 1) {
            ok = memcmp(b, zero, 4) != 0;
        } else if (inet_pton(AF_INET6, a.host, b) == 1) {
            ok = memcmp(b, zero, 16) != 0 && memcmp(b, mapped0, 16) != 0;
        }
    }
    if (!ok) {
        return bad_value(err, errsz, section, "address", value,
                         "a peer address (expected IPV4:PORT or [IPV6]:PORT with an IP literal "
                         "other than 0.0.0.0 or ::, port 1-65535)");
    }
    for (size_t i = 0; i < peer->n_addrs && i < KM_CONFIG_MAX_PEER_ADDRS; i++) {
        if (strcmp(peer->addrs[i].host, a.host) == 0 && peer->addrs[i].port == a.port) {
            return 0;
        }
    }
    if (peer->n_addrs >= KM_CONFIG_MAX_PEER_ADDRS) {
        msg(err, errsz, "[%s] address: too many addresses (max %d)", section,
            KM_CONFIG_MAX_PEER_ADDRS);
        return KM_ERR_CONFIG;
    }
    peer->addrs[peer->n_addrs++] = a;
    return 0;
}

static int peer_key(struct parse *p, const char *section, const char *key, const char *value,
                    int line, char *err, size_t errsz)
{
    size_t i = p->cur_peer;
    struct km_config_peer *peer = &p->c->peers[i];
    if (strcmp(key, "address") == 0) {
        return add_peer_addr(peer, section, value, err, errsz);
    }
    if (strcmp(key, "expose") == 0) {
        return add_ports(peer->expose, &peer->n_expose, section, key, value, err, errsz);
    }
    int k = 0;
    while (k < P_N && strcmp(key, pkey_name[k]) != 0) {
        k++;
    }
    if (k == P_N) {
        char q[QUOTE_LEN];
        msg(err, errsz, "unknown key \"%s\" in [%s]", esc(q, key), section);
        return KM_ERR_CONFIG;
    }
    int r = once(&p->peer_key_line[i][k], section, key, line, err, errsz);
    if (r != 0) {
        return r;
    }
    switch ((enum pkey)k) {
    case P_NODE: {
        if (p->peer_is_id[i]) {
            msg(err, errsz,
                "[%s] node: not allowed when the section is named by its node ID (use "
                "[peer NAME] with node = NODE-ID, or drop this line)",
                section);
            return KM_ERR_CONFIG;
        }
        struct km_pubkey nk;
        if (km_node_id_parse(value, strlen(value), &nk) != 0) {
            return bad_value(err, errsz, section, key, value, "a node ID " NODE_ID_EXPECT);
        }
        size_t other = peer_by_key(p, &nk, i);
        if (other != SIZE_MAX) {
            return dup_peer(p, other, section, "node: ", &nk, err, errsz);
        }
        peer->key = nk;
        return 0;
    }
    case P_USER:
        if (!is_user(value)) {
            return bad_value(err, errsz, section, key, value,
                             "a user name (expected 1-63 of A-Z, a-z, 0-9, '.', '_' and '-', "
                             "not starting with '-')");
        }
        memcpy(peer->user, value, strlen(value) + 1);
        return 0;
    case P_ALLOW:
        return set_bool(&peer->allow, section, key, value, err, errsz);
    case P_EXIT:
        return set_bool(&peer->exit, section, key, value, err, errsz);
    case P_RELAY:
        return set_bool(&peer->relay, section, key, value, err, errsz);
    case P_N:
    default:
        break;
    }
    return KM_ERR_CONFIG;
}

static int set_single(struct parse *p, enum single s, const char *section, const char *key,
                      const char *value, char *err, size_t errsz)
{
    struct km_config *c = p->c;
    switch (s) {
    case S_KEY_FILE:
        return set_string(c->key_file, sizeof c->key_file, section, key, value, err, errsz);
    case S_CONTROL_SOCKET:
        return set_string(c->control_socket, sizeof c->control_socket, section, key, value, err,
                          errsz);
    case S_SUFFIX:
        if (km_suffix_check(value) != 0 || strlen(value) >= sizeof c->suffix) {
            return bad_value(err, errsz, section, key, value,
                             "a DNS suffix (expected labels of a-z, 0-9 and '-' separated by "
                             "dots, no trailing dot)");
        }
        memcpy(c->suffix, value, strlen(value) + 1);
        lower(c->suffix);
        return 0;
    case S_PREFIX:
        if (km_prefix_parse(value, &c->prefix) != 0) {
            return bad_value(err, errsz, section, key, value,
                             "a mesh prefix (expected an IPv6 /16 such as fd6b::/16)");
        }
        return 0;
    case S_LOG_LEVEL:
        if (km_log_level_parse(value, &c->log_level) != 0) {
            return bad_value(err, errsz, section, key, value,
                             "a log level (expected debug, info, warn, error or off)");
        }
        return 0;
    case S_IDLE_TIMEOUT:
        return set_duration(&c->idle_timeout_ms, 0, "0", section, key, value, err, errsz);
    case S_CONNECT_TIMEOUT:
        return set_duration(&c->connect_timeout_ms, 1, "1ms", section, key, value, err, errsz);
    case S_KEEPALIVE:
        return set_duration(&c->keepalive_ms, 1000, "1s", section, key, value, err, errsz);
    case S_LOGIN_GRACE:
        return set_duration(&c->login_grace_ms, 1, "1ms", section, key, value, err, errsz);
    case S_MAX_SESSIONS:
        return set_count(&c->max_sessions, section, key, value, err, errsz);
    case S_MAX_CHANNELS:
        return set_count(&c->max_channels, section, key, value, err, errsz);
    case S_CIPHERS:
        if (strcasecmp(value, "auto") == 0) {
            c->ciphers = KM_CIPHER_AUTO;
        } else if (strcasecmp(value, "aes") == 0) {
            c->ciphers = KM_CIPHER_AES;
        } else if (strcasecmp(value, "chacha20") == 0) {
            c->ciphers = KM_CIPHER_CHACHA;
        } else {
            return bad_value(err, errsz, section, key, value,
                             "a cipher choice (expected auto, aes or chacha20)");
        }
        return 0;
    case S_POLICY:
        if (strcasecmp(value, "refuse") == 0) {
            c->egress = KM_EGRESS_REFUSE;
        } else if (strcasecmp(value, "direct") == 0) {
            c->egress = KM_EGRESS_DIRECT;
        } else if (strcasecmp(value, "exit") == 0) {
            c->egress = KM_EGRESS_EXIT;
        } else {
            return bad_value(err, errsz, section, key, value,
                             "an egress policy (expected refuse, direct or exit)");
        }
        return 0;
    case S_EXIT_NODE:
        if (km_node_id_parse(value, strlen(value), &c->exit_node) == 0) {
            c->has_exit_node = true;
            return 0;
        }
        if (!is_label(value)) {
            return bad_value(err, errsz, section, key, value,
                             "a node ID or name (expected 52 base32 characters a-z, 2-7, or "
                             "the name of a [peer NAME] section or an alias)");
        }
        /* Resolved in finish(): the peer or alias may come later in the file. */
        memcpy(p->exit_name, value, strlen(value) + 1);
        lower(p->exit_name);
        c->has_exit_node = false;
        return 0;
    case S_ALLOW_PRIVATE:
        return set_bool(&c->allow_private, section, key, value, err, errsz);
    case S_SOCKS5_ENABLED:
        return set_bool(&c->socks5_enabled, section, key, value, err, errsz);
    case S_HTTP_ENABLED:
        return set_bool(&c->http_enabled, section, key, value, err, errsz);
    case S_ALLOW_UNKNOWN:
        return set_bool(&c->allow_unknown, section, key, value, err, errsz);
    case S_MDNS_ENABLED:
        return set_bool(&c->mdns_enabled, section, key, value, err, errsz);
    case S_NAT_PORTMAP: {
        bool on;
        if (strcasecmp(value, "upnp") == 0) {
            c->nat_portmap = KM_PORTMAP_UPNP;
        } else if (strcasecmp(value, "natpmp") == 0) {
            c->nat_portmap = KM_PORTMAP_NATPMP;
        } else if (km_conf_bool(value, &on) == 0) {
            c->nat_portmap = on ? KM_PORTMAP_ANY : KM_PORTMAP_OFF;
        } else {
            return bad_value(err, errsz, section, key, value, "on, off, upnp or natpmp");
        }
        return 0;
    }
    case S_NAT_LEASE: {
        uint64_t ms;
        if (km_conf_duration_ms(value, &ms) != 0 || ms < KM_PORTMAP_LEASE_MIN_S * 1000u ||
            ms > KM_PORTMAP_LEASE_MAX_S * 1000u) {
            return bad_value(err, errsz, section, key, value, "a duration from 2m to 1d (like 1h)");
        }
        c->nat_portmap_lease_s = (uint32_t)(ms / 1000);
        return 0;
    }
    case S_NAT_RETRY: {
        uint64_t ms;
        if (km_conf_duration_ms(value, &ms) != 0 || ms < 1000 || ms > KM_PORTMAP_RETRY_MAX_MS) {
            return bad_value(err, errsz, section, key, value,
                             "a duration from 1s to 10m (like 30s)");
        }
        c->nat_portmap_retry_ms = (uint32_t)ms;
        return 0;
    }
    case S_GW_ENABLED:
        return set_bool(&c->gateway_enabled, section, key, value, err, errsz);
    case S_NAT_PUNCH:
        return set_bool(&c->nat_punch, section, key, value, err, errsz);
    case S_GW_MAX_STREAMS:
        return set_count(&c->gateway_max_streams, section, key, value, err, errsz);
    case S_GW_MAX_BYTES:
        if (km_conf_size(value, &c->gateway_max_bytes) != 0) {
            return bad_value(err, errsz, section, key, value, "a size (like 10G; 0 = no limit)");
        }
        return 0;
    case S_NAT_EXT_ADDR: {
        struct in_addr a;
        if (strlen(value) >= sizeof c->nat_external_address || inet_pton(AF_INET, value, &a) != 1) {
            return bad_value(err, errsz, section, key, value, "an IPv4 address");
        }
        memcpy(c->nat_external_address, value, strlen(value) + 1);
        return 0;
    }
    case S_MDNS_IFACES: {
        /* Names separated by commas or blanks (IFNAMSIZ is 16 with the NUL). */
        c->n_mdns_ifaces = 0;
        const char *q = value;
        while (*q != '\0') {
            while (*q == ',' || *q == ' ' || *q == '\t') {
                q++;
            }
            size_t n = strcspn(q, ", \t");
            if (n == 0) {
                break;
            }
            if (n >= sizeof c->mdns_ifaces[0] || c->n_mdns_ifaces >= 8) {
                return bad_value(err, errsz, section, key, value,
                                 "up to 8 interface names of at most 15 characters");
            }
            memcpy(c->mdns_ifaces[c->n_mdns_ifaces], q, n);
            c->mdns_ifaces[c->n_mdns_ifaces][n] = '\0';
            c->n_mdns_ifaces++;
            q += n;
        }
        return 0;
    }
    case S_PUB_ENABLED:
        return set_bool(&c->publish_enabled, section, key, value, err, errsz);
    case S_PUB_TCP:
        return set_bool(&c->publish_tcp, section, key, value, err, errsz);
    case S_PUB_SERVER: {
        struct km_conf_addr a;
        if (km_conf_listen_addr(value, NULL, &a) != 0) {
            return bad_value(err, errsz, section, key, value,
                             "a server address (expected IPV4:PORT or [IPV6]:PORT)");
        }
        c->publish_server = a;
        return 0;
    }
    case S_PUB_ZONE:
        if (km_suffix_check(value) != 0 || strlen(value) >= sizeof c->publish_zone) {
            return bad_value(err, errsz, section, key, value,
                             "a DNS zone (labels of a-z, 0-9 and '-', no trailing dot)");
        }
        memcpy(c->publish_zone, value, strlen(value) + 1);
        lower(c->publish_zone);
        return 0;
    case S_PUB_TSIG_NAME:
        return set_string(c->publish_tsig_name, sizeof c->publish_tsig_name, section, key, value,
                          err, errsz);
    case S_PUB_TSIG_ALG:
        if (strcmp(value, "hmac-sha256") != 0 && strcmp(value, "hmac-sha384") != 0 &&
            strcmp(value, "hmac-sha512") != 0 && strcmp(value, "hmac-sha1") != 0) {
            return bad_value(err, errsz, section, key, value,
                             "a TSIG algorithm (hmac-sha256, hmac-sha384, hmac-sha512, hmac-sha1)");
        }
        memcpy(c->publish_tsig_algorithm, value, strlen(value) + 1);
        return 0;
    case S_PUB_TSIG_SECRET_FILE:
        return set_string(c->publish_tsig_secret_file, sizeof c->publish_tsig_secret_file, section,
                          key, value, err, errsz);
    case S_PUB_TTL: {
        uint64_t ms;
        if (km_conf_duration_ms(value, &ms) != 0 || ms < 1000 || ms > 86400000) {
            return bad_value(err, errsz, section, key, value,
                             "a duration from 1s to 1d (like 60s or 5m)");
        }
        c->publish_ttl_s = (uint32_t)(ms / 1000);
        return 0;
    }
    case S_DNS_ENABLED:
        return set_bool(&c->dns_enabled, section, key, value, err, errsz);
    case S_DNS_TTL: {
        uint64_t ms;
        if (km_conf_duration_ms(value, &ms) != 0 || ms < 1000 || ms > 86400000) {
            return bad_value(err, errsz, section, key, value,
                             "a duration from 1s to 1d (like 60s or 5m)");
        }
        c->dns_ttl_s = (uint32_t)(ms / 1000);
        return 0;
    }
    case S_DNS_RATE_LIMIT: {
        uint64_t v;
        if (km_conf_size(value, &v) != 0 || v > 1000000) {
            return bad_value(err, errsz, section, key, value,
                             "responses per second per source (0 = no limit, at most 1000000)");
        }
        c->dns_rate_limit = (unsigned)v;
        return 0;
    }
    case S_SOCKS5_USERNAME:
        return set_secret(c->socks5_username, sizeof c->socks5_username, section, key, value, err,
                          errsz);
    case S_SOCKS5_PASSWORD:
        return set_secret(c->socks5_password, sizeof c->socks5_password, section, key, value, err,
                          errsz);
    case S_TUN_ENABLED:
        return set_bool(&c->tun_enabled, section, key, value, err, errsz);
    case S_TUN_NAME:
        if (value[0] == '\0' || strlen(value) >= sizeof c->tun_name ||
            strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") !=
                strlen(value)) {
            return bad_value(err, errsz, section, key, value,
                             "an interface name (1 to 15 letters, digits, '-', '_' or '.')");
        }
        memcpy(c->tun_name, value, strlen(value) + 1);
        return 0;
    case S_TUN_MTU: {
        uint64_t v;
        int r = set_count(&v, section, key, value, err, errsz);
        if (r != 0) {
            return r;
        }
        if (v < 1280) {
            return bad_value(err, errsz, section, key, value,
                             "an MTU from 1280 (the IPv6 minimum) to 65535");
        }
        c->tun_mtu = (unsigned)v;
        return 0;
    }
    case S_TUN_MAX_FLOWS: {
        uint64_t v;
        int r = set_count(&v, section, key, value, err, errsz);
        c->tun_max_flows = (unsigned)v;
        return r;
    }
    case S_CAP_ACCOUNT:
        if (!account_name_ok(value, sizeof c->cap_account)) {
            return bad_value(err, errsz, section, key, value,
                             "a local account name (letters, digits, '_', '-', '.'; at most 32)");
        }
        memcpy(c->cap_account, value, strlen(value) + 1);
        return 0;
    case S_CAP_SKEW: {
        uint64_t ms;
        if (km_conf_duration_ms(value, &ms) != 0 || ms > 3600000) {
            return bad_value(err, errsz, section, key, value,
                             "a duration from 0 to 1h (like 60s or 5m)");
        }
        c->cap_skew_s = (uint32_t)(ms / 1000);
        return 0;
    }
    case S_N:
    default:
        break;
    }
    return KM_ERR_CONFIG;
}

/* [cap] account_for = NODE-ID ACCOUNT: the account this grantee's sessions run as;
 * repeatable, one per grantee. */
static int add_account_for(struct km_config *c, const char *section, const char *key,
                           const char *value, char *err, size_t errsz)
{
    const char *sp = strpbrk(value, " \t");
    struct km_pubkey k;
    const char *acct = sp;
    while (acct != NULL && (*acct == ' ' || *acct == '\t')) {
        acct++;
    }
    if (sp == NULL || km_node_id_parse(value, (size_t)(sp - value), &k) != 0 ||
        !account_name_ok(acct, sizeof c->cap_accounts[0].account)) {
        return bad_value(err, errsz, section, key, value,
                         "NODE-ID ACCOUNT (a grantee's node ID and a local account name)");
    }
    for (size_t i = 0; i < c->n_cap_accounts; i++) {
        if (km_pubkey_equal(&c->cap_accounts[i].key, &k)) {
            msg(err, errsz, "[%s] %s: this node ID already has an account", section, key);
            return KM_ERR_CONFIG;
        }
    }
    if (c->n_cap_accounts >= KM_CONFIG_MAX_ACCOUNTS) {
        msg(err, errsz, "[%s] %s: too many entries (max %u)", section, key, KM_CONFIG_MAX_ACCOUNTS);
        return KM_ERR_CONFIG;
    }
    c->cap_accounts[c->n_cap_accounts].key = k;
    memcpy(c->cap_accounts[c->n_cap_accounts].account, acct, strlen(acct) + 1);
    c->n_cap_accounts++;
    return 0;
}

/* [cap] owner: a node ID or an OpenSSH ed25519 public key line; repeatable. */
static int add_owner(struct km_config *c, const char *section, const char *key, const char *value,
                     char *err, size_t errsz)
{
    struct km_pubkey k;
    if (km_node_id_parse(value, strlen(value), &k) != 0 &&
        km_pubkey_parse(value, strlen(value), &k) != 0) {
        return bad_value(err, errsz, section, key, value,
                         "an owner key (a node ID or an \"ssh-ed25519 ...\" public key line)");
    }
    for (size_t i = 0; i < c->n_cap_owners; i++) {
        if (km_pubkey_equal(&c->cap_owners[i], &k)) {
            return 0;
        }
    }
    if (c->n_cap_owners >= KM_CONFIG_MAX_OWNERS) {
        msg(err, errsz, "[%s] %s: too many owner keys (max %u)", section, key,
            KM_CONFIG_MAX_OWNERS);
        return KM_ERR_CONFIG;
    }
    c->cap_owners[c->n_cap_owners++] = k;
    return 0;
}

/* The schema: every single-valued key. `listen`, `expose`, [peer NAME] and [aliases] are
 * handled apart. */
static const struct {
    const char *section;
    const char *key;
    enum single id;
} keys[] = {
    {"node", "key_file", S_KEY_FILE},
    {"node", "suffix", S_SUFFIX},
    {"node", "prefix", S_PREFIX},
    {"log", "level", S_LOG_LEVEL},
    {"control", "socket", S_CONTROL_SOCKET},
    {"mesh", "idle_timeout", S_IDLE_TIMEOUT},
    {"mesh", "connect_timeout", S_CONNECT_TIMEOUT},
    {"mesh", "keepalive", S_KEEPALIVE},
    {"mesh", "login_grace", S_LOGIN_GRACE},
    {"mesh", "max_sessions", S_MAX_SESSIONS},
    {"mesh", "max_channels", S_MAX_CHANNELS},
    {"mesh", "ciphers", S_CIPHERS},
    {"egress", "policy", S_POLICY},
    {"egress", "exit_node", S_EXIT_NODE},
    {"egress", "allow_private", S_ALLOW_PRIVATE},
    {"socks5", "enabled", S_SOCKS5_ENABLED},
    {"socks5", "username", S_SOCKS5_USERNAME},
    {"socks5", "password", S_SOCKS5_PASSWORD},
    {"http", "enabled", S_HTTP_ENABLED},
    {"dns", "enabled", S_DNS_ENABLED},
    {"dns", "ttl", S_DNS_TTL},
    {"dns", "rate_limit", S_DNS_RATE_LIMIT},
    {"mesh", "allow_unknown", S_ALLOW_UNKNOWN},
    {"mdns", "enabled", S_MDNS_ENABLED},
    {"mdns", "interfaces", S_MDNS_IFACES},
    {"publish", "enabled", S_PUB_ENABLED},
    {"publish", "server", S_PUB_SERVER},
    {"publish", "zone", S_PUB_ZONE},
    {"publish", "tsig_name", S_PUB_TSIG_NAME},
    {"publish", "tsig_algorithm", S_PUB_TSIG_ALG},
    {"publish", "tsig_secret_file", S_PUB_TSIG_SECRET_FILE},
    {"publish", "ttl", S_PUB_TTL},
    {"publish", "tcp", S_PUB_TCP},
    {"tun", "enabled", S_TUN_ENABLED},
    {"tun", "name", S_TUN_NAME},
    {"tun", "mtu", S_TUN_MTU},
    {"tun", "max_flows", S_TUN_MAX_FLOWS},
    {"cap", "account", S_CAP_ACCOUNT},
    {"cap", "clock_skew", S_CAP_SKEW},
    {"nat", "portmap", S_NAT_PORTMAP},
    {"nat", "portmap_lease", S_NAT_LEASE},
    {"nat", "portmap_retry", S_NAT_RETRY},
    {"nat", "external_address", S_NAT_EXT_ADDR},
    {"nat", "punch", S_NAT_PUNCH},
    {"gateway", "enabled", S_GW_ENABLED},
    {"gateway", "max_streams", S_GW_MAX_STREAMS},
    {"gateway", "max_bytes", S_GW_MAX_BYTES},
};

static const char *const sections[] = {"node",   "log",  "control", "mesh",    "egress",
                                       "socks5", "http", "dns",     "mdns",    "publish",
                                       "cap",    "nat",  "gateway", "aliases", "tun"};

static bool is_peer_section(const char *section)
{
    return strncmp(section, "peer", 4) == 0 &&
           (section[4] == '\0' || isspace((unsigned char)section[4]));
}

static int on_section(void *ctx, const char *section, int line, char *err, size_t errsz)
{
    struct parse *p = ctx;
    int r = close_peer(p);
    if (r != 0) {
        msg(err, errsz, "%s", p->close_msg);
        return r;
    }
    if (is_peer_section(section)) {
        return open_peer(p, section, line, err, errsz);
    }
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        if (strcmp(section, sections[i]) == 0) {
            return 0;
        }
    }
    char q[QUOTE_LEN];
    msg(err, errsz,
        "unknown section [%s] (expected node, log, control, mesh, peer NAME, egress, socks5, "
        "http, dns, mdns, publish, cap, nat, gateway, aliases or tun)",
        esc(q, section));
    return KM_ERR_CONFIG;
}

static int on_key(void *ctx, const char *section, const char *key, const char *value, int line,
                  char *err, size_t errsz)
{
    struct parse *p = ctx;
    char q[QUOTE_LEN];
    if (section[0] == '\0') {
        msg(err, errsz, "key \"%s\" is outside any section (add a [section] header above it)",
            esc(q, key));
        return KM_ERR_CONFIG;
    }
    if (strcmp(section, "aliases") == 0) {
        return add_alias(p, key, value, line, err, errsz);
    }
    if (p->cur_peer < KM_CONFIG_MAX_PEERS) {
        return peer_key(p, section, key, value, line, err, errsz);
    }
    for (int s = 0; s < L_N; s++) {
        if (strcmp(section, lsec_name[s]) == 0 && strcmp(key, "listen") == 0) {
            return add_listen(p, (enum lsec)s, value, line, err, errsz);
        }
    }
    if (strcmp(section, "cap") == 0 && strcmp(key, "owner") == 0) {
        return add_owner(p->c, section, key, value, err, errsz);
    }
    if (strcmp(section, "cap") == 0 && strcmp(key, "account_for") == 0) {
        return add_account_for(p->c, section, key, value, err, errsz);
    }
    if (strcmp(section, "nat") == 0 && strcmp(key, "gateway") == 0) {
        struct km_config *c = p->c;
        if (c->n_nat_gateways >= KM_CONFIG_MAX_GATEWAYS) {
            msg(err, errsz, "[nat] gateway: too many gateways (max %d)", KM_CONFIG_MAX_GATEWAYS);
            return KM_ERR_CONFIG;
        }
        struct km_pubkey k;
        if (km_node_id_parse(value, strlen(value), &k) != 0 &&
            (!is_label(value) || strlen(value) >= sizeof c->nat_gateways[0])) {
            return bad_value(err, errsz, section, key, value,
                             "a node ID or the name of a [peer NAME] section");
        }
        memcpy(c->nat_gateways[c->n_nat_gateways], value, strlen(value) + 1);
        lower(c->nat_gateways[c->n_nat_gateways++]);
        return 0;
    }
    if (strcmp(section, "mesh") == 0 && strcmp(key, "expose") == 0) {
        return add_ports(p->c->mesh_expose, &p->c->n_mesh_expose, section, key, value, err, errsz);
    }
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (strcmp(section, keys[i].section) == 0 && strcmp(key, keys[i].key) == 0) {
            int r = once(&p->single_line[keys[i].id], section, key, line, err, errsz);
            if (r != 0) {
                return r;
            }
            return set_single(p, keys[i].id, section, key, value, err, errsz);
        }
    }
    /* on_section has refused unknown sections already. */
    msg(err, errsz, "unknown key \"%s\" in [%s]", esc(q, key), section);
    return KM_ERR_CONFIG;
}

struct lref {
    enum lsec sec;
    size_t i;
    int line;
};

/* After the whole file: every pair of effective listeners of the enabled services must be
 * bindable together. The later of two conflicting entries (in file order, defaults first) is
 * the one reported, at its own line. */
static int check_listeners(struct parse *p, const char *filename, char *err, size_t errsz)
{
    struct km_config *c = p->c;
    struct lref all[L_N * KM_CONFIG_MAX_LISTEN];
    size_t n_all = 0;
    for (int s = 0; s < L_N; s++) {
        if ((s == L_SOCKS5 && !c->socks5_enabled) || (s == L_HTTP && !c->http_enabled) ||
            (s == L_DNS && !c->dns_enabled)) {
            continue;
        }
        size_t *n;
        (void)listen_arr(c, (enum lsec)s, &n);
        for (size_t i = 0; i < *n && i < KM_CONFIG_MAX_LISTEN; i++) {
            all[n_all++] = (struct lref){(enum lsec)s, i, p->listen_line[s][i]};
        }
    }
    /* Stable insertion sort by line: at most 24 entries. */
    for (size_t i = 1; i < n_all; i++) {
        struct lref t = all[i];
        size_t j = i;
        while (j > 0 && all[j - 1].line > t.line) {
            all[j] = all[j - 1];
            j--;
        }
        all[j] = t;
    }
    for (size_t j = 1; j < n_all; j++) {
        size_t *nj;
        const struct km_conf_addr *b = &listen_arr(c, all[j].sec, &nj)[all[j].i];
        for (size_t i = 0; i < j; i++) {
            size_t *ni;
            const struct km_conf_addr *a = &listen_arr(c, all[i].sec, &ni)[all[i].i];
            if (!km_conf_addr_conflict(a, b)) {
                continue;
            }
            char as[64];
            char bs[64];
            addr_str(a, as);
            addr_str(b, bs);
            char where[32] = " (default)";
            if (all[i].line > 0) {
                (void)snprintf(where, sizeof where, " on line %d", all[i].line);
            }
            msg(err, errsz, "%s:%d: [%s] listen %s conflicts with [%s] listen %s%s", filename,
                all[j].line, lsec_name[all[j].sec], bs, lsec_name[all[i].sec], as, where);
            return KM_ERR_CONFIG;
        }
    }
    return 0;
}

/* [egress]: resolve an exit_node name now that every peer and alias is known, then require
 * an exit node for policy = exit. */
static int check_egress(struct parse *p, const char *filename, char *err, size_t errsz)
{
    struct km_config *c = p->c;
    if (p->exit_name[0] != '\0') {
        const struct km_pubkey *k = km_config_alias(c, p->exit_name);
        if (k == NULL) {
            msg(err, errsz,
                "%s:%d: [egress] exit_node: no [peer %s] section or alias \"%s\" (expected a "
                "node ID, a peer name or an alias)",
                filename, p->single_line[S_EXIT_NODE], p->exit_name, p->exit_name);
            return KM_ERR_CONFIG;
        }
        c->exit_node = *k;
        c->has_exit_node = true;
    }
    if (c->egress == KM_EGRESS_EXIT && !c->has_exit_node) {
        msg(err, errsz, "%s:%d: [egress] policy = exit needs exit_node", filename,
            p->single_line[S_POLICY]);
        return KM_ERR_CONFIG;
    }
    return 0;
}

/* [socks5]: RFC 1929 needs both a user name and a password, or neither. */
static int check_socks5_auth(struct parse *p, const char *filename, char *err, size_t errsz)
{
    int user_line = p->single_line[S_SOCKS5_USERNAME];
    int pass_line = p->single_line[S_SOCKS5_PASSWORD];
    if (user_line != 0 && pass_line == 0) {
        msg(err, errsz,
            "%s:%d: [socks5] username is set but password is not (set both or "
            "neither)",
            filename, user_line);
        return KM_ERR_CONFIG;
    }
    if (pass_line != 0 && user_line == 0) {
        msg(err, errsz,
            "%s:%d: [socks5] password is set but username is not (set both or "
            "neither)",
            filename, pass_line);
        return KM_ERR_CONFIG;
    }
    return 0;
}

/* After the reader: move a section-end error to its header line, then run the whole-file
 * checks. */
static int finish(struct parse *p, int r, const char *filename, char *err, size_t errsz)
{
    if (r == 0 && close_peer(p) != 0) {
        r = KM_ERR_CONFIG;
    }
    if (p->close_line != 0) {
        if (r == KM_ERR_CONFIG) {
            msg(err, errsz, "%s:%d: %s", filename, p->close_line, p->close_msg);
        }
        return r;
    }
    if (r != 0) {
        return r;
    }
    if (r == 0 && p->c->publish_enabled &&
        (p->c->publish_server.port == 0 || p->c->publish_tsig_name[0] == '\0' ||
         p->c->publish_tsig_secret_file[0] == '\0')) {
        msg(err, errsz, "%s:%d: [publish] enabled needs server, tsig_name and tsig_secret_file",
            filename, p->single_line[S_PUB_ENABLED]);
        return KM_ERR_CONFIG;
    }
    if ((r = check_listeners(p, filename, err, errsz)) != 0 ||
        (r = check_egress(p, filename, err, errsz)) != 0 ||
        (r = check_socks5_auth(p, filename, err, errsz)) != 0) {
        return r;
    }
    return 0;
}

void km_config_defaults(struct km_config *c)
{
    memset(c, 0, sizeof *c);
    memcpy(c->key_file, "node.key", sizeof "node.key");
    memcpy(c->suffix, KM_DEFAULT_SUFFIX, sizeof KM_DEFAULT_SUFFIX);
    c->prefix = KM_DEFAULT_PREFIX;
    c->log_level = KM_LOG_INFO;
    memcpy(c->control_socket, "control.sock", sizeof "control.sock");
    c->mesh_listen[0] = (struct km_conf_addr){.host = "::", .port = 15022};
    c->n_mesh_listen = 1;
    c->idle_timeout_ms = 300000;
    c->connect_timeout_ms = 5000;
    c->keepalive_ms = 15000;
    c->login_grace_ms = 10000;
    c->max_sessions = 256;
    c->max_channels = 2048;
    c->ciphers = KM_CIPHER_AUTO;
    c->egress = KM_EGRESS_REFUSE;
    c->allow_private = false;
    c->cap_skew_s = 60;
    c->socks5_enabled = true;
    c->socks5_listen[0] = (struct km_conf_addr){.host = "127.0.0.1", .port = 1080};
    c->n_socks5_listen = 1;
    c->http_enabled = true;
    c->http_listen[0] = (struct km_conf_addr){.host = "127.0.0.1", .port = 8080};
    c->n_http_listen = 1;
    c->dns_enabled = true;
    c->dns_listen[0] = (struct km_conf_addr){.host = "127.0.0.1", .port = 5354};
    c->n_dns_listen = 1;
    c->dns_ttl_s = 60;
    c->dns_rate_limit = 0;
    c->mdns_enabled = true;
    c->publish_enabled = false;
    memcpy(c->publish_tsig_algorithm, "hmac-sha256", sizeof "hmac-sha256");
    c->publish_ttl_s = 60;
    c->tun_enabled = false;
    memcpy(c->tun_name, "keymesh0", sizeof "keymesh0");
    c->tun_mtu = 1500;
    c->tun_max_flows = 4096;
    c->nat_portmap = KM_PORTMAP_ANY;
    c->nat_punch = true;
    c->nat_portmap_lease_s = 3600;
    c->nat_portmap_retry_ms = KM_PORTMAP_RETRY_MIN_MS;
    c->gateway_max_streams = 64;
    c->gateway_max_bytes = 0;
}

static void parse_init(struct parse *p, struct km_config *c)
{
    memset(p, 0, sizeof *p);
    p->c = c;
    p->cur_peer = SIZE_MAX;
}

int km_config_parse(struct km_config *c, const char *text, size_t len, const char *filename,
                    char *err, size_t errsz)
{
    struct parse p;
    parse_init(&p, c);
    if (filename == NULL) {
        filename = "<config>";
    }
    int r = km_conf_parse(text, len, filename, on_key, on_section, &p, err, errsz);
    return finish(&p, r, filename, err, errsz);
}

int km_config_load(struct km_config *c, const char *path, char *err, size_t errsz)
{
    struct parse p;
    parse_init(&p, c);
    km_config_defaults(c);
    int r = km_conf_parse_file(path, on_key, on_section, &p, err, errsz);
    return finish(&p, r, path, err, errsz);
}

const struct km_pubkey *km_config_alias(const struct km_config *c, const char *name)
{
    if (name[0] == '\0') {
        return NULL;
    }
    for (size_t i = 0; i < c->n_aliases && i < KM_CONFIG_MAX_ALIASES; i++) {
        if (strcasecmp(c->aliases[i].name, name) == 0) {
            return &c->aliases[i].key;
        }
    }
    const struct km_config_peer *peer = peer_by_label(c, name, NULL);
    return peer != NULL ? &peer->key : NULL;
}
