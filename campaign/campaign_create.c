/*
 * campaign_create - `ringmail campaign create`: options checked, template
 * files read, the campaign row inserted. See campaign_cmd.h.
 *
 * Nothing is stored until everything checks out: the addresses (--from,
 * --reply-to) by the import's rules, every template compiled as send
 * compiles it, a syntax error named by option and position ("--subject:
 * unterminated merge field '{{first_name' at character 4", "--text
 * body.txt: ... at line 3, character 7"), the DKIM key loaded, --start-at
 * a time to come.
 *
 * --from takes "addr" or "Display Name <addr>" (the name stored apart, in
 * from_name, like --from-name; giving both is refused). --start-at stores
 * the time and makes the campaign `scheduled` (a `send` waits for it),
 * said on stderr: "campaign 7 scheduled for 2026-12-06 14:00:00 UTC".
 *
 * A DKIM key is stored in the campaign row (the senders read it from
 * there); it is never printed, not even in an error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "campaign/campaign_int.h"
#include "campaign/db.h"
#include "campaign/import.h"
#include "campaign/render.h"
#include "engine/buf.h"
#include "engine/num.h"
#include "engine/opt.h"
#include "pool/throttle.h"

#define CAMPAIGN_FILE_MAX (32 * 1024 * 1024)

struct campaign_spec {
    const char *url, *name, *from, *subject;
    const char *text_path, *html_path, *list_unsubscribe, *feedback_id;
    const char *dkim_domain, *dkim_selector, *dkim_key_path;
    const char *dkim_selector2, *dkim_key2_path; /* dual signing: a second key, same d= */
    const char *from_name, *reply_to, *start_at;
    /* from --from split: the address, and its display name (or --from-name) */
    char from_addr[320], from_display[400];
    int has_start;
    time_t start; /* --start-at */
};

/* ---- --from "Name <addr>" ---- */

/* The display name of "Name <addr>" (or "\"Name\" <addr>") into dst,
 * unquoted; "" when from is a bare address. The address into addr. -1
 * when it does not fit. */
static int campaign_split_from(const char *from, char *addr, size_t addrlen, char *dst,
                               size_t dstlen)
{
    size_t n = strlen(from);
    while (n > 0 && (from[n - 1] == ' ' || from[n - 1] == '\t')) {
        n--;
    }
    const char *lt = n > 0 && from[n - 1] == '>' ? memrchr(from, '<', n) : NULL;
    if (!lt) {
        dst[0] = '\0';
        return (size_t)snprintf(addr, addrlen, "%.*s", (int)n, from) < addrlen ? 0 : -1;
    }
    const char *a = lt + 1, *ae = from + n - 1;
    if ((size_t)snprintf(addr, addrlen, "%.*s", (int)(ae - a), a) >= addrlen) {
        return -1;
    }
    const char *p = from, *e = lt;
    while (p < e && (*p == ' ' || *p == '\t')) {
        p++;
    }
    while (e > p && (e[-1] == ' ' || e[-1] == '\t')) {
        e--;
    }
    if (e - p >= 2 && *p == '"' && e[-1] == '"') { /* a quoted string: \x is x */
        p++;
        e--;
    }
    size_t o = 0;
    for (; p < e && o + 1 < dstlen; p++) {
        if (*p == '\\' && p + 1 < e) {
            p++;
        }
        dst[o++] = *p;
    }
    dst[o] = '\0';
    return p == e ? 0 : -1;
}

/* ---- --start-at ---- */

/* n digits at *p into *v (the cursor moved past them): 0, or -1. */
static int campaign_digits(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9') {
            return -1;
        }
        *v = *v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    return 0;
}

/* ISO 8601: YYYY-MM-DD, then [T or space]HH:MM[:SS[.fraction]], then Z,
 * +HH[:MM] or -HH[:MM]; no zone is UTC. 0, or -1. */
static int campaign_parse_iso(const char *s, time_t *out)
{
    const char *p = s;
    struct tm tm = {0};
    int y, mo, d, h = 0, mi = 0, sec = 0, oh = 0, om = 0, sign = 0;
    if (campaign_digits(&p, 4, &y) < 0 || *p++ != '-' || campaign_digits(&p, 2, &mo) < 0 ||
        *p++ != '-' || campaign_digits(&p, 2, &d) < 0) {
        return -1;
    }
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (campaign_digits(&p, 2, &h) < 0 || *p++ != ':' || campaign_digits(&p, 2, &mi) < 0) {
            return -1;
        }
        if (*p == ':') {
            p++;
            if (campaign_digits(&p, 2, &sec) < 0) {
                return -1;
            }
            if (*p == '.' || *p == ',') {
                p++;
                if (*p < '0' || *p > '9') {
                    return -1;
                }
                while (*p >= '0' && *p <= '9') {
                    p++; /* a fraction of a second: dropped */
                }
            }
        }
        while (*p == ' ') {
            p++;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            sign = *p++ == '-' ? -1 : 1;
            if (campaign_digits(&p, 2, &oh) < 0) {
                return -1;
            }
            if (*p == ':') {
                p++;
            }
            if (*p && campaign_digits(&p, 2, &om) < 0) {
                return -1;
            }
        }
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || sec > 59 || oh > 23 || om > 59) {
        return -1;
    }
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || tm.tm_mday != d || tm.tm_mon != mo - 1) {
        return -1; /* February 30th: timegm moved it */
    }
    *out = t - sign * (oh * 3600 + om * 60);
    return 0;
}

/* "2026-12-06 14:00:00 UTC" */
static void campaign_utc(time_t t, char *dst, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(dst, n, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* --start-at: "+10m" from now, or an ISO 8601 date and time; NULL, or what
 * is wrong (in buf). */
static const char *campaign_start_problem(struct campaign_spec *s, char *buf, size_t n)
{
    time_t now = time(NULL);
    const char *v = s->start_at;
    if (v[0] == '+') {
        uint64_t ms;
        char why[200];
        if (throttle_duration_parse(v + 1, &ms, why, sizeof why) < 0 ||
            ms > 100ull * 366 * 86400000) {
            snprintf(buf, n, "--start-at %s: a delay is +10m, +2h or +1d", v);
            return buf;
        }
        s->start = now + (time_t)((ms + 999) / 1000);
    } else if (campaign_parse_iso(v, &s->start) < 0) {
        snprintf(buf, n,
                 "--start-at %s: not a time (\"2026-12-06 14:00\" in UTC, "
                 "\"2026-12-06T14:00:00+01:00\", or from now: +10m, +2h)",
                 v);
        return buf;
    }
    if (s->start < now) {
        char at[64], cur[64];
        campaign_utc(s->start, at, sizeof at);
        campaign_utc(now, cur, sizeof cur);
        snprintf(buf, n, "--start-at %s: that is in the past (%s; it is %s now)", v, at, cur);
        return buf;
    }
    s->has_start = 1;
    return NULL;
}

/* ---- checks ---- */

/* The whole file in out, NUL-terminated. PostgreSQL text cannot hold a NUL
 * byte, so a file with one is refused here rather than cut short there. */
static int campaign_read_file(const char *path, buf_t *out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t got;
    do {
        char *w = buf_reserve(out, 65536);
        got = fread(w, 1, 65536, f);
        buf_commit(out, got);
    } while (got == 65536 && buf_len(out) <= CAMPAIGN_FILE_MAX);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: read error", path);
        return -1;
    }
    if (buf_len(out) > CAMPAIGN_FILE_MAX) {
        snprintf(err, errlen, "%s: larger than %d MiB", path, CAMPAIGN_FILE_MAX >> 20);
        return -1;
    }
    if (memchr(buf_data(out), '\0', buf_len(out))) {
        snprintf(err, errlen, "%s: contains a NUL byte (not a text file?)", path);
        return -1;
    }
    buf_append(out, "", 1);
    return 0;
}

/* 1 when every byte of s is in [lo, hi]. */
static int campaign_bytes_within(const char *s, unsigned char lo, unsigned char hi)
{
    for (; *s; s++) {
        if ((unsigned char)*s < lo || (unsigned char)*s > hi) {
            return 0;
        }
    }
    return 1;
}

/* 1 when s is made of letters, digits and the characters of extra only. */
static int campaign_name_chars(const char *s, const char *extra)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr(extra, ch))) {
            return 0;
        }
    }
    return 1;
}

/* --from into from_addr and from_display (with --from-name); NULL, or what
 * is wrong (in buf). */
static const char *campaign_from_problem(struct campaign_spec *s, char *buf, size_t n)
{
    if (campaign_split_from(s->from, s->from_addr, sizeof s->from_addr, s->from_display,
                            sizeof s->from_display) < 0) {
        return "--from is too long";
    }
    if (!campaign_bytes_within(s->from_addr, 0x21, 0x7e) || !s->from_addr[0]) {
        return "--from must be an ASCII address (an IDN domain as its A-label), alone or as "
               "\"Display Name <addr>\"";
    }
    if (s->from_display[0] && s->from_name) {
        snprintf(buf, n,
                 "--from has a display name (\"%s\") and --from-name gives one too: give the "
                 "name once",
                 s->from_display);
        return buf;
    }
    if (s->from_name) {
        if ((size_t)snprintf(s->from_display, sizeof s->from_display, "%s", s->from_name) >=
            sizeof s->from_display) {
            return "--from-name is too long";
        }
        if (!s->from_name[0]) {
            return "--from-name is empty";
        }
    }
    if (strpbrk(s->from_display, "\r\n") ||
        !render_utf8_ok(s->from_display, strlen(s->from_display))) {
        return s->from_name ? "--from-name must be one line of UTF-8 text"
                            : "--from: the display name must be one line of UTF-8 text";
    }
    return NULL;
}

/* The checks that need no database; NULL, or what is wrong (maybe in buf). */
static const char *campaign_spec_problem(struct campaign_spec *s, char *buf, size_t n)
{
    int dkim = !!s->dkim_domain + !!s->dkim_selector + !!s->dkim_key_path;
    if (!s->url) {
        return "--db URL is required";
    }
    if (!s->name || !*s->name) {
        return "--name is required";
    }
    if (!s->from || !*s->from) {
        return "--from ADDR is required";
    }
    const char *from = campaign_from_problem(s, buf, n);
    if (from) {
        return from;
    }
    if (s->reply_to && (!*s->reply_to || !campaign_bytes_within(s->reply_to, 0x21, 0x7e))) {
        return "--reply-to must be a bare ASCII address (an IDN domain as its A-label)";
    }
    if (!s->subject || !*s->subject) {
        return "--subject is required";
    }
    if (strpbrk(s->subject, "\r\n")) {
        return "--subject must not contain a line break";
    }
    if (!s->text_path && !s->html_path) {
        return "at least one of --text FILE and --html FILE is required";
    }
    if (s->list_unsubscribe && (strpbrk(s->list_unsubscribe, "\r\n") ||
                                (strncasecmp(s->list_unsubscribe, "https://", 8) != 0 &&
                                 strncasecmp(s->list_unsubscribe, "mailto:", 7) != 0))) {
        return "--list-unsubscribe must be an https:// or mailto: URL template on one line";
    }
    if (s->feedback_id &&
        (!*s->feedback_id || !campaign_bytes_within(s->feedback_id, 0x20, 0x7e))) {
        return "--feedback-id must be printable ASCII";
    }
    if (dkim != 0 && dkim != 3) {
        return "--dkim-domain, --dkim-selector and --dkim-key go together";
    }
    if (dkim && (!*s->dkim_domain || !campaign_name_chars(s->dkim_domain, "-."))) {
        return "--dkim-domain must be a domain name (letters, digits, '-', '.'; an IDN as "
               "its A-label)";
    }
    if (dkim && (!*s->dkim_selector || !campaign_name_chars(s->dkim_selector, "-._"))) {
        return "--dkim-selector must be letters, digits, '-', '_' or '.'";
    }
    if (!s->dkim_selector2 != !s->dkim_key2_path) {
        return "--dkim-selector2 and --dkim-key2 go together";
    }
    if (s->dkim_selector2 && !dkim) {
        return "--dkim-selector2 and --dkim-key2 sign a second time: they need --dkim-domain, "
               "--dkim-selector and --dkim-key";
    }
    if (s->dkim_selector2 &&
        (!*s->dkim_selector2 || !campaign_name_chars(s->dkim_selector2, "-._"))) {
        return "--dkim-selector2 must be letters, digits, '-', '_' or '.'";
    }
    if (s->dkim_selector2 && strcasecmp(s->dkim_selector2, s->dkim_selector) == 0) {
        return "--dkim-selector2 must differ from --dkim-selector (each key has its own DNS "
               "record)";
    }
    if (s->start_at) {
        return campaign_start_problem(s, buf, n);
    }
    return NULL;
}

/* A PEM private key, by its armour; the signer parses it for real. */
static int campaign_looks_like_pem_key(const char *pem)
{
    const char *begin = strstr(pem, "-----BEGIN ");
    const char *end = begin ? strstr(begin, "-----END ") : NULL;
    const char *label = begin ? strstr(begin, "PRIVATE KEY-----") : NULL;
    return begin && end && label && label < end;
}

void campaign_create_usage(FILE *f)
{
    fprintf(f,
            "usage: ringmail campaign create --db URL --name NAME --from ADDR --subject TEMPLATE\n"
            "           [--text FILE] [--html FILE] [--list-unsubscribe URL_TEMPLATE]\n"
            "           [--from-name NAME] [--reply-to ADDR] [--start-at TIME]\n"
            "           [--feedback-id ID] [--dkim-domain D --dkim-selector S --dkim-key FILE\n"
            "            [--dkim-selector2 S2 --dkim-key2 FILE2]]\n"
            "\n"
            "  At least one of --text and --html (template files, UTF-8). Prints the new\n"
            "  campaign's id. Templates use {{name}} / {{name|default}} merge fields,\n"
            "  checked now. --from \"Acme News <news@acme.test>\" or --from-name gives the\n"
            "  sender's display name. --start-at \"2026-12-06 14:00\" (UTC unless it says\n"
            "  Z or +01:00) or +2h: the campaign is scheduled; a send waits for the time.\n"
            "  --dkim-selector2/--dkim-key2: every message signed twice, same d= (typically\n"
            "  RSA first, Ed25519 second); the keys are read by the signer processes only.\n"
            "       ringmail campaign test --db URL ID --to ADDR [--to ADDR ...]\n"
            "           [--vars JSON | --as RECIPIENT] [send options: --config --relay ...]\n"
            "       ringmail campaign preview --db URL ID --to ADDR --out FILE.eml\n"
            "           [--vars JSON | --as RECIPIENT] [--config FILE]\n"
            "       ringmail campaign list --db URL\n"
            "       ringmail campaign holds --db URL [ID]\n"
            "\n"
            "  test: the campaign's message, exactly as its recipients get it, to seed\n"
            "  addresses (one attempt each, recorded in ringmail.seed_delivery, the\n"
            "  campaign untouched). preview: that message written to a file.\n"
            "  holds: the ISPs held for a campaign: by the complaint guard ([feedback]\n"
            "  complaint_pause) or by an operator (pause --isp); resume --isp lifts one.\n");
}

static int campaign_create_parse(int argc, char **argv, struct campaign_spec *s)
{
    static const struct option longopts[] = {
        {"db", required_argument, 0, 'd'},
        {"name", required_argument, 0, 'n'},
        {"from", required_argument, 0, 'f'},
        {"subject", required_argument, 0, 's'},
        {"text", required_argument, 0, 't'},
        {"html", required_argument, 0, 'H'},
        {"list-unsubscribe", required_argument, 0, 'u'},
        {"feedback-id", required_argument, 0, 'i'},
        {"dkim-domain", required_argument, 0, 'D'},
        {"dkim-selector", required_argument, 0, 'S'},
        {"dkim-key", required_argument, 0, 'k'},
        {"dkim-selector2", required_argument, 0, 'T'},
        {"dkim-key2", required_argument, 0, 'K'},
        {"from-name", required_argument, 0, 'N'},
        {"reply-to", required_argument, 0, 'r'},
        {"start-at", required_argument, 0, 'a'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char **dest[128] = {0};
    dest['d'] = &s->url, dest['n'] = &s->name, dest['f'] = &s->from, dest['s'] = &s->subject;
    dest['t'] = &s->text_path, dest['H'] = &s->html_path, dest['u'] = &s->list_unsubscribe;
    dest['i'] = &s->feedback_id, dest['D'] = &s->dkim_domain, dest['S'] = &s->dkim_selector;
    dest['k'] = &s->dkim_key_path, dest['N'] = &s->from_name, dest['r'] = &s->reply_to;
    dest['a'] = &s->start_at, dest['T'] = &s->dkim_selector2, dest['K'] = &s->dkim_key2_path;
    int ch;
    optind = 1;
    while ((ch = opt_getopt(argc, argv, longopts)) != -1) {
        if (ch == 'h') {
            campaign_create_usage(stdout);
            return 0;
        }
        if (ch <= 0 || ch >= 128 || !dest[ch]) {
            campaign_create_usage(stderr);
            return 2;
        }
        *dest[ch] = optarg;
    }
    char buf[512];
    const char *problem =
        optind < argc ? "unexpected argument" : campaign_spec_problem(s, buf, sizeof buf);
    if (problem) {
        fprintf(stderr, "ringmail campaign create: %s\n", problem);
        return 2;
    }
    return -1;
}

#define CAMPAIGN_FILES 4

/* Bodies and keys read from their files: [0] text, [1] html, [2] key, [3] key2. */
static int campaign_read_files(const struct campaign_spec *s, buf_t files[CAMPAIGN_FILES])
{
    const char *paths[CAMPAIGN_FILES] = {s->text_path, s->html_path, s->dkim_key_path,
                                         s->dkim_key2_path};
    char err[512];
    for (int i = 0; i < CAMPAIGN_FILES; i++) {
        if (paths[i] && campaign_read_file(paths[i], &files[i], err, sizeof err) < 0) {
            fprintf(stderr, "ringmail campaign create: %s\n", err);
            return 2;
        }
    }
    for (int i = 2; i < CAMPAIGN_FILES; i++) {
        if (paths[i] && !campaign_looks_like_pem_key(buf_data(&files[i]))) {
            fprintf(stderr, "ringmail campaign create: --dkim-key%s %s: not a PEM private key\n",
                    i == 3 ? "2" : "", paths[i]);
            return 2;
        }
    }
    return 0;
}

/* What send would refuse, refused now: the templates compile as send
 * compiles them, and the DKIM key loads (PEM armour with garbage inside
 * passes campaign_looks_like_pem_key, not the signer). */
/* render_compile's reason, its template named by its option: "subject: x"
 * is "--subject: x", "text: x" is "--text FILE: x". */
static void campaign_template_error(const struct campaign_spec *s, const char *err)
{
    const struct {
        const char *what, *option, *value;
    } names[] = {
        {"subject", "--subject", NULL},
        {"text", "--text", s->text_path},
        {"html", "--html", s->html_path},
        {"list_unsubscribe", "--list-unsubscribe", NULL},
        {"from_addr", "--from", NULL},
        {"from_name", s->from_name ? "--from-name" : "--from", NULL},
        {"reply_to", "--reply-to", NULL},
        {"feedback_id", "--feedback-id", NULL},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t n = strlen(names[i].what);
        if (strncmp(err, names[i].what, n) == 0 && err[n] == ':') {
            fprintf(stderr, "ringmail campaign create: %s%s%s%s\n", names[i].option,
                    names[i].value ? " " : "", names[i].value ? names[i].value : "", err + n);
            return;
        }
    }
    fprintf(stderr, "ringmail campaign create: %s\n", err);
}

/* campaign_check_key - a key loads as the signer will load it (RSA of 1024
 * to 8192 bits or Ed25519): 0, or 2 (said) */
static int campaign_check_key(const struct campaign_spec *s, const char *selector,
                              const char *option, const char *path, buf_t *pem)
{
    struct dkim_spec dk = {
        .domain = s->dkim_domain,
        .selector = selector,
        .key_pem = buf_cstr(pem),
    };
    char err[512];
    struct dkim_signer *signer = dkim_signer_new(&dk, err, sizeof err);
    if (!signer) {
        fprintf(stderr, "ringmail campaign create: %s %s: %s\n", option, path, err);
        return 2;
    }
    dkim_signer_free(signer);
    return 0;
}

static int campaign_check(const struct campaign_spec *s, buf_t files[CAMPAIGN_FILES])
{
    struct render_spec spec = {
        .from_addr = s->from_addr,
        .from_name = s->from_display[0] ? s->from_display : NULL,
        .reply_to = s->reply_to,
        .subject = s->subject,
        .text = s->text_path ? buf_data(&files[0]) : NULL,
        .html = s->html_path ? buf_data(&files[1]) : NULL,
        .list_unsubscribe = s->list_unsubscribe,
        .feedback_id = s->feedback_id,
    };
    char err[512];
    struct render_template *t = render_compile(&spec, err, sizeof err);
    if (!t) {
        campaign_template_error(s, err);
        return 2;
    }
    render_free(t);
    int rc = s->dkim_key_path ? campaign_check_key(s, s->dkim_selector, "--dkim-key",
                                                   s->dkim_key_path, &files[2])
                              : 0;
    if (rc == 0 && s->dkim_key2_path) {
        rc = campaign_check_key(s, s->dkim_selector2, "--dkim-key2", s->dkim_key2_path, &files[3]);
    }
    return rc;
}

static int campaign_insert(PGconn *c, const struct campaign_spec *s, buf_t files[CAMPAIGN_FILES])
{
    char start[32];
    snprintf(start, sizeof start, "%lld", (long long)s->start);
    const char *values[15] = {
        s->name,
        s->from_addr,
        s->subject,
        s->text_path ? buf_data(&files[0]) : NULL,
        s->html_path ? buf_data(&files[1]) : NULL,
        s->list_unsubscribe,
        s->feedback_id,
        s->dkim_domain,
        s->dkim_selector,
        s->dkim_key_path ? buf_data(&files[2]) : NULL,
        s->from_display[0] ? s->from_display : NULL,
        s->reply_to,
        s->dkim_selector2,
        s->dkim_key2_path ? buf_data(&files[3]) : NULL,
        start,
    };
    /* status: the default (draft), or scheduled with its time */
    PGresult *r = pq.PQexecParams(
        c,
        s->has_start
            ? "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body, html_body,"
              " list_unsubscribe, feedback_id, dkim_domain, dkim_selector, dkim_key, from_name,"
              " reply_to, dkim_selector2, dkim_key2, start_at, status) VALUES ($1, $2, $3, $4,"
              " $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, to_timestamp($15::bigint),"
              " 'scheduled') RETURNING id"
            : "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body, html_body,"
              " list_unsubscribe, feedback_id, dkim_domain, dkim_selector, dkim_key, from_name,"
              " reply_to, dkim_selector2, dkim_key2) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
              " $10, $11, $12, $13, $14) RETURNING id",
        s->has_start ? 15 : 14, NULL, values, NULL, NULL, 0);
    if (!r || pq.PQresultStatus(r) != PGRES_TUPLES_OK || pq.PQntuples(r) != 1) {
        const char *m = r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(c);
        fprintf(stderr, "ringmail campaign create: %.*s\n", (int)strcspn(m, "\n"), m);
        pq.PQclear(r);
        return 1;
    }
    printf("%s\n", pq.PQgetvalue(r, 0, 0));
    if (s->has_start) {
        char at[64];
        campaign_utc(s->start, at, sizeof at);
        fprintf(stderr, "campaign %s scheduled for %s\n", pq.PQgetvalue(r, 0, 0), at);
    }
    pq.PQclear(r);
    return 0;
}

int campaign_create(int argc, char **argv)
{
    struct campaign_spec s = {0};
    int rc = campaign_create_parse(argc, argv, &s);
    if (rc >= 0) {
        return rc;
    }
    buf_t files[CAMPAIGN_FILES] = {BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT};
    rc = campaign_read_files(&s, files);
    char err[1024];
    PGconn *c = NULL;
    if (rc == 0 && !(c = db_connect_current(s.url, err, sizeof err))) {
        fprintf(stderr, "ringmail campaign create: %s\n", err);
        rc = 1;
    }
    if (rc == 0 && db_exec(c, "SET client_encoding = 'UTF8'", err, sizeof err) < 0) {
        fprintf(stderr, "ringmail campaign create: %s\n", err);
        rc = 1;
    }
    const char *addrs[2][2] = {{"--from", s.from_addr}, {"--reply-to", s.reply_to}};
    for (int i = 0; i < 2 && rc == 0 && addrs[i][1]; i++) {
        int bad = import_address_problem(c, addrs[i][1], err, sizeof err);
        if (bad != 0) {
            fprintf(stderr, "ringmail campaign create: %s%s%s\n", bad > 0 ? addrs[i][0] : "",
                    bad > 0 ? ": " : "", err);
            rc = bad > 0 ? 2 : 1;
        }
    }
    if (rc == 0) {
        rc = campaign_check(&s, files); /* after --from: the database's reason is the better one */
    }
    if (rc == 0) {
        rc = campaign_insert(c, &s, files);
    }
    if (rc == 0) { /* the DKIM record to publish, and d= against the From domain */
        dkim_create_advice(stderr, s.from, s.dkim_domain, s.dkim_selector,
                           s.dkim_key_path ? buf_data(&files[2]) : NULL);
        if (s.dkim_key2_path) { /* the second record; the alignment was said above */
            dkim_create_advice(stderr, NULL, s.dkim_domain, s.dkim_selector2, buf_data(&files[3]));
        }
    }
    if (c) {
        pq.PQfinish(c);
    }
    for (int i = 0; i < CAMPAIGN_FILES; i++) {
        buf_free(&files[i]);
    }
    return rc;
}
