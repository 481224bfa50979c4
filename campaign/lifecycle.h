/*
 * lifecycle - a campaign's status (ringmail.campaign.status), read and
 * changed in one place for `ringmail campaign` and `ringmail send`
 *
 * The states: draft (created), scheduled (start_at in the future: a send
 * waits for it), running (a send claims), paused (sends claim nothing and
 * start no transaction; in-flight ones finish), done (every recipient
 * final), cancelled (never sends again). Every change sets status_at to
 * now() and status_reason ("paused by operator", "all 5000 recipients
 * final: 4990 sent, 10 bounced").
 *
 * A recipient is final unless queued, claimed or deferred (an ambiguous
 * one waits for an operator, not for a send). A campaign whose recipients
 * are all final is done whatever its row still says (a send stopped before
 * it saw the last result): list and show say so (LIFE_EFFECTIVE_SQL), a
 * send refuses to start it and marks it (life_finish). One with recipients
 * pending again is running, and a send marks it so.
 *
 * Diagnostics: functions return -1 with PostgreSQL's message in err.
 */
#ifndef RINGMAIL_LIFECYCLE_H
#define RINGMAIL_LIFECYCLE_H

#include <stddef.h>

#include "campaign/db.h"

/* The recipient states a campaign still waits for. */
#define LIFE_PENDING_SQL "('queued', 'claimed', 'deferred')"

/* The status to show for a campaign row with status column st, total
 * recipients and pending (not final) ones: done once every one is final;
 * a done row with recipients pending again (a node's recovery queued
 * some, more were imported) is running. */
#define LIFE_EFFECTIVE_SQL(st, total, pending)                                                     \
    "CASE WHEN " st " = 'cancelled' THEN " st " WHEN " total " > 0 AND " pending " = 0"            \
    " THEN 'done' WHEN " st " = 'done' THEN 'running' ELSE " st " END"

struct life_status {
    char status[16];    /* the effective status (done when every recipient is final) */
    char stored[16];    /* as the row says */
    char reason[320];   /* status_reason, "" when none */
    char at[40];        /* status_at, "2026-12-06 14:00:00 UTC" */
    char start_at[40];  /* "" when not scheduled */
    double start_in_s;  /* start_at - now(); <= 0 when due or none */
    long long total;    /* recipients */
    long long pending;  /* queued, claimed or deferred */
    long long claimed;  /* of which claimed */
    char summary[1024]; /* "4990 sent, 10 bounced" (every state with a count, in order) */
    long long fresh;    /* queued, never claimed: above the campaign's sweep */
    long long swept;    /* the sweep's running total then (ringmail.sweep.swept) */
};

/* life_read - campaign id's status and counts: 1, 0 when there is no such
 * campaign, -1 + err */
int life_read(PGconn *c, const char *id, struct life_status *out, char *err, size_t errlen);
/* life_set - status to `to` with reason, only from one of the states in
 * from (a SQL array literal, "{running,paused}"): 1 changed, 0 not in one
 * of them, -1 + err */
int life_set(PGconn *c, const char *id, const char *from, const char *to, const char *reason,
             char *err, size_t errlen);
/* life_finish - done, with "all N recipients final: ..." as its reason,
 * when every recipient is final and it is not cancelled (a done one gets
 * its reason counted again, its status_at kept: a restart's recovery may
 * have settled ambiguous ones): 1 marked, 0 not (why into reason when
 * marked), -1 + err */
int life_finish(PGconn *c, const char *id, char *reason, size_t reasonlen, char *err,
                size_t errlen);
/* life_duration - "4m 10s", "2h 03m", "12s" into buf */
void life_duration(double s, char *buf, size_t n);

#endif
