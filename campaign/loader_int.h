/*
 * loader_int - the loader's private header: its state and the seams
 * between its files
 *
 * The loader (see loader.h) is one job split over files that share
 * struct loader:
 *   loader.c          start, stop, the loop's side of the queues
 *   loader_sql.c      the prepared statements and the connections
 *   loader_claims.c   claims and the claimer thread
 *   loader_results.c  results packed, written with COPY, the writer thread
 *   loader_node.c     the node's incarnation, the heartbeat thread (liveness,
 *                     arms, takeovers) and the arms' loop side
 *   loader_journal.c  the crash journal: its lock, its lines, reading it in
 *                     order at recovery, its live lines and compaction
 *   loader_recover.c  settling at start what this node still holds
 *
 * Threads: the loop's (the public functions), the claimer (connection c),
 * the writer (wc) and the heartbeat (hc). Locking: mu guards the queues,
 * flags and counters shared with the loop thread, amu the arms, and the
 * journal its own mutex; no database thread holds one across a query.
 *
 * Nothing here is for callers outside campaign/loader*.c, except the unit
 * tests of the journal (tests/unit/test_journal.c), which need no database.
 */
#ifndef RINGMAIL_LOADER_INT_H
#define RINGMAIL_LOADER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "campaign/db.h"
#include "campaign/loader.h"
#include "engine/buf.h"

#define LOADER_FLUSH_MS 500     /* results are committed at least this often */
#define LOADER_FLUSH_ROWS 5000  /* ... or when this many wait */
#define LOADER_RETRY_DB_MS 1000 /* reconnect interval while PostgreSQL is away */
/* The journal is compacted (rewritten with only the lines whose results are
 * not yet committed) once it passes this size and four times what is live. */
#define LOADER_JOURNAL_COMPACT_BYTES (128 * 1024)

/* A recipient's last journal line, while it matters at a recovery: a body
 * going out ('D') or an outcome not yet committed ('R'). */
struct loader_jent {
    int64_t id; /* 0: a free slot */
    uint32_t attempt;
    char kind;
    char *line; /* with its newline; owned */
    size_t len;
};

/* The crash journal: this node's file of bodies going out and outcomes,
 * and its live lines (loader_journal.c). */
struct loader_journal {
    char *path;              /* owned */
    int fd;                  /* written and swapped under mu; -1: not open */
    pthread_mutex_t mu;      /* the fd, the size and the live lines */
    size_t bytes;            /* the file's size */
    struct loader_jent *map; /* live lines by id (open addressing); owned */
    size_t cap, n;           /* slots (a power of two), entries */
    size_t live;             /* bytes of the live lines */
    int compact_warned;      /* a failed compaction said so once */
    uint64_t compactions;    /* read and added to atomically (loader_stats) */
};

/* One arm statement's ids and how many of them still wait for a committed
 * result; its row is deleted when none does. */
struct loader_arm_seq {
    uint64_t seq;
    size_t left;
};

struct loader {
    struct loader_options o;
    char *url, *node; /* owned */
    PGconn *c;        /* the claimer's connection (and the start's) */
    PGconn *wc;       /* the writer's */
    PGconn *hc;       /* the heartbeat's: node liveness, arms, takeovers */
    pthread_t thread, wthread, hthread;
    int threads; /* started */
    pthread_mutex_t mu;
    pthread_mutex_t amu; /* the arms' state (arm_*, armed_upto): taken per transaction */
    pthread_cond_t cv;   /* claimer: more wanted, stopping */
    pthread_cond_t wcv;  /* writer: a full batch of results, stopping */
    pthread_cond_t hcv;  /* heartbeat: ids to arm (with amu), stopping */
    int efd;
    struct loader_journal j;
    /* loader_write's (the recovery's at start, then the writer thread's):
     * this process's block of session ids (ringmail.session_block; 0
     * until taken) and the sessions numbered in it for attempts no
     * connection carried */
    int64_t session_base;
    uint64_t lone_sessions;
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
    /* claims parked behind a held ISP (loader_holds.c stores it, the
     * claimer reads it: only those left, it looks again less often) */
    _Atomic size_t parked;
    int db_up[3]; /* claimer's, writer's and heartbeat's connections */
    /* arms, under amu: ids whose bodies may go out once committed (loader_arm) */
    int64_t *arm_ids; /* waiting for the next arm statement */
    size_t narm_ids, arm_ids_cap;
    uint64_t arm_first_ms;   /* when the first of them was asked for */
    uint64_t arm_last_ms;    /* when the last arm statement started */
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
    struct loader_counts counts; /* loader_node.c: at start, then by the heartbeat */
    uint64_t count_cost_ms;      /* heartbeat thread only: the last count's time */
    /* the last exact count of fresh rows above the sweep and the sweep's
     * total claimed then (under mu: the heartbeat's count, or the status
     * read at start, loader_start_counts); when to count exactly again
     * (heartbeat thread only, once started) */
    uint64_t fresh_exact, fresh_swept;
    uint64_t fresh_next_ms;
    /* the life cycle (lifecycle.h), under mu: the claimer saw every
     * recipient final and marked the campaign done (life_done: its reason,
     * "" when it was already done or cancelled) */
    int life_marked;
    char life_done[LOADER_TEXT_MAX];
    /* claimer thread only */
    uint64_t nothing_due_until_ms, next_reclaim_ms, last_claim_ms;
    int ghosts; /* the last count of every row found claims without a claim row */
    /* writer thread only */
    uint64_t last_flush_ms, flush_not_before_ms;
    struct loader_campaign camp;
};

/* A campaign's rows above its sweep position (fresh ones there are not
 * claimed yet), or at and below it: SQL conditions on recipient alias q of
 * campaign c, position upto (SQL expressions). Two row comparisons, so
 * that recipient_campaign (campaign_id, id) is scanned from the position
 * on: beside campaign_id = c, PostgreSQL started at the campaign's first
 * row and filtered up to the position (15 ms for a 200,000-row campaign
 * finished, each time). */
#define LOADER_ABOVE_SWEEP(q, c, upto)                                                             \
    "(" q ".campaign_id, " q ".id) > (" c ", " upto ") AND (" q ".campaign_id, " q ".id) <= (" c   \
    ", 9223372036854775807)"
#define LOADER_UPTO_SWEEP(q, c, upto)                                                              \
    "(" q ".campaign_id, " q ".id) >= (" c ", 0) AND (" q ".campaign_id, " q ".id) <= (" c         \
    ", " upto ")"
/* FROM and WHERE of the fresh rows (f.id, f.attempts) in the ranges of
 * node's claims (alias k): a range scan of recipient's primary key per
 * claim (LATERAL, kept apart by OFFSET 0). As a join, `q.campaign_id =
 * k.campaign_id AND q.id BETWEEN k.lo AND k.hi`, PostgreSQL scanned every
 * row of the campaign for those still fresh, then matched them to the
 * claims (70-100 ms for 300,000, at every stop and start). */
#define LOADER_FRESH_IN_CLAIMS(node)                                                               \
    "ringmail.claim k CROSS JOIN LATERAL (SELECT q.id, q.attempts FROM ringmail.recipient q"       \
    " WHERE q.campaign_id = k.campaign_id AND q.id BETWEEN k.lo AND k.hi"                          \
    " AND q.state = 'queued' AND q.next_attempt_at IS NULL OFFSET 0) f"                            \
    " WHERE k.node = " node " AND k.lo IS NOT NULL"

/* ---- loader.c ---- */

/* loader_signal - tell the loop: the eventfd, and the notify callback */
void loader_signal(struct loader *l);
/* loader_wait_on - wait on cv (mu held) for ms at most */
void loader_wait_on(pthread_mutex_t *mu, pthread_cond_t *cv, unsigned ms);

/* ---- loader_sql.c: the statements and the connections ---- */

enum {
    LOADER_SQL_SWEEP,
    LOADER_SQL_CLAIM_DUE,
    LOADER_SQL_CLAIM_EXPIRED,
    LOADER_SQL_RESULTS,
    LOADER_SQL_CLAIMS_DONE,
    LOADER_SQL_ARM,
    LOADER_SQL_SUPPRESS,
    LOADER_SQL_SOFT_BOUNCES,
    LOADER_SQL_SESSIONS,
    LOADER_NSQL
};

/* loader_prepared - run prepared statement `which`; NULL + err unless want */
PGresult *loader_prepared(PGconn *c, int which, const char *const *params, ExecStatusType want,
                          char *err, size_t errlen);
/* loader_query - run sql with n text parameters; NULL + err unless want */
PGresult *loader_query(PGconn *c, const char *sql, int n, const char *const *params,
                       ExecStatusType want, char *err, size_t errlen);
/* loader_up - 1 while c is connected */
int loader_up(PGconn *c);
/* loader_connect - connection which (0 claimer, 1 writer, 2 heartbeat) up,
 * schema checked and statements prepared; 0, or -1 + err */
int loader_connect(struct loader *l, int which, char *err, size_t errlen);
/* loader_disconnect - close connection which and say it is down */
void loader_disconnect(struct loader *l, int which);
/* loader_keep_up - connect which again if it is gone (at most once per
 * retry interval, *next_connect); 1 when it is up */
int loader_keep_up(struct loader *l, int which, uint64_t *next_connect);
/* loader_count_db_error - one more database error in the stats */
void loader_count_db_error(struct loader *l);
/* loader_strdup_or_null - a copy of a result cell, NULL for SQL NULL */
char *loader_strdup_or_null(PGresult *r, int row, int col);
/* loader_ids_add - id into the bigint array literal b (n: ids so far) */
void loader_ids_add(buf_t *b, size_t *n, int64_t id);
/* loader_ids_end - close the array literal b of n ids; its text */
const char *loader_ids_end(buf_t *b, size_t n);

/* ---- loader_results.c: results packed, written, the writer thread ---- */

/* The fixed header of a packed result; its strings follow, each with its NUL. */
struct loader_rec {
    int64_t id;
    uint64_t arm_seq;
    uint64_t conn_id;
    double retry_in_s;
    uint32_t len; /* the whole record */
    uint32_t attempt;
    int32_t final, code, connect_ms, tls_ms, transaction_ms, tls, tls_resumed, data_in_flight;
    int32_t suppress, soft_bounce, conn_first;
};

/* Session ids (schema 9): each process takes a block of 2^40
 * (ringmail.session_block); a connection's session is the block plus the
 * connection's number, below LOADER_SESSION_LONE; an attempt no connection
 * carried is a session of its own, numbered above it. */
#define LOADER_SESSION_LONE (1ULL << 39)
#define LOADER_SESSION_ARRAYS 17 /* LOADER_SQL_SESSIONS's arrays */

/* loader_pack - r appended to b as one record */
void loader_pack(buf_t *b, const struct loader_result *r);
/* loader_unpack - the record at p into r; its length */
size_t loader_unpack(const char *p, struct loader_result *r);
/* loader_write - the packed results in one transaction on c; 0, or -1
 * (nothing written) */
int loader_write(struct loader *l, PGconn *c, const buf_t *packed, char *err, size_t errlen);
/* loader_writer - the writer thread */
void *loader_writer(void *arg);

/* ---- loader_claims.c ---- */

/* loader_claimer - the claimer thread */
void *loader_claimer(void *arg);

/* ---- loader_node.c: the node, the heartbeat thread, arms ---- */

/* Fresh rows above the sweep are counted exactly at most this often (or
 * LOADER_FRESH_COST times the last exact count's time); in between, the
 * sweep's running total of rows claimed (by every node) says how many were
 * taken since. The recount only catches rows added meanwhile (an import
 * into a running campaign), and it reads every fresh row: every 10 s it
 * was two thirds of the count's work in a 300,000-row campaign, 0.5 us of
 * PostgreSQL CPU per recipient. The first exact count is the campaign's
 * status read at start (loader_start_counts). */
#define LOADER_FRESH_RECOUNT_MS 60000
#define LOADER_FRESH_COST 1000

/* What the previous incarnation of this node left: its host (is our
 * journal its journal?) and campaign (its claims there are ours to settle). */
struct loader_prev {
    int exists;
    char host[256];
    int64_t campaign;
};

/* loader_register - become the node's live incarnation; 0, or -1 + err */
int loader_register(struct loader *l, struct loader_prev *prev, char *err, size_t errlen);
/* loader_heart - the heartbeat thread */
void *loader_heart(void *arg);
/* loader_arm_find - the open arm seq, NULL if none (under amu) */
struct loader_arm_seq *loader_arm_find(struct loader *l, uint64_t seq);
/* loader_arm_collect - committed seqs with no result left move to arm_done
 * (under amu) */
void loader_arm_collect(struct loader *l);

/* ---- loader_journal.c: the crash journal ---- */

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

/* loader_journal_init - j knows its path, holds no file yet (fd -1) */
void loader_journal_init(struct loader_journal *j, const char *path);
/* loader_journal_open - open (create) the file for appending; 0, or -1 + err */
int loader_journal_open(struct loader_journal *j, char *err, size_t errlen);
/* loader_journal_lock - lock the file: one process per node on this host;
 * 0, or -1 + err (naming node when another process holds it) */
int loader_journal_lock(struct loader_journal *j, const char *node, char *err, size_t errlen);
/* loader_journal_free - close the file, free the live lines */
void loader_journal_free(struct loader_journal *j);
/* loader_journal_body - "D id": recipient id's body is about to go out */
void loader_journal_body(struct loader_journal *j, int64_t id);
/* loader_journal_result - "R id attempt ...": r's outcome */
void loader_journal_result(struct loader_journal *j, const struct loader_result *r);
/* loader_journal_committed - the packed results in batch are committed:
 * their lines are dead; compact the file when it is worth it */
void loader_journal_committed(struct loader_journal *j, const buf_t *batch);
/* loader_journal_compact - replace the file by the live lines (under j->mu);
 * 0, or -1 (the file is left as it was) */
int loader_journal_compact(struct loader_journal *j);
/* loader_held_cmp - held recipients by id (qsort, bsearch) */
int loader_held_cmp(const void *a, const void *b);
/* loader_journal_fold - one journal line into held (n of them, sorted by
 * id): that recipient's last state is now this line's */
void loader_journal_fold(const char *line, struct loader_held *held, size_t n, const char *node);
/* loader_journal_read - every line of the file at path, in order, into held */
void loader_journal_read(const char *path, struct loader_held *held, size_t n, const char *node);

/* ---- loader_recover.c ---- */

/* What a recovery does with a recipient this node still holds. */
enum loader_settle {
    LOADER_SETTLE_REQUEUE,   /* no body went out since its claim: `queued` again */
    LOADER_SETTLE_RESULT,    /* an outcome newer than the database's: written */
    LOADER_SETTLE_AMBIGUOUS, /* a body went out, no outcome after it: `ambiguous` */
    LOADER_SETTLE_LEAVE,     /* ambiguous already (a takeover): stays so */
};

/* loader_settle - the verdict on h; trusted: the journal is this node's */
enum loader_settle loader_settle(const struct loader_held *h, int trusted);
/* loader_recover - settle what this node still holds; 0, or -1 + err */
int loader_recover(struct loader *l, const struct loader_prev *prev, char *err, size_t errlen);

#endif
