/*
 * deliver - the delivery pool: routing, per-destination queues, connection
 * pools, per-(source address, ISP) throttles, reply rules and retries
 *
 * The owner submits messages (one recipient each); the pool finds the
 * recipient domain's mail exchangers (DNS on the loop, a static route, or
 * the relay smarthost), classifies the destination's ISP, queues the
 * message on its destination and opens connections when the ISP's lane
 * allows: fewer than max_connections open, a connection token, not paused
 * by backoff or suspension, not held (pool_isp_hold). A connection takes messages from its
 * destination while the lane's message bucket has tokens; without one it
 * stays open and idle until the bucket refills. Every attempt's outcome
 * goes back through on_result: temporary failures are scheduled again by
 * the retry schedule (and expire at max_age), permanent ones are final.
 *
 * MX fallback: a connection that fails before any transaction (refused,
 * timed out, 421 or 5xx greeting, TLS policy) marks its address down for
 * 30 s and the next connection tries the next address in MX order; only
 * when every address of the destination is down are the waiting messages
 * deferred, one attempt each. Reply rules of the ISP (config) turn
 * matching replies into backoff, suspension or a bounce.
 *
 * One pool per loop, single-threaded. Configuration reloads (pool_reload)
 * apply to new connections and message tokens at once.
 */
#ifndef RINGMAIL_DELIVER_H
#define RINGMAIL_DELIVER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/buf.h"
#include "engine/loop.h"
#include "engine/smtp_client.h"
#include "engine/tls.h"
#include "pool/config.h"
#include "pool/dns.h"

struct pool;
struct pool_dest;
struct sts_job;

struct pool_msg {
    const char *rcpt;      /* owned by the submitter, like mail_from and data */
    const char *mail_from; /* "" is the null sender */
    const char *data;
    size_t len;
    unsigned attempts; /* attempts made so far (the pool counts) */
    uint64_t first_ms; /* loop clock at the first submission (max_age counts from it) */
    void *user;
    /* pool-private */
    char *rcpt_ascii; /* owned: rcpt with its IDN domain as A-labels (ASCII local part) */
    uint64_t due_ms;
    int heap_index; /* in the retry heap; -1 when not */
    struct pool_msg *next;
    struct pool_dest *dest;
};

struct pool_attempt {
    enum smtp_outcome outcome; /* ACCEPTED, DEFERRED, REJECTED or FAILED */
    int final;                 /* no further attempt will be made */
    int expired;               /* deferred past max_age */
    int ambiguous;             /* the body went out and no trustworthy reply came: final (the
                                * server may have it; never sent again on its own) */
    int released;              /* the pool let go of m (final, or external_retry) */
    const char *reason;        /* "accepted", "rcpt_rejected", "null_mx", "dns_tempfail" ... */
    int code;                  /* the server's reply code, 0 when none */
    const char *enhanced;
    const char *text;
    const char *isp;
    const char *mx;             /* exchanger host name, "" before any connection */
    const char *addr;           /* "ip:port" */
    const char *source;         /* local address bound, "" when the kernel chose */
    const struct tls_info *tls; /* NULL: no TLS on that connection (or no connection) */
    unsigned attempt;           /* 1 for the first */
    uint64_t retry_in_ms;       /* deferred, not final: when the next attempt is due */
    int data_in_flight;         /* the body went out and no final reply came back */
    const char *rule;           /* the reply rule that matched, or NULL */
    int connect_ms, tls_ms;     /* of the connection that carried it; -1 without one */
    int transaction_ms;         /* MAIL to the final reply; -1 when none started */
    int conn_first;             /* the first attempt its connection carried (so attempts with
                                 * conn_first count connections, and TLS handshakes) */
    unsigned long conn_id;      /* its connection's number in this process (the trace lines'),
                                 * 0 without one */
    /* The destination TLS policy that applied (pool/tlspolicy.h); NULL when
     * none was decided (no exchanger found). */
    const char *tls_policy;      /* "dane", "mta-sts" or "config" */
    const char *tls_policy_mode; /* "enforce", "testing", or the configured policy's name */
    const char *tls_policy_id;   /* MTA-STS id or TLSA set hash; "" for config */
    const char *tls_result;      /* RFC 8460 result type when the policy was not met, else NULL */
};

/* After a final attempt (or any attempt with external_retry) the pool lets
 * go of m (a->released): the submitter may free or resubmit it. */
typedef void (*pool_result_cb)(void *user, struct pool_msg *m, const struct pool_attempt *a);

/* The resolver the pool asks, as pool/dns.c's two lookups: each calls back
 * exactly once, possibly before it returns. A seam for tests (a fake
 * resolver); without one the pool runs pool/dns.c on its loop. */
struct pool_resolver {
    void (*mx)(void *ctx, const char *domain, dns_mx_cb cb, void *user);
    void (*addr)(void *ctx, const char *host, dns_addr_cb cb, void *user);
    void *ctx;
};

struct pool_options {
    struct config *config; /* the pool takes ownership */
    const char *resolver;  /* "ADDR:PORT", NULL: /etc/resolv.conf */
    unsigned mx_port;      /* port of MX hosts (default 25) */
    const char *relay;     /* "HOST:PORT": everything goes there; NULL: MX routing */
    int relay_implicit_tls;
    const char *auth_user; /* relay AUTH; NULL: none */
    const char *auth_pass;
    const char *ca_file; /* for tls = verify; NULL: the system bundle */
    int tls_override;    /* 1: every destination uses tls below */
    enum smtp_tls_policy tls;
    const char *helo;
    unsigned timeout_ms;        /* every protocol timeout; 0: defaults (30 s, DATA end 60 s) */
    const char *const *sources; /* overrides config sources when nsources > 0 */
    size_t nsources;
    unsigned max_connections; /* across the pool; 0: 1000 */
    pool_result_cb on_result;
    /* Optional: m's body is about to go out (the crash journal's moment). */
    void (*on_data)(void *user, struct pool_msg *m);
    /* Optional: may a transaction start for m, the head of its queue? 0:
     * not yet; the connection stays idle until pool_gate_open. With ask_only
     * the pool only announces that m comes soon (the answer is ignored):
     * each message once, in queue order, the messages behind the head, two
     * per connection of its destination, or as many as the destination
     * starts in may_send_ahead_ms (its rate over the last 100 ms), or its
     * connections' share of the pool's starts in may_send_ahead_ms,
     * whichever is most (at most 1024). */
    int (*may_send)(void *user, struct pool_msg *m, int ask_only);
    unsigned may_send_ahead_ms;
    /* 1: a deferral releases the message (retry_in_ms says when; the owner
     * stores it and submits it again), instead of the pool's retry heap. */
    int external_retry;
    /* Optional: m's ISP is held (pool_isp_hold): the pool lets go of m, never
     * attempted (no outcome, attempts unchanged), and the owner keeps it
     * elsewhere until the hold is lifted, so held mail never fills the
     * owner's window. Called from the pump: it must not call back into the
     * pool. NULL: held messages wait in their queues. */
    void (*on_held)(void *user, struct pool_msg *m, const char *isp);
    /* Optional: a suspend rule suspended isp until until_ms (CLOCK_REALTIME
     * milliseconds) for reason (the reply and the rule), to be kept across a
     * restart (pool_isp_suspend restores it). Called on the loop: no waiting. */
    void (*on_suspend)(void *user, const char *isp, int64_t until_ms, const char *reason);
    /* Optional: a backoff rule cut isp's rate on this node: the lane's
     * factor now (1.0 = full rate), paused for pause_ms, why (the reply and
     * the rule), for the other nodes of the cluster (pool_isp_backoff_adopt).
     * Called on the loop: no waiting. */
    void (*on_backoff)(void *user, const char *isp, double factor, uint64_t pause_ms,
                       const char *why);
    /* 1: no destination TLS policy is looked up (MTA-STS, DANE): every
     * destination uses the configured policy. RFC 8689's TLS-Required: No
     * (`ringmail tlsrpt --send`: a report about TLS failures must get
     * through them). */
    int dest_policy_off;
    /* Optional: a destination policy was applied whose text may be new:
     * type "sts" or "tlsa", the recipient domain, its id (tlsp.policy_id)
     * and its text (the MTA-STS policy, or the TLSA records one per line),
     * for tls_policy_text (TLS-RPT quotes it). Called on the loop, once per
     * (type, domain, id) in the pool's life: no waiting. */
    void (*on_tls_policy)(void *user, const char *type, const char *domain, const char *policy_id,
                          const char *text);
    /* MTA-STS (pool/sts_dest.c). mta_sts_port: the policy hosts' HTTPS port
     * (0: 443; tests). sts_shared, optional: the policy cache every node
     * shares (campaign mode: PostgreSQL), called with sts_user on the pool's
     * fetcher thread (it may block; never on the loop): answer the job from
     * the shared cache, or fetch with sts_fetch_run (pool/sts_fetch.h) and
     * keep what came. NULL: every policy is fetched (a memory cache only). */
    unsigned mta_sts_port;
    void (*sts_shared)(void *sts_user, struct sts_job *job);
    void *sts_user;
    void *user;
    /* Optional seams for tests. resolve: the lookups (NULL: pool/dns.c with
     * `resolver` above). clock: the pool's milliseconds for rates, backoff,
     * retries and address rest (NULL: the loop's monotonic clock); the
     * loop's timers keep the loop's clock. */
    const struct pool_resolver *resolve;
    uint64_t (*clock)(void);
};

struct pool_isp_stats {
    const char *name;
    uint64_t attempts, accepted, deferred, rejected, failed;
    uint64_t connections, tls_full, tls_resumed, tls_none, backoff_triggers;
    unsigned open;        /* connections open now */
    size_t queued;        /* messages waiting on this ISP's destinations */
    double rate_limit;    /* effective messages/s over all lanes, < 0 unlimited */
    double backoff;       /* lowest backoff factor of its lanes (1 = none) */
    int paused;           /* some lane is paused or suspended (backoff, suspend) */
    int held;             /* held by pool_isp_hold (the complaint guard) */
    const char *held_why; /* pool_isp_hold's why while held, else NULL */
    uint64_t parked;      /* messages handed back to on_held while held */
    /* Why it waits (the live line, `ringmail top`, the metrics): */
    uint64_t pause_left_ms; /* until the longest pause of its lanes ends (backoff or suspension); 0
                               none */
    int suspended; /* that pause is a suspension (a suspend rule, or one kept in PostgreSQL) */
    char pause_why[200]; /* what started it: the rule and the reply that matched; "" unknown */
    size_t
        retry_waiting; /* messages waiting for their retry time (list mode: the pool's retries) */
    uint64_t retry_next_ms; /* until the earliest of them is due; 0 none */
    /* The cluster (pool_lane_share): live nodes sharing its limits (0: not
     * shared, this node alone or cluster_limits off) and whether PostgreSQL
     * was out of reach too long to keep this node's share (blocked). */
    unsigned cluster_nodes;
    int cluster_blocked;
};

struct pool *pool_new(struct loop *loop, const struct pool_options *o, char *err, size_t errlen);
/* Stop (if running) and free; the loop must have run until idle after pool_stop. */
void pool_free(struct pool *p);
/* Hand m to the pool; its outcome(s) come through on_result. */
void pool_submit(struct pool *p, struct pool_msg *m);
/* 0 if c fits this pool: every [isp NAME source ADDR] names a source address
 * in use (sources are fixed for the pool's life); else -1 and why in err. */
int pool_check_config(const struct pool *p, const struct config *c, char *err, size_t errlen);
/* Swap in a new config (the pool owns it); the old one is freed. */
void pool_reload(struct pool *p, struct config *c);
/* No new transactions; connections finish what is in flight and QUIT;
 * timers and DNS stop. Messages not yet final stay with the pool and are
 * counted by pool_pending. */
void pool_stop(struct pool *p);
/* After pool_stop and the loop ran idle: hand every message the pool still
 * holds (queued, or waiting for a retry) back to release, which owns it
 * from then on. */
void pool_release_all(struct pool *p, void (*release)(void *user, struct pool_msg *m));
/* What may_send refused may be allowed now: the idle connections ask again. */
void pool_gate_open(struct pool *p);
/* Messages submitted and not final. */
size_t pool_pending(const struct pool *p);
/* Messages waiting for a retry. */
size_t pool_retry_depth(const struct pool *p);
/* Per-ISP statistics into out (at most max); returns how many ISPs there are. */
size_t pool_isp_stats(struct pool *p, struct pool_isp_stats *out, size_t max);
/* Connections idle until may_send allows their next message. */
unsigned pool_gated_connections(const struct pool *p);
/* Open connections across the pool. */
unsigned pool_open_connections(const struct pool *p);
/* Hold the ISP called isp (the complaint guard; an ISP the config does not
 * name is added, with no domains): no connection opens to it and no
 * transaction starts (sessions open now QUIT at their next message; those
 * in a transaction finish it), until pool_isp_release. Unlike a backoff or
 * a suspension, no time lifts it. Its queued messages go to on_held, or
 * wait. why (copied) is what pool_isp_stats and the metrics say. */
void pool_isp_hold(struct pool *p, const char *isp, const char *why);
/* Lift the hold: 1, or 0 when isp was not held. */
int pool_isp_release(struct pool *p, const char *isp);
/* 1 while isp is held. */
int pool_isp_held(struct pool *p, const char *isp);
/* Suspend the ISP called isp for ms from now (one kept from an earlier run:
 * on_suspend is not called), as a suspend rule would: every lane paused,
 * pool_isp_stats says suspended and why. An ISP the config does not name
 * is added, with no domains. A longer pause in force stays. */
void pool_isp_suspend(struct pool *p, const char *isp, uint64_t ms, const char *why);
/* ---- many nodes, one cluster (campaign/send_cluster.c) ----
 *
 * An ISP's limits (max_connections, msg_rate, conn_rate; a source's own
 * [isp NAME source ADDR] ones) are the cluster's when cluster_limits is on:
 * the owner tells each lane how many live nodes share them and this node's
 * rank among them, and the lane takes msg_rate / nodes, conn_rate / nodes
 * and its part of max_connections (max_connections / nodes, the remainder
 * to the first ranks). A lane told nothing takes the whole limit. */
struct pool_lane_demand {
    const char *isp;    /* the pool's ISP name (valid until the next reload) */
    const char *source; /* the source of a lane with its own limits, or "": the ISP's */
    size_t demand;      /* messages queued for the ISP plus connections open to it */
    int shared;         /* it has a limit, and cluster_limits is on for it */
};
/* The lanes' demands into out (at most max, one per (isp, source)
 * distinct); how many there are. */
size_t pool_lane_demands(struct pool *p, struct pool_lane_demand *out, size_t max);
/* The lanes of isp whose limits are source's ("": the ISP's) are shared by
 * nodes live nodes, this node being rank (0-based) among them; blocked:
 * this node may not open connections or start messages for them (it lost
 * its share: PostgreSQL out of reach). nodes 0: the whole limit again. */
void pool_lane_share(struct pool *p, const char *isp, const char *source, unsigned nodes,
                     unsigned rank, int blocked);
/* The config in force (the last reload's). */
const struct config *pool_config(const struct pool *p);
/* The source addresses connections bind to (none: the kernel's choice). */
size_t pool_source_addrs(const struct pool *p, const char **out, size_t max);
/* Another node cut isp's rate to factor and paused it for pause_ms: every
 * lane of isp here takes the lower factor and the longer pause (its own
 * recovery follows), said on stderr with why. 1 if it changed anything. */
int pool_isp_backoff_adopt(struct pool *p, const char *isp, double factor, uint64_t pause_ms,
                           const char *why);

/* MTA-STS so far: _mta-sts TXT lookups, policy fetches over HTTPS by this
 * process, and policies the shared cache (PostgreSQL) answered without one. */
/* TLSA lookups sent and answered from the DNS cache (DANE), over the
 * pool's life (also after pool_stop). */
void pool_dane_stats(const struct pool *p, uint64_t *tlsa_queries, uint64_t *tlsa_cache_hits);
void pool_mta_sts_stats(const struct pool *p, uint64_t *txt_lookups, uint64_t *txt_failed,
                        uint64_t *fetches, uint64_t *shared_answers);
/* Prometheus exposition of the per-ISP counters and gauges. */
void pool_metrics(struct pool *p, buf_t *out);

#endif
