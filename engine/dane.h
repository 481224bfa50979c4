/*
 * dane - TLSA records matched against a server's certificate chain (RFC
 * 7672, DANE for SMTP)
 *
 * SYNOPSIS
 *     #include "engine/dane.h"
 *
 *     if (dane_usable(recs, n))
 *         rc = dane_match(recs, n, ders, lens, nchain, "mx.example", why, sizeof why);
 *
 * DESCRIPTION
 *     Only what RFC 7672 lets an SMTP client use: certificate usages
 *     DANE-TA(2) and DANE-EE(3), selectors Cert(0) and SPKI(1), matching
 *     types Full(0), SHA2-256(1) and SHA2-512(2). PKIX-TA(0) and PKIX-EE(1)
 *     records, unknown values and digests of the wrong length are unusable
 *     and ignored (RFC 7672 3.1.3); a set without any usable record is an
 *     unusable set (RFC 7672 2.2: TLS stays mandatory, unauthenticated).
 *
 *     DANE-EE(3) matches the leaf alone: no name, expiry or chain check
 *     (RFC 7672 3.1.1). DANE-TA(2) matches any certificate the server sent
 *     (RFC 7672 3.1.2 asks servers to send the trust anchor, even a
 *     self-signed root); the chain from the leaf up to that certificate is
 *     then verified with it as the only trust anchor, and the leaf must
 *     name the MX host (the TLSA base domain, RFC 7672 3.2.2), expiry
 *     included.
 *
 *     The chain is DER, leaf first, as the server sent it. No allocation
 *     outlives a call.
 *
 * DIAGNOSTICS
 *     dane_match's why: "DANE: no TLSA record matches the server's
 *     certificate (3 1 1 4f2a...)", "DANE: the server sent no certificate",
 *     "DANE: trust anchor 2 0 1 ... matched, but the chain does not verify:
 *     hostname mismatch".
 */
#ifndef RINGMAIL_DANE_H
#define RINGMAIL_DANE_H

#include <stddef.h>
#include <stdint.h>

#define DANE_USAGE_PKIX_TA 0
#define DANE_USAGE_PKIX_EE 1
#define DANE_USAGE_DANE_TA 2
#define DANE_USAGE_DANE_EE 3

/* One TLSA record (RFC 6698 2.1). data borrowed from whoever holds the set. */
struct dane_tlsa {
    uint8_t usage, selector, mtype;
    const uint8_t *data;
    size_t len;
};

enum dane_result {
    DANE_MATCHED = 0,   /* a usable record authenticated the server */
    DANE_NO_MATCH,      /* no usable record matches any certificate of the chain */
    DANE_CHAIN_INVALID, /* a DANE-TA record matched, the chain from it did not verify */
};

/* 1 when r is usable for SMTP (usage 2 or 3, selector 0 or 1, matching type
 * 0, 1 or 2 with the digest's length). */
int dane_tlsa_usable(const struct dane_tlsa *r);
/* How many of recs are usable. */
size_t dane_usable(const struct dane_tlsa *recs, size_t n);
/* "3 1 1 HEX" (presentation form, lower case) into out; truncated to fit. */
void dane_tlsa_text(const struct dane_tlsa *r, char *out, size_t outlen);

/* Authenticate the chain (ders[i] of lens[i] bytes, leaf first) with the
 * usable records of recs, for the MX host name host (DANE-TA name check).
 * On failure why says which and, for DANE-TA, verify_error (if not NULL)
 * gets the X.509 verify error (X509_V_ERR_*). */
enum dane_result dane_match(const struct dane_tlsa *recs, size_t n, const uint8_t *const *ders,
                            const size_t *lens, size_t nchain, const char *host, char *why,
                            size_t whylen, long *verify_error);

#endif
