/*
 * send - `ringmail send`: a recipient list through the delivery pool.
 * See send.h.
 *
 * One loop on the main thread runs everything: the pool's connections and
 * DNS, the signals (signalfd polled on the ring: SIGHUP reloads the
 * config, SIGINT/SIGTERM stop), the status line and the metrics endpoint.
 * Recipients are read from the file up front (addresses only); messages
 * are rendered when they enter the pool and freed at their final outcome,
 * and at most --window messages are in the pool at once, so memory follows
 * the window, not the list.
 *
 * Diagnostics: bad options or config print a reason and exit 2; a run cut
 * short by a signal exits 1 with the unsent count; otherwise 0, whatever
 * the outcomes (they are in the summary, --records and --suppress). A
 * campaign's stop is bounded (SEND_STOP_MS): its message says what was
 * written, what waits in the journal and what went back to the queue; a
 * second signal ends the process at once.
 */
#include "campaign/send.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "campaign/loader.h"
#include "campaign/outfile.h"
#include "campaign/prepare.h"
#include "campaign/render.h"
#include "engine/buf.h"
#include "engine/client_conn.h"
#include "engine/loop.h"
#include "engine/smtp_data.h"
#include "pool/config.h"
#include "pool/deliver.h"
#include "pool/metrics.h"

#define SEND_MAX_SOURCES 64
#define SEND_MAX_ISPS 256

struct send_options {
    const char *recipients;
    const char *message_path; /* one body for every recipient (RCPT batching) */
    const char *config_path;
    const char *resolver;
    const char *relay;
    const char *relay_user;
    const char *relay_password_file;
    const char *ca_file;
    const char *from;
    const char *helo;
    const char *records_path;
    const char *suppress_path;
    const char *metrics_addr;
    const char *db_url; /* campaign mode */
    const char *node;
    const char *journal;
    long long campaign;
    unsigned batch, lease_s;
    int resend_ambiguous;
    const char *sources[SEND_MAX_SOURCES];
    size_t nsources;
    unsigned mx_port;
    unsigned size;
    int size_set;
    unsigned window;
    int render_threads; /* campaign mode; -1: one per core */
    unsigned timeout_ms;
    unsigned max_connections;
    int relay_implicit_tls;
    int tls_override;
    enum smtp_tls_policy tls;
    int json;
};

struct send_msg {
    struct pool_msg m;
    char *rcpt;       /* owned */
    buf_t body;       /* owned */
    int64_t id;       /* campaign mode: the recipient row */
    uint64_t arm_seq; /* campaign mode: its arm (loader_arm), 0 before one was asked for */
};

struct send_set { /* suppression list: open addressing on lower-case addresses */
    char **slots;
    size_t cap, n;
};

struct send_totals {
    unsigned long recipients, accepted, rejected, failed, expired, suppressed, invalid, ambiguous;
    unsigned long attempts, deferrals;
};

struct send;

struct send_watch {
    struct loop_op op;
    struct send *s;
    int fd;
    int armed;
};

struct send {
    struct send_options o;
    struct loop *loop;
    struct pool *pool;
    struct metrics *metrics;
    char **lines;  /* owned: the recipient list */
    buf_t message; /* --message: the body every recipient shares (owned) */
    size_t nlines, next;
    size_t inflight; /* in the pool */
    struct send_set suppressed;
    FILE *records, *suppress_out;
    struct send_totals t;
    int sigfd;
    struct loop_op sig_op;
    int sig_armed;
    struct loop_timer status_timer;
    unsigned long status_last;
    int interrupted, finishing;
    int fenced; /* campaign mode: another node took this one over */
    /* A stop's bound: the first SIGINT/SIGTERM at stop_at_ms (loader_now_ms
     * clock, 0: none yet); from then on the guard thread takes the
     * signals: a second one ends the process at once, and so does
     * SEND_STOP_MS passing. hurry_ms: the loader's deadline (atomic). */
    uint64_t stop_at_ms, hurry_ms;
    int signalled; /* a first SIGINT/SIGTERM came (atomic) */
    /* Who sent the first stop signal, and when: the same sender repeating
     * it at once is the same stop (see send_same_stop). */
    int first_sig, first_sig_pid;
    uint64_t first_sig_ms;
    sigset_t stop_mask;
    pthread_t guard;
    int guard_started;
    char auth_pass[512];
    double t0;
    /* campaign mode */
    struct loader *loader;
    struct render_template *tpl;
    struct render_scratch scratch;
    struct prepare *prep; /* render workers (NULL: render on the loop thread) */
    struct send_watch loader_watch, prep_watch;
    char node_buf[128], journal_buf[512];
};

/* Results not yet committed (about 2 KB each) before feeding pauses: a
 * bound on memory while PostgreSQL is slow or away. Two writer batches. */
#define SEND_BACKLOG_MAX 10000
#define SEND_TAKE_MAX 256 /* recipients taken into the pool at once */

static double send_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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
static int send_read_lines(const char *path, char ***out, size_t *nout, struct send_set *once)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        fprintf(stderr, "ringmail send: %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, n = 0, lcap = 0, lineno = 0, dups = 0;
    char **lines = NULL;
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
                if (!v) {
                    abort();
                }
                lines = v;
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
        return -1;
    }
    if (dups) {
        fprintf(stderr,
                "ringmail send: %s: %zu duplicate line%s skipped (each address is sent once)\n",
                path, dups, dups == 1 ? "" : "s");
    }
    *out = lines;
    *nout = n;
    return 0;
}

/* NULL when addr is a deliverable address, else why not. */
static const char *send_address_problem(const char *addr)
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

/* ---- records ---- */

static void send_record(struct send *s, const char *rcpt, const struct pool_attempt *a,
                        const char *outcome)
{
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

static void send_maybe_finish(struct send *s);
static void send_feed_db(struct send *s);
static void send_stop(struct send *s);

static void send_feed(struct send *s)
{
    if (s->loader) {
        send_feed_db(s);
        return;
    }
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
        m->m.mail_from = s->o.from;
        if (s->o.message_path) {
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
    send_maybe_finish(s);
}

static void send_result_db(struct send *s, struct send_msg *m, const struct pool_attempt *a,
                           const char *outcome);

static void send_on_result(void *user, struct pool_msg *pm, const struct pool_attempt *a)
{
    struct send *s = user;
    struct send_msg *m = pm->user;
    const char *outcome = "deferred";
    s->t.attempts++;
    switch (a->outcome) {
    case SMTP_OUTCOME_ACCEPTED:
        outcome = "accepted";
        break;
    case SMTP_OUTCOME_REJECTED:
        outcome = "rejected";
        break;
    case SMTP_OUTCOME_DEFERRED:
        outcome = a->ambiguous ? "ambiguous" : a->expired ? "expired" : "deferred";
        s->t.deferrals++;
        break;
    default:
        outcome = "failed";
        break;
    }
    send_record(s, m->rcpt, a, outcome);
    if (s->loader) {
        send_result_db(s, m, a, outcome);
    }
    if (!a->released) {
        return;
    }
    if (!a->final) {
        goto release; /* campaign mode: the deferral is stored with its next attempt time */
    }
    switch (a->outcome) {
    case SMTP_OUTCOME_ACCEPTED:
        s->t.accepted++;
        break;
    case SMTP_OUTCOME_REJECTED:
        s->t.rejected++;
        /* A permanent answer about this recipient: never send to it again. */
        send_set_add(&s->suppressed, m->rcpt);
        if (s->suppress_out) {
            fprintf(s->suppress_out, "%s\n", m->rcpt);
            fflush(s->suppress_out);
        }
        break;
    case SMTP_OUTCOME_DEFERRED:
        if (a->ambiguous) {
            s->t.ambiguous++;
        } else {
            s->t.expired++;
        }
        break;
    default:
        s->t.failed++;
        break;
    }
release:
    s->inflight--;
    buf_free(&m->body);
    free(m->rcpt);
    free(m);
    if (!s->finishing) {
        send_feed(s);
    }
}

/* ---- campaign mode: the loader feeds, results go back to PostgreSQL ---- */

static void send_copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static void send_result_db(struct send *s, struct send_msg *m, const struct pool_attempt *a,
                           const char *outcome)
{
    struct loader_result r;
    memset(&r, 0, sizeof r);
    r.recipient_id = m->id;
    r.arm_seq = m->arm_seq;
    r.attempt = a->attempt;
    send_copy(r.outcome, sizeof r.outcome, outcome);
    r.final = a->final;
    const char *state = "deferred";
    switch (a->outcome) {
    case SMTP_OUTCOME_ACCEPTED:
        state = "sent";
        break;
    case SMTP_OUTCOME_REJECTED:
        state = "bounced";
        break;
    case SMTP_OUTCOME_DEFERRED:
        state = a->ambiguous ? "ambiguous" : a->final ? "failed" : "deferred";
        break;
    default:
        state = "failed";
        break;
    }
    send_copy(r.state, sizeof r.state, state);
    r.retry_in_s = a->final ? 0 : (double)a->retry_in_ms / 1000.0;
    send_copy(r.reason, sizeof r.reason, a->reason);
    r.code = a->code;
    send_copy(r.enhanced, sizeof r.enhanced, a->enhanced);
    send_copy(r.text, sizeof r.text, a->text);
    send_copy(r.isp, sizeof r.isp, a->isp);
    send_copy(r.mx, sizeof r.mx, a->mx);
    send_copy(r.peer, sizeof r.peer, a->addr);
    send_copy(r.source, sizeof r.source, a->source);
    r.connect_ms = a->connect_ms;
    r.tls_ms = a->tls_ms;
    r.transaction_ms = a->transaction_ms;
    if (a->tls) {
        r.tls = 1;
        send_copy(r.tls_version, sizeof r.tls_version, a->tls->version);
        send_copy(r.tls_cipher, sizeof r.tls_cipher, a->tls->cipher);
        send_copy(r.tls_group, sizeof r.tls_group, a->tls->group);
        send_copy(r.tls_verify, sizeof r.tls_verify, a->tls->verify_text);
        r.tls_resumed = a->tls->resumed;
        send_copy(r.peer_subject, sizeof r.peer_subject, a->tls->subject);
        send_copy(r.peer_issuer, sizeof r.peer_issuer, a->tls->issuer);
        send_copy(r.peer_sha256, sizeof r.peer_sha256, a->tls->sha256);
    }
    r.data_in_flight = a->data_in_flight;
    loader_result(s->loader, &r);
}

/* A recipient that cannot be sent at all: its one (final) record. */
static void send_invalid_db(struct send *s, const struct loader_rcpt *x, const char *why)
{
    struct loader_result r;
    memset(&r, 0, sizeof r);
    r.recipient_id = x->id;
    r.attempt = x->attempts + 1;
    send_copy(r.outcome, sizeof r.outcome, "failed");
    r.final = 1;
    send_copy(r.state, sizeof r.state, "invalid");
    send_copy(r.reason, sizeof r.reason, "invalid");
    send_copy(r.text, sizeof r.text, why);
    r.connect_ms = r.tls_ms = r.transaction_ms = -1;
    loader_result(s->loader, &r);
    s->t.invalid++;
    s->t.failed++;
}

/* Campaign mode: a transaction starts only once its recipient is armed
 * (committed as possibly sent, checked against the node's incarnation),
 * so a node that takes this one over knows what may have gone out. */
static int send_may_send(void *user, struct pool_msg *pm, int ask_only)
{
    struct send *s = user;
    struct send_msg *m = pm->user;
    if (!m->arm_seq) {
        m->arm_seq = loader_arm(s->loader, m->id);
    }
    return !ask_only && loader_armed(s->loader, m->arm_seq);
}

static void send_on_data(void *user, struct pool_msg *pm)
{
    struct send *s = user;
    struct send_msg *m = pm->user;
    if (s->loader) {
        loader_journal_mark(s->loader, m->id);
    }
}

/* One claimed recipient, rendered (it->body) or not (it->err): into the
 * pool, or recorded `invalid`. Takes its address and body. */
static void send_submit_db(struct send *s, struct prepare_item *it, uint64_t now)
{
    struct loader_rcpt *x = &it->r;
    s->t.recipients++;
    if (it->err[0]) {
        send_invalid_db(s, x, it->err);
        free(x->address);
        buf_free(&it->body);
        return;
    }
    struct send_msg *m = calloc(1, sizeof *m);
    if (!m) {
        abort();
    }
    m->body = it->body;
    m->id = x->id;
    m->rcpt = x->address;
    m->m.rcpt = m->rcpt;
    m->m.mail_from = s->o.from;
    m->m.data = buf_data(&m->body);
    m->m.len = buf_len(&m->body);
    m->m.attempts = x->attempts;
    uint64_t age = (uint64_t)(x->age_s * 1000.0);
    m->m.first_ms = x->attempts && now > age ? now - age : 0;
    m->m.user = m;
    s->inflight++;
    pool_submit(s->pool, &m->m);
}

/* Up to max rendered recipients: from the render workers, or (--render-
 * threads 0) claimed ones rendered here on the delivery thread. */
static size_t send_take_rendered(struct send *s, struct prepare_item *items, size_t max)
{
    if (s->prep) {
        return prepare_take(s->prep, items, max);
    }
    struct loader_rcpt batch[SEND_TAKE_MAX];
    size_t n = loader_take(s->loader, batch, max);
    for (size_t i = 0; i < n; i++) {
        items[i].r = batch[i];
        prepare_render(s->tpl, &s->scratch, send_address_problem, &items[i]);
    }
    return n;
}

static void send_feed_db(struct send *s)
{
    uint64_t now = loop_now_ms(s->loop);
    struct prepare_item items[SEND_TAKE_MAX];
    while (!s->interrupted && s->inflight < s->o.window &&
           loader_backlog(s->loader) < SEND_BACKLOG_MAX) {
        size_t room = s->o.window - s->inflight;
        size_t n = send_take_rendered(s, items, room < SEND_TAKE_MAX ? room : SEND_TAKE_MAX);
        if (n == 0) {
            break;
        }
        for (size_t i = 0; i < n; i++) {
            send_submit_db(s, &items[i], now);
        }
    }
    size_t busy = s->inflight + (s->prep ? prepare_held(s->prep) : 0);
    loader_want(s->loader, busy < s->o.window ? s->o.window - busy : 0);
    if (!s->finishing && busy == 0 && loader_exhausted(s->loader)) {
        send_stop(s);
    }
}

/* An eventfd the loader or the render workers signal: reset it, feed the
 * pool, watch again. */
static void send_watch_arm(struct send *s, struct send_watch *w, int fd);

static void send_on_watch(struct loop_op *op, int res, unsigned flags)
{
    (void)flags;
    struct send_watch *w = op->owner;
    struct send *s = w->s;
    w->armed = 0;
    if (res < 0 || s->finishing) {
        return;
    }
    uint64_t v;
    ssize_t n = read(w->fd, &v, sizeof v);
    (void)n;
    if (w == &s->loader_watch) {
        char why[600];
        if (loader_fenced(s->loader, why, sizeof why)) {
            fprintf(stderr, "ringmail send: %s\n", why);
            s->fenced = 1;
            s->interrupted = 1;
            send_stop(s);
            return;
        }
        pool_gate_open(s->pool); /* arms committed: waiting transactions may start */
    }
    send_feed(s);
    if (!s->finishing) {
        send_watch_arm(s, w, w->fd);
    }
}

static void send_watch_arm(struct send *s, struct send_watch *w, int fd)
{
    w->op.cb = send_on_watch;
    w->op.owner = w;
    w->s = s;
    w->fd = fd;
    w->armed = 1;
    loop_poll_add(s->loop, &w->op, fd, POLLIN);
}

/* Render workers: --render-threads, by default one per core (0: render
 * on the loop thread). */
static int send_prepare_start(struct send *s, char *err, size_t errlen)
{
    int n = s->o.render_threads;
    if (n < 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus < 1 ? 1 : cpus > 8 ? 8 : (int)cpus;
    }
    if (n == 0) {
        return 0;
    }
    struct prepare_options po = {
        .loader = s->loader,
        .tpl = s->tpl,
        .threads = (unsigned)n,
        .ahead = s->o.window < 4096 ? s->o.window : 4096,
        .address_problem = send_address_problem,
    };
    s->prep = prepare_start(&po, err, errlen);
    return s->prep ? 0 : -1;
}

/* Compile the campaign's templates (and its DKIM key). */
static int send_campaign_setup(struct send *s, char *err, size_t errlen)
{
    const struct loader_campaign *c = loader_campaign(s->loader);
    struct dkim_spec dk = {
        .domain = c->dkim_domain,
        .selector = c->dkim_selector,
        .key_pem = c->dkim_key,
    };
    struct render_spec spec = {
        .from_addr = c->mail_from,
        .subject = c->subject,
        .text = c->text_body,
        .html = c->html_body,
        .list_unsubscribe = c->list_unsubscribe,
        .feedback_id = c->feedback_id,
        .dkim = c->dkim_domain && c->dkim_selector && c->dkim_key ? &dk : NULL,
    };
    s->o.from = c->mail_from;
    s->tpl = render_compile(&spec, err, errlen);
    render_scratch_init(&s->scratch);
    return s->tpl ? 0 : -1;
}

/* ---- signals, status, metrics ---- */

static void send_sig_arm(struct send *s);

static void send_stop(struct send *s)
{
    if (s->finishing) {
        return;
    }
    s->finishing = 1;
    pool_stop(s->pool);
    metrics_free(s->metrics);
    s->metrics = NULL;
    loop_timer_cancel(s->loop, &s->status_timer);
    if (s->sig_armed) {
        loop_cancel(s->loop, &s->sig_op);
    }
    struct send_watch *watches[] = {&s->loader_watch, &s->prep_watch};
    for (size_t i = 0; i < 2; i++) {
        if (watches[i]->armed) {
            loop_cancel(s->loop, &watches[i]->op);
        }
    }
    loop_stop_when_idle(s->loop);
}

static void send_maybe_finish(struct send *s)
{
    if (s->loader) {
        return; /* send_feed_db decides: the loader knows what is left */
    }
    if (!s->finishing && s->next >= s->nlines && pool_pending(s->pool) == 0) {
        send_stop(s);
    }
}

/* Loudly, at start and after a reload: which ISPs may get mail in plaintext. */
static void send_warn_opportunistic(const struct send *s, const struct config *cfg)
{
    if (s->o.tls_override) {
        if (s->o.tls == SMTP_TLS_OPPORTUNISTIC) {
            fprintf(stderr, "ringmail: WARNING: TLS policy 'opportunistic' (--tls): mail goes IN "
                            "PLAINTEXT to servers without STARTTLS\n");
        }
        return;
    }
    char names[512] = "";
    int n = 0, has_default = 0;
    for (size_t i = 0; i <= cfg->nisps; i++) {
        /* The ISPs of the file, then the built-in default unless the file has its own. */
        int builtin = i == cfg->nisps;
        const char *name = builtin ? "default" : cfg->isps[i].name;
        has_default |= !builtin && strcmp(name, "default") == 0;
        enum smtp_tls_policy t = builtin ? cfg->tls : cfg->isps[i].tls;
        if (t == SMTP_TLS_OPPORTUNISTIC && !(builtin && has_default)) {
            size_t len = strlen(names);
            snprintf(names + len, sizeof names - len, "%s%s", n++ ? ", " : "", name);
        }
    }
    if (n) {
        fprintf(stderr,
                "ringmail: WARNING: TLS policy 'opportunistic' for ISP%s %s: mail goes IN "
                "PLAINTEXT to their servers without STARTTLS\n",
                n == 1 ? "" : "s", names);
    }
}

static void send_reload(struct send *s)
{
    if (!s->o.config_path) {
        fprintf(stderr, "ringmail send: SIGHUP: no --config to reload\n");
        return;
    }
    char err[512];
    struct config *c = config_load(s->o.config_path, err, sizeof err);
    if (!c) {
        fprintf(stderr, "ringmail send: config reload refused: %s (keeping the previous config)\n",
                err);
        return;
    }
    if (pool_check_config(s->pool, c, err, sizeof err) < 0) {
        fprintf(stderr,
                "ringmail send: config reload refused: %s: %s (keeping the previous config)\n",
                s->o.config_path, err);
        config_free(c);
        return;
    }
    pool_reload(s->pool, c);
    send_warn_opportunistic(s, c);
    fprintf(stderr, "ringmail send: config reloaded from %s\n", s->o.config_path);
}

/* A stop ends within this long of the first SIGINT/SIGTERM: what is in
 * flight may finish and results are written until shortly before it
 * (SEND_STOP_DB_MS); past it, or at a second signal, the process ends at
 * once. Nothing is lost either way: every body that went out and every
 * outcome is in the node's journal before anything else happens to it. */
#define SEND_STOP_MS 10000
#define SEND_STOP_DB_MS 9000

/* End now (a second signal, or the stop's bound passed), saying truly
 * what is where. */
static void send_exit_now(struct send *s, const char *why)
{
    if (s->o.db_url) {
        fprintf(stderr,
                "\nringmail send: %s: exiting now; every body that went out and every outcome "
                "is in the journal %s: node %s settles them, and what it still holds, at its next "
                "start (or another node takes its claims over once its lease runs out)\n",
                why, s->o.journal, s->o.node);
    } else {
        fprintf(stderr,
                "\nringmail send: %s: exiting now; messages in flight have no recorded "
                "outcome\n",
                why);
    }
    fflush(NULL);
    _exit(1);
}

/* The first stop signal (from the loop or the guard): start the clock. */
static void send_stop_clock(struct send *s)
{
    uint64_t now = loader_now_ms(), none = 0;
    if (__atomic_compare_exchange_n(&s->stop_at_ms, &none, now, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST)) {
        __atomic_store_n(&s->hurry_ms, now + SEND_STOP_DB_MS, __ATOMIC_SEQ_CST);
    }
}

/* A signal repeated by the same sender within this long of the first is
 * the same stop, not a second one: timeout(1) signals its child and then
 * its whole process group, so `timeout 60 ringmail send` gets every
 * SIGTERM twice, microseconds apart. A terminal's Ctrl-C comes from the
 * kernel (sender pid 0) and always counts. */
#define SEND_SAME_STOP_MS 500

static void send_first_signal(struct send *s, int sig, int pid)
{
    s->first_sig = sig;
    s->first_sig_pid = pid;
    s->first_sig_ms = loader_now_ms();
}

static int send_same_stop(const struct send *s, int sig, int pid)
{
    return pid > 0 && sig == s->first_sig && pid == s->first_sig_pid &&
           loader_now_ms() < s->first_sig_ms + SEND_SAME_STOP_MS;
}

/* The guard: once started, the only reader of SIGINT/SIGTERM. */
static void *send_guard(void *arg)
{
    struct send *s = arg;
    for (;;) {
        uint64_t at = __atomic_load_n(&s->stop_at_ms, __ATOMIC_SEQ_CST);
        uint64_t now = loader_now_ms(), left = 1000;
        if (at) {
            if (now >= at + SEND_STOP_MS) {
                char why[96];
                snprintf(why, sizeof why, "the stop did not finish within %d s",
                         SEND_STOP_MS / 1000);
                send_exit_now(s, why);
            }
            left = at + SEND_STOP_MS - now;
        }
        struct timespec ts = {(time_t)(left / 1000), (long)(left % 1000) * 1000000L};
        siginfo_t si;
        int sig = sigtimedwait(&s->stop_mask, &si, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            if (__atomic_load_n(&s->signalled, __ATOMIC_SEQ_CST) &&
                send_same_stop(s, sig, (int)si.si_pid)) {
                fprintf(stderr,
                        "ringmail send: %s again from pid %d (as timeout(1) sends it): the same "
                        "stop, still stopping\n",
                        strsignal(sig), (int)si.si_pid);
                continue;
            }
            if (__atomic_exchange_n(&s->signalled, 1, __ATOMIC_SEQ_CST)) {
                char why[96];
                snprintf(why, sizeof why, "a second signal (%s)", strsignal(sig));
                send_exit_now(s, why);
            }
            send_first_signal(s, sig, (int)si.si_pid);
            fprintf(stderr,
                    "\nringmail send: %s: stopping within %d s; a second signal ends at once\n",
                    strsignal(sig), SEND_STOP_MS / 1000);
            if (s->o.db_url) {
                send_stop_clock(s);
            }
        }
    }
    return NULL;
}

static void send_guard_start(struct send *s)
{
    if (!s->guard_started && pthread_create(&s->guard, NULL, send_guard, s) == 0) {
        pthread_detach(s->guard);
        s->guard_started = 1;
    }
}

static void send_on_signal(struct loop_op *op, int res, unsigned flags)
{
    (void)flags;
    struct send *s = op->owner;
    s->sig_armed = 0;
    if (res < 0 || s->finishing) {
        return;
    }
    struct signalfd_siginfo si;
    while (read(s->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            send_reload(s);
        } else {
            fprintf(stderr,
                    "\nringmail send: %s: stopping; what is in flight finishes%s; a second "
                    "signal ends at once\n",
                    strsignal((int)si.ssi_signo),
                    s->loader ? " (within 10 s: what cannot reach the database by then waits "
                                "in the journal)"
                              : "");
            s->interrupted = 1;
            send_first_signal(s, (int)si.ssi_signo, (int)si.ssi_pid);
            __atomic_store_n(&s->signalled, 1, __ATOMIC_SEQ_CST);
            if (s->loader) {
                send_stop_clock(s);
            }
            send_stop(s); /* cancels the signalfd's poll: the guard takes over */
            send_guard_start(s);
            return;
        }
    }
    send_sig_arm(s);
}

static void send_sig_arm(struct send *s)
{
    s->sig_op.cb = send_on_signal;
    s->sig_op.owner = s;
    s->sig_armed = 1;
    loop_poll_add(s->loop, &s->sig_op, s->sigfd, POLLIN);
}

static void send_on_status(struct loop_timer *t)
{
    struct send *s = t->owner;
    unsigned long done = s->t.attempts;
    fprintf(stderr,
            "\r%6lu msgs/s  accepted %lu  deferred %lu  rejected %lu  failed %lu  connections %u"
            "  retry queue %zu",
            done - s->status_last, s->t.accepted, s->t.deferrals, s->t.rejected, s->t.failed,
            pool_open_connections(s->pool), pool_retry_depth(s->pool));
    if (s->loader) {
        /* Why sending may pause: arms wait for PostgreSQL, or the node's
         * lease is not being renewed. */
        unsigned gated = pool_gated_connections(s->pool);
        if (gated) {
            fprintf(stderr, "  %u waiting for the database (arm)", gated);
        }
        if (!loader_lease_ok(s->loader)) {
            fprintf(stderr, "  NODE LEASE NOT RENEWED: nothing new starts");
        }
    }
    fprintf(stderr, "   ");
    s->status_last = done;
    loop_timer_set(s->loop, &s->status_timer, 1000);
}

static void send_metrics_render(void *user, buf_t *out)
{
    struct send *s = user;
    pool_metrics(s->pool, out);
    metrics_help(out, "ringmail_recipients_total", "counter", "Recipients by final state.");
    metrics_line(out, "ringmail_recipients_total", "state=\"accepted\"", (double)s->t.accepted);
    metrics_line(out, "ringmail_recipients_total", "state=\"rejected\"", (double)s->t.rejected);
    metrics_line(out, "ringmail_recipients_total", "state=\"failed\"", (double)s->t.failed);
    metrics_line(out, "ringmail_recipients_total", "state=\"expired\"", (double)s->t.expired);
    metrics_line(out, "ringmail_recipients_total", "state=\"ambiguous\"", (double)s->t.ambiguous);
    metrics_line(out, "ringmail_recipients_total", "state=\"suppressed\"", (double)s->t.suppressed);
    if (s->loader) {
        struct loader_stats ls;
        loader_stats(s->loader, &ls);
        metrics_help(out, "ringmail_connections_waiting_arm", "gauge",
                     "Connections whose next transaction waits for its arm commit.");
        metrics_line(out, "ringmail_connections_waiting_arm", NULL,
                     (double)pool_gated_connections(s->pool));
        metrics_help(out, "ringmail_node_lease_ok", "gauge",
                     "1 while the node's heartbeat renews its lease (0: nothing new starts).");
        metrics_line(out, "ringmail_node_lease_ok", NULL, loader_lease_ok(s->loader) ? 1.0 : 0.0);
        metrics_help(out, "ringmail_arms_total", "counter", "Arm statements committed.");
        metrics_line(out, "ringmail_arms_total", NULL, (double)ls.arms);
        metrics_help(out, "ringmail_armed_total", "counter", "Recipients armed.");
        metrics_line(out, "ringmail_armed_total", NULL, (double)ls.armed);
        metrics_help(out, "ringmail_takeovers_total", "counter", "Dead nodes taken over.");
        metrics_line(out, "ringmail_takeovers_total", NULL, (double)ls.taken_over_nodes);
    }
}

/* ---- report ---- */

static double send_tv(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static void send_report(struct send *s, double wall)
{
    struct pool_isp_stats st[SEND_MAX_ISPS];
    size_t n = pool_isp_stats(s->pool, st, SEND_MAX_ISPS);
    if (n > SEND_MAX_ISPS) {
        n = SEND_MAX_ISPS;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = send_tv(&ru.ru_utime) + send_tv(&ru.ru_stime);
    if (!s->o.json) {
        printf("recipients %lu: accepted %lu, rejected %lu, failed %lu, expired %lu, ambiguous "
               "%lu, suppressed %lu; %lu attempts, %lu deferrals\n",
               s->t.recipients, s->t.accepted, s->t.rejected, s->t.failed, s->t.expired,
               s->t.ambiguous, s->t.suppressed, s->t.attempts, s->t.deferrals);
        if (s->loader) {
            struct loader_stats ls;
            loader_stats(s->loader, &ls);
            printf("database: %llu claimed (deferrals are claimed again), %llu results written, "
                   "%llu waiting, %llu errors\n",
                   (unsigned long long)ls.claimed, (unsigned long long)ls.written,
                   (unsigned long long)ls.backlog, (unsigned long long)ls.db_errors);
        }
        printf("%-14s %9s %9s %9s %9s %7s %9s %9s %6s %8s %8s\n", "isp", "attempts", "accepted",
               "deferred", "rejected", "failed", "rate/s", "limit/s", "conns", "resumed%",
               "backoffs");
        for (size_t i = 0; i < n; i++) {
            const struct pool_isp_stats *x = &st[i];
            if (!x->attempts && !x->connections) {
                continue;
            }
            uint64_t tls = x->tls_full + x->tls_resumed;
            char limit[32];
            if (x->rate_limit < 0) {
                snprintf(limit, sizeof limit, "-");
            } else {
                snprintf(limit, sizeof limit, "%.1f", x->rate_limit);
            }
            printf("%-14s %9llu %9llu %9llu %9llu %7llu %9.1f %9s %6llu %7.1f%% %8llu\n", x->name,
                   (unsigned long long)x->attempts, (unsigned long long)x->accepted,
                   (unsigned long long)x->deferred, (unsigned long long)x->rejected,
                   (unsigned long long)x->failed, wall > 0 ? (double)x->accepted / wall : 0.0,
                   limit, (unsigned long long)x->connections,
                   tls ? 100.0 * (double)x->tls_resumed / (double)tls : 0.0,
                   (unsigned long long)x->backoff_triggers);
        }
        printf("wall %.3f s, cpu %.3f s, peak rss %ld KB\n", wall, cpu, ru.ru_maxrss);
        return;
    }
    json_t *isps = json_object();
    for (size_t i = 0; i < n; i++) {
        const struct pool_isp_stats *x = &st[i];
        json_object_set_new(
            isps, x->name,
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:I, s:f}",
                      "attempts", (json_int_t)x->attempts, "accepted", (json_int_t)x->accepted,
                      "deferred", (json_int_t)x->deferred, "rejected", (json_int_t)x->rejected,
                      "failed", (json_int_t)x->failed, "connections", (json_int_t)x->connections,
                      "tls_full", (json_int_t)x->tls_full, "tls_resumed",
                      (json_int_t)x->tls_resumed, "tls_none", (json_int_t)x->tls_none,
                      "msg_rate_limit", x->rate_limit, "backoff_factor", x->backoff,
                      "backoff_triggers", (json_int_t)x->backoff_triggers, "effective_rate",
                      wall > 0 ? (double)x->accepted / wall : 0.0));
    }
    json_t *j = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:f, s:f, s:I}", "recipients",
        (json_int_t)s->t.recipients, "accepted", (json_int_t)s->t.accepted, "rejected",
        (json_int_t)s->t.rejected, "failed", (json_int_t)s->t.failed, "expired",
        (json_int_t)s->t.expired, "ambiguous", (json_int_t)s->t.ambiguous, "suppressed",
        (json_int_t)s->t.suppressed, "invalid", (json_int_t)s->t.invalid, "attempts",
        (json_int_t)s->t.attempts, "deferrals", (json_int_t)s->t.deferrals, "unsent",
        (json_int_t)(s->t.recipients - s->t.accepted - s->t.rejected - s->t.failed - s->t.expired -
                     s->t.ambiguous - s->t.suppressed + (s->nlines - s->next)),
        "isps", isps, "wall_s", wall, "cpu_s", cpu, "peak_rss_kb", (json_int_t)ru.ru_maxrss);
    if (s->loader) {
        /* Campaign mode: a deferral goes back to the database and is claimed
         * again, so "recipients" counts claims; the database has the states. */
        struct loader_stats ls;
        loader_stats(s->loader, &ls);
        json_object_del(j, "unsent");
        json_object_set_new(
            j, "db",
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, "
                      "s:f}",
                      "claimed", (json_int_t)ls.claimed, "written", (json_int_t)ls.written,
                      "backlog", (json_int_t)ls.backlog, "db_errors", (json_int_t)ls.db_errors,
                      "recovered_queued", (json_int_t)ls.recovered_queued, "recovered_ambiguous",
                      (json_int_t)ls.recovered_ambiguous, "suppressed_at_claim",
                      (json_int_t)ls.suppressed, "claims", (json_int_t)ls.claims, "flushes",
                      (json_int_t)ls.flushes, "taken_over_nodes", (json_int_t)ls.taken_over_nodes,
                      "taken_over_queued", (json_int_t)ls.taken_over_queued, "taken_over_ambiguous",
                      (json_int_t)ls.taken_over_ambiguous, "arms", (json_int_t)ls.arms, "armed",
                      (json_int_t)ls.armed, "claim_s", (double)ls.claim_us / 1e6, "write_s",
                      (double)ls.write_us / 1e6));
        json_object_set_new(json_object_get(j, "db"), "recovered_results",
                            json_integer((json_int_t)ls.recovered_results));
    }
    char *txt = json_dumps(j, JSON_COMPACT);
    printf("%s\n", txt);
    free(txt);
    json_decref(j);
}

/* A message the pool still held when the run stopped: never attempted
 * (its claim goes back to the queue) or waiting for a retry. */
static void send_release(void *user, struct pool_msg *pm)
{
    (void)user;
    struct send_msg *m = pm->user;
    buf_free(&m->body);
    free(m->rcpt);
    free(m);
}

/* ---- options ---- */

static void send_usage(FILE *f)
{
    fprintf(f,
            "usage: ringmail send --recipients FILE [options]\n"
            "       ringmail send --db URL --campaign ID [--node NAME] [options]\n"
            "\n"
            "  --recipients FILE      one address per line ('-' = stdin; '#' comments)\n"
            "  --config FILE          ISPs, limits, reply rules, routes, sources (SIGHUP reloads)\n"
            "  --resolver ADDR:PORT   DNS server for MX lookups (default /etc/resolv.conf)\n"
            "  --mx-port N            port of the mail exchangers (default 25)\n"
            "  --relay HOST:PORT      send everything to this smarthost\n"
            "  --relay-implicit-tls   the smarthost speaks TLS from the first byte (465)\n"
            "  --relay-user USER      AUTH user; the password comes from\n"
            "  --relay-password-file F  or the environment variable RINGMAIL_RELAY_PASSWORD\n"
            "  --tls POLICY           every destination: required | verify | opportunistic | none\n"
            "  --ca FILE              CA bundle for verify (default the system bundle)\n"
            "  --source ADDR          bind outgoing connections to ADDR (repeatable)\n"
            "  --from ADDR            envelope sender (default send@ringmail.test)\n"
            "  --helo NAME            EHLO name (default ringmail.test)\n"
            "  --size BYTES           generated message size (default 2048)\n"
            "  --message FILE         send this RFC 5322 message (headers, blank line, body)\n"
            "                         to every recipient instead of a generated one; recipients\n"
            "                         of one destination share transactions (max_rcpts_per_msg)\n"
            "  --window N             messages in the pool at once (default 10000)\n"
            "  --max-connections N    connections across all ISPs (default 1000)\n"
            "  --timeout-ms MS        every protocol timeout (default 30000, DATA end 60000)\n"
            "  --records FILE         one JSON line per attempt (outcome, reply, MX, TLS)\n"
            "  --suppress FILE        skip the addresses in FILE; append permanent rejections\n"
            "  --metrics ADDR:PORT    Prometheus text endpoint (GET /metrics)\n"
            "  --json                 one JSON summary on stdout instead of the table\n"
            "\n"
            "campaign mode (recipients, templates and results in PostgreSQL):\n"
            "  --db URL               libpq connection string\n"
            "  --campaign ID          the campaign to run to its end (rerun: it resumes)\n"
            "  --node NAME            this process's name for leases (default: host name)\n"
            "  --journal FILE         crash journal (default ./ringmail-NODE.journal)\n"
            "  --resend-ambiguous     queue again recipients whose DATA was in flight at a crash\n"
            "  --batch N              recipients per claim (default 1000)\n"
            "  --render-threads N     threads rendering and DKIM-signing (default one per core;\n"
            "                         0: on the delivery thread)\n"
            "  --lease SECONDS        the node's lease: renewed every half, taken over by\n"
            "                         another node when it runs out (default 10)\n");
}

enum {
    SEND_OPT_RCPTS = 256,
    SEND_OPT_CONFIG,
    SEND_OPT_RESOLVER,
    SEND_OPT_MXPORT,
    SEND_OPT_RELAY,
    SEND_OPT_RELAY465,
    SEND_OPT_RELAY_USER,
    SEND_OPT_RELAY_PWFILE,
    SEND_OPT_TLS,
    SEND_OPT_CA,
    SEND_OPT_SOURCE,
    SEND_OPT_FROM,
    SEND_OPT_HELO,
    SEND_OPT_SIZE,
    SEND_OPT_MESSAGE,
    SEND_OPT_WINDOW,
    SEND_OPT_RENDER_THREADS,
    SEND_OPT_MAXCONN,
    SEND_OPT_TIMEOUT,
    SEND_OPT_RECORDS,
    SEND_OPT_SUPPRESS,
    SEND_OPT_METRICS,
    SEND_OPT_JSON,
    SEND_OPT_DB,
    SEND_OPT_CAMPAIGN,
    SEND_OPT_NODE,
    SEND_OPT_JOURNAL,
    SEND_OPT_RESEND,
    SEND_OPT_BATCH,
    SEND_OPT_LEASE,
    SEND_OPT_HELP,
};

static int send_number(const char *name, const char *v, unsigned long min, unsigned long max,
                       unsigned *out)
{
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    if (!*v || *end || n < min || n > max) {
        fprintf(stderr, "ringmail send: bad value for --%s: '%s' (want %lu..%lu)\n", name, v, min,
                max);
        return -1;
    }
    *out = (unsigned)n;
    return 0;
}

static int send_parse(int argc, char **argv, struct send_options *o)
{
    static const struct option longopts[] = {
        {"recipients", required_argument, 0, SEND_OPT_RCPTS},
        {"config", required_argument, 0, SEND_OPT_CONFIG},
        {"resolver", required_argument, 0, SEND_OPT_RESOLVER},
        {"mx-port", required_argument, 0, SEND_OPT_MXPORT},
        {"relay", required_argument, 0, SEND_OPT_RELAY},
        {"relay-implicit-tls", no_argument, 0, SEND_OPT_RELAY465},
        {"relay-user", required_argument, 0, SEND_OPT_RELAY_USER},
        {"relay-password-file", required_argument, 0, SEND_OPT_RELAY_PWFILE},
        {"tls", required_argument, 0, SEND_OPT_TLS},
        {"ca", required_argument, 0, SEND_OPT_CA},
        {"source", required_argument, 0, SEND_OPT_SOURCE},
        {"from", required_argument, 0, SEND_OPT_FROM},
        {"helo", required_argument, 0, SEND_OPT_HELO},
        {"size", required_argument, 0, SEND_OPT_SIZE},
        {"message", required_argument, 0, SEND_OPT_MESSAGE},
        {"window", required_argument, 0, SEND_OPT_WINDOW},
        {"render-threads", required_argument, 0, SEND_OPT_RENDER_THREADS},
        {"max-connections", required_argument, 0, SEND_OPT_MAXCONN},
        {"timeout-ms", required_argument, 0, SEND_OPT_TIMEOUT},
        {"records", required_argument, 0, SEND_OPT_RECORDS},
        {"suppress", required_argument, 0, SEND_OPT_SUPPRESS},
        {"metrics", required_argument, 0, SEND_OPT_METRICS},
        {"json", no_argument, 0, SEND_OPT_JSON},
        {"db", required_argument, 0, SEND_OPT_DB},
        {"campaign", required_argument, 0, SEND_OPT_CAMPAIGN},
        {"node", required_argument, 0, SEND_OPT_NODE},
        {"journal", required_argument, 0, SEND_OPT_JOURNAL},
        {"resend-ambiguous", no_argument, 0, SEND_OPT_RESEND},
        {"batch", required_argument, 0, SEND_OPT_BATCH},
        {"lease", required_argument, 0, SEND_OPT_LEASE},
        {"help", no_argument, 0, SEND_OPT_HELP},
        {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case SEND_OPT_RCPTS:
            o->recipients = optarg;
            break;
        case SEND_OPT_CONFIG:
            o->config_path = optarg;
            break;
        case SEND_OPT_RESOLVER:
            o->resolver = optarg;
            break;
        case SEND_OPT_MXPORT:
            if (send_number("mx-port", optarg, 1, 65535, &o->mx_port) < 0)
                return -1;
            break;
        case SEND_OPT_RELAY:
            o->relay = optarg;
            break;
        case SEND_OPT_RELAY465:
            o->relay_implicit_tls = 1;
            break;
        case SEND_OPT_RELAY_USER:
            o->relay_user = optarg;
            break;
        case SEND_OPT_RELAY_PWFILE:
            o->relay_password_file = optarg;
            break;
        case SEND_OPT_TLS:
            if (smtp_tls_policy_parse(optarg, &o->tls) < 0) {
                fprintf(stderr,
                        "ringmail send: --tls must be required, verify, opportunistic or none\n");
                return -1;
            }
            o->tls_override = 1;
            break;
        case SEND_OPT_CA:
            o->ca_file = optarg;
            break;
        case SEND_OPT_SOURCE:
            if (o->nsources == SEND_MAX_SOURCES) {
                fprintf(stderr, "ringmail send: too many --source addresses\n");
                return -1;
            }
            o->sources[o->nsources++] = optarg;
            break;
        case SEND_OPT_FROM:
            o->from = optarg;
            break;
        case SEND_OPT_HELO:
            o->helo = optarg;
            break;
        case SEND_OPT_SIZE:
            o->size_set = 1;
            if (send_number("size", optarg, 0, 64u << 20, &o->size) < 0)
                return -1;
            break;
        case SEND_OPT_MESSAGE:
            o->message_path = optarg;
            break;
        case SEND_OPT_WINDOW:
            if (send_number("window", optarg, 1, 10000000, &o->window) < 0)
                return -1;
            break;
        case SEND_OPT_RENDER_THREADS: {
            unsigned n;
            if (send_number("render-threads", optarg, 0, 64, &n) < 0)
                return -1;
            o->render_threads = (int)n;
            break;
        }
        case SEND_OPT_MAXCONN:
            if (send_number("max-connections", optarg, 1, 1000000, &o->max_connections) < 0)
                return -1;
            break;
        case SEND_OPT_TIMEOUT:
            if (send_number("timeout-ms", optarg, 1, 3600000, &o->timeout_ms) < 0)
                return -1;
            break;
        case SEND_OPT_RECORDS:
            o->records_path = optarg;
            break;
        case SEND_OPT_SUPPRESS:
            o->suppress_path = optarg;
            break;
        case SEND_OPT_METRICS:
            o->metrics_addr = optarg;
            break;
        case SEND_OPT_DB:
            o->db_url = optarg;
            break;
        case SEND_OPT_CAMPAIGN: {
            char *end;
            o->campaign = strtoll(optarg, &end, 10);
            if (!*optarg || *end || o->campaign <= 0) {
                fprintf(stderr, "ringmail send: bad value for --campaign: '%s'\n", optarg);
                return -1;
            }
            break;
        }
        case SEND_OPT_NODE:
            o->node = optarg;
            break;
        case SEND_OPT_JOURNAL:
            o->journal = optarg;
            break;
        case SEND_OPT_RESEND:
            o->resend_ambiguous = 1;
            break;
        case SEND_OPT_BATCH:
            if (send_number("batch", optarg, 1, 100000, &o->batch) < 0)
                return -1;
            break;
        case SEND_OPT_LEASE:
            if (send_number("lease", optarg, 2, 86400, &o->lease_s) < 0)
                return -1;
            break;
        case SEND_OPT_JSON:
            o->json = 1;
            break;
        case SEND_OPT_HELP:
            send_usage(stdout);
            exit(0);
        default:
            send_usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ringmail send: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (o->db_url || o->campaign) {
        if (!o->db_url || !o->campaign || o->recipients || o->message_path) {
            fprintf(stderr, "ringmail send: campaign mode wants --db URL and --campaign ID "
                            "(and no --recipients or --message: the campaign renders them)\n");
            return -1;
        }
        return 0;
    }
    if (!o->recipients) {
        fprintf(stderr,
                "ringmail send: --recipients FILE (or --db URL --campaign ID) is required\n");
        send_usage(stderr);
        return -1;
    }
    if (o->message_path && o->size_set) {
        fprintf(stderr, "ringmail send: --size is for the generated message, not --message\n");
        return -1;
    }
    if ((o->relay_user || o->relay_password_file || o->relay_implicit_tls) && !o->relay) {
        fprintf(stderr, "ringmail send: --relay-* options need --relay HOST:PORT\n");
        return -1;
    }
    return 0;
}

/* The relay password: from a file (first line) or RINGMAIL_RELAY_PASSWORD. */
static int send_read_password(struct send *s)
{
    const struct send_options *o = &s->o;
    if (!o->relay_user) {
        return 0;
    }
    if (o->relay_password_file) {
        FILE *f = fopen(o->relay_password_file, "r");
        if (!f) {
            fprintf(stderr, "ringmail send: --relay-password-file %s: %s\n", o->relay_password_file,
                    strerror(errno));
            return -1;
        }
        if (!fgets(s->auth_pass, sizeof s->auth_pass, f)) {
            s->auth_pass[0] = '\0';
        }
        fclose(f);
        s->auth_pass[strcspn(s->auth_pass, "\r\n")] = '\0';
    } else if (getenv("RINGMAIL_RELAY_PASSWORD")) {
        snprintf(s->auth_pass, sizeof s->auth_pass, "%s", getenv("RINGMAIL_RELAY_PASSWORD"));
    } else {
        fprintf(stderr, "ringmail send: --relay-user needs --relay-password-file FILE or "
                        "RINGMAIL_RELAY_PASSWORD in the environment\n");
        return -1;
    }
    if (!s->auth_pass[0]) {
        fprintf(stderr, "ringmail send: the relay password is empty\n");
        return -1;
    }
    return 0;
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

static int send_setup(struct send *s, struct config **cfg_out)
{
    char err[512];
    struct config *cfg;
    if (s->o.config_path) {
        cfg = config_load(s->o.config_path, err, sizeof err);
        if (!cfg) {
            fprintf(stderr, "ringmail send: %s\n", err);
            return -1;
        }
    } else {
        /* No file: one built-in default ISP, unlimited, TLS required. */
        cfg = calloc(1, sizeof *cfg);
        if (!cfg) {
            abort();
        }
        retry_schedule_init(&cfg->retry);
        cfg->tls = SMTP_TLS_REQUIRED;
        cfg->backoff_step = 0.1;
        cfg->backoff_interval_ms = 60000;
    }
    *cfg_out = cfg;
    if (send_read_password(s) < 0) {
        return -1;
    }
    if (s->o.relay_user) {
        int tls_ok = s->o.tls_override ? s->o.tls != SMTP_TLS_NONE : cfg->tls != SMTP_TLS_NONE;
        if (!tls_ok) {
            fprintf(stderr, "ringmail send: relay AUTH needs TLS: credentials never go in "
                            "plaintext\n");
            return -1;
        }
    }
    if (s->o.recipients) {
        struct send_set once = {0};
        int rc = send_read_lines(s->o.recipients, &s->lines, &s->nlines, &once);
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
        if (send_read_lines(s->o.suppress_path, &sup, &nsup, NULL) < 0) {
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

int send_main(int argc, char **argv)
{
    static struct send s;
    memset(&s, 0, sizeof s);
    s.sigfd = -1;
    s.o.from = "send@ringmail.test";
    s.o.helo = "ringmail.test";
    s.o.size = 2048;
    s.o.window = 10000;
    s.o.render_threads = -1;
    if (send_parse(argc, argv, &s.o) < 0) {
        return 2;
    }
    struct config *cfg = NULL;
    int rc = 2, done = 0;
    char err[512];
    /* Before any thread starts (the loader's inherits the mask): the
     * signals arrive only through the signalfd on the loop. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* Every connection is a descriptor; past the limit the pool waits for
     * one to free up (client_conn_start), it never fails a message. */
    loop_nofile_raise();
    sigemptyset(&s.stop_mask);
    sigaddset(&s.stop_mask, SIGINT);
    sigaddset(&s.stop_mask, SIGTERM);
    if (send_setup(&s, &cfg) < 0) {
        config_free(cfg);
        goto out;
    }
    s.loop = loop_new(4096);
    if (!s.loop) {
        perror("ringmail send: io_uring setup");
        config_free(cfg);
        goto out;
    }
    struct pool_options po = {
        .config = cfg,
        .resolver = s.o.resolver,
        .mx_port = s.o.mx_port,
        .relay = s.o.relay,
        .relay_implicit_tls = s.o.relay_implicit_tls,
        .auth_user = s.o.relay_user,
        .auth_pass = s.o.relay_user ? s.auth_pass : NULL,
        .ca_file = s.o.ca_file,
        .tls_override = s.o.tls_override,
        .tls = s.o.tls,
        .helo = s.o.helo,
        .timeout_ms = s.o.timeout_ms,
        .sources = s.o.sources,
        .nsources = s.o.nsources,
        .max_connections = s.o.max_connections,
        .on_result = send_on_result,
        .user = &s,
    };
    if (s.o.db_url) {
        if (!s.o.node) {
            if (gethostname(s.node_buf, sizeof s.node_buf - 1) < 0 || !s.node_buf[0]) {
                snprintf(s.node_buf, sizeof s.node_buf, "ringmail");
            }
            s.o.node = s.node_buf;
        }
        if (!s.o.journal) {
            snprintf(s.journal_buf, sizeof s.journal_buf, "ringmail-%s.journal", s.o.node);
            s.o.journal = s.journal_buf;
        }
        struct loader_options lo = {
            .url = s.o.db_url,
            .campaign = s.o.campaign,
            .node = s.o.node,
            .journal_path = s.o.journal,
            .batch = s.o.batch,
            .lease_s = s.o.lease_s,
            .resend_ambiguous = s.o.resend_ambiguous,
        };
        s.loader = loader_start(&lo, err, sizeof err);
        if (!s.loader) {
            fprintf(stderr, "ringmail send: %s\n", err);
            config_free(cfg);
            goto out;
        }
        if (send_campaign_setup(&s, err, sizeof err) < 0) {
            fprintf(stderr, "ringmail send: campaign %lld: %s\n", s.o.campaign, err);
            config_free(cfg);
            goto out;
        }
        struct loader_stats ls;
        loader_stats(s.loader, &ls);
        if (ls.recovered_queued || ls.recovered_ambiguous) {
            fprintf(stderr,
                    "ringmail send: recovered from an earlier stop of node %s: %llu queued again, "
                    "%llu ambiguous (DATA was in flight%s)\n",
                    s.o.node, (unsigned long long)ls.recovered_queued,
                    (unsigned long long)ls.recovered_ambiguous,
                    s.o.resend_ambiguous ? "; --resend-ambiguous queues them" : "");
        }
        if (send_prepare_start(&s, err, sizeof err) < 0) {
            fprintf(stderr, "ringmail send: %s\n", err);
            config_free(cfg);
            goto out;
        }
        po.external_retry = 1;
        po.on_data = send_on_data;
        po.may_send = send_may_send;
    }
    s.pool = pool_new(s.loop, &po, err, sizeof err);
    if (!s.pool) {
        fprintf(stderr, "ringmail send: %s\n", err);
        goto out;
    }
    if (s.o.metrics_addr) {
        s.metrics = metrics_new(s.loop, s.o.metrics_addr, send_metrics_render, &s, err, sizeof err);
        if (!s.metrics) {
            fprintf(stderr, "ringmail send: --metrics: %s\n", err);
            goto out;
        }
    }
    send_warn_opportunistic(&s, cfg);
    s.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s.sigfd < 0) {
        perror("ringmail send: signalfd");
        goto out;
    }
    send_sig_arm(&s);
    if (s.loader) {
        send_watch_arm(&s, &s.loader_watch, loader_fd(s.loader));
        if (s.prep) {
            send_watch_arm(&s, &s.prep_watch, prepare_fd(s.prep));
        }
    }
    loop_timer_init(&s.status_timer, send_on_status, &s);
    if (!s.o.json && isatty(STDERR_FILENO)) {
        loop_timer_set(s.loop, &s.status_timer, 1000);
    }
    s.t0 = send_now();
    send_feed(&s);
    loop_run(s.loop);
    if (isatty(STDERR_FILENO) && !s.o.json) {
        fprintf(stderr, "\n");
    }
    send_report(&s, send_now() - s.t0);
    size_t unsent = pool_pending(s.pool) + (s.nlines - s.next);
    done = s.loader && loader_exhausted(s.loader);
    if (s.fenced) {
        rc = 1; /* the message above said why */
    } else if (s.interrupted && s.loader) {
        rc = 0; /* the stop's message and status follow the loader's stop */
    } else if (s.interrupted && unsent) {
        fprintf(stderr, "ringmail send: interrupted: %zu recipient%s not final\n", unsent,
                unsent == 1 ? "" : "s");
        rc = 1;
    } else {
        rc = 0;
    }
out:
    if (s.pool) {
        pool_release_all(s.pool, send_release);
    }
    if (s.prep) {
        prepare_stop(s.prep); /* what it still holds stays claimed: released below */
        s.prep = NULL;
    }
    if (s.loader) {
        /* Every result to PostgreSQL, then unsent claims go back to the
         * queue: after a stop signal until its bound (SEND_STOP_DB_MS),
         * else up to a minute; a stop signal now hurries it. */
        send_guard_start(&s);
        struct loader_stop_info info;
        uint64_t at = __atomic_load_n(&s.stop_at_ms, __ATOMIC_SEQ_CST);
        uint64_t deadline = at ? at + SEND_STOP_DB_MS : loader_now_ms() + 63000;
        int lrc = loader_stop_by(s.loader, deadline, &s.hurry_ms, &info);
        s.loader = NULL;
        at = __atomic_load_n(&s.stop_at_ms, __ATOMIC_SEQ_CST);
        if (at && !s.fenced && rc != 2) {
            double took = (double)(loader_now_ms() - at) / 1000;
            unsigned lease = s.o.lease_s ? s.o.lease_s : 10;
            if (info.abandoned || info.unwritten > 0 || info.requeued < 0) {
                fprintf(stderr,
                        "ringmail send: stopped after %.1f s without the database in time: %zu "
                        "result%s wait%s in the journal %s for the next start of node %s; the "
                        "claims not attempted stay node %s's until then (or until another node "
                        "takes them over once its %u s lease runs out)\n",
                        took, info.unwritten, info.unwritten == 1 ? "" : "s",
                        info.unwritten == 1 ? "s" : "", s.o.journal, s.o.node, s.o.node, lease);
                rc = 1;
            } else {
                fprintf(stderr,
                        "ringmail send: stopped after %.1f s; every result is written; %lld "
                        "claimed recipient%s went back to the queue%s\n",
                        took, info.requeued, info.requeued == 1 ? "" : "s",
                        done && info.requeued == 0 ? "" : "; run again to resume");
                rc = done && info.requeued == 0 ? 0 : 1;
            }
        } else if (lrc < 0 && rc == 0) {
            rc = 1;
        }
        if (info.abandoned) {
            /* Database threads are stuck in libpq: they keep the loader's
             * memory, so the process ends here, its output flushed. */
            fflush(NULL);
            _exit(rc);
        }
    }
    if (s.tpl) {
        render_free(s.tpl);
        render_scratch_free(&s.scratch);
    }
    if (s.pool) {
        pool_free(s.pool);
    }
    if (s.loop) {
        loop_free(s.loop);
    }
    client_conn_thread_done();
    if (s.sigfd >= 0) {
        close(s.sigfd);
    }
    for (size_t i = 0; i < s.nlines; i++) {
        free(s.lines[i]);
    }
    free(s.lines);
    buf_free(&s.message);
    send_set_free(&s.suppressed);
    if (s.records) {
        fclose(s.records);
    }
    if (s.suppress_out) {
        fclose(s.suppress_out);
    }
    return rc;
}
