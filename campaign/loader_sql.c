/*
 * loader_sql - the loader's statements and its database connections.
 * See loader_int.h.
 *
 * Three connections, one per database thread (the claimer's, also used at
 * start and stop; the writer's; the heartbeat's), each checked against the
 * schema version and given the prepared statements when it connects.
 * Sessions run with statement and lock timeouts unless the server or the
 * URL set their own, so a statement stuck on a lock fails and is retried
 * like any database error instead of holding a thread forever.
 *
 * Diagnostics: errors come back as -1 or NULL with the server's message in
 * err; loader_keep_up prints "ringmail: database: ... (retrying)" and
 * "connected again" lines on stderr.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign/loader_int.h"
#include "engine/clock.h"

/* Statement and lock timeouts of the database threads' sessions, unless the
 * server or the URL (options=-c ...) set their own. A statement that fails
 * on them is retried like any database error (results are kept). */
#define LOADER_STATEMENT_TIMEOUT "30s"
#define LOADER_LOCK_TIMEOUT "5s"

/* loader_strdup_or_null - a copy of a result cell, NULL for SQL NULL */
char *loader_strdup_or_null(PGresult *r, int row, int col)
{
    if (pq.PQgetisnull(r, row, col)) {
        return NULL;
    }
    return strdup(pq.PQgetvalue(r, row, col));
}

/* ---- the statements, prepared on every connection ---- */

/* The suppressed addresses among the rows of CTE rows: one scan of the
 * suppression list for the whole claim, its index probed for each address
 * (address = ANY), then hashed. A probe per row (a LATERAL subquery) cost
 * a scan set up per row: on an empty or small list, planned as a
 * sequential scan, that was 2 to 4 us per recipient (a system call to
 * size the table each time); left to itself (a join), the planner hashed
 * the whole list for every claim, 35 us per recipient with 100,000
 * suppressed addresses. */
#define LOADER_SUPPRESSED_SQL(rows)                                                                \
    "SELECT p.address FROM ringmail.suppression p"                                                 \
    " WHERE p.address = ANY (ARRAY(SELECT " rows ".address FROM " rows "))"

/* The claim of due rows: up to $2 rows matching the WHERE part go to
 * `claimed` under a lease, while this process is the node's incarnation
 * ($6, its row locked FOR KEY SHARE: a takeover's FOR UPDATE waits for
 * the claim, or the claim for the takeover, and then finds the incarnation
 * gone and claims nothing). An expired lease of a node that has no row in
 * ringmail.node (written by a ringmail before schema 3): that node's
 * journal is not ours and nothing says what it armed, so its recipient may
 * have been sent: ambiguous, unless resending ($5). The claims of nodes
 * with a row are taken over by loader_take_over instead. The rows claimed
 * are listed in one ringmail.claim row (what the node holds, at a glance).
 * Suppression: LOADER_SUPPRESSED_SQL. */
/* clang-format off */
#define LOADER_CLAIM_SQL(where)                                                                    \
    "WITH n AS (SELECT 1 FROM ringmail.node WHERE name = $3 AND incarnation = $6::bigint"          \
    "  FOR KEY SHARE),"                                                                            \
    " c AS MATERIALIZED (SELECT q.id, q.address, q.state AS old_state,"                            \
    "  q.lease_owner AS old_owner FROM ringmail.recipient q WHERE q.campaign_id = $1"              \
    "  AND EXISTS (SELECT 1 FROM n) AND " where " LIMIT $2 FOR UPDATE OF q SKIP LOCKED),"          \
    " sp AS MATERIALIZED (" LOADER_SUPPRESSED_SQL("c") "),"                                        \
    " s AS MATERIALIZED (SELECT c.*, c.address IN (SELECT sp.address FROM sp) AS suppressed"       \
    "  FROM c),"                                                                                   \
    " u AS (UPDATE ringmail.recipient r SET"                                                       \
    "  state = CASE WHEN s.old_state = 'claimed' AND NOT $5::boolean THEN 'ambiguous'"             \
    "   WHEN s.suppressed THEN 'suppressed' ELSE 'claimed' END,"                                   \
    "  reason = CASE WHEN s.old_state = 'claimed' AND NOT $5::boolean"                             \
    "   THEN 'lease of node ' || coalesce(s.old_owner, '?') || ' expired'"                         \
    "   WHEN s.suppressed THEN 'suppressed' ELSE r.reason END,"                                    \
    "  lease_owner = CASE WHEN (s.old_state = 'claimed' AND NOT $5::boolean) OR s.suppressed"      \
    "   THEN NULL ELSE $3 END,"                                                                    \
    "  lease_expires_at = now() + ($4 || ' seconds')::interval, next_attempt_at = NULL,"           \
    "  updated_at = now()"                                                                         \
    " FROM s WHERE r.id = s.id"                                                                    \
    " RETURNING r.id, r.address, r.vars::text AS vars, r.attempts,"                                \
    "  coalesce(extract(epoch FROM now() - r.first_attempt_at), 0) AS age, r.state),"              \
    " k AS (INSERT INTO ringmail.claim (node, campaign_id, ids)"                                   \
    "  SELECT $3, $1, array_agg(u.id) FROM u WHERE u.state = 'claimed' HAVING count(*) > 0)"       \
    " SELECT * FROM u"
/* clang-format on */

static const struct {
    const char *name, *sql;
    int nparams;
} loader_sql[LOADER_NSQL] = {
    /* Fresh rows, by range (schema 8): $1 campaign, $2 how many, $3 node,
     * $4 incarnation (its row locked FOR KEY SHARE, as above). The
     * campaign's sweep row is locked (claims of several nodes queue here
     * for a moment) and read again once locked (READ COMMITTED: the row
     * as committed); the next $2 fresh rows above it, in id order through
     * recipient_campaign, become one claim row (upto + 1 .. the last one)
     * and the sweep moves to the last one. Nothing is written to the
     * recipients, but for one found on the suppression list since its
     * import. Rows other than fresh ones within the range are not the
     * claim's: a fresh row at or below upto is held by the one claim
     * whose range holds it (no other path makes a row fresh again). */
    /* clang-format off */
    [LOADER_SQL_SWEEP] =
        {"ringmail_sweep",
         "WITH n AS (SELECT 1 FROM ringmail.node WHERE name = $3 AND incarnation = $4::bigint"
         "  FOR KEY SHARE),"
         " s AS (SELECT w.upto FROM ringmail.sweep w WHERE w.campaign_id = $1"
         "  AND EXISTS (SELECT 1 FROM n) FOR UPDATE),"
         " q AS MATERIALIZED (SELECT r.id, r.address, r.vars, r.attempts FROM ringmail.recipient r"
         "  WHERE " LOADER_ABOVE_SWEEP("r", "$1::bigint", "(SELECT upto FROM s)")
         "  AND r.state = 'queued' AND r.next_attempt_at IS NULL"
         "  ORDER BY r.campaign_id, r.id LIMIT $2),"
         " sp AS MATERIALIZED (" LOADER_SUPPRESSED_SQL("q") "),"
         " x AS MATERIALIZED (SELECT q.*, q.address IN (SELECT sp.address FROM sp) AS suppressed"
         "  FROM q),"
         " m AS (SELECT max(id) AS hi, count(*) AS n FROM q),"
         " c AS (INSERT INTO ringmail.claim (node, campaign_id, lo, hi)"
         "  SELECT $3, $1, (SELECT upto FROM s) + 1, m.hi FROM m WHERE m.n > 0),"
         " u AS (UPDATE ringmail.sweep w SET upto = m.hi, swept = w.swept + m.n FROM m"
         "  WHERE w.campaign_id = $1 AND m.n > 0),"
         " z AS (UPDATE ringmail.recipient r SET state = 'suppressed', reason = 'suppressed',"
         "  updated_at = now() FROM x WHERE x.suppressed AND r.id = x.id)"
         " SELECT x.id, x.address, x.vars::text, x.attempts, 0,"
         "  CASE WHEN x.suppressed THEN 'suppressed' ELSE 'claimed' END FROM x ORDER BY x.id",
         4},
    /* clang-format on */
    /* Due ones by an index scan in next_attempt_at order (not a bitmap
     * scan: the index entries of rows already claimed are marked dead as
     * the scan passes, so claiming stays cheap however far the campaign
     * has gone). */
    [LOADER_SQL_CLAIM_DUE] = {"ringmail_claim_due",
                              LOADER_CLAIM_SQL(
                                  "q.state IN ('queued', 'deferred') AND"
                                  " q.next_attempt_at <= now() ORDER BY q.next_attempt_at"),
                              6},
    [LOADER_SQL_CLAIM_EXPIRED] =
        {"ringmail_claim_expired",
         LOADER_CLAIM_SQL("q.state = 'claimed' AND q.lease_expires_at < now()"
                          " AND q.lease_owner IS DISTINCT FROM $3 AND NOT EXISTS"
                          " (SELECT 1 FROM ringmail.node o WHERE o.name = q.lease_owner)"),
         6},
    /* $1 node, then arrays: ids, states, reasons, attempts, retry seconds,
     * ISPs (NULL: keep the row's; schema 9: what feedback and top look up).
     * A result lands on a row this node holds: `claimed` (or `ambiguous`
     * after a takeover: the late result settles it) under its lease, or
     * fresh (queued, never attempted). A fresh row's result is its first
     * write. A fresh row this node reports on is within one of its own
     * claims' ranges: it got the id from its own sweep (ranges never
     * overlap: the sweep only moves up, under its row lock), and every
     * path that ends such a claim while it holds a row (a takeover, a
     * stop giving claims back) makes the row queued again with a time or
     * ambiguous, and no path makes a row fresh again. So the range is not
     * looked up: that lookup (the node's ranges scanned for each row, up
     * to a hundred with the default window) cost 2 to 7 us per result. */
    [LOADER_SQL_RESULTS] =
        {"ringmail_results",
         "UPDATE ringmail.recipient r SET state = x.state, reason = x.reason,"
         " attempts = greatest(r.attempts, x.attempts),"
         " isp = coalesce(x.isp, r.isp),"
         " first_attempt_at = coalesce(r.first_attempt_at, now()),"
         " next_attempt_at = CASE WHEN x.state = 'deferred'"
         "   THEN now() + x.retry_s * interval '1 second' END,"
         " lease_owner = NULL, lease_expires_at = NULL, updated_at = now()"
         " FROM unnest($2::bigint[], $3::text[], $4::text[], $5::int[],"
         "   $6::float8[], $7::text[]) AS x(id, state, reason, attempts, retry_s,"
         "   isp)"
         " WHERE r.id = x.id AND ((r.lease_owner = $1"
         "  AND r.state IN ('claimed', 'ambiguous')) OR (r.state = 'queued'"
         "  AND r.next_attempt_at IS NULL))",
         7},
    /* $1 node: its claims with nothing left to hold (no fresh row in a
     * range, no row of the ids still `claimed` by it) go. After each
     * results commit; a claim is never dropped while it holds a row. A
     * range is searched from its top: results come back in about the
     * order the rows were claimed, so a range still held has a fresh row
     * near its top, and a search from the bottom walked past every row
     * already done, at every commit (half a microsecond per recipient).
     * A scalar subquery, not NOT EXISTS: PostgreSQL drops the ORDER BY
     * and LIMIT of an EXISTS, and with them the direction. */
    [LOADER_SQL_CLAIMS_DONE] = {"ringmail_claims_done",
                                "DELETE FROM ringmail.claim c WHERE c.node = $1 AND CASE"
                                " WHEN c.lo IS NOT NULL THEN (SELECT q.id"
                                "  FROM ringmail.recipient q WHERE q.campaign_id = c.campaign_id"
                                "  AND q.id BETWEEN c.lo AND c.hi"
                                "  AND q.state = 'queued'"
                                "  AND q.next_attempt_at IS NULL"
                                "  ORDER BY q.id DESC LIMIT 1) IS NULL"
                                " ELSE NOT EXISTS (SELECT 1 FROM ringmail.recipient q"
                                "  WHERE q.id = ANY(c.ids) AND q.state = 'claimed'"
                                "  AND q.lease_owner = c.node) END",
                                1},
    /* $1 node, $2 incarnation, $3 seq, $4 ids: one arm (loader_node.c),
     * while this process is the node's incarnation (FOR KEY SHARE: a
     * takeover's FOR UPDATE waits for it, or it waits for the takeover and
     * then finds the incarnation gone). */
    [LOADER_SQL_ARM] = {"ringmail_arm",
                        "WITH n AS (SELECT 1 FROM ringmail.node WHERE name = $1"
                        "  AND incarnation = $2::bigint FOR KEY SHARE)"
                        " INSERT INTO ringmail.armed (node, seq, ids)"
                        " SELECT $1, $3::bigint, $4::bigint[] FROM n",
                        4},
    /* $1 campaign, $2 ids, $3 reasons of the hard bounces that condemn the
     * address (bad mailbox, bad domain, inactive mailbox). */
    [LOADER_SQL_SUPPRESS] = {"ringmail_suppress",
                             "INSERT INTO ringmail.suppression (address, reason, campaign_id, kind)"
                             " SELECT r.address, x.reason, $1::bigint, 'bounce'"
                             " FROM unnest($2::bigint[], $3::text[]) AS x(id, reason)"
                             " JOIN ringmail.recipient r ON r.id = x.id"
                             " ON CONFLICT (address) DO NOTHING",
                             3},
    /* The final soft bounces: $1 campaign, then arrays $2 ids, $3
     * categories, $4 rules, $5 enhanced codes, $6 replies, $7 ISPs; $8 the
     * window in ms, $9 the window as the reason says it ("7d"), $10 the
     * limit (0: never suppress). One feedback_event row each; an address
     * whose soft bounces within the window (those recorded before, from
     * either side, and this batch's: one statement sees one snapshot, so
     * the batch's are added, not counted) reach the limit joins the
     * suppression list, kind 'soft-bounces', and its last event here says
     * suppressed. The count is a probe of feedback_event_soft per address. */
    [LOADER_SQL_SOFT_BOUNCES] =
        {"ringmail_soft_bounces",
         "WITH x AS (SELECT x.*, r.address FROM unnest($2::bigint[], $3::text[], $4::text[],"
         "   $5::text[], $6::text[], $7::text[]) WITH ORDINALITY"
         "   AS x(id, category, rule, status, diagnostic, isp, n)"
         "  JOIN ringmail.recipient r ON r.id = x.id),"
         " a AS (SELECT address, count(*) AS k, max(n) AS last FROM x GROUP BY address),"
         " c AS (SELECT a.address, a.last, a.k + (SELECT count(*) FROM ringmail.feedback_event e"
         "   WHERE e.address = a.address AND e.bounce = 'soft' AND " BOUNCE_SOFT_COUNTS_SQL(
             "e.category") "   AND e.received_at > now() - $8::bigint * interval '1 ms') AS total "
                           "FROM a),"
                           " s AS (INSERT INTO ringmail.suppression (address, reason, campaign_id, "
                           "kind)"
                           "  SELECT c.address, c.total || ' soft bounces within ' || $9::text || "
                           "' (last: '"
                           "   || coalesce(x.diagnostic, x.status, 'no text') || ')', $1::bigint, "
                           "'soft-bounces'"
                           "  FROM c JOIN x ON x.n = c.last WHERE $10::int > 0 AND c.total >= "
                           "$10::int"
                           "  ON CONFLICT (address) DO NOTHING RETURNING address)"
                           " INSERT INTO ringmail.feedback_event (kind, source, campaign_id, "
                           "recipient_id,"
                           "  address, isp, category, bounce, bounce_rule, status, diagnostic, "
                           "suppressed)"
                           " SELECT 'bounce', 'smtp', $1::bigint, x.id, x.address, x.isp, "
                           "x.category, 'soft',"
                           "  x.rule, x.status, x.diagnostic,"
                           "  EXISTS (SELECT 1 FROM s JOIN a ON a.address = s.address"
                           "   WHERE s.address = x.address AND a.last = x.n)"
                           " FROM x",
         10},
    /* $1 node, then arrays: ids, exchangers, peers, sources, connect and
     * TLS times, TLS version, cipher, group, resumed, verify result, peer
     * subject, issuer and SHA-256, TLS policy, its mode and id: sessions
     * (schema 9), once each (a commit whose answer was lost is written
     * again: its sessions are there already). */
    [LOADER_SQL_SESSIONS] =
        {"ringmail_sessions",
         "INSERT INTO ringmail.session (id, node, mx, peer, source, connect_ms,"
         " tls_ms, tls_version, tls_cipher, tls_group, tls_resumed, tls_verify,"
         " peer_subject, peer_issuer, peer_sha256, tls_policy, tls_policy_mode,"
         " tls_policy_id)"
         " SELECT x.id, $1, x.mx, x.peer, x.source, x.connect_ms, x.tls_ms,"
         " x.tls_version, x.tls_cipher, x.tls_group, x.tls_resumed,"
         " x.tls_verify, x.peer_subject, x.peer_issuer, x.peer_sha256,"
         " x.tls_policy, x.tls_policy_mode, x.tls_policy_id"
         " FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[],"
         "  $6::int[], $7::int[], $8::text[], $9::text[], $10::text[],"
         "  $11::boolean[], $12::text[], $13::text[], $14::text[], $15::text[],"
         "  $16::text[], $17::text[], $18::text[])"
         " AS x(id, mx, peer, source, connect_ms, tls_ms, tls_version,"
         "  tls_cipher, tls_group, tls_resumed, tls_verify, peer_subject,"
         "  peer_issuer, peer_sha256, tls_policy, tls_policy_mode, tls_policy_id)"
         " ON CONFLICT (id) DO NOTHING",
         18},
};

/* loader_prepared - run prepared statement `which`; NULL + err unless want */
PGresult *loader_prepared(PGconn *c, int which, const char *const *params, ExecStatusType want,
                          char *err, size_t errlen)
{
    PGresult *r = pq.PQexecPrepared(c, loader_sql[which].name, loader_sql[which].nparams, params,
                                    NULL, NULL, 0);
    return db_checked(c, r, want, err, errlen);
}

/* ---- the connection ---- */

/* loader_up - 1 while c is connected */
int loader_up(PGconn *c)
{
    return c && pq.PQstatus(c) == CONNECTION_OK;
}

/* loader_conn - connection which: 0 the claimer's, 1 the writer's, 2 the heartbeat's */
static PGconn **loader_conn(struct loader *l, int which)
{
    return which == 2 ? &l->hc : which ? &l->wc : &l->c;
}

/* loader_disconnect - close connection which and say it is down */
void loader_disconnect(struct loader *l, int which)
{
    PGconn **pc = loader_conn(l, which);
    if (*pc) {
        pq.PQfinish(*pc);
        *pc = NULL;
    }
    pthread_mutex_lock(&l->mu);
    l->db_up[which] = 0;
    pthread_mutex_unlock(&l->mu);
}

/* loader_connect - connection which up, schema checked, statements prepared */
int loader_connect(struct loader *l, int which, char *err, size_t errlen)
{
    PGconn **pc = loader_conn(l, which);
    if (loader_up(*pc)) {
        return 0;
    }
    loader_disconnect(l, which);
    *pc = db_connect_current(l->url, err, errlen);
    if (!*pc) {
        return -1;
    }
    for (int k = 0; k < LOADER_NSQL; k++) {
        PGresult *r =
            pq.PQprepare(*pc, loader_sql[k].name, loader_sql[k].sql, loader_sql[k].nparams, NULL);
        int ok = r && pq.PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok) {
            snprintf(err, errlen, "preparing %s: %s", loader_sql[k].name,
                     r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(*pc));
            db_trim(err);
        }
        pq.PQclear(r);
        if (!ok) {
            loader_disconnect(l, which);
            return -1;
        }
    }
    /* Bounded statements and lock waits, unless something set its own. */
    PGresult *r = pq.PQexec(*pc, "SELECT current_setting('statement_timeout') = '0',"
                                 " current_setting('lock_timeout') = '0'");
    if (r && pq.PQresultStatus(r) == PGRES_TUPLES_OK && pq.PQntuples(r) == 1) {
        char set[160] = "", ignore[256];
        if (pq.PQgetvalue(r, 0, 0)[0] == 't') {
            snprintf(set, sizeof set, "SET statement_timeout = '%s';", LOADER_STATEMENT_TIMEOUT);
        }
        if (pq.PQgetvalue(r, 0, 1)[0] == 't') {
            size_t k = strlen(set);
            snprintf(set + k, sizeof set - k, "SET lock_timeout = '%s'", LOADER_LOCK_TIMEOUT);
        }
        if (set[0]) {
            db_exec(*pc, set, ignore, sizeof ignore);
        }
    }
    pq.PQclear(r);
    pthread_mutex_lock(&l->mu);
    l->db_up[which] = 1;
    pthread_mutex_unlock(&l->mu);
    return 0;
}

/* loader_query - run sql with n text parameters; NULL + err unless want */
PGresult *loader_query(PGconn *c, const char *sql, int n, const char *const *params,
                       ExecStatusType want, char *err, size_t errlen)
{
    PGresult *r = pq.PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    return db_checked(c, r, want, err, errlen);
}

/* PostgreSQL bigint array literals of ids. */
/* loader_ids_add - id into the array literal b (n: ids so far) */
void loader_ids_add(buf_t *b, size_t *n, int64_t id)
{
    buf_appendf(b, "%s%" PRId64, (*n)++ ? "," : "{", id);
}

/* loader_ids_end - close the array literal b of n ids; its text */
const char *loader_ids_end(buf_t *b, size_t n)
{
    buf_append(b, n ? "}" : "{}", n ? 2 : 3); /* with the NUL */
    return buf_data(b);
}

/* loader_count_db_error - one more database error in the stats */
void loader_count_db_error(struct loader *l)
{
    pthread_mutex_lock(&l->mu);
    l->st.db_errors++;
    pthread_mutex_unlock(&l->mu);
}

/* loader_keep_up - connect again if the connection is gone, at most once per
 * retry interval; 1 when it is up */
int loader_keep_up(struct loader *l, int which, uint64_t *next_connect)
{
    PGconn **pc = loader_conn(l, which);
    uint64_t now = clock_ms();
    if (!loader_up(*pc) && now >= *next_connect) {
        char err[1024];
        if (loader_connect(l, which, err, sizeof err) < 0) {
            loader_count_db_error(l);
            fprintf(stderr, "ringmail: database: %s (retrying)\n", err);
            *next_connect = now + LOADER_RETRY_DB_MS;
        } else {
            pthread_mutex_lock(&l->mu);
            l->st.reconnects++;
            pthread_mutex_unlock(&l->mu);
            fprintf(stderr, "ringmail: database: connected again\n");
        }
    }
    return loader_up(*pc);
}
