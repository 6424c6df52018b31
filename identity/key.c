/* Ed25519 node keys and the OpenSSH key formats.
 *
 * The private key file is OpenSSH's "openssh-key-v1" (OpenSSH PROTOCOL.key), unencrypted,
 * so that `ssh-keygen -y -f KEY` prints our public key and an existing ssh-keygen key can be
 * adopted as a node key. docs/IDENTITY.md has the layout with an example. */
#include "identity/key.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "core/fsutil.h"

struct km_key {
    /* libsodium's secret key layout: seed (32) || public key (32). */
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    struct km_pubkey pk;
};

#define KEY_TYPE_ED25519 "ssh-ed25519"
#define MARK_BEGIN "-----BEGIN OPENSSH PRIVATE KEY-----"
#define MARK_END "-----END OPENSSH PRIVATE KEY-----"
/* PROTOCOL.key: the magic includes its terminating NUL. */
#define AUTH_MAGIC "openssh-key-v1"
#define AUTH_MAGIC_LEN sizeof(AUTH_MAGIC)
/* ssh-keygen wraps the base64 body at 70 columns (sshbuf_dtob64 with wrap). */
#define B64_LINE 70
/* The private section is padded to the cipher block size; 8 for cipher "none". */
#define PRIV_BLOCK 8
/* The SSH wire blob of an ed25519 key: string "ssh-ed25519" (4 + 11), string key (4 + 32). */
#define BLOB_LEN (4 + sizeof(KEY_TYPE_ED25519) - 1 + 4 + KM_PUBKEY_LEN)

/* ---- key pairs ---- */

static struct km_key *key_alloc(void)
{
    struct km_key *k = malloc(sizeof *k);
    if (k != NULL) {
        sodium_memzero(k, sizeof *k);
    }
    return k;
}

int km_key_generate(struct km_key **out)
{
    *out = NULL;
    /* Idempotent and thread-safe; needed before randombytes and keypair generation. */
    if (sodium_init() < 0) {
        return KM_ERR_CRYPTO;
    }
    struct km_key *k = key_alloc();
    if (k == NULL) {
        return -ENOMEM;
    }
    if (crypto_sign_keypair(k->pk.b, k->sk) != 0) {
        km_key_free(k);
        return KM_ERR_CRYPTO;
    }
    *out = k;
    return 0;
}

int km_key_from_seed(const uint8_t seed[static 32], struct km_key **out)
{
    *out = NULL;
    if (sodium_init() < 0) {
        return KM_ERR_CRYPTO;
    }
    struct km_key *k = key_alloc();
    if (k == NULL) {
        return -ENOMEM;
    }
    if (crypto_sign_seed_keypair(k->pk.b, k->sk, seed) != 0) {
        km_key_free(k);
        return KM_ERR_CRYPTO;
    }
    *out = k;
    return 0;
}

void km_key_free(struct km_key *k)
{
    if (k == NULL) {
        return;
    }
    sodium_memzero(k, sizeof *k);
    free(k);
}

const struct km_pubkey *km_key_pub(const struct km_key *k)
{
    return &k->pk;
}

int km_key_sign(const struct km_key *k, const void *msg, size_t len, uint8_t sig[static KM_SIG_LEN])
{
    if (crypto_sign_detached(sig, NULL, msg, len, k->sk) != 0) {
        sodium_memzero(sig, KM_SIG_LEN);
        return KM_ERR_CRYPTO;
    }
    return 0;
}

int km_pubkey_verify(const struct km_pubkey *pk, const void *msg, size_t len,
                     const uint8_t sig[static KM_SIG_LEN])
{
    if (crypto_sign_verify_detached(sig, msg, len, pk->b) != 0) {
        return KM_ERR_CRYPTO;
    }
    return 0;
}

int km_pubkey_equal(const struct km_pubkey *a, const struct km_pubkey *b)
{
    return sodium_memcmp(a->b, b->b, KM_PUBKEY_LEN) == 0;
}

/* ---- SSH wire blob (RFC 8709 section 4: string "ssh-ed25519", string key) ---- */

int km_pubkey_put_blob(const struct km_pubkey *pk, struct km_buf *out)
{
    struct km_buf tmp;
    uint8_t mem[BLOB_LEN];
    int r;

    /* Build it whole first so out gets all of it or nothing. */
    km_buf_init_fixed(&tmp, mem, sizeof mem);
    if ((r = km_buf_put_cstring(&tmp, KEY_TYPE_ED25519)) != 0 ||
        (r = km_buf_put_string(&tmp, pk->b, KM_PUBKEY_LEN)) != 0) {
        return r;
    }
    return km_buf_put_bytes(out, mem, km_buf_len(&tmp));
}

/* Equality of a length-delimited byte string with a C string. */
static int str_is(const uint8_t *p, size_t len, const char *s)
{
    size_t n = strlen(s);
    return len == n && (n == 0 || memcmp(p, s, n) == 0);
}

int km_pubkey_get_blob(struct km_buf *b, struct km_pubkey *out)
{
    memset(out, 0, sizeof *out);
    /* Reads never move the storage, so a copy of the struct is a valid rewind point. */
    struct km_buf save = *b;
    const uint8_t *type;
    const uint8_t *key;
    size_t type_len;
    size_t key_len;
    int r;

    /* string key type */
    if (km_buf_get_string_view(b, &type, &type_len) != 0) {
        r = KM_ERR_INVALID;
        goto fail;
    }
    if (!str_is(type, type_len, KEY_TYPE_ED25519)) {
        r = KM_ERR_KEY_TYPE;
        goto fail;
    }
    /* string public key (32 bytes) */
    if (km_buf_get_string_view(b, &key, &key_len) != 0 || key_len != KM_PUBKEY_LEN) {
        r = KM_ERR_INVALID;
        goto fail;
    }
    memcpy(out->b, key, KM_PUBKEY_LEN);
    return 0;
fail:
    *b = save;
    return r;
}

/* ---- openssh-key-v1 parsing ---- */

/* Consume the exact characters of s, or fail without a defined position. */
static int expect(struct km_buf *in, const char *s)
{
    const uint8_t *p;
    size_t n = strlen(s);
    if (km_buf_get_view(in, n, &p) != 0 || memcmp(p, s, n) != 0) {
        return KM_ERR_KEY_CORRUPT;
    }
    return 0;
}

/* Whether the unread bytes start with s; consumes nothing. */
static int starts_with(const struct km_buf *in, const char *s)
{
    size_t n = strlen(s);
    return km_buf_len(in) >= n && memcmp(km_buf_peek_ptr(in), s, n) == 0;
}

/* A line ending: "\n" or "\r\n". */
static int get_eol(struct km_buf *in)
{
    uint8_t c;
    if (km_buf_get_u8(in, &c) != 0) {
        return KM_ERR_KEY_CORRUPT;
    }
    if (c == '\r' && km_buf_get_u8(in, &c) != 0) {
        return KM_ERR_KEY_CORRUPT;
    }
    return c == '\n' ? 0 : KM_ERR_KEY_CORRUPT;
}

static int is_b64_char(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/' || c == '=';
}

/* Strip the PEM-style armour and collect the base64 characters into b64.
 *
 *   "-----BEGIN OPENSSH PRIVATE KEY-----" EOL
 *   1*( 1*base64-char EOL )
 *   "-----END OPENSSH PRIVATE KEY-----" *( SP / HTAB / CR / LF )
 *
 * OpenSSH itself ignores anything after the END marker; we accept only whitespace there, so a
 * file with a second key or other junk appended is refused rather than half-read. */
static int unarmour(struct km_buf *in, struct km_buf *b64)
{
    int r;
    if ((r = expect(in, MARK_BEGIN)) != 0 || (r = get_eol(in)) != 0) {
        return r;
    }
    size_t lines = 0;
    while (!starts_with(in, MARK_END)) {
        /* Bounded: every iteration consumes at least one byte or fails. */
        size_t n = 0;
        uint8_t c;
        while (km_buf_peek_u8(in, 0, &c) == 0 && is_b64_char(c)) {
            if ((r = km_buf_put_u8(b64, c)) != 0 || (r = km_buf_skip(in, 1)) != 0) {
                return r == -ENOMEM ? r : KM_ERR_KEY_CORRUPT;
            }
            n++;
        }
        if (n == 0 || (r = get_eol(in)) != 0) {
            return KM_ERR_KEY_CORRUPT;
        }
        lines++;
    }
    if (lines == 0 || (r = expect(in, MARK_END)) != 0) {
        return KM_ERR_KEY_CORRUPT;
    }
    uint8_t c;
    while (km_buf_get_u8(in, &c) == 0) {
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
            return KM_ERR_KEY_CORRUPT;
        }
    }
    return 0;
}

/* Parse the private section (PROTOCOL.key section 3, "none" cipher, one ed25519 key):
 *
 *   uint32  checkint
 *   uint32  checkint
 *   string  "ssh-ed25519"
 *   string  pk (32)
 *   string  sk (64: seed || pk)
 *   string  comment
 *   byte[]  padding 1, 2, 3, ... up to the block size
 *
 * sk_out receives a borrowed pointer into priv (secret material: the caller wipes priv). */
static int parse_private(struct km_buf *priv, const uint8_t **pk_out, const uint8_t **sk_out,
                         char **comment)
{
    uint32_t check1;
    uint32_t check2;
    const uint8_t *type;
    const uint8_t *cmt;
    size_t type_len;
    size_t pk_len;
    size_t sk_len;
    size_t cmt_len;

    /* Whole blocks only (OpenSSH checks the same before decrypting). */
    if (km_buf_len(priv) < PRIV_BLOCK || km_buf_len(priv) % PRIV_BLOCK != 0) {
        return KM_ERR_KEY_CORRUPT;
    }
    /* uint32 checkint, uint32 checkint: random, equal after a correct decryption. */
    if (km_buf_get_u32(priv, &check1) != 0 || km_buf_get_u32(priv, &check2) != 0 ||
        check1 != check2) {
        return KM_ERR_KEY_CORRUPT;
    }
    /* string key type; the public blob already said ssh-ed25519. */
    if (km_buf_get_string_view(priv, &type, &type_len) != 0) {
        return KM_ERR_KEY_CORRUPT;
    }
    if (!str_is(type, type_len, KEY_TYPE_ED25519)) {
        return KM_ERR_KEY_MISMATCH;
    }
    /* string pk, string sk (PROTOCOL.key leaves the layout to the key type; ed25519 is
     * OpenSSH's sshkey_private_serialize: ENC(A), k || ENC(A)). */
    if (km_buf_get_string_view(priv, pk_out, &pk_len) != 0 || pk_len != KM_PUBKEY_LEN ||
        km_buf_get_string_view(priv, sk_out, &sk_len) != 0 ||
        sk_len != crypto_sign_SECRETKEYBYTES) {
        return KM_ERR_KEY_CORRUPT;
    }
    /* string comment: bounded, and no NUL since callers get a C string. */
    if (km_buf_get_string_view(priv, &cmt, &cmt_len) != 0 || cmt_len > KM_KEY_COMMENT_MAX ||
        (cmt_len > 0 && memchr(cmt, 0, cmt_len) != NULL)) {
        return KM_ERR_KEY_CORRUPT;
    }
    /* padding: 1, 2, 3, ... (fewer than one block). */
    size_t pad = km_buf_len(priv);
    if (pad >= PRIV_BLOCK) {
        return KM_ERR_KEY_CORRUPT;
    }
    for (size_t i = 1; i <= pad; i++) {
        uint8_t c;
        if (km_buf_get_u8(priv, &c) != 0 || c != i) {
            return KM_ERR_KEY_CORRUPT;
        }
    }
    if (km_buf_get_end(priv) != 0) {
        return KM_ERR_KEY_CORRUPT;
    }
    if (comment != NULL) {
        char *s = malloc(cmt_len + 1);
        if (s == NULL) {
            return -ENOMEM;
        }
        if (cmt_len > 0) {
            memcpy(s, cmt, cmt_len);
        }
        s[cmt_len] = '\0';
        *comment = s;
    }
    return 0;
}

/* Parse the decoded binary (PROTOCOL.key section 1):
 *
 *   byte[]  "openssh-key-v1\0"
 *   string  ciphername
 *   string  kdfname
 *   string  kdfoptions
 *   uint32  number of keys N (we accept exactly 1)
 *   string  public key blob
 *   string  private section */
static int parse_binary(struct km_buf *bin, struct km_key **out, char **comment)
{
    const uint8_t *cipher;
    const uint8_t *kdf;
    const uint8_t *kdfopts;
    const uint8_t *pk_in;
    const uint8_t *sk_in;
    size_t cipher_len;
    size_t kdf_len;
    size_t kdfopts_len;
    uint32_t nkeys;
    struct km_buf pubblob;
    struct km_buf priv;
    struct km_pubkey pk;
    struct km_key *k = NULL;
    char *cmt = NULL;
    int r;

    /* byte[] AUTH_MAGIC */
    const uint8_t *magic;
    if (km_buf_get_view(bin, AUTH_MAGIC_LEN, &magic) != 0 ||
        memcmp(magic, AUTH_MAGIC, AUTH_MAGIC_LEN) != 0) {
        return KM_ERR_KEY_CORRUPT;
    }
    /* string ciphername, string kdfname: anything but none/none is an encrypted key. Checked
     * before the rest so an encrypted key is reported as such, not as corrupt. */
    if (km_buf_get_string_view(bin, &cipher, &cipher_len) != 0 ||
        km_buf_get_string_view(bin, &kdf, &kdf_len) != 0) {
        return KM_ERR_KEY_CORRUPT;
    }
    if (!str_is(cipher, cipher_len, "none") || !str_is(kdf, kdf_len, "none")) {
        return KM_ERR_KEY_ENCRYPTED;
    }
    /* string kdfoptions: empty for kdf "none". */
    if (km_buf_get_string_view(bin, &kdfopts, &kdfopts_len) != 0 || kdfopts_len != 0) {
        return KM_ERR_KEY_CORRUPT;
    }
    /* uint32 N */
    if (km_buf_get_u32(bin, &nkeys) != 0 || nkeys != 1) {
        return KM_ERR_KEY_CORRUPT;
    }
    /* string publickey1: the SSH wire blob, nothing after it. */
    if (km_buf_get_stringb(bin, &pubblob) != 0) {
        return KM_ERR_KEY_CORRUPT;
    }
    r = km_pubkey_get_blob(&pubblob, &pk);
    if (r == KM_ERR_KEY_TYPE) {
        return r;
    }
    if (r != 0 || km_buf_get_end(&pubblob) != 0) {
        return KM_ERR_KEY_CORRUPT;
    }
    /* string private section, and nothing after it. */
    if (km_buf_get_stringb(bin, &priv) != 0 || km_buf_get_end(bin) != 0) {
        return KM_ERR_KEY_CORRUPT;
    }
    if ((r = parse_private(&priv, &pk_in, &sk_in, comment != NULL ? &cmt : NULL)) != 0) {
        return r;
    }
    /* The three copies of the public key (outer blob, inner pk, second half of sk) must
     * agree, and must be what the seed actually yields: a file whose halves were spliced
     * from two keys would otherwise sign with one key and advertise another. */
    if ((r = km_key_from_seed(sk_in, &k)) != 0) {
        goto out;
    }
    if (sodium_memcmp(pk.b, pk_in, KM_PUBKEY_LEN) != 0 ||
        sodium_memcmp(pk.b, sk_in + 32, KM_PUBKEY_LEN) != 0 || /* sk = seed(32) || pk */
        !km_pubkey_equal(&pk, &k->pk)) {
        r = KM_ERR_KEY_MISMATCH;
        goto out;
    }
    *out = k;
    k = NULL;
    if (comment != NULL) {
        *comment = cmt;
        cmt = NULL;
    }
out:
    km_key_free(k);
    free(cmt);
    return r;
}

int km_key_parse_openssh(const void *text, size_t len, struct km_key **out, char **comment)
{
    struct km_buf in;
    struct km_buf b64;
    uint8_t *bin = NULL;
    size_t bin_max = 0;
    size_t bin_len = 0;
    int r;

    *out = NULL;
    if (comment != NULL) {
        *comment = NULL;
    }
    if (len > KM_KEY_FILE_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    /* The base64 text is as secret as the key: an owned buffer, wiped on reset. */
    km_buf_init(&b64, len);
    km_buf_init_view(&in, text, len);
    if ((r = unarmour(&in, &b64)) != 0) {
        goto out;
    }
    size_t b64_len = km_buf_len(&b64);
    bin_max = b64_len / 4 * 3 + 3;
    bin = malloc(bin_max);
    if (bin == NULL) {
        r = -ENOMEM;
        goto out;
    }
    /* Strict decoding: the ORIGINAL variant requires '=' padding and zero unused bits, and
     * b64_end must reach the end, so each binary has exactly one accepted text. The raw
     * pointer is the libsodium interface (STYLE.md section 7). */
    const char *b64_text = (const char *)km_buf_peek_ptr(&b64);
    const char *b64_end = NULL;
    if (sodium_base642bin(bin, bin_max, b64_text, b64_len, NULL, &bin_len, &b64_end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        b64_end != b64_text + b64_len) {
        r = KM_ERR_KEY_CORRUPT;
        goto out;
    }
    struct km_buf view;
    km_buf_init_view(&view, bin, bin_len);
    r = parse_binary(&view, out, comment);
out:
    km_buf_reset(&b64);
    if (bin != NULL) {
        sodium_memzero(bin, bin_max);
        free(bin);
    }
    return r;
}

/* ---- openssh-key-v1 writing ---- */

/* The binary form, mirroring parse_binary(). */
static int format_binary(const struct km_key *k, const char *comment, struct km_buf *bin)
{
    struct km_buf priv;
    int r;

    /* Fixed limit: everything but the comment is under 256 bytes. */
    km_buf_init(&priv, 256 + KM_KEY_COMMENT_MAX);
    /* uint32 checkint twice: random, the same value (PROTOCOL.key). */
    uint32_t check = randombytes_random();
    if ((r = km_buf_put_u32(&priv, check)) != 0 || (r = km_buf_put_u32(&priv, check)) != 0 ||
        (r = km_buf_put_cstring(&priv, KEY_TYPE_ED25519)) != 0 ||
        (r = km_buf_put_string(&priv, k->pk.b, KM_PUBKEY_LEN)) != 0 ||
        (r = km_buf_put_string(&priv, k->sk, sizeof k->sk)) != 0 ||
        (r = km_buf_put_cstring(&priv, comment)) != 0) {
        goto out;
    }
    for (uint8_t i = 1; km_buf_len(&priv) % PRIV_BLOCK != 0; i++) {
        if ((r = km_buf_put_u8(&priv, i)) != 0) {
            goto out;
        }
    }
    if ((r = km_buf_put_bytes(bin, AUTH_MAGIC, AUTH_MAGIC_LEN)) != 0 ||
        (r = km_buf_put_cstring(bin, "none")) != 0 || /* ciphername */
        (r = km_buf_put_cstring(bin, "none")) != 0 || /* kdfname */
        (r = km_buf_put_string(bin, "", 0)) != 0 ||   /* kdfoptions */
        (r = km_buf_put_u32(bin, 1)) != 0) {          /* number of keys */
        goto out;
    }
    /* string publickey1, string private section */
    uint8_t blob_mem[BLOB_LEN];
    struct km_buf blob;
    km_buf_init_fixed(&blob, blob_mem, sizeof blob_mem);
    if ((r = km_pubkey_put_blob(&k->pk, &blob)) != 0 || (r = km_buf_put_stringb(bin, &blob)) != 0 ||
        (r = km_buf_put_stringb(bin, &priv)) != 0) {
        goto out;
    }
out:
    km_buf_reset(&priv);
    return r;
}

int km_key_format_openssh(const struct km_key *k, const char *comment, struct km_buf *out)
{
    struct km_buf bin;
    struct km_buf text;
    char *b64 = NULL;
    size_t b64_size = 0;
    int r;

    if (comment == NULL) {
        comment = "";
    }
    if (strlen(comment) > KM_KEY_COMMENT_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    km_buf_init(&bin, 512 + KM_KEY_COMMENT_MAX);
    km_buf_init(&text, 2 * (512 + KM_KEY_COMMENT_MAX) + 128);
    if ((r = format_binary(k, comment, &bin)) != 0) {
        goto out;
    }
    b64_size = sodium_base64_ENCODED_LEN(km_buf_len(&bin), sodium_base64_VARIANT_ORIGINAL);
    b64 = malloc(b64_size);
    if (b64 == NULL) {
        r = -ENOMEM;
        goto out;
    }
    sodium_bin2base64(b64, b64_size, km_buf_peek_ptr(&bin), km_buf_len(&bin),
                      sodium_base64_VARIANT_ORIGINAL);
    size_t b64_len = strlen(b64);
    if ((r = km_buf_put_bytes(&text, MARK_BEGIN "\n", sizeof(MARK_BEGIN))) != 0) {
        goto out;
    }
    for (size_t off = 0; off < b64_len; off += B64_LINE) {
        size_t n = b64_len - off < B64_LINE ? b64_len - off : B64_LINE;
        if ((r = km_buf_put_bytes(&text, b64 + off, n)) != 0 ||
            (r = km_buf_put_u8(&text, '\n')) != 0) {
            goto out;
        }
    }
    if ((r = km_buf_put_bytes(&text, MARK_END "\n", sizeof(MARK_END))) != 0) {
        goto out;
    }
    /* One append so out receives the whole file or nothing. */
    r = km_buf_put_bytes(out, km_buf_peek_ptr(&text), km_buf_len(&text));
out:
    if (b64 != NULL) {
        sodium_memzero(b64, b64_size);
        free(b64);
    }
    km_buf_reset(&bin);
    km_buf_reset(&text);
    return r;
}

/* ---- files ---- */

int km_key_load(const char *path, struct km_key **out, char **comment)
{
    struct km_buf file;
    mode_t mode = 0;
    int r;

    *out = NULL;
    if (comment != NULL) {
        *comment = NULL;
    }
    km_buf_init(&file, KM_KEY_FILE_MAX);
    if ((r = km_fs_read_file(path, &file, &mode)) != 0) {
        goto out;
    }
    /* Like OpenSSH's sshkey_perm_ok(): any group or other bit means someone else may have
     * read (or replaced) the secret. The mode comes from fstat() of the descriptor we read. */
    if ((mode & 077) != 0) {
        r = KM_ERR_KEY_PERMS;
        goto out;
    }
    r = km_key_parse_openssh(km_buf_peek_ptr(&file), km_buf_len(&file), out, comment);
out:
    km_buf_reset(&file);
    return r;
}

int km_key_save(const struct km_key *k, const char *path, const char *comment, int force)
{
    struct km_buf text;
    char pub_path[4096];
    char pub_line[KM_PUBKEY_LINE_MAX];
    size_t pub_len;
    int r;

    if (comment == NULL) {
        comment = "";
    }
    int n = snprintf(pub_path, sizeof pub_path, "%s.pub", path);
    if (n < 0 || (size_t)n >= sizeof pub_path) {
        return KM_ERR_TOO_LARGE;
    }
    if ((r = km_pubkey_format_openssh(&k->pk, comment, pub_line, sizeof pub_line - 1)) != 0) {
        return r;
    }
    pub_len = strlen(pub_line);
    pub_line[pub_len++] = '\n';
    /* Check both names before writing either, so a refusal leaves nothing half-done.
     * km_fs_write_atomic re-checks with link() to close the race for the private key. */
    if (!force) {
        struct stat st;
        if (lstat(path, &st) == 0 || lstat(pub_path, &st) == 0) {
            return -EEXIST;
        }
    }
    km_buf_init(&text, KM_KEY_FILE_MAX);
    if ((r = km_key_format_openssh(k, comment, &text)) != 0) {
        goto out;
    }
    if ((r = km_fs_write_atomic(path, km_buf_peek_ptr(&text), km_buf_len(&text), 0600, force)) !=
        0) {
        goto out;
    }
    if ((r = km_fs_write_atomic(pub_path, pub_line, pub_len, 0644, force)) != 0) {
        /* Without force the private key is one we just created: remove it again so a retry
         * does not trip over a key without its .pub. With force the old pair is gone either
         * way; the .pub can be rewritten from the private key. */
        if (!force) {
            (void)unlink(path);
        }
        goto out;
    }
out:
    km_buf_reset(&text);
    return r;
}

/* ---- public key text ---- */

int km_pubkey_format_openssh(const struct km_pubkey *pk, const char *comment, char *out,
                             size_t outsz)
{
    uint8_t blob[BLOB_LEN];
    char b64[sodium_base64_ENCODED_LEN(sizeof blob, sodium_base64_VARIANT_ORIGINAL)];
    struct km_buf b;
    int r;

    if (outsz > 0) {
        out[0] = '\0';
    }
    /* A line break would end the line early and inject a second one into authorized_keys
     * style files; refuse it. */
    if (comment != NULL && strpbrk(comment, "\r\n") != NULL) {
        return KM_ERR_INVALID;
    }
    km_buf_init_fixed(&b, blob, sizeof blob);
    if ((r = km_pubkey_put_blob(pk, &b)) != 0) {
        return r;
    }
    sodium_bin2base64(b64, sizeof b64, blob, sizeof blob, sodium_base64_VARIANT_ORIGINAL);
    int has_comment = comment != NULL && comment[0] != '\0';
    int n = snprintf(out, outsz, KEY_TYPE_ED25519 " %s%s%s", b64, has_comment ? " " : "",
                     has_comment ? comment : "");
    if (n < 0 || (size_t)n >= outsz) {
        if (outsz > 0) {
            out[0] = '\0';
        }
        return KM_ERR_TOO_LARGE;
    }
    return 0;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* SSH key type names we recognise as "a key, but not ed25519": the algorithms of RFC 4253,
 * RFC 5656 and OpenSSH's PROTOCOL.certkeys / PROTOCOL.u2f. */
static int is_other_key_type(const char *s, size_t len)
{
    static const char *const prefixes[] = {"ssh-", "ecdsa-", "sk-", "rsa-", "x509v3-"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t n = strlen(prefixes[i]);
        if (len > n && memcmp(s, prefixes[i], n) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Decode one base64 token (ORIGINAL alphabet, padded, canonical) into out. */
static int b64_decode(const char *s, size_t len, uint8_t *out, size_t outsz, size_t *outlen)
{
    const char *end = NULL;
    *outlen = 0;
    if (sodium_base642bin(out, outsz, s, len, NULL, outlen, &end, sodium_base64_VARIANT_ORIGINAL) !=
            0 ||
        end != s + len) {
        return KM_ERR_INVALID;
    }
    return 0;
}

/* A token that is the base64 of either the 32 raw bytes or the SSH wire blob. With
 * want_blob, only the blob form is accepted (after "ssh-ed25519"). */
static int parse_b64_key(const char *s, size_t len, int want_blob, struct km_pubkey *out)
{
    /* Big enough for any real SSH public key blob (RSA 16384 is ~2 KiB), so another key
     * type is recognised by its blob's type string rather than rejected for size. */
    uint8_t bin[KM_PUBKEY_TEXT_MAX / 4 * 3 + 3];
    size_t n;
    int r;

    if ((r = b64_decode(s, len, bin, sizeof bin, &n)) != 0) {
        return r;
    }
    if (n == KM_PUBKEY_LEN && !want_blob) {
        memcpy(out->b, bin, KM_PUBKEY_LEN);
        return 0;
    }
    struct km_buf b;
    km_buf_init_view(&b, bin, n);
    if ((r = km_pubkey_get_blob(&b, out)) != 0) {
        return r;
    }
    if (km_buf_get_end(&b) != 0) {
        memset(out, 0, sizeof *out);
        return KM_ERR_INVALID;
    }
    return 0;
}

int km_pubkey_parse(const char *text, size_t len, struct km_pubkey *out)
{
    memset(out, 0, sizeof *out);
    if (len > KM_PUBKEY_TEXT_MAX) {
        return KM_ERR_TOO_LARGE;
    }
    if (len > 0 && memchr(text, 0, len) != NULL) {
        return KM_ERR_INVALID;
    }
    /* Trim surrounding whitespace: [start, end). */
    size_t start = 0;
    size_t end = len;
    while (start < end && is_space(text[start])) {
        start++;
    }
    while (end > start && is_space(text[end - 1])) {
        end--;
    }
    /* First token: [start, tok_end). */
    size_t tok_end = start;
    while (tok_end < end && !is_space(text[tok_end])) {
        tok_end++;
    }
    const char *tok = text + start;
    size_t tok_len = tok_end - start;
    if (tok_len == 0) {
        return KM_ERR_INVALID;
    }
    int r;
    if (tok_end == end) {
        /* A single token: 64 hex digits, or base64 of the raw key or of the blob. */
        if (tok_len == 2 * KM_PUBKEY_LEN) {
            const char *hex_end = NULL;
            size_t bin_len = 0;
            if (sodium_hex2bin(out->b, sizeof out->b, tok, tok_len, NULL, &bin_len, &hex_end) ==
                    0 &&
                hex_end == tok + tok_len && bin_len == KM_PUBKEY_LEN) {
                return 0;
            }
            memset(out, 0, sizeof *out);
        }
        if (str_is((const uint8_t *)tok, tok_len, KEY_TYPE_ED25519)) {
            return KM_ERR_INVALID; /* the type without a key */
        }
        if (is_other_key_type(tok, tok_len)) {
            return KM_ERR_KEY_TYPE;
        }
        r = parse_b64_key(tok, tok_len, 0, out);
    } else {
        /* "<type> <base64 blob> [comment]": the comment is anything after the blob. */
        if (!str_is((const uint8_t *)tok, tok_len, KEY_TYPE_ED25519)) {
            return is_other_key_type(tok, tok_len) ? KM_ERR_KEY_TYPE : KM_ERR_INVALID;
        }
        size_t b_start = tok_end;
        while (b_start < end && is_space(text[b_start])) {
            b_start++;
        }
        size_t b_end = b_start;
        while (b_end < end && !is_space(text[b_end])) {
            b_end++;
        }
        r = parse_b64_key(text + b_start, b_end - b_start, 1, out);
        if (r == KM_ERR_KEY_TYPE) {
            /* The line said ssh-ed25519 but the blob is another type: inconsistent. */
            r = KM_ERR_INVALID;
        }
    }
    if (r != 0) {
        memset(out, 0, sizeof *out);
    }
    return r;
}
