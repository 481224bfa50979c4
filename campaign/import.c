/*
 * import - recipients into a campaign, inside PostgreSQL. See import.h.
 *
 * The CSV form never splits a record itself: it counts the fields of the
 * first record (commas outside quotes, nothing more), creates a temporary
 * table with that many text columns, and streams the whole file, header
 * included, through COPY ... (FORMAT csv). The header is then read back
 * from the table's first row, so PostgreSQL has unquoted the names too.
 * Merge variables are built with jsonb_build_object over the other
 * columns, keyed by their header names.
 *
 * The address rules are those of send_address_problem() in send_list.c, as
 * SQL, evaluated in the same order so that the first problem found is the
 * reason given; the domain's problems come in the order of its labels.
 */
#include "campaign/import.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "campaign/campaign_cmd.h"
#include "campaign/db.h"
#include "engine/opt.h"
#include "engine/buf.h"
#include "engine/num.h"

enum { IMPORT_OK = 0, IMPORT_DB_ERROR = 1, IMPORT_BAD_INPUT = 2 };

#define IMPORT_CHUNK (256 * 1024)
#define IMPORT_HEADER_MAX (1024 * 1024)
#define IMPORT_MAX_COLUMNS 1500  /* PostgreSQL allows 1600 per table */
#define IMPORT_PAIRS_PER_CALL 50 /* jsonb_build_object takes at most 100 arguments */

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
};

struct import_counts {
    long long rows; /* data rows read (file) or returned (query) */
    long long inserted, queued, invalid, suppressed;
};

static void import_pg_error(PGresult *r, PGconn *c, char *err, size_t errlen)
{
    const char *m = r ? pq.PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = r ? pq.PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *where = r ? pq.PQresultErrorField(r, PG_DIAG_CONTEXT) : NULL;
    if (!m || !*m) {
        m = pq.PQerrorMessage(c);
    }
    snprintf(err, errlen, "%s%s%s%s", m && *m ? m : "unknown database error", detail ? " (" : "",
             detail ? detail : "", detail ? ")" : "");
    db_trim(err);
    size_t n = strlen(err);
    /* COPY names the line: "COPY ringmail_import, line 7, column c2: ..." */
    if (where && strncmp(where, "COPY ", 5) == 0) {
        const char *line = strstr(where, "line ");
        if (line) {
            size_t len = strcspn(line, ",:\n");
            snprintf(err + n, errlen - n, " at %.*s of the file", (int)len, line);
        }
    }
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
static void import_sql_insert(buf_t *b, const char *src, const char *rows)
{
    buf_append_str(b, "WITH ringmail_src AS (");
    buf_append_str(b, src);
    buf_append_str(b, "), ringmail_ins AS ("
                      "INSERT INTO ringmail.recipient (campaign_id, address, vars, state, reason,"
                      " next_attempt_at)"
                      " SELECT $1::bigint, d.address, d.vars,"
                      " CASE WHEN d.problem IS NOT NULL THEN 'invalid'"
                      " WHEN sup.address IS NOT NULL THEN 'suppressed' ELSE 'queued' END,"
                      " CASE WHEN d.problem IS NOT NULL THEN d.problem"
                      " WHEN sup.address IS NOT NULL THEN 'suppressed' END,"
                      " CASE WHEN d.problem IS NULL AND sup.address IS NULL THEN now() END"
                      " FROM (SELECT DISTINCT ON (k.address COLLATE \"C\") k.* FROM (");
    import_sql_checked(b, "ringmail_src");
    buf_append_str(b, ") AS k ORDER BY k.address COLLATE \"C\", k.ord) AS d"
                      " LEFT JOIN (SELECT DISTINCT lower(address) AS address"
                      " FROM ringmail.suppression) AS sup ON sup.address = lower(d.address)"
                      " WHERE NOT EXISTS (SELECT 1 FROM ringmail.recipient AS r"
                      " WHERE r.campaign_id = $1::bigint AND r.address = d.address)"
                      " ORDER BY d.ord RETURNING state)"
                      " SELECT ");
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

/* Where the first CSV record of p[0..n) ends (one past its line end: LF,
 * CRLF or CR, as COPY accepts), and its number of fields; 0 when it does
 * not end within n bytes and more may come. Quotes only toggle: a doubled
 * quote toggles twice. */
static size_t import_csv_first_record(const char *p, size_t n, int eof, size_t *fields)
{
    int quoted = 0;
    size_t commas = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"') {
            quoted = !quoted;
        } else if (!quoted && p[i] == ',') {
            commas++;
        } else if (!quoted && (p[i] == '\n' || p[i] == '\r')) {
            *fields = commas + 1;
            return i + 1;
        }
    }
    if (eof && n > 0) {
        *fields = commas + 1;
        return n;
    }
    return 0;
}

/* Read from f until head holds the whole first record (a UTF-8 byte order
 * mark dropped); its field count in *fields, 0 for an empty file. */
static int import_csv_read_header(FILE *f, const char *path, buf_t *head, size_t *fields, char *err,
                                  size_t errlen)
{
    int eof = 0, first = 1;
    *fields = 0;
    while (!import_csv_first_record(buf_data(head), buf_len(head), eof, fields) && !eof) {
        if (buf_len(head) > IMPORT_HEADER_MAX) {
            snprintf(err, errlen,
                     "%s: the header record is longer than %d bytes (unbalanced quote?)", path,
                     IMPORT_HEADER_MAX);
            return IMPORT_BAD_INPUT;
        }
        char *w = buf_reserve(head, IMPORT_CHUNK);
        size_t got = fread(w, 1, IMPORT_CHUNK, f);
        buf_commit(head, got);
        if (got < IMPORT_CHUNK) {
            if (ferror(f)) {
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
                return IMPORT_BAD_INPUT;
            }
            eof = 1;
        }
        if (first && buf_len(head) >= 3 && memcmp(buf_data(head), "\xEF\xBB\xBF", 3) == 0) {
            buf_consume(head, 3);
        }
        first = 0;
    }
    if (*fields == 0) {
        snprintf(err, errlen, "%s: empty file (the first row must name the columns)", path);
        return IMPORT_BAD_INPUT;
    }
    if (*fields > IMPORT_MAX_COLUMNS) {
        snprintf(err, errlen, "%s: %zu columns, at most %d are supported", path, *fields,
                 IMPORT_MAX_COLUMNS);
        return IMPORT_BAD_INPUT;
    }
    return IMPORT_OK;
}

/* COPY the header already read and the rest of f into ringmail_import. */
static int import_csv_copy(PGconn *c, FILE *f, const char *path, buf_t *head, size_t fields,
                           long long *records, char *err, size_t errlen)
{
    buf_t sql = BUF_INIT;
    buf_append_str(&sql, "CREATE TEMP TABLE ringmail_import (ord bigserial");
    for (size_t i = 1; i <= fields; i++) {
        buf_appendf(&sql, ", c%zu text", i);
    }
    buf_append_str(&sql, ") ON COMMIT DROP");
    int rc = db_exec(c, buf_cstr(&sql), err, errlen) < 0 ? IMPORT_DB_ERROR : IMPORT_OK;
    buf_reset(&sql);
    buf_append_str(&sql, "COPY ringmail_import (");
    for (size_t i = 1; i <= fields; i++) {
        buf_appendf(&sql, "%sc%zu", i > 1 ? ", " : "", i);
    }
    buf_append_str(&sql, ") FROM STDIN WITH (FORMAT csv, HEADER false)");
    PGresult *r = rc == IMPORT_OK ? pq.PQexec(c, buf_cstr(&sql)) : NULL;
    buf_free(&sql);
    if (rc != IMPORT_OK) {
        return rc;
    }
    if (!r || pq.PQresultStatus(r) != PGRES_COPY_IN) {
        import_pg_error(r, c, err, errlen);
        pq.PQclear(r);
        return IMPORT_DB_ERROR;
    }
    pq.PQclear(r);

    int read_failed = 0;
    int sent = pq.PQputCopyData(c, buf_data(head), (int)buf_len(head));
    char *chunk = malloc(IMPORT_CHUNK);
    if (!chunk) {
        abort();
    }
    while (sent == 1) {
        size_t got = fread(chunk, 1, IMPORT_CHUNK, f);
        if (got > 0) {
            sent = pq.PQputCopyData(c, chunk, (int)got);
        }
        if (got < IMPORT_CHUNK) {
            if (ferror(f)) {
                read_failed = 1;
                snprintf(err, errlen, "%s: %s", path, strerror(errno));
            }
            break;
        }
    }
    free(chunk);
    if (sent == 1 && pq.PQputCopyEnd(c, read_failed ? "read error" : NULL) != 1) {
        sent = -1;
    }
    rc = IMPORT_OK;
    if (sent != 1) {
        import_pg_error(NULL, c, err, errlen);
        rc = IMPORT_DB_ERROR;
    }
    while ((r = pq.PQgetResult(c)) != NULL) {
        ExecStatusType st = pq.PQresultStatus(r);
        if (st == PGRES_COMMAND_OK) {
            *records = atoll(pq.PQcmdTuples(r));
        } else if (rc == IMPORT_OK && !read_failed) {
            import_pg_error(r, c, err, errlen);
            rc = IMPORT_DB_ERROR;
        }
        pq.PQclear(r);
        if (st == PGRES_COPY_IN) {
            break; /* the connection failed mid-COPY: nothing more will come */
        }
    }
    return read_failed ? IMPORT_BAD_INPUT : rc;
}

/* The merge variables: every column but the address, keyed by its header
 * name (trimmed; unnamed columns are left out). header is the table's
 * first row: field 0 is ord, field i is column c<i>. */
static int import_csv_vars(PGconn *c, PGresult *header, int email_col, buf_t *out, char *err,
                           size_t errlen)
{
    int pairs = 0;
    for (int i = 1; i < pq.PQnfields(header); i++) {
        const char *name = pq.PQgetvalue(header, 0, i);
        size_t len = strlen(name);
        while (len > 0 && (*name == ' ' || *name == '\t')) {
            name++, len--;
        }
        while (len > 0 &&
               (name[len - 1] == ' ' || name[len - 1] == '\t' || name[len - 1] == '\r')) {
            len--;
        }
        if (i == email_col || len == 0) {
            continue;
        }
        char *key = pq.PQescapeLiteral(c, name, len);
        if (!key) {
            import_pg_error(NULL, c, err, errlen);
            return IMPORT_DB_ERROR;
        }
        if (pairs % IMPORT_PAIRS_PER_CALL == 0) {
            buf_append_str(out, pairs ? ") || jsonb_build_object(" : "jsonb_build_object(");
        } else {
            buf_append_str(out, ", ");
        }
        buf_appendf(out, "%s, coalesce(t.c%d, '')", key, i);
        pq.PQfreemem(key);
        pairs++;
    }
    buf_append_str(out, pairs ? ")" : "'{}'::jsonb");
    return IMPORT_OK;
}

static int import_csv(PGconn *c, const struct import_options *o, struct import_counts *n, char *err,
                      size_t errlen)
{
    int stdin_input = strcmp(o->csv_path, "-") == 0;
    FILE *f = stdin_input ? stdin : fopen(o->csv_path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", o->csv_path, strerror(errno));
        return IMPORT_BAD_INPUT;
    }
    buf_t head = BUF_INIT;
    size_t fields = 0;
    long long records = 0;
    int rc = import_csv_read_header(f, o->csv_path, &head, &fields, err, errlen);
    if (rc == IMPORT_OK) {
        rc = import_csv_copy(c, f, o->csv_path, &head, fields, &records, err, errlen);
    }
    buf_free(&head);
    if (!stdin_input) {
        fclose(f);
    }
    if (rc != IMPORT_OK) {
        return rc;
    }

    PGresult *header =
        import_exec(c, "SELECT * FROM ringmail_import ORDER BY ord LIMIT 1", NULL, err, errlen);
    if (!header) {
        return IMPORT_DB_ERROR;
    }
    /* Column 0 is ord; the file's columns follow. */
    int email_col = 1;
    for (int i = 1; i < pq.PQnfields(header); i++) {
        const char *name = pq.PQgetvalue(header, 0, i);
        name += strspn(name, " \t");
        if (strncasecmp(name, "email", 5) == 0 && name[5 + strspn(name + 5, " \t\r")] == '\0') {
            email_col = i;
            break;
        }
    }
    long long header_ord = atoll(pq.PQgetvalue(header, 0, 0));
    buf_t vars = BUF_INIT;
    rc = import_csv_vars(c, header, email_col, &vars, err, errlen);
    pq.PQclear(header);

    buf_t src = BUF_INIT, rows = BUF_INIT, sql = BUF_INIT;
    buf_appendf(&src, "SELECT t.ord, t.c%d AS raw, %s AS vars FROM ringmail_import AS t", email_col,
                buf_cstr(&vars));
    buf_appendf(&src, " WHERE t.ord > %lld", header_ord);
    buf_appendf(&rows, "%lld", records - 1);
    import_sql_insert(&sql, buf_cstr(&src), buf_cstr(&rows));
    if (rc == IMPORT_OK) {
        rc = import_run_insert(c, buf_cstr(&sql), o->campaign, n, err, errlen);
    }
    buf_free(&vars);
    buf_free(&src);
    buf_free(&rows);
    buf_free(&sql);
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
    import_sql_insert(&sql, buf_cstr(&src), "(SELECT count(*) FROM ringmail_src)");
    int rc = import_run_insert(c, buf_cstr(&sql), o->campaign, n, err, errlen);
    buf_free(&src);
    buf_free(&sql);
    return rc;
}

/* ---- command ---- */

static void import_usage(FILE *f)
{
    fprintf(f,
            "usage: ringmail recipients import --db URL --campaign ID (--csv FILE | --sql QUERY)\n"
            "\n"
            "  --csv FILE    CSV with a header row ('-' = stdin). The column named 'email'\n"
            "                (any case; else the first column) is the address; every other\n"
            "                column becomes a merge variable named by its header.\n"
            "  --sql QUERY   a SELECT run inside the database: first column the address,\n"
            "                optional second column the merge variables (jsonb, json or JSON\n"
            "                text, an object).\n"
            "\n"
            "  Addresses are trimmed and their domain lower-cased; undeliverable ones are\n"
            "  stored as 'invalid' with the reason, suppressed ones as 'suppressed'; an\n"
            "  address already in the campaign (or earlier in the input) is skipped. One\n"
            "  transaction. Prints: imported N: queued Q, invalid I, suppressed S, duplicates D\n"
            "  (N rows read = Q + I + S + D).\n");
}

static int import_parse(int argc, char **argv, struct import_options *o)
{
    static const struct option longopts[] = {
        {"db", required_argument, 0, 'd'},  {"campaign", required_argument, 0, 'c'},
        {"csv", required_argument, 0, 'f'}, {"sql", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},      {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
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
    }
    if (problem) {
        fprintf(stderr, "ringmail recipients import: %s\n", problem);
        return 2;
    }
    return -1;
}

/* 1 when the campaign exists, after taking its import lock: imports into
 * one campaign run one after the other (see import_sql_insert). Advisory
 * lock class 7413 (db migrate uses 7412). */
static int import_campaign_exists(PGconn *c, const char *campaign, char *err, size_t errlen)
{
    PGresult *r = import_exec(c,
                              "SELECT pg_advisory_xact_lock(7413, (id % 2147483647)::int)"
                              " FROM ringmail.campaign WHERE id = $1 FOR KEY SHARE",
                              campaign, err, errlen);
    if (!r) {
        return -1;
    }
    int found = pq.PQntuples(r) == 1;
    pq.PQclear(r);
    if (!found) {
        snprintf(err, errlen, "campaign %s does not exist (ringmail campaign list)", campaign);
    }
    return found;
}

int import_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "import") != 0) {
        int help = argc >= 2 && strcmp(argv[1], "--help") == 0;
        if (!help) {
            opt_no_subcommand("recipients", argc >= 2 ? argv[1] : NULL, "import");
        }
        import_usage(help ? stdout : stderr);
        return help ? 0 : 2;
    }
    struct import_options o = {0};
    int rc = import_parse(argc - 1, argv + 1, &o);
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
    /* The file is UTF-8 whatever the database's encoding; work_mem lets the
     * sort that orders "first wins" stay in memory for large imports. */
    rc = IMPORT_DB_ERROR;
    if (db_exec(c,
                "SET client_encoding = 'UTF8'; SET standard_conforming_strings = on;"
                "BEGIN; SET LOCAL work_mem = '256MB'",
                err, sizeof err) == 0) {
        int exists = import_campaign_exists(c, o.campaign, err, sizeof err);
        if (exists > 0) {
            rc = o.csv_path ? import_csv(c, &o, &n, err, sizeof err)
                            : import_query(c, &o, &n, err, sizeof err);
        }
        if (rc == IMPORT_OK && db_exec(c, "COMMIT", err, sizeof err) < 0) {
            rc = IMPORT_DB_ERROR;
        }
    }
    /* Fresh statistics before the first claim: unanalyzed, the planner
     * guesses a handful of due rows and claims with a bitmap scan and a sort
     * of every due row (80 ms per claim at 200,000 instead of 4) until
     * autovacuum comes by. ANALYZE reads a fixed-size sample (~0.2 s);
     * failing it loses nothing that was imported. */
    if (rc == IMPORT_OK && n.inserted > 0 &&
        db_exec(c, "ANALYZE ringmail.recipient", err, sizeof err) < 0) {
        fprintf(stderr, "ringmail recipients import: warning: ANALYZE: %s\n", err);
    }
    if (rc != IMPORT_OK) {
        char ignore[256];
        db_exec(c, "ROLLBACK", ignore, sizeof ignore);
        fprintf(stderr, "ringmail recipients import: %s\n", err);
    } else {
        printf("imported %lld: queued %lld, invalid %lld, suppressed %lld, duplicates %lld\n",
               n.rows, n.queued, n.invalid, n.suppressed, n.rows - n.inserted);
    }
    pq.PQfinish(c);
    return rc;
}
