/* Capability decisions: trust, revocation, validity, what is granted. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cap/policy.h"
#include "identity/derive.h"

void km_cap_policy_init(struct km_cap_policy *p, const struct km_pubkey *self)
{
    memset(p, 0, sizeof *p);
    p->self = *self;
    p->skew_s = KM_CAP_SKEW_DEFAULT_S;
}

int km_cap_policy_add_signer(struct km_cap_policy *p, const struct km_pubkey *k)
{
    for (size_t i = 0; i < p->n_signers; i++) {
        if (km_pubkey_equal(&p->signers[i], k)) {
            return 0;
        }
    }
    if (p->n_signers == KM_CAP_MAX_SIGNERS) {
        return KM_ERR_TOO_LARGE;
    }
    p->signers[p->n_signers++] = *k;
    return 0;
}

bool km_cap_policy_serial_revoked(const struct km_cap_policy *p, uint64_t serial)
{
    for (size_t i = 0; i < p->n_revoked_serials; i++) {
        if (p->revoked_serials[i] == serial) {
            return true;
        }
    }
    return false;
}

bool km_cap_policy_key_revoked(const struct km_cap_policy *p, const struct km_pubkey *k)
{
    for (size_t i = 0; i < p->n_revoked_keys; i++) {
        if (km_pubkey_equal(&p->revoked_keys[i], k)) {
            return true;
        }
    }
    return false;
}

/* One revocation entry (a line without its end), trimmed. */
static int revocation_line(struct km_cap_policy *p, const char *s, size_t n)
{
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) {
        n--;
    }
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    if (n == 0 || *s == '#') {
        return 0;
    }
    if (n > 7 && memcmp(s, "serial ", 7) == 0) {
        char num[24];
        if (n - 7 >= sizeof num) {
            return KM_ERR_INVALID;
        }
        memcpy(num, s + 7, n - 7);
        num[n - 7] = '\0';
        char *end;
        errno = 0;
        unsigned long long v = strtoull(num, &end, 10);
        if (num[0] < '0' || num[0] > '9' || *end != '\0' || errno != 0) {
            return KM_ERR_INVALID;
        }
        if (km_cap_policy_serial_revoked(p, v)) {
            return 0;
        }
        if (p->n_revoked_serials == KM_CAP_MAX_REVOKED) {
            return KM_ERR_TOO_LARGE;
        }
        p->revoked_serials[p->n_revoked_serials++] = (uint64_t)v;
        return 0;
    }
    if (n > 4 && memcmp(s, "key ", 4) == 0) {
        struct km_pubkey k;
        if (km_node_id_parse(s + 4, n - 4, &k) != 0 && km_pubkey_parse(s + 4, n - 4, &k) != 0) {
            return KM_ERR_INVALID;
        }
        if (km_cap_policy_key_revoked(p, &k)) {
            return 0;
        }
        if (p->n_revoked_keys == KM_CAP_MAX_REVOKED) {
            return KM_ERR_TOO_LARGE;
        }
        p->revoked_keys[p->n_revoked_keys++] = k;
        return 0;
    }
    return KM_ERR_INVALID;
}

int km_cap_policy_add_revocations(struct km_cap_policy *p, const char *text, size_t len,
                                  size_t *line)
{
    *line = 0;
    if (len > KM_CAP_REVOKED_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    size_t off = 0;
    size_t no = 0;
    while (off < len) {
        const char *nl = memchr(text + off, '\n', len - off);
        size_t n = nl != NULL ? (size_t)(nl - (text + off)) : len - off;
        no++;
        if (memchr(text + off, '\0', n) != NULL) {
            *line = no;
            return KM_ERR_INVALID;
        }
        int r = revocation_line(p, text + off, n);
        if (r != 0) {
            *line = no;
            return r;
        }
        off += n + (nl != NULL ? 1 : 0);
    }
    return 0;
}

/* ---- source-address ---- */

static bool prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8;
    if (memcmp(a, b, whole) != 0) {
        return false;
    }
    unsigned rest = bits % 8;
    if (rest == 0) {
        return true;
    }
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

/* addr as 16 bytes (IPv4 mapped into ::ffff:0:0/96); family in *v4. */
static bool parse_ip(const char *s, uint8_t out[16], bool *v4)
{
    struct in_addr a4;
    if (inet_pton(AF_INET, s, &a4) == 1) {
        memset(out, 0, 10);
        out[10] = 0xff;
        out[11] = 0xff;
        memcpy(out + 12, &a4, 4);
        *v4 = true;
        return true;
    }
    *v4 = false;
    if (inet_pton(AF_INET6, s, out) != 1) {
        return false;
    }
    /* An IPv4-mapped IPv6 peer address is its IPv4 address. */
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    *v4 = memcmp(out, mapped, 12) == 0;
    return true;
}

static bool entry_match(const uint8_t peer[16], bool peer_v4, const char *e)
{
    char ip[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(e, '/');
    size_t iplen = slash != NULL ? (size_t)(slash - e) : strlen(e);
    if (iplen == 0 || iplen >= sizeof ip) {
        return false;
    }
    memcpy(ip, e, iplen);
    ip[iplen] = '\0';
    uint8_t net[16];
    bool v4;
    if (!parse_ip(ip, net, &v4)) {
        return false;
    }
    unsigned bits = v4 ? 32 : 128;
    if (slash != NULL) {
        char *end;
        unsigned long b = strtoul(slash + 1, &end, 10);
        if (slash[1] < '0' || slash[1] > '9' || *end != '\0' || b > bits) {
            return false;
        }
        bits = (unsigned)b;
    }
    if (v4 != peer_v4) {
        return false;
    }
    return prefix_match(peer, net, v4 ? 96 + bits : bits);
}

bool km_cap_addr_in_list(const char *addr, const char *list)
{
    uint8_t peer[16];
    bool v4;
    if (addr == NULL || !parse_ip(addr, peer, &v4)) {
        return false;
    }
    char e[80];
    const char *s = list;
    while (*s != '\0') {
        const char *comma = strchr(s, ',');
        size_t n = comma != NULL ? (size_t)(comma - s) : strlen(s);
        if (n > 0 && n < sizeof e) {
            memcpy(e, s, n);
            e[n] = '\0';
            if (entry_match(peer, v4, e)) {
                return true;
            }
        }
        if (comma == NULL) {
            break;
        }
        s = comma + 1;
    }
    return false;
}

/* ---- the decision ---- */

static bool names_self(const struct km_cap_policy *p, const struct km_cert *c)
{
    for (size_t i = 0; i < c->n_principals; i++) {
        struct km_pubkey k;
        const char *pr = c->principals[i];
        if (km_node_id_parse(pr, strlen(pr), &k) == 0 && km_pubkey_equal(&k, &p->self)) {
            return true;
        }
    }
    return false;
}

static bool trusted_signer(const struct km_cap_policy *p, const struct km_pubkey *k)
{
    if (km_pubkey_equal(k, &p->self)) {
        return true;
    }
    for (size_t i = 0; i < p->n_signers; i++) {
        if (km_pubkey_equal(k, &p->signers[i])) {
            return true;
        }
    }
    return false;
}

static int refuse(char *why, size_t whysz, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int refuse(char *why, size_t whysz, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (whysz > 0) {
        vsnprintf(why, whysz, fmt, ap);
    }
    va_end(ap);
    return code;
}

/* Printable copy of untrusted text for a reason. */
static void safe(char *dst, size_t dstsz, const char *s)
{
    size_t o = 0;
    for (; *s != '\0' && o + 1 < dstsz; s++) {
        unsigned char ch = (unsigned char)*s;
        dst[o++] = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\' ? (char)ch : '?';
    }
    dst[o] = '\0';
}

int km_cap_check(const struct km_cap_policy *p, const uint8_t *blob, size_t len, uint64_t now_s,
                 const char *peer, struct km_cap_grant *out, char *why, size_t whysz)
{
    memset(out, 0, sizeof *out);
    if (whysz > 0) {
        why[0] = '\0';
    }
    struct km_cert *c = malloc(sizeof *c);
    if (c == NULL) {
        return refuse(why, whysz, -ENOMEM, "out of memory");
    }
    char id[KM_NODE_ID_LEN + 1];
    char txt[64];
    int r = km_cert_parse(blob, len, c);
    if (r != 0) {
        r = refuse(why, whysz, r, "malformed certificate (%s)", km_strerror(r));
        goto out;
    }
    if (c->type != KM_CERT_USER) {
        r = refuse(why, whysz, KM_ERR_REFUSED, "not a user certificate");
        goto out;
    }
    if (km_cert_verify_sig(c, blob, len) != 0) {
        r = refuse(why, whysz, KM_ERR_REFUSED, "bad signature");
        goto out;
    }
    if (!trusted_signer(p, &c->signer)) {
        km_node_id(&c->signer, id);
        r = refuse(why, whysz, KM_ERR_REFUSED, "signer %s is not trusted", id);
        goto out;
    }
    if (c->n_principals == 0) {
        r = refuse(why, whysz, KM_ERR_REFUSED, "no principals");
        goto out;
    }
    if (!names_self(p, c)) {
        r = refuse(why, whysz, KM_ERR_REFUSED, "principals do not name this node");
        goto out;
    }
    if (c->valid_after > c->valid_before) {
        r = refuse(why, whysz, KM_ERR_REFUSED, "empty validity window");
        goto out;
    }
    if (now_s + p->skew_s < c->valid_after) {
        r = refuse(why, whysz, KM_ERR_REFUSED,
                   "not yet valid (valid after %" PRIu64 ", now %" PRIu64 ")", c->valid_after,
                   now_s);
        goto out;
    }
    uint64_t ends =
        c->valid_before > UINT64_MAX - p->skew_s ? UINT64_MAX : c->valid_before + p->skew_s;
    if (now_s >= ends) {
        r = refuse(why, whysz, KM_ERR_REFUSED,
                   "expired (valid before %" PRIu64 ", now %" PRIu64 ")", c->valid_before, now_s);
        goto out;
    }
    if (km_cap_policy_serial_revoked(p, c->serial)) {
        r = refuse(why, whysz, KM_ERR_REFUSED, "serial %" PRIu64 " is revoked", c->serial);
        goto out;
    }
    if (km_cap_policy_key_revoked(p, &c->key)) {
        km_node_id(&c->key, id);
        r = refuse(why, whysz, KM_ERR_REFUSED, "key %s is revoked", id);
        goto out;
    }
    if (km_cap_policy_key_revoked(p, &c->signer)) {
        km_node_id(&c->signer, id);
        r = refuse(why, whysz, KM_ERR_REFUSED, "signer %s is revoked", id);
        goto out;
    }
    if (c->unknown_critical[0] != '\0') {
        safe(txt, sizeof txt, c->unknown_critical);
        r = refuse(why, whysz, KM_ERR_REFUSED, "unknown critical option \"%s\"", txt);
        goto out;
    }
    if (c->has_source_address && !km_cap_addr_in_list(peer, c->source_address)) {
        safe(txt, sizeof txt, peer != NULL ? peer : "unknown");
        r = refuse(why, whysz, KM_ERR_REFUSED, "source address %s is not allowed", txt);
        goto out;
    }
    out->key = c->key;
    out->signer = c->signer;
    out->serial = c->serial;
    out->valid_before = c->valid_before;
    out->ends_at = ends;
    memcpy(out->key_id, c->key_id, sizeof out->key_id);
    out->exec = c->has_force_command;
    if (out->exec) {
        memcpy(out->command, c->force_command, sizeof out->command);
    }
    out->shell = !out->exec && (c->ext & KM_CERT_EXT_SHELL) != 0;
    out->pty = (c->ext & KM_CERT_EXT_PTY) != 0;
    if ((c->ext & KM_CERT_EXT_PORT_FWD) && (c->ext & KM_CERT_EXT_PORTS)) {
        memcpy(out->ports, c->ports, sizeof out->ports);
        out->n_ports = c->n_ports;
    }
    out->expose = (c->ext & KM_CERT_EXT_EXPOSE) != 0;
    if (!out->shell && !out->exec && out->n_ports == 0 && !out->expose) {
        memset(out, 0, sizeof *out);
        r = refuse(why, whysz, KM_ERR_REFUSED, "grants nothing");
        goto out;
    }
    r = 0;
out:
    free(c);
    return r;
}
