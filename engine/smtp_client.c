/*
 * smtp_client - the SMTP client protocol as a pure state machine.
 * See smtp_client.h.
 *
 * The session walks GREETING -> EHLO (-> HELO) -> STARTTLS -> EHLO again
 * -> AUTH -> READY, then one TRANSACTION per message, then QUIT. Inside a
 * transaction the "expect" queue holds what each sent command waits for;
 * with PIPELINING the whole MAIL/RCPT.../DATA group is written at once,
 * without it one command goes out per reply.
 *
 * Every state change goes through smtp_client_set_state, which traces it
 * (engine/trace.h) under the connection number cfg.trace_id.
 *
 * Diagnostics: every outcome carries a machine reason (tls_not_offered,
 * starttls_injection, timeout_data, connection_lost, line_too_long, ...)
 * and the server's reply text when there was one.
 *
 * Over 900 lines on purpose: one machine whose handlers share the session
 * struct and call each other across set-up, transaction and fault handling
 * (a fault in a transaction ends the session; a finished transaction starts
 * the next). Split, they would need a private header exposing the struct
 * and some thirty static functions for no gain in what can be tested.
 */
#include "smtp_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"
#include "smtp_data.h"
#include "trace.h"

struct smtp_message smtp_message_wait_sentinel;

enum smtp_state {
    SMTP_STATE_INIT,
    SMTP_STATE_GREETING,
    SMTP_STATE_EHLO,
    SMTP_STATE_HELO,
    SMTP_STATE_STARTTLS,
    SMTP_STATE_TLS_HANDSHAKE,
    SMTP_STATE_AUTH,
    SMTP_STATE_TRANSACTION,
    SMTP_STATE_IDLE, /* ready, the owner has no message yet (rate limit): no timer */
    SMTP_STATE_QUIT,
    SMTP_STATE_DONE,
};

/* For the trace: indexed by enum smtp_state. */
static const char *const smtp_client_state_names[] = {
    "INIT", "GREETING",    "EHLO", "HELO", "STARTTLS", "TLS_HANDSHAKE",
    "AUTH", "TRANSACTION", "IDLE", "QUIT", "DONE",
};

enum smtp_expect_kind {
    SMTP_EXPECT_RSET,
    SMTP_EXPECT_MAIL,
    SMTP_EXPECT_RCPT,
    SMTP_EXPECT_DATA,
    SMTP_EXPECT_DOT,
};

struct smtp_expect {
    enum smtp_expect_kind kind;
    size_t rcpt; /* index, for SMTP_EXPECT_RCPT */
};

enum smtp_auth_step { SMTP_AUTH_STEP_PLAIN, SMTP_AUTH_STEP_LOGIN_USER, SMTP_AUTH_STEP_LOGIN_PASS };

struct smtp_client {
    struct smtp_client_config cfg; /* strings owned by the caller */
    const struct smtp_client_ops *ops;
    void *owner;
    enum smtp_state state; /* changed only by smtp_client_set_state */
    int tls_active;
    int tls_fallback; /* plaintext under opportunistic */
    const char *fallback_reason;
    struct smtp_caps caps;
    struct smtp_reply_parser parser; /* owned */
    struct smtp_reply reply;         /* owned; the reply being handled */
    buf_t out;                       /* owned: plaintext to send */
    /* The transaction in progress. */
    struct smtp_message *msg;   /* borrowed from the owner until message_done */
    struct smtp_data_info info; /* msg's scan, done once in smtp_begin */
    int utf8;                   /* msg's addresses need SMTPUTF8 */
    struct smtp_expect *expect; /* owned ring of expected replies */
    size_t expect_head, expect_len, expect_cap;
    size_t next_rcpt; /* lock-step: next RCPT to send */
    size_t rcpts_ok;  /* RCPTs answered 2xx, waiting for the final reply */
    int mail_ok;
    int got_reply_in_txn; /* any reply seen for this transaction */
    int need_rset;        /* last transaction aborted: RSET before the next */
    int body_sent;
    unsigned messages;
    unsigned txns;  /* transactions a server reply ended: the session has proven itself */
    unsigned waits; /* replies waited for so far: a new one starts a new deadline */
    char end_reason[SMTP_REASON_MAX]; /* why the session ended; "" while it runs */
    enum smtp_auth_step auth_step;
};

static const char *const smtp_policy_names[] = {"required", "verify", "opportunistic", "none"};
static const char *const smtp_outcome_names[] = {"none",     "accepted", "deferred",
                                                 "rejected", "failed",   "retry"};

/* smtp_client_state_name - the state's name for trace lines */
static const char *smtp_client_state_name(enum smtp_state st)
{
    return (unsigned)st < sizeof smtp_client_state_names / sizeof *smtp_client_state_names
               ? smtp_client_state_names[st]
               : "?";
}

/* smtp_client_set_state - the one place the state changes. As curl's
 * mstate: always use this function to change state, to make debugging
 * easier; with tracing on, each change is a line tagged with the
 * connection's number. WHY is a short reason, never AUTH data. */
static void smtp_client_set_state(struct smtp_client *c, enum smtp_state st, const char *why)
{
    if (c->state == st) {
        return;
    }
    if (trace_enabled) {
        trace_state("smtp_client", c->cfg.trace_id, smtp_client_state_name(c->state),
                    smtp_client_state_name(st), why);
    }
    c->state = st;
}

int smtp_tls_policy_parse(const char *s, enum smtp_tls_policy *out)
{
    for (size_t i = 0; i < sizeof smtp_policy_names / sizeof *smtp_policy_names; i++) {
        if (strcmp(s, smtp_policy_names[i]) == 0) {
            *out = (enum smtp_tls_policy)i;
            return 0;
        }
    }
    return -1;
}

const char *smtp_tls_policy_name(enum smtp_tls_policy p)
{
    return (unsigned)p < 4 ? smtp_policy_names[p] : "?";
}

const char *smtp_outcome_name(enum smtp_outcome o)
{
    return (unsigned)o < sizeof smtp_outcome_names / sizeof *smtp_outcome_names
               ? smtp_outcome_names[o]
               : "?";
}

struct smtp_client *smtp_client_new(const struct smtp_client_config *cfg,
                                    const struct smtp_client_ops *ops, void *owner)
{
    struct smtp_client *c = calloc(1, sizeof *c);
    if (!c) {
        return NULL;
    }
    c->cfg = *cfg;
    if (!c->cfg.helo_name) {
        c->cfg.helo_name = "localhost";
    }
    c->ops = ops;
    c->owner = owner;
    smtp_reply_parser_init(&c->parser);
    smtp_reply_init(&c->reply);
    buf_init(&c->out);
    return c;
}

void smtp_client_free(struct smtp_client *c)
{
    if (!c) {
        return;
    }
    smtp_reply_parser_free(&c->parser);
    smtp_reply_free(&c->reply);
    buf_free(&c->out);
    free(c->expect);
    free(c);
}

buf_t *smtp_client_output(struct smtp_client *c)
{
    return &c->out;
}

const struct smtp_caps *smtp_client_caps(const struct smtp_client *c)
{
    return &c->caps;
}

unsigned smtp_client_messages(const struct smtp_client *c)
{
    return c->messages;
}

const char *smtp_client_end_reason(const struct smtp_client *c)
{
    return c->end_reason[0] ? c->end_reason : NULL;
}

/* smtp_end - the session is over; the first reason given is the one kept
 * (a QUIT after a refused greeting still ends as greeting_refused). */
static void smtp_end(struct smtp_client *c, const char *reason)
{
    smtp_client_set_state(c, SMTP_STATE_DONE, reason);
    if (!c->end_reason[0]) {
        snprintf(c->end_reason, sizeof c->end_reason, "%s", reason);
    }
}

int smtp_client_tls_fallback(const struct smtp_client *c, const char **why)
{
    if (why) {
        *why = c->fallback_reason;
    }
    return c->tls_fallback;
}

unsigned smtp_client_wait_id(const struct smtp_client *c)
{
    return c->waits;
}

unsigned smtp_client_timeout_ms(const struct smtp_client *c)
{
    switch (c->state) {
    case SMTP_STATE_GREETING:
        return c->cfg.timeout_greeting_ms;
    case SMTP_STATE_TRANSACTION:
        if (c->expect_len > 0) {
            enum smtp_expect_kind k = c->expect[c->expect_head].kind;
            if (k == SMTP_EXPECT_DOT) {
                return c->cfg.timeout_data_done_ms;
            }
            if (k == SMTP_EXPECT_DATA) {
                return c->cfg.timeout_data_ms;
            }
        }
        return c->cfg.timeout_command_ms;
    case SMTP_STATE_EHLO:
    case SMTP_STATE_HELO:
    case SMTP_STATE_STARTTLS:
    case SMTP_STATE_TLS_HANDSHAKE:
    case SMTP_STATE_AUTH:
    case SMTP_STATE_QUIT:
        return c->cfg.timeout_command_ms;
    default:
        return 0;
    }
}

/* ---- outcomes ---- */

static void smtp_copy_text(char *dst, size_t cap, const char *src, size_t len)
{
    if (len >= cap) {
        len = cap - 1;
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static enum smtp_outcome smtp_outcome_of(int code)
{
    if (code >= 200 && code < 300) {
        return SMTP_OUTCOME_ACCEPTED;
    }
    return code >= 500 ? SMTP_OUTCOME_REJECTED : SMTP_OUTCOME_DEFERRED;
}

void smtp_rcpt_set(struct smtp_rcpt *r, enum smtp_outcome o, const char *reason,
                   const struct smtp_reply *reply, const char *text)
{
    r->outcome = o;
    smtp_copy_text(r->reason, sizeof r->reason, reason, strnlen(reason, sizeof r->reason));
    if (reply) {
        r->code = reply->code;
        memcpy(r->enhanced, reply->enhanced, sizeof r->enhanced);
        smtp_copy_text(r->text, sizeof r->text, buf_data(&reply->text), buf_len(&reply->text));
    } else {
        r->code = 0;
        r->enhanced[0] = '\0';
        text = text ? text : "";
        smtp_copy_text(r->text, sizeof r->text, text, strnlen(text, sizeof r->text));
    }
}

/* Settle every recipient still open, then hand the message back. */
static void smtp_message_finish(struct smtp_client *c, enum smtp_outcome o, const char *reason,
                                const struct smtp_reply *reply, const char *text)
{
    struct smtp_message *m = c->msg;
    if (!m) {
        return;
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        struct smtp_rcpt *r = &m->rcpts[i];
        if (r->outcome == SMTP_OUTCOME_NONE) {
            smtp_rcpt_set(r, o, reason, reply, text);
        }
    }
    c->msg = NULL;
    c->expect_len = 0;
    c->ops->message_done(c->owner, m);
}

static enum smtp_action smtp_session_fail(struct smtp_client *c, enum smtp_outcome o,
                                          const char *reason, const struct smtp_reply *reply,
                                          const char *text)
{
    if (reply && reply->code == 421) {
        /* RFC 5321 3.8: the server is closing, whatever the command was. */
        reason = "server_closing";
        o = SMTP_OUTCOME_DEFERRED;
    }
    c->ops->session_failed(c->owner, o, reason, reply, text);
    if (!c->end_reason[0]) {
        snprintf(c->end_reason, sizeof c->end_reason, "%s", reason);
    }
    /* Be polite unless the server already said goodbye (421). */
    if (!reply || reply->code != 421) {
        buf_append_str(&c->out, "QUIT\r\n");
        smtp_client_set_state(c, SMTP_STATE_QUIT, reason);
        return SMTP_ACTION_WAIT;
    }
    smtp_end(c, reason);
    return SMTP_ACTION_CLOSE;
}

/* ---- session set-up ---- */

static void smtp_send_ehlo(struct smtp_client *c, const char *why)
{
    buf_appendf(&c->out, "EHLO %s\r\n", c->cfg.helo_name);
    smtp_client_set_state(c, SMTP_STATE_EHLO, why);
}

enum smtp_action smtp_client_start(struct smtp_client *c, int tls_active)
{
    c->waits++;
    c->tls_active = tls_active;
    smtp_client_set_state(c, SMTP_STATE_GREETING, tls_active ? "TLS up" : "connected");
    return SMTP_ACTION_WAIT;
}

static enum smtp_action smtp_ready(struct smtp_client *c);

static void smtp_base64(buf_t *out, const void *p, size_t n)
{
    crypto_base64_append(out, p, n);
}

static enum smtp_action smtp_start_auth(struct smtp_client *c)
{
    if (!c->tls_active) {
        /* Credentials never travel in plaintext, whatever the server offers. */
        return smtp_session_fail(c, SMTP_OUTCOME_FAILED, "auth_requires_tls", NULL,
                                 "AUTH refused: the session is not encrypted");
    }
    if (c->caps.auth & SMTP_AUTH_PLAIN) {
        buf_t creds = BUF_INIT;
        buf_append(&creds, "", 1);
        buf_append_str(&creds, c->cfg.auth_user);
        buf_append(&creds, "", 1);
        buf_append_str(&creds, c->cfg.auth_pass ? c->cfg.auth_pass : "");
        buf_append_str(&c->out, "AUTH PLAIN ");
        smtp_base64(&c->out, buf_data(&creds), buf_len(&creds));
        buf_append_str(&c->out, "\r\n");
        buf_free(&creds);
        c->auth_step = SMTP_AUTH_STEP_PLAIN;
    } else if (c->caps.auth & SMTP_AUTH_LOGIN) {
        buf_append_str(&c->out, "AUTH LOGIN\r\n");
        c->auth_step = SMTP_AUTH_STEP_LOGIN_USER;
    } else {
        return smtp_session_fail(c, SMTP_OUTCOME_FAILED, "auth_not_offered", NULL,
                                 "server offers no AUTH mechanism we support (PLAIN, LOGIN)");
    }
    smtp_client_set_state(c, SMTP_STATE_AUTH,
                          c->auth_step == SMTP_AUTH_STEP_PLAIN ? "AUTH PLAIN" : "AUTH LOGIN");
    return SMTP_ACTION_WAIT;
}

/* EHLO (or HELO) succeeded: decide STARTTLS per policy, then AUTH, then mail. */
static enum smtp_action smtp_after_hello(struct smtp_client *c)
{
    enum smtp_tls_policy p = c->cfg.tls_policy;
    if (!c->tls_active && p != SMTP_TLS_NONE) {
        if ((c->caps.flags & SMTP_CAP_STARTTLS) && !c->cfg.skip_starttls) {
            buf_append_str(&c->out, "STARTTLS\r\n");
            smtp_client_set_state(c, SMTP_STATE_STARTTLS, "STARTTLS offered");
            return SMTP_ACTION_WAIT;
        }
        const char *why = c->cfg.skip_starttls ? "tls_handshake_failed" : "tls_not_offered";
        if (p != SMTP_TLS_OPPORTUNISTIC) {
            return smtp_session_fail(
                c, SMTP_OUTCOME_DEFERRED, why, NULL,
                "server does not offer STARTTLS and the TLS policy requires it");
        }
        c->tls_fallback = 1;
        c->fallback_reason = why;
    }
    if (c->cfg.auth_user) {
        return smtp_start_auth(c);
    }
    return smtp_ready(c);
}

static enum smtp_action smtp_on_greeting(struct smtp_client *c, const struct smtp_reply *r)
{
    if (r->code != 220) {
        return smtp_session_fail(c,
                                 smtp_outcome_of(r->code) == SMTP_OUTCOME_REJECTED
                                     ? SMTP_OUTCOME_REJECTED
                                     : SMTP_OUTCOME_DEFERRED,
                                 "greeting_refused", r, NULL);
    }
    smtp_send_ehlo(c, "greeted");
    return SMTP_ACTION_WAIT;
}

static enum smtp_action smtp_on_ehlo(struct smtp_client *c, const struct smtp_reply *r)
{
    if (r->code == 250) {
        smtp_ehlo_parse(r, &c->caps);
        return smtp_after_hello(c);
    }
    if (r->code >= 500 && r->code != 554 && c->state == SMTP_STATE_EHLO) {
        /* An old server: HELO, and no extensions at all. */
        memset(&c->caps, 0, sizeof c->caps);
        buf_appendf(&c->out, "HELO %s\r\n", c->cfg.helo_name);
        smtp_client_set_state(c, SMTP_STATE_HELO, "EHLO refused");
        return SMTP_ACTION_WAIT;
    }
    return smtp_session_fail(c, smtp_outcome_of(r->code), "ehlo_refused", r, NULL);
}

static enum smtp_action smtp_on_starttls(struct smtp_client *c, const struct smtp_reply *r,
                                         size_t unread)
{
    if (r->code == 220) {
        if (unread > 0 || smtp_reply_parser_pending(&c->parser)) {
            /* Bytes before the handshake would be read as if they came
             * through TLS: the STARTTLS command-injection attack. */
            smtp_end(c, "starttls_injection");
            /* The record explains what happened; the 220's text is not it. */
            c->ops->session_failed(c->owner, SMTP_OUTCOME_DEFERRED, "starttls_injection", NULL,
                                   "server sent data after its STARTTLS reply, before TLS");
            return SMTP_ACTION_CLOSE;
        }
        smtp_client_set_state(c, SMTP_STATE_TLS_HANDSHAKE, "220 to STARTTLS");
        return SMTP_ACTION_STARTTLS;
    }
    if (c->cfg.tls_policy == SMTP_TLS_OPPORTUNISTIC && r->code != 421) {
        c->tls_fallback = 1;
        c->fallback_reason = "starttls_refused";
        if (c->cfg.auth_user) {
            return smtp_start_auth(c);
        }
        return smtp_ready(c);
    }
    return smtp_session_fail(c, SMTP_OUTCOME_DEFERRED, "starttls_refused", r, NULL);
}

enum smtp_action smtp_client_tls_done(struct smtp_client *c, int ok, const char *error)
{
    c->waits++;
    if (!ok) {
        const char *reason = error && strncmp(error, "DANE: ", 6) == 0 ? "dane_mismatch"
                             : error && strstr(error, "certificate verify failed")
                                 ? "tls_verify_failed"
                                 : "tls_handshake_failed";
        smtp_end(c, reason);
        c->ops->session_failed(c->owner, SMTP_OUTCOME_DEFERRED, reason, NULL, error);
        return SMTP_ACTION_CLOSE;
    }
    /* RFC 3207 4.2: forget everything learned before TLS. */
    c->tls_active = 1;
    memset(&c->caps, 0, sizeof c->caps);
    smtp_reply_parser_reset(&c->parser);
    smtp_send_ehlo(c, "TLS up");
    return SMTP_ACTION_WAIT;
}

static enum smtp_action smtp_on_auth(struct smtp_client *c, const struct smtp_reply *r)
{
    if (r->code == 235) {
        return smtp_ready(c);
    }
    if (r->code == 334 && c->auth_step != SMTP_AUTH_STEP_PLAIN) {
        const char *secret =
            c->auth_step == SMTP_AUTH_STEP_LOGIN_USER ? c->cfg.auth_user : c->cfg.auth_pass;
        secret = secret ? secret : "";
        smtp_base64(&c->out, secret, strlen(secret));
        buf_append_str(&c->out, "\r\n");
        c->auth_step = SMTP_AUTH_STEP_LOGIN_PASS;
        return SMTP_ACTION_WAIT;
    }
    if (r->code == 334) {
        /* PLAIN with initial response needs no challenge: cancel. */
        buf_append_str(&c->out, "*\r\n");
        return SMTP_ACTION_WAIT;
    }
    /* 535 bad credentials, 530/538 encryption required: a configuration
     * problem, final for this run rather than a retry storm. */
    const char *reason = r->code == 530 || r->code == 538 ? "auth_requires_tls" : "auth_failed";
    return smtp_session_fail(c, r->code >= 500 ? SMTP_OUTCOME_FAILED : SMTP_OUTCOME_DEFERRED,
                             reason, r, NULL);
}

/* ---- transactions ---- */

/* Indexed by enum smtp_expect_kind. */
static const char *const smtp_reason_deferred[] = {
    "rset_deferred", "mail_deferred", "rcpt_deferred", "data_deferred", "data_deferred"};
static const char *const smtp_reason_rejected[] = {
    "rset_rejected", "mail_rejected", "rcpt_rejected", "data_rejected", "data_rejected"};
static const char *const smtp_expect_cmd[] = {"RSET", "MAIL", "RCPT", "DATA", "the final dot"};
static const char *const smtp_expect_timeout[] = {"timeout_rset", "timeout_mail", "timeout_rcpt",
                                                  "timeout_data", "timeout_data_done"};

static const char *smtp_reason(enum smtp_expect_kind k, enum smtp_outcome o)
{
    if (o == SMTP_OUTCOME_ACCEPTED) {
        return "accepted";
    }
    return o == SMTP_OUTCOME_REJECTED ? smtp_reason_rejected[k] : smtp_reason_deferred[k];
}

static void smtp_expect_push(struct smtp_client *c, enum smtp_expect_kind kind, size_t rcpt)
{
    if (c->expect_head + c->expect_len == c->expect_cap) {
        if (c->expect_head > 0) {
            memmove(c->expect, c->expect + c->expect_head, c->expect_len * sizeof *c->expect);
            c->expect_head = 0;
        } else {
            size_t cap = c->expect_cap ? c->expect_cap * 2 : 16;
            struct smtp_expect *e = realloc(c->expect, cap * sizeof *e);
            if (!e) {
                abort();
            }
            c->expect = e;
            c->expect_cap = cap;
        }
    }
    c->expect[c->expect_head + c->expect_len++] = (struct smtp_expect){kind, rcpt};
}

/* An address goes inside <...> verbatim: refuse anything that could end
 * the command line or the brackets. Non-ASCII needs SMTPUTF8. */
static int smtp_address_check(const char *a, int *utf8)
{
    for (const unsigned char *p = (const unsigned char *)a; *p; p++) {
        if (*p < 0x21 || *p == 0x7f || *p == '<' || *p == '>') {
            return -1;
        }
        if (*p >= 0x80) {
            *utf8 = 1;
        }
    }
    return 0;
}

static int smtp_pipelining(const struct smtp_client *c)
{
    return (c->caps.flags & SMTP_CAP_PIPELINING) != 0;
}

/* smtp_append_cmd - HEAD ADDRESS TAIL onto the output: the per-message
 * commands are built without a format string (vsnprintf was a tenth of
 * the machine's own time per message) */
static void smtp_append_cmd(buf_t *out, const char *head, const char *address, const char *tail)
{
    buf_append_str(out, head);
    buf_append_str(out, address);
    buf_append_str(out, tail);
}

static void smtp_send_rcpt(struct smtp_client *c, size_t i)
{
    smtp_append_cmd(&c->out, "RCPT TO:<", c->msg->rcpts[i].address, ">\r\n");
    smtp_expect_push(c, SMTP_EXPECT_RCPT, i);
}

static void smtp_send_mail(struct smtp_client *c)
{
    struct smtp_message *m = c->msg;
    const struct smtp_data_info *info = &c->info;
    int utf8 = c->utf8;
    smtp_append_cmd(&c->out, "MAIL FROM:<", m->mail_from ? m->mail_from : "", ">");
    if (c->caps.flags & SMTP_CAP_SIZE) {
        char digits[24], *d = digits + sizeof digits;
        size_t size = m->len + info->lines;
        do {
            *--d = (char)('0' + size % 10);
            size /= 10;
        } while (size);
        buf_append_str(&c->out, " SIZE=");
        buf_append(&c->out, d, (size_t)(digits + sizeof digits - d));
    }
    if (info->has_8bit) {
        buf_append_str(&c->out, " BODY=8BITMIME");
    }
    if (utf8) {
        buf_append_str(&c->out, " SMTPUTF8");
    }
    buf_append_str(&c->out, "\r\n");
    smtp_expect_push(c, SMTP_EXPECT_MAIL, 0);
    if (!smtp_pipelining(c)) {
        return;
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        smtp_send_rcpt(c, i);
    }
    buf_append_str(&c->out, "DATA\r\n");
    smtp_expect_push(c, SMTP_EXPECT_DATA, 0);
}

/* Local checks that must pass before a byte of the message is sent. */
static const char *smtp_message_check(const struct smtp_client *c, const struct smtp_message *m,
                                      const struct smtp_data_info *info, int *utf8)
{
    if (m->nrcpts == 0) {
        return "no_recipients";
    }
    if (smtp_address_check(m->mail_from ? m->mail_from : "", utf8) < 0) {
        return "invalid_address";
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        if (!m->rcpts[i].address || !*m->rcpts[i].address ||
            smtp_address_check(m->rcpts[i].address, utf8) < 0) {
            return "invalid_address";
        }
    }
    if (info->longest > SMTP_LINE_MAX) {
        return "line_too_long";
    }
    if (info->has_8bit && !(c->caps.flags & SMTP_CAP_8BITMIME)) {
        return "8bitmime_unsupported";
    }
    if (*utf8 && !(c->caps.flags & SMTP_CAP_SMTPUTF8)) {
        return "smtputf8_unsupported";
    }
    if (c->caps.size_max && m->len + info->lines > c->caps.size_max) {
        return "message_too_big";
    }
    return NULL;
}

/* Start m on this session; 0 when commands went out, -1 when m was refused locally. */
static int smtp_begin(struct smtp_client *c, struct smtp_message *m)
{
    smtp_data_scan(m->data, m->len, &c->info);
    c->utf8 = 0;
    for (size_t i = 0; i < m->nrcpts; i++) {
        m->rcpts[i].outcome = SMTP_OUTCOME_NONE;
    }
    m->data_in_flight = 0;
    c->msg = m;
    const char *bad = smtp_message_check(c, m, &c->info, &c->utf8);
    if (bad) {
        char text[128];
        snprintf(text, sizeof text, "refused before sending: %s", bad);
        smtp_message_finish(c, SMTP_OUTCOME_FAILED, bad, NULL, text);
        return -1;
    }
    c->expect_head = c->expect_len = 0;
    c->next_rcpt = 0;
    c->rcpts_ok = 0;
    c->mail_ok = 0;
    c->got_reply_in_txn = 0;
    c->body_sent = 0;
    smtp_client_set_state(c, SMTP_STATE_TRANSACTION, "message");
    if (c->need_rset) {
        buf_append_str(&c->out, "RSET\r\n");
        smtp_expect_push(c, SMTP_EXPECT_RSET, 0);
        c->need_rset = 0;
        if (!smtp_pipelining(c)) {
            return 0; /* MAIL follows the RSET reply */
        }
    }
    smtp_send_mail(c);
    return 0;
}

static enum smtp_action smtp_quit(struct smtp_client *c, const char *why)
{
    buf_append_str(&c->out, "QUIT\r\n");
    smtp_client_set_state(c, SMTP_STATE_QUIT, why);
    return SMTP_ACTION_WAIT;
}

static enum smtp_action smtp_ready(struct smtp_client *c)
{
    for (;;) {
        if (c->cfg.max_msgs && c->messages >= c->cfg.max_msgs) {
            return smtp_quit(c, "max messages");
        }
        struct smtp_message *m = c->ops->next_message(c->owner);
        if (!m) {
            return smtp_quit(c, "no more messages");
        }
        if (m == SMTP_MESSAGE_WAIT) {
            smtp_client_set_state(c, SMTP_STATE_IDLE, "no message yet");
            return SMTP_ACTION_WAIT;
        }
        if (smtp_begin(c, m) == 0) {
            return SMTP_ACTION_WAIT;
        }
    }
}

static void smtp_send_body(struct smtp_client *c)
{
    if (c->rcpts_ok > 0) {
        if (c->ops->data_starting) {
            c->ops->data_starting(c->owner, c->msg);
        }
        smtp_data_write(&c->out, c->msg->data, c->msg->len, &c->info);
        c->body_sent = 1;
    } else {
        /* RFC 2920 3.1: DATA got 354 although no RCPT succeeded; end it empty. */
        buf_append_str(&c->out, ".\r\n");
    }
    smtp_expect_push(c, SMTP_EXPECT_DOT, 0);
}

/* Without PIPELINING: the command that follows the reply just handled. */
static void smtp_lockstep_next(struct smtp_client *c, enum smtp_expect_kind done)
{
    struct smtp_message *m = c->msg;
    if (smtp_pipelining(c) || !m || c->expect_len > 0) {
        return;
    }
    if (done == SMTP_EXPECT_RSET) {
        smtp_send_mail(c);
    } else if (done == SMTP_EXPECT_MAIL || done == SMTP_EXPECT_RCPT) {
        if (c->next_rcpt < m->nrcpts) {
            smtp_send_rcpt(c, c->next_rcpt++);
        } else {
            buf_append_str(&c->out, "DATA\r\n");
            smtp_expect_push(c, SMTP_EXPECT_DATA, 0);
        }
    }
}

static enum smtp_action smtp_transaction_done(struct smtp_client *c, enum smtp_outcome o,
                                              const char *reason, const struct smtp_reply *r)
{
    c->txns++;
    smtp_message_finish(c, o, reason, r, NULL);
    return smtp_ready(c);
}

/* smtp_txn_abandon - settle the transaction in hand by the crash rules when
 * the session ends under it. A body that went out with no trustworthy reply
 * may have been taken (data_in_flight). A message whose body never went out
 * was not delivered: back to the owner's queue, no attempt spent
 * (SMTP_OUTCOME_RETRY) - except on a session that has not finished a
 * transaction yet, which is charged with it as any session that fails before
 * its first message is, so a server that does this every time cannot make a
 * message go round for ever. Unless trusted, outcomes already recorded from
 * this transaction's replies are dropped: they may answer other commands. */
static void smtp_txn_abandon(struct smtp_client *c, const char *reason, const struct smtp_reply *r,
                             const char *text, int trusted)
{
    struct smtp_message *m = c->msg;
    if (!m) {
        return;
    }
    if (c->body_sent) {
        m->data_in_flight = 1;
        smtp_message_finish(c, SMTP_OUTCOME_DEFERRED, reason, r, text);
        return;
    }
    for (size_t i = 0; i < m->nrcpts && !trusted; i++) {
        m->rcpts[i].outcome = SMTP_OUTCOME_NONE;
    }
    smtp_message_finish(c, c->txns > 0 ? SMTP_OUTCOME_RETRY : SMTP_OUTCOME_DEFERRED, reason, r,
                        text);
}

/* smtp_protocol_fault - a reply nobody waits for, or one that cannot answer
 * the command it would be matched to: the two ends no longer agree on which
 * reply answers what, so nothing more is said on this session. Commands
 * queued behind the fault never go out. An unsolicited 421 is the server
 * closing (RFC 5321 3.8), not a fault, and is named so. */
static enum smtp_action smtp_protocol_fault(struct smtp_client *c, const struct smtp_reply *r,
                                            const char *text)
{
    int closing = r && r->code == 421;
    const char *reason = closing ? "server_closing" : "protocol_error";
    buf_reset(&c->out);
    switch (c->state) {
    case SMTP_STATE_TRANSACTION:
        smtp_txn_abandon(c, reason, closing ? r : NULL, text, closing);
        break;
    case SMTP_STATE_IDLE:
    case SMTP_STATE_QUIT:
    case SMTP_STATE_DONE:
        break; /* nothing in flight */
    default:
        return smtp_client_abort(c, reason, text);
    }
    smtp_end(c, reason);
    return SMTP_ACTION_CLOSE;
}

static enum smtp_action smtp_unsolicited(struct smtp_client *c, const struct smtp_reply *r)
{
    char text[SMTP_TEXT_MAX];
    snprintf(text, sizeof text, "reply nobody waits for: \"%d %.*s\"", r->code,
             (int)(buf_len(&r->text) < 200 ? buf_len(&r->text) : 200), buf_data(&r->text));
    return smtp_protocol_fault(c, r, text);
}

/* RFC 5321 4.3.2: DATA's only positive reply is 354, every other command's
 * is 2xx. A 250 to DATA is what a reply shifted by one looks like. */
static int smtp_reply_fits(enum smtp_expect_kind k, int code)
{
    if (code >= 400 && code < 600) {
        return 1;
    }
    return k == SMTP_EXPECT_DATA ? code == 354 : code >= 200 && code < 300;
}

/* A 421 to a command of the transaction: the server is closing. The
 * recipient or message it answered is deferred; what it did not answer was
 * not attempted and goes back without an attempt (see smtp_txn_abandon). */
static enum smtp_action smtp_txn_closing(struct smtp_client *c, struct smtp_expect e,
                                         const struct smtp_reply *r)
{
    struct smtp_message *m = c->msg;
    if (e.kind == SMTP_EXPECT_RCPT && c->mail_ok) {
        /* One recipient is charged, so the rest can go back untried. */
        smtp_rcpt_set(&m->rcpts[e.rcpt], SMTP_OUTCOME_DEFERRED, "server_closing", r, NULL);
        smtp_message_finish(c, SMTP_OUTCOME_RETRY, "server_closing", r, NULL);
    } else if (e.kind == SMTP_EXPECT_DATA || e.kind == SMTP_EXPECT_DOT) {
        smtp_message_finish(c, SMTP_OUTCOME_DEFERRED, "server_closing", r, NULL);
    } else {
        smtp_txn_abandon(c, "server_closing", r, NULL, 1);
    }
    smtp_end(c, "server_closing");
    return SMTP_ACTION_CLOSE;
}

/* A 503 (bad sequence of commands) is the server's protocol fault, not a
 * verdict on the recipient: temporary, and never a reason to suppress. */
static enum smtp_outcome smtp_txn_outcome(int code)
{
    return code == 503 ? SMTP_OUTCOME_DEFERRED : smtp_outcome_of(code);
}

static enum smtp_action smtp_on_transaction(struct smtp_client *c, const struct smtp_reply *r)
{
    if (c->expect_len == 0 || !c->msg) {
        return smtp_unsolicited(c, r);
    }
    struct smtp_expect e = c->expect[c->expect_head];
    if (!smtp_reply_fits(e.kind, r->code)) {
        char text[SMTP_TEXT_MAX];
        snprintf(text, sizeof text, "reply out of step: \"%d %.*s\" cannot answer %s", r->code,
                 (int)(buf_len(&r->text) < 200 ? buf_len(&r->text) : 200), buf_data(&r->text),
                 smtp_expect_cmd[e.kind]);
        return smtp_protocol_fault(c, NULL, text);
    }
    c->expect_head++;
    c->expect_len--;
    c->got_reply_in_txn = 1;
    if (r->code == 421) {
        return smtp_txn_closing(c, e, r);
    }
    struct smtp_message *m = c->msg;
    enum smtp_outcome o = smtp_txn_outcome(r->code);
    const char *why = r->code == 503 ? "bad_sequence" : smtp_reason(e.kind, o);
    switch (e.kind) {
    case SMTP_EXPECT_RSET:
        break;
    case SMTP_EXPECT_MAIL:
        c->mail_ok = o == SMTP_OUTCOME_ACCEPTED;
        if (!c->mail_ok) {
            for (size_t i = 0; i < m->nrcpts; i++) {
                smtp_rcpt_set(&m->rcpts[i], o, why, r, NULL);
            }
            c->need_rset = 1;
            if (!smtp_pipelining(c)) {
                return smtp_transaction_done(c, o, why, r);
            }
        }
        break;
    case SMTP_EXPECT_RCPT:
        if (c->mail_ok) {
            if (o == SMTP_OUTCOME_ACCEPTED) {
                c->rcpts_ok++;
            } else {
                smtp_rcpt_set(&m->rcpts[e.rcpt], o, why, r, NULL);
            }
        }
        if (!smtp_pipelining(c) && c->next_rcpt == m->nrcpts && c->rcpts_ok == 0) {
            c->need_rset = 1;
            return smtp_transaction_done(c, o, why, r);
        }
        break;
    case SMTP_EXPECT_DATA:
        if (r->code == 354) {
            smtp_send_body(c);
            return SMTP_ACTION_WAIT;
        }
        c->need_rset = 1;
        return smtp_transaction_done(c, o, why, r);
    case SMTP_EXPECT_DOT:
        if (c->rcpts_ok > 0) {
            c->messages++;
        }
        /* A failed transaction may leave the server's envelope behind. */
        c->need_rset = c->rcpts_ok == 0 || o != SMTP_OUTCOME_ACCEPTED;
        return smtp_transaction_done(c, o, why, r);
    }
    smtp_lockstep_next(c, e.kind);
    return SMTP_ACTION_WAIT;
}

/* ---- input, timeouts, loss ---- */

static enum smtp_action smtp_on_reply(struct smtp_client *c, const struct smtp_reply *r,
                                      size_t unread)
{
    switch (c->state) {
    case SMTP_STATE_GREETING:
        return smtp_on_greeting(c, r);
    case SMTP_STATE_EHLO:
    case SMTP_STATE_HELO:
        return smtp_on_ehlo(c, r);
    case SMTP_STATE_STARTTLS:
        return smtp_on_starttls(c, r, unread);
    case SMTP_STATE_AUTH:
        return smtp_on_auth(c, r);
    case SMTP_STATE_TRANSACTION:
        return smtp_on_transaction(c, r);
    case SMTP_STATE_QUIT:
        smtp_end(c, "quit");
        return SMTP_ACTION_CLOSE;
    default:
        return smtp_unsolicited(c, r);
    }
}

/* Replies the server owes for commands that went out before the bytes now
 * being read: in a transaction one per queued command, in the set-up states
 * one, idle none. */
static size_t smtp_replies_owed(const struct smtp_client *c)
{
    switch (c->state) {
    case SMTP_STATE_TRANSACTION:
        return c->expect_len;
    case SMTP_STATE_GREETING:
    case SMTP_STATE_EHLO:
    case SMTP_STATE_HELO:
    case SMTP_STATE_STARTTLS:
    case SMTP_STATE_AUTH:
    case SMTP_STATE_QUIT:
        return 1;
    default:
        return 0;
    }
}

enum smtp_action smtp_client_abort(struct smtp_client *c, const char *reason, const char *text)
{
    enum smtp_state was = c->state;
    smtp_end(c, reason);
    if (c->msg) {
        if (c->body_sent) {
            c->msg->data_in_flight = 1;
        }
        smtp_message_finish(c, SMTP_OUTCOME_DEFERRED, reason, NULL, text);
    } else if (was != SMTP_STATE_QUIT && was != SMTP_STATE_DONE && was != SMTP_STATE_IDLE) {
        c->ops->session_failed(c->owner, SMTP_OUTCOME_DEFERRED, reason, NULL, text);
    }
    return SMTP_ACTION_CLOSE;
}

enum smtp_action smtp_client_input(struct smtp_client *c, const char *data, size_t len)
{
    /* Only commands written before these bytes arrived can be answered by
     * them: whatever the machine writes while handling this input has not
     * even left yet. A reply beyond what is owed answers nothing (a second
     * 250 to the final dot read together with the first): it must not be
     * taken as the reply to the next MAIL, which is how a session slips
     * out of step. */
    size_t owed = smtp_replies_owed(c);
    size_t off = 0;
    while (off < len) {
        size_t used = 0;
        const char *err = NULL;
        enum smtp_reply_status st =
            smtp_reply_parse(&c->parser, data + off, len - off, &used, &c->reply, &err);
        if (st == SMTP_REPLY_ERROR) {
            char text[SMTP_TEXT_MAX];
            size_t show = len - off < 200 ? len - off : 200;
            snprintf(text, sizeof text, "%s: \"%.*s\"", err, (int)show, data + off);
            return smtp_protocol_fault(c, NULL, text);
        }
        if (st == SMTP_REPLY_MORE) {
            break;
        }
        off += used;
        c->waits++; /* a whole reply: the next one has a deadline of its own */
        enum smtp_action a;
        if (owed == 0) {
            a = smtp_unsolicited(c, &c->reply);
        } else {
            owed--;
            a = smtp_on_reply(c, &c->reply, len - off);
        }
        if (a != SMTP_ACTION_WAIT || c->state == SMTP_STATE_DONE) {
            return a == SMTP_ACTION_WAIT ? SMTP_ACTION_CLOSE : a;
        }
    }
    return SMTP_ACTION_WAIT;
}

static const char *smtp_timeout_reason(const struct smtp_client *c)
{
    switch (c->state) {
    case SMTP_STATE_GREETING:
        return "timeout_greeting";
    case SMTP_STATE_EHLO:
    case SMTP_STATE_HELO:
        return "timeout_ehlo";
    case SMTP_STATE_STARTTLS:
        return "timeout_starttls";
    case SMTP_STATE_TLS_HANDSHAKE:
        return "timeout_tls";
    case SMTP_STATE_AUTH:
        return "timeout_auth";
    case SMTP_STATE_TRANSACTION:
        if (c->expect_len > 0) {
            return smtp_expect_timeout[c->expect[c->expect_head].kind];
        }
        return "timeout";
    default:
        return "timeout";
    }
}

enum smtp_action smtp_client_timeout(struct smtp_client *c)
{
    if (c->state == SMTP_STATE_QUIT || c->state == SMTP_STATE_DONE || c->state == SMTP_STATE_IDLE) {
        smtp_end(c, "quit");
        return SMTP_ACTION_CLOSE;
    }
    const char *reason = smtp_timeout_reason(c);
    char text[96];
    snprintf(text, sizeof text, "no reply from server (%s)", reason);
    return smtp_client_abort(c, reason, text);
}

enum smtp_action smtp_client_resume(struct smtp_client *c)
{
    if (c->state != SMTP_STATE_IDLE) {
        return SMTP_ACTION_WAIT;
    }
    c->waits++;
    smtp_client_set_state(c, SMTP_STATE_TRANSACTION, "resumed");
    return smtp_ready(c);
}

int smtp_client_idle(const struct smtp_client *c)
{
    return c->state == SMTP_STATE_IDLE;
}

void smtp_client_closed(struct smtp_client *c, const char *why)
{
    if (c->state == SMTP_STATE_DONE || c->state == SMTP_STATE_QUIT || c->state == SMTP_STATE_IDLE) {
        /* After our QUIT a close is the goodbye; while idle the server hung up. */
        smtp_end(c, c->state == SMTP_STATE_QUIT ? "quit" : "connection_lost");
        return;
    }
    char text[SMTP_TEXT_MAX];
    snprintf(text, sizeof text, "connection lost: %s", why ? why : "closed by peer");
    if (c->msg && c->messages > 0 && !c->got_reply_in_txn) {
        /* A reused session that died before answering anything of this
         * transaction: the message was never attempted. */
        smtp_end(c, "connection_lost");
        smtp_message_finish(c, SMTP_OUTCOME_RETRY, "connection_lost_before_reply", NULL, text);
        return;
    }
    smtp_client_abort(c, c->body_sent ? "connection_lost_after_data" : "connection_lost", text);
}
