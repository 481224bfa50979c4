/*
 * loader - the campaign's database side: claims recipients, writes results
 *
 * Two threads of its own, each with its own PostgreSQL connection (the
 * claimer and the results writer), so the delivery loop never waits on
 * the database and claims never wait for result commits; they meet the
 * loop at bounded queues and an eventfd the loop polls on its ring.
 *
 * Claims: batches of due recipients (`deferred` whose next_attempt_at has
 * come, or `queued` again) move to `claimed` with the node as lease owner
 * in one statement using FOR UPDATE SKIP LOCKED; fresh ones (never
 * attempted) are claimed by range, one ringmail.claim row per batch and
 * the campaign's sweep moved past it, no recipient row written (schema 8,
 * loader_claims.c). Several processes share a campaign with no
 * coordinator but PostgreSQL.
 *
 * Nodes: one process per node name. At start the journal is locked
 * (flock) and the process becomes the node's incarnation in ringmail.node,
 * refused while another live process is that node. A third thread with a
 * connection of its own renews the node's lease every half lease (default
 * 10 s), so a blocked results writer or a locked recipient table cannot
 * make a live node look dead; it also takes over nodes whose lease ran out
 * (within LOADER_DEAD_CHECK_MS of that), never its own node.
 *
 * Arms: before a recipient's body may go out, its id is committed to
 * ringmail.armed (loader_arm, then loader_armed says yes), checked against
 * the node's incarnation. A takeover makes the dead node's armed claims
 * `ambiguous` (their bodies may have reached a server) and queues the rest
 * again; an arm of a node that was taken over fails, so it sends nothing.
 *
 * Results: every attempt becomes a delivery row (with the bounce
 * classifier's category, hard or soft, and rule for a failure), and the
 * recipient's state follows (sent, deferred with next_attempt_at, bounced,
 * failed, expired, invalid). A hard bounce that condemns the mailbox joins the
 * suppression list (kind 'bounce'); a final soft bounce is a
 * ringmail.feedback_event row, and the address joins the list (kind
 * 'soft-bounces') once soft_bounce_limit of them fall within
 * soft_bounce_window (see loader_results.c). Results are written with COPY in one
 * transaction at least every second. If PostgreSQL goes away, results
 * wait in memory (the loop stops feeding new work past a bound) and are
 * written when it is back; nothing is dropped. A result lands while the
 * recipient is still this node's (`claimed`, or `ambiguous` after a
 * takeover: the late result settles it).
 *
 * Crashes: just before a message's body goes out, the loop appends its id
 * to the node's journal file (journal_mark), and each outcome follows it.
 * At start, recipients this node still holds are recovered from the
 * journal read in order, the last line of each deciding: an outcome not
 * yet in the database is written; a body going out with no outcome after
 * it is `ambiguous` (`--resend-ambiguous` queues it instead); the rest go
 * back to `queued`. Only a recipient's last line counts, so once the file
 * is large and mostly about committed results it is rewritten with the
 * live lines only (FILE.compact, locked, renamed over FILE: the node's lock
 * moves with it; a kill -9 at any point leaves a whole journal).
 *
 * Stops: loader_stop_by has a deadline; database threads still blocked in
 * libpq then are left behind (nothing freed) and what was not written
 * stays in the journal for the next start. Connections run with statement
 * and lock timeouts (db.h adds connect_timeout and TCP keepalives).
 */
#ifndef RINGMAIL_LOADER_H
#define RINGMAIL_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "campaign/pq.h"
#include "pool/bounce.h"

#define LOADER_TEXT_MAX 512
#define LOADER_RULE_MAX (BOUNCE_PATTERN_MAX + 32) /* "source: rule", as --records says it */

struct loader;

struct loader_rcpt {
    int64_t id;
    char *address; /* owned by the receiver after loader_take (free) */
    char *vars;    /* JSON object text, owned likewise */
    unsigned attempts;
    double age_s; /* since the first attempt, 0 before */
};

struct loader_result {
    int64_t recipient_id;
    uint64_t arm_seq; /* loader_arm's answer for it, 0 if never armed */
    unsigned attempt;
    char outcome[16]; /* accepted, deferred, rejected, failed, expired */
    int final;
    char state[16]; /* the recipient's new state */
    double retry_in_s;
    char reason[48];
    int code;
    char enhanced[16];
    char text[LOADER_TEXT_MAX];
    char isp[64], mx[256], peer[64], source[64];
    int connect_ms, tls_ms, transaction_ms; /* -1 unknown */
    int tls;                                /* 0: no TLS facts */
    char tls_version[16], tls_cipher[64], tls_group[32], tls_verify[96];
    int tls_resumed;
    char peer_subject[256], peer_issuer[256], peer_sha256[65];
    int data_in_flight;
    int conn_first;   /* the first attempt its connection carried (delivery.conn_first) */
    uint64_t conn_id; /* its connection's number in this process (pool_attempt), 0: none */
    /* The bounce classifier's word on a failed attempt ("" for an accepted
     * one, or a deferral without a reply): category ("bad-mailbox" ...),
     * bounce ("hard" or "soft") and bounce_rule ("rfc3463: X.1.1 ..."). */
    char category[24], bounce[8], bounce_rule[LOADER_RULE_MAX];
    /* The destination TLS policy (pool/tlspolicy.h; delivery.tls_policy,
     * tls_policy_mode, tls_policy_id, tls_result): "" when none. */
    char tls_policy[12], tls_policy_mode[16], tls_policy_id[72], tls_result[32];
    int suppress;    /* a hard bounce that condemns the address (bounce_suppresses) */
    int soft_bounce; /* a final soft bounce that counts toward soft_bounce_limit */
};

struct loader_campaign {
    int64_t id;
    char *name, *mail_from, *subject, *text_body, *html_body, *list_unsubscribe, *feedback_id;
    char *dkim_domain, *dkim_selector, *dkim_selector2; /* NULL when unset */
    char *from_name, *reply_to;                         /* NULL when unset */
    /* A DKIM key is stored (dkim_key, dkim_key2): never read here, only by
     * the signer processes (campaign/sign_client.h). */
    int has_dkim_key, has_dkim_key2;
};

/* Campaign id's row on c into *out (its strings owned): 0; 1 when there is
 * no such campaign; -1 + err on a database error. What the loader reads,
 * for `campaign test` and `campaign preview` too. */
int loader_campaign_read(PGconn *c, int64_t id, struct loader_campaign *out, char *err,
                         size_t errlen);
/* The strings of a loader_campaign_read. */
void loader_campaign_free(struct loader_campaign *c);

struct loader_options {
    const char *url;
    int64_t campaign;
    const char *node;
    const char *journal_path;
    unsigned batch;   /* rows per claim (default 500) */
    unsigned lease_s; /* the node's lease (default 10): renewed every half */
    int resend_ambiguous;
    /* [feedback]: an address whose soft bounces (ringmail.feedback_event)
     * within soft_bounce_window_ms reach soft_bounce_limit is suppressed;
     * limit 0: soft bounces are recorded, never suppress. */
    unsigned soft_bounce_limit;
    uint64_t soft_bounce_window_ms;
};

struct loader_stats {
    uint64_t claimed, written, flushes, db_errors, reconnects;
    uint64_t recovered_queued, recovered_ambiguous, recovered_results;
    uint64_t suppressed; /* found on the suppression list at claim time */
    uint64_t taken_over_nodes, taken_over_queued, taken_over_ambiguous;
    uint64_t arms, armed; /* arm statements, recipient ids armed */
    uint64_t journal_compactions;
    uint64_t claims;   /* claim statements */
    uint64_t claim_us; /* time in them, round trip included */
    uint64_t write_us; /* time in result commits, round trip included */
    size_t backlog;
    int db_up;
};

/* The campaign in the database, for the live line and /metrics: counted
 * at start (total and final: the campaign's status, loader_start_counts) and then every few seconds
 * by the heartbeat thread through the due index (cheap: queued and deferred rows only), never on
 * the loop. */
struct loader_counts {
    int known;               /* the periodic count has come back at least once */
    uint64_t total;          /* the campaign's recipients, at start */
    uint64_t final_at_start; /* of them in a final state at start */
    uint64_t unclaimed;      /* queued or deferred (not final, not claimed) at the last count */
    uint64_t waiting;        /* deferred with next_attempt_at in the future */
    uint64_t next_at_ms;     /* loader_now_ms() when the first of them is due; 0: none */
};

/* loader_start_counts - the counts at start, from the campaign's status
 * read once the recovery is done (life_read: one scan of its rows): its
 * recipients, how many were final, the fresh ones above the sweep and the
 * sweep's running total in the same snapshot (the periodic count goes on
 * from these) */
void loader_start_counts(struct loader *l, uint64_t total, uint64_t final, uint64_t fresh,
                         uint64_t swept);
/* Connects, recovers this node's leases, loads the campaign. NULL + err. */
struct loader *loader_start(const struct loader_options *o, char *err, size_t errlen);
/* Flush every result (waiting for the database as long as it takes unless
 * give_up_ms passes), release unsent claims back to `queued`, join, free. */
int loader_stop(struct loader *l, unsigned give_up_ms);

/* What a bounded stop did. */
struct loader_stop_info {
    size_t unwritten;   /* results not known to be committed: in the journal, for the next start */
    long long requeued; /* claims that went back to `queued` (committed); -1: not done */
    int abandoned;      /* a database thread was still blocked at the deadline: nothing was
                         * freed; the process must end with _exit (after fflush) */
};
/* loader_stop bounded by an absolute deadline (loader_now_ms clock), which
 * *hurry (0: none; read atomically, another thread may set it) can bring
 * forward. Results are waited for until shortly before it; threads still
 * blocked in libpq then (a database that stopped answering) are left
 * behind, and nothing held is released: the journal and the node's lease
 * settle it. 0 when everything was written and released. */
int loader_stop_by(struct loader *l, uint64_t deadline_ms, const uint64_t *hurry,
                   struct loader_stop_info *info);
/* The clock of loader_stop_by's deadline (CLOCK_MONOTONIC, ms). */
uint64_t loader_now_ms(void);
/* An eventfd, readable when claimed recipients are ready or the state
 * changed (read it to reset it before looking at the queues). */
int loader_fd(const struct loader *l);
/* Also call fn(arg) (on a database thread, holding no loader lock) when
 * claimed recipients are ready or the state changed; fn NULL: stop. */
void loader_set_notify(struct loader *l, void (*fn)(void *), void *arg);
/* Up to max claimed recipients, without blocking. */
size_t loader_take(struct loader *l, struct loader_rcpt *out, size_t max);
/* The loop can take this many more, counting the claimed recipients not
 * yet taken (the loader claims up to it). */
void loader_want(struct loader *l, size_t n);
/* Queue one attempt's result (copied). */
void loader_result(struct loader *l, const struct loader_result *r);
/* Results not yet committed. */
size_t loader_backlog(struct loader *l);
/* 1 when nothing is left to claim now or later and every result is written. */
int loader_exhausted(struct loader *l);
void loader_stats(struct loader *l, struct loader_stats *out);
const struct loader_campaign *loader_campaign(const struct loader *l);
/* The last counts of the campaign in the database (see struct loader_counts). */
void loader_counts(struct loader *l, struct loader_counts *out);
/* 1 once this loader marked its campaign done (every recipient final),
 * with the status_reason it wrote ("all 5000 recipients final: 4990 sent,
 * 10 bounced") in why. */
int loader_life_done(struct loader *l, char *why, size_t n);
/* The body of this recipient is about to be sent (crash journal). */
void loader_journal_mark(struct loader *l, int64_t id);
/* Ask for recipient id to be armed (committed as possibly sent before its
 * body goes out); returns the arm's sequence number. */
uint64_t loader_arm(struct loader *l, int64_t id);
/* Arms asked for are gathered into one statement for up to
 * LOADER_ARM_GATHER_MS (loader_node.c); asking LOADER_ARM_AHEAD_MS of a
 * destination's transactions ahead (the pool's may_send_ahead_ms) lets
 * one statement arm them all before any waits, however quick the
 * server. */
#define LOADER_ARM_GATHER_MS 20
#define LOADER_ARM_AHEAD_MS (LOADER_ARM_GATHER_MS + 10)
/* 1 when arm seq is committed and the node's lease is good: the body may
 * go out now. 0: the loader's eventfd is signalled at the next arm commit.
 * Lock-free (called for every transaction). */
int loader_armed(struct loader *l, uint64_t seq);
/* 1 while the node's lease is good (its heartbeat gets through) and no
 * other node took it over. */
int loader_lease_ok(struct loader *l);
/* 1 once another node took this one over (why: the message): send nothing
 * more and stop. */
int loader_fenced(struct loader *l, char *why, size_t n);

/* ---- ISP holds: the complaint guard's other half (campaign/loader_holds.c) ----
 *
 * ringmail.isp_hold rows (written by the feedback store when an ISP's
 * complaint rate for the campaign passes [feedback] complaint_pause, or by
 * `ringmail campaign pause ID --isp NAME`; lifted by `ringmail campaign
 * resume ID --isp NAME`) and the campaign's status (paused, cancelled) are
 * read by a thread with a connection of its own, at start and then every
 * LOADER_HOLDS_POLL_MS. Recipients claimed for a held ISP leave the loop
 * unattempted (loader_holds_park): they stay this node's claims, costing
 * only their id, and go back to `queued` once their ISP is no longer held
 * (or at the loader's stop, with every other unattempted claim). */
#define LOADER_HOLDS_POLL_MS 1000
#define LOADER_HOLDS_MAX 64

struct loader_hold {
    char isp[64];
    char reason[320];
    char since[40]; /* held_at, "2026-05-01 10:00:00 UTC" */
};

/* The campaign's status as the holds thread last read it (the same poll,
 * the same generation as the holds): an operator's pause or cancel
 * (`ringmail campaign pause|cancel ID`) reaches a running send so. */
struct loader_life {
    char status[16];  /* draft, scheduled, running, paused, done, cancelled */
    char reason[320]; /* status_reason, "" when none */
    char since[40];   /* status_at, "14:02:11 UTC" */
};

struct loader_holds;

/* Start watching l's campaign's holds (read once before it returns); NULL + err. */
struct loader_holds *loader_holds_start(struct loader *l, char *err, size_t errlen);
/* The holds as last read, at most max into out; how many there are. *gen
 * changes whenever the set or the campaign's status changes. */
size_t loader_holds_get(struct loader_holds *h, struct loader_hold *out, size_t max, uint64_t *gen);
/* The campaign's status as last read (of the generation loader_holds_get
 * says). While it is paused or cancelled every ISP counts as held: parked
 * recipients stay parked. */
void loader_holds_life(struct loader_holds *h, struct loader_life *out);
/* The loop applied the holds of generation gen: parked recipients of ISPs
 * not held then go back to the queue (not before: the loop would park them
 * again). */
void loader_holds_applied(struct loader_holds *h, uint64_t gen);
/* Recipient id (arm_seq: its arm, 0 if none) left the loop, never attempted,
 * because isp is held: its claim is kept until isp is released. */
void loader_holds_park(struct loader_holds *h, int64_t id, uint64_t arm_seq, const char *isp);
/* Parked now, and sent back to `queued` so far. */
void loader_holds_counts(struct loader_holds *h, size_t *parked, uint64_t *requeued);
/* Stop the thread (bounded: one blocked in libpq is left behind) and free;
 * before loader_stop, which queues what is still parked. */
void loader_holds_stop(struct loader_holds *h);

#endif
