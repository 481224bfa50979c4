/*
 * test_client_conn - one outbound connection end to end on a real ring:
 * engine/client_conn with engine/loop and engine/tls against a scripted
 * SMTP server on a loopback TCP pair (client_conn opens its own socket, so
 * a socketpair cannot stand in). The server runs in a thread with blocking
 * I/O: plain bytes before STARTTLS, a BoringSSL server SSL object after.
 * It records what the client sent in the clear and inside TLS, so the
 * tests can say not only how a session ended but what went over the wire.
 *
 * Cases: STARTTLS and a transaction over TLS; STARTTLS stripped under
 * `required` (tls_not_offered, no envelope in the clear); data after the
 * 220 to STARTTLS (starttls_injection, no handshake); a server that goes
 * silent after the final dot (timeout_data_done, within its deadline);
 * and TLS session resumption on a second connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "engine/client_conn.h"
#include "engine/clock.h"
#include "engine/tls_session_cache.h"

#include "unit_cert.h"

#define SESSION_KEY "unit.test:25:required"

/* Shared by every test: files, contexts and the client's session cache. */
struct fixture {
    char cert_path[64], key_path[64];
    SSL_CTX *server_ctx;             /* the scripted server's */
    struct tls_ctx *client_ctx;      /* policy required: the chain is not checked */
    struct tls_session_cache *cache; /* the client's; a fresh one per test */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f || unit_write_temp(f->cert_path, "/tmp/ringmail-ut-cert.XXXXXX", unit_cert) < 0 ||
        unit_write_temp(f->key_path, "/tmp/ringmail-ut-key.XXXXXX", unit_key) < 0) {
        return -1;
    }
    f->server_ctx = SSL_CTX_new(TLS_method());
    if (!f->server_ctx || SSL_CTX_use_certificate_chain_file(f->server_ctx, f->cert_path) != 1 ||
        SSL_CTX_use_PrivateKey_file(f->server_ctx, f->key_path, SSL_FILETYPE_PEM) != 1) {
        return -1;
    }
    char err[256];
    struct tls_client_options co = {0};
    f->client_ctx = tls_client_ctx_new(&co, err, sizeof err);
    if (!f->client_ctx) {
        return -1;
    }
    client_conn_tls_setup(f->client_ctx);
    *state = f;
    return 0;
}

/* Each test starts with no session to resume. */
static int fresh_cache(void **state)
{
    struct fixture *f = *state;
    f->cache = tls_session_cache_new();
    return f->cache ? 0 : -1;
}

static int drop_cache(void **state)
{
    struct fixture *f = *state;
    tls_session_cache_free(f->cache);
    f->cache = NULL;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    unlink(f->cert_path);
    unlink(f->key_path);
    SSL_CTX_free(f->server_ctx);
    tls_ctx_free(f->client_ctx);
    free(f);
    client_conn_thread_done();
    return 0;
}

/* ---- the scripted server (its own thread, blocking I/O) ---- */

struct server;
typedef void (*server_script)(struct server *s);

struct server {
    int listen_fd, fd;
    SSL_CTX *ctx;
    SSL *ssl; /* after STARTTLS */
    server_script script;
    const char *payload; /* what script_starttls_injection sends in one packet */
    char in[8192];       /* received, not yet taken as lines */
    size_t in_len;
    char clear[8192]; /* everything received before TLS */
    size_t clear_len;
    char tls[8192]; /* everything received inside TLS */
    size_t tls_len;
    int handshake_ok; /* SSL_accept succeeded */
    int eof_clean;    /* the client closed without sending another byte */
    struct sockaddr_in addr;
    pthread_t thread;
};

static void server_send(struct server *s, const char *text)
{
    size_t n = strlen(text);
    if (s->ssl) {
        SSL_write(s->ssl, text, (int)n);
    } else if (send(s->fd, text, n, MSG_NOSIGNAL) != (ssize_t)n) {
        fprintf(stderr, "server: short send\n");
    }
}

/* One read into s->in; the bytes are also kept in the clear or TLS log. */
static int server_fill(struct server *s)
{
    if (s->in_len == sizeof s->in) {
        return -1;
    }
    int n = s->ssl ? SSL_read(s->ssl, s->in + s->in_len, (int)(sizeof s->in - s->in_len))
                   : (int)recv(s->fd, s->in + s->in_len, sizeof s->in - s->in_len, 0);
    if (n <= 0) {
        return -1;
    }
    char *log = s->ssl ? s->tls : s->clear;
    size_t *log_len = s->ssl ? &s->tls_len : &s->clear_len;
    size_t room = 8192 - *log_len;
    size_t k = (size_t)n < room ? (size_t)n : room;
    memcpy(log + *log_len, s->in + s->in_len, k);
    *log_len += k;
    s->in_len += (size_t)n;
    return 0;
}

/* Take one CRLF line (without it) into line; -1 on EOF or timeout. */
static int server_line(struct server *s, char *line, size_t cap)
{
    for (;;) {
        char *end = memmem(s->in, s->in_len, "\r\n", 2);
        if (end) {
            size_t n = (size_t)(end - s->in);
            snprintf(line, cap, "%.*s", (int)n, s->in);
            memmove(s->in, end + 2, s->in_len - n - 2);
            s->in_len -= n + 2;
            return 0;
        }
        if (server_fill(s) < 0) {
            return -1;
        }
    }
}

/* Read a line and check that it starts with prefix (reported, not asserted:
 * cmocka's asserts belong to the test thread). */
static int server_expect(struct server *s, const char *prefix)
{
    char line[1024];
    if (server_line(s, line, sizeof line) < 0) {
        fprintf(stderr, "server: EOF waiting for %s\n", prefix);
        return -1;
    }
    if (strncmp(line, prefix, strlen(prefix)) != 0) {
        fprintf(stderr, "server: got \"%s\", expected %s\n", line, prefix);
        return -1;
    }
    return 0;
}

/* Wait until the client closes: clean when nothing more came from it. */
static void server_wait_eof(struct server *s)
{
    char b[512];
    size_t got = s->in_len;
    for (;;) {
        ssize_t n = recv(s->fd, b, sizeof b, 0);
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    s->eof_clean = got == 0;
}

static int server_starttls(struct server *s)
{
    s->ssl = SSL_new(s->ctx);
    SSL_set_fd(s->ssl, s->fd);
    s->handshake_ok = SSL_accept(s->ssl) == 1;
    return s->handshake_ok ? 0 : -1;
}

/* Greeting and EHLO; ehlo is the whole multi-line reply. */
static int server_hello(struct server *s, const char *ehlo)
{
    server_send(s, "220 unit.test ESMTP\r\n");
    if (server_expect(s, "EHLO ") < 0) {
        return -1;
    }
    server_send(s, ehlo);
    return 0;
}

/* One pipelined transaction, then QUIT. */
static int server_transaction(struct server *s)
{
    if (server_expect(s, "MAIL FROM:<a@unit.test>") < 0 ||
        server_expect(s, "RCPT TO:<b@unit.test>") < 0 || server_expect(s, "DATA") < 0) {
        return -1;
    }
    server_send(s, "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n");
    char line[1024];
    do {
        if (server_line(s, line, sizeof line) < 0) {
            return -1;
        }
    } while (strcmp(line, ".") != 0);
    server_send(s, "250 2.0.0 queued as X1\r\n");
    if (server_expect(s, "QUIT") < 0) {
        return -1;
    }
    server_send(s, "221 2.0.0 bye\r\n");
    return 0;
}

static void script_starttls_ok(struct server *s)
{
    if (server_hello(s, "250-unit.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n") < 0 ||
        server_expect(s, "STARTTLS") < 0) {
        return;
    }
    server_send(s, "220 2.0.0 ready\r\n");
    if (server_starttls(s) < 0 || server_expect(s, "EHLO ") < 0) {
        return;
    }
    server_send(s, "250-unit.test\r\n250 PIPELINING\r\n");
    server_transaction(s);
}

static void script_starttls_stripped(struct server *s)
{
    /* What a man in the middle leaves of the EHLO reply. */
    if (server_hello(s, "250-unit.test\r\n250 PIPELINING\r\n") < 0) {
        return;
    }
    if (server_expect(s, "QUIT") == 0) {
        server_send(s, "221 2.0.0 bye\r\n");
    }
}

static void script_starttls_injection(struct server *s)
{
    if (server_hello(s, "250-unit.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n") < 0 ||
        server_expect(s, "STARTTLS") < 0) {
        return;
    }
    server_send(s, s->payload);
}

static void script_silent_after_dot(struct server *s)
{
    if (server_hello(s, "250-unit.test\r\n250 PIPELINING\r\n") < 0 ||
        server_expect(s, "MAIL FROM:") < 0 || server_expect(s, "RCPT TO:") < 0 ||
        server_expect(s, "DATA") < 0) {
        return;
    }
    server_send(s, "250 ok\r\n250 ok\r\n354 go ahead\r\n");
    char line[1024];
    do {
        if (server_line(s, line, sizeof line) < 0) {
            return;
        }
    } while (strcmp(line, ".") != 0);
    /* ...and no reply: the client's deadline must end it. */
}

static void *server_main(void *arg)
{
    struct server *s = arg;
    s->fd = accept(s->listen_fd, NULL, NULL);
    if (s->fd < 0) {
        return NULL;
    }
    /* A broken client must fail the test, not hang it. */
    struct timeval tv = {.tv_sec = 5};
    setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    s->script(s);
    server_wait_eof(s);
    if (s->ssl) {
        SSL_free(s->ssl);
    }
    close(s->fd);
    return NULL;
}

static void server_start(struct server *s, SSL_CTX *ctx, server_script script, const char *payload)
{
    memset(s, 0, sizeof *s);
    s->ctx = ctx;
    s->script = script;
    s->payload = payload;
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s->listen_fd >= 0);
    s->addr.sin_family = AF_INET;
    s->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&s->addr, sizeof s->addr), 0);
    socklen_t len = sizeof s->addr;
    assert_int_equal(getsockname(s->listen_fd, (struct sockaddr *)&s->addr, &len), 0);
    assert_int_equal(listen(s->listen_fd, 4), 0);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_join(struct server *s)
{
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
    s->clear[s->clear_len < sizeof s->clear ? s->clear_len : sizeof s->clear - 1] = '\0';
    s->tls[s->tls_len < sizeof s->tls ? s->tls_len : sizeof s->tls - 1] = '\0';
}

/* ---- the client side: one client_conn on a ring ---- */

struct client {
    struct loop *loop;
    struct client_conn_config cfg;
    struct smtp_rcpt rcpt;
    struct smtp_message msg;
    int messages_taken;
    int messages_done;
    int session_failed;
    enum smtp_outcome failed_outcome;
    char failed_reason[SMTP_REASON_MAX];
    int closed;
    int tls_up;
    struct tls_info tls;
    char end_reason[SMTP_REASON_MAX];
};

static struct smtp_message *client_next(void *owner)
{
    struct client *c = owner;
    if (c->messages_taken > 0) {
        return NULL;
    }
    c->messages_taken++;
    return &c->msg;
}

static void client_done(void *owner, struct smtp_message *msg)
{
    struct client *c = owner;
    assert_ptr_equal(msg, &c->msg);
    c->messages_done++;
}

static void client_failed(void *owner, enum smtp_outcome outcome, const char *reason,
                          const struct smtp_reply *reply, const char *text)
{
    (void)reply;
    (void)text;
    struct client *c = owner;
    c->session_failed++;
    c->failed_outcome = outcome;
    snprintf(c->failed_reason, sizeof c->failed_reason, "%s", reason);
}

static const struct smtp_client_ops client_ops = {
    .next_message = client_next,
    .message_done = client_done,
    .session_failed = client_failed,
};

/* The connection frees itself after this: read what the test needs now. */
static void client_closed(void *owner, struct client_conn *conn)
{
    struct client *c = owner;
    c->closed++;
    const struct tls_info *info = client_conn_tls(conn);
    c->tls_up = info != NULL;
    if (info) {
        c->tls = *info;
    }
    const char *why = smtp_client_end_reason(client_conn_smtp(conn));
    snprintf(c->end_reason, sizeof c->end_reason, "%s", why ? why : "");
    loop_stop_when_idle(c->loop);
}

static void client_init(struct client *c, const struct fixture *f, const struct server *s,
                        enum smtp_tls_policy policy)
{
    memset(c, 0, sizeof *c);
    memcpy(&c->cfg.addr, &s->addr, sizeof s->addr);
    c->cfg.addrlen = sizeof s->addr;
    c->cfg.server_name = "unit.test";
    c->cfg.tls_ctx = policy == SMTP_TLS_NONE ? NULL : f->client_ctx;
    c->cfg.session_cache = f->cache;
    c->cfg.session_key = SESSION_KEY;
    c->cfg.smtp.helo_name = "client.unit.test";
    c->cfg.smtp.tls_policy = policy;
    c->cfg.smtp.timeout_greeting_ms = 5000;
    c->cfg.smtp.timeout_command_ms = 5000;
    c->cfg.smtp.timeout_data_ms = 5000;
    c->cfg.smtp.timeout_data_done_ms = 5000;
    c->cfg.timeout_connect_ms = 5000;
    c->cfg.timeout_tls_ms = 5000;
    c->rcpt.address = "b@unit.test";
    c->msg.mail_from = "a@unit.test";
    c->msg.rcpts = &c->rcpt;
    c->msg.nrcpts = 1;
    c->msg.data = "Subject: unit\r\n\r\nhello\r\n";
    c->msg.len = strlen(c->msg.data);
}

/* Run the connection until it has closed and freed itself. */
static void client_run(struct client *c)
{
    c->loop = loop_new(64);
    assert_non_null(c->loop);
    struct client_conn *conn = client_conn_new(c->loop, &c->cfg, &client_ops, client_closed, c);
    assert_non_null(conn);
    client_conn_start(conn);
    assert_int_equal(loop_run(c->loop), 0);
    loop_free(c->loop);
    assert_int_equal(c->closed, 1);
}

/* A whole STARTTLS session with one message; returns the client's view. */
static void run_starttls_session(const struct fixture *f, struct client *c, struct server *s)
{
    server_start(s, f->server_ctx, script_starttls_ok, NULL);
    client_init(c, f, s, SMTP_TLS_REQUIRED);
    client_run(c);
    server_join(s);
}

/* ---- the cases ---- */

static void test_starttls_transaction_over_tls(void **state)
{
    struct fixture *f = *state;
    struct client c;
    struct server s;
    run_starttls_session(f, &c, &s);

    assert_int_equal(c.messages_done, 1);
    assert_int_equal(c.rcpt.outcome, SMTP_OUTCOME_ACCEPTED);
    assert_string_equal(c.rcpt.reason, "accepted");
    assert_int_equal(c.rcpt.code, 250);
    assert_string_equal(c.rcpt.enhanced, "2.0.0");
    assert_string_equal(c.rcpt.text, "2.0.0 queued as X1");
    assert_int_equal(c.session_failed, 0);
    assert_string_equal(c.end_reason, "quit");
    assert_true(c.tls_up);
    assert_string_equal(c.tls.version, "TLSv1.3");
    assert_false(c.tls.resumed);
    assert_true(s.handshake_ok);
    /* The envelope and the body went inside TLS only. */
    assert_null(strstr(s.clear, "MAIL FROM"));
    assert_null(strstr(s.clear, "hello"));
    assert_non_null(strstr(s.tls, "MAIL FROM:<a@unit.test>"));
    assert_non_null(strstr(s.tls, "\r\nhello\r\n.\r\n"));
    /* RFC 3207 4.2: a new EHLO after the handshake. */
    assert_non_null(strstr(s.tls, "EHLO client.unit.test\r\n"));
}

static void test_starttls_stripped_under_required(void **state)
{
    struct fixture *f = *state;
    struct client c;
    struct server s;
    server_start(&s, f->server_ctx, script_starttls_stripped, NULL);
    client_init(&c, f, &s, SMTP_TLS_REQUIRED);
    client_run(&c);
    server_join(&s);

    /* Documented: the session fails before any message is taken; the
     * owner defers what waits for this destination (tls_not_offered). */
    assert_int_equal(c.session_failed, 1);
    assert_int_equal(c.failed_outcome, SMTP_OUTCOME_DEFERRED);
    assert_string_equal(c.failed_reason, "tls_not_offered");
    assert_string_equal(c.end_reason, "tls_not_offered");
    assert_int_equal(c.messages_taken, 0);
    assert_false(c.tls_up);
    assert_false(s.handshake_ok);
    /* In the clear: EHLO and the polite QUIT, nothing of the message. */
    assert_string_equal(s.clear, "EHLO client.unit.test\r\nQUIT\r\n");
    assert_int_equal(s.tls_len, 0);
}

static void check_injection(const struct fixture *f, const char *payload)
{
    struct client c;
    struct server s;
    server_start(&s, f->server_ctx, script_starttls_injection, payload);
    client_init(&c, f, &s, SMTP_TLS_REQUIRED);
    client_run(&c);
    server_join(&s);

    /* Documented (smtp_client.c, RFC 3207 5): bytes after the 220 before
     * TLS end the session as starttls_injection, deferred, no handshake. */
    assert_int_equal(c.session_failed, 1);
    assert_int_equal(c.failed_outcome, SMTP_OUTCOME_DEFERRED);
    assert_string_equal(c.failed_reason, "starttls_injection");
    assert_string_equal(c.end_reason, "starttls_injection");
    assert_int_equal(c.messages_taken, 0);
    assert_false(c.tls_up);
    /* Not even a ClientHello: after STARTTLS the client only hung up. */
    assert_string_equal(s.clear, "EHLO client.unit.test\r\nSTARTTLS\r\n");
    assert_true(s.eof_clean);
}

static void test_starttls_response_injection(void **state)
{
    check_injection(*state, "220 ready\r\n250 extra");     /* a partial reply behind */
    check_injection(*state, "220 ready\r\n250 extra\r\n"); /* a whole one */
}

static void test_silent_server_times_out(void **state)
{
    struct fixture *f = *state;
    struct client c;
    struct server s;
    server_start(&s, f->server_ctx, script_silent_after_dot, NULL);
    client_init(&c, f, &s, SMTP_TLS_NONE);
    c.cfg.smtp.timeout_data_done_ms = 300; /* the others stay at 5 s */
    uint64_t t0 = clock_ms();
    client_run(&c);
    uint64_t took = clock_ms() - t0;
    server_join(&s);

    /* Documented: the body went out and no reply came, so the message is
     * deferred as timeout_data_done and may have been taken. */
    assert_int_equal(c.messages_done, 1);
    assert_int_equal(c.rcpt.outcome, SMTP_OUTCOME_DEFERRED);
    assert_string_equal(c.rcpt.reason, "timeout_data_done");
    assert_string_equal(c.rcpt.text, "no reply from server (timeout_data_done)");
    assert_true(c.msg.data_in_flight);
    assert_string_equal(c.end_reason, "timeout_data_done");
    /* Ended by the 300 ms deadline, not by a 5 s one nor the server. */
    assert_true(took >= 290);
    assert_true(took < 2000);
    assert_true(s.eof_clean);
}

static void test_tls_resumption(void **state)
{
    struct fixture *f = *state;
    struct client c;
    struct server s;
    run_starttls_session(f, &c, &s);
    assert_true(c.tls_up);
    assert_false(c.tls.resumed);
    assert_int_equal(c.rcpt.outcome, SMTP_OUTCOME_ACCEPTED);
    /* The first session's tickets are in the cache for the next one. */
    assert_true(tls_session_cache_count(f->cache, SESSION_KEY) > 0);

    run_starttls_session(f, &c, &s);
    assert_true(c.tls_up);
    assert_true(c.tls.resumed);
    assert_int_equal(c.rcpt.outcome, SMTP_OUTCOME_ACCEPTED);
    assert_string_equal(c.end_reason, "quit");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_starttls_transaction_over_tls, fresh_cache,
                                        drop_cache),
        cmocka_unit_test_setup_teardown(test_starttls_stripped_under_required, fresh_cache,
                                        drop_cache),
        cmocka_unit_test_setup_teardown(test_starttls_response_injection, fresh_cache, drop_cache),
        cmocka_unit_test_setup_teardown(test_silent_server_times_out, fresh_cache, drop_cache),
        cmocka_unit_test_setup_teardown(test_tls_resumption, fresh_cache, drop_cache),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
