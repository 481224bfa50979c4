/*
 * https - a small blocking HTTPS/1.1 client over BoringSSL
 *
 * For the few requests ringmail makes over HTTPS: an MTA-STS policy fetch
 * (RFC 8461 3.3: certificate verified for the host, no redirects, 200 and
 * text/plain only, a size cap, a timeout) and a TLS-RPT report POST (RFC
 * 8460 6.4). It runs on a thread of its own (never the delivery loop): a
 * request blocks its caller for at most timeout_ms in total.
 *
 * The trust store is the one every certificate check of ringmail uses: the
 * ca_file given (--ca), else the system bundle. The peer certificate must
 * chain to it and match the URL's host; nothing is ever sent otherwise.
 * Redirects are never followed: a 3xx is an answer like any other (status
 * and Location reported). The body is read as Content-Length, chunked or
 * up to the close, and a body over max_body is an error, not a truncation.
 */
#ifndef RINGMAIL_HTTPS_H
#define RINGMAIL_HTTPS_H

#include <stddef.h>

#include "engine/buf.h"

struct https_request {
    const char *url;          /* "https://HOST[:PORT]/PATH" (only https) */
    const char *method;       /* "GET" (default when NULL) or "POST" */
    const char *content_type; /* of the body (POST) */
    const void *body;         /* POST body; NULL: none */
    size_t body_len;
    const char *headers;    /* extra header lines, each ending in "\r\n"; NULL: none */
    const char *ca_file;    /* NULL: /etc/ssl/certs/ca-certificates.crt */
    const char *connect_to; /* "ADDR:PORT" to connect to instead of the URL's host
                             * (tests; the certificate is still checked against the
                             * URL's host); NULL: DNS */
    size_t max_body;        /* 0: 64 KiB */
    unsigned timeout_ms;    /* the whole request; 0: 30 s */
};

struct https_response {
    int status;             /* the HTTP status; 0 when none came */
    char content_type[128]; /* as sent, "" when none */
    char location[512];     /* of a 3xx, "" when none */
    buf_t body;             /* owned: free with https_response_free */
};

/* 0 and *resp filled when a response came (any status); -1 and why in err
 * (DNS, connect, TLS, certificate, timeout, oversize, malformed). */
int https_request(const struct https_request *req, struct https_response *resp, char *err,
                  size_t errlen);
void https_response_free(struct https_response *resp);

#endif
