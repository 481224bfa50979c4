/*
 * loader_claims - the claimer thread: keeps the ready queue filled up to
 * what the loop wants. See loader_int.h.
 *
 * Two kinds of claim (schema 8), whole batches while the loop has work in
 * hand, each one statement with one ringmail.claim row saying what the
 * node holds:
 *   - due rows (`deferred` whose next_attempt_at has come, or `queued`
 *     again after a stop or a takeover) move to `claimed` under the
 *     node's lease, FOR UPDATE SKIP LOCKED, first;
 *   - fresh rows (never attempted: `queued` with no next_attempt_at) are
 *     claimed by range: the campaign's sweep moves past the next batch in
 *     id order and the claim row keeps the range; the rows are not
 *     written (their result is their first write, in place).
 * When nothing is claimable, the campaign is asked whether it is done or
 * when its next recipient comes due: from the due index, the sweep and
 * the claim rows (a few rows, not the campaign's); only when those say
 * that nothing is left anywhere is the campaign counted row by row, once,
 * to be sure (a claim of a ringmail before schema 8, a fresh row inserted
 * behind the sweep by hand) before it is called done.
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
    const char *sweep[] = {id, lim, l->node, l->incarnation};
    uint64_t t0 = clock_us();
    /* The sweep's plan is made once per connection: left to itself
     * PostgreSQL plans it afresh at every call (a plan for the LIMIT's
     * value costs less, on paper, than one for any LIMIT), a quarter of a
     * millisecond each time, half a microsecond per recipient. The plan is
     * the same either way: the campaign's fresh rows in id order through
     * recipient_campaign. The setting is the session's, so it is set
     * around the call only (a failed SET or RESET costs nothing but the
     * cached plan). */
    char ignore[256];
    if (which == LOADER_SQL_SWEEP) {
        db_exec(l->c, "SET plan_cache_mode = force_generic_plan", ignore, sizeof ignore);
    }
    PGresult *r = loader_prepared(l->c, which, which == LOADER_SQL_SWEEP ? sweep : p,
                                  PGRES_TUPLES_OK, err, errlen);
    if (which == LOADER_SQL_SWEEP) {
        db_exec(l->c, "RESET plan_cache_mode", ignore, sizeof ignore);
    }
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

/* Expired leases of claims no node row accounts for (a ringmail before
 * schema 3) are looked for with a scan of the campaign's rows (no index on
 * leases, see migration 2), so only once the count of every row
 * (loader_check_done, in a campaign's tail) found claimed rows that no
 * claim row holds, and then at most this often (or a tenth of the lease
 * when that is longer) until they are gone. (Every minute from a node's
 * first idle moment, that scan was 100 to 400 ms of a 300,000-row
 * campaign's database work, to find nothing.) */
#define LOADER_RECLAIM_MS 1000

/* loader_claim - up to want due recipients, then fresh ones, then ones
 * whose lease expired */
static int loader_claim(struct loader *l, size_t want, char *err, size_t errlen)
{
    int n = loader_claim_with(l, LOADER_SQL_CLAIM_DUE, want, err, errlen);
    if (n < 0 || (size_t)n >= want) {
        return n;
    }
    int f = loader_claim_with(l, LOADER_SQL_SWEEP, want - (size_t)n, err, errlen);
    if (f < 0) {
        return n > 0 ? n : -1;
    }
    n += f;
    if ((size_t)n >= want) {
        return n;
    }
    uint64_t now = clock_ms();
    if (!l->ghosts || now < l->next_reclaim_ms) {
        return n;
    }
    uint64_t every = (uint64_t)l->o.lease_s * 100;
    l->next_reclaim_ms = now + (every > LOADER_RECLAIM_MS ? every : LOADER_RECLAIM_MS);
    int m = loader_claim_with(l, LOADER_SQL_CLAIM_EXPIRED, want - (size_t)n, err, errlen);
    return m < 0 ? (n > 0 ? n : -1) : n + m;
}

/* What loader_check_done asks: rows with a next attempt time (the due
 * index: queued again, deferred) and the first one's time; whether a fresh
 * row is left above the sweep; the claims of other nodes (claim rows);
 * what this node still holds (the fresh rows in its ranges, the rows of
 * its due claims still `claimed` by it): counted while claims are parked
 * ($3, to compare), else its claims that still hold a row (each claim
 * probed until its first such row: a range from its top, as
 * LOADER_SQL_CLAIMS_DONE does; one EXISTS over both kinds of claim, an OR
 * of a range and a list, was planned as a scan of every row of the
 * campaign, 50 ms for 300,000, five times a second in a campaign's tail).
 * A few index probes and the claim rows, whatever the campaign's size. */
/* clang-format off */
#define LOADER_DONE_SQL                                                                            \
    "SELECT d.n,"                                                                                  \
    " (SELECT q.id FROM ringmail.recipient q WHERE "                                               \
    LOADER_ABOVE_SWEEP("q", "$1::bigint",                                                          \
                       "coalesce((SELECT upto FROM ringmail.sweep WHERE campaign_id = $1::bigint), 0)") \
    "   AND q.state = 'queued' AND q.next_attempt_at IS NULL"                                      \
    "   ORDER BY q.campaign_id, q.id LIMIT 1) IS NOT NULL,"                                        \
    " (SELECT count(*) FROM ringmail.claim WHERE campaign_id = $1::bigint AND node <> $2),"        \
    " CASE WHEN $3::bigint > 0 THEN (SELECT count(*) FROM ringmail.recipient q"                    \
    "   WHERE q.campaign_id = $1::bigint AND q.id BETWEEN (SELECT min(lo) FROM ringmail.claim"     \
    "   WHERE node = $2 AND campaign_id = $1::bigint) AND (SELECT max(hi) FROM ringmail.claim"     \
    "   WHERE node = $2 AND campaign_id = $1::bigint)"                                             \
    "   AND q.state = 'queued' AND q.next_attempt_at IS NULL AND EXISTS (SELECT 1"                 \
    "   FROM ringmail.claim c WHERE c.node = $2 AND c.campaign_id = $1::bigint"                    \
    "   AND q.id BETWEEN c.lo AND c.hi))"                                                          \
    " + (SELECT count(*) FROM ringmail.recipient q WHERE q.id IN (SELECT unnest(ids)"              \
    "   FROM ringmail.claim WHERE node = $2 AND campaign_id = $1::bigint AND ids IS NOT NULL)"     \
    "   AND q.state = 'claimed' AND q.lease_owner = $2)"                                           \
    " ELSE (SELECT count(*) FROM ringmail.claim c WHERE c.node = $2"                               \
    "   AND c.campaign_id = $1::bigint AND CASE WHEN c.lo IS NOT NULL THEN (SELECT q.id"           \
    "   FROM ringmail.recipient q WHERE q.campaign_id = c.campaign_id"                             \
    "   AND q.id BETWEEN c.lo AND c.hi AND q.state = 'queued' AND q.next_attempt_at IS NULL"       \
    "   ORDER BY q.id DESC LIMIT 1) IS NOT NULL"                                                   \
    "   ELSE EXISTS (SELECT 1 FROM ringmail.recipient q WHERE q.id = ANY(c.ids)"                   \
    "   AND q.state = 'claimed' AND q.lease_owner = $2) END) END,"                                 \
    " coalesce(extract(epoch FROM d.first - now()), 0)"                                            \
    " FROM (SELECT count(*) AS n, min(next_attempt_at) AS first FROM ringmail.recipient"           \
    "   WHERE campaign_id = $1::bigint AND next_attempt_at IS NOT NULL) d"
/* clang-format on */

/* ... and, once those say nothing is left anywhere, every row of the
 * campaign, to be sure: waiting, claimed by others, claimed by this node
 * (by any ringmail: a claim without a claim row, a ringmail before schema
 * 8), and fresh rows at or below the sweep that no claim holds (inserted
 * behind the sweep by hand, or by a transaction that committed after the
 * sweep had passed its ids). */
#define LOADER_DONE_ALL_SQL                                                                        \
    "SELECT count(*) FILTER (WHERE state IN ('queued', 'deferred')),"                              \
    " count(*) FILTER (WHERE state = 'claimed' AND lease_owner IS DISTINCT FROM $2),"              \
    " count(*) FILTER (WHERE state = 'claimed' AND lease_owner = $2)"                              \
    " FROM ringmail.recipient WHERE campaign_id = $1::bigint"

/* Fresh rows no claim holds, at or below the sweep: queued again, due now
 * (the due claim takes them). */
/* clang-format off */
#define LOADER_ORPHANS_SQL                                                                         \
    "UPDATE ringmail.recipient q SET next_attempt_at = now(), updated_at = now()"                  \
    " WHERE q.state = 'queued' AND q.next_attempt_at IS NULL AND "                                 \
    LOADER_UPTO_SWEEP("q", "$1::bigint",                                                           \
                      "coalesce((SELECT upto FROM ringmail.sweep WHERE campaign_id = $1::bigint), 0)") \
    " AND NOT EXISTS (SELECT 1 FROM ringmail.claim c WHERE c.campaign_id = q.campaign_id"          \
    "  AND q.id BETWEEN c.lo AND c.hi)"
/* clang-format on */

/* loader_mark_done - the campaign marked done (life_finish) if every
 * recipient is final: 1 marked, 0 not, -1 + err with the connection down
 * (asked again once connected). last: the final word of this check (the
 * count of every row found nothing left), so the mark is not tried again
 * whatever came of it. */
static int loader_mark_done(struct loader *l, const char *id, int last, char *err, size_t errlen)
{
    char why[LOADER_TEXT_MAX], ferr[512];
    int marked = life_finish(l->c, id, why, sizeof why, ferr, sizeof ferr);
    if (marked < 0 && !loader_up(l->c)) {
        snprintf(err, errlen, "%s", ferr);
        return -1;
    }
    if (marked < 0 && last) {
        /* The run still ends; list and show count it done anyway. */
        fprintf(stderr, "ringmail: database: marking campaign %s done: %s\n", id, ferr);
    }
    pthread_mutex_lock(&l->mu);
    l->life_marked = l->life_marked || marked > 0 || last;
    if (marked > 0) {
        snprintf(l->life_done, sizeof l->life_done, "%s", why);
    }
    pthread_mutex_unlock(&l->mu);
    return marked > 0;
}

/* loader_check_done - nothing was claimable: is the campaign finished, or
 * when is the next due? */
static int loader_check_done(struct loader *l, char *err, size_t errlen)
{
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, l->o.campaign);
    char parked[32];
    snprintf(parked, sizeof parked, "%zu", (size_t)atomic_load(&l->parked));
    const char *p[] = {id, l->node, parked};
    PGresult *r = loader_query(l->c, LOADER_DONE_SQL, 3, p, PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    long long waiting = atoll(pq.PQgetvalue(r, 0, 0));
    int fresh = pq.PQgetvalue(r, 0, 1)[0] == 't';
    long long others = atoll(pq.PQgetvalue(r, 0, 2));
    long long ours = atoll(pq.PQgetvalue(r, 0, 3));
    double due_in = atof(pq.PQgetvalue(r, 0, 4));
    pq.PQclear(r);
    waiting += fresh;
    if (waiting == 0 && others == 0 && ours == 0) {
        /* Nothing left by the claims' account. Every recipient final
         * (life_finish's one pass over the campaign's rows marked it done,
         * said in its row before the loop hears it is exhausted): nothing
         * can be left anywhere. Else every row is counted once more, for
         * what no claim accounts for. */
        int done = l->life_marked ? 0 : loader_mark_done(l, id, 0, err, errlen);
        if (done < 0) {
            return -1;
        }
        if (done) {
            l->ghosts = 0;
        } else {
            r = loader_query(l->c, LOADER_DONE_ALL_SQL, 2, p, PGRES_TUPLES_OK, err, errlen);
            if (!r) {
                return -1;
            }
            waiting = atoll(pq.PQgetvalue(r, 0, 0));
            others = atoll(pq.PQgetvalue(r, 0, 1));
            ours = atoll(pq.PQgetvalue(r, 0, 2));
            pq.PQclear(r);
            l->ghosts = others > 0; /* claimed rows no claim row holds */
        }
        if (waiting > 0) {
            /* Queued or deferred rows no claim or due time accounts for:
             * fresh rows behind the sweep. They are queued again, due now. */
            r = loader_query(l->c, LOADER_ORPHANS_SQL, 1, p, PGRES_COMMAND_OK, err, errlen);
            if (!r) {
                return -1;
            }
            pq.PQclear(r);
            due_in = 0;
        }
    }
    uint64_t now = clock_ms();
    if (waiting == 0 && others == 0 && ours == 0 && !l->life_marked &&
        loader_mark_done(l, id, 1, err, errlen) < 0) {
        return -1;
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
         * resume, when the holds thread queues them again; no need to ask
         * five times a second for as long as a hold lasts. */
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
