/*
 * top_db - what `ringmail top` reads from PostgreSQL. See top_int.h.
 *
 * A refresh is one REPEATABLE READ, READ ONLY transaction of three
 * statements, so the header's totals, the ISP rows and the delivery windows
 * agree with each other:
 *   1. the header and the controls (one JSON document): the campaigns shown
 *      (--campaign, else those running or paused or worked on by a live
 *      node), the live nodes, ringmail.isp_suspend rows in force,
 *      ringmail.isp_hold rows in force for those campaigns, the clock;
 *   2. the recipients: one pass over the campaigns' rows (the state counts
 *      need every row), grouped by state and, for rows not final, by ISP:
 *      a recipient tried before takes its last attempt's ISP (its own isp
 *      column: one probe per domain), one never tried is grouped by its
 *      domain, which --config's ISP domain lists place (config_isp_for,
 *      the pool's own function), else TOP_UNROUTED;
 *   3. the delivery rows the windows need (below).
 *
 * Delivery windows. The rate counts the attempts of the last TOP_RATE_S
 * seconds, the deferral share those of the last TOP_DEFER_S; the last
 * error is the newest deferral, rejection, expiry or failure of all time.
 * Reading every delivery row of a campaign each refresh would cost a scan
 * of the whole table, so rows are read once they are settled: a row whose
 * attempt is TOP_SETTLE_S seconds old (its `at`, the writing transaction's
 * start) is read one last time, added per second to the ISP's kept slots
 * (or its kept last error), and the statement reads only ids above the
 * highest kept id afterwards (delivery's primary key). Rows are kept up
 * to the lowest id of a row not settled yet, so the kept id never passes a
 * row that is still counted live: a transaction that took ids before
 * another committed after it cannot fall below the kept id unless it ran
 * longer than TOP_SETTLE_S (the writers' statements time out after 30 s).
 * The first refresh (and --once) reads all the rows.
 *
 * Diagnostics: a statement that fails ends the refresh with the server's
 * message (one line, db_trim) and rolls the transaction back; nothing is
 * printed here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign/db.h"
#include "campaign/top_int.h"
#include "engine/clock.h"

/* ---- ISPs ---- */

struct top_isp *top_isp_get(struct top *t, const char *name)
{
    if (!name) {
        name = TOP_NO_ISP;
    }
    for (size_t i = 0; i < t->nisps; i++) {
        if (strcmp(t->isps[i].name, name) == 0) {
            return &t->isps[i];
        }
    }
    if (t->nisps == t->capisps) {
        size_t cap = t->capisps ? t->capisps * 2 : 16;
        struct top_isp *n = realloc(t->isps, cap * sizeof *n);
        if (!n) {
            abort();
        }
        t->isps = n;
        t->capisps = cap;
    }
    struct top_isp *isp = &t->isps[t->nisps++];
    memset(isp, 0, sizeof *isp);
    isp->name = strdup(name);
    if (!isp->name) {
        abort();
    }
    isp->oldest_s = -1;
    isp->m_backoff = 1;
    if (t->config) {
        /* The limit of its lanes, as the pool applies them (pool/lane.c):
         * per source address, that address's own msg_rate when it sets one. */
        for (size_t i = 0; i < t->config->nisps; i++) {
            const struct config_isp *ci = &t->config->isps[i];
            if (strcmp(ci->name, name) != 0) {
                continue;
            }
            isp->in_config = 1;
            isp->cfg_limit = ci->msg_rate;
            if (t->config->nsources > 0 && ci->msg_rate >= 0) {
                double sum = 0;
                for (size_t s = 0; s < t->config->nsources && sum >= 0; s++) {
                    const struct config_lane *l = config_lane_for(ci, t->config->sources[s].addr);
                    double r = l && (l->set & CONFIG_LANE_MSG_RATE) ? l->msg_rate : ci->msg_rate;
                    sum = r < 0 ? -1 : sum + r;
                }
                isp->cfg_limit = sum;
            }
        }
        if (!isp->in_config && strcmp(name, TOP_UNROUTED) != 0 && strcmp(name, TOP_NO_ISP) != 0) {
            isp->in_config = 1; /* an ISP the config does not name: the pool's unlimited default */
            isp->cfg_limit = -1;
        }
    }
    return isp;
}

/* Forget what one refresh said (the kept slots stay). */
static void top_isp_clear(struct top_isp *isp)
{
    isp->due = isp->waiting = isp->in_flight = 0;
    isp->oldest_s = -1;
    isp->answered_1m = isp->final_1m = isp->answered_5m = isp->deferred_5m = 0;
    memset(&isp->err, 0, sizeof isp->err);
    isp->m_seen = isp->m_paused = isp->m_held = 0;
    isp->m_backoff = 1;
    isp->m_limit = isp->m_conns = isp->m_queue = 0;
    isp->suspended = isp->held = 0;
    free(isp->suspend_reason);
    free(isp->hold_reason);
    isp->suspend_reason = isp->hold_reason = NULL;
}

void top_free_snapshot(struct top *t)
{
    for (size_t i = 0; i < t->ncamps; i++) {
        free(t->camps[i].name);
        free(t->camps[i].status);
    }
    free(t->camps);
    t->camps = NULL;
    t->ncamps = 0;
    for (size_t i = 0; i < t->nnodes; i++) {
        free(t->nodes[i].name);
        free(t->nodes[i].host);
    }
    free(t->nodes);
    t->nodes = NULL;
    t->nnodes = 0;
    json_decref(t->states);
    t->states = NULL;
    t->total = t->final = t->answered_1m = t->final_1m = 0;
    t->nproblems = 0;
    for (size_t i = 0; i < t->nisps; i++) {
        top_isp_clear(&t->isps[i]);
    }
}

/* ---- domains of recipients not tried yet ---- */

/* The ISP a domain goes to before any MX is known: its ISP by the config's
 * domain lists; the default ISP when no ISP places domains by their MX
 * hosts; else unknown until the pool looked its MX up. */
static const char *top_domain_isp(const struct config *c, const char *domain)
{
    if (!c) {
        return TOP_UNROUTED;
    }
    int rollup = 0;
    for (size_t i = 0; i < c->nisps; i++) {
        rollup |= c->isps[i].nmx > 0;
    }
    const struct config_isp *ci = config_isp_for(c, domain, NULL, 0);
    if (ci && strcmp(ci->name, "default") != 0) {
        return ci->name;
    }
    return rollup ? TOP_UNROUTED : "default";
}

/* ---- statement 1: header and controls ---- */

/* A timestamp as ISO 8601 UTC: to_char(X AT TIME ZONE 'UTC', TOP_ISO). */
#define TOP_ISO "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'"

static const char top_sql_header[] =
    "WITH c AS (SELECT id, name, status FROM ringmail.campaign"
    "  WHERE CASE WHEN $1::bigint IS NOT NULL THEN id = $1::bigint"
    "   ELSE status IN ('running', 'paused') OR id IN (SELECT campaign_id FROM ringmail.node"
    "    WHERE expires_at > now() AND incarnation IS NOT NULL) END)"
    " SELECT json_build_object("
    "'now', to_char(now() AT TIME ZONE 'UTC', " TOP_ISO "),"
    "'now_epoch', extract(epoch FROM now()),"
    "'campaigns', (SELECT coalesce(json_agg(json_build_object('id', id, 'name', name,"
    "  'status', status) ORDER BY id), '[]') FROM c),"
    "'nodes', (SELECT coalesce(json_agg(json_build_object('name', name, 'campaign_id',"
    "  campaign_id, 'host', host, 'pid', pid, 'heartbeat_age_s',"
    "  extract(epoch FROM now() - heartbeat_at)) ORDER BY name), '[]')"
    "  FROM ringmail.node WHERE expires_at > now() AND incarnation IS NOT NULL),"
    "'suspends', (SELECT coalesce(json_agg(json_build_object('isp', isp,"
    "  'until', to_char(until AT TIME ZONE 'UTC', " TOP_ISO "),"
    "  'left_s', extract(epoch FROM until - now()), 'reason', reason) ORDER BY isp), '[]')"
    "  FROM ringmail.isp_suspend WHERE until > now()),"
    "'holds', (SELECT coalesce(json_agg(json_build_object('isp', isp,"
    "  'since', to_char(held_at AT TIME ZONE 'UTC', " TOP_ISO "),"
    "  'reason', reason) ORDER BY held_at), '[]')"
    "  FROM ringmail.isp_hold WHERE campaign_id IN (SELECT id FROM c) AND resumed_at IS NULL))";

static char *top_jstrdup(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    char *d = strdup(s ? s : "");
    if (!d) {
        abort();
    }
    return d;
}

static void top_copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static double top_jnum(const json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

/* The header document into t; the campaigns' ids as an array literal into ids. */
static int top_read_header(struct top *t, const char *text, buf_t *ids, char *err, size_t errlen)
{
    json_error_t je;
    json_t *doc = json_loads(text, 0, &je);
    if (!doc) {
        snprintf(err, errlen, "unreadable answer from the database: %s", je.text);
        return -1;
    }
    top_copy(t->now, sizeof t->now, json_string_value(json_object_get(doc, "now")));
    t->now_epoch = top_jnum(doc, "now_epoch");
    const json_t *a = json_object_get(doc, "campaigns");
    t->camps = calloc(json_array_size(a) + 1, sizeof *t->camps);
    buf_append_str(ids, "{");
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *x = json_array_get(a, i);
        struct top_campaign *c = &t->camps[t->ncamps++];
        c->id = (long long)json_integer_value(json_object_get(x, "id"));
        c->name = top_jstrdup(x, "name");
        c->status = top_jstrdup(x, "status");
        buf_appendf(ids, "%s%lld", i ? "," : "", c->id);
    }
    buf_append_str(ids, "}");
    a = json_object_get(doc, "nodes");
    t->nodes = calloc(json_array_size(a) + 1, sizeof *t->nodes);
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *x = json_array_get(a, i);
        struct top_node *n = &t->nodes[t->nnodes++];
        n->name = top_jstrdup(x, "name");
        n->host = top_jstrdup(x, "host");
        n->campaign_id = (long long)json_integer_value(json_object_get(x, "campaign_id"));
        n->pid = (int)json_integer_value(json_object_get(x, "pid"));
        n->heartbeat_age_s = top_jnum(x, "heartbeat_age_s");
    }
    a = json_object_get(doc, "suspends");
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *x = json_array_get(a, i);
        struct top_isp *isp = top_isp_get(t, json_string_value(json_object_get(x, "isp")));
        isp->suspended = 1;
        top_copy(isp->suspend_until, sizeof isp->suspend_until,
                 json_string_value(json_object_get(x, "until")));
        isp->suspend_left_s = top_jnum(x, "left_s");
        isp->suspend_reason = top_jstrdup(x, "reason");
    }
    a = json_object_get(doc, "holds");
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *x = json_array_get(a, i);
        struct top_isp *isp = top_isp_get(t, json_string_value(json_object_get(x, "isp")));
        if (isp->held) {
            continue; /* held for two campaigns shown: the oldest hold */
        }
        isp->held = 1;
        top_copy(isp->hold_since, sizeof isp->hold_since,
                 json_string_value(json_object_get(x, "since")));
        isp->hold_reason = top_jstrdup(x, "reason");
    }
    json_decref(doc);
    return 0;
}

/* ---- statement 2: recipients ---- */

/* $1 the campaigns, $2 whether to name the domains of recipients never
 * tried (with --config). Rows not final are those with a next attempt time
 * (queued, deferred) and claimed ones (DB_STATE_SQL: a fresh row within a
 * claim's range is claimed; one above the sweep is queued and due). Per
 * state, tried or not, and domain
 * (rows not final that were tried, or all with $2; the import lower-cases
 * domains and refuses '@' in a local part): how many, due, waiting for
 * their time, the oldest waiting one's age. The ISP of tried ones is the
 * ISP of one of them (the pool assigns an ISP per domain; every result
 * sets the recipient's isp, schema 9): one probe of the primary key per
 * domain, not per recipient. */
#define TOP_NOT_FINAL "r.st IN ('queued', 'claimed', 'deferred')"
static const char top_sql_recipients[] =
    "SELECT g.state, CASE WHEN g.tried AND g.dom IS NOT NULL THEN (SELECT nullif(p.isp, '')"
    "  FROM ringmail.recipient p WHERE p.id = g.probe) END,"
    " g.dom, g.n, g.due, g.waiting, g.oldest_s"
    " FROM (SELECT r.st AS state, r.first_attempt_at IS NOT NULL AS tried,"
    "  CASE WHEN " TOP_NOT_FINAL " AND ($2::boolean OR r.first_attempt_at IS NOT NULL)"
    "   THEN split_part(r.address, '@', 2) END AS dom,"
    "  count(*) AS n, count(*) FILTER (WHERE r.next_attempt_at <= now()"
    "   OR (r.st = 'queued' AND r.next_attempt_at IS NULL)) AS due,"
    "  count(*) FILTER (WHERE r.next_attempt_at > now()) AS waiting,"
    "  extract(epoch FROM now() - min(coalesce(r.first_attempt_at, r.next_attempt_at))"
    "   FILTER (WHERE r.next_attempt_at IS NOT NULL"
    "    AND (r.first_attempt_at IS NOT NULL OR r.next_attempt_at <= now()))) AS oldest_s,"
    "  min(r.id) AS probe"
    "  FROM (SELECT q.*, " DB_STATE_SQL("q") " AS st FROM ringmail.recipient q"
                                             "   WHERE q.campaign_id = ANY($1::bigint[])) AS r"
                                             "  GROUP BY 1, 2, 3) AS g";

/* A small map domain -> ISP name (config_isp_for for each domain once). */
struct top_dommap {
    char **keys;
    const char **vals;
    size_t cap, n;
};

static uint64_t top_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    }
    return h;
}

static const char *top_dommap_get(struct top_dommap *m, const struct config *c, const char *dom)
{
    if (m->n * 2 >= m->cap) {
        struct top_dommap g = {calloc(m->cap ? m->cap * 2 : 256, sizeof(char *)),
                               calloc(m->cap ? m->cap * 2 : 256, sizeof(char *)),
                               m->cap ? m->cap * 2 : 256, m->n};
        if (!g.keys || !g.vals) {
            abort();
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (m->keys[i]) {
                size_t j = top_hash(m->keys[i]) & (g.cap - 1);
                while (g.keys[j]) {
                    j = (j + 1) & (g.cap - 1);
                }
                g.keys[j] = m->keys[i];
                g.vals[j] = m->vals[i];
            }
        }
        free(m->keys);
        free(m->vals);
        *m = g;
    }
    size_t j = top_hash(dom) & (m->cap - 1);
    while (m->keys[j]) {
        if (strcmp(m->keys[j], dom) == 0) {
            return m->vals[j];
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->keys[j] = strdup(dom);
    if (!m->keys[j]) {
        abort();
    }
    m->vals[j] = top_domain_isp(c, dom);
    m->n++;
    return m->vals[j];
}

static void top_dommap_free(struct top_dommap *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        free(m->keys[i]);
    }
    free(m->keys);
    free(m->vals);
}

static void top_read_recipients(struct top *t, PGresult *r)
{
    struct top_dommap map = {0};
    t->states = json_object();
    long long open = 0;
    for (int i = 0; i < pq.PQntuples(r); i++) {
        const char *state = pq.PQgetvalue(r, i, 0);
        long long n = atoll(pq.PQgetvalue(r, i, 3));
        t->total += n;
        json_t *have = json_object_get(t->states, state);
        json_object_set_new(t->states, state,
                            json_integer(json_integer_value(have) + (json_int_t)n));
        int claimed = strcmp(state, "claimed") == 0;
        if (!claimed && strcmp(state, "queued") != 0 && strcmp(state, "deferred") != 0) {
            continue;
        }
        open += n;
        const char *name = TOP_UNROUTED;
        if (!pq.PQgetisnull(r, i, 1)) {
            name = pq.PQgetvalue(r, i, 1); /* tried: its delivery rows' ISP */
        } else if (!pq.PQgetisnull(r, i, 2) && t->config) {
            name = top_dommap_get(&map, t->config, pq.PQgetvalue(r, i, 2));
        }
        struct top_isp *isp = top_isp_get(t, name);
        if (claimed) {
            isp->in_flight += n;
        }
        isp->due += atoll(pq.PQgetvalue(r, i, 4));
        isp->waiting += atoll(pq.PQgetvalue(r, i, 5));
        if (!pq.PQgetisnull(r, i, 6)) {
            double age = atof(pq.PQgetvalue(r, i, 6));
            if (age > isp->oldest_s) {
                isp->oldest_s = age;
            }
        }
    }
    t->final = t->total - open;
    top_dommap_free(&map);
}

/* ---- statement 3: delivery rows ---- */

#define TOP_ANSWERED "r.outcome IN ('accepted', 'deferred', 'rejected', 'expired')"
#define TOP_ERROR "r.outcome IN ('deferred', 'rejected', 'expired', 'failed')"

/* $1 the campaigns, $2 the highest kept id, $3 TOP_SETTLE_S, $4 TOP_DEFER_S.
 * The rows above the kept id (r); the lowest id of those not settled yet
 * (b.lim: every row below it is settled and is kept now). Per ISP, kept or
 * not, and epoch second (0: before the deferral window): attempts answered,
 * deferred (an expiry is a deferral past max_age), final; the newest
 * error's row, read only for the newest of each ISP and kind (LIMIT 1
 * keeps the probe a nested loop on the primary key). */
static const char top_sql_deliveries[] =
    "WITH r AS MATERIALIZED (SELECT d.id, coalesce(nullif(d.isp, ''), '" TOP_NO_ISP "') AS isp,"
    "  d.outcome, d.final, floor(date_part('epoch', d.at))::bigint AS sec"
    "  FROM ringmail.delivery d WHERE d.campaign_id = ANY($1::bigint[]) AND d.id > $2::bigint),"
    " n AS (SELECT floor(date_part('epoch', now()))::bigint AS now_s),"
    " b AS (SELECT coalesce(min(r.id) FILTER (WHERE r.sec > n.now_s - $3::int), max(r.id) + 1)"
    "  AS lim FROM r, n GROUP BY n.now_s)"
    " SELECT g.isp, g.keep, g.sec, g.answered, g.deferred, g.final, g.lim, e.id,"
    " to_char(e.at AT TIME ZONE 'UTC', " TOP_ISO "), e.outcome, e.code, e.enhanced, e.reply,"
    " e.reason"
    " FROM (SELECT *, max(eid) OVER (PARTITION BY isp, keep) AS top_eid FROM ("
    "  SELECT r.isp, r.id < b.lim AS keep,"
    "   CASE WHEN r.sec > n.now_s - $4::int THEN r.sec ELSE 0 END AS sec,"
    "   count(*) FILTER (WHERE " TOP_ANSWERED ") AS answered,"
    "   count(*) FILTER (WHERE r.outcome IN ('deferred', 'expired')) AS deferred,"
    "   count(*) FILTER (WHERE r.final) AS final,"
    "   max(r.id) FILTER (WHERE " TOP_ERROR ") AS eid, b.lim"
    "  FROM r, b, n GROUP BY 1, 2, 3, b.lim) AS g0) AS g"
    " LEFT JOIN LATERAL (SELECT * FROM ringmail.delivery e"
    "  WHERE g.eid = g.top_eid AND e.id = g.eid LIMIT 1) AS e ON true";

static void top_err_read(struct top_err *e, PGresult *r, int i)
{
    e->id = atoll(pq.PQgetvalue(r, i, 7));
    top_copy(e->at, sizeof e->at, pq.PQgetvalue(r, i, 8));
    top_copy(e->outcome, sizeof e->outcome, pq.PQgetvalue(r, i, 9));
    e->code = pq.PQgetisnull(r, i, 10) ? 0 : atoi(pq.PQgetvalue(r, i, 10));
    top_copy(e->enhanced, sizeof e->enhanced, pq.PQgetvalue(r, i, 11));
    top_copy(e->text, sizeof e->text, pq.PQgetvalue(r, i, 12));
    top_copy(e->reason, sizeof e->reason, pq.PQgetvalue(r, i, 13));
}

/* top_keep - a settled group's attempts into the ISP's kept slots */
static void top_keep(struct top_isp *isp, long long sec, unsigned answered, unsigned deferred)
{
    if (sec <= 0) {
        return; /* before the deferral window: only its error counts */
    }
    struct top_slot *s = &isp->kept[sec % TOP_DEFER_S];
    if (sec > s->sec) {
        s->sec = sec;
        s->answered = s->deferred = 0;
    }
    if (s->sec == sec) {
        s->answered += answered;
        s->deferred += deferred;
    }
}

/* top_windows - the ISP's windows: this refresh's rows (added while read)
 * plus its kept slots; its last error, this refresh's or the kept one */
static void top_windows(struct top *t, struct top_isp *isp, long long now_s)
{
    for (size_t k = 0; k < TOP_DEFER_S; k++) {
        if (isp->kept[k].sec > now_s - TOP_DEFER_S) {
            isp->answered_5m += isp->kept[k].answered;
            isp->deferred_5m += isp->kept[k].deferred;
        }
    }
    if (isp->err.id == 0) {
        isp->err = isp->kept_err;
    }
    t->answered_1m += isp->answered_1m;
    t->final_1m += isp->final_1m;
}

static void top_read_deliveries(struct top *t, PGresult *r)
{
    long long now_s = (long long)t->now_epoch, lim = 0;
    for (int i = 0; i < pq.PQntuples(r); i++) {
        struct top_isp *isp = top_isp_get(t, pq.PQgetvalue(r, i, 0));
        int keep = strcmp(pq.PQgetvalue(r, i, 1), "t") == 0;
        long long sec = atoll(pq.PQgetvalue(r, i, 2));
        unsigned answered = (unsigned)atoll(pq.PQgetvalue(r, i, 3));
        unsigned deferred = (unsigned)atoll(pq.PQgetvalue(r, i, 4));
        lim = atoll(pq.PQgetvalue(r, i, 6));
        struct top_err e = {0};
        if (!pq.PQgetisnull(r, i, 7)) {
            top_err_read(&e, r, i);
        }
        if (keep) {
            top_keep(isp, sec, answered, deferred);
            if (e.id > isp->kept_err.id) {
                isp->kept_err = e;
            }
            continue;
        }
        if (sec > now_s - TOP_RATE_S) {
            isp->answered_1m += answered;
            isp->final_1m += atoll(pq.PQgetvalue(r, i, 5));
        }
        if (sec > now_s - TOP_DEFER_S) {
            isp->answered_5m += answered;
            isp->deferred_5m += deferred;
        }
        if (e.id > isp->err.id) {
            isp->err = e;
        }
    }
    if (lim - 1 > t->kept_id) {
        t->kept_id = lim - 1; /* every row below lim was settled, and is kept */
    }
    for (size_t i = 0; i < t->nisps; i++) {
        top_windows(t, &t->isps[i], now_s);
    }
}

/* ---- a refresh ---- */

static PGresult *top_query(struct top *t, const char *sql, int n, const char *const *params,
                           char *err, size_t errlen)
{
    PGresult *r = pq.PQexecParams(t->db, sql, n, NULL, params, NULL, NULL, 0);
    if (!r || pq.PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *m = r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(t->db);
        snprintf(err, errlen, "%s", m && *m ? m : "unknown database error");
        db_trim(err);
        pq.PQclear(r);
        return NULL;
    }
    return r;
}

int top_db_campaign_exists(struct top *t, const char *campaign, char *err, size_t errlen)
{
    const char *p[] = {campaign};
    PGresult *r =
        top_query(t, "SELECT 1 FROM ringmail.campaign WHERE id = $1::bigint", 1, p, err, errlen);
    if (!r) {
        return -1;
    }
    int n = pq.PQntuples(r);
    pq.PQclear(r);
    return n > 0;
}

int top_db_refresh(struct top *t, char *err, size_t errlen)
{
    double t0 = clock_s();
    top_free_snapshot(t);
    t->ok = 0;
    /* The recipients' statement groups its rows by expressions the planner
     * cannot count, so it would sort every row instead of hashing them into
     * a few groups (twice the time on 100,000 rows): sorts off for these
     * three statements. */
    if (db_exec(t->db,
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL enable_sort = off", err,
                errlen) < 0) {
        return -1;
    }
    buf_t ids = BUF_INIT;
    int rc = -1;
    const char *p1[] = {t->o.campaign};
    PGresult *r = top_query(t, top_sql_header, 1, p1, err, errlen);
    if (!r) {
        goto out;
    }
    rc = top_read_header(t, pq.PQgetvalue(r, 0, 0), &ids, err, errlen);
    pq.PQclear(r);
    if (rc < 0) {
        goto out;
    }
    rc = -1;
    if (!t->kept_for || strcmp(t->kept_for, buf_cstr(&ids)) != 0) {
        /* Another set of campaigns: read their delivery rows from the start. */
        t->kept_id = 0;
        for (size_t i = 0; i < t->nisps; i++) {
            memset(t->isps[i].kept, 0, sizeof t->isps[i].kept);
            memset(&t->isps[i].kept_err, 0, sizeof t->isps[i].kept_err);
        }
        free(t->kept_for);
        t->kept_for = strdup(buf_cstr(&ids));
        if (!t->kept_for) {
            abort();
        }
    }
    const char *p2[] = {buf_cstr(&ids), t->config ? "true" : "false"};
    r = top_query(t, top_sql_recipients, 2, p2, err, errlen);
    if (!r) {
        goto out;
    }
    top_read_recipients(t, r);
    pq.PQclear(r);
    char kept[32];
    snprintf(kept, sizeof kept, "%lld", t->kept_id);
    char settle[16], window[16];
    snprintf(settle, sizeof settle, "%d", TOP_SETTLE_S);
    snprintf(window, sizeof window, "%d", TOP_DEFER_S);
    const char *p3[] = {buf_cstr(&ids), kept, settle, window};
    r = top_query(t, top_sql_deliveries, 4, p3, err, errlen);
    if (!r) {
        goto out;
    }
    top_read_deliveries(t, r);
    pq.PQclear(r);
    rc = 0;
    t->ok = 1;
out:
    buf_free(&ids);
    char ignore[256];
    db_exec(t->db, rc == 0 ? "COMMIT" : "ROLLBACK", ignore, sizeof ignore);
    t->query_ms = (clock_s() - t0) * 1000.0;
    return rc;
}
