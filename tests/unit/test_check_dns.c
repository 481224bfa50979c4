/*
 * test_check_dns - DNS onboarding without a resolver: the DKIM record of a
 * key (p= checked against BoringSSL's own public key), zone lines cut into
 * 255-byte strings and escaped, the From domain of an address, DMARC
 * alignment (relaxed, strict, siblings), the create-time advice, the tag
 * and SPF parsers, and check_dns_report over hand-made answers: every line
 * kind, lookups that failed said as such and never "missing".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/curve25519.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "campaign/check_dns.h"
#include "campaign/dkim.h"
#include "engine/buf.h"
#include "engine/crypto.h"

/* ---------------------------------------------------------------- helpers */

static char *pem_of(EVP_PKEY *pkey)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_non_null(bio);
    assert_int_equal(PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL), 1);
    const uint8_t *data;
    size_t len;
    assert_int_equal(BIO_mem_contents(bio, &data, &len), 1);
    char *pem = malloc(len + 1);
    memcpy(pem, data, len);
    pem[len] = '\0';
    BIO_free(bio);
    return pem;
}

static char *rsa_pem(unsigned bits, buf_t *spki)
{
    RSA *rsa = RSA_new();
    BIGNUM *e = BN_new();
    BN_set_word(e, RSA_F4);
    assert_int_equal(RSA_generate_key_ex(rsa, (int)bits, e, NULL), 1);
    EVP_PKEY *pkey = EVP_PKEY_new();
    EVP_PKEY_assign_RSA(pkey, rsa);
    uint8_t *der = NULL;
    int n = i2d_PUBKEY(pkey, &der);
    assert_true(n > 0);
    buf_append(spki, der, (size_t)n);
    OPENSSL_free(der);
    char *pem = pem_of(pkey);
    EVP_PKEY_free(pkey);
    BN_free(e);
    return pem;
}

static char *ed_pem(uint8_t pub[32])
{
    uint8_t seed[32], priv[64];
    for (int i = 0; i < 32; i++) {
        seed[i] = (uint8_t)(i * 7 + 1);
    }
    ED25519_keypair_from_seed(pub, priv, seed);
    EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    assert_non_null(pkey);
    char *pem = pem_of(pkey);
    EVP_PKEY_free(pkey);
    return pem;
}

/* The p= of a record, decoded. */
static void p_of(const char *rec, buf_t *out)
{
    const char *p = strstr(rec, "p=");
    assert_non_null(p);
    p += 2;
    size_t len = strlen(p), got = 0;
    char *w = buf_reserve(out, len);
    assert_int_equal(crypto_base64_decode(w, len, &got, p, len), 0);
    buf_commit(out, got);
}

/* ---------------------------------------------------------------- the key's record */

static void test_rsa_record_is_the_spki(void **state)
{
    (void)state;
    buf_t spki = BUF_INIT, rec = BUF_INIT, p = BUF_INIT;
    char *pem = rsa_pem(1024, &spki);
    struct dkim_spec spec = {.key_pem = pem};
    enum dkim_algorithm alg = DKIM_ED25519_SHA256;
    char err[256];
    assert_int_equal(dkim_key_record(&spec, &alg, &rec, err, sizeof err), 0);
    assert_int_equal(alg, DKIM_RSA_SHA256);
    assert_true(strncmp(buf_cstr(&rec), "v=DKIM1; k=rsa; p=", 18) == 0);
    p_of(buf_cstr(&rec), &p);
    assert_int_equal(buf_len(&p), buf_len(&spki));
    assert_memory_equal(buf_data(&p), buf_data(&spki), buf_len(&spki));
    assert_int_equal(crypto_spki_rsa_bits(buf_data(&p), buf_len(&p)), 1024);
    assert_int_equal(crypto_spki_rsa_bits("\x30\x03\x02\x01\x01", 5), -1);
    assert_int_equal(crypto_spki_rsa_bits(buf_data(&p), buf_len(&p) - 1), -1);
    free(pem);
    buf_free(&spki);
    buf_free(&rec);
    buf_free(&p);
}

static void test_ed25519_record_is_the_raw_key(void **state)
{
    (void)state;
    uint8_t pub[32];
    char *pem = ed_pem(pub);
    buf_t rec = BUF_INIT, p = BUF_INIT;
    struct dkim_spec spec = {.key_pem = pem};
    enum dkim_algorithm alg = DKIM_RSA_SHA256;
    char err[256];
    assert_int_equal(dkim_key_record(&spec, &alg, &rec, err, sizeof err), 0);
    assert_int_equal(alg, DKIM_ED25519_SHA256);
    assert_true(strncmp(buf_cstr(&rec), "v=DKIM1; k=ed25519; p=", 22) == 0);
    p_of(buf_cstr(&rec), &p);
    assert_int_equal(buf_len(&p), 32);
    assert_memory_equal(buf_data(&p), pub, 32);
    /* Not a key: said, nothing appended. */
    buf_reset(&rec);
    spec.key_pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    assert_int_equal(dkim_key_record(&spec, NULL, &rec, err, sizeof err), -1);
    assert_int_equal(buf_len(&rec), 0);
    assert_non_null(strstr(err, "cannot read"));
    free(pem);
    buf_free(&rec);
    buf_free(&p);
}

/* ---------------------------------------------------------------- zone lines */

static void test_zone_txt_short(void **state)
{
    (void)state;
    buf_t b = BUF_INIT;
    dkim_zone_txt("s1._domainkey.example.com", "v=DKIM1; k=ed25519; p=AAAA", 26, &b);
    assert_string_equal(buf_cstr(&b),
                        "s1._domainkey.example.com. IN TXT \"v=DKIM1; k=ed25519; p=AAAA\"");
    buf_reset(&b);
    dkim_zone_txt("example.com.", "", 0, &b); /* a dot already there; an empty string */
    assert_string_equal(buf_cstr(&b), "example.com. IN TXT \"\"");
    buf_reset(&b);
    dkim_zone_txt("x.test", "a\"b\\c\nd", 7, &b);
    assert_string_equal(buf_cstr(&b), "x.test. IN TXT \"a\\\"b\\\\c\\010d\"");
    buf_free(&b);
}

/* Strings of 255 bytes at most, cut where the text is, joined back whole. */
static void test_zone_txt_splits_at_255(void **state)
{
    (void)state;
    for (size_t len = 254; len <= 766; len += 1) {
        if (len > 256 && len < 509) {
            len = 509; /* around the boundaries only */
        }
        char *text = malloc(len + 1);
        for (size_t i = 0; i < len; i++) {
            text[i] = (char)('A' + i % 26);
        }
        text[len] = '\0';
        buf_t b = BUF_INIT;
        dkim_zone_txt("n.test", text, len, &b);
        const char *s = buf_cstr(&b);
        assert_true(strncmp(s, "n.test. IN TXT ", 15) == 0);
        buf_t joined = BUF_INIT;
        size_t strings = 0;
        for (const char *q = strchr(s, '"'); q; q = strchr(q + 1, '"')) {
            const char *end = strchr(q + 1, '"');
            assert_non_null(end);
            assert_true((size_t)(end - q - 1) <= DKIM_TXT_STRING_MAX);
            assert_true(end[1] == '\0' || end[1] == ' ');
            buf_append(&joined, q + 1, (size_t)(end - q - 1));
            strings++;
            q = end;
        }
        assert_int_equal(strings, (len + 254) / 255);
        assert_int_equal(buf_len(&joined), len);
        assert_memory_equal(buf_data(&joined), text, len);
        buf_free(&joined);
        buf_free(&b);
        free(text);
    }
}

/* ---------------------------------------------------------------- domains, alignment */

static void test_address_domain(void **state)
{
    (void)state;
    char d[256];
    dkim_address_domain("news@Example.COM", d, sizeof d);
    assert_string_equal(d, "example.com");
    dkim_address_domain("Acme News <news@acme.test>", d, sizeof d);
    assert_string_equal(d, "acme.test");
    dkim_address_domain("acme.test.", d, sizeof d);
    assert_string_equal(d, "acme.test");
    dkim_address_domain("news@", d, sizeof d);
    assert_string_equal(d, "");
    dkim_address_domain("", d, sizeof d);
    assert_string_equal(d, "");
    dkim_address_domain("a@averyveryverylongdomain.test", d, 8);
    assert_string_equal(d, "");
}

static void test_alignment(void **state)
{
    (void)state;
    /* relaxed: the same domain, or one under the other */
    assert_true(dkim_domains_align("example.com", "example.com", 0));
    assert_true(dkim_domains_align("Example.COM.", "example.com", 0));
    assert_true(dkim_domains_align("example.com", "news.example.com", 0));
    assert_true(dkim_domains_align("mail.example.com", "example.com", 0));
    assert_false(dkim_domains_align("mailer.net", "example.com", 0));
    assert_false(dkim_domains_align("ample.com", "example.com", 0)); /* a label boundary */
    assert_false(dkim_domains_align("news.example.com", "mail.example.com", 0));
    assert_false(dkim_domains_align("", "example.com", 0));
    /* strict: the same domain only */
    assert_true(dkim_domains_align("example.com", "EXAMPLE.com", 1));
    assert_false(dkim_domains_align("example.com", "news.example.com", 1));
    /* siblings share a parent of two labels or more; a TLD is no one's */
    assert_string_equal(dkim_shared_parent("news.example.com", "mail.example.com"), "example.com");
    assert_string_equal(dkim_shared_parent("a.b.example.com", "c.example.com"), "example.com");
    assert_null(dkim_shared_parent("mailer.net", "example.com"));
    assert_null(dkim_shared_parent("a.com", "b.com"));
}

static char *advice(const char *from, const char *domain, const char *pem)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    dkim_create_advice(f, from, domain, "s2024", pem);
    fclose(f);
    return text;
}

static void test_create_advice(void **state)
{
    (void)state;
    uint8_t pub[32];
    char *pem = ed_pem(pub);
    char b64[64];
    crypto_base64_encode(b64, pub, 32);
    char want[256];
    snprintf(want, sizeof want,
             "publish this DNS record for DKIM:\n"
             "  s2024._domainkey.example.com. IN TXT \"v=DKIM1; k=ed25519; p=%s\"\n",
             b64);
    char *t = advice("news@example.com", "example.com", pem);
    assert_string_equal(t, want); /* aligned: the record only */
    free(t);
    t = advice("Acme <news@mail.example.com>", "example.com", pem);
    assert_string_equal(t, want);
    free(t);
    t = advice("news@example.com", "mailer.net", pem);
    assert_non_null(strstr(t, "warning: DKIM d=mailer.net does not align with the From domain "
                              "example.com: DMARC will fail for Gmail/Yahoo bulk-sender rules"));
    assert_non_null(strstr(t, "sign with --dkim-domain example.com"));
    free(t);
    t = advice("news@news.example.com", "mail.example.com", pem);
    assert_non_null(strstr(t, "d=mail.example.com does not align with the From domain "
                              "news.example.com (unless their common parent example.com is the "
                              "organizational domain)"));
    free(t);
    t = advice("news@example.com", "example.com", NULL); /* no key: nothing */
    assert_string_equal(t, "");
    free(t);
    free(pem);
}

/* ---------------------------------------------------------------- parsers */

static void test_tags(void **state)
{
    (void)state;
    char v[64];
    const char *rec = " v = DKIM1 ;k=rsa;  p= MIIB IjAN ; t=y";
    assert_true(check_dns_tag(rec, "v", v, sizeof v));
    assert_string_equal(v, "DKIM1");
    assert_true(check_dns_tag(rec, "p", v, sizeof v));
    assert_string_equal(v, "MIIB IjAN");
    assert_true(check_dns_tag(rec, "t", v, sizeof v));
    assert_string_equal(v, "y");
    assert_false(check_dns_tag(rec, "h", v, sizeof v));
    assert_false(check_dns_tag("v=DMARC1; sp=none", "p", v, sizeof v)); /* sp= is not p= */
    assert_true(check_dns_tag("v=DKIM1; p=", "p", v, sizeof v));
    assert_string_equal(v, "");
    assert_true(check_dns_tag("rua=mailto:a@b.test", "rua", v, 4));
    assert_string_equal(v, "mai");
}

static void test_spf_parse(void **state)
{
    (void)state;
    assert_true(check_dns_is_spf("v=spf1 -all"));
    assert_true(check_dns_is_spf("V=SPF1"));
    assert_false(check_dns_is_spf("v=spf10 -all"));
    assert_false(check_dns_is_spf("spf2.0/pra -all"));
    assert_false(check_dns_is_spf(" v=spf1 -all"));
    char e[64];
    check_dns_spf_ending("v=spf1 ip4:192.0.2.1 -all", e, sizeof e);
    assert_string_equal(e, "-all");
    check_dns_spf_ending("v=spf1 include:_spf.example.com ~ALL", e, sizeof e);
    assert_string_equal(e, "~all");
    check_dns_spf_ending("v=spf1 ?all", e, sizeof e);
    assert_string_equal(e, "?all");
    check_dns_spf_ending("v=spf1 all", e, sizeof e);
    assert_string_equal(e, "+all");
    check_dns_spf_ending("v=spf1 -all ~all", e, sizeof e); /* the first one counts */
    assert_string_equal(e, "-all");
    check_dns_spf_ending("v=spf1 mx redirect=_spf.example.com", e, sizeof e);
    assert_string_equal(e, "redirect=_spf.example.com");
    check_dns_spf_ending("v=spf1 redirect=_spf.example.com -all", e, sizeof e);
    assert_string_equal(e, "-all"); /* all wins over redirect */
    check_dns_spf_ending("v=spf1 ip4:192.0.2.1", e, sizeof e);
    assert_string_equal(e, "");
    check_dns_spf_ending("v=spf1 exists:all.example.com", e, sizeof e);
    assert_string_equal(e, "");
}

/* ---------------------------------------------------------------- the report */

#define ED_P "p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

static const char *const good_dkim[] = {"v=DKIM1; k=ed25519; " ED_P};
static const char *const good_spf[] = {"google-site-verification=x", "v=spf1 ip4:192.0.2.1 -all"};
static const char *const good_dmarc[] = {"v=DMARC1; p=reject; rua=mailto:d@acme.test"};

static void answer(struct check_dns_answer *a, const char *name, const char *const *recs, size_t n)
{
    snprintf(a->name, sizeof a->name, "%s", name);
    a->status = DNS_OK;
    a->records = recs;
    a->n = n;
}

/* acme.test with everything right: DKIM s1 (ed25519), SPF, DMARC. */
static void good_input(struct check_dns_input *in)
{
    memset(in, 0, sizeof *in);
    in->from = in->dkim_domain = in->return_path = "acme.test";
    in->return_path_from = "MAIL FROM is the From address";
    in->selector = "s1";
    answer(&in->dkim, "s1._domainkey.acme.test", good_dkim, 1);
    answer(&in->spf_rp, "acme.test", good_spf, 2);
    answer(&in->dmarc[0], "_dmarc.acme.test", good_dmarc, 1);
    in->ndmarc = 1;
}

static int report(const struct check_dns_input *in, char **text)
{
    size_t len = 0;
    FILE *f = open_memstream(text, &len);
    int rc = check_dns_report(in, f);
    fclose(f);
    return rc;
}

#define HAS(t, s)                                                                                  \
    do {                                                                                           \
        if (!strstr((t), (s))) {                                                                   \
            fail_msg("wanted \"%s\" in:\n%s", (s), (t));                                           \
        }                                                                                          \
    } while (0)
#define HASNT(t, s)                                                                                \
    do {                                                                                           \
        if (strstr((t), (s))) {                                                                    \
            fail_msg("did not want \"%s\" in:\n%s", (s), (t));                                     \
        }                                                                                          \
    } while (0)

static void test_report_all_good(void **state)
{
    (void)state;
    struct check_dns_input in;
    good_input(&in);
    char *t;
    assert_int_equal(report(&in, &t), 0);
    HAS(t, "OK      DKIM s1._domainkey.acme.test: v=DKIM1, k=ed25519\n");
    HAS(t, "OK      SPF acme.test: \"v=spf1 ip4:192.0.2.1 -all\" ends with -all");
    HAS(t, "OK      DMARC _dmarc.acme.test: p=reject, rua=mailto:d@acme.test\n");
    HAS(t, "OK      SPF alignment: return path acme.test");
    HAS(t, "OK      DKIM alignment: d=acme.test is the From domain acme.test\n");
    HAS(t, "Gmail and Yahoo bulk-sender requirements: met\n");
    HASNT(t, "WARN");
    free(t);
}

static void test_report_missing_and_double(void **state)
{
    (void)state;
    static const char *const two_spf[] = {"v=spf1 -all", "v=spf1 ~all"};
    static const char *const other[] = {"hello"};
    struct check_dns_input in;
    good_input(&in);
    answer(&in.spf_rp, "acme.test", two_spf, 2);
    answer(&in.dmarc[0], "_dmarc.acme.test", other, 1);
    char *t;
    assert_int_equal(report(&in, &t), 1);
    HAS(t, "ERROR   SPF acme.test: 2 v=spf1 records: permerror");
    HAS(t, "MISSING DMARC _dmarc.acme.test: no v=DMARC1 record; publish  _dmarc.acme.test. IN TXT "
           "\"v=DMARC1; p=none; rua=mailto:dmarc-reports@acme.test\"");
    HAS(t, "requirements: not met: SPF permerror (several v=spf1 records), DMARC missing\n");
    free(t);

    good_input(&in);
    in.spf_rp.status = DNS_NXDOMAIN;
    in.spf_rp.n = 0;
    in.dkim.n = 0;
    in.spf_hint = "ip4:192.0.2.10 ip6:2001:db8::1";
    char *t2;
    assert_int_equal(report(&in, &t2), 1);
    HAS(t2, "MISSING DKIM s1._domainkey.acme.test: no key record; publish the record");
    HAS(t2, "MISSING SPF acme.test: no v=spf1 record (NXDOMAIN: no such domain); publish  "
            "acme.test. IN TXT \"v=spf1 ip4:192.0.2.10 ip6:2001:db8::1 -all\"\n");
    HAS(t2, "not met: DKIM missing, SPF missing\n");
    free(t2);
}

/* A lookup that failed is "could not be checked", never "missing". */
static void test_report_lookup_failed(void **state)
{
    (void)state;
    struct check_dns_input in;
    good_input(&in);
    in.dmarc[0].status = DNS_TEMPFAIL;
    in.dmarc[0].n = 0;
    in.dmarc[0].error = "SERVFAIL";
    char *t;
    assert_int_equal(report(&in, &t), 1);
    HAS(t, "ERROR   DMARC _dmarc.acme.test: lookup failed (SERVFAIL): could not be checked\n");
    HASNT(t, "MISSING");
    HAS(t, "not met: DMARC could not be checked (_dmarc.acme.test lookup failed)\n");
    free(t);
}

static void test_report_dkim_problems(void **state)
{
    (void)state;
    static const char *const revoked[] = {"v=DKIM1; k=rsa; p="};
    static const char *const badtype[] = {"v=DKIM1; k=dsa; p=AAAA"};
    static const char *const short_ed[] = {"v=DKIM1; k=ed25519; p=AAAA"};
    static const char *const notrsa[] = {"v=DKIM1; p=AAAA"};
    static const char *const testing[] = {"v=DKIM1; k=ed25519; t=y; " ED_P};
    static const char *const two[] = {"v=DKIM1; k=ed25519; " ED_P, "v=DKIM1; k=ed25519; " ED_P};
    struct {
        const char *const *recs;
        size_t n;
        const char *want;
        int rc;
    } cases[] = {
        {revoked, 1, "ERROR   DKIM s1._domainkey.acme.test: p= is empty: the key is revoked", 1},
        {badtype, 1, "k=dsa: not a key type verifiers know", 1},
        {short_ed, 1, "k=ed25519 with a p= of 3 bytes", 1},
        {notrsa, 1, "p= is not an RSA public key", 1},
        {testing, 1, "WARN    DKIM s1._domainkey.acme.test: v=DKIM1, k=ed25519; t=y (testing)", 0},
        {two, 2, "ERROR   DKIM s1._domainkey.acme.test: 2 key records", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct check_dns_input in;
        good_input(&in);
        answer(&in.dkim, "s1._domainkey.acme.test", cases[i].recs, cases[i].n);
        char *t;
        assert_int_equal(report(&in, &t), cases[i].rc);
        HAS(t, cases[i].want);
        free(t);
    }
}

static void test_report_key_mismatch(void **state)
{
    (void)state;
    struct check_dns_input in;
    good_input(&in);
    in.key_file = "s1.pem";
    in.key_record = "v=DKIM1; k=ed25519; p=AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    char *t;
    assert_int_equal(report(&in, &t), 1);
    HAS(t, "ERROR   DKIM s1._domainkey.acme.test: the published key (k=ed25519) is not the public "
           "key of s1.pem; publish  s1._domainkey.acme.test. IN TXT \"v=DKIM1; k=ed25519; "
           "p=AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n");
    HAS(t, "not met: DKIM key does not match --dkim-key\n");
    free(t);
    in.key_record = "v=DKIM1; k=ed25519; " ED_P;
    assert_int_equal(report(&in, &t), 0);
    HAS(t, "OK      DKIM s1._domainkey.acme.test: v=DKIM1, k=ed25519, the public key of s1.pem\n");
    free(t);
}

static void test_report_alignment(void **state)
{
    (void)state;
    static const char *const rp_spf[] = {"v=spf1 ip4:192.0.2.1 -all"};
    struct check_dns_input in;
    /* The return path elsewhere: DKIM carries DMARC, SPF alignment is a warning. */
    good_input(&in);
    in.return_path = "bounce.mailer.test";
    in.return_path_from = "--return-path";
    answer(&in.spf_rp, "bounce.mailer.test", rp_spf, 1);
    answer(&in.spf_from, "acme.test", good_spf, 2);
    char *t;
    assert_int_equal(report(&in, &t), 0);
    HAS(t, "OK      SPF bounce.mailer.test:");
    HAS(t, "OK      SPF acme.test:");
    HAS(t, "WARN    SPF alignment: return path bounce.mailer.test (--return-path) does not align "
           "with the From domain acme.test: SPF does not count for DMARC (DKIM carries it)");
    HAS(t, "requirements: met\n");
    free(t);
    /* ... and with d= elsewhere too: nothing aligns. */
    in.dkim_domain = "mailer.test";
    answer(&in.dkim, "s1._domainkey.mailer.test", good_dkim, 1);
    assert_int_equal(report(&in, &t), 1);
    HAS(t, "ERROR   SPF alignment: return path bounce.mailer.test");
    HAS(t, "ERROR   DKIM alignment: d=mailer.test does not align with the From domain acme.test");
    HAS(t, "not met: neither DKIM nor SPF aligned with the From domain\n");
    free(t);
    /* A return path under the From domain aligns; adkim=s refuses a parent d=. */
    static const char *const strict[] = {"v=DMARC1; p=quarantine; adkim=s; rua=mailto:d@a.test"};
    good_input(&in);
    in.from = "news.acme.test";
    in.return_path = "bounce.news.acme.test";
    answer(&in.spf_rp, "bounce.news.acme.test", rp_spf, 1);
    answer(&in.spf_from, "news.acme.test", rp_spf, 1);
    answer(&in.dmarc[0], "_dmarc.news.acme.test", NULL, 0);
    answer(&in.dmarc[1], "_dmarc.acme.test", strict, 1);
    in.ndmarc = 2;
    assert_int_equal(report(&in, &t), 0);
    HAS(t, "OK      DMARC _dmarc.acme.test: p=quarantine, rua=mailto:d@a.test (none at "
           "_dmarc.news.acme.test: this one applies to news.acme.test)\n");
    HAS(t, "OK      SPF alignment: return path bounce.news.acme.test");
    HAS(t, "is under the From domain news.acme.test\n");
    HAS(t, "WARN    DKIM alignment: d=acme.test does not align with the From domain "
           "news.acme.test (adkim=s: it must be the same domain)");
    free(t);
}

static void test_report_spf_endings_and_dmarc(void **state)
{
    (void)state;
    static const char *const plus[] = {"v=spf1 +all"};
    static const char *const neutral[] = {"v=spf1 ip4:192.0.2.1 ?all"};
    static const char *const none[] = {"v=DMARC1; p=none"};
    static const char *const bad[] = {"v=DMARC1; p=block; rua=mailto:x@acme.test"};
    static const char *const twod[] = {"v=DMARC1; p=none", "v=DMARC1; p=reject"};
    struct check_dns_input in;
    char *t;
    good_input(&in);
    answer(&in.spf_rp, "acme.test", plus, 1);
    assert_int_equal(report(&in, &t), 1);
    HAS(t, "ERROR   SPF acme.test: \"v=spf1 +all\" ends with +all: anyone may send as acme.test");
    HAS(t, "not met: SPF +all\n");
    free(t);
    good_input(&in);
    answer(&in.spf_rp, "acme.test", neutral, 1);
    answer(&in.dmarc[0], "_dmarc.acme.test", none, 1);
    assert_int_equal(report(&in, &t), 0);
    HAS(t, "WARN    SPF acme.test: \"v=spf1 ip4:192.0.2.1 ?all\" ends with ?all");
    HAS(t, "WARN    DMARC _dmarc.acme.test: p=none; monitoring only");
    HAS(t, "; no rua=");
    free(t);
    good_input(&in);
    answer(&in.dmarc[0], "_dmarc.acme.test", bad, 1);
    assert_int_equal(report(&in, &t), 1);
    HAS(t, "p=block is not none, quarantine or reject");
    free(t);
    good_input(&in);
    answer(&in.dmarc[0], "_dmarc.acme.test", twod, 2);
    assert_int_equal(report(&in, &t), 1);
    HAS(t, "ERROR   DMARC _dmarc.acme.test: 2 v=DMARC1 records");
    free(t);
    good_input(&in);
    in.selector = NULL;
    assert_int_equal(report(&in, &t), 1);
    HAS(t, "WARN    DKIM: not checked: name the selector with --dkim-selector S");
    HASNT(t, "DKIM alignment");
    HAS(t, "not met: DKIM not checked (no --dkim-selector)\n");
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rsa_record_is_the_spki),
        cmocka_unit_test(test_ed25519_record_is_the_raw_key),
        cmocka_unit_test(test_zone_txt_short),
        cmocka_unit_test(test_zone_txt_splits_at_255),
        cmocka_unit_test(test_address_domain),
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_create_advice),
        cmocka_unit_test(test_tags),
        cmocka_unit_test(test_spf_parse),
        cmocka_unit_test(test_report_all_good),
        cmocka_unit_test(test_report_missing_and_double),
        cmocka_unit_test(test_report_lookup_failed),
        cmocka_unit_test(test_report_dkim_problems),
        cmocka_unit_test(test_report_key_mismatch),
        cmocka_unit_test(test_report_alignment),
        cmocka_unit_test(test_report_spf_endings_and_dmarc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
