/*
 * smtp_server - the server side of SMTP as a pure state machine
 *
 * No sockets and no TLS here. The owner (a connection of bench/sink or of
 * `ringmail inbound`) appends the plaintext the client sent to an input
 * buf_t and calls smtp_server_input(); the machine consumes every complete command line
 * (PIPELINING, RFC 2920: all of them, replies batched in order into the
 * output buf_t), leaves an incomplete line where it is, and returns what
 * the owner must do next: keep reading, switch to TLS, or close. Decisions
 * that belong to the owner (MAIL, per-RCPT, DATA, the final reply, AUTH
 * credentials) go through the hooks; each is optional and defaults to
 * accepting.
 *
 * Extensions: PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES,
 * STARTTLS (when configured and not yet in TLS), AUTH PLAIN and LOGIN
 * (after TLS unless auth_plaintext). Commands: EHLO HELO MAIL RCPT DATA
 * RSET NOOP QUIT VRFY STARTTLS AUTH.
 *
 * STARTTLS: on acceptance the machine appends its 220, calls the starttls
 * hook, resets to the post-TLS state (EHLO forgotten, a new EHLO is
 * expected, tls_active set) and stops consuming: bytes after the STARTTLS
 * line stay in the input buffer, and the owner must treat them as a
 * protocol violation and discard them (the STARTTLS command-injection
 * class), then run the handshake and feed decrypted bytes only.
 *
 * The data phase is scanned in runs (memmem for CRLF "."), so content is
 * never handled byte by byte: stuffed dots are dropped, the CRLF.CRLF
 * terminator is found across any read boundary (up to four bytes of a
 * possible terminator prefix are left in the input buffer until the next
 * read decides them), and only a bare CRLF.CRLF ends the message (no LF.LF,
 * no CR.CR: the SMTP smuggling class). Content is kept only with
 * keep_data; otherwise it is counted. Buffers grow once and are reused:
 * no allocation per message.
 *
 * Answering later: the message hook may return SMTP_SERVER_DEFER (the
 * owner stores the message somewhere slow, a database). The machine then
 * sends nothing and consumes no more input: what the client pipelined
 * after the terminator stays in the input buffer. The message (mail_from,
 * rcpts, data) stays valid and unchanged until the owner calls
 * smtp_server_answer() with the final reply; the owner then calls
 * smtp_server_input() again for the commands that waited.
 *
 * Diagnostics: protocol errors are replies to the client (500, 501, 503,
 * 554, ...); after SMTP_SERVER_MAX_ERRORS of them the machine answers
 * 421 and asks to close. Nothing is logged here.
 */
#ifndef RINGMAIL_SMTP_SERVER_H
#define RINGMAIL_SMTP_SERVER_H

#include <stddef.h>

#include "buf.h"

#define SMTP_SERVER_MAX_ERRORS 20

struct smtp_server_config {
    const char *hostname;    /* greeting and EHLO; copied */
    size_t max_message_size; /* SIZE advertised and enforced; 0: 50 MiB */
    size_t max_line;         /* command line limit including CRLF; 0: 1000 */
    size_t max_rcpts;        /* per transaction; 0: 1000 */
    int offer_starttls;      /* advertise and accept STARTTLS while not in TLS */
    int offer_auth;          /* advertise and accept AUTH PLAIN LOGIN */
    int auth_plaintext;      /* ... also outside TLS */
    int auth_required;       /* MAIL is refused (530) until AUTH succeeded */
    int keep_data;           /* keep the unstuffed content for the message hook */
    int tls_active;          /* the session starts inside TLS (implicit TLS) */
};

/* What a hook decided. The machine fills in {NULL, SMTP_SERVER_ANSWER}
 * before calling; a hook changes what it wants. */
enum smtp_server_verdict {
    SMTP_SERVER_ANSWER = 0, /* reply with .reply (or the default) */
    SMTP_SERVER_STALL,      /* mail hook: never answer again, ignore all input */
    SMTP_SERVER_DROP,       /* data hook: send 354, then close as soon as content arrives */
    SMTP_SERVER_DEFER,      /* message hook: no reply now; smtp_server_answer() gives it */
};

struct smtp_server_decision {
    const char *reply; /* full reply line without CRLF ("451 4.3.0 Try later"); NULL: default.
                          Must stay valid until the hook's caller returns. */
    enum smtp_server_verdict verdict;
};

/* Valid during the message hook only; after SMTP_SERVER_DEFER, until
 * smtp_server_answer() or smtp_server_free(). */
struct smtp_server_message {
    const char *mail_from;    /* envelope sender without <>; "" for the null sender */
    const char *const *rcpts; /* accepted recipients, in order */
    size_t nrcpts;
    size_t size;      /* content octets after dot-unstuffing, final CRLF included */
    const char *data; /* the content with keep_data, else NULL */
};

struct smtp_server_hooks {
    void (*mail)(void *user, const char *from, struct smtp_server_decision *d);
    /* A reply starting with '2' accepts the recipient. */
    void (*rcpt)(void *user, const char *rcpt, struct smtp_server_decision *d);
    void (*data)(void *user, struct smtp_server_decision *d);
    void (*message)(void *user, const struct smtp_server_message *m,
                    struct smtp_server_decision *d);
    /* 1: credentials accepted. The password is wiped after the call. */
    int (*auth)(void *user, const char *mechanism, const char *authzid, const char *username,
                const char *password);
    /* STARTTLS accepted; its 220 is already in out (a fault mode may append more). */
    void (*starttls)(void *user, buf_t *out);
    void (*quit)(void *user);
};

enum smtp_server_action {
    SMTP_SERVER_WAIT = 0, /* send the output, keep reading */
    SMTP_SERVER_STARTTLS, /* send the output, discard the unread input, run the handshake */
    SMTP_SERVER_CLOSE,    /* send the output, then close */
};

struct smtp_server;

/* hooks and user are kept by reference; NULL hooks means accept everything. */
struct smtp_server *smtp_server_new(const struct smtp_server_config *cfg,
                                    const struct smtp_server_hooks *hooks, void *user);
void smtp_server_free(struct smtp_server *s);

/* Append the 220 greeting. */
void smtp_server_greeting(struct smtp_server *s, buf_t *out);
/* Append line (without CRLF, e.g. "421 4.7.0 Too many connections") and
 * end the session: later input is ignored. */
void smtp_server_refuse(struct smtp_server *s, buf_t *out, const char *line);

/* Consume what can be consumed from in, append replies to out. */
enum smtp_server_action smtp_server_input(struct smtp_server *s, buf_t *in, buf_t *out);

int smtp_server_tls_active(const struct smtp_server *s);

/* 1 while a deferred message waits for smtp_server_answer(). */
int smtp_server_deferred(const struct smtp_server *s);
/* Append the deferred message's final reply (line without CRLF, any class)
 * and end its transaction; the message's memory is the machine's again
 * (content storage over 64 KB is freed: a session that took a big message
 * does not keep its size while idle).
 * Then call smtp_server_input() for input that waited. Nothing happens
 * when no message is deferred (after smtp_server_refuse, say). */
void smtp_server_answer(struct smtp_server *s, buf_t *out, const char *line);

#endif
