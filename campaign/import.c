/*
 * import - recipients into a campaign, inside PostgreSQL. See import.h.
 *
 * The CSV form parses the file here (import_csv.c), so that a problem is
 * named by its line and column before any of it reaches the database,
 * and streams the good rows with COPY (text format: the line number as
 * `ord`, then one text column per header column) into a temporary table.
 * Merge variables are then built with jsonb_build_object over the other
 * columns, keyed by their header names, in the one INSERT ... SELECT that
 * both forms end in.
 *
 * The address rules are those of send_address_problem() in send_list.c, as
 * SQL, evaluated in the same order so that the first problem found is the
 * reason given; the domain's problems come in the order of its labels.
 *
 * Progress: on a terminal, a temporary function (pg_temp.ringmail_progress)
 * raises a notice every 1% of the rows while the server checks them and
 * again while it stores them; libpq hands the notices to
 * import_progress_notice as they arrive, during the one statement.
 */
#include "campaign/import.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "campaign/campaign_cmd.h"
#include "campaign/db.h"
#include "campaign/import_int.h"
#include "engine/opt.h"
#include "engine/buf.h"
#include "engine/num.h"

/* Exit statuses (import_usage says them). */
enum { IMPORT_OK = 0, IMPORT_DB_ERROR = 1, IMPORT_BAD_INPUT = 2, IMPORT_SKIPPED = 3 };

#define IMPORT_COPY_CHUNK (256 * 1024)
#define IMPORT_MAX_COLUMNS 1500  /* PostgreSQL allows 1600 per table */
#define IMPORT_PAIRS_PER_CALL 50 /* jsonb_build_object takes at most 100 arguments */
#define IMPORT_RESYNC_MAX 100    /* unterminated quotes skipped before the file is refused */

/* Regular expressions in PostgreSQL's syntax, inside standard strings.
 * The domain may hold letters, digits, '-', '.' and any octet from 0x80
 * (UTF-8, an IDN); a label neither starts nor ends with '-'. */
#define IMPORT_RE_DOMAIN_BAD "[\\x01-\\x2c\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7f]"
#define IMPORT_RE_LABEL_EDGE "[^\\x01-\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7f]"
#define IMPORT_RE_LABEL_INNER "[^\\x01-\\x2c\\x2e\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7f]"
#define IMPORT_RE_LABEL                                                                            \
    IMPORT_RE_LABEL_EDGE "(?:" IMPORT_RE_LABEL_INNER "*" IMPORT_RE_LABEL_EDGE ")?"
#define IMPORT_RE_LOCAL_BAD "[\\x01-\\x20\\x7f<>(),;:\\\\\"\\[\\]@]"
/* The first label that is not good: what is left after the good ones. */
#define IMPORT_SQL_FIRST_BAD_LABEL                                                                 \
    "split_part(regexp_replace(n.domain, '^(?:" IMPORT_RE_LABEL "\\.)*', ''), '.', 1)"

struct import_options {
    const char *url;
    const char *campaign; /* decimal id, checked */
    const char *csv_path; /* "-" is stdin */
    const char *sql;
    const char *rejects; /* --skip-bad-rows FILE */
    const char *encoding;
    char delim;
    int delim_given;
};

struct import_counts {
    long long rows;    /* data rows read (file) or returned (query) */
    long long skipped; /* bad rows written to the rejects file */
    long long inserted, queued, invalid, suppressed;
    int sql_vars; /* --sql: the query gives merge variables (a second column) */
};

static void import_pg_error(PGresult *r, PGconn *c, char *err, size_t errlen)
{
    const char *m = r ? pq.PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = r ? pq.PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    if (!m || !*m) {
        m = pq.PQerrorMessage(c);
    }
    snprintf(err, errlen, "%s%s%s%s", m && *m ? m : "unknown database error", detail ? " (" : "",
             detail ? detail : "", detail ? ")" : "");
    db_trim(err);
}

/* Run sql with the campaign id as $1 and expect rows or a command. */
static PGresult *import_exec(PGconn *c, const char *sql, const char *campaign, char *err,
                             size_t errlen)
{
    const char *params[1] = {campaign};
    PGresult *r =
        pq.PQexecParams(c, sql, campaign ? 1 : 0, NULL, campaign ? params : NULL, NULL, NULL, 0);
    ExecStatusType st = r ? pq.PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        import_pg_error(r, c, err, errlen);
        pq.PQclear(r);
        return NULL;
    }
    return r;
}

/* ---- the shared SQL ---- */

/* A SELECT of (ord, address, vars, problem) over `from`, a relation of
 * (ord, raw, vars): the address trimmed, its domain lower-cased, and the
 * reason it cannot be delivered to (NULL when it can). OFFSET 0 keeps each
 * step's expressions computed once per row instead of inlined into every
 * use. */
static void import_sql_checked(buf_t *b, const char *from)
{
    buf_append_str(
        b, "SELECT n.ord, n.address, n.vars, CASE"
           " WHEN octet_length(n.address) > 254 THEN 'address longer than 254 octets'"
           " WHEN n.local IS NULL THEN 'no ''@'' in the address'"
           " WHEN n.local = '' THEN 'empty local part'"
           " WHEN octet_length(n.local) > 64 THEN 'local part longer than 64 octets'"
           " WHEN n.domain = '' THEN 'empty domain'"
           " WHEN n.local ~ '" IMPORT_RE_LOCAL_BAD "' THEN 'forbidden character in the local part'"
           " WHEN n.domain !~ '^" IMPORT_RE_LABEL "(?:\\." IMPORT_RE_LABEL ")*$' THEN CASE"
           " WHEN " IMPORT_SQL_FIRST_BAD_LABEL " ~ '" IMPORT_RE_DOMAIN_BAD "'"
           " THEN 'forbidden character in the domain'"
           " WHEN " IMPORT_SQL_FIRST_BAD_LABEL " = '' THEN 'empty label in the domain'"
           " ELSE 'domain label starts or ends with ''-''' END"
           " WHEN jsonb_typeof(n.vars) <> 'object' THEN 'merge variables are not a JSON object'"
           " END AS problem"
           " FROM (SELECT s.ord, s.vars,"
           " CASE WHEN s.at > 0 THEN left(s.t, s.at - 1) || '@' || lower(substr(s.t, s.at + 1))"
           " ELSE s.t END AS address,"
           " CASE WHEN s.at > 0 THEN left(s.t, s.at - 1) END AS local,"
           " CASE WHEN s.at > 0 THEN lower(substr(s.t, s.at + 1)) END AS domain"
           " FROM (SELECT q.ord, q.vars, q.t, CASE WHEN strpos(q.t, '@') > 0"
           " THEN length(q.t) - strpos(reverse(q.t), '@') + 1 ELSE 0 END AS at"
           " FROM (SELECT r.ord, r.vars, btrim(coalesce(r.raw, ''), E' \\t\\r\\n') AS t FROM ");
    buf_append_str(b, from);
    buf_append_str(b, " AS r OFFSET 0) AS q OFFSET 0) AS s OFFSET 0) AS n OFFSET 0");
}

/* The one statement both forms run: src is a SELECT of (ord, raw, vars),
 * ord giving "first" among duplicates; rows is an SQL expression for the
 * number of source rows. Its single result row: rows, inserted, queued,
 * invalid, suppressed.
 *
 * Duplicates are dropped before the INSERT (DISTINCT ON, then NOT EXISTS
 * against the campaign) rather than by ON CONFLICT DO NOTHING: measured on
 * a million rows, speculative insertion costs 2 s more than the sort. The
 * caller holds the campaign's import lock, so no other import can slip an
 * address in between; rows go in in the source's order. "C" makes the
 * sort bytewise, which is also what the unique index compares. */
static void import_sql_insert(buf_t *b, const char *src, const char *rows, long step)
{
    buf_append_str(b, "WITH ringmail_src AS (");
    buf_append_str(b, src);
    buf_append_str(b, "), ringmail_ins AS ("
                      "INSERT INTO ringmail.recipient (campaign_id, address, vars, state, reason,"
                      " next_attempt_at)");
    if (step > 0) {
        /* Above the sort, so the notices follow the rows into the INSERT. */
        buf_append_str(b, " SELECT x.campaign_id, x.address, x.vars, x.state, x.reason,"
                          " x.next_attempt_at FROM (");
    }
    buf_append_str(b, " SELECT $1::bigint AS campaign_id, d.address, d.vars,"
                      " CASE WHEN d.problem IS NOT NULL THEN 'invalid'"
                      " WHEN sup.address IS NOT NULL THEN 'suppressed' ELSE 'queued' END AS state,"
                      " CASE WHEN d.problem IS NOT NULL THEN d.problem"
                      " WHEN sup.address IS NOT NULL THEN 'suppressed' END AS reason,"
                      " NULL::timestamptz AS next_attempt_at"); /* fresh (schema 8) */
    buf_append_str(b, step > 0 ? ", d.ord" : "");
    buf_append_str(b, " FROM (SELECT DISTINCT ON (k.address COLLATE \"C\") k.* FROM (");
    import_sql_checked(b, "ringmail_src");
    buf_append_str(b, ") AS k ORDER BY k.address COLLATE \"C\", k.ord) AS d"
                      " LEFT JOIN (SELECT DISTINCT lower(address) AS address"
                      " FROM ringmail.suppression) AS sup ON sup.address = lower(d.address)"
                      " WHERE NOT EXISTS (SELECT 1 FROM ringmail.recipient AS r"
                      " WHERE r.campaign_id = $1::bigint AND r.address = d.address)"
                      " ORDER BY d.ord");
    if (step > 0) {
        buf_appendf(b,
                    " OFFSET 0) AS x WHERE (x.ord %% %ld <> 0"
                    " OR pg_temp.ringmail_progress(%d, x.ord))",
                    step, IMPORT_PHASE_STORE);
    }
    buf_append_str(b, " RETURNING state) SELECT ");
    buf_append_str(b, rows);
    buf_append_str(b, ", count(*), count(*) FILTER (WHERE state = 'queued'),"
                      " count(*) FILTER (WHERE state = 'invalid'),"
                      " count(*) FILTER (WHERE state = 'suppressed') FROM ringmail_ins");
}

static int import_run_insert(PGconn *c, const char *sql, const char *campaign,
                             struct import_counts *n, char *err, size_t errlen)
{
    PGresult *r = import_exec(c, sql, campaign, err, errlen);
    if (!r) {
        return IMPORT_DB_ERROR;
    }
    if (pq.PQntuples(r) != 1 || pq.PQnfields(r) != 5) {
        snprintf(err, errlen, "unexpected result from the insert");
        pq.PQclear(r);
        return IMPORT_DB_ERROR;
    }
    n->rows = atoll(pq.PQgetvalue(r, 0, 0));
    n->inserted = atoll(pq.PQgetvalue(r, 0, 1));
    n->queued = atoll(pq.PQgetvalue(r, 0, 2));
    n->invalid = atoll(pq.PQgetvalue(r, 0, 3));
    n->suppressed = atoll(pq.PQgetvalue(r, 0, 4));
    pq.PQclear(r);
    return IMPORT_OK;
}

int import_address_problem(PGconn *c, const char *address, char *reason, size_t reasonlen)
{
    if (db_exec(c, "SET standard_conforming_strings = on", reason, reasonlen) < 0) {
        return -1;
    }
    buf_t sql = BUF_INIT;
    buf_append_str(&sql, "SELECT k.problem FROM (");
    import_sql_checked(&sql, "(SELECT 1::bigint AS ord, $1::text AS raw, '{}'::jsonb AS vars)");
    buf_append_str(&sql, ") AS k");
    PGresult *r = import_exec(c, buf_cstr(&sql), address, reason, reasonlen);
    buf_free(&sql);
    if (!r) {
        return -1;
    }
    int bad = pq.PQntuples(r) == 1 && !pq.PQgetisnull(r, 0, 0);
    if (bad) {
        snprintf(reason, reasonlen, "%s", pq.PQgetvalue(r, 0, 0));
    }
    pq.PQclear(r);
    return bad;
}

/* ---- CSV ---- */

struct import_header {
    char **names; /* trimmed; "" for an unnamed column */
    size_t n;
    size_t email; /* the address column */
};

static void import_header_free(struct import_header *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->names[i]);
    }
    free(h->names);
    h->names = NULL;
    h->n = 0;
}

/* "column 'city'", or "column 7" for one without a name or past the header's. */
static void import_column_name(const struct import_header *h, size_t i, char *out, size_t outlen)
{
    if (i < h->n && h->names[i][0]) {
        snprintf(out, outlen, "column '%s'", h->names[i]);
    } else {
        snprintf(out, outlen, "column %zu", i + 1);
    }
}

/* "email, first_name, last_name, city", the first eight. */
static void import_header_list(const struct import_header *h, char *out, size_t outlen)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < h->n && o < outlen; i++) {
        if (i == 8) {
            snprintf(out + o, outlen - o, ", ...");
            break;
        }
        o += (size_t)snprintf(out + o, outlen - o, "%s%s", i ? ", " : "",
                              h->names[i][0] ? h->names[i] : "(unnamed)");
    }
}

static char *import_trim_dup(const char *s, size_t len)
{
    while (len > 0 && (*s == ' ' || *s == '\t')) {
        s++, len--;
    }
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t')) {
        len--;
    }
    char *d = strndup(s, len);
    if (!d) {
        abort();
    }
    return d;
}

/* The header of a file that was meant to be split elsewhere: one column
 * holding ';', a tab or '|'. */
static int import_header_one_column(const struct import_csv *r, const struct import_header *h,
                                    const struct import_options *o, char *err, size_t errlen)
{
    if (h->n != 1 || o->delim_given || r->fields[0].quoted) {
        return 0;
    }
    static const char cand[] = {';', '\t', '|'};
    size_t best = 0, best_count = 0;
    for (size_t k = 0; k < sizeof cand; k++) {
        size_t count = 0;
        for (const char *s = h->names[0]; *s; s++) {
            count += *s == cand[k];
        }
        if (count > best_count) {
            best = k, best_count = count;
        }
    }
    if (best_count == 0) {
        return 0;
    }
    char shown[64];
    const char *name = h->names[0];
    size_t len = strlen(name);
    if (len > 40) {
        len = 37;
        while (len > 0 && ((unsigned char)name[len] & 0xC0) == 0x80) {
            len--; /* not inside a UTF-8 sequence */
        }
        snprintf(shown, sizeof shown, "%.*s...", (int)len, name);
    } else {
        snprintf(shown, sizeof shown, "%s", name);
    }
    static const char *const word[] = {";", "tab", "|"};
    static const char *const flag[] = {"';'", "tab", "'|'"};
    snprintf(err, errlen,
             "%s: the header has one column '%s'; the file looks %s-separated: use --delimiter %s",
             r->path, shown, word[best], flag[best]);
    return -1;
}

/* The first record that is not blank: the column names, checked. */
static int import_read_header(struct import_csv *r, const struct import_options *o,
                              struct import_header *h, char *err, size_t errlen)
{
    int got;
    do {
        got = import_csv_next(r, err, errlen);
    } while (got == 1 && import_csv_blank(r));
    if (got < 0) {
        return IMPORT_BAD_INPUT;
    }
    if (got == 0) {
        snprintf(err, errlen, "%s: empty file (the first row must name the columns)", r->path);
        return IMPORT_BAD_INPUT;
    }
    if (r->problem) {
        snprintf(err, errlen, "%s: line %ld: the header's column %zu: %s", r->path, r->line,
                 r->problem_field + 1,
                 r->problem == IMPORT_ROW_UNTERMINATED ? "unterminated quoted field"
                                                       : "text after the closing quote");
        return IMPORT_BAD_INPUT;
    }
    if (r->nfields > IMPORT_MAX_COLUMNS) {
        snprintf(err, errlen, "%s: %zu columns, at most %d are supported", r->path, r->nfields,
                 IMPORT_MAX_COLUMNS);
        return IMPORT_BAD_INPUT;
    }
    h->names = calloc(r->nfields, sizeof *h->names);
    if (!h->names) {
        abort();
    }
    buf_t v = BUF_INIT;
    int rc = IMPORT_OK;
    for (size_t i = 0; i < r->nfields; i++) {
        struct import_value_problem pb;
        buf_reset(&v);
        if (import_value(r, &r->fields[i], 0, &v, &pb) < 0) {
            if (pb.kind == IMPORT_VALUE_NUL) {
                /* UTF-16 without a byte order mark: "e\0m\0" is little-endian */
                const char *w = r->w + r->start;
                int le = r->end - r->start >= 2 && w[0] != 0 && w[1] == 0;
                int be = r->end - r->start >= 2 && w[0] == 0 && w[1] != 0;
                snprintf(err, errlen,
                         "%s: line %ld: the header holds a NUL byte: is the file UTF-16? (then "
                         "--encoding %s)",
                         r->path, r->line,
                         le   ? "utf-16le"
                         : be ? "utf-16be"
                              : "utf-16");
            } else {
                char text[256];
                import_value_problem_text(r, &pb, text, sizeof text);
                snprintf(err, errlen, "%s: line %ld: the header's column %zu: %s", r->path, r->line,
                         i + 1, text);
            }
            rc = IMPORT_BAD_INPUT;
            break;
        }
        h->names[h->n++] = import_trim_dup(buf_data(&v), buf_len(&v));
    }
    buf_free(&v);
    if (rc != IMPORT_OK) {
        return rc;
    }
    if (import_header_one_column(r, h, o, err, errlen) < 0) {
        return IMPORT_BAD_INPUT;
    }
    /* The address: the column named email (any case), else the first. */
    h->email = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (strcasecmp(h->names[i], "email") == 0) {
            h->email = i;
            break;
        }
    }
    for (size_t i = 0; i < h->n; i++) {
        for (size_t k = i + 1; k < h->n && h->names[i][0] && i != h->email; k++) {
            if (strcmp(h->names[i], h->names[k]) == 0) {
                fprintf(stderr,
                        "ringmail recipients import: warning: %s: columns %zu and %zu are both "
                        "named '%s': the merge variable takes the value of column %zu\n",
                        r->path, i + 1, k + 1, h->names[i], k + 1);
                break;
            }
        }
    }
    return IMPORT_OK;
}

static void import_buf_truncate(buf_t *b, size_t len)
{
    b->len = b->off + len;
}

static void import_append_ord(buf_t *b, long line)
{
    char tmp[24];
    size_t n = 0;
    unsigned long v = (unsigned long)line;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    char *w = buf_reserve(b, n);
    for (size_t i = 0; i < n; i++) {
        w[i] = tmp[n - 1 - i];
    }
    buf_commit(b, n);
}

/* Append the current record as a COPY line (ord, then the fields); 0, or
 * -1 with the reason in reason and out as it was. */
static int import_copy_line(const struct import_csv *r, const struct import_header *h, buf_t *out,
                            char *reason, size_t reasonlen)
{
    size_t mark = buf_len(out);
    import_append_ord(out, r->line);
    for (size_t i = 0; i < r->nfields; i++) {
        struct import_value_problem pb;
        buf_append(out, "\t", 1);
        if (import_value(r, &r->fields[i], 1, out, &pb) < 0) {
            char col[300], text[256];
            import_column_name(h, i, col, sizeof col);
            import_value_problem_text(r, &pb, text, sizeof text);
            snprintf(reason, reasonlen, "%s: %s", col, text);
            import_buf_truncate(out, mark);
            return -1;
        }
    }
    buf_append(out, "\n", 1);
    return 0;
}

/* What is wrong with the current record, in reason (empty when nothing
 * is); *rawend and *quote: what of it the rejects file gets, and how. */
static void import_row_problem(const struct import_csv *r, const struct import_header *h,
                               char *reason, size_t reasonlen, size_t *rawend, int *quote)
{
    char col[300];
    *rawend = r->end;
    *quote = 0;
    reason[0] = '\0';
    if (r->problem == IMPORT_ROW_UNTERMINATED) {
        import_column_name(h, r->problem_field, col, sizeof col);
        snprintf(reason, reasonlen, "%s: unterminated quoted field", col);
        *rawend = import_csv_first_line_end(r);
        *quote = 1;
    } else if (r->problem == IMPORT_ROW_AFTER_QUOTE) {
        import_column_name(h, r->problem_field, col, sizeof col);
        snprintf(reason, reasonlen,
                 "%s: text after the closing quote (a quote inside a quoted field is written "
                 "twice: \"\")",
                 col);
        *quote = 1;
    } else if (r->nfields != h->n) {
        char list[200];
        import_header_list(h, list, sizeof list);
        snprintf(reason, reasonlen, "%zu field%s, the header has %zu (%s)", r->nfields,
                 r->nfields == 1 ? "" : "s", h->n, list);
    }
}

static int import_copy_put(PGconn *c, buf_t *out)
{
    int ok = buf_len(out) == 0 || pq.PQputCopyData(c, buf_data(out), (int)buf_len(out)) == 1;
    buf_reset(out);
    return ok ? 0 : -1;
}

struct import_csv_run {
    struct import_csv r;
    struct import_header h;
    struct import_rejects j;
    int rejects;         /* j is open */
    long long sent;      /* rows given to COPY */
    long last_line;      /* of the last row given to COPY */
    char first_bad[700]; /* the first row skipped: "line 9: ..." */
};

/* COPY the rows after the header into ringmail_import (ord, c1..cN). */
static int import_csv_copy(PGconn *c, struct import_csv_run *u, struct import_progress *p,
                           struct import_counts *n, char *err, size_t errlen)
{
    struct import_csv *r = &u->r;
    buf_t sql = BUF_INIT;
    buf_append_str(&sql, "CREATE TEMP TABLE ringmail_import (ord bigint");
    for (size_t i = 1; i <= u->h.n; i++) {
        buf_appendf(&sql, ", c%zu text", i);
    }
    buf_append_str(&sql, ") ON COMMIT DROP");
    int rc = db_exec(c, buf_cstr(&sql), err, errlen) < 0 ? IMPORT_DB_ERROR : IMPORT_OK;
    buf_free(&sql);
    PGresult *res = rc == IMPORT_OK ? pq.PQexec(c, "COPY ringmail_import FROM STDIN") : NULL;
    if (rc != IMPORT_OK) {
        return rc;
    }
    if (!res || pq.PQresultStatus(res) != PGRES_COPY_IN) {
        import_pg_error(res, c, err, errlen);
        pq.PQclear(res);
        return IMPORT_DB_ERROR;
    }
    pq.PQclear(res);

    buf_t out = BUF_INIT;
    int resyncs = 0, sent_ok = 1;
    const char *abort_copy = NULL;
    for (;;) {
        int got = import_csv_next(r, err, errlen);
        if (got <= 0) {
            if (got < 0) {
                rc = IMPORT_BAD_INPUT;
                abort_copy = "the file cannot be read";
            }
            break;
        }
        if (import_csv_blank(r)) {
            continue;
        }
        n->rows++;
        char reason[600];
        size_t rawend;
        int quote;
        import_row_problem(r, &u->h, reason, sizeof reason, &rawend, &quote);
        if (!reason[0] && import_copy_line(r, &u->h, &out, reason, sizeof reason) == 0) {
            u->sent++;
            u->last_line = r->line;
        } else if (!u->rejects) {
            snprintf(err, errlen, "%s: line %ld: %s", r->path, r->line, reason);
            rc = IMPORT_BAD_INPUT;
            abort_copy = "a bad row";
            break;
        } else {
            import_rejects_row(&u->j, r->line, reason, r->w + r->start, rawend - r->start, quote);
            if (n->skipped++ == 0) {
                snprintf(u->first_bad, sizeof u->first_bad, "line %ld: %s", r->line, reason);
            }
            if (r->problem == IMPORT_ROW_UNTERMINATED) {
                if (++resyncs > IMPORT_RESYNC_MAX) {
                    snprintf(err, errlen,
                             "%s: line %ld: more than %d unterminated quoted fields: is "
                             "--delimiter right, is this a CSV file?",
                             r->path, r->line, IMPORT_RESYNC_MAX);
                    rc = IMPORT_BAD_INPUT;
                    abort_copy = "a bad file";
                    break;
                }
                import_csv_resync(r);
            }
        }
        if (buf_len(&out) >= IMPORT_COPY_CHUNK && import_copy_put(c, &out) < 0) {
            sent_ok = 0;
            break;
        }
        import_progress_read(p, n->rows, (long long)r->bytes);
    }
    if (sent_ok && !abort_copy && import_copy_put(c, &out) < 0) {
        sent_ok = 0;
    }
    buf_free(&out);
    if (sent_ok && pq.PQputCopyEnd(c, abort_copy) != 1) {
        sent_ok = 0;
    }
    if (!sent_ok && rc == IMPORT_OK) {
        import_pg_error(NULL, c, err, errlen);
        rc = IMPORT_DB_ERROR;
    }
    while ((res = pq.PQgetResult(c)) != NULL) {
        ExecStatusType st = pq.PQresultStatus(res);
        if (st != PGRES_COMMAND_OK && rc == IMPORT_OK) {
            import_pg_error(res, c, err, errlen);
            rc = IMPORT_DB_ERROR;
        }
        pq.PQclear(res);
        if (st == PGRES_COPY_IN) {
            break; /* the connection failed mid-COPY: nothing more will come */
        }
    }
    return rc;
}

/* The merge variables: every named column but the address, keyed by its
 * (trimmed) header name, as an SQL expression over ringmail_import t. */
static int import_csv_vars(PGconn *c, const struct import_header *h, buf_t *out, char *err,
                           size_t errlen)
{
    int pairs = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (i == h->email || !h->names[i][0]) {
            continue;
        }
        char *key = pq.PQescapeLiteral(c, h->names[i], strlen(h->names[i]));
        if (!key) {
            import_pg_error(NULL, c, err, errlen);
            return IMPORT_DB_ERROR;
        }
        if (pairs % IMPORT_PAIRS_PER_CALL == 0) {
            buf_append_str(out, pairs ? ") || jsonb_build_object(" : "jsonb_build_object(");
        } else {
            buf_append_str(out, ", ");
        }
        buf_appendf(out, "%s, t.c%zu", key, i + 1);
        pq.PQfreemem(key);
        pairs++;
    }
    buf_append_str(out, pairs ? ")" : "'{}'::jsonb");
    return IMPORT_OK;
}

static int import_csv(PGconn *c, const struct import_options *o, const struct import_tfields *tf,
                      int progress_sql, struct import_progress *p, struct import_counts *n,
                      char *note, size_t notelen, char *err, size_t errlen)
{
    struct import_csv_run u;
    memset(&u, 0, sizeof u);
    if (import_csv_open(&u.r, o->csv_path, o->delim, o->encoding, err, errlen) < 0) {
        return IMPORT_BAD_INPUT;
    }
    p->size = u.r.size;
    int rc = import_read_header(&u.r, o, &u.h, err, errlen);
    if (rc == IMPORT_OK && tf) {
        /* what the rows give as merge variables: the named columns but the address */
        char **vars = calloc(u.h.n, sizeof *vars);
        if (!vars) {
            abort();
        }
        for (size_t i = 0; i < u.h.n; i++) {
            vars[i] = i == u.h.email ? NULL : u.h.names[i];
        }
        const char *addr = u.h.names[u.h.email];
        import_fields_warn_csv(tf, vars, u.h.n, strcasecmp(addr, "email") == 0 ? NULL : addr, p);
        free(vars);
    }
    if (rc == IMPORT_OK && o->rejects) {
        if (import_rejects_open(&u.j, o->rejects, &u.r, err, errlen) < 0) {
            rc = IMPORT_BAD_INPUT;
        } else {
            u.rejects = 1;
            import_rejects_header(&u.j, &u.r);
        }
    }
    if (rc == IMPORT_OK) {
        rc = import_csv_copy(c, &u, p, n, err, errlen);
    }
    if (u.rejects) {
        char why[512];
        if (import_rejects_close(&u.j, why, sizeof why) < 0 && rc == IMPORT_OK) {
            snprintf(err, errlen, "%s", why);
            rc = IMPORT_BAD_INPUT;
        }
    }
    if (n->skipped > 0) {
        snprintf(note, notelen, "%lld bad row%s skipped, written to %s; the first: %s", n->skipped,
                 n->skipped == 1 ? "" : "s", o->rejects, u.first_bad);
    }
    buf_t vars = BUF_INIT, src = BUF_INIT, rows = BUF_INIT, sql = BUF_INIT;
    if (rc == IMPORT_OK) {
        rc = import_csv_vars(c, &u.h, &vars, err, errlen);
    }
    if (rc == IMPORT_OK) {
        long step = progress_sql && p->on ? u.last_line / 100 : 0;
        if (progress_sql && p->on && step < 1) {
            step = 1;
        }
        buf_appendf(&src, "SELECT t.ord, t.c%zu AS raw, %s AS vars FROM ringmail_import AS t",
                    u.h.email + 1, buf_cstr(&vars));
        if (step > 0) {
            buf_appendf(&src, " WHERE (t.ord %% %ld <> 0 OR pg_temp.ringmail_progress(%d, t.ord))",
                        step, IMPORT_PHASE_CHECK);
        }
        buf_appendf(&rows, "%lld", u.sent);
        import_sql_insert(&sql, buf_cstr(&src), buf_cstr(&rows), step);
        p->last_line = u.last_line;
        import_progress_rows(p, n->rows, (long long)u.r.bytes);
        import_progress_db(p, IMPORT_PHASE_CHECK, 0);
        import_progress_ticker_start(p);
        long long read = n->rows;
        rc = import_run_insert(c, buf_cstr(&sql), o->campaign, n, err, errlen);
        n->rows = read;
        import_progress_db(p, IMPORT_PHASE_FINISH, 0);
    }
    buf_free(&vars);
    buf_free(&src);
    buf_free(&rows);
    buf_free(&sql);
    import_header_free(&u.h);
    import_csv_close(&u.r);
    return rc;
}

/* ---- SQL ---- */

static int import_query(PGconn *c, const struct import_options *o, struct import_counts *n,
                        char *err, size_t errlen)
{
    /* The query goes inside parentheses: no trailing semicolon. */
    size_t len = strlen(o->sql);
    while (len > 0 && strchr(" \t\r\n;", o->sql[len - 1])) {
        len--;
    }
    if (len == 0) {
        snprintf(err, errlen, "--sql: empty query");
        return IMPORT_BAD_INPUT;
    }
    buf_t sql = BUF_INIT;
    /* The newline ends a trailing "-- comment" before our parenthesis. */
    buf_appendf(&sql, "SELECT * FROM (%.*s\n) AS q LIMIT 0", (int)len, o->sql);
    char why[1024];
    PGresult *r = import_exec(c, buf_cstr(&sql), NULL, why, sizeof why);
    buf_reset(&sql);
    if (!r) {
        snprintf(err, errlen, "--sql: %s", why);
        buf_free(&sql);
        return IMPORT_DB_ERROR;
    }
    int columns = pq.PQnfields(r);
    pq.PQclear(r);
    if (columns < 1 || columns > 2) {
        snprintf(err, errlen,
                 "--sql: the query returns %d columns; it must return the address and, "
                 "optionally, the merge variables (jsonb, json or JSON text)",
                 columns);
        buf_free(&sql);
        return IMPORT_BAD_INPUT;
    }
    buf_t src = BUF_INIT;
    /* row_number() over the query's own order: its first row wins. */
    buf_appendf(&src,
                "SELECT row_number() OVER () AS ord, q.address::text AS raw, %s AS vars"
                " FROM (%.*s\n) AS q(address%s)",
                columns == 2 ? "coalesce(q.vars::text::jsonb, '{}'::jsonb)" : "'{}'::jsonb",
                (int)len, o->sql, columns == 2 ? ", vars" : "");
    import_sql_insert(&sql, buf_cstr(&src), "(SELECT count(*) FROM ringmail_src)", 0);
    int rc = import_run_insert(c, buf_cstr(&sql), o->campaign, n, err, errlen);
    buf_free(&src);
    buf_free(&sql);
    n->sql_vars = columns == 2;
    return rc;
}

/* ---- command ---- */

static void import_usage(FILE *f)
{
    fprintf(
        f, "usage: ringmail recipients import --db URL --campaign ID (--csv FILE | --sql QUERY)\n"
           "               [--delimiter C] [--encoding NAME] [--skip-bad-rows FILE]\n"
           "       ringmail recipients list --db URL --campaign ID [--state STATE] [--limit N]\n"
           "\n"
           "import:\n"
           "  --csv FILE    CSV with a header row ('-' = stdin; RFC 4180: quoted fields may hold\n"
           "                the delimiter, doubled quotes and line breaks; LF or CRLF). The\n"
           "                column named 'email' (any case; else the first column) is the\n"
           "                address; every other column becomes a merge variable named by its\n"
           "                header. Blank lines are skipped.\n"
           "  --delimiter C ',' (default), ';', '|' or tab ('tab' or '\\t'). A header of one\n"
           "                column holding ';', a tab or '|' is refused without --delimiter.\n"
           "  --encoding NAME  the file's encoding: utf-8 (default), latin1, windows-1252,\n"
           "                utf-16 or any name of `iconv --list`; stored as UTF-8.\n"
           "  --skip-bad-rows FILE  import the good rows and write the bad ones to FILE (CSV:\n"
           "                line, reason, then the row as it was, in the input's delimiter and\n"
           "                encoding). Without it the first bad row stops the import and\n"
           "                nothing is stored.\n"
           "  --sql QUERY   a SELECT run inside the database: first column the address,\n"
           "                optional second column the merge variables (jsonb, json or JSON\n"
           "                text, an object).\n"
           "\n"
           "  A bad row is named by its line and column: 'line 9: 3 fields, the header has 4\n"
           "  (...)', 'line 17: column 'city': unterminated quoted field', 'line 5: column\n"
           "  'first_name': invalid UTF-8 (byte 0xE9 at offset 3; try --encoding latin1)'.\n"
           "  Addresses are trimmed and their domain lower-cased; undeliverable ones are\n"
           "  stored as 'invalid' with the reason, suppressed ones as 'suppressed'; an\n"
           "  address already in the campaign (or earlier in the input) is a duplicate. One\n"
           "  transaction. A merge field of the templates without a default that the data\n"
           "  does not provide is warned about. On a terminal a progress line (rows/s, %%,\n"
           "  ETA) is kept up to date on stderr. Prints\n"
           "    read N rows: imported Q (queued), invalid I, suppressed S, duplicates D,\n"
           "    skipped B\n"
           "  with N = Q + I + S + D + B.\n"
           "\n"
           "  Exit status: 0 imported; 3 imported, but bad rows were skipped (--skip-bad-rows);\n"
           "  2 bad options, an unreadable file or a bad row (nothing stored); 1 a database\n"
           "  error or no such campaign (nothing stored).\n"
           "\n"
           "list: one line per recipient in import order (address, state, attempts, last\n"
           "  change, reason); --state keeps one state (queued, claimed, sent, deferred,\n"
           "  bounced, failed, expired, invalid, suppressed, ambiguous); --limit N the first N.\n");
}

/* ',' ';' '|' and tab ("tab", "\t" as two characters, or a real tab). */
static int import_parse_delimiter(const char *s, char *out)
{
    if (strcmp(s, "tab") == 0 || strcmp(s, "\\t") == 0 || strcmp(s, "\t") == 0) {
        *out = '\t';
        return 0;
    }
    if (strlen(s) == 1 && strchr(",;|", s[0])) {
        *out = s[0];
        return 0;
    }
    return -1;
}

static int import_parse(int argc, char **argv, struct import_options *o)
{
    static const struct option longopts[] = {
        {"db", required_argument, 0, 'd'},
        {"campaign", required_argument, 0, 'c'},
        {"csv", required_argument, 0, 'f'},
        {"sql", required_argument, 0, 's'},
        {"skip-bad-rows", required_argument, 0, 'b'},
        {"delimiter", required_argument, 0, 'D'},
        {"encoding", required_argument, 0, 'e'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch;
    const char *delim = NULL;
    optind = 1;
    o->delim = ',';
    while ((ch = opt_getopt(argc, argv, longopts)) != -1) {
        switch (ch) {
        case 'd':
            o->url = optarg;
            break;
        case 'c':
            o->campaign = optarg;
            break;
        case 'f':
            o->csv_path = optarg;
            break;
        case 's':
            o->sql = optarg;
            break;
        case 'b':
            o->rejects = optarg;
            break;
        case 'D':
            delim = optarg;
            break;
        case 'e':
            o->encoding = optarg;
            break;
        case 'h':
            import_usage(stdout);
            return 0;
        default:
            import_usage(stderr);
            return 2;
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
    } else if (!o->csv_path == !o->sql) {
        problem = "exactly one of --csv FILE and --sql QUERY is required";
    } else if (o->sql && (delim || o->encoding || o->rejects)) {
        problem = "--delimiter, --encoding and --skip-bad-rows belong to --csv";
    } else if (delim && import_parse_delimiter(delim, &o->delim) < 0) {
        problem = "--delimiter takes ',', ';', '|' or tab";
    } else if (o->encoding && !*o->encoding) {
        problem = "--encoding takes a name (utf-8, latin1, windows-1252, ...)";
    } else if (o->rejects && o->csv_path && strcmp(o->rejects, o->csv_path) == 0) {
        problem = "--skip-bad-rows FILE must not be the --csv file";
    }
    o->delim_given = delim != NULL;
    if (problem) {
        fprintf(stderr, "ringmail recipients import: %s\n", problem);
        return 2;
    }
    return -1;
}

/* The campaign's row (mail_from, subject, text_body, html_body,
 * list_unsubscribe), after taking its import lock: imports into one
 * campaign run one after the other (see import_sql_insert). Advisory lock
 * class 7413 (db migrate uses 7412). NULL with err set when it does not
 * exist or on a database error (*missing tells which). */
static PGresult *import_campaign(PGconn *c, const char *campaign, int *missing, char *err,
                                 size_t errlen)
{
    *missing = 0;
    PGresult *r = import_exec(c,
                              "SELECT pg_advisory_xact_lock(7413, (id % 2147483647)::int),"
                              " mail_from, subject, text_body, html_body, list_unsubscribe"
                              " FROM ringmail.campaign WHERE id = $1 FOR KEY SHARE",
                              campaign, err, errlen);
    if (r && pq.PQntuples(r) != 1) {
        pq.PQclear(r);
        r = NULL;
        *missing = 1;
        snprintf(err, errlen, "campaign %s does not exist (ringmail campaign list)", campaign);
    }
    return r;
}

/* pg_temp.ringmail_progress(phase, line): a notice for the progress line.
 * STABLE, so that the query it is in stays inlined (a volatile function
 * would materialize the CTE). Outside the transaction: a failure costs
 * only the progress. */
static int import_progress_function(PGconn *c)
{
    char ignore[512];
    return db_exec(c,
                   "SET client_min_messages = notice;"
                   "CREATE OR REPLACE FUNCTION pg_temp.ringmail_progress(phase int, line bigint)"
                   " RETURNS boolean LANGUAGE plpgsql STABLE AS"
                   " $$BEGIN RAISE NOTICE 'ringmail-progress % %', phase, line; RETURN true; END$$",
                   ignore, sizeof ignore) == 0;
}

static int import_run(int argc, char **argv)
{
    struct import_options o = {0};
    int rc = import_parse(argc, argv, &o);
    if (rc >= 0) {
        return rc;
    }
    char err[2048];
    PGconn *c = db_connect_current(o.url, err, sizeof err);
    if (!c) {
        fprintf(stderr, "ringmail recipients import: %s\n", err);
        return 1;
    }
    struct import_counts n = {0};
    struct import_progress progress;
    import_progress_init(&progress, o.csv_path && isatty(STDERR_FILENO), -1);
    char note[1024] = "";
    /* The file is UTF-8 (or converted to it) whatever the database's
     * encoding; work_mem lets the sort that orders "first wins" stay in
     * memory for large imports. */
    rc = IMPORT_DB_ERROR;
    int progress_sql = o.csv_path && isatty(STDERR_FILENO) && import_progress_function(c);
    if (progress_sql) {
        pq.PQsetNoticeProcessor(c, import_progress_notice, &progress);
    }
    if (db_exec(c,
                "SET client_encoding = 'UTF8'; SET standard_conforming_strings = on;"
                "BEGIN; SET LOCAL work_mem = '256MB'",
                err, sizeof err) == 0) {
        int missing;
        PGresult *camp = import_campaign(c, o.campaign, &missing, err, sizeof err);
        struct import_tfields tf = {0};
        int have_fields = 0;
        if (camp) {
            char why[512];
            have_fields = import_fields_load(camp, 0, 1, &tf, why, sizeof why) == 0;
            if (!have_fields) {
                fprintf(stderr,
                        "ringmail recipients import: warning: the merge fields cannot be "
                        "checked: template %s\n",
                        why);
            }
            pq.PQclear(camp);
            rc = o.csv_path ? import_csv(c, &o, have_fields ? &tf : NULL, progress_sql, &progress,
                                         &n, note, sizeof note, err, sizeof err)
                            : import_query(c, &o, &n, err, sizeof err);
        }
        if (rc == IMPORT_OK && db_exec(c, "COMMIT", err, sizeof err) < 0) {
            rc = IMPORT_DB_ERROR;
        }
        /* After the commit: a failure there only costs the warning. */
        if (rc == IMPORT_OK && o.sql && have_fields) {
            import_fields_warn_sql(c, o.campaign, &tf, n.sql_vars);
        }
        import_fields_free(&tf);
    }
    /* Fresh statistics before the first claim: unanalyzed, the planner
     * guesses a handful of due rows and claims with a bitmap scan and a sort
     * of every due row (80 ms per claim at 200,000 instead of 4) until
     * autovacuum comes by. ANALYZE reads a fixed-size sample (~0.2 s);
     * failing it loses nothing that was imported. */
    if (rc == IMPORT_OK && n.inserted > 0 &&
        db_exec(c, "ANALYZE ringmail.recipient", err, sizeof err) < 0) {
        import_progress_ticker_stop(&progress);
        import_progress_clear(&progress);
        fprintf(stderr, "ringmail recipients import: warning: ANALYZE: %s\n", err);
    }
    import_progress_end(&progress, rc == IMPORT_OK);
    if (rc != IMPORT_OK) {
        char ignore[256];
        db_exec(c, "ROLLBACK", ignore, sizeof ignore);
        fprintf(stderr, "ringmail recipients import: %s\n", err);
        if (rc == IMPORT_BAD_INPUT && n.rows > 0 && !o.rejects) {
            fprintf(stderr, "ringmail recipients import: nothing imported (--skip-bad-rows FILE "
                            "imports the other rows and writes the bad ones to FILE)\n");
        } else if (n.rows > 0) {
            fprintf(stderr, "ringmail recipients import: nothing imported\n");
        }
    } else {
        if (note[0]) {
            fprintf(stderr, "ringmail recipients import: %s\n", note);
        }
        printf("read %lld row%s: imported %lld (queued), invalid %lld, suppressed %lld, "
               "duplicates %lld, skipped %lld",
               n.rows, n.rows == 1 ? "" : "s", n.queued, n.invalid, n.suppressed,
               n.rows - n.skipped - n.inserted, n.skipped);
        if (n.skipped > 0) {
            printf(" (bad rows, written to %s)", o.rejects);
        }
        printf("\n");
        rc = n.skipped > 0 ? IMPORT_SKIPPED : IMPORT_OK;
    }
    pq.PQfinish(c);
    return rc;
}

int import_main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "import") == 0) {
        return import_run(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "list") == 0) {
        return recipients_list_main(argc - 1, argv + 1);
    }
    int help = argc >= 2 && strcmp(argv[1], "--help") == 0;
    if (!help) {
        opt_no_subcommand("recipients", argc >= 2 ? argv[1] : NULL, "import, list");
    }
    import_usage(help ? stdout : stderr);
    return help ? 0 : 2;
}
