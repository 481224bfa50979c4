/*
 * loader - the campaign's database side: start, stop, and the loop's side
 * of the queues. See loader.h; the rest of the loader is behind
 * loader_int.h (which file holds what is listed there).
 *
 * Start: the journal is opened and locked, the three connections made,
 * the campaign loaded, the process registered as the node's incarnation,
 * what the node still holds recovered, and the three database threads
 * (writer, heartbeat, claimer) started. Stop: results are waited for
 * (bounded by loader_stop_by's deadline), the threads joined, unsent
 * claims given back to `queued`, and the node stopped; threads still
 * blocked in libpq at the deadline are left behind with everything they
 * hold.
 *
 * Locking: one mutex (mu) guards the queues and flags shared with the loop
 * thread; no database thread holds it across a query.
 *
 * Diagnostics: loader_start fails with the reason in err; a stop that
 * could not write every result says how many on stderr.
 */
#include "campaign/loader.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "campaign/loader_int.h"
#include "engine/clock.h"

#define LOADER_LEASE_S 10 /* a node's lease: renewed every half, taken over when it runs out */

/* loader_signal - tell the loop: the eventfd, then the notify callback */
void loader_signal(struct loader *l)
{
    uint64_t one = 1;
    ssize_t n = write(l->efd, &one, sizeof one);
    (void)n;
    pthread_mutex_lock(&l->mu);
    void (*fn)(void *) = l->notify;
    void *arg = l->notify_arg;
    pthread_mutex_unlock(&l->mu);
    if (fn) {
        fn(arg);
    }
}

/* loader_wait_on - wait on cv (mu held) for ms at most */
void loader_wait_on(pthread_mutex_t *mu, pthread_cond_t *cv, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    while (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cv, mu, &ts);
}

/* ---- start ---- */

/* loader_campaign_read - see loader.h */
int loader_campaign_read(PGconn *conn, int64_t id, struct loader_campaign *c, char *err,
                         size_t errlen)
{
    char idtext[32];
    snprintf(idtext, sizeof idtext, "%" PRId64, id);
    const char *p[] = {idtext};
    PGresult *r = loader_query(conn,
                               "SELECT name, mail_from, subject, text_body, html_body,"
                               " list_unsubscribe, feedback_id, dkim_domain, dkim_selector,"
                               " dkim_selector2, from_name, reply_to, dkim_key IS NOT NULL,"
                               " dkim_key2 IS NOT NULL"
                               " FROM ringmail.campaign WHERE id = $1",
                               1, p, PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    if (pq.PQntuples(r) != 1) {
        snprintf(err, errlen, "no campaign %s", idtext);
        pq.PQclear(r);
        return 1;
    }
    memset(c, 0, sizeof *c);
    c->id = id;
    char **col[] = {&c->name,          &c->mail_from,        &c->subject,     &c->text_body,
                    &c->html_body,     &c->list_unsubscribe, &c->feedback_id, &c->dkim_domain,
                    &c->dkim_selector, &c->dkim_selector2,   &c->from_name,   &c->reply_to};
    for (int i = 0; i < (int)(sizeof col / sizeof col[0]); i++) {
        *col[i] = loader_strdup_or_null(r, 0, i);
    }
    c->has_dkim_key = *pq.PQgetvalue(r, 0, 12) == 't'; /* the keys: the signer's to read */
    c->has_dkim_key2 = *pq.PQgetvalue(r, 0, 13) == 't';
    pq.PQclear(r);
    return 0;
}

/* loader_load_campaign - the campaign's row into l->camp */
static int loader_load_campaign(struct loader *l, char *err, size_t errlen)
{
    return loader_campaign_read(l->c, l->o.campaign, &l->camp, err, errlen) == 0 ? 0 : -1;
}

/* loader_join - ask the threads to stop and join those started (n of them: writer,
 * heartbeat, claimer). */
static void loader_join(struct loader *l, int n)
{
    pthread_mutex_lock(&l->mu);
    l->stopping = 3;
    pthread_cond_broadcast(&l->cv);
    pthread_cond_broadcast(&l->wcv);
    pthread_cond_broadcast(&l->hcv);
    pthread_mutex_unlock(&l->mu);
    pthread_t *t[] = {&l->wthread, &l->hthread, &l->thread};
    for (int i = 0; i < n; i++) {
        pthread_join(*t[i], NULL);
    }
}

/* loader_start - see loader.h and the top of this file */
struct loader *loader_start(const struct loader_options *o, char *err, size_t errlen)
{
    struct loader *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->o = *o;
    l->url = strdup(o->url);
    l->node = strdup(o->node);
    l->o.batch = o->batch ? o->batch : 1000;
    l->o.lease_s = o->lease_s ? o->lease_s : LOADER_LEASE_S;
    l->arm_next_seq = 1;
    if (gethostname(l->host, sizeof l->host - 1) < 0 || !l->host[0]) {
        snprintf(l->host, sizeof l->host, "localhost");
    }
    l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loader_journal_init(&l->j, o->journal_path);
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->amu, NULL);
    pthread_cond_init(&l->cv, NULL);
    pthread_cond_init(&l->wcv, NULL);
    pthread_cond_init(&l->hcv, NULL);
    if (loader_journal_open(&l->j, err, errlen) < 0) {
        goto fail;
    }
    struct loader_prev prev;
    /* Each connection checks the schema version before preparing. */
    if (loader_journal_lock(&l->j, l->node, err, errlen) < 0 ||
        loader_connect(l, 0, err, errlen) < 0 || loader_connect(l, 1, err, errlen) < 0 ||
        loader_connect(l, 2, err, errlen) < 0 || loader_load_campaign(l, err, errlen) < 0 ||
        loader_register(l, &prev, err, errlen) < 0) {
        goto fail;
    }
    l->registered = 1;
    __atomic_store_n(&l->alive_until_ms, clock_ms() + (uint64_t)l->o.lease_s * 750,
                     __ATOMIC_RELEASE);
    if (loader_recover(l, &prev, err, errlen) < 0) {
        goto fail;
    }
    /* The counts at start come from the campaign's status, read by the
     * send once the recovery is done (loader_start_counts): the fresh
     * rows' exact recount is not due before long. */
    l->fresh_next_ms = loader_now_ms() + LOADER_FRESH_RECOUNT_MS;
    void *(*fn[])(void *) = {loader_writer, loader_heart, loader_claimer};
    pthread_t *t[] = {&l->wthread, &l->hthread, &l->thread};
    for (int i = 0; i < 3; i++) {
        if (pthread_create(t[i], NULL, fn[i], l) != 0) {
            snprintf(err, errlen, "cannot start the database threads");
            loader_join(l, i);
            goto fail;
        }
    }
    l->threads = 1;
    return l;
fail:
    l->threads = 0;
    loader_stop(l, 0);
    return NULL;
}

/* loader_campaign_free - see loader.h */
void loader_campaign_free(struct loader_campaign *c)
{
    free(c->name);
    free(c->mail_from);
    free(c->subject);
    free(c->text_body);
    free(c->html_body);
    free(c->list_unsubscribe);
    free(c->feedback_id);
    free(c->dkim_domain);
    free(c->dkim_selector);
    free(c->dkim_selector2);
    free(c->from_name);
    free(c->reply_to);
}

/* loader_now_ms - the clock of loader_stop_by's deadline */
uint64_t loader_now_ms(void)
{
    return clock_ms();
}

#define LOADER_NO_DEADLINE UINT64_MAX

/* loader_deadline - the deadline, brought forward by *hurry when set */
static uint64_t loader_deadline(uint64_t deadline, const uint64_t *hurry)
{
    uint64_t h = hurry ? __atomic_load_n(hurry, __ATOMIC_ACQUIRE) : 0;
    return h && h < deadline ? h : deadline;
}

/* loader_join_by - join t, waiting until deadline at most: 0 joined, -1
 * still running */
static int loader_join_by(pthread_t t, uint64_t deadline)
{
    if (deadline == LOADER_NO_DEADLINE) {
        return pthread_join(t, NULL) == 0 ? 0 : -1;
    }
    uint64_t now = clock_ms(), left = deadline > now ? deadline - now : 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(left / 1000);
    ts.tv_nsec += (long)(left % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_timedjoin_np(t, NULL, &ts) == 0 ? 0 : -1;
}

/* loader_stop - loader_stop_by with give_up_ms (0: no deadline) */
int loader_stop(struct loader *l, unsigned give_up_ms)
{
    struct loader_stop_info info;
    uint64_t deadline = give_up_ms ? clock_ms() + give_up_ms + 3000 : LOADER_NO_DEADLINE;
    return loader_stop_by(l, deadline, NULL, &info);
}

/* loader_stop_by - see loader.h */
/* loader_give_back - fresh rows in the node's claims' ranges and rows it
 * `claimed` back to the queue, with its claim rows, in one statement: the
 * result (one count), or NULL and why. A row the node `claimed` is in one
 * of its claim rows' ids (a claim row goes only once none of its ids is
 * still claimed by the node; rows a ringmail before schema 8 claimed under
 * this name were settled at start, loader_recover): looked up there, not
 * by a scan of the campaign's rows (100 ms for 300,000, at every stop);
 * the ranges' fresh rows by LOADER_FRESH_IN_CLAIMS. */
static PGresult *loader_give_back(struct loader *l, const char *const *p, char *err, size_t errlen)
{
    /* clang-format off */
    return loader_query(
        l->c,
        "WITH g AS (UPDATE ringmail.recipient q SET next_attempt_at = now(), updated_at = now()"
        "  WHERE q.id = ANY(ARRAY(SELECT f.id FROM " LOADER_FRESH_IN_CLAIMS("$1") "))"
        "  AND q.state = 'queued' AND q.next_attempt_at IS NULL RETURNING 1),"
        " c AS (UPDATE ringmail.recipient SET state = 'queued', next_attempt_at = now(),"
        "  lease_owner = NULL, lease_expires_at = NULL"
        "  WHERE id IN (SELECT unnest(ids) FROM ringmail.claim WHERE node = $1"
        "  AND ids IS NOT NULL) AND state = 'claimed' AND lease_owner = $1 RETURNING 1),"
        " k AS (DELETE FROM ringmail.claim WHERE node = $1)"
        " SELECT (SELECT count(*) FROM g) + (SELECT count(*) FROM c)",
        1, p + 1, PGRES_TUPLES_OK, err, errlen);
    /* clang-format on */
}

int loader_stop_by(struct loader *l, uint64_t deadline, const uint64_t *hurry,
                   struct loader_stop_info *info)
{
    memset(info, 0, sizeof *info);
    info->requeued = -1;
    if (!l) {
        return 0;
    }
    int rc = 0;
    if (l->threads) {
        pthread_mutex_lock(&l->mu);
        l->stopping = 1;
        pthread_cond_signal(&l->cv);
        pthread_cond_signal(&l->wcv);
        pthread_mutex_unlock(&l->mu);
        /* Wait for the results to be written, until shortly before the
         * deadline (what is left then is in the journal). */
        int gave_up = 0;
        for (;;) {
            uint64_t d = loader_deadline(deadline, hurry);
            pthread_mutex_lock(&l->mu);
            size_t left = l->nres + l->writing;
            gave_up = left > 0 && d != LOADER_NO_DEADLINE && clock_ms() + 1500 >= d;
            pthread_mutex_unlock(&l->mu);
            if (left == 0 || gave_up) {
                break;
            }
            struct timespec ts = {0, 20000000};
            nanosleep(&ts, NULL);
        }
        /* Claimer and writer first; the heartbeat last, so the node stays
         * alive until its results are in (unless we gave up on them). */
        pthread_mutex_lock(&l->mu);
        l->stopping = gave_up ? 3 : 1;
        pthread_cond_broadcast(&l->cv);
        pthread_cond_broadcast(&l->wcv);
        pthread_cond_broadcast(&l->hcv);
        pthread_mutex_unlock(&l->mu);
        uint64_t d = loader_deadline(deadline, hurry);
        int behind = loader_join_by(l->thread, d == LOADER_NO_DEADLINE ? d : d - 1000) < 0;
        behind += loader_join_by(l->wthread, d == LOADER_NO_DEADLINE ? d : d - 1000) < 0;
        pthread_mutex_lock(&l->mu);
        l->stopping = 3;
        pthread_cond_signal(&l->hcv);
        pthread_mutex_unlock(&l->mu);
        d = loader_deadline(deadline, hurry);
        behind += loader_join_by(l->hthread, d == LOADER_NO_DEADLINE ? d : d - 700) < 0;
        pthread_mutex_lock(&l->mu);
        info->unwritten = l->nres + l->writing;
        pthread_mutex_unlock(&l->mu);
        if (behind) {
            /* Blocked in libpq on a database that does not answer: they
             * keep l; the process ends without freeing it. What they hold
             * is in the journal; the claims stay the node's. */
            info->abandoned = 1;
            return -1;
        }
        if (l->nres > 0) {
            fprintf(stderr,
                    "ringmail: database: %zu results could not be written; their recipients "
                    "stay claimed and are recovered at the next start\n",
                    l->nres);
            rc = -1;
        }
    }
    /* What was claimed and never attempted goes back to the queue (this
     * process knows: nothing of it went out), the node's arms go, and the
     * node is stopped. Only by the node's incarnation: a process refused at
     * start, or one taken over, leaves everything to the live one. */
    /* A connection that broke while the node ran (PostgreSQL restarted:
     * the first statement on it fails) is made again, once. */
    uint64_t next_connect = 0;
    if (l->registered && !l->fenced && l->nres == 0 && l->writing == 0 &&
        loader_keep_up(l, 0, &next_connect)) {
        char id[32], err[512];
        snprintf(id, sizeof id, "%" PRId64, l->o.campaign);
        const char *p[] = {id, l->node, l->incarnation};
        PGresult *r = loader_give_back(l, p, err, sizeof err);
        if (!r && !loader_up(l->c)) {
            next_connect = 0;
            if (loader_keep_up(l, 0, &next_connect)) {
                r = loader_give_back(l, p, err, sizeof err); /* finds nothing given back twice */
            }
        }
        if (r) {
            info->requeued = atoll(pq.PQgetvalue(r, 0, 0)); /* committed: one statement */
        }
        PGresult *r2 = r ? loader_query(l->c, "DELETE FROM ringmail.armed WHERE node = $1", 1,
                                        p + 1, PGRES_COMMAND_OK, err, sizeof err)
                         : NULL;
        PGresult *r3 = r2 ? loader_query(l->c,
                                         "UPDATE ringmail.node SET incarnation = NULL,"
                                         " stopped_at = now()"
                                         " WHERE name = $1 AND incarnation = $2::bigint",
                                         2, p + 1, PGRES_COMMAND_OK, err, sizeof err)
                          : NULL;
        if (r3) {
            if (l->j.fd >= 0 && ftruncate(l->j.fd, 0) < 0) {
                rc = -1;
            }
        } else {
            rc = -1;
        }
        pq.PQclear(r);
        pq.PQclear(r2);
        pq.PQclear(r3);
    }
    loader_disconnect(l, 0);
    loader_disconnect(l, 1);
    loader_disconnect(l, 2);
    free(l->arm_ids);
    free(l->arm_open);
    free(l->arm_done);
    for (size_t i = l->ready_head; i < l->ready_head + l->nready; i++) {
        free(l->ready[i].address);
        free(l->ready[i].vars);
    }
    free(l->ready);
    buf_free(&l->res);
    loader_campaign_free(&l->camp);
    if (l->efd >= 0) {
        close(l->efd);
    }
    loader_journal_free(&l->j);
    pthread_mutex_destroy(&l->mu);
    pthread_mutex_destroy(&l->amu);
    pthread_cond_destroy(&l->cv);
    pthread_cond_destroy(&l->wcv);
    pthread_cond_destroy(&l->hcv);
    free(l->url);
    free(l->node);
    free(l);
    return rc;
}

/* loader_set_notify - also call fn(arg) when the loop should look */
void loader_set_notify(struct loader *l, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&l->mu);
    l->notify = fn;
    l->notify_arg = arg;
    pthread_mutex_unlock(&l->mu);
}

/* loader_fd - the eventfd the loop polls */
int loader_fd(const struct loader *l)
{
    return l->efd;
}

/* loader_take - up to max claimed recipients, without blocking */
size_t loader_take(struct loader *l, struct loader_rcpt *out, size_t max)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->nready < max ? l->nready : max;
    if (n > 0) {
        memcpy(out, l->ready + l->ready_head, n * sizeof *out);
        l->ready_head += n;
        l->nready -= n;
        if (l->nready == 0) {
            l->ready_head = 0;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* loader_want - the loop can take n more */
void loader_want(struct loader *l, size_t n)
{
    pthread_mutex_lock(&l->mu);
    if (n > l->want) {
        l->want = n;
        l->exhausted = 0;
        pthread_cond_signal(&l->cv);
    } else {
        l->want = n;
    }
    pthread_mutex_unlock(&l->mu);
}

/* loader_result - journal one attempt's result, queue it for the writer */
void loader_result(struct loader *l, const struct loader_result *r)
{
    loader_journal_result(&l->j, r);
    pthread_mutex_lock(&l->mu);
    loader_pack(&l->res, r);
    l->nres++;
    l->exhausted = 0;
    if (l->nres >= LOADER_FLUSH_ROWS) {
        pthread_cond_signal(&l->wcv);
    }
    pthread_mutex_unlock(&l->mu);
}

/* loader_backlog - results not yet committed */
size_t loader_backlog(struct loader *l)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->nres + l->writing;
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* loader_exhausted - nothing left to claim and every result written */
int loader_exhausted(struct loader *l)
{
    pthread_mutex_lock(&l->mu);
    int e = l->exhausted && l->nres == 0 && l->writing == 0 && l->nready == 0;
    pthread_mutex_unlock(&l->mu);
    return e;
}

/* loader_stats - the counters, backlog and connection state */
void loader_stats(struct loader *l, struct loader_stats *out)
{
    pthread_mutex_lock(&l->mu);
    *out = l->st;
    out->backlog = l->nres + l->writing;
    out->db_up = l->db_up[0] && l->db_up[1] && l->db_up[2];
    pthread_mutex_unlock(&l->mu);
    out->journal_compactions = __atomic_load_n(&l->j.compactions, __ATOMIC_RELAXED);
}

/* loader_campaign - the campaign loaded at start */
const struct loader_campaign *loader_campaign(const struct loader *l)
{
    return &l->camp;
}

/* loader_life_done - see loader.h */
int loader_life_done(struct loader *l, char *why, size_t n)
{
    pthread_mutex_lock(&l->mu);
    int done = l->life_done[0] != '\0';
    snprintf(why, n, "%s", l->life_done);
    pthread_mutex_unlock(&l->mu);
    return done;
}
