/* The SSH mesh transport: libssh sessions, both roles, driven non-blocking on the libuv loop
 * (DESIGN.md section 4).
 *
 * A km_ssh_node holds this node's key, the crypto and limit settings and the daemon's policy
 * hooks. It listens for peers (server role) and dials them (client role); either way a
 * session becomes a km_ssh_conn, and each direct-tcpip channel on it a km_stream that the
 * relay splices like any socket.
 *
 * Trust: a dialled session is usable only after the server's host key equals the key the
 * caller expected (the node ID being dialled); an accepted session only after the client
 * proved possession of a key the authorize hook accepts. Nothing else identifies a peer. */
#ifndef KM_PROTO_SSH_H
#define KM_PROTO_SSH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "core/err.h"
#include "core/stream.h"
#include "identity/key.h"

struct km_ssh_opts {
    unsigned login_grace_ms;     /* server: time allowed from accept to authenticated */
    unsigned connect_timeout_ms; /* client: TCP connect + key exchange + authentication */
    unsigned keepalive_ms;       /* TCP keepalive idle time; dead peers found in ~2x this */
    unsigned max_sessions;       /* sessions (both roles) at once */
    unsigned max_unauth;         /* accepted sessions not yet authenticated */
    unsigned max_channels;       /* channels per session */
    bool prefer_aes;             /* AES-GCM first (CPU has AES instructions), else ChaCha20 */
};

/* Fill o with the defaults documented in docs/CONFIG.md. prefer_aes follows the CPU. */
void km_ssh_opts_default(struct km_ssh_opts *o);

/* True when this CPU has AES instructions (x86 AES-NI, arm64 AES). */
bool km_ssh_cpu_has_aes(void);

struct km_ssh_conn;
struct km_ssh_direct; /* a direct-tcpip request waiting for its answer */

/* What a capability certificate a client authenticated with allows on this node (filled by
 * the authorize_cert hook; docs/CAPABILITIES.md). */
#define KM_SSH_GRANT_COMMAND_MAX 1023u
#define KM_SSH_GRANT_MAX_PORTS 32u
struct km_ssh_grant {
    uint64_t serial;
    uint64_t ends_at_s; /* seconds since the epoch: the session is cut then */
    bool shell;         /* session channels may run a login shell */
    bool exec;          /* session channels run command, whatever the client asks */
    bool pty;           /* a pty may be allocated */
    bool expose;        /* reverse forwards may be registered */
    char command[KM_SSH_GRANT_COMMAND_MAX + 1];
    char account[33]; /* the local account sessions run as; "" = sessions refused */
    uint16_t ports[KM_SSH_GRANT_MAX_PORTS]; /* local ports direct-tcpip may reach */
    size_t n_ports;
};

/* Decisions and events the daemon supplies. Hooks run on the loop, possibly from inside
 * libssh; they must not close the connection they are called for (mark and defer). */
struct km_ssh_hooks {
    /* Server: may key log in as user? Return 0 to accept, KM_ERR_REFUSED otherwise. Called
     * only for ssh-ed25519 keys, once with the signature verified. */
    int (*authorize)(void *arg, const struct km_pubkey *key, const char *user);
    /* Server: may this ssh-ed25519-cert-v01 certificate (its wire blob) log in as user from
     * peer (the client's address as text)? Return 0 and fill *grant (and *key, the
     * certified key) to accept, or a negative code with a one-line reason in why. Called
     * once before and once after the client's signature by the certified key is verified.
     * May be NULL: certificates are then refused. */
    int (*authorize_cert)(void *arg, const uint8_t *blob, size_t len, const char *user,
                          const char *peer, struct km_pubkey *key, struct km_ssh_grant *grant,
                          char *why, size_t whysz);
    /* Client: a certificate for our key to present to target when it refuses the plain key
     * (its wire blob, appended to out). Return 0 if there is one, KM_ERR_NOT_FOUND if not.
     * May be NULL. */
    int (*client_cert)(void *arg, const struct km_pubkey *target, struct km_buf *out);
    /* Either role: the authenticated peer asks for a direct-tcpip stream to host:port.
     * grant is the peer's capability when it logged in with a certificate, else NULL.
     * Return 0 to go on (on_direct follows at once) or KM_ERR_REFUSED. */
    int (*allow_direct)(void *arg, const struct km_pubkey *peer, const struct km_ssh_grant *grant,
                        const char *host, uint16_t port);
    /* An allowed request, not yet answered: the callee connects to host:port first and then
     * calls km_ssh_direct_accept (the channel opens) or km_ssh_direct_reject, exactly once.
     * host is valid only during the call. */
    void (*on_direct)(void *arg, const struct km_pubkey *peer, const char *host, uint16_t port,
                      struct km_ssh_direct *d);
    /* Server role: a peer logged in. If it is another keymesh node (km_ssh_conn_reverse_ok)
     * the daemon may open streams to it over this same session. May be NULL. */
    void (*on_conn_accepted)(void *arg, struct km_ssh_conn *c);
    /* A session ended (after ready or not). err is why. Called once per conn, after which
     * the conn pointer is invalid. May be NULL. */
    void (*on_conn_closed)(void *arg, struct km_ssh_conn *c, int err);
    void *arg;
};

struct km_ssh_node;

/* Create a node. key is copied into libssh's form; o and hooks are copied. Returns 0 or a
 * negative code. */
KM_MUST_CHECK int km_ssh_node_new(uv_loop_t *loop, const struct km_key *key,
                                  const struct km_ssh_opts *o, const struct km_ssh_hooks *hooks,
                                  struct km_ssh_node **out);

/* Listen for peers on addr (may be called for several addresses). Returns 0 or -errno. */
KM_MUST_CHECK int km_ssh_node_listen(struct km_ssh_node *n, const struct sockaddr *addr);

/* The port actually bound by the i-th listener (for port 0 in tests), or 0. */
uint16_t km_ssh_node_listen_port(const struct km_ssh_node *n, unsigned i);

/* Close listeners and every session (their streams end with KM_ERR_CLOSED) and free the node
 * once all handles are closed. Idempotent; accepts NULL. */
void km_ssh_node_close(struct km_ssh_node *n);

/* Counts for status. */
unsigned km_ssh_node_sessions(const struct km_ssh_node *n);

/* Client role. cb reports once: err 0 when the session is authenticated and ready, or an
 * error (KM_ERR_HOST_KEY, KM_ERR_AUTH, -ETIMEDOUT, -ECONNREFUSED, KM_ERR_SSH, ...), after
 * which the conn is gone (on_conn_closed is not called for a conn that never became ready).
 * The conn is returned at once in *out so the caller may close it to cancel (then cb is not
 * called). user is the SSH user name to authenticate as. */
typedef void (*km_ssh_ready_cb)(struct km_ssh_conn *c, int err, void *arg);
KM_MUST_CHECK int km_ssh_dial(struct km_ssh_node *n, const struct sockaddr *addr,
                              const struct km_pubkey *expected, const char *user,
                              km_ssh_ready_cb cb, void *arg, struct km_ssh_conn **out);

/* Client role over a connected stream socket (e.g. one end of a socketpair whose other end
 * is spliced to a relayed channel): as km_ssh_dial, with the same host-key check against
 * expected. Takes ownership of fd (closed on every error too); label names the conn in logs
 * and status ("relay via ..."). */
KM_MUST_CHECK int km_ssh_dial_fd(struct km_ssh_node *n, int fd, const char *label,
                                 const struct km_pubkey *expected, const char *user,
                                 km_ssh_ready_cb cb, void *arg, struct km_ssh_conn **out);

/* Server role over a connected stream socket, as if accepted on a listener (login grace,
 * authorize hook, limits: KM_ERR_TOO_LARGE at max_sessions or max_unauth). Takes ownership
 * of fd. Returns 0 or a negative code. */
KM_MUST_CHECK int km_ssh_accept_fd(struct km_ssh_node *n, int fd, const char *label);

/* Open a direct-tcpip channel on a ready conn (either role). cb reports once with a stream
 * the callee then owns, or an error (KM_ERR_REFUSED when the peer refused the open,
 * KM_ERR_CLOSED if the conn died, KM_ERR_TOO_LARGE at max_channels). Never synchronous. The
 * request handle may be cancelled until cb runs. */
struct km_ssh_open;
typedef void (*km_ssh_open_cb)(void *arg, int err, struct km_stream *s);
KM_MUST_CHECK int km_ssh_open_direct(struct km_ssh_conn *c, const char *host, uint16_t port,
                                     km_ssh_open_cb cb, void *arg, struct km_ssh_open **req);
void km_ssh_open_cancel(struct km_ssh_open *req);

/* Answer a pending direct-tcpip request: open the channel and return its stream in *out
 * (the caller owns it). Frees d. KM_ERR_CLOSED when the conn went away meanwhile. */
KM_MUST_CHECK int km_ssh_direct_accept(struct km_ssh_direct *d, struct km_stream **out);

/* Refuse a pending request and free d. libssh 0.10 can only send the reason
 * SSH_OPEN_ADMINISTRATIVELY_PROHIBITED, whatever err is; err is logged. */
void km_ssh_direct_reject(struct km_ssh_direct *d, int err);

/* The conn a pending direct-tcpip request arrived on (NULL once it is gone). */
struct km_ssh_conn *km_ssh_direct_conn(const struct km_ssh_direct *d);

/* The peer's TCP address of a conn (what a NAT in between made of it: the reflexive
 * address). Returns 0, KM_ERR_CLOSED, KM_ERR_UNSUPPORTED for a conn over a relayed stream
 * (a Unix socket), or -errno. */
KM_MUST_CHECK int km_ssh_conn_peer_addr(const struct km_ssh_conn *c, struct sockaddr_storage *out);

/* The round-trip time of a conn's TCP connection as the kernel measures it, in microseconds
 * (km_tcp_rtt_us: the lowest it has seen lately, or the smoothed RTT). Returns 0,
 * KM_ERR_CLOSED, KM_ERR_UNSUPPORTED for a conn that is not over TCP (a relayed stream's Unix
 * socket) or a kernel with no RTT to give, KM_ERR_INCOMPLETE before the kernel has a sample,
 * or -errno. */
KM_MUST_CHECK int km_ssh_conn_rtt_us(const struct km_ssh_conn *c, uint32_t *out);

/* Close a conn: its streams end with KM_ERR_CLOSED, on_conn_closed follows (if it was ready).
 * Idempotent. */
void km_ssh_conn_close(struct km_ssh_conn *c);

/* The authenticated (server role) or verified (client role) peer key. */
const struct km_pubkey *km_ssh_conn_peer(const struct km_ssh_conn *c);
/* Server role: the capability the peer logged in with, or NULL for a plain key. Borrowed,
 * valid as long as c. */
const struct km_ssh_grant *km_ssh_conn_grant(const struct km_ssh_conn *c);
bool km_ssh_conn_is_client(const struct km_ssh_conn *c);
bool km_ssh_conn_ready(const struct km_ssh_conn *c);
/* True when streams may be opened towards the peer on this conn: always for conns we dialled;
 * for accepted ones only when the client is a keymesh node (libssh's client banner), since
 * stock OpenSSH clients refuse channels opened by the server. */
bool km_ssh_conn_reverse_ok(const struct km_ssh_conn *c);
unsigned km_ssh_conn_channels(const struct km_ssh_conn *c);
/* Milliseconds since the conn last had a channel (0 while it has some). */
uint64_t km_ssh_conn_idle_ms(const struct km_ssh_conn *c);
/* "conn 7 client 127.0.0.1:15022", for logs. */
const char *km_ssh_conn_describe(const struct km_ssh_conn *c);
/* The negotiated cipher (client to server), e.g. "aes128-gcm@openssh.com". */
const char *km_ssh_conn_cipher(const struct km_ssh_conn *c);

#endif
