/*
 * smtp_ehlo - the server's capabilities, from its EHLO reply. See smtp_ehlo.h.
 */
#include "smtp_ehlo.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int smtp_ehlo_word(const char *s, size_t n, const char *word)
{
    size_t w = strlen(word);
    return n == w && strncasecmp(s, word, w) == 0;
}

static unsigned smtp_ehlo_mech(const char *s, size_t n)
{
    if (smtp_ehlo_word(s, n, "PLAIN")) {
        return SMTP_AUTH_PLAIN;
    }
    if (smtp_ehlo_word(s, n, "LOGIN")) {
        return SMTP_AUTH_LOGIN;
    }
    if (smtp_ehlo_word(s, n, "CRAM-MD5")) {
        return SMTP_AUTH_CRAM_MD5;
    }
    if (smtp_ehlo_word(s, n, "XOAUTH2")) {
        return SMTP_AUTH_XOAUTH2;
    }
    return 0;
}

/* Parameters after the keyword, separated by spaces (or '=' for the old AUTH= form). */
static void smtp_ehlo_auth(const char *s, size_t n, struct smtp_caps *caps)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '=')) {
            i++;
        }
        size_t start = i;
        while (i < n && s[i] != ' ' && s[i] != '=') {
            i++;
        }
        caps->auth |= smtp_ehlo_mech(s + start, i - start);
    }
}

static void smtp_ehlo_line(const char *s, size_t n, struct smtp_caps *caps)
{
    size_t k = 0;
    while (k < n && s[k] != ' ' && s[k] != '=') {
        k++;
    }
    const char *rest = s + k;
    size_t rn = n - k;
    static const struct {
        const char *word;
        unsigned flag;
    } simple[] = {
        {"PIPELINING", SMTP_CAP_PIPELINING},
        {"STARTTLS", SMTP_CAP_STARTTLS},
        {"8BITMIME", SMTP_CAP_8BITMIME},
        {"SMTPUTF8", SMTP_CAP_SMTPUTF8},
        {"ENHANCEDSTATUSCODES", SMTP_CAP_ENHANCEDSTATUSCODES},
        {"CHUNKING", SMTP_CAP_CHUNKING},
        {"DSN", SMTP_CAP_DSN},
    };
    for (size_t i = 0; i < sizeof simple / sizeof *simple; i++) {
        if (smtp_ehlo_word(s, k, simple[i].word)) {
            caps->flags |= simple[i].flag;
            return;
        }
    }
    if (smtp_ehlo_word(s, k, "AUTH")) {
        caps->flags |= SMTP_CAP_AUTH;
        smtp_ehlo_auth(rest, rn, caps);
    } else if (smtp_ehlo_word(s, k, "SIZE")) {
        caps->flags |= SMTP_CAP_SIZE;
        uint64_t v = 0;
        size_t i = 0;
        while (i < rn && rest[i] == ' ') {
            i++;
        }
        for (; i < rn && rest[i] >= '0' && rest[i] <= '9' && v < (UINT64_MAX / 10 - 10); i++) {
            v = v * 10 + (uint64_t)(rest[i] - '0');
        }
        caps->size_max = v;
    }
}

void smtp_ehlo_parse(const struct smtp_reply *reply, struct smtp_caps *caps)
{
    memset(caps, 0, sizeof *caps);
    for (int i = 1; i < reply->lines; i++) {
        size_t n;
        const char *s = smtp_reply_line(reply, i, &n);
        if (s) {
            smtp_ehlo_line(s, n, caps);
        }
    }
}

void smtp_caps_describe(const struct smtp_caps *caps, buf_t *out)
{
    static const char *const names[] = {
        "PIPELINING", "STARTTLS", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
        "SIZE",       "AUTH",     "CHUNKING", "DSN"};
    int first = 1;
    for (unsigned i = 0; i < sizeof names / sizeof *names; i++) {
        if (!(caps->flags & (1u << i))) {
            continue;
        }
        buf_append_str(out, first ? "" : " ");
        first = 0;
        buf_append_str(out, names[i]);
        if ((1u << i) == SMTP_CAP_SIZE && caps->size_max) {
            buf_appendf(out, "=%llu", (unsigned long long)caps->size_max);
        }
        if ((1u << i) == SMTP_CAP_AUTH) {
            buf_appendf(out, "=%s%s", caps->auth & SMTP_AUTH_PLAIN ? "PLAIN," : "",
                        caps->auth & SMTP_AUTH_LOGIN ? "LOGIN" : "");
        }
    }
}
