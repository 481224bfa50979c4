/*
 * send_list - list mode: the recipient file, --message, the suppression
 * set and --records. See send_int.h.
 *
 * Recipients are read from the file up front (addresses only); messages
 * are rendered when they enter the pool and freed at their final outcome,
 * and at most --window messages are in the pool at once, so memory follows
 * the window, not the list.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "campaign/outfile.h"
#include "campaign/send_int.h"
#include "engine/smtp_data.h"

/* ---- suppression set ---- */

static size_t send_set_hash(const char *s)
{
    size_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h = (h ^ (unsigned char)tolower((unsigned char)*s)) * 1099511628211ull;
    }
    return h;
}

static int send_set_has(const struct send_set *set, const char *s)
{
    if (!set->cap) {
        return 0;
    }
    for (size_t i = send_set_hash(s) & (set->cap - 1);; i = (i + 1) & (set->cap - 1)) {
        if (!set->slots[i]) {
            return 0;
        }
        if (strcasecmp(set->slots[i], s) == 0) {
            return 1;
        }
    }
}

static void send_set_add(struct send_set *set, const char *s)
{
    if (send_set_has(set, s)) {
        return;
    }
    if ((set->n + 1) * 2 > set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 1024;
        char **slots = calloc(cap, sizeof *slots);
        if (!slots) {
            abort();
        }
        for (size_t i = 0; i < set->cap; i++) {
            if (set->slots[i]) {
                size_t k = send_set_hash(set->slots[i]) & (cap - 1);
                while (slots[k]) {
                    k = (k + 1) & (cap - 1);
                }
                slots[k] = set->slots[i];
            }
        }
        free(set->slots);
        set->slots = slots;
        set->cap = cap;
    }
    size_t k = send_set_hash(s) & (set->cap - 1);
    while (set->slots[k]) {
        k = (k + 1) & (set->cap - 1);
    }
    set->slots[k] = strdup(s);
    set->n++;
}

static void send_set_free(struct send_set *set)
{
    for (size_t i = 0; i < set->cap; i++) {
        free(set->slots[i]);
    }
    free(set->slots);
}

/* ---- input ---- */

static char *send_trim(char *s)
{
    while (isspace((unsigned char)*s)) {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) {
        s[--n] = '\0';
    }
    return s;
}

static void send_lines_free(char **lines, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(lines[i]);
    }
    free(lines);
}

/* Read FILE (or stdin for "-"): one entry per line, '#' comments and blank
 * lines skipped. With once (the recipients), the file is refused with the
 * line's number for a NUL (it would cut the address short: a@b.test<NUL>x
 * went to a@b.test) or an entry that is not UTF-8 (it would go out in RCPT
 * TO as it is); and an address already read (case-insensitively, as the
 * suppression list compares) is skipped, so each is sent once per run. */
static int send_read_lines(const char *path, char ***out, size_t *nout, struct send_set *once,
                           size_t **numbers)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        fprintf(stderr, "ringmail send: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, n = 0, lcap = 0, lineno = 0, dups = 0;
    char **lines = NULL;
    size_t *nums = NULL;
    const char *why = NULL;
    ssize_t len;
    while (!why && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (once && memchr(line, '\0', (size_t)len)) {
            why = "a NUL byte in the line";
            continue;
        }
        char *s = send_trim(line);
        if (!*s || *s == '#') {
            continue;
        }
        if (once && !render_utf8_ok(s, strlen(s))) {
            why = "the address is not valid UTF-8";
        } else if (once && send_set_has(once, s)) {
            dups++;
        } else {
            if (once) {
                send_set_add(once, s);
            }
            if (n == lcap) {
                lcap = lcap ? lcap * 2 : 1024;
                char **v = realloc(lines, lcap * sizeof *v);
                size_t *w = numbers ? realloc(nums, lcap * sizeof *w) : NULL;
                if (!v || (numbers && !w)) {
                    abort();
                }
                lines = v;
                nums = w;
            }
            if (numbers) {
                nums[n] = lineno;
            }
            lines[n++] = strdup(s);
        }
    }
    free(line);
    if (f != stdin) {
        fclose(f);
    }
    if (why) {
        fprintf(stderr, "ringmail send: %s:%zu: %s\n", path, lineno, why);
        send_lines_free(lines, n);
        free(nums);
        return -1;
    }
    if (dups) {
        fprintf(stderr,
                "ringmail send: %s: %zu duplicate line%s skipped (each address is sent once)\n",
                path, dups, dups == 1 ? "" : "s");
    }
    *out = lines;
    *nout = n;
    if (numbers) {
        *numbers = nums;
    }
    return 0;
}

/* NULL when addr is a deliverable address, else why not. */
const char *send_address_problem(const char *addr)
{
    size_t len = strlen(addr);
    const char *at = strrchr(addr, '@');
    if (len > 254) {
        return "address longer than 254 octets";
    }
    if (!at) {
        return "no '@' in the address";
    }
    if (at == addr) {
        return "empty local part";
    }
    if (at - addr > 64) {
        return "local part longer than 64 octets";
    }
    if (!at[1]) {
        return "empty domain";
    }
    for (const char *p = addr; p < at; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= ' ' || ch == 0x7f || strchr("<>(),;:\\\"[]@", ch)) {
            return "forbidden character in the local part";
        }
    }
    const char *label = at + 1;
    for (const char *p = at + 1;; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '.' || ch == '\0') {
            if (p == label) {
                return "empty label in the domain";
            }
            if (label[0] == '-' || p[-1] == '-') {
                return "domain label starts or ends with '-'";
            }
            if (ch == '\0') {
                break;
            }
            label = p + 1;
        } else if (!(isalnum(ch) || ch == '-' || ch >= 0x80)) {
            return "forbidden character in the domain";
        }
    }
    return NULL;
}

/* ---- envelope ---- */

void send_mail_from(struct send *s, struct send_msg *m, uint64_t campaign, uint64_t recipient)
{
    if (!s->feedback.enabled) {
        m->m.mail_from = s->o.from;
        return;
    }
    struct feedback_id t = {FEEDBACK_ID_BOUNCE, campaign, recipient};
    size_t n = feedback_token_make(s->feedback.secret, s->feedback.secret_len, &t, m->verp);
    snprintf(m->verp + n, sizeof m->verp - n, "@%s", s->feedback.return_path);
    m->m.mail_from = m->verp;
}

/* ---- records ---- */

int send_bounce(const struct send *s, const struct pool_attempt *a, struct bounce_result *out)
{
    if (a->outcome == SMTP_OUTCOME_DEFERRED && a->expired) {
        /* Our max_age, not the server's word: the mailbox was never condemned. */
        *out = (struct bounce_result){BOUNCE_MESSAGE_EXPIRED, BOUNCE_SOFT, "ringmail",
                                      "max_age passed"};
        return 1;
    }
    if (a->outcome != SMTP_OUTCOME_REJECTED &&
        (a->outcome != SMTP_OUTCOME_DEFERRED || a->ambiguous)) {
        return 0;
    }
    if (a->code >= 400) {
        bounce_classify(&s->bounce_rules, a->code, a->enhanced, a->text, out);
        return 1;
    }
    if (a->outcome == SMTP_OUTCOME_DEFERRED) {
        return 0; /* DNS, connection or TLS trouble: no reply to classify */
    }
    /* Refused without a reply: the domain has no mail (null MX, NXDOMAIN,
     * not a domain name). */
    const char *reason = a->reason ? a->reason : "";
    int dns = strcmp(reason, "null_mx") == 0 || strcmp(reason, "nxdomain") == 0 ||
              strcmp(reason, "bad_domain") == 0;
    *out = (struct bounce_result){dns ? BOUNCE_BAD_DOMAIN : BOUNCE_OTHER, BOUNCE_HARD, "ringmail",
                                  reason};
    return 1;
}

enum bounce_category send_bounce_category(const struct send *s, const struct pool_attempt *a)
{
    struct bounce_result r;
    return send_bounce(s, a, &r) ? r.category : BOUNCE_OTHER;
}

void send_bounce_rule(const struct bounce_result *b, char *dst, size_t cap)
{
    snprintf(dst, cap, "%s: %s", b->source, b->rule);
}

int send_bounce_suppresses(const struct send *s, const struct pool_attempt *a)
{
    struct bounce_result b;
    return a->final && a->outcome == SMTP_OUTCOME_REJECTED && send_bounce(s, a, &b) &&
           bounce_suppresses(&b);
}

int send_soft_bounce(const struct send *s, const struct pool_attempt *a)
{
    struct bounce_result b;
    if (!a->final || a->ambiguous) {
        return 0;
    }
    if (a->outcome == SMTP_OUTCOME_REJECTED) {
        return send_bounce(s, a, &b) && bounce_soft_counts(&b);
    }
    if (a->outcome == SMTP_OUTCOME_DEFERRED && a->expired && a->code >= 400) {
        /* Expired: the last reply decides (DNS or connection trouble until
         * max_age says nothing about the mailbox). */
        bounce_classify(&s->bounce_rules, a->code, a->enhanced, a->text, &b);
        return bounce_soft_counts(&b);
    }
    return 0;
}

/* send_count_recipient - one more distinct recipient unless rcpt was
 * deferred before in this run (a campaign claims it again: the same
 * recipient); a deferral is remembered for that. Addresses are unique in a
 * campaign and in a list (duplicates are skipped). */
static void send_count_recipient(struct send *s, const char *rcpt, const struct pool_attempt *a)
{
    struct send_view *v = &s->view;
    if (send_set_has(&v->deferred, rcpt)) {
        return;
    }
    v->recipients++;
    if (a->outcome == SMTP_OUTCOME_DEFERRED && !a->final) {
        send_set_add(&v->deferred, rcpt);
    }
}

void send_record(struct send *s, const char *rcpt, const struct pool_attempt *a,
                 const char *outcome)
{
    /* Every attempt of both modes passes here: the live view counts it. */
    send_count_recipient(s, rcpt, a);
    send_view_attempt(s, a);
    if (!s->records) {
        return;
    }
    const char *at = strrchr(rcpt, '@');
    json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:s, s:b, s:s, s:i, s:s, s:s}", "rcpt", rcpt,
                          "domain", at ? at + 1 : "", "isp", a->isp ? a->isp : "", "attempt",
                          (int)a->attempt, "outcome", outcome, "final", a->final, "reason",
                          a->reason, "code", a->code, "enhanced", a->enhanced, "text", a->text);
    json_object_set_new(j, "mx", json_string(a->mx ? a->mx : ""));
    json_object_set_new(j, "addr", json_string(a->addr ? a->addr : ""));
    json_object_set_new(j, "source", json_string(a->source ? a->source : ""));
    if (a->tls) {
        json_object_set_new(j, "tls", json_string(a->tls->version));
        json_object_set_new(j, "cipher", json_string(a->tls->cipher));
        json_object_set_new(j, "resumed", json_boolean(a->tls->resumed));
        json_object_set_new(j, "verify", json_string(a->tls->verify_text));
        json_object_set_new(j, "peer_sha256", json_string(a->tls->sha256));
    } else {
        json_object_set_new(j, "tls", json_string("none"));
    }
    if (!a->final && a->outcome == SMTP_OUTCOME_DEFERRED) {
        json_object_set_new(j, "next_retry_s", json_real((double)a->retry_in_ms / 1000.0));
    }
    if (a->rule) {
        json_object_set_new(j, "rule", json_string(a->rule));
    }
    if (a->connect_ms >= 0) {
        json_object_set_new(j, "connect_ms", json_integer(a->connect_ms));
    }
    if (a->tls_ms >= 0) {
        json_object_set_new(j, "tls_ms", json_integer(a->tls_ms));
    }
    if (a->transaction_ms >= 0) {
        json_object_set_new(j, "transaction_ms", json_integer(a->transaction_ms));
    }
    json_object_set_new(j, "data_in_flight", json_boolean(a->data_in_flight));
    if (a->mx && a->mx[0]) {
        json_object_set_new(j, "conn_first", json_boolean(a->conn_first));
    }
    if (a->tls_policy) {
        json_object_set_new(j, "tls_policy", json_string(a->tls_policy));
        json_object_set_new(j, "tls_policy_mode", json_string(a->tls_policy_mode));
        if (a->tls_policy_id && a->tls_policy_id[0]) {
            json_object_set_new(j, "tls_policy_id", json_string(a->tls_policy_id));
        }
        json_object_set_new(j, "tls_result",
                            a->tls_result ? json_string(a->tls_result) : json_null());
    }
    struct bounce_result b;
    if (send_bounce(s, a, &b)) {
        char why[LOADER_RULE_MAX];
        send_bounce_rule(&b, why, sizeof why);
        json_object_set_new(j, "category", json_string(bounce_category_name(b.category)));
        json_object_set_new(j, "bounce", json_string(bounce_kind_name(b.kind)));
        json_object_set_new(j, "bounce_rule", json_string(why));
    }
    char *line = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
    fprintf(s->records, "%s\n", line);
    free(line);
    json_decref(j);
}

/* A recipient decided before the pool: invalid or suppressed. */
static void send_record_local(struct send *s, const char *rcpt, const char *outcome,
                              const char *reason, const char *text)
{
    struct pool_attempt a = {
        .outcome = SMTP_OUTCOME_FAILED,
        .final = 1,
        .connect_ms = -1,
        .tls_ms = -1,
        .transaction_ms = -1,
        .reason = reason,
        .enhanced = "",
        .text = text,
        .isp = "",
        .attempt = 0,
    };
    send_record(s, rcpt, &a, outcome);
}

/* ---- feeding the pool ---- */

static void send_render(struct send *s, struct send_msg *m, unsigned long i)
{
    buf_t *b = &m->body;
    buf_appendf(b,
                "From: <%s>\r\nTo: <%s>\r\nSubject: ringmail send %lu\r\n"
                "Message-ID: <send.%lu.%d.%.0f@%s>\r\nMIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
                s->o.from, m->rcpt, i, i, (int)getpid(), s->t0 * 1000, s->o.helo);
    static const char line[] = "The quick brown fox jumps over the lazy dog. ringmail send "
                               "test body line.\r\n";
    do {
        buf_append(b, line, sizeof line - 1);
    } while (buf_len(b) + sizeof line - 1 <= s->o.size);
}

/* Whether the list is done: every recipient taken and final. */
static void send_list_maybe_finish(struct send *s)
{
    if (!s->finishing && s->next >= s->nlines && pool_pending(s->pool) == 0) {
        send_stop(s);
    }
}

void send_list_feed(struct send *s)
{
    while (!s->interrupted && s->next < s->nlines && s->inflight < s->o.window) {
        size_t i = s->next++;
        char *rcpt = s->lines[i];
        s->lines[i] = NULL;
        s->t.recipients++;
        const char *problem = send_address_problem(rcpt);
        if (problem) {
            s->t.invalid++;
            s->t.failed++;
            send_record_local(s, rcpt, "failed", "invalid_address", problem);
            fprintf(stderr, "ringmail send: invalid address '%s': %s\n", rcpt, problem);
            free(rcpt);
            continue;
        }
        if (send_set_has(&s->suppressed, rcpt)) {
            s->t.suppressed++;
            send_record_local(s, rcpt, "suppressed", "suppressed",
                              "the address is on the suppression list");
            free(rcpt);
            continue;
        }
        struct send_msg *m = calloc(1, sizeof *m);
        if (!m) {
            abort();
        }
        m->rcpt = rcpt;
        m->m.rcpt = m->rcpt;
        /* send_prepared_run: the caller's message for this line; its VERP
         * token names the campaign and no recipient */
        send_mail_from(s, m, s->prepared ? (uint64_t)s->prepared_campaign : 0,
                       s->prepared ? 0 : s->line_numbers[i]);
        if (s->prepared) {
            m->id = (int64_t)i;
            m->m.data = buf_data(s->prepared[i].body);
            m->m.len = buf_len(s->prepared[i].body);
        } else if (s->o.message_path) {
            /* One body for all: the pool may give a transaction several RCPTs. */
            m->m.data = buf_data(&s->message);
            m->m.len = buf_len(&s->message);
        } else {
            send_render(s, m, i);
            m->m.data = buf_data(&m->body);
            m->m.len = buf_len(&m->body);
        }
        m->m.user = m;
        s->inflight++;
        pool_submit(s->pool, &m->m);
    }
    send_list_maybe_finish(s);
}

void send_list_bounce(struct send *s, const char *rcpt, const struct pool_attempt *a)
{
    if (send_bounce_suppresses(s, a)) {
        send_suppress(s, rcpt);
    } else if (!s->loader && send_soft_bounce(s, a) && s->feedback.soft_bounce_limit <= 1) {
        /* The run sends each address once (duplicates are skipped), so
         * within it an address has at most this one soft bounce. */
        send_suppress(s, rcpt);
    }
}

void send_suppress(struct send *s, const char *rcpt)
{
    send_set_add(&s->suppressed, rcpt);
    if (s->suppress_out) {
        fprintf(s->suppress_out, "%s\n", rcpt);
        fflush(s->suppress_out);
    }
}

/* --message FILE: a whole message, its lines ended with CRLF (bare LF
 * accepted). Refused when it is empty, has no header, or no blank line
 * between header and body: a file of that kind is not a message. */
static int send_read_message(const char *path, buf_t *out)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ringmail send: --message %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int in_header = 1, header_lines = 0, nul = 0;
    size_t longest = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        size_t len = (size_t)n;
        if (memchr(line, '\0', len)) {
            nul = 1;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
            len--;
        }
        longest = len > longest ? len : longest;
        if (in_header) {
            if (len == 0) {
                in_header = 0;
            } else {
                header_lines++;
            }
        }
        buf_append(out, line, len);
        buf_append(out, "\r\n", 2);
    }
    int bad = ferror(f);
    free(line);
    fclose(f);
    const char *why = bad                       ? strerror(errno)
                      : nul                     ? "it contains a NUL byte"
                      : longest > SMTP_LINE_MAX ? "a line is longer than 998 octets (RFC 5322)"
                      : !header_lines           ? "it has no header lines"
                      : in_header               ? "no blank line ends the header"
                                                : NULL;
    if (why) {
        fprintf(stderr, "ringmail send: --message %s: not a message: %s\n", path, why);
        return -1;
    }
    return 0;
}

int send_files_open(struct send *s)
{
    s->feedback = s->cfg->feedback;
    send_view_config(s, s->cfg);
    if (s->o.recipients) {
        struct send_set once = {0};
        int rc = send_read_lines(s->o.recipients, &s->lines, &s->nlines, &once, &s->line_numbers);
        send_set_free(&once);
        if (rc < 0) {
            return -1;
        }
    }
    if (s->o.message_path && send_read_message(s->o.message_path, &s->message) < 0) {
        return -1;
    }
    if (s->o.suppress_path) {
        char **sup = NULL;
        size_t nsup = 0;
        char why[256];
        FILE *probe = outfile_open(s->o.suppress_path, 1, why, sizeof why);
        if (!probe) {
            fprintf(stderr, "ringmail send: --suppress %s: %s\n", s->o.suppress_path, why);
            return -1;
        }
        fclose(probe);
        if (send_read_lines(s->o.suppress_path, &sup, &nsup, NULL, NULL) < 0) {
            return -1;
        }
        for (size_t i = 0; i < nsup; i++) {
            send_set_add(&s->suppressed, sup[i]);
            free(sup[i]);
        }
        free(sup);
        s->suppress_out = outfile_open(s->o.suppress_path, 1, why, sizeof why);
    }
    if (s->o.records_path) {
        char why[256];
        s->records = outfile_open(s->o.records_path, 0, why, sizeof why);
        if (!s->records) {
            fprintf(stderr, "ringmail send: --records %s: %s\n", s->o.records_path, why);
            return -1;
        }
    }
    return 0;
}

void send_files_close(struct send *s)
{
    send_lines_free(s->lines, s->nlines);
    s->lines = NULL;
    free(s->line_numbers);
    s->line_numbers = NULL;
    s->nlines = 0;
    buf_free(&s->message);
    send_set_free(&s->suppressed);
    send_set_free(&s->view.deferred);
    s->view.deferred = (struct send_set){0};
    if (s->records) {
        fclose(s->records);
        s->records = NULL;
    }
    if (s->suppress_out) {
        fclose(s->suppress_out);
        s->suppress_out = NULL;
    }
}
