/*
 * loader - claims and results on threads of their own. See loader.h.
 *
 * Two database threads, each with its own connection, so claiming the
 * next batch never waits for a results commit and PostgreSQL works on
 * both at once: the claimer (claims, "is the campaign done?") and the
 * writer (results, lease extension).
 *
 * Locking: one mutex guards the queues and flags shared with the loop
 * thread; no database thread holds it across a query.
 */
#include "campaign/loader.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "campaign/db.h"
#include "engine/buf.h"

#define LOADER_FLUSH_MS 500       /* results are committed at least this often */
#define LOADER_FLUSH_ROWS 5000    /* ... or when this many wait */
#define LOADER_RETRY_DB_MS 1000   /* reconnect interval while PostgreSQL is away */
#define LOADER_SMALL_CLAIM_MS 100 /* a want under half a batch waits this long */
#define LOADER_DEAD_CHECK_MS 500  /* how often the heartbeat thread looks for dead nodes */
#define LOADER_LEASE_S 10 /* a node's lease: renewed every half, taken over when it runs out */
/* The journal is compacted (rewritten with only the lines whose results are
 * not yet committed) once it passes this size and four times what is live. */
#define LOADER_JOURNAL_COMPACT_BYTES (128 * 1024)
/* Statement and lock timeouts of the database threads' sessions, unless the
 * server or the URL (options=-c ...) set their own. A statement that fails
 * on them is retried like any database error (results are kept). */
#define LOADER_STATEMENT_TIMEOUT "30s"
#define LOADER_LOCK_TIMEOUT "5s"

/* A recipient's last journal line, while it matters at a recovery: a body
 * going out ('D') or an outcome not yet committed ('R'). */
struct loader_jent {
    int64_t id; /* 0: a free slot */
    uint32_t attempt;
    char kind;
    char *line; /* with its newline */
    size_t len;
};

/* One arm statement's ids and how many of them still wait for a committed
 * result; its row is deleted when none does. */
struct loader_arm_seq {
    uint64_t seq;
    size_t left;
};

struct loader {
    struct loader_options o;
    char *url, *node, *journal_path;
    PGconn *c;  /* the claimer's connection (and the start's) */
    PGconn *wc; /* the writer's */
    PGconn *hc; /* the heartbeat's: node liveness, arms, takeovers */
    pthread_t thread, wthread, hthread;
    int threads; /* started */
    pthread_mutex_t mu;
    pthread_mutex_t amu; /* the arms' state (arm_*, armed_upto): taken per transaction */
    pthread_cond_t cv;   /* claimer: more wanted, stopping */
    pthread_cond_t wcv;  /* writer: a full batch of results, stopping */
    pthread_cond_t hcv;  /* heartbeat: ids to arm (with amu), stopping */
    int efd;
    int journal_fd;             /* written and swapped under jmu */
    pthread_mutex_t jmu;        /* the journal: its fd, size and live lines */
    size_t journal_bytes;       /* its size */
    struct loader_jent *jmap;   /* live lines by id (open addressing) */
    size_t jmap_cap, jmap_n;    /* slots (a power of two), entries */
    size_t journal_live;        /* bytes of the live lines */
    int journal_compact_warned; /* a failed compaction said so once */
    char host[256];
    char incarnation[32]; /* this process's, from ringmail.node_incarnation */
    /* shared, under mu */
    struct loader_rcpt *ready;
    size_t ready_head, nready, ready_cap; /* ready[ready_head .. +nready) */
    size_t want;
    buf_t res;      /* results waiting, packed (loader_pack) */
    size_t nres;    /* how many */
    size_t writing; /* results taken by the writer, not yet committed */
    int stopping;
    int exhausted;
    int db_up[3]; /* claimer's, writer's and heartbeat's connections */
    /* arms, under amu: ids whose bodies may go out once committed (loader_arm) */
    int64_t *arm_ids; /* waiting for the next arm statement */
    size_t narm_ids, arm_ids_cap;
    uint64_t arm_next_seq;   /* the seq the waiting ids will be committed under */
    uint64_t armed_upto;     /* every seq up to this one is committed */
    int arm_waiting;         /* the loop waits for an arm: signal it at the next commit */
    uint64_t alive_until_ms; /* bodies may start until then (the node's lease, less a margin) */
    struct loader_arm_seq *arm_open; /* seqs with results not yet committed */
    size_t narm_open, arm_open_cap;
    int64_t *arm_done; /* seqs whose rows can go */
    size_t narm_done, arm_done_cap;
    int registered; /* this process became the node's incarnation */
    int fenced;     /* another node took this one over: stop */
    char fenced_why[512];
    void (*notify)(void *); /* also told when rows are ready (loader_set_notify) */
    void *notify_arg;
    struct loader_stats st;
    /* claimer thread only */
    uint64_t nothing_due_until_ms, next_reclaim_ms, last_claim_ms;
    /* writer thread only */
    uint64_t last_flush_ms, flush_not_before_ms;
    struct loader_campaign camp;
};

static struct loader_arm_seq *loader_arm_find(struct loader *l, uint64_t seq);
static void loader_arm_collect(struct loader *l);

static uint64_t loader_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t loader_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void loader_signal(struct loader *l)
{
    uint64_t one = 1;
    ssize_t n = write(l->efd, &one, sizeof one);
    (void)n;
    pthread_mutex_lock(&l->mu);
    void (*fn)(void *) = l->notify;
    void *arg = l->notify_arg;
    pthread_mutex_unlock(&l->mu);
    if (fn) {
        fn(arg);
    }
}

static char *loader_strdup_or_null(PGresult *r, int row, int col)
{
    if (pq.PQgetisnull(r, row, col)) {
        return NULL;
    }
    return strdup(pq.PQgetvalue(r, row, col));
}

/* ---- the statements, prepared on every connection ---- */

/* The claim: up to $2 rows matching the WHERE part go to `claimed` under a
 * lease, while this process is the node's incarnation ($6: a node taken
 * over claims nothing). An expired lease of a node that has no row in
 * ringmail.node (written by a ringmail before schema 3): that node's
 * journal is not ours and nothing says what it armed, so its recipient may
 * have been sent: ambiguous, unless resending ($5). The claims of nodes
 * with a row are taken over by loader_take_over instead. */
#define LOADER_CLAIM_SQL(where)                                                                    \
    "WITH c AS (SELECT id, state AS old_state, lease_owner AS old_owner,"                          \
    "  EXISTS (SELECT 1 FROM ringmail.suppression s WHERE s.address = q.address) AS suppressed"    \
    "  FROM ringmail.recipient q WHERE campaign_id = $1 AND EXISTS (SELECT 1 FROM ringmail.node n" \
    "   WHERE n.name = $3 AND n.incarnation = $6::bigint) AND " where                              \
    "  LIMIT $2 FOR UPDATE SKIP LOCKED)"                                                           \
    " UPDATE ringmail.recipient r SET"                                                             \
    "  state = CASE WHEN c.old_state = 'claimed' AND NOT $5::boolean THEN 'ambiguous'"             \
    "   WHEN c.suppressed THEN 'suppressed' ELSE 'claimed' END,"                                   \
    "  reason = CASE WHEN c.old_state = 'claimed' AND NOT $5::boolean"                             \
    "   THEN 'lease of node ' || coalesce(c.old_owner, '?') || ' expired'"                         \
    "   WHEN c.suppressed THEN 'suppressed' ELSE r.reason END,"                                    \
    "  lease_owner = CASE WHEN (c.old_state = 'claimed' AND NOT $5::boolean) OR c.suppressed"      \
    "   THEN NULL ELSE $3 END,"                                                                    \
    "  lease_expires_at = now() + ($4 || ' seconds')::interval, next_attempt_at = NULL,"           \
    "  updated_at = now()"                                                                         \
    " FROM c WHERE r.id = c.id"                                                                    \
    " RETURNING r.id, r.address, r.vars::text, r.attempts,"                                        \
    "  coalesce(extract(epoch FROM now() - r.first_attempt_at), 0), r.state"

enum {
    LOADER_SQL_CLAIM_DUE,
    LOADER_SQL_CLAIM_EXPIRED,
    LOADER_SQL_RESULTS,
    LOADER_SQL_SUPPRESS,
    LOADER_NSQL
};

static const struct {
    const char *name, *sql;
    int nparams;
} loader_sql[LOADER_NSQL] = {
    /* Due ones by an index scan in next_attempt_at order (not a bitmap
     * scan: the index entries of rows already claimed are marked dead as
     * the scan passes, so claiming stays cheap however far the campaign
     * has gone). */
    [LOADER_SQL_CLAIM_DUE] = {"ringmail_claim_due",
                              LOADER_CLAIM_SQL(
                                  "state IN ('queued', 'deferred') AND"
                                  " next_attempt_at <= now() ORDER BY next_attempt_at"),
                              6},
    [LOADER_SQL_CLAIM_EXPIRED] =
        {"ringmail_claim_expired",
         LOADER_CLAIM_SQL("state = 'claimed' AND lease_expires_at < now()"
                          " AND lease_owner IS DISTINCT FROM $3 AND NOT EXISTS"
                          " (SELECT 1 FROM ringmail.node o WHERE o.name = q.lease_owner)"),
         6},
    /* $1 node, then arrays: ids, states, reasons, attempts, retry seconds. */
    [LOADER_SQL_RESULTS] = {"ringmail_results",
                            "UPDATE ringmail.recipient r SET state = x.state, reason = x.reason,"
                            " attempts = greatest(r.attempts, x.attempts),"
                            " first_attempt_at = coalesce(r.first_attempt_at, now()),"
                            " next_attempt_at = CASE WHEN x.state = 'deferred'"
                            "   THEN now() + x.retry_s * interval '1 second' END,"
                            " lease_owner = NULL, lease_expires_at = NULL, updated_at = now()"
                            " FROM unnest($2::bigint[], $3::text[], $4::text[], $5::int[],"
                            "   $6::float8[]) AS x(id, state, reason, attempts, retry_s)"
                            " WHERE r.id = x.id AND r.lease_owner = $1"
                            "  AND r.state IN ('claimed', 'ambiguous')",
                            6},
    /* $1 campaign, $2 ids, $3 reasons of the bounced ones. */
    [LOADER_SQL_SUPPRESS] = {"ringmail_suppress",
                             "INSERT INTO ringmail.suppression (address, reason, campaign_id)"
                             " SELECT r.address, x.reason, $1::bigint"
                             " FROM unnest($2::bigint[], $3::text[]) AS x(id, reason)"
                             " JOIN ringmail.recipient r ON r.id = x.id"
                             " ON CONFLICT (address) DO NOTHING",
                             3},
};

static PGresult *loader_prepared(PGconn *c, int which, const char *const *params,
                                 ExecStatusType want, char *err, size_t errlen)
{
    PGresult *r = pq.PQexecPrepared(c, loader_sql[which].name, loader_sql[which].nparams, params,
                                    NULL, NULL, 0);
    if (!r || pq.PQresultStatus(r) != want) {
        snprintf(err, errlen, "%s", r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(c));
        db_trim(err);
        pq.PQclear(r);
        return NULL;
    }
    return r;
}

/* ---- the connection ---- */

static int loader_up(PGconn *c)
{
    return c && pq.PQstatus(c) == CONNECTION_OK;
}

/* which: 0 the claimer's connection, 1 the writer's, 2 the heartbeat's. */
static PGconn **loader_conn(struct loader *l, int which)
{
    return which == 2 ? &l->hc : which ? &l->wc : &l->c;
}

static void loader_disconnect(struct loader *l, int which)
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

static int loader_connect(struct loader *l, int which, char *err, size_t errlen)
{
    PGconn **pc = loader_conn(l, which);
    if (loader_up(*pc)) {
        return 0;
    }
    loader_disconnect(l, which);
    *pc = db_connect(l->url, err, errlen);
    if (!*pc) {
        return -1;
    }
    int v = db_schema_version(*pc);
    if (v < db_schema_latest()) {
        snprintf(err, errlen,
                 "the database schema is at version %d and this ringmail needs version %d: run "
                 "`ringmail db migrate --db URL` first",
                 v < 0 ? 0 : v, db_schema_latest());
        loader_disconnect(l, which);
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

static PGresult *loader_query(PGconn *c, const char *sql, int n, const char *const *params,
                              ExecStatusType want, char *err, size_t errlen)
{
    PGresult *r = pq.PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (!r || pq.PQresultStatus(r) != want) {
        snprintf(err, errlen, "%s", r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(c));
        db_trim(err);
        pq.PQclear(r);
        return NULL;
    }
    return r;
}

/* ---- results, packed ----
 *
 * A struct loader_result is about 2 KB of fixed-size fields, mostly
 * empty; waiting results are kept packed instead (a fixed header, then
 * the strings with their NULs), a few hundred bytes each, so the backlog
 * costs memory by what it holds. */

struct loader_rec {
    int64_t id;
    uint64_t arm_seq;
    double retry_in_s;
    uint32_t len; /* the whole record */
    uint32_t attempt;
    int32_t final, code, connect_ms, tls_ms, transaction_ms, tls, tls_resumed, data_in_flight;
};

#define LOADER_FIELD(f)                                                                            \
    {                                                                                              \
        offsetof(struct loader_result, f), sizeof(((struct loader_result *)0)->f)                  \
    }
static const struct {
    size_t off, size;
} loader_strs[] = {
    LOADER_FIELD(outcome),     LOADER_FIELD(state),        LOADER_FIELD(reason),
    LOADER_FIELD(enhanced),    LOADER_FIELD(text),         LOADER_FIELD(isp),
    LOADER_FIELD(mx),          LOADER_FIELD(peer),         LOADER_FIELD(source),
    LOADER_FIELD(tls_version), LOADER_FIELD(tls_cipher),   LOADER_FIELD(tls_group),
    LOADER_FIELD(tls_verify),  LOADER_FIELD(peer_subject), LOADER_FIELD(peer_issuer),
    LOADER_FIELD(peer_sha256),
};
#define LOADER_NSTRS (sizeof loader_strs / sizeof loader_strs[0])

static void loader_pack(buf_t *b, const struct loader_result *r)
{
    struct loader_rec h = {
        .id = r->recipient_id,
        .arm_seq = r->arm_seq,
        .retry_in_s = r->retry_in_s,
        .attempt = r->attempt,
        .final = r->final,
        .code = r->code,
        .connect_ms = r->connect_ms,
        .tls_ms = r->tls_ms,
        .transaction_ms = r->transaction_ms,
        .tls = r->tls,
        .tls_resumed = r->tls_resumed,
        .data_in_flight = r->data_in_flight,
    };
    size_t start = buf_len(b);
    buf_append(b, &h, sizeof h);
    for (size_t k = 0; k < LOADER_NSTRS; k++) {
        const char *f = (const char *)r + loader_strs[k].off;
        buf_append(b, f, strnlen(f, loader_strs[k].size - 1));
        buf_append(b, "", 1);
    }
    h.len = (uint32_t)(buf_len(b) - start);
    memcpy((char *)buf_data(b) + start + offsetof(struct loader_rec, len), &h.len, sizeof h.len);
}

/* The record at p into r; returns its length. */
static size_t loader_unpack(const char *p, struct loader_result *r)
{
    struct loader_rec h;
    memcpy(&h, p, sizeof h);
    memset(r, 0, sizeof *r);
    r->recipient_id = h.id;
    r->arm_seq = h.arm_seq;
    r->retry_in_s = h.retry_in_s;
    r->attempt = h.attempt;
    r->final = h.final;
    r->code = h.code;
    r->connect_ms = h.connect_ms;
    r->tls_ms = h.tls_ms;
    r->transaction_ms = h.transaction_ms;
    r->tls = h.tls;
    r->tls_resumed = h.tls_resumed;
    r->data_in_flight = h.data_in_flight;
    const char *q = p + sizeof h;
    for (size_t k = 0; k < LOADER_NSTRS; k++) {
        size_t n = strlen(q);
        memcpy((char *)r + loader_strs[k].off, q, n); /* packed from a field of that size */
        q += n + 1;
    }
    return h.len;
}

/* ---- start: campaign and recovery ---- */

static int loader_load_campaign(struct loader *l, char *err, size_t errlen)
{
    char id[32];
    snprintf(id, sizeof id, "%" PRId64, l->o.campaign);
    const char *p[] = {id};
    PGresult *r =
        loader_query(l->c,
                     "SELECT name, mail_from, subject, text_body, html_body,"
                     " list_unsubscribe, feedback_id, dkim_domain, dkim_selector, dkim_key"
                     " FROM ringmail.campaign WHERE id = $1",
                     1, p, PGRES_TUPLES_OK, err, errlen);
    if (!r) {
        return -1;
    }
    if (pq.PQntuples(r) != 1) {
        snprintf(err, errlen, "no campaign %s", id);
        pq.PQclear(r);
        return -1;
    }
    struct loader_campaign *c = &l->camp;
    c->id = l->o.campaign;
    c->name = loader_strdup_or_null(r, 0, 0);
    c->mail_from = loader_strdup_or_null(r, 0, 1);
    c->subject = loader_strdup_or_null(r, 0, 2);
    c->text_body = loader_strdup_or_null(r, 0, 3);
    c->html_body = loader_strdup_or_null(r, 0, 4);
    c->list_unsubscribe = loader_strdup_or_null(r, 0, 5);
    c->feedback_id = loader_strdup_or_null(r, 0, 6);
    c->dkim_domain = loader_strdup_or_null(r, 0, 7);
    c->dkim_selector = loader_strdup_or_null(r, 0, 8);
    c->dkim_key = loader_strdup_or_null(r, 0, 9);
    pq.PQclear(r);
    return 0;
}

/* ---- the node: one live process per name ---- */

/* The journal is this host's record of the node: one process at a time
 * (flock, released by the kernel when the process dies, kill -9 too). */
static int loader_lock_journal(struct loader *l, char *err, size_t errlen)
{
    /* A compaction replaces the file (rename) holding a lock on the new
     * one: a lock won on the old one, just replaced, is not the node's. */
    for (int tries = 0; tries < 8; tries++) {
        if (flock(l->journal_fd, LOCK_EX | LOCK_NB) < 0) {
            break;
        }
        struct stat a, b;
        if (fstat(l->journal_fd, &a) == 0 && stat(l->journal_path, &b) == 0 &&
            a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
            return 0;
        }
        int fd =
            open(l->journal_path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            snprintf(err, errlen, "journal %s: %s", l->journal_path, strerror(errno));
            return -1;
        }
        close(l->journal_fd);
        l->journal_fd = fd;
    }
    if (errno == EWOULDBLOCK) {
        snprintf(err, errlen,
                 "node %s is already running on this host: another ringmail process holds its "
                 "journal %s; give this process another --node, or stop that one first",
                 l->node, l->journal_path);
    } else {
        snprintf(err, errlen, "journal %s: %s", l->journal_path, strerror(errno));
    }
    return -1;
}

/* What the previous incarnation of this node left: its host (is our
 * journal its journal?) and campaign (its claims there are ours to settle). */
struct loader_prev {
    int exists;
    char host[256];
    int64_t campaign;
};

/* Become the node's live incarnation: ringmail.node gets a fresh
 * incarnation number for this name, unless another process holds it (its
 * heartbeat not expired): then refused, saying who. A holder on this host
 * whose pid is gone (killed a moment ago, lease not yet run out) is
 * replaced at once: we hold the journal lock, so it is not running. */
static int loader_register(struct loader *l, struct loader_prev *prev, char *err, size_t errlen)
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
    return 0;
}

/* ---- start: recovery ---- */

/* One recipient this node still holds at start (`claimed`, or `ambiguous`
 * after another node took it over), and the last thing its journal says. */
struct loader_held {
    int64_t id;
    unsigned attempts;           /* as the database has them */
    int ambiguous;               /* state ambiguous (a takeover), not claimed */
    int armed;                   /* in one of this node's ringmail.armed rows */
    char last;                   /* 'D' body going out, 'R' outcome known, 0 nothing */
    struct loader_result result; /* the last 'R' */
};

static int loader_held_cmp(const void *a, const void *b)
{
    int64_t x = ((const struct loader_held *)a)->id, y = ((const struct loader_held *)b)->id;
    return x < y ? -1 : x > y;
}

/* Read the journal into the held set, in order: "D id" (a body about to go
 * out) and "R id attempt final retry_s code outcome state reason" (an
 * outcome). The last line of a recipient wins: a deferral, a retry in the
 * same process and a kill during the retry's DATA end in "D". */
static void loader_journal_read(struct loader *l, struct loader_held *held, size_t n)
{
    FILE *f = fopen(l->journal_path, "r");
    if (!f) {
        return;
    }
    char line[256];
    while (fgets(line, sizeof line, f)) {
        struct loader_held key = {0};
        long long id;
        if (line[0] == 'D' && sscanf(line, "D %lld", &id) == 1) {
            key.id = id;
            struct loader_held *h = bsearch(&key, held, n, sizeof *held, loader_held_cmp);
            if (h) {
                h->last = 'D';
            }
            continue;
        }
        struct loader_result r;
        memset(&r, 0, sizeof r);
        unsigned attempt;
        int final, code;
        double retry;
        if (line[0] == 'R' && sscanf(line, "R %lld %u %d %lf %d %15s %15s %47s", &id, &attempt,
                                     &final, &retry, &code, r.outcome, r.state, r.reason) == 8) {
            key.id = id;
            struct loader_held *h = bsearch(&key, held, n, sizeof *held, loader_held_cmp);
            if (h) {
                r.recipient_id = id;
                r.attempt = attempt;
                r.final = final;
                r.retry_in_s = retry;
                r.code = code;
                r.connect_ms = r.tls_ms = r.transaction_ms = -1;
                snprintf(r.text, sizeof r.text,
                         "outcome recovered from the crash journal of node %s", l->node);
                h->last = 'R';
                h->result = r;
            }
        }
    }
    fclose(f);
}

static int loader_write(struct loader *l, PGconn *c, const buf_t *packed, char *err, size_t errlen);

static void loader_ids_add(buf_t *b, size_t *n, int64_t id)
{
    buf_appendf(b, "%s%" PRId64, (*n)++ ? "," : "{", id);
}

static const char *loader_ids_end(buf_t *b, size_t n)
{
    buf_append(b, n ? "}" : "{}", n ? 2 : 3); /* with the NUL */
    return buf_data(b);
}

/*
 * After a stop of this node (clean or kill -9): every recipient it still
 * holds is settled from its journal, read in order. The last line decides:
 * an outcome newer than the database's (more attempts) is written as it
 * was; a body going out with no outcome after it is `ambiguous` (or
 * queued again with --resend-ambiguous); anything else never had a body go
 * out since its claim and goes back to `queued`. Recipients another node
 * took over as `ambiguous` while this one was dead are settled the same
 * way. The journal is trusted only if it was written on this host (the
 * previous incarnation's); otherwise what the node armed counts as sent.
 */
static int loader_recover(struct loader *l, const struct loader_prev *prev, char *err,
                          size_t errlen)
{
    char id[32], old[32];
    snprintf(id, sizeof id, "%" PRId64, l->o.campaign);
    snprintf(old, sizeof old, "%" PRId64, prev->exists ? prev->campaign : l->o.campaign);
    int trusted = !prev->exists || strcmp(prev->host, l->host) == 0;
    const char *p[] = {id, l->node, old};
    PGresult *r = loader_query(
        l->c,
        "WITH a AS (SELECT DISTINCT unnest(ids) AS id FROM ringmail.armed WHERE node = $2)"
        " SELECT q.id, q.attempts, q.state = 'ambiguous', a.id IS NOT NULL"
        " FROM ringmail.recipient q LEFT JOIN a ON a.id = q.id"
        " WHERE q.campaign_id IN ($1, $3) AND q.lease_owner = $2"
        " AND q.state IN ('claimed', 'ambiguous') ORDER BY q.id",
        3, p, PGRES_TUPLES_OK, err, errlen);
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
        loader_journal_read(l, held, n);
    }
    buf_t known, amb, requeue;
    buf_init(&known);
    buf_init(&amb);
    buf_init(&requeue);
    size_t nknown = 0, namb = 0, nreq = 0;
    for (size_t i = 0; i < n; i++) {
        struct loader_held *h = &held[i];
        if (h->last == 'R' && h->result.attempt > h->attempts) {
            loader_pack(&known, &h->result);
            nknown++;
        } else if (h->last == 'D' || (!trusted && h->armed)) {
            if (!h->ambiguous) {
                loader_ids_add(&amb, &namb, h->id);
            }
        } else {
            loader_ids_add(&requeue, &nreq, h->id);
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
            " WHERE (id = ANY($2::bigint[]) OR id = ANY($3::bigint[])) AND lease_owner = $1"
            " AND state IN ('claimed', 'ambiguous') RETURNING state",
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
        return -1;
    }
    /* Ambiguous ones the journal did not settle stay ambiguous, no longer
     * anybody's: nothing will write a result for them. */
    const char *p4[] = {l->node};
    r = loader_query(l->c,
                     "UPDATE ringmail.recipient SET lease_owner = NULL WHERE"
                     " lease_owner = $1 AND state = 'ambiguous'",
                     1, p4, PGRES_COMMAND_OK, err, errlen);
    if (!r) {
        return -1;
    }
    pq.PQclear(r);
    r = loader_query(l->c, "DELETE FROM ringmail.armed WHERE node = $1", 1, p4, PGRES_COMMAND_OK,
                     err, errlen);
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
    if (ftruncate(l->journal_fd, 0) < 0) {
        snprintf(err, errlen, "journal %s: %s", l->journal_path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- results ---- */

/* COPY text format: backslash escapes; NULL is \N. */
static void loader_copy_field(buf_t *b, const char *s, int last)
{
    if (!s) {
        buf_append_str(b, "\\N");
    } else {
        for (; *s; s++) {
            switch (*s) {
            case '\\':
                buf_append_str(b, "\\\\");
                break;
            case '\t':
                buf_append_str(b, "\\t");
                break;
            case '\n':
                buf_append_str(b, "\\n");
                break;
            case '\r':
                buf_append_str(b, "\\r");
                break;
            default:
                buf_append(b, s, 1);
            }
        }
    }
    buf_append(b, last ? "\n" : "\t", 1);
}

static void loader_copy_int(buf_t *b, long long v, int valid)
{
    if (valid) {
        buf_appendf(b, "%lld\t", v);
    } else {
        buf_append_str(b, "\\N\t");
    }
}

/* PostgreSQL array literals, element by element: raw (numbers and plain
 * words) or quoted text ("..." with \ and " escaped; NULL for none). */
static void loader_array_next(buf_t *b)
{
    buf_append(b, buf_len(b) ? "," : "{", 1);
}

static void loader_array_raw(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void loader_array_raw(buf_t *b, const char *fmt, ...)
{
    loader_array_next(b);
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    buf_append_str(b, tmp);
}

static void loader_array_text(buf_t *b, const char *s)
{
    loader_array_next(b);
    if (!s) {
        buf_append_str(b, "NULL");
        return;
    }
    buf_append(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            buf_append(b, "\\", 1);
        }
        buf_append(b, s, 1);
    }
    buf_append(b, "\"", 1);
}

static const char *loader_array_end(buf_t *b)
{
    if (buf_len(b)) {
        buf_append(b, "}", 2); /* with the NUL */
    } else {
        buf_append(b, "{}", 3);
    }
    return buf_data(b);
}

static int loader_copy(PGconn *c, const char *sql, buf_t *data, char *err, size_t errlen)
{
    PGresult *r = pq.PQexec(c, sql);
    if (!r || pq.PQresultStatus(r) != PGRES_COPY_IN) {
        snprintf(err, errlen, "%s", r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(c));
        pq.PQclear(r);
        return -1;
    }
    pq.PQclear(r);
    int ok = pq.PQputCopyData(c, buf_data(data), (int)buf_len(data)) == 1;
    ok = pq.PQputCopyEnd(c, ok ? NULL : "send failed") == 1 && ok;
    int failed = !ok;
    while ((r = pq.PQgetResult(c)) != NULL) {
        if (pq.PQresultStatus(r) != PGRES_COMMAND_OK) {
            snprintf(err, errlen, "%s", pq.PQresultErrorMessage(r));
            failed = 1;
        }
        pq.PQclear(r);
    }
    return failed ? -1 : 0;
}

/* The write transaction's start. The UPDATE (and the suppression INSERT)
 * must stay an index nested loop: unnest() outside, one primary-key probe
 * per result inside. Left to the statistics, a batch after an outage
 * (thousands of results, a planner shown few rows with our lease owner)
 * flipped to a scan of ringmail.recipient joined against a re-scanned
 * unnest(): (claimed rows) x (batch) comparisons, seconds per flush.
 * - force_generic_plan: a custom plan sees the array's true length and
 *   weighs it against the statistics; a generic one assumes ten elements
 *   whatever the batch, so the batch size cannot change the plan (and the
 *   five custom plans after every reconnect are gone).
 * - seqscan, bitmapscan, hashjoin and mergejoin off: what is left is a
 *   nested loop; with ten assumed outer rows, ten probes of the primary
 *   key cost far less than a whole scan of the table in key order (the
 *   other order), sized by the table's pages on disk, which stale
 *   statistics do not change. Memoize: the ids are distinct, a cache of
 *   probes only costs.
 * SET LOCAL ends with the transaction; the claims keep the defaults. */
#define LOADER_WRITE_BEGIN                                                                         \
    "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan;"                                       \
    " SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"                          \
    " SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"                          \
    " SET LOCAL enable_memoize = off"

/* Write the packed results in one transaction on c. 0, or -1 (nothing written).
 * The delivery rows go in with COPY; the recipients' new states with one
 * prepared UPDATE over arrays (an index nested loop on the primary key
 * whatever the statistics say: LOADER_WRITE_BEGIN). */
static int loader_write(struct loader *l, PGconn *c, const buf_t *packed, char *err, size_t errlen)
{
    buf_t d, ids, states, reasons, attempts, retry, bids, breasons;
    buf_t *arrays[] = {&ids, &states, &reasons, &attempts, &retry, &bids, &breasons};
    buf_init(&d);
    for (size_t k = 0; k < sizeof arrays / sizeof arrays[0]; k++) {
        buf_init(arrays[k]);
    }
    char camp[32];
    snprintf(camp, sizeof camp, "%" PRId64, l->o.campaign);
    size_t bounced = 0;
    struct loader_result one;
    const struct loader_result *x = &one;
    for (size_t at = 0; at < buf_len(packed);) {
        at += loader_unpack(buf_data(packed) + at, &one);
        buf_appendf(&d, "%s\t%" PRId64 "\t%u\t", camp, x->recipient_id, x->attempt);
        loader_copy_field(&d, x->outcome, 0);
        loader_copy_field(&d, x->final ? "t" : "f", 0);
        loader_copy_field(&d, x->reason, 0);
        loader_copy_int(&d, x->connect_ms, x->connect_ms >= 0);
        loader_copy_int(&d, x->tls_ms, x->tls_ms >= 0);
        loader_copy_int(&d, x->transaction_ms, x->transaction_ms >= 0);
        loader_copy_field(&d, x->isp[0] ? x->isp : NULL, 0);
        loader_copy_field(&d, x->mx[0] ? x->mx : NULL, 0);
        loader_copy_field(&d, x->peer[0] ? x->peer : NULL, 0);
        loader_copy_field(&d, x->source[0] ? x->source : NULL, 0);
        loader_copy_int(&d, x->code, x->code > 0);
        loader_copy_field(&d, x->enhanced[0] ? x->enhanced : NULL, 0);
        loader_copy_field(&d, x->text, 0);
        loader_copy_field(&d, x->tls ? x->tls_version : NULL, 0);
        loader_copy_field(&d, x->tls ? x->tls_cipher : NULL, 0);
        loader_copy_field(&d, x->tls ? x->tls_group : NULL, 0);
        loader_copy_field(&d, x->tls ? (x->tls_resumed ? "t" : "f") : NULL, 0);
        loader_copy_field(&d, x->tls ? x->tls_verify : NULL, 0);
        loader_copy_field(&d, x->tls ? x->peer_subject : NULL, 0);
        loader_copy_field(&d, x->tls ? x->peer_issuer : NULL, 0);
        loader_copy_field(&d, x->tls ? x->peer_sha256 : NULL, 0);
        loader_copy_field(&d, x->data_in_flight ? "t" : "f", 0);
        loader_copy_field(&d, l->node, 1);
        loader_array_raw(&ids, "%" PRId64, x->recipient_id);
        loader_array_text(&states, x->state);
        loader_array_text(&reasons, x->reason[0] ? x->reason : NULL);
        loader_array_raw(&attempts, "%u", x->attempt);
        loader_array_raw(&retry, "%.3f", x->retry_in_s);
        if (strcmp(x->state, "bounced") == 0) {
            loader_array_raw(&bids, "%" PRId64, x->recipient_id);
            loader_array_text(&breasons, x->reason[0] ? x->reason : NULL);
            bounced++;
        }
    }
    int rc = -1;
    PGresult *r = NULL;
    const char *up[] = {l->node,
                        loader_array_end(&ids),
                        loader_array_end(&states),
                        loader_array_end(&reasons),
                        loader_array_end(&attempts),
                        loader_array_end(&retry)};
    const char *sp[] = {camp, loader_array_end(&bids), loader_array_end(&breasons)};
    if (db_exec(c, LOADER_WRITE_BEGIN, err, errlen) < 0 ||
        loader_copy(c,
                    "COPY ringmail.delivery (campaign_id, recipient_id, attempt, outcome, final,"
                    " reason, connect_ms, tls_ms, transaction_ms, isp, mx, peer, source, code,"
                    " enhanced, reply, tls_version, tls_cipher, tls_group, tls_resumed,"
                    " tls_verify, peer_subject, peer_issuer, peer_sha256, data_in_flight, node)"
                    " FROM STDIN",
                    &d, err, errlen) < 0) {
        goto out;
    }
    r = loader_prepared(c, LOADER_SQL_RESULTS, up, PGRES_COMMAND_OK, err, errlen);
    if (!r) {
        goto out;
    }
    pq.PQclear(r);
    if (bounced > 0) {
        r = loader_prepared(c, LOADER_SQL_SUPPRESS, sp, PGRES_COMMAND_OK, err, errlen);
        if (!r) {
            goto out;
        }
        pq.PQclear(r);
    }
    if (db_exec(c, "COMMIT", err, errlen) == 0) {
        rc = 0;
    }
out:
    if (rc < 0 && loader_up(c)) {
        char ignore[64];
        db_exec(c, "ROLLBACK", ignore, sizeof ignore);
    }
    buf_free(&d);
    for (size_t k = 0; k < sizeof arrays / sizeof arrays[0]; k++) {
        buf_free(arrays[k]);
    }
    return rc;
}

static void loader_journal_committed(struct loader *l, const buf_t *batch);

/* Take the waiting results and commit them; on failure they go back. */
static int loader_flush(struct loader *l, char *err, size_t errlen)
{
    pthread_mutex_lock(&l->mu);
    buf_t batch = l->res;
    size_t n = l->nres;
    buf_init(&l->res);
    l->nres = 0;
    l->writing = n;
    pthread_mutex_unlock(&l->mu);
    if (n == 0) {
        buf_free(&batch);
        return 0;
    }
    uint64_t t0 = loader_us();
    int rc = loader_write(l, l->wc, &batch, err, errlen);
    pthread_mutex_lock(&l->mu);
    l->writing = 0;
    l->st.write_us += loader_us() - t0;
    if (rc == 0) {
        l->st.written += n;
        l->st.flushes++;
    } else {
        /* Put them back in front of anything that arrived meanwhile. */
        buf_append(&batch, buf_data(&l->res), buf_len(&l->res));
        buf_free(&l->res);
        l->res = batch;
        l->nres += n;
    }
    pthread_mutex_unlock(&l->mu);
    int64_t *done = NULL;
    size_t ndone = 0;
    if (rc == 0) {
        /* Their arms wait for one result fewer. */
        pthread_mutex_lock(&l->amu);
        for (size_t at = 0; at < buf_len(&batch);) {
            struct loader_rec h;
            memcpy(&h, buf_data(&batch) + at, sizeof h);
            at += h.len;
            struct loader_arm_seq *a = h.arm_seq ? loader_arm_find(l, h.arm_seq) : NULL;
            if (a && a->left > 0) {
                a->left--;
            }
        }
        loader_arm_collect(l);
        done = l->arm_done;
        ndone = l->narm_done;
        l->arm_done = NULL;
        l->narm_done = l->arm_done_cap = 0;
        pthread_mutex_unlock(&l->amu);
        loader_journal_committed(l, &batch);
        buf_free(&batch);
    }
    if (ndone) {
        /* Arms whose every recipient has its result committed: nothing a
         * takeover needs. A failure leaves rows that match no claim. */
        buf_t a;
        buf_init(&a);
        size_t k = 0;
        for (size_t i = 0; i < ndone; i++) {
            loader_ids_add(&a, &k, done[i]);
        }
        const char *p[] = {l->node, loader_ids_end(&a, k)};
        char ignore[256];
        PGresult *r = loader_query(l->wc,
                                   "DELETE FROM ringmail.armed WHERE node = $1"
                                   " AND seq = ANY($2::bigint[])",
                                   2, p, PGRES_COMMAND_OK, ignore, sizeof ignore);
        pq.PQclear(r);
        buf_free(&a);
        free(done);
    }
    return rc;
}

/* ---- claims ---- */

/* Claim up to want recipients with one of the claim statements. */
static int loader_claim_with(struct loader *l, int which, size_t want, char *err, size_t errlen)
{
    char id[32], lim[32], lease[32];
    snprintf(id, sizeof id, "%" PRId64, l->o.campaign);
    snprintf(lim, sizeof lim, "%zu", want);
    snprintf(lease, sizeof lease, "%u", l->o.lease_s);
    const char *p[] = {id, lim, l->node, lease, l->o.resend_ambiguous ? "t" : "f", l->incarnation};
    uint64_t t0 = loader_us();
    PGresult *r = loader_prepared(l->c, which, p, PGRES_TUPLES_OK, err, errlen);
    uint64_t took = loader_us() - t0;
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

static int loader_claim(struct loader *l, size_t want, char *err, size_t errlen)
{
    int n = loader_claim_with(l, LOADER_SQL_CLAIM_DUE, want, err, errlen);
    if (n < 0 || (size_t)n >= want) {
        return n;
    }
    uint64_t now = loader_ms();
    if (now < l->next_reclaim_ms) {
        return n;
    }
    uint64_t every = (uint64_t)l->o.lease_s * 100;
    l->next_reclaim_ms = now + (every > LOADER_RECLAIM_MS ? every : LOADER_RECLAIM_MS);
    int m = loader_claim_with(l, LOADER_SQL_CLAIM_EXPIRED, want - (size_t)n, err, errlen);
    return m < 0 ? m : n + m;
}

/* Nothing was claimable: is the campaign finished, or when is the next due? */
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
    uint64_t now = loader_ms();
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
    } else {
        /* Deferred ones later, or another node's work in progress: look again. */
        uint64_t wait = due_in > 0 ? (uint64_t)(due_in * 1000) : 200;
        l->nothing_due_until_ms = now + (wait > 1000 ? 1000 : wait < 50 ? 50 : wait);
    }
    return 0;
}

/* ---- the threads ---- */

static void loader_count_db_error(struct loader *l)
{
    pthread_mutex_lock(&l->mu);
    l->st.db_errors++;
    pthread_mutex_unlock(&l->mu);
}

/* Connect again if the connection is gone, at most once per retry interval. */
static int loader_keep_up(struct loader *l, int which, uint64_t *next_connect)
{
    PGconn **pc = loader_conn(l, which);
    uint64_t now = loader_ms();
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

static void loader_wait_on(pthread_mutex_t *mu, pthread_cond_t *cv, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    while (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cv, mu, &ts);
}

static void loader_wait(struct loader *l, pthread_cond_t *cv, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    while (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cv, &l->mu, &ts);
}

/* ---- the heartbeat thread: liveness, arms, takeovers ----
 *
 * Its own connection and table, so neither a results commit nor a lock on
 * ringmail.recipient (a long query, a VACUUM FULL) can keep the node from
 * proving it is alive. */

/* Renew the node's lease. 0 rows: another node took this one over while
 * its heartbeat was not getting through; it must stop (fenced). */
static void loader_beat(struct loader *l)
{
    char lease[16], err[512];
    snprintf(lease, sizeof lease, "%u", l->o.lease_s);
    const char *p[] = {l->node, l->incarnation, lease};
    uint64_t sent = loader_ms();
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

/* Open seqs are appended in order: find one by binary search. */
static struct loader_arm_seq *loader_arm_find(struct loader *l, uint64_t seq)
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

/* Under mu: seqs that are committed and have no result left to wait for
 * move to arm_done (their rows are deleted by the writer). */
static void loader_arm_collect(struct loader *l)
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

/* Commit one arm statement: the ids, under seq, while this process is the
 * node's incarnation (FOR KEY SHARE: a takeover's FOR UPDATE waits for it,
 * or it waits for the takeover and then finds the incarnation gone).
 * 0 done, -1 failed (retry), 1 fenced. */
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
    PGresult *r = loader_query(l->hc,
                               "WITH n AS (SELECT 1 FROM ringmail.node WHERE name = $1"
                               "  AND incarnation = $2::bigint FOR KEY SHARE)"
                               " INSERT INTO ringmail.armed (node, seq, ids)"
                               " SELECT $1, $3, $4::bigint[] FROM n",
                               4, p, PGRES_COMMAND_OK, err, sizeof err);
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

/* Take over one dead node (its lease ran out): under a lock on its row,
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
        "  WHERE q.campaign_id = $2::bigint AND q.state = 'claimed' AND q.lease_owner = $1)"
        " UPDATE ringmail.recipient r SET"
        "  state = CASE WHEN t.armed THEN 'ambiguous' ELSE 'queued' END,"
        "  reason = CASE WHEN t.armed THEN 'node ' || $1 || ' stopped heartbeating while its"
        " DATA may have been in flight' ELSE r.reason END,"
        "  next_attempt_at = CASE WHEN t.armed THEN NULL ELSE now() END,"
        "  lease_owner = CASE WHEN t.armed THEN $1 END,"
        "  lease_expires_at = NULL, updated_at = now()"
        " FROM t WHERE r.id = t.id AND r.state = 'claimed' AND r.lease_owner = $1"
        " RETURNING r.state",
        2, p2, PGRES_TUPLES_OK, err, sizeof err);
    if (!r) {
        fprintf(stderr, "ringmail: database: taking over node %s: %s\n", dead, err);
        db_exec(c, "ROLLBACK", err, sizeof err);
        return;
    }
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
    PGresult *r2 = r ? loader_query(c, "DELETE FROM ringmail.armed WHERE node = $1", 1, p,
                                    PGRES_COMMAND_OK, err, sizeof err)
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

/* Nodes whose lease ran out, other than this one. */
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

/* The heartbeat thread: renews the node's lease every half lease, commits
 * arms as soon as they are asked for, and takes over dead nodes. */
static void *loader_heart(void *arg)
{
    struct loader *l = arg;
    uint64_t next_connect = 0, next_beat = 0, next_dead = 0;
    int64_t *cur = NULL; /* the arm being committed (kept until it is) */
    size_t ncur = 0;
    uint64_t cur_seq = 0;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        int stop = l->stopping > 2, fenced = l->fenced;
        pthread_mutex_unlock(&l->mu);
        pthread_mutex_lock(&l->amu);
        if (!ncur && l->narm_ids && !fenced) {
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
        uint64_t now = loader_ms();
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
        if (!loader_up(l->hc)) {
            loader_disconnect(l, 2);
        }
        pthread_mutex_lock(&l->mu);
        int go_on = l->stopping <= 2 && !l->fenced;
        pthread_mutex_unlock(&l->mu);
        pthread_mutex_lock(&l->amu);
        int more = go_on && (ncur ? up && !failed : l->narm_ids > 0);
        if (go_on && !more) {
            /* Woken by loader_arm (under amu: no lost wake-up) or in time
             * for the next heartbeat; a stop waits this long at most. */
            loader_wait_on(&l->amu, &l->hcv, ncur ? 20 : 50);
        }
        pthread_mutex_unlock(&l->amu);
    }
    free(cur);
    return NULL;
}

/* The claimer: keeps the ready queue filled up to what the loop wants. */
static void *loader_claimer(void *arg)
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
        uint64_t now = loader_ms();
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
            loader_wait(l, &l->cv, 50);
        }
        pthread_mutex_unlock(&l->mu);
    }
    return NULL;
}

/* The writer: commits results at least every LOADER_FLUSH_MS, extends leases. */
static void *loader_writer(void *arg)
{
    struct loader *l = arg;
    char err[1024];
    uint64_t next_connect = 0;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        int stopping = l->stopping;
        size_t nres = l->nres;
        pthread_mutex_unlock(&l->mu);
        int up = loader_keep_up(l, 1, &next_connect);
        uint64_t now = loader_ms();
        if (up && nres > 0 && now >= l->flush_not_before_ms &&
            (stopping || nres >= LOADER_FLUSH_ROWS || now - l->last_flush_ms >= LOADER_FLUSH_MS)) {
            if (loader_flush(l, err, sizeof err) < 0) {
                fprintf(stderr, "ringmail: database: writing results: %s (kept, retrying)\n", err);
                loader_count_db_error(l);
                if (!loader_up(l->wc)) {
                    loader_disconnect(l, 1);
                }
                next_connect = now + LOADER_RETRY_DB_MS;
                l->flush_not_before_ms = now + LOADER_RETRY_DB_MS; /* no hot retry loop */
            } else {
                l->last_flush_ms = now;
                loader_signal(l); /* the loop may be waiting for the backlog to drain */
            }
        }
        if (stopping) {
            pthread_mutex_lock(&l->mu);
            int done = l->nres == 0;
            int gave_up = l->stopping > 1; /* gave up waiting for the database */
            pthread_mutex_unlock(&l->mu);
            if (done || (gave_up && !loader_up(l->wc)) || stopping > 2) {
                break;
            }
        }
        pthread_mutex_lock(&l->mu);
        if (!l->stopping && l->nres < LOADER_FLUSH_ROWS) {
            loader_wait(l, &l->wcv, 50);
        } else if (l->stopping && l->stopping < 3 && loader_ms() < l->flush_not_before_ms) {
            loader_wait(l, &l->wcv, 20); /* retrying: no hot loop */
        }
        pthread_mutex_unlock(&l->mu);
    }
    return NULL;
}

/* ---- the loop's side ---- */

static void loader_journal_write(struct loader *l, int64_t id, char kind, uint32_t attempt,
                                 const char *line, int n);

/* Ask the threads to stop and join those started (n of them: writer,
 * heartbeat, claimer). */
static void loader_join(struct loader *l, int n)
{
    pthread_mutex_lock(&l->mu);
    l->stopping = 3;
    pthread_cond_broadcast(&l->cv);
    pthread_cond_broadcast(&l->wcv);
    pthread_cond_broadcast(&l->hcv);
    pthread_mutex_unlock(&l->mu);
    pthread_t *t[] = {&l->wthread, &l->hthread, &l->thread};
    for (int i = 0; i < n; i++) {
        pthread_join(*t[i], NULL);
    }
}

struct loader *loader_start(const struct loader_options *o, char *err, size_t errlen)
{
    struct loader *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->o = *o;
    l->url = strdup(o->url);
    l->node = strdup(o->node);
    l->journal_path = strdup(o->journal_path);
    l->o.batch = o->batch ? o->batch : 1000;
    l->o.lease_s = o->lease_s ? o->lease_s : LOADER_LEASE_S;
    l->arm_next_seq = 1;
    if (gethostname(l->host, sizeof l->host - 1) < 0 || !l->host[0]) {
        snprintf(l->host, sizeof l->host, "localhost");
    }
    l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->journal_fd =
        open(l->journal_path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    int jerr = errno;
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->amu, NULL);
    pthread_cond_init(&l->cv, NULL);
    pthread_cond_init(&l->wcv, NULL);
    pthread_cond_init(&l->hcv, NULL);
    pthread_mutex_init(&l->jmu, NULL);
    if (l->journal_fd < 0) {
        snprintf(err, errlen, "journal %s: %s%s", l->journal_path, strerror(jerr),
                 jerr == ELOOP ? " (a symbolic link: refused, the journal is opened only as a "
                                 "regular file)"
                               : "");
        goto fail;
    }
    struct loader_prev prev;
    /* Each connection checks the schema version before preparing. */
    if (loader_lock_journal(l, err, errlen) < 0 || loader_connect(l, 0, err, errlen) < 0 ||
        loader_connect(l, 1, err, errlen) < 0 || loader_connect(l, 2, err, errlen) < 0 ||
        loader_load_campaign(l, err, errlen) < 0 || loader_register(l, &prev, err, errlen) < 0) {
        goto fail;
    }
    l->registered = 1;
    __atomic_store_n(&l->alive_until_ms, loader_ms() + (uint64_t)l->o.lease_s * 750,
                     __ATOMIC_RELEASE);
    if (loader_recover(l, &prev, err, errlen) < 0) {
        goto fail;
    }
    void *(*fn[])(void *) = {loader_writer, loader_heart, loader_claimer};
    pthread_t *t[] = {&l->wthread, &l->hthread, &l->thread};
    for (int i = 0; i < 3; i++) {
        if (pthread_create(t[i], NULL, fn[i], l) != 0) {
            snprintf(err, errlen, "cannot start the database threads");
            loader_join(l, i);
            goto fail;
        }
    }
    l->threads = 1;
    return l;
fail:
    l->threads = 0;
    loader_stop(l, 0);
    return NULL;
}

static void loader_campaign_free(struct loader_campaign *c)
{
    free(c->name);
    free(c->mail_from);
    free(c->subject);
    free(c->text_body);
    free(c->html_body);
    free(c->list_unsubscribe);
    free(c->feedback_id);
    free(c->dkim_domain);
    free(c->dkim_selector);
    free(c->dkim_key);
}

uint64_t loader_now_ms(void)
{
    return loader_ms();
}

#define LOADER_NO_DEADLINE UINT64_MAX

static uint64_t loader_deadline(uint64_t deadline, const uint64_t *hurry)
{
    uint64_t h = hurry ? __atomic_load_n(hurry, __ATOMIC_ACQUIRE) : 0;
    return h && h < deadline ? h : deadline;
}

/* Join t, waiting until deadline at most: 0 joined, -1 still running. */
static int loader_join_by(pthread_t t, uint64_t deadline)
{
    if (deadline == LOADER_NO_DEADLINE) {
        return pthread_join(t, NULL) == 0 ? 0 : -1;
    }
    uint64_t now = loader_ms(), left = deadline > now ? deadline - now : 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(left / 1000);
    ts.tv_nsec += (long)(left % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_timedjoin_np(t, NULL, &ts) == 0 ? 0 : -1;
}

int loader_stop(struct loader *l, unsigned give_up_ms)
{
    struct loader_stop_info info;
    uint64_t deadline = give_up_ms ? loader_ms() + give_up_ms + 3000 : LOADER_NO_DEADLINE;
    return loader_stop_by(l, deadline, NULL, &info);
}

int loader_stop_by(struct loader *l, uint64_t deadline, const uint64_t *hurry,
                   struct loader_stop_info *info)
{
    memset(info, 0, sizeof *info);
    info->requeued = -1;
    if (!l) {
        return 0;
    }
    int rc = 0;
    if (l->threads) {
        pthread_mutex_lock(&l->mu);
        l->stopping = 1;
        pthread_cond_signal(&l->cv);
        pthread_cond_signal(&l->wcv);
        pthread_mutex_unlock(&l->mu);
        /* Wait for the results to be written, until shortly before the
         * deadline (what is left then is in the journal). */
        int gave_up = 0;
        for (;;) {
            uint64_t d = loader_deadline(deadline, hurry);
            pthread_mutex_lock(&l->mu);
            size_t left = l->nres + l->writing;
            gave_up = left > 0 && d != LOADER_NO_DEADLINE && loader_ms() + 1500 >= d;
            pthread_mutex_unlock(&l->mu);
            if (left == 0 || gave_up) {
                break;
            }
            struct timespec ts = {0, 20000000};
            nanosleep(&ts, NULL);
        }
        /* Claimer and writer first; the heartbeat last, so the node stays
         * alive until its results are in (unless we gave up on them). */
        pthread_mutex_lock(&l->mu);
        l->stopping = gave_up ? 3 : 1;
        pthread_cond_broadcast(&l->cv);
        pthread_cond_broadcast(&l->wcv);
        pthread_cond_broadcast(&l->hcv);
        pthread_mutex_unlock(&l->mu);
        uint64_t d = loader_deadline(deadline, hurry);
        int behind = loader_join_by(l->thread, d == LOADER_NO_DEADLINE ? d : d - 1000) < 0;
        behind += loader_join_by(l->wthread, d == LOADER_NO_DEADLINE ? d : d - 1000) < 0;
        pthread_mutex_lock(&l->mu);
        l->stopping = 3;
        pthread_cond_signal(&l->hcv);
        pthread_mutex_unlock(&l->mu);
        d = loader_deadline(deadline, hurry);
        behind += loader_join_by(l->hthread, d == LOADER_NO_DEADLINE ? d : d - 700) < 0;
        pthread_mutex_lock(&l->mu);
        info->unwritten = l->nres + l->writing;
        pthread_mutex_unlock(&l->mu);
        if (behind) {
            /* Blocked in libpq on a database that does not answer: they
             * keep l; the process ends without freeing it. What they hold
             * is in the journal; the claims stay the node's. */
            info->abandoned = 1;
            return -1;
        }
        if (l->nres > 0) {
            fprintf(stderr,
                    "ringmail: database: %zu results could not be written; their recipients "
                    "stay claimed and are recovered at the next start\n",
                    l->nres);
            rc = -1;
        }
    }
    /* What was claimed and never attempted goes back to the queue (this
     * process knows: nothing of it went out), the node's arms go, and the
     * node is stopped. Only by the node's incarnation: a process refused at
     * start, or one taken over, leaves everything to the live one. */
    if (l->registered && !l->fenced && loader_up(l->c) && l->nres == 0 && l->writing == 0) {
        char id[32], err[512];
        snprintf(id, sizeof id, "%" PRId64, l->o.campaign);
        const char *p[] = {id, l->node, l->incarnation};
        PGresult *r = loader_query(l->c,
                                   "UPDATE ringmail.recipient SET state = 'queued',"
                                   " next_attempt_at = now(), lease_owner = NULL,"
                                   " lease_expires_at = NULL"
                                   " WHERE campaign_id = $1 AND state = 'claimed'"
                                   " AND lease_owner = $2",
                                   2, p, PGRES_COMMAND_OK, err, sizeof err);
        if (r) {
            info->requeued = atoll(pq.PQcmdTuples(r)); /* committed: one statement */
        }
        PGresult *r2 = r ? loader_query(l->c, "DELETE FROM ringmail.armed WHERE node = $1", 1,
                                        p + 1, PGRES_COMMAND_OK, err, sizeof err)
                         : NULL;
        PGresult *r3 = r2 ? loader_query(l->c,
                                         "UPDATE ringmail.node SET incarnation = NULL,"
                                         " stopped_at = now()"
                                         " WHERE name = $1 AND incarnation = $2::bigint",
                                         2, p + 1, PGRES_COMMAND_OK, err, sizeof err)
                          : NULL;
        if (r3) {
            if (l->journal_fd >= 0 && ftruncate(l->journal_fd, 0) < 0) {
                rc = -1;
            }
        } else {
            rc = -1;
        }
        pq.PQclear(r);
        pq.PQclear(r2);
        pq.PQclear(r3);
    }
    loader_disconnect(l, 0);
    loader_disconnect(l, 1);
    loader_disconnect(l, 2);
    free(l->arm_ids);
    free(l->arm_open);
    free(l->arm_done);
    for (size_t i = l->ready_head; i < l->ready_head + l->nready; i++) {
        free(l->ready[i].address);
        free(l->ready[i].vars);
    }
    free(l->ready);
    buf_free(&l->res);
    loader_campaign_free(&l->camp);
    if (l->efd >= 0) {
        close(l->efd);
    }
    if (l->journal_fd >= 0) {
        close(l->journal_fd);
    }
    for (size_t i = 0; i < l->jmap_cap; i++) {
        free(l->jmap[i].line);
    }
    free(l->jmap);
    pthread_mutex_destroy(&l->jmu);
    pthread_mutex_destroy(&l->mu);
    pthread_mutex_destroy(&l->amu);
    pthread_cond_destroy(&l->cv);
    pthread_cond_destroy(&l->wcv);
    pthread_cond_destroy(&l->hcv);
    free(l->url);
    free(l->node);
    free(l->journal_path);
    free(l);
    return rc;
}

void loader_set_notify(struct loader *l, void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&l->mu);
    l->notify = fn;
    l->notify_arg = arg;
    pthread_mutex_unlock(&l->mu);
}

int loader_fd(const struct loader *l)
{
    return l->efd;
}

size_t loader_take(struct loader *l, struct loader_rcpt *out, size_t max)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->nready < max ? l->nready : max;
    if (n > 0) {
        memcpy(out, l->ready + l->ready_head, n * sizeof *out);
        l->ready_head += n;
        l->nready -= n;
        if (l->nready == 0) {
            l->ready_head = 0;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return n;
}

void loader_want(struct loader *l, size_t n)
{
    pthread_mutex_lock(&l->mu);
    if (n > l->want) {
        l->want = n;
        l->exhausted = 0;
        pthread_cond_signal(&l->cv);
    } else {
        l->want = n;
    }
    pthread_mutex_unlock(&l->mu);
}

void loader_result(struct loader *l, const struct loader_result *r)
{
    char line[200];
    int n = snprintf(line, sizeof line, "R %" PRId64 " %u %d %.3f %d %s %s %s\n", r->recipient_id,
                     r->attempt, r->final, r->retry_in_s, r->code, r->outcome[0] ? r->outcome : "-",
                     r->state[0] ? r->state : "-", r->reason[0] ? r->reason : "-");
    if (n >= (int)sizeof line) {
        n = (int)sizeof line - 1;
        line[n - 1] = '\n';
    }
    loader_journal_write(l, r->recipient_id, 'R', r->attempt, line, n);
    pthread_mutex_lock(&l->mu);
    loader_pack(&l->res, r);
    l->nres++;
    l->exhausted = 0;
    if (l->nres >= LOADER_FLUSH_ROWS) {
        pthread_cond_signal(&l->wcv);
    }
    pthread_mutex_unlock(&l->mu);
}

size_t loader_backlog(struct loader *l)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->nres + l->writing;
    pthread_mutex_unlock(&l->mu);
    return n;
}

int loader_exhausted(struct loader *l)
{
    pthread_mutex_lock(&l->mu);
    int e = l->exhausted && l->nres == 0 && l->writing == 0 && l->nready == 0;
    pthread_mutex_unlock(&l->mu);
    return e;
}

void loader_stats(struct loader *l, struct loader_stats *out)
{
    pthread_mutex_lock(&l->mu);
    *out = l->st;
    out->backlog = l->nres + l->writing;
    out->db_up = l->db_up[0] && l->db_up[1] && l->db_up[2];
    pthread_mutex_unlock(&l->mu);
}

const struct loader_campaign *loader_campaign(const struct loader *l)
{
    return &l->camp;
}

/* ---- the journal's live lines ----
 *
 * Recovery reads a recipient's last line only, and a recipient whose last
 * line is an outcome that is committed is no longer this node's to settle
 * (or the outcome is stale against the database's attempts). So what a
 * recovery needs is, per recipient, its last line unless that is a
 * committed 'R': the live set, kept here (under jmu) as the lines are
 * written and results commit. Once the file is large and mostly dead, it
 * is replaced by the live set: written to FILE.compact, locked there (flock:
 * the node's lock moves with it), renamed over FILE. A kill -9 at any point
 * leaves FILE whole, old or new. */

static size_t loader_jmap_slot(const struct loader *l, int64_t id)
{
    size_t mask = l->jmap_cap - 1;
    size_t i = (size_t)((uint64_t)id * 0x9E3779B97F4A7C15ull >> 17) & mask;
    while (l->jmap[i].id && l->jmap[i].id != id) {
        i = (i + 1) & mask;
    }
    return i;
}

static void loader_jmap_grow(struct loader *l)
{
    struct loader_jent *old = l->jmap;
    size_t oldcap = l->jmap_cap;
    l->jmap_cap = oldcap ? oldcap * 2 : 1024;
    l->jmap = calloc(l->jmap_cap, sizeof *l->jmap);
    if (!l->jmap) {
        abort();
    }
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].id) {
            l->jmap[loader_jmap_slot(l, old[i].id)] = old[i];
        }
    }
    free(old);
}

/* Under jmu: id's last line is now this one. */
static void loader_jmap_put(struct loader *l, int64_t id, char kind, uint32_t attempt,
                            const char *line, size_t n)
{
    if ((l->jmap_n + 1) * 4 > l->jmap_cap * 3) {
        loader_jmap_grow(l);
    }
    struct loader_jent *e = &l->jmap[loader_jmap_slot(l, id)];
    if (e->id) {
        l->journal_live -= e->len;
        free(e->line);
    } else {
        l->jmap_n++;
    }
    e->id = id;
    e->kind = kind;
    e->attempt = attempt;
    e->line = malloc(n);
    if (!e->line) {
        abort();
    }
    memcpy(e->line, line, n);
    e->len = n;
    l->journal_live += n;
}

/* Under jmu: drop the slot i, moving later entries of its run back
 * (linear probing without tombstones). */
static void loader_jmap_del(struct loader *l, size_t i)
{
    size_t mask = l->jmap_cap - 1;
    l->journal_live -= l->jmap[i].len;
    free(l->jmap[i].line);
    l->jmap[i].line = NULL;
    l->jmap[i].id = 0;
    l->jmap_n--;
    for (size_t j = (i + 1) & mask; l->jmap[j].id; j = (j + 1) & mask) {
        size_t home = (size_t)((uint64_t)l->jmap[j].id * 0x9E3779B97F4A7C15ull >> 17) & mask;
        /* j's entry may move to i if its home is not in (i, j] (cyclically). */
        if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
            l->jmap[i] = l->jmap[j];
            l->jmap[j].id = 0;
            l->jmap[j].line = NULL;
            i = j;
        }
    }
}

/* Under jmu: replace the file by the live lines (see above). */
static void loader_journal_compact(struct loader *l)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.compact", l->journal_path);
    buf_t b;
    buf_init(&b);
    for (size_t i = 0; i < l->jmap_cap; i++) {
        if (l->jmap[i].id) {
            buf_append(&b, l->jmap[i].line, l->jmap[i].len);
        }
    }
    const char *why = NULL;
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        why = "create";
    } else if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        why = "lock";
    } else {
        const char *p = buf_data(&b);
        size_t left = buf_len(&b);
        while (left > 0 && !why) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w <= 0) {
                why = "write";
            } else {
                p += w;
                left -= (size_t)w;
            }
        }
        if (!why && rename(tmp, l->journal_path) < 0) {
            why = "rename";
        }
    }
    if (why) {
        if (!l->journal_compact_warned) {
            l->journal_compact_warned = 1;
            fprintf(stderr,
                    "ringmail: journal %s: cannot compact it (%s %s: %s); it keeps growing\n",
                    l->journal_path, why, tmp, strerror(errno));
        }
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        buf_free(&b);
        return;
    }
    /* The new file is the journal, locked by fd: the old one can go. */
    close(l->journal_fd);
    l->journal_fd = fd;
    l->journal_bytes = buf_len(&b);
    buf_free(&b);
    pthread_mutex_lock(&l->mu);
    l->st.journal_compactions++;
    pthread_mutex_unlock(&l->mu);
}

/* The writer committed these results: their 'R' lines are dead (unless a
 * later line of the recipient came since); compact the file if it is worth it. */
static void loader_journal_committed(struct loader *l, const buf_t *batch)
{
    pthread_mutex_lock(&l->jmu);
    for (size_t at = 0; at < buf_len(batch) && l->jmap_cap;) {
        struct loader_rec h;
        memcpy(&h, (const char *)buf_data(batch) + at, sizeof h);
        at += h.len;
        size_t i = loader_jmap_slot(l, h.id);
        if (l->jmap[i].id && l->jmap[i].kind == 'R' && l->jmap[i].attempt == h.attempt) {
            loader_jmap_del(l, i);
        }
    }
    if (l->journal_bytes > LOADER_JOURNAL_COMPACT_BYTES && l->journal_bytes > 4 * l->journal_live) {
        loader_journal_compact(l);
    }
    pthread_mutex_unlock(&l->jmu);
}

static void loader_journal_write(struct loader *l, int64_t id, char kind, uint32_t attempt,
                                 const char *line, int n)
{
    /* One write per line, straight to the kernel: a kill -9 loses nothing. */
    pthread_mutex_lock(&l->jmu);
    if (write(l->journal_fd, line, (size_t)n) != n) {
        fprintf(stderr, "ringmail: journal %s: %s\n", l->journal_path, strerror(errno));
    }
    l->journal_bytes += (size_t)n;
    loader_jmap_put(l, id, kind, attempt, line, (size_t)n);
    pthread_mutex_unlock(&l->jmu);
}

void loader_journal_mark(struct loader *l, int64_t id)
{
    char line[40];
    int n = snprintf(line, sizeof line, "D %" PRId64 "\n", id);
    loader_journal_write(l, id, 'D', 0, line, n);
}

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

static int loader_armed_now(struct loader *l, uint64_t seq)
{
    return seq && seq <= __atomic_load_n(&l->armed_upto, __ATOMIC_SEQ_CST) &&
           !__atomic_load_n(&l->fenced, __ATOMIC_ACQUIRE) &&
           loader_ms() < __atomic_load_n(&l->alive_until_ms, __ATOMIC_ACQUIRE);
}

int loader_armed(struct loader *l, uint64_t seq)
{
    if (loader_armed_now(l, seq)) {
        return 1;
    }
    /* Ask to be told at the next commit, then look again: a commit that
     * came in between is either seen here or sees the flag. */
    __atomic_store_n(&l->arm_waiting, 1, __ATOMIC_SEQ_CST);
    return loader_armed_now(l, seq);
}

int loader_lease_ok(struct loader *l)
{
    return !__atomic_load_n(&l->fenced, __ATOMIC_ACQUIRE) &&
           loader_ms() < __atomic_load_n(&l->alive_until_ms, __ATOMIC_ACQUIRE);
}

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
