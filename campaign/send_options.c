/*
 * send_options - `ringmail send`'s command line. See send_int.h.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign/send_int.h"
#include "engine/opt.h"
#include "engine/num.h"

void send_options_init(struct send_options *o)
{
    memset(o, 0, sizeof *o);
    o->from = "send@ringmail.test";
    o->helo = "ringmail.test";
    o->size = 2048;
    o->window = 10000;
    o->render_threads = -1;
}

static void send_usage(FILE *f)
{
    fprintf(f,
            "usage: ringmail send --recipients FILE [options]\n"
            "       ringmail send --db URL --campaign ID [--node NAME] [options]\n"
            "\n"
            "  --recipients FILE      one address per line ('-' = stdin; '#' comments)\n"
            "  --config FILE          ISPs, limits, reply rules, routes, sources (SIGHUP reloads)\n"
            "  --resolver ADDR:PORT   DNS server for MX lookups (default /etc/resolv.conf)\n"
            "  --mx-port N            port of the mail exchangers (default 25)\n"
            "  --mta-sts-port N       HTTPS port of the MTA-STS policy hosts (default 443; tests)\n"
            "  --relay HOST:PORT      send everything to this smarthost\n"
            "  --relay-implicit-tls   the smarthost speaks TLS from the first byte (465)\n"
            "  --relay-user USER      AUTH user; the password comes from\n"
            "  --relay-password-file F  or the environment variable RINGMAIL_RELAY_PASSWORD\n"
            "  --tls POLICY           every destination: required | verify | opportunistic | none\n"
            "  --ca FILE              CA bundle for verify (default the system bundle)\n"
            "  --source ADDR          bind outgoing connections to ADDR (repeatable)\n"
            "  --from ADDR            envelope sender (default send@ringmail.test)\n"
            "  --helo NAME            EHLO name (default ringmail.test)\n"
            "  --size BYTES           generated message size (default 2048)\n"
            "  --message FILE         send this RFC 5322 message (headers, blank line, body)\n"
            "                         to every recipient instead of a generated one; recipients\n"
            "                         of one destination share transactions (max_rcpts_per_msg)\n"
            "  --window N             messages in the pool at once (default 10000)\n"
            "  --max-connections N    connections across all ISPs (default 1000)\n"
            "  --timeout-ms MS        every protocol timeout (default 30000, DATA end 60000)\n"
            "  --records FILE         one JSON line per attempt (outcome, reply, MX, TLS, and a\n"
            "                         failure's bounce category)\n"
            "  --suppress FILE        skip the addresses in FILE; append the ones a bounce\n"
            "                         condemns (a hard bad mailbox or domain; a soft bounce\n"
            "                         when [feedback] soft_bounce_limit is 1)\n"
            "  --metrics ADDR:PORT    Prometheus text endpoint (GET /metrics)\n"
            "  --json                 one JSON summary on stdout instead of the table\n"
            "  --verbose              every connection's state transitions on stderr\n"
            "\n"
            "campaign mode (recipients, templates and results in PostgreSQL):\n"
            "  --db URL               libpq connection string\n"
            "  --campaign ID          the campaign to run to its end (rerun: it resumes)\n"
            "  --node NAME            this process's name for leases (default: host name)\n"
            "  --journal FILE         crash journal (default ./ringmail-NODE.journal)\n"
            "  --resend-ambiguous     queue again recipients whose DATA was in flight at a crash\n"
            "  --batch N              recipients per claim (default 1000)\n"
            "  --render-threads N     threads rendering and DKIM-signing (default one per core;\n"
            "                         0: on the delivery thread)\n"
            "  --lease SECONDS        the node's lease: renewed every half, taken over by\n"
            "                         another node when it runs out (default 10)\n"
            "  A scheduled campaign is waited for (until its start time); a paused one waits\n"
            "  for `ringmail campaign resume`. Exit 0 when the campaign is done (a done one:\n"
            "  \"is complete\", nothing sent) or cancelled while running; 2 for a cancelled\n"
            "  campaign (never sent again) or bad options; 1 when work is left.\n");
}

enum {
    SEND_OPT_RCPTS = 256,
    SEND_OPT_CONFIG,
    SEND_OPT_RESOLVER,
    SEND_OPT_MXPORT,
    SEND_OPT_STSPORT,
    SEND_OPT_RELAY,
    SEND_OPT_RELAY465,
    SEND_OPT_RELAY_USER,
    SEND_OPT_RELAY_PWFILE,
    SEND_OPT_TLS,
    SEND_OPT_CA,
    SEND_OPT_SOURCE,
    SEND_OPT_FROM,
    SEND_OPT_HELO,
    SEND_OPT_SIZE,
    SEND_OPT_MESSAGE,
    SEND_OPT_WINDOW,
    SEND_OPT_RENDER_THREADS,
    SEND_OPT_MAXCONN,
    SEND_OPT_TIMEOUT,
    SEND_OPT_RECORDS,
    SEND_OPT_SUPPRESS,
    SEND_OPT_METRICS,
    SEND_OPT_JSON,
    SEND_OPT_VERBOSE,
    SEND_OPT_DB,
    SEND_OPT_CAMPAIGN,
    SEND_OPT_NODE,
    SEND_OPT_JOURNAL,
    SEND_OPT_RESEND,
    SEND_OPT_BATCH,
    SEND_OPT_LEASE,
    SEND_OPT_HELP,
};

/* send_number - --NAME's value V in [MIN, MAX] into *OUT, or say it is bad */
static int send_number(const char *name, const char *v, unsigned long min, unsigned long max,
                       unsigned *out)
{
    unsigned long n;
    if (num_parse_ulong(v, min, max, &n) < 0) {
        fprintf(stderr, "ringmail send: bad value for --%s: '%s' (want %lu..%lu)\n", name, v, min,
                max);
        return -1;
    }
    *out = (unsigned)n;
    return 0;
}

int send_parse(int argc, char **argv, struct send_options *o)
{
    return send_parse_with(argc, argv, o, NULL, NULL, NULL);
}

int send_parse_with(int argc, char **argv, struct send_options *o, const struct option *extra,
                    int (*on_extra)(void *user, int ch, const char *arg), void *user)
{
    static const struct option longopts[] = {
        {"recipients", required_argument, 0, SEND_OPT_RCPTS},
        {"config", required_argument, 0, SEND_OPT_CONFIG},
        {"resolver", required_argument, 0, SEND_OPT_RESOLVER},
        {"mx-port", required_argument, 0, SEND_OPT_MXPORT},
        {"mta-sts-port", required_argument, 0, SEND_OPT_STSPORT},
        {"relay", required_argument, 0, SEND_OPT_RELAY},
        {"relay-implicit-tls", no_argument, 0, SEND_OPT_RELAY465},
        {"relay-user", required_argument, 0, SEND_OPT_RELAY_USER},
        {"relay-password-file", required_argument, 0, SEND_OPT_RELAY_PWFILE},
        {"tls", required_argument, 0, SEND_OPT_TLS},
        {"ca", required_argument, 0, SEND_OPT_CA},
        {"source", required_argument, 0, SEND_OPT_SOURCE},
        {"from", required_argument, 0, SEND_OPT_FROM},
        {"helo", required_argument, 0, SEND_OPT_HELO},
        {"size", required_argument, 0, SEND_OPT_SIZE},
        {"message", required_argument, 0, SEND_OPT_MESSAGE},
        {"window", required_argument, 0, SEND_OPT_WINDOW},
        {"render-threads", required_argument, 0, SEND_OPT_RENDER_THREADS},
        {"max-connections", required_argument, 0, SEND_OPT_MAXCONN},
        {"timeout-ms", required_argument, 0, SEND_OPT_TIMEOUT},
        {"records", required_argument, 0, SEND_OPT_RECORDS},
        {"suppress", required_argument, 0, SEND_OPT_SUPPRESS},
        {"metrics", required_argument, 0, SEND_OPT_METRICS},
        {"json", no_argument, 0, SEND_OPT_JSON},
        {"verbose", no_argument, 0, SEND_OPT_VERBOSE},
        {"db", required_argument, 0, SEND_OPT_DB},
        {"campaign", required_argument, 0, SEND_OPT_CAMPAIGN},
        {"node", required_argument, 0, SEND_OPT_NODE},
        {"journal", required_argument, 0, SEND_OPT_JOURNAL},
        {"resend-ambiguous", no_argument, 0, SEND_OPT_RESEND},
        {"batch", required_argument, 0, SEND_OPT_BATCH},
        {"lease", required_argument, 0, SEND_OPT_LEASE},
        {"help", no_argument, 0, SEND_OPT_HELP},
        {0, 0, 0, 0},
    };
    /* The other command's options first: getopt takes the first name that matches. */
    struct option table[128];
    const struct option *opts = longopts;
    if (extra) {
        size_t ne = 0, ns = sizeof longopts / sizeof longopts[0]; /* its end mark included */
        while (extra[ne].name) {
            ne++;
        }
        if (ne + ns > sizeof table / sizeof table[0]) {
            abort();
        }
        memcpy(table, extra, ne * sizeof *table);
        memcpy(table + ne, longopts, ns * sizeof *table);
        opts = table;
    }
    int ch;
    optind = 1;
    while ((ch = opt_getopt(argc, argv, opts)) != -1) {
        if (extra && ch >= SEND_OPT_EXTRA) {
            if (on_extra(user, ch, optarg) < 0) {
                return -1;
            }
            continue;
        }
        switch (ch) {
        case SEND_OPT_RCPTS:
            o->recipients = optarg;
            break;
        case SEND_OPT_CONFIG:
            o->config_path = optarg;
            break;
        case SEND_OPT_RESOLVER:
            o->resolver = optarg;
            break;
        case SEND_OPT_MXPORT:
            if (send_number("mx-port", optarg, 1, 65535, &o->mx_port) < 0)
                return -1;
            break;
        case SEND_OPT_STSPORT:
            if (send_number("mta-sts-port", optarg, 1, 65535, &o->mta_sts_port) < 0)
                return -1;
            break;
        case SEND_OPT_RELAY:
            o->relay = optarg;
            break;
        case SEND_OPT_RELAY465:
            o->relay_implicit_tls = 1;
            break;
        case SEND_OPT_RELAY_USER:
            o->relay_user = optarg;
            break;
        case SEND_OPT_RELAY_PWFILE:
            o->relay_password_file = optarg;
            break;
        case SEND_OPT_TLS:
            if (smtp_tls_policy_parse(optarg, &o->tls) < 0) {
                fprintf(stderr,
                        "ringmail send: --tls must be required, verify, opportunistic or none\n");
                return -1;
            }
            o->tls_override = 1;
            break;
        case SEND_OPT_CA:
            o->ca_file = optarg;
            break;
        case SEND_OPT_SOURCE:
            if (o->nsources == SEND_MAX_SOURCES) {
                fprintf(stderr, "ringmail send: too many --source addresses\n");
                return -1;
            }
            o->sources[o->nsources++] = optarg;
            break;
        case SEND_OPT_FROM:
            o->from = optarg;
            break;
        case SEND_OPT_HELO:
            o->helo = optarg;
            break;
        case SEND_OPT_SIZE:
            o->size_set = 1;
            if (send_number("size", optarg, 0, 64u << 20, &o->size) < 0)
                return -1;
            break;
        case SEND_OPT_MESSAGE:
            o->message_path = optarg;
            break;
        case SEND_OPT_WINDOW:
            if (send_number("window", optarg, 1, 10000000, &o->window) < 0)
                return -1;
            break;
        case SEND_OPT_RENDER_THREADS: {
            unsigned n;
            if (send_number("render-threads", optarg, 0, 64, &n) < 0)
                return -1;
            o->render_threads = (int)n;
            break;
        }
        case SEND_OPT_MAXCONN:
            if (send_number("max-connections", optarg, 1, 1000000, &o->max_connections) < 0)
                return -1;
            break;
        case SEND_OPT_TIMEOUT:
            if (send_number("timeout-ms", optarg, 1, 3600000, &o->timeout_ms) < 0)
                return -1;
            break;
        case SEND_OPT_RECORDS:
            o->records_path = optarg;
            break;
        case SEND_OPT_SUPPRESS:
            o->suppress_path = optarg;
            break;
        case SEND_OPT_METRICS:
            o->metrics_addr = optarg;
            break;
        case SEND_OPT_DB:
            o->db_url = optarg;
            break;
        case SEND_OPT_CAMPAIGN: {
            unsigned long id;
            if (num_parse_ulong(optarg, 1, LLONG_MAX, &id) < 0) {
                fprintf(stderr, "ringmail send: bad value for --campaign: '%s'\n", optarg);
                return -1;
            }
            o->campaign = (long long)id;
            break;
        }
        case SEND_OPT_NODE:
            o->node = optarg;
            break;
        case SEND_OPT_JOURNAL:
            o->journal = optarg;
            break;
        case SEND_OPT_RESEND:
            o->resend_ambiguous = 1;
            break;
        case SEND_OPT_BATCH:
            if (send_number("batch", optarg, 1, 100000, &o->batch) < 0)
                return -1;
            break;
        case SEND_OPT_LEASE:
            if (send_number("lease", optarg, 2, 86400, &o->lease_s) < 0)
                return -1;
            break;
        case SEND_OPT_JSON:
            o->json = 1;
            break;
        case SEND_OPT_VERBOSE:
            o->verbose = 1;
            break;
        case SEND_OPT_HELP:
            send_usage(stdout);
            exit(0);
        default:
            if (!extra) {
                send_usage(stderr); /* the other command says its own */
            }
            return -1;
        }
    }
    if (extra) {
        return 0; /* the other command checks its line */
    }
    if (optind < argc) {
        fprintf(stderr, "ringmail send: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (o->db_url || o->campaign) {
        if (!o->db_url || !o->campaign || o->recipients || o->message_path) {
            fprintf(stderr, "ringmail send: campaign mode wants --db URL and --campaign ID "
                            "(and no --recipients or --message: the campaign renders them)\n");
            return -1;
        }
        return 0;
    }
    if (!o->recipients) {
        fprintf(stderr,
                "ringmail send: --recipients FILE (or --db URL --campaign ID) is required\n");
        send_usage(stderr);
        return -1;
    }
    if (o->message_path && o->size_set) {
        fprintf(stderr, "ringmail send: --size is for the generated message, not --message\n");
        return -1;
    }
    if ((o->relay_user || o->relay_password_file || o->relay_implicit_tls) && !o->relay) {
        fprintf(stderr, "ringmail send: --relay-* options need --relay HOST:PORT\n");
        return -1;
    }
    return 0;
}
