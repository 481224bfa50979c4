/*
 * test_feedback - VERP and unsubscribe tokens: known answers (computed
 * apart, with Python's hmac and base64), round trips over the id range,
 * any case, and every refusal with its reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "campaign/feedback.h"
#include "campaign/prepare.h"
#include "campaign/render.h"

_Static_assert(FEEDBACK_MAC_LEN * 8 >= 80, "the issue asks for a MAC of at least 80 bits");

static const uint8_t key[] = "0123456789abcdef0123456789abcdef";
#define KEYLEN 32

static void test_known_answers(void **state)
{
    (void)state;
    static const struct {
        struct feedback_id t;
        const char *local;
    } v[] = {
        {{FEEDBACK_ID_BOUNCE, 5, 42}, "b-auvomnepbstncuzpiql2liq"},
        {{FEEDBACK_ID_UNSUBSCRIBE, 0, 3}, "u-aabrwqmr6uz65frhx6qb24a"},
        {{FEEDBACK_ID_BOUNCE, 123456789, 9876543210ull}, "b-swno6oxkvxaokjhhguj7ry5zd5tqpcz5se"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char local[FEEDBACK_LOCAL_MAX];
        assert_int_equal(feedback_token_make(key, KEYLEN, &v[i].t, local), strlen(v[i].local));
        assert_string_equal(local, v[i].local);
        struct feedback_id got;
        char why[64] = "";
        assert_int_equal(feedback_token_parse(key, KEYLEN, v[i].local, &got, why, sizeof why), 0);
        assert_int_equal(got.kind, v[i].t.kind);
        assert_true(got.campaign == v[i].t.campaign && got.recipient == v[i].t.recipient);
    }
    buf_t a;
    buf_init(&a);
    feedback_address_make(key, KEYLEN, &v[0].t, "bounces.sender.test", &a);
    buf_append(&a, "", 1);
    assert_string_equal(buf_data(&a), "b-auvomnepbstncuzpiql2liq@bounces.sender.test");
    buf_free(&a);
}

/* Every id size from 0 to UINT64_MAX, both kinds: lower-case base32, at
 * most 54 characters, and back to the same ids (from any case, with a domain). */
static void test_round_trip(void **state)
{
    (void)state;
    uint64_t ids[] = {0,         1, 127, 128, 16383, 16384, 1u << 31, 1ull << 49, UINT64_MAX - 1,
                      UINT64_MAX};
    size_t n = sizeof ids / sizeof ids[0];
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < 2; k++) {
            struct feedback_id t = {k ? FEEDBACK_ID_UNSUBSCRIBE : FEEDBACK_ID_BOUNCE, ids[i],
                                    ids[n - 1 - i]};
            char local[FEEDBACK_LOCAL_MAX], upper[FEEDBACK_LOCAL_MAX + 32], why[64];
            size_t len = feedback_token_make(key, KEYLEN, &t, local);
            assert_true(len >= 25 && len <= 54);
            assert_int_equal(strspn(local + 2, "abcdefghijklmnopqrstuvwxyz234567"), len - 2);
            struct feedback_id got = {0};
            assert_int_equal(feedback_token_parse(key, KEYLEN, local, &got, why, sizeof why), 0);
            assert_true(got.kind == t.kind && got.campaign == t.campaign &&
                        got.recipient == t.recipient);
            for (size_t c = 0; c <= len; c++) {
                upper[c] = (char)(local[c] >= 'a' && local[c] <= 'z' ? local[c] - 32 : local[c]);
            }
            strcat(upper, "@Bounces.Sender.TEST");
            memset(&got, 0, sizeof got);
            assert_int_equal(feedback_token_parse(key, KEYLEN, upper, &got, why, sizeof why), 0);
            assert_true(got.kind == t.kind && got.campaign == t.campaign &&
                        got.recipient == t.recipient);
        }
    }
}

static void refused(const uint8_t *k, const char *s, const char *reason)
{
    struct feedback_id got = {FEEDBACK_ID_BOUNCE, 77, 77};
    char why[64] = "";
    assert_int_equal(feedback_token_parse(k, KEYLEN, s, &got, why, sizeof why), -1);
    assert_string_equal(why, reason);
    assert_true(got.campaign == 77 && got.recipient == 77); /* untouched */
}

static void test_refusals(void **state)
{
    (void)state;
    const char *good = "b-auvomnepbstncuzpiql2liq";
    refused(key, "", "not a ringmail token");
    refused(key, "bob@example.com", "not a ringmail token");
    refused(key, "b-", "not a ringmail token");
    refused(key, "bb-auvomnepbstncuzpiql2liq", "not a ringmail token");
    refused(key, "--auvomnepbstncuzpiql2liq", "not a ringmail token");
    refused(key, "b-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "not a ringmail token");
    refused(key, "b-auvomnepbstncuzpiql2li1", "bad token characters"); /* 1 is not base32 */
    refused(key, "b-auvomnepbstncuzpiql2l.q", "bad token characters");
    refused(key, "b-auvomnepbstncuzpiql2lir", "bad token characters"); /* pad bits set */
    refused(key, "b-auvomnepbstncuzpiql2li", "bad token characters");  /* no byte ends there */
    refused(key, "b-auvomnepbstncuzp", "truncated token");             /* 8 characters short */
    refused(key, "b-aaaa", "truncated token");
    refused(key, "b-77777777777777777777777777777777", "truncated token"); /* varints run on */
    refused(key, "x-auvomnepbstncuzpiql2liq", "unknown token kind");
    refused(key, "u-auvomnepbstncuzpiql2liq", "forged token (MAC mismatch)"); /* kind is MACed */
    refused(key, "b-auvomnepbstncuzpiql2lia", "forged token (MAC mismatch)");
    refused(key, "b-bmvomnepbstncuzpiql2liq", "forged token (MAC mismatch)"); /* other ids */
    uint8_t other[KEYLEN];
    memcpy(other, key, KEYLEN);
    other[31] ^= 1;
    refused(other, good, "forged token (MAC mismatch)");
}

/* [feedback] unsubscribe_url as send --db sets it up: the template names
 * the token variable, prepare_render fills it from the recipient's row id,
 * and the header carries both URIs, folded, with One-Click. */
static void test_unsubscribe_header(void **state)
{
    (void)state;
    struct render_spec spec = {
        .from_addr = "news@sender.test",
        .subject = "Hi {{name|there}}",
        .text = "Hello.",
        .list_unsubscribe = "https://unsub.sender.test/u/{{" PREPARE_TOKEN_VAR "}}",
        .list_unsubscribe_mailto = "mailto:u-{{" PREPARE_TOKEN_VAR "}}@bounces.sender.test",
        .fixed_date = 1700000000,
        .fixed_message_id = "<x@sender.test>",
    };
    char err[256] = "";
    struct render_template *tpl = render_compile(&spec, err, sizeof err);
    assert_non_null(tpl);
    struct prepare_token tok = {key, KEYLEN, 5, NULL};
    struct prepare_item it = {.r = {.id = 42, .address = "ann@x.test", .vars = NULL}};
    it.r.vars = strdup("{\"name\": \"Ann\"}");
    prepare_render(tpl, NULL, NULL, &tok, &it);
    assert_string_equal(it.err, "");
    buf_append(&it.body, "", 1);
    const char *body = buf_data(&it.body);
    /* u-TOKEN for campaign 5, recipient 42: the known answer's ids, kind u. */
    char local[FEEDBACK_LOCAL_MAX], want[512];
    struct feedback_id t = {FEEDBACK_ID_UNSUBSCRIBE, 5, 42};
    feedback_token_make(key, KEYLEN, &t, local);
    snprintf(want, sizeof want,
             "List-Unsubscribe: <https://unsub.sender.test/u/%s>,\r\n "
             "<mailto:%s@bounces.sender.test>\r\n"
             "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
             local + 2, local);
    if (!strstr(body, want)) {
        fail_msg("want\n%s\nin\n%s", want, body);
    }
    assert_non_null(strstr(body, "Subject: Hi Ann\r\n")); /* the row's variables still merge */
    struct feedback_id got;
    char why[64];
    assert_int_equal(feedback_token_parse(key, KEYLEN, local, &got, why, sizeof why), 0);
    assert_true(got.kind == FEEDBACK_ID_UNSUBSCRIBE && got.campaign == 5 && got.recipient == 42);
    buf_free(&it.body);
    /* Without a token (no [feedback]), the variable is empty, as any unknown one. */
    it.r.vars = NULL;
    prepare_render(tpl, NULL, NULL, NULL, &it);
    buf_append(&it.body, "", 1);
    assert_non_null(strstr(buf_data(&it.body), "<https://unsub.sender.test/u/>"));
    buf_free(&it.body);
    render_free(tpl);
    /* A short pair stays on one line; a mailto alone or after nothing is refused. */
    spec.list_unsubscribe = "https://u.test/{{" PREPARE_TOKEN_VAR "}}";
    spec.list_unsubscribe_mailto = "mailto:u@b.test";
    tpl = render_compile(&spec, err, sizeof err);
    assert_non_null(tpl);
    buf_t out;
    buf_init(&out);
    assert_int_equal(render_message(tpl, "ann@x.test", NULL, NULL, &out, err, sizeof err), 0);
    buf_append(&out, "", 1);
    assert_non_null(
        strstr(buf_data(&out), "List-Unsubscribe: <https://u.test/>, <mailto:u@b.test>\r\n"));
    buf_free(&out);
    render_free(tpl);
    spec.list_unsubscribe_mailto = "https://u.test/x";
    assert_null(render_compile(&spec, err, sizeof err));
    assert_string_equal(err, "list_unsubscribe_mailto: must start with mailto: and follow a "
                             "list_unsubscribe");
    spec.list_unsubscribe = NULL;
    spec.list_unsubscribe_mailto = "mailto:u@b.test";
    assert_null(render_compile(&spec, err, sizeof err));
    assert_string_equal(err, "list_unsubscribe_mailto: must start with mailto: and follow a "
                             "list_unsubscribe");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_unsubscribe_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
