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
#include <time.h>

#include "engine/buf.h"

/* Header names signed by default, in h= order. */
#define DKIM_DEFAULT_HEADERS                                                                       \
    "from", "to", "subject", "date", "message-id", "mime-version", "content-type",                 \
        "list-unsubscribe", "list-unsubscribe-post", "feedback-id"

struct dkim_spec {
    const char *domain;         /* d=, ASCII (an IDN as its A-label) */
    const char *selector;       /* s= */
    const char *key_file;       /* PEM private key file; or: */
    const char *key_pem;        /* the PEM text itself (wins over key_file) */
    const char *const *headers; /* NULL-terminated names to sign; NULL: the default */
};

enum dkim_algorithm { DKIM_RSA_SHA256, DKIM_ED25519_SHA256 };

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

/* Relaxed canonical form (RFC 6376 3.4.2) of one header field, given
 * with its folding but without its final CRLF; appends "name:value\r\n". */
void dkim_canon_header_relaxed(const char *field, size_t len, buf_t *out);

/* Relaxed canonical form (RFC 6376 3.4.4) of a body; appends it. */
void dkim_canon_body_relaxed(const char *body, size_t len, buf_t *out);

#endif
