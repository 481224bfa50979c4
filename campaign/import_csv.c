/*
 * import_csv - the CSV reader of `ringmail recipients import`: records and
 * fields, encodings, values checked and escaped for COPY, the rejects
 * file. See import_int.h.
 *
 * A record is parsed from its first byte every time: when the window ends
 * inside it, more of the file is read (the window grows when the record
 * fills half of it) and the record is parsed again, so the parser keeps no
 * state between calls and a record is always contiguous in the window.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "campaign/import_int.h"
#include "campaign/render.h"

#ifndef CSV_WINDOW_MIN
#define CSV_WINDOW_MIN (1024 * 1024)
#endif
#ifndef CSV_RAW_CHUNK
#define CSV_RAW_CHUNK (256 * 1024)
#endif

static void *csv_xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) {
        abort();
    }
    return p;
}

static int csv_is_utf8(const char *name)
{
    return !name || strcasecmp(name, "utf-8") == 0 || strcasecmp(name, "utf8") == 0;
}

int import_csv_open(struct import_csv *r, const char *path, char delim, const char *encoding,
                    char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->cd = (iconv_t)-1;
    r->path = path;
    r->delim = delim;
    r->special[(unsigned char)delim] = 1;
    r->special['\n'] = 1;
    r->special['\r'] = 1;
    r->encoding = encoding ? encoding : "utf-8";
    r->size = -1;
    r->next_line = 1;
    if (!csv_is_utf8(encoding)) {
        r->cd = iconv_open("UTF-8", encoding);
        if (r->cd == (iconv_t)-1) {
            snprintf(err, errlen,
                     "--encoding %s: not an encoding iconv knows (`iconv --list` names them: "
                     "latin1, windows-1252, iso-8859-15, utf-16, ...)",
                     encoding);
            return -1;
        }
        r->rawcap = CSV_RAW_CHUNK;
        r->raw = csv_xrealloc(NULL, r->rawcap);
    }
    r->f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!r->f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        import_csv_close(r);
        return -1;
    }
    struct stat st;
    if (fstat(fileno(r->f), &st) == 0 && S_ISREG(st.st_mode)) {
        r->size = (long long)st.st_size;
    }
    r->wcap = CSV_WINDOW_MIN;
    r->w = csv_xrealloc(NULL, r->wcap);
    return 0;
}

void import_csv_close(struct import_csv *r)
{
    if (r->f && r->f != stdin) {
        fclose(r->f);
    }
    r->f = NULL;
    if (r->cd != (iconv_t)-1) {
        iconv_close(r->cd);
        r->cd = (iconv_t)-1;
    }
    free(r->raw);
    free(r->w);
    free(r->fields);
    r->raw = r->w = NULL;
    r->fields = NULL;
}

/* A byte that does not convert, as the marker. */
static void csv_mark(struct import_csv *r, unsigned char b)
{
    r->w[r->wlen++] = (char)IMPORT_MARK;
    r->w[r->wlen++] = (char)(0x80 | (b >> 4));
    r->w[r->wlen++] = (char)(0x80 | (b & 0x0F));
}

/* Convert what raw holds into the window, as far as it has room. */
static void csv_convert(struct import_csv *r)
{
    char *in = r->raw;
    size_t inleft = r->rawlen;
    while (inleft > 0 && r->wcap - r->wlen >= 8) {
        char *out = r->w + r->wlen;
        size_t outleft = r->wcap - r->wlen - 3; /* room for a marker after an error */
        size_t before = outleft;
        size_t rc = iconv(r->cd, &in, &inleft, &out, &outleft);
        r->wlen += before - outleft;
        if (rc != (size_t)-1) {
            continue;
        }
        if (errno == E2BIG) {
            break;
        }
        if (errno == EINVAL && !r->raw_eof) {
            break; /* an incomplete sequence: the rest comes with the next read */
        }
        /* EILSEQ, or EINVAL at the end of the file: one byte that does not convert */
        csv_mark(r, (unsigned char)*in);
        in++, inleft--;
    }
    memmove(r->raw, in, inleft);
    r->rawlen = inleft;
    if (r->raw_eof && r->rawlen == 0) {
        /* the shift sequence that returns a stateful encoding to its initial state */
        char *out = r->w + r->wlen;
        size_t outleft = r->wcap - r->wlen, before = outleft;
        if (iconv(r->cd, NULL, NULL, &out, &outleft) != (size_t)-1 || errno != E2BIG) {
            r->wlen += before - outleft;
            r->eof = 1;
        }
    }
}

/* Keep the window from the current record on and read more: until the
 * window is full or the file ends. */
static int csv_fill(struct import_csv *r, char *err, size_t errlen)
{
    if (r->start > 0) {
        memmove(r->w, r->w + r->start, r->wlen - r->start);
        r->wlen -= r->start;
        r->next -= r->next >= r->start ? r->start : r->next;
        r->start = 0;
    }
    if (r->wlen >= r->wcap / 2) {
        r->wcap *= 2;
        r->w = csv_xrealloc(r->w, r->wcap);
    }
    while (!r->eof && r->wcap - r->wlen >= 8) {
        if (r->cd == (iconv_t)-1) {
            size_t got = fread(r->w + r->wlen, 1, r->wcap - r->wlen, r->f);
            r->wlen += got;
            r->bytes += got;
            if (got == 0 || ferror(r->f)) {
                if (ferror(r->f)) {
                    snprintf(err, errlen, "%s: %s", r->path, strerror(errno));
                    return -1;
                }
                r->eof = feof(r->f);
            }
            continue;
        }
        if (!r->raw_eof && r->rawlen < r->rawcap) {
            size_t got = fread(r->raw + r->rawlen, 1, r->rawcap - r->rawlen, r->f);
            r->rawlen += got;
            r->bytes += got;
            if (ferror(r->f)) {
                snprintf(err, errlen, "%s: %s", r->path, strerror(errno));
                return -1;
            }
            if (got == 0 && feof(r->f)) {
                r->raw_eof = 1;
            }
        }
        size_t before = r->wlen;
        csv_convert(r);
        if (r->wlen == before && !r->eof && (r->raw_eof || r->rawlen == r->rawcap)) {
            break; /* no room to convert into: the caller grows the window */
        }
    }
    if (!r->started && (r->wlen >= 3 || r->eof)) {
        r->started = 1;
        if (r->wlen >= 3 && memcmp(r->w, "\xEF\xBB\xBF", 3) == 0) {
            r->start = r->next = 3;
        } else if (r->cd == (iconv_t)-1 && r->wlen >= 2 &&
                   (memcmp(r->w, "\xFF\xFE", 2) == 0 || memcmp(r->w, "\xFE\xFF", 2) == 0)) {
            snprintf(err, errlen,
                     "%s: the file starts with a UTF-16 byte order mark: use --encoding utf-16",
                     r->path);
            return -1;
        }
    }
    return 0;
}

static struct import_field *csv_add_field(struct import_csv *r)
{
    if (r->nfields == r->fcap) {
        r->fcap = r->fcap ? 2 * r->fcap : 16;
        r->fields = csv_xrealloc(r->fields, r->fcap * sizeof *r->fields);
    }
    struct import_field *f = &r->fields[r->nfields++];
    memset(f, 0, sizeof *f);
    return f;
}

/* Line breaks in p[0..n): LF, CRLF and a lone CR count one each. */
static long csv_count_lines(const char *p, size_t n)
{
    long lines = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            lines++;
        } else if (p[i] == '\r' && (i + 1 >= n || p[i + 1] != '\n')) {
            lines++;
        }
    }
    return lines;
}

/* Parse the record at r->start: 1 when it is whole (r->next set), 0 when
 * the window ends inside it and the file goes on. */
static int csv_parse(struct import_csv *r)
{
    const unsigned char *p = (const unsigned char *)r->w;
    const unsigned char *special = r->special;
    const unsigned char delim = (unsigned char)r->delim;
    size_t n = r->wlen, i = r->start;
    int eof = r->eof;
    r->nfields = 0;
    r->problem = IMPORT_ROW_OK;
    r->lines = 0;
    r->in_quote = 0;
    for (;;) {
        struct import_field *f = csv_add_field(r);
        if (i < n && p[i] == '"') {
            size_t cs = ++i;
            f->quoted = 1;
            for (;;) {
                const unsigned char *q = memchr(p + i, '"', n - i);
                if (!q) {
                    if (!eof) {
                        r->in_quote = 1;
                        return 0;
                    }
                    f->off = cs;
                    f->len = n - cs;
                    r->problem = IMPORT_ROW_UNTERMINATED;
                    r->problem_field = r->nfields - 1;
                    r->end = r->next = n;
                    return 1;
                }
                i = (size_t)(q - p) + 1;
                if (i == n && !eof) {
                    r->in_quote = 1;
                    return 0; /* a doubled quote or the closing one: the next byte says */
                }
                if (i < n && p[i] == '"') {
                    f->esc = 1;
                    i++;
                    continue;
                }
                break;
            }
            f->off = cs;
            f->len = i - 1 - cs;
            r->lines += csv_count_lines((const char *)p + cs, f->len);
            if (i < n && !special[p[i]]) {
                if (r->problem == IMPORT_ROW_OK) {
                    r->problem = IMPORT_ROW_AFTER_QUOTE;
                    r->problem_field = r->nfields - 1;
                }
                while (i < n && !special[p[i]]) {
                    i++;
                }
                if (i == n && !eof) {
                    return 0;
                }
            }
        } else {
            size_t s = i;
            while (i < n && !special[p[i]]) {
                i++;
            }
            if (i == n && !eof) {
                return 0;
            }
            f->off = s;
            f->len = i - s;
        }
        if (i < n && p[i] == delim) {
            i++;
            continue;
        }
        break;
    }
    r->end = i;
    if (i < n) {
        if (p[i] == '\r') {
            if (i + 1 == n && !eof) {
                return 0; /* is an LF next? */
            }
            i += i + 1 < n && p[i + 1] == '\n' ? 2 : 1;
        } else {
            i++;
        }
    }
    r->next = i;
    return 1;
}

int import_csv_next(struct import_csv *r, char *err, size_t errlen)
{
    r->start = r->next;
    r->line = r->next_line;
    for (;;) {
        if (r->start == r->wlen && r->eof) {
            return 0;
        }
        if (r->start < r->wlen && csv_parse(r)) {
            break;
        }
        if (r->wlen - r->start >= IMPORT_RECORD_MAX) {
            if (r->in_quote) {
                /* Taken for unterminated: its first line is the bad row. */
                r->problem = IMPORT_ROW_UNTERMINATED;
                r->problem_field = r->nfields ? r->nfields - 1 : 0;
                r->end = r->next = r->wlen;
                break;
            }
            snprintf(err, errlen, "%s: line %ld: a record longer than %d MiB (is this a CSV file?)",
                     r->path, r->line, IMPORT_RECORD_MAX >> 20);
            return -1;
        }
        if (csv_fill(r, err, errlen) < 0) {
            return -1;
        }
    }
    r->next_line = r->line + r->lines + 1;
    return 1;
}

size_t import_csv_first_line_end(const struct import_csv *r)
{
    for (size_t i = r->start; i < r->end; i++) {
        if (r->w[i] == '\n' || r->w[i] == '\r') {
            return i;
        }
    }
    return r->end;
}

void import_csv_resync(struct import_csv *r)
{
    size_t i = import_csv_first_line_end(r);
    if (i < r->wlen) {
        i += r->w[i] == '\r' && i + 1 < r->wlen && r->w[i + 1] == '\n' ? 2 : 1;
    }
    r->next = i;
    r->next_line = r->line + 1;
}

int import_csv_blank(const struct import_csv *r)
{
    return r->end == r->start && r->nfields == 1 && !r->fields[0].quoted;
}

/* ---- values ---- */

/* Byte classes of a value below 0x80: 0 copied, 1 escaped for COPY, 2 NUL,
 * 4 a quote (doubled inside quoted fields); bytes from 0x80 are class 3. */
static const unsigned char csv_class[128] = {
    [0] = 2, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1, ['\\'] = 1, ['"'] = 4,
};

/* The offset of p in the field's value: bytes, less one per doubled quote
 * (or characters, when the file was converted). */
static size_t csv_value_offset(const struct import_csv *r, const struct import_field *f,
                               const unsigned char *p)
{
    const unsigned char *s = (const unsigned char *)r->w + f->off;
    size_t off = 0;
    for (const unsigned char *q = s; q < p; q++) {
        if (f->esc && *q == '"' && q + 1 < p && q[1] == '"') {
            q++;
        }
        if (!import_csv_converts(r) || (*q & 0xC0) != 0x80) {
            off++;
        }
    }
    return off;
}

int import_value(const struct import_csv *r, const struct import_field *f, int copy_escape,
                 buf_t *out, struct import_value_problem *pb)
{
    const unsigned char *p = (const unsigned char *)r->w + f->off, *end = p + f->len;
    char *o0 = buf_reserve(out, 2 * f->len + 1), *o = o0;
    while (p < end) {
        unsigned c = *p;
        switch (c < 0x80 ? csv_class[c] : 3) {
        case 0:
            *o++ = (char)c;
            p++;
            break;
        case 1:
            if (copy_escape) {
                *o++ = '\\';
                *o++ = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
            } else {
                *o++ = (char)c;
            }
            p++;
            break;
        case 2:
            pb->kind = IMPORT_VALUE_NUL;
            pb->offset = csv_value_offset(r, f, p);
            pb->byte = 0;
            return -1;
        case 3: {
            size_t k = render_utf8_len(p, end);
            if (k == 0) {
                if (c == IMPORT_MARK && import_csv_converts(r) && end - p >= 3) {
                    pb->kind = IMPORT_VALUE_UNCONVERTED;
                    pb->byte = (unsigned char)(((p[1] & 0x0F) << 4) | (p[2] & 0x0F));
                } else {
                    pb->kind = IMPORT_VALUE_UTF8;
                    pb->byte = (unsigned char)c;
                }
                pb->offset = csv_value_offset(r, f, p);
                return -1;
            }
            memcpy(o, p, k);
            o += k;
            p += k;
            break;
        }
        default:
            *o++ = '"';
            p += f->esc && p + 1 < end && p[1] == '"' ? 2 : 1;
            break;
        }
    }
    buf_commit(out, (size_t)(o - o0));
    return 0;
}

void import_value_problem_text(const struct import_csv *r, const struct import_value_problem *pb,
                               char *out, size_t outlen)
{
    switch (pb->kind) {
    case IMPORT_VALUE_NUL:
        snprintf(out, outlen, "a NUL byte at offset %zu (PostgreSQL text cannot hold one)",
                 pb->offset);
        break;
    case IMPORT_VALUE_UNCONVERTED:
        snprintf(out, outlen, "byte 0x%02X at offset %zu is not %s", pb->byte, pb->offset,
                 r->encoding);
        break;
    default:
        /* 0x80-0x9F are printable in windows-1252 and control codes in latin1. */
        snprintf(out, outlen, "invalid UTF-8 (byte 0x%02X at offset %zu; try --encoding %s)",
                 pb->byte, pb->offset,
                 pb->byte >= 0x80 && pb->byte < 0xA0 ? "windows-1252" : "latin1");
        break;
    }
}

/* ---- the rejects file ---- */

int import_rejects_open(struct import_rejects *j, const char *path, const struct import_csv *r,
                        char *err, size_t errlen)
{
    memset(j, 0, sizeof *j);
    j->back = (iconv_t)-1;
    j->path = path;
    j->delim = r->delim;
    if (import_csv_converts(r)) {
        j->back = iconv_open(r->encoding, "UTF-8");
        if (j->back == (iconv_t)-1) {
            snprintf(err, errlen, "--encoding %s: iconv cannot convert back to it for %s",
                     r->encoding, path);
            return -1;
        }
    }
    j->f = fopen(path, "wb");
    if (!j->f) {
        snprintf(err, errlen, "--skip-bad-rows %s: %s", path, strerror(errno));
        if (j->back != (iconv_t)-1) {
            iconv_close(j->back);
        }
        return -1;
    }
    return 0;
}

/* Write s[0..n) in the file's encoding: markers become their byte again. */
static void rejects_put(struct import_rejects *j, const char *s, size_t n)
{
    if (j->back == (iconv_t)-1) {
        fwrite(s, 1, n, j->f);
        return;
    }
    while (n > 0) {
        const char *m = memchr(s, (char)IMPORT_MARK, n);
        size_t seg = m ? (size_t)(m - s) : n;
        char *in = (char *)s;
        size_t inleft = seg;
        while (inleft > 0) {
            char obuf[4096], *out = obuf;
            size_t outleft = sizeof obuf;
            size_t rc = iconv(j->back, &in, &inleft, &out, &outleft);
            fwrite(obuf, 1, sizeof obuf - outleft, j->f);
            if (rc == (size_t)-1 && errno != E2BIG) {
                fputc('?', j->f); /* not representable: cannot happen for text that came from it */
                in++, inleft--;
            }
        }
        s += seg, n -= seg;
        if (n >= 3) {
            fputc(((s[1] & 0x0F) << 4) | (s[2] & 0x0F), j->f);
            s += 3, n -= 3;
        } else if (n > 0) {
            fwrite(s, 1, n, j->f);
            n = 0;
        }
    }
}

static void rejects_quoted(struct import_rejects *j, const char *s, size_t n)
{
    rejects_put(j, "\"", 1);
    while (n > 0) {
        const char *q = memchr(s, '"', n);
        size_t seg = q ? (size_t)(q - s) + 1 : n;
        rejects_put(j, s, seg);
        if (q) {
            rejects_put(j, "\"", 1);
        }
        s += seg, n -= seg;
    }
    rejects_put(j, "\"", 1);
}

void import_rejects_header(struct import_rejects *j, const struct import_csv *r)
{
    char head[32];
    int n = snprintf(head, sizeof head, "line%creason%c", j->delim, j->delim);
    rejects_put(j, head, (size_t)n);
    rejects_put(j, r->w + r->start, r->end - r->start);
    rejects_put(j, "\n", 1);
}

void import_rejects_row(struct import_rejects *j, long line, const char *reason, const char *raw,
                        size_t rawlen, int quote)
{
    char head[32];
    int n = snprintf(head, sizeof head, "%ld%c", line, j->delim);
    rejects_put(j, head, (size_t)n);
    rejects_quoted(j, reason, strlen(reason));
    rejects_put(j, &j->delim, 1);
    if (quote) {
        rejects_quoted(j, raw, rawlen);
    } else {
        rejects_put(j, raw, rawlen);
    }
    rejects_put(j, "\n", 1);
}

int import_rejects_close(struct import_rejects *j, char *err, size_t errlen)
{
    int rc = 0;
    if (j->f) {
        if (ferror(j->f) || fclose(j->f) != 0) {
            snprintf(err, errlen, "--skip-bad-rows %s: %s", j->path, strerror(errno));
            rc = -1;
        }
        j->f = NULL;
    }
    if (j->back != (iconv_t)-1) {
        iconv_close(j->back);
        j->back = (iconv_t)-1;
    }
    return rc;
}
