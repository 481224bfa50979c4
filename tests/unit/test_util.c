/*
 * test_util - the one copy of each small thing: the number parser of the
 * command lines, the intrusive list, the binary heap (order, removal from
 * the middle, re-keying) against a brute-force model.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/heap.h"
#include "engine/list.h"
#include "engine/num.h"
#include "engine/opt.h"

static void test_num_accepts_plain_decimals_in_range(void **state)
{
    (void)state;
    unsigned long v = 7;
    assert_int_equal(num_parse_ulong("0", 0, 10, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(num_parse_ulong("10", 0, 10, &v), 0);
    assert_int_equal(v, 10);
    assert_int_equal(num_parse_ulong("18446744073709551615", 0, (unsigned long)-1, &v), 0);
    assert_true(v == (unsigned long)-1);
}

static void test_num_refuses_everything_else(void **state)
{
    (void)state;
    const char *bad[] = {"",   "-1", "+1", " 1", "1 ", "1x", "0x10", "11", "18446744073709551616",
                         "1.5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned long v = 42;
        assert_int_equal(num_parse_ulong(bad[i], 0, 10, &v), -1);
        assert_int_equal(v, 42); /* untouched */
    }
    unsigned long v = 42;
    assert_int_equal(num_parse_ulong("1", 2, 10, &v), -1); /* under the minimum */
    assert_int_equal(num_parse_ulong(NULL, 0, 10, &v), -1);
}

struct item {
    int id;
    uint64_t key;
    int heap_index;
    struct list_node node;
};

static const struct option test_opts[] = {
    {"config", required_argument, 0, 'c'},
    {"db", required_argument, 0, 'd'},
    {"dry-run", no_argument, 0, 'n'},
    {0, 0, 0, 0},
};

/* Whole names are options; a prefix glibc would take is refused; a value
 * that looks like an option is a value. */
static void test_opt_takes_whole_names_only(void **state)
{
    (void)state;
    char *ok[] = {"x", "--config", "--conf", "--db=u", "--dry-run", "--", "--d", NULL};
    optind = 1;
    assert_int_equal(opt_getopt(7, ok, test_opts), 'c');
    assert_string_equal(optarg, "--conf");
    assert_int_equal(opt_getopt(7, ok, test_opts), 'd');
    assert_int_equal(opt_getopt(7, ok, test_opts), 'n');
    assert_int_equal(opt_getopt(7, ok, test_opts), -1);

    char *abbrev[] = {"x", "--db", "u", "--conf", "f", NULL};
    optind = 1;
    assert_int_equal(opt_getopt(5, abbrev, test_opts), '?');
    assert_int_equal(optind, 5);
    char *prefix2[] = {"x", "--d=u", NULL};
    optind = 1;
    assert_int_equal(opt_getopt(2, prefix2, test_opts), '?');
}

static void test_list_push_unlink_keeps_order_and_len(void **state)
{
    (void)state;
    struct item it[4] = {{.id = 0}, {.id = 1}, {.id = 2}, {.id = 3}};
    struct list_head h = {0};
    list_push_back(&h, &it[1].node);
    list_push_back(&h, &it[2].node);
    list_push_front(&h, &it[0].node);
    list_push_back(&h, &it[3].node);
    assert_int_equal(h.len, 4);
    list_unlink(&h, &it[2].node); /* middle */
    list_unlink(&h, &it[0].node); /* first */
    assert_false(list_linked(&h, &it[2].node));
    assert_true(list_linked(&h, &it[1].node));
    int want[] = {1, 3}, n = 0;
    for (struct list_node *x = h.first; x; x = x->next) {
        assert_int_equal(list_entry(x, struct item, node)->id, want[n++]);
    }
    assert_int_equal(n, 2);
    assert_int_equal(h.len, 2);
    list_unlink(&h, &it[3].node); /* last */
    list_unlink(&h, &it[1].node); /* only */
    assert_null(h.first);
    assert_null(h.last);
    assert_int_equal(h.len, 0);
    assert_null(list_entry((struct list_node *)NULL, struct item, node));
}

static void test_heap_pops_in_key_order_with_removals_and_rekeys(void **state)
{
    (void)state;
    enum { N = 500 };
    struct item *it = calloc(N, sizeof *it);
    assert_non_null(it);
    struct heap h;
    heap_init(&h, offsetof(struct item, key), offsetof(struct item, heap_index));
    srand(7);
    for (int i = 0; i < N; i++) {
        it[i].id = i;
        it[i].key = (uint64_t)(rand() % 1000);
        it[i].heap_index = -1;
        heap_push(&h, &it[i]);
    }
    /* Remove every fifth from wherever it sits; re-key every seventh. */
    size_t in = N;
    for (int i = 0; i < N; i += 5) {
        heap_remove(&h, &it[i]);
        assert_false(heap_contains(&h, &it[i]));
        heap_remove(&h, &it[i]); /* twice: a no-op */
        in--;
    }
    for (int i = 1; i < N; i += 7) {
        if (heap_contains(&h, &it[i])) {
            it[i].key = (uint64_t)(rand() % 2000);
            heap_fix(&h, &it[i]);
        }
    }
    assert_int_equal(heap_len(&h), in);
    uint64_t last = 0;
    size_t popped = 0;
    struct item *x;
    while ((x = heap_pop(&h))) {
        assert_true(x->key >= last);
        assert_int_equal(x->heap_index, -1);
        assert_true(x->id % 5 != 0);
        last = x->key;
        popped++;
    }
    assert_int_equal(popped, in);
    assert_null(heap_top(&h));
    heap_free(&h);
    free(it);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_num_accepts_plain_decimals_in_range),
        cmocka_unit_test(test_num_refuses_everything_else),
        cmocka_unit_test(test_opt_takes_whole_names_only),
        cmocka_unit_test(test_list_push_unlink_keeps_order_and_len),
        cmocka_unit_test(test_heap_pops_in_key_order_with_removals_and_rekeys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
