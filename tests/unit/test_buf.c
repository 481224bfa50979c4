/*
 * test_buf - the growable byte string under the parsers: appends, the
 * consumed-prefix offset, reserve/commit, formatted appends beyond the
 * first guess, and storage kept or released as documented.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/buf.h"

static void assert_buf(const buf_t *b, const char *want)
{
    assert_int_equal(buf_len(b), strlen(want));
    assert_memory_equal(buf_data(b), want, strlen(want));
}

static void test_empty_buffer_reads_as_empty_string(void **state)
{
    (void)state;
    buf_t b = BUF_INIT;
    assert_int_equal(buf_len(&b), 0);
    assert_non_null(buf_data(&b));
    assert_int_equal(buf_data(&b)[0], '\0');
    buf_append(&b, "x", 0); /* an empty append allocates nothing */
    assert_null(b.data);
    buf_free(&b);
    buf_init(&b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
}

static void test_append_and_growth_keep_contents(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b);
    buf_append_str(&b, "hello");
    buf_append(&b, ", ", 2);
    buf_append_str(&b, "world");
    assert_buf(&b, "hello, world");
    /* Grow well past the first allocation; every byte must survive. */
    for (int i = 0; i < 10000; i++) {
        char c = (char)('a' + i % 26);
        buf_append(&b, &c, 1);
    }
    assert_int_equal(buf_len(&b), 12 + 10000);
    assert_true(b.cap >= buf_len(&b));
    const char *d = buf_data(&b);
    assert_memory_equal(d, "hello, world", 12);
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(d[12 + i], 'a' + i % 26);
    }
    buf_free(&b);
}

static void test_consume_moves_the_front(void **state)
{
    (void)state;
    buf_t b = BUF_INIT;
    buf_append_str(&b, "abcdef");
    buf_consume(&b, 2);
    assert_buf(&b, "cdef");
    buf_consume(&b, 4);
    assert_int_equal(buf_len(&b), 0);
    assert_int_equal(b.off, 0); /* drained: offsets rewind, storage stays */
    assert_non_null(b.data);
    buf_append_str(&b, "xyz");
    buf_consume(&b, 100); /* more than held: empties, no underflow */
    assert_int_equal(buf_len(&b), 0);
    buf_free(&b);
}

static void test_reserve_reclaims_consumed_prefix(void **state)
{
    (void)state;
    buf_t b = BUF_INIT;
    char big[200];
    memset(big, 'q', sizeof big);
    buf_append(&b, big, sizeof big); /* cap 256 */
    size_t cap = b.cap;
    char *data = b.data;
    buf_consume(&b, 150);
    /* 50 bytes held, 56 free at the end: 100 more fit only after the memmove. */
    char *w = buf_reserve(&b, 100);
    assert_int_equal(b.cap, cap);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.off, 0);
    memset(w, 'r', 100);
    buf_commit(&b, 100);
    assert_int_equal(buf_len(&b), 150);
    assert_int_equal(buf_data(&b)[49], 'q');
    assert_int_equal(buf_data(&b)[50], 'r');
    buf_free(&b);
}

static void test_reserve_commit_only_what_was_written(void **state)
{
    (void)state;
    buf_t b = BUF_INIT;
    buf_append_str(&b, "ab");
    char *w = buf_reserve(&b, 1000);
    assert_true(b.cap - b.len >= 1000);
    memcpy(w, "cd", 2);
    buf_commit(&b, 2);
    assert_buf(&b, "abcd");
    buf_free(&b);
}

static void test_appendf_short_and_beyond_first_guess(void **state)
{
    (void)state;
    buf_t b = BUF_INIT;
    buf_appendf(&b, "%d-%s", 42, "x");
    assert_buf(&b, "42-x");
    /* Longer than the 128 bytes appendf reserves first: must be formatted again, whole. */
    char s[1000];
    memset(s, 'z', sizeof s - 1);
    s[sizeof s - 1] = '\0';
    buf_appendf(&b, "[%s]", s);
    assert_int_equal(buf_len(&b), 4 + 2 + 999);
    assert_int_equal(buf_data(&b)[4], '[');
    assert_int_equal(buf_data(&b)[5 + 998], 'z');
    assert_int_equal(buf_data(&b)[5 + 999], ']');
    buf_free(&b);
}

static void test_reset_keeps_storage_shrink_releases_it(void **state)
{
    (void)state;
    buf_t b = BUF_INIT;
    char big[5000] = {0};
    buf_append(&b, big, sizeof big);
    char *data = b.data;
    size_t cap = b.cap;
    buf_reset(&b);
    assert_int_equal(buf_len(&b), 0);
    assert_ptr_equal(b.data, data);
    buf_append(&b, big, sizeof big); /* same size again: no reallocation */
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    buf_shrink(&b, 1024); /* not empty: kept */
    assert_ptr_equal(b.data, data);
    buf_reset(&b);
    buf_shrink(&b, 1 << 20); /* small enough: kept */
    assert_ptr_equal(b.data, data);
    buf_shrink(&b, 1024); /* empty and bigger than keep: released */
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_buffer_reads_as_empty_string),
        cmocka_unit_test(test_append_and_growth_keep_contents),
        cmocka_unit_test(test_consume_moves_the_front),
        cmocka_unit_test(test_reserve_reclaims_consumed_prefix),
        cmocka_unit_test(test_reserve_commit_only_what_was_written),
        cmocka_unit_test(test_appendf_short_and_beyond_first_guess),
        cmocka_unit_test(test_reset_keeps_storage_shrink_releases_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
