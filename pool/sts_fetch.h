/*
 * sts_fetch - fetching MTA-STS policies off the delivery loop
 *
 * A policy fetch is a blocking HTTPS request (engine/https.h): it runs on
 * a thread of the pool's own, one job at a time, and the loop hears of
 * each finished job through an eventfd polled on its ring (as the loader
 * and the render workers talk to it). The loop never waits for one.
 *
 * A job asks for DOMAIN's policy whose TXT id is txt_id. sts_fetch_run is
 * the fetch itself (RFC 8461 3.3): GET https://mta-sts.DOMAIN/.well-known/
 * mta-sts.txt, the certificate verified for that host against the trust
 * store (--ca, else the system bundle), no redirect followed, 200 and
 * text/plain only, at most 64 KiB, one timeout for all of it; then the
 * text parsed (pool/mta_sts.h). A shared store (pool_options.sts_shared,
 * PostgreSQL in campaign mode) may answer instead, calling sts_fetch_run
 * itself when it has nothing fresh.
 *
 * Diagnostics (job->error, job->error_type, the RFC 8460 result type):
 *   "policy fetch: HTTP 404" / "HTTP 301 (redirect to URL, not followed)" /
 *   "content type \"text/html\", not text/plain" / the client's reason
 *   (timeout, connect, oversize)                   sts-policy-fetch-error
 *   "policy fetch: TLS with HOST: certificate verify failed: ..."
 *                                                  sts-webpki-invalid
 *   "policy invalid: bad mode \"strict\"" ...      sts-policy-invalid
 */
#ifndef RINGMAIL_STS_FETCH_H
#define RINGMAIL_STS_FETCH_H

#include <stdint.h>
#include <sys/socket.h>

#include "pool/mta_sts.h"

#define STS_FETCHERS 4 /* fetcher threads of a pool */

struct sts_job {
    /* in */
    char domain[256];
    char txt_id[MTA_STS_ID_MAX]; /* the id the TXT record names now */
    const char *ca_file;         /* NULL: the system bundle */
    unsigned port;               /* of the policy host: 443 (tests change it) */
    unsigned timeout_ms;
    const char *connect_to; /* "ADDR:PORT" to connect to (the pool's lookup); NULL: DNS */
    char connect_buf[80];   /* what connect_to points at when set by the pool */
    unsigned worker;        /* the fetcher thread running it, 0..STS_FETCHERS-1 (a shared
                             * store keeps one database connection per thread) */
    int cache_only;         /* no fetch: only the shared cache's unexpired policy, if any (the TXT
                             * record named no id: RFC 8461 5.1, a cached policy still applies) */
    /* out */
    int ok;                    /* a policy: fetched now or the last good one */
    int fetched;               /* this process fetched it over HTTPS (counted) */
    struct mta_sts_policy pol; /* when ok */
    char id[MTA_STS_ID_MAX];   /* the id it was fetched under (may be older than txt_id) */
    char *text;                /* owned (malloc): the policy as served, when ok */
    int64_t fetched_at;        /* unix seconds */
    int64_t expires_at;        /* fetched_at + max_age */
    char error[400];           /* the fetch that failed ("" when none) */
    const char *error_type;    /* its RFC 8460 result type, NULL when none */
    struct sts_job *next;      /* the fetcher's queues */
};

/* j (zeroed by the caller) asks for domain's policy under txt_id, from the
 * policy host at addr (its port ignored; NULL: getaddrinfo) on port (0:
 * 443), trusting ca_file (NULL: the system bundle), within timeout_ms. */
void sts_job_init(struct sts_job *j, const char *domain, const char *txt_id,
                  const struct sockaddr_storage *addr, unsigned port, const char *ca_file,
                  unsigned timeout_ms);

/* The fetch and parse, blocking (a thread's): 0 with j->ok, j->pol, j->text,
 * j->id = txt_id and the times; -1 with j->error and j->error_type. */
int sts_fetch_run(struct sts_job *j);

/* Free what j owns (its text), and j itself when heap is 1. */
void sts_job_free(struct sts_job *j, int heap);

#endif
