#include "core/daemon/punch.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/addr.h"
#include "core/log.h"
#include "identity/derive.h"

/* After a refused or reset attempt (the other side's NAT had no mapping yet), the next one. */
#define RETRY_MS 100u

struct attempt {
    uv_poll_t poll;
    struct km_punch *p; /* NULL once the punch gave up on it */
    int fd;
    bool ok; /* connected: the fd goes to SSH once the poll handle is closed */
};

struct km_punch {
    struct km_punches *ps;
    uv_loop_t *loop;
    struct km_ssh_node *node;
    struct km_mesh *mesh;
    struct km_pubkey peer;
    struct sockaddr_storage to;
    uint16_t local_port;
    bool client;
    uint64_t deadline_ms;
    uv_timer_t timer;
    struct attempt *att;      /* the connect in flight */
    struct km_ssh_conn *conn; /* client: the SSH handshake in flight */
    unsigned attempts;
    int last_err;
    char id[13];
    struct km_punch *next;
};

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_attempt_closed(uv_handle_t *h);

static void drop_attempt(struct km_punch *p)
{
    struct attempt *a = p->att;
    if (a != NULL) {
        p->att = NULL;
        a->p = NULL;
        a->ok = false;
        if (!uv_is_closing((uv_handle_t *)&a->poll)) {
            uv_close((uv_handle_t *)&a->poll, on_attempt_closed);
        }
    }
}

/* The punch is over (either way): unlink and free it. */
static void finish(struct km_punch *p, bool ok)
{
    for (struct km_punch **pp = &p->ps->head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    drop_attempt(p);
    if (p->conn != NULL) {
        km_ssh_conn_close(p->conn);
        p->conn = NULL;
    }
    if (!ok) {
        char a[KM_ADDR_STRLEN];
        KM_DEBUG("punch to %s... at %s: no connection after %u attempts (%s); staying relayed",
                 p->id, km_addr_str((const struct sockaddr *)&p->to, a, sizeof a), p->attempts,
                 km_strerror(p->last_err));
    }
    (void)uv_timer_stop(&p->timer);
    p->timer.data = p;
    uv_close((uv_handle_t *)&p->timer, on_timer_closed);
}

static void on_ssh_ready(struct km_ssh_conn *c, int err, void *arg)
{
    struct km_punch *p = arg;
    p->conn = NULL;
    if (err != 0) {
        p->last_err = err;
        finish(p, false);
        return;
    }
    km_mesh_punched(p->mesh, c, (const struct sockaddr *)&p->to);
    finish(p, true);
}

/* The connected socket becomes an SSH session, in the role the gateway assigned. */
static void handoff(struct km_punch *p, int fd)
{
    char a[KM_ADDR_STRLEN];
    char label[80];
    snprintf(label, sizeof label, "punched %s",
             km_addr_str((const struct sockaddr *)&p->to, a, sizeof a));
    if (p->client) {
        int r = km_ssh_dial_fd(p->node, fd, label, &p->peer, "keymesh", on_ssh_ready, p, &p->conn);
        if (r != 0) {
            p->conn = NULL;
            p->last_err = r;
            finish(p, false);
        }
        return;
    }
    int r = km_ssh_accept_fd(p->node, fd, label);
    if (r != 0) {
        p->last_err = r;
    }
    finish(p, r == 0);
}

static void on_attempt_closed(uv_handle_t *h)
{
    struct attempt *a = h->data;
    if (a->ok && a->p != NULL) {
        a->p->att = NULL;
        handoff(a->p, a->fd);
    } else {
        close(a->fd);
    }
    free(a);
}

static void attempt(struct km_punch *p);

static void on_timer(uv_timer_t *t)
{
    struct km_punch *p = t->data;
    if (p->att != NULL) {
        p->last_err = -ETIMEDOUT; /* the window closed with a connect still pending */
        finish(p, false);
        return;
    }
    attempt(p);
}

/* The next attempt after RETRY_MS, or give up at the end of the window. */
static void retry(struct km_punch *p)
{
    uint64_t now = uv_now(p->loop);
    if (now + RETRY_MS >= p->deadline_ms) {
        finish(p, false);
        return;
    }
    (void)uv_timer_start(&p->timer, on_timer, RETRY_MS, 0);
}

static void on_writable(uv_poll_t *h, int status, int events)
{
    struct attempt *a = h->data;
    struct km_punch *p = a->p;
    (void)events;
    if (p == NULL) {
        return;
    }
    /* libuv reports a connect that failed (POLLERR) as UV_EBADF: the socket says why. */
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
    }
    if (err == 0 && status < 0) {
        err = -status;
    }
    if (err == EINPROGRESS) {
        return;
    }
    (void)uv_poll_stop(h);
    if (err == 0) {
        /* Connected. The poll handle must be closed before libssh owns the fd. */
        (void)uv_timer_stop(&p->timer);
        a->ok = true;
        uv_close((uv_handle_t *)&a->poll, on_attempt_closed);
        return;
    }
    p->last_err = -err;
    drop_attempt(p);
    (void)uv_timer_stop(&p->timer);
    retry(p);
}

/* One connect from the mesh port. The listener holds that port with SO_REUSEPORT, so this
 * socket may bind it too; a SYN that arrives for this 4-tuple finds this socket first. */
static void attempt(struct km_punch *p)
{
    p->attempts++;
    const struct sockaddr *to = (const struct sockaddr *)&p->to;
    int fd = socket(to->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        p->last_err = -errno;
        finish(p, false);
        return;
    }
    int one = 1;
    struct sockaddr_storage local;
    memset(&local, 0, sizeof local);
    socklen_t alen;
    if (to->sa_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&local;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(p->local_port);
        alen = sizeof *in6;
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&local;
        in->sin_family = AF_INET;
        in->sin_port = htons(p->local_port);
        alen = sizeof *in;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&local, alen) != 0) {
        p->last_err = -errno;
        close(fd);
        finish(p, false);
        return;
    }
    if (connect(fd, to, alen) != 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        p->last_err = -e;
        if (e == EADDRNOTAVAIL) {
            /* This 4-tuple is taken: the peer's SYN reached our listener and that session
             * is the punched connection (answered there). */
            finish(p, false);
            return;
        }
        retry(p);
        return;
    }
    struct attempt *a = calloc(1, sizeof *a);
    if (a == NULL || uv_poll_init(p->loop, &a->poll, fd) != 0) {
        free(a);
        close(fd);
        p->last_err = -ENOMEM;
        finish(p, false);
        return;
    }
    a->poll.data = a;
    a->p = p;
    a->fd = fd;
    p->att = a;
    (void)uv_poll_start(&a->poll, UV_WRITABLE, on_writable);
    uint64_t now = uv_now(p->loop);
    (void)uv_timer_start(&p->timer, on_timer, p->deadline_ms > now ? p->deadline_ms - now : 0, 0);
}

uint64_t km_punch_hold_ms(uint64_t self_us, uint64_t other_us)
{
    if (self_us == 0 || other_us <= self_us) {
        return 0;
    }
    uint64_t d = other_us - self_us;
    return d >= KM_PUNCH_HOLD_MAX_MS * 1000u ? KM_PUNCH_HOLD_MAX_MS : (d + 500u) / 1000u;
}

int km_punch_start(struct km_punches *ps, uv_loop_t *loop, struct km_ssh_node *node,
                   struct km_mesh *mesh, const struct km_pubkey *peer, const struct sockaddr *to,
                   uint16_t local_port, bool client)
{
    for (struct km_punch *q = ps->head; q != NULL; q = q->next) {
        if (km_pubkey_equal(&q->peer, peer)) {
            return 0;
        }
    }
    if ((to->sa_family != AF_INET && to->sa_family != AF_INET6) || local_port == 0) {
        return KM_ERR_INVALID;
    }
    struct km_punch *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return -ENOMEM;
    }
    p->ps = ps;
    p->loop = loop;
    p->node = node;
    p->mesh = mesh;
    p->peer = *peer;
    memcpy(&p->to, to,
           to->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    p->local_port = local_port;
    p->client = client;
    char id[KM_NODE_ID_LEN + 1];
    km_node_id(peer, id);
    memcpy(p->id, id, 12);
    (void)uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    p->deadline_ms = uv_now(loop) + KM_PUNCH_WINDOW_MS;
    p->next = ps->head;
    ps->head = p;
    char a[KM_ADDR_STRLEN];
    KM_DEBUG("punch to %s... at %s from port %u (%s)", p->id, km_addr_str(to, a, sizeof a),
             local_port, client ? "client" : "server");
    attempt(p);
    return 0;
}

void km_punch_stop_all(struct km_punches *ps)
{
    while (ps->head != NULL) {
        finish(ps->head, true);
    }
}
