/* What the kernel knows about a TCP connection (TCP_INFO). Kept apart from every file that
 * includes <uv.h>: that pulls in glibc's <netinet/tcp.h>, whose struct tcp_info stops short
 * of the fields used here, and the kernel's <linux/tcp.h> cannot be included beside it. */
#ifndef KM_CORE_TCPINFO_H
#define KM_CORE_TCPINFO_H

#include <stdint.h>

#include "core/err.h"

/* The round-trip time of the TCP connection on fd, in microseconds: the lowest the kernel
 * has seen lately (tcpi_min_rtt: the path's delay without the queues a bulk transfer adds),
 * or the smoothed RTT where the kernel keeps no minimum (before Linux 4.6). Returns 0,
 * KM_ERR_INCOMPLETE before the kernel has a sample, KM_ERR_UNSUPPORTED when the kernel's
 * answer is too short to hold an RTT (an emulator's), or -errno (ENOPROTOOPT: not TCP). */
KM_MUST_CHECK int km_tcp_rtt_us(int fd, uint32_t *out);

#endif
