/*
 * resolve - `ringmail resolve [--resolver ADDR:PORT] [--config F] DOMAIN...`.
 * See resolve.h. Prints one JSON object per domain.
 */
#include "campaign/resolve.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/opt.h"
#include "engine/loop.h"
#include "engine/num.h"
#include "engine/netaddr.h"
#include "pool/config.h"
#include "pool/dane.h"
#include "pool/dns.h"
#include "pool/mta_sts.h"
#include "pool/sts_fetch.h"

struct resolve_run {
    struct loop *loop;
    struct dns *dns;
    struct config *config;
    struct loop_timer next; /* start the next domain (or finish) outside callbacks */
    char **domains;
    int ndomains, at;
    int failures;
    unsigned mx_port;    /* the TLSA name's port (_PORT._tcp.HOST): 25, or --mx-port */
    const char *ca_file; /* --ca: the policy host's trust store (NULL: the system bundle) */
    unsigned sts_port;   /* --mta-sts-port: the policy host's port (443) */
    unsigned timeout_ms;
};

struct resolve_domain {
    struct resolve_run *run;
    json_t *out;  /* owned until printed */
    json_t *mxes; /* borrowed from out */
    unsigned pending;
    json_t *sts;         /* borrowed from out: the "mta_sts" object */
    struct sts_job *job; /* owned: the policy fetched, NULL when none was */
};

struct resolve_host {
    struct resolve_domain *dom;
    json_t *addrs; /* borrowed */
    json_t *mx;    /* borrowed: the MX host's object */
};

static void resolve_finish_domain(struct resolve_domain *dom);

static void resolve_done_one(struct resolve_domain *dom)
{
    if (--dom->pending == 0) {
        resolve_finish_domain(dom);
    }
}

/* DANE's verdict on one MX host (pool_dane_probe) into its object. */
static void resolve_on_dane(void *user, const struct pool_dane_probe_result *r)
{
    struct resolve_host *h = user;
    json_object_set_new(h->mx, "dane",
                        json_pack("{s:s, s:s}", "verdict", r->verdict, "text", r->text));
    struct resolve_domain *dom = h->dom;
    free(h);
    resolve_done_one(dom);
}

/* ---- MTA-STS: the TXT record, then the policy (fetched as send does) */

static void resolve_on_sts_host(void *user, const struct dns_addr_result *r)
{
    struct resolve_domain *dom = user;
    struct sts_job *j = dom->job;
    if (r->status != DNS_OK || r->n == 0) {
        json_object_set_new(
            dom->sts, "error",
            json_sprintf("mta-sts.%s: %s", j->domain, r->error ? r->error : "no address"));
        json_object_set_new(dom->sts, "error_type", json_string("sts-policy-fetch-error"));
        resolve_done_one(dom);
        return;
    }
    /* One blocking fetch: a command line tool waits for its answer. */
    char domain[256], id[MTA_STS_ID_MAX];
    snprintf(domain, sizeof domain, "%s", j->domain); /* sts_job_init clears j first */
    snprintf(id, sizeof id, "%s", j->txt_id);
    sts_job_init(j, domain, id, &r->addrs[0], dom->run->sts_port, dom->run->ca_file,
                 dom->run->timeout_ms * 5);
    sts_fetch_run(j);
    if (j->ok) {
        json_t *mx = json_array();
        for (size_t i = 0; i < j->pol.nmx; i++) {
            json_array_append_new(mx, json_string(j->pol.mx[i]));
        }
        json_object_set_new(dom->sts, "mode", json_string(mta_sts_mode_name(j->pol.mode)));
        json_object_set_new(dom->sts, "mx", mx);
        json_object_set_new(dom->sts, "max_age", json_integer(j->pol.max_age));
    } else {
        json_object_set_new(dom->sts, "error", json_string(j->error));
        if (j->error_type) {
            json_object_set_new(dom->sts, "error_type", json_string(j->error_type));
        }
    }
    resolve_done_one(dom);
}

static void resolve_on_sts_txt(void *user, const struct dns_txt_result *r)
{
    struct resolve_domain *dom = user;
    char id[MTA_STS_ID_MAX], why[200];
    if (r->status == DNS_TEMPFAIL) {
        json_object_set_new(dom->sts, "txt",
                            json_sprintf("lookup failed (%s): a cached policy would be used",
                                         r->error ? r->error : "?"));
    } else if (!mta_sts_txt_parse(r->records, r->lens, r->n, id, why, sizeof why)) {
        json_object_set_new(dom->sts, "txt", json_sprintf("none (%s): no MTA-STS policy", why));
    } else {
        json_object_set_new(dom->sts, "id", json_string(id));
        dom->job = calloc(1, sizeof *dom->job);
        if (dom->job) {
            snprintf(dom->job->domain, sizeof dom->job->domain, "%s", r->ascii_name + 9);
            snprintf(dom->job->txt_id, sizeof dom->job->txt_id, "%s", id);
            char host[300];
            snprintf(host, sizeof host, "mta-sts.%s", dom->job->domain);
            dom->pending++;
            dns_resolve_addr(dom->run->dns, host, resolve_on_sts_host, dom);
        }
    }
    resolve_done_one(dom);
}

/* Whether the policy (if any) lets each MX host be used, into its object. */
static void resolve_sts_mark(struct resolve_domain *dom)
{
    if (!dom->job || !dom->job->ok || !dom->mxes) {
        return;
    }
    size_t i;
    json_t *mx;
    json_array_foreach(dom->mxes, i, mx)
    {
        const char *host = json_string_value(json_object_get(mx, "host"));
        json_object_set_new(mx, "mta_sts_match",
                            json_boolean(host && mta_sts_policy_mx_ok(&dom->job->pol, host)));
    }
}

static void resolve_finish_domain(struct resolve_domain *dom)
{
    resolve_sts_mark(dom);
    if (dom->job) {
        sts_job_free(dom->job, 1);
    }
    char *s = json_dumps(dom->out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(dom->out);
    loop_timer_set(dom->run->loop, &dom->run->next, 0);
    free(dom);
}

static void resolve_on_addr(void *user, const struct dns_addr_result *r)
{
    struct resolve_host *h = user;
    for (size_t i = 0; i < r->n; i++) {
        char a[80];
        netaddr_format((const struct sockaddr *)&r->addrs[i], a, sizeof a);
        size_t len = strlen(a);
        if (len > 2 && strcmp(a + len - 2, ":0") == 0) {
            a[len - 2] = '\0'; /* no port: just the address */
        }
        json_array_append_new(h->addrs, json_string(a));
    }
    struct resolve_domain *dom = h->dom;
    free(h);
    resolve_done_one(dom);
}

static void resolve_on_mx(void *user, const struct dns_mx_result *r)
{
    struct resolve_domain *dom = user;
    json_object_set_new(dom->out, "ascii", json_string(r->ascii_domain));
    json_object_set_new(dom->out, "status", json_string(dns_status_name(r->status)));
    if (r->error) {
        json_object_set_new(dom->out, "error", json_string(r->error));
        dom->run->failures++;
    }
    json_object_set_new(dom->out, "implicit_mx", json_boolean(r->implicit));
    if (dns_dnssec(dom->run->dns)) {
        json_object_set_new(dom->out, "mx_secure", json_boolean(r->secure));
    } else {
        json_object_set_new(dom->out, "dane", json_string("off (no dnssec_resolver in [global])"));
    }
    json_object_set_new(dom->out, "ttl", json_integer(r->ttl));
    dom->mxes = json_array();
    json_object_set_new(dom->out, "mx", dom->mxes);
    const char *names[64];
    for (size_t i = 0; i < r->n && i < 64; i++) {
        names[i] = r->hosts[i].name;
    }
    if (dom->run->config) {
        const struct config_isp *isp =
            config_isp_for(dom->run->config, r->ascii_domain, names, r->n < 64 ? r->n : 64);
        json_object_set_new(dom->out, "isp", json_string(isp ? isp->name : ""));
    }
    /* This lookup's own count holds the domain while the address queries
     * start (resolve_done_one below lets go of it). */
    for (size_t i = 0; i < r->n; i++) {
        struct resolve_host *h = calloc(1, sizeof *h);
        json_t *mx = json_pack("{s:s, s:i, s:[]}", "host", r->hosts[i].name, "pref",
                               (int)r->hosts[i].pref, "addrs");
        json_array_append_new(dom->mxes, mx);
        h->dom = dom;
        h->addrs = json_object_get(mx, "addrs");
        h->mx = mx;
        dom->pending++;
        dns_resolve_addr(dom->run->dns, r->hosts[i].name, resolve_on_addr, h);
        if (dns_dnssec(dom->run->dns)) {
            struct resolve_host *dh = calloc(1, sizeof *dh);
            dh->dom = dom;
            dh->mx = mx;
            dom->pending++;
            pool_dane_probe(dom->run->dns, r->hosts[i].name, dom->run->mx_port, r->secure,
                            resolve_on_dane, dh);
        }
    }
    resolve_done_one(dom);
}

/* Domains go one after another, so a repeated domain comes from the cache. */
static void resolve_on_next(struct loop_timer *t)
{
    struct resolve_run *run = t->owner;
    if (run->at < run->ndomains) {
        struct resolve_domain *dom = calloc(1, sizeof *dom);
        dom->run = run;
        dom->out = json_pack("{s:s}", "domain", run->domains[run->at++]);
        const char *domain = json_string_value(json_object_get(dom->out, "domain"));
        dom->pending = 1; /* held until both lookups started */
        if (!run->config || config_mta_sts(run->config, NULL)) {
            char ascii[256], name[300];
            const char *why = NULL;
            dom->sts = json_object();
            json_object_set_new(dom->out, "mta_sts", dom->sts);
            if (dns_domain_ascii(domain, ascii, sizeof ascii, &why) == 0) {
                snprintf(name, sizeof name, "_mta-sts.%s", ascii);
                dom->pending++;
                dns_resolve_txt(run->dns, name, resolve_on_sts_txt, dom);
            }
        } else {
            json_object_set_new(dom->out, "mta_sts", json_string("off (mta_sts = off)"));
        }
        dom->pending++;
        dns_resolve_mx(run->dns, domain, resolve_on_mx, dom);
        resolve_done_one(dom);
        return;
    }
    uint64_t queries, hits;
    dns_stats(run->dns, &queries, &hits);
    fprintf(stderr, "dns: %llu MX queries, %llu answered from the cache\n",
            (unsigned long long)queries, (unsigned long long)hits);
    dns_free(run->dns); /* not from inside a c-ares callback */
    run->dns = NULL;
    loop_stop_when_idle(run->loop);
}

int resolve_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"resolver", required_argument, 0, 'r'},
                                             {"config", required_argument, 0, 'c'},
                                             {"timeout-ms", required_argument, 0, 't'},
                                             {"mx-port", required_argument, 0, 'p'},
                                             {"ca", required_argument, 0, 'a'},
                                             {"mta-sts-port", required_argument, 0, 's'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char *resolver = NULL, *config_path = NULL, *ca_file = NULL;
    unsigned timeout_ms = 2000, mx_port = 25, sts_port = 443;
    int ch;
    optind = 1;
    while ((ch = opt_getopt(argc, argv, longopts)) != -1) {
        if (ch == 'r') {
            resolver = optarg;
        } else if (ch == 'c') {
            config_path = optarg;
        } else if (ch == 'a') {
            ca_file = optarg;
        } else if (ch == 'p' || ch == 's') {
            unsigned long v;
            if (num_parse_ulong(optarg, 1, 65535, &v) < 0) {
                fprintf(stderr, "ringmail resolve: bad value for --%s: '%s' (want 1..65535)\n",
                        ch == 'p' ? "mx-port" : "mta-sts-port", optarg);
                return 2;
            }
            *(ch == 'p' ? &mx_port : &sts_port) = (unsigned)v;
        } else if (ch == 't') {
            unsigned long v;
            if (num_parse_ulong(optarg, 1, 600000, &v) < 0) {
                fprintf(stderr,
                        "ringmail resolve: bad value for --timeout-ms: '%s' (want 1..600000)\n",
                        optarg);
                return 2;
            }
            timeout_ms = (unsigned)v;
        } else {
            fprintf(ch == 'h' ? stdout : stderr,
                    "usage: ringmail resolve [--resolver ADDR:PORT] [--config FILE] "
                    "[--timeout-ms MS] [--mx-port N] [--ca FILE] [--mta-sts-port N] "
                    "DOMAIN...\n");
            return ch == 'h' ? 0 : 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "ringmail resolve: name at least one domain\n");
        return 2;
    }
    struct resolve_run run = {0};
    char err[512];
    if (config_path && !(run.config = config_load(config_path, err, sizeof err))) {
        fprintf(stderr, "ringmail resolve: %s\n", err);
        return 2;
    }
    run.mx_port = mx_port;
    run.ca_file = ca_file;
    run.sts_port = sts_port;
    run.timeout_ms = timeout_ms;
    /* A trusted validating resolver answers every lookup, as in send. */
    const char *dnssec =
        run.config && run.config->dnssec_resolver[0] ? run.config->dnssec_resolver : NULL;
    run.loop = loop_new(256);
    run.dns = run.loop ? dns_new(run.loop, dnssec ? dnssec : resolver, timeout_ms, err, sizeof err)
                       : NULL;
    if (run.dns && dnssec) {
        dns_set_dnssec(run.dns, 1);
    }
    if (!run.dns) {
        fprintf(stderr, "ringmail resolve: %s\n", run.loop ? err : "io_uring setup failed");
        loop_free(run.loop);
        config_free(run.config);
        return 2;
    }
    loop_timer_init(&run.next, resolve_on_next, &run);
    run.domains = argv + optind;
    run.ndomains = argc - optind;
    loop_timer_set(run.loop, &run.next, 0);
    loop_run(run.loop);
    loop_free(run.loop);
    config_free(run.config);
    return run.failures ? 1 : 0;
}
