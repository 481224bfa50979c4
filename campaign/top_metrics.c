/*
 * top_metrics - `ringmail top --metrics HOST:PORT`: a running sender's
 * /metrics (pool/deliver.c pool_metrics), scraped once per refresh.
 *
 * Read per ISP (the isp label; other labels, such as a campaign's, are
 * summed over): ringmail_backoff_factor (the lowest over endpoints),
 * ringmail_backoff_active and ringmail_isp_held (1 when any says 1),
 * ringmail_rate_limit (summed: each sender has its own lanes; unlimited
 * when one is), ringmail_connections_open and ringmail_queue_depth
 * (summed).
 *
 * Diagnostics: an endpoint that does not answer is a problem line of the
 * view, never an exit: "metrics 127.0.0.1:9100: connection refused", "...:
 * no answer within 1 s", "...: HTTP 404", "...: no ringmail metrics in the
 * answer". A scrape waits at most 1 s to connect and 2 s in all.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "campaign/top_int.h"
#include "engine/clock.h"

#define TOP_METRICS_CONNECT_MS 1000
#define TOP_METRICS_TOTAL_MS 2000
#define TOP_METRICS_MAX (8u << 20)

/* HOST:PORT or [V6]:PORT into host and port; -1 when it is neither. */
static int top_split_endpoint(const char *ep, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *colon;
    if (ep[0] == '[') {
        const char *close = strchr(ep, ']');
        if (!close || close[1] != ':') {
            return -1;
        }
        snprintf(host, hcap, "%.*s", (int)(close - ep - 1), ep + 1);
        colon = close + 1;
    } else {
        colon = strrchr(ep, ':');
        if (!colon || colon == ep) {
            return -1;
        }
        snprintf(host, hcap, "%.*s", (int)(colon - ep), ep);
    }
    snprintf(port, pcap, "%s", colon + 1);
    return port[0] ? 0 : -1;
}

/* A library's message as a line says it: "Connection refused" becomes
 * "connection refused" (an acronym such as "EOF" stays). */
static void top_lower_first(char *s)
{
    if (s[0] >= 'A' && s[0] <= 'Z' && !(s[1] >= 'A' && s[1] <= 'Z')) {
        s[0] = (char)(s[0] - 'A' + 'a');
    }
}

static void top_errno_words(int e, char *out, size_t cap)
{
    snprintf(out, cap, "%s", strerror(e));
    top_lower_first(out);
}

static int top_wait(int fd, short events, double deadline)
{
    for (;;) {
        int left = (int)((deadline - clock_s()) * 1000.0);
        if (left <= 0) {
            return 0;
        }
        struct pollfd p = {fd, events, 0};
        int n = poll(&p, 1, left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        return n;
    }
}

/* One connection to addr; the fd, or -1 with why in err. */
static int top_connect(const struct addrinfo *ai, char *err, size_t errlen)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        top_errno_words(errno, err, errlen);
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
        top_errno_words(errno, err, errlen);
        close(fd);
        return -1;
    }
    if (top_wait(fd, POLLOUT, clock_s() + TOP_METRICS_CONNECT_MS / 1000.0) <= 0) {
        snprintf(err, errlen, "no answer within %d s", TOP_METRICS_CONNECT_MS / 1000);
        close(fd);
        return -1;
    }
    int e = 0;
    socklen_t len = sizeof e;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len);
    if (e) {
        top_errno_words(e, err, errlen);
        close(fd);
        return -1;
    }
    return fd;
}

/* GET /metrics from ep into body (the part after the header block). */
static int top_scrape(const char *ep, buf_t *body, char *err, size_t errlen)
{
    char host[256], port[32];
    if (top_split_endpoint(ep, host, sizeof host, port, sizeof port) < 0) {
        snprintf(err, errlen, "not HOST:PORT");
        return -1;
    }
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0) {
        snprintf(err, errlen, "%s", gai_strerror(g));
        top_lower_first(err);
        return -1;
    }
    int fd = -1;
    for (const struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = top_connect(ai, err, errlen);
    }
    freeaddrinfo(res);
    if (fd < 0) {
        return -1;
    }
    double deadline = clock_s() + TOP_METRICS_TOTAL_MS / 1000.0;
    char req[512];
    int n = snprintf(req, sizeof req, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", ep);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        top_errno_words(errno, err, errlen);
        close(fd);
        return -1;
    }
    buf_t all = BUF_INIT;
    int rc = -1;
    for (;;) {
        if (top_wait(fd, POLLIN, deadline) <= 0) {
            snprintf(err, errlen, "no answer within %d s", TOP_METRICS_TOTAL_MS / 1000);
            goto out;
        }
        char *w = buf_reserve(&all, 65536);
        ssize_t k = recv(fd, w, 65536, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (k < 0) {
            top_errno_words(errno, err, errlen);
            goto out;
        }
        if (k == 0) {
            break;
        }
        buf_commit(&all, (size_t)k);
        if (buf_len(&all) > TOP_METRICS_MAX) {
            snprintf(err, errlen, "answer over %u MiB", TOP_METRICS_MAX >> 20);
            goto out;
        }
    }
    const char *text = buf_cstr(&all);
    int status = 0;
    if (sscanf(text, "HTTP/%*d.%*d %d", &status) != 1) {
        snprintf(err, errlen, "not an HTTP answer");
        goto out;
    }
    if (status != 200) {
        snprintf(err, errlen, "HTTP %d", status);
        goto out;
    }
    const char *end = strstr(text, "\r\n\r\n");
    if (!end) {
        snprintf(err, errlen, "not an HTTP answer");
        goto out;
    }
    end += 4;
    buf_append(body, end, buf_len(&all) - (size_t)(end - text));
    rc = 0;
out:
    buf_free(&all);
    close(fd);
    return rc;
}

/* ---- the exposition text ---- */

enum top_metric { TM_BACKOFF, TM_ACTIVE, TM_LIMIT, TM_HELD, TM_CONNS, TM_QUEUE, TM_N };

static const char *const top_metric_names[TM_N] = {
    [TM_BACKOFF] = "ringmail_backoff_factor", [TM_ACTIVE] = "ringmail_backoff_active",
    [TM_LIMIT] = "ringmail_rate_limit",       [TM_HELD] = "ringmail_isp_held",
    [TM_CONNS] = "ringmail_connections_open", [TM_QUEUE] = "ringmail_queue_depth",
};

/* The isp label of a label set at p ("{" ... "}"), unescaped into isp;
 * the end of the set, or NULL when it is malformed. */
static const char *top_labels(const char *p, const char *end, char *isp, size_t cap, int *has)
{
    p++; /* '{' */
    *has = 0;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ',')) {
            p++;
        }
        if (p < end && *p == '}') {
            return p + 1;
        }
        const char *k = p;
        while (p < end && *p != '=' && *p != '}') {
            p++;
        }
        if (p + 1 >= end || *p != '=' || p[1] != '"') {
            return NULL;
        }
        int want = (size_t)(p - k) == 3 && memcmp(k, "isp", 3) == 0;
        p += 2;
        size_t o = 0;
        while (p < end && *p != '"') {
            char c = *p++;
            if (c == '\\' && p < end) {
                c = *p++;
                c = c == 'n' ? '\n' : c;
            }
            if (want && o + 1 < cap) {
                isp[o++] = c;
            }
        }
        if (p >= end) {
            return NULL;
        }
        p++; /* closing quote */
        if (want) {
            isp[o] = '\0';
            *has = 1;
        }
    }
    return NULL;
}

static void top_metric_add(struct top_isp *isp, enum top_metric m, double v)
{
    if (!isp->m_seen) {
        isp->m_seen = 1;
        isp->m_backoff = 1;
        isp->m_limit = 0;
    }
    switch (m) {
    case TM_BACKOFF:
        isp->m_backoff = v < isp->m_backoff ? v : isp->m_backoff;
        break;
    case TM_ACTIVE:
        isp->m_paused |= v > 0;
        break;
    case TM_LIMIT:
        isp->m_limit = v < 0 || isp->m_limit < 0 ? -1 : isp->m_limit + v;
        break;
    case TM_HELD:
        isp->m_held |= v > 0;
        break;
    case TM_CONNS:
        isp->m_conns += v;
        break;
    default:
        isp->m_queue += v;
        break;
    }
}

int top_metrics_parse(struct top *t, const char *text, size_t len)
{
    const char *p = text, *end = text + len;
    int samples = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) {
            eol = end;
        }
        const char *line = p;
        p = eol + 1;
        if (line == eol || *line == '#') {
            continue;
        }
        const char *q = line;
        while (q < eol && *q != '{' && *q != ' ' && *q != '\t') {
            q++;
        }
        size_t nlen = (size_t)(q - line);
        if (nlen > 9 && memcmp(line, "ringmail_", 9) == 0) {
            samples++;
        }
        int m = -1;
        for (int i = 0; i < TM_N; i++) {
            if (strlen(top_metric_names[i]) == nlen &&
                memcmp(top_metric_names[i], line, nlen) == 0) {
                m = i;
            }
        }
        if (m < 0 || q >= eol || *q != '{') {
            continue;
        }
        char isp[CONFIG_NAME_MAX * 2];
        int has = 0;
        q = top_labels(q, eol, isp, sizeof isp, &has);
        if (!q || !has) {
            continue;
        }
        char num[64];
        while (q < eol && (*q == ' ' || *q == '\t')) {
            q++;
        }
        size_t vl = 0;
        while (q < eol && *q != ' ' && *q != '\t' && *q != '\r' && vl + 1 < sizeof num) {
            num[vl++] = *q++;
        }
        num[vl] = '\0';
        char *stop;
        double v = strtod(num, &stop);
        if (vl == 0 || *stop) {
            continue;
        }
        top_metric_add(top_isp_get(t, isp), (enum top_metric)m, v);
    }
    return samples > 0 ? 0 : -1;
}

void top_metrics_refresh(struct top *t)
{
    for (size_t i = 0; i < t->o.nmetrics; i++) {
        const char *ep = t->o.metrics[i];
        buf_t body = BUF_INIT;
        char err[256];
        if (top_scrape(ep, &body, err, sizeof err) < 0) {
            top_problem(t, "metrics %s: %s", ep, err);
        } else if (top_metrics_parse(t, buf_data(&body), buf_len(&body)) < 0) {
            top_problem(t, "metrics %s: no ringmail metrics in the answer", ep);
        }
        buf_free(&body);
    }
}
