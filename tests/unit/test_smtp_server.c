/*
 * test_smtp_server - unit tests for engine/smtp_server
 *
 * The machine is fed plaintext exactly as a connection would feed it:
 * whole pipelined batches, one byte at a time, and message content split
 * at every possible offset, and its output is compared byte for byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/buf.h"
#include "engine/smtp_server.h"

struct fixture {
    struct smtp_server *s;
    struct smtp_server_config cfg;
    struct smtp_server_hooks hooks;
    buf_t in, out;
    int messages;
    int starttls_calls;
    int quit_calls;
    char from[256];
    char rcpts[1024]; /* accepted recipients of the last message, comma-separated */
    size_t size;
    buf_t data; /* content of the last message */
    enum smtp_server_verdict mail_verdict;
    enum smtp_server_verdict data_verdict;
    enum smtp_server_verdict message_verdict;
    const char *kept_data; /* the last message's data pointer (deferred: must stay valid) */
    const char *kept_from;
};

/* ---- hooks ---- */

static void test_rcpt(void *user, const char *rcpt, struct smtp_server_decision *d)
{
    (void)user;
    if (strncmp(rcpt, "bad@", 4) == 0) {
        d->reply = "550 5.1.1 User unknown";
    }
}

static void test_mail(void *user, const char *from, struct smtp_server_decision *d)
{
    struct fixture *f = user;
    (void)from;
    d->verdict = f->mail_verdict;
}

static void test_data(void *user, struct smtp_server_decision *d)
{
    struct fixture *f = user;
    d->verdict = f->data_verdict;
}

static void test_message(void *user, const struct smtp_server_message *m,
                         struct smtp_server_decision *d)
{
    struct fixture *f = user;
    f->messages++;
    snprintf(f->from, sizeof f->from, "%s", m->mail_from);
    f->rcpts[0] = '\0';
    for (size_t i = 0; i < m->nrcpts; i++) {
        size_t used = strlen(f->rcpts);
        snprintf(f->rcpts + used, sizeof f->rcpts - used, "%s%s", i ? "," : "", m->rcpts[i]);
    }
    f->size = m->size;
    buf_reset(&f->data);
    if (m->data) {
        buf_append(&f->data, m->data, m->size);
    }
    f->kept_data = m->data;
    f->kept_from = m->mail_from;
    d->verdict = f->message_verdict;
}

static int test_auth(void *user, const char *mechanism, const char *authzid, const char *username,
                     const char *password)
{
    (void)user;
    (void)mechanism;
    (void)authzid;
    return strcmp(username, "user") == 0 && strcmp(password, "pass") == 0;
}

static void test_starttls(void *user, buf_t *out)
{
    struct fixture *f = user;
    (void)out;
    f->starttls_calls++;
}

static void test_quit(void *user)
{
    struct fixture *f = user;
    f->quit_calls++;
}

/* ---- fixture ---- */

static struct fixture *fixture_new(const struct smtp_server_config *cfg)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->cfg = *cfg;
    f->hooks.mail = test_mail;
    f->hooks.rcpt = test_rcpt;
    f->hooks.data = test_data;
    f->hooks.message = test_message;
    f->hooks.auth = test_auth;
    f->hooks.starttls = test_starttls;
    f->hooks.quit = test_quit;
    f->s = smtp_server_new(&f->cfg, &f->hooks, f);
    assert_non_null(f->s);
    return f;
}

static int setup_default(void **state)
{
    struct smtp_server_config cfg = {
        .hostname = "sink.test", .offer_starttls = 1, .offer_auth = 1, .keep_data = 1};
    *state = fixture_new(&cfg);
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    smtp_server_free(f->s);
    buf_free(&f->in);
    buf_free(&f->out);
    buf_free(&f->data);
    free(f);
    return 0;
}

static enum smtp_server_action feed(struct fixture *f, const char *p, size_t n)
{
    buf_append(&f->in, p, n);
    return smtp_server_input(f->s, &f->in, &f->out);
}

static enum smtp_server_action feed_str(struct fixture *f, const char *s)
{
    return feed(f, s, strlen(s));
}

/* Take the output so far as a C string (into a static scratch buffer). */
static const char *output(struct fixture *f)
{
    static char text[16384];
    size_t n = buf_len(&f->out);
    assert_true(n < sizeof text);
    memcpy(text, buf_data(&f->out), n);
    text[n] = '\0';
    buf_reset(&f->out);
    return text;
}

static const char ehlo_plain[] = "250-sink.test\r\n"
                                 "250-PIPELINING\r\n"
                                 "250-SIZE 52428800\r\n"
                                 "250-8BITMIME\r\n"
                                 "250-SMTPUTF8\r\n"
                                 "250-STARTTLS\r\n"
                                 "250 ENHANCEDSTATUSCODES\r\n";

static const char ehlo_tls[] = "250-sink.test\r\n"
                               "250-PIPELINING\r\n"
                               "250-SIZE 52428800\r\n"
                               "250-8BITMIME\r\n"
                               "250-SMTPUTF8\r\n"
                               "250-AUTH PLAIN LOGIN\r\n"
                               "250 ENHANCEDSTATUSCODES\r\n";

static const char session[] = "EHLO client.test\r\n"
                              "MAIL FROM:<a@example.test> SIZE=100 BODY=8BITMIME\r\n"
                              "RCPT TO:<b@example.test>\r\n"
                              "RCPT TO:<bad@example.test>\r\n"
                              "RCPT TO:<c@example.test>\r\n"
                              "DATA\r\n"
                              "Subject: hi\r\n\r\nhello\r\n..dot\r\n.\r\n"
                              "MAIL FROM:<> SMTPUTF8\r\n"
                              "RCPT TO:<d@example.test>\r\n"
                              "DATA\r\n"
                              ".\r\n"
                              "QUIT\r\n";

static const char session_replies[] = "250 2.1.0 Ok\r\n"
                                      "250 2.1.5 Ok\r\n"
                                      "550 5.1.1 User unknown\r\n"
                                      "250 2.1.5 Ok\r\n"
                                      "354 End data with <CR><LF>.<CR><LF>\r\n"
                                      "250 2.0.0 Ok: queued\r\n"
                                      "250 2.1.0 Ok\r\n"
                                      "250 2.1.5 Ok\r\n"
                                      "354 End data with <CR><LF>.<CR><LF>\r\n"
                                      "250 2.0.0 Ok: queued\r\n"
                                      "221 2.0.0 Bye\r\n";

static void expect_session(struct fixture *f)
{
    const char *got = output(f);
    assert_memory_equal(got, ehlo_plain, strlen(ehlo_plain));
    assert_string_equal(got + strlen(ehlo_plain), session_replies);
    assert_int_equal(f->messages, 2);
    assert_string_equal(f->from, "");
    assert_string_equal(f->rcpts, "d@example.test");
    assert_int_equal(f->size, 0);
    assert_int_equal(f->quit_calls, 1);
}

/* ---- tests ---- */

static void test_greeting(void **state)
{
    struct fixture *f = *state;
    smtp_server_greeting(f->s, &f->out);
    assert_string_equal(output(f), "220 sink.test ESMTP ringmail\r\n");
}

static void test_pipelined_batch(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(feed_str(f, session), SMTP_SERVER_CLOSE);
    expect_session(f);
    assert_int_equal(buf_len(&f->in), 0);
}

static void test_first_message_content(void **state)
{
    struct fixture *f = *state;
    const char *upto = strstr(session, "MAIL FROM:<> ");
    assert_int_equal(feed(f, session, (size_t)(upto - session)), SMTP_SERVER_WAIT);
    assert_int_equal(f->messages, 1);
    assert_string_equal(f->from, "a@example.test");
    assert_string_equal(f->rcpts, "b@example.test,c@example.test");
    assert_int_equal(f->data.len - f->data.off, f->size);
    assert_memory_equal(buf_data(&f->data), "Subject: hi\r\n\r\nhello\r\n.dot\r\n", f->size);
}

static void test_byte_by_byte(void **state)
{
    struct fixture *f = *state;
    enum smtp_server_action a = SMTP_SERVER_WAIT;
    for (size_t i = 0; i < strlen(session); i++) {
        assert_int_equal(a, SMTP_SERVER_WAIT);
        a = feed(f, session + i, 1);
        assert_true(buf_len(&f->in) <= 1000);
    }
    assert_int_equal(a, SMTP_SERVER_CLOSE);
    expect_session(f);
}

static void test_starttls_reset(void **state)
{
    struct fixture *f = *state;
    feed_str(f, "EHLO c\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\n");
    const char *got = output(f);
    assert_memory_equal(got, ehlo_plain, strlen(ehlo_plain));
    assert_string_equal(got + strlen(ehlo_plain),
                        "503 5.5.1 Error: authentication not enabled\r\n");

    /* A command pipelined after STARTTLS stays unread: the owner discards it. */
    assert_int_equal(feed_str(f, "STARTTLS\r\nMAIL FROM:<evil@x>\r\n"), SMTP_SERVER_STARTTLS);
    assert_string_equal(output(f), "220 2.0.0 Ready to start TLS\r\n");
    assert_int_equal(f->starttls_calls, 1);
    assert_int_equal(buf_len(&f->in), strlen("MAIL FROM:<evil@x>\r\n"));
    buf_reset(&f->in);
    assert_true(smtp_server_tls_active(f->s));

    /* EHLO is forgotten. */
    feed_str(f, "MAIL FROM:<a@x>\r\n");
    assert_string_equal(output(f), "503 5.5.1 Error: send HELO/EHLO first\r\n");
    feed_str(f, "EHLO c\r\n");
    assert_string_equal(output(f), ehlo_tls);
    feed_str(f, "STARTTLS\r\n");
    assert_string_equal(output(f), "554 5.5.1 Error: TLS already active\r\n");
}

static void test_starttls_not_offered(void **state)
{
    struct smtp_server_config cfg = {.hostname = "h"};
    struct fixture *f = fixture_new(&cfg);
    *state = f;
    assert_int_equal(feed_str(f, "EHLO c\r\nSTARTTLS\r\n"), SMTP_SERVER_WAIT);
    const char *got = strstr(output(f), "250 ENHANCEDSTATUSCODES\r\n");
    assert_non_null(got);
    assert_string_equal(got + strlen("250 ENHANCEDSTATUSCODES\r\n"),
                        "502 5.5.1 Error: command not implemented\r\n");
}

static void test_terminator_split(void **state)
{
    struct fixture *f = *state;
    static const char content[] = "a\r\n..b\r\n.\rx\r\n...\r\nc\n.\nd\r.\r\r\n.\r\n";
    static const char expect[] = "a\r\n.b\r\n\rx\r\n..\r\nc\n.\nd\r.\r\r\n";
    for (size_t cut = 0; cut < strlen(content); cut++) {
        for (size_t cut2 = cut; cut2 < strlen(content); cut2++) {
            f->messages = 0;
            feed_str(f, "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n");
            buf_reset(&f->out);
            feed(f, content, cut);
            feed(f, content + cut, cut2 - cut);
            assert_int_equal(f->messages, 0);
            assert_int_equal(buf_len(&f->out), 0);
            feed(f, content + cut2, strlen(content) - cut2);
            assert_int_equal(f->messages, 1);
            assert_int_equal(f->size, strlen(expect));
            assert_memory_equal(buf_data(&f->data), expect, strlen(expect));
            assert_string_equal(output(f), "250 2.0.0 Ok: queued\r\n");
            assert_int_equal(buf_len(&f->in), 0);
        }
    }
}

static void test_dot_unstuffing(void **state)
{
    struct fixture *f = *state;
    feed_str(f, "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"
                "..leading\r\n....\r\nmid.dle\r\n. .\r\n.\r\n");
    static const char expect[] = ".leading\r\n...\r\nmid.dle\r\n .\r\n";
    assert_int_equal(f->messages, 1);
    assert_int_equal(f->size, strlen(expect));
    assert_memory_equal(buf_data(&f->data), expect, strlen(expect));
}

static void test_size_without_keep(void **state)
{
    struct smtp_server_config cfg = {.hostname = "h"};
    struct fixture *f = fixture_new(&cfg);
    *state = f;
    feed_str(f, "HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n..x\r\nyz\r\n.\r\n");
    assert_int_equal(f->messages, 1);
    assert_int_equal(f->size, strlen(".x\r\nyz\r\n"));
    assert_int_equal(buf_len(&f->data), 0);
}

static void test_bad_sequence(void **state)
{
    struct fixture *f = *state;
    feed_str(f, "MAIL FROM:<a@x>\r\n"
                "EHLO c\r\n");
    assert_string_equal(output(f) + 0, "503 5.5.1 Error: send HELO/EHLO first\r\n"
                                       "250-sink.test\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n"
                                       "250-8BITMIME\r\n250-SMTPUTF8\r\n250-STARTTLS\r\n"
                                       "250 ENHANCEDSTATUSCODES\r\n");
    feed_str(f, "RCPT TO:<b@y>\r\n"
                "DATA\r\n"
                "MAIL FROM:<a@x>\r\n"
                "MAIL FROM:<a@x>\r\n"
                "RCPT TO:<bad@y>\r\n"
                "DATA\r\n"
                "RSET\r\n"
                "DATA\r\n"
                "NOOP\r\n"
                "VRFY someone\r\n"
                "HELP\r\n");
    assert_string_equal(output(f), "503 5.5.1 Error: need MAIL command\r\n"
                                   "503 5.5.1 Error: need RCPT command\r\n"
                                   "250 2.1.0 Ok\r\n"
                                   "503 5.5.1 Error: nested MAIL command\r\n"
                                   "550 5.1.1 User unknown\r\n"
                                   "554 5.5.1 Error: no valid recipients\r\n"
                                   "250 2.0.0 Ok\r\n"
                                   "503 5.5.1 Error: need RCPT command\r\n"
                                   "250 2.0.0 Ok\r\n"
                                   "252 2.0.0 Cannot VRFY user, but will accept message\r\n"
                                   "500 5.5.2 Error: command not recognized\r\n");
    assert_int_equal(f->messages, 0);
}

static void test_syntax(void **state)
{
    struct fixture *f = *state;
    feed_str(f, "EHLO\r\nEHLO c\r\n");
    output(f);
    feed_str(f, "MAIL TO:<a@x>\r\n"
                "MAIL FROM:<a@x> FOO=1\r\n"
                "MAIL FROM:<a@x> SIZE=99999999999\r\n"
                "MAIL FROM:<a@x> SIZE=12x\r\n"
                "MAIL FROM:<a b@x>\r\n"
                "mail from: <a@x>\r\n"
                "RCPT TO:<>\r\n"
                "RCPT TO:<b@y> NOTIFY=NEVER\r\n"
                "rcpt to:b@y\r\n"
                "DATA now\r\n");
    assert_string_equal(output(f), "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
                                   "555 5.5.4 Unsupported option\r\n"
                                   "552 5.3.4 Message size exceeds fixed limit\r\n"
                                   "501 5.5.4 Bad SIZE parameter\r\n"
                                   "501 5.5.4 Syntax: MAIL FROM:<address>\r\n"
                                   "250 2.1.0 Ok\r\n"
                                   "501 5.1.3 Bad recipient address syntax\r\n"
                                   "555 5.5.4 Unsupported option\r\n"
                                   "250 2.1.5 Ok\r\n"
                                   "501 5.5.4 Syntax: DATA\r\n");
}

static void test_long_line(void **state)
{
    struct fixture *f = *state;
    char line[3000];
    memset(line, 'A', sizeof line);
    feed_str(f, "EHLO c\r\n");
    output(f);
    /* In one piece, then streamed: the buffer never holds the whole line. */
    feed(f, line, sizeof line);
    assert_true(buf_len(&f->in) <= 1000);
    feed_str(f, "\r\nNOOP\r\n");
    assert_string_equal(output(f), "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
    for (size_t i = 0; i < sizeof line; i++) {
        feed(f, line + i, 1);
        assert_true(buf_len(&f->in) <= 1001);
    }
    feed_str(f, "\r\nNOOP\r\n");
    assert_string_equal(output(f), "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
    /* Exactly at the limit is fine: 998 characters plus CRLF. */
    char ok[1000] = "NOOP ";
    memset(ok + 5, 'x', 993);
    memcpy(ok + 998, "\r\n", 2);
    feed(f, ok, sizeof ok);
    assert_string_equal(output(f), "250 2.0.0 Ok\r\n");
}

static void test_too_many_errors(void **state)
{
    struct fixture *f = *state;
    enum smtp_server_action a = SMTP_SERVER_WAIT;
    for (int i = 0; i < SMTP_SERVER_MAX_ERRORS && a == SMTP_SERVER_WAIT; i++) {
        a = feed_str(f, "BOGUS\r\n");
    }
    assert_int_equal(a, SMTP_SERVER_CLOSE);
    assert_non_null(strstr(output(f), "421 4.7.0 sink.test Error: too many errors\r\n"));
    assert_int_equal(feed_str(f, "NOOP\r\n"), SMTP_SERVER_CLOSE);
    assert_int_equal(buf_len(&f->out), 0);
}

static void start_tls(struct fixture *f)
{
    assert_int_equal(feed_str(f, "EHLO c\r\nSTARTTLS\r\n"), SMTP_SERVER_STARTTLS);
    feed_str(f, "EHLO c\r\n");
    output(f);
}

static void test_auth_plain(void **state)
{
    struct fixture *f = *state;
    start_tls(f);
    feed_str(f, "AUTH PLAIN AHVzZXIAd3Jvbmc=\r\n"); /* \0user\0wrong */
    assert_string_equal(output(f), "535 5.7.8 Error: authentication failed\r\n");
    feed_str(f, "AUTH PLAIN not-base64!\r\n");
    assert_string_equal(output(f), "501 5.5.2 Error: invalid base64 data\r\n");
    feed_str(f, "AUTH PLAIN dXNlcg==\r\n"); /* "user": no NULs */
    assert_string_equal(output(f), "501 5.5.2 Error: invalid PLAIN response\r\n");
    feed_str(f, "AUTH PLAIN\r\n");
    assert_string_equal(output(f), "334 \r\n");
    feed_str(f, "*\r\n");
    assert_string_equal(output(f), "501 5.7.0 Authentication aborted\r\n");
    feed_str(f, "AUTH PLAIN\r\nAHVzZXIAcGFzcw==\r\n");
    assert_string_equal(output(f), "334 \r\n235 2.7.0 Authentication successful\r\n");
    feed_str(f, "AUTH PLAIN AHVzZXIAcGFzcw==\r\nEHLO c\r\n");
    const char *got = output(f);
    assert_non_null(strstr(got, "503 5.5.1 Error: already authenticated\r\n"));
    assert_null(strstr(got, "AUTH PLAIN LOGIN"));
}

static void test_auth_login(void **state)
{
    struct fixture *f = *state;
    start_tls(f);
    feed_str(f, "AUTH LOGIN\r\n");
    assert_string_equal(output(f), "334 VXNlcm5hbWU6\r\n");
    feed_str(f, "dXNlcg==\r\n");
    assert_string_equal(output(f), "334 UGFzc3dvcmQ6\r\n");
    feed_str(f, "d3Jvbmc=\r\n");
    assert_string_equal(output(f), "535 5.7.8 Error: authentication failed\r\n");
    /* Initial response carries the user name; byte by byte for good measure. */
    static const char login[] = "AUTH LOGIN dXNlcg==\r\ncGFzcw==\r\nAUTH CRAM-MD5\r\n";
    for (size_t i = 0; i < strlen(login); i++) {
        feed(f, login + i, 1);
    }
    assert_string_equal(output(f), "334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n"
                                   "503 5.5.1 Error: already authenticated\r\n");
}

static void test_auth_required(void **state)
{
    struct smtp_server_config cfg = {
        .hostname = "h", .offer_auth = 1, .auth_plaintext = 1, .auth_required = 1, .max_line = 200};
    struct fixture *f = fixture_new(&cfg);
    *state = f;
    feed_str(f, "EHLO c\r\n");
    assert_non_null(strstr(output(f), "250-AUTH PLAIN LOGIN\r\n"));
    feed_str(f,
             "MAIL FROM:<a@x>\r\nAUTH MECH\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\nMAIL FROM:<a@x>\r\n");
    assert_string_equal(output(f), "530 5.7.0 Authentication required\r\n"
                                   "504 5.5.4 Unsupported authentication mechanism\r\n"
                                   "235 2.7.0 Authentication successful\r\n"
                                   "250 2.1.0 Ok\r\n");
}

static void test_stall(void **state)
{
    struct fixture *f = *state;
    f->mail_verdict = SMTP_SERVER_STALL;
    assert_int_equal(feed_str(f, "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n"),
                     SMTP_SERVER_WAIT);
    assert_string_equal(output(f), ehlo_plain);
    assert_int_equal(feed_str(f, "QUIT\r\n"), SMTP_SERVER_WAIT);
    assert_int_equal(buf_len(&f->out), 0);
}

static void test_drop_in_data(void **state)
{
    struct fixture *f = *state;
    f->data_verdict = SMTP_SERVER_DROP;
    assert_int_equal(feed_str(f, "EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"),
                     SMTP_SERVER_WAIT);
    assert_non_null(strstr(output(f), "354 "));
    assert_int_equal(feed_str(f, "Subject: x\r\n"), SMTP_SERVER_CLOSE);
    assert_int_equal(buf_len(&f->out), 0);
    assert_int_equal(f->messages, 0);
}

static void test_refuse(void **state)
{
    struct fixture *f = *state;
    smtp_server_refuse(f->s, &f->out, "421 4.7.0 Too many connections");
    assert_string_equal(output(f), "421 4.7.0 Too many connections\r\n");
    assert_int_equal(feed_str(f, "EHLO c\r\n"), SMTP_SERVER_CLOSE);
    assert_int_equal(buf_len(&f->out), 0);
}

static void test_bare_lf_and_nul(void **state)
{
    struct fixture *f = *state;
    feed_str(f, "EHLO c\nNOOP\n");
    assert_non_null(strstr(output(f), "250 ENHANCEDSTATUSCODES\r\n250 2.0.0 Ok\r\n"));
    feed(f, "NO\0OP\r\n", 7);
    assert_string_equal(output(f), "500 5.5.2 Error: bad character in command\r\n");
}

/* The message hook defers: nothing is answered and nothing more is read
 * until smtp_server_answer; the message stays valid meanwhile; what was
 * pipelined after it is processed once the owner feeds the machine again. */
static void test_defer_pipelined(void **state)
{
    struct fixture *f = *state;
    f->message_verdict = SMTP_SERVER_DEFER;
    assert_int_equal(feed_str(f, "EHLO c\r\n"), SMTP_SERVER_WAIT);
    output(f);
    assert_int_equal(smtp_server_deferred(f->s), 0);
    assert_int_equal(feed_str(f, "MAIL FROM:<>\r\nRCPT TO:<b-1@r.test>\r\nDATA\r\n"
                                 "Subject: one\r\n\r\nfirst\r\n.\r\n"
                                 "MAIL FROM:<x@y>\r\nRCPT TO:<b-2@r.test>\r\nDATA\r\n"
                                 "Subject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n"),
                     SMTP_SERVER_WAIT);
    assert_string_equal(output(f), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                                   "354 End data with <CR><LF>.<CR><LF>\r\n");
    assert_int_equal(f->messages, 1);
    assert_int_equal(smtp_server_deferred(f->s), 1);
    /* More input while deferred: kept, not read; the message is untouched. */
    assert_int_equal(feed_str(f, "NOOP\r\n"), SMTP_SERVER_WAIT);
    assert_int_equal(buf_len(&f->out), 0);
    assert_true(buf_len(&f->in) > 0);
    assert_memory_equal(f->kept_data, "Subject: one\r\n\r\nfirst\r\n", 23);
    assert_string_equal(f->kept_from, "");
    smtp_server_answer(f->s, &f->out, "250 2.0.0 Ok: recorded");
    assert_string_equal(output(f), "250 2.0.0 Ok: recorded\r\n");
    assert_int_equal(smtp_server_deferred(f->s), 0);
    /* The second message, answered after its own deferral. */
    assert_int_equal(smtp_server_input(f->s, &f->in, &f->out), SMTP_SERVER_WAIT);
    assert_string_equal(output(f), "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                                   "354 End data with <CR><LF>.<CR><LF>\r\n");
    assert_int_equal(f->messages, 2);
    assert_string_equal(f->from, "x@y");
    assert_string_equal(f->rcpts, "b-2@r.test");
    assert_memory_equal(f->kept_data, "Subject: two\r\n\r\nsecond\r\n", 24);
    smtp_server_answer(f->s, &f->out, "451 4.3.0 Try again later");
    assert_int_equal(smtp_server_input(f->s, &f->in, &f->out), SMTP_SERVER_CLOSE);
    assert_string_equal(output(f), "451 4.3.0 Try again later\r\n221 2.0.0 Bye\r\n");
}

/* After a deferred 4xx the session goes on: a new transaction works. */
static void test_defer_then_new_transaction(void **state)
{
    struct fixture *f = *state;
    f->message_verdict = SMTP_SERVER_DEFER;
    feed_str(f, "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@r.test>\r\nDATA\r\nx\r\n.\r\n");
    output(f);
    smtp_server_answer(f->s, &f->out, "451 4.3.0 Try again later");
    assert_string_equal(output(f), "451 4.3.0 Try again later\r\n");
    /* RCPT without MAIL: the transaction is over. */
    f->message_verdict = SMTP_SERVER_ANSWER;
    assert_int_equal(feed_str(f, "RCPT TO:<a@r.test>\r\nMAIL FROM:<>\r\nRCPT TO:<a@r.test>\r\n"
                                 "DATA\r\ny\r\n.\r\n"),
                     SMTP_SERVER_WAIT);
    assert_string_equal(output(f), "503 5.5.1 Error: need MAIL command\r\n250 2.1.0 Ok\r\n"
                                   "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                                   "250 2.0.0 Ok: queued\r\n");
    assert_int_equal(f->messages, 2);
}

/* A big deferred message: its storage is given back at the answer, and the
 * next message's content is whole. */
static void test_defer_big_then_small(void **state)
{
    struct fixture *f = *state;
    f->message_verdict = SMTP_SERVER_DEFER;
    feed_str(f, "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@r.test>\r\nDATA\r\n");
    static char line[1002];
    memset(line, 'x', 998);
    memcpy(line + 998, "\r\n", 3);
    for (int i = 0; i < 300; i++) {
        feed_str(f, line);
    }
    feed_str(f, ".\r\nMAIL FROM:<>\r\nRCPT TO:<a@r.test>\r\nDATA\r\nsmall\r\n.\r\n");
    assert_int_equal(f->size, 300 * 1000);
    output(f);
    smtp_server_answer(f->s, &f->out, "250 2.0.0 Ok: recorded");
    assert_int_equal(smtp_server_input(f->s, &f->in, &f->out), SMTP_SERVER_WAIT);
    assert_int_equal(f->messages, 2);
    assert_int_equal(f->size, 7);
    assert_memory_equal(f->kept_data, "small\r\n", 7);
    smtp_server_answer(f->s, &f->out, "250 2.0.0 Ok: recorded");
    assert_string_equal(output(f), "250 2.0.0 Ok: recorded\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                                   "354 End data with <CR><LF>.<CR><LF>\r\n"
                                   "250 2.0.0 Ok: recorded\r\n");
}

/* Answering with nothing deferred, or after a refusal, does nothing. */
static void test_defer_answer_ignored(void **state)
{
    struct fixture *f = *state;
    smtp_server_answer(f->s, &f->out, "250 2.0.0 Ok");
    assert_int_equal(buf_len(&f->out), 0);
    f->message_verdict = SMTP_SERVER_DEFER;
    feed_str(f, "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@r.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n");
    output(f);
    smtp_server_refuse(f->s, &f->out, "421 4.3.2 Shutting down");
    smtp_server_answer(f->s, &f->out, "250 2.0.0 Ok");
    assert_string_equal(output(f), "421 4.3.2 Shutting down\r\n");
    assert_int_equal(smtp_server_deferred(f->s), 0);
    assert_int_equal(smtp_server_input(f->s, &f->in, &f->out), SMTP_SERVER_CLOSE);
    assert_int_equal(buf_len(&f->out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_greeting, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_batch, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_first_message_content, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_byte_by_byte, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_starttls_reset, setup_default, teardown),
        cmocka_unit_test_teardown(test_starttls_not_offered, teardown),
        cmocka_unit_test_setup_teardown(test_terminator_split, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_dot_unstuffing, setup_default, teardown),
        cmocka_unit_test_teardown(test_size_without_keep, teardown),
        cmocka_unit_test_setup_teardown(test_bad_sequence, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_syntax, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_long_line, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_too_many_errors, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_auth_plain, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_auth_login, setup_default, teardown),
        cmocka_unit_test_teardown(test_auth_required, teardown),
        cmocka_unit_test_setup_teardown(test_stall, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_drop_in_data, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_refuse, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_bare_lf_and_nul, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_defer_pipelined, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_defer_then_new_transaction, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_defer_big_then_small, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_defer_answer_ignored, setup_default, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
