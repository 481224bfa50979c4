/*
 * crypto - base64, SHA-256, random bytes, keys and signatures over
 * BoringSSL. See crypto.h.
 *
 * Each function is a thin, typed wrapper: the behaviour is BoringSSL's
 * (EVP_EncodeBlock / EVP_DecodeBase64, SHA256_*, HMAC, RAND_bytes, RSA_sign,
 * ED25519_sign), so what callers produced before this module existed is
 * produced byte for byte now. The library's error queue is cleared after
 * a failure here, so no stale error reaches the next TLS call on the thread.
 */
#include "crypto.h"

#include <openssl/base.h>
#ifndef OPENSSL_IS_BORINGSSL
#error "ringmail needs BoringSSL headers: put -I/usr/include/android before the system include path"
#endif

#include <openssl/base64.h>
#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/curve25519.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include <stdio.h>
#include <stdlib.h>

_Static_assert(sizeof(SHA256_CTX) <= sizeof(struct crypto_sha256),
               "struct crypto_sha256 is too small for SHA256_CTX");
_Static_assert(_Alignof(SHA256_CTX) <= _Alignof(struct crypto_sha256),
               "struct crypto_sha256 is not aligned for SHA256_CTX");

struct crypto_key {
    enum crypto_key_type type;
    EVP_PKEY *pkey;         /* owned */
    uint8_t ed_private[64]; /* Ed25519 expanded key (seed || public), cleansed on free */
    uint8_t ed_public[32];  /* Ed25519 public key */
};

/* ---------------------------------------------------------------- base64 */

/* crypto_base64_encode - base64 of in into out, NUL-terminated. */
size_t crypto_base64_encode(char *out, const void *in, size_t n)
{
    return EVP_EncodeBlock((uint8_t *)out, in, n);
}

/* crypto_base64_append - base64 of in appended to out. */
void crypto_base64_append(buf_t *out, const void *in, size_t n)
{
    size_t need;
    if (!EVP_EncodedLength(&need, n)) {
        return; /* n near SIZE_MAX: nothing sane to write */
    }
    char *w = buf_reserve(out, need);
    buf_commit(out, EVP_EncodeBlock((uint8_t *)w, in, n));
}

/* crypto_base64_decoded_max - room decoding len characters may need. */
size_t crypto_base64_decoded_max(size_t len)
{
    return len / 4 * 3 + (len % 4 ? 3 : 0);
}

/* crypto_base64_decode - strict base64 decoding into a bounded buffer. */
int crypto_base64_decode(void *out, size_t size, size_t *outlen, const char *in, size_t len)
{
    size_t max;
    if (!EVP_DecodedLength(&max, len) ||
        !EVP_DecodeBase64(out, outlen, size, (const uint8_t *)in, len)) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- SHA-256, random */

/* crypto_sha256_init - start a SHA-256 computation in h. */
void crypto_sha256_init(struct crypto_sha256 *h)
{
    SHA256_Init((SHA256_CTX *)h->state);
}

/* crypto_sha256_update - hash n more bytes. */
void crypto_sha256_update(struct crypto_sha256 *h, const void *p, size_t n)
{
    SHA256_Update((SHA256_CTX *)h->state, p, n);
}

/* crypto_sha256_final - the digest; h must be initialised again before reuse. */
void crypto_sha256_final(struct crypto_sha256 *h, uint8_t digest[CRYPTO_SHA256_LEN])
{
    SHA256_Final(digest, (SHA256_CTX *)h->state);
}

/* crypto_hmac_sha256 - HMAC-SHA256 of data under key. BoringSSL's one-shot
 * HMAC fails only on allocation failure, which is fatal here as elsewhere. */
void crypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                        uint8_t out[CRYPTO_SHA256_LEN])
{
    unsigned n = 0;
    if (!HMAC(EVP_sha256(), key, keylen, data, len, out, &n) || n != CRYPTO_SHA256_LEN) {
        abort();
    }
}

/* crypto_random - n secure random bytes. */
void crypto_random(void *out, size_t n)
{
    RAND_bytes(out, n);
}

/* ---------------------------------------------------------------- keys */

/* crypto_no_password - refuse encrypted PEM instead of prompting on a terminal. */
static int crypto_no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0;
}

/* crypto_key_from_bio - the private key in bio (consumed), typed; from
 * names the source in the error. */
static struct crypto_key *crypto_key_from_bio(BIO *bio, const char *from, char *err, size_t errlen)
{
    EVP_PKEY *pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, crypto_no_password, NULL) : NULL;
    BIO_free(bio);
    ERR_clear_error();
    if (!pkey) {
        snprintf(err, errlen, "cannot read a private key from %s (PEM, unencrypted)", from);
        return NULL;
    }
    struct crypto_key *k = calloc(1, sizeof *k);
    if (!k) {
        EVP_PKEY_free(pkey);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    k->pkey = pkey;
    if (EVP_PKEY_id(pkey) == EVP_PKEY_RSA) {
        k->type = CRYPTO_KEY_RSA;
    } else if (EVP_PKEY_id(pkey) == EVP_PKEY_ED25519) {
        uint8_t seed[32];
        size_t n = sizeof seed;
        if (!EVP_PKEY_get_raw_private_key(pkey, seed, &n) || n != sizeof seed) {
            ERR_clear_error();
            snprintf(err, errlen, "cannot read the Ed25519 private key");
            crypto_key_free(k);
            return NULL;
        }
        ED25519_keypair_from_seed(k->ed_public, k->ed_private, seed);
        OPENSSL_cleanse(seed, sizeof seed);
        k->type = CRYPTO_KEY_ED25519;
    }
    return k;
}

/* crypto_key_load_pem - the private key in the PEM file at path. */
struct crypto_key *crypto_key_load_pem(const char *path, char *err, size_t errlen)
{
    return crypto_key_from_bio(path ? BIO_new_file(path, "r") : NULL, path ? path : "(none)", err,
                               errlen);
}

/* crypto_key_read_pem - the private key in PEM text. */
struct crypto_key *crypto_key_read_pem(const char *pem, char *err, size_t errlen)
{
    return crypto_key_from_bio(pem ? BIO_new_mem_buf(pem, -1) : NULL, "the PEM text", err, errlen);
}

/* crypto_key_free - free k and wipe its private key material. */
void crypto_key_free(struct crypto_key *k)
{
    if (!k) {
        return;
    }
    EVP_PKEY_free(k->pkey);
    OPENSSL_cleanse(k->ed_private, sizeof k->ed_private);
    free(k);
}

/* crypto_key_type - RSA, Ed25519 or another kind (which cannot sign here). */
enum crypto_key_type crypto_key_type(const struct crypto_key *k)
{
    return k->type;
}

/* crypto_key_bits - the key's size in bits. */
unsigned crypto_key_bits(const struct crypto_key *k)
{
    int bits = EVP_PKEY_bits(k->pkey);
    return bits > 0 ? (unsigned)bits : 0;
}

/* crypto_key_public - the public key appended to out (SPKI DER or raw Ed25519). */
int crypto_key_public(const struct crypto_key *k, buf_t *out)
{
    if (k->type == CRYPTO_KEY_ED25519) {
        buf_append(out, k->ed_public, sizeof k->ed_public);
        return 0;
    }
    CBB cbb;
    uint8_t *der = NULL;
    size_t der_len = 0;
    if (!CBB_init(&cbb, 512) || !EVP_marshal_public_key(&cbb, k->pkey) ||
        !CBB_finish(&cbb, &der, &der_len)) {
        CBB_cleanup(&cbb);
        ERR_clear_error();
        return -1;
    }
    buf_append(out, der, der_len);
    OPENSSL_free(der);
    return 0;
}

/* crypto_spki_rsa_bits - the modulus size of an RSA SubjectPublicKeyInfo. */
int crypto_spki_rsa_bits(const void *der, size_t len)
{
    CBS cbs;
    CBS_init(&cbs, der, len);
    EVP_PKEY *pkey = EVP_parse_public_key(&cbs);
    int bits = -1;
    if (pkey && CBS_len(&cbs) == 0 && EVP_PKEY_id(pkey) == EVP_PKEY_RSA) {
        bits = EVP_PKEY_bits(pkey);
    }
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return bits > 0 ? bits : -1;
}

/* crypto_sign_sha256 - sign a SHA-256 digest with k (RSA PKCS#1 v1.5 or PureEd25519). */
int crypto_sign_sha256(const struct crypto_key *k, const uint8_t digest[CRYPTO_SHA256_LEN],
                       uint8_t *sig, size_t size, size_t *siglen)
{
    if (k->type == CRYPTO_KEY_ED25519) {
        if (size < 64 || !ED25519_sign(sig, digest, CRYPTO_SHA256_LEN, k->ed_private)) {
            return -1;
        }
        *siglen = 64;
        return 0;
    }
    RSA *rsa = k->type == CRYPTO_KEY_RSA ? EVP_PKEY_get0_RSA(k->pkey) : NULL;
    unsigned n = 0;
    if (!rsa || RSA_size(rsa) > size ||
        !RSA_sign(NID_sha256, digest, CRYPTO_SHA256_LEN, sig, &n, rsa)) {
        ERR_clear_error();
        return -1;
    }
    *siglen = n;
    return 0;
}
