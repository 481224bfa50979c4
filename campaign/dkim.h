/*
 * dkim - DKIM signatures for rendered messages (RFC 6376, RFC 8463)
 *
 * A signer is made once per campaign from a private key (PEM: PKCS#8 RSA
 * or Ed25519, or PKCS#1 RSA), a domain (d=) and a selector (s=); it holds
 * the parsed key and the constant start of the signature header. Per
 * message, dkim_sign hashes the relaxed body, the relaxed signed header
 * fields and the signature header itself, signs (rsa-sha256 or
 * ed25519-sha256, the algorithm follows the key) and appends the
 * "DKIM-Signature:" field, folded and CRLF-terminated, to the caller's
 * buffer; the caller puts it in front of the message. Canonicalization is
 * relaxed/relaxed only.
 *
 * Signed header fields: those of the list (default DKIM_DEFAULT_HEADERS)
 * present in the message, every instance (bottom-up, RFC 6376 5.4.2).
 *
 * Diagnostics: a reason in err (unreadable or unsupported key, bad
 * domain or selector, malformed message header); never key material.
 */
#ifndef RINGMAIL_DKIM_H
#define RINGMAIL_DKIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "engine/buf.h"

/* Header names signed by default, in h= order. */
#define DKIM_DEFAULT_HEADERS                                                                       \
    "from", "to", "subject", "date", "message-id", "mime-version", "content-type",                 \
        "list-unsubscribe", "list-unsubscribe-post", "feedback-id"

enum dkim_algorithm { DKIM_RSA_SHA256, DKIM_ED25519_SHA256 };

#define DKIM_DIGEST_LEN 32
#define DKIM_SIG_MAX 1024 /* RSA-8192 */

/* One signature asked of a key holder: which of its keys, over which
 * SHA-256 header hash; the holder fills in sig and sig_len. */
struct dkim_sig {
    unsigned key;
    uint8_t digest[DKIM_DIGEST_LEN];
    uint8_t sig[DKIM_SIG_MAX];
    size_t sig_len;
};

/* A key held by another process (campaign/sign_client.h: the signer
 * processes). sign fills in reqs[0..n) and returns 0, or -1 with why in
 * err; it is called from any thread. */
struct dkim_keyholder {
    int (*sign)(void *ctx, struct dkim_sig *reqs, size_t n, char *err, size_t errlen);
    void *ctx;
};

struct dkim_spec {
    const char *domain;         /* d=, ASCII (an IDN as its A-label) */
    const char *selector;       /* s= */
    const char *key_file;       /* PEM private key file; or: */
    const char *key_pem;        /* the PEM text itself (wins over key_file) */
    const char *const *headers; /* NULL-terminated names to sign; NULL: the default */
    /* Or the key is holder's key number holder_key, of algorithm holder_alg
     * (key_file and key_pem unused): no key is read in this process. */
    const struct dkim_keyholder *holder;
    unsigned holder_key;
    enum dkim_algorithm holder_alg;
};

struct dkim_signer;

/* NULL with a reason in err when the key cannot be used (RSA < 1024 or
 * > 8192 bits, another key type) or domain/selector are not valid. */
struct dkim_signer *dkim_signer_new(const struct dkim_spec *spec, char *err, size_t errlen);
void dkim_signer_free(struct dkim_signer *s);
enum dkim_algorithm dkim_signer_algorithm(const struct dkim_signer *s);

/* Append the TXT record to publish at SELECTOR._domainkey.DOMAIN:
 * "v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo>" or "v=DKIM1; k=ed25519; p=<raw key>". */
void dkim_signer_dns_record(const struct dkim_signer *s, buf_t *out);

/*
 * Sign msg[0..len) (CRLF line endings, header, empty line, body) and append
 * its "DKIM-Signature: ...\r\n" field to out. t > 0 adds t= (the signing
 * time, normally the message's Date). Returns 0, or -1 with a reason in err
 * and out as it was (no header/body separator is needed, a message without
 * one has an empty body; a field without a colon or more than 128 fields
 * is refused). Safe to call from several threads on one signer.
 */
int dkim_sign(const struct dkim_signer *s, const char *msg, size_t len, time_t t, buf_t *out,
              char *err, size_t errlen);

/* dkim_sign's return when a key holder failed (the signer process died or
 * answered an error): the message is not to blame, it is not to be sent
 * unsigned nor marked invalid. */
#define DKIM_HOLDER_FAILED (-2)

/*
 * Sign msg with each of signers[0..n) (dual signing: RSA beside Ed25519),
 * appending one DKIM-Signature field per signer, in that order, to out.
 * The body is hashed once; the signatures a holder makes are asked in one
 * call. Returns 0; -1 with a reason in err (the message's fault); or
 * DKIM_HOLDER_FAILED with the holder's reason; out as it was on failure.
 * dkim_sign is this with n = 1.
 */
int dkim_sign_all(const struct dkim_signer *const *signers, size_t n, const char *msg, size_t len,
                  time_t t, buf_t *out, char *err, size_t errlen);

/* ---- DNS onboarding (campaign create, ringmail check-dns) ---- */

/* The longest character-string of a TXT record (RFC 1035 3.3). */
#define DKIM_TXT_STRING_MAX 255

/* The TXT record for the public half of spec's key (key_pem or key_file;
 * domain, selector and headers are not looked at), appended to out:
 * "v=DKIM1; k=rsa; p=<base64 DER SubjectPublicKeyInfo>" or
 * "v=DKIM1; k=ed25519; p=<base64 of the raw 32-byte key>" (RFC 8463).
 * The algorithm in *alg (may be NULL). 0, or -1 and why in err. */
int dkim_key_record(const struct dkim_spec *spec, enum dkim_algorithm *alg, buf_t *out, char *err,
                    size_t errlen);

/* One zone-file line for text[0..len) at name, appended to out (no newline):
 * NAME. IN TXT "..." "..." - cut into strings of at most DKIM_TXT_STRING_MAX
 * bytes (a TXT string holds no more; verifiers join them), '"' and '\'
 * escaped, other bytes outside printable ASCII as \DDD. */
void dkim_zone_txt(const char *name, const char *text, size_t len, buf_t *out);

/* The domain of an address ("a@b.example", "Name <a@b.example>", or a bare
 * domain) in lower case without a trailing dot; "" when there is none. */
void dkim_address_domain(const char *addr, char *out, size_t outlen);

/* DMARC identifier alignment (RFC 7489 3.1) of d (DKIM d=, or the SPF return
 * path's domain) with the From domain: strict, the same domain; relaxed, the
 * same or one a subdomain of the other (the organizational domain is not
 * looked up: a parent is taken to be at or below it). Case-insensitive. */
int dkim_domains_align(const char *d, const char *from, int strict);

/* The longest parent of a that b is (or is under), if it has at least two
 * labels: siblings like mail.acme.example and news.acme.example share
 * "acme.example" (a pointer into a); NULL otherwise. */
const char *dkim_shared_parent(const char *a, const char *b);

/* `campaign create` with a DKIM key (PEM text): print to f the TXT record to
 * publish at SELECTOR._domainkey.DOMAIN ("publish this DNS record for DKIM:"
 * and the zone line) and, when DOMAIN (d=) does not align with the domain of
 * from, a warning naming both that DMARC will fail for Gmail/Yahoo
 * bulk-sender rules. Nothing when one of domain, selector, key_pem is NULL. */
void dkim_create_advice(FILE *f, const char *from, const char *domain, const char *selector,
                        const char *key_pem);

/* Relaxed canonical form (RFC 6376 3.4.2) of one header field, given
 * with its folding but without its final CRLF; appends "name:value\r\n". */
void dkim_canon_header_relaxed(const char *field, size_t len, buf_t *out);

/* Relaxed canonical form (RFC 6376 3.4.4) of a body; appends it. */
void dkim_canon_body_relaxed(const char *body, size_t len, buf_t *out);

#endif
