/*
 * loader_holds - the holds of the complaint guard as a running send sees
 * them, and the claims parked behind them. See loader.h.
 *
 * A thread with a PostgreSQL connection of its own (not the writer's, the
 * claimer's or the heartbeat's: a slow statement here delays neither
 * results, claims, arms nor the node's lease) reads the campaign's
 * ringmail.isp_hold rows and its status (an operator's pause or cancel)
 * at start and every LOADER_HOLDS_POLL_MS, and publishes them with a
 * generation number the loop compares on its tick.
 *
 * Parking: a recipient claimed for a held ISP leaves the loop unattempted
 * (no result, no delivery row, attempts unchanged) and is kept here by id
 * only. Its claim stays the node's (the heartbeat keeps the node's lease),
 * so the claimer does not take it again while its ISP is held: held mail
 * neither fills the send window nor goes round between the database and
 * the loop. Once its ISP is no longer held and the loop has applied that
 * (loader_holds_applied), the thread sends it back to `queued` (due now)
 * and the claimer takes it again; a stop before that
 * requeues it with every other unattempted claim (loader_stop). A crash
 * leaves it claimed with no journal line after its claim: the next start
 * of the node queues it again. If the recipient was armed (asked ahead of
 * its transaction), its arm waits for one result fewer.
 *
 * Diagnostics: database errors print "ringmail: database: holds: ..."
 * once per outage and are retried; the holds last read stay in force.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "campaign/loader_int.h"
#include "engine/clock.h"

#define LOADER_HOLDS_REQUEUE_MAX 10000 /* ids per requeue statement */
/* A stop waits this long for the thread: it is asleep, or in a statement of
 * a few milliseconds; one blocked on a database that stopped answering is
 * left behind rather than eat into the send's 10 s stop. */
#define LOADER_HOLDS_JOIN_MS 200

struct loader_parked {
    int64_t id;
    uint32_t isp; /* index into names */
};

struct loader_holds {
    struct loader *l; /* the loop thread's (arms); the thread touches only l->parked */
    char *url, *node;
    char campaign[32], incarnation[32];
    PGconn *c; /* the thread's (and the first read's) */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    int stopping, orphaned, done;
    struct loader_hold holds[LOADER_HOLDS_MAX];
    size_t nholds;
    struct loader_life life; /* the campaign's status */
    uint64_t gen, applied;   /* of the holds read, of those the loop applied */
    char **names;            /* ISP names of parked recipients, interned */
    size_t nnames;
    struct loader_parked *parked;
    size_t nparked, parked_cap;
    uint64_t requeued;
    /* the thread's */
    uint64_t next_connect;
    int warned;
};

/* loader_holds_say - a database error, once per outage */
static void loader_holds_say(struct loader_holds *h, const char *what, const char *err)
{
    if (!h->warned) {
        fprintf(stderr, "ringmail: database: holds: %s: %s (retrying; the holds last read stay)\n",
                what, err);
        h->warned = 1;
    }
}

/* loader_holds_up - the connection, made again at most once per retry interval; 1 when up */
static int loader_holds_up(struct loader_holds *h, char *err, size_t errlen)
{
    if (loader_up(h->c)) {
        return 1;
    }
    uint64_t now = clock_ms();
    if (now < h->next_connect) {
        snprintf(err, errlen, "not connected");
        return 0;
    }
    h->next_connect = now + LOADER_RETRY_DB_MS;
    if (h->c) {
        pq.PQfinish(h->c);
    }
    h->c = db_connect_current(h->url, err, errlen);
    if (!h->c) {
        return 0;
    }
    /* Short bounds: a hold read late is better than a thread stuck. */
    if (db_exec(h->c,
                "SET client_encoding = 'UTF8'; SET statement_timeout = '10s';"
                " SET lock_timeout = '2s'",
                err, errlen) < 0) {
        pq.PQfinish(h->c);
        h->c = NULL;
        return 0;
    }
    return 1;
}

/* loader_holds_read - the campaign's holds into the published set (gen
 * moves when they changed); 0, or -1 + err */
static int loader_holds_read(struct loader_holds *h, char *err, size_t errlen)
{
    const char *p[] = {h->campaign};
    PGresult *r = loader_query(h->c,
                               "SELECT isp, reason, to_char(held_at AT TIME ZONE 'UTC',"
                               " 'YYYY-MM-DD HH24:MI:SS') || ' UTC'"
                               " FROM ringmail.isp_hold WHERE campaign_id = $1::bigint"
                               " AND resumed_at IS NULL ORDER BY isp LIMIT 64",
                               1, p, PGRES_TUPLES_OK, err, errlen);
    _Static_assert(LOADER_HOLDS_MAX == 64, "the LIMIT above");
    if (!r) {
        return -1;
    }
    struct loader_hold now[LOADER_HOLDS_MAX];
    memset(now, 0, sizeof now); /* compared whole below */
    size_t n = (size_t)pq.PQntuples(r);
    n = n < LOADER_HOLDS_MAX ? n : LOADER_HOLDS_MAX;
    for (size_t i = 0; i < n; i++) {
        snprintf(now[i].isp, sizeof now[i].isp, "%s", pq.PQgetvalue(r, (int)i, 0));
        snprintf(now[i].reason, sizeof now[i].reason, "%s", pq.PQgetvalue(r, (int)i, 1));
        snprintf(now[i].since, sizeof now[i].since, "%s", pq.PQgetvalue(r, (int)i, 2));
    }
    pq.PQclear(r);
    /* The campaign's status, on the same poll: a pause or a cancel. */
    struct loader_life life;
    memset(&life, 0, sizeof life);
    r = loader_query(h->c,
                     "SELECT status, coalesce(status_reason, ''),"
                     " to_char(status_at AT TIME ZONE 'UTC', 'HH24:MI:SS') || ' UTC'"
                     " FROM ringmail.campaign WHERE id = $1::bigint",
                     1, p, PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    if (pq.PQntuples(r) == 1) {
        snprintf(life.status, sizeof life.status, "%s", pq.PQgetvalue(r, 0, 0));
        snprintf(life.reason, sizeof life.reason, "%s", pq.PQgetvalue(r, 0, 1));
        snprintf(life.since, sizeof life.since, "%s", pq.PQgetvalue(r, 0, 2));
    } else {
        snprintf(life.status, sizeof life.status, "cancelled"); /* deleted: send nothing more */
        snprintf(life.reason, sizeof life.reason, "the campaign was deleted");
    }
    pq.PQclear(r);
    pthread_mutex_lock(&h->mu);
    if (n != h->nholds || memcmp(now, h->holds, n * sizeof now[0]) != 0 ||
        memcmp(&life, &h->life, sizeof life) != 0) {
        memcpy(h->holds, now, n * sizeof now[0]);
        h->nholds = n;
        h->life = life;
        h->gen++;
    }
    pthread_mutex_unlock(&h->mu);
    return 0;
}

/* loader_holds_is_held - isp is in the published set (under mu) */
static int loader_holds_is_held(const struct loader_holds *h, const char *isp)
{
    if (strcmp(h->life.status, "paused") == 0 || strcmp(h->life.status, "cancelled") == 0) {
        return 1; /* every ISP waits (a cancel's stop queues them with the rest) */
    }
    for (size_t i = 0; i < h->nholds; i++) {
        if (strcmp(h->holds[i].isp, isp) == 0) {
            return 1;
        }
    }
    return 0;
}

/* loader_holds_requeue - parked recipients whose ISP is no longer held go
 * back to `queued`, due now (only while this process is the node's
 * incarnation, and only claims still the node's); -1 + err leaves them
 * parked for the next round */
static int loader_holds_requeue(struct loader_holds *h, char *err, size_t errlen)
{
    for (;;) {
        /* Take up to a statement's worth out of the list, once the loop
         * runs with the holds read last. */
        struct loader_parked *take = NULL;
        size_t ntake = 0;
        pthread_mutex_lock(&h->mu);
        if (h->applied != h->gen || h->stopping) {
            pthread_mutex_unlock(&h->mu);
            return 0;
        }
        size_t k = 0;
        for (size_t i = 0; i < h->nparked; i++) {
            struct loader_parked *x = &h->parked[i];
            if (ntake < LOADER_HOLDS_REQUEUE_MAX && !loader_holds_is_held(h, h->names[x->isp])) {
                if (!take) {
                    take = malloc(LOADER_HOLDS_REQUEUE_MAX * sizeof *take);
                    if (!take) {
                        abort();
                    }
                }
                take[ntake++] = *x;
            } else {
                h->parked[k++] = *x;
            }
        }
        h->nparked = k;
        atomic_store(&h->l->parked, k);
        pthread_mutex_unlock(&h->mu);
        if (!ntake) {
            return 0;
        }
        buf_t a;
        buf_init(&a);
        size_t n = 0;
        for (size_t i = 0; i < ntake; i++) {
            loader_ids_add(&a, &n, take[i].id);
        }
        const char *p[] = {loader_ids_end(&a, n), h->campaign, h->node, h->incarnation};
        PGresult *r = loader_query(h->c,
                                   "UPDATE ringmail.recipient q SET state = 'queued',"
                                   " next_attempt_at = now(), lease_owner = NULL,"
                                   " lease_expires_at = NULL, updated_at = now()"
                                   " WHERE id = ANY($1::bigint[]) AND campaign_id = $2::bigint"
                                   " AND ((state = 'claimed' AND lease_owner = $3)"
                                   "  OR (state = 'queued' AND next_attempt_at IS NULL"
                                   "   AND EXISTS (SELECT 1 FROM ringmail.claim k WHERE k.node = $3"
                                   "    AND k.campaign_id = $2::bigint AND q.id BETWEEN k.lo"
                                   "    AND k.hi)))"
                                   " AND EXISTS (SELECT 1 FROM ringmail.node"
                                   "  WHERE name = $3 AND incarnation = $4::bigint)",
                                   4, p, PGRES_COMMAND_OK, err, errlen);
        buf_free(&a);
        pthread_mutex_lock(&h->mu);
        if (r) {
            h->requeued += ntake;
        } else {
            /* Back in the list, for the next round. */
            if (h->nparked + ntake > h->parked_cap) {
                h->parked_cap = h->nparked + ntake;
                h->parked = realloc(h->parked, h->parked_cap * sizeof *h->parked);
                if (!h->parked) {
                    abort();
                }
            }
            memcpy(h->parked + h->nparked, take, ntake * sizeof *take);
            h->nparked += ntake;
            atomic_store(&h->l->parked, h->nparked);
        }
        pthread_mutex_unlock(&h->mu);
        pq.PQclear(r);
        free(take);
        if (!r) {
            return -1;
        }
    }
}

/* loader_holds_free - everything h owns, and h */
static void loader_holds_free(struct loader_holds *h)
{
    if (h->c) {
        pq.PQfinish(h->c);
    }
    for (size_t i = 0; i < h->nnames; i++) {
        free(h->names[i]);
    }
    free(h->names);
    free(h->parked);
    free(h->url);
    free(h->node);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
}

/* loader_holds_thread - read the holds, requeue what they no longer hold, sleep */
static void *loader_holds_thread(void *arg)
{
    struct loader_holds *h = arg;
    char err[1024];
    for (;;) {
        pthread_mutex_lock(&h->mu);
        int stop = h->stopping;
        pthread_mutex_unlock(&h->mu);
        if (stop) {
            break;
        }
        if (!loader_holds_up(h, err, sizeof err)) {
            loader_holds_say(h, "connecting", err);
        } else if (loader_holds_read(h, err, sizeof err) < 0) {
            loader_holds_say(h, "reading ringmail.isp_hold", err);
        } else if (loader_holds_requeue(h, err, sizeof err) < 0) {
            loader_holds_say(h, "queueing parked recipients again", err);
        } else {
            if (h->warned) {
                fprintf(stderr, "ringmail: database: holds: reading again\n");
            }
            h->warned = 0;
        }
        if (h->c && !loader_up(h->c)) {
            pq.PQfinish(h->c);
            h->c = NULL;
        }
        pthread_mutex_lock(&h->mu);
        if (!h->stopping) {
            loader_wait_on(&h->mu, &h->cv, LOADER_HOLDS_POLL_MS);
        }
        pthread_mutex_unlock(&h->mu);
    }
    pthread_mutex_lock(&h->mu);
    int orphaned = h->orphaned;
    h->done = 1;
    pthread_mutex_unlock(&h->mu);
    if (orphaned) {
        loader_holds_free(h); /* the stop did not wait for us */
    }
    return NULL;
}

/* loader_holds_start - see loader.h */
struct loader_holds *loader_holds_start(struct loader *l, char *err, size_t errlen)
{
    struct loader_holds *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->l = l;
    h->url = strdup(l->url);
    h->node = strdup(l->node);
    snprintf(h->campaign, sizeof h->campaign, "%" PRId64, l->o.campaign);
    snprintf(h->incarnation, sizeof h->incarnation, "%s", l->incarnation);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    char why[1024];
    if (!h->url || !h->node || !loader_holds_up(h, why, sizeof why) ||
        loader_holds_read(h, why, sizeof why) < 0) {
        snprintf(err, errlen, "reading the campaign's ISP holds: %s", h->url ? why : "no memory");
        loader_holds_free(h);
        return NULL;
    }
    if (pthread_create(&h->thread, NULL, loader_holds_thread, h) != 0) {
        snprintf(err, errlen, "cannot start the holds thread");
        loader_holds_free(h);
        return NULL;
    }
    return h;
}

/* loader_holds_get - see loader.h */
size_t loader_holds_get(struct loader_holds *h, struct loader_hold *out, size_t max, uint64_t *gen)
{
    pthread_mutex_lock(&h->mu);
    size_t n = h->nholds;
    memcpy(out, h->holds, (n < max ? n : max) * sizeof *out);
    *gen = h->gen;
    pthread_mutex_unlock(&h->mu);
    return n;
}

/* loader_holds_life - see loader.h */
void loader_holds_life(struct loader_holds *h, struct loader_life *out)
{
    pthread_mutex_lock(&h->mu);
    *out = h->life;
    pthread_mutex_unlock(&h->mu);
}

/* loader_holds_applied - see loader.h */
void loader_holds_applied(struct loader_holds *h, uint64_t gen)
{
    pthread_mutex_lock(&h->mu);
    if (h->applied != gen) {
        h->applied = gen;
        pthread_cond_signal(&h->cv); /* requeue what is no longer held, now */
    }
    pthread_mutex_unlock(&h->mu);
}

/* loader_holds_park - see loader.h */
void loader_holds_park(struct loader_holds *h, int64_t id, uint64_t arm_seq, const char *isp)
{
    struct loader *l = h->l;
    if (arm_seq) {
        /* Asked ahead of a transaction that will not happen under this
         * claim: the arm waits for one result fewer (its row goes once
         * the others are in; a takeover meanwhile counts it as possibly
         * sent, which errs on the safe side). */
        pthread_mutex_lock(&l->amu);
        struct loader_arm_seq *a = loader_arm_find(l, arm_seq);
        if (a && a->left > 0) {
            a->left--;
        }
        loader_arm_collect(l);
        pthread_mutex_unlock(&l->amu);
    }
    pthread_mutex_lock(&h->mu);
    uint32_t k = 0;
    while (k < h->nnames && strcmp(h->names[k], isp) != 0) {
        k++;
    }
    if (k == h->nnames) {
        char **v = realloc(h->names, (h->nnames + 1) * sizeof *v);
        if (!v || !(v[h->nnames] = strdup(isp))) {
            abort();
        }
        h->names = v;
        h->nnames++;
    }
    if (h->nparked == h->parked_cap) {
        h->parked_cap = h->parked_cap ? h->parked_cap * 2 : 1024;
        h->parked = realloc(h->parked, h->parked_cap * sizeof *h->parked);
        if (!h->parked) {
            abort();
        }
    }
    h->parked[h->nparked++] = (struct loader_parked){id, k};
    atomic_store(&h->l->parked, h->nparked);
    pthread_mutex_unlock(&h->mu);
}

/* loader_holds_counts - see loader.h */
void loader_holds_counts(struct loader_holds *h, size_t *parked, uint64_t *requeued)
{
    pthread_mutex_lock(&h->mu);
    *parked = h->nparked;
    *requeued = h->requeued;
    pthread_mutex_unlock(&h->mu);
}

/* loader_holds_stop - see loader.h */
void loader_holds_stop(struct loader_holds *h)
{
    if (!h) {
        return;
    }
    pthread_mutex_lock(&h->mu);
    h->stopping = 1;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)LOADER_HOLDS_JOIN_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    if (pthread_timedjoin_np(h->thread, NULL, &ts) == 0) {
        loader_holds_free(h);
        return;
    }
    /* Blocked in libpq: it frees itself when it gets out (unless it got
     * out just now). */
    pthread_mutex_lock(&h->mu);
    int done = h->done;
    h->orphaned = !done;
    pthread_mutex_unlock(&h->mu);
    if (done) {
        pthread_join(h->thread, NULL);
        loader_holds_free(h);
    } else {
        pthread_detach(h->thread);
    }
}
