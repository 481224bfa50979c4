/*
 * report - a campaign's report. See report.h.
 *
 * PostgreSQL builds the whole report as one JSON document (one statement,
 * json_build_object keeps the key order); this file only prints it. What
 * came back after the 250 (ringmail.feedback_event, ringmail.isp_hold) is
 * in the same statement, so it agrees with the delivery rows it is counted
 * against (README: the feedback loop's counts, one definition each). The
 * text and csv printers walk that document, so the three formats cannot
 * disagree.
 */
#include "campaign/report.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "campaign/campaign_cmd.h"
#include "campaign/db.h"
#include "engine/opt.h"
#include "engine/buf.h"
#include "engine/num.h"

enum report_format { REPORT_TEXT, REPORT_CSV, REPORT_JSON };

/* The array sections, in print order. keys: how many leading fields name a
 * row (the rest are its numbers). */
static const struct report_section {
    const char *name; /* JSON key and CSV section */
    const char *title;
    int keys;
} report_sections[] = {
    {"isps", "per ISP (attempts by outcome)", 1},
    {"reply_codes", "reply codes (attempts)", 2},
    {"tls_versions", "TLS versions (attempts that reached a server)", 1},
    {"tls_ciphers", "TLS ciphers (attempts that reached a server)", 1},
    {"throughput", "throughput (accepted per minute, UTC)", 1},
    {"bounces_synchronous", "bounces by category, synchronous (final SMTP rejections and expiries)",
     1},
    {"bounces_asynchronous", "bounces by category, asynchronous (bounce reports)", 1},
    {"complaint_rates", "complaint rate per ISP (complaints / accepted deliveries)", 1},
    {"holds", "ISPs held by the complaint guard", 1},
};

#define REPORT_NSECTIONS (int)(sizeof report_sections / sizeof report_sections[0])

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

/* report_feedback_sql - the feedback sections (README: the feedback
 * loop's counts): bounces by category, synchronous and asynchronous; the
 * events by kind; complaint rates per ISP; delivery to unsubscribe; holds */
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
        " FROM (SELECT coalesce(nullif(isp, ''), 'unknown') AS isp, count(*) AS n FROM d"
        "  WHERE outcome = 'accepted' GROUP BY 1) AS x"
        " FULL JOIN (SELECT coalesce(nullif(isp, ''), 'unknown') AS isp, count(*) AS n FROM f"
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
        " to_char(held_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'reason', reason)"
        " ORDER BY isp), '[]') FROM ringmail.isp_hold WHERE campaign_id = $1::bigint"
        " AND resumed_at IS NULL)");
}

static void report_sql(buf_t *b)
{
    buf_append_str(b, "WITH d AS (SELECT * FROM ringmail.delivery WHERE campaign_id = $1::bigint),"
                      " f AS (SELECT kind, source, recipient_id, isp, category, bounce, received_at"
                      " FROM ringmail.feedback_event WHERE campaign_id = $1::bigint)"
                      " SELECT json_build_object("
                      "'campaign', (SELECT json_build_object('id', id, 'name', name, 'status',"
                      " status) FROM ringmail.campaign WHERE id = $1::bigint),"
                      "'recipients', (SELECT json_build_object('total', count(*)");
    for (int i = 0; i < CAMPAIGN_NSTATES; i++) {
        buf_appendf(b, ", '%s', count(*) FILTER (WHERE state = '%s')", campaign_states[i],
                    campaign_states[i]);
    }
    buf_append_str(
        b,
        ") FROM ringmail.recipient WHERE campaign_id = $1::bigint),"
        "'isps', (SELECT coalesce(json_agg(json_build_object('isp', isp, 'attempts', attempts,"
        " 'accepted', accepted, 'deferred', deferred, 'rejected', rejected, 'failed', failed,"
        " 'expired', expired) ORDER BY attempts DESC, isp), '[]')"
        " FROM (SELECT coalesce(nullif(isp, ''), 'unknown') AS isp, count(*) AS attempts,"
        " count(*) FILTER (WHERE outcome = 'accepted') AS accepted,"
        " count(*) FILTER (WHERE outcome = 'deferred') AS deferred,"
        " count(*) FILTER (WHERE outcome = 'rejected') AS rejected,"
        " count(*) FILTER (WHERE outcome = 'failed') AS failed,"
        " count(*) FILTER (WHERE outcome = 'expired') AS expired FROM d GROUP BY 1) AS x),"
        "'reply_codes', (SELECT coalesce(json_agg(json_build_object('code', code, 'enhanced',"
        " enhanced, 'count', n) ORDER BY n DESC, code, enhanced), '[]')"
        " FROM (SELECT code, nullif(enhanced, '') AS enhanced, count(*) AS n FROM d"
        " GROUP BY 1, 2) AS x),"
        "'tls_versions', (SELECT coalesce(json_agg(json_build_object('version', v, 'count', n)"
        " ORDER BY n DESC, v), '[]') FROM (SELECT coalesce(nullif(tls_version, ''), 'none') AS v,"
        " count(*) AS n FROM d WHERE " REPORT_CONNECTED " GROUP BY 1) AS x),"
        "'tls_ciphers', (SELECT coalesce(json_agg(json_build_object('cipher', v, 'count', n)"
        " ORDER BY n DESC, v), '[]') FROM (SELECT coalesce(nullif(tls_cipher, ''), 'none') AS v,"
        " count(*) AS n FROM d WHERE " REPORT_CONNECTED " GROUP BY 1) AS x),"
        "'resumption', (SELECT json_build_object('resumed', r, 'full', f, 'rate',"
        " CASE WHEN r + f > 0 THEN round(r::numeric / (r + f), 4) END)"
        " FROM (SELECT count(*) FILTER (WHERE tls_resumed) AS r,"
        " count(*) FILTER (WHERE NOT tls_resumed) AS f FROM d) AS x),"
        "'throughput', (SELECT coalesce(json_agg(json_build_object('minute', m, 'accepted', n,"
        " 'per_second', round(n / 60.0, 2)) ORDER BY m), '[]')"
        " FROM (SELECT to_char(date_trunc('minute', at AT TIME ZONE 'UTC'),"
        " 'YYYY-MM-DD\"T\"HH24:MI\"Z\"') AS m, count(*) AS n FROM d"
        " WHERE outcome = 'accepted' GROUP BY 1) AS x),");
    report_feedback_sql(b);
    buf_append_str(b, ")");
}

/* ---- printing ---- */

static void report_cell(const json_t *v, buf_t *out)
{
    if (json_is_string(v)) {
        buf_append_str(out, json_string_value(v));
    } else if (json_is_integer(v)) {
        buf_appendf(out, "%lld", (long long)json_integer_value(v));
    } else if (json_is_real(v)) {
        buf_appendf(out, "%g", json_real_value(v));
    } else if (json_is_true(v) || json_is_false(v)) {
        buf_append_str(out, json_is_true(v) ? "true" : "false");
    } else {
        buf_append_str(out, "-");
    }
}

/* rows: an array of objects with the same keys. Numbers right-aligned. */
static void report_text_table(const char *title, const json_t *rows)
{
    printf("\n%s\n", title);
    if (json_array_size(rows) == 0) {
        printf("  (none)\n");
        return;
    }
    const json_t *first = json_array_get(rows, 0);
    size_t ncol = json_object_size(first);
    size_t width[16] = {0};
    int left[16] = {0}; /* a column with any text in it is left-aligned */
    const char *key;
    const json_t *v;
    size_t j = 0;
    json_object_foreach((json_t *)first, key, v)
    {
        if (j < 16) {
            width[j++] = strlen(key);
        }
    }
    buf_t cell = BUF_INIT;
    size_t i;
    const json_t *row;
    json_array_foreach(rows, i, row)
    {
        j = 0;
        json_object_foreach((json_t *)row, key, v)
        {
            buf_reset(&cell);
            report_cell(v, &cell);
            if (j < 16 && buf_len(&cell) > width[j]) {
                width[j] = buf_len(&cell);
            }
            if (j < 16 && json_is_string(v)) {
                left[j] = 1;
            }
            j++;
        }
    }
    printf(" ");
    j = 0;
    json_object_foreach((json_t *)first, key, v)
    {
        if (j < 16) {
            printf(left[j] ? " %-*s" : " %*s", (int)width[j], key);
        }
        j++;
    }
    printf("\n");
    json_array_foreach(rows, i, row)
    {
        printf(" ");
        j = 0;
        json_object_foreach((json_t *)row, key, v)
        {
            if (j < 16 && j < ncol) {
                buf_reset(&cell);
                report_cell(v, &cell);
                /* the last column, left-aligned, is not padded: no trailing blanks */
                int w = left[j] && j + 1 == ncol ? 0 : (int)width[j];
                printf(left[j] ? " %-*s" : " %*s", w, buf_cstr(&cell));
            }
            j++;
        }
        printf("\n");
    }
    buf_free(&cell);
}

static void report_text_resumption(const json_t *res)
{
    long long resumed = json_integer_value(json_object_get(res, "resumed"));
    long long full = json_integer_value(json_object_get(res, "full"));
    printf("\nTLS resumption: %lld of %lld handshakes resumed", resumed, resumed + full);
    if (resumed + full > 0) {
        printf(" (%.1f%%)", 100.0 * (double)resumed / (double)(resumed + full));
    }
    printf("\n");
}

/* obj's keys as rows of a two-column table (name, count) */
static void report_text_counts(const char *title, const char *name, const json_t *obj)
{
    json_t *rows = json_array();
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        json_array_append_new(rows, json_pack("{s:s, s:O}", name, key, "count", v));
    }
    report_text_table(title, rows);
    json_decref(rows);
}

/* obj as a table of one row */
static void report_text_one(const char *title, const json_t *obj)
{
    json_t *rows = json_array();
    json_array_append(rows, (json_t *)obj);
    report_text_table(title, rows);
    json_decref(rows);
}

static void report_text(const json_t *r)
{
    const json_t *c = json_object_get(r, "campaign");
    printf("campaign %lld: %s (%s)\n", (long long)json_integer_value(json_object_get(c, "id")),
           json_string_value(json_object_get(c, "name")),
           json_string_value(json_object_get(c, "status")));
    /* Recipients as rows, total last. */
    json_t *states = json_array();
    const json_t *rc = json_object_get(r, "recipients");
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
    report_text_table("recipients", states);
    json_decref(states);
    for (int s = 0; s < REPORT_NSECTIONS; s++) {
        if (strcmp(report_sections[s].name, "throughput") == 0) {
            report_text_resumption(json_object_get(r, "resumption"));
        }
        if (strcmp(report_sections[s].name, "bounces_synchronous") == 0) {
            report_text_counts("feedback (events by kind)", "event",
                               json_object_get(r, "feedback"));
        }
        if (strcmp(report_sections[s].name, "holds") == 0) {
            report_text_one("time from delivery to unsubscribe (seconds; each recipient's first "
                            "unsubscribe after its accepted delivery)",
                            json_object_get(r, "unsubscribe_delay"));
        }
        report_text_table(report_sections[s].title, json_object_get(r, report_sections[s].name));
    }
}

static void report_csv_field(const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"') {
            putchar('"');
        }
        putchar(*s);
    }
    putchar('"');
}

static void report_csv_row(const char *section, const char *key, const char *metric,
                           const json_t *value)
{
    buf_t cell = BUF_INIT;
    if (value && !json_is_null(value)) {
        report_cell(value, &cell);
    }
    report_csv_field(section);
    putchar(',');
    report_csv_field(key);
    putchar(',');
    report_csv_field(metric);
    putchar(',');
    report_csv_field(buf_cstr(&cell));
    putchar('\n');
    buf_free(&cell);
}

static void report_csv(const json_t *r)
{
    printf("section,key,metric,value\n");
    const json_t *c = json_object_get(r, "campaign");
    buf_t key = BUF_INIT;
    report_cell(json_object_get(c, "id"), &key);
    report_csv_row("campaign", buf_cstr(&key), "name", json_object_get(c, "name"));
    report_csv_row("campaign", buf_cstr(&key), "status", json_object_get(c, "status"));
    const char *k;
    const json_t *v;
    json_object_foreach(json_object_get(r, "recipients"), k, v)
    {
        report_csv_row("recipients", k, "count", v);
    }
    for (int s = 0; s < REPORT_NSECTIONS; s++) {
        size_t i;
        const json_t *row;
        json_array_foreach(json_object_get(r, report_sections[s].name), i, row)
        {
            /* The leading fields name the row ("550 5.1.1"); each other one is a metric. */
            int j = 0;
            buf_reset(&key);
            json_object_foreach((json_t *)row, k, v)
            {
                if (j < report_sections[s].keys) {
                    if (!json_is_null(v)) {
                        if (buf_len(&key)) {
                            buf_append_str(&key, " ");
                        }
                        report_cell(v, &key);
                    }
                } else {
                    report_csv_row(report_sections[s].name, buf_len(&key) ? buf_cstr(&key) : "none",
                                   k, v);
                }
                j++;
            }
        }
    }
    json_object_foreach(json_object_get(r, "resumption"), k, v)
    {
        report_csv_row("resumption", "tls", k, v);
    }
    json_object_foreach(json_object_get(r, "feedback"), k, v)
    {
        report_csv_row("feedback", k, "count", v);
    }
    json_object_foreach(json_object_get(r, "unsubscribe_delay"), k, v)
    {
        report_csv_row("unsubscribe_delay", "delivery_to_unsubscribe", k, v);
    }
    buf_free(&key);
}

/* ---- command ---- */

static void report_usage(FILE *f)
{
    fprintf(f, "usage: ringmail report --db URL --campaign ID [--format text|csv|json]\n"
               "\n"
               "  Recipients by state; attempts per ISP by outcome; reply codes; TLS versions,\n"
               "  ciphers and resumption rate; accepted messages per minute; what came back:\n"
               "  bounces by category (synchronous, asynchronous), feedback events by kind,\n"
               "  complaint rate per ISP, time from delivery to unsubscribe, the ISPs held.\n"
               "  csv: one table, columns section,key,metric,value.\n");
}

static int report_parse(int argc, char **argv, const char **url, const char **campaign,
                        enum report_format *format)
{
    static const struct option longopts[] = {
        {"db", required_argument, 0, 'd'},
        {"campaign", required_argument, 0, 'c'},
        {"format", required_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
    while ((ch = opt_getopt(argc, argv, longopts)) != -1) {
        if (ch == 'd') {
            *url = optarg;
        } else if (ch == 'c') {
            *campaign = optarg;
        } else if (ch == 'f' && strcmp(optarg, "text") == 0) {
            *format = REPORT_TEXT;
        } else if (ch == 'f' && strcmp(optarg, "csv") == 0) {
            *format = REPORT_CSV;
        } else if (ch == 'f' && strcmp(optarg, "json") == 0) {
            *format = REPORT_JSON;
        } else if (ch == 'f') {
            fprintf(stderr, "ringmail report: --format is text, csv or json, not '%s'\n", optarg);
            return 2;
        } else {
            report_usage(ch == 'h' ? stdout : stderr);
            return ch == 'h' ? 0 : 2;
        }
    }
    const char *problem = NULL;
    unsigned long id;
    if (optind < argc) {
        problem = "unexpected argument";
    } else if (!*url) {
        problem = "--db URL is required";
    } else if (!*campaign) {
        problem = "--campaign ID is required";
    } else if (num_parse_ulong(*campaign, 0, CAMPAIGN_ID_MAX, &id) < 0) {
        problem = "--campaign takes a numeric campaign id";
    }
    if (problem) {
        fprintf(stderr, "ringmail report: %s\n", problem);
        return 2;
    }
    return -1;
}

/* The report document, or NULL with the reason in err. */
static json_t *report_load(PGconn *c, const char *campaign, char *err, size_t errlen)
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

int report_main(int argc, char **argv)
{
    const char *url = NULL, *campaign = NULL;
    enum report_format format = REPORT_TEXT;
    int rc = report_parse(argc, argv, &url, &campaign, &format);
    if (rc >= 0) {
        return rc;
    }
    char err[1024];
    PGconn *c = db_connect_current(url, err, sizeof err);
    if (!c) {
        fprintf(stderr, "ringmail report: %s\n", err);
        return 1;
    }
    json_t *doc = report_load(c, campaign, err, sizeof err);
    pq.PQfinish(c);
    if (!doc) {
        fprintf(stderr, "ringmail report: %s\n", err);
        return 1;
    }
    if (format == REPORT_JSON) {
        json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        putchar('\n');
    } else if (format == REPORT_CSV) {
        report_csv(doc);
    } else {
        report_text(doc);
    }
    json_decref(doc);
    return 0;
}
