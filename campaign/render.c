/*
 * render - one RFC 5322 message per recipient from a campaign's templates
 *
 * SYNOPSIS
 *     #include "campaign/render.h"
 *
 *     t = render_compile(&spec, err, sizeof err);             once per campaign
 *     render_scratch_init(&scratch);                         once per worker
 *     render_vars_json(&vars, recipient_json);
 *     if (render_message(t, rcpt, &vars, &scratch, &out, err, sizeof err) < 0)
 *         mark the recipient invalid, reason err
 *
 * DESCRIPTION
 *     Templates. Each template is copied and cut once into literal and
 *     field segments ({{name}}, {{name|default}}); a field's name is made
 *     NUL-terminated inside the copy, so a lookup needs no allocation.
 *     Header templates (subject, display name, List-Unsubscribe) may not
 *     contain a line break, so a CR or LF in a merged header can only have
 *     come from a merge value: the recipient is refused with a reason,
 *     nothing is written (a value inside a URL is percent-encoded, so it
 *     has none left). Every merge value must be UTF-8 without NUL. Each
 *     field is marked at compile time as inside a URL or not
 *     (render_url.c). A field without a default that a recipient has no
 *     value for renders empty and is named in the scratch's missing[].
 *
 *     Headers. Text that is printable ASCII (no "=?", no word over 900
 *     octets) is written as it is, folded at its own whitespace before
 *     column 78; anything else becomes RFC 2047 "=?UTF-8?B?...?=" words of
 *     whole characters, each at most 75 octets, sized to the room left on
 *     the line, folded between words (a decoder drops that whitespace).
 *     A display name that is ASCII but not a run of atoms is quoted.
 *     Leading and trailing whitespace of a header value is dropped.
 *
 *     Bodies. A part's merged text gets CRLF line endings (CR, LF and CRLF
 *     all count) and a final CRLF, and is scanned once: 7bit when it is
 *     ASCII without control characters and no line exceeds 78 octets;
 *     otherwise quoted-printable when at most one octet in six is 8-bit
 *     (QP costs 3 octets for each, base64 4/3 for all, so this picks the
 *     shorter), else base64 (Chinese text is all 8-bit: base64). QP lines
 *     are at most 76 octets, whitespace at a line end is encoded.
 *
 *     multipart/alternative uses the fixed boundary "=_ringmail-alt":
 *     quoted-printable and base64 never produce "=_", and a part that
 *     would be 7bit but contains "=_" is sent as quoted-printable instead,
 *     so the boundary cannot occur in any part.
 *
 *     Message-ID is "<20 hex digits from crypto_random.unix time@from domain>";
 *     Date is RFC 5322 in UTC with English names (no locale).
 *
 * DIAGNOSTICS
 *     render_compile: "subject: unterminated merge field '{{first_name' at
 *     character 4", "text: bad merge field name '{{first name}}' at line
 *     2, character 7 (...)", "subject: a line break in a header template",
 *     "from_addr: not a plain address", "reply_to: ...", "extra header: ...",
 *     "list_unsubscribe: must start with https:// or mailto:", DKIM key
 *     errors. render_message: "Subject: merge field NAME contains CR or LF
 *     (header injection refused)", "text: merge field NAME is not UTF-8
 *     text", "recipient address: ...", "List-Unsubscribe: ...".
 */
#include "render.h"
#include "render_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/crypto.h"

#define RENDER_BOUNDARY "=_ringmail-alt"

enum render_seg_kind { RENDER_LITERAL, RENDER_FIELD };

struct render_seg {
    enum render_seg_kind kind;
    const char *text; /* the literal, or the field's default */
    size_t len;
    const char *name; /* field: NUL-terminated inside the template's copy */
    int has_default;
    enum render_url url; /* field: inside a URL (percent-encoded) or not */
};

struct render_tpl {
    char *src;               /* owned copy of the template; segments point into it */
    struct render_seg *segs; /* owned */
    size_t n;
};

struct render_template {
    buf_t from_line;   /* owned: "From: ...\r\n", folded */
    char *from_domain; /* owned */
    struct render_tpl to_name, subject, text, html, unsubscribe; /* src NULL when absent */
    struct render_tpl unsubscribe_mailto; /* a second List-Unsubscribe URI; src NULL: none */
    int one_click;                        /* List-Unsubscribe is https: add List-Unsubscribe-Post */
    buf_t tail;                           /* owned: Feedback-ID and the extra headers, CRLF each */
    time_t fixed_date;
    char *fixed_message_id;      /* owned, may be NULL */
    struct dkim_signer *dkim[2]; /* owned: ndkim of them (dual signing: two) */
    size_t ndkim;
};

/* One render_message call. */
struct render_call {
    const struct render_template *t;
    const char *rcpt;
    const struct render_vars *vars;
    struct render_scratch *s;
    char *err;
    size_t errlen;
};

enum render_ctx { RENDER_CTX_TEXT, RENDER_CTX_HTML, RENDER_CTX_HEADER };

static void render_truncate(buf_t *b, size_t len)
{
    if (buf_len(b) > len) {
        b->len = b->off + len;
    }
}

/* ---------------------------------------------------------------- text checks */

size_t render_utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = *p;
    size_t k = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC2 ? 1 : 0;
    if (k == 0 || c > 0xF4 || (size_t)(end - p) <= k) {
        return 0;
    }
    for (size_t i = 1; i <= k; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            return 0;
        }
    }
    if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0) || (c == 0xF0 && p[1] < 0x90) ||
        (c == 0xF4 && p[1] >= 0x90)) {
        return 0; /* overlong, a surrogate, past U+10FFFF */
    }
    return k + 1;
}

int render_utf8_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        if (*p == 0) {
            return 0;
        }
        if (*p < 0x80) {
            p++;
            continue;
        }
        size_t k = render_utf8_len(p, end);
        if (k == 0) {
            return 0;
        }
        p += k;
    }
    return 1;
}

static int render_has_line_break(const char *s, size_t n)
{
    return memchr(s, '\r', n) || memchr(s, '\n', n);
}

/* A plain address: local@domain, printable ASCII without the characters
 * that would need quoting or could end the header's <...>. */
static const char *render_address_problem(const char *a)
{
    size_t n = strlen(a);
    if (n < 3 || n > 254) {
        return "empty or longer than 254 octets";
    }
    const char *at = strrchr(a, '@');
    if (!at || at == a || at[1] == '\0') {
        return "not local@domain";
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c == '\r' || c == '\n') {
            return "contains CR or LF (header injection refused)";
        }
        if (c >= 0x80) {
            return "not ASCII (SMTPUTF8 is not supported; an IDN domain goes as its A-label)";
        }
        if (c <= ' ' || c == 0x7f || strchr("<>()[],;:\"\\", c)) {
            return "contains a space, a control character or one of <>()[],;:\"\\";
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- templates */

static int render_field_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 128) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.')) {
            return 0;
        }
    }
    return 1;
}

/* Where the octet at AT of template SRC is, for an error: "character C"
 * in a one-line template, else "line L, character C" (UTF-8 characters
 * from 1; CRLF, CR and LF end a line). */
static void render_where(const char *src, const char *at, char *dst, size_t cap)
{
    size_t line = 1, col = 1;
    for (const char *p = src; p < at; p++) {
        if (*p == '\n' || (*p == '\r' && p[1] != '\n')) {
            line++;
            col = 1;
        } else if (*p != '\r' && ((unsigned char)*p & 0xC0) != 0x80) {
            col++;
        }
    }
    if (strpbrk(src, "\r\n")) {
        snprintf(dst, cap, "line %zu, character %zu", line, col);
    } else {
        snprintf(dst, cap, "character %zu", col);
    }
}

/* The field as written, from its "{{" (at most 40 characters and the end of
 * its line; "..." when cut), for an error. */
static void render_excerpt(const char *open, const char *end, char *dst, size_t cap)
{
    size_t chars = 0, o = 0;
    const char *p = open;
    while (p < end && *p && *p != '\r' && *p != '\n' && chars < 40) {
        size_t k = 1;
        while (((unsigned char)p[k] & 0xC0) == 0x80 && p + k < end) {
            k++;
        }
        if (o + k + 4 > cap) {
            break;
        }
        memcpy(dst + o, p, k);
        o += k;
        p += k;
        chars++;
    }
    if (p < end && *p && *p != '\r' && *p != '\n' && o + 4 <= cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

/* A template error about the field written at OPEN ("{{"), up to END. */
static void render_field_error(const struct render_tpl *t, const char *open, const char *end,
                               const char *what, const char *problem, const char *hint, char *err,
                               size_t errlen)
{
    char where[64], excerpt[200];
    render_where(t->src, open, where, sizeof where);
    render_excerpt(open, end, excerpt, sizeof excerpt);
    snprintf(err, errlen, "%s: %s '%s' at %s%s", what, problem, excerpt, where, hint);
}

/* One "{{...}}" at open (after "{{"), closing at close; a field segment. */
static int render_tpl_field(struct render_tpl *t, char *open, char *close, const char *what,
                            char *err, size_t errlen)
{
    const char *name = open;
    size_t inner = (size_t)(close - open);
    const char *bar = memchr(open, '|', inner);
    size_t name_len = bar ? (size_t)(bar - open) : inner;
    const char *dflt = bar ? bar + 1 : close;
    size_t dflt_len = (size_t)(close - dflt);
    render_trim(&name, &name_len);
    render_trim(&dflt, &dflt_len);
    if (memchr(open, '{', inner)) {
        render_field_error(t, open - 2, close + 2, what, "'{' inside the merge field", "", err,
                           errlen);
        return -1;
    }
    if (!render_field_name_ok(name, name_len)) {
        render_field_error(t, open - 2, close + 2, what, "bad merge field name",
                           " (a name is letters, digits, _ - .)", err, errlen);
        return -1;
    }
    ((char *)name)[name_len] = '\0'; /* a space, '|' or '}': never literal text */
    t->segs[t->n++] =
        (struct render_seg){RENDER_FIELD, dflt, dflt_len, name, bar != NULL, RENDER_URL_NONE};
    return 0;
}

static int render_tpl_compile(struct render_tpl *t, const char *src, const char *what,
                              enum render_tpl_kind kind, char *err, size_t errlen)
{
    size_t len = strlen(src), fields = 0;
    int header = kind == RENDER_TPL_HEADER || kind == RENDER_TPL_URL;
    if (!render_utf8_ok(src, len)) {
        snprintf(err, errlen, "%s: template is not UTF-8 text", what);
        return -1;
    }
    if (header && render_has_line_break(src, len)) {
        snprintf(err, errlen, "%s: a line break in a header template", what);
        return -1;
    }
    for (const char *p = src; (p = strstr(p, "{{")); p += 2) {
        fields++;
    }
    t->src = strdup(src);
    t->segs = calloc(2 * fields + 1, sizeof *t->segs);
    if (!t->src || !t->segs) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct render_url_scan scan;
    render_url_scan_init(&scan, kind);
    char *p = t->src;
    for (;;) {
        char *open = strstr(p, "{{");
        char *lit_end = open ? open : p + strlen(p);
        if (lit_end > p) {
            t->segs[t->n++] = (struct render_seg){RENDER_LITERAL, p, (size_t)(lit_end - p),
                                                  NULL,           0, RENDER_URL_NONE};
            render_url_literal(&scan, p, (size_t)(lit_end - p));
        }
        if (!open) {
            return 0;
        }
        char *close = strstr(open + 2, "}}");
        char *eol = strpbrk(open + 2, "\r\n"); /* a field is on one line */
        if (!close || (eol && eol < close)) {
            render_field_error(t, open, open + strlen(open), what, "unterminated merge field", "",
                               err, errlen);
            return -1;
        }
        if (render_tpl_field(t, open + 2, close, what, err, errlen) < 0) {
            return -1;
        }
        t->segs[t->n - 1].url = render_url_field(&scan);
        p = close + 2;
    }
}

static void render_tpl_free(struct render_tpl *t)
{
    free(t->src);
    free(t->segs);
}

static void render_append_html(buf_t *dst, const char *p, size_t n)
{
    const char *end = p + n;
    while (p < end) {
        const char *run = p;
        while (p < end && !strchr("&<>\"'", *p)) {
            p++;
        }
        buf_append(dst, run, (size_t)(p - run));
        if (p == end) {
            break;
        }
        switch (*p++) {
        case '&':
            buf_append(dst, "&amp;", 5);
            break;
        case '<':
            buf_append(dst, "&lt;", 4);
            break;
        case '>':
            buf_append(dst, "&gt;", 4);
            break;
        case '"':
            buf_append(dst, "&quot;", 6);
            break;
        default:
            buf_append(dst, "&#39;", 5);
            break;
        }
    }
}

/* A field without a default rendered empty: named once in the scratch. */
static void render_note_missing(struct render_scratch *s, const char *name)
{
    for (size_t i = 0; i < s->nmissing; i++) {
        if (strcmp(s->missing[i], name) == 0) {
            return;
        }
    }
    if (s->nmissing < RENDER_MISSING_MAX) {
        s->missing[s->nmissing++] = name;
    } else {
        s->missing_more = 1;
    }
}

/* The value of one field: the recipient's, else the default, else empty. */
static int render_field_value(struct render_call *c, const struct render_seg *seg,
                              enum render_ctx ctx, const char *what, const char **v, size_t *vn)
{
    buf_t *value = &c->s->value;
    buf_reset(value);
    int found = c->vars && c->vars->lookup(c->vars->ctx, seg->name, value);
    if (!found) {
        buf_reset(value);
        if (strcmp(seg->name, "email") == 0) {
            buf_append_str(value, c->rcpt);
        }
    }
    *v = buf_data(value);
    *vn = buf_len(value);
    if (*vn == 0) {
        *v = seg->text; /* the default, checked at compile time */
        *vn = seg->has_default ? seg->len : 0;
        if (!seg->has_default) {
            render_note_missing(c->s, seg->name);
        }
        return 0;
    }
    if (!render_utf8_ok(*v, *vn)) {
        snprintf(c->err, c->errlen, "%s: merge field %s is not UTF-8 text (or has NUL)", what,
                 seg->name);
        return -1;
    }
    if (ctx == RENDER_CTX_HEADER && !seg->url && render_has_line_break(*v, *vn)) {
        snprintf(c->err, c->errlen,
                 "%s: merge field %s contains CR or LF (header injection refused)", what,
                 seg->name);
        return -1;
    }
    return 0;
}

static int render_expand(struct render_call *c, const struct render_tpl *t, enum render_ctx ctx,
                         const char *what, buf_t *dst)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct render_seg *seg = &t->segs[i];
        if (seg->kind == RENDER_LITERAL) {
            buf_append(dst, seg->text, seg->len);
            continue;
        }
        const char *v;
        size_t vn;
        if (render_field_value(c, seg, ctx, what, &v, &vn) < 0) {
            return -1;
        }
        if (seg->url) {
            render_append_url(dst, v, vn, seg->url); /* no HTML or header character left */
        } else if (ctx == RENDER_CTX_HTML) {
            render_append_html(dst, v, vn);
        } else {
            buf_append(dst, v, vn);
        }
    }
    return 0;
}

/* With [feedback], the recipient's unsubscribe token starts the
 * Message-ID ("<u-TOKEN.HEX.TIME@domain>"): an abuse report that returns
 * only the Message-ID still names its recipient, with a MAC. */
static void render_message_id(const struct render_call *c, buf_t *out, time_t now)
{
    const struct render_template *t = c->t;
    if (t->fixed_message_id) {
        buf_appendf(out, "Message-ID: %s\r\n", t->fixed_message_id);
        return;
    }
    uint8_t r[10];
    crypto_random(r, sizeof r);
    char hex[2 * sizeof r + 1];
    for (size_t i = 0; i < sizeof r; i++) {
        hex[2 * i] = "0123456789abcdef"[r[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[r[i] & 15];
    }
    hex[sizeof hex - 1] = '\0';
    buf_t *tok = &c->s->field;
    buf_reset(tok);
    if (c->vars && c->vars->lookup && c->vars->lookup(c->vars->ctx, RENDER_TOKEN_VAR, tok) == 1 &&
        buf_len(tok) > 0 && buf_len(tok) < 64) {
        buf_appendf(out, "Message-ID: <u-%.*s.%s.%lld@%s>\r\n", (int)buf_len(tok),
                    (const char *)buf_data(tok), hex, (long long)now, t->from_domain);
        return;
    }
    buf_appendf(out, "Message-ID: <%s.%lld@%s>\r\n", hex, (long long)now, t->from_domain);
}

/* ---------------------------------------------------------------- compile */

static const char *const render_own_headers[] = {"from",
                                                 "reply-to",
                                                 "to",
                                                 "subject",
                                                 "date",
                                                 "message-id",
                                                 "mime-version",
                                                 "content-type",
                                                 "content-transfer-encoding",
                                                 "feedback-id",
                                                 "list-unsubscribe",
                                                 "list-unsubscribe-post",
                                                 "dkim-signature",
                                                 NULL};

static int render_printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c >= 0x7f) {
            return 0;
        }
    }
    return 1;
}

static int render_extra_header(buf_t *tail, const char *h, char *err, size_t errlen)
{
    const char *colon = strchr(h, ':');
    size_t len = strlen(h), name_len = colon ? (size_t)(colon - h) : 0;
    if (!colon || name_len == 0 || len > 998 || !render_printable(h, len)) {
        snprintf(err, errlen, "extra header: \"Name: value\", printable ASCII, at most 998 octets");
        return -1;
    }
    for (size_t i = 0; i < name_len; i++) {
        if (h[i] <= ' ') {
            snprintf(err, errlen, "extra header: bad field name");
            return -1;
        }
    }
    for (size_t i = 0; render_own_headers[i]; i++) {
        if (strlen(render_own_headers[i]) == name_len &&
            strncasecmp(h, render_own_headers[i], name_len) == 0) {
            snprintf(err, errlen, "extra header: %.*s is written by the renderer", (int)name_len,
                     h);
            return -1;
        }
    }
    buf_append(tail, h, len);
    buf_append(tail, "\r\n", 2);
    return 0;
}

static int render_compile_headers(struct render_template *t, const struct render_spec *spec,
                                  char *err, size_t errlen)
{
    const char *why = spec->from_addr ? render_address_problem(spec->from_addr) : "missing";
    if (why) {
        snprintf(err, errlen, "from_addr: %s", why);
        return -1;
    }
    t->from_domain = strdup(strrchr(spec->from_addr, '@') + 1);
    const char *name = spec->from_name ? spec->from_name : "";
    if (!render_utf8_ok(name, strlen(name)) || render_has_line_break(name, strlen(name))) {
        snprintf(err, errlen, "from_name: not one line of UTF-8 text");
        return -1;
    }
    struct render_hdr h;
    render_hdr_start(&h, &t->from_line, "From");
    render_hdr_mailbox(&h, name, strlen(name), spec->from_addr);
    render_hdr_end(&h);
    if (spec->reply_to) {
        why = render_address_problem(spec->reply_to);
        if (why) {
            snprintf(err, errlen, "reply_to: %s", why);
            return -1;
        }
        render_hdr_start(&h, &t->from_line, "Reply-To");
        render_hdr_mailbox(&h, "", 0, spec->reply_to);
        render_hdr_end(&h);
    }
    if (spec->feedback_id) {
        size_t n = strlen(spec->feedback_id);
        if (n == 0 || n > RENDER_RAW_WORD_MAX || !render_printable(spec->feedback_id, n)) {
            snprintf(err, errlen, "feedback_id: printable ASCII, at most 900 octets");
            return -1;
        }
        buf_appendf(&t->tail, "Feedback-ID: %s\r\n", spec->feedback_id);
    }
    for (size_t i = 0; spec->extra_headers && spec->extra_headers[i]; i++) {
        if (render_extra_header(&t->tail, spec->extra_headers[i], err, errlen) < 0) {
            return -1;
        }
    }
    if (spec->fixed_message_id) {
        size_t n = strlen(spec->fixed_message_id);
        if (n < 5 || n > RENDER_RAW_WORD_MAX || spec->fixed_message_id[0] != '<' ||
            spec->fixed_message_id[n - 1] != '>' || !render_printable(spec->fixed_message_id, n)) {
            snprintf(err, errlen, "fixed_message_id: \"<id@domain>\"");
            return -1;
        }
        t->fixed_message_id = strdup(spec->fixed_message_id);
    }
    return 0;
}

/* render_http_loopback - http:// to 127.0.0.1, [::1] or localhost: what
 * [feedback] unsubscribe_url accepts to test with (pool/config_feedback.c) */
static int render_http_loopback(const char *u)
{
    static const char *const hosts[] = {"127.0.0.1", "[::1]", "localhost"};
    if (strncasecmp(u, "http://", 7) != 0) {
        return 0;
    }
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        size_t n = strlen(hosts[i]);
        if (strncasecmp(u + 7, hosts[i], n) == 0 && strchr(":/", u[7 + n])) {
            return 1;
        }
    }
    return 0;
}

static int render_compile_templates(struct render_template *t, const struct render_spec *spec,
                                    char *err, size_t errlen)
{
    if (!spec->subject) {
        snprintf(err, errlen, "subject: missing");
        return -1;
    }
    if (!spec->text && !spec->html) {
        snprintf(err, errlen, "text, html: a message needs one of them");
        return -1;
    }
    if (render_tpl_compile(&t->subject, spec->subject, "subject", RENDER_TPL_HEADER, err, errlen) <
            0 ||
        (spec->to_name && render_tpl_compile(&t->to_name, spec->to_name, "to_name",
                                             RENDER_TPL_HEADER, err, errlen) < 0) ||
        (spec->text &&
         render_tpl_compile(&t->text, spec->text, "text", RENDER_TPL_TEXT, err, errlen) < 0) ||
        (spec->html &&
         render_tpl_compile(&t->html, spec->html, "html", RENDER_TPL_HTML, err, errlen) < 0)) {
        return -1;
    }
    if (spec->list_unsubscribe) {
        const char *u = spec->list_unsubscribe;
        t->one_click = strncasecmp(u, "https://", 8) == 0 || render_http_loopback(u);
        if (!t->one_click && strncasecmp(u, "mailto:", 7) != 0) {
            snprintf(err, errlen, "list_unsubscribe: must start with https:// or mailto:");
            return -1;
        }
        if (render_tpl_compile(&t->unsubscribe, u, "list_unsubscribe", RENDER_TPL_URL, err,
                               errlen) < 0) {
            return -1;
        }
    }
    const char *m = spec->list_unsubscribe_mailto;
    if (m && (!spec->list_unsubscribe || strncasecmp(m, "mailto:", 7) != 0)) {
        snprintf(err, errlen,
                 "list_unsubscribe_mailto: must start with mailto: and follow a "
                 "list_unsubscribe");
        return -1;
    }
    if (m && render_tpl_compile(&t->unsubscribe_mailto, m, "list_unsubscribe_mailto",
                                RENDER_TPL_URL, err, errlen) < 0) {
        return -1;
    }
    return 0;
}

struct render_template *render_compile(const struct render_spec *spec, char *err, size_t errlen)
{
    struct render_template *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->fixed_date = spec->fixed_date;
    if (render_compile_headers(t, spec, err, errlen) < 0 ||
        render_compile_templates(t, spec, err, errlen) < 0) {
        render_free(t);
        return NULL;
    }
    const struct dkim_spec *dk[2] = {spec->dkim, spec->dkim ? spec->dkim2 : NULL};
    for (size_t i = 0; i < 2 && dk[i]; i++) {
        char why[200];
        t->dkim[i] = dkim_signer_new(dk[i], why, sizeof why);
        if (!t->dkim[i]) {
            snprintf(err, errlen, "dkim%s: %s", i ? "2" : "", why);
            render_free(t);
            return NULL;
        }
        t->ndkim++;
    }
    return t;
}

void render_free(struct render_template *t)
{
    if (!t) {
        return;
    }
    buf_free(&t->from_line);
    buf_free(&t->tail);
    free(t->from_domain);
    free(t->fixed_message_id);
    render_tpl_free(&t->to_name);
    render_tpl_free(&t->subject);
    render_tpl_free(&t->text);
    render_tpl_free(&t->html);
    render_tpl_free(&t->unsubscribe);
    render_tpl_free(&t->unsubscribe_mailto);
    dkim_signer_free(t->dkim[0]);
    dkim_signer_free(t->dkim[1]);
    free(t);
}

void render_fields(const struct render_template *t, render_field_cb cb, void *user)
{
    const struct render_tpl *tpls[] = {&t->to_name, &t->subject,     &t->text,
                                       &t->html,    &t->unsubscribe, &t->unsubscribe_mailto};
    static const char *const where[] = {
        "display name", "subject", "text", "html", "list-unsubscribe", "list-unsubscribe mailto"};
    for (size_t k = 0; k < sizeof tpls / sizeof tpls[0]; k++) {
        for (size_t i = 0; tpls[k]->src && i < tpls[k]->n; i++) {
            const struct render_seg *s = &tpls[k]->segs[i];
            if (s->kind == RENDER_FIELD) {
                cb(user, where[k], s->name, s->has_default);
            }
        }
    }
}

/* ---------------------------------------------------------------- per recipient */

/* One List-Unsubscribe URI merged and appended to field; its length in *n. */
static int render_unsubscribe_uri(struct render_call *c, const struct render_tpl *tpl, buf_t *field,
                                  size_t *n)
{
    size_t start = buf_len(field);
    if (render_expand(c, tpl, RENDER_CTX_HEADER, "List-Unsubscribe", field) < 0) {
        return -1;
    }
    const char *u = buf_data(field) + start;
    *n = buf_len(field) - start;
    for (size_t i = 0; i < *n; i++) {
        if ((unsigned char)u[i] <= ' ' || (unsigned char)u[i] >= 0x7f || strchr("<>\"", u[i])) {
            snprintf(c->err, c->errlen,
                     "List-Unsubscribe: the merged URL has a space, a "
                     "control or non-ASCII octet, or one of <>\"");
            return -1;
        }
    }
    if (*n > RENDER_RAW_WORD_MAX) {
        snprintf(c->err, c->errlen, "List-Unsubscribe: the merged URL is over 900 octets");
        return -1;
    }
    return 0;
}

static int render_headers(struct render_call *c, buf_t *out, time_t now)
{
    const struct render_template *t = c->t;
    buf_t *field = &c->s->field;
    struct render_hdr h;
    buf_append(out, buf_data(&t->from_line), buf_len(&t->from_line));

    buf_reset(field);
    if (t->to_name.src && render_expand(c, &t->to_name, RENDER_CTX_HEADER, "To", field) < 0) {
        return -1;
    }
    render_hdr_start(&h, out, "To");
    render_hdr_mailbox(&h, buf_data(field), buf_len(field), c->rcpt);
    render_hdr_end(&h);

    buf_reset(field);
    if (render_expand(c, &t->subject, RENDER_CTX_HEADER, "Subject", field) < 0) {
        return -1;
    }
    render_hdr_start(&h, out, "Subject");
    render_hdr_text(&h, buf_data(field), buf_len(field));
    render_hdr_end(&h);

    render_date(out, now);
    render_message_id(c, out, now);
    buf_append_str(out, "MIME-Version: 1.0\r\n");
    if (t->unsubscribe.src) {
        buf_reset(field);
        size_t un, mn = 0;
        if (render_unsubscribe_uri(c, &t->unsubscribe, field, &un) < 0 ||
            (t->unsubscribe_mailto.src &&
             render_unsubscribe_uri(c, &t->unsubscribe_mailto, field, &mn) < 0)) {
            return -1;
        }
        const char *u = buf_data(field);
        buf_appendf(out, "List-Unsubscribe: <%.*s>", (int)un, u);
        if (mn) {
            /* Folded before the second URI when one line would pass 78 columns. */
            int fold = sizeof "List-Unsubscribe: <>, <>" - 1 + un + mn > RENDER_FOLD_AT;
            buf_appendf(out, ",%s<%.*s>", fold ? "\r\n " : " ", (int)mn, u + un);
        }
        buf_append_str(out, "\r\n");
        if (t->one_click) {
            buf_append_str(out, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
        }
    }
    buf_append(out, buf_data(&t->tail), buf_len(&t->tail));
    return 0;
}

/* Merge and normalize one body part into part; info describes it. */
static int render_body_part(struct render_call *c, const struct render_tpl *tpl,
                            enum render_ctx ctx, const char *what, buf_t *part,
                            struct render_body_info *info)
{
    buf_t *merged = &c->s->merged;
    buf_reset(merged);
    buf_reset(part);
    if (render_expand(c, tpl, ctx, what, merged) < 0) {
        return -1;
    }
    render_normalize(buf_data(merged), buf_len(merged), part, info);
    return 0;
}

static int render_body(struct render_call *c, buf_t *out)
{
    const struct render_template *t = c->t;
    struct render_scratch *s = c->s;
    struct render_body_info text_info, html_info;
    if ((t->text.src &&
         render_body_part(c, &t->text, RENDER_CTX_TEXT, "text", &s->part[0], &text_info) < 0) ||
        (t->html.src &&
         render_body_part(c, &t->html, RENDER_CTX_HTML, "html", &s->part[1], &html_info) < 0)) {
        return -1;
    }
    if (!t->html.src) {
        render_write_part(out, "plain", &s->part[0], &text_info, 0);
    } else if (!t->text.src) {
        render_write_part(out, "html", &s->part[1], &html_info, 0);
    } else {
        buf_append_str(out, "Content-Type: multipart/alternative; boundary=\"" RENDER_BOUNDARY
                            "\"\r\n\r\n--" RENDER_BOUNDARY "\r\n");
        render_write_part(out, "plain", &s->part[0], &text_info, 1);
        buf_append_str(out, "--" RENDER_BOUNDARY "\r\n");
        render_write_part(out, "html", &s->part[1], &html_info, 1);
        buf_append_str(out, "--" RENDER_BOUNDARY "--\r\n");
    }
    return 0;
}

static int render_run(struct render_call *c, buf_t *out)
{
    const struct render_template *t = c->t;
    c->s->nmissing = 0;
    c->s->missing_more = 0;
    c->s->sign_failed = 0;
    const char *why = c->rcpt ? render_address_problem(c->rcpt) : "missing";
    if (why) {
        snprintf(c->err, c->errlen, "recipient address: %s", why);
        return -1;
    }
    time_t now = t->fixed_date ? t->fixed_date : time(NULL);
    buf_t *dst = out;
    if (t->ndkim) {
        dst = &c->s->message;
        buf_reset(dst);
    }
    size_t start = buf_len(dst);
    if (render_headers(c, dst, now) < 0 || render_body(c, dst) < 0) {
        render_truncate(dst, start);
        return -1;
    }
    if (t->ndkim) {
        int rc = dkim_sign_all((const struct dkim_signer *const *)t->dkim, t->ndkim, buf_data(dst),
                               buf_len(dst), now, out, c->err, c->errlen);
        if (rc < 0) {
            c->s->sign_failed = rc == DKIM_HOLDER_FAILED;
            return -1;
        }
        buf_append(out, buf_data(dst), buf_len(dst));
    }
    return 0;
}

int render_message(const struct render_template *t, const char *rcpt,
                   const struct render_vars *vars, struct render_scratch *scratch, buf_t *out,
                   char *err, size_t errlen)
{
    struct render_scratch local;
    if (!scratch) {
        render_scratch_init(&local);
    }
    struct render_call c = {t, rcpt, vars, scratch ? scratch : &local, err, errlen};
    int rc = render_run(&c, out);
    if (!scratch) {
        render_scratch_free(&local);
    }
    return rc;
}

/* ---------------------------------------------------------------- variables, scratch */

static int render_json_lookup(void *ctx, const char *name, buf_t *value)
{
    const json_t *v = json_object_get(ctx, name);
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_STRING:
        buf_append(value, json_string_value(v), json_string_length(v));
        return 1;
    case JSON_INTEGER:
        buf_appendf(value, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return 1;
    case JSON_REAL:
        buf_appendf(value, "%.15g", json_real_value(v));
        return 1;
    case JSON_TRUE:
        buf_append_str(value, "true");
        return 1;
    case JSON_FALSE:
        buf_append_str(value, "false");
        return 1;
    default:
        return 0;
    }
}

void render_vars_json(struct render_vars *vars, const json_t *object)
{
    vars->lookup = render_json_lookup;
    vars->ctx = (void *)object;
}

void render_scratch_init(struct render_scratch *s)
{
    buf_init(&s->value);
    buf_init(&s->field);
    buf_init(&s->merged);
    buf_init(&s->part[0]);
    buf_init(&s->part[1]);
    buf_init(&s->message);
    s->nmissing = 0;
    s->missing_more = 0;
    s->sign_failed = 0;
}

void render_scratch_free(struct render_scratch *s)
{
    buf_free(&s->value);
    buf_free(&s->field);
    buf_free(&s->merged);
    buf_free(&s->part[0]);
    buf_free(&s->part[1]);
    buf_free(&s->message);
}
