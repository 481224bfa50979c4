/*
 * tlsrpt_send - `ringmail tlsrpt --send`: each (day, domain, rua) claimed
 * in ringmail.tlsrpt_report, sent, and its outcome recorded. See tlsrpt.h.
 *
 * The row is inserted (outcome NULL) and committed before the report goes
 * out, and gets 'sent' or 'failed' after: a crash in between leaves a row
 * without an outcome, which a rerun neither sends again on its own nor
 * forgets (it says so; --resend-unfinished sends it). Two runs at once
 * cannot both claim a row: the INSERT and the UPDATE of a failed row are
 * each one statement.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "campaign/db.h"
#include "campaign/tlsrpt_int.h"
#include "engine/https.h"

struct tr_job {
    struct tlsrpt_domain *d;
    size_t k;         /* its rua in d->rec */
    char addr[320];   /* mailto: the address; "" for https: */
    buf_t mail;       /* owned: the message (mailto:) */
    char detail[700]; /* what became of it */
    int sent;
    int unknown; /* the body went out and no reply came: outcome left NULL (unfinished) */
};

/* ---------------------------------------------------------------- claims */

/* Claim (day, domain, rua) for sending: 1 claimed, 0 not to be sent now
 * (why in d->result[k]), -1 database error (said). */
static int tr_claim(struct tlsrpt_cmd *c, struct tlsrpt_domain *d, size_t k)
{
    const char *p[] = {c->day, d->name, d->rec.rua[k], d->report_id,
                       c->resend_unfinished ? "t" : "f"};
    char err[1024];
    PGresult *r = db_checked(
        c->db,
        pq.PQexecParams(c->db,
                        "INSERT INTO ringmail.tlsrpt_report (day, domain, rua, report_id)"
                        " VALUES ($1::date, $2, $3, $4) ON CONFLICT (day, domain, rua) DO NOTHING"
                        " RETURNING id",
                        4, NULL, p, NULL, NULL, 0),
        PGRES_TUPLES_OK, err, sizeof err);
    int claimed = r && pq.PQntuples(r) == 1;
    pq.PQclear(r);
    if (r && !claimed) { /* sent before, failed, or unfinished */
        r = db_checked(c->db,
                       pq.PQexecParams(c->db,
                                       "UPDATE ringmail.tlsrpt_report SET at = now(),"
                                       " outcome = NULL, detail = NULL, report_id = $4"
                                       " WHERE day = $1::date AND domain = $2 AND rua = $3"
                                       " AND (outcome = 'failed' OR ($5::boolean AND outcome"
                                       " IS NULL)) RETURNING id",
                                       5, NULL, p, NULL, NULL, 0),
                       PGRES_TUPLES_OK, err, sizeof err);
        claimed = r && pq.PQntuples(r) == 1;
        pq.PQclear(r);
    }
    if (r && !claimed) {
        r = db_checked(c->db,
                       pq.PQexecParams(c->db,
                                       "SELECT coalesce(outcome, ''), to_char(coalesce(sent_at, at)"
                                       " AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
                                       " FROM ringmail.tlsrpt_report WHERE day = $1::date"
                                       " AND domain = $2 AND rua = $3",
                                       3, NULL, p, NULL, NULL, 0),
                       PGRES_TUPLES_OK, err, sizeof err);
        if (r && pq.PQntuples(r) == 1) {
            const char *outcome = pq.PQgetvalue(r, 0, 0), *at = pq.PQgetvalue(r, 0, 1);
            if (strcmp(outcome, "sent") == 0) {
                snprintf(d->result[k], sizeof d->result[k], "already sent at %s UTC (not again)",
                         at);
            } else {
                snprintf(d->result[k], sizeof d->result[k],
                         "unfinished: a run started sending it at %s UTC and recorded no "
                         "outcome (it may have arrived; --resend-unfinished sends it again)",
                         at);
            }
        }
        pq.PQclear(r);
    }
    if (!r) {
        fprintf(stderr, "%s: %s: %s: recording the report: %s\n", TLSRPT_WHO, d->name,
                d->rec.rua[k], err);
        return -1;
    }
    return claimed;
}

/* The job's outcome in its row; -1 database error (said). */
static int tr_record(struct tlsrpt_cmd *c, const struct tr_job *j)
{
    const char *p[] = {c->day, j->d->name, j->d->rec.rua[j->k],
                       j->sent      ? "sent"
                       : j->unknown ? NULL
                                    : "failed",
                       j->detail};
    char err[1024];
    PGresult *r = db_checked(c->db,
                             pq.PQexecParams(c->db,
                                             "UPDATE ringmail.tlsrpt_report SET outcome = $4,"
                                             " detail = $5, sent_at = CASE WHEN $4 = 'sent'"
                                             " THEN now() END WHERE day = $1::date"
                                             " AND domain = $2 AND rua = $3",
                                             5, NULL, p, NULL, NULL, 0),
                             PGRES_COMMAND_OK, err, sizeof err);
    pq.PQclear(r);
    if (!r) {
        fprintf(stderr, "%s: %s: %s: the outcome (%s) was not recorded: %s\n", TLSRPT_WHO,
                j->d->name, j->d->rec.rua[j->k], j->sent ? "sent" : "failed", err);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- mailto: */

static int tr_hex(char ch)
{
    return ch >= '0' && ch <= '9'   ? ch - '0'
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                    : -1;
}

/* The address of a mailto: URI (RFC 6068: percent-decoded, up to '?')
 * into out; NULL, or why it is not one. */
static const char *tr_mailto(const char *uri, char *out, size_t cap)
{
    const char *p = uri + 7;
    size_t n = 0;
    for (; *p && *p != '?' && n + 1 < cap; p++) {
        if (*p == '%' && tr_hex(p[1]) >= 0 && tr_hex(p[2]) >= 0) {
            out[n++] = (char)(tr_hex(p[1]) * 16 + tr_hex(p[2]));
            p += 2;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    if (memchr(out, '\0', n) || strpbrk(out, "\r\n<>, ")) {
        return "not a mail address";
    }
    return send_address_problem(out);
}

/* The mailto: jobs through the pool, one attempt each. */
static void tr_send_mail(struct tlsrpt_cmd *c, struct tr_job *jobs, size_t n)
{
    struct send_prepared *msgs = calloc(n ? n : 1, sizeof *msgs);
    struct tr_job **of = calloc(n ? n : 1, sizeof *of);
    if (!msgs || !of) {
        abort();
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (jobs[i].addr[0]) {
            msgs[m] = (struct send_prepared){.rcpt = jobs[i].addr, .body = &jobs[i].mail};
            of[m++] = &jobs[i];
        }
    }
    if (m > 0) {
        struct send_options so = c->so;
        struct send_options dflt;
        send_options_init(&dflt);
        so.from = c->so.from != dflt.from ? c->so.from : c->contact; /* --from, else the contact */
        so.dest_policy_off = 1;                                      /* RFC 8689 TLS-Required: No */
        int run = send_prepared_run(&so, msgs, m, 0);
        fflush(stderr);
        for (size_t i = 0; i < m; i++) {
            struct send_prepared *p = &msgs[i];
            struct tr_job *j = of[i];
            j->sent = run != 2 && p->done && p->outcome == SMTP_OUTCOME_ACCEPTED;
            /* ambiguous: the server may have it; a rerun must not send it on its own */
            j->unknown = run != 2 && p->done && strcmp(p->word, "ambiguous") == 0;
            if (run == 2 || !p->done) {
                snprintf(j->detail, sizeof j->detail, "not sent: %s",
                         run == 2 ? "the delivery could not start (said above)"
                                  : "the run was stopped");
            } else if (p->code) {
                snprintf(j->detail, sizeof j->detail, "%s: %d %s", p->word, p->code, p->reply);
            } else {
                snprintf(j->detail, sizeof j->detail, "%s: %s", p->word, p->reason);
            }
        }
    }
    free(of);
    free(msgs);
}

/* ---------------------------------------------------------------- https: */

static void tr_send_https(struct tlsrpt_cmd *c, struct tr_job *j)
{
    struct tlsrpt_domain *d = j->d;
    char err[512];
    struct https_request req = {
        .url = d->rec.rua[j->k],
        .method = "POST",
        .content_type = "application/tlsrpt+gzip",
        .body = buf_data(&d->gz),
        .body_len = buf_len(&d->gz),
        .ca_file = c->so.ca_file,
        .timeout_ms = c->https_timeout_ms,
    };
    struct https_response resp;
    memset(&resp, 0, sizeof resp);
    if (https_request(&req, &resp, err, sizeof err) < 0) {
        snprintf(j->detail, sizeof j->detail, "not sent: %s", err);
        return;
    }
    j->sent = resp.status >= 200 && resp.status < 300;
    snprintf(j->detail, sizeof j->detail, "%s: HTTP %d", j->sent ? "accepted" : "refused",
             resp.status);
    https_response_free(&resp);
}

/* ---------------------------------------------------------------- all */

/* j's message (RFC 8460 5.3), DKIM-signed with --dkim-key; 0, or -1
 * when it cannot be signed (said in j->detail). */
static int tr_mail(struct tlsrpt_cmd *c, const struct tlsrpt_meta *m, struct tr_job *j)
{
    buf_t msg = BUF_INIT;
    tlsrpt_mail(m, c->contact, j->addr, j->d->file, buf_data(&j->d->gz), buf_len(&j->d->gz), &msg);
    char err[300];
    if (c->signer && dkim_sign(c->signer, buf_data(&msg), buf_len(&msg), time(NULL), &j->mail, err,
                               sizeof err) < 0) {
        snprintf(j->detail, sizeof j->detail, "not sent: the DKIM signature failed: %s", err);
        buf_free(&msg);
        return -1;
    }
    buf_append(&j->mail, buf_data(&msg), buf_len(&msg)); /* after its DKIM-Signature field */
    buf_free(&msg);
    return 0;
}

/* Claim each rua of d and make its job; -1 database error. */
static int tr_jobs_of(struct tlsrpt_cmd *c, struct tlsrpt_domain *d, struct tr_job *jobs, size_t *n,
                      int *rc)
{
    for (size_t k = 0; k < d->rec.nrua; k++) {
        const char *uri = d->rec.rua[k], *bad = NULL;
        struct tr_job *j = &jobs[*n];
        *j = (struct tr_job){.d = d, .k = k};
        buf_init(&j->mail);
        int mail = strncasecmp(uri, "mailto:", 7) == 0;
        if (mail && (bad = tr_mailto(uri, j->addr, sizeof j->addr)) != NULL) {
            snprintf(d->result[k], sizeof d->result[k], "not sent: %s: %s", uri, bad);
            *rc = 1;
            continue;
        }
        struct tlsrpt_meta m = {
            .org = c->org,
            .contact = c->contact,
            .submitter = c->submitter,
            .domain = d->name,
            .report_id = d->report_id,
            .begin = c->begin,
        };
        /* the message first: one that cannot be made is never claimed */
        if (mail && tr_mail(c, &m, j) < 0) {
            snprintf(d->result[k], sizeof d->result[k], "%s", j->detail);
            buf_free(&j->mail);
            *rc = 1;
            continue;
        }
        int claimed = tr_claim(c, d, k);
        if (claimed <= 0) {
            buf_free(&j->mail);
            if (claimed < 0) {
                return -1;
            }
            *rc = strncmp(d->result[k], "already", 7) == 0 ? *rc : 1;
            continue;
        }
        (*n)++;
    }
    return 0;
}

int tlsrpt_send_all(struct tlsrpt_cmd *c)
{
    size_t cap = 0, n = 0;
    for (size_t i = 0; i < c->ndomains; i++) {
        cap += c->domains[i].has_record ? c->domains[i].rec.nrua : 0;
    }
    struct tr_job *jobs = calloc(cap ? cap : 1, sizeof *jobs);
    if (!jobs) {
        abort();
    }
    int rc = 0;
    for (size_t i = 0; i < c->ndomains && rc != 2; i++) {
        if (c->domains[i].has_record && tr_jobs_of(c, &c->domains[i], jobs, &n, &rc) < 0) {
            rc = 2;
        }
    }
    size_t mails = 0;
    for (size_t i = 0; i < n; i++) {
        mails += jobs[i].addr[0] != '\0';
    }
    if (rc != 2 && mails > 0 && !c->signer) {
        fprintf(stderr,
                "%s: warning: the mailto: reports are not DKIM-signed (--dkim-key FILE "
                "--dkim-selector S): RFC 8460 5.3 has receivers ignore unsigned reports\n",
                TLSRPT_WHO);
    }
    if (rc != 2) {
        tr_send_mail(c, jobs, n);
        for (size_t i = 0; i < n; i++) {
            if (!jobs[i].addr[0]) {
                tr_send_https(c, &jobs[i]);
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct tr_job *j = &jobs[i];
        if (rc != 2) {
            snprintf(j->d->result[j->k], sizeof j->d->result[j->k], "%s%s", j->sent ? "sent: " : "",
                     j->detail);
            if (tr_record(c, j) < 0) {
                rc = 2;
            } else if (!j->sent) {
                rc = rc ? rc : 1;
            }
        }
        buf_free(&j->mail);
    }
    free(jobs);
    return rc;
}
