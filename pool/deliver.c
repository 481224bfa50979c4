/*
 * deliver - the delivery pool's public API, statistics and metrics. See deliver.h.
 *
 * The pool's work is in lane.c, dest.c, settle.c and conn.c, behind
 * deliver_int.h; this file creates, reconfigures, stops and frees a pool
 * and reports on it.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/netaddr.h"
#include "pool/deliver_int.h"
#include "pool/sts_dest.h"
#include "engine/tls_session_cache.h"

/* Make t fire at `at` (loop clock) at the latest. One timer serves several
 * deadlines (the pump: every lane's pause end and connection token; a lane:
 * each waiting session's token; the retry heap: every retry), so a need
 * earlier than the armed deadline moves it forward and a later one never
 * pushes it back: keeping the later one stalled every ISP behind one
 * suspended for an hour (issue 10). */
void pool_timer_at(struct pool *p, struct loop_timer *t, uint64_t at)
{
    if (p->stopped || (loop_timer_active(t) && t->deadline_ms <= at)) {
        return;
    }
    uint64_t now = pool_now(p);
    loop_timer_set(p->loop, t, at > now ? at - now : 0);
}

void *pool_xcalloc(size_t n, size_t size)
{
    void *v = calloc(n, size);
    if (!v) {
        fprintf(stderr, "ringmail: out of memory\n");
        abort();
    }
    return v;
}

/* ---- public ---- */

void pool_gate_open(struct pool *p)
{
    pool_gates_open(p);
}

void pool_submit(struct pool *p, struct pool_msg *m)
{
    m->next = NULL;
    m->dest = NULL;
    m->heap_index = -1;
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

/* pool_dns_mx, pool_dns_addr - pool/dns.c as the pool's resolver */
static void pool_dns_mx(void *ctx, const char *domain, dns_mx_cb cb, void *user)
{
    dns_resolve_mx(ctx, domain, cb, user);
}

static void pool_dns_addr(void *ctx, const char *host, dns_addr_cb cb, void *user)
{
    dns_resolve_addr(ctx, host, cb, user);
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
    pool_retry_init(p);
    if (pool_sources_init(p, err, errlen) < 0 || pool_check_config(p, p->config, err, errlen) < 0) {
        pool_free(p);
        return NULL;
    }
    pool_isps_sync(p);
    if (!o->relay && o->resolve) {
        p->res = *o->resolve;
    } else if (!o->relay) {
        /* A trusted validating resolver answers every lookup of the pool,
         * so MX, address and TLSA answers come from the one that validates. */
        const char *dnssec = p->config->dnssec_resolver[0] ? p->config->dnssec_resolver : NULL;
        p->dns = dns_new(loop, dnssec ? dnssec : o->resolver, 0, err, errlen); /* 2 s, 2 tries */
        if (!p->dns) {
            pool_free(p);
            return NULL;
        }
        dns_set_dnssec(p->dns, dnssec != NULL);
        p->res = (struct pool_resolver){pool_dns_mx, pool_dns_addr, p->dns};
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
    for (struct list_node *n = p->conns.first, *nn; n; n = nn) {
        nn = n->next; /* resuming may close c */
        struct pool_conn *c = list_entry(n, struct pool_conn, node);
        pool_conn_stop(c);
    }
    pool_sts_stop(p);
    if (p->dns) {
        dns_tlsa_stats(p->dns, &p->tlsa_queries, &p->tlsa_hits); /* kept for the summary */
        dns_free(p->dns);
        p->dns = NULL;
    }
    memset(&p->res, 0, sizeof p->res);
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
    struct pool_msg *m;
    while ((m = heap_pop(&p->retry)) != NULL) {
        p->pending--;
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
    return heap_len(&p->retry);
}

unsigned pool_gated_connections(const struct pool *p)
{
    return p->ngated;
}

unsigned pool_open_connections(const struct pool *p)
{
    return p->open;
}

/* pool_retry_stats - the retry heap by ISP into out[0..n): how many wait
 * and when the first is due (the live view's "waits for its retry"). One
 * pass over the heap: cheap beside a status line a second. A message whose
 * destination had no ISP yet (DNS failed) counts for "default". */
static void pool_retry_stats(struct pool *p, struct pool_isp_stats *out, size_t n, uint64_t now)
{
    const struct pool_isp *dflt = pool_isp_named(p, "default");
    size_t k = 0; /* out[k] is p->isps[k]: the last ISP found (heap neighbours often share one) */
    for (size_t i = 0; i < heap_len(&p->retry); i++) {
        const struct pool_msg *m = p->retry.items[i];
        const struct pool_isp *isp = m->dest && m->dest->isp ? m->dest->isp : dflt;
        if (k >= n || p->isps[k] != isp) {
            for (k = 0; k < n && p->isps[k] != isp; k++) {
            }
        }
        if (k >= n) {
            continue;
        }
        struct pool_isp_stats *s = &out[k];
        uint64_t left = m->due_ms > now ? m->due_ms - now : 1;
        if (!s->retry_waiting || left < s->retry_next_ms) {
            s->retry_next_ms = left;
        }
        s->retry_waiting++;
    }
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
        s->held = isp->held;
        s->held_why = isp->held ? isp->held_why : NULL;
        s->pause_left_ms = 0;
        s->suspended = 0;
        s->pause_why[0] = '\0';
        s->retry_waiting = 0;
        s->retry_next_ms = 0;
        s->cluster_nodes = 0;
        s->cluster_blocked = 0;
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
            s->paused |= backoff_paused(&l->bo, now); /* a hold is s->held */
            if (l->share_nodes > s->cluster_nodes) {
                s->cluster_nodes = l->share_nodes;
            }
            s->cluster_blocked |= l->share_blocked;
            if (backoff_paused(&l->bo, now) && l->bo.paused_until - now > s->pause_left_ms) {
                s->pause_left_ms = l->bo.paused_until - now;
                s->suspended = backoff_suspended(&l->bo, now);
                snprintf(s->pause_why, sizeof s->pause_why, "%s", l->why);
            }
        }
    }
    pool_retry_stats(p, out, p->nisps < max ? p->nisps : max, now);
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
        {"ringmail_isp_held", "gauge",
         "1 while the ISP is held for the campaign (the complaint guard)."},
        {"ringmail_isp_parked_total", "counter",
         "Messages handed back, never attempted, because their ISP was held."},
        {"ringmail_isp_paused_seconds", "gauge",
         "Seconds until the ISP's longest lane pause (backoff or suspension) ends; 0 none."},
        {"ringmail_isp_suspended", "gauge",
         "1 while that pause is a suspension (a suspend rule, or one kept in PostgreSQL)."},
        {"ringmail_isp_retry_waiting", "gauge",
         "Messages of the ISP waiting for their retry time in the pool (list mode)."},
        {"ringmail_isp_cluster_nodes", "gauge",
         "Live nodes sharing the ISP's limits (0: not shared, this node takes them whole)."},
        {"ringmail_isp_cluster_blocked", "gauge",
         "1 while this node gave its share of the ISP up (PostgreSQL out of reach)."},
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
            case 8:
                buf_appendf(out, "%s{isp=\"%s\"} %zu\n", heads[h].name, isp, s->queued);
                break;
            case 9:
                buf_appendf(out, "%s{isp=\"%s\"} %d\n", heads[h].name, isp, s->held);
                break;
            case 11:
                buf_appendf(out, "%s{isp=\"%s\"} %.3f\n", heads[h].name, isp,
                            (double)s->pause_left_ms / 1000.0);
                break;
            case 12:
                buf_appendf(out, "%s{isp=\"%s\"} %d\n", heads[h].name, isp, s->suspended);
                break;
            case 13:
                buf_appendf(out, "%s{isp=\"%s\"} %zu\n", heads[h].name, isp, s->retry_waiting);
                break;
            case 14:
                buf_appendf(out, "%s{isp=\"%s\"} %u\n", heads[h].name, isp, s->cluster_nodes);
                break;
            case 15:
                buf_appendf(out, "%s{isp=\"%s\"} %d\n", heads[h].name, isp, s->cluster_blocked);
                break;
            default:
                buf_appendf(out, "%s{isp=\"%s\"} %llu\n", heads[h].name, isp,
                            (unsigned long long)s->parked);
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
                heap_len(&p->retry), p->pending);
    free(st);
}

void pool_dane_stats(const struct pool *p, uint64_t *tlsa_queries, uint64_t *tlsa_cache_hits)
{
    if (p->dns) {
        dns_tlsa_stats(p->dns, tlsa_queries, tlsa_cache_hits);
    } else {
        *tlsa_queries = p->tlsa_queries;
        *tlsa_cache_hits = p->tlsa_hits;
    }
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
    heap_free(&p->retry);
    pool_sts_free(p);
    tls_session_cache_free(p->cache);
    tls_ctx_free(p->ctx_plain);
    tls_ctx_free(p->ctx_verify);
    config_free(p->config);
    free(p);
}

const struct config *pool_config(const struct pool *p)
{
    return p->config;
}
