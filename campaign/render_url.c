/*
 * render_url - which merge fields of a template stand inside a URL, and
 * their values percent-encoded
 *
 * DESCRIPTION
 *     At compile time each template is walked once, its literal text and
 *     its fields in order, by a scanner of its kind:
 *
 *     url   (List-Unsubscribe) the whole template is a URL: every field.
 *     text  a URL starts at "http://" or "https://" (not inside a word)
 *           and runs to the next whitespace or one of < > " '; a field
 *           met on the way is inside it.
 *     html  a small tag tokenizer (data, comments, tag and attribute
 *           names, quoted and unquoted values): a field in the value of
 *           an href or src attribute is inside a URL unless the value
 *           starts with it (href="{{link}}" is the whole URL, which is
 *           HTML-escaped like any value, not encoded).
 *
 *     In a mailto: URL before its '?', the field is in the address: '@'
 *     stays. Everything else but RFC 3986's unreserved characters is
 *     encoded, UTF-8 octet by octet ("Zoë & co" is "Zo%C3%AB%20%26%20co").
 */
#include "render_int.h"

#include <string.h>
#include <strings.h>

static int render_url_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f';
}

static int render_url_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static char render_url_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

void render_url_scan_init(struct render_url_scan *u, enum render_tpl_kind kind)
{
    memset(u, 0, sizeof *u);
    u->kind = kind;
    u->prev = ' ';
}

/* ---------------------------------------------------------------- url, text */

/* One more octet of a URL's value: its first 7 (lower case) and whether a '?' came. */
static void render_url_value_add(struct render_url_scan *u, char c)
{
    if (u->value_n < sizeof u->value - 1) {
        u->value[u->value_n] = render_url_lower(c);
    }
    u->value_n++;
    u->value_q |= c == '?';
}

static void render_url_value_start(struct render_url_scan *u)
{
    memset(u->value, 0, sizeof u->value);
    u->value_n = 0;
    u->value_q = 0;
    u->value_field = 0;
}

static void render_text_literal(struct render_url_scan *u, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (render_url_space(c) || strchr("<>\"'", c)) {
            u->in_url = 0;
        } else if (!u->in_url && !render_url_alnum(u->prev) &&
                   ((n - i >= 7 && strncasecmp(p + i, "http://", 7) == 0) ||
                    (n - i >= 8 && strncasecmp(p + i, "https://", 8) == 0))) {
            u->in_url = 1;
            render_url_value_start(u);
        }
        if (u->in_url) {
            render_url_value_add(u, c);
        }
        u->prev = c;
    }
}

/* ---------------------------------------------------------------- html */

static void render_html_attr_add(struct render_url_scan *u, char c)
{
    if (u->attr_n < sizeof u->attr - 1) {
        u->attr[u->attr_n] = render_url_lower(c);
        u->attr[u->attr_n + 1] = '\0';
    }
    u->attr_n++;
}

static void render_html_attr_start(struct render_url_scan *u, char c)
{
    memset(u->attr, 0, sizeof u->attr);
    u->attr_n = 0;
    render_html_attr_add(u, c);
    u->st = RENDER_HTML_ATTR;
}

/* The value of the attribute just named starts (quote: '"', '\'' or 0). */
static void render_html_value_start(struct render_url_scan *u, char quote)
{
    render_url_value_start(u);
    u->quote = quote;
    u->st = RENDER_HTML_VALUE;
}

static void render_html_step(struct render_url_scan *u, const char *p, size_t left)
{
    char c = *p;
    int space = render_url_space(c);
    switch (u->st) {
    case RENDER_HTML_DATA:
        if (c == '<' && left >= 4 && memcmp(p, "<!--", 4) == 0) {
            u->st = RENDER_HTML_COMMENT;
            u->dashes = 0;
        } else if (c == '<' && left >= 2 &&
                   (render_url_alnum(p[1]) || p[1] == '/' || p[1] == '!' || p[1] == '?')) {
            u->st = RENDER_HTML_TAG_NAME;
        }
        return;
    case RENDER_HTML_COMMENT:
        if (c == '>' && u->dashes >= 2) {
            u->st = RENDER_HTML_DATA;
        }
        u->dashes = c == '-' ? u->dashes + 1 : 0;
        return;
    case RENDER_HTML_TAG_NAME:
        if (c == '>') {
            u->st = RENDER_HTML_DATA;
        } else if (space || c == '/') {
            u->st = RENDER_HTML_TAG;
        }
        return;
    case RENDER_HTML_TAG:
        if (c == '>') {
            u->st = RENDER_HTML_DATA;
        } else if (!space && c != '/') {
            render_html_attr_start(u, c);
        }
        return;
    case RENDER_HTML_ATTR:
    case RENDER_HTML_AFTER_ATTR:
        if (c == '=') {
            u->st = RENDER_HTML_BEFORE_VALUE;
        } else if (c == '>') {
            u->st = RENDER_HTML_DATA;
        } else if (c == '/') {
            u->st = RENDER_HTML_TAG;
        } else if (space) {
            u->st = RENDER_HTML_AFTER_ATTR;
        } else if (u->st == RENDER_HTML_AFTER_ATTR) {
            render_html_attr_start(u, c); /* the last one had no value */
        } else {
            render_html_attr_add(u, c);
        }
        return;
    case RENDER_HTML_BEFORE_VALUE:
        if (c == '>') {
            u->st = RENDER_HTML_DATA;
        } else if (c == '"' || c == '\'') {
            render_html_value_start(u, c);
        } else if (!space) {
            render_html_value_start(u, 0);
            render_url_value_add(u, c);
        }
        return;
    case RENDER_HTML_VALUE:
        if (u->quote ? c == u->quote : (space || c == '>')) {
            u->st = c == '>' ? RENDER_HTML_DATA : RENDER_HTML_TAG;
        } else if (u->value_n > 0 || u->value_field || !space) {
            render_url_value_add(u, c); /* leading whitespace is not the value's start */
        }
        return;
    }
}

/* ---------------------------------------------------------------- the scanner */

void render_url_literal(struct render_url_scan *u, const char *p, size_t n)
{
    switch (u->kind) {
    case RENDER_TPL_URL:
        if (!u->in_url) {
            u->in_url = 1;
            render_url_value_start(u);
        }
        for (size_t i = 0; i < n; i++) {
            render_url_value_add(u, p[i]);
        }
        return;
    case RENDER_TPL_TEXT:
        render_text_literal(u, p, n);
        return;
    case RENDER_TPL_HTML:
        for (size_t i = 0; i < n; i++) {
            render_html_step(u, p + i, n - i);
        }
        return;
    case RENDER_TPL_HEADER:
        return;
    }
}

/* The kind of URL the scan is in: the address of a mailto: (no '?' yet) or any other. */
static enum render_url render_url_mode(const struct render_url_scan *u)
{
    int mailto = u->value_n >= 7 && memcmp(u->value, "mailto:", 7) == 0;
    return mailto && !u->value_q ? RENDER_URL_MAILTO : RENDER_URL_ANY;
}

enum render_url render_url_field(struct render_url_scan *u)
{
    enum render_url mode = RENDER_URL_NONE;
    switch (u->kind) {
    case RENDER_TPL_URL:
        if (!u->in_url) {
            u->in_url = 1;
            render_url_value_start(u);
        }
        mode = render_url_mode(u);
        break;
    case RENDER_TPL_TEXT:
        mode = u->in_url ? render_url_mode(u) : RENDER_URL_NONE;
        u->prev = 'x'; /* a field is a word: "{{a}}http://" starts no URL */
        break;
    case RENDER_TPL_HTML:
        if (u->st == RENDER_HTML_BEFORE_VALUE) {
            render_html_value_start(u, 0); /* href={{link}}: an unquoted value */
        }
        if (u->st == RENDER_HTML_VALUE) {
            int url_attr = strcmp(u->attr, "href") == 0 || strcmp(u->attr, "src") == 0;
            if (url_attr && (u->value_n > 0 || u->value_field)) {
                mode = render_url_mode(u);
            }
        }
        break;
    case RENDER_TPL_HEADER:
        break;
    }
    u->value_field = 1;
    return mode;
}

void render_append_url(buf_t *dst, const char *p, size_t n, enum render_url mode)
{
    static const char hex[] = "0123456789ABCDEF";
    char *w = buf_reserve(dst, 3 * n);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (render_url_alnum((char)c) || c == '-' || c == '.' || c == '_' || c == '~' ||
            (c == '@' && mode == RENDER_URL_MAILTO)) {
            w[o++] = (char)c;
        } else {
            w[o++] = '%';
            w[o++] = hex[c >> 4];
            w[o++] = hex[c & 15];
        }
    }
    buf_commit(dst, o);
}
