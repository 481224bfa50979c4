/*
 * lane - the pool's ISPs and their lanes. See deliver_int.h.
 *
 * An ISP's limits come from its [isp NAME] section (a source address may
 * have its own, [isp NAME source ADDR]); each ISP has one lane per source
 * address, the unit that is throttled: open connections, a message and a
 * connection token bucket, and backoff. New connections take a lane by
 * weighted round robin over the source addresses.
 *
 * Holds (the complaint guard, pool_isp_hold): a held ISP's lanes count as
 * paused until pool_isp_release, whatever their backoff says; its queued
 * messages go back to the owner (on_held) or wait.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/deliver_int.h"

double pool_lane_rate(struct pool_lane *l, uint64_t now)
{
    double base = l->msg_rate;
    return base < 0 ? -1 : base * backoff_factor(&l->bo, now);
}

int pool_lane_paused(struct pool_lane *l, uint64_t now)
{
    return l->isp->held || backoff_paused(&l->bo, now);
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

struct pool_isp *pool_isp_named(struct pool *p, const char *name)
{
    for (size_t i = 0; i < p->nisps; i++) {
        if (strcmp(p->isps[i]->name, name) == 0) {
            return p->isps[i];
        }
    }
    return NULL;
}

/* Make the ISP list match the config: update, add, and detach removed ones. */
void pool_isps_sync(struct pool *p)
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

void pool_backoff(struct pool *p, struct pool_lane *l, const struct config_rule *r)
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

/* Should an idle session of l give its slot up now? Only when l is full
 * and the last pump found a destination of the ISP with no slot, beyond
 * those already being freed: otherwise it lingers for its own destination. */
int pool_lane_starved(const struct pool_lane *l)
{
    return l->max_connections && l->open >= l->max_connections &&
           l->isp->starved > l->isp->yielding;
}

/* Every lane of isp is at its max_connections. */
int pool_isp_full(const struct pool_isp *isp)
{
    for (size_t i = 0; i < isp->nlanes; i++) {
        const struct pool_lane *l = &isp->lanes[i];
        if (!l->max_connections || l->open < l->max_connections) {
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
