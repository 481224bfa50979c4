/*
 * throttle - rates, token buckets and backoff, the arithmetic of per-ISP limits
 *
 * Rates are written the way operators write them ("300/s", "20000/h",
 * "50/min", "unlimited") and kept as tokens per second. A token bucket
 * holds up to `burst` tokens and refills continuously; callers ask for a
 * token before a message (or a connection) and, when refused, how long
 * to wait. Backoff is PowerMTA's backoff mode in miniature: a deferral
 * that matches a reply rule cuts the ISP's rate by a factor and pauses it,
 * then the rate recovers one step per interval until it is whole again.
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

struct backoff {
    double factor;         /* 1.0 = full rate */
    double floor;          /* the factor never drops below this */
    double step;           /* recovery added per interval */
    uint64_t interval_ms;  /* recovery interval */
    uint64_t paused_until; /* no new connections or messages before this */
    uint64_t next_step_ms; /* when the next recovery step is due */
    unsigned triggers;     /* how many times it was triggered (metrics) */
};

void backoff_init(struct backoff *b, double step, uint64_t interval_ms);
/* A matching deferral: rate *= cut, pause for pause_ms, recovery restarts after the pause. */
void backoff_trigger(struct backoff *b, double cut, uint64_t pause_ms, uint64_t now_ms);
/* The factor now (recovery applied); 1.0 when not backing off. */
double backoff_factor(struct backoff *b, uint64_t now_ms);
/* 1 while paused. */
int backoff_paused(const struct backoff *b, uint64_t now_ms);

#endif
