/*
 * NAME
 *   feedback_text - the bounces that are not RFC 3464, read from their text
 *
 * SYNOPSIS
 *   #include "campaign/feedback_int.h"
 *
 * DESCRIPTION
 *   fb_text_bounce reads the decoded text of a bounce (feedback_parse.c
 *   did the MIME, the charset and the HTML) in the formats the issue
 *   names, each known by the sentences its software always writes:
 *
 *   Exim     "This message was created automatically by mail delivery
 *            software." / "could not be delivered to one or more of its
 *            recipients" then, under "The following address(es) failed:",
 *            each address indented two spaces and its detail deeper
 *            ("host mx [ip]", "SMTP error from remote mail server after
 *            RCPT TO:<...>:", "550 5.1.1 ..."). Exim's delay warning ("has
 *            not yet been delivered") is a delay.
 *   qmail    "Hi. This is the qmail-send program at HOST." then blocks of
 *   Yahoo    "<addr>:" and detail lines up to a blank line; Yahoo writes
 *            "Sorry, we were unable to deliver your message to the
 *            following address." and "Remote host said: 554 ...".
 *   Exchange "Delivery has failed to these recipients or groups", then
 *            under "Diagnostic information for administrators:" the
 *            "Generating server:", each address and its "Remote Server
 *            returned '550 5.1.1 ...'" (or "#550 5.1.1 ... ##").
 *
 *   The diagnostic is the text from the reply code on ("550 5.1.1 ..."),
 *   the status the first enhanced code in it. The copy of the returned
 *   message that follows the marker is scanned for tokens.
 */
#include <string.h>

#include <glib.h>

#include "campaign/feedback_int.h"
#include "engine/buf.h"

struct fb_line {
    const char *s; /* first non-blank character */
    size_t n;      /* up to the last non-blank one */
    size_t indent; /* leading spaces and tabs */
};

/* fb_line_next - the next line from *p (CR LF or LF), trimmed; 0 at the end. */
static int fb_line_next(const char **p, const char *end, struct fb_line *l)
{
    const char *s = *p;
    if (s >= end) {
        return 0;
    }
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    const char *le = nl ? nl : end;
    *p = nl ? nl + 1 : end;
    l->indent = 0;
    while (s < le && (*s == ' ' || *s == '\t')) {
        s++, l->indent++;
    }
    while (le > s && g_ascii_isspace(le[-1])) {
        le--;
    }
    l->s = s;
    l->n = (size_t)(le - s);
    return 1;
}

/* fb_line_starts - the line begins with the ASCII prefix, ignoring case. */
static int fb_line_starts(const struct fb_line *l, const char *prefix)
{
    size_t m = strlen(prefix);
    return l->n >= m && g_ascii_strncasecmp(l->s, prefix, m) == 0;
}

/* fb_after - the text after the first occurrence of needle in t[0..n), or NULL. */
static const char *fb_after(const char *t, size_t n, const char *needle)
{
    const char *p = fb_casefind(t, n, needle);
    return p ? p + strlen(needle) : NULL;
}

/* fb_host_from - the word at s (up to a space, '[', '(' or ','), its last
 * '.' or ':' dropped, when it looks like a host (has a '.'). */
static void fb_host_from(char **field, const char *s, const char *end)
{
    const char *e = s;
    while (e < end && !g_ascii_isspace(*e) && *e != '[' && *e != '(' && *e != ',') {
        e++;
    }
    while (e > s && (e[-1] == '.' || e[-1] == ':')) {
        e--;
    }
    if (memchr(s, '.', (size_t)(e - s))) {
        fb_set(field, s, (size_t)(e - s));
    }
}

/* fb_code_at - a reply code "550 " or "550-" starts at t[i]. */
static int fb_code_at(const char *t, size_t i, size_t n)
{
    char b = i > 0 ? t[i - 1] : ' ';
    return i + 3 < n && (t[i] == '2' || t[i] == '4' || t[i] == '5') && g_ascii_isdigit(t[i + 1]) &&
           g_ascii_isdigit(t[i + 2]) && (t[i + 3] == ' ' || t[i + 3] == '-') &&
           (b == ' ' || b == ':' || b == '\'' || b == '#' || b == '(' || b == '"');
}

/* fb_detail - an event's status, diagnostic and remote MTA from its detail text. */
static void fb_detail(struct feedback_event *e, const char *t, size_t n)
{
    static const char *const hosts[] = {"Giving up on ", "Connected to ", " host "};
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        const char *h = fb_after(t, n, hosts[i]);
        if (h) {
            fb_host_from(&e->remote_mta, h, t + n);
        }
    }
    const char *d = fb_after(t, n, "said:");
    if (!d) {
        d = fb_after(t, n, "Remote Server returned");
    }
    for (size_t i = d ? (size_t)(d - t) : 0; i < n; i++) {
        if (fb_code_at(t, i, n)) {
            d = t + i;
            break;
        }
    }
    if (!d) {
        d = t;
    }
    const char *end = fb_casefind(d, (size_t)(t + n - d), " Giving up on ");
    end = end ? end : t + n;
    while (end > d && (g_ascii_isspace(end[-1]) || end[-1] == '\'' || end[-1] == '#')) {
        end--;
    }
    while (d < end && (g_ascii_isspace(*d) || *d == '\'' || *d == '#')) {
        d++;
    }
    fb_set(&e->diagnostic, d, (size_t)(end - d));
    fb_status_from(&e->status, d, (size_t)(end - d));
}

/* fb_address - the address a line is about ("  a@b", "<a@b>:", "a@b (a@b)"):
 * its first word without <>, if it has an '@'. Returns its length (0: none). */
static size_t fb_address(const struct fb_line *l, const char **at)
{
    const char *s = l->s, *e = s;
    while (e < l->s + l->n && !g_ascii_isspace(*e)) {
        e++;
    }
    if (s < e && *s == '<') {
        s++;
    }
    while (e > s && (e[-1] == ':' || e[-1] == '>')) {
        e--;
    }
    if (e - s < 3 || !memchr(s, '@', (size_t)(e - s)) || memchr(s, '<', (size_t)(e - s))) {
        return 0;
    }
    *at = s;
    return (size_t)(e - s);
}

/* fb_flush - give the event its detail text, then empty it. */
static void fb_flush(struct feedback_event *e, buf_t *detail)
{
    if (e && buf_len(detail) > 0) {
        fb_detail(e, buf_data(detail), buf_len(detail));
    }
    buf_reset(detail);
}

/* fb_new_rcpt - an event for the address on line l (NULL at the cap). */
static struct feedback_event *fb_new_rcpt(struct feedback_report *r, enum feedback_kind kind,
                                          const char *addr, size_t alen, const char *mta)
{
    struct feedback_event *e = fb_event_add(r, kind, FEEDBACK_SOURCE_TEXT);
    if (e) {
        fb_set(&e->recipient, addr, alen);
        if (mta) {
            fb_set(&e->reporting_mta, mta, strlen(mta));
        }
    }
    return e;
}

/* fb_exim - Exim's bounce and delay warning. */
static void fb_exim(struct feedback_report *r, const char *t, size_t n)
{
    enum feedback_kind kind =
        fb_casefind(t, n, "has not yet been delivered") ? FEEDBACK_DELAY : FEEDBACK_BOUNCE;
    const char *p = fb_after(t, n, "address(es) failed:");
    if (!p) {
        p = fb_after(t, n, "to one or more of its");
    }
    if (!p) {
        p = t;
    }
    const char *end = t + n;
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    p = nl ? nl + 1 : end;
    struct fb_line l;
    struct feedback_event *e = NULL;
    buf_t detail = BUF_INIT;
    int any = 0;
    while (fb_line_next(&p, end, &l)) {
        const char *a;
        size_t alen;
        if (l.n == 0) {
            continue;
        }
        if (l.indent == 0 && any) {
            break; /* "------ This is a copy ...", or the text after the list */
        }
        if (l.indent == 0) {
            continue; /* the rest of the explanation before the first address */
        }
        if (l.indent <= 2 && (alen = fb_address(&l, &a)) > 0) {
            fb_flush(e, &detail);
            e = fb_new_rcpt(r, kind, a, alen, NULL);
            any = 1;
        } else if (any && buf_len(&detail) < 4 * FEEDBACK_TEXT_MAX) {
            buf_append(&detail, " ", 1);
            buf_append(&detail, l.s, l.n);
        }
    }
    fb_flush(e, &detail);
    buf_free(&detail);
    if (!any) {
        fb_event_add(r, kind, FEEDBACK_SOURCE_TEXT);
    }
}

/* fb_text_end - a text bounce read to its end: the last recipient's
 * detail kept, or one event without a recipient when none was named (the
 * token then says who); DETAIL and MTA freed */
static void fb_text_end(struct feedback_report *r, struct feedback_event *e, buf_t *detail, int any,
                        char *mta)
{
    fb_flush(e, detail);
    buf_free(detail);
    if (!any) {
        e = fb_event_add(r, FEEDBACK_BOUNCE, FEEDBACK_SOURCE_TEXT);
        if (e && mta) {
            fb_set(&e->reporting_mta, mta, strlen(mta));
        }
    }
    free(mta);
}

/* fb_angle - qmail's and Yahoo's "<addr>:" blocks. */
static void fb_angle(struct feedback_report *r, const char *t, size_t n)
{
    char *mta = NULL;
    const char *q = fb_after(t, n, "qmail-send program at ");
    if (q) {
        fb_host_from(&mta, q, t + n);
    }
    const char *p = t, *end = t + n;
    struct fb_line l;
    struct feedback_event *e = NULL;
    buf_t detail = BUF_INIT;
    int any = 0;
    while (fb_line_next(&p, end, &l)) {
        const char *a;
        size_t alen;
        if (fb_line_starts(&l, "--- ") || fb_line_starts(&l, "--- Below this line")) {
            break;
        }
        if (l.n == 0) {
            fb_flush(e, &detail);
            e = NULL;
        } else if (l.s[0] == '<' && l.s[l.n - 1] == ':' && (alen = fb_address(&l, &a)) > 0) {
            fb_flush(e, &detail);
            e = fb_new_rcpt(r, FEEDBACK_BOUNCE, a, alen, mta);
            any = 1;
        } else if (e && buf_len(&detail) < 4 * FEEDBACK_TEXT_MAX) {
            buf_append(&detail, " ", 1);
            buf_append(&detail, l.s, l.n);
        }
    }
    fb_text_end(r, e, &detail, any, mta);
}

/* fb_exchange - an Exchange/Outlook NDR (its text part, or its HTML as text). */
static void fb_exchange(struct feedback_report *r, const char *t, size_t n)
{
    const char *p = fb_after(t, n, "Diagnostic information for administrators");
    const char *end = t + n;
    struct fb_line l;
    struct feedback_event *e = NULL;
    buf_t detail = BUF_INIT;
    char *mta = NULL;
    int any = 0;
    while (p && fb_line_next(&p, end, &l)) {
        const char *a, *g;
        size_t alen;
        if (fb_line_starts(&l, "Original message headers")) {
            break;
        }
        if ((g = fb_after(l.s, l.n, "Generating server:"))) {
            fb_host_from(&mta, g + strspn(g, " \t"), l.s + l.n);
        } else if (l.n > 0 && l.s[0] != '#' && !fb_line_starts(&l, "Remote Server") &&
                   (alen = fb_address(&l, &a)) > 0) {
            fb_flush(e, &detail);
            e = fb_new_rcpt(r, FEEDBACK_BOUNCE, a, alen, mta);
            any = 1;
            buf_append(&detail, a + alen, (size_t)(l.s + l.n - (a + alen)));
        } else if (e && l.n > 0 && buf_len(&detail) < 4 * FEEDBACK_TEXT_MAX) {
            buf_append(&detail, " ", 1);
            buf_append(&detail, l.s, l.n);
        }
    }
    fb_text_end(r, e, &detail, any, mta);
}

int fb_text_bounce(struct feedback_report *r, const char *t, size_t n)
{
    static const char *const copies[] = {"------ This is a copy", "--- Below this line",
                                         "Original message headers"};
    if (fb_casefind(t, n, "created automatically by mail delivery software") &&
        (fb_casefind(t, n, "could not be delivered to one or more of its") ||
         fb_casefind(t, n, "has not yet been delivered to one or more of its"))) {
        fb_exim(r, t, n);
    } else if (fb_casefind(t, n, "This is the qmail-send program at") ||
               fb_casefind(t, n, "we were unable to deliver your message to the following")) {
        fb_angle(r, t, n);
    } else if (fb_casefind(t, n, "Delivery has failed to these recipients or groups")) {
        fb_exchange(r, t, n);
    } else {
        return 0;
    }
    for (size_t i = 0; i < sizeof copies / sizeof copies[0]; i++) {
        const char *c = fb_casefind(t, n, copies[i]);
        if (c) {
            fb_tokens_scan(r, c, n - (size_t)(c - t), FEEDBACK_ORIGIN_RETURNED);
        }
    }
    return 1;
}
