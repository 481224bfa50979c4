/*
 * dest - the pool's destinations and their queues. See deliver_int.h.
 *
 * A destination is a recipient domain (or the relay): its exchanger
 * addresses in MX order, found through DNS on the loop or a route, and
 * its queue of messages. Destinations with messages queued are on the
 * pool's active list, which the pump walks.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/netaddr.h"
#include "pool/deliver_int.h"
#include "pool/sts_dest.h"

static unsigned pool_hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 16777619u;
    }
    return h;
}
static void pool_active_add(struct pool *p, struct pool_dest *d)
{
    if (!list_linked(&p->active, &d->active_node)) {
        list_push_front(&p->active, &d->active_node);
    }
}

static void pool_active_remove(struct pool *p, struct pool_dest *d)
{
    if (list_linked(&p->active, &d->active_node)) {
        list_unlink(&p->active, &d->active_node);
    }
}

void pool_enqueue(struct pool *p, struct pool_dest *d, struct pool_msg *m, int front)
{
    m->dest = d;
    if (front) {
        d->ask_last = NULL; /* pool_gate_ask announces again from the head */
        d->asked = 0;
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

struct pool_msg *pool_dequeue(struct pool *p, struct pool_dest *d)
{
    struct pool_msg *m = d->head;
    if (!m) {
        return NULL;
    }
    d->head = m->next;
    if (!d->head) {
        d->tail = NULL;
    }
    if (d->asked && --d->asked == 0) {
        d->ask_last = NULL; /* it was m */
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
void pool_fail_queue(struct pool *p, struct pool_dest *d, const struct pool_outcome *o)
{
    if (p->stopped && o->outcome == SMTP_OUTCOME_DEFERRED) {
        /* Stopping: dns_free cancels the lookups still waiting (their
         * callbacks say "shutting down"). No attempt was made: the
         * messages stay queued for pool_release_all, where a deferral
         * would have left them pending in no list at all (leaked). */
        return;
    }
    struct pool_msg *m;
    while ((m = pool_dequeue(p, d)) != NULL) {
        pool_settle(p, m, NULL, o);
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
        if (pool_dane_defer(p, d)) {
            return; /* failed TLSA lookups took every exchanger */
        }
        if (d->addr_tempfail) {
            pool_fail_queue(p, d,
                            &(struct pool_outcome){
                                .outcome = SMTP_OUTCOME_DEFERRED,
                                .reason = "dns_tempfail",
                                .text = "address lookup of the mail exchangers failed for now",
                            });
        } else {
            pool_fail_queue(p, d,
                            &(struct pool_outcome){
                                .outcome = SMTP_OUTCOME_DEFERRED,
                                .reason = "dns_no_address",
                                .text = "no address found for any mail exchanger of the domain",
                            });
        }
        return;
    }
    if (!pool_sts_ready(p, d)) {
        return; /* waits for its MTA-STS policy, or none of its MX may be used */
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
    p->res.addr(p->res.ctx, d->mx[d->resolving_host].name, pool_dns_addr_cb, d);
}

static void pool_dns_addr_cb(void *user, const struct dns_addr_result *res)
{
    struct pool_dest *d = user;
    struct pool *p = d->pool;
    if (res->status == DNS_TEMPFAIL) {
        d->addr_tempfail = 1;
    }
    size_t first = d->ntargets;
    if (res->status == DNS_OK) {
        for (size_t i = 0; i < res->n; i++) {
            struct sockaddr_storage ss = res->addrs[i];
            pool_set_port(&ss, p->opt.mx_port);
            pool_target_add(d, d->mx[d->resolving_host].name, &ss,
                            ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                     : sizeof(struct sockaddr_in));
        }
    }
    if (pool_dane_lookup(p, d, res, first)) {
        return; /* the host's TLSA first; pool_dest_next_host goes on */
    }
    pool_dest_next_host(p, d);
}

void pool_dest_next_host(struct pool *p, struct pool_dest *d)
{
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
        pool_dane_begin(p, d, 0);
        pool_fail_queue(p, d,
                        &(struct pool_outcome){
                            .outcome = permanent ? SMTP_OUTCOME_REJECTED : SMTP_OUTCOME_DEFERRED,
                            .reason = reason,
                            .text = res->error ? res->error : dns_status_name(res->status),
                        });
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
    pool_dane_begin(p, d, res->secure); /* DANE decides first (RFC 8461 2) */
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
int pool_dest_fixed(struct pool *p, struct pool_dest *d, const char *server)
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
        ((d->is_relay || !p->res.mx || pool_host_numeric(host)) &&
         netaddr_parse(server, &ss, &len, host, sizeof host, err, sizeof err) < 0)) {
        pool_fail_queue(p, d,
                        &(struct pool_outcome){
                            .outcome = SMTP_OUTCOME_DEFERRED,
                            .reason = "route_invalid",
                            .text = err,
                        });
        return -1;
    }
    if (!d->is_relay && p->res.mx && !pool_host_numeric(host)) {
        struct pool_route_lookup *lk = pool_xcalloc(1, sizeof *lk);
        lk->d = d;
        lk->port = port;
        snprintf(lk->host, sizeof lk->host, "%s", host);
        d->state = DEST_RESOLVING;
        p->res.addr(p->res.ctx, host, pool_route_addr_cb, lk);
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

void pool_dest_resolve(struct pool *p, struct pool_dest *d)
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
    pool_sts_begin(p, d); /* the _mta-sts TXT beside the MX */
    p->res.mx(p->res.ctx, d->domain, pool_dns_mx_cb, d);
}
/* The first address of d not marked down, in MX order; -1 when all are. */
long pool_target_pick(struct pool_dest *d, uint64_t now)
{
    for (size_t i = 0; i < d->ntargets; i++) {
        if (d->targets[i].down_until <= now) {
            return (long)i;
        }
    }
    return -1;
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

void pool_route(struct pool *p, struct pool_msg *m)
{
    const char *at = strrchr(m->rcpt, '@');
    if (!at || at == m->rcpt || !at[1]) {
        m->dest = NULL;
        pool_settle(p, m, NULL,
                    &(struct pool_outcome){
                        .outcome = SMTP_OUTCOME_FAILED,
                        .reason = "invalid_address",
                        .text = "the address has no local part or no domain",
                    });
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
            pool_settle(p, m, NULL,
                        &(struct pool_outcome){
                            .outcome = SMTP_OUTCOME_REJECTED,
                            .reason = "bad_domain",
                            .text = text,
                        });
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
        pool_settle(
            p, m, NULL,
            &(struct pool_outcome){SMTP_OUTCOME_FAILED, d->fatal_reason, .text = d->fatal_text});
        return;
    }
    pool_enqueue(p, d, m, 0);
    pool_kick(p);
}
void pool_dest_free(struct pool_dest *d)
{
    free(d->targets);
    free(d->mx);
    pool_dane_free(d->dane);
    free(d);
}
