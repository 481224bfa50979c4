/*
 * test_smtp_data - DATA transparency: CRLF normalisation, dot-stuffing,
 * the terminator, the 998-octet limit, and never a bare CR or LF.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/smtp_data.h"

static void encode_ok(const char *in, const char *want)
{
    buf_t out = BUF_INIT;
    const char *err = NULL;
    assert_int_equal(smtp_data_encode(&out, in, strlen(in), NULL, &err), 0);
    assert_int_equal(buf_len(&out), strlen(want));
    assert_memory_equal(buf_data(&out), want, strlen(want));
    buf_free(&out);
}

static void test_line_endings(void **state)
{
    (void)state;
    encode_ok("a\r\nb\r\n", "a\r\nb\r\n.\r\n");
    encode_ok("a\nb\n", "a\r\nb\r\n.\r\n");
    encode_ok("a\rb\r", "a\r\nb\r\n.\r\n");
    encode_ok("a\r\rb\n\nc", "a\r\n\r\nb\r\n\r\nc\r\n.\r\n");
    encode_ok("no final newline", "no final newline\r\n.\r\n");
    encode_ok("", ".\r\n");
}

static void test_dot_stuffing(void **state)
{
    (void)state;
    encode_ok(".first\n..second\nmid.dle\n.\n", "..first\r\n...second\r\nmid.dle\r\n..\r\n.\r\n");
    /* The classic smuggling payload: a bare-LF dot line must not end the data. */
    encode_ok("x\n.\nMAIL FROM:<evil>\n", "x\r\n..\r\nMAIL FROM:<evil>\r\n.\r\n");
}

static void test_no_bare_cr_or_lf_ever(void **state)
{
    (void)state;
    const char *in = "\r\r\n\n\r\n\r.\n\r\r.x\n";
    buf_t out = BUF_INIT;
    const char *err;
    assert_int_equal(smtp_data_encode(&out, in, strlen(in), NULL, &err), 0);
    const char *s = buf_data(&out);
    for (size_t i = 0; i < buf_len(&out); i++) {
        if (s[i] == '\r') {
            assert_true(i + 1 < buf_len(&out) && s[i + 1] == '\n');
        }
        if (s[i] == '\n') {
            assert_true(i > 0 && s[i - 1] == '\r');
        }
    }
    buf_free(&out);
}

static void test_998_limit_and_untouched_output(void **state)
{
    (void)state;
    static char ok[998 + 2], bad[999 + 2];
    memset(ok, 'a', 998);
    ok[998] = '\n';
    memset(bad, 'a', 999);
    bad[999] = '\n';
    buf_t out = BUF_INIT;
    const char *err = NULL;
    struct smtp_data_info info;
    buf_append_str(&out, "before");
    assert_int_equal(smtp_data_encode(&out, ok, strlen(ok), &info, &err), 0);
    assert_int_equal(info.longest, 998);
    buf_reset(&out);
    buf_append_str(&out, "before");
    assert_int_equal(smtp_data_encode(&out, bad, strlen(bad), &info, &err), -1);
    assert_string_equal(err, "line longer than 998 octets");
    assert_int_equal(buf_len(&out), 6);
    buf_free(&out);
}

static void test_scan_reports_8bit_and_lines(void **state)
{
    (void)state;
    struct smtp_data_info info;
    smtp_data_scan("plain\nascii\n", 12, &info);
    assert_false(info.has_8bit);
    assert_int_equal(info.lines, 2);
    smtp_data_scan("caf\xc3\xa9\n", 6, &info);
    assert_true(info.has_8bit);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_endings),
        cmocka_unit_test(test_dot_stuffing),
        cmocka_unit_test(test_no_bare_cr_or_lf_ever),
        cmocka_unit_test(test_998_limit_and_untouched_output),
        cmocka_unit_test(test_scan_reports_8bit_and_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
