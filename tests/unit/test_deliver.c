/*
 * test_deliver - the delivery pool with a fake resolver and a fake clock
 *
 * The pool takes a resolver and a clock through pool_options (the seams);
 * these tests give it a table of MX hosts and addresses and a clock they
 * move by hand, and drive its internal functions (pool/deliver_int.h)
 * where that is cheaper than a connection: ISP classification and lane
 * choice, backoff on a 421 and its recovery, the retry heap's order,
 * config reload. MX fallback runs over real sockets: the first exchanger
 * refuses the connection, the second is a small SMTP server on a thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/client_conn.h"
#include "engine/loop.h"
#include "engine/trace.h"
#include "pool/config.h"
#include "pool/deliver_int.h"

/* ---- the fake clock ---- */

static uint64_t fake_now = 5000000;

static uint64_t fake_clock(void)
{
    return fake_now;
}

/* ---- the fake resolver: MX hosts by domain, an IPv4 address by host ---- */

struct fake_mx {
    const char *domain;
    const char *hosts[3]; /* in MX order; NULL ends */
};

struct fake_host {
    const char *host;
    const char *ip;
};

struct fake_dns {
    const struct fake_mx *mx;
    const struct fake_host *hosts;
    unsigned mx_queries, addr_queries;
};

static void fake_resolve_mx(void *ctx, const char *domain, dns_mx_cb cb, void *user)
{
    struct fake_dns *f = ctx;
    f->mx_queries++;
    struct dns_mx_host hosts[3];
    struct dns_mx_result r = {.status = DNS_NXDOMAIN,
                              .hosts = hosts,
                              .ttl = 300,
                              .ascii_domain = domain,
                              .error = "no such domain (fake)"};
    for (const struct fake_mx *m = f->mx; m && m->domain; m++) {
        if (strcmp(m->domain, domain) != 0) {
            continue;
        }
        for (size_t i = 0; i < 3 && m->hosts[i]; i++) {
            snprintf(hosts[i].name, sizeof hosts[i].name, "%s", m->hosts[i]);
            hosts[i].pref = 10 * (unsigned)(i + 1);
            r.n = i + 1;
        }
        r.status = DNS_OK;
        r.error = NULL;
    }
    cb(user, &r);
}

static void fake_resolve_addr(void *ctx, const char *host, dns_addr_cb cb, void *user)
{
    struct fake_dns *f = ctx;
    f->addr_queries++;
    struct sockaddr_storage ss;
    struct dns_addr_result r = {.status = DNS_NXDOMAIN, .addrs = &ss, .error = "no address"};
    memset(&ss, 0, sizeof ss);
    for (const struct fake_host *h = f->hosts; h && h->host; h++) {
        if (strcmp(h->host, host) == 0) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            in->sin_family = AF_INET;
            assert_int_equal(inet_pton(AF_INET, h->ip, &in->sin_addr), 1);
            r.status = DNS_OK;
            r.n = 1;
            r.error = NULL;
        }
    }
    cb(user, &r);
}

/* ---- a pool with both seams, and what it reported ---- */

struct result {
    char rcpt[128];
    enum smtp_outcome outcome;
    char reason[64];
    char mx[128];
    char addr[64];
    char rule[128];
    int final;
    unsigned attempt;
    uint64_t retry_in_ms;
};

struct fixture {
    struct loop *loop;
    struct pool *p;
    struct fake_dns dns;
    struct pool_resolver res;
    struct result results[16];
    size_t nresults;
    size_t released;
    struct loop_timer guard, finish; /* the socket test's time limit and its end */
    int finish_on_final;             /* a final result arms finish */
    int timed_out;
    int with_on_held;       /* fx_start gives the pool on_held */
    char held_rcpts[4][64]; /* what on_held got, and for which ISP */
    char held_isp[4][32];
    size_t nheld;
    int with_on_suspend; /* fx_start gives the pool on_suspend */
    char suspended_isp[32], suspended_why[256];
    int64_t suspended_until;
    unsigned nsuspended;
};

static void on_result(void *user, struct pool_msg *m, const struct pool_attempt *a)
{
    struct fixture *fx = user;
    assert_true(fx->nresults < sizeof fx->results / sizeof fx->results[0]);
    struct result *r = &fx->results[fx->nresults++];
    snprintf(r->rcpt, sizeof r->rcpt, "%s", m->rcpt);
    r->outcome = a->outcome;
    snprintf(r->reason, sizeof r->reason, "%s", a->reason);
    snprintf(r->mx, sizeof r->mx, "%s", a->mx);
    snprintf(r->addr, sizeof r->addr, "%s", a->addr);
    snprintf(r->rule, sizeof r->rule, "%s", a->rule ? a->rule : "");
    r->final = a->final;
    r->attempt = a->attempt;
    r->retry_in_ms = a->retry_in_ms;
    if (a->final && fx->finish_on_final) {
        loop_timer_set(fx->loop, &fx->finish, 0); /* the socket test is done */
    }
}

static void on_release(void *user, struct pool_msg *m)
{
    struct fixture *fx = user;
    (void)m;
    fx->released++;
}

static void on_held(void *user, struct pool_msg *m, const char *isp)
{
    struct fixture *fx = user;
    assert_true(fx->nheld < 4);
    snprintf(fx->held_rcpts[fx->nheld], sizeof fx->held_rcpts[0], "%s", m->rcpt);
    snprintf(fx->held_isp[fx->nheld], sizeof fx->held_isp[0], "%s", isp);
    fx->nheld++;
}

static void on_suspend(void *user, const char *isp, int64_t until_ms, const char *why)
{
    struct fixture *fx = user;
    snprintf(fx->suspended_isp, sizeof fx->suspended_isp, "%s", isp);
    snprintf(fx->suspended_why, sizeof fx->suspended_why, "%s", why);
    fx->suspended_until = until_ms;
    fx->nsuspended++;
}

static struct config *config_text(const char *text)
{
    char path[] = "/tmp/ringmail-test-deliver.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char err[256] = "";
    struct config *c = config_load(path, err, sizeof err);
    unlink(path);
    if (!c) {
        fail_msg("config: %s", err);
    }
    return c;
}

static void on_guard(struct loop_timer *t)
{
    struct fixture *fx = t->owner;
    fx->timed_out = 1;
    loop_stop(fx->loop);
}

static void on_finish(struct loop_timer *t)
{
    struct fixture *fx = t->owner;
    loop_timer_cancel(fx->loop, &fx->guard);
    pool_stop(fx->p); /* the session QUITs; the loop ends when it is closed */
    loop_stop_when_idle(fx->loop);
}

/* fx_start - a pool on a fresh loop with the fake resolver; fake clock
 * unless real_clock; plaintext (no TLS contexts) to mx_port */
static void fx_start(struct fixture *fx, const char *conf, unsigned mx_port, int real_clock)
{
    fx->loop = loop_new(64);
    assert_non_null(fx->loop);
    loop_timer_init(&fx->guard, on_guard, fx);
    loop_timer_init(&fx->finish, on_finish, fx);
    fx->res = (struct pool_resolver){fake_resolve_mx, fake_resolve_addr, &fx->dns};
    struct pool_options o = {
        .config = config_text(conf),
        .mx_port = mx_port ? mx_port : 25,
        .tls_override = 1,
        .tls = SMTP_TLS_NONE,
        .timeout_ms = 5000,
        .on_result = on_result,
        .user = fx,
        .resolve = &fx->res,
        .clock = real_clock ? NULL : fake_clock,
        .on_held = fx->with_on_held ? on_held : NULL,
        .on_suspend = fx->with_on_suspend ? on_suspend : NULL,
    };
    char err[256] = "";
    fx->p = pool_new(fx->loop, &o, err, sizeof err);
    if (!fx->p) {
        fail_msg("pool_new: %s", err);
    }
}

static void fx_end(struct fixture *fx)
{
    loop_timer_cancel(fx->loop, &fx->guard);
    loop_timer_cancel(fx->loop, &fx->finish);
    pool_stop(fx->p);
    pool_release_all(fx->p, on_release);
    pool_free(fx->p);
    loop_free(fx->loop);
    client_conn_thread_done();
}

static void msg_init(struct pool_msg *m, const char *rcpt)
{
    memset(m, 0, sizeof *m);
    m->rcpt = rcpt;
    m->mail_from = "sender@example.com";
    m->data = "Subject: t\r\n\r\nhello\r\n";
    m->len = strlen(m->data);
}

/* dest_named - the pool's destination for domain (it must exist) */
static struct pool_dest *dest_named(struct pool *p, const char *domain)
{
    for (struct list_node *n = p->active.first; n; n = n->next) {
        struct pool_dest *d = list_entry(n, struct pool_dest, active_node);
        if (strcmp(d->domain, domain) == 0) {
            return d;
        }
    }
    fail_msg("no active destination %s", domain);
    return NULL;
}

/* resolve_all - what the pump does first for each destination, without
 * opening any connection */
static void resolve_all(struct pool *p)
{
    for (struct list_node *n = p->active.first; n; n = n->next) {
        pool_dest_resolve(p, list_entry(n, struct pool_dest, active_node));
    }
}

static const struct pool_isp_stats *isp_stats(struct pool *p, const char *name,
                                              struct pool_isp_stats *st, size_t max)
{
    size_t n = pool_isp_stats(p, st, max);
    for (size_t i = 0; i < n && i < max; i++) {
        if (strcmp(st[i].name, name) == 0) {
            return &st[i];
        }
    }
    fail_msg("no ISP %s", name);
    return NULL;
}

static const struct fake_mx world_mx[] = {
    {"gmail.com", {"gmail-smtp-in.l.google.com", NULL}},
    {"yahoo.com", {"mta5.am0.yahoodns.net", NULL}},
    {"example.org", {"aspmx.l.google.com", NULL}}, /* a company on Google: MX rollup */
    {"unknown.test", {"mx.unknown.test", NULL}},
    {"example.net", {"mx.example.net", NULL}},
    {NULL, {NULL}},
};

static const struct fake_host world_hosts[] = {
    {"gmail-smtp-in.l.google.com", "127.0.0.1"},
    {"mta5.am0.yahoodns.net", "127.0.0.1"},
    {"aspmx.l.google.com", "127.0.0.1"},
    {"mx.unknown.test", "127.0.0.1"},
    {"mx.example.net", "127.0.0.1"},
    {NULL, NULL},
};

/* ---- ISP classification by domain (and MX), and the lane a connection takes ---- */

static void test_isp_classification_and_lane_choice(void **state)
{
    (void)state;
    struct fixture fx = {.dns = {world_mx, world_hosts, 0, 0}};
    fx_start(&fx,
             "[global]\nsource = 127.0.0.1 2\nsource = 127.0.0.2 1\n"
             "[isp gmail]\ndomains = gmail.com\nmx = *.google.com\nmax_connections = 3\n"
             "[isp yahoo]\ndomains = yahoo.com\n",
             0, 0);
    struct pool_msg m[4];
    const char *rcpts[] = {"a@gmail.com", "b@yahoo.com", "c@example.org", "d@unknown.test"};
    for (int i = 0; i < 4; i++) {
        msg_init(&m[i], rcpts[i]);
        pool_submit(fx.p, &m[i]);
    }
    assert_int_equal(pool_pending(fx.p), 4);
    resolve_all(fx.p);
    assert_int_equal(fx.dns.mx_queries, 4);
    assert_string_equal(dest_named(fx.p, "gmail.com")->isp->name, "gmail");
    assert_string_equal(dest_named(fx.p, "yahoo.com")->isp->name, "yahoo");
    assert_string_equal(dest_named(fx.p, "example.org")->isp->name, "gmail");
    assert_string_equal(dest_named(fx.p, "unknown.test")->isp->name, "default");
    assert_int_equal(dest_named(fx.p, "gmail.com")->state, DEST_READY);
    struct pool_isp_stats st[8];
    assert_int_equal(isp_stats(fx.p, "gmail", st, 8)->queued, 2);
    assert_int_equal(isp_stats(fx.p, "yahoo", st, 8)->queued, 1);
    assert_int_equal(isp_stats(fx.p, "default", st, 8)->queued, 1);

    /* One lane per source; new connections take them by weight, 2:1. */
    struct pool_isp *gmail = pool_isp_named(fx.p, "gmail");
    assert_int_equal(gmail->nlanes, 2);
    size_t picks[6];
    uint64_t wake = UINT64_MAX;
    for (int i = 0; i < 6; i++) {
        struct pool_lane *l = pool_lane_pick(fx.p, gmail, fake_now, &wake);
        assert_non_null(l);
        picks[i] = l->source;
    }
    size_t want[6] = {0, 0, 1, 0, 0, 1};
    assert_memory_equal(picks, want, sizeof want);
    /* A full lane is passed over: every pick takes the other source. */
    gmail->lanes[0].open = gmail->lanes[0].max_connections;
    assert_int_equal(gmail->lanes[0].max_connections, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pool_lane_pick(fx.p, gmail, fake_now, &wake)->source, 1);
    }
    gmail->lanes[1].open = 3;
    assert_true(pool_isp_full(gmail));
    assert_null(pool_lane_pick(fx.p, gmail, fake_now, &wake));
    gmail->lanes[0].open = gmail->lanes[1].open = 0;
    fx_end(&fx);
    assert_int_equal(fx.released, 4);
}

/* ---- a 421 rate reply backs the lane off; then it recovers ---- */

static void test_backoff_and_recovery(void **state)
{
    (void)state;
    struct fixture fx = {.dns = {world_mx, world_hosts, 0, 0}};
    fx_start(&fx,
             "[global]\nretry = 1m, 5m\nbackoff_step = 0.25\nbackoff_interval = 60s\n"
             "backoff_threshold = 0%\n" /* one matching reply cuts (test_throttle: the share) */
             "[isp gmail]\ndomains = gmail.com\nmsg_rate = 100/s\n"
             "rule = 421 4.7.28 => backoff 0.5 30s\n",
             0, 0);
    struct pool_msg m[2];
    msg_init(&m[0], "a@gmail.com");
    msg_init(&m[1], "b@gmail.com");
    pool_submit(fx.p, &m[0]);
    pool_submit(fx.p, &m[1]);
    resolve_all(fx.p);
    struct pool_dest *d = dest_named(fx.p, "gmail.com");
    struct pool_isp *gmail = pool_isp_named(fx.p, "gmail");
    struct pool_isp_stats st[4];

    /* A 421 no rule names: deferred, and the rate stays. */
    pool_settle(fx.p, pool_dequeue(fx.p, d), NULL,
                &(struct pool_outcome){.outcome = SMTP_OUTCOME_DEFERRED,
                                       .reason = "rcpt_deferred",
                                       .code = 421,
                                       .enhanced = "4.3.0",
                                       .text = "try again later"});
    assert_int_equal(fx.nresults, 1);
    assert_string_equal(fx.results[0].rule, "");
    assert_false(fx.results[0].final);
    assert_int_equal(fx.results[0].retry_in_ms, 60000);
    assert_int_equal(isp_stats(fx.p, "gmail", st, 4)->backoff_triggers, 0);
    assert_true(isp_stats(fx.p, "gmail", st, 4)->rate_limit == 100.0);

    /* Gmail's rate reply: the lane's rate halves and it pauses 30 s. */
    uint64_t t0 = fake_now;
    pool_settle(fx.p, pool_dequeue(fx.p, d), NULL,
                &(struct pool_outcome){.outcome = SMTP_OUTCOME_DEFERRED,
                                       .reason = "rcpt_deferred",
                                       .code = 421,
                                       .enhanced = "4.7.28",
                                       .text = "Our system has detected an unusual rate"});
    assert_int_equal(fx.nresults, 2);
    assert_string_equal(fx.results[1].rule, "421 4.7.28");
    const struct pool_isp_stats *s = isp_stats(fx.p, "gmail", st, 4);
    assert_int_equal(s->backoff_triggers, 1);
    assert_int_equal(s->paused, 1);
    assert_true(s->backoff == 0.5);
    assert_true(s->rate_limit == 50.0);
    uint64_t wake = UINT64_MAX;
    assert_null(pool_lane_pick(fx.p, gmail, fake_now, &wake)); /* no new connection */
    assert_int_equal(wake, t0 + 30000);
    assert_true(pool_lane_rate(&gmail->lanes[0], fake_now) == 50.0);

    /* The pause ends: connections may open, at half the rate still. */
    fake_now = t0 + 30001;
    assert_non_null(pool_lane_pick(fx.p, gmail, fake_now, &wake));
    s = isp_stats(fx.p, "gmail", st, 4);
    assert_int_equal(s->paused, 0);
    assert_true(s->backoff == 0.5);
    /* One step per interval after the pause, until the rate is whole. */
    fake_now = t0 + 30000 + 60000;
    assert_true(isp_stats(fx.p, "gmail", st, 4)->backoff == 0.75);
    fake_now = t0 + 30000 + 120000;
    s = isp_stats(fx.p, "gmail", st, 4);
    assert_true(s->backoff == 1.0);
    assert_true(s->rate_limit == 100.0);
    assert_true(pool_lane_rate(&gmail->lanes[0], fake_now) == 100.0);
    assert_int_equal(pool_retry_depth(fx.p), 2);
    fx_end(&fx);
    assert_int_equal(fx.released, 2);
}

/* ---- retries come due in due-time order ---- */

static const char *const retry_rcpts[] = {"m0@example.net", "m1@example.net", "m2@example.net",
                                          "m3@example.net", "m4@example.net"};
/* When each fails (ms after t0) and how many attempts it had made. */
static const uint64_t retry_fail_at[] = {0, 0, 0, 10000, 20000};
static const unsigned retry_before[] = {0, 2, 1, 0, 1};
/* So each is due (1m, 5m or 30m after its failure): */
static const uint64_t retry_due[] = {60000, 1800000, 300000, 70000, 320000};

static void test_retry_heap_order(void **state)
{
    (void)state;
    struct fixture fx = {.dns = {world_mx, world_hosts, 0, 0}};
    fx_start(&fx, "[global]\nretry = 1m, 5m, 30m\nmax_age = 1d\n", 0, 0);
    uint64_t t0 = fake_now;
    struct pool_msg m[5];
    for (int i = 0; i < 5; i++) {
        msg_init(&m[i], retry_rcpts[i]);
        m[i].attempts = retry_before[i];
        pool_submit(fx.p, &m[i]);
    }
    resolve_all(fx.p);
    struct pool_dest *d = dest_named(fx.p, "example.net");
    for (int i = 0; i < 5; i++) {
        fake_now = t0 + retry_fail_at[i];
        struct pool_msg *x = pool_dequeue(fx.p, d);
        assert_ptr_equal(x, &m[i]);
        pool_settle(fx.p, x, NULL,
                    &(struct pool_outcome){SMTP_OUTCOME_DEFERRED, "connection_lost", .text = "x"});
        assert_int_equal(fx.results[i].retry_in_ms, retry_due[i] - retry_fail_at[i]);
        assert_int_equal(m[i].due_ms, t0 + retry_due[i]);
    }
    assert_int_equal(pool_retry_depth(fx.p), 5);
    assert_null(d->head);
    /* The live view's "waits for its retry": all five, the first due at 1m. */
    struct pool_isp_stats st[2];
    const struct pool_isp_stats *w = isp_stats(fx.p, "default", st, 2);
    assert_int_equal(w->retry_waiting, 5);
    assert_int_equal(w->retry_next_ms, t0 + retry_due[0] - fake_now);

    /* At t0 + 310 s three are due, and come back in due order. */
    fake_now = t0 + 310000;
    pool_retry_due(&fx.p->retry_timer);
    assert_int_equal(pool_retry_depth(fx.p), 2);
    w = isp_stats(fx.p, "default", st, 2);
    assert_int_equal(w->retry_waiting, 2);
    assert_int_equal(w->retry_next_ms, 10000); /* m[4], due at 320 s */
    struct pool_msg *want[] = {&m[0], &m[3], &m[2], &m[4], &m[1]};
    struct pool_msg *x = d->head;
    for (int i = 0; i < 3; i++, x = x->next) {
        assert_ptr_equal(x, want[i]);
    }
    assert_null(x);
    /* Nothing more until the next is due. */
    fake_now = t0 + 319999;
    pool_retry_due(&fx.p->retry_timer);
    assert_int_equal(pool_retry_depth(fx.p), 2);
    fake_now = t0 + 2000000;
    pool_retry_due(&fx.p->retry_timer);
    assert_int_equal(pool_retry_depth(fx.p), 0);
    x = d->head;
    for (int i = 0; i < 5; i++, x = x->next) {
        assert_ptr_equal(x, want[i]);
    }
    assert_int_equal(d->queued, 5);
    fx_end(&fx);
    assert_int_equal(fx.released, 5);
}

/* ---- MX fallback: the first exchanger refuses, the next one takes it ---- */

/* mx1 is 127.0.0.2, where nothing listens on that port: refused. */
static const struct fake_mx fallback_mx[] = {
    {"fallback.test", {"mx1.fallback.test", "mx2.fallback.test", NULL}},
    {NULL, {NULL}},
};
static const struct fake_host fallback_hosts[] = {
    {"mx1.fallback.test", "127.0.0.2"},
    {"mx2.fallback.test", "127.0.0.1"},
    {NULL, NULL},
};

struct stub_smtp {
    int lfd;
    unsigned port;
    char rcpt[1024];
    int accepted; /* connections accepted */
    pthread_t thread;
};

/* stub_line - one line from fd (CRLF dropped); -1 at EOF */
static int stub_line(int fd, char *line, size_t max)
{
    size_t n = 0;
    char ch;
    for (;;) {
        ssize_t r = read(fd, &ch, 1);
        if (r <= 0) {
            return -1;
        }
        if (ch == '\n') {
            break;
        }
        if (ch != '\r' && n + 1 < max) {
            line[n++] = ch;
        }
    }
    line[n] = '\0';
    return 0;
}

static void stub_say(int fd, const char *s)
{
    ssize_t n = write(fd, s, strlen(s));
    (void)n;
}

/* stub_run - one SMTP session without extensions: accept every message */
static void *stub_run(void *arg)
{
    struct stub_smtp *s = arg;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0) {
        return NULL;
    }
    s->accepted++;
    char line[1024];
    stub_say(fd, "220 stub ESMTP\r\n");
    while (stub_line(fd, line, sizeof line) == 0) {
        if (strncasecmp(line, "EHLO", 4) == 0 || strncasecmp(line, "HELO", 4) == 0) {
            stub_say(fd, "250 stub\r\n");
        } else if (strncasecmp(line, "RCPT TO:", 8) == 0) {
            snprintf(s->rcpt, sizeof s->rcpt, "%s", line + 8);
            stub_say(fd, "250 ok\r\n");
        } else if (strncasecmp(line, "DATA", 4) == 0) {
            stub_say(fd, "354 go on\r\n");
            while (stub_line(fd, line, sizeof line) == 0 && strcmp(line, ".") != 0) {
            }
            stub_say(fd, "250 queued\r\n");
        } else if (strncasecmp(line, "QUIT", 4) == 0) {
            stub_say(fd, "221 bye\r\n");
            break;
        } else {
            stub_say(fd, "250 ok\r\n"); /* MAIL, RSET */
        }
    }
    close(fd);
    return NULL;
}

static void test_mx_fallback(void **state)
{
    (void)state;
    struct stub_smtp s = {.lfd = socket(AF_INET, SOCK_STREAM, 0)};
    assert_true(s.lfd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    assert_int_equal(bind(s.lfd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(s.lfd, 4), 0);
    socklen_t len = sizeof sin;
    assert_int_equal(getsockname(s.lfd, (struct sockaddr *)&sin, &len), 0);
    s.port = ntohs(sin.sin_port);
    assert_int_equal(pthread_create(&s.thread, NULL, stub_run, &s), 0);

    struct fixture fx = {.dns = {fallback_mx, fallback_hosts, 0, 0}};
    fx_start(&fx, "[global]\nretry = 1m\n", s.port, 1);
    fx.finish_on_final = 1;
    loop_timer_set(fx.loop, &fx.guard, 10000);
    struct pool_msg m;
    msg_init(&m, "user@fallback.test");
    pool_submit(fx.p, &m);
    assert_int_equal(loop_run(fx.loop), 0);
    assert_false(fx.timed_out);
    pthread_join(s.thread, NULL);
    close(s.lfd);

    /* One attempt, accepted by the second exchanger; the refusal of the
     * first cost no attempt (another address was still up). */
    assert_int_equal(fx.nresults, 1);
    assert_int_equal(fx.results[0].outcome, SMTP_OUTCOME_ACCEPTED);
    assert_true(fx.results[0].final);
    assert_int_equal(fx.results[0].attempt, 1);
    assert_string_equal(fx.results[0].mx, "mx2.fallback.test");
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", s.port);
    assert_string_equal(fx.results[0].addr, addr);
    assert_string_equal(s.rcpt, "<user@fallback.test>");
    assert_int_equal(s.accepted, 1);
    struct pool_isp_stats st[2];
    const struct pool_isp_stats *d = isp_stats(fx.p, "default", st, 2);
    assert_int_equal(d->connections, 2); /* mx1 refused, then mx2 */
    assert_int_equal(d->accepted, 1);
    assert_int_equal(d->open, 0);
    assert_int_equal(pool_pending(fx.p), 0);
    fx_end(&fx);
}

/* ---- pool_reload changes a limit ---- */

static void test_reload_changes_limits(void **state)
{
    (void)state;
    struct fixture fx = {.dns = {world_mx, world_hosts, 0, 0}};
    fx_start(&fx,
             "[isp gmail]\ndomains = gmail.com\nmax_connections = 2\nmsg_rate = 10/s\n"
             "[isp yahoo]\ndomains = yahoo.com\nmsg_rate = 5/s\n",
             0, 0);
    struct pool_isp *gmail = pool_isp_named(fx.p, "gmail");
    struct pool_isp_stats st[4];
    assert_int_equal(gmail->lanes[0].max_connections, 2);
    assert_true(isp_stats(fx.p, "gmail", st, 4)->rate_limit == 10.0);
    assert_true(isp_stats(fx.p, "yahoo", st, 4)->rate_limit == 5.0);

    /* A config that names a source address not in use is refused. */
    struct config *bad = config_text("[isp gmail]\n[isp gmail source 192.0.2.9]\nmsg_rate = 1/s\n");
    char err[256] = "";
    assert_int_equal(pool_check_config(fx.p, bad, err, sizeof err), -1);
    assert_non_null(strstr(err, "192.0.2.9"));
    config_free(bad);

    pool_reload(fx.p, config_text("[isp gmail]\ndomains = gmail.com\nmax_connections = 7\n"
                                  "msg_rate = 40/s\n"));
    assert_ptr_equal(pool_isp_named(fx.p, "gmail"), gmail); /* the same ISP, new limits */
    assert_int_equal(gmail->max_connections, 7);
    assert_int_equal(gmail->lanes[0].max_connections, 7);
    assert_true(gmail->lanes[0].msgs.rate == 40.0);
    assert_true(isp_stats(fx.p, "gmail", st, 4)->rate_limit == 40.0);
    /* yahoo left the file: its ISP stays (its counters too), unlimited. */
    assert_null(pool_isp_named(fx.p, "yahoo")->cfg);
    assert_true(isp_stats(fx.p, "yahoo", st, 4)->rate_limit < 0);
    fx_end(&fx);
}

/* ---- the gate: what pool_gate_ask announces behind the head ---- */

struct gate_log {
    const struct pool_msg *base;
    int asks[400];  /* per message: announcements (ask_only) */
    int heads[400]; /* per message: asked as the head */
    int yes;        /* may_send's answer for a head */
};
static struct gate_log gate_log;

static int gate_may_send(void *user, struct pool_msg *m, int ask_only)
{
    (void)user;
    size_t i = (size_t)(m - gate_log.base);
    assert_true(i < 400);
    if (ask_only) {
        gate_log.asks[i]++;
    } else {
        gate_log.heads[i]++;
    }
    return !ask_only && gate_log.yes;
}

/* gate_announced - messages [0, n) announced once each, none after them */
static void gate_announced(size_t n)
{
    for (size_t i = 0; i < 400; i++) {
        if (gate_log.asks[i] != (i < n ? 1 : 0) && !(i < n && gate_log.heads[i])) {
            fail_msg("message %zu announced %d times (expected %s)", i, gate_log.asks[i],
                     i < n ? "once" : "never");
        }
    }
}

static void test_gate_asks_ahead(void **state)
{
    (void)state;
    struct fixture fx = {.dns = {world_mx, world_hosts, 0, 0}};
    fx_start(&fx, "[isp default]\n", 0, 0);
    static struct pool_msg m[400];
    static char rcpt[400][32];
    memset(&gate_log, 0, sizeof gate_log);
    gate_log.base = m;
    fx.p->opt.may_send = gate_may_send;
    fx.p->opt.may_send_ahead_ms = 30;
    for (int i = 0; i < 400; i++) {
        snprintf(rcpt[i], sizeof rcpt[i], "u%d@example.net", i);
        msg_init(&m[i], rcpt[i]);
        pool_submit(fx.p, &m[i]);
    }
    resolve_all(fx.p);
    struct pool_dest *d = dest_named(fx.p, "example.net");
    d->nconns = 3; /* as if three sessions were open: two each ahead */

    /* Not yet allowed: the head is asked, the next five are announced. */
    assert_int_equal(pool_gate_ask(fx.p, d), 0);
    assert_int_equal(gate_log.heads[0], 1);
    gate_announced(6);
    /* Asked again: nothing announced twice. */
    assert_int_equal(pool_gate_ask(fx.p, d), 0);
    assert_int_equal(gate_log.heads[0], 2);
    gate_announced(6);

    /* Two go (the head leaves the queue each time): the walk goes on from
     * the last one announced, two more. */
    gate_log.yes = 1;
    for (int k = 0; k < 2; k++) {
        assert_int_equal(pool_gate_ask(fx.p, d), 1);
        assert_ptr_equal(pool_dequeue(fx.p, d), &m[k]);
    }
    assert_int_equal(pool_gate_ask(fx.p, d), 1);
    gate_announced(8);

    /* A quick destination: 100 starts within 100 ms. The next 100 ms
     * announce what it starts in 30 ms, 31 messages from the head. */
    for (int k = 2; k < 100; k++) {
        assert_int_equal(pool_gate_ask(fx.p, d), 1);
        assert_ptr_equal(pool_dequeue(fx.p, d), &m[k]);
    }
    fake_now += 100;
    assert_int_equal(pool_gate_ask(fx.p, d), 1);
    assert_ptr_equal(d->head, &m[100]);
    gate_announced(100 + 31);
    assert_int_equal(d->asked, 31);

    /* A message put back in front (a session that failed) resets the walk:
     * the next ask announces from the head again; the owner hears of those
     * it was told of before once more, and of nothing beyond the 31. */
    assert_ptr_equal(pool_dequeue(fx.p, d), &m[100]);
    pool_enqueue(fx.p, d, &m[100], 1);
    assert_int_equal(d->asked, 0);
    assert_null(d->ask_last);
    assert_int_equal(pool_gate_ask(fx.p, d), 1);
    assert_int_equal(d->asked, 31);
    assert_int_equal(gate_log.asks[131], 0);
    assert_int_equal(gate_log.asks[130], 2);

    /* Quiet for a long time: the rate falls back, at least two per
     * connection are announced (no more than before). */
    fake_now += 10000;
    assert_int_equal(pool_gate_ask(fx.p, d), 1);
    fake_now += 200;
    gate_log.yes = 0;
    assert_int_equal(pool_gate_ask(fx.p, d), 0);
    assert_int_equal(gate_log.asks[131], 0);

    /* Connections moved here from other destinations (bench/nodes.sh: one
     * to nineteen of twenty on a domain within a second): d itself started
     * nothing of late, but the pool started 200 in the last 100 ms on six
     * open sessions, three of them d's now. d announces their share of 30
     * ms of those starts, 200 * 30 / 100 * 3 / 6 + 1 = 31, not two per
     * session. */
    for (int k = 100; k < 131; k++) {
        assert_ptr_equal(pool_dequeue(fx.p, d), &m[k]);
    }
    assert_int_equal(d->asked, 0);
    fx.p->open = 6;
    fx.p->gate_at = fake_now;
    fx.p->gate_starts = 0;
    fx.p->gate_rate = 200;
    assert_int_equal(pool_gate_ask(fx.p, d), 0);
    assert_int_equal(d->asked, 31);
    assert_int_equal(gate_log.asks[161], 1);
    assert_int_equal(gate_log.asks[162], 0);
    /* Without the pool's starts, two per session: nothing more now. */
    fx.p->gate_rate = 0;
    assert_ptr_equal(pool_dequeue(fx.p, d), &m[131]);
    assert_int_equal(pool_gate_ask(fx.p, d), 0);
    assert_int_equal(gate_log.asks[162], 0);
    fx.p->open = 0;

    /* The queue drained: nothing is left announced. */
    while (pool_dequeue(fx.p, d)) {
    }
    assert_int_equal(d->asked, 0);
    assert_null(d->ask_last);
    fx.p->opt.may_send = NULL;
    fx_end(&fx);
}

/* ---- the cluster's shares: 1/N of the rates, max_connections split by rank ---- */

static void test_cluster_share(void **state)
{
    (void)state;
    struct fixture fx = {.dns = {world_mx, world_hosts, 0, 0}};
    fx_start(&fx,
             "[isp gmail]\ndomains = gmail.com\nmax_connections = 7\nmsg_rate = 90/s\n"
             "conn_rate = 30/s\n[isp yahoo]\ndomains = yahoo.com\nmsg_rate = 5/s\n"
             "cluster_limits = off\n",
             0, 0);
    struct pool_lane_demand d[8];
    size_t n = pool_lane_demands(fx.p, d, 8);
    int shared_gmail = 0, shared_yahoo = 1, shared_default = 1;
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(d[i].source, "");
        assert_int_equal(d[i].demand, 0);
        if (strcmp(d[i].isp, "gmail") == 0) {
            shared_gmail = d[i].shared;
        } else if (strcmp(d[i].isp, "yahoo") == 0) {
            shared_yahoo = d[i].shared;
        } else {
            shared_default = d[i].shared;
        }
    }
    assert_int_equal(shared_gmail, 1);
    assert_int_equal(shared_yahoo, 0);   /* cluster_limits = off */
    assert_int_equal(shared_default, 0); /* no limit to share */
    struct pool_isp *gmail = pool_isp_named(fx.p, "gmail");
    struct pool_isp_stats st[4];
    /* Three nodes: rank 0 takes the remainder's first connection. */
    pool_lane_share(fx.p, "gmail", "", 3, 0, 0);
    assert_int_equal(gmail->lanes[0].max_connections, 3);
    assert_true(gmail->lanes[0].msgs.rate == 30.0);
    assert_true(gmail->lanes[0].conns.rate == 10.0);
    assert_true(isp_stats(fx.p, "gmail", st, 4)->rate_limit == 30.0);
    assert_int_equal(isp_stats(fx.p, "gmail", st, 4)->cluster_nodes, 3);
    pool_lane_share(fx.p, "gmail", "", 3, 2, 0);
    assert_int_equal(gmail->lanes[0].max_connections, 2);
    /* More nodes than connections: the last ranks open none. */
    pool_lane_share(fx.p, "gmail", "", 9, 8, 0);
    assert_int_equal(gmail->lanes[0].share_none, 1);
    assert_int_equal(pool_isp_full(gmail), 1);
    /* A reload keeps the share over the new limits. */
    pool_lane_share(fx.p, "gmail", "", 2, 1, 0);
    pool_reload(fx.p, config_text("[isp gmail]\ndomains = gmail.com\nmax_connections = 9\n"
                                  "msg_rate = 40/s\n"));
    assert_int_equal(gmail->lanes[0].max_connections, 4);
    assert_true(gmail->lanes[0].msgs.rate == 20.0);
    /* Blocked: paused, said in the stats; alone again: the whole limit. */
    pool_lane_share(fx.p, "gmail", "", 2, 1, 1);
    assert_int_equal(isp_stats(fx.p, "gmail", st, 4)->cluster_blocked, 1);
    assert_int_equal(pool_lane_paused(&gmail->lanes[0], 0), 1);
    pool_lane_share(fx.p, "gmail", "", 0, 0, 0);
    assert_int_equal(gmail->lanes[0].max_connections, 9);
    assert_true(gmail->lanes[0].msgs.rate == 40.0);
    assert_int_equal(pool_lane_paused(&gmail->lanes[0], 0), 0);
    /* Another node's cut: the lower factor and its pause. */
    assert_int_equal(pool_isp_backoff_adopt(fx.p, "gmail", 0.5, 3000, "on node n2: 421 4.7.28"), 1);
    assert_true(gmail->lanes[0].msgs.rate == 20.0);
    assert_int_equal(isp_stats(fx.p, "gmail", st, 4)->paused, 1);
    assert_string_equal(gmail->lanes[0].why, "on node n2: 421 4.7.28");
    assert_int_equal(pool_isp_backoff_adopt(fx.p, "gmail", 0.5, 3000, "again"), 0);
    assert_int_equal(pool_isp_backoff_adopt(fx.p, "nosuch", 0.5, 3000, "x"), 0);
    fx_end(&fx);
}

/* ---- the complaint guard's hold: no time lifts it; held mail goes back ---- */

static void test_isp_hold(void **state)
{
    (void)state;
    struct fixture fx = {.dns = {world_mx, world_hosts, 0, 0}, .with_on_held = 1};
    fx_start(&fx,
             "[global]\nbackoff_step = 0.5\nbackoff_interval = 10s\n"
             "[isp gmail]\ndomains = gmail.com\nmsg_rate = 100/s\n"
             "rule = 421 4.7.28 => backoff 0.5 30s\n"
             "[isp yahoo]\ndomains = yahoo.com\n",
             0, 0);
    struct pool_msg m[3];
    msg_init(&m[0], "a@gmail.com");
    msg_init(&m[1], "b@gmail.com");
    msg_init(&m[2], "c@yahoo.com");
    for (int i = 0; i < 3; i++) {
        pool_submit(fx.p, &m[i]);
    }
    resolve_all(fx.p);
    struct pool_isp *gmail = pool_isp_named(fx.p, "gmail");
    struct pool_isp *yahoo = pool_isp_named(fx.p, "yahoo");
    struct pool_isp_stats st[8];

    /* Held: no lane of gmail opens anything, and no pump is asked for (a
     * wake at a past pause end would spin it); yahoo is untouched. */
    pool_isp_hold(fx.p, "gmail", "3 complaints over 1000 delivered in 24h (0.30% > 0.20%)");
    assert_true(pool_isp_held(fx.p, "gmail"));
    assert_false(pool_isp_held(fx.p, "yahoo"));
    uint64_t wake = UINT64_MAX;
    assert_null(pool_lane_pick(fx.p, gmail, fake_now, &wake));
    assert_int_equal(wake, UINT64_MAX);
    assert_true(pool_lane_paused(&gmail->lanes[0], fake_now));
    assert_non_null(pool_lane_pick(fx.p, yahoo, fake_now, &wake));
    const struct pool_isp_stats *s = isp_stats(fx.p, "gmail", st, 8);
    assert_int_equal(s->held, 1);
    assert_int_equal(s->paused, 0); /* a hold is not a backoff */
    assert_string_equal(s->held_why, "3 complaints over 1000 delivered in 24h (0.30% > 0.20%)");
    assert_int_equal(isp_stats(fx.p, "yahoo", st, 8)->held, 0);
    assert_null(isp_stats(fx.p, "yahoo", st, 8)->held_why);

    /* A backoff on top of the hold ends; the hold does not. */
    const struct config_rule *rule =
        config_rule_match(gmail->cfg, 421, "4.7.28", "unusual rate of traffic");
    assert_non_null(rule);
    pool_backoff(fx.p, &gmail->lanes[0], rule, 421, "4.7.28", "unusual rate of traffic");
    fake_now += 3600 * 1000;
    assert_true(pool_lane_paused(&gmail->lanes[0], fake_now));
    assert_null(pool_lane_pick(fx.p, gmail, fake_now, &wake));
    assert_int_equal(isp_stats(fx.p, "gmail", st, 8)->paused, 0);

    /* The pump hands gmail's queued mail back, never attempted; yahoo's
     * stays (no connection opens here: its lane is picked, but the test
     * never runs the loop, so take it out first). */
    struct pool_dest *y = dest_named(fx.p, "yahoo.com");
    struct pool_msg *ym = pool_dequeue(fx.p, y);
    assert_ptr_equal(ym, &m[2]);
    pool_pump(&fx.p->pump_timer);
    assert_int_equal(fx.nheld, 2);
    assert_string_equal(fx.held_rcpts[0], "a@gmail.com");
    assert_string_equal(fx.held_rcpts[1], "b@gmail.com");
    assert_string_equal(fx.held_isp[0], "gmail");
    assert_int_equal(fx.nresults, 0); /* no attempt, no outcome */
    assert_int_equal(m[0].attempts, 0);
    assert_int_equal(pool_pending(fx.p), 1); /* c@yahoo.com, taken out above */
    s = isp_stats(fx.p, "gmail", st, 8);
    assert_int_equal(s->queued, 0);
    assert_int_equal(s->parked, 2);
    assert_int_equal(fx.p->open, 0);
    pool_enqueue(fx.p, y, ym, 0);

    /* The metrics say so. */
    buf_t out = BUF_INIT;
    pool_metrics(fx.p, &out);
    buf_append(&out, "", 1);
    assert_non_null(strstr(buf_data(&out), "ringmail_isp_held{isp=\"gmail\"} 1\n"));
    assert_non_null(strstr(buf_data(&out), "ringmail_isp_held{isp=\"yahoo\"} 0\n"));
    assert_non_null(strstr(buf_data(&out), "ringmail_isp_parked_total{isp=\"gmail\"} 2\n"));
    buf_free(&out);

    /* Released: the lane opens again. A second release says it was not held. */
    assert_int_equal(pool_isp_release(fx.p, "gmail"), 1);
    assert_int_equal(pool_isp_release(fx.p, "gmail"), 0);
    assert_false(pool_lane_paused(&gmail->lanes[0], fake_now));
    assert_non_null(pool_lane_pick(fx.p, gmail, fake_now, &wake));
    assert_null(isp_stats(fx.p, "gmail", st, 8)->held_why);

    /* An ISP the config does not name can be held (and shows up). */
    pool_isp_hold(fx.p, "hotmail", "why");
    assert_int_equal(isp_stats(fx.p, "hotmail", st, 8)->held, 1);
    assert_int_equal(pool_isp_release(fx.p, "nosuch"), 0);
    fx_end(&fx);
    assert_int_equal(fx.released, 1); /* c@yahoo.com */
}

/* ---- a suspend rule: at once, said why, reported to be kept; and restored ---- */

static void test_suspend_kept(void **state)
{
    (void)state;
    struct fixture fx = {.dns = {world_mx, world_hosts, 0, 0}, .with_on_suspend = 1};
    fx_start(&fx,
             "[global]\nretry = 1m\n"
             "[isp gmail]\ndomains = gmail.com\nmsg_rate = 100/s\n"
             "rule = S3150 => suspend 1h\nrule = 421 4.7.28 => backoff 0.5 30s\n"
             "[isp yahoo]\ndomains = yahoo.com\n",
             0, 0);
    struct pool_msg m[4];
    msg_init(&m[0], "a@gmail.com");
    msg_init(&m[1], "b@gmail.com");
    msg_init(&m[2], "c@gmail.com");
    msg_init(&m[3], "d@yahoo.com");
    for (int i = 0; i < 4; i++) {
        pool_submit(fx.p, &m[i]);
    }
    resolve_all(fx.p);
    struct pool_dest *d = dest_named(fx.p, "gmail.com");
    struct pool_isp *gmail = pool_isp_named(fx.p, "gmail");
    struct pool_isp_stats st[8];

    /* One 421 4.7.28 among few replies is no evidence (5% threshold): no cut. */
    pool_backoff(fx.p, &gmail->lanes[0], config_rule_match(gmail->cfg, 421, "4.7.28", "rate"), 421,
                 "4.7.28", "rate");
    const struct pool_isp_stats *s = isp_stats(fx.p, "gmail", st, 8);
    assert_int_equal(s->paused, 0);
    assert_true(s->backoff == 1.0);

    /* The S3150 rejection suspends gmail at once, for an hour, and says why. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t wall = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    static const char s3150[] =
        "Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet "
        "service provider since part of their network is on our block list (S3150).";
    pool_settle(fx.p, pool_dequeue(fx.p, d), NULL,
                &(struct pool_outcome){.outcome = SMTP_OUTCOME_REJECTED,
                                       .reason = "rcpt_rejected",
                                       .code = 550,
                                       .enhanced = "5.7.1",
                                       .text = s3150});
    s = isp_stats(fx.p, "gmail", st, 8);
    assert_int_equal(s->paused, 1);
    assert_int_equal(s->suspended, 1);
    assert_int_equal(s->pause_left_ms, 3600000);
    assert_int_equal(s->backoff_triggers, 1);
    assert_true(s->backoff == 1.0); /* a suspension cuts no rate */
    assert_non_null(strstr(s->pause_why, "550 5.7.1 Unfortunately"));
    assert_non_null(strstr(s->pause_why, "(S3150). (rule S3150 => suspend 1h)"));
    assert_true(strlen(s->pause_why) < sizeof s->pause_why);
    assert_int_equal(fx.nsuspended, 1);
    assert_string_equal(fx.suspended_isp, "gmail");
    assert_string_equal(fx.suspended_why, s->pause_why);
    assert_true(fx.suspended_until >= wall + 3600000 && fx.suspended_until < wall + 3660000);
    uint64_t wake = UINT64_MAX;
    assert_null(pool_lane_pick(fx.p, gmail, fake_now, &wake));
    assert_int_equal(wake, fake_now + 3600000);
    /* Another S3150 (a reply to what was in flight) neither lengthens it nor is kept again. */
    fake_now += 1000;
    pool_settle(fx.p, pool_dequeue(fx.p, d), NULL,
                &(struct pool_outcome){.outcome = SMTP_OUTCOME_REJECTED,
                                       .reason = "rcpt_rejected",
                                       .code = 550,
                                       .enhanced = "5.7.1",
                                       .text = s3150});
    assert_int_equal(fx.nsuspended, 1);
    assert_int_equal(isp_stats(fx.p, "gmail", st, 8)->pause_left_ms, 3599000);
    assert_int_equal(isp_stats(fx.p, "gmail", st, 8)->backoff_triggers, 1);

    /* One kept from an earlier run: restored, said, not reported again. */
    pool_isp_suspend(fx.p, "yahoo", 60000, "421 kept (rule X => suspend 1h)");
    s = isp_stats(fx.p, "yahoo", st, 8);
    assert_int_equal(s->suspended, 1);
    assert_int_equal(s->pause_left_ms, 60000);
    assert_string_equal(s->pause_why, "421 kept (rule X => suspend 1h)");
    assert_int_equal(fx.nsuspended, 1);
    wake = UINT64_MAX;
    assert_null(pool_lane_pick(fx.p, pool_isp_named(fx.p, "yahoo"), fake_now, &wake));
    assert_int_equal(wake, fake_now + 60000);
    fake_now += 60000;
    s = isp_stats(fx.p, "yahoo", st, 8);
    assert_int_equal(s->paused, 0);
    assert_int_equal(s->suspended, 0);
    /* An ISP the config no longer names: added, so a reload that names it again finds it. */
    pool_isp_suspend(fx.p, "aol", 60000, "kept");
    assert_int_equal(isp_stats(fx.p, "aol", st, 8)->suspended, 1);
    fx_end(&fx);
}

int main(void)
{
    trace_init(); /* RINGMAIL_TRACE=1: the connections' state changes on stderr */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isp_classification_and_lane_choice),
        cmocka_unit_test(test_backoff_and_recovery),
        cmocka_unit_test(test_retry_heap_order),
        cmocka_unit_test(test_mx_fallback),
        cmocka_unit_test(test_reload_changes_limits),
        cmocka_unit_test(test_gate_asks_ahead),
        cmocka_unit_test(test_cluster_share),
        cmocka_unit_test(test_isp_hold),
        cmocka_unit_test(test_suspend_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
