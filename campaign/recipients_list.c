/*
 * recipients_list - `ringmail recipients list --db URL --campaign ID
 * [--state STATE] [--limit N]`. See import.h.
 *
 * One line per recipient in import order: the address, its state, its
 * attempts, when it last changed (UTC) and the reason of its state. The
 * rows come through a cursor, so a million-recipient campaign streams; the
 * address column is as wide as the widest address listed. STATE is checked
 * against the states the schema allows (read from the recipient table's
 * CHECK constraint, so a later migration's states are known without a new
 * list here).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign/campaign_cmd.h"
#include "campaign/db.h"
#include "campaign/import.h"
#include "campaign/import_int.h"
#include "engine/buf.h"
#include "engine/num.h"
#include "engine/opt.h"

#define LIST_FETCH 10000
#define LIST_FETCH_S "10000"

/* The schema's states when its constraint cannot be read (schema 5). */
static const char list_states_default[] =
    "queued, claimed, sent, deferred, bounced, failed, expired, invalid, suppressed, ambiguous";

void recipients_list_usage(FILE *f)
{
    fprintf(f,
            "usage: ringmail recipients list --db URL --campaign ID [--state STATE] [--limit N]\n"
            "\n"
            "  One line per recipient, in import order: address, state, attempts, last\n"
            "  change (UTC) and reason. --state keeps one state, one of\n"
            "    %s;\n"
            "  --limit N the first N. Exit 2 on bad options or an unknown state, 1 on a\n"
            "  database error or no such campaign.\n",
            list_states_default);
}

static void list_error(PGresult *r, PGconn *c, const char *what)
{
    const char *m = r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(c);
    fprintf(stderr, "ringmail recipients list: %s: %.*s\n", what, (int)strcspn(m, "\n"), m);
}

/* The states of recipient_state_check, ", "-separated, into out; 0 or -1. */
static int list_states(PGconn *c, buf_t *out)
{
    PGresult *r = pq.PQexec(c, "SELECT (regexp_matches(pg_get_constraintdef(k.oid),"
                               " '''([a-z_]+)''', 'g'))[1] FROM pg_constraint AS k"
                               " WHERE k.conrelid = 'ringmail.recipient'::regclass"
                               " AND k.conname = 'recipient_state_check'");
    if (!r || pq.PQresultStatus(r) != PGRES_TUPLES_OK) {
        list_error(r, c, "the recipient states");
        pq.PQclear(r);
        return -1;
    }
    for (int i = 0; i < pq.PQntuples(r); i++) {
        buf_appendf(out, "%s%s", i ? ", " : "", pq.PQgetvalue(r, i, 0));
    }
    if (pq.PQntuples(r) == 0) {
        buf_append_str(out, list_states_default);
    }
    pq.PQclear(r);
    return 0;
}

static int list_state_known(const char *states, const char *state)
{
    size_t n = strlen(state);
    for (const char *s = states; *s;) {
        size_t k = strcspn(s, ",");
        if (k == n && strncmp(s, state, n) == 0) {
            return 1;
        }
        s += k;
        s += strspn(s, ", ");
    }
    return 0;
}

/* Characters of a UTF-8 string (for padding). */
static size_t list_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        n += ((unsigned char)*s & 0xC0) != 0x80;
    }
    return n;
}

/* s on one line: control characters become spaces. */
static void list_put_clean(const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        putchar(ch < 0x20 || ch == 0x7f ? ' ' : ch);
    }
}

int recipients_list_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, 0, 'd'},    {"campaign", required_argument, 0, 'c'},
        {"state", required_argument, 0, 's'}, {"limit", required_argument, 0, 'l'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0},
    };
    const char *url = NULL, *campaign = NULL, *state = NULL, *limit = NULL;
    int ch;
    optind = 1;
    while ((ch = opt_getopt(argc, argv, longopts)) != -1) {
        switch (ch) {
        case 'd':
            url = optarg;
            break;
        case 'c':
            campaign = optarg;
            break;
        case 's':
            state = optarg;
            break;
        case 'l':
            limit = optarg;
            break;
        case 'h':
            recipients_list_usage(stdout);
            return 0;
        default:
            recipients_list_usage(stderr);
            return 2;
        }
    }
    unsigned long id, lim = 0;
    const char *problem = NULL;
    if (optind < argc) {
        problem = "unexpected argument";
    } else if (!url) {
        problem = "--db URL is required";
    } else if (!campaign) {
        problem = "--campaign ID is required";
    } else if (num_parse_ulong(campaign, 0, CAMPAIGN_ID_MAX, &id) < 0) {
        problem = "--campaign takes a numeric campaign id";
    } else if (limit && num_parse_ulong(limit, 1, 1000000000000ul, &lim) < 0) {
        problem = "--limit takes a positive number of rows";
    }
    if (problem) {
        fprintf(stderr, "ringmail recipients list: %s\n", problem);
        return 2;
    }
    char err[1024];
    PGconn *c = db_connect_current(url, err, sizeof err);
    if (!c) {
        fprintf(stderr, "ringmail recipients list: %s\n", err);
        return 1;
    }
    int rc = 1;
    buf_t states = BUF_INIT, sql = BUF_INIT;
    PGresult *r = NULL;
    if (db_exec(c, "SET client_encoding = 'UTF8'", err, sizeof err) < 0) {
        fprintf(stderr, "ringmail recipients list: %s\n", err);
        goto out;
    }
    if (state) {
        if (list_states(c, &states) < 0) {
            goto out;
        }
        if (!list_state_known(buf_cstr(&states), state)) {
            fprintf(
                stderr,
                "ringmail recipients list: --state '%s' is not a recipient state (one of: %s)\n",
                state, buf_cstr(&states));
            rc = 2;
            goto out;
        }
    }
    const char *params[2] = {campaign, state};
    r = pq.PQexecParams(c, "SELECT 1 FROM ringmail.campaign WHERE id = $1::bigint", 1, NULL, params,
                        NULL, NULL, 0);
    if (!r || pq.PQresultStatus(r) != PGRES_TUPLES_OK) {
        list_error(r, c, "campaign");
        goto out;
    }
    if (pq.PQntuples(r) != 1) {
        fprintf(stderr,
                "ringmail recipients list: campaign %s does not exist (ringmail campaign list)\n",
                campaign);
        goto out;
    }
    pq.PQclear(r);
    r = NULL;

    /* The rows, and the widest address among them. */
    buf_t rows = BUF_INIT;
    /* The state as the other commands say it: a fresh row inside a
     * node's claim range is claimed (DB_STATE_SQL). */
    buf_append_str(&rows, "SELECT id, address, " DB_STATE_SQL(
                              "q") " AS state, attempts,"
                                   " updated_at, reason FROM ringmail.recipient q"
                                   " WHERE campaign_id = $1::bigint");
    if (state) {
        buf_append_str(&rows, " AND " DB_STATE_SQL("q") " = $2");
    }
    buf_append_str(&rows, " ORDER BY id");
    if (lim) {
        buf_appendf(&rows, " LIMIT %lu", lim);
    }
    buf_appendf(&sql, "SELECT coalesce(max(length(address)), 0) FROM (%s) AS s", buf_cstr(&rows));
    r = pq.PQexecParams(c, buf_cstr(&sql), state ? 2 : 1, NULL, params, NULL, NULL, 0);
    if (!r || pq.PQresultStatus(r) != PGRES_TUPLES_OK) {
        list_error(r, c, "recipients");
        buf_free(&rows);
        goto out;
    }
    int width = atoi(pq.PQgetvalue(r, 0, 0));
    pq.PQclear(r);
    r = NULL;
    buf_reset(&sql);
    buf_appendf(&sql,
                "DECLARE ringmail_list NO SCROLL CURSOR FOR SELECT s.address, s.state, s.attempts,"
                " to_char(s.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
                " coalesce(s.reason, '') FROM (%s) AS s ORDER BY s.id",
                buf_cstr(&rows));
    buf_free(&rows);
    if (db_exec(c, "BEGIN", err, sizeof err) < 0) {
        fprintf(stderr, "ringmail recipients list: %s\n", err);
        goto out;
    }
    r = pq.PQexecParams(c, buf_cstr(&sql), state ? 2 : 1, NULL, params, NULL, NULL, 0);
    if (!r || pq.PQresultStatus(r) != PGRES_COMMAND_OK) {
        list_error(r, c, "recipients");
        goto out;
    }
    pq.PQclear(r);
    r = NULL;
    if (width < 7) {
        width = 7;
    }
    long long shown = 0;
    for (;;) {
        r = pq.PQexec(c, "FETCH " LIST_FETCH_S " FROM ringmail_list");
        if (!r || pq.PQresultStatus(r) != PGRES_TUPLES_OK) {
            list_error(r, c, "recipients");
            goto out;
        }
        int n = pq.PQntuples(r);
        if (n > 0 && shown == 0) {
            printf("%-*s  %-10s  %8s  %-20s  %s\n", width, "ADDRESS", "STATE", "ATTEMPTS",
                   "UPDATED", "REASON");
        }
        for (int i = 0; i < n; i++) {
            const char *a = pq.PQgetvalue(r, i, 0);
            list_put_clean(a);
            for (size_t k = list_chars(a); k < (size_t)width; k++) {
                putchar(' ');
            }
            printf("  %-10s  %8s  %-20s  ", pq.PQgetvalue(r, i, 1), pq.PQgetvalue(r, i, 2),
                   pq.PQgetvalue(r, i, 3));
            list_put_clean(pq.PQgetvalue(r, i, 4));
            putchar('\n');
        }
        shown += n;
        pq.PQclear(r);
        r = NULL;
        if (n < LIST_FETCH) {
            break;
        }
    }
    db_exec(c, "COMMIT", err, sizeof err);
    if (shown == 0) {
        if (state) {
            fprintf(stderr, "ringmail recipients list: campaign %s has no recipient in state %s\n",
                    campaign, state);
        } else {
            fprintf(stderr, "ringmail recipients list: campaign %s has no recipients\n", campaign);
        }
    }
    rc = fflush(stdout) == 0 ? 0 : 1;
out:
    pq.PQclear(r);
    buf_free(&states);
    buf_free(&sql);
    pq.PQfinish(c);
    return rc;
}
