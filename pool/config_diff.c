/*
 * config_diff - a config as its file writes it, and what a reload changed.
 * See config.h.
 *
 * config_diff compares two loaded configs setting by setting and writes
 * one line per change, in the file's words and units:
 *   global: retry 5m,15m -> 1m,5m
 *   isp gmail: msg_rate 100/s -> 50/s
 *   isp gmail: rule added: 421 4.7.0 => backoff 0.7 5m
 *   isp gmail source 192.0.2.11: msg_rate 20/h -> 50/h
 *   isp yahoo: added
 *   route example.com: server 127.0.0.1:2525 -> 127.0.0.1:2526
 * Settings of [feedback] are named, never the secret's bytes. Lines of a
 * list (domains, mx, source, rule) compare as sets: their order changes
 * nothing but the rules' (the first matching rule wins), which is said.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "pool/config.h"

void config_duration_text(uint64_t ms, char *out, size_t outlen)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++) {
        if (ms >= units[i].ms && ms % units[i].ms == 0) {
            snprintf(out, outlen, "%llu%s", (unsigned long long)(ms / units[i].ms), units[i].unit);
            return;
        }
    }
    snprintf(out, outlen, "%llums", (unsigned long long)ms);
}

void config_rate_text(double per_sec, char *out, size_t outlen)
{
    if (per_sec < 0) {
        snprintf(out, outlen, "unlimited");
        return;
    }
    /* In the first unit where it is at least 1, with at most two decimals. */
    static const struct {
        const char *unit;
        double seconds;
    } units[] = {{"s", 1}, {"min", 60}, {"h", 3600}, {"d", 86400}};
    size_t i = 0;
    while (i + 1 < sizeof units / sizeof *units && per_sec * units[i].seconds < 1 - 1e-9) {
        i++;
    }
    char n[48];
    snprintf(n, sizeof n, "%.2f", per_sec * units[i].seconds);
    size_t len = strlen(n);
    while (len > 0 && n[len - 1] == '0') {
        n[--len] = '\0';
    }
    if (len > 0 && n[len - 1] == '.') {
        n[--len] = '\0';
    }
    snprintf(out, outlen, "%s/%s", n, units[i].unit);
}

void config_rule_text(const struct config_rule *r, char *out, size_t outlen)
{
    char d[32];
    config_duration_text(r->pause_ms, d, sizeof d);
    switch (r->action) {
    case CONFIG_ACTION_BACKOFF:
        snprintf(out, outlen, "%s => backoff %g %s", r->pattern, r->cut, d);
        break;
    case CONFIG_ACTION_SUSPEND:
        snprintf(out, outlen, "%s => suspend %s", r->pattern, d);
        break;
    default:
        snprintf(out, outlen, "%s => bounce", r->pattern);
        break;
    }
}

/* ---- values as text ---- */

static const char *config_tls_text(enum smtp_tls_policy t)
{
    switch (t) {
    case SMTP_TLS_REQUIRED:
        return "required";
    case SMTP_TLS_VERIFY:
        return "verify";
    case SMTP_TLS_OPPORTUNISTIC:
        return "opportunistic";
    default:
        return "none";
    }
}

static void config_retry_text(const struct retry_schedule *r, char *out, size_t outlen)
{
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < r->n && k < outlen; i++) {
        char d[32];
        config_duration_text(r->delays_ms[i], d, sizeof d);
        k += (size_t)snprintf(out + k, outlen - k, "%s%s", i ? "," : "", d);
    }
}

static void config_percent_text(double fraction, char *out, size_t outlen)
{
    snprintf(out, outlen, "%g%%", fraction * 100);
}

static void config_count_text(unsigned n, const char *none, char *out, size_t outlen)
{
    if (n == 0) {
        snprintf(out, outlen, "%s", none);
    } else {
        snprintf(out, outlen, "%u", n);
    }
}

/* ---- the lines ---- */

struct config_diff_out {
    buf_t *out;
    int n;
};

static void config_diff_line(struct config_diff_out *d, const char *where, const char *what,
                             const char *was, const char *is)
{
    if (strcmp(was, is) == 0) {
        return;
    }
    buf_appendf(d->out, "%s: %s %s -> %s\n", where, what, was[0] ? was : "(none)",
                is[0] ? is : "(none)");
    d->n++;
}

static void config_diff_say(struct config_diff_out *d, const char *where, const char *what)
{
    buf_appendf(d->out, "%s: %s\n", where, what);
    d->n++;
}

/* A list setting compared as a set: one line with what was added and removed. */
static void config_diff_list(struct config_diff_out *d, const char *where, const char *what,
                             const char (*was)[CONFIG_NAME_MAX], size_t nwas,
                             const char (*is)[CONFIG_NAME_MAX], size_t nis)
{
    char added[1024] = "", removed[1024] = "";
    size_t ka = 0, kr = 0;
    for (size_t i = 0; i < nis; i++) {
        size_t j = 0;
        while (j < nwas && strcmp(was[j], is[i]) != 0) {
            j++;
        }
        if (j == nwas && ka < sizeof added) {
            ka += (size_t)snprintf(added + ka, sizeof added - ka, "%s%s", ka ? ", " : "", is[i]);
        }
    }
    for (size_t i = 0; i < nwas; i++) {
        size_t j = 0;
        while (j < nis && strcmp(is[j], was[i]) != 0) {
            j++;
        }
        if (j == nis && kr < sizeof removed) {
            kr +=
                (size_t)snprintf(removed + kr, sizeof removed - kr, "%s%s", kr ? ", " : "", was[i]);
        }
    }
    if (ka) {
        buf_appendf(d->out, "%s: %s added: %s\n", where, what, added);
        d->n++;
    }
    if (kr) {
        buf_appendf(d->out, "%s: %s removed: %s\n", where, what, removed);
        d->n++;
    }
}

/* A rate as written, else as config_rate_text writes it. */
static void config_rate_written(double rate, const char *written, char *out, size_t outlen)
{
    if (written && written[0]) {
        snprintf(out, outlen, "%s", written);
    } else {
        config_rate_text(rate, out, outlen);
    }
}

static int config_rate_same(double a, double b)
{
    return (a < 0 && b < 0) || fabs(a - b) <= 1e-9 * (fabs(a) > 1 ? fabs(a) : 1);
}

/* Compared by value ("60/min" is "1/s"), said as written. */
static void config_diff_rate(struct config_diff_out *d, const char *where, const char *what,
                             double was, const char *was_text, double is, const char *is_text)
{
    if (config_rate_same(was, is)) {
        return;
    }
    char a[48], b[48];
    config_rate_written(was, was_text, a, sizeof a);
    config_rate_written(is, is_text, b, sizeof b);
    buf_appendf(d->out, "%s: %s %s -> %s\n", where, what, a, b);
    d->n++;
}

static void config_diff_duration(struct config_diff_out *d, const char *where, const char *what,
                                 uint64_t was, uint64_t is)
{
    char a[32], b[32];
    config_duration_text(was, a, sizeof a);
    config_duration_text(is, b, sizeof b);
    config_diff_line(d, where, what, a, b);
}

static void config_diff_count(struct config_diff_out *d, const char *where, const char *what,
                              unsigned was, unsigned is, const char *none)
{
    char a[32], b[32];
    config_count_text(was, none, a, sizeof a);
    config_count_text(is, none, b, sizeof b);
    config_diff_line(d, where, what, a, b);
}

static void config_diff_percent(struct config_diff_out *d, const char *where, const char *what,
                                double was, double is)
{
    char a[32], b[32];
    config_percent_text(was, a, sizeof a);
    config_percent_text(is, b, sizeof b);
    config_diff_line(d, where, what, a, b);
}

static int config_rule_in(const struct config_isp *isp, const char *text)
{
    for (size_t i = 0; i < isp->nrules; i++) {
        char t[256];
        config_rule_text(&isp->rules[i], t, sizeof t);
        if (strcmp(t, text) == 0) {
            return 1;
        }
    }
    return 0;
}

static void config_diff_rules(struct config_diff_out *d, const char *where,
                              const struct config_isp *was, const struct config_isp *is)
{
    int changed = 0;
    for (size_t i = 0; i < is->nrules; i++) {
        char t[256];
        config_rule_text(&is->rules[i], t, sizeof t);
        if (!config_rule_in(was, t)) {
            buf_appendf(d->out, "%s: rule added: %s\n", where, t);
            d->n++;
            changed = 1;
        }
    }
    for (size_t i = 0; i < was->nrules; i++) {
        char t[256];
        config_rule_text(&was->rules[i], t, sizeof t);
        if (!config_rule_in(is, t)) {
            buf_appendf(d->out, "%s: rule removed: %s\n", where, t);
            d->n++;
            changed = 1;
        }
    }
    if (!changed && was->nrules == is->nrules) {
        for (size_t i = 0; i < is->nrules; i++) {
            char a[256], b[256];
            config_rule_text(&was->rules[i], a, sizeof a);
            config_rule_text(&is->rules[i], b, sizeof b);
            if (strcmp(a, b) != 0) {
                config_diff_say(d, where, "rules reordered (the first that matches a reply acts)");
                break;
            }
        }
    }
}

static const struct config_lane *config_lane_named(const struct config_isp *isp, const char *src)
{
    for (size_t i = 0; i < isp->nlanes; i++) {
        if (strcmp(isp->lanes[i].source, src) == 0) {
            return &isp->lanes[i];
        }
    }
    return NULL;
}

/* A source's own limits as text ("" when it does not set that one). */
static void config_lane_value(const struct config_lane *l, unsigned bit, char *out, size_t outlen)
{
    out[0] = '\0';
    if (!l || !(l->set & bit)) {
        return;
    }
    switch (bit) {
    case CONFIG_LANE_MAX_CONNECTIONS:
        snprintf(out, outlen, "%u", l->max_connections);
        break;
    case CONFIG_LANE_MAX_MSGS_PER_CONN:
        snprintf(out, outlen, "%u", l->max_msgs_per_conn);
        break;
    case CONFIG_LANE_MSG_RATE:
        config_rate_written(l->msg_rate, l->msg_rate_text, out, outlen);
        break;
    default:
        config_rate_written(l->conn_rate, l->conn_rate_text, out, outlen);
        break;
    }
}

static void config_diff_lanes(struct config_diff_out *d, const char *isp_name,
                              const struct config_isp *was, const struct config_isp *is)
{
    static const struct {
        unsigned bit;
        const char *name;
    } fields[] = {{CONFIG_LANE_MAX_CONNECTIONS, "max_connections"},
                  {CONFIG_LANE_MAX_MSGS_PER_CONN, "max_msgs_per_conn"},
                  {CONFIG_LANE_MSG_RATE, "msg_rate"},
                  {CONFIG_LANE_CONN_RATE, "conn_rate"}};
    for (int pass = 0; pass < 2; pass++) {
        const struct config_isp *a = pass ? is : was, *b = pass ? was : is;
        for (size_t i = 0; i < a->nlanes; i++) {
            const struct config_lane *la = &a->lanes[i];
            const struct config_lane *lb = config_lane_named(b, la->source);
            char where[CONFIG_NAME_MAX * 2 + 32];
            snprintf(where, sizeof where, "isp %s source %s", isp_name, la->source);
            if (!lb) {
                config_diff_say(d, where, pass ? "added" : "removed");
                continue;
            }
            if (pass) {
                continue; /* both have it: compared on the first pass */
            }
            for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) {
                char x[48], y[48];
                config_lane_value(la, fields[f].bit, x, sizeof x);
                config_lane_value(lb, fields[f].bit, y, sizeof y);
                if (strcmp(x, y) != 0) {
                    config_diff_line(d, where, fields[f].name, x[0] ? x : "(the isp's)",
                                     y[0] ? y : "(the isp's)");
                }
            }
        }
    }
}

static void config_diff_isp(struct config_diff_out *d, const struct config *oc,
                            const struct config_isp *was, const struct config *nc,
                            const struct config_isp *is)
{
    char where[CONFIG_NAME_MAX + 8];
    snprintf(where, sizeof where, "isp %s", is->name);
    config_diff_list(d, where, "domains", was->domains, was->ndomains, is->domains, is->ndomains);
    config_diff_list(d, where, "mx", was->mx, was->nmx, is->mx, is->nmx);
    config_diff_count(d, where, "max_connections", was->max_connections, is->max_connections,
                      "unlimited");
    config_diff_count(d, where, "max_msgs_per_conn", was->max_msgs_per_conn, is->max_msgs_per_conn,
                      "unlimited");
    config_diff_count(d, where, "max_rcpts_per_msg", was->max_rcpts_per_msg, is->max_rcpts_per_msg,
                      "50");
    config_diff_rate(d, where, "msg_rate", was->msg_rate, was->msg_rate_text, is->msg_rate,
                     is->msg_rate_text);
    config_diff_rate(d, where, "conn_rate", was->conn_rate, was->conn_rate_text, is->conn_rate,
                     is->conn_rate_text);
    config_diff_line(d, where, "tls", config_tls_text(was->tls), config_tls_text(is->tls));
    char a[32] = "default", b[32] = "default";
    if (was->timeout_ms) {
        config_duration_text(was->timeout_ms, a, sizeof a);
    }
    if (is->timeout_ms) {
        config_duration_text(is->timeout_ms, b, sizeof b);
    }
    config_diff_line(d, where, "timeout", a, b);
    /* The settings in force, whether the ISP's own or [global]'s. */
    config_diff_percent(d, where, "backoff_threshold", config_backoff_threshold(oc, was),
                        config_backoff_threshold(nc, is));
    config_diff_duration(d, where, "backoff_window", config_backoff_window_ms(oc, was),
                         config_backoff_window_ms(nc, is));
    /* In force, as above: the ISP's own or [global]'s. */
    config_diff_line(d, where, "mta_sts", config_mta_sts(oc, was) ? "on" : "off",
                     config_mta_sts(nc, is) ? "on" : "off");
    config_diff_line(d, where, "dane", config_dane(oc, was) ? "on" : "off",
                     config_dane(nc, is) ? "on" : "off");
    config_diff_line(d, where, "cluster_limits", config_cluster_limits(oc, was) ? "on" : "off",
                     config_cluster_limits(nc, is) ? "on" : "off");
    config_diff_rules(d, where, was, is);
    config_diff_lanes(d, is->name, was, is);
}

static const struct config_isp *config_isp_named(const struct config *c, const char *name)
{
    for (size_t i = 0; i < c->nisps; i++) {
        if (strcmp(c->isps[i].name, name) == 0) {
            return &c->isps[i];
        }
    }
    return NULL;
}

static void config_diff_global(struct config_diff_out *d, const struct config *was,
                               const struct config *is)
{
    const char *where = "global";
    char a[512], b[512];
    config_retry_text(&was->retry, a, sizeof a);
    config_retry_text(&is->retry, b, sizeof b);
    config_diff_line(d, where, "retry", a, b);
    config_diff_duration(d, where, "max_age", was->retry.max_age_ms, is->retry.max_age_ms);
    config_diff_line(d, where, "tls", config_tls_text(was->tls), config_tls_text(is->tls));
    config_diff_line(d, where, "mta_sts", was->mta_sts ? "on" : "off", is->mta_sts ? "on" : "off");
    config_diff_line(d, where, "cluster_limits", was->cluster_limits ? "on" : "off",
                     is->cluster_limits ? "on" : "off");
    config_diff_duration(d, where, "cluster_heartbeat", was->cluster_heartbeat_ms,
                         is->cluster_heartbeat_ms);
    if (strcmp(was->dnssec_resolver, is->dnssec_resolver) != 0) {
        /* The pool's resolver is made at start: a running send keeps its own. */
        snprintf(a, sizeof a, "%s", was->dnssec_resolver[0] ? was->dnssec_resolver : "(none)");
        snprintf(b, sizeof b, "dnssec_resolver %.64s -> %.64s (takes effect at the next start)", a,
                 is->dnssec_resolver[0] ? is->dnssec_resolver : "(none)");
        config_diff_say(d, where, b);
    }
    snprintf(a, sizeof a, "%g", was->backoff_step);
    snprintf(b, sizeof b, "%g", is->backoff_step);
    config_diff_line(d, where, "backoff_step", a, b);
    config_diff_duration(d, where, "backoff_interval", was->backoff_interval_ms,
                         is->backoff_interval_ms);
    config_diff_percent(d, where, "backoff_threshold", was->backoff_threshold,
                        is->backoff_threshold);
    config_diff_duration(d, where, "backoff_window", was->backoff_window_ms, is->backoff_window_ms);
    char sa[CONFIG_SOURCES_MAX][CONFIG_NAME_MAX], sb[CONFIG_SOURCES_MAX][CONFIG_NAME_MAX];
    for (size_t i = 0; i < was->nsources; i++) {
        snprintf(sa[i], CONFIG_NAME_MAX, "%.40s %u", was->sources[i].addr, was->sources[i].weight);
    }
    for (size_t i = 0; i < is->nsources; i++) {
        snprintf(sb[i], CONFIG_NAME_MAX, "%.40s %u", is->sources[i].addr, is->sources[i].weight);
    }
    config_diff_list(d, where, "source", (const char(*)[CONFIG_NAME_MAX])sa, was->nsources,
                     (const char(*)[CONFIG_NAME_MAX])sb, is->nsources);
}

static void config_diff_routes(struct config_diff_out *d, const struct config *was,
                               const struct config *is)
{
    for (int pass = 0; pass < 2; pass++) {
        const struct config *a = pass ? is : was, *b = pass ? was : is;
        for (size_t i = 0; i < a->nroutes; i++) {
            const struct config_route *ra = &a->routes[i], *rb = NULL;
            for (size_t j = 0; j < b->nroutes && !rb; j++) {
                if (strcmp(b->routes[j].domain, ra->domain) == 0) {
                    rb = &b->routes[j];
                }
            }
            char where[CONFIG_NAME_MAX + 8];
            snprintf(where, sizeof where, "route %s", ra->domain);
            if (!rb) {
                config_diff_say(d, where, pass ? "added" : "removed");
            } else if (!pass) {
                config_diff_line(d, where, "server", ra->server, rb->server);
            }
        }
    }
}

static void config_diff_feedback(struct config_diff_out *d, const struct config_feedback *was,
                                 const struct config_feedback *is)
{
    const char *where = "feedback";
    if (was->enabled != is->enabled) {
        config_diff_say(d, where, is->enabled ? "added" : "removed");
        return;
    }
    if (!is->enabled) {
        return;
    }
    config_diff_line(d, where, "return_path", was->return_path, is->return_path);
    config_diff_line(d, where, "secret_file", was->secret_file, is->secret_file);
    if (was->secret_len != is->secret_len || memcmp(was->secret, is->secret, is->secret_len)) {
        config_diff_say(d, where, "the secret changed");
    }
    config_diff_line(d, where, "unsubscribe_url", was->unsubscribe_url, is->unsubscribe_url);
    config_diff_percent(d, where, "complaint_pause", was->complaint_pause, is->complaint_pause);
    config_diff_count(d, where, "complaint_min_sample", was->complaint_min_sample,
                      is->complaint_min_sample, "0");
    config_diff_duration(d, where, "complaint_window", was->complaint_window_ms,
                         is->complaint_window_ms);
    config_diff_count(d, where, "soft_bounce_limit", was->soft_bounce_limit, is->soft_bounce_limit,
                      "0");
    config_diff_duration(d, where, "soft_bounce_window", was->soft_bounce_window_ms,
                         is->soft_bounce_window_ms);
}

static void config_diff_bounce(struct config_diff_out *d, const struct bounce_rules *was,
                               const struct bounce_rules *is)
{
    int same = was->n == is->n;
    for (size_t i = 0; same && i < is->n; i++) {
        same = strcmp(was->rule[i].pattern, is->rule[i].pattern) == 0 &&
               was->rule[i].category == is->rule[i].category &&
               was->rule[i].kind == is->rule[i].kind;
    }
    if (!same) {
        char a[32], b[32];
        snprintf(a, sizeof a, "%zu rule%s", was->n, was->n == 1 ? "" : "s");
        snprintf(b, sizeof b, "%zu rule%s", is->n, is->n == 1 ? "" : "s");
        if (strcmp(a, b) == 0) {
            config_diff_say(d, "bounce", "rules changed");
        } else {
            config_diff_line(d, "bounce", "rules", a, b);
        }
    }
}

int config_diff(const struct config *old, const struct config *new, buf_t *out)
{
    struct config_diff_out d = {out, 0};
    config_diff_global(&d, old, new);
    for (size_t i = 0; i < new->nisps; i++) {
        const struct config_isp *was = config_isp_named(old, new->isps[i].name);
        if (!was) {
            char where[CONFIG_NAME_MAX + 8];
            snprintf(where, sizeof where, "isp %s", new->isps[i].name);
            config_diff_say(&d, where, "added");
        } else {
            config_diff_isp(&d, old, was, new, &new->isps[i]);
        }
    }
    for (size_t i = 0; i < old->nisps; i++) {
        if (!config_isp_named(new, old->isps[i].name)) {
            char where[CONFIG_NAME_MAX + 8];
            snprintf(where, sizeof where, "isp %s", old->isps[i].name);
            config_diff_say(&d, where, "removed");
        }
    }
    config_diff_routes(&d, old, new);
    config_diff_bounce(&d, &old->bounce.rules, &new->bounce.rules);
    config_diff_feedback(&d, &old->feedback, &new->feedback);
    return d.n;
}

void config_reload_say(FILE *f, const char *path, const struct config *c)
{
    if (!c->nchanges || !c->changes) {
        fprintf(f, "ringmail send: config reloaded from %s: no changes\n", path);
        return;
    }
    fprintf(f, "ringmail send: config reloaded from %s: %d change%s\n", path, c->nchanges,
            c->nchanges == 1 ? "" : "s");
    /* One line each, indented under the first. */
    for (const char *line = c->changes; *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        fprintf(f, "  %.*s\n", (int)n, line);
        line += n + (nl ? 1 : 0);
    }
}
