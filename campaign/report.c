/*
 * report - `ringmail report`: the command, and the text and CSV printers.
 * See report.h.
 *
 * The document comes from report_data.c (one statement, one snapshot); the
 * text and csv printers walk it here, the HTML page in report_html.c, and
 * json is the document itself, so the formats cannot disagree.
 */
#include "campaign/report.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "campaign/campaign_cmd.h"
#include "campaign/db.h"
#include "campaign/outfile.h"
#include "campaign/report_int.h"
#include "engine/opt.h"
#include "engine/buf.h"
#include "engine/num.h"

enum report_format { REPORT_TEXT, REPORT_CSV, REPORT_JSON, REPORT_HTML };

/* ---- text ---- */

/* report_text_table - rows (an array of objects with the same keys) under
 * title on out (a FILE *). Numbers right-aligned. */
static void report_text_table(void *ctx, const char *title, const json_t *rows)
{
    FILE *out = ctx;
    fprintf(out, "\n%s\n", title);
    if (json_array_size(rows) == 0) {
        fprintf(out, "  (none)\n");
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
    fprintf(out, " ");
    j = 0;
    json_object_foreach((json_t *)first, key, v)
    {
        if (j < 16) {
            /* the last column, left-aligned, is not padded: no trailing blanks */
            int w = left[j] && j + 1 == ncol ? 0 : (int)width[j];
            fprintf(out, left[j] ? " %-*s" : " %*s", w, key);
        }
        j++;
    }
    fprintf(out, "\n");
    json_array_foreach(rows, i, row)
    {
        fprintf(out, " ");
        j = 0;
        json_object_foreach((json_t *)row, key, v)
        {
            if (j < 16 && j < ncol) {
                buf_reset(&cell);
                report_cell(v, &cell);
                int w = left[j] && j + 1 == ncol ? 0 : (int)width[j];
                fprintf(out, left[j] ? " %-*s" : " %*s", w, buf_cstr(&cell));
            }
            j++;
        }
        fprintf(out, "\n");
    }
    buf_free(&cell);
}

static void report_text_line(void *ctx, const char *text)
{
    fprintf(ctx, "\n%s\n", text);
}

static void report_text(const json_t *r, FILE *out)
{
    const json_t *c = json_object_get(r, "campaign");
    fprintf(out, "campaign %lld: %s (%s)\n",
            (long long)json_integer_value(json_object_get(c, "id")),
            json_string_value(json_object_get(c, "name")),
            json_string_value(json_object_get(c, "status")));
    struct report_sink sink = {report_text_table, report_text_line, out};
    report_walk(r, &sink);
}

/* ---- csv ---- */

static void report_csv_field(const char *s, FILE *out)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, out);
        return;
    }
    putc('"', out);
    for (; *s; s++) {
        if (*s == '"') {
            putc('"', out);
        }
        putc(*s, out);
    }
    putc('"', out);
}

static void report_csv_row(FILE *out, const char *section, const char *key, const char *metric,
                           const json_t *value)
{
    buf_t cell = BUF_INIT;
    if (value && !json_is_null(value)) {
        report_cell(value, &cell);
    }
    report_csv_field(section, out);
    putc(',', out);
    report_csv_field(key, out);
    putc(',', out);
    report_csv_field(metric, out);
    putc(',', out);
    report_csv_field(buf_cstr(&cell), out);
    putc('\n', out);
    buf_free(&cell);
}

/* report_csv_objects - each key of the object doc[name] as a row */
static void report_csv_object(FILE *out, const json_t *doc, const char *name, const char *key)
{
    const char *k;
    const json_t *v;
    json_object_foreach(json_object_get(doc, name), k, v)
    {
        report_csv_row(out, name, key ? key : k, key ? k : "count", v);
    }
}

static void report_csv(const json_t *r, FILE *out)
{
    fprintf(out, "section,key,metric,value\n");
    const json_t *c = json_object_get(r, "campaign");
    buf_t key = BUF_INIT;
    report_cell(json_object_get(c, "id"), &key);
    report_csv_row(out, "campaign", buf_cstr(&key), "name", json_object_get(c, "name"));
    report_csv_row(out, "campaign", buf_cstr(&key), "status", json_object_get(c, "status"));
    report_csv_object(out, r, "recipients", NULL);
    const char *k;
    const json_t *v;
    for (int s = 0; s < report_nsections; s++) {
        if (!report_sections[s].table) {
            continue;
        }
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
                    report_csv_row(out, report_sections[s].name,
                                   buf_len(&key) ? buf_cstr(&key) : "none", k, v);
                }
                j++;
            }
        }
    }
    report_csv_object(out, r, "resumption", "tls");
    report_csv_object(out, r, "queue_age_summary", "recipients");
    report_csv_object(out, r, "feedback", NULL);
    report_csv_object(out, r, "unsubscribe_delay", "delivery_to_unsubscribe");
    buf_free(&key);
}

/* ---- command ---- */

static void report_usage(FILE *f)
{
    fprintf(f, "usage: ringmail report --db URL --campaign ID [--format text|csv|json|html]\n"
               "                       [--out FILE]\n"
               "\n"
               "  Recipients by state; attempts per ISP by outcome; reply codes; deferrals and\n"
               "  failures by reason; TLS versions, ciphers, posture and resumption; attempts\n"
               "  per minute (every minute, empty ones included); queue age; what came back:\n"
               "  bounces by category (synchronous, asynchronous), feedback events by kind,\n"
               "  complaint rate per ISP, time from delivery to unsubscribe, the ISPs held.\n"
               "  csv: one table, columns section,key,metric,value.\n"
               "  html: one self-contained page (charts and tables, no network).\n"
               "  --out FILE: write there (created 0600) instead of standard output.\n");
}

struct report_opts {
    const char *url, *campaign, *out;
    enum report_format format;
};

static int report_parse(int argc, char **argv, struct report_opts *o)
{
    static const struct option longopts[] = {
        {"db", required_argument, 0, 'd'},     {"campaign", required_argument, 0, 'c'},
        {"format", required_argument, 0, 'f'}, {"out", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    static const char *const formats[] = {"text", "csv", "json", "html"};
    int ch;
    optind = 1;
    while ((ch = opt_getopt(argc, argv, longopts)) != -1) {
        if (ch == 'd') {
            o->url = optarg;
        } else if (ch == 'c') {
            o->campaign = optarg;
        } else if (ch == 'o') {
            o->out = optarg;
        } else if (ch == 'f') {
            int f = 0;
            while (f < 4 && strcmp(optarg, formats[f]) != 0) {
                f++;
            }
            if (f == 4) {
                fprintf(stderr, "ringmail report: --format is text, csv, json or html, not '%s'\n",
                        optarg);
                return 2;
            }
            o->format = (enum report_format)f;
        } else {
            report_usage(ch == 'h' ? stdout : stderr);
            return ch == 'h' ? 0 : 2;
        }
    }
    const char *problem = NULL;
    unsigned long id;
    if (optind < argc) {
        problem = "unexpected argument";
    } else if (!o->url) {
        problem = "--db URL is required";
    } else if (!o->campaign) {
        problem = "--campaign ID is required";
    } else if (num_parse_ulong(o->campaign, 0, CAMPAIGN_ID_MAX, &id) < 0) {
        problem = "--campaign takes a numeric campaign id";
    }
    if (problem) {
        fprintf(stderr, "ringmail report: %s\n", problem);
        return 2;
    }
    return -1;
}

int report_main(int argc, char **argv)
{
    struct report_opts o = {.format = REPORT_TEXT};
    int rc = report_parse(argc, argv, &o);
    if (rc >= 0) {
        return rc;
    }
    char err[1024];
    PGconn *c = db_connect_current(o.url, err, sizeof err);
    if (!c) {
        fprintf(stderr, "ringmail report: %s\n", err);
        return 1;
    }
    json_t *doc = report_load(c, o.campaign, err, sizeof err);
    pq.PQfinish(c);
    if (!doc) {
        fprintf(stderr, "ringmail report: %s\n", err);
        return 1;
    }
    FILE *out = stdout;
    if (o.out && !(out = outfile_open(o.out, 0, err, sizeof err))) {
        fprintf(stderr, "ringmail report: cannot write --out %s: %s\n", o.out, err);
        json_decref(doc);
        return 1;
    }
    if (o.format == REPORT_JSON) {
        json_dumpf(doc, out, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        putc('\n', out);
    } else if (o.format == REPORT_CSV) {
        report_csv(doc, out);
    } else if (o.format == REPORT_HTML) {
        report_html(doc, out);
    } else {
        report_text(doc, out);
    }
    json_decref(doc);
    rc = 0;
    if (out != stdout ? fclose(out) != 0 : fflush(out) != 0) {
        fprintf(stderr, "ringmail report: cannot write %s: %m\n",
                o.out ? o.out : "to standard output");
        rc = 1;
    }
    return rc;
}
