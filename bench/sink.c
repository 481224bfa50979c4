/*
 * sink - `ringmail sink`, a fast io_uring TLS SMTP sink. See sink.h; the
 * files it is split into are listed in sink_int.h.
 *
 * Threads. The main thread parses options, loads the certificate, opens
 * one listening socket per address per worker (SO_REUSEPORT spreads the
 * connections), blocks SIGTERM/SIGINT and starts the workers, which
 * inherit the mask. Each worker creates its own ring (SINGLE_ISSUER wants
 * the creating thread to be the submitting one), arms a multishot accept
 * per socket and runs its loop. The main thread sits in sigwait(); on a
 * signal it calls loop_stop() on every worker, joins them, merges their
 * statistics and writes the JSON. Counters and the per-recipient map are
 * per worker, so the hot path takes no lock; only the connection count
 * (--max-conns and peak_concurrent are global by nature) is an atomic,
 * touched once per connection. The per-client-address table ("peers") is
 * shared too: its mutex is taken when a connection opens and closes, and
 * an accepted message adds to its entry's atomic counter, never locking.
 *
 * Diagnostics: setup errors (certificate, io_uring, bind, threads) on
 * stderr; sink_main returns 2 on a usage error, 1 on any other failure.
 */
#include "bench/sink.h"
#include "bench/sink_int.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/netaddr.h"

#define SINK_RING_ENTRIES 4096
#define SINK_LISTEN_BACKLOG 4096

/* ---- workers ---- */

static void sink_ready(struct sink *sk, int ok)
{
    pthread_mutex_lock(&sk->ready_lock);
    sk->ready++;
    sk->failed += ok ? 0 : 1;
    pthread_cond_broadcast(&sk->ready_cond);
    pthread_mutex_unlock(&sk->ready_lock);
}

/* After loop_run: cancel timers while the loop exists, tear the ring down
 * (the kernel drops what was in flight), then free the connections. */
static void sink_worker_cleanup(struct sink_worker *w)
{
    for (struct list_node *n = w->conns.first; n; n = n->next) {
        struct sink_conn *c = list_entry(n, struct sink_conn, link);
        loop_timer_cancel(w->loop, &c->idle_timer);
        loop_timer_cancel(w->loop, &c->held_timer);
        shutdown(c->fd, SHUT_RDWR);
    }
    for (unsigned i = 0; i < w->sink->cfg.nlisten; i++) {
        loop_timer_cancel(w->loop, &w->listeners[i].retry);
    }
    loop_timer_cancel(w->loop, &w->snapshot_timer);
    pthread_mutex_lock(&w->sink->ready_lock); /* sink_workers_stop may be calling loop_stop */
    struct loop *loop = w->loop;
    w->loop = NULL;
    pthread_mutex_unlock(&w->sink->ready_lock);
    loop_free(loop);
    while (w->conns.first) {
        sink_conn_release(list_entry(w->conns.first, struct sink_conn, link));
    }
}

static void *sink_worker_main(void *arg)
{
    struct sink_worker *w = arg;
    w->loop = loop_new(SINK_RING_ENTRIES);
    if (!w->loop) {
        fprintf(stderr, "sink: cannot set up io_uring: %s\n", strerror(errno));
        sink_ready(w->sink, 0);
        return NULL;
    }
    for (unsigned i = 0; i < w->sink->cfg.nlisten; i++) {
        sink_listener_start(&w->listeners[i]);
    }
    loop_timer_init(&w->snapshot_timer, sink_worker_on_snapshot, w);
    if (w->sink->cfg.stats_interval_ms) {
        loop_timer_set(w->loop, &w->snapshot_timer, w->sink->cfg.stats_interval_ms);
    }
    sink_ready(w->sink, 1);
    int rc = loop_run(w->loop);
    if (rc < 0) {
        fprintf(stderr, "sink: thread %u: io_uring failed: %s\n", w->index, strerror(-rc));
    }
    sink_worker_cleanup(w);
    return NULL;
}

/* A listening socket for one worker; port 0 is resolved by the first bind
 * and reused by the other workers' sockets. */
static int sink_listen_socket(struct sink_listen *l)
{
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        (l->addr.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
        bind(fd, (struct sockaddr *)&l->addr, l->len) < 0 || listen(fd, SINK_LISTEN_BACKLOG) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    socklen_t len = l->len;
    getsockname(fd, (struct sockaddr *)&l->addr, &len);
    return fd;
}

static int sink_workers_start(struct sink *sk)
{
    for (unsigned i = 0; i < sk->nworkers; i++) {
        struct sink_worker *w = &sk->workers[i];
        for (unsigned j = 0; j < sk->cfg.nlisten; j++) {
            w->listeners[j].w = w;
            w->listeners[j].fd = sink_listen_socket(&sk->cfg.listen[j]);
            if (w->listeners[j].fd < 0) {
                char text[80];
                netaddr_format((struct sockaddr *)&sk->cfg.listen[j].addr, text, sizeof text);
                fprintf(stderr, "sink: cannot listen on %s: %s\n", text, strerror(errno));
                return -1;
            }
        }
    }
    for (unsigned i = 0; i < sk->nworkers; i++) {
        struct sink_worker *w = &sk->workers[i];
        if (pthread_create(&w->thread, NULL, sink_worker_main, w) != 0) {
            fprintf(stderr, "sink: cannot start thread %u\n", i);
            return -1;
        }
        w->started = 1;
    }
    pthread_mutex_lock(&sk->ready_lock);
    while (sk->ready < sk->nworkers) {
        pthread_cond_wait(&sk->ready_cond, &sk->ready_lock);
    }
    pthread_mutex_unlock(&sk->ready_lock);
    return sk->failed ? -1 : 0;
}

static void sink_workers_stop(struct sink *sk)
{
    for (unsigned i = 0; i < sk->nworkers; i++) {
        struct sink_worker *w = &sk->workers[i];
        /* loop_stop before loop_run is fine: the loop then returns at once. */
        pthread_mutex_lock(&sk->ready_lock);
        if (w->loop) {
            loop_stop(w->loop);
        }
        pthread_mutex_unlock(&sk->ready_lock);
    }
    for (unsigned i = 0; i < sk->nworkers; i++) {
        struct sink_worker *w = &sk->workers[i];
        if (w->started) {
            pthread_join(w->thread, NULL);
        }
        for (unsigned j = 0; j < sk->cfg.nlisten; j++) {
            if (w->listeners[j].fd >= 0) {
                close(w->listeners[j].fd);
            }
        }
    }
}

/* ---- setup and main ---- */

static int sink_check_config(struct sink_config *cfg)
{
    if (cfg->defer_pct + cfg->reject_pct > 100) {
        fprintf(stderr, "sink: --defer-pct plus --reject-pct exceeds 100\n");
        return -1;
    }
    if (!cfg->cert_file != !cfg->key_file) {
        fprintf(stderr, "sink: --tls-cert and --tls-key go together\n");
        return -1;
    }
    if (cfg->implicit_tls && !cfg->cert_file) {
        fprintf(stderr, "sink: --implicit-tls needs --tls-cert and --tls-key\n");
        return -1;
    }
    if (cfg->tls_min && cfg->tls_max && cfg->tls_min > cfg->tls_max) {
        fprintf(stderr, "sink: --tls-min is above --tls-max\n");
        return -1;
    }
    if (!cfg->threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->threads = n < 1 ? 1 : n > SINK_MAX_THREADS ? SINK_MAX_THREADS : (unsigned)n;
    }
    if (!cfg->idle_timeout_ms) {
        cfg->idle_timeout_ms = 60000;
    }
    cfg->defer_closes = strncmp(cfg->defer_reply, "421", 3) == 0;
    cfg->temp_closes = strncmp(cfg->temp_reply, "421", 3) == 0;
    if (!cfg->rate_reply[0]) {
        snprintf(cfg->rate_reply, sizeof cfg->rate_reply, "%s",
                 cfg->profile[0] ? cfg->temp_reply : sink_reply_rate);
    }
    cfg->rate_closes = strncmp(cfg->rate_reply, "421", 3) == 0;
    if (cfg->tls_required && (!cfg->cert_file || (cfg->no_starttls && !cfg->implicit_tls))) {
        fprintf(stderr,
                "sink: profile %s requires TLS: it needs --tls-cert and --tls-key, and "
                "STARTTLS offered or --implicit-tls\n",
                cfg->profile);
        return -1;
    }
    if (!cfg->hostname[0] && gethostname(cfg->hostname, sizeof cfg->hostname - 1) != 0) {
        snprintf(cfg->hostname, sizeof cfg->hostname, "ringmail-sink");
    }
    return 0;
}

static int sink_setup(struct sink *sk)
{
    const struct sink_config *cfg = &sk->cfg;
    if (cfg->cert_file) {
        struct tls_server_options opt = {.cert_file = cfg->cert_file,
                                         .key_file = cfg->key_file,
                                         .min_version = cfg->tls_min,
                                         .max_version = cfg->tls_max,
                                         .no_tickets = cfg->no_tickets};
        char err[256];
        sk->tls = tls_server_ctx_new(&opt, err, sizeof err);
        if (!sk->tls) {
            fprintf(stderr, "sink: %s\n", err);
            return -1;
        }
    }
    sk->smtp = (struct smtp_server_config){
        .hostname = cfg->hostname,
        .offer_starttls = sk->tls && !cfg->implicit_tls && !cfg->no_starttls,
        .offer_auth = cfg->auth,
        .auth_plaintext = cfg->auth_plaintext,
        .auth_required = cfg->auth,
        .tls_active = cfg->implicit_tls,
    };
    sk->hooks = sink_conn_hooks;
    sk->nworkers = cfg->threads;
    sk->workers = calloc(sk->nworkers, sizeof *sk->workers);
    if (!sk->workers) {
        return -1;
    }
    for (unsigned i = 0; i < sk->nworkers; i++) {
        struct sink_worker *w = &sk->workers[i];
        w->sink = sk;
        w->index = i;
        w->rng = cfg->seed * 0x9e3779b97f4a7c15ull + i;
        for (unsigned j = 0; j < SINK_MAX_LISTEN; j++) {
            w->listeners[j].fd = -1;
        }
        sink_stats_init(&w->stats);
        sink_stats_init(&w->snapshot);
        pthread_mutex_init(&w->snapshot_lock, NULL);
    }
    return 0;
}

static void sink_teardown(struct sink *sk)
{
    for (unsigned i = 0; sk->workers && i < sk->nworkers; i++) {
        json_decref(sk->workers[i].stats.deliveries);
        json_decref(sk->workers[i].snapshot.deliveries);
        pthread_mutex_destroy(&sk->workers[i].snapshot_lock);
    }
    free(sk->workers);
    tls_ctx_free(sk->tls);
    pthread_mutex_destroy(&sk->ready_lock);
    pthread_cond_destroy(&sk->ready_cond);
    sink_peers_free(&sk->peers);
    pthread_mutex_destroy(&sk->peers.lock);
    explicit_bzero(sk->cfg.auth_pass, sizeof sk->cfg.auth_pass);
    free(sk);
}

/* Until SIGTERM or SIGINT; rewrites the statistics every interval. */
static void sink_wait_for_signal(struct sink *sk, const sigset_t *signals)
{
    unsigned interval = sk->cfg.stats_file ? sk->cfg.stats_interval_ms : 0;
    for (;;) {
        if (!interval) {
            int sig;
            if (sigwait(signals, &sig) == 0) {
                return;
            }
            continue;
        }
        struct timespec ts = {.tv_sec = interval / 1000,
                              .tv_nsec = (long)(interval % 1000) * 1000000};
        if (sigtimedwait(signals, NULL, &ts) >= 0) {
            return;
        }
        if (errno == EAGAIN) {
            sink_write_stats(sk, 0);
        }
    }
}

static void sink_print_listening(const struct sink *sk)
{
    for (unsigned i = 0; i < sk->cfg.nlisten; i++) {
        char text[80];
        netaddr_format((const struct sockaddr *)&sk->cfg.listen[i].addr, text, sizeof text);
        printf("sink: listening on %s\n", text);
    }
    fflush(stdout);
}

int sink_main(int argc, char **argv)
{
    struct sink *sk = calloc(1, sizeof *sk);
    if (!sk) {
        return 1;
    }
    pthread_mutex_init(&sk->ready_lock, NULL);
    pthread_cond_init(&sk->ready_cond, NULL);
    pthread_mutex_init(&sk->peers.lock, NULL);
    int rc = sink_parse_args(&sk->cfg, argc, argv);
    if (rc != 0 || sink_check_config(&sk->cfg) < 0 || sink_setup(sk) < 0) {
        sink_teardown(sk);
        return rc < 0 ? 0 : rc > 0 ? rc : 1;
    }
    /* Workers inherit the mask: only the main thread takes the signals. */
    sigset_t signals, old;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, &old);
    signal(SIGPIPE, SIG_IGN);
    rc = sink_workers_start(sk);
    if (rc == 0) {
        sink_print_listening(sk);
        sink_wait_for_signal(sk, &signals);
    }
    sink_workers_stop(sk);
    if (rc == 0 && sk->cfg.stats_file && sink_write_stats(sk, 1) != 0) {
        rc = -1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    sink_teardown(sk);
    return rc == 0 ? 0 : 1;
}
