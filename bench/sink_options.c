/*
 * sink_options - the sink's command line: --help, every option into struct
 * sink_config, --profile/--profile-file first. See sink_int.h.
 *
 * Two passes of getopt_long: the first only finds the profile, whose
 * values become the defaults; the second reads every other option over
 * them, so an option given always wins over the profile.
 *
 * Diagnostics: "sink: bad value for --OPTION: VALUE", an unknown option,
 * "sink: unexpected argument" or "sink: --listen is required" on stderr,
 * the usage after the first two; sink_parse_args then returns 2.
 */
#include "bench/sink_int.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "engine/opt.h"
#include "engine/num.h"

const char sink_reply_tempfail[] = "451 4.7.1 Temporary failure (sink tempfail)";
const char sink_reply_reject[] = "550 5.1.1 User unknown (sink)";
const char sink_reply_rate[] =
    "421 4.7.28 [{ip}] Our system has detected an unusual rate of unsolicited mail originating "
    "from your IP address (sink --source-rate)";
static const char sink_reply_defer[] = "451 4.3.0 Temporary failure (sink)";

static const char *const sink_fault_names[] = {"none", "garbage", "stall", "starttls-inject",
                                               "greeting-421"};

enum sink_option {
    SINK_OPT_LISTEN = 256,
    SINK_OPT_CERT,
    SINK_OPT_KEY,
    SINK_OPT_IMPLICIT_TLS,
    SINK_OPT_NO_STARTTLS,
    SINK_OPT_TLS_MIN,
    SINK_OPT_TLS_MAX,
    SINK_OPT_NO_TICKETS,
    SINK_OPT_LATENCY,
    SINK_OPT_LATENCY_JITTER,
    SINK_OPT_SOURCE_RATE,
    SINK_OPT_DEFER,
    SINK_OPT_REJECT,
    SINK_OPT_DROP,
    SINK_OPT_MAX_CONNS,
    SINK_OPT_THREADS,
    SINK_OPT_STATS,
    SINK_OPT_STATS_INTERVAL,
    SINK_OPT_AUTH,
    SINK_OPT_AUTH_PLAINTEXT,
    SINK_OPT_HOSTNAME,
    SINK_OPT_FAULT,
    SINK_OPT_SEED,
    SINK_OPT_IDLE_TIMEOUT,
    SINK_OPT_VERBOSE,
    SINK_OPT_DEFER_REPLY,
    SINK_OPT_REJECT_REPLY,
    SINK_OPT_RATE_REPLY,
    SINK_OPT_PROFILE,
    SINK_OPT_PROFILE_FILE,
    SINK_OPT_HELP,
};

static const struct option sink_options[] = {
    {"listen", required_argument, NULL, SINK_OPT_LISTEN},
    {"tls-cert", required_argument, NULL, SINK_OPT_CERT},
    {"tls-key", required_argument, NULL, SINK_OPT_KEY},
    {"implicit-tls", no_argument, NULL, SINK_OPT_IMPLICIT_TLS},
    {"no-starttls", no_argument, NULL, SINK_OPT_NO_STARTTLS},
    {"tls-min", required_argument, NULL, SINK_OPT_TLS_MIN},
    {"tls-max", required_argument, NULL, SINK_OPT_TLS_MAX},
    {"no-tickets", no_argument, NULL, SINK_OPT_NO_TICKETS},
    {"latency-ms", required_argument, NULL, SINK_OPT_LATENCY},
    {"latency-jitter-ms", required_argument, NULL, SINK_OPT_LATENCY_JITTER},
    {"source-rate", required_argument, NULL, SINK_OPT_SOURCE_RATE},
    {"defer-pct", required_argument, NULL, SINK_OPT_DEFER},
    {"reject-pct", required_argument, NULL, SINK_OPT_REJECT},
    {"drop-pct", required_argument, NULL, SINK_OPT_DROP},
    {"max-conns", required_argument, NULL, SINK_OPT_MAX_CONNS},
    {"threads", required_argument, NULL, SINK_OPT_THREADS},
    {"stats", required_argument, NULL, SINK_OPT_STATS},
    {"stats-interval-ms", required_argument, NULL, SINK_OPT_STATS_INTERVAL},
    {"auth", required_argument, NULL, SINK_OPT_AUTH},
    {"auth-plaintext", no_argument, NULL, SINK_OPT_AUTH_PLAINTEXT},
    {"hostname", required_argument, NULL, SINK_OPT_HOSTNAME},
    {"fault", required_argument, NULL, SINK_OPT_FAULT},
    {"seed", required_argument, NULL, SINK_OPT_SEED},
    {"idle-timeout-ms", required_argument, NULL, SINK_OPT_IDLE_TIMEOUT},
    {"verbose", no_argument, NULL, SINK_OPT_VERBOSE},
    {"defer-reply", required_argument, NULL, SINK_OPT_DEFER_REPLY},
    {"reject-reply", required_argument, NULL, SINK_OPT_REJECT_REPLY},
    {"rate-reply", required_argument, NULL, SINK_OPT_RATE_REPLY},
    {"profile", required_argument, NULL, SINK_OPT_PROFILE},
    {"profile-file", required_argument, NULL, SINK_OPT_PROFILE_FILE},
    {"help", no_argument, NULL, SINK_OPT_HELP},
    {NULL, 0, NULL, 0},
};
_Static_assert(sizeof sink_options / sizeof sink_options[0] == SINK_OPT_HELP - SINK_OPT_LISTEN + 2,
               "sink_options must list the options in enum order");

static void sink_usage(FILE *f)
{
    fputs("usage: ringmail sink --listen ADDR:PORT [options]\n"
          "  --listen ADDR:PORT      127.0.0.1:2525, [::1]:2525, *:25 (repeatable; port 0: any)\n"
          "  --tls-cert F --tls-key F  PEM certificate chain and key (enables STARTTLS)\n"
          "  --implicit-tls          TLS from the first byte (port 465 style)\n"
          "  --no-starttls           do not offer STARTTLS\n"
          "  --tls-min V, --tls-max V  1.0, 1.1, 1.2 or 1.3\n"
          "  --no-tickets            issue no session tickets\n"
          "  --latency-ms N          delay every reply by N ms\n"
          "  --latency-jitter-ms N   ... plus a uniform random 0..N ms (a spread of round trips)\n"
          "  --source-rate N         at most N messages/s per client address; over it RCPT\n"
          "                          gets the --rate-reply\n"
          "  --rate-reply \"CODE TEXT\"  4xx; default: the profile's temporary reply, without\n"
          "                          one Gmail's \"421 4.7.28 [{ip}] ... unusual rate ...\"\n"
          "  --defer-pct N           N% of RCPTs get the --defer-reply\n"
          "  --defer-reply \"CODE TEXT\"  4xx, default \"451 4.3.0 Temporary failure (sink)\";\n"
          "                          a 421 also closes the connection\n"
          "  --reject-pct N          N% of RCPTs get the --reject-reply\n"
          "  --reject-reply \"CODE TEXT\" 5xx, default \"550 5.1.1 User unknown (sink)\"\n"
          "  --drop-pct N            N% of transactions are cut inside DATA\n"
          "  --max-conns N           421 to connections beyond N\n"
          "  --threads N             worker threads (default: number of cores)\n"
          "  --stats FILE            JSON statistics, written on SIGTERM/SIGINT\n"
          "  --stats-interval-ms N   ... and every N ms\n"
          "  --auth USER:PASS        require AUTH PLAIN/LOGIN (offered inside TLS)\n"
          "  --auth-plaintext        offer AUTH outside TLS too\n"
          "  --hostname NAME         name in the greeting and EHLO reply\n"
          "  --fault MODE            garbage, stall, starttls-inject, greeting-421\n"
          "  --seed N                PRNG seed for the percentages (default 1)\n"
          "  --idle-timeout-ms N     close idle connections (default 60000)\n"
          "  --verbose               one line per connection error on stderr\n"
          "  --profile NAME          behave like a provider (below); options given override\n"
          "  --profile-file F        a profile from a JSON file, keys: name,\n"
          "                          tls_required, starttls (true/false), temp_reply,\n"
          "                          perm_reply, defer_pct, reject_pct, latency_ms,\n"
          "                          latency_jitter_ms, source_rate, max_conns\n"
          "                          (in a reply, {ip} is the client's address)\n"
          "Local parts tempfail@ always get 451 4.7.1, permfail@ always 550 5.1.1;\n"
          "with a profile, its temporary and permanent replies. Profiles:\n",
          f);
    sink_profile_usage(f);
}

static int sink_parse_listen(const char *text, struct sink_listen *l)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port;
    size_t hlen;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':') {
            return -1;
        }
        hlen = (size_t)(close - text - 1);
        text++;
        port = close + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon) {
            return -1;
        }
        hlen = (size_t)(colon - text);
        port = colon + 1;
    }
    unsigned long p;
    if (hlen >= sizeof host || num_parse_ulong(port, 0, 65535, &p) < 0) {
        return -1;
    }
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    memset(l, 0, sizeof *l);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&l->addr;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&l->addr;
    if (hlen == 0 || strcmp(host, "*") == 0) {
        snprintf(host, sizeof host, "0.0.0.0");
    }
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)p);
        l->len = sizeof *s4;
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)p);
        l->len = sizeof *s6;
    } else {
        return -1;
    }
    return 0;
}

static const struct sink_tls_version {
    const char *name;
    uint16_t version;
} sink_tls_versions[] = {{"1.0", TLS_VERSION_1_0},
                         {"1.1", TLS_VERSION_1_1},
                         {"1.2", TLS_VERSION_1_2},
                         {"1.3", TLS_VERSION_1_3}};

static int sink_parse_version(const char *text, uint16_t *out)
{
    for (size_t i = 0; i < sizeof sink_tls_versions / sizeof sink_tls_versions[0]; i++) {
        if (strcmp(text, sink_tls_versions[i].name) == 0) {
            *out = sink_tls_versions[i].version;
            return 0;
        }
    }
    return -1;
}

static int sink_parse_fault(const char *text, enum sink_fault *out)
{
    for (size_t i = 1; i < sizeof sink_fault_names / sizeof sink_fault_names[0]; i++) {
        if (strcmp(text, sink_fault_names[i]) == 0) {
            *out = (enum sink_fault)i;
            return 0;
        }
    }
    return -1;
}

/* "CODE TEXT" or "CODE": three digits, the first one class, then one
 * printable line short enough for SMTP (the machine adds CRLF). */
int sink_parse_reply(const char *text, char class, char *out, size_t outlen)
{
    size_t n = strlen(text);
    if (n < 3 || n > SINK_REPLY_MAX || n >= outlen || text[0] != class || text[1] < '0' ||
        text[1] > '9' || text[2] < '0' || text[2] > '9' || (text[3] != ' ' && text[3] != '\0')) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) {
            return -1;
        }
    }
    memcpy(out, text, n + 1);
    return 0;
}

static int sink_parse_auth(const char *text, struct sink_config *cfg)
{
    const char *colon = strchr(text, ':');
    if (!colon || colon == text || (size_t)(colon - text) >= sizeof cfg->auth_user ||
        strlen(colon + 1) >= sizeof cfg->auth_pass) {
        return -1;
    }
    memcpy(cfg->auth_user, text, (size_t)(colon - text));
    cfg->auth_user[colon - text] = '\0';
    snprintf(cfg->auth_pass, sizeof cfg->auth_pass, "%s", colon + 1);
    cfg->auth = 1;
    return 0;
}

/* Options that take a number. */
static int sink_parse_number(struct sink_config *cfg, int opt, const char *arg)
{
    unsigned long v;
    unsigned long max = opt == SINK_OPT_DEFER || opt == SINK_OPT_REJECT || opt == SINK_OPT_DROP
                            ? 100
                        : opt == SINK_OPT_THREADS ? SINK_MAX_THREADS
                        : opt == SINK_OPT_SEED    ? ULONG_MAX
                                                  : UINT_MAX;
    if (num_parse_ulong(arg, 0, max, &v) < 0) {
        return -1;
    }
    switch (opt) {
    case SINK_OPT_LATENCY:
        cfg->latency_ms = (unsigned)v;
        break;
    case SINK_OPT_LATENCY_JITTER:
        cfg->latency_jitter_ms = (unsigned)v;
        break;
    case SINK_OPT_SOURCE_RATE:
        cfg->source_rate = (unsigned)v;
        break;
    case SINK_OPT_DEFER:
        cfg->defer_pct = (unsigned)v;
        break;
    case SINK_OPT_REJECT:
        cfg->reject_pct = (unsigned)v;
        break;
    case SINK_OPT_DROP:
        cfg->drop_pct = (unsigned)v;
        break;
    case SINK_OPT_MAX_CONNS:
        cfg->max_conns = (unsigned)v;
        break;
    case SINK_OPT_THREADS:
        cfg->threads = (unsigned)v;
        break;
    case SINK_OPT_STATS_INTERVAL:
        cfg->stats_interval_ms = (unsigned)v;
        break;
    case SINK_OPT_SEED:
        cfg->seed = v;
        break;
    case SINK_OPT_IDLE_TIMEOUT:
        cfg->idle_timeout_ms = (unsigned)v;
        break;
    default:
        return -1;
    }
    return 0;
}

static int sink_parse_option(struct sink_config *cfg, int opt, const char *arg)
{
    switch (opt) {
    case SINK_OPT_LISTEN:
        if (cfg->nlisten == SINK_MAX_LISTEN) {
            return -1;
        }
        return sink_parse_listen(arg, &cfg->listen[cfg->nlisten++]);
    case SINK_OPT_CERT:
        cfg->cert_file = arg;
        return 0;
    case SINK_OPT_KEY:
        cfg->key_file = arg;
        return 0;
    case SINK_OPT_IMPLICIT_TLS:
        cfg->implicit_tls = 1;
        return 0;
    case SINK_OPT_NO_STARTTLS:
        cfg->no_starttls = 1;
        return 0;
    case SINK_OPT_TLS_MIN:
        return sink_parse_version(arg, &cfg->tls_min);
    case SINK_OPT_TLS_MAX:
        return sink_parse_version(arg, &cfg->tls_max);
    case SINK_OPT_NO_TICKETS:
        cfg->no_tickets = 1;
        return 0;
    case SINK_OPT_STATS:
        cfg->stats_file = arg;
        return 0;
    case SINK_OPT_AUTH:
        return sink_parse_auth(arg, cfg);
    case SINK_OPT_AUTH_PLAINTEXT:
        cfg->auth_plaintext = 1;
        return 0;
    case SINK_OPT_HOSTNAME:
        return (size_t)snprintf(cfg->hostname, sizeof cfg->hostname, "%s", arg) <
                       sizeof cfg->hostname
                   ? 0
                   : -1;
    case SINK_OPT_FAULT:
        return sink_parse_fault(arg, &cfg->fault);
    case SINK_OPT_VERBOSE:
        cfg->verbose = 1;
        return 0;
    case SINK_OPT_DEFER_REPLY:
        return sink_parse_reply(arg, '4', cfg->defer_reply, sizeof cfg->defer_reply);
    case SINK_OPT_REJECT_REPLY:
        return sink_parse_reply(arg, '5', cfg->reject_reply, sizeof cfg->reject_reply);
    case SINK_OPT_RATE_REPLY:
        return sink_parse_reply(arg, '4', cfg->rate_reply, sizeof cfg->rate_reply);
    default:
        return sink_parse_number(cfg, opt, arg);
    }
}

/* What a rejected value should have looked like, when that is not obvious. */
static const char *sink_option_hint(int opt)
{
    switch (opt) {
    case SINK_OPT_DEFER_REPLY:
    case SINK_OPT_RATE_REPLY:
        return " (want \"4xx TEXT\": a 3-digit 4xx code, a space, the text; one line of at most "
               "510 characters)";
    case SINK_OPT_REJECT_REPLY:
        return " (want \"5xx TEXT\": a 3-digit 5xx code, a space, the text; one line of at most "
               "510 characters)";
    default:
        return "";
    }
}

/* The first pass over the options: --profile, then --profile-file over it,
 * become the defaults the other options override. Returns 0, or 2. */
static int sink_parse_profile(struct sink_config *cfg, int argc, char **argv)
{
    const char *name = NULL, *file = NULL;
    int opt;
    opterr = 0; /* the second pass reports bad options */
    optind = 0;
    while ((opt = opt_getopt(argc, argv, sink_options)) != -1) {
        if (opt == SINK_OPT_PROFILE) {
            name = optarg;
        } else if (opt == SINK_OPT_PROFILE_FILE) {
            file = optarg;
        }
    }
    opterr = 1;
    if (!name && !file) {
        return 0;
    }
    return sink_profile_select(cfg, name, file);
}

/* Returns 0 to run, -1 after --help, 2 on a usage error. */
int sink_parse_args(struct sink_config *cfg, int argc, char **argv)
{
    cfg->seed = 1;
    cfg->idle_timeout_ms = 60000;
    snprintf(cfg->defer_reply, sizeof cfg->defer_reply, "%s", sink_reply_defer);
    snprintf(cfg->reject_reply, sizeof cfg->reject_reply, "%s", sink_reply_reject);
    snprintf(cfg->temp_reply, sizeof cfg->temp_reply, "%s", sink_reply_tempfail);
    snprintf(cfg->perm_reply, sizeof cfg->perm_reply, "%s", sink_reply_reject);
    int rc = sink_parse_profile(cfg, argc, argv);
    if (rc != 0) {
        return rc;
    }
    optind = 0; /* campaign/main may have run getopt already */
    int opt;
    while ((opt = opt_getopt(argc, argv, sink_options)) != -1) {
        if (opt == SINK_OPT_HELP) {
            sink_usage(stdout);
            return -1;
        }
        if (opt == SINK_OPT_PROFILE || opt == SINK_OPT_PROFILE_FILE) {
            continue; /* the first pass took them */
        }
        if (opt == '?' || sink_parse_option(cfg, opt, optarg) < 0) {
            if (opt != '?') {
                fprintf(stderr, "sink: bad value for --%s: %s%s\n", sink_options[opt - 256].name,
                        optarg ? optarg : "", sink_option_hint(opt));
            }
            sink_usage(stderr);
            return 2;
        }
    }
    if (optind < argc || cfg->nlisten == 0) {
        fprintf(stderr, "sink: %s\n",
                optind < argc ? "unexpected argument" : "--listen is required");
        return 2;
    }
    return 0;
}
