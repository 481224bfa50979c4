/*
 * dane - DANE for SMTP in the pool. See pool/dane.h.
 *
 * Each destination that may use DANE keeps one pool_dane: whether its MX
 * answer was secure, and per MX host what the TLSA lookup said. A usable
 * set lives in a pool_dane_set, counted: the destination holds one
 * reference and each connection opened under it another, so a new MX
 * answer never pulls records from under a handshake.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/crypto.h"
#include "engine/tls_session_cache.h"
#include "pool/dane.h"
#include "pool/deliver_int.h"

#define POOL_DANE_TEXT_MAX 4096
#define POOL_DANE_ANNOUNCED 8

/* One MX host's secure TLSA set. */
struct pool_dane_set {
    unsigned refs;
    int usable; /* at least one usable record: the set authenticates */
    size_t n;
    struct dane_tlsa recs[DNS_TLSA_MAX]; /* data into data */
    uint8_t data[DNS_TLSA_DATA_MAX];
    char id[TLSP_ID_MAX];
    char text[POOL_DANE_TEXT_MAX]; /* the records, one per line (on_tls_policy) */
};

enum pool_dane_state {
    POOL_DANE_NONE = 0, /* no DANE for the host: falls back */
    POOL_DANE_SET,      /* a secure TLSA set */
    POOL_DANE_TEMPFAIL, /* the lookup failed: the host is not used */
};

struct pool_dane_host {
    char host[256];
    enum pool_dane_state state;
    struct pool_dane_set *set; /* a reference when SET */
};

struct pool_dane {
    int applies; /* DNSSEC resolver, MX-routed, the ISP's dane on, MX answer secure */
    struct pool_dane_host *hosts; /* owned, nhosts */
    size_t nhosts;
    struct pool_dest *d;
    size_t first; /* the targets of the host being looked up start here */
    char tempfail_text[600];
    /* on_tls_policy: ids already announced for this domain */
    char announced[POOL_DANE_ANNOUNCED][TLSP_ID_MAX];
    size_t nannounced;
};

static void pool_dane_set_put(struct pool_dane_set *s)
{
    if (s && --s->refs == 0) {
        free(s);
    }
}

static void pool_dane_hosts_clear(struct pool_dane *dn)
{
    for (size_t i = 0; i < dn->nhosts; i++) {
        pool_dane_set_put(dn->hosts[i].set);
    }
    free(dn->hosts);
    dn->hosts = NULL;
    dn->nhosts = 0;
    dn->tempfail_text[0] = '\0';
}

void pool_dane_free(struct pool_dane *dn)
{
    if (dn) {
        pool_dane_hosts_clear(dn);
        free(dn);
    }
}

void pool_dane_begin(struct pool *p, struct pool_dest *d, int mx_secure)
{
    /* What a connection-less attempt records starts over with each answer. */
    memset(&d->tlsp, 0, sizeof d->tlsp);
    int on = !d->is_relay && !p->opt.dest_policy_off && p->dns && dns_dnssec(p->dns) &&
             config_dane(p->config, d->isp ? d->isp->cfg : NULL);
    if (!on && !d->dane) {
        return;
    }
    if (!d->dane) {
        d->dane = pool_xcalloc(1, sizeof *d->dane);
        d->dane->d = d;
    }
    pool_dane_hosts_clear(d->dane);
    d->dane->applies = on && mx_secure;
}

static int pool_dane_line_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void pool_dane_set_id(const struct dane_tlsa *recs, size_t n, char *id, size_t idlen, char *text,
                      size_t textlen)
{
    char *lines[DNS_TLSA_MAX];
    size_t k = 0, at = 0;
    for (size_t i = 0; i < n && k < DNS_TLSA_MAX; i++) {
        size_t len = recs[i].len * 2 + 16;
        lines[k] = malloc(len);
        if (!lines[k]) {
            abort(); /* out of memory */
        }
        dane_tlsa_text(&recs[i], lines[k++], len);
    }
    qsort(lines, k, sizeof lines[0], pool_dane_line_cmp);
    struct crypto_sha256 h;
    crypto_sha256_init(&h);
    if (textlen) {
        text[0] = '\0';
    }
    for (size_t i = 0; i < k; i++) {
        crypto_sha256_update(&h, lines[i], strlen(lines[i]));
        crypto_sha256_update(&h, "\n", 1);
        int w = textlen > at ? snprintf(text + at, textlen - at, "%s\n", lines[i]) : 0;
        at = w > 0 && at + (size_t)w < textlen ? at + (size_t)w : (textlen ? textlen - 1 : 0);
        free(lines[i]);
    }
    uint8_t digest[CRYPTO_SHA256_LEN];
    crypto_sha256_final(&h, digest);
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    for (; i < 8 && 2 * i + 2 < idlen; i++) {
        id[2 * i] = hex[digest[i] >> 4];
        id[2 * i + 1] = hex[digest[i] & 15];
    }
    if (idlen) {
        id[2 * i < idlen ? 2 * i : idlen - 1] = '\0';
    }
}

static struct pool_dane_set *pool_dane_set_new(const struct dane_tlsa *recs, size_t n)
{
    struct pool_dane_set *s = pool_xcalloc(1, sizeof *s);
    size_t used = 0;
    s->refs = 1;
    for (size_t i = 0; i < n && i < DNS_TLSA_MAX && used + recs[i].len <= sizeof s->data; i++) {
        memcpy(s->data + used, recs[i].data, recs[i].len);
        s->recs[s->n] = recs[i];
        s->recs[s->n++].data = s->data + used;
        used += recs[i].len;
    }
    s->usable = dane_usable(s->recs, s->n) > 0;
    pool_dane_set_id(s->recs, s->n, s->id, sizeof s->id, s->text, sizeof s->text);
    return s;
}

static struct pool_dane_host *pool_dane_host_add(struct pool_dane *dn, const char *host)
{
    struct pool_dane_host *h = realloc(dn->hosts, (dn->nhosts + 1) * sizeof *h);
    if (!h) {
        abort(); /* out of memory */
    }
    dn->hosts = h;
    h = &dn->hosts[dn->nhosts++];
    memset(h, 0, sizeof *h);
    snprintf(h->host, sizeof h->host, "%s", host);
    return h;
}

static void pool_dane_tlsa_cb(void *user, const struct dns_tlsa_result *r)
{
    struct pool_dane *dn = user;
    struct pool_dest *d = dn->d;
    struct pool *p = d->pool;
    struct pool_dane_host *h = pool_dane_host_add(dn, d->mx[d->resolving_host].name);
    if (r->status == DNS_TEMPFAIL || r->status == DNS_BAD_NAME) {
        /* RFC 7672 2.2: a failed (or bogus) TLSA lookup for a secure host
         * makes it unusable, never a reason to go without DANE. */
        h->state = POOL_DANE_TEMPFAIL;
        d->ntargets = dn->first;
        snprintf(dn->tempfail_text, sizeof dn->tempfail_text,
                 "DANE: TLSA lookup of %s failed (%s): DNSSEC bogus or unreachable; not connecting",
                 r->name ? r->name : h->host,
                 r->error ? r->error : dns_status_name(r->status)); /* fits: 600 bytes */
    } else if (r->status == DNS_OK && r->n > 0 && r->secure) {
        h->state = POOL_DANE_SET;
        h->set = pool_dane_set_new(r->recs, r->n);
    }
    pool_dest_next_host(p, d);
}

int pool_dane_lookup(struct pool *p, struct pool_dest *d, const struct dns_addr_result *res,
                     size_t first)
{
    struct pool_dane *dn = d->dane;
    if (!dn || !dn->applies || res->status != DNS_OK || !res->secure || !p->dns) {
        return 0;
    }
    dn->first = first;
    dns_resolve_tlsa(p->dns, d->mx[d->resolving_host].name, p->opt.mx_port, pool_dane_tlsa_cb, dn);
    return 1;
}

int pool_dane_defer(struct pool *p, struct pool_dest *d)
{
    struct pool_dane *dn = d->dane;
    if (!dn || !dn->tempfail_text[0]) {
        return 0;
    }
    d->tlsp.type = TLSP_DANE;
    snprintf(d->tlsp.mode, sizeof d->tlsp.mode, "enforce");
    snprintf(d->tlsp.fail, sizeof d->tlsp.fail, "dnssec-invalid");
    d->tlsp.check_cert = 1;
    pool_fail_queue(p, d,
                    &(struct pool_outcome){
                        .outcome = SMTP_OUTCOME_DEFERRED,
                        .reason = "dane_tlsa_tempfail",
                        .text = dn->tempfail_text,
                    });
    return 1;
}

/* on_tls_policy once per (domain, id) in the pool's life, as far as this
 * destination remembers (its last POOL_DANE_ANNOUNCED ids). */
static void pool_dane_announce(struct pool *p, struct pool_dane *dn, const struct pool_dane_set *s)
{
    if (!p->opt.on_tls_policy) {
        return;
    }
    for (size_t i = 0; i < dn->nannounced && i < POOL_DANE_ANNOUNCED; i++) {
        if (strcmp(dn->announced[i], s->id) == 0) {
            return;
        }
    }
    snprintf(dn->announced[dn->nannounced++ % POOL_DANE_ANNOUNCED], TLSP_ID_MAX, "%s", s->id);
    p->opt.on_tls_policy(p->opt.user, "tlsa", dn->d->domain, s->id, s->text);
}

/* The secure TLSA set of d's MX host, or NULL. */
static struct pool_dane_set *pool_dane_host_set(const struct pool_dest *d, const char *host)
{
    const struct pool_dane *dn = d->dane;
    for (size_t i = 0; dn && i < dn->nhosts; i++) {
        if (dn->hosts[i].state == POOL_DANE_SET && strcmp(dn->hosts[i].host, host) == 0) {
            return dn->hosts[i].set;
        }
    }
    return NULL;
}

int pool_dane_host(const struct pool_dest *d, const char *host)
{
    return pool_dane_host_set(d, host) != NULL;
}

void pool_dane_conn(struct pool *p, struct pool_conn *c)
{
    struct pool_dane *dn = c->dest->dane;
    struct pool_dane_set *s = pool_dane_host_set(c->dest, c->host);
    if (!s) {
        return;
    }
    s->refs++;
    c->dane = s;
    pool_dane_announce(p, dn, s);
    memset(&c->tlsp, 0, sizeof c->tlsp);
    c->tlsp.type = TLSP_DANE;
    snprintf(c->tlsp.mode, sizeof c->tlsp.mode, "enforce");
    snprintf(c->tlsp.policy_id, sizeof c->tlsp.policy_id, "%s", s->id);
    c->tlsp.check_cert = s->usable;
    /* TLS is mandatory whatever the ISP's policy says; the TLSA set, not
     * the CA bundle, authenticates (tls_conn_set_dane). */
    struct client_conn_config *cfg = &c->cfg;
    cfg->smtp.tls_policy = SMTP_TLS_REQUIRED;
    cfg->smtp.skip_starttls = 0;
    cfg->tls_ctx = pool_tls_ctx(p, SMTP_TLS_REQUIRED);
    cfg->dane = s->recs;
    cfg->ndane = s->n;
    /* A session made under this set is resumed only under it. */
    char policy[TLSP_ID_MAX + 8];
    snprintf(policy, sizeof policy, "dane:%s", s->id);
    cfg->session_key =
        tls_session_cache_key(c->session_key, sizeof c->session_key, cfg->server_name,
                              (const struct sockaddr *)&cfg->addr, policy);
}

void pool_dane_conn_done(struct pool_conn *c)
{
    pool_dane_set_put(c->dane);
    c->dane = NULL;
}

const char *pool_dane_verdict(int mx_secure, int addr_secure, const struct dns_tlsa_result *tlsa,
                              char *out, size_t outlen)
{
    if (!mx_secure || !addr_secure) {
        snprintf(out, outlen, "DANE: no (%s insecure: falls back to MTA-STS or the config)",
                 !mx_secure ? "MX answer" : "address answer");
        return "insecure";
    }
    if (!tlsa) {
        snprintf(out, outlen, "DANE: TLSA not looked up");
        return "none";
    }
    if (tlsa->status == DNS_TEMPFAIL || tlsa->status == DNS_BAD_NAME) {
        snprintf(out, outlen, "DANE: TLSA lookup of %s failed (%s): mail to this host is deferred",
                 tlsa->name ? tlsa->name : "?", tlsa->error ? tlsa->error : "?");
        return "tempfail";
    }
    if (tlsa->status != DNS_OK || tlsa->n == 0) {
        snprintf(out, outlen, "DANE: no TLSA records at %s (falls back)",
                 tlsa->name ? tlsa->name : "?");
        return "none";
    }
    if (!tlsa->secure) {
        snprintf(out, outlen, "DANE: no (TLSA answer insecure: falls back)");
        return "insecure";
    }
    char id[TLSP_ID_MAX], text[1024];
    pool_dane_set_id(tlsa->recs, tlsa->n, id, sizeof id, text, sizeof text);
    for (char *nl = strchr(text, '\n'); nl; nl = strchr(nl, '\n')) {
        *nl = nl[1] ? ';' : '\0'; /* one line */
    }
    size_t usable = dane_usable(tlsa->recs, tlsa->n);
    if (usable == 0) {
        snprintf(out, outlen,
                 "DANE: %zu TLSA record%s, none usable: TLS mandatory, unauthenticated (%s)",
                 tlsa->n, tlsa->n == 1 ? "" : "s", text);
        return "dane-unusable";
    }
    snprintf(out, outlen, "DANE: %zu usable TLSA record%s, id %s (%s)", usable,
             usable == 1 ? "" : "s", id, text);
    return "dane";
}

/* ---- pool_dane_probe: the pool's steps for one host, for `ringmail resolve` ---- */

struct pool_dane_probe {
    struct dns *d;
    unsigned port;
    int addr_secure;
    pool_dane_probe_cb cb;
    void *user;
    char host[256];
};

static void pool_dane_probe_end(struct pool_dane_probe *pr, int mx_secure,
                                const struct dns_tlsa_result *tlsa)
{
    char text[600];
    struct pool_dane_probe_result r = {
        .host = pr->host, .addr_secure = pr->addr_secure, .tlsa = tlsa};
    r.verdict = pool_dane_verdict(mx_secure, pr->addr_secure, tlsa, text, sizeof text);
    r.text = text;
    pr->cb(pr->user, &r);
    free(pr);
}

static void pool_dane_probe_tlsa(void *user, const struct dns_tlsa_result *res)
{
    pool_dane_probe_end(user, 1, res);
}

static void pool_dane_probe_addr(void *user, const struct dns_addr_result *res)
{
    struct pool_dane_probe *pr = user;
    pr->addr_secure = res->status == DNS_OK && res->secure;
    if (!pr->addr_secure) {
        pool_dane_probe_end(pr, 1, NULL);
        return;
    }
    dns_resolve_tlsa(pr->d, pr->host, pr->port, pool_dane_probe_tlsa, pr);
}

void pool_dane_probe(struct dns *d, const char *host, unsigned port, int mx_secure,
                     pool_dane_probe_cb cb, void *user)
{
    if (!dns_dnssec(d)) {
        struct pool_dane_probe_result r = {
            .host = host, .verdict = "off", .text = "DANE: off (no dnssec_resolver)"};
        cb(user, &r);
        return;
    }
    struct pool_dane_probe *pr = pool_xcalloc(1, sizeof *pr);
    pr->d = d;
    pr->port = port ? port : 25;
    pr->cb = cb;
    pr->user = user;
    snprintf(pr->host, sizeof pr->host, "%s", host);
    if (!mx_secure) {
        pool_dane_probe_end(pr, 0, NULL);
        return;
    }
    dns_resolve_addr(d, host, pool_dane_probe_addr, pr);
}
