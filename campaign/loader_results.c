/*
 * loader_results - the results writer: packed results, written with COPY
 * in one transaction at least every LOADER_FLUSH_MS. See loader_int.h.
 *
 * Every attempt becomes a ringmail.delivery row (COPY) and the
 * recipient's state follows in one prepared UPDATE over arrays (on a row
 * this node holds: `claimed` by it, or fresh in one of its claims'
 * ranges, where the result is the row's first write, in place). After
 * the commit, the node's claims that hold nothing more go. A failed
 * write puts the results back in front of the queue and is retried, so
 * nothing is dropped while PostgreSQL is away. Once committed, the
 * results' arms and journal lines are no longer needed
 * (loader_arm_collect, loader_journal_committed).
 *
 * Bounces, in the same transaction (the caller classified them:
 * pool/bounce.h, send_campaign.c):
 *   - the delivery row of a failed attempt carries category, bounce
 *     (hard|soft) and bounce_rule; an accepted one leaves them NULL;
 *   - a hard bad-mailbox, bad-domain or inactive-mailbox bounce
 *     (r->suppress) joins ringmail.suppression, kind 'bounce'. A rejected
 *     recipient is `bounced` whatever the category, but a policy, spam,
 *     content, routing or protocol rejection (S3150, a 554 spam block, a
 *     503) never suppresses: it is about the sender, not the mailbox;
 *   - a final soft bounce that counts (r->soft_bounce) is one
 *     ringmail.feedback_event row (kind 'bounce', source 'smtp', bounce
 *     'soft'), and its address joins the suppression list, kind
 *     'soft-bounces', once the address's soft bounces within
 *     soft_bounce_window (the ones already in feedback_event, from either
 *     side, and this batch's) reach soft_bounce_limit: one statement over
 *     arrays for the events and the check together (LOADER_SQL_SOFT_BOUNCES).
 *     Hard bounces get no feedback_event row: their delivery rows say it
 *     all, and nothing counts them.
 * Results recovered from the journal after a crash (loader_recover.c)
 * carry no reply text: their rows have no category and they neither
 * suppress nor count.
 *
 * Diagnostics: "ringmail: database: writing results: ... (kept, retrying)"
 * on stderr for every failed write.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign/loader_int.h"
#include "engine/clock.h"

/* ---- results, packed ----
 *
 * A struct loader_result is about 2 KB of fixed-size fields, mostly
 * empty; waiting results are kept packed instead (a fixed header, then
 * the strings with their NULs), a few hundred bytes each, so the backlog
 * costs memory by what it holds. */

#define LOADER_FIELD(f)                                                                            \
    {                                                                                              \
        offsetof(struct loader_result, f), sizeof(((struct loader_result *)0)->f)                  \
    }
static const struct {
    size_t off, size;
} loader_strs[] = {
    LOADER_FIELD(outcome),
    LOADER_FIELD(state),
    LOADER_FIELD(reason),
    LOADER_FIELD(enhanced),
    LOADER_FIELD(text),
    LOADER_FIELD(isp),
    LOADER_FIELD(mx),
    LOADER_FIELD(peer),
    LOADER_FIELD(source),
    LOADER_FIELD(tls_version),
    LOADER_FIELD(tls_cipher),
    LOADER_FIELD(tls_group),
    LOADER_FIELD(tls_verify),
    LOADER_FIELD(peer_subject),
    LOADER_FIELD(peer_issuer),
    LOADER_FIELD(peer_sha256),
    LOADER_FIELD(category),
    LOADER_FIELD(bounce),
    LOADER_FIELD(bounce_rule),
    LOADER_FIELD(tls_policy),
    LOADER_FIELD(tls_policy_mode),
    LOADER_FIELD(tls_policy_id),
    LOADER_FIELD(tls_result),
};
#define LOADER_NSTRS (sizeof loader_strs / sizeof loader_strs[0])

/* loader_pack - r appended to b as one record */
void loader_pack(buf_t *b, const struct loader_result *r)
{
    struct loader_rec h = {
        .id = r->recipient_id,
        .arm_seq = r->arm_seq,
        .conn_id = r->conn_id,
        .retry_in_s = r->retry_in_s,
        .attempt = r->attempt,
        .final = r->final,
        .code = r->code,
        .connect_ms = r->connect_ms,
        .tls_ms = r->tls_ms,
        .transaction_ms = r->transaction_ms,
        .tls = r->tls,
        .tls_resumed = r->tls_resumed,
        .data_in_flight = r->data_in_flight,
        .suppress = r->suppress,
        .soft_bounce = r->soft_bounce,
        .conn_first = r->conn_first,
    };
    size_t start = buf_len(b);
    buf_append(b, &h, sizeof h);
    for (size_t k = 0; k < LOADER_NSTRS; k++) {
        const char *f = (const char *)r + loader_strs[k].off;
        buf_append(b, f, strnlen(f, loader_strs[k].size - 1));
        buf_append(b, "", 1);
    }
    h.len = (uint32_t)(buf_len(b) - start);
    memcpy((char *)buf_data(b) + start + offsetof(struct loader_rec, len), &h.len, sizeof h.len);
}

/* loader_unpack - the record at p into r; returns its length */
size_t loader_unpack(const char *p, struct loader_result *r)
{
    struct loader_rec h;
    memcpy(&h, p, sizeof h);
    memset(r, 0, sizeof *r);
    r->recipient_id = h.id;
    r->arm_seq = h.arm_seq;
    r->conn_id = h.conn_id;
    r->retry_in_s = h.retry_in_s;
    r->attempt = h.attempt;
    r->final = h.final;
    r->code = h.code;
    r->connect_ms = h.connect_ms;
    r->tls_ms = h.tls_ms;
    r->transaction_ms = h.transaction_ms;
    r->tls = h.tls;
    r->tls_resumed = h.tls_resumed;
    r->data_in_flight = h.data_in_flight;
    r->suppress = h.suppress;
    r->soft_bounce = h.soft_bounce;
    r->conn_first = h.conn_first;
    const char *q = p + sizeof h;
    for (size_t k = 0; k < LOADER_NSTRS; k++) {
        size_t n = strlen(q);
        memcpy((char *)r + loader_strs[k].off, q, n); /* packed from a field of that size */
        q += n + 1;
    }
    return h.len;
}

/* ---- results ---- */

/* loader_copy_field - s as a COPY text field: backslash escapes; NULL is \N */
static void loader_copy_field(buf_t *b, const char *s, int last)
{
    if (!s) {
        buf_append_str(b, "\\N");
    } else {
        for (; *s; s++) {
            switch (*s) {
            case '\\':
                buf_append_str(b, "\\\\");
                break;
            case '\t':
                buf_append_str(b, "\\t");
                break;
            case '\n':
                buf_append_str(b, "\\n");
                break;
            case '\r':
                buf_append_str(b, "\\r");
                break;
            default:
                buf_append(b, s, 1);
            }
        }
    }
    buf_append(b, last ? "\n" : "\t", 1);
}

/* loader_copy_int - v as a COPY text field, \N unless valid */
static void loader_copy_int(buf_t *b, long long v, int valid)
{
    if (valid) {
        buf_appendf(b, "%lld\t", v);
    } else {
        buf_append_str(b, "\\N\t");
    }
}

/* PostgreSQL array literals, element by element: raw (numbers and plain
 * words) or quoted text ("..." with \ and " escaped; NULL for none). */
static void loader_array_next(buf_t *b)
{
    buf_append(b, buf_len(b) ? "," : "{", 1);
}

static void loader_array_raw(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void loader_array_raw(buf_t *b, const char *fmt, ...)
{
    loader_array_next(b);
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_append_str(b, tmp);
}

static void loader_array_text(buf_t *b, const char *s)
{
    loader_array_next(b);
    if (!s) {
        buf_append_str(b, "NULL");
        return;
    }
    buf_append(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            buf_append(b, "\\", 1);
        }
        buf_append(b, s, 1);
    }
    buf_append(b, "\"", 1);
}

/* loader_array_end - close the array literal b; its text */
static const char *loader_array_end(buf_t *b)
{
    if (buf_len(b)) {
        buf_append(b, "}", 2); /* with the NUL */
    } else {
        buf_append(b, "{}", 3);
    }
    return buf_data(b);
}

/* loader_copy - COPY data in with sql; 0, or -1 + err */
static int loader_copy(PGconn *c, const char *sql, buf_t *data, char *err, size_t errlen)
{
    PGresult *r = pq.PQexec(c, sql);
    if (!r || pq.PQresultStatus(r) != PGRES_COPY_IN) {
        snprintf(err, errlen, "%s", r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(c));
        pq.PQclear(r);
        return -1;
    }
    pq.PQclear(r);
    int ok = pq.PQputCopyData(c, buf_data(data), (int)buf_len(data)) == 1;
    ok = pq.PQputCopyEnd(c, ok ? NULL : "send failed") == 1 && ok;
    int failed = !ok;
    while ((r = pq.PQgetResult(c)) != NULL) {
        if (pq.PQresultStatus(r) != PGRES_COMMAND_OK) {
            snprintf(err, errlen, "%s", pq.PQresultErrorMessage(r));
            failed = 1;
        }
        pq.PQclear(r);
    }
    return failed ? -1 : 0;
}

/* The write transaction's start. The UPDATE (and the suppression INSERT)
 * must stay an index nested loop: unnest() outside, one primary-key probe
 * per result inside. Left to the statistics, a batch after an outage
 * (thousands of results, a planner shown few rows with our lease owner)
 * flipped to a scan of ringmail.recipient joined against a re-scanned
 * unnest(): (claimed rows) x (batch) comparisons, seconds per flush.
 * - force_generic_plan: a custom plan sees the array's true length and
 *   weighs it against the statistics; a generic one assumes ten elements
 *   whatever the batch, so the batch size cannot change the plan (and the
 *   five custom plans after every reconnect are gone).
 * - seqscan, bitmapscan, hashjoin and mergejoin off: what is left is a
 *   nested loop; with ten assumed outer rows, ten probes of the primary
 *   key cost far less than a whole scan of the table in key order (the
 *   other order), sized by the table's pages on disk, which stale
 *   statistics do not change. Memoize: the ids are distinct, a cache of
 *   probes only costs.
 * SET LOCAL ends with the transaction; the claims keep the defaults. */
#define LOADER_WRITE_BEGIN                                                                         \
    "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan;"                                       \
    " SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"                          \
    " SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"                          \
    " SET LOCAL enable_memoize = off"

/* What one write transaction sends besides the COPY: the recipients' new
 * states, the hard bounces that suppress and the soft bounces that count,
 * each as PostgreSQL array literals. */
struct loader_batch {
    buf_t copy;                                        /* the attempt rows, COPY text */
    buf_t ids, states, reasons, attempts, retry, isps; /* every result */
    buf_t hard_ids, hard_reasons;                      /* r->suppress */
    buf_t soft_ids, soft_cats, soft_rules, soft_status, soft_diag, soft_isps; /* r->soft_bounce */
    size_t hard, soft;
    /* the sessions its attempts opened (LOADER_SQL_SESSIONS, in its order) */
    buf_t ses[LOADER_SESSION_ARRAYS];
    size_t sessions;
};

/* loader_batch_each - fn on each of b's buffers (buf_init, buf_free) */
static void loader_batch_each(struct loader_batch *b, void (*fn)(buf_t *))
{
    buf_t *all[] = {&b->copy,         &b->ids,       &b->states,    &b->reasons,
                    &b->attempts,     &b->retry,     &b->isps,      &b->hard_ids,
                    &b->hard_reasons, &b->soft_ids,  &b->soft_cats, &b->soft_rules,
                    &b->soft_status,  &b->soft_diag, &b->soft_isps};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
        fn(all[k]);
    }
    for (size_t k = 0; k < LOADER_SESSION_ARRAYS; k++) {
        fn(&b->ses[k]);
    }
}

/* loader_reply - "CODE TEXT" of x, as a diagnostic ("" without a code);
 * the text starts with the enhanced code when the reply has one */
static void loader_reply(const struct loader_result *x, char *dst, size_t cap)
{
    if (x->code <= 0) {
        dst[0] = '\0';
        return;
    }
    snprintf(dst, cap, "%d%s%s", x->code, x->text[0] ? " " : "", x->text);
}

/* loader_copy_row - x's attempt row, as COPY text, into d (session: its
 * session's id) */
static void loader_copy_row(buf_t *d, const char *camp, int64_t session,
                            const struct loader_result *x)
{
    buf_appendf(d, "%s\t%" PRId64 "\t%u\t", camp, x->recipient_id, x->attempt);
    loader_copy_field(d, x->outcome, 0);
    loader_copy_field(d, x->final ? "t" : "f", 0);
    loader_copy_field(d, x->reason, 0);
    loader_copy_int(d, x->transaction_ms, x->transaction_ms >= 0);
    loader_copy_field(d, x->isp[0] ? x->isp : NULL, 0);
    loader_copy_int(d, x->code, x->code > 0);
    loader_copy_field(d, x->enhanced[0] ? x->enhanced : NULL, 0);
    loader_copy_field(d, x->text, 0);
    loader_copy_field(d, x->data_in_flight ? "t" : "f", 0);
    loader_copy_field(d, x->category[0] ? x->category : NULL, 0);
    loader_copy_field(d, x->bounce[0] ? x->bounce : NULL, 0);
    loader_copy_field(d, x->bounce_rule[0] ? x->bounce_rule : NULL, 0);
    /* NULL for an attempt no connection carried (DNS, every exchanger down) */
    loader_copy_field(d, x->peer[0] ? (x->conn_first ? "t" : "f") : NULL, 0);
    loader_copy_field(d, x->tls_result[0] ? x->tls_result : NULL, 0);
    buf_appendf(d, "%" PRId64 "\n", session);
}

/* loader_array_int - v into the int array b, NULL unless valid */
static void loader_array_int(buf_t *b, long long v, int valid)
{
    if (valid) {
        loader_array_raw(b, "%lld", v);
    } else {
        loader_array_text(b, NULL);
    }
}

/* loader_session_add - x's session (id) into the batch's session arrays,
 * in LOADER_SQL_SESSIONS's order */
static void loader_session_add(struct loader_batch *b, int64_t id, const struct loader_result *x)
{
    buf_t *s = b->ses;
    int tls = x->tls; /* the TLS facts are known */
    loader_array_raw(&s[0], "%" PRId64, id);
    loader_array_text(&s[1], x->mx[0] ? x->mx : NULL);
    loader_array_text(&s[2], x->peer[0] ? x->peer : NULL);
    loader_array_text(&s[3], x->source[0] ? x->source : NULL);
    loader_array_int(&s[4], x->connect_ms, x->connect_ms >= 0);
    loader_array_int(&s[5], x->tls_ms, x->tls_ms >= 0);
    loader_array_text(&s[6], tls ? x->tls_version : NULL);
    loader_array_text(&s[7], tls ? x->tls_cipher : NULL);
    loader_array_text(&s[8], tls ? x->tls_group : NULL);
    loader_array_text(&s[9], tls ? (x->tls_resumed ? "t" : "f") : NULL);
    loader_array_text(&s[10], tls ? x->tls_verify : NULL);
    loader_array_text(&s[11], tls ? x->peer_subject : NULL);
    loader_array_text(&s[12], tls ? x->peer_issuer : NULL);
    loader_array_text(&s[13], tls ? x->peer_sha256 : NULL);
    loader_array_text(&s[14], x->tls_policy[0] ? x->tls_policy : NULL);
    loader_array_text(&s[15], x->tls_policy[0] ? x->tls_policy_mode : NULL);
    loader_array_text(&s[16], x->tls_policy_id[0] ? x->tls_policy_id : NULL);
    b->sessions++;
}

/* loader_session - x's session id (schema 9): this process's block plus
 * its connection's number, the session row written with the connection's
 * first attempt; an attempt no connection carried (or a result recovered
 * from the journal) is a session of its own, numbered in the block's
 * upper half */
static int64_t loader_session(struct loader *l, struct loader_batch *b,
                              const struct loader_result *x)
{
    if (x->conn_id > 0 && x->conn_id < LOADER_SESSION_LONE) {
        int64_t id = l->session_base + (int64_t)x->conn_id;
        if (x->conn_first) {
            loader_session_add(b, id, x);
        }
        return id;
    }
    /* wraps within the upper half after 2^39 of them: never, in one process */
    int64_t id = l->session_base + (int64_t)LOADER_SESSION_LONE +
                 (int64_t)(++l->lone_sessions % LOADER_SESSION_LONE);
    loader_session_add(b, id, x);
    return id;
}

/* loader_batch_add - one result into the batch */
static void loader_batch_add(struct loader *l, struct loader_batch *b, const char *camp,
                             const struct loader_result *x)
{
    loader_copy_row(&b->copy, camp, loader_session(l, b, x), x);
    loader_array_raw(&b->ids, "%" PRId64, x->recipient_id);
    loader_array_text(&b->states, x->state);
    loader_array_text(&b->reasons, x->reason[0] ? x->reason : NULL);
    loader_array_raw(&b->attempts, "%u", x->attempt);
    loader_array_raw(&b->retry, "%.3f", x->retry_in_s);
    loader_array_text(&b->isps, x->isp[0] ? x->isp : NULL);
    if (!x->suppress && !x->soft_bounce) {
        return;
    }
    char reply[LOADER_TEXT_MAX + 32];
    loader_reply(x, reply, sizeof reply);
    if (x->suppress) {
        char why[sizeof reply + 64];
        snprintf(why, sizeof why, "%s bounce: %s", x->category[0] ? x->category : "hard",
                 reply[0] ? reply : x->reason);
        loader_array_raw(&b->hard_ids, "%" PRId64, x->recipient_id);
        loader_array_text(&b->hard_reasons, why);
        b->hard++;
    }
    if (x->soft_bounce) {
        loader_array_raw(&b->soft_ids, "%" PRId64, x->recipient_id);
        loader_array_text(&b->soft_cats, x->category[0] ? x->category : NULL);
        loader_array_text(&b->soft_rules, x->bounce_rule[0] ? x->bounce_rule : NULL);
        loader_array_text(&b->soft_status, x->enhanced[0] ? x->enhanced : NULL);
        loader_array_text(&b->soft_diag, reply[0] ? reply : NULL);
        loader_array_text(&b->soft_isps, x->isp[0] ? x->isp : NULL);
        b->soft++;
    }
}

/* loader_span - a window as the suppression reason says it: "7d", "12h", "90s" */
static void loader_span(uint64_t ms, char *dst, size_t cap)
{
    if (ms % 86400000 == 0) {
        snprintf(dst, cap, "%" PRIu64 "d", ms / 86400000);
    } else if (ms % 3600000 == 0) {
        snprintf(dst, cap, "%" PRIu64 "h", ms / 3600000);
    } else if (ms % 1000 == 0) {
        snprintf(dst, cap, "%" PRIu64 "s", ms / 1000);
    } else {
        snprintf(dst, cap, "%" PRIu64 "ms", ms);
    }
}

/* loader_write_bounces - the batch's hard bounces into the suppression
 * list, its soft ones into feedback_event (and the list at the limit);
 * 0, or -1 + err */
static int loader_write_bounces(struct loader *l, PGconn *c, const char *camp,
                                struct loader_batch *b, char *err, size_t errlen)
{
    PGresult *r;
    if (b->hard > 0) {
        const char *p[] = {camp, loader_array_end(&b->hard_ids),
                           loader_array_end(&b->hard_reasons)};
        r = loader_prepared(c, LOADER_SQL_SUPPRESS, p, PGRES_COMMAND_OK, err, errlen);
        if (!r) {
            return -1;
        }
        pq.PQclear(r);
    }
    if (b->soft > 0) {
        char window[24], span[24], limit[16];
        snprintf(window, sizeof window, "%" PRIu64, l->o.soft_bounce_window_ms);
        loader_span(l->o.soft_bounce_window_ms, span, sizeof span);
        snprintf(limit, sizeof limit, "%u", l->o.soft_bounce_limit);
        const char *p[] = {camp,
                           loader_array_end(&b->soft_ids),
                           loader_array_end(&b->soft_cats),
                           loader_array_end(&b->soft_rules),
                           loader_array_end(&b->soft_status),
                           loader_array_end(&b->soft_diag),
                           loader_array_end(&b->soft_isps),
                           window,
                           span,
                           limit};
        r = loader_prepared(c, LOADER_SQL_SOFT_BOUNCES, p, PGRES_COMMAND_OK, err, errlen);
        if (!r) {
            return -1;
        }
        pq.PQclear(r);
    }
    return 0;
}

/* loader_session_block - this process's block of session ids into
 * l->session_base; 0, or -1 + err */
static int loader_session_block(struct loader *l, PGconn *c, char *err, size_t errlen)
{
    PGresult *r = loader_query(c, "SELECT nextval('ringmail.session_block')", 0, NULL,
                               PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    l->session_base = strtoll(pq.PQgetvalue(r, 0, 0), NULL, 10);
    pq.PQclear(r);
    return 0;
}

/* loader_write - the packed results in one transaction on c; 0, or -1
 * (nothing written).
 * The delivery rows go in with COPY; the recipients' new states with one
 * prepared UPDATE over arrays (an index nested loop on the primary key
 * whatever the statistics say: LOADER_WRITE_BEGIN); then the bounces. */
int loader_write(struct loader *l, PGconn *c, const buf_t *packed, char *err, size_t errlen)
{
    struct loader_batch b = {0};
    loader_batch_each(&b, buf_init);
    char camp[32];
    snprintf(camp, sizeof camp, "%" PRId64, l->o.campaign);
    int rc = -1;
    PGresult *r = NULL;
    if (!l->session_base && loader_session_block(l, c, err, errlen) < 0) {
        goto out;
    }
    struct loader_result one;
    for (size_t at = 0; at < buf_len(packed);) {
        at += loader_unpack(buf_data(packed) + at, &one);
        loader_batch_add(l, &b, camp, &one);
    }
    const char *up[] = {l->node,
                        loader_array_end(&b.ids),
                        loader_array_end(&b.states),
                        loader_array_end(&b.reasons),
                        loader_array_end(&b.attempts),
                        loader_array_end(&b.retry),
                        loader_array_end(&b.isps)};
    if (db_exec(c, LOADER_WRITE_BEGIN, err, errlen) < 0) {
        goto out;
    }
    if (b.sessions > 0) {
        const char *sp[1 + LOADER_SESSION_ARRAYS] = {l->node};
        for (size_t k = 0; k < LOADER_SESSION_ARRAYS; k++) {
            sp[1 + k] = loader_array_end(&b.ses[k]);
        }
        r = loader_prepared(c, LOADER_SQL_SESSIONS, sp, PGRES_COMMAND_OK, err, errlen);
        if (!r) {
            goto out;
        }
        pq.PQclear(r);
    }
    if (loader_copy(c,
                    "COPY ringmail.attempt (campaign_id, recipient_id, attempt, outcome, final,"
                    " reason, transaction_ms, isp, code, enhanced, reply, data_in_flight,"
                    " category, bounce, bounce_rule, conn_first, tls_result, session_id)"
                    " FROM STDIN",
                    &b.copy, err, errlen) < 0) {
        goto out;
    }
    r = loader_prepared(c, LOADER_SQL_RESULTS, up, PGRES_COMMAND_OK, err, errlen);
    if (!r) {
        goto out;
    }
    pq.PQclear(r);
    if (loader_write_bounces(l, c, camp, &b, err, errlen) < 0) {
        goto out;
    }
    if (db_exec(c, "COMMIT", err, errlen) == 0) {
        rc = 0;
    }
out:
    if (rc < 0 && loader_up(c)) {
        char ignore[64];
        db_exec(c, "ROLLBACK", ignore, sizeof ignore);
    }
    loader_batch_each(&b, buf_free);
    return rc;
}

/* loader_flush - take the waiting results and commit them; on failure
 * they go back */
static int loader_flush(struct loader *l, char *err, size_t errlen)
{
    pthread_mutex_lock(&l->mu);
    buf_t batch = l->res;
    size_t n = l->nres;
    buf_init(&l->res);
    l->nres = 0;
    l->writing = n;
    pthread_mutex_unlock(&l->mu);
    if (n == 0) {
        buf_free(&batch);
        return 0;
    }
    uint64_t t0 = clock_us();
    int rc = loader_write(l, l->wc, &batch, err, errlen);
    pthread_mutex_lock(&l->mu);
    l->writing = 0;
    l->st.write_us += clock_us() - t0;
    if (rc == 0) {
        l->st.written += n;
        l->st.flushes++;
    } else {
        /* Put them back in front of anything that arrived meanwhile. */
        buf_append(&batch, buf_data(&l->res), buf_len(&l->res));
        buf_free(&l->res);
        l->res = batch;
        l->nres += n;
    }
    pthread_mutex_unlock(&l->mu);
    int64_t *done = NULL;
    size_t ndone = 0;
    if (rc == 0) {
        /* Their arms wait for one result fewer. */
        pthread_mutex_lock(&l->amu);
        for (size_t at = 0; at < buf_len(&batch);) {
            struct loader_rec h;
            memcpy(&h, buf_data(&batch) + at, sizeof h);
            at += h.len;
            struct loader_arm_seq *a = h.arm_seq ? loader_arm_find(l, h.arm_seq) : NULL;
            if (a && a->left > 0) {
                a->left--;
            }
        }
        loader_arm_collect(l);
        done = l->arm_done;
        ndone = l->narm_done;
        l->arm_done = NULL;
        l->narm_done = l->arm_done_cap = 0;
        pthread_mutex_unlock(&l->amu);
        loader_journal_committed(&l->j, &batch);
        buf_free(&batch);
    }
    if (rc == 0) {
        /* Claims whose every recipient has its result: their rows go (a
         * failure leaves them for the next commit). */
        const char *p[] = {l->node};
        char ignore[256];
        pq.PQclear(loader_prepared(l->wc, LOADER_SQL_CLAIMS_DONE, p, PGRES_COMMAND_OK, ignore,
                                   sizeof ignore));
    }
    if (ndone) {
        /* Arms whose every recipient has its result committed: nothing a
         * takeover needs. A failure leaves rows that match no claim. */
        buf_t a;
        buf_init(&a);
        size_t k = 0;
        for (size_t i = 0; i < ndone; i++) {
            loader_ids_add(&a, &k, done[i]);
        }
        const char *p[] = {l->node, loader_ids_end(&a, k)};
        char ignore[256];
        PGresult *r = loader_query(l->wc,
                                   "DELETE FROM ringmail.armed WHERE node = $1"
                                   " AND seq = ANY($2::bigint[])",
                                   2, p, PGRES_COMMAND_OK, ignore, sizeof ignore);
        pq.PQclear(r);
        buf_free(&a);
        free(done);
    }
    return rc;
}

/* loader_writer - the writer thread: commits results at least every
 * LOADER_FLUSH_MS */
void *loader_writer(void *arg)
{
    struct loader *l = arg;
    char err[1024];
    uint64_t next_connect = 0;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        int stopping = l->stopping;
        size_t nres = l->nres;
        pthread_mutex_unlock(&l->mu);
        int up = loader_keep_up(l, 1, &next_connect);
        uint64_t now = clock_ms();
        if (up && nres > 0 && now >= l->flush_not_before_ms &&
            (stopping || nres >= LOADER_FLUSH_ROWS || now - l->last_flush_ms >= LOADER_FLUSH_MS)) {
            if (loader_flush(l, err, sizeof err) < 0) {
                fprintf(stderr, "ringmail: database: writing results: %s (kept, retrying)\n", err);
                loader_count_db_error(l);
                if (!loader_up(l->wc)) {
                    loader_disconnect(l, 1);
                }
                next_connect = now + LOADER_RETRY_DB_MS;
                l->flush_not_before_ms = now + LOADER_RETRY_DB_MS; /* no hot retry loop */
            } else {
                l->last_flush_ms = now;
                loader_signal(l); /* the loop may be waiting for the backlog to drain */
            }
        }
        if (stopping) {
            pthread_mutex_lock(&l->mu);
            int done = l->nres == 0;
            int gave_up = l->stopping > 1; /* gave up waiting for the database */
            pthread_mutex_unlock(&l->mu);
            if (done || (gave_up && !loader_up(l->wc)) || stopping > 2) {
                break;
            }
        }
        pthread_mutex_lock(&l->mu);
        if (!l->stopping && l->nres < LOADER_FLUSH_ROWS) {
            loader_wait_on(&l->mu, &l->wcv, 50);
        } else if (l->stopping && l->stopping < 3 && clock_ms() < l->flush_not_before_ms) {
            loader_wait_on(&l->mu, &l->wcv, 20); /* retrying: no hot loop */
        }
        pthread_mutex_unlock(&l->mu);
    }
    return NULL;
}
