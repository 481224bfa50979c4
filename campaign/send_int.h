/*
 * send_int - what the files of `ringmail send` share; private to them.
 *
 * One object, struct send, allocated by send_main and passed to every
 * step; no file keeps state of its own. The files:
 *
 *   send.c           send_main: parse, set up, run, stop, report; the
 *                    pool's result callback, which both modes share
 *   send_options.c   the command line and --help
 *   send_list.c      list mode: the recipient file, --message, the
 *                    suppression set, --records
 *   send_campaign.c  campaign mode: the loader and the render workers feed
 *                    the pool, results go back to PostgreSQL, the stop
 *   send_status.c    signals (reload, stop, the stop's guard thread), the
 *                    status line and /metrics
 *   send_report.c    the summary: the per-ISP table, or one JSON object
 *
 * `ringmail campaign test` (campaign_test.c) delivers its seed messages
 * through the same pool with send_prepared_run: list mode fed with
 * messages it rendered, each one attempt (a deferral is not retried).
 */
#ifndef RINGMAIL_SEND_INT_H
#define RINGMAIL_SEND_INT_H

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "campaign/feedback.h"
#include "campaign/loader.h"
#include "campaign/prepare.h"
#include "campaign/render.h"
#include "engine/buf.h"
#include "engine/loop.h"
#include "pool/config.h"
#include "pool/deliver.h"
#include "pool/metrics.h"

#define SEND_MAX_SOURCES 64
#define SEND_MAX_ISPS 256

/* Results not yet committed (about 2 KB each) before feeding pauses: a
 * bound on memory while PostgreSQL is slow or away. Two writer batches. */
#define SEND_BACKLOG_MAX 10000
#define SEND_TAKE_MAX 256 /* recipients taken into the pool at once */

/* A stop ends within this long of the first SIGINT/SIGTERM: what is in
 * flight may finish and results are written until shortly before it
 * (SEND_STOP_DB_MS); past it, or at a second signal, the process ends at
 * once. Nothing is lost either way: every body that went out and every
 * outcome is in the node's journal before anything else happens to it. */
#define SEND_STOP_MS 10000
#define SEND_STOP_DB_MS 9000

struct send_options {
    const char *recipients;
    const char *message_path; /* one body for every recipient (RCPT batching) */
    const char *config_path;
    const char *resolver;
    const char *relay;
    const char *relay_user;
    const char *relay_password_file;
    const char *ca_file;
    const char *from;
    const char *helo;
    const char *records_path;
    const char *suppress_path;
    const char *metrics_addr;
    const char *db_url; /* campaign mode */
    const char *node;
    const char *journal;
    long long campaign;
    unsigned batch, lease_s;
    int resend_ambiguous;
    const char *sources[SEND_MAX_SOURCES];
    size_t nsources;
    unsigned mx_port;
    unsigned mta_sts_port; /* --mta-sts-port (tests) */
    unsigned size;
    int size_set;
    unsigned window;
    int render_threads; /* campaign mode; -1: one per core */
    unsigned timeout_ms;
    unsigned max_connections;
    int relay_implicit_tls;
    int tls_override;
    enum smtp_tls_policy tls;
    int json;
    int verbose; /* --verbose: engine/trace.h's lines on stderr */
    /* no MTA-STS or DANE (pool_options.dest_policy_off): `ringmail tlsrpt
     * --send`, whose reports carry TLS-Required: No (RFC 8689); no option */
    int dest_policy_off;
};

struct send_msg {
    struct pool_msg m;
    char *rcpt;       /* owned */
    buf_t body;       /* owned */
    int64_t id;       /* campaign mode: the recipient row */
    uint64_t arm_seq; /* campaign mode: its arm (loader_arm), 0 before one was asked for */
    /* [feedback]: MAIL FROM b-TOKEN@return_path, this recipient's own (so
     * the pool never puts two of them in one transaction) */
    char verp[FEEDBACK_LOCAL_MAX + CONFIG_DOMAIN_MAX + 1];
};

/* A message rendered by the caller (send_prepared_run) and what became of it. */
struct send_prepared {
    const char *rcpt;  /* borrowed */
    const buf_t *body; /* borrowed: the whole message */
    /* out: its attempt (done 0: never attempted, the run was stopped) */
    int done;
    enum smtp_outcome outcome;
    char word[16];   /* "accepted", "rejected", "deferred", "failed", "ambiguous" */
    char reason[64]; /* "accepted", "rcpt_rejected", "connect_failed" ... */
    int code;        /* 0: no reply */
    char enhanced[16];
    char reply[512];
    char mx[256];
    char tls_version[32], tls_cipher[128]; /* "" without TLS */
};

struct send_set { /* suppression list: open addressing on lower-case addresses */
    char **slots;
    size_t cap, n;
};

struct send_totals {
    unsigned long recipients, accepted, rejected, failed, expired, suppressed, invalid, ambiguous;
    unsigned long attempts, deferrals;
    unsigned long bounce_categories[BOUNCE_CATEGORIES]; /* final rejections by category */
};

/* The live view (send_status.c): what the status line shows and how it
 * counts. */
#define SEND_VIEW_STREAKS 64 /* ISPs followed for deferrals that will keep coming */
#define SEND_VIEW_SAMPLES 30 /* seconds of finals behind the ETA */

/* An ISP whose deferrals since its last other outcome all had one reason
 * that no retry fixes (tls_verify_failed ...). */
struct send_streak {
    char isp[64];
    char reason[48]; /* "" : the last outcome was not such a deferral */
    unsigned long n;
};

struct send_term; /* the terminal's status block (send_status.c) */

struct send_view {
    struct send_term *term; /* stderr is a terminal (not --json): the block drawn there */
    uint64_t max_age_ms;    /* of the config in force: the loud line says it */
    /* distinct recipients: each address deferred in this run, so its later
     * attempts are not counted again (a claim after a deferral is the same
     * recipient); recipients counts the addresses attempted */
    struct send_set deferred;
    unsigned long recipients;
    struct send_streak streaks[SEND_VIEW_STREAKS];
    size_t nstreaks;
    /* the tick: msgs/s over the last second, finals over the last samples */
    uint64_t last_tick_ms, last_line_ms;
    unsigned long last_attempts;
    double msgs_rate;
    uint64_t sample_ms[SEND_VIEW_SAMPLES];
    unsigned long sample_final[SEND_VIEW_SAMPLES];
    size_t nsamples, sample_at;
    unsigned lines_printed;       /* stderr not a terminal: status lines printed */
    unsigned long long final_max; /* the most recipients shown final so far */
};

struct send;

struct send_watch {
    struct loop_op op;
    struct send *s;
    int fd;
    int armed;
};

struct send {
    struct send_options o;
    struct config *cfg;               /* until the pool takes it */
    struct bounce_rules bounce_rules; /* [bounce] of the config in force (a copy) */
    struct loop *loop;
    struct pool *pool;
    struct metrics *metrics;
    char **lines;         /* owned: the recipient list */
    size_t *line_numbers; /* owned: each one's line in --recipients (list mode's VERP id) */
    buf_t message;        /* --message: the body every recipient shares (owned) */
    size_t nlines, next;
    size_t inflight; /* in the pool */
    struct send_set suppressed;
    FILE *records, *suppress_out;
    struct send_totals t;
    /* [feedback] as the run started (a reload does not change the return
     * path or the secret); feedback.enabled 0: MAIL FROM is --from */
    struct config_feedback feedback;
    sigset_t sig_mask; /* SIGHUP, SIGINT, SIGTERM: blocked, read from sigfd */
    int sigfd;
    struct loop_op sig_op;
    int sig_armed;
    struct loop_timer status_timer;
    struct send_view view;
    int interrupted, finishing;
    int fenced; /* campaign mode: another node took this one over */
    int done;   /* campaign mode: the loader had nothing left when the loop ended */
    /* A stop's bound: the first SIGINT/SIGTERM at stop_at_ms (clock_ms,
     * which is loader_stop_by's clock too; 0: none yet); from then on the guard thread
     * takes the signals: a second one ends the process at once, and so
     * does SEND_STOP_MS passing. hurry_ms: the loader's deadline (atomic). */
    uint64_t stop_at_ms, hurry_ms;
    int signalled; /* a first SIGINT/SIGTERM came (atomic) */
    /* Who sent the first stop signal, and when: the same sender repeating
     * it at once is the same stop (see send_same_stop). */
    int first_sig, first_sig_pid;
    uint64_t first_sig_ms;
    sigset_t stop_mask;
    pthread_t guard;
    int guard_started;
    int guard_quit; /* send_guard_stop asks the guard to return (atomic) */
    char auth_pass[512];
    double t0;
    /* campaign mode */
    struct loader *loader;
    struct render_template *tpl;
    struct render_scratch scratch;
    struct prepare_token token; /* [feedback] unsubscribe_url: the templates' token */
    struct prepare *prep;       /* render workers (NULL: render on the loop thread) */
    struct sign_client *signer; /* owned: the DKIM signer processes (NULL: unsigned) */
    int sign_failed;            /* a signer failed: the run stops, nothing more is sent */
    struct send_watch loader_watch, prep_watch;
    char node_buf[128], journal_buf[512];
    /* campaign mode: the complaint guard's holds (send_hold.c) */
    struct send_hold *hold;
    /* send_prepared_run: the messages list mode sends (one each per line) */
    struct send_prepared *prepared;
    int64_t prepared_campaign; /* their VERP tokens name it, and recipient 0 (no row) */
    /* campaign mode: ISP suspensions kept in PostgreSQL (send_suspend.c) */
    struct send_suspend *suspend;
    /* campaign mode: the ISPs' limits shared by the cluster's nodes (send_cluster.c) */
    struct send_cluster *cluster;
    /* campaign mode: the MTA-STS cache and policy texts (sts_cache.c) */
    struct sts_store *sts_store;
    /* campaign mode: the life cycle (lifecycle.h). early_rc: the exit
     * status when the campaign is not to be sent (complete, cancelled,
     * interrupted before its start_at), -1 otherwise; paused: an operator
     * paused it (nothing is fed); cancelled: an operator cancelled it (the
     * run stops, exit 0). */
    int early_rc;
    int paused, cancelled;
};

/* send.c */
/* send_feed - top the pool up to --window from the list or the campaign */
void send_feed(struct send *s);

/* send_prepared_run - deliver msgs[0..n) (their rcpt and body) through
 * the pool with options o (--config, --relay, --tls ...), one attempt each
 * (a deferral is not retried), filling in what became of each; with
 * [feedback], MAIL FROM is b-TOKEN for (campaign, recipient 0). Returns
 * 0, 1 when stopped by a signal before the end, 2 on bad options or
 * config (the reason printed). No summary is printed. */
int send_prepared_run(const struct send_options *o, struct send_prepared *msgs, size_t n,
                      int64_t campaign);

/* send_options.c */
/* send_options_init - the defaults */
void send_options_init(struct send_options *o);
/* send_parse - argv into *o; -1 (the reason printed) on a bad command line */
int send_parse(int argc, char **argv, struct send_options *o);
/* Codes of the options another command adds to send's (send_parse_with). */
#define SEND_OPT_EXTRA 1000
/* send_parse_with - argv into *o for a command that takes send's options
 * and its own (EXTRA, codes from SEND_OPT_EXTRA up; first, so a name of
 * send's it repeats is its own), handed to on_extra (-1: refused, it said
 * why). Arguments that are not options are left from optind on; none of
 * send's checks of the whole line are made. -1 on a bad command line. */
int send_parse_with(int argc, char **argv, struct send_options *o, const struct option *extra,
                    int (*on_extra)(void *user, int ch, const char *arg), void *user);

/* send_list.c */
/* send_address_problem - NULL when addr is a deliverable address, else why not */
const char *send_address_problem(const char *addr);
/* send_files_open - read --recipients (list mode), --message and --suppress;
 * open --records; keep [feedback] of s->cfg. -1 (the reason printed) */
int send_files_open(struct send *s);
/* send_list_feed - list mode's send_feed */
void send_list_feed(struct send *s);
/* send_mail_from - m's MAIL FROM: with [feedback], b-TOKEN@return_path for
 * (campaign, recipient) in m->verp; else --from */
void send_mail_from(struct send *s, struct send_msg *m, uint64_t campaign, uint64_t recipient);
/* send_record - one --records line for an attempt */
void send_record(struct send *s, const char *rcpt, const struct pool_attempt *a,
                 const char *outcome);
/* send_bounce - the category of a rejected, deferred or expired attempt
 * into *out: 1, or 0 when there is none (a deferral without a reply) */
int send_bounce(const struct send *s, const struct pool_attempt *a, struct bounce_result *out);
/* send_bounce_category - send_bounce's category, or other */
enum bounce_category send_bounce_category(const struct send *s, const struct pool_attempt *a);
/* send_bounce_rule - b's rule as records and delivery rows say it:
 * "rfc3463: X.1.1 bad destination mailbox" */
void send_bounce_rule(const struct bounce_result *b, char *dst, size_t cap);
/* send_bounce_suppresses - a is a final rejection that condemns the
 * address: a hard bad-mailbox, bad-domain or inactive-mailbox bounce */
int send_bounce_suppresses(const struct send *s, const struct pool_attempt *a);
/* send_soft_bounce - a is a final soft bounce that counts toward [feedback]
 * soft_bounce_limit: a rejection classified soft (552 5.2.2), or an expiry
 * whose last reply is; never a policy, spam, content, routing or protocol
 * one (about the sender, not the mailbox) */
int send_soft_bounce(const struct send *s, const struct pool_attempt *a);
/* send_list_bounce - a final failure for rcpt: suppressed (the set and
 * --suppress) when it condemns the address; in list mode also a soft
 * bounce at soft_bounce_limit, counted within the run */
void send_list_bounce(struct send *s, const char *rcpt, const struct pool_attempt *a);
/* send_suppress - never send to rcpt again (this run, and --suppress) */
void send_suppress(struct send *s, const char *rcpt);
/* send_files_close - the list, the message, the set, the output files */
void send_files_close(struct send *s);

/* send_campaign.c */
/* send_campaign_start - the loader, the templates, the render workers; and
 * the pool's campaign hooks into *po */
int send_campaign_start(struct send *s, struct pool_options *po);
/* send_campaign_watch - feed the pool when the loader or the workers signal */
void send_campaign_watch(struct send *s);
/* send_campaign_feed - campaign mode's send_feed */
void send_campaign_feed(struct send *s);
/* send_attempt_words - an attempt's outcome word and the recipient state it leads to */
void send_attempt_words(const struct pool_attempt *a, const char **outcome, const char **state);
/* send_result_db - one attempt's result to the loader */
void send_result_db(struct send *s, struct send_msg *m, const struct pool_attempt *a,
                    const char *outcome);
/* send_campaign_stop - results written, claims released, within the stop's
 * bound; says so and returns the exit status (rc: the run's). May _exit. */
int send_campaign_stop(struct send *s, int rc);
/* send_campaign_free - the templates */
void send_campaign_free(struct send *s);

/* send_status.c */
/* send_signals_block - before any thread: signals only through the signalfd */
void send_signals_block(struct send *s);
/* send_signals_watch - the signalfd on the loop; -1 (reason printed) */
int send_signals_watch(struct send *s);
/* send_status_start - the status line, on a terminal without --json */
void send_status_start(struct send *s);
/* send_view_attempt - the live view counts one attempt of rcpt (from
 * send_record, which sees every attempt of both modes) */
void send_view_attempt(struct send *s, const struct pool_attempt *a);
/* send_view_config - the config in force now (at start, after a reload) */
void send_view_config(struct send *s, const struct config *cfg);
/* send_view_recipients - distinct recipients this run (campaign mode: with
 * the invalid ones and those suppressed at claim) */
unsigned long send_view_recipients(struct send *s);
/* send_metrics_start - --metrics; -1 (reason printed) */
int send_metrics_start(struct send *s);
/* send_warn_opportunistic - which ISPs may get mail in plaintext */
void send_warn_opportunistic(const struct send *s, const struct config *cfg);
/* send_stop - stop feeding; the loop ends once what is in flight is done */
void send_stop(struct send *s);
/* send_guard_start / send_guard_stop - the thread that bounds a stop */
void send_guard_start(struct send *s);
void send_guard_stop(struct send *s);

/* send_hold.c: the complaint guard in a running campaign */
/* send_hold_start - watch the campaign's ISP holds, park held mail (sets
 * po->on_held); -1 (reason printed) */
int send_hold_start(struct send *s, struct pool_options *po);
/* send_hold_quiet - the run is ending: no more ticks (send_stop) */
void send_hold_quiet(struct send *s);
/* send_hold_stop - the watcher's thread gone (before the loader's stop) */
void send_hold_stop(struct send *s);
/* send_hold_status - "paused by operator since 14:02:11 UTC" for the live
 * line into buf while the campaign is paused, else "" */
void send_hold_status(const struct send *s, char *buf, size_t n);
/* send_hold_json - the holds in force and what they parked, for --json */
struct json_t;
struct json_t *send_hold_json(const struct send *s);
/* send_hold_text - the summary's lines about holds */
void send_hold_text(const struct send *s);
/* send_hold_metrics - the guard's lines of /metrics */
void send_hold_metrics(const struct send *s, buf_t *out);

/* send_suspend.c: ISP suspensions kept in PostgreSQL (campaign mode) */
/* send_suspend_start - after the pool: apply the suspensions kept (said on
 * stderr), start the writer; 0 without --db; -1 (reason printed) */
int send_suspend_start(struct send *s);
/* send_suspend_note - the pool's on_suspend: queued for the writer */
void send_suspend_note(void *user, const char *isp, int64_t until_ms, const char *reason);
/* send_suspend_stop - what is queued written (within 3 s), the writer gone */
void send_suspend_stop(struct send *s);

/* send_thread_quit - a helper thread told to quit (*quit = 1 under lock,
 * cond broadcast) and waited for until *done, at most ms: 1 when it
 * returned (join it), 0 when it is stuck (in libpq: detach it). */
int send_thread_quit(pthread_mutex_t *lock, pthread_cond_t *cond, int *quit, const int *done,
                     unsigned ms);

/* send_cluster.c: many nodes, one sender (campaign mode) */
/* send_cluster_start - after the pool: the first shares read and applied
 * (before anything is sent), the beat thread started; 0, or -1 (said) */
int send_cluster_start(struct send *s);
/* send_cluster_backoff_note - the pool's on_backoff: for the other nodes */
void send_cluster_backoff_note(void *user, const char *isp, double factor, uint64_t pause_ms,
                               const char *why);
/* send_cluster_quiet - the loop's timer cancelled (the loop is ending) */
void send_cluster_quiet(struct send *s);
/* send_cluster_json - "cluster": beats, failures, each lane's share */
void send_cluster_json(struct send *s, struct json_t *out);
/* send_cluster_stop - the thread gone, this node's demand rows deleted */
void send_cluster_stop(struct send *s);
/* sts_cache.c (campaign mode): the MTA-STS policy cache in PostgreSQL
 * (po->sts_shared) and the policy texts for TLS-RPT (po->on_tls_policy). */
struct sts_job;
int send_sts_start(struct send *s, struct pool_options *po);
void send_sts_shared(void *user, struct sts_job *job);
void send_tls_policy_note(void *user, const char *type, const char *domain, const char *policy_id,
                          const char *text);
/* send_sts_stop - after pool_free (its fetcher thread uses the cache) */
void send_sts_stop(struct send *s);

/* send_report.c */
/* send_report - the summary on stdout: the per-ISP table, or one JSON object */
void send_report(struct send *s, double wall);

#endif
