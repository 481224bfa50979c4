/*
 * metrics - a Prometheus text-exposition endpoint on a ringmail loop. See metrics.h.
 *
 * A client is a small state machine: READING collects the header block
 * into `in` (one RECV in flight, bounded by METRICS_REQUEST_MAX), SENDING
 * writes `out` (one SEND in flight), LINGERING has shut the write side
 * and reads and discards until the peer closes, and DEAD waits for its
 * last completion. Lingering matters: closing a socket with unread bytes
 * (a POST body, the rest of an oversized header) sends a reset, and a
 * reset can destroy the response before the peer has read it.
 *
 * Only one operation is in flight per client at a time; a client is freed
 * when it is DEAD and none is, at the end of a completion or timer
 * callback. The metrics object is freed after metrics_free once its accept
 * has completed for the last time and its last client is gone.
 */
#include "pool/metrics.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/list.h"
#include "engine/netaddr.h"

#define METRICS_REQUEST_MAX 8192
#define METRICS_IDLE_TIMEOUT_MS 5000
#define METRICS_LINGER_MS 1000
#define METRICS_LISTEN_BACKLOG 128
#define METRICS_ACCEPT_RETRY_MS 100

enum metrics_client_state {
    METRICS_CLIENT_READING,   /* the request's header block is arriving */
    METRICS_CLIENT_SENDING,   /* the response is going out */
    METRICS_CLIENT_LINGERING, /* response sent, write side shut: discard until EOF */
    METRICS_CLIENT_DEAD,      /* shut down; freed once no operation is in flight */
};

/* Owned by its metrics (the clients list); owns its socket and buffers. */
struct metrics_client {
    struct metrics *m;
    struct list_node node; /* m->clients */
    int fd;
    enum metrics_client_state state;
    int recv_busy, send_busy;
    struct loop_op recv_op, send_op;
    struct loop_timer timer; /* idle timeout, then the lingering bound */
    buf_t in;                /* the request (never consumed), at most METRICS_REQUEST_MAX */
    buf_t out;               /* the response; the in-flight SEND reads it */
};

struct metrics {
    struct loop *loop; /* not owned */
    metrics_render_cb render;
    void *user;
    int fd; /* the listening socket, owned */
    unsigned port;
    int closing; /* metrics_free was called */
    int accept_busy;
    struct loop_op accept_op;
    struct loop_timer accept_retry; /* re-arm after an accept error, not in a tight loop */
    unsigned idle_timeout_ms;
    struct list_head clients; /* owned metrics_clients (node) */
    buf_t body;               /* what render wrote; reused across scrapes */
};

/* ---- the object's lifetime ---- */

static void metrics_release(struct metrics *m)
{
    close(m->fd);
    buf_free(&m->body);
    free(m);
}

/* After metrics_free: gone once the accept and every client are. */
static void metrics_check(struct metrics *m)
{
    if (m->closing && !m->accept_busy && !m->clients.first) {
        metrics_release(m);
    }
}

/* ---- a client's lifetime ---- */

/* Free everything the client owns; no operation may be in flight. */
static void metrics_client_release(struct metrics_client *c)
{
    struct metrics *m = c->m;
    list_unlink(&m->clients, &c->node);
    loop_timer_cancel(m->loop, &c->timer);
    close(c->fd);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

/* Shut the socket down now; the pending operation completes (cancelled)
 * and metrics_client_check frees the client at the end of that callback. */
static void metrics_client_abort(struct metrics_client *c)
{
    struct loop *loop = c->m->loop;
    if (c->state == METRICS_CLIENT_DEAD) {
        return;
    }
    c->state = METRICS_CLIENT_DEAD;
    loop_timer_cancel(loop, &c->timer);
    shutdown(c->fd, SHUT_RDWR);
    if (c->recv_busy) {
        loop_cancel(loop, &c->recv_op);
    }
    if (c->send_busy) {
        loop_cancel(loop, &c->send_op);
    }
}

/* Called last in every callback that touched c: c (and m) may be freed. */
static void metrics_client_check(struct metrics_client *c)
{
    if (c->state == METRICS_CLIENT_DEAD && !c->recv_busy && !c->send_busy) {
        struct metrics *m = c->m;
        metrics_client_release(c);
        metrics_check(m);
    }
}

/* ---- a client: input ---- */

static void metrics_client_recv(struct metrics_client *c)
{
    size_t room = METRICS_REQUEST_MAX - buf_len(&c->in);
    c->recv_busy = 1;
    loop_recv(c->m->loop, &c->recv_op, c->fd, buf_reserve(&c->in, room), room);
}

static void metrics_client_respond(struct metrics_client *c);

/* metrics_client_op_over - a receive or send completed with RES: 1 when
 * the client is done with (shut down already, or the peer went away or
 * failed), its end taken care of; 0 to go on */
static int metrics_client_op_over(struct metrics_client *c, int res)
{
    if (c->state != METRICS_CLIENT_DEAD && res > 0) {
        return 0;
    }
    if (c->state != METRICS_CLIENT_DEAD) {
        metrics_client_abort(c);
    }
    metrics_client_check(c);
    return 1;
}

static void metrics_client_on_recv(struct loop_op *op, int res, unsigned flags)
{
    struct metrics_client *c = op->owner;
    (void)flags;
    c->recv_busy = 0;
    /* EOF or an error: before the request ended there is nobody to answer. */
    if (metrics_client_op_over(c, res)) {
        return;
    }
    loop_mark_received(buf_data(&c->in) + buf_len(&c->in), (size_t)res);
    if (c->state == METRICS_CLIENT_LINGERING) {
        buf_reset(&c->in); /* the rest of a body or an oversized header: not ours */
        metrics_client_recv(c);
        return;
    }
    buf_commit(&c->in, (size_t)res);
    loop_timer_set(c->m->loop, &c->timer, c->m->idle_timeout_ms);
    if (memmem(buf_data(&c->in), buf_len(&c->in), "\r\n\r\n", 4) ||
        buf_len(&c->in) >= METRICS_REQUEST_MAX) {
        metrics_client_respond(c);
    } else {
        metrics_client_recv(c);
    }
    metrics_client_check(c);
}

static void metrics_client_on_timer(struct loop_timer *t)
{
    struct metrics_client *c = t->owner;
    metrics_client_abort(c);
    metrics_client_check(c);
}

/* ---- a client: output ---- */

static void metrics_client_send(struct metrics_client *c)
{
    c->send_busy = 1;
    loop_send(c->m->loop, &c->send_op, c->fd, buf_data(&c->out), buf_len(&c->out));
}

/* Everything is sent: shut the write side (the peer sees EOF after the
 * body) and read until the peer closes, for METRICS_LINGER_MS at most. */
static void metrics_client_linger(struct metrics_client *c)
{
    c->state = METRICS_CLIENT_LINGERING;
    shutdown(c->fd, SHUT_WR);
    buf_free(&c->out);
    buf_reset(&c->in);
    loop_timer_set(c->m->loop, &c->timer, METRICS_LINGER_MS);
    metrics_client_recv(c);
}

static void metrics_client_on_send(struct loop_op *op, int res, unsigned flags)
{
    struct metrics_client *c = op->owner;
    (void)flags;
    c->send_busy = 0;
    if (metrics_client_op_over(c, res)) {
        return;
    }
    buf_consume(&c->out, (size_t)res);
    if (buf_len(&c->out) > 0) {
        /* A client that stops reading is caught by the idle timeout. */
        loop_timer_set(c->m->loop, &c->timer, c->m->idle_timeout_ms);
        metrics_client_send(c);
    } else {
        metrics_client_linger(c);
    }
    metrics_client_check(c);
}

/* ---- a client: the request ---- */

struct metrics_status {
    const char *line; /* "200 OK" */
    const char *content_type;
    const char *extra_header; /* a whole line with its CRLF, or "" */
};

static const struct metrics_status metrics_ok = {"200 OK", "text/plain; version=0.0.4", ""};
static const struct metrics_status metrics_bad_request = {"400 Bad Request", "text/plain", ""};
static const struct metrics_status metrics_not_found = {"404 Not Found", "text/plain", ""};
static const struct metrics_status metrics_bad_method = {"405 Method Not Allowed", "text/plain",
                                                         "Allow: GET\r\n"};
static const struct metrics_status metrics_too_large = {"431 Request Header Fields Too Large",
                                                        "text/plain", ""};

/*
 * Classify the request line "METHOD SP TARGET SP HTTP/x.y" of a complete
 * header block (n bytes at p, CRLF CRLF inside). The query string is
 * ignored: Prometheus may add one, and this endpoint has one document.
 */
static const struct metrics_status *metrics_request_classify(const char *p, size_t n)
{
    const char *eol = memmem(p, n, "\r\n", 2);
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    if (!sp1 || sp1 == p) {
        return &metrics_bad_request;
    }
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', (size_t)(eol - target));
    if (!sp2 || sp2 == target || *target != '/' || eol - (sp2 + 1) < 5 ||
        memcmp(sp2 + 1, "HTTP/", 5) != 0) {
        return &metrics_bad_request;
    }
    if (sp1 - p != 3 || memcmp(p, "GET", 3) != 0) {
        return &metrics_bad_method;
    }
    const char *query = memchr(target, '?', (size_t)(sp2 - target));
    size_t path_len = (size_t)((query ? query : sp2) - target);
    if ((path_len == 1) || (path_len == 8 && memcmp(target, "/metrics", 8) == 0)) {
        return &metrics_ok;
    }
    return &metrics_not_found;
}

/* The request is complete (or too large): queue the whole response. */
static void metrics_client_respond(struct metrics_client *c)
{
    struct metrics *m = c->m;
    const struct metrics_status *status = &metrics_too_large;
    if (memmem(buf_data(&c->in), buf_len(&c->in), "\r\n\r\n", 4)) {
        status = metrics_request_classify(buf_data(&c->in), buf_len(&c->in));
    }
    buf_reset(&m->body);
    if (status == &metrics_ok) {
        m->render(m->user, &m->body);
    } else {
        buf_appendf(&m->body, "%s\n", status->line);
    }
    buf_appendf(&c->out,
                "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sConnection: "
                "close\r\n\r\n",
                status->line, status->content_type, buf_len(&m->body), status->extra_header);
    buf_append(&c->out, buf_data(&m->body), buf_len(&m->body));
    buf_reset(&m->body);
    buf_free(&c->in);
    c->state = METRICS_CLIENT_SENDING;
    /* A slow render must not count as the client's idle time: restart the
     * timeout from the clock now, not from the iteration's cached time. */
    loop_clock_ms(m->loop);
    loop_timer_set(m->loop, &c->timer, m->idle_timeout_ms);
    metrics_client_send(c);
}

/* ---- accepting ---- */

static void metrics_client_new(struct metrics *m, int fd)
{
    struct metrics_client *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "metrics: level=error event=accept reason=\"out of memory\"\n");
        close(fd);
        return;
    }
    c->m = m;
    c->fd = fd;
    c->state = METRICS_CLIENT_READING;
    c->recv_op = (struct loop_op){metrics_client_on_recv, c};
    c->send_op = (struct loop_op){metrics_client_on_send, c};
    loop_timer_init(&c->timer, metrics_client_on_timer, c);
    list_push_front(&m->clients, &c->node);
    loop_timer_set(m->loop, &c->timer, m->idle_timeout_ms);
    metrics_client_recv(c);
}

static void metrics_accept_arm(struct metrics *m)
{
    m->accept_busy = 1;
    loop_accept(m->loop, &m->accept_op, m->fd);
}

static void metrics_on_accept_retry(struct loop_timer *t)
{
    metrics_accept_arm(t->owner);
}

static void metrics_on_accept(struct loop_op *op, int res, unsigned flags)
{
    struct metrics *m = op->owner;
    if (!loop_cqe_more(flags)) {
        m->accept_busy = 0;
    }
    if (res >= 0) {
        if (m->closing) {
            close(res);
        } else {
            metrics_client_new(m, res);
        }
    } else if (res != -ECANCELED) {
        fprintf(stderr, "metrics: level=error event=accept reason=\"%s\"\n", strerror(-res));
    }
    if (m->closing) {
        metrics_check(m);
        return;
    }
    /* The multishot accept ended: re-arm, after a pause if it failed. */
    if (!m->accept_busy) {
        if (res >= 0) {
            metrics_accept_arm(m);
        } else {
            loop_timer_set(m->loop, &m->accept_retry, METRICS_ACCEPT_RETRY_MS);
        }
    }
}

/* ---- set-up ---- */

/* netaddr_parse wants a port from 1 up; port 0 (any free port) is ours to allow. */
static int metrics_listen_parse(const char *spec, struct sockaddr_storage *addr, socklen_t *len,
                                char *err, size_t errlen)
{
    size_t n = strlen(spec);
    if (n < 2 || strcmp(spec + n - 2, ":0") != 0) {
        return netaddr_parse(spec, addr, len, NULL, 0, err, errlen);
    }
    buf_t one = BUF_INIT;
    buf_append(&one, spec, n - 1);
    buf_append(&one, "1", 2); /* with the NUL */
    int rc = netaddr_parse(buf_data(&one), addr, len, NULL, 0, err, errlen);
    buf_free(&one);
    if (rc == 0 && addr->ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)addr)->sin6_port = 0;
    } else if (rc == 0) {
        ((struct sockaddr_in *)addr)->sin_port = 0;
    }
    return rc;
}

static int metrics_listen_socket(const char *spec, unsigned *port, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    socklen_t len;
    if (metrics_listen_parse(spec, &addr, &len, err, errlen) < 0) {
        return -1;
    }
    int one = 1;
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (addr.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
        bind(fd, (struct sockaddr *)&addr, len) < 0 || listen(fd, METRICS_LISTEN_BACKLOG) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", spec, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    len = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", spec, strerror(errno));
        close(fd);
        return -1;
    }
    *port = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                             : ((struct sockaddr_in *)&addr)->sin_port);
    return fd;
}

struct metrics *metrics_new(struct loop *loop, const char *listen, metrics_render_cb render,
                            void *user, char *err, size_t errlen)
{
    unsigned port;
    int fd = metrics_listen_socket(listen, &port, err, errlen);
    if (fd < 0) {
        return NULL;
    }
    struct metrics *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        close(fd);
        return NULL;
    }
    m->loop = loop;
    m->render = render;
    m->user = user;
    m->fd = fd;
    m->port = port;
    m->idle_timeout_ms = METRICS_IDLE_TIMEOUT_MS;
    m->accept_op = (struct loop_op){metrics_on_accept, m};
    loop_timer_init(&m->accept_retry, metrics_on_accept_retry, m);
    metrics_accept_arm(m);
    return m;
}

unsigned metrics_port(const struct metrics *m)
{
    return m->port;
}

unsigned metrics_clients(const struct metrics *m)
{
    return (unsigned)m->clients.len;
}

void metrics_set_idle_timeout(struct metrics *m, unsigned ms)
{
    m->idle_timeout_ms = ms;
}

void metrics_free(struct metrics *m)
{
    if (!m || m->closing) {
        return;
    }
    m->closing = 1;
    loop_timer_cancel(m->loop, &m->accept_retry);
    if (m->accept_busy) {
        loop_cancel(m->loop, &m->accept_op);
    }
    for (struct list_node *n = m->clients.first, *nn; n; n = nn) {
        nn = n->next;
        struct metrics_client *c = list_entry(n, struct metrics_client, node);
        metrics_client_abort(c);
        if (!c->recv_busy && !c->send_busy) {
            metrics_client_release(c);
        }
    }
    metrics_check(m);
}

/* ---- exposition text ---- */

/* Shortest of %.15g and %.17g that reads back as the same double. */
static void metrics_format_value(double value, char *out, size_t outlen)
{
    if (isnan(value)) {
        snprintf(out, outlen, "NaN");
    } else if (isinf(value)) {
        snprintf(out, outlen, "%s", value > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(out, outlen, "%.15g", value);
        if (strtod(out, NULL) != value) {
            snprintf(out, outlen, "%.17g", value);
        }
    }
}

void metrics_line(buf_t *out, const char *name, const char *labels, double value)
{
    char text[32]; /* %.17g of a double: 24 characters at most */
    metrics_format_value(value, text, sizeof text);
    if (labels && *labels) {
        buf_appendf(out, "%s{%s} %s\n", name, labels, text);
    } else {
        buf_appendf(out, "%s %s\n", name, text);
    }
}

void metrics_help(buf_t *out, const char *name, const char *type, const char *help)
{
    if (help) {
        buf_appendf(out, "# HELP %s ", name);
        for (const char *p = help; *p; p++) {
            if (*p == '\\') {
                buf_append(out, "\\\\", 2);
            } else if (*p == '\n') {
                buf_append(out, "\\n", 2);
            } else {
                buf_append(out, p, 1);
            }
        }
        buf_append(out, "\n", 1);
    }
    if (type) {
        buf_appendf(out, "# TYPE %s %s\n", name, type);
    }
}
