/*
 * test_smtp_ehlo - capabilities from EHLO replies as real servers send
 * them, and as broken or hostile ones do.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/smtp_ehlo.h"

/* Run text through the real reply parser, then the EHLO parser. */
static void parse(const char *text, struct smtp_caps *caps)
{
    struct smtp_reply_parser p;
    struct smtp_reply r;
    size_t used;
    const char *err = NULL;
    smtp_reply_parser_init(&p);
    smtp_reply_init(&r);
    assert_int_equal(smtp_reply_parse(&p, text, strlen(text), &used, &r, &err), SMTP_REPLY_DONE);
    assert_int_equal(used, strlen(text));
    memset(caps, 0xa5, sizeof *caps); /* zeroing is smtp_ehlo_parse's job */
    smtp_ehlo_parse(&r, caps);
    smtp_reply_free(&r);
    smtp_reply_parser_free(&p);
}

static void assert_describe(const struct smtp_caps *c, const char *want)
{
    buf_t d = BUF_INIT;
    smtp_caps_describe(c, &d);
    assert_int_equal(buf_len(&d), strlen(want));
    assert_memory_equal(buf_data(&d), want, strlen(want));
    buf_free(&d);
}

static void test_gmail_style(void **state)
{
    (void)state;
    struct smtp_caps c;
    parse("250-mx.google.com at your service, [192.0.2.1]\r\n250-SIZE 157286400\r\n"
          "250-8BITMIME\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n"
          "250-CHUNKING\r\n250 SMTPUTF8\r\n",
          &c);
    unsigned want = SMTP_CAP_SIZE | SMTP_CAP_8BITMIME | SMTP_CAP_STARTTLS |
                    SMTP_CAP_ENHANCEDSTATUSCODES | SMTP_CAP_PIPELINING | SMTP_CAP_CHUNKING |
                    SMTP_CAP_SMTPUTF8;
    assert_int_equal(c.flags, want);
    assert_int_equal(c.size_max, 157286400);
    assert_int_equal(c.auth, 0);
}

static void test_keywords_in_any_case(void **state)
{
    (void)state;
    struct smtp_caps c;
    parse("250-mx\r\n250-pipelining\r\n250-StartTLS\r\n250-8bitmime\r\n250-smtputf8\r\n"
          "250-EnhancedStatusCodes\r\n250-chunking\r\n250-dsn\r\n250-size 2048\r\n"
          "250 auth plain Login cram-md5 xoauth2\r\n",
          &c);
    assert_int_equal(c.flags, SMTP_CAP_PIPELINING | SMTP_CAP_STARTTLS | SMTP_CAP_8BITMIME |
                                  SMTP_CAP_SMTPUTF8 | SMTP_CAP_ENHANCEDSTATUSCODES |
                                  SMTP_CAP_CHUNKING | SMTP_CAP_DSN | SMTP_CAP_SIZE | SMTP_CAP_AUTH);
    assert_int_equal(c.size_max, 2048);
    assert_int_equal(c.auth,
                     SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN | SMTP_AUTH_CRAM_MD5 | SMTP_AUTH_XOAUTH2);
}

static void test_unknown_keywords_ignored(void **state)
{
    (void)state;
    struct smtp_caps c;
    parse("250-mx\r\n250-X-EXPS GSSAPI NTLM\r\n250-XCLIENT NAME ADDR\r\n250-ETRN\r\n"
          "250-VRFY\r\n250-DELIVERBY 300\r\n250-PIPELININGX\r\n250-STARTTLS2\r\n"
          "250-SIZEX 100\r\n250-AUTHX PLAIN\r\n250-8BITMIMES\r\n250-X-AUTH PLAIN\r\n"
          "250 DSN\r\n",
          &c);
    /* Prefixes and look-alikes are not the keyword. */
    assert_int_equal(c.flags, SMTP_CAP_DSN);
    assert_int_equal(c.auth, 0);
    assert_int_equal(c.size_max, 0);
}

static void test_auth_old_and_new_forms(void **state)
{
    (void)state;
    struct smtp_caps c;
    parse("250-mx\r\n250 AUTH=PLAIN LOGIN\r\n", &c);
    assert_int_equal(c.flags, SMTP_CAP_AUTH);
    assert_int_equal(c.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);

    parse("250-mx\r\n250 AUTH PLAIN LOGIN\r\n", &c);
    assert_int_equal(c.auth, SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN);

    /* Both forms, as old Exchange sends them: the union. */
    parse("250-mx\r\n250-AUTH GSSAPI NTLM CRAM-MD5\r\n250 AUTH=LOGIN\r\n", &c);
    assert_int_equal(c.auth, SMTP_AUTH_CRAM_MD5 | SMTP_AUTH_LOGIN);

    /* AUTH with nothing we know, or nothing at all: offered, no usable mechanism. */
    parse("250-mx\r\n250 AUTH GSSAPI PLAINX\r\n", &c);
    assert_int_equal(c.flags, SMTP_CAP_AUTH);
    assert_int_equal(c.auth, 0);
    parse("250-mx\r\n250 AUTH\r\n", &c);
    assert_int_equal(c.flags, SMTP_CAP_AUTH);
    assert_int_equal(c.auth, 0);
}

static uint64_t size_of(const char *line, unsigned *flags)
{
    char text[256];
    struct smtp_caps c;
    snprintf(text, sizeof text, "250-mx\r\n250 %s\r\n", line);
    parse(text, &c);
    *flags = c.flags;
    return c.size_max;
}

static void test_size_with_and_without_number(void **state)
{
    (void)state;
    unsigned f;
    assert_int_equal(size_of("SIZE 35882577", &f), 35882577);
    assert_int_equal(f, SMTP_CAP_SIZE);
    assert_int_equal(size_of("SIZE", &f), 0); /* no fixed limit */
    assert_int_equal(f, SMTP_CAP_SIZE);
    assert_int_equal(size_of("SIZE 0", &f), 0);
    assert_int_equal(f, SMTP_CAP_SIZE);
    assert_int_equal(size_of("SIZE   1000  ", &f), 1000);
    assert_int_equal(size_of("SIZE=1000", &f), 1000);
    assert_true(size_of("SIZE 18446744073709551615", &f) == UINT64_MAX);
    /* Unreadable numbers are no limit, never a smaller one. */
    assert_int_equal(size_of("SIZE 18446744073709551616", &f), 0);
    assert_int_equal(size_of("SIZE 99999999999999999999999999", &f), 0);
    assert_int_equal(f, SMTP_CAP_SIZE);
    assert_int_equal(size_of("SIZE 12abc", &f), 0);
    assert_int_equal(size_of("SIZE 10 20", &f), 0);
    assert_int_equal(size_of("SIZE -5", &f), 0);
}

static void test_first_line_is_the_server_name(void **state)
{
    (void)state;
    struct smtp_caps c;
    parse("250-STARTTLS\r\n250 8BITMIME\r\n", &c); /* a server named "STARTTLS" */
    assert_int_equal(c.flags, SMTP_CAP_8BITMIME);
    parse("250 PIPELINING\r\n", &c); /* single line: no extensions at all */
    assert_int_equal(c.flags, 0);
    parse("250\r\n", &c);
    assert_int_equal(c.flags, 0);
}

static void test_not_a_250_reply(void **state)
{
    (void)state;
    struct smtp_caps c;
    parse("550-mx\r\n550-STARTTLS\r\n550 PIPELINING\r\n", &c);
    assert_int_equal(c.flags, 0);
    assert_int_equal(c.auth, 0);
    assert_int_equal(c.size_max, 0);
}

static void test_very_long_lines(void **state)
{
    (void)state;
    struct smtp_caps c;
    size_t fill = SMTP_REPLY_LINE_MAX - 4 - 5;
    char *text = malloc(3 * SMTP_REPLY_LINE_MAX);
    assert_non_null(text);
    /* A long server name, a long unknown keyword line, a long AUTH line, then more. */
    size_t n = 0;
    memcpy(text + n, "250-", 4), n += 4;
    memset(text + n, 'n', 1000), n += 1000;
    memcpy(text + n, "\r\n250-X", 7), n += 7;
    memset(text + n, 'Y', fill), n += fill;
    memcpy(text + n, "\r\n250-AUTH", 10), n += 10;
    for (int i = 0; i < 100; i++) {
        memcpy(text + n, " GSSAPI", 7), n += 7;
    }
    memcpy(text + n, " XOAUTH2\r\n250 STARTTLS\r\n", 25), n += 25;
    parse(text, &c);
    assert_int_equal(c.flags, SMTP_CAP_AUTH | SMTP_CAP_STARTTLS);
    assert_int_equal(c.auth, SMTP_AUTH_XOAUTH2);
    free(text);
}

/* An EHLO reply whose two filler lines hold a and b bytes, then SIZE and PIPELINING. */
static void parse_with_filler(size_t a, size_t b, struct smtp_caps *c)
{
    char *text = malloc(a + b + 200);
    assert_non_null(text);
    size_t n = 0;
    memcpy(text + n, "250-mx\r\n250-X", 13), n += 13;
    memset(text + n, 'a', a - 1), n += a - 1;
    memcpy(text + n, "\r\n250-X", 7), n += 7;
    memset(text + n, 'b', b - 1), n += b - 1;
    memcpy(text + n, "\r\n250-SIZE 10485760\r\n250 PIPELINING\r\n", 38), n += 38;
    parse(text, c);
    free(text);
}

static void test_line_cut_by_the_text_bound_is_ignored(void **state)
{
    (void)state;
    struct smtp_caps c;
    parse_with_filler(100, 100, &c);
    assert_int_equal(c.flags, SMTP_CAP_SIZE | SMTP_CAP_PIPELINING);
    assert_int_equal(c.size_max, 10485760);
    /* "mx" + "\n" + a + "\n" + b = TEXT_MAX - 8: the text ends in "\nSIZE 10". */
    size_t a = (SMTP_REPLY_TEXT_MAX - 8 - 2 - 2) / 2;
    size_t b = SMTP_REPLY_TEXT_MAX - 8 - 2 - 2 - a;
    parse_with_filler(a, b, &c);
    assert_int_equal(c.size_max, 0); /* never 10 */
    assert_int_equal(c.flags, 0);
}

static void test_describe(void **state)
{
    (void)state;
    struct smtp_caps c = {0};
    assert_describe(&c, "");
    c.flags = SMTP_CAP_PIPELINING | SMTP_CAP_STARTTLS | SMTP_CAP_SIZE | SMTP_CAP_AUTH;
    c.size_max = 1000;
    c.auth = SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN;
    assert_describe(&c, "PIPELINING STARTTLS SIZE=1000 AUTH=PLAIN,LOGIN");
    c.auth = SMTP_AUTH_PLAIN;
    c.size_max = 0;
    assert_describe(&c, "PIPELINING STARTTLS SIZE AUTH=PLAIN");
    c.flags = SMTP_CAP_AUTH;
    c.auth = SMTP_AUTH_CRAM_MD5 | SMTP_AUTH_XOAUTH2;
    assert_describe(&c, "AUTH=CRAM-MD5,XOAUTH2");
    c.auth = 0;
    assert_describe(&c, "AUTH");
    c.flags = SMTP_CAP_8BITMIME | SMTP_CAP_SMTPUTF8 | SMTP_CAP_ENHANCEDSTATUSCODES |
              SMTP_CAP_CHUNKING | SMTP_CAP_DSN;
    assert_describe(&c, "8BITMIME SMTPUTF8 ENHANCEDSTATUSCODES CHUNKING DSN");

    /* It appends. */
    buf_t d = BUF_INIT;
    buf_append_str(&d, "caps: ");
    c.flags = SMTP_CAP_DSN;
    smtp_caps_describe(&c, &d);
    assert_int_equal(buf_len(&d), 9);
    assert_memory_equal(buf_data(&d), "caps: DSN", 9);
    buf_free(&d);
}

static void test_describe_round_trip(void **state)
{
    (void)state;
    struct smtp_caps c;
    parse("250-mx\r\n250-pipelining\r\n250-SIZE 52428800\r\n250-AUTH=login plain\r\n"
          "250 STARTTLS\r\n",
          &c);
    assert_describe(&c, "PIPELINING STARTTLS SIZE=52428800 AUTH=PLAIN,LOGIN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gmail_style),
        cmocka_unit_test(test_keywords_in_any_case),
        cmocka_unit_test(test_unknown_keywords_ignored),
        cmocka_unit_test(test_auth_old_and_new_forms),
        cmocka_unit_test(test_size_with_and_without_number),
        cmocka_unit_test(test_first_line_is_the_server_name),
        cmocka_unit_test(test_not_a_250_reply),
        cmocka_unit_test(test_very_long_lines),
        cmocka_unit_test(test_line_cut_by_the_text_bound_is_ignored),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_describe_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
