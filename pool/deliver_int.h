/*
 * deliver_int - the delivery pool's private header (see deliver.h)
 *
 * The pool is one job split over five files behind this header, as
 * Postfix's qmgr/ is behind qmgr.h:
 *   lane.c     ISPs and their lanes: limits from the config, weighted
 *              choice of a source address, backoff.
 *   dest.c     destinations: the hash of recipient domains, their queues,
 *              MX and route resolution, the active list, routing a message.
 *   settle.c   outcomes: what an attempt means (reply rules, retry or
 *              final), the retry heap.
 *   conn.c     connections: the pump that opens them, their SMTP sessions
 *              (next message, lingering, gating, yielding), their close.
 *   deliver.c  the public API of deliver.h, statistics and metrics.
 * Nothing here is for callers outside pool/: they use deliver.h.
 *
 * Objects and owners:
 *   pool      owns ISPs, destinations, connections, the retry heap, DNS, TLS contexts.
 *   pool_isp  one per ISP of the config (plus a built-in "default"), never freed
 *             before the pool; holds one lane per source address.
 *   pool_lane the throttle unit, (ISP, source address): open connections,
 *             message and connection buckets, backoff.
 *   pool_dest one per recipient domain (or the relay): its exchanger
 *             addresses in MX order and its queue of messages.
 *   pool_conn one SMTP connection; frees itself when client_conn reports it closed.
 * A message is in exactly one place: a destination queue, the retry heap,
 * a connection (in flight) or back with the submitter (final).
 */
#ifndef RINGMAIL_DELIVER_INT_H
#define RINGMAIL_DELIVER_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine/client_conn.h"
#include "engine/heap.h"
#include "engine/list.h"
#include "pool/deliver.h"
#include "pool/tlspolicy.h"
#include "pool/dns.h"
#include "pool/throttle.h"

#define POOL_DOWN_MS 30000 /* an exchanger address that failed is skipped this long */
#define POOL_MAX_SOURCES CONFIG_SOURCES_MAX
#define POOL_DEST_BUCKETS 4096
/* Connections to one destination when its ISP sets no max_connections
 * (Postfix's default_destination_concurrency_limit). */
#define POOL_DEST_CONNECTIONS 20
/* An idle session waits this long for its destination's next message
 * before it says QUIT: a queue that empties for a moment (messages still
 * being claimed or rendered) does not cost a new connection and handshake.
 * But it yields its slot at once when its lane is full and another
 * destination of the ISP waits for one (issue 11: 20,000 one-recipient
 * domains took 200 s at max_connections 200, each slot idle 2 s). */
#define POOL_LINGER_MS 2000
/* Recipients per transaction when the ISP sets no max_rcpts_per_msg
 * (Postfix's default_destination_recipient_limit). Only messages that share
 * one body (the same data, length and sender) travel together. */
#define POOL_RCPTS_DEFAULT 50
/* How far behind the head pool_gate_ask asks ahead at most (two per
 * connection, or may_send_ahead_ms of the destination's starts). */
#define POOL_GATE_AHEAD 1024
/* pool_isp_hold's why, kept for statistics and metrics. */
#define POOL_HELD_WHY_MAX 384
/* What started a lane's pause (pool_isp_stats' pause_why). */
#define POOL_PAUSE_WHY_MAX 200

struct pool_conn;

struct pool_lane {
    struct pool_isp *isp;
    size_t source; /* index into pool->sources, or 0 when there are none */
    unsigned open; /* connections open (connecting included) */
    /* The limits in force: the ISP's, or the source's own ([isp NAME
     * source ADDR]: own), as the config says (cfg_*), and this node's share
     * of them in a cluster (pool_lane_share: share_nodes live nodes share
     * them, this node is share_rank; share_none: no connection of
     * max_connections is this node's; share_blocked: none at all). */
    unsigned max_connections, max_msgs_per_conn;
    double msg_rate, conn_rate;
    unsigned cfg_max_connections;
    double cfg_msg_rate, cfg_conn_rate;
    int own;
    unsigned share_nodes, share_rank;
    int share_none, share_blocked;
    struct token_bucket msgs, conns;
    struct backoff bo;
    /* What started the current pause (a cut or a suspension): the reply and
     * the rule, "421 4.7.28 ... (rule 421 4.7.28 => backoff 0.5 10m; ...)" */
    char why[POOL_PAUSE_WHY_MAX];
    struct pool_conn *waiting; /* idle connections waiting for a message token */
    struct loop_timer timer;   /* wakes the waiting connections */
    struct list_head idle;     /* lingering sessions of the lane (idle_node), for yielding */
};

struct pool_isp {
    char name[CONFIG_NAME_MAX];
    const struct config_isp *cfg; /* NULL for the built-in default or a removed ISP */
    unsigned max_connections, max_msgs_per_conn, max_rcpts_per_msg;
    double msg_rate, conn_rate;
    enum smtp_tls_policy tls;
    uint64_t timeout_ms;
    struct pool_lane *lanes; /* one per source */
    size_t nlanes;
    size_t rr;     /* weighted round robin position */
    size_t queued; /* messages on its destinations' queues */
    /* Connections the last pump could not open for its destinations
     * because every lane was full, and the idle sessions asked to QUIT to
     * make room and not closed yet: while starved > yielding, a session
     * that would linger yields instead. */
    unsigned starved, yielding;
    /* The complaint guard (pool_isp_hold): while held no lane opens a
     * connection or starts a transaction, and only pool_isp_release lifts
     * it (a backoff's end does not: the flag is not the lanes' pause). */
    int held;
    char held_why[POOL_HELD_WHY_MAX];
    struct pool_isp_stats st;
};

struct pool_target {
    char host[256];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t down_until;
};

enum pool_dest_state { DEST_NEW, DEST_RESOLVING, DEST_READY };

struct pool_dest {
    char domain[256];
    enum pool_dest_state state;
    struct pool_target *targets; /* owned */
    size_t ntargets;
    size_t resolving_host;  /* MX host whose addresses are being looked up */
    struct dns_mx_host *mx; /* owned copy while resolving addresses */
    size_t nmx;
    uint64_t expires_ms;
    struct pool_isp *isp;
    struct pool_msg *head, *tail;
    size_t queued;
    /* pool_gate_ask (conn.c): the first `asked` messages of the queue were
     * announced (ask_last the last of them; only the head leaves the
     * queue, and a message put back in front resets both); gate_starts
     * counts the transactions started since gate_at, gate_rate those of
     * the last 100 ms. */
    struct pool_msg *ask_last;
    size_t asked;
    uint64_t gate_at;
    unsigned gate_starts, gate_rate;
    unsigned nconns;
    int skip_starttls;          /* opportunistic: the handshake failed here once */
    int warned_plaintext;       /* opportunistic: the plaintext WARNING was printed */
    struct list_head lingering; /* idle sessions waiting for a message here (linger_node) */
    int proven;                 /* a session got ready: more than one connection may open */
    int addr_tempfail;          /* an exchanger's address lookup failed for now */
    const char *server_name;    /* route/relay: SNI override (points into pool) */
    int is_relay;
    /* The policy decided for the destination before any connection (what an
     * attempt records when no connection carried it, e.g. a failed TLSA
     * lookup); type config with mode "" until one is. */
    struct tlsp tlsp;
    struct pool_dane *dane; /* owned (dane.c): its MX hosts' TLSA state; NULL: none yet */
    /* MTA-STS (sts_dest.c): the domain's cache entry (the pool's, borrowed;
     * NULL when MTA-STS is not looked at for d); a TXT lookup or policy fetch
     * is out (sts_wait) and d's exchangers wait for it (sts_held). */
    struct sts_entry *sts;
    int sts_wait, sts_held;
    int sts_tried;                      /* a fetch was asked for in this lookup of d (not twice) */
    char fatal_reason[SMTP_REASON_MAX]; /* AUTH refused: fail every message */
    char fatal_text[SMTP_TEXT_MAX + 32];
    struct pool *pool;
    struct pool_dest *hnext;      /* hash chain */
    struct list_node active_node; /* on pool->active while queued > 0 */
};

/* A connection's life cycle as the pool sees it (client_conn and
 * smtp_client have their own, finer machines). Every change goes through
 * pool_conn_set_state. The idle states keep it on one list each. */
enum pool_conn_state {
    POOL_CONN_CONNECTING,  /* TCP, TLS, greeting, EHLO (STARTTLS, AUTH): not ready yet */
    POOL_CONN_READY,       /* the session is up and holds no transaction */
    POOL_CONN_TRANSACTING, /* a batch is in flight, from MAIL to its last reply */
    POOL_CONN_WAITING,     /* idle until its lane has a message token (lane->waiting) */
    POOL_CONN_GATED,       /* idle until may_send allows the queue's head (pool->gated) */
    POOL_CONN_LINGERING,   /* idle, its destination's queue empty, for POOL_LINGER_MS
                            * (dest->lingering and lane->idle) */
    POOL_CONN_LINGER_OVER, /* lingered its time, or yields: an empty queue now means QUIT */
    POOL_CONN_CLOSING,     /* QUIT said, or the session failed: the close is coming */
    POOL_CONN_CLOSED,      /* client_conn reported it closed; freed right after */
};

struct pool_conn {
    struct pool *pool;
    struct pool_dest *dest;
    struct pool_lane *lane;
    struct client_conn *conn;
    struct client_conn_config cfg;
    char host[256];
    char addr[64];
    char session_key[400];
    size_t target;
    struct tlsp tlsp;           /* the destination TLS policy it was opened under */
    struct pool_dane_set *dane; /* a reference (dane.c) when opened under DANE, else NULL */
    /* In flight: one transaction of nbatch messages that share a body, one
     * RCPT each (a single message uses the inline one, rcpt1 and sent1). */
    struct pool_msg **batch;
    struct smtp_rcpt *rcpts;
    unsigned char *sent; /* the body went to that recipient (its RCPT was not refused) */
    size_t nbatch;
    struct pool_msg *one;
    struct smtp_rcpt rcpt1;
    unsigned char sent1;
    uint64_t txn_started_ms;
    struct smtp_message sm;
    enum pool_conn_state state; /* changed only by pool_conn_set_state */
    unsigned long trace_id;     /* its number in trace lines */
    /* Not states: bookkeeping bits that live across several states.
     * tls_counted: its TLS kind went into the ISP's statistics (once, as
     * soon as it is known, whatever state the connection is in).
     * yielding: asked to QUIT for another destination's sake, and counted
     * in isp->yielding until it closes (LINGER_OVER, CLOSING) or mail came
     * for it after all. */
    int tls_counted;
    int yielding;
    int carried; /* an attempt of it was settled (the next one is not conn_first) */
    /* The waiting and gated lists are stacks the waker takes whole (a
     * session that must wait again joins the new one): singly linked. */
    struct pool_conn *wnext;      /* lane's waiting list (WAITING) */
    struct pool_conn *gnext;      /* the pool's gated list (GATED) */
    struct list_node linger_node; /* dest->lingering (LINGERING) */
    struct list_node idle_node;   /* lane->idle (LINGERING) */
    struct loop_timer linger;
    struct list_node node; /* pool->conns */
};

struct pool_source {
    char addr[CONFIG_NAME_MAX];
    unsigned weight;
    struct sockaddr_storage ss;
    socklen_t len;
};

struct pool {
    struct loop *loop;
    struct pool_options opt;
    struct config *config;
    struct dns *dns;          /* owned; NULL with a relay or opt.resolve, and once stopped */
    struct pool_resolver res; /* what resolves; .mx NULL when nothing does (relay, stopped) */
    struct tls_ctx *ctx_plain, *ctx_verify;
    uint64_t tlsa_queries, tlsa_hits; /* dns_tlsa_stats when dns was freed */
    struct sts_cache *sts;            /* owned: MTA-STS policies and their fetcher (sts_dest.c) */
    struct tls_session_cache *cache;
    struct pool_source sources[POOL_MAX_SOURCES];
    size_t nsources;
    unsigned weight_total;
    struct pool_isp **isps;
    size_t nisps;
    struct pool_dest *buckets[POOL_DEST_BUCKETS];
    struct list_head active; /* destinations with messages queued (active_node) */
    struct pool_dest *relay;
    struct list_head conns;  /* every open connection (node) */
    struct pool_conn *gated; /* idle until pool_gate_open */
    unsigned ngated;
    unsigned open;
    /* every destination's starts (pool_gate_ahead), as gate_* of a destination */
    uint64_t gate_at;
    unsigned gate_starts, gate_rate;
    struct heap retry; /* messages waiting for a retry, by due_ms */
    struct loop_timer pump_timer, retry_timer;
    size_t pending;
    int stopped;
    char relay_host[256];
    /* The config pool_isps_sync last made the ISPs match: at a reload, the
     * one being replaced (still alive then), to say what changed. */
    const struct config *synced;
};

/* What one attempt of a message came to, as pool_settle takes it. */
struct pool_outcome {
    enum smtp_outcome outcome;
    const char *reason;   /* "accepted", "rcpt_rejected", "dns_tempfail" ... */
    int code;             /* the server's reply code, 0 when none */
    const char *enhanced; /* NULL: none */
    const char *text;     /* NULL: none */
    int data_in_flight;   /* the body went out and no final reply came back */
};

/* ---- deliver.c: shared helpers ---- */

/* pool_now - the pool's clock: opt.clock, else the loop's (refreshed once per iteration) */
static inline uint64_t pool_now(struct pool *p)
{
    return p->opt.clock ? p->opt.clock() : loop_now_ms(p->loop);
}

/* pool_clock_ms - the pool's clock read now (for measuring durations) */
static inline uint64_t pool_clock_ms(struct pool *p)
{
    return p->opt.clock ? p->opt.clock() : loop_clock_ms(p->loop);
}

/* pool_timer_at - make t fire at `at` (pool clock) at the latest */
void pool_timer_at(struct pool *p, struct loop_timer *t, uint64_t at);
/* pool_xcalloc - calloc or abort */
void *pool_xcalloc(size_t n, size_t size);

/* ---- lane.c: ISPs and lanes ---- */

/* pool_isps_sync - make the ISP list match p->config (update, add, detach removed) */
void pool_isps_sync(struct pool *p);
/* pool_isp_named - the ISP called name, or NULL */
struct pool_isp *pool_isp_named(struct pool *p, const char *name);
/* pool_isp_for - the ISP of a domain (and its MX host names), else "default" */
struct pool_isp *pool_isp_for(struct pool *p, const char *domain, const char *const *mx,
                              size_t nmx);
/* pool_isp_full - every lane of isp is at its max_connections */
int pool_isp_full(const struct pool_isp *isp);
/* pool_lane_rate - l's message rate now, backoff applied (< 0 unlimited) */
double pool_lane_rate(struct pool_lane *l, uint64_t now);
/* pool_lane_paused - l is paused by backoff or suspension, or its ISP is held */
int pool_lane_paused(struct pool_lane *l, uint64_t now);
/* pool_lane_pick - a lane of isp that may open a connection now, or NULL
 * (and *wake lowered to when one may) */
struct pool_lane *pool_lane_pick(struct pool *p, struct pool_isp *isp, uint64_t now,
                                 uint64_t *wake);
/* pool_lane_starved - an idle session of l should give its slot up now */
int pool_lane_starved(const struct pool_lane *l);
/* pool_backoff - a reply (code, enhanced, text) on l: counted in its
 * backoff window; r, the backoff or suspend rule it matched (NULL: none),
 * cuts the rate and pauses l when the share of matching replies passes the
 * threshold, or suspends the ISP at once (on_suspend) */
void pool_backoff(struct pool *p, struct pool_lane *l, const struct config_rule *r, int code,
                  const char *enhanced, const char *text);
/* pool_held_hand_back - d's ISP is held: every message queued on d goes to
 * on_held (none without one: they wait there) */
void pool_held_hand_back(struct pool *p, struct pool_dest *d);

/* ---- dest.c: destinations and queues ---- */

/* pool_route - find m's destination and queue it there (or settle it) */
void pool_route(struct pool *p, struct pool_msg *m);
/* pool_enqueue - m onto d's queue, at the front or the back */
void pool_enqueue(struct pool *p, struct pool_dest *d, struct pool_msg *m, int front);
/* pool_dequeue - the head of d's queue, or NULL */
struct pool_msg *pool_dequeue(struct pool *p, struct pool_dest *d);
/* pool_fail_queue - every waiting message of d gets one attempt with outcome o */
void pool_fail_queue(struct pool *p, struct pool_dest *d, const struct pool_outcome *o);
/* pool_dest_resolve - start finding d's exchangers (a route is ready at once) */
void pool_dest_resolve(struct pool *p, struct pool_dest *d);
/* pool_dest_fixed - d goes to one fixed server (a route or the relay) */
int pool_dest_fixed(struct pool *p, struct pool_dest *d, const char *server);
/* pool_target_pick - the first address of d not marked down, in MX order; -1 when all are */
long pool_target_pick(struct pool_dest *d, uint64_t now);
/* pool_dest_next_host - d's MX host being resolved is done: the next one's addresses */
void pool_dest_next_host(struct pool *p, struct pool_dest *d);
/* pool_dest_free - d and what it owns */
void pool_dest_free(struct pool_dest *d);

/* ---- settle.c: outcomes and the retry heap ---- */

/* pool_settle - m's attempt (on c, or NULL) came to o: tell the owner, retry or release */
void pool_settle(struct pool *p, struct pool_msg *m, struct pool_conn *c,
                 const struct pool_outcome *o);
/* pool_msg_private_free - what the pool allocated for m, as m leaves it */
void pool_msg_private_free(struct pool_msg *m);
/* pool_retry_push - m waits in the retry heap until m->due_ms */
void pool_retry_push(struct pool *p, struct pool_msg *m);
/* pool_retry_init - an empty retry heap for p */
void pool_retry_init(struct pool *p);
/* pool_retry_due - retry timer: route every message that came due */
void pool_retry_due(struct loop_timer *t);

/* ---- dane.c: DANE (RFC 7672, pool/dane.h) ---- */

struct pool_dane;
struct pool_dane_set;
/* pool_dane_begin - d's MX answer is in (secure or not): whether DANE may
 * apply, and the TLSA state of the last answer forgotten */
void pool_dane_begin(struct pool *p, struct pool_dest *d, int mx_secure);
/* pool_dane_lookup - the addresses of d's MX host being resolved came in
 * (res; its targets added from index first on): 1 when a TLSA lookup
 * started, which goes on with pool_dest_next_host; 0 when DANE does not
 * apply to the host */
int pool_dane_lookup(struct pool *p, struct pool_dest *d, const struct dns_addr_result *res,
                     size_t first);
/* pool_dane_defer - d has no target: when failed TLSA lookups took them,
 * its queue defers (dane_tlsa_tempfail, dnssec-invalid): 1 */
int pool_dane_defer(struct pool *p, struct pool_dest *d);
/* pool_dane_host - 1 when d's MX host has a secure TLSA set: DANE decides
 * for it, so MTA-STS neither filters it out nor sets its policy (RFC 8461 2) */
int pool_dane_host(const struct pool_dest *d, const char *host);
/* pool_dane_conn - c (configured as for its ISP) goes to a DANE host: its
 * policy, TLSA set and session key become DANE's */
void pool_dane_conn(struct pool *p, struct pool_conn *c);
/* pool_dane_conn_done - c closes: its reference to the TLSA set goes */
void pool_dane_conn_done(struct pool_conn *c);
/* pool_dane_free - a destination's DANE state */
void pool_dane_free(struct pool_dane *dn);

/* ---- conn.c: connections ---- */

/* pool_pump - pump timer: open the connections the queues need and the lanes allow */
void pool_pump(struct loop_timer *t);
/* pool_kick - something changed: pump now */
void pool_kick(struct pool *p);
/* pool_tls_ctx - the client TLS context for policy (made on first use), or NULL */
struct tls_ctx *pool_tls_ctx(struct pool *p, enum smtp_tls_policy policy);
/* pool_lane_wake - lane timer: the lane's waiting sessions ask for a token again */
void pool_lane_wake(struct loop_timer *t);
/* pool_wake_lingering - a message arrived for d: wake one lingering session */
void pool_wake_lingering(struct pool_dest *d);
/* pool_gate_ask - may d's head (there is one) start a transaction? The
 * owner's may_send answers; the messages behind the head are announced to
 * it (ask_only), each once (conn.c) */
int pool_gate_ask(struct pool *p, struct pool_dest *d);
/* pool_gates_open - every gated session asks may_send again */
void pool_gates_open(struct pool *p);
/* pool_conn_stop - the pool stops: an idle session of c hears "no more messages" */
void pool_conn_stop(struct pool_conn *c);
/* pool_conn_set_state - c goes to state st (traced with why, which may be NULL) */
void pool_conn_set_state(struct pool_conn *c, enum pool_conn_state st, const char *why);
/* pool_conn_state_name - the state's name, as traced */
const char *pool_conn_state_name(enum pool_conn_state st);

#endif
