/*
 * report_int - what the report's files share (campaign/report*.c)
 *
 * report_data.c builds the report document (one SQL statement, one
 * snapshot) and walks its tables in print order; report.c prints them as
 * text and CSV and runs the command; report_html.c prints the same tables
 * and the charts' data as one HTML page. Every format reads the one
 * document, so no two of them can disagree and no query has a second copy.
 *
 * Diagnostics: report_load returns NULL with one line in err (a database
 * error, or a campaign that does not exist).
 */
#ifndef RINGMAIL_REPORT_INT_H
#define RINGMAIL_REPORT_INT_H

#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "campaign/pq.h"
#include "engine/buf.h"

/* An array section of the document: rows of objects with the same keys. */
struct report_section {
    const char *name;  /* JSON key and CSV section */
    const char *title; /* the table's title in text and HTML */
    int keys;          /* how many leading fields name a row (the rest are its numbers) */
    int table;         /* 1: a table of the text, CSV and HTML report; 0: chart data (JSON, HTML) */
};

extern const struct report_section report_sections[];
extern const int report_nsections;

/* report_load - the report document of campaign (a decimal id) read in one
 * REPEATABLE READ snapshot, or NULL with the reason in err. */
json_t *report_load(PGconn *c, const char *campaign, char *err, size_t errlen);

/* What report_walk hands each table to, in print order. */
struct report_sink {
    void (*table)(void *ctx, const char *title, const json_t *rows);
    void (*line)(void *ctx, const char *text); /* a sentence between tables */
    void *ctx;
};

/* report_walk - the report's tables, in the order every format prints them:
 * recipients by state (total last), then each table section with the
 * resumption line, the feedback counts and the unsubscribe delay where they
 * belong. */
void report_walk(const json_t *doc, const struct report_sink *sink);

/* report_cell - one JSON value as table text ("-" for null) appended to out */
void report_cell(const json_t *v, buf_t *out);

/* report_html - doc as one self-contained HTML page (scripts and styles
 * inlined, no network) on out. */
void report_html(const json_t *doc, FILE *out);

#endif
