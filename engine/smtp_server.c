/*
 * smtp_server - the server side of SMTP as a pure state machine.
 * See smtp_server.h.
 *
 * Layers: the line reader (smtp_server_next_line) cuts command lines out
 * of the owner's input buffer and discards over-long ones; the data
 * scanner (smtp_server_data_scan) eats message content in runs; the
 * dispatcher maps one line to one handler per command, and the protocol
 * state lives in one enum. Replies are static strings wherever possible,
 * so a pipelined batch of MAIL/RCPT/DATA costs a few memcpy into the
 * output buffer.
 *
 * About 900 lines and one file on purpose: it is one state machine (one
 * enum, one handler per command), as smtp_client.c is; splitting the
 * handlers from the state they change would only add a private header.
 */
#include "smtp_server.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crypto.h"

#define SMTP_SERVER_DEFAULT_SIZE (50u * 1024u * 1024u)
#define SMTP_SERVER_DEFAULT_LINE 1000u
#define SMTP_SERVER_DEFAULT_RCPTS 1000u
#define SMTP_SERVER_MIN_LINE 64u
#define SMTP_SERVER_KEEP_DATA (64u * 1024u) /* content storage kept after an answer */

enum smtp_server_state {
    SMTP_SERVER_STATE_INIT,            /* greeting sent (or TLS just started): EHLO expected */
    SMTP_SERVER_STATE_READY,           /* EHLO done, no transaction */
    SMTP_SERVER_STATE_MAIL,            /* MAIL accepted, no recipient yet */
    SMTP_SERVER_STATE_RCPT,            /* at least one recipient accepted */
    SMTP_SERVER_STATE_DATA,            /* reading message content */
    SMTP_SERVER_STATE_DATA_DROP,       /* 354 sent; close when content arrives */
    SMTP_SERVER_STATE_DEFERRED,        /* message received, its reply is the owner's */
    SMTP_SERVER_STATE_AUTH_PLAIN,      /* "334 " sent, PLAIN response expected */
    SMTP_SERVER_STATE_AUTH_LOGIN_USER, /* username prompt sent */
    SMTP_SERVER_STATE_AUTH_LOGIN_PASS, /* password prompt sent */
    SMTP_SERVER_STATE_STALLED,         /* never answer again */
    SMTP_SERVER_STATE_CLOSED,          /* QUIT, refused or too many errors */
};

/* The line reader's own state, below the protocol's. */
enum smtp_server_line_mode {
    SMTP_SERVER_LINE_NORMAL,
    SMTP_SERVER_LINE_DISCARD, /* inside an over-long line: drop up to its LF */
};

enum smtp_server_line_result {
    SMTP_SERVER_LINE_NONE,     /* no complete line buffered */
    SMTP_SERVER_LINE_OK,       /* s->line holds one line */
    SMTP_SERVER_LINE_TOO_LONG, /* an over-long line ended and was dropped */
    SMTP_SERVER_LINE_BAD,      /* a line with a NUL byte was dropped */
};

enum smtp_server_verb {
    SMTP_SERVER_VERB_UNKNOWN,
    SMTP_SERVER_VERB_EHLO,
    SMTP_SERVER_VERB_HELO,
    SMTP_SERVER_VERB_MAIL,
    SMTP_SERVER_VERB_RCPT,
    SMTP_SERVER_VERB_DATA,
    SMTP_SERVER_VERB_RSET,
    SMTP_SERVER_VERB_NOOP,
    SMTP_SERVER_VERB_QUIT,
    SMTP_SERVER_VERB_VRFY,
    SMTP_SERVER_VERB_STARTTLS,
    SMTP_SERVER_VERB_AUTH,
};

static const struct {
    const char *name;
    enum smtp_server_verb verb;
} smtp_server_verbs[] = {
    {"MAIL", SMTP_SERVER_VERB_MAIL}, {"RCPT", SMTP_SERVER_VERB_RCPT},
    {"DATA", SMTP_SERVER_VERB_DATA}, {"EHLO", SMTP_SERVER_VERB_EHLO},
    {"HELO", SMTP_SERVER_VERB_HELO}, {"RSET", SMTP_SERVER_VERB_RSET},
    {"NOOP", SMTP_SERVER_VERB_NOOP}, {"QUIT", SMTP_SERVER_VERB_QUIT},
    {"VRFY", SMTP_SERVER_VERB_VRFY}, {"STARTTLS", SMTP_SERVER_VERB_STARTTLS},
    {"AUTH", SMTP_SERVER_VERB_AUTH},
};

/*
 * Every buffer here is owned by the machine and reused from message to
 * message; hooks and user belong to the owner.
 */
struct smtp_server {
    enum smtp_server_state state;
    enum smtp_server_line_mode line_mode;
    struct smtp_server_config cfg;
    char hostname[256];
    const struct smtp_server_hooks *hooks;
    void *user;
    int tls_active;
    int authenticated;
    int errors;
    int data_bol;     /* data scanner: the next content byte starts a line */
    size_t data_size; /* content octets so far */
    buf_t line;       /* the current command line, NUL-terminated */
    buf_t from;       /* MAIL FROM address, NUL-terminated */
    buf_t addr;       /* the RCPT address being parsed */
    buf_t rcpt_text;  /* accepted recipients, each NUL-terminated */
    size_t *rcpt_off; /* offsets into rcpt_text */
    size_t rcpt_count, rcpt_cap;
    const char **rcpt_ptr; /* built at end of data; rcpt_cap entries */
    buf_t data;            /* content, with keep_data */
    buf_t auth;            /* decoded AUTH response; wiped after use */
    buf_t auth_user;       /* AUTH LOGIN username between its two steps */
};

static const struct smtp_server_hooks smtp_server_no_hooks;

struct smtp_server *smtp_server_new(const struct smtp_server_config *cfg,
                                    const struct smtp_server_hooks *hooks, void *user)
{
    struct smtp_server *s = calloc(1, sizeof *s);
    if (!s) {
        return NULL;
    }
    s->cfg = *cfg;
    snprintf(s->hostname, sizeof s->hostname, "%s",
             cfg->hostname && *cfg->hostname ? cfg->hostname : "localhost");
    s->cfg.hostname = s->hostname;
    if (!s->cfg.max_message_size) {
        s->cfg.max_message_size = SMTP_SERVER_DEFAULT_SIZE;
    }
    if (s->cfg.max_line < SMTP_SERVER_MIN_LINE) {
        s->cfg.max_line = s->cfg.max_line ? SMTP_SERVER_MIN_LINE : SMTP_SERVER_DEFAULT_LINE;
    }
    if (!s->cfg.max_rcpts) {
        s->cfg.max_rcpts = SMTP_SERVER_DEFAULT_RCPTS;
    }
    s->hooks = hooks ? hooks : &smtp_server_no_hooks;
    s->user = user;
    s->tls_active = cfg->tls_active;
    s->state = SMTP_SERVER_STATE_INIT;
    return s;
}

static void smtp_server_wipe(buf_t *b)
{
    if (b->data) {
        explicit_bzero(b->data, b->cap);
    }
    buf_reset(b);
}

void smtp_server_free(struct smtp_server *s)
{
    if (!s) {
        return;
    }
    smtp_server_wipe(&s->auth);
    buf_free(&s->line);
    buf_free(&s->from);
    buf_free(&s->addr);
    buf_free(&s->rcpt_text);
    buf_free(&s->data);
    buf_free(&s->auth);
    buf_free(&s->auth_user);
    free(s->rcpt_off);
    free(s->rcpt_ptr);
    free(s);
}

int smtp_server_tls_active(const struct smtp_server *s)
{
    return s->tls_active;
}

/* ---- replies ---- */

static void smtp_server_reply(buf_t *out, const char *line)
{
    size_t n = strlen(line);
    char *w = buf_reserve(out, n + 2);
    memcpy(w, line, n);
    w[n] = '\r';
    w[n + 1] = '\n';
    buf_commit(out, n + 2);
}

/* A hook's reply, or the default when it gave none. */
static void smtp_server_decided(buf_t *out, const struct smtp_server_decision *d, const char *dflt)
{
    const char *r = d->reply ? d->reply : dflt;
    assert(r[0] >= '2' && r[0] <= '5' && r[1] >= '0' && r[1] <= '9' && r[2] >= '0' && r[2] <= '9' &&
           (r[3] == ' ' || r[3] == '\0'));
    smtp_server_reply(out, r);
}

static int smtp_server_positive(const struct smtp_server_decision *d)
{
    return !d->reply || d->reply[0] == '2';
}

/* Protocol errors count; a client that keeps making them is cut off. */
static void smtp_server_error(struct smtp_server *s, buf_t *out, const char *line)
{
    smtp_server_reply(out, line);
    if (++s->errors >= SMTP_SERVER_MAX_ERRORS) {
        buf_appendf(out, "421 4.7.0 %s Error: too many errors\r\n", s->hostname);
        s->state = SMTP_SERVER_STATE_CLOSED;
    }
}

void smtp_server_greeting(struct smtp_server *s, buf_t *out)
{
    buf_appendf(out, "220 %s ESMTP ringmail\r\n", s->hostname);
}

void smtp_server_refuse(struct smtp_server *s, buf_t *out, const char *line)
{
    smtp_server_reply(out, line);
    s->state = SMTP_SERVER_STATE_CLOSED;
}

static void smtp_server_reset_transaction(struct smtp_server *s)
{
    buf_reset(&s->from);
    buf_reset(&s->rcpt_text);
    s->rcpt_count = 0;
    if (s->state == SMTP_SERVER_STATE_MAIL || s->state == SMTP_SERVER_STATE_RCPT) {
        s->state = SMTP_SERVER_STATE_READY;
    }
}

static int smtp_server_auth_offered(const struct smtp_server *s)
{
    return s->cfg.offer_auth && (s->tls_active || s->cfg.auth_plaintext);
}

/* ---- the line reader ---- */

static void smtp_server_set_line(struct smtp_server *s, const char *p, size_t len)
{
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t')) {
        len--;
    }
    buf_reset(&s->line);
    char *w = buf_reserve(&s->line, len + 1);
    memcpy(w, p, len);
    w[len] = '\0';
    buf_commit(&s->line, len + 1);
}

/*
 * Cut the next line (LF-terminated, CR optional) out of in. Lines longer
 * than max_line are dropped as they stream in, so the input buffer never
 * holds more than max_line bytes of one command.
 */
static enum smtp_server_line_result smtp_server_next_line(struct smtp_server *s, buf_t *in)
{
    const char *p = buf_data(in);
    size_t n = buf_len(in);
    const char *nl = memchr(p, '\n', n);
    if (s->line_mode == SMTP_SERVER_LINE_DISCARD) {
        if (!nl) {
            buf_consume(in, n);
            return SMTP_SERVER_LINE_NONE;
        }
        buf_consume(in, (size_t)(nl - p) + 1);
        s->line_mode = SMTP_SERVER_LINE_NORMAL;
        return SMTP_SERVER_LINE_TOO_LONG;
    }
    if (!nl) {
        if (n > s->cfg.max_line) {
            buf_consume(in, n);
            s->line_mode = SMTP_SERVER_LINE_DISCARD;
        }
        return SMTP_SERVER_LINE_NONE;
    }
    size_t len = (size_t)(nl - p) + 1;
    if (len > s->cfg.max_line) {
        buf_consume(in, len);
        return SMTP_SERVER_LINE_TOO_LONG;
    }
    size_t body = len - 1;
    if (body > 0 && p[body - 1] == '\r') {
        body--;
    }
    if (memchr(p, '\0', body)) {
        buf_consume(in, len);
        return SMTP_SERVER_LINE_BAD;
    }
    smtp_server_set_line(s, p, body);
    buf_consume(in, len);
    return SMTP_SERVER_LINE_OK;
}

static enum smtp_server_verb smtp_server_verb(char *line, char **args)
{
    size_t n = strcspn(line, " ");
    char *a = line + n;
    while (*a == ' ') {
        a++;
    }
    *args = a;
    for (size_t i = 0; i < sizeof smtp_server_verbs / sizeof smtp_server_verbs[0]; i++) {
        if (strlen(smtp_server_verbs[i].name) == n &&
            strncasecmp(line, smtp_server_verbs[i].name, n) == 0) {
            return smtp_server_verbs[i].verb;
        }
    }
    return SMTP_SERVER_VERB_UNKNOWN;
}

/* ---- EHLO / HELO ---- */

static void smtp_server_ehlo(struct smtp_server *s, buf_t *out, const char *args, int extended)
{
    if (!*args) {
        smtp_server_error(s, out,
                          extended ? "501 5.5.4 Syntax: EHLO hostname"
                                   : "501 5.5.4 Syntax: HELO hostname");
        return;
    }
    smtp_server_reset_transaction(s);
    s->state = SMTP_SERVER_STATE_READY;
    if (!extended) {
        buf_appendf(out, "250 %s\r\n", s->hostname);
        return;
    }
    buf_appendf(out, "250-%s\r\n250-PIPELINING\r\n250-SIZE %zu\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n",
                s->hostname, s->cfg.max_message_size);
    if (s->cfg.offer_starttls && !s->tls_active) {
        buf_append_str(out, "250-STARTTLS\r\n");
    }
    if (smtp_server_auth_offered(s) && !s->authenticated) {
        buf_append_str(out, "250-AUTH PLAIN LOGIN\r\n");
    }
    buf_append_str(out, "250 ENHANCEDSTATUSCODES\r\n");
}

/* ---- MAIL / RCPT ---- */

/*
 * Parse "<address> params" (angle brackets optional); store the address,
 * NUL-terminated, in dst. Returns the parameters, or NULL on bad syntax.
 */
static char *smtp_server_path(char *p, buf_t *dst)
{
    while (*p == ' ') {
        p++;
    }
    char *start = p, *end;
    if (*p == '<') {
        start = p + 1;
        end = strchr(start, '>');
        if (!end) {
            return NULL;
        }
        p = end + 1;
    } else {
        end = p + strcspn(p, " ");
        p = end;
    }
    if (*p && *p != ' ') {
        return NULL;
    }
    for (const char *q = start; q < end; q++) {
        unsigned char c = (unsigned char)*q;
        if (c <= ' ' || c == 0x7f || c == '<' || c == '>') {
            return NULL;
        }
    }
    buf_reset(dst);
    char *w = buf_reserve(dst, (size_t)(end - start) + 1);
    memcpy(w, start, (size_t)(end - start));
    w[end - start] = '\0';
    buf_commit(dst, (size_t)(end - start) + 1);
    return p;
}

/* Match a case-insensitive keyword prefix such as "FROM:"; returns what follows. */
static char *smtp_server_keyword(char *p, const char *kw)
{
    size_t n = strlen(kw);
    return strncasecmp(p, kw, n) == 0 ? p + n : NULL;
}

/* MAIL parameters. Returns NULL when all are acceptable, else the error reply. */
static const char *smtp_server_mail_params(struct smtp_server *s, char *p)
{
    for (;;) {
        while (*p == ' ') {
            p++;
        }
        if (!*p) {
            return NULL;
        }
        size_t n = strcspn(p, " ");
        size_t key = strcspn(p, "= ");
        const char *val = p[key] == '=' ? p + key + 1 : NULL;
        size_t vlen = val ? n - key - 1 : 0;
        if (key == 4 && strncasecmp(p, "SIZE", 4) == 0 && val) {
            if (vlen == 0 || vlen > 19 || strspn(val, "0123456789") < vlen) {
                return "501 5.5.4 Bad SIZE parameter";
            }
            if (strtoull(val, NULL, 10) > s->cfg.max_message_size) {
                return "552 5.3.4 Message size exceeds fixed limit";
            }
        } else if (key == 4 && strncasecmp(p, "BODY", 4) == 0 && val) {
            if (!(vlen == 4 && strncasecmp(val, "7BIT", 4) == 0) &&
                !(vlen == 8 && strncasecmp(val, "8BITMIME", 8) == 0)) {
                return "501 5.5.4 Unsupported BODY parameter";
            }
        } else if (key == 8 && n == 8 && strncasecmp(p, "SMTPUTF8", 8) == 0) {
            /* accepted: we advertise it */
        } else if (key == 4 && strncasecmp(p, "AUTH", 4) == 0 && val) {
            /* RFC 4954 MAIL AUTH=: informational */
        } else {
            return "555 5.5.4 Unsupported option";
        }
        p += n;
    }
}

static enum smtp_server_action smtp_server_mail(struct smtp_server *s, buf_t *out, char *args)
{
    if (s->state == SMTP_SERVER_STATE_INIT) {
        smtp_server_error(s, out, "503 5.5.1 Error: send HELO/EHLO first");
        return SMTP_SERVER_WAIT;
    }
    if (s->state != SMTP_SERVER_STATE_READY) {
        smtp_server_error(s, out, "503 5.5.1 Error: nested MAIL command");
        return SMTP_SERVER_WAIT;
    }
    if (s->cfg.auth_required && !s->authenticated) {
        smtp_server_error(s, out, "530 5.7.0 Authentication required");
        return SMTP_SERVER_WAIT;
    }
    char *p = smtp_server_keyword(args, "FROM:");
    char *params = p ? smtp_server_path(p, &s->from) : NULL;
    if (!params) {
        smtp_server_error(s, out, "501 5.5.4 Syntax: MAIL FROM:<address>");
        return SMTP_SERVER_WAIT;
    }
    const char *bad = smtp_server_mail_params(s, params);
    if (bad) {
        smtp_server_error(s, out, bad);
        return SMTP_SERVER_WAIT;
    }
    struct smtp_server_decision d = {NULL, SMTP_SERVER_ANSWER};
    if (s->hooks->mail) {
        s->hooks->mail(s->user, buf_data(&s->from), &d);
    }
    if (d.verdict == SMTP_SERVER_STALL) {
        s->state = SMTP_SERVER_STATE_STALLED;
        return SMTP_SERVER_WAIT;
    }
    smtp_server_decided(out, &d, "250 2.1.0 Ok");
    if (smtp_server_positive(&d)) {
        s->rcpt_count = 0;
        buf_reset(&s->rcpt_text);
        s->state = SMTP_SERVER_STATE_MAIL;
    }
    return SMTP_SERVER_WAIT;
}

static void smtp_server_add_rcpt(struct smtp_server *s, const char *addr)
{
    if (s->rcpt_count == s->rcpt_cap) {
        size_t cap = s->rcpt_cap ? s->rcpt_cap * 2 : 16;
        size_t *off = realloc(s->rcpt_off, cap * sizeof *off);
        const char **ptr = off ? realloc(s->rcpt_ptr, cap * sizeof *ptr) : NULL;
        if (!off || !ptr) {
            abort(); /* out of memory, as buf does */
        }
        s->rcpt_off = off;
        s->rcpt_ptr = ptr;
        s->rcpt_cap = cap;
    }
    s->rcpt_off[s->rcpt_count++] = buf_len(&s->rcpt_text);
    buf_append(&s->rcpt_text, addr, strlen(addr) + 1);
}

static void smtp_server_rcpt(struct smtp_server *s, buf_t *out, char *args)
{
    if (s->state != SMTP_SERVER_STATE_MAIL && s->state != SMTP_SERVER_STATE_RCPT) {
        smtp_server_error(s, out, "503 5.5.1 Error: need MAIL command");
        return;
    }
    char *p = smtp_server_keyword(args, "TO:");
    char *params = p ? smtp_server_path(p, &s->addr) : NULL;
    if (!params || buf_len(&s->addr) <= 1) {
        smtp_server_error(s, out, "501 5.1.3 Bad recipient address syntax");
        return;
    }
    if (*params) {
        smtp_server_error(s, out, "555 5.5.4 Unsupported option");
        return;
    }
    if (s->rcpt_count >= s->cfg.max_rcpts) {
        smtp_server_reply(out, "452 4.5.3 Error: too many recipients");
        return;
    }
    struct smtp_server_decision d = {NULL, SMTP_SERVER_ANSWER};
    if (s->hooks->rcpt) {
        s->hooks->rcpt(s->user, buf_data(&s->addr), &d);
    }
    smtp_server_decided(out, &d, "250 2.1.5 Ok");
    if (smtp_server_positive(&d)) {
        smtp_server_add_rcpt(s, buf_data(&s->addr));
        s->state = SMTP_SERVER_STATE_RCPT;
    }
}

/* ---- DATA ---- */

static void smtp_server_data(struct smtp_server *s, buf_t *out, const char *args)
{
    if (*args) {
        smtp_server_error(s, out, "501 5.5.4 Syntax: DATA");
        return;
    }
    if (s->state == SMTP_SERVER_STATE_MAIL) {
        smtp_server_error(s, out, "554 5.5.1 Error: no valid recipients");
        return;
    }
    if (s->state != SMTP_SERVER_STATE_RCPT) {
        smtp_server_error(s, out, "503 5.5.1 Error: need RCPT command");
        return;
    }
    struct smtp_server_decision d = {NULL, SMTP_SERVER_ANSWER};
    if (s->hooks->data) {
        s->hooks->data(s->user, &d);
    }
    smtp_server_decided(out, &d, "354 End data with <CR><LF>.<CR><LF>");
    if (d.reply && d.reply[0] != '3') {
        return;
    }
    s->data_bol = 1;
    s->data_size = 0;
    buf_reset(&s->data);
    s->state = d.verdict == SMTP_SERVER_DROP ? SMTP_SERVER_STATE_DATA_DROP : SMTP_SERVER_STATE_DATA;
}

static void smtp_server_data_take(struct smtp_server *s, const char *p, size_t n)
{
    s->data_size += n;
    if (s->cfg.keep_data && s->data_size <= s->cfg.max_message_size) {
        buf_append(&s->data, p, n);
    }
}

/*
 * Eat content from in. Runs between lines that start with a dot are taken
 * whole (memmem finds CRLF "."); at a line start, ".CRLF" ends the message
 * and any other leading dot is a stuffed one and dropped. Bytes that might
 * begin a terminator (a trailing CR or CRLF, a dot at a line start) stay in
 * in until more input decides them. Returns 1 once the terminator is eaten.
 */
static int smtp_server_data_scan(struct smtp_server *s, buf_t *in)
{
    const char *p = buf_data(in);
    size_t n = buf_len(in), used = 0;
    for (;;) {
        if (s->data_bol) {
            if (used == n) {
                break;
            }
            if (p[used] == '.') {
                size_t rest = n - used;
                if (rest == 1 || (rest == 2 && p[used + 1] == '\r')) {
                    break;
                }
                if (rest >= 3 && p[used + 1] == '\r' && p[used + 2] == '\n') {
                    buf_consume(in, used + 3);
                    return 1;
                }
                used++; /* dot-stuffing */
            }
            s->data_bol = 0;
        }
        const char *hit = memmem(p + used, n - used, "\r\n.", 3);
        if (hit) {
            size_t run = (size_t)(hit - (p + used)) + 2;
            smtp_server_data_take(s, p + used, run);
            used += run;
            s->data_bol = 1;
            continue;
        }
        size_t end = n;
        if (end - used >= 2 && p[end - 2] == '\r' && p[end - 1] == '\n') {
            end -= 2;
        } else if (end - used >= 1 && p[end - 1] == '\r') {
            end -= 1;
        }
        smtp_server_data_take(s, p + used, end - used);
        used = end;
        break;
    }
    buf_consume(in, used);
    return 0;
}

static void smtp_server_data_done(struct smtp_server *s, buf_t *out)
{
    struct smtp_server_decision d = {NULL, SMTP_SERVER_ANSWER};
    s->state = SMTP_SERVER_STATE_READY;
    if (s->data_size > s->cfg.max_message_size) {
        smtp_server_reply(out, "552 5.3.4 Message size exceeds fixed limit");
        smtp_server_reset_transaction(s);
        return;
    }
    for (size_t i = 0; i < s->rcpt_count; i++) {
        s->rcpt_ptr[i] = buf_data(&s->rcpt_text) + s->rcpt_off[i];
    }
    struct smtp_server_message m = {
        .mail_from = buf_data(&s->from),
        .rcpts = s->rcpt_ptr,
        .nrcpts = s->rcpt_count,
        .size = s->data_size,
        .data = s->cfg.keep_data ? buf_data(&s->data) : NULL,
    };
    if (s->hooks->message) {
        s->hooks->message(s->user, &m, &d);
    }
    if (d.verdict == SMTP_SERVER_DEFER) {
        s->state = SMTP_SERVER_STATE_DEFERRED; /* the message stays as it is */
        return;
    }
    smtp_server_decided(out, &d, "250 2.0.0 Ok: queued");
    smtp_server_reset_transaction(s);
}

int smtp_server_deferred(const struct smtp_server *s)
{
    return s->state == SMTP_SERVER_STATE_DEFERRED;
}

void smtp_server_answer(struct smtp_server *s, buf_t *out, const char *line)
{
    if (s->state != SMTP_SERVER_STATE_DEFERRED) {
        return;
    }
    struct smtp_server_decision d = {line, SMTP_SERVER_ANSWER};
    smtp_server_decided(out, &d, line);
    s->state = SMTP_SERVER_STATE_READY;
    smtp_server_reset_transaction(s);
    /* A kept message may have been megabytes: an idle session keeps little. */
    buf_reset(&s->data);
    buf_shrink(&s->data, SMTP_SERVER_KEEP_DATA);
}

/* ---- STARTTLS ---- */

static enum smtp_server_action smtp_server_starttls(struct smtp_server *s, buf_t *out,
                                                    const char *args)
{
    if (!s->cfg.offer_starttls || s->tls_active) {
        smtp_server_error(s, out,
                          s->tls_active ? "554 5.5.1 Error: TLS already active"
                                        : "502 5.5.1 Error: command not implemented");
        return SMTP_SERVER_WAIT;
    }
    if (*args) {
        smtp_server_error(s, out, "501 5.5.4 Syntax: STARTTLS");
        return SMTP_SERVER_WAIT;
    }
    if (s->state != SMTP_SERVER_STATE_INIT && s->state != SMTP_SERVER_STATE_READY) {
        smtp_server_error(s, out, "503 5.5.1 Error: MAIL transaction in progress");
        return SMTP_SERVER_WAIT;
    }
    smtp_server_reply(out, "220 2.0.0 Ready to start TLS");
    if (s->hooks->starttls) {
        s->hooks->starttls(s->user, out);
    }
    /* RFC 3207 4.2: forget everything learnt before the handshake. */
    s->tls_active = 1;
    s->authenticated = 0;
    smtp_server_reset_transaction(s);
    s->state = SMTP_SERVER_STATE_INIT;
    return SMTP_SERVER_STARTTLS;
}

/* ---- AUTH PLAIN / LOGIN (RFC 4954, 4616) ---- */

/* Decode a base64 response into s->auth, NUL-terminated; "=" is the empty
 * response. Returns 0 when it is not base64. */
static int smtp_server_auth_decode(struct smtp_server *s, const char *b64)
{
    size_t len = strcmp(b64, "=") == 0 ? 0 : strlen(b64);
    size_t max = crypto_base64_decoded_max(len), got;
    smtp_server_wipe(&s->auth);
    uint8_t *w = (uint8_t *)buf_reserve(&s->auth, max + 1);
    if (crypto_base64_decode(w, max, &got, b64, len) < 0) {
        return 0;
    }
    w[got] = '\0';
    buf_commit(&s->auth, got + 1);
    return 1;
}

static void smtp_server_auth_check(struct smtp_server *s, buf_t *out, const char *mechanism,
                                   const char *authzid, const char *user, const char *pass)
{
    int ok = s->hooks->auth ? s->hooks->auth(s->user, mechanism, authzid, user, pass) : 1;
    smtp_server_wipe(&s->auth);
    smtp_server_wipe(&s->auth_user);
    if (ok) {
        s->authenticated = 1;
        smtp_server_reply(out, "235 2.7.0 Authentication successful");
    } else {
        smtp_server_error(s, out, "535 5.7.8 Error: authentication failed");
    }
}

static void smtp_server_auth_plain(struct smtp_server *s, buf_t *out, const char *b64)
{
    if (!smtp_server_auth_decode(s, b64)) {
        smtp_server_error(s, out, "501 5.5.2 Error: invalid base64 data");
        return;
    }
    /* authzid NUL authcid NUL passwd, and no other NUL. */
    const char *p = buf_data(&s->auth);
    size_t n = buf_len(&s->auth) - 1;
    const char *user = memchr(p, '\0', n);
    const char *pass = user ? memchr(user + 1, '\0', n - (size_t)(user + 1 - p)) : NULL;
    if (!pass || memchr(pass + 1, '\0', n - (size_t)(pass + 1 - p)) || !user[1]) {
        smtp_server_wipe(&s->auth);
        smtp_server_error(s, out, "501 5.5.2 Error: invalid PLAIN response");
        return;
    }
    smtp_server_auth_check(s, out, "PLAIN", p, user + 1, pass + 1);
}

static void smtp_server_auth_login_user(struct smtp_server *s, buf_t *out, const char *b64)
{
    if (!smtp_server_auth_decode(s, b64) || buf_len(&s->auth) <= 1 ||
        memchr(buf_data(&s->auth), '\0', buf_len(&s->auth) - 1)) {
        smtp_server_wipe(&s->auth);
        smtp_server_error(s, out, "501 5.5.2 Error: invalid LOGIN username");
        return;
    }
    smtp_server_wipe(&s->auth_user);
    buf_append(&s->auth_user, buf_data(&s->auth), buf_len(&s->auth));
    smtp_server_wipe(&s->auth);
    smtp_server_reply(out, "334 UGFzc3dvcmQ6"); /* "Password:" */
    s->state = SMTP_SERVER_STATE_AUTH_LOGIN_PASS;
}

static void smtp_server_auth_login_pass(struct smtp_server *s, buf_t *out, const char *b64)
{
    if (!smtp_server_auth_decode(s, b64) ||
        memchr(buf_data(&s->auth), '\0', buf_len(&s->auth) - 1)) {
        smtp_server_wipe(&s->auth);
        smtp_server_wipe(&s->auth_user);
        smtp_server_error(s, out, "501 5.5.2 Error: invalid LOGIN password");
        return;
    }
    smtp_server_auth_check(s, out, "LOGIN", "", buf_data(&s->auth_user), buf_data(&s->auth));
}

static void smtp_server_auth(struct smtp_server *s, buf_t *out, char *args)
{
    const char *refusal = NULL;
    if (!smtp_server_auth_offered(s)) {
        refusal = "503 5.5.1 Error: authentication not enabled";
    } else if (s->state == SMTP_SERVER_STATE_INIT) {
        refusal = "503 5.5.1 Error: send HELO/EHLO first";
    } else if (s->authenticated) {
        refusal = "503 5.5.1 Error: already authenticated";
    } else if (s->state != SMTP_SERVER_STATE_READY) {
        refusal = "503 5.5.1 Error: MAIL transaction in progress";
    }
    if (refusal) {
        smtp_server_error(s, out, refusal);
        return;
    }
    size_t n = strcspn(args, " ");
    char *initial = args + n;
    while (*initial == ' ') {
        initial++;
    }
    if (n == 5 && strncasecmp(args, "PLAIN", 5) == 0) {
        if (*initial) {
            smtp_server_auth_plain(s, out, initial);
            return;
        }
        smtp_server_reply(out, "334 ");
        s->state = SMTP_SERVER_STATE_AUTH_PLAIN;
    } else if (n == 5 && strncasecmp(args, "LOGIN", 5) == 0) {
        if (*initial) {
            smtp_server_auth_login_user(s, out, initial);
            return;
        }
        smtp_server_reply(out, "334 VXNlcm5hbWU6"); /* "Username:" */
        s->state = SMTP_SERVER_STATE_AUTH_LOGIN_USER;
    } else {
        smtp_server_error(s, out, "504 5.5.4 Unsupported authentication mechanism");
    }
}

/* A line while an AUTH exchange waits for the client's response. */
static void smtp_server_auth_response(struct smtp_server *s, buf_t *out, const char *line)
{
    enum smtp_server_state waiting = s->state;
    s->state = SMTP_SERVER_STATE_READY;
    if (strcmp(line, "*") == 0) {
        smtp_server_wipe(&s->auth_user);
        smtp_server_error(s, out, "501 5.7.0 Authentication aborted");
        return;
    }
    switch (waiting) {
    case SMTP_SERVER_STATE_AUTH_PLAIN:
        smtp_server_auth_plain(s, out, line);
        break;
    case SMTP_SERVER_STATE_AUTH_LOGIN_USER:
        smtp_server_auth_login_user(s, out, line);
        break;
    case SMTP_SERVER_STATE_AUTH_LOGIN_PASS:
        smtp_server_auth_login_pass(s, out, line);
        break;
    default:
        assert(0 && "not waiting for an AUTH response");
        break;
    }
}

/* ---- dispatch ---- */

static enum smtp_server_action smtp_server_command(struct smtp_server *s, buf_t *out, char *line)
{
    char *args;
    switch (smtp_server_verb(line, &args)) {
    case SMTP_SERVER_VERB_EHLO:
        smtp_server_ehlo(s, out, args, 1);
        break;
    case SMTP_SERVER_VERB_HELO:
        smtp_server_ehlo(s, out, args, 0);
        break;
    case SMTP_SERVER_VERB_MAIL:
        return smtp_server_mail(s, out, args);
    case SMTP_SERVER_VERB_RCPT:
        smtp_server_rcpt(s, out, args);
        break;
    case SMTP_SERVER_VERB_DATA:
        smtp_server_data(s, out, args);
        break;
    case SMTP_SERVER_VERB_RSET:
        smtp_server_reset_transaction(s);
        smtp_server_reply(out, "250 2.0.0 Ok");
        break;
    case SMTP_SERVER_VERB_NOOP:
        smtp_server_reply(out, "250 2.0.0 Ok");
        break;
    case SMTP_SERVER_VERB_QUIT:
        smtp_server_reply(out, "221 2.0.0 Bye");
        s->state = SMTP_SERVER_STATE_CLOSED;
        if (s->hooks->quit) {
            s->hooks->quit(s->user);
        }
        return SMTP_SERVER_CLOSE;
    case SMTP_SERVER_VERB_VRFY:
        if (*args) {
            smtp_server_reply(out, "252 2.0.0 Cannot VRFY user, but will accept message");
        } else {
            smtp_server_error(s, out, "501 5.5.4 Syntax: VRFY address");
        }
        break;
    case SMTP_SERVER_VERB_STARTTLS:
        return smtp_server_starttls(s, out, args);
    case SMTP_SERVER_VERB_AUTH:
        smtp_server_auth(s, out, args);
        break;
    case SMTP_SERVER_VERB_UNKNOWN:
        smtp_server_error(s, out, "500 5.5.2 Error: command not recognized");
        break;
    }
    return SMTP_SERVER_WAIT;
}

/* One line from the reader (r is not LINE_NONE), in whatever state waits for a line. */
static enum smtp_server_action smtp_server_line(struct smtp_server *s,
                                                enum smtp_server_line_result r, buf_t *out)
{
    int in_auth = s->state == SMTP_SERVER_STATE_AUTH_PLAIN ||
                  s->state == SMTP_SERVER_STATE_AUTH_LOGIN_USER ||
                  s->state == SMTP_SERVER_STATE_AUTH_LOGIN_PASS;
    if (r != SMTP_SERVER_LINE_OK) {
        if (in_auth) {
            s->state = SMTP_SERVER_STATE_READY;
            smtp_server_wipe(&s->auth_user);
        }
        smtp_server_error(s, out,
                          r == SMTP_SERVER_LINE_BAD ? "500 5.5.2 Error: bad character in command"
                                                    : "500 5.5.2 Error: line too long");
        return SMTP_SERVER_WAIT;
    }
    char *line = (char *)buf_data(&s->line);
    if (!in_auth) {
        return smtp_server_command(s, out, line);
    }
    smtp_server_auth_response(s, out, line);
    smtp_server_wipe(&s->line);
    return SMTP_SERVER_WAIT;
}

enum smtp_server_action smtp_server_input(struct smtp_server *s, buf_t *in, buf_t *out)
{
    for (;;) {
        enum smtp_server_line_result r;
        enum smtp_server_action a;
        switch (s->state) {
        case SMTP_SERVER_STATE_DATA:
            if (!smtp_server_data_scan(s, in)) {
                return SMTP_SERVER_WAIT;
            }
            smtp_server_data_done(s, out);
            break;
        case SMTP_SERVER_STATE_DATA_DROP:
            if (buf_len(in) == 0) {
                return SMTP_SERVER_WAIT;
            }
            buf_reset(in);
            s->state = SMTP_SERVER_STATE_CLOSED;
            return SMTP_SERVER_CLOSE;
        case SMTP_SERVER_STATE_STALLED:
            buf_reset(in);
            return SMTP_SERVER_WAIT;
        case SMTP_SERVER_STATE_DEFERRED:
            return SMTP_SERVER_WAIT; /* the input waits for smtp_server_answer */
        case SMTP_SERVER_STATE_CLOSED:
            buf_reset(in);
            return SMTP_SERVER_CLOSE;
        default:
            r = smtp_server_next_line(s, in);
            if (r == SMTP_SERVER_LINE_NONE) {
                return SMTP_SERVER_WAIT;
            }
            a = smtp_server_line(s, r, out);
            if (a != SMTP_SERVER_WAIT) {
                return a;
            }
            break;
        }
    }
}
