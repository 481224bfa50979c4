/*
 * dane - TLSA records matched against a certificate chain. See dane.h.
 *
 * BoringSSL has no DANE API (OpenSSL's SSL_dane_* are not there): the
 * selector and matching type are applied here with its X.509 parser and
 * hashes, and a DANE-TA chain is checked by X509_verify_cert against a
 * store that holds the matched certificate alone (a partial chain).
 */
#include "dane.h"

#include <openssl/base.h>
#ifndef OPENSSL_IS_BORINGSSL
#error "ringmail needs BoringSSL headers: put -I/usr/include/android before the system include path"
#endif

#include <openssl/mem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

int dane_tlsa_usable(const struct dane_tlsa *r)
{
    if (r->usage != DANE_USAGE_DANE_TA && r->usage != DANE_USAGE_DANE_EE) {
        return 0; /* PKIX-TA(0), PKIX-EE(1): not for SMTP (RFC 7672 3.1.3) */
    }
    if (r->selector > 1 || !r->data) {
        return 0;
    }
    switch (r->mtype) {
    case 0:
        return r->len > 0;
    case 1:
        return r->len == SHA256_DIGEST_LENGTH;
    case 2:
        return r->len == SHA512_DIGEST_LENGTH;
    default:
        return 0;
    }
}

size_t dane_usable(const struct dane_tlsa *recs, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        k += (size_t)dane_tlsa_usable(&recs[i]);
    }
    return k;
}

void dane_tlsa_text(const struct dane_tlsa *r, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    if (outlen == 0) {
        return;
    }
    int n = snprintf(out, outlen, "%u %u %u ", r->usage, r->selector, r->mtype);
    size_t at = n > 0 && (size_t)n < outlen ? (size_t)n : outlen - 1;
    for (size_t i = 0; i < r->len && at + 2 < outlen; i++) {
        out[at++] = hex[r->data[i] >> 4];
        out[at++] = hex[r->data[i] & 15];
    }
    out[at] = '\0';
}

/* The bytes r's selector picks from x (the whole DER, or the SPKI's) as a
 * new allocation (OPENSSL_free), with *len; NULL when x has none. */
static uint8_t *dane_selected(const struct dane_tlsa *r, X509 *x, const uint8_t *der, size_t derlen,
                              size_t *len)
{
    uint8_t *out = NULL;
    if (r->selector == 0) {
        out = OPENSSL_malloc(derlen ? derlen : 1);
        if (out) {
            memcpy(out, der, derlen);
            *len = derlen;
        }
        return out;
    }
    int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &out);
    if (n <= 0) {
        return NULL;
    }
    *len = (size_t)n;
    return out;
}

/* 1 when r matches the certificate x (DER der). */
static int dane_cert_matches(const struct dane_tlsa *r, X509 *x, const uint8_t *der, size_t derlen)
{
    size_t len = 0;
    uint8_t *sel = dane_selected(r, x, der, derlen, &len);
    if (!sel) {
        return 0;
    }
    uint8_t digest[SHA512_DIGEST_LENGTH];
    const uint8_t *cmp = sel;
    size_t cmplen = len;
    if (r->mtype == 1) {
        SHA256(sel, len, digest);
        cmp = digest;
        cmplen = SHA256_DIGEST_LENGTH;
    } else if (r->mtype == 2) {
        SHA512(sel, len, digest);
        cmp = digest;
        cmplen = SHA512_DIGEST_LENGTH;
    }
    int ok = cmplen == r->len && CRYPTO_memcmp(cmp, r->data, cmplen) == 0;
    OPENSSL_free(sel);
    return ok;
}

/* Verify the chain from certs[0] with certs[ta] as the only trust anchor
 * and host as the leaf's name: X509_V_OK or the verify error. */
static long dane_ta_verify(X509 **certs, size_t n, size_t ta, const char *host)
{
    long err = X509_V_ERR_UNSPECIFIED;
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    if (!store || !ctx || !untrusted || !X509_STORE_add_cert(store, certs[ta])) {
        goto out;
    }
    for (size_t i = 1; i < n; i++) {
        if (!sk_X509_push(untrusted, certs[i])) {
            goto out;
        }
        X509_up_ref(certs[i]);
    }
    if (!X509_STORE_CTX_init(ctx, store, certs[0], untrusted)) {
        goto out;
    }
    X509_STORE_CTX_set_default(ctx, "ssl_server");
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_PARTIAL_CHAIN);
    if (host && *host) {
        X509_VERIFY_PARAM_set1_host(param, host, strlen(host));
    }
    err = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
    if (err == X509_V_OK && X509_STORE_CTX_get_error(ctx) != X509_V_OK) {
        err = X509_STORE_CTX_get_error(ctx);
    }
out:
    sk_X509_pop_free(untrusted, X509_free);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return err;
}

#define DANE_CHAIN_MAX 16

/* The first usable records as text, for the diagnostic. */
static void dane_set_text(const struct dane_tlsa *recs, size_t n, char *out, size_t outlen)
{
    size_t at = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && at + 4 < outlen; i++) {
        if (!dane_tlsa_usable(&recs[i])) {
            continue;
        }
        char one[64];
        dane_tlsa_text(&recs[i], one, sizeof one); /* digests cut: enough to tell them apart */
        int k = snprintf(out + at, outlen - at, "%s%s%s", at ? "; " : "", one,
                         recs[i].len * 2 + 7 > sizeof one - 1 ? "..." : "");
        at = k > 0 && at + (size_t)k < outlen ? at + (size_t)k : outlen - 1;
    }
}

enum dane_result dane_match(const struct dane_tlsa *recs, size_t n, const uint8_t *const *ders,
                            const size_t *lens, size_t nchain, const char *host, char *why,
                            size_t whylen, long *verify_error)
{
    X509 *certs[DANE_CHAIN_MAX] = {0};
    size_t nc = nchain < DANE_CHAIN_MAX ? nchain : DANE_CHAIN_MAX;
    enum dane_result res = DANE_NO_MATCH;
    long verr = X509_V_OK;
    const struct dane_tlsa *ta_rec = NULL;
    for (size_t i = 0; i < nc; i++) {
        const uint8_t *p = ders[i];
        certs[i] = d2i_X509(NULL, &p, (long)lens[i]);
        if (!certs[i]) {
            nc = i; /* a chain cut at the first certificate we cannot read */
            break;
        }
    }
    if (nc == 0) {
        snprintf(why, whylen, "DANE: the server sent no certificate we can read");
        goto out;
    }
    /* DANE-EE first: it needs nothing but the leaf. */
    for (size_t r = 0; r < n && res != DANE_MATCHED; r++) {
        if (dane_tlsa_usable(&recs[r]) && recs[r].usage == DANE_USAGE_DANE_EE &&
            dane_cert_matches(&recs[r], certs[0], ders[0], lens[0])) {
            res = DANE_MATCHED;
        }
    }
    for (size_t r = 0; r < n && res != DANE_MATCHED; r++) {
        if (!dane_tlsa_usable(&recs[r]) || recs[r].usage != DANE_USAGE_DANE_TA) {
            continue;
        }
        for (size_t i = 0; i < nc && res != DANE_MATCHED; i++) {
            if (!dane_cert_matches(&recs[r], certs[i], ders[i], lens[i])) {
                continue;
            }
            long e = dane_ta_verify(certs, nc, i, host);
            if (e == X509_V_OK) {
                res = DANE_MATCHED;
            } else if (!ta_rec) {
                ta_rec = &recs[r];
                verr = e;
            }
        }
    }
    if (res != DANE_MATCHED && ta_rec) {
        char one[64];
        dane_tlsa_text(ta_rec, one, sizeof one);
        snprintf(why, whylen, "DANE: trust anchor %s... matched, but the chain does not verify: %s",
                 one, X509_verify_cert_error_string(verr));
        res = DANE_CHAIN_INVALID;
    } else if (res != DANE_MATCHED) {
        char set[200];
        dane_set_text(recs, n, set, sizeof set);
        snprintf(why, whylen, "DANE: no TLSA record matches the server's certificate (%s)", set);
    }
out:
    if (verify_error) {
        *verify_error = verr;
    }
    for (size_t i = 0; i < nc; i++) {
        X509_free(certs[i]);
    }
    return res;
}
