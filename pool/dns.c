/*
 * dns - MX and address resolution with c-ares, driven by the ring. See dns.h.
 */
#include "pool/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <idn2.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dns_sock {
    struct loop_op op;
    struct dns *d;
    struct dns_sock *next;
    int fd;
    int want_read, want_write;
    int armed;      /* a poll is in the kernel */
    int closed;     /* c-ares let go of fd; free when no poll is left */
    int processing; /* inside ares_process_fd for this socket */
};

/* An MX answer kept until its TTL runs out (temporary failures are not kept). */
struct dns_cached {
    struct dns_cached *next;
    char domain[256];    /* A-label */
    uint64_t expires_ms; /* loop clock */
    enum dns_status status;
    int implicit;
    int secure;
    uint32_t ttl;
    size_t n;
    struct dns_mx_host hosts[]; /* n of them */
};

/* A TLSA answer kept until its TTL runs out (failures are not kept). */
struct dns_tlsa_cached {
    struct dns_tlsa_cached *next;
    char name[300]; /* _PORT._tcp.HOST */
    uint64_t expires_ms;
    enum dns_status status;
    int secure;
    struct dns_tlsa_answer ans;
};

#define DNS_CACHE_BUCKETS 1024
/* DNS queries on the wire at once (an address lookup asks A, then AAAA). A burst of 20,000 domains
 * sent at once overflowed the UDP receive buffers (ours and the resolver's) and came back as
 * thousands of spurious timeouts (issue 11); the rest wait in order on the pending lists. The
 * window starts at DNS_MAX_INFLIGHT (256 at once still overflowed a local
 * dnsmasq's socket buffer), halves (to DNS_MIN_INFLIGHT at least) when the
 * resolver times out or refuses (a forwarder at its --dns-forward-max
 * answers REFUSED), once per window as TCP's congestion window does (the
 * other losses of the same burst were sent before the cut), and grows back
 * by one per window of answers. */
#define DNS_MAX_INFLIGHT 128
#define DNS_MIN_INFLIGHT 8
/* Receive buffer asked for the resolver sockets (the kernel caps it at
 * net.core.rmem_max): answers to DNS_MAX_INFLIGHT queries fit. */
#define DNS_RCVBUF (1 << 20)

struct dns_query;

struct dns {
    struct loop *loop;
    ares_channel channel;
    struct loop_timer timer;
    struct dns_sock *socks;                      /* owned list */
    struct dns_cached *cache[DNS_CACHE_BUCKETS]; /* owned chains */
    uint64_t cache_hits, queries;
    uint64_t tlsa_hits, tlsa_queries; /* dns_resolve_tlsa's */
    struct dns_query *tlsa_inflight;  /* TLSA queries sent or waiting (tnext), not owned */
    unsigned inflight;                /* queries on the wire, window at most */
    unsigned window;                  /* DNS_MIN_INFLIGHT .. DNS_MAX_INFLIGHT */
    unsigned grown;                   /* answers since the window last grew */
    uint64_t sent_seq;                /* queries sent so far */
    uint64_t
        cut_seq; /* sent_seq at the last cut: losses of queries sent before it are the same event */
    /* Lookups waiting for room, FIFO: address lookups (the second half of a
     * destination already started) go before new MX lookups. */
    struct dns_query *pend_addr, *pend_addr_tail, *pend_mx, *pend_mx_tail;
    int running;      /* inside dns_pending_run */
    int depth;        /* inside our callbacks: dns_free waits until the outermost returns */
    int dying;        /* dns_free was called during a callback */
    uint64_t shuffle; /* xorshift state: equal MX preferences in random order */
    int dnssec;       /* dns_set_dnssec: ask for AD and trust it */
    struct dns_tlsa_cached *tlsa_cache[DNS_CACHE_BUCKETS]; /* owned chains */
};

static void dns_destroy(struct dns *d);

/* Leave a callback section; destroy now if dns_free was called inside it. 1 if gone. */
static int dns_leave(struct dns *d)
{
    if (--d->depth == 0 && d->dying) {
        dns_destroy(d);
        return 1;
    }
    return 0;
}

void dns_stats(const struct dns *d, uint64_t *queries, uint64_t *cache_hits)
{
    *queries = d->queries;
    *cache_hits = d->cache_hits;
}

const char *dns_status_name(enum dns_status s)
{
    static const char *const names[] = {"ok", "null_mx", "nxdomain", "tempfail", "bad_name"};
    return (unsigned)s < sizeof names / sizeof *names ? names[s] : "?";
}

static void dns_schedule(struct dns *d)
{
    struct timeval tv, *t = ares_timeout(d->channel, NULL, &tv);
    if (t) {
        loop_timer_set(d->loop, &d->timer,
                       (uint64_t)t->tv_sec * 1000 + (uint64_t)t->tv_usec / 1000 + 1);
    } else {
        loop_timer_cancel(d->loop, &d->timer);
    }
}

static void dns_sock_unlink_free(struct dns_sock *s)
{
    struct dns_sock **pp = &s->d->socks;
    while (*pp && *pp != s) {
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = s->next;
    }
    free(s);
}

static void dns_sock_arm(struct dns_sock *s);

static void dns_on_poll(struct loop_op *op, int res, unsigned flags)
{
    (void)flags;
    struct dns_sock *s = op->owner;
    struct dns *d = s->d;
    s->armed = 0;
    if (s->closed) {
        if (d) {
            dns_sock_unlink_free(s);
        } else {
            free(s); /* orphaned by dns_free */
        }
        return;
    }
    if (res > 0) {
        s->processing = 1;
        d->depth++;
        ares_process_fd(d->channel, (res & (POLLIN | POLLERR | POLLHUP)) ? s->fd : ARES_SOCKET_BAD,
                        (res & POLLOUT) ? s->fd : ARES_SOCKET_BAD);
        s->processing = 0;
        if (dns_leave(d)) {
            return; /* s was not armed: dns_destroy freed it */
        }
    }
    if (s->closed) {
        dns_sock_unlink_free(s);
    } else {
        dns_sock_arm(s);
    }
    dns_schedule(d);
}

static void dns_sock_arm(struct dns_sock *s)
{
    if (s->armed || s->closed || (!s->want_read && !s->want_write)) {
        return;
    }
    s->armed = 1;
    loop_poll_add(s->d->loop, &s->op, s->fd,
                  (s->want_read ? POLLIN : 0) | (s->want_write ? POLLOUT : 0));
}

static void dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *d = data;
    struct dns_sock *s = d->socks;
    while (s && (s->fd != fd || s->closed)) {
        s = s->next;
    }
    if (!readable && !writable) {
        if (s) {
            s->closed = 1;
            if (s->armed) {
                loop_cancel(d->loop, &s->op); /* freed when the poll completes */
            } else if (!s->processing) {
                dns_sock_unlink_free(s);
            }
        }
        return;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) {
            return; /* c-ares will time the query out */
        }
        s->op = (struct loop_op){dns_on_poll, s};
        s->d = d;
        s->fd = fd;
        s->next = d->socks;
        d->socks = s;
    }
    s->want_read = readable;
    s->want_write = writable;
    if (!s->processing) {
        dns_sock_arm(s);
    }
}

static void dns_on_timer(struct loop_timer *t)
{
    struct dns *d = t->owner;
    d->depth++;
    ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    if (dns_leave(d)) {
        return;
    }
    dns_schedule(d);
}

/* c-ares's global state, once per process (several loops may start pools at once). */
static pthread_once_t dns_library_once = PTHREAD_ONCE_INIT;

static void dns_library_init(void)
{
    ares_library_init(ARES_LIB_INIT_ALL);
}

struct dns *dns_new(struct loop *loop, const char *server, unsigned timeout_ms, char *err,
                    size_t errlen)
{
    pthread_once(&dns_library_once, dns_library_init);
    struct dns *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->loop = loop;
    d->window = DNS_MAX_INFLIGHT;
    d->shuffle = (uint64_t)(uintptr_t)d ^ 0x9e3779b97f4a7c15ull; /* never 0: xorshift stays 0 */
    loop_timer_init(&d->timer, dns_on_timer, d);
    struct ares_options o;
    memset(&o, 0, sizeof o);
    o.sock_state_cb = dns_sock_state;
    o.sock_state_cb_data = d;
    o.timeout = (int)(timeout_ms ? timeout_ms : 2000);
    o.tries = 2;
    o.socket_receive_buffer_size = DNS_RCVBUF;
    int rc = ares_init_options(&d->channel, &o,
                               ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
                                   ARES_OPT_SOCK_RCVBUF);
    if (rc == ARES_SUCCESS && server) {
        rc = ares_set_servers_ports_csv(d->channel, server);
    }
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "resolver %s: %s", server ? server : "(system)", ares_strerror(rc));
        if (d->channel) {
            ares_destroy(d->channel);
        }
        free(d);
        return NULL;
    }
    return d;
}

void dns_free(struct dns *d)
{
    if (!d) {
        return;
    }
    if (d->depth > 0) {
        d->dying = 1; /* called from one of our callbacks: finish it first */
        return;
    }
    dns_destroy(d);
}

static void dns_pending_cancel(struct dns *d);

static void dns_destroy(struct dns *d)
{
    d->depth++;               /* the destruction callbacks must not re-enter */
    d->dying = 1;             /* nor start new lookups */
    ares_destroy(d->channel); /* runs pending callbacks with ARES_EDESTRUCTION */
    dns_pending_cancel(d);
    for (size_t b = 0; b < DNS_CACHE_BUCKETS; b++) {
        for (struct dns_cached *e = d->cache[b], *next; e; e = next) {
            next = e->next;
            free(e);
        }
        for (struct dns_tlsa_cached *e = d->tlsa_cache[b], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    loop_timer_cancel(d->loop, &d->timer);
    /* Sockets still polled are closed by ares_destroy; their polls complete
     * on the loop later, so they are orphaned to free themselves there. */
    for (struct dns_sock *s = d->socks, *next; s; s = next) {
        next = s->next;
        if (s->armed) {
            s->closed = 1;
            s->d = NULL;
        } else {
            free(s);
        }
    }
    free(d);
}

/* ---- queries ---- */

/* A TLSA lookup that rides on one already asked for the same name. */
struct dns_waiter {
    struct dns_waiter *next;
    dns_tlsa_cb cb;
    void *user;
};

struct dns_query {
    struct dns *d;
    struct dns_query *next; /* pending list */
    dns_mx_cb mx_cb;        /* one of the three is set */
    dns_addr_cb addr_cb;
    dns_txt_cb txt_cb;
    dns_tlsa_cb tlsa_cb;
    void *user;
    int ad;                     /* the last answer had AD set (and d->dnssec) */
    ares_callback handler;      /* a raw query's answer goes here (dns_raw_send) */
    struct dns_waiter *waiters; /* owned: TLSA lookups of the same name that wait for this one */
    struct dns_query *tnext;    /* d->tlsa_inflight */
    unsigned rounds;            /* our own rounds after c-ares's tries timed out */
    uint64_t seq;               /* d->sent_seq when it was last sent */
    struct dns_addrs *acc;      /* address lookup: owned, what A and AAAA gave */
    char ascii[300];            /* TLSA: _PORT._tcp.HOST */
};

/* An address lookup asks one family at a time: c-ares's AF_UNSPEC lookup
 * ends in ARES_ENOTFOUND when A was refused or timed out and AAAA had no
 * data, which named a resolver under load "no address" (issue 11). */
struct dns_addrs {
    int family; /* AF_INET, then AF_INET6 */
    int failed; /* a c-ares status that was not an answer, or 0 */
    int secure; /* every answer so far had AD (dns_on_addr_raw) */
    size_t n;
    struct sockaddr_storage addrs[32];
};

/* c-ares's tries (2 x the timeout) and then this many more rounds of our
 * own before a timeout is a failure: a lost UDP answer in a burst is not a
 * reason to defer a whole domain. A refusal (an overloaded forwarder) is
 * retried a few times more, behind the narrowed window. */
#define DNS_TIMEOUT_ROUNDS 1
#define DNS_REFUSED_ROUNDS 4

static void dns_on_mx(void *arg, int status, int timeouts, unsigned char *abuf, int alen);
static void dns_on_addr(void *arg, int status, int timeouts, struct ares_addrinfo *res);
static void dns_on_txt(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

static void dns_on_tlsa(void *arg, int status, int timeouts, unsigned char *abuf, int alen);
static void dns_on_addr_raw(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

/* A raw answer: note its AD bit, then turn its rcode into the status
 * ares_query would give (c-ares's own qcallback does the same), for
 * q->handler. */
static void dns_on_raw(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_query *q = arg;
    q->ad = 0;
    if (status == ARES_SUCCESS && alen >= HFIXEDSZ) {
        q->ad = q->d->dnssec && (abuf[3] & 0x20) != 0; /* the AD bit of the header */
        switch (abuf[3] & 0x0f) {
        case ns_r_noerror:
            status = (abuf[6] << 8 | abuf[7]) > 0 ? ARES_SUCCESS : ARES_ENODATA;
            break;
        case ns_r_formerr:
            status = ARES_EFORMERR;
            break;
        case ns_r_servfail:
            status = ARES_ESERVFAIL;
            break;
        case ns_r_nxdomain:
            status = ARES_ENOTFOUND;
            break;
        case ns_r_notimpl:
            status = ARES_ENOTIMP;
            break;
        case ns_r_refused:
            status = ARES_EREFUSED;
            break;
        default:
            break;
        }
    }
    q->handler(q, status, timeouts, abuf, alen);
}

/* Build q's query for type, with the AD bit when the resolver is trusted
 * (RFC 6840 5.7: AD in a query asks for AD in the answer), and send it. */
static void dns_raw_send(struct dns_query *q, int type, ares_callback handler)
{
    unsigned char *buf = NULL;
    int len = 0;
    q->handler = handler;
    int rc = ares_create_query(q->ascii, ns_c_in, type, 0, 1, &buf, &len, 0);
    if (rc != ARES_SUCCESS) {
        handler(q, rc, 0, NULL, 0);
        return;
    }
    if (q->d->dnssec && len >= HFIXEDSZ) {
        buf[3] |= 0x20;
    }
    ares_send(q->d->channel, buf, len, dns_on_raw, q);
    ares_free_string(buf);
}

/* Put q on the wire (its slot already counted in d->inflight). */
static void dns_query_send(struct dns_query *q)
{
    if (q->mx_cb) {
        dns_raw_send(q, ns_t_mx, dns_on_mx);
        return;
    }
    if (q->txt_cb) {
        ares_query(q->d->channel, q->ascii, ns_c_in, ns_t_txt, dns_on_txt, q);
        return;
    }
    if (q->tlsa_cb) {
        dns_raw_send(q, 52 /* TLSA, RFC 6698 */, dns_on_tlsa);
        return;
    }
    if (q->d->dnssec) {
        /* A and AAAA asked here, so their AD bits can be read. */
        dns_raw_send(q, q->acc->family == AF_INET ? ns_t_a : ns_t_aaaa, dns_on_addr_raw);
        return;
    }
    struct ares_addrinfo_hints hints = {.ai_family = q->acc->family, .ai_socktype = SOCK_STREAM};
    ares_getaddrinfo(q->d->channel, q->ascii, NULL, &hints, dns_on_addr, q);
}

static struct dns_query *dns_pending_pop(struct dns *d)
{
    struct dns_query **head = d->pend_addr ? &d->pend_addr : &d->pend_mx;
    struct dns_query **tail = d->pend_addr ? &d->pend_addr_tail : &d->pend_mx_tail;
    struct dns_query *q = *head;
    if (q) {
        *head = q->next;
        if (!*head) {
            *tail = NULL;
        }
        q->next = NULL;
    }
    return q;
}

/* Send pending lookups while there is room. Not re-entered: an answer
 * given at once (a hosts-file name) lands here again and returns. */
static void dns_pending_run(struct dns *d)
{
    if (d->running) {
        return;
    }
    d->running = 1;
    while (!d->dying) {
        struct dns_query *q = d->pend_addr ? d->pend_addr : d->pend_mx;
        if (!q || (d->inflight > 0 && d->inflight >= d->window)) {
            break;
        }
        dns_pending_pop(d);
        d->inflight++;
        q->seq = ++d->sent_seq;
        dns_query_send(q);
    }
    d->running = 0;
}

/* Queue q behind the lookups already waiting, then send what fits. */
static void dns_submit(struct dns *d, struct dns_query *q)
{
    q->d = d;
    if (q->addr_cb || q->tlsa_cb) {
        if (d->pend_addr_tail) {
            d->pend_addr_tail->next = q;
        } else {
            d->pend_addr = q;
        }
        d->pend_addr_tail = q;
    } else {
        if (d->pend_mx_tail) {
            d->pend_mx_tail->next = q;
        } else {
            d->pend_mx = q;
        }
        d->pend_mx_tail = q;
    }
    dns_pending_run(d);
}

/* q's answer is in: free its slot and adjust the window. */
static void dns_query_done(struct dns_query *q, int congested)
{
    struct dns *d = q->d;
    d->inflight = d->inflight > 0 ? d->inflight - 1 : 0;
    if (congested) {
        if (q->seq > d->cut_seq) {
            d->window = d->window / 2 > DNS_MIN_INFLIGHT ? d->window / 2 : DNS_MIN_INFLIGHT;
            d->cut_seq = d->sent_seq;
        }
        d->grown = 0;
    } else if (d->window < DNS_MAX_INFLIGHT && ++d->grown >= d->window) {
        d->window++;
        d->grown = 0;
    }
}

static void dns_query_requeue(struct dns_query *q);

/* Free q's slot; when c-ares's tries timed out or were refused and rounds
 * are left, queue q again first in line and send what fits: 1. */
static int dns_query_retry(struct dns_query *q, int status)
{
    struct dns *d = q->d;
    int congested = status == ARES_ETIMEOUT || status == ARES_ECONNREFUSED;
    unsigned limit = status == ARES_ETIMEOUT       ? DNS_TIMEOUT_ROUNDS
                     : status == ARES_ECONNREFUSED ? DNS_REFUSED_ROUNDS
                                                   : 0;
    dns_query_done(q, congested);
    if (q->rounds >= limit || d->dying) {
        return 0;
    }
    q->rounds++;
    dns_query_requeue(q);
    return 1;
}

/* Queue q first in line (a retry, or the AAAA half of an address lookup)
 * and send what fits. */
static void dns_query_requeue(struct dns_query *q)
{
    struct dns *d = q->d;
    int second = q->addr_cb || q->tlsa_cb;
    struct dns_query **head = second ? &d->pend_addr : &d->pend_mx;
    struct dns_query **tail = second ? &d->pend_addr_tail : &d->pend_mx_tail;
    q->next = *head;
    *head = q;
    if (!*tail) {
        *tail = q;
    }
    dns_pending_run(d);
}

int dns_domain_ascii(const char *name, char *out, size_t outlen, const char **why)
{
    char *ascii = NULL;
    int rc = idn2_to_ascii_8z(name, &ascii, IDN2_NONTRANSITIONAL);
    if (rc != IDN2_OK || !ascii || !*ascii || strlen(ascii) >= outlen) {
        *why = rc != IDN2_OK ? idn2_strerror(rc) : "bad domain name";
        idn2_free(ascii);
        return -1;
    }
    snprintf(out, outlen, "%s", ascii);
    idn2_free(ascii);
    size_t n = strlen(out);
    if (n > 1 && out[n - 1] == '.') {
        out[n - 1] = '\0';
    }
    for (char *c = out; *c; c++) {
        *c = (char)tolower((unsigned char)*c);
    }
    return 0;
}

static struct dns_query *dns_query_new(const char *name, char **why)
{
    struct dns_query *q = calloc(1, sizeof *q);
    const char *w = "out of memory";
    if (!q || dns_domain_ascii(name, q->ascii, sizeof q->ascii, &w) < 0) {
        *why = (char *)w;
        free(q);
        return NULL;
    }
    return q;
}

static uint32_t dns_answer_ttl(const unsigned char *abuf, int alen)
{
    ns_msg msg;
    ns_rr rr;
    uint32_t ttl = UINT32_MAX;
    if (ns_initparse(abuf, alen, &msg) < 0) {
        return 0;
    }
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
        if (ns_parserr(&msg, ns_s_an, i, &rr) == 0 && ns_rr_ttl(rr) < ttl) {
            ttl = ns_rr_ttl(rr);
        }
    }
    return ttl == UINT32_MAX ? 0 : ttl;
}

static size_t dns_cache_bucket(const char *domain)
{
    uint64_t h = 1469598103934665603ull;
    for (; *domain; domain++) {
        h = (h ^ (unsigned char)*domain) * 1099511628211ull;
    }
    return h % DNS_CACHE_BUCKETS;
}

/* The live entry for domain, dropping an expired one on the way. */
static struct dns_cached *dns_cache_get(struct dns *d, const char *domain)
{
    uint64_t now = loop_clock_ms(d->loop);
    for (struct dns_cached **pp = &d->cache[dns_cache_bucket(domain)]; *pp; pp = &(*pp)->next) {
        struct dns_cached *e = *pp;
        if (strcmp(e->domain, domain) != 0) {
            continue;
        }
        if (e->expires_ms > now) {
            return e;
        }
        *pp = e->next;
        free(e);
        return NULL;
    }
    return NULL;
}

static void dns_cache_put(struct dns *d, const struct dns_mx_result *r, uint32_t ttl)
{
    if (!d || ttl == 0 || r->status == DNS_TEMPFAIL || dns_cache_get(d, r->ascii_domain)) {
        return;
    }
    struct dns_cached *e = malloc(sizeof *e + r->n * sizeof e->hosts[0]);
    if (!e) {
        return;
    }
    snprintf(e->domain, sizeof e->domain, "%s", r->ascii_domain);
    e->expires_ms = loop_clock_ms(d->loop) + (uint64_t)ttl * 1000;
    e->status = r->status;
    e->implicit = r->implicit;
    e->secure = r->secure;
    e->ttl = ttl;
    e->n = r->n;
    if (r->n > 0) {
        memcpy(e->hosts, r->hosts, r->n * sizeof e->hosts[0]);
    }
    size_t b = dns_cache_bucket(e->domain);
    e->next = d->cache[b];
    d->cache[b] = e;
}

static int dns_mx_cmp(const void *a, const void *b)
{
    const struct dns_mx_host *x = a, *y = b;
    return (x->pref > y->pref) - (x->pref < y->pref);
}

/* Sort by preference; equal preferences in random order (RFC 5321 5.1). */
static void dns_mx_order(struct dns *d, struct dns_mx_host *h, size_t n)
{
    for (size_t i = n; i > 1; i--) { /* shuffle, then a stable sort keeps ties shuffled */
        d->shuffle ^= d->shuffle << 13, d->shuffle ^= d->shuffle >> 7,
            d->shuffle ^= d->shuffle << 17;
        size_t j = d->shuffle % i;
        struct dns_mx_host t = h[i - 1];
        h[i - 1] = h[j];
        h[j] = t;
    }
    for (size_t i = 1; i < n; i++) { /* insertion sort: stable, n is small */
        struct dns_mx_host t = h[i];
        size_t k = i;
        for (; k > 0 && dns_mx_cmp(&h[k - 1], &t) > 0; k--) {
            h[k] = h[k - 1];
        }
        h[k] = t;
    }
}

static void dns_on_mx(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    struct dns_query *q = arg;
    if (dns_query_retry(q, status)) {
        return;
    }
    struct dns *d = q->d;
    struct dns_mx_host hosts[64];
    struct dns_mx_result r = {.ascii_domain = q->ascii, .secure = q->ad};
    struct ares_mx_reply *mx = NULL;
    int prc = status == ARES_SUCCESS ? ares_parse_mx_reply(abuf, alen, &mx) : status;
    if (prc == ARES_SUCCESS && mx) {
        for (struct ares_mx_reply *m = mx; m && r.n < 64; m = m->next) {
            snprintf(hosts[r.n].name, sizeof hosts[0].name, "%s", m->host ? m->host : "");
            hosts[r.n++].pref = m->priority;
        }
        r.ttl = dns_answer_ttl(abuf, alen);
        if (r.n == 1 && (hosts[0].name[0] == '\0' || strcmp(hosts[0].name, ".") == 0)) {
            r.status = DNS_NULL_MX;
            r.error = "null MX: the domain accepts no mail (RFC 7505)";
            r.n = 0;
        } else {
            dns_mx_order(d, hosts, r.n);
            r.hosts = hosts;
        }
    } else if (prc == ARES_ENODATA || (prc == ARES_SUCCESS && !mx)) {
        snprintf(hosts[0].name, sizeof hosts[0].name, "%.255s", q->ascii);
        hosts[0].pref = 0;
        r.hosts = hosts;
        r.n = 1;
        r.implicit = 1;
    } else if (prc == ARES_ENOTFOUND) {
        r.status = DNS_NXDOMAIN;
        r.error = "NXDOMAIN: no such domain";
    } else {
        r.status = DNS_TEMPFAIL;
        r.error = ares_strerror(prc);
    }
    /* Negative answers carry no answer TTL here: keep NXDOMAIN 5 minutes. */
    dns_cache_put(status == ARES_EDESTRUCTION ? NULL : d, &r,
                  r.status == DNS_NXDOMAIN ? 300 : r.ttl);
    q->mx_cb(q->user, &r);
    ares_free_data(mx);
    free(q);
    dns_pending_run(d);
}

void dns_resolve_mx(struct dns *d, const char *domain, dns_mx_cb cb, void *user)
{
    char *why = NULL;
    struct dns_query *q = dns_query_new(domain, &why);
    if (!q) {
        struct dns_mx_result r = {.status = DNS_BAD_NAME, .ascii_domain = domain, .error = why};
        cb(user, &r);
        return;
    }
    struct dns_cached *e = dns_cache_get(d, q->ascii);
    if (e) {
        struct dns_mx_host hosts[64];
        size_t n = e->n < 64 ? e->n : 64;
        memcpy(hosts, e->hosts, n * sizeof hosts[0]);
        dns_mx_order(d, hosts, n); /* equal preferences spread again on every use */
        struct dns_mx_result r = {.status = e->status,
                                  .implicit = e->implicit,
                                  .secure = e->secure,
                                  .hosts = hosts,
                                  .n = n,
                                  .ttl = e->ttl,
                                  .ascii_domain = q->ascii,
                                  .error = e->status == DNS_NULL_MX
                                               ? "null MX: the domain accepts no mail (RFC 7505)"
                                           : e->status == DNS_NXDOMAIN ? "NXDOMAIN: no such domain"
                                                                       : NULL};
        d->cache_hits++;
        d->depth++;
        cb(user, &r);
        free(q);
        dns_leave(d);
        return;
    }
    if (d->dying) {
        struct dns_mx_result r = {
            .status = DNS_TEMPFAIL, .ascii_domain = q->ascii, .error = "resolver shutting down"};
        cb(user, &r);
        free(q);
        return;
    }
    q->mx_cb = cb;
    q->user = user;
    d->queries++;
    d->depth++;
    dns_submit(d, q);
    if (dns_leave(d)) {
        return;
    }
    dns_schedule(d);
}

static void dns_addr_step(struct dns_query *q, int status);

/* A or AAAA asked by dns_raw_send (DNSSEC): the addresses of the answer
 * (CNAMEs followed within it) and its AD bit. */
static void dns_on_addr_raw(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    struct dns_query *q = arg;
    struct dns_addrs *a = q->acc;
    if (dns_query_retry(q, status)) {
        return;
    }
    int ad = q->ad;
    if (status == ARES_SUCCESS) {
        struct ares_addrttl v4[32];
        struct ares_addr6ttl v6[32];
        int n = 32;
        status = a->family == AF_INET ? ares_parse_a_reply(abuf, alen, NULL, v4, &n)
                                      : ares_parse_aaaa_reply(abuf, alen, NULL, v6, &n);
        for (int i = 0; status == ARES_SUCCESS && i < n && a->n < 32; i++) {
            struct sockaddr_storage *ss = &a->addrs[a->n++];
            memset(ss, 0, sizeof *ss);
            if (a->family == AF_INET) {
                struct sockaddr_in *sin = (struct sockaddr_in *)ss;
                sin->sin_family = AF_INET;
                sin->sin_addr = v4[i].ipaddr;
            } else {
                struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
                sin6->sin6_family = AF_INET6;
                memcpy(&sin6->sin6_addr, &v6[i].ip6addr, sizeof sin6->sin6_addr);
            }
        }
    }
    if (status != ARES_SUCCESS && status != ARES_ENOTFOUND && status != ARES_ENODATA) {
        /* No answer (a timeout, SERVFAIL): says nothing about whether the
         * zone is signed. The other family's secure answer stands; were
         * both to fail, the result is DNS_TEMPFAIL. (Folding the missing AD
         * in made a secure host "insecure" whenever its AAAA timed out:
         * DANE silently off under load.) */
        a->failed = status;
    } else {
        a->secure = a->secure && ad;
    }
    dns_addr_step(q, status);
}

static void dns_on_addr(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    (void)timeouts;
    struct dns_query *q = arg;
    struct dns_addrs *a = q->acc;
    if (dns_query_retry(q, status)) {
        ares_freeaddrinfo(res);
        return;
    }
    if (status == ARES_SUCCESS && res) {
        for (struct ares_addrinfo_node *n = res->nodes; n && a->n < 32; n = n->ai_next) {
            if (n->ai_addrlen <= sizeof a->addrs[0]) {
                memset(&a->addrs[a->n], 0, sizeof a->addrs[0]);
                memcpy(&a->addrs[a->n++], n->ai_addr, n->ai_addrlen);
            }
        }
    } else if (status != ARES_ENOTFOUND && status != ARES_ENODATA) {
        a->failed = status; /* no answer: not the same as "no address" */
    }
    ares_freeaddrinfo(res);
    dns_addr_step(q, status);
}

/* One family's answer is in (status): ask the other, or call back. */
static void dns_addr_step(struct dns_query *q, int status)
{
    struct dns *d = q->d;
    struct dns_addrs *a = q->acc;
    /* A that timed out or was refused through every round: the zone's
     * servers are away, and AAAA would only double the wait. */
    if (a->family == AF_INET && !d->dying && status != ARES_ETIMEOUT &&
        status != ARES_ECONNREFUSED) {
        a->family = AF_INET6;
        q->rounds = 0;
        dns_query_requeue(q);
        return;
    }
    struct dns_addr_result r = {.addrs = a->addrs, .n = a->n, .secure = a->secure && a->n > 0};
    if (r.n == 0) {
        r.status = a->failed ? DNS_TEMPFAIL : DNS_NXDOMAIN;
        r.error = a->failed ? ares_strerror(a->failed) : "no addresses";
    }
    q->addr_cb(q->user, &r);
    free(a);
    free(q);
    dns_pending_run(d);
}

/* host is an address literal: into a->addrs[0], 1. */
static int dns_addr_numeric(const char *host, struct dns_addrs *a)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&a->addrs[0];
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->addrs[0];
    memset(&a->addrs[0], 0, sizeof a->addrs[0]);
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        return 1;
    }
    memset(&a->addrs[0], 0, sizeof a->addrs[0]);
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        return 1;
    }
    return 0;
}

void dns_resolve_addr(struct dns *d, const char *host, dns_addr_cb cb, void *user)
{
    char *why = NULL;
    struct dns_query *q = dns_query_new(host, &why);
    if (!q) {
        struct dns_addr_result r = {.status = DNS_BAD_NAME, .error = why};
        cb(user, &r);
        return;
    }
    if (d->dying) {
        struct dns_addr_result r = {.status = DNS_TEMPFAIL, .error = "resolver shutting down"};
        free(q);
        cb(user, &r);
        return;
    }
    q->acc = calloc(1, sizeof *q->acc);
    if (!q->acc) {
        struct dns_addr_result r = {.status = DNS_TEMPFAIL, .error = "out of memory"};
        free(q);
        cb(user, &r);
        return;
    }
    q->acc->family = AF_INET;
    q->acc->secure = d->dnssec;
    if (d->dnssec && dns_addr_numeric(host, q->acc)) {
        /* Its own answer, and no DNSSEC one: insecure. */
        struct dns_addr_result r = {.addrs = q->acc->addrs, .n = 1};
        cb(user, &r);
        free(q->acc);
        free(q);
        return;
    }
    q->addr_cb = cb;
    q->user = user;
    d->depth++; /* c-ares may answer at once (numeric host, hosts file) */
    dns_submit(d, q);
    if (dns_leave(d)) {
        return;
    }
    dns_schedule(d);
}

static void dns_tlsa_deliver(struct dns_query *q, const struct dns_tlsa_result *r);

/* dns_free: the lookups still waiting for room get their one callback. */
static void dns_pending_cancel(struct dns *d)
{
    struct dns_query *q;
    while ((q = dns_pending_pop(d)) != NULL) {
        if (q->mx_cb) {
            struct dns_mx_result r = {.status = DNS_TEMPFAIL,
                                      .ascii_domain = q->ascii,
                                      .error = "resolver shutting down"};
            q->mx_cb(q->user, &r);
        } else if (q->txt_cb) {
            struct dns_txt_result r = {
                .status = DNS_TEMPFAIL, .ascii_name = q->ascii, .error = "resolver shutting down"};
            q->txt_cb(q->user, &r);
        } else if (q->tlsa_cb) {
            struct dns_tlsa_result r = {
                .status = DNS_TEMPFAIL, .name = q->ascii, .error = "resolver shutting down"};
            dns_tlsa_deliver(q, &r);
        } else {
            struct dns_addr_result r = {.status = DNS_TEMPFAIL, .error = "resolver shutting down"};
            q->addr_cb(q->user, &r);
            free(q->acc);
        }
        free(q);
    }
}

/* ---- TXT ---- */

#define DNS_TXT_MAX 64 /* records kept of one answer */

/* Why a lookup got no answer, in the words an operator knows. */
static const char *dns_fail_reason(int status)
{
    switch (status) {
    case ARES_ESERVFAIL:
        return "SERVFAIL";
    case ARES_EREFUSED:
        return "REFUSED by the resolver";
    case ARES_ETIMEOUT:
        return "timeout: the resolver did not answer";
    case ARES_ECONNREFUSED: /* c-ares 1.18 says this for both */
        return "SERVFAIL or REFUSED from the resolver, or no resolver at its address";
    case ARES_EDESTRUCTION:
        return "resolver shutting down";
    default:
        return ares_strerror(status);
    }
}

static void dns_on_txt(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    struct dns_query *q = arg;
    if (dns_query_retry(q, status)) {
        return;
    }
    struct dns *d = q->d;
    struct dns_txt_result r = {.ascii_name = q->ascii};
    char *recs[DNS_TXT_MAX];
    size_t lens[DNS_TXT_MAX];
    struct ares_txt_ext *txt = NULL;
    int prc = status == ARES_SUCCESS ? ares_parse_txt_reply_ext(abuf, alen, &txt) : status;
    if (prc == ARES_SUCCESS) {
        int keep = 0; /* the current record is one of the first DNS_TXT_MAX */
        for (struct ares_txt_ext *t = txt; t; t = t->next) {
            if (t->record_start || r.n == 0) {
                char *empty = r.n < DNS_TXT_MAX ? calloc(1, 1) : NULL;
                keep = empty != NULL;
                if (keep) {
                    recs[r.n] = empty;
                    lens[r.n++] = 0;
                }
            }
            if (!keep) {
                continue;
            }
            char *grown = realloc(recs[r.n - 1], lens[r.n - 1] + t->length + 1);
            if (!grown) {
                keep = 0;
                continue;
            }
            memcpy(grown + lens[r.n - 1], t->txt, t->length);
            lens[r.n - 1] += t->length;
            grown[lens[r.n - 1]] = '\0';
            recs[r.n - 1] = grown;
        }
    } else if (prc == ARES_ENOTFOUND) {
        r.status = DNS_NXDOMAIN;
        r.error = "NXDOMAIN: no such name";
    } else if (prc != ARES_ENODATA) {
        r.status = DNS_TEMPFAIL;
        r.error = dns_fail_reason(prc);
    }
    r.records = (const char *const *)recs;
    r.lens = lens;
    q->txt_cb(q->user, &r);
    for (size_t i = 0; i < r.n; i++) {
        free(recs[i]);
    }
    ares_free_data(txt);
    free(q);
    dns_pending_run(d);
}

void dns_resolve_txt(struct dns *d, const char *name, dns_txt_cb cb, void *user)
{
    char *why = NULL;
    struct dns_query *q = dns_query_new(name, &why);
    if (!q) {
        struct dns_txt_result r = {.status = DNS_BAD_NAME, .ascii_name = name, .error = why};
        cb(user, &r);
        return;
    }
    if (d->dying) {
        struct dns_txt_result r = {
            .status = DNS_TEMPFAIL, .ascii_name = q->ascii, .error = "resolver shutting down"};
        cb(user, &r);
        free(q);
        return;
    }
    q->txt_cb = cb;
    q->user = user;
    d->depth++;
    dns_submit(d, q);
    if (dns_leave(d)) {
        return;
    }
    dns_schedule(d);
}

/* ---- TLSA (DANE) ---- */

void dns_set_dnssec(struct dns *d, int on)
{
    d->dnssec = on;
}

int dns_dnssec(const struct dns *d)
{
    return d->dnssec;
}

void dns_tlsa_stats(const struct dns *d, uint64_t *queries, uint64_t *cache_hits)
{
    *queries = d->tlsa_queries;
    *cache_hits = d->tlsa_hits;
}

int dns_tlsa_parse(const unsigned char *abuf, int alen, struct dns_tlsa_answer *out)
{
    ns_msg msg;
    ns_rr rr;
    size_t used = 0;
    out->n = 0;
    out->ttl = 0;
    if (ns_initparse(abuf, alen, &msg) < 0) {
        return -1;
    }
    uint32_t ttl = UINT32_MAX;
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
        if (ns_parserr(&msg, ns_s_an, i, &rr) < 0) {
            return -1;
        }
        if (ns_rr_type(rr) != 52 || ns_rr_class(rr) != ns_c_in || ns_rr_rdlen(rr) < 3) {
            continue; /* the CNAMEs and RRSIGs beside them, or a broken record */
        }
        const unsigned char *rd = ns_rr_rdata(rr);
        size_t len = (size_t)ns_rr_rdlen(rr) - 3;
        if (out->n >= DNS_TLSA_MAX || used + len > sizeof out->data) {
            break;
        }
        memcpy(out->data + used, rd + 3, len);
        out->recs[out->n++] = (struct dane_tlsa){rd[0], rd[1], rd[2], out->data + used, len};
        used += len;
        ttl = ns_rr_ttl(rr) < ttl ? ns_rr_ttl(rr) : ttl;
    }
    out->ttl = ttl == UINT32_MAX ? 0 : ttl;
    return 0;
}

static struct dns_tlsa_cached *dns_tlsa_cache_get(struct dns *d, const char *name)
{
    uint64_t now = loop_clock_ms(d->loop);
    for (struct dns_tlsa_cached **pp = &d->tlsa_cache[dns_cache_bucket(name)]; *pp;
         pp = &(*pp)->next) {
        struct dns_tlsa_cached *e = *pp;
        if (strcmp(e->name, name) != 0) {
            continue;
        }
        if (e->expires_ms > now) {
            return e;
        }
        *pp = e->next;
        free(e);
        return NULL;
    }
    return NULL;
}

/* q's answer r to its caller and to every lookup that waited for it. q
 * leaves the in-flight list first: a callback that asks again sends anew. */
static void dns_tlsa_deliver(struct dns_query *q, const struct dns_tlsa_result *r)
{
    struct dns *d = q->d;
    for (struct dns_query **pp = &d->tlsa_inflight; *pp; pp = &(*pp)->tnext) {
        if (*pp == q) {
            *pp = q->tnext;
            break;
        }
    }
    q->tlsa_cb(q->user, r);
    for (struct dns_waiter *w = q->waiters, *next; w; w = next) {
        next = w->next;
        w->cb(w->user, r);
        free(w);
    }
    q->waiters = NULL;
}

static void dns_tlsa_answer_cb(const struct dns_tlsa_cached *e, const char *error, dns_tlsa_cb cb,
                               void *user)
{
    struct dns_tlsa_result r = {.status = e->status,
                                .secure = e->secure,
                                .recs = e->ans.recs,
                                .n = e->ans.n,
                                .name = e->name,
                                .error = error};
    cb(user, &r);
}

static void dns_on_tlsa(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    struct dns_query *q = arg;
    if (dns_query_retry(q, status)) {
        return;
    }
    struct dns *d = q->d;
    /* One entry, kept in the cache or freed after the callback. */
    struct dns_tlsa_cached *e = calloc(1, sizeof *e);
    const char *error = NULL;
    if (!e) {
        struct dns_tlsa_result r = {
            .status = DNS_TEMPFAIL, .name = q->ascii, .error = "out of memory"};
        dns_tlsa_deliver(q, &r);
        free(q);
        dns_pending_run(d);
        return;
    }
    snprintf(e->name, sizeof e->name, "%s", q->ascii);
    e->secure = q->ad;
    uint32_t ttl = 300; /* NXDOMAIN, NODATA */
    if (status == ARES_SUCCESS && dns_tlsa_parse(abuf, alen, &e->ans) < 0) {
        status = ARES_EBADRESP;
    }
    if (status == ARES_SUCCESS) {
        ttl = e->ans.ttl;
    } else if (status == ARES_ENOTFOUND) {
        e->status = DNS_NXDOMAIN;
        error = "NXDOMAIN: no such name";
    } else if (status != ARES_ENODATA) {
        e->status = DNS_TEMPFAIL;
        e->secure = 0;
        error = dns_fail_reason(status);
    }
    int keep = status != ARES_EDESTRUCTION && e->status != DNS_TEMPFAIL && ttl > 0 &&
               !dns_tlsa_cache_get(d, e->name);
    if (keep) {
        e->expires_ms = loop_clock_ms(d->loop) + (uint64_t)ttl * 1000;
        size_t b = dns_cache_bucket(e->name);
        e->next = d->tlsa_cache[b];
        d->tlsa_cache[b] = e;
    }
    struct dns_tlsa_result res = {.status = e->status,
                                  .secure = e->secure,
                                  .recs = e->ans.recs,
                                  .n = e->ans.n,
                                  .name = e->name,
                                  .error = error};
    dns_tlsa_deliver(q, &res);
    if (!keep) {
        free(e);
    }
    free(q);
    dns_pending_run(d);
}

void dns_resolve_tlsa(struct dns *d, const char *host, unsigned port, dns_tlsa_cb cb, void *user)
{
    char *why = NULL;
    struct dns_query *q = dns_query_new(host, &why);
    if (!q || strlen(q->ascii) + 16 >= sizeof q->ascii) {
        struct dns_tlsa_result r = {
            .status = DNS_BAD_NAME, .name = host, .error = q ? "name too long" : why};
        free(q);
        cb(user, &r);
        return;
    }
    char base[256];
    snprintf(base, sizeof base, "%.255s", q->ascii);
    snprintf(q->ascii, sizeof q->ascii, "_%u._tcp.%s", port & 0xffff, base);
    struct dns_tlsa_cached *e = dns_tlsa_cache_get(d, q->ascii);
    if (e || d->dying) {
        d->depth++;
        if (e) {
            d->tlsa_hits++;
            dns_tlsa_answer_cb(e, e->status == DNS_NXDOMAIN ? "NXDOMAIN: no such name" : NULL, cb,
                               user);
        } else {
            struct dns_tlsa_result r = {
                .status = DNS_TEMPFAIL, .name = q->ascii, .error = "resolver shutting down"};
            cb(user, &r);
        }
        free(q);
        dns_leave(d);
        return;
    }
    for (struct dns_query *x = d->tlsa_inflight; x; x = x->tnext) {
        struct dns_waiter *w = strcmp(x->ascii, q->ascii) == 0 ? calloc(1, sizeof *w) : NULL;
        if (w) {
            /* Asked already (destinations that share an MX host, resolved
             * at once): one query answers both. */
            *w = (struct dns_waiter){x->waiters, cb, user};
            x->waiters = w;
            d->tlsa_hits++;
            free(q);
            return;
        }
    }
    q->tlsa_cb = cb;
    q->user = user;
    q->tnext = d->tlsa_inflight;
    d->tlsa_inflight = q;
    d->tlsa_queries++;
    d->depth++;
    dns_submit(d, q);
    if (dns_leave(d)) {
        return;
    }
    dns_schedule(d);
}
