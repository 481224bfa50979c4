/*
 * NAME
 *   feedback_report - the report feedback_parse builds: events, tokens, strings
 *
 * SYNOPSIS
 *   #include "campaign/feedback_int.h"
 *
 * DESCRIPTION
 *   Every string of a report goes through fb_clean (bounded, valid UTF-8,
 *   no control characters), every event through fb_event_add (at most
 *   FEEDBACK_EVENTS_MAX), every token through fb_token_add (deduplicated,
 *   at most FEEDBACK_TOKENS_MAX, keeping its most trusted origin). Each
 *   allocation belongs to the report and feedback_report_free frees it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "campaign/feedback_int.h"

const char *feedback_kind_name(enum feedback_kind k)
{
    switch (k) {
    case FEEDBACK_BOUNCE:
        return "bounce";
    case FEEDBACK_DELAY:
        return "delay";
    case FEEDBACK_COMPLAINT:
        return "complaint";
    case FEEDBACK_AUTO_REPLY:
        return "auto_reply";
    case FEEDBACK_UNMATCHED:
        return "unmatched";
    }
    return "unmatched";
}

const char *feedback_source_name(enum feedback_source s)
{
    switch (s) {
    case FEEDBACK_SOURCE_DSN:
        return "dsn";
    case FEEDBACK_SOURCE_TEXT:
        return "text";
    case FEEDBACK_SOURCE_ARF:
        return "arf";
    case FEEDBACK_SOURCE_NONE:
        break;
    }
    return "";
}

/* ---- strings ---- */

char *fb_clean(const char *s, size_t n)
{
    if (!s) {
        return NULL;
    }
    char *out = malloc(FEEDBACK_TEXT_MAX);
    if (!out) {
        abort();
    }
    size_t o = 0;
    int space = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || c == ' ') {
            space = o > 0;
            i++;
            continue;
        }
        char one = '?';
        const char *seq = &one;
        size_t len = 1;
        if (c < 0x80) {
            seq = s + i;
        } else {
            gunichar u = g_utf8_get_char_validated(s + i, (gssize)(n - i));
            if (u != (gunichar)-1 && u != (gunichar)-2) {
                seq = s + i;
                len = (size_t)g_utf8_skip[c];
            }
        }
        if (o + space + len > FEEDBACK_TEXT_MAX - 1) {
            break;
        }
        if (space) {
            out[o++] = ' ';
            space = 0;
        }
        memcpy(out + o, seq, len);
        o += len;
        i += seq == &one ? 1 : len;
    }
    if (o == 0) {
        free(out);
        return NULL;
    }
    out[o] = '\0';
    return out;
}

void fb_set(char **field, const char *s, size_t n)
{
    if (!*field) {
        *field = fb_clean(s, n);
    }
}

/* fb_set_str - fb_set for a NUL-terminated s (NULL: nothing). */
void fb_set_str(char **field, const char *s)
{
    if (s) {
        fb_set(field, s, strlen(s));
    }
}

const char *fb_casefind(const char *h, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    if (m == 0 || m > n) {
        return m == 0 ? h : NULL;
    }
    for (size_t i = 0; i + m <= n; i++) {
        if (g_ascii_strncasecmp(h + i, needle, m) == 0) {
            return h + i;
        }
    }
    return NULL;
}

/* fb_digits - up to 3 digits at s[i..n): how many (0 if none or more than 3). */
static size_t fb_digits(const char *s, size_t i, size_t n)
{
    size_t k = 0;
    while (i + k < n && g_ascii_isdigit(s[i + k]) && k < 4) {
        k++;
    }
    return k <= 3 ? k : 0;
}

void fb_status_from(char **status, const char *s, size_t n)
{
    for (size_t i = 0; i + 5 <= n && !*status; i++) {
        if ((s[i] != '2' && s[i] != '4' && s[i] != '5') || s[i + 1] != '.' ||
            (i > 0 && (g_ascii_isdigit(s[i - 1]) || s[i - 1] == '.'))) {
            continue;
        }
        size_t d1 = fb_digits(s, i + 2, n), j = i + 2 + d1;
        if (d1 == 0 || j >= n || s[j] != '.') {
            continue;
        }
        size_t d2 = fb_digits(s, j + 1, n);
        j += 1 + d2;
        /* "5.1.1" but not "5.1.10.3" or "5.1.1.4": a version or address, not a code. */
        if (d2 == 0 || (j < n && s[j] == '.' && j + 1 < n && g_ascii_isdigit(s[j + 1]))) {
            continue;
        }
        *status = fb_clean(s + i, j - i);
    }
}

/* ---- events and tokens ---- */

struct feedback_event *fb_event_add(struct feedback_report *r, enum feedback_kind kind,
                                    enum feedback_source source)
{
    if (r->n_events >= FEEDBACK_EVENTS_MAX) {
        r->events_dropped++;
        return NULL;
    }
    if ((r->n_events & (r->n_events - 1)) == 0) { /* 0, 1, 2, 4, ...: grow by doubling */
        size_t cap = r->n_events ? r->n_events * 2 : 1;
        r->events = realloc(r->events, cap * sizeof *r->events);
        if (!r->events) {
            abort();
        }
    }
    struct feedback_event *e = &r->events[r->n_events++];
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->source = source;
    return e;
}

/* fb_unmatched - the one event that says why nothing was recognised. */
void fb_unmatched(struct feedback_report *r, const char *reason)
{
    struct feedback_event *e = fb_event_add(r, FEEDBACK_UNMATCHED, FEEDBACK_SOURCE_NONE);
    if (e) {
        fb_set_str(&e->reason, reason);
    }
}

/* fb_token_add - one candidate; a token seen before keeps its most trusted origin. */
static void fb_token_add(struct feedback_report *r, const char *s, size_t n,
                         enum feedback_origin origin)
{
    char tok[128];
    if (n >= sizeof tok) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        tok[i] = (char)g_ascii_tolower(s[i]);
    }
    tok[n] = '\0';
    for (size_t i = 0; i < r->n_tokens; i++) {
        if (strcmp(r->tokens[i].token, tok) == 0) {
            if (origin < r->tokens[i].origin) {
                r->tokens[i].origin = origin;
            }
            return;
        }
    }
    if (r->n_tokens >= FEEDBACK_TOKENS_MAX) {
        return;
    }
    if (!r->tokens) {
        r->tokens = calloc(FEEDBACK_TOKENS_MAX, sizeof *r->tokens);
        if (!r->tokens) {
            abort();
        }
    }
    char *copy = strdup(tok);
    if (!copy) {
        abort();
    }
    r->tokens[r->n_tokens++] = (struct feedback_token){copy, origin};
}

/* fb_is_b32 - a character of the tokens' lower-case base32 (either case here). */
static int fb_is_b32(char c)
{
    char l = (char)g_ascii_tolower(c);
    return (l >= 'a' && l <= 'z') || (l >= '2' && l <= '7');
}

/* fb_is_local_char - a character that, before "b-", means "b-" is not the start of the local part.
 */
static int fb_is_local_char(char c)
{
    return g_ascii_isalnum(c) || c == '.' || c == '_' || c == '+' || c == '-' || c == '=' ||
           (unsigned char)c >= 0x80;
}

void fb_tokens_scan(struct feedback_report *r, const char *s, size_t n, enum feedback_origin origin)
{
    for (size_t i = 0; s && i + 3 < n; i++) {
        char c = (char)g_ascii_tolower(s[i]);
        if ((c != 'b' && c != 'u') || s[i + 1] != '-' || (i > 0 && fb_is_local_char(s[i - 1]))) {
            continue;
        }
        size_t j = i + 2;
        while (j < n && fb_is_b32(s[j])) {
            j++;
        }
        if (j > i + 2 && j < n && s[j] == '@') {
            fb_token_add(r, s + i, j - i, origin);
        }
        i = j - 1;
    }
}

/* fb_tokens_unsubscribe - the u- token of a List-Unsubscribe: its mailto:
 * (the plain scan) and its https URL's last path segment (".../u/TOKEN"). */
void fb_tokens_unsubscribe(struct feedback_report *r, const char *v)
{
    size_t n = strlen(v);
    fb_tokens_scan(r, v, n, FEEDBACK_ORIGIN_UNSUBSCRIBE);
    for (const char *p = v; (p = fb_casefind(p, n - (size_t)(p - v), "http"));) {
        const char *end = p;
        while (*end && *end != '>' && *end != ',' && *end != '?' && *end != '#' &&
               !g_ascii_isspace(*end)) {
            end++;
        }
        const char *seg = end;
        while (seg > p && seg[-1] != '/') {
            seg--;
        }
        size_t len = (size_t)(end - seg), k = 0;
        if (len > 2 && (seg[0] == 'u' || seg[0] == 'U') && seg[1] == '-') {
            seg += 2, len -= 2;
        }
        while (k < len && fb_is_b32(seg[k])) {
            k++;
        }
        if (len > 0 && k == len && seg > p && len < 100) {
            char tok[128];
            snprintf(tok, sizeof tok, "u-%.*s", (int)len, seg);
            fb_token_add(r, tok, len + 2, FEEDBACK_ORIGIN_UNSUBSCRIBE);
        }
        p = end;
    }
}

/* fb_tokens_sort - most trusted origin first (stable: the order found within one origin). */
void fb_tokens_sort(struct feedback_report *r)
{
    for (size_t i = 1; i < r->n_tokens; i++) {
        struct feedback_token t = r->tokens[i];
        size_t j = i;
        while (j > 0 && r->tokens[j - 1].origin > t.origin) {
            r->tokens[j] = r->tokens[j - 1];
            j--;
        }
        r->tokens[j] = t;
    }
}

/* fb_best_token - the most trusted b- token, else u- token, else NULL. */
const char *fb_best_token(const struct feedback_report *r)
{
    for (int want = 0; want < 2; want++) {
        for (size_t i = 0; i < r->n_tokens; i++) {
            if (r->tokens[i].token[0] == (want == 0 ? 'b' : 'u')) {
                return r->tokens[i].token;
            }
        }
    }
    return NULL;
}

void feedback_report_free(struct feedback_report *r)
{
    for (size_t i = 0; i < r->n_events; i++) {
        struct feedback_event *e = &r->events[i];
        char **f[] = {&e->recipient,    &e->original_recipient, &e->token,      &e->action,
                      &e->status,       &e->diagnostic,         &e->remote_mta, &e->reporting_mta,
                      &e->arrival_date, &e->feedback_type,      &e->message_id, &e->reason};
        for (size_t k = 0; k < sizeof f / sizeof f[0]; k++) {
            free(*f[k]);
        }
    }
    for (size_t i = 0; i < r->n_tokens; i++) {
        free(r->tokens[i].token);
    }
    free(r->events);
    free(r->tokens);
    memset(r, 0, sizeof *r);
}
