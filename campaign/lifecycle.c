/*
 * lifecycle - a campaign's status, read and changed. See lifecycle.h.
 */
#include "campaign/lifecycle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign/campaign_cmd.h"
#include "engine/buf.h"

/* life_query - sql with n text parameters; NULL + err unless want */
static PGresult *life_query(PGconn *c, const char *sql, int n, const char *const *params,
                            ExecStatusType want, char *err, size_t errlen)
{
    return db_checked(c, pq.PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0), want, err,
                      errlen);
}

/* The campaign's recipients counted by state, in one pass over its rows
 * (a CTE: each count below reads it, not the table; three separate
 * counts were three scans, 170 ms for 300,000 rows at a campaign's end),
 * with the fresh ones above the sweep (loader_claims.c: never claimed by
 * any node) for a send's live line. */
#define LIFE_BY_STATE_SQL                                                                          \
    "s AS (SELECT state, count(*) AS n, count(*) FILTER (WHERE next_attempt_at IS NULL"            \
    "  AND id > coalesce((SELECT upto FROM ringmail.sweep WHERE campaign_id = $1::bigint), 0))"    \
    "  AS fresh FROM ringmail.recipient WHERE campaign_id = $1::bigint GROUP BY state)"

/* life_summary_sql - "n state, ..." of the rows of LIFE_BY_STATE_SQL, in
 * the order of campaign_states, into sql */
static void life_summary_sql(buf_t *sql)
{
    buf_append_str(sql, "(SELECT string_agg(n || ' ' || state, ', ' ORDER BY array_position("
                        "ARRAY[");
    for (int i = 0; i < CAMPAIGN_NSTATES; i++) {
        buf_appendf(sql, "%s'%s'", i ? ", " : "", campaign_states[i]);
    }
    buf_append_str(sql, "]::text[], state)) FROM s)");
}

#define LIFE_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'"

int life_read(PGconn *c, const char *id, struct life_status *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    buf_t sql = BUF_INIT;
    buf_append_str(
        &sql, "WITH " LIFE_BY_STATE_SQL ", n AS (SELECT coalesce(sum(n), 0) AS total,"
              " coalesce(sum(n) FILTER (WHERE state IN " LIFE_PENDING_SQL "), 0) AS pending,"
              " coalesce(sum(n) FILTER (WHERE state = 'claimed'), 0) AS claimed,"
              " coalesce(sum(fresh) FILTER (WHERE state = 'queued'), 0) AS fresh FROM s)"
              " SELECT " LIFE_EFFECTIVE_SQL(
                  "c.status", "n.total",
                  "n.pending") ","
                               " c.status, coalesce(c.status_reason, ''), " LIFE_TS(
                                   "c.status_at") ","
                                                  " coalesce(" LIFE_TS(
                                                      "c.start_at") ", ''),"
                                                                    " coalesce(extract(epoch FROM "
                                                                    "c.start_at - now()), 0),"
                                                                    " n.total, n.pending, "
                                                                    "n.claimed, coalesce(");
    life_summary_sql(&sql);
    buf_append_str(&sql, ", ''), n.fresh, coalesce((SELECT swept FROM ringmail.sweep"
                         " WHERE campaign_id = $1::bigint), 0)"
                         " FROM ringmail.campaign AS c, n WHERE c.id = $1::bigint");
    const char *p[] = {id};
    PGresult *r = life_query(c, buf_cstr(&sql), 1, p, PGRES_TUPLES_OK, err, errlen);
    buf_free(&sql);
    if (!r) {
        return -1;
    }
    int found = pq.PQntuples(r) == 1;
    if (found) {
        snprintf(out->status, sizeof out->status, "%s", pq.PQgetvalue(r, 0, 0));
        snprintf(out->stored, sizeof out->stored, "%s", pq.PQgetvalue(r, 0, 1));
        snprintf(out->reason, sizeof out->reason, "%s", pq.PQgetvalue(r, 0, 2));
        snprintf(out->at, sizeof out->at, "%s", pq.PQgetvalue(r, 0, 3));
        snprintf(out->start_at, sizeof out->start_at, "%s", pq.PQgetvalue(r, 0, 4));
        out->start_in_s = atof(pq.PQgetvalue(r, 0, 5));
        out->total = atoll(pq.PQgetvalue(r, 0, 6));
        out->pending = atoll(pq.PQgetvalue(r, 0, 7));
        out->claimed = atoll(pq.PQgetvalue(r, 0, 8));
        snprintf(out->summary, sizeof out->summary, "%s", pq.PQgetvalue(r, 0, 9));
        out->fresh = atoll(pq.PQgetvalue(r, 0, 10));
        out->swept = atoll(pq.PQgetvalue(r, 0, 11));
    }
    pq.PQclear(r);
    return found;
}

int life_set(PGconn *c, const char *id, const char *from, const char *to, const char *reason,
             char *err, size_t errlen)
{
    const char *p[] = {id, from, to, reason};
    PGresult *r = life_query(c,
                             "UPDATE ringmail.campaign SET status = $3, status_at = now(),"
                             " status_reason = $4 WHERE id = $1::bigint"
                             " AND status = ANY($2::text[]) RETURNING 1",
                             4, p, PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    int n = pq.PQntuples(r);
    pq.PQclear(r);
    return n > 0;
}

int life_finish(PGconn *c, const char *id, char *reason, size_t reasonlen, char *err, size_t errlen)
{
    buf_t sql = BUF_INIT;
    buf_append_str(&sql, "WITH " LIFE_BY_STATE_SQL " UPDATE ringmail.campaign SET status = 'done',"
                         " status_at = CASE WHEN status = 'done' THEN status_at ELSE now() END,"
                         " status_reason = 'all ' || (SELECT sum(n) FROM s)"
                         " || ' recipients final: ' || ");
    life_summary_sql(&sql);
    buf_append_str(&sql, " WHERE id = $1::bigint AND status <> 'cancelled'"
                         " AND EXISTS (SELECT 1 FROM s)"
                         " AND NOT EXISTS (SELECT 1 FROM s WHERE state IN " LIFE_PENDING_SQL ")"
                         " RETURNING status_reason");
    const char *p[] = {id};
    PGresult *r = life_query(c, buf_cstr(&sql), 1, p, PGRES_TUPLES_OK, err, errlen);
    buf_free(&sql);
    if (!r) {
        return -1;
    }
    int n = pq.PQntuples(r);
    if (n > 0 && reason) {
        snprintf(reason, reasonlen, "%s", pq.PQgetvalue(r, 0, 0));
    }
    pq.PQclear(r);
    return n > 0;
}

void life_duration(double s, char *buf, size_t n)
{
    long long t = s > 0 ? (long long)(s + 0.5) : 0;
    if (t >= 86400) {
        snprintf(buf, n, "%lldd %02lldh", t / 86400, t % 86400 / 3600);
    } else if (t >= 3600) {
        snprintf(buf, n, "%lldh %02lldm", t / 3600, t % 3600 / 60);
    } else if (t >= 60) {
        snprintf(buf, n, "%lldm %02llds", t / 60, t % 60);
    } else {
        snprintf(buf, n, "%llds", t);
    }
}
