/*
 * db - the campaign schema in PostgreSQL and `ringmail db migrate`
 *
 * Tables live in the schema `ringmail`: campaign, recipient, delivery,
 * suppression, and schema_migrations (one row per applied version).
 * Migrations are numbered SQL scripts applied in order, each in its own
 * transaction under an advisory lock, so running migrate twice, or from
 * two processes at once, applies each version exactly once.
 */
#ifndef RINGMAIL_DB_H
#define RINGMAIL_DB_H

#include <stddef.h>

#include "campaign/pq.h"

/* A recipient's state as people read it, an SQL expression on recipient
 * alias q (a literal string of the alias): a fresh row (queued with no
 * next attempt time, schema 8) at or below its campaign's sweep is held by
 * a node's claim, `claimed`, though its row still says queued (a claim by
 * range writes no recipient row: campaign/loader_claims.c). */
#define DB_STATE_SQL(q)                                                                            \
    "(CASE WHEN " q ".state = 'queued' AND " q ".next_attempt_at IS NULL AND " q ".id <= "         \
    "coalesce((SELECT w.upto FROM ringmail.sweep w WHERE w.campaign_id = " q ".campaign_id), 0)"   \
    " THEN 'claimed' ELSE " q ".state END)"

/* Connect (loading libpq first); NULL with the reason in err. */
PGconn *db_connect(const char *url, char *err, size_t errlen);
/* db_connect, then the schema checked: NULL with "... run `ringmail db migrate
 * --db URL` first" in err when it is missing or older than this binary's. */
PGconn *db_connect_current(const char *url, char *err, size_t errlen);
/* Strip the newline and spaces libpq leaves at the end of its messages,
 * and make a message of several lines one line (logs stay one line each). */
void db_trim(char *msg);
/* R if its status is WANT; else NULL, R freed and the server's (or the
 * connection's) message, one line, in err. */
PGresult *db_checked(PGconn *c, PGresult *r, ExecStatusType want, char *err, size_t errlen);
/* Run sql (no result rows wanted); 0, or -1 with the server's message in err. */
int db_exec(PGconn *c, const char *sql, char *err, size_t errlen);
/* Apply every missing migration up to version to (0: the latest); *applied
 * (may be NULL) counts them. */
int db_migrate(PGconn *c, int to, int *applied, char *err, size_t errlen);
/* The highest applied version, 0 for none, -1 on error. */
int db_schema_version(PGconn *c);
/* The latest version this binary knows. */
int db_schema_latest(void);
/* `ringmail db migrate --db URL` */
int db_main(int argc, char **argv);

#endif
