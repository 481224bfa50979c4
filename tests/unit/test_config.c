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
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "pool/config.h"

static struct config *load_bytes(const char *text, size_t len, char *err, size_t errlen)
{
    char path[] = "/tmp/ringmail-conf.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    struct config *c = config_load(path, err, errlen);
    unlink(path);
    return c;
}

static struct config *load_text(const char *text, char *err, size_t errlen)
{
    return load_bytes(text, strlen(text), err, errlen);
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
    assert_non_null(strstr(err, "unknown section [bogus]; want [global], [isp NAME], [isp NAME "
                                "source ADDR], [route DOMAIN], [feedback] or [bounce]"));
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

/* Issue 11: what was accepted and then misbehaved is refused at load, with its line. */
static void test_bounds_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"[route b.test]\nserver = 127.0.0.1:99999\n",
         ":2: server '127.0.0.1:99999': the port must be a number 1..65535"},
        {"[route b.test]\nserver = 127.0.0.1:0\n", ":2: server '127.0.0.1:0': the port must be"},
        {"[route b.test]\nserver = 127.0.0.1\n", ":2: server '127.0.0.1': want HOST:PORT"},
        {"[route b.test]\nserver = ::1:25\n", ":2: server '::1:25': an IPv6 address goes in"},
        {"[isp a]\nmsg_rate = 1/s\n\n[isp a]\nmsg_rate = 2/s\n",
         ":4: duplicate section [isp a] (first at line 1)"},
        {"[isp a]\nmsg_rate = 1/s\nmax_connections = 2\nmsg_rate = 2/s\n",
         ":4: duplicate setting 'msg_rate' in [isp a] (first at line 2)"},
        {"[global]\nretry = 5m\nretry = 1h\n",
         ":3: duplicate setting 'retry' in [global] (first at line 2)"},
        {"[route b.test]\nserver = 127.0.0.1:25\nserver = 127.0.0.1:26\n",
         ":3: duplicate setting 'server' in [route b.test]"},
        {"[isp a source ::1]\nmsg_rate = 1/s\n[isp a source 0::1]\nmsg_rate = 2/s\n",
         ":4: duplicate section: 0::1 is the same address as ::1"},
        {"[isp a]\nmax_connections = 0\n",
         ":2: max_connections: '0' must be at least 1 (leave it out for no limit)"},
        {"[isp a]\nmax_msgs_per_conn = 0\n", ":2: max_msgs_per_conn: '0' must be at least 1"},
        {"[isp a source ::1]\nmax_connections = 0\n",
         ":2: max_connections: '0' must be at least 1"},
        {"[isp a]\nmsg_rate = 1e-300/s\n",
         ":2: msg_rate: '1e-300/s' is below the slowest rate accepted, 0.001/s (3.6/h)"},
        {"[isp a]\nconn_rate = 3/h\n", ":2: conn_rate: '3/h' is below the slowest rate"},
        {"[isp a source ::1]\nmsg_rate = 1e-300/s\n", ":2: msg_rate: '1e-300/s' is below"},
        {"[isp a]\nmsg_rate = 1/s\nmx = *.a.test\nmax_connections\n",
         ":4: syntax error (want 'NAME = VALUE' or '[SECTION]')"},
        /* 0 once meant unlimited: now refused, saying what to write. */
        {"[isp a]\nmsg_rate = 0\n",
         ":2: msg_rate = 0 would send nothing; write 'unlimited' or a rate such as 100/s"},
        {"[isp a]\nmsg_rate = 0/s\n",
         ":2: msg_rate = 0/s would send nothing; write 'unlimited' or a rate such as 100/s"},
        {"[isp a source ::1]\nmsg_rate = 0\n", ":2: msg_rate = 0 would send nothing"},
        {"[isp a]\nconn_rate = 0\n",
         ":2: conn_rate = 0 would open no connection; write 'unlimited' or a rate such as 10/s"},
        {"[global]\nbackoff_threshold = 5\n",
         ":2: backoff_threshold: '5' is not a percentage from 0% up to 100%, like 5%"},
        {"[isp a]\nbackoff_threshold = 100%\n", ":2: backoff_threshold: '100%' is not"},
        {"[isp a]\nbackoff_window = 10ms\n", ":2: backoff_window: '10ms' is not 1s .. 1d"},
        {"[global]\nbackoff_window = soon\n", ":2: bad duration 'soon'"},
        {"[isp a source ::1]\nbackoff_window = 5s\n", ":2: 'backoff_window' cannot be set per"},
        {"[global]\nmta_sts = yes\n", ":2: mta_sts: 'yes' is not on or off"},
        {"[isp a]\nmta_sts = 1\n", ":2: mta_sts: '1' is not on or off"},
        {"[global]\ncluster_limits = shared\n", ":2: cluster_limits: 'shared' is not on or off"},
        {"[isp a]\ncluster_limits = 2\n", ":2: cluster_limits: '2' is not on or off"},
        {"[global]\ncluster_heartbeat = 100ms\n",
         ":2: cluster_heartbeat: '100ms' is not a duration from 200ms to 60s"},
        {"[global]\ncluster_heartbeat = soon\n",
         ":2: cluster_heartbeat: 'soon' is not a duration from 200ms to 60s"},
        {"[isp a]\ndane = maybe\n", ":2: dane: 'maybe' is not on or off"},
        {"[global]\ndnssec_resolver = 127.0.0.1\n",
         ":2: dnssec_resolver: '127.0.0.1' is not ADDR:PORT (a validating resolver, e.g. "
         "127.0.0.1:53)"},
        {"[global]\ndnssec_resolver = 127.0.0.1:0\n", ":2: dnssec_resolver: '127.0.0.1:0' is not"},
    };
    char err[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        err[0] = '\0';
        assert_null(load_text(cases[i].text, err, sizeof err));
        if (!strstr(err, cases[i].want)) {
            fail_msg("case %zu: got '%s', want '%s'", i, err, cases[i].want);
        }
    }
    /* A 100 KB domains line: refused at its own line, with why, not "syntax error" later. */
    size_t big = 100 * 1024;
    char *text = malloc(big + 64);
    assert_non_null(text);
    int n = snprintf(text, big + 64, "[global]\nretry = 5m\n\n[isp a]\ndomains = ");
    memset(text + n, 'x', big);
    strcpy(text + n + big, "\nmsg_rate = 1/s\n");
    assert_null(load_text(text, err, sizeof err));
    assert_non_null(strstr(err, ":5: line longer than 199 characters (split a long domains"));
    free(text);
    static const char nul[] = "[isp a]\nmsg_rate = 1/s\nmx = a\0x\n";
    assert_null(load_bytes(nul, sizeof nul - 1, err, sizeof err));
    assert_non_null(strstr(err, ":3: a NUL byte in the line"));
    /* Lists add up; rates down to the minimum, and 'unlimited', load. */
    struct config *c =
        load_text("[global]\nsource = 127.0.0.2\nsource = 127.0.0.3\n[isp a]\ndomains = a.test\n"
                  "domains = b.test\nmx = *.a.test\nmx = *.b.test\nrule = 421 => bounce\n"
                  "rule = 450 => bounce\nmsg_rate = 3.6/h\nconn_rate = unlimited\n"
                  "[route a.test]\nserver = [::1]:2525\n[route b.test]\nserver = localhost:1\n",
                  err, sizeof err);
    assert_non_null(c);
    assert_int_equal(c->nsources, 2);
    assert_int_equal(c->isps[0].ndomains, 2);
    assert_int_equal(c->isps[0].nmx, 2);
    assert_int_equal(c->isps[0].nrules, 2);
    assert_int_equal(c->nroutes, 2);
    config_free(c);
}

/* [bounce]: rules load in order, as the classifier takes them; bad lines name theirs. */
static void test_bounce_rules(void **state)
{
    (void)state;
    char err[512];
    struct config *c =
        load_text("[isp x]\nrule = 421 => bounce\n\n[bounce]\n"
                  "rule = TSS04 => policy-related soft\n"
                  "rule = 550 5.1.1 Recipient address rejected => bad-mailbox hard\n",
                  err, sizeof err);
    assert_non_null(c);
    assert_int_equal(c->bounce.rules.n, 2);
    assert_string_equal(c->bounce.rules.rule[0].pattern, "TSS04");
    assert_int_equal(c->bounce.rules.rule[0].category, BOUNCE_POLICY_RELATED);
    assert_int_equal(c->bounce.rules.rule[0].kind, BOUNCE_SOFT);
    assert_string_equal(c->bounce.rules.rule[1].pattern, "550 5.1.1 Recipient address rejected");
    assert_int_equal(c->bounce.rules.rule[1].kind, BOUNCE_HARD);
    struct bounce_result r;
    bounce_classify(&c->bounce.rules, 421, "4.7.0", "[TSS04] Messages from 192.0.2.1 deferred", &r);
    assert_string_equal(r.source, "config");
    assert_string_equal(r.rule, "TSS04");
    config_free(c);
    /* Without [bounce], no rules: the shipped ones only. */
    c = load_text("[global]\nretry = 5m\n", err, sizeof err);
    assert_non_null(c);
    assert_int_equal(c->bounce.rules.n, 0);
    config_free(c);

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"[bounce]\nrule = 550 5.1.1 => spam-ish hard\n",
         ":2: bounce rule: unknown category 'spam-ish' (want bad-mailbox, bad-domain, "
         "inactive-mailbox, quota-issues, policy-related, spam-related, content-related, "
         "routing-errors, protocol-errors, message-expired or other)"},
        {"[bounce]\n\nrule = 550 5.1.1 bad-mailbox hard\n",
         ":3: bounce rule '550 5.1.1 bad-mailbox hard': no '=>'; want 'PATTERN => CATEGORY "
         "hard|soft'"},
        {"[bounce]\nrule = 550 5.1.1 => bad-mailbox\n",
         ":2: bounce rule '550 5.1.1 => bad-mailbox': want 'hard' or 'soft' after the category"},
        {"[bounce]\nrule = 550 5.1.1 => bad-mailbox permanent\n",
         ":2: bounce rule '550 5.1.1 => bad-mailbox permanent': want 'hard' or 'soft' after the "
         "category"},
        {"[bounce]\nrule = 550 => bad-mailbox hard now\n",
         ":2: bounce rule '550 => bad-mailbox hard now': 'now' after hard|soft"},
        {"[bounce]\nrule =  => other soft\n",
         ":2: bounce rule '=> other soft': empty or too long pattern"},
        {"[bounce]\nrule = 421 =>\n", ":2: bounce rule '421 =>': no category after '=>'"},
        {"[bounce]\nsoft_limit = 3\n",
         ":2: unknown setting 'soft_limit' in [bounce]; it takes 'rule'"},
        {"[bounce]\nrule = a => other soft\n[bounce]\nrule = b => other soft\n",
         ":3: duplicate section [bounce] (first at line 1)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        assert_null(load_text(bad[i].text, err, sizeof err));
        if (!strstr(err, bad[i].want)) {
            fail_msg("%s: got '%s', want '%s'", bad[i].text, err, bad[i].want);
        }
    }
    /* The 65th rule is one too many. */
    char many[4096] = "[bounce]\n";
    for (int i = 0; i < 65; i++) {
        snprintf(many + strlen(many), sizeof many - strlen(many), "rule = p%d => other soft\n", i);
    }
    assert_null(load_text(many, err, sizeof err));
    assert_non_null(strstr(err, ":66: too many bounce rules (the limit is 64)"));
}

/* ---- [feedback] ---- */

/* A secret file of n bytes with mode; its path in path (PATH_MAX). */
static void feedback_secret(char *path, size_t n, mode_t mode)
{
    strcpy(path, "/tmp/ringmail-secret.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char b[2048];
    memset(b, 's', sizeof b);
    assert_int_equal(write(fd, b, n), (ssize_t)n);
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
}

/* "[feedback]\nreturn_path = ...\nsecret_file = PATH\n" and extra lines. */
static struct config *feedback_load(const char *secret, const char *extra, char *err, size_t errlen)
{
    char text[4096];
    snprintf(text, sizeof text,
             "[global]\nretry = 5m\n[feedback]\nreturn_path = Bounces.Sender.test\n"
             "secret_file = %s\n%s",
             secret, extra);
    return load_text(text, err, errlen);
}

/* The refusal's text, at its line. */
static void feedback_refused(const char *secret, const char *extra, const char *want)
{
    char err[512] = "";
    assert_null(feedback_load(secret, extra, err, sizeof err));
    if (!strstr(err, want)) {
        fail_msg("want '%s' in '%s'", want, err);
    }
}

static void test_feedback_off_and_defaults(void **state)
{
    (void)state;
    char err[512] = "", secret[64];
    struct config *c = load_text("[global]\nretry = 5m\n", err, sizeof err);
    assert_non_null(c);
    assert_int_equal(c->feedback.enabled, 0); /* no section: nothing changes */
    config_free(c);
    feedback_secret(secret, 32, 0600);
    c = feedback_load(secret, "", err, sizeof err);
    assert_non_null(c);
    assert_int_equal(c->feedback.enabled, 1);
    assert_string_equal(c->feedback.return_path, "bounces.sender.test"); /* lower-cased */
    assert_string_equal(c->feedback.secret_file, secret);
    assert_int_equal(c->feedback.secret_len, 32);
    assert_memory_equal(c->feedback.secret, "ssssssssssssssssssssssssssssssss", 32);
    assert_string_equal(c->feedback.unsubscribe_url, "");
    assert_true(c->feedback.complaint_pause == 0.002);
    assert_int_equal(c->feedback.complaint_min_sample, 1000);
    assert_int_equal(c->feedback.soft_bounce_limit, 3);
    assert_true(c->feedback.soft_bounce_window_ms == 7 * 86400000ull);
    config_free(c);
    c = feedback_load(secret,
                      "unsubscribe_url = https://unsub.sender.test/u/\ncomplaint_pause = 0.1%\n"
                      "complaint_min_sample = 500\nsoft_bounce_limit = 5\n"
                      "soft_bounce_window = 3d\n",
                      err, sizeof err);
    assert_non_null(c);
    assert_string_equal(c->feedback.unsubscribe_url, "https://unsub.sender.test/u");
    assert_true(c->feedback.complaint_pause == 0.001);
    assert_int_equal(c->feedback.complaint_min_sample, 500);
    assert_int_equal(c->feedback.soft_bounce_limit, 5);
    assert_true(c->feedback.soft_bounce_window_ms == 3 * 86400000ull);
    config_free(c);
    static const char *const loopback[] = {"http://127.0.0.1:8025/u", "http://localhost/u",
                                           "http://[::1]:80/u", "HTTPS://x.test"};
    for (size_t i = 0; i < 4; i++) {
        char extra[128];
        snprintf(extra, sizeof extra, "unsubscribe_url = %s\n", loopback[i]);
        c = feedback_load(secret, extra, err, sizeof err);
        assert_non_null(c);
        config_free(c);
    }
    unlink(secret);
}

static void test_feedback_secret_refused(void **state)
{
    (void)state;
    char secret[64], want[256];
    feedback_refused("/nonexistent/ringmail.secret", "",
                     ":5: feedback secret_file /nonexistent/ringmail.secret: cannot read: No such "
                     "file or directory");
    feedback_secret(secret, 31, 0600);
    snprintf(want, sizeof want, ":5: feedback secret_file %s is 31 bytes: at least 32 are needed",
             secret);
    feedback_refused(secret, "", want);
    unlink(secret);
    feedback_secret(secret, 1025, 0400);
    snprintf(want, sizeof want, ":5: feedback secret_file %s is over 1024 bytes", secret);
    feedback_refused(secret, "", want);
    unlink(secret);
    static const mode_t modes[] = {0644, 0640, 0604, 0620, 0602};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        feedback_secret(secret, 64, modes[i]);
        snprintf(want, sizeof want,
                 ":5: feedback secret_file %s is readable or writable by group or others (mode "
                 "0%o): chmod 600 it",
                 secret, (unsigned)modes[i]);
        feedback_refused(secret, "", want);
        unlink(secret);
    }
    feedback_refused("/tmp", "", ":5: feedback secret_file /tmp: not a regular file");
}

static void test_feedback_values_refused(void **state)
{
    (void)state;
    char secret[64], err[512];
    feedback_secret(secret, 32, 0600);
    static const struct {
        const char *extra, *want;
    } v[] = {
        {"unsubscribe_url = http://unsub.sender.test/u\n",
         ":6: unsubscribe_url: 'http://unsub.sender.test/u' must start with https:// (http:// "
         "only for 127.0.0.1, [::1] or localhost, to test with)"},
        {"unsubscribe_url = http://localhost.evil.test/u\n", "must start with https://"},
        {"unsubscribe_url = unsub.sender.test\n", "must start with https://"},
        {"unsubscribe_url = https:///u\n", ":6: unsubscribe_url: 'https:///u' has no host"},
        {"unsubscribe_url = https://x.test/u?list=1\n",
         ":6: unsubscribe_url: 'https://x.test/u?list=1' has a space, a control or non-ASCII "
         "octet, or one of <>\"?#\\{} (/TOKEN is appended to it)"},
        {"unsubscribe_url = https://x.test/{{email}}\n", "has a space"},
        {"unsubscribe_url = https://x.test/a b\n", "has a space"},
        {"complaint_pause = 0.2\n",
         ":6: complaint_pause: '0.2' is not a percentage above 0 and at most 100, like 0.2%"},
        {"complaint_pause = 0%\n", "complaint_pause: '0%' is not a percentage"},
        {"complaint_pause = 101%\n", "complaint_pause: '101%' is not a percentage"},
        {"complaint_min_sample = 0\n",
         ":6: complaint_min_sample: '0' is not a number 1..1000000000"},
        {"complaint_min_sample = lots\n", "complaint_min_sample: 'lots' is not a number"},
        {"soft_bounce_limit = 0\n", ":6: soft_bounce_limit: '0' is not a number 1..1000"},
        {"soft_bounce_limit = 1001\n", "soft_bounce_limit: '1001' is not a number 1..1000"},
        {"soft_bounce_window = 7 days\n",
         ":6: soft_bounce_window: bad duration unit in '7 days' (want ms, s, m, h or d)"},
        {"soft_bounce_window = 0s\n", ":6: soft_bounce_window: '0s' must be longer than 0"},
        {"bounce_limit = 3\n", ":6: unknown setting 'bounce_limit' in [feedback]"},
        {"soft_bounce_limit = 3\nsoft_bounce_limit = 4\n",
         ":7: duplicate setting 'soft_bounce_limit' in [feedback] (first at line 6)"},
        {"[feedback]\n", ":6: duplicate section [feedback] (first at line 3)"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        feedback_refused(secret, v[i].extra, v[i].want);
    }
    static const struct {
        const char *text, *want;
    } r[] = {
        {"[feedback]\nreturn_path = localhost\n",
         ":2: return_path: 'localhost' is not a domain name (labels of letters, digits and '-', "
         "like bounces.example.com)"},
        {"[feedback]\nreturn_path = bounces..sender.test\n", "is not a domain name"},
        {"[feedback]\nreturn_path = -b.sender.test\n", "is not a domain name"},
        {"[feedback]\nreturn_path = b-.sender.test\n", "is not a domain name"},
        {"[feedback]\nreturn_path = b_x.sender.test\n", "is not a domain name"},
        {"[feedback]\nreturn_path = sender.test.\n", "is not a domain name"},
        {"[feedback]\nreturn_path = b@sender.test\n", "is not a domain name"},
        {"[feedback]\nreturn_path = bounces.sender.test\n",
         ":1: [feedback] needs return_path and secret_file"},
        {"[global]\nretry = 5m\n[feedback]\n", ":3: [feedback] needs return_path and secret_file"},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        assert_null(load_text(r[i].text, err, sizeof err));
        if (!strstr(err, r[i].want)) {
            fail_msg("want '%s' in '%s'", r[i].want, err);
        }
    }
    char text[512], label[80];
    memset(label, 'a', 63);
    label[63] = '\0';
    snprintf(text, sizeof text, "[feedback]\nreturn_path = %sa.test\n", label);
    assert_null(load_text(text, err, sizeof err));
    assert_non_null(strstr(err, "is not a domain name")); /* a 64-octet label */
    unlink(secret);
}

/* backoff_threshold and backoff_window: [global]'s defaults, an ISP's own over them. */
static void test_backoff_settings(void **state)
{
    (void)state;
    char err[256] = "";
    struct config *c = load_text("[isp a]\ndomains = a.test\n", err, sizeof err);
    assert_non_null(c);
    assert_true(c->backoff_threshold == 0.05);
    assert_int_equal(c->backoff_window_ms, 30000);
    assert_true(config_backoff_threshold(c, &c->isps[0]) == 0.05);
    assert_int_equal(config_backoff_window_ms(c, &c->isps[0]), 30000);
    assert_true(config_backoff_threshold(c, NULL) == 0.05);
    config_free(c);
    c = load_text("[global]\nbackoff_threshold = 10%\nbackoff_window = 1m\n"
                  "[isp a]\nbackoff_threshold = 2.5%\n[isp b]\nbackoff_window = 5s\n"
                  "[isp c]\nbackoff_threshold = 0%\n",
                  err, sizeof err);
    assert_non_null(c);
    assert_true(config_backoff_threshold(c, &c->isps[0]) == 0.025);
    assert_int_equal(config_backoff_window_ms(c, &c->isps[0]), 60000);
    assert_true(config_backoff_threshold(c, &c->isps[1]) == 0.10);
    assert_int_equal(config_backoff_window_ms(c, &c->isps[1]), 5000);
    assert_true(config_backoff_threshold(c, &c->isps[2]) == 0); /* any matching reply */
    config_free(c);
}

/* Destination TLS policy: MTA-STS on by default, per ISP off; DANE only
 * with a dnssec_resolver, per ISP off. */
static void test_dest_policy_settings(void **state)
{
    (void)state;
    char err[256] = "";
    struct config *c = load_text("[isp a]\ndomains = a.test\n", err, sizeof err);
    assert_non_null(c);
    assert_int_equal(config_mta_sts(c, NULL), 1);
    assert_int_equal(config_mta_sts(c, &c->isps[0]), 1);
    assert_int_equal(config_dane(c, &c->isps[0]), 0);
    config_free(c);
    c = load_text("[global]\nmta_sts = off\ndnssec_resolver = 127.0.0.54:5353\n"
                  "[isp a]\nmta_sts = on\n[isp b]\ndane = off\n[isp c]\ndomains = c.test\n",
                  err, sizeof err);
    assert_non_null(c);
    assert_string_equal(c->dnssec_resolver, "127.0.0.54:5353");
    assert_int_equal(config_mta_sts(c, NULL), 0);
    assert_int_equal(config_mta_sts(c, &c->isps[0]), 1);
    assert_int_equal(config_mta_sts(c, &c->isps[2]), 0);
    assert_int_equal(config_dane(c, &c->isps[0]), 1);
    assert_int_equal(config_dane(c, &c->isps[1]), 0);
    assert_int_equal(config_dane(c, NULL), 1);
    config_free(c);
}

/* Cluster-wide limits: on by default with a 1 s heartbeat, per ISP off. */
static void test_cluster_settings(void **state)
{
    (void)state;
    char err[256] = "";
    struct config *c = load_text("[isp a]\ndomains = a.test\n", err, sizeof err);
    assert_non_null(c);
    assert_int_equal(config_cluster_limits(c, NULL), 1);
    assert_int_equal(config_cluster_limits(c, &c->isps[0]), 1);
    assert_int_equal(c->cluster_heartbeat_ms, 1000);
    config_free(c);
    c = load_text("[global]\ncluster_limits = off\ncluster_heartbeat = 2s\n"
                  "[isp a]\ncluster_limits = on\n[isp b]\ndomains = b.test\n",
                  err, sizeof err);
    assert_non_null(c);
    assert_int_equal(config_cluster_limits(c, NULL), 0);
    assert_int_equal(config_cluster_limits(c, &c->isps[0]), 1);
    assert_int_equal(config_cluster_limits(c, &c->isps[1]), 0);
    assert_int_equal(c->cluster_heartbeat_ms, 2000);
    config_free(c);
}

static char *diff_of(const char *a, const char *b, int *n)
{
    char err[256] = "";
    struct config *x = load_text(a, err, sizeof err);
    assert_non_null(x);
    struct config *y = load_text(b, err, sizeof err);
    assert_non_null(y);
    buf_t out = BUF_INIT;
    *n = config_diff(x, y, &out);
    char *s = strdup(buf_cstr(&out));
    buf_free(&out);
    config_free(x);
    config_free(y);
    return s;
}

/* What a reload says it changed: one line per setting, in the file's words. */
static void test_config_diff(void **state)
{
    (void)state;
    static const char base[] =
        "[global]\nretry = 5m, 15m\nbackoff_interval = 60s\n"
        "[isp gmail]\ndomains = gmail.com, googlemail.com\nmsg_rate = 100/s\n"
        "max_connections = 20\nrule = 421 4.7.28 => backoff 0.5 10m\nrule = S3150 => suspend 1h\n"
        "[isp microsoft]\ndomains = outlook.com\nmsg_rate = 20000/h\n"
        "[route gmail.com]\nserver = 127.0.0.1:2525\n";
    int n;
    char *d = diff_of(base, base, &n);
    assert_int_equal(n, 0);
    assert_string_equal(d, "");
    free(d);
    d = diff_of(base,
                "[global]\nretry = 1m, 5m\nbackoff_interval = 60s\nbackoff_threshold = 10%\n"
                "[isp gmail]\ndomains = googlemail.com, gmail.com, gmail.test\nmsg_rate = 50/s\n"
                "max_connections = 20\nrule = S3150 => suspend 1h\n"
                "rule = 421 4.7.28 => backoff 0.5 5m\n"
                "[isp yahoo]\ndomains = yahoo.com\n"
                "[route gmail.com]\nserver = 127.0.0.1:2526\n",
                &n);
    assert_string_equal(d, "global: retry 5m,15m -> 1m,5m\n"
                           "global: backoff_threshold 5% -> 10%\n"
                           "isp gmail: domains added: gmail.test\n"
                           "isp gmail: msg_rate 100/s -> 50/s\n"
                           "isp gmail: backoff_threshold 5% -> 10%\n"
                           "isp gmail: rule added: 421 4.7.28 => backoff 0.5 5m\n"
                           "isp gmail: rule removed: 421 4.7.28 => backoff 0.5 10m\n"
                           "isp yahoo: added\n"
                           "isp microsoft: removed\n"
                           "route gmail.com: server 127.0.0.1:2525 -> 127.0.0.1:2526\n");
    assert_int_equal(n, 10);
    free(d);
    /* Rates in the unit they were written in; a reordered rule list is said; per-source limits. */
    d = diff_of("[isp a]\nmsg_rate = 20000/h\nconn_rate = 10/s\nrule = 421 => backoff 0.5 1m\n"
                "rule = 451 => backoff 0.7 1m\n[isp a source 192.0.2.1]\nmsg_rate = 20/h\n",
                "[isp a]\nmsg_rate = 30000/h\nconn_rate = unlimited\n"
                "rule = 451 => backoff 0.7 1m\nrule = 421 => backoff 0.5 1m\n"
                "[isp a source 192.0.2.1]\nmsg_rate = 50/h\n[isp a source 192.0.2.2]\n"
                "max_connections = 2\n",
                &n);
    assert_string_equal(d, "isp a: msg_rate 20000/h -> 30000/h\n"
                           "isp a: conn_rate 10/s -> unlimited\n"
                           "isp a: rules reordered (the first that matches a reply acts)\n"
                           "isp a source 192.0.2.1: msg_rate 20/h -> 50/h\n"
                           "isp a source 192.0.2.2: added\n");
    assert_int_equal(n, 5);
    free(d);
    /* Destination TLS policy: what is in force per ISP, and a resolver that
     * only a restart changes. */
    d = diff_of("[isp a]\ndomains = a.test\n[isp b]\nmta_sts = on\n",
                "[global]\nmta_sts = off\ndnssec_resolver = 127.0.0.54:53\n[isp a]\n"
                "domains = a.test\n[isp b]\nmta_sts = on\ndane = off\n",
                &n);
    assert_string_equal(d, "global: mta_sts on -> off\n"
                           "global: dnssec_resolver (none) -> 127.0.0.54:53 (takes effect at the "
                           "next start)\n"
                           "isp a: mta_sts on -> off\n"
                           "isp a: dane off -> on\n");
    assert_int_equal(n, 4);
    free(d);
    /* The reload's message. */
    char err[256] = "";
    struct config *c = load_text(base, err, sizeof err);
    assert_non_null(c);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    config_reload_say(f, "r.conf", c);
    c->changes = strdup("isp gmail: msg_rate 100/s -> 50/s\nisp yahoo: added\n");
    c->nchanges = 2;
    config_reload_say(f, "r.conf", c);
    fclose(f);
    assert_string_equal(text, "ringmail send: config reloaded from r.conf: no changes\n"
                              "ringmail send: config reloaded from r.conf: 2 changes\n"
                              "  isp gmail: msg_rate 100/s -> 50/s\n"
                              "  isp yahoo: added\n");
    free(text);
    config_free(c);
    /* Durations and rates as a file writes them. */
    char t[64];
    config_duration_text(600000, t, sizeof t);
    assert_string_equal(t, "10m");
    config_duration_text(1500, t, sizeof t);
    assert_string_equal(t, "1500ms");
    config_duration_text(7200000, t, sizeof t);
    assert_string_equal(t, "2h");
    config_rate_text(1.0 / 60, t, sizeof t);
    assert_string_equal(t, "1/min");
    config_rate_text(0.5, t, sizeof t);
    assert_string_equal(t, "30/min");
    config_rate_text(-1, t, sizeof t);
    assert_string_equal(t, "unlimited");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_config_loads),
        cmocka_unit_test(test_sources),
        cmocka_unit_test(test_source_lanes),
        cmocka_unit_test(test_errors_name_the_line),
        cmocka_unit_test(test_defaults_and_routes),
        cmocka_unit_test(test_bounds_refused),
        cmocka_unit_test(test_backoff_settings),
        cmocka_unit_test(test_dest_policy_settings),
        cmocka_unit_test(test_config_diff),
        cmocka_unit_test(test_bounce_rules),
        cmocka_unit_test(test_feedback_off_and_defaults),
        cmocka_unit_test(test_feedback_secret_refused),
        cmocka_unit_test(test_feedback_values_refused),
        cmocka_unit_test(test_cluster_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
