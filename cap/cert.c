/* OpenSSH ed25519 user certificates: parse, verify, sign, text form (PROTOCOL.certkeys). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cap/cert.h"

/* ---- parsing ---- */

/* A u32 string copied into dst (capacity max + 1, NUL-terminated). NUL bytes inside are
 * refused so the C string is the whole value. */
static int get_text(struct km_buf *b, char *dst, size_t max)
{
    const uint8_t *p;
    size_t n;
    int r = km_buf_get_string_view(b, &p, &n);
    if (r != 0) {
        return KM_ERR_INVALID;
    }
    if (n > max) {
        return KM_ERR_TOO_LARGE;
    }
    if (n > 0 && memchr(p, 0, n) != NULL) {
        return KM_ERR_INVALID;
    }
    memcpy(dst, p, n);
    dst[n] = '\0';
    return 0;
}

/* "22,8080": decimal ports 1..65535, comma separated, no spaces, no duplicates. */
static int parse_ports(const char *s, uint16_t *ports, size_t *n_out)
{
    size_t n = 0;
    *n_out = 0;
    if (*s == '\0') {
        return KM_ERR_INVALID;
    }
    while (*s != '\0') {
        unsigned long v = 0;
        size_t digits = 0;
        while (*s >= '0' && *s <= '9') {
            v = v * 10 + (unsigned long)(*s - '0');
            if (v > 65535) {
                return KM_ERR_INVALID;
            }
            s++;
            digits++;
        }
        if (digits == 0 || v == 0 || (*s != ',' && *s != '\0')) {
            return KM_ERR_INVALID;
        }
        if (*s == ',' && s[1] == '\0') {
            return KM_ERR_INVALID;
        }
        if (*s == ',') {
            s++;
        }
        for (size_t i = 0; i < n; i++) {
            if (ports[i] == v) {
                return KM_ERR_INVALID;
            }
        }
        if (n == KM_CERT_MAX_PORTS) {
            return KM_ERR_TOO_LARGE;
        }
        ports[n++] = (uint16_t)v;
    }
    *n_out = n;
    return 0;
}

/* The value of a known option: its data is itself one string, with nothing after it. */
static int get_option_value(struct km_buf *data, char *dst, size_t max)
{
    int r = get_text(data, dst, max);
    if (r == 0 && km_buf_get_end(data) != 0) {
        r = KM_ERR_INVALID;
    }
    return r;
}

static int critical_option(struct km_cert *c, const char *name, struct km_buf *data)
{
    if (strcmp(name, "force-command") == 0) {
        c->has_force_command = true;
        return get_option_value(data, c->force_command, KM_CERT_COMMAND_MAX);
    }
    if (strcmp(name, "source-address") == 0) {
        c->has_source_address = true;
        int r = get_option_value(data, c->source_address, KM_CERT_SOURCE_MAX);
        return r == 0 && c->source_address[0] == '\0' ? KM_ERR_INVALID : r;
    }
    if (c->unknown_critical[0] == '\0') {
        snprintf(c->unknown_critical, sizeof c->unknown_critical, "%s", name);
    }
    return 0;
}

static const struct {
    const char *name;
    uint32_t bit;
} ext_names[] = {
    {"no-touch-required", KM_CERT_EXT_NO_TOUCH},
    {"permit-X11-forwarding", KM_CERT_EXT_X11_FWD},
    {"permit-agent-forwarding", KM_CERT_EXT_AGENT_FWD},
    {"permit-expose@keymesh", KM_CERT_EXT_EXPOSE},
    {"permit-port-forwarding", KM_CERT_EXT_PORT_FWD},
    {"permit-ports@keymesh", KM_CERT_EXT_PORTS},
    {"permit-pty", KM_CERT_EXT_PTY},
    {"permit-shell@keymesh", KM_CERT_EXT_SHELL},
    {"permit-user-rc", KM_CERT_EXT_USER_RC},
};

static int extension(struct km_cert *c, const char *name, struct km_buf *data)
{
    for (size_t i = 0; i < sizeof ext_names / sizeof ext_names[0]; i++) {
        if (strcmp(name, ext_names[i].name) != 0) {
            continue;
        }
        c->ext |= ext_names[i].bit;
        if (ext_names[i].bit == KM_CERT_EXT_PORTS) {
            char v[KM_CERT_MAX_PORTS * 6 + 1];
            int r = get_option_value(data, v, sizeof v - 1);
            return r != 0 ? r : parse_ports(v, c->ports, &c->n_ports);
        }
        /* Flag extensions carry no data. */
        return km_buf_len(data) == 0 ? 0 : KM_ERR_INVALID;
    }
    return 0; /* unknown extensions are ignored (PROTOCOL.certkeys) */
}

/* A sequence of (string name, string data) in strictly ascending name order. */
static int get_options(struct km_buf *b, struct km_cert *c, bool critical)
{
    struct km_buf seq;
    if (km_buf_get_stringb(b, &seq) != 0) {
        return KM_ERR_INVALID;
    }
    char prev[KM_CERT_OPTION_NAME_MAX + 1] = "";
    bool first = true;
    while (km_buf_len(&seq) > 0) {
        char name[KM_CERT_OPTION_NAME_MAX + 1];
        struct km_buf data;
        int r = get_text(&seq, name, KM_CERT_OPTION_NAME_MAX);
        if (r != 0) {
            return r;
        }
        if (km_buf_get_stringb(&seq, &data) != 0) {
            return KM_ERR_INVALID;
        }
        if (name[0] == '\0' || (!first && strcmp(prev, name) >= 0)) {
            return KM_ERR_INVALID;
        }
        first = false;
        memcpy(prev, name, sizeof prev);
        r = critical ? critical_option(c, name, &data) : extension(c, name, &data);
        if (r != 0) {
            return r;
        }
    }
    return 0;
}

static int get_principals(struct km_buf *b, struct km_cert *c)
{
    struct km_buf seq;
    if (km_buf_get_stringb(b, &seq) != 0) {
        return KM_ERR_INVALID;
    }
    while (km_buf_len(&seq) > 0) {
        if (c->n_principals == KM_CERT_MAX_PRINCIPALS) {
            return KM_ERR_TOO_LARGE;
        }
        char *p = c->principals[c->n_principals];
        int r = get_text(&seq, p, KM_CERT_PRINCIPAL_MAX);
        if (r != 0) {
            return r;
        }
        if (p[0] == '\0') {
            return KM_ERR_INVALID;
        }
        c->n_principals++;
    }
    return 0;
}

/* string "ssh-ed25519", string key[32], as the whole of a string (signature key). */
static int get_key_string(struct km_buf *b, struct km_pubkey *out)
{
    struct km_buf sub;
    if (km_buf_get_stringb(b, &sub) != 0) {
        return KM_ERR_INVALID;
    }
    int r = km_pubkey_get_blob(&sub, out);
    if (r == KM_ERR_KEY_TYPE) {
        return KM_ERR_UNSUPPORTED;
    }
    if (r != 0 || km_buf_get_end(&sub) != 0) {
        return KM_ERR_INVALID;
    }
    return 0;
}

static int parse(const uint8_t *blob, size_t len, struct km_cert *c)
{
    struct km_buf b;
    km_buf_init_view(&b, blob, len);
    const uint8_t *p;
    size_t n;
    int r;
    /* string "ssh-ed25519-cert-v01@openssh.com" */
    if (km_buf_get_string_view(&b, &p, &n) != 0) {
        return KM_ERR_INVALID;
    }
    if (n != sizeof KM_CERT_TYPE_NAME - 1 || memcmp(p, KM_CERT_TYPE_NAME, n) != 0) {
        return KM_ERR_KEY_TYPE;
    }
    /* string nonce */
    if (km_buf_get_string_view(&b, &p, &n) != 0) {
        return KM_ERR_INVALID;
    }
    if (n > KM_CERT_NONCE_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    memcpy(c->nonce, p, n);
    c->nonce_len = n;
    /* string pk */
    if (km_buf_get_string_view(&b, &p, &n) != 0 || n != KM_PUBKEY_LEN) {
        return KM_ERR_INVALID;
    }
    memcpy(c->key.b, p, n);
    /* uint64 serial, uint32 type */
    if (km_buf_get_u64(&b, &c->serial) != 0 || km_buf_get_u32(&b, &c->type) != 0) {
        return KM_ERR_INVALID;
    }
    if (c->type != KM_CERT_USER && c->type != KM_CERT_HOST) {
        return KM_ERR_INVALID;
    }
    /* string key id */
    if ((r = get_text(&b, c->key_id, KM_CERT_KEY_ID_MAX)) != 0) {
        return r;
    }
    /* string valid principals */
    if ((r = get_principals(&b, c)) != 0) {
        return r;
    }
    /* uint64 valid after, uint64 valid before */
    if (km_buf_get_u64(&b, &c->valid_after) != 0 || km_buf_get_u64(&b, &c->valid_before) != 0) {
        return KM_ERR_INVALID;
    }
    /* string critical options, string extensions */
    if ((r = get_options(&b, c, true)) != 0 || (r = get_options(&b, c, false)) != 0) {
        return r;
    }
    /* string reserved (ignored, as OpenSSH does) */
    if (km_buf_get_string_view(&b, NULL, NULL) != 0) {
        return KM_ERR_INVALID;
    }
    /* string signature key */
    if ((r = get_key_string(&b, &c->signer)) != 0) {
        return r;
    }
    c->signed_len = len - km_buf_len(&b);
    /* string signature: string "ssh-ed25519", string sig[64] */
    struct km_buf sig;
    if (km_buf_get_stringb(&b, &sig) != 0 || km_buf_get_end(&b) != 0) {
        return KM_ERR_INVALID;
    }
    if (km_buf_get_string_view(&sig, &p, &n) != 0) {
        return KM_ERR_INVALID;
    }
    if (n != 11 || memcmp(p, "ssh-ed25519", 11) != 0) {
        return KM_ERR_UNSUPPORTED;
    }
    if (km_buf_get_string_view(&sig, &p, &n) != 0 || n != KM_SIG_LEN || km_buf_get_end(&sig) != 0) {
        return KM_ERR_INVALID;
    }
    memcpy(c->sig, p, KM_SIG_LEN);
    return 0;
}

int km_cert_parse(const uint8_t *blob, size_t len, struct km_cert *out)
{
    memset(out, 0, sizeof *out);
    if (len > KM_CERT_BLOB_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    int r = parse(blob, len, out);
    if (r != 0) {
        memset(out, 0, sizeof *out);
    }
    return r;
}

int km_cert_verify_sig(const struct km_cert *c, const uint8_t *blob, size_t len)
{
    if (c->signed_len == 0 || c->signed_len > len) {
        return KM_ERR_CRYPTO;
    }
    return km_pubkey_verify(&c->signer, blob, c->signed_len, c->sig);
}

/* ---- text form ---- */

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

int km_cert_decode_text(const char *text, size_t len, struct km_buf *out)
{
    if (len > KM_CERT_TEXT_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    size_t i = 0;
    while (i < len && is_space(text[i])) {
        i++;
    }
    size_t t0 = i;
    while (i < len && !is_space(text[i])) {
        i++;
    }
    size_t tlen = i - t0;
    if (tlen != sizeof KM_CERT_TYPE_NAME - 1 || memcmp(text + t0, KM_CERT_TYPE_NAME, tlen) != 0) {
        return tlen == 0 ? KM_ERR_INVALID : KM_ERR_KEY_TYPE;
    }
    while (i < len && (text[i] == ' ' || text[i] == '\t')) {
        i++;
    }
    size_t b0 = i;
    while (i < len && !is_space(text[i])) {
        i++;
    }
    size_t blen = i - b0;
    /* The rest is a comment up to the end of the line; only whitespace may follow. */
    while (i < len && text[i] != '\n') {
        if (text[i] == '\0') {
            return KM_ERR_INVALID;
        }
        i++;
    }
    while (i < len) {
        if (!is_space(text[i])) {
            return KM_ERR_INVALID;
        }
        i++;
    }
    if (blen == 0) {
        return KM_ERR_INVALID;
    }
    uint8_t bin[KM_CERT_BLOB_MAX];
    size_t bin_len = 0;
    const char *end = NULL;
    if (sodium_base642bin(bin, sizeof bin, text + b0, blen, NULL, &bin_len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0) {
        return blen / 4 * 3 > sizeof bin ? KM_ERR_TOO_LARGE : KM_ERR_INVALID;
    }
    if (end != text + b0 + blen) {
        return KM_ERR_INVALID;
    }
    return km_buf_put_bytes(out, bin, bin_len);
}

int km_cert_format_text(const uint8_t *blob, size_t len, const char *comment, struct km_buf *out)
{
    if (comment != NULL && strpbrk(comment, "\r\n") != NULL) {
        return KM_ERR_INVALID;
    }
    if (len > KM_CERT_BLOB_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    char b64[sodium_base64_ENCODED_LEN(KM_CERT_BLOB_MAX, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(b64, sizeof b64, blob, len, sodium_base64_VARIANT_ORIGINAL);
    struct km_buf tmp;
    km_buf_init(&tmp, KM_CERT_TEXT_MAX);
    int r = km_buf_put_bytes(&tmp, KM_CERT_TYPE_NAME " ", sizeof KM_CERT_TYPE_NAME);
    if (r == 0) {
        r = km_buf_put_bytes(&tmp, b64, strlen(b64));
    }
    if (r == 0 && comment != NULL && comment[0] != '\0') {
        if ((r = km_buf_put_u8(&tmp, ' ')) == 0) {
            r = km_buf_put_bytes(&tmp, comment, strlen(comment));
        }
    }
    if (r == 0) {
        r = km_buf_put_u8(&tmp, '\n');
    }
    if (r == 0) {
        r = km_buf_put_bytes(out, km_buf_peek_ptr(&tmp), km_buf_len(&tmp));
    }
    km_buf_reset(&tmp);
    return r;
}

/* ---- signing ---- */

struct opt {
    const char *name;
    const char *value; /* NULL: no data (a flag extension) */
};

static int cmp_opt(const void *a, const void *b)
{
    return strcmp(((const struct opt *)a)->name, ((const struct opt *)b)->name);
}

/* Write a sorted option sequence as one string. */
static int put_options(struct km_buf *out, struct opt *o, size_t n)
{
    qsort(o, n, sizeof *o, cmp_opt);
    struct km_buf seq;
    struct km_buf val;
    km_buf_init(&seq, KM_CERT_BLOB_MAX);
    km_buf_init(&val, KM_CERT_BLOB_MAX);
    int r = 0;
    for (size_t i = 0; r == 0 && i < n; i++) {
        km_buf_clear(&val);
        if (o[i].value != NULL) {
            r = km_buf_put_cstring(&val, o[i].value);
        }
        if (r == 0 && (r = km_buf_put_cstring(&seq, o[i].name)) == 0) {
            r = km_buf_put_stringb(&seq, &val);
        }
    }
    if (r == 0) {
        r = km_buf_put_stringb(out, &seq);
    }
    km_buf_reset(&seq);
    km_buf_reset(&val);
    return r;
}

static int check_profile(const struct km_cert *c)
{
    if (c->n_principals == 0 || c->n_principals > KM_CERT_MAX_PRINCIPALS ||
        (c->type != KM_CERT_USER && c->type != KM_CERT_HOST) || c->nonce_len > KM_CERT_NONCE_MAX ||
        c->n_ports > KM_CERT_MAX_PORTS || ((c->ext & KM_CERT_EXT_PORTS) != 0) != (c->n_ports > 0) ||
        strlen(c->key_id) > KM_CERT_KEY_ID_MAX ||
        (c->has_force_command && strlen(c->force_command) > KM_CERT_COMMAND_MAX) ||
        (c->has_source_address &&
         (c->source_address[0] == '\0' || strlen(c->source_address) > KM_CERT_SOURCE_MAX))) {
        return KM_ERR_INVALID;
    }
    for (size_t i = 0; i < c->n_principals; i++) {
        size_t l = strnlen(c->principals[i], KM_CERT_PRINCIPAL_MAX + 1);
        if (l == 0 || l > KM_CERT_PRINCIPAL_MAX) {
            return KM_ERR_INVALID;
        }
    }
    for (size_t i = 0; i < c->n_ports; i++) {
        if (c->ports[i] == 0) {
            return KM_ERR_INVALID;
        }
        for (size_t j = 0; j < i; j++) {
            if (c->ports[j] == c->ports[i]) {
                return KM_ERR_INVALID;
            }
        }
    }
    return 0;
}

static int put_body(const struct km_cert *c, const struct km_pubkey *signer, struct km_buf *b)
{
    int r;
    struct km_buf seq;
    km_buf_init(&seq, KM_CERT_BLOB_MAX);
    if ((r = km_buf_put_cstring(b, KM_CERT_TYPE_NAME)) != 0 ||
        (r = km_buf_put_string(b, c->nonce, c->nonce_len)) != 0 ||
        (r = km_buf_put_string(b, c->key.b, KM_PUBKEY_LEN)) != 0 ||
        (r = km_buf_put_u64(b, c->serial)) != 0 || (r = km_buf_put_u32(b, c->type)) != 0 ||
        (r = km_buf_put_cstring(b, c->key_id)) != 0) {
        goto out;
    }
    for (size_t i = 0; i < c->n_principals; i++) {
        if ((r = km_buf_put_cstring(&seq, c->principals[i])) != 0) {
            goto out;
        }
    }
    if ((r = km_buf_put_stringb(b, &seq)) != 0 || (r = km_buf_put_u64(b, c->valid_after)) != 0 ||
        (r = km_buf_put_u64(b, c->valid_before)) != 0) {
        goto out;
    }
    struct opt crit[2];
    size_t n_crit = 0;
    if (c->has_force_command) {
        crit[n_crit++] = (struct opt){"force-command", c->force_command};
    }
    if (c->has_source_address) {
        crit[n_crit++] = (struct opt){"source-address", c->source_address};
    }
    if ((r = put_options(b, crit, n_crit)) != 0) {
        goto out;
    }
    char ports[KM_CERT_MAX_PORTS * 6 + 1] = "";
    size_t plen = 0;
    for (size_t i = 0; i < c->n_ports; i++) {
        plen += (size_t)snprintf(ports + plen, sizeof ports - plen, "%s%u", i > 0 ? "," : "",
                                 c->ports[i]);
    }
    struct opt ext[sizeof ext_names / sizeof ext_names[0]];
    size_t n_ext = 0;
    for (size_t i = 0; i < sizeof ext_names / sizeof ext_names[0]; i++) {
        if (c->ext & ext_names[i].bit) {
            ext[n_ext++] = (struct opt){ext_names[i].name,
                                        ext_names[i].bit == KM_CERT_EXT_PORTS ? ports : NULL};
        }
    }
    if ((r = put_options(b, ext, n_ext)) != 0 ||
        (r = km_buf_put_string(b, NULL, 0)) != 0) { /* reserved */
        goto out;
    }
    km_buf_clear(&seq);
    if ((r = km_pubkey_put_blob(signer, &seq)) != 0 || (r = km_buf_put_stringb(b, &seq)) != 0) {
        goto out;
    }
out:
    km_buf_reset(&seq);
    return r;
}

int km_cert_sign(const struct km_cert *c, const struct km_key *signer, struct km_buf *out)
{
    int r = check_profile(c);
    if (r != 0) {
        return r;
    }
    struct km_buf b;
    struct km_buf sig;
    km_buf_init(&b, KM_CERT_BLOB_MAX);
    km_buf_init(&sig, 128);
    uint8_t s[KM_SIG_LEN];
    if ((r = put_body(c, km_key_pub(signer), &b)) != 0 ||
        (r = km_key_sign(signer, km_buf_peek_ptr(&b), km_buf_len(&b), s)) != 0 ||
        (r = km_buf_put_cstring(&sig, "ssh-ed25519")) != 0 ||
        (r = km_buf_put_string(&sig, s, sizeof s)) != 0 ||
        (r = km_buf_put_stringb(&b, &sig)) != 0) {
        goto out;
    }
    r = km_buf_put_bytes(out, km_buf_peek_ptr(&b), km_buf_len(&b));
out:
    km_buf_reset(&b);
    km_buf_reset(&sig);
    return r;
}
