/*
 * throttle - rates, token buckets and backoff. See throttle.h.
 */
#include "pool/throttle.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int throttle_rate_parse(const char *s, double *per_sec, char *err, size_t errlen)
{
    if (strcasecmp(s, "unlimited") == 0 || strcmp(s, "0") == 0) {
        *per_sec = -1;
        return 0;
    }
    char *end;
    double n = strtod(s, &end);
    if (end == s || n <= 0 || !isfinite(n) || *end != '/') {
        snprintf(err, errlen, "bad rate '%s' (want N/s, N/min, N/h, N/d or unlimited)", s);
        return -1;
    }
    static const struct {
        const char *unit;
        double seconds;
    } units[] = {{"s", 1},    {"sec", 1},   {"m", 60},    {"min", 60},
                 {"h", 3600}, {"hr", 3600}, {"d", 86400}, {"day", 86400}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++) {
        if (strcasecmp(end + 1, units[i].unit) == 0) {
            *per_sec = n / units[i].seconds;
            return 0;
        }
    }
    snprintf(err, errlen, "bad rate unit in '%s' (want /s, /min, /h or /d)", s);
    return -1;
}

int throttle_duration_parse(const char *s, uint64_t *ms, char *err, size_t errlen)
{
    char *end;
    double n = strtod(s, &end);
    if (end == s || n < 0 || !isfinite(n)) {
        snprintf(err, errlen, "bad duration '%s' (want e.g. 500ms, 30s, 5m, 1h, 3d)", s);
        return -1;
    }
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"", 1000},     {"ms", 1},      {"s", 1000},    {"m", 60000},
                 {"min", 60000}, {"h", 3600000}, {"d", 86400000}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++) {
        if (strcasecmp(end, units[i].unit) == 0) {
            *ms = (uint64_t)llround(n * units[i].ms);
            return 0;
        }
    }
    snprintf(err, errlen, "bad duration unit in '%s' (want ms, s, m, h or d)", s);
    return -1;
}

static void token_bucket_refill(struct token_bucket *b, uint64_t now_ms)
{
    if (now_ms > b->last_ms && b->rate > 0) {
        b->tokens += b->rate * (double)(now_ms - b->last_ms) / 1000.0;
        if (b->tokens > b->burst) {
            b->tokens = b->burst;
        }
    }
    if (now_ms > b->last_ms) {
        b->last_ms = now_ms;
    }
}

/* 50 ms worth of tokens (at least 2): enough to absorb timer jitter, small enough that
 * a short run is not dominated by the initial burst (a 1 s burst made a
 * 3 s run at 100/s look like 150/s). */
static double token_bucket_default_burst(double rate)
{
    return rate / 20 > 2 ? rate / 20 : 2; /* 2: refill rounding never loses a token */
}

void token_bucket_init(struct token_bucket *b, double rate, double burst, uint64_t now_ms)
{
    b->rate = rate;
    b->burst = burst > 0 ? burst : token_bucket_default_burst(rate);
    b->tokens = b->burst;
    b->last_ms = now_ms;
}

void token_bucket_set_rate(struct token_bucket *b, double rate, uint64_t now_ms)
{
    token_bucket_refill(b, now_ms);
    b->rate = rate;
    b->burst = token_bucket_default_burst(rate);
    if (b->tokens > b->burst) {
        b->tokens = b->burst;
    }
}

int token_bucket_take(struct token_bucket *b, double n, uint64_t now_ms)
{
    if (b->rate < 0) {
        return 1;
    }
    token_bucket_refill(b, now_ms);
    if (b->tokens + 1e-9 < n) {
        return 0;
    }
    b->tokens -= n;
    return 1;
}

uint64_t token_bucket_wait_ms(struct token_bucket *b, double n, uint64_t now_ms)
{
    if (b->rate < 0) {
        return 0;
    }
    token_bucket_refill(b, now_ms);
    if (b->tokens + 1e-9 >= n) {
        return 0;
    }
    if (b->rate == 0) {
        return UINT64_MAX;
    }
    return (uint64_t)ceil((n - b->tokens) * 1000.0 / b->rate);
}

void backoff_init(struct backoff *b, double step, uint64_t interval_ms)
{
    memset(b, 0, sizeof *b);
    b->factor = 1.0;
    b->floor = 0.01;
    b->step = step > 0 ? step : 0.1;
    b->interval_ms = interval_ms ? interval_ms : 60000;
}

void backoff_trigger(struct backoff *b, double cut, uint64_t pause_ms, uint64_t now_ms)
{
    b->triggers++;
    if (now_ms < b->paused_until) {
        /* Replies to messages sent before the cut: they say nothing about
         * the new rate, so one cut per pause (as PowerMTA's backoff mode). */
        return;
    }
    backoff_factor(b, now_ms); /* settle recovery earned so far */
    b->factor *= cut > 0 && cut <= 1 ? cut : 0.5;
    if (b->factor < b->floor) {
        b->factor = b->floor;
    }
    if (now_ms + pause_ms > b->paused_until) {
        b->paused_until = now_ms + pause_ms;
    }
    b->next_step_ms = b->paused_until + b->interval_ms;
}

double backoff_factor(struct backoff *b, uint64_t now_ms)
{
    while (b->factor < 1.0 && now_ms >= b->next_step_ms) {
        b->factor += b->step;
        b->next_step_ms += b->interval_ms;
    }
    if (b->factor > 1.0) {
        b->factor = 1.0;
    }
    return b->factor;
}

int backoff_paused(const struct backoff *b, uint64_t now_ms)
{
    return now_ms < b->paused_until;
}
