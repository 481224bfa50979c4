/*
 * tlsrpt - `ringmail tlsrpt`: RFC 8460 TLS reports of one UTC day, built
 * from the delivery rows, written as files or sent to each domain's rua
 *
 *   ringmail tlsrpt --db URL --day YYYY-MM-DD [--send] [--out DIR]
 *                   [--org NAME] [--submitter DOMAIN] [--contact ADDR]
 *                   [--resend-unfinished] [--https-timeout-ms MS]
 *                   [send options: --config --resolver --ca --relay --tls
 *                    --mx-port --helo --timeout-ms ...]
 *
 * DESCRIPTION
 *     Every recipient domain with delivery rows on the day (UTC) is looked
 *     up at _smtp._tls.DOMAIN (TXT, through --resolver or the system's);
 *     a domain with exactly one "v=TLSRPTv1" record naming at least one
 *     mailto: or https: rua gets a report, the others none (said, counted).
 *     A lookup that fails is said as such, never as "no record".
 *
 *     A session is what RFC 8460 counts: a delivery row that was the
 *     first attempt on its connection (conn_first), or an attempt that
 *     failed its TLS policy before any connection was made (no peer, a
 *     tls_result such as dnssec-invalid). A session failed when its row
 *     has a tls_result. Rows without a tls_policy (no exchanger found) are
 *     no session.
 *
 *     The report (RFC 8460 4) has one policy per (tls_policy,
 *     tls_policy_id): "sts" (its text from tls_policy_text, split in
 *     lines, and its mx patterns as mx-host), "tlsa" (the records), or
 *     "no-policy-found" (the configured policy); per policy the session
 *     counts and failure-details by result type, MX, receiving IP and
 *     sending IP. It is gzipped (RFC 1952) and named
 *     SUBMITTER!DOMAIN!BEGIN!END.json.gz (RFC 8460 5.1).
 *
 *     Without --send the files go to --out (default "."); a table says
 *     per domain and rua the session counts and the file. With --send,
 *     mailto: reports are a multipart/report message (RFC 8460 5.3, with
 *     TLS-Required: No, RFC 8689) delivered through the pool `send` uses,
 *     with no MTA-STS or DANE (dest_policy_off), one attempt each; https:
 *     ones are POSTed as application/tlsrpt+gzip (engine/https.h, --ca).
 *
 *     Each (day, domain, rua) is sent once: its tlsrpt_report row is
 *     inserted (outcome NULL) before the report goes out and gets its
 *     outcome ('sent' or 'failed', and why) after; a mail whose body went
 *     out with no reply (ambiguous) keeps no outcome. A rerun skips the sent
 *     ones (said), retries the failed ones, and refuses to send again one
 *     whose earlier attempt has no outcome (a crash while it was out)
 *     unless --resend-unfinished.
 *
 * DIAGNOSTICS
 *     Exit 0: every report written or sent (or none due); 1: a lookup
 *     failed, a report could not be written or was not sent (each said,
 *     with why); 2: bad command line or a database error ("ringmail
 *     tlsrpt: --day '2026-13-01' is not a date (YYYY-MM-DD, UTC)",
 *     "ringmail tlsrpt: ... run `ringmail db migrate --db URL` first").
 */
#ifndef RINGMAIL_TLSRPT_H
#define RINGMAIL_TLSRPT_H

#include <stddef.h>
#include <stdint.h>

#include "engine/buf.h"

int tlsrpt_main(int argc, char **argv);

/* ---- the pure parts (campaign/tlsrpt_report.c), unit-tested ---- */

#define TLSRPT_RUA_MAX 8
#define TLSRPT_RUA_LEN 512

/* A domain's TLSRPT record (RFC 8460 3). */
struct tlsrpt_record {
    size_t nrua;
    char rua[TLSRPT_RUA_MAX][TLSRPT_RUA_LEN]; /* "mailto:..." or "https://..." */
};

/* The TXT records at _smtp._tls.DOMAIN: 1 and *out when exactly one starts
 * with "v=TLSRPTv1" and names at least one mailto: or https: rua (other
 * schemes are ignored); 0 and why ("no TLSRPTv1 record", "2 TLSRPTv1
 * records (RFC 8460 3: exactly one)", "no mailto: or https: rua") when
 * there is no usable record. */
int tlsrpt_record_parse(const char *const *recs, size_t n, struct tlsrpt_record *out, char *why,
                        size_t whylen);

/* Sessions counted from the delivery rows, one group per (policy,
 * result, MX, peer, source). Strings are borrowed; "" for none. */
struct tlsrpt_group {
    const char *policy_type; /* "sts", "tlsa", "no-policy-found" */
    const char *policy_id;   /* joins the policy's text; "" for no-policy-found */
    const char *policy_text; /* NULL: not known */
    const char *result;      /* RFC 8460 result type; "" for successful sessions */
    const char *mx;          /* receiving-mx-hostname */
    const char *peer;        /* "ip:port" or "[ip6]:port" */
    const char *source;      /* sending-mta-ip */
    unsigned long sessions;
};

struct tlsrpt_meta {
    const char *org;       /* organization-name */
    const char *contact;   /* contact-info */
    const char *submitter; /* the file name's submitter */
    const char *domain;    /* the policy domain */
    const char *report_id;
    int64_t begin; /* the day's first second (UTC); the range ends at begin + 86399 */
};

/* The report's JSON text (RFC 8460 4) of groups g[0..n) into out. */
void tlsrpt_json(const struct tlsrpt_meta *m, const struct tlsrpt_group *g, size_t n, buf_t *out);

/* data gzipped (RFC 1952) into out; -1 when zlib fails. */
int tlsrpt_gzip(const void *data, size_t len, buf_t *out);

/* "SUBMITTER!DOMAIN!BEGIN!END.json.gz" (RFC 8460 5.1) into out. */
void tlsrpt_file_name(const struct tlsrpt_meta *m, char *out, size_t cap);

/* The report id of (day, domain, submitter): stable across runs, unique
 * per day and domain: "20261206.DOMAIN@SUBMITTER". */
void tlsrpt_report_id(const char *day, const char *domain, const char *submitter, char *out,
                      size_t cap);

/* The mailto: message (RFC 8460 5.3) of a gzipped report into out. */
void tlsrpt_mail(const struct tlsrpt_meta *m, const char *from, const char *to,
                 const char *file_name, const void *gz, size_t gzlen, buf_t *out);

#endif
