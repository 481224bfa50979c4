/*
 * test_smtp_client - the client state machine, byte for byte, no sockets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/smtp_client.h"

struct harness {
    struct smtp_client *c;
    struct smtp_message msgs[4];
    struct smtp_rcpt rcpts[4][3];
    int nmsgs, taken, done;
    int failed;
    int hold; /* next_message answers SMTP_MESSAGE_WAIT (rate limited) */
    enum smtp_outcome fail_outcome;
    char fail_reason[64];
    char fail_text[SMTP_TEXT_MAX]; /* the text a record would carry */
    char sent[8192];               /* everything the client wrote, concatenated */
};

static struct smtp_message *h_next(void *owner)
{
    struct harness *h = owner;
    if (h->hold) {
        return SMTP_MESSAGE_WAIT;
    }
    return h->taken < h->nmsgs ? &h->msgs[h->taken++] : NULL;
}

static void h_done(void *owner, struct smtp_message *m)
{
    (void)m;
    ((struct harness *)owner)->done++;
}

static void h_failed(void *owner, enum smtp_outcome o, const char *reason,
                     const struct smtp_reply *r, const char *text)
{
    struct harness *h = owner;
    h->failed++;
    h->fail_outcome = o;
    snprintf(h->fail_reason, sizeof h->fail_reason, "%s", reason);
    struct smtp_rcpt rec = {0};
    smtp_rcpt_set(&rec, o, reason, r, text);
    snprintf(h->fail_text, sizeof h->fail_text, "%s", rec.text);
}

static const struct smtp_client_ops h_ops = {h_next, h_done, h_failed, NULL};

static void h_init(struct harness *h, enum smtp_tls_policy p, const char *user)
{
    memset(h, 0, sizeof *h);
    struct smtp_client_config cfg = {
        .helo_name = "client.test",
        .tls_policy = p,
        .auth_user = user,
        .auth_pass = user ? "secret" : NULL,
        .timeout_greeting_ms = 1000,
        .timeout_command_ms = 1000,
        .timeout_data_ms = 1000,
        .timeout_data_done_ms = 2000,
    };
    h->c = smtp_client_new(&cfg, &h_ops, h);
}

static void h_add(struct harness *h, const char *data, int nrcpt, const char **addrs)
{
    struct smtp_message *m = &h->msgs[h->nmsgs];
    for (int i = 0; i < nrcpt; i++) {
        h->rcpts[h->nmsgs][i].address = addrs[i];
    }
    m->mail_from = "from@sender.test";
    m->rcpts = h->rcpts[h->nmsgs];
    m->nrcpts = (size_t)nrcpt;
    m->data = data;
    m->len = strlen(data);
    h->nmsgs++;
}

/* Collect the client's output into h->sent and return the new part. */
static const char *h_out(struct harness *h)
{
    buf_t *o = smtp_client_output(h->c);
    size_t at = strlen(h->sent);
    snprintf(h->sent + at, sizeof h->sent - at, "%.*s", (int)buf_len(o), buf_data(o));
    buf_reset(o);
    return h->sent + at;
}

static enum smtp_action h_in(struct harness *h, const char *s)
{
    return smtp_client_input(h->c, s, strlen(s));
}

static const char *one[] = {"a@x.test"};

/* Greeting, EHLO offering STARTTLS, 220 to STARTTLS, handshake done. */
static void h_tls_session(struct harness *h)
{
    smtp_client_start(h->c, 0);
    h_in(h, "220 mx\r\n");
    h_in(h, "250-mx\r\n250 STARTTLS\r\n");
    assert_int_equal(h_in(h, "220 go\r\n"), SMTP_ACTION_STARTTLS);
    assert_int_equal(smtp_client_tls_done(h->c, 1, NULL), SMTP_ACTION_WAIT);
    h_out(h);
}

/* Greeting + EHLO with caps, no TLS (policy none). */
static void h_plain_session(struct harness *h, const char *caps)
{
    smtp_client_start(h->c, 0);
    assert_int_equal(h_in(h, "220 mx.test ESMTP\r\n"), SMTP_ACTION_WAIT);
    assert_string_equal(h_out(h), "EHLO client.test\r\n");
    assert_int_equal(h_in(h, caps), SMTP_ACTION_WAIT);
}

static void test_starttls_pipelined_delivery(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_REQUIRED, NULL);
    h_add(&h, ".leading dot\nbody\n", 1, one);
    smtp_client_start(h.c, 0);
    h_in(&h, "220-mx.test\r\n220 ESMTP\r\n");
    assert_string_equal(h_out(&h), "EHLO client.test\r\n");
    h_in(&h, "250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
    assert_string_equal(h_out(&h), "STARTTLS\r\n");
    assert_int_equal(h_in(&h, "220 2.0.0 go ahead\r\n"), SMTP_ACTION_STARTTLS);
    assert_int_equal(smtp_client_tls_done(h.c, 1, NULL), SMTP_ACTION_WAIT);
    /* RFC 3207: EHLO again, capabilities learned before TLS forgotten. */
    assert_string_equal(h_out(&h), "EHLO client.test\r\n");
    assert_int_equal(smtp_client_caps(h.c)->flags, 0);
    h_in(&h, "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n");
    /* MAIL, RCPT and DATA in one write. */
    assert_string_equal(h_out(&h), "MAIL FROM:<from@sender.test> SIZE=20\r\n"
                                   "RCPT TO:<a@x.test>\r\nDATA\r\n");
    h_in(&h, "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n");
    assert_string_equal(h_out(&h), "..leading dot\r\nbody\r\n.\r\n");
    h_in(&h, "250 2.0.0 queued as X\r\n");
    assert_int_equal(h.done, 1);
    assert_int_equal(h.rcpts[0][0].outcome, SMTP_OUTCOME_ACCEPTED);
    assert_int_equal(h.rcpts[0][0].code, 250);
    assert_string_equal(h.rcpts[0][0].enhanced, "2.0.0");
    assert_string_equal(h.rcpts[0][0].text, "2.0.0 queued as X");
    assert_string_equal(h_out(&h), "QUIT\r\n");
    assert_int_equal(h_in(&h, "221 bye\r\n"), SMTP_ACTION_CLOSE);
    smtp_client_free(h.c);
}

static void test_required_without_starttls_never_sends_mail(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_REQUIRED, NULL);
    h_add(&h, "x\n", 1, one);
    smtp_client_start(h.c, 0);
    h_in(&h, "220 mx\r\n");
    h_in(&h, "250-mx\r\n250 PIPELINING\r\n");
    assert_int_equal(h.failed, 1);
    assert_int_equal(h.fail_outcome, SMTP_OUTCOME_DEFERRED);
    assert_string_equal(h.fail_reason, "tls_not_offered");
    assert_int_equal(h.taken, 0);
    h_out(&h);
    assert_null(strstr(h.sent, "MAIL"));
    assert_non_null(strstr(h.sent, "QUIT"));
    smtp_client_free(h.c);
}

static void test_opportunistic_falls_back_loudly(void **state)
{
    (void)state;
    struct harness h;
    const char *why = NULL;
    h_init(&h, SMTP_TLS_OPPORTUNISTIC, NULL);
    h_add(&h, "x\n", 1, one);
    h_plain_session(&h, "250-mx\r\n250 PIPELINING\r\n");
    assert_int_equal(h.failed, 0);
    assert_true(smtp_client_tls_fallback(h.c, &why));
    assert_string_equal(why, "tls_not_offered");
    assert_non_null(strstr(h_out(&h), "MAIL FROM"));
    smtp_client_free(h.c);
}

static void test_starttls_injection_aborts(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_REQUIRED, NULL);
    h_add(&h, "x\n", 1, one);
    smtp_client_start(h.c, 0);
    h_in(&h, "220 mx\r\n");
    h_in(&h, "250-mx\r\n250 STARTTLS\r\n");
    assert_int_equal(h_in(&h, "220 go ahead\r\n250 injected\r\n"), SMTP_ACTION_CLOSE);
    assert_string_equal(h.fail_reason, "starttls_injection");
    /* The record explains the attack; the server's "go ahead" is not it. */
    assert_string_equal(h.fail_text, "server sent data after its STARTTLS reply, before TLS");
    assert_int_equal(h.taken, 0);
    smtp_client_free(h.c);
}

static void test_starttls_454_required_defers(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_REQUIRED, NULL);
    smtp_client_start(h.c, 0);
    h_in(&h, "220 mx\r\n");
    h_in(&h, "250-mx\r\n250 STARTTLS\r\n");
    h_in(&h, "454 4.7.0 TLS not available\r\n");
    assert_string_equal(h.fail_reason, "starttls_refused");
    assert_int_equal(h.fail_outcome, SMTP_OUTCOME_DEFERRED);
    smtp_client_free(h.c);
}

static void test_handshake_failure_reasons(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_VERIFY, NULL);
    smtp_client_start(h.c, 0);
    h_in(&h, "220 mx\r\n");
    h_in(&h, "250-mx\r\n250 STARTTLS\r\n");
    assert_int_equal(h_in(&h, "220 go\r\n"), SMTP_ACTION_STARTTLS);
    assert_int_equal(smtp_client_tls_done(h.c, 0, "certificate verify failed: self-signed"),
                     SMTP_ACTION_CLOSE);
    assert_string_equal(h.fail_reason, "tls_verify_failed");
    smtp_client_free(h.c);
}

static void test_ehlo_rejected_falls_back_to_helo_lockstep(void **state)
{
    (void)state;
    struct harness h;
    const char *two[] = {"a@x.test", "b@x.test"};
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "x\n", 2, two);
    smtp_client_start(h.c, 0);
    h_in(&h, "220 mx\r\n");
    h_out(&h);
    h_in(&h, "502 5.5.1 command not recognized\r\n");
    assert_string_equal(h_out(&h), "HELO client.test\r\n");
    h_in(&h, "250 mx\r\n");
    /* No PIPELINING: one command per reply. */
    assert_string_equal(h_out(&h), "MAIL FROM:<from@sender.test>\r\n");
    h_in(&h, "250 ok\r\n");
    assert_string_equal(h_out(&h), "RCPT TO:<a@x.test>\r\n");
    h_in(&h, "550 5.1.1 no such user\r\n");
    assert_string_equal(h_out(&h), "RCPT TO:<b@x.test>\r\n");
    h_in(&h, "250 ok\r\n");
    assert_string_equal(h_out(&h), "DATA\r\n");
    h_in(&h, "354 go\r\n");
    assert_string_equal(h_out(&h), "x\r\n.\r\n");
    h_in(&h, "250 ok\r\n");
    assert_int_equal(h.rcpts[0][0].outcome, SMTP_OUTCOME_REJECTED);
    assert_string_equal(h.rcpts[0][0].enhanced, "5.1.1");
    assert_string_equal(h.rcpts[0][0].reason, "rcpt_rejected");
    assert_int_equal(h.rcpts[0][1].outcome, SMTP_OUTCOME_ACCEPTED);
    smtp_client_free(h.c);
}

static void test_all_rcpts_fail_but_data_354_sends_lone_dot(void **state)
{
    (void)state;
    struct harness h;
    const char *two[] = {"a@x.test", "b@x.test"};
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "secret body\n", 2, two);
    h_add(&h, "second\n", 1, one);
    h_plain_session(&h, "250-mx\r\n250 PIPELINING\r\n");
    h_out(&h);
    h_in(&h, "250 ok\r\n550 5.1.1 no\r\n451 4.2.0 later\r\n354 go\r\n");
    assert_string_equal(h_out(&h), ".\r\n");
    h_in(&h, "554 5.5.1 no valid recipients\r\n");
    assert_int_equal(h.rcpts[0][0].outcome, SMTP_OUTCOME_REJECTED);
    assert_int_equal(h.rcpts[0][1].outcome, SMTP_OUTCOME_DEFERRED);
    assert_int_equal(h.rcpts[0][1].code, 451);
    /* The aborted transaction is followed by RSET, pipelined with the next. */
    assert_true(strncmp(h_out(&h), "RSET\r\nMAIL FROM", 15) == 0);
    assert_null(strstr(h.sent, "secret body"));
    smtp_client_free(h.c);
}

static void test_421_mid_pipeline_defers_and_closes(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "x\n", 1, one);
    h_plain_session(&h, "250-mx\r\n250 PIPELINING\r\n");
    h_out(&h);
    assert_int_equal(h_in(&h, "250 ok\r\n421 4.7.0 closing\r\n"), SMTP_ACTION_CLOSE);
    assert_int_equal(h.rcpts[0][0].outcome, SMTP_OUTCOME_DEFERRED);
    assert_int_equal(h.rcpts[0][0].code, 421);
    assert_string_equal(h.rcpts[0][0].reason, "server_closing");
    smtp_client_free(h.c);
}

static void test_auth_only_inside_tls(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_OPPORTUNISTIC, "user");
    h_add(&h, "x\n", 1, one);
    h_plain_session(&h, "250-mx\r\n250 AUTH PLAIN LOGIN\r\n");
    assert_int_equal(h.failed, 1);
    assert_string_equal(h.fail_reason, "auth_requires_tls");
    assert_null(strstr(h_out(&h), "AUTH"));
    smtp_client_free(h.c);

    h_init(&h, SMTP_TLS_REQUIRED, "user");
    h_add(&h, "x\n", 1, one);
    h_tls_session(&h);
    h_in(&h, "250-mx\r\n250 AUTH=LOGIN PLAIN\r\n");
    /* base64("\0user\0secret") */
    assert_string_equal(h_out(&h), "AUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
    h_in(&h, "535 5.7.8 bad credentials\r\n");
    assert_string_equal(h.fail_reason, "auth_failed");
    assert_int_equal(h.fail_outcome, SMTP_OUTCOME_FAILED);
    smtp_client_free(h.c);
}

static void test_auth_login_challenges(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, "user");
    h_add(&h, "x\n", 1, one);
    smtp_client_start(h.c, 1); /* implicit TLS */
    h_in(&h, "220 mx\r\n");
    h_out(&h);
    h_in(&h, "250-mx\r\n250 AUTH LOGIN\r\n");
    assert_string_equal(h_out(&h), "AUTH LOGIN\r\n");
    h_in(&h, "334 VXNlcm5hbWU6\r\n");
    assert_string_equal(h_out(&h), "dXNlcg==\r\n");
    h_in(&h, "334 UGFzc3dvcmQ6\r\n");
    assert_string_equal(h_out(&h), "c2VjcmV0\r\n");
    h_in(&h, "235 2.7.0 ok\r\n");
    assert_non_null(strstr(h_out(&h), "MAIL FROM"));
    smtp_client_free(h.c);
}

static void test_loss_after_data_is_in_flight(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "x\n", 1, one);
    h_plain_session(&h, "250-mx\r\n250 PIPELINING\r\n");
    h_in(&h, "250 ok\r\n250 ok\r\n354 go\r\n");
    smtp_client_closed(h.c, "reset");
    assert_int_equal(h.rcpts[0][0].outcome, SMTP_OUTCOME_DEFERRED);
    assert_string_equal(h.rcpts[0][0].reason, "connection_lost_after_data");
    assert_int_equal(h.msgs[0].data_in_flight, 1);
    smtp_client_free(h.c);
}

static void test_reused_connection_loss_is_retry(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "x\n", 1, one);
    h_add(&h, "y\n", 1, one);
    h_plain_session(&h, "250-mx\r\n250 PIPELINING\r\n");
    h_in(&h, "250 ok\r\n250 ok\r\n354 go\r\n");
    h_out(&h);
    /* The dot's reply comes in a read of its own: it cannot arrive with
     * the 354, before the body went out. */
    h_in(&h, "250 ok\r\n");
    assert_int_equal(h.done, 1);
    smtp_client_closed(h.c, "closed by server");
    assert_int_equal(h.rcpts[1][0].outcome, SMTP_OUTCOME_RETRY);
    assert_int_equal(h.msgs[1].data_in_flight, 0);
    smtp_client_free(h.c);
}

static void test_local_refusals_send_nothing(void **state)
{
    (void)state;
    struct harness h;
    char longline[1200];
    memset(longline, 'a', sizeof longline - 2);
    longline[sizeof longline - 2] = '\n';
    longline[sizeof longline - 1] = '\0';
    const char *bad[] = {"evil@x.test>\r\nRCPT TO:<other@x.test"};
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, longline, 1, one);
    h_add(&h, "x\n", 1, bad);
    h_add(&h, "caf\xc3\xa9\n", 1, one);
    h_plain_session(&h, "250-mx\r\n250 PIPELINING\r\n");
    assert_int_equal(h.done, 3);
    assert_string_equal(h.rcpts[0][0].reason, "line_too_long");
    assert_string_equal(h.rcpts[1][0].reason, "invalid_address");
    assert_string_equal(h.rcpts[2][0].reason, "8bitmime_unsupported");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(h.rcpts[i][0].outcome, SMTP_OUTCOME_FAILED);
    }
    assert_string_equal(h_out(&h), "QUIT\r\n");
    smtp_client_free(h.c);
}

static void test_timeouts_name_the_phase(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "x\n", 1, one);
    h_plain_session(&h, "250-mx\r\n250 PIPELINING\r\n");
    h_in(&h, "250 ok\r\n250 ok\r\n354 go\r\n");
    assert_int_equal(smtp_client_timeout_ms(h.c), 2000);
    assert_int_equal(smtp_client_timeout(h.c), SMTP_ACTION_CLOSE);
    assert_string_equal(h.rcpts[0][0].reason, "timeout_data_done");
    assert_int_equal(h.msgs[0].data_in_flight, 1);
    smtp_client_free(h.c);
}

/* A reply's deadline runs from the start of the wait: lines and bytes that
 * do not finish the reply must not start a new one (issue 11.1). */
static void test_trickled_greeting_keeps_its_deadline(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    smtp_client_start(h.c, 0);
    unsigned w = smtp_client_wait_id(h.c);
    assert_int_equal(smtp_client_timeout_ms(h.c), 1000);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(h_in(&h, "220-one more line\r\n"), SMTP_ACTION_WAIT);
        assert_int_equal(smtp_client_wait_id(h.c), w);
    }
    assert_int_equal(h_in(&h, "220 "), SMTP_ACTION_WAIT);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(h_in(&h, "x"), SMTP_ACTION_WAIT);
        assert_int_equal(smtp_client_wait_id(h.c), w);
    }
    assert_int_equal(smtp_client_timeout(h.c), SMTP_ACTION_CLOSE);
    assert_string_equal(h.fail_reason, "timeout_greeting");
    smtp_client_free(h.c);
}

static void test_each_reply_starts_a_new_wait(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "x\n", 1, one);
    smtp_client_start(h.c, 0);
    unsigned w = smtp_client_wait_id(h.c);
    h_in(&h, "220 mx\r\n");
    assert_int_not_equal(smtp_client_wait_id(h.c), w); /* EHLO's reply: a wait of its own */
    h_in(&h, "250-mx\r\n250 PIPELINING\r\n");
    w = smtp_client_wait_id(h.c);
    h_in(&h, "250 ok\r\n25"); /* MAIL answered, RCPT's reply half there */
    assert_int_not_equal(smtp_client_wait_id(h.c), w);
    w = smtp_client_wait_id(h.c);
    h_in(&h, "0 ok\r\n");
    assert_int_not_equal(smtp_client_wait_id(h.c), w);
    w = smtp_client_wait_id(h.c);
    h_in(&h, "354 go\r\n"); /* the DATA phase: body out, the dot's reply */
    assert_int_not_equal(smtp_client_wait_id(h.c), w);
    assert_int_equal(smtp_client_timeout_ms(h.c), 2000);
    w = smtp_client_wait_id(h.c);
    h_in(&h, "250-queued\r\n250-still\r\n");
    assert_int_equal(smtp_client_wait_id(h.c), w);
    assert_int_equal(smtp_client_timeout(h.c), SMTP_ACTION_CLOSE);
    assert_string_equal(h.rcpts[0][0].reason, "timeout_data_done");
    smtp_client_free(h.c);
}

static void test_garbage_reply_is_protocol_error(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    smtp_client_start(h.c, 0);
    assert_int_equal(h_in(&h, "HTTP/1.1 400 Bad Request\r\n"), SMTP_ACTION_CLOSE);
    assert_string_equal(h.fail_reason, "protocol_error");
    smtp_client_free(h.c);
}

static void test_greeting_554_rejects(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    smtp_client_start(h.c, 0);
    h_in(&h, "554 5.7.1 go away\r\n");
    assert_string_equal(h.fail_reason, "greeting_refused");
    assert_int_equal(h.fail_outcome, SMTP_OUTCOME_REJECTED);
    smtp_client_free(h.c);
}

/* A rate-limited owner parks the session: no command, no timer, nothing
 * charged; resume sends the message; a close while parked loses nothing. */
static void test_idle_session_waits_for_resume(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "Subject: a\r\n\r\nbody\r\n", 1, one);
    h_add(&h, "Subject: b\r\n\r\nbody\r\n", 1, one);
    h.hold = 1;
    h_plain_session(&h, "250-mx\r\n250 PIPELINING\r\n");
    assert_string_equal(h_out(&h), "");
    assert_int_equal(smtp_client_timeout_ms(h.c), 0);
    assert_true(smtp_client_idle(h.c));
    assert_int_equal(smtp_client_resume(h.c), SMTP_ACTION_WAIT); /* still held */
    assert_string_equal(h_out(&h), "");
    h.hold = 0;
    assert_int_equal(smtp_client_resume(h.c), SMTP_ACTION_WAIT);
    assert_false(smtp_client_idle(h.c));
    assert_string_equal(h_out(&h),
                        "MAIL FROM:<from@sender.test>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n");
    assert_true(smtp_client_timeout_ms(h.c) > 0);
    h_in(&h, "250 ok\r\n250 ok\r\n354 go\r\n");
    h_out(&h);
    h.hold = 1;
    assert_int_equal(h_in(&h, "250 queued\r\n"), SMTP_ACTION_WAIT);
    assert_int_equal(h.done, 1);
    assert_true(smtp_client_idle(h.c));
    assert_string_equal(h_out(&h), ""); /* parked again: no RSET, no QUIT */
    /* The server hangs up an idle session: nothing to settle, no session failure. */
    smtp_client_closed(h.c, "closed by peer");
    assert_int_equal(h.failed, 0);
    assert_int_equal(h.done, 1);
    assert_int_equal(h.rcpts[1][0].outcome, SMTP_OUTCOME_NONE);
    smtp_client_free(h.c);
}

/* An idle session told there is nothing more says QUIT. */
static void test_idle_session_quits_when_nothing_left(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    h.hold = 1;
    h_plain_session(&h, "250 mx\r\n");
    h.hold = 0;
    assert_int_equal(smtp_client_resume(h.c), SMTP_ACTION_WAIT);
    assert_string_equal(h_out(&h), "QUIT\r\n");
    assert_int_equal(h_in(&h, "221 bye\r\n"), SMTP_ACTION_CLOSE);
    assert_int_equal(h.failed, 0);
    smtp_client_free(h.c);
}

/* One message delivered on a pipelining session; the second is next. */
static void h_first_delivered(struct harness *h)
{
    h_plain_session(h, "250-mx\r\n250 PIPELINING\r\n");
    h_out(h);
    h_in(h, "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n");
    h_out(h);
}

/* Issue 10 (5): a second 250 to the final dot, read together with the
 * first, answers nothing. It must not become the reply to the next MAIL:
 * the session ends protocol_error, the first message stays accepted and the
 * second, whose commands never left, goes back without an attempt. */
static void test_extra_reply_after_dot_same_read(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "one\n", 1, one);
    h_add(&h, "two\n", 1, one);
    h_first_delivered(&h);
    assert_int_equal(h_in(&h, "250 ok one\r\n250 ok two\r\n"), SMTP_ACTION_CLOSE);
    assert_int_equal(h.done, 2);
    assert_int_equal(h.rcpts[0][0].outcome, SMTP_OUTCOME_ACCEPTED);
    assert_int_equal(h.rcpts[1][0].outcome, SMTP_OUTCOME_RETRY);
    assert_string_equal(h.rcpts[1][0].reason, "protocol_error");
    assert_int_equal(h.msgs[1].data_in_flight, 0);
    assert_string_equal(h_out(&h), ""); /* the second MAIL never goes out */
    assert_string_equal(smtp_client_end_reason(h.c), "protocol_error");
    assert_int_equal(h.failed, 0);
    smtp_client_free(h.c);
}

/* The same extra 250 in a later read, once the next MAIL/RCPT/DATA went
 * out: it is taken for the MAIL's reply, which shifts the RCPT's 250 onto
 * DATA. A 250 cannot answer DATA: protocol_error, and the body of the
 * second message is never sent. */
static void test_extra_reply_after_dot_later_read(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "one\n", 1, one);
    h_add(&h, "second body\n", 1, one);
    h_first_delivered(&h);
    assert_int_equal(h_in(&h, "250 ok one\r\n"), SMTP_ACTION_WAIT);
    assert_non_null(strstr(h_out(&h), "MAIL FROM"));
    assert_int_equal(h_in(&h, "250 ok two\r\n"), SMTP_ACTION_WAIT);
    assert_int_equal(h_in(&h, "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n"), SMTP_ACTION_CLOSE);
    assert_int_equal(h.done, 2);
    assert_int_equal(h.rcpts[0][0].outcome, SMTP_OUTCOME_ACCEPTED);
    assert_int_equal(h.rcpts[1][0].outcome, SMTP_OUTCOME_RETRY);
    assert_string_equal(h.rcpts[1][0].reason, "protocol_error");
    assert_non_null(strstr(h.rcpts[1][0].text, "cannot answer DATA"));
    h_out(&h);
    assert_null(strstr(h.sent, "second body"));
    assert_string_equal(smtp_client_end_reason(h.c), "protocol_error");
    smtp_client_free(h.c);
}

/* An unsolicited reply to an idle (lingering) session ends it; nothing is
 * in flight, nothing is charged. */
static void test_extra_reply_while_idle(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "one\n", 1, one);
    h_first_delivered(&h);
    h.hold = 1;
    assert_int_equal(h_in(&h, "250 ok one\r\n"), SMTP_ACTION_WAIT);
    assert_true(smtp_client_idle(h.c));
    assert_int_equal(h_in(&h, "250 ok two\r\n"), SMTP_ACTION_CLOSE);
    assert_int_equal(h.done, 1);
    assert_int_equal(h.failed, 0);
    assert_string_equal(smtp_client_end_reason(h.c), "protocol_error");
    smtp_client_free(h.c);
}

/* On a session that finished no transaction yet, the message in hand is
 * charged (deferred): a server that always does this cannot loop it. */
static void test_extra_reply_before_first_message_defers(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "one\n", 1, one);
    smtp_client_start(h.c, 0);
    h_in(&h, "220 mx\r\n");
    assert_int_equal(h_in(&h, "250-mx\r\n250 PIPELINING\r\n250 stray\r\n"), SMTP_ACTION_CLOSE);
    assert_int_equal(h.rcpts[0][0].outcome, SMTP_OUTCOME_DEFERRED);
    assert_string_equal(h.rcpts[0][0].reason, "protocol_error");
    assert_string_equal(h.rcpts[0][0].text, "reply nobody waits for: \"250 stray\"");
    smtp_client_free(h.c);
}

/* Issue 10 (7): 421 to MAIL after a delivered message: server_closing, the
 * session ends, the message was not attempted (RETRY, no attempt), and no
 * further message is taken. */
static void test_421_to_mail_retries_unattempted(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "one\n", 1, one);
    h_add(&h, "two\n", 1, one);
    h_add(&h, "three\n", 1, one);
    h_first_delivered(&h);
    h_in(&h, "250 ok\r\n");
    h_out(&h);
    assert_int_equal(h_in(&h, "421 4.7.0 too many messages, closing\r\n"), SMTP_ACTION_CLOSE);
    assert_int_equal(h.taken, 2);
    assert_int_equal(h.rcpts[1][0].outcome, SMTP_OUTCOME_RETRY);
    assert_string_equal(h.rcpts[1][0].reason, "server_closing");
    assert_int_equal(h.rcpts[1][0].code, 421);
    assert_string_equal(smtp_client_end_reason(h.c), "server_closing");
    assert_null(strstr(h_out(&h), "QUIT")); /* the server already said goodbye */
    smtp_client_free(h.c);

    /* The first transaction of a session: charged, as a failed session is. */
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "one\n", 1, one);
    h_plain_session(&h, "250-mx\r\n250 PIPELINING\r\n");
    h_out(&h);
    assert_int_equal(h_in(&h, "421 4.7.0 closing\r\n"), SMTP_ACTION_CLOSE);
    assert_int_equal(h.rcpts[0][0].outcome, SMTP_OUTCOME_DEFERRED);
    assert_string_equal(h.rcpts[0][0].reason, "server_closing");
    smtp_client_free(h.c);
}

/* 421 to one RCPT of several: that recipient is deferred, the others (the
 * one already accepted at RCPT too: no body went out) go back untried. */
static void test_421_to_rcpt_defers_only_the_answered(void **state)
{
    (void)state;
    struct harness h;
    const char *three[] = {"a@x.test", "b@x.test", "c@x.test"};
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "x\n", 3, three);
    h_plain_session(&h, "250-mx\r\n250 PIPELINING\r\n");
    h_out(&h);
    assert_int_equal(h_in(&h, "250 ok\r\n250 ok\r\n421 4.7.0 closing\r\n"), SMTP_ACTION_CLOSE);
    assert_int_equal(h.rcpts[0][0].outcome, SMTP_OUTCOME_RETRY);
    assert_int_equal(h.rcpts[0][1].outcome, SMTP_OUTCOME_DEFERRED);
    assert_string_equal(h.rcpts[0][1].reason, "server_closing");
    assert_int_equal(h.rcpts[0][2].outcome, SMTP_OUTCOME_RETRY);
    smtp_client_free(h.c);
}

/* 421 after the final dot: a definite answer, deferred, not in flight. */
static void test_421_after_dot_defers(void **state)
{
    (void)state;
    struct harness h;
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "one\n", 1, one);
    h_first_delivered(&h);
    assert_int_equal(h_in(&h, "421 4.3.2 shutting down\r\n"), SMTP_ACTION_CLOSE);
    assert_int_equal(h.rcpts[0][0].outcome, SMTP_OUTCOME_DEFERRED);
    assert_string_equal(h.rcpts[0][0].reason, "server_closing");
    assert_int_equal(h.msgs[0].data_in_flight, 0);
    smtp_client_free(h.c);
}

/* Issue 10 (8): 503 (bad sequence of commands) is the server's protocol
 * fault: temporary, reason bad_sequence, never a permanent rejection. */
static void test_503_is_deferred_bad_sequence(void **state)
{
    (void)state;
    struct harness h;
    const char *two[] = {"a@x.test", "b@x.test"};
    h_init(&h, SMTP_TLS_NONE, NULL);
    h_add(&h, "x\n", 2, two);
    h_add(&h, "y\n", 1, one);
    h_plain_session(&h, "250-mx\r\n250 PIPELINING\r\n");
    h_out(&h);
    h_in(&h, "250 ok\r\n503 5.5.1 bad sequence of commands\r\n250 ok\r\n354 go\r\n");
    h_out(&h);
    h_in(&h, "250 queued\r\n");
    assert_int_equal(h.rcpts[0][0].outcome, SMTP_OUTCOME_DEFERRED);
    assert_string_equal(h.rcpts[0][0].reason, "bad_sequence");
    assert_int_equal(h.rcpts[0][0].code, 503);
    assert_int_equal(h.rcpts[0][1].outcome, SMTP_OUTCOME_ACCEPTED);
    /* 503 to MAIL: every recipient deferred, RSET before the next. */
    h_out(&h);
    h_in(&h, "503 5.5.1 nested MAIL command\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n");
    assert_int_equal(h.rcpts[1][0].outcome, SMTP_OUTCOME_DEFERRED);
    assert_string_equal(h.rcpts[1][0].reason, "bad_sequence");
    smtp_client_free(h.c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_starttls_pipelined_delivery),
        cmocka_unit_test(test_required_without_starttls_never_sends_mail),
        cmocka_unit_test(test_opportunistic_falls_back_loudly),
        cmocka_unit_test(test_starttls_injection_aborts),
        cmocka_unit_test(test_starttls_454_required_defers),
        cmocka_unit_test(test_handshake_failure_reasons),
        cmocka_unit_test(test_ehlo_rejected_falls_back_to_helo_lockstep),
        cmocka_unit_test(test_all_rcpts_fail_but_data_354_sends_lone_dot),
        cmocka_unit_test(test_421_mid_pipeline_defers_and_closes),
        cmocka_unit_test(test_auth_only_inside_tls),
        cmocka_unit_test(test_auth_login_challenges),
        cmocka_unit_test(test_loss_after_data_is_in_flight),
        cmocka_unit_test(test_reused_connection_loss_is_retry),
        cmocka_unit_test(test_local_refusals_send_nothing),
        cmocka_unit_test(test_timeouts_name_the_phase),
        cmocka_unit_test(test_trickled_greeting_keeps_its_deadline),
        cmocka_unit_test(test_each_reply_starts_a_new_wait),
        cmocka_unit_test(test_garbage_reply_is_protocol_error),
        cmocka_unit_test(test_greeting_554_rejects),
        cmocka_unit_test(test_idle_session_waits_for_resume),
        cmocka_unit_test(test_idle_session_quits_when_nothing_left),
        cmocka_unit_test(test_extra_reply_after_dot_same_read),
        cmocka_unit_test(test_extra_reply_after_dot_later_read),
        cmocka_unit_test(test_extra_reply_while_idle),
        cmocka_unit_test(test_extra_reply_before_first_message_defers),
        cmocka_unit_test(test_421_to_mail_retries_unattempted),
        cmocka_unit_test(test_421_to_rcpt_defers_only_the_answered),
        cmocka_unit_test(test_421_after_dot_defers),
        cmocka_unit_test(test_503_is_deferred_bad_sequence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
