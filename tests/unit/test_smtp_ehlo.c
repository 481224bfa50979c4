/*
 * test_smtp_ehlo - capabilities from EHLO replies as real servers send them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/smtp_ehlo.h"

static void parse(const char *text, struct smtp_caps *caps)
{
    struct smtp_reply_parser p;
    struct smtp_reply r;
    size_t used;
    const char *err;
    smtp_reply_parser_init(&p);
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_parse(&p, text, strlen(text), &used, &r, &err), SMTP_REPLY_DONE);
    smtp_ehlo_parse(&r, caps);
    smtp_reply_free(&r);
    smtp_reply_parser_free(&p);
}

static void test_postfix_style(void **state)
{
    (void)state;
    struct smtp_caps c;
    parse("250-mx.google.com at your service\r\n250-SIZE 157286400\r\n250-8BITMIME\r\n"
          "250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n"
          "250 SMTPUTF8\r\n",
          &c);
    unsigned want = SMTP_CAP_SIZE | SMTP_CAP_8BITMIME | SMTP_CAP_STARTTLS |
                    SMTP_CAP_ENHANCEDSTATUSCODES | SMTP_CAP_PIPELINING | SMTP_CAP_CHUNKING |
                    SMTP_CAP_SMTPUTF8;
    assert_int_equal(c.flags, want);
    assert_int_equal(c.size_max, 157286400);
    assert_int_equal(c.auth, 0);
}

static void test_case_unknown_and_old_auth_form(void **state)
{
    (void)state;
    struct smtp_caps c;
    parse("250-mx\r\n250-pipelining\r\n250-X-EXPS GSSAPI NTLM\r\n250-AUTH=PLAIN LOGIN\r\n"
          "250-XCLIENT NAME\r\n250 size\r\n",
          &c);
    assert_true(c.flags & SMTP_CAP_PIPELINING);
    assert_true(c.flags & SMTP_CAP_AUTH);
    assert_int_equal(c.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);
    assert_true(c.flags & SMTP_CAP_SIZE);
    assert_int_equal(c.size_max, 0); /* SIZE without a number: no fixed limit */
}

static void test_first_line_is_not_a_keyword(void **state)
{
    (void)state;
    struct smtp_caps c;
    parse("250-STARTTLS\r\n250 8BITMIME\r\n", &c); /* a server named "STARTTLS" */
    assert_false(c.flags & SMTP_CAP_STARTTLS);
    assert_true(c.flags & SMTP_CAP_8BITMIME);
    parse("250 mx.test\r\n", &c);
    assert_int_equal(c.flags, 0);
}

static void test_auth_mechanisms_and_long_lines(void **state)
{
    (void)state;
    struct smtp_caps c;
    char text[3000];
    int n = snprintf(text, sizeof text, "250-mx\r\n250-AUTH CRAM-MD5 XOAUTH2 login\r\n250-X");
    memset(text + n, 'Y', 2000);
    memcpy(text + n + 2000, "\r\n250 DSN\r\n", 12);
    parse(text, &c);
    assert_int_equal(c.auth, SMTP_AUTH_CRAM_MD5 | SMTP_AUTH_XOAUTH2 | SMTP_AUTH_LOGIN);
    assert_true(c.flags & SMTP_CAP_DSN);
    buf_t d = BUF_INIT;
    smtp_caps_describe(&c, &d);
    buf_append(&d, "", 1); /* bufs are length-tracked: terminate for strstr */
    assert_non_null(strstr(buf_data(&d), "AUTH=LOGIN"));
    buf_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_postfix_style),
        cmocka_unit_test(test_case_unknown_and_old_auth_form),
        cmocka_unit_test(test_first_line_is_not_a_keyword),
        cmocka_unit_test(test_auth_mechanisms_and_long_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
