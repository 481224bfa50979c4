/*
 * render_int - what render.c (templates, compile, per recipient),
 * render_mime.c (RFC 5322/2047 header fields, MIME bodies) and
 * render_url.c (merge fields inside URLs) share. Private to the renderer:
 * campaign/render.h is its public face.
 */
#ifndef RINGMAIL_RENDER_INT_H
#define RINGMAIL_RENDER_INT_H

#include <stddef.h>
#include <time.h>

#include "engine/buf.h"

#define RENDER_FOLD_AT 78
#define RENDER_RAW_WORD_MAX 900 /* longer words go encoded, which can be split */

/* A header field being written: tokens are placed on the line while they
 * fit before column 78, else on a new line (each token starts with its
 * whitespace, which becomes the folding whitespace). */
struct render_hdr {
    buf_t *out;
    size_t col;
    int has_token;
};

struct render_body_info {
    size_t high;      /* octets >= 0x80 */
    size_t control;   /* control octets other than TAB (line ends excluded) */
    size_t longest;   /* longest line, without CRLF */
    int has_boundary; /* "=_" occurs */
};

/* render_hdr_start - begin header field NAME on OUT */
void render_hdr_start(struct render_hdr *h, buf_t *out, const char *name);
/* render_hdr_end - end the field (CRLF) */
void render_hdr_end(struct render_hdr *h);
/* render_hdr_text - unstructured text, raw when it may be, else RFC 2047 words, folded */
void render_hdr_text(struct render_hdr *h, const char *p, size_t n);
/* render_hdr_mailbox - "name <addr>" with the name quoted or encoded as needed */
void render_hdr_mailbox(struct render_hdr *h, const char *name, size_t nn, const char *addr);
/* render_date - a Date: field for T, RFC 5322, UTC, English names */
void render_date(buf_t *out, time_t t);
/* render_normalize - merged text to DST with CRLF line ends and a final CRLF, scanned into INFO */
void render_normalize(const char *p, size_t n, buf_t *dst, struct render_body_info *info);
/* render_write_part - a text/TYPE part: headers, then the body in its shortest safe encoding */
void render_write_part(buf_t *out, const char *type, const buf_t *part,
                       const struct render_body_info *info, int multipart);
/* render_is_wsp - space or tab */
int render_is_wsp(char c);
/* render_trim - drop leading and trailing whitespace of (*P, *N) */
void render_trim(const char **p, size_t *n);

/* ---- render_url.c ---- */

/* What a template is, for the escaping of its fields. */
enum render_tpl_kind {
    RENDER_TPL_HEADER, /* subject, display name: one line, values as they are */
    RENDER_TPL_URL,    /* List-Unsubscribe: one line, a URL throughout */
    RENDER_TPL_TEXT,   /* the text/plain part: URLs after http:// or https:// */
    RENDER_TPL_HTML,   /* the text/html part: href and src values */
};

/* Where a merge field stands: its value percent-encoded or not. */
enum render_url {
    RENDER_URL_NONE,   /* not in a URL */
    RENDER_URL_ANY,    /* in a URL: unreserved characters only */
    RENDER_URL_MAILTO, /* in the address of a mailto: URL: '@' too */
};

enum render_html_state {
    RENDER_HTML_DATA,
    RENDER_HTML_COMMENT,
    RENDER_HTML_TAG_NAME,
    RENDER_HTML_TAG,
    RENDER_HTML_ATTR,
    RENDER_HTML_AFTER_ATTR,
    RENDER_HTML_BEFORE_VALUE,
    RENDER_HTML_VALUE,
};

/* A template walked in order at compile time: render_url_literal for each
 * literal, render_url_field for each field (which says where it stands). */
struct render_url_scan {
    enum render_tpl_kind kind;
    int in_url;    /* url, text: inside a URL */
    char prev;     /* text: the octet before */
    char value[8]; /* the URL (html: the attribute value) so far: its first 7 octets, lower case */
    size_t value_n;
    int value_q;               /* a '?' in it */
    int value_field;           /* a field in it */
    enum render_html_state st; /* html */
    char quote;                /* html: the value's quote, 0 unquoted */
    char attr[8];              /* html: the attribute's name, lower case (first 7 octets) */
    size_t attr_n;
    unsigned dashes; /* html comment: '-' in a row */
};

/* render_url_scan_init - a scan of a template of KIND */
void render_url_scan_init(struct render_url_scan *u, enum render_tpl_kind kind);
/* render_url_literal - the next literal text */
void render_url_literal(struct render_url_scan *u, const char *p, size_t n);
/* render_url_field - the next field: where it stands */
enum render_url render_url_field(struct render_url_scan *u);
/* render_append_url - (P, N) percent-encoded to DST, as MODE keeps */
void render_append_url(buf_t *dst, const char *p, size_t n, enum render_url mode);

#endif
