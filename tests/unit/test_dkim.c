/*
 * test_dkim - DKIM signing: relaxed header and body canonicalization (RFC
 * 6376 3.4.5 and edge cases), the RFC 8463 Appendix A example (its body
 * hash, its published ed25519 signature checked with our canonicalization,
 * its public key as our DNS record, and a golden signature of our own),
 * rsa-sha256 and ed25519-sha256 signatures of rendered messages checked by
 * a small verifier here, a one-byte body change failing, key and message
 * errors.
 *
 * With RINGMAIL_RENDER_TOOL set, this binary is the render/sign driver of
 * tests/e2e/test_dkim.sh instead (see render_tool below).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include <openssl/base64.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/curve25519.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "campaign/dkim.h"
#include "campaign/render.h"

/* RFC 8463 A.1: the Ed25519 key of the example (PKCS#8 of its seed). */
static const char rfc8463_key[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
    "-----END PRIVATE KEY-----\n";
static const char rfc8463_public[] = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

/* RFC 8463 A.2: the message, A.3: its ed25519 signature field. */
static const char rfc8463_message[] =
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game.  Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n";
static const char rfc8463_signature[] =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    " subject : date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    " Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n";

/* The RFC 8463 public key, raw. */
static void rfc8463_public_key(uint8_t pub[32])
{
    uint8_t tmp[48];
    size_t n = 0;
    assert_true(EVP_DecodeBase64(tmp, &n, sizeof tmp, (const uint8_t *)rfc8463_public,
                                 strlen(rfc8463_public)));
    assert_int_equal(n, 32);
    memcpy(pub, tmp, 32);
}

static const char *cstr(buf_t *b)
{
    buf_reserve(b, 1)[0] = '\0';
    return buf_data(b);
}

static void assert_canon_header(const char *field, const char *want)
{
    buf_t out = BUF_INIT;
    dkim_canon_header_relaxed(field, strlen(field), &out);
    assert_string_equal(cstr(&out), want);
    buf_free(&out);
}

static void assert_canon_body(const char *body, const char *want)
{
    buf_t out = BUF_INIT;
    dkim_canon_body_relaxed(body, strlen(body), &out);
    assert_int_equal(buf_len(&out), strlen(want));
    assert_memory_equal(cstr(&out), want, strlen(want));
    buf_free(&out);
}

static void body_hash(const char *body, size_t len, char b64[45])
{
    buf_t c = BUF_INIT;
    dkim_canon_body_relaxed(body, len, &c);
    uint8_t h[32];
    SHA256((const uint8_t *)buf_data(&c), buf_len(&c), h);
    EVP_EncodeBlock((uint8_t *)b64, h, sizeof h);
    buf_free(&c);
}

/* ---------------------------------------------------------------- a small verifier */

/* One header field of msg by index: *p, *len without the final CRLF. */
struct field {
    const char *p;
    size_t len, name_len;
};

static size_t split_fields(const char *msg, struct field *f, size_t max, const char **body)
{
    size_t n = 0;
    const char *p = msg;
    while (*p && !(p[0] == '\r' && p[1] == '\n')) {
        const char *e = strstr(p, "\r\n");
        if (*p == ' ' || *p == '\t') {
            f[n - 1].len = (size_t)(e - f[n - 1].p);
        } else {
            assert_true(n < max);
            const char *colon = memchr(p, ':', (size_t)(e - p));
            assert_non_null(colon);
            size_t nl = (size_t)(colon - p);
            while (nl > 0 && (p[nl - 1] == ' ' || p[nl - 1] == '\t')) {
                nl--;
            }
            f[n++] = (struct field){p, (size_t)(e - p), nl};
        }
        p = e + 2;
    }
    *body = *p ? p + 2 : p;
    return n;
}

/* The value of tag in a signature field (whitespace removed). */
static void sig_tag(const struct field *sig, const char *tag, buf_t *out)
{
    const char *p = sig->p + sig->name_len + 1, *end = sig->p + sig->len;
    size_t tn = strlen(tag);
    while (p < end) {
        while (p < end && strchr(" \t\r\n;", *p)) {
            p++;
        }
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (!eq) {
            return;
        }
        const char *k = eq;
        while (k > p && strchr(" \t\r\n", k[-1])) {
            k--;
        }
        const char *semi = memchr(eq, ';', (size_t)(end - eq));
        const char *ve = semi ? semi : end;
        if ((size_t)(k - p) == tn && memcmp(p, tag, tn) == 0) {
            for (const char *v = eq + 1; v < ve; v++) {
                if (!strchr(" \t\r\n", *v)) {
                    buf_append(out, v, 1);
                }
            }
            return;
        }
        p = ve;
    }
}

/* Verify the first DKIM-Signature of msg with an Ed25519 public key or an RSA key. */
static int verify(const char *msg, const uint8_t *ed_public, RSA *rsa)
{
    struct field f[64] = {{0}};
    const char *body;
    size_t n = split_fields(msg, f, 64, &body);
    assert_true(n > 0 && f[0].name_len == 14 && strncasecmp(f[0].p, "DKIM-Signature", 14) == 0);
    buf_t bh = BUF_INIT, b = BUF_INIT, h = BUF_INIT, data = BUF_INIT;
    sig_tag(&f[0], "bh", &bh);
    sig_tag(&f[0], "b", &b);
    sig_tag(&f[0], "h", &h);
    char want_bh[45];
    body_hash(body, strlen(body), want_bh);
    int ok = strcmp(cstr(&bh), want_bh) == 0;
    /* Signed fields, each name's instances bottom-up, missing ones as nothing. */
    size_t used[64] = {0};
    const char *names = cstr(&h);
    while (*names) {
        size_t nl = strcspn(names, ":");
        size_t seen = 0;
        for (size_t j = n; j-- > 1;) {
            if (f[j].name_len == nl && strncasecmp(f[j].p, names, nl) == 0 && !used[j] &&
                seen++ == 0) {
                used[j] = 1;
                dkim_canon_header_relaxed(f[j].p, f[j].len, &data);
            }
        }
        names += nl + (names[nl] == ':');
    }
    /* The signature field with b= emptied, without its CRLF. */
    buf_t sig = BUF_INIT;
    const char *s = f[0].p, *end = f[0].p + f[0].len, *bt = s;
    for (const char *q = s + 15; q + 1 < end; q++) {
        if (q[0] == 'b' && q[1] == '=' && strchr(" \t\n;", q[-1])) {
            bt = q + 2;
        }
    }
    const char *be = memchr(bt, ';', (size_t)(end - bt));
    buf_append(&sig, s, (size_t)(bt - s));
    if (be) {
        buf_append(&sig, be, (size_t)(end - be));
    }
    dkim_canon_header_relaxed(buf_data(&sig), buf_len(&sig), &data);
    data.len -= 2;
    uint8_t digest[32], raw[1024];
    SHA256((const uint8_t *)buf_data(&data), buf_len(&data), digest);
    size_t raw_len = 0;
    ok = ok &&
         EVP_DecodeBase64(raw, &raw_len, sizeof raw, (const uint8_t *)buf_data(&b), buf_len(&b));
    if (ed_public) {
        ok = ok && raw_len == 64 && ED25519_verify(digest, 32, raw, ed_public);
    } else {
        ok = ok && RSA_verify(NID_sha256, digest, 32, raw, raw_len, rsa);
    }
    buf_free(&bh);
    buf_free(&b);
    buf_free(&h);
    buf_free(&data);
    buf_free(&sig);
    return ok;
}

/* ---------------------------------------------------------------- canonicalization */

static void test_relaxed_header_rfc6376_example(void **state)
{
    (void)state;
    /* RFC 6376 3.4.5. */
    assert_canon_header("A: X", "a:X\r\n");
    assert_canon_header("B : Y\t\r\n\tZ  ", "b:Y Z\r\n");
}

static void test_relaxed_header_cases(void **state)
{
    (void)state;
    assert_canon_header("SUBJECT:   many    spaces \t here\t", "subject:many spaces here\r\n");
    assert_canon_header("To:\r\n Ann <a@b.example>,\r\n\t Bo <c@d.example>",
                        "to:Ann <a@b.example>, Bo <c@d.example>\r\n");
    assert_canon_header("X-Empty:", "x-empty:\r\n");
    assert_canon_header("X-Empty:  \r\n  ", "x-empty:\r\n");
    assert_canon_header("Subject: =?UTF-8?B?5byg?=\r\n =?UTF-8?B?5Lyf?=",
                        "subject:=?UTF-8?B?5byg?= =?UTF-8?B?5Lyf?=\r\n");
}

static void test_relaxed_body_rfc6376_example(void **state)
{
    (void)state;
    /* RFC 6376 3.4.5. */
    assert_canon_body(" C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n");
}

static void test_relaxed_body_cases(void **state)
{
    (void)state;
    assert_canon_body("", "");
    assert_canon_body("\r\n\r\n\r\n", "");
    assert_canon_body("  \r\n\t\r\n", "");
    assert_canon_body("no final line end", "no final line end\r\n");
    assert_canon_body("a\r\n\r\n\r\nb\r\n \r\n\r\n", "a\r\n\r\n\r\nb\r\n");
    assert_canon_body("x  \t y \r\n", "x y\r\n");
    /* Empty lines inside the body are kept however many. */
    char body[64], want[80];
    snprintf(body, sizeof body, "a%sb", "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n");
    snprintf(want, sizeof want, "%s\r\n", body);
    assert_canon_body(body, want);
    char b64[45];
    /* The relaxed hash of an empty body (RFC 6376 erratum 3192). */
    body_hash("", 0, b64);
    assert_string_equal(b64, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
}

/* ---------------------------------------------------------------- RFC 8463 */

static void test_rfc8463_body_hash_and_published_signature(void **state)
{
    (void)state;
    const char *body = strstr(rfc8463_message, "\r\n\r\n") + 4;
    char b64[45];
    body_hash(body, strlen(body), b64);
    assert_string_equal(b64, "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");

    uint8_t pub[32];
    rfc8463_public_key(pub);
    buf_t msg = BUF_INIT;
    buf_append_str(&msg, rfc8463_signature);
    buf_append_str(&msg, rfc8463_message);
    assert_true(verify(cstr(&msg), pub, NULL));
    /* One byte of the body changed: the signature no longer holds. */
    char *p = strstr((char *)cstr(&msg), "hungry");
    p[0] = 'H';
    assert_false(verify(cstr(&msg), pub, NULL));
    buf_free(&msg);
}

static void test_rfc8463_key_signs_golden(void **state)
{
    (void)state;
    struct dkim_spec spec = {
        .domain = "football.example.com", .selector = "brisbane", .key_pem = rfc8463_key};
    char err[256];
    struct dkim_signer *s = dkim_signer_new(&spec, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(dkim_signer_algorithm(s), DKIM_ED25519_SHA256);
    buf_t rec = BUF_INIT;
    dkim_signer_dns_record(s, &rec);
    assert_string_equal(cstr(&rec),
                        "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");

    buf_t out = BUF_INIT;
    assert_int_equal(
        dkim_sign(s, rfc8463_message, strlen(rfc8463_message), 1528637909, &out, err, sizeof err),
        0);
    /* Ed25519 is deterministic: this exact field (also verified by python3-dkim). */
    assert_string_equal(
        cstr(&out),
        "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
        " d=football.example.com; s=brisbane; t=1528637909; h=from:to:subject:date:\r\n"
        " message-id; bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=P3nKdE3vb1y7yL\r\n"
        " kHzbXh8FEkKkl4xh9yJe62j90fkt/9wuhnDxafDHGMTqFgPNXZDKTQLL2nYcRfxAUIFw8ZBQ==\r\n");
    buf_append_str(&out, rfc8463_message);
    uint8_t pub[32];
    rfc8463_public_key(pub);
    assert_true(verify(cstr(&out), pub, NULL));
    buf_free(&out);
    buf_free(&rec);
    dkim_signer_free(s);
}

/* ---------------------------------------------------------------- signing rendered messages */

static char *rsa_pem(RSA **rsa_out)
{
    RSA *rsa = RSA_new();
    BIGNUM *e = BN_new();
    BN_set_word(e, RSA_F4);
    assert_true(RSA_generate_key_ex(rsa, 2048, e, NULL));
    BN_free(e);
    EVP_PKEY *pkey = EVP_PKEY_new();
    EVP_PKEY_set1_RSA(pkey, rsa);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL));
    const uint8_t *p;
    size_t n;
    BIO_mem_contents(bio, &p, &n);
    char *pem = strndup((const char *)p, n);
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    *rsa_out = rsa;
    return pem;
}

static struct render_spec signed_spec(const struct dkim_spec *dkim)
{
    struct render_spec spec = {0};
    spec.from_addr = "news@acme.example";
    spec.from_name = "阿克米 News";
    spec.to_name = "{{name}}";
    spec.subject = "{{name}}，本周精选 for you";
    spec.text = "Hi {{name|there}},\n  trailing spaces   \n\n\n";
    spec.html = "<p>Hi {{name|there}}</p>";
    spec.list_unsubscribe = "https://acme.example/u/{{id}}";
    spec.feedback_id = "c1:acme:news";
    spec.dkim = dkim;
    spec.fixed_date = 1700000000;
    return spec;
}

static void sign_and_verify(const struct dkim_spec *dkim, const uint8_t *ed_public, RSA *rsa)
{
    struct render_spec spec = signed_spec(dkim);
    char err[256];
    struct render_template *t = render_compile(&spec, err, sizeof err);
    assert_non_null(t);
    json_t *vars_json = json_pack("{s:s, s:i}", "name", "张伟", "id", 42);
    struct render_vars vars;
    render_vars_json(&vars, vars_json);
    struct render_scratch scratch;
    render_scratch_init(&scratch);
    buf_t out = BUF_INIT;
    assert_int_equal(render_message(t, "zhang@example.cn", &vars, &scratch, &out, err, sizeof err),
                     0);
    const char *m = cstr(&out);
    assert_memory_equal(m, "DKIM-Signature: v=1; a=", 23);
    struct field f[64];
    const char *body;
    split_fields(m, f, 64, &body);
    buf_t tag = BUF_INIT;
    sig_tag(&f[0], "h", &tag);
    assert_string_equal(cstr(&tag), "from:to:subject:date:message-id:mime-version:content-type:"
                                    "list-unsubscribe:list-unsubscribe-post:feedback-id");
    buf_reset(&tag);
    sig_tag(&f[0], "t", &tag);
    assert_string_equal(cstr(&tag), "1700000000");
    buf_reset(&tag);
    sig_tag(&f[0], "d", &tag);
    assert_string_equal(cstr(&tag), dkim->domain);
    buf_free(&tag);
    /* Signature lines within 78 columns too. */
    for (const char *p = m; *p;) {
        const char *e = strstr(p, "\r\n");
        assert_true(e - p <= 78);
        p = e + 2;
    }
    assert_true(verify(m, ed_public, rsa));
    /* One byte of the body, or of a signed header, changed: it fails. */
    char *hi = strstr((char *)m, "\r\n\r\nHi ") + 4;
    hi[0] = 'h';
    assert_false(verify(m, ed_public, rsa));
    hi[0] = 'H';
    char *to = strstr((char *)m, "\r\nTo: ") + 2;
    to[0] = 'C', to[1] = 'c';
    assert_false(verify(m, ed_public, rsa));
    buf_free(&out);
    render_scratch_free(&scratch);
    json_decref(vars_json);
    render_free(t);
}

static void test_render_signed_ed25519(void **state)
{
    (void)state;
    struct dkim_spec dkim = {.domain = "acme.example", .selector = "ed", .key_pem = rfc8463_key};
    uint8_t pub[32];
    rfc8463_public_key(pub);
    sign_and_verify(&dkim, pub, NULL);
}

static void test_render_signed_rsa(void **state)
{
    (void)state;
    RSA *rsa;
    char *pem = rsa_pem(&rsa);
    struct dkim_spec dkim = {.domain = "acme.example", .selector = "rsa", .key_pem = pem};
    char err[256];
    struct dkim_signer *s = dkim_signer_new(&dkim, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(dkim_signer_algorithm(s), DKIM_RSA_SHA256);
    buf_t rec = BUF_INIT;
    dkim_signer_dns_record(s, &rec);
    assert_memory_equal(cstr(&rec),
                        "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
                        strlen("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"));
    buf_free(&rec);
    dkim_signer_free(s);
    sign_and_verify(&dkim, NULL, rsa);
    RSA_free(rsa);
    free(pem);
}

/* ---------------------------------------------------------------- errors */

static void assert_signer_error(const struct dkim_spec *spec, const char *reason)
{
    char err[256] = "";
    struct dkim_signer *s = dkim_signer_new(spec, err, sizeof err);
    assert_null(s);
    if (!strstr(err, reason)) {
        print_error("reason \"%s\" lacks \"%s\"\n", err, reason);
        fail();
    }
}

static void test_signer_errors(void **state)
{
    (void)state;
    struct dkim_spec spec = {.domain = "acme.example", .selector = "s1", .key_pem = rfc8463_key};
    spec.domain = "bad domain";
    assert_signer_error(&spec, "bad DKIM domain");
    spec.domain = "例子.中国";
    assert_signer_error(&spec, "bad DKIM domain");
    spec.domain = "acme.example";
    spec.selector = "s1;x=y";
    assert_signer_error(&spec, "bad DKIM selector");
    spec.selector = "s1";
    spec.key_pem = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n";
    assert_signer_error(&spec, "cannot read a private key from the PEM text");
    spec.key_pem = NULL;
    spec.key_file = "/nonexistent/dkim.pem";
    assert_signer_error(&spec, "cannot read a private key from /nonexistent/dkim.pem");
    /* A P-256 key: DKIM has no ECDSA algorithm. */
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    assert_true(EC_KEY_generate_key(ec));
    EVP_PKEY *pkey = EVP_PKEY_new();
    EVP_PKEY_assign_EC_KEY(pkey, ec);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL));
    BIO_write(bio, "", 1);
    const uint8_t *p;
    size_t n;
    BIO_mem_contents(bio, &p, &n);
    spec.key_file = NULL;
    spec.key_pem = (const char *)p;
    assert_signer_error(&spec, "unsupported key type");
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    spec.key_pem = rfc8463_key;
    const char *bad_names[] = {"from", "x y", NULL};
    spec.headers = bad_names;
    assert_signer_error(&spec, "bad header name to sign");
}

static void test_sign_errors_and_custom_headers(void **state)
{
    (void)state;
    const char *names[] = {"From", "X-Tag", NULL};
    struct dkim_spec spec = {
        .domain = "acme.example", .selector = "s1", .key_pem = rfc8463_key, .headers = names};
    char err[256];
    struct dkim_signer *s = dkim_signer_new(&spec, err, sizeof err);
    assert_non_null(s);
    buf_t out = BUF_INIT;
    buf_append_str(&out, "kept");
    const char *no_from = "To: a@b.example\r\n\r\nbody\r\n";
    assert_int_equal(dkim_sign(s, no_from, strlen(no_from), 0, &out, err, sizeof err), -1);
    assert_string_equal(err, "no From header field to sign");
    const char *no_colon = "From: a@b.example\r\nnot a field\r\n\r\nbody\r\n";
    assert_int_equal(dkim_sign(s, no_colon, strlen(no_colon), 0, &out, err, sizeof err), -1);
    assert_string_equal(err, "header field without a colon");
    assert_int_equal(buf_len(&out), 4);
    /* Two X-Tag instances: both signed, h= lists the name twice; no t= when t is 0. */
    const char *two = "From: a@b.example\r\nX-Tag: 1\r\nX-Tag: 2\r\n\r\nbody\r\n";
    assert_int_equal(dkim_sign(s, two, strlen(two), 0, &out, err, sizeof err), 0);
    assert_non_null(strstr(cstr(&out), " h=from:x-tag:x-tag; "));
    assert_null(strstr(cstr(&out), "t="));
    buf_t msg = BUF_INIT;
    buf_append(&msg, buf_data(&out) + 4, buf_len(&out) - 4);
    buf_append_str(&msg, two);
    uint8_t pub[32];
    rfc8463_public_key(pub);
    assert_true(verify(cstr(&msg), pub, NULL));
    buf_free(&msg);
    buf_free(&out);
    dkim_signer_free(s);
}

/* ---------------------------------------------------------------- e2e driver */

static const char *json_str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/*
 * RINGMAIL_RENDER_TOOL=render test_dkim SPEC.json > message
 *     Render one message from a JSON spec: from, from_name, to_name,
 *     subject, text, html, list_unsubscribe, feedback_id, fixed_date,
 *     rcpt, vars (object), dkim {domain, selector, key_file}.
 *     Exit 1 with the reason on stderr when rendering is refused.
 * RINGMAIL_RENDER_TOOL=dns test_dkim SPEC.json
 *     Print the DKIM TXT record for the spec's key.
 */
static int render_tool(const char *mode, int argc, char **argv)
{
    json_error_t jerr;
    json_t *j = argc > 1 ? json_load_file(argv[1], 0, &jerr) : NULL;
    if (!j) {
        fprintf(stderr, "render_tool: usage: RINGMAIL_RENDER_TOOL=render|dns %s SPEC.json\n",
                argv[0]);
        return 2;
    }
    const json_t *dk = json_object_get(j, "dkim");
    struct dkim_spec dkim = {.domain = json_str(dk, "domain"),
                             .selector = json_str(dk, "selector"),
                             .key_file = json_str(dk, "key_file")};
    char err[256];
    int rc = 1;
    if (strcmp(mode, "dns") == 0) {
        struct dkim_signer *s = dkim_signer_new(&dkim, err, sizeof err);
        if (s) {
            buf_t rec = BUF_INIT;
            dkim_signer_dns_record(s, &rec);
            printf("%s\n", cstr(&rec));
            buf_free(&rec);
            dkim_signer_free(s);
            rc = 0;
        }
    } else {
        struct render_spec spec = {
            .from_addr = json_str(j, "from"),
            .from_name = json_str(j, "from_name"),
            .to_name = json_str(j, "to_name"),
            .subject = json_str(j, "subject"),
            .text = json_str(j, "text"),
            .html = json_str(j, "html"),
            .list_unsubscribe = json_str(j, "list_unsubscribe"),
            .feedback_id = json_str(j, "feedback_id"),
            .dkim = dk ? &dkim : NULL,
            .fixed_date = (time_t)json_integer_value(json_object_get(j, "fixed_date")),
        };
        struct render_template *t = render_compile(&spec, err, sizeof err);
        if (t) {
            struct render_vars vars;
            render_vars_json(&vars, json_object_get(j, "vars"));
            buf_t out = BUF_INIT;
            if (render_message(t, json_str(j, "rcpt"), &vars, NULL, &out, err, sizeof err) == 0) {
                fwrite(buf_data(&out), 1, buf_len(&out), stdout);
                rc = 0;
            }
            buf_free(&out);
            render_free(t);
        }
    }
    if (rc != 0) {
        fprintf(stderr, "render_tool: %s\n", err);
    }
    json_decref(j);
    return rc;
}

int main(int argc, char **argv)
{
    const char *tool = getenv("RINGMAIL_RENDER_TOOL");
    if (tool && *tool) {
        return render_tool(tool, argc, argv);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relaxed_header_rfc6376_example),
        cmocka_unit_test(test_relaxed_header_cases),
        cmocka_unit_test(test_relaxed_body_rfc6376_example),
        cmocka_unit_test(test_relaxed_body_cases),
        cmocka_unit_test(test_rfc8463_body_hash_and_published_signature),
        cmocka_unit_test(test_rfc8463_key_signs_golden),
        cmocka_unit_test(test_render_signed_ed25519),
        cmocka_unit_test(test_render_signed_rsa),
        cmocka_unit_test(test_signer_errors),
        cmocka_unit_test(test_sign_errors_and_custom_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
