/*
 * render_mime - header fields and MIME bodies of a rendered message
 *
 * DESCRIPTION
 *     Header fields: tokens are placed on the line while they fit before
 *     column 78, else on a new line; printable ASCII goes raw, anything
 *     else as RFC 2047 "=?UTF-8?B?...?=" words of whole characters, each
 *     at most 75 octets. Bodies: CRLF line ends, then 7bit,
 *     quoted-printable or base64, whichever is shorter and safe (see
 *     render.c's header for the rules). Used by render.c through
 *     render_int.h.
 */
#include "render_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/crypto.h"

enum render_cte { RENDER_7BIT, RENDER_QP, RENDER_BASE64 };

static const char *const render_cte_names[] = {"7bit", "quoted-printable", "base64"};

void render_trim(const char **p, size_t *n)
{
    while (*n > 0 && render_is_wsp(**p)) {
        (*p)++;
        (*n)--;
    }
    while (*n > 0 && render_is_wsp((*p)[*n - 1])) {
        (*n)--;
    }
}

int render_is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* ---------------------------------------------------------------- headers */

void render_hdr_start(struct render_hdr *h, buf_t *out, const char *name)
{
    h->out = out;
    buf_append_str(out, name);
    buf_append(out, ":", 1);
    h->col = strlen(name) + 1;
    h->has_token = 0;
}

/* Make room for a token of n octets (starting with whitespace), folding first if needed. */
static void render_hdr_room(struct render_hdr *h, size_t n)
{
    if (h->has_token && h->col + n > RENDER_FOLD_AT) {
        buf_append(h->out, "\r\n", 2);
        h->col = 0;
    }
    h->col += n;
    h->has_token = 1;
}

static void render_hdr_put(struct render_hdr *h, const char *ws, size_t wn, const char *w, size_t n)
{
    render_hdr_room(h, wn + n);
    buf_append(h->out, ws, wn);
    buf_append(h->out, w, n);
}

void render_hdr_end(struct render_hdr *h)
{
    buf_append(h->out, "\r\n", 2);
}

/* RFC 2047 B words of whole UTF-8 characters, sized to the line's room. */
static void render_hdr_encoded(struct render_hdr *h, const char *p, size_t n)
{
    while (n > 0) {
        size_t avail = h->col + 1 < RENDER_FOLD_AT ? RENDER_FOLD_AT - h->col - 1 : 0;
        size_t max = avail > 12 ? (avail - 12) / 4 * 3 : 0; /* "=?UTF-8?B?" "?=" */
        if (max > 45) {
            max = 45; /* 60 base64 octets: a 72-octet word, under RFC 2047's 75 */
        }
        size_t take = n < max ? n : max;
        while (take > 0 && take < n && ((unsigned char)p[take] & 0xC0) == 0x80) {
            take--;
        }
        if (h->has_token && (take == 0 || (take < n && take < 12))) {
            buf_append(h->out, "\r\n", 2); /* too little room left: a fresh line */
            h->col = 0;
            continue;
        }
        char word[80] = "=?UTF-8?B?";
        size_t wn = 10 + crypto_base64_encode(word + 10, p, take);
        memcpy(word + wn, "?=", 2);
        render_hdr_put(h, " ", 1, word, wn + 2);
        p += take;
        n -= take;
    }
}

/* Printable ASCII that no decoder could take for an encoded word, in
 * words short enough to fold. */
static int render_raw_ok(const char *p, size_t n)
{
    size_t word = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c >= 0x7f || (c == '=' && i + 1 < n && p[i + 1] == '?')) {
            return 0;
        }
        word = render_is_wsp((char)c) ? 0 : word + 1;
        if (word > RENDER_RAW_WORD_MAX) {
            return 0;
        }
    }
    return 1;
}

/* Unstructured text (Subject): raw words folded at their whitespace, or encoded. */
void render_hdr_text(struct render_hdr *h, const char *p, size_t n)
{
    render_trim(&p, &n);
    if (!render_raw_ok(p, n)) {
        render_hdr_encoded(h, p, n);
        return;
    }
    const char *end = p + n;
    while (p < end) {
        const char *ws = p;
        while (p < end && render_is_wsp(*p)) {
            p++;
        }
        const char *w = p;
        while (p < end && !render_is_wsp(*p)) {
            p++;
        }
        if (ws == w) {
            render_hdr_put(h, " ", 1, w, (size_t)(p - w)); /* the first word */
        } else {
            render_hdr_put(h, ws, (size_t)(w - ws), w, (size_t)(p - w));
        }
    }
}

static int render_is_atext_phrase(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              render_is_wsp(c) || strchr("!#$%&'*+-/=?^_`{|}~", c))) {
            return 0;
        }
    }
    return 1;
}

/* [display name] <addr>, or a bare addr when there is no name. */
void render_hdr_mailbox(struct render_hdr *h, const char *name, size_t nn, const char *addr)
{
    size_t an = strlen(addr);
    render_trim(&name, &nn);
    if (nn == 0) {
        render_hdr_put(h, " ", 1, addr, an);
        return;
    }
    if (render_raw_ok(name, nn) && render_is_atext_phrase(name, nn)) {
        render_hdr_text(h, name, nn);
    } else if (render_raw_ok(name, nn) && nn <= RENDER_RAW_WORD_MAX) {
        size_t quoted = 3 + nn; /* ' "' and '"' */
        for (size_t i = 0; i < nn; i++) {
            quoted += name[i] == '"' || name[i] == '\\';
        }
        render_hdr_room(h, quoted);
        buf_append(h->out, " \"", 2);
        for (size_t i = 0; i < nn; i++) {
            if (name[i] == '"' || name[i] == '\\') {
                buf_append(h->out, "\\", 1);
            }
            buf_append(h->out, name + i, 1);
        }
        buf_append(h->out, "\"", 1);
    } else {
        render_hdr_encoded(h, name, nn);
    }
    render_hdr_room(h, an + 3);
    buf_append(h->out, " <", 2);
    buf_append(h->out, addr, an);
    buf_append(h->out, ">", 1);
}

void render_date(buf_t *out, time_t t)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    gmtime_r(&t, &tm);
    buf_appendf(out, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday % 7],
                tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
}

/* ---------------------------------------------------------------- bodies */

/* Merged text to dst with CRLF line endings and a final CRLF, scanned on the way. */
void render_normalize(const char *p, size_t n, buf_t *dst, struct render_body_info *info)
{
    memset(info, 0, sizeof *info);
    char *w = buf_reserve(dst, 2 * n + 2); /* every octet a line end, at worst */
    size_t o = 0, line = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r' || c == '\n') {
            if (c == '\r' && i + 1 < n && p[i + 1] == '\n') {
                i++;
            }
            w[o++] = '\r';
            w[o++] = '\n';
            line = 0;
            continue;
        }
        w[o++] = (char)c;
        if (++line > info->longest) {
            info->longest = line;
        }
        info->high += c >= 0x80;
        info->control += (c < 0x20 && c != '\t') || c == 0x7f;
        info->has_boundary |= c == '_' && i > 0 && p[i - 1] == '=';
    }
    if (o > 0 && w[o - 1] != '\n') {
        w[o++] = '\r';
        w[o++] = '\n';
    }
    buf_commit(dst, o);
}

static enum render_cte render_choose_cte(const struct render_body_info *info, size_t len,
                                         int multipart)
{
    if (info->high == 0 && info->control == 0 && info->longest <= RENDER_FOLD_AT &&
        !(multipart && info->has_boundary)) {
        return RENDER_7BIT;
    }
    return info->high * 6 <= len ? RENDER_QP : RENDER_BASE64;
}

/* RFC 2045 6.7 over CRLF lines: encoded lines of at most 76 octets. */
static void render_qp(buf_t *out, const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *end = p + n;
    char line[80];
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl - 1 : end; /* normalized: CR before every LF */
        size_t col = 0;
        for (; p < e; p++) {
            unsigned char c = (unsigned char)*p;
            int last = p + 1 == e;
            char enc[3];
            size_t k = 1;
            if ((c >= 33 && c <= 126 && c != '=') || (render_is_wsp((char)c) && !last)) {
                enc[0] = (char)c;
            } else {
                enc[0] = '=';
                enc[1] = hex[c >> 4];
                enc[2] = hex[c & 15];
                k = 3;
            }
            if (col + k > (last ? 76u : 75u)) {
                line[col++] = '=';
                buf_append(out, line, col);
                buf_append(out, "\r\n", 2);
                col = 0;
            }
            memcpy(line + col, enc, k);
            col += k;
        }
        buf_append(out, line, col);
        buf_append(out, "\r\n", 2);
        p = nl ? nl + 1 : end;
    }
}

static void render_base64(buf_t *out, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i += 57) {
        size_t take = n - i < 57 ? n - i : 57;
        char *w = buf_reserve(out, 80);
        size_t k = crypto_base64_encode(w, p + i, take);
        w[k] = '\r';
        w[k + 1] = '\n';
        buf_commit(out, k + 2);
    }
}

/* Content-Type and Content-Transfer-Encoding, the empty line, the encoded part. */
void render_write_part(buf_t *out, const char *type, const buf_t *part,
                       const struct render_body_info *info, int multipart)
{
    enum render_cte cte = render_choose_cte(info, buf_len(part), multipart);
    buf_appendf(out,
                "Content-Type: text/%s; charset=utf-8\r\nContent-Transfer-Encoding: %s\r\n\r\n",
                type, render_cte_names[cte]);
    if (buf_len(part) == 0) {
        buf_append(out, "\r\n", 2);
    } else if (cte == RENDER_7BIT) {
        buf_append(out, buf_data(part), buf_len(part));
    } else if (cte == RENDER_QP) {
        render_qp(out, buf_data(part), buf_len(part));
    } else {
        render_base64(out, buf_data(part), buf_len(part));
    }
}
