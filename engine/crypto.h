/*
 * crypto - the few primitives outside TLS: base64, SHA-256, random bytes,
 * private keys and signatures
 *
 * SYNOPSIS
 *     #include "engine/crypto.h"
 *
 *     crypto_base64_append(&out, data, len);
 *     crypto_base64_decode(dst, size, &got, text, textlen);
 *     crypto_sha256_init(&h); crypto_sha256_update(&h, p, n);
 *     crypto_sha256_final(&h, digest);
 *     crypto_hmac_sha256(key, keylen, data, len, mac);
 *     k = crypto_key_load_pem(path, err, sizeof err);     or crypto_key_read_pem(text, ...)
 *     crypto_sign_sha256(k, digest, sig, sizeof sig, &siglen);
 *
 * DESCRIPTION
 *     The one door to BoringSSL for code that is not the TLS layer
 *     (engine/tls.c, engine/tls_session_cache.c): SMTP AUTH (base64),
 *     message rendering (base64, random Message-IDs), DKIM (SHA-256,
 *     RSA and Ed25519 keys and signatures) and the feedback tokens
 *     (HMAC-SHA256, campaign/feedback.c) use these and include no
 *     <openssl/...> header. No BoringSSL type appears here: a key is an
 *     opaque struct crypto_key, a hash state a fixed-size struct only
 *     crypto.c looks into (so a hash needs no allocation).
 *
 *     base64 is RFC 4648's standard alphabet with padding and no line
 *     breaks. Decoding is strict: the length must be a multiple of 4,
 *     no whitespace, padding only at the end.
 *
 *     A key is read from unencrypted PEM (PKCS#8 RSA or Ed25519, PKCS#1
 *     RSA). For Ed25519 the expanded private key is derived once, when
 *     the key is read, and wiped when it is freed. A key is read-only
 *     after it is made: threads may sign with one key at once.
 *
 * DIAGNOSTICS
 *     crypto_key_load_pem / crypto_key_read_pem: "cannot read a private
 *     key from FILE (PEM, unencrypted)" ("from the PEM text" for text),
 *     "cannot read the Ed25519 private key". Never key material.
 */
#ifndef RINGMAIL_CRYPTO_H
#define RINGMAIL_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Characters of the base64 form of n bytes (without a NUL). */
#define CRYPTO_BASE64_LEN(n) (((n) + 2) / 3 * 4)
#define CRYPTO_SHA256_LEN 32
#define CRYPTO_SIG_MAX 1024 /* RSA-8192 */

/* Write the base64 form of in[0..n) and a NUL to out, which has room for
 * CRYPTO_BASE64_LEN(n) + 1 characters; returns CRYPTO_BASE64_LEN(n). */
size_t crypto_base64_encode(char *out, const void *in, size_t n);
/* Append the base64 form of in[0..n) to out. */
void crypto_base64_append(buf_t *out, const void *in, size_t n);
/* Most bytes the base64 text of len characters can decode to. */
size_t crypto_base64_decoded_max(size_t len);
/* Decode in[0..len) into out (size bytes), the length into *outlen.
 * 0, or -1 when in is not base64 or does not fit. */
int crypto_base64_decode(void *out, size_t size, size_t *outlen, const char *in, size_t len);

/* A SHA-256 computation; its bytes are crypto.c's. */
struct crypto_sha256 {
    uint64_t state[16];
};
void crypto_sha256_init(struct crypto_sha256 *h);
void crypto_sha256_update(struct crypto_sha256 *h, const void *p, size_t n);
void crypto_sha256_final(struct crypto_sha256 *h, uint8_t digest[CRYPTO_SHA256_LEN]);

/* HMAC-SHA256 (RFC 2104) of data[0..len) under key[0..keylen) into out.
 * Any key length; one longer than 64 bytes is hashed first, as the RFC says. */
void crypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                        uint8_t out[CRYPTO_SHA256_LEN]);

/* n bytes from the system's secure generator (aborts if it has none). */
void crypto_random(void *out, size_t n);

enum crypto_key_type { CRYPTO_KEY_OTHER, CRYPTO_KEY_RSA, CRYPTO_KEY_ED25519 };
struct crypto_key;

/* A private key from a PEM file, or from PEM text (NUL-terminated).
 * NULL with a reason in err when none can be read. */
struct crypto_key *crypto_key_load_pem(const char *path, char *err, size_t errlen);
struct crypto_key *crypto_key_read_pem(const char *pem, char *err, size_t errlen);
void crypto_key_free(struct crypto_key *k);
enum crypto_key_type crypto_key_type(const struct crypto_key *k);
/* Size of the key in bits (an RSA modulus; 253 for Ed25519). */
unsigned crypto_key_bits(const struct crypto_key *k);
/* Append the public key: RSA as DER SubjectPublicKeyInfo, Ed25519 as its
 * raw 32 bytes (RFC 8463). 0, or -1 with out as it was. */
int crypto_key_public(const struct crypto_key *k, buf_t *out);
/* The modulus bits of an RSA public key given as DER SubjectPublicKeyInfo
 * (a DKIM k=rsa p= value, decoded); -1 when der is not one. */
int crypto_spki_rsa_bits(const void *der, size_t len);
/*
 * Sign a SHA-256 digest: RSA as RSASSA-PKCS1-v1_5 with SHA-256, Ed25519
 * as PureEd25519 over the 32 digest bytes (RFC 8463's ed25519-sha256).
 * Both are deterministic. The signature goes to sig (size bytes,
 * CRYPTO_SIG_MAX is always enough), its length to *siglen. 0, or -1.
 */
int crypto_sign_sha256(const struct crypto_key *k, const uint8_t digest[CRYPTO_SHA256_LEN],
                       uint8_t *sig, size_t size, size_t *siglen);

#endif
