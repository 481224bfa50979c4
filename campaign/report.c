/*
 * report - a campaign's report. See report.h.
 *
 * PostgreSQL builds the whole report as one JSON document (one statement,
 * json_build_object keeps the key order); this file only prints it. The
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
};

#define REPORT_NSECTIONS (int)(sizeof report_sections / sizeof report_sections[0])

/* An attempt reached a server when it has a peer, a TLS version or a reply. */
#define REPORT_CONNECTED                                                                           \
    "(coalesce(peer, '') <> '' OR coalesce(tls_version, '') <> '' OR code IS NOT NULL)"

/* buf_t does not keep a terminating NUL; libpq and printf need one. */
static const char *report_cstr(buf_t *b)
{
    *buf_reserve(b, 1) = '\0';
    return buf_data(b);
}

static void report_sql(buf_t *b)
{
    buf_append_str(b, "WITH d AS (SELECT * FROM ringmail.delivery WHERE campaign_id = $1::bigint)"
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
        " WHERE outcome = 'accepted' GROUP BY 1) AS x))");
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
                printf(left[j] ? " %-*s" : " %*s", (int)width[j], report_cstr(&cell));
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
    report_csv_field(report_cstr(&cell));
    putchar('\n');
    buf_free(&cell);
}

static void report_csv(const json_t *r)
{
    printf("section,key,metric,value\n");
    const json_t *c = json_object_get(r, "campaign");
    buf_t key = BUF_INIT;
    report_cell(json_object_get(c, "id"), &key);
    report_csv_row("campaign", report_cstr(&key), "name", json_object_get(c, "name"));
    report_csv_row("campaign", report_cstr(&key), "status", json_object_get(c, "status"));
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
                    report_csv_row(report_sections[s].name,
                                   buf_len(&key) ? report_cstr(&key) : "none", k, v);
                }
                j++;
            }
        }
    }
    json_object_foreach(json_object_get(r, "resumption"), k, v)
    {
        report_csv_row("resumption", "tls", k, v);
    }
    buf_free(&key);
}

/* ---- command ---- */

static void report_usage(FILE *f)
{
    fprintf(f, "usage: ringmail report --db URL --campaign ID [--format text|csv|json]\n"
               "\n"
               "  Recipients by state; attempts per ISP by outcome; reply codes; TLS versions,\n"
               "  ciphers and resumption rate; accepted messages per minute.\n"
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
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
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
    PGresult *r = pq.PQexecParams(c, report_cstr(&sql), 1, NULL, params, NULL, NULL, 0);
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
    PGconn *c = db_connect(url, err, sizeof err);
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
