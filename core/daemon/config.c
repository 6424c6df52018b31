/* keymesh's configuration schema (docs/CONFIG.md). core/conf.c does the INI reading and
 * reports "<file>:<line>:"; this file knows the sections, keys, defaults and checks.
 *
 * Single-valued keys may appear once. `listen` is repeatable: the first one in a section
 * replaces that section's defaults. Listener conflicts are checked once at the end, over the
 * effective listeners of the enabled services only, so a default that the file replaced or
 * disabled never causes an error. */
#include "core/daemon/config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Longest escaped key or value quoted in a message; longer ones end in "...". */
#define QUOTE_LEN 100

enum lsec { L_MESH, L_SOCKS5, L_HTTP, L_N };

static const char *const lsec_name[L_N] = {"mesh", "socks5", "http"};
static const char *const lsec_def_host[L_N] = {"::", "127.0.0.1", "127.0.0.1"};

/* Single-valued keys, for the duplicate check. */
enum single {
    S_KEY_FILE,
    S_SUFFIX,
    S_PREFIX,
    S_LOG_LEVEL,
    S_CONTROL_SOCKET,
    S_SOCKS5_ENABLED,
    S_HTTP_ENABLED,
    S_N
};

struct parse {
    struct km_config *c;
    int single_line[S_N];                       /* 0: not set by the file yet */
    bool listen_set[L_N];                       /* the file replaced the defaults */
    int listen_line[L_N][KM_CONFIG_MAX_LISTEN]; /* 0: a default */
    int alias_line[KM_CONFIG_MAX_ALIASES];
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

static int add_alias(struct parse *p, const char *name, const char *value, int line, char *err,
                     size_t errsz)
{
    struct km_config *c = p->c;
    char q[QUOTE_LEN];
    if (!is_label(name)) {
        msg(err, errsz,
            "[aliases] \"%s\" is not an alias name (expected one DNS label: 1-63 of a-z, 0-9 "
            "and '-', not starting or ending with '-')",
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
    if (km_node_id_parse(value, strlen(value), &key) != 0) {
        return bad_value(err, errsz, "aliases", lname, value,
                         "a node ID (expected 52 base32 characters a-z, 2-7)");
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

/* Claim a single-valued key: refuses the second occurrence. */
static int once(struct parse *p, enum single s, const char *section, const char *key, int line,
                char *err, size_t errsz)
{
    if (p->single_line[s] != 0) {
        msg(err, errsz, "[%s] duplicate key \"%s\" (first set on line %d)", section, key,
            p->single_line[s]);
        return KM_ERR_CONFIG;
    }
    p->single_line[s] = line;
    return 0;
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
    case S_SOCKS5_ENABLED:
    case S_HTTP_ENABLED:
        if (km_conf_bool(value, s == S_SOCKS5_ENABLED ? &c->socks5_enabled : &c->http_enabled) !=
            0) {
            return bad_value(err, errsz, section, key, value, "a boolean (expected true or false)");
        }
        return 0;
    case S_N:
    default:
        break;
    }
    return KM_ERR_CONFIG;
}

/* The schema: every single-valued key. `listen` and [aliases] are handled apart. */
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
    {"socks5", "enabled", S_SOCKS5_ENABLED},
    {"http", "enabled", S_HTTP_ENABLED},
};

static const char *const sections[] = {"node",   "log",  "control", "mesh",
                                       "socks5", "http", "aliases"};

static int on_section(void *ctx, const char *section, int line, char *err, size_t errsz)
{
    (void)ctx;
    (void)line;
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        if (strcmp(section, sections[i]) == 0) {
            return 0;
        }
    }
    char q[QUOTE_LEN];
    msg(err, errsz,
        "unknown section [%s] (expected node, log, control, mesh, socks5, http or aliases)",
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
    for (int s = 0; s < L_N; s++) {
        if (strcmp(section, lsec_name[s]) == 0 && strcmp(key, "listen") == 0) {
            return add_listen(p, (enum lsec)s, value, line, err, errsz);
        }
    }
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (strcmp(section, keys[i].section) == 0 && strcmp(key, keys[i].key) == 0) {
            int r = once(p, keys[i].id, section, key, line, err, errsz);
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
        if ((s == L_SOCKS5 && !c->socks5_enabled) || (s == L_HTTP && !c->http_enabled)) {
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
    c->socks5_enabled = true;
    c->socks5_listen[0] = (struct km_conf_addr){.host = "127.0.0.1", .port = 1080};
    c->n_socks5_listen = 1;
    c->http_enabled = true;
    c->http_listen[0] = (struct km_conf_addr){.host = "127.0.0.1", .port = 8080};
    c->n_http_listen = 1;
}

int km_config_parse(struct km_config *c, const char *text, size_t len, const char *filename,
                    char *err, size_t errsz)
{
    struct parse p;
    memset(&p, 0, sizeof p);
    p.c = c;
    if (filename == NULL) {
        filename = "<config>";
    }
    int r = km_conf_parse(text, len, filename, on_key, on_section, &p, err, errsz);
    if (r != 0) {
        return r;
    }
    return check_listeners(&p, filename, err, errsz);
}

int km_config_load(struct km_config *c, const char *path, char *err, size_t errsz)
{
    struct parse p;
    memset(&p, 0, sizeof p);
    p.c = c;
    km_config_defaults(c);
    int r = km_conf_parse_file(path, on_key, on_section, &p, err, errsz);
    if (r != 0) {
        return r;
    }
    return check_listeners(&p, path, err, errsz);
}

const struct km_pubkey *km_config_alias(const struct km_config *c, const char *name)
{
    for (size_t i = 0; i < c->n_aliases && i < KM_CONFIG_MAX_ALIASES; i++) {
        if (strcasecmp(c->aliases[i].name, name) == 0) {
            return &c->aliases[i].key;
        }
    }
    return NULL;
}
