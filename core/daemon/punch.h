/* TCP hole punching (docs/NAT.md "Hole punching"): on a gateway's PUNCH, connect from this
 * node's mesh port to the other node's punch address, again and again for a short window, so
 * that the two SYNs cross the NATs (a TCP simultaneous open) or one side's SYN finds the
 * other's fresh NAT mapping. The connected socket runs SSH: the node that asked for the punch
 * is the client (host key checked against the peer's node ID) and hands the session to the
 * mesh (km_mesh_punched); the other runs its SSH server on it as if accepted on its listener.
 * A failure is logged at debug level only: the relay stays in use. */
#ifndef KM_DAEMON_PUNCH_H
#define KM_DAEMON_PUNCH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "identity/key.h"
#include "proto/mesh.h"
#include "proto/ssh.h"

/* How long one punch keeps trying. */
#define KM_PUNCH_WINDOW_MS 3000u
/* The longest a gateway holds a PUNCH frame back (km_punch_hold_ms). */
#define KM_PUNCH_HOLD_MAX_MS 1000u

/* Gateway side: how long to hold back the PUNCH frame to a node whose frames take self_us to
 * arrive, so that it arrives with the other node's (other_us): the difference in whole
 * milliseconds (rounded), at most KM_PUNCH_HOLD_MAX_MS. 0 for the farther node, and when
 * either time is unknown (0). */
uint64_t km_punch_hold_ms(uint64_t self_us, uint64_t other_us);

/* The punches in progress; caller-owned storage, zeroed to start. */
struct km_punches {
    struct km_punch *head;
};

/* Start a punch to peer at to (AF_INET or AF_INET6), from local_port on the wildcard address
 * of to's family. client: run the SSH client (and hand the conn to mesh). A punch to the same
 * peer already running is left alone. Returns 0 or a negative code (-ENOMEM). */
KM_MUST_CHECK int km_punch_start(struct km_punches *ps, uv_loop_t *loop, struct km_ssh_node *node,
                                 struct km_mesh *mesh, const struct km_pubkey *peer,
                                 const struct sockaddr *to, uint16_t local_port, bool client);

/* Stop every punch (sockets and SSH dials in progress are closed); their memory is freed once
 * the loop has run the handle closes. */
void km_punch_stop_all(struct km_punches *ps);

#endif
