/* One error space for the whole project (STYLE.md section 5).
 *
 * A fallible function returns int: 0 on success, a negative code on failure.
 * System errors are stored as -errno (the range -1 .. -4095, as libuv does);
 * keymesh's own codes live at -5000 and below and are listed in KM_ERR_MAP. */
#ifndef KM_CORE_ERR_H
#define KM_CORE_ERR_H

#include <errno.h>

#define KM_MUST_CHECK __attribute__((warn_unused_result))

/* Convert a positive errno value to a keymesh error code. */
#define KM_ERR_SYS(e) (-(e))

/* X(name, value, message). Parsers distinguish INCOMPLETE (wait for more bytes) from
 * INVALID (drop the peer), and TOO_LARGE and UNSUPPORTED from both, because each needs a
 * different reply on the wire. */
#define KM_ERR_MAP(X)                                                                \
    X(INCOMPLETE, -5000, "incomplete input")                                         \
    X(INVALID, -5001, "invalid input")                                               \
    X(TOO_LARGE, -5002, "too large")                                                 \
    X(UNSUPPORTED, -5003, "unsupported")                                             \
    X(TRAILING, -5004, "trailing bytes after the end of a message")                  \
    X(READONLY, -5005, "write to a read-only buffer")                                \
    X(KEY_PERMS, -5100, "key file permissions are too open (run chmod 600)")         \
    X(KEY_ENCRYPTED, -5101, "key file is encrypted")                                 \
    X(KEY_TYPE, -5102, "key is not ed25519")                                         \
    X(KEY_CORRUPT, -5103, "key file is corrupt")                                     \
    X(KEY_MISMATCH, -5104, "private and public key do not match")                    \
    X(CRYPTO, -5105, "cryptographic operation failed")                               \
    X(NODE_ID, -5106, "not a node ID (52 base32 characters a-z, 2-7)")               \
    X(CONFIG, -5200, "configuration error")                                          \
    X(USAGE, -5201, "bad command-line usage")                                        \
    X(NOT_RUNNING, -5202, "the daemon is not running")                               \
    X(CTL_PROTO, -5203, "control protocol error")                                    \
    X(ALREADY_RUNNING, -5204, "another daemon is running with this state directory") \
    X(REFUSED, -5300, "refused by policy")                                           \
    X(NOT_FOUND, -5301, "no such node or name")                                      \
    X(UNREACHABLE, -5302, "no working path to the peer")                             \
    X(HOST_KEY, -5303, "peer host key does not match its node ID")                   \
    X(AUTH, -5304, "authentication failed")                                          \
    X(CLOSED, -5305, "stream or connection closed")                                  \
    X(SSH, -5306, "SSH protocol error")                                              \
    X(CAP_EXPIRED, -5307, "capability expired")

enum km_err {
    KM_OK = 0,
#define KM_ERR_ENUM(name, value, msg) KM_ERR_##name = (value),
    KM_ERR_MAP(KM_ERR_ENUM)
#undef KM_ERR_ENUM
};

/* Human-readable message for any code (keymesh or -errno). Never NULL; static storage. */
const char *km_strerror(int err);

/* Symbolic name ("KM_ERR_INVALID", "ENOENT") for any code. Never NULL; static storage. */
const char *km_err_name(int err);

#endif
