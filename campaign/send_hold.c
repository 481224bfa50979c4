/*
 * send_hold - the complaint guard in a running campaign. See send_int.h.
 *
 * The feedback store holds an ISP for a campaign (a ringmail.isp_hold
 * row) when its complaint rate passes [feedback] complaint_pause;
 * `ringmail campaign resume ID --isp NAME` deletes the row. The loader's
 * holds thread reads the rows every second (loader_holds_*); a loop timer
 * here (SEND_HOLD_TICK_MS) compares their generation and applies a change
 * to the pool: pool_isp_hold, with one loud line on stderr, or
 * pool_isp_release. So a hold written while `send` runs is in force
 * within about 1.1 seconds, and one present at start before
 * the first transaction could start.
 *
 * Held mail leaves the pool: the pool hands each message queued for a
 * held ISP back (on_held, never attempted), and it is parked, its claim
 * kept and its body freed (loader_holds_park). The window therefore never
 * fills with held mail and the other ISPs keep sending; what was parked
 * goes back to the queue when the hold is lifted, or at the stop.
 * Transactions already under way when a hold arrives finish.
 *
 * The campaign's status comes on the same poll: paused holds every ISP of
 * the pool (the send_feed of send_campaign.c claims nothing meanwhile;
 * what the pool held is parked) until it is running again; cancelled
 * stops the run (send_stop: what is in flight finishes, every claim goes
 * back at the loader's stop). The status line says "paused by operator
 * since 14:02:11 UTC".
 *
 * Diagnostics (stderr, once per change): "ringmail: campaign 7: isp gmail
 * held: REASON; `ringmail campaign resume 7 --isp gmail` lifts it" and
 * "ringmail: campaign 7: isp gmail resumed (it was held since ...); sending
 * to it again, its parked recipients go back to the queue"; at start,
 * "ringmail send: campaign 7: reading the campaign's ISP holds: ..." when
 * they cannot be read (the send does not start). The status line adds
 * "held: gmail", /metrics and --json say the rest (send_hold_metrics,
 * send_hold_json).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign/send_int.h"

#define SEND_HOLD_TICK_MS 100

struct send_hold {
    struct send *s;
    struct loader_holds *lh;
    struct loop_timer timer;
    uint64_t gen; /* of the holds applied */
    struct loader_hold held[LOADER_HOLDS_MAX];
    size_t nheld;
    int feed; /* parked since the last tick: the window has room */
    /* The campaign's status applied (the one before a pause, while paused
     * the pause's): paused holds every ISP of the pool. */
    struct loader_life life;
    int paused;
};

/* send_hold_find - the hold on isp in set (n of them), or NULL */
static const struct loader_hold *send_hold_find(const struct loader_hold *set, size_t n,
                                                const char *isp)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(set[i].isp, isp) == 0) {
            return &set[i];
        }
    }
    return NULL;
}

/* send_hold_sync - the pool's holds as the set in force says: every ISP
 * while the campaign is paused, else the held ones */
static void send_hold_sync(struct send *s)
{
    struct send_hold *h = s->hold;
    struct pool_isp_stats *st = calloc(SEND_MAX_ISPS, sizeof *st);
    if (!st) {
        abort();
    }
    size_t n = pool_isp_stats(s->pool, st, SEND_MAX_ISPS);
    n = n < SEND_MAX_ISPS ? n : SEND_MAX_ISPS;
    char why[400];
    snprintf(why, sizeof why, "campaign %s: %s", h->life.status,
             h->life.reason[0] ? h->life.reason : "by operator");
    for (size_t i = 0; i < n; i++) {
        const struct loader_hold *held = send_hold_find(h->held, h->nheld, st[i].name);
        if (held) {
            pool_isp_hold(s->pool, st[i].name, held->reason);
        } else if (h->paused) {
            pool_isp_hold(s->pool, st[i].name, why);
        } else if (st[i].held) {
            pool_isp_release(s->pool, st[i].name);
        }
    }
    for (size_t i = 0; i < h->nheld; i++) {
        pool_isp_hold(s->pool, h->held[i].isp, h->held[i].reason); /* one the pool lacks: added */
    }
    free(st);
}

/* send_hold_apply - the holds read now (n of them) into the pool, saying
 * each change on stderr */
static void send_hold_apply(struct send *s, const struct loader_hold *now, size_t n)
{
    struct send_hold *h = s->hold;
    for (size_t i = 0; i < h->nheld; i++) {
        const struct loader_hold *was = &h->held[i];
        const struct loader_hold *is = send_hold_find(now, n, was->isp);
        if (!is || strcmp(is->since, was->since) != 0) {
            fprintf(stderr,
                    "ringmail: campaign %lld: isp %s resumed (it was held since %s); sending to "
                    "it again, its parked recipients go back to the queue\n",
                    s->o.campaign, was->isp, was->since);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct loader_hold *is = &now[i];
        const struct loader_hold *was = send_hold_find(h->held, h->nheld, is->isp);
        if (was && strcmp(is->since, was->since) == 0) {
            continue;
        }
        fprintf(stderr,
                "ringmail: campaign %lld: isp %s held: %s; `ringmail campaign resume %lld --isp "
                "%s` lifts it\n",
                s->o.campaign, is->isp, is->reason, s->o.campaign, is->isp);
    }
    memcpy(h->held, now, n * sizeof *now);
    h->nheld = n;
}

/* send_hold_life - the campaign's status read now: a pause holds every
 * ISP and stops the feeding, a resume undoes it, a cancel stops the run */
static void send_hold_life(struct send *s, const struct loader_life *life)
{
    struct send_hold *h = s->hold;
    int paused = strcmp(life->status, "paused") == 0;
    int cancelled = strcmp(life->status, "cancelled") == 0;
    if (paused && !h->paused) {
        fprintf(stderr,
                "ringmail: campaign %lld paused (%s, since %s): transactions in flight finish, "
                "nothing new starts; `ringmail campaign resume %lld` continues\n",
                s->o.campaign, life->reason[0] ? life->reason : "by operator", life->since,
                s->o.campaign);
    } else if (!paused && h->paused && !cancelled) {
        fprintf(stderr, "ringmail: campaign %lld resumed (it was paused since %s); sending again\n",
                s->o.campaign, h->life.since);
    }
    h->paused = paused;
    s->paused = paused || cancelled;
    if (paused || !cancelled) {
        h->life = *life;
    }
    if (cancelled && !s->cancelled) {
        fprintf(stderr,
                "ringmail: campaign %lld cancelled (%s): transactions in flight finish, every "
                "claim goes back to the queue, the send stops\n",
                s->o.campaign, life->reason[0] ? life->reason : "by operator");
        s->cancelled = 1;
        s->interrupted = 1; /* feed nothing more */
        send_stop(s);
    }
}

/* send_hold_tick - a change of the holds reaches the pool; parked mail
 * made room in the window: feed it */
static void send_hold_tick(struct loop_timer *t)
{
    struct send_hold *h = t->owner;
    struct send *s = h->s;
    if (s->finishing) {
        return;
    }
    struct loader_hold now[LOADER_HOLDS_MAX];
    uint64_t gen;
    size_t n = loader_holds_get(h->lh, now, LOADER_HOLDS_MAX, &gen);
    if (gen != h->gen) {
        struct loader_life life;
        loader_holds_life(h->lh, &life);
        h->gen = gen;
        int was_paused = h->paused;
        send_hold_apply(s, now, n < LOADER_HOLDS_MAX ? n : LOADER_HOLDS_MAX);
        send_hold_life(s, &life);
        if (s->finishing) {
            return; /* cancelled: the stop queues what is parked */
        }
        send_hold_sync(s);
        loader_holds_applied(h->lh, gen); /* parked mail of a released ISP may go back */
        if (was_paused && !h->paused) {
            h->feed = 1; /* resumed: claim and send again */
        }
    }
    if (h->feed) {
        h->feed = 0;
        send_feed(s);
    }
    if (!s->finishing) {
        loop_timer_set(s->loop, &h->timer, SEND_HOLD_TICK_MS);
    }
}

/* send_on_held - the pool let go of m, never attempted: its ISP is held.
 * Its claim is parked; the window has room again (fed on the next tick:
 * this runs inside the pool's pump). */
static void send_on_held(void *user, struct pool_msg *pm, const char *isp)
{
    struct send *s = user;
    struct send_hold *h = s->hold;
    struct send_msg *m = pm->user;
    loader_holds_park(h->lh, m->id, m->arm_seq, isp);
    s->inflight--;
    buf_free(&m->body);
    free(m->rcpt);
    free(m);
    if (!h->feed && !s->finishing) {
        h->feed = 1;
        loop_timer_set(s->loop, &h->timer, 0);
    }
}

int send_hold_start(struct send *s, struct pool_options *po)
{
    struct send_hold *h = calloc(1, sizeof *h);
    if (!h) {
        abort();
    }
    char err[1200];
    h->s = s;
    h->lh = loader_holds_start(s->loader, err, sizeof err);
    if (!h->lh) {
        fprintf(stderr, "ringmail send: campaign %lld: %s\n", s->o.campaign, err);
        free(h);
        return -1;
    }
    s->hold = h;
    struct loader_life life;
    loader_holds_life(h->lh, &life);
    /* Paused already: nothing is fed before the first tick says so. */
    s->paused = strcmp(life.status, "paused") == 0 || strcmp(life.status, "cancelled") == 0;
    po->on_held = send_on_held;
    loop_timer_init(&h->timer, send_hold_tick, h);
    /* The first tick applies the holds present at start: it runs before
     * any connection could be ready for a transaction. */
    loop_timer_set(s->loop, &h->timer, 0);
    return 0;
}

void send_hold_quiet(struct send *s)
{
    if (s->hold) {
        loop_timer_cancel(s->loop, &s->hold->timer);
    }
}

void send_hold_stop(struct send *s)
{
    struct send_hold *h = s->hold;
    if (!h) {
        return;
    }
    if (s->loop) {
        loop_timer_cancel(s->loop, &h->timer);
    }
    loader_holds_stop(h->lh);
    free(h);
    s->hold = NULL;
}

void send_hold_status(const struct send *s, char *buf, size_t n)
{
    buf[0] = '\0';
    const struct send_hold *h = s->hold;
    if (!h) {
        return;
    }
    if (h->paused) {
        /* The operator's pause: nothing moves until a resume. (Held ISPs
         * are the pool's to say: pool_isp_stats' held_why.) */
        snprintf(buf, n, "%s since %s", h->life.reason[0] ? h->life.reason : "paused",
                 h->life.since);
    }
}

json_t *send_hold_json(const struct send *s)
{
    const struct send_hold *h = s->hold;
    json_t *holds = json_array();
    for (size_t i = 0; h && i < h->nheld; i++) {
        json_array_append_new(holds, json_pack("{s:s, s:s, s:s}", "isp", h->held[i].isp, "reason",
                                               h->held[i].reason, "since", h->held[i].since));
    }
    size_t parked = 0;
    uint64_t requeued = 0;
    if (h) {
        loader_holds_counts(h->lh, &parked, &requeued);
    }
    return json_pack("{s:o, s:I, s:I}", "holds", holds, "parked", (json_int_t)parked, "requeued",
                     (json_int_t)requeued);
}

void send_hold_text(const struct send *s)
{
    const struct send_hold *h = s->hold;
    if (!h) {
        return;
    }
    size_t parked = 0;
    uint64_t requeued = 0;
    loader_holds_counts(h->lh, &parked, &requeued);
    for (size_t i = 0; i < h->nheld; i++) {
        printf("held: isp %s since %s: %s (`ringmail campaign resume %lld --isp %s` lifts it)\n",
               h->held[i].isp, h->held[i].since, h->held[i].reason, s->o.campaign, h->held[i].isp);
    }
    if (parked || requeued) {
        printf("parked: %zu recipients wait for a hold to be lifted (claims kept, never "
               "attempted; back to the queue at the stop), %llu went back to the queue on a "
               "resume\n",
               parked, (unsigned long long)requeued);
    }
}

void send_hold_metrics(const struct send *s, buf_t *out)
{
    const struct send_hold *h = s->hold;
    if (!h) {
        return;
    }
    size_t parked = 0;
    uint64_t requeued = 0;
    loader_holds_counts(h->lh, &parked, &requeued);
    metrics_help(out, "ringmail_holds", "gauge",
                 "ISPs held for the campaign now (the complaint guard).");
    metrics_line(out, "ringmail_holds", NULL, (double)h->nheld);
    metrics_help(out, "ringmail_parked", "gauge",
                 "Claimed recipients parked behind a hold (never attempted).");
    metrics_line(out, "ringmail_parked", NULL, (double)parked);
    metrics_help(out, "ringmail_parked_requeued_total", "counter",
                 "Parked recipients sent back to the queue once their ISP was resumed.");
    metrics_line(out, "ringmail_parked_requeued_total", NULL, (double)requeued);
}
