/*
 * smtp_data - a message as it travels after DATA (RFC 5321 4.5.2, 2.3.8)
 *
 * SYNOPSIS
 *     #include "engine/smtp_data.h"
 *
 *     smtp_data_scan(msg, len, &info);        once per message
 *     if (info.longest <= SMTP_LINE_MAX)
 *         smtp_data_write(&out, msg, len, &info);
 *
 *     or, in one call: smtp_data_encode(&out, msg, len, &info, &err);
 *
 * DESCRIPTION
 *     A line ends at CRLF, at a bare LF or at a bare CR; each becomes CRLF
 *     on the wire, so the output never carries a bare CR or LF (the SMTP
 *     smuggling hole: a peer that reads "\n.\n" as the end of data would
 *     otherwise see a second message). A line starting with '.' gets one
 *     more '.'; a last line without an ending gets one; ".\r\n" follows.
 *
 *     The usual message is already in wire form (CRLF endings, the last
 *     line ended, no line starting with '.': what a renderer makes). The
 *     scan looks for that first: one pass a word at a time for 8-bit bytes
 *     and CRs, one memchr per line for the LFs, each preceded by a CR, and
 *     as many CRs as lines (so there is no bare CR). Such a message is
 *     as_is, and smtp_data_write copies it in one piece; its line count and
 *     longest line are exact, and they stay exact with lines starting with
 *     '.' (those only need the line-by-line write).
 *
 *     Any other message takes the general walk: lines are found with
 *     memchr, one search per byte value, each result kept until the cursor
 *     passes it: a message made only of CRs or only of LFs costs one pass,
 *     not one pass per line. Each line is copied as a run.
 *     smtp_data_write reserves the worst case once (the scan's line count
 *     bounds it), so encoding a message allocates at most once, and not at
 *     all once the output buffer has grown.
 *
 *     The 998-octet limit (RFC 5321 4.5.3.1.6) counts a line without its
 *     ending and without the dot added for transparency.
 *
 * EXPORTS
 *     smtp_data_encode, smtp_data_write, smtp_data_scan.
 *
 * DIAGNOSTICS
 *     smtp_data_encode returns -1 with *err = "line longer than 998
 *     octets", and leaves out as it was. smtp_data_write trusts the
 *     caller's scan for the length limit but not for memory safety: a
 *     scan of another message only costs extra reservations, and takes
 *     the line-by-line write (as_is counts only for the message scanned).
 */
#include "smtp_data.h"

#include <string.h>

/* Walks msg line by line; cr and lf are the next CR and LF at or after p, or end. */
struct smtp_data_cursor {
    const char *p, *end;
    const char *cr, *lf;
};

static const char *smtp_data_find(const char *p, const char *end, char c)
{
    if (p == end) {
        return end; /* also keeps a NULL, empty message away from memchr */
    }
    const char *f = memchr(p, c, (size_t)(end - p));
    return f ? f : end;
}

static void smtp_data_cursor_init(struct smtp_data_cursor *c, const char *msg, size_t len)
{
    c->p = msg;
    c->end = len ? msg + len : msg;
    c->cr = smtp_data_find(c->p, c->end, '\r');
    c->lf = smtp_data_find(c->p, c->end, '\n');
}

/* The next line (without its ending) in *line, *n; 0 when the message is exhausted. */
static int smtp_data_next_line(struct smtp_data_cursor *c, const char **line, size_t *n)
{
    if (c->p >= c->end) {
        return 0;
    }
    if (c->cr < c->p) {
        c->cr = smtp_data_find(c->p, c->end, '\r');
    }
    if (c->lf < c->p) {
        c->lf = smtp_data_find(c->p, c->end, '\n');
    }
    const char *e = c->cr < c->lf ? c->cr : c->lf;
    *line = c->p;
    *n = (size_t)(e - c->p);
    if (e < c->end && *e == '\r' && e + 1 < c->end && e[1] == '\n') {
        e++; /* CRLF is one ending */
    }
    c->p = e < c->end ? e + 1 : c->end;
    return 1;
}

/* smtp_data_bytes - one pass: whether a byte >= 0x80 occurs, and how many
 * bytes are CR. Blocks of a fixed 64 bytes, so that the compiler
 * vectorises the inner loop at -O2 (a count below 256 fits a byte); the
 * tail byte by byte. */
static void smtp_data_bytes(const char *msg, size_t len, int *has_8bit, size_t *crs)
{
    const unsigned char *p = (const unsigned char *)msg;
    unsigned char acc = 0;
    size_t n = 0, i = 0;
    for (; i + 64 <= len; i += 64) {
        unsigned char a = 0, c = 0;
        for (size_t k = 0; k < 64; k++) {
            a |= p[i + k];
            c += p[i + k] == '\r';
        }
        acc |= a;
        n += c;
    }
    for (; i < len; i++) {
        acc |= p[i];
        n += p[i] == '\r';
    }
    *has_8bit = (acc & 0x80) != 0;
    *crs = n;
}

/* smtp_data_scan_crlf - the wire-form check: every line ends in CRLF (each LF after a CR, and no
 * other CR: crs CRs in all), the last one too. 1 with lines, longest and
 * as_is (no line starts with '.') set; 0 when the general walk must count. */
static int smtp_data_scan_crlf(const char *msg, size_t len, size_t crs, struct smtp_data_info *info)
{
    const char *p = msg, *end = msg + len;
    size_t lines = 0, longest = 0;
    int dot = 0;
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (!lf || lf == p || lf[-1] != '\r') {
            return 0; /* no ending, or a bare LF */
        }
        size_t n = (size_t)(lf - 1 - p);
        if (n > longest) {
            longest = n;
        }
        dot |= *p == '.';
        lines++;
        p = lf + 1;
    }
    if (lines != crs) {
        return 0; /* a bare CR */
    }
    info->lines = lines;
    info->longest = longest;
    info->as_is = !dot;
    return 1;
}

void smtp_data_scan(const char *msg, size_t len, struct smtp_data_info *info)
{
    struct smtp_data_cursor c;
    const char *line;
    size_t n, crs;
    memset(info, 0, sizeof *info);
    info->scanned = msg;
    info->scanned_len = len;
    smtp_data_bytes(msg, len, &info->has_8bit, &crs);
    if (len == 0 || smtp_data_scan_crlf(msg, len, crs, info)) {
        info->as_is = info->as_is || len == 0;
        return;
    }
    smtp_data_cursor_init(&c, msg, len);
    while (smtp_data_next_line(&c, &line, &n)) {
        if (n > info->longest) {
            info->longest = n;
        }
        info->lines++;
    }
}

void smtp_data_write(buf_t *out, const char *msg, size_t len, const struct smtp_data_info *scanned)
{
    if (scanned->as_is && scanned->scanned == msg && scanned->scanned_len == len) {
        char *w = buf_reserve(out, len + 3);
        if (len > 0) {
            memcpy(w, msg, len);
        }
        memcpy(w + len, ".\r\n", 3);
        buf_commit(out, len + 3);
        return;
    }
    /* Per line at most a stuffed dot and a CRLF the input lacked; then ".\r\n". */
    size_t room = len + 3 * scanned->lines + 3;
    char *start = buf_reserve(out, room);
    char *w = start, *limit = start + room;
    struct smtp_data_cursor c;
    const char *line;
    size_t n;
    smtp_data_cursor_init(&c, msg, len);
    while (smtp_data_next_line(&c, &line, &n)) {
        if ((size_t)(limit - w) < n + 6) {
            /* The scan was not of this message: commit and make room, never overrun. */
            buf_commit(out, (size_t)(w - start));
            start = w = buf_reserve(out, n + 6);
            limit = start + n + 6;
        }
        if (n > 0 && line[0] == '.') {
            *w++ = '.';
        }
        memcpy(w, line, n);
        w += n;
        *w++ = '\r';
        *w++ = '\n';
    }
    memcpy(w, ".\r\n", 3);
    w += 3;
    buf_commit(out, (size_t)(w - start));
}

int smtp_data_encode(buf_t *out, const char *msg, size_t len, struct smtp_data_info *info,
                     const char **err)
{
    struct smtp_data_info local;
    struct smtp_data_info *in = info ? info : &local;
    smtp_data_scan(msg, len, in);
    if (in->longest > SMTP_LINE_MAX) {
        *err = "line longer than 998 octets";
        return -1;
    }
    smtp_data_write(out, msg, len, in);
    return 0;
}
