/*
 * https - a small blocking HTTPS/1.1 client. See https.h.
 *
 * The TLS is engine/tls's (BoringSSL over memory buffers, the context
 * set-up every other client of ringmail uses): this file moves ciphertext
 * between those buffers and a non-blocking socket with poll(2), under one
 * deadline for the whole request, and leaves the response's parsing to
 * engine/http_response. The context verifies the peer (verify_peer), and
 * tls_conn_new sets SNI and the host name to match (SSL_set1_host), so a
 * handshake with a certificate that does not chain to the trust store or
 * does not name the URL's host fails before a byte of the request is sent.
 *
 * Diagnostics (err): "bad URL ...", "cannot resolve HOST: ...", "connect
 * to ADDR: ...", "TLS with HOST: certificate verify failed: ...", "timed
 * out after N ms (STEP)", "response body over N bytes", "malformed
 * response: ...", "connection closed ...".
 */
#include "engine/https.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/clock.h"
#include "engine/http_response.h"
#include "engine/netaddr.h"
#include "engine/tls.h"

#define HTTPS_DEFAULT_MAX_BODY (64u * 1024u)
#define HTTPS_DEFAULT_TIMEOUT_MS 30000u
#define HTTPS_HOST_MAX 256
#define HTTPS_PATH_MAX 2048

/* One request in flight: the socket, the TLS over it, its buffers. */
struct https_io {
    int fd;
    uint64_t deadline; /* clock_ms */
    unsigned timeout_ms;
    struct tls_ctx *ctx;  /* owned */
    struct tls_conn *tls; /* owned */
    buf_t in, out;        /* owned: ciphertext received / to send */
    char host[HTTPS_HOST_MAX];
    char port[8];
    char path[HTTPS_PATH_MAX];
};

/* https_url_parse - "https://HOST[:PORT][/PATH]" into io; -1 with err. */
static int https_url_parse(const char *url, struct https_io *io, char *err, size_t errlen)
{
    const char *p = url && strncasecmp(url, "https://", 8) == 0 ? url + 8 : NULL;
    if (!p) {
        snprintf(err, errlen, "bad URL \"%s\": only https:// is supported", url ? url : "");
        return -1;
    }
    size_t hl = strcspn(p, "/?#");
    const char *hp = p, *colon = NULL;
    if (*hp == '[') { /* [v6]:port */
        const char *close = memchr(hp, ']', hl);
        if (!close) {
            goto bad;
        }
        colon = close[1] == ':' ? close + 1 : NULL;
        hp++;
        if ((size_t)(close - hp) >= sizeof io->host) {
            goto bad;
        }
        memcpy(io->host, hp, (size_t)(close - hp));
        io->host[close - hp] = '\0';
    } else {
        colon = memchr(hp, ':', hl);
        size_t n = colon ? (size_t)(colon - hp) : hl;
        if (n >= sizeof io->host || memchr(hp, '@', hl)) {
            goto bad;
        }
        memcpy(io->host, hp, n);
        io->host[n] = '\0';
    }
    size_t portlen = colon ? hl - (size_t)(colon + 1 - p) : 0;
    if (colon &&
        (portlen == 0 || portlen >= sizeof io->port || strspn(colon + 1, "0123456789") < portlen)) {
        goto bad;
    }
    snprintf(io->port, sizeof io->port, "%.*s", colon ? (int)portlen : 3,
             colon ? colon + 1 : "443");
    const char *path = p + hl;
    if (io->host[0] == '\0' || strlen(path) + 2 > sizeof io->path || strpbrk(path, " \r\n")) {
        goto bad;
    }
    snprintf(io->path, sizeof io->path, "%s%s", *path == '/' ? "" : "/", path);
    return 0;
bad:
    snprintf(err, errlen, "bad URL \"%s\"", url);
    return -1;
}

/* https_wait - poll fd for events until the deadline: 1 ready, 0 timed out,
 * -1 error (errno). */
static int https_wait(struct https_io *io, short events)
{
    for (;;) {
        uint64_t now = clock_ms();
        if (now >= io->deadline) {
            return 0;
        }
        struct pollfd pfd = {.fd = io->fd, .events = events};
        int r = poll(&pfd, 1, (int)(io->deadline - now));
        if (r > 0) {
            return 1;
        }
        if (r < 0 && errno != EINTR) {
            return -1;
        }
    }
}

static int https_timed_out(const struct https_io *io, const char *step, char *err, size_t errlen)
{
    snprintf(err, errlen, "timed out after %u ms (%s)", io->timeout_ms, step);
    return -1;
}

/* https_connect_addr - a non-blocking connect to one address; 0 or -1 (errno). */
static int https_connect_addr(struct https_io *io, const struct sockaddr *sa, socklen_t salen)
{
    io->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (io->fd < 0) {
        return -1;
    }
    if (connect(io->fd, sa, salen) == 0) {
        return 0;
    }
    if (errno == EINPROGRESS) {
        int w = https_wait(io, POLLOUT);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (w == 1 && getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) {
            return 0;
        }
        errno = w == 0 ? ETIMEDOUT : soerr ? soerr : errno;
    }
    int e = errno;
    close(io->fd);
    io->fd = -1;
    errno = e;
    return -1;
}

/* https_connect - to connect_to, else to each address of the URL's host in
 * turn; -1 with err. */
static int https_connect(struct https_io *io, const char *connect_to, char *err, size_t errlen)
{
    char addr[300];
    if (connect_to) {
        struct sockaddr_storage ss;
        socklen_t sl;
        if (netaddr_parse(connect_to, &ss, &sl, NULL, 0, err, errlen) < 0) {
            return -1;
        }
        if (https_connect_addr(io, (struct sockaddr *)&ss, sl) < 0) {
            snprintf(err, errlen, "connect to %s: %s", connect_to, strerror(errno));
            return -1;
        }
        return 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG}, *res = NULL;
    int g = getaddrinfo(io->host, io->port, &hints, &res);
    if (g != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", io->host, gai_strerror(g));
        return -1;
    }
    int e = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (https_connect_addr(io, ai->ai_addr, ai->ai_addrlen) == 0) {
            freeaddrinfo(res);
            return 0;
        }
        e = errno;
        netaddr_format(ai->ai_addr, addr, sizeof addr);
    }
    freeaddrinfo(res);
    snprintf(err, errlen, "connect to %s (%s): %s", io->host, addr, strerror(e));
    return -1;
}

/* https_flush - send all queued ciphertext; -1 with err. */
static int https_flush(struct https_io *io, char *err, size_t errlen)
{
    while (buf_len(&io->out) > 0) {
        ssize_t n = send(io->fd, buf_data(&io->out), buf_len(&io->out), MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(&io->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(err, errlen, "send to %s: %s", io->host, strerror(errno));
            return -1;
        }
        int w = https_wait(io, POLLOUT);
        if (w <= 0) {
            return w == 0 ? https_timed_out(io, "sending", err, errlen) : -1;
        }
    }
    return 0;
}

/* https_fill - wait for and receive ciphertext into io->in: 1 got bytes,
 * 0 the peer closed, -1 with err. */
static int https_fill(struct https_io *io, const char *step, char *err, size_t errlen)
{
    for (;;) {
        char *w = buf_reserve(&io->in, 16384);
        ssize_t n = recv(io->fd, w, 16384, 0);
        if (n > 0) {
            buf_commit(&io->in, (size_t)n);
            return 1;
        }
        if (n == 0) {
            return 0;
        }
        if (errno != EAGAIN && errno != EINTR) {
            snprintf(err, errlen, "receive from %s: %s", io->host, strerror(errno));
            return -1;
        }
        int r = https_wait(io, POLLIN);
        if (r <= 0) {
            return r == 0 ? https_timed_out(io, step, err, errlen) : -1;
        }
    }
}

/* https_handshake - TLS with the URL's host, the certificate verified. */
static int https_handshake(struct https_io *io, const char *ca_file, char *err, size_t errlen)
{
    struct tls_client_options o = {.ca_file = ca_file, .verify_peer = 1};
    char why[256];
    io->ctx = tls_client_ctx_new(&o, why, sizeof why);
    if (!io->ctx) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    io->tls = tls_conn_new(io->ctx, &io->in, &io->out, io->host, NULL);
    if (!io->tls) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (;;) {
        enum tls_result r = tls_handshake(io->tls);
        if (https_flush(io, err, errlen) < 0) {
            return -1;
        }
        if (r == TLS_OK) {
            return 0;
        }
        if (r != TLS_WANT) {
            snprintf(err, errlen, "TLS with %s: %s", io->host, tls_conn_error(io->tls));
            return -1;
        }
        int f = https_fill(io, "TLS handshake", err, errlen);
        if (f <= 0) {
            if (f == 0) {
                snprintf(err, errlen, "TLS with %s: peer closed connection during handshake",
                         io->host);
            }
            return -1;
        }
    }
}

/* https_send_request - the request line, headers and body, encrypted and sent. */
static int https_send_request(struct https_io *io, const struct https_request *req, char *err,
                              size_t errlen)
{
    buf_t r = BUF_INIT;
    const char *method = req->method ? req->method : "GET";
    int default_port = strcmp(io->port, "443") == 0;
    int v6 = strchr(io->host, ':') != NULL;
    buf_appendf(&r, "%s %s HTTP/1.1\r\nHost: %s%s%s%s%s\r\n", method, io->path, v6 ? "[" : "",
                io->host, v6 ? "]" : "", default_port ? "" : ":", default_port ? "" : io->port);
    buf_append_str(&r, "User-Agent: ringmail\r\nAccept: */*\r\nConnection: close\r\n");
    if (req->body || strcmp(method, "POST") == 0) {
        buf_appendf(&r, "Content-Type: %s\r\nContent-Length: %zu\r\n",
                    req->content_type ? req->content_type : "application/octet-stream",
                    req->body ? req->body_len : 0);
    }
    if (req->headers) {
        buf_append_str(&r, req->headers);
    }
    buf_append_str(&r, "\r\n");
    if (req->body) {
        buf_append(&r, req->body, req->body_len);
    }
    enum tls_result t = tls_write(io->tls, buf_data(&r), buf_len(&r));
    buf_free(&r);
    if (t != TLS_OK) {
        snprintf(err, errlen, "TLS with %s: %s", io->host, tls_conn_error(io->tls));
        return -1;
    }
    return https_flush(io, err, errlen);
}

/* https_read_response - decrypt and parse until the response is complete. */
static int https_read_response(struct https_io *io, size_t max_body, struct https_response *resp,
                               char *err, size_t errlen)
{
    buf_t plain = BUF_INIT;
    int eof = 0, rc = -1;
    for (;;) {
        enum tls_result t = tls_read(io->tls, &plain);
        if (t == TLS_CLOSED) {
            eof = 1;
        } else if (t == TLS_ERROR) {
            /* A close without close_notify: the body may still be framed. */
            eof = 1;
        }
        int p = http_response_parse(buf_data(&plain), buf_len(&plain), eof, max_body, resp, err,
                                    errlen);
        if (p != 0) {
            rc = p == 1 ? 0 : -1;
            break;
        }
        int f = https_fill(io, "reading the response", err, errlen);
        if (f < 0) {
            break;
        }
        eof = f == 0;
        if (eof) {
            /* Whatever is still buffered is decrypted on the next turn. */
            tls_read(io->tls, &plain);
            p = http_response_parse(buf_data(&plain), buf_len(&plain), 1, max_body, resp, err,
                                    errlen);
            rc = p == 1 ? 0 : -1;
            break;
        }
    }
    buf_free(&plain);
    return rc;
}

int https_request(const struct https_request *req, struct https_response *resp, char *err,
                  size_t errlen)
{
    memset(resp, 0, sizeof *resp);
    buf_init(&resp->body);
    struct https_io io = {.fd = -1};
    buf_init(&io.in);
    buf_init(&io.out);
    io.timeout_ms = req->timeout_ms ? req->timeout_ms : HTTPS_DEFAULT_TIMEOUT_MS;
    io.deadline = clock_ms() + io.timeout_ms;
    size_t max_body = req->max_body ? req->max_body : HTTPS_DEFAULT_MAX_BODY;
    int rc = -1;
    if (https_url_parse(req->url, &io, err, errlen) == 0 &&
        https_connect(&io, req->connect_to, err, errlen) == 0 &&
        https_handshake(&io, req->ca_file, err, errlen) == 0 &&
        https_send_request(&io, req, err, errlen) == 0 &&
        https_read_response(&io, max_body, resp, err, errlen) == 0) {
        rc = 0;
    }
    if (rc < 0) {
        https_response_free(resp);
    }
    tls_conn_free(io.tls);
    tls_ctx_free(io.ctx);
    if (io.fd >= 0) {
        close(io.fd);
    }
    buf_free(&io.in);
    buf_free(&io.out);
    return rc;
}

void https_response_free(struct https_response *resp)
{
    buf_free(&resp->body);
}
