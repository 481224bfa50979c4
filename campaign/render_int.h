/*
 * render_int - what render.c (templates, compile, per recipient) and
 * render_mime.c (RFC 5322/2047 header fields, MIME bodies) share. Private
 * to the renderer: campaign/render.h is its public face.
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

#endif
