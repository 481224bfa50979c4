/*
 * test_top - `ringmail top`'s reading of a sender's /metrics
 * (campaign/top_metrics.c top_metrics_parse): per ISP, whatever other labels
 * a series carries, with escaped label values; the lowest backoff factor,
 * any pause or hold, limits and gauges summed (unlimited when one is); and
 * text that is not a ringmail exposition. The ISPs' rows start empty, as
 * top_free_snapshot leaves them before each refresh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "campaign/top_int.h"

static int parse(struct top *t, const char *text)
{
    return top_metrics_parse(t, text, strlen(text));
}

static void done(struct top *t)
{
    top_free_snapshot(t);
    for (size_t i = 0; i < t->nisps; i++) {
        free(t->isps[i].name);
    }
    free(t->isps);
}

static void test_top_metrics_labels(void **state)
{
    (void)state;
    struct top t;
    memset(&t, 0, sizeof t);
    assert_int_equal(parse(&t, "# HELP ringmail_rate_limit x\n"
                               "# TYPE ringmail_rate_limit gauge\n"
                               "ringmail_rate_limit{isp=\"gmail\"} 100\n"
                               "ringmail_rate_limit{campaign=\"3\",isp=\"gmail\"} 50\n"
                               "ringmail_rate_limit{isp=\"q \\\"x\\\" \\\\ y\",source=\"::1\"} 7\n"
                               "ringmail_connections_open{ isp=\"gmail\", } 4 1700000000000\n"
                               "ringmail_queue_depth{isp=\"gmail\"} 12\r\n"),
                     0);
    struct top_isp *g = top_isp_get(&t, "gmail");
    assert_true(g->m_seen);
    assert_true(g->m_limit == 150);
    assert_true(g->m_conns == 4);
    assert_true(g->m_queue == 12);
    assert_true(g->m_backoff == 1);
    struct top_isp *q = top_isp_get(&t, "q \"x\" \\ y");
    assert_true(q->m_seen);
    assert_true(q->m_limit == 7);
    assert_int_equal(t.nisps, 2);
    done(&t);
}

static void test_top_metrics_combine(void **state)
{
    (void)state;
    struct top t;
    memset(&t, 0, sizeof t);
    /* Two senders' answers, one after the other, as top_metrics_refresh reads them. */
    assert_int_equal(parse(&t, "ringmail_backoff_factor{isp=\"yahoo\"} 1\n"
                               "ringmail_backoff_active{isp=\"yahoo\"} 0\n"
                               "ringmail_rate_limit{isp=\"yahoo\"} 20\n"
                               "ringmail_isp_held{isp=\"yahoo\"} 0\n"),
                     0);
    assert_int_equal(parse(&t, "ringmail_backoff_factor{isp=\"yahoo\"} 0.25\n"
                               "ringmail_backoff_active{isp=\"yahoo\"} 1\n"
                               "ringmail_rate_limit{isp=\"yahoo\"} -1\n"
                               "ringmail_isp_held{isp=\"yahoo\"} 1\n"),
                     0);
    struct top_isp *y = top_isp_get(&t, "yahoo");
    assert_true(y->m_backoff == 0.25);
    assert_true(y->m_paused);
    assert_true(y->m_held);
    assert_true(y->m_limit < 0); /* one sender unlimited: unlimited */
    done(&t);
}

static void test_top_metrics_not_ours(void **state)
{
    (void)state;
    struct top t;
    memset(&t, 0, sizeof t);
    assert_int_equal(parse(&t, ""), -1);
    assert_int_equal(parse(&t, "<html>Not Found</html>\n"), -1);
    assert_int_equal(parse(&t, "# HELP go_goroutines x\ngo_goroutines 12\n"), -1);
    /* Malformed samples of our names are skipped, not guessed at. */
    assert_int_equal(parse(&t, "ringmail_rate_limit{isp=\"a\" 5\n"
                               "ringmail_rate_limit{isp=\"b\"} five\n"
                               "ringmail_rate_limit{other=\"c\"} 5\n"
                               "ringmail_rate_limit 5\n"
                               "ringmail_rate_limit{isp=\"d\"}\n"),
                     0);
    assert_int_equal(t.nisps, 0);
    done(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_top_metrics_labels),
        cmocka_unit_test(test_top_metrics_combine),
        cmocka_unit_test(test_top_metrics_not_ours),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
