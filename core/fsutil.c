#include "core/fsutil.h"

#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int km_fs_read_file(const char *path, struct km_buf *out, mode_t *mode_out)
{
    if (mode_out != NULL) {
        *mode_out = 0;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        return -errno;
    }
    int r = 0;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        r = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = KM_ERR_INVALID;
        goto out;
    }
    if (mode_out != NULL) {
        *mode_out = st.st_mode;
    }
    for (;;) {
        uint8_t chunk[4096];
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            r = -errno;
            goto out;
        }
        if (n == 0) {
            break;
        }
        if ((r = km_buf_put_bytes(out, chunk, (size_t)n)) != 0) {
            goto out;
        }
    }
out:
    close(fd);
    return r;
}

static int fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL) {
        return -ENOMEM;
    }
    int r = 0;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
    } else {
        if (fsync(fd) != 0) {
            r = -errno;
        }
        close(fd);
    }
    free(copy);
    return r;
}

int km_fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, int replace)
{
    char tmp[4096];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp) {
        return KM_ERR_TOO_LARGE;
    }
    if (!replace && access(path, F_OK) == 0) {
        return -EEXIST;
    }
    (void)unlink(tmp); /* a stale temporary from a crashed run of this pid */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        return -errno;
    }
    int r = 0;
    /* The umask may have narrowed the mode; set it exactly. */
    if (fchmod(fd, mode) != 0) {
        r = -errno;
        goto fail;
    }
    const uint8_t *p = data;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            r = -errno;
            goto fail;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0) {
        r = -errno;
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        r = -errno;
        goto fail;
    }
    fd = -1;
    if (replace) {
        if (rename(tmp, path) != 0) {
            r = -errno;
            goto fail;
        }
    } else {
        /* link() fails with EEXIST if path appeared meanwhile: never replace silently. */
        if (link(tmp, path) != 0) {
            r = -errno;
            goto fail;
        }
        (void)unlink(tmp);
    }
    return fsync_dir_of(path);
fail:
    if (fd >= 0) {
        close(fd);
    }
    (void)unlink(tmp);
    return r;
}

int km_fs_mkdir_p(const char *path, mode_t mode)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0) {
        return -ENOENT;
    }
    if (len >= sizeof buf) {
        return -ENAMETOOLONG;
    }
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') {
            continue;
        }
        char saved = buf[i];
        buf[i] = '\0';
        /* Parents get 0755 so other users can reach the state directory's own checks. */
        mode_t m = (saved == '\0') ? mode : 0755;
        if (mkdir(buf, m) != 0 && errno != EEXIST) {
            return -errno;
        }
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        return -errno;
    }
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int km_fs_join(char *out, size_t outsz, const char *dir, const char *name)
{
    size_t dl = strlen(dir);
    const char *sep = (dl > 0 && dir[dl - 1] == '/') ? "" : "/";
    int n = snprintf(out, outsz, "%s%s%s", dir, sep, name);
    if (n < 0 || (size_t)n >= outsz) {
        return KM_ERR_TOO_LARGE;
    }
    return 0;
}
