/*
 * feedback_store - what comes back after the 250, written to PostgreSQL
 *
 * SYNOPSIS
 *     #include "campaign/feedback_store.h"
 *
 *     struct feedback_store *s = feedback_store_open(url, &cfg->feedback,
 *                                                    &cfg->bounce.rules, err, n);
 *     struct feedback_msg m = {raw, len, {client, mail_from}, rcpts, nrcpt};
 *     struct feedback_store_outcome o;
 *     if (feedback_store_messages(s, &m, 1, &o, err, n) == 0) "250"; else "451";
 *     feedback_store_unsubscribe(s, "u-TOKEN", FEEDBACK_STORE_HTTP, client, err, n);
 *     feedback_store_close(s);
 *
 * DESCRIPTION
 *     The one writer of ringmail.feedback_event (schema 4, campaign/db.c).
 *     `ringmail inbound` (SMTP and its --http one-click endpoint) and
 *     `ringmail feedback ingest` (a message on stdin, for a Postfix pipe
 *     transport) all write through it. A store owns one PostgreSQL
 *     connection; use it from one thread at a time.
 *
 *     feedback_store_messages parses each message (feedback_parse), checks
 *     every token's MAC (feedback_token_parse under [feedback]
 *     secret_file), and writes in ONE transaction, for all the messages
 *     given: one feedback_event row per event (the first
 *     FEEDBACK_STORE_RAW_MAX bytes of the raw message kept), the
 *     recipient's feedback column, and the suppression list. Until it
 *     returns 0 nothing is committed, so a caller answers 250 only after
 *     0 and 451 after -1 (the reporting MTA retries; nothing is lost).
 *
 *     What each event does:
 *       bounce, hard    the recipient's feedback 'bounce'; suppressed when
 *                       bounce_suppresses() (bad mailbox, bad domain,
 *                       inactive mailbox: never policy, spam, routing or
 *                       protocol bounces, which are about the sender)
 *       bounce, soft    about the mailbox (bounce_soft_counts: not a
 *                       policy, spam, content, routing or protocol one):
 *                       feedback 'soft-bounce'; suppressed (kind
 *                       'soft-bounces') once [feedback] soft_bounce_limit
 *                       such soft bounces of the address, from returned
 *                       mail or synchronous replies, fall within
 *                       soft_bounce_window; about the sender: recorded only
 *       delay           recorded only
 *       complaint       feedback 'complaint', suppressed; then the
 *                       complaint guard: complaints over delivered for the
 *                       campaign and the recipient's ISP within
 *                       complaint_window; at complaint_min_sample delivered
 *                       or more and a rate over complaint_pause, the ISP is
 *                       held for the campaign (ringmail.isp_hold)
 *       unsubscribe     feedback 'unsubscribe', suppressed (mail to
 *                       u-TOKEN@return_path, or feedback_store_unsubscribe)
 *       auto_reply      recorded only, never suppresses
 *       unmatched       recorded with the reason; no recipient changes
 *     The recipient of an event is the one its most trusted token with a
 *     good MAC names (the envelope recipient's first). The event is
 *     unmatched when no token has a good MAC ("forged token (MAC
 *     mismatch)", ...), when the recipient row does not exist, or when the
 *     report names an address that is not that recipient's ("the report is
 *     about x@y, the token names recipient 12 of campaign 3 (a@b)").
 *     List-mode tokens (campaign 0) have no row: the event keeps the
 *     report's address and the suppression list uses it.
 *
 *     A message is recorded once: its events carry the SHA-256 of the
 *     envelope recipient and the whole message (digest), and the same
 *     bytes to the same recipient again (an MTA's retry when our 250 was
 *     lost, or a stop gave up on a commit that landed) are skipped and
 *     counted in duplicates, so complaints and soft bounces are not
 *     counted twice. One-click unsubscribes (no message) are recorded
 *     each time.
 *
 * DIAGNOSTICS
 *     feedback_store_open: "connecting to PostgreSQL: ...", "the database
 *     schema is at version N and this ringmail needs version M: run
 *     `ringmail db migrate --db URL` first", "[feedback] is not configured:
 *     ...". feedback_store_messages, feedback_store_unsubscribe: the
 *     server's message on a database error (the connection is reset for
 *     the next call).
 */
#ifndef RINGMAIL_FEEDBACK_STORE_H
#define RINGMAIL_FEEDBACK_STORE_H

#include <stddef.h>

struct config_feedback;
struct bounce_rules;
struct feedback_store;

#define FEEDBACK_STORE_RAW_MAX 4096 /* bytes of the raw message kept per event */

/* One message as received. */
struct feedback_msg {
    const char *raw; /* headers and body, as received */
    size_t len;
    const char *client;       /* the SMTP client's address ("127.0.0.1"), or NULL */
    const char *mail_from;    /* the envelope sender ("" for the null sender), or NULL */
    const char *const *rcpts; /* the accepted envelope recipients (at least one) */
    size_t nrcpt;
};

/* What a call wrote (summed over its messages). */
struct feedback_store_outcome {
    size_t events; /* feedback_event rows */
    size_t bounces, soft_bounces, delays, complaints, unsubscribes, auto_replies, unmatched;
    size_t suppressed;  /* addresses that joined the suppression list */
    size_t held;        /* (campaign, ISP) pairs the complaint guard held */
    size_t duplicates;  /* messages recorded before (a retry after a lost 250): skipped */
    char held_why[640]; /* the last hold: "campaign 7, isp gmail: 3 complaints over 1000
                         * delivered in 24 h (0.30% > 0.20%): sending to gmail held" */
};

enum feedback_store_source { FEEDBACK_STORE_HTTP, FEEDBACK_STORE_MAILTO };

/* feedback_store_open - connect to conninfo (checking the schema); fb must
 * be enabled (its secret is copied), rules may be NULL. NULL + err on failure. */
struct feedback_store *feedback_store_open(const char *conninfo, const struct config_feedback *fb,
                                           const struct bounce_rules *rules, char *err,
                                           size_t errlen);
/* feedback_store_close - disconnect and free (the secret is wiped) */
void feedback_store_close(struct feedback_store *s);

/* feedback_store_messages - parse and write msgs[0..n) in one transaction.
 * 0: committed, out says what (out may be NULL); -1: nothing written, the
 * database's message in err. */
int feedback_store_messages(struct feedback_store *s, const struct feedback_msg *msgs, size_t n,
                            struct feedback_store_outcome *out, char *err, size_t errlen);

/* feedback_store_unsubscribe - token is "u-TOKEN" or "TOKEN" (the URL's
 * last segment). 1: the recipient is unsubscribed and suppressed (also
 * when it already was; the event row is written each time); 0: the token
 * is not good, why in err (answer 404, say nothing); -1: database error. */
int feedback_store_unsubscribe(struct feedback_store *s, const char *token,
                               enum feedback_store_source src, const char *client, char *err,
                               size_t errlen);

#endif
