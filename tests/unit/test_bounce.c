/*
 * test_bounce - the bounce classifier: the issue's required cases, the
 * shipped provider texts, RFC 3463 codes, bare reply codes, the
 * operator's rules first, and which bounces suppress.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pool/bounce.h"

struct bounce_case {
    int code;
    const char *enhanced;
    const char *text;
    enum bounce_category category;
    enum bounce_kind kind;
    const char *source;
};

static void check_case(const struct bounce_rules *rules, const struct bounce_case *k)
{
    struct bounce_result r;
    bounce_classify(rules, k->code, k->enhanced, k->text, &r);
    if (r.category != k->category || r.kind != k->kind || strcmp(r.source, k->source) != 0) {
        fail_msg("%d %s %s: got %s %s (%s: %s), want %s %s (%s)", k->code, k->enhanced, k->text,
                 bounce_category_name(r.category), bounce_kind_name(r.kind), r.source, r.rule,
                 bounce_category_name(k->category), bounce_kind_name(k->kind), k->source);
    }
}

static void test_gmail_over_quota_is_soft(void **state)
{
    (void)state;
    struct bounce_result r;
    bounce_classify(
        NULL, 452, "4.2.2",
        "The email account that you tried to reach is over quota. Please direct\n"
        "4.2.2 the recipient to\n4.2.2  https://support.google.com/mail/?p=OverQuotaTemp",
        &r);
    assert_int_equal(r.category, BOUNCE_QUOTA_ISSUES);
    assert_int_equal(r.kind, BOUNCE_SOFT);
    assert_string_equal(r.source, "gmail");
    assert_false(bounce_suppresses(&r));
    /* Gmail's 552 5.2.2 says the same of a full mailbox: still soft. */
    bounce_classify(NULL, 552, "5.2.2", "The recipient's inbox is out of storage space.", &r);
    assert_int_equal(r.category, BOUNCE_QUOTA_ISSUES);
    assert_int_equal(r.kind, BOUNCE_SOFT);
}

static void test_microsoft_s3150_is_policy(void **state)
{
    (void)state;
    struct bounce_result r;
    bounce_classify(NULL, 550, "5.7.1",
                    "Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your "
                    "Internet service provider since part of their network is on our block list "
                    "(S3150). You can also refer your provider to "
                    "http://mail.live.com/mail/troubleshooting.aspx#errors.",
                    &r);
    assert_int_equal(r.category, BOUNCE_POLICY_RELATED);
    assert_int_equal(r.kind, BOUNCE_HARD);
    assert_string_equal(r.source, "microsoft");
    assert_string_equal(r.rule, "(S3150)");
    assert_false(bounce_suppresses(&r)); /* the sending IP, not the mailbox */
}

static void test_503_is_protocol_and_never_suppresses(void **state)
{
    (void)state;
    const char *enhanced[] = {"5.5.1", "", NULL, "5.1.1"};
    const char *text[] = {"Error: need RCPT command", "Bad sequence of commands", NULL,
                          "User unknown"};
    for (size_t i = 0; i < 4; i++) {
        struct bounce_result r;
        bounce_classify(NULL, 503, enhanced[i], text[i], &r);
        assert_int_equal(r.category, BOUNCE_PROTOCOL_ERRORS);
        assert_string_equal(r.source, "protocol");
        assert_false(bounce_suppresses(&r));
    }
}

static void test_user_unknown_is_hard_bad_mailbox(void **state)
{
    (void)state;
    struct bounce_result r;
    bounce_classify(NULL, 550, "5.1.1",
                    "<nobody@example.test>: Recipient address rejected: User unknown in virtual "
                    "mailbox table",
                    &r);
    assert_int_equal(r.category, BOUNCE_BAD_MAILBOX);
    assert_int_equal(r.kind, BOUNCE_HARD);
    assert_string_equal(r.source, "rfc3463");
    assert_string_equal(r.rule, "X.1.1 bad destination mailbox");
    assert_true(bounce_suppresses(&r));
    /* Gmail's multiline reply, as the parser joins it. */
    bounce_classify(NULL, 550, "5.1.1",
                    "The email account that you tried to reach does not exist. Please try\n"
                    "5.1.1 double-checking the recipient's email address for typos or\n"
                    "5.1.1 unnecessary spaces.",
                    &r);
    assert_int_equal(r.category, BOUNCE_BAD_MAILBOX);
    assert_int_equal(r.kind, BOUNCE_HARD);
    assert_string_equal(r.source, "gmail");
    assert_true(bounce_suppresses(&r));
}

static void test_provider_texts(void **state)
{
    (void)state;
    static const struct bounce_case cases[] = {
        {550, "5.2.1", "The email account that you tried to reach is disabled.",
         BOUNCE_INACTIVE_MAILBOX, BOUNCE_HARD, "gmail"},
        {421, "4.7.28",
         "Our system has detected an unusual rate of unsolicited mail originating from your IP",
         BOUNCE_SPAM_RELATED, BOUNCE_SOFT, "gmail"},
        {550, "5.7.26",
         "This mail is unauthenticated, which poses a security risk to the sender and Gmail users",
         BOUNCE_POLICY_RELATED, BOUNCE_HARD, "gmail"},
        {550, "5.7.1", "Our system has detected that this message is likely unsolicited mail.",
         BOUNCE_SPAM_RELATED, BOUNCE_HARD, "gmail"},
        {552, "5.7.0",
         "This message was blocked because its content presents a potential security "
         "issue.",
         BOUNCE_CONTENT_RELATED, BOUNCE_HARD, "gmail"},
        {550, "5.5.0", "Requested action not taken: mailbox unavailable (S2017062302).",
         BOUNCE_BAD_MAILBOX, BOUNCE_HARD, "microsoft"},
        {550, "5.1.10",
         "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
         BOUNCE_BAD_MAILBOX, BOUNCE_HARD, "microsoft"},
        {550, "5.4.1", "Recipient address rejected: Access denied. AS(201806281)",
         BOUNCE_BAD_MAILBOX, BOUNCE_HARD, "microsoft"},
        {550, "5.7.1",
         "Service unavailable, Client host [192.0.2.1] blocked using Spamhaus. To request removal",
         BOUNCE_SPAM_RELATED, BOUNCE_HARD, "microsoft"},
        {451, "4.7.650",
         "The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.",
         BOUNCE_SPAM_RELATED, BOUNCE_SOFT, "microsoft"},
        {451, "4.7.500", "Server busy. Please try again later from [192.0.2.1]. (S77714)",
         BOUNCE_POLICY_RELATED, BOUNCE_SOFT, "microsoft"},
        {554, "5.7.9",
         "Message not accepted for policy reasons.  See "
         "https://senders.yahooinc.com/error-codes",
         BOUNCE_POLICY_RELATED, BOUNCE_HARD, "yahoo"},
        {421, "4.7.0",
         "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user "
         "complaints - 4.16.55.1",
         BOUNCE_SPAM_RELATED, BOUNCE_SOFT, "yahoo"},
        {554, "",
         "delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0] - "
         "mta1010.mail.ne1.yahoo.com",
         BOUNCE_BAD_MAILBOX, BOUNCE_HARD, "yahoo"},
        {552, "", "1 Requested mail action aborted, mailbox not found", BOUNCE_BAD_MAILBOX,
         BOUNCE_HARD, "yahoo"},
        {550, "",
         "Mailbox not found. http://service.mail.qq.com/cgi-bin/"
         "help?subtype=1&&id=20022&&no=1000728",
         BOUNCE_BAD_MAILBOX, BOUNCE_HARD, "qq"},
        {550, "", "Mailbox unavailable or access denied", BOUNCE_QUOTA_ISSUES, BOUNCE_SOFT, "qq"},
        {550, "", "Ip frequency limited. http://service.mail.qq.com/cgi-bin/help",
         BOUNCE_POLICY_RELATED, BOUNCE_SOFT, "qq"},
        {550, "", "Mail content denied. http://service.mail.qq.com/cgi-bin/help",
         BOUNCE_CONTENT_RELATED, BOUNCE_HARD, "qq"},
        {550, "", "User not found: nobody@163.com", BOUNCE_BAD_MAILBOX, BOUNCE_HARD, "netease"},
        {554, "",
         "DT:SPM 163 smtp10,DsCowAB3 1640000000, please see "
         "http://mail.163.com/help/help_spam_16.htm?ip=192.0.2.1",
         BOUNCE_SPAM_RELATED, BOUNCE_HARD, "netease"},
        {451, "", "MI:SFQ 163 smtp14,EsCowAC 1640000000, please try again later",
         BOUNCE_POLICY_RELATED, BOUNCE_SOFT, "netease"},
        {451, "", "MI:DMC 163 smtp10, too many mails per connection", BOUNCE_POLICY_RELATED,
         BOUNCE_SOFT, "netease"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        check_case(NULL, &cases[i]);
    }
}

static void test_enhanced_codes_and_bare_codes(void **state)
{
    (void)state;
    static const struct bounce_case cases[] = {
        {550, "5.1.2", "Host unknown", BOUNCE_BAD_DOMAIN, BOUNCE_HARD, "rfc3463"},
        {550, "5.1.10", "Recipient address has null MX", BOUNCE_BAD_DOMAIN, BOUNCE_HARD, "rfc3463"},
        {450, "4.1.1", "Recipient address rejected: unverified address", BOUNCE_BAD_MAILBOX,
         BOUNCE_SOFT, "rfc3463"},
        {552, "5.2.2", "Quota exceeded", BOUNCE_QUOTA_ISSUES, BOUNCE_SOFT, "rfc3463"},
        {554, "5.4.7", "Delivery time expired", BOUNCE_MESSAGE_EXPIRED, BOUNCE_HARD, "rfc3463"},
        {451, "4.4.3", "Directory server failure", BOUNCE_ROUTING_ERRORS, BOUNCE_SOFT, "rfc3463"},
        {451, "4.7.1", "Temporary failure (sink tempfail)", BOUNCE_POLICY_RELATED, BOUNCE_SOFT,
         "rfc3463"},
        {554, "5.6.0", "Invalid MIME", BOUNCE_CONTENT_RELATED, BOUNCE_HARD, "rfc3463"},
        {501, "5.5.4", "Invalid parameter", BOUNCE_PROTOCOL_ERRORS, BOUNCE_HARD, "rfc3463"},
        {550, "5.7.18", "Domain owner has changed", BOUNCE_BAD_DOMAIN, BOUNCE_HARD, "rfc3463"},
        /* With an enhanced code the code decides, not a loose word. */
        {550, "5.7.1", "Message rejected as spam-like; user unknown", BOUNCE_POLICY_RELATED,
         BOUNCE_HARD, "rfc3463"},
        /* Without one: common texts, then the code. */
        {550, "", "No such user here", BOUNCE_BAD_MAILBOX, BOUNCE_HARD, "text"},
        {552, "", "Requested mail action aborted: exceeded storage allocation", BOUNCE_QUOTA_ISSUES,
         BOUNCE_SOFT, "code"},
        {550, "", "Go away", BOUNCE_OTHER, BOUNCE_HARD, "code"},
        {421, "", "Service not available, closing channel", BOUNCE_OTHER, BOUNCE_SOFT, "code"},
        {556, NULL, NULL, BOUNCE_BAD_DOMAIN, BOUNCE_HARD, "code"},
        {250, "2.0.0", "OK", BOUNCE_OTHER, BOUNCE_SOFT, "code"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        check_case(NULL, &cases[i]);
    }
}

static void test_configured_rules_first(void **state)
{
    (void)state;
    struct bounce_rules rules = {.n = 2};
    snprintf(rules.rule[0].pattern, BOUNCE_PATTERN_MAX, "tss04");
    rules.rule[0].category = BOUNCE_POLICY_RELATED;
    rules.rule[0].kind = BOUNCE_SOFT;
    snprintf(rules.rule[1].pattern, BOUNCE_PATTERN_MAX, "550 5.1.1");
    rules.rule[1].category = BOUNCE_OTHER;
    rules.rule[1].kind = BOUNCE_SOFT;
    struct bounce_case cases[] = {
        {421, "4.7.0", "[TSS04] Messages temporarily deferred", BOUNCE_POLICY_RELATED, BOUNCE_SOFT,
         "config"},
        {550, "5.1.1", "The email account that you tried to reach does not exist", BOUNCE_OTHER,
         BOUNCE_SOFT, "config"},
        /* No configured rule matches: the shipped ones decide. */
        {553, "5.1.1", "User unknown", BOUNCE_BAD_MAILBOX, BOUNCE_HARD, "rfc3463"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        check_case(&rules, &cases[i]);
    }
    struct bounce_result r;
    bounce_classify(&rules, 421, "4.7.0", "[TSS04] x", &r);
    assert_string_equal(r.rule, "tss04");
    /* Patterns see no ENHANCED gap when a reply has none. */
    snprintf(rules.rule[0].pattern, BOUNCE_PATTERN_MAX, "550 mailbox not found");
    rules.rule[0].category = BOUNCE_INACTIVE_MAILBOX;
    rules.rule[0].kind = BOUNCE_HARD;
    bounce_classify(&rules, 550, "", "Mailbox not found.", &r);
    assert_string_equal(r.source, "config");
    assert_int_equal(r.category, BOUNCE_INACTIVE_MAILBOX);
}

static void test_names_and_suppression(void **state)
{
    (void)state;
    const char *names[] = {"bad-mailbox",     "bad-domain",     "inactive-mailbox",
                           "quota-issues",    "policy-related", "spam-related",
                           "content-related", "routing-errors", "protocol-errors",
                           "message-expired", "other"};
    assert_int_equal(sizeof names / sizeof *names, BOUNCE_CATEGORIES);
    for (int i = 0; i < BOUNCE_CATEGORIES; i++) {
        enum bounce_category c;
        assert_string_equal(bounce_category_name((enum bounce_category)i), names[i]);
        assert_int_equal(bounce_category_parse(names[i], &c), 0);
        assert_int_equal(c, i);
        struct bounce_result hard = {.category = c, .kind = BOUNCE_HARD};
        struct bounce_result soft = {.category = c, .kind = BOUNCE_SOFT};
        assert_int_equal(bounce_suppresses(&hard), i <= BOUNCE_INACTIVE_MAILBOX);
        assert_false(bounce_suppresses(&soft));
    }
    enum bounce_category c;
    assert_int_equal(bounce_category_parse("Bad-Mailbox", &c), -1);
    assert_int_equal(bounce_category_parse("spam", &c), -1);
    assert_string_equal(bounce_kind_name(BOUNCE_HARD), "hard");
    assert_string_equal(bounce_kind_name(BOUNCE_SOFT), "soft");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gmail_over_quota_is_soft),
        cmocka_unit_test(test_microsoft_s3150_is_policy),
        cmocka_unit_test(test_503_is_protocol_and_never_suppresses),
        cmocka_unit_test(test_user_unknown_is_hard_bad_mailbox),
        cmocka_unit_test(test_provider_texts),
        cmocka_unit_test(test_enhanced_codes_and_bare_codes),
        cmocka_unit_test(test_configured_rules_first),
        cmocka_unit_test(test_names_and_suppression),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
