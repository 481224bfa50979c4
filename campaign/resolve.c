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

struct resolve_run {
    struct loop *loop;
    struct dns *dns;
    struct config *config;
    struct loop_timer next; /* start the next domain (or finish) outside callbacks */
    char **domains;
    int ndomains, at;
    int failures;
    unsigned mx_port; /* the TLSA name's port (_PORT._tcp.HOST): 25, or --mx-port */
};

struct resolve_domain {
    struct resolve_run *run;
    json_t *out;  /* owned until printed */
    json_t *mxes; /* borrowed from out */
    unsigned pending;
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

static void resolve_finish_domain(struct resolve_domain *dom)
{
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
    dom->pending = 1; /* held while the address queries start */
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
        dns_resolve_mx(run->dns, json_string_value(json_object_get(dom->out, "domain")),
                       resolve_on_mx, dom);
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
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char *resolver = NULL, *config_path = NULL;
    unsigned timeout_ms = 2000, mx_port = 25;
    int ch;
    optind = 1;
    while ((ch = opt_getopt(argc, argv, longopts)) != -1) {
        if (ch == 'r') {
            resolver = optarg;
        } else if (ch == 'c') {
            config_path = optarg;
        } else if (ch == 'p') {
            unsigned long v;
            if (num_parse_ulong(optarg, 1, 65535, &v) < 0) {
                fprintf(stderr, "ringmail resolve: bad value for --mx-port: '%s' (want 1..65535)\n",
                        optarg);
                return 2;
            }
            mx_port = (unsigned)v;
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
                    "[--timeout-ms MS] [--mx-port N] DOMAIN...\n");
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
