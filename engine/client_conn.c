/*
 * client_conn - one outbound SMTP connection on the ring. See the header.
 *
 * Receive path: one multishot receive per connection, armed once, into
 * the loop's shared receive buffers (loop_recv_multishot): each chunk is
 * appended to the inbound buffer (ciphertext under TLS, plaintext
 * otherwise) and handled in its completion, so a reply costs no new
 * submission and no poll arming, and an idle session keeps no receive
 * buffer of its own (only the bytes of a record not yet whole). Where the
 * kernel cannot provide buffers, a single receive per chunk writes
 * straight into the free tail of the inbound buffer; nothing touches that
 * buffer while it is in flight because bytes are only consumed inside its
 * completion, before the next receive is armed.
 * Send path: everything to send (plaintext commands, or ciphertext from
 * tls_write's BIO) lands in sendq; when no SEND is in flight sendq and
 * inflight swap, so appending never moves bytes the kernel is reading.
 */
#include "client_conn.h"
#include "trace.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tls_session_cache.h"

#define CLIENT_CONN_RECV_CHUNK 4096
/* With multishot receives: the inbound buffer's room kept once it is empty. */
#define CLIENT_CONN_IN_KEEP 1024
/* Out of descriptors: try socket() again after this long. */
#define CLIENT_CONN_FD_RETRY_MS 20

/* What the one timer is armed for. */
enum client_conn_timer {
    CLIENT_CONN_TIMER_NONE,
    CLIENT_CONN_TIMER_FD,      /* waiting for a free descriptor (back-pressure) */
    CLIENT_CONN_TIMER_CONNECT, /* the TCP connect */
    CLIENT_CONN_TIMER_TLS,     /* the whole handshake */
    CLIENT_CONN_TIMER_SMTP,    /* the whole reply the machine waits for */
};

/* The life cycle. CONNECTING -> SMTP, or CONNECTING -> HANDSHAKE -> SMTP
 * with implicit TLS; SMTP -> STARTTLS -> SMTP after the machine's STARTTLS;
 * then DRAINING once the machine is done, and CLOSING from anywhere. */
enum client_conn_state {
    CLIENT_CONN_CONNECTING, /* socket, TCP connect (or waiting for a free descriptor) */
    CLIENT_CONN_HANDSHAKE,  /* implicit TLS: the handshake before any SMTP */
    CLIENT_CONN_SMTP,       /* the machine drives */
    CLIENT_CONN_STARTTLS,   /* the handshake after STARTTLS; the machine waits for it */
    CLIENT_CONN_DRAINING,   /* the machine is done: send what is queued, then close */
    CLIENT_CONN_CLOSING,    /* closed and reported; freed once the kernel lets go */
};

/* For the trace: indexed by enum client_conn_state. */
static const char *const client_conn_state_names[] = {
    "CONNECTING", "HANDSHAKE", "SMTP", "STARTTLS", "DRAINING", "CLOSING",
};

struct client_conn {
    struct loop *loop;
    const struct client_conn_config *cfg;
    struct smtp_client *smtp; /* owned */
    struct tls_conn *tls;     /* owned, NULL until a handshake starts */
    client_conn_closed_cb on_closed;
    void *owner;
    enum client_conn_state state; /* changed only by client_conn_set_state */
    int fd;
    /* Not life-cycle states: each holds across several of them. */
    int tls_up;     /* the transport is TLS: from the handshake to the end, CLOSING
                       included (on_closed reads client_conn_tls) */
    int send_busy;  /* one SEND in flight: the send path's own, in any state */
    int recv_multi; /* the receive in flight is multishot (loop_recv_multishot) */
    unsigned ops_in_flight;
    unsigned long trace_id; /* this connection's number in trace lines */
    struct loop_op connect_op, recv_op, send_op;
    struct loop_timer timer;
    enum client_conn_timer timer_for;
    unsigned timer_wait; /* smtp_client_wait_id when a reply deadline was set */
    uint64_t tls_started_ms;
    buf_t in;       /* owned: received bytes (ciphertext under TLS) */
    buf_t sendq;    /* owned: bytes to send next */
    buf_t inflight; /* owned: bytes the kernel is sending */
    struct tls_info tls_info;
    int tls_failed; /* tls_info holds the facts of a handshake that failed */
    struct client_conn_times times;
};

/* One plaintext scratch buffer per thread: decrypted bytes are fed to the
 * machine at once, so no connection needs its own. */
static __thread buf_t client_conn_plain;

static void client_conn_close(struct client_conn *c, const char *why);
static void client_conn_flush(struct client_conn *c);
static void client_conn_apply(struct client_conn *c, enum smtp_action a);
static void client_conn_handshake(struct client_conn *c);

/* client_conn_state_name - the state's name for trace lines */
static const char *client_conn_state_name(enum client_conn_state st)
{
    return (unsigned)st < sizeof client_conn_state_names / sizeof *client_conn_state_names
               ? client_conn_state_names[st]
               : "?";
}

/* client_conn_set_state - the one place the state changes (as curl's
 * mstate: always use this function to change state, to make debugging
 * easier); with tracing on, each change is a line. */
static void client_conn_set_state(struct client_conn *c, enum client_conn_state st, const char *why)
{
    if (c->state == st) {
        return;
    }
    if (trace_enabled) {
        trace_state("client_conn", c->trace_id, client_conn_state_name(c->state),
                    client_conn_state_name(st), why);
    }
    c->state = st;
}

/* client_conn_handshaking - a TLS handshake runs (implicit or after STARTTLS) */
static int client_conn_handshaking(const struct client_conn *c)
{
    return c->state == CLIENT_CONN_HANDSHAKE || c->state == CLIENT_CONN_STARTTLS;
}

/* client_conn_talking - the machine has started and the socket is open:
 * its input is read and its deadlines run, also while draining. */
static int client_conn_talking(const struct client_conn *c)
{
    return c->state == CLIENT_CONN_SMTP || c->state == CLIENT_CONN_DRAINING;
}

static void client_conn_maybe_free(struct client_conn *c)
{
    if (c->state != CLIENT_CONN_CLOSING || c->ops_in_flight > 0) {
        return;
    }
    if (c->fd >= 0) {
        loop_close(c->loop, c->fd);
    }
    loop_timer_cancel(c->loop, &c->timer);
    tls_conn_free(c->tls);
    smtp_client_free(c->smtp);
    buf_free(&c->in);
    buf_free(&c->sendq);
    buf_free(&c->inflight);
    free(c);
}

/* Every callback holds the connection until it returns: the completion
 * being handled still counts as in flight, so a close inside the callback
 * cannot free the connection under it. */
static void client_conn_op_done(struct client_conn *c)
{
    c->ops_in_flight--;
    client_conn_maybe_free(c);
}

static void client_conn_timer(struct client_conn *c, enum client_conn_timer what, unsigned ms)
{
    c->timer_for = ms ? what : CLIENT_CONN_TIMER_NONE;
    if (ms) {
        loop_timer_set(c->loop, &c->timer, ms);
    } else {
        loop_timer_cancel(c->loop, &c->timer);
    }
}

/* client_conn_arm_timer - a deadline per wait, never per byte: a server
 * that trickles a reply (a line every 2 s, a byte a second) must not keep
 * the session alive past its timeout. So the timer is set only when a new
 * wait starts (the handshake, or a new smtp_client_wait_id) and otherwise
 * left to run. */
static void client_conn_arm_timer(struct client_conn *c)
{
    if (client_conn_handshaking(c)) {
        if (c->timer_for != CLIENT_CONN_TIMER_TLS) {
            client_conn_timer(c, CLIENT_CONN_TIMER_TLS, c->cfg->timeout_tls_ms);
        }
        return;
    }
    if (!client_conn_talking(c)) {
        return;
    }
    unsigned ms = smtp_client_timeout_ms(c->smtp);
    unsigned wait = smtp_client_wait_id(c->smtp);
    if (ms && c->timer_for == CLIENT_CONN_TIMER_SMTP && c->timer_wait == wait) {
        return; /* the same reply: its deadline stands */
    }
    c->timer_wait = wait;
    client_conn_timer(c, CLIENT_CONN_TIMER_SMTP, ms);
}

/* The handshake ended, well or not: record how long it took. */
static void client_conn_tls_ended(struct client_conn *c)
{
    if (c->tls_started_ms) {
        c->times.tls_ms = loop_clock_ms(c->loop) - c->tls_started_ms;
        c->tls_started_ms = 0;
    }
}

/* Arm the receive: multishot where the loop can provide buffers (it stays
 * armed until a completion without "more"), else one receive. */
static void client_conn_recv(struct client_conn *c)
{
    c->ops_in_flight++;
    c->recv_multi = loop_recv_multishot(c->loop, &c->recv_op, c->fd) == 0;
    if (!c->recv_multi) {
        char *w = buf_reserve(&c->in, CLIENT_CONN_RECV_CHUNK);
        loop_recv(c->loop, &c->recv_op, c->fd, w, CLIENT_CONN_RECV_CHUNK);
    }
}

static void client_conn_on_send(struct loop_op *op, int res, unsigned flags)
{
    (void)flags;
    struct client_conn *c = op->owner;
    c->send_busy = 0;
    if (c->state != CLIENT_CONN_CLOSING) {
        if (res < 0) {
            client_conn_close(c, strerror(-res));
        } else {
            buf_consume(&c->inflight, (size_t)res);
            client_conn_flush(c);
        }
    }
    client_conn_op_done(c);
}

/* Start a SEND if none is in flight and anything waits. */
static void client_conn_flush(struct client_conn *c)
{
    if (c->state == CLIENT_CONN_CLOSING || c->send_busy) {
        return;
    }
    if (buf_len(&c->inflight) == 0) {
        buf_t t = c->inflight;
        c->inflight = c->sendq;
        c->sendq = t;
        buf_shrink(&c->sendq, 16384);
    }
    if (buf_len(&c->inflight) == 0) {
        if (c->state == CLIENT_CONN_DRAINING) {
            client_conn_close(c, NULL);
        }
        return;
    }
    c->send_busy = 1;
    c->ops_in_flight++;
    loop_send(c->loop, &c->send_op, c->fd, buf_data(&c->inflight), buf_len(&c->inflight));
}

/* Move the machine's output to the send queue, through TLS when it is up. */
static void client_conn_take_output(struct client_conn *c)
{
    buf_t *out = smtp_client_output(c->smtp);
    if (buf_len(out) == 0) {
        return;
    }
    if (c->tls_up) {
        if (tls_write(c->tls, buf_data(out), buf_len(out)) != TLS_OK) {
            buf_reset(out);
            client_conn_close(c, tls_conn_error(c->tls));
            return;
        }
        buf_reset(out);
    } else if (buf_len(&c->sendq) == 0) {
        buf_t t = c->sendq; /* swap instead of copying */
        c->sendq = *out;
        *out = t;
    } else {
        buf_append(&c->sendq, buf_data(out), buf_len(out));
        buf_reset(out);
    }
    buf_shrink(out, 16384);
}

static int client_conn_session_cb(void *user, struct ssl_session_st *session)
{
    struct client_conn *c = user;
    if (!c->cfg->session_cache || !c->cfg->session_key) {
        return 0;
    }
    tls_session_cache_put(c->cfg->session_cache, c->cfg->session_key, session);
    return 1;
}

static void client_conn_start_tls(struct client_conn *c)
{
    if (!c->cfg->tls_ctx) {
        smtp_client_tls_done(c->smtp, 0, "no TLS context configured");
        client_conn_close(c, NULL);
        return;
    }
    c->tls = tls_conn_new(c->cfg->tls_ctx, &c->in, &c->sendq, c->cfg->server_name, c);
    if (!c->tls) {
        client_conn_apply(c, smtp_client_tls_done(c->smtp, 0, "out of memory"));
        return;
    }
    if (c->cfg->dane) {
        tls_conn_set_dane(c->tls, c->cfg->dane, c->cfg->ndane, c->cfg->server_name);
    }
    if (c->cfg->session_cache && c->cfg->session_key) {
        struct ssl_session_st *s =
            tls_session_cache_take(c->cfg->session_cache, c->cfg->session_key);
        if (s) {
            tls_conn_set_session(c->tls, s);
            tls_session_free(s);
        }
    }
    c->tls_started_ms = loop_clock_ms(c->loop);
    /* From CONNECTING it is implicit TLS; from SMTP, the machine's STARTTLS. */
    if (c->state == CLIENT_CONN_CONNECTING) {
        client_conn_set_state(c, CLIENT_CONN_HANDSHAKE, "implicit TLS");
    } else {
        client_conn_set_state(c, CLIENT_CONN_STARTTLS, "220 to STARTTLS");
    }
    client_conn_handshake(c); /* the ClientHello */
}

static void client_conn_apply(struct client_conn *c, enum smtp_action a)
{
    if (c->state == CLIENT_CONN_CLOSING) {
        return;
    }
    client_conn_take_output(c);
    if (c->state == CLIENT_CONN_CLOSING) {
        return;
    }
    if (a == SMTP_ACTION_STARTTLS) {
        client_conn_start_tls(c);
    }
    if (a == SMTP_ACTION_CLOSE) {
        client_conn_set_state(c, CLIENT_CONN_DRAINING, smtp_client_end_reason(c->smtp));
    }
    client_conn_flush(c);
    if (c->state != CLIENT_CONN_CLOSING) {
        client_conn_arm_timer(c);
    }
}

static void client_conn_handshake(struct client_conn *c)
{
    enum tls_result r = tls_handshake(c->tls);
    if (r == TLS_WANT) {
        client_conn_flush(c);
        return;
    }
    if (r != TLS_OK) {
        char err[256];
        snprintf(err, sizeof err, "%s", tls_conn_error(c->tls));
        tls_conn_info(c->tls, &c->tls_info);
        c->tls_failed = 1;
        client_conn_tls_ended(c);
        client_conn_flush(c); /* the alert, if any */
        client_conn_set_state(c, CLIENT_CONN_SMTP, "TLS handshake failed");
        client_conn_apply(c, smtp_client_tls_done(c->smtp, 0, err));
        return;
    }
    c->tls_up = 1;
    client_conn_tls_ended(c);
    tls_conn_info(c->tls, &c->tls_info);
    int implicit = c->state == CLIENT_CONN_HANDSHAKE; /* no SMTP yet */
    client_conn_set_state(c, CLIENT_CONN_SMTP, c->tls_info.resumed ? "TLS up, resumed" : "TLS up");
    if (implicit) {
        client_conn_apply(c, smtp_client_start(c->smtp, 1));
    } else {
        client_conn_apply(c, smtp_client_tls_done(c->smtp, 1, NULL));
    }
}

/* Bytes arrived in c->in: run them through TLS and the machine. */
static void client_conn_process(struct client_conn *c)
{
    if (client_conn_handshaking(c)) {
        client_conn_handshake(c);
        if (!client_conn_talking(c) || buf_len(&c->in) == 0) {
            return;
        }
    }
    if (!c->tls_up) {
        enum smtp_action a = smtp_client_input(c->smtp, buf_data(&c->in), buf_len(&c->in));
        buf_reset(&c->in);
        client_conn_apply(c, a);
        return;
    }
    buf_t *plain = &client_conn_plain;
    buf_reset(plain);
    enum tls_result r = tls_read(c->tls, plain);
    enum smtp_action a = SMTP_ACTION_WAIT;
    if (buf_len(plain) > 0) {
        a = smtp_client_input(c->smtp, buf_data(plain), buf_len(plain));
    }
    buf_shrink(plain, 65536);
    if (a == SMTP_ACTION_WAIT && r == TLS_CLOSED) {
        client_conn_close(c, "server sent TLS close_notify");
        return;
    }
    if (a == SMTP_ACTION_WAIT && r == TLS_ERROR) {
        client_conn_close(c, tls_conn_error(c->tls));
        return;
    }
    client_conn_apply(c, a);
}

static void client_conn_on_recv(struct loop_op *op, int res, unsigned flags)
{
    struct client_conn *c = op->owner;
    /* A multishot receive stays in flight while more completions follow. */
    int more = c->recv_multi && loop_cqe_more(flags);
    if (c->state != CLIENT_CONN_CLOSING) {
        if (res == -ENOBUFS && c->recv_multi) {
            client_conn_recv(c); /* every shared buffer was in use: the bytes wait */
        } else if (res <= 0) {
            client_conn_close(c, res == 0 ? "closed by server" : strerror(-res));
        } else {
            if (c->recv_multi) {
                buf_append(&c->in, loop_recv_data(c->loop, flags), (size_t)res);
            } else {
                loop_mark_received(buf_data(&c->in) + buf_len(&c->in), (size_t)res);
                buf_commit(&c->in, (size_t)res);
            }
            client_conn_process(c);
            if (c->state != CLIENT_CONN_CLOSING && !more) {
                client_conn_recv(c);
            }
            if (c->recv_multi) {
                /* Once empty, a handshake flight's room goes back: an idle
                 * session keeps at most a reply's worth. */
                buf_shrink(&c->in, CLIENT_CONN_IN_KEEP);
            }
        }
    }
    if (!more) {
        client_conn_op_done(c);
    }
}

static void client_conn_on_connect(struct loop_op *op, int res, unsigned flags)
{
    (void)flags;
    struct client_conn *c = op->owner;
    if (c->state == CLIENT_CONN_CLOSING) {
        client_conn_op_done(c);
        return;
    }
    if (res < 0) {
        char text[160];
        snprintf(text, sizeof text, "connect failed: %s", strerror(-res));
        smtp_client_abort(c->smtp, "connect_failed", text);
        client_conn_close(c, NULL);
        client_conn_op_done(c);
        return;
    }
    c->times.connect_ms = loop_clock_ms(c->loop) - c->times.started_ms;
    if (c->cfg->smtp.implicit_tls) {
        client_conn_start_tls(c);
    } else {
        client_conn_set_state(c, CLIENT_CONN_SMTP, "connected");
        client_conn_apply(c, smtp_client_start(c->smtp, 0));
    }
    if (c->state != CLIENT_CONN_CLOSING) {
        client_conn_arm_timer(c);
        client_conn_recv(c);
    }
    client_conn_op_done(c);
}

static void client_conn_on_timer(struct loop_timer *t)
{
    struct client_conn *c = t->owner;
    c->ops_in_flight++; /* hold, as a completion does */
    if (c->timer_for == CLIENT_CONN_TIMER_FD) {
        c->timer_for = CLIENT_CONN_TIMER_NONE;
        client_conn_start(c);
    } else if (c->state == CLIENT_CONN_CONNECTING) {
        smtp_client_abort(c->smtp, "timeout_connect", "no answer to the TCP connect");
        client_conn_close(c, NULL);
    } else if (client_conn_handshaking(c)) {
        client_conn_tls_ended(c);
        smtp_client_abort(c->smtp, "timeout_tls", "TLS handshake timed out");
        client_conn_close(c, NULL);
    } else if (client_conn_talking(c)) {
        client_conn_apply(c, smtp_client_timeout(c->smtp));
        client_conn_close(c, NULL);
    }
    client_conn_op_done(c);
}

static void client_conn_close(struct client_conn *c, const char *why)
{
    if (c->state == CLIENT_CONN_CLOSING) {
        return;
    }
    if (client_conn_handshaking(c)) {
        client_conn_tls_ended(c);
    }
    client_conn_set_state(c, CLIENT_CONN_CLOSING, why);
    loop_timer_cancel(c->loop, &c->timer);
    /* Settle whatever the machine still holds before anyone hears of the close. */
    smtp_client_closed(c->smtp, why);
    if (c->fd >= 0) {
        /* Completes the pending receive (and send) so the kernel lets go. */
        shutdown(c->fd, SHUT_RDWR);
    }
    /* Once: CLOSING is never left, and this is the only way in. */
    c->on_closed(c->owner, c);
    client_conn_maybe_free(c);
}

struct client_conn *client_conn_new(struct loop *loop, const struct client_conn_config *cfg,
                                    const struct smtp_client_ops *ops,
                                    client_conn_closed_cb on_closed, void *owner)
{
    struct client_conn *c = calloc(1, sizeof *c);
    if (!c) {
        return NULL;
    }
    /* The machine's lines carry the connection's number, not one of its own. */
    unsigned long trace_id = trace_next_id();
    struct smtp_client_config smtp_cfg = cfg->smtp;
    smtp_cfg.trace_id = trace_id;
    c->smtp = smtp_client_new(&smtp_cfg, ops, owner);
    if (!c->smtp) {
        free(c);
        return NULL;
    }
    c->loop = loop;
    c->cfg = cfg;
    c->trace_id = trace_id;
    c->on_closed = on_closed;
    c->owner = owner;
    c->fd = -1;
    c->connect_op = (struct loop_op){client_conn_on_connect, c};
    c->recv_op = (struct loop_op){client_conn_on_recv, c};
    c->send_op = (struct loop_op){client_conn_on_send, c};
    loop_timer_init(&c->timer, client_conn_on_timer, c);
    return c;
}

void client_conn_start(struct client_conn *c)
{
    c->times.started_ms = loop_clock_ms(c->loop);
    c->fd = socket(c->cfg->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    if (c->fd < 0 && (errno == EMFILE || errno == ENFILE)) {
        /* Out of descriptors is back-pressure, not the server's fault nor
         * the message's: wait for other connections to give theirs back. */
        client_conn_timer(c, CLIENT_CONN_TIMER_FD, CLIENT_CONN_FD_RETRY_MS);
        return;
    }
    if (c->fd < 0) {
        char text[160];
        snprintf(text, sizeof text, "socket: %s", strerror(errno));
        smtp_client_abort(c->smtp, "connect_failed", text);
        client_conn_close(c, NULL);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (c->cfg->source_len > 0 &&
        bind(c->fd, (const struct sockaddr *)&c->cfg->source, c->cfg->source_len) < 0) {
        char text[160];
        snprintf(text, sizeof text, "bind source address: %s", strerror(errno));
        smtp_client_abort(c->smtp, "connect_failed", text);
        client_conn_close(c, NULL);
        return;
    }
    c->ops_in_flight++;
    loop_connect(c->loop, &c->connect_op, c->fd, (const struct sockaddr *)&c->cfg->addr,
                 c->cfg->addrlen);
    client_conn_timer(c, CLIENT_CONN_TIMER_CONNECT, c->cfg->timeout_connect_ms);
}

void client_conn_abort(struct client_conn *c, const char *reason, const char *text)
{
    if (c->state == CLIENT_CONN_CLOSING) {
        return;
    }
    c->ops_in_flight++; /* the owner's callbacks run inside */
    if (client_conn_handshaking(c)) {
        client_conn_tls_ended(c);
    }
    smtp_client_abort(c->smtp, reason, text);
    client_conn_close(c, NULL);
    client_conn_op_done(c);
}

void client_conn_thread_done(void)
{
    buf_free(&client_conn_plain);
}

void client_conn_tls_setup(struct tls_ctx *ctx)
{
    tls_ctx_set_session_cb(ctx, client_conn_session_cb);
}

const struct tls_info *client_conn_tls(const struct client_conn *c)
{
    return c->tls_up ? &c->tls_info : NULL;
}

const struct tls_info *client_conn_tls_failed(const struct client_conn *c)
{
    return c->tls_failed ? &c->tls_info : NULL;
}

const struct client_conn_times *client_conn_times(const struct client_conn *c)
{
    return &c->times;
}

const struct smtp_client *client_conn_smtp(const struct client_conn *c)
{
    return c->smtp;
}

unsigned long client_conn_trace_id(const struct client_conn *c)
{
    return c->trace_id;
}

void client_conn_resume(struct client_conn *c)
{
    if (c->state != CLIENT_CONN_SMTP || !smtp_client_idle(c->smtp)) {
        return;
    }
    c->ops_in_flight++; /* the owner's callbacks may close us */
    client_conn_apply(c, smtp_client_resume(c->smtp));
    client_conn_op_done(c);
}

int client_conn_idle(const struct client_conn *c)
{
    return c->state == CLIENT_CONN_SMTP && smtp_client_idle(c->smtp);
}
