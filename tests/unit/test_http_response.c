/*
 * test_http_response - the HTTP/1.1 response parser of engine/https: the
 * three framings, every split of the bytes, interim responses, bounds and
 * hostile input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/http_response.h"

static char err[256];

/* parse - s whole; the parser's verdict, resp filled. */
static int parse(const char *s, int eof, size_t max_body, struct https_response *resp)
{
    err[0] = '\0';
    return http_response_parse(s, strlen(s), eof, max_body, resp, err, sizeof err);
}

static void test_content_length(void **state)
{
    (void)state;
    struct https_response r = {0};
    const char *s = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    "Content-Length: 5\r\n\r\nhello";
    assert_int_equal(parse(s, 0, 100, &r), 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "text/plain; charset=utf-8");
    assert_int_equal(buf_len(&r.body), 5);
    assert_memory_equal(buf_data(&r.body), "hello", 5);
    https_response_free(&r);
}

/* Every prefix of a complete response is "more", and the whole is the same
 * answer: the parser does not depend on how reads split the bytes. */
static void test_every_prefix_needs_more(void **state)
{
    (void)state;
    const char *all[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1;x=y\r\nc\r\n0\r\n"
        "Trailer: 1\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    };
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
        struct https_response r = {0};
        size_t n = strlen(all[k]);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(http_response_parse(all[k], i, 0, 100, &r, err, sizeof err), 0);
        }
        assert_int_equal(http_response_parse(all[k], n, 0, 100, &r, err, sizeof err), 1);
        assert_int_equal(r.status, 200);
        assert_int_equal(buf_len(&r.body), 3);
        assert_memory_equal(buf_data(&r.body), "abc", 3);
        https_response_free(&r);
    }
}

static void test_close_delimited_and_lf_only(void **state)
{
    (void)state;
    struct https_response r = {0};
    const char *s = "HTTP/1.0 200 OK\nContent-Type: text/plain\n\nversion: STSv1\n";
    assert_int_equal(parse(s, 0, 100, &r), 0);
    assert_int_equal(parse(s, 1, 100, &r), 1);
    assert_string_equal(buf_cstr(&r.body), "version: STSv1\n");
    https_response_free(&r);
}

static void test_redirect_reported_not_followed(void **state)
{
    (void)state;
    struct https_response r = {0};
    const char *s = "HTTP/1.1 301 Moved\r\nLocation: https://elsewhere.test/x\r\n"
                    "Content-Length: 0\r\n\r\n";
    assert_int_equal(parse(s, 0, 100, &r), 1);
    assert_int_equal(r.status, 301);
    assert_string_equal(r.location, "https://elsewhere.test/x");
    assert_int_equal(buf_len(&r.body), 0);
    https_response_free(&r);
}

static void test_no_body_statuses(void **state)
{
    (void)state;
    struct https_response r = {0};
    assert_int_equal(parse("HTTP/1.1 204 No Content\r\n\r\n", 0, 100, &r), 1);
    assert_int_equal(r.status, 204);
    https_response_free(&r);
}

static void test_oversize_refused(void **state)
{
    (void)state;
    struct https_response r = {0};
    /* Content-Length over the cap: refused before the body arrives. */
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", 0, 10, &r), -1);
    assert_string_equal(err, "response body over 10 bytes");
    assert_int_equal(
        parse("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", 0, 10, &r), -1);
    /* Chunks adding up over the cap, and one huge chunk size. */
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "6\r\nabcdef\r\n6\r\nabcdef\r\n",
                           0, 10, &r),
                     -1);
    assert_string_equal(err, "response body over 10 bytes");
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "fffffffffffffffffffffffff\r\n",
                           0, 10, &r),
                     -1);
    assert_string_equal(err, "response body over 10 bytes");
    /* Close-delimited: over the cap before the close. */
    assert_int_equal(parse("HTTP/1.1 200 OK\r\n\r\n0123456789x", 0, 10, &r), -1);
    assert_string_equal(err, "response body over 10 bytes");
    assert_int_equal(buf_len(&r.body), 0);
    https_response_free(&r);
}

static void test_cut_short_is_an_error(void **state)
{
    (void)state;
    struct https_response r = {0};
    assert_int_equal(parse("", 1, 10, &r), -1);
    assert_string_equal(err, "connection closed without a response");
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nContent-", 1, 10, &r), -1);
    assert_string_equal(err, "connection closed inside the response header");
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", 1, 10, &r), -1);
    assert_string_equal(err, "connection closed after 2 of 5 body bytes");
    assert_int_equal(
        parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", 1, 10, &r), -1);
    assert_string_equal(err, "connection closed inside a chunked body");
    https_response_free(&r);
}

static void test_malformed(void **state)
{
    (void)state;
    struct https_response r = {0};
    assert_int_equal(parse("SMTP/1.1 200 OK\r\n\r\n", 0, 10, &r), -1);
    assert_string_equal(err, "malformed response: bad status line");
    assert_int_equal(parse("HTTP/1.1 2000 OK\r\n\r\n", 0, 10, &r), -1);
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", 0, 10, &r), -1);
    assert_string_equal(err, "malformed response: header line without a name");
    assert_int_equal(
        parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 0, 10, &r), -1);
    assert_string_equal(err, "malformed response: bad content-length \"4\"");
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, 10, &r), -1);
    assert_int_equal(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, 10, &r), -1);
    assert_string_equal(err, "unsupported transfer-encoding \"gzip\"");
    assert_int_equal(
        parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, 10, &r), -1);
    assert_string_equal(err, "malformed response: bad chunk size");
    assert_int_equal(
        parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n", 0, 10, &r), -1);
    assert_string_equal(err, "malformed response: chunk longer than its size");
    https_response_free(&r);
}

/* An endless header is refused at the cap, not buffered for ever. */
static void test_header_cap(void **state)
{
    (void)state;
    static char big[HTTP_HEAD_MAX + 200];
    struct https_response r = {0};
    size_t n = (size_t)snprintf(big, sizeof big, "HTTP/1.1 200 OK\r\n");
    while (n + 20 < sizeof big) {
        n += (size_t)snprintf(big + n, sizeof big - n, "X-Filler: 0123456\r\n");
    }
    assert_int_equal(http_response_parse(big, n, 0, 10, &r, err, sizeof err), -1);
    assert_string_equal(err, "response header over 16384 bytes");
    memset(big, 'a', sizeof big);
    assert_int_equal(http_response_parse(big, sizeof big, 0, 10, &r, err, sizeof err), -1);
    https_response_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_every_prefix_needs_more),
        cmocka_unit_test(test_close_delimited_and_lf_only),
        cmocka_unit_test(test_redirect_reported_not_followed),
        cmocka_unit_test(test_no_body_statuses),
        cmocka_unit_test(test_oversize_refused),
        cmocka_unit_test(test_cut_short_is_an_error),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_header_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
