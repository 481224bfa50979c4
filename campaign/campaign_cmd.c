/*
 * campaign_cmd - `ringmail campaign`: list campaigns; list and lift the
 * complaint guard's holds; create is campaign_create.c. See campaign_cmd.h.
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
#include "campaign/render.h"
#include "engine/opt.h"
#include "engine/buf.h"
#include "engine/num.h"

const char *const campaign_states[CAMPAIGN_NSTATES] = {
    "queued", "claimed", "sent",       "deferred",  "bounced",
    "failed", "invalid", "suppressed", "ambiguous",
};

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
            campaign_create_usage(ch == 'h' ? stdout : stderr);
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
    buf_append_str(&sql, "SELECT c.id, c.status, count(r.id)");
    for (int i = 0; i < CAMPAIGN_NSTATES; i++) {
        buf_appendf(&sql, ", count(*) FILTER (WHERE r.state = '%s')", campaign_states[i]);
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
            "QUEUED", "CLAIMED", "SENT",       "DEFERRED",  "BOUNCED",
            "FAILED", "INVALID", "SUPPRESSED", "AMBIGUOUS",
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
            campaign_create_usage(ch == 'h' ? stdout : stderr);
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

/* `ringmail campaign resume --db URL ID --isp NAME`: lift the hold (the
 * row stays, with resumed_at: the complaint guard counts from then on) */
static int campaign_resume(int argc, char **argv)
{
    const char *url = NULL, *isp = NULL, *id = NULL;
    int rc = campaign_hold_args("resume", argc, argv, &url, &isp, &id);
    if (rc >= 0) {
        return rc;
    }
    if (!id || !isp || !*isp) {
        fprintf(stderr, "ringmail campaign resume: %s\n",
                !id ? "which campaign? (ringmail campaign resume --db URL ID --isp NAME)"
                    : "--isp NAME is required: the ISP to send to again (ringmail campaign "
                      "holds --db URL ID lists the held ones)");
        return 2;
    }
    char err[1024];
    PGconn *c = db_connect_current(url, err, sizeof err);
    if (!c) {
        fprintf(stderr, "ringmail campaign resume: %s\n", err);
        return 1;
    }
    db_exec(c, "SET client_encoding = 'UTF8'", err, sizeof err);
    int exists = campaign_exists(c, "resume", id);
    rc = 1;
    if (exists > 0) {
        const char *p[] = {id, isp};
        PGresult *r = campaign_query(
            c, "resume",
            "UPDATE ringmail.isp_hold SET resumed_at = now() WHERE campaign_id = $1::bigint"
            " AND isp = $2 AND resumed_at IS NULL RETURNING " CAMPAIGN_HELD_AT ", reason",
            2, p, PGRES_TUPLES_OK);
        if (r && pq.PQntuples(r) == 1) {
            printf("campaign %s: isp %s resumed (it was held since %s: %s)\n", id, isp,
                   pq.PQgetvalue(r, 0, 0), pq.PQgetvalue(r, 0, 1));
            rc = 0;
        } else if (r) {
            PGresult *h =
                campaign_query(c, "resume",
                               "SELECT string_agg(isp, ', ' ORDER BY isp) FROM ringmail.isp_hold"
                               " WHERE campaign_id = $1::bigint AND resumed_at IS NULL",
                               1, p, PGRES_TUPLES_OK);
            const char *held = h && !pq.PQgetisnull(h, 0, 0) ? pq.PQgetvalue(h, 0, 0) : NULL;
            fprintf(stderr, "ringmail campaign resume: campaign %s: isp %s is not held%s%s%s\n", id,
                    isp, held ? " (held: " : "", held ? held : "", held ? ")" : "");
            pq.PQclear(h);
        }
        pq.PQclear(r);
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
    if (argc >= 2 && strcmp(argv[1], "resume") == 0) {
        return campaign_resume(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "test") == 0) {
        return campaign_test(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "preview") == 0) {
        return campaign_preview(argc - 1, argv + 1);
    }
    int help = argc >= 2 && strcmp(argv[1], "--help") == 0;
    if (!help) {
        opt_no_subcommand("campaign", argc >= 2 ? argv[1] : NULL,
                          "create, list, holds, resume, test, preview");
    }
    campaign_create_usage(help ? stdout : stderr);
    return help ? 0 : 2;
}
