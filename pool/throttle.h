/*
 * throttle - rates, token buckets and backoff, the arithmetic of per-ISP limits
 *
 * Rates are written the way operators write them ("300/s", "20000/h",
 * "50/min", "unlimited") and kept as tokens per second. A token bucket
 * holds up to `burst` tokens and refills continuously; callers ask for a
 * token before a message (or a connection) and, when refused, how long
 * to wait. Backoff is PowerMTA's backoff mode with a memory: when the
 * share of replies that match a reply rule passes a threshold, the rate is
 * cut and the lane paused; then it recovers towards the last rate the
 * receiver took without complaint, and probes carefully beyond it.
 * Time is passed in (milliseconds, any monotonic clock), so every rule is
 * testable without sleeping.
 */
#ifndef RINGMAIL_THROTTLE_H
#define RINGMAIL_THROTTLE_H

#include <stddef.h>
#include <stdint.h>

/* per_sec < 0 means unlimited. Returns 0, or -1 with a reason in err. */
int throttle_rate_parse(const char *s, double *per_sec, char *err, size_t errlen);
/* "500ms", "30s", "5m", "1h", "3d" (a bare number is seconds) to milliseconds. */
int throttle_duration_parse(const char *s, uint64_t *ms, char *err, size_t errlen);

struct token_bucket {
    double rate;  /* tokens per second; < 0 unlimited */
    double burst; /* capacity */
    double tokens;
    uint64_t last_ms;
};

/* burst 0: 50 ms worth of tokens (at least 2). Starts full. */
void token_bucket_init(struct token_bucket *b, double rate, double burst, uint64_t now_ms);
/* New rate (reload, backoff); tokens already earned are kept, capped to the new burst. */
void token_bucket_set_rate(struct token_bucket *b, double rate, uint64_t now_ms);
/* 1 and n tokens taken, or 0 and nothing taken. */
int token_bucket_take(struct token_bucket *b, double n, uint64_t now_ms);
/* Milliseconds until n tokens are there (0: now). */
uint64_t token_bucket_wait_ms(struct token_bucket *b, double n, uint64_t now_ms);

/* Backoff settings: [global] backoff_step, backoff_interval and, per ISP
 * or in [global], backoff_threshold and backoff_window. */
struct backoff_params {
    double step;          /* recovery above the last good rate, a fraction of the full rate */
    uint64_t interval_ms; /* one recovery step per interval */
    double threshold;     /* share of matching replies that cuts; 0: any matching reply */
    uint64_t window_ms;   /* the window that share is measured over */
    double floor;         /* the factor never drops below this (0.1: 10% of the rate) */
};

/* The window is kept in BACKOFF_SLOTS slots of window_ms / BACKOFF_SLOTS. */
#define BACKOFF_SLOTS 10
/* Replies a decision needs (the last 10 when the window holds fewer). */
#define BACKOFF_MIN_SAMPLE 10
/* The default floor: 10% of the rate. */
#define BACKOFF_FLOOR 0.1

/*
 * The converging backoff. Every reply of a lane counts in a sliding window
 * (the last window_ms, or the last BACKOFF_MIN_SAMPLE replies when the
 * window holds fewer), matching ones (a backoff rule's pattern) apart. A
 * matching reply cuts the rate (factor *= CUT) and pauses the lane only
 * when the share of matching replies in the window is above threshold,
 * with confidence: more than threshold x n + 2.33 sd of a binomial at the
 * threshold, so 2% of random deferrals never look like 5%. A cut empties
 * the window, and replies that arrive during the pause (to messages sent
 * at the old rate) are not counted: the next cut needs fresh evidence,
 * never the same burst twice.
 *
 * Recovery, one step per interval after the pause, only when the replies
 * of that interval stayed at or under the threshold (else the factor
 * holds): below `good` (the highest factor an interval of at least
 * BACKOFF_MIN_SAMPLE replies stayed under the threshold at) the factor
 * grows by half (at least `step`) up to good; at or above it, it probes by
 * `step`, and by half the distance to the factor of the last cut when
 * that is nearer, so it closes in on a ceiling instead of jumping over
 * it. A cut at or below good forgets good (the receiver's limit fell).
 */
struct backoff {
    struct backoff_params par;
    double factor;         /* 1.0 = full rate */
    double good;           /* see above; 0 unknown */
    double bad;            /* the factor at the last cut, until recovery passes it; 0 none */
    uint64_t paused_until; /* no new connections or messages before this */
    uint64_t next_step_ms; /* when the next recovery step is due */
    int suspended;         /* the pause is a suspension (backoff_suspend) */
    unsigned triggers;     /* cuts and suspensions (metrics) */
    /* the window: replies and matching ones per slot; epoch = now / slot length */
    uint32_t total[BACKOFF_SLOTS], match[BACKOFF_SLOTS];
    uint64_t epoch;
    /* the last BACKOFF_MIN_SAMPLE replies since the last cut: bit i set = matched */
    uint32_t recent;
    unsigned nrecent;
    /* replies since the last recovery step */
    uint32_t step_total, step_match;
    /* the evidence of the last cut: matching replies of n */
    uint32_t cut_match, cut_n;
};

/* A full-rate backoff with settings par (NULL: step 0.1, 60 s, 5%, 30 s, 10%). */
void backoff_init(struct backoff *b, const struct backoff_params *par, uint64_t now_ms);
/* New settings (a reload); the state stays, the window is emptied if its length changed. */
void backoff_configure(struct backoff *b, const struct backoff_params *par, uint64_t now_ms);
/* A reply: matches = a backoff rule's pattern matched it. 1 when it cut the
 * rate (factor *= cut) and paused the lane for pause_ms, else 0. */
int backoff_reply(struct backoff *b, int matches, double cut, uint64_t pause_ms, uint64_t now_ms);
/* A cut now, whatever the window says: rate *= cut, pause for pause_ms. */
void backoff_trigger(struct backoff *b, double cut, uint64_t pause_ms, uint64_t now_ms);
/* Another node's cut: the lower of factor and the factor now, paused for
 * pause_ms unless a longer pause is in force; the window is emptied, as by
 * a cut. 1, or 0 when nothing changed. */
int backoff_adopt(struct backoff *b, double factor, uint64_t pause_ms, uint64_t now_ms);
/* A suspension: paused for pause_ms from now, the rate unchanged. 1, or 0
 * (and nothing changed) when a pause in force lasts as long already. */
int backoff_suspend(struct backoff *b, uint64_t pause_ms, uint64_t now_ms);
/* The factor now (recovery applied); 1.0 when not backing off. */
double backoff_factor(struct backoff *b, uint64_t now_ms);
/* 1 while paused. */
int backoff_paused(const struct backoff *b, uint64_t now_ms);
/* 1 while paused by a suspension. */
int backoff_suspended(const struct backoff *b, uint64_t now_ms);
/* The share of matching replies in the window now (0 without replies); *n how many. */
double backoff_share(struct backoff *b, uint64_t now_ms, unsigned *n);

#endif
