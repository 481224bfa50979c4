/*
 * report_data - the report document: one SQL statement, one snapshot
 *
 * PostgreSQL builds the whole report as one JSON document (one statement,
 * json_build_object keeps the key order); the printers (report.c: text and
 * CSV, report_html.c: HTML; JSON is the document itself) only walk it. What
 * came back after the 250 (ringmail.feedback_event, ringmail.isp_hold) is
 * in the same statement, so it agrees with the delivery rows it is counted
 * against (README: the feedback loop's counts, one definition each).
 *
 * Time is UTC and per minute: the minutes run from the campaign's first
 * attempt to its last, every one of them, so a stall shows as minutes of
 * zeros instead of vanishing from the table.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "campaign/campaign_cmd.h"
#include "campaign/db.h"
#include "campaign/report_int.h"

const struct report_section report_sections[] = {
    {"isps", "per ISP (attempts by outcome)", 1, 1},
    {"reply_codes", "reply codes (attempts)", 2, 1},
    {"deferral_reasons", "deferrals by ISP and reason (the last reply of each)", 2, 1},
    {"failure_reasons", "rejections, failures and expiries by ISP and reason (the last reply)", 2,
     1},
    {"tls_versions", "TLS versions (attempts that reached a server)", 1, 1},
    {"tls_ciphers", "TLS ciphers (attempts that reached a server)", 1, 1},
    {"tls_posture",
     "TLS posture (attempts that reached a server; the policy as recorded, or for attempts "
     "before schema 6 what the outcome implies)",
     1, 1},
    {"tls_policies",
     "destination TLS policy (attempts and connections by policy, mode and RFC 8460 result; "
     "'met' when none)",
     3, 1},
    {"throughput", "per minute (attempts by outcome, UTC, every minute from first to last)", 1, 1},
    {"queue_age",
     "queue age (recipients: from the campaign's first attempt to their final attempt, or to now "
     "while waiting)",
     1, 1},
    {"bounces_synchronous", "bounces by category, synchronous (final SMTP rejections and expiries)",
     1, 1},
    {"bounces_asynchronous", "bounces by category, asynchronous (bounce reports)", 1, 1},
    {"complaint_rates", "complaint rate per ISP (complaints / accepted deliveries)", 1, 1},
    {"holds", "ISPs held by the complaint guard", 1, 1},
    /* chart data: in the JSON and the HTML page's charts, not tables */
    {"isp_minutes", "per ISP and minute", 2, 0},
    {"deferral_minutes", "deferrals per ISP, reason and minute", 3, 0},
    {"feedback_hours", "feedback per hour", 1, 0},
};

const int report_nsections = (int)(sizeof report_sections / sizeof report_sections[0]);

/* The outcomes an attempt ends in, counted in every per-ISP and per-minute table. */
static const char *const report_outcomes[] = {"accepted", "deferred", "rejected", "failed",
                                              "expired"};
#define REPORT_NOUTCOMES (int)(sizeof report_outcomes / sizeof report_outcomes[0])

/* An attempt reached a server when it has a peer, a TLS version or a reply. */
#define REPORT_CONNECTED                                                                           \
    "(coalesce(peer, '') <> '' OR coalesce(tls_version, '') <> '' OR code IS NOT NULL)"

/* A synchronous bounce: a delivery row's final rejection or expiry, hard or
 * soft by its classifier column; a row written before the classifier filled
 * it counts a rejection hard and an expiry soft (message-expired). */
#define REPORT_SYNC_KIND                                                                           \
    "coalesce(bounce, CASE WHEN outcome = 'rejected' THEN 'hard' ELSE 'soft' END)"

/* An asynchronous event: from returned mail. A final synchronous soft
 * bounce is also an event (source smtp, written by the results writer for
 * the soft-bounce limit): it is counted from its delivery row instead. */
#define REPORT_ASYNC "coalesce(source, '') <> 'smtp'"

#define REPORT_ISP "coalesce(nullif(isp, ''), 'unknown')"
#define REPORT_MINUTE(col) "to_char(" col ", 'YYYY-MM-DD\"T\"HH24:MI\"Z\"')"

/* The reasons TLS refused a delivery (README: outcome reasons). */
#define REPORT_TLS_REFUSED                                                                         \
    "('tls_not_offered', 'starttls_refused', 'tls_handshake_failed', 'tls_verify_failed',"         \
    " 'starttls_injection', 'timeout_tls')"

/* report_outcome_counts - ", count(*) FILTER (WHERE outcome = 'accepted') AS accepted, ..." */
static void report_outcome_counts(buf_t *b)
{
    for (int i = 0; i < REPORT_NOUTCOMES; i++) {
        buf_appendf(b, ", count(*) FILTER (WHERE outcome = '%s') AS %s", report_outcomes[i],
                    report_outcomes[i]);
    }
}

/* report_outcome_fields - ", 'accepted', coalesce(accepted, 0), ..." (json_build_object) */
static void report_outcome_fields(buf_t *b)
{
    for (int i = 0; i < REPORT_NOUTCOMES; i++) {
        buf_appendf(b, ", '%s', coalesce(%s, 0)", report_outcomes[i], report_outcomes[i]);
    }
}

/* report_states_sql - recipients by state: the states of campaign_states
 * and 'expired' (a deferral past max_age) whether or not the list has it. */
static void report_states_sql(buf_t *b)
{
    int expired = 0;
    buf_append_str(b, "'recipients', (SELECT json_build_object('total', count(*)");
    for (int i = 0; i < CAMPAIGN_NSTATES; i++) {
        buf_appendf(b, ", '%s', count(*) FILTER (WHERE state = '%s')", campaign_states[i],
                    campaign_states[i]);
        expired |= strcmp(campaign_states[i], "expired") == 0;
    }
    if (!expired) {
        buf_append_str(b, ", 'expired', count(*) FILTER (WHERE state = 'expired')");
    }
    /* The state as every command says it: a fresh row inside a node's
     * claim range is claimed (DB_STATE_SQL). */
    buf_append_str(b,
                   ") FROM (SELECT " DB_STATE_SQL("q") " AS state FROM ringmail.recipient q"
                                                       " WHERE q.campaign_id = $1::bigint) AS s),");
}

/* report_reasons_sql - section name: per ISP and reason (label, an SQL
 * expression), how many attempts matched where and the last reply. */
static void report_reasons_sql(buf_t *b, const char *name, const char *label, const char *where,
                               const char *count)
{
    buf_appendf(b,
                "'%s', (SELECT coalesce(json_agg(json_build_object('isp', isp, 'reason', reason,"
                " '%s', n, 'last_reply', last_reply) ORDER BY n DESC, isp, reason), '[]')"
                " FROM (SELECT " REPORT_ISP " AS isp, %s AS reason, count(*) AS n,"
                " (array_agg(left(reply, 200) ORDER BY at DESC, id DESC))[1] AS last_reply"
                " FROM d WHERE %s GROUP BY 1, 2) AS x),",
                name, count, label, where);
}

/* The label of a deferral or failure: its reason, code and enhanced code. */
#define REPORT_REASON                                                                              \
    "concat_ws(' ', coalesce(nullif(reason, ''), 'unknown'), code::text, nullif(enhanced, ''))"

/* report_attempts_sql - per ISP, reply codes, reasons, TLS */
static void report_attempts_sql(buf_t *b)
{
    buf_append_str(b, "'isps', (SELECT coalesce(json_agg(json_build_object('isp', isp, 'attempts',"
                      " attempts");
    report_outcome_fields(b);
    buf_append_str(b, ") ORDER BY attempts DESC, isp), '[]') FROM (SELECT " REPORT_ISP " AS isp,"
                      " count(*) AS attempts");
    report_outcome_counts(b);
    buf_append_str(
        b, " FROM d GROUP BY 1) AS x),"
           "'reply_codes', (SELECT coalesce(json_agg(json_build_object('code', code, 'enhanced',"
           " enhanced, 'count', n) ORDER BY n DESC, code, enhanced), '[]')"
           " FROM (SELECT code, nullif(enhanced, '') AS enhanced, count(*) AS n FROM d"
           " GROUP BY 1, 2) AS x),");
    report_reasons_sql(b, "deferral_reasons", REPORT_REASON, "outcome = 'deferred'", "deferred");
    report_reasons_sql(b, "failure_reasons", "outcome || ' ' || " REPORT_REASON,
                       "outcome IN ('rejected', 'failed', 'expired')", "attempts");
    buf_append_str(
        b,
        "'tls_versions', (SELECT coalesce(json_agg(json_build_object('version', v, 'count', n)"
        " ORDER BY n DESC, v), '[]') FROM (SELECT coalesce(nullif(tls_version, ''), 'none') AS v,"
        " count(*) AS n FROM d WHERE " REPORT_CONNECTED " GROUP BY 1) AS x),"
        "'tls_ciphers', (SELECT coalesce(json_agg(json_build_object('cipher', v, 'count', n)"
        " ORDER BY n DESC, v), '[]') FROM (SELECT coalesce(nullif(tls_cipher, ''), 'none') AS v,"
        " count(*) AS n FROM d WHERE " REPORT_CONNECTED " GROUP BY 1) AS x),"
        /* The policy as recorded (schema 6); for older rows what an
         * outcome implies of it. */
        "'tls_posture', (SELECT coalesce(json_agg(json_build_object('posture', p, 'policy', pol,"
        " 'attempts', n) ORDER BY n DESC, p), '[]') FROM (SELECT p, pol, count(*) AS n FROM"
        " (SELECT CASE WHEN reason IN " REPORT_TLS_REFUSED " THEN 'deferred: ' || reason"
        "  WHEN coalesce(tls_version, '') <> '' AND tls_verify = 'ok' THEN 'TLS, certificate"
        " verified'"
        "  WHEN coalesce(tls_version, '') <> '' THEN 'TLS, certificate not verified'"
        "  ELSE 'plaintext' END AS p,"
        " CASE WHEN tls_policy IS NOT NULL THEN tls_policy || ' ' || tls_policy_mode"
        "  WHEN reason = 'tls_verify_failed' THEN 'verify'"
        "  WHEN reason IN ('tls_not_offered', 'starttls_refused', 'tls_handshake_failed')"
        "  THEN 'required or verify'"
        "  WHEN reason IN " REPORT_TLS_REFUSED " THEN 'any'"
        "  WHEN coalesce(tls_version, '') <> '' AND tls_verify = 'ok' THEN 'any'"
        "  WHEN coalesce(tls_version, '') <> '' THEN 'required or opportunistic'"
        "  ELSE 'opportunistic or none' END AS pol"
        " FROM d WHERE " REPORT_CONNECTED ") AS y GROUP BY 1, 2) AS x),"
        "'tls_policies', (SELECT coalesce(json_agg(json_build_object('policy', tls_policy,"
        " 'mode', tls_policy_mode, 'result', res, 'attempts', n, 'connections', k)"
        " ORDER BY tls_policy, tls_policy_mode, res), '[]') FROM (SELECT tls_policy,"
        " tls_policy_mode, coalesce(tls_result, 'met') AS res, count(*) AS n,"
        " count(*) FILTER (WHERE conn_first) AS k FROM d WHERE tls_policy IS NOT NULL"
        " GROUP BY 1, 2, 3) AS x),"
        /* Resumption is a share of TLS handshakes: the first attempt of each
         * connection (conn_first, schema 5). Rows written before it have
         * conn_first NULL: then the share of attempts, said so. */
        "'resumption', (SELECT json_build_object('resumed', r, 'full', fu, 'rate',"
        " CASE WHEN r + fu > 0 THEN round(r::numeric / (r + fu), 4) END,"
        " 'counted', CASE WHEN k.h THEN 'handshakes' ELSE 'attempts' END)"
        " FROM (SELECT coalesce(bool_or(conn_first IS NOT NULL), false) AS h FROM d) AS k,"
        " LATERAL (SELECT count(*) FILTER (WHERE tls_resumed) AS r,"
        " count(*) FILTER (WHERE NOT tls_resumed) AS fu FROM d"
        " WHERE tls_resumed IS NOT NULL AND (NOT k.h OR conn_first)) AS x),");
}

/* report_time_sql - per minute (all ISPs, then per ISP), deferral reasons
 * per minute, queue age */
static void report_time_sql(buf_t *b)
{
    buf_append_str(b, "'throughput', (SELECT coalesce(json_agg(json_build_object('minute', "
                      "" REPORT_MINUTE("m") ", 'attempts', coalesce(attempts, 0)");
    report_outcome_fields(b);
    buf_append_str(b, ", 'accepted_per_s', round(coalesce(accepted, 0) / 60.0, 2)) ORDER BY m),"
                      " '[]') FROM mins LEFT JOIN (SELECT date_trunc('minute', at) AS m,"
                      " count(*) AS attempts");
    report_outcome_counts(b);
    buf_append_str(b, " FROM d GROUP BY 1) AS x USING (m)),"
                      "'isp_minutes', (SELECT coalesce(json_agg(json_build_object('minute', "
                      "" REPORT_MINUTE("m") ", 'isp', isp");
    report_outcome_fields(b);
    buf_append_str(b, ") ORDER BY isp, m), '[]') FROM mins CROSS JOIN (SELECT DISTINCT " REPORT_ISP
                      " AS isp FROM d) AS i LEFT JOIN (SELECT date_trunc('minute', at) AS m, "
                      "" REPORT_ISP " AS isp");
    report_outcome_counts(b);
    buf_append_str(
        b,
        " FROM d GROUP BY 1, 2) AS x USING (m, isp)),"
        "'deferral_minutes', (SELECT coalesce(json_agg(json_build_object('minute', " REPORT_MINUTE(
            "m") ", 'isp', isp, 'reason', reason, 'deferred', n) ORDER BY isp, reason, m), '[]')"
                 " FROM (SELECT date_trunc('minute', at) AS m, " REPORT_ISP
                 " AS isp, " REPORT_REASON
                 " AS reason, count(*) AS n FROM d WHERE outcome = 'deferred' GROUP BY 1, 2, 3) AS "
                 "x),"
                 "'queue_age', (SELECT json_agg(json_build_object('waited', label, 'final',"
                 " (SELECT count(*) FROM ages WHERE k = 'final' AND s >= lo AND (hi IS NULL OR s < "
                 "hi)),"
                 " 'waiting', (SELECT count(*) FROM ages WHERE k = 'waiting' AND s >= lo"
                 " AND (hi IS NULL OR s < hi))) ORDER BY lo)"
                 " FROM (VALUES ('< 1 min', 0, 60), ('1-5 min', 60, 300), ('5-15 min', 300, 900),"
                 " ('15-60 min', 900, 3600), ('1-6 h', 3600, 21600), ('6-24 h', 21600, 86400),"
                 " ('>= 24 h', 86400, NULL)) AS v (label, lo, hi)),"
                 "'queue_age_summary', (SELECT json_build_object("
                 " 'final', count(*) FILTER (WHERE k = 'final'),"
                 " 'median_s', round((percentile_cont(0.5) WITHIN GROUP (ORDER BY s) FILTER"
                 " (WHERE k = 'final'))::numeric, 1),"
                 " 'p90_s', round((percentile_cont(0.9) WITHIN GROUP (ORDER BY s) FILTER"
                 " (WHERE k = 'final'))::numeric, 1),"
                 " 'max_s', round((max(s) FILTER (WHERE k = 'final'))::numeric, 1),"
                 " 'waiting', count(*) FILTER (WHERE k = 'waiting'),"
                 " 'waiting_s', round((max(s) FILTER (WHERE k = 'waiting'))::numeric, 1)) FROM "
                 "ages),");
}

/* report_feedback_sql - the feedback sections (README: the feedback
 * loop's counts): bounces by category, synchronous and asynchronous; the
 * events by kind; complaint rates per ISP; delivery to unsubscribe; holds;
 * bounces, complaints and unsubscribes per hour */
static void report_feedback_sql(buf_t *b)
{
    buf_append_str(
        b,
        "'bounces_synchronous', (SELECT coalesce(json_agg(json_build_object('category', c,"
        " 'bounces', h, 'soft_bounces', s) ORDER BY h + s DESC, c), '[]')"
        " FROM (SELECT coalesce(nullif(category, ''), 'unclassified') AS c,"
        " count(*) FILTER (WHERE " REPORT_SYNC_KIND " = 'hard') AS h,"
        " count(*) FILTER (WHERE " REPORT_SYNC_KIND " = 'soft') AS s"
        " FROM d WHERE final AND outcome IN ('rejected', 'expired') GROUP BY 1) AS x),"
        "'bounces_asynchronous', (SELECT coalesce(json_agg(json_build_object('category', c,"
        " 'bounces', h, 'soft_bounces', s) ORDER BY h + s DESC, c), '[]')"
        " FROM (SELECT coalesce(nullif(category, ''), 'unclassified') AS c,"
        " count(*) FILTER (WHERE bounce = 'hard') AS h, count(*) FILTER (WHERE bounce = 'soft') AS "
        "s"
        " FROM f WHERE kind = 'bounce' AND " REPORT_ASYNC " GROUP BY 1) AS x),"
        "'feedback', (SELECT json_build_object('events', count(*),"
        " 'bounces', count(*) FILTER (WHERE kind = 'bounce' AND bounce = 'hard' AND " REPORT_ASYNC
        "),"
        " 'soft_bounces', count(*) FILTER (WHERE kind = 'bounce' AND bounce = 'soft' "
        "AND " REPORT_ASYNC "),"
        " 'synchronous_soft_bounces', count(*) FILTER (WHERE kind = 'bounce' AND NOT " REPORT_ASYNC
        "),"
        " 'delays', count(*) FILTER (WHERE kind = 'delay'),"
        " 'complaints', count(*) FILTER (WHERE kind = 'complaint'),"
        " 'unsubscribes', count(*) FILTER (WHERE kind = 'unsubscribe'),"
        " 'unsubscribes_http', count(*) FILTER (WHERE kind = 'unsubscribe' AND source = 'http'),"
        " 'unsubscribes_mailto', count(*) FILTER (WHERE kind = 'unsubscribe' AND source = "
        "'mailto'),"
        " 'auto_replies', count(*) FILTER (WHERE kind = 'auto_reply'),"
        /* An unmatched report names no recipient, hence no campaign: those
         * received since the campaign was created, whichever they were for. */
        " 'unmatched', (SELECT count(*) FROM ringmail.feedback_event u WHERE u.kind = 'unmatched'"
        "  AND (u.campaign_id = $1::bigint OR (u.campaign_id IS NULL AND u.received_at >="
        "  (SELECT created_at FROM ringmail.campaign WHERE id = $1::bigint))))) FROM f),"
        "'complaint_rates', (SELECT coalesce(json_agg(json_build_object('isp', isp, 'accepted',"
        " a, 'complaints', c, 'complaint_rate', CASE WHEN a > 0 THEN round(c::numeric / a, 6) END)"
        " ORDER BY c DESC, a DESC, isp), '[]')"
        " FROM (SELECT coalesce(x.isp, y.isp) AS isp, coalesce(x.n, 0) AS a, coalesce(y.n, 0) AS c"
        " FROM (SELECT " REPORT_ISP " AS isp, count(*) AS n FROM d"
        "  WHERE outcome = 'accepted' GROUP BY 1) AS x"
        " FULL JOIN (SELECT " REPORT_ISP " AS isp, count(*) AS n FROM f"
        "  WHERE kind = 'complaint' GROUP BY 1) AS y ON x.isp = y.isp) AS z),"
        /* Per recipient: its first unsubscribe after its accepted delivery. */
        "'unsubscribe_delay', (SELECT json_build_object('recipients', count(*),"
        " 'median_s', round((percentile_cont(0.5) WITHIN GROUP (ORDER BY s))::numeric, 1),"
        " 'p90_s', round((percentile_cont(0.9) WITHIN GROUP (ORDER BY s))::numeric, 1),"
        " 'max_s', round(max(s)::numeric, 1))"
        " FROM (SELECT extract(epoch FROM u.at - a.at) AS s"
        " FROM (SELECT recipient_id, min(received_at) AS at FROM f WHERE kind = 'unsubscribe'"
        "  AND recipient_id IS NOT NULL GROUP BY 1) AS u"
        " JOIN (SELECT recipient_id, min(at) AS at FROM d WHERE outcome = 'accepted'"
        "  GROUP BY 1) AS a ON a.recipient_id = u.recipient_id) AS x),"
        "'holds', (SELECT coalesce(json_agg(json_build_object('isp', isp, 'held_at',"
        " to_char(held_at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'reason', reason)"
        " ORDER BY isp), '[]') FROM ringmail.isp_hold WHERE campaign_id = $1::bigint"
        " AND resumed_at IS NULL),"
        "'feedback_hours', (SELECT coalesce(json_agg(json_build_object('hour', "
        "to_char(h, 'YYYY-MM-DD\"T\"HH24:00\"Z\"'), 'bounces', coalesce(bo, 0), 'complaints',"
        " coalesce(co, 0), 'unsubscribes', coalesce(un, 0)) ORDER BY h), '[]')"
        " FROM (SELECT generate_series(date_trunc('hour', min(received_at)),"
        " date_trunc('hour', max(received_at)), interval '1 hour') AS h FROM f"
        " WHERE kind IN ('bounce', 'complaint', 'unsubscribe')) AS hs"
        " LEFT JOIN (SELECT date_trunc('hour', received_at) AS h,"
        " count(*) FILTER (WHERE kind = 'bounce' AND " REPORT_ASYNC ") AS bo,"
        " count(*) FILTER (WHERE kind = 'complaint') AS co,"
        " count(*) FILTER (WHERE kind = 'unsubscribe') AS un FROM f GROUP BY 1) AS x USING (h))");
}

/* report_sql - the whole document. The session's time zone is UTC
 * (report_load), so minutes and hours are UTC ones. */
static void report_sql(buf_t *b)
{
    buf_append_str(
        b, "WITH d AS (SELECT * FROM ringmail.delivery WHERE campaign_id = $1::bigint),"
           " f AS (SELECT kind, source, recipient_id, isp, category, bounce, received_at"
           " FROM ringmail.feedback_event WHERE campaign_id = $1::bigint),"
           /* every minute from the first attempt to the last, empty ones included */
           " mins AS (SELECT m FROM (SELECT min(at) AS a, max(at) AS z FROM d) AS s,"
           " generate_series(date_trunc('minute', s.a), date_trunc('minute', s.z),"
           " interval '1 minute') AS m),"
           /* queue age: a recipient waits from the campaign's first attempt (its
            * creation before any) to its final attempt, or to now while waiting */
           " t0 AS (SELECT coalesce((SELECT min(at) FROM d), (SELECT created_at FROM"
           " ringmail.campaign WHERE id = $1::bigint)) AS t),"
           " ages AS (SELECT 'final' AS k, greatest(0, extract(epoch FROM x.t - t0.t)) AS s"
           " FROM (SELECT recipient_id, max(at) AS t FROM d WHERE final GROUP BY 1) AS x, t0"
           " UNION ALL SELECT 'waiting', greatest(0, extract(epoch FROM now() - t0.t))"
           " FROM ringmail.recipient r, t0 WHERE r.campaign_id = $1::bigint"
           " AND r.state IN ('queued', 'claimed', 'deferred'))"
           " SELECT json_build_object("
           "'campaign', (SELECT json_build_object('id', id, 'name', name, 'status',"
           " status, 'generated_at', to_char(now(), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'))"
           " FROM ringmail.campaign WHERE id = $1::bigint),");
    report_states_sql(b);
    report_attempts_sql(b);
    report_time_sql(b);
    report_feedback_sql(b);
    buf_append_str(b, ")");
}

json_t *report_load(PGconn *c, const char *campaign, char *err, size_t errlen)
{
    if (db_exec(c,
                "SET client_encoding = 'UTF8'; SET TIME ZONE 'UTC';"
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                err, errlen) < 0) {
        return NULL;
    }
    buf_t sql = BUF_INIT;
    report_sql(&sql);
    const char *params[1] = {campaign};
    PGresult *r = pq.PQexecParams(c, buf_cstr(&sql), 1, NULL, params, NULL, NULL, 0);
    buf_free(&sql);
    json_t *doc = NULL;
    if (!r || pq.PQresultStatus(r) != PGRES_TUPLES_OK || pq.PQntuples(r) != 1) {
        const char *m = r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(c);
        snprintf(err, errlen, "%.*s", (int)strcspn(m, "\n"), m);
    } else {
        json_error_t je;
        doc = json_loads(pq.PQgetvalue(r, 0, 0), 0, &je);
        if (!doc) {
            snprintf(err, errlen, "unreadable report from the database: %s", je.text);
        } else if (json_is_null(json_object_get(doc, "campaign"))) {
            snprintf(err, errlen, "campaign %s does not exist (ringmail campaign list)", campaign);
            json_decref(doc);
            doc = NULL;
        }
    }
    pq.PQclear(r);
    char ignore[128];
    db_exec(c, "COMMIT", ignore, sizeof ignore);
    return doc;
}

/* ---- the tables in print order ---- */

void report_cell(const json_t *v, buf_t *out)
{
    if (json_is_string(v)) {
        buf_append_str(out, json_string_value(v));
    } else if (json_is_integer(v)) {
        buf_appendf(out, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        /* 950, 18933600, 0.333333: whole seconds are never 1.89e+07 */
        double x = json_real_value(v);
        buf_appendf(out, fabs(x) < 1e15 && x == floor(x) ? "%.0f" : "%.10g", x);
    } else if (json_is_true(v) || json_is_false(v)) {
        buf_append_str(out, json_is_true(v) ? "true" : "false");
    } else {
        buf_append_str(out, "-");
    }
}

/* report_walk_counts - obj's keys as rows of a two-column table (name, count) */
static void report_walk_counts(const struct report_sink *s, const char *title, const char *name,
                               const json_t *obj)
{
    json_t *rows = json_array();
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        json_array_append_new(rows, json_pack("{s:s, s:O}", name, key, "count", v));
    }
    s->table(s->ctx, title, rows);
    json_decref(rows);
}

/* report_walk_one - obj as a table of one row */
static void report_walk_one(const struct report_sink *s, const char *title, const json_t *obj)
{
    json_t *rows = json_array();
    json_array_append(rows, (json_t *)obj);
    s->table(s->ctx, title, rows);
    json_decref(rows);
}

/* report_resumption_line - "TLS resumption: R of N TLS handshakes resumed (P%)"; over
 * attempts when the connections were not recorded (rows from before schema 5). */
static void report_resumption_line(const json_t *res, buf_t *out)
{
    long long resumed = json_integer_value(json_object_get(res, "resumed"));
    long long full = json_integer_value(json_object_get(res, "full"));
    int handshakes =
        strcmp(json_string_value(json_object_get(res, "counted")) ?: "", "handshakes") == 0;
    buf_appendf(out, "TLS resumption: %lld of %lld %s resumed", resumed, resumed + full,
                handshakes ? "TLS handshakes" : "attempts");
    if (resumed + full > 0) {
        buf_appendf(out, " (%.1f%%)", 100.0 * (double)resumed / (double)(resumed + full));
    }
    if (!handshakes) {
        buf_append_str(out, " (connections not recorded)");
    }
}

void report_walk(const json_t *doc, const struct report_sink *s)
{
    /* Recipients as rows, total last. */
    json_t *states = json_array();
    const json_t *rc = json_object_get(doc, "recipients");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)rc, key, v)
    {
        if (strcmp(key, "total") != 0) {
            json_array_append_new(states, json_pack("{s:s, s:O}", "state", key, "count", v));
        }
    }
    json_array_append_new(
        states, json_pack("{s:s, s:O}", "state", "total", "count", json_object_get(rc, "total")));
    s->table(s->ctx, "recipients", states);
    json_decref(states);
    buf_t line = BUF_INIT;
    for (int i = 0; i < report_nsections; i++) {
        const struct report_section *sec = &report_sections[i];
        if (!sec->table) {
            continue;
        }
        if (strcmp(sec->name, "throughput") == 0) {
            report_resumption_line(json_object_get(doc, "resumption"), &line);
            s->line(s->ctx, buf_cstr(&line));
        }
        if (strcmp(sec->name, "bounces_synchronous") == 0) {
            report_walk_one(s, "queue age, summary (seconds)",
                            json_object_get(doc, "queue_age_summary"));
            report_walk_counts(s, "feedback (events by kind)", "event",
                               json_object_get(doc, "feedback"));
        }
        if (strcmp(sec->name, "holds") == 0) {
            report_walk_one(s,
                            "time from delivery to unsubscribe (seconds; each recipient's first "
                            "unsubscribe after its accepted delivery)",
                            json_object_get(doc, "unsubscribe_delay"));
        }
        s->table(s->ctx, sec->title, json_object_get(doc, sec->name));
    }
    buf_free(&line);
}
