/*
 * bounce - one classifier for failure replies: category, hard or soft
 *
 * A reply ("550 5.1.1 The email account that you tried to reach does not
 * exist") is put in one of PowerMTA's and KumoMTA's categories and called
 * hard (permanent) or soft (temporary), with the rule that decided, so a
 * record can say why. The order, first match wins:
 *   1. the operator's rules ([bounce] rule = PATTERN => CATEGORY hard|soft);
 *   2. 500, 502, 503 and 504: the server's word on our command (syntax,
 *      sequence), whatever the text says: protocol-errors;
 *   3. shipped texts of Gmail, Microsoft (Outlook, Hotmail, Office 365),
 *      Yahoo and AOL, QQ (Tencent) and NetEase (163, 126);
 *   4. the enhanced status code (RFC 3463: X.1.1 bad-mailbox, X.2.2
 *      quota-issues, X.7.x policy-related ...);
 *   5. without an enhanced code only: common texts ("user unknown",
 *      "mailbox full"), then the reply code alone (552 quota, 550 other).
 * A PATTERN is what [isp] reply rules use (config.h): a case-insensitive
 * substring of "CODE ENHANCED TEXT" ("421 4.7.0 [TSS04] ..."), with the
 * enhanced code left out when the reply has none ("550 Mailbox not found")
 * and the lines of a multiline text joined by a space. Shipped rules whose
 * kind is not fixed follow the reply code: 5xx hard, 4xx soft; quota is
 * always soft (a full mailbox empties).
 *
 * Whether a bounce suppresses the address is bounce_suppresses(): a hard
 * bad-mailbox, bad-domain or inactive-mailbox alone does; a policy, spam,
 * routing or protocol bounce never does (they are about the sender, the
 * path or the session, not the mailbox); soft bounces are counted by the
 * caller against its own limit.
 */
#ifndef RINGMAIL_BOUNCE_H
#define RINGMAIL_BOUNCE_H

#include <stddef.h>

enum bounce_category {
    BOUNCE_BAD_MAILBOX,
    BOUNCE_BAD_DOMAIN,
    BOUNCE_INACTIVE_MAILBOX,
    BOUNCE_QUOTA_ISSUES,
    BOUNCE_POLICY_RELATED,
    BOUNCE_SPAM_RELATED,
    BOUNCE_CONTENT_RELATED,
    BOUNCE_ROUTING_ERRORS,
    BOUNCE_PROTOCOL_ERRORS,
    BOUNCE_MESSAGE_EXPIRED,
    BOUNCE_OTHER,
    BOUNCE_CATEGORIES /* the count */
};

enum bounce_kind { BOUNCE_SOFT, BOUNCE_HARD };

#define BOUNCE_RULES_MAX 64
#define BOUNCE_PATTERN_MAX 128

struct bounce_rule {
    char pattern[BOUNCE_PATTERN_MAX];
    enum bounce_category category;
    enum bounce_kind kind;
};

struct bounce_rules { /* the operator's, in file order */
    struct bounce_rule rule[BOUNCE_RULES_MAX];
    size_t n;
};

struct bounce_result {
    enum bounce_category category;
    enum bounce_kind kind;
    const char *source; /* "config", "gmail", "microsoft", "yahoo", "qq", "netease",
                         * "protocol", "rfc3463", "text" or "code" (static) */
    const char *rule;   /* the pattern or code that matched: static, or borrowed from rules */
};

/* bounce_category_name - "bad-mailbox" ... "other" */
const char *bounce_category_name(enum bounce_category c);
/* bounce_category_parse - a name into *out: 0, or -1 when it is none of them */
int bounce_category_parse(const char *name, enum bounce_category *out);
/* bounce_kind_name - "hard" or "soft" */
const char *bounce_kind_name(enum bounce_kind k);
/* bounce_classify - a failure reply (code 400..599; enhanced "5.1.1" or ""
 * or NULL; text may be NULL) into *out. rules may be NULL (defaults only).
 * A code below 400 is not a failure: other, soft, source "code". */
void bounce_classify(const struct bounce_rules *rules, int code, const char *enhanced,
                     const char *text, struct bounce_result *out);
/* bounce_soft_counts - a soft bounce that counts towards the address's
 * soft-bounce limit: one about the mailbox. Policy, spam, content, routing
 * and protocol bounces are about the sender, the message, the path or the
 * session, and never condemn a mailbox, alone or in numbers (a block of
 * the sending IP would otherwise suppress every address of the ISP after
 * a few campaigns). BOUNCE_SOFT_COUNTS_SQL says the same of a
 * feedback_event row's category, for the statements that count them. */
int bounce_soft_counts(const struct bounce_result *r);
#define BOUNCE_SOFT_COUNTS_SQL(col)                                                                \
    col " NOT IN ('policy-related', 'spam-related', 'content-related', 'routing-errors',"          \
        " 'protocol-errors')"
/* bounce_suppresses - whether this bounce alone suppresses the address */
int bounce_suppresses(const struct bounce_result *r);

#endif
