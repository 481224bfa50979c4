/*
 * test_smtp_reply - the reply parser against split reads, multiline
 * replies, enhanced codes and hostile input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/smtp_reply.h"

struct parsed {
    struct smtp_reply_parser p;
    struct smtp_reply r[8];
    int n;
    const char *err;
};

/* Feed s in pieces of step bytes; collect complete replies. Returns 0 or -1. */
static int feed(struct parsed *x, const char *s, size_t step)
{
    size_t len = strlen(s);
    for (size_t at = 0; at < len;) {
        size_t n = len - at < step ? len - at : step;
        size_t off = 0;
        while (off < n) {
            size_t used = 0;
            enum smtp_reply_status st =
                smtp_reply_parse(&x->p, s + at + off, n - off, &used, &x->r[x->n], &x->err);
            if (st == SMTP_REPLY_ERROR) {
                return -1;
            }
            off += used;
            if (st == SMTP_REPLY_DONE) {
                x->n++;
            } else {
                break;
            }
        }
        at += n;
    }
    return 0;
}

/* Reply text is length-tracked, not NUL-terminated. */
static void assert_text(const struct smtp_reply *r, const char *want)
{
    assert_int_equal(buf_len(&r->text), strlen(want));
    assert_memory_equal(buf_data(&r->text), want, strlen(want));
}

static void init(struct parsed *x)
{
    memset(x, 0, sizeof *x);
    smtp_reply_parser_init(&x->p);
    for (int i = 0; i < 8; i++) {
        smtp_reply_init(&x->r[i]);
    }
}

static void fini(struct parsed *x)
{
    smtp_reply_parser_free(&x->p);
    for (int i = 0; i < 8; i++) {
        smtp_reply_free(&x->r[i]);
    }
}

static void test_split_at_every_byte(void **state)
{
    (void)state;
    const char *in = "250-mx.test greets you\r\n250-PIPELINING\r\n250 SIZE 100\r\n";
    for (size_t step = 1; step <= strlen(in); step++) {
        struct parsed x;
        init(&x);
        assert_int_equal(feed(&x, in, step), 0);
        assert_int_equal(x.n, 1);
        assert_int_equal(x.r[0].code, 250);
        assert_int_equal(x.r[0].lines, 3);
        assert_text(&x.r[0], "mx.test greets you\nPIPELINING\nSIZE 100");
        assert_false(smtp_reply_parser_pending(&x.p));
        fini(&x);
    }
}

static void test_several_replies_in_one_read(void **state)
{
    (void)state;
    struct parsed x;
    init(&x);
    assert_int_equal(feed(&x, "250 2.1.0 ok\r\n550 5.1.1 no such user\r\n354 go ahead\r\n", 1000),
                     0);
    assert_int_equal(x.n, 3);
    assert_string_equal(x.r[0].enhanced, "2.1.0");
    assert_int_equal(x.r[1].code, 550);
    assert_string_equal(x.r[1].enhanced, "5.1.1");
    assert_string_equal(x.r[2].enhanced, "");
    fini(&x);
}

static void test_bare_code_bare_lf_and_non_ascii(void **state)
{
    (void)state;
    struct parsed x;
    init(&x);
    assert_int_equal(feed(&x, "250\r\n221 2.0.0 \xe5\x86\x8d\xe8\xa7\x81\n", 1000), 0);
    assert_int_equal(x.n, 2);
    assert_int_equal(x.r[0].code, 250);
    assert_int_equal(buf_len(&x.r[0].text), 0);
    assert_text(&x.r[1], "2.0.0 \xe5\x86\x8d\xe8\xa7\x81");
    fini(&x);
}

static void test_enhanced_code_rules(void **state)
{
    (void)state;
    struct parsed x;
    init(&x);
    /* Class must match the reply; subject and detail 1-3 digits. */
    assert_int_equal(feed(&x,
                          "421 4.7.28 rate\r\n451 5.1.1 wrong class\r\n250 2.0 short\r\n"
                          "550 5.7.1234 long\r\n",
                          1000),
                     0);
    assert_string_equal(x.r[0].enhanced, "4.7.28");
    assert_string_equal(x.r[1].enhanced, "");
    assert_string_equal(x.r[2].enhanced, "");
    assert_string_equal(x.r[3].enhanced, "");
    fini(&x);
}

static void test_hostile_input(void **state)
{
    (void)state;
    struct parsed x;
    init(&x);
    assert_int_equal(feed(&x, "HTTP/1.1 400 Bad Request\r\n", 1000), -1);
    assert_string_equal(x.err, "malformed reply code");
    fini(&x);
    init(&x);
    assert_int_equal(feed(&x, "250-a\r\n251 b\r\n", 1000), -1);
    assert_string_equal(x.err, "reply code changed within multiline reply");
    fini(&x);
    init(&x);
    assert_int_equal(feed(&x, "099 low\r\n", 1000), -1);
    fini(&x);
    init(&x);
    assert_int_equal(feed(&x, "250xok\r\n", 1000), -1);
    fini(&x);
}

static void test_bounds(void **state)
{
    (void)state;
    static char big[SMTP_REPLY_LINE_MAX + 100];
    struct parsed x;
    memset(big, 'a', sizeof big - 1);
    memcpy(big, "250 ", 4);
    init(&x);
    assert_int_equal(feed(&x, big, 7), -1); /* no line end ever: refused, not buffered forever */
    assert_string_equal(x.err, "reply line too long");
    fini(&x);

    init(&x);
    for (int i = 0; i < SMTP_REPLY_LINES_MAX; i++) {
        assert_int_equal(feed(&x, "250-more\r\n", 1000), 0);
    }
    assert_int_equal(feed(&x, "250-more\r\n", 1000), -1);
    assert_string_equal(x.err, "too many reply lines");
    fini(&x);

    /* Long text is truncated, not an error. */
    init(&x);
    static char line[1010];
    memset(line, 'b', sizeof line - 3);
    memcpy(line, "250-", 4);
    memcpy(line + sizeof line - 3, "\r\n", 3);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(feed(&x, line, 1000), 0);
    }
    assert_int_equal(feed(&x, "250 end\r\n", 1000), 0);
    assert_int_equal(x.n, 1);
    assert_int_equal(buf_len(&x.r[0].text), SMTP_REPLY_TEXT_MAX);
    fini(&x);
}

static void test_line_accessor(void **state)
{
    (void)state;
    struct parsed x;
    size_t n;
    init(&x);
    feed(&x, "250-one\r\n250-two\r\n250 three\r\n", 1000);
    const char *s = smtp_reply_line(&x.r[0], 1, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(s, "two", 3);
    assert_null(smtp_reply_line(&x.r[0], 3, &n));
    fini(&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_at_every_byte),
        cmocka_unit_test(test_several_replies_in_one_read),
        cmocka_unit_test(test_bare_code_bare_lf_and_non_ascii),
        cmocka_unit_test(test_enhanced_code_rules),
        cmocka_unit_test(test_hostile_input),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_line_accessor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
