/*
 * loader_node - the node: one live process per name, its heartbeat, its
 * arms, and the takeover of dead nodes. See loader_int.h.
 *
 * At start the process becomes the node's incarnation in ringmail.node
 * (loader_register), refused while another live process is that node. The
 * heartbeat thread, with a connection of its own, renews the node's lease
 * every half lease, so neither a results commit nor a lock on
 * ringmail.recipient can make a live node look dead; it commits arms as
 * soon as the loop asks for them and takes over nodes whose lease ran out
 * (within LOADER_DEAD_CHECK_MS of that), never its own.
 *
 * Arms: before a body may go out, its recipient's id is committed to
 * ringmail.armed under the node's incarnation (loader_arm, then
 * loader_armed says yes). A takeover makes the dead node's armed claims
 * `ambiguous` and queues the rest again; an arm of a node that was taken
 * over fails, and the node is fenced: it sends nothing more.
 *
 * Diagnostics: refusals at start name the live process ("node N is already
 * running ..."); a fenced node's reason is kept for loader_fenced;
 * takeovers and arm failures print one line each on stderr.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "campaign/loader_int.h"
#include "engine/clock.h"

#define LOADER_DEAD_CHECK_MS 500 /* how often the heartbeat thread looks for dead nodes */

/* ---- the campaign's counts (the live line's total, remaining, waiting) ---- */

/* How often the heartbeat thread counts, at least; a count that took d ms
 * waits LOADER_COUNT_COST times d before the next, so a large campaign's
 * count never takes more than a sliver of the thread that commits arms. */
#define LOADER_COUNT_MS 2000
#define LOADER_COUNT_COST 50

/* loader_start_counts - see loader.h. The counts the periodic count had
 * already made left the fresh rows out (none known yet): they are added. */
void loader_start_counts(struct loader *l, uint64_t total, uint64_t final, uint64_t fresh,
                         uint64_t swept)
{
    pthread_mutex_lock(&l->mu);
    l->counts.total = total;
    l->counts.final_at_start = final;
    l->fresh_exact = fresh;
    l->fresh_swept = swept;
    if (l->counts.known) {
        l->counts.unclaimed += fresh;
    }
    pthread_mutex_unlock(&l->mu);
}

/* loader_count - the periodic count, on the heartbeat's connection: rows
 * with a next_attempt_at (queued again or deferred, the due index's rows,
 * read from the index), and of them the deferred ones not due yet with the
 * first one's time (an index range); fresh rows above the sweep (never
 * claimed), exactly now and then, else from the last exact count less
 * what the sweep took since (ringmail.sweep.swept: one row). Claimed rows
 * are not counted here: the loop knows its own. */
static void loader_count(struct loader *l)
{
    char camp[32], err[256];
    snprintf(camp, sizeof camp, "%" PRId64, l->o.campaign);
    uint64_t t0 = loader_now_ms();
    int exact = t0 >= l->fresh_next_ms;
    const char *p[] = {camp, exact ? "t" : "f"};
    /* clang-format off */
    PGresult *r = loader_query(
        l->hc,
        "SELECT (SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $1::bigint"
        "   AND next_attempt_at IS NOT NULL),"
        " w.n, coalesce(round(extract(epoch FROM w.first - now()) * 1000), 0),"
        " coalesce((SELECT swept FROM ringmail.sweep WHERE campaign_id = $1::bigint), 0),"
        " CASE WHEN $2::boolean THEN (SELECT count(*) FROM ringmail.recipient q WHERE "
        LOADER_ABOVE_SWEEP("q", "$1::bigint",
                           "coalesce((SELECT upto FROM ringmail.sweep WHERE campaign_id = $1::bigint), 0)")
        "   AND q.state = 'queued' AND q.next_attempt_at IS NULL) END"
        " FROM (SELECT count(*) AS n, min(next_attempt_at) AS first FROM ringmail.recipient"
        "   WHERE campaign_id = $1::bigint AND next_attempt_at > now() AND state = 'deferred') w",
        2, p, PGRES_TUPLES_OK, err, sizeof err);
    /* clang-format on */
    if (!r) {
        return; /* the connection is checked again on the next turn */
    }
    uint64_t now = loader_now_ms();
    double in_ms = atof(pq.PQgetvalue(r, 0, 2));
    uint64_t swept = strtoull(pq.PQgetvalue(r, 0, 3), NULL, 10);
    if (exact) {
        uint64_t wait = (now - t0) * LOADER_FRESH_COST;
        l->fresh_next_ms = now + (wait > LOADER_FRESH_RECOUNT_MS ? wait : LOADER_FRESH_RECOUNT_MS);
    }
    pthread_mutex_lock(&l->mu);
    if (exact) {
        l->fresh_exact = strtoull(pq.PQgetvalue(r, 0, 4), NULL, 10);
        l->fresh_swept = swept;
    }
    uint64_t taken = swept > l->fresh_swept ? swept - l->fresh_swept : 0;
    uint64_t fresh = l->fresh_exact > taken ? l->fresh_exact - taken : 0;
    l->counts.known = 1;
    l->counts.unclaimed = strtoull(pq.PQgetvalue(r, 0, 0), NULL, 10) + fresh;
    l->counts.waiting = strtoull(pq.PQgetvalue(r, 0, 1), NULL, 10);
    l->counts.next_at_ms = l->counts.waiting ? now + (uint64_t)(in_ms > 0 ? in_ms : 0) : 0;
    pthread_mutex_unlock(&l->mu);
    pq.PQclear(r);
    l->count_cost_ms = exact ? 0 : now - t0;
}

/* loader_counts - the last counts */
void loader_counts(struct loader *l, struct loader_counts *out)
{
    pthread_mutex_lock(&l->mu);
    *out = l->counts;
    pthread_mutex_unlock(&l->mu);
}

/* ---- the node: one live process per name ---- */

/* loader_register - become the node's live incarnation: ringmail.node gets a fresh
 * incarnation number for this name, unless another process holds it (its
 * heartbeat not expired): then refused, saying who. A holder on this host
 * whose pid is gone (killed a moment ago, lease not yet run out) is
 * replaced at once: we hold the journal lock, so it is not running. */
int loader_register(struct loader *l, struct loader_prev *prev, char *err, size_t errlen)
{
    char camp[32], pid[16], lease[16];
    snprintf(camp, sizeof camp, "%" PRId64, l->o.campaign);
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    snprintf(lease, sizeof lease, "%u", l->o.lease_s);
    const char *pp[] = {l->node};
    PGresult *r = loader_query(l->c,
                               "SELECT host, pid, campaign_id, incarnation IS NOT NULL AND"
                               " expires_at > now(),"
                               " round(extract(epoch FROM now() - heartbeat_at)::numeric, 1)"
                               " FROM ringmail.node WHERE name = $1",
                               1, pp, PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    memset(prev, 0, sizeof *prev);
    char dead_pid[16] = "-1";
    if (pq.PQntuples(r) == 1) {
        prev->exists = 1;
        snprintf(prev->host, sizeof prev->host, "%s", pq.PQgetvalue(r, 0, 0));
        prev->campaign = strtoll(pq.PQgetvalue(r, 0, 2), NULL, 10);
        int live = pq.PQgetvalue(r, 0, 3)[0] == 't';
        int other_pid = atoi(pq.PQgetvalue(r, 0, 1));
        if (live) {
            int here = strcmp(prev->host, l->host) == 0;
            if (here && other_pid > 0 && kill(other_pid, 0) < 0 && errno == ESRCH) {
                snprintf(dead_pid, sizeof dead_pid, "%d", other_pid);
            } else {
                snprintf(err, errlen,
                         "node %s is already running (pid %d on host %s, last heartbeat %s s "
                         "ago); give this process another --node, or stop that one first",
                         l->node, other_pid, prev->host, pq.PQgetvalue(r, 0, 4));
                pq.PQclear(r);
                return -1;
            }
        }
    }
    pq.PQclear(r);
    const char *p[] = {l->node, camp, l->host, pid, lease, dead_pid};
    r = loader_query(
        l->c,
        "INSERT INTO ringmail.node AS n (name, incarnation, campaign_id, host, pid, lease_s,"
        "  started_at, heartbeat_at, expires_at)"
        " VALUES ($1, nextval('ringmail.node_incarnation'), $2::bigint, $3, $4::int, $5::int,"
        "  now(), now(), now() + $5::int * interval '1 second')"
        " ON CONFLICT (name) DO UPDATE SET incarnation = excluded.incarnation,"
        "  campaign_id = excluded.campaign_id, host = excluded.host, pid = excluded.pid,"
        "  lease_s = excluded.lease_s, started_at = now(), heartbeat_at = now(),"
        "  expires_at = excluded.expires_at, stopped_at = NULL, taken_over_by = NULL,"
        "  taken_over_at = NULL"
        " WHERE n.incarnation IS NULL OR n.expires_at <= now()"
        "  OR (n.host = $3 AND n.pid = $6::int)"
        " RETURNING incarnation",
        6, p, PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    if (pq.PQntuples(r) != 1) {
        pq.PQclear(r);
        snprintf(err, errlen,
                 "node %s is already running (another process became it just now); give this "
                 "process another --node, or stop that one first",
                 l->node);
        return -1;
    }
    snprintf(l->incarnation, sizeof l->incarnation, "%s", pq.PQgetvalue(r, 0, 0));
    pq.PQclear(r);
    /* The campaign's sweep (schema 8), where the fresh rows' claims start. */
    const char *pc[] = {camp};
    r = loader_query(l->c,
                     "INSERT INTO ringmail.sweep (campaign_id) VALUES ($1::bigint)"
                     " ON CONFLICT (campaign_id) DO NOTHING",
                     1, pc, PGRES_COMMAND_OK, err, errlen);
    if (!r) {
        return -1;
    }
    pq.PQclear(r);
    return 0;
}

/* ---- the heartbeat thread: liveness, arms, takeovers ----
 *
 * Its own connection and table, so neither a results commit nor a lock on
 * ringmail.recipient (a long query, a VACUUM FULL) can keep the node from
 * proving it is alive. */

/* loader_beat - renew the node's lease. 0 rows: another node took this one over while
 * its heartbeat was not getting through; it must stop (fenced). */
static void loader_beat(struct loader *l)
{
    char lease[16], err[512];
    snprintf(lease, sizeof lease, "%u", l->o.lease_s);
    const char *p[] = {l->node, l->incarnation, lease};
    uint64_t sent = clock_ms();
    PGresult *r = loader_query(l->hc,
                               "UPDATE ringmail.node SET heartbeat_at = now(),"
                               " expires_at = now() + $3::int * interval '1 second'"
                               " WHERE name = $1 AND incarnation = $2::bigint"
                               " RETURNING taken_over_by",
                               3, p, PGRES_TUPLES_OK, err, sizeof err);
    if (!r) {
        return; /* the connection is checked again on the next turn */
    }
    int alive = pq.PQntuples(r) == 1;
    pq.PQclear(r);
    if (alive) {
        /* The database set expires_at = now() + lease at some moment after
         * `sent`: stop starting bodies a quarter of the lease before. */
        __atomic_store_n(&l->alive_until_ms, sent + (uint64_t)l->o.lease_s * 750, __ATOMIC_SEQ_CST);
        if (__atomic_exchange_n(&l->arm_waiting, 0, __ATOMIC_SEQ_CST)) {
            loader_signal(l); /* transactions held back by a lapsed lease may go */
        }
        return;
    }
    r = loader_query(l->hc,
                     "SELECT coalesce(taken_over_by, '?'),"
                     " coalesce(to_char(taken_over_at, 'HH24:MI:SS'), '?')"
                     " FROM ringmail.node WHERE name = $1",
                     1, p, PGRES_TUPLES_OK, err, sizeof err);
    pthread_mutex_lock(&l->mu);
    __atomic_store_n(&l->fenced, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&l->alive_until_ms, 0, __ATOMIC_RELEASE);
    snprintf(l->fenced_why, sizeof l->fenced_why,
             "node %s was taken over by node %s at %s: its heartbeat did not reach the "
             "database for more than its lease (%u s); it stops, and what it held was settled "
             "by that node",
             l->node, r && pq.PQntuples(r) == 1 ? pq.PQgetvalue(r, 0, 0) : "?",
             r && pq.PQntuples(r) == 1 ? pq.PQgetvalue(r, 0, 1) : "?", l->o.lease_s);
    pthread_mutex_unlock(&l->mu);
    pq.PQclear(r);
    loader_signal(l);
}

/* loader_arm_find - the open seq, by binary search (they are appended in
 * order); NULL if none */
struct loader_arm_seq *loader_arm_find(struct loader *l, uint64_t seq)
{
    size_t lo = 0, hi = l->narm_open;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (l->arm_open[mid].seq < seq) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < l->narm_open && l->arm_open[lo].seq == seq ? &l->arm_open[lo] : NULL;
}

/* loader_arm_collect - under amu: seqs that are committed and have no result left to wait for
 * move to arm_done (their rows are deleted by the writer). */
void loader_arm_collect(struct loader *l)
{
    size_t k = 0;
    for (size_t i = 0; i < l->narm_open; i++) {
        struct loader_arm_seq *a = &l->arm_open[i];
        if (a->left == 0 && a->seq <= l->armed_upto) {
            if (l->narm_done == l->arm_done_cap) {
                l->arm_done_cap = l->arm_done_cap ? l->arm_done_cap * 2 : 64;
                l->arm_done = realloc(l->arm_done, l->arm_done_cap * sizeof *l->arm_done);
                if (!l->arm_done) {
                    abort();
                }
            }
            l->arm_done[l->narm_done++] = (int64_t)a->seq;
        } else {
            l->arm_open[k++] = *a;
        }
    }
    l->narm_open = k;
}

/* loader_arm_commit - commit one arm statement (LOADER_SQL_ARM): the ids,
 * under seq, while this process is the node's incarnation. 0 done, -1
 * failed (retry), 1 fenced. */
static int loader_arm_commit(struct loader *l, const int64_t *ids, size_t n, uint64_t seq)
{
    buf_t a;
    buf_init(&a);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        loader_ids_add(&a, &k, ids[i]);
    }
    char sq[32], err[512];
    snprintf(sq, sizeof sq, "%" PRIu64, seq);
    const char *p[] = {l->node, l->incarnation, sq, loader_ids_end(&a, k)};
    PGresult *r = loader_prepared(l->hc, LOADER_SQL_ARM, p, PGRES_COMMAND_OK, err, sizeof err);
    buf_free(&a);
    if (!r) {
        fprintf(stderr, "ringmail: database: arming: %s (retrying)\n", err);
        loader_count_db_error(l);
        return -1;
    }
    int inserted = atoi(pq.PQcmdTuples(r));
    pq.PQclear(r);
    if (inserted != 1) {
        loader_beat(l); /* says who took the node over, and fences */
        return 1;
    }
    pthread_mutex_lock(&l->amu);
    __atomic_store_n(&l->armed_upto, seq, __ATOMIC_SEQ_CST);
    loader_arm_collect(l);
    pthread_mutex_unlock(&l->amu);
    pthread_mutex_lock(&l->mu);
    l->st.arms++;
    l->st.armed += n;
    pthread_mutex_unlock(&l->mu);
    if (__atomic_exchange_n(&l->arm_waiting, 0, __ATOMIC_SEQ_CST)) {
        loader_signal(l); /* a transaction waits for this commit */
    }
    return 0;
}

/* loader_take_over_one - take over one dead node (its lease ran out): under a lock on its row,
 * its claims that it armed become `ambiguous` (their bodies may have gone
 * out; the owner stays, so a late result of that node still lands) and the
 * rest go back to `queued`. */
static void loader_take_over_one(struct loader *l, const char *dead)
{
    char err[512];
    PGconn *c = l->hc;
    if (db_exec(c, "BEGIN", err, sizeof err) < 0) {
        return;
    }
    const char *p[] = {dead};
    PGresult *r = loader_query(c,
                               "SELECT coalesce(campaign_id, 0),"
                               " round(extract(epoch FROM now() - heartbeat_at)::numeric, 1)"
                               " FROM ringmail.node WHERE name = $1 AND incarnation IS NOT NULL"
                               " AND expires_at < now() FOR UPDATE",
                               1, p, PGRES_TUPLES_OK, err, sizeof err);
    if (!r || pq.PQntuples(r) != 1) {
        pq.PQclear(r);
        db_exec(c, "ROLLBACK", err, sizeof err);
        return;
    }
    char camp[32], ago[32];
    snprintf(camp, sizeof camp, "%s", pq.PQgetvalue(r, 0, 0));
    snprintf(ago, sizeof ago, "%s", pq.PQgetvalue(r, 0, 1));
    pq.PQclear(r);
    const char *p2[] = {dead, camp};
    r = loader_query(
        c,
        "WITH a AS (SELECT DISTINCT unnest(ids) AS id FROM ringmail.armed WHERE node = $1),"
        " t AS (SELECT q.id, a.id IS NOT NULL AS armed FROM ringmail.recipient q"
        "  LEFT JOIN a ON a.id = q.id"
        "  WHERE q.campaign_id = $2::bigint AND q.state = 'claimed' AND q.lease_owner = $1"
        " UNION ALL SELECT q.id, a.id IS NOT NULL FROM ringmail.claim k"
        "  JOIN ringmail.recipient q"
        "   ON q.campaign_id = k.campaign_id AND q.id BETWEEN k.lo AND k.hi"
        "  LEFT JOIN a ON a.id = q.id"
        "  WHERE k.node = $1 AND q.state = 'queued' AND q.next_attempt_at IS NULL)"
        " UPDATE ringmail.recipient r SET"
        "  state = CASE WHEN t.armed THEN 'ambiguous' ELSE 'queued' END,"
        "  reason = CASE WHEN t.armed THEN 'node ' || $1 || ' stopped heartbeating while its"
        " DATA may have been in flight' ELSE r.reason END,"
        "  next_attempt_at = CASE WHEN t.armed THEN NULL ELSE now() END,"
        "  lease_owner = CASE WHEN t.armed THEN $1 END,"
        "  lease_expires_at = NULL, updated_at = now()"
        " FROM t WHERE r.id = t.id AND ((r.state = 'claimed' AND r.lease_owner = $1)"
        "  OR (r.state = 'queued' AND r.next_attempt_at IS NULL))"
        " RETURNING r.state",
        2, p2, PGRES_TUPLES_OK, err, sizeof err);
    size_t amb = 0, queued = 0;
    for (int i = 0; i < pq.PQntuples(r); i++) {
        if (strcmp(pq.PQgetvalue(r, i, 0), "ambiguous") == 0) {
            amb++;
        } else {
            queued++;
        }
    }
    pq.PQclear(r);
    const char *p3[] = {dead, l->node};
    r = loader_query(c,
                     "UPDATE ringmail.node SET incarnation = NULL, taken_over_by = $2,"
                     " taken_over_at = now() WHERE name = $1",
                     2, p3, PGRES_COMMAND_OK, err, sizeof err);
    pq.PQclear(r);
    PGresult *r2 = r ? loader_query(c,
                                    "WITH k AS (DELETE FROM ringmail.claim WHERE node = $1)"
                                    " DELETE FROM ringmail.armed WHERE node = $1",
                                    1, p, PGRES_COMMAND_OK, err, sizeof err)
                     : NULL;
    pq.PQclear(r2);
    if (!r || !r2 || db_exec(c, "COMMIT", err, sizeof err) < 0) {
        fprintf(stderr, "ringmail: database: taking over node %s: %s\n", dead, err);
        db_exec(c, "ROLLBACK", err, sizeof err);
        return;
    }
    pthread_mutex_lock(&l->mu);
    l->st.taken_over_nodes++;
    l->st.taken_over_queued += queued;
    l->st.taken_over_ambiguous += amb;
    pthread_mutex_unlock(&l->mu);
    fprintf(stderr,
            "ringmail: node %s stopped heartbeating (last %s s ago): node %s took over its %zu "
            "claims: %zu queued again, %zu ambiguous (armed: their DATA may have gone out)\n",
            dead, ago, l->node, queued + amb, queued, amb);
    loader_signal(l);
}

/* loader_take_over - take over the nodes whose lease ran out, other than
 * this one */
static void loader_take_over(struct loader *l)
{
    char err[512];
    const char *p[] = {l->node};
    PGresult *r = loader_query(l->hc,
                               "SELECT name FROM ringmail.node WHERE incarnation IS NOT NULL"
                               " AND expires_at < now() AND name <> $1 ORDER BY name LIMIT 16",
                               1, p, PGRES_TUPLES_OK, err, sizeof err);
    if (!r) {
        return;
    }
    int n = pq.PQntuples(r);
    char names[16][128];
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "%s", pq.PQgetvalue(r, i, 0));
    }
    pq.PQclear(r);
    for (int i = 0; i < n; i++) {
        loader_take_over_one(l, names[i]);
    }
}

/* Arms asked for are gathered into one statement: committed once a
 * transaction waits for one of them (loader_armed), once the first has
 * waited LOADER_ARM_GATHER_MS (loader.h), or at LOADER_ARM_GATHER_MAX
 * ids. The pool asks for them two transactions per connection ahead, or
 * LOADER_ARM_AHEAD_MS of the destination's transactions if more, so
 * nobody waits and one statement arms every transaction of the next
 * gather; an arm statement costs PostgreSQL about 85-150 us of CPU
 * whatever it holds, which per recipient was the largest part of the
 * campaign's database cost when every few ids were a statement of their
 * own (against a quick sink, two per connection ahead was 17 ids per
 * statement, 9 us per recipient). */
#define LOADER_ARM_GATHER_MAX 2000
/* A transaction waiting for its arm has it committed at once, unless the
 * last arm statement started less than this long ago: then at that mark.
 * Where messages are sent as soon as they reach the pool (a quick server,
 * the sender's CPU the limit), every head waits for its arm and the
 * statements followed one another back to back, 70 ids each against
 * bench/nodes.sh's sink (3,500 statements for 300,000 recipients at 8
 * ms, 2,000 at 16 ms: 2.9 and 2.2 us of PostgreSQL CPU per recipient).
 * But there every transaction start finds its head just arrived and
 * waits for its arm: 16 ms cost a fifth to a third of the throughput, 8
 * ms a few percent; 4 ms only bounds the statements to 250 a second.
 * Against real servers nobody waits. */
#define LOADER_ARM_GAP_MS 4

/* loader_arm_at - (under amu) when the ids waiting for an arm statement go */
static uint64_t loader_arm_at(struct loader *l)
{
    uint64_t at = l->arm_first_ms + LOADER_ARM_GATHER_MS;
    if (__atomic_load_n(&l->arm_waiting, __ATOMIC_SEQ_CST) ||
        l->narm_ids >= LOADER_ARM_GATHER_MAX) {
        uint64_t gap = l->arm_last_ms + LOADER_ARM_GAP_MS;
        at = gap < at ? gap : at;
    }
    return at;
}

/* loader_arm_due - (under amu) the ids waiting for an arm statement should go now */
static int loader_arm_due(struct loader *l, uint64_t now)
{
    return l->narm_ids > 0 && now >= loader_arm_at(l);
}

/* loader_heart - the heartbeat thread: renews the node's lease every half lease, commits
 * arms (gathered: loader_arm_due), and takes over dead nodes. */
void *loader_heart(void *arg)
{
    struct loader *l = arg;
    uint64_t next_connect = 0, next_beat = 0, next_dead = 0, next_count = 0;
    int64_t *cur = NULL; /* the arm being committed (kept until it is) */
    size_t ncur = 0;
    uint64_t cur_seq = 0;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        int stop = l->stopping > 2, fenced = l->fenced;
        pthread_mutex_unlock(&l->mu);
        pthread_mutex_lock(&l->amu);
        if (!ncur && !fenced && loader_arm_due(l, clock_ms())) {
            l->arm_last_ms = clock_ms();
            cur = l->arm_ids;
            ncur = l->narm_ids;
            cur_seq = l->arm_next_seq++;
            l->arm_ids = NULL;
            l->narm_ids = l->arm_ids_cap = 0;
        }
        pthread_mutex_unlock(&l->amu);
        if (stop) {
            break;
        }
        int up = !fenced && loader_keep_up(l, 2, &next_connect);
        uint64_t now = clock_ms();
        if (up && now >= next_beat) {
            loader_beat(l);
            next_beat = now + (uint64_t)l->o.lease_s * 500;
        }
        int failed = 0;
        if (up && ncur) {
            if (loader_arm_commit(l, cur, ncur, cur_seq) >= 0) {
                free(cur);
                cur = NULL;
                ncur = 0;
            } else {
                failed = 1;
            }
        }
        if (up && now >= next_dead) {
            loader_take_over(l);
            next_dead = now + LOADER_DEAD_CHECK_MS;
        }
        if (up && !ncur && now >= next_count) {
            loader_count(l); /* between arms, never holding one back */
            uint64_t wait = l->count_cost_ms * LOADER_COUNT_COST;
            next_count = now + (wait > LOADER_COUNT_MS ? wait : LOADER_COUNT_MS);
        }
        if (!loader_up(l->hc)) {
            loader_disconnect(l, 2);
        }
        pthread_mutex_lock(&l->mu);
        int go_on = l->stopping <= 2 && !l->fenced;
        pthread_mutex_unlock(&l->mu);
        pthread_mutex_lock(&l->amu);
        uint64_t t = clock_ms();
        int more = go_on && (ncur ? up && !failed : loader_arm_due(l, t));
        if (go_on && !more) {
            /* Woken by loader_arm and loader_armed (under amu: no lost
             * wake-up), when the gathered arms are due, or in time for the
             * next heartbeat; a stop waits this long at most. */
            unsigned ms = ncur ? 20 : 50;
            if (!ncur && l->narm_ids) {
                uint64_t at = loader_arm_at(l);
                ms = at <= t ? 1 : at - t < ms ? (unsigned)(at - t) : ms;
            }
            loader_wait_on(&l->amu, &l->hcv, ms);
        }
        pthread_mutex_unlock(&l->amu);
    }
    free(cur);
    return NULL;
}

/* ---- the loop's side of the arms ---- */

/* loader_arm - queue id for the next arm statement; its seq */
uint64_t loader_arm(struct loader *l, int64_t id)
{
    pthread_mutex_lock(&l->amu);
    if (l->narm_ids == l->arm_ids_cap) {
        l->arm_ids_cap = l->arm_ids_cap ? l->arm_ids_cap * 2 : 256;
        l->arm_ids = realloc(l->arm_ids, l->arm_ids_cap * sizeof *l->arm_ids);
        if (!l->arm_ids) {
            abort();
        }
    }
    if (l->narm_ids == 0) {
        l->arm_first_ms = clock_ms();
    }
    l->arm_ids[l->narm_ids++] = id;
    uint64_t seq = l->arm_next_seq;
    struct loader_arm_seq *last = l->narm_open ? &l->arm_open[l->narm_open - 1] : NULL;
    if (last && last->seq == seq) {
        last->left++;
    } else {
        if (l->narm_open == l->arm_open_cap) {
            l->arm_open_cap = l->arm_open_cap ? l->arm_open_cap * 2 : 64;
            l->arm_open = realloc(l->arm_open, l->arm_open_cap * sizeof *l->arm_open);
            if (!l->arm_open) {
                abort();
            }
        }
        l->arm_open[l->narm_open++] = (struct loader_arm_seq){seq, 1};
    }
    if (l->narm_ids == 1) {
        pthread_cond_signal(&l->hcv);
    }
    pthread_mutex_unlock(&l->amu);
    return seq;
}

/* loader_armed_now - seq committed, not fenced, lease good */
static int loader_armed_now(struct loader *l, uint64_t seq)
{
    return seq && seq <= __atomic_load_n(&l->armed_upto, __ATOMIC_SEQ_CST) &&
           !__atomic_load_n(&l->fenced, __ATOMIC_ACQUIRE) &&
           clock_ms() < __atomic_load_n(&l->alive_until_ms, __ATOMIC_ACQUIRE);
}

/* loader_armed - may the body armed under seq go out now? */
int loader_armed(struct loader *l, uint64_t seq)
{
    if (loader_armed_now(l, seq)) {
        return 1;
    }
    /* Ask to be told at the next commit, then look again: a commit that
     * came in between is either seen here or sees the flag. The heartbeat
     * thread commits the gathered arms at once when it sees the flag
     * (told under amu, so the wake-up is not lost). */
    if (!__atomic_exchange_n(&l->arm_waiting, 1, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&l->amu);
        pthread_cond_signal(&l->hcv);
        pthread_mutex_unlock(&l->amu);
    }
    return loader_armed_now(l, seq);
}

/* loader_lease_ok - the node's lease is good and nobody took it over */
int loader_lease_ok(struct loader *l)
{
    return !__atomic_load_n(&l->fenced, __ATOMIC_ACQUIRE) &&
           clock_ms() < __atomic_load_n(&l->alive_until_ms, __ATOMIC_ACQUIRE);
}

/* loader_fenced - another node took this one over (why into why) */
int loader_fenced(struct loader *l, char *why, size_t n)
{
    pthread_mutex_lock(&l->mu);
    int f = l->fenced;
    if (f && why) {
        snprintf(why, n, "%s", l->fenced_why);
    }
    pthread_mutex_unlock(&l->mu);
    return f;
}
