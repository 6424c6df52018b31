#include "core/addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>

char *km_addr_str(const struct sockaddr *sa, char *out, size_t outsz)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(out, outsz, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        snprintf(out, outsz, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        snprintf(out, outsz, "?");
    }
    return out;
}
