/*
 * tlsrpt_report - the pure parts of `ringmail tlsrpt`: the TLSRPT record,
 * the RFC 8460 JSON report, its gzip, its file name and its message. See
 * tlsrpt.h.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <zlib.h>

#include "campaign/tlsrpt.h"
#include "engine/crypto.h"

/* ---------------------------------------------------------------- the record */

static int tr_space(char c)
{
    return c == ' ' || c == '\t';
}

/* [p, end) with the blanks around it cut. */
static void tr_trim(const char **p, const char **end)
{
    while (*p < *end && tr_space(**p)) {
        (*p)++;
    }
    while (*end > *p && tr_space((*end)[-1])) {
        (*end)--;
    }
}

/* "v=TLSRPTv1" as the record's first field (RFC 8460 3: the version comes first). */
static int tr_is_tlsrpt(const char *rec)
{
    const char *end = rec + strcspn(rec, ";"), *p = rec;
    tr_trim(&p, &end);
    return end - p == 10 && strncmp(p, "v=TLSRPTv1", 10) == 0;
}

/* The rua field's URIs (comma-separated) that are mailto: or https: into out. */
static void tr_rua(const char *v, const char *vend, struct tlsrpt_record *out)
{
    while (v < vend) {
        const char *e = memchr(v, ',', (size_t)(vend - v));
        const char *u = v, *uend = e ? e : vend;
        v = e ? e + 1 : vend;
        tr_trim(&u, &uend);
        size_t len = (size_t)(uend - u);
        int ok = (len > 7 && strncasecmp(u, "mailto:", 7) == 0) ||
                 (len > 8 && strncasecmp(u, "https://", 8) == 0);
        if (ok && len < TLSRPT_RUA_LEN && out->nrua < TLSRPT_RUA_MAX) {
            memcpy(out->rua[out->nrua], u, len);
            out->rua[out->nrua++][len] = '\0';
        }
    }
}

int tlsrpt_record_parse(const char *const *recs, size_t n, struct tlsrpt_record *out, char *why,
                        size_t whylen)
{
    memset(out, 0, sizeof *out);
    const char *rec = NULL;
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        if (tr_is_tlsrpt(recs[i])) {
            rec = recs[i];
            found++;
        }
    }
    if (found != 1) {
        if (found == 0) {
            snprintf(why, whylen, "no TLSRPTv1 record");
        } else {
            snprintf(why, whylen, "%zu TLSRPTv1 records (RFC 8460 3: exactly one)", found);
        }
        return 0;
    }
    for (const char *p = rec; *p;) {
        const char *end = p + strcspn(p, ";"), *f = p;
        p = *end ? end + 1 : end;
        tr_trim(&f, &end);
        if (end - f > 4 && strncasecmp(f, "rua", 3) == 0) {
            const char *eq = f + 3;
            while (eq < end && tr_space(*eq)) {
                eq++;
            }
            if (eq < end && *eq == '=') {
                tr_rua(eq + 1, end, out);
            }
        }
    }
    if (out->nrua == 0) {
        snprintf(why, whylen, "no mailto: or https: rua");
        return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- the JSON */

static void tr_iso(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The address of "ip:port" or "[ip6]:port" into out ("" when none). */
static void tr_peer_ip(const char *peer, char *out, size_t cap)
{
    const char *p = peer, *end;
    if (*p == '[') {
        p++;
        end = strchr(p, ']');
    } else {
        end = strrchr(p, ':');
    }
    size_t len = end ? (size_t)(end - p) : strlen(p);
    snprintf(out, cap, "%.*s", (int)len, p);
}

/* The policy's text as lines (RFC 8460 4.3: policy-string, one element a
 * line), and for sts its mx patterns. */
static void tr_policy_lines(const char *text, int sts, json_t *lines, json_t *mx)
{
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, "\n");
        size_t l = len;
        while (l > 0 && (p[l - 1] == '\r' || tr_space(p[l - 1]))) {
            l--;
        }
        if (l > 0) {
            json_array_append_new(lines, json_stringn(p, l));
        }
        if (sts && l > 3 && strncmp(p, "mx:", 3) == 0) {
            const char *v = p + 3, *vend = p + l;
            tr_trim(&v, &vend);
            json_array_append_new(mx, json_stringn(v, (size_t)(vend - v)));
        }
        p += len + (p[len] == '\n');
    }
}

/* One policy object: the first group of it decides its description. */
static json_t *tr_policy_new(const struct tlsrpt_meta *m, const struct tlsrpt_group *g)
{
    json_t *pol = json_object();
    json_object_set_new(pol, "policy-type", json_string(g->policy_type));
    int sts = strcmp(g->policy_type, "sts") == 0;
    if (g->policy_text) {
        json_t *lines = json_array(), *mx = json_array();
        tr_policy_lines(g->policy_text, sts, lines, mx);
        json_object_set_new(pol, "policy-string", lines);
        if (sts && json_array_size(mx) > 0) {
            json_object_set(pol, "mx-host", mx);
        }
        json_decref(mx);
    }
    json_object_set_new(pol, "policy-domain", json_string(m->domain));
    json_t *item = json_object();
    json_object_set_new(item, "policy", pol);
    json_object_set_new(item, "summary", json_object());
    json_object_set_new(item, "failure-details", json_array());
    return item;
}

static void tr_add_count(json_t *obj, const char *key, unsigned long n)
{
    json_t *v = json_object_get(obj, key);
    json_int_t have = v ? json_integer_value(v) : 0;
    json_object_set_new(obj, key, json_integer(have + (json_int_t)n));
}

static json_t *tr_failure(const struct tlsrpt_group *g)
{
    json_t *f = json_object();
    char ip[128];
    json_object_set_new(f, "result-type", json_string(g->result));
    if (g->source[0]) {
        json_object_set_new(f, "sending-mta-ip", json_string(g->source));
    }
    if (g->mx[0]) {
        json_object_set_new(f, "receiving-mx-hostname", json_string(g->mx));
    }
    tr_peer_ip(g->peer, ip, sizeof ip);
    if (ip[0]) {
        json_object_set_new(f, "receiving-ip", json_string(ip));
    }
    json_object_set_new(f, "failed-session-count", json_integer((json_int_t)g->sessions));
    return f;
}

/* 1 when a and b are under the same policy. */
static int tr_same_policy(const struct tlsrpt_group *a, const struct tlsrpt_group *b)
{
    return strcmp(a->policy_type, b->policy_type) == 0 && strcmp(a->policy_id, b->policy_id) == 0;
}

void tlsrpt_json(const struct tlsrpt_meta *m, const struct tlsrpt_group *g, size_t n, buf_t *out)
{
    char begin[32], end[32];
    tr_iso(m->begin, begin);
    tr_iso(m->begin + 86399, end);
    json_t *root = json_object(), *range = json_object(), *policies = json_array();
    json_object_set_new(root, "organization-name", json_string(m->org));
    json_object_set_new(range, "start-datetime", json_string(begin));
    json_object_set_new(range, "end-datetime", json_string(end));
    json_object_set_new(root, "date-range", range);
    json_object_set_new(root, "contact-info", json_string(m->contact));
    json_object_set_new(root, "report-id", json_string(m->report_id));
    json_t **items = calloc(n ? n : 1, sizeof *items); /* items[i]: g[i]'s policy (borrowed) */
    if (!items) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i && !items[i]; j++) {
            items[i] = tr_same_policy(&g[j], &g[i]) ? items[j] : NULL;
        }
        if (!items[i]) {
            items[i] = tr_policy_new(m, &g[i]);
            json_array_append_new(policies, items[i]);
        }
        json_t *item = items[i];
        json_t *summary = json_object_get(item, "summary");
        tr_add_count(summary, "total-successful-session-count", g[i].result[0] ? 0 : g[i].sessions);
        tr_add_count(summary, "total-failure-session-count", g[i].result[0] ? g[i].sessions : 0);
        if (g[i].result[0]) {
            json_array_append_new(json_object_get(item, "failure-details"), tr_failure(&g[i]));
        }
    }
    free(items);
    size_t k;
    json_t *item;
    json_array_foreach(policies, k, item)
    {
        if (json_array_size(json_object_get(item, "failure-details")) == 0) {
            json_object_del(item, "failure-details");
        }
    }
    json_object_set_new(root, "policies", policies);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text) {
        abort();
    }
    buf_append_str(out, text);
    buf_append(out, "\n", 1);
    free(text);
    json_decref(root);
}

/* ---------------------------------------------------------------- gzip, names, mail */

int tlsrpt_gzip(const void *data, size_t len, buf_t *out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    /* windowBits 31: 15 with a gzip header and trailer (RFC 1952) */
    if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        return -1;
    }
    uLong cap = deflateBound(&z, (uLong)len);
    unsigned char *w = (unsigned char *)buf_reserve(out, cap);
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)len;
    z.next_out = w;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    size_t got = cap - z.avail_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        return -1;
    }
    buf_commit(out, got);
    return 0;
}

void tlsrpt_file_name(const struct tlsrpt_meta *m, char *out, size_t cap)
{
    snprintf(out, cap, "%s!%s!%lld!%lld.json.gz", m->submitter, m->domain, (long long)m->begin,
             (long long)(m->begin + 86399));
}

void tlsrpt_report_id(const char *day, const char *domain, const char *submitter, char *out,
                      size_t cap)
{
    char compact[16];
    size_t k = 0;
    for (const char *p = day; *p && k < sizeof compact - 1; p++) {
        if (*p != '-') {
            compact[k++] = *p;
        }
    }
    compact[k] = '\0';
    snprintf(out, cap, "%s.%s@%s", compact, domain, submitter);
}

/* Base64 lines of 76 characters (RFC 2045 6.8). */
static void tr_base64_lines(buf_t *out, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t off = 0; off < len; off += 57) {
        size_t n = len - off < 57 ? len - off : 57;
        crypto_base64_append(out, p + off, n);
        buf_append(out, "\r\n", 2);
    }
}

void tlsrpt_mail(const struct tlsrpt_meta *m, const char *from, const char *to,
                 const char *file_name, const void *gz, size_t gzlen, buf_t *out)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    unsigned char rnd[12];
    char token[24], boundary[64];
    crypto_random(rnd, sizeof rnd);
    crypto_base64_encode(token, rnd, sizeof rnd); /* 16 characters */
    for (char *c = token; *c; c++) {
        *c = (*c == '+' || *c == '/') ? 'x' : *c;
    }
    snprintf(boundary, sizeof boundary, "tlsrpt-%s", token);
    buf_appendf(out, "From: %s\r\nTo: %s\r\n", from, to);
    buf_appendf(out, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday % 7],
                tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
    buf_appendf(out, "Message-ID: <%s.%s>\r\n", token, m->report_id);
    buf_appendf(out, "Subject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n", m->domain,
                m->submitter, m->report_id);
    buf_appendf(out, "TLS-Report-Domain: %s\r\nTLS-Report-Submitter: %s\r\n", m->domain,
                m->submitter);
    /* RFC 8689: a report about TLS failures must get through them */
    buf_append_str(out, "TLS-Required: No\r\nMIME-Version: 1.0\r\n");
    buf_appendf(out,
                "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
                " boundary=\"%s\"\r\n\r\n",
                boundary);
    buf_appendf(out,
                "This is a multipart message in MIME format.\r\n\r\n--%s\r\n"
                "Content-Type: text/plain; charset=\"us-ascii\"\r\n"
                "Content-Transfer-Encoding: 7bit\r\n\r\n"
                "This is an aggregate TLS report from %s for %s.\r\n\r\n",
                boundary, m->submitter, m->domain);
    buf_appendf(out,
                "--%s\r\nContent-Type: application/tlsrpt+gzip\r\n"
                "Content-Transfer-Encoding: base64\r\n"
                "Content-Disposition: attachment;\r\n filename=\"%s\"\r\n\r\n",
                boundary, file_name);
    tr_base64_lines(out, gz, gzlen);
    buf_appendf(out, "\r\n--%s--\r\n", boundary);
}
