/*
 * sts_cache - the MTA-STS policy cache every node shares, and the policy
 * texts TLS-RPT quotes, in PostgreSQL (campaign mode). See send_int.h.
 *
 * ringmail.mta_sts_policy has one row per recipient domain: the last good
 * policy (sts_id, mode, mx, max_age, policy, fetched_at, expires_at), when
 * it was last checked and the last error, and who fetches it now
 * (fetch_node, fetch_until). The pool asks on its fetcher thread
 * (pool_options.sts_shared), which may block:
 *   1. the row holds a policy under the TXT id asked for, not expired and
 *      in its first half of life: that is the answer, no fetch;
 *   2. else this node takes the fetch: an UPDATE that sets fetch_node and
 *      fetch_until only where nobody holds it (fetch_until passed or none),
 *      so of two `send` processes exactly one fetches; it fetches
 *      (sts_fetch_run), writes the new policy or the error (the last good
 *      policy stays: RFC 8461 5.1), and lets go;
 *   3. another node holds the fetch: wait (200 ms steps, at most its
 *      timeout and 5 s) and read the row again.
 * A failed refresh answers with the last good policy while it has not
 * expired. PostgreSQL away: this node fetches for itself (said once).
 *
 * Policy texts (pool_options.on_tls_policy, on the loop) go to
 * ringmail.tls_policy_text with INSERT ... ON CONFLICT DO NOTHING on a
 * small writer thread of their own: the loop only queues.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "campaign/db.h"
#include "campaign/send_int.h"
#include "pool/sts_fetch.h"

#define STS_TEXT_QUEUE_MAX 256
#define STS_STOP_MS 3000
/* A fetch that failed is not asked again, by any node, for the same TXT id
 * within this long: the others take its error (and the last good policy). */
#define STS_RETRY_AFTER_S 60
#define STS_RETRY_AFTER_SQL "interval '60 seconds'"

struct sts_text {
    char type[8];
    char domain[256];
    char id[80];
    char *text; /* owned */
};

struct sts_store {
    const char *url, *node;   /* borrowed from the options */
    PGconn *fc[STS_FETCHERS]; /* one per fetcher thread of the pool (job->worker) */
    int fc_warned;            /* atomic */
    /* the policy-text writer */
    PGconn *wc;
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct sts_text queue[STS_TEXT_QUEUE_MAX]; /* under lock */
    size_t n;
    int quit, done; /* under lock */
};

/* ---- the shared policy cache (the pool's fetcher thread) ---- */

static PGresult *sts_exec(struct sts_store *k, unsigned w, const char *sql, int n,
                          const char *const *params)
{
    char err[512];
    PGconn **fc = &k->fc[w % STS_FETCHERS];
    if (!*fc) {
        *fc = db_connect_current(k->url, err, sizeof err);
        if (!*fc) {
            if (!__atomic_exchange_n(&k->fc_warned, 1, __ATOMIC_SEQ_CST)) {
                fprintf(stderr, "ringmail send: MTA-STS cache in PostgreSQL: %s (fetching alone)\n",
                        err);
            }
            return NULL;
        }
    }
    PGresult *r = pq.PQexecParams(*fc, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? pq.PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        snprintf(err, sizeof err, "%s", r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(*fc));
        db_trim(err);
        fprintf(stderr, "ringmail send: MTA-STS cache in PostgreSQL: %s\n", err);
        pq.PQclear(r);
        pq.PQfinish(*fc); /* a new connection next time */
        *fc = NULL;
        return NULL;
    }
    return r;
}

/* What a row says of its last check (another node's fetch, seen ending). */
struct sts_row_check {
    int busy;        /* another node holds the fetch */
    int failed_now;  /* a fetch for the same TXT id failed within STS_RETRY_AFTER_S */
    char at[48];     /* checked_at as text, "" never */
    char error[400]; /* last_error, "" none */
    char type[40];   /* last_error_type */
};

/* The row as the answer: 1 fresh for the id asked, 0 not, -1 no database.
 * A usable (unexpired) policy goes into j when use_old, or when fresh. */
static int sts_row_read(struct sts_store *k, struct sts_job *j, int use_old,
                        struct sts_row_check *chk)
{
    const char *params[] = {j->domain, j->txt_id};
    PGresult *r = sts_exec(k, j->worker,
                           "SELECT coalesce(sts_id, ''), coalesce(policy, ''),"
                           " coalesce(extract(epoch FROM fetched_at)::bigint, 0),"
                           " coalesce(extract(epoch FROM expires_at)::bigint, 0),"
                           " coalesce(expires_at > now(), false),"
                           " coalesce(sts_id = $2 AND expires_at > now()"
                           "   AND fetched_at + max_age / 2 * interval '1 second' > now(), false),"
                           " coalesce(fetch_until > now(), false), coalesce(checked_at::text, ''),"
                           " coalesce(last_error, ''), coalesce(last_error_type, ''),"
                           " coalesce(last_error IS NOT NULL AND last_error_id = $2"
                           "   AND checked_at > now() - " STS_RETRY_AFTER_SQL ", false)"
                           " FROM ringmail.mta_sts_policy WHERE domain = $1",
                           2, params);
    if (!r) {
        return -1;
    }
    int fresh = 0;
    memset(chk, 0, sizeof *chk);
    if (pq.PQntuples(r) == 1) {
        int usable = pq.PQgetvalue(r, 0, 4)[0] == 't';
        fresh = pq.PQgetvalue(r, 0, 5)[0] == 't';
        chk->busy = pq.PQgetvalue(r, 0, 6)[0] == 't';
        snprintf(chk->at, sizeof chk->at, "%s", pq.PQgetvalue(r, 0, 7));
        snprintf(chk->error, sizeof chk->error, "%s", pq.PQgetvalue(r, 0, 8));
        snprintf(chk->type, sizeof chk->type, "%s", pq.PQgetvalue(r, 0, 9));
        chk->failed_now = pq.PQgetvalue(r, 0, 10)[0] == 't';
        const char *text = pq.PQgetvalue(r, 0, 1);
        char err[200];
        if (usable && (fresh || use_old) &&
            mta_sts_policy_parse(text, strlen(text), &j->pol, err, sizeof err) == 0) {
            free(j->text);
            j->text = strdup(text);
            if (!j->text) {
                abort();
            }
            snprintf(j->id, sizeof j->id, "%s", pq.PQgetvalue(r, 0, 0));
            j->fetched_at = strtoll(pq.PQgetvalue(r, 0, 2), NULL, 10);
            j->expires_at = strtoll(pq.PQgetvalue(r, 0, 3), NULL, 10);
            j->ok = 1;
        } else {
            fresh = 0;
        }
    }
    pq.PQclear(r);
    return fresh;
}

/* sts_claim - this node takes the fetch of j's domain: 1, 0 held by another, -1 no database */
static int sts_claim(struct sts_store *k, struct sts_job *j)
{
    char ms[32];
    snprintf(ms, sizeof ms, "%u", j->timeout_ms + 2000);
    const char *params[] = {j->domain, k->node, ms, j->txt_id};
    PGresult *r = sts_exec(k, j->worker,
                           "INSERT INTO ringmail.mta_sts_policy (domain) VALUES ($1)"
                           " ON CONFLICT (domain) DO NOTHING",
                           1, params);
    if (!r) {
        return -1;
    }
    pq.PQclear(r);
    r = sts_exec(k, j->worker,
                 "UPDATE ringmail.mta_sts_policy SET fetch_node = $2,"
                 " fetch_until = now() + $3::int * interval '1 millisecond'"
                 " WHERE domain = $1 AND (fetch_until IS NULL OR fetch_until < now())"
                 /* not when another node's fetch for this id landed since the
                  * row was read (its answer is what the next read returns) */
                 " AND NOT coalesce(sts_id = $4 AND expires_at > now()"
                 "   AND fetched_at + max_age / 2 * interval '1 second' > now(), false)"
                 /* nor when its fetch for this id failed moments ago */
                 " AND NOT coalesce(last_error IS NOT NULL AND last_error_id = $4"
                 "   AND checked_at > now() - " STS_RETRY_AFTER_SQL ", false)",
                 4, params);
    if (!r) {
        return -1;
    }
    int got = strcmp(pq.PQcmdTuples(r), "1") == 0;
    pq.PQclear(r);
    return got;
}

/* sts_mx_array - p's mx patterns as a text[] literal */
static void sts_mx_array(const struct mta_sts_policy *p, buf_t *out)
{
    buf_append_str(out, "{");
    for (size_t i = 0; i < p->nmx; i++) {
        buf_append_str(out, i ? ",\"" : "\"");
        for (const char *c = p->mx[i]; *c; c++) {
            if (*c == '"' || *c == '\\') {
                buf_append_str(out, "\\");
            }
            buf_append(out, c, 1);
        }
        buf_append_str(out, "\"");
    }
    buf_append_str(out, "}");
}

/* sts_write - the fetch's outcome into the row, and the fetch let go */
static void sts_write(struct sts_store *k, const struct sts_job *j)
{
    PGresult *r;
    if (j->ok) {
        buf_t mx = BUF_INIT;
        sts_mx_array(&j->pol, &mx);
        char max_age[16], at[32];
        snprintf(max_age, sizeof max_age, "%u", j->pol.max_age);
        snprintf(at, sizeof at, "%lld", (long long)j->fetched_at);
        const char *params[] = {
            j->domain, j->id, mta_sts_mode_name(j->pol.mode), buf_cstr(&mx), max_age, j->text, at};
        r = sts_exec(k, j->worker,
                     "UPDATE ringmail.mta_sts_policy SET sts_id = $2, mode = $3, mx = $4::text[],"
                     " max_age = $5::int, policy = $6, fetched_at = to_timestamp($7::bigint),"
                     " expires_at = to_timestamp($7::bigint) + $5::int * interval '1 second',"
                     " checked_at = now(), last_error = NULL, last_error_type = NULL,"
                     " fetch_node = NULL, fetch_until = NULL WHERE domain = $1",
                     7, params);
        buf_free(&mx);
    } else {
        const char *params[] = {j->domain, j->error, j->error_type ? j->error_type : "", j->txt_id};
        r = sts_exec(k, j->worker,
                     "UPDATE ringmail.mta_sts_policy SET checked_at = now(), last_error = $2,"
                     " last_error_type = nullif($3, ''), last_error_id = $4, fetch_node = NULL,"
                     " fetch_until = NULL WHERE domain = $1",
                     4, params);
    }
    pq.PQclear(r);
}

/* sts_fetch_shared - the fetch this node took: done, written; a failure
 * answers with the last good policy still in force */
static void sts_fetch_shared(struct sts_store *k, struct sts_job *j)
{
    if (sts_fetch_run(j) == 0) {
        sts_write(k, j);
        return;
    }
    sts_write(k, j);
    struct sts_row_check chk;
    sts_row_read(k, j, 1, &chk); /* j->error stays: the refresh failed */
}

/* sts_adopt_error - another node's fetch failed while this one waited: its
 * error is this job's too (no second request), with the last good policy */
static void sts_adopt_error(struct sts_store *k, struct sts_job *j, const struct sts_row_check *c)
{
    static const char *const types[] = {"sts-policy-fetch-error", "sts-webpki-invalid",
                                        "sts-policy-invalid"};
    snprintf(j->error, sizeof j->error, "%s", c->error);
    j->error_type = types[0];
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (strcmp(c->type, types[i]) == 0) {
            j->error_type = types[i];
        }
    }
    struct sts_row_check again;
    sts_row_read(k, j, 1, &again);
}

void send_sts_shared(void *user, struct sts_job *j)
{
    struct sts_store *k = user;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char seen[48] = ""; /* checked_at when another node was found fetching */
    int waited_for_other = 0;
    if (j->cache_only) {
        /* No TXT id: an unexpired policy in the shared cache still applies. */
        struct sts_row_check chk;
        sts_row_read(k, j, 1, &chk);
        return;
    }
    for (;;) {
        struct sts_row_check chk;
        int fresh = sts_row_read(k, j, 0, &chk);
        if (fresh < 0) {
            sts_fetch_run(j); /* no database: fetch alone */
            return;
        }
        if (fresh) {
            return;
        }
        if (waited_for_other && !chk.busy && strcmp(chk.at, seen) != 0 && chk.error[0]) {
            sts_adopt_error(k, j, &chk);
            return;
        }
        if (!chk.busy && chk.failed_now) {
            /* A node's fetch for this id failed moments ago: its error, not
             * another request (a failing policy host is asked by the
             * cluster at most once per STS_RETRY_AFTER_S). */
            sts_adopt_error(k, j, &chk);
            return;
        }
        int claimed = sts_claim(k, j);
        if (claimed != 0) {
            if (claimed < 0) {
                sts_fetch_run(j);
            } else {
                sts_fetch_shared(k, j);
            }
            return;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long waited = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (waited > (long)j->timeout_ms + 5000) {
            sts_fetch_run(j); /* the other node's fetch never ended: our own */
            return;
        }
        if (!waited_for_other) {
            waited_for_other = 1;
            snprintf(seen, sizeof seen, "%s", chk.at);
        }
        usleep(200 * 1000); /* another node fetches: its answer comes into the row */
    }
}

/* ---- policy texts (the loop queues, the writer writes) ---- */

static void *sts_text_main(void *arg)
{
    struct sts_store *k = arg;
    pthread_mutex_lock(&k->lock);
    for (;;) {
        while (!k->n && !k->quit) {
            pthread_cond_wait(&k->cond, &k->lock);
        }
        if (!k->n) {
            break;
        }
        struct sts_text t = k->queue[0];
        memmove(&k->queue[0], &k->queue[1], (k->n - 1) * sizeof k->queue[0]);
        k->n--;
        pthread_mutex_unlock(&k->lock);
        char err[512] = "";
        if (!k->wc) {
            k->wc = db_connect_current(k->url, err, sizeof err);
        }
        if (k->wc) {
            const char *params[] = {t.type, t.domain, t.id, t.text};
            PGresult *r = pq.PQexecParams(
                k->wc,
                "INSERT INTO ringmail.tls_policy_text (type, domain, policy_id, policy)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                4, NULL, params, NULL, NULL, 0);
            if (!r || pq.PQresultStatus(r) != PGRES_COMMAND_OK) {
                snprintf(err, sizeof err, "%s",
                         r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(k->wc));
                db_trim(err);
                pq.PQfinish(k->wc);
                k->wc = NULL;
            }
            pq.PQclear(r);
        }
        if (err[0]) {
            fprintf(stderr, "ringmail send: the %s policy of %s (id %s) not kept: %s\n", t.type,
                    t.domain, t.id, err);
        }
        free(t.text);
        pthread_mutex_lock(&k->lock);
    }
    k->done = 1;
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->lock);
    return NULL;
}

void send_tls_policy_note(void *user, const char *type, const char *domain, const char *policy_id,
                          const char *text)
{
    struct send *s = user;
    struct sts_store *k = s->sts_store;
    if (!k) {
        return;
    }
    pthread_mutex_lock(&k->lock);
    if (k->n < STS_TEXT_QUEUE_MAX) {
        struct sts_text *t = &k->queue[k->n++];
        snprintf(t->type, sizeof t->type, "%s", type);
        snprintf(t->domain, sizeof t->domain, "%s", domain);
        snprintf(t->id, sizeof t->id, "%s", policy_id);
        t->text = strdup(text);
        if (!t->text) {
            abort();
        }
        pthread_cond_signal(&k->cond);
    }
    pthread_mutex_unlock(&k->lock);
}

int send_sts_start(struct send *s, struct pool_options *po)
{
    struct sts_store *k = calloc(1, sizeof *k);
    if (!k) {
        abort();
    }
    k->url = s->o.db_url;
    k->node = s->o.node ? s->o.node : "";
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->cond, NULL);
    s->sts_store = k;
    int rc = pthread_create(&k->thread, NULL, sts_text_main, k);
    if (rc != 0) {
        fprintf(stderr, "ringmail send: cannot start a thread: %s\n", strerror(rc));
        return -1;
    }
    k->started = 1;
    po->sts_shared = send_sts_shared;
    po->sts_user = k;
    po->on_tls_policy = send_tls_policy_note;
    return 0;
}

void send_sts_stop(struct send *s)
{
    struct sts_store *k = s->sts_store;
    if (!k) {
        return;
    }
    s->sts_store = NULL;
    if (k->started) {
        int done = send_thread_quit(&k->lock, &k->cond, &k->quit, &k->done, STS_STOP_MS);
        if (!done) {
            pthread_detach(k->thread); /* stuck in libpq: the process is ending */
            return;
        }
        pthread_join(k->thread, NULL);
    }
    for (size_t i = 0; i < STS_FETCHERS; i++) {
        if (k->fc[i]) {
            pq.PQfinish(k->fc[i]);
        }
    }
    if (k->wc) {
        pq.PQfinish(k->wc);
    }
    pthread_mutex_destroy(&k->lock);
    pthread_cond_destroy(&k->cond);
    free(k);
}
