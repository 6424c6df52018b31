/* Internals shared by proto/ssh_*.c. Not for other modules. */
#ifndef KM_PROTO_SSH_INT_H
#define KM_PROTO_SSH_INT_H

#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/server.h>

#include "core/buf.h"
#include "proto/ssh.h"

/* Largest write queue a channel stream accepts beyond the relay's high-water mark: the relay
 * pauses at KM_STREAM_HIGH_WATER, so this only guards against a misbehaving consumer. */
#define KM_SSH_CHAN_QUEUE_MAX (8u << 20)

/* How often live certificate logins are decided again (revocations, config changes). */
#define KM_SSH_RECHECK_MS 5000u

/* Largest certificate blob passed to the authorize_cert hook (cap/cert.h allows 8 KiB). */
#define KM_SSH_CERT_MAX 8192u

struct km_ssh_chan;

struct km_ssh_listener {
    struct km_ssh_node *node;
    uv_poll_t poll;
    int fd;
    uint16_t port;
    struct km_ssh_listener *next;
};

struct km_ssh_node {
    uv_loop_t *loop;
    ssh_bind bind;
    ssh_key key; /* our key for client authentication */
    struct km_pubkey pub;
    struct km_ssh_opts opts;
    struct km_ssh_hooks hooks;
    struct km_ssh_listener *listeners;
    struct km_ssh_conn *conns;
    struct km_ssh_chan *orphans;  /* streams whose conn is gone, freed once their user closes */
    struct km_ssh_sess *sessions; /* session channels and their children (ssh_session.c) */
    unsigned next_sess_id;
    uv_timer_t reaper;  /* frees orphans and dead conns outside callbacks */
    uv_timer_t recheck; /* certificate logins decided again (KM_SSH_RECHECK_MS) */
    unsigned n_conns;
    unsigned n_unauth;
    unsigned next_id;
    unsigned pending_closes;
    unsigned timers_closed; /* reaper and recheck: the node is freed when both are */
    bool closing;
    char ciphers[160];
};

enum km_ssh_state {
    KM_SSH_TCP,   /* client: TCP connect in progress */
    KM_SSH_KEX,   /* banner and key exchange */
    KM_SSH_AUTH,  /* client: authenticating; server: waiting for the client to */
    KM_SSH_READY, /* authenticated: channels may flow */
    KM_SSH_DEAD,  /* torn down; waiting for handles to close */
};

struct km_ssh_open {
    struct km_ssh_conn *conn;
    struct km_ssh_chan *chan;
    km_ssh_open_cb cb;
    void *arg;
    char host[256];
    uint16_t port;
    bool reverse; /* forwarded-tcpip (RFC 4254 7.2) instead of direct-tcpip */
    char orig[64];
    uint16_t orig_port;
    bool cancelled;
    struct km_ssh_open *next;
};

struct km_ssh_direct {
    struct km_ssh_conn *conn; /* NULL once the conn is gone */
    ssh_message msg;          /* the CHANNEL_OPEN, owned until answered */
    char what[320];
    struct km_ssh_direct *next;
};

struct km_ssh_conn {
    struct km_ssh_node *node;
    ssh_session s;
    ssh_event ev;
    uv_poll_t poll;
    uv_timer_t timer; /* connect/login deadline */
    uv_timer_t tick;  /* deferred work: flush, drain, reap */
    int fd;
    int cur_events;
    enum km_ssh_state state;
    bool server;
    bool peer_verified;
    bool tick_pending;
    bool in_pass; /* inside process(): do not recurse */
    bool closing;
    bool notified_ready;
    bool counted_unauth;
    unsigned pending_closes;
    unsigned id;
    unsigned n_chans;
    int close_err;
    uint64_t idle_since_ms;
    struct km_pubkey peer;
    char user[64];
    char peer_ip[48];          /* server: the client's address, for source-address */
    struct km_ssh_grant grant; /* server: the capability the client logged in with */
    bool has_grant;
    bool cert_refused_logged; /* one log line per refused certificate login */
    uint8_t *cert;            /* server: the certificate the client logged in with */
    size_t cert_len;
    ssh_key auth_key; /* client: our key with a certificate, while authenticating */
    int auth_step;    /* client: 0 plain key, 1 certificate, 2 done */
    struct km_ssh_chan *chans;
    struct km_ssh_open *opens;
    struct km_ssh_direct *directs; /* requests the daemon is still connecting */
    struct km_ssh_fwd *fwds;       /* reverse forwards this client registered */
    unsigned n_fwds;
    unsigned n_directs;
    unsigned auth_failures;
    km_ssh_ready_cb ready_cb;
    void *ready_arg;
    char desc[96];
    struct km_ssh_conn *next;
};

/* ---- ssh_chan.c ---- */

/* A channel stream for ch on c (callbacks installed). NULL on allocation failure. */
struct km_ssh_chan *km__ssh_chan_new(struct km_ssh_conn *c, ssh_channel ch, const char *what);
struct km_stream *km__ssh_chan_stream(struct km_ssh_chan *ch);
ssh_channel km__ssh_chan_channel(const struct km_ssh_chan *ch);
/* After each libssh pass: flush queued writes where the window allows, deliver buffered data
 * and EOF to readers, finish closes. Returns true if the chan is finished and may be reaped. */
bool km__ssh_chan_service(struct km_ssh_chan *ch);
/* The conn is going away: end the stream with err unless its user closed it already;
 * the libssh channel is forgotten (ssh_free releases it). Returns true if the chan may be
 * freed now (its user closed it), false if it becomes an orphan awaiting close(). */
bool km__ssh_chan_detach(struct km_ssh_chan *ch, int err);
void km__ssh_chan_free(struct km_ssh_chan *ch);
bool km__ssh_chan_closed_by_user(const struct km_ssh_chan *ch);
/* Queued bytes the peer's window now has room for (a check that reads nothing). */
bool km__ssh_chan_wants_service(const struct km_ssh_chan *ch);
struct km_ssh_chan *km__ssh_chan_next(const struct km_ssh_chan *ch);
void km__ssh_chan_set_next(struct km_ssh_chan *ch, struct km_ssh_chan *next);

/* Send exit-status (status >= 0) or exit-signal (signame) just before the channel's CLOSE,
 * after the queued data and EOF. */
void km__ssh_chan_set_exit(struct km_ssh_chan *ch, int status, const char *signame);
/* The peer sent CLOSE on this channel. */
bool km__ssh_chan_peer_closed(const struct km_ssh_chan *ch);

/* ---- ssh_session.c ---- */

struct km_ssh_sess;
/* A "session" channel open on c: accept it (0) when the conn's grant allows shell or exec,
 * else KM_ERR_REFUSED (logged; the caller answers the message). */
int km__ssh_sess_open(struct km_ssh_conn *c, ssh_message m);
/* A channel request; true if it was for one of our sessions (answered and freed). */
bool km__ssh_sess_request(struct km_ssh_conn *c, ssh_message m);
/* c is going away (before its libssh session is freed): sessions forget its channels. */
void km__ssh_sess_conn_gone(struct km_ssh_conn *c);
/* Node shutdown: every child is killed (and reaped as usual). */
void km__ssh_sess_close_all(struct km_ssh_node *n);
/* Free sessions that never started a child and are finished (the reaper). */
void km__ssh_sess_reap(struct km_ssh_node *n);

/* ---- ssh_forward.c ---- */

struct km_ssh_fwd;
/* A tcpip-forward or cancel-tcpip-forward global request (answered and freed). */
void km__ssh_fwd_request(struct km_ssh_conn *c, ssh_message m);
/* c is going away: its listeners close. */
void km__ssh_fwd_conn_gone(struct km_ssh_conn *c);

/* ---- ssh_conn.c ---- */

/* Open a channel: direct-tcpip to host:port, or with orig != NULL forwarded-tcpip for the
 * remote forward host:port from orig:orig_port. As km_ssh_open_direct otherwise. */
int km__ssh_open(struct km_ssh_conn *c, const char *host, uint16_t port, const char *orig,
                 uint16_t orig_port, km_ssh_open_cb cb, void *arg, struct km_ssh_open **req);

/* Decide a certificate login again; disconnect it if it is no longer valid. */
void km__ssh_conn_recheck(struct km_ssh_conn *c);
/* Schedule a processing pass on the next loop iteration. */
void km__ssh_conn_kick(struct km_ssh_conn *c);
/* A server conn for an accepted, non-blocking socket. */
int km__ssh_conn_accept(struct km_ssh_node *n, int fd);
void km__ssh_conn_unlink(struct km_ssh_conn *c);

/* ---- ssh_node.c ---- */

/* Convert between libssh keys and ours. */
int km__ssh_key_to_pub(ssh_key k, struct km_pubkey *out);
void km__ssh_node_kick_reaper(struct km_ssh_node *n);
void km__ssh_node_adopt_orphan(struct km_ssh_node *n, struct km_ssh_chan *ch);
/* Apply the node's algorithm choices to a client session. */
int km__ssh_session_options(struct km_ssh_node *n, ssh_session s);
uint64_t km__ssh_now_ms(const struct km_ssh_node *n);

#endif
