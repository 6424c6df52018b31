/* The TUN device: created for the daemon's lifetime, given the node's VIP with the mesh
 * prefix length (so the kernel routes the whole prefix into it), and gone with the process.
 *
 * The device is never persistent: the kernel deletes it, its address and its route when the
 * last file descriptor closes, which includes a crash or SIGKILL, so nothing is left for the
 * next start to clean up. A persistent device of the same name (left by another tool) is
 * taken over and made non-persistent. */
#ifndef KM_TUN_DEV_H
#define KM_TUN_DEV_H

#include <net/if.h>
#include <stdint.h>

#include "core/err.h"

/* Packets the kernel queues on the device for the daemon to read (its default is 500). A
 * burst of new connections arrives while the loop is busy opening their mesh streams; a
 * handshake ACK dropped here waits for lwIP's SYN-ACK retransmission (3 s, then 6 s ...). */
#define KM_TUNDEV_QLEN 2048

/* Create the device named name ("" for the kernel's "tun%d"), set mtu and the queue length
 * (KM_TUNDEV_QLEN), add addr/plen and bring it up. On success *fd is the non-blocking,
 * close-on-exec device and ifname its name. Errors: -EPERM (no CAP_NET_ADMIN), -ENOENT (no
 * /dev/net/tun), -EBUSY (the name is taken by another device or process), other -errno. *err_step
 * names the step that failed. */
KM_MUST_CHECK int km_tundev_open(const char *name, const uint8_t addr[16], unsigned plen,
                                 unsigned mtu, int *fd, char ifname[IFNAMSIZ],
                                 const char **err_step);

#endif
