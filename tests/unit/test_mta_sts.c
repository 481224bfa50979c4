/*
 * test_mta_sts - RFC 8461's TXT record (3.1), policy file (3.2) and MX
 * matching (4.1), against good, odd and hostile input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pool/mta_sts.h"

static char id[MTA_STS_ID_MAX], why[256];

/* txt - the verdict on records (NULL-terminated) */
static int txt(const char *const *records)
{
    size_t lens[8], n = 0;
    for (; records[n]; n++) {
        lens[n] = strlen(records[n]);
    }
    id[0] = why[0] = '\0';
    return mta_sts_txt_parse(records, lens, n, id, why, sizeof why);
}

static void test_txt_one_record(void **state)
{
    (void)state;
    assert_int_equal(txt((const char *[]){"v=STSv1; id=20160831085700Z;", NULL}), 1);
    assert_string_equal(id, "20160831085700Z");
    assert_int_equal(txt((const char *[]){"v=STSv1;id=abc", NULL}), 1);
    assert_string_equal(id, "abc");
    /* Other TXT records beside it, and extension fields, are ignored. */
    assert_int_equal(txt((const char *[]){"v=spf1 -all", "v=STSv1; ext=1; id=X9 ;", NULL}), 1);
    assert_string_equal(id, "X9");
}

static void test_txt_none(void **state)
{
    (void)state;
    assert_int_equal(txt((const char *[]){NULL}), 0);
    assert_string_equal(why, "no v=STSv1 record");
    assert_int_equal(txt((const char *[]){"v=STSv10; id=1", "hello", NULL}), 0);
    assert_string_equal(why, "no v=STSv1 record");
    /* Exactly one, or none counts (3.1). */
    assert_int_equal(txt((const char *[]){"v=STSv1; id=1", "v=STSv1; id=2", NULL}), 0);
    assert_string_equal(why, "2 v=STSv1 records");
    assert_int_equal(txt((const char *[]){"v=STSv1;", NULL}), 0);
    assert_string_equal(why, "v=STSv1 record without an id");
    assert_int_equal(txt((const char *[]){"v=STSv1; id=abc-def", NULL}), 0);
    assert_string_equal(why, "bad id \"abc-def\" (1 to 32 letters and digits)");
    assert_int_equal(txt((const char *[]){"v=STSv1; id=123456789012345678901234567890123", NULL}),
                     0);
    assert_int_equal(txt((const char *[]){"v=STSv1; id=", NULL}), 0);
    assert_int_equal(txt((const char *[]){"v=STSv1 x id=1", NULL}), 0);
    assert_string_equal(why, "malformed v=STSv1 record");
}

static struct mta_sts_policy pol;

static int policy(const char *text)
{
    why[0] = '\0';
    return mta_sts_policy_parse(text, strlen(text), &pol, why, sizeof why);
}

static void test_policy_good(void **state)
{
    (void)state;
    assert_int_equal(policy("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
                            "mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n"),
                     0);
    assert_int_equal(pol.mode, MTA_STS_ENFORCE);
    assert_int_equal(pol.max_age, 604800);
    assert_int_equal(pol.nmx, 3);
    assert_string_equal(pol.mx[1], "*.example.net");
    /* LF only, spaces around, unknown keys, no final line end. */
    assert_int_equal(policy("version:STSv1\nmode:  testing \nfoo: bar\nmx: a.test\nmax_age: 0"), 0);
    assert_int_equal(pol.mode, MTA_STS_TESTING);
    assert_int_equal(pol.max_age, 0);
    assert_string_equal(pol.mx[0], "a.test");
    /* Mode none needs no mx. */
    assert_int_equal(policy("version: STSv1\nmode: none\nmax_age: 86400\n"), 0);
    assert_int_equal(pol.mode, MTA_STS_NONE);
    assert_string_equal(mta_sts_mode_name(pol.mode), "none");
    assert_int_equal(policy("version: STSv1\nmode: enforce\nmx: a\nmax_age: 31557600\n"), 0);
}

static void test_policy_invalid(void **state)
{
    (void)state;
    assert_int_equal(policy("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n"), -1);
    assert_string_equal(why, "version is \"STSv2\", not STSv1");
    assert_int_equal(policy("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n"), -1);
    assert_string_equal(why, "bad mode \"strict\"");
    assert_int_equal(policy("version: STSv1\nmode: enforce\nmx: a\nmax_age: 31557601\n"), -1);
    assert_string_equal(why, "bad max_age \"31557601\" (0 to 31557600 seconds)");
    assert_int_equal(policy("version: STSv1\nmode: enforce\nmx: a\nmax_age: -5\n"), -1);
    assert_int_equal(policy("version: STSv1\nmode: enforce\nmx: a\nmax_age: 99999999999999999\n"),
                     -1);
    assert_int_equal(policy("version: STSv1\nmode: enforce\nmax_age: 1\n"), -1);
    assert_string_equal(why, "no mx");
    assert_int_equal(policy("mode: enforce\nmx: a\nmax_age: 1\n"), -1);
    assert_string_equal(why, "no version");
    assert_int_equal(policy("version: STSv1\nmx: a\nmax_age: 1\n"), -1);
    assert_string_equal(why, "no mode");
    assert_int_equal(policy("version: STSv1\nmode: enforce\nmx: a\n"), -1);
    assert_string_equal(why, "no max_age");
    assert_int_equal(policy("<html>not found</html>\n"), -1);
    assert_string_equal(why, "line \"<html>not found</html>\" is not \"key: value\"");
    assert_int_equal(policy(""), -1);
    assert_int_equal(policy("version: STSv1\nmode: enforce\nmx: a b\nmax_age: 1\n"), -1);
    assert_string_equal(why, "bad mx \"a b\"");
}

static void test_mx_match(void **state)
{
    (void)state;
    assert_true(mta_sts_mx_match("mail.example.com", "mail.example.com"));
    assert_true(mta_sts_mx_match("mail.example.com", "MAIL.Example.COM."));
    assert_true(mta_sts_mx_match("mail.example.com.", "mail.example.com"));
    assert_false(mta_sts_mx_match("mail.example.com", "mail.example.co"));
    assert_false(mta_sts_mx_match("mail.example.com", "xmail.example.com"));
    /* The wildcard is exactly one leftmost label. */
    assert_true(mta_sts_mx_match("*.example.com", "mx1.example.com"));
    assert_true(mta_sts_mx_match("*.example.com", "MX1.EXAMPLE.COM."));
    assert_false(mta_sts_mx_match("*.example.com", "example.com"));
    assert_false(mta_sts_mx_match("*.example.com", "a.b.example.com"));
    assert_false(mta_sts_mx_match("*.example.com", ".example.com"));
    assert_false(mta_sts_mx_match("*.example.com", "mx1.example.net"));
    assert_false(mta_sts_mx_match("*.example.com", "mx1-example.com"));
    assert_false(mta_sts_mx_match("", ""));
    assert_int_equal(policy("version: STSv1\nmode: enforce\nmx: a.test\nmx: *.b.test\nmax_age: 1"),
                     0);
    assert_true(mta_sts_policy_mx_ok(&pol, "x.b.test"));
    assert_true(mta_sts_policy_mx_ok(&pol, "a.test"));
    assert_false(mta_sts_policy_mx_ok(&pol, "b.test"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt_one_record), cmocka_unit_test(test_txt_none),
        cmocka_unit_test(test_policy_good),    cmocka_unit_test(test_policy_invalid),
        cmocka_unit_test(test_mx_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
