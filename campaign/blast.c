/*
 * blast - `ringmail blast`: deliver N generated messages to one server.
 * See blast.h.
 *
 * Each worker thread owns a loop, a TLS session cache and a set of
 * connection slots; a slot keeps one connection open at a time and, when
 * it closes, opens the next while messages remain. Messages are numbered;
 * a worker takes numbers from its own range, and a message that was never
 * attempted (a reused connection died before answering) goes back to the
 * worker's retry list. Counters are per worker and summed at the end.
 *
 * Just over 900 lines, and one file on purpose: messages, accounting, the
 * machine's callbacks, options, the run and the report all work on the
 * same two structs (blast_shared, blast_worker), and each section is short.
 *
 * Diagnostics: bad options print a reason and exit 2; otherwise 0,
 * whatever the outcomes (they are in the summary and --records).
 */
#include "campaign/outfile.h"
#include "campaign/blast.h"

#include <getopt.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "engine/opt.h"
#include "engine/buf.h"
#include "engine/client_conn.h"
#include "engine/clock.h"
#include "engine/loop.h"
#include "engine/netaddr.h"
#include "engine/num.h"
#include "engine/smtp_client.h"
#include "engine/tls.h"
#include "engine/tls_session_cache.h"
#include "engine/trace.h"
#include "pool/bounce.h"

#define BLAST_REASONS_MAX 64
/* Counters the status line reads from the main thread while workers run. */
#define BLAST_INC(x) __atomic_fetch_add(&(x), 1, __ATOMIC_RELAXED)
#define BLAST_READ(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

struct blast_options {
    const char *server;
    const char *server_name;
    const char *ca_file;
    const char *auth;
    const char *from;
    const char *domain;
    const char *helo;
    const char *records_path;
    unsigned long count;
    unsigned concurrency;
    unsigned msgs_per_conn;
    unsigned size;
    unsigned threads;
    unsigned timeout_ms;
    enum smtp_tls_policy policy;
    int implicit_tls;
    int json;
    int tls_max_12;
    int verbose; /* --verbose: engine/trace.h's lines on stderr */
};

struct blast_reason {
    char name[SMTP_REASON_MAX];
    unsigned long count;
};

struct blast_counts {
    unsigned long sent, accepted, deferred, rejected, failed;
    unsigned long connections, tls_full, tls_resumed, tls_none, tls13, tls12;
    unsigned long verify_ok, verify_failed, fallback_plaintext;
    struct blast_reason reasons[BLAST_REASONS_MAX];
    size_t nreasons;
    struct blast_reason session_ends[BLAST_REASONS_MAX]; /* why each connection ended */
    size_t nsession_ends;
};

struct blast_shared {
    const struct blast_options *opt;
    struct client_conn_config conn_cfg; /* read-only after start */
    char host[256];                     /* --server's host: the default SNI */
    char session_key[400];              /* conn_cfg.session_key */
    char auth_user[256], auth_pass[256];
    FILE *records; /* --records; lines written under records_lock */
    pthread_mutex_t records_lock;
    volatile sig_atomic_t interrupted;
    unsigned workers_done; /* atomic */
};

struct blast_worker;

struct blast_slot {
    struct blast_worker *w;
    struct client_conn *conn;      /* the slot's connection, NULL between connections */
    int skip_starttls;             /* opportunistic retry after a failed handshake */
    struct client_conn_config cfg; /* per-connection copy (skip_starttls differs) */
    struct smtp_message msg;       /* the message in flight, storage reused */
    struct smtp_rcpt rcpt;
    char rcpt_addr[128];
    unsigned long index;
    uint64_t txn_started_ms;
    buf_t body; /* owned: the generated message */
};

struct blast_worker {
    struct blast_shared *shared;
    pthread_t thread;
    struct loop *loop;
    struct tls_session_cache *cache;
    struct blast_slot *slots;
    unsigned nslots, open_slots;
    unsigned long next, end; /* message numbers still to take: [next, end) */
    unsigned long *retry;    /* owned: numbers to send again */
    size_t nretry, retry_cap;
    struct blast_counts counts;
    int warned_plaintext;
    struct loop_timer watch; /* notices SIGTERM/SIGINT while sessions wait */
};

/* How often a worker looks for an interruption: a stalled session must not
 * hold blast up for its whole timeout after SIGTERM. */
#define BLAST_WATCH_MS 100
/* Descriptors kept back from --concurrency: the rings, stdio, --records. */
#define BLAST_FD_RESERVE 32

/* ---- messages ---- */

static int blast_take(struct blast_worker *w, unsigned long *index)
{
    if (w->shared->interrupted) {
        return 0;
    }
    if (w->nretry > 0) {
        *index = w->retry[--w->nretry];
        return 1;
    }
    if (w->next < w->end) {
        *index = w->next++;
        return 1;
    }
    return 0;
}

static void blast_requeue(struct blast_worker *w, unsigned long index)
{
    if (w->nretry == w->retry_cap) {
        w->retry_cap = w->retry_cap ? w->retry_cap * 2 : 64;
        unsigned long *r = realloc(w->retry, w->retry_cap * sizeof *r);
        if (!r) {
            abort();
        }
        w->retry = r;
    }
    w->retry[w->nretry++] = index;
}

/* The body text is the same for every message; headers make each unique. */
static void blast_render(struct blast_slot *s, unsigned long i)
{
    const struct blast_options *o = s->w->shared->opt;
    buf_t *b = &s->body;
    buf_reset(b);
    snprintf(s->rcpt_addr, sizeof s->rcpt_addr, "user%lu@%s", i, o->domain);
    buf_appendf(b,
                "From: <%s>\r\nTo: <%s>\r\nSubject: ringmail blast %lu\r\n"
                "Message-ID: <blast.%lu.%d@%s>\r\nMIME-Version: 1.0\r\n"
                "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
                o->from, s->rcpt_addr, i, i, (int)getpid(), o->helo);
    static const char line[] = "The quick brown fox jumps over the lazy dog. ringmail blast "
                               "test body line.\r\n";
    while (buf_len(b) + sizeof line - 1 <= o->size) {
        buf_append(b, line, sizeof line - 1);
    }
    s->msg.mail_from = o->from;
    s->msg.rcpts = &s->rcpt;
    s->msg.nrcpts = 1;
    s->msg.data = buf_data(b);
    s->msg.len = buf_len(b);
    memset(&s->rcpt, 0, sizeof s->rcpt);
    s->rcpt.address = s->rcpt_addr;
    s->index = i;
}

/* ---- accounting ---- */

static void blast_reason_add(struct blast_reason *tab, size_t *n, const char *reason,
                             unsigned long count)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(tab[i].name, reason) == 0) {
            tab[i].count += count;
            return;
        }
    }
    if (*n < BLAST_REASONS_MAX) {
        snprintf(tab[*n].name, sizeof tab[0].name, "%s", reason);
        tab[(*n)++].count = count;
    }
}

static void blast_count_reason(struct blast_counts *c, const char *reason)
{
    blast_reason_add(c->reasons, &c->nreasons, reason, 1);
}

static void blast_count(struct blast_counts *c, enum smtp_outcome o, const char *reason)
{
    BLAST_INC(c->sent);
    switch (o) {
    case SMTP_OUTCOME_ACCEPTED:
        BLAST_INC(c->accepted);
        return;
    case SMTP_OUTCOME_DEFERRED:
        BLAST_INC(c->deferred);
        break;
    case SMTP_OUTCOME_REJECTED:
        BLAST_INC(c->rejected);
        break;
    default:
        BLAST_INC(c->failed);
        break;
    }
    blast_count_reason(c, reason);
}

static void blast_record(struct blast_slot *s, const struct smtp_rcpt *r)
{
    struct blast_shared *sh = s->w->shared;
    const struct tls_info *t = s->conn ? client_conn_tls(s->conn) : NULL;
    const struct client_conn_times *tm = s->conn ? client_conn_times(s->conn) : NULL;
    json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:s}", "rcpt", r->address, "outcome",
                          smtp_outcome_name(r->outcome), "reason", r->reason, "code", r->code,
                          "enhanced", r->enhanced, "text", r->text, "tls", t ? t->version : "none");
    if (t) {
        json_object_set_new(j, "cipher", json_string(t->cipher));
        json_object_set_new(j, "group", json_string(t->group));
        json_object_set_new(j, "resumed", json_boolean(t->resumed));
        json_object_set_new(j, "verify", json_string(t->verify_text));
        json_object_set_new(j, "peer_subject", json_string(t->subject));
        json_object_set_new(j, "peer_issuer", json_string(t->issuer));
        json_object_set_new(j, "peer_sha256", json_string(t->sha256));
    }
    if (tm) {
        json_object_set_new(j, "connect_ms", json_integer((json_int_t)tm->connect_ms));
        json_object_set_new(j, "tls_ms", json_integer((json_int_t)tm->tls_ms));
    }
    if (s->txn_started_ms) {
        uint64_t now = loop_clock_ms(s->w->loop);
        json_object_set_new(j, "transaction_ms",
                            json_integer((json_int_t)(now - s->txn_started_ms)));
    }
    json_object_set_new(j, "data_in_flight", json_boolean(s->msg.data_in_flight));
    if ((r->outcome == SMTP_OUTCOME_REJECTED || r->outcome == SMTP_OUTCOME_DEFERRED) &&
        r->code >= 400) {
        /* The shipped rules only: blast reads no config. As send's records. */
        struct bounce_result b;
        bounce_classify(NULL, r->code, r->enhanced, r->text, &b);
        char why[BOUNCE_PATTERN_MAX + 32];
        snprintf(why, sizeof why, "%s: %s", b.source, b.rule);
        json_object_set_new(j, "category", json_string(bounce_category_name(b.category)));
        json_object_set_new(j, "bounce", json_string(bounce_kind_name(b.kind)));
        json_object_set_new(j, "bounce_rule", json_string(why));
    }
    char *line = json_dumps(j, JSON_COMPACT);
    pthread_mutex_lock(&sh->records_lock);
    fprintf(sh->records, "%s\n", line);
    pthread_mutex_unlock(&sh->records_lock);
    free(line);
    json_decref(j);
}

/* Count a connection once, as it closes: every connection opened is in
 * exactly one of tls_full, tls_resumed and tls_none (none: plaintext, or it
 * failed before its handshake finished, connect failures included), and in
 * session_ends under the reason it ended. */
static void blast_count_conn(struct blast_slot *s, struct client_conn *conn)
{
    struct blast_counts *c = &s->w->counts;
    const char *end = smtp_client_end_reason(client_conn_smtp(conn));
    blast_reason_add(c->session_ends, &c->nsession_ends, end ? end : "unknown", 1);
    const struct tls_info *t = client_conn_tls(conn);
    if (!t) {
        c->tls_none++;
        const char *why = NULL;
        if (smtp_client_tls_fallback(client_conn_smtp(conn), &why)) {
            c->fallback_plaintext++;
            if (!s->w->warned_plaintext) {
                s->w->warned_plaintext = 1;
                fprintf(stderr,
                        "ringmail: WARNING: opportunistic TLS: delivering to %s IN PLAINTEXT "
                        "(%s); recorded as tls=none\n",
                        s->w->shared->opt->server, why ? why : "no TLS");
            }
        }
        return;
    }
    if (t->resumed) {
        c->tls_resumed++;
    } else {
        c->tls_full++;
    }
    if (strcmp(t->version, "TLSv1.3") == 0) {
        c->tls13++;
    } else if (strcmp(t->version, "TLSv1.2") == 0) {
        c->tls12++;
    }
    if (t->verify_result == 0) {
        c->verify_ok++;
    } else {
        c->verify_failed++;
    }
}

/* ---- the machine's callbacks ---- */

static struct smtp_message *blast_next_message(void *owner)
{
    struct blast_slot *s = owner;
    unsigned long i;
    if (!blast_take(s->w, &i)) {
        return NULL;
    }
    blast_render(s, i);
    s->txn_started_ms = loop_clock_ms(s->w->loop);
    return &s->msg;
}

static void blast_message_done(void *owner, struct smtp_message *m)
{
    struct blast_slot *s = owner;
    const struct smtp_rcpt *r = &m->rcpts[0];
    if (r->outcome == SMTP_OUTCOME_RETRY) {
        blast_requeue(s->w, s->index);
        return;
    }
    blast_count(&s->w->counts, r->outcome, r->reason);
    if (s->w->shared->records) {
        blast_record(s, r);
    }
    s->txn_started_ms = 0;
}

static void blast_session_failed(void *owner, enum smtp_outcome o, const char *reason,
                                 const struct smtp_reply *reply, const char *text)
{
    struct blast_slot *s = owner;
    const struct blast_options *opt = s->w->shared->opt;
    if (opt->policy == SMTP_TLS_OPPORTUNISTIC && !s->skip_starttls &&
        strcmp(reason, "tls_handshake_failed") == 0) {
        /* The table's opportunistic row: the next connection stays plaintext. */
        s->skip_starttls = 1;
        return;
    }
    /* A session that never got to a message costs one message that
     * attempt: each waiting message gets its recorded, explained outcome. */
    unsigned long i;
    if (!blast_take(s->w, &i)) {
        return;
    }
    blast_render(s, i);
    s->txn_started_ms = 0;
    smtp_rcpt_set(&s->rcpt, o, reason, reply, text);
    blast_count(&s->w->counts, o, reason);
    if (s->w->shared->records) {
        blast_record(s, &s->rcpt);
    }
}

static const struct smtp_client_ops blast_ops = {
    .next_message = blast_next_message,
    .message_done = blast_message_done,
    .session_failed = blast_session_failed,
};

static int blast_has_work(const struct blast_worker *w)
{
    return !w->shared->interrupted && (w->nretry > 0 || w->next < w->end);
}

static void blast_slot_closed(void *owner, struct client_conn *conn);

static void blast_slot_open(struct blast_slot *s)
{
    struct blast_worker *w = s->w;
    s->cfg = w->shared->conn_cfg;
    s->cfg.smtp.skip_starttls = s->skip_starttls;
    s->cfg.session_cache = w->cache;
    s->conn = client_conn_new(w->loop, &s->cfg, &blast_ops, blast_slot_closed, s);
    if (!s->conn) {
        fprintf(stderr, "ringmail: out of memory opening a connection\n");
        abort();
    }
    w->counts.connections++;
    BLAST_INC(w->open_slots);
    client_conn_start(s->conn);
}

static void blast_slot_closed(void *owner, struct client_conn *conn)
{
    struct blast_slot *s = owner;
    struct blast_worker *w = s->w;
    blast_count_conn(s, conn);
    s->conn = NULL;
    __atomic_fetch_sub(&w->open_slots, 1, __ATOMIC_RELAXED);
    if (blast_has_work(w)) {
        blast_slot_open(s);
    } else if (w->open_slots == 0) {
        loop_timer_cancel(w->loop, &w->watch);
        loop_stop_when_idle(w->loop);
    }
}

/* blast_watch - interrupted: end every open session now (its message is
 * deferred, reason interrupted) instead of waiting for stalled servers. */
static void blast_watch(struct loop_timer *t)
{
    struct blast_worker *w = t->owner;
    if (!w->shared->interrupted) {
        loop_timer_set(w->loop, &w->watch, BLAST_WATCH_MS);
        return;
    }
    for (unsigned i = 0; i < w->nslots; i++) {
        if (w->slots[i].conn) {
            client_conn_abort(w->slots[i].conn, "interrupted", "ringmail blast was interrupted");
        }
    }
    if (w->open_slots == 0) {
        loop_stop_when_idle(w->loop);
    }
}

static void *blast_worker_run(void *arg)
{
    struct blast_worker *w = arg;
    w->loop = loop_new(4096);
    if (!w->loop) {
        perror("ringmail: io_uring setup");
        return NULL;
    }
    w->cache = tls_session_cache_new();
    for (unsigned i = 0; i < w->nslots; i++) {
        w->slots[i].w = w;
    }
    loop_timer_init(&w->watch, blast_watch, w);
    for (unsigned i = 0; i < w->nslots && blast_has_work(w); i++) {
        blast_slot_open(&w->slots[i]);
    }
    if (w->open_slots > 0) {
        loop_timer_set(w->loop, &w->watch, BLAST_WATCH_MS);
        loop_run(w->loop);
    }
    for (unsigned i = 0; i < w->nslots; i++) {
        buf_free(&w->slots[i].body);
    }
    tls_session_cache_free(w->cache);
    loop_free(w->loop);
    client_conn_thread_done();
    __atomic_fetch_add(&w->shared->workers_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* ---- options ---- */

static void blast_usage(FILE *f)
{
    fprintf(f, "usage: ringmail blast --server HOST:PORT --count N --concurrency C [options]\n"
               "\n"
               "  --server HOST:PORT     the SMTP server (a name is resolved once, at start)\n"
               "  --count N              messages to deliver (default 1000)\n"
               "  --concurrency C        connections open at once (default 20; at most the\n"
               "                         open-file limit less 32, with a warning)\n"
               "  --msgs-per-conn M      messages per connection, 0 = unlimited (default 0)\n"
               "  --size BYTES           message size (default 2048)\n"
               "  --tls POLICY           required (default) | verify | opportunistic | none\n"
               "  --implicit-tls         TLS from the first byte (port 465)\n"
               "  --ca FILE              CA bundle for verify (default the system bundle)\n"
               "  --server-name NAME     SNI and certificate name (default: HOST)\n"
               "  --auth USER:PASS       AUTH PLAIN/LOGIN inside TLS (or env RINGMAIL_AUTH)\n"
               "  --from ADDR            envelope sender (default blast@ringmail.test)\n"
               "  --domain D             recipients are user<i>@D (default example.test)\n"
               "  --helo NAME            EHLO name (default ringmail.test)\n"
               "  --threads N            worker threads (default: one per core)\n"
               "  --timeout-ms MS        the deadline of every wait, from its start, not per byte\n"
               "                         (default: 30000, DATA phase 60000)\n"
               "  --records FILE         one JSON line per message: outcome, reply, TLS facts,\n"
               "                         and a failure's bounce category\n"
               "  --json                 print one JSON summary object on stdout\n"
               "  --verbose              every connection's state transitions on stderr\n");
}

enum {
    BLAST_OPT_SERVER = 256,
    BLAST_OPT_COUNT,
    BLAST_OPT_CONC,
    BLAST_OPT_MPC,
    BLAST_OPT_SIZE,
    BLAST_OPT_TLS,
    BLAST_OPT_IMPLICIT,
    BLAST_OPT_CA,
    BLAST_OPT_AUTH,
    BLAST_OPT_JSON,
    BLAST_OPT_FROM,
    BLAST_OPT_DOMAIN,
    BLAST_OPT_HELO,
    BLAST_OPT_THREADS,
    BLAST_OPT_TIMEOUT,
    BLAST_OPT_RECORDS,
    BLAST_OPT_SNI,
    BLAST_OPT_VERBOSE,
    BLAST_OPT_HELP,
};

/* blast_number - --NAME's value S in [MIN, MAX] into *OUT, or say it is bad */
static int blast_number(const char *name, const char *s, unsigned long min, unsigned long max,
                        unsigned long *out)
{
    if (num_parse_ulong(s, min, max, out) < 0) {
        fprintf(stderr, "ringmail blast: bad value for --%s: '%s'\n", name, s);
        return -1;
    }
    return 0;
}

static int blast_parse(int argc, char **argv, struct blast_options *o)
{
    static const struct option longopts[] = {
        {"server", required_argument, 0, BLAST_OPT_SERVER},
        {"count", required_argument, 0, BLAST_OPT_COUNT},
        {"concurrency", required_argument, 0, BLAST_OPT_CONC},
        {"msgs-per-conn", required_argument, 0, BLAST_OPT_MPC},
        {"size", required_argument, 0, BLAST_OPT_SIZE},
        {"tls", required_argument, 0, BLAST_OPT_TLS},
        {"implicit-tls", no_argument, 0, BLAST_OPT_IMPLICIT},
        {"ca", required_argument, 0, BLAST_OPT_CA},
        {"server-name", required_argument, 0, BLAST_OPT_SNI},
        {"auth", required_argument, 0, BLAST_OPT_AUTH},
        {"json", no_argument, 0, BLAST_OPT_JSON},
        {"from", required_argument, 0, BLAST_OPT_FROM},
        {"domain", required_argument, 0, BLAST_OPT_DOMAIN},
        {"helo", required_argument, 0, BLAST_OPT_HELO},
        {"threads", required_argument, 0, BLAST_OPT_THREADS},
        {"timeout-ms", required_argument, 0, BLAST_OPT_TIMEOUT},
        {"records", required_argument, 0, BLAST_OPT_RECORDS},
        {"verbose", no_argument, 0, BLAST_OPT_VERBOSE},
        {"help", no_argument, 0, BLAST_OPT_HELP},
        {0, 0, 0, 0},
    };
    unsigned long v;
    int ch;
    optind = 1;
    while ((ch = opt_getopt(argc, argv, longopts)) != -1) {
        switch (ch) {
        case BLAST_OPT_SERVER:
            o->server = optarg;
            break;
        case BLAST_OPT_COUNT:
            if (blast_number("count", optarg, 0, 1ul << 40, &o->count) < 0)
                return -1;
            break;
        case BLAST_OPT_CONC:
            if (blast_number("concurrency", optarg, 1, 1000000, &v) < 0)
                return -1;
            o->concurrency = (unsigned)v;
            break;
        case BLAST_OPT_MPC:
            if (blast_number("msgs-per-conn", optarg, 0, 1u << 30, &v) < 0)
                return -1;
            o->msgs_per_conn = (unsigned)v;
            break;
        case BLAST_OPT_SIZE:
            if (blast_number("size", optarg, 0, 64u << 20, &v) < 0)
                return -1;
            o->size = (unsigned)v;
            break;
        case BLAST_OPT_TLS:
            if (smtp_tls_policy_parse(optarg, &o->policy) < 0) {
                fprintf(stderr,
                        "ringmail blast: --tls must be required, verify, opportunistic or none\n");
                return -1;
            }
            break;
        case BLAST_OPT_IMPLICIT:
            o->implicit_tls = 1;
            break;
        case BLAST_OPT_CA:
            o->ca_file = optarg;
            break;
        case BLAST_OPT_SNI:
            o->server_name = optarg;
            break;
        case BLAST_OPT_AUTH:
            o->auth = optarg;
            break;
        case BLAST_OPT_JSON:
            o->json = 1;
            break;
        case BLAST_OPT_FROM:
            o->from = optarg;
            break;
        case BLAST_OPT_DOMAIN:
            o->domain = optarg;
            break;
        case BLAST_OPT_HELO:
            o->helo = optarg;
            break;
        case BLAST_OPT_THREADS:
            if (blast_number("threads", optarg, 1, 256, &v) < 0)
                return -1;
            o->threads = (unsigned)v;
            break;
        case BLAST_OPT_TIMEOUT:
            if (blast_number("timeout-ms", optarg, 1, 3600000, &v) < 0)
                return -1;
            o->timeout_ms = (unsigned)v;
            break;
        case BLAST_OPT_RECORDS:
            o->records_path = optarg;
            break;
        case BLAST_OPT_VERBOSE:
            o->verbose = 1;
            break;
        case BLAST_OPT_HELP:
            blast_usage(stdout);
            exit(0);
        default:
            blast_usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ringmail blast: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (!o->server) {
        fprintf(stderr, "ringmail blast: --server HOST:PORT is required\n");
        blast_usage(stderr);
        return -1;
    }
    if (!o->auth) {
        o->auth = getenv("RINGMAIL_AUTH");
    }
    if (o->auth && o->policy == SMTP_TLS_NONE) {
        fprintf(stderr, "ringmail blast: --auth needs TLS: credentials never go in plaintext\n");
        return -1;
    }
    return 0;
}

/* ---- run ---- */

/* The run a SIGINT/SIGTERM interrupts: a handler has no argument, so this
 * one pointer is the only state outside the allocated blast_shared. */
static struct blast_shared *blast_signal_target;

static void blast_on_signal(int sig)
{
    (void)sig;
    if (blast_signal_target) {
        blast_signal_target->interrupted = 1;
    }
}

static int blast_setup(struct blast_shared *sh, struct blast_options *o)
{
    struct client_conn_config *cfg = &sh->conn_cfg;
    char err[512];
    if (netaddr_parse(o->server, &cfg->addr, &cfg->addrlen, sh->host, sizeof sh->host, err,
                      sizeof err) < 0) {
        fprintf(stderr, "ringmail blast: %s\n", err);
        return -1;
    }
    cfg->server_name = o->server_name ? o->server_name : sh->host;
    if (o->policy != SMTP_TLS_NONE) {
        struct tls_client_options topt = {
            .ca_file = o->ca_file,
            .verify_peer = o->policy == SMTP_TLS_VERIFY,
        };
        cfg->tls_ctx = tls_client_ctx_new(&topt, err, sizeof err);
        if (!cfg->tls_ctx) {
            fprintf(stderr, "ringmail blast: %s\n", err);
            return -1;
        }
        client_conn_tls_setup(cfg->tls_ctx);
    }
    cfg->session_key =
        tls_session_cache_key(sh->session_key, sizeof sh->session_key, cfg->server_name,
                              (const struct sockaddr *)&cfg->addr, smtp_tls_policy_name(o->policy));
    const char *auth = o->auth;
    if (auth) {
        const char *colon = strchr(auth, ':');
        if (!colon) {
            fprintf(stderr, "ringmail blast: --auth wants USER:PASS\n");
            return -1;
        }
        snprintf(sh->auth_user, sizeof sh->auth_user, "%.*s", (int)(colon - auth), auth);
        snprintf(sh->auth_pass, sizeof sh->auth_pass, "%s", colon + 1);
        cfg->smtp.auth_user = sh->auth_user;
        cfg->smtp.auth_pass = sh->auth_pass;
    }
    unsigned t = o->timeout_ms;
    cfg->smtp.helo_name = o->helo;
    cfg->smtp.tls_policy = o->policy;
    cfg->smtp.implicit_tls = o->implicit_tls;
    cfg->smtp.max_msgs = o->msgs_per_conn;
    cfg->smtp.timeout_greeting_ms = t ? t : 30000;
    cfg->smtp.timeout_command_ms = t ? t : 30000;
    cfg->smtp.timeout_data_ms = t ? t : 30000;
    cfg->smtp.timeout_data_done_ms = t ? t : 60000;
    cfg->timeout_connect_ms = t ? t : 10000;
    cfg->timeout_tls_ms = t ? t : 30000;
    if (o->records_path) {
        char why[256];
        sh->records = outfile_open(o->records_path, 0, why, sizeof why);
        if (!sh->records) {
            fprintf(stderr, "ringmail blast: --records %s: %s\n", o->records_path, why);
            return -1;
        }
    }
    if (o->policy == SMTP_TLS_OPPORTUNISTIC && !o->implicit_tls) {
        /* Implicit TLS has no plaintext to fall back to. */
        fprintf(stderr, "ringmail: WARNING: TLS policy 'opportunistic': mail goes IN PLAINTEXT "
                        "to servers without STARTTLS\n");
    }
    return 0;
}

static void blast_sum(struct blast_counts *t, const struct blast_counts *c)
{
    t->sent += c->sent;
    t->accepted += c->accepted;
    t->deferred += c->deferred;
    t->rejected += c->rejected;
    t->failed += c->failed;
    t->connections += c->connections;
    t->tls_full += c->tls_full;
    t->tls_resumed += c->tls_resumed;
    t->tls_none += c->tls_none;
    t->tls13 += c->tls13;
    t->tls12 += c->tls12;
    t->verify_ok += c->verify_ok;
    t->verify_failed += c->verify_failed;
    t->fallback_plaintext += c->fallback_plaintext;
    for (size_t i = 0; i < c->nreasons; i++) {
        blast_reason_add(t->reasons, &t->nreasons, c->reasons[i].name, c->reasons[i].count);
    }
    for (size_t i = 0; i < c->nsession_ends; i++) {
        blast_reason_add(t->session_ends, &t->nsession_ends, c->session_ends[i].name,
                         c->session_ends[i].count);
    }
}

static double blast_seconds(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

static void blast_report(const struct blast_options *o, const struct blast_counts *t, double wall)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = blast_seconds(&ru.ru_utime) + blast_seconds(&ru.ru_stime);
    double rate = wall > 0 ? (double)t->sent / wall : 0;
    if (!o->json) {
        printf("sent %lu: accepted %lu, deferred %lu, rejected %lu, failed %lu\n", t->sent,
               t->accepted, t->deferred, t->rejected, t->failed);
        /* The same table as ringmail send's per-ISP one, with the one server as its row. */
        unsigned long handshakes = t->tls_full + t->tls_resumed;
        printf("%-22s %9s %9s %9s %9s %7s %9s %6s %8s\n", "server", "attempts", "accepted",
               "deferred", "rejected", "failed", "rate/s", "conns", "resumed%");
        printf("%-22s %9lu %9lu %9lu %9lu %7lu %9.1f %6lu %7.1f%%\n", o->server, t->sent,
               t->accepted, t->deferred, t->rejected, t->failed,
               wall > 0 ? (double)t->accepted / wall : 0.0, t->connections,
               handshakes ? 100.0 * (double)t->tls_resumed / (double)handshakes : 0.0);
        printf("connections %lu: tls full %lu, resumed %lu, none %lu\n", t->connections,
               t->tls_full, t->tls_resumed, t->tls_none);
        printf("wall %.3f s, cpu %.3f s, %.0f msgs/s, %.1f us cpu/msg, peak rss %ld KB\n", wall,
               cpu, rate, t->sent ? cpu * 1e6 / (double)t->sent : 0.0, ru.ru_maxrss);
        for (size_t i = 0; i < t->nreasons; i++) {
            printf("  %-32s %lu\n", t->reasons[i].name, t->reasons[i].count);
        }
        printf("sessions ended:");
        for (size_t i = 0; i < t->nsession_ends; i++) {
            printf("%s %s %lu", i ? "," : "", t->session_ends[i].name, t->session_ends[i].count);
        }
        printf("\n");
        return;
    }
    json_t *reasons = json_object();
    for (size_t i = 0; i < t->nreasons; i++) {
        json_object_set_new(reasons, t->reasons[i].name,
                            json_integer((json_int_t)t->reasons[i].count));
    }
    json_t *ends = json_object();
    for (size_t i = 0; i < t->nsession_ends; i++) {
        json_object_set_new(ends, t->session_ends[i].name,
                            json_integer((json_int_t)t->session_ends[i].count));
    }
    json_t *j = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, "
        "s:f, s:I, s:o, s:o}",
        "sent", (json_int_t)t->sent, "accepted", (json_int_t)t->accepted, "deferred",
        (json_int_t)t->deferred, "rejected", (json_int_t)t->rejected, "failed",
        (json_int_t)t->failed, "tls_full", (json_int_t)t->tls_full, "tls_resumed",
        (json_int_t)t->tls_resumed, "tls_none", (json_int_t)t->tls_none, "tls13",
        (json_int_t)t->tls13, "tls12", (json_int_t)t->tls12, "verify_ok", (json_int_t)t->verify_ok,
        "verify_failed", (json_int_t)t->verify_failed, "plaintext_fallback",
        (json_int_t)t->fallback_plaintext, "connections", (json_int_t)t->connections, "wall_s",
        wall, "cpu_s", cpu, "msgs_per_s", rate, "cpu_us_per_msg",
        t->sent ? cpu * 1e6 / (double)t->sent : 0.0, "peak_rss_kb", (json_int_t)ru.ru_maxrss,
        "reasons", reasons, "session_ends", ends);
    char *s = json_dumps(j, JSON_COMPACT);
    printf("%s\n", s);
    free(s);
    json_decref(j);
}

/* On a terminal: one status line per second until the workers finish. */
static void blast_status_loop(struct blast_shared *sh, struct blast_worker *w, unsigned nw,
                              double t0)
{
    unsigned long last_sent = 0;
    double last = t0;
    while (__atomic_load_n(&sh->workers_done, __ATOMIC_ACQUIRE) < nw) {
        for (int i = 0; i < 10 && __atomic_load_n(&sh->workers_done, __ATOMIC_ACQUIRE) < nw; i++) {
            struct timespec ts = {0, 100000000};
            nanosleep(&ts, NULL);
        }
        unsigned long sent = 0, acc = 0, def = 0, rej = 0, fail = 0, conns = 0;
        for (unsigned i = 0; i < nw; i++) {
            sent += BLAST_READ(w[i].counts.sent);
            acc += BLAST_READ(w[i].counts.accepted);
            def += BLAST_READ(w[i].counts.deferred);
            rej += BLAST_READ(w[i].counts.rejected);
            fail += BLAST_READ(w[i].counts.failed);
            conns += BLAST_READ(w[i].open_slots);
        }
        double now = clock_s();
        fprintf(stderr,
                "\r%7.0f msgs/s  sent %lu  accepted %lu  deferred %lu  rejected %lu  failed %lu"
                "  connections %lu   ",
                now > last ? (double)(sent - last_sent) / (now - last) : 0.0, sent, acc, def, rej,
                fail, conns);
        last_sent = sent;
        last = now;
    }
    fprintf(stderr, "\n");
}

/* blast_shared_free - what blast_setup opened, and sh itself */
static void blast_shared_free(struct blast_shared *sh)
{
    if (sh->records) {
        fclose(sh->records);
    }
    tls_ctx_free(sh->conn_cfg.tls_ctx);
    pthread_mutex_destroy(&sh->records_lock);
    free(sh);
}

/* Each connection is a descriptor: more connections than the open-file
 * limit allows would make the extra ones wait for a descriptor anyway. */
static void blast_cap_concurrency(struct blast_options *o)
{
    uint64_t nofile = loop_nofile_raise();
    uint64_t avail = nofile > 2 * BLAST_FD_RESERVE ? nofile - BLAST_FD_RESERVE : BLAST_FD_RESERVE;
    if (o->concurrency > avail) {
        fprintf(stderr,
                "ringmail: WARNING: --concurrency %u is over the open-file limit "
                "(RLIMIT_NOFILE %llu): using %llu connections\n",
                o->concurrency, (unsigned long long)nofile, (unsigned long long)avail);
        o->concurrency = (unsigned)avail;
    }
}

int blast_main(int argc, char **argv)
{
    struct blast_options o = {
        .count = 1000,
        .concurrency = 20,
        .size = 2048,
        .from = "blast@ringmail.test",
        .domain = "example.test",
        .helo = "ringmail.test",
    };
    if (blast_parse(argc, argv, &o) < 0) {
        return 2;
    }
    if (o.verbose) {
        trace_enable();
    }
    struct blast_shared *sh = calloc(1, sizeof *sh);
    if (!sh) {
        abort();
    }
    sh->opt = &o;
    pthread_mutex_init(&sh->records_lock, NULL);
    if (blast_setup(sh, &o) < 0) {
        blast_shared_free(sh);
        return 2;
    }
    blast_cap_concurrency(&o);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned nw = o.threads ? o.threads : (unsigned)(ncpu > 0 ? ncpu : 1);
    if (nw > o.concurrency) {
        nw = o.concurrency;
    }
    blast_signal_target = sh;
    struct sigaction sa = {.sa_handler = blast_on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct blast_worker *workers = calloc(nw, sizeof *workers);
    unsigned long start = 0;
    double t0 = clock_s();
    for (unsigned i = 0; i < nw; i++) {
        struct blast_worker *w = &workers[i];
        unsigned long share = o.count / nw + (i < o.count % nw ? 1 : 0);
        w->shared = sh;
        w->next = start;
        w->end = start + share;
        start += share;
        w->nslots = o.concurrency / nw + (i < o.concurrency % nw ? 1 : 0);
        w->slots = calloc(w->nslots, sizeof *w->slots);
        pthread_create(&w->thread, NULL, blast_worker_run, w);
    }
    if (!o.json && isatty(STDERR_FILENO)) {
        blast_status_loop(sh, workers, nw, t0);
    }
    struct blast_counts total;
    memset(&total, 0, sizeof total);
    for (unsigned i = 0; i < nw; i++) {
        pthread_join(workers[i].thread, NULL);
        blast_sum(&total, &workers[i].counts);
        free(workers[i].slots);
        free(workers[i].retry);
    }
    double wall = clock_s() - t0;
    blast_report(&o, &total, wall);
    free(workers);
    blast_signal_target = NULL; /* only this thread is left: no handler runs beside it */
    blast_shared_free(sh);
    return 0;
}
