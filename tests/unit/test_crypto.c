/*
 * test_crypto - engine/crypto.h: base64 against RFC 4648's vectors and its
 * strictness on bad input, SHA-256 against FIPS 180-2's vectors, random
 * bytes, and keys: read from PEM, public halves exported, and signatures
 * made by crypto_sign_sha256 verified here with BoringSSL itself.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/curve25519.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "engine/crypto.h"

static const struct {
    const char *plain, *b64;
} rfc4648[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void test_base64_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rfc4648 / sizeof rfc4648[0]; i++) {
        const char *plain = rfc4648[i].plain, *b64 = rfc4648[i].b64;
        size_t n = strlen(plain);
        char out[16];
        memset(out, 'x', sizeof out);
        assert_int_equal(CRYPTO_BASE64_LEN(n), strlen(b64));
        assert_int_equal(crypto_base64_encode(out, plain, n), strlen(b64));
        assert_string_equal(out, b64); /* NUL-terminated */

        buf_t b = BUF_INIT;
        buf_append_str(&b, "p=");
        crypto_base64_append(&b, plain, n);
        assert_int_equal(buf_len(&b), 2 + strlen(b64));
        assert_memory_equal(buf_data(&b), "p=", 2);
        assert_memory_equal(buf_data(&b) + 2, b64, strlen(b64));
        buf_free(&b);

        uint8_t dec[16];
        size_t got = 99;
        assert_true(crypto_base64_decoded_max(strlen(b64)) <= sizeof dec);
        assert_int_equal(crypto_base64_decode(dec, sizeof dec, &got, b64, strlen(b64)), 0);
        assert_int_equal(got, n);
        assert_memory_equal(dec, plain, n);
    }
}

static void test_base64_round_trip(void **state)
{
    (void)state;
    uint8_t all[256];
    for (size_t i = 0; i < sizeof all; i++) {
        all[i] = (uint8_t)(255 - i);
    }
    for (size_t n = 0; n <= sizeof all; n += n < 70 ? 1 : 31) {
        char enc[CRYPTO_BASE64_LEN(sizeof all) + 1];
        size_t len = crypto_base64_encode(enc, all, n);
        assert_int_equal(len, CRYPTO_BASE64_LEN(n));
        assert_int_equal(strlen(enc), len);
        size_t max = crypto_base64_decoded_max(len), got = 0;
        assert_true(max >= n);
        uint8_t dec[sizeof all + 3];
        assert_int_equal(crypto_base64_decode(dec, max, &got, enc, len), 0);
        assert_int_equal(got, n);
        assert_memory_equal(dec, all, n);
    }
}

static void test_base64_decode_refuses_bad_input(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "Zg=",          /* not a multiple of 4 */
        "Zm9vY",        /* likewise */
        "Zm9v!A==",     /* not in the alphabet */
        "Zm 9",         /* whitespace */
        "Zm9v\r\nYg==", /* line breaks */
        "Zg==Zg==",     /* padding before the end */
        "Z===",         /* too much padding */
        "=Zg=",         /* padding first */
        "Zm9vYmFy-_==", /* the URL alphabet */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t dec[32];
        size_t got = 0;
        if (crypto_base64_decode(dec, sizeof dec, &got, bad[i], strlen(bad[i])) != -1) {
            fail_msg("\"%s\" was accepted", bad[i]);
        }
    }
    /* Good input that does not fit the output buffer. */
    uint8_t small[2];
    size_t got = 0;
    assert_int_equal(crypto_base64_decode(small, sizeof small, &got, "Zm9v", 4), -1);
}

static void sha256_hex(const char *data, size_t len, size_t step, char hex[65])
{
    struct crypto_sha256 h;
    uint8_t d[CRYPTO_SHA256_LEN];
    crypto_sha256_init(&h);
    for (size_t i = 0; i < len; i += step) {
        crypto_sha256_update(&h, data + i, len - i < step ? len - i : step);
    }
    crypto_sha256_final(&h, d);
    for (size_t i = 0; i < sizeof d; i++) {
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    }
}

static void test_sha256_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *msg, *hex;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char hex[65];
        size_t len = strlen(v[i].msg);
        sha256_hex(v[i].msg, len, len ? len : 1, hex);
        assert_string_equal(hex, v[i].hex);
        sha256_hex(v[i].msg, len, 1, hex); /* byte by byte: the same digest */
        assert_string_equal(hex, v[i].hex);
    }
}

static void test_random_bytes(void **state)
{
    (void)state;
    uint8_t a[32], b[32], zero[32] = {0};
    crypto_random(a, sizeof a);
    crypto_random(b, sizeof b);
    assert_memory_not_equal(a, b, sizeof a);
    assert_memory_not_equal(a, zero, sizeof a);
}

/* The PEM (PKCS#8) text of pkey, NUL-terminated; free() it. */
static char *pem_of(EVP_PKEY *pkey)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_non_null(bio);
    assert_true(PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL));
    const uint8_t *data;
    size_t len;
    assert_true(BIO_mem_contents(bio, &data, &len));
    char *pem = malloc(len + 1);
    assert_non_null(pem);
    memcpy(pem, data, len);
    pem[len] = '\0';
    BIO_free(bio);
    return pem;
}

static void digest_of(const char *text, uint8_t d[CRYPTO_SHA256_LEN])
{
    struct crypto_sha256 h;
    crypto_sha256_init(&h);
    crypto_sha256_update(&h, text, strlen(text));
    crypto_sha256_final(&h, d);
}

static void test_rsa_key_signs_verifiably(void **state)
{
    (void)state;
    RSA *rsa = RSA_new();
    BIGNUM *e = BN_new();
    assert_true(BN_set_word(e, RSA_F4));
    assert_true(RSA_generate_key_ex(rsa, 2048, e, NULL));
    BN_free(e);
    EVP_PKEY *pkey = EVP_PKEY_new();
    assert_true(EVP_PKEY_set1_RSA(pkey, rsa));
    char *pem = pem_of(pkey);

    /* From a file, as DKIM keys usually come. */
    char path[] = "/tmp/ringmail-ut-crypto.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, pem, strlen(pem)), (ssize_t)strlen(pem));
    close(fd);
    char err[256] = "";
    struct crypto_key *k = crypto_key_load_pem(path, err, sizeof err);
    unlink(path);
    assert_non_null(k);
    assert_int_equal(crypto_key_type(k), CRYPTO_KEY_RSA);
    assert_int_equal(crypto_key_bits(k), 2048);

    uint8_t d[CRYPTO_SHA256_LEN], sig[CRYPTO_SIG_MAX];
    size_t siglen = 0;
    digest_of("the signed header fields", d);
    assert_int_equal(crypto_sign_sha256(k, d, sig, sizeof sig, &siglen), 0);
    assert_int_equal(siglen, 256);
    assert_true(RSA_verify(NID_sha256, d, sizeof d, sig, siglen, rsa));
    /* Deterministic (PKCS#1 v1.5): the same digest, the same signature. */
    uint8_t again[CRYPTO_SIG_MAX];
    size_t againlen = 0;
    assert_int_equal(crypto_sign_sha256(k, d, again, sizeof again, &againlen), 0);
    assert_memory_equal(sig, again, siglen);
    d[0] ^= 1;
    assert_false(RSA_verify(NID_sha256, d, sizeof d, sig, siglen, rsa));
    /* Too small a buffer is refused, not overrun. */
    assert_int_equal(crypto_sign_sha256(k, d, sig, 255, &siglen), -1);

    /* The public half is the key's SubjectPublicKeyInfo. */
    buf_t pub = BUF_INIT;
    assert_int_equal(crypto_key_public(k, &pub), 0);
    CBS cbs;
    CBS_init(&cbs, (const uint8_t *)buf_data(&pub), buf_len(&pub));
    EVP_PKEY *parsed = EVP_parse_public_key(&cbs);
    assert_non_null(parsed);
    assert_int_equal(CBS_len(&cbs), 0);
    assert_int_equal(EVP_PKEY_cmp(parsed, pkey), 1);
    EVP_PKEY_free(parsed);
    buf_free(&pub);

    crypto_key_free(k);
    free(pem);
    EVP_PKEY_free(pkey);
    RSA_free(rsa);
}

static void test_ed25519_key_signs_verifiably(void **state)
{
    (void)state;
    uint8_t seed[32], pub_raw[32], priv[64];
    for (size_t i = 0; i < sizeof seed; i++) {
        seed[i] = (uint8_t)(i * 7 + 1);
    }
    ED25519_keypair_from_seed(pub_raw, priv, seed);
    EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof seed);
    assert_non_null(pkey);
    char *pem = pem_of(pkey);

    char err[256] = "";
    struct crypto_key *k = crypto_key_read_pem(pem, err, sizeof err);
    assert_non_null(k);
    assert_int_equal(crypto_key_type(k), CRYPTO_KEY_ED25519);

    uint8_t d[CRYPTO_SHA256_LEN], sig[CRYPTO_SIG_MAX];
    size_t siglen = 0;
    digest_of("the signed header fields", d);
    assert_int_equal(crypto_sign_sha256(k, d, sig, sizeof sig, &siglen), 0);
    assert_int_equal(siglen, 64);
    /* PureEd25519 over the 32 digest bytes (RFC 8463). */
    assert_true(ED25519_verify(d, sizeof d, sig, pub_raw));
    d[31] ^= 0x80;
    assert_false(ED25519_verify(d, sizeof d, sig, pub_raw));
    assert_int_equal(crypto_sign_sha256(k, d, sig, 63, &siglen), -1);

    buf_t pub = BUF_INIT;
    assert_int_equal(crypto_key_public(k, &pub), 0);
    assert_int_equal(buf_len(&pub), 32);
    assert_memory_equal(buf_data(&pub), pub_raw, 32);
    buf_free(&pub);

    crypto_key_free(k);
    free(pem);
    EVP_PKEY_free(pkey);
}

static void test_key_errors(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(crypto_key_read_pem("not a key", err, sizeof err));
    assert_string_equal(err, "cannot read a private key from the PEM text (PEM, unencrypted)");
    assert_null(crypto_key_load_pem("/nonexistent/k.pem", err, sizeof err));
    assert_string_equal(err,
                        "cannot read a private key from /nonexistent/k.pem (PEM, unencrypted)");
    assert_null(crypto_key_load_pem(NULL, err, sizeof err));
    assert_string_equal(err, "cannot read a private key from (none) (PEM, unencrypted)");

    /* A P-256 key reads, but is of no type that signs here. */
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    assert_true(EC_KEY_generate_key(ec));
    EVP_PKEY *pkey = EVP_PKEY_new();
    assert_true(EVP_PKEY_set1_EC_KEY(pkey, ec));
    char *pem = pem_of(pkey);
    struct crypto_key *k = crypto_key_read_pem(pem, err, sizeof err);
    assert_non_null(k);
    assert_int_equal(crypto_key_type(k), CRYPTO_KEY_OTHER);
    uint8_t d[CRYPTO_SHA256_LEN] = {0}, sig[CRYPTO_SIG_MAX];
    size_t siglen = 0;
    assert_int_equal(crypto_sign_sha256(k, d, sig, sizeof sig, &siglen), -1);
    crypto_key_free(k);
    crypto_key_free(NULL);
    free(pem);
    EVP_PKEY_free(pkey);
    EC_KEY_free(ec);
}

/* RFC 4231's HMAC-SHA256 vectors: 2 (a short key), 4 (binary key and data)
 * and 6 (a key longer than the block, hashed first). */
static void test_hmac_sha256_vectors(void **state)
{
    (void)state;
    uint8_t key4[25], data4[50], key6[131];
    for (size_t i = 0; i < sizeof key4; i++) {
        key4[i] = (uint8_t)(i + 1);
    }
    memset(data4, 0xcd, sizeof data4);
    memset(key6, 0xaa, sizeof key6);
    static const char data6[] = "Test Using Larger Than Block-Size Key - Hash Key First";
    static const char data2[] = "what do ya want for nothing?";
    const struct {
        const void *key, *data;
        size_t keylen, len;
        const char *hex;
    } v[] = {
        {"Jefe", data2, 4, sizeof data2 - 1,
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {key4, data4, sizeof key4, sizeof data4,
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        {key6, data6, sizeof key6, sizeof data6 - 1,
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t mac[CRYPTO_SHA256_LEN];
        char hex[2 * CRYPTO_SHA256_LEN + 1];
        crypto_hmac_sha256(v[i].key, v[i].keylen, v[i].data, v[i].len, mac);
        for (size_t k = 0; k < sizeof mac; k++) {
            snprintf(hex + 2 * k, 3, "%02x", mac[k]);
        }
        assert_string_equal(hex, v[i].hex);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64_vectors),
        cmocka_unit_test(test_base64_round_trip),
        cmocka_unit_test(test_base64_decode_refuses_bad_input),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_rsa_key_signs_verifiably),
        cmocka_unit_test(test_ed25519_key_signs_verifiably),
        cmocka_unit_test(test_key_errors),
        cmocka_unit_test(test_hmac_sha256_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
