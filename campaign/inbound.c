/*
 * inbound - `ringmail inbound`: the return path's mail server
 *
 * SYNOPSIS
 *     ringmail inbound --listen ADDR:PORT [--listen ADDR:PORT ...] --db URL --config FILE
 *                      [--tls-cert F --tls-key F] [--http ADDR:PORT] [options]
 *     ringmail inbound --http ADDR:PORT --db URL --config FILE
 *
 * DESCRIPTION
 *     An SMTP server on the ring (engine/loop.h, engine/smtp_server.h) for
 *     the mail that comes back to [feedback] return_path: DSNs and other
 *     bounces (b-TOKEN@return_path, usually from the null sender),
 *     complaints (ARF), auto-replies and mailto unsubscribes
 *     (u-TOKEN@return_path). Point the return-path domain's MX at it.
 *
 *     Every message goes to a writer thread that writes it through
 *     campaign/feedback_store.h (parse, token check, feedback_event rows,
 *     the recipient's feedback, the suppression list) in group commits:
 *     everything queued when the writer is free, up to --batch messages
 *     or 8 MB, in one transaction. The client hears 250 only after that
 *     commit; when the database fails it hears 451 4.3.0 and retries
 *     later (nothing is lost), and the session goes on. The loop never
 *     waits for PostgreSQL.
 *
 *     Accepted: any sender (the null sender too); recipients of the
 *     return-path domain only, any local part (what the store cannot
 *     match it records as unmatched), and a bare "postmaster". Anything
 *     else: 550 5.7.1 Relaying denied.
 *
 *     --http ADDR:PORT also serves the one-click unsubscribe endpoint
 *     (campaign/inbound_http.h); with --http alone no SMTP is served.
 *
 * OPTIONS
 *     --listen ADDR:PORT     SMTP on this address (repeatable)
 *     --db URL               libpq connection string
 *     --config FILE          the ringmail config: its [feedback] section
 *                            (return_path, secret_file) is required
 *     --tls-cert F --tls-key F  offer STARTTLS with this certificate
 *     --http ADDR:PORT       the one-click unsubscribe endpoint
 *     --hostname NAME        greeting and EHLO name (default: host name)
 *     --max-size BYTES       message size limit (SIZE; 552 over it; 10 MB)
 *     --max-conns N          sessions at once (default 1000)
 *     --max-per-client N     sessions at once from one address (default 20)
 *     --timeout SECONDS      idle time allowed between commands (default 60)
 *     --session-timeout SECONDS  a whole session's limit (default 600)
 *     --batch N              messages per commit at most (default 256)
 *     --verbose              one line per message
 *
 *     SIGTERM or SIGINT stops it: no new connection is accepted, the
 *     messages being committed are answered, the ones not yet tried get
 *     421 (their clients retry), every session gets 421 and is closed.
 *
 * DIAGNOSTICS
 *     Usage errors (exit 2): "ringmail inbound: give --listen ADDR:PORT or
 *     --http ADDR:PORT", "ringmail inbound: --db URL is required",
 *     "ringmail inbound: --config FILE is required: inbound needs the
 *     [feedback] return_path and secret_file", "ringmail inbound:
 *     --tls-cert and --tls-key go together", "ringmail inbound: --listen
 *     SPEC: REASON", "ringmail inbound: --OPTION: not a number in [MIN,
 *     MAX]".
 *     Failures (exit 1): "ringmail inbound: CONFIG:LINE: ..." (the config),
 *     "ringmail inbound: --config FILE has no [feedback] section: inbound
 *     needs its return_path and secret_file", the store's messages
 *     (connecting, schema version), "ringmail inbound: cannot listen on
 *     ADDR: REASON", the TLS context's and inbound_http_start's messages.
 *     While running (stderr): the writer's "database unavailable" /
 *     "database back" and "complaint guard" lines (inbound_writer.c),
 *     with --verbose one line per message (inbound_conn.c); at exit one
 *     line "ringmail inbound: summary connections=N ... store_ms=X
 *     store_cpu_ms=X db_wait_ms=X" (the writer's time inside the store,
 *     its CPU, and the difference: waiting for PostgreSQL). A stop that
 *     cannot finish (a commit stuck for 10 s): "ringmail inbound: N
 *     sessions still open after 10 s: stopping anyway", and if the writer
 *     is still inside PostgreSQL 5 s later: "ringmail inbound: the writer
 *     still waits for PostgreSQL after 5 s more: exiting without it ..."
 *     (exit 1).
 */
#include "campaign/inbound.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "campaign/inbound_http.h"
#include "campaign/inbound_int.h"
#include "engine/opt.h"
#include "engine/netaddr.h"
#include "engine/num.h"
#include "pool/config.h"

#define INBOUND_RING_ENTRIES 4096
#define INBOUND_BACKLOG 1024
#define INBOUND_BATCH_BYTES (8u * 1024u * 1024u)
#define INBOUND_STOP_DEADLINE_MS 10000
#define INBOUND_WRITER_JOIN_MS 5000

/* ---- the command line ---- */

static void inbound_usage(FILE *f)
{
    fprintf(f, "usage: ringmail inbound --listen ADDR:PORT --db URL --config FILE [options]\n"
               "       ringmail inbound --http ADDR:PORT --db URL --config FILE\n"
               "\n"
               "The SMTP server of [feedback] return_path: bounces, complaints, auto-replies\n"
               "and unsubscribe mails, recorded in PostgreSQL before the 250 (451 when the\n"
               "database is away: the sender retries). Mail for other domains: 550 5.7.1.\n"
               "\n"
               "  --listen ADDR:PORT     SMTP on this address (repeatable)\n"
               "  --db URL               libpq connection string\n"
               "  --config FILE          ringmail config with a [feedback] section\n"
               "  --tls-cert FILE        offer STARTTLS with this certificate (PEM chain)\n"
               "  --tls-key FILE         and its key\n"
               "  --http ADDR:PORT       the one-click unsubscribe endpoint (POST /u/TOKEN)\n"
               "  --hostname NAME        greeting and EHLO name (default: the host name)\n"
               "  --max-size BYTES       message size limit (default 10485760)\n"
               "  --max-conns N          sessions at once (default 1000)\n"
               "  --max-per-client N     sessions at once from one client address (default 20)\n"
               "  --timeout SECONDS      idle time between commands (default 60)\n"
               "  --session-timeout SECONDS  a whole session (default 600)\n"
               "  --batch N              messages per database commit at most (default 256)\n"
               "  --verbose              one line per message on stderr\n"
               "\n"
               "At exit (SIGTERM, SIGINT) a summary line on stderr: sessions, messages, answers,\n"
               "commits, events, and the time spent in the store (CPU and database wait).\n");
}

enum {
    INBOUND_OPT_LISTEN = 256,
    INBOUND_OPT_DB,
    INBOUND_OPT_CONFIG,
    INBOUND_OPT_CERT,
    INBOUND_OPT_KEY,
    INBOUND_OPT_HTTP,
    INBOUND_OPT_HOSTNAME,
    INBOUND_OPT_MAX_SIZE,
    INBOUND_OPT_MAX_CONNS,
    INBOUND_OPT_PER_CLIENT,
    INBOUND_OPT_TIMEOUT,
    INBOUND_OPT_SESSION,
    INBOUND_OPT_BATCH,
    INBOUND_OPT_VERBOSE,
    INBOUND_OPT_HELP,
};

static const struct option inbound_long_options[] = {
    {"listen", required_argument, NULL, INBOUND_OPT_LISTEN},
    {"db", required_argument, NULL, INBOUND_OPT_DB},
    {"config", required_argument, NULL, INBOUND_OPT_CONFIG},
    {"tls-cert", required_argument, NULL, INBOUND_OPT_CERT},
    {"tls-key", required_argument, NULL, INBOUND_OPT_KEY},
    {"http", required_argument, NULL, INBOUND_OPT_HTTP},
    {"hostname", required_argument, NULL, INBOUND_OPT_HOSTNAME},
    {"max-size", required_argument, NULL, INBOUND_OPT_MAX_SIZE},
    {"max-conns", required_argument, NULL, INBOUND_OPT_MAX_CONNS},
    {"max-per-client", required_argument, NULL, INBOUND_OPT_PER_CLIENT},
    {"timeout", required_argument, NULL, INBOUND_OPT_TIMEOUT},
    {"session-timeout", required_argument, NULL, INBOUND_OPT_SESSION},
    {"batch", required_argument, NULL, INBOUND_OPT_BATCH},
    {"verbose", no_argument, NULL, INBOUND_OPT_VERBOSE},
    {"help", no_argument, NULL, INBOUND_OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* inbound_number - a numeric option in [min, max] into *out; 0 or 2 */
static int inbound_number(const char *name, const char *text, unsigned long min, unsigned long max,
                          unsigned long *out)
{
    if (num_parse_ulong(text, min, max, out) == 0) {
        return 0;
    }
    fprintf(stderr, "ringmail inbound: --%s: not a number in [%lu, %lu]\n", name, min, max);
    return 2;
}

static int inbound_add_listen(struct inbound_options *o, const char *spec)
{
    char err[256];
    if (o->nlisten == INBOUND_MAX_LISTEN) {
        fprintf(stderr, "ringmail inbound: more than %d --listen\n", INBOUND_MAX_LISTEN);
        return 2;
    }
    struct inbound_listen *l = &o->listen[o->nlisten];
    if (netaddr_parse(spec, &l->addr, &l->len, NULL, 0, err, sizeof err) < 0) {
        fprintf(stderr, "ringmail inbound: --listen %s: %s\n", spec, err);
        return 2;
    }
    o->nlisten++;
    return 0;
}

/* inbound_option - one option; 0, 2 on a usage error, -1 after --help */
static int inbound_option(struct inbound_options *o, int opt, const char *arg)
{
    unsigned long secs;
    int rc;
    switch (opt) {
    case INBOUND_OPT_LISTEN:
        return inbound_add_listen(o, arg);
    case INBOUND_OPT_DB:
        o->db_url = arg;
        return 0;
    case INBOUND_OPT_CONFIG:
        o->config_path = arg;
        return 0;
    case INBOUND_OPT_CERT:
        o->cert_file = arg;
        return 0;
    case INBOUND_OPT_KEY:
        o->key_file = arg;
        return 0;
    case INBOUND_OPT_HTTP:
        o->http = arg;
        return 0;
    case INBOUND_OPT_HOSTNAME:
        snprintf(o->hostname, sizeof o->hostname, "%s", arg);
        return 0;
    case INBOUND_OPT_MAX_SIZE:
        return inbound_number("max-size", arg, 1024, 1ul << 30, &o->max_size);
    case INBOUND_OPT_MAX_CONNS:
        return inbound_number("max-conns", arg, 1, 1000000, &o->max_conns);
    case INBOUND_OPT_PER_CLIENT:
        return inbound_number("max-per-client", arg, 1, 1000000, &o->max_per_client);
    case INBOUND_OPT_TIMEOUT:
        rc = inbound_number("timeout", arg, 1, 86400, &secs);
        o->timeout_ms = secs * 1000;
        return rc;
    case INBOUND_OPT_SESSION:
        rc = inbound_number("session-timeout", arg, 1, 86400, &secs);
        o->session_ms = secs * 1000;
        return rc;
    case INBOUND_OPT_BATCH:
        return inbound_number("batch", arg, 1, 100000, &o->batch_max);
    case INBOUND_OPT_VERBOSE:
        o->verbose = 1;
        return 0;
    case INBOUND_OPT_HELP:
        inbound_usage(stdout);
        return -1;
    default:
        inbound_usage(stderr);
        return 2;
    }
}

/* inbound_parse_args - 0 to run, -1 after --help, 2 on a usage error */
static int inbound_parse_args(struct inbound_options *o, int argc, char **argv)
{
    o->max_size = 10ul * 1024 * 1024;
    o->max_conns = 1000;
    o->max_per_client = 20;
    o->timeout_ms = 60000;
    o->session_ms = 600000;
    o->batch_max = 256;
    o->batch_bytes = INBOUND_BATCH_BYTES;
    optind = 1;
    int opt;
    while ((opt = opt_getopt(argc, argv, inbound_long_options)) != -1) {
        int rc = inbound_option(o, opt, optarg);
        if (rc) {
            return rc;
        }
    }
    const char *missing = NULL;
    if (optind < argc) {
        fprintf(stderr, "ringmail inbound: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!o->nlisten && !o->http) {
        missing = "give --listen ADDR:PORT or --http ADDR:PORT";
    } else if (!o->db_url) {
        missing = "--db URL is required";
    } else if (!o->config_path) {
        missing = "--config FILE is required: inbound needs the [feedback] return_path and "
                  "secret_file";
    } else if (!o->cert_file != !o->key_file) {
        missing = "--tls-cert and --tls-key go together";
    }
    if (missing) {
        fprintf(stderr, "ringmail inbound: %s\n", missing);
        return 2;
    }
    if (!o->hostname[0] && gethostname(o->hostname, sizeof o->hostname - 1) != 0) {
        snprintf(o->hostname, sizeof o->hostname, "ringmail-inbound");
    }
    return 0;
}

/* ---- the loop's own events: the writer's verdicts, the signal ---- */

static void inbound_stop_if_done(struct inbound *ib)
{
    if (ib->stopping && !ib->conns.first && ib->outstanding == 0) {
        loop_stop(ib->loop);
    }
}

static void inbound_writer_arm(struct inbound *ib);

static void inbound_on_writer(struct loop_op *op, int res, unsigned flags)
{
    struct inbound *ib = op->owner;
    (void)flags;
    ib->writer_armed = 0;
    if (res < 0) {
        return;
    }
    struct inbound_job *j = inbound_writer_take(&ib->writer);
    while (j) {
        struct inbound_job *next = j->next; /* the answer may free j's connection */
        inbound_conn_answer(j->conn);
        j = next;
    }
    inbound_writer_arm(ib);
    inbound_stop_if_done(ib);
}

static void inbound_writer_arm(struct inbound *ib)
{
    ib->writer_op = (struct loop_op){inbound_on_writer, ib};
    ib->writer_armed = 1;
    loop_poll_add(ib->loop, &ib->writer_op, ib->writer.efd, POLLIN);
}

static void inbound_on_stop_deadline(struct loop_timer *t)
{
    struct inbound *ib = t->owner;
    unsigned long open = 0;
    for (struct list_node *n = ib->conns.first; n; n = n->next) {
        open++;
    }
    fprintf(stderr, "ringmail inbound: %lu sessions still open after %d s: stopping anyway\n", open,
            INBOUND_STOP_DEADLINE_MS / 1000);
    loop_stop(ib->loop);
}

/* inbound_stop - no more connections; answer what is committed, 421 the rest */
static void inbound_stop(struct inbound *ib)
{
    ib->stopping = 1;
    for (unsigned i = 0; i < ib->o.nlisten; i++) {
        struct inbound_listener *l = &ib->listeners[i];
        loop_timer_cancel(ib->loop, &l->retry);
        if (l->armed) {
            loop_cancel(ib->loop, &l->op);
        }
    }
    if (ib->writer.started) {
        inbound_writer_request_stop(&ib->writer);
    }
    struct list_node *n = ib->conns.first;
    while (n) {
        struct list_node *next = n->next; /* the shutdown may free the connection */
        inbound_conn_shutdown(list_entry(n, struct inbound_conn, link));
        n = next;
    }
    loop_timer_set(ib->loop, &ib->stop_timer, INBOUND_STOP_DEADLINE_MS);
    inbound_stop_if_done(ib);
}

static void inbound_on_signal(struct loop_op *op, int res, unsigned flags)
{
    struct inbound *ib = op->owner;
    (void)flags;
    ib->sig_armed = 0;
    if (res < 0) {
        return;
    }
    struct signalfd_siginfo si;
    if (read(ib->sigfd, &si, sizeof si) != (ssize_t)sizeof si || ib->stopping) {
        return;
    }
    fprintf(stderr,
            "ringmail inbound: %s: stopping: answering what is committed, 421 to the rest\n",
            strsignal((int)si.ssi_signo));
    inbound_stop(ib);
}

/* ---- set-up ---- */

static int inbound_listen_socket(struct inbound_listen *l)
{
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if ((l->addr.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
        bind(fd, (struct sockaddr *)&l->addr, l->len) < 0 || listen(fd, INBOUND_BACKLOG) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* inbound_setup_smtp - the config, the store and the writer, TLS, the sockets */
static int inbound_setup_smtp(struct inbound *ib)
{
    const struct inbound_options *o = &ib->o;
    char err[512];
    for (unsigned i = 0; i < o->nlisten; i++) {
        ib->listeners[i].ib = ib;
        ib->listeners[i].fd = inbound_listen_socket(&ib->o.listen[i]);
        if (ib->listeners[i].fd < 0) {
            netaddr_format((const struct sockaddr *)&o->listen[i].addr, err, sizeof err);
            fprintf(stderr, "ringmail inbound: cannot listen on %s: %s\n", err, strerror(errno));
            return -1;
        }
    }
    if (o->cert_file) {
        struct tls_server_options topt = {.cert_file = o->cert_file, .key_file = o->key_file};
        ib->tls = tls_server_ctx_new(&topt, err, sizeof err);
        if (!ib->tls) {
            fprintf(stderr, "ringmail inbound: %s\n", err);
            return -1;
        }
    }
    ib->smtp = (struct smtp_server_config){.hostname = o->hostname,
                                           .max_message_size = o->max_size,
                                           .offer_starttls = ib->tls != NULL,
                                           .keep_data = 1};
    struct feedback_store *store =
        feedback_store_open(o->db_url, &ib->cfg->feedback, &ib->cfg->bounce.rules, err, sizeof err);
    if (!store) {
        fprintf(stderr, "ringmail inbound: %s\n", err);
        return -1;
    }
    if (inbound_writer_start(&ib->writer, store, o->batch_max, o->batch_bytes, o->verbose) < 0) {
        fprintf(stderr, "ringmail inbound: cannot start the writer thread\n");
        if (!ib->writer.store) {
            feedback_store_close(store);
        }
        return -1;
    }
    return 0;
}

/* inbound_setup - everything before the loop runs; 0 or -1 (said why) */
static int inbound_setup(struct inbound *ib)
{
    char err[512];
    ib->cfg = config_load(ib->o.config_path, err, sizeof err);
    if (!ib->cfg) {
        fprintf(stderr, "ringmail inbound: %s\n", err);
        return -1;
    }
    if (!ib->cfg->feedback.enabled) {
        fprintf(stderr,
                "ringmail inbound: --config %s has no [feedback] section: inbound needs its "
                "return_path and secret_file\n",
                ib->o.config_path);
        return -1;
    }
    if (ib->o.nlisten && inbound_setup_smtp(ib) < 0) {
        return -1;
    }
    ib->loop = loop_new(INBOUND_RING_ENTRIES);
    if (!ib->loop) {
        fprintf(stderr, "ringmail inbound: cannot set up io_uring: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

/* inbound_signals - SIGTERM and SIGINT through a signalfd (blocked in every
 * thread started later); SIGPIPE ignored. 0 or -1 */
static int inbound_signals(struct inbound *ib)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) {
        return -1;
    }
    ib->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    return ib->sigfd < 0 ? -1 : 0;
}

/* ---- the end ---- */

static void inbound_summary(const struct inbound *ib)
{
    const struct inbound_writer *w = &ib->writer;
    double store_ms = (double)w->store_ns / 1e6, cpu_ms = (double)w->store_cpu_ns / 1e6;
    fprintf(stderr,
            "ringmail inbound: summary connections=%" PRIu64 " refused=%" PRIu64
            " messages=%" PRIu64 " answered_250=%" PRIu64 " answered_451=%" PRIu64
            " answered_421=%" PRIu64 " relay_denied=%" PRIu64 " timeouts=%" PRIu64
            " commits=%" PRIu64 " committed=%" PRIu64 " events=%" PRIu64 " suppressed=%" PRIu64
            " holds=%" PRIu64 " store_ms=%.1f store_cpu_ms=%.1f db_wait_ms=%.1f\n",
            ib->connections, ib->refused, ib->messages, ib->answered_250, ib->answered_451,
            ib->answered_421, ib->relay_denied, ib->timeouts, w->batches, w->committed, w->events,
            w->suppressed, w->held, store_ms, cpu_ms, store_ms > cpu_ms ? store_ms - cpu_ms : 0.0);
}

/* inbound_cleanup - after loop_run: the writer joined, the ring gone, then
 * the connections (nothing can complete for them any more). -1 when the
 * writer does not come back from PostgreSQL: then nothing is freed (it may
 * still read the connections' messages) and the process just exits. */
static int inbound_cleanup(struct inbound *ib, int summary)
{
    if (ib->loop) {
        for (struct list_node *n = ib->conns.first; n; n = n->next) {
            struct inbound_conn *c = list_entry(n, struct inbound_conn, link);
            loop_timer_cancel(ib->loop, &c->timer);
            shutdown(c->fd, SHUT_RDWR);
        }
        for (unsigned i = 0; i < ib->o.nlisten; i++) {
            loop_timer_cancel(ib->loop, &ib->listeners[i].retry);
        }
        loop_timer_cancel(ib->loop, &ib->stop_timer);
    }
    if (inbound_writer_join(&ib->writer, INBOUND_WRITER_JOIN_MS) < 0) {
        fprintf(stderr,
                "ringmail inbound: the writer still waits for PostgreSQL after %d s more: "
                "exiting without it (its commit, if it completes, was not answered: the "
                "senders retry)\n",
                INBOUND_WRITER_JOIN_MS / 1000);
        return -1;
    }
    if (summary) {
        inbound_summary(ib);
    }
    struct loop *loop = ib->loop;
    ib->loop = NULL; /* inbound_conn_release must not stop a freed loop */
    loop_free(loop);
    while (ib->conns.first) {
        inbound_conn_release(list_entry(ib->conns.first, struct inbound_conn, link));
    }
    for (unsigned i = 0; i < ib->o.nlisten; i++) {
        if (ib->listeners[i].fd >= 0) {
            close(ib->listeners[i].fd);
        }
    }
    if (ib->sigfd >= 0) {
        close(ib->sigfd);
    }
    tls_ctx_free(ib->tls);
    config_free(ib->cfg);
    return 0;
}

/* inbound_run - the loop until a signal; 0 or 1 */
static int inbound_run(struct inbound *ib)
{
    ib->sig_op = (struct loop_op){inbound_on_signal, ib};
    ib->sig_armed = 1;
    loop_poll_add(ib->loop, &ib->sig_op, ib->sigfd, POLLIN);
    if (ib->writer.started) {
        inbound_writer_arm(ib);
    }
    for (unsigned i = 0; i < ib->o.nlisten; i++) {
        inbound_listener_start(&ib->listeners[i]);
        char addr[80];
        netaddr_format((const struct sockaddr *)&ib->o.listen[i].addr, addr, sizeof addr);
        fprintf(stderr, "ringmail inbound: listening on %s for mail to %s\n", addr,
                ib->cfg->feedback.return_path);
    }
    int rc = loop_run(ib->loop);
    if (rc < 0) {
        fprintf(stderr, "ringmail inbound: io_uring failed: %s\n", strerror(-rc));
        return 1;
    }
    return 0;
}

int inbound_main(int argc, char **argv)
{
    struct inbound *ib = calloc(1, sizeof *ib);
    if (!ib) {
        fprintf(stderr, "ringmail inbound: out of memory\n");
        return 1;
    }
    ib->sigfd = -1;
    ib->writer.efd = -1;
    for (unsigned i = 0; i < INBOUND_MAX_LISTEN; i++) {
        ib->listeners[i].fd = -1;
    }
    loop_timer_init(&ib->stop_timer, inbound_on_stop_deadline, ib);
    int rc = inbound_parse_args(&ib->o, argc, argv);
    if (rc) {
        free(ib);
        return rc < 0 ? 0 : rc;
    }
    struct inbound_http *http = NULL;
    int ran = 0;
    rc = 1;
    if (inbound_signals(ib) == 0 && inbound_setup(ib) == 0) {
        char err[512];
        if (ib->o.http) {
            http = inbound_http_start(ib->o.http, ib->o.db_url, ib->cfg, err, sizeof err);
            if (!http) {
                fprintf(stderr, "ringmail inbound: %s\n", err);
            } else {
                fprintf(stderr, "ringmail inbound: one-click unsubscribe on http://%s\n",
                        ib->o.http);
            }
        }
        if (!ib->o.http || http) {
            rc = inbound_run(ib);
            ran = 1;
        }
    }
    if (http) {
        inbound_http_stop(http);
    }
    if (inbound_cleanup(ib, ran && ib->o.nlisten) < 0) {
        return 1; /* ib stays: the writer thread may still use it */
    }
    free(ib);
    return rc;
}
