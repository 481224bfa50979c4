/*
 * smtp_reply - incremental parser for SMTP server replies (RFC 5321 4.2)
 *
 * Bytes from the server arrive in arbitrary pieces: one reply split over
 * many reads, or several replies in one read. smtp_reply_parse() consumes
 * bytes until one complete reply (all its lines, the last one "NNN " or a
 * bare "NNN") has been seen, and hands it back. A partial line is kept
 * inside the parser. The peer is not trusted: lines longer than
 * SMTP_REPLY_LINE_MAX, more than SMTP_REPLY_LINES_MAX lines, codes that
 * are not three digits or that change within one multiline reply are
 * errors, with a reason string.
 *
 * The enhanced status code (RFC 3463, "class.subject.detail") is taken
 * from the first line when present. Text is kept per line (without the
 * "NNN-" prefix), joined with '\n', bounded to SMTP_REPLY_TEXT_MAX bytes
 * (longer text is truncated, not an error). Both CRLF and bare LF end a line.
 */
#ifndef RINGMAIL_SMTP_REPLY_H
#define RINGMAIL_SMTP_REPLY_H

#include <stddef.h>

#include "buf.h"

#define SMTP_REPLY_LINE_MAX 4096
#define SMTP_REPLY_LINES_MAX 128
#define SMTP_REPLY_TEXT_MAX 8192

struct smtp_reply {
    int code;          /* 200..599 */
    char enhanced[16]; /* "4.7.28", or "" when absent */
    int lines;         /* number of lines in the reply */
    buf_t text;        /* owned: line texts joined with '\n', no code prefix, no CRLF */
};

enum smtp_reply_status {
    SMTP_REPLY_ERROR = -1, /* malformed; *err set; the parser must be re-initialised */
    SMTP_REPLY_MORE = 0,   /* every byte consumed, no complete reply yet */
    SMTP_REPLY_DONE = 1,   /* *out holds a complete reply; *used bytes consumed */
};

struct smtp_reply_parser {
    buf_t line;            /* owned: bytes of the current partial line */
    struct smtp_reply cur; /* reply being assembled */
    int in_reply;          /* a continuation line ("NNN-") has been seen */
};

void smtp_reply_init(struct smtp_reply *r);
void smtp_reply_free(struct smtp_reply *r);
/* Copy the whole reply (code, enhanced, text) into dst, reusing dst's storage. */
void smtp_reply_copy(struct smtp_reply *dst, const struct smtp_reply *src);

void smtp_reply_parser_init(struct smtp_reply_parser *p);
void smtp_reply_parser_free(struct smtp_reply_parser *p);
/* Forget any partial input (after STARTTLS, before the handshake). */
void smtp_reply_parser_reset(struct smtp_reply_parser *p);
/* True when the parser holds bytes of an unfinished reply. */
int smtp_reply_parser_pending(const struct smtp_reply_parser *p);

/*
 * Feed len bytes. On SMTP_REPLY_DONE, *out (reset first, storage reused)
 * holds the reply and *used is the number of bytes consumed; call again
 * with the rest. On SMTP_REPLY_MORE all bytes were consumed. On error
 * *err is a static string ("reply line too long", "malformed reply code",
 * "reply code changed within multiline reply", "too many reply lines").
 */
enum smtp_reply_status smtp_reply_parse(struct smtp_reply_parser *p, const char *data, size_t len,
                                        size_t *used, struct smtp_reply *out, const char **err);

/* Line i (0-based) of the reply's text, length in *len; NULL if out of range. */
const char *smtp_reply_line(const struct smtp_reply *r, int i, size_t *len);

#endif
