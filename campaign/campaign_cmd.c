/*
 * campaign_cmd - `ringmail campaign`: list and show campaigns; pause,
 * resume and cancel them (whole, or one ISP's hold); list the holds;
 * create is campaign_create.c. See campaign_cmd.h.
 */
#include "campaign/campaign_cmd.h"
#include "campaign/campaign_int.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "campaign/db.h"
#include "campaign/import.h"
#include "campaign/lifecycle.h"
#include "campaign/render.h"
#include "engine/opt.h"
#include "engine/buf.h"
#include "engine/num.h"

const char *const campaign_states[CAMPAIGN_NSTATES] = {
    "queued", "claimed", "sent",    "deferred",   "bounced",
    "failed", "expired", "invalid", "suppressed", "ambiguous",
};

static void campaign_usage(FILE *f);

/* ---- list ---- */

static int campaign_list(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *url = NULL;
    int ch;
    optind = 1;
    while ((ch = opt_getopt(argc, argv, longopts)) != -1) {
        if (ch == 'd') {
            url = optarg;
        } else {
            campaign_usage(ch == 'h' ? stdout : stderr);
            return ch == 'h' ? 0 : 2;
        }
    }
    if (!url || optind < argc) {
        fprintf(stderr, "ringmail campaign list: %s\n",
                url ? "unexpected argument" : "--db URL is required");
        return 2;
    }
    char err[1024];
    PGconn *c = db_connect_current(url, err, sizeof err);
    if (!c) {
        fprintf(stderr, "ringmail campaign list: %s\n", err);
        return 1;
    }
    buf_t sql = BUF_INIT;
    /* The status a campaign whose recipients are all final has: done. */
    buf_append_str(&sql,
                   "SELECT c.id, " LIFE_EFFECTIVE_SQL(
                       "c.status", "count(r.id)",
                       "count(*) FILTER (WHERE r.state IN " LIFE_PENDING_SQL ")") ","
                                                                                  " count(r.id)");
    for (int i = 0; i < CAMPAIGN_NSTATES; i++) {
        /* A fresh row inside a node's claim range is claimed (DB_STATE_SQL). */
        buf_appendf(&sql, ", count(*) FILTER (WHERE " DB_STATE_SQL("r") " = '%s')",
                    campaign_states[i]);
    }
    buf_append_str(&sql, ", c.name FROM ringmail.campaign AS c LEFT JOIN ringmail.recipient AS r"
                         " ON r.campaign_id = c.id GROUP BY c.id ORDER BY c.id");
    db_exec(c, "SET client_encoding = 'UTF8'", err, sizeof err);
    PGresult *r = pq.PQexec(c, buf_cstr(&sql));
    buf_free(&sql);
    int rc = 0;
    if (!r || pq.PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *m = r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(c);
        fprintf(stderr, "ringmail campaign list: %.*s\n", (int)strcspn(m, "\n"), m);
        rc = 1;
    } else {
        /* Every column is sized to its widest value; the name goes last, so
         * wide (CJK) characters in it cannot shift the others. */
        int ncol = pq.PQnfields(r), width[16] = {0};
        for (int j = 0; j < ncol && j < 16; j++) {
            for (int i = 0; i < pq.PQntuples(r); i++) {
                int w = pq.PQgetlength(r, i, j);
                width[j] = w > width[j] ? w : width[j];
            }
        }
        const char *title[16] = {"ID", "STATUS", "TOTAL"};
        static const char *const upper[CAMPAIGN_NSTATES] = {
            "QUEUED", "CLAIMED", "SENT",    "DEFERRED",   "BOUNCED",
            "FAILED", "EXPIRED", "INVALID", "SUPPRESSED", "AMBIGUOUS",
        };
        for (int j = 0; j < CAMPAIGN_NSTATES; j++) {
            title[3 + j] = upper[j];
        }
        title[ncol - 1] = "NAME";
        for (int j = 0; j < ncol; j++) {
            int w = (int)strlen(title[j]);
            width[j] = j == ncol - 1 ? 0 : (w > width[j] ? w : width[j]);
            printf(j == 1 || j == ncol - 1 ? "%-*s%s" : "%*s%s", width[j], title[j],
                   j == ncol - 1 ? "\n" : "  ");
        }
        for (int i = 0; i < pq.PQntuples(r); i++) {
            for (int j = 0; j < ncol; j++) {
                printf(j == 1 || j == ncol - 1 ? "%-*s%s" : "%*s%s", width[j],
                       pq.PQgetvalue(r, i, j), j == ncol - 1 ? "\n" : "  ");
            }
        }
    }
    pq.PQclear(r);
    pq.PQfinish(c);
    return rc;
}

/* ---- holds: the complaint guard ---- */

/* campaign_hold_args - --db URL, an optional --isp NAME and at most one ID;
 * -1 parsed, else the exit status (usage printed) */
static int campaign_hold_args(const char *cmd, int argc, char **argv, const char **url,
                              const char **isp, const char **id)
{
    static const struct option longopts[] = {
        {"db", required_argument, 0, 'd'},
        {"isp", required_argument, 0, 'i'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int ch;
    optind = 1;
    while ((ch = opt_getopt(argc, argv, longopts)) != -1) {
        if (ch == 'd') {
            *url = optarg;
        } else if (ch == 'i') {
            *isp = optarg;
        } else {
            campaign_usage(ch == 'h' ? stdout : stderr);
            return ch == 'h' ? 0 : 2;
        }
    }
    *id = optind < argc ? argv[optind] : NULL;
    unsigned long n;
    const char *problem = NULL;
    if (!*url) {
        problem = "--db URL is required";
    } else if (optind + 1 < argc) {
        problem = "unexpected argument";
    } else if (*id && num_parse_ulong(*id, 0, CAMPAIGN_ID_MAX, &n) < 0) {
        problem = "the campaign is given by its numeric id (ringmail campaign list)";
    }
    if (problem) {
        fprintf(stderr, "ringmail campaign %s: %s\n", cmd, problem);
        return 2;
    }
    return -1;
}

/* campaign_query - sql with params on c; NULL after saying why (prefix: the command) */
static PGresult *campaign_query(PGconn *c, const char *cmd, const char *sql, int n,
                                const char *const *params, ExecStatusType want)
{
    PGresult *r = pq.PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (!r || pq.PQresultStatus(r) != want) {
        const char *m = r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(c);
        fprintf(stderr, "ringmail campaign %s: %.*s\n", cmd, (int)strcspn(m, "\n"), m);
        pq.PQclear(r);
        return NULL;
    }
    return r;
}

/* campaign_exists - 1 yes, 0 no (said), -1 database error (said) */
static int campaign_exists(PGconn *c, const char *cmd, const char *id)
{
    const char *p[] = {id};
    PGresult *r = campaign_query(c, cmd, "SELECT 1 FROM ringmail.campaign WHERE id = $1::bigint", 1,
                                 p, PGRES_TUPLES_OK);
    if (!r) {
        return -1;
    }
    int n = pq.PQntuples(r);
    pq.PQclear(r);
    if (n == 0) {
        fprintf(stderr, "ringmail campaign %s: no campaign %s (ringmail campaign list)\n", cmd, id);
    }
    return n > 0;
}

#define CAMPAIGN_HELD_AT "to_char(held_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'"

/* campaign_held_list - "a, b": the ISPs held for campaign id ("" none) */
static void campaign_held_list(PGconn *c, const char *id, char *out, size_t n)
{
    const char *p[] = {id};
    PGresult *r = campaign_query(c, "resume",
                                 "SELECT string_agg(isp, ', ' ORDER BY isp) FROM ringmail.isp_hold"
                                 " WHERE campaign_id = $1::bigint AND resumed_at IS NULL",
                                 1, p, PGRES_TUPLES_OK);
    snprintf(out, n, "%s", r && !pq.PQgetisnull(r, 0, 0) ? pq.PQgetvalue(r, 0, 0) : "");
    pq.PQclear(r);
}

/* `ringmail campaign holds --db URL [ID]`: the holds, one line each */
static int campaign_holds(int argc, char **argv)
{
    const char *url = NULL, *isp = NULL, *id = NULL;
    int rc = campaign_hold_args("holds", argc, argv, &url, &isp, &id);
    if (rc >= 0) {
        return rc;
    }
    if (isp) {
        fprintf(stderr, "ringmail campaign holds: --isp belongs to campaign resume\n");
        return 2;
    }
    char err[1024];
    PGconn *c = db_connect_current(url, err, sizeof err);
    if (!c) {
        fprintf(stderr, "ringmail campaign holds: %s\n", err);
        return 1;
    }
    db_exec(c, "SET client_encoding = 'UTF8'", err, sizeof err);
    rc = 0;
    if (id && campaign_exists(c, "holds", id) <= 0) {
        rc = 1;
    } else {
        const char *p[] = {id};
        PGresult *r = campaign_query(
            c, "holds",
            "SELECT campaign_id, isp, " CAMPAIGN_HELD_AT ", reason FROM ringmail.isp_hold"
            " WHERE ($1::bigint IS NULL OR campaign_id = $1::bigint) AND resumed_at IS NULL"
            " ORDER BY campaign_id, isp",
            1, p, PGRES_TUPLES_OK);
        if (!r) {
            rc = 1;
        } else if (pq.PQntuples(r) == 0) {
            if (id) {
                printf("campaign %s: no ISP is held\n", id);
            } else {
                printf("no ISP is held\n");
            }
        } else {
            for (int i = 0; i < pq.PQntuples(r); i++) {
                printf("campaign %s: isp %s held since %s: %s\n", pq.PQgetvalue(r, i, 0),
                       pq.PQgetvalue(r, i, 1), pq.PQgetvalue(r, i, 2), pq.PQgetvalue(r, i, 3));
            }
        }
        pq.PQclear(r);
    }
    pq.PQfinish(c);
    return rc;
}

/* campaign_usage - every subcommand's usage: create's (campaign_create.c),
 * then the life cycle's */
static void campaign_usage(FILE *f)
{
    campaign_create_usage(f);
    fprintf(f,
            "       ringmail campaign show --db URL ID\n"
            "       ringmail campaign pause --db URL ID [--isp NAME]\n"
            "       ringmail campaign resume --db URL ID [--isp NAME]\n"
            "       ringmail campaign cancel --db URL ID\n"
            "\n"
            "  A campaign is draft (created), scheduled (a send waits for its start time),\n"
            "  running (a send claimed from it), paused, done (every recipient final) or\n"
            "  cancelled (never sends again). show: its settings, recipients by state, holds\n"
            "  and the nodes sending it. pause: a running send starts no new transaction\n"
            "  within 2 seconds (those in flight finish); with --isp, only that ISP's mail\n"
            "  waits. resume: continue (with --isp: lift that ISP's hold, the operator's or\n"
            "  the complaint guard's). cancel: a running send finishes what is in flight,\n"
            "  gives its claims back and exits; the recipients not sent stay in the database.\n");
}

/* campaign_open - --db connected, client encoding UTF-8; NULL after saying why */
static PGconn *campaign_open(const char *cmd, const char *url)
{
    char err[1024];
    PGconn *c = db_connect_current(url, err, sizeof err);
    if (!c) {
        fprintf(stderr, "ringmail campaign %s: %s\n", cmd, err);
        return NULL;
    }
    db_exec(c, "SET client_encoding = 'UTF8'", err, sizeof err);
    return c;
}

/* campaign_life - campaign id's status into st: 1, or 0 after saying why
 * (no such campaign, a database error) */
static int campaign_life(PGconn *c, const char *cmd, const char *id, struct life_status *st)
{
    char err[1024];
    int found = life_read(c, id, st, err, sizeof err);
    if (found < 0) {
        fprintf(stderr, "ringmail campaign %s: %s\n", cmd, err);
    } else if (found == 0) {
        fprintf(stderr, "ringmail campaign %s: no campaign %s (ringmail campaign list)\n", cmd, id);
    }
    return found > 0;
}

/* campaign_over - a done or cancelled campaign cannot be paused, resumed
 * or cancelled: 1 after saying so (what: "pause") */
static int campaign_over(const char *cmd, const char *id, const struct life_status *st,
                         const char *what)
{
    if (strcmp(st->status, "done") == 0) {
        fprintf(stderr,
                "ringmail campaign %s: campaign %s is done (all %lld recipients final: %s); "
                "there is nothing to %s\n",
                cmd, id, st->total, st->summary, what);
        return 1;
    }
    if (strcmp(st->status, "cancelled") == 0) {
        fprintf(stderr,
                "ringmail campaign %s: campaign %s was cancelled (%s%s%s); there is nothing to "
                "%s\n",
                cmd, id, st->at, st->reason[0] ? ": " : "", st->reason, what);
        return 1;
    }
    return 0;
}

/* campaign_id_needed - the ID was given, else said (exit 2) */
static int campaign_id_needed(const char *cmd, const char *id, const char *form)
{
    if (!id) {
        fprintf(stderr,
                "ringmail campaign %s: which campaign? (ringmail campaign %s --db URL %s)\n", cmd,
                cmd, form);
        return 0;
    }
    return 1;
}

/* campaign_isp_resume - lift the hold on isp (the row stays, with
 * resumed_at: the complaint guard counts from then on); the exit status */
static int campaign_isp_resume(PGconn *c, const char *id, const char *isp)
{
    const char *p[] = {id, isp};
    PGresult *r = campaign_query(
        c, "resume",
        "UPDATE ringmail.isp_hold SET resumed_at = now() WHERE campaign_id = $1::bigint"
        " AND isp = $2 AND resumed_at IS NULL RETURNING " CAMPAIGN_HELD_AT ", reason",
        2, p, PGRES_TUPLES_OK);
    int rc = 1;
    if (r && pq.PQntuples(r) == 1) {
        printf("campaign %s: isp %s resumed (it was held since %s: %s)\n", id, isp,
               pq.PQgetvalue(r, 0, 0), pq.PQgetvalue(r, 0, 1));
        rc = 0;
    } else if (r) {
        char held[512];
        campaign_held_list(c, id, held, sizeof held);
        fprintf(stderr, "ringmail campaign resume: campaign %s: isp %s is not held%s%s%s\n", id,
                isp, held[0] ? " (held: " : "", held, held[0] ? ")" : "");
    }
    pq.PQclear(r);
    return rc;
}

/* `ringmail campaign resume --db URL ID [--isp NAME]`: a paused campaign
 * runs again; with --isp, that ISP's hold is lifted */
static int campaign_resume(int argc, char **argv)
{
    const char *url = NULL, *isp = NULL, *id = NULL;
    int rc = campaign_hold_args("resume", argc, argv, &url, &isp, &id);
    if (rc >= 0) {
        return rc;
    }
    if (!campaign_id_needed("resume", id, "ID [--isp NAME]")) {
        return 2;
    }
    if (isp && !*isp) {
        fprintf(stderr, "ringmail campaign resume: --isp wants the name of an ISP (ringmail "
                        "campaign holds --db URL ID lists the held ones)\n");
        return 2;
    }
    PGconn *c = campaign_open("resume", url);
    if (!c) {
        return 1;
    }
    struct life_status st;
    rc = 1;
    if (!campaign_life(c, "resume", id, &st)) {
        rc = 1;
    } else if (isp) {
        rc = campaign_isp_resume(c, id, isp);
    } else if (strcmp(st.status, "paused") != 0) {
        char held[512];
        campaign_held_list(c, id, held, sizeof held);
        fprintf(stderr, "ringmail campaign resume: campaign %s is not paused (it is %s)%s%s%s\n",
                id, st.status, held[0] ? "; held ISPs: " : "", held,
                held[0] ? " (--isp NAME resumes one)" : "");
    } else {
        char err[1024];
        const char *to = st.start_in_s > 0 ? "scheduled" : "running";
        int n = life_set(c, id, "{paused}", to, "resumed by operator", err, sizeof err);
        if (n < 0) {
            fprintf(stderr, "ringmail campaign resume: %s\n", err);
        } else if (n == 0) {
            fprintf(stderr,
                    "ringmail campaign resume: campaign %s changed meanwhile (ringmail "
                    "campaign show --db URL %s)\n",
                    id, id);
        } else {
            printf("campaign %s resumed (it was paused since %s%s%s); a running send continues "
                   "within 2 seconds\n",
                   id, st.at, st.reason[0] ? ": " : "", st.reason);
            rc = 0;
        }
    }
    pq.PQfinish(c);
    return rc;
}

/* campaign_isp_pause - an operator's hold on isp (an isp_hold row, as the
 * complaint guard's); the exit status */
static int campaign_isp_pause(PGconn *c, const char *id, const char *isp)
{
    const char *p[] = {id, isp};
    PGresult *r = campaign_query(
        c, "pause",
        "INSERT INTO ringmail.isp_hold (campaign_id, isp, reason)"
        " VALUES ($1::bigint, $2, 'paused by operator')"
        " ON CONFLICT (campaign_id, isp) DO UPDATE SET reason = excluded.reason,"
        " held_at = now(), resumed_at = NULL WHERE ringmail.isp_hold.resumed_at IS NOT NULL"
        " RETURNING 1",
        2, p, PGRES_TUPLES_OK);
    if (!r) {
        return 1;
    }
    int n = pq.PQntuples(r);
    pq.PQclear(r);
    if (n == 0) {
        r = campaign_query(c, "pause",
                           "SELECT " CAMPAIGN_HELD_AT ", reason FROM ringmail.isp_hold"
                           " WHERE campaign_id = $1::bigint AND isp = $2",
                           2, p, PGRES_TUPLES_OK);
        if (r && pq.PQntuples(r) == 1) {
            fprintf(stderr,
                    "ringmail campaign pause: campaign %s: isp %s is already held since "
                    "%s: %s\n",
                    id, isp, pq.PQgetvalue(r, 0, 0), pq.PQgetvalue(r, 0, 1));
        }
        pq.PQclear(r);
        return 1;
    }
    printf("campaign %s: isp %s paused by operator; a running send holds it within 2 seconds "
           "(`ringmail campaign resume %s --isp %s` lifts it)\n",
           id, isp, id, isp);
    /* A misspelt name holds nothing: say which ISPs the campaign's
     * attempts went to when none went to this one. */
    r = campaign_query(c, "pause",
                       "SELECT coalesce(bool_or(isp = $2), false),"
                       " string_agg(DISTINCT isp, ', ' ORDER BY isp) FROM ringmail.delivery"
                       " WHERE campaign_id = $1::bigint AND isp IS NOT NULL",
                       2, p, PGRES_TUPLES_OK);
    if (r && !pq.PQgetisnull(r, 0, 1) && strcmp(pq.PQgetvalue(r, 0, 0), "f") == 0) {
        fprintf(stderr,
                "ringmail campaign pause: note: no attempt of campaign %s went to an ISP called "
                "'%s' so far (they went to %s); ISPs are named by [isp NAME] in the send's "
                "--config\n",
                id, isp, pq.PQgetvalue(r, 0, 1));
    }
    pq.PQclear(r);
    return 0;
}

/* `ringmail campaign pause --db URL ID [--isp NAME]` */
static int campaign_pause(int argc, char **argv)
{
    const char *url = NULL, *isp = NULL, *id = NULL;
    int rc = campaign_hold_args("pause", argc, argv, &url, &isp, &id);
    if (rc >= 0) {
        return rc;
    }
    if (!campaign_id_needed("pause", id, "ID [--isp NAME]")) {
        return 2;
    }
    if (isp && !*isp) {
        fprintf(stderr, "ringmail campaign pause: --isp wants the name of an ISP ([isp NAME] in "
                        "the send's --config)\n");
        return 2;
    }
    PGconn *c = campaign_open("pause", url);
    if (!c) {
        return 1;
    }
    struct life_status st;
    rc = 1;
    if (!campaign_life(c, "pause", id, &st) || campaign_over("pause", id, &st, "pause")) {
        rc = 1;
    } else if (isp) {
        rc = campaign_isp_pause(c, id, isp);
    } else if (strcmp(st.status, "paused") == 0) {
        fprintf(stderr, "ringmail campaign pause: campaign %s is already paused (since %s%s%s)\n",
                id, st.at, st.reason[0] ? ": " : "", st.reason);
    } else {
        char err[1024];
        int n = life_set(c, id, "{draft,scheduled,running}", "paused", "paused by operator", err,
                         sizeof err);
        if (n < 0) {
            fprintf(stderr, "ringmail campaign pause: %s\n", err);
        } else if (n == 0) {
            fprintf(stderr,
                    "ringmail campaign pause: campaign %s changed meanwhile (ringmail "
                    "campaign show --db URL %s)\n",
                    id, id);
        } else {
            printf("campaign %s paused (it was %s): a running send starts no new transaction "
                   "within 2 seconds, those in flight finish; `ringmail campaign resume %s` "
                   "continues\n",
                   id, st.status, id);
            rc = 0;
        }
    }
    pq.PQfinish(c);
    return rc;
}

/* `ringmail campaign cancel --db URL ID` */
static int campaign_cancel(int argc, char **argv)
{
    const char *url = NULL, *isp = NULL, *id = NULL;
    int rc = campaign_hold_args("cancel", argc, argv, &url, &isp, &id);
    if (rc >= 0) {
        return rc;
    }
    if (isp) {
        fprintf(stderr, "ringmail campaign cancel: a campaign is cancelled whole; `ringmail "
                        "campaign pause ID --isp NAME` holds one ISP\n");
        return 2;
    }
    if (!campaign_id_needed("cancel", id, "ID")) {
        return 2;
    }
    PGconn *c = campaign_open("cancel", url);
    if (!c) {
        return 1;
    }
    struct life_status st;
    rc = 1;
    if (!campaign_life(c, "cancel", id, &st)) {
        rc = 1;
    } else if (strcmp(st.status, "cancelled") == 0) {
        fprintf(stderr,
                "ringmail campaign cancel: campaign %s is already cancelled (since %s%s%s)\n", id,
                st.at, st.reason[0] ? ": " : "", st.reason);
    } else if (!campaign_over("cancel", id, &st, "cancel")) {
        char err[1024];
        int n = life_set(c, id, "{draft,scheduled,running,paused}", "cancelled",
                         "cancelled by operator", err, sizeof err);
        if (n < 0) {
            fprintf(stderr, "ringmail campaign cancel: %s\n", err);
        } else if (n == 0) {
            fprintf(stderr,
                    "ringmail campaign cancel: campaign %s changed meanwhile (ringmail "
                    "campaign show --db URL %s)\n",
                    id, id);
        } else {
            printf("campaign %s cancelled (it was %s) with %lld recipient%s not sent: they stay "
                   "in the database; a running send finishes what is in flight and stops within "
                   "2 seconds; a cancelled campaign never sends again\n",
                   id, st.status, st.pending, st.pending == 1 ? "" : "s");
            rc = 0;
        }
    }
    pq.PQfinish(c);
    return rc;
}

/* ---- show ---- */

#define CAMPAIGN_TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'"

/* campaign_show_settings - the campaign row, the DKIM key never shown */
static int campaign_show_settings(PGconn *c, const char *id)
{
    const char *p[] = {id};
    PGresult *r = campaign_query(
        c, "show",
        "SELECT name, mail_from, coalesce(from_name, ''), coalesce(reply_to, ''), subject,"
        " octet_length(text_body), octet_length(html_body), coalesce(list_unsubscribe, ''),"
        " coalesce(feedback_id, ''), coalesce(dkim_domain, ''), coalesce(dkim_selector, ''),"
        " dkim_key IS NOT NULL, " CAMPAIGN_TS("created_at") ", coalesce(dkim_selector2, ''),"
                                                            " dkim_key2 IS NOT NULL"
                                                            " FROM ringmail.campaign"
                                                            " WHERE id = $1::bigint",
        1, p, PGRES_TUPLES_OK);
    if (!r || pq.PQntuples(r) != 1) {
        pq.PQclear(r);
        return -1;
    }
#define V(j) pq.PQgetvalue(r, 0, j)
    printf("campaign %s: %s\n", id, V(0));
    if (*V(2)) {
        printf("  from              %s <%s>\n", V(2), V(1));
    } else {
        printf("  from              %s\n", V(1));
    }
    if (*V(3)) {
        printf("  reply-to          %s\n", V(3));
    }
    printf("  subject           %s\n", V(4));
    for (int j = 5; j <= 6; j++) {
        if (pq.PQgetisnull(r, 0, j)) {
            printf("  %s         none\n", j == 5 ? "text body" : "html body");
        } else {
            printf("  %s         %s bytes\n", j == 5 ? "text body" : "html body", V(j));
        }
    }
    printf("  list-unsubscribe  %s\n", *V(7) ? V(7) : "none");
    printf("  feedback-id       %s\n", *V(8) ? V(8) : "none");
    if (*V(9)) {
        printf("  dkim              d=%s s=%s (%s)\n", V(9), V(10),
               strcmp(V(11), "t") == 0 ? "private key stored, not shown" : "no private key");
    } else {
        printf("  dkim              none (not signed)\n");
    }
    if (*V(9) && *V(13)) { /* dual signing: the second key, same d= */
        printf("  dkim (second)     d=%s s=%s (%s)\n", V(9), V(13),
               strcmp(V(14), "t") == 0 ? "private key stored, not shown" : "no private key");
    }
    printf("  created           %s\n", V(12));
#undef V
    pq.PQclear(r);
    return 0;
}

/* campaign_show_status - the status, its time and reason, the start */
static void campaign_show_status(const struct life_status *st)
{
    printf("  status            %s since %s%s%s", st->status, st->at, st->reason[0] ? ": " : "",
           st->reason);
    if (strcmp(st->status, st->stored) != 0) {
        printf(" (every recipient is final; the row still says %s)", st->stored);
    }
    if (strcmp(st->status, "cancelled") == 0) {
        printf("; cancelled with %lld recipient%s not sent", st->pending,
               st->pending == 1 ? "" : "s");
    }
    printf("\n");
    if (st->start_at[0] && st->start_in_s > 0) {
        char left[32];
        life_duration(st->start_in_s, left, sizeof left);
        printf("  start at          %s (in %s)\n", st->start_at, left);
    } else if (st->start_at[0]) {
        printf("  start at          %s\n", st->start_at);
    } else {
        printf("  start at          at once (not scheduled)\n");
    }
}

/* campaign_show_counts - recipients by state, every state */
static int campaign_show_counts(PGconn *c, const char *id, const struct life_status *st)
{
    buf_t sql = BUF_INIT;
    buf_append_str(&sql, "SELECT ");
    for (int i = 0; i < CAMPAIGN_NSTATES; i++) {
        buf_appendf(&sql, "%scount(*) FILTER (WHERE q.st = '%s')", i ? ", " : "",
                    campaign_states[i]);
    }
    buf_append_str(&sql,
                   " FROM (SELECT " DB_STATE_SQL("r") " AS st FROM ringmail.recipient r"
                                                      " WHERE r.campaign_id = $1::bigint) AS q");
    const char *p[] = {id};
    PGresult *r = campaign_query(c, "show", buf_cstr(&sql), 1, p, PGRES_TUPLES_OK);
    buf_free(&sql);
    if (!r) {
        return -1;
    }
    printf("recipients          %lld: %lld final, %lld not final\n", st->total,
           st->total - st->pending, st->pending);
    for (int i = 0; i < CAMPAIGN_NSTATES; i++) {
        printf("  %-16s  %s\n", campaign_states[i], pq.PQgetvalue(r, 0, i));
    }
    pq.PQclear(r);
    return 0;
}

/* campaign_show_live - ISP holds in force and the nodes sending it now */
static int campaign_show_live(PGconn *c, const char *id)
{
    const char *p[] = {id};
    PGresult *r = campaign_query(c, "show",
                                 "SELECT isp, " CAMPAIGN_HELD_AT ", reason FROM ringmail.isp_hold"
                                 " WHERE campaign_id = $1::bigint AND resumed_at IS NULL"
                                 " ORDER BY isp",
                                 1, p, PGRES_TUPLES_OK);
    if (!r) {
        return -1;
    }
    printf("ISP holds           %s\n", pq.PQntuples(r) ? "" : "none");
    for (int i = 0; i < pq.PQntuples(r); i++) {
        printf("  isp %s held since %s: %s\n", pq.PQgetvalue(r, i, 0), pq.PQgetvalue(r, i, 1),
               pq.PQgetvalue(r, i, 2));
    }
    pq.PQclear(r);
    r = campaign_query(c, "show",
                       "SELECT name, coalesce(host, '?'), coalesce(pid::text, '?'), " CAMPAIGN_TS(
                           "started_at") ", " CAMPAIGN_TS("heartbeat_at") " FROM ringmail.node"
                                                                          " WHERE campaign_id = "
                                                                          "$1::bigint AND "
                                                                          "incarnation IS NOT NULL"
                                                                          " AND expires_at > now() "
                                                                          "ORDER BY name",
                       1, p, PGRES_TUPLES_OK);
    if (!r) {
        return -1;
    }
    printf("live nodes          %s\n", pq.PQntuples(r) ? "" : "none");
    for (int i = 0; i < pq.PQntuples(r); i++) {
        printf("  node %s on %s (pid %s), started %s, heartbeat %s\n", pq.PQgetvalue(r, i, 0),
               pq.PQgetvalue(r, i, 1), pq.PQgetvalue(r, i, 2), pq.PQgetvalue(r, i, 3),
               pq.PQgetvalue(r, i, 4));
    }
    pq.PQclear(r);
    return 0;
}

/* `ringmail campaign show --db URL ID` */
static int campaign_show(int argc, char **argv)
{
    const char *url = NULL, *isp = NULL, *id = NULL;
    int rc = campaign_hold_args("show", argc, argv, &url, &isp, &id);
    if (rc >= 0) {
        return rc;
    }
    if (isp) {
        fprintf(stderr, "ringmail campaign show: --isp belongs to campaign pause and resume\n");
        return 2;
    }
    if (!campaign_id_needed("show", id, "ID")) {
        return 2;
    }
    PGconn *c = campaign_open("show", url);
    if (!c) {
        return 1;
    }
    struct life_status st;
    rc = 1;
    if (campaign_life(c, "show", id, &st) && campaign_show_settings(c, id) == 0) {
        campaign_show_status(&st);
        if (campaign_show_counts(c, id, &st) == 0 && campaign_show_live(c, id) == 0) {
            rc = 0;
        }
    }
    pq.PQfinish(c);
    return rc;
}

int campaign_main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "create") == 0) {
        return campaign_create(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "list") == 0) {
        return campaign_list(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "holds") == 0) {
        return campaign_holds(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "show") == 0) {
        return campaign_show(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "pause") == 0) {
        return campaign_pause(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "resume") == 0) {
        return campaign_resume(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "test") == 0) {
        return campaign_test(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "preview") == 0) {
        return campaign_preview(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "cancel") == 0) {
        return campaign_cancel(argc - 1, argv + 1);
    }
    int help = argc >= 2 && strcmp(argv[1], "--help") == 0;
    if (!help) {
        opt_no_subcommand("campaign", argc >= 2 ? argv[1] : NULL,
                          "create, list, show, pause, resume, cancel, holds, test, preview");
    }
    campaign_usage(help ? stdout : stderr);
    return help ? 0 : 2;
}
