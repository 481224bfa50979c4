/*
 * smtp_reply - incremental parser for SMTP server replies (RFC 5321 4.2)
 *
 * SYNOPSIS
 *     #include "engine/smtp_reply.h"
 *
 *     smtp_reply_parser_init(&p);
 *     while ((st = smtp_reply_parse(&p, data, len, &used, &reply, &err)) == SMTP_REPLY_DONE) {
 *         ... act on reply ...; data += used; len -= used;
 *     }
 *
 * DESCRIPTION
 *     Lines are cut with memchr. A line that is complete inside the
 *     caller's bytes is parsed in place; only an unfinished tail is copied
 *     into the parser, so whole replies in one read copy nothing but their
 *     text. The tail is bounded to SMTP_REPLY_LINE_MAX + 1 bytes (room for
 *     a CR whose LF is still on the wire), and the first four bytes of a
 *     line are checked as soon as they arrive: the verdict on a line never
 *     depends on how the peer split it, and garbage is refused at once
 *     instead of being buffered until a line end that may never come.
 *
 *     A line is "NNN", "NNN text" or "NNN-text" with NNN in 200..599; a
 *     line ends with LF, and one CR before the LF is dropped. Line length
 *     is counted without the line ending. The enhanced status code (RFC
 *     3463) is taken from the first line when its class matches the reply
 *     code's first digit; it stays part of the text.
 *
 *     The completed reply is swapped into the caller's struct, so the
 *     caller's old text storage becomes the parser's next one: after
 *     warm-up a reply costs no allocation.
 *
 * EXPORTS
 *     smtp_reply_init, smtp_reply_free, smtp_reply_copy,
 *     smtp_reply_parser_init, smtp_reply_parser_free,
 *     smtp_reply_parser_reset, smtp_reply_parser_pending,
 *     smtp_reply_parse, smtp_reply_line.
 *
 * DIAGNOSTICS
 *     smtp_reply_parse returns SMTP_REPLY_ERROR with *err one of the static
 *     strings "reply line too long", "malformed reply code", "reply code
 *     changed within multiline reply", "too many reply lines". The parser
 *     then drops its partial state, so a half-read reply is never acted on;
 *     the connection should be closed.
 */
#include "smtp_reply.h"

#include <string.h>

void smtp_reply_init(struct smtp_reply *r)
{
    r->code = 0;
    r->enhanced[0] = '\0';
    r->lines = 0;
    buf_init(&r->text);
}

void smtp_reply_free(struct smtp_reply *r)
{
    buf_free(&r->text);
    smtp_reply_init(r);
}

/* Empty the reply but keep its text storage for the next one. */
static void smtp_reply_clear(struct smtp_reply *r)
{
    r->code = 0;
    r->enhanced[0] = '\0';
    r->lines = 0;
    buf_reset(&r->text);
}

void smtp_reply_copy(struct smtp_reply *dst, const struct smtp_reply *src)
{
    if (dst == src) {
        return;
    }
    dst->code = src->code;
    memcpy(dst->enhanced, src->enhanced, sizeof dst->enhanced);
    dst->lines = src->lines;
    buf_reset(&dst->text);
    buf_append(&dst->text, buf_data(&src->text), buf_len(&src->text));
}

void smtp_reply_parser_init(struct smtp_reply_parser *p)
{
    buf_init(&p->line);
    smtp_reply_init(&p->cur);
    p->in_reply = 0;
}

void smtp_reply_parser_free(struct smtp_reply_parser *p)
{
    buf_free(&p->line);
    smtp_reply_free(&p->cur);
    p->in_reply = 0;
}

void smtp_reply_parser_reset(struct smtp_reply_parser *p)
{
    buf_reset(&p->line);
    smtp_reply_clear(&p->cur);
    p->in_reply = 0;
}

int smtp_reply_parser_pending(const struct smtp_reply_parser *p)
{
    return p->in_reply || buf_len(&p->line) > 0;
}

static int smtp_reply_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/*
 * Whether the first min(n, 4) bytes of a line can start a reply line.
 * Position 3 may also hold the CR of "NNN\r\n" while the LF is unseen;
 * a CR left there in a complete line is refused by smtp_reply_code.
 */
static int smtp_reply_prefix_ok(const char *s, size_t n)
{
    if (n > 0 && (s[0] < '2' || s[0] > '5')) {
        return 0;
    }
    for (size_t i = 1; i < n && i < 3; i++) {
        if (!smtp_reply_is_digit(s[i])) {
            return 0;
        }
    }
    return n < 4 || s[3] == ' ' || s[3] == '-' || s[3] == '\r';
}

/* The code of a complete line (line ending removed), or -1. */
static int smtp_reply_code(const char *s, size_t n)
{
    if (n < 3 || !smtp_reply_prefix_ok(s, n) || (n > 3 && s[3] == '\r')) {
        return -1;
    }
    return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
}

/* Digits at s[i..n), 1 to 3 of them; returns the index after them, or 0. */
static size_t smtp_reply_digits(const char *s, size_t i, size_t n)
{
    size_t start = i;
    while (i < n && i - start < 3 && smtp_reply_is_digit(s[i])) {
        i++;
    }
    return i > start ? i : 0;
}

/*
 * Length of an RFC 3463 code ("4.7.28") at the start of text, or 0.
 * The class must be the reply's own (a "451 5.1.1" is a lie in one of its
 * two places, and the reply code is what the protocol acts on); it must be
 * followed by a space or the end of the line.
 */
static size_t smtp_reply_enhanced_len(const char *s, size_t n, char reply_class)
{
    if (n < 5 || s[0] != reply_class || s[1] != '.') {
        return 0;
    }
    size_t i = smtp_reply_digits(s, 2, n);
    if (i == 0 || i >= n || s[i] != '.') {
        return 0;
    }
    i = smtp_reply_digits(s, i + 1, n);
    if (i == 0 || (i < n && s[i] != ' ')) {
        return 0;
    }
    return i;
}

/* Append one line's text, '\n'-joined, never beyond SMTP_REPLY_TEXT_MAX. */
static void smtp_reply_add_text(struct smtp_reply *r, const char *s, size_t n)
{
    size_t have = buf_len(&r->text);
    if (r->lines > 0 && have < SMTP_REPLY_TEXT_MAX) {
        buf_append(&r->text, "\n", 1);
        have++;
    }
    size_t room = SMTP_REPLY_TEXT_MAX - have;
    buf_append(&r->text, s, n < room ? n : room);
}

/* One complete line without its line ending: -1 error, 0 more lines follow, 1 reply done. */
static int smtp_reply_take_line(struct smtp_reply_parser *p, const char *s, size_t n,
                                const char **err)
{
    struct smtp_reply *r = &p->cur;
    int code = smtp_reply_code(s, n);
    if (code < 0) {
        *err = "malformed reply code";
        return -1;
    }
    if (r->lines > 0 && code != r->code) {
        *err = "reply code changed within multiline reply";
        return -1;
    }
    if (r->lines >= SMTP_REPLY_LINES_MAX) {
        *err = "too many reply lines";
        return -1;
    }
    const char *text = n > 4 ? s + 4 : s + n;
    size_t tlen = n > 4 ? n - 4 : 0;
    if (r->lines == 0) {
        r->code = code;
        size_t e = smtp_reply_enhanced_len(text, tlen, s[0]);
        if (e > 0 && e < sizeof r->enhanced) {
            memcpy(r->enhanced, text, e);
            r->enhanced[e] = '\0';
        }
    }
    smtp_reply_add_text(r, text, tlen);
    r->lines++;
    int last = n == 3 || s[3] == ' ';
    p->in_reply = !last;
    return last;
}

/* Swap the finished reply into *out so out's storage is reused for the next one. */
static void smtp_reply_hand_over(struct smtp_reply_parser *p, struct smtp_reply *out)
{
    struct smtp_reply old = *out;
    *out = p->cur;
    p->cur = old;
    smtp_reply_clear(&p->cur);
}

static enum smtp_reply_status smtp_reply_fail(struct smtp_reply_parser *p, const char **err,
                                              const char *why)
{
    *err = why;
    smtp_reply_parser_reset(p);
    return SMTP_REPLY_ERROR;
}

/*
 * Whether the line being cut can still be a reply line, judged on its first
 * four bytes: those kept from earlier reads, then the new bytes s[0..n).
 * Checked before the length, on every read, so that garbage is refused on
 * its first bad byte and with the same reason however the peer split it.
 */
static int smtp_reply_head_ok(const struct smtp_reply_parser *p, const char *s, size_t n)
{
    size_t had = buf_len(&p->line);
    if (had >= 4) {
        return 1; /* judged when those bytes arrived */
    }
    if (had == 0) {
        return smtp_reply_prefix_ok(s, n < 4 ? n : 4);
    }
    char head[4];
    size_t more = n < 4 - had ? n : 4 - had;
    memcpy(head, buf_data(&p->line), had);
    memcpy(head + had, s, more);
    return smtp_reply_prefix_ok(head, had + more);
}

enum smtp_reply_status smtp_reply_parse(struct smtp_reply_parser *p, const char *data, size_t len,
                                        size_t *used, struct smtp_reply *out, const char **err)
{
    size_t off = 0;
    *used = 0;
    while (off < len) {
        const char *start = data + off;
        const char *nl = memchr(start, '\n', len - off);
        size_t seg = nl ? (size_t)(nl - start) : len - off;
        size_t had = buf_len(&p->line);
        if (!smtp_reply_head_ok(p, start, seg)) {
            return smtp_reply_fail(p, err, "malformed reply code");
        }
        if (had + seg > SMTP_REPLY_LINE_MAX + 1) {
            return smtp_reply_fail(p, err, "reply line too long");
        }
        if (!nl) {
            buf_append(&p->line, start, seg);
            *used = len;
            return SMTP_REPLY_MORE;
        }
        off += seg + 1;
        const char *line = start;
        size_t n = seg;
        if (had > 0) {
            buf_append(&p->line, start, seg);
            line = buf_data(&p->line);
            n = buf_len(&p->line);
        }
        if (n > 0 && line[n - 1] == '\r') {
            n--;
        }
        if (n > SMTP_REPLY_LINE_MAX) {
            return smtp_reply_fail(p, err, "reply line too long");
        }
        int rc = smtp_reply_take_line(p, line, n, err);
        buf_reset(&p->line);
        if (rc < 0) {
            return smtp_reply_fail(p, err, *err);
        }
        if (rc == 1) {
            smtp_reply_hand_over(p, out);
            *used = off;
            return SMTP_REPLY_DONE;
        }
    }
    *used = off;
    return SMTP_REPLY_MORE;
}

const char *smtp_reply_line(const struct smtp_reply *r, int i, size_t *len)
{
    if (i < 0 || i >= r->lines) {
        return NULL;
    }
    const char *s = buf_data(&r->text), *end = s + buf_len(&r->text);
    for (; i > 0; i--) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        if (!nl) {
            return NULL; /* the line fell past SMTP_REPLY_TEXT_MAX */
        }
        s = nl + 1;
    }
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    *len = (size_t)((nl ? nl : end) - s);
    return s;
}
