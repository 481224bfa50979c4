/*
 * send_status - signals, the status line and /metrics of `ringmail send`.
 * See send_int.h.
 *
 * The signals arrive through a signalfd polled on the loop: SIGHUP reloads
 * the config, SIGINT/SIGTERM stop. From the first stop signal on, a guard
 * thread takes SIGINT/SIGTERM over and bounds the stop: a second signal,
 * or SEND_STOP_MS passing, ends the process at once.
 */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    send_hold_quiet(s);
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
        /* ISPs the complaint guard holds: their mail waits for a resume. */
        char held[512];
        send_hold_status(s, held, sizeof held);
        fputs(held, stderr);
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
        send_hold_metrics(s, out);
    }
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
    if (!s->o.json && isatty(STDERR_FILENO)) {
        loop_timer_set(s->loop, &s->status_timer, 1000);
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
