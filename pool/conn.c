/*
 * conn - the pool's connections. See deliver_int.h.
 *
 * The pump opens connections for the active destinations as the lanes
 * allow. A connection's SMTP session asks the pool for its next message
 * (pool_next_message): it takes a transaction, or idles until a message
 * token comes (waiting), until the owner allows the body (gated), or until
 * its destination has mail again (lingering, POOL_LINGER_MS); or it says
 * QUIT. Outcomes go to pool_settle; a session that fails before any
 * transaction marks its address down (MX fallback).
 *
 * What a connection is doing is one enum pool_conn_state, changed only by
 * pool_conn_set_state (traced as "pool_conn FROM -> TO (why)"):
 *
 *   CONNECTING -> READY -> TRANSACTING -> READY -> ...
 *   READY -> WAITING | GATED | LINGERING -> READY (woken: token, gate, mail)
 *   LINGERING -> LINGER_OVER (timeout, or it yields its slot), which goes on
 *                as READY does except that an empty queue now means CLOSING
 *   any -> CLOSING (QUIT said, or the session failed); any -> CLOSED (freed)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/netaddr.h"
#include "engine/tls_session_cache.h"
#include "engine/trace.h"
#include "pool/deliver_int.h"
#include "pool/sts_dest.h"

static const char *const pool_conn_state_names[] = {
    [POOL_CONN_CONNECTING] = "CONNECTING",
    [POOL_CONN_READY] = "READY",
    [POOL_CONN_TRANSACTING] = "TRANSACTING",
    [POOL_CONN_WAITING] = "WAITING",
    [POOL_CONN_GATED] = "GATED",
    [POOL_CONN_LINGERING] = "LINGERING",
    [POOL_CONN_LINGER_OVER] = "LINGER_OVER",
    [POOL_CONN_CLOSING] = "CLOSING",
    [POOL_CONN_CLOSED] = "CLOSED",
};

/* pool_conn_state_name - "CONNECTING", "READY" ... */
const char *pool_conn_state_name(enum pool_conn_state st)
{
    return pool_conn_state_names[st];
}

/* pool_conn_set_state - every change of c's life-cycle state goes through here */
void pool_conn_set_state(struct pool_conn *c, enum pool_conn_state st, const char *why)
{
    if (c->state == st) {
        return;
    }
    if (trace_enabled) {
        trace_state("pool_conn", c->trace_id, pool_conn_state_names[c->state],
                    pool_conn_state_names[st], why);
    }
    c->state = st;
}

/* pool_conn_unidle - c leaves the list its idle state keeps it on (its
 * state is the caller's to set next) */
static void pool_conn_unidle(struct pool_conn *c)
{
    struct pool_conn **pp;
    switch (c->state) {
    case POOL_CONN_WAITING:
        for (pp = &c->lane->waiting; *pp && *pp != c; pp = &(*pp)->wnext) {
        }
        if (*pp) {
            *pp = c->wnext;
        }
        c->wnext = NULL;
        break;
    case POOL_CONN_GATED:
        for (pp = &c->pool->gated; *pp && *pp != c; pp = &(*pp)->gnext) {
        }
        if (*pp) {
            *pp = c->gnext;
            c->pool->ngated--;
        }
        c->gnext = NULL;
        break;
    case POOL_CONN_LINGERING:
        list_unlink(&c->dest->lingering, &c->linger_node);
        list_unlink(&c->lane->idle, &c->idle_node);
        loop_timer_cancel(c->pool->loop, &c->linger);
        break;
    default:
        break;
    }
}

/* pool_conn_wake - idle c asks the pool again: READY, then resumed */
static void pool_conn_wake(struct pool_conn *c, const char *why)
{
    pool_conn_unidle(c);
    pool_conn_set_state(c, POOL_CONN_READY, why);
    if (c->conn) {
        client_conn_resume(c->conn);
    }
}

/* pool_conns_wake - wake every session of a detached idle list (linked by
 * wnext or gnext): one that has to wait again joins the list anew, not this
 * round. */
static void pool_conns_wake(struct pool_conn *list, int gated, const char *why)
{
    while (list) {
        struct pool_conn *c = list;
        list = gated ? c->gnext : c->wnext;
        c->gnext = c->wnext = NULL;
        pool_conn_set_state(c, POOL_CONN_READY, why);
        if (c->conn) {
            client_conn_resume(c->conn);
        }
    }
}

void pool_lane_wake(struct loop_timer *t)
{
    struct pool_lane *l = t->owner;
    struct pool_conn *list = l->waiting;
    l->waiting = NULL;
    pool_conns_wake(list, 0, "message token");
}

void pool_gates_open(struct pool *p)
{
    struct pool_conn *list = p->gated;
    p->gated = NULL;
    p->ngated = 0;
    pool_conns_wake(list, 1, "gate open");
}

/* Once per connection: as soon as it is known (a handshake, full or
 * resumed, or a session that got ready without TLS), else as it closes, in
 * none. So every connection opened, one that failed to connect, to finish
 * its handshake or its EHLO included, is in exactly one of the three. */
static void pool_count_tls(struct pool_conn *c, int closing)
{
    if (c->tls_counted || !c->conn) {
        return;
    }
    const struct tls_info *t = client_conn_tls(c->conn);
    struct pool_isp_stats *st = &c->lane->isp->st;
    if (t && t->resumed) {
        st->tls_resumed++;
    } else if (t) {
        st->tls_full++;
    } else if (c->state != POOL_CONN_CONNECTING || closing) {
        st->tls_none++;
    } else {
        return;
    }
    c->tls_counted = 1;
}

/* c's destination has nothing for it: wait POOL_LINGER_MS for more. */
static void pool_linger_start(struct pool_conn *c)
{
    pool_conn_set_state(c, POOL_CONN_LINGERING, "queue empty");
    list_push_front(&c->dest->lingering, &c->linger_node);
    list_push_front(&c->lane->idle, &c->idle_node);
    loop_timer_set(c->pool->loop, &c->linger, POOL_LINGER_MS);
}

static void pool_conn_set_yielding(struct pool_conn *c, int on)
{
    if (c->yielding != on) {
        c->yielding = on;
        if (on) {
            c->lane->isp->yielding++;
        } else {
            c->lane->isp->yielding--;
        }
    }
}

/* pool_linger_end - lingering c stops waiting: an empty queue now means QUIT */
static void pool_linger_end(struct pool_conn *c, const char *why)
{
    pool_conn_unidle(c);
    pool_conn_set_state(c, POOL_CONN_LINGER_OVER, why);
    if (c->conn) {
        client_conn_resume(c->conn);
    }
}

/* After a pump: free as many slots of isp's full lanes as its starved
 * destinations need, from sessions idling for destinations with nothing
 * queued: each QUITs now, for another destination's sake. */
static void pool_isp_yield(struct pool_isp *isp)
{
    for (size_t i = 0; i < isp->nlanes && isp->starved > isp->yielding; i++) {
        struct pool_lane *l = &isp->lanes[i];
        while (l->idle.first && pool_lane_starved(l)) {
            struct pool_conn *c = list_entry(l->idle.first, struct pool_conn, idle_node);
            pool_conn_set_yielding(c, 1);
            pool_linger_end(c, "yield");
        }
    }
}

static void pool_linger_over(struct loop_timer *t)
{
    pool_linger_end(t->owner, "linger timeout"); /* nothing came: QUIT */
}

/* A message arrived for d: wake one lingering session. */
void pool_wake_lingering(struct pool_dest *d)
{
    if (d->lingering.first) {
        pool_conn_wake(list_entry(d->lingering.first, struct pool_conn, linger_node),
                       "message queued");
    }
}

/* pool_conn_stop - the pool stops: an idle session hears "no more messages" */
void pool_conn_stop(struct pool_conn *c)
{
    if (c->state == POOL_CONN_LINGERING || c->state == POOL_CONN_GATED) {
        pool_conn_unidle(c);
        pool_conn_set_state(c, POOL_CONN_READY, "pool stopping");
    }
    if (c->conn && client_conn_idle(c->conn)) {
        client_conn_resume(c->conn);
    }
}

static int pool_same_body(const struct pool_msg *a, const struct pool_msg *b)
{
    return a->data == b->data && a->len == b->len &&
           (a->mail_from == b->mail_from || strcmp(a->mail_from, b->mail_from) == 0);
}

/* The transaction for c: m (its message token taken) and the messages right
 * behind it on the queue that share its body, up to the ISP's
 * max_rcpts_per_msg, each taking a message token of the lane if one is there
 * (msg_rate counts recipients: each is a message in a mailbox). */
static void pool_batch_take(struct pool_conn *c, struct pool_msg *m, uint64_t now)
{
    struct pool *p = c->pool;
    struct pool_dest *d = c->dest;
    struct pool_isp *isp = c->lane->isp;
    size_t cap = isp->max_rcpts_per_msg ? isp->max_rcpts_per_msg : POOL_RCPTS_DEFAULT;
    size_t n = 1;
    for (struct pool_msg *x = d->head; x && n < cap && pool_same_body(m, x); x = x->next) {
        if (p->opt.may_send && !p->opt.may_send(p->opt.user, x, 0)) {
            break;
        }
        if (!token_bucket_take(&c->lane->msgs, 1, now)) {
            break;
        }
        n++;
    }
    if (n == 1) {
        c->batch = &c->one;
        c->rcpts = &c->rcpt1;
        c->sent = &c->sent1;
    } else {
        char *block = pool_xcalloc(1, n * (sizeof *c->rcpts + sizeof *c->batch + 1));
        c->rcpts = (struct smtp_rcpt *)(void *)block;
        c->batch = (struct pool_msg **)(void *)(block + n * sizeof *c->rcpts);
        c->sent = (unsigned char *)(block + n * (sizeof *c->rcpts + sizeof *c->batch));
    }
    c->nbatch = n;
    c->batch[0] = m;
    for (size_t i = 1; i < n; i++) {
        c->batch[i] = pool_dequeue(p, d);
    }
    for (size_t i = 0; i < n; i++) {
        memset(&c->rcpts[i], 0, sizeof c->rcpts[i]);
        c->rcpts[i].address = c->batch[i]->rcpt_ascii ? c->batch[i]->rcpt_ascii : c->batch[i]->rcpt;
        c->sent[i] = 0;
    }
}

/* pool_gate_count - one start (ok: allowed) into the window of starts
 * that began at *at; *rate: the starts of the last 100 ms */
static void pool_gate_count(uint64_t now, uint64_t *at, unsigned *starts, unsigned *rate, int ok)
{
    if (now >= *at + 100) {
        uint64_t span = now - *at;
        *rate = span >= 200 ? (unsigned)(*starts * 100 / span) : *starts;
        *starts = 0;
        *at = now;
    }
    *starts += ok != 0;
}

/* pool_gate_ahead - how many messages from d's head pool_gate_ask
 * announces, at most POOL_GATE_AHEAD: two per connection of d; where d's
 * transactions are quick, as many as d started in the last
 * may_send_ahead_ms (its starts of the last 100 ms); and the share of
 * d's connections in the pool's starts of may_send_ahead_ms (all its
 * starts of the last 100 ms, by open connections). A start counts when
 * it is allowed (ok).
 * The share: connections go from one destination to another as queues
 * fill and drain (bench/nodes.sh: 20 connections over five domains, one
 * to nineteen on a domain within a second), and d's own rate of the last
 * 100 ms is that of the connections it had then. Against a quick server,
 * a destination that gained connections announced two messages per
 * connection, four milliseconds of them: its heads waited for their arms
 * (one gate ask in eight said no) and the campaign's arm statements were
 * 130 to 180 a second, nearly all for a waiting head (an arm statement
 * costs a woken PostgreSQL backend 100 to 250 us of CPU whatever it
 * holds: 2.4 us per recipient; bench/README.md, figure 10). What the pool announces ahead in all
 * stays about may_send_ahead_ms of its starts (the sum of the shares), the bound on what a node
 * taken over may have armed and not sent. */
static size_t pool_gate_ahead(struct pool *p, struct pool_dest *d, int ok)
{
    uint64_t now = pool_now(p);
    pool_gate_count(now, &d->gate_at, &d->gate_starts, &d->gate_rate, ok);
    pool_gate_count(now, &p->gate_at, &p->gate_starts, &p->gate_rate, ok);
    size_t ahead = p->opt.may_send_ahead_ms;
    size_t want = 2 * (size_t)d->nconns;
    size_t timed = (size_t)d->gate_rate * ahead / 100 + 1;
    size_t share =
        p->open ? (size_t)p->gate_rate * ahead * d->nconns / (100 * (size_t)p->open) + 1 : 0;
    if (timed > want) {
        want = timed;
    }
    if (share > want) {
        want = share;
    }
    return want < POOL_GATE_AHEAD ? want : POOL_GATE_AHEAD;
}

/* May d's head start a transaction? The owner is also told, once each, of
 * the messages right behind it (pool_gate_ahead): what it needs before
 * saying yes (a campaign's arm commit) is then asked for them together,
 * and the next connections find theirs ready instead of waiting one
 * commit each. Announced messages only leave the queue at its head, so
 * the walk goes on from the last one announced (d->ask_last). See
 * deliver_int.h. */
int pool_gate_ask(struct pool *p, struct pool_dest *d)
{
    int ok = p->opt.may_send(p->opt.user, d->head, 0);
    size_t want = pool_gate_ahead(p, d, ok);
    if (!d->asked) {
        d->asked = 1;
        d->ask_last = d->head;
    }
    for (struct pool_msg *m = d->ask_last->next; m && d->asked < want; m = m->next) {
        p->opt.may_send(p->opt.user, m, 1);
        d->ask_last = m;
        d->asked++;
    }
    return ok;
}

static struct smtp_message *pool_next_message(void *owner)
{
    struct pool_conn *c = owner;
    struct pool *p = c->pool;
    struct pool_dest *d = c->dest;
    struct pool_lane *l = c->lane;
    uint64_t now = pool_now(p);
    if (c->state == POOL_CONN_CONNECTING) {
        pool_conn_set_state(c, POOL_CONN_READY, "session ready");
        pool_count_tls(c, 0);
        if (c->cfg.smtp.tls_policy == SMTP_TLS_OPPORTUNISTIC && !client_conn_tls(c->conn) &&
            !d->warned_plaintext) {
            d->warned_plaintext = 1; /* the opportunistic row of the TLS table: say so */
            fprintf(stderr,
                    "ringmail: WARNING: %s: %s (%s) has no working STARTTLS; mail for it goes IN "
                    "PLAINTEXT (policy opportunistic)\n",
                    d->is_relay ? "relay" : d->domain, c->host, c->addr);
        }
    }
    if (!d->proven) {
        d->proven = 1; /* the first ready session: now the pool may open the rest */
        pool_kick(p);
    }
    if (!p->stopped && !d->head && !d->fatal_reason[0] && c->state != POOL_CONN_LINGER_OVER) {
        if (pool_lane_starved(l)) {
            pool_conn_set_yielding(c, 1); /* another destination needs the slot: QUIT now */
            pool_conn_set_state(c, POOL_CONN_CLOSING, "yield");
            return NULL;
        }
        pool_linger_start(c);
        return SMTP_MESSAGE_WAIT;
    }
    if (p->stopped || !d->head || d->fatal_reason[0]) {
        pool_conn_set_state(c, POOL_CONN_CLOSING,
                            p->stopped ? "pool stopping"
                            : d->head  ? "destination failed"
                                       : "queue empty");
        return NULL;
    }
    if (l->share_none || (l->max_connections && l->open > l->max_connections)) {
        /* The cluster's share shrank (another node came): this node's
         * connections beyond it close between messages. */
        pool_conn_set_state(c, POOL_CONN_CLOSING, "over the cluster share");
        return NULL;
    }
    if (pool_lane_paused(l, now)) {
        /* backoff or suspension: close, reopen when the pause ends (a
         * hold: when pool_isp_release lifts it) */
        pool_conn_set_state(c, POOL_CONN_CLOSING, l->isp->held ? "isp held" : "lane paused");
        return NULL;
    }
    if (p->opt.may_send && !pool_gate_ask(p, d)) {
        /* The owner must allow the body first (a campaign arms it in the
         * database): idle, no timer, until pool_gate_open. */
        pool_conn_set_state(c, POOL_CONN_GATED, "may_send");
        c->gnext = p->gated;
        p->gated = c;
        p->ngated++;
        return SMTP_MESSAGE_WAIT;
    }
    double rate = pool_lane_rate(l, now);
    if (rate != l->msgs.rate) {
        token_bucket_set_rate(&l->msgs, rate, now);
    }
    if (!token_bucket_take(&l->msgs, 1, now)) {
        pool_conn_set_state(c, POOL_CONN_WAITING, "message token");
        c->wnext = l->waiting;
        l->waiting = c;
        uint64_t wait = token_bucket_wait_ms(&l->msgs, 1, now);
        pool_timer_at(p, &l->timer, now + (wait ? wait : 1));
        return SMTP_MESSAGE_WAIT;
    }
    struct pool_msg *m = pool_dequeue(p, d);
    pool_conn_set_yielding(c, 0); /* mail came for it after all: it stays */
    pool_batch_take(c, m, now);
    pool_conn_set_state(c, POOL_CONN_TRANSACTING, NULL);
    c->txn_started_ms = pool_clock_ms(p);
    c->sm.mail_from = m->mail_from;
    c->sm.rcpts = c->rcpts;
    c->sm.nrcpts = c->nbatch;
    c->sm.data = m->data;
    c->sm.len = m->len;
    c->sm.data_in_flight = 0;
    c->sm.user = m;
    return &c->sm;
}

static void pool_batch_release(struct pool_conn *c)
{
    if (c->batch != &c->one) {
        free(c->rcpts); /* one block: rcpts, then batch, then sent */
    }
    c->batch = NULL;
    c->rcpts = NULL;
    c->sent = NULL;
    c->nbatch = 0;
}

static void pool_message_done(void *owner, struct smtp_message *sm)
{
    struct pool_conn *c = owner;
    struct pool *p = c->pool;
    struct pool_dest *d = c->dest;
    size_t n = c->nbatch;
    if (n == 0) {
        return;
    }
    pool_conn_set_state(c, POOL_CONN_READY, "transaction done");
    int requeued = 0;
    for (size_t i = 0; i < n; i++) {
        if (sm->rcpts[i].code > 0) {
            if (d->targets && c->target < d->ntargets) {
                d->targets[c->target].down_until = 0;
            }
        }
    }
    pool_count_tls(c, 0);
    /* Back to the front in reverse, so the queue keeps its order. No
     * attempt is spent: the server closed (421) or fell out of step before
     * the message was tried. */
    const struct smtp_rcpt *why = NULL;
    for (size_t i = n; i-- > 0;) {
        if (sm->rcpts[i].outcome == SMTP_OUTCOME_RETRY) {
            pool_enqueue(p, d, c->batch[i], 1);
            requeued = 1;
            why = &sm->rcpts[i];
        }
    }
    if (why && why->code > 0 && c->lane->isp->cfg) {
        /* A 421 that sends messages back still slows the lane if a reply
         * rule says so (421 4.7.28 => backoff ...), or they would come
         * straight back to a server that asked us to go away. */
        const struct config_rule *rule =
            config_rule_match(c->lane->isp->cfg, why->code, why->enhanced, why->text);
        if (rule && rule->action != CONFIG_ACTION_BOUNCE) {
            pool_backoff(p, c->lane, rule, why->code, why->enhanced, why->text);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct smtp_rcpt *r = &sm->rcpts[i];
        if (r->outcome != SMTP_OUTCOME_RETRY) {
            pool_settle(p, c->batch[i], c,
                        &(struct pool_outcome){
                            .outcome = r->outcome,
                            .reason = r->reason,
                            .code = r->code,
                            .enhanced = r->enhanced,
                            .text = r->text,
                            .data_in_flight = sm->data_in_flight && c->sent[i],
                        });
        }
    }
    pool_batch_release(c);
    if (requeued) {
        pool_kick(p);
    }
}

static int pool_reason_is_auth(const char *reason)
{
    return strncmp(reason, "auth_", 5) == 0;
}

static void pool_session_failed(void *owner, enum smtp_outcome o, const char *reason,
                                const struct smtp_reply *reply, const char *text)
{
    struct pool_conn *c = owner;
    struct pool *p = c->pool;
    struct pool_dest *d = c->dest;
    uint64_t now = pool_now(p);
    struct smtp_rcpt why; /* the failure in the form every outcome has */
    memset(&why, 0, sizeof why);
    smtp_rcpt_set(&why, o, reason, reply, text);
    pool_count_tls(c, 0);
    pool_conn_unidle(c); /* never idle here (an idle session fails by closing), but if so */
    pool_conn_set_state(c, POOL_CONN_CLOSING, reason); /* the session ends after this */
    pool_sts_session_failed(c, reason, why.text);
    if (why.code > 0 && c->lane->isp->cfg) {
        const struct config_rule *rule =
            config_rule_match(c->lane->isp->cfg, why.code, why.enhanced, why.text);
        if (rule && rule->action != CONFIG_ACTION_BOUNCE) {
            pool_backoff(p, c->lane, rule, why.code, why.enhanced, why.text);
        }
    }
    if (pool_reason_is_auth(reason)) {
        /* Our credentials or the server's AUTH support: no retry will fix it. */
        snprintf(d->fatal_reason, sizeof d->fatal_reason, "%s", reason);
        if (why.code) {
            snprintf(d->fatal_text, sizeof d->fatal_text, "%d %s %.400s", why.code, why.enhanced,
                     why.text);
        } else {
            snprintf(d->fatal_text, sizeof d->fatal_text, "%s", why.text);
        }
        fprintf(stderr, "ringmail: %s: %s: %s (every message for it fails)\n",
                d->is_relay ? "relay" : d->domain, reason, d->fatal_text);
        pool_fail_queue(
            p, d,
            &(struct pool_outcome){SMTP_OUTCOME_FAILED, d->fatal_reason, .text = d->fatal_text});
        return;
    }
    if (p->opt.tls_override ? p->opt.tls == SMTP_TLS_OPPORTUNISTIC
                            : c->lane->isp->tls == SMTP_TLS_OPPORTUNISTIC) {
        if (!d->skip_starttls && strcmp(reason, "tls_handshake_failed") == 0) {
            d->skip_starttls = 1; /* the table's opportunistic row: plaintext next time */
            return;
        }
    }
    /* This address failed before any transaction: skip it for a while. */
    if (c->target < d->ntargets) {
        d->targets[c->target].down_until = now + POOL_DOWN_MS;
    }
    int any_up = 0;
    for (size_t i = 0; i < d->ntargets; i++) {
        any_up |= d->targets[i].down_until <= now;
    }
    if (!any_up) {
        /* Every exchanger failed: each waiting message takes one attempt,
         * and the next round starts again with a single connection. */
        d->proven = 0;
        for (size_t i = 0; i < d->ntargets; i++) {
            d->targets[i].down_until = 0;
        }
        d->tlsp = c->tlsp; /* the queue's attempts were under c's policy */
        char text2[SMTP_TEXT_MAX + 96];
        snprintf(text2, sizeof text2, "%s (%s; %zu address%s tried)", why.text, c->addr,
                 d->ntargets, d->ntargets == 1 ? "" : "es");
        struct pool_outcome out = {
            .outcome = o == SMTP_OUTCOME_REJECTED ? SMTP_OUTCOME_REJECTED : SMTP_OUTCOME_DEFERRED,
            .reason = reason,
            .code = why.code,
            .enhanced = why.enhanced,
            .text = text2,
        };
        /* A TLS failure is a session of its own (RFC 8460): the first
         * waiting message's attempt is this connection's (peer, MX, TLS
         * facts, policy and result type), so TLS-RPT counts it. */
        struct pool_msg *first =
            !p->stopped && strncmp(reason, "tls_", 4) == 0 ? pool_dequeue(p, d) : NULL;
        if (first) {
            pool_settle(p, first, c, &out);
        }
        pool_fail_queue(p, d, &out);
    }
}

static void pool_data_starting(void *owner, struct smtp_message *sm)
{
    struct pool_conn *c = owner;
    for (size_t i = 0; i < c->nbatch; i++) {
        /* A recipient still open at DATA is one the body goes to. */
        c->sent[i] = sm->rcpts[i].outcome == SMTP_OUTCOME_NONE;
        if (c->sent[i] && c->pool->opt.on_data) {
            c->pool->opt.on_data(c->pool->opt.user, c->batch[i]);
        }
    }
}

static const struct smtp_client_ops pool_ops = {
    .next_message = pool_next_message,
    .message_done = pool_message_done,
    .session_failed = pool_session_failed,
    .data_starting = pool_data_starting,
};

static void pool_conn_closed(void *owner, struct client_conn *conn)
{
    struct pool_conn *c = owner;
    struct pool *p = c->pool;
    const struct smtp_client *sc = client_conn_smtp(conn);
    pool_count_tls(c, 1);
    pool_conn_unidle(c);
    pool_conn_set_state(c, POOL_CONN_CLOSED, sc ? smtp_client_end_reason(sc) : NULL);
    if (c->yielding) {
        /* Its slot goes to a starved destination (the pump that follows
         * counts again). */
        pool_conn_set_yielding(c, 0);
        if (c->lane->isp->starved) {
            c->lane->isp->starved--;
        }
    }
    /* Cannot happen: the machine settles every message before on_closed. */
    for (size_t i = c->nbatch; i-- > 0;) {
        pool_enqueue(p, c->dest, c->batch[i], 1);
    }
    pool_batch_release(c);
    c->lane->open--;
    c->lane->isp->st.open--;
    c->dest->nconns--;
    p->open--;
    list_unlink(&p->conns, &c->node);
    pool_dane_conn_done(c);
    free(c);
    pool_kick(p);
}

struct tls_ctx *pool_tls_ctx(struct pool *p, enum smtp_tls_policy policy)
{
    if (policy == SMTP_TLS_NONE) {
        return NULL;
    }
    struct tls_ctx **slot = policy == SMTP_TLS_VERIFY ? &p->ctx_verify : &p->ctx_plain;
    if (!*slot) {
        char err[256];
        struct tls_client_options o = {
            .ca_file = p->opt.ca_file,
            .verify_peer = policy == SMTP_TLS_VERIFY,
        };
        *slot = tls_client_ctx_new(&o, err, sizeof err);
        if (!*slot) {
            fprintf(stderr, "ringmail: TLS: %s\n", err);
            return NULL;
        }
        client_conn_tls_setup(*slot);
    }
    return *slot;
}

static void pool_conn_open(struct pool *p, struct pool_dest *d, struct pool_lane *l, size_t ti)
{
    struct pool_conn *c = pool_xcalloc(1, sizeof *c);
    struct pool_isp *isp = l->isp;
    const struct pool_target *t = &d->targets[ti];
    c->pool = p;
    c->dest = d;
    c->lane = l;
    c->target = ti;
    snprintf(c->host, sizeof c->host, "%s", t->host);
    netaddr_format((const struct sockaddr *)&t->addr, c->addr, sizeof c->addr);
    enum smtp_tls_policy policy = p->opt.tls_override ? p->opt.tls : isp->tls;
    struct client_conn_config *cfg = &c->cfg;
    cfg->addr = t->addr;
    cfg->addrlen = t->addrlen;
    if (p->nsources) {
        cfg->source = p->sources[l->source].ss;
        cfg->source_len = p->sources[l->source].len;
    }
    cfg->server_name = d->server_name ? d->server_name : c->host;
    cfg->tls_ctx = pool_tls_ctx(p, policy);
    if (!cfg->tls_ctx && policy != SMTP_TLS_NONE) {
        policy = SMTP_TLS_NONE; /* unreachable in practice: the contexts are made at start */
    }
    cfg->session_cache = p->cache;
    cfg->session_key =
        tls_session_cache_key(c->session_key, sizeof c->session_key, cfg->server_name,
                              (const struct sockaddr *)&cfg->addr, smtp_tls_policy_name(policy));
    uint64_t tmo = isp->timeout_ms ? isp->timeout_ms : p->opt.timeout_ms;
    cfg->smtp.helo_name = p->opt.helo;
    cfg->smtp.tls_policy = policy;
    tlsp_config(&c->tlsp, policy);
    cfg->smtp.implicit_tls = d->is_relay && p->opt.relay_implicit_tls;
    cfg->smtp.skip_starttls = d->skip_starttls;
    if (d->is_relay) {
        cfg->smtp.auth_user = p->opt.auth_user;
        cfg->smtp.auth_pass = p->opt.auth_pass;
    }
    cfg->smtp.max_msgs = l->max_msgs_per_conn;
    cfg->smtp.timeout_greeting_ms = tmo ? (unsigned)tmo : 30000;
    cfg->smtp.timeout_command_ms = tmo ? (unsigned)tmo : 30000;
    cfg->smtp.timeout_data_ms = tmo ? (unsigned)tmo : 30000;
    cfg->smtp.timeout_data_done_ms = tmo ? (unsigned)tmo : 60000;
    cfg->timeout_connect_ms = tmo ? (unsigned)tmo : 10000;
    cfg->timeout_tls_ms = tmo ? (unsigned)tmo : 30000;
    pool_sts_conn(p, c); /* MTA-STS enforce: verify, TLS mandatory */
    if (d->dane) {
        pool_dane_conn(p, c); /* DANE for this MX host wins (RFC 8461 2) */
    }
    c->state = POOL_CONN_CONNECTING; /* the first state, not a change */
    loop_timer_init(&c->linger, pool_linger_over, c);
    c->conn = client_conn_new(p->loop, cfg, &pool_ops, pool_conn_closed, c);
    if (!c->conn) {
        fprintf(stderr, "ringmail: out of memory opening a connection\n");
        abort();
    }
    /* One number per session in the trace: the pool's, the connection's
     * and the protocol's lines of it all carry the connection's. */
    c->trace_id = client_conn_trace_id(c->conn);
    l->open++;
    isp->st.open++;
    isp->st.connections++;
    d->nconns++;
    p->open++;
    list_push_front(&p->conns, &c->node);
    client_conn_start(c->conn);
}

/* Open the connections the queues need and the lanes allow. */
void pool_pump(struct loop_timer *t)
{
    struct pool *p = t->owner;
    if (p->stopped) {
        return;
    }
    uint64_t now = pool_now(p);
    uint64_t wake = UINT64_MAX;
    unsigned cap = p->opt.max_connections ? p->opt.max_connections : 1000;
    for (size_t i = 0; i < p->nisps; i++) {
        p->isps[i]->starved = 0;
    }
    for (struct list_node *n = p->active.first, *nn; n; n = nn) {
        nn = n->next;
        struct pool_dest *d = list_entry(n, struct pool_dest, active_node);
        if (d->fatal_reason[0]) {
            pool_fail_queue(p, d,
                            &(struct pool_outcome){SMTP_OUTCOME_FAILED, d->fatal_reason,
                                                   .text = d->fatal_text});
            continue;
        }
        if (d->isp && d->isp->held) {
            pool_held_hand_back(p, d); /* to on_held, or they wait for the release */
            continue;
        }
        if (d->state == DEST_NEW ||
            (d->state == DEST_READY && d->expires_ms <= now && d->nconns == 0)) {
            pool_dest_resolve(p, d); /* a route is ready at once; DNS calls back */
        }
        if (d->state != DEST_READY) {
            continue;
        }
        /* Idle connections of this lane waiting for tokens count as capacity. */
        /* Until one session to d got ready, one connection at a time: a
         * wrong password or a dead exchanger costs one attempt, not one
         * per waiting message. */
        unsigned dcap = d->isp->max_connections ? UINT32_MAX : POOL_DEST_CONNECTIONS;
        if (d->queued > d->nconns && d->nconns < dcap && (d->proven || d->nconns == 0) &&
            pool_isp_full(d->isp)) {
            /* No slot: count what it would open, for the idle sessions to yield. */
            size_t want = d->proven ? d->queued - d->nconns : 1;
            size_t room = dcap - d->nconns;
            d->isp->starved += (unsigned)(want < room ? want : room);
            continue;
        }
        while (d->queued > d->nconns && p->open < cap && d->nconns < dcap &&
               (d->proven || d->nconns == 0)) {
            long ti = pool_target_pick(d, now);
            if (ti < 0) {
                /* Every address is resting: pump again when the first is back. */
                for (size_t i = 0; i < d->ntargets; i++) {
                    wake = d->targets[i].down_until < wake ? d->targets[i].down_until : wake;
                }
                break;
            }
            struct pool_lane *l = pool_lane_pick(p, d->isp, now, &wake);
            if (!l) {
                break;
            }
            pool_conn_open(p, d, l, (size_t)ti);
        }
    }
    for (size_t i = 0; i < p->nisps; i++) {
        pool_isp_yield(p->isps[i]);
    }
    if (wake != UINT64_MAX) {
        /* Not a plain set: a kick during this pass (a connection that
         * closed at once, a message settled) asked for an earlier run. */
        pool_timer_at(p, &p->pump_timer, wake > now ? wake : now + 1);
    }
}

/* Something changed (a message queued, a connection closed, a reload):
 * pump now, even when the pump is armed for a later deadline. */
void pool_kick(struct pool *p)
{
    pool_timer_at(p, &p->pump_timer, pool_now(p));
}
