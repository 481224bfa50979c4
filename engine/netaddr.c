/*
 * netaddr - "host:port" and "[v6]:port" to socket addresses. See the header.
 */
#include "netaddr.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int netaddr_parse(const char *spec, struct sockaddr_storage *addr, socklen_t *addrlen, char *host,
                  size_t hostlen, char *err, size_t errlen)
{
    char h[256];
    const char *port;
    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (!end || end[1] != ':' || (size_t)(end - spec - 1) >= sizeof h) {
            snprintf(err, errlen, "bad address '%s' (want [v6addr]:port)", spec);
            return -1;
        }
        memcpy(h, spec + 1, (size_t)(end - spec - 1));
        h[end - spec - 1] = '\0';
        port = end + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (!colon || (size_t)(colon - spec) >= sizeof h || colon == spec) {
            snprintf(err, errlen, "bad address '%s' (want host:port)", spec);
            return -1;
        }
        memcpy(h, spec, (size_t)(colon - spec));
        h[colon - spec] = '\0';
        port = colon + 1;
    }
    char *endp;
    long p = strtol(port, &endp, 10);
    if (*port == '\0' || *endp != '\0' || p <= 0 || p > 65535) {
        snprintf(err, errlen, "bad port in '%s'", spec);
        return -1;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(h, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve '%s': %s", h, gai_strerror(rc));
        return -1;
    }
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    *addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    if (host) {
        snprintf(host, hostlen, "%s", h);
    }
    return 0;
}

unsigned netaddr_format_host(const struct sockaddr *addr, char *host)
{
    _Static_assert(NETADDR_HOST_MAX == INET6_ADDRSTRLEN, "NETADDR_HOST_MAX");
    snprintf(host, NETADDR_HOST_MAX, "?");
    if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &a->sin6_addr, host, NETADDR_HOST_MAX);
        return ntohs(a->sin6_port);
    }
    const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
    inet_ntop(AF_INET, &a->sin_addr, host, NETADDR_HOST_MAX);
    return ntohs(a->sin_port);
}

void netaddr_format(const struct sockaddr *addr, char *out, size_t outlen)
{
    char ip[NETADDR_HOST_MAX];
    unsigned port = netaddr_format_host(addr, ip);
    snprintf(out, outlen, addr->sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
}
