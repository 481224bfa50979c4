/*
 * tlspolicy - the destination TLS policy of a connection and its RFC 8460
 * result. See tlspolicy.h.
 */
#include <stdio.h>
#include <string.h>

#include "pool/tlspolicy.h"

const char *tlsp_type_name(enum tlsp_type t)
{
    switch (t) {
    case TLSP_MTA_STS:
        return "mta-sts";
    case TLSP_DANE:
        return "dane";
    case TLSP_CONFIG:
        break;
    }
    return "config";
}

void tlsp_config(struct tlsp *t, enum smtp_tls_policy policy)
{
    memset(t, 0, sizeof *t);
    t->type = TLSP_CONFIG;
    snprintf(t->mode, sizeof t->mode, "%s", smtp_tls_policy_name(policy));
    t->check_cert = policy == SMTP_TLS_VERIFY;
}

const char *tlsp_result(const struct tlsp *t, const char *reason, const struct tls_info *tls)
{
    if (t->fail[0]) {
        return t->fail;
    }
    if (reason && strcmp(reason, "tls_not_offered") == 0) {
        return t->type == TLSP_CONFIG && strcmp(t->mode, "required") != 0 &&
                       strcmp(t->mode, "verify") != 0
                   ? NULL
                   : "starttls-not-supported";
    }
    if (reason && strcmp(reason, "dane_mismatch") == 0) {
        return "tlsa-invalid"; /* RFC 8460 4.3.2.1: no record of the set was valid */
    }
    if (reason && strcmp(reason, "tls_handshake_failed") == 0) {
        return "validation-failure";
    }
    if (reason && strcmp(reason, "tls_verify_failed") == 0) {
        const char *r = tls ? tls_verify_result_type(tls->verify_result) : NULL;
        return r ? r : "validation-failure";
    }
    if (t->type == TLSP_MTA_STS && !tls && (!reason || strcmp(reason, "accepted") == 0)) {
        /* testing over an opportunistic policy: delivered in plaintext */
        return "starttls-not-supported";
    }
    if (t->check_cert && tls) {
        return tls_verify_result_type(tls->verify_result);
    }
    return NULL;
}
