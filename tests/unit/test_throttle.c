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

static void test_backoff_cut_pause_recover(void **state)
{
    (void)state;
    struct backoff b;
    backoff_init(&b, 0.25, 10000);
    assert_true(backoff_factor(&b, 0) == 1.0);
    backoff_trigger(&b, 0.5, 60000, 1000);
    assert_true(backoff_paused(&b, 1000));
    assert_true(backoff_paused(&b, 60999));
    assert_false(backoff_paused(&b, 61000));
    assert_true(backoff_factor(&b, 61000) == 0.5);
    assert_true(backoff_factor(&b, 71000) == 0.75); /* one step per interval after the pause */
    assert_true(backoff_factor(&b, 81000) == 1.0);
    assert_true(backoff_factor(&b, 999999) == 1.0);
    /* Triggers after each pause compound, but never below the floor. */
    for (int i = 0; i < 20; i++) {
        backoff_trigger(&b, 0.5, 0, 100000);
    }
    assert_true(backoff_factor(&b, 100000) == b.floor);
    assert_int_equal(b.triggers, 21);
    /* While paused, more triggers (replies to what was already in flight)
     * are counted but cut nothing and extend nothing. */
    backoff_init(&b, 0.25, 10000);
    backoff_trigger(&b, 0.5, 5000, 0);
    backoff_trigger(&b, 0.5, 5000, 1000);
    backoff_trigger(&b, 0.5, 5000, 4999);
    assert_int_equal(b.triggers, 3);
    assert_false(backoff_paused(&b, 5000));
    assert_true(backoff_factor(&b, 5000) == 0.5);
    /* A suspension (cut 1) pauses without cutting the rate. */
    backoff_trigger(&b, 1.0, 1000, 6000);
    assert_true(backoff_paused(&b, 6500));
    assert_true(backoff_factor(&b, 7000) == 0.5);
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
        cmocka_unit_test(test_retry_schedule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
