/*
 * fuzz_feedback - feedback_parse on arbitrary messages (the bytes the
 * return-path server accepts from anyone).
 *
 * An input that starts with \001 carries the envelope recipient on its
 * first line (up to 100 bytes), the rest is the message: libFuzzer steers
 * both, and the seeds (whole messages) are used as they are. Every report must keep the
 * header's promises: 1..FEEDBACK_EVENTS_MAX events, every string shorter
 * than FEEDBACK_TEXT_MAX, valid UTF-8 without control characters, tokens
 * "b-"/"u-" and lower-case base32, a loop only with unmatched events.
 * Anything else aborts, so libFuzzer reports it. Seed corpus:
 * the samples in tests/unit/feedback/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "campaign/feedback_parse.h"

/* fuzz_check_text - s is NULL or a bounded, clean UTF-8 string. */
static void fuzz_check_text(const char *s)
{
    if (!s) {
        return;
    }
    size_t n = strlen(s);
    if (n == 0 || n >= FEEDBACK_TEXT_MAX || !g_utf8_validate(s, (gssize)n, NULL)) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
            abort();
        }
    }
}

static void fuzz_check_report(const struct feedback_report *r)
{
    if (r->n_events < 1 || r->n_events > FEEDBACK_EVENTS_MAX || r->n_tokens > FEEDBACK_TOKENS_MAX) {
        abort();
    }
    for (size_t i = 0; i < r->n_tokens; i++) {
        const char *t = r->tokens[i].token;
        if ((t[0] != 'b' && t[0] != 'u') || t[1] != '-' || t[2] == '\0') {
            abort();
        }
        for (const char *p = t + 2; *p; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '2' && *p <= '7'))) {
                abort();
            }
        }
    }
    for (size_t i = 0; i < r->n_events; i++) {
        const struct feedback_event *e = &r->events[i];
        const char *f[] = {e->recipient,    e->original_recipient, e->token,      e->action,
                           e->status,       e->diagnostic,         e->remote_mta, e->reporting_mta,
                           e->arrival_date, e->feedback_type,      e->message_id, e->reason};
        for (size_t k = 0; k < sizeof f / sizeof f[0]; k++) {
            fuzz_check_text(f[k]);
        }
        if ((r->loop && e->kind != FEEDBACK_UNMATCHED) ||
            ((e->kind == FEEDBACK_UNMATCHED || e->kind == FEEDBACK_AUTO_REPLY) && !e->reason)) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl =
        size > 0 && data[0] == 1 ? memchr(data, '\n', size < 101 ? size : 101) : NULL;
    char rcpt[101];
    const char *raw = (const char *)data;
    size_t len = size;
    if (nl) {
        memcpy(rcpt, data + 1, (size_t)(nl - data) - 1);
        rcpt[nl - data - 1] = '\0';
        raw = (const char *)nl + 1;
        len = size - (size_t)(nl - data) - 1;
    }
    struct feedback_report r;
    feedback_parse(raw, len, nl ? rcpt : NULL, &r);
    fuzz_check_report(&r);
    feedback_report_free(&r);
    return 0;
}
