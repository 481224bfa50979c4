/*
 * test_smtp_data - DATA transparency: CRLF normalisation, dot-stuffing,
 * the terminator, the 998-octet limit, 8-bit detection, and never a bare
 * CR or LF on the wire. Besides fixed cases, a simple byte-at-a-time
 * reference encoder checks the fast one on generated messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "engine/smtp_data.h"

/* Every CR is followed by LF and every LF preceded by CR, checked byte by byte. */
static void assert_no_bare_cr_or_lf(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            assert_true(i + 1 < n && s[i + 1] == '\n');
        }
        if (s[i] == '\n') {
            assert_true(i > 0 && s[i - 1] == '\r');
        }
    }
}

/* The only "\r\n.\r\n" (counting a leading ".\r\n") is the terminator at the end. */
static void assert_ends_once(const char *s, size_t n)
{
    assert_true(n >= 3);
    assert_memory_equal(s + n - 3, ".\r\n", 3);
    if (n > 3) {
        assert_false(s[0] == '.' && s[1] == '\r');
    }
    for (size_t i = 0; i + 5 <= n - 3; i++) {
        assert_false(memcmp(s + i, "\r\n.\r\n", 5) == 0);
    }
}

static void reference_encode(const char *in, size_t n, buf_t *out);

/* want NULL: the reference encoder's output is wanted. */
static void encode_ok_n(const char *in, size_t len, const char *want, size_t want_len)
{
    buf_t ref = BUF_INIT;
    if (!want) {
        reference_encode(in, len, &ref);
        want = buf_data(&ref);
        want_len = buf_len(&ref);
    }
    buf_t out = BUF_INIT;
    const char *err = NULL;
    assert_int_equal(smtp_data_encode(&out, in, len, NULL, &err), 0);
    assert_int_equal(buf_len(&out), want_len);
    assert_memory_equal(buf_data(&out), want, want_len);
    assert_no_bare_cr_or_lf(buf_data(&out), buf_len(&out));
    assert_ends_once(buf_data(&out), buf_len(&out));

    /* The hot path's two calls produce the same bytes. */
    struct smtp_data_info info;
    buf_t out2 = BUF_INIT;
    smtp_data_scan(in, len, &info);
    smtp_data_write(&out2, in, len, &info);
    assert_int_equal(buf_len(&out2), want_len);
    assert_memory_equal(buf_data(&out2), want, want_len);
    buf_free(&out);
    buf_free(&out2);
    buf_free(&ref);
}

static void encode_ok(const char *in, const char *want)
{
    encode_ok_n(in, strlen(in), want, strlen(want));
}

static void test_crlf_passes_through(void **state)
{
    (void)state;
    encode_ok("a\r\nb\r\n", "a\r\nb\r\n.\r\n");
    encode_ok("Subject: x\r\n\r\nbody\r\n", "Subject: x\r\n\r\nbody\r\n.\r\n");
}

static void test_bare_lf_bare_cr_and_mixed(void **state)
{
    (void)state;
    encode_ok("a\nb\n", "a\r\nb\r\n.\r\n");
    encode_ok("a\rb\r", "a\r\nb\r\n.\r\n");
    encode_ok("a\r\rb\n\nc", "a\r\n\r\nb\r\n\r\nc\r\n.\r\n");
    encode_ok("a\r\nb\nc\rd\r\n", "a\r\nb\r\nc\r\nd\r\n.\r\n");
    encode_ok("a\n\rb", "a\r\n\r\nb\r\n.\r\n");   /* LF then CR: two endings */
    encode_ok("a\r\r\nb", "a\r\n\r\nb\r\n.\r\n"); /* CR then CRLF: two endings */
    encode_ok("\r", "\r\n.\r\n");
    encode_ok("\n", "\r\n.\r\n");
    encode_ok("\r\n", "\r\n.\r\n");
    encode_ok("\n\n\n", "\r\n\r\n\r\n.\r\n");
}

static void test_missing_final_newline_and_empty_message(void **state)
{
    (void)state;
    encode_ok("no final newline", "no final newline\r\n.\r\n");
    encode_ok("a\r\nlast", "a\r\nlast\r\n.\r\n");
    encode_ok("", ".\r\n");
    buf_t out = BUF_INIT;
    const char *err = NULL;
    struct smtp_data_info info;
    assert_int_equal(smtp_data_encode(&out, NULL, 0, &info, &err), 0); /* no message at all */
    assert_int_equal(buf_len(&out), 3);
    assert_int_equal(info.lines, 0);
    buf_free(&out);
}

static void test_dot_stuffing_first_and_later_lines(void **state)
{
    (void)state;
    encode_ok(".first\n..second\nmid.dle\n.\n", "..first\r\n...second\r\nmid.dle\r\n..\r\n.\r\n");
    encode_ok(".", "..\r\n.\r\n");
    encode_ok(".\r\n", "..\r\n.\r\n");
    encode_ok("a\r.b", "a\r\n..b\r\n.\r\n"); /* a dot after a bare CR starts a line */
    encode_ok("a.\r\n b.", "a.\r\n b.\r\n.\r\n");
    encode_ok("x\r\n.", "x\r\n..\r\n.\r\n");
}

static void test_smuggling_payloads_never_end_data(void **state)
{
    (void)state;
    /* Each is a way some receiver reads "end of data" early; none may survive encoding. */
    const char *in[] = {
        "x\n.\nMAIL FROM:<evil>\n",
        "x\r\n.\nMAIL FROM:<evil>\r\n",
        "x\n.\r\nMAIL FROM:<evil>\n",
        "x\r.\rMAIL FROM:<evil>\r",
        "x\r\n.\rMAIL FROM:<evil>\r\n",
        "x\r.\r\nMAIL FROM:<evil>\n",
        "x\r\n\r.\r\r\nQUIT\r\n",
        ".\r\nQUIT\r\n",
        "\n.\n",
    };
    for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
        buf_t out = BUF_INIT;
        const char *err;
        assert_int_equal(smtp_data_encode(&out, in[i], strlen(in[i]), NULL, &err), 0);
        assert_no_bare_cr_or_lf(buf_data(&out), buf_len(&out));
        assert_ends_once(buf_data(&out), buf_len(&out));
        buf_free(&out);
    }
    encode_ok("x\n.\nMAIL FROM:<evil>\n", "x\r\n..\r\nMAIL FROM:<evil>\r\n.\r\n");
}

/* A message of one line of n 'a's (first byte first), then eol. */
static char *line_of(size_t n, char first, const char *eol, size_t *len)
{
    size_t e = strlen(eol);
    char *s = malloc(n + e + 1);
    assert_non_null(s);
    memset(s, 'a', n);
    if (n > 0) {
        s[0] = first;
    }
    memcpy(s + n, eol, e + 1);
    *len = n + e;
    return s;
}

static void test_998_and_999_octets(void **state)
{
    (void)state;
    const char *eols[] = {"\r\n", "\n", "\r", ""};
    for (size_t k = 0; k < 4; k++) {
        size_t len;
        char *ok = line_of(998, 'a', eols[k], &len);
        buf_t out = BUF_INIT;
        const char *err = NULL;
        struct smtp_data_info info;
        assert_int_equal(smtp_data_encode(&out, ok, len, &info, &err), 0);
        assert_int_equal(info.longest, 998);
        assert_int_equal(buf_len(&out), 998 + 2 + 3);
        free(ok);

        char *bad = line_of(999, 'a', eols[k], &len);
        buf_reset(&out);
        err = NULL;
        assert_int_equal(smtp_data_encode(&out, bad, len, &info, &err), -1);
        assert_string_equal(err, "line longer than 998 octets");
        assert_int_equal(info.longest, 999);
        assert_int_equal(buf_len(&out), 0);
        free(bad);
        buf_free(&out);
    }
}

static void test_998_limit_ignores_the_stuffed_dot(void **state)
{
    (void)state;
    /* RFC 5321 4.5.3.1.6: the limit does not count the dot added for transparency. */
    size_t len;
    char *dotted = line_of(998, '.', "\r\n", &len);
    buf_t out = BUF_INIT;
    const char *err = NULL;
    assert_int_equal(smtp_data_encode(&out, dotted, len, NULL, &err), 0);
    assert_int_equal(buf_len(&out), 999 + 2 + 3);
    assert_memory_equal(buf_data(&out), "..a", 3);
    free(dotted);
    buf_free(&out);
}

static void test_long_line_in_the_middle_refused(void **state)
{
    (void)state;
    size_t len;
    char *bad = line_of(999, 'a', "\n", &len);
    char *msg = malloc(len + 20);
    assert_non_null(msg);
    memcpy(msg, "short\n", 6);
    memcpy(msg + 6, bad, len);
    memcpy(msg + 6 + len, "short", 5);
    buf_t out = BUF_INIT;
    const char *err = NULL;
    assert_int_equal(smtp_data_encode(&out, msg, 6 + len + 5, NULL, &err), -1);
    assert_non_null(err);
    free(msg);
    free(bad);
    buf_free(&out);
}

static void test_output_unchanged_on_error(void **state)
{
    (void)state;
    buf_t out = BUF_INIT;
    buf_append_str(&out, "xxMAIL FROM:<a@b>\r\n");
    buf_consume(&out, 2); /* a consumed prefix must not be compacted either */
    buf_t before = out;
    char copy[64];
    memcpy(copy, buf_data(&out), buf_len(&out));
    size_t len;
    char *bad = line_of(5000, 'z', "\r\n", &len);
    const char *err = NULL;
    assert_int_equal(smtp_data_encode(&out, bad, len, NULL, &err), -1);
    assert_ptr_equal(out.data, before.data);
    assert_int_equal(out.off, before.off);
    assert_int_equal(out.len, before.len);
    assert_int_equal(out.cap, before.cap);
    assert_memory_equal(buf_data(&out), copy, buf_len(&out));
    free(bad);
    buf_free(&out);
}

static void test_appends_after_existing_output(void **state)
{
    (void)state;
    buf_t out = BUF_INIT;
    const char *err;
    buf_append_str(&out, "DATA\r\n");
    assert_int_equal(smtp_data_encode(&out, "hi", 2, NULL, &err), 0);
    assert_int_equal(buf_len(&out), 13);
    assert_memory_equal(buf_data(&out), "DATA\r\nhi\r\n.\r\n", 13);
    buf_free(&out);
}

static void test_8bit_detection(void **state)
{
    (void)state;
    struct smtp_data_info info;
    smtp_data_scan("plain\nascii\x7f\x01\n", 14, &info);
    assert_false(info.has_8bit);
    smtp_data_scan("caf\xc3\xa9\n", 6, &info);
    assert_true(info.has_8bit);
    smtp_data_scan("\x80", 1, &info);
    assert_true(info.has_8bit);
    /* Past the first block, at the block edges, and at the very end. */
    size_t n = 20000;
    char *big = malloc(n);
    assert_non_null(big);
    size_t at[] = {0, 4095, 4096, 4097, 12345, 19999};
    for (size_t i = 0; i < sizeof at / sizeof *at; i++) {
        memset(big, 'a', n);
        smtp_data_scan(big, n, &info);
        assert_false(info.has_8bit);
        big[at[i]] = (char)0xff;
        smtp_data_scan(big, n, &info);
        assert_true(info.has_8bit);
    }
    free(big);
    /* encode reports it too. */
    buf_t out = BUF_INIT;
    const char *err;
    assert_int_equal(smtp_data_encode(&out, "\xe2\x82\xac\n", 4, &info, &err), 0);
    assert_true(info.has_8bit);
    buf_free(&out);
}

static void test_scan_counts_lines_and_longest(void **state)
{
    (void)state;
    struct smtp_data_info info;
    smtp_data_scan("", 0, &info);
    assert_int_equal(info.lines, 0);
    assert_int_equal(info.longest, 0);
    smtp_data_scan("a", 1, &info);
    assert_int_equal(info.lines, 1);
    assert_int_equal(info.longest, 1);
    smtp_data_scan("a\n", 2, &info);
    assert_int_equal(info.lines, 1);
    smtp_data_scan("ab\r\ncdef\rg\n\n", 12, &info);
    assert_int_equal(info.lines, 4);
    assert_int_equal(info.longest, 4);
}

/* The reference: one byte at a time, the rules exactly as RFC 5321 states them. */
static void reference_encode(const char *in, size_t n, buf_t *out)
{
    int bol = 1;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\r' || in[i] == '\n') {
            buf_append(out, "\r\n", 2);
            if (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n') {
                i++;
            }
            bol = 1;
            continue;
        }
        if (bol && in[i] == '.') {
            buf_append(out, ".", 1);
        }
        buf_append(out, in + i, 1);
        bol = 0;
    }
    if (!bol) {
        buf_append(out, "\r\n", 2);
    }
    buf_append(out, ".\r\n", 3);
}

static void test_matches_reference_on_generated_messages(void **state)
{
    (void)state;
    static const char alphabet[] = {'\r', '\n', '.', 'a', ' ', (char)0xc3};
    uint32_t seed = 12345;
    char msg[300];
    buf_t got = BUF_INIT, want = BUF_INIT;
    for (int round = 0; round < 20000; round++) {
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 16) % sizeof msg;
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            msg[i] = alphabet[(seed >> 16) % sizeof alphabet];
        }
        const char *err;
        buf_reset(&got);
        buf_reset(&want);
        assert_int_equal(smtp_data_encode(&got, msg, n, NULL, &err), 0);
        reference_encode(msg, n, &want);
        assert_int_equal(buf_len(&got), buf_len(&want));
        assert_memory_equal(buf_data(&got), buf_data(&want), buf_len(&want));
        assert_no_bare_cr_or_lf(buf_data(&got), buf_len(&got));
    }
    buf_free(&got);
    buf_free(&want);
}

static void test_write_survives_a_scan_of_another_message(void **state)
{
    (void)state;
    /* A stale scan must cost room, never memory safety (ASan would see an overrun). */
    struct smtp_data_info stale;
    smtp_data_scan("x", 1, &stale);
    char msg[2000];
    memset(msg, '\n', sizeof msg);
    buf_t got = BUF_INIT, want = BUF_INIT;
    smtp_data_write(&got, msg, sizeof msg, &stale);
    reference_encode(msg, sizeof msg, &want);
    assert_int_equal(buf_len(&got), buf_len(&want));
    assert_memory_equal(buf_data(&got), buf_data(&want), buf_len(&want));
    buf_free(&got);
    buf_free(&want);
}

/* What smtp_data_scan must find, counted the slow way: lines and longest
 * as the general walk counts them (CRLF, bare LF and bare CR each end a line). */
static void reference_counts(const char *in, size_t n, size_t *lines, size_t *longest)
{
    size_t cur = 0;
    int open = 0;
    *lines = *longest = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '\r' || in[i] == '\n') {
            if (in[i] == '\r' && i + 1 < n && in[i + 1] == '\n') {
                i++;
            }
            (*lines)++;
            *longest = cur > *longest ? cur : *longest;
            cur = 0;
            open = 0;
            continue;
        }
        cur++;
        open = 1;
    }
    if (open) {
        (*lines)++;
        *longest = cur > *longest ? cur : *longest;
    }
}

static void test_as_is_only_for_the_wire_form(void **state)
{
    (void)state;
    struct smtp_data_info info;
    static const struct {
        const char *msg;
        int as_is;
    } cases[] = {
        {"a\r\nb\r\n", 1},     {"", 1},
        {"\r\n", 1},           {"a\r\nb", 0},   /* last line not ended */
        {"a\nb\r\n", 0},       {"a\r\n\n", 0},  /* bare LF */
        {"a\rb\r\n", 0},       {"a\r\nb\r", 0}, /* bare CR */
        {"a\r\n.b\r\n", 0},    {".\r\n", 0},    /* a dot to stuff */
        {"a\r\r\n", 0},        {"\r\r\n\n", 0},
        {"a.b\r\n x.\r\n", 1}, {"caf\xc3\xa9\r\n", 1}, /* 8-bit is no matter */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t len = strlen(cases[i].msg), lines, longest;
        smtp_data_scan(cases[i].msg, len, &info);
        assert_int_equal(info.as_is, cases[i].as_is);
        reference_counts(cases[i].msg, len, &lines, &longest);
        assert_int_equal(info.lines, lines);
        assert_int_equal(info.longest, longest);
        encode_ok_n(cases[i].msg, len, NULL, 0); /* checked against the reference below */
    }
}

/* Messages that are mostly the wire form (a renderer's): CRLF lines of random
 * length, now and then a leading dot, a bare CR or LF, a missing last
 * ending, an 8-bit byte; the scan's counts and the write's bytes must be
 * the reference's, whichever path each took. */
static void test_wire_form_matches_reference(void **state)
{
    (void)state;
    uint32_t seed = 777;
    char msg[4096];
    buf_t got = BUF_INIT, want = BUF_INIT;
    int as_is = 0;
    for (int round = 0; round < 20000; round++) {
        size_t n = 0;
        seed = seed * 1103515245u + 12345u;
        size_t nlines = (seed >> 16) % 40;
        for (size_t l = 0; l < nlines && n + 120 < sizeof msg; l++) {
            seed = seed * 1103515245u + 12345u;
            size_t w = (seed >> 16) % 100;
            for (size_t i = 0; i < w; i++) {
                msg[n++] = (char)('a' + i % 26);
            }
            seed = seed * 1103515245u + 12345u;
            unsigned r = (seed >> 16) % 400;
            if (r == 0 && w > 0) {
                msg[n - w] = '.';
            } else if (r == 1 && w > 1) {
                msg[n - w / 2] = '\r';
            } else if (r == 2 && w > 1) {
                msg[n - w / 2] = '\n';
            } else if (r == 3 && w > 0) {
                msg[n - 1] = (char)0xe9;
            }
            if (!(r == 4 && l + 1 == nlines)) {
                msg[n++] = '\r';
                msg[n++] = '\n';
            }
        }
        struct smtp_data_info info;
        size_t lines, longest;
        smtp_data_scan(msg, n, &info);
        reference_counts(msg, n, &lines, &longest);
        assert_int_equal(info.lines, lines);
        assert_int_equal(info.longest, longest);
        as_is += info.as_is;
        buf_reset(&got);
        buf_reset(&want);
        smtp_data_write(&got, msg, n, &info);
        reference_encode(msg, n, &want);
        assert_int_equal(buf_len(&got), buf_len(&want));
        assert_memory_equal(buf_data(&got), buf_data(&want), buf_len(&want));
        assert_no_bare_cr_or_lf(buf_data(&got), buf_len(&got));
    }
    assert_true(as_is > 10000 && as_is < 20000); /* both paths ran */
    buf_free(&got);
    buf_free(&want);
}

static void test_as_is_scan_of_another_message_is_not_trusted(void **state)
{
    (void)state;
    /* A scan that found its own message in wire form says nothing about
     * another: that one is normalised line by line. */
    const char *clean = "a\r\nb\r\n";
    struct smtp_data_info stale;
    smtp_data_scan(clean, strlen(clean), &stale);
    assert_true(stale.as_is);
    const char *raw = "x\ny\n.z\rw";
    buf_t got = BUF_INIT, want = BUF_INIT;
    smtp_data_write(&got, raw, strlen(raw), &stale);
    reference_encode(raw, strlen(raw), &want);
    assert_int_equal(buf_len(&got), buf_len(&want));
    assert_memory_equal(buf_data(&got), buf_data(&want), buf_len(&want));
    /* The same text at another address, or a shorter length: not the scan's. */
    char copy[16];
    memcpy(copy, "a\nb\n\r\n", 7);
    buf_reset(&got);
    buf_reset(&want);
    smtp_data_write(&got, copy, 7, &stale);
    reference_encode(copy, 7, &want);
    assert_memory_equal(buf_data(&got), buf_data(&want), buf_len(&want));
    buf_reset(&got);
    smtp_data_write(&got, clean, 4, &stale); /* "a\r\nb": its last line gets an ending */
    assert_int_equal(buf_len(&got), 9);
    assert_memory_equal(buf_data(&got), "a\r\nb\r\n.\r\n", 9);
    buf_free(&got);
    buf_free(&want);
}

static void test_no_reallocation_once_grown(void **state)
{
    (void)state;
    const char *msg = "Subject: hi\n\n.line\nbody\n";
    buf_t out = BUF_INIT;
    const char *err;
    assert_int_equal(smtp_data_encode(&out, msg, strlen(msg), NULL, &err), 0);
    char *data = out.data;
    size_t cap = out.cap;
    for (int i = 0; i < 100; i++) {
        buf_reset(&out);
        assert_int_equal(smtp_data_encode(&out, msg, strlen(msg), NULL, &err), 0);
        assert_ptr_equal(out.data, data);
        assert_int_equal(out.cap, cap);
    }
    buf_free(&out);
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_linear_time_on_cr_only_messages(void **state)
{
    (void)state;
    /* Finding "the next CR or LF" naively rescans the rest for the byte that
     * never comes: quadratic. 2 MB of "a\r" would then take many seconds. */
    size_t n = 2u << 20;
    char *msg = malloc(n);
    assert_non_null(msg);
    for (size_t i = 0; i < n; i += 2) {
        msg[i] = 'a';
        msg[i + 1] = '\r';
    }
    buf_t out = BUF_INIT;
    const char *err;
    struct smtp_data_info info;
    double t0 = seconds_now();
    assert_int_equal(smtp_data_encode(&out, msg, n, &info, &err), 0);
    for (size_t i = 0; i < n; i += 2) {
        msg[i + 1] = '\n';
    }
    buf_reset(&out);
    assert_int_equal(smtp_data_encode(&out, msg, n, &info, &err), 0);
    double took = seconds_now() - t0;
    assert_int_equal(info.lines, n / 2);
    assert_int_equal(buf_len(&out), n / 2 * 3 + 3);
    assert_true(took < 2.0);
    free(msg);
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crlf_passes_through),
        cmocka_unit_test(test_bare_lf_bare_cr_and_mixed),
        cmocka_unit_test(test_missing_final_newline_and_empty_message),
        cmocka_unit_test(test_dot_stuffing_first_and_later_lines),
        cmocka_unit_test(test_smuggling_payloads_never_end_data),
        cmocka_unit_test(test_998_and_999_octets),
        cmocka_unit_test(test_998_limit_ignores_the_stuffed_dot),
        cmocka_unit_test(test_long_line_in_the_middle_refused),
        cmocka_unit_test(test_output_unchanged_on_error),
        cmocka_unit_test(test_appends_after_existing_output),
        cmocka_unit_test(test_8bit_detection),
        cmocka_unit_test(test_scan_counts_lines_and_longest),
        cmocka_unit_test(test_matches_reference_on_generated_messages),
        cmocka_unit_test(test_write_survives_a_scan_of_another_message),
        cmocka_unit_test(test_as_is_only_for_the_wire_form),
        cmocka_unit_test(test_wire_form_matches_reference),
        cmocka_unit_test(test_as_is_scan_of_another_message_is_not_trusted),
        cmocka_unit_test(test_no_reallocation_once_grown),
        cmocka_unit_test(test_linear_time_on_cr_only_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
