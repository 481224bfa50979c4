/*
 * feedback_int - what feedback_parse.c and feedback_text.c share
 *
 * feedback_parse.c walks the MIME structure (GMime), reads the DSN and
 * ARF field blocks and the auto-reply signals; feedback_text.c reads the
 * text of bounces that are not RFC 3464 (Exim, qmail, Yahoo, Exchange);
 * feedback_report.c holds the report's strings, events and tokens.
 * Both add events through fb_event_add and store strings through
 * fb_clean, so every string of a report is bounded, valid UTF-8 text.
 */
#ifndef RINGMAIL_FEEDBACK_INT_H
#define RINGMAIL_FEEDBACK_INT_H

#include <stddef.h>

#include "campaign/feedback_parse.h"

/* A decoded text part is read up to this many bytes. */
#define FB_TEXT_SCAN_MAX (256 * 1024)

/* fb_clean - s[0..n) as an owned string: whitespace and control runs
 * collapsed to one space, trimmed, invalid UTF-8 bytes as '?', at most
 * FEEDBACK_TEXT_MAX - 1 bytes (cut on a character boundary). NULL if
 * nothing is left. */
char *fb_clean(const char *s, size_t n);

/* fb_set - *field = fb_clean(s, n), unless *field is already set. */
void fb_set(char **field, const char *s, size_t n);

/* fb_set_str - fb_set for a NUL-terminated s (NULL: nothing). */
void fb_set_str(char **field, const char *s);

/* fb_unmatched - the one event that says why nothing was recognised. */
void fb_unmatched(struct feedback_report *r, const char *reason);

/* fb_event_add - a new zeroed event of kind and source, or NULL (counted
 * in events_dropped) when the report holds FEEDBACK_EVENTS_MAX. */
struct feedback_event *fb_event_add(struct feedback_report *r, enum feedback_kind kind,
                                    enum feedback_source source);

/* fb_casefind - the first occurrence of the ASCII needle in h[0..n),
 * ignoring ASCII case, or NULL. */
const char *fb_casefind(const char *h, size_t n, const char *needle);

/* fb_status_from - the first enhanced status code (RFC 3463, "5.1.1") in
 * s[0..n) into *status, unless set. */
void fb_status_from(char **status, const char *s, size_t n);

/* fb_tokens_scan - every b-/u- token before an '@' in s[0..n), as
 * candidates found at origin. */
void fb_tokens_scan(struct feedback_report *r, const char *s, size_t n,
                    enum feedback_origin origin);

/* fb_tokens_unsubscribe - the u- token of a List-Unsubscribe value v:
 * its mailto: and its https URL's last path segment (".../u/TOKEN"). */
void fb_tokens_unsubscribe(struct feedback_report *r, const char *v);

/* fb_tokens_sort - the tokens, most trusted origin first (stable). */
void fb_tokens_sort(struct feedback_report *r);

/* fb_best_token - the most trusted b- token, else u- token, else NULL. */
const char *fb_best_token(const struct feedback_report *r);

/* fb_text_bounce - events for the bounce text[0..n) (decoded, UTF-8, tags
 * stripped) if it is one of the known non-RFC 3464 formats: 1, else 0. */
int fb_text_bounce(struct feedback_report *r, const char *text, size_t n);

#endif
