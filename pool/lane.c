/*
 * lane - the pool's ISPs and their lanes. See deliver_int.h.
 *
 * An ISP's limits come from its [isp NAME] section (a source address may
 * have its own, [isp NAME source ADDR]); each ISP has one lane per source
 * address, the unit that is throttled: open connections, a message and a
 * connection token bucket, and backoff. New connections take a lane by
 * weighted round robin over the source addresses.
 *
 * Backoff (pool/throttle.h): every reply of a lane counts in its window;
 * a backoff rule's match cuts the lane's rate and pauses it only when the
 * share of matching replies passes the ISP's backoff_threshold. A suspend
 * rule pauses every lane of the ISP at once and is reported (on_suspend)
 * to be kept across a restart; pool_isp_suspend restores one. Each lane
 * remembers what started its pause (the reply and the rule) for the live
 * view.
 *
 * Holds (the complaint guard, pool_isp_hold): a held ISP's lanes count as
 * paused until pool_isp_release, whatever their backoff says; its queued
 * messages go back to the owner (on_held) or wait.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool/deliver_int.h"

double pool_lane_rate(struct pool_lane *l, uint64_t now)
{
    double base = l->msg_rate;
    return base < 0 ? -1 : base * backoff_factor(&l->bo, now);
}

int pool_lane_paused(struct pool_lane *l, uint64_t now)
{
    return l->isp->held || l->share_blocked || backoff_paused(&l->bo, now);
}

/* pool_lane_limits - the limits in force: the config's, or this node's
 * share of them */
static void pool_lane_limits(struct pool_lane *l, uint64_t now)
{
    unsigned k = l->share_nodes;
    l->max_connections = l->cfg_max_connections;
    l->msg_rate = l->cfg_msg_rate;
    l->conn_rate = l->cfg_conn_rate;
    l->share_none = 0;
    if (k > 1) {
        unsigned m = l->cfg_max_connections;
        if (m) {
            l->max_connections = m / k + (l->share_rank < m % k ? 1 : 0);
            l->share_none = l->max_connections == 0; /* 0 would read as unlimited */
        }
        if (l->msg_rate >= 0) {
            l->msg_rate /= k;
        }
        if (l->conn_rate >= 0) {
            l->conn_rate /= k;
        }
    }
    token_bucket_set_rate(&l->msgs, pool_lane_rate(l, now), now);
    token_bucket_set_rate(&l->conns, l->conn_rate, now);
}

/* The lane's backoff settings: [global]'s step and interval, the ISP's
 * threshold and window (else [global]'s). */
static void pool_lane_backoff_params(const struct pool *p, const struct config_isp *cfg,
                                     struct backoff_params *par)
{
    *par = (struct backoff_params){
        .step = p->config->backoff_step,
        .interval_ms = p->config->backoff_interval_ms,
        .threshold = config_backoff_threshold(p->config, cfg),
        .window_ms = config_backoff_window_ms(p->config, cfg),
        .floor = BACKOFF_FLOOR,
    };
}

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
        l->own = own != NULL;
        l->cfg_max_connections =
            set & CONFIG_LANE_MAX_CONNECTIONS ? own->max_connections : isp->max_connections;
        l->max_msgs_per_conn =
            set & CONFIG_LANE_MAX_MSGS_PER_CONN ? own->max_msgs_per_conn : isp->max_msgs_per_conn;
        l->cfg_msg_rate = set & CONFIG_LANE_MSG_RATE ? own->msg_rate : isp->msg_rate;
        l->cfg_conn_rate = set & CONFIG_LANE_CONN_RATE ? own->conn_rate : isp->conn_rate;
        struct backoff_params par;
        pool_lane_backoff_params(p, cfg, &par);
        backoff_configure(&l->bo, &par, now);
        pool_lane_limits(l, now);
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
        struct backoff_params par;
        pool_lane_backoff_params(p, cfg, &par);
        backoff_init(&l->bo, &par, now);
        token_bucket_init(&l->msgs, -1, 0, now);
        token_bucket_init(&l->conns, -1, 0, now);
        loop_timer_init(&l->timer, pool_lane_wake, l);
    }
    p->isps[p->nisps++] = isp;
    pool_isp_apply(p, isp, cfg);
    return isp;
}

struct pool_isp *pool_isp_named(struct pool *p, const char *name)
{
    for (size_t i = 0; i < p->nisps; i++) {
        if (strcmp(p->isps[i]->name, name) == 0) {
            return p->isps[i];
        }
    }
    return NULL;
}

/* A reload: what the new config changes, kept in it for the reload's message. */
static void pool_config_changes(struct pool *p)
{
    if (!p->synced || p->synced == p->config) {
        return;
    }
    buf_t diff = BUF_INIT;
    p->config->nchanges = config_diff(p->synced, p->config, &diff);
    free(p->config->changes);
    p->config->changes = p->config->nchanges ? strdup(buf_cstr(&diff)) : NULL;
    if (p->config->nchanges && !p->config->changes) {
        abort();
    }
    buf_free(&diff);
}

/* Make the ISP list match the config: update, add, and detach removed ones. */
void pool_isps_sync(struct pool *p)
{
    pool_config_changes(p);
    p->synced = p->config;
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

struct pool_isp *pool_isp_for(struct pool *p, const char *domain, const char *const *mx, size_t nmx)
{
    const struct config_isp *ci = config_isp_for(p->config, domain, mx, nmx);
    struct pool_isp *isp = ci ? pool_isp_named(p, ci->name) : NULL;
    return isp ? isp : pool_isp_named(p, "default");
}

/* A lane that may open a connection now, by weighted round robin over sources. */
struct pool_lane *pool_lane_pick(struct pool *p, struct pool_isp *isp, uint64_t now, uint64_t *wake)
{
    if (isp->held) {
        return NULL; /* no time lifts a hold: pool_isp_release kicks the pump */
    }
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
        if (l->share_none || (l->max_connections && l->open >= l->max_connections)) {
            continue; /* share_none: the cluster's connections are the other nodes' now */
        }
        if (l->waiting) {
            continue; /* its sessions already wait for message tokens: the rate limits, not
                         the number of connections */
        }
        if (pool_lane_paused(l, now)) {
            /* blocked: looked at again when the share changes (pool_kick), or in a second */
            uint64_t at = l->share_blocked && !l->isp->held ? now + 1000 : l->bo.paused_until;
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

/* A reply's text cut to fit n bytes: its start and its end (where
 * Microsoft puts "(S3150)") with " ... " between. */
static void pool_reply_fit(char *out, size_t n, const char *text)
{
    size_t len = strlen(text);
    if (len < n) {
        memcpy(out, text, len + 1);
        return;
    }
    size_t tail = n / 3, head = n - tail - 6; /* " ... " and the NUL */
    memcpy(out, text, head);
    memcpy(out + head, " ... ", 5);
    memcpy(out + head + 5, text + len - tail, tail);
    out[head + 5 + tail] = '\0';
}

/* "CODE ENHANCED TEXT (rule RULE[; EVIDENCE])" into why, within its size. */
static void pool_pause_why(char *why, size_t n, const struct config_rule *r, int code,
                           const char *enhanced, const char *text, const char *evidence)
{
    char rule[256], tail[400], reply[POOL_PAUSE_WHY_MAX];
    config_rule_text(r, rule, sizeof rule);
    snprintf(tail, sizeof tail, " (rule %s%s%s)", rule, evidence[0] ? "; " : "", evidence);
    size_t budget = n > strlen(tail) + 16 ? n - strlen(tail) : 16;
    char full[1200];
    size_t elen = enhanced ? strlen(enhanced) : 0;
    if (elen && text && strncmp(text, enhanced, elen) == 0 && (!text[elen] || text[elen] == ' ')) {
        enhanced = NULL; /* the text starts with it already */
    }
    snprintf(full, sizeof full, "%d%s%s%s%s", code, enhanced && enhanced[0] ? " " : "",
             enhanced ? enhanced : "", text && text[0] ? " " : "", text ? text : "");
    pool_reply_fit(reply, budget < sizeof reply ? budget : sizeof reply, full);
    snprintf(why, n, "%s%s", reply, tail);
}

static int64_t pool_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A suspend rule: every lane of the ISP paused at once, reported to be kept. */
static void pool_suspend_rule(struct pool *p, struct pool_lane *l, const struct config_rule *r,
                              int code, const char *enhanced, const char *text)
{
    uint64_t now = pool_now(p);
    struct pool_isp *isp = l->isp;
    if (backoff_suspended(&l->bo, now)) {
        return; /* a reply to what was in flight when it was suspended */
    }
    char why[POOL_PAUSE_WHY_MAX];
    pool_pause_why(why, sizeof why, r, code, enhanced, text, "");
    int started = 0;
    for (size_t i = 0; i < isp->nlanes; i++) {
        struct pool_lane *k = &isp->lanes[i];
        if (backoff_suspend(&k->bo, r->pause_ms, now)) {
            snprintf(k->why, sizeof k->why, "%s", why);
            started = 1;
        }
    }
    if (!started) {
        return;
    }
    isp->st.backoff_triggers++;
    char d[32];
    config_duration_text(r->pause_ms, d, sizeof d);
    fprintf(stderr, "ringmail: %s: suspended for %s: %s\n", isp->name, d, why);
    if (p->opt.on_suspend) {
        p->opt.on_suspend(p->opt.user, isp->name, pool_wall_ms() + (int64_t)r->pause_ms, why);
    }
}

void pool_backoff(struct pool *p, struct pool_lane *l, const struct config_rule *r, int code,
                  const char *enhanced, const char *text)
{
    if (r && r->action == CONFIG_ACTION_SUSPEND) {
        pool_suspend_rule(p, l, r, code, enhanced, text);
        return;
    }
    uint64_t now = pool_now(p);
    int matches = r && r->action == CONFIG_ACTION_BACKOFF;
    double before = matches ? pool_lane_rate(l, now) : 0;
    if (!backoff_reply(&l->bo, matches, matches ? r->cut : 1.0, matches ? r->pause_ms : 0, now)) {
        return;
    }
    char evidence[96];
    snprintf(evidence, sizeof evidence, "%u of %u replies matched, over %g%%", l->bo.cut_match,
             l->bo.cut_n, l->bo.par.threshold * 100);
    pool_pause_why(l->why, sizeof l->why, r, code, enhanced, text, evidence);
    token_bucket_set_rate(&l->msgs, pool_lane_rate(l, now), now);
    l->isp->st.backoff_triggers++;
    if (p->opt.on_backoff) {
        p->opt.on_backoff(p->opt.user, l->isp->name, l->bo.factor, r->pause_ms, l->why);
    }
    unsigned t = l->bo.triggers;
    if (t == 1 || (t & (t - 1)) == 0) {
        /* Loud, but not at every cut: the 1st, 2nd, 4th, 8th ... time. */
        char was[48], is[48];
        config_rate_text(before, was, sizeof was);
        config_rate_text(pool_lane_rate(l, now), is, sizeof is);
        fprintf(stderr, "ringmail: %s: backoff: rate %s -> %s, paused %.1f s: %s (%u time%s)\n",
                l->isp->name, was, is, (double)r->pause_ms / 1000.0, l->why, t, t == 1 ? "" : "s");
    }
}

void pool_isp_suspend(struct pool *p, const char *name, uint64_t ms, const char *why)
{
    struct pool_isp *isp = pool_isp_named(p, name);
    if (!isp) {
        isp = pool_isp_add(p, name, NULL); /* no domains: nothing is routed to it */
    }
    /* The clock read now, not the loop's last: before the loop runs that is
     * when it was made, and the end would come early by the setup's time. */
    uint64_t now = pool_clock_ms(p);
    for (size_t i = 0; i < isp->nlanes; i++) {
        struct pool_lane *l = &isp->lanes[i];
        if (backoff_suspend(&l->bo, ms, now)) {
            snprintf(l->why, sizeof l->why, "%s", why ? why : "");
        }
    }
    pool_kick(p); /* the pump sets its timer to the pause's end */
}

/* Should an idle session of l give its slot up now? Only when l is full
 * and the last pump found a destination of the ISP with no slot, beyond
 * those already being freed: otherwise it lingers for its own destination. */
int pool_lane_starved(const struct pool_lane *l)
{
    return (l->share_none || (l->max_connections && l->open >= l->max_connections)) &&
           l->isp->starved > l->isp->yielding;
}

/* Every lane of isp is at its max_connections. */
int pool_isp_full(const struct pool_isp *isp)
{
    for (size_t i = 0; i < isp->nlanes; i++) {
        const struct pool_lane *l = &isp->lanes[i];
        if (!l->share_none && (!l->max_connections || l->open < l->max_connections)) {
            return 0;
        }
    }
    return isp->nlanes > 0;
}

/* ---- holds: the complaint guard ---- */

void pool_held_hand_back(struct pool *p, struct pool_dest *d)
{
    if (!p->opt.on_held || !d->isp) {
        return;
    }
    struct pool_msg *m;
    while ((m = pool_dequeue(p, d)) != NULL) {
        p->pending--;
        d->isp->st.parked++;
        pool_msg_private_free(m);
        p->opt.on_held(p->opt.user, m, d->isp->name);
    }
}

void pool_isp_hold(struct pool *p, const char *name, const char *why)
{
    struct pool_isp *isp = pool_isp_named(p, name);
    if (!isp) {
        isp = pool_isp_add(p, name, NULL); /* no domains: nothing is routed to it */
    }
    isp->held = 1;
    snprintf(isp->held_why, sizeof isp->held_why, "%s", why ? why : "");
    pool_kick(p); /* the pump hands its queued messages back */
}

int pool_isp_release(struct pool *p, const char *name)
{
    struct pool_isp *isp = pool_isp_named(p, name);
    if (!isp || !isp->held) {
        return 0;
    }
    isp->held = 0;
    isp->held_why[0] = '\0';
    pool_kick(p);
    return 1;
}

int pool_isp_held(struct pool *p, const char *name)
{
    struct pool_isp *isp = pool_isp_named(p, name);
    return isp && isp->held;
}

/* ---- the cluster's shares (campaign/send_cluster.c) ---- */

/* pool_lane_key - the source whose limits lane l has: its own, or "" (the ISP's) */
static const char *pool_lane_key(const struct pool *p, const struct pool_lane *l)
{
    return l->own && p->nsources ? p->sources[l->source].addr : "";
}

size_t pool_lane_demands(struct pool *p, struct pool_lane_demand *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < p->nisps; i++) {
        struct pool_isp *isp = p->isps[i];
        int on = config_cluster_limits(p->config, isp->cfg);
        for (size_t k = 0; k < isp->nlanes; k++) {
            const struct pool_lane *l = &isp->lanes[k];
            const char *key = pool_lane_key(p, l);
            int limited = l->cfg_max_connections || l->cfg_msg_rate >= 0 || l->cfg_conn_rate >= 0;
            size_t j = 0;
            while (j < n && j < max &&
                   !(out[j].isp == isp->name && strcmp(out[j].source, key) == 0)) {
                j++;
            }
            if (j == n) {
                if (n < max) {
                    out[n] = (struct pool_lane_demand){
                        .isp = isp->name, .source = key, .demand = isp->queued};
                }
                n++;
            }
            if (j < max) {
                out[j].demand += l->open;
                out[j].shared |= on && limited;
            }
        }
    }
    return n;
}

void pool_lane_share(struct pool *p, const char *name, const char *source, unsigned nodes,
                     unsigned rank, int blocked)
{
    struct pool_isp *isp = pool_isp_named(p, name);
    if (!isp) {
        return;
    }
    uint64_t now = pool_now(p);
    int kick = 0;
    for (size_t k = 0; k < isp->nlanes; k++) {
        struct pool_lane *l = &isp->lanes[k];
        if (strcmp(pool_lane_key(p, l), source) != 0) {
            continue;
        }
        if (l->share_nodes == nodes && l->share_rank == rank && l->share_blocked == blocked) {
            continue;
        }
        kick |= nodes < l->share_nodes || (l->share_blocked && !blocked) || l->share_rank != rank;
        l->share_nodes = nodes;
        l->share_rank = rank;
        l->share_blocked = blocked;
        pool_lane_limits(l, now);
    }
    if (kick) {
        pool_kick(p); /* a larger share: the pump may open more now */
    }
}

int pool_isp_backoff_adopt(struct pool *p, const char *name, double factor, uint64_t pause_ms,
                           const char *why)
{
    struct pool_isp *isp = pool_isp_named(p, name);
    if (!isp) {
        return 0;
    }
    uint64_t now = pool_now(p);
    double before = -1, after = -1;
    int changed = 0;
    for (size_t k = 0; k < isp->nlanes; k++) {
        struct pool_lane *l = &isp->lanes[k];
        double was = pool_lane_rate(l, now);
        if (!backoff_adopt(&l->bo, factor, pause_ms, now)) {
            continue;
        }
        if (!changed) {
            before = was;
            after = pool_lane_rate(l, now);
        }
        changed = 1;
        snprintf(l->why, sizeof l->why, "%s", why ? why : "");
        token_bucket_set_rate(&l->msgs, pool_lane_rate(l, now), now);
    }
    if (changed) {
        isp->st.backoff_triggers++;
        char was[48], is[48];
        config_rate_text(before, was, sizeof was);
        config_rate_text(after, is, sizeof is);
        fprintf(stderr, "ringmail: %s: backoff: rate %s -> %s, paused %.1f s: %s\n", isp->name, was,
                is, (double)pause_ms / 1000.0, why ? why : "");
        pool_kick(p);
    }
    return changed;
}

size_t pool_source_addrs(const struct pool *p, const char **out, size_t max)
{
    for (size_t i = 0; i < p->nsources && i < max; i++) {
        out[i] = p->sources[i].addr;
    }
    return p->nsources;
}
