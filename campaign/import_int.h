/*
 * import_int - what the `ringmail recipients` files share: import.c (the
 * command and its SQL), import_csv.c (the CSV reader: records, fields,
 * encodings, the rejects file), import_progress.c (the terminal's progress
 * line), import_fields.c (merge fields the data does not provide) and
 * recipients_list.c (`recipients list`).
 *
 * Diagnostics: the reader's and the rejects file's functions return -1
 * with one line in err (the file's path first); a bad row is not an error
 * of the reader but a record with `problem` set or a value that
 * import_value refuses, worded by import_value_problem_text. The progress
 * line writes to stderr only when stderr is a terminal.
 */
#ifndef RINGMAIL_IMPORT_INT_H
#define RINGMAIL_IMPORT_INT_H

#include <iconv.h>
#include <pthread.h>
#include <stdio.h>

#include "campaign/pq.h"
#include "engine/buf.h"

/* ---- the CSV reader (import_csv.c) ----
 *
 * RFC 4180 with the usual liberties: records end with LF, CRLF or a lone
 * CR; a field that starts with '"' is quoted (delimiters, line ends and
 * doubled quotes inside it are data), a quote inside an unquoted field is
 * an ordinary character; a UTF-8 byte order mark at the start is dropped.
 * The file is read through a window that holds at least one whole record
 * (IMPORT_RECORD_MAX at most); with an encoding other than UTF-8 it is
 * converted by iconv(3) before it is parsed, and a byte that does not
 * convert is kept as a three-byte marker (IMPORT_MARK, never in UTF-8)
 * that the field check reports and the rejects file turns back into the
 * byte. Line numbers are physical lines of the file, from 1 (the header),
 * quoted line breaks included. */

#define IMPORT_RECORD_MAX (16 * 1024 * 1024)
#define IMPORT_MARK 0xFF

enum import_row_problem {
    IMPORT_ROW_OK = 0,
    IMPORT_ROW_UNTERMINATED, /* a quoted field never closed (end of file, or past the maximum) */
    IMPORT_ROW_AFTER_QUOTE,  /* text between a closing quote and the delimiter */
};

/* One field of the current record: w[off .. off+len) of the window (a
 * quoted field without its quotes; esc when it holds doubled quotes). */
struct import_field {
    size_t off, len;
    int esc, quoted;
};

struct import_csv {
    FILE *f;
    const char *path;
    char delim;
    unsigned char special[256]; /* ends an unquoted field: delim, CR, LF */
    iconv_t cd;                 /* to UTF-8; (iconv_t)-1 when the file is UTF-8 */
    const char *encoding;       /* as given ("utf-8" when none) */
    char *raw;                  /* unconverted bytes read ahead (iconv only) */
    size_t rawlen, rawcap;
    int raw_eof;
    char *w; /* the window: converted bytes [0, wlen) */
    size_t wcap, wlen;
    int eof;                  /* everything is in the window */
    int started;              /* the byte order mark was looked at */
    unsigned long long bytes; /* bytes read from the file so far */
    long long size;           /* the file's size, -1 when not a regular file */
    size_t next;              /* where the next record starts */
    long next_line;
    /* the current record (valid until the next import_csv_next) */
    size_t start, end; /* its bytes, without the line end */
    long line;         /* its first line */
    long lines;        /* line breaks inside it (quoted) */
    struct import_field *fields;
    size_t nfields, fcap;
    int problem;          /* enum import_row_problem */
    size_t problem_field; /* index of the field with the problem */
    int in_quote;         /* while parsing: the window ended inside a quoted field */
};

/* Open path ("-": stdin) to be read with delimiter delim in encoding (NULL,
 * "utf-8" or "utf8": no conversion). 0, or -1 with the reason in err
 * (an unknown encoding, an unreadable file). */
int import_csv_open(struct import_csv *r, const char *path, char delim, const char *encoding,
                    char *err, size_t errlen);
void import_csv_close(struct import_csv *r);
/* The next record: 1, 0 at the end of the file, -1 with the reason in err
 * (a read error, a line over IMPORT_RECORD_MAX outside quotes, a UTF-16
 * file read as UTF-8). */
int import_csv_next(struct import_csv *r, char *err, size_t errlen);
/* After a record with IMPORT_ROW_UNTERMINATED: go on with the line after
 * its first line (the quote is taken for a stray one). */
void import_csv_resync(struct import_csv *r);
/* Where the record's first line ends (the raw text of an unterminated row). */
size_t import_csv_first_line_end(const struct import_csv *r);
/* 1 for a record that is an empty line (skipped, not counted). */
int import_csv_blank(const struct import_csv *r);
/* 1 when iconv converts the file. */
static inline int import_csv_converts(const struct import_csv *r)
{
    return r->cd != (iconv_t)-1;
}

/* What is wrong with a field's value. */
struct import_value_problem {
    enum { IMPORT_VALUE_NUL = 1, IMPORT_VALUE_UTF8, IMPORT_VALUE_UNCONVERTED } kind;
    size_t
        offset; /* bytes into the value (UTF-8: the value as read; other encodings: characters) */
    unsigned char byte; /* the offending byte (for UNCONVERTED, the file's byte) */
};

/* Append field's value to out (doubled quotes made single), escaped for
 * COPY's text format when copy_escape; 0, or -1 with *pb filled and out as
 * it was. */
int import_value(const struct import_csv *r, const struct import_field *f, int copy_escape,
                 buf_t *out, struct import_value_problem *pb);
/* "invalid UTF-8 (byte 0xE9 at offset 3; try --encoding latin1)" and the like. */
void import_value_problem_text(const struct import_csv *r, const struct import_value_problem *pb,
                               char *out, size_t outlen);

/* The rejects file of --skip-bad-rows: CSV in the input's delimiter and
 * encoding, "line", "reason", then the header's columns as they were;
 * each bad row is its line number, the reason, then the row as it was
 * (a row whose quotes do not parse as one quoted field). */
struct import_rejects {
    FILE *f;
    const char *path;
    iconv_t back; /* UTF-8 to the file's encoding; (iconv_t)-1: none */
    char delim;
    int failed;
};
int import_rejects_open(struct import_rejects *j, const char *path, const struct import_csv *r,
                        char *err, size_t errlen);
/* The header record (the current one of r). */
void import_rejects_header(struct import_rejects *j, const struct import_csv *r);
/* raw[0..rawlen) is written as it is, or as one quoted field when quote. */
void import_rejects_row(struct import_rejects *j, long line, const char *reason, const char *raw,
                        size_t rawlen, int quote);
int import_rejects_close(struct import_rejects *j, char *err, size_t errlen);

/* ---- progress on a terminal (import_progress.c) ---- */

enum import_phase {
    IMPORT_PHASE_READ,
    IMPORT_PHASE_CHECK,
    IMPORT_PHASE_STORE,
    IMPORT_PHASE_FINISH
};

struct import_progress {
    int on;          /* stderr is a terminal */
    int shown;       /* a line is on the screen */
    int drawn;       /* a line was shown once */
    double start;    /* monotonic seconds */
    double last;     /* the last update */
    double phase_at; /* when the phase began */
    double tail_at;  /* when the last rows were stored (0: not yet) */
    int phase;       /* enum import_phase */
    double done;     /* the share of the phase's rows done */
    long long rows;  /* rows read */
    long long bytes; /* bytes read */
    long long size;  /* of the file; -1 unknown */
    long last_line;  /* the last line given to the database (its phases' 100%) */
    long long ticks; /* calls since the clock was read */
    pthread_mutex_t lock;
    pthread_t ticker;
    int ticking, stop;
};

void import_progress_init(struct import_progress *p, int on, long long size);
/* While reading: rows read so far, bytes of the file read (draws). */
void import_progress_read(struct import_progress *p, long long rows, long long bytes);
/* The final counts of the reading (does not draw). */
void import_progress_rows(struct import_progress *p, long long rows, long long bytes);
/* The database's phases: the line of the row it has reached. */
void import_progress_db(struct import_progress *p, int phase, long line);
/* A thread that redraws the line while the database works quietly. */
void import_progress_ticker_start(struct import_progress *p);
void import_progress_ticker_stop(struct import_progress *p);
/* Clear the line before other output; it comes back at the next update. */
void import_progress_clear(struct import_progress *p);
/* Stop the thread; if a line was shown, the last one (ok: the time it
 * took and the overall rows/s) and a newline. */
void import_progress_end(struct import_progress *p, int ok);
/* A libpq notice processor: "ringmail-progress PHASE LINE" notices update
 * the line (arg is the struct import_progress); others go to stderr. */
void import_progress_notice(void *arg, const char *message);

/* ---- merge fields the data does not provide (import_fields.c) ---- */

/* One field the templates use without a default, with where ("subject, html"). */
struct import_tfield {
    char *name;
    char where[96];
};
struct import_tfields {
    struct import_tfield *v;
    size_t n;
};

/* The fields of the campaign's templates (a row of mail_from, subject,
 * text_body, html_body, list_unsubscribe) that have no default, other than
 * email and the unsubscribe token. 0, or -1 with a reason in err (the
 * templates do not compile). */
int import_fields_load(PGresult *campaign, int row, int col, struct import_tfields *out, char *err,
                       size_t errlen);
void import_fields_free(struct import_tfields *t);
/* Warn about each field that is not one of names[0..n) (the merge variables
 * the CSV gives); address_col is the name of the address column when it
 * is not "email" (NULL otherwise). */
void import_fields_warn_csv(const struct import_tfields *t, char *const *names, size_t n,
                            const char *address_col, struct import_progress *p);
/* After an --sql import: warn about each field that no recipient of the
 * campaign has among its merge variables (vars = 0: the query gave none). */
void import_fields_warn_sql(PGconn *c, const char *campaign, const struct import_tfields *t,
                            int vars);

/* ---- `ringmail recipients list` (recipients_list.c) ---- */

void recipients_list_usage(FILE *f);

#endif
