/*
 * mta_sts - the MTA-STS TXT record, policy file and MX matching. See
 * mta_sts.h.
 */
#include "pool/mta_sts.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

const char *mta_sts_mode_name(enum mta_sts_mode m)
{
    return m == MTA_STS_ENFORCE ? "enforce" : m == MTA_STS_TESTING ? "testing" : "none";
}

static int mta_sts_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* mta_sts_txt_id - the id field of one STSv1 record (after "v=STSv1"): 1
 * with id, 0 with why. Fields are "name=value" separated by ";" with
 * optional spaces (3.1); others are extensions, ignored. */
static int mta_sts_txt_id(const char *r, size_t len, char *id, char *why, size_t whylen)
{
    size_t i = 7; /* "v=STSv1" */
    int found = 0;
    while (i < len) {
        while (i < len && mta_sts_wsp(r[i])) {
            i++;
        }
        if (i < len && r[i] != ';') {
            snprintf(why, whylen, "malformed v=STSv1 record");
            return 0;
        }
        i++; /* the ';' */
        while (i < len && mta_sts_wsp(r[i])) {
            i++;
        }
        if (i >= len) {
            break; /* a trailing ';' */
        }
        size_t name = i;
        while (i < len && r[i] != '=' && r[i] != ';') {
            i++;
        }
        if (i >= len || r[i] != '=') {
            snprintf(why, whylen, "malformed v=STSv1 record");
            return 0;
        }
        size_t nlen = i - name, val = ++i;
        while (i < len && r[i] != ';' && !mta_sts_wsp(r[i])) {
            i++;
        }
        if (nlen == 2 && memcmp(r + name, "id", 2) == 0 && !found) {
            size_t vlen = i - val;
            int ok = vlen >= 1 && vlen < MTA_STS_ID_MAX;
            for (size_t k = val; ok && k < i; k++) {
                ok = isalnum((unsigned char)r[k]) != 0;
            }
            if (!ok) {
                snprintf(why, whylen, "bad id \"%.*s\" (1 to 32 letters and digits)",
                         (int)(vlen > 40 ? 40 : vlen), r + val);
                return 0;
            }
            memcpy(id, r + val, vlen);
            id[vlen] = '\0';
            found = 1;
        }
    }
    if (!found) {
        snprintf(why, whylen, "v=STSv1 record without an id");
    }
    return found;
}

int mta_sts_txt_parse(const char *const *records, const size_t *lens, size_t n, char *id, char *why,
                      size_t whylen)
{
    size_t sts = 0, which = 0;
    for (size_t i = 0; i < n; i++) {
        /* "v=STSv1" then the end, ';' or a space: "v=STSv10" is not one. */
        if (lens[i] >= 7 && memcmp(records[i], "v=STSv1", 7) == 0 &&
            (lens[i] == 7 || records[i][7] == ';' || mta_sts_wsp(records[i][7]))) {
            sts++;
            which = i;
        }
    }
    if (sts != 1) {
        snprintf(why, whylen, sts ? "%zu v=STSv1 records" : "no v=STSv1 record", sts);
        return 0;
    }
    return mta_sts_txt_id(records[which], lens[which], id, why, whylen);
}

/* mta_sts_trim - [*s, *e) without the spaces around it */
static void mta_sts_trim(const char **s, const char **e)
{
    while (*s < *e && mta_sts_wsp(**s)) {
        (*s)++;
    }
    while (*e > *s && mta_sts_wsp((*e)[-1])) {
        (*e)--;
    }
}

static int mta_sts_is(const char *v, size_t n, const char *word)
{
    return n == strlen(word) && strncasecmp(v, word, n) == 0;
}

/* mta_sts_field - one key and value into p; seen: a bit per key already
 * set (the first counts). -1 with err. */
static int mta_sts_field(const char *k, size_t kn, const char *v, size_t vn,
                         struct mta_sts_policy *p, unsigned *seen, char *err, size_t errlen)
{
    if (mta_sts_is(k, kn, "version")) {
        if (!(*seen & 1) && !mta_sts_is(v, vn, "STSv1")) {
            snprintf(err, errlen, "version is \"%.*s\", not STSv1", (int)(vn > 40 ? 40 : vn), v);
            return -1;
        }
        *seen |= 1;
    } else if (mta_sts_is(k, kn, "mode")) {
        if (!(*seen & 2)) {
            if (mta_sts_is(v, vn, "enforce")) {
                p->mode = MTA_STS_ENFORCE;
            } else if (mta_sts_is(v, vn, "testing")) {
                p->mode = MTA_STS_TESTING;
            } else if (mta_sts_is(v, vn, "none")) {
                p->mode = MTA_STS_NONE;
            } else {
                snprintf(err, errlen, "bad mode \"%.*s\"", (int)(vn > 40 ? 40 : vn), v);
                return -1;
            }
        }
        *seen |= 2;
    } else if (mta_sts_is(k, kn, "max_age")) {
        uint64_t x = 0;
        size_t i = 0;
        for (; i < vn && isdigit((unsigned char)v[i]) && x <= MTA_STS_MAX_AGE; i++) {
            x = x * 10 + (uint64_t)(v[i] - '0');
        }
        if (!(*seen & 4) && (i == 0 || i < vn || x > MTA_STS_MAX_AGE)) {
            snprintf(err, errlen, "bad max_age \"%.*s\" (0 to %u seconds)",
                     (int)(vn > 40 ? 40 : vn), v, MTA_STS_MAX_AGE);
            return -1;
        }
        if (!(*seen & 4)) {
            p->max_age = (uint32_t)x;
        }
        *seen |= 4;
    } else if (mta_sts_is(k, kn, "mx")) {
        if (vn == 0 || vn >= sizeof p->mx[0] || memchr(v, ' ', vn) || memchr(v, '\t', vn)) {
            snprintf(err, errlen, "bad mx \"%.*s\"", (int)(vn > 40 ? 40 : vn), v);
            return -1;
        }
        if (p->nmx < MTA_STS_MX_MAX) {
            memcpy(p->mx[p->nmx], v, vn);
            p->mx[p->nmx++][vn] = '\0';
        }
        *seen |= 8;
    }
    return 0;
}

int mta_sts_policy_parse(const char *text, size_t len, struct mta_sts_policy *p, char *err,
                         size_t errlen)
{
    memset(p, 0, sizeof *p);
    unsigned seen = 0;
    const char *s = text, *end = text + len;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *e = nl ? nl : end;
        if (e > s && e[-1] == '\r') {
            e--;
        }
        if (e > s) {
            const char *colon = memchr(s, ':', (size_t)(e - s));
            if (!colon || colon == s) {
                snprintf(err, errlen, "line \"%.*s\" is not \"key: value\"",
                         (int)(e - s > 40 ? 40 : e - s), s);
                return -1;
            }
            const char *ks = s, *ke = colon, *vs = colon + 1, *ve = e;
            mta_sts_trim(&ks, &ke);
            mta_sts_trim(&vs, &ve);
            if (mta_sts_field(ks, (size_t)(ke - ks), vs, (size_t)(ve - vs), p, &seen, err, errlen) <
                0) {
                return -1;
            }
        }
        s = nl ? nl + 1 : end;
    }
    const char *missing = !(seen & 1)                              ? "version"
                          : !(seen & 2)                            ? "mode"
                          : !(seen & 4)                            ? "max_age"
                          : !(seen & 8) && p->mode != MTA_STS_NONE ? "mx"
                                                                   : NULL;
    if (missing) {
        snprintf(err, errlen, "no %s", missing);
        return -1;
    }
    return 0;
}

/* mta_sts_len - length of name without a trailing dot */
static size_t mta_sts_len(const char *name)
{
    size_t n = strlen(name);
    return n > 0 && name[n - 1] == '.' ? n - 1 : n;
}

int mta_sts_mx_match(const char *pattern, const char *host)
{
    size_t pn = mta_sts_len(pattern), hn = mta_sts_len(host);
    if (pn >= 2 && pattern[0] == '*' && pattern[1] == '.') {
        /* "*.example.com": one label, then ".example.com" */
        const char *dot = memchr(host, '.', hn);
        if (!dot || dot == host) {
            return 0;
        }
        size_t rest = hn - (size_t)(dot - host);
        return rest == pn - 1 && strncasecmp(dot, pattern + 1, rest) == 0;
    }
    return pn == hn && pn > 0 && strncasecmp(pattern, host, pn) == 0;
}

int mta_sts_policy_mx_ok(const struct mta_sts_policy *p, const char *host)
{
    for (size_t i = 0; i < p->nmx; i++) {
        if (mta_sts_mx_match(p->mx[i], host)) {
            return 1;
        }
    }
    return 0;
}
