/* The one logger (STYLE.md section 11). Only the daemon and the CLI emit log lines;
 * library code returns error codes instead.
 *
 * Lines go to stderr as "LEVEL func: message". Every message should name its object
 * ("conn 42: ...") and quote untrusted strings through km_log_escape(). */
#ifndef KM_CORE_LOG_H
#define KM_CORE_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum km_log_level {
    KM_LOG_DEBUG = 0,
    KM_LOG_INFO = 1,
    KM_LOG_WARN = 2,
    KM_LOG_ERROR = 3,
    KM_LOG_OFF = 4,
};

/* Set the lowest level that is written (default KM_LOG_INFO). */
void km_log_set_level(enum km_log_level level);
enum km_log_level km_log_get_level(void);

/* Parse "debug", "info", "warn", "error" or "off" (case-insensitive). Returns 0 or
 * KM_ERR_INVALID. */
int km_log_level_parse(const char *s, enum km_log_level *out);

/* Name of a level ("info"). */
const char *km_log_level_name(enum km_log_level level);

/* True when a message at this level would be written; guard costly formatting with it. */
bool km_log_enabled(enum km_log_level level);

/* Write one line. err != 0 appends ": <km_strerror(err)>". Use the macros below. */
void km_log_write(enum km_log_level level, const char *func, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A rate limit for log lines a peer can cause (STYLE.md section 11): at most per_sec lines
 * per second. Zero-initialise; call km_log_ratelimit_ok(&rl, now_ms) before logging. */
struct km_log_ratelimit {
    uint64_t window_ms; /* start of the current one-second window */
    unsigned count;     /* lines in it so far */
    unsigned per_sec;
};

/* True when one more line may be written now. */
bool km_log_ratelimit_ok(struct km_log_ratelimit *rl, uint64_t now_ms);

/* Escape untrusted bytes for a log line: printable ASCII is kept except '"' and '\\', everything
 * else becomes \xNN. Writes at most outsz bytes including the NUL, truncating with "..." if
 * needed. Returns out. */
char *km_log_escape(char *out, size_t outsz, const void *in, size_t len);

#define KM_LOG_AT(lvl, err, ...)                               \
    do {                                                       \
        if (km_log_enabled(lvl)) {                             \
            km_log_write((lvl), __func__, (err), __VA_ARGS__); \
        }                                                      \
    } while (0)

#define KM_DEBUG(...) KM_LOG_AT(KM_LOG_DEBUG, 0, __VA_ARGS__)
#define KM_INFO(...) KM_LOG_AT(KM_LOG_INFO, 0, __VA_ARGS__)
#define KM_WARN(...) KM_LOG_AT(KM_LOG_WARN, 0, __VA_ARGS__)
#define KM_ERROR(...) KM_LOG_AT(KM_LOG_ERROR, 0, __VA_ARGS__)
/* _r variants append the message of error code r. */
#define KM_DEBUG_R(r, ...) KM_LOG_AT(KM_LOG_DEBUG, (r), __VA_ARGS__)
#define KM_INFO_R(r, ...) KM_LOG_AT(KM_LOG_INFO, (r), __VA_ARGS__)
#define KM_WARN_R(r, ...) KM_LOG_AT(KM_LOG_WARN, (r), __VA_ARGS__)
#define KM_ERROR_R(r, ...) KM_LOG_AT(KM_LOG_ERROR, (r), __VA_ARGS__)

#endif
