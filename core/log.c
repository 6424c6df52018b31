#include "core/log.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>

#include "core/err.h"

static enum km_log_level g_level = KM_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void km_log_set_level(enum km_log_level level)
{
    g_level = level;
}

enum km_log_level km_log_get_level(void)
{
    return g_level;
}

int km_log_level_parse(const char *s, enum km_log_level *out)
{
    for (unsigned i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum km_log_level)i;
            return 0;
        }
    }
    return KM_ERR_INVALID;
}

const char *km_log_level_name(enum km_log_level level)
{
    if ((unsigned)level >= sizeof level_names / sizeof level_names[0]) {
        return "?";
    }
    return level_names[level];
}

bool km_log_enabled(enum km_log_level level)
{
    return level >= g_level && level < KM_LOG_OFF;
}

void km_log_write(enum km_log_level level, const char *func, int err, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    /* One fprintf per line so concurrent writers do not interleave within a line. */
    if (err != 0) {
        fprintf(stderr, "%s.%03ldZ %-5s %s: %s: %s\n", when, ts.tv_nsec / 1000000L,
                km_log_level_name(level), func, msg, km_strerror(err));
    } else {
        fprintf(stderr, "%s.%03ldZ %-5s %s: %s\n", when, ts.tv_nsec / 1000000L,
                km_log_level_name(level), func, msg);
    }
}

char *km_log_escape(char *out, size_t outsz, const void *in, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = in;
    size_t o = 0;
    if (outsz == 0) {
        return out;
    }
    /* Reserve room for "..." only when the whole escaped text does not fit. */
    size_t full = 0;
    for (size_t i = 0; i < len; i++) {
        full += (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\') ? 1 : 4;
    }
    size_t reserve = full < outsz ? 1 : 4;
    for (size_t i = 0; i < len; i++) {
        char tmp[4];
        size_t tl;
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\') {
            tmp[0] = (char)p[i];
            tl = 1;
        } else {
            tmp[0] = '\\';
            tmp[1] = 'x';
            tmp[2] = hex[p[i] >> 4];
            tmp[3] = hex[p[i] & 15];
            tl = 4;
        }
        /* Keep room for "..." and the NUL. */
        if (o + tl + reserve > outsz) {
            size_t k = 0;
            while (k < 3 && o + 1 < outsz) {
                out[o++] = '.';
                k++;
            }
            break;
        }
        for (size_t k = 0; k < tl; k++) {
            out[o++] = tmp[k];
        }
    }
    out[o] = '\0';
    return out;
}

bool km_log_ratelimit_ok(struct km_log_ratelimit *rl, uint64_t now_ms)
{
    if (now_ms - rl->window_ms >= 1000) {
        rl->window_ms = now_ms;
        rl->count = 0;
    }
    return rl->count++ < (rl->per_sec != 0 ? rl->per_sec : 20);
}
