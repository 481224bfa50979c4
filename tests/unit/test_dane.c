/*
 * test_dane - engine/dane.h (TLSA matching, RFC 7672) against certificates
 * made here with BoringSSL (a CA, leaves for mx.example, one expired),
 * pool/dns.h's dns_tlsa_parse over hand-built DNS answers, and pool/dane.h's
 * set id and verdicts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "engine/dane.h"
#include "engine/loop.h"
#include "pool/dane.h"
#include "pool/dns.h"

/* A certificate made for the tests: DER and its SPKI's DER. */
struct tcert {
    X509 *x;
    EVP_PKEY *key;
    uint8_t *der;
    size_t len;
    uint8_t *spki;
    size_t spki_len;
};

static EVP_PKEY *tkey(void)
{
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    assert_non_null(ec);
    assert_int_equal(EC_KEY_generate_key(ec), 1);
    EVP_PKEY *k = EVP_PKEY_new();
    assert_int_equal(EVP_PKEY_assign_EC_KEY(k, ec), 1);
    return k;
}

/* A certificate for cn (and DNS name san, if any), signed by issuer (NULL:
 * self-signed), valid from days_from to days_to relative to now. */
static void tcert_make(struct tcert *c, const char *cn, const char *san, int ca,
                       const struct tcert *issuer, long days_from, long days_to)
{
    static long serial = 1;
    memset(c, 0, sizeof *c);
    c->key = tkey();
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer->x) : name);
    X509_gmtime_adj(X509_getm_notBefore(x), days_from * 86400);
    X509_gmtime_adj(X509_getm_notAfter(x), days_to * 86400);
    X509_set_pubkey(x, c->key);
    X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, NULL, NID_basic_constraints,
                                             ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    if (ca) {
        e = X509V3_EXT_nconf_nid(NULL, NULL, NID_key_usage, "critical,keyCertSign,cRLSign");
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    if (san) {
        char v[300];
        snprintf(v, sizeof v, "DNS:%s", san);
        e = X509V3_EXT_nconf_nid(NULL, NULL, NID_subject_alt_name, v);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(x, issuer ? issuer->key : c->key, EVP_sha256()) > 0);
    c->x = x;
    int n = i2d_X509(x, &c->der);
    assert_true(n > 0);
    c->len = (size_t)n;
    n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &c->spki);
    assert_true(n > 0);
    c->spki_len = (size_t)n;
}

static void tcert_free(struct tcert *c)
{
    X509_free(c->x);
    EVP_PKEY_free(c->key);
    OPENSSL_free(c->der);
    OPENSSL_free(c->spki);
}

/* Shared by the tests: a CA, a leaf for mx.example signed by it, an
 * expired leaf for mx.example signed by it, a stranger self-signed. */
static struct tcert ca, leaf, expired, stranger;
static uint8_t h_leaf_spki[32], h_ca_cert[32], h_exp_spki[32], h512_leaf_cert[64];

static int setup(void **state)
{
    (void)state;
    tcert_make(&ca, "Test CA", NULL, 1, NULL, -1, 3650);
    tcert_make(&leaf, "mx.example", "mx.example", 0, &ca, -1, 365);
    tcert_make(&expired, "mx.example", "mx.example", 0, &ca, -30, -1);
    tcert_make(&stranger, "mx.example", "mx.example", 0, NULL, -1, 365);
    SHA256(leaf.spki, leaf.spki_len, h_leaf_spki);
    SHA256(ca.der, ca.len, h_ca_cert);
    SHA256(expired.spki, expired.spki_len, h_exp_spki);
    SHA512(leaf.der, leaf.len, h512_leaf_cert);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tcert_free(&ca);
    tcert_free(&leaf);
    tcert_free(&expired);
    tcert_free(&stranger);
    return 0;
}

/* dane_match over chain (leaf first) for host. */
static enum dane_result match(const struct dane_tlsa *recs, size_t n,
                              const struct tcert *const *chain, size_t nc, const char *host,
                              char *why, size_t whylen, long *verr)
{
    const uint8_t *ders[4];
    size_t lens[4];
    for (size_t i = 0; i < nc; i++) {
        ders[i] = chain[i]->der;
        lens[i] = chain[i]->len;
    }
    why[0] = '\0';
    return dane_match(recs, n, ders, lens, nc, host, why, whylen, verr);
}

static void test_dane_ee_spki_sha256_no_name_or_expiry(void **state)
{
    (void)state;
    char why[300];
    struct dane_tlsa r = {3, 1, 1, h_leaf_spki, 32};
    const struct tcert *chain[] = {&leaf, &ca};
    /* A name that is not in the certificate: DANE-EE checks none. */
    assert_int_equal(match(&r, 1, chain, 2, "other.example", why, sizeof why, NULL), DANE_MATCHED);
    struct dane_tlsa re = {3, 1, 1, h_exp_spki, 32};
    const struct tcert *echain[] = {&expired};
    assert_int_equal(match(&re, 1, echain, 1, "mx.example", why, sizeof why, NULL), DANE_MATCHED);
}

static void test_dane_ee_full_and_sha512(void **state)
{
    (void)state;
    char why[300];
    const struct tcert *chain[] = {&leaf};
    struct dane_tlsa full = {3, 0, 0, leaf.der, leaf.len};
    assert_int_equal(match(&full, 1, chain, 1, "mx.example", why, sizeof why, NULL), DANE_MATCHED);
    struct dane_tlsa s512 = {3, 0, 2, h512_leaf_cert, 64};
    assert_int_equal(match(&s512, 1, chain, 1, "mx.example", why, sizeof why, NULL), DANE_MATCHED);
    struct dane_tlsa spki_full = {3, 1, 0, leaf.spki, leaf.spki_len};
    assert_int_equal(match(&spki_full, 1, chain, 1, "mx.example", why, sizeof why, NULL),
                     DANE_MATCHED);
}

static void test_dane_ee_mismatch_says_which(void **state)
{
    (void)state;
    char why[300];
    struct dane_tlsa r = {3, 1, 1, h_leaf_spki, 32};
    const struct tcert *chain[] = {&stranger};
    assert_int_equal(match(&r, 1, chain, 1, "mx.example", why, sizeof why, NULL), DANE_NO_MATCH);
    char want[120], hex[9];
    for (int i = 0; i < 4; i++) {
        snprintf(hex + 2 * i, 3, "%02x", h_leaf_spki[i]);
    }
    snprintf(want, sizeof want, "DANE: no TLSA record matches the server's certificate (3 1 1 %s",
             hex);
    assert_non_null(strstr(why, want));
    /* DANE-EE never matches an intermediate or the CA */
    struct dane_tlsa rca = {3, 0, 1, h_ca_cert, 32};
    const struct tcert *chain2[] = {&leaf, &ca};
    assert_int_equal(match(&rca, 1, chain2, 2, "mx.example", why, sizeof why, NULL), DANE_NO_MATCH);
}

static void test_dane_ta_chain_and_name(void **state)
{
    (void)state;
    char why[300];
    long verr = 0;
    struct dane_tlsa r = {2, 0, 1, h_ca_cert, 32};
    const struct tcert *chain[] = {&leaf, &ca};
    assert_int_equal(match(&r, 1, chain, 2, "mx.example", why, sizeof why, &verr), DANE_MATCHED);
    assert_int_equal(match(&r, 1, chain, 2, "other.example", why, sizeof why, &verr),
                     DANE_CHAIN_INVALID);
    assert_int_equal(verr, X509_V_ERR_HOSTNAME_MISMATCH);
    assert_non_null(strstr(why, "DANE: trust anchor 2 0 1 "));
    assert_non_null(strstr(why, "matched, but the chain does not verify"));
    const struct tcert *echain[] = {&expired, &ca};
    assert_int_equal(match(&r, 1, echain, 2, "mx.example", why, sizeof why, &verr),
                     DANE_CHAIN_INVALID);
    assert_int_equal(verr, X509_V_ERR_CERT_HAS_EXPIRED);
    /* A server that leaves the anchor out of its chain is not matched. */
    const struct tcert *short_chain[] = {&leaf};
    assert_int_equal(match(&r, 1, short_chain, 1, "mx.example", why, sizeof why, &verr),
                     DANE_NO_MATCH);
    /* A stranger's leaf does not chain to the anchor. */
    const struct tcert *bad[] = {&stranger, &ca};
    assert_int_equal(match(&r, 1, bad, 2, "mx.example", why, sizeof why, &verr),
                     DANE_CHAIN_INVALID);
}

static void test_dane_unusable_records_ignored(void **state)
{
    (void)state;
    char why[300];
    const struct tcert *chain[] = {&leaf, &ca};
    struct dane_tlsa recs[] = {
        {1, 1, 1, h_leaf_spki, 32}, /* PKIX-EE: not for SMTP */
        {0, 0, 1, h_ca_cert, 32},   /* PKIX-TA */
        {3, 1, 1, h_leaf_spki, 31}, /* a SHA-256 of 31 bytes */
        {3, 2, 1, h_leaf_spki, 32}, /* selector 2 */
        {3, 1, 3, h_leaf_spki, 32}, /* matching type 3 */
        {4, 1, 1, h_leaf_spki, 32}, /* usage 4 */
    };
    size_t n = sizeof recs / sizeof recs[0];
    assert_int_equal(dane_usable(recs, n), 0);
    assert_int_equal(match(recs, n, chain, 2, "mx.example", why, sizeof why, NULL), DANE_NO_MATCH);
    /* one usable record among them decides */
    struct dane_tlsa more[7];
    memcpy(more, recs, sizeof recs);
    more[6] = (struct dane_tlsa){3, 1, 1, h_leaf_spki, 32};
    assert_int_equal(dane_usable(more, 7), 1);
    assert_int_equal(match(more, 7, chain, 2, "mx.example", why, sizeof why, NULL), DANE_MATCHED);
}

static void test_dane_no_certificate(void **state)
{
    (void)state;
    char why[300];
    struct dane_tlsa r = {3, 1, 1, h_leaf_spki, 32};
    const uint8_t junk[] = {0x30, 0x03, 0x01, 0x01, 0xff};
    const uint8_t *ders[] = {junk};
    size_t lens[] = {sizeof junk};
    assert_int_equal(dane_match(&r, 1, ders, lens, 1, "mx.example", why, sizeof why, NULL),
                     DANE_NO_MATCH);
    assert_string_equal(why, "DANE: the server sent no certificate we can read");
    assert_int_equal(dane_match(&r, 1, NULL, NULL, 0, "mx.example", why, sizeof why, NULL),
                     DANE_NO_MATCH);
}

static void test_dane_tlsa_text(void **state)
{
    (void)state;
    const uint8_t d[] = {0xab, 0x01, 0xff};
    struct dane_tlsa r = {3, 1, 1, d, 3};
    char out[32];
    dane_tlsa_text(&r, out, sizeof out);
    assert_string_equal(out, "3 1 1 ab01ff");
    char small[9];
    dane_tlsa_text(&r, small, sizeof small);
    assert_string_equal(small, "3 1 1 ab");
}

/* ---- dns_tlsa_parse over raw answers ---- */

static size_t put_name(uint8_t *p, const char *name)
{
    size_t at = 0;
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t n = dot ? (size_t)(dot - name) : strlen(name);
        p[at++] = (uint8_t)n;
        memcpy(p + at, name, n);
        at += n;
        name += n + (dot ? 1 : 0);
    }
    p[at++] = 0;
    return at;
}

static size_t put_rr(uint8_t *p, uint16_t type, uint32_t ttl, const uint8_t *rd, uint16_t rdlen)
{
    size_t at = 0;
    p[at++] = 0xc0; /* pointer to the question's name */
    p[at++] = 12;
    p[at++] = (uint8_t)(type >> 8), p[at++] = (uint8_t)type;
    p[at++] = 0, p[at++] = 1; /* IN */
    p[at++] = (uint8_t)(ttl >> 24), p[at++] = (uint8_t)(ttl >> 16);
    p[at++] = (uint8_t)(ttl >> 8), p[at++] = (uint8_t)ttl;
    p[at++] = (uint8_t)(rdlen >> 8), p[at++] = (uint8_t)rdlen;
    memcpy(p + at, rd, rdlen);
    return at + rdlen;
}

static void test_dns_tlsa_parse(void **state)
{
    (void)state;
    uint8_t m[512] = {0x12, 0x34, 0x81, 0xa0, 0, 1, 0, 3, 0, 0, 0, 0}; /* QR RD RA AD, 3 answers */
    size_t at = 12;
    at += put_name(m + at, "_25._tcp.mx.example");
    m[at++] = 0, m[at++] = 52, m[at++] = 0, m[at++] = 1;
    uint8_t rd1[3 + 32];
    rd1[0] = 3, rd1[1] = 1, rd1[2] = 1;
    memcpy(rd1 + 3, h_leaf_spki, 32);
    at += put_rr(m + at, 52, 600, rd1, sizeof rd1);
    uint8_t sig[20] = {0, 52}; /* an RRSIG beside them: skipped */
    at += put_rr(m + at, 46, 600, sig, sizeof sig);
    uint8_t rd2[3 + 4] = {2, 0, 0, 1, 2, 3, 4};
    at += put_rr(m + at, 52, 120, rd2, sizeof rd2);
    struct dns_tlsa_answer *a = malloc(sizeof *a);
    assert_int_equal(dns_tlsa_parse(m, (int)at, a), 0);
    assert_int_equal(a->n, 2);
    assert_int_equal(a->ttl, 120);
    assert_int_equal(a->recs[0].usage, 3);
    assert_int_equal(a->recs[0].selector, 1);
    assert_int_equal(a->recs[0].mtype, 1);
    assert_int_equal(a->recs[0].len, 32);
    assert_memory_equal(a->recs[0].data, h_leaf_spki, 32);
    assert_int_equal(a->recs[1].usage, 2);
    assert_int_equal(a->recs[1].len, 4);
    assert_memory_equal(a->recs[1].data, rd2 + 3, 4);
    /* cut short: malformed, never read past the end */
    assert_int_equal(dns_tlsa_parse(m, (int)at - 5, a), -1);
    assert_int_equal(dns_tlsa_parse(m, 5, a), -1);
    /* a record with less than 3 bytes of RDATA is skipped */
    uint8_t m2[512] = {0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0};
    size_t at2 = 12;
    at2 += put_name(m2 + at2, "_25._tcp.mx.example");
    m2[at2++] = 0, m2[at2++] = 52, m2[at2++] = 0, m2[at2++] = 1;
    at2 += put_rr(m2 + at2, 52, 60, rd2, 2);
    assert_int_equal(dns_tlsa_parse(m2, (int)at2, a), 0);
    assert_int_equal(a->n, 0);
    free(a);
}

/* ---- pool/dane.h ---- */

static void test_pool_dane_set_id(void **state)
{
    (void)state;
    struct dane_tlsa ab[] = {{3, 1, 1, h_leaf_spki, 32}, {2, 0, 1, h_ca_cert, 32}};
    struct dane_tlsa ba[] = {{2, 0, 1, h_ca_cert, 32}, {3, 1, 1, h_leaf_spki, 32}};
    char id1[17], id2[17], id3[17], text[400];
    pool_dane_set_id(ab, 2, id1, sizeof id1, text, sizeof text);
    pool_dane_set_id(ba, 2, id2, sizeof id2, NULL, 0);
    pool_dane_set_id(ab, 1, id3, sizeof id3, NULL, 0);
    assert_int_equal(strlen(id1), 16);
    assert_string_equal(id1, id2); /* the order of the answer does not matter */
    assert_string_not_equal(id1, id3);
    assert_true(strncmp(text, "2 0 1 ", 6) == 0); /* sorted, one per line */
    assert_non_null(strstr(text, "\n3 1 1 "));
}

static void test_pool_dane_verdict(void **state)
{
    (void)state;
    char out[400];
    struct dane_tlsa recs[] = {{3, 1, 1, h_leaf_spki, 32}, {1, 1, 1, h_leaf_spki, 32}};
    struct dns_tlsa_result r = {
        .status = DNS_OK, .secure = 1, .recs = recs, .n = 2, .name = "_25._tcp.mx.example"};
    assert_string_equal(pool_dane_verdict(1, 1, &r, out, sizeof out), "dane");
    assert_non_null(strstr(out, "DANE: 1 usable TLSA record, id "));
    r.n = 1;
    r.recs = &recs[1];
    assert_string_equal(pool_dane_verdict(1, 1, &r, out, sizeof out), "dane-unusable");
    assert_non_null(strstr(out, "none usable: TLS mandatory, unauthenticated"));
    assert_string_equal(pool_dane_verdict(0, 1, &r, out, sizeof out), "insecure");
    assert_string_equal(out, "DANE: no (MX answer insecure: falls back to MTA-STS or the config)");
    assert_string_equal(pool_dane_verdict(1, 0, &r, out, sizeof out), "insecure");
    assert_string_equal(out,
                        "DANE: no (address answer insecure: falls back to MTA-STS or the config)");
    r.secure = 0;
    assert_string_equal(pool_dane_verdict(1, 1, &r, out, sizeof out), "insecure");
    assert_string_equal(out, "DANE: no (TLSA answer insecure: falls back)");
    assert_string_equal(pool_dane_verdict(1, 1, NULL, out, sizeof out), "none");
    assert_string_equal(out, "DANE: TLSA not looked up");
    struct dns_tlsa_result f = {
        .status = DNS_TEMPFAIL, .name = "_25._tcp.mx.example", .error = "SERVFAIL"};
    assert_string_equal(pool_dane_verdict(1, 1, &f, out, sizeof out), "tempfail");
    assert_string_equal(out, "DANE: TLSA lookup of _25._tcp.mx.example failed (SERVFAIL): mail to "
                             "this host is deferred");
    struct dns_tlsa_result none = {.status = DNS_NXDOMAIN, .name = "_25._tcp.mx.example"};
    assert_string_equal(pool_dane_verdict(1, 1, &none, out, sizeof out), "none");
    assert_string_equal(out, "DANE: no TLSA records at _25._tcp.mx.example (falls back)");
}

/* ---- pool_dane_probe over pool/dns.c against a fake validating resolver ---- */

/* A UDP "resolver" on a thread: answers from a fixed table, AD set for the
 * names of a signed zone, SERVFAIL for a bogus TLSA. */
struct fake_dns {
    int fd;
    unsigned short port;
    volatile int stop;
    pthread_t thread;
};

static size_t fake_answer(const uint8_t *q, size_t qlen, uint8_t *out)
{
    char name[256];
    size_t at = 12, n = 0;
    while (at < qlen && q[at] && n < sizeof name - 64) {
        if (n) {
            name[n++] = '.';
        }
        memcpy(name + n, q + at + 1, q[at]);
        n += q[at];
        at += q[at] + 1;
    }
    name[n] = '\0';
    if (at + 5 > qlen) {
        return 0;
    }
    unsigned type = (unsigned)(q[at + 1] << 8 | q[at + 2]);
    size_t qend = at + 5;
    memcpy(out, q, qend);
    out[2] = 0x81; /* QR, RD */
    int ad = strstr(name, "plain.example") == NULL;
    out[3] = (uint8_t)(0x80 | (ad ? 0x20 : 0)); /* RA, AD */
    out[6] = out[7] = out[8] = out[9] = out[10] = out[11] = 0;
    if (type == 52 && strcmp(name, "_25._tcp.bad.example") == 0) {
        out[3] = 0x82; /* SERVFAIL: what a validator says of a bogus answer */
        return qend;
    }
    uint8_t rd[64];
    uint16_t rdlen = 0;
    if (type == 1) {
        rd[0] = 127, rd[1] = 0, rd[2] = 0, rd[3] = 9;
        rdlen = 4;
    } else if (type == 52 && strncmp(name, "_25._tcp.", 9) == 0) {
        rd[0] = 3, rd[1] = 1, rd[2] = 1;
        memcpy(rd + 3, h_leaf_spki, 32);
        rdlen = 35;
    } else {
        return qend; /* NODATA (AAAA) */
    }
    out[7] = 1;
    return qend + put_rr(out + qend, (uint16_t)type, 300, rd, rdlen);
}

static void *fake_dns_run(void *arg)
{
    struct fake_dns *f = arg;
    while (!f->stop) {
        uint8_t q[512], a[1024];
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(f->fd, q, sizeof q, 0, (struct sockaddr *)&peer, &plen);
        if (n < 12) {
            continue;
        }
        size_t alen = fake_answer(q, (size_t)n, a);
        if (alen) {
            sendto(f->fd, a, alen, 0, (struct sockaddr *)&peer, plen);
        }
    }
    return NULL;
}

static void fake_dns_start(struct fake_dns *f)
{
    memset(f, 0, sizeof *f);
    f->fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(f->fd, (struct sockaddr *)&sin, sizeof sin), 0);
    socklen_t len = sizeof sin;
    getsockname(f->fd, (struct sockaddr *)&sin, &len);
    f->port = ntohs(sin.sin_port);
    struct timeval tv = {0, 100000};
    setsockopt(f->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_dns_run, f), 0);
}

static void fake_dns_stop(struct fake_dns *f)
{
    f->stop = 1;
    pthread_join(f->thread, NULL);
    close(f->fd);
}

/* A run of probes, one after the other on one loop (loop_stop is for good:
 * one loop per run). */
struct probe_run {
    struct loop *loop;
    struct dns *d;
    const char *const *hosts;
    const int *mx_secure;
    size_t n, next;
    uint64_t tlsa_queries, tlsa_hits;
    struct loop_timer timeout;
    char verdict[8][32], text[8][600];
    int addr_secure[8];
};

static void probe_next(struct probe_run *r);

static void probe_cb(void *user, const struct pool_dane_probe_result *res)
{
    struct probe_run *r = user;
    size_t i = r->next++;
    r->addr_secure[i] = res->addr_secure;
    snprintf(r->verdict[i], sizeof r->verdict[i], "%s", res->verdict);
    snprintf(r->text[i], sizeof r->text[i], "%s", res->text);
    probe_next(r);
}

static void probe_next(struct probe_run *r)
{
    if (r->next < r->n) {
        pool_dane_probe(r->d, r->hosts[r->next], 25, r->mx_secure[r->next], probe_cb, r);
        return;
    }
    /* Done: the resolver goes (its polls end on the loop), then the loop. */
    dns_tlsa_stats(r->d, &r->tlsa_queries, &r->tlsa_hits);
    dns_free(r->d);
    r->d = NULL;
    loop_timer_cancel(r->loop, &r->timeout);
    loop_stop_when_idle(r->loop);
}

static void probe_timeout(struct loop_timer *t)
{
    loop_stop(t->owner);
}

/* Probe hosts (n of them, mx_secure each) through a resolver at port. */
static void probe(unsigned short port, int dnssec, const char *const *hosts, const int *mx_secure,
                  size_t n, struct probe_run *r, uint64_t *tlsa_queries, uint64_t *tlsa_hits)
{
    memset(r, 0, sizeof *r);
    r->loop = loop_new(64);
    assert_non_null(r->loop);
    char server[64], err[256];
    snprintf(server, sizeof server, "127.0.0.1:%u", port);
    r->d = dns_new(r->loop, server, 500, err, sizeof err);
    assert_non_null(r->d);
    dns_set_dnssec(r->d, dnssec);
    r->hosts = hosts;
    r->mx_secure = mx_secure;
    r->n = n;
    loop_clock_ms(r->loop); /* timers set before loop_run count from now */
    loop_timer_init(&r->timeout, probe_timeout, r->loop);
    loop_timer_set(r->loop, &r->timeout, 10000);
    probe_next(r);
    assert_int_equal(loop_run(r->loop), 0);
    assert_int_equal(r->next, n);
    *tlsa_queries = r->tlsa_queries;
    *tlsa_hits = r->tlsa_hits;
    loop_free(r->loop);
}

static void test_pool_dane_probe(void **state)
{
    (void)state;
    struct fake_dns f;
    fake_dns_start(&f);
    struct probe_run r;
    uint64_t queries, hits;
    const char *const hosts[] = {"mx.example", "mx.example", "bad.example", "plain.example",
                                 "mx.example"};
    const int secure[] = {1, 1, 1, 1, 0};

    probe(f.port, 0, hosts, secure, 1, &r, &queries, &hits); /* no dnssec_resolver */
    assert_string_equal(r.verdict[0], "off");
    assert_string_equal(r.text[0], "DANE: off (no dnssec_resolver)");

    probe(f.port, 1, hosts, secure, 5, &r, &queries, &hits);
    assert_string_equal(r.verdict[0], "dane");
    assert_true(r.addr_secure[0]);
    assert_non_null(strstr(r.text[0], "DANE: 1 usable TLSA record, id "));
    assert_string_equal(r.verdict[1], "dane"); /* again: TLSA from the TTL cache */
    assert_int_equal(queries, 2);              /* mx and bad */
    assert_int_equal(hits, 1);
    assert_string_equal(r.verdict[2], "tempfail");
    assert_non_null(strstr(r.text[2], "DANE: TLSA lookup of _25._tcp.bad.example failed ("));
    assert_string_equal(r.verdict[3], "insecure"); /* no AD on its address */
    assert_false(r.addr_secure[3]);
    assert_string_equal(r.text[3],
                        "DANE: no (address answer insecure: falls back to MTA-STS or the config)");
    assert_string_equal(r.verdict[4], "insecure"); /* an insecure MX answer: nothing asked */
    assert_string_equal(r.text[4],
                        "DANE: no (MX answer insecure: falls back to MTA-STS or the config)");
    fake_dns_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dane_ee_spki_sha256_no_name_or_expiry),
        cmocka_unit_test(test_dane_ee_full_and_sha512),
        cmocka_unit_test(test_dane_ee_mismatch_says_which),
        cmocka_unit_test(test_dane_ta_chain_and_name),
        cmocka_unit_test(test_dane_unusable_records_ignored),
        cmocka_unit_test(test_dane_no_certificate),
        cmocka_unit_test(test_dane_tlsa_text),
        cmocka_unit_test(test_dns_tlsa_parse),
        cmocka_unit_test(test_pool_dane_set_id),
        cmocka_unit_test(test_pool_dane_verdict),
        cmocka_unit_test(test_pool_dane_probe),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
