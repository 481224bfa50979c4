/*
 * mta_sts - MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy file
 * and MX host matching
 *
 * Pure functions, no I/O: pool/sts_dest.c looks the records up and fetches
 * the policy; these say what they mean.
 *
 * TXT (3.1): of the TXT records at _mta-sts.DOMAIN only those that start
 * with "v=STSv1" count; exactly one must, with an id of 1 to 32 letters and
 * digits, or the domain has no MTA-STS (none, several, or a bad one).
 *
 * Policy (3.2): "key: value" lines ended by CRLF or LF; version STSv1, mode
 * enforce, testing or none, max_age 0..31557600 seconds, and (but for mode
 * none) one or more mx patterns; unknown keys are ignored, the first of a
 * repeated key counts (mx: every one). Anything else (a missing key, a bad
 * value, a line that is not "key: value") makes the whole policy invalid
 * (RFC 8460 sts-policy-invalid).
 *
 * MX matching (4.1): case-insensitive, trailing dots ignored; "*.example.com"
 * matches exactly one label more on the left (mx1.example.com, not
 * example.com nor a.b.example.com).
 */
#ifndef RINGMAIL_MTA_STS_H
#define RINGMAIL_MTA_STS_H

#include <stddef.h>
#include <stdint.h>

#define MTA_STS_ID_MAX 33 /* 32 characters and the NUL */
#define MTA_STS_MX_MAX 32 /* patterns kept from one policy */
#define MTA_STS_MAX_AGE 31557600u
#define MTA_STS_POLICY_MAX (64u * 1024u) /* the largest policy fetched (3.3) */

enum mta_sts_mode {
    MTA_STS_NONE = 0,
    MTA_STS_TESTING,
    MTA_STS_ENFORCE,
};

struct mta_sts_policy {
    enum mta_sts_mode mode;
    uint32_t max_age; /* seconds */
    size_t nmx;
    char mx[MTA_STS_MX_MAX][256];
};

/* The STSv1 record among n TXT records (records[i], lens[i] bytes): 1 and its
 * id into id (MTA_STS_ID_MAX bytes); 0 when the domain has no valid one,
 * why says which ("no v=STSv1 record", "2 v=STSv1 records", "bad id ..."). */
int mta_sts_txt_parse(const char *const *records, const size_t *lens, size_t n, char *id, char *why,
                      size_t whylen);

/* The policy text (len bytes) into p: 0, or -1 with why in err. */
int mta_sts_policy_parse(const char *text, size_t len, struct mta_sts_policy *p, char *err,
                         size_t errlen);

/* 1 when host matches pattern (4.1), else 0. */
int mta_sts_mx_match(const char *pattern, const char *host);
/* 1 when host matches one of p's mx patterns. */
int mta_sts_policy_mx_ok(const struct mta_sts_policy *p, const char *host);

/* "enforce", "testing", "none" */
const char *mta_sts_mode_name(enum mta_sts_mode m);

#endif
