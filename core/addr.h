/* Socket addresses as text, for logs and status. */
#ifndef KM_CORE_ADDR_H
#define KM_CORE_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* Longest result: "[" INET6_ADDRSTRLEN "]:65535" and the NUL. */
#define KM_ADDR_STRLEN 56

/* "192.0.2.1:80" or "[2001:db8::1]:80" (RFC 5952 text, as inet_ntop prints it); "?" for other
 * families. Always NUL-terminates out (truncating if outsz is short). Returns out. */
char *km_addr_str(const struct sockaddr *sa, char *out, size_t outsz);

#endif
