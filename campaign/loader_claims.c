/*
 * loader_claims - the claimer thread: keeps the ready queue filled up to
 * what the loop wants. See loader_int.h.
 *
 * Due recipients (`queued`, or `deferred` whose next_attempt_at has come)
 * move to `claimed` under the node's lease in one statement with FOR
 * UPDATE SKIP LOCKED, whole batches while the loop has work in hand. When
 * nothing is claimable, the campaign is asked whether it is done or when
 * its next recipient comes due.
 *
 * Diagnostics: "ringmail: database: claiming: ..." on stderr; the claim is
 * tried again.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign/lifecycle.h"
#include "campaign/loader_int.h"
#include "engine/clock.h"

#define LOADER_SMALL_CLAIM_MS 100 /* a want under half a batch waits this long */

/* loader_claim_with - claim up to want recipients with one of the claim
 * statements; how many rows it returned, or -1 + err */
static int loader_claim_with(struct loader *l, int which, size_t want, char *err, size_t errlen)
{
    char id[32], lim[32], lease[32];
    snprintf(id, sizeof id, "%" PRId64, l->o.campaign);
    snprintf(lim, sizeof lim, "%zu", want);
    snprintf(lease, sizeof lease, "%u", l->o.lease_s);
    const char *p[] = {id, lim, l->node, lease, l->o.resend_ambiguous ? "t" : "f", l->incarnation};
    uint64_t t0 = clock_us();
    PGresult *r = loader_prepared(l->c, which, p, PGRES_TUPLES_OK, err, errlen);
    uint64_t took = clock_us() - t0;
    if (!r) {
        return -1;
    }
    int n = pq.PQntuples(r);
    size_t got = 0;
    pthread_mutex_lock(&l->mu);
    l->st.claim_us += took;
    l->st.claims++;
    for (int i = 0; i < n; i++) {
        const char *st = pq.PQgetvalue(r, i, 5);
        if (strcmp(st, "claimed") != 0) {
            if (strcmp(st, "ambiguous") == 0) {
                l->st.recovered_ambiguous++;
            } else {
                l->st.suppressed++; /* joined the suppression list after the import */
            }
            continue;
        }
        if (l->ready_head > 0 && l->ready_head + l->nready == l->ready_cap &&
            l->ready_head >= l->ready_cap / 2) {
            memmove(l->ready, l->ready + l->ready_head, l->nready * sizeof *l->ready);
            l->ready_head = 0;
        }
        if (l->ready_head + l->nready == l->ready_cap) {
            l->ready_cap = l->ready_cap ? l->ready_cap * 2 : 1024;
            struct loader_rcpt *v = realloc(l->ready, l->ready_cap * sizeof *v);
            if (!v) {
                abort();
            }
            l->ready = v;
        }
        struct loader_rcpt *x = &l->ready[l->ready_head + l->nready++];
        x->id = strtoll(pq.PQgetvalue(r, i, 0), NULL, 10);
        x->address = strdup(pq.PQgetvalue(r, i, 1));
        x->vars = strdup(pq.PQgetvalue(r, i, 2));
        x->attempts = (unsigned)atoi(pq.PQgetvalue(r, i, 3));
        x->age_s = atof(pq.PQgetvalue(r, i, 4));
        got++;
    }
    l->st.claimed += got;
    pthread_mutex_unlock(&l->mu);
    pq.PQclear(r);
    if (got) {
        loader_signal(l);
    }
    return n;
}

/* Expired leases are looked for (a scan of the campaign's rows: no index
 * on leases, see migration 2) once the due rows run out, at most this
 * often, or a tenth of the lease when that is longer. */
#define LOADER_RECLAIM_MS 1000

/* loader_claim - up to want due recipients, then ones whose lease expired */
static int loader_claim(struct loader *l, size_t want, char *err, size_t errlen)
{
    int n = loader_claim_with(l, LOADER_SQL_CLAIM_DUE, want, err, errlen);
    if (n < 0 || (size_t)n >= want) {
        return n;
    }
    uint64_t now = clock_ms();
    if (now < l->next_reclaim_ms) {
        return n;
    }
    uint64_t every = (uint64_t)l->o.lease_s * 100;
    l->next_reclaim_ms = now + (every > LOADER_RECLAIM_MS ? every : LOADER_RECLAIM_MS);
    int m = loader_claim_with(l, LOADER_SQL_CLAIM_EXPIRED, want - (size_t)n, err, errlen);
    return m < 0 ? m : n + m;
}

/* loader_check_done - nothing was claimable: is the campaign finished, or
 * when is the next due? */
static int loader_check_done(struct loader *l, char *err, size_t errlen)
{
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, l->o.campaign);
    const char *p[] = {id, l->node};
    PGresult *r = loader_query(
        l->c,
        "SELECT count(*) FILTER (WHERE state IN ('queued', 'deferred')),"
        " count(*) FILTER (WHERE state = 'claimed' AND lease_owner IS DISTINCT FROM $2),"
        " count(*) FILTER (WHERE state = 'claimed' AND lease_owner = $2),"
        " coalesce(extract(epoch FROM min(next_attempt_at) FILTER"
        "   (WHERE state IN ('queued', 'deferred')) - now()), 0)"
        " FROM ringmail.recipient WHERE campaign_id = $1",
        2, p, PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    long long waiting = atoll(pq.PQgetvalue(r, 0, 0));
    long long others = atoll(pq.PQgetvalue(r, 0, 1));
    long long ours = atoll(pq.PQgetvalue(r, 0, 2));
    double due_in = atof(pq.PQgetvalue(r, 0, 3));
    pq.PQclear(r);
    uint64_t now = clock_ms();
    if (waiting == 0 && others == 0 && ours == 0 && !l->life_marked) {
        /* Every recipient final: the campaign is done (lifecycle.h), said
         * in its row before the loop hears it is exhausted. */
        char why[LOADER_TEXT_MAX], ferr[512];
        int marked = life_finish(l->c, id, why, sizeof why, ferr, sizeof ferr);
        if (marked < 0 && !loader_up(l->c)) {
            snprintf(err, errlen, "%s", ferr);
            return -1; /* asked again once connected */
        }
        if (marked < 0) {
            /* The run still ends; list and show count it done anyway. */
            fprintf(stderr, "ringmail: database: marking campaign %s done: %s\n", id, ferr);
        }
        pthread_mutex_lock(&l->mu);
        l->life_marked = 1;
        if (marked > 0) {
            snprintf(l->life_done, sizeof l->life_done, "%s", why);
        }
        pthread_mutex_unlock(&l->mu);
    }
    if (waiting == 0 && others == 0 && ours == 0) {
        pthread_mutex_lock(&l->mu);
        int changed = !l->exhausted;
        l->exhausted = l->nres == 0 && l->writing == 0 && l->nready == 0;
        changed = changed && l->exhausted;
        pthread_mutex_unlock(&l->mu);
        if (changed) {
            loader_signal(l);
        }
        l->nothing_due_until_ms = now + 200;
    } else if (waiting == 0 && others == 0 && ours > 0 &&
               (long long)atomic_load(&l->parked) >= ours) {
        /* Only claims parked behind a held ISP: nothing changes before a
         * resume, when the holds thread queues them again; this count is
         * a scan of the campaign's rows, not worth doing five times a second
         * for as long as a hold lasts. */
        l->nothing_due_until_ms = now + LOADER_HOLDS_POLL_MS;
    } else {
        /* Deferred ones later, or another node's work in progress: look again. */
        uint64_t wait = due_in > 0 ? (uint64_t)(due_in * 1000) : 200;
        l->nothing_due_until_ms = now + (wait > 1000 ? 1000 : wait < 50 ? 50 : wait);
    }
    return 0;
}

/* loader_claimer - the claimer thread: keeps the ready queue filled up to
 * what the loop wants */
void *loader_claimer(void *arg)
{
    struct loader *l = arg;
    char err[1024];
    uint64_t next_connect = 0;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        int stopping = l->stopping;
        /* What the loop can take beyond what is claimed and waiting. */
        size_t want = l->want > l->nready ? l->want - l->nready : 0;
        pthread_mutex_unlock(&l->mu);
        if (stopping) {
            break;
        }
        int up = loader_keep_up(l, 0, &next_connect);
        /* Whole batches while the loop has work in hand (a statement costs
         * about as much for 50 rows as for 500); a smaller want waits a
         * little, then is claimed anyway. */
        uint64_t now = clock_ms();
        int worth =
            want >= l->o.batch / 2 || (want > 0 && now - l->last_claim_ms >= LOADER_SMALL_CLAIM_MS);
        if (up && worth && now >= l->nothing_due_until_ms) {
            l->last_claim_ms = now;
            int got = loader_claim(l, want < l->o.batch ? want : l->o.batch, err, sizeof err);
            if (got < 0) {
                loader_count_db_error(l);
                fprintf(stderr, "ringmail: database: claiming: %s\n", err);
                if (!loader_up(l->c)) {
                    loader_disconnect(l, 0);
                }
            } else if (got == 0) {
                if (loader_check_done(l, err, sizeof err) < 0 && !loader_up(l->c)) {
                    loader_disconnect(l, 0);
                }
            } else {
                continue;
            }
        }
        pthread_mutex_lock(&l->mu);
        if (!l->stopping && (l->want > l->nready ? l->want - l->nready : 0) <= want) {
            loader_wait_on(&l->mu, &l->cv, 50);
        }
        pthread_mutex_unlock(&l->mu);
    }
    return NULL;
}
