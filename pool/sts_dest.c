/*
 * sts_dest - MTA-STS (RFC 8461) in the delivery pool. See sts_dest.h.
 *
 * For a destination routed by MX (never a static route or the relay, never
 * with dest_policy_off) the `_mta-sts.DOMAIN` TXT record is looked up on
 * the pool's resolver beside the MX lookup. What it says decides:
 *   - a policy is cached (in memory; in campaign mode also in PostgreSQL,
 *     shared by every node) under the id the TXT names now, and not in its
 *     last half of life: it applies at once;
 *   - otherwise, when the TXT names an id, the policy is fetched on the
 *     fetcher thread (sts_fetch.h) while the destination waits; a cached
 *     policy still in force applies meanwhile (a refresh, RFC 8461 5.1),
 *     and stays when the refresh fails;
 *   - no TXT record, or a failed TXT lookup, and nothing cached: no policy.
 * When the ISP has mta_sts off (config_mta_sts) nothing of this applies.
 *
 * A policy in mode enforce: only the MX hosts its mx patterns match become
 * targets (none: every message deferred, mta_sts_no_matching_mx, result
 * validation-failure); every connection verifies the certificate for the
 * MX host name (the verify context, SNI the MX host) and TLS is mandatory,
 * so a missing STARTTLS or a bad certificate defers (reason mta_sts_ and
 * the TLS reason; result starttls-not-supported or the certificate's
 * result type), and nothing is ever sent in plaintext. Mode testing: the
 * configured policy as always, and the result type of what would have
 * failed recorded (an MX the patterns do not match, the certificate).
 * Mode none is no policy. Each attempt records tlsp type mta-sts, the mode
 * and the TXT id the policy was fetched under.
 *
 * No policy because its fetch failed (HTTP, certificate, invalid text):
 * the configured policy applies (RFC 8461 5: as if the domain had none),
 * and each attempt records tls_policy config with the fetch's RFC 8460
 * result type (sts-policy-fetch-error, sts-webpki-invalid,
 * sts-policy-invalid), so TLS-RPT can report it.
 */
#include "pool/sts_dest.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "engine/tls_session_cache.h"
#include "pool/sts_fetch.h"

#define STS_BUCKETS 1024
#define STS_FETCH_TIMEOUT_MS 10000
/* STS_FETCHERS (sts_fetch.h) fetcher threads: a slow policy host holds one
 * of them, not every other domain's fetch behind it. */

/* One recipient domain's policy, as this process knows it. */
struct sts_entry {
    char domain[256];
    int have;                  /* a good policy (maybe expired) */
    struct mta_sts_policy pol; /* when have */
    char id[MTA_STS_ID_MAX];   /* the TXT id it was fetched under */
    char *text;                /* owned: as served */
    int64_t fetched_at, expires_at;
    char announced[MTA_STS_ID_MAX]; /* on_tls_policy was called for this id */
    int has_txt;                    /* the last TXT lookup found a valid STSv1 record ... */
    char txt_id[MTA_STS_ID_MAX];    /* ... naming this id */
    int fetching;                   /* a job is out */
    int cache_asked;                /* the shared cache was asked once, without a TXT id */
    int txt_failed_said;            /* a failed TXT lookup was said on stderr */
    const char *error_type;         /* the last fetch failed: its result type, else NULL */
    char error[400];
    struct pool_dest *dest; /* the domain's destination (one per domain) */
    struct sts_entry *hnext;
};

struct sts_cache {
    struct sts_entry *buckets[STS_BUCKETS];
    pthread_t thread[STS_FETCHERS];
    unsigned started; /* threads running */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct sts_job *todo, *done; /* under mu */
    int quit;                    /* under mu */
    int efd;
    struct loop_op op;
    int armed;
    unsigned out; /* jobs handed to the thread and not back */
    /* pool_mta_sts_stats: _mta-sts TXT lookups, policy requests over HTTPS
     * made by this process, policies answered by the shared cache */
    uint64_t txt_lookups, fetches, shared_answers;
    uint64_t txt_failed; /* lookups that got no answer (SERVFAIL, timeout) */
};

/* ---- the fetcher threads ---- */

/* What one fetcher thread is given. */
struct sts_fetcher {
    struct pool *p;
    unsigned worker;
};

static void *sts_thread_main(void *arg)
{
    struct sts_fetcher f = *(struct sts_fetcher *)arg;
    free(arg);
    struct pool *p = f.p;
    struct sts_cache *sc = p->sts;
    pthread_mutex_lock(&sc->mu);
    for (;;) {
        while (!sc->todo && !sc->quit) {
            pthread_cond_wait(&sc->cv, &sc->mu);
        }
        if (sc->quit) {
            break;
        }
        struct sts_job *j = sc->todo;
        sc->todo = j->next;
        j->worker = f.worker;
        pthread_mutex_unlock(&sc->mu);
        if (p->opt.sts_shared) {
            p->opt.sts_shared(p->opt.sts_user, j);
        } else if (!j->cache_only) {
            sts_fetch_run(j);
        }
        pthread_mutex_lock(&sc->mu);
        j->next = sc->done;
        sc->done = j;
        uint64_t one = 1;
        ssize_t n = write(sc->efd, &one, sizeof one);
        (void)n;
    }
    pthread_mutex_unlock(&sc->mu);
    return NULL;
}

static void sts_done(struct loop_op *op, int res, unsigned flags);

static void sts_arm(struct pool *p)
{
    struct sts_cache *sc = p->sts;
    if (!sc->armed && sc->out > 0 && !p->stopped) {
        sc->armed = 1;
        sc->op.cb = sts_done;
        sc->op.owner = p;
        loop_poll_add(p->loop, &sc->op, sc->efd, POLLIN);
    }
}

static int sts_cache_init(struct pool *p)
{
    struct sts_cache *sc = pool_xcalloc(1, sizeof *sc);
    sc->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sc->efd < 0) {
        free(sc);
        return -1;
    }
    pthread_mutex_init(&sc->mu, NULL);
    pthread_cond_init(&sc->cv, NULL);
    p->sts = sc;
    for (unsigned i = 0; i < STS_FETCHERS; i++) {
        struct sts_fetcher *f = pool_xcalloc(1, sizeof *f);
        f->p = p;
        f->worker = i;
        if (pthread_create(&sc->thread[i], NULL, sts_thread_main, f) != 0) {
            free(f);
            break; /* none at all: no fetches, no policy (sts_fetch_start sees !started) */
        }
        sc->started++;
    }
    return 0;
}

/* ---- the memory cache ---- */

/* sts_entry_get - domain's entry, made for d when there is none (d NULL: none made) */
static struct sts_entry *sts_entry_get(struct sts_cache *sc, const char *domain,
                                       struct pool_dest *d)
{
    unsigned h = 2166136261u;
    for (const char *s = domain; *s; s++) {
        h = (h ^ (unsigned char)*s) * 16777619u;
    }
    struct sts_entry **b = &sc->buckets[h % STS_BUCKETS];
    for (struct sts_entry *e = *b; e; e = e->hnext) {
        if (strcmp(e->domain, domain) == 0) {
            return e;
        }
    }
    if (!d) {
        return NULL;
    }
    struct sts_entry *e = pool_xcalloc(1, sizeof *e);
    snprintf(e->domain, sizeof e->domain, "%s", domain);
    e->dest = d;
    e->hnext = *b;
    *b = e;
    return e;
}

/* sts_usable - e's policy may apply now (fetched, not expired) */
static int sts_usable(const struct sts_entry *e, int64_t now)
{
    return e->have && e->expires_at > now;
}

/* sts_fresh - e's policy needs no refresh for txt_id: same id, in its first half of life */
static int sts_fresh(const struct sts_entry *e, const char *txt_id, int64_t now)
{
    return sts_usable(e, now) && strcmp(e->id, txt_id) == 0 &&
           now - e->fetched_at < (int64_t)e->pol.max_age / 2 + 1;
}

/* What a policy fetch needs between the host lookup and the job. */
struct sts_host_lookup {
    struct pool *p;
    struct sts_entry *e;
    char txt_id[MTA_STS_ID_MAX];
};

static void sts_job_take(struct pool *p, struct sts_job *j);

/* sts_host_cb - mta-sts.DOMAIN's address (the pool's resolver, like every
 * name ringmail looks up): the job goes to the fetcher thread, connecting
 * there (the certificate is still checked for the name) */
static void sts_host_cb(void *user, const struct dns_addr_result *res)
{
    struct sts_host_lookup *lk = user;
    struct pool *p = lk->p;
    struct sts_cache *sc = p->sts;
    struct sts_job *j = pool_xcalloc(1, sizeof *j);
    int found = !p->stopped && res->status == DNS_OK && res->n > 0;
    sts_job_init(j, lk->e->domain, lk->txt_id, found ? &res->addrs[0] : NULL, p->opt.mta_sts_port,
                 p->opt.ca_file, p->opt.timeout_ms ? p->opt.timeout_ms : STS_FETCH_TIMEOUT_MS);
    free(lk);
    if (!found) {
        snprintf(j->error, sizeof j->error, "policy fetch: no address for mta-sts.%s (%s)",
                 j->domain, res->error ? res->error : dns_status_name(res->status));
        j->error_type = "sts-policy-fetch-error";
        sts_job_take(p, j);
        sts_job_free(j, 1);
        return;
    }
    pthread_mutex_lock(&sc->mu);
    j->next = sc->todo;
    sc->todo = j;
    pthread_cond_signal(&sc->cv);
    pthread_mutex_unlock(&sc->mu);
    sc->out++;
    sts_arm(p);
}

/* sts_cache_ask - no TXT id and no policy in memory: the shared cache
 * (PostgreSQL) may still hold an unexpired policy, which then applies (RFC
 * 8461 5.1: a TXT record that is missing or cannot be looked up does not
 * lift a cached policy; an attacker who blocks it gains nothing). Once per
 * domain and process. 1 when asked (d waits for the answer). */
static int sts_cache_ask(struct pool *p, struct sts_entry *e)
{
    struct sts_cache *sc = p->sts;
    if (!p->opt.sts_shared || e->cache_asked || e->fetching || !sc->started || p->stopped) {
        return 0;
    }
    e->cache_asked = 1;
    e->fetching = 1;
    struct sts_job *j = pool_xcalloc(1, sizeof *j);
    sts_job_init(j, e->domain, "", NULL, p->opt.mta_sts_port, p->opt.ca_file,
                 p->opt.timeout_ms ? p->opt.timeout_ms : STS_FETCH_TIMEOUT_MS);
    j->cache_only = 1;
    pthread_mutex_lock(&sc->mu);
    j->next = sc->todo;
    sc->todo = j;
    pthread_cond_signal(&sc->cv);
    pthread_mutex_unlock(&sc->mu);
    sc->out++;
    sts_arm(p);
    return 1;
}

static void sts_fetch_start(struct pool *p, struct sts_entry *e, const char *txt_id)
{
    struct sts_cache *sc = p->sts;
    if (e->fetching || !sc->started || p->stopped || !p->dns) {
        return;
    }
    struct sts_host_lookup *lk = pool_xcalloc(1, sizeof *lk);
    lk->p = p;
    lk->e = e;
    snprintf(lk->txt_id, sizeof lk->txt_id, "%s", txt_id);
    e->fetching = 1;
    char host[300];
    snprintf(host, sizeof host, "mta-sts.%s", e->domain);
    dns_resolve_addr(p->dns, host, sts_host_cb, lk);
}

/* sts_release - d waited for e's policy: it goes on now */
static void sts_release(struct pool *p, struct pool_dest *d)
{
    int held = d->sts_held;
    d->sts_wait = 0;
    d->sts_held = 0;
    if (held && !p->stopped) {
        d->state = DEST_READY;
        if (pool_sts_ready(p, d)) {
            pool_kick(p);
        }
    }
}

/* sts_job_take - a finished job into the cache; the destination waiting
 * for it goes on */
static void sts_job_take(struct pool *p, struct sts_job *j)
{
    struct sts_entry *e = sts_entry_get(p->sts, j->domain, NULL);
    if (!e) {
        return;
    }
    e->fetching = 0;
    if (j->fetched) {
        p->sts->fetches++;
    } else if (j->ok) {
        p->sts->shared_answers++;
    }
    if (j->ok) {
        e->have = 1;
        e->pol = j->pol;
        snprintf(e->id, sizeof e->id, "%s", j->id);
        free(e->text);
        e->text = j->text;
        j->text = NULL;
        e->fetched_at = j->fetched_at;
        e->expires_at = j->expires_at;
    }
    /* A refresh that failed keeps the last good policy (RFC 8461 5.1); the
     * error is what an attempt records only while there is none. */
    e->error_type = j->ok ? NULL : j->error_type;
    snprintf(e->error, sizeof e->error, "%s", j->ok ? "" : j->error);
    if (j->error[0]) { /* a failed refresh may still answer with the last good policy */
        fprintf(stderr, "ringmail: MTA-STS %s: %s%s\n", e->domain, j->error,
                sts_usable(e, (int64_t)time(NULL)) ? " (the cached policy stays in force)"
                                                   : " (no policy: delivering as configured)");
    }
    if (e->dest && e->dest->sts_wait) {
        sts_release(p, e->dest);
    }
}

static void sts_done(struct loop_op *op, int res, unsigned flags)
{
    (void)flags;
    struct pool *p = op->owner;
    struct sts_cache *sc = p->sts;
    sc->armed = 0;
    if (res < 0) {
        return; /* cancelled: the pool stops */
    }
    uint64_t v;
    ssize_t n = read(sc->efd, &v, sizeof v);
    (void)n;
    pthread_mutex_lock(&sc->mu);
    struct sts_job *list = sc->done;
    sc->done = NULL;
    pthread_mutex_unlock(&sc->mu);
    while (list) {
        struct sts_job *j = list;
        list = j->next;
        sc->out--;
        sts_job_take(p, j);
        sts_job_free(j, 1);
    }
    sts_arm(p);
}

/* ---- the destination ---- */

/* sts_any_on - MTA-STS is on for some ISP (or [global]) */
static int sts_any_on(const struct config *c)
{
    if (c->mta_sts) {
        return 1;
    }
    for (size_t i = 0; i < c->nisps; i++) {
        if (c->isps[i].mta_sts == 1) {
            return 1;
        }
    }
    return 0;
}

static void sts_txt_cb(void *user, const struct dns_txt_result *res)
{
    struct pool_dest *d = user;
    struct pool *p = d->pool;
    /* The entry, not d->sts: a reload that routed d meanwhile cleared that. */
    struct sts_entry *e = sts_entry_get(p->sts, d->domain, NULL);
    if (p->stopped || !e) {
        d->sts_wait = 0;
        return;
    }
    char why[200];
    e->has_txt = res->status == DNS_OK &&
                 mta_sts_txt_parse(res->records, res->lens, res->n, e->txt_id, why, sizeof why);
    if (res->status == DNS_TEMPFAIL) {
        /* Said, once per domain and process: without an answer and with no
         * cached policy the domain goes as configured (RFC 8461 5.1). */
        p->sts->txt_failed++;
        if (!e->txt_failed_said) {
            e->txt_failed_said = 1;
            fprintf(stderr,
                    "ringmail: MTA-STS %s: the _mta-sts TXT lookup failed (%s): a cached policy "
                    "still applies, else the configured one\n",
                    d->domain, res->error ? res->error : "no answer");
        }
    }
    sts_release(p, d); /* pool_sts_ready decides, once the ISP is known too */
}

/* sts_policy_wait - d's TXT is known and its ISP wants MTA-STS: fetch when
 * the TXT names a new id or the policy is in its second half of life (once
 * per lookup of d); 1 when d must wait for it (no policy in force) */
static int sts_policy_wait(struct pool *p, struct pool_dest *d, struct sts_entry *e)
{
    int64_t now = (int64_t)time(NULL);
    if (e->has_txt && !sts_fresh(e, e->txt_id, now) && !d->sts_tried) {
        d->sts_tried = 1;
        sts_fetch_start(p, e, e->txt_id);
    }
    if (!e->has_txt && !sts_usable(e, now) && sts_cache_ask(p, e)) {
        return 1; /* sts_job_take releases d */
    }
    if (e->fetching && !sts_usable(e, now)) {
        return 1; /* sts_job_take releases d */
    }
    if (!e->has_txt && !sts_usable(e, now)) {
        e->error_type = NULL; /* no MTA-STS at all: nothing to report */
        e->error[0] = '\0';
    }
    return 0;
}

void pool_sts_begin(struct pool *p, struct pool_dest *d)
{
    if (d->is_relay || !p->dns || p->opt.dest_policy_off || p->stopped || !sts_any_on(p->config)) {
        return;
    }
    if (!p->sts && sts_cache_init(p) < 0) {
        return;
    }
    d->sts = sts_entry_get(p->sts, d->domain, d);
    if (d->sts_wait) {
        return; /* a lookup or fetch is out already */
    }
    d->sts_tried = 0;
    char name[300];
    snprintf(name, sizeof name, "_mta-sts.%s", d->domain);
    d->sts_wait = 1;
    p->sts->txt_lookups++;
    dns_resolve_txt(p->dns, name, sts_txt_cb, d);
}

/* sts_announce - the policy text for tls_policy_text, once per id */
static void sts_announce(struct pool *p, struct sts_entry *e)
{
    if (p->opt.on_tls_policy && e->text && strcmp(e->announced, e->id) != 0) {
        snprintf(e->announced, sizeof e->announced, "%s", e->id);
        p->opt.on_tls_policy(p->opt.user, "sts", e->domain, e->id, e->text);
    }
}

/* sts_filter - under enforce only the targets the policy's mx patterns match */
static size_t sts_filter(struct pool_dest *d, const struct mta_sts_policy *pol)
{
    size_t k = 0;
    for (size_t i = 0; i < d->ntargets; i++) {
        if (mta_sts_policy_mx_ok(pol, d->targets[i].host)) {
            d->targets[k++] = d->targets[i];
        }
    }
    d->ntargets = k;
    return k;
}

/* sts_no_match - no MX host matches: every waiting message deferred */
static void sts_no_match(struct pool *p, struct pool_dest *d, const struct mta_sts_policy *pol)
{
    char text[600];
    size_t n = (size_t)snprintf(
        text, sizeof text, "no MX host of %s matches its MTA-STS policy (enforce; mx:", d->domain);
    for (size_t i = 0; i < pol->nmx && n < sizeof text; i++) {
        n += (size_t)snprintf(text + n, sizeof text - n, " %s", pol->mx[i]);
    }
    if (n < sizeof text) {
        snprintf(text + n, sizeof text - n, ")");
    }
    snprintf(d->tlsp.fail, sizeof d->tlsp.fail, "validation-failure");
    d->state = DEST_NEW; /* resolved again for the next message */
    pool_fail_queue(p, d,
                    &(struct pool_outcome){
                        .outcome = SMTP_OUTCOME_DEFERRED,
                        .reason = "mta_sts_no_matching_mx",
                        .text = text,
                    });
}

/* sts_routed - d has a static route now (a reload may have added one):
 * the operator named the server, MTA-STS does not apply */
static int sts_routed(const struct pool *p, const struct pool_dest *d)
{
    for (size_t i = 0; i < p->config->nroutes; i++) {
        if (strcasecmp(p->config->routes[i].domain, d->domain) == 0) {
            return 1;
        }
    }
    return 0;
}

int pool_sts_ready(struct pool *p, struct pool_dest *d)
{
    struct sts_entry *e = d->sts;
    if (e && sts_routed(p, d)) {
        d->sts = NULL;
        d->sts_wait = d->sts_held = 0;
        memset(&d->tlsp, 0, sizeof d->tlsp);
        e = NULL;
    }
    if (!e) {
        return 1;
    }
    if (d->sts_wait) {
        d->sts_held = 1;
        d->state = DEST_RESOLVING; /* ready when the policy is known */
        return 0;
    }
    memset(&d->tlsp, 0, sizeof d->tlsp);
    if (!config_mta_sts(p->config, d->isp ? d->isp->cfg : NULL)) {
        return 1;
    }
    if (sts_policy_wait(p, d, e)) {
        d->sts_wait = 1;
        d->sts_held = 1;
        d->state = DEST_RESOLVING;
        return 0;
    }
    enum smtp_tls_policy conf = p->opt.tls_override || !d->isp ? p->opt.tls : d->isp->tls;
    if (!sts_usable(e, (int64_t)time(NULL)) || e->pol.mode == MTA_STS_NONE) {
        if (e->error_type) {
            tlsp_config(&d->tlsp, conf);
            snprintf(d->tlsp.fail, sizeof d->tlsp.fail, "%s", e->error_type);
        }
        return 1;
    }
    d->tlsp.type = TLSP_MTA_STS;
    snprintf(d->tlsp.mode, sizeof d->tlsp.mode, "%s", mta_sts_mode_name(e->pol.mode));
    snprintf(d->tlsp.policy_id, sizeof d->tlsp.policy_id, "%s", e->id);
    d->tlsp.check_cert = 1;
    sts_announce(p, e);
    if (e->pol.mode == MTA_STS_ENFORCE && sts_filter(d, &e->pol) == 0) {
        sts_no_match(p, d, &e->pol);
        return 0;
    }
    return 1;
}

void pool_sts_conn(struct pool *p, struct pool_conn *c)
{
    struct pool_dest *d = c->dest;
    if (c->tlsp.type == TLSP_DANE) {
        return; /* DANE decided for this target: it wins (RFC 8461 2) */
    }
    if (!d->sts || (d->tlsp.type != TLSP_MTA_STS && !d->tlsp.fail[0]) || sts_routed(p, d)) {
        return;
    }
    if (d->tlsp.type != TLSP_MTA_STS) {
        /* No policy because its fetch failed: configured, and said. */
        snprintf(c->tlsp.fail, sizeof c->tlsp.fail, "%s", d->tlsp.fail);
        return;
    }
    c->tlsp = d->tlsp;
    c->tlsp.fail[0] = '\0';
    d->tlsp.fail[0] = '\0'; /* a new try: an earlier connection's failure is not this one's */
    if (strcmp(c->tlsp.mode, "enforce") != 0) {
        if (!mta_sts_policy_mx_ok(&d->sts->pol, c->host)) {
            snprintf(c->tlsp.fail, sizeof c->tlsp.fail, "validation-failure"); /* testing */
        }
        return;
    }
    /* enforce: TLS mandatory and the certificate verified for the MX host. */
    struct client_conn_config *cfg = &c->cfg;
    /* No verify context (the trust store would not load): NULL, so the
     * STARTTLS fails and the message defers; never the non-verifying one. */
    cfg->tls_ctx = pool_tls_ctx(p, SMTP_TLS_VERIFY);
    cfg->smtp.tls_policy = SMTP_TLS_VERIFY;
    cfg->smtp.skip_starttls = 0;
    cfg->server_name = c->host;
    cfg->session_key = tls_session_cache_key(c->session_key, sizeof c->session_key, c->host,
                                             (const struct sockaddr *)&cfg->addr, "mta-sts");
}

/* sts_verify_type - the RFC 8460 result type of a failed handshake's text
 * ("certificate verify failed: Hostname mismatch"): client_conn keeps no TLS
 * facts of a handshake that failed, only engine/tls's reason, which names
 * X509_verify_cert_error_string's words. */
static const char *sts_verify_type(const char *text)
{
    if (!text || !strstr(text, "certificate verify failed")) {
        return NULL;
    }
    if (strstr(text, "Hostname mismatch") || strstr(text, "IP address mismatch")) {
        return "certificate-host-mismatch";
    }
    if (strstr(text, "certificate has expired") || strstr(text, "certificate is not yet valid")) {
        return "certificate-expired";
    }
    return "certificate-not-trusted";
}

void pool_sts_session_failed(struct pool_conn *c, const char *reason, const char *text)
{
    if (c->tlsp.type == TLSP_MTA_STS && !c->dest->tlsp.fail[0]) {
        const struct tls_info *tls = c->conn ? client_conn_tls(c->conn) : NULL;
        const char *r =
            strcmp(reason, "tls_verify_failed") == 0 && !tls ? sts_verify_type(text) : NULL;
        r = r ? r : tlsp_result(&c->tlsp, reason, tls);
        if (r) {
            /* What the queue's deferral records if every exchanger fails. */
            snprintf(c->dest->tlsp.fail, sizeof c->dest->tlsp.fail, "%s", r);
        }
    }
}

const char *pool_sts_reason(const struct tlsp *t, const char *reason)
{
    static const char *const tls_reasons[][2] = {
        {"tls_not_offered", "mta_sts_tls_not_offered"},
        {"tls_handshake_failed", "mta_sts_tls_handshake_failed"},
        {"tls_verify_failed", "mta_sts_tls_verify_failed"},
        {"starttls_refused", "mta_sts_starttls_refused"},
    };
    if (!t || !reason || t->type != TLSP_MTA_STS || strcmp(t->mode, "enforce") != 0) {
        return reason;
    }
    for (size_t i = 0; i < sizeof tls_reasons / sizeof tls_reasons[0]; i++) {
        if (strcmp(reason, tls_reasons[i][0]) == 0) {
            return tls_reasons[i][1];
        }
    }
    return reason;
}

void pool_sts_stop(struct pool *p)
{
    struct sts_cache *sc = p->sts;
    if (sc && sc->armed) {
        loop_cancel(p->loop, &sc->op); /* its callback runs with -ECANCELED */
    }
}

void pool_sts_free(struct pool *p)
{
    struct sts_cache *sc = p->sts;
    if (!sc) {
        return;
    }
    if (sc->started) {
        pthread_mutex_lock(&sc->mu);
        sc->quit = 1;
        pthread_cond_broadcast(&sc->cv);
        pthread_mutex_unlock(&sc->mu);
        for (unsigned i = 0; i < sc->started; i++) {
            pthread_join(sc->thread[i], NULL); /* a fetch in progress ends by its timeout */
        }
    }
    for (struct sts_job *lists[2] = {sc->todo, sc->done}, **l = lists; l < lists + 2; l++) {
        while (*l) {
            struct sts_job *j = *l;
            *l = j->next;
            sts_job_free(j, 1);
        }
    }
    for (size_t b = 0; b < STS_BUCKETS; b++) {
        while (sc->buckets[b]) {
            struct sts_entry *e = sc->buckets[b];
            sc->buckets[b] = e->hnext;
            free(e->text);
            free(e);
        }
    }
    close(sc->efd);
    pthread_mutex_destroy(&sc->mu);
    pthread_cond_destroy(&sc->cv);
    free(sc);
    p->sts = NULL;
}

void pool_mta_sts_stats(const struct pool *p, uint64_t *txt_lookups, uint64_t *txt_failed,
                        uint64_t *fetches, uint64_t *shared_answers)
{
    const struct sts_cache *sc = p->sts;
    *txt_lookups = sc ? sc->txt_lookups : 0;
    *txt_failed = sc ? sc->txt_failed : 0;
    *fetches = sc ? sc->fetches : 0;
    *shared_answers = sc ? sc->shared_answers : 0;
}
