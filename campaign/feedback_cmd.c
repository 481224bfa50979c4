/*
 * feedback_cmd - `ringmail feedback`: record messages sent to the return
 * path without `ringmail inbound`, and show what a message says
 *
 *     ringmail feedback ingest --db URL --config F [--rcpt ADDR]
 *                              [--sender ADDR] [--client IP]
 *                              [--max-size BYTES] [FILE...]
 *     ringmail feedback parse [--rcpt ADDR] FILE
 *
 * ingest records each FILE (or the one message on stdin) through the
 * feedback store (feedback_store.h): all of them in one transaction. It
 * is what an MTA that already receives the return-path domain runs for
 * it: Postfix's pipe(8) transport, for example,
 *
 *     ringmail unix - n n - 4 pipe flags=Rq user=ringmail argv=/usr/local/bin/ringmail
 *       feedback ingest --db ... --config ... --rcpt ${original_recipient}
 *       --sender ${sender} --client ${client_address}
 *
 * Exit codes follow sysexits(3), as pipe(8) reads them: 0 recorded; 75
 * (EX_TEMPFAIL) the database is away, nothing was recorded and the MTA
 * keeps the message and retries; 65 (EX_DATAERR) a message over
 * --max-size (default 10 MB; the MTA returns it to its sender, which for
 * a bounce is no one); 66 (EX_NOINPUT) a FILE cannot be read; 78
 * (EX_CONFIG) a config without [feedback]; 2 bad options.
 *
 * parse prints the events feedback_parse finds in FILE, one per line
 * ("bounce dsn 5.1.1 user@x.test token=b-... diagnostic=..."), without a
 * database or a secret: a tool for writing [bounce] rules and for reading
 * a report that was recorded unmatched.
 *
 * Diagnostics: "ringmail feedback ingest: database: ...: nothing recorded
 * (exit 75: the sender keeps the message and retries)", "ringmail
 * feedback ingest: FILE: ...", "ringmail feedback ingest: FILE is over
 * --max-size (N bytes)", the config's own errors, and on stderr a loud
 * line for each hold the complaint guard placed.
 */
#include "campaign/feedback_cmd.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign/feedback_parse.h"
#include "campaign/feedback_store.h"
#include "engine/opt.h"
#include "engine/buf.h"
#include "engine/num.h"
#include "pool/config.h"

#define FEEDBACK_CMD_MAX_SIZE (10ul * 1024 * 1024)
#define EX_DATAERR 65
#define EX_NOINPUT 66
#define EX_TEMPFAIL 75
#define EX_CONFIG 78

static void feedback_usage(FILE *f)
{
    fprintf(f, "usage: ringmail feedback ingest --db URL --config F [--rcpt ADDR] [--sender ADDR]\n"
               "                                [--client IP] [--max-size BYTES] [FILE...]\n"
               "       ringmail feedback parse [--rcpt ADDR] FILE\n"
               "\n"
               "  ingest records the messages (FILEs, or one message on stdin) sent to the\n"
               "  [feedback] return path: bounces, complaints, unsubscribes, auto-replies, in\n"
               "  one transaction. --rcpt is the envelope recipient (b-TOKEN@return_path).\n"
               "  Exit 0 recorded, 75 database away (retry later), 65 over --max-size\n"
               "  (default 10485760), 66 unreadable FILE, 78 no [feedback] in the config.\n"
               "  parse prints what a message says, without a database.\n");
}

/* feedback_read - all of f into b, at most max bytes: 0, 1 when larger, -1 on error */
static int feedback_read(FILE *f, buf_t *b, size_t max)
{
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (buf_len(b) + n > max) {
            return 1;
        }
        buf_append(b, chunk, n);
    }
    return ferror(f) ? -1 : 0;
}

struct feedback_opts {
    const char *db, *config, *rcpt, *sender, *client;
    size_t max_size;
};

static int feedback_parse_opts(int argc, char **argv, struct feedback_opts *o, const char *cmd)
{
    static const struct option longopts[] = {
        {"db", required_argument, 0, 'd'},     {"config", required_argument, 0, 'c'},
        {"rcpt", required_argument, 0, 'r'},   {"sender", required_argument, 0, 's'},
        {"client", required_argument, 0, 'a'}, {"max-size", required_argument, 0, 'm'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    o->max_size = FEEDBACK_CMD_MAX_SIZE;
    optind = 1;
    int ch;
    unsigned long v;
    while ((ch = opt_getopt(argc, argv, longopts)) != -1) {
        switch (ch) {
        case 'd':
            o->db = optarg;
            break;
        case 'c':
            o->config = optarg;
            break;
        case 'r':
            o->rcpt = optarg;
            break;
        case 's':
            o->sender = optarg;
            break;
        case 'a':
            o->client = optarg;
            break;
        case 'm':
            if (num_parse_ulong(optarg, 1, 1ul << 30, &v) != 0) {
                fprintf(stderr, "ringmail feedback %s: --max-size: '%s' is not a number 1..%lu\n",
                        cmd, optarg, 1ul << 30);
                return 2;
            }
            o->max_size = v;
            break;
        case 'h':
            feedback_usage(stdout);
            return 0;
        default:
            feedback_usage(stderr);
            return 2;
        }
    }
    return -1;
}

/* feedback_load - every input (FILEs, or stdin) into bufs; an exit code, or -1 */
static int feedback_load(int argc, char **argv, const struct feedback_opts *o, buf_t *bufs,
                         size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *path = argc > optind ? argv[optind + (int)i] : NULL;
        FILE *f = path ? fopen(path, "rb") : stdin;
        if (!f) {
            fprintf(stderr, "ringmail feedback ingest: %s: %s\n", path, strerror(errno));
            return EX_NOINPUT;
        }
        int rc = feedback_read(f, &bufs[i], o->max_size);
        if (path) {
            fclose(f);
        }
        if (rc < 0) {
            fprintf(stderr, "ringmail feedback ingest: %s: read error\n", path ? path : "stdin");
            return EX_NOINPUT;
        }
        if (rc > 0) {
            fprintf(stderr,
                    "ringmail feedback ingest: %s is over --max-size (%zu bytes): not recorded\n",
                    path ? path : "the message on stdin", o->max_size);
            return EX_DATAERR;
        }
    }
    return -1;
}

static int feedback_ingest(int argc, char **argv)
{
    struct feedback_opts o = {0};
    int rc = feedback_parse_opts(argc, argv, &o, "ingest");
    if (rc >= 0) {
        return rc;
    }
    if (!o.db || !o.config) {
        fprintf(stderr, "ringmail feedback ingest: --db URL and --config F are required\n");
        return 2;
    }
    char err[1024];
    struct config *cfg = config_load(o.config, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "ringmail feedback ingest: %s\n", err);
        return EX_CONFIG;
    }
    if (!cfg->feedback.enabled) {
        fprintf(stderr,
                "ringmail feedback ingest: %s has no [feedback] section: its return_path and "
                "secret_file are needed to read the tokens\n",
                o.config);
        config_free(cfg);
        return EX_CONFIG;
    }
    size_t n = argc > optind ? (size_t)(argc - optind) : 1;
    buf_t *bufs = calloc(n, sizeof *bufs);
    struct feedback_msg *msgs = calloc(n, sizeof *msgs);
    if (!bufs || !msgs) {
        fprintf(stderr, "ringmail feedback ingest: out of memory\n");
        free(bufs);
        free(msgs);
        config_free(cfg);
        return EX_TEMPFAIL;
    }
    const char *rcpts[1] = {o.rcpt};
    rc = feedback_load(argc, argv, &o, bufs, n);
    struct feedback_store *s = NULL;
    if (rc < 0) {
        s = feedback_store_open(o.db, &cfg->feedback, &cfg->bounce.rules, err, sizeof err);
        if (!s) {
            fprintf(stderr,
                    "ringmail feedback ingest: database: %s: nothing recorded (exit 75: the "
                    "sender keeps the message and retries)\n",
                    err);
            rc = EX_TEMPFAIL;
        }
    }
    if (rc < 0) {
        for (size_t i = 0; i < n; i++) {
            msgs[i] =
                (struct feedback_msg){buf_data(&bufs[i]), buf_len(&bufs[i]),     o.client,
                                      o.sender,           o.rcpt ? rcpts : NULL, o.rcpt ? 1 : 0};
        }
        struct feedback_store_outcome out;
        if (feedback_store_messages(s, msgs, n, &out, err, sizeof err) < 0) {
            fprintf(stderr,
                    "ringmail feedback ingest: database: %s: nothing recorded (exit 75: the "
                    "sender keeps the message and retries)\n",
                    err);
            rc = EX_TEMPFAIL;
        } else {
            printf("recorded %zu message%s: %zu event%s: %zu bounce%s, %zu soft bounce%s, "
                   "%zu delay%s, %zu complaint%s, %zu unsubscribe%s, %zu auto-repl%s, %zu "
                   "unmatched; %zu address%s suppressed\n",
                   n, n == 1 ? "" : "s", out.events, out.events == 1 ? "" : "s", out.bounces,
                   out.bounces == 1 ? "" : "s", out.soft_bounces, out.soft_bounces == 1 ? "" : "s",
                   out.delays, out.delays == 1 ? "" : "s", out.complaints,
                   out.complaints == 1 ? "" : "s", out.unsubscribes,
                   out.unsubscribes == 1 ? "" : "s", out.auto_replies,
                   out.auto_replies == 1 ? "y" : "ies", out.unmatched, out.suppressed,
                   out.suppressed == 1 ? "" : "es");
            if (out.duplicates) {
                printf("skipped %zu message%s recorded before (the same bytes to the same "
                       "recipient: a retry)\n",
                       out.duplicates, out.duplicates == 1 ? "" : "s");
            }
            if (out.held) {
                fprintf(stderr, "ringmail: complaint guard: %s\n", out.held_why);
            }
            rc = 0;
        }
    }
    feedback_store_close(s);
    for (size_t i = 0; i < n; i++) {
        buf_free(&bufs[i]);
    }
    free(bufs);
    free(msgs);
    config_free(cfg);
    feedback_parse_shutdown();
    return rc;
}

static void feedback_print(const char *name, const char *v)
{
    if (v) {
        printf(" %s=", name);
        for (const char *p = v; *p; p++) {
            putchar(*p == ' ' ? '_' : *p);
        }
    }
}

static int feedback_parse_cmd(int argc, char **argv)
{
    struct feedback_opts o = {0};
    int rc = feedback_parse_opts(argc, argv, &o, "parse");
    if (rc >= 0) {
        return rc;
    }
    if (argc - optind != 1) {
        fprintf(stderr, "ringmail feedback parse: one FILE, please\n");
        return 2;
    }
    buf_t b = {0};
    rc = feedback_load(argc, argv, &o, &b, 1);
    if (rc >= 0) {
        buf_free(&b);
        return rc;
    }
    struct feedback_report r;
    feedback_parse(buf_data(&b), buf_len(&b), o.rcpt, &r);
    for (size_t i = 0; i < r.n_events; i++) {
        const struct feedback_event *e = &r.events[i];
        const char *src = feedback_source_name(e->source);
        printf("%s %s", feedback_kind_name(e->kind), src[0] ? src : "-");
        feedback_print("status", e->status);
        feedback_print("recipient", e->recipient);
        feedback_print("token", e->token);
        feedback_print("diagnostic", e->diagnostic);
        feedback_print("reporting_mta", e->reporting_mta);
        feedback_print("feedback_type", e->feedback_type);
        feedback_print("message_id", e->message_id);
        feedback_print("reason", e->reason);
        putchar('\n');
    }
    for (size_t i = 0; i < r.n_tokens; i++) {
        printf("token %s\n", r.tokens[i].token);
    }
    feedback_report_free(&r);
    buf_free(&b);
    feedback_parse_shutdown();
    return 0;
}

int feedback_main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "ingest") == 0) {
        return feedback_ingest(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "parse") == 0) {
        return feedback_parse_cmd(argc - 1, argv + 1);
    }
    int help = argc >= 2 && strcmp(argv[1], "--help") == 0;
    if (!help) {
        opt_no_subcommand("feedback", argc >= 2 ? argv[1] : NULL, "ingest, parse");
    }
    feedback_usage(help ? stdout : stderr);
    return help ? 0 : 2;
}
