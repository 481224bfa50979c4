/*
 * feedback - the tokens that let a bounce or an unsubscribe name its
 * recipient (VERP)
 *
 * SYNOPSIS
 *     #include "campaign/feedback.h"
 *
 *     struct feedback_id t = {FEEDBACK_ID_BOUNCE, campaign, recipient};
 *     char local[FEEDBACK_LOCAL_MAX];
 *     feedback_token_make(key, keylen, &t, local);        "b-TOKEN"
 *     feedback_address_make(key, keylen, &t, domain, &out); "b-TOKEN@DOMAIN"
 *     feedback_token_parse(key, keylen, "B-TOKEN@Domain", &t, why, sizeof why);
 *
 * DESCRIPTION
 *     A token says which recipient of which campaign a message went to,
 *     and proves that this ringmail wrote it. It is the local part
 *     "K-TOKEN", K the kind: 'b' for the return path (MAIL FROM
 *     b-TOKEN@RETURN_PATH), 'u' for an unsubscribe (mailto:u-TOKEN@...,
 *     https://HOST/u/TOKEN). TOKEN is, in lower-case base32 (RFC 4648's
 *     alphabet, no padding), the campaign id and the recipient id as
 *     unsigned LEB128 varints, then the first 96 bits of HMAC-SHA256 over
 *     the kind letter and the two varints under the secret of [feedback]
 *     secret_file. A campaign's recipient is its row id; in list mode the
 *     campaign is 0 and the recipient the line number in --recipients.
 *     Small ids make short tokens: "b-" and 23 characters for ids below
 *     128, 54 characters at most (a local part may have 64).
 *
 *     Parsing takes a local part or a whole address (the domain is not
 *     looked at: the caller checks it), in either case (some MTAs change
 *     the case of local parts), and compares the MAC in constant time.
 *
 * DIAGNOSTICS
 *     feedback_token_parse: "not a ringmail token" (no "b-"/"u-" shape),
 *     "bad token characters" (outside base32, or not its canonical
 *     form), "truncated token" (too short for two ids and the MAC, or
 *     bytes left over), "unknown token kind" (a well-formed token with a
 *     letter other than b or u), "forged token (MAC mismatch)".
 */
#ifndef RINGMAIL_FEEDBACK_H
#define RINGMAIL_FEEDBACK_H

#include <stddef.h>
#include <stdint.h>

#include "engine/buf.h"

#define FEEDBACK_MAC_LEN 12   /* bytes of HMAC-SHA256 kept: 96 bits */
#define FEEDBACK_LOCAL_MAX 64 /* "K-" + 52 base32 characters + NUL fits */

enum feedback_id_kind { FEEDBACK_ID_BOUNCE = 'b', FEEDBACK_ID_UNSUBSCRIBE = 'u' };

struct feedback_id {
    enum feedback_id_kind kind;
    uint64_t campaign;  /* 0 in list mode */
    uint64_t recipient; /* the recipient's row id; list mode: its line number */
};

/* feedback_token_make - the local part "K-TOKEN" of t into out; returns its length */
size_t feedback_token_make(const uint8_t *key, size_t keylen, const struct feedback_id *t,
                           char out[FEEDBACK_LOCAL_MAX]);
/* feedback_address_make - "K-TOKEN@domain" appended to out */
void feedback_address_make(const uint8_t *key, size_t keylen, const struct feedback_id *t,
                           const char *domain, buf_t *out);
/* feedback_token_parse - s ("K-TOKEN" or "K-TOKEN@DOMAIN", any case) into *out:
 * 0, or -1 with the reason in why (*out untouched) */
int feedback_token_parse(const uint8_t *key, size_t keylen, const char *s, struct feedback_id *out,
                         char *why, size_t whylen);

#endif
