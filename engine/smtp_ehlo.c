/*
 * smtp_ehlo - the server's capabilities, from its EHLO reply (RFC 5321 4.1.1.1)
 *
 * SYNOPSIS
 *     #include "engine/smtp_ehlo.h"
 *
 *     smtp_ehlo_parse(&reply, &caps);
 *     smtp_caps_describe(&caps, &out);
 *
 * DESCRIPTION
 *     The reply text is walked once, line by line; the first line is the
 *     server's name and greeting and is skipped. Each further line is
 *     "KEYWORD [params]" (or the pre-RFC 2554 "AUTH=MECH ..."). Keywords
 *     and AUTH mechanisms match case-insensitively; anything unknown is
 *     ignored, since servers advertise private extensions freely.
 *
 *     SIZE takes a decimal number (RFC 1870; "SIZE=n" is read as well).
 *     A SIZE without one, with 0, with trailing junk or too big for 64
 *     bits sets SMTP_CAP_SIZE with size_max 0 (no fixed limit known):
 *     refusing mail locally on a limit we misread would be worse than
 *     letting the server answer 552.
 *
 *     The reply text is bounded by the parser (SMTP_REPLY_TEXT_MAX), so
 *     the last line it holds may have been cut; such a line is ignored
 *     rather than read as, say, "SIZE 10" from "SIZE 10485760".
 *
 * EXPORTS
 *     smtp_ehlo_parse, smtp_caps_describe.
 *
 * DIAGNOSTICS
 *     None: capabilities the parser cannot read are simply not set. A
 *     reply whose code is not 250 yields no capabilities.
 */
#include "smtp_ehlo.h"

#include <string.h>
#include <strings.h>

struct smtp_ehlo_name {
    const char *name;
    unsigned bit;
};

/* In the order smtp_caps_describe prints them. */
static const struct smtp_ehlo_name smtp_ehlo_caps[] = {
    {"PIPELINING", SMTP_CAP_PIPELINING},
    {"STARTTLS", SMTP_CAP_STARTTLS},
    {"8BITMIME", SMTP_CAP_8BITMIME},
    {"SMTPUTF8", SMTP_CAP_SMTPUTF8},
    {"ENHANCEDSTATUSCODES", SMTP_CAP_ENHANCEDSTATUSCODES},
    {"SIZE", SMTP_CAP_SIZE},
    {"AUTH", SMTP_CAP_AUTH},
    {"CHUNKING", SMTP_CAP_CHUNKING},
    {"DSN", SMTP_CAP_DSN},
};

static const struct smtp_ehlo_name smtp_ehlo_mechs[] = {
    {"PLAIN", SMTP_AUTH_PLAIN},
    {"LOGIN", SMTP_AUTH_LOGIN},
    {"CRAM-MD5", SMTP_AUTH_CRAM_MD5},
    {"XOAUTH2", SMTP_AUTH_XOAUTH2},
};

#define SMTP_EHLO_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The bit of the table entry whose name is s[0..n), case-insensitively, or 0. */
static unsigned smtp_ehlo_lookup(const struct smtp_ehlo_name *t, size_t count, const char *s,
                                 size_t n)
{
    for (size_t i = 0; i < count; i++) {
        if (strlen(t[i].name) == n && strncasecmp(s, t[i].name, n) == 0) {
            return t[i].bit;
        }
    }
    return 0;
}

static int smtp_ehlo_is_sep(char c)
{
    return c == ' ' || c == '\t' || c == '=';
}

/* Mechanisms after AUTH, separated by spaces (the old form starts with '='). */
static unsigned smtp_ehlo_auth(const char *s, size_t n)
{
    unsigned mechs = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && smtp_ehlo_is_sep(s[i])) {
            i++;
        }
        size_t start = i;
        while (i < n && !smtp_ehlo_is_sep(s[i])) {
            i++;
        }
        mechs |= smtp_ehlo_lookup(smtp_ehlo_mechs, SMTP_EHLO_COUNT(smtp_ehlo_mechs), s + start,
                                  i - start);
    }
    return mechs;
}

/* RFC 1870 "SIZE [number]" (or "SIZE=number"); 0 when absent or unreadable: no fixed limit. */
static uint64_t smtp_ehlo_size(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && smtp_ehlo_is_sep(s[i])) {
        i++;
    }
    uint64_t v = 0;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return 0;
        }
        v = v * 10 + d;
    }
    while (i < n && (s[i] == ' ' || s[i] == '\t')) {
        i++;
    }
    return i == n ? v : 0;
}

static void smtp_ehlo_line(const char *s, size_t n, struct smtp_caps *caps)
{
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++, n--;
    }
    size_t k = 0;
    while (k < n && !smtp_ehlo_is_sep(s[k])) {
        k++;
    }
    unsigned bit = smtp_ehlo_lookup(smtp_ehlo_caps, SMTP_EHLO_COUNT(smtp_ehlo_caps), s, k);
    caps->flags |= bit;
    if (bit == SMTP_CAP_AUTH) {
        caps->auth |= smtp_ehlo_auth(s + k, n - k);
    } else if (bit == SMTP_CAP_SIZE) {
        caps->size_max = smtp_ehlo_size(s + k, n - k);
    }
}

void smtp_ehlo_parse(const struct smtp_reply *reply, struct smtp_caps *caps)
{
    memset(caps, 0, sizeof *caps);
    if (reply->code != 250) {
        return;
    }
    const char *s = buf_data(&reply->text), *end = s + buf_len(&reply->text);
    /* A text at the bound may end in a cut line; a complete one ends before it. */
    int cut = buf_len(&reply->text) >= SMTP_REPLY_TEXT_MAX;
    const char *nl = memchr(s, '\n', (size_t)(end - s)); /* past the server's name */
    while (nl) {
        s = nl + 1;
        nl = memchr(s, '\n', (size_t)(end - s));
        if (nl || !cut) {
            smtp_ehlo_line(s, (size_t)((nl ? nl : end) - s), caps);
        }
    }
}

/* Append names[] whose bits are in set, joined by sep. */
static void smtp_caps_names(buf_t *out, const struct smtp_ehlo_name *t, size_t count, unsigned set,
                            const char *sep)
{
    const char *gap = "";
    for (size_t i = 0; i < count; i++) {
        if (set & t[i].bit) {
            buf_append_str(out, gap);
            buf_append_str(out, t[i].name);
            gap = sep;
        }
    }
}

void smtp_caps_describe(const struct smtp_caps *caps, buf_t *out)
{
    const char *gap = "";
    for (size_t i = 0; i < SMTP_EHLO_COUNT(smtp_ehlo_caps); i++) {
        unsigned bit = smtp_ehlo_caps[i].bit;
        if (!(caps->flags & bit)) {
            continue;
        }
        buf_append_str(out, gap);
        buf_append_str(out, smtp_ehlo_caps[i].name);
        gap = " ";
        if (bit == SMTP_CAP_SIZE && caps->size_max) {
            buf_appendf(out, "=%llu", (unsigned long long)caps->size_max);
        } else if (bit == SMTP_CAP_AUTH && caps->auth) {
            buf_append_str(out, "=");
            smtp_caps_names(out, smtp_ehlo_mechs, SMTP_EHLO_COUNT(smtp_ehlo_mechs), caps->auth,
                            ",");
        }
    }
}
