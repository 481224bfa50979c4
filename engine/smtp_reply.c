/*
 * smtp_reply - incremental parser for SMTP server replies. See smtp_reply.h.
 *
 * Lines are cut with memchr; a line that is complete inside the caller's
 * bytes is parsed in place, and only a partial tail is copied into the
 * parser, so the common case (whole replies in one read) copies nothing
 * but the reply text.
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
}

static void smtp_reply_clear(struct smtp_reply *r)
{
    r->code = 0;
    r->enhanced[0] = '\0';
    r->lines = 0;
    buf_reset(&r->text);
}

void smtp_reply_copy(struct smtp_reply *dst, const struct smtp_reply *src)
{
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

static int smtp_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* "4.7.28 rest": class 2/4/5, subject 1-3 digits, detail 1-3 digits. */
static size_t smtp_enhanced_len(const char *s, size_t n)
{
    if (n < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') {
        return 0;
    }
    size_t i = 2, d = 0;
    while (i < n && smtp_digit(s[i]) && d < 3) {
        i++, d++;
    }
    if (d == 0 || i >= n || s[i] != '.') {
        return 0;
    }
    i++;
    d = 0;
    while (i < n && smtp_digit(s[i]) && d < 3) {
        i++, d++;
    }
    if (d == 0 || (i < n && s[i] != ' ')) {
        return 0;
    }
    return i;
}

/* One complete line (without its line ending). 1: the reply is complete. */
static int smtp_reply_line_in(struct smtp_reply_parser *p, const char *s, size_t n,
                              const char **err)
{
    if (n < 3 || !smtp_digit(s[0]) || !smtp_digit(s[1]) || !smtp_digit(s[2]) || s[0] < '2' ||
        s[0] > '5' || (n > 3 && s[3] != ' ' && s[3] != '-')) {
        *err = "malformed reply code";
        return -1;
    }
    int code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    struct smtp_reply *r = &p->cur;
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
        size_t e = smtp_enhanced_len(text, tlen);
        if (e > 0 && e < sizeof r->enhanced && text[0] == s[0]) {
            memcpy(r->enhanced, text, e);
            r->enhanced[e] = '\0';
        }
    } else if (buf_len(&r->text) < SMTP_REPLY_TEXT_MAX) {
        buf_append(&r->text, "\n", 1);
    }
    size_t room =
        SMTP_REPLY_TEXT_MAX -
        (buf_len(&r->text) < SMTP_REPLY_TEXT_MAX ? buf_len(&r->text) : SMTP_REPLY_TEXT_MAX);
    buf_append(&r->text, text, tlen < room ? tlen : room);
    r->lines++;
    int last = n == 3 || s[3] == ' ';
    p->in_reply = !last;
    return last;
}

static void smtp_reply_hand_over(struct smtp_reply_parser *p, struct smtp_reply *out)
{
    /* Swap so the caller's storage is reused for the next reply. */
    struct smtp_reply t = *out;
    *out = p->cur;
    p->cur = t;
    smtp_reply_clear(&p->cur);
}

enum smtp_reply_status smtp_reply_parse(struct smtp_reply_parser *p, const char *data, size_t len,
                                        size_t *used, struct smtp_reply *out, const char **err)
{
    size_t off = 0;
    *used = 0;
    while (off < len) {
        const char *nl = memchr(data + off, '\n', len - off);
        if (!nl) {
            if (buf_len(&p->line) + (len - off) > SMTP_REPLY_LINE_MAX) {
                *err = "reply line too long";
                return SMTP_REPLY_ERROR;
            }
            buf_append(&p->line, data + off, len - off);
            *used = len;
            return SMTP_REPLY_MORE;
        }
        size_t n = (size_t)(nl - (data + off));
        const char *line = data + off;
        if (buf_len(&p->line) > 0) {
            buf_append(&p->line, line, n);
            line = buf_data(&p->line);
            n = buf_len(&p->line);
        }
        off += (size_t)(nl - (data + off)) + 1;
        if (n > 0 && line[n - 1] == '\r') {
            n--;
        }
        if (n > SMTP_REPLY_LINE_MAX) {
            *err = "reply line too long";
            return SMTP_REPLY_ERROR;
        }
        int rc = smtp_reply_line_in(p, line, n, err);
        buf_reset(&p->line);
        if (rc < 0) {
            return SMTP_REPLY_ERROR;
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
    const char *s = buf_data(&r->text), *end = s + buf_len(&r->text);
    if (i < 0 || i >= r->lines) {
        return NULL;
    }
    for (; i > 0; i--) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        if (!nl) {
            return NULL;
        }
        s = nl + 1;
    }
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    *len = (size_t)((nl ? nl : end) - s);
    return s;
}
