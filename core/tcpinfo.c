#include "core/tcpinfo.h"

#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

int km_tcp_rtt_us(int fd, uint32_t *out)
{
    *out = 0;
    struct tcp_info ti;
    memset(&ti, 0, sizeof ti);
    socklen_t len = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) {
        return -errno;
    }
    if (len >= offsetof(struct tcp_info, tcpi_min_rtt) + sizeof ti.tcpi_min_rtt &&
        ti.tcpi_min_rtt != 0 && ti.tcpi_min_rtt != UINT32_MAX) {
        *out = ti.tcpi_min_rtt;
        return 0;
    }
    if (len < offsetof(struct tcp_info, tcpi_rtt) + sizeof ti.tcpi_rtt) {
        return KM_ERR_UNSUPPORTED; /* qemu-user, for one, answers with 4 bytes */
    }
    if (ti.tcpi_rtt == 0) {
        return KM_ERR_INCOMPLETE;
    }
    *out = ti.tcpi_rtt;
    return 0;
}
