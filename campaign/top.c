/*
 * top - `ringmail top`: options, the refresh loop and the terminal. See
 * top.h; the statements are in top_db.c, the view in top_view.c.
 *
 * The terminal. On a terminal the view takes the alternate screen with the
 * cursor hidden, and stdin (when it is a terminal) goes to non-canonical
 * mode without echo, so a key is read as it is typed. Signals that end or
 * suspend the view (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP) and those
 * that ask for a redraw (SIGWINCH, SIGCONT) are blocked and read from a
 * signalfd beside stdin: nothing runs in a handler, and every way out goes
 * through top_term_restore (termios as it was, cursor shown, main screen
 * back), also at exit(). SIGTERM, SIGHUP and SIGQUIT are raised again
 * after the restore, so the parent sees the signal; q and Ctrl-C exit 0.
 * Ctrl-Z restores the terminal and stops; `fg` takes the view back.
 *
 * Pacing: the next refresh waits --interval, or ten times the database time
 * of the last one when that is longer (a campaign of millions of
 * recipients), so the view never takes more than a tenth of a database
 * core; the header says so ("every 2s (7.2s: the database's pace)").
 *
 * Keys: q quits, space refreshes now, s changes the sort.
 */
#include "campaign/top.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include "campaign/campaign_cmd.h"
#include "campaign/db.h"
#include "campaign/top_int.h"
#include "engine/clock.h"
#include "engine/num.h"
#include "engine/opt.h"
#include "pool/throttle.h"

#define TOP_INTERVAL_MIN_MS 200
#define TOP_INTERVAL_MAX_MS 3600000
/* A refresh waits at least this many times its database time. */
#define TOP_PACE 10

static void top_usage(FILE *f)
{
    fprintf(
        f,
        "usage: ringmail top --db URL [--campaign ID] [--config FILE] [--metrics HOST:PORT ...]\n"
        "                    [--interval 2s] [--once] [--sort queued|rate|deferrals]\n"
        "                    [--format text|json]\n"
        "\n"
        "  The live view per ISP: queued (due, or waiting for a retry) and in flight,\n"
        "  attempts per second over the last minute against the ISP's limit, deferral\n"
        "  share over 5 minutes, suspension, hold or backoff with its reason and end,\n"
        "  the oldest waiting recipient, the last error; campaigns, totals, ETA and\n"
        "  live nodes above. Without --campaign: every campaign running, paused or\n"
        "  worked on by a live node.\n"
        "  --config FILE          the send's config: ISP limits, and the ISP of\n"
        "                         recipients not tried yet (by their domain)\n"
        "  --metrics HOST:PORT    a running send's --metrics endpoint (repeatable):\n"
        "                         effective limits, backoff, connections\n"
        "  --interval DURATION    between refreshes (default 2s; 200ms to 1h)\n"
        "  --once                 print one snapshot and exit (also when stdout is not\n"
        "                         a terminal)\n"
        "  --format json          one snapshot as JSON\n"
        "  On a terminal: q quits, space refreshes, s changes the sort.\n");
}

static int top_parse(int argc, char **argv, struct top_options *o)
{
    static const struct option longopts[] = {
        {"db", required_argument, 0, 'd'},       {"campaign", required_argument, 0, 'c'},
        {"config", required_argument, 0, 'C'},   {"metrics", required_argument, 0, 'm'},
        {"interval", required_argument, 0, 'i'}, {"once", no_argument, 0, '1'},
        {"sort", required_argument, 0, 's'},     {"format", required_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0},
    };
    o->interval_ms = 2000;
    o->metrics = calloc((size_t)argc + 1, sizeof *o->metrics);
    if (!o->metrics) {
        abort();
    }
    int ch;
    optind = 1;
    while ((ch = opt_getopt(argc, argv, longopts)) != -1) {
        switch (ch) {
        case 'd':
            o->url = optarg;
            break;
        case 'c':
            o->campaign = optarg;
            break;
        case 'C':
            o->config_path = optarg;
            break;
        case 'm':
            o->metrics[o->nmetrics++] = optarg;
            break;
        case 'i': {
            uint64_t ms;
            char why[128];
            if (throttle_duration_parse(optarg, &ms, why, sizeof why) != 0) {
                fprintf(stderr, "ringmail top: --interval: %s (e.g. 2s, 500ms, 1m)\n", why);
                return 2;
            }
            if (ms < TOP_INTERVAL_MIN_MS || ms > TOP_INTERVAL_MAX_MS) {
                fprintf(stderr, "ringmail top: --interval: '%s' is outside 200ms to 1h\n", optarg);
                return 2;
            }
            o->interval_ms = (unsigned)ms;
            break;
        }
        case '1':
            o->once = 1;
            break;
        case 's':
            if (strcmp(optarg, "queued") == 0) {
                o->sort = TOP_SORT_QUEUED;
            } else if (strcmp(optarg, "rate") == 0) {
                o->sort = TOP_SORT_RATE;
            } else if (strcmp(optarg, "deferrals") == 0) {
                o->sort = TOP_SORT_DEFERRALS;
            } else {
                fprintf(stderr, "ringmail top: --sort is queued, rate or deferrals, not '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case 'f':
            if (strcmp(optarg, "json") == 0 || strcmp(optarg, "text") == 0) {
                o->json = optarg[0] == 'j';
            } else {
                fprintf(stderr, "ringmail top: --format is text or json, not '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h':
            top_usage(stdout);
            return 0;
        default:
            top_usage(stderr);
            return 2;
        }
    }
    unsigned long id;
    const char *problem = NULL;
    if (optind < argc) {
        problem = "unexpected argument";
    } else if (!o->url) {
        problem = "--db URL is required";
    } else if (o->campaign && num_parse_ulong(o->campaign, 1, CAMPAIGN_ID_MAX, &id) < 0) {
        problem = "--campaign takes a numeric campaign id";
    }
    if (problem) {
        fprintf(stderr, "ringmail top: %s\n", problem);
        return 2;
    }
    return -1;
}

/* ---- the database ---- */

static int top_connect(struct top *t, char *err, size_t errlen)
{
    t->db = db_connect_current(t->o.url, err, errlen);
    if (!t->db) {
        return -1;
    }
    /* A read-only session of its own: UTC times, no JIT (a refresh is a
     * few milliseconds of work, JIT compiles for hundreds), bounded. */
    if (db_exec(t->db,
                "SET client_encoding = 'UTF8'; SET TIME ZONE 'UTC'; SET jit = off;"
                " SET statement_timeout = '10s'; SET application_name = 'ringmail top';"
                " SET default_transaction_read_only = on",
                err, errlen) < 0) {
        pq.PQfinish(t->db);
        t->db = NULL;
        return -1;
    }
    return 0;
}

/* One refresh: the database (connecting again when it was lost), then the
 * senders' metrics. */
static void top_refresh(struct top *t)
{
    char err[1024];
    int rc = -1;
    if (t->db || top_connect(t, err, sizeof err) == 0) {
        rc = top_db_refresh(t, err, sizeof err);
        if (rc < 0 && pq.PQstatus(t->db) != CONNECTION_OK) {
            pq.PQfinish(t->db);
            t->db = NULL;
        }
    } else {
        top_free_snapshot(t);
        t->ok = 0;
    }
    if (rc < 0) {
        top_problem(t, "database (retrying): %s", err);
    }
    top_metrics_refresh(t);
}

/* ---- the terminal ---- */

/* The terminal's state is the process's (atexit restores it), not the view's. */
static struct {
    int active; /* the view owns the screen */
    int raw;    /* stdin is in non-canonical mode */
    struct termios saved;
} top_term;

static void top_write(const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, s, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

static void top_term_restore(void)
{
    if (top_term.raw) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &top_term.saved);
        top_term.raw = 0;
    }
    if (top_term.active) {
        static const char leave[] = "\x1b[?25h\x1b[?1049l";
        top_write(leave, sizeof leave - 1);
        top_term.active = 0;
    }
}

static void top_term_enter(void)
{
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &top_term.saved) == 0) {
        struct termios raw = top_term.saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) == 0) {
            top_term.raw = 1;
        }
    }
    static const char enter[] = "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J";
    top_write(enter, sizeof enter - 1);
    top_term.active = 1;
}

static void top_term_size(int *width, int *height)
{
    struct winsize ws;
    *width = 80;
    *height = 24;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
        *width = ws.ws_col;
        *height = ws.ws_row > 0 ? ws.ws_row : 24;
    }
}

/* Draw the snapshot over the last one: home, each line cleared to its end,
 * the rest of the screen cleared. */
static void top_draw(struct top *t)
{
    int width, height;
    top_term_size(&width, &height);
    buf_t text = BUF_INIT, screen = BUF_INIT;
    top_view_text(t, &text, width, height, 1);
    buf_append_str(&screen, "\x1b[H");
    const char *p = buf_cstr(&text);
    for (const char *nl; (nl = strchr(p, '\n')); p = nl + 1) {
        buf_append(&screen, p, (size_t)(nl - p));
        buf_append_str(&screen, nl[1] ? "\x1b[K\r\n" : "\x1b[K");
    }
    buf_append_str(&screen, "\x1b[J");
    top_write(buf_data(&screen), buf_len(&screen));
    buf_free(&text);
    buf_free(&screen);
}

/* The loop's state: when to refresh next, and how it ends. */
struct top_loop {
    double next;  /* clock_s() of the next refresh; 0: now */
    int status;   /* >= 0: the exit status, the loop ends */
    int quit_sig; /* a signal to raise again once the terminal is restored */
};

/* top_on_signal - what a signal read from the signalfd does to the view */
static void top_on_signal(struct top *t, struct top_loop *lp, int sig)
{
    if (sig == SIGINT) {
        lp->status = 0;
    } else if (sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT) {
        lp->status = 128 + sig;
        lp->quit_sig = sig;
    } else if (sig == SIGTSTP) {
        /* Stop with the terminal as it was; `fg` comes back here. */
        top_term_restore();
        raise(SIGSTOP);
        top_term_enter();
        top_draw(t);
    } else if (sig == SIGCONT) {
        top_term_restore(); /* the shell may have reset the terminal */
        top_term_enter();
        top_draw(t);
    } else {
        top_draw(t); /* SIGWINCH: the same snapshot at the new size */
    }
}

/* top_on_keys - the keys typed since the last look */
static void top_on_keys(struct top *t, struct top_loop *lp)
{
    char keys[64];
    ssize_t k = read(STDIN_FILENO, keys, sizeof keys);
    for (ssize_t i = 0; i < k; i++) {
        if (keys[i] == 'q' || keys[i] == 'Q') {
            lp->status = 0;
        } else if (keys[i] == ' ') {
            lp->next = 0;
        } else if (keys[i] == 's') {
            t->o.sort = (enum top_sort)((t->o.sort + 1) % 3);
            top_draw(t);
        }
    }
}

/* top_tick - refresh and draw when it is time. The database's time stays
 * under a tenth of the view's: a refresh that took 300 ms comes back after
 * 3 s at the earliest. */
static void top_tick(struct top *t, struct top_loop *lp)
{
    if (clock_s() < lp->next) {
        return;
    }
    top_refresh(t);
    t->paced_ms = t->query_ms * TOP_PACE > t->o.interval_ms ? t->query_ms * TOP_PACE : 0;
    lp->next = clock_s() + (t->paced_ms > 0 ? t->paced_ms : t->o.interval_ms) / 1000.0;
    top_draw(t);
}

/* top_interactive - the view on a terminal until q or a signal; the exit
 * status */
static int top_interactive(struct top *t)
{
    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGWINCH, SIGCONT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        sigaddset(&set, sigs[i]);
    }
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0) {
        fprintf(stderr, "ringmail top: signalfd: %s\n", strerror(errno));
        return 1;
    }
    atexit(top_term_restore);
    top_term_enter();
    struct top_loop lp = {0, -1, 0};
    while (lp.status < 0) {
        top_tick(t, &lp);
        struct pollfd p[2] = {{sfd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        int np = top_term.raw ? 2 : 1;
        int wait = (int)((lp.next - clock_s()) * 1000.0) + 1;
        int n = poll(p, (nfds_t)np, wait > 0 ? wait : 0);
        if (n < 0 && errno != EINTR) {
            lp.status = 1;
        } else if (n > 0 && (p[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                top_on_signal(t, &lp, (int)si.ssi_signo);
            }
        }
        if (np == 2 && n > 0 && (p[1].revents & (POLLHUP | POLLERR | POLLNVAL))) {
            lp.status = 0; /* the terminal is gone */
        } else if (np == 2 && n > 0 && (p[1].revents & POLLIN)) {
            top_on_keys(t, &lp);
        }
    }
    top_term_restore();
    close(sfd);
    if (lp.quit_sig) {
        signal(lp.quit_sig, SIG_DFL);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, lp.quit_sig);
        sigprocmask(SIG_UNBLOCK, &one, NULL);
        raise(lp.quit_sig);
    }
    return lp.status;
}

/* One snapshot on stdout: text fitted to a terminal (or $COLUMNS), or JSON. */
static int top_snapshot(struct top *t)
{
    top_refresh(t);
    if (t->o.json) {
        json_t *doc = top_view_json(t);
        json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
        putchar('\n');
        json_decref(doc);
    } else {
        int width = 0, height = 0;
        if (isatty(STDOUT_FILENO)) {
            top_term_size(&width, &height);
            height = 0;
        } else if (getenv("COLUMNS")) {
            width = atoi(getenv("COLUMNS"));
        }
        buf_t text = BUF_INIT;
        top_view_text(t, &text, width, 0, 0);
        fwrite(buf_data(&text), 1, buf_len(&text), stdout);
        buf_free(&text);
    }
    fflush(stdout);
    return t->ok ? 0 : 1;
}

int top_main(int argc, char **argv)
{
    struct top t;
    memset(&t, 0, sizeof t);
    int rc = top_parse(argc, argv, &t.o);
    if (rc >= 0) {
        free(t.o.metrics);
        return rc;
    }
    char err[1024];
    if (t.o.config_path) {
        t.config = config_load(t.o.config_path, err, sizeof err);
        if (!t.config) {
            fprintf(stderr, "ringmail top: --config %s: %s\n", t.o.config_path, err);
            free(t.o.metrics);
            return 2;
        }
    }
    rc = 1;
    if (top_connect(&t, err, sizeof err) < 0) {
        fprintf(stderr, "ringmail top: %s\n", err);
        goto out;
    }
    if (t.o.campaign) {
        int have = top_db_campaign_exists(&t, t.o.campaign, err, sizeof err);
        if (have <= 0) {
            if (have == 0) {
                fprintf(stderr,
                        "ringmail top: campaign %s does not exist (ringmail campaign list)\n",
                        t.o.campaign);
            } else {
                fprintf(stderr, "ringmail top: %s\n", err);
            }
            goto out;
        }
    }
    if (t.o.once || t.o.json || !isatty(STDOUT_FILENO)) {
        rc = top_snapshot(&t);
    } else {
        rc = top_interactive(&t);
    }
out:
    if (t.db) {
        pq.PQfinish(t.db);
    }
    top_free_snapshot(&t);
    for (size_t i = 0; i < t.nisps; i++) {
        free(t.isps[i].name);
    }
    free(t.isps);
    free(t.kept_for);
    config_free(t.config);
    free(t.o.metrics);
    return rc;
}
