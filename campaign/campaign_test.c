/*
 * campaign_test - `ringmail campaign test` and `ringmail campaign preview`:
 * a campaign's message for seed addresses, exactly as its recipients get
 * it, sent or written to a file.
 *
 *     ringmail campaign test ID --to ADDR [--to ADDR ...] --db URL
 *         [--vars JSON | --as RECIPIENT] [send options: --config --relay
 *         --mx-port --resolver --tls --ca --source --helo --timeout-ms ...]
 *     ringmail campaign preview ID --to ADDR --out FILE.eml --db URL
 *         [--vars JSON | --as RECIPIENT] [--config FILE]
 *
 * DESCRIPTION
 *     The campaign's row is read as `send --db` reads it
 *     (loader_campaign_read) and compiled as it compiles it
 *     (prepare_compile, [feedback] of --config included), and each seed's
 *     message is rendered by the workers' own function (prepare_render):
 *     same headers, List-Unsubscribe, DKIM signature (made by a signer
 *     process, campaign/sign_client.h, as in send: no key is read here). The merge variables
 *     are --vars (a JSON object), or those of the campaign's recipient
 *     --as names, or by default of its first recipient; {{email}} is the
 *     seed's address unless they define it, and [feedback]'s tokens (the
 *     unsubscribe URLs, VERP) name recipient 0, no row: an unsubscribe
 *     clicked or a bounce in a seed mailbox never touches a recipient.
 *
 *     test delivers through the pool `send` uses (send_prepared_run, with
 *     send's options), one attempt per seed (a deferral is reported, not
 *     retried), prints one line per seed, "seed ADDR: accepted: 250 2.0.0
 *     OK", and records each in ringmail.seed_delivery (outcome, reply,
 *     MX, TLS, Message-ID). The campaign's recipients, deliveries and
 *     status are never touched. preview writes the message to --out
 *     (created 0600, campaign/outfile.h) and prints nothing on stdout.
 *
 * DIAGNOSTICS
 *     One line on stderr. A merge field without a default that the
 *     variables lack: "warning: campaign 3: {{first_name}} has no value
 *     for seed@x.test (rendered empty; ...)". Exit 2 for a bad command
 *     line, 1 for a database error, an unknown campaign or recipient, a
 *     message that cannot be rendered, and (test) a seed not accepted; 0
 *     when every seed was accepted, or the file written.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign/campaign_int.h"
#include "campaign/db.h"
#include "campaign/loader.h"
#include "campaign/outfile.h"
#include "campaign/prepare.h"
#include "campaign/send_int.h"
#include "engine/num.h"
#include "engine/opt.h"

#define CAMPAIGN_SEEDS_MAX 100

enum {
    SEED_OPT_TO = SEND_OPT_EXTRA,
    SEED_OPT_DB,
    SEED_OPT_VARS,
    SEED_OPT_AS,
    SEED_OPT_OUT,
    SEED_OPT_CONFIG,
    SEED_OPT_HELP,
};

struct seed_cmd {
    const char *cmd; /* "test" or "preview" */
    const char *who; /* "ringmail campaign test" */
    const char *url, *vars, *as, *out;
    const char *to[CAMPAIGN_SEEDS_MAX];
    size_t nto;
    int64_t id;
    int help;
    struct send_options so; /* test: send's options; preview: config_path only */
};

static void seed_usage(FILE *f)
{
    fprintf(f, "usage: ringmail campaign test ID --to ADDR [--to ADDR ...] --db URL\n"
               "           [--vars JSON | --as RECIPIENT] [--config FILE] [--relay HOST:PORT]\n"
               "           [--mx-port N] [--resolver ADDR:PORT] [--tls POLICY] [--ca FILE] ...\n"
               "       ringmail campaign preview ID --to ADDR --out FILE.eml --db URL\n"
               "           [--vars JSON | --as RECIPIENT] [--config FILE]\n"
               "\n"
               "  test: the campaign's message, as its recipients get it (headers, DKIM,\n"
               "  List-Unsubscribe, VERP with [feedback]), to each seed address through the\n"
               "  pool `send` uses (its options), one attempt each; one line per seed, and a\n"
               "  row in ringmail.seed_delivery. The campaign itself is not touched.\n"
               "  preview: that message for ADDR written to FILE.eml.\n"
               "  Merge variables: --vars '{\"first_name\": \"Ann\"}', or those of the\n"
               "  campaign's recipient --as ADDR, or of its first recipient.\n");
}

static int seed_option(void *user, int ch, const char *arg)
{
    struct seed_cmd *c = user;
    switch (ch) {
    case SEED_OPT_TO:
        if (c->nto == CAMPAIGN_SEEDS_MAX) {
            fprintf(stderr, "%s: at most %d --to addresses\n", c->who, CAMPAIGN_SEEDS_MAX);
            return -1;
        }
        c->to[c->nto++] = arg;
        return 0;
    case SEED_OPT_DB:
        c->url = arg;
        return 0;
    case SEED_OPT_VARS:
        c->vars = arg;
        return 0;
    case SEED_OPT_AS:
        c->as = arg;
        return 0;
    case SEED_OPT_OUT:
        c->out = arg;
        return 0;
    case SEED_OPT_CONFIG:
        c->so.config_path = arg;
        return 0;
    case SEED_OPT_HELP:
        c->help = 1;
        return 0;
    default:
        return -1;
    }
}

/* The send option test has no use for, or NULL. */
static const char *seed_send_option_refused(const struct send_options *o)
{
    struct send_options d;
    send_options_init(&d);
    const struct {
        int given;
        const char *name;
    } refused[] = {
        {o->recipients != NULL, "--recipients"},
        {o->message_path != NULL, "--message"},
        {o->campaign != 0, "--campaign"},
        {o->from != d.from, "--from (the campaign's sender is used)"},
        {o->size_set, "--size"},
        {o->window != d.window, "--window"},
        {o->render_threads != d.render_threads, "--render-threads"},
        {o->suppress_path != NULL, "--suppress"},
        {o->metrics_addr != NULL, "--metrics"},
        {o->json, "--json"},
        {o->node != NULL, "--node"},
        {o->journal != NULL, "--journal"},
        {o->resend_ambiguous, "--resend-ambiguous"},
        {o->batch != 0, "--batch"},
        {o->lease_s != 0, "--lease"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        if (refused[i].given) {
            return refused[i].name;
        }
    }
    return NULL;
}

/* The command line into *c: -1 parsed, else the exit status (said). */
static int seed_parse(int argc, char **argv, struct seed_cmd *c)
{
    static const struct option test_opts[] = {
        {"to", required_argument, 0, SEED_OPT_TO},     {"db", required_argument, 0, SEED_OPT_DB},
        {"vars", required_argument, 0, SEED_OPT_VARS}, {"as", required_argument, 0, SEED_OPT_AS},
        {"help", no_argument, 0, SEED_OPT_HELP},       {0, 0, 0, 0},
    };
    static const struct option preview_opts[] = {
        {"to", required_argument, 0, SEED_OPT_TO},
        {"db", required_argument, 0, SEED_OPT_DB},
        {"vars", required_argument, 0, SEED_OPT_VARS},
        {"as", required_argument, 0, SEED_OPT_AS},
        {"out", required_argument, 0, SEED_OPT_OUT},
        {"config", required_argument, 0, SEED_OPT_CONFIG},
        {"help", no_argument, 0, SEED_OPT_HELP},
        {0, 0, 0, 0},
    };
    int preview = strcmp(c->cmd, "preview") == 0;
    send_options_init(&c->so);
    if (!preview) {
        if (send_parse_with(argc, argv, &c->so, test_opts, seed_option, c) < 0) {
            return 2;
        }
    } else {
        int ch;
        optind = 1;
        while ((ch = opt_getopt(argc, argv, preview_opts)) != -1) {
            if (seed_option(c, ch, optarg) < 0) {
                return 2;
            }
        }
    }
    if (c->help) {
        seed_usage(stdout);
        return 0;
    }
    unsigned long id = 0;
    const char *problem = NULL, *refused = preview ? NULL : seed_send_option_refused(&c->so);
    char buf[300];
    if (optind >= argc) {
        problem = "which campaign? (ringmail campaign list)";
    } else if (optind + 1 < argc) {
        snprintf(buf, sizeof buf, "unexpected argument '%s'", argv[optind + 1]);
        problem = buf;
    } else if (num_parse_ulong(argv[optind], 1, CAMPAIGN_ID_MAX, &id) < 0) {
        problem = "the campaign is given by its numeric id (ringmail campaign list)";
    } else if (!c->url) {
        problem = "--db URL is required";
    } else if (c->nto == 0) {
        problem = preview ? "--to ADDR is required: the recipient the message is for"
                          : "--to ADDR is required: the seed address(es) to send to";
    } else if (preview && c->nto > 1) {
        problem = "one --to for a preview";
    } else if (preview && !c->out) {
        problem = "--out FILE.eml is required";
    } else if (c->vars && c->as) {
        problem = "--vars or --as, not both";
    } else if (refused) {
        snprintf(buf, sizeof buf, "%s is not an option of campaign test", refused);
        problem = buf;
    } else if ((c->so.relay_user || c->so.relay_password_file || c->so.relay_implicit_tls) &&
               !c->so.relay) {
        problem = "--relay-* options need --relay HOST:PORT";
    }
    for (size_t i = 0; !problem && i < c->nto; i++) {
        const char *why = send_address_problem(c->to[i]);
        if (why) {
            snprintf(buf, sizeof buf, "--to %s: %s", c->to[i], why);
            problem = buf;
        }
    }
    if (problem) {
        fprintf(stderr, "%s: %s\n", c->who, problem);
        return 2;
    }
    c->id = (int64_t)id;
    return -1;
}

/* ---- the campaign, its variables, the messages ---- */

/* The merge variables as JSON text (owned) into *vars: --vars, the
 * recipient --as names, or the campaign's first; 0, or the exit status
 * (said). */
static int seed_vars(PGconn *db, const struct seed_cmd *c, char **vars)
{
    if (c->vars) {
        json_error_t jerr;
        json_t *j = json_loads(c->vars, 0, &jerr);
        if (!json_is_object(j)) {
            fprintf(stderr, "%s: --vars must be a JSON object, {\"first_name\": \"Ann\"}%s%s\n",
                    c->who, j ? "" : ": ", j ? "" : jerr.text);
            json_decref(j);
            return 2;
        }
        json_decref(j);
        *vars = strdup(c->vars);
        return 0;
    }
    char idtext[32];
    snprintf(idtext, sizeof idtext, "%" PRId64, c->id);
    const char *p[] = {idtext, c->as};
    PGresult *r = pq.PQexecParams(
        db,
        "SELECT vars::text FROM ringmail.recipient WHERE campaign_id = $1::bigint"
        " AND ($2::text IS NULL OR lower(address) = lower($2::text)) ORDER BY id LIMIT 1",
        2, NULL, p, NULL, NULL, 0);
    if (!r || pq.PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *m = r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(db);
        fprintf(stderr, "%s: %.*s\n", c->who, (int)strcspn(m, "\n"), m);
        pq.PQclear(r);
        return 1;
    }
    int rc = 0;
    if (pq.PQntuples(r) == 1) {
        *vars = strdup(pq.PQgetvalue(r, 0, 0));
    } else if (c->as) {
        fprintf(stderr, "%s: campaign %" PRId64 " has no recipient %s\n", c->who, c->id, c->as);
        rc = 1;
    } else {
        fprintf(stderr,
                "%s: campaign %" PRId64 " has no recipients yet: rendered without merge "
                "variables (--vars JSON gives some)\n",
                c->who, c->id);
    }
    pq.PQclear(r);
    return rc;
}

/* [feedback] of --config (none without it), as send reads it. */
static int seed_feedback(const struct seed_cmd *c, struct config_feedback *f)
{
    memset(f, 0, sizeof *f);
    if (!c->so.config_path) {
        return 0;
    }
    char err[512];
    struct config *cfg = config_load(c->so.config_path, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "%s: %s\n", c->who, err);
        return 2;
    }
    *f = cfg->feedback;
    config_free(cfg);
    return 0;
}

/* A header field's value in the message (before its body), or "". */
static void seed_header(const buf_t *msg, const char *name, char *dst, size_t cap)
{
    const char *p = buf_data(msg), *end = p + buf_len(msg);
    size_t n = strlen(name);
    dst[0] = '\0';
    while (p < end && !(end - p >= 2 && p[0] == '\r' && p[1] == '\n')) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) {
            return;
        }
        if ((size_t)(eol - p) > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (v < eol && *v == ' ') {
                v++;
            }
            size_t len = (size_t)(eol - v) - (eol > v && eol[-1] == '\r');
            snprintf(dst, cap, "%.*s", (int)len, v);
            return;
        }
        p = eol + 1;
    }
}

/* Every seed's message into bodies[], the campaign's sender into from; 0,
 * or the exit status (said). */
static int seed_render(PGconn *db, const struct seed_cmd *c, buf_t *bodies, char *from,
                       size_t fromlen)
{
    struct loader_campaign camp;
    char err[1024];
    int found = loader_campaign_read(db, c->id, &camp, err, sizeof err);
    if (found != 0) {
        fprintf(stderr, "%s: %s%s\n", c->who, err, found > 0 ? " (ringmail campaign list)" : "");
        return 1;
    }
    snprintf(from, fromlen, "%s", camp.mail_from);
    struct config_feedback fb;
    char *vars = NULL;
    int rc = seed_feedback(c, &fb);
    if (rc == 0) {
        rc = seed_vars(db, c, &vars);
    }
    struct prepare_token token = {0};
    struct render_template *tpl = NULL;
    struct sign_client *signer = NULL; /* the keys stay in a signer process, as in send */
    if (rc == 0 && !(signer = prepare_signer_start(&camp, c->url, 1, err, sizeof err)) && err[0]) {
        fprintf(stderr, "%s: campaign %" PRId64 ": %s\n", c->who, c->id, err);
        rc = 1;
    }
    if (rc == 0 && !(tpl = prepare_compile(&camp, &fb, c->who, signer, &token, err, sizeof err))) {
        fprintf(stderr, "%s: campaign %" PRId64 ": %s\n", c->who, c->id, err);
        rc = 1;
    }
    struct render_scratch scratch;
    render_scratch_init(&scratch);
    for (size_t i = 0; rc == 0 && i < c->nto; i++) {
        struct prepare_item it = {.r = {.id = 0, .address = (char *)c->to[i]}};
        it.r.vars = vars ? strdup(vars) : NULL;
        prepare_render(tpl, &scratch, send_address_problem, &token, &it);
        if (it.err[0]) {
            fprintf(stderr, "%s: campaign %" PRId64 ": the message for %s cannot be rendered: %s\n",
                    c->who, c->id, c->to[i], it.err);
            rc = 1;
        } else {
            bodies[i] = it.body;
        }
    }
    render_scratch_free(&scratch);
    prepare_missing_free(token.missing); /* each field was said at its first seed */
    render_free(tpl);
    sign_client_stop(signer);
    free(vars);
    loader_campaign_free(&camp);
    return rc;
}

/* ---- test ---- */

/* One seed's row in ringmail.seed_delivery; 0, or -1 (said). */
static int seed_record(PGconn *db, const struct seed_cmd *c, const struct send_prepared *p,
                       const buf_t *body)
{
    char idtext[32], code[16], message_id[300];
    snprintf(idtext, sizeof idtext, "%" PRId64, c->id);
    snprintf(code, sizeof code, "%d", p->code);
    seed_header(body, "Message-ID", message_id, sizeof message_id);
#define SEED_OR_NULL(s) ((s)[0] ? (s) : NULL)
    const char *v[11] = {
        idtext,
        p->rcpt,
        p->done ? p->word : "failed",
        p->done ? SEED_OR_NULL(p->reason) : "not attempted: the test was stopped",
        p->code ? code : NULL,
        SEED_OR_NULL(p->enhanced),
        SEED_OR_NULL(p->reply),
        SEED_OR_NULL(p->mx),
        SEED_OR_NULL(p->tls_version),
        SEED_OR_NULL(p->tls_cipher),
        SEED_OR_NULL(message_id),
    };
#undef SEED_OR_NULL
    PGresult *r = pq.PQexecParams(
        db,
        "INSERT INTO ringmail.seed_delivery (campaign_id, address, outcome, reason, code,"
        " enhanced, reply, mx, tls_version, tls_cipher, message_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        11, NULL, v, NULL, NULL, 0);
    int ok = r && pq.PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        const char *m = r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(db);
        fprintf(stderr, "%s: seed %s not recorded: %.*s\n", c->who, p->rcpt, (int)strcspn(m, "\n"),
                m);
    }
    pq.PQclear(r);
    return ok ? 0 : -1;
}

/* "seed ADDR: accepted: 250 2.0.0 OK" (the reply's text starts with its
 * enhanced code), or the reason when no reply came. */
static void seed_say(const struct send_prepared *p)
{
    if (!p->done) {
        printf("seed %s: not attempted (the test was stopped)\n", p->rcpt);
        return;
    }
    const char *once =
        p->outcome == SMTP_OUTCOME_DEFERRED ? " (not retried: a test sends once)" : "";
    if (p->code) {
        printf("seed %s: %s: %d %s%s\n", p->rcpt, p->word, p->code, p->reply, once);
    } else {
        printf("seed %s: %s: %s%s%s%s\n", p->rcpt, p->word, p->reason, p->reply[0] ? ": " : "",
               p->reply, once);
    }
}

static int seed_test(PGconn *db, const struct seed_cmd *c, buf_t *bodies, const char *from)
{
    struct send_prepared msgs[CAMPAIGN_SEEDS_MAX];
    memset(msgs, 0, sizeof msgs);
    for (size_t i = 0; i < c->nto; i++) {
        msgs[i].rcpt = c->to[i];
        msgs[i].body = &bodies[i];
    }
    struct send_options so = c->so;
    so.from = from; /* MAIL FROM without [feedback], as send --db */
    int run = send_prepared_run(&so, msgs, c->nto, c->id);
    if (run == 2) {
        return 2; /* send said why: nothing went out */
    }
    fflush(stderr);
    int rc = 0;
    for (size_t i = 0; i < c->nto; i++) {
        seed_say(&msgs[i]);
        if (seed_record(db, c, &msgs[i], &bodies[i]) < 0 ||
            !(msgs[i].done && msgs[i].outcome == SMTP_OUTCOME_ACCEPTED)) {
            rc = 1;
        }
    }
    return rc;
}

/* ---- preview ---- */

static int seed_preview(const struct seed_cmd *c, const buf_t *body)
{
    char why[256];
    FILE *f = outfile_open(c->out, 0, why, sizeof why);
    if (!f) {
        fprintf(stderr, "%s: --out %s: %s\n", c->who, c->out, why);
        return 1;
    }
    size_t n = fwrite(buf_data(body), 1, buf_len(body), f);
    int bad = n != buf_len(body) || fflush(f) != 0 || ferror(f);
    int err = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    if (bad) {
        fprintf(stderr, "%s: --out %s: %s\n", c->who, c->out, strerror(err));
        return 1;
    }
    return 0;
}

/* ---- the two commands ---- */

static int seed_main(const char *cmd, int argc, char **argv)
{
    struct seed_cmd c = {.cmd = cmd};
    char who[64];
    snprintf(who, sizeof who, "ringmail campaign %s", cmd);
    c.who = who;
    int rc = seed_parse(argc, argv, &c);
    if (rc >= 0) {
        return rc;
    }
    char err[1024];
    PGconn *db = db_connect_current(c.url, err, sizeof err);
    if (!db) {
        fprintf(stderr, "%s: %s\n", who, err);
        return 1;
    }
    db_exec(db, "SET client_encoding = 'UTF8'", err, sizeof err);
    buf_t bodies[CAMPAIGN_SEEDS_MAX];
    for (size_t i = 0; i < CAMPAIGN_SEEDS_MAX; i++) {
        buf_init(&bodies[i]);
    }
    char from[300];
    rc = seed_render(db, &c, bodies, from, sizeof from);
    if (rc == 0) {
        rc = strcmp(cmd, "preview") == 0 ? seed_preview(&c, &bodies[0])
                                         : seed_test(db, &c, bodies, from);
    }
    for (size_t i = 0; i < CAMPAIGN_SEEDS_MAX; i++) {
        buf_free(&bodies[i]);
    }
    pq.PQfinish(db);
    return rc;
}

int campaign_test(int argc, char **argv)
{
    return seed_main("test", argc, argv);
}

int campaign_preview(int argc, char **argv)
{
    return seed_main("preview", argc, argv);
}
