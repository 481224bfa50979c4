/*
 * send_cluster - many send nodes, one sender: each ISP's limits shared
 * among the live nodes through PostgreSQL (campaign mode). See send_int.h
 * and README "Many nodes, one PostgreSQL".
 *
 * A thread with its own connection beats four times per
 * cluster_heartbeat (1 s by default): node.beat_at, beat_ms (the
 * heartbeat) and the source addresses the node binds to; one node_lane
 * row per ISP lane it has work for (demand: messages queued for the ISP
 * plus connections open to it; every lane that shares is announced at the
 * start, and a lane keeps its demand SEND_CLUSTER_LINGER_MS after its work
 * ran out, so a gap between claims does not give the share away). The
 * same beat reads, per lane, how many live nodes (a beat within 1.5
 * heartbeats) have demand for it and this node's rank by name: the pool
 * takes 1/N of msg_rate and conn_rate and its part of max_connections
 * (the remainder to the first ranks, moving one rank on every
 * SEND_CLUSTER_ROTATE_S, so a limit smaller than the cluster still
 * reaches every node). A node without demand for a lane counts itself in
 * (N + 1). The first shares are read before anything is sent.
 *
 * Backoff: a cut on this node (the pool's on_backoff) is written to
 * isp_backoff at once (it wakes the thread); every other node reads it at
 * its next beat and takes the lower factor and the longer pause
 * (pool_isp_backoff_adopt), each then recovering on its own schedule. A
 * suspension another node wrote to isp_suspend while this one runs is
 * applied the same way. So a 421 4.7.28 on one node slows the ISP on every
 * node within a quarter heartbeat and a tick.
 *
 * Failure: a node that stops beating (SIGKILL, a lost network) stops
 * counting 1.5 heartbeats after its last beat, and the others take its
 * share at their next beat: within 1.75 heartbeats. A node that cannot
 * reach PostgreSQL keeps its last share for 1.25 heartbeats; then, if it
 * had peers, it gives the share up (its lanes are blocked: no new
 * connection or message) until a beat goes through, since the others take
 * the share up meanwhile. A node alone keeps its share (no other node can
 * take it without beating). A clean stop deletes the node's node_lane
 * rows, so the others take its share at their next beat.
 *
 * Diagnostics (stderr): "ringmail send: cluster: gmail: 3 nodes share its
 * limits: this node takes 100/s of 300/s, 4 of 10 connections" at each
 * change; "ringmail send: cluster: PostgreSQL out of reach for 1.3 s
 * (REASON): this node gives up its share of gmail, yahoo until it
 * answers" and "ringmail send: cluster: PostgreSQL answers again: shares
 * restored"; "ringmail: gmail: backoff: rate ... (on node n1: REPLY (rule
 * ...))"; at the start "ringmail send: cluster: reading the other nodes'
 * shares: REASON" (the send does not start).
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "campaign/db.h"
#include "campaign/send_int.h"
#include "engine/clock.h"

#define SEND_CLUSTER_LANES 512
#define SEND_CLUSTER_CUTS 32
#define SEND_CLUSTER_TICK_MS 100
#define SEND_CLUSTER_LINGER_MS 5000 /* demand kept after the work ran out */
#define SEND_CLUSTER_ROTATE_S 60    /* the connections' remainder moves on */
#define SEND_CLUSTER_STOP_MS 2000
/* Beats per cluster_heartbeat: a node is dead 1.5 heartbeats after its
 * last beat, and the others see it within a quarter heartbeat more. */
#define SEND_CLUSTER_BEATS 4

struct send_cluster_lane {
    char isp[CONFIG_NAME_MAX];
    char source[CONFIG_NAME_MAX];
    size_t demand;
    uint64_t busy_ms; /* the loop's clock when it last had demand */
    /* the last beat's answer: live nodes with demand (this one counted in) and its rank */
    unsigned nodes, rank;
    int answered;
    /* applied to the pool (the loop's copy) */
    unsigned applied_nodes, applied_rank;
    int applied_blocked, applied;
};

struct send_cluster_cut {
    char isp[CONFIG_NAME_MAX];
    double factor;
    uint64_t pause_ms;
    char why[400];
    int suspend; /* another node's suspension (isp_suspend), not a cut */
};

struct send_cluster_seen {
    char isp[CONFIG_NAME_MAX];
    int64_t at_us; /* the newest row of another node applied */
    int suspend;
};

struct send_cluster {
    struct send *s;
    const char *url, *node; /* borrowed from the options */
    char sources[1024];     /* a text[] literal */
    PGconn *c;              /* the thread's */
    unsigned prepared;      /* which of send_cluster_sqls are prepared on c */
    pthread_t thread;
    int started;
    struct loop_timer timer;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    /* under lock */
    struct send_cluster_lane lanes[SEND_CLUSTER_LANES];
    size_t nlanes;
    uint64_t beat_ms;
    struct send_cluster_cut out[SEND_CLUSTER_CUTS], in[SEND_CLUSTER_CUTS];
    size_t nout, nin;
    uint64_t last_ok_ms; /* clock_ms of the last beat that went through */
    char last_err[300];
    uint64_t beats, beat_failures, answers; /* answers: beats whose shares were read */
    int quit, done;
    /* the thread's own */
    struct send_cluster_seen seen[SEND_MAX_ISPS * 2];
    size_t nseen;
    int64_t started_us; /* rows older than the start were applied at start, or are history */
    /* the loop's own */
    int blocked, peers;
};

/* send_cluster_array - lanes' field as a text[] or int[] literal, quoted */
static void send_cluster_array(const struct send_cluster_lane *v, size_t n, int which, buf_t *out)
{
    buf_append_str(out, "{");
    for (size_t i = 0; i < n; i++) {
        if (i) {
            buf_append_str(out, ",");
        }
        if (which == 2) {
            char d[32];
            snprintf(d, sizeof d, "%zu", v[i].demand);
            buf_append_str(out, d);
            continue;
        }
        const char *t = which == 0 ? v[i].isp : v[i].source;
        buf_append_str(out, "\"");
        for (; *t; t++) {
            if (*t == '"' || *t == '\\') {
                buf_append(out, "\\", 1);
            }
            buf_append(out, t, 1);
        }
        buf_append_str(out, "\"");
    }
    buf_append_str(out, "}");
}

/* send_cluster_seen_slot - the newest row of another node applied for (isp, kind) */
static struct send_cluster_seen *send_cluster_seen_slot(struct send_cluster *k, const char *isp,
                                                        int suspend)
{
    for (size_t i = 0; i < k->nseen; i++) {
        if (k->seen[i].suspend == suspend && strcmp(k->seen[i].isp, isp) == 0) {
            return &k->seen[i];
        }
    }
    if (k->nseen == sizeof k->seen / sizeof k->seen[0]) {
        return NULL;
    }
    struct send_cluster_seen *x = &k->seen[k->nseen++];
    snprintf(x->isp, sizeof x->isp, "%s", isp);
    x->suspend = suspend;
    x->at_us = k->started_us;
    return x;
}

static const char send_cluster_sql_beat[] =
    "UPDATE ringmail.node SET beat_at = now(), beat_ms = $2, sources = $3::text[]"
    " WHERE name = $1";

/* Demand rows: this node's lanes now, the rest of its rows gone. */
static const char send_cluster_sql_demand[] =
    "WITH d AS (SELECT * FROM unnest($2::text[], $3::text[], $4::int[]) AS t(isp, source, demand)),"
    " gone AS (DELETE FROM ringmail.node_lane nl WHERE nl.node = $1 AND NOT EXISTS"
    "   (SELECT 1 FROM d WHERE d.isp = nl.isp AND d.source = nl.source))"
    " INSERT INTO ringmail.node_lane (isp, source, node, demand, at)"
    " SELECT isp, source, $1, demand, now() FROM d"
    " ON CONFLICT (isp, source, node) DO UPDATE SET demand = EXCLUDED.demand, at = now()";

/* Per lane: live nodes with demand, how many sort before this one, whether
 * this one is among them; and the rotation's epoch. */
static const char send_cluster_sql_shares[] =
    "SELECT nl.isp, nl.source, count(*), count(*) FILTER (WHERE nl.node < $1),"
    " bool_or(nl.node = $1), floor(extract(epoch FROM now()) / $2)::bigint"
    " FROM ringmail.node_lane nl JOIN ringmail.node n ON n.name = nl.node"
    " WHERE nl.demand > 0 AND n.beat_at IS NOT NULL"
    "   AND n.beat_at > now() - 1.5 * n.beat_ms * interval '1 millisecond'"
    " GROUP BY 1, 2";

static const char send_cluster_sql_cut[] =
    "INSERT INTO ringmail.isp_backoff (isp, source, factor, paused_until, reason, node, at)"
    " VALUES ($1, '', $2, now() + $3::bigint * interval '1 millisecond', $4, $5, clock_timestamp())"
    " ON CONFLICT (isp, source) DO UPDATE SET factor = EXCLUDED.factor,"
    " paused_until = EXCLUDED.paused_until, reason = EXCLUDED.reason, node = EXCLUDED.node,"
    " at = EXCLUDED.at";

/* Other nodes' cuts and suspensions still in force. */
static const char send_cluster_sql_news[] =
    "SELECT 0, isp, factor, GREATEST(0, extract(epoch FROM paused_until - now()) * 1000)::bigint,"
    " coalesce(reason, ''), coalesce(node, ''), (extract(epoch FROM at) * 1000000)::bigint"
    " FROM ringmail.isp_backoff WHERE node IS DISTINCT FROM $1 AND paused_until > now()"
    " UNION ALL"
    " SELECT 1, isp, 1, GREATEST(0, extract(epoch FROM until - now()) * 1000)::bigint,"
    " reason, coalesce(node, ''), (extract(epoch FROM at) * 1000000)::bigint"
    " FROM ringmail.isp_suspend WHERE node IS DISTINCT FROM $1 AND until > now()";

/* The beat's statements, prepared on the thread's connection at their
 * first use (four beats a second, four statements each, per node: planned
 * every time, they were a node's largest PostgreSQL cost per second at
 * ISP-limited rates). */
static const char *const send_cluster_sqls[] = {send_cluster_sql_beat, send_cluster_sql_demand,
                                                send_cluster_sql_cut, send_cluster_sql_shares,
                                                send_cluster_sql_news};

/* send_cluster_exec - a statement on the thread's connection (one of
 * send_cluster_sqls: prepared): its result, or NULL and why */
static PGresult *send_cluster_exec(struct send_cluster *k, const char *sql, int n,
                                   const char *const *p, ExecStatusType want, char *err,
                                   size_t errlen)
{
    int which = -1;
    for (int i = 0; i < (int)(sizeof send_cluster_sqls / sizeof send_cluster_sqls[0]); i++) {
        if (sql == send_cluster_sqls[i]) {
            which = i;
        }
    }
    if (which < 0) {
        return db_checked(k->c, pq.PQexecParams(k->c, sql, n, NULL, p, NULL, NULL, 0), want, err,
                          errlen);
    }
    char name[32];
    snprintf(name, sizeof name, "ringmail_cluster_%d", which);
    if (!(k->prepared & (1u << which))) {
        PGresult *r =
            db_checked(k->c, pq.PQprepare(k->c, name, sql, n, NULL), PGRES_COMMAND_OK, err, errlen);
        if (!r) {
            return NULL;
        }
        pq.PQclear(r);
        k->prepared |= 1u << which;
    }
    return db_checked(k->c, pq.PQexecPrepared(k->c, name, n, p, NULL, NULL, 0), want, err, errlen);
}

/* send_cluster_beat - one beat: publish, read the shares and the news;
 * 0, or -1 and why */
static int send_cluster_beat(struct send_cluster *k, char *err, size_t errlen)
{
    if (!k->c) {
        k->c = db_connect_current(k->url, err, errlen);
        k->prepared = 0;
        if (!k->c) {
            return -1;
        }
    }
    pthread_mutex_lock(&k->lock);
    size_t n = k->nlanes;
    struct send_cluster_lane *v = malloc((n ? n : 1) * sizeof *v);
    struct send_cluster_cut *cuts = malloc(SEND_CLUSTER_CUTS * sizeof *cuts);
    if (!v || !cuts) {
        abort();
    }
    memcpy(v, k->lanes, n * sizeof *v);
    size_t ncuts = k->nout;
    memcpy(cuts, k->out, ncuts * sizeof *cuts);
    k->nout = 0;
    char beat[32];
    snprintf(beat, sizeof beat, "%" PRIu64, k->beat_ms);
    pthread_mutex_unlock(&k->lock);

    int rc = -1;
    buf_t isps = BUF_INIT, srcs = BUF_INIT, dems = BUF_INIT;
    size_t m = 0; /* the lanes with demand, first */
    for (size_t i = 0; i < n; i++) {
        if (v[i].demand) {
            struct send_cluster_lane t = v[m];
            v[m++] = v[i];
            v[i] = t;
        }
    }
    send_cluster_array(v, m, 0, &isps);
    send_cluster_array(v, m, 1, &srcs);
    send_cluster_array(v, m, 2, &dems);
    const char *pb[] = {k->node, beat, k->sources};
    const char *pd[] = {k->node, buf_cstr(&isps), buf_cstr(&srcs), buf_cstr(&dems)};
    char rot[32];
    snprintf(rot, sizeof rot, "%d", SEND_CLUSTER_ROTATE_S);
    const char *ps[] = {k->node, rot};
    PGresult *r = NULL;
    if (!(r = send_cluster_exec(k, send_cluster_sql_beat, 3, pb, PGRES_COMMAND_OK, err, errlen))) {
        goto out;
    }
    pq.PQclear(r);
    if (!(r = send_cluster_exec(k, send_cluster_sql_demand, 4, pd, PGRES_COMMAND_OK, err,
                                errlen))) {
        goto out;
    }
    pq.PQclear(r);
    for (size_t i = 0; i < ncuts; i++) {
        char f[32], ms[32];
        snprintf(f, sizeof f, "%.4f", cuts[i].factor);
        snprintf(ms, sizeof ms, "%" PRIu64, cuts[i].pause_ms);
        const char *pc[] = {cuts[i].isp, f, ms, cuts[i].why, k->node};
        if (!(r = send_cluster_exec(k, send_cluster_sql_cut, 5, pc, PGRES_COMMAND_OK, err,
                                    errlen))) {
            goto out;
        }
        pq.PQclear(r);
    }
    if (!(r = send_cluster_exec(k, send_cluster_sql_shares, 2, ps, PGRES_TUPLES_OK, err, errlen))) {
        goto out;
    }
    /* Each lane of this node: nodes and rank (counting itself in). */
    for (size_t i = 0; i < n; i++) {
        v[i].nodes = 1;
        v[i].rank = 0;
        for (int j = 0; j < pq.PQntuples(r); j++) {
            if (strcmp(pq.PQgetvalue(r, j, 0), v[i].isp) != 0 ||
                strcmp(pq.PQgetvalue(r, j, 1), v[i].source) != 0) {
                continue;
            }
            unsigned count = (unsigned)atoi(pq.PQgetvalue(r, j, 2));
            unsigned before = (unsigned)atoi(pq.PQgetvalue(r, j, 3));
            int in = pq.PQgetvalue(r, j, 4)[0] == 't';
            unsigned long long epoch = strtoull(pq.PQgetvalue(r, j, 5), NULL, 10);
            v[i].nodes = count + (in ? 0 : 1);
            v[i].rank = (unsigned)((before + epoch) % v[i].nodes);
        }
    }
    pq.PQclear(r);
    const char *pn[] = {k->node};
    if (!(r = send_cluster_exec(k, send_cluster_sql_news, 1, pn, PGRES_TUPLES_OK, err, errlen))) {
        goto out;
    }
    struct send_cluster_cut news[SEND_CLUSTER_CUTS];
    size_t nnews = 0;
    for (int j = 0; j < pq.PQntuples(r) && nnews < SEND_CLUSTER_CUTS; j++) {
        int suspend = pq.PQgetvalue(r, j, 0)[0] == '1';
        const char *isp = pq.PQgetvalue(r, j, 1);
        int64_t at = strtoll(pq.PQgetvalue(r, j, 6), NULL, 10);
        struct send_cluster_seen *seen = send_cluster_seen_slot(k, isp, suspend);
        if (!seen || at <= seen->at_us) {
            continue;
        }
        seen->at_us = at;
        struct send_cluster_cut *x = &news[nnews++];
        snprintf(x->isp, sizeof x->isp, "%s", isp);
        x->suspend = suspend;
        x->factor = atof(pq.PQgetvalue(r, j, 2));
        x->pause_ms = strtoull(pq.PQgetvalue(r, j, 3), NULL, 10);
        snprintf(x->why, sizeof x->why, "on node %s: %s", pq.PQgetvalue(r, j, 5),
                 pq.PQgetvalue(r, j, 4));
    }
    pq.PQclear(r);
    pthread_mutex_lock(&k->lock);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < k->nlanes; j++) {
            if (strcmp(k->lanes[j].isp, v[i].isp) == 0 &&
                strcmp(k->lanes[j].source, v[i].source) == 0) {
                k->lanes[j].nodes = v[i].nodes;
                k->lanes[j].rank = v[i].rank;
                k->lanes[j].answered = 1;
            }
        }
    }
    for (size_t i = 0; i < nnews && k->nin < SEND_CLUSTER_CUTS; i++) {
        k->in[k->nin++] = news[i];
    }
    k->answers++;
    pthread_mutex_unlock(&k->lock);
    rc = 0;
out:
    if (rc < 0) {
        /* What was not written goes again at the next beat. */
        pthread_mutex_lock(&k->lock);
        for (size_t i = 0; i < ncuts && k->nout < SEND_CLUSTER_CUTS; i++) {
            k->out[k->nout++] = cuts[i];
        }
        pthread_mutex_unlock(&k->lock);
        pq.PQfinish(k->c); /* a new connection for the next beat */
        k->c = NULL;
    }
    buf_free(&isps);
    buf_free(&srcs);
    buf_free(&dems);
    free(v);
    free(cuts);
    return rc;
}

/* send_cluster_beat_counted - a beat, counted; under k->lock on entry and return */
static void send_cluster_beat_counted(struct send_cluster *k)
{
    pthread_mutex_unlock(&k->lock);
    char err[300];
    int rc = send_cluster_beat(k, err, sizeof err);
    pthread_mutex_lock(&k->lock);
    k->beats++;
    if (rc == 0) {
        k->last_ok_ms = clock_ms();
        k->last_err[0] = '\0';
    } else {
        k->beat_failures++;
        snprintf(k->last_err, sizeof k->last_err, "%s", err);
    }
}

/* send_cluster_main - the thread: a beat every beat_ms, or at once when a cut is to be said */
static void *send_cluster_main(void *arg)
{
    struct send_cluster *k = arg;
    pthread_mutex_lock(&k->lock);
    while (!k->quit) {
        struct timespec at;
        clock_gettime(CLOCK_REALTIME, &at);
        uint64_t ns = (uint64_t)at.tv_nsec + k->beat_ms / SEND_CLUSTER_BEATS * 1000000ull;
        at.tv_sec += (time_t)(ns / 1000000000ull);
        at.tv_nsec = (long)(ns % 1000000000ull);
        while (!k->quit && !k->nout &&
               pthread_cond_timedwait(&k->cond, &k->lock, &at) != ETIMEDOUT) {
        }
        if (!k->quit) {
            send_cluster_beat_counted(k);
        }
    }
    k->done = 1;
    pthread_cond_broadcast(&k->cond);
    pthread_mutex_unlock(&k->lock);
    return NULL;
}

/* send_cluster_say - the lane's share, said when the number of nodes changed */
static void send_cluster_say(struct send *s, const struct send_cluster_lane *l)
{
    const struct config *c = pool_config(s->pool);
    const struct config_isp *ci = NULL;
    for (size_t i = 0; i < c->nisps; i++) {
        if (strcmp(c->isps[i].name, l->isp) == 0) {
            ci = &c->isps[i];
        }
    }
    char lane[2 * CONFIG_NAME_MAX + 16];
    snprintf(lane, sizeof lane, "%s%s%s", l->isp, l->source[0] ? " source " : "", l->source);
    if (l->applied_nodes <= 1) {
        fprintf(stderr,
                "ringmail send: cluster: %s: no other node sends to it: this node takes "
                "its whole limits\n",
                lane);
        return;
    }
    /* The limits the lane has: a source's own section's, else the ISP's. */
    const struct config_lane *own = ci && l->source[0] ? config_lane_for(ci, l->source) : NULL;
    unsigned set = own ? own->set : 0;
    double msg_rate = set & CONFIG_LANE_MSG_RATE ? own->msg_rate : ci ? ci->msg_rate : -1;
    unsigned max_conns = set & CONFIG_LANE_MAX_CONNECTIONS ? own->max_connections
                         : ci                              ? ci->max_connections
                                                           : 0;
    char rate[128] = "", conns[64] = "";
    if (msg_rate >= 0) {
        char a[48], b[48];
        config_rate_text(msg_rate / l->applied_nodes, a, sizeof a);
        config_rate_text(msg_rate, b, sizeof b);
        snprintf(rate, sizeof rate, " %s of %s", a, b);
    }
    if (max_conns) {
        unsigned m = max_conns, k = l->applied_nodes;
        snprintf(conns, sizeof conns, "%s %u of %u connections", rate[0] ? "," : "",
                 m / k + (l->applied_rank < m % k ? 1 : 0), m);
    }
    fprintf(stderr, "ringmail send: cluster: %s: %u nodes share its limits: this node takes%s%s\n",
            lane, l->applied_nodes, rate[0] || conns[0] ? rate : " 1/N", conns);
}

/* send_cluster_tick - the loop's side: demands out, shares and news in */
static void send_cluster_tick(struct loop_timer *t)
{
    struct send_cluster *k = t->owner;
    struct send *s = k->s;
    uint64_t now = clock_ms();
    struct pool_lane_demand *d = calloc(SEND_CLUSTER_LANES, sizeof *d);
    if (!d) {
        abort();
    }
    size_t nd = pool_lane_demands(s->pool, d, SEND_CLUSTER_LANES);
    if (nd > SEND_CLUSTER_LANES) {
        nd = SEND_CLUSTER_LANES;
    }
    struct send_cluster_cut in[SEND_CLUSTER_CUTS];
    size_t nin;
    pthread_mutex_lock(&k->lock);
    k->beat_ms = pool_config(s->pool)->cluster_heartbeat_ms;
    /* Lanes that share: add new ones, refresh demand (kept a while). */
    for (size_t i = 0; i < nd; i++) {
        if (!d[i].shared) {
            continue;
        }
        size_t j = 0;
        while (j < k->nlanes && !(strcmp(k->lanes[j].isp, d[i].isp) == 0 &&
                                  strcmp(k->lanes[j].source, d[i].source) == 0)) {
            j++;
        }
        if (j == k->nlanes) {
            if (k->nlanes == SEND_CLUSTER_LANES) {
                continue;
            }
            struct send_cluster_lane *l = &k->lanes[k->nlanes++];
            memset(l, 0, sizeof *l);
            snprintf(l->isp, sizeof l->isp, "%s", d[i].isp);
            snprintf(l->source, sizeof l->source, "%s", d[i].source);
        }
        struct send_cluster_lane *l = &k->lanes[j];
        if (d[i].demand) {
            l->busy_ms = now;
        }
        l->demand =
            d[i].demand ? d[i].demand : now - l->busy_ms < SEND_CLUSTER_LINGER_MS && l->busy_ms;
    }
    /* Lanes that no longer share (a reload: cluster_limits off, a limit
     * removed, the ISP gone): the whole limit again, and no more rows. */
    for (size_t j = 0; j < k->nlanes;) {
        size_t i = 0;
        while (i < nd && !(d[i].shared && strcmp(k->lanes[j].isp, d[i].isp) == 0 &&
                           strcmp(k->lanes[j].source, d[i].source) == 0)) {
            i++;
        }
        if (i < nd) {
            j++;
            continue;
        }
        if (k->lanes[j].applied) {
            pool_lane_share(s->pool, k->lanes[j].isp, k->lanes[j].source, 0, 0, 0);
        }
        k->lanes[j] = k->lanes[--k->nlanes];
    }
    /* PostgreSQL out of reach with peers: the share is given up before the
     * others count this node dead (1.5 heartbeats) and take it. */
    int late = k->last_ok_ms && now - k->last_ok_ms > k->beat_ms * 5 / 4;
    int blocked = late && k->peers;
    if (blocked != k->blocked) {
        if (blocked) {
            buf_t names = BUF_INIT;
            for (size_t j = 0; j < k->nlanes; j++) {
                buf_append_str(&names, j ? ", " : "");
                buf_append_str(&names, k->lanes[j].isp);
            }
            fprintf(stderr,
                    "ringmail send: cluster: PostgreSQL out of reach for %.1f s (%s): this node "
                    "gives up its share of %s until it answers\n",
                    (double)(now - k->last_ok_ms) / 1000.0,
                    k->last_err[0] ? k->last_err : "no answer", buf_cstr(&names));
            buf_free(&names);
        } else {
            fprintf(stderr, "ringmail send: cluster: PostgreSQL answers again: shares restored\n");
        }
        k->blocked = blocked;
    }
    int peers = 0;
    for (size_t j = 0; j < k->nlanes; j++) {
        struct send_cluster_lane *l = &k->lanes[j];
        if (!l->answered) {
            continue;
        }
        peers |= l->nodes > 1;
        if (l->applied && l->applied_nodes == l->nodes && l->applied_rank == l->rank &&
            l->applied_blocked == blocked) {
            continue;
        }
        /* Said when the number of nodes changes, not for a node alone from the start. */
        int said = l->applied ? l->applied_nodes == l->nodes : l->nodes <= 1;
        l->applied = 1;
        l->applied_nodes = l->nodes;
        l->applied_rank = l->rank;
        l->applied_blocked = blocked;
        pool_lane_share(s->pool, l->isp, l->source, l->nodes, l->rank, blocked);
        if (!said && !blocked) {
            send_cluster_say(s, l);
        }
    }
    if (!late) {
        k->peers = peers; /* as the last beat that went through saw it */
    }
    nin = k->nin;
    memcpy(in, k->in, nin * sizeof *in);
    k->nin = 0;
    pthread_mutex_unlock(&k->lock);
    for (size_t i = 0; i < nin; i++) {
        if (in[i].suspend) {
            pool_isp_suspend(s->pool, in[i].isp, in[i].pause_ms, in[i].why);
            fprintf(stderr, "ringmail send: %s suspended for %.1f s (%s)\n", in[i].isp,
                    (double)in[i].pause_ms / 1000.0, in[i].why);
        } else {
            pool_isp_backoff_adopt(s->pool, in[i].isp, in[i].factor, in[i].pause_ms, in[i].why);
        }
    }
    free(d);
    if (!s->finishing) {
        loop_timer_set(s->loop, &k->timer, SEND_CLUSTER_TICK_MS);
    }
}

void send_cluster_backoff_note(void *user, const char *isp, double factor, uint64_t pause_ms,
                               const char *why)
{
    struct send *s = user;
    struct send_cluster *k = s->cluster;
    if (!k) {
        return;
    }
    pthread_mutex_lock(&k->lock);
    struct send_cluster_cut *x = NULL;
    for (size_t i = 0; i < k->nout; i++) {
        if (strcmp(k->out[i].isp, isp) == 0) {
            x = &k->out[i]; /* not written yet: the latest cut goes */
        }
    }
    if (!x && k->nout < SEND_CLUSTER_CUTS) {
        x = &k->out[k->nout++];
    }
    if (x) {
        memset(x, 0, sizeof *x);
        snprintf(x->isp, sizeof x->isp, "%s", isp);
        x->factor = factor;
        x->pause_ms = pause_ms;
        snprintf(x->why, sizeof x->why, "%s", why);
        pthread_cond_signal(&k->cond); /* the other nodes hear it at once, not at the next beat */
    }
    pthread_mutex_unlock(&k->lock);
}

int send_cluster_start(struct send *s)
{
    if (!s->o.db_url || !s->loader) {
        return 0;
    }
    struct send_cluster *k = calloc(1, sizeof *k);
    if (!k) {
        abort();
    }
    k->s = s;
    k->url = s->o.db_url;
    k->node = s->o.node;
    k->beat_ms = pool_config(s->pool)->cluster_heartbeat_ms;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    k->started_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    const char *src[SEND_MAX_SOURCES];
    size_t ns = pool_source_addrs(s->pool, src, SEND_MAX_SOURCES);
    buf_t b = BUF_INIT;
    buf_append_str(&b, "{");
    for (size_t i = 0; i < ns && i < SEND_MAX_SOURCES; i++) {
        buf_append_str(&b, i ? "," : "");
        buf_append_str(&b, src[i]); /* numeric addresses: no quoting needed */
    }
    buf_append_str(&b, "}");
    snprintf(k->sources, sizeof k->sources, "%s", buf_cstr(&b));
    buf_free(&b);
    pthread_mutex_init(&k->lock, NULL);
    pthread_cond_init(&k->cond, NULL);
    loop_timer_init(&k->timer, send_cluster_tick, k);
    s->cluster = k;
    /* The first shares before anything is sent: a node joining a cluster
     * never starts at the whole limit. Every lane that shares is asked
     * for (no demand yet: this node counts itself in). */
    struct pool_lane_demand *d = calloc(SEND_CLUSTER_LANES, sizeof *d);
    if (!d) {
        abort();
    }
    size_t nd = pool_lane_demands(s->pool, d, SEND_CLUSTER_LANES);
    for (size_t i = 0; i < nd && i < SEND_CLUSTER_LANES && k->nlanes < SEND_CLUSTER_LANES; i++) {
        if (d[i].shared) {
            /* Announced with demand from the start (claims come at once): kept
             * SEND_CLUSTER_LINGER_MS, then what the lane really has. */
            struct send_cluster_lane *l = &k->lanes[k->nlanes++];
            snprintf(l->isp, sizeof l->isp, "%s", d[i].isp);
            snprintf(l->source, sizeof l->source, "%s", d[i].source);
            l->demand = 1;
            l->busy_ms = clock_ms();
        }
    }
    free(d);
    pthread_mutex_lock(&k->lock);
    send_cluster_beat_counted(k);
    int ok = k->beat_failures == 0;
    pthread_mutex_unlock(&k->lock);
    if (!ok) {
        fprintf(stderr, "ringmail send: cluster: reading the other nodes' shares: %s\n",
                k->last_err);
        return -1;
    }
    send_cluster_tick(&k->timer); /* applied now, the timer set */
    int rc = pthread_create(&k->thread, NULL, send_cluster_main, k);
    if (rc != 0) {
        fprintf(stderr, "ringmail send: cannot start a thread: %s\n", strerror(rc));
        return -1;
    }
    k->started = 1;
    return 0;
}

void send_cluster_quiet(struct send *s)
{
    if (s->cluster) {
        loop_timer_cancel(s->loop, &s->cluster->timer);
    }
}

void send_cluster_json(struct send *s, json_t *out)
{
    struct send_cluster *k = s->cluster;
    if (!k) {
        return;
    }
    pthread_mutex_lock(&k->lock);
    json_t *shares = json_object();
    for (size_t i = 0; i < k->nlanes; i++) {
        const struct send_cluster_lane *l = &k->lanes[i];
        if (!l->applied) {
            continue;
        }
        char lane[2 * CONFIG_NAME_MAX + 16];
        snprintf(lane, sizeof lane, "%s%s%s", l->isp, l->source[0] ? " source " : "", l->source);
        json_object_set_new(
            shares, lane,
            json_pack("{s:i, s:i}", "nodes", (int)l->applied_nodes, "rank", (int)l->applied_rank));
    }
    json_object_set_new(out, "cluster",
                        json_pack("{s:I, s:I, s:I, s:b, s:o}", "heartbeat_ms",
                                  (json_int_t)k->beat_ms, "beats", (json_int_t)k->beats,
                                  "beats_failed", (json_int_t)k->beat_failures, "blocked",
                                  k->blocked, "shares", shares));
    pthread_mutex_unlock(&k->lock);
}

void send_cluster_stop(struct send *s)
{
    struct send_cluster *k = s->cluster;
    if (!k) {
        return;
    }
    s->cluster = NULL;
    loop_timer_cancel(s->loop, &k->timer);
    if (k->started) {
        int done = send_thread_quit(&k->lock, &k->cond, &k->quit, &k->done, SEND_CLUSTER_STOP_MS);
        if (!done) {
            /* Stuck in libpq: the process is ending; its rows expire with its beat. */
            pthread_detach(k->thread);
            return;
        }
        pthread_join(k->thread, NULL);
    }
    if (k->c) {
        /* A clean stop: the share is the others' at their next beat. */
        const char *p[] = {k->node};
        char err[300];
        PGresult *r = send_cluster_exec(k, "DELETE FROM ringmail.node_lane WHERE node = $1", 1, p,
                                        PGRES_COMMAND_OK, err, sizeof err);
        pq.PQclear(r);
        pq.PQfinish(k->c);
    }
    pthread_mutex_destroy(&k->lock);
    pthread_cond_destroy(&k->cond);
    free(k);
}
