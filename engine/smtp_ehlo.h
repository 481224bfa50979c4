/*
 * smtp_ehlo - the server's capabilities, from its EHLO reply (RFC 5321 4.1.1.1)
 *
 * Keywords are matched case-insensitively; unknown keywords are ignored;
 * the old "AUTH=PLAIN LOGIN" form counts like "AUTH PLAIN LOGIN"; a SIZE
 * without a number (or 0) means no fixed limit. The first reply line is the
 * server's name and is not a keyword.
 */
#ifndef RINGMAIL_SMTP_EHLO_H
#define RINGMAIL_SMTP_EHLO_H

#include <stdint.h>

#include "buf.h"
#include "smtp_reply.h"

enum smtp_cap {
    SMTP_CAP_PIPELINING = 1u << 0,
    SMTP_CAP_STARTTLS = 1u << 1,
    SMTP_CAP_8BITMIME = 1u << 2,
    SMTP_CAP_SMTPUTF8 = 1u << 3,
    SMTP_CAP_ENHANCEDSTATUSCODES = 1u << 4,
    SMTP_CAP_SIZE = 1u << 5,
    SMTP_CAP_AUTH = 1u << 6,
    SMTP_CAP_CHUNKING = 1u << 7,
    SMTP_CAP_DSN = 1u << 8,
};

enum smtp_auth_mech {
    SMTP_AUTH_PLAIN = 1u << 0,
    SMTP_AUTH_LOGIN = 1u << 1,
    SMTP_AUTH_CRAM_MD5 = 1u << 2,
    SMTP_AUTH_XOAUTH2 = 1u << 3,
};

struct smtp_caps {
    unsigned flags;    /* enum smtp_cap bits */
    unsigned auth;     /* enum smtp_auth_mech bits */
    uint64_t size_max; /* SIZE limit in octets, 0 = none announced */
};

/* Fill caps (zeroed first) from a 250 EHLO reply. */
void smtp_ehlo_parse(const struct smtp_reply *reply, struct smtp_caps *caps);
/* Append a short human description ("PIPELINING STARTTLS SIZE=1000 AUTH=PLAIN,LOGIN"). */
void smtp_caps_describe(const struct smtp_caps *caps, buf_t *out);

#endif
