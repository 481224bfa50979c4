/*
 * loader_recover - at start, settle what this node still holds. See
 * loader_int.h.
 *
 * After a stop of this node (clean or kill -9), every recipient it still
 * holds (`claimed`, a fresh row in the range of one of its claims, or
 * `ambiguous` after another node took it over while this one was dead)
 * is settled from its journal, read in order
 * (loader_journal_read). The last line decides (loader_settle): an outcome
 * newer than the database's (more attempts) is written as it was; a body
 * going out with no outcome after it is `ambiguous` (or queued again with
 * --resend-ambiguous); anything else never had a body go out since its
 * claim and goes back to `queued`. The journal is trusted only if it was
 * written on this host (the previous incarnation's); otherwise what the
 * node armed counts as sent. Then the journal is emptied: everything it
 * said is in the database.
 *
 * Diagnostics: -1 with the database's or the file system's message in err;
 * the start fails.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "campaign/loader_int.h"

/* loader_settle - the verdict on one held recipient: an outcome the
 * database has not seen wins, then a body that went out (or, with a
 * journal from another host, an arm), then the queue */
enum loader_settle loader_settle(const struct loader_held *h, int trusted)
{
    if (h->last == 'R' && h->result.attempt > h->attempts) {
        return LOADER_SETTLE_RESULT;
    }
    if (h->last == 'D' || (!trusted && h->armed)) {
        return h->ambiguous ? LOADER_SETTLE_LEAVE : LOADER_SETTLE_AMBIGUOUS;
    }
    return LOADER_SETTLE_REQUEUE;
}

/* loader_recover - see the top of this file */
int loader_recover(struct loader *l, const struct loader_prev *prev, char *err, size_t errlen)
{
    char id[32], old[32];
    snprintf(id, sizeof id, "%" PRId64, l->o.campaign);
    snprintf(old, sizeof old, "%" PRId64, prev->exists ? prev->campaign : l->o.campaign);
    int trusted = !prev->exists || strcmp(prev->host, l->host) == 0;
    const char *p[] = {id, l->node, old};
    /* clang-format off */
    PGresult *r = loader_query(
        l->c,
        "WITH a AS (SELECT DISTINCT unnest(ids) AS id FROM ringmail.armed WHERE node = $2)"
        " SELECT q.id, q.attempts, q.state = 'ambiguous', a.id IS NOT NULL"
        " FROM ringmail.recipient q LEFT JOIN a ON a.id = q.id"
        " WHERE q.campaign_id IN ($1, $3) AND q.lease_owner = $2"
        " AND q.state IN ('claimed', 'ambiguous')"
        " UNION ALL SELECT f.id, f.attempts, false, a.id IS NOT NULL FROM (SELECT f.id,"
        " f.attempts FROM " LOADER_FRESH_IN_CLAIMS("$2") ") f"
        " LEFT JOIN a ON a.id = f.id ORDER BY 1",
        3, p, PGRES_TUPLES_OK, err, errlen);
    /* clang-format on */
    if (!r) {
        return -1;
    }
    size_t n = (size_t)pq.PQntuples(r);
    struct loader_held *held = calloc(n ? n : 1, sizeof *held);
    if (!held) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        held[i].id = strtoll(pq.PQgetvalue(r, (int)i, 0), NULL, 10);
        held[i].attempts = (unsigned)atoi(pq.PQgetvalue(r, (int)i, 1));
        held[i].ambiguous = pq.PQgetvalue(r, (int)i, 2)[0] == 't';
        held[i].armed = pq.PQgetvalue(r, (int)i, 3)[0] == 't';
    }
    pq.PQclear(r);
    if (trusted) {
        loader_journal_read(l->j.path, held, n, l->node);
    }
    buf_t known, amb, requeue, leave;
    buf_init(&known);
    buf_init(&amb);
    buf_init(&requeue);
    buf_init(&leave);
    size_t nknown = 0, namb = 0, nreq = 0, nleave = 0;
    for (size_t i = 0; i < n; i++) {
        struct loader_held *h = &held[i];
        switch (loader_settle(h, trusted)) {
        case LOADER_SETTLE_RESULT:
            loader_pack(&known, &h->result);
            nknown++;
            break;
        case LOADER_SETTLE_AMBIGUOUS:
            loader_ids_add(&amb, &namb, h->id);
            break;
        case LOADER_SETTLE_LEAVE:
            loader_ids_add(&leave, &nleave, h->id);
            break;
        case LOADER_SETTLE_REQUEUE:
            loader_ids_add(&requeue, &nreq, h->id);
            break;
        }
    }
    free(held);
    int rc = 0;
    if (nknown > 0 && loader_write(l, l->c, &known, err, errlen) < 0) {
        rc = -1;
    }
    buf_free(&known);
    if (rc == 0) {
        l->st.recovered_results += nknown;
        const char *p2[] = {l->node, loader_ids_end(&amb, namb), loader_ids_end(&requeue, nreq),
                            l->o.resend_ambiguous ? "t" : "f"};
        r = loader_query(
            l->c,
            "UPDATE ringmail.recipient SET"
            " state = CASE WHEN id = ANY($2::bigint[]) AND NOT $4::boolean THEN 'ambiguous'"
            "   ELSE 'queued' END,"
            " reason = CASE WHEN id = ANY($2::bigint[]) AND NOT $4::boolean"
            "   THEN 'DATA was in flight when node ' || $1 || ' stopped' ELSE reason END,"
            " next_attempt_at = CASE WHEN id = ANY($2::bigint[]) AND NOT $4::boolean"
            "   THEN NULL ELSE now() END,"
            " lease_owner = NULL, lease_expires_at = NULL, updated_at = now()"
            " WHERE (id = ANY($2::bigint[]) OR id = ANY($3::bigint[])) AND ((lease_owner = $1"
            " AND state IN ('claimed', 'ambiguous')) OR (state = 'queued'"
            " AND next_attempt_at IS NULL)) RETURNING state",
            4, p2, PGRES_TUPLES_OK, err, errlen);
        if (!r) {
            rc = -1;
        } else {
            for (int i = 0; i < pq.PQntuples(r); i++) {
                if (strcmp(pq.PQgetvalue(r, i, 0), "ambiguous") == 0) {
                    l->st.recovered_ambiguous++;
                } else {
                    l->st.recovered_queued++;
                }
            }
            pq.PQclear(r);
        }
    }
    buf_free(&amb);
    buf_free(&requeue);
    if (rc < 0) {
        buf_free(&leave);
        return -1;
    }
    /* Ambiguous ones the journal did not settle stay ambiguous, no longer
     * anybody's: nothing will write a result for them. (By id: the rows
     * found above. By lease owner, it was a scan of every campaign's rows
     * at every start.) */
    const char *p5[] = {l->node, loader_ids_end(&leave, nleave)};
    r = loader_query(l->c,
                     "UPDATE ringmail.recipient SET lease_owner = NULL WHERE"
                     " id = ANY($2::bigint[]) AND lease_owner = $1 AND state = 'ambiguous'",
                     2, p5, PGRES_COMMAND_OK, err, errlen);
    buf_free(&leave);
    if (!r) {
        return -1;
    }
    pq.PQclear(r);
    const char *p4[] = {l->node};
    /* Its claims and arms: everything they held is settled. */
    r = loader_query(l->c,
                     "WITH k AS (DELETE FROM ringmail.claim WHERE node = $1)"
                     " DELETE FROM ringmail.armed WHERE node = $1",
                     1, p4, PGRES_COMMAND_OK, err, errlen);
    if (!r) {
        return -1;
    }
    pq.PQclear(r);
    if (l->o.resend_ambiguous) {
        const char *p3[] = {id};
        r = loader_query(l->c,
                         "UPDATE ringmail.recipient SET state = 'queued', next_attempt_at = now(),"
                         " lease_owner = NULL, updated_at = now()"
                         " WHERE campaign_id = $1 AND state = 'ambiguous'",
                         1, p3, PGRES_COMMAND_OK, err, errlen);
        if (!r) {
            return -1;
        }
        pq.PQclear(r);
    }
    /* Everything the journal said is now in the database. */
    if (ftruncate(l->j.fd, 0) < 0) {
        snprintf(err, errlen, "journal %s: %s", l->j.path, strerror(errno));
        return -1;
    }
    return 0;
}
