/*
 * deliver - the delivery pool. See deliver.h.
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
#include "pool/deliver.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/client_conn.h"
#include "engine/netaddr.h"
#include "pool/dns.h"
#include "pool/throttle.h"
#include "engine/tls_session_cache.h"

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
/* How far behind the head pool_may_send asks ahead (two per connection). */
#define POOL_GATE_AHEAD 64

struct pool_conn;

struct pool_lane {
    struct pool_isp *isp;
    size_t source; /* index into pool->sources, or 0 when there are none */
    unsigned open; /* connections open (connecting included) */
    /* The ISP's limits, or the source's own ([isp NAME source ADDR]). */
    unsigned max_connections, max_msgs_per_conn;
    double msg_rate, conn_rate;
    struct token_bucket msgs, conns;
    struct backoff bo;
    struct pool_conn *waiting; /* idle connections waiting for a message token */
    struct loop_timer timer;   /* wakes the waiting connections */
    struct pool_conn *idle;    /* lingering sessions of the lane, for yielding */
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
    unsigned nconns;
    int skip_starttls;           /* opportunistic: the handshake failed here once */
    int warned_plaintext;        /* opportunistic: the plaintext WARNING was printed */
    struct pool_conn *lingering; /* idle sessions waiting for a message here */
    int proven;                  /* a session got ready: more than one connection may open */
    int addr_tempfail;           /* an exchanger's address lookup failed for now */
    const char *server_name;     /* route/relay: SNI override (points into pool) */
    int is_relay;
    char fatal_reason[SMTP_REASON_MAX]; /* AUTH refused: fail every message */
    char fatal_text[SMTP_TEXT_MAX + 32];
    struct pool *pool;
    struct pool_dest *hnext;         /* hash chain */
    struct pool_dest *anext, *aprev; /* active list: queued > 0 */
    int active;
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
    int tls_counted;
    int ready;      /* the SMTP session got ready (EHLO, and STARTTLS when it was done) */
    int transacted; /* some message got a reply on this connection */
    int waiting;
    struct pool_conn *wnext;
    int gated;                       /* waiting for may_send to allow the queue's head */
    struct pool_conn *gnext;         /* the pool's gated list */
    int lingering;                   /* idle, waiting for its destination's next message */
    int linger_over;                 /* lingered its time: the next empty queue means QUIT */
    struct pool_conn *lnext;         /* destination's lingering list */
    struct pool_conn *inext, *iprev; /* lane's idle list, while lingering */
    int yielding;                    /* asked to QUIT for another destination's sake */
    struct loop_timer linger;
    struct pool_conn *next, *prev; /* all connections */
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
    struct dns *dns;
    struct tls_ctx *ctx_plain, *ctx_verify;
    struct tls_session_cache *cache;
    struct pool_source sources[POOL_MAX_SOURCES];
    size_t nsources;
    unsigned weight_total;
    struct pool_isp **isps;
    size_t nisps;
    struct pool_dest *buckets[POOL_DEST_BUCKETS];
    struct pool_dest *active;
    struct pool_dest *relay;
    struct pool_conn *conns;
    struct pool_conn *gated; /* idle until pool_gate_open */
    unsigned ngated;
    unsigned open;
    struct pool_msg **heap; /* retry heap by due_ms */
    size_t nheap, heap_cap;
    struct loop_timer pump_timer, retry_timer;
    size_t pending;
    int stopped;
    char relay_host[256];
};

static void pool_kick(struct pool *p);
static void pool_wake_lingering(struct pool_dest *d);
static void pool_settle(struct pool *p, struct pool_msg *m, struct pool_conn *c,
                        enum smtp_outcome o, const char *reason, int code, const char *enhanced,
                        const char *text, int data_in_flight);

/* ---- helpers ---- */

static uint64_t pool_now(struct pool *p)
{
    return loop_now_ms(p->loop);
}

/* Make t fire at `at` (loop clock) at the latest. One timer serves several
 * deadlines (the pump: every lane's pause end and connection token; a lane:
 * each waiting session's token; the retry heap: every retry), so a need
 * earlier than the armed deadline moves it forward and a later one never
 * pushes it back: keeping the later one stalled every ISP behind one
 * suspended for an hour (issue 10). */
static void pool_timer_at(struct pool *p, struct loop_timer *t, uint64_t at)
{
    if (p->stopped || (loop_timer_active(t) && t->deadline_ms <= at)) {
        return;
    }
    uint64_t now = pool_now(p);
    loop_timer_set(p->loop, t, at > now ? at - now : 0);
}

static void *pool_xcalloc(size_t n, size_t size)
{
    void *v = calloc(n, size);
    if (!v) {
        fprintf(stderr, "ringmail: out of memory\n");
        abort();
    }
    return v;
}

static unsigned pool_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 16777619u;
    }
    return h;
}

/* ---- ISPs and lanes ---- */

static double pool_lane_rate(struct pool_lane *l, uint64_t now)
{
    double base = l->msg_rate;
    return base < 0 ? -1 : base * backoff_factor(&l->bo, now);
}

static int pool_lane_paused(struct pool_lane *l, uint64_t now)
{
    return backoff_paused(&l->bo, now);
}

static void pool_lane_wake(struct loop_timer *t);

static void pool_isp_apply(struct pool *p, struct pool_isp *isp, const struct config_isp *cfg)
{
    uint64_t now = pool_now(p);
    isp->cfg = cfg;
    if (cfg) {
        isp->max_connections = cfg->max_connections;
        isp->max_msgs_per_conn = cfg->max_msgs_per_conn;
        isp->max_rcpts_per_msg = cfg->max_rcpts_per_msg;
        isp->msg_rate = cfg->msg_rate;
        isp->conn_rate = cfg->conn_rate;
        isp->tls = cfg->tls;
        isp->timeout_ms = cfg->timeout_ms;
    } else {
        isp->max_connections = 0;
        isp->max_msgs_per_conn = 0;
        isp->max_rcpts_per_msg = 0;
        isp->msg_rate = isp->conn_rate = -1;
        isp->tls = p->config->tls;
        isp->timeout_ms = 0;
    }
    for (size_t i = 0; i < isp->nlanes; i++) {
        struct pool_lane *l = &isp->lanes[i];
        const struct config_lane *own =
            cfg && p->nsources ? config_lane_for(cfg, p->sources[l->source].addr) : NULL;
        unsigned set = own ? own->set : 0;
        l->max_connections =
            set & CONFIG_LANE_MAX_CONNECTIONS ? own->max_connections : isp->max_connections;
        l->max_msgs_per_conn =
            set & CONFIG_LANE_MAX_MSGS_PER_CONN ? own->max_msgs_per_conn : isp->max_msgs_per_conn;
        l->msg_rate = set & CONFIG_LANE_MSG_RATE ? own->msg_rate : isp->msg_rate;
        l->conn_rate = set & CONFIG_LANE_CONN_RATE ? own->conn_rate : isp->conn_rate;
        l->bo.step = p->config->backoff_step;
        l->bo.interval_ms = p->config->backoff_interval_ms;
        token_bucket_set_rate(&l->msgs, pool_lane_rate(l, now), now);
        token_bucket_set_rate(&l->conns, l->conn_rate, now);
    }
}

static struct pool_isp *pool_isp_add(struct pool *p, const char *name, const struct config_isp *cfg)
{
    struct pool_isp **v = realloc(p->isps, (p->nisps + 1) * sizeof *v);
    if (!v) {
        abort();
    }
    p->isps = v;
    struct pool_isp *isp = pool_xcalloc(1, sizeof *isp);
    snprintf(isp->name, sizeof isp->name, "%s", name);
    isp->st.name = isp->name;
    isp->nlanes = p->nsources ? p->nsources : 1;
    isp->lanes = pool_xcalloc(isp->nlanes, sizeof *isp->lanes);
    uint64_t now = pool_now(p);
    for (size_t i = 0; i < isp->nlanes; i++) {
        struct pool_lane *l = &isp->lanes[i];
        l->isp = isp;
        l->source = i;
        backoff_init(&l->bo, p->config->backoff_step, p->config->backoff_interval_ms);
        token_bucket_init(&l->msgs, -1, 0, now);
        token_bucket_init(&l->conns, -1, 0, now);
        loop_timer_init(&l->timer, pool_lane_wake, l);
    }
    p->isps[p->nisps++] = isp;
    pool_isp_apply(p, isp, cfg);
    return isp;
}

static struct pool_isp *pool_isp_named(struct pool *p, const char *name)
{
    for (size_t i = 0; i < p->nisps; i++) {
        if (strcmp(p->isps[i]->name, name) == 0) {
            return p->isps[i];
        }
    }
    return NULL;
}

/* Make the ISP list match the config: update, add, and detach removed ones. */
static void pool_isps_sync(struct pool *p)
{
    for (size_t i = 0; i < p->nisps; i++) {
        p->isps[i]->cfg = NULL;
    }
    for (size_t i = 0; i < p->config->nisps; i++) {
        const struct config_isp *ci = &p->config->isps[i];
        struct pool_isp *isp = pool_isp_named(p, ci->name);
        if (isp) {
            pool_isp_apply(p, isp, ci);
        } else {
            pool_isp_add(p, ci->name, ci);
        }
    }
    for (size_t i = 0; i < p->nisps; i++) {
        if (!p->isps[i]->cfg) {
            pool_isp_apply(p, p->isps[i], NULL);
        }
    }
    if (!pool_isp_named(p, "default")) {
        pool_isp_add(p, "default", NULL);
    }
}

static struct pool_isp *pool_isp_for(struct pool *p, const char *domain, const char *const *mx,
                                     size_t nmx)
{
    const struct config_isp *ci = config_isp_for(p->config, domain, mx, nmx);
    struct pool_isp *isp = ci ? pool_isp_named(p, ci->name) : NULL;
    return isp ? isp : pool_isp_named(p, "default");
}

/* A lane that may open a connection now, by weighted round robin over sources. */
static struct pool_lane *pool_lane_pick(struct pool *p, struct pool_isp *isp, uint64_t now,
                                        uint64_t *wake)
{
    size_t n = isp->nlanes;
    unsigned total = p->nsources ? p->weight_total : 1;
    for (unsigned k = 0; k < total; k++) {
        /* Position rr in the weighted sequence: source i repeats weight times. */
        unsigned pos = (unsigned)(isp->rr++ % total);
        size_t i = 0;
        if (p->nsources) {
            while (i < n && pos >= p->sources[i].weight) {
                pos -= p->sources[i].weight;
                i++;
            }
        }
        struct pool_lane *l = &isp->lanes[i < n ? i : 0];
        if (l->max_connections && l->open >= l->max_connections) {
            continue;
        }
        if (l->waiting) {
            continue; /* its sessions already wait for message tokens: the rate limits, not
                         the number of connections */
        }
        if (pool_lane_paused(l, now)) {
            uint64_t at = l->bo.paused_until;
            if (at < *wake) {
                *wake = at;
            }
            continue;
        }
        if (!token_bucket_take(&l->conns, 1, now)) {
            uint64_t at = now + token_bucket_wait_ms(&l->conns, 1, now);
            if (at < *wake) {
                *wake = at;
            }
            continue;
        }
        return l;
    }
    return NULL;
}

static void pool_backoff(struct pool *p, struct pool_lane *l, const struct config_rule *r)
{
    uint64_t now = pool_now(p);
    double cut = r->action == CONFIG_ACTION_BACKOFF ? r->cut : 1.0;
    backoff_trigger(&l->bo, cut, r->pause_ms, now);
    token_bucket_set_rate(&l->msgs, pool_lane_rate(l, now), now);
    l->isp->st.backoff_triggers++;
    if (l->bo.triggers == 1 || (l->bo.triggers & (l->bo.triggers - 1)) == 0) {
        /* Loud, but not once per deferral: the 1st, 2nd, 4th, 8th ... time. */
        fprintf(stderr,
                "ringmail: %s: %s on \"%s\": rate factor now %.2f, paused %.1f s (%u time%s)\n",
                l->isp->name, r->action == CONFIG_ACTION_BACKOFF ? "backoff" : "suspend",
                r->pattern, backoff_factor(&l->bo, now), (double)r->pause_ms / 1000.0,
                l->bo.triggers, l->bo.triggers == 1 ? "" : "s");
    }
}

/* ---- destinations and queues ---- */

static void pool_active_add(struct pool *p, struct pool_dest *d)
{
    if (d->active) {
        return;
    }
    d->active = 1;
    d->aprev = NULL;
    d->anext = p->active;
    if (p->active) {
        p->active->aprev = d;
    }
    p->active = d;
}

static void pool_active_remove(struct pool *p, struct pool_dest *d)
{
    if (!d->active) {
        return;
    }
    d->active = 0;
    if (d->aprev) {
        d->aprev->anext = d->anext;
    } else {
        p->active = d->anext;
    }
    if (d->anext) {
        d->anext->aprev = d->aprev;
    }
    d->anext = d->aprev = NULL;
}

static void pool_enqueue(struct pool *p, struct pool_dest *d, struct pool_msg *m, int front)
{
    m->dest = d;
    if (front) {
        m->next = d->head;
        d->head = m;
        if (!d->tail) {
            d->tail = m;
        }
    } else {
        m->next = NULL;
        if (d->tail) {
            d->tail->next = m;
        } else {
            d->head = m;
        }
        d->tail = m;
    }
    d->queued++;
    if (d->isp) {
        d->isp->queued++;
    }
    pool_active_add(p, d);
    pool_wake_lingering(d);
}

static struct pool_msg *pool_dequeue(struct pool *p, struct pool_dest *d)
{
    struct pool_msg *m = d->head;
    if (!m) {
        return NULL;
    }
    d->head = m->next;
    if (!d->head) {
        d->tail = NULL;
    }
    m->next = NULL;
    d->queued--;
    if (d->isp) {
        d->isp->queued--;
    }
    if (d->queued == 0) {
        pool_active_remove(p, d);
    }
    return m;
}

/* Every waiting message of d gets one attempt with this outcome. */
static void pool_fail_queue(struct pool *p, struct pool_dest *d, enum smtp_outcome o,
                            const char *reason, int code, const char *enhanced, const char *text)
{
    if (p->stopped && o == SMTP_OUTCOME_DEFERRED) {
        /* Stopping: dns_free cancels the lookups still waiting (their
         * callbacks say "shutting down"). No attempt was made: the
         * messages stay queued for pool_release_all, where a deferral
         * would have left them pending in no list at all (leaked). */
        return;
    }
    struct pool_msg *m;
    while ((m = pool_dequeue(p, d)) != NULL) {
        pool_settle(p, m, NULL, o, reason, code, enhanced, text, 0);
    }
}

static struct pool_dest *pool_dest_get(struct pool *p, const char *domain)
{
    char key[256];
    size_t n = 0;
    for (; domain[n] && n < sizeof key - 1; n++) {
        key[n] = (char)tolower((unsigned char)domain[n]);
    }
    key[n] = '\0';
    unsigned b = pool_hash(key) % POOL_DEST_BUCKETS;
    for (struct pool_dest *d = p->buckets[b]; d; d = d->hnext) {
        if (strcmp(d->domain, key) == 0) {
            return d;
        }
    }
    struct pool_dest *d = pool_xcalloc(1, sizeof *d);
    snprintf(d->domain, sizeof d->domain, "%s", key);
    d->pool = p;
    d->hnext = p->buckets[b];
    p->buckets[b] = d;
    return d;
}

static int pool_target_add(struct pool_dest *d, const char *host, const struct sockaddr_storage *ss,
                           socklen_t len)
{
    struct pool_target *t = realloc(d->targets, (d->ntargets + 1) * sizeof *t);
    if (!t) {
        return -1;
    }
    d->targets = t;
    t = &d->targets[d->ntargets++];
    memset(t, 0, sizeof *t);
    snprintf(t->host, sizeof t->host, "%s", host);
    t->addr = *ss;
    t->addrlen = len;
    return 0;
}

static void pool_set_port(struct sockaddr_storage *ss, unsigned port)
{
    if (ss->ss_family == AF_INET) {
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    } else if (ss->ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    }
}

static void pool_dest_ready(struct pool *p, struct pool_dest *d, uint32_t ttl)
{
    free(d->mx);
    d->mx = NULL;
    d->state = DEST_READY;
    d->expires_ms = pool_now(p) + (uint64_t)(ttl ? ttl : 300) * 1000;
    if (d->ntargets == 0) {
        d->state = DEST_NEW;
        /* A lookup that timed out is not an answer: "no address" is only
         * said when every exchanger was looked up and had none. */
        if (d->addr_tempfail) {
            pool_fail_queue(p, d, SMTP_OUTCOME_DEFERRED, "dns_tempfail", 0, "",
                            "address lookup of the mail exchangers failed for now");
        } else {
            pool_fail_queue(p, d, SMTP_OUTCOME_DEFERRED, "dns_no_address", 0, "",
                            "no address found for any mail exchanger of the domain");
        }
        return;
    }
    pool_kick(p);
}

static void pool_dns_addr_cb(void *user, const struct dns_addr_result *res);

static void pool_resolve_next_host(struct pool *p, struct pool_dest *d)
{
    if (d->resolving_host >= d->nmx || p->stopped) {
        pool_dest_ready(p, d, 300);
        return;
    }
    dns_resolve_addr(p->dns, d->mx[d->resolving_host].name, pool_dns_addr_cb, d);
}

static void pool_dns_addr_cb(void *user, const struct dns_addr_result *res)
{
    struct pool_dest *d = user;
    struct pool *p = d->pool;
    if (res->status == DNS_TEMPFAIL) {
        d->addr_tempfail = 1;
    }
    if (res->status == DNS_OK) {
        for (size_t i = 0; i < res->n; i++) {
            struct sockaddr_storage ss = res->addrs[i];
            pool_set_port(&ss, p->opt.mx_port);
            pool_target_add(d, d->mx[d->resolving_host].name, &ss,
                            ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                     : sizeof(struct sockaddr_in));
        }
    }
    d->resolving_host++;
    pool_resolve_next_host(p, d);
}

static void pool_dns_mx_cb(void *user, const struct dns_mx_result *res)
{
    struct pool_dest *d = user;
    struct pool *p = d->pool;
    if (res->status != DNS_OK) {
        d->state = DEST_NEW;
        int permanent = res->status == DNS_NULL_MX || res->status == DNS_NXDOMAIN ||
                        res->status == DNS_BAD_NAME;
        const char *reason = res->status == DNS_NULL_MX    ? "null_mx"
                             : res->status == DNS_NXDOMAIN ? "nxdomain"
                             : res->status == DNS_BAD_NAME ? "bad_domain"
                                                           : "dns_tempfail";
        if (!d->isp) {
            d->isp = pool_isp_for(p, d->domain, NULL, 0);
            d->isp->queued += d->queued;
        }
        pool_fail_queue(p, d, permanent ? SMTP_OUTCOME_REJECTED : SMTP_OUTCOME_DEFERRED, reason, 0,
                        "", res->error ? res->error : dns_status_name(res->status));
        return;
    }
    const char *names[CONFIG_LIST_MAX];
    size_t nn = res->n < CONFIG_LIST_MAX ? res->n : CONFIG_LIST_MAX;
    for (size_t i = 0; i < nn; i++) {
        names[i] = res->hosts[i].name;
    }
    struct pool_isp *isp = pool_isp_for(p, d->domain, names, nn);
    if (d->isp != isp) {
        if (d->isp) {
            d->isp->queued -= d->queued;
        }
        isp->queued += d->queued;
        d->isp = isp;
    }
    free(d->targets);
    d->targets = NULL;
    d->ntargets = 0;
    d->mx = pool_xcalloc(res->n ? res->n : 1, sizeof *d->mx);
    memcpy(d->mx, res->hosts, res->n * sizeof *d->mx);
    d->nmx = res->n;
    d->resolving_host = 0;
    d->addr_tempfail = 0;
    pool_resolve_next_host(p, d);
}

/* Split "host:port" / "[v6]:port". 0, or -1 and why. */
static int pool_server_split(const char *server, char *host, size_t hostlen, unsigned *port,
                             char *err, size_t errlen)
{
    const char *h = server, *colon;
    size_t n;
    if (server[0] == '[') {
        const char *end = strchr(server, ']');
        h = server + 1;
        n = end ? (size_t)(end - h) : 0;
        colon = end && end[1] == ':' ? end + 1 : NULL;
    } else {
        colon = strrchr(server, ':');
        n = colon ? (size_t)(colon - server) : 0;
    }
    char *endp = NULL;
    long pn = colon ? strtol(colon + 1, &endp, 10) : 0;
    if (!colon || n == 0 || n >= hostlen || colon[1] == '\0' || *endp != '\0' || pn <= 0 ||
        pn > 65535) {
        snprintf(err, errlen, "bad server '%s' (want host:port or [v6addr]:port)", server);
        return -1;
    }
    memcpy(host, h, n);
    host[n] = '\0';
    *port = (unsigned)pn;
    return 0;
}

static int pool_host_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* A route's host name being looked up on the pool's resolver. */
struct pool_route_lookup {
    struct pool_dest *d;
    unsigned port;
    char host[256];
};

static void pool_route_addr_cb(void *user, const struct dns_addr_result *res)
{
    struct pool_route_lookup *lk = user;
    struct pool_dest *d = lk->d;
    free(d->targets);
    d->targets = NULL;
    d->ntargets = 0;
    d->addr_tempfail = res->status == DNS_TEMPFAIL;
    for (size_t i = 0; res->status == DNS_OK && i < res->n; i++) {
        struct sockaddr_storage ss = res->addrs[i];
        pool_set_port(&ss, lk->port);
        pool_target_add(d, lk->host, &ss,
                        ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                 : sizeof(struct sockaddr_in));
    }
    free(lk);
    pool_dest_ready(d->pool, d, 300); /* looked up again after 5 minutes */
}

/* A route or the relay: one fixed target. A route's host name is looked up
 * on the ring (the delivery loop never calls getaddrinfo); the relay's was
 * resolved at start. */
static int pool_dest_fixed(struct pool *p, struct pool_dest *d, const char *server)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char host[256], err[256];
    unsigned port;
    if (!d->isp) {
        d->isp = pool_isp_for(p, d->is_relay ? "" : d->domain, NULL, 0);
        d->isp->queued += d->queued;
    }
    if (pool_server_split(server, host, sizeof host, &port, err, sizeof err) < 0 ||
        ((d->is_relay || !p->dns || pool_host_numeric(host)) &&
         netaddr_parse(server, &ss, &len, host, sizeof host, err, sizeof err) < 0)) {
        pool_fail_queue(p, d, SMTP_OUTCOME_DEFERRED, "route_invalid", 0, "", err);
        return -1;
    }
    if (!d->is_relay && p->dns && !pool_host_numeric(host)) {
        struct pool_route_lookup *lk = pool_xcalloc(1, sizeof *lk);
        lk->d = d;
        lk->port = port;
        snprintf(lk->host, sizeof lk->host, "%s", host);
        d->state = DEST_RESOLVING;
        dns_resolve_addr(p->dns, host, pool_route_addr_cb, lk);
        return 0;
    }
    free(d->targets);
    d->targets = NULL;
    d->ntargets = 0;
    pool_target_add(d, host, &ss, len);
    d->state = DEST_READY;
    d->expires_ms = UINT64_MAX;
    return 0;
}

static void pool_dest_resolve(struct pool *p, struct pool_dest *d)
{
    if (d->is_relay) {
        pool_dest_fixed(p, d, p->opt.relay);
        return;
    }
    for (size_t i = 0; i < p->config->nroutes; i++) {
        if (strcasecmp(p->config->routes[i].domain, d->domain) == 0) {
            pool_dest_fixed(p, d, p->config->routes[i].server);
            return;
        }
    }
    d->state = DEST_RESOLVING;
    dns_resolve_mx(p->dns, d->domain, pool_dns_mx_cb, d);
}

/* ---- retry heap ---- */

static void pool_heap_swap(struct pool *p, size_t a, size_t b)
{
    struct pool_msg *t = p->heap[a];
    p->heap[a] = p->heap[b];
    p->heap[b] = t;
}

static void pool_heap_push(struct pool *p, struct pool_msg *m)
{
    if (p->nheap == p->heap_cap) {
        p->heap_cap = p->heap_cap ? p->heap_cap * 2 : 256;
        struct pool_msg **h = realloc(p->heap, p->heap_cap * sizeof *h);
        if (!h) {
            abort();
        }
        p->heap = h;
    }
    size_t i = p->nheap++;
    p->heap[i] = m;
    while (i > 0 && p->heap[(i - 1) / 2]->due_ms > p->heap[i]->due_ms) {
        pool_heap_swap(p, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    pool_timer_at(p, &p->retry_timer, p->heap[0]->due_ms);
}

static struct pool_msg *pool_heap_pop(struct pool *p)
{
    struct pool_msg *top = p->heap[0];
    p->heap[0] = p->heap[--p->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, s = i;
        if (l < p->nheap && p->heap[l]->due_ms < p->heap[s]->due_ms) {
            s = l;
        }
        if (r < p->nheap && p->heap[r]->due_ms < p->heap[s]->due_ms) {
            s = r;
        }
        if (s == i) {
            break;
        }
        pool_heap_swap(p, i, s);
        i = s;
    }
    return top;
}

static void pool_route(struct pool *p, struct pool_msg *m);

static void pool_retry_due(struct loop_timer *t)
{
    struct pool *p = t->owner;
    uint64_t now = pool_now(p);
    while (p->nheap > 0 && p->heap[0]->due_ms <= now) {
        pool_route(p, pool_heap_pop(p));
    }
    if (p->nheap > 0) {
        pool_timer_at(p, &p->retry_timer, p->heap[0]->due_ms);
    }
}

/* ---- outcomes ---- */

/* What the pool allocated for m, freed as m leaves it. */
static void pool_msg_private_free(struct pool_msg *m)
{
    free(m->rcpt_ascii);
    m->rcpt_ascii = NULL;
}

static void pool_settle(struct pool *p, struct pool_msg *m, struct pool_conn *c,
                        enum smtp_outcome o, const char *reason, int code, const char *enhanced,
                        const char *text, int data_in_flight)
{
    uint64_t now = pool_now(p);
    struct pool_dest *d = m->dest;
    struct pool_isp *isp = c ? c->lane->isp : d && d->isp ? d->isp : pool_isp_named(p, "default");
    m->attempts++;
    struct pool_attempt a = {
        .outcome = o,
        .reason = reason,
        .code = code,
        .enhanced = enhanced ? enhanced : "",
        .text = text ? text : "",
        .isp = isp->name,
        .mx = c ? c->host : "",
        .addr = c ? c->addr : "",
        .source = c && p->nsources ? p->sources[c->lane->source].addr : "",
        .tls = c && c->conn ? client_conn_tls(c->conn) : NULL,
        .attempt = m->attempts,
        .data_in_flight = data_in_flight,
    };
    a.connect_ms = a.tls_ms = a.transaction_ms = -1;
    if (c && c->conn) {
        const struct client_conn_times *tm = client_conn_times(c->conn);
        a.connect_ms = (int)tm->connect_ms;
        a.tls_ms = a.tls ? (int)tm->tls_ms : -1;
        if (c->txn_started_ms) {
            a.transaction_ms = (int)(loop_clock_ms(p->loop) - c->txn_started_ms);
        }
    }
    isp->st.attempts++;
    const struct config_rule *rule = NULL;
    if (code > 0 && (o == SMTP_OUTCOME_DEFERRED || o == SMTP_OUTCOME_REJECTED) && isp->cfg) {
        rule = config_rule_match(isp->cfg, code, enhanced, text);
    }
    if (rule) {
        a.rule = rule->pattern;
        if (rule->action == CONFIG_ACTION_BOUNCE) {
            a.outcome = o = SMTP_OUTCOME_REJECTED;
        } else if (c) {
            pool_backoff(p, c->lane, rule);
        } else {
            for (size_t i = 0; i < isp->nlanes; i++) {
                pool_backoff(p, &isp->lanes[i], rule);
            }
        }
    }
    switch (o) {
    case SMTP_OUTCOME_ACCEPTED:
        isp->st.accepted++;
        a.final = 1;
        break;
    case SMTP_OUTCOME_DEFERRED: {
        isp->st.deferred++;
        uint64_t delay = retry_next_delay_ms(&p->config->retry, m->attempts, m->first_ms, now);
        if (data_in_flight) {
            /* The crash rule on a live connection: the body went out and
             * the reply was lost (connection gone, timeout, a reply out of
             * step); the server may have it, so it is not sent again. */
            a.final = 1;
            a.ambiguous = 1;
        } else if (delay == UINT64_MAX || p->stopped) {
            a.final = !p->stopped;
            a.expired = !p->stopped;
        } else {
            a.retry_in_ms = delay;
        }
        break;
    }
    case SMTP_OUTCOME_REJECTED:
        isp->st.rejected++;
        a.final = 1;
        break;
    default:
        isp->st.failed++;
        a.final = 1;
        break;
    }
    if (a.final || (p->opt.external_retry && o == SMTP_OUTCOME_DEFERRED)) {
        p->pending--;
        m->dest = NULL;
        pool_msg_private_free(m);
        a.released = 1;
        p->opt.on_result(p->opt.user, m, &a);
        return;
    }
    p->opt.on_result(p->opt.user, m, &a);
    if (!p->stopped) {
        m->due_ms = now + a.retry_in_ms;
        pool_heap_push(p, m);
    } else {
        m->dest = NULL; /* stays pending: the owner sees pool_pending() > 0 */
        pool_msg_private_free(m);
    }
}

/* ---- connections ---- */

static void pool_conn_unwait(struct pool_conn *c)
{
    if (!c->waiting) {
        return;
    }
    struct pool_conn **pp = &c->lane->waiting;
    while (*pp && *pp != c) {
        pp = &(*pp)->wnext;
    }
    if (*pp) {
        *pp = c->wnext;
    }
    c->waiting = 0;
    c->wnext = NULL;
}

static void pool_conn_ungate(struct pool_conn *c)
{
    if (!c->gated) {
        return;
    }
    struct pool_conn **pp = &c->pool->gated;
    while (*pp && *pp != c) {
        pp = &(*pp)->gnext;
    }
    if (*pp) {
        *pp = c->gnext;
        c->pool->ngated--;
    }
    c->gated = 0;
    c->gnext = NULL;
}

void pool_gate_open(struct pool *p)
{
    struct pool_conn *list = p->gated;
    p->gated = NULL;
    p->ngated = 0;
    while (list) {
        struct pool_conn *c = list;
        list = c->gnext;
        c->gated = 0;
        c->gnext = NULL;
        if (c->conn) {
            client_conn_resume(c->conn);
        }
    }
}

static void pool_lane_wake(struct loop_timer *t)
{
    struct pool_lane *l = t->owner;
    struct pool_conn *list = l->waiting;
    l->waiting = NULL;
    while (list) {
        struct pool_conn *c = list;
        list = c->wnext;
        c->waiting = 0;
        c->wnext = NULL;
        if (c->conn) {
            client_conn_resume(c->conn);
        }
    }
}

/* Once per connection: as soon as it is known (a handshake, full or
 * resumed, or a session that got ready without TLS), else as it closes, in
 * none. So every connection opened, one that failed to connect, to finish
 * its handshake or its EHLO included, is in exactly one of the three. */
static void pool_count_tls(struct pool_conn *c, int closing)
{
    if (c->tls_counted || !c->conn) {
        return;
    }
    const struct tls_info *t = client_conn_tls(c->conn);
    struct pool_isp_stats *st = &c->lane->isp->st;
    if (t && t->resumed) {
        st->tls_resumed++;
    } else if (t) {
        st->tls_full++;
    } else if (c->ready || closing) {
        st->tls_none++;
    } else {
        return;
    }
    c->tls_counted = 1;
}

static void pool_unlinger(struct pool_conn *c)
{
    if (!c->lingering) {
        return;
    }
    struct pool_conn **pp = &c->dest->lingering;
    while (*pp && *pp != c) {
        pp = &(*pp)->lnext;
    }
    if (*pp) {
        *pp = c->lnext;
    }
    if (c->iprev) {
        c->iprev->inext = c->inext;
    } else {
        c->lane->idle = c->inext;
    }
    if (c->inext) {
        c->inext->iprev = c->iprev;
    }
    c->lingering = 0;
    c->lnext = c->inext = c->iprev = NULL;
    loop_timer_cancel(c->pool->loop, &c->linger);
}

/* c's destination has nothing for it: wait POOL_LINGER_MS for more. */
static void pool_linger_start(struct pool_conn *c)
{
    c->lingering = 1;
    c->lnext = c->dest->lingering;
    c->dest->lingering = c;
    c->iprev = NULL;
    c->inext = c->lane->idle;
    if (c->inext) {
        c->inext->iprev = c;
    }
    c->lane->idle = c;
    loop_timer_set(c->pool->loop, &c->linger, POOL_LINGER_MS);
}

/* Should an idle session of l give its slot up now? Only when l is full
 * and the last pump found a destination of the ISP with no slot, beyond
 * those already being freed: otherwise it lingers for its own destination. */
static int pool_lane_starved(const struct pool_lane *l)
{
    return l->max_connections && l->open >= l->max_connections &&
           l->isp->starved > l->isp->yielding;
}

static void pool_conn_set_yielding(struct pool_conn *c, int on)
{
    if (c->yielding != on) {
        c->yielding = on;
        if (on) {
            c->lane->isp->yielding++;
        } else {
            c->lane->isp->yielding--;
        }
    }
}

/* Make a lingering session QUIT now, for another destination's sake. */
static void pool_conn_yield(struct pool_conn *c)
{
    pool_unlinger(c);
    c->linger_over = 1;
    pool_conn_set_yielding(c, 1);
    if (c->conn) {
        client_conn_resume(c->conn);
    }
}

/* After a pump: free as many slots of isp's full lanes as its starved
 * destinations need, from sessions idling for destinations with nothing queued. */
static void pool_isp_yield(struct pool_isp *isp)
{
    for (size_t i = 0; i < isp->nlanes && isp->starved > isp->yielding; i++) {
        struct pool_lane *l = &isp->lanes[i];
        while (l->idle && pool_lane_starved(l)) {
            pool_conn_yield(l->idle);
        }
    }
}

static void pool_linger_over(struct loop_timer *t)
{
    struct pool_conn *c = t->owner;
    pool_unlinger(c);
    c->linger_over = 1;
    if (c->conn) {
        client_conn_resume(c->conn); /* nothing came: QUIT */
    }
}

/* A message arrived for d: wake one lingering session. */
static void pool_wake_lingering(struct pool_dest *d)
{
    struct pool_conn *c = d->lingering;
    if (c) {
        pool_unlinger(c);
        if (c->conn) {
            client_conn_resume(c->conn);
        }
    }
}

static int pool_same_body(const struct pool_msg *a, const struct pool_msg *b)
{
    return a->data == b->data && a->len == b->len &&
           (a->mail_from == b->mail_from || strcmp(a->mail_from, b->mail_from) == 0);
}

/* The transaction for c: m (its message token taken) and the messages right
 * behind it on the queue that share its body, up to the ISP's
 * max_rcpts_per_msg, each taking a message token of the lane if one is there
 * (msg_rate counts recipients: each is a message in a mailbox). */
static void pool_batch_take(struct pool_conn *c, struct pool_msg *m, uint64_t now)
{
    struct pool *p = c->pool;
    struct pool_dest *d = c->dest;
    struct pool_isp *isp = c->lane->isp;
    size_t cap = isp->max_rcpts_per_msg ? isp->max_rcpts_per_msg : POOL_RCPTS_DEFAULT;
    size_t n = 1;
    for (struct pool_msg *x = d->head; x && n < cap && pool_same_body(m, x); x = x->next) {
        if (p->opt.may_send && !p->opt.may_send(p->opt.user, x, 0)) {
            break;
        }
        if (!token_bucket_take(&c->lane->msgs, 1, now)) {
            break;
        }
        n++;
    }
    if (n == 1) {
        c->batch = &c->one;
        c->rcpts = &c->rcpt1;
        c->sent = &c->sent1;
    } else {
        char *block = pool_xcalloc(1, n * (sizeof *c->rcpts + sizeof *c->batch + 1));
        c->rcpts = (struct smtp_rcpt *)(void *)block;
        c->batch = (struct pool_msg **)(void *)(block + n * sizeof *c->rcpts);
        c->sent = (unsigned char *)(block + n * (sizeof *c->rcpts + sizeof *c->batch));
    }
    c->nbatch = n;
    c->batch[0] = m;
    for (size_t i = 1; i < n; i++) {
        c->batch[i] = pool_dequeue(p, d);
    }
    for (size_t i = 0; i < n; i++) {
        memset(&c->rcpts[i], 0, sizeof c->rcpts[i]);
        c->rcpts[i].address = c->batch[i]->rcpt_ascii ? c->batch[i]->rcpt_ascii : c->batch[i]->rcpt;
        c->sent[i] = 0;
    }
}

/* May d's head start a transaction? The owner is also told of the messages
 * right behind it, two per connection of d (at most POOL_GATE_AHEAD): what
 * it needs before saying yes (a campaign's arm commit) is then asked for
 * them together, and the next connections find theirs ready instead of
 * waiting one commit each. */
static int pool_may_send(struct pool *p, struct pool_dest *d)
{
    int ok = p->opt.may_send(p->opt.user, d->head, 0);
    unsigned ahead = 2 * d->nconns < POOL_GATE_AHEAD ? 2 * d->nconns : POOL_GATE_AHEAD;
    struct pool_msg *m = d->head->next;
    for (unsigned i = 1; m && i < ahead; i++, m = m->next) {
        p->opt.may_send(p->opt.user, m, 1);
    }
    return ok;
}

static struct smtp_message *pool_next_message(void *owner)
{
    struct pool_conn *c = owner;
    struct pool *p = c->pool;
    struct pool_dest *d = c->dest;
    struct pool_lane *l = c->lane;
    uint64_t now = pool_now(p);
    if (!c->ready) {
        c->ready = 1;
        pool_count_tls(c, 0);
        if (c->cfg.smtp.tls_policy == SMTP_TLS_OPPORTUNISTIC && !client_conn_tls(c->conn) &&
            !d->warned_plaintext) {
            d->warned_plaintext = 1; /* the opportunistic row of the TLS table: say so */
            fprintf(stderr,
                    "ringmail: WARNING: %s: %s (%s) has no working STARTTLS; mail for it goes IN "
                    "PLAINTEXT (policy opportunistic)\n",
                    d->is_relay ? "relay" : d->domain, c->host, c->addr);
        }
    }
    if (!d->proven) {
        d->proven = 1; /* the first ready session: now the pool may open the rest */
        pool_kick(p);
    }
    if (!p->stopped && !d->head && !d->fatal_reason[0] && !c->linger_over) {
        if (pool_lane_starved(l)) {
            pool_conn_set_yielding(c, 1); /* another destination needs the slot: QUIT now */
            return NULL;
        }
        pool_linger_start(c);
        return SMTP_MESSAGE_WAIT;
    }
    c->linger_over = 0;
    if (p->stopped || !d->head || d->fatal_reason[0]) {
        return NULL;
    }
    if (pool_lane_paused(l, now)) {
        return NULL; /* backoff or suspension: close, reopen when the pause ends */
    }
    if (p->opt.may_send && !pool_may_send(p, d)) {
        /* The owner must allow the body first (a campaign arms it in the
         * database): idle, no timer, until pool_gate_open. */
        c->gated = 1;
        c->gnext = p->gated;
        p->gated = c;
        p->ngated++;
        return SMTP_MESSAGE_WAIT;
    }
    double rate = pool_lane_rate(l, now);
    if (rate != l->msgs.rate) {
        token_bucket_set_rate(&l->msgs, rate, now);
    }
    if (!token_bucket_take(&l->msgs, 1, now)) {
        c->waiting = 1;
        c->wnext = l->waiting;
        l->waiting = c;
        uint64_t wait = token_bucket_wait_ms(&l->msgs, 1, now);
        pool_timer_at(p, &l->timer, now + (wait ? wait : 1));
        return SMTP_MESSAGE_WAIT;
    }
    struct pool_msg *m = pool_dequeue(p, d);
    pool_conn_set_yielding(c, 0); /* mail came for it after all: it stays */
    pool_batch_take(c, m, now);
    c->txn_started_ms = loop_clock_ms(p->loop);
    c->sm.mail_from = m->mail_from;
    c->sm.rcpts = c->rcpts;
    c->sm.nrcpts = c->nbatch;
    c->sm.data = m->data;
    c->sm.len = m->len;
    c->sm.data_in_flight = 0;
    c->sm.user = m;
    return &c->sm;
}

static void pool_batch_release(struct pool_conn *c)
{
    if (c->batch != &c->one) {
        free(c->rcpts); /* one block: rcpts, then batch, then sent */
    }
    c->batch = NULL;
    c->rcpts = NULL;
    c->sent = NULL;
    c->nbatch = 0;
}

static void pool_message_done(void *owner, struct smtp_message *sm)
{
    struct pool_conn *c = owner;
    struct pool *p = c->pool;
    struct pool_dest *d = c->dest;
    size_t n = c->nbatch;
    if (n == 0) {
        return;
    }
    int requeued = 0;
    for (size_t i = 0; i < n; i++) {
        if (sm->rcpts[i].code > 0) {
            c->transacted = 1;
            if (d->targets && c->target < d->ntargets) {
                d->targets[c->target].down_until = 0;
            }
        }
    }
    pool_count_tls(c, 0);
    /* Back to the front in reverse, so the queue keeps its order. No
     * attempt is spent: the server closed (421) or fell out of step before
     * the message was tried. */
    const struct smtp_rcpt *why = NULL;
    for (size_t i = n; i-- > 0;) {
        if (sm->rcpts[i].outcome == SMTP_OUTCOME_RETRY) {
            pool_enqueue(p, d, c->batch[i], 1);
            requeued = 1;
            why = &sm->rcpts[i];
        }
    }
    if (why && why->code > 0 && c->lane->isp->cfg) {
        /* A 421 that sends messages back still slows the lane if a reply
         * rule says so (421 4.7.28 => backoff ...), or they would come
         * straight back to a server that asked us to go away. */
        const struct config_rule *rule =
            config_rule_match(c->lane->isp->cfg, why->code, why->enhanced, why->text);
        if (rule && rule->action != CONFIG_ACTION_BOUNCE) {
            pool_backoff(p, c->lane, rule);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct smtp_rcpt *r = &sm->rcpts[i];
        if (r->outcome != SMTP_OUTCOME_RETRY) {
            pool_settle(p, c->batch[i], c, r->outcome, r->reason, r->code, r->enhanced, r->text,
                        sm->data_in_flight && c->sent[i]);
        }
    }
    pool_batch_release(c);
    if (requeued) {
        pool_kick(p);
    }
}

static int pool_reason_is_auth(const char *reason)
{
    return strncmp(reason, "auth_", 5) == 0;
}

static void pool_session_failed(void *owner, enum smtp_outcome o, const char *reason,
                                const struct smtp_reply *reply, const char *text)
{
    struct pool_conn *c = owner;
    struct pool *p = c->pool;
    struct pool_dest *d = c->dest;
    uint64_t now = pool_now(p);
    struct smtp_rcpt why; /* the failure in the form every outcome has */
    memset(&why, 0, sizeof why);
    smtp_rcpt_set(&why, o, reason, reply, text);
    pool_count_tls(c, 0);
    if (why.code > 0 && c->lane->isp->cfg) {
        const struct config_rule *rule =
            config_rule_match(c->lane->isp->cfg, why.code, why.enhanced, why.text);
        if (rule && rule->action != CONFIG_ACTION_BOUNCE) {
            pool_backoff(p, c->lane, rule);
        }
    }
    if (pool_reason_is_auth(reason)) {
        /* Our credentials or the server's AUTH support: no retry will fix it. */
        snprintf(d->fatal_reason, sizeof d->fatal_reason, "%s", reason);
        if (why.code) {
            snprintf(d->fatal_text, sizeof d->fatal_text, "%d %s %.400s", why.code, why.enhanced,
                     why.text);
        } else {
            snprintf(d->fatal_text, sizeof d->fatal_text, "%s", why.text);
        }
        fprintf(stderr, "ringmail: %s: %s: %s (every message for it fails)\n",
                d->is_relay ? "relay" : d->domain, reason, d->fatal_text);
        pool_fail_queue(p, d, SMTP_OUTCOME_FAILED, d->fatal_reason, 0, "", d->fatal_text);
        return;
    }
    if (p->opt.tls_override ? p->opt.tls == SMTP_TLS_OPPORTUNISTIC
                            : c->lane->isp->tls == SMTP_TLS_OPPORTUNISTIC) {
        if (!d->skip_starttls && strcmp(reason, "tls_handshake_failed") == 0) {
            d->skip_starttls = 1; /* the table's opportunistic row: plaintext next time */
            return;
        }
    }
    /* This address failed before any transaction: skip it for a while. */
    if (c->target < d->ntargets) {
        d->targets[c->target].down_until = now + POOL_DOWN_MS;
    }
    int any_up = 0;
    for (size_t i = 0; i < d->ntargets; i++) {
        any_up |= d->targets[i].down_until <= now;
    }
    if (!any_up) {
        /* Every exchanger failed: each waiting message takes one attempt,
         * and the next round starts again with a single connection. */
        d->proven = 0;
        for (size_t i = 0; i < d->ntargets; i++) {
            d->targets[i].down_until = 0;
        }
        char text2[SMTP_TEXT_MAX + 96];
        snprintf(text2, sizeof text2, "%s (%s; %zu address%s tried)", why.text, c->addr,
                 d->ntargets, d->ntargets == 1 ? "" : "es");
        pool_fail_queue(p, d,
                        o == SMTP_OUTCOME_REJECTED ? SMTP_OUTCOME_REJECTED : SMTP_OUTCOME_DEFERRED,
                        reason, why.code, why.enhanced, text2);
    }
}

static void pool_data_starting(void *owner, struct smtp_message *sm)
{
    struct pool_conn *c = owner;
    for (size_t i = 0; i < c->nbatch; i++) {
        /* A recipient still open at DATA is one the body goes to. */
        c->sent[i] = sm->rcpts[i].outcome == SMTP_OUTCOME_NONE;
        if (c->sent[i] && c->pool->opt.on_data) {
            c->pool->opt.on_data(c->pool->opt.user, c->batch[i]);
        }
    }
}

static const struct smtp_client_ops pool_ops = {
    .next_message = pool_next_message,
    .message_done = pool_message_done,
    .session_failed = pool_session_failed,
    .data_starting = pool_data_starting,
};

static void pool_conn_closed(void *owner, struct client_conn *conn)
{
    struct pool_conn *c = owner;
    struct pool *p = c->pool;
    (void)conn;
    pool_count_tls(c, 1);
    pool_conn_unwait(c);
    pool_conn_ungate(c);
    pool_unlinger(c);
    if (c->yielding) {
        /* Its slot goes to a starved destination (the pump that follows
         * counts again). */
        pool_conn_set_yielding(c, 0);
        if (c->lane->isp->starved) {
            c->lane->isp->starved--;
        }
    }
    /* Cannot happen: the machine settles every message before on_closed. */
    for (size_t i = c->nbatch; i-- > 0;) {
        pool_enqueue(p, c->dest, c->batch[i], 1);
    }
    pool_batch_release(c);
    c->lane->open--;
    c->lane->isp->st.open--;
    c->dest->nconns--;
    p->open--;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        p->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    free(c);
    pool_kick(p);
}

static struct tls_ctx *pool_tls_ctx(struct pool *p, enum smtp_tls_policy policy)
{
    if (policy == SMTP_TLS_NONE) {
        return NULL;
    }
    struct tls_ctx **slot = policy == SMTP_TLS_VERIFY ? &p->ctx_verify : &p->ctx_plain;
    if (!*slot) {
        char err[256];
        struct tls_client_options o = {
            .ca_file = p->opt.ca_file,
            .verify_peer = policy == SMTP_TLS_VERIFY,
        };
        *slot = tls_client_ctx_new(&o, err, sizeof err);
        if (!*slot) {
            fprintf(stderr, "ringmail: TLS: %s\n", err);
            return NULL;
        }
        client_conn_tls_setup(*slot);
    }
    return *slot;
}

/* The first address of d not marked down, in MX order; -1 when all are. */
static long pool_target_pick(struct pool_dest *d, uint64_t now)
{
    for (size_t i = 0; i < d->ntargets; i++) {
        if (d->targets[i].down_until <= now) {
            return (long)i;
        }
    }
    return -1;
}

static void pool_conn_open(struct pool *p, struct pool_dest *d, struct pool_lane *l, size_t ti)
{
    struct pool_conn *c = pool_xcalloc(1, sizeof *c);
    struct pool_isp *isp = l->isp;
    const struct pool_target *t = &d->targets[ti];
    c->pool = p;
    c->dest = d;
    c->lane = l;
    c->target = ti;
    snprintf(c->host, sizeof c->host, "%s", t->host);
    netaddr_format((const struct sockaddr *)&t->addr, c->addr, sizeof c->addr);
    enum smtp_tls_policy policy = p->opt.tls_override ? p->opt.tls : isp->tls;
    struct client_conn_config *cfg = &c->cfg;
    cfg->addr = t->addr;
    cfg->addrlen = t->addrlen;
    if (p->nsources) {
        cfg->source = p->sources[l->source].ss;
        cfg->source_len = p->sources[l->source].len;
    }
    cfg->server_name = d->server_name ? d->server_name : c->host;
    cfg->tls_ctx = pool_tls_ctx(p, policy);
    if (!cfg->tls_ctx && policy != SMTP_TLS_NONE) {
        policy = SMTP_TLS_NONE; /* unreachable in practice: the contexts are made at start */
    }
    cfg->session_cache = p->cache;
    cfg->session_key =
        tls_session_cache_key(c->session_key, sizeof c->session_key, cfg->server_name,
                              (const struct sockaddr *)&cfg->addr, smtp_tls_policy_name(policy));
    uint64_t tmo = isp->timeout_ms ? isp->timeout_ms : p->opt.timeout_ms;
    cfg->smtp.helo_name = p->opt.helo;
    cfg->smtp.tls_policy = policy;
    cfg->smtp.implicit_tls = d->is_relay && p->opt.relay_implicit_tls;
    cfg->smtp.skip_starttls = d->skip_starttls;
    if (d->is_relay) {
        cfg->smtp.auth_user = p->opt.auth_user;
        cfg->smtp.auth_pass = p->opt.auth_pass;
    }
    cfg->smtp.max_msgs = l->max_msgs_per_conn;
    cfg->smtp.timeout_greeting_ms = tmo ? (unsigned)tmo : 30000;
    cfg->smtp.timeout_command_ms = tmo ? (unsigned)tmo : 30000;
    cfg->smtp.timeout_data_ms = tmo ? (unsigned)tmo : 30000;
    cfg->smtp.timeout_data_done_ms = tmo ? (unsigned)tmo : 60000;
    cfg->timeout_connect_ms = tmo ? (unsigned)tmo : 10000;
    cfg->timeout_tls_ms = tmo ? (unsigned)tmo : 30000;
    loop_timer_init(&c->linger, pool_linger_over, c);
    c->conn = client_conn_new(p->loop, cfg, &pool_ops, pool_conn_closed, c);
    if (!c->conn) {
        fprintf(stderr, "ringmail: out of memory opening a connection\n");
        abort();
    }
    l->open++;
    isp->st.open++;
    isp->st.connections++;
    d->nconns++;
    p->open++;
    c->next = p->conns;
    if (p->conns) {
        p->conns->prev = c;
    }
    p->conns = c;
    client_conn_start(c->conn);
}

/* Every lane of isp is at its max_connections. */
static int pool_isp_full(const struct pool_isp *isp)
{
    for (size_t i = 0; i < isp->nlanes; i++) {
        const struct pool_lane *l = &isp->lanes[i];
        if (!l->max_connections || l->open < l->max_connections) {
            return 0;
        }
    }
    return isp->nlanes > 0;
}

/* Open the connections the queues need and the lanes allow. */
static void pool_pump(struct loop_timer *t)
{
    struct pool *p = t->owner;
    if (p->stopped) {
        return;
    }
    uint64_t now = pool_now(p);
    uint64_t wake = UINT64_MAX;
    unsigned cap = p->opt.max_connections ? p->opt.max_connections : 1000;
    struct pool_dest *next;
    for (size_t i = 0; i < p->nisps; i++) {
        p->isps[i]->starved = 0;
    }
    for (struct pool_dest *d = p->active; d; d = next) {
        next = d->anext;
        if (d->fatal_reason[0]) {
            pool_fail_queue(p, d, SMTP_OUTCOME_FAILED, d->fatal_reason, 0, "", d->fatal_text);
            continue;
        }
        if (d->state == DEST_NEW ||
            (d->state == DEST_READY && d->expires_ms <= now && d->nconns == 0)) {
            pool_dest_resolve(p, d); /* a route is ready at once; DNS calls back */
        }
        if (d->state != DEST_READY) {
            continue;
        }
        /* Idle connections of this lane waiting for tokens count as capacity. */
        /* Until one session to d got ready, one connection at a time: a
         * wrong password or a dead exchanger costs one attempt, not one
         * per waiting message. */
        unsigned dcap = d->isp->max_connections ? UINT32_MAX : POOL_DEST_CONNECTIONS;
        if (d->queued > d->nconns && d->nconns < dcap && (d->proven || d->nconns == 0) &&
            pool_isp_full(d->isp)) {
            /* No slot: count what it would open, for the idle sessions to yield. */
            size_t want = d->proven ? d->queued - d->nconns : 1;
            size_t room = dcap - d->nconns;
            d->isp->starved += (unsigned)(want < room ? want : room);
            continue;
        }
        while (d->queued > d->nconns && p->open < cap && d->nconns < dcap &&
               (d->proven || d->nconns == 0)) {
            long ti = pool_target_pick(d, now);
            if (ti < 0) {
                /* Every address is resting: pump again when the first is back. */
                for (size_t i = 0; i < d->ntargets; i++) {
                    wake = d->targets[i].down_until < wake ? d->targets[i].down_until : wake;
                }
                break;
            }
            struct pool_lane *l = pool_lane_pick(p, d->isp, now, &wake);
            if (!l) {
                break;
            }
            pool_conn_open(p, d, l, (size_t)ti);
        }
    }
    for (size_t i = 0; i < p->nisps; i++) {
        pool_isp_yield(p->isps[i]);
    }
    if (wake != UINT64_MAX) {
        /* Not a plain set: a kick during this pass (a connection that
         * closed at once, a message settled) asked for an earlier run. */
        pool_timer_at(p, &p->pump_timer, wake > now ? wake : now + 1);
    }
}

/* Something changed (a message queued, a connection closed, a reload):
 * pump now, even when the pump is armed for a later deadline. */
static void pool_kick(struct pool *p)
{
    pool_timer_at(p, &p->pump_timer, pool_now(p));
}

static int pool_is_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] >= 0x80) {
            return 0;
        }
    }
    return 1;
}

static void pool_route(struct pool *p, struct pool_msg *m)
{
    const char *at = strrchr(m->rcpt, '@');
    if (!at || at == m->rcpt || !at[1]) {
        m->dest = NULL;
        pool_settle(p, m, NULL, SMTP_OUTCOME_FAILED, "invalid_address", 0, "",
                    "the address has no local part or no domain", 0);
        return;
    }
    const char *domain = at + 1;
    char ascii[256];
    if (!pool_is_ascii(domain, strlen(domain))) {
        /* An IDN domain: one destination per A-label form (however it was
         * written), and with an ASCII local part the RCPT names the A-label
         * too, so no SMTPUTF8 is needed (RFC 6531 3.2 asks it only for a
         * non-ASCII local part). */
        const char *why = "";
        if (dns_domain_ascii(domain, ascii, sizeof ascii, &why) < 0) {
            char text[300];
            snprintf(text, sizeof text, "the domain is not a valid (IDN) domain name: %s", why);
            m->dest = NULL;
            pool_settle(p, m, NULL, SMTP_OUTCOME_REJECTED, "bad_domain", 0, "", text, 0);
            return;
        }
        domain = ascii;
        size_t local = (size_t)(at - m->rcpt);
        if (!m->rcpt_ascii && pool_is_ascii(m->rcpt, local)) {
            size_t n = local + 1 + strlen(ascii) + 1;
            m->rcpt_ascii = pool_xcalloc(1, n);
            snprintf(m->rcpt_ascii, n, "%.*s@%s", (int)local, m->rcpt, ascii);
        }
    }
    struct pool_dest *d = p->relay ? p->relay : pool_dest_get(p, domain);
    if (d->fatal_reason[0]) {
        m->dest = d;
        pool_settle(p, m, NULL, SMTP_OUTCOME_FAILED, d->fatal_reason, 0, "", d->fatal_text, 0);
        return;
    }
    pool_enqueue(p, d, m, 0);
    pool_kick(p);
}

/* ---- public ---- */

void pool_submit(struct pool *p, struct pool_msg *m)
{
    m->next = NULL;
    m->dest = NULL;
    if (!m->first_ms) {
        m->first_ms = pool_now(p) ? pool_now(p) : 1; /* max_age counts from here */
    }
    p->pending++;
    pool_route(p, m);
}

static int pool_sources_init(struct pool *p, char *err, size_t errlen)
{
    p->nsources = 0;
    p->weight_total = 0;
    size_t n = p->opt.nsources ? p->opt.nsources : p->config->nsources;
    if (n > POOL_MAX_SOURCES) {
        snprintf(err, errlen, "too many source addresses");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct pool_source *s = &p->sources[i];
        const char *a = p->opt.nsources ? p->opt.sources[i] : p->config->sources[i].addr;
        s->weight = p->opt.nsources ? 1 : p->config->sources[i].weight;
        snprintf(s->addr, sizeof s->addr, "%s", a);
        memset(&s->ss, 0, sizeof s->ss);
        struct sockaddr_in *in4 = (struct sockaddr_in *)&s->ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&s->ss;
        if (inet_pton(AF_INET, a, &in4->sin_addr) == 1) {
            in4->sin_family = AF_INET;
            s->len = sizeof *in4;
        } else if (inet_pton(AF_INET6, a, &in6->sin6_addr) == 1) {
            in6->sin6_family = AF_INET6;
            s->len = sizeof *in6;
        } else {
            snprintf(err, errlen, "source '%s' is not an IPv4 or IPv6 address", a);
            return -1;
        }
        p->weight_total += s->weight;
        p->nsources++;
    }
    return 0;
}

int pool_check_config(const struct pool *p, const struct config *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < c->nisps; i++) {
        const struct config_isp *isp = &c->isps[i];
        for (size_t k = 0; k < isp->nlanes; k++) {
            const char *a = isp->lanes[k].source;
            int found = 0;
            for (size_t j = 0; j < p->nsources && !found; j++) {
                found = config_address_equal(a, p->sources[j].addr);
            }
            if (!found) {
                /* Its limits would never apply: a typo must not leave a warming IP
                 * at the ISP's full rate. */
                snprintf(err, errlen,
                         "[isp %s source %s]: %s is not one of the source addresses in use (%s)",
                         isp->name, a, a,
                         p->nsources ? "the config's source lines or --source" : "there are none");
                return -1;
            }
        }
    }
    return 0;
}

struct pool *pool_new(struct loop *loop, const struct pool_options *o, char *err, size_t errlen)
{
    struct pool *p = pool_xcalloc(1, sizeof *p);
    p->loop = loop;
    p->opt = *o;
    p->config = o->config;
    if (!p->opt.mx_port) {
        p->opt.mx_port = 25;
    }
    if (!p->opt.helo) {
        p->opt.helo = "ringmail.localdomain";
    }
    loop_timer_init(&p->pump_timer, pool_pump, p);
    loop_timer_init(&p->retry_timer, pool_retry_due, p);
    if (pool_sources_init(p, err, errlen) < 0 || pool_check_config(p, p->config, err, errlen) < 0) {
        pool_free(p);
        return NULL;
    }
    pool_isps_sync(p);
    if (!o->relay) {
        p->dns = dns_new(loop, o->resolver, 0, err, errlen); /* 2 s per try, 2 tries */
        if (!p->dns) {
            pool_free(p);
            return NULL;
        }
    } else {
        p->relay = pool_xcalloc(1, sizeof *p->relay);
        snprintf(p->relay->domain, sizeof p->relay->domain, "[relay]");
        p->relay->is_relay = 1;
        p->relay->pool = p;
        char host[256];
        struct sockaddr_storage ss;
        socklen_t len;
        if (netaddr_parse(o->relay, &ss, &len, host, sizeof host, err, errlen) < 0) {
            pool_free(p);
            return NULL;
        }
        snprintf(p->relay_host, sizeof p->relay_host, "%s", host);
        p->relay->server_name = p->relay_host;
        pool_dest_fixed(p, p->relay, o->relay);
    }
    /* Make the TLS contexts now, so a bad CA file is an error at start. */
    for (size_t i = 0; i < p->nisps; i++) {
        enum smtp_tls_policy pol = o->tls_override ? o->tls : p->isps[i]->tls;
        if (pol != SMTP_TLS_NONE && !pool_tls_ctx(p, pol)) {
            snprintf(err, errlen, "cannot set up TLS (see above)");
            pool_free(p);
            return NULL;
        }
    }
    p->cache = tls_session_cache_new();
    return p;
}

void pool_reload(struct pool *p, struct config *c)
{
    struct config *old = p->config;
    p->config = c;
    pool_isps_sync(p);
    for (size_t i = 0; i < p->nisps; i++) {
        enum smtp_tls_policy pol = p->opt.tls_override ? p->opt.tls : p->isps[i]->tls;
        pool_tls_ctx(p, pol);
        for (size_t k = 0; k < p->isps[i]->nlanes; k++) {
            struct pool_lane *l = &p->isps[i]->lanes[k];
            if (l->waiting) {
                loop_timer_set(p->loop, &l->timer, 0); /* new rate: ask again now */
            }
        }
    }
    config_free(old);
    pool_kick(p);
}

void pool_stop(struct pool *p)
{
    if (p->stopped) {
        return;
    }
    p->stopped = 1;
    loop_timer_cancel(p->loop, &p->pump_timer);
    loop_timer_cancel(p->loop, &p->retry_timer);
    for (size_t i = 0; i < p->nisps; i++) {
        for (size_t k = 0; k < p->isps[i]->nlanes; k++) {
            struct pool_lane *l = &p->isps[i]->lanes[k];
            loop_timer_cancel(p->loop, &l->timer);
            /* Idle connections hear "no more messages" and QUIT. */
            pool_lane_wake(&l->timer);
        }
    }
    struct pool_conn *next;
    for (struct pool_conn *c = p->conns; c; c = next) {
        next = c->next; /* resuming may close c */
        pool_unlinger(c);
        pool_conn_ungate(c);
        if (c->conn && client_conn_idle(c->conn)) {
            client_conn_resume(c->conn);
        }
    }
    if (p->dns) {
        dns_free(p->dns);
        p->dns = NULL;
    }
}

void pool_release_all(struct pool *p, void (*release)(void *user, struct pool_msg *m))
{
    for (size_t b = 0; b < POOL_DEST_BUCKETS; b++) {
        for (struct pool_dest *d = p->buckets[b]; d; d = d->hnext) {
            struct pool_msg *m;
            while ((m = pool_dequeue(p, d)) != NULL) {
                p->pending--;
                pool_msg_private_free(m);
                release(p->opt.user, m);
            }
        }
    }
    if (p->relay) {
        struct pool_msg *m;
        while ((m = pool_dequeue(p, p->relay)) != NULL) {
            p->pending--;
            pool_msg_private_free(m);
            release(p->opt.user, m);
        }
    }
    while (p->nheap > 0) {
        p->pending--;
        struct pool_msg *m = pool_heap_pop(p);
        pool_msg_private_free(m);
        release(p->opt.user, m);
    }
}

size_t pool_pending(const struct pool *p)
{
    return p->pending;
}

size_t pool_retry_depth(const struct pool *p)
{
    return p->nheap;
}

unsigned pool_gated_connections(const struct pool *p)
{
    return p->ngated;
}

unsigned pool_open_connections(const struct pool *p)
{
    return p->open;
}

size_t pool_isp_stats(struct pool *p, struct pool_isp_stats *out, size_t max)
{
    uint64_t now = pool_now(p);
    for (size_t i = 0; i < p->nisps && i < max; i++) {
        struct pool_isp *isp = p->isps[i];
        struct pool_isp_stats *s = &out[i];
        *s = isp->st;
        s->queued = isp->queued;
        s->rate_limit = 0;
        s->backoff = 1.0;
        s->paused = 0;
        for (size_t k = 0; k < isp->nlanes; k++) {
            struct pool_lane *l = &isp->lanes[k];
            double f = backoff_factor(&l->bo, now);
            if (l->msg_rate < 0 || s->rate_limit < 0) {
                s->rate_limit = -1; /* one unlimited lane: the ISP is unlimited */
            } else {
                s->rate_limit += l->msg_rate * f;
            }
            if (f < s->backoff) {
                s->backoff = f;
            }
            s->paused |= pool_lane_paused(l, now);
        }
    }
    return p->nisps;
}

void pool_metrics(struct pool *p, buf_t *out)
{
    size_t n = p->nisps;
    struct pool_isp_stats *st = pool_xcalloc(n ? n : 1, sizeof *st);
    pool_isp_stats(p, st, n);
    static const struct {
        const char *name, *type, *help;
    } heads[] = {
        {"ringmail_messages_total", "counter", "Delivery attempts by ISP and outcome."},
        {"ringmail_connections_opened_total", "counter", "SMTP connections opened."},
        {"ringmail_connections_open", "gauge", "SMTP connections open now."},
        {"ringmail_rate_limit", "gauge",
         "Effective message rate limit (msgs/s, backoff applied; -1 unlimited)."},
        {"ringmail_backoff_factor", "gauge", "Backoff rate factor (1 = full rate)."},
        {"ringmail_backoff_active", "gauge", "1 while some lane of the ISP is paused."},
        {"ringmail_backoff_triggers_total", "counter", "Reply rules that triggered backoff."},
        {"ringmail_tls_handshakes_total", "counter", "TLS handshakes by kind."},
        {"ringmail_queue_depth", "gauge", "Messages waiting on the ISP's destinations."},
    };
    for (size_t h = 0; h < sizeof heads / sizeof heads[0]; h++) {
        buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", heads[h].name, heads[h].help,
                    heads[h].name, heads[h].type);
        for (size_t i = 0; i < n; i++) {
            const struct pool_isp_stats *s = &st[i];
            const char *isp = s->name;
            switch (h) {
            case 0:
                buf_appendf(out, "%s{isp=\"%s\",outcome=\"accepted\"} %llu\n", heads[h].name, isp,
                            (unsigned long long)s->accepted);
                buf_appendf(out, "%s{isp=\"%s\",outcome=\"deferred\"} %llu\n", heads[h].name, isp,
                            (unsigned long long)s->deferred);
                buf_appendf(out, "%s{isp=\"%s\",outcome=\"rejected\"} %llu\n", heads[h].name, isp,
                            (unsigned long long)s->rejected);
                buf_appendf(out, "%s{isp=\"%s\",outcome=\"failed\"} %llu\n", heads[h].name, isp,
                            (unsigned long long)s->failed);
                break;
            case 1:
                buf_appendf(out, "%s{isp=\"%s\"} %llu\n", heads[h].name, isp,
                            (unsigned long long)s->connections);
                break;
            case 2:
                buf_appendf(out, "%s{isp=\"%s\"} %u\n", heads[h].name, isp, s->open);
                break;
            case 3:
                buf_appendf(out, "%s{isp=\"%s\"} %g\n", heads[h].name, isp, s->rate_limit);
                break;
            case 4:
                buf_appendf(out, "%s{isp=\"%s\"} %g\n", heads[h].name, isp, s->backoff);
                break;
            case 5:
                buf_appendf(out, "%s{isp=\"%s\"} %d\n", heads[h].name, isp, s->paused);
                break;
            case 6:
                buf_appendf(out, "%s{isp=\"%s\"} %llu\n", heads[h].name, isp,
                            (unsigned long long)s->backoff_triggers);
                break;
            case 7:
                buf_appendf(out, "%s{isp=\"%s\",kind=\"full\"} %llu\n", heads[h].name, isp,
                            (unsigned long long)s->tls_full);
                buf_appendf(out, "%s{isp=\"%s\",kind=\"resumed\"} %llu\n", heads[h].name, isp,
                            (unsigned long long)s->tls_resumed);
                break;
            default:
                buf_appendf(out, "%s{isp=\"%s\"} %zu\n", heads[h].name, isp, s->queued);
                break;
            }
        }
    }
    if (p->nsources) {
        /* Per lane: what a warming IP's operator watches. */
        uint64_t now = pool_now(p);
        buf_appendf(out, "# HELP ringmail_source_rate_limit Effective message rate limit of one "
                         "source address with the ISP (msgs/s, backoff applied; -1 unlimited).\n"
                         "# TYPE ringmail_source_rate_limit gauge\n");
        for (size_t i = 0; i < n; i++) {
            for (size_t k = 0; k < p->isps[i]->nlanes; k++) {
                struct pool_lane *l = &p->isps[i]->lanes[k];
                buf_appendf(out, "ringmail_source_rate_limit{isp=\"%s\",source=\"%s\"} %g\n",
                            p->isps[i]->name, p->sources[l->source].addr, pool_lane_rate(l, now));
            }
        }
        buf_appendf(out, "# HELP ringmail_source_connections_open SMTP connections open now from "
                         "one source address to the ISP.\n"
                         "# TYPE ringmail_source_connections_open gauge\n");
        for (size_t i = 0; i < n; i++) {
            for (size_t k = 0; k < p->isps[i]->nlanes; k++) {
                struct pool_lane *l = &p->isps[i]->lanes[k];
                buf_appendf(out, "ringmail_source_connections_open{isp=\"%s\",source=\"%s\"} %u\n",
                            p->isps[i]->name, p->sources[l->source].addr, l->open);
            }
        }
    }
    buf_appendf(out,
                "# HELP ringmail_retry_queue_depth Messages waiting for their next attempt.\n"
                "# TYPE ringmail_retry_queue_depth gauge\nringmail_retry_queue_depth %zu\n"
                "# HELP ringmail_pending Messages not yet final.\n"
                "# TYPE ringmail_pending gauge\nringmail_pending %zu\n",
                p->nheap, p->pending);
    free(st);
}

static void pool_dest_free(struct pool_dest *d)
{
    free(d->targets);
    free(d->mx);
    free(d);
}

void pool_free(struct pool *p)
{
    if (!p) {
        return;
    }
    pool_stop(p);
    for (size_t b = 0; b < POOL_DEST_BUCKETS; b++) {
        struct pool_dest *d = p->buckets[b];
        while (d) {
            struct pool_dest *n = d->hnext;
            pool_dest_free(d);
            d = n;
        }
    }
    if (p->relay) {
        pool_dest_free(p->relay);
    }
    for (size_t i = 0; i < p->nisps; i++) {
        free(p->isps[i]->lanes);
        free(p->isps[i]);
    }
    free(p->isps);
    free(p->heap);
    tls_session_cache_free(p->cache);
    tls_ctx_free(p->ctx_plain);
    tls_ctx_free(p->ctx_verify);
    config_free(p->config);
    free(p);
}
