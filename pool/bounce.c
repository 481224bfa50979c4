/*
 * bounce - one classifier for failure replies. See bounce.h.
 *
 * The shipped rules are tables, in the order bounce.h gives; each row says
 * which provider's reply it was written from, so a record can name it.
 * The provider texts are the ones their postmaster pages and real bounces
 * show; they match any reply that carries them (a domain hosted by Google
 * answers with Gmail's words), which is what we want.
 */
#include "pool/bounce.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* A shipped rule's kind: fixed, or the reply code's (5xx hard, 4xx soft). */
enum bounce_default_kind { BOUNCE_BY_CODE, BOUNCE_ALWAYS_SOFT };

struct bounce_default {
    const char *source;
    const char *pattern;
    enum bounce_category category;
    enum bounce_default_kind kind;
};

static const char *const bounce_names[BOUNCE_CATEGORIES] = {
    "bad-mailbox",  "bad-domain",      "inactive-mailbox", "quota-issues",    "policy-related",
    "spam-related", "content-related", "routing-errors",   "protocol-errors", "message-expired",
    "other",
};

/* Provider texts. Substrings short enough to sit on one line of the
 * reply: Gmail repeats "550-5.1.1" at the start of every line. */
static const struct bounce_default bounce_providers[] = {
    /* Gmail (and Google Workspace) */
    {"gmail", "The email account that you tried to reach does not exist", BOUNCE_BAD_MAILBOX,
     BOUNCE_BY_CODE},
    {"gmail", "The email account that you tried to reach is disabled", BOUNCE_INACTIVE_MAILBOX,
     BOUNCE_BY_CODE},
    {"gmail", "The email account that you tried to reach is over quota", BOUNCE_QUOTA_ISSUES,
     BOUNCE_ALWAYS_SOFT},
    {"gmail", "inbox is out of storage space", BOUNCE_QUOTA_ISSUES, BOUNCE_ALWAYS_SOFT},
    {"gmail", "receiving mail at a rate that prevents additional messages", BOUNCE_QUOTA_ISSUES,
     BOUNCE_ALWAYS_SOFT},
    {"gmail", "unusual rate of unsolicited mail", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE},
    {"gmail", "likely unsolicited mail", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE},
    {"gmail", "very low reputation of the sending", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE},
    {"gmail", "content presents a potential security issue", BOUNCE_CONTENT_RELATED,
     BOUNCE_BY_CODE},
    {"gmail", "This mail is unauthenticated", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"gmail", "Unauthenticated email from", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"gmail", "does not have a PTR record", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    /* Microsoft: Outlook.com, Hotmail, Office 365 (Exchange Online) */
    {"microsoft", "Requested action not taken: mailbox unavailable", BOUNCE_BAD_MAILBOX,
     BOUNCE_BY_CODE},
    {"microsoft", "RESOLVER.ADR.Recip", BOUNCE_BAD_MAILBOX, BOUNCE_BY_CODE}, /* RecipNotFound */
    {"microsoft", "AS(201806281)", BOUNCE_BAD_MAILBOX,
     BOUNCE_BY_CODE}, /* directory-based edge block */
    /* S3150, S3140: the sending IP is on Microsoft's block list; the mailbox is fine. */
    {"microsoft", "(S3150)", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"microsoft", "(S3140)", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"microsoft", "part of their network is on our block list", BOUNCE_POLICY_RELATED,
     BOUNCE_BY_CODE},
    {"microsoft", "due to IP reputation", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE}, /* S775 */
    {"microsoft", "blocked using Spamhaus", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE},
    {"microsoft", "Server busy. Please try again later", BOUNCE_POLICY_RELATED,
     BOUNCE_BY_CODE}, /* S843, S77714 */
    {"microsoft", "traffic not accepted from this IP", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"microsoft", "does not pass DMARC verification", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"microsoft", "RP-00", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE}, /* Hotmail: hourly limits */
    {"microsoft", "SC-00", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"microsoft", "DY-00", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"microsoft", "OU-00", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE},
    /* Yahoo and AOL */
    {"yahoo", "doesn't have a yahoo.com account", BOUNCE_BAD_MAILBOX, BOUNCE_BY_CODE},
    {"yahoo", "doesn't have an aol.com account", BOUNCE_BAD_MAILBOX, BOUNCE_BY_CODE},
    {"yahoo", "Requested mail action aborted, mailbox not found", BOUNCE_BAD_MAILBOX,
     BOUNCE_BY_CODE},
    {"yahoo", "This mailbox is disabled", BOUNCE_INACTIVE_MAILBOX, BOUNCE_BY_CODE},
    {"yahoo", "Message not accepted for policy reasons", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"yahoo", "the sender is unauthenticated", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    /* [TS01]..[TSS11]: deferred for volume, complaints or reputation. */
    {"yahoo", "[TS", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE},
    {"yahoo", "temporarily deferred - 4.16", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    /* QQ (Tencent) */
    {"qq", "Mailbox not found", BOUNCE_BAD_MAILBOX, BOUNCE_BY_CODE},
    {"qq", "Bad address syntax", BOUNCE_BAD_MAILBOX, BOUNCE_BY_CODE},
    {"qq", "Mailbox is frozen", BOUNCE_INACTIVE_MAILBOX, BOUNCE_BY_CODE},
    /* The recipient got too much mail too fast: a 550 that passes. */
    {"qq", "Mailbox unavailable or access denied", BOUNCE_QUOTA_ISSUES, BOUNCE_ALWAYS_SOFT},
    /* Ip, Domain, Sender, Connection "frequency limited": a 550 that passes too. */
    {"qq", "frequency limited", BOUNCE_POLICY_RELATED, BOUNCE_ALWAYS_SOFT},
    {"qq", "Mail content denied", BOUNCE_CONTENT_RELATED, BOUNCE_BY_CODE},
    {"qq", "Suspected spam", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE},
    {"qq", "Mail is rejected by recipients", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"qq", "DMARC check failed", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    /* NetEase (163.com, 126.com, yeah.net) */
    {"netease", "User not found", BOUNCE_BAD_MAILBOX, BOUNCE_BY_CODE},
    {"netease", "User suspended", BOUNCE_INACTIVE_MAILBOX, BOUNCE_BY_CODE},
    {"netease", "DT:SPM", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE}, /* spam-like content */
    {"netease", "DT:RBL", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE}, /* the IP is on a block list */
    {"netease", "exceeded mailsize limit", BOUNCE_CONTENT_RELATED, BOUNCE_BY_CODE},
    /* HL: the IP's behaviour; MI:, RP: the session's counts and rates;
     * WM: not on an allow list. The sender's, never the mailbox's. */
    {"netease", " HL:", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"netease", " MI:", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"netease", " RP:", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"netease", " WM:", BOUNCE_POLICY_RELATED, BOUNCE_BY_CODE},
    {"netease", " DT:", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE},
};

/* Common texts, for replies without an enhanced code only: with one, the
 * code is the better witness. */
static const struct bounce_default bounce_texts[] = {
    {"text", "user unknown", BOUNCE_BAD_MAILBOX, BOUNCE_BY_CODE},
    {"text", "unknown user", BOUNCE_BAD_MAILBOX, BOUNCE_BY_CODE},
    {"text", "no such user", BOUNCE_BAD_MAILBOX, BOUNCE_BY_CODE},
    {"text", "no such mailbox", BOUNCE_BAD_MAILBOX, BOUNCE_BY_CODE},
    {"text", "recipient not found", BOUNCE_BAD_MAILBOX, BOUNCE_BY_CODE},
    {"text", "invalid recipient", BOUNCE_BAD_MAILBOX, BOUNCE_BY_CODE},
    {"text", "does not exist", BOUNCE_BAD_MAILBOX, BOUNCE_BY_CODE},
    {"text", "account disabled", BOUNCE_INACTIVE_MAILBOX, BOUNCE_BY_CODE},
    {"text", "account has been disabled", BOUNCE_INACTIVE_MAILBOX, BOUNCE_BY_CODE},
    {"text", "mailbox disabled", BOUNCE_INACTIVE_MAILBOX, BOUNCE_BY_CODE},
    {"text", "mailbox full", BOUNCE_QUOTA_ISSUES, BOUNCE_ALWAYS_SOFT},
    {"text", "mailbox is full", BOUNCE_QUOTA_ISSUES, BOUNCE_ALWAYS_SOFT},
    {"text", "over quota", BOUNCE_QUOTA_ISSUES, BOUNCE_ALWAYS_SOFT},
    {"text", "quota exceeded", BOUNCE_QUOTA_ISSUES, BOUNCE_ALWAYS_SOFT},
    {"text", "spam", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE},
    {"text", "blacklist", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE},
    {"text", "blocklist", BOUNCE_SPAM_RELATED, BOUNCE_BY_CODE},
};

const char *bounce_category_name(enum bounce_category c)
{
    return (unsigned)c < BOUNCE_CATEGORIES ? bounce_names[c] : "other";
}

int bounce_category_parse(const char *name, enum bounce_category *out)
{
    for (int i = 0; i < BOUNCE_CATEGORIES; i++) {
        if (strcmp(name, bounce_names[i]) == 0) {
            *out = (enum bounce_category)i;
            return 0;
        }
    }
    return -1;
}

const char *bounce_kind_name(enum bounce_kind k)
{
    return k == BOUNCE_HARD ? "hard" : "soft";
}

/* bounce_set - fill *out */
static void bounce_set(struct bounce_result *out, enum bounce_category c, enum bounce_kind k,
                       const char *source, const char *rule)
{
    *out = (struct bounce_result){.category = c, .kind = k, .source = source, .rule = rule};
}

/* bounce_code_kind - 5xx permanent, 4xx temporary; the enhanced class
 * when the code says neither (a DSN's Status without a code). */
static enum bounce_kind bounce_code_kind(int code, int klass)
{
    if (code >= 400 && code <= 599) {
        return code >= 500 ? BOUNCE_HARD : BOUNCE_SOFT;
    }
    return klass == 5 ? BOUNCE_HARD : BOUNCE_SOFT;
}

/* bounce_table - the first row of t whose pattern is in reply, into *out: 1, else 0 */
static int bounce_table(const struct bounce_default *t, size_t n, const char *reply, int code,
                        int klass, struct bounce_result *out)
{
    for (size_t i = 0; i < n; i++) {
        if (strcasestr(reply, t[i].pattern)) {
            enum bounce_kind k =
                t[i].kind == BOUNCE_ALWAYS_SOFT ? BOUNCE_SOFT : bounce_code_kind(code, klass);
            bounce_set(out, t[i].category, k, t[i].source, t[i].pattern);
            return 1;
        }
    }
    return 0;
}

/* bounce_enhanced_parse - "C.S.D" (class 2, 4 or 5; up to 3 digits each) */
static int bounce_enhanced_parse(const char *e, int *klass, int *subject, int *detail)
{
    char tail;
    if (!e || sscanf(e, "%1d.%3d.%3d%c", klass, subject, detail, &tail) != 3) {
        return -1;
    }
    return *klass == 2 || *klass == 4 || *klass == 5 ? 0 : -1;
}

/* bounce_rfc3463 - the category the enhanced code's subject and detail
 * name (RFC 3463 section 3, IANA's registry); the rule text says which. */
static enum bounce_category bounce_rfc3463(int subject, int detail, const char **rule)
{
    static const struct {
        int subject, detail; /* detail -1: any */
        enum bounce_category c;
        const char *rule;
    } map[] = {
        {1, 1, BOUNCE_BAD_MAILBOX, "X.1.1 bad destination mailbox"},
        {1, 2, BOUNCE_BAD_DOMAIN, "X.1.2 bad destination system"},
        {1, 3, BOUNCE_BAD_MAILBOX, "X.1.3 bad destination mailbox syntax"},
        {1, 4, BOUNCE_BAD_MAILBOX, "X.1.4 destination mailbox ambiguous"},
        {1, 6, BOUNCE_INACTIVE_MAILBOX, "X.1.6 destination mailbox has moved"},
        {1, 7, BOUNCE_POLICY_RELATED, "X.1.7 bad sender's mailbox syntax"},
        {1, 8, BOUNCE_POLICY_RELATED, "X.1.8 bad sender's system address"},
        {1, 10, BOUNCE_BAD_DOMAIN, "X.1.10 recipient address has null MX"},
        {1, 0, BOUNCE_BAD_MAILBOX, "X.1.0 other address status"},
        {1, -1, BOUNCE_OTHER, "X.1.x address status"},
        {2, 1, BOUNCE_INACTIVE_MAILBOX, "X.2.1 mailbox disabled"},
        {2, 2, BOUNCE_QUOTA_ISSUES, "X.2.2 mailbox full"},
        {2, 3, BOUNCE_CONTENT_RELATED, "X.2.3 message length exceeds limit"},
        {2, 4, BOUNCE_BAD_MAILBOX, "X.2.4 mailing list expansion problem"},
        {2, -1, BOUNCE_OTHER, "X.2.x mailbox status"},
        {3, 1, BOUNCE_QUOTA_ISSUES, "X.3.1 mail system full"},
        {3, 4, BOUNCE_CONTENT_RELATED, "X.3.4 message too big for system"},
        {3, -1, BOUNCE_OTHER, "X.3.x mail system status"},
        {4, 7, BOUNCE_MESSAGE_EXPIRED, "X.4.7 delivery time expired"},
        {4, -1, BOUNCE_ROUTING_ERRORS, "X.4.x network and routing status"},
        {5, -1, BOUNCE_PROTOCOL_ERRORS, "X.5.x mail delivery protocol status"},
        {6, -1, BOUNCE_CONTENT_RELATED, "X.6.x message content or media status"},
        {7, 13, BOUNCE_INACTIVE_MAILBOX, "X.7.13 user account disabled"},
        {7, 17, BOUNCE_INACTIVE_MAILBOX, "X.7.17 mailbox owner has changed"},
        {7, 18, BOUNCE_BAD_DOMAIN, "X.7.18 domain owner has changed"},
        {7, -1, BOUNCE_POLICY_RELATED, "X.7.x security or policy status"},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
        if (map[i].subject == subject && (map[i].detail == detail || map[i].detail < 0)) {
            *rule = map[i].rule;
            return map[i].c;
        }
    }
    *rule = "X.0.x other or undefined status";
    return BOUNCE_OTHER;
}

/* bounce_by_code - the reply code alone (RFC 5321 4.2.3, RFC 7504's 521/556) */
static enum bounce_category bounce_by_code(int code, const char **rule)
{
    static const struct {
        int code;
        enum bounce_category c;
        const char *rule;
    } map[] = {
        {452, BOUNCE_QUOTA_ISSUES, "452 insufficient system storage"},
        {501, BOUNCE_PROTOCOL_ERRORS, "501 syntax error in parameters"},
        {521, BOUNCE_BAD_DOMAIN, "521 does not accept mail"},
        {556, BOUNCE_BAD_DOMAIN, "556 domain does not accept mail"},
        {530, BOUNCE_POLICY_RELATED, "530 authentication required"},
        {535, BOUNCE_POLICY_RELATED, "535 authentication failed"},
        {551, BOUNCE_ROUTING_ERRORS, "551 user not local"},
        {552, BOUNCE_QUOTA_ISSUES, "552 exceeded storage allocation"},
        {553, BOUNCE_BAD_MAILBOX, "553 mailbox name not allowed"},
        {555, BOUNCE_PROTOCOL_ERRORS, "555 parameters not recognized"},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
        if (map[i].code == code) {
            *rule = map[i].rule;
            return map[i].c;
        }
    }
    *rule = code >= 500 ? "5xx permanent failure" : "4xx temporary failure";
    return BOUNCE_OTHER;
}

/* bounce_reply_line - "CODE ENHANCED TEXT" (no ENHANCED when there is
 * none), lines joined by a space, bounded: what patterns are matched on */
static void bounce_reply_line(char *dst, size_t cap, int code, const char *enhanced,
                              const char *text)
{
    snprintf(dst, cap, "%d %s%s%s", code, enhanced ? enhanced : "",
             enhanced && *enhanced ? " " : "", text ? text : "");
    for (size_t i = 0; dst[i]; i++) {
        if (dst[i] == '\n' || dst[i] == '\r') {
            dst[i] = ' ';
        }
    }
}

void bounce_classify(const struct bounce_rules *rules, int code, const char *enhanced,
                     const char *text, struct bounce_result *out)
{
    char reply[2048];
    bounce_reply_line(reply, sizeof reply, code, enhanced, text);
    int klass = 0, subject = 0, detail = 0;
    int has_enhanced = bounce_enhanced_parse(enhanced, &klass, &subject, &detail) == 0;
    for (size_t i = 0; rules && i < rules->n; i++) {
        if (strcasestr(reply, rules->rule[i].pattern)) {
            bounce_set(out, rules->rule[i].category, rules->rule[i].kind, "config",
                       rules->rule[i].pattern);
            return;
        }
    }
    if (code < 400 && !(has_enhanced && klass >= 4)) {
        bounce_set(out, BOUNCE_OTHER, BOUNCE_SOFT, "code", "not a failure");
        return;
    }
    enum bounce_kind kind = bounce_code_kind(code, klass);
    /* A bad command or sequence is the session's fault: whatever the text
     * mentions, it says nothing about the mailbox. */
    if (code == 500 || code == 502 || code == 503 || code == 504) {
        bounce_set(out, BOUNCE_PROTOCOL_ERRORS, kind, "protocol",
                   code == 503 ? "503 bad sequence of commands" : "50x command not accepted");
        return;
    }
    if (bounce_table(bounce_providers, sizeof bounce_providers / sizeof *bounce_providers, reply,
                     code, klass, out)) {
        return;
    }
    const char *rule;
    if (has_enhanced && klass != 2) {
        enum bounce_category c = bounce_rfc3463(subject, detail, &rule);
        bounce_set(out, c, c == BOUNCE_QUOTA_ISSUES ? BOUNCE_SOFT : kind, "rfc3463", rule);
        return;
    }
    if (bounce_table(bounce_texts, sizeof bounce_texts / sizeof *bounce_texts, reply, code, klass,
                     out)) {
        return;
    }
    enum bounce_category c = bounce_by_code(code, &rule);
    bounce_set(out, c, c == BOUNCE_QUOTA_ISSUES ? BOUNCE_SOFT : kind, "code", rule);
}

int bounce_soft_counts(const struct bounce_result *r)
{
    enum bounce_category c = r->category;
    return r->kind == BOUNCE_SOFT && c != BOUNCE_POLICY_RELATED && c != BOUNCE_SPAM_RELATED &&
           c != BOUNCE_CONTENT_RELATED && c != BOUNCE_ROUTING_ERRORS && c != BOUNCE_PROTOCOL_ERRORS;
}

int bounce_suppresses(const struct bounce_result *r)
{
    if (r->kind != BOUNCE_HARD) {
        return 0;
    }
    return r->category == BOUNCE_BAD_MAILBOX || r->category == BOUNCE_BAD_DOMAIN ||
           r->category == BOUNCE_INACTIVE_MAILBOX;
}
