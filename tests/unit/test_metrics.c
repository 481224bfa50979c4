/*
 * test_metrics - the Prometheus endpoint (pool/metrics) over real sockets
 *
 * The test's thread owns the ring (a single-issuer ring must be driven by
 * the thread that made it) and runs the loop; a client thread speaks HTTP
 * with plain blocking sockets and records what it saw. When the client is
 * done, a short poll timer on the loop calls metrics_free and lets the
 * loop run until every operation has come back, so each test also checks
 * that the object frees itself (leaks show under `make asan`).
 * Assertions run on the test's thread only, after the join.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/buf.h"
#include "engine/loop.h"
#include "pool/metrics.h"

#define POLL_MS 5
#define WATCHDOG_MS 15000
#define MAX_CONNS 4
#define RESPONSE_MAX (1 << 20)

struct scenario;
typedef void (*client_fn)(struct scenario *s);

struct response {
    char text[RESPONSE_MAX]; /* NUL-terminated copy of what arrived */
    size_t len;
    int eof; /* 1: orderly EOF, -errno: the read failed */
    long ms; /* from connect to EOF */
    int fd;
};

struct scenario {
    struct loop *loop;
    struct metrics *m; /* NULL once metrics_free was called */
    unsigned port;
    struct loop_timer poll;
    uint64_t started_ms;
    int watchdog_fired;
    unsigned free_at_clients; /* free only when exactly this many clients are connected */
    long release_ms;          /* from the client's release to metrics_free */
    int big_lines;            /* render this many more lines */
    client_fn client;
    atomic_int release; /* set by the client thread: metrics_free may run */
    atomic_int dropped; /* set by the loop thread: after a scrape, no client is left */
    int renders;        /* loop thread only */
    struct response r[MAX_CONNS];
};

/* ---- the server side (loop thread) ---- */

static void render(void *user, buf_t *out)
{
    struct scenario *s = user;
    s->renders++;
    metrics_help(out, "ringmail_test_scrapes_total", "counter", "Scrapes served.");
    metrics_line(out, "ringmail_test_scrapes_total", NULL, s->renders);
    metrics_line(out, "ringmail_test_queue", "isp=\"gmail\"", 2.5);
    for (int i = 0; i < s->big_lines; i++) {
        char labels[32];
        snprintf(labels, sizeof labels, "n=\"%d\"", i);
        metrics_line(out, "ringmail_test_big", labels, i);
    }
}

static void on_poll(struct loop_timer *t)
{
    struct scenario *s = t->owner;
    int late = loop_now_ms(s->loop) - s->started_ms > WATCHDOG_MS;
    if (s->renders > 0 && metrics_clients(s->m) == 0) {
        atomic_store(&s->dropped, 1);
    }
    if (!s->release_ms && atomic_load(&s->release)) {
        s->release_ms = (long)loop_now_ms(s->loop);
    }
    if (late || (s->release_ms && metrics_clients(s->m) == s->free_at_clients)) {
        s->watchdog_fired = late;
        s->release_ms = (long)loop_now_ms(s->loop) - s->release_ms;
        metrics_free(s->m);
        s->m = NULL;
        loop_stop_when_idle(s->loop);
        return;
    }
    loop_timer_set(s->loop, t, POLL_MS);
}

static struct scenario *scenario_new(client_fn client)
{
    struct scenario *s = calloc(1, sizeof *s);
    char err[256] = "";
    assert_non_null(s);
    s->client = client;
    s->loop = loop_new(64);
    assert_non_null(s->loop);
    s->m = metrics_new(s->loop, "127.0.0.1:0", render, s, err, sizeof err);
    assert_non_null(s->m);
    assert_string_equal(err, "");
    s->port = metrics_port(s->m);
    assert_true(s->port > 0);
    return s;
}

static void *client_main(void *arg)
{
    struct scenario *s = arg;
    s->client(s);
    atomic_store(&s->release, 1);
    return NULL;
}

/* Run the client against the loop until metrics_free has finished. */
static void scenario_run(struct scenario *s)
{
    pthread_t thread;
    s->started_ms = loop_clock_ms(s->loop);
    loop_timer_init(&s->poll, on_poll, s);
    loop_timer_set(s->loop, &s->poll, POLL_MS);
    assert_int_equal(pthread_create(&thread, NULL, client_main, s), 0);
    assert_int_equal(loop_run(s->loop), 0);
    pthread_join(thread, NULL);
    assert_false(s->watchdog_fired);
    assert_null(s->m);
    assert_int_equal(loop_pending(s->loop), 0); /* every operation came back */
}

static void scenario_free(struct scenario *s)
{
    for (int i = 0; i < MAX_CONNS; i++) {
        if (s->r[i].fd > 0) {
            close(s->r[i].fd);
        }
    }
    loop_free(s->loop);
    free(s);
}

/* ---- the client side (client thread; no cmocka calls here) ---- */

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int client_connect(const struct scenario *s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void client_send(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Read into r until EOF, an error or a full buffer. */
static void client_read_all(int fd, struct response *r, long start)
{
    for (;;) {
        ssize_t n = recv(fd, r->text + r->len, sizeof r->text - 1 - r->len, 0);
        if (n <= 0) {
            r->eof = n == 0 ? 1 : -errno;
            break;
        }
        r->len += (size_t)n;
        if (r->len == sizeof r->text - 1) {
            break;
        }
    }
    r->text[r->len] = '\0';
    r->ms = now_ms() - start;
}

/* One connection: send request, read the response until the server
 * closes, then close as a scraper does. */
static void client_exchange(struct scenario *s, int i, const char *request, size_t len)
{
    long start = now_ms();
    int fd = client_connect(s);
    if (fd < 0) {
        s->r[i].eof = -errno;
        return;
    }
    client_send(fd, request, len);
    client_read_all(fd, &s->r[i], start);
    close(fd);
}

static void client_exchange_str(struct scenario *s, int i, const char *request)
{
    client_exchange(s, i, request, strlen(request));
}

/* ---- checks (test thread) ---- */

static const char expected_body_1[] = "# HELP ringmail_test_scrapes_total Scrapes served.\n"
                                      "# TYPE ringmail_test_scrapes_total counter\n"
                                      "ringmail_test_scrapes_total 1\n"
                                      "ringmail_test_queue{isp=\"gmail\"} 2.5\n";

/* Status line, Connection: close, a Content-Length that matches the body. */
static const char *check_response(const struct response *r, const char *status_line)
{
    assert_int_equal(r->eof, 1);
    assert_true(strncmp(r->text, status_line, strlen(status_line)) == 0);
    assert_non_null(strstr(r->text, "\r\nConnection: close\r\n"));
    const char *cl = strstr(r->text, "\r\nContent-Length: ");
    const char *body = strstr(r->text, "\r\n\r\n");
    assert_non_null(cl);
    assert_non_null(body);
    body += 4;
    assert_int_equal(strtoul(cl + 18, NULL, 10), r->len - (size_t)(body - r->text));
    return body;
}

/* ---- tests ---- */

static void client_scrapes(struct scenario *s)
{
    client_exchange_str(s, 0, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
    client_exchange_str(s, 1, "GET / HTTP/1.0\r\n\r\n");
    client_exchange_str(s, 2, "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
}

static void test_metrics_scrape(void **state)
{
    (void)state;
    struct scenario *s = scenario_new(client_scrapes);
    scenario_run(s);
    const char *body = check_response(&s->r[0], "HTTP/1.0 200 OK\r\n");
    assert_non_null(strstr(s->r[0].text, "\r\nContent-Type: text/plain; version=0.0.4\r\n"));
    assert_string_equal(body, expected_body_1);
    body = check_response(&s->r[1], "HTTP/1.0 200 OK\r\n");
    assert_non_null(strstr(body, "ringmail_test_scrapes_total 2\n"));
    body = check_response(&s->r[2], "HTTP/1.0 200 OK\r\n");
    assert_non_null(strstr(body, "ringmail_test_scrapes_total 3\n"));
    assert_int_equal(s->renders, 3);
    /* Each client's close ended the server's lingering: nothing waited for its bound. */
    assert_true(s->release_ms < 500);
    scenario_free(s);
}

static void client_big_scrape(struct scenario *s)
{
    client_exchange_str(s, 0, "GET /metrics HTTP/1.0\r\n\r\n");
}

static void test_metrics_big_body(void **state)
{
    (void)state;
    struct scenario *s = scenario_new(client_big_scrape);
    s->big_lines = 20000;
    scenario_run(s);
    const char *body = check_response(&s->r[0], "HTTP/1.0 200 OK\r\n");
    assert_true(strlen(body) > 500000);
    assert_non_null(strstr(body, "\nringmail_test_big{n=\"19999\"} 19999\n"));
    scenario_free(s);
}

static void client_errors(struct scenario *s)
{
    client_exchange_str(s, 0, "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n");
    /* A body the server never reads: lingering keeps the 405 from a reset. */
    client_exchange_str(s, 1, "POST /metrics HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello=world");
    client_exchange_str(s, 2, "garbage\r\n\r\n");
    client_exchange_str(s, 3, "GET /metricsx HTTP/1.0\r\n\r\n");
}

/* Ask for ~10 MB with a tiny receive window and stop reading: the
 * server's SEND cannot finish, and the idle timeout must end it. */
static void client_stalled_reader(struct scenario *s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 4096;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        s->r[0].eof = -errno;
        close(fd);
        return;
    }
    client_send(fd, "GET /metrics HTTP/1.0\r\n\r\n", 25);
    for (int i = 0; i < 1000 && !atomic_load(&s->dropped); i++) {
        usleep(10000); /* not reading, until the server has given up on us */
    }
    char chunk[65536];
    ssize_t n;
    while ((n = recv(fd, chunk, sizeof chunk, 0)) > 0) {
        s->r[0].len += (size_t)n;
    }
    s->r[0].eof = n == 0 ? 1 : -errno;
    close(fd);
}

/* The kernel's largest TCP send buffer: the body must not fit in it. */
static long tcp_send_buffer_max(void)
{
    long min = 0, def = 0, max = 4 << 20;
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_wmem", "r");
    if (f) {
        if (fscanf(f, "%ld %ld %ld", &min, &def, &max) != 3) {
            max = 4 << 20;
        }
        fclose(f);
    }
    return max;
}

static void test_metrics_stalled_reader(void **state)
{
    (void)state;
    struct scenario *s = scenario_new(client_stalled_reader);
    buf_t full = BUF_INIT;
    s->big_lines = (int)(2 * tcp_send_buffer_max() / 30);
    render(s, &full); /* the body the server will try to send */
    s->renders = 0;
    metrics_set_idle_timeout(s->m, 200);
    scenario_run(s);
    assert_int_equal(s->renders, 1);
    assert_true(s->r[0].eof == 1 || s->r[0].eof == -ECONNRESET);
    assert_true(s->r[0].len > 0);
    assert_true(s->r[0].len < buf_len(&full)); /* cut short, not the whole body */
    buf_free(&full);
    scenario_free(s);
}

static void test_metrics_errors(void **state)
{
    (void)state;
    struct scenario *s = scenario_new(client_errors);
    scenario_run(s);
    const char *body = check_response(&s->r[0], "HTTP/1.0 404 Not Found\r\n");
    assert_string_equal(body, "404 Not Found\n");
    check_response(&s->r[1], "HTTP/1.0 405 Method Not Allowed\r\n");
    assert_non_null(strstr(s->r[1].text, "\r\nAllow: GET\r\n"));
    check_response(&s->r[2], "HTTP/1.0 400 Bad Request\r\n");
    check_response(&s->r[3], "HTTP/1.0 404 Not Found\r\n");
    assert_int_equal(s->renders, 0);
    scenario_free(s);
}

/* A header block of exactly total bytes, with or without its final CRLF CRLF. */
static char *big_request(size_t total, int complete)
{
    static const char head[] = "GET /metrics HTTP/1.0\r\nX-Pad: ";
    char *p = malloc(total);
    memcpy(p, head, sizeof head - 1);
    memset(p + sizeof head - 1, 'a', total - (sizeof head - 1));
    if (complete) {
        memcpy(p + total - 4, "\r\n\r\n", 4);
    }
    return p;
}

static void client_big_headers(struct scenario *s)
{
    char *fits = big_request(8192, 1);
    char *over = big_request(9000, 0);
    client_exchange(s, 0, fits, 8192);
    client_exchange(s, 1, over, 9000);
    free(fits);
    free(over);
}

static void test_metrics_header_limit(void **state)
{
    (void)state;
    struct scenario *s = scenario_new(client_big_headers);
    scenario_run(s);
    check_response(&s->r[0], "HTTP/1.0 200 OK\r\n");
    check_response(&s->r[1], "HTTP/1.0 431 Request Header Fields Too Large\r\n");
    assert_int_equal(s->renders, 1);
    scenario_free(s);
}

static void client_two_at_once(struct scenario *s)
{
    long start = now_ms();
    s->r[0].fd = client_connect(s);
    s->r[1].fd = client_connect(s);
    if (s->r[0].fd < 0 || s->r[1].fd < 0) {
        return;
    }
    client_send(s->r[0].fd, "GET /met", 8);
    client_send(s->r[1].fd, "GET /nope HTTP/1.0\r\n", 20);
    usleep(20000); /* both half-read by the server */
    client_send(s->r[1].fd, "\r\n", 2);
    client_read_all(s->r[1].fd, &s->r[1], start);
    client_send(s->r[0].fd, "rics HTTP/1.0\r\n\r\n", 17);
    client_read_all(s->r[0].fd, &s->r[0], start);
    for (int i = 0; i < 2; i++) {
        close(s->r[i].fd);
        s->r[i].fd = -1;
    }
}

static void test_metrics_two_clients_at_once(void **state)
{
    (void)state;
    struct scenario *s = scenario_new(client_two_at_once);
    scenario_run(s);
    check_response(&s->r[1], "HTTP/1.0 404 Not Found\r\n");
    const char *body = check_response(&s->r[0], "HTTP/1.0 200 OK\r\n");
    assert_string_equal(body, expected_body_1);
    scenario_free(s);
}

static void client_silent(struct scenario *s)
{
    long start = now_ms();
    s->r[0].fd = client_connect(s);
    s->r[1].fd = client_connect(s);
    if (s->r[0].fd < 0 || s->r[1].fd < 0) {
        return;
    }
    client_send(s->r[1].fd, "GET /metrics HTTP/1.0\r\n", 23); /* then nothing more */
    client_read_all(s->r[0].fd, &s->r[0], start);
    client_read_all(s->r[1].fd, &s->r[1], start);
}

static void test_metrics_idle_timeout(void **state)
{
    (void)state;
    struct scenario *s = scenario_new(client_silent);
    metrics_set_idle_timeout(s->m, 200);
    scenario_run(s);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(s->r[i].len, 0); /* closed without an answer */
        assert_true(s->r[i].eof == 1 || s->r[i].eof == -ECONNRESET);
        assert_true(s->r[i].ms >= 150);
        assert_true(s->r[i].ms < 4000); /* the timer, not SO_RCVTIMEO */
    }
    assert_int_equal(s->renders, 0);
    scenario_free(s);
}

/* One client has its answer and lingers, one is mid-request; then free. */
static void client_stay_connected(struct scenario *s)
{
    s->r[0].fd = client_connect(s);
    s->r[1].fd = client_connect(s);
    if (s->r[0].fd < 0 || s->r[1].fd < 0) {
        return;
    }
    client_send(s->r[0].fd, "GET /metrics HTTP/1.0\r\n\r\n", 25);
    client_read_all(s->r[0].fd, &s->r[0], now_ms()); /* answered; we stay, so it lingers */
    client_send(s->r[1].fd, "GET /metr", 9);
    atomic_store(&s->release, 1); /* free once both are accepted */
    client_read_all(s->r[1].fd, &s->r[1], now_ms());
}

static void test_metrics_free_with_clients(void **state)
{
    (void)state;
    struct scenario *s = scenario_new(client_stay_connected);
    s->free_at_clients = 2;
    scenario_run(s);
    check_response(&s->r[0], "HTTP/1.0 200 OK\r\n");
    assert_int_equal(s->r[1].len, 0);
    assert_true(s->r[1].eof == 1 || s->r[1].eof == -ECONNRESET);
    assert_true(s->r[1].ms < 4000); /* dropped by metrics_free, not by a timeout */
    /* The listener is closed too. */
    int fd = client_connect(s);
    assert_true(fd < 0);
    scenario_free(s);
}

static void test_metrics_new_errors(void **state)
{
    (void)state;
    char err[256] = "";
    struct loop *loop = loop_new(64);
    assert_non_null(loop);
    assert_null(metrics_new(loop, "no-port-here", render, NULL, err, sizeof err));
    assert_true(strlen(err) > 0);
    struct metrics *m = metrics_new(loop, "127.0.0.1:0", render, NULL, err, sizeof err);
    assert_non_null(m);
    char taken[64];
    snprintf(taken, sizeof taken, "127.0.0.1:%u", metrics_port(m));
    err[0] = '\0';
    assert_null(metrics_new(loop, taken, render, NULL, err, sizeof err));
    assert_non_null(strstr(err, "cannot listen on"));
    /* Freed with its accept in flight: it goes once the ring returns it. */
    metrics_free(m);
    assert_true(loop_pending(loop) > 0);
    loop_stop_when_idle(loop);
    assert_int_equal(loop_run(loop), 0);
    assert_int_equal(loop_pending(loop), 0);
    loop_free(loop);
}

static void test_metrics_format(void **state)
{
    (void)state;
    buf_t out = BUF_INIT;
    metrics_help(&out, "ringmail_sent_total", "counter", "Messages sent\\accepted.\nSecond line");
    metrics_line(&out, "ringmail_sent_total", NULL, 12345678901.0);
    metrics_line(&out, "ringmail_sent_total", "", 0);
    metrics_line(&out, "ringmail_queue", "isp=\"gmail\",kind=\"x\"", 0.1);
    metrics_line(&out, "ringmail_rate", NULL, 1.0 / 3.0);
    metrics_line(&out, "ringmail_big", NULL, 1e300);
    metrics_line(&out, "ringmail_neg", NULL, -2);
    metrics_line(&out, "ringmail_nan", NULL, NAN);
    metrics_line(&out, "ringmail_inf", NULL, INFINITY);
    metrics_line(&out, "ringmail_ninf", NULL, -INFINITY);
    metrics_help(&out, "ringmail_queue", "gauge", NULL);
    buf_append(&out, "", 1);
    assert_string_equal(buf_data(&out),
                        "# HELP ringmail_sent_total Messages sent\\\\accepted.\\nSecond line\n"
                        "# TYPE ringmail_sent_total counter\n"
                        "ringmail_sent_total 12345678901\n"
                        "ringmail_sent_total 0\n"
                        "ringmail_queue{isp=\"gmail\",kind=\"x\"} 0.1\n"
                        "ringmail_rate 0.33333333333333331\n"
                        "ringmail_big 1e+300\n"
                        "ringmail_neg -2\n"
                        "ringmail_nan NaN\n"
                        "ringmail_inf +Inf\n"
                        "ringmail_ninf -Inf\n"
                        "# TYPE ringmail_queue gauge\n");
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_scrape),
        cmocka_unit_test(test_metrics_big_body),
        cmocka_unit_test(test_metrics_stalled_reader),
        cmocka_unit_test(test_metrics_errors),
        cmocka_unit_test(test_metrics_header_limit),
        cmocka_unit_test(test_metrics_two_clients_at_once),
        cmocka_unit_test(test_metrics_idle_timeout),
        cmocka_unit_test(test_metrics_free_with_clients),
        cmocka_unit_test(test_metrics_new_errors),
        cmocka_unit_test(test_metrics_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
