/*
 * test_inbound_http - which request paths `ringmail inbound --http` reads
 * as a token, under each shape of [feedback] unsubscribe_url, and the
 * paths it refuses (404); inbound_http_start's refusals before the
 * database. The HTTP side itself is tested end to end
 * (tests/e2e/test_unsubscribe_http.sh).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "campaign/inbound_http.h"
#include "pool/config.h"

#define TOK "aebthxqq5gspwjjkm2wonry"

static void assert_token(const char *url, const char *path, const char *want)
{
    char got[64] = "unchanged";
    int rc = inbound_http_token_of(url, path, got, sizeof got);
    if (want) {
        if (rc != 0 || strcmp(got, want) != 0) {
            fail_msg("%s under %s: rc %d token '%s', want '%s'", path, url, rc, got, want);
        }
    } else if (rc != -1 || strcmp(got, "unchanged") != 0) {
        fail_msg("%s under %s: rc %d token '%s', want refused", path, url, rc, got);
    }
}

static void test_prefixes(void **state)
{
    (void)state;
    assert_token("https://unsub.sender.test/u", "/u/" TOK, "u-" TOK);
    assert_token("http://127.0.0.1:8080/u", "/u/" TOK, "u-" TOK);
    assert_token("", "/u/" TOK, "u-" TOK); /* no unsubscribe_url: /u/ */
    assert_token("https://unsub.sender.test", "/" TOK, "u-" TOK);
    assert_token("https://unsub.sender.test/a/b", "/a/b/" TOK, "u-" TOK);
    assert_token("https://unsub.sender.test/a/b", "/u/" TOK, NULL);
    assert_token("https://unsub.sender.test/u", "/" TOK, NULL);
    assert_token("https://unsub.sender.test/u", "/uu/" TOK, NULL);
    assert_token("https://unsub.sender.test/u", "/U/" TOK, NULL);
}

static void test_segments(void **state)
{
    (void)state;
    const char *u = "https://unsub.sender.test/u";
    /* a kind given is kept (the server refuses one other than u by name) */
    assert_token(u, "/u/u-" TOK, "u-" TOK);
    assert_token(u, "/u/b-" TOK, "b-" TOK);
    /* either case: some clients upper-case; the MAC check takes both */
    assert_token(u, "/u/AEBTHXQQ5GSPWJJKM2WONRY", "u-AEBTHXQQ5GSPWJJKM2WONRY");
    assert_token(u, "/u/", NULL);
    assert_token(u, "/u", NULL);
    assert_token(u, "/u/" TOK "/", NULL);
    assert_token(u, "/u/" TOK "/x", NULL);
    assert_token(u, "/u//" TOK, NULL);
    assert_token(u, "/u/" TOK ".html", NULL);
    assert_token(u, "/u/../" TOK, NULL);
    assert_token(u, "/u/a b", NULL);
    assert_token(u, "/u/<script>", NULL);
    assert_token(u, "/healthz", NULL);
    /* "u-" and 61 characters fill FEEDBACK_LOCAL_MAX (63 and the NUL);
     * one more is refused, never cut short */
    char path[128];
    snprintf(path, sizeof path, "/u/%062d", 0);
    assert_token(u, path, NULL);
    snprintf(path, sizeof path, "/u/%061d", 0);
    char want[64];
    snprintf(want, sizeof want, "u-%061d", 0);
    assert_token(u, path, want);
}

/* inbound_http_start's refusals that come before the database */
static void test_start_refused(void **state)
{
    (void)state;
    static struct config cfg; /* no [feedback] */
    char err[256] = "";
    assert_null(inbound_http_start("127.0.0.1:0", "dbname=none", &cfg, err, sizeof err));
    assert_string_equal(err, "--http needs a [feedback] section (its secret checks the tokens)");
    cfg.feedback.enabled = 1;
    assert_null(inbound_http_start("127.0.0.1", "dbname=none", &cfg, err, sizeof err));
    assert_string_equal(err, "--http 127.0.0.1: bad address '127.0.0.1' (want host:port)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefixes),
        cmocka_unit_test(test_segments),
        cmocka_unit_test(test_start_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
