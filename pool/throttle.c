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
    if (strcasecmp(s, "unlimited") == 0) {
        *per_sec = -1;
        return 0;
    }
    char *end;
    double n = strtod(s, &end);
    if (end != s && n == 0 && (*end == '\0' || *end == '/')) {
        /* "0" used to mean unlimited: the opposite of what it says. */
        snprintf(err, errlen,
                 "a rate of 0 would send nothing; write 'unlimited' or a rate such "
                 "as 100/s");
        return -1;
    }
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

/* ---- backoff ---- */

#define BACKOFF_Z 2.33 /* one-sided 99%: how sure a share above the threshold must be */

static const struct backoff_params backoff_defaults = {
    .step = 0.1,
    .interval_ms = 60000,
    .threshold = 0.05,
    .window_ms = 30000,
    .floor = BACKOFF_FLOOR,
};

static void backoff_params_set(struct backoff *b, const struct backoff_params *par)
{
    b->par = par ? *par : backoff_defaults;
    if (!(b->par.step > 0)) {
        b->par.step = backoff_defaults.step;
    }
    if (!b->par.interval_ms) {
        b->par.interval_ms = backoff_defaults.interval_ms;
    }
    if (!(b->par.threshold >= 0 && b->par.threshold < 1)) {
        b->par.threshold = backoff_defaults.threshold;
    }
    if (b->par.window_ms < BACKOFF_SLOTS) {
        b->par.window_ms = backoff_defaults.window_ms;
    }
    if (!(b->par.floor > 0 && b->par.floor <= 1)) {
        b->par.floor = backoff_defaults.floor;
    }
}

static uint64_t backoff_slot_ms(const struct backoff *b)
{
    return b->par.window_ms / BACKOFF_SLOTS;
}

static void backoff_window_clear(struct backoff *b)
{
    memset(b->total, 0, sizeof b->total);
    memset(b->match, 0, sizeof b->match);
    b->recent = 0;
    b->nrecent = 0;
}

/* Slide the window to now: the slots that fell out of it are emptied. */
static void backoff_window_advance(struct backoff *b, uint64_t now_ms)
{
    uint64_t epoch = now_ms / backoff_slot_ms(b);
    if (epoch <= b->epoch) {
        return;
    }
    if (epoch - b->epoch >= BACKOFF_SLOTS) {
        memset(b->total, 0, sizeof b->total);
        memset(b->match, 0, sizeof b->match);
    } else {
        for (uint64_t e = b->epoch + 1; e <= epoch; e++) {
            b->total[e % BACKOFF_SLOTS] = 0;
            b->match[e % BACKOFF_SLOTS] = 0;
        }
    }
    b->epoch = epoch;
}

/* The evidence now: the window, or the last replies when it holds fewer than a decision needs. */
static void backoff_evidence(struct backoff *b, uint64_t now_ms, uint32_t *n, uint32_t *m)
{
    backoff_window_advance(b, now_ms);
    uint32_t tn = 0, tm = 0;
    for (size_t i = 0; i < BACKOFF_SLOTS; i++) {
        tn += b->total[i];
        tm += b->match[i];
    }
    if (tn < BACKOFF_MIN_SAMPLE && b->nrecent > tn) {
        tn = b->nrecent;
        tm = (uint32_t)__builtin_popcount(b->recent);
    }
    *n = tn;
    *m = tm;
}

/* m matching replies of n: above the threshold, and surely so. */
static int backoff_over(const struct backoff *b, uint32_t n, uint32_t m)
{
    double t = b->par.threshold;
    if (m == 0) {
        return 0;
    }
    if (t <= 0) {
        return 1; /* threshold 0: any matching reply */
    }
    if (n < BACKOFF_MIN_SAMPLE) {
        return 0;
    }
    double expect = t * n;
    return (double)m > expect + BACKOFF_Z * sqrt(expect * (1 - t));
}

void backoff_init(struct backoff *b, const struct backoff_params *par, uint64_t now_ms)
{
    memset(b, 0, sizeof *b);
    backoff_params_set(b, par);
    b->factor = 1.0;
    b->epoch = now_ms / backoff_slot_ms(b);
    b->next_step_ms = now_ms + b->par.interval_ms;
}

void backoff_configure(struct backoff *b, const struct backoff_params *par, uint64_t now_ms)
{
    uint64_t window = b->par.window_ms, interval = b->par.interval_ms;
    backoff_params_set(b, par);
    if (b->par.window_ms != window) {
        backoff_window_clear(b);
        b->epoch = now_ms / backoff_slot_ms(b);
    }
    if (b->par.interval_ms != interval) {
        uint64_t from = now_ms > b->paused_until ? now_ms : b->paused_until;
        b->next_step_ms = from + b->par.interval_ms;
    }
    if (b->factor < b->par.floor) {
        b->factor = b->par.floor;
    }
}

/* One recovery step: grow when the interval's replies stayed under the threshold. */
static void backoff_step(struct backoff *b)
{
    uint32_t n = b->step_total, m = b->step_match;
    b->step_total = b->step_match = 0;
    if ((double)m > b->par.threshold * n) {
        return; /* above the threshold, if not surely so: hold */
    }
    if (n >= BACKOFF_MIN_SAMPLE && b->factor > b->good) {
        b->good = b->factor; /* this rate was taken without complaint */
    }
    if (b->factor >= 1.0) {
        return;
    }
    double f = b->factor, step = b->par.step;
    if (b->good > f + 1e-9) {
        /* Back to the last good rate: by half, at least a step, never past it. */
        f = f * 1.5 > f + step ? f * 1.5 : f + step;
        if (f > b->good) {
            f = b->good;
        }
    } else {
        /* Beyond it, carefully: half the way to the last cut when that is nearer. */
        double inc = step;
        if (b->good > 0 && b->bad > f) {
            double half = (b->bad - f) / 2;
            inc = half < 0.01 ? 0.01 : half < step ? half : step;
        }
        f += inc;
        if (b->bad > 0 && f >= b->bad) {
            b->bad = 0; /* past the last cut without a new one: forget it */
        }
    }
    b->factor = f < 1.0 ? f : 1.0;
}

double backoff_factor(struct backoff *b, uint64_t now_ms)
{
    if (now_ms >= b->next_step_ms && now_ms >= b->paused_until) {
        uint64_t steps = (now_ms - b->next_step_ms) / b->par.interval_ms + 1;
        /* Lazily: the first step judges the replies since the last one; the
         * others saw none (an idle lane recovers too). At most what a climb
         * from the floor to 1.0 can need. */
        for (uint64_t i = 0; i < steps && (i == 0 || b->factor < 1.0) && i < 1000; i++) {
            backoff_step(b);
        }
        b->next_step_ms += steps * b->par.interval_ms;
    }
    return b->factor;
}

/* The cut. share: the share of matching replies that called for it (< 0:
 * unknown): what the receiver took, factor x (1 - share), bounds the last
 * good rate, which would otherwise lead recovery straight back into the
 * same deferrals. */
static void backoff_cut(struct backoff *b, double cut, uint64_t pause_ms, uint64_t now_ms,
                        double share)
{
    backoff_factor(b, now_ms); /* settle recovery earned so far */
    b->triggers++;
    double took = share >= 0 ? b->factor * (1 - share) : 0;
    if (b->good >= b->factor - 1e-9 || b->good > took) {
        b->good = took; /* cut at a rate once good: the receiver's limit fell (0: unknown) */
    }
    b->bad = b->factor;
    b->factor *= cut > 0 && cut <= 1 ? cut : 0.5;
    if (b->factor < b->par.floor) {
        b->factor = b->par.floor;
    }
    if (b->good > 0 && b->good < b->par.floor) {
        b->good = b->par.floor;
    }
    if (now_ms + pause_ms > b->paused_until) {
        b->paused_until = now_ms + pause_ms;
        b->suspended = 0;
    }
    b->next_step_ms = b->paused_until + b->par.interval_ms;
    backoff_window_clear(b);
    b->step_total = b->step_match = 0;
}

void backoff_trigger(struct backoff *b, double cut, uint64_t pause_ms, uint64_t now_ms)
{
    backoff_cut(b, cut, pause_ms, now_ms, -1);
}

int backoff_reply(struct backoff *b, int matches, double cut, uint64_t pause_ms, uint64_t now_ms)
{
    if (now_ms < b->paused_until) {
        /* A reply to a message sent before the pause: it says nothing
         * about the rate that follows. */
        return 0;
    }
    backoff_factor(b, now_ms);
    backoff_window_advance(b, now_ms);
    size_t slot = (size_t)(b->epoch % BACKOFF_SLOTS);
    b->total[slot]++;
    b->step_total++;
    b->recent = (b->recent << 1 | (matches ? 1u : 0u)) & ((1u << BACKOFF_MIN_SAMPLE) - 1);
    if (b->nrecent < BACKOFF_MIN_SAMPLE) {
        b->nrecent++;
    }
    if (!matches) {
        return 0;
    }
    b->match[slot]++;
    b->step_match++;
    uint32_t n, m;
    backoff_evidence(b, now_ms, &n, &m);
    if (!backoff_over(b, n, m)) {
        return 0;
    }
    /* What the receiver took: at this factor (the replies since the last
     * step) when there are enough of them, else over the window. */
    double share =
        b->step_total >= BACKOFF_MIN_SAMPLE ? (double)b->step_match / b->step_total : (double)m / n;
    backoff_cut(b, cut, pause_ms, now_ms, share);
    b->cut_match = m;
    b->cut_n = n;
    return 1;
}

int backoff_adopt(struct backoff *b, double factor, uint64_t pause_ms, uint64_t now_ms)
{
    backoff_factor(b, now_ms); /* settle recovery earned so far */
    if (factor < b->par.floor) {
        factor = b->par.floor;
    }
    int lower = factor<b->factor - 1e-9, longer = now_ms + pause_ms> b->paused_until;
    if (!lower && !longer) {
        return 0;
    }
    b->triggers++;
    if (lower) {
        b->bad = b->factor;
        b->factor = factor;
    }
    if (longer) {
        b->paused_until = now_ms + pause_ms;
        b->suspended = 0;
    }
    b->next_step_ms = b->paused_until + b->par.interval_ms;
    backoff_window_clear(b);
    b->step_total = b->step_match = 0;
    return 1;
}

int backoff_suspend(struct backoff *b, uint64_t pause_ms, uint64_t now_ms)
{
    if (now_ms + pause_ms <= b->paused_until) {
        return 0; /* a pause as long is in force */
    }
    backoff_factor(b, now_ms);
    b->triggers++;
    b->paused_until = now_ms + pause_ms;
    b->suspended = 1;
    b->next_step_ms = b->paused_until + b->par.interval_ms;
    backoff_window_clear(b);
    b->step_total = b->step_match = 0;
    return 1;
}

int backoff_paused(const struct backoff *b, uint64_t now_ms)
{
    return now_ms < b->paused_until;
}

int backoff_suspended(const struct backoff *b, uint64_t now_ms)
{
    return b->suspended && now_ms < b->paused_until;
}

double backoff_share(struct backoff *b, uint64_t now_ms, unsigned *n)
{
    uint32_t tn, tm;
    backoff_evidence(b, now_ms, &tn, &tm);
    if (n) {
        *n = tn;
    }
    return tn ? (double)tm / tn : 0;
}
