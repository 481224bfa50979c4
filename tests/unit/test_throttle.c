/*
 * test_throttle - rate and duration parsing, token buckets, backoff and the
 * retry schedule, with time passed in (no sleeping).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pool/retry.h"
#include "pool/throttle.h"

static void test_rates(void **state)
{
    (void)state;
    char err[128];
    double r;
    assert_int_equal(throttle_rate_parse("300/s", &r, err, sizeof err), 0);
    assert_true(r == 300.0);
    assert_int_equal(throttle_rate_parse("20000/h", &r, err, sizeof err), 0);
    assert_true(r > 5.555 && r < 5.556);
    assert_int_equal(throttle_rate_parse("60/min", &r, err, sizeof err), 0);
    assert_true(r == 1.0);
    assert_int_equal(throttle_rate_parse("unlimited", &r, err, sizeof err), 0);
    assert_true(r < 0);
    assert_int_equal(throttle_rate_parse("300", &r, err, sizeof err), -1);
    assert_int_equal(throttle_rate_parse("300/fortnight", &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "unit"));
    assert_int_equal(throttle_rate_parse("-5/s", &r, err, sizeof err), -1);
    /* 0 used to mean unlimited: now it is refused, and the message says what to write. */
    assert_int_equal(throttle_rate_parse("0", &r, err, sizeof err), -1);
    assert_string_equal(
        err, "a rate of 0 would send nothing; write 'unlimited' or a rate such as 100/s");
    assert_int_equal(throttle_rate_parse("0/s", &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "would send nothing"));
}

static void test_durations(void **state)
{
    (void)state;
    char err[128];
    uint64_t ms;
    assert_int_equal(throttle_duration_parse("500ms", &ms, err, sizeof err), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(throttle_duration_parse("5m", &ms, err, sizeof err), 0);
    assert_int_equal(ms, 300000);
    assert_int_equal(throttle_duration_parse("3d", &ms, err, sizeof err), 0);
    assert_int_equal(ms, 259200000);
    assert_int_equal(throttle_duration_parse("30", &ms, err, sizeof err), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(throttle_duration_parse("1.5h", &ms, err, sizeof err), 0);
    assert_int_equal(ms, 5400000);
    assert_int_equal(throttle_duration_parse("soon", &ms, err, sizeof err), -1);
    assert_int_equal(throttle_duration_parse("5y", &ms, err, sizeof err), -1);
}

static void test_bucket_rate_over_time(void **state)
{
    (void)state;
    struct token_bucket b;
    token_bucket_init(&b, 10, 0, 1000); /* 10/s, default burst 2 (50 ms worth, at least 2) */
    int taken = 0;
    for (int i = 0; i < 100; i++) {
        taken += token_bucket_take(&b, 1, 1000);
    }
    assert_int_equal(taken, 2);
    assert_int_equal(token_bucket_wait_ms(&b, 1, 1000), 100);
    /* Over the next 10 s exactly 100 more, however often we ask. */
    taken = 0;
    for (uint64_t t = 1000; t <= 11000; t += 7) {
        while (token_bucket_take(&b, 1, t)) {
            taken++;
        }
    }
    assert_true(taken >= 99 && taken <= 100);
}

static void test_bucket_unlimited_and_reload(void **state)
{
    (void)state;
    struct token_bucket b;
    token_bucket_init(&b, -1, 0, 0);
    for (int i = 0; i < 1000; i++) {
        assert_true(token_bucket_take(&b, 1, 0));
    }
    token_bucket_init(&b, 200, 0, 0); /* burst 10 */
    assert_true(token_bucket_take(&b, 10, 0));
    assert_false(token_bucket_take(&b, 1, 0));
    token_bucket_init(&b, 200, 0, 0);
    token_bucket_set_rate(&b, 2, 0); /* reload to 2/s: the earned 10 are capped to 2 */
    assert_true(token_bucket_take(&b, 2, 0));
    assert_false(token_bucket_take(&b, 1, 0));
    assert_int_equal(token_bucket_wait_ms(&b, 1, 0), 500);
}

/* ---- backoff ---- */

static const struct backoff_params params_test = {
    .step = 0.25, .interval_ms = 10000, .threshold = 0.05, .window_ms = 30000, .floor = 0.1};

static void test_backoff_cut_pause_recover(void **state)
{
    (void)state;
    struct backoff b;
    backoff_init(&b, &params_test, 0);
    assert_true(backoff_factor(&b, 0) == 1.0);
    backoff_trigger(&b, 0.5, 60000, 1000);
    assert_true(backoff_paused(&b, 1000));
    assert_true(backoff_paused(&b, 60999));
    assert_false(backoff_paused(&b, 61000));
    assert_false(backoff_suspended(&b, 1000)); /* a cut's pause is no suspension */
    assert_true(backoff_factor(&b, 61000) == 0.5);
    /* No rate known to be good: one step per interval after the pause. */
    assert_true(backoff_factor(&b, 71000) == 0.75);
    assert_true(backoff_factor(&b, 81000) == 1.0);
    assert_true(backoff_factor(&b, 999999) == 1.0);
    /* Cuts compound, but never below the floor (10% of the rate: it never starves). */
    for (int i = 0; i < 20; i++) {
        backoff_trigger(&b, 0.5, 0, 1000000);
    }
    assert_true(backoff_factor(&b, 1000000) == 0.1);
    assert_int_equal(b.triggers, 21);
    /* A suspension pauses without cutting the rate, and says so. */
    backoff_init(&b, &params_test, 0);
    backoff_trigger(&b, 0.5, 5000, 0);
    assert_int_equal(backoff_suspend(&b, 1000, 6000), 1);
    assert_true(backoff_suspended(&b, 6500));
    assert_true(backoff_factor(&b, 7000) == 0.5);
    assert_false(backoff_paused(&b, 7000));
    /* One as long in force: nothing changes (a reply to what was in flight). */
    assert_int_equal(backoff_suspend(&b, 60000, 10000), 1);
    assert_int_equal(backoff_suspend(&b, 30000, 20000), 0);
    assert_int_equal(b.paused_until, 70000);
}

/* Another node's cut: the lower factor and the longer pause win, once. */
static void test_backoff_adopt(void **state)
{
    (void)state;
    struct backoff b;
    backoff_init(&b, &params_test, 0);
    assert_int_equal(backoff_adopt(&b, 0.5, 4000, 1000), 1);
    assert_true(backoff_factor(&b, 5000) == 0.5);
    assert_true(backoff_paused(&b, 4999));
    assert_false(backoff_paused(&b, 5000));
    /* The same news again changes nothing; a higher factor and a shorter pause neither. */
    assert_int_equal(backoff_adopt(&b, 0.5, 4000, 1000), 0);
    assert_int_equal(backoff_adopt(&b, 0.8, 1000, 2000), 0);
    /* A longer pause alone is taken; the factor stays. */
    assert_int_equal(backoff_adopt(&b, 0.9, 9000, 2000), 1);
    assert_int_equal(b.paused_until, 11000);
    assert_true(backoff_factor(&b, 11000) == 0.5);
    /* Recovery after it, on this node's own schedule (step 0.25 every 10 s). */
    assert_true(backoff_factor(&b, 21000) == 0.75);
    /* Never below the floor. */
    assert_int_equal(backoff_adopt(&b, 0.01, 0, 30000), 1);
    assert_true(backoff_factor(&b, 30000) == 0.1);
}

/* Only a share of matching replies above the threshold cuts, and surely above it. */
static void test_backoff_share(void **state)
{
    (void)state;
    struct backoff b;
    backoff_init(&b, &params_test, 0);
    uint64_t t = 0;
    /* 1 in 20 (5%, the threshold itself), for a long time: never a cut. */
    for (int i = 0; i < 2000; i++, t += 10) {
        assert_int_equal(backoff_reply(&b, i % 20 == 7, 0.5, 5000, t), 0);
    }
    unsigned n;
    double share = backoff_share(&b, t, &n);
    assert_true(n == 2000 && share == 0.05);
    assert_true(backoff_factor(&b, t) == 1.0);
    /* Then 3 in 10: the share climbs, and the cut comes once it is surely above 5%. */
    int cut_at = -1;
    for (int i = 0; i < 2000 && cut_at < 0; i++, t += 10) {
        if (backoff_reply(&b, i % 10 < 3, 0.5, 5000, t)) {
            cut_at = i;
        }
    }
    assert_true(cut_at > 0 && cut_at < 300);
    assert_true(backoff_factor(&b, t) == 0.5);
    assert_true(backoff_paused(&b, t));
    assert_true(b.cut_match > 0 && (double)b.cut_match / b.cut_n > 0.05);
    /* The same burst again, during the pause: not counted, no second cut. */
    for (int i = 0; i < 100; i++) {
        assert_int_equal(backoff_reply(&b, 1, 0.5, 5000, t + (uint64_t)i), 0);
    }
    assert_true(backoff_factor(&b, t + 100) == 0.5);
    backoff_share(&b, t + 100, &n);
    assert_int_equal(n, 0); /* the window starts afresh at the cut */
    /* A few replies are no evidence: 1 of 3 matching is no cut. */
    t += 5000;
    assert_int_equal(backoff_reply(&b, 0, 0.5, 5000, t), 0);
    assert_int_equal(backoff_reply(&b, 0, 0.5, 5000, t + 1), 0);
    assert_int_equal(backoff_reply(&b, 1, 0.5, 5000, t + 2), 0);
    /* Threshold 0: any matching reply outside a pause cuts (one per pause). */
    struct backoff_params p0 = params_test;
    p0.threshold = 0;
    backoff_init(&b, &p0, 0);
    assert_int_equal(backoff_reply(&b, 0, 0.5, 5000, 10), 0);
    assert_int_equal(backoff_reply(&b, 1, 0.5, 5000, 20), 1);
    assert_int_equal(backoff_reply(&b, 1, 0.5, 5000, 1000), 0);
    assert_int_equal(backoff_reply(&b, 1, 0.5, 5000, 5019), 0);
    assert_int_equal(backoff_reply(&b, 1, 0.5, 5000, 5020), 1);
    assert_true(backoff_factor(&b, 5020) == 0.25);
}

/* A lane that sends rarely: when the window holds fewer than 10 replies,
 * the last 10 decide. */
static void test_backoff_low_rate(void **state)
{
    (void)state;
    struct backoff b;
    backoff_init(&b, &params_test, 0);
    uint64_t t = 0;
    int cut_at = -1;
    for (int i = 0; i < 30 && cut_at < 0; i++, t += 20000) { /* 3 a minute, every one deferred */
        if (backoff_reply(&b, 1, 0.5, 60000, t)) {
            cut_at = i;
        }
    }
    assert_true(cut_at >= 2 && cut_at <= 9);
}

/*
 * A fake clock, a sender and a receiver, one millisecond at a time: the
 * sender takes message tokens at full_rate x the backoff factor (none
 * while paused); each reply comes back reply_ms later and goes through
 * backoff_reply with the rule "backoff 0.5 PAUSE". The receiver defers a
 * message at random (defer_share), or over its own per-second rate
 * (ceiling: a bucket of ceiling tokens refilled at ceiling/s, as the
 * sink's --source-rate), or both.
 */
struct sim {
    struct backoff b;
    struct token_bucket send, isp;
    double full_rate;
    double defer_share; /* random deferrals */
    double ceiling;     /* < 0: none */
    uint64_t pause_ms, reply_ms, now, rng;
    /* replies in flight: when each is due and whether it defers */
    uint64_t due[4096];
    unsigned char deferred[4096];
    size_t head, tail;
    uint64_t sent, deferrals, cuts;
};

static double sim_random(struct sim *s)
{
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

static void sim_init(struct sim *s, const struct backoff_params *par, double full_rate)
{
    memset(s, 0, sizeof *s);
    s->now = 1000000;
    s->full_rate = full_rate;
    s->ceiling = -1;
    s->pause_ms = 2000;
    s->reply_ms = 50;
    s->rng = 14;
    backoff_init(&s->b, par, s->now);
    token_bucket_init(&s->send, full_rate, 0, s->now);
    token_bucket_init(&s->isp, -1, 0, s->now);
}

static void sim_ceiling(struct sim *s, double ceiling)
{
    s->ceiling = ceiling;
    token_bucket_init(&s->isp, ceiling, ceiling > 0 ? ceiling : 0, s->now);
}

/* Run for ms; what was sent and deferred in that time into *sent, *deferred. */
static void sim_run(struct sim *s, uint64_t ms, uint64_t *sent, uint64_t *deferred)
{
    uint64_t sent0 = s->sent, def0 = s->deferrals;
    for (uint64_t end = s->now + ms; s->now < end; s->now++) {
        while (s->head != s->tail && s->due[s->head % 4096] <= s->now) {
            int d = s->deferred[s->head % 4096];
            s->head++;
            s->cuts += (uint64_t)backoff_reply(&s->b, d, 0.5, s->pause_ms, s->now);
        }
        double rate = s->full_rate * backoff_factor(&s->b, s->now);
        if (rate != s->send.rate) {
            token_bucket_set_rate(&s->send, rate, s->now);
        }
        while (!backoff_paused(&s->b, s->now) && s->tail - s->head < 4096 &&
               token_bucket_take(&s->send, 1, s->now)) {
            int d = sim_random(s) < s->defer_share;
            if (!d && s->ceiling >= 0) {
                d = !token_bucket_take(&s->isp, 1, s->now);
            }
            s->due[s->tail % 4096] = s->now + s->reply_ms;
            s->deferred[s->tail % 4096] = (unsigned char)d;
            s->tail++;
            s->sent++;
            s->deferrals += (uint64_t)d;
        }
    }
    *sent = s->sent - sent0;
    *deferred = s->deferrals - def0;
}

static const struct backoff_params params_sim = {
    .step = 0.1, .interval_ms = 5000, .threshold = 0.05, .window_ms = 30000, .floor = 0.1};

/* The issue-14 finding: a receiver deferring 2% at random held a 100/s ISP
 * at 6/s. Sparse deferrals are no reason to slow down. */
static void test_backoff_random_deferrals(void **state)
{
    (void)state;
    static struct sim s;
    sim_init(&s, &params_sim, 100);
    s.defer_share = 0.02;
    uint64_t sent, deferred;
    sim_run(&s, 300000, &sent, &deferred); /* 5 minutes */
    double rate = (double)sent / 300;
    print_message("# 2%% random at 100/s: %.1f/s, %.2f%% deferred, %llu cuts\n", rate,
                  100.0 * (double)deferred / (double)sent, (unsigned long long)s.cuts);
    assert_true(rate >= 90);
    assert_true(s.cuts <= 1);
    /* Over 5% (the threshold) is another matter: 20% at random cuts. */
    sim_init(&s, &params_sim, 100);
    s.defer_share = 0.2;
    sim_run(&s, 60000, &sent, &deferred);
    assert_true(s.cuts >= 1);
    assert_true((double)sent / 60 < 90);
}

/* A receiver that defers everything over 30/s: the rate converges near
 * 30/s with few deferrals; when the ceiling lifts, it recovers. */
static void test_backoff_ceiling(void **state)
{
    (void)state;
    static struct sim s;
    sim_init(&s, &params_sim, 100);
    sim_ceiling(&s, 30);
    uint64_t sent, deferred;
    sim_run(&s, 60000, &sent, &deferred); /* the first minute: finding it */
    print_message("# ceiling 30/s, first minute: %.1f/s, %.1f%% deferred, %llu cuts\n",
                  (double)sent / 60, 100.0 * (double)deferred / (double)sent,
                  (unsigned long long)s.cuts);
    sim_run(&s, 300000, &sent, &deferred); /* the next 5 minutes: held there */
    double rate = (double)sent / 300, share = (double)deferred / (double)sent;
    print_message("# ceiling 30/s, next 5 minutes: %.1f/s, %.1f%% deferred, %llu cuts, good %.3f\n",
                  rate, 100 * share, (unsigned long long)s.cuts, s.b.good);
    assert_true(rate >= 24 && rate <= 36);
    assert_true(share < 0.08);
    /* Without backoff the same receiver defers 70%. */
    /* The ceiling lifts: back at the full rate within a few minutes. */
    sim_ceiling(&s, -1);
    sim_run(&s, 120000, &sent, &deferred);
    sim_run(&s, 60000, &sent, &deferred);
    print_message("# ceiling lifted, 3rd minute after: %.1f/s\n", (double)sent / 60);
    assert_true((double)sent / 60 >= 95);
    assert_true(backoff_factor(&s.b, s.now) == 1.0);
    /* And a ceiling that falls below the rate once good: found again. */
    sim_ceiling(&s, 50);
    sim_run(&s, 120000, &sent, &deferred);
    sim_run(&s, 120000, &sent, &deferred);
    rate = (double)sent / 120;
    share = (double)deferred / (double)sent;
    print_message("# ceiling 50/s: %.1f/s, %.1f%% deferred\n", rate, 100 * share);
    assert_true(rate >= 40 && rate <= 58);
    assert_true(share < 0.08);
}

static void test_retry_schedule(void **state)
{
    (void)state;
    struct retry_schedule s;
    char err[128];
    retry_schedule_init(&s);
    assert_int_equal(retry_next_delay_ms(&s, 1, 0, 0), 5 * 60000);
    assert_int_equal(retry_next_delay_ms(&s, 2, 0, 0), 15 * 60000);
    assert_int_equal(retry_next_delay_ms(&s, 50, 0, 0), 240 * 60000); /* the last repeats */
    /* 3 days old: no more retries. */
    assert_int_equal(retry_next_delay_ms(&s, 9, 0, 3ull * 86400000 - 60000), UINT64_MAX);
    assert_int_equal(retry_schedule_parse(&s, "1s, 2s,4s", "10s", err, sizeof err), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(retry_next_delay_ms(&s, 3, 0, 5000), 4000);
    assert_int_equal(retry_next_delay_ms(&s, 3, 0, 7000), UINT64_MAX);
    assert_int_equal(retry_schedule_parse(&s, "1s,never", NULL, err, sizeof err), -1);
    assert_int_equal(s.n, 3); /* unchanged on error */
    assert_int_equal(retry_schedule_parse(&s, "0s", NULL, err, sizeof err), -1);
    assert_int_equal(retry_schedule_parse(&s, "", NULL, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rates),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_bucket_rate_over_time),
        cmocka_unit_test(test_bucket_unlimited_and_reload),
        cmocka_unit_test(test_backoff_cut_pause_recover),
        cmocka_unit_test(test_backoff_adopt),
        cmocka_unit_test(test_backoff_share),
        cmocka_unit_test(test_backoff_low_rate),
        cmocka_unit_test(test_backoff_random_deferrals),
        cmocka_unit_test(test_backoff_ceiling),
        cmocka_unit_test(test_retry_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
