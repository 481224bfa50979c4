/*
 * feedback_store - what comes back after the 250, written to PostgreSQL.
 * See feedback_store.h for what each event does.
 *
 * A call parses its messages first (feedback_parse: GMime, no database),
 * then writes everything in one transaction with prepared statements:
 * per event a recipient lookup (its address and the ISP of its accepted
 * delivery), the suppression insert, the recipient's feedback, the event
 * row, and for a complaint the guard's counts. Any database error rolls
 * the whole call back and the connection is dropped, to be made again by
 * the next call: the caller answers 451 and the reporting MTA retries.
 *
 * Which recipient: every token candidate of the report, most trusted
 * first (the event's own, then the report's list), then the returned
 * message's Message-ID (render.c starts it with the u- token when
 * [feedback] is on), until one has a good MAC. A token never decides
 * alone what an address is: the recipient's row gives the address, and a
 * report that names another address is unmatched.
 *
 * Diagnostics: see feedback_store.h.
 */
#include "campaign/feedback_store.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "campaign/db.h"
#include "campaign/feedback.h"
#include "campaign/feedback_parse.h"
#include "engine/crypto.h"
#include "engine/num.h"
#include "pool/bounce.h"
#include "pool/config.h"

#define STORE_STATEMENT_TIMEOUT "30s"
#define STORE_LOCK_TIMEOUT "10s"

enum {
    ST_SEEN,
    ST_RECIPIENT,
    ST_SUPPRESS,
    ST_FEEDBACK,
    ST_EVENT,
    ST_SOFT_COUNT,
    ST_GUARD_COUNT,
    ST_HOLD,
    ST_N
};

static const struct {
    const char *name, *sql;
    int nparams;
} store_sql[ST_N] = {
    /* $1 digest: this message to this recipient was recorded before */
    [ST_SEEN] = {"fb_seen",
                 "SELECT 1 FROM ringmail.feedback_event WHERE digest = $1 AND digest IS NOT NULL"
                 " LIMIT 1",
                 1},
    /* $1 recipient id, $2 campaign: its address and the ISP of its last
     * attempt (the accepted one, when one was: nothing follows it), which
     * every result sets on the recipient (schema 9). */
    [ST_RECIPIENT] = {"fb_recipient",
                      "SELECT r.address, r.isp"
                      " FROM ringmail.recipient r WHERE r.id = $1 AND r.campaign_id = $2",
                      2},
    /* $1 address, $2 reason, $3 campaign, $4 kind: 1 row when newly suppressed */
    [ST_SUPPRESS] = {"fb_suppress",
                     "INSERT INTO ringmail.suppression (address, reason, campaign_id, kind)"
                     " VALUES ($1, $2, nullif($3::bigint, 0), $4)"
                     " ON CONFLICT (address) DO NOTHING RETURNING 1",
                     4},
    /* $1 recipient id, $2 feedback: a stronger word is never replaced by a
     * weaker one (complaint > unsubscribe > bounce > soft-bounce) */
    [ST_FEEDBACK] = {"fb_feedback",
                     "UPDATE ringmail.recipient SET feedback = CASE WHEN"
                     "  array_position(ARRAY['soft-bounce', 'bounce', 'unsubscribe', 'complaint'],"
                     "   $2::text) >= coalesce(array_position(ARRAY['soft-bounce', 'bounce',"
                     "   'unsubscribe', 'complaint'], feedback), 0) THEN $2 ELSE feedback END,"
                     " feedback_at = now() WHERE id = $1",
                     2},
    [ST_EVENT] = {"fb_event",
                  "INSERT INTO ringmail.feedback_event (kind, source, campaign_id, recipient_id,"
                  " address, isp, category, bounce, bounce_rule, status, diagnostic, reason,"
                  " suppressed, reporting_mta, remote_mta, client, envelope_from, envelope_to,"
                  " message_id, raw, digest) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
                  " $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
                  21},
    /* $1 address, $2 window in ms: the soft bounces already recorded */
    [ST_SOFT_COUNT] = {"fb_soft_count",
                       "SELECT count(*) FROM ringmail.feedback_event WHERE address = $1"
                       " AND bounce = 'soft' AND received_at > now() - $2::bigint * interval '1 ms'"
                       " AND " BOUNCE_SOFT_COUNTS_SQL("category"),
                       2},
    /* $1 campaign, $2 isp, $3 window in ms: delivered, complaints. The
     * window starts at its length ago, or at the operator's last resume
     * of this ISP if that is later (a resume is a fresh start, not a hold
     * again at the next complaint). */
    [ST_GUARD_COUNT] = {"fb_guard_count",
                        "WITH w AS (SELECT greatest(now() - $3::bigint * interval '1 ms',"
                        "  (SELECT resumed_at FROM ringmail.isp_hold WHERE campaign_id = $1"
                        "   AND isp = $2)) AS since)"
                        " SELECT (SELECT count(*) FROM ringmail.delivery, w WHERE campaign_id = $1"
                        "   AND isp = $2 AND outcome = 'accepted' AND at > w.since),"
                        " (SELECT count(*) FROM ringmail.feedback_event, w WHERE campaign_id = $1"
                        "   AND isp = $2 AND kind = 'complaint' AND received_at > w.since)",
                        3},
    [ST_HOLD] =
        {"fb_hold",
         "INSERT INTO ringmail.isp_hold (campaign_id, isp, reason) VALUES ($1, $2, $3)"
         " ON CONFLICT (campaign_id, isp) DO UPDATE SET reason = excluded.reason,"
         "  held_at = now(), resumed_at = NULL WHERE ringmail.isp_hold.resumed_at IS NOT NULL"
         " RETURNING 1",
         3},
};

struct feedback_store {
    char *conninfo;
    PGconn *c;
    uint8_t secret[CONFIG_SECRET_MAX];
    size_t secret_len;
    char return_path[CONFIG_DOMAIN_MAX];
    double complaint_pause;
    unsigned complaint_min_sample;
    uint64_t complaint_window_ms;
    unsigned soft_bounce_limit;
    uint64_t soft_bounce_window_ms;
    struct bounce_rules rules;
    /* the message being written: its digest goes on each of its events */
    uint8_t digest[CRYPTO_SHA256_LEN];
    int has_digest;
};

/* ---- the connection ---- */

static void store_disconnect(struct feedback_store *s)
{
    if (s->c) {
        pq.PQfinish(s->c);
        s->c = NULL;
    }
}

static int store_result_ok(PGconn *c, PGresult *r, ExecStatusType want, char *err, size_t errlen)
{
    if (r && pq.PQresultStatus(r) == want) {
        return 1;
    }
    snprintf(err, errlen, "%s", r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(c));
    db_trim(err);
    return 0;
}

static int store_connect(struct feedback_store *s, char *err, size_t errlen)
{
    if (s->c && pq.PQstatus(s->c) == CONNECTION_OK) {
        return 0;
    }
    store_disconnect(s);
    char why[512];
    s->c = db_connect_current(s->conninfo, why, sizeof why);
    if (!s->c) {
        snprintf(err, errlen, "connecting to PostgreSQL: %s", why);
        return -1;
    }
    if (db_exec(s->c,
                "SET statement_timeout = '" STORE_STATEMENT_TIMEOUT "';"
                "SET lock_timeout = '" STORE_LOCK_TIMEOUT "'",
                err, errlen) < 0) {
        store_disconnect(s);
        return -1;
    }
    for (int k = 0; k < ST_N; k++) {
        PGresult *r =
            pq.PQprepare(s->c, store_sql[k].name, store_sql[k].sql, store_sql[k].nparams, NULL);
        int ok = store_result_ok(s->c, r, PGRES_COMMAND_OK, why, sizeof why);
        pq.PQclear(r);
        if (!ok) {
            snprintf(err, errlen, "preparing %s: %s", store_sql[k].name, why);
            store_disconnect(s);
            return -1;
        }
    }
    return 0;
}

struct feedback_store *feedback_store_open(const char *conninfo, const struct config_feedback *fb,
                                           const struct bounce_rules *rules, char *err,
                                           size_t errlen)
{
    if (!fb->enabled || fb->secret_len == 0 || !fb->return_path[0]) {
        snprintf(err, errlen,
                 "[feedback] is not configured: the config needs a [feedback] section with "
                 "return_path and secret_file");
        return NULL;
    }
    struct feedback_store *s = calloc(1, sizeof *s);
    if (!s || !(s->conninfo = strdup(conninfo))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(s->secret, fb->secret, fb->secret_len);
    s->secret_len = fb->secret_len;
    snprintf(s->return_path, sizeof s->return_path, "%s", fb->return_path);
    s->complaint_pause = fb->complaint_pause;
    s->complaint_min_sample = fb->complaint_min_sample;
    s->complaint_window_ms = fb->complaint_window_ms;
    s->soft_bounce_limit = fb->soft_bounce_limit;
    s->soft_bounce_window_ms = fb->soft_bounce_window_ms;
    if (rules) {
        s->rules = *rules;
    }
    if (store_connect(s, err, errlen) < 0) {
        feedback_store_close(s);
        return NULL;
    }
    return s;
}

void feedback_store_close(struct feedback_store *s)
{
    if (!s) {
        return;
    }
    store_disconnect(s);
    explicit_bzero(s->secret, sizeof s->secret);
    free(s->conninfo);
    free(s);
}

/* store_exec - prepared statement k; NULL + err unless want */
static PGresult *store_exec(struct feedback_store *s, int k, const char *const *v,
                            const int *lengths, const int *formats, ExecStatusType want, char *err,
                            size_t errlen)
{
    PGresult *r =
        pq.PQexecPrepared(s->c, store_sql[k].name, store_sql[k].nparams, v, lengths, formats, 0);
    if (!store_result_ok(s->c, r, want, err, errlen)) {
        pq.PQclear(r);
        return NULL;
    }
    return r;
}

/* ---- text that goes to PostgreSQL ---- */

/* store_text - s as valid UTF-8 text without control characters, at most
 * max-1 bytes, into out ('?' for anything else); NULL stays NULL */
static const char *store_text(const char *s, char *out, size_t max)
{
    if (!s) {
        return NULL;
    }
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p && o + 5 < max) {
        unsigned c = *p;
        size_t n = c < 0x80             ? 1
                   : (c & 0xe0) == 0xc0 ? 2
                   : (c & 0xf0) == 0xe0 ? 3
                   : (c & 0xf8) == 0xf0 ? 4
                                        : 0;
        size_t k = 1;
        while (n > 1 && k < n && (p[k] & 0xc0) == 0x80) {
            k++;
        }
        if (n == 0 || k != n || (n == 2 && c < 0xc2) || (n == 1 && (c < 0x20 || c == 0x7f))) {
            out[o++] = c == '\t' ? ' ' : '?';
            p++;
            continue;
        }
        memcpy(out + o, p, n);
        o += n;
        p += n;
    }
    out[o] = '\0';
    return out;
}

/* ---- one event ---- */

/* What an event resolved to, before it is written. */
struct store_event {
    const char *kind, *source;   /* "bounce" ..., "dsn" ... or NULL */
    int64_t campaign, recipient; /* 0 when unmatched; campaign 0 with a recipient: list mode */
    char address[320];
    char isp[64];
    const struct bounce_result *bounce; /* bounce and delay only */
    char reason[400];
    const char *status, *diagnostic, *reporting_mta, *remote_mta, *message_id;
    const char *feedback; /* the recipient's new word, or NULL */
    const char *suppress; /* the suppression kind, or NULL */
    char suppress_reason[400];
};

/* store_code - the reply code of a diagnostic ("smtp; 550 5.1.1 ..."), else
 * of the status class (5.x.x -> 550, 4.x.x -> 450), else 550 */
static int store_code(const char *diagnostic, const char *status, const char **text)
{
    *text = diagnostic;
    if (diagnostic) {
        const char *p = diagnostic;
        const char *semi = strchr(p, ';');
        if (semi && semi - p < 16) {
            p = semi + 1;
        }
        while (*p == ' ') {
            p++;
        }
        if (p[0] >= '2' && p[0] <= '5' && isdigit((unsigned char)p[1]) &&
            isdigit((unsigned char)p[2]) && (p[3] == ' ' || p[3] == '-' || p[3] == '\0')) {
            *text = p;
            return (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
        }
    }
    if (status && status[0] == '4') {
        return 450;
    }
    return 550;
}

/* store_token_id - the first candidate with a good MAC into *id: 0, or -1
 * with the first candidate's refusal (or "no ringmail token") in why */
static int store_token_id(const struct feedback_store *s, const struct feedback_report *rep,
                          const struct feedback_event *e, struct feedback_id *id, char *why,
                          size_t whylen)
{
    const char *cand[FEEDBACK_TOKENS_MAX + 2];
    size_t n = 0;
    if (e->token) {
        cand[n++] = e->token;
    }
    for (size_t i = 0; i < rep->n_tokens && n < FEEDBACK_TOKENS_MAX + 1; i++) {
        cand[n++] = rep->tokens[i].token;
    }
    char mid[FEEDBACK_LOCAL_MAX + 2];
    if (e->message_id && strchr("bBuU", e->message_id[0]) && e->message_id[0] &&
        e->message_id[1] == '-') { /* render.c: "u-TOKEN.HEX.TIME@domain" */
        size_t k = strcspn(e->message_id, ".@");
        if (k < sizeof mid) {
            memcpy(mid, e->message_id, k);
            mid[k] = '\0';
            cand[n++] = mid;
        }
    }
    why[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char w[96];
        if (feedback_token_parse(s->secret, s->secret_len, cand[i], id, w, sizeof w) == 0) {
            return 0;
        }
        if (!why[0]) {
            snprintf(why, whylen, "%s: %.60s", w, cand[i]);
        }
    }
    if (!why[0]) {
        snprintf(why, whylen, "no ringmail token in the message (no b-/u- address or Message-ID)");
    }
    return -1;
}

/* store_same_address - a and b the same mailbox (case-insensitive; the
 * report's may carry "rfc822;" or <>) */
static int store_same_address(const char *report, const char *row)
{
    const char *p = report;
    const char *semi = strchr(p, ';');
    if (semi && semi - p < 12) {
        p = semi + 1;
    }
    while (*p == ' ' || *p == '<') {
        p++;
    }
    size_t n = strlen(p);
    while (n > 0 && (p[n - 1] == '>' || p[n - 1] == ' ')) {
        n--;
    }
    return n == strlen(row) && strncasecmp(p, row, n) == 0;
}

/* store_recipient - the row id names in its campaign: its address and ISP
 * into address/isp (isp "" when it has no delivery): 1; 0 when there is no
 * such row (why in reason); -1 on a database error */
static int store_recipient(struct feedback_store *s, const struct feedback_id *id, char *address,
                           size_t addrlen, char *isp, size_t isplen, char *reason, size_t reasonlen,
                           char *err, size_t errlen)
{
    char cb[24], rb[24];
    snprintf(cb, sizeof cb, "%" PRIu64, id->campaign);
    snprintf(rb, sizeof rb, "%" PRIu64, id->recipient);
    const char *v[2] = {rb, cb};
    PGresult *r = store_exec(s, ST_RECIPIENT, v, NULL, NULL, PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    int found = pq.PQntuples(r) == 1;
    if (found) {
        snprintf(address, addrlen, "%s", pq.PQgetvalue(r, 0, 0));
        snprintf(isp, isplen, "%s", pq.PQgetisnull(r, 0, 1) ? "" : pq.PQgetvalue(r, 0, 1));
    } else {
        snprintf(reason, reasonlen,
                 "the token names recipient %" PRIu64 " of campaign %" PRIu64
                 ", which does not exist",
                 id->recipient, id->campaign);
    }
    pq.PQclear(r);
    return found;
}

/* store_resolve - who the event is about: e.campaign/recipient/address/isp;
 * an event that cannot be matched becomes unmatched with the reason.
 * -1 on a database error. */
static int store_resolve(struct feedback_store *s, const struct feedback_report *rep,
                         const struct feedback_event *pe, struct store_event *e, char *err,
                         size_t errlen)
{
    struct feedback_id id;
    char why[200];
    if (store_token_id(s, rep, pe, &id, why, sizeof why) < 0) {
        snprintf(e->reason, sizeof e->reason, "%s", why);
        return 0;
    }
    if (id.campaign == 0) { /* list mode: no row; the report's address */
        e->recipient = (int64_t)id.recipient;
        store_text(pe->recipient, e->address, sizeof e->address);
        if (e->address[0]) {
            const char *p = strchr(e->address, ';');
            if (p && p - e->address < 12) {
                memmove(e->address, p + 1, strlen(p + 1) + 1);
            }
            size_t i = 0, j = 0;
            for (; e->address[i]; i++) {
                if (e->address[i] != ' ' && e->address[i] != '<' && e->address[i] != '>') {
                    e->address[j++] = (char)tolower((unsigned char)e->address[i]);
                }
            }
            e->address[j] = '\0';
        }
        return 1;
    }
    char address[320];
    int found = store_recipient(s, &id, address, sizeof address, e->isp, sizeof e->isp, e->reason,
                                sizeof e->reason, err, errlen);
    if (found <= 0) {
        return found;
    }
    if (pe->recipient && !store_same_address(pe->recipient, address) &&
        !(pe->original_recipient && store_same_address(pe->original_recipient, address))) {
        char t[200];
        snprintf(e->reason, sizeof e->reason,
                 "the report is about %s, the token names recipient %" PRIu64
                 " of campaign %" PRIu64 " (%s)",
                 store_text(pe->recipient, t, sizeof t), id.recipient, id.campaign, address);
        e->isp[0] = '\0';
        return 0;
    }
    e->campaign = (int64_t)id.campaign;
    e->recipient = (int64_t)id.recipient;
    snprintf(e->address, sizeof e->address, "%s", address);
    return 1;
}

/* store_soft_limit - the address reached soft_bounce_limit with this one */
static int store_soft_limit(struct feedback_store *s, struct store_event *e, char *err,
                            size_t errlen)
{
    char wb[24];
    snprintf(wb, sizeof wb, "%" PRIu64, s->soft_bounce_window_ms);
    const char *v[2] = {e->address, wb};
    PGresult *r = store_exec(s, ST_SOFT_COUNT, v, NULL, NULL, PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    long long n = atoll(pq.PQgetvalue(r, 0, 0)) + 1;
    pq.PQclear(r);
    if (n >= (long long)s->soft_bounce_limit) {
        char span[32];
        uint64_t ms = s->soft_bounce_window_ms;
        if (ms % 86400000 == 0) {
            snprintf(span, sizeof span, "%" PRIu64 "d", ms / 86400000);
        } else if (ms % 3600000 == 0) {
            snprintf(span, sizeof span, "%" PRIu64 "h", ms / 3600000);
        } else {
            snprintf(span, sizeof span, "%" PRIu64 "s", ms / 1000);
        }
        snprintf(e->suppress_reason, sizeof e->suppress_reason,
                 "%lld soft bounces within %s (last: %.300s)", n, span,
                 e->diagnostic ? e->diagnostic
                 : e->status   ? e->status
                               : "no text");
        e->suppress = "soft-bounces";
    }
    return 0;
}

/* store_guard - the complaint guard for e's campaign and ISP; 1 when it
 * placed a hold (why in o->held_why) */
static int store_guard(struct feedback_store *s, const struct store_event *e,
                       struct feedback_store_outcome *o, char *err, size_t errlen)
{
    if (e->campaign == 0 || !e->isp[0]) {
        return 0;
    }
    char cb[24], wb[24];
    snprintf(cb, sizeof cb, "%" PRId64, e->campaign);
    snprintf(wb, sizeof wb, "%" PRIu64, s->complaint_window_ms);
    const char *v[3] = {cb, e->isp, wb};
    PGresult *r = store_exec(s, ST_GUARD_COUNT, v, NULL, NULL, PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    long long delivered = atoll(pq.PQgetvalue(r, 0, 0));
    long long complaints = atoll(pq.PQgetvalue(r, 0, 1)) + 1; /* this one is not written yet */
    pq.PQclear(r);
    if (delivered < (long long)s->complaint_min_sample ||
        (double)complaints <= s->complaint_pause * (double)delivered) {
        return 0;
    }
    char reason[160];
    uint64_t h = s->complaint_window_ms / 3600000;
    snprintf(reason, sizeof reason,
             "%lld complaints over %lld delivered in %" PRIu64 "%s (%.2f%% > %.2f%%)", complaints,
             delivered, h ? h : s->complaint_window_ms / 1000, h ? "h" : "s",
             100.0 * (double)complaints / (double)delivered, 100.0 * s->complaint_pause);
    const char *hv[3] = {cb, e->isp, reason};
    r = store_exec(s, ST_HOLD, hv, NULL, NULL, PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    int placed = pq.PQntuples(r) == 1;
    pq.PQclear(r);
    if (placed && o) {
        o->held++;
        snprintf(o->held_why, sizeof o->held_why,
                 "campaign %" PRId64 ", isp %s: %s: sending to %s held; `ringmail campaign "
                 "resume %" PRId64 " --isp %s` lifts it",
                 e->campaign, e->isp, reason, e->isp, e->campaign, e->isp);
    }
    return placed;
}

static void store_count(struct feedback_store_outcome *o, const struct store_event *e)
{
    if (!o) {
        return;
    }
    o->events++;
    const char *k = e->kind;
    if (strcmp(k, "bounce") == 0) {
        if (e->bounce && e->bounce->kind == BOUNCE_SOFT) {
            o->soft_bounces++;
        } else {
            o->bounces++;
        }
    } else if (strcmp(k, "delay") == 0) {
        o->delays++;
    } else if (strcmp(k, "complaint") == 0) {
        o->complaints++;
    } else if (strcmp(k, "unsubscribe") == 0) {
        o->unsubscribes++;
    } else if (strcmp(k, "auto_reply") == 0) {
        o->auto_replies++;
    } else {
        o->unmatched++;
    }
}

/* store_write - the event's rows: suppression, the recipient's feedback,
 * the event; a complaint then runs the guard */
static int store_write(struct feedback_store *s, struct store_event *e,
                       const struct feedback_msg *m, const char *rcpt,
                       struct feedback_store_outcome *o, char *err, size_t errlen)
{
    int matched = e->recipient != 0;
    if (matched && e->suppress && e->address[0]) {
        char cb[24];
        snprintf(cb, sizeof cb, "%" PRId64, e->campaign);
        const char *v[4] = {e->address, e->suppress_reason[0] ? e->suppress_reason : e->reason, cb,
                            e->suppress};
        PGresult *r = store_exec(s, ST_SUPPRESS, v, NULL, NULL, PGRES_TUPLES_OK, err, errlen);
        if (!r) {
            return -1;
        }
        if (pq.PQntuples(r) == 1 && o) {
            o->suppressed++;
        }
        pq.PQclear(r);
    }
    if (matched && e->campaign && e->feedback) {
        char rb[24];
        snprintf(rb, sizeof rb, "%" PRId64, e->recipient);
        const char *v[2] = {rb, e->feedback};
        PGresult *r = store_exec(s, ST_FEEDBACK, v, NULL, NULL, PGRES_COMMAND_OK, err, errlen);
        if (!r) {
            return -1;
        }
        pq.PQclear(r);
    }
    if (strcmp(e->kind, "complaint") == 0 && matched && store_guard(s, e, o, err, errlen) < 0) {
        return -1;
    }
    char cb[24], rb[24], from[320], to[320], cl[64], rule[BOUNCE_PATTERN_MAX + 16];
    snprintf(cb, sizeof cb, "%" PRId64, e->campaign);
    snprintf(rb, sizeof rb, "%" PRId64, e->recipient);
    const struct bounce_result *b = e->bounce;
    if (b) {
        snprintf(rule, sizeof rule, "%s: %s", b->source, b->rule ? b->rule : "");
    }
    size_t rawlen =
        m && m->raw ? (m->len < FEEDBACK_STORE_RAW_MAX ? m->len : FEEDBACK_STORE_RAW_MAX) : 0;
    const char *v[21] = {
        e->kind,
        e->source,
        matched ? cb : NULL,
        matched ? rb : NULL,
        e->address[0] ? e->address : NULL,
        e->isp[0] ? e->isp : NULL,
        b ? bounce_category_name(b->category) : NULL,
        b ? bounce_kind_name(b->kind) : NULL,
        b ? rule : NULL,
        e->status,
        e->diagnostic,
        e->reason[0] ? e->reason : NULL,
        matched && e->suppress ? "true" : "false",
        e->reporting_mta,
        e->remote_mta,
        m ? store_text(m->client, cl, sizeof cl) : NULL,
        m ? store_text(m->mail_from, from, sizeof from) : NULL,
        store_text(rcpt, to, sizeof to),
        e->message_id,
        m && m->raw ? m->raw : NULL,
        s->has_digest ? (const char *)s->digest : NULL,
    };
    int lengths[21] = {0}, formats[21] = {0};
    lengths[19] = (int)rawlen;
    formats[19] = 1;
    lengths[20] = CRYPTO_SHA256_LEN;
    formats[20] = 1;
    PGresult *r = store_exec(s, ST_EVENT, v, lengths, formats, PGRES_COMMAND_OK, err, errlen);
    if (!r) {
        return -1;
    }
    pq.PQclear(r);
    store_count(o, e);
    return 0;
}

/* store_event_from - one parsed event resolved and decided */
static int store_event_from(struct feedback_store *s, const struct feedback_report *rep,
                            const struct feedback_event *pe, const struct feedback_msg *m,
                            const char *rcpt, struct feedback_store_outcome *o, char *err,
                            size_t errlen)
{
    struct store_event e;
    memset(&e, 0, sizeof e);
    e.source = feedback_source_name(pe->source)[0] ? feedback_source_name(pe->source) : NULL;
    e.status = pe->status;
    e.diagnostic = pe->diagnostic;
    e.reporting_mta = pe->reporting_mta;
    e.remote_mta = pe->remote_mta;
    e.message_id = pe->message_id;
    struct bounce_result b;
    int matched = 0;
    if (pe->kind != FEEDBACK_UNMATCHED) {
        matched = store_resolve(s, rep, pe, &e, err, errlen);
        if (matched < 0) {
            return -1;
        }
    }
    if (!matched) {
        e.kind = "unmatched";
        if (pe->kind == FEEDBACK_UNMATCHED) {
            snprintf(e.reason, sizeof e.reason, "%s", pe->reason ? pe->reason : "not a report");
        }
        e.recipient = e.campaign = 0;
        return store_write(s, &e, m, rcpt, o, err, errlen);
    }
    switch (pe->kind) {
    case FEEDBACK_BOUNCE:
    case FEEDBACK_DELAY: {
        const char *text;
        int code = store_code(pe->diagnostic, pe->status, &text);
        bounce_classify(&s->rules, code, pe->status, text, &b);
        e.bounce = &b;
        if (pe->kind == FEEDBACK_DELAY) {
            e.kind = "delay";
            break;
        }
        e.kind = "bounce";
        if (b.kind == BOUNCE_HARD) {
            e.feedback = "bounce";
            if (bounce_suppresses(&b)) {
                e.suppress = "bounce";
                snprintf(e.suppress_reason, sizeof e.suppress_reason, "%s bounce: %.300s",
                         bounce_category_name(b.category),
                         pe->diagnostic ? pe->diagnostic
                         : pe->status   ? pe->status
                                        : "");
            }
        } else if (bounce_soft_counts(&b)) {
            e.feedback = "soft-bounce";
            if (e.address[0] && store_soft_limit(s, &e, err, errlen) < 0) {
                return -1;
            }
        }
        break;
    }
    case FEEDBACK_COMPLAINT:
        e.kind = "complaint";
        e.feedback = "complaint";
        e.suppress = "complaint";
        snprintf(e.suppress_reason, sizeof e.suppress_reason, "complaint (%s)",
                 pe->feedback_type ? pe->feedback_type : "abuse");
        break;
    case FEEDBACK_AUTO_REPLY:
        e.kind = "auto_reply";
        snprintf(e.reason, sizeof e.reason, "%s", pe->reason ? pe->reason : "auto-reply");
        break;
    default:
        e.kind = "unmatched";
        break;
    }
    if (e.campaign == 0 && e.recipient && !e.address[0] && e.suppress) {
        snprintf(e.reason, sizeof e.reason,
                 "list mode (line %" PRId64 " of --recipients) and the report names no address: "
                 "nothing to suppress",
                 e.recipient);
    }
    return store_write(s, &e, m, rcpt, o, err, errlen);
}

/* store_unsubscribe_id - the unsubscribe of id (a u- token with a good
 * MAC) written: 1; 0 when its recipient does not exist (nothing written
 * unless unmatched_too, then an unmatched row); -1 on a database error */
static int store_unsubscribe_id(struct feedback_store *s, const struct feedback_id *id,
                                const char *source, const struct feedback_msg *m, const char *rcpt,
                                int unmatched_too, struct feedback_store_outcome *o, char *err,
                                size_t errlen)
{
    struct store_event e;
    memset(&e, 0, sizeof e);
    e.kind = "unsubscribe";
    e.source = source;
    e.recipient = (int64_t)id->recipient;
    if (id->campaign == 0) {
        snprintf(e.reason, sizeof e.reason,
                 "list mode: the address is line %" PRIu64
                 " of the --recipients file; nothing to suppress here",
                 id->recipient);
        return store_write(s, &e, m, rcpt, o, err, errlen) < 0 ? -1 : 1;
    }
    int found = store_recipient(s, id, e.address, sizeof e.address, e.isp, sizeof e.isp, e.reason,
                                sizeof e.reason, err, errlen);
    if (found < 0) {
        return -1;
    }
    if (!found) {
        if (!unmatched_too) {
            return 0;
        }
        e.kind = "unmatched";
        e.recipient = 0;
        return store_write(s, &e, m, rcpt, o, err, errlen) < 0 ? -1 : 0;
    }
    e.campaign = (int64_t)id->campaign;
    e.feedback = "unsubscribe";
    e.suppress = "unsubscribe";
    snprintf(e.suppress_reason, sizeof e.suppress_reason, "unsubscribed (%s)", source);
    return store_write(s, &e, m, rcpt, o, err, errlen) < 0 ? -1 : 1;
}

/* store_mailto - mail to u-TOKEN@return_path is an unsubscribe: 1 when
 * rcpt is such an address (its row written, unmatched when the token is
 * not good), 0 when it is not one, -1 on a database error */
static int store_mailto(struct feedback_store *s, const struct feedback_msg *m, const char *rcpt,
                        struct feedback_store_outcome *o, char *err, size_t errlen)
{
    if (!rcpt || (rcpt[0] != 'u' && rcpt[0] != 'U') || rcpt[1] != '-') {
        return 0;
    }
    struct feedback_id id = {0};
    char why[96];
    if (feedback_token_parse(s->secret, s->secret_len, rcpt, &id, why, sizeof why) < 0) {
        struct store_event e;
        memset(&e, 0, sizeof e);
        e.kind = "unmatched";
        e.source = "mailto";
        snprintf(e.reason, sizeof e.reason, "%s", why);
        return store_write(s, &e, m, rcpt, o, err, errlen) < 0 ? -1 : 1;
    }
    return store_unsubscribe_id(s, &id, "mailto", m, rcpt, 1, o, err, errlen) < 0 ? -1 : 1;
}

/* store_rollback - end the failed transaction; a connection that is not
 * OK any more is dropped, to be made again by the next call */
static void store_rollback(struct feedback_store *s)
{
    char ignore[256];
    if (pq.PQstatus(s->c) != CONNECTION_OK ||
        db_exec(s->c, "ROLLBACK", ignore, sizeof ignore) < 0) {
        store_disconnect(s);
    }
}

/* store_seen - this message to rcpt was recorded before: 1; 0; -1 on a
 * database error. Leaves its digest in s for the events to carry. */
static int store_seen(struct feedback_store *s, const struct feedback_msg *m, const char *rcpt,
                      char *err, size_t errlen)
{
    struct crypto_sha256 h;
    crypto_sha256_init(&h);
    crypto_sha256_update(&h, rcpt ? rcpt : "", rcpt ? strlen(rcpt) + 1 : 1);
    crypto_sha256_update(&h, m->raw ? m->raw : "", m->raw ? m->len : 0);
    crypto_sha256_final(&h, s->digest);
    s->has_digest = 1;
    const char *v[1] = {(const char *)s->digest};
    int lengths[1] = {CRYPTO_SHA256_LEN}, formats[1] = {1};
    PGresult *r = store_exec(s, ST_SEEN, v, lengths, formats, PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    int seen = pq.PQntuples(r) > 0;
    pq.PQclear(r);
    return seen;
}

/* store_message - one message for one of its recipients */
static int store_message(struct feedback_store *s, const struct feedback_msg *m, const char *rcpt,
                         struct feedback_store_outcome *o, char *err, size_t errlen)
{
    int seen = store_seen(s, m, rcpt, err, errlen);
    if (seen != 0) {
        if (seen > 0 && o) {
            o->duplicates++;
        }
        return seen < 0 ? -1 : 0;
    }
    int u = store_mailto(s, m, rcpt, o, err, errlen);
    if (u != 0) {
        return u < 0 ? -1 : 0;
    }
    struct feedback_report rep;
    feedback_parse(m->raw ? m->raw : "", m->raw ? m->len : 0, rcpt, &rep);
    int rc = 0;
    for (size_t i = 0; i < rep.n_events && rc == 0; i++) {
        rc = store_event_from(s, &rep, &rep.events[i], m, rcpt, o, err, errlen);
    }
    feedback_report_free(&rep);
    return rc;
}

int feedback_store_messages(struct feedback_store *s, const struct feedback_msg *msgs, size_t n,
                            struct feedback_store_outcome *out, char *err, size_t errlen)
{
    struct feedback_store_outcome o;
    memset(&o, 0, sizeof o);
    if (store_connect(s, err, errlen) < 0) {
        return -1;
    }
    if (db_exec(s->c, "BEGIN", err, errlen) < 0) {
        store_disconnect(s);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const struct feedback_msg *m = &msgs[i];
        for (size_t k = 0; k < (m->nrcpt ? m->nrcpt : 1); k++) {
            const char *rcpt = m->nrcpt ? m->rcpts[k] : NULL;
            int rc = store_message(s, m, rcpt, &o, err, errlen);
            s->has_digest = 0;
            if (rc < 0) {
                store_rollback(s);
                return -1;
            }
        }
    }
    if (db_exec(s->c, "COMMIT", err, errlen) < 0) {
        store_rollback(s);
        return -1;
    }
    if (out) {
        *out = o;
    }
    return 0;
}

int feedback_store_unsubscribe(struct feedback_store *s, const char *token,
                               enum feedback_store_source src, const char *client, char *err,
                               size_t errlen)
{
    char local[FEEDBACK_LOCAL_MAX + 4];
    if (strlen(token) > FEEDBACK_LOCAL_MAX) {
        snprintf(err, errlen, "not a ringmail token");
        return 0;
    }
    snprintf(local, sizeof local, "%s%s",
             (token[0] == 'u' || token[0] == 'U') && token[1] == '-' ? "" : "u-", token);
    struct feedback_id id = {0};
    if (feedback_token_parse(s->secret, s->secret_len, local, &id, err, errlen) < 0) {
        return 0;
    }
    if (store_connect(s, err, errlen) < 0) {
        return -1;
    }
    if (db_exec(s->c, "BEGIN", err, errlen) < 0) {
        store_disconnect(s);
        return -1;
    }
    struct feedback_msg m = {.client = client};
    int rc = store_unsubscribe_id(s, &id, src == FEEDBACK_STORE_HTTP ? "http" : "mailto", &m, NULL,
                                  0, NULL, err, errlen);
    if (rc < 0) {
        store_rollback(s);
        return -1;
    }
    if (rc == 0) {
        snprintf(err, errlen,
                 "the token names recipient %" PRIu64 " of campaign %" PRIu64
                 ", which does not exist",
                 id.recipient, id.campaign);
        store_rollback(s);
        return 0;
    }
    if (db_exec(s->c, "COMMIT", err, errlen) < 0) {
        store_rollback(s);
        return -1;
    }
    return 1;
}
