/* TUN device set-up with the kernel's ioctls (dev.h). */
#include "tun/dev.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* <linux/ipv6.h>'s struct in6_ifreq, which cannot be included next to <netinet/in.h>. */
struct km_in6_ifreq {
    struct in6_addr addr;
    uint32_t prefixlen;
    int ifindex;
};

/* Turn duplicate address detection off on the device: the VIP is derived from the node's
 * key, and a tentative address could not be bound (by DNS on the VIP) for a second or so. */
static void no_dad(const char *ifname)
{
    char path[96];
    snprintf(path, sizeof path, "/proc/sys/net/ipv6/conf/%s/accept_dad", ifname);
    int f = open(path, O_WRONLY | O_CLOEXEC);
    if (f >= 0) {
        (void)!write(f, "0", 1);
        close(f);
    }
}

static int set_up(const char *ifname, const uint8_t addr[16], unsigned plen, unsigned mtu,
                  const char **step)
{
    int s = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        *step = "socket";
        return -errno;
    }
    int r = 0;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    ifr.ifr_mtu = (int)mtu;
    if (ioctl(s, SIOCSIFMTU, &ifr) < 0) {
        *step = "set MTU";
        r = -errno;
        goto out;
    }
    ifr.ifr_qlen = KM_TUNDEV_QLEN;
    if (ioctl(s, SIOCSIFTXQLEN, &ifr) < 0) {
        *step = "set queue length";
        r = -errno;
        goto out;
    }
    if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) {
        *step = "interface index";
        r = -errno;
        goto out;
    }
    struct km_in6_ifreq a;
    memset(&a, 0, sizeof a);
    memcpy(a.addr.s6_addr, addr, 16);
    a.prefixlen = plen;
    a.ifindex = ifr.ifr_ifindex;
    no_dad(ifname);
    if (ioctl(s, SIOCSIFADDR, &a) < 0 && errno != EEXIST) {
        *step = "add address";
        r = -errno;
        goto out;
    }
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
        *step = "get flags";
        r = -errno;
        goto out;
    }
    /* Up, and no multicast: nothing on the mesh prefix is multicast, so mDNS skips the device
     * and the kernel sends no MLD reports into it. */
    ifr.ifr_flags = (short)((ifr.ifr_flags | IFF_UP) & ~IFF_MULTICAST);
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) {
        *step = "bring up";
        r = -errno;
        goto out;
    }
out:
    close(s);
    return r;
}

/* The kernel finishes adding an address asynchronously after the device comes up; until then
 * it is tentative and cannot be bound. Wait (bounded: 2 s) so that callers, DNS on the VIP
 * among them, can bind at once. */
static int wait_usable(const uint8_t addr[16])
{
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6};
    memcpy(sa.sin6_addr.s6_addr, addr, 16);
    for (int i = 0; i < 200; i++) {
        int s = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (s < 0) {
            return -errno;
        }
        int r = bind(s, (struct sockaddr *)&sa, sizeof sa);
        int e = errno;
        close(s);
        if (r == 0) {
            return 0;
        }
        if (e != EADDRNOTAVAIL) {
            return -e;
        }
        struct timespec ts = {.tv_nsec = 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return -EADDRNOTAVAIL;
}

int km_tundev_open(const char *name, const uint8_t addr[16], unsigned plen, unsigned mtu, int *fd,
                   char ifname[IFNAMSIZ], const char **err_step)
{
    static const char *unused;
    const char **step = err_step != NULL ? err_step : &unused;
    *fd = -1;
    *step = "open /dev/net/tun";
    int t = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (t < 0) {
        return -errno;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", name);
    if (ioctl(t, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        *step = "create device";
        close(t);
        /* EINVAL: the name belongs to a device of another kind. */
        return e == EINVAL ? -EBUSY : -e;
    }
    /* A persistent device we attached to would outlive us: make it die with the fd. */
    if (ioctl(t, TUNSETPERSIST, 0) < 0) {
        int e = errno;
        *step = "clear persistence";
        close(t);
        return -e;
    }
    int r = set_up(ifr.ifr_name, addr, plen, mtu, step);
    if (r == 0) {
        *step = "wait for the address";
        r = wait_usable(addr);
    }
    if (r != 0) {
        close(t); /* the kernel deletes the half-set-up device */
        return r;
    }
    snprintf(ifname, IFNAMSIZ, "%s", ifr.ifr_name);
    *fd = t;
    return 0;
}
