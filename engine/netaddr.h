/*
 * netaddr - "host:port" and "[v6]:port" to socket addresses
 *
 * Used at start-up only (command line and config): a host name is
 * resolved with getaddrinfo, which may block, so never call this on a
 * running loop. Routing during delivery uses pool/'s c-ares resolver.
 */
#ifndef RINGMAIL_NETADDR_H
#define RINGMAIL_NETADDR_H

#include <stddef.h>
#include <sys/socket.h>

/*
 * Parse spec ("127.0.0.1:2525", "[::1]:465", "localhost:25"). The host
 * part is copied to host (hostlen bytes) when host is not NULL. Returns 0,
 * or -1 with a reason in err.
 */
int netaddr_parse(const char *spec, struct sockaddr_storage *addr, socklen_t *addrlen, char *host,
                  size_t hostlen, char *err, size_t errlen);
/* "127.0.0.1:2525" / "[::1]:465" */
void netaddr_format(const struct sockaddr *addr, char *out, size_t outlen);
/* The address alone ("127.0.0.1", "::1") into host, at least
 * NETADDR_HOST_MAX bytes; returns the port. */
#define NETADDR_HOST_MAX 46 /* INET6_ADDRSTRLEN */
unsigned netaddr_format_host(const struct sockaddr *addr, char *host);

#endif
