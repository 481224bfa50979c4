/*
 * sts_dest - MTA-STS in the delivery pool (private to pool/; see
 * pool/sts_dest.c for the whole story)
 *
 * dest.c, conn.c, settle.c and deliver.c call these, one line each, so the
 * MTA-STS logic stays in one file.
 */
#ifndef RINGMAIL_STS_DEST_H
#define RINGMAIL_STS_DEST_H

#include "pool/deliver_int.h"

/* pool_sts_begin - d (MX routed) is being resolved: its _mta-sts TXT too */
void pool_sts_begin(struct pool *p, struct pool_dest *d);
/* pool_sts_ready - d's exchangers are known: 1 go on (targets filtered by an
 * enforce policy, d->tlsp set); 0 d waits for its policy, or failed its queue */
int pool_sts_ready(struct pool *p, struct pool_dest *d);
/* pool_sts_conn - c is about to open: under MTA-STS its TLS policy and tlsp */
void pool_sts_conn(struct pool *p, struct pool_conn *c);
/* pool_sts_session_failed - c failed before a transaction for reason (text: the detail) */
void pool_sts_session_failed(struct pool_conn *c, const char *reason, const char *text);
/* pool_sts_reason - reason as recorded under t ("mta_sts_" + a TLS reason under enforce) */
const char *pool_sts_reason(const struct tlsp *t, const char *reason);
/* pool_sts_stop - the pool stops: no more fetches are waited for */
void pool_sts_stop(struct pool *p);
/* pool_sts_free - the cache and the fetcher thread */
void pool_sts_free(struct pool *p);

#endif
