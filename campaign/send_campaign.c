/*
 * send_campaign - campaign mode: the loader claims recipients, the render
 * workers make their messages, the pool delivers them and every result
 * goes back to PostgreSQL through the loader. See send_int.h.
 *
 * A campaign's stop is bounded (SEND_STOP_MS): its message says what was
 * written, what waits in the journal and what went back to the queue.
 */
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "campaign/lifecycle.h"
#include "campaign/send_int.h"
#include "engine/clock.h"

static void send_copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

void send_result_db(struct send *s, struct send_msg *m, const struct pool_attempt *a,
                    const char *outcome)
{
    struct loader_result r;
    memset(&r, 0, sizeof r);
    r.recipient_id = m->id;
    r.arm_seq = m->arm_seq;
    r.attempt = a->attempt;
    send_copy(r.outcome, sizeof r.outcome, outcome);
    r.final = a->final;
    const char *word, *state;
    send_attempt_words(a, &word, &state);
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
    r.conn_first = a->conn_first;
    r.conn_id = a->conn_id;
    send_copy(r.tls_policy, sizeof r.tls_policy, a->tls_policy);
    send_copy(r.tls_policy_mode, sizeof r.tls_policy_mode, a->tls_policy_mode);
    send_copy(r.tls_policy_id, sizeof r.tls_policy_id, a->tls_policy_id);
    send_copy(r.tls_result, sizeof r.tls_result, a->tls_result);
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
    struct bounce_result b;
    if (send_bounce(s, a, &b)) {
        /* Every failure with a word on it, a deferral too (a 4xx is soft,
         * with its category): the row says what --records says. */
        send_copy(r.category, sizeof r.category, bounce_category_name(b.category));
        send_copy(r.bounce, sizeof r.bounce, bounce_kind_name(b.kind));
        send_bounce_rule(&b, r.bounce_rule, sizeof r.bounce_rule);
        r.suppress = a->final && a->outcome == SMTP_OUTCOME_REJECTED && bounce_suppresses(&b);
    }
    r.soft_bounce = send_soft_bounce(s, a);
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
    if (it->retry || s->sign_failed) {
        /* The DKIM signer failed: never unsigned, not marked; the claim
         * goes back to the queue at the stop. */
        if (!s->sign_failed) {
            s->sign_failed = 1;
            fprintf(stderr,
                    "ringmail send: campaign %lld: %s: stopping; nothing is sent unsigned, the "
                    "recipients not sent go back to the queue\n",
                    s->o.campaign, it->err);
            s->interrupted = 1;
            send_stop(s);
        }
        free(x->address);
        buf_free(&it->body);
        return;
    }
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
    send_mail_from(s, m, (uint64_t)s->o.campaign, (uint64_t)m->id);
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
        prepare_render(s->tpl, &s->scratch, send_address_problem, &s->token, &items[i]);
    }
    return n;
}

void send_campaign_feed(struct send *s)
{
    if (s->paused) {
        loader_want(s->loader, 0); /* an operator's pause: claim nothing (send_hold.c) */
        return;
    }
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
    send_campaign_feed(s);
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

/* send_render_threads - --render-threads, by default one per core (at most 8) */
static int send_render_threads(const struct send *s)
{
    int n = s->o.render_threads;
    if (n < 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n = cpus < 1 ? 1 : cpus > 8 ? 8 : (int)cpus;
    }
    return n;
}

/* Render workers: --render-threads, by default one per core (0: render
 * on the loop thread). */
static int send_prepare_start(struct send *s, char *err, size_t errlen)
{
    int n = send_render_threads(s);
    if (n == 0) {
        return 0;
    }
    struct prepare_options po = {
        .loader = s->loader,
        .tpl = s->tpl,
        .threads = (unsigned)n,
        .ahead = s->o.window < 4096 ? s->o.window : 4096,
        .address_problem = send_address_problem,
        .token = s->token,
    };
    s->prep = prepare_start(&po, err, errlen);
    return s->prep ? 0 : -1;
}

/* Compile the campaign's templates, as `campaign test` and `campaign
 * preview` do (prepare_compile); a signed campaign's keys go to its signer
 * processes, one per render worker (campaign/sign_client.h), never here. */
static int send_templates(struct send *s, char *err, size_t errlen)
{
    const struct loader_campaign *c = loader_campaign(s->loader);
    s->o.from = c->mail_from;
    render_scratch_init(&s->scratch);
    int workers = send_render_threads(s);
    s->signer =
        prepare_signer_start(c, s->o.db_url, workers > 0 ? (unsigned)workers : 1, err, errlen);
    if (!s->signer && err[0]) {
        return -1;
    }
    s->tpl = prepare_compile(c, &s->feedback, "ringmail send", s->signer, &s->token, err, errlen);
    return s->tpl ? 0 : -1;
}

/* ---- the campaign's status at start (lifecycle.h) ---- */

/* send_life_reload - SIGHUP before the start: the config read again */
static void send_life_reload(struct send *s, int tty)
{
    char err[512];
    struct config *c = s->o.config_path ? config_load(s->o.config_path, err, sizeof err) : NULL;
    if (!s->o.config_path) {
        fprintf(stderr, "%sringmail send: SIGHUP: no --config to reload\n", tty ? "\n" : "");
    } else if (!c) {
        fprintf(stderr,
                "%sringmail send: config reload refused: %s (keeping the previous config)\n",
                tty ? "\n" : "", err);
    } else {
        config_free(s->cfg);
        s->cfg = c;
        fprintf(stderr, "%sringmail send: config reloaded from %s\n", tty ? "\n" : "",
                s->o.config_path);
    }
}

/* send_life_wait - a scheduled campaign: wait for its start_at, reading
 * the row again each second (start_at moved, a cancel, a pause), ended by
 * SIGINT/SIGTERM; 0 to go on, else the exit status (said) */
static int send_life_wait(struct send *s, PGconn *c, const char *id, struct life_status *st)
{
    char shown[40] = "", left[32], err[1024];
    int tty = !s->o.json && isatty(STDERR_FILENO);
    while (strcmp(st->status, "scheduled") == 0 && st->start_in_s > 0) {
        life_duration(st->start_in_s, left, sizeof left);
        if (strcmp(shown, st->start_at) != 0) {
            fprintf(stderr, "%sringmail send: campaign %s starts at %s (in %s)\n", tty ? "\r" : "",
                    id, st->start_at, left);
            snprintf(shown, sizeof shown, "%s", st->start_at);
        } else if (tty) {
            fprintf(stderr, "\rwaiting: campaign %s starts at %s (in %s)   ", id, st->start_at,
                    left);
        }
        double wait = st->start_in_s < 1 ? st->start_in_s : 1;
        struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
        siginfo_t si;
        int sig = sigtimedwait(&s->sig_mask, &si, &ts);
        if (sig == SIGINT || sig == SIGTERM) {
            fprintf(stderr,
                    "%sringmail send: %s: stopped before campaign %s started; nothing was sent\n",
                    tty ? "\n" : "", strsignal(sig), id);
            return 1;
        }
        if (sig == SIGHUP) {
            send_life_reload(s, tty);
        }
        int found = life_read(c, id, st, err, sizeof err);
        if (found <= 0) {
            fprintf(stderr, "%sringmail send: campaign %s: %s\n", tty ? "\n" : "", id,
                    found < 0 ? err : "the campaign is gone");
            return 1;
        }
    }
    if (tty && shown[0]) {
        fprintf(stderr, "\n");
    }
    return 0;
}

/* send_life_start - once the loader settled what the node held, before
 * anything is claimed: a done campaign is complete (exit 0), a cancelled
 * one refused (exit 2), a scheduled one waited for; then draft and
 * scheduled become running. recovered: the start settled something the
 * node held (a done campaign's run then ends at once with its summary).
 * -1 to go on, else the exit status (said). */
static int send_life_start(struct send *s, int recovered)
{
    char err[1024], id[32];
    snprintf(id, sizeof id, "%lld", s->o.campaign);
    PGconn *c = db_connect_current(s->o.db_url, err, sizeof err);
    if (!c) {
        fprintf(stderr, "ringmail send: %s\n", err);
        return 1;
    }
    struct life_status st;
    int rc = -1, found = life_read(c, id, &st, err, sizeof err);
    if (found <= 0) {
        fprintf(stderr, "ringmail send: %s%s\n", found < 0 ? "campaign: " : "no campaign ",
                found < 0 ? err : id);
        rc = found < 0 ? 1 : 2;
    } else if (strcmp(st.status, "cancelled") == 0) {
        fprintf(stderr,
                "ringmail send: campaign %s was cancelled (%s%s%s); a cancelled campaign never "
                "sends again\n",
                id, st.at, st.reason[0] ? ": " : "", st.reason);
        rc = 2;
    } else if (strcmp(st.status, "done") == 0 && recovered) {
        /* The start settled what the node held: the run ends at once, its
         * summary saying what the recovery wrote, and marks it done. */
    } else if (strcmp(st.status, "done") == 0) {
        /* (--resend-ambiguous queued the ambiguous ones at the loader's
         * start: a campaign with some is not done then.) */
        if (strcmp(st.stored, "done") != 0) {
            life_finish(c, id, NULL, 0, err, sizeof err); /* the row says so from now on */
        }
        if (s->o.json) {
            json_t *j = json_pack("{s:I, s:s, s:b, s:I, s:s}", "campaign",
                                  (json_int_t)s->o.campaign, "status", "done", "complete", 1,
                                  "recipients", (json_int_t)st.total, "summary", st.summary);
            json_dumpf(j, stdout, JSON_COMPACT);
            printf("\n");
            json_decref(j);
        } else {
            printf("ringmail send: campaign %s is complete (%lld recipient%s final: %s); nothing "
                   "to send\n",
                   id, st.total, st.total == 1 ? "" : "s", st.summary);
        }
        rc = 0;
    } else if (send_life_wait(s, c, id, &st) != 0) {
        rc = 1;
    } else if (strcmp(st.status, "cancelled") == 0) {
        fprintf(stderr, "ringmail send: campaign %s was cancelled while waiting to start (%s)\n",
                id, st.reason);
        rc = 2;
    } else {
        /* The live line's counts start from this read of every row. */
        loader_start_counts(s->loader, (uint64_t)st.total, (uint64_t)(st.total - st.pending),
                            (uint64_t)st.fresh, (uint64_t)st.swept);
        char why[300];
        snprintf(why, sizeof why, "started by ringmail send on node %s", s->o.node);
        /* (done here: recipients pending again, a recovery's or an import's) */
        if (life_set(c, id, "{draft,scheduled,done}", "running", why, err, sizeof err) < 0) {
            fprintf(stderr, "ringmail send: campaign %s: %s\n", id, err);
            rc = 1;
        }
    }
    pq.PQfinish(c);
    return rc;
}

int send_campaign_start(struct send *s, struct pool_options *po)
{
    char err[512];
    if (!s->o.node) {
        if (gethostname(s->node_buf, sizeof s->node_buf - 1) < 0 || !s->node_buf[0]) {
            snprintf(s->node_buf, sizeof s->node_buf, "ringmail");
        }
        s->o.node = s->node_buf;
    }
    if (!s->o.journal) {
        snprintf(s->journal_buf, sizeof s->journal_buf, "ringmail-%s.journal", s->o.node);
        s->o.journal = s->journal_buf;
    }
    struct loader_options lo = {
        .url = s->o.db_url,
        .campaign = s->o.campaign,
        .node = s->o.node,
        .journal_path = s->o.journal,
        .batch = s->o.batch,
        .lease_s = s->o.lease_s,
        .resend_ambiguous = s->o.resend_ambiguous,
        .soft_bounce_limit = s->feedback.soft_bounce_limit,
        .soft_bounce_window_ms = s->feedback.soft_bounce_window_ms,
    };
    s->loader = loader_start(&lo, err, sizeof err);
    if (!s->loader) {
        fprintf(stderr, "ringmail send: %s\n", err);
        return -1;
    }
    struct loader_stats ls;
    loader_stats(s->loader, &ls);
    if (ls.recovered_queued || ls.recovered_ambiguous) {
        fprintf(stderr,
                "ringmail send: recovered from an earlier stop of node %s: %llu queued again, "
                "%llu ambiguous (DATA was in flight%s)\n",
                s->o.node, (unsigned long long)ls.recovered_queued,
                (unsigned long long)ls.recovered_ambiguous,
                s->o.resend_ambiguous ? "; --resend-ambiguous queues them" : "");
    }
    /* The life cycle once what the node still held is settled (a
     * recovery may have finished a campaign, or given a cancelled one's
     * claims back). */
    int rc =
        send_life_start(s, ls.recovered_queued || ls.recovered_ambiguous || ls.recovered_results);
    if (rc >= 0) {
        s->early_rc = rc;
        return -1;
    }
    if (send_templates(s, err, sizeof err) < 0) {
        fprintf(stderr, "ringmail send: campaign %lld: %s\n", s->o.campaign, err);
        return -1;
    }
    if (send_prepare_start(s, err, sizeof err) < 0) {
        fprintf(stderr, "ringmail send: %s\n", err);
        return -1;
    }
    po->external_retry = 1;
    po->on_data = send_on_data;
    po->may_send = send_may_send;
    po->may_send_ahead_ms = LOADER_ARM_AHEAD_MS;
    return send_hold_start(s, po); /* the complaint guard's holds (send_hold.c) */
}

void send_campaign_watch(struct send *s)
{
    send_watch_arm(s, &s->loader_watch, loader_fd(s->loader));
    if (s->prep) {
        send_watch_arm(s, &s->prep_watch, prepare_fd(s->prep));
    }
}

/* send_cancelled_say - the run stopped for a cancel: what was written,
 * what went back and what was not sent; the exit status (0 when every
 * result is written and every claim given back) */
static int send_cancelled_say(struct send *s, const struct loader_stop_info *info, int lrc)
{
    char err[1024], id[32];
    snprintf(id, sizeof id, "%lld", s->o.campaign);
    struct life_status st;
    PGconn *c = db_connect_current(s->o.db_url, err, sizeof err);
    int found = c ? life_read(c, id, &st, err, sizeof err) : -1;
    if (c) {
        pq.PQfinish(c);
    }
    if (lrc < 0 || info->requeued < 0 || found <= 0) {
        fprintf(stderr,
                "ringmail send: campaign %lld cancelled; the stop could not write every result "
                "or give every claim back (%s): node %s settles it at its next start\n",
                s->o.campaign, found < 0 ? err : "see above", s->o.node);
        return 1;
    }
    fprintf(stderr,
            "ringmail send: campaign %lld cancelled with %lld recipient%s not sent (they stay "
            "queued or deferred in the database; %lld claim%s went back); every result is "
            "written\n",
            s->o.campaign, st.pending, st.pending == 1 ? "" : "s", info->requeued,
            info->requeued == 1 ? "" : "s");
    return 0;
}

int send_campaign_stop(struct send *s, int rc)
{
    send_suspend_stop(s); /* the ISP suspensions kept in PostgreSQL: written */
    send_cluster_stop(s); /* this node's share: the others' */
    if (s->prep) {
        prepare_stop(s->prep); /* what it still holds stays claimed: released below */
        s->prep = NULL;
    }
    sign_client_stop(s->signer);
    s->signer = NULL;
    if (!s->loader) {
        return rc;
    }
    /* Every result to PostgreSQL, then unsent claims go back to the
     * queue: after a stop signal until its bound (SEND_STOP_DB_MS),
     * else up to a minute; a stop signal now hurries it. */
    send_guard_start(s);
    send_hold_stop(s); /* before the loader's stop, which queues what it parked */
    char done_why[LOADER_TEXT_MAX];
    int life_done = s->done && loader_life_done(s->loader, done_why, sizeof done_why);
    struct loader_stop_info info;
    uint64_t at = __atomic_load_n(&s->stop_at_ms, __ATOMIC_SEQ_CST);
    uint64_t deadline = at ? at + SEND_STOP_DB_MS : clock_ms() + 63000;
    int lrc = loader_stop_by(s->loader, deadline, &s->hurry_ms, &info);
    s->loader = NULL;
    at = __atomic_load_n(&s->stop_at_ms, __ATOMIC_SEQ_CST);
    if (at && !s->fenced && rc != 2) {
        double took = (double)(clock_ms() - at) / 1000;
        unsigned lease = s->o.lease_s ? s->o.lease_s : 10;
        if (info.abandoned || info.unwritten > 0 || info.requeued < 0) {
            fprintf(stderr,
                    "ringmail send: stopped after %.1f s without the database in time: %zu "
                    "result%s wait%s in the journal %s for the next start of node %s; the "
                    "claims not attempted stay node %s's until then (or until another node "
                    "takes them over once its %u s lease runs out)\n",
                    took, info.unwritten, info.unwritten == 1 ? "" : "s",
                    info.unwritten == 1 ? "s" : "", s->o.journal, s->o.node, s->o.node, lease);
            rc = 1;
        } else {
            fprintf(stderr,
                    "ringmail send: stopped after %.1f s; every result is written; %lld "
                    "claimed recipient%s went back to the queue%s\n",
                    took, info.requeued, info.requeued == 1 ? "" : "s",
                    s->done && info.requeued == 0 ? "" : "; run again to resume");
            rc = s->done && info.requeued == 0 ? 0 : 1;
        }
    } else if (s->sign_failed && !s->fenced) {
        fprintf(stderr,
                "ringmail send: stopped: the DKIM signer failed (see above); %s%lld claimed "
                "recipient%s went back to the queue; none was sent unsigned\n",
                lrc < 0 || info.requeued < 0 ? "not every result could be written; "
                                             : "every result is written; ",
                info.requeued < 0 ? 0 : info.requeued, info.requeued == 1 ? "" : "s");
        rc = 1;
    } else if (s->cancelled && !s->fenced) {
        rc = send_cancelled_say(s, &info, lrc);
    } else if (lrc < 0 && rc == 0) {
        rc = 1;
    }
    if (life_done && rc == 0) {
        fprintf(stderr, "ringmail send: campaign %lld is done: %s\n", s->o.campaign, done_why);
    }
    if (info.abandoned) {
        /* Database threads are stuck in libpq: they keep the loader's
         * memory, so the process ends here, its output flushed. */
        fflush(NULL);
        _exit(rc);
    }
    return rc;
}

void send_campaign_free(struct send *s)
{
    sign_client_stop(s->signer); /* a start that failed after the signers started */
    s->signer = NULL;
    prepare_token_done(&s->token); /* the missing merge values' totals */
    if (s->tpl) {
        render_free(s->tpl);
        render_scratch_free(&s->scratch);
        s->tpl = NULL;
    }
}
