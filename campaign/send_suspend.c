/*
 * send_suspend - ISP suspensions kept in PostgreSQL across restarts and
 * nodes (campaign mode). See send_int.h.
 *
 * A suspend rule (`S3150 => suspend 1h`) stops sending to an ISP for its
 * duration; the pool reports it (on_suspend) and this file keeps it in
 * ringmail.isp_suspend (isp, until, reason, node, at): an upsert that
 * keeps the later `until`, so a shorter suspension from another node never
 * shortens a longer one. The writes happen on a small thread with its own
 * connection and a mutex-protected queue: the loop only appends to the
 * queue, it never waits for PostgreSQL. A write that fails is tried again
 * (a new connection each time, a second apart) up to SEND_SUSPEND_TRIES
 * times, then said on stderr and dropped: the suspension holds in this run
 * anyway.
 *
 * At start, before anything is sent, every row with until > now() is read
 * and applied (pool_isp_suspend), each said on stderr:
 *   ringmail send: gmail suspended until 2026-12-06 03:42:10 UTC (kept from
 *   node n1: 550 5.7.1 ... (rule S3150 => suspend 1h))
 * The time left comes from the database's clock, like `until` itself, so
 * the nodes' clocks need not agree. At the stop, what is queued is written
 * within SEND_SUSPEND_STOP_MS; past it the thread is left behind (the
 * process is ending) and what it holds is said.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "campaign/db.h"
#include "campaign/send_int.h"

#define SEND_SUSPEND_QUEUE_MAX 256
#define SEND_SUSPEND_TRIES 5
#define SEND_SUSPEND_STOP_MS 3000

struct send_suspend_row {
    char isp[CONFIG_NAME_MAX];
    int64_t until_ms; /* CLOCK_REALTIME */
    char reason[512];
    unsigned tries;
};

struct send_suspend {
    const char *url, *node; /* borrowed from the options */
    PGconn *c;              /* the thread's own (the start's, handed over) */
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct send_suspend_row queue[SEND_SUSPEND_QUEUE_MAX]; /* under lock */
    size_t n;
    int quit; /* under lock: write what is queued, then return */
    int done; /* under lock: the thread returned */
};

static const char send_suspend_upsert[] =
    "INSERT INTO ringmail.isp_suspend (isp, until, reason, node, at)"
    " VALUES ($1, to_timestamp($2::double precision / 1000), $3, $4, now())"
    " ON CONFLICT (isp) DO UPDATE SET until = EXCLUDED.until, reason = EXCLUDED.reason,"
    " node = EXCLUDED.node, at = EXCLUDED.at"
    " WHERE ringmail.isp_suspend.until < EXCLUDED.until";

/* send_suspend_write - one row to PostgreSQL on the thread's connection
 * (made when there is none); 0, or -1 with why */
static int send_suspend_write(struct send_suspend *k, const struct send_suspend_row *row, char *err,
                              size_t errlen)
{
    if (!k->c) {
        k->c = db_connect_current(k->url, err, errlen);
        if (!k->c) {
            return -1;
        }
    }
    char until[32];
    snprintf(until, sizeof until, "%lld", (long long)row->until_ms);
    const char *params[] = {row->isp, until, row->reason, k->node};
    PGresult *r = pq.PQexecParams(k->c, send_suspend_upsert, 4, NULL, params, NULL, NULL, 0);
    if (!r || pq.PQresultStatus(r) != PGRES_COMMAND_OK) {
        snprintf(err, errlen, "%s", r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(k->c));
        db_trim(err);
        pq.PQclear(r);
        pq.PQfinish(k->c); /* a new connection for the next try */
        k->c = NULL;
        return -1;
    }
    pq.PQclear(r);
    return 0;
}

static void *send_suspend_main(void *arg)
{
    struct send_suspend *k = arg;
    pthread_mutex_lock(&k->lock);
    for (;;) {
        while (!k->n && !k->quit) {
            pthread_cond_wait(&k->cond, &k->lock);
        }
        if (!k->n) {
            break; /* quit, and nothing left */
        }
        struct send_suspend_row row = k->queue[0];
        pthread_mutex_unlock(&k->lock);
        char err[512];
        int rc = send_suspend_write(k, &row, err, sizeof err);
        pthread_mutex_lock(&k->lock);
        if (rc == 0 && k->queue[0].until_ms != row.until_ms) {
            k->queue[0].tries = 0; /* a later end came meanwhile: write it too */
        } else if (rc == 0 || ++k->queue[0].tries >= SEND_SUSPEND_TRIES) {
            if (rc < 0) {
                fprintf(stderr,
                        "ringmail send: %s's suspension could not be kept in PostgreSQL (%s); it "
                        "holds in this run, a restart will not know it\n",
                        row.isp, err);
            }
            memmove(&k->queue[0], &k->queue[1], (k->n - 1) * sizeof k->queue[0]);
            k->n--;
        } else if (!k->quit) {
            struct timespec at;
            clock_gettime(CLOCK_REALTIME, &at);
            at.tv_sec += 1; /* PostgreSQL away: try again in a second */
            pthread_cond_timedwait(&k->cond, &k->lock, &at);
        }
    }
    k->done = 1;
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->lock);
    return NULL;
}

/* The pool's on_suspend (the loop thread): queued for the writer, never waited for. */
void send_suspend_note(void *user, const char *isp, int64_t until_ms, const char *reason)
{
    struct send *s = user;
    struct send_suspend *k = s->suspend;
    if (!k) {
        return; /* list mode: nothing to keep it in */
    }
    pthread_mutex_lock(&k->lock);
    for (size_t i = 0; i < k->n; i++) {
        if (strcmp(k->queue[i].isp, isp) == 0) {
            if (until_ms > k->queue[i].until_ms) {
                k->queue[i].until_ms = until_ms; /* not written yet: the later one will be */
                snprintf(k->queue[i].reason, sizeof k->queue[i].reason, "%s", reason);
            }
            pthread_mutex_unlock(&k->lock);
            return;
        }
    }
    if (k->n < SEND_SUSPEND_QUEUE_MAX) {
        struct send_suspend_row *row = &k->queue[k->n++];
        memset(row, 0, sizeof *row);
        snprintf(row->isp, sizeof row->isp, "%s", isp);
        row->until_ms = until_ms;
        snprintf(row->reason, sizeof row->reason, "%s", reason);
        pthread_cond_signal(&k->cond);
    }
    pthread_mutex_unlock(&k->lock);
}

/* send_suspend_restore - every suspension still in force into the pool, said */
static int send_suspend_restore(struct send *s, struct send_suspend *k)
{
    PGresult *r =
        pq.PQexec(k->c, "SELECT isp, GREATEST(0, extract(epoch FROM until - now()) * 1000)::bigint,"
                        " reason, coalesce(node, ''),"
                        " to_char(until AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
                        " FROM ringmail.isp_suspend WHERE until > now() ORDER BY isp");
    if (!r || pq.PQresultStatus(r) != PGRES_TUPLES_OK) {
        char err[512];
        snprintf(err, sizeof err, "%s", r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(k->c));
        db_trim(err);
        fprintf(stderr, "ringmail send: reading the ISP suspensions kept in PostgreSQL: %s\n", err);
        pq.PQclear(r);
        return -1;
    }
    for (int i = 0; i < pq.PQntuples(r); i++) {
        const char *isp = pq.PQgetvalue(r, i, 0);
        uint64_t left = strtoull(pq.PQgetvalue(r, i, 1), NULL, 10);
        const char *reason = pq.PQgetvalue(r, i, 2), *node = pq.PQgetvalue(r, i, 3);
        pool_isp_suspend(s->pool, isp, left, reason);
        fprintf(stderr, "ringmail send: %s suspended until %s UTC (kept from node %s: %s)\n", isp,
                pq.PQgetvalue(r, i, 4), node[0] ? node : "unknown", reason);
    }
    pq.PQclear(r);
    return 0;
}

int send_suspend_start(struct send *s)
{
    if (!s->o.db_url) {
        return 0;
    }
    struct send_suspend *k = calloc(1, sizeof *k);
    if (!k) {
        abort();
    }
    k->url = s->o.db_url;
    k->node = s->o.node ? s->o.node : "";
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->cond, NULL);
    s->suspend = k;
    char err[512];
    k->c = db_connect_current(k->url, err, sizeof err);
    if (!k->c) {
        fprintf(stderr, "ringmail send: %s\n", err);
        return -1;
    }
    if (send_suspend_restore(s, k) < 0) {
        return -1;
    }
    int rc = pthread_create(&k->thread, NULL, send_suspend_main, k);
    if (rc != 0) {
        fprintf(stderr, "ringmail send: cannot start a thread: %s\n", strerror(rc));
        return -1;
    }
    k->started = 1;
    return 0;
}

void send_suspend_stop(struct send *s)
{
    struct send_suspend *k = s->suspend;
    if (!k) {
        return;
    }
    s->suspend = NULL;
    if (k->started) {
        int done = send_thread_quit(&k->lock, &k->cond, &k->quit, &k->done, SEND_SUSPEND_STOP_MS);
        pthread_mutex_lock(&k->lock);
        size_t left = k->n;
        pthread_mutex_unlock(&k->lock);
        if (!done) {
            /* Stuck in libpq: the process is ending; the thread keeps its memory. */
            fprintf(stderr,
                    "ringmail send: %zu ISP suspension%s not kept in PostgreSQL in time (the "
                    "database did not answer)\n",
                    left, left == 1 ? "" : "s");
            pthread_detach(k->thread);
            return;
        }
        pthread_join(k->thread, NULL);
    }
    if (k->c) {
        pq.PQfinish(k->c);
    }
    pthread_mutex_destroy(&k->lock);
    pthread_cond_destroy(&k->cond);
    free(k);
}

int send_thread_quit(pthread_mutex_t *lock, pthread_cond_t *cond, int *quit, const int *done,
                     unsigned ms)
{
    struct timespec at;
    clock_gettime(CLOCK_REALTIME, &at);
    at.tv_sec += ms / 1000;
    at.tv_nsec += (long)(ms % 1000) * 1000000;
    if (at.tv_nsec >= 1000000000) {
        at.tv_sec++;
        at.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(lock);
    *quit = 1;
    pthread_cond_broadcast(cond);
    while (!*done && pthread_cond_timedwait(cond, lock, &at) != ETIMEDOUT) {
    }
    int d = *done;
    pthread_mutex_unlock(lock);
    return d;
}
