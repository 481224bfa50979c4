/*
 * tlsrpt_int - what the files of `ringmail tlsrpt` share; private to them.
 *
 *   tlsrpt.c         tlsrpt_main: the command line, the day's sessions from
 *                    the delivery rows, the _smtp._tls lookups, the
 *                    reports, the files and the table
 *   tlsrpt_send.c    --send: each (day, domain, rua) claimed in
 *                    tlsrpt_report, sent (mailto: through the pool,
 *                    https: by POST) and its outcome recorded
 *   tlsrpt_report.c  the pure parts (tlsrpt.h)
 */
#ifndef RINGMAIL_TLSRPT_INT_H
#define RINGMAIL_TLSRPT_INT_H

#include <stdint.h>

#include "campaign/dkim.h"
#include "campaign/pq.h"
#include "campaign/send_int.h"
#include "campaign/tlsrpt.h"
#include "pool/dns.h"

#define TLSRPT_WHO "ringmail tlsrpt"

/* One recipient domain of the day. */
struct tlsrpt_domain {
    char name[256];         /* A-label */
    enum dns_status status; /* of the _smtp._tls lookup */
    char error[256];        /* the lookup's failure, when status is not DNS_OK/NXDOMAIN */
    int has_record;         /* a usable TLSRPT record: rec */
    struct tlsrpt_record rec;
    char why[128]; /* no usable record: why */
    size_t g0, ng; /* its groups in tlsrpt_cmd.groups */
    unsigned long ok, failed;
    char report_id[384];
    char file[640]; /* the report's file name (RFC 8460 5.1) */
    buf_t gz;       /* owned: the gzipped report */
    int written;    /* the file is in --out */
    /* --send: per rua, what became of it ("sent", "failed: ...", "skipped: ...") */
    char result[TLSRPT_RUA_MAX][800];
};

struct tlsrpt_cmd {
    const char *url, *day, *out, *org, *submitter, *contact;
    const char *dkim_key, *dkim_selector, *dkim_domain; /* --dkim-*: sign mailto: reports */
    struct dkim_signer *signer;                         /* owned; NULL without --dkim-key */
    int send, resend_unfinished, help, out_given;
    unsigned https_timeout_ms;
    struct send_options so; /* --send: the pool's options (--config, --resolver, --ca ...) */
    char submitter_buf[256], contact_buf[320];
    int64_t begin; /* the day's first second, UTC */
    PGconn *db;
    PGresult *rows;              /* owned: the groups' strings point into it */
    struct tlsrpt_group *groups; /* owned */
    size_t ngroups;
    struct tlsrpt_domain *domains; /* owned */
    size_t ndomains;
};

/* tlsrpt_send.c */
/* tlsrpt_send_all - every rua of every domain with a report: claimed,
 * sent, recorded; each one's result in d->result. 0 all sent (or skipped
 * as sent before), 1 some not, 2 nothing could go out (said). */
int tlsrpt_send_all(struct tlsrpt_cmd *c);

#endif
