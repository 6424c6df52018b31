/* Generic configuration reading: INI files through libinih, with file:line errors, plus
 * the value parsers every layer's options use (ports, host:port, booleans, durations,
 * sizes). The keymesh schema itself lives in core/daemon/config.c, which knows every layer.
 *
 * Reading follows the init / line / finish shape of STYLE.md section 7: km_conf_parse()
 * checks the whole text first (size, line length, NUL bytes), then hands each
 * (section, key, value, line) to the caller's callback; the first error stops the parse and
 * is reported as "<file>:<line>: <message>". */
#ifndef KM_CORE_CONF_H
#define KM_CORE_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Longest line accepted (libinih's buffer is 200 bytes including newline and NUL). */
#define KM_CONF_MAX_LINE 198
/* Largest configuration file accepted. */
#define KM_CONF_MAX_SIZE (1u << 20)
#define KM_CONF_ERR_LEN 512

/* Called once per key. section is "" before the first [section]. Return 0 to go on, or a
 * negative code after writing a message (without file:line) into err[0..errsz). */
typedef int (*km_conf_cb)(void *ctx, const char *section, const char *key, const char *value,
                          int line, char *err, size_t errsz);

/* Called once per [section] header, before its keys, so unknown sections can be reported
 * even when empty. section is the name between the brackets with surrounding whitespace
 * removed (never empty). Same contract as km_conf_cb. May be NULL. */
typedef int (*km_conf_section_cb)(void *ctx, const char *section, int line, char *err,
                                  size_t errsz);

/* Parse text[0..len) (need not be NUL-terminated) named filename (for messages; NULL gives
 * "<config>"). Returns 0; KM_ERR_CONFIG with err holding "<filename>:<line>: <message>" on a
 * syntax error, a callback's refusal, an over-long line or a NUL byte; KM_ERR_TOO_LARGE past
 * KM_CONF_MAX_SIZE (err "<filename>: file too large ..."); -ENOMEM if a callback returned it.
 * No callback runs after the first error, and none at all if the size, NUL or line-length
 * check fails. Syntax beyond libinih's: a UTF-8 BOM and CRLF endings are accepted; a line
 * starting with whitespace (other than a blank or comment line) is refused, because inih would
 * join it to the previous value; text after a header's ']' (other than a ';' or '#' comment)
 * and an empty key name are refused. err may be NULL when errsz is 0. */
KM_MUST_CHECK int km_conf_parse(const char *text, size_t len, const char *filename, km_conf_cb cb,
                                km_conf_section_cb section_cb, void *ctx, char *err, size_t errsz);

/* Read path and parse it as km_conf_parse. -errno if the file cannot be read,
 * KM_ERR_INVALID if it is not a regular file, KM_ERR_TOO_LARGE past KM_CONF_MAX_SIZE, each
 * with err set to "<path>: <reason>". */
KM_MUST_CHECK int km_conf_parse_file(const char *path, km_conf_cb cb, km_conf_section_cb section_cb,
                                     void *ctx, char *err, size_t errsz);

/* Value parsers. Each returns 0 or KM_ERR_INVALID and leaves *out unchanged on failure. */

/* A TCP/UDP port 1..65535 in decimal digits only (no sign, no whitespace). */
KM_MUST_CHECK int km_conf_port(const char *s, uint16_t *out);

/* "true/false", "yes/no", "on/off", "1/0" (case-insensitive). */
KM_MUST_CHECK int km_conf_bool(const char *s, bool *out);

/* A duration: a decimal number with unit ms, s, m, h or d ("30s", "5m", "250ms"); a bare
 * number is seconds. Result in milliseconds, at most 366 days. */
KM_MUST_CHECK int km_conf_duration_ms(const char *s, uint64_t *out);

/* A size: a decimal number with optional K, M or G (powers of 1024, either case). At most
 * 1 TiB. */
KM_MUST_CHECK int km_conf_size(const char *s, uint64_t *out);

/* A listen address "host:port", "[v6]:port" or "port" (host then defaults to def_host; NULL
 * refuses a bare port). host must be an IPv4 or IPv6 literal (not a name: binding must not
 * depend on DNS; no zone IDs); IPv6 needs brackets. host is stored without brackets in
 * inet_ntop's canonical form ("[0:0::1]" gives "::1"). */
struct km_conf_addr {
    char host[46]; /* INET6_ADDRSTRLEN */
    uint16_t port;
};
KM_MUST_CHECK int km_conf_listen_addr(const char *s, const char *def_host,
                                      struct km_conf_addr *out);

/* True when two listen addresses would collide on bind: the same port and the same host, or
 * the same port and either host a wildcard of an overlapping family (0.0.0.0 or ::). "::" is
 * taken as dual-stack (it covers IPv4 too), and an IPv4-mapped IPv6 address counts as its
 * IPv4 address. */
bool km_conf_addr_conflict(const struct km_conf_addr *a, const struct km_conf_addr *b);

#endif
