/*
 * check_dns - `ringmail check-dns`: are a sending domain's DKIM, SPF and
 * DMARC records published, and do they align with the From domain?
 *
 *   ringmail check-dns --from DOMAIN [--dkim-selector S] [--dkim-domain D]
 *                      [--dkim-key FILE] [--return-path DOMAIN]
 *                      [--resolver ADDR:PORT] [--config FILE] [--timeout-ms MS]
 *
 * Looks up, through the resolver ringmail sends with (pool/dns.h: --resolver,
 * else /etc/resolv.conf), the TXT records at S._domainkey.D (D: the From
 * domain unless --dkim-domain), at the return-path domain and the From
 * domain (SPF), and at _dmarc.FROM and its parents (DMARC, the nearest
 * record wins). The return path is --return-path, else [feedback]
 * return_path of --config, else the From domain (MAIL FROM is the From
 * address). Prints one line per check, "OK", "MISSING", "WARN" or "ERROR"
 * and what to publish or fix, then "Gmail and Yahoo bulk-sender
 * requirements: met" or "...: not met: REASON, REASON".
 *
 * Required (Gmail and Yahoo bulk-sender rules, 2024): a valid DKIM key
 * record (matching --dkim-key when given), exactly one SPF record at the
 * return-path domain not ending in +all, a DMARC record with p=
 * none/quarantine/reject, and the DKIM d= or the return path aligned with
 * the From domain (relaxed unless the DMARC record says adkim=s / aspf=s).
 * WARN lines are advice and fail nothing.
 *
 * A lookup that fails (SERVFAIL, REFUSED, timeout) is "could not be
 * checked" with the name, never "missing"; it fails the run.
 *
 * Exit status: 0 all required checks pass, 1 some do not (or could not be
 * checked), 2 bad options.
 *
 * Diagnostics: bad options are one line on stderr, "ringmail check-dns:
 * --from DOMAIN is required", "--from: 'X' is not a domain name (...)",
 * "--dkim-key and --dkim-domain need --dkim-selector S", "--dkim-key FILE:
 * cannot read a private key ...", "bad value for --timeout-ms", a config
 * error with its line, "unexpected argument 'X'" (exit 2). A failed lookup
 * is a report line: "ERROR   DMARC _dmarc.example.com: lookup failed
 * (timeout: the resolver did not answer): could not be checked".
 */
#ifndef RINGMAIL_CHECK_DNS_H
#define RINGMAIL_CHECK_DNS_H

#include <stddef.h>
#include <stdio.h>

#include "pool/dns.h"

int check_dns_main(int argc, char **argv);

/* What one TXT lookup found (check_dns_main fills them; unit tests by hand). */
struct check_dns_answer {
    char name[384];         /* SELECTOR._domainkey.DOMAIN fits */
    enum dns_status status; /* DNS_OK with n 0: the name has no TXT records */
    const char *const *records;
    size_t n;
    const char *error; /* lookup failure, when status is DNS_TEMPFAIL or DNS_BAD_NAME */
};

/* _dmarc.FROM and its parents down to two labels. */
#define CHECK_DNS_DMARC_MAX 8

struct check_dns_input {
    const char *from;             /* the From domain, A-label */
    const char *dkim_domain;      /* d= (the From domain unless --dkim-domain) */
    const char *selector;         /* NULL: DKIM not checked */
    const char *return_path;      /* the envelope domain SPF is checked on */
    const char *return_path_from; /* where it came from, for the lines */
    const char *key_file;         /* --dkim-key, or NULL */
    const char *key_record;       /* its "v=DKIM1; k=..; p=.." */
    /* dual signing: a second selector of the same d= (NULL: none), its key
     * file and record, checked the same way and required too */
    const char *selector2, *key_file2, *key_record2;
    const char *spf_hint; /* mechanisms for a suggested SPF record, or NULL */
    struct check_dns_answer dkim, dkim2;
    struct check_dns_answer spf_rp;   /* at return_path */
    struct check_dns_answer spf_from; /* at from, looked at when it is not return_path */
    struct check_dns_answer dmarc[CHECK_DNS_DMARC_MAX];
    size_t ndmarc;
};

/* One line per check and the requirements line to out. 0 when every
 * required check passed, else 1. */
int check_dns_report(const struct check_dns_input *in, FILE *out);

/* The value of tag in a DKIM/DMARC tag list ("v=DKIM1; k=rsa; p=..."),
 * whitespace around it removed, into val; 1 found, 0 not. Tag names are
 * matched without regard to case (RFC 6376 3.2 has them case-sensitive;
 * receivers are lenient, and so is this check); a value longer than vallen
 * is cut. */
int check_dns_tag(const char *rec, const char *tag, char *val, size_t vallen);

/* 1 when rec is an SPF record: "v=spf1" alone or before a space (case-insensitive). */
int check_dns_is_spf(const char *rec);

/* How an SPF record ends: "-all", "~all", "?all", "+all" (also a bare
 * "all"), "redirect=DOMAIN" or "" (neither). */
void check_dns_spf_ending(const char *rec, char *out, size_t outlen);

#endif
