/*
 * config_feedback - the config sections of the feedback loop: [bounce]
 * (the operator's bounce classification rules) and [feedback] (VERP
 * return path, its secret, one-click unsubscribe, complaint and soft
 * bounce limits). See config.h for the keys, config_int.h for the seam.
 */
#include "pool/config_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ctype.h>

#include "engine/num.h"
#include "pool/throttle.h"

/* "PATTERN => CATEGORY hard|soft": a [bounce] rule, PATTERN as in an [isp] rule. */
static int config_bounce_rule_parse(struct config_parse *p, const char *v)
{
    struct bounce_rules *rules = &p->c->bounce.rules;
    const char *arrow = strstr(v, "=>");
    if (!arrow) {
        return config_fail(p, "bounce rule '%s': no '=>'; want 'PATTERN => CATEGORY hard|soft'%s",
                           v, "");
    }
    if (rules->n == BOUNCE_RULES_MAX) {
        return config_fail(p, "too many bounce rules (the limit is 64)%s%s", "", "");
    }
    struct bounce_rule *r = &rules->rule[rules->n];
    size_t plen = (size_t)(arrow - v);
    while (plen > 0 && (v[plen - 1] == ' ' || v[plen - 1] == '\t')) {
        plen--;
    }
    if (plen == 0 || plen >= sizeof r->pattern) {
        return config_fail(p, "bounce rule '%s': empty or too long pattern%s", v, "");
    }
    char category[32] = "", kind[16] = "", extra[16] = "";
    int n = sscanf(arrow + 2, "%31s %15s %15s", category, kind, extra);
    if (n < 1) {
        return config_fail(p, "bounce rule '%s': no category after '=>'%s", v, "");
    }
    if (bounce_category_parse(category, &r->category) != 0) {
        return config_fail(p,
                           "bounce rule: unknown category '%s' (want bad-mailbox, bad-domain, "
                           "inactive-mailbox, quota-issues, policy-related, spam-related, "
                           "content-related, routing-errors, protocol-errors, message-expired or "
                           "other)%s",
                           category, "");
    }
    if (n < 2 || (strcmp(kind, "hard") != 0 && strcmp(kind, "soft") != 0)) {
        return config_fail(p, "bounce rule '%s': want 'hard' or 'soft' after the category%s", v,
                           "");
    }
    if (n > 2) {
        return config_fail(p, "bounce rule '%s': '%s' after hard|soft", v, extra);
    }
    memcpy(r->pattern, v, plen);
    r->pattern[plen] = '\0';
    r->kind = kind[0] == 'h' ? BOUNCE_HARD : BOUNCE_SOFT;
    rules->n++;
    return 1;
}

/* [bounce] */
int config_bounce_entry(struct config_parse *p, const char *name, const char *v)
{
    if (strcmp(name, "rule") == 0) {
        return config_bounce_rule_parse(p, v);
    }
    return config_fail(p, "unknown setting '%s' in [bounce]; it takes 'rule'%s", name, "");
}

/* ---------------------------------------------------------------- [feedback] */

void config_feedback_defaults(struct config_feedback *f)
{
    f->complaint_pause = 0.002;
    f->complaint_min_sample = 1000;
    f->complaint_window_ms = 86400000ull;
    f->soft_bounce_limit = 3;
    f->soft_bounce_window_ms = 7 * 86400000ull;
}

/* config_secret_read - path's bytes into f->secret; -1 with why. The mode
 * is checked before a byte is read: a key others could read is no secret. */
static int config_secret_read(struct config_feedback *f, const char *path, char *why, size_t whylen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(why, whylen, "feedback secret_file %s: cannot read: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "feedback secret_file %s: not a regular file", path);
    } else if (st.st_mode & 066) {
        snprintf(why, whylen,
                 "feedback secret_file %s is readable or writable by group or others (mode "
                 "0%03o): chmod 600 it",
                 path, (unsigned)(st.st_mode & 0777));
    } else {
        why[0] = '\0';
    }
    size_t n = 0;
    ssize_t got = 1;
    while (!why[0] && got > 0 && n < sizeof f->secret) {
        got = read(fd, f->secret + n, sizeof f->secret - n);
        n += got > 0 ? (size_t)got : 0;
    }
    char extra;
    if (!why[0] && got < 0) {
        snprintf(why, whylen, "feedback secret_file %s: cannot read: %s", path, strerror(errno));
    } else if (!why[0] && n == sizeof f->secret && read(fd, &extra, 1) == 1) {
        snprintf(why, whylen, "feedback secret_file %s is over %d bytes: 32 random bytes will do",
                 path, CONFIG_SECRET_MAX);
    } else if (!why[0] && n < CONFIG_SECRET_MIN) {
        snprintf(why, whylen, "feedback secret_file %s is %zu bytes: at least %d are needed", path,
                 n, CONFIG_SECRET_MIN);
    }
    close(fd);
    f->secret_len = why[0] ? 0 : n;
    return why[0] ? -1 : 0;
}

/* config_domain_ok - a host name of two or more labels (letters, digits,
 * '-' inside), as a return path's domain must be to be routed back here */
static int config_domain_ok(const char *d)
{
    size_t label = 0, labels = 1;
    for (const char *p = d;; p++) {
        if (*p == '.' || *p == '\0') {
            if (label == 0 || label > 63 || p[-1] == '-' || p[-(ptrdiff_t)label] == '-') {
                return 0;
            }
            if (*p == '\0') {
                return labels >= 2;
            }
            labels++;
            label = 0;
        } else if (isalnum((unsigned char)*p) || *p == '-') {
            label++;
        } else {
            return 0;
        }
    }
}

/* config_unsubscribe_url - https://HOST[/PATH] (http:// for a loopback host,
 * to test with) that /TOKEN can be appended to; stored without a final '/' */
static int config_unsubscribe_url(struct config_parse *p, const char *v)
{
    struct config_feedback *f = &p->c->feedback;
    int tls = strncasecmp(v, "https://", 8) == 0;
    const char *host = v + (tls ? 8 : 7);
    size_t hostlen = strcspn(host, "/");
    int loopback =
        (hostlen >= 9 && strncasecmp(host, "localhost", 9) == 0 &&
         (hostlen == 9 || host[9] == ':')) ||
        (hostlen >= 9 && strncmp(host, "127.0.0.1", 9) == 0 && (hostlen == 9 || host[9] == ':')) ||
        (hostlen >= 5 && strncmp(host, "[::1]", 5) == 0);
    if (!tls && !(strncasecmp(v, "http://", 7) == 0 && loopback)) {
        return config_fail(p,
                           "unsubscribe_url: '%s' must start with https:// (http:// only for "
                           "127.0.0.1, [::1] or localhost, to test with)%s",
                           v, "");
    }
    if (hostlen == 0) {
        return config_fail(p, "unsubscribe_url: '%s' has no host%s", v, "");
    }
    for (const char *c = v; *c; c++) {
        if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f || strchr("<>\"?#\\{}", *c)) {
            return config_fail(p,
                               "unsubscribe_url: '%s' has a space, a control or non-ASCII octet, "
                               "or one of <>\"?#\\{} (/TOKEN is appended to it)%s",
                               v, "");
        }
    }
    size_t n = strlen(v);
    while (n > 0 && v[n - 1] == '/') {
        n--;
    }
    if (n >= sizeof f->unsubscribe_url) {
        return config_fail(p, "unsubscribe_url: '%s' is longer than %s octets", v, "399");
    }
    memcpy(f->unsubscribe_url, v, n);
    f->unsubscribe_url[n] = '\0';
    return 1;
}

/* config_percent - "0.2%" as 0.002: above 0, at most 100% */
static int config_percent(const char *v, double *out)
{
    char *end;
    double x = strtod(v, &end);
    if (end == v || strcmp(end, "%") != 0 || !(x > 0 && x <= 100)) {
        return -1;
    }
    *out = x / 100;
    return 0;
}

int config_feedback_entry(struct config_parse *p, const char *name, const char *v)
{
    struct config_feedback *f = &p->c->feedback;
    char why[256];
    unsigned long n;
    if (strcmp(name, "return_path") == 0) {
        /* A config line is at most 199 characters, so the domain fits
         * return_path (and b-TOKEN@DOMAIN 254); the length check is a guard. */
        if (strlen(v) >= sizeof f->return_path || !config_domain_ok(v)) {
            return config_fail(
                p,
                "return_path: '%.100s' is not a domain name (labels of letters, digits "
                "and '-', like bounces.example.com)%s",
                v, "");
        }
        for (size_t i = 0; v[i]; i++) {
            f->return_path[i] = (char)tolower((unsigned char)v[i]);
        }
        return 1;
    }
    if (strcmp(name, "secret_file") == 0) {
        snprintf(f->secret_file, sizeof f->secret_file, "%s", v);
        return config_secret_read(f, v, why, sizeof why) == 0 ? 1 : config_fail(p, "%s%s", why, "");
    }
    if (strcmp(name, "unsubscribe_url") == 0) {
        return config_unsubscribe_url(p, v);
    }
    if (strcmp(name, "complaint_pause") == 0) {
        return config_percent(v, &f->complaint_pause) == 0
                   ? 1
                   : config_fail(p,
                                 "complaint_pause: '%s' is not a percentage above 0 and at most "
                                 "100, like 0.2%%%s",
                                 v, "");
    }
    if (strcmp(name, "complaint_min_sample") == 0) {
        if (num_parse_ulong(v, 1, 1000000000, &n) != 0) {
            return config_fail(p, "complaint_min_sample: '%s' is not a number 1..1000000000%s", v,
                               "");
        }
        f->complaint_min_sample = (unsigned)n;
        return 1;
    }
    if (strcmp(name, "soft_bounce_limit") == 0) {
        if (num_parse_ulong(v, 1, 1000, &n) != 0) {
            return config_fail(p, "soft_bounce_limit: '%s' is not a number 1..1000%s", v, "");
        }
        f->soft_bounce_limit = (unsigned)n;
        return 1;
    }
    if (strcmp(name, "complaint_window") == 0) {
        if (throttle_duration_parse(v, &f->complaint_window_ms, why, sizeof why) != 0) {
            return config_fail(p, "complaint_window: %.200s%s", why, "");
        }
        return f->complaint_window_ms > 0
                   ? 1
                   : config_fail(p, "complaint_window: '%s' must be longer than 0%s", v, "");
    }
    if (strcmp(name, "soft_bounce_window") == 0) {
        if (throttle_duration_parse(v, &f->soft_bounce_window_ms, why, sizeof why) != 0) {
            return config_fail(p, "soft_bounce_window: %.200s%s", why, "");
        }
        return f->soft_bounce_window_ms > 0
                   ? 1
                   : config_fail(p, "soft_bounce_window: '%s' must be longer than 0%s", v, "");
    }
    return config_fail(p, "unknown setting '%s' in [feedback]%s", name, "");
}

/* config_feedback_finish - a [feedback] section (even an empty one) turns
 * feedback on, and then needs both of its required keys */
void config_feedback_finish(struct config_parse *p)
{
    struct config_feedback *f = &p->c->feedback;
    for (size_t i = 0; i < p->nsections; i++) {
        if (strcmp(p->sections[i].name, "feedback") == 0) {
            f->enabled = 1;
            p->lineno = p->sections[i].line;
        }
    }
    if (f->enabled && (!f->return_path[0] || !f->secret_len)) {
        config_fail(p, "[feedback] needs return_path and secret_file%s%s", "", "");
    }
}
