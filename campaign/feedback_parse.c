/*
 * NAME
 *   feedback_parse - DSN, ARF, auto-reply and bounce-text reports from raw mail
 *
 * SYNOPSIS
 *   #include "campaign/feedback_parse.h"
 *
 * DESCRIPTION
 *   GMime parses the MIME structure and decodes the parts (transfer
 *   encodings, charsets, RFC 2047 words): the peer's bytes never meet a
 *   hand-written MIME parser here. What is hand-written is small: the
 *   RFC 822-style field blocks of message/delivery-status and
 *   message/feedback-report (name: value lines, folded, blocks separated
 *   by blank lines), the token scan (feedback_report.c) and the text
 *   patterns of the bounces that are not RFC 3464 (feedback_text.c).
 *
 *   The report's MIME tree is walked once, not into returned messages:
 *   a returned message that is itself a DSN is what a bounce loop looks
 *   like, not a second report to read.
 *
 * DIAGNOSTICS
 *   None: every input gives a report, whose unmatched event says what was
 *   missing. Out of memory aborts (glib's and buf's policy).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gmime/gmime.h>

#include "campaign/feedback_int.h"
#include "engine/buf.h"

/* Parts of one report the walk looks at, all borrowed from the message. */
#define FB_TEXTS_MAX 8
#define FB_DEPTH_MAX 12
/* One field value of a DSN/ARF block is kept up to this many bytes. */
#define FB_FIELD_MAX 4096

struct fb_parts {
    GMimeObject *status;   /* message/delivery-status */
    GMimeObject *feedback; /* message/feedback-report */
    GMimeObject *returned; /* message/rfc822 or text/rfc822-headers */
    GMimeObject *texts[FB_TEXTS_MAX];
    int text_html[FB_TEXTS_MAX];
    size_t n_texts;
};

/* What every event of one report shares; copied into each event. */
struct fb_common {
    char *reporting_mta, *arrival_date, *feedback_type, *message_id; /* owned */
};

/* The fields of one DSN/ARF block that are read (the rest are skipped). */
enum fb_field {
    FB_REPORTING_MTA,
    FB_ARRIVAL_DATE,
    FB_RECEIVED_DATE,
    FB_FINAL_RCPT,
    FB_ORIG_RCPT,
    FB_ACTION,
    FB_STATUS,
    FB_REMOTE_MTA,
    FB_DIAG,
    FB_POSTFIX_SENDER,
    FB_FEEDBACK_TYPE,
    FB_ORIG_MAIL_FROM,
    FB_ORIG_RCPT_TO,
    FB_FIELDS,
};

static const char *const fb_field_names[FB_FIELDS] = {
    "Reporting-MTA",      "Arrival-Date",     "Received-Date", "Final-Recipient",
    "Original-Recipient", "Action",           "Status",        "Remote-MTA",
    "Diagnostic-Code",    "X-Postfix-Sender", "Feedback-Type", "Original-Mail-From",
    "Original-Rcpt-To",
};

struct fb_block {
    buf_t f[FB_FIELDS];
    int seen[FB_FIELDS];
};

static pthread_once_t fb_gmime_once = PTHREAD_ONCE_INIT;

/* fb_gmime_init - GMime's process-wide set-up, once. */
static void fb_gmime_init(void)
{
    g_mime_init();
}

void feedback_parse_shutdown(void)
{
    g_mime_shutdown();
}

/* ---- MIME ---- */

/* fb_walk - find the report's parts, without descending into returned messages. */
static void fb_walk(GMimeObject *o, struct fb_parts *p, int depth)
{
    if (!o || depth > FB_DEPTH_MAX) {
        return;
    }
    if (GMIME_IS_MULTIPART(o)) {
        int n = g_mime_multipart_get_count(GMIME_MULTIPART(o));
        for (int i = 0; i < n; i++) {
            fb_walk(g_mime_multipart_get_part(GMIME_MULTIPART(o), i), p, depth + 1);
        }
        return;
    }
    GMimeContentType *ct = g_mime_object_get_content_type(o);
    if (GMIME_IS_MESSAGE_PART(o) || g_mime_content_type_is_type(ct, "text", "rfc822-headers") ||
        g_mime_content_type_is_type(ct, "message", "global-headers")) {
        if (!p->returned) {
            p->returned = o;
        }
    } else if (g_mime_content_type_is_type(ct, "message", "delivery-status") ||
               g_mime_content_type_is_type(ct, "message", "global-delivery-status")) {
        if (!p->status) {
            p->status = o;
        }
    } else if (g_mime_content_type_is_type(ct, "message", "feedback-report")) {
        if (!p->feedback) {
            p->feedback = o;
        }
    } else if (GMIME_IS_PART(o) && g_mime_content_type_is_type(ct, "text", "*") &&
               p->n_texts < FB_TEXTS_MAX) {
        p->text_html[p->n_texts] = g_mime_content_type_is_type(ct, "text", "html");
        p->texts[p->n_texts++] = o;
    }
}

/* fb_part_bytes - the decoded content of a leaf part into out, at most max bytes. */
static void fb_part_bytes(GMimeObject *o, buf_t *out, size_t max)
{
    GMimeDataWrapper *w = GMIME_IS_PART(o) ? g_mime_part_get_content(GMIME_PART(o)) : NULL;
    if (!w) {
        return;
    }
    GMimeStream *mem = g_mime_stream_mem_new();
    g_mime_data_wrapper_write_to_stream(w, mem);
    GByteArray *a = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
    if (a) {
        buf_append(out, a->data, a->len < max ? a->len : max);
    }
    g_object_unref(mem);
}

/* fb_part_text - a text part's content in UTF-8 (from its charset, when
 * iconv knows it; else as it is, fb_clean replaces what is not UTF-8). */
static void fb_part_text(GMimeObject *o, buf_t *out)
{
    buf_t raw = BUF_INIT;
    fb_part_bytes(o, &raw, FB_TEXT_SCAN_MAX);
    const char *cs = g_mime_object_get_content_type_parameter(o, "charset");
    gchar *conv = NULL;
    gsize written = 0;
    if (cs && g_ascii_strcasecmp(cs, "utf-8") != 0 && g_ascii_strcasecmp(cs, "us-ascii") != 0) {
        conv = g_convert_with_fallback(buf_data(&raw), (gssize)buf_len(&raw), "UTF-8",
                                       g_mime_charset_iconv_name(cs), "?", NULL, &written, NULL);
    }
    if (conv) {
        buf_append(out, conv, written);
        g_free(conv);
    } else {
        buf_append(out, buf_data(&raw), buf_len(&raw));
    }
    buf_free(&raw);
}

/* fb_html_tag_breaks - a tag that ends a line of the rendered text. */
static int fb_html_tag_breaks(const char *tag, size_t n)
{
    static const char *const names[] = {"br",  "p",   "/p",  "div", "/div", "tr",     "/tr", "li",
                                        "/li", "/h1", "/h2", "/h3", "/h4",  "/table", "hr"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t m = strlen(names[i]);
        if (n >= m && g_ascii_strncasecmp(tag, names[i], m) == 0 &&
            (n == m || !g_ascii_isalnum(tag[m]))) {
            return 1;
        }
    }
    return 0;
}

/* fb_html_text - the text of an HTML part, lines where the layout breaks them. */
static void fb_html_text(const char *s, size_t n, buf_t *out)
{
    static const struct {
        const char *name, *text;
    } ents[] = {{"&lt;", "<"},  {"&gt;", ">"},   {"&amp;", "&"}, {"&quot;", "\""},
                {"&#39;", "'"}, {"&nbsp;", " "}, {"&#160;", " "}};
    for (size_t i = 0; i < n;) {
        if (s[i] == '<') {
            const char *end = memchr(s + i, '>', n - i);
            size_t tl = end ? (size_t)(end - s) - i - 1 : n - i - 1;
            const char *skip_to = NULL;
            static const char *const hidden[] = {"style", "script", "head"};
            for (size_t k = 0; k < 3 && !skip_to; k++) {
                size_t m = strlen(hidden[k]);
                if (tl >= m && g_ascii_strncasecmp(s + i + 1, hidden[k], m) == 0 &&
                    (tl == m || !g_ascii_isalnum(s[i + 1 + m]))) {
                    char close[16];
                    snprintf(close, sizeof close, "</%s", hidden[k]);
                    skip_to = fb_casefind(s + i, n - i, close);
                }
            }
            if (fb_html_tag_breaks(s + i + 1, tl)) {
                buf_append(out, "\n", 1);
            }
            if (skip_to) {
                end = memchr(skip_to, '>', n - (size_t)(skip_to - s));
            }
            i = end ? (size_t)(end - s) + 1 : n;
            continue;
        }
        size_t k = 0;
        while (s[i] == '&' && k < sizeof ents / sizeof ents[0] &&
               (n - i < strlen(ents[k].name) ||
                g_ascii_strncasecmp(s + i, ents[k].name, strlen(ents[k].name)) != 0)) {
            k++;
        }
        if (s[i] == '&' && k < sizeof ents / sizeof ents[0]) {
            buf_append_str(out, ents[k].text);
            i += strlen(ents[k].name);
        } else {
            buf_append(out, s[i] == '\r' || s[i] == '\n' ? " " : s + i, 1);
            i++;
        }
    }
}

/* fb_returned_message - the returned message (or its headers) as a
 * GMimeMessage the caller unrefs, or NULL. */
static GMimeMessage *fb_returned_message(GMimeObject *o)
{
    if (!o) {
        return NULL;
    }
    if (GMIME_IS_MESSAGE_PART(o)) {
        GMimeMessage *m = g_mime_message_part_get_message(GMIME_MESSAGE_PART(o));
        return m ? g_object_ref(m) : NULL;
    }
    buf_t b = BUF_INIT;
    fb_part_bytes(o, &b, FB_TEXT_SCAN_MAX);
    GMimeStream *s = g_mime_stream_mem_new_with_buffer(buf_data(&b), buf_len(&b));
    GMimeParser *p = g_mime_parser_new_with_stream(s);
    GMimeMessage *m = g_mime_parser_construct_message(p, NULL);
    g_object_unref(p);
    g_object_unref(s);
    buf_free(&b);
    return m;
}

/* fb_header - header name of o (decoded value as GMime keeps it), or NULL. */
static const char *fb_header(void *o, const char *name)
{
    return o ? g_mime_object_get_header(GMIME_OBJECT(o), name) : NULL;
}

/* fb_headers_scan - tokens in every header called name (all of them, when
 * name is NULL) of o. */
static void fb_headers_scan(struct feedback_report *r, GMimeObject *o, const char *name,
                            enum feedback_origin origin)
{
    GMimeHeaderList *hl = g_mime_object_get_header_list(o);
    int n = hl ? g_mime_header_list_get_count(hl) : 0;
    for (int i = 0; i < n; i++) {
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        const char *hn = g_mime_header_get_name(h), *v = g_mime_header_get_value(h);
        if (v && hn && (!name || g_ascii_strcasecmp(hn, name) == 0)) {
            fb_tokens_scan(r, v, strlen(v), origin);
        }
    }
}

/* fb_returned_scan - the returned message's tokens, Message-ID, and
 * whether it says "loop": its reason, or NULL. */
static const char *fb_returned_scan(struct feedback_report *r, GMimeMessage *m, struct fb_common *c)
{
    if (!m) {
        return NULL;
    }
    GMimeObject *o = GMIME_OBJECT(m);
    fb_headers_scan(r, o, "Return-Path", FEEDBACK_ORIGIN_RETURN_PATH);
    const char *lu = fb_header(o, "List-Unsubscribe");
    if (lu) {
        fb_tokens_unsubscribe(r, lu);
    }
    GMimeHeaderList *hl = g_mime_object_get_header_list(o);
    int n = hl ? g_mime_header_list_get_count(hl) : 0;
    for (int i = 0; i < n; i++) {
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        const char *hn = g_mime_header_get_name(h), *v = g_mime_header_get_value(h);
        if (v && hn && g_ascii_strcasecmp(hn, "List-Unsubscribe") != 0) {
            fb_tokens_scan(r, v, strlen(v), FEEDBACK_ORIGIN_RETURNED);
        }
    }
    fb_set_str(&c->message_id, g_mime_message_get_message_id(m));
    const char *rp = fb_header(o, "Return-Path");
    if (rp) {
        while (g_ascii_isspace(*rp)) {
            rp++;
        }
        if (strncmp(rp, "<>", 2) == 0 || *rp == '\0') {
            return "bounce loop: the returned message was sent with a null envelope sender";
        }
    }
    /* GMime keeps Content-Type on the message's MIME part, also for a headers-only copy. */
    GMimeObject *top = g_mime_message_get_mime_part(m);
    GMimeContentType *ct = top ? g_mime_object_get_content_type(top) : NULL;
    const char *rt = ct && g_mime_content_type_is_type(ct, "multipart", "report")
                         ? g_mime_content_type_get_parameter(ct, "report-type")
                         : NULL;
    if (rt && g_ascii_strcasecmp(rt, "delivery-status") == 0) {
        return "bounce loop: the returned message is itself a delivery status notification";
    }
    return NULL;
}

/* ---- DSN and ARF field blocks ---- */

static void fb_block_free(struct fb_block *b)
{
    for (int i = 0; i < FB_FIELDS; i++) {
        buf_free(&b->f[i]);
    }
    memset(b, 0, sizeof *b);
}

/* fb_block_next - the next block of "Name: value" lines (folded lines
 * joined) from *p; 0 at the end. The first occurrence of a field wins. */
static int fb_block_next(const char **p, const char *end, struct fb_block *b)
{
    fb_block_free(b);
    const char *s = *p;
    int lines = 0, cur = -1;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *le = nl ? nl : end, *next = nl ? nl + 1 : end;
        size_t len = (size_t)(le - s);
        if (len > 0 && s[len - 1] == '\r') {
            len--;
        }
        int blank = 1;
        for (size_t i = 0; i < len && blank; i++) {
            blank = g_ascii_isspace(s[i]);
        }
        if (blank) {
            s = next;
            if (lines > 0) {
                break;
            }
            continue;
        }
        lines++;
        if ((s[0] == ' ' || s[0] == '\t') && cur >= 0) {
            if (buf_len(&b->f[cur]) + len < FB_FIELD_MAX) {
                buf_append(&b->f[cur], " ", 1);
                buf_append(&b->f[cur], s, len);
            }
        } else {
            const char *colon = memchr(s, ':', len);
            cur = -1;
            for (int i = 0; colon && i < FB_FIELDS; i++) {
                size_t nl2 = strlen(fb_field_names[i]);
                if ((size_t)(colon - s) == nl2 &&
                    g_ascii_strncasecmp(s, fb_field_names[i], nl2) == 0 && !b->seen[i]) {
                    cur = i;
                    b->seen[i] = 1;
                    size_t vl = len - nl2 - 1;
                    buf_append(&b->f[i], colon + 1, vl < FB_FIELD_MAX ? vl : FB_FIELD_MAX);
                }
            }
        }
        s = next;
    }
    *p = s;
    return lines > 0;
}

/* fb_typed - the value of a "type; value" field without its type ("rfc822; a@b" -> "a@b"). */
static char *fb_typed(const buf_t *f)
{
    const char *s = buf_data(f), *semi = memchr(s, ';', buf_len(f));
    return semi ? fb_clean(semi + 1, buf_len(f) - (size_t)(semi + 1 - s)) : fb_clean(s, buf_len(f));
}

/* fb_field - the cleaned value of field i, or NULL. */
static char *fb_field(const struct fb_block *b, int i)
{
    return b->seen[i] ? fb_clean(buf_data(&b->f[i]), buf_len(&b->f[i])) : NULL;
}

/* fb_per_message - the per-message fields a block may carry (RFC 3464 2.2, RFC 5965 3.1). */
static void fb_per_message(struct feedback_report *r, const struct fb_block *b, struct fb_common *c,
                           const char **loop)
{
    if (b->seen[FB_REPORTING_MTA] && !c->reporting_mta) {
        c->reporting_mta = fb_typed(&b->f[FB_REPORTING_MTA]);
    }
    if (!c->arrival_date) {
        c->arrival_date =
            fb_field(b, b->seen[FB_ARRIVAL_DATE] ? FB_ARRIVAL_DATE : FB_RECEIVED_DATE);
    }
    if (b->seen[FB_POSTFIX_SENDER]) {
        char *sender = fb_typed(&b->f[FB_POSTFIX_SENDER]);
        if (!sender || strcmp(sender, "<>") == 0) {
            if (!*loop) {
                *loop = "bounce loop: the returned message was sent with a null envelope sender";
            }
        } else {
            fb_tokens_scan(r, sender, strlen(sender), FEEDBACK_ORIGIN_MAIL_FROM);
        }
        free(sender);
    }
    if (b->seen[FB_ORIG_MAIL_FROM]) {
        fb_tokens_scan(r, buf_data(&b->f[FB_ORIG_MAIL_FROM]), buf_len(&b->f[FB_ORIG_MAIL_FROM]),
                       FEEDBACK_ORIGIN_MAIL_FROM);
    }
}

/* fb_dsn_kind - the event kind of an Action (Status class when there is
 * no Action); -1: no event (delivered, relayed, expanded). */
static int fb_dsn_kind(const char *action, const char *status)
{
    if (action) {
        if (g_ascii_strncasecmp(action, "failed", 6) == 0) {
            return FEEDBACK_BOUNCE;
        }
        if (g_ascii_strncasecmp(action, "delayed", 7) == 0) {
            return FEEDBACK_DELAY;
        }
        return -1;
    }
    if (status && status[0] == '5') {
        return FEEDBACK_BOUNCE;
    }
    return status && status[0] == '4' ? FEEDBACK_DELAY : -1;
}

/* fb_dsn - the events of a message/delivery-status part. */
static void fb_dsn(struct feedback_report *r, GMimeObject *part, struct fb_common *c,
                   const char **loop)
{
    buf_t body = BUF_INIT;
    fb_part_bytes(part, &body, (size_t)FEEDBACK_EVENTS_MAX * 4 * FB_FIELD_MAX);
    const char *p = buf_data(&body), *end = p + buf_len(&body);
    struct fb_block b = {0};
    while (fb_block_next(&p, end, &b)) {
        fb_per_message(r, &b, c, loop);
        if (!b.seen[FB_FINAL_RCPT] && !b.seen[FB_ORIG_RCPT]) {
            continue;
        }
        char *action = fb_field(&b, FB_ACTION), *status = NULL;
        if (b.seen[FB_STATUS]) {
            fb_status_from(&status, buf_data(&b.f[FB_STATUS]), buf_len(&b.f[FB_STATUS]));
        }
        int kind = fb_dsn_kind(action, status);
        struct feedback_event *e =
            kind < 0 ? NULL : fb_event_add(r, (enum feedback_kind)kind, FEEDBACK_SOURCE_DSN);
        if (!e) {
            free(action);
            free(status);
            continue;
        }
        e->action = action;
        e->status = status;
        e->recipient = fb_typed(&b.f[b.seen[FB_FINAL_RCPT] ? FB_FINAL_RCPT : FB_ORIG_RCPT]);
        e->original_recipient = b.seen[FB_ORIG_RCPT] ? fb_typed(&b.f[FB_ORIG_RCPT]) : NULL;
        e->diagnostic = fb_field(&b, FB_DIAG);
        e->remote_mta = b.seen[FB_REMOTE_MTA] ? fb_typed(&b.f[FB_REMOTE_MTA]) : NULL;
        if (!e->status && e->diagnostic) {
            fb_status_from(&e->status, e->diagnostic, strlen(e->diagnostic));
        }
        fb_block_free(&b);
    }
    fb_block_free(&b);
    buf_free(&body);
    for (size_t i = 0; i < r->n_events && !*loop; i++) {
        const char *rc = r->events[i].recipient;
        struct feedback_report probe = {0};
        if (rc) {
            fb_tokens_scan(&probe, rc, strlen(rc), FEEDBACK_ORIGIN_RETURNED);
        }
        if (probe.n_tokens > 0) {
            *loop = "bounce loop: the failed recipient is itself a return-path address";
        }
        feedback_report_free(&probe);
    }
    if (r->n_events == 0 && r->events_dropped == 0) {
        fb_unmatched(r, "delivery-status report with no failed or delayed recipient");
    }
}

/* fb_arf - the event of a message/feedback-report part. */
static void fb_arf(struct feedback_report *r, GMimeObject *part, GMimeMessage *returned,
                   struct fb_common *c)
{
    buf_t body = BUF_INIT;
    fb_part_bytes(part, &body, 16 * FB_FIELD_MAX);
    const char *p = buf_data(&body), *end = p + buf_len(&body);
    struct fb_block b = {0};
    const char *loop = NULL;
    if (fb_block_next(&p, end, &b)) {
        fb_per_message(r, &b, c, &loop);
        c->feedback_type = fb_field(&b, FB_FEEDBACK_TYPE);
    }
    if (!c->feedback_type || g_ascii_strcasecmp(c->feedback_type, "abuse") != 0) {
        char why[128];
        snprintf(why, sizeof why, "feedback report of type \"%.60s\", not a complaint",
                 c->feedback_type ? c->feedback_type : "");
        fb_unmatched(r, why);
    } else {
        struct feedback_event *e = fb_event_add(r, FEEDBACK_COMPLAINT, FEEDBACK_SOURCE_ARF);
        e->recipient = fb_typed(&b.f[FB_ORIG_RCPT_TO]);
        /* Microsoft's JMRP names the complaining mailbox in the returned headers. */
        const char *hm = fb_header(returned, "X-HmXmrOriginalRecipient");
        if (!e->recipient && hm) {
            size_t n = strlen(hm);
            hm += strspn(hm, " \t<");
            n = strcspn(hm, ">");
            fb_set(&e->recipient, hm, n);
        }
    }
    fb_block_free(&b);
    buf_free(&body);
}

/* ---- auto-replies ---- */

/* fb_auto_subject - the auto-reply reason a subject gives, or NULL. */
static const char *fb_auto_subject(const char *subject)
{
    static const char *const vacation[] = {"automatic reply",
                                           "auto reply",
                                           "auto-reply",
                                           "autoreply",
                                           "auto response",
                                           "auto-response",
                                           "autoresponse",
                                           "out of office",
                                           "out of the office",
                                           "out-of-office",
                                           "vacation",
                                           "abwesenheit",
                                           "automatische antwort",
                                           "r\xc3\xa9ponse automatique",
                                           "respuesta autom\xc3\xa1tica",
                                           "\xe8\x87\xaa\xe5\x8a\xa8\xe5\x9b\x9e\xe5\xa4\x8d",
                                           "\xe8\x87\xaa\xe5\x8b\x95\xe5\x9b\x9e\xe8\xa6\x86"};
    static const char *const challenge[] = {"please confirm your message",
                                            "confirm your e-mail",
                                            "confirm your email",
                                            "verify your email",
                                            "verify your e-mail",
                                            "sender verification",
                                            "spam arrest",
                                            "boxtrapper"};
    size_t n = subject ? strlen(subject) : 0;
    if (n >= 5 && g_ascii_strncasecmp(subject, "auto:", 5) == 0) {
        return "auto-reply: out-of-office subject";
    }
    for (size_t i = 0; i < sizeof vacation / sizeof vacation[0]; i++) {
        if (fb_casefind(subject ? subject : "", n, vacation[i])) {
            return "auto-reply: out-of-office subject";
        }
    }
    for (size_t i = 0; i < sizeof challenge / sizeof challenge[0]; i++) {
        if (fb_casefind(subject ? subject : "", n, challenge[i])) {
            return "auto-reply: challenge-response subject";
        }
    }
    return NULL;
}

/* fb_auto_reply - the reason m is an auto-reply: strong signals (strong
 * 1: headers and subjects no bounce carries), or every signal (strong 0:
 * Auto-Submitted, which bounces carry too). NULL if none. */
static const char *fb_auto_reply(GMimeMessage *m, int strong)
{
    GMimeObject *o = GMIME_OBJECT(m);
    const char *v;
    if (fb_header(o, "X-Autoreply") || fb_header(o, "X-Autorespond")) {
        return "auto-reply: X-Autoreply header";
    }
    if ((v = fb_header(o, "Precedence")) && fb_casefind(v, strlen(v), "auto_reply")) {
        return "auto-reply: Precedence: auto_reply";
    }
    if (fb_header(o, "X-Boxtrapper") || fb_header(o, "X-Challenge")) {
        return "auto-reply: challenge-response header";
    }
    const char *s = fb_auto_subject(g_mime_message_get_subject(m));
    if (s || strong) {
        return s;
    }
    if ((v = fb_header(o, "Auto-Submitted"))) {
        while (g_ascii_isspace(*v)) {
            v++;
        }
        if (g_ascii_strncasecmp(v, "auto-replied", 12) == 0) {
            return "auto-reply: Auto-Submitted: auto-replied";
        }
        if (g_ascii_strncasecmp(v, "no", 2) != 0 || g_ascii_isalpha(v[2])) {
            return "auto-reply: Auto-Submitted: auto-generated, and no delivery report";
        }
    }
    return NULL;
}

/* fb_text_bounces - try each text part (plain before HTML) as a bounce text. */
static int fb_text_bounces(struct feedback_report *r, const struct fb_parts *p)
{
    for (int html = 0; html < 2; html++) {
        for (size_t i = 0; i < p->n_texts; i++) {
            if (p->text_html[i] != html) {
                continue;
            }
            buf_t t = BUF_INIT, h = BUF_INIT;
            fb_part_text(p->texts[i], &t);
            if (html) {
                fb_html_text(buf_data(&t), buf_len(&t), &h);
            }
            const buf_t *use = html ? &h : &t;
            int found = fb_text_bounce(r, buf_data(use), buf_len(use));
            buf_free(&t);
            buf_free(&h);
            if (found) {
                return 1;
            }
        }
    }
    return 0;
}

/* ---- the whole ---- */

/* fb_classify - the events of the parsed message m. */
static void fb_classify(struct feedback_report *r, GMimeMessage *m, struct fb_common *c)
{
    struct fb_parts p = {0};
    GMimeObject *top = g_mime_message_get_mime_part(m);
    fb_walk(top, &p, 0);
    GMimeContentType *ct = top ? g_mime_object_get_content_type(top) : NULL;
    const char *rt = ct && g_mime_content_type_is_type(ct, "multipart", "report")
                         ? g_mime_content_type_get_parameter(ct, "report-type")
                         : NULL;
    GMimeMessage *returned = fb_returned_message(p.returned);
    const char *loop = NULL, *why;
    if (p.status && (!rt || g_ascii_strcasecmp(rt, "feedback-report") != 0)) {
        loop = fb_returned_scan(r, returned, c);
        fb_dsn(r, p.status, c, &loop);
    } else if (p.feedback || (rt && g_ascii_strcasecmp(rt, "feedback-report") == 0)) {
        fb_returned_scan(r, returned, c);
        if (p.feedback) {
            fb_arf(r, p.feedback, returned, c);
        } else {
            fb_unmatched(r, "feedback report without a message/feedback-report part");
        }
    } else if (rt && g_ascii_strcasecmp(rt, "disposition-notification") == 0) {
        fb_event_add(r, FEEDBACK_AUTO_REPLY, FEEDBACK_SOURCE_NONE)->reason =
            fb_clean("auto-reply: disposition notification (read receipt)", 52);
    } else if ((why = fb_auto_reply(m, 1))) {
        fb_set_str(&fb_event_add(r, FEEDBACK_AUTO_REPLY, FEEDBACK_SOURCE_NONE)->reason, why);
    } else if (fb_text_bounces(r, &p)) {
        fb_returned_scan(r, returned, c);
    } else if ((why = fb_auto_reply(m, 0))) {
        fb_set_str(&fb_event_add(r, FEEDBACK_AUTO_REPLY, FEEDBACK_SOURCE_NONE)->reason, why);
    } else {
        fb_unmatched(r, rt && g_ascii_strcasecmp(rt, "delivery-status") == 0
                            ? "delivery-status report without a message/delivery-status part"
                            : "no delivery-status part and no recognizable bounce text");
    }
    if (returned) {
        g_object_unref(returned);
    }
    for (size_t i = 0; loop && i < r->n_events; i++) {
        r->events[i].kind = FEEDBACK_UNMATCHED;
        free(r->events[i].reason);
        r->events[i].reason = fb_clean(loop, strlen(loop));
        r->loop = 1;
    }
}

/* fb_finish - copy what all events share into each (what it lacks). */
static void fb_finish(struct feedback_report *r, const struct fb_common *c)
{
    fb_tokens_sort(r);
    const char *tok = fb_best_token(r);
    for (size_t i = 0; i < r->n_events; i++) {
        struct feedback_event *e = &r->events[i];
        fb_set_str(&e->token, tok);
        fb_set_str(&e->reporting_mta, c->reporting_mta);
        fb_set_str(&e->arrival_date, c->arrival_date);
        fb_set_str(&e->feedback_type, c->feedback_type);
        fb_set_str(&e->message_id, c->message_id);
    }
}

void feedback_parse(const char *raw, size_t len, const char *rcpt_to, struct feedback_report *out)
{
    memset(out, 0, sizeof *out);
    pthread_once(&fb_gmime_once, fb_gmime_init);
    if (rcpt_to) {
        fb_tokens_scan(out, rcpt_to, strlen(rcpt_to), FEEDBACK_ORIGIN_RCPT_TO);
    }
    struct fb_common c = {0};
    GMimeMessage *m = NULL;
    if (!raw || len == 0) {
        fb_unmatched(out, "empty message");
    } else {
        GMimeStream *s = g_mime_stream_mem_new_with_buffer(raw, len);
        GMimeParser *p = g_mime_parser_new_with_stream(s);
        m = g_mime_parser_construct_message(p, NULL);
        g_object_unref(p);
        g_object_unref(s);
        if (!m) {
            fb_unmatched(out, "not a mail message: no header block");
        }
    }
    if (m) {
        fb_headers_scan(out, GMIME_OBJECT(m), "X-Original-To", FEEDBACK_ORIGIN_X_ORIGINAL_TO);
        fb_headers_scan(out, GMIME_OBJECT(m), "Delivered-To", FEEDBACK_ORIGIN_DELIVERED_TO);
        fb_classify(out, m, &c);
        g_object_unref(m);
    }
    fb_finish(out, &c);
    free(c.reporting_mta);
    free(c.arrival_date);
    free(c.feedback_type);
    free(c.message_id);
}
