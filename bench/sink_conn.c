/*
 * sink_conn - the sink's protocol side: a connection's lifetime, its output
 * and input, the SMTP hooks (what the sink answers) and accepting. See
 * sink_int.h.
 *
 * A connection. Bytes from the socket land in raw (16 KB at a time); under
 * TLS they are decrypted into plain. The SMTP machine reads plaintext and
 * writes replies into wire (plaintext session) or reply (TLS, encrypted
 * into wire right away). Wire bytes become sendable at once, or after
 * --latency-ms for SMTP replies (a small FIFO of deadlines on one loop
 * timer); handshake bytes queue behind held replies, never ahead. One SEND
 * is in flight per socket, reading the `sending` buffer, which nothing
 * touches until the completion; when it is idle the released wire bytes
 * are swapped (or copied) into it. A connection that stops reading its
 * replies stops being read (1 MB of unsent output at most).
 *
 * Closing. CLOSING flushes what is queued, then the socket is shut down
 * (DEAD); shutdown() wakes the pending RECV, and the connection is freed
 * only when neither RECV nor SEND is in flight, at the end of a completion
 * or timer callback, never inside a helper.
 *
 * Only the connection count (--max-conns and peak_concurrent are global by
 * nature) is an atomic shared by the workers, touched once per connection.
 *
 * Diagnostics: with --verbose, one line per connection error on stderr
 * ("sink: level=error thread=N conn=N peer=ADDR event=EVENT reason=..."),
 * and accept errors; "sink: out of memory for a connection" always.
 */
#include "bench/sink_int.h"

#include "engine/netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/io_uring.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define SINK_RECV_SIZE 16384
#define SINK_MAX_PENDING_OUT (1u << 20)
#define SINK_ACCEPT_RETRY_MS 100
#define SINK_GARBAGE_LINE_MAX 4096

static const char sink_reply_busy[] = "421 4.7.0 Too many connections";
static const char sink_reply_unavailable[] = "421 4.3.2 Service not available (sink)";
static const char sink_reply_timeout[] = "421 4.4.2 Error: timeout exceeded";
static const char sink_reply_garbage[] = "HTTP/1.1 400 Bad Request\r\n";
static const char sink_reply_tls_required[] = "530 5.7.0 Must issue a STARTTLS command first";

/* ---- small helpers ---- */

static void sink_conn_log(const struct sink_conn *c, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void sink_conn_log(const struct sink_conn *c, const char *event, const char *fmt, ...)
{
    if (!c->w->sink->cfg.verbose) {
        return;
    }
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    fprintf(stderr, "sink: level=error thread=%u conn=%" PRIu64 " peer=%s event=%s reason=\"%s\"\n",
            c->w->index, c->id, c->peer[0] ? c->peer : "-", event, detail);
}

/* splitmix64: fast, and reproducible from --seed. */
static uint64_t sink_random(struct sink_worker *w)
{
    uint64_t z = (w->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned sink_percent(struct sink_worker *w)
{
    return (unsigned)(sink_random(w) % 100);
}

/* "tempfail@x", "tempfail+tag@x" (case-insensitive) */
static int sink_local_part_is(const char *address, const char *word)
{
    size_t n = strlen(word);
    return strncasecmp(address, word, n) == 0 &&
           (address[n] == '@' || address[n] == '+' || address[n] == '\0');
}

/* Wall-clock milliseconds, for timestamps a test compares with its own
 * (first_accept_ms and last_accept_ms are epoch ms): the one clock here that
 * is not engine/clock.h's monotonic one, on purpose. */
static uint64_t sink_realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- connection: lifetime ---- */

static void sink_conn_flush(struct sink_conn *c);
static void sink_conn_output(struct sink_conn *c, int is_reply);

/*
 * The SMTP session is over for its peer's open count: at QUIT, or when the
 * sink decides to close (421, a cut, a timeout), before the client hears of
 * it, or at the latest when the connection is freed. Counting until the
 * socket is gone would overlap a client's next connection, which it opens
 * as soon as it has the 221, and overstate its concurrency.
 */
static void sink_conn_session_end(struct sink_conn *c)
{
    if (c->peer_open) {
        c->peer_open = 0;
        sink_peers_close(&c->w->sink->peers, c->peer_stats);
    }
}

/* Free everything the connection owns. Timers must be cancelled already
 * (or the loop gone); no operation may be in flight. */
void sink_conn_release(struct sink_conn *c)
{
    struct sink_worker *w = c->w;
    list_unlink(&w->conns, &c->link);
    close(c->fd);
    tls_conn_free(c->tls);
    smtp_server_free(c->smtp);
    buf_free(&c->raw);
    buf_free(&c->plain);
    buf_free(&c->reply);
    buf_free(&c->wire);
    buf_free(&c->sending);
    if (!c->refused) {
        atomic_fetch_sub(&w->sink->current, 1);
    }
    sink_conn_session_end(c);
    free(c);
}

/* Shut the socket down now; the pending RECV completes and the connection
 * is freed by sink_conn_check at the end of the callback. */
static void sink_conn_abort(struct sink_conn *c)
{
    if (c->state == SINK_CONN_DEAD) {
        return;
    }
    c->state = SINK_CONN_DEAD;
    sink_conn_session_end(c);
    loop_timer_cancel(c->w->loop, &c->idle_timer);
    loop_timer_cancel(c->w->loop, &c->held_timer);
    shutdown(c->fd, SHUT_RDWR);
    if (c->recv_busy) {
        loop_cancel(c->w->loop, &c->recv_op);
    }
}

/* Called last in every callback that touched c. */
static void sink_conn_check(struct sink_conn *c)
{
    if (c->state == SINK_CONN_DEAD && !c->recv_busy && !c->send_busy) {
        sink_conn_release(c);
    }
}

static int sink_conn_tls_up(const struct sink_conn *c)
{
    return c->tls && (c->state == SINK_CONN_SMTP || c->state == SINK_CONN_GARBAGE);
}

/* Send what is queued (after a close_notify when notify), then close. */
static void sink_conn_close(struct sink_conn *c, int notify)
{
    if (c->state == SINK_CONN_CLOSING || c->state == SINK_CONN_DEAD) {
        return;
    }
    sink_conn_session_end(c);
    if (notify && sink_conn_tls_up(c)) {
        tls_shutdown(c->tls);
        sink_conn_output(c, 0);
    }
    c->state = SINK_CONN_CLOSING;
    sink_conn_flush(c);
}

/* ---- connection: output ---- */

static void sink_conn_hold(struct sink_conn *c, uint64_t upto)
{
    struct loop *loop = c->w->loop;
    const struct sink_config *cfg = &c->w->sink->cfg;
    uint64_t delay = cfg->latency_ms;
    if (cfg->latency_jitter_ms) {
        delay += sink_random(c->w) % ((uint64_t)cfg->latency_jitter_ms + 1);
    }
    uint64_t deadline = loop_now_ms(loop) + delay;
    if (c->held_count == SINK_HELD_MAX) {
        /* Full: the newest entry absorbs this batch and its later deadline. */
        struct sink_held *last = &c->held[(c->held_first + c->held_count - 1) % SINK_HELD_MAX];
        last->upto = upto;
        last->deadline_ms = deadline;
    } else {
        struct sink_held *h = &c->held[(c->held_first + c->held_count) % SINK_HELD_MAX];
        h->upto = upto;
        h->deadline_ms = deadline;
        c->held_count++;
    }
    if (!loop_timer_active(&c->held_timer)) {
        loop_timer_set(loop, &c->held_timer, delay);
    }
}

static void sink_conn_on_held(struct loop_timer *t)
{
    struct sink_conn *c = t->owner;
    uint64_t now = loop_now_ms(c->w->loop);
    while (c->held_count && c->held[c->held_first].deadline_ms <= now) {
        c->release_upto = c->held[c->held_first].upto;
        c->held_first = (c->held_first + 1) % SINK_HELD_MAX;
        c->held_count--;
    }
    if (c->held_count) {
        loop_timer_set(c->w->loop, t, c->held[c->held_first].deadline_ms - now);
    }
    sink_conn_flush(c);
    sink_conn_check(c);
}

/*
 * Encrypt the SMTP output (under TLS) and account the new wire bytes:
 * replies are held --latency-ms, other bytes (handshake) are released at
 * once unless replies are held, which they must not overtake.
 */
static void sink_conn_output(struct sink_conn *c, int is_reply)
{
    if (c->state == SINK_CONN_DEAD) {
        return;
    }
    if (c->tls && buf_len(&c->reply) > 0) {
        enum tls_result r = tls_write(c->tls, buf_data(&c->reply), buf_len(&c->reply));
        buf_reset(&c->reply);
        if (r != TLS_OK) {
            sink_conn_log(c, "tls_write", "%s", tls_conn_error(c->tls));
            sink_conn_abort(c);
            return;
        }
    }
    uint64_t total = c->wire_taken + buf_len(&c->wire);
    if (total > c->wire_assigned) {
        if (is_reply && c->w->sink->cfg.latency_ms) {
            sink_conn_hold(c, total);
        } else if (c->held_count) {
            c->held[(c->held_first + c->held_count - 1) % SINK_HELD_MAX].upto = total;
        } else {
            c->release_upto = total;
        }
        c->wire_assigned = total;
    }
    sink_conn_flush(c);
}

/* Start a SEND if none is in flight and released bytes wait. */
static void sink_conn_flush(struct sink_conn *c)
{
    if (c->send_busy || c->state == SINK_CONN_DEAD) {
        return;
    }
    if (buf_len(&c->sending) == 0) {
        size_t n = (size_t)(c->release_upto - c->wire_taken);
        if (n == 0) {
            if (c->state == SINK_CONN_CLOSING && c->held_count == 0) {
                sink_conn_abort(c); /* everything went out */
            }
            return;
        }
        if (n == buf_len(&c->wire)) {
            buf_t t = c->sending; /* empty, keeps its storage */
            c->sending = c->wire;
            c->wire = t;
        } else {
            buf_append(&c->sending, buf_data(&c->wire), n);
            buf_consume(&c->wire, n);
        }
        c->wire_taken += n;
    }
    c->send_busy = 1;
    loop_send(c->w->loop, &c->send_op, c->fd, buf_data(&c->sending), buf_len(&c->sending));
}

/* Ask for room so that raw stays at SINK_RECV_SIZE when a few bytes are
 * left over (a partial line, a partial TLS record), instead of doubling. */
static void sink_conn_recv(struct sink_conn *c)
{
    size_t left = buf_len(&c->raw);
    char *w = buf_reserve(&c->raw,
                          left < SINK_RECV_SIZE / 2 ? SINK_RECV_SIZE - left : SINK_RECV_SIZE / 2);
    c->recv_busy = 1;
    loop_recv(c->w->loop, &c->recv_op, c->fd, w, c->raw.cap - c->raw.len);
}

/* Read on, unless closing or the peer is not reading its replies. */
static void sink_conn_resume_recv(struct sink_conn *c)
{
    if (c->recv_busy || c->state == SINK_CONN_CLOSING || c->state == SINK_CONN_DEAD) {
        return;
    }
    if (buf_len(&c->wire) + buf_len(&c->sending) >= SINK_MAX_PENDING_OUT) {
        return;
    }
    sink_conn_recv(c);
}

static void sink_conn_on_send(struct loop_op *op, int res, unsigned flags)
{
    struct sink_conn *c = op->owner;
    (void)flags;
    c->send_busy = 0;
    if (res <= 0) {
        if (c->state != SINK_CONN_DEAD) {
            sink_conn_log(c, "send", "%s", res ? strerror(-res) : "sent nothing");
        }
        sink_conn_abort(c);
    } else {
        buf_consume(&c->sending, (size_t)res);
        sink_conn_flush(c);
        sink_conn_resume_recv(c);
    }
    sink_conn_check(c);
}

/* ---- connection: input ---- */

static buf_t *sink_conn_out(struct sink_conn *c)
{
    return c->tls ? &c->reply : &c->wire;
}

/* The plaintext the client sent: raw, or raw decrypted into plain. NULL
 * when TLS failed (the connection is aborted). *peer_closed on close_notify. */
static buf_t *sink_conn_plaintext(struct sink_conn *c, int *peer_closed)
{
    *peer_closed = 0;
    if (!c->tls) {
        return &c->raw;
    }
    enum tls_result r = tls_read(c->tls, &c->plain);
    if (r == TLS_ERROR) {
        sink_conn_log(c, "tls_read", "%s", tls_conn_error(c->tls));
        sink_conn_abort(c);
        return NULL;
    }
    *peer_closed = r == TLS_CLOSED;
    return &c->plain;
}

static void sink_conn_greet(struct sink_conn *c)
{
    const struct sink_config *cfg = &c->w->sink->cfg;
    const char *refusal = c->refused                              ? sink_reply_busy
                          : cfg->fault == SINK_FAULT_GREETING_421 ? sink_reply_unavailable
                                                                  : NULL;
    c->state = cfg->fault == SINK_FAULT_GARBAGE ? SINK_CONN_GARBAGE : SINK_CONN_SMTP;
    if (refusal) {
        smtp_server_refuse(c->smtp, sink_conn_out(c), refusal);
        sink_conn_output(c, 1);
        sink_conn_close(c, 1);
        return;
    }
    smtp_server_greeting(c->smtp, sink_conn_out(c));
    sink_conn_output(c, 1);
}

/* STARTTLS accepted: whatever the client pipelined after it is an attack
 * or a bug (RFC 3207 5), and is discarded, never read as a command. */
static void sink_conn_starttls(struct sink_conn *c)
{
    if (buf_len(&c->raw) > 0) {
        sink_conn_log(c, "starttls_violation", "%zu bytes after STARTTLS discarded",
                      buf_len(&c->raw));
        c->w->stats.n[SINK_STARTTLS_VIOLATIONS]++;
        buf_reset(&c->raw);
    }
    c->tls = tls_conn_new(c->w->sink->tls, &c->raw, &c->wire, NULL, c);
    if (!c->tls) {
        sink_conn_log(c, "tls_new", "cannot create TLS state");
        sink_conn_abort(c);
        return;
    }
    c->state = SINK_CONN_HANDSHAKE;
}

static void sink_conn_smtp(struct sink_conn *c)
{
    int peer_closed;
    buf_t *in = sink_conn_plaintext(c, &peer_closed);
    if (!in) {
        return;
    }
    enum smtp_server_action a = smtp_server_input(c->smtp, in, sink_conn_out(c));
    sink_conn_output(c, 1);
    if (c->state == SINK_CONN_DEAD) {
        return;
    }
    switch (a) {
    case SMTP_SERVER_WAIT:
        if (peer_closed) {
            sink_conn_close(c, 1);
        }
        break;
    case SMTP_SERVER_STARTTLS:
        sink_conn_starttls(c);
        break;
    case SMTP_SERVER_CLOSE:
        if (c->dropping) {
            sink_conn_abort(c); /* a cut, not a goodbye */
        } else {
            sink_conn_close(c, 1);
        }
        break;
    }
}

static void sink_conn_garbage(struct sink_conn *c)
{
    int peer_closed;
    buf_t *in = sink_conn_plaintext(c, &peer_closed);
    if (!in) {
        return;
    }
    const char *p = buf_data(in), *end = p + buf_len(in), *q = p, *next = p;
    while ((q = memchr(q, '\n', (size_t)(end - q))) != NULL) {
        buf_append_str(sink_conn_out(c), sink_reply_garbage);
        next = ++q;
    }
    buf_consume(in, (size_t)(next - p));
    if (buf_len(in) > SINK_GARBAGE_LINE_MAX) {
        buf_reset(in);
    }
    sink_conn_output(c, 1);
    if (peer_closed) {
        sink_conn_close(c, 1);
    }
}

static void sink_conn_handshake(struct sink_conn *c)
{
    struct sink_worker *w = c->w;
    enum tls_result r = tls_handshake(c->tls);
    if (r == TLS_WANT) {
        sink_conn_output(c, 0);
        return;
    }
    if (r != TLS_OK) {
        sink_conn_log(c, "tls_handshake", "%s", tls_conn_error(c->tls));
        w->stats.n[SINK_TLS_FAILURES]++;
        sink_conn_output(c, 0); /* the alert, if any */
        sink_conn_close(c, 0);
        return;
    }
    struct tls_info info;
    tls_conn_info(c->tls, &info);
    w->stats.n[SINK_TLS_HANDSHAKES]++;
    w->stats.n[SINK_TLS_RESUMED] += info.resumed ? 1 : 0;
    c->state = SINK_CONN_SMTP;
    sink_conn_output(c, 0); /* session tickets */
    if (w->sink->cfg.implicit_tls) {
        sink_conn_greet(c);
    }
}

static void sink_conn_input(struct sink_conn *c)
{
    switch (c->state) {
    case SINK_CONN_HANDSHAKE:
        sink_conn_handshake(c);
        if (c->state == SINK_CONN_HANDSHAKE || buf_len(&c->raw) == 0) {
            break;
        }
        /* The client's first records may have come with its Finished. */
        sink_conn_input(c);
        break;
    case SINK_CONN_SMTP:
        sink_conn_smtp(c);
        break;
    case SINK_CONN_GARBAGE:
        sink_conn_garbage(c);
        break;
    case SINK_CONN_CLOSING:
        buf_reset(&c->raw);
        break;
    case SINK_CONN_DEAD:
        break;
    }
}

static void sink_conn_on_recv(struct loop_op *op, int res, unsigned flags)
{
    struct sink_conn *c = op->owner;
    (void)flags;
    c->recv_busy = 0;
    if (c->state == SINK_CONN_DEAD) {
        sink_conn_check(c);
        return;
    }
    if (res <= 0) {
        if (res < 0 && res != -ECONNRESET && res != -ECANCELED) {
            sink_conn_log(c, "recv", "%s", strerror(-res));
        }
        if (res == 0) {
            sink_conn_close(c, 0); /* peer half-closed: still send what is queued */
        } else {
            sink_conn_abort(c);
        }
        sink_conn_check(c);
        return;
    }
    loop_mark_received(buf_data(&c->raw) + buf_len(&c->raw), (size_t)res);
    buf_commit(&c->raw, (size_t)res);
    c->w->stats.n[SINK_BYTES_RECEIVED] += (uint64_t)res;
    c->last_active_ms = loop_now_ms(c->w->loop);
    sink_conn_input(c);
    sink_conn_resume_recv(c);
    sink_conn_check(c);
}

static void sink_conn_on_idle(struct loop_timer *t)
{
    struct sink_conn *c = t->owner;
    struct loop *loop = c->w->loop;
    uint64_t timeout = c->w->sink->cfg.idle_timeout_ms;
    uint64_t idle = loop_now_ms(loop) - c->last_active_ms;
    if (idle < timeout) {
        loop_timer_set(loop, t, timeout - idle);
        return;
    }
    sink_conn_log(c, "idle_timeout", "no input for %" PRIu64 " ms", idle);
    if (c->state == SINK_CONN_SMTP) {
        smtp_server_refuse(c->smtp, sink_conn_out(c), sink_reply_timeout);
        sink_conn_output(c, 0);
        sink_conn_close(c, 1);
        c->last_active_ms = loop_now_ms(loop);
        if (c->state == SINK_CONN_CLOSING) {
            loop_timer_set(loop, t, timeout); /* next expiry aborts */
        }
    } else {
        sink_conn_abort(c);
    }
    sink_conn_check(c);
}

/* ---- SMTP hooks (user is the connection) ---- */

static void sink_on_mail(void *user, const char *from, struct smtp_server_decision *d)
{
    struct sink_conn *c = user;
    (void)from;
    const struct sink_config *cfg = &c->w->sink->cfg;
    c->dropping = 0;
    if (cfg->tls_required && !smtp_server_tls_active(c->smtp)) {
        d->reply = sink_reply_tls_required;
    } else if (cfg->fault == SINK_FAULT_STALL) {
        d->verdict = SMTP_SERVER_STALL;
    }
}

/* A 421 ends the session (RFC 5321 3.8): the machine appends the hook's
 * reply itself, so it is closed through smtp_server_refuse into a scratch
 * buffer; it then ignores what the client pipelined after this RCPT and
 * asks the connection to close once the 421 is out. */
static void sink_conn_close_after_reply(struct sink_conn *c, const char *reply)
{
    buf_t scratch = BUF_INIT;
    smtp_server_refuse(c->smtp, &scratch, reply);
    buf_free(&scratch);
    sink_conn_session_end(c);
}

/* A profile's reply names the client as the provider's does: "{ip}"
 * becomes its address, in the worker's buffer (valid until the hook's
 * caller returns). A reply that would outgrow an SMTP line stays as it is. */
static const char *sink_conn_reply(struct sink_conn *c, const char *reply)
{
    const char *at = strstr(reply, SINK_REPLY_IP);
    if (!at) {
        return reply;
    }
    const char *ip = c->peer_stats ? c->peer_stats->address : "unknown";
    int n = snprintf(c->w->rcpt_reply, sizeof c->w->rcpt_reply, "%.*s%s%s", (int)(at - reply),
                     reply, ip, at + strlen(SINK_REPLY_IP));
    return n > 0 && (size_t)n < sizeof c->w->rcpt_reply ? c->w->rcpt_reply : reply;
}

static void sink_on_rcpt(void *user, const char *rcpt, struct smtp_server_decision *d)
{
    struct sink_conn *c = user;
    struct sink_worker *w = c->w;
    const struct sink_config *cfg = &w->sink->cfg;
    int closes = 0;
    if (sink_local_part_is(rcpt, "tempfail")) {
        d->reply = cfg->temp_reply;
        closes = cfg->temp_closes;
    } else if (sink_local_part_is(rcpt, "permfail")) {
        d->reply = cfg->perm_reply;
    } else if (cfg->source_rate && c->peer_stats &&
               !sink_peers_take(&w->sink->peers, c->peer_stats, cfg->source_rate,
                                loop_now_ms(w->loop))) {
        d->reply = cfg->rate_reply; /* the provider's answer to a sender over its rate */
        closes = cfg->rate_closes;
    } else if (cfg->defer_pct || cfg->reject_pct) {
        unsigned r = sink_percent(w);
        if (r < cfg->defer_pct) {
            d->reply = cfg->defer_reply;
            closes = cfg->defer_closes;
        } else if (r < cfg->defer_pct + cfg->reject_pct) {
            d->reply = cfg->reject_reply;
        }
    }
    if (d->reply) {
        d->reply = sink_conn_reply(c, d->reply);
    }
    if (closes) {
        sink_conn_close_after_reply(c, d->reply);
    }
    if (!d->reply) {
        w->stats.n[SINK_ACCEPTED_RCPTS]++;
    } else if (d->reply[0] == '4') {
        w->stats.n[SINK_DEFERRED_RCPTS]++;
    } else {
        w->stats.n[SINK_REJECTED_RCPTS]++;
    }
}

static void sink_on_data(void *user, struct smtp_server_decision *d)
{
    struct sink_conn *c = user;
    unsigned drop = c->w->sink->cfg.drop_pct;
    if (drop && sink_percent(c->w) < drop) {
        d->verdict = SMTP_SERVER_DROP;
        c->dropping = 1;
        c->w->stats.n[SINK_DROPPED]++;
    }
}

static void sink_on_message(void *user, const struct smtp_server_message *m,
                            struct smtp_server_decision *d)
{
    struct sink_conn *c = user;
    struct sink_worker *w = c->w;
    w->stats.n[SINK_MESSAGES]++;
    w->stats.n[SINK_BYTES] += m->size;
    /* The machine calls this hook only for a transaction with an accepted
     * recipient, so every call is an accepted message. */
    c->accepted++;
    if (c->accepted > w->stats.max_msgs_per_session) {
        w->stats.max_msgs_per_session = c->accepted;
    }
    w->stats.last_accept_ms = sink_realtime_ms();
    if (!w->stats.first_accept_ms) {
        w->stats.first_accept_ms = w->stats.last_accept_ms;
    }
    if (c->peer_stats) {
        atomic_fetch_add_explicit(&c->peer_stats->accepted, 1, memory_order_relaxed);
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        sink_stats_count(w->stats.deliveries, m->rcpts[i], 1);
    }
    if (m->nrcpts > w->stats.max_rcpts_per_msg) {
        w->stats.max_rcpts_per_msg = m->nrcpts;
    }
    snprintf(w->reply, sizeof w->reply, "250 2.0.0 Ok: queued as %02X%014" PRIX64, w->index,
             ++w->queued);
    d->reply = w->reply;
}

static int sink_on_auth(void *user, const char *mechanism, const char *authzid,
                        const char *username, const char *password)
{
    struct sink_conn *c = user;
    const struct sink_config *cfg = &c->w->sink->cfg;
    int ok = (!*authzid || strcmp(authzid, username) == 0) &&
             strcmp(username, cfg->auth_user) == 0 && strcmp(password, cfg->auth_pass) == 0;
    if (!ok) {
        sink_conn_log(c, "auth", "%s authentication failed for user %s", mechanism, username);
    }
    return ok;
}

static void sink_on_quit(void *user)
{
    sink_conn_session_end(user);
}

static void sink_on_starttls(void *user, buf_t *out)
{
    struct sink_conn *c = user;
    if (c->w->sink->cfg.fault == SINK_FAULT_STARTTLS_INJECT) {
        buf_append_str(out, "250 injected\r\n");
    }
}

const struct smtp_server_hooks sink_conn_hooks = {.mail = sink_on_mail,
                                                  .rcpt = sink_on_rcpt,
                                                  .data = sink_on_data,
                                                  .message = sink_on_message,
                                                  .auth = sink_on_auth,
                                                  .starttls = sink_on_starttls,
                                                  .quit = sink_on_quit};

/* ---- accepting ---- */

/* Count the connection globally and for its source address (NULL: unknown). */
static void sink_conn_count(struct sink_conn *c, const char *source)
{
    struct sink *sk = c->w->sink;
    long cur = atomic_fetch_add(&sk->current, 1) + 1;
    if (sk->cfg.max_conns && cur > (long)sk->cfg.max_conns) {
        atomic_fetch_sub(&sk->current, 1);
        c->refused = 1;
        c->w->stats.n[SINK_REFUSED]++;
    }
    if (source) {
        c->peer_stats = sink_peers_open(&sk->peers, source, c->refused);
        c->peer_open = c->peer_stats && !c->refused;
    }
    if (c->refused) {
        return;
    }
    c->w->stats.n[SINK_CONNECTIONS]++;
    long peak = atomic_load(&sk->peak);
    while (cur > peak && !atomic_compare_exchange_weak(&sk->peak, &peak, cur)) {
    }
}

/* A connection with its SMTP (and, for implicit TLS, TLS) state, linked
 * into the worker; NULL when memory runs out. */
static struct sink_conn *sink_conn_alloc(struct sink_worker *w, int fd)
{
    struct sink *sk = w->sink;
    struct sink_conn *c = calloc(1, sizeof *c);
    if (!c) {
        return NULL;
    }
    c->w = w;
    c->fd = fd;
    c->smtp = smtp_server_new(&sk->smtp, &sk->hooks, c);
    c->tls = sk->cfg.implicit_tls ? tls_conn_new(sk->tls, &c->raw, &c->wire, NULL, c) : NULL;
    if (!c->smtp || (sk->cfg.implicit_tls && !c->tls)) {
        smtp_server_free(c->smtp);
        tls_conn_free(c->tls);
        free(c);
        return NULL;
    }
    c->id = ++w->next_conn_id;
    c->recv_op = (struct loop_op){sink_conn_on_recv, c};
    c->send_op = (struct loop_op){sink_conn_on_send, c};
    loop_timer_init(&c->idle_timer, sink_conn_on_idle, c);
    loop_timer_init(&c->held_timer, sink_conn_on_held, c);
    list_push_front(&w->conns, &c->link);
    return c;
}

static void sink_conn_new(struct sink_worker *w, int fd)
{
    const struct sink_config *cfg = &w->sink->cfg;
    struct sink_conn *c = sink_conn_alloc(w, fd);
    if (!c) {
        fprintf(stderr, "sink: out of memory for a connection\n");
        close(fd);
        return;
    }
    /* A client reset before this point has no address: counted, not per peer. */
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    char source[INET6_ADDRSTRLEN];
    int known = getpeername(fd, (struct sockaddr *)&peer, &len) == 0;
    if (known) {
        netaddr_format_host((struct sockaddr *)&peer, source);
        if (cfg->verbose) {
            netaddr_format((struct sockaddr *)&peer, c->peer, sizeof c->peer);
        }
    }
    sink_conn_count(c, known ? source : NULL);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->last_active_ms = loop_now_ms(w->loop);
    loop_timer_set(w->loop, &c->idle_timer, cfg->idle_timeout_ms);
    if (c->tls) {
        c->state = SINK_CONN_HANDSHAKE;
    } else {
        sink_conn_greet(c);
    }
    sink_conn_resume_recv(c);
    sink_conn_check(c);
}

static void sink_listener_arm(struct sink_listener *l)
{
    loop_accept(l->w->loop, &l->op, l->fd);
}

static void sink_listener_on_retry(struct loop_timer *t)
{
    sink_listener_arm(t->owner);
}

static void sink_listener_on_accept(struct loop_op *op, int res, unsigned flags)
{
    struct sink_listener *l = op->owner;
    if (res >= 0) {
        sink_conn_new(l->w, res);
    } else if (res != -ECANCELED && l->w->sink->cfg.verbose) {
        fprintf(stderr, "sink: level=error thread=%u event=accept reason=\"%s\"\n", l->w->index,
                strerror(-res));
    }
    if (flags & IORING_CQE_F_MORE) {
        return;
    }
    /* The multishot accept ended: re-arm, after a pause if it failed. */
    if (res >= 0) {
        sink_listener_arm(l);
    } else {
        loop_timer_set(l->w->loop, &l->retry, SINK_ACCEPT_RETRY_MS);
    }
}

void sink_listener_start(struct sink_listener *l)
{
    l->op = (struct loop_op){sink_listener_on_accept, l};
    loop_timer_init(&l->retry, sink_listener_on_retry, l);
    sink_listener_arm(l);
}
