/*
 * tlsrpt - `ringmail tlsrpt`: the command line, the day's sessions, the
 * _smtp._tls lookups, the reports, their files and the table. See
 * tlsrpt.h; sending is tlsrpt_send.c.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "campaign/db.h"
#include "campaign/outfile.h"
#include "campaign/tlsrpt_int.h"
#include "engine/loop.h"
#include "engine/num.h"
#include "engine/opt.h"
#include "pool/config.h"

enum {
    TR_OPT_DB = SEND_OPT_EXTRA,
    TR_OPT_DAY,
    TR_OPT_SEND,
    TR_OPT_OUT,
    TR_OPT_ORG,
    TR_OPT_SUBMITTER,
    TR_OPT_CONTACT,
    TR_OPT_RESEND,
    TR_OPT_HTTPS_TIMEOUT,
    TR_OPT_DKIM_KEY,
    TR_OPT_DKIM_SELECTOR,
    TR_OPT_DKIM_DOMAIN,
    TR_OPT_HELP,
};

/* ---------------------------------------------------------------- command line */

static void tr_usage(FILE *f)
{
    fprintf(
        f, "usage: ringmail tlsrpt --db URL --day YYYY-MM-DD [--send] [--out DIR]\n"
           "           [--org NAME] [--submitter DOMAIN] [--contact ADDR] [--resend-unfinished]\n"
           "           [--https-timeout-ms MS] [--config FILE] [--resolver ADDR:PORT] [--ca FILE]\n"
           "           [send's delivery options: --relay --tls --mx-port --helo --timeout-ms ...]\n"
           "\n"
           "  RFC 8460 TLS reports of one UTC day from the delivery rows, one per recipient\n"
           "  domain that publishes a _smtp._tls TXT record (v=TLSRPTv1; rua=...).\n"
           "  A session is a connection's first attempt (conn_first), or an attempt whose\n"
           "  TLS policy failed before any connection; it failed when it has a tls_result.\n"
           "  Without --send the gzipped reports go to --out DIR (default .). --send: mailto:\n"
           "  reports through the pool (TLS-Required: No, no MTA-STS or DANE), https: ones\n"
           "  by POST (--ca FILE: the trust store); each (day, domain, rua) once, recorded in\n"
           "  ringmail.tlsrpt_report (a rerun retries the failed ones).\n"
           "  --org NAME        organization-name (default: the submitter)\n"
           "  --submitter DOMAIN  the report's submitter (default: --contact's domain, else\n"
           "                    this host's name)\n"
           "  --contact ADDR    contact-info and the mail's From (default postmaster@SUBMITTER)\n"
           "  --resend-unfinished  send again a report an earlier run started sending\n"
           "                    without recording its outcome (it may have arrived)\n"
           "  --https-timeout-ms MS  per https: POST (default 30000)\n");
}

static int tr_option(void *user, int ch, const char *arg)
{
    struct tlsrpt_cmd *c = user;
    unsigned long v;
    switch (ch) {
    case TR_OPT_DB:
        c->url = arg;
        return 0;
    case TR_OPT_DAY:
        c->day = arg;
        return 0;
    case TR_OPT_SEND:
        c->send = 1;
        return 0;
    case TR_OPT_OUT:
        c->out = arg;
        c->out_given = 1;
        return 0;
    case TR_OPT_ORG:
        c->org = arg;
        return 0;
    case TR_OPT_SUBMITTER:
        c->submitter = arg;
        return 0;
    case TR_OPT_CONTACT:
        c->contact = arg;
        return 0;
    case TR_OPT_RESEND:
        c->resend_unfinished = 1;
        return 0;
    case TR_OPT_HTTPS_TIMEOUT:
        if (num_parse_ulong(arg, 1, 600000, &v) < 0) {
            fprintf(stderr, "%s: bad value for --https-timeout-ms: '%s' (want 1..600000)\n",
                    TLSRPT_WHO, arg);
            return -1;
        }
        c->https_timeout_ms = (unsigned)v;
        return 0;
    case TR_OPT_DKIM_KEY:
        c->dkim_key = arg;
        return 0;
    case TR_OPT_DKIM_SELECTOR:
        c->dkim_selector = arg;
        return 0;
    case TR_OPT_DKIM_DOMAIN:
        c->dkim_domain = arg;
        return 0;
    case TR_OPT_HELP:
        c->help = 1;
        return 0;
    default:
        return -1;
    }
}

/* A send option tlsrpt has no use for, or NULL. */
static const char *tr_send_option_refused(const struct send_options *o)
{
    struct send_options d;
    send_options_init(&d);
    const struct {
        int given;
        const char *name;
    } refused[] = {
        {o->recipients != NULL, "--recipients"},
        {o->message_path != NULL, "--message"},
        {o->campaign != 0, "--campaign"},
        {o->size_set, "--size"},
        {o->window != d.window, "--window"},
        {o->render_threads != d.render_threads, "--render-threads"},
        {o->suppress_path != NULL, "--suppress"},
        {o->metrics_addr != NULL, "--metrics"},
        {o->json, "--json"},
        {o->node != NULL, "--node"},
        {o->journal != NULL, "--journal"},
        {o->resend_ambiguous, "--resend-ambiguous"},
        {o->batch != 0, "--batch"},
        {o->lease_s != 0, "--lease"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        if (refused[i].given) {
            return refused[i].name;
        }
    }
    return NULL;
}

/* --day into c->begin: a real date, begun already; NULL or why not. */
static const char *tr_day(struct tlsrpt_cmd *c, char *buf, size_t cap)
{
    const char *d = c->day;
    int ok = strlen(d) == 10 && d[4] == '-' && d[7] == '-';
    for (int i = 0; ok && i < 10; i++) {
        ok = i == 4 || i == 7 || isdigit((unsigned char)d[i]);
    }
    struct tm tm = {0};
    if (ok) {
        tm.tm_year = atoi(d) - 1900;
        tm.tm_mon = atoi(d + 5) - 1;
        tm.tm_mday = atoi(d + 8);
        struct tm given = tm;
        time_t t = timegm(&tm); /* normalises: 2026-02-30 becomes March 2nd */
        ok =
            tm.tm_year == given.tm_year && tm.tm_mon == given.tm_mon && tm.tm_mday == given.tm_mday;
        c->begin = (int64_t)t;
    }
    if (!ok) {
        snprintf(buf, cap, "--day '%s' is not a date (YYYY-MM-DD, UTC)", d);
        return buf;
    }
    if (c->begin > (int64_t)time(NULL)) {
        snprintf(buf, cap, "--day %s has not begun yet (UTC)", d);
        return buf;
    }
    return NULL;
}

/* --submitter, --contact, --org and their defaults; NULL or why not. */
static const char *tr_names(struct tlsrpt_cmd *c, char *buf, size_t cap)
{
    const char *why = NULL;
    if (c->contact && send_address_problem(c->contact)) {
        snprintf(buf, cap, "--contact %s: %s", c->contact, send_address_problem(c->contact));
        return buf;
    }
    if (!c->submitter && c->contact) {
        c->submitter = strrchr(c->contact, '@') + 1;
    }
    if (!c->submitter) {
        if (gethostname(c->submitter_buf, sizeof c->submitter_buf - 1) < 0 ||
            !strchr(c->submitter_buf, '.')) {
            return "--submitter DOMAIN is required: this host's name is not a domain name";
        }
        c->submitter = c->submitter_buf;
    }
    char ascii[256];
    if (dns_domain_ascii(c->submitter, ascii, sizeof ascii, &why) < 0 || !strchr(ascii, '.')) {
        snprintf(buf, cap, "--submitter '%s' is not a domain name%s%s", c->submitter,
                 why ? ": " : "", why ? why : "");
        return buf;
    }
    snprintf(c->submitter_buf, sizeof c->submitter_buf, "%s", ascii);
    c->submitter = c->submitter_buf;
    if (!c->contact) {
        snprintf(c->contact_buf, sizeof c->contact_buf, "postmaster@%s", c->submitter);
        c->contact = c->contact_buf;
    }
    if (!c->org) {
        c->org = c->submitter;
    }
    return NULL;
}

/* The DKIM signer of --dkim-key (d= --dkim-domain, else the submitter);
 * NULL or why not. */
static const char *tr_signer(struct tlsrpt_cmd *c, char *buf, size_t cap)
{
    static const char *const headers[] = {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "tls-report-domain",
        "tls-report-submitter",
        "tls-required",
        NULL,
    };
    struct dkim_spec spec = {
        .domain = c->dkim_domain ? c->dkim_domain : c->submitter,
        .selector = c->dkim_selector,
        .key_file = c->dkim_key,
        .headers = headers,
    };
    char err[400];
    c->signer = dkim_signer_new(&spec, err, sizeof err);
    if (!c->signer) {
        snprintf(buf, cap, "--dkim-key %s: %s", c->dkim_key, err);
        return buf;
    }
    return NULL;
}

/* The command line into *c: -1 parsed, else the exit status (said). */
static int tr_parse(int argc, char **argv, struct tlsrpt_cmd *c)
{
    static const struct option opts[] = {
        {"db", required_argument, 0, TR_OPT_DB},
        {"day", required_argument, 0, TR_OPT_DAY},
        {"send", no_argument, 0, TR_OPT_SEND},
        {"out", required_argument, 0, TR_OPT_OUT},
        {"org", required_argument, 0, TR_OPT_ORG},
        {"submitter", required_argument, 0, TR_OPT_SUBMITTER},
        {"contact", required_argument, 0, TR_OPT_CONTACT},
        {"resend-unfinished", no_argument, 0, TR_OPT_RESEND},
        {"https-timeout-ms", required_argument, 0, TR_OPT_HTTPS_TIMEOUT},
        {"dkim-key", required_argument, 0, TR_OPT_DKIM_KEY},
        {"dkim-selector", required_argument, 0, TR_OPT_DKIM_SELECTOR},
        {"dkim-domain", required_argument, 0, TR_OPT_DKIM_DOMAIN},
        {"help", no_argument, 0, TR_OPT_HELP},
        {0, 0, 0, 0},
    };
    send_options_init(&c->so);
    if (send_parse_with(argc, argv, &c->so, opts, tr_option, c) < 0) {
        return 2;
    }
    if (c->help) {
        tr_usage(stdout);
        return 0;
    }
    char buf[600];
    const char *problem = NULL, *refused = tr_send_option_refused(&c->so);
    if (optind < argc) {
        snprintf(buf, sizeof buf, "unexpected argument '%s'", argv[optind]);
        problem = buf;
    } else if (!c->url) {
        problem = "--db URL is required";
    } else if (!c->day) {
        problem = "--day YYYY-MM-DD is required: the UTC day to report";
    } else if (refused) {
        snprintf(buf, sizeof buf, "%s is not an option of tlsrpt", refused);
        problem = buf;
    } else if ((c->dkim_selector || c->dkim_domain) && !c->dkim_key) {
        problem = "--dkim-selector and --dkim-domain go with --dkim-key FILE";
    } else if (c->dkim_key && !c->dkim_selector) {
        problem = "--dkim-key needs --dkim-selector S";
    } else if (c->resend_unfinished && !c->send) {
        problem = "--resend-unfinished goes with --send";
    } else if ((c->so.relay_user || c->so.relay_password_file || c->so.relay_implicit_tls) &&
               !c->so.relay) {
        problem = "--relay-* options need --relay HOST:PORT";
    }
    if (!problem) {
        problem = tr_day(c, buf, sizeof buf);
    }
    if (!problem) {
        problem = tr_names(c, buf, sizeof buf);
    }
    if (!problem && c->dkim_key) {
        problem = tr_signer(c, buf, sizeof buf);
    }
    if (!problem && c->so.config_path) { /* before anything is claimed */
        char err[512];
        struct config *cfg = config_load(c->so.config_path, err, sizeof err);
        if (!cfg) {
            snprintf(buf, sizeof buf, "%s", err);
            problem = buf;
        }
        config_free(cfg);
    }
    if (problem) {
        fprintf(stderr, "%s: %s\n", TLSRPT_WHO, problem);
        return 2;
    }
    if (!c->out) {
        c->out = ".";
    }
    return -1;
}

/* ---------------------------------------------------------------- the day's sessions */

/* The sessions of the day per recipient domain and group (tlsrpt.h says
 * what a session is). The policy's text joins by type, domain and id. */
static const char tr_sessions_sql[] =
    "WITH s AS ("
    " SELECT lower(split_part(r.address, '@', 2)) AS domain,"
    "  CASE d.tls_policy WHEN 'mta-sts' THEN 'sts' WHEN 'dane' THEN 'tlsa'"
    "   ELSE 'no-policy-found' END AS ptype,"
    "  CASE WHEN d.tls_policy IN ('mta-sts', 'dane') THEN coalesce(d.tls_policy_id, '')"
    "   ELSE '' END AS pid,"
    "  coalesce(d.tls_result, '') AS result,"
    "  CASE WHEN d.tls_result IS NULL THEN '' ELSE coalesce(d.mx, '') END AS mx,"
    "  CASE WHEN d.tls_result IS NULL THEN '' ELSE coalesce(d.peer, '') END AS peer,"
    "  CASE WHEN d.tls_result IS NULL THEN '' ELSE coalesce(d.source, '') END AS source"
    " FROM ringmail.delivery d JOIN ringmail.recipient r ON r.id = d.recipient_id"
    " WHERE d.at >= $1::date::timestamp AT TIME ZONE 'UTC'"
    "  AND d.at < ($1::date + 1)::timestamp AT TIME ZONE 'UTC'"
    "  AND d.tls_policy IS NOT NULL"
    "  AND (d.conn_first OR (d.peer IS NULL AND d.tls_result IS NOT NULL)))"
    " SELECT s.domain, s.ptype, s.pid, t.policy, s.result, s.mx, s.peer, s.source, count(*)"
    " FROM s LEFT JOIN ringmail.tls_policy_text t"
    "  ON t.type = s.ptype AND lower(t.domain) = s.domain AND t.policy_id = s.pid"
    " GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
    " ORDER BY 1, 2, 3, 5, 6, 7, 8";

/* The rows into c->groups and c->domains; 0, or 2 (said). */
static int tr_sessions(struct tlsrpt_cmd *c)
{
    const char *p[] = {c->day};
    char err[1024];
    c->rows = db_checked(c->db, pq.PQexecParams(c->db, tr_sessions_sql, 1, NULL, p, NULL, NULL, 0),
                         PGRES_TUPLES_OK, err, sizeof err);
    if (!c->rows) {
        fprintf(stderr, "%s: reading the delivery rows: %s\n", TLSRPT_WHO, err);
        return 2;
    }
    size_t n = (size_t)pq.PQntuples(c->rows);
    c->groups = calloc(n ? n : 1, sizeof *c->groups);
    c->domains = calloc(n ? n : 1, sizeof *c->domains);
    if (!c->groups || !c->domains) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        int r = (int)i;
        struct tlsrpt_group *g = &c->groups[c->ngroups++];
        *g = (struct tlsrpt_group){
            .policy_type = pq.PQgetvalue(c->rows, r, 1),
            .policy_id = pq.PQgetvalue(c->rows, r, 2),
            .policy_text = pq.PQgetisnull(c->rows, r, 3) ? NULL : pq.PQgetvalue(c->rows, r, 3),
            .result = pq.PQgetvalue(c->rows, r, 4),
            .mx = pq.PQgetvalue(c->rows, r, 5),
            .peer = pq.PQgetvalue(c->rows, r, 6),
            .source = pq.PQgetvalue(c->rows, r, 7),
            .sessions = strtoul(pq.PQgetvalue(c->rows, r, 8), NULL, 10),
        };
        const char *dom = pq.PQgetvalue(c->rows, r, 0);
        struct tlsrpt_domain *d = c->ndomains ? &c->domains[c->ndomains - 1] : NULL;
        if (!d || i == 0 || strcmp(dom, pq.PQgetvalue(c->rows, r - 1, 0)) != 0) {
            d = &c->domains[c->ndomains++];
            snprintf(d->name, sizeof d->name, "%s", dom);
            d->g0 = i;
            buf_init(&d->gz);
        }
        d->ng++;
        if (g->result[0]) {
            d->failed += g->sessions;
        } else {
            d->ok += g->sessions;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- the lookups */

struct tr_run {
    struct loop *loop;
    struct dns *dns;
    struct loop_timer done;
    unsigned pending;
};

struct tr_lookup {
    struct tr_run *run;
    struct tlsrpt_domain *d;
};

static void tr_on_done(struct loop_timer *t)
{
    struct tr_run *run = t->owner;
    dns_free(run->dns); /* not from inside a c-ares callback */
    run->dns = NULL;
    loop_stop_when_idle(run->loop);
}

static void tr_on_txt(void *user, const struct dns_txt_result *res)
{
    struct tr_lookup *l = user;
    struct tlsrpt_domain *d = l->d;
    d->status = res->status;
    if (res->status == DNS_OK) {
        d->has_record = tlsrpt_record_parse(res->records, res->n, &d->rec, d->why, sizeof d->why);
    } else if (res->status == DNS_NXDOMAIN) {
        snprintf(d->why, sizeof d->why, "no TLSRPTv1 record");
    } else {
        snprintf(d->error, sizeof d->error, "%s", res->error ? res->error : "no answer");
    }
    if (--l->run->pending == 0) {
        loop_timer_set(l->run->loop, &l->run->done, 0);
    }
}

/* Every domain's _smtp._tls record at once; 0, or 2 when no resolver can
 * be set up (said). A domain that is no domain name is said and skipped. */
static int tr_lookup_all(struct tlsrpt_cmd *c)
{
    char err[512];
    struct tr_run run = {0};
    run.loop = loop_new(256);
    run.dns = run.loop ? dns_new(run.loop, c->so.resolver, 2000, err, sizeof err) : NULL;
    if (!run.dns) {
        fprintf(stderr, "%s: %s\n", TLSRPT_WHO, run.loop ? err : "io_uring setup failed");
        loop_free(run.loop);
        return 2;
    }
    struct tr_lookup *looks = calloc(c->ndomains ? c->ndomains : 1, sizeof *looks);
    if (!looks) {
        abort();
    }
    loop_timer_init(&run.done, tr_on_done, &run);
    run.pending = 1; /* held while the queries start */
    for (size_t i = 0; i < c->ndomains; i++) {
        struct tlsrpt_domain *d = &c->domains[i];
        char name[320];
        const char *why = NULL;
        if (dns_domain_ascii(d->name, name, sizeof name, &why) < 0) {
            d->status = DNS_BAD_NAME;
            snprintf(d->error, sizeof d->error, "not a domain name: %s", why ? why : "?");
            continue;
        }
        if (strlen(name) >= sizeof d->name) {
            d->status = DNS_BAD_NAME;
            snprintf(d->error, sizeof d->error, "not a domain name: too long");
            continue;
        }
        memcpy(d->name, name, strlen(name) + 1);
        snprintf(name, sizeof name, "_smtp._tls.%s", d->name);
        looks[i] = (struct tr_lookup){.run = &run, .d = d};
        run.pending++;
        dns_resolve_txt(run.dns, name, tr_on_txt, &looks[i]);
    }
    if (--run.pending == 0) {
        loop_timer_set(run.loop, &run.done, 0);
    }
    loop_run(run.loop);
    loop_free(run.loop);
    free(looks);
    return 0;
}

/* ---------------------------------------------------------------- reports and files */

static void tr_meta(const struct tlsrpt_cmd *c, const struct tlsrpt_domain *d,
                    struct tlsrpt_meta *m)
{
    *m = (struct tlsrpt_meta){
        .org = c->org,
        .contact = c->contact,
        .submitter = c->submitter,
        .domain = d->name,
        .report_id = d->report_id,
        .begin = c->begin,
    };
}

/* d's report built and gzipped into d->gz; -1 when zlib fails (said). */
static int tr_build(struct tlsrpt_cmd *c, struct tlsrpt_domain *d)
{
    struct tlsrpt_meta m;
    tlsrpt_report_id(c->day, d->name, c->submitter, d->report_id, sizeof d->report_id);
    tr_meta(c, d, &m);
    tlsrpt_file_name(&m, d->file, sizeof d->file);
    buf_t json = BUF_INIT;
    tlsrpt_json(&m, &c->groups[d->g0], d->ng, &json);
    int rc = tlsrpt_gzip(buf_data(&json), buf_len(&json), &d->gz);
    buf_free(&json);
    if (rc < 0) {
        fprintf(stderr, "%s: %s: the report could not be compressed (zlib)\n", TLSRPT_WHO, d->name);
    }
    return rc;
}

/* d's gzip as --out/FILE (replaced if there); 0, or -1 (said). */
static int tr_write(const struct tlsrpt_cmd *c, struct tlsrpt_domain *d)
{
    char path[1200], why[256];
    snprintf(path, sizeof path, "%s/%s", c->out, d->file);
    FILE *f = outfile_open(path, 0, why, sizeof why);
    if (!f) {
        fprintf(stderr, "%s: --out %s: %s\n", TLSRPT_WHO, c->out, why);
        return -1;
    }
    size_t n = fwrite(buf_data(&d->gz), 1, buf_len(&d->gz), f);
    int bad = n != buf_len(&d->gz) || fflush(f) != 0 || ferror(f);
    int err = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    if (bad) {
        fprintf(stderr, "%s: %s: %s\n", TLSRPT_WHO, path, strerror(err));
        return -1;
    }
    d->written = 1;
    return 0;
}

/* Lines about the domains that get no report; 1 when a lookup failed. */
static int tr_say_unreported(const struct tlsrpt_cmd *c, unsigned *none)
{
    int failed = 0;
    *none = 0;
    for (size_t i = 0; i < c->ndomains; i++) {
        const struct tlsrpt_domain *d = &c->domains[i];
        if (d->has_record) {
            continue;
        }
        if (d->status == DNS_OK || d->status == DNS_NXDOMAIN) {
            (*none)++;
            printf("%s: no report: _smtp._tls.%s: %s\n", d->name, d->name, d->why);
        } else {
            failed = 1;
            printf("%s: no report: the lookup of _smtp._tls.%s failed (%s): not known whether "
                   "it publishes a TLSRPT record\n",
                   d->name, d->name, d->error);
        }
    }
    return failed;
}

/* The table: one line per domain and rua. */
static void tr_table(const struct tlsrpt_cmd *c)
{
    printf("%-28s %-40s %8s %8s  %s\n", "DOMAIN", "RUA", "OK", "FAILED",
           c->send ? "RESULT" : "FILE");
    for (size_t i = 0; i < c->ndomains; i++) {
        const struct tlsrpt_domain *d = &c->domains[i];
        for (size_t k = 0; d->has_record && k < d->rec.nrua; k++) {
            char file[1300];
            snprintf(file, sizeof file, "%s/%s", c->out, d->file);
            printf("%-28s %-40s %8lu %8lu  %s\n", d->name, d->rec.rua[k], d->ok, d->failed,
                   c->send      ? d->result[k]
                   : d->written ? file
                                : "not written");
        }
    }
}

/* ---------------------------------------------------------------- the command */

static int tr_run(struct tlsrpt_cmd *c)
{
    int rc = tr_sessions(c);
    if (rc == 0) {
        rc = tr_lookup_all(c);
    }
    if (rc != 0) {
        return rc;
    }
    if ((int64_t)time(NULL) < c->begin + 86400) {
        fprintf(stderr,
                "%s: warning: %s is not over yet (UTC): the reports cover its sessions "
                "until now\n",
                TLSRPT_WHO, c->day);
    }
    unsigned reports = 0, none = 0;
    for (size_t i = 0; i < c->ndomains; i++) {
        struct tlsrpt_domain *d = &c->domains[i];
        if (!d->has_record) {
            continue;
        }
        if (tr_build(c, d) < 0) {
            rc = 1;
            d->has_record = 0;
            continue;
        }
        reports++;
        if ((!c->send || c->out_given) && tr_write(c, d) < 0) {
            rc = 1;
        }
    }
    if (tr_say_unreported(c, &none)) {
        rc = 1;
    }
    if (c->send && reports > 0) {
        int s = tlsrpt_send_all(c);
        rc = s > rc ? s : rc;
    }
    if (reports > 0) {
        tr_table(c);
    }
    printf("%s: %zu domain%s with sessions, %u report%s, %u without a TLSRPT record\n", c->day,
           c->ndomains, c->ndomains == 1 ? "" : "s", reports, reports == 1 ? "" : "s", none);
    return rc;
}

static void tr_free(struct tlsrpt_cmd *c)
{
    for (size_t i = 0; i < c->ndomains; i++) {
        buf_free(&c->domains[i].gz);
    }
    free(c->domains);
    free(c->groups);
    if (c->rows) { /* libpq is loaded by the connection (campaign/pq.h) */
        pq.PQclear(c->rows);
    }
    dkim_signer_free(c->signer);
    if (c->db) {
        pq.PQfinish(c->db);
    }
}

int tlsrpt_main(int argc, char **argv)
{
    struct tlsrpt_cmd c = {.https_timeout_ms = 30000};
    int rc = tr_parse(argc, argv, &c);
    if (rc >= 0) {
        tr_free(&c);
        return rc;
    }
    char err[1024];
    c.db = db_connect_current(c.url, err, sizeof err);
    if (!c.db) {
        fprintf(stderr, "%s: %s\n", TLSRPT_WHO, err);
        tr_free(&c);
        return 2;
    }
    db_exec(c.db, "SET client_encoding = 'UTF8'", err, sizeof err);
    rc = tr_run(&c);
    fflush(stdout);
    tr_free(&c);
    return rc;
}
