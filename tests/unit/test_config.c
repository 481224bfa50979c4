/*
 * test_config - the operator's file: parsing, errors with line numbers,
 * ISP classification (domains and MX rollup), reply rules; and the
 * shipped example must always load.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pool/config.h"

static struct config *load_text(const char *text, char *err, size_t errlen)
{
    char path[] = "/tmp/ringmail-conf.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct config *c = config_load(path, err, errlen);
    unlink(path);
    return c;
}

static void test_example_config_loads(void **state)
{
    (void)state;
    char err[256] = "";
    struct config *c = config_load("ringmail.conf.example", err, sizeof err);
    assert_non_null(c);
    assert_string_equal(err, "");
    assert_int_equal(c->nisps, 6);
    const char *mx[] = {"alt1.gmail-smtp-in.l.google.com"};
    const struct config_isp *isp = config_isp_for(c, "example-company.com", mx, 1);
    assert_string_equal(isp->name, "gmail"); /* MX rollup */
    assert_string_equal(config_isp_for(c, "HOTMAIL.com", NULL, 0)->name, "microsoft");
    assert_string_equal(config_isp_for(c, "163.com", NULL, 0)->name, "netease");
    assert_string_equal(config_isp_for(c, "unknown.test", NULL, 0)->name, "default");
    isp = config_isp_for(c, "gmail.com", NULL, 0);
    assert_true(isp->msg_rate == 300.0);
    assert_int_equal(isp->max_connections, 20);
    const struct config_rule *r =
        config_rule_match(isp, 421, "4.7.28", "Our system has detected an unusual rate");
    assert_non_null(r);
    assert_int_equal(r->action, CONFIG_ACTION_BACKOFF);
    assert_true(r->cut == 0.5);
    assert_int_equal(r->pause_ms, 600000);
    isp = config_isp_for(c, "yahoo.com", NULL, 0);
    r = config_rule_match(isp, 421, "4.7.0", "[TSS04] Messages from 1.2.3.4 temporarily deferred");
    assert_non_null(r);
    assert_null(config_rule_match(isp, 250, "2.0.0", "ok"));
    config_free(c);
}

static void test_errors_name_the_line(void **state)
{
    (void)state;
    char err[256];
    struct config *c =
        load_text("[global]\nretry = 5m\n\n[isp x]\nmsg_rate = fast\n", err, sizeof err);
    assert_null(c);
    assert_non_null(strstr(err, ":5: "));
    assert_non_null(strstr(err, "bad rate"));
    c = load_text("[isp x]\nrule = 421 => explode\n", err, sizeof err);
    assert_null(c);
    assert_non_null(strstr(err, ":2: "));
    c = load_text("[isp x]\nmax_connections = -3\n", err, sizeof err);
    assert_null(c);
    c = load_text("[bogus]\na = b\n", err, sizeof err);
    assert_null(c);
    assert_non_null(strstr(err, "unknown section"));
    c = load_text("[isp x]\nrule = 421 => backoff 1.5 5m\n", err, sizeof err);
    assert_null(c);
    assert_null(config_load("/nonexistent/ringmail.conf", err, sizeof err));
    assert_non_null(strstr(err, "cannot read"));
}

static void test_defaults_and_routes(void **state)
{
    (void)state;
    char err[256];
    struct config *c = load_text("[global]\ntls = opportunistic\nretry = 1s,2s\nmax_age = 1m\n"
                                 "[isp a]\ndomains = *.a.test\n"
                                 "[isp b]\ndomains = b.test\ntls = verify\n"
                                 "[route example.test]\nserver = 127.0.0.5:2525\n",
                                 err, sizeof err);
    assert_non_null(c);
    assert_int_equal(c->isps[0].tls, SMTP_TLS_OPPORTUNISTIC); /* global default applies */
    assert_int_equal(c->isps[1].tls, SMTP_TLS_VERIFY);        /* explicit wins */
    assert_true(c->isps[0].msg_rate < 0);                     /* unset: unlimited */
    assert_string_equal(config_isp_for(c, "mx.a.test", NULL, 0)->name, "a");
    assert_null(config_isp_for(c, "c.test", NULL, 0)); /* no default ISP in this file */
    assert_int_equal(c->retry.n, 2);
    assert_int_equal(c->retry.max_age_ms, 60000);
    assert_int_equal(c->nroutes, 1);
    assert_string_equal(c->routes[0].server, "127.0.0.5:2525");
    config_free(c);
}

static void test_sources(void **state)
{
    (void)state;
    char err[256];
    struct config *c = load_text("[global]\nsource = 127.0.0.2\nsource = 127.0.0.3 3\n"
                                 "source = ::1\n",
                                 err, sizeof err);
    assert_non_null(c);
    assert_int_equal(c->nsources, 3);
    assert_string_equal(c->sources[0].addr, "127.0.0.2");
    assert_int_equal(c->sources[0].weight, 1);
    assert_int_equal(c->sources[1].weight, 3);
    assert_string_equal(c->sources[2].addr, "::1");
    config_free(c);
    assert_null(
        load_text("[global]\nsource = 127.0.0.2\nsource = mail.example.com\n", err, sizeof err));
    assert_non_null(strstr(err, ":3: source 'mail.example.com': not an IPv4 or IPv6 address"));
    assert_null(load_text("[global]\nsource = 127.0.0.2 0\n", err, sizeof err));
    assert_non_null(strstr(err, ":2: source"));
}

/* [isp NAME source ADDR]: a source's own limits; the rest from the ISP. */
static void test_source_lanes(void **state)
{
    (void)state;
    char err[256];
    struct config *c = load_text("[isp gmail]\nmsg_rate = 300/s\nmax_connections = 20\n"
                                 "[isp gmail source 0:0::1]\nmsg_rate = 20/h\n"
                                 "max_connections = 2\n"
                                 "[isp gmail source 192.0.2.11]\nmax_msgs_per_conn = 5\n"
                                 "conn_rate = 1/s\nmax_rcpts_per_msg = 9\n",
                                 err, sizeof err);
    assert_null(c); /* max_rcpts_per_msg is per ISP, not per source */
    assert_non_null(strstr(err, ":10: 'max_rcpts_per_msg' cannot be set per source"));
    c = load_text("[isp gmail]\nmsg_rate = 300/s\nmax_connections = 20\n"
                  "[isp gmail source 0:0::1]\nmsg_rate = 20/h\nmax_connections = 2\n"
                  "[isp gmail source 192.0.2.11]\nmax_msgs_per_conn = 5\nconn_rate = 1/s\n",
                  err, sizeof err);
    assert_non_null(c);
    assert_int_equal(c->nisps, 1);
    const struct config_isp *g = &c->isps[0];
    assert_int_equal(g->nlanes, 2);
    const struct config_lane *l = config_lane_for(g, "::1"); /* the same address, written apart */
    assert_non_null(l);
    assert_int_equal(l->set, CONFIG_LANE_MSG_RATE | CONFIG_LANE_MAX_CONNECTIONS);
    assert_true(l->msg_rate > 20.0 / 3600 - 1e-9 && l->msg_rate < 20.0 / 3600 + 1e-9);
    assert_int_equal(l->max_connections, 2);
    l = config_lane_for(g, "192.0.2.11");
    assert_non_null(l);
    assert_int_equal(l->set, CONFIG_LANE_MAX_MSGS_PER_CONN | CONFIG_LANE_CONN_RATE);
    assert_int_equal(l->max_msgs_per_conn, 5);
    assert_null(config_lane_for(g, "192.0.2.12"));
    assert_int_equal(g->max_connections, 20); /* the ISP's own stay */
    config_free(c);
    assert_null(
        load_text("[isp gmail source mail.example.com]\nmsg_rate = 1/s\n", err, sizeof err));
    assert_non_null(strstr(err, ":2: [isp gmail source mail.example.com]: not an IPv4 or IPv6"));
    assert_null(load_text("[isp gmail]\nmax_rcpts_per_msg = 1001\n", err, sizeof err));
    assert_non_null(strstr(err, ":2: max_rcpts_per_msg: '1001' is not 1..1000"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_config_loads), cmocka_unit_test(test_sources),
        cmocka_unit_test(test_source_lanes),         cmocka_unit_test(test_errors_name_the_line),
        cmocka_unit_test(test_defaults_and_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
