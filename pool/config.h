/*
 * config - the operator's file: ISPs, their limits and reply rules, routes
 *
 * An INI file read with inih. Sections:
 *   [global]          retry, max_age, tls, backoff_step, backoff_interval,
 *                     backoff_threshold, backoff_window,
 *                     source = ADDR [WEIGHT] (repeatable)
 *   [isp NAME]        domains, mx (MX host patterns: MX rollup), max_connections,
 *                     max_msgs_per_conn, max_rcpts_per_msg, msg_rate, conn_rate,
 *                     tls, timeout, backoff_threshold, backoff_window (over
 *                     [global]'s), rule (repeatable)
 *   [isp NAME source ADDR]  max_connections, max_msgs_per_conn, msg_rate,
 *                     conn_rate for that source address only (a warming IP)
 *   [route DOMAIN]    server = HOST:PORT (overrides DNS for that domain; a
 *                     host name is looked up on the ring by the pool)
 *   [bounce]          rule = PATTERN => CATEGORY hard|soft (repeatable): the
 *                     bounce classifier's own rules, before its shipped
 *                     ones (bounce.h); PATTERN as in an [isp] rule
 *   [feedback]        return_path, secret_file (both required), unsubscribe_url,
 *                     complaint_pause, complaint_min_sample, complaint_window, soft_bounce_limit,
 *                     soft_bounce_window: bounces and unsubscribes come back
 *                     (VERP, campaign/feedback.h); without the section
 *                     nothing of it happens
 * A rule is "PATTERN => ACTION": PATTERN is matched, case-insensitively, as
 * a substring of "CODE ENHANCED TEXT" of a reply ("421 4.7.28", "TSS04");
 * ACTION is "backoff CUT PAUSE", "suspend DURATION" or "bounce". A backoff
 * rule cuts only when the share of matching replies over backoff_window
 * passes backoff_threshold (pool/throttle.h); a suspend rule acts at once.
 * An ISP named "default" takes every recipient no other ISP claims.
 * Errors carry the file's line number; a config with an error is refused
 * whole (on reload, the old one stays). Refused besides bad values: a line
 * longer than inih's buffer (199 characters) or with a NUL byte, a section
 * given twice, a setting given twice in one section (lists excepted:
 * source, domains, mx, rule add up), max_connections or max_msgs_per_conn
 * of 0, a rate of 0 ("msg_rate = 0 would send nothing; write 'unlimited'
 * or a rate such as 100/s") or below 0.001/s, a route server without a
 * port 1..65535.
 */
#ifndef RINGMAIL_CONFIG_H
#define RINGMAIL_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/buf.h"
#include "engine/smtp_client.h"
#include "pool/bounce.h"
#include "pool/retry.h"

#define CONFIG_NAME_MAX 64
#define CONFIG_LIST_MAX 32
#define CONFIG_RULES_MAX 32

enum config_action { CONFIG_ACTION_BACKOFF, CONFIG_ACTION_SUSPEND, CONFIG_ACTION_BOUNCE };

struct config_rule {
    char pattern[128];
    enum config_action action;
    double cut;        /* backoff: rate multiplier */
    uint64_t pause_ms; /* backoff and suspend */
};

#define CONFIG_SOURCES_MAX 64

/* [isp NAME source ADDR]: that source address's own limits with the ISP
 * (a warming IP); what it does not set comes from [isp NAME]. */
enum {
    CONFIG_LANE_MAX_CONNECTIONS = 1,
    CONFIG_LANE_MAX_MSGS_PER_CONN = 2,
    CONFIG_LANE_MSG_RATE = 4,
    CONFIG_LANE_CONN_RATE = 8,
};

#define CONFIG_RATE_TEXT_MAX 32

struct config_lane {
    char source[CONFIG_NAME_MAX]; /* numeric IPv4 or IPv6, as written */
    unsigned set;                 /* CONFIG_LANE_* bits */
    unsigned max_connections, max_msgs_per_conn;
    double msg_rate, conn_rate;
    char msg_rate_text[CONFIG_RATE_TEXT_MAX], conn_rate_text[CONFIG_RATE_TEXT_MAX]; /* as written */
};

struct config_isp {
    char name[CONFIG_NAME_MAX];
    char domains[CONFIG_LIST_MAX][CONFIG_NAME_MAX]; /* exact, or "*.example.com" */
    size_t ndomains;
    char mx[CONFIG_LIST_MAX][CONFIG_NAME_MAX]; /* glob patterns on MX host names */
    size_t nmx;
    unsigned max_connections;   /* 0 = unlimited */
    unsigned max_msgs_per_conn; /* 0 = unlimited */
    unsigned max_rcpts_per_msg; /* RCPTs per transaction for messages that share a body; 0: 50 */
    double msg_rate;            /* per second, < 0 unlimited */
    double conn_rate;
    /* the rates as written ("20000/h"); "" when not given (unlimited) */
    char msg_rate_text[CONFIG_RATE_TEXT_MAX], conn_rate_text[CONFIG_RATE_TEXT_MAX];
    enum smtp_tls_policy tls;
    uint64_t timeout_ms;
    double backoff_threshold;   /* a fraction; < 0: [global]'s */
    uint64_t backoff_window_ms; /* 0: [global]'s */
    int mta_sts;                /* -1: [global]'s; 0 off; 1 on (config_mta_sts) */
    int dane;                   /* -1 or 1: on when [global] dnssec_resolver is set; 0 off */
    int cluster_limits; /* -1: [global]'s; 0 each node its own; 1 shared (config_cluster_limits) */
    struct config_rule rules[CONFIG_RULES_MAX];
    size_t nrules;
    struct config_lane lanes[CONFIG_SOURCES_MAX];
    size_t nlanes;
};

struct config_route {
    char domain[CONFIG_NAME_MAX];
    char server[CONFIG_NAME_MAX];
};

struct config_source {
    char addr[CONFIG_NAME_MAX]; /* numeric IPv4 or IPv6 */
    unsigned weight;            /* share of new connections, >= 1 */
};

/* [bounce]: the operator's classification rules, in file order. */
struct config_bounce {
    struct bounce_rules rules;
};

#define CONFIG_SECRET_MIN 32
#define CONFIG_SECRET_MAX 1024
#define CONFIG_DOMAIN_MAX 200 /* b-TOKEN (54) + '@' + the domain fits in 254 */
#define CONFIG_URL_MAX 400

/* [feedback]. The secret is read when the config is loaded: a missing,
 * short or group/other-accessible secret_file refuses the whole config. */
struct config_feedback {
    int enabled;                         /* a [feedback] section was given */
    char return_path[CONFIG_DOMAIN_MAX]; /* MAIL FROM b-TOKEN@return_path */
    char secret_file[512];
    uint8_t secret[CONFIG_SECRET_MAX]; /* every byte of secret_file */
    size_t secret_len;
    char unsubscribe_url[CONFIG_URL_MAX]; /* "": none; else https://HOST/PATH, no '/' at the end */
    double complaint_pause;               /* a fraction: 0.002 for "0.2%" */
    unsigned complaint_min_sample;        /* delivered messages before the rate counts */
    uint64_t complaint_window_ms;         /* the sliding window of the rate (default 24 h) */
    unsigned soft_bounce_limit;           /* soft bounces within the window that suppress */
    uint64_t soft_bounce_window_ms;
};

struct config {
    struct retry_schedule retry;
    enum smtp_tls_policy tls; /* the default for ISPs that set none */
    /* Destination TLS policy (pool/tlspolicy.h): MTA-STS on (default) or
     * off; dnssec_resolver "ADDR:PORT" a validating resolver whose AD bit is
     * trusted ("" none: DANE off). */
    int mta_sts;
    char dnssec_resolver[CONFIG_NAME_MAX];
    /* Many nodes, one cluster (campaign/send_cluster.c): an ISP's limits
     * are the cluster's, shared among the live nodes sending to it (on,
     * the default) or each node's own (off); the nodes beat every
     * cluster_heartbeat_ms. */
    int cluster_limits;
    uint64_t cluster_heartbeat_ms;
    double backoff_step;
    uint64_t backoff_interval_ms;
    double backoff_threshold;   /* share of matching replies that cuts (0.05); 0: any */
    uint64_t backoff_window_ms; /* the window that share is measured over (30 s) */
    struct config_isp *isps;    /* owned; isps[nisps-1] may be "default" */
    size_t nisps;
    struct config_route *routes; /* owned */
    size_t nroutes;
    struct config_source sources[CONFIG_SOURCES_MAX]; /* none: the kernel picks */
    size_t nsources;
    struct config_bounce bounce;
    struct config_feedback feedback;
    /* What this config changed over the one it replaced in a pool
     * (pool_reload): config_diff's lines, owned; NULL and 0 before a reload. */
    char *changes;
    int nchanges;
};

/* Load path; NULL and "LINE: reason" in err on error. */
struct config *config_load(const char *path, char *err, size_t errlen);
void config_free(struct config *c);
/* The ISP of a recipient domain, else of its first MX host matching a
 * pattern, else "default" (NULL if the file has none). mx may be NULL. */
const struct config_isp *config_isp_for(const struct config *c, const char *domain,
                                        const char *const *mx, size_t nmx);
/* Two numeric addresses are the same (as binary: "::1" is "0::1"). */
int config_address_equal(const char *a, const char *b);
/* isp's own limits for source address addr ([isp NAME source ADDR]), or NULL. */
const struct config_lane *config_lane_for(const struct config_isp *isp, const char *addr);
/* isp's backoff settings: its own, else [global]'s (isp may be NULL). */
double config_backoff_threshold(const struct config *c, const struct config_isp *isp);
uint64_t config_backoff_window_ms(const struct config *c, const struct config_isp *isp);
/* config_defaults - what a config without a file has (config_load starts from it) */
void config_defaults(struct config *c);
/* config_rule_text - r as written: "421 4.7.28 => backoff 0.5 10m" */
void config_rule_text(const struct config_rule *r, char *out, size_t outlen);
/* config_duration_text - ms as a config writes it: "10m", "1h", "1500ms" */
void config_duration_text(uint64_t ms, char *out, size_t outlen);
/* config_rate_text - per second as a config writes it: "100/s", "20/h", "unlimited" */
void config_rate_text(double per_sec, char *out, size_t outlen);
/* config_diff - one line per setting that differs from old to new, into out
 * ("isp gmail: msg_rate 100/s -> 50/s", "isp yahoo: added", "global: retry
 * 5m,15m -> 1m,5m"); returns how many */
int config_diff(const struct config *old, const struct config *new, buf_t *out);
/* config_reload_say - "ringmail send: config reloaded from PATH: N changes"
 * and c->changes, one indented line each (or ": no changes") on f */
void config_reload_say(FILE *f, const char *path, const struct config *c);
/* The first rule of isp whose pattern matches the reply, or NULL. */
const struct config_rule *config_rule_match(const struct config_isp *isp, int code,
                                            const char *enhanced, const char *text);

/* Whether MTA-STS applies to isp's destinations (NULL: [global]'s). */
int config_mta_sts(const struct config *c, const struct config_isp *isp);
/* Whether isp's limits are shared by the cluster's nodes: its own
 * cluster_limits, else [global]'s. */
int config_cluster_limits(const struct config *c, const struct config_isp *isp);
/* Whether DANE applies to isp's destinations: a dnssec_resolver is set and
 * the ISP did not turn it off. */
int config_dane(const struct config *c, const struct config_isp *isp);

#endif
