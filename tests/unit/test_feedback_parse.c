/*
 * test_feedback_parse - what feedback_parse makes of the samples in
 * tests/unit/feedback/ (a DSN the real Postfix wrote, Gmail's DSN, Exim,
 * qmail, Yahoo and Exchange bounces, Yahoo's and Microsoft's ARF reports,
 * vacation replies, a bounce loop, malformed MIME) and of inputs built
 * here: every reason string, the caps, the token scan, 10 MB of garbage.
 * Run from the repository root (tests/run.sh does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "campaign/feedback_parse.h"
#include "engine/buf.h"

#define TOKEN "b-mfrggzdfmztwq2lknnwg23tpobyxe"
#define UTOKEN "u-mfrggzdfmztwq2lknnwg23tpobyxe"
#define RCPT TOKEN "@bounces.sender.test"

/* terminate - a NUL after b's bytes (not counted), for the string functions. */
static void terminate(buf_t *b)
{
    buf_append(b, "", 1);
    b->len--;
}

/* load - a sample's bytes into b, NUL-terminated. */
static void load(const char *name, buf_t *b)
{
    char path[256];
    snprintf(path, sizeof path, "tests/unit/feedback/%s", name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        buf_append(b, chunk, n);
    }
    fclose(f);
    terminate(b);
}

/* parse_file - feedback_parse over a sample, delivered to rcpt. */
static void parse_file(const char *name, const char *rcpt, struct feedback_report *r)
{
    buf_t b = BUF_INIT;
    load(name, &b);
    feedback_parse(buf_data(&b), buf_len(&b), rcpt, r);
    buf_free(&b);
}

static void parse_str(const char *s, const char *rcpt, struct feedback_report *r)
{
    feedback_parse(s, strlen(s), rcpt, r);
}

/* assert_str - s equals want (NULL: s is NULL). */
static void assert_str(const char *s, const char *want)
{
    if (!want) {
        assert_null(s);
    } else {
        assert_non_null(s);
        assert_string_equal(s, want);
    }
}

/* assert_one - exactly one event, of kind, with reason. */
static void assert_one(const struct feedback_report *r, enum feedback_kind kind, const char *reason)
{
    assert_int_equal(r->n_events, 1);
    assert_int_equal(r->events[0].kind, kind);
    assert_str(r->events[0].reason, reason);
}

static void test_postfix_dsn(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_file("postfix_dsn.eml", RCPT, &r);
    assert_one(&r, FEEDBACK_BOUNCE, NULL);
    const struct feedback_event *e = &r.events[0];
    assert_int_equal(e->source, FEEDBACK_SOURCE_DSN);
    assert_string_equal(feedback_source_name(e->source), "dsn");
    assert_string_equal(feedback_kind_name(e->kind), "bounce");
    assert_str(e->recipient, "nobody@example.test");
    assert_str(e->original_recipient, "nobody@example.test");
    assert_str(e->token, TOKEN);
    assert_str(e->action, "failed");
    assert_str(e->status, "5.1.1");
    assert_str(e->diagnostic, "smtp; 550 5.1.1 <nobody@example.test>: Recipient address "
                              "rejected: User unknown in virtual mailbox table");
    assert_str(e->remote_mta, "127.0.0.1");
    assert_str(e->reporting_mta, "mx1.relay.test");
    assert_non_null(e->arrival_date);
    assert_string_equal(e->arrival_date + strlen(e->arrival_date) - 11, "+0000 (UTC)");
    assert_str(e->message_id, "20261206.1.campaign-7@sender.test");
    assert_null(e->feedback_type);
    assert_int_equal(r.loop, 0);
    /* The envelope recipient first; the unsubscribe token found too. */
    assert_int_equal(r.n_tokens, 2);
    assert_str(r.tokens[0].token, TOKEN);
    assert_int_equal(r.tokens[0].origin, FEEDBACK_ORIGIN_RCPT_TO);
    assert_str(r.tokens[1].token, UTOKEN);
    assert_int_equal(r.tokens[1].origin, FEEDBACK_ORIGIN_UNSUBSCRIBE);
    feedback_report_free(&r);
    assert_null(r.events);
    assert_int_equal(r.n_events, 0);
}

static void test_gmail_dsn_bounce_delay_and_delivered(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_file("gmail_dsn.eml", NULL, &r); /* no envelope: Delivered-To has the token */
    assert_int_equal(r.n_events, 2);       /* the "delivered" block makes no event */
    const struct feedback_event *b = &r.events[0], *d = &r.events[1];
    assert_int_equal(b->kind, FEEDBACK_BOUNCE);
    assert_str(b->recipient, "dave.nobody@gmail.example");
    assert_str(b->status, "5.1.1");
    assert_true(strncmp(b->diagnostic,
                        "smtp; 550-5.1.1 The email account that you tried to "
                        "reach does not exist. Please try",
                        80) == 0);
    assert_non_null(strstr(b->diagnostic, "gsmtp"));
    assert_str(b->reporting_mta, "googlemail.example");
    assert_str(b->arrival_date, "Sun, 06 Dec 2026 00:05:30 -0800 (PST)");
    assert_str(b->message_id, "20261206.7.campaign-7@sender.test");
    assert_int_equal(d->kind, FEEDBACK_DELAY);
    assert_str(d->action, "delayed");
    assert_str(d->recipient, "erin@gmail.example");
    assert_str(d->status, "4.2.2");
    assert_str(d->diagnostic, "smtp; 452-4.2.2 The recipient's inbox is out of storage space.");
    assert_str(d->remote_mta, "gmail-smtp-in.l.google.example.");
    assert_str(d->token, TOKEN);
    assert_int_equal(r.tokens[0].origin, FEEDBACK_ORIGIN_DELIVERED_TO);
    feedback_report_free(&r);
}

static void test_exim_report_without_status_part_reads_the_text(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_file("exim_bounce.eml", RCPT, &r);
    assert_one(&r, FEEDBACK_BOUNCE, NULL);
    const struct feedback_event *e = &r.events[0];
    assert_int_equal(e->source, FEEDBACK_SOURCE_TEXT);
    assert_string_equal(feedback_source_name(e->source), "text");
    assert_str(e->recipient, "alice@example.org");
    assert_str(e->status, "5.1.1");
    assert_str(e->diagnostic,
               "550 5.1.1 <alice@example.org>: Recipient address rejected: User unknown");
    assert_str(e->remote_mta, "mx1.example.org");
    assert_str(e->message_id, "20261206.2.campaign-7@sender.test");
    assert_str(e->token, TOKEN);
    feedback_report_free(&r);
}

static void test_exim_text_bounce_two_recipients_crlf(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_file("exim_text_bounce.eml", NULL, &r);
    assert_int_equal(r.n_events, 2);
    assert_str(r.events[0].recipient, "alice@example.org");
    assert_str(r.events[0].status, "5.1.1");
    assert_str(r.events[1].recipient, "bob@example.org");
    assert_str(r.events[1].status, "5.2.2");
    assert_str(r.events[1].diagnostic, "552 5.2.2 mailbox full (in reply to RCPT TO command)");
    assert_int_equal(r.events[1].kind, FEEDBACK_BOUNCE);
    /* The token comes from the copy of the message under the marker. */
    assert_str(r.events[0].token, TOKEN);
    assert_int_equal(r.tokens[0].origin, FEEDBACK_ORIGIN_RETURNED);
    feedback_report_free(&r);
}

static void test_exim_delay_warning_is_a_delay(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_str("From: Mail Delivery System <Mailer-Daemon@mx.exim.example>\n"
              "Subject: Warning: message 1t9XyZ-000Abc-1x delayed 24 hours\n\n"
              "This message was created automatically by mail delivery software.\n\n"
              "A message that you sent has not yet been delivered to one or more of its\n"
              "recipients after more than 24 hours on the queue on mx.exim.example.\n\n"
              "  slow@example.org\n"
              "    host mx.example.org [198.51.100.9]: 451 4.3.0 try again later\n\n"
              "No action is required on your part.\n",
              RCPT, &r);
    assert_one(&r, FEEDBACK_DELAY, NULL);
    assert_str(r.events[0].recipient, "slow@example.org");
    assert_str(r.events[0].status, "4.3.0");
    feedback_report_free(&r);
}

static void test_qmail_bounce(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_file("qmail_bounce.eml", RCPT, &r);
    assert_one(&r, FEEDBACK_BOUNCE, NULL);
    const struct feedback_event *e = &r.events[0];
    assert_int_equal(e->source, FEEDBACK_SOURCE_TEXT);
    assert_str(e->recipient, "nobody@qmail.example");
    assert_str(e->diagnostic, "550 5.1.1 <nobody@qmail.example>... User unknown");
    assert_str(e->status, "5.1.1");
    assert_str(e->remote_mta, "203.0.113.9");
    assert_str(e->reporting_mta, "mail.qmail.example");
    feedback_report_free(&r);
}

static void test_yahoo_bounce_quoted_printable(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_file("yahoo_bounce.eml", NULL, &r);
    assert_one(&r, FEEDBACK_BOUNCE, NULL);
    const struct feedback_event *e = &r.events[0];
    assert_str(e->recipient, "gone@yahoo.example");
    /* Soft line breaks joined: the text is decoded before it is read. */
    assert_str(e->diagnostic, "554 delivery error: dd This user doesn't have a yahoo.example "
                              "account (gone@yahoo.example) [0] - mta1042.mail.ne1.yahoo.example "
                              "[RCPT_TO]");
    assert_null(e->status);
    assert_str(e->token, TOKEN);
    assert_int_equal(r.tokens[0].origin, FEEDBACK_ORIGIN_X_ORIGINAL_TO);
    feedback_report_free(&r);
}

static void test_exchange_ndr_html_base64(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_file("exchange_ndr.eml", RCPT, &r);
    assert_one(&r, FEEDBACK_BOUNCE, NULL);
    const struct feedback_event *e = &r.events[0];
    assert_int_equal(e->source, FEEDBACK_SOURCE_TEXT);
    assert_str(e->recipient, "carol@contoso.example");
    assert_str(e->diagnostic, "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found");
    assert_str(e->status, "5.1.1");
    assert_str(e->reporting_mta, "EXCH01.contoso.example");
    feedback_report_free(&r);
}

/* A fuzzer's Exchange NDR (a mangled exchange_ndr.eml) whose text ends in
 * a line of blanks: that line is empty at the very end of the decoded
 * part, and the parser read the byte after it (ASan: heap-buffer-overflow
 * in fb_exchange). Parsed to the end, nothing read past the part. */
static void test_exchange_ndr_blank_last_line(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_file("exchange_ndr_blank_end.eml", RCPT, &r);
    assert_true(r.n_events <= 1);
    feedback_report_free(&r);
    /* a plain-text NDR whose administrators' section ends in blanks, in
     * an exactly sized buffer: its one bounce */
    static const char text[] = "From: postmaster@contoso.example\n"
                               "To: " RCPT "\n"
                               "Subject: Undeliverable: offers\n"
                               "X-MS-Exchange-Message-Is-Ndr:\n"
                               "Content-Type: text/plain\n\n"
                               "Delivery has failed to these recipients or groups:\n\n"
                               "carol@contoso.example\n\n"
                               "Diagnostic information for administrators:\n\n"
                               "Generating server: EXCH01.contoso.example\n\n"
                               "carol@contoso.example\n"
                               "Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound'\n   ";
    char *exact = malloc(sizeof text - 1);
    assert_non_null(exact);
    memcpy(exact, text, sizeof text - 1);
    feedback_parse(exact, sizeof text - 1, RCPT, &r);
    free(exact);
    assert_one(&r, FEEDBACK_BOUNCE, NULL);
    assert_str(r.events[0].recipient, "carol@contoso.example");
    feedback_report_free(&r);
}

static void test_yahoo_arf_complaint(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_file("yahoo_arf.eml", "fbl@sender.test", &r);
    assert_one(&r, FEEDBACK_COMPLAINT, NULL);
    const struct feedback_event *e = &r.events[0];
    assert_int_equal(e->source, FEEDBACK_SOURCE_ARF);
    assert_string_equal(feedback_source_name(e->source), "arf");
    assert_string_equal(feedback_kind_name(e->kind), "complaint");
    assert_str(e->recipient, "reader@yahoo.example");
    assert_str(e->feedback_type, "abuse");
    assert_str(e->arrival_date, "Sun, 06 Dec 2026 07:12:09 +0000");
    assert_str(e->message_id, "20261206.1.campaign-7@sender.test");
    assert_str(e->token, TOKEN);
    /* Return-Path of the returned headers beats Original-Mail-From; then the unsubscribe. */
    assert_int_equal(r.n_tokens, 2);
    assert_int_equal(r.tokens[0].origin, FEEDBACK_ORIGIN_RETURN_PATH);
    assert_str(r.tokens[1].token, UTOKEN);
    feedback_report_free(&r);
}

static void test_microsoft_jmrp_complaint(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_file("microsoft_jmrp.eml", NULL, &r);
    assert_one(&r, FEEDBACK_COMPLAINT, NULL);
    const struct feedback_event *e = &r.events[0];
    /* No Original-Rcpt-To: the mailbox from X-HmXmrOriginalRecipient, without <>. */
    assert_str(e->recipient, "reader@outlook.example");
    assert_str(e->arrival_date, "Sun, 06 Dec 2026 07:12:09 -0800");
    assert_str(e->token, TOKEN);
    feedback_report_free(&r);
}

static void test_unsubscribe_token_from_the_url_alone(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_str("From: fbl@isp.example\nMIME-Version: 1.0\n"
              "Content-Type: multipart/report; report-type=feedback-report; boundary=b\n\n"
              "--b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n\n"
              "--b\nContent-Type: text/rfc822-headers\n\n"
              "List-Unsubscribe: <https://sender.test/u/MFRGGZDFMZTWQ2LKNNWG23TPOBYXE?x=1>\n"
              "Message-ID: <m1@sender.test>\n\n--b--\n",
              NULL, &r);
    assert_one(&r, FEEDBACK_COMPLAINT, NULL);
    assert_null(r.events[0].recipient);
    assert_str(r.events[0].token, UTOKEN);
    assert_int_equal(r.tokens[0].origin, FEEDBACK_ORIGIN_UNSUBSCRIBE);
    assert_str(r.events[0].message_id, "m1@sender.test");
    feedback_report_free(&r);
}

static void test_auto_replies(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_file("vacation_outlook.eml", RCPT, &r);
    assert_one(&r, FEEDBACK_AUTO_REPLY, "auto-reply: out-of-office subject");
    assert_string_equal(feedback_kind_name(r.events[0].kind), "auto_reply");
    assert_int_equal(r.events[0].source, FEEDBACK_SOURCE_NONE);
    assert_string_equal(feedback_source_name(r.events[0].source), "");
    assert_str(r.events[0].token, TOKEN);
    feedback_report_free(&r);
    parse_file("vacation_cn.eml", NULL, &r); /* "自动回复:" in an RFC 2047 word */
    assert_one(&r, FEEDBACK_AUTO_REPLY, "auto-reply: out-of-office subject");
    feedback_report_free(&r);
    parse_file("autosubmitted.eml", NULL, &r);
    assert_one(&r, FEEDBACK_AUTO_REPLY, "auto-reply: Auto-Submitted: auto-replied");
    feedback_report_free(&r);
    static const struct {
        const char *msg, *reason;
    } cases[] = {
        {"X-Autoreply: yes\nSubject: Re: offers\n\nI am away.\n", "auto-reply: X-Autoreply header"},
        {"Precedence: auto_reply\nSubject: Re: offers\n\nI am away.\n",
         "auto-reply: Precedence: auto_reply"},
        {"X-Boxtrapper: abc\nSubject: Re: offers\n\nConfirm.\n",
         "auto-reply: challenge-response header"},
        {"Subject: Please confirm your message\n\nClick to confirm.\n",
         "auto-reply: challenge-response subject"},
        {"Subject: Auto: Your December offers\n\nAway.\n", "auto-reply: out-of-office subject"},
        {"Auto-Submitted: auto-generated\nSubject: notice\n\nA notice.\n",
         "auto-reply: Auto-Submitted: auto-generated, and no delivery report"},
        {"MIME-Version: 1.0\nContent-Type: multipart/report; "
         "report-type=disposition-notification; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
         "Your message was displayed.\n--b--\n",
         "auto-reply: disposition notification (read receipt)"},
        /* An out-of-office reply that quotes bounce-like words is still an auto-reply. */
        {"Subject: Out of Office\n\nThis message was created automatically by mail delivery "
         "software.\nA message that you sent could not be delivered to one or more of its\n",
         "auto-reply: out-of-office subject"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        parse_str(cases[i].msg, RCPT, &r);
        assert_one(&r, FEEDBACK_AUTO_REPLY, cases[i].reason);
        feedback_report_free(&r);
    }
}

static void test_bounce_loops(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_file("bounce_loop.eml", RCPT, &r);
    assert_one(&r, FEEDBACK_UNMATCHED,
               "bounce loop: the returned message is itself a delivery status notification");
    assert_int_equal(r.loop, 1);
    assert_str(r.events[0].recipient, RCPT);
    feedback_report_free(&r);

    /* The real Postfix DSN, changed: the bounced message had a null sender. */
    buf_t b = BUF_INIT, c = BUF_INIT;
    load("postfix_dsn.eml", &b);
    const char *s = buf_data(&b), *at = strstr(s, "X-Postfix-Sender: rfc822; b-");
    assert_non_null(at);
    const char *eol = strchr(at, '\n');
    buf_append(&c, s, (size_t)(at - s));
    buf_append_str(&c, "X-Postfix-Sender: rfc822;");
    buf_append_str(&c, eol);
    terminate(&c);
    char *rp = strstr(c.data, "Return-Path: <b-");
    assert_non_null(rp);
    memcpy(rp, "X-Return-P", 10); /* no Return-Path: only the DSN field says it */
    feedback_parse(buf_data(&c), buf_len(&c), RCPT, &r);
    assert_one(&r, FEEDBACK_UNMATCHED,
               "bounce loop: the returned message was sent with a null envelope sender");
    assert_int_equal(r.loop, 1);
    feedback_report_free(&r);

    /* And: the failed recipient was our own return path. */
    buf_reset(&c);
    at = strstr(s, "Final-Recipient: rfc822; nobody@example.test");
    assert_non_null(at);
    buf_append(&c, s, (size_t)(at - s));
    buf_append_str(&c, "Final-Recipient: rfc822; " RCPT);
    buf_append_str(&c, strchr(at, '\n'));
    feedback_parse(buf_data(&c), buf_len(&c), RCPT, &r);
    assert_one(&r, FEEDBACK_UNMATCHED,
               "bounce loop: the failed recipient is itself a return-path address");
    feedback_report_free(&r);
    buf_free(&b);
    buf_free(&c);
}

static void test_malformed_mime(void **state)
{
    (void)state;
    struct feedback_report r;
    /* Cut after "Action: failed": no closing boundary, no Status, no returned message. */
    parse_file("truncated_dsn.eml", RCPT, &r);
    assert_one(&r, FEEDBACK_BOUNCE, NULL);
    assert_str(r.events[0].recipient, "nobody@example.test");
    assert_null(r.events[0].status);
    assert_null(r.events[0].message_id);
    feedback_report_free(&r);
    /* Garbage inside the base64 is skipped by the decoder. */
    parse_file("bad_base64_dsn.eml", RCPT, &r);
    assert_int_equal(r.events[0].kind, FEEDBACK_BOUNCE);
    assert_str(r.events[0].recipient, "ivan@example.com");
    assert_str(r.events[0].status, "5.2.1");
    assert_str(r.events[0].reporting_mta, "mx3.relay.test");
    feedback_report_free(&r);
}

static void test_every_unmatched_reason(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_file("plain_reply.eml", RCPT, &r);
    assert_one(&r, FEEDBACK_UNMATCHED, "no delivery-status part and no recognizable bounce text");
    assert_string_equal(feedback_kind_name(r.events[0].kind), "unmatched");
    assert_str(r.events[0].token, TOKEN); /* the candidate is kept for the record */
    feedback_report_free(&r);
    feedback_parse("", 0, RCPT, &r);
    assert_one(&r, FEEDBACK_UNMATCHED, "empty message");
    feedback_report_free(&r);
    feedback_parse(NULL, 0, NULL, &r);
    assert_one(&r, FEEDBACK_UNMATCHED, "empty message");
    feedback_report_free(&r);
    static const struct {
        const char *msg, *reason;
    } cases[] = {
        {"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; "
         "boundary=b\n\n--b\nContent-Type: text/plain\n\nIt did not work.\n--b--\n",
         "delivery-status report without a message/delivery-status part"},
        {"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; "
         "boundary=b\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; "
         "a.test\n\n"
         "Final-Recipient: rfc822; x@y.test\nAction: relayed\nStatus: 2.0.0\n\n"
         "Final-Recipient: rfc822; z@y.test\nAction: expanded\nStatus: 2.0.0\n--b--\n",
         "delivery-status report with no failed or delayed recipient"},
        {"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=feedback-report; "
         "boundary=b\n\n--b\nContent-Type: text/plain\n\nA complaint.\n--b--\n",
         "feedback report without a message/feedback-report part"},
        {"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=feedback-report; "
         "boundary=b\n\n--b\nContent-Type: message/feedback-report\n\nFeedback-Type: "
         "auth-failure\nAuth-Failure: dkim\n--b--\n",
         "feedback report of type \"auth-failure\", not a complaint"},
        {"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=feedback-report; "
         "boundary=b\n\n--b\nContent-Type: message/feedback-report\n\nVersion: 1\n--b--\n",
         "feedback report of type \"\", not a complaint"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        parse_str(cases[i].msg, RCPT, &r);
        assert_one(&r, FEEDBACK_UNMATCHED, cases[i].reason);
        feedback_report_free(&r);
    }
}

/* A DSN in the status part alone: Action missing, kind from the Status class. */
static void test_dsn_without_action_uses_status_class(void **state)
{
    (void)state;
    struct feedback_report r;
    parse_str("MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; "
              "boundary=b\n\n--b\nContent-Type: message/delivery-status\n\n"
              "Final-Recipient: rfc822; a@y.test\nStatus: 5.7.1 (policy)\n\n"
              "Final-Recipient: rfc822; b@y.test\nStatus: 4.4.1\n"
              "Diagnostic-Code: smtp; 421 4.4.1 timed out\n--b--\n",
              NULL, &r);
    assert_int_equal(r.n_events, 2);
    assert_int_equal(r.events[0].kind, FEEDBACK_BOUNCE);
    assert_str(r.events[0].status, "5.7.1");
    assert_int_equal(r.events[1].kind, FEEDBACK_DELAY);
    assert_null(r.events[0].token);
    assert_int_equal(r.n_tokens, 0);
    feedback_report_free(&r);
}

static void test_recipient_cap(void **state)
{
    (void)state;
    buf_t m = BUF_INIT;
    buf_append_str(&m, "MIME-Version: 1.0\nContent-Type: multipart/report; "
                       "report-type=delivery-status; boundary=b\n\n--b\n"
                       "Content-Type: message/delivery-status\n\nReporting-MTA: dns; a.test\n");
    for (int i = 0; i < FEEDBACK_EVENTS_MAX + 500; i++) {
        buf_appendf(&m, "\nFinal-Recipient: rfc822; r%d@y.test\nAction: failed\nStatus: 5.1.1\n",
                    i);
    }
    buf_append_str(&m, "--b--\n");
    struct feedback_report r;
    feedback_parse(buf_data(&m), buf_len(&m), RCPT, &r);
    assert_int_equal(r.n_events, FEEDBACK_EVENTS_MAX);
    assert_int_equal(r.events_dropped, 500);
    assert_str(r.events[FEEDBACK_EVENTS_MAX - 1].recipient, "r999@y.test");
    assert_str(r.events[FEEDBACK_EVENTS_MAX - 1].token, TOKEN);
    feedback_report_free(&r);
    buf_free(&m);
}

static void test_texts_bounded_utf8_no_controls(void **state)
{
    (void)state;
    buf_t m = BUF_INIT;
    buf_append_str(&m, "MIME-Version: 1.0\nContent-Type: multipart/report; "
                       "report-type=delivery-status; boundary=b\n\n--b\n"
                       "Content-Type: message/delivery-status\n\n"
                       "Final-Recipient: rfc822; a\x01\x7f@y.test\nAction: failed\n"
                       "Diagnostic-Code: smtp; 550 5.1.1 \xff\xfe bad\tbytes");
    for (int i = 0; i < 3000; i++) {
        buf_append_str(&m, "\xc3\xa9"); /* é: the cut must fall between characters */
    }
    buf_append_str(&m, "\n--b--\n");
    struct feedback_report r;
    feedback_parse(buf_data(&m), buf_len(&m), NULL, &r);
    const char *d = r.events[0].diagnostic;
    assert_non_null(d);
    assert_true(strlen(d) <= FEEDBACK_TEXT_MAX - 1);
    assert_true(strncmp(d, "smtp; 550 5.1.1 ?? bad bytes\xc3\xa9", 30) == 0);
    assert_str(r.events[0].recipient, "a @y.test");
    assert_str(r.events[0].status, "5.1.1");
    size_t n = strlen(d);
    assert_true((unsigned char)d[n - 2] == 0xc3 && (unsigned char)d[n - 1] == 0xa9);
    feedback_report_free(&r);
    buf_free(&m);
}

static void test_token_scan_rules(void **state)
{
    (void)state;
    struct feedback_report r;
    /* Upper case is folded; digits outside base32, a prefix glued to a word, no '@': no token. */
    parse_str("X-Original-To: B-MFRGG2@x.test, xb-abcd@x.test, b-abc1@x.test, b-abcd\n"
              "Delivered-To: <u-zz77@x.test>\nSubject: hi\n\nhello\n",
              "<b-Qrst@bounces.sender.test>", &r);
    assert_int_equal(r.n_tokens, 3);
    assert_str(r.tokens[0].token, "b-qrst");
    assert_int_equal(r.tokens[0].origin, FEEDBACK_ORIGIN_RCPT_TO);
    assert_str(r.tokens[1].token, "b-mfrgg2");
    assert_int_equal(r.tokens[1].origin, FEEDBACK_ORIGIN_X_ORIGINAL_TO);
    assert_str(r.tokens[2].token, "u-zz77");
    assert_int_equal(r.tokens[2].origin, FEEDBACK_ORIGIN_DELIVERED_TO);
    assert_str(r.events[0].token, "b-qrst");
    feedback_report_free(&r);
    /* Only u- tokens: the event's token is the u- one. */
    parse_str("Subject: hi\n\nhello\n", "u-abcd@bounces.sender.test", &r);
    assert_str(r.events[0].token, "u-abcd");
    feedback_report_free(&r);
}

static void test_ten_megabytes_of_garbage(void **state)
{
    (void)state;
    size_t n = 10u << 20;
    char *g = malloc(n);
    assert_non_null(g);
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        g[i] = (char)(x >> 24);
    }
    struct feedback_report r;
    feedback_parse(g, n, RCPT, &r);
    assert_one(&r, FEEDBACK_UNMATCHED, "not a mail message: no header block");
    feedback_report_free(&r);
    /* Garbage after a header block: a message, but nothing in it. */
    memcpy(g, "Subject: x\n\n", 12);
    feedback_parse(g, n, RCPT, &r);
    assert_one(&r, FEEDBACK_UNMATCHED, "no delivery-status part and no recognizable bounce text");
    feedback_report_free(&r);
    free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_postfix_dsn),
        cmocka_unit_test(test_gmail_dsn_bounce_delay_and_delivered),
        cmocka_unit_test(test_exim_report_without_status_part_reads_the_text),
        cmocka_unit_test(test_exim_text_bounce_two_recipients_crlf),
        cmocka_unit_test(test_exim_delay_warning_is_a_delay),
        cmocka_unit_test(test_qmail_bounce),
        cmocka_unit_test(test_yahoo_bounce_quoted_printable),
        cmocka_unit_test(test_exchange_ndr_html_base64),
        cmocka_unit_test(test_exchange_ndr_blank_last_line),
        cmocka_unit_test(test_yahoo_arf_complaint),
        cmocka_unit_test(test_microsoft_jmrp_complaint),
        cmocka_unit_test(test_unsubscribe_token_from_the_url_alone),
        cmocka_unit_test(test_auto_replies),
        cmocka_unit_test(test_bounce_loops),
        cmocka_unit_test(test_malformed_mime),
        cmocka_unit_test(test_every_unmatched_reason),
        cmocka_unit_test(test_dsn_without_action_uses_status_class),
        cmocka_unit_test(test_recipient_cap),
        cmocka_unit_test(test_texts_bounded_utf8_no_controls),
        cmocka_unit_test(test_token_scan_rules),
        cmocka_unit_test(test_ten_megabytes_of_garbage),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    /* GMime's global state, released so valgrind sees no leak of ours. */
    feedback_parse_shutdown();
    return rc;
}
