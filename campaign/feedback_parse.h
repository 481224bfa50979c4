/*
 * feedback_parse - what a message sent to the return path says happened
 *
 * `ringmail inbound` calls feedback_parse for each message it receives
 * at the return-path domain: the raw message bytes and the envelope
 * recipient (RCPT TO) in, a list of events out. A pure function: no
 * server, no database, no global state but GMime's own (initialised once
 * per process on the first call).
 *
 * What it recognises, in this order:
 *   - DSN (RFC 3464: multipart/report; report-type=delivery-status): one
 *     event per per-recipient block; Action failed -> bounce, delayed ->
 *     delay, delivered/relayed/expanded -> no event. source dsn.
 *   - ARF (RFC 5965: report-type=feedback-report): Feedback-Type abuse ->
 *     complaint; the returned message's headers give the tokens and the
 *     Message-ID. source arf.
 *   - disposition notifications (RFC 8098 read receipts), vacation,
 *     out-of-office and challenge-response replies -> auto_reply.
 *   - bounces that are not RFC 3464 (Exim's, qmail's, Exchange NDRs,
 *     Yahoo's), from the text of their text/plain or text/html parts:
 *     bounce, with status and diagnostic where the text has them. source
 *     text.
 *   - other auto-generated mail (Auto-Submitted) -> auto_reply.
 *   - anything else -> one unmatched event whose reason says why.
 * A bounce of a bounce (the returned message is itself a DSN, or was
 * sent with a null envelope sender) turns every event unmatched with a
 * "bounce loop: ..." reason, so inbound never answers it.
 *
 * The VERP tokens: every candidate local part b-[a-z2-7]+ or u-[a-z2-7]+
 * (case-insensitive, lower-cased here) found in the envelope recipient,
 * X-Original-To, Delivered-To, the returned message's Return-Path and
 * headers, ARF's Original-Mail-From and the returned List-Unsubscribe.
 * They are candidates only: the caller checks their MAC.
 *
 * Bounds: at most FEEDBACK_EVENTS_MAX events (the rest counted in
 * events_dropped), FEEDBACK_TOKENS_MAX tokens, every text at most
 * FEEDBACK_TEXT_MAX bytes. Every string is valid UTF-8 without control
 * characters (invalid bytes become '?'), so it can go to PostgreSQL as
 * it is. Any input gives a report; none crashes (tests/fuzz/fuzz_feedback.c).
 */
#ifndef RINGMAIL_FEEDBACK_PARSE_H
#define RINGMAIL_FEEDBACK_PARSE_H

#include <stddef.h>

#define FEEDBACK_EVENTS_MAX 1000
#define FEEDBACK_TOKENS_MAX 16
#define FEEDBACK_TEXT_MAX 1024

enum feedback_kind {
    FEEDBACK_BOUNCE,
    FEEDBACK_DELAY,
    FEEDBACK_COMPLAINT,
    FEEDBACK_AUTO_REPLY,
    FEEDBACK_UNMATCHED,
};

enum feedback_source {
    FEEDBACK_SOURCE_NONE,
    FEEDBACK_SOURCE_DSN,
    FEEDBACK_SOURCE_TEXT,
    FEEDBACK_SOURCE_ARF,
};

/* Where a token was found, most trusted first. */
enum feedback_origin {
    FEEDBACK_ORIGIN_RCPT_TO,       /* the envelope recipient inbound got */
    FEEDBACK_ORIGIN_X_ORIGINAL_TO, /* X-Original-To of the report */
    FEEDBACK_ORIGIN_DELIVERED_TO,  /* Delivered-To of the report */
    FEEDBACK_ORIGIN_RETURN_PATH,   /* the returned message's Return-Path */
    FEEDBACK_ORIGIN_MAIL_FROM,     /* ARF Original-Mail-From, X-Postfix-Sender */
    FEEDBACK_ORIGIN_RETURNED,      /* another header of the returned message */
    FEEDBACK_ORIGIN_UNSUBSCRIBE,   /* the returned List-Unsubscribe */
};

struct feedback_token {
    char *token; /* "b-..." or "u-...", lower case (owned) */
    enum feedback_origin origin;
};

/* One event. Every string is NULL when absent, else owned. */
struct feedback_event {
    enum feedback_kind kind;
    enum feedback_source source; /* NONE for auto_reply, unmatched (a loop's events keep theirs) */
    char *recipient;             /* Final-Recipient / Original-Rcpt-To / the text's address */
    char *original_recipient;    /* Original-Recipient */
    char *token;                 /* the most trusted b- token, else u- token */
    char *action;                /* "failed", "delayed" */
    char *status;                /* enhanced code "5.1.1" */
    char *diagnostic;            /* "smtp; 550 5.1.1 user unknown", or the text's */
    char *remote_mta;            /* host name, "dns; " dropped */
    char *reporting_mta;         /* host name, "dns; " dropped */
    char *arrival_date;          /* as written */
    char *feedback_type;         /* ARF: "abuse" */
    char *message_id;            /* the returned message's, without <> */
    char *reason;                /* why: auto_reply's signal, unmatched's cause, loops */
};

struct feedback_report {
    struct feedback_event *events; /* n_events >= 1 after feedback_parse (owned) */
    size_t n_events;
    size_t events_dropped;         /* recipients over FEEDBACK_EVENTS_MAX */
    struct feedback_token *tokens; /* every candidate, most trusted first (owned) */
    size_t n_tokens;
    int loop; /* 1: a bounce of a bounce (every event unmatched) */
};

/* feedback_parse - parse raw[0..len) (the message as received, headers
 * and body), delivered to rcpt_to (may be NULL), into out (overwritten;
 * free with feedback_report_free). Always yields at least one event. */
void feedback_parse(const char *raw, size_t len, const char *rcpt_to, struct feedback_report *out);

/* feedback_report_free - free what out owns and zero it. */
void feedback_report_free(struct feedback_report *r);

/* feedback_kind_name, feedback_source_name - "bounce", ..., "dsn", ... ("" for NONE). */
const char *feedback_kind_name(enum feedback_kind k);
const char *feedback_source_name(enum feedback_source s);

/* feedback_parse_shutdown - release GMime's global state at process end
 * (for leak checkers); feedback_parse must not be called after it. */
void feedback_parse_shutdown(void);

#endif
