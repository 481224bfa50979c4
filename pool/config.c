/*
 * config - the operator's file. See config.h.
 *
 * inih calls config_on_entry once per "name = value" line, reading lines
 * through config_read_line, which counts them, so every error knows its
 * line. The reader refuses what inih would get wrong (a line longer than
 * its buffer, which it splits and reports at a later line; a NUL byte) and
 * duplicate sections; the handler refuses a setting given twice in one
 * section unless it is a list (source, domains, mx, rule). The first error
 * stops the reading.
 */
#include "pool/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/num.h"
#include "pool/config_int.h"
#include "pool/throttle.h"

/* The slowest rate accepted: below it a bucket would hold a message for
 * hours (1e-300/s sends its burst, then never again). */
#define CONFIG_RATE_MIN 0.001

/* Only the first error counts: inih goes on after a refused line. */
int config_fail(struct config_parse *p, const char *fmt, const char *a, const char *b)
{
    if (!p->err_line) {
        snprintf(p->err, sizeof p->err, fmt, a, b);
        p->err_line = p->lineno;
    }
    return 0;
}

/* name seen before in list (its line), else added (0); -1 out of memory. */
static int config_seen_add(struct config_seen **list, size_t *n, const char *name, int line)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp((*list)[i].name, name) == 0) {
            return (*list)[i].line;
        }
    }
    struct config_seen *v = realloc(*list, (*n + 1) * sizeof *v);
    char *copy = strdup(name);
    if (v) {
        *list = v;
    }
    if (!v || !copy) {
        free(copy);
        return -1;
    }
    v[(*n)++] = (struct config_seen){copy, line};
    return 0;
}

static void config_seen_clear(struct config_seen **list, size_t *n)
{
    for (size_t i = 0; i < *n; i++) {
        free((*list)[i].name);
    }
    free(*list);
    *list = NULL;
    *n = 0;
}

/* "[NAME]" at the start of s (after blanks): NAME as inih takes it, else NULL. */
static char *config_section_name(char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    char *end = *s == '[' ? strchr(s, ']') : NULL;
    if (!end) {
        return NULL;
    }
    *end = '\0';
    return s + 1;
}

static char *config_read_fail(struct config_parse *p, const char *why)
{
    config_fail(p, "%s%s", why, "");
    return NULL;
}

/* inih's reader: one line into str (num bytes), counted; NULL ends the
 * parse (the end of the file, or an error in p->err). */
static char *config_read_line(char *str, int num, void *stream)
{
    struct config_parse *p = stream;
    ssize_t len = p->err_line ? -1 : getline(&p->line, &p->line_cap, p->f);
    if (len < 0) {
        return NULL;
    }
    p->lineno++;
    size_t n = (size_t)len;
    if (memchr(p->line, '\0', n)) {
        return config_read_fail(p, "a NUL byte in the line");
    }
    while (n > 0 && (p->line[n - 1] == '\n' || p->line[n - 1] == '\r')) {
        p->line[--n] = '\0';
    }
    if (num < 2 || n >= (size_t)num) {
        char why[120];
        snprintf(why, sizeof why,
                 "line longer than %d characters (split a long domains or mx list over several "
                 "lines)",
                 num - 1);
        return config_read_fail(p, why);
    }
    memcpy(str, p->line, n + 1);
    char *section = config_section_name(p->line);
    int first = section ? config_seen_add(&p->sections, &p->nsections, section, p->lineno) : 0;
    if (first < 0) {
        return config_read_fail(p, "out of memory");
    }
    if (first > 0) {
        char why[160];
        snprintf(why, sizeof why, "duplicate section [%.100s] (first at line %d)", section, first);
        return config_read_fail(p, why);
    }
    return str;
}

/* Lists may be given again and add up; any other setting only once per section. */
static int config_key_once(struct config_parse *p, const char *section, const char *name)
{
    static const char *const lists[] = {"source", "domains", "mx", "rule"};
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++) {
        if (strcmp(name, lists[i]) == 0) {
            return 1;
        }
    }
    if (!p->key_section || strcmp(p->key_section, section) != 0) {
        config_seen_clear(&p->keys, &p->nkeys);
        free(p->key_section);
        p->key_section = strdup(section);
    }
    int first = config_seen_add(&p->keys, &p->nkeys, name, p->lineno);
    if (first < 0 || !p->key_section) {
        return config_fail(p, "out of memory%s%s", "", "");
    }
    if (first > 0) {
        char why[256];
        snprintf(why, sizeof why, "duplicate setting '%.60s' in [%.100s] (first at line %d)", name,
                 section, first);
        return config_fail(p, "%s%s", why, "");
    }
    return 1;
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

/* A rate: unlimited, or at least CONFIG_RATE_MIN per second. */
static int config_rate(struct config_parse *p, const char *name, const char *v, double *rate,
                       char text[CONFIG_RATE_TEXT_MAX])
{
    char err[200];
    char *end;
    double zero = strtod(v, &end);
    if (end != v && zero == 0 && (*end == '\0' || *end == '/')) {
        /* 0 once meant unlimited, the opposite of what it says: neither is taken. */
        return config_fail(p,
                           strcmp(name, "conn_rate") == 0
                               ? "%s = %s would open no connection; write 'unlimited' or a rate "
                                 "such as 10/s"
                               : "%s = %s would send nothing; write 'unlimited' or a rate such as "
                                 "100/s",
                           name, v);
    }
    if (throttle_rate_parse(v, rate, err, sizeof err) != 0) {
        return config_fail(p, "%s%s", err, "");
    }
    if (*rate >= 0 && *rate < CONFIG_RATE_MIN) {
        return config_fail(p,
                           "%s: '%s' is below the slowest rate accepted, 0.001/s (3.6/h); "
                           "'unlimited' for no limit",
                           name, v);
    }
    snprintf(text, CONFIG_RATE_TEXT_MAX, "%s", v);
    return 1;
}

/* backoff_threshold: "5%" (0% .. under 100%; 0%: any matching reply cuts) */
static int config_threshold(struct config_parse *p, const char *v, double *out)
{
    char *end;
    double x = strtod(v, &end);
    if (end == v || strcmp(end, "%") != 0 || !(x >= 0 && x < 100)) {
        return config_fail(p,
                           "backoff_threshold: '%s' is not a percentage from 0%% up to 100%%, "
                           "like 5%%%s",
                           v, "");
    }
    *out = x / 100;
    return 1;
}

/* backoff_window: a duration of 1 s .. 1 day */
static int config_window(struct config_parse *p, const char *v, uint64_t *out)
{
    char err[200];
    uint64_t ms;
    if (throttle_duration_parse(v, &ms, err, sizeof err) != 0) {
        return config_fail(p, "%s%s", err, "");
    }
    if (ms < 1000 || ms > 86400000) {
        return config_fail(p, "backoff_window: '%s' is not 1s .. 1d%s", v, "");
    }
    *out = ms;
    return 1;
}

/* "on" 1, "off" 0, else -1 */
static int config_on_off(const char *v)
{
    return strcmp(v, "on") == 0 ? 1 : strcmp(v, "off") == 0 ? 0 : -1;
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
            if (*counts[i] == 0 && counts[i] != &isp->max_rcpts_per_msg) {
                return config_fail(p, "%s: '%s' must be at least 1 (leave it out for no limit)",
                                   name, v);
            }
            if (counts[i] == &isp->max_rcpts_per_msg && (*counts[i] < 1 || *counts[i] > 1000)) {
                return config_fail(p, "%s: '%s' is not 1..1000", name, v);
            }
            return 1;
        }
    }
    if (strcmp(name, "msg_rate") == 0 || strcmp(name, "conn_rate") == 0) {
        int msgs = name[0] == 'm';
        return config_rate(p, name, v, msgs ? &isp->msg_rate : &isp->conn_rate,
                           msgs ? isp->msg_rate_text : isp->conn_rate_text);
    }
    if (strcmp(name, "mta_sts") == 0 || strcmp(name, "dane") == 0 ||
        strcmp(name, "cluster_limits") == 0) {
        int on = config_on_off(v);
        if (on < 0) {
            return config_fail(p, "%s: '%s' is not on or off", name, v);
        }
        *(name[0] == 'm' ? &isp->mta_sts : name[0] == 'd' ? &isp->dane : &isp->cluster_limits) = on;
        return 1;
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
    if (strcmp(name, "backoff_threshold") == 0) {
        return config_threshold(p, v, &isp->backoff_threshold);
    }
    if (strcmp(name, "backoff_window") == 0) {
        return config_window(p, v, &isp->backoff_window_ms);
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
    isp->backoff_threshold = -1; /* [global]'s */
    isp->mta_sts = isp->dane = isp->cluster_limits = -1;
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
    if (strcmp(name, "mta_sts") == 0) {
        int on = config_on_off(v);
        if (on < 0) {
            return config_fail(p, "mta_sts: '%s' is not on or off%s", v, "");
        }
        c->mta_sts = on;
        return 1;
    }
    if (strcmp(name, "cluster_limits") == 0) {
        int on = config_on_off(v);
        if (on < 0) {
            return config_fail(p, "cluster_limits: '%s' is not on or off%s", v, "");
        }
        c->cluster_limits = on;
        return 1;
    }
    if (strcmp(name, "cluster_heartbeat") == 0) {
        uint64_t ms = 0;
        if (throttle_duration_parse(v, &ms, err, sizeof err) != 0 || ms < 200 || ms > 60000) {
            return config_fail(p, "cluster_heartbeat: '%s' is not a duration from 200ms to 60s%s",
                               v, "");
        }
        c->cluster_heartbeat_ms = ms;
        return 1;
    }
    if (strcmp(name, "dnssec_resolver") == 0) {
        const char *colon = strrchr(v, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || colon == v || !end || *end || port < 1 || port > 65535 ||
            strlen(v) >= sizeof c->dnssec_resolver) {
            return config_fail(p,
                               "dnssec_resolver: '%s' is not ADDR:PORT (a validating "
                               "resolver, e.g. 127.0.0.1:53)%s",
                               v, "");
        }
        snprintf(c->dnssec_resolver, sizeof c->dnssec_resolver, "%s", v);
        return 1;
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
    if (strcmp(name, "backoff_threshold") == 0) {
        return config_threshold(p, v, &c->backoff_threshold);
    }
    if (strcmp(name, "backoff_window") == 0) {
        return config_window(p, v, &c->backoff_window_ms);
    }
    if (strcmp(name, "source") == 0) {
        return config_source_entry(p, v);
    }
    return config_fail(p, "unknown setting '%s' in [global]%s", name, "");
}

/* NULL when s is HOST:PORT or [V6ADDR]:PORT with a port 1..65535, else why not.
 * The host is resolved when the route is used, not here. */
static const char *config_server_problem(const char *s)
{
    const char *colon = s[0] == '[' ? strstr(s, "]:") : strrchr(s, ':');
    if (!colon || colon == s || (s[0] == '[' && colon == s + 1)) {
        return "want HOST:PORT or [IPV6]:PORT";
    }
    const char *port = colon + (s[0] == '[' ? 2 : 1);
    if (s[0] != '[' && memchr(s, ':', (size_t)(colon - s))) {
        return "an IPv6 address goes in brackets: [IPV6]:PORT";
    }
    unsigned long n = 0;
    for (const char *d = port; *d; d++) {
        if (*d < '0' || *d > '9' || (n = n * 10 + (unsigned long)(*d - '0')) > 65535) {
            return "the port must be a number 1..65535";
        }
    }
    return *port && n >= 1 ? NULL : "the port must be a number 1..65535";
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
    const char *why = config_server_problem(v);
    if (why) {
        return config_fail(p, "server '%s': %s", v, why);
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
    if (l && strcmp(l->source, addr) != 0) {
        return config_fail(p, "duplicate section: %s is the same address as %s", addr, l->source);
    }
    if (!l) {
        if (isp->nlanes == CONFIG_SOURCES_MAX) {
            return config_fail(p, "too many [isp %s source ...] sections (the limit is 64)%s",
                               isp_name, "");
        }
        l = &isp->lanes[isp->nlanes++];
        memset(l, 0, sizeof *l);
        snprintf(l->source, sizeof l->source, "%s", addr);
    }
    if (strcmp(name, "max_connections") == 0 || strcmp(name, "max_msgs_per_conn") == 0) {
        int conns = name[4] == 'c';
        unsigned *count = conns ? &l->max_connections : &l->max_msgs_per_conn;
        if (config_unsigned(v, count) != 0) {
            return config_fail(p, "%s: not a number: '%s'", name, v);
        }
        if (*count == 0) {
            return config_fail(p, "%s: '%s' must be at least 1", name, v);
        }
        l->set |= conns ? CONFIG_LANE_MAX_CONNECTIONS : CONFIG_LANE_MAX_MSGS_PER_CONN;
        return 1;
    }
    if (strcmp(name, "msg_rate") == 0 || strcmp(name, "conn_rate") == 0) {
        int msgs = name[0] == 'm';
        if (!config_rate(p, name, v, msgs ? &l->msg_rate : &l->conn_rate,
                         msgs ? l->msg_rate_text : l->conn_rate_text)) {
            return 0;
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
    if (!config_key_once(p, section, name)) {
        return 0;
    }
    if (strcmp(section, "global") == 0) {
        return config_global_entry(p, name, value);
    }
    if (strcmp(section, "bounce") == 0) {
        return config_bounce_entry(p, name, value);
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
    if (strcmp(section, "feedback") == 0) {
        return config_feedback_entry(p, name, value);
    }
    return config_fail(p,
                       "unknown section [%s]; want [global], [isp NAME], [isp NAME source ADDR], "
                       "[route DOMAIN], [feedback] or [bounce]%s",
                       section, "");
}

void config_defaults(struct config *c)
{
    retry_schedule_init(&c->retry);
    c->tls = SMTP_TLS_REQUIRED;
    c->mta_sts = 1;
    c->cluster_limits = 1;
    c->cluster_heartbeat_ms = 1000;
    c->backoff_step = 0.1;
    c->backoff_interval_ms = 60000;
    c->backoff_threshold = 0.05;
    c->backoff_window_ms = 30000;
    config_feedback_defaults(&c->feedback);
}

double config_backoff_threshold(const struct config *c, const struct config_isp *isp)
{
    return isp && isp->backoff_threshold >= 0 ? isp->backoff_threshold : c->backoff_threshold;
}

int config_mta_sts(const struct config *c, const struct config_isp *isp)
{
    return isp && isp->mta_sts >= 0 ? isp->mta_sts : c->mta_sts;
}

int config_cluster_limits(const struct config *c, const struct config_isp *isp)
{
    return isp && isp->cluster_limits >= 0 ? isp->cluster_limits : c->cluster_limits;
}

int config_dane(const struct config *c, const struct config_isp *isp)
{
    return c->dnssec_resolver[0] && !(isp && isp->dane == 0);
}

uint64_t config_backoff_window_ms(const struct config *c, const struct config_isp *isp)
{
    return isp && isp->backoff_window_ms ? isp->backoff_window_ms : c->backoff_window_ms;
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
    struct config *c = calloc(1, sizeof *c);
    struct config_parse p = {.c = c};
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    config_defaults(c);
    int rc = -1;
    p.f = fopen(path, "r");
    if (p.f) {
        rc = ini_parse_stream(config_read_line, &p, config_on_entry, &p);
        rc = ferror(p.f) ? -1 : rc;
        fclose(p.f);
    }
    if (rc == 0) {
        config_feedback_finish(&p);
    }
    if (rc < 0) {
        snprintf(err, errlen, "%s: cannot read the file", path);
    } else if (rc > 0 && (!p.err_line || rc < p.err_line)) {
        /* inih's own refusal comes with its line, and no reason of ours. */
        snprintf(err, errlen, "%s:%d: syntax error (want 'NAME = VALUE' or '[SECTION]')", path, rc);
    } else if (p.err_line) {
        snprintf(err, errlen, "%s:%d: %s", path, p.err_line, p.err);
    }
    int ok = rc == 0 && !p.err_line;
    for (size_t i = 0; ok && i < c->nisps; i++) {
        if (!p.tls_set[i]) {
            c->isps[i].tls = c->tls;
        }
    }
    free(p.tls_set);
    free(p.line);
    free(p.key_section);
    config_seen_clear(&p.sections, &p.nsections);
    config_seen_clear(&p.keys, &p.nkeys);
    if (!ok) {
        config_free(c);
        return NULL;
    }
    return c;
}

void config_free(struct config *c)
{
    if (c) {
        free(c->isps);
        free(c->routes);
        free(c->changes);
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
