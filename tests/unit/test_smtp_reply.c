/*
 * test_smtp_reply - the reply parser against split reads, several replies
 * per read, multiline replies, enhanced codes, bounds and hostile input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/smtp_reply.h"

#define MAX_REPLIES 8

struct parsed {
    struct smtp_reply_parser p;
    struct smtp_reply r[MAX_REPLIES];
    int n;
    const char *err;
};

static void init(struct parsed *x)
{
    memset(x, 0, sizeof *x);
    smtp_reply_parser_init(&x->p);
    for (int i = 0; i < MAX_REPLIES; i++) {
        smtp_reply_init(&x->r[i]);
    }
}

static void fini(struct parsed *x)
{
    smtp_reply_parser_free(&x->p);
    for (int i = 0; i < MAX_REPLIES; i++) {
        smtp_reply_free(&x->r[i]);
    }
}

/*
 * Feed s[0..len) in reads of step bytes, as the network would; collect the
 * complete replies. Checks the used/MORE contract on every call.
 * Returns 0, or -1 on a parser error (x->err set).
 */
static int feed_n(struct parsed *x, const char *s, size_t len, size_t step)
{
    for (size_t at = 0; at < len;) {
        size_t n = len - at < step ? len - at : step;
        size_t off = 0;
        while (off < n) {
            size_t used = 12345;
            assert_true(x->n < MAX_REPLIES);
            enum smtp_reply_status st =
                smtp_reply_parse(&x->p, s + at + off, n - off, &used, &x->r[x->n], &x->err);
            if (st == SMTP_REPLY_ERROR) {
                return -1;
            }
            assert_true(used > 0 && used <= n - off);
            off += used;
            if (st == SMTP_REPLY_MORE) {
                assert_int_equal(off, n); /* MORE consumes everything */
                break;
            }
            assert_int_equal(st, SMTP_REPLY_DONE);
            x->n++;
        }
        at += n;
    }
    return 0;
}

static int feed(struct parsed *x, const char *s, size_t step)
{
    return feed_n(x, s, strlen(s), step);
}

/* Reply text is length-tracked, not NUL-terminated. */
static void assert_text(const struct smtp_reply *r, const char *want)
{
    assert_int_equal(buf_len(&r->text), strlen(want));
    assert_memory_equal(buf_data(&r->text), want, strlen(want));
}

static void assert_line(const struct smtp_reply *r, int i, const char *want)
{
    size_t n = 0;
    const char *s = smtp_reply_line(r, i, &n);
    assert_non_null(s);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(s, want, n);
}

/* One reply alone, whole: expect an error with this reason. */
static void assert_refused(const char *in, const char *why)
{
    struct parsed x;
    init(&x);
    assert_int_equal(feed(&x, in, 1 << 20), -1);
    assert_string_equal(x.err, why);
    assert_false(smtp_reply_parser_pending(&x.p)); /* nothing half-read survives */
    assert_int_equal(x.n, 0);
    fini(&x);
}

static void test_split_at_every_size_and_byte_by_byte(void **state)
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

static void test_pending_while_a_reply_is_unfinished(void **state)
{
    (void)state;
    struct parsed x;
    init(&x);
    assert_false(smtp_reply_parser_pending(&x.p));
    assert_int_equal(feed(&x, "2", 1), 0);
    assert_true(smtp_reply_parser_pending(&x.p)); /* a partial line */
    assert_int_equal(feed(&x, "50-first\r\n", 100), 0);
    assert_int_equal(x.n, 0);
    assert_true(smtp_reply_parser_pending(&x.p)); /* no partial line, but mid-reply */
    assert_int_equal(feed(&x, "250 last\r", 100), 0);
    assert_true(smtp_reply_parser_pending(&x.p)); /* the CR, waiting for its LF */
    assert_int_equal(x.n, 0);
    assert_int_equal(feed(&x, "\n", 100), 0);
    assert_int_equal(x.n, 1);
    assert_false(smtp_reply_parser_pending(&x.p));
    assert_text(&x.r[0], "first\nlast");
    fini(&x);
}

static void test_several_replies_in_one_read_used_counts(void **state)
{
    (void)state;
    const char *in = "250 2.1.0 ok\r\n550 5.1.1 no such user\r\n354 go ahead\r\n221";
    struct smtp_reply_parser p;
    struct smtp_reply r;
    const char *err = NULL;
    size_t used;
    smtp_reply_parser_init(&p);
    smtp_reply_init(&r);
    size_t len = strlen(in);
    assert_int_equal(smtp_reply_parse(&p, in, len, &used, &r, &err), SMTP_REPLY_DONE);
    assert_int_equal(used, strlen("250 2.1.0 ok\r\n"));
    assert_int_equal(r.code, 250);
    assert_string_equal(r.enhanced, "2.1.0");
    in += used, len -= used;
    assert_int_equal(smtp_reply_parse(&p, in, len, &used, &r, &err), SMTP_REPLY_DONE);
    assert_int_equal(used, strlen("550 5.1.1 no such user\r\n"));
    assert_int_equal(r.code, 550);
    assert_string_equal(r.enhanced, "5.1.1");
    assert_text(&r, "5.1.1 no such user");
    in += used, len -= used;
    assert_int_equal(smtp_reply_parse(&p, in, len, &used, &r, &err), SMTP_REPLY_DONE);
    assert_int_equal(r.code, 354);
    assert_string_equal(r.enhanced, ""); /* absent: cleared, not left from the last reply */
    in += used, len -= used;
    assert_int_equal(smtp_reply_parse(&p, in, len, &used, &r, &err), SMTP_REPLY_MORE);
    assert_int_equal(used, 3);
    assert_true(smtp_reply_parser_pending(&p));
    assert_int_equal(smtp_reply_parse(&p, " bye\r\n", 6, &used, &r, &err), SMTP_REPLY_DONE);
    assert_int_equal(r.code, 221);
    assert_text(&r, "bye");
    smtp_reply_free(&r);
    smtp_reply_parser_free(&p);
}

static void test_multiline_lines_and_accessor(void **state)
{
    (void)state;
    struct parsed x;
    init(&x);
    assert_int_equal(feed(&x, "250-one\r\n250-\r\n250-two  spaced \r\n250 three\r\n", 1000), 0);
    assert_int_equal(x.n, 1);
    assert_int_equal(x.r[0].lines, 4);
    assert_text(&x.r[0], "one\n\ntwo  spaced \nthree");
    assert_line(&x.r[0], 0, "one");
    assert_line(&x.r[0], 1, "");
    assert_line(&x.r[0], 2, "two  spaced ");
    assert_line(&x.r[0], 3, "three");
    size_t n;
    assert_null(smtp_reply_line(&x.r[0], 4, &n));
    assert_null(smtp_reply_line(&x.r[0], -1, &n));
    fini(&x);
}

static void test_multiline_5xx_after_the_dot(void **state)
{
    (void)state;
    struct parsed x;
    init(&x);
    assert_int_equal(feed(&x, "554-5.7.1 rejected\r\n554-see policy\r\n554 5.7.1 bye\r\n", 3), 0);
    assert_int_equal(x.n, 1);
    assert_int_equal(x.r[0].code, 554);
    assert_string_equal(x.r[0].enhanced, "5.7.1");
    assert_int_equal(x.r[0].lines, 3);
    fini(&x);
}

static void test_bare_code_no_text(void **state)
{
    (void)state;
    struct parsed x;
    init(&x);
    assert_int_equal(feed(&x, "250\r\n354 \r\n250-a\r\n250\r\n", 1), 0);
    assert_int_equal(x.n, 3);
    assert_int_equal(x.r[0].code, 250);
    assert_int_equal(x.r[0].lines, 1);
    assert_int_equal(buf_len(&x.r[0].text), 0);
    assert_string_equal(x.r[0].enhanced, "");
    assert_line(&x.r[0], 0, "");
    assert_int_equal(x.r[1].code, 354);
    assert_int_equal(buf_len(&x.r[1].text), 0);
    /* A bare code ends a multiline reply too. */
    assert_int_equal(x.r[2].lines, 2);
    assert_text(&x.r[2], "a\n");
    fini(&x);
}

static void test_bare_lf_line_endings(void **state)
{
    (void)state;
    struct parsed x;
    init(&x);
    assert_int_equal(feed(&x, "220 hi\n250-a\n250 b\r\n250\n", 1000), 0);
    assert_int_equal(x.n, 3);
    assert_int_equal(x.r[0].code, 220);
    assert_text(&x.r[0], "hi");
    assert_text(&x.r[1], "a\nb");
    assert_int_equal(x.r[2].code, 250);
    assert_int_equal(buf_len(&x.r[2].text), 0);
    fini(&x);
}

static void test_non_ascii_text_kept_byte_for_byte(void **state)
{
    (void)state;
    struct parsed x;
    const char in[] = "221 2.0.0 \xe5\x86\x8d\xe8\xa7\x81 \xff\x80 nul:\0: end\r\n";
    const char want[] = "2.0.0 \xe5\x86\x8d\xe8\xa7\x81 \xff\x80 nul:\0: end";
    init(&x);
    assert_int_equal(feed_n(&x, in, sizeof in - 1, 1), 0);
    assert_int_equal(x.n, 1);
    assert_int_equal(x.r[0].code, 221);
    assert_string_equal(x.r[0].enhanced, "2.0.0");
    assert_int_equal(buf_len(&x.r[0].text), sizeof want - 1);
    assert_memory_equal(buf_data(&x.r[0].text), want, sizeof want - 1);
    fini(&x);
}

static const char *enhanced_of(const char *in)
{
    static char got[16];
    struct parsed x;
    init(&x);
    assert_int_equal(feed(&x, in, 1000), 0);
    assert_int_equal(x.n, 1);
    memcpy(got, x.r[0].enhanced, sizeof got);
    fini(&x);
    return got;
}

static void test_enhanced_codes(void **state)
{
    (void)state;
    assert_string_equal(enhanced_of("421 4.7.28 rate limited\r\n"), "4.7.28");
    assert_string_equal(enhanced_of("550 5.1.1 no such user\r\n"), "5.1.1");
    assert_string_equal(enhanced_of("250 2.0.0\r\n"), "2.0.0"); /* alone on the line */
    assert_string_equal(enhanced_of("550 5.999.999 max\r\n"), "5.999.999");
    assert_string_equal(enhanced_of("250-2.1.5 first\r\n250 2.0.0 last\r\n"), "2.1.5");
    /* Absent or malformed: empty, and the reply itself is still fine. */
    assert_string_equal(enhanced_of("250 ok\r\n"), "");
    assert_string_equal(enhanced_of("421 4.7 short\r\n"), "");
    assert_string_equal(enhanced_of("550 9.9.9 no class 9\r\n"), "");
    assert_string_equal(enhanced_of("451 5.1.1 class differs from the code\r\n"), "");
    assert_string_equal(enhanced_of("550 5.1.1234 detail too long\r\n"), "");
    assert_string_equal(enhanced_of("550 5.1234.1 subject too long\r\n"), "");
    assert_string_equal(enhanced_of("550 5.1.1x glued\r\n"), "");
    assert_string_equal(enhanced_of("550 5..1 empty\r\n"), "");
    assert_string_equal(enhanced_of("550 5.1. empty\r\n"), "");
    assert_string_equal(enhanced_of("550  5.1.1 two spaces\r\n"), "");
    /* Only the first line counts. */
    assert_string_equal(enhanced_of("550-no code here\r\n550 5.1.1 late\r\n"), "");
}

static void test_enhanced_code_stays_in_text(void **state)
{
    (void)state;
    struct parsed x;
    init(&x);
    assert_int_equal(feed(&x, "421 4.7.28 try later\r\n", 1000), 0);
    assert_text(&x.r[0], "4.7.28 try later");
    fini(&x);
}

static void test_code_changed_mid_multiline(void **state)
{
    (void)state;
    assert_refused("250-a\r\n251 b\r\n", "reply code changed within multiline reply");
    assert_refused("250-a\r\n250-b\r\n550-c\r\n", "reply code changed within multiline reply");
    struct parsed x;
    init(&x);
    assert_int_equal(feed(&x, "250-a\r\n25", 1000), 0);
    assert_int_equal(feed(&x, "1 b\r\n", 1), -1);
    assert_string_equal(x.err, "reply code changed within multiline reply");
    fini(&x);
}

static void test_garbage_refused(void **state)
{
    (void)state;
    const char *bad[] = {
        "HTTP/1.1 400 Bad Request\r\n",
        "099 low\r\n",
        "199 informational\r\n",
        "600 high\r\n",
        "250xok\r\n",
        "2a0 ok\r\n",
        "25\r\n",
        "\r\n",
        "\n",
        " 250 leading space\r\n",
        "250\rx\r\n",
        "SSH-2.0-OpenSSH_9.2\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_refused(bad[i], "malformed reply code");
    }
    /* A good reply followed by garbage: the good one is delivered first. */
    struct parsed x;
    init(&x);
    assert_int_equal(feed(&x, "250 ok\r\n<html>\r\n", 1000), -1);
    assert_int_equal(x.n, 1);
    assert_int_equal(x.r[0].code, 250);
    fini(&x);
}

static void test_garbage_refused_before_its_line_ends(void **state)
{
    (void)state;
    /* An HTTP or TLS peer may never send a newline: refuse on the first bad byte. */
    const char *bad[] = {"H", "25x", "250x", "\x16\x03\x01"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct parsed x;
        init(&x);
        assert_int_equal(feed(&x, bad[i], 1), -1);
        assert_string_equal(x.err, "malformed reply code");
        fini(&x);
    }
    struct parsed x;
    init(&x);
    assert_int_equal(feed(&x, "250\r", 1), 0); /* could still be "250\r\n" */
    assert_int_equal(feed(&x, "\n", 1), 0);
    assert_int_equal(x.n, 1);
    fini(&x);
}

/* "250 " then text up to a line of n octets (without the line ending), then eol. */
static char *long_line(size_t n, const char *eol)
{
    char *s = malloc(n + strlen(eol) + 1);
    assert_non_null(s);
    memset(s, 'a', n);
    memcpy(s, "250 ", 4);
    memcpy(s + n, eol, strlen(eol) + 1);
    return s;
}

static void test_line_length_limit_independent_of_splits(void **state)
{
    (void)state;
    const char *eols[] = {"\r\n", "\n"};
    size_t steps[] = {1, 7, 4096, 1 << 20};
    for (size_t e = 0; e < 2; e++) {
        for (size_t k = 0; k < sizeof steps / sizeof *steps; k++) {
            char *ok = long_line(SMTP_REPLY_LINE_MAX, eols[e]);
            char *bad = long_line(SMTP_REPLY_LINE_MAX + 1, eols[e]);
            struct parsed x;
            init(&x);
            assert_int_equal(feed(&x, ok, steps[k]), 0);
            assert_int_equal(x.n, 1);
            assert_int_equal(buf_len(&x.r[0].text), SMTP_REPLY_LINE_MAX - 4);
            fini(&x);
            init(&x);
            assert_int_equal(feed(&x, bad, steps[k]), -1);
            assert_string_equal(x.err, "reply line too long");
            fini(&x);
            free(ok);
            free(bad);
        }
    }
}

static void test_endless_line_refused_not_buffered(void **state)
{
    (void)state;
    struct parsed x;
    init(&x);
    size_t fed = 0;
    int rc = 0;
    assert_int_equal(feed(&x, "250 ", 1), 0);
    fed += 4;
    while (rc == 0 && fed < 100000) {
        rc = feed(&x, "aaaaaaa", 7);
        fed += 7;
    }
    assert_int_equal(rc, -1);
    assert_string_equal(x.err, "reply line too long");
    assert_true(fed <= SMTP_REPLY_LINE_MAX + 2 + 7);
    assert_true(x.p.line.cap <= 2 * (SMTP_REPLY_LINE_MAX + 2));
    fini(&x);
}

/* The outcome of feeding in as replies and an error reason, serialised for comparison. */
static void outcome(const char *in, size_t len, size_t step, buf_t *o)
{
    struct parsed x;
    init(&x);
    int rc = feed_n(&x, in, len, step);
    for (int i = 0; i < x.n; i++) {
        buf_appendf(o, "%d/%d/%s/", x.r[i].code, x.r[i].lines, x.r[i].enhanced);
        buf_append(o, buf_data(&x.r[i].text), buf_len(&x.r[i].text));
        buf_append(o, "|", 1);
    }
    buf_appendf(o, "rc=%d err=%s", rc, rc < 0 ? x.err : "-");
    fini(&x);
}

static void test_same_verdict_however_split(void **state)
{
    (void)state;
    char *too_long_garbage = long_line(SMTP_REPLY_LINE_MAX + 50, "\r\n");
    memcpy(too_long_garbage, "HTTP", 4);
    char *too_long_after_code = long_line(SMTP_REPLY_LINE_MAX + 50, "\r\n");
    memcpy(too_long_after_code, "250x", 4);
    char *long_changed = long_line(SMTP_REPLY_LINE_MAX + 1, "\r\n");
    memcpy(long_changed, "251-", 4);
    const char *in[] = {
        "250-a\r\n250 b\r\n221 bye\r\n",
        too_long_garbage,
        too_long_after_code,
        long_changed,
        "250-a\r\n251-b\r\n",
        "250 ok\r\n25\r\n",
        "250\r\r\n",
    };
    size_t steps[] = {1, 2, 3, 5, 7, 64, 1 << 20};
    for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
        buf_t whole = BUF_INIT;
        outcome(in[i], strlen(in[i]), 1 << 20, &whole);
        for (size_t k = 0; k < sizeof steps / sizeof *steps; k++) {
            buf_t split = BUF_INIT;
            outcome(in[i], strlen(in[i]), steps[k], &split);
            assert_int_equal(buf_len(&split), buf_len(&whole));
            assert_memory_equal(buf_data(&split), buf_data(&whole), buf_len(&whole));
            buf_free(&split);
        }
        buf_free(&whole);
    }
    free(too_long_garbage);
    free(too_long_after_code);
    free(long_changed);
}

static void test_too_many_lines(void **state)
{
    (void)state;
    struct parsed x;
    init(&x);
    for (int i = 0; i < SMTP_REPLY_LINES_MAX - 1; i++) {
        assert_int_equal(feed(&x, "250-more\r\n", 1000), 0);
    }
    assert_int_equal(feed(&x, "250 last\r\n", 1000), 0);
    assert_int_equal(x.n, 1);
    assert_int_equal(x.r[0].lines, SMTP_REPLY_LINES_MAX); /* exactly the limit: fine */
    fini(&x);

    init(&x);
    for (int i = 0; i < SMTP_REPLY_LINES_MAX; i++) {
        assert_int_equal(feed(&x, "250-more\r\n", 1000), 0);
    }
    assert_int_equal(feed(&x, "250 one too many\r\n", 1000), -1);
    assert_string_equal(x.err, "too many reply lines");
    fini(&x);
}

static void test_text_truncated_at_text_max(void **state)
{
    (void)state;
    struct parsed x;
    char line[1010];
    memset(line, 'b', sizeof line);
    memcpy(line, "250-", 4);
    memcpy(line + sizeof line - 2, "\r\n", 2);
    init(&x);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(feed_n(&x, line, sizeof line, 1000), 0);
    }
    assert_int_equal(feed(&x, "250 end\r\n", 1000), 0);
    assert_int_equal(x.n, 1);
    assert_int_equal(x.r[0].lines, 21); /* every line counted, though not all text kept */
    assert_int_equal(buf_len(&x.r[0].text), SMTP_REPLY_TEXT_MAX);
    /* What is kept is the beginning, exactly. */
    const char *t = buf_data(&x.r[0].text);
    size_t per = sizeof line - 4 - 2; /* 1004 'b's per line */
    for (size_t i = 0; i < SMTP_REPLY_TEXT_MAX; i++) {
        assert_int_equal(t[i], (i + 1) % (per + 1) == 0 ? '\n' : 'b');
    }
    size_t n;
    assert_non_null(smtp_reply_line(&x.r[0], 0, &n));
    assert_int_equal(n, per);
    assert_null(smtp_reply_line(&x.r[0], 20, &n)); /* past the bound */
    fini(&x);
}

static void test_copy_and_reset(void **state)
{
    (void)state;
    struct parsed x;
    struct smtp_reply c;
    smtp_reply_init(&c);
    init(&x);
    assert_int_equal(feed(&x, "550-5.1.1 a\r\n550 b\r\n", 1000), 0);
    smtp_reply_copy(&c, &x.r[0]);
    smtp_reply_free(&x.r[0]);
    assert_int_equal(c.code, 550);
    assert_int_equal(c.lines, 2);
    assert_string_equal(c.enhanced, "5.1.1");
    assert_text(&c, "5.1.1 a\nb");
    /* A copy over an older, longer reply replaces it whole. */
    assert_int_equal(feed(&x, "250 ok\r\n", 1000), 0);
    smtp_reply_copy(&c, &x.r[1]);
    assert_int_equal(c.code, 250);
    assert_string_equal(c.enhanced, "");
    assert_text(&c, "ok");
    smtp_reply_free(&c);

    /* Reset forgets a partial reply (STARTTLS): what follows parses fresh. */
    assert_int_equal(feed(&x, "220-half\r\n22", 1000), 0);
    assert_true(smtp_reply_parser_pending(&x.p));
    smtp_reply_parser_reset(&x.p);
    assert_false(smtp_reply_parser_pending(&x.p));
    assert_int_equal(feed(&x, "250 fresh\r\n", 1000), 0);
    assert_int_equal(x.r[2].code, 250);
    assert_int_equal(x.r[2].lines, 1);
    assert_text(&x.r[2], "fresh");
    fini(&x);
}

static void test_storage_reused_after_warm_up(void **state)
{
    (void)state;
    /* The reply is swapped out, so two text buffers alternate; none is allocated again. */
    struct smtp_reply_parser p;
    struct smtp_reply r;
    const char *err;
    size_t used;
    const char *in = "250-PIPELINING and some text\r\n250 2.0.0 ok\r\n";
    smtp_reply_parser_init(&p);
    smtp_reply_init(&r);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(smtp_reply_parse(&p, in, strlen(in), &used, &r, &err), SMTP_REPLY_DONE);
    }
    const char *a = r.text.data, *b = p.cur.text.data;
    assert_non_null(a);
    assert_non_null(b);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(smtp_reply_parse(&p, in, strlen(in), &used, &r, &err), SMTP_REPLY_DONE);
        assert_true(r.text.data == a || r.text.data == b);
        assert_true(p.cur.text.data == a || p.cur.text.data == b);
        assert_text(&r, "PIPELINING and some text\n2.0.0 ok");
    }
    smtp_reply_free(&r);
    smtp_reply_parser_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_at_every_size_and_byte_by_byte),
        cmocka_unit_test(test_pending_while_a_reply_is_unfinished),
        cmocka_unit_test(test_several_replies_in_one_read_used_counts),
        cmocka_unit_test(test_multiline_lines_and_accessor),
        cmocka_unit_test(test_multiline_5xx_after_the_dot),
        cmocka_unit_test(test_bare_code_no_text),
        cmocka_unit_test(test_bare_lf_line_endings),
        cmocka_unit_test(test_non_ascii_text_kept_byte_for_byte),
        cmocka_unit_test(test_enhanced_codes),
        cmocka_unit_test(test_enhanced_code_stays_in_text),
        cmocka_unit_test(test_code_changed_mid_multiline),
        cmocka_unit_test(test_garbage_refused),
        cmocka_unit_test(test_garbage_refused_before_its_line_ends),
        cmocka_unit_test(test_line_length_limit_independent_of_splits),
        cmocka_unit_test(test_endless_line_refused_not_buffered),
        cmocka_unit_test(test_same_verdict_however_split),
        cmocka_unit_test(test_too_many_lines),
        cmocka_unit_test(test_text_truncated_at_text_max),
        cmocka_unit_test(test_copy_and_reset),
        cmocka_unit_test(test_storage_reused_after_warm_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
