/*
 * check_dns - `ringmail check-dns`: DKIM, SPF and DMARC of a sending domain,
 * looked up through ringmail's resolver. See check_dns.h.
 *
 * The lookups (pool/dns.h TXT queries on a loop, as `ringmail resolve`
 * runs its MX lookups) all go out at once; the report is made when every
 * answer is in, so the lines come in a fixed order: DKIM, SPF, DMARC,
 * SPF alignment, DKIM alignment, the requirements line.
 */
#include "campaign/check_dns.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "campaign/dkim.h"
#include "engine/buf.h"
#include "engine/crypto.h"
#include "engine/loop.h"
#include "engine/num.h"
#include "engine/opt.h"
#include "pool/config.h"

/* ---------------------------------------------------------------- record parsing */

static int cd_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The tag at p (a tag-spec up to ';' or the end): name and value bounds,
 * whitespace trimmed. Returns the position after the ';' (or the end). */
static const char *cd_next_tag(const char *p, const char **name, size_t *nlen, const char **val,
                               size_t *vlen)
{
    const char *end = p + strcspn(p, ";");
    while (p < end && cd_is_space(*p)) {
        p++;
    }
    const char *eq = memchr(p, '=', (size_t)(end - p));
    const char *ne = eq ? eq : end;
    while (ne > p && cd_is_space(ne[-1])) {
        ne--;
    }
    *name = p;
    *nlen = (size_t)(ne - p);
    const char *v = eq ? eq + 1 : end, *ve = end;
    while (v < ve && cd_is_space(*v)) {
        v++;
    }
    while (ve > v && cd_is_space(ve[-1])) {
        ve--;
    }
    *val = v;
    *vlen = (size_t)(ve - v);
    return *end ? end + 1 : end;
}

int check_dns_tag(const char *rec, const char *tag, char *val, size_t vallen)
{
    size_t tlen = strlen(tag);
    for (const char *p = rec; *p;) {
        const char *name, *v;
        size_t nlen, vlen;
        p = cd_next_tag(p, &name, &nlen, &v, &vlen);
        if (nlen == tlen && strncasecmp(name, tag, tlen) == 0) {
            if (vallen > 0) {
                size_t n = vlen < vallen - 1 ? vlen : vallen - 1;
                memcpy(val, v, n);
                val[n] = '\0';
            }
            return 1;
        }
    }
    return 0;
}

/* 1 when rec's first tag is name=value (case-insensitive). */
static int cd_first_tag_is(const char *rec, const char *name, const char *value)
{
    const char *n, *v;
    size_t nlen, vlen;
    cd_next_tag(rec, &n, &nlen, &v, &vlen);
    return nlen == strlen(name) && strncasecmp(n, name, nlen) == 0 && vlen == strlen(value) &&
           strncasecmp(v, value, vlen) == 0;
}

int check_dns_is_spf(const char *rec)
{
    return strncasecmp(rec, "v=spf1", 6) == 0 && (rec[6] == '\0' || rec[6] == ' ');
}

void check_dns_spf_ending(const char *rec, char *out, size_t outlen)
{
    const char *redirect = NULL;
    size_t redirect_len = 0;
    snprintf(out, outlen, "%s", "");
    for (const char *p = rec + strcspn(rec, " "); *p;) {
        p += strspn(p, " ");
        size_t n = strcspn(p, " ");
        const char *t = p;
        p += n;
        char q = '+';
        if (n > 0 && strchr("+-~?", t[0])) {
            q = t[0];
            t++;
            n--;
        }
        if (n == 3 && strncasecmp(t, "all", 3) == 0) {
            snprintf(out, outlen, "%call", q); /* the first "all" ends the evaluation */
            return;
        }
        if (n > 9 && strncasecmp(t, "redirect=", 9) == 0 && !redirect) {
            redirect = t;
            redirect_len = n;
        }
    }
    if (redirect) {
        snprintf(out, outlen, "%.*s", (int)redirect_len, redirect);
    }
}

/* ---------------------------------------------------------------- the report */

enum cd_level { CD_OK, CD_WARN, CD_MISSING, CD_ERROR };

struct cd_report {
    FILE *out;
    buf_t reasons; /* ", "-separated */
    int failed;
};

static void cd_line(struct cd_report *r, enum cd_level lv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void cd_line(struct cd_report *r, enum cd_level lv, const char *fmt, ...)
{
    static const char *const names[] = {"OK", "WARN", "MISSING", "ERROR"};
    fprintf(r->out, "%-7s ", names[lv]);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->out, fmt, ap);
    va_end(ap);
    fputc('\n', r->out);
}

/* A required check did not pass: reason goes in the requirements line. */
static void cd_fail(struct cd_report *r, const char *reason)
{
    r->failed = 1;
    if (buf_len(&r->reasons) > 0) {
        buf_append_str(&r->reasons, ", ");
    }
    buf_append_str(&r->reasons, reason);
}

/* rec quoted for a line: control bytes as '?', cut after max bytes. */
static const char *cd_quote(buf_t *b, const char *rec, size_t max)
{
    buf_reset(b);
    buf_append(b, "\"", 1);
    size_t n = strlen(rec);
    for (size_t i = 0; i < n && i < max; i++) {
        unsigned char c = (unsigned char)rec[i];
        char ch = c < 0x20 || c == 0x7f ? '?' : (char)c;
        buf_append(b, &ch, 1);
    }
    buf_append_str(b, n > max ? "...\"" : "\"");
    return buf_cstr(b);
}

/* The lookup failed: say so for name, and that it could not be checked. 1 if it did. */
static int cd_lookup_failed(struct cd_report *r, const char *what, const struct check_dns_answer *a)
{
    if (a->status != DNS_TEMPFAIL && a->status != DNS_BAD_NAME) {
        return 0;
    }
    cd_line(r, CD_ERROR, "%s %s: lookup failed (%s): could not be checked", what, a->name,
            a->error ? a->error : "no answer");
    buf_t reason = BUF_INIT;
    buf_appendf(&reason, "%s could not be checked (%s lookup failed)", what, a->name);
    cd_fail(r, buf_cstr(&reason));
    buf_free(&reason);
    return 1;
}

/* Base64 with whitespace anywhere (DKIM p= allows FWS) into out; -1 if not base64. */
static int cd_base64(const char *text, buf_t *out)
{
    buf_t clean = BUF_INIT;
    for (const char *p = text; *p; p++) {
        if (!cd_is_space(*p)) {
            buf_append(&clean, p, 1);
        }
    }
    size_t max = crypto_base64_decoded_max(buf_len(&clean)), got = 0;
    char *w = buf_reserve(out, max + 1);
    int rc = crypto_base64_decode(w, max + 1, &got, buf_data(&clean), buf_len(&clean));
    if (rc == 0) {
        buf_commit(out, got);
    }
    buf_free(&clean);
    return rc;
}

/* What to publish at the DKIM name, on the end of a line. */
static void cd_dkim_publish(const struct check_dns_input *in, const char *name, buf_t *out)
{
    if (in->key_record) {
        buf_append_str(out, "; publish  ");
        dkim_zone_txt(name, in->key_record, strlen(in->key_record), out);
    } else {
        buf_append_str(out, "; publish the record `ringmail campaign create` printed for this "
                            "key (add --dkim-key FILE to see it here)");
    }
}

/* The key records among a's TXT records (v=DKIM1 first, or a p= tag):
 * how many, the first in *key. */
static size_t cd_dkim_keys(const struct check_dns_answer *a, const char **key)
{
    size_t n = 0;
    *key = NULL;
    for (size_t i = 0; i < a->n; i++) {
        char v[8];
        if (cd_first_tag_is(a->records[i], "v", "DKIM1") ||
            check_dns_tag(a->records[i], "p", v, sizeof v)) {
            *key = *key ? *key : a->records[i];
            n++;
        }
    }
    return n;
}

/* The key of the record key, checked: its type in k, p= decoded in der,
 * the RSA modulus bits in *bits. 0, or -1 and what is wrong in why. */
static int cd_dkim_parse(const char *key, char k[32], buf_t *der, int *bits, char *why,
                         size_t whylen)
{
    char v[32] = "", h[128] = "";
    size_t plen = strlen(key) + 1;
    char *p = malloc(plen);
    if (!p) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    snprintf(k, 32, "rsa"); /* the default (RFC 6376 3.6.1) */
    check_dns_tag(key, "k", k, 32);
    int has_v = check_dns_tag(key, "v", v, sizeof v);
    int has_h = check_dns_tag(key, "h", h, sizeof h);
    int has_p = check_dns_tag(key, "p", p, plen);
    int rsa = strcasecmp(k, "rsa") == 0;
    *bits = 0;
    why[0] = '\0';
    if (has_v && !cd_first_tag_is(key, "v", "DKIM1")) {
        snprintf(why, whylen, "v=%s: a key record starts with v=DKIM1", v);
    } else if (!has_p) {
        snprintf(why, whylen, "no p= tag (the public key)");
    } else if (!*p) {
        snprintf(why, whylen, "p= is empty: the key is revoked");
    } else if (!rsa && strcasecmp(k, "ed25519") != 0) {
        snprintf(why, whylen, "k=%s: not a key type verifiers know (rsa, ed25519)", k);
    } else if (has_h && !strstr(h, "sha256")) {
        snprintf(why, whylen, "h=%s: signatures are rsa-sha256/ed25519-sha256", h);
    } else if (cd_base64(p, der) < 0) {
        snprintf(why, whylen, "p= is not base64");
    } else if (rsa && (*bits = crypto_spki_rsa_bits(buf_data(der), buf_len(der))) < 0) {
        snprintf(why, whylen, "p= is not an RSA public key (DER SubjectPublicKeyInfo)");
    } else if (rsa && *bits < 1024) {
        snprintf(why, whylen,
                 "RSA key of %d bits: Gmail and Yahoo need 1024 or more (2048 advised)", *bits);
    } else if (!rsa && buf_len(der) != 32) {
        snprintf(why, whylen,
                 "k=ed25519 with a p= of %zu bytes: an Ed25519 key is 32 bytes (RFC 8463)",
                 buf_len(der));
    }
    free(p);
    return why[0] ? -1 : 0;
}

/* 1 when the published key (type k, der) is not the one of --dkim-key. */
static int cd_dkim_mismatch(const struct check_dns_input *in, const char *k, const buf_t *der)
{
    char mk[32] = "", mp[2048] = "";
    buf_t mine = BUF_INIT;
    check_dns_tag(in->key_record, "k", mk, sizeof mk);
    check_dns_tag(in->key_record, "p", mp, sizeof mp);
    int differ = cd_base64(mp, &mine) < 0 || strcasecmp(mk, k) != 0 ||
                 buf_len(&mine) != buf_len(der) ||
                 memcmp(buf_data(&mine), buf_data(der), buf_len(der)) != 0;
    buf_free(&mine);
    return differ;
}

/* The line of a usable key record: OK, or WARN in testing mode. */
static void cd_dkim_good(const struct check_dns_input *in, struct cd_report *r, const char *key,
                         const char *k, int bits)
{
    char t[64] = "", v[8];
    int testing = check_dns_tag(key, "t", t, sizeof t) && strchr(t, 'y');
    buf_t line = BUF_INIT;
    buf_appendf(&line, "DKIM %s: v=DKIM1, k=%s", in->dkim.name,
                strcasecmp(k, "rsa") == 0 ? "rsa" : "ed25519");
    if (bits > 0) {
        buf_appendf(&line, ", %d-bit key%s", bits, bits < 2048 ? " (2048 advised)" : "");
    }
    if (in->key_file) {
        buf_appendf(&line, ", the public key of %s", in->key_file);
    }
    if (!check_dns_tag(key, "v", v, sizeof v)) {
        buf_append_str(&line, "; publish v=DKIM1 first (recommended)");
    }
    if (testing) {
        buf_append_str(&line, "; t=y (testing): verifiers may treat the mail as unsigned, "
                              "remove it when done");
    }
    cd_line(r, testing ? CD_WARN : CD_OK, "%s", buf_cstr(&line));
    buf_free(&line);
}

/* No key record at the name: MISSING, or ERROR when other TXT records are there. */
static void cd_dkim_missing(const struct check_dns_input *in, struct cd_report *r)
{
    const struct check_dns_answer *a = &in->dkim;
    buf_t line = BUF_INIT, q = BUF_INIT;
    if (a->n > 0) {
        buf_appendf(&line, "DKIM %s: no DKIM key among its TXT records (%s)", a->name,
                    cd_quote(&q, a->records[0], 60));
    } else {
        buf_appendf(&line, "DKIM %s: no key record%s", a->name,
                    a->status == DNS_NXDOMAIN ? " (NXDOMAIN)" : "");
    }
    cd_dkim_publish(in, a->name, &line);
    cd_line(r, a->n > 0 ? CD_ERROR : CD_MISSING, "%s", buf_cstr(&line));
    cd_fail(r, "DKIM missing");
    buf_free(&line);
    buf_free(&q);
}

/* The DKIM key record: 1 when it is there and usable. */
static int cd_dkim(const struct check_dns_input *in, struct cd_report *r)
{
    const struct check_dns_answer *a = &in->dkim;
    if (!in->selector) {
        cd_line(r, CD_WARN,
                "DKIM: not checked: name the selector with --dkim-selector S (the s= of your "
                "signatures; `campaign create --dkim-selector`)");
        cd_fail(r, "DKIM not checked (no --dkim-selector)");
        return 0;
    }
    if (cd_lookup_failed(r, "DKIM", a)) {
        return 0;
    }
    const char *key;
    size_t nkeys = cd_dkim_keys(a, &key);
    if (nkeys == 0) {
        cd_dkim_missing(in, r);
        return 0;
    }
    if (nkeys > 1) {
        cd_line(r, CD_ERROR,
                "DKIM %s: %zu key records: verifiers may use either; keep the one for the "
                "key you sign with",
                a->name, nkeys);
        cd_fail(r, "DKIM has several key records");
        return 0;
    }
    char k[32], why[256];
    int bits, ok = 0;
    buf_t der = BUF_INIT, line = BUF_INIT;
    if (cd_dkim_parse(key, k, &der, &bits, why, sizeof why) < 0) {
        buf_appendf(&line, "DKIM %s: %s", a->name, why);
        cd_dkim_publish(in, a->name, &line);
        cd_line(r, CD_ERROR, "%s", buf_cstr(&line));
        cd_fail(r, "DKIM record invalid");
    } else if (in->key_record && cd_dkim_mismatch(in, k, &der)) {
        buf_appendf(&line, "DKIM %s: the published key (k=%s) is not the public key of %s", a->name,
                    k, in->key_file);
        cd_dkim_publish(in, a->name, &line);
        cd_line(r, CD_ERROR, "%s", buf_cstr(&line));
        cd_fail(r, "DKIM key does not match --dkim-key");
    } else {
        cd_dkim_good(in, r, key, k, bits);
        ok = 1;
    }
    buf_free(&der);
    buf_free(&line);
    return ok;
}

/* No SPF record at a: MISSING (the return path) or WARN, with one to publish. */
static void cd_spf_missing(const struct check_dns_input *in, struct cd_report *r,
                           const struct check_dns_answer *a, int required, const char *why)
{
    buf_t zone = BUF_INIT, txt = BUF_INIT;
    buf_appendf(&txt, "v=spf1 %s -all", in->spf_hint ? in->spf_hint : "ip4:YOUR-SENDING-IP");
    dkim_zone_txt(a->name, buf_data(&txt), buf_len(&txt), &zone);
    cd_line(r, required ? CD_MISSING : CD_WARN, "SPF %s: no v=spf1 record%s%s; publish  %s%s",
            a->name, a->status == DNS_NXDOMAIN ? " (NXDOMAIN: no such domain)" : "", why,
            buf_cstr(&zone),
            in->spf_hint ? "" : " (the addresses ringmail sends from: [global] source)");
    buf_free(&zone);
    buf_free(&txt);
    if (required) {
        cd_fail(r, "SPF missing");
    }
}

/* The one SPF record rec at a, judged by how it ends: 1 unless +all. */
static int cd_spf_one(struct cd_report *r, const struct check_dns_answer *a, const char *rec,
                      int required, const char *why)
{
    char end[300];
    buf_t q = BUF_INIT;
    check_dns_spf_ending(rec, end, sizeof end);
    const char *shown = cd_quote(&q, rec, 120);
    int ok = 1;
    if (strcmp(end, "-all") == 0 || strcmp(end, "~all") == 0) {
        cd_line(r, CD_OK, "SPF %s: %s ends with %s (other senders %s)", a->name, shown, end,
                end[0] == '-' ? "fail" : "softfail");
    } else if (strcmp(end, "?all") == 0) {
        cd_line(r, CD_WARN,
                "SPF %s: %s ends with ?all (neutral: it refuses no one); end it with ~all or -all",
                a->name, shown);
    } else if (strcmp(end, "+all") == 0) {
        cd_line(r, required ? CD_ERROR : CD_WARN,
                "SPF %s: %s ends with +all: anyone may send as %s%s; end it with ~all or -all",
                a->name, shown, a->name, why);
        if (required) {
            cd_fail(r, "SPF +all");
        }
        ok = 0;
    } else if (end[0]) {
        cd_line(r, CD_OK, "SPF %s: %s, %s decides (not followed here)", a->name, shown, end);
    } else {
        cd_line(r, CD_WARN,
                "SPF %s: %s has no all mechanism (other senders get neutral); end it with ~all "
                "or -all",
                a->name, shown);
    }
    buf_free(&q);
    return ok;
}

/* The SPF record at a domain: 1 when there is exactly one and it does not
 * end in +all. required: the return path's (else advice only). */
static int cd_spf(const struct check_dns_input *in, struct cd_report *r,
                  const struct check_dns_answer *a, int required)
{
    if (cd_lookup_failed(r, "SPF", a)) {
        return 0;
    }
    char why[400] = "";
    if (!required) {
        snprintf(why, sizeof why, " (not required: SPF is checked on the return path %.300s)",
                 in->return_path);
    }
    size_t nspf = 0;
    const char *rec = NULL;
    for (size_t i = 0; i < a->n; i++) {
        if (check_dns_is_spf(a->records[i])) {
            rec = rec ? rec : a->records[i];
            nspf++;
        }
    }
    if (nspf == 0) {
        cd_spf_missing(in, r, a, required, why);
        return 0;
    }
    if (nspf > 1) {
        cd_line(r, required ? CD_ERROR : CD_WARN,
                "SPF %s: %zu v=spf1 records: permerror, receivers fail SPF for the domain%s; "
                "merge them into one record",
                a->name, nspf, why);
        if (required) {
            cd_fail(r, "SPF permerror (several v=spf1 records)");
        }
        return 0;
    }
    return cd_spf_one(r, a, rec, required, why);
}

struct cd_dmarc {
    int ok;              /* a usable record was found */
    int adkim_s, aspf_s; /* strict alignment asked for */
};

static int cd_dmarc_policy_ok(const char *p)
{
    return strcasecmp(p, "none") == 0 || strcasecmp(p, "quarantine") == 0 ||
           strcasecmp(p, "reject") == 0;
}

/* The one DMARC record rec at a; inherited: a parent's, for the From domain. */
static struct cd_dmarc cd_dmarc_one(const struct check_dns_input *in, struct cd_report *r,
                                    const struct check_dns_answer *a, const char *rec,
                                    const char *inherited)
{
    struct cd_dmarc d = {0};
    char p[32] = "", sp[32] = "", rua[256] = "", pct[16] = "", al[8];
    int has_p = check_dns_tag(rec, "p", p, sizeof p);
    int has_sp = inherited[0] && check_dns_tag(rec, "sp", sp, sizeof sp);
    int has_rua = check_dns_tag(rec, "rua", rua, sizeof rua) && rua[0];
    check_dns_tag(rec, "pct", pct, sizeof pct);
    d.adkim_s = check_dns_tag(rec, "adkim", al, sizeof al) && strcasecmp(al, "s") == 0;
    d.aspf_s = check_dns_tag(rec, "aspf", al, sizeof al) && strcasecmp(al, "s") == 0;
    const char *tag = has_sp ? "sp" : "p", *policy = has_sp ? sp : p;
    if (!has_p || !cd_dmarc_policy_ok(p) || (has_sp && !cd_dmarc_policy_ok(sp))) {
        int p_bad = !has_p || !cd_dmarc_policy_ok(p);
        buf_t q = BUF_INIT;
        cd_line(r, CD_ERROR, "DMARC %s: %s%s: %s=%s is not none, quarantine or reject%s", a->name,
                cd_quote(&q, rec, 120), inherited, p_bad ? "p" : "sp",
                !has_p  ? "(missing)"
                : p_bad ? p
                        : sp,
                has_p ? "" : "; p= is required");
        cd_fail(r, "DMARC invalid (p=)");
        buf_free(&q);
        return d;
    }
    d.ok = 1;
    buf_t line = BUF_INIT;
    buf_appendf(&line, "DMARC %s: %s=%s", a->name, tag, policy);
    if (has_rua) {
        buf_appendf(&line, ", rua=%s", rua);
    }
    buf_append_str(&line, inherited);
    if (strcasecmp(policy, "none") == 0) {
        buf_append_str(&line, "; monitoring only (meets Gmail and Yahoo): move to quarantine "
                              "or reject when the reports are clean");
    }
    if (pct[0] && strcmp(pct, "100") != 0) {
        buf_appendf(&line, "; pct=%s: the policy applies to that share of failing mail", pct);
    }
    if (!has_rua) {
        buf_appendf(&line,
                    "; no rua=: no aggregate reports reach you (add "
                    "rua=mailto:dmarc-reports@%s)",
                    in->from);
    }
    cd_line(r, has_rua ? CD_OK : CD_WARN, "%s", buf_cstr(&line));
    buf_free(&line);
    return d;
}

/* DMARC: the nearest record from _dmarc.FROM up. */
static struct cd_dmarc cd_dmarc(const struct check_dns_input *in, struct cd_report *r)
{
    struct cd_dmarc none = {0};
    for (size_t i = 0; i < in->ndmarc; i++) {
        const struct check_dns_answer *a = &in->dmarc[i];
        if (cd_lookup_failed(r, "DMARC", a)) {
            return none;
        }
        size_t n = 0;
        const char *rec = NULL;
        for (size_t j = 0; j < a->n; j++) {
            if (cd_first_tag_is(a->records[j], "v", "DMARC1")) {
                rec = rec ? rec : a->records[j];
                n++;
            }
        }
        char inherited[400] = "";
        if (n > 0 && i > 0) {
            snprintf(inherited, sizeof inherited, " (none at %.255s: this one applies to %.100s)",
                     in->dmarc[0].name, in->from);
        }
        if (n == 1) {
            return cd_dmarc_one(in, r, a, rec, inherited);
        }
        if (n > 1) {
            cd_line(r, CD_ERROR, "DMARC %s: %zu v=DMARC1 records%s: receivers apply none; keep one",
                    a->name, n, inherited);
            cd_fail(r, "DMARC invalid (several records)");
            return none;
        }
    }
    buf_t zone = BUF_INIT, txt = BUF_INIT;
    const char *name = in->ndmarc > 0 ? in->dmarc[0].name : "_dmarc";
    buf_appendf(&txt, "v=DMARC1; p=none; rua=mailto:dmarc-reports@%s", in->from);
    dkim_zone_txt(name, buf_data(&txt), buf_len(&txt), &zone);
    cd_line(r, CD_MISSING, "DMARC %s: no v=DMARC1 record%s; publish  %s", name,
            in->ndmarc > 1 ? " (nor at its parents)" : "", buf_cstr(&zone));
    cd_fail(r, "DMARC missing");
    buf_free(&zone);
    buf_free(&txt);
    return none;
}

/* How d stands to the From domain, for an OK line. */
static const char *cd_relation(const char *d, const char *from)
{
    if (dkim_domains_align(d, from, 1)) {
        return "is the From domain";
    }
    return strlen(d) > strlen(from) ? "is under the From domain" : "is a parent of the From domain";
}

/* The SPF and DKIM alignment lines; DMARC needs one of the two to count. */
static void cd_alignment(const struct check_dns_input *in, struct cd_report *r, int spf_ok,
                         int dkim_ok, const struct cd_dmarc *dm)
{
    int spf_aligned = dkim_domains_align(in->return_path, in->from, dm->aspf_s);
    int dkim_aligned = in->selector && dkim_domains_align(in->dkim_domain, in->from, dm->adkim_s);
    int spf_counts = spf_ok && spf_aligned, dkim_counts = dkim_ok && dkim_aligned;
    if (spf_aligned) {
        cd_line(r, CD_OK, "SPF alignment: return path %s (%s) %s %s", in->return_path,
                in->return_path_from, cd_relation(in->return_path, in->from), in->from);
    } else {
        cd_line(r, dkim_counts ? CD_WARN : CD_ERROR,
                "SPF alignment: return path %s (%s) does not align with the From domain %s%s: "
                "SPF does not count for DMARC%s; use a return path at or under %s ([feedback] "
                "return_path)",
                in->return_path, in->return_path_from, in->from,
                dm->aspf_s ? " (aspf=s: it must be the same domain)" : "",
                dkim_counts ? " (DKIM carries it)" : "", in->from);
    }
    if (in->selector && dkim_aligned) {
        cd_line(r, CD_OK, "DKIM alignment: d=%s %s %s", in->dkim_domain,
                cd_relation(in->dkim_domain, in->from), in->from);
    } else if (in->selector) {
        cd_line(r, spf_counts ? CD_WARN : CD_ERROR,
                "DKIM alignment: d=%s does not align with the From domain %s%s: DKIM does not "
                "count for DMARC%s; sign with d=%s (campaign create --dkim-domain %s)",
                in->dkim_domain, in->from,
                dm->adkim_s ? " (adkim=s: it must be the same domain)" : "",
                spf_counts ? " (SPF carries it)" : "", in->from, in->from);
    }
    if (!spf_aligned && !dkim_aligned) {
        cd_fail(r, "neither DKIM nor SPF aligned with the From domain");
    }
}

int check_dns_report(const struct check_dns_input *in, FILE *out)
{
    struct cd_report r = {.out = out, .reasons = BUF_INIT};
    int dkim_ok = cd_dkim(in, &r);
    if (in->selector && in->selector2) { /* the second key: the same checks on its name */
        struct check_dns_input second = *in;
        second.selector = in->selector2;
        second.key_file = in->key_file2;
        second.key_record = in->key_record2;
        second.dkim = in->dkim2;
        dkim_ok &= cd_dkim(&second, &r);
    }
    int spf_ok = cd_spf(in, &r, &in->spf_rp, 1);
    if (strcasecmp(in->return_path, in->from) != 0) {
        cd_spf(in, &r, &in->spf_from, 0);
    }
    struct cd_dmarc dm = cd_dmarc(in, &r);
    cd_alignment(in, &r, spf_ok, dkim_ok, &dm);
    if (r.failed) {
        fprintf(out, "Gmail and Yahoo bulk-sender requirements: not met: %s\n",
                buf_cstr(&r.reasons));
    } else {
        fprintf(out, "Gmail and Yahoo bulk-sender requirements: met\n");
    }
    fflush(out);
    buf_free(&r.reasons);
    return r.failed ? 1 : 0;
}

/* ---------------------------------------------------------------- lookups */

struct cd_run {
    struct loop *loop;
    struct dns *dns;
    struct loop_timer done;
    unsigned pending;
};

struct cd_lookup {
    struct cd_run *run;
    struct check_dns_answer *a;
    char *error; /* owned: a->error */
};

static void cd_on_done(struct loop_timer *t)
{
    struct cd_run *run = t->owner;
    dns_free(run->dns); /* not from inside a c-ares callback */
    run->dns = NULL;
    loop_stop_when_idle(run->loop);
}

static void cd_on_txt(void *user, const struct dns_txt_result *res)
{
    struct cd_lookup *l = user;
    struct check_dns_answer *a = l->a;
    a->status = res->status;
    if (res->error) {
        l->error = strdup(res->error);
        a->error = l->error;
    }
    char **recs = res->n ? calloc(res->n, sizeof *recs) : NULL;
    size_t n = 0;
    for (size_t i = 0; recs && i < res->n; i++) {
        if ((recs[n] = strdup(res->records[i])) != NULL) {
            n++;
        }
    }
    a->records = (const char *const *)recs;
    a->n = n;
    if (--l->run->pending == 0) {
        loop_timer_set(l->run->loop, &l->run->done, 0);
    }
}

static void cd_answer_free(struct check_dns_answer *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free((char *)a->records[i]);
    }
    free((void *)a->records);
    a->records = NULL;
    a->n = 0;
}

/* ---------------------------------------------------------------- command */

static void cd_usage(FILE *f)
{
    fprintf(f, "usage: ringmail check-dns --from DOMAIN [--dkim-selector S] [--dkim-domain D]\n"
               "           [--dkim-key FILE] [--dkim-selector2 S2 [--dkim-key2 FILE2]]\n"
               "           [--return-path DOMAIN] [--resolver ADDR:PORT]\n"
               "           [--config FILE] [--timeout-ms MS]\n"
               "\n"
               "  Looks up DKIM (S._domainkey.D, D the From domain unless --dkim-domain), SPF (at\n"
               "  the return-path domain and the From domain) and DMARC (_dmarc.DOMAIN) through\n"
               "  the resolver ringmail sends with, and says what is missing or not aligned with\n"
               "  the From domain, as Gmail and Yahoo require of bulk senders.\n"
               "  --dkim-key FILE      the campaign's private key: the published p= must match it\n"
               "  --dkim-selector2 S2, --dkim-key2 FILE2  a dual-signed campaign's second key\n"
               "  --return-path DOMAIN the envelope (MAIL FROM) domain; default: [feedback]\n"
               "                       return_path of --config, else the From domain\n"
               "  --config FILE        ringmail.conf: return path, and [global] source addresses\n"
               "                       for a suggested SPF record\n"
               "  --timeout-ms MS      per DNS try (default 2000)\n"
               "  Exit status: 0 requirements met, 1 not met or a lookup failed, 2 bad options.\n");
}

/* A domain option (an address is taken for its domain) as its A-label into out. */
static int cd_domain_opt(const char *opt, const char *value, char *out, size_t outlen)
{
    char d[256];
    const char *why = "not a domain name";
    dkim_address_domain(value, d, sizeof d);
    if (!d[0] || !strchr(d, '.') || dns_domain_ascii(d, out, outlen, &why) < 0) {
        fprintf(stderr, "ringmail check-dns: %s: '%s' is not a domain name (%s)\n", opt, value,
                d[0] && strchr(d, '.') ? why : "want DOMAIN, e.g. example.com");
        return -1;
    }
    return 0;
}

static int cd_selector_ok(const char *s)
{
    if (!*s || strlen(s) > 63 || *s == '.' || s[strlen(s) - 1] == '.') {
        return 0;
    }
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.')) {
            return 0;
        }
    }
    return 1;
}

struct cd_opts {
    const char *from, *selector, *dkim_domain, *key_file, *return_path, *resolver, *config;
    const char *selector2, *key_file2;
    unsigned timeout_ms;
};

/* 0 parsed, 2 refused, 1 --help done (exit 0). */
/* What is wrong with the options once they are read; NULL if nothing. */
static const char *cd_opts_problem(const struct cd_opts *o)
{
    if (!o->from) {
        return "--from DOMAIN is required";
    }
    if (o->selector && !cd_selector_ok(o->selector)) {
        return "--dkim-selector must be letters, digits, '-', '_' or '.'";
    }
    if ((o->key_file || o->dkim_domain) && !o->selector) {
        return "--dkim-key and --dkim-domain need --dkim-selector S";
    }
    if (o->selector2 && !cd_selector_ok(o->selector2)) {
        return "--dkim-selector2 must be letters, digits, '-', '_' or '.'";
    }
    if (o->key_file2 && !o->selector2) {
        return "--dkim-key2 needs --dkim-selector2 S2";
    }
    if (o->selector2 && !o->selector) {
        return "--dkim-selector2 is a second key: it needs --dkim-selector S";
    }
    return NULL;
}

static int cd_parse(int argc, char **argv, struct cd_opts *o)
{
    static const struct option longopts[] = {{"from", required_argument, 0, 'f'},
                                             {"dkim-selector", required_argument, 0, 's'},
                                             {"dkim-domain", required_argument, 0, 'D'},
                                             {"dkim-key", required_argument, 0, 'k'},
                                             {"dkim-selector2", required_argument, 0, 'S'},
                                             {"dkim-key2", required_argument, 0, 'K'},
                                             {"return-path", required_argument, 0, 'r'},
                                             {"resolver", required_argument, 0, 'R'},
                                             {"config", required_argument, 0, 'c'},
                                             {"timeout-ms", required_argument, 0, 't'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char **dest[128] = {0};
    dest['f'] = &o->from, dest['s'] = &o->selector, dest['D'] = &o->dkim_domain;
    dest['k'] = &o->key_file, dest['r'] = &o->return_path, dest['R'] = &o->resolver;
    dest['c'] = &o->config, dest['S'] = &o->selector2, dest['K'] = &o->key_file2;
    o->timeout_ms = 2000;
    int ch;
    optind = 1;
    while ((ch = opt_getopt(argc, argv, longopts)) != -1) {
        unsigned long v;
        if (ch > 0 && ch < 128 && dest[ch]) {
            *dest[ch] = optarg;
        } else if (ch == 't' && num_parse_ulong(optarg, 1, 600000, &v) == 0) {
            o->timeout_ms = (unsigned)v;
        } else if (ch == 't') {
            fprintf(stderr,
                    "ringmail check-dns: bad value for --timeout-ms: '%s' (want 1..600000)\n",
                    optarg);
            return 2;
        } else {
            cd_usage(ch == 'h' ? stdout : stderr);
            return ch == 'h' ? 1 : 2;
        }
    }
    const char *problem = optind < argc ? "unexpected argument" : cd_opts_problem(o);
    if (problem) {
        fprintf(stderr, "ringmail check-dns: %s%s%s%s\n", problem, optind < argc ? " '" : "",
                optind < argc ? argv[optind] : "", optind < argc ? "'" : "");
        return 2;
    }
    return 0;
}

/* [global] source addresses as SPF mechanisms, or NULL. */
static char *cd_spf_hint(const struct config *c)
{
    if (!c || c->nsources == 0) {
        return NULL;
    }
    buf_t b = BUF_INIT;
    for (size_t i = 0; i < c->nsources; i++) {
        buf_appendf(&b, "%s%s:%s", i ? " " : "", strchr(c->sources[i].addr, ':') ? "ip6" : "ip4",
                    c->sources[i].addr);
    }
    char *s = strdup(buf_cstr(&b));
    buf_free(&b);
    return s;
}

/* What check_dns_main owns while it runs. */
struct cd_main {
    struct check_dns_input in;
    char from[256], dkim_domain[256], rp[256];
    buf_t key, key2;                                        /* owned: in.key_record(2) */
    buf_t rp_from;                                          /* owned: in.return_path_from */
    char *hint;                                             /* owned: in.spf_hint */
    struct check_dns_answer *asks[4 + CHECK_DNS_DMARC_MAX]; /* borrowed from in */
    struct cd_lookup looks[4 + CHECK_DNS_DMARC_MAX];
    size_t nasks;
};

/* The domains, the return path, the key's record and the SPF hint into
 * m->in; 0, or 2 after saying what is wrong. */
static int cd_setup(struct cd_main *m, const struct cd_opts *o)
{
    struct check_dns_input *in = &m->in;
    if (cd_domain_opt("--from", o->from, m->from, sizeof m->from) < 0 ||
        (o->dkim_domain && cd_domain_opt("--dkim-domain", o->dkim_domain, m->dkim_domain,
                                         sizeof m->dkim_domain) < 0) ||
        (o->return_path &&
         cd_domain_opt("--return-path", o->return_path, m->rp, sizeof m->rp) < 0)) {
        return 2;
    }
    char err[512];
    struct config *cfg = NULL;
    if (o->config && !(cfg = config_load(o->config, err, sizeof err))) {
        fprintf(stderr, "ringmail check-dns: %s\n", err);
        return 2;
    }
    in->from = m->from;
    in->dkim_domain = o->dkim_domain ? m->dkim_domain : m->from;
    in->selector = o->selector;
    in->key_file = o->key_file;
    in->selector2 = o->selector2;
    in->key_file2 = o->key_file2;
    if (o->return_path) {
        buf_append_str(&m->rp_from, "--return-path");
    } else if (cfg && cfg->feedback.enabled && cfg->feedback.return_path[0]) {
        snprintf(m->rp, sizeof m->rp, "%s", cfg->feedback.return_path);
        buf_appendf(&m->rp_from, "[feedback] return_path of %s", o->config);
    } else {
        snprintf(m->rp, sizeof m->rp, "%s", m->from);
        buf_append_str(&m->rp_from, "MAIL FROM is the From address");
    }
    in->return_path = m->rp;
    in->return_path_from = buf_cstr(&m->rp_from);
    m->hint = cd_spf_hint(cfg);
    in->spf_hint = m->hint;
    config_free(cfg);
    if (o->key_file) {
        struct dkim_spec spec = {.key_file = o->key_file};
        if (dkim_key_record(&spec, NULL, &m->key, err, sizeof err) < 0) {
            fprintf(stderr, "ringmail check-dns: --dkim-key %s: %s\n", o->key_file, err);
            return 2;
        }
        in->key_record = buf_cstr(&m->key);
    }
    if (o->key_file2) {
        struct dkim_spec spec = {.key_file = o->key_file2};
        if (dkim_key_record(&spec, NULL, &m->key2, err, sizeof err) < 0) {
            fprintf(stderr, "ringmail check-dns: --dkim-key2 %s: %s\n", o->key_file2, err);
            return 2;
        }
        in->key_record2 = buf_cstr(&m->key2);
    }
    return 0;
}

/* Every name to ask: the DKIM key, SPF at the return path and the From
 * domain, DMARC at _dmarc.FROM and its parents. */
static void cd_names(struct cd_main *m)
{
    struct check_dns_input *in = &m->in;
    if (in->selector) {
        snprintf(in->dkim.name, sizeof in->dkim.name, "%s._domainkey.%s", in->selector,
                 in->dkim_domain);
        m->asks[m->nasks++] = &in->dkim;
    }
    if (in->selector2) {
        snprintf(in->dkim2.name, sizeof in->dkim2.name, "%s._domainkey.%s", in->selector2,
                 in->dkim_domain);
        m->asks[m->nasks++] = &in->dkim2;
    }
    snprintf(in->spf_rp.name, sizeof in->spf_rp.name, "%s", in->return_path);
    m->asks[m->nasks++] = &in->spf_rp;
    if (strcasecmp(in->return_path, in->from) != 0) {
        snprintf(in->spf_from.name, sizeof in->spf_from.name, "%s", in->from);
        m->asks[m->nasks++] = &in->spf_from;
    }
    for (const char *d = in->from; strchr(d, '.') && in->ndmarc < CHECK_DNS_DMARC_MAX;
         d = strchr(d, '.') + 1) {
        snprintf(in->dmarc[in->ndmarc].name, sizeof in->dmarc[0].name, "_dmarc.%s", d);
        m->asks[m->nasks++] = &in->dmarc[in->ndmarc++];
    }
}

/* Ask every name at once and wait for the answers; 0, or 2 when no
 * resolver can be set up. */
static int cd_lookup_all(struct cd_main *m, const char *resolver, unsigned timeout_ms)
{
    char err[512];
    struct cd_run run = {0};
    run.loop = loop_new(256);
    run.dns = run.loop ? dns_new(run.loop, resolver, timeout_ms, err, sizeof err) : NULL;
    if (!run.dns) {
        fprintf(stderr, "ringmail check-dns: %s\n", run.loop ? err : "io_uring setup failed");
        loop_free(run.loop);
        return 2;
    }
    loop_timer_init(&run.done, cd_on_done, &run);
    run.pending = (unsigned)m->nasks + 1; /* held while the queries start */
    for (size_t i = 0; i < m->nasks; i++) {
        m->looks[i] = (struct cd_lookup){.run = &run, .a = m->asks[i]};
        dns_resolve_txt(run.dns, m->asks[i]->name, cd_on_txt, &m->looks[i]);
    }
    if (--run.pending == 0) {
        loop_timer_set(run.loop, &run.done, 0);
    }
    loop_run(run.loop);
    loop_free(run.loop);
    return 0;
}

static void cd_main_free(struct cd_main *m)
{
    for (size_t i = 0; i < m->nasks; i++) {
        cd_answer_free(m->asks[i]);
        free(m->looks[i].error);
    }
    free(m->hint);
    buf_free(&m->key);
    buf_free(&m->key2);
    buf_free(&m->rp_from);
    free(m);
}

int check_dns_main(int argc, char **argv)
{
    struct cd_opts o = {0};
    int rc = cd_parse(argc, argv, &o);
    if (rc != 0) {
        return rc == 1 ? 0 : rc;
    }
    struct cd_main *m = calloc(1, sizeof *m);
    if (!m) {
        fprintf(stderr, "ringmail check-dns: out of memory\n");
        return 1;
    }
    m->key = (buf_t)BUF_INIT;
    m->key2 = (buf_t)BUF_INIT;
    m->rp_from = (buf_t)BUF_INIT;
    rc = cd_setup(m, &o);
    if (rc == 0) {
        cd_names(m);
        rc = cd_lookup_all(m, o.resolver, o.timeout_ms);
    }
    if (rc == 0) {
        rc = check_dns_report(&m->in, stdout);
    }
    cd_main_free(m);
    return rc;
}
