/* Capability files in the state directory. */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cap/store.h"
#include "core/fsutil.h"
#include "identity/derive.h"

int km_cap_store_read(const char *path, struct km_buf *blob)
{
    struct km_buf text;
    km_buf_init(&text, KM_CERT_TEXT_MAX);
    int r = km_fs_read_file(path, &text, NULL);
    if (r == 0) {
        r = km_cert_decode_text((const char *)km_buf_peek_ptr(&text), km_buf_len(&text), blob);
    }
    km_buf_reset(&text);
    return r;
}

static int sub_path(char *out, size_t outsz, const char *dir, const char *sub)
{
    return km_fs_join(out, outsz, dir, sub);
}

int km_cap_store_save(const char *dir, const char *sub, const uint8_t *blob, size_t len,
                      uint64_t serial, const char *comment, char *path, size_t pathsz)
{
    char d[4096];
    char p[4096];
    char name[40];
    snprintf(name, sizeof name, "%" PRIu64 ".cert", serial);
    int r = sub_path(d, sizeof d, dir, sub);
    if (r == 0 && (r = km_fs_mkdir_p(d, 0700)) == 0) {
        r = km_fs_join(p, sizeof p, d, name);
    }
    if (r != 0) {
        return r;
    }
    struct km_buf text;
    km_buf_init(&text, KM_CERT_TEXT_MAX);
    if ((r = km_cert_format_text(blob, len, comment, &text)) == 0) {
        r = km_fs_write_atomic(p, km_buf_peek_ptr(&text), km_buf_len(&text), 0644, 1);
    }
    km_buf_reset(&text);
    if (r == 0 && path != NULL) {
        snprintf(path, pathsz, "%s", p);
    }
    return r;
}

int km_cap_store_load_revoked(const char *dir, struct km_cap_policy *p, size_t *line)
{
    *line = 0;
    char path[4096];
    int r = sub_path(path, sizeof path, dir, KM_CAP_REVOKED);
    if (r != 0) {
        return r;
    }
    struct km_buf text;
    km_buf_init(&text, KM_CAP_REVOKED_MAX);
    r = km_fs_read_file(path, &text, NULL);
    if (r == -ENOENT) {
        r = 0;
    } else if (r == 0) {
        r = km_cap_policy_add_revocations(p, (const char *)km_buf_peek_ptr(&text),
                                          km_buf_len(&text), line);
    }
    km_buf_reset(&text);
    return r;
}

int km_cap_store_revoke(const char *dir, const char *line)
{
    char path[4096];
    char caps[4096];
    int r = sub_path(caps, sizeof caps, dir, "caps");
    if (r != 0 || (r = km_fs_mkdir_p(caps, 0700)) != 0 ||
        (r = sub_path(path, sizeof path, dir, KM_CAP_REVOKED)) != 0) {
        return r;
    }
    struct km_buf text;
    km_buf_init(&text, KM_CAP_REVOKED_MAX);
    r = km_fs_read_file(path, &text, NULL);
    if (r == -ENOENT) {
        r = 0;
    }
    if (r == 0 && km_buf_len(&text) > 0 && km_buf_peek_ptr(&text)[km_buf_len(&text) - 1] != '\n') {
        r = km_buf_put_u8(&text, '\n');
    }
    if (r == 0 && (r = km_buf_put_bytes(&text, line, strlen(line))) == 0 &&
        (r = km_buf_put_u8(&text, '\n')) == 0) {
        r = km_fs_write_atomic(path, km_buf_peek_ptr(&text), km_buf_len(&text), 0644, 1);
    }
    km_buf_reset(&text);
    return r;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int km_cap_store_each(const char *dir, const char *sub, km_cap_store_cb cb, void *arg)
{
    char d[4096];
    int r = sub_path(d, sizeof d, dir, sub);
    if (r != 0) {
        return r;
    }
    DIR *dh = opendir(d);
    if (dh == NULL) {
        return errno == ENOENT ? 0 : -errno;
    }
    char *names[1024];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(dh)) != NULL && n < sizeof names / sizeof names[0]) {
        size_t l = strlen(e->d_name);
        if (l > 5 && strcmp(e->d_name + l - 5, ".cert") == 0) {
            names[n] = strdup(e->d_name);
            if (names[n] != NULL) {
                n++;
            }
        }
    }
    closedir(dh);
    qsort(names, n, sizeof names[0], cmp_names);
    struct km_cert *c = malloc(sizeof *c);
    struct km_buf blob;
    km_buf_init(&blob, KM_CERT_BLOB_MAX);
    for (size_t i = 0; i < n; i++) {
        char p[4096];
        km_buf_clear(&blob);
        int e2 = km_fs_join(p, sizeof p, d, names[i]);
        if (e2 == 0) {
            e2 = km_cap_store_read(p, &blob);
        }
        if (e2 == 0 && c != NULL) {
            e2 = km_cert_parse(km_buf_peek_ptr(&blob), km_buf_len(&blob), c);
        }
        cb(arg, p, e2 == 0 ? c : NULL, km_buf_peek_ptr(&blob), km_buf_len(&blob),
           c == NULL ? -ENOMEM : e2);
        free(names[i]);
    }
    km_buf_reset(&blob);
    free(c);
    return 0;
}

struct pick {
    const struct km_pubkey *self;
    const struct km_pubkey *target;
    uint64_t now;
    uint64_t best_before;
    struct km_buf *out;
    bool found;
};

static void pick_cb(void *arg, const char *path, const struct km_cert *c, const uint8_t *blob,
                    size_t len, int err)
{
    (void)path;
    struct pick *pk = arg;
    if (err != 0 || c == NULL || !km_pubkey_equal(&c->key, pk->self) || c->type != KM_CERT_USER ||
        pk->now < c->valid_after || pk->now >= c->valid_before ||
        (pk->found && c->valid_before <= pk->best_before)) {
        return;
    }
    bool names = false;
    for (size_t i = 0; i < c->n_principals && !names; i++) {
        struct km_pubkey k;
        names = km_node_id_parse(c->principals[i], strlen(c->principals[i]), &k) == 0 &&
                km_pubkey_equal(&k, pk->target);
    }
    if (!names) {
        return;
    }
    km_buf_clear(pk->out);
    if (km_buf_put_bytes(pk->out, blob, len) == 0) {
        pk->found = true;
        pk->best_before = c->valid_before;
    }
}

int km_cap_store_pick(const char *dir, const struct km_pubkey *self, const struct km_pubkey *target,
                      uint64_t now_s, struct km_buf *out)
{
    struct km_buf tmp;
    km_buf_init(&tmp, KM_CERT_BLOB_MAX);
    struct pick pk = {self, target, now_s, 0, &tmp, false};
    int r = km_cap_store_each(dir, KM_CAP_HELD, pick_cb, &pk);
    if (r == 0 && !pk.found) {
        r = KM_ERR_NOT_FOUND;
    }
    if (r == 0) {
        r = km_buf_put_bytes(out, km_buf_peek_ptr(&tmp), km_buf_len(&tmp));
    }
    km_buf_reset(&tmp);
    return r;
}
