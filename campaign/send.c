/*
 * send - `ringmail send`: a recipient list or a campaign through the
 * delivery pool. See send.h; send_int.h names the other files.
 *
 * One loop on the main thread runs everything: the pool's connections and
 * DNS, the signals (signalfd polled on the ring: SIGHUP reloads the
 * config, SIGINT/SIGTERM stop), the status line and the metrics endpoint.
 * A run: parse the command line, set up (config, input, loop, loader,
 * pool, signals), run the loop until the list or the campaign is done or
 * a stop, report, then stop what is left (the campaign's results and
 * claims) and free.
 *
 * Diagnostics: bad options or config print a reason and exit 2; a run cut
 * short by a signal exits 1 with the unsent count; otherwise 0, whatever
 * the outcomes (they are in the summary, --records and --suppress). A
 * campaign's stop is bounded (SEND_STOP_MS): its message says what was
 * written, what waits in the journal and what went back to the queue; a
 * second signal ends the process at once.
 */
#include "campaign/send.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "campaign/send_int.h"
#include "engine/client_conn.h"
#include "engine/clock.h"
#include "engine/trace.h"

void send_feed(struct send *s)
{
    if (s->loader) {
        send_campaign_feed(s);
    } else {
        send_list_feed(s);
    }
}

/* send_attempt_words - an attempt's outcome as --records and the delivery
 * rows say it, and the recipient's state it leads to in PostgreSQL */
void send_attempt_words(const struct pool_attempt *a, const char **outcome, const char **state)
{
    switch (a->outcome) {
    case SMTP_OUTCOME_ACCEPTED:
        *outcome = "accepted";
        *state = "sent";
        break;
    case SMTP_OUTCOME_REJECTED:
        *outcome = "rejected";
        *state = "bounced";
        break;
    case SMTP_OUTCOME_DEFERRED:
        *outcome = a->ambiguous ? "ambiguous" : a->expired ? "expired" : "deferred";
        /* A deferral past max_age is its own final state (schema 5), as
         * the summary and --records say it: expired, not failed. */
        *state = a->ambiguous ? "ambiguous"
                 : a->expired ? "expired"
                 : a->final   ? "failed"
                              : "deferred";
        break;
    default:
        *outcome = "failed";
        *state = "failed";
        break;
    }
}

/* A prepared message's attempt (send_prepared_run): what became of it. */
static void send_prepared_result(struct send *s, const struct send_msg *m,
                                 const struct pool_attempt *a, const char *outcome)
{
    struct send_prepared *p = &s->prepared[m->id];
    p->done = 1;
    p->outcome = a->outcome;
    p->code = a->code;
    snprintf(p->word, sizeof p->word, "%s", outcome);
    snprintf(p->reason, sizeof p->reason, "%s", a->reason ? a->reason : "");
    snprintf(p->enhanced, sizeof p->enhanced, "%s", a->enhanced ? a->enhanced : "");
    snprintf(p->reply, sizeof p->reply, "%s", a->text ? a->text : "");
    snprintf(p->mx, sizeof p->mx, "%s", a->mx ? a->mx : "");
    snprintf(p->tls_version, sizeof p->tls_version, "%s", a->tls ? a->tls->version : "");
    snprintf(p->tls_cipher, sizeof p->tls_cipher, "%s", a->tls ? a->tls->cipher : "");
}

/* The pool's word on one attempt, in either mode: counted, recorded, and
 * at the message's release the window moves on. */
static void send_on_result(void *user, struct pool_msg *pm, const struct pool_attempt *a)
{
    struct send *s = user;
    struct send_msg *m = pm->user;
    const char *outcome, *state;
    send_attempt_words(a, &outcome, &state);
    s->t.attempts++;
    if (a->outcome == SMTP_OUTCOME_DEFERRED) {
        s->t.deferrals++;
    }
    send_record(s, m->rcpt, a, outcome);
    if (s->loader) {
        send_result_db(s, m, a, outcome);
    }
    if (s->prepared && a->released) {
        send_prepared_result(s, m, a, outcome);
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
        s->t.bounce_categories[send_bounce_category(s, a)]++;
        /* Permanent for this run or campaign; the address is suppressed
         * only when the reply condemns the mailbox (send_list_bounce). */
        send_list_bounce(s, m->rcpt, a);
        break;
    case SMTP_OUTCOME_DEFERRED:
        if (a->ambiguous) {
            s->t.ambiguous++;
        } else {
            s->t.expired++;
            send_list_bounce(s, m->rcpt, a);
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

/* ---- set up ---- */

/* --config, or one built-in default ISP: unlimited, TLS required. */
static struct config *send_config(const struct send *s)
{
    if (s->o.config_path) {
        char err[512];
        struct config *cfg = config_load(s->o.config_path, err, sizeof err);
        if (!cfg) {
            fprintf(stderr, "ringmail send: %s\n", err);
        }
        return cfg;
    }
    struct config *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        abort();
    }
    retry_schedule_init(&cfg->retry);
    cfg->tls = SMTP_TLS_REQUIRED;
    cfg->backoff_step = 0.1;
    cfg->backoff_interval_ms = 60000;
    /* [feedback]'s defaults (config_load's): soft bounces count without
     * the section too; they need no return path. */
    cfg->feedback.soft_bounce_limit = 3;
    cfg->feedback.soft_bounce_window_ms = 7 * 86400000ull;
    return cfg;
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

/* Relay AUTH only inside TLS. */
static int send_relay_check(const struct send *s)
{
    if (s->o.relay_user) {
        int tls_ok = s->o.tls_override ? s->o.tls != SMTP_TLS_NONE : s->cfg->tls != SMTP_TLS_NONE;
        if (!tls_ok) {
            fprintf(stderr, "ringmail send: relay AUTH needs TLS: credentials never go in "
                            "plaintext\n");
            return -1;
        }
    }
    return 0;
}

/* The pool on the loop; it takes the config. */
static int send_pool_start(struct send *s, struct pool_options *po)
{
    char err[512];
    s->bounce_rules = s->cfg->bounce.rules;
    po->config = s->cfg;
    s->cfg = NULL;
    s->pool = pool_new(s->loop, po, err, sizeof err);
    if (!s->pool) {
        fprintf(stderr, "ringmail send: %s\n", err);
        return -1;
    }
    return 0;
}

/* Everything a run needs, in order; -1 with the reason printed. */
static int send_setup(struct send *s)
{
    if (s->o.verbose) {
        trace_enable();
    }
    send_signals_block(s);
    /* Every connection is a descriptor; past the limit the pool waits for
     * one to free up (client_conn_start), it never fails a message. */
    loop_nofile_raise();
    s->cfg = send_config(s);
    if (!s->cfg || send_read_password(s) < 0 || send_relay_check(s) < 0 || send_files_open(s) < 0) {
        return -1;
    }
    s->loop = loop_new(4096);
    if (!s->loop) {
        perror("ringmail send: io_uring setup");
        return -1;
    }
    struct pool_options po = {
        .resolver = s->o.resolver,
        .mx_port = s->o.mx_port,
        .mta_sts_port = s->o.mta_sts_port,
        .relay = s->o.relay,
        .relay_implicit_tls = s->o.relay_implicit_tls,
        .auth_user = s->o.relay_user,
        .auth_pass = s->o.relay_user ? s->auth_pass : NULL,
        .ca_file = s->o.ca_file,
        .tls_override = s->o.tls_override,
        .tls = s->o.tls,
        .helo = s->o.helo,
        .timeout_ms = s->o.timeout_ms,
        .sources = s->o.sources,
        .nsources = s->o.nsources,
        .max_connections = s->o.max_connections,
        .external_retry = s->prepared != NULL, /* one attempt each: a deferral is their word */
        .dest_policy_off = s->o.dest_policy_off,
        .on_result = send_on_result,
        .on_suspend = send_suspend_note,
        .on_backoff = send_cluster_backoff_note,
        .user = s,
    };
    if (s->o.db_url && (send_campaign_start(s, &po) < 0 || send_sts_start(s, &po) < 0)) {
        return -1;
    }
    if (send_pool_start(s, &po) < 0 || send_suspend_start(s) < 0 || send_cluster_start(s) < 0) {
        return -1;
    }
    if (s->o.metrics_addr && send_metrics_start(s) < 0) {
        return -1;
    }
    send_warn_opportunistic(s, po.config);
    if (send_signals_watch(s) < 0) {
        return -1;
    }
    if (s->loader) {
        send_campaign_watch(s);
    }
    send_status_start(s);
    return 0;
}

/* ---- run, stop ---- */

/* The loop, until the list or the campaign is done, or a stop. */
static void send_run(struct send *s)
{
    s->t0 = clock_s();
    send_feed(s);
    loop_run(s->loop);
    s->done = s->loader && loader_exhausted(s->loader);
    if (isatty(STDERR_FILENO) && !s->o.json) {
        fprintf(stderr, "\n");
    }
}

/* The run's exit status, before the campaign's stop has its say. */
static int send_exit_status(const struct send *s)
{
    size_t unsent = pool_pending(s->pool) + (s->nlines - s->next);
    if (s->fenced) {
        return 1; /* the message above said why */
    }
    if (s->interrupted && s->loader) {
        return 0; /* the stop's message and status follow the loader's stop */
    }
    if (s->interrupted && unsent) {
        fprintf(stderr, "ringmail send: interrupted: %zu recipient%s not final\n", unsent,
                unsent == 1 ? "" : "s");
        return 1;
    }
    return 0;
}

/* What the pool still holds is released; the campaign's results are
 * written and its claims released (send_campaign_stop). */
static int send_stop_all(struct send *s, int rc)
{
    if (s->pool) {
        pool_release_all(s->pool, send_release);
    }
    return send_campaign_stop(s, rc);
}

static struct send *send_new(void)
{
    struct send *s = calloc(1, sizeof *s);
    if (!s) {
        abort();
    }
    s->sigfd = -1;
    s->early_rc = -1;
    send_options_init(&s->o);
    return s;
}

static void send_free(struct send *s)
{
    send_campaign_free(s);
    if (s->pool) {
        pool_free(s->pool);
    }
    send_sts_stop(s); /* after the pool's fetcher thread */
    config_free(s->cfg);
    if (s->loop) {
        loop_free(s->loop);
    }
    client_conn_thread_done();
    if (s->sigfd >= 0) {
        close(s->sigfd);
    }
    send_files_close(s);
    send_guard_stop(s);
    free(s);
}

int send_main(int argc, char **argv)
{
    struct send *s = send_new();
    if (send_parse(argc, argv, &s->o) < 0) {
        free(s);
        return 2;
    }
    int rc = 2;
    if (send_setup(s) == 0) {
        send_run(s);
        send_report(s, clock_s() - s->t0);
        rc = send_exit_status(s);
    } else if (s->early_rc >= 0) {
        rc = s->early_rc; /* the campaign is not to be sent now (send_campaign.c said why) */
    }
    rc = send_stop_all(s, rc);
    send_free(s);
    return rc;
}

int send_prepared_run(const struct send_options *o, struct send_prepared *msgs, size_t n,
                      int64_t campaign)
{
    struct send *s = send_new();
    s->o = *o;
    s->prepared = msgs;
    s->prepared_campaign = campaign;
    s->lines = calloc(n ? n : 1, sizeof *s->lines);
    if (!s->lines) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        if (!(s->lines[i] = strdup(msgs[i].rcpt))) {
            abort();
        }
    }
    s->nlines = n;
    int rc = 2;
    if (send_setup(s) == 0) {
        send_run(s);
        rc = send_exit_status(s);
    }
    rc = send_stop_all(s, rc);
    send_free(s);
    return rc;
}
