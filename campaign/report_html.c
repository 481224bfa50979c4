/*
 * report_html - the report as one self-contained HTML page
 *
 * One file that needs no network: uPlot's script and style (vendored under
 * campaign/vendor/uplot/, compiled into the binary by the Makefile's embed
 * rule) and the page's own script (campaign/report_html.js) are inlined; a
 * Content-Security-Policy forbids every fetch. The charts read the report
 * document (the JSON of --format json) from a <script type=
 * "application/json"> element; the tables are the text report's, walked by
 * report_walk.
 *
 * Every value from the database is escaped where it lands: as HTML text
 * (& < > " ' as entities) in the tables and headings, and inside the JSON
 * script element with < > & and U+2028/U+2029 as \uXXXX escapes, so a
 * reply holding "</script>" stays a string and cannot end the element.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "campaign/report_int.h"

/* Made by the Makefile from the files named (xxd -i). */
extern unsigned char report_vendor_uplot_js[];
extern unsigned int report_vendor_uplot_js_len;
extern unsigned char report_vendor_uplot_css[];
extern unsigned int report_vendor_uplot_css_len;
extern unsigned char report_vendor_app_js[];
extern unsigned int report_vendor_app_js_len;

/* report_html_text - s as HTML text (element content or a quoted attribute) */
static void report_html_text(FILE *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", out);
            break;
        case '<':
            fputs("&lt;", out);
            break;
        case '>':
            fputs("&gt;", out);
            break;
        case '"':
            fputs("&quot;", out);
            break;
        case '\'':
            fputs("&#39;", out);
            break;
        default:
            putc(*s, out);
        }
    }
}

/* report_html_inline - embedded bytes inside <tag>...</tag>. A closing tag
 * inside them would end the element early: that is a bad vendor file, a
 * build error, so abort. */
static void report_html_inline(FILE *out, const char *tag, const char *attrs,
                               const unsigned char *p, size_t n)
{
    size_t tl = strlen(tag);
    for (size_t i = 0; i + 2 + tl <= n; i++) {
        if (p[i] == '<' && p[i + 1] == '/' && strncasecmp((const char *)p + i + 2, tag, tl) == 0) {
            fprintf(stderr, "ringmail report: an embedded <%s> holds \"</%s\" (bad vendor file)\n",
                    tag, tag);
            abort();
        }
    }
    fprintf(out, "<%s%s>\n", tag, attrs);
    fwrite(p, 1, n, out);
    fprintf(out, "\n</%s>\n", tag);
}

/* report_html_json - doc as JSON safe inside a <script> element */
static void report_html_json(FILE *out, const json_t *doc)
{
    char *s = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(10));
    if (!s) {
        abort();
    }
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '<' || c == '>' || c == '&') {
            fprintf(out, "\\u%04x", c);
        } else if (c == 0xe2 && (unsigned char)p[1] == 0x80 &&
                   ((unsigned char)p[2] == 0xa8 || (unsigned char)p[2] == 0xa9)) {
            fprintf(out, "\\u%04x", (unsigned char)p[2] == 0xa8 ? 0x2028 : 0x2029);
            p += 2;
        } else {
            putc(*p, out);
        }
    }
    free(s);
}

/* report_html_table - a report_sink table: rows as an HTML table */
static void report_html_table(void *ctx, const char *title, const json_t *rows)
{
    FILE *out = ctx;
    fputs("<h3>", out);
    report_html_text(out, title);
    fputs("</h3>\n", out);
    if (json_array_size(rows) == 0) {
        fputs("<p class=\"none\">(none)</p>\n", out);
        return;
    }
    fputs("<table><thead><tr>", out);
    const char *key;
    const json_t *v;
    json_object_foreach(json_array_get(rows, 0), key, v)
    {
        fputs("<th>", out);
        report_html_text(out, key);
        fputs("</th>", out);
    }
    fputs("</tr></thead><tbody>\n", out);
    buf_t cell = BUF_INIT;
    size_t i;
    const json_t *row;
    json_array_foreach(rows, i, row)
    {
        fputs("<tr>", out);
        json_object_foreach((json_t *)row, key, v)
        {
            buf_reset(&cell);
            report_cell(v, &cell);
            fputs(json_is_number(v) ? "<td class=\"n\">" : "<td>", out);
            report_html_text(out, buf_cstr(&cell));
            fputs("</td>", out);
        }
        fputs("</tr>\n", out);
    }
    fputs("</tbody></table>\n", out);
    buf_free(&cell);
}

static void report_html_line(void *ctx, const char *text)
{
    FILE *out = ctx;
    fputs("<p class=\"line\">", out);
    report_html_text(out, text);
    fputs("</p>\n", out);
}

static const char report_html_style[] =
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1150px}"
    "h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.2em;margin:1.5em 0 .3em;"
    "border-bottom:1px solid #ddd}h3{font-size:1em;margin:1.2em 0 .3em}"
    ".note,.meta{color:#555;margin:.2em 0}.chart{margin:.5em 0 1em}"
    "table{border-collapse:collapse;margin:.2em 0}th,td{padding:2px 8px;"
    "border-bottom:1px solid #eee;text-align:left;vertical-align:top}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}"
    "td{max-width:40em;overflow-wrap:anywhere}th{background:#f4f4f4}"
    ".none{color:#777}";

void report_html(const json_t *doc, FILE *out)
{
    const json_t *c = json_object_get(doc, "campaign");
    buf_t head = BUF_INIT;
    buf_appendf(&head, "campaign %lld: %s (%s)",
                (long long)json_integer_value(json_object_get(c, "id")),
                json_string_value(json_object_get(c, "name")) ?: "",
                json_string_value(json_object_get(c, "status")) ?: "");
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          /* Nothing is fetched: every script and style is in this file. */
          "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
          "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          "<title>ringmail report: ",
          out);
    report_html_text(out, buf_cstr(&head));
    fputs("</title>\n", out);
    report_html_inline(out, "style", "", report_vendor_uplot_css, report_vendor_uplot_css_len);
    report_html_inline(out, "style", "", (const unsigned char *)report_html_style,
                       sizeof report_html_style - 1);
    report_html_inline(out, "script", "", report_vendor_uplot_js, report_vendor_uplot_js_len);
    fputs("</head>\n<body>\n<h1>", out);
    report_html_text(out, buf_cstr(&head));
    fputs("</h1>\n<p class=\"meta\">ringmail report, generated ", out);
    report_html_text(out, json_string_value(json_object_get(c, "generated_at")) ?: "");
    fputs(" (times in UTC)</p>\n<div id=\"charts\"></div>\n<h2>Tables</h2>\n"
          "<div id=\"tables\">\n",
          out);
    struct report_sink sink = {report_html_table, report_html_line, out};
    report_walk(doc, &sink);
    fputs("</div>\n<script type=\"application/json\" id=\"report-data\">", out);
    report_html_json(out, doc);
    fputs("</script>\n", out);
    report_html_inline(out, "script", "", report_vendor_app_js, report_vendor_app_js_len);
    fputs("</body>\n</html>\n", out);
    buf_free(&head);
}
