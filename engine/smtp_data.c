/*
 * smtp_data - a message as it travels after DATA. See smtp_data.h.
 *
 * One pass over the input with memchr for line ends (CR or LF, whichever
 * comes first): each line is copied as a run, then CRLF. A leading '.'
 * gets doubled. The output is reserved once up front (input + one byte
 * per line for stuffing + terminator), so the hot path never reallocates
 * more than once per message.
 */
#include "smtp_data.h"

#include <string.h>

/* End of the line starting at p: the first CR or LF, or end. */
static const char *smtp_data_eol(const char *p, const char *end)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    const char *stop = lf ? lf : end;
    const char *cr = memchr(p, '\r', (size_t)(stop - p));
    return cr ? cr : stop;
}

static int smtp_data_has_8bit(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)p[i] >= 0x80) {
            return 1;
        }
    }
    return 0;
}

void smtp_data_scan(const char *msg, size_t len, struct smtp_data_info *info)
{
    const char *p = msg, *end = msg + len;
    memset(info, 0, sizeof *info);
    info->has_8bit = smtp_data_has_8bit(msg, len);
    while (p < end) {
        const char *e = smtp_data_eol(p, end);
        size_t n = (size_t)(e - p);
        if (n > info->longest) {
            info->longest = n;
        }
        info->lines++;
        if (e < end && *e == '\r' && e + 1 < end && e[1] == '\n') {
            e++;
        }
        p = e < end ? e + 1 : end;
    }
}

void smtp_data_write(buf_t *out, const char *msg, size_t len, const struct smtp_data_info *scanned)
{
    /* Worst case: every line stuffed and given a CRLF, plus ".\r\n". */
    char *w = buf_reserve(out, len + 3 * scanned->lines + 3);
    char *start = w;
    const char *p = msg, *end = msg + len;
    while (p < end) {
        const char *e = smtp_data_eol(p, end);
        size_t n = (size_t)(e - p);
        if (n > 0 && p[0] == '.') {
            *w++ = '.';
        }
        memcpy(w, p, n);
        w += n;
        *w++ = '\r';
        *w++ = '\n';
        if (e < end && *e == '\r' && e + 1 < end && e[1] == '\n') {
            e++;
        }
        p = e < end ? e + 1 : end;
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
