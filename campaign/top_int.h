/*
 * top_int - what campaign/top*.c share: the options, the per-ISP rows and
 * the snapshot one refresh builds.
 *
 *   top.c          options, the refresh loop, the terminal (raw mode, signals)
 *   top_db.c       the three statements of a refresh and the delivery windows
 *   top_metrics.c  scraping senders' /metrics (Prometheus text)
 *   top_view.c     the screen, the text snapshot and the JSON document
 *
 * Diagnostics: nothing here prints. A refresh that fails says why in err
 * (the database's message, one line); an endpoint that does not answer and
 * a lost database become problem lines of the view (top_problem), shown
 * above the table and in the JSON document's "problems".
 */
#ifndef RINGMAIL_TOP_INT_H
#define RINGMAIL_TOP_INT_H

#include <stddef.h>

#include <jansson.h>

#include "campaign/pq.h"
#include "engine/buf.h"
#include "pool/config.h"

/* The windows, in whole seconds of the database's clock: the rate is the
 * attempts of the last TOP_RATE_S seconds, the deferral share that of the
 * last TOP_DEFER_S seconds. A delivery row TOP_SETTLE_S seconds old is read
 * once more and then kept in memory (top_db.c). */
#define TOP_RATE_S 60
#define TOP_DEFER_S 300
#define TOP_SETTLE_S 120

/* The name of recipients not tried yet whose ISP is not known (no --config,
 * or a domain that only its MX hosts could place). */
#define TOP_UNROUTED "(not yet routed)"
/* The name of delivery rows without an ISP (failed before any routing). */
#define TOP_NO_ISP "(none)"

#define TOP_PROBLEMS_MAX 8

enum top_sort { TOP_SORT_QUEUED, TOP_SORT_RATE, TOP_SORT_DEFERRALS };

struct top_options {
    const char *url;
    const char *campaign; /* NULL: the active campaigns */
    const char *config_path;
    const char **metrics; /* HOST:PORT each */
    size_t nmetrics;
    unsigned interval_ms;
    int once;
    int json;
    enum top_sort sort;
};

/* The most recent deferral, rejection, expiry or failure of an ISP. */
struct top_err {
    long long id; /* delivery row; 0: none */
    char at[32];  /* ISO 8601 UTC */
    char outcome[16];
    int code; /* 0: none */
    char enhanced[16];
    char text[400];
    char reason[64];
};

/* Attempts of one second (epoch second sec). */
struct top_slot {
    long long sec;
    unsigned answered, deferred;
};

struct top_isp {
    char *name;
    int in_config;    /* cfg_limit is known */
    double cfg_limit; /* messages/s over its lanes, < 0 unlimited */
    /* recipients, this refresh */
    long long due, waiting, in_flight;
    double oldest_s; /* < 0: nothing waiting */
    /* delivery rows: kept ones (top_db.c) and this refresh's windows */
    struct top_slot kept[TOP_DEFER_S];
    struct top_err kept_err;
    long long answered_1m, final_1m, answered_5m, deferred_5m;
    struct top_err err;
    /* the senders' /metrics, summed over the endpoints that name the ISP */
    int m_seen;
    double m_backoff; /* lowest factor */
    double m_limit;   /* sum; < 0 when one is unlimited */
    int m_paused, m_held;
    double m_conns, m_queue;
    /* ringmail.isp_suspend in force, ringmail.isp_hold in force */
    int suspended;
    char suspend_until[32];
    double suspend_left_s;
    char *suspend_reason;
    int held;
    char hold_since[32];
    char *hold_reason;
};

struct top_campaign {
    long long id;
    char *name, *status;
};

struct top_node {
    char *name, *host;
    long long campaign_id; /* 0: none */
    int pid;
    double heartbeat_age_s;
};

struct top {
    struct top_options o;
    struct config *config; /* --config, or NULL */
    PGconn *db;
    /* per ISP, kept across refreshes (the kept delivery slots) */
    struct top_isp *isps;
    size_t nisps, capisps;
    long long kept_id; /* delivery rows with id <= kept_id are in kept[] */
    char *kept_for;    /* the campaign set they were read for ("{1,2}") */
    /* the snapshot */
    int ok; /* the database answered this refresh */
    double now_epoch;
    char now[32]; /* ISO 8601 UTC */
    struct top_campaign *camps;
    size_t ncamps;
    struct top_node *nodes;
    size_t nnodes;
    json_t *states; /* recipients by state, all campaigns together */
    long long total, final;
    long long answered_1m, final_1m; /* all ISPs */
    double query_ms;                 /* the database's part of this refresh */
    double paced_ms; /* > 0: the next refresh waits this long instead of --interval (top.c) */
    /* lines said above the table: an endpoint that did not answer, the database */
    char problems[TOP_PROBLEMS_MAX][320];
    size_t nproblems;
};

/* top_db.c */
/* One refresh from the database into t (t->ok); 0, or -1 with the reason in
 * err (the connection may be gone: the caller reconnects). */
int top_db_refresh(struct top *t, char *err, size_t errlen);
/* campaign names a campaign: 1, 0 when it does not exist, -1 on error. */
int top_db_campaign_exists(struct top *t, const char *campaign, char *err, size_t errlen);
/* The ISP called name, added when new. */
struct top_isp *top_isp_get(struct top *t, const char *name);
void top_free_snapshot(struct top *t);

/* top_metrics.c */
/* Scrape every --metrics endpoint into the ISPs (m_*); an endpoint that does
 * not answer becomes a problem line "metrics HOST:PORT: connection refused". */
void top_metrics_refresh(struct top *t);
/* Exposition text into the ISPs (exposed for tests): 0, -1 when nothing in it
 * is a sample. */
int top_metrics_parse(struct top *t, const char *text, size_t len);

/* top_view.c */
/* The snapshot as the screen shows it, width columns, at most height lines
 * (0: no limit), into out. */
void top_view_text(struct top *t, buf_t *out, int width, int height, int interactive);
/* The snapshot as one JSON document. */
json_t *top_view_json(struct top *t);
/* Say a problem above the table (formatted, at most TOP_PROBLEMS_MAX). */
void top_problem(struct top *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
