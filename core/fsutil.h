/* Small file-system helpers shared by the CLI, the daemon and the identity store. */
#ifndef KM_CORE_FSUTIL_H
#define KM_CORE_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "core/buf.h"
#include "core/err.h"

/* Read a whole regular file into out (an owned km_buf whose max_size bounds the file size).
 * Returns 0, -errno from open/read, KM_ERR_TOO_LARGE if the file exceeds max_size, or
 * KM_ERR_INVALID if path is not a regular file. If mode_out is non-NULL it receives the
 * file's st_mode (taken from the same open file descriptor, so there is no race). */
KM_MUST_CHECK int km_fs_read_file(const char *path, struct km_buf *out, mode_t *mode_out);

/* Write len bytes to path atomically: a temporary file in the same directory with the given
 * mode, fsync, rename over path (or fail with -EEXIST if path exists and !replace), then
 * fsync the directory. A crash leaves either the old file or the new one, never a mix. */
KM_MUST_CHECK int km_fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                                     int replace);

/* Create directory path and its missing parents; the last component gets mode. An existing
 * directory is accepted as is. Returns 0 or -errno. */
KM_MUST_CHECK int km_fs_mkdir_p(const char *path, mode_t mode);

/* Join dir and name into out ("dir/name"). Returns 0 or KM_ERR_TOO_LARGE if it does not
 * fit in outsz bytes. */
KM_MUST_CHECK int km_fs_join(char *out, size_t outsz, const char *dir, const char *name);

#endif
