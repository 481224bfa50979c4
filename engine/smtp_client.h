/*
 * smtp_client - the SMTP client protocol as a pure state machine
 *
 * No sockets and no TLS here: the connection (engine/client_conn) feeds
 * the plaintext the server sent into smtp_client_input(), sends whatever
 * the machine appended to smtp_client_output(), and obeys the action each
 * call returns: keep reading, start the TLS handshake (STARTTLS), or close.
 * That makes every protocol decision — pipelining, the TLS policy table,
 * AUTH only inside TLS, per-recipient outcomes — testable byte for byte.
 *
 * Pipelining follows Postfix's two cursors: commands are appended to the
 * output in one write and the replies they expect are queued; each reply
 * is matched to the head of that queue, in order.
 *
 * Messages come from the owner through ops->next_message() once the
 * session is ready, and go back through ops->message_done() when every
 * recipient has its outcome. A session that fails before taking a message
 * (greeting refused, STARTTLS missing under `required`, AUTH refused)
 * reports through ops->session_failed() so the owner can charge the
 * failure to the messages waiting for this destination.
 */
#ifndef RINGMAIL_SMTP_CLIENT_H
#define RINGMAIL_SMTP_CLIENT_H

#include <stddef.h>

#include "buf.h"
#include "smtp_ehlo.h"
#include "smtp_reply.h"

enum smtp_tls_policy {
    SMTP_TLS_REQUIRED = 0,  /* default: STARTTLS or defer; certificate not checked */
    SMTP_TLS_VERIFY,        /* as required, and the chain + host name must verify */
    SMTP_TLS_OPPORTUNISTIC, /* TLS when offered, plaintext otherwise (recorded tls=none) */
    SMTP_TLS_NONE,          /* plaintext only (tests) */
};

enum smtp_outcome {
    SMTP_OUTCOME_NONE = 0, /* not decided yet */
    SMTP_OUTCOME_ACCEPTED, /* 2xx after the final dot */
    SMTP_OUTCOME_DEFERRED, /* 4xx, timeout, connection loss, TLS policy: retry later */
    SMTP_OUTCOME_REJECTED, /* 5xx from the server: final */
    SMTP_OUTCOME_FAILED, /* refused locally (line too long, 8-bit without 8BITMIME, AUTH config) */
    SMTP_OUTCOME_RETRY,  /* never attempted: a reused connection died, or the server said
                            421 or fell out of step, before the message's body went out and
                            before any reply decided it; send again on a fresh connection,
                            not a failure, no attempt spent */
};

#define SMTP_REASON_MAX 48
#define SMTP_TEXT_MAX 512

struct smtp_rcpt {
    const char *address; /* owned by the message's owner */
    enum smtp_outcome outcome;
    int code; /* the reply that decided it, 0 when none */
    char enhanced[16];
    char reason[SMTP_REASON_MAX]; /* machine-readable: "accepted", "rcpt_rejected",
                                     "tls_not_offered" */
    char text[SMTP_TEXT_MAX];     /* the server's reply text, or our explanation */
};

struct smtp_message {
    const char *mail_from;   /* envelope sender; "" is the null sender <> */
    struct smtp_rcpt *rcpts; /* owned by the message's owner */
    size_t nrcpts;
    const char *data; /* the RFC 5322 message; line endings are normalised on the wire */
    size_t len;
    int data_in_flight; /* set when the body was sent and no final reply came:
                           the server may have taken it (ambiguous) */
    void *user;
};

struct smtp_client_config {
    const char *helo_name;
    enum smtp_tls_policy tls_policy;
    int implicit_tls;      /* TLS already up when smtp_client_start runs */
    int skip_starttls;     /* opportunistic retry after a failed handshake: stay plaintext */
    const char *auth_user; /* NULL: no AUTH */
    const char *auth_pass;
    unsigned max_msgs; /* per session, 0 = unlimited */
    unsigned timeout_greeting_ms;
    unsigned timeout_command_ms;   /* EHLO, STARTTLS, AUTH, MAIL, RCPT, RSET, QUIT */
    unsigned timeout_data_ms;      /* the 354 to DATA */
    unsigned timeout_data_done_ms; /* the reply after the final dot */
    unsigned long trace_id;        /* the connection's number in trace lines (trace_next_id,
                                      set by the owner: client_conn); 0 outside one */
};

/* next_message may return this: no message yet, keep the session open
 * and idle (no timer) until smtp_client_resume(). */
extern struct smtp_message smtp_message_wait_sentinel;
#define SMTP_MESSAGE_WAIT (&smtp_message_wait_sentinel)

struct smtp_client_ops {
    struct smtp_message *(*next_message)(void *owner);
    void (*message_done)(void *owner, struct smtp_message *msg);
    void (*session_failed)(void *owner, enum smtp_outcome outcome, const char *reason,
                           const struct smtp_reply *reply, const char *text);
    /* Optional: the body is about to be written (after 354). From here on
     * the server may take the message even if no reply comes back. */
    void (*data_starting)(void *owner, struct smtp_message *msg);
};

enum smtp_action {
    SMTP_ACTION_WAIT = 0, /* send the output, keep reading */
    SMTP_ACTION_STARTTLS, /* send the output, then run the TLS handshake */
    SMTP_ACTION_CLOSE,    /* send the output, then close */
};

struct smtp_client;

struct smtp_client *smtp_client_new(const struct smtp_client_config *cfg,
                                    const struct smtp_client_ops *ops, void *owner);
void smtp_client_free(struct smtp_client *c);

/* The transport is up (TCP connected, or implicit TLS negotiated). */
enum smtp_action smtp_client_start(struct smtp_client *c, int tls_active);
enum smtp_action smtp_client_input(struct smtp_client *c, const char *data, size_t len);
/* After SMTP_ACTION_STARTTLS: the handshake's result (error: its reason). */
enum smtp_action smtp_client_tls_done(struct smtp_client *c, int ok, const char *error);
/* The timeout returned by smtp_client_timeout_ms expired. */
enum smtp_action smtp_client_timeout(struct smtp_client *c);
/* End the session now for a local reason (connect failed, TLS timeout):
 * every open outcome is settled as deferred with reason and text. */
enum smtp_action smtp_client_abort(struct smtp_client *c, const char *reason, const char *text);
/* An idle session (next_message said SMTP_MESSAGE_WAIT) asks for a message
 * again; a NULL answer now ends the session with QUIT. */
enum smtp_action smtp_client_resume(struct smtp_client *c);
/* 1 while idle. */
int smtp_client_idle(const struct smtp_client *c);
/* The connection is gone (reset, EOF, or the owner closed it): settle every outcome. */
void smtp_client_closed(struct smtp_client *c, const char *why);

buf_t *smtp_client_output(struct smtp_client *c);
/* The timeout for what the machine now waits for; 0 when waiting for nothing.
 * It bounds the whole reply, not the gap between its bytes: the deadline
 * starts when the wait starts and stands until smtp_client_wait_id changes. */
unsigned smtp_client_timeout_ms(const struct smtp_client *c);
/* Changes each time a new wait starts (a whole reply was handled, the
 * session started, TLS finished, an idle session resumed); bytes that do
 * not complete a reply leave it as it was, so they cannot extend a deadline. */
unsigned smtp_client_wait_id(const struct smtp_client *c);
const struct smtp_caps *smtp_client_caps(const struct smtp_client *c);
/* Messages completed on this session. */
unsigned smtp_client_messages(const struct smtp_client *c);
/* Why the session ended: "quit" after our QUIT, else the reason that ended
 * it (protocol_error, server_closing, connection_lost, tls_not_offered, ...);
 * NULL while it runs. Every ended session has one. */
const char *smtp_client_end_reason(const struct smtp_client *c);
/* 1 when the session went on in plaintext under `opportunistic` (reason in *why). */
int smtp_client_tls_fallback(const struct smtp_client *c, const char **why);

/* Record an outcome on r: code, enhanced code and text from reply when
 * there is one, else text as our explanation. */
void smtp_rcpt_set(struct smtp_rcpt *r, enum smtp_outcome o, const char *reason,
                   const struct smtp_reply *reply, const char *text);

int smtp_tls_policy_parse(const char *s, enum smtp_tls_policy *out);
const char *smtp_tls_policy_name(enum smtp_tls_policy p);
const char *smtp_outcome_name(enum smtp_outcome o);

#endif
