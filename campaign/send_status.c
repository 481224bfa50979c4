/*
 * send_status - signals, the status line and /metrics of `ringmail send`.
 * See send_int.h.
 *
 * The signals arrive through a signalfd polled on the loop: SIGHUP reloads
 * the config, SIGINT/SIGTERM stop. From the first stop signal on, a guard
 * thread takes SIGINT/SIGTERM over and bounds the stop: a second signal,
 * or SEND_STOP_MS passing, ends the process at once.
 *
 * The live view: once a second, total, final, %, ETA and why each ISP
 * waits (the README's "The live view"). On a terminal stderr is replaced
 * by a stream that erases the status block before any line and draws it
 * again after, whichever thread prints; elsewhere the view is printed as
 * whole lines every 10 s.
 *
 * Diagnostics: none of its own beyond the stop's and the reload's lines;
 * the view degrades to this run's counts when the database's are missing.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "campaign/send_int.h"
#include "engine/clock.h"

void send_signals_block(struct send *s)
{
    /* Before any thread starts (the loader's inherits the mask): the
     * signals arrive only through the signalfd on the loop. */
    sigemptyset(&s->sig_mask);
    sigaddset(&s->sig_mask, SIGHUP);
    sigaddset(&s->sig_mask, SIGINT);
    sigaddset(&s->sig_mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &s->sig_mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&s->stop_mask);
    sigaddset(&s->stop_mask, SIGINT);
    sigaddset(&s->stop_mask, SIGTERM);
}

static void send_sig_arm(struct send *s);
static void send_view_end(struct send *s);

void send_stop(struct send *s)
{
    if (s->finishing) {
        return;
    }
    s->finishing = 1;
    pool_stop(s->pool);
    metrics_free(s->metrics);
    s->metrics = NULL;
    loop_timer_cancel(s->loop, &s->status_timer);
    send_view_end(s);
    send_hold_quiet(s);
    send_cluster_quiet(s);
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
/* Loudly, at start and after a reload: which ISPs may get mail in plaintext. */
void send_warn_opportunistic(const struct send *s, const struct config *cfg)
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
    s->bounce_rules = c->bounce.rules;
    send_view_config(s, c);
    pool_reload(s->pool, c);
    send_warn_opportunistic(s, c);
    config_reload_say(stderr, s->o.config_path, c); /* c is the pool's now: what changed */
}
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
    uint64_t now = clock_ms(), none = 0;
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
    s->first_sig_ms = clock_ms();
}

static int send_same_stop(const struct send *s, int sig, int pid)
{
    return pid > 0 && sig == s->first_sig && pid == s->first_sig_pid &&
           clock_ms() < s->first_sig_ms + SEND_SAME_STOP_MS;
}

/* The guard: once started, the only reader of SIGINT/SIGTERM, until
 * send_guard_stop. */
static void *send_guard(void *arg)
{
    struct send *s = arg;
    while (!__atomic_load_n(&s->guard_quit, __ATOMIC_SEQ_CST)) {
        uint64_t at = __atomic_load_n(&s->stop_at_ms, __ATOMIC_SEQ_CST);
        uint64_t now = clock_ms(), left = 1000;
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
        if (__atomic_load_n(&s->guard_quit, __ATOMIC_SEQ_CST)) {
            break; /* the run is over: send_guard_stop woke us */
        }
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

void send_guard_start(struct send *s)
{
    if (!s->guard_started && pthread_create(&s->guard, NULL, send_guard, s) == 0) {
        s->guard_started = 1;
    }
}

void send_guard_stop(struct send *s)
{
    if (!s->guard_started) {
        return;
    }
    __atomic_store_n(&s->guard_quit, 1, __ATOMIC_SEQ_CST);
    /* SIGTERM is blocked in every thread: sent to the guard alone, it ends
     * the guard's sigtimedwait, and the guard sees guard_quit. */
    pthread_kill(s->guard, SIGTERM);
    pthread_join(s->guard, NULL);
    s->guard_started = 0;
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

/* ---- the live view ----
 *
 * Once a second the view is made from the run's counts, the pool's ISPs
 * and (campaign mode) the database's counts, which the loader's heartbeat
 * thread takes every few seconds: total, final, %, ETA, and per ISP why it
 * does not send. On a terminal it is a block of lines redrawn in place
 * (send_term); elsewhere a status line goes to stderr every 10 s. */

#define SEND_STATUS_TICK_MS 1000
#define SEND_STATUS_LOG_MS 10000 /* stderr not a terminal: a status line this often */
#define SEND_STATUS_REASONS 3    /* ISP reasons shown; the rest are "+N more" */
#define SEND_TERM_BLOCK 4096

/* The terminal's status block. stderr is replaced by a stream whose
 * writes go through send_term_write: every line any thread prints (the
 * pool's backoff lines, the loader's database lines, a reload) first
 * erases the block and then has it drawn again below, so no log line is
 * ever glued onto the status. Allocated once and never freed: stderr goes
 * through it until the process ends. */
struct send_term {
    pthread_mutex_t mu;
    int fd;                      /* the terminal: stderr's descriptor */
    char block[SEND_TERM_BLOCK]; /* the block's lines, joined by \n, as drawn */
    size_t len;
    unsigned nlines; /* lines in block */
    unsigned up;     /* lines of it on the screen now, the cursor at the end of the last */
    int mid_line;    /* the last write of a log line did not end it */
    int ended;       /* the run is over: the last block stays, nothing is drawn again */
    int just_ended;  /* and nothing was written since its newline */
};

static void send_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* send_term_erase - the block off the screen, the cursor where it began (mu held) */
static void send_term_erase(struct send_term *t)
{
    if (!t->up) {
        return;
    }
    char seq[16 * 64];
    size_t n = 0;
    n += (size_t)snprintf(seq + n, sizeof seq - n, "\r\033[2K");
    for (unsigned i = 1; i < t->up && n + 16 < sizeof seq; i++) {
        n += (size_t)snprintf(seq + n, sizeof seq - n, "\033[1A\r\033[2K");
    }
    send_write_all(t->fd, seq, n);
    t->up = 0;
}

/* send_term_draw - the block on the screen (mu held, nothing drawn now) */
static void send_term_draw(struct send_term *t)
{
    if (t->len && !t->mid_line) {
        send_write_all(t->fd, t->block, t->len);
        t->up = t->nlines;
    }
}

/* send_term_write - stderr's writes: the block goes, the text is written,
 * and after a whole line the block comes back below it. */
static ssize_t send_term_write(void *cookie, const char *buf, size_t n)
{
    struct send_term *t = cookie;
    const char *p = buf;
    size_t len = n;
    pthread_mutex_lock(&t->mu);
    if (t->just_ended && len == 1 && p[0] == '\n') {
        len = 0; /* the newline after the run: the final block has its own */
    }
    t->just_ended = 0;
    int was = t->up > 0;
    if (was) {
        send_term_erase(t);
        if (len && p[0] == '\n') {
            p++; /* meant to leave the status line: it is gone already */
            len--;
        }
    }
    if (len) {
        send_write_all(t->fd, p, len);
        t->mid_line = p[len - 1] != '\n';
    }
    if (was && !t->ended) {
        send_term_draw(t);
    }
    pthread_mutex_unlock(&t->mu);
    return (ssize_t)n;
}

/* The block stderr writes through: it lives until the process ends (lines
 * printed after the run, and at exit, still pass it), so it is kept
 * reachable here, not in struct send, which is freed before. */
static struct send_term *volatile send_term_stderr; /* volatile: never read, never dropped */

/* send_term_open - stderr through a new status block; NULL: stderr as it was */
static struct send_term *send_term_open(void)
{
    struct send_term *t = calloc(1, sizeof *t);
    if (!t) {
        abort();
    }
    pthread_mutex_init(&t->mu, NULL);
    t->fd = STDERR_FILENO;
    cookie_io_functions_t io = {.write = send_term_write};
    FILE *f = fopencookie(t, "w", io);
    if (!f) {
        pthread_mutex_destroy(&t->mu);
        free(t);
        return NULL;
    }
    setvbuf(f, NULL, _IONBF, 0);
    fflush(stderr);
    stderr = f;
    send_term_stderr = t;
    return t;
}

/* send_term_set - text (lines joined by \n) becomes the block, each line
 * cut to the terminal's width so none wraps (mu held) */
static void send_term_set(struct send_term *t, const char *text)
{
    struct winsize ws;
    unsigned cols = ioctl(t->fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 ? ws.ws_col - 1 : 0;
    size_t n = 0;
    unsigned lines = 0;
    for (const char *line = text; *line && lines < 16;) {
        size_t l = strcspn(line, "\n");
        size_t keep = l;
        if (cols) {
            unsigned w = 0;
            for (keep = 0; keep < l; keep++) {
                /* columns are counted by characters: a UTF-8 continuation
                 * byte is no column, and a cut never splits a character */
                if (((unsigned char)line[keep] & 0xC0) != 0x80 && ++w > cols) {
                    break;
                }
            }
        }
        if (n + keep + 2 >= sizeof t->block) {
            break;
        }
        if (lines) {
            t->block[n++] = '\n';
        }
        memcpy(t->block + n, line, keep);
        n += keep;
        lines++;
        line += l + (line[l] == '\n');
    }
    t->len = n;
    t->nlines = lines;
}

/* send_term_show - the block redrawn with text */
static void send_term_show(struct send_term *t, const char *text)
{
    pthread_mutex_lock(&t->mu);
    if (!t->ended) {
        send_term_erase(t);
        send_term_set(t, text);
        send_term_draw(t);
    }
    pthread_mutex_unlock(&t->mu);
}

/* send_term_end - the last block, left on the screen with a newline */
static void send_term_end(struct send_term *t, const char *text)
{
    pthread_mutex_lock(&t->mu);
    if (!t->ended) {
        send_term_erase(t);
        send_term_set(t, text);
        if (t->mid_line) {
            send_write_all(t->fd, "\n", 1);
            t->mid_line = 0;
        }
        send_term_draw(t);
        send_write_all(t->fd, "\n", 1);
        t->up = 0;
        t->ended = 1;
        t->just_ended = 1;
    }
    pthread_mutex_unlock(&t->mu);
}

/* ---- what the view says ---- */

/* send_fmt_count - v with thousands separators: "12,345" */
static const char *send_fmt_count(char *dst, size_t cap, unsigned long long v)
{
    char raw[32];
    int n = snprintf(raw, sizeof raw, "%llu", v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0) {
            dst[o++] = ',';
        }
        dst[o++] = raw[i];
    }
    dst[o] = '\0';
    return dst;
}

/* send_fmt_span - ms as a person reads it: "20s", "4m", "1m15s", "2h05m", "3d" */
static const char *send_fmt_span(char *dst, size_t cap, uint64_t ms)
{
    uint64_t sec = (ms + 999) / 1000;
    if (sec < 60) {
        snprintf(dst, cap, "%llus", (unsigned long long)sec);
    } else if (sec < 3600) {
        snprintf(dst, cap, sec % 60 ? "%llum%02llus" : "%llum", (unsigned long long)(sec / 60),
                 (unsigned long long)(sec % 60));
    } else if (sec < 86400) {
        snprintf(dst, cap, "%lluh%02llum", (unsigned long long)(sec / 3600),
                 (unsigned long long)(sec % 3600 / 60));
    } else if (sec % 86400 < 3600) {
        snprintf(dst, cap, "%llud", (unsigned long long)(sec / 86400));
    } else {
        snprintf(dst, cap, "%llud%lluh", (unsigned long long)(sec / 86400),
                 (unsigned long long)(sec % 86400 / 3600));
    }
    return dst;
}

/* Deferral reasons no retry fixes: the ISP keeps deferring every
 * recipient until max_age, and the operator must act. */
static const struct {
    const char *reason, *advice;
} send_stuck_reasons[] = {
    {"tls_verify_failed", "check the CA (--ca) or the ISP's tls policy"},
    {"tls_not_offered", "the server offers no STARTTLS: check the ISP's tls policy"},
    {"tls_handshake_failed", "check the TLS versions and ciphers, or the ISP's tls policy"},
    {"starttls_refused", "the server refuses STARTTLS: check the ISP's tls policy"},
};

static const char *send_stuck_advice(const char *reason)
{
    for (size_t i = 0; reason && i < sizeof send_stuck_reasons / sizeof send_stuck_reasons[0];
         i++) {
        if (strcmp(reason, send_stuck_reasons[i].reason) == 0) {
            return send_stuck_reasons[i].advice;
        }
    }
    return NULL;
}

void send_view_attempt(struct send *s, const struct pool_attempt *a)
{
    struct send_view *v = &s->view;
    if (!a->isp || !a->isp[0]) {
        return;
    }
    struct send_streak *st = NULL;
    for (size_t i = 0; i < v->nstreaks && !st; i++) {
        st = strcmp(v->streaks[i].isp, a->isp) == 0 ? &v->streaks[i] : NULL;
    }
    if (!st && v->nstreaks < SEND_VIEW_STREAKS) {
        st = &v->streaks[v->nstreaks++];
        snprintf(st->isp, sizeof st->isp, "%s", a->isp);
    }
    if (!st) {
        return;
    }
    if (a->outcome == SMTP_OUTCOME_DEFERRED && !a->ambiguous && send_stuck_advice(a->reason)) {
        if (strcmp(st->reason, a->reason) != 0) {
            snprintf(st->reason, sizeof st->reason, "%s", a->reason);
            st->n = 0;
        }
        st->n++;
    } else {
        st->reason[0] = '\0';
        st->n = 0;
    }
}

void send_view_config(struct send *s, const struct config *cfg)
{
    s->view.max_age_ms = cfg->retry.max_age_ms;
}

/* Where the run stands. */
struct send_progress {
    unsigned long long total, final; /* total 0: unknown */
    unsigned long long waiting;      /* recipients waiting for their retry time */
    uint64_t next_ms;                /* until the first of them is due; 0 none */
    unsigned long long remaining;    /* campaign: not final in the database */
    int db;                          /* waiting and remaining are the database's */
};

/* send_final_run - recipients made final by this run */
static unsigned long long send_final_run(const struct send *s, const struct loader_stats *ls)
{
    return s->t.accepted + s->t.rejected + s->t.failed + s->t.expired + s->t.ambiguous +
           s->t.suppressed + (ls ? ls->suppressed : 0);
}

unsigned long send_view_recipients(struct send *s)
{
    if (!s->loader) {
        return s->t.recipients;
    }
    struct loader_stats ls;
    loader_stats(s->loader, &ls);
    return s->view.recipients + s->t.invalid + (unsigned long)ls.suppressed;
}

static void send_progress(struct send *s, const struct pool_isp_stats *st, size_t n,
                          struct send_progress *p)
{
    memset(p, 0, sizeof *p);
    if (!s->loader) {
        p->total = s->nlines;
        p->final = send_final_run(s, NULL);
        for (size_t i = 0; i < n; i++) {
            if (st[i].retry_waiting && (!p->next_ms || st[i].retry_next_ms < p->next_ms)) {
                p->next_ms = st[i].retry_next_ms;
            }
            p->waiting += st[i].retry_waiting;
        }
        return;
    }
    struct loader_stats ls;
    struct loader_counts c;
    loader_stats(s->loader, &ls);
    loader_counts(s->loader, &c);
    p->total = c.total;
    /* This run's own finals only ever grow: they are latched. The estimate
     * below (other nodes' finals too) is not: it rests on a count that may
     * predate results written since (a deferral that left this node's
     * claims before the count saw it back in the queue), and latching it
     * once showed a campaign 100% final while 9 recipients waited. */
    p->final = c.final_at_start + send_final_run(s, &ls);
    if (p->final < s->view.final_max) {
        p->final = s->view.final_max;
    }
    s->view.final_max = p->final;
    if (c.known) {
        /* Not final in the database: queued or deferred there, and this
         * node's claims that no result has ended yet (every attempt and
         * every invalid one ends its claim). */
        unsigned long long ended = s->t.attempts + s->t.invalid;
        unsigned long long claims = ls.claimed > ended ? ls.claimed - ended : 0;
        p->db = 1;
        p->remaining = c.unclaimed + claims;
        p->waiting = c.waiting;
        uint64_t now = loader_now_ms();
        p->next_ms = c.next_at_ms ? (c.next_at_ms > now ? c.next_at_ms - now : 1) : 0;
        if (p->total > p->remaining && p->total - p->remaining > p->final) {
            p->final = p->total - p->remaining; /* other nodes' finals too */
        }
    }
    if (p->total && p->final > p->total) {
        p->final = p->total;
    }
    if (p->total && p->waiting > p->total - p->final) {
        p->waiting = p->total - p->final; /* a count older than the results since */
    }
    if (!p->db) {
        p->remaining = p->total > p->final ? p->total - p->final : 0;
    }
}

/* One reason an ISP (or the run) does not send, and how much it matters. */
struct send_why {
    int weight;
    char text[400];
};

static void send_why_add(struct send_why *w, size_t *n, size_t max, int weight, const char *fmt,
                         ...) __attribute__((format(printf, 5, 6)));

static void send_why_add(struct send_why *w, size_t *n, size_t max, int weight, const char *fmt,
                         ...)
{
    if (*n >= max) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w[*n].text, sizeof w[*n].text, fmt, ap);
    va_end(ap);
    w[*n].weight = weight;
    (*n)++;
}

/* send_cause - " (WHY)" of a pause, cut short, or "" */
static const char *send_cause(char *dst, size_t cap, const char *why)
{
    if (!why || !why[0]) {
        return "";
    }
    if (strlen(why) > 72) {
        snprintf(dst, cap, " (%.69s...)", why);
    } else {
        snprintf(dst, cap, " (%s)", why);
    }
    return dst;
}

/* send_whys - why ISPs wait, most important first: a deferral that will
 * keep coming, a suspension or a hold, a backoff pause, mail that waits
 * for its retry time, a cut rate. */
static size_t send_whys(struct send *s, const struct pool_isp_stats *st, size_t n,
                        const struct send_progress *p, struct send_why *w, size_t max)
{
    size_t k = 0;
    char a[32], b[32], c[96];
    for (size_t i = 0; i < s->view.nstreaks; i++) {
        const struct send_streak *x = &s->view.streaks[i];
        if (x->n) {
            send_why_add(w, &k, max, 5,
                         "%s: %s deferral%s %s %s: they will keep deferring until max_age (%s); %s",
                         x->isp, send_fmt_count(a, sizeof a, x->n), x->n == 1 ? "" : "s",
                         x->n == 1 ? "is" : "are", x->reason,
                         send_fmt_span(b, sizeof b, s->view.max_age_ms),
                         send_stuck_advice(x->reason));
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct pool_isp_stats *x = &st[i];
        if (x->held) {
            send_why_add(w, &k, max, 4, "%s: held: %s", x->name,
                         x->held_why && x->held_why[0] ? x->held_why : "no reason given");
        } else if (x->cluster_blocked) {
            send_why_add(w, &k, max, 4,
                         "%s: PostgreSQL out of reach: this node gave its share of the cluster's "
                         "limits up until it answers",
                         x->name);
        } else if (x->pause_left_ms && x->suspended) {
            time_t until = time(NULL) + (time_t)((x->pause_left_ms + 999) / 1000);
            struct tm tm;
            localtime_r(&until, &tm);
            strftime(a, sizeof a, "%H:%M:%S", &tm);
            send_why_add(w, &k, max, 4, "%s: suspended until %s%s", x->name, a,
                         send_cause(c, sizeof c, x->pause_why));
        } else if (x->pause_left_ms) {
            send_why_add(w, &k, max, 3, "%s: backoff x%.2f, paused %s%s", x->name, x->backoff,
                         send_fmt_span(a, sizeof a, x->pause_left_ms),
                         send_cause(c, sizeof c, x->pause_why));
        } else if (x->retry_waiting && !x->queued && !x->open) {
            send_why_add(w, &k, max, 2, "%s: all due recipients wait for their retry (next in %s)",
                         x->name, send_fmt_span(a, sizeof a, x->retry_next_ms));
        } else if (x->backoff < 1.0 && x->rate_limit >= 0) {
            send_why_add(w, &k, max, 1, "%s: backoff x%.2f (%.1f msgs/s)", x->name, x->backoff,
                         x->rate_limit);
        } else if (x->cluster_nodes > 1 && (x->queued || x->open)) {
            send_why_add(w, &k, max, 0, "%s: %u nodes share its limits (%s msgs/s here)", x->name,
                         x->cluster_nodes,
                         x->rate_limit < 0 ? "unlimited"
                                           : (snprintf(a, sizeof a, "%.1f", x->rate_limit), a));
        }
    }
    char paused[160];
    send_hold_status(s, paused, sizeof paused);
    if (paused[0]) {
        send_why_add(w, &k, max, 6, "campaign %s", paused);
    }
    if (p->db && p->waiting && s->inflight == 0) {
        /* Campaign mode: nothing in the pool, and the rest waits in the
         * database for its next attempt time. */
        send_why_add(w, &k, max, 2, "all due recipients wait for their retry (next in %s)",
                     send_fmt_span(a, sizeof a, p->next_ms));
    }
    /* most important first; equal weights keep their order */
    for (size_t i = 1; i < k; i++) {
        for (size_t j = i; j > 0 && w[j].weight > w[j - 1].weight; j--) {
            struct send_why tmp = w[j];
            w[j] = w[j - 1];
            w[j - 1] = tmp;
        }
    }
    return k;
}

/* send_eta - the final recipients' rate over the last samples, and the
 * time the rest takes at it; 0 when unknown */
static uint64_t send_eta(struct send *s, const struct send_progress *p, uint64_t now)
{
    struct send_view *v = &s->view;
    size_t i = v->sample_at;
    v->sample_ms[i] = now;
    v->sample_final[i] = (unsigned long)p->final;
    v->sample_at = (i + 1) % SEND_VIEW_SAMPLES;
    if (v->nsamples < SEND_VIEW_SAMPLES) {
        v->nsamples++;
    }
    size_t oldest = v->nsamples < SEND_VIEW_SAMPLES ? 0 : v->sample_at;
    uint64_t dt = now - v->sample_ms[oldest];
    unsigned long done = v->sample_final[i] > v->sample_final[oldest]
                             ? v->sample_final[i] - v->sample_final[oldest]
                             : 0;
    if (!dt || !done || !p->total || p->final >= p->total) {
        return 0;
    }
    return (uint64_t)((double)(p->total - p->final) * (double)dt / (double)done);
}

/* send_view_text - the view as lines: the counts, then why ISPs wait */
static void send_view_text(struct send *s, buf_t *out, int tick)
{
    struct pool_isp_stats st[SEND_MAX_ISPS];
    size_t n = pool_isp_stats(s->pool, st, SEND_MAX_ISPS);
    n = n < SEND_MAX_ISPS ? n : SEND_MAX_ISPS;
    struct send_progress p;
    send_progress(s, st, n, &p);
    uint64_t now = clock_ms();
    struct send_view *v = &s->view;
    if (tick) {
        uint64_t dt = now - v->last_tick_ms;
        v->msgs_rate = v->last_tick_ms && dt
                           ? (double)(s->t.attempts - v->last_attempts) * 1000.0 / (double)dt
                           : 0;
        v->last_tick_ms = now;
        v->last_attempts = s->t.attempts;
    }
    uint64_t eta = tick ? send_eta(s, &p, now) : 0;
    char a[32], b[32];
    if (p.total) {
        buf_appendf(out, "%s / %s recipients final (%.1f%%)", send_fmt_count(a, sizeof a, p.final),
                    send_fmt_count(b, sizeof b, p.total),
                    100.0 * (double)p.final / (double)p.total);
    } else {
        buf_appendf(out, "%s recipients final", send_fmt_count(a, sizeof a, p.final));
    }
    buf_appendf(out, "  %s msgs/s", send_fmt_count(a, sizeof a, (unsigned long long)v->msgs_rate));
    if (p.total && p.final < p.total) {
        buf_appendf(out, "  ETA %s", eta ? send_fmt_span(a, sizeof a, eta) : "-");
    }
    buf_appendf(out, "  accepted %s", send_fmt_count(a, sizeof a, s->t.accepted));
    const struct {
        const char *word;
        unsigned long v;
    } finals[] = {{"rejected", s->t.rejected},
                  {"failed", s->t.failed},
                  {"expired", s->t.expired},
                  {"ambiguous", s->t.ambiguous},
                  {"suppressed", s->t.suppressed}};
    for (size_t i = 0; i < sizeof finals / sizeof finals[0]; i++) {
        if (finals[i].v) {
            buf_appendf(out, "  %s %s", finals[i].word, send_fmt_count(a, sizeof a, finals[i].v));
        }
    }
    buf_appendf(out, "  deferrals %s  in flight %s  connections %u",
                send_fmt_count(a, sizeof a, s->t.deferrals),
                send_fmt_count(b, sizeof b, s->inflight), pool_open_connections(s->pool));
    if (p.waiting) {
        buf_appendf(out, "  waiting for retry %s (next in %s)",
                    send_fmt_count(a, sizeof a, p.waiting), send_fmt_span(b, sizeof b, p.next_ms));
    }
    if (s->loader) {
        /* Why sending may pause: arms wait for PostgreSQL, or the node's
         * lease is not being renewed. */
        unsigned gated = pool_gated_connections(s->pool);
        if (gated) {
            buf_appendf(out, "  %u waiting for the database (arm)", gated);
        }
        if (!loader_lease_ok(s->loader)) {
            buf_appendf(out, "  NODE LEASE NOT RENEWED: nothing new starts");
        }
    }
    struct send_why w[SEND_MAX_ISPS + SEND_VIEW_STREAKS + 1];
    size_t k =
        p.total && p.final >= p.total ? 0 : send_whys(s, st, n, &p, w, sizeof w / sizeof w[0]);
    for (size_t i = 0; i < k && i < SEND_STATUS_REASONS; i++) {
        buf_appendf(out, "\n  %s", w[i].text);
        if (i + 1 == SEND_STATUS_REASONS && k > SEND_STATUS_REASONS) {
            buf_appendf(out, "  +%zu more", k - SEND_STATUS_REASONS);
        }
    }
}

/* send_view_log - the view as whole lines on stderr (not a terminal) */
static void send_view_log(struct send *s, const char *text)
{
    for (const char *line = text; *line;) {
        size_t l = strcspn(line, "\n");
        fprintf(stderr, "ringmail send: %.*s\n", (int)l, line);
        line += l + (line[l] == '\n');
    }
    s->view.lines_printed++;
}

static void send_on_status(struct loop_timer *t)
{
    struct send *s = t->owner;
    buf_t text = BUF_INIT;
    send_view_text(s, &text, 1);
    uint64_t now = clock_ms();
    if (s->view.term) {
        send_term_show(s->view.term, buf_cstr(&text));
    } else if (now - s->view.last_line_ms >= SEND_STATUS_LOG_MS) {
        send_view_log(s, buf_cstr(&text));
        s->view.last_line_ms = now;
    }
    buf_free(&text);
    loop_timer_set(s->loop, &s->status_timer, SEND_STATUS_TICK_MS);
}

/* send_view_end - the run stops: the last view stays on the terminal (and
 * ends a log that had status lines) */
static void send_view_end(struct send *s)
{
    if (!s->pool || (!s->view.term && !s->view.lines_printed)) {
        return;
    }
    buf_t text = BUF_INIT;
    send_view_text(s, &text, 0);
    if (s->view.term) {
        send_term_end(s->view.term, buf_cstr(&text));
    } else {
        send_view_log(s, buf_cstr(&text));
    }
    buf_free(&text);
}

/* ---- /metrics ---- */

static void send_metrics_render(void *user, buf_t *out)
{
    struct send *s = user;
    pool_metrics(s->pool, out);
    char lab[96], camp[48] = "";
    if (s->loader) {
        /* The campaign's series carry its id: several sends, one dashboard. */
        snprintf(camp, sizeof camp, "campaign=\"%lld\"", s->o.campaign);
    }
    struct loader_stats ls;
    memset(&ls, 0, sizeof ls);
    if (s->loader) {
        loader_stats(s->loader, &ls);
    }
    metrics_help(out, "ringmail_recipients_total", "counter",
                 "Recipients made final by this run, by final state.");
    const struct {
        const char *state;
        unsigned long long v;
    } states[] = {
        {"accepted", s->t.accepted},   {"rejected", s->t.rejected},
        {"failed", s->t.failed},       {"expired", s->t.expired},
        {"ambiguous", s->t.ambiguous}, {"suppressed", s->t.suppressed + ls.suppressed},
    };
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        snprintf(lab, sizeof lab, "%s%sstate=\"%s\"", camp, camp[0] ? "," : "", states[i].state);
        metrics_line(out, "ringmail_recipients_total", lab, (double)states[i].v);
    }
    struct pool_isp_stats st[SEND_MAX_ISPS];
    size_t n = pool_isp_stats(s->pool, st, SEND_MAX_ISPS);
    struct send_progress p;
    send_progress(s, st, n < SEND_MAX_ISPS ? n : SEND_MAX_ISPS, &p);
    metrics_help(out, "ringmail_retry_waiting", "gauge",
                 "Recipients waiting for their retry time (campaign: deferred in the database).");
    metrics_line(out, "ringmail_retry_waiting", camp, (double)p.waiting);
    if (!s->loader) {
        return;
    }
    metrics_help(out, "ringmail_campaign_recipients", "gauge", "The campaign's recipients.");
    metrics_line(out, "ringmail_campaign_recipients", camp, (double)p.total);
    metrics_help(out, "ringmail_campaign_remaining", "gauge",
                 "Recipients of the campaign not yet final in the database.");
    metrics_line(out, "ringmail_campaign_remaining", camp, (double)p.remaining);
    /* The node's own series (its lease, its arms) carry no campaign label. */
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
    send_hold_metrics(s, out);
}

int send_signals_watch(struct send *s)
{
    s->sigfd = signalfd(-1, &s->sig_mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->sigfd < 0) {
        perror("ringmail send: signalfd");
        return -1;
    }
    send_sig_arm(s);
    return 0;
}

void send_status_start(struct send *s)
{
    loop_timer_init(&s->status_timer, send_on_status, s);
    int tty = isatty(STDERR_FILENO);
    if (tty && !s->o.json) {
        s->view.term = send_term_open();
    }
    s->view.last_line_ms = clock_ms();
    if (!tty || s->view.term) {
        loop_timer_set(s->loop, &s->status_timer, SEND_STATUS_TICK_MS);
    }
}

int send_metrics_start(struct send *s)
{
    char err[512];
    s->metrics = metrics_new(s->loop, s->o.metrics_addr, send_metrics_render, s, err, sizeof err);
    if (!s->metrics) {
        fprintf(stderr, "ringmail send: --metrics: %s\n", err);
        return -1;
    }
    return 0;
}
