/*
 * inbound_conn - `ringmail inbound`'s SMTP side on the ring: accepting, a
 * connection's lifetime, input and output, STARTTLS, what is accepted,
 * the limits and the timeouts. See inbound_int.h.
 *
 * A connection. Bytes from the socket land in raw; under TLS they are
 * decrypted into plain. The SMTP machine (engine/smtp_server.h) reads
 * plaintext and writes replies into wire (plaintext) or reply (TLS,
 * encrypted into wire at once). One SEND is in flight per socket, reading
 * `sending`; when it completes the next wire bytes are swapped in.
 *
 * A message. The message hook hands it to the writer thread and defers
 * the reply (SMTP_SERVER_DEFER): nothing more of the client's input is
 * read by the machine until the verdict comes back (what the client
 * pipelined waits in the buffer; the socket stops being read past
 * INBOUND_DEFERRED_INPUT_MAX). The verdict: 250 after the commit, 451
 * when the database failed (the session goes on), 421 when shutting down
 * before it was tried. The connection is not freed while its message is
 * with the writer, even if the client went away.
 *
 * Limits: --max-conns sessions at once and --max-per-client from one
 * address (421 at the greeting), --max-size (SIZE, and 552 over it),
 * --timeout between commands and --session-timeout for a whole session
 * (421 4.4.2). Only mail for [feedback] return_path is taken (550 5.7.1).
 *
 * Diagnostics: the client's replies are the diagnostics; with --verbose,
 * one line per message ("ringmail inbound: conn=N client=ADDR from=<..>
 * rcpts=.. size=N: 250 recorded ...") and per connection error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "campaign/inbound_int.h"

#include "engine/netaddr.h"
#include "pool/config.h"

#define INBOUND_RECV_SIZE 16384
#define INBOUND_MAX_PENDING_OUT (1u << 20)
#define INBOUND_DEFERRED_INPUT_MAX (64u * 1024u)
#define INBOUND_ACCEPT_RETRY_MS 100
#define INBOUND_CLOSE_GRACE_MS 5000

static const char inbound_reply_busy[] = "421 4.7.0 Too many connections, try again later";
static const char inbound_reply_per_client[] = "421 4.7.0 Too many connections from your address";
static const char inbound_reply_timeout[] = "421 4.4.2 Timeout: closing";
static const char inbound_reply_session[] = "421 4.4.2 Session time limit reached: closing";
static const char inbound_reply_shutdown[] = "421 4.3.2 Shutting down, try again later";
static const char inbound_reply_recorded[] = "250 2.0.0 Ok: recorded";
static const char inbound_reply_db[] = "451 4.3.0 Feedback store unavailable, try again later";

/* ---- small helpers ---- */

static void inbound_conn_log(const struct inbound_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void inbound_conn_log(const struct inbound_conn *c, const char *fmt, ...)
{
    if (!c->ib->o.verbose) {
        return;
    }
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fprintf(stderr, "ringmail inbound: conn=%" PRIu64 " client=%s %s\n", c->id,
            c->client[0] ? c->client : "-", text);
}

/* ---- the table of client addresses (loop thread only: no lock) ---- */

static unsigned inbound_peer_bucket(const char *address)
{
    unsigned h = 2166136261u;
    for (const char *p = address; *p; p++) {
        h = (h ^ (unsigned char)*p) * 16777619u;
    }
    return h % INBOUND_PEER_BUCKETS;
}

/* inbound_peer_find - the entry of address, created (open 0) if absent */
static struct inbound_peer *inbound_peer_find(struct inbound *ib, const char *address)
{
    struct inbound_peer **b = &ib->peers[inbound_peer_bucket(address)];
    for (struct inbound_peer *p = *b; p; p = p->next) {
        if (strcmp(p->address, address) == 0) {
            return p;
        }
    }
    struct inbound_peer *p = calloc(1, sizeof *p);
    if (!p) {
        abort();
    }
    snprintf(p->address, sizeof p->address, "%s", address);
    p->next = *b;
    *b = p;
    return p;
}

/* inbound_peer_close - one session of p fewer; the entry goes at zero */
static void inbound_peer_close(struct inbound *ib, struct inbound_peer *p)
{
    if (--p->open > 0) {
        return;
    }
    struct inbound_peer **b = &ib->peers[inbound_peer_bucket(p->address)];
    while (*b != p) {
        b = &(*b)->next;
    }
    *b = p->next;
    free(p);
}

/* ---- connection: lifetime ---- */

static void inbound_conn_flush(struct inbound_conn *c);
static void inbound_conn_output(struct inbound_conn *c);
static void inbound_conn_smtp(struct inbound_conn *c);

/* inbound_conn_session_end - the session no longer counts against the limits */
static void inbound_conn_session_end(struct inbound_conn *c)
{
    struct inbound *ib = c->ib;
    if (c->peer) {
        inbound_peer_close(ib, c->peer);
        c->peer = NULL;
    }
    if (c->counted) {
        c->counted = 0;
        ib->nconns--;
    }
}

void inbound_conn_release(struct inbound_conn *c)
{
    struct inbound *ib = c->ib;
    list_unlink(&ib->conns, &c->link);
    inbound_conn_session_end(c);
    close(c->fd);
    tls_conn_free(c->tls);
    smtp_server_free(c->smtp);
    buf_free(&c->raw);
    buf_free(&c->plain);
    buf_free(&c->reply);
    buf_free(&c->wire);
    buf_free(&c->sending);
    free(c);
    if (ib->loop && ib->stopping && !ib->conns.first && ib->outstanding == 0) {
        loop_stop(ib->loop); /* the last session of a shutdown (not after the loop is gone) */
    }
}

/* inbound_conn_abort - shut the socket down now; freed by inbound_conn_check */
static void inbound_conn_abort(struct inbound_conn *c)
{
    if (c->state == INBOUND_CONN_DEAD) {
        return;
    }
    c->state = INBOUND_CONN_DEAD;
    inbound_conn_session_end(c);
    loop_timer_cancel(c->ib->loop, &c->timer);
    shutdown(c->fd, SHUT_RDWR);
    if (c->recv_busy) {
        loop_cancel(c->ib->loop, &c->recv_op);
    }
}

/* inbound_conn_check - called last in every callback that touched c */
static void inbound_conn_check(struct inbound_conn *c)
{
    if (c->state == INBOUND_CONN_DEAD && !c->recv_busy && !c->send_busy && !c->job_busy) {
        inbound_conn_release(c);
    }
}

/* inbound_conn_close - send what is queued (a close_notify first when
 * notify and TLS is up), then shut down */
static void inbound_conn_close(struct inbound_conn *c, int notify)
{
    if (c->state == INBOUND_CONN_CLOSING || c->state == INBOUND_CONN_DEAD) {
        return;
    }
    inbound_conn_session_end(c);
    if (notify && c->tls && c->state == INBOUND_CONN_SMTP) {
        tls_shutdown(c->tls);
    }
    c->state = INBOUND_CONN_CLOSING;
    loop_timer_set(c->ib->loop, &c->timer, INBOUND_CLOSE_GRACE_MS);
    inbound_conn_output(c);
}

/* inbound_conn_refuse - line, then close (the machine ignores the rest) */
static void inbound_conn_refuse(struct inbound_conn *c, const char *line)
{
    smtp_server_refuse(c->smtp, c->tls ? &c->reply : &c->wire, line);
    inbound_conn_close(c, 1);
}

/* ---- connection: output ---- */

/* inbound_conn_output - encrypt the SMTP output (under TLS) and send */
static void inbound_conn_output(struct inbound_conn *c)
{
    if (c->state == INBOUND_CONN_DEAD) {
        return;
    }
    if (c->tls && buf_len(&c->reply) > 0) {
        enum tls_result r = tls_write(c->tls, buf_data(&c->reply), buf_len(&c->reply));
        buf_reset(&c->reply);
        if (r != TLS_OK) {
            inbound_conn_log(c, "event=tls_write reason=\"%s\"", tls_conn_error(c->tls));
            inbound_conn_abort(c);
            return;
        }
    }
    inbound_conn_flush(c);
}

/* inbound_conn_flush - start a SEND if none is in flight and bytes wait */
static void inbound_conn_flush(struct inbound_conn *c)
{
    if (c->send_busy || c->state == INBOUND_CONN_DEAD) {
        return;
    }
    if (buf_len(&c->sending) == 0) {
        if (buf_len(&c->wire) == 0) {
            if (c->state == INBOUND_CONN_CLOSING) {
                inbound_conn_abort(c); /* everything went out */
            }
            return;
        }
        buf_t t = c->sending; /* empty, keeps its storage */
        c->sending = c->wire;
        c->wire = t;
    }
    c->send_busy = 1;
    loop_send(c->ib->loop, &c->send_op, c->fd, buf_data(&c->sending), buf_len(&c->sending));
}

static void inbound_conn_recv(struct inbound_conn *c)
{
    size_t left = buf_len(&c->raw);
    char *w = buf_reserve(&c->raw, left < INBOUND_RECV_SIZE / 2 ? INBOUND_RECV_SIZE - left
                                                                : INBOUND_RECV_SIZE / 2);
    c->recv_busy = 1;
    loop_recv(c->ib->loop, &c->recv_op, c->fd, w, c->raw.cap - c->raw.len);
}

/* inbound_conn_resume_recv - read on, unless closing, the client is not
 * reading its replies, or enough waits behind a deferred message */
static void inbound_conn_resume_recv(struct inbound_conn *c)
{
    if (c->recv_busy || c->eof || c->state == INBOUND_CONN_CLOSING ||
        c->state == INBOUND_CONN_DEAD) {
        return;
    }
    if (buf_len(&c->wire) + buf_len(&c->sending) >= INBOUND_MAX_PENDING_OUT) {
        return;
    }
    if (c->job_busy && buf_len(&c->raw) + buf_len(&c->plain) >= INBOUND_DEFERRED_INPUT_MAX) {
        return;
    }
    inbound_conn_recv(c);
}

static void inbound_conn_on_send(struct loop_op *op, int res, unsigned flags)
{
    struct inbound_conn *c = op->owner;
    (void)flags;
    c->send_busy = 0;
    if (res <= 0) {
        if (c->state != INBOUND_CONN_DEAD) {
            inbound_conn_log(c, "event=send reason=\"%s\"", res ? strerror(-res) : "sent nothing");
        }
        inbound_conn_abort(c);
    } else {
        buf_consume(&c->sending, (size_t)res);
        inbound_conn_flush(c);
        inbound_conn_resume_recv(c);
    }
    inbound_conn_check(c);
}

/* ---- connection: input ---- */

static buf_t *inbound_conn_out(struct inbound_conn *c)
{
    return c->tls ? &c->reply : &c->wire;
}

/* inbound_conn_starttls - whatever the client pipelined after STARTTLS is
 * discarded, never read as a command (RFC 3207 5) */
static void inbound_conn_starttls(struct inbound_conn *c)
{
    if (buf_len(&c->raw) > 0) {
        inbound_conn_log(c, "event=starttls_violation reason=\"%zu bytes after STARTTLS\"",
                         buf_len(&c->raw));
        buf_reset(&c->raw);
    }
    c->tls = tls_conn_new(c->ib->tls, &c->raw, &c->wire, NULL, c);
    if (!c->tls) {
        inbound_conn_abort(c);
        return;
    }
    c->state = INBOUND_CONN_HANDSHAKE;
}

static void inbound_conn_smtp(struct inbound_conn *c)
{
    int peer_closed = 0;
    buf_t *in = &c->raw;
    if (c->tls) {
        enum tls_result r = tls_read(c->tls, &c->plain);
        if (r == TLS_ERROR) {
            inbound_conn_log(c, "event=tls_read reason=\"%s\"", tls_conn_error(c->tls));
            inbound_conn_abort(c);
            return;
        }
        peer_closed = r == TLS_CLOSED;
        in = &c->plain;
    }
    enum smtp_server_action a = smtp_server_input(c->smtp, in, inbound_conn_out(c));
    inbound_conn_output(c);
    if (c->state != INBOUND_CONN_SMTP) {
        return;
    }
    if (a == SMTP_SERVER_STARTTLS) {
        inbound_conn_starttls(c);
    } else if (a == SMTP_SERVER_CLOSE) {
        inbound_conn_close(c, 1);
    } else if (peer_closed && !c->job_busy) {
        inbound_conn_close(c, 1);
    }
}

static void inbound_conn_handshake(struct inbound_conn *c)
{
    enum tls_result r = tls_handshake(c->tls);
    if (r == TLS_WANT) {
        inbound_conn_output(c);
        return;
    }
    if (r != TLS_OK) {
        inbound_conn_log(c, "event=tls_handshake reason=\"%s\"", tls_conn_error(c->tls));
        inbound_conn_output(c); /* the alert, if any */
        inbound_conn_close(c, 0);
        return;
    }
    c->state = INBOUND_CONN_SMTP;
    inbound_conn_output(c); /* session tickets */
    if (buf_len(&c->raw) > 0) {
        inbound_conn_smtp(c); /* the client's first records came with its Finished */
    }
}

static void inbound_conn_on_recv(struct loop_op *op, int res, unsigned flags)
{
    struct inbound_conn *c = op->owner;
    (void)flags;
    c->recv_busy = 0;
    if (c->state == INBOUND_CONN_DEAD) {
        inbound_conn_check(c);
        return;
    }
    if (res <= 0) {
        if (res < 0 && res != -ECONNRESET && res != -ECANCELED) {
            inbound_conn_log(c, "event=recv reason=\"%s\"", strerror(-res));
        }
        if (res == 0 && c->job_busy) {
            c->eof = 1; /* half-closed: its message's answer and what follows still go out */
        } else if (res == 0) {
            inbound_conn_close(c, 0); /* half-closed: still send what is queued */
        } else {
            inbound_conn_abort(c); /* a deferred message keeps c until its verdict */
        }
        inbound_conn_check(c);
        return;
    }
    loop_mark_received(buf_data(&c->raw) + buf_len(&c->raw), (size_t)res);
    buf_commit(&c->raw, (size_t)res);
    c->active_ms = loop_now_ms(c->ib->loop);
    if (c->state == INBOUND_CONN_HANDSHAKE) {
        inbound_conn_handshake(c);
    } else if (c->state == INBOUND_CONN_SMTP) {
        inbound_conn_smtp(c);
    } else {
        buf_reset(&c->raw);
    }
    inbound_conn_resume_recv(c);
    inbound_conn_check(c);
}

/* ---- connection: the clock ---- */

static void inbound_conn_on_timer(struct loop_timer *t)
{
    struct inbound_conn *c = t->owner;
    struct inbound *ib = c->ib;
    uint64_t now = loop_now_ms(ib->loop);
    uint64_t session_end = c->started_ms + ib->o.session_ms;
    uint64_t idle_end = c->active_ms + ib->o.timeout_ms;
    if (c->state == INBOUND_CONN_CLOSING) {
        inbound_conn_abort(c); /* it does not read its goodbye */
    } else if (c->job_busy) {
        loop_timer_set(ib->loop, t, ib->o.timeout_ms); /* the wait is ours, not the client's */
    } else if (now >= session_end || now >= idle_end) {
        ib->timeouts++;
        inbound_conn_log(c, "event=%s", now >= session_end ? "session_timeout" : "idle_timeout");
        if (c->state == INBOUND_CONN_HANDSHAKE) {
            inbound_conn_abort(c); /* no SMTP to say it in */
        } else {
            inbound_conn_refuse(c,
                                now >= session_end ? inbound_reply_session : inbound_reply_timeout);
        }
    } else {
        uint64_t next = idle_end < session_end ? idle_end : session_end;
        loop_timer_set(ib->loop, t, next - now);
    }
    inbound_conn_check(c);
}

/* ---- SMTP hooks (user is the connection) ---- */

/* inbound_on_rcpt - only the return path's domain; any local part there
 * (b-, u-, postmaster, abuse: what the store cannot match it records as
 * unmatched); a bare "postmaster" too (RFC 5321 4.5.1) */
static void inbound_on_rcpt(void *user, const char *rcpt, struct smtp_server_decision *d)
{
    struct inbound_conn *c = user;
    struct inbound *ib = c->ib;
    const char *domain = ib->cfg->feedback.return_path;
    const char *at = strrchr(rcpt, '@');
    if (at ? strcasecmp(at + 1, domain) == 0 : strcasecmp(rcpt, "postmaster") == 0) {
        return;
    }
    ib->relay_denied++;
    snprintf(ib->rcpt_reply, sizeof ib->rcpt_reply,
             "550 5.7.1 Relaying denied: this server takes mail only for %s", domain);
    d->reply = ib->rcpt_reply;
}

/* inbound_on_message - to the writer; the reply waits for its verdict */
static void inbound_on_message(void *user, const struct smtp_server_message *m,
                               struct smtp_server_decision *d)
{
    struct inbound_conn *c = user;
    struct inbound *ib = c->ib;
    ib->messages++;
    c->job.conn = c;
    c->job.msg = (struct feedback_msg){.raw = m->data,
                                       .len = m->size,
                                       .client = c->client[0] ? c->client : NULL,
                                       .mail_from = m->mail_from,
                                       .rcpts = m->rcpts,
                                       .nrcpt = m->nrcpts};
    c->job.err[0] = '\0';
    c->job_busy = 1;
    ib->outstanding++;
    inbound_writer_submit(&ib->writer, &c->job);
    d->verdict = SMTP_SERVER_DEFER;
}

const struct smtp_server_hooks inbound_conn_hooks = {.rcpt = inbound_on_rcpt,
                                                     .message = inbound_on_message};

/* inbound_conn_log_message - the one line per message (--verbose) */
static void inbound_conn_log_message(struct inbound_conn *c, const char *reply)
{
    const struct inbound_job *j = &c->job;
    char rcpts[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < j->msg.nrcpt && used < sizeof rcpts; i++) {
        int n = snprintf(rcpts + used, sizeof rcpts - used, "%s%s", i ? "," : "", j->msg.rcpts[i]);
        used += n > 0 ? (size_t)n : 0;
    }
    const struct feedback_store_outcome *o = &j->outcome;
    if (j->result == INBOUND_JOB_COMMITTED) {
        inbound_conn_log(c,
                         "from=<%s> rcpts=%s size=%zu: %.3s recorded (batch of %zu: events %zu, "
                         "bounces %zu, soft %zu, delays %zu, complaints %zu, unsubscribes %zu, "
                         "auto-replies %zu, unmatched %zu, suppressed %zu)",
                         j->msg.mail_from, rcpts, j->msg.len, reply, j->batch, o->events,
                         o->bounces, o->soft_bounces, o->delays, o->complaints, o->unsubscribes,
                         o->auto_replies, o->unmatched, o->suppressed);
    } else {
        inbound_conn_log(c, "from=<%s> rcpts=%s size=%zu: %.3s (%s)", j->msg.mail_from, rcpts,
                         j->msg.len, reply, j->result == INBOUND_JOB_FAILED ? j->err : "shutdown");
    }
}

void inbound_conn_answer(struct inbound_conn *c)
{
    struct inbound *ib = c->ib;
    c->job_busy = 0;
    ib->outstanding--;
    const char *reply = c->job.result == INBOUND_JOB_COMMITTED ? inbound_reply_recorded
                        : c->job.result == INBOUND_JOB_FAILED  ? inbound_reply_db
                                                               : inbound_reply_shutdown;
    ib->answered_250 += c->job.result == INBOUND_JOB_COMMITTED;
    ib->answered_451 += c->job.result == INBOUND_JOB_FAILED;
    ib->answered_421 += c->job.result == INBOUND_JOB_SHUTDOWN;
    inbound_conn_log_message(c, reply);
    if (c->state == INBOUND_CONN_SMTP) {
        c->active_ms = loop_now_ms(ib->loop);
        if (c->job.result == INBOUND_JOB_SHUTDOWN) {
            inbound_conn_refuse(c, reply);
        } else {
            smtp_server_answer(c->smtp, inbound_conn_out(c), reply);
            if (ib->stopping) {
                inbound_conn_refuse(c, inbound_reply_shutdown);
            } else {
                inbound_conn_smtp(c); /* what was pipelined after the message */
                if (c->eof && !c->job_busy) {
                    inbound_conn_close(c, 0);
                }
            }
        }
        inbound_conn_resume_recv(c);
    } else if (c->state == INBOUND_CONN_CLOSING) {
        inbound_conn_output(c);
    }
    inbound_conn_check(c);
}

void inbound_conn_shutdown(struct inbound_conn *c)
{
    if (c->job_busy) {
        return; /* closed after its answer */
    }
    if (c->state == INBOUND_CONN_SMTP) {
        inbound_conn_refuse(c, inbound_reply_shutdown);
    } else {
        inbound_conn_abort(c);
    }
    inbound_conn_check(c);
}

/* ---- accepting ---- */

static struct inbound_conn *inbound_conn_alloc(struct inbound *ib, int fd)
{
    struct inbound_conn *c = calloc(1, sizeof *c);
    if (!c) {
        return NULL;
    }
    c->ib = ib;
    c->fd = fd;
    c->smtp = smtp_server_new(&ib->smtp, &inbound_conn_hooks, c);
    if (!c->smtp) {
        free(c);
        return NULL;
    }
    c->id = ++ib->next_conn_id;
    c->recv_op = (struct loop_op){inbound_conn_on_recv, c};
    c->send_op = (struct loop_op){inbound_conn_on_send, c};
    loop_timer_init(&c->timer, inbound_conn_on_timer, c);
    list_push_front(&ib->conns, &c->link);
    return c;
}

/* inbound_conn_admit - NULL, or the refusal the limits call for */
static const char *inbound_conn_admit(struct inbound_conn *c, int known)
{
    struct inbound *ib = c->ib;
    if (ib->nconns >= ib->o.max_conns) {
        return inbound_reply_busy;
    }
    if (known) {
        struct inbound_peer *p = inbound_peer_find(ib, c->client);
        if (p->open >= ib->o.max_per_client) { /* open >= 1: the entry is another's too */
            return inbound_reply_per_client;
        }
        p->open++;
        c->peer = p;
    }
    ib->nconns++;
    c->counted = 1;
    return NULL;
}

static void inbound_conn_new(struct inbound *ib, int fd)
{
    struct inbound_conn *c = inbound_conn_alloc(ib, fd);
    if (!c) {
        fprintf(stderr, "ringmail inbound: out of memory for a connection\n");
        close(fd);
        return;
    }
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    int known = getpeername(fd, (struct sockaddr *)&peer, &len) == 0;
    if (known) {
        netaddr_format_host((struct sockaddr *)&peer, c->client);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->started_ms = c->active_ms = loop_now_ms(ib->loop);
    c->state = INBOUND_CONN_SMTP;
    const char *refusal = inbound_conn_admit(c, known);
    if (refusal) {
        ib->refused++;
        inbound_conn_log(c, "event=refused reason=\"%s\"", refusal);
        inbound_conn_refuse(c, refusal);
    } else {
        ib->connections++;
        smtp_server_greeting(c->smtp, &c->wire);
        inbound_conn_output(c);
        loop_timer_set(ib->loop, &c->timer,
                       ib->o.timeout_ms < ib->o.session_ms ? ib->o.timeout_ms : ib->o.session_ms);
    }
    inbound_conn_resume_recv(c);
    inbound_conn_check(c);
}

static void inbound_listener_arm(struct inbound_listener *l)
{
    l->armed = 1;
    loop_accept(l->ib->loop, &l->op, l->fd);
}

static void inbound_listener_on_retry(struct loop_timer *t)
{
    struct inbound_listener *l = t->owner;
    if (!l->ib->stopping) {
        inbound_listener_arm(l);
    }
}

static void inbound_listener_on_accept(struct loop_op *op, int res, unsigned flags)
{
    struct inbound_listener *l = op->owner;
    struct inbound *ib = l->ib;
    int more = loop_cqe_more(flags);
    if (res >= 0) {
        if (ib->stopping) {
            close(res);
        } else {
            inbound_conn_new(ib, res);
        }
    } else if (res != -ECANCELED && ib->o.verbose) {
        fprintf(stderr, "ringmail inbound: accept: %s\n", strerror(-res));
    }
    if (more) {
        return;
    }
    l->armed = 0;
    if (ib->stopping) {
        return;
    }
    if (res >= 0) {
        inbound_listener_arm(l);
    } else {
        loop_timer_set(ib->loop, &l->retry, INBOUND_ACCEPT_RETRY_MS);
    }
}

void inbound_listener_start(struct inbound_listener *l)
{
    l->op = (struct loop_op){inbound_listener_on_accept, l};
    loop_timer_init(&l->retry, inbound_listener_on_retry, l);
    inbound_listener_arm(l);
}
