/*
 * dane - DANE for SMTP (RFC 7672) as the pool applies it
 *
 * SYNOPSIS
 *     #include "pool/dane.h"
 *
 *     pool_dane_verdict(mx_secure, addr_secure, &tlsa_result, text, sizeof text);
 *
 * DESCRIPTION
 *     DANE is decided per MX host, before any connection, and wins over
 *     MTA-STS and the configured policy (RFC 8461 2). It applies only with a
 *     trusted validating resolver ([global] dnssec_resolver), to MX-routed
 *     destinations (never a route or the relay, never with
 *     pool_options.dest_policy_off) of an ISP that did not say `dane = off`:
 *
 *       MX answer insecure, or the host's addresses insecure -> no DANE
 *       TLSA of _PORT._tcp.MXHOST (PORT the port connected to, 25 unless
 *       --mx-port) secure with a usable record -> DANE: TLS mandatory, the
 *           server authenticated by the TLSA set alone (engine/dane.h)
 *       secure, records but none usable -> TLS mandatory, unauthenticated
 *       secure NXDOMAIN / NODATA, or insecure -> no DANE
 *       SERVFAIL (bogus) or timeout -> that host is not used; when no host
 *           is left the destination defers: dane_tlsa_tempfail, dnssec-invalid
 *
 *     Every attempt under DANE records tls_policy "dane", mode "enforce" and
 *     the set's id (16 hex digits of the SHA-256 of its records' text, one
 *     per line, sorted). A server that matches no record defers with reason
 *     dane_mismatch and RFC 8460 result tlsa-invalid ("none of the records
 *     in the RRset were found to be valid"); STARTTLS missing defers with
 *     tls_not_offered, starttls-not-supported. Never plaintext.
 *
 *     The pool's hooks (dest.c, conn.c) are in deliver_int.h; this header is
 *     for callers outside the pool (`ringmail resolve`).
 */
#ifndef RINGMAIL_POOL_DANE_H
#define RINGMAIL_POOL_DANE_H

#include <stddef.h>

#include "pool/dns.h"

/* What DANE makes of an MX host, in one line for an operator, into out:
 * mx_secure and addr_secure are the `secure` flags of the MX and the
 * host's address results, tlsa the host's dns_resolve_tlsa result (NULL
 * when it was not looked up). Returns the verdict's short name: "dane",
 * "dane-unusable" (TLS mandatory, unauthenticated), "insecure" (no DANE:
 * falls back), "none" (no TLSA records) or "tempfail" (deferred). */
const char *pool_dane_verdict(int mx_secure, int addr_secure, const struct dns_tlsa_result *tlsa,
                              char *out, size_t outlen);

/* What pool_dane_probe found for one MX host. */
struct pool_dane_probe_result {
    const char *host;
    int addr_secure;                    /* the host's address answer was secure */
    const struct dns_tlsa_result *tlsa; /* NULL when not looked up */
    const char *verdict;                /* pool_dane_verdict's, or "off" */
    const char *text;                   /* its line */
};
typedef void (*pool_dane_probe_cb)(void *user, const struct pool_dane_probe_result *r);

/* Find out what DANE makes of MX host host (port: the TLSA name's, 25) on
 * d, for `ringmail resolve`: without dns_set_dnssec "off" ("DANE: off (no
 * dnssec_resolver)"); with an insecure MX answer (mx_secure 0) no lookup;
 * else the host's addresses, then its TLSA records, as the pool does.
 * Exactly one callback, possibly before this returns. */
void pool_dane_probe(struct dns *d, const char *host, unsigned port, int mx_secure,
                     pool_dane_probe_cb cb, void *user);

/* The set's id (16 hex digits) and its text (records one per line,
 * sorted, "3 1 1 HEX") into id (17 bytes at least) and text. */
void pool_dane_set_id(const struct dane_tlsa *recs, size_t n, char *id, size_t idlen, char *text,
                      size_t textlen);

#endif
