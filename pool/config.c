/*
 * config - the operator's file. See config.h.
 *
 * inih calls config_on_entry once per "name = value" line; the handler
 * records the first error and stops, and inih returns that line's number.
 */
#include "pool/config.h"

#include <arpa/inet.h>
#include <fnmatch.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pool/throttle.h"

struct config_parse {
    struct config *c;
    char err[256];
    unsigned char *tls_set; /* per ISP: tls given explicitly; owned */
};

static int config_fail(struct config_parse *p, const char *fmt, const char *a, const char *b)
{
    snprintf(p->err, sizeof p->err, fmt, a, b);
    return 0;
}

static int config_unsigned(const char *v, unsigned *out)
{
    char *end;
    unsigned long n = strtoul(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n > 1000000000ul) {
        return -1;
    }
    *out = (unsigned)n;
    return 0;
}

/* "a, b c" into list; -1 when an item is too long or there are too many. */
static int config_list(const char *v, char list[][CONFIG_NAME_MAX], size_t *n)
{
    char copy[2048], *save = NULL;
    snprintf(copy, sizeof copy, "%s", v);
    for (char *t = strtok_r(copy, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
        if (*n == CONFIG_LIST_MAX || strlen(t) >= CONFIG_NAME_MAX) {
            return -1;
        }
        snprintf(list[(*n)++], CONFIG_NAME_MAX, "%s", t);
    }
    return 0;
}

/* "PATTERN => backoff 0.5 10m" | "=> suspend 1h" | "=> bounce" */
static int config_rule_parse(struct config_parse *p, struct config_isp *isp, const char *v)
{
    const char *arrow = strstr(v, "=>");
    if (!arrow || isp->nrules == CONFIG_RULES_MAX) {
        return config_fail(p, "rule '%s': want 'PATTERN => ACTION'%s", v, "");
    }
    struct config_rule *r = &isp->rules[isp->nrules];
    size_t plen = (size_t)(arrow - v);
    while (plen > 0 && (v[plen - 1] == ' ' || v[plen - 1] == '\t')) {
        plen--;
    }
    if (plen == 0 || plen >= sizeof r->pattern) {
        return config_fail(p, "rule '%s': empty or too long pattern%s", v, "");
    }
    memcpy(r->pattern, v, plen);
    r->pattern[plen] = '\0';
    char action[16] = "", a1[32] = "", a2[32] = "";
    int n = sscanf(arrow + 2, "%15s %31s %31s", action, a1, a2);
    char err[128];
    if (n >= 1 && strcmp(action, "bounce") == 0 && n == 1) {
        r->action = CONFIG_ACTION_BOUNCE;
    } else if (n == 2 && strcmp(action, "suspend") == 0 &&
               throttle_duration_parse(a1, &r->pause_ms, err, sizeof err) == 0) {
        r->action = CONFIG_ACTION_SUSPEND;
    } else if (n == 3 && strcmp(action, "backoff") == 0 &&
               throttle_duration_parse(a2, &r->pause_ms, err, sizeof err) == 0) {
        char *end;
        r->cut = strtod(a1, &end);
        if (*end != '\0' || r->cut <= 0 || r->cut >= 1) {
            return config_fail(p, "rule '%s': backoff factor must be between 0 and 1%s", v, "");
        }
        r->action = CONFIG_ACTION_BACKOFF;
    } else {
        return config_fail(p,
                           "rule '%s': action must be 'backoff CUT PAUSE', 'suspend "
                           "DURATION' or 'bounce'%s",
                           v, "");
    }
    isp->nrules++;
    return 1;
}

static int config_isp_entry(struct config_parse *p, struct config_isp *isp, size_t index,
                            const char *name, const char *v)
{
    char err[200];
    if (strcmp(name, "domains") == 0) {
        return config_list(v, isp->domains, &isp->ndomains) == 0
                   ? 1
                   : config_fail(p, "too many or too long domains in '%s'%s", v, "");
    }
    if (strcmp(name, "mx") == 0) {
        return config_list(v, isp->mx, &isp->nmx) == 0
                   ? 1
                   : config_fail(p, "too many or too long mx patterns in '%s'%s", v, "");
    }
    unsigned *counts[] = {&isp->max_connections, &isp->max_msgs_per_conn, &isp->max_rcpts_per_msg};
    const char *count_names[] = {"max_connections", "max_msgs_per_conn", "max_rcpts_per_msg"};
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(name, count_names[i]) == 0) {
            if (config_unsigned(v, counts[i]) != 0) {
                return config_fail(p, "%s: not a number: '%s'", name, v);
            }
            if (counts[i] == &isp->max_rcpts_per_msg && (*counts[i] < 1 || *counts[i] > 1000)) {
                return config_fail(p, "%s: '%s' is not 1..1000", name, v);
            }
            return 1;
        }
    }
    if (strcmp(name, "msg_rate") == 0 || strcmp(name, "conn_rate") == 0) {
        double *rate = name[0] == 'm' ? &isp->msg_rate : &isp->conn_rate;
        return throttle_rate_parse(v, rate, err, sizeof err) == 0 ? 1
                                                                  : config_fail(p, "%s%s", err, "");
    }
    if (strcmp(name, "tls") == 0) {
        p->tls_set[index] = 1;
        return smtp_tls_policy_parse(v, &isp->tls) == 0
                   ? 1
                   : config_fail(p, "tls: '%s' is not required, verify, opportunistic or none%s", v,
                                 "");
    }
    if (strcmp(name, "timeout") == 0) {
        return throttle_duration_parse(v, &isp->timeout_ms, err, sizeof err) == 0
                   ? 1
                   : config_fail(p, "%s%s", err, "");
    }
    if (strcmp(name, "rule") == 0) {
        return config_rule_parse(p, isp, v);
    }
    return config_fail(p, "unknown setting '%s' in an [isp] section%s", name, "");
}

static struct config_isp *config_isp_get(struct config_parse *p, const char *name, size_t *index)
{
    struct config *c = p->c;
    for (size_t i = 0; i < c->nisps; i++) {
        if (strcmp(c->isps[i].name, name) == 0) {
            *index = i;
            return &c->isps[i];
        }
    }
    struct config_isp *isps = realloc(c->isps, (c->nisps + 1) * sizeof *isps);
    unsigned char *set = realloc(p->tls_set, c->nisps + 1);
    if (isps) {
        c->isps = isps;
    }
    if (set) {
        p->tls_set = set;
    }
    if (!isps || !set || strlen(name) >= CONFIG_NAME_MAX) {
        return NULL;
    }
    struct config_isp *isp = &c->isps[c->nisps];
    memset(isp, 0, sizeof *isp);
    snprintf(isp->name, sizeof isp->name, "%s", name);
    isp->msg_rate = isp->conn_rate = -1;
    isp->tls = SMTP_TLS_REQUIRED;
    p->tls_set[c->nisps] = 0;
    *index = c->nisps++;
    return isp;
}

/* "source = ADDR [WEIGHT]": a local address to bind, with its share of new connections. */
static int config_source_entry(struct config_parse *p, const char *v)
{
    struct config *c = p->c;
    if (c->nsources == CONFIG_SOURCES_MAX) {
        return config_fail(p, "too many sources (the limit is 64)%s%s", "", "");
    }
    struct config_source *src = &c->sources[c->nsources];
    char addr[CONFIG_NAME_MAX], extra[8];
    unsigned weight = 1;
    int n = sscanf(v, "%63s %u %7s", addr, &weight, extra);
    if (n < 1 || n > 2 || weight == 0 || weight > 1000) {
        return config_fail(p, "source '%s': want 'ADDRESS [WEIGHT 1-1000]'%s", v, "");
    }
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, addr, &a4) != 1 && inet_pton(AF_INET6, addr, &a6) != 1) {
        return config_fail(p, "source '%s': not an IPv4 or IPv6 address%s", addr, "");
    }
    snprintf(src->addr, sizeof src->addr, "%s", addr);
    src->weight = weight;
    c->nsources++;
    return 1;
}

static int config_global_entry(struct config_parse *p, const char *name, const char *v)
{
    struct config *c = p->c;
    char err[200];
    if (strcmp(name, "retry") == 0) {
        return retry_schedule_parse(&c->retry, v, NULL, err, sizeof err) == 0
                   ? 1
                   : config_fail(p, "%s%s", err, "");
    }
    if (strcmp(name, "max_age") == 0) {
        return throttle_duration_parse(v, &c->retry.max_age_ms, err, sizeof err) == 0
                   ? 1
                   : config_fail(p, "%s%s", err, "");
    }
    if (strcmp(name, "tls") == 0) {
        return smtp_tls_policy_parse(v, &c->tls) == 0
                   ? 1
                   : config_fail(p, "tls: '%s' is not required, verify, opportunistic or none%s", v,
                                 "");
    }
    if (strcmp(name, "backoff_step") == 0) {
        char *end;
        c->backoff_step = strtod(v, &end);
        return *end == '\0' && c->backoff_step > 0 && c->backoff_step <= 1
                   ? 1
                   : config_fail(p, "backoff_step must be in (0, 1], not '%s'%s", v, "");
    }
    if (strcmp(name, "backoff_interval") == 0) {
        return throttle_duration_parse(v, &c->backoff_interval_ms, err, sizeof err) == 0
                   ? 1
                   : config_fail(p, "%s%s", err, "");
    }
    if (strcmp(name, "source") == 0) {
        return config_source_entry(p, v);
    }
    return config_fail(p, "unknown setting '%s' in [global]%s", name, "");
}

static int config_route_entry(struct config_parse *p, const char *domain, const char *name,
                              const char *v)
{
    struct config *c = p->c;
    if (strcmp(name, "server") != 0) {
        return config_fail(p, "unknown setting '%s' in a [route] section%s", name, "");
    }
    if (strlen(domain) >= CONFIG_NAME_MAX || strlen(v) >= CONFIG_NAME_MAX) {
        return config_fail(p, "route '%s' too long%s", domain, "");
    }
    struct config_route *r = realloc(c->routes, (c->nroutes + 1) * sizeof *r);
    if (!r) {
        return config_fail(p, "out of memory%s%s", "", "");
    }
    c->routes = r;
    snprintf(r[c->nroutes].domain, CONFIG_NAME_MAX, "%s", domain);
    snprintf(r[c->nroutes].server, CONFIG_NAME_MAX, "%s", v);
    c->nroutes++;
    return 1;
}

static int config_address_parse(const char *s, unsigned char out[16], int *family)
{
    struct in_addr a4;
    if (inet_pton(AF_INET, s, &a4) == 1) {
        memset(out, 0, 16);
        memcpy(out, &a4, sizeof a4);
        *family = AF_INET;
        return 0;
    }
    *family = AF_INET6;
    return inet_pton(AF_INET6, s, out) == 1 ? 0 : -1;
}

int config_address_equal(const char *a, const char *b)
{
    unsigned char x[16], y[16];
    int fx, fy;
    return config_address_parse(a, x, &fx) == 0 && config_address_parse(b, y, &fy) == 0 &&
           fx == fy && memcmp(x, y, 16) == 0;
}

const struct config_lane *config_lane_for(const struct config_isp *isp, const char *addr)
{
    for (size_t i = 0; addr && i < isp->nlanes; i++) {
        if (config_address_equal(isp->lanes[i].source, addr)) {
            return &isp->lanes[i];
        }
    }
    return NULL;
}

/* "[isp NAME source ADDR]": the lane's own limits. */
static int config_lane_entry(struct config_parse *p, const char *isp_name, const char *addr,
                             const char *name, const char *v)
{
    size_t index;
    struct config_isp *isp = config_isp_get(p, isp_name, &index);
    if (!isp) {
        return config_fail(p, "bad ISP name '%s'%s", isp_name, "");
    }
    unsigned char bin[16];
    int family;
    if (config_address_parse(addr, bin, &family) < 0 || strlen(addr) >= CONFIG_NAME_MAX) {
        return config_fail(p, "[isp %s source %s]: not an IPv4 or IPv6 address", isp_name, addr);
    }
    struct config_lane *l = (struct config_lane *)config_lane_for(isp, addr);
    if (!l) {
        if (isp->nlanes == CONFIG_SOURCES_MAX) {
            return config_fail(p, "too many [isp %s source ...] sections (the limit is 64)%s",
                               isp_name, "");
        }
        l = &isp->lanes[isp->nlanes++];
        memset(l, 0, sizeof *l);
        snprintf(l->source, sizeof l->source, "%s", addr);
    }
    char err[200];
    if (strcmp(name, "max_connections") == 0 || strcmp(name, "max_msgs_per_conn") == 0) {
        int conns = name[4] == 'c';
        if (config_unsigned(v, conns ? &l->max_connections : &l->max_msgs_per_conn) != 0) {
            return config_fail(p, "%s: not a number: '%s'", name, v);
        }
        l->set |= conns ? CONFIG_LANE_MAX_CONNECTIONS : CONFIG_LANE_MAX_MSGS_PER_CONN;
        return 1;
    }
    if (strcmp(name, "msg_rate") == 0 || strcmp(name, "conn_rate") == 0) {
        int msgs = name[0] == 'm';
        if (throttle_rate_parse(v, msgs ? &l->msg_rate : &l->conn_rate, err, sizeof err) != 0) {
            return config_fail(p, "%s%s", err, "");
        }
        l->set |= msgs ? CONFIG_LANE_MSG_RATE : CONFIG_LANE_CONN_RATE;
        return 1;
    }
    return config_fail(p,
                       "'%s' cannot be set per source; [isp NAME source ADDR] takes "
                       "max_connections, max_msgs_per_conn, msg_rate and conn_rate%s",
                       name, "");
}

static int config_on_entry(void *user, const char *section, const char *name, const char *value)
{
    struct config_parse *p = user;
    if (strcmp(section, "global") == 0) {
        return config_global_entry(p, name, value);
    }
    const char *src = strncmp(section, "isp ", 4) == 0 ? strstr(section + 4, " source ") : NULL;
    if (src && src > section + 4 && src[8]) {
        char isp_name[CONFIG_NAME_MAX];
        size_t n = (size_t)(src - (section + 4));
        if (n >= sizeof isp_name) {
            return config_fail(p, "bad ISP name in [%s]%s", section, "");
        }
        memcpy(isp_name, section + 4, n);
        isp_name[n] = '\0';
        return config_lane_entry(p, isp_name, src + 8, name, value);
    }
    if (strncmp(section, "isp ", 4) == 0 && section[4]) {
        size_t index;
        struct config_isp *isp = config_isp_get(p, section + 4, &index);
        return isp ? config_isp_entry(p, isp, index, name, value)
                   : config_fail(p, "bad ISP name '%s'%s", section + 4, "");
    }
    if (strncmp(section, "route ", 6) == 0 && section[6]) {
        return config_route_entry(p, section + 6, name, value);
    }
    return config_fail(p,
                       "unknown section [%s]; want [global], [isp NAME], [isp NAME source ADDR] "
                       "or [route DOMAIN]%s",
                       section, "");
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
    struct config *c = calloc(1, sizeof *c);
    struct config_parse p = {.c = c};
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    retry_schedule_init(&c->retry);
    c->tls = SMTP_TLS_REQUIRED;
    c->backoff_step = 0.1;
    c->backoff_interval_ms = 60000;
    int rc = ini_parse(path, config_on_entry, &p);
    if (rc != 0) {
        if (rc < 0) {
            snprintf(err, errlen, "%s: cannot read the file", path);
        } else {
            snprintf(err, errlen, "%s:%d: %s", path, rc, p.err[0] ? p.err : "syntax error");
        }
        free(p.tls_set);
        config_free(c);
        return NULL;
    }
    for (size_t i = 0; i < c->nisps; i++) {
        if (!p.tls_set[i]) {
            c->isps[i].tls = c->tls;
        }
    }
    free(p.tls_set);
    return c;
}

void config_free(struct config *c)
{
    if (c) {
        free(c->isps);
        free(c->routes);
        free(c);
    }
}

static int config_domain_match(const char *pattern, const char *domain)
{
    return fnmatch(pattern, domain, FNM_CASEFOLD) == 0;
}

const struct config_isp *config_isp_for(const struct config *c, const char *domain,
                                        const char *const *mx, size_t nmx)
{
    const struct config_isp *fallback = NULL;
    for (size_t i = 0; i < c->nisps; i++) {
        const struct config_isp *isp = &c->isps[i];
        if (strcmp(isp->name, "default") == 0) {
            fallback = isp;
        }
        for (size_t d = 0; d < isp->ndomains; d++) {
            if (config_domain_match(isp->domains[d], domain)) {
                return isp;
            }
        }
    }
    /* MX rollup: a domain hosted by a provider's exchangers is that provider. */
    for (size_t m = 0; m < nmx; m++) {
        for (size_t i = 0; i < c->nisps; i++) {
            for (size_t k = 0; k < c->isps[i].nmx; k++) {
                if (config_domain_match(c->isps[i].mx[k], mx[m])) {
                    return &c->isps[i];
                }
            }
        }
    }
    return fallback;
}

const struct config_rule *config_rule_match(const struct config_isp *isp, int code,
                                            const char *enhanced, const char *text)
{
    char reply[1024];
    snprintf(reply, sizeof reply, "%d %s %s", code, enhanced ? enhanced : "", text ? text : "");
    for (size_t i = 0; i < isp->nrules; i++) {
        if (strcasestr(reply, isp->rules[i].pattern)) {
            return &isp->rules[i];
        }
    }
    return NULL;
}
