/*
 * test_tlsrpt - the pure parts of `ringmail tlsrpt`: the _smtp._tls TXT
 * record (RFC 8460 3: exactly one v=TLSRPTv1, its mailto:/https: ruas),
 * the JSON report built from counted session groups (RFC 8460 4:
 * policies, summary, failure details, policy strings and mx-host), the
 * gzip (decoded back with zlib), the file name (5.1), the report id and
 * the mailto: message (5.3, TLS-Required: No), and the result types of
 * refused certificates (engine/tls.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/x509.h>
#include <zlib.h>

#include "campaign/tlsrpt.h"
#include "engine/buf.h"
#include "engine/tls.h"

/* ---------------------------------------------------------------- the record */

static int parse(const char *const *recs, size_t n, struct tlsrpt_record *r, char *why)
{
    return tlsrpt_record_parse(recs, n, r, why, 128);
}

static void test_record_two_ruas(void **state)
{
    (void)state;
    const char *recs[] = {"v=spf1 -all",
                          "v=TLSRPTv1; rua=mailto:tls@example.com, https://r.example.com/x"};
    struct tlsrpt_record r;
    char why[128];
    assert_int_equal(parse(recs, 2, &r, why), 1);
    assert_int_equal(r.nrua, 2);
    assert_string_equal(r.rua[0], "mailto:tls@example.com");
    assert_string_equal(r.rua[1], "https://r.example.com/x");
}

static void test_record_spacing_and_other_schemes(void **state)
{
    (void)state;
    const char *recs[] = {"v=TLSRPTv1 ;rua = ftp://x.example, mailto:a@b.example ;ext=1"};
    struct tlsrpt_record r;
    char why[128];
    assert_int_equal(parse(recs, 1, &r, why), 1);
    assert_int_equal(r.nrua, 1);
    assert_string_equal(r.rua[0], "mailto:a@b.example");
}

static void test_record_none(void **state)
{
    (void)state;
    struct tlsrpt_record r;
    char why[128];
    const char *none[] = {"v=spf1 -all", "rua=mailto:a@b.example; v=TLSRPTv1"};
    assert_int_equal(parse(none, 2, &r, why), 0);
    assert_string_equal(why, "no TLSRPTv1 record");
    assert_int_equal(parse(NULL, 0, &r, why), 0);
    assert_string_equal(why, "no TLSRPTv1 record");
    const char *two[] = {"v=TLSRPTv1; rua=mailto:a@b.example",
                         "v=TLSRPTv1; rua=mailto:c@d.example"};
    assert_int_equal(parse(two, 2, &r, why), 0);
    assert_string_equal(why, "2 TLSRPTv1 records (RFC 8460 3: exactly one)");
    const char *norua[] = {"v=TLSRPTv1; rua=ftp://x.example"};
    assert_int_equal(parse(norua, 1, &r, why), 0);
    assert_string_equal(why, "no mailto: or https: rua");
    const char *lower[] = {"v=tlsrptv1; rua=mailto:a@b.example"}; /* the version is exact */
    assert_int_equal(parse(lower, 1, &r, why), 0);
}

/* ---------------------------------------------------------------- the JSON */

static json_t *build(const struct tlsrpt_group *g, size_t n)
{
    struct tlsrpt_meta m = {
        .org = "Org",
        .contact = "ops@sender.example",
        .submitter = "mail.sender.example",
        .domain = "rcpt.example",
        .report_id = "20261206.rcpt.example@mail.sender.example",
        .begin = 1796515200, /* 2026-12-06T00:00:00Z */
    };
    buf_t out = BUF_INIT;
    tlsrpt_json(&m, g, n, &out);
    json_error_t err;
    json_t *j = json_loadb(buf_data(&out), buf_len(&out), 0, &err);
    buf_free(&out);
    assert_non_null(j);
    return j;
}

static json_int_t jint(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void test_json_header(void **state)
{
    (void)state;
    struct tlsrpt_group g[] = {
        {"no-policy-found", "", NULL, "", "", "", "", 3},
    };
    json_t *j = build(g, 1);
    assert_string_equal(jstr(j, "organization-name"), "Org");
    assert_string_equal(jstr(j, "contact-info"), "ops@sender.example");
    assert_string_equal(jstr(j, "report-id"), "20261206.rcpt.example@mail.sender.example");
    json_t *range = json_object_get(j, "date-range");
    assert_string_equal(jstr(range, "start-datetime"), "2026-12-06T00:00:00Z");
    assert_string_equal(jstr(range, "end-datetime"), "2026-12-06T23:59:59Z");
    json_t *p = json_array_get(json_object_get(j, "policies"), 0);
    json_t *pol = json_object_get(p, "policy");
    assert_string_equal(jstr(pol, "policy-type"), "no-policy-found");
    assert_string_equal(jstr(pol, "policy-domain"), "rcpt.example");
    assert_null(json_object_get(pol, "policy-string"));
    json_t *sum = json_object_get(p, "summary");
    assert_int_equal(jint(sum, "total-successful-session-count"), 3);
    assert_int_equal(jint(sum, "total-failure-session-count"), 0);
    assert_null(json_object_get(p, "failure-details")); /* none failed */
    json_decref(j);
}

/* Groups of two policies, interleaved: each policy counted apart, its
 * failures by result type, MX and IPs; the sts text split in lines. */
static void test_json_policies_and_failures(void **state)
{
    (void)state;
    const char *sts = "version: STSv1\r\nmode: enforce\nmx: mx1.rcpt.example\n"
                      "mx: *.backup.rcpt.example\nmax_age: 86400\n";
    struct tlsrpt_group g[] = {
        {"sts", "id1", sts, "", "", "", "", 10},
        {"tlsa", "h1", "3 1 1 AABB", "tlsa-invalid", "mx.rcpt.example", "[2001:db8::1]:25",
         "192.0.2.1", 2},
        {"sts", "id1", sts, "certificate-expired", "mx1.rcpt.example", "192.0.2.25:25", "", 4},
        {"sts", "id1", sts, "starttls-not-supported", "mx1.rcpt.example", "192.0.2.26:25", "", 1},
        {"tlsa", "h1", "3 1 1 AABB", "dnssec-invalid", "", "", "", 5},
    };
    json_t *j = build(g, 5);
    json_t *ps = json_object_get(j, "policies");
    assert_int_equal(json_array_size(ps), 2);

    json_t *s = json_array_get(ps, 0), *pol = json_object_get(s, "policy");
    assert_string_equal(jstr(pol, "policy-type"), "sts");
    json_t *lines = json_object_get(pol, "policy-string");
    assert_int_equal(json_array_size(lines), 5);
    assert_string_equal(json_string_value(json_array_get(lines, 0)), "version: STSv1");
    assert_string_equal(json_string_value(json_array_get(lines, 3)), "mx: *.backup.rcpt.example");
    json_t *mx = json_object_get(pol, "mx-host");
    assert_int_equal(json_array_size(mx), 2);
    assert_string_equal(json_string_value(json_array_get(mx, 1)), "*.backup.rcpt.example");
    json_t *sum = json_object_get(s, "summary");
    assert_int_equal(jint(sum, "total-successful-session-count"), 10);
    assert_int_equal(jint(sum, "total-failure-session-count"), 5);
    json_t *fd = json_object_get(s, "failure-details");
    assert_int_equal(json_array_size(fd), 2);
    json_t *f = json_array_get(fd, 0);
    assert_string_equal(jstr(f, "result-type"), "certificate-expired");
    assert_string_equal(jstr(f, "receiving-mx-hostname"), "mx1.rcpt.example");
    assert_string_equal(jstr(f, "receiving-ip"), "192.0.2.25");
    assert_null(json_object_get(f, "sending-mta-ip")); /* no source: omitted */
    assert_int_equal(jint(f, "failed-session-count"), 4);

    json_t *t = json_array_get(ps, 1);
    pol = json_object_get(t, "policy");
    assert_string_equal(jstr(pol, "policy-type"), "tlsa");
    assert_null(json_object_get(pol, "mx-host"));
    assert_string_equal(json_string_value(json_array_get(json_object_get(pol, "policy-string"), 0)),
                        "3 1 1 AABB");
    sum = json_object_get(t, "summary");
    assert_int_equal(jint(sum, "total-successful-session-count"), 0);
    assert_int_equal(jint(sum, "total-failure-session-count"), 7);
    fd = json_object_get(t, "failure-details");
    f = json_array_get(fd, 0);
    assert_string_equal(jstr(f, "receiving-ip"), "2001:db8::1");
    assert_string_equal(jstr(f, "sending-mta-ip"), "192.0.2.1");
    f = json_array_get(fd, 1); /* before any connection: no MX, no IP */
    assert_string_equal(jstr(f, "result-type"), "dnssec-invalid");
    assert_null(json_object_get(f, "receiving-ip"));
    assert_null(json_object_get(f, "receiving-mx-hostname"));
    json_decref(j);
}

/* A policy whose text is not known: no policy-string, still counted. */
static void test_json_policy_text_unknown(void **state)
{
    (void)state;
    struct tlsrpt_group g[] = {{"sts", "gone", NULL, "", "", "", "", 1}};
    json_t *j = build(g, 1);
    json_t *pol = json_object_get(json_array_get(json_object_get(j, "policies"), 0), "policy");
    assert_null(json_object_get(pol, "policy-string"));
    assert_null(json_object_get(pol, "mx-host"));
    json_decref(j);
}

/* ---------------------------------------------------------------- gzip, names, mail */

static void test_gzip_round_trip(void **state)
{
    (void)state;
    const char text[] = "{\"organization-name\": \"Org\"}\n";
    buf_t gz = BUF_INIT;
    assert_int_equal(tlsrpt_gzip(text, sizeof text - 1, &gz), 0);
    const unsigned char *p = (const unsigned char *)buf_data(&gz);
    assert_true(buf_len(&gz) > 18);
    assert_int_equal(p[0], 0x1f); /* RFC 1952 magic */
    assert_int_equal(p[1], 0x8b);
    char back[256];
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(inflateInit2(&z, 31), Z_OK);
    z.next_in = (Bytef *)buf_data(&gz);
    z.avail_in = (uInt)buf_len(&gz);
    z.next_out = (Bytef *)back;
    z.avail_out = sizeof back;
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    assert_int_equal(z.total_out, sizeof text - 1);
    assert_memory_equal(back, text, sizeof text - 1);
    inflateEnd(&z);
    buf_free(&gz);
}

static void test_names(void **state)
{
    (void)state;
    char id[256], file[512];
    tlsrpt_report_id("2026-12-06", "rcpt.example", "mail.sender.example", id, sizeof id);
    assert_string_equal(id, "20261206.rcpt.example@mail.sender.example");
    struct tlsrpt_meta m = {.submitter = "mail.sender.example",
                            .domain = "rcpt.example",
                            .report_id = id,
                            .begin = 1796515200};
    tlsrpt_file_name(&m, file, sizeof file);
    assert_string_equal(file, "mail.sender.example!rcpt.example!1796515200!1796601599.json.gz");
}

static void test_mail(void **state)
{
    (void)state;
    struct tlsrpt_meta m = {.org = "Org",
                            .contact = "ops@sender.example",
                            .submitter = "mail.sender.example",
                            .domain = "rcpt.example",
                            .report_id = "20261206.rcpt.example@mail.sender.example",
                            .begin = 1796515200};
    const unsigned char gz[] = {0x1f, 0x8b, 8, 0, 1, 2, 3};
    buf_t out = BUF_INIT;
    tlsrpt_mail(&m, "ops@sender.example", "tls@rcpt.example", "f.json.gz", gz, sizeof gz, &out);
    const char *t = buf_cstr(&out);
    assert_non_null(strstr(t, "\r\nSubject: Report Domain: rcpt.example Submitter: "
                              "mail.sender.example Report-ID: "
                              "<20261206.rcpt.example@mail.sender.example>\r\n"));
    assert_non_null(strstr(t, "\r\nTLS-Report-Domain: rcpt.example\r\n"));
    assert_non_null(strstr(t, "\r\nTLS-Report-Submitter: mail.sender.example\r\n"));
    assert_non_null(strstr(t, "\r\nTLS-Required: No\r\n"));
    assert_non_null(strstr(t, "Content-Type: multipart/report; report-type=\"tlsrpt\";"));
    assert_non_null(strstr(t, "Content-Type: application/tlsrpt+gzip\r\n"
                              "Content-Transfer-Encoding: base64\r\n"));
    assert_non_null(strstr(t, "filename=\"f.json.gz\""));
    assert_non_null(strstr(t, "\r\n\r\nH4sIAAECAw==\r\n")); /* the bytes, base64 */
    assert_null(strstr(t, "\n\n"));                         /* CRLF only */
    assert_int_equal(strncmp(t, "From: ops@sender.example\r\nTo: tls@rcpt.example\r\n", 48), 0);
    buf_free(&out);
}

/* The verify results a refused certificate records as its RFC 8460 type. */
static void test_verify_result_types(void **state)
{
    (void)state;
    assert_null(tls_verify_result_type(X509_V_OK));
    assert_string_equal(tls_verify_result_type(X509_V_ERR_HOSTNAME_MISMATCH),
                        "certificate-host-mismatch");
    assert_string_equal(tls_verify_result_type(X509_V_ERR_IP_ADDRESS_MISMATCH),
                        "certificate-host-mismatch");
    assert_string_equal(tls_verify_result_type(X509_V_ERR_CERT_HAS_EXPIRED), "certificate-expired");
    assert_string_equal(tls_verify_result_type(X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT),
                        "certificate-not-trusted");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_two_ruas),
        cmocka_unit_test(test_record_spacing_and_other_schemes),
        cmocka_unit_test(test_record_none),
        cmocka_unit_test(test_json_header),
        cmocka_unit_test(test_json_policies_and_failures),
        cmocka_unit_test(test_json_policy_text_unknown),
        cmocka_unit_test(test_gzip_round_trip),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_mail),
        cmocka_unit_test(test_verify_result_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
