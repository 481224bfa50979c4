/*
 * tlspolicy - the destination TLS policy a connection is opened under, and
 * what an attempt records of it
 *
 * Order per destination (DESIGN.md, "Destination TLS policy"): DANE (a
 * usable TLSA set for the MX host, from a secure answer of the trusted
 * validating resolver) > MTA-STS (the recipient domain's policy in
 * `enforce` or `testing`) > the configured policy ([isp] tls, or --tls).
 * A static route and the relay always use the configured policy: the
 * operator named the server.
 *
 * Every attempt records the policy that applied (struct tlsp: type, mode,
 * policy id) and, when the policy was not met, the RFC 8460 result type
 * (tlsp_result). Under MTA-STS `testing` the attempt goes ahead as
 * configured and the result type says what would have failed.
 */
#ifndef RINGMAIL_TLSPOLICY_H
#define RINGMAIL_TLSPOLICY_H

#include "engine/smtp_client.h"
#include "engine/tls.h"

enum tlsp_type {
    TLSP_CONFIG = 0, /* the configured policy: required, verify, opportunistic, none */
    TLSP_MTA_STS,    /* RFC 8461 */
    TLSP_DANE,       /* RFC 7672 */
};

#define TLSP_MODE_MAX 16
#define TLSP_ID_MAX 72
#define TLSP_RESULT_MAX 32

/* The policy one connection (or, before any connection, one destination)
 * is under. */
struct tlsp {
    enum tlsp_type type;
    char mode[TLSP_MODE_MAX];    /* "enforce", "testing", or the configured policy's name */
    char policy_id[TLSP_ID_MAX]; /* MTA-STS id, or the TLSA set's hash; "" for config */
    /* The certificate must verify (chain and MX host name; DANE: the TLSA
     * set) for the policy to be met: config verify, MTA-STS enforce and
     * testing (testing only records), DANE. */
    int check_cert;
    /* A failure decided before any connection (a TLSA lookup that failed,
     * the MX not in an MTA-STS policy under testing ...): its RFC 8460
     * result type, "" when none. */
    char fail[TLSP_RESULT_MAX];
};

/* "dane", "mta-sts" or "config" (delivery.tls_policy) */
const char *tlsp_type_name(enum tlsp_type t);

/* t as the configured policy (type config, mode its name). */
void tlsp_config(struct tlsp *t, enum smtp_tls_policy policy);

/* The RFC 8460 result type of an attempt under t that ended with reason
 * (smtp_client's: "tls_not_offered", "tls_verify_failed" ...; NULL or
 * "accepted" when the session got through) over TLS facts tls (NULL: no
 * TLS), or NULL when the policy was met. Under a policy that checks the
 * certificate, a verify error is a result even when the attempt went on
 * (testing, or a config policy that only records). */
const char *tlsp_result(const struct tlsp *t, const char *reason, const struct tls_info *tls);

#endif
