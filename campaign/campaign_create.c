/*
 * campaign_create - `ringmail campaign create`: options checked, template
 * files read, the campaign row inserted. See campaign_cmd.h.
 *
 * A DKIM key is stored in the campaign row (the senders read it from
 * there); it is never printed, not even in an error.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "campaign/campaign_int.h"
#include "campaign/db.h"
#include "campaign/import.h"
#include "campaign/render.h"
#include "engine/buf.h"
#include "engine/num.h"
#include "engine/opt.h"

#define CAMPAIGN_FILE_MAX (32 * 1024 * 1024)

struct campaign_spec {
    const char *url, *name, *from, *subject;
    const char *text_path, *html_path, *list_unsubscribe, *feedback_id;
    const char *dkim_domain, *dkim_selector, *dkim_key_path;
};

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

/* The checks that need no database; NULL, or what is wrong. */
static const char *campaign_spec_problem(const struct campaign_spec *s)
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
    if (!campaign_bytes_within(s->from, 0x21, 0x7e)) {
        return "--from must be a bare ASCII address (an IDN domain as its A-label), "
               "without a display name or spaces";
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
            "           [--feedback-id ID] [--dkim-domain D --dkim-selector S --dkim-key FILE]\n"
            "\n"
            "  At least one of --text and --html (template files, UTF-8). Prints the new\n"
            "  campaign's id. Templates use {{name}} / {{name|default}} merge fields.\n"
            "       ringmail campaign list --db URL\n"
            "       ringmail campaign holds --db URL [ID]\n"
            "       ringmail campaign resume --db URL ID --isp NAME\n"
            "\n"
            "  holds: the ISPs the complaint guard holds ([feedback] complaint_pause), per\n"
            "  campaign. resume: lift one; a running send sees it within seconds.\n");
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
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char **dest[128] = {0};
    dest['d'] = &s->url, dest['n'] = &s->name, dest['f'] = &s->from, dest['s'] = &s->subject;
    dest['t'] = &s->text_path, dest['H'] = &s->html_path, dest['u'] = &s->list_unsubscribe;
    dest['i'] = &s->feedback_id, dest['D'] = &s->dkim_domain, dest['S'] = &s->dkim_selector;
    dest['k'] = &s->dkim_key_path;
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
    const char *problem = optind < argc ? "unexpected argument" : campaign_spec_problem(s);
    if (problem) {
        fprintf(stderr, "ringmail campaign create: %s\n", problem);
        return 2;
    }
    return -1;
}

/* Bodies and key read from their files: [0] text, [1] html, [2] key. */
static int campaign_read_files(const struct campaign_spec *s, buf_t files[3])
{
    const char *paths[3] = {s->text_path, s->html_path, s->dkim_key_path};
    char err[512];
    for (int i = 0; i < 3; i++) {
        if (paths[i] && campaign_read_file(paths[i], &files[i], err, sizeof err) < 0) {
            fprintf(stderr, "ringmail campaign create: %s\n", err);
            return 2;
        }
    }
    if (s->dkim_key_path && !campaign_looks_like_pem_key(buf_data(&files[2]))) {
        fprintf(stderr, "ringmail campaign create: --dkim-key %s: not a PEM private key\n",
                s->dkim_key_path);
        return 2;
    }
    return 0;
}

/* What send would refuse, refused now: the templates compile as send
 * compiles them, and the DKIM key loads (PEM armour with garbage inside
 * passes campaign_looks_like_pem_key, not the signer). */
static int campaign_check(const struct campaign_spec *s, buf_t files[3])
{
    struct render_spec spec = {
        .from_addr = s->from,
        .subject = s->subject,
        .text = s->text_path ? buf_data(&files[0]) : NULL,
        .html = s->html_path ? buf_data(&files[1]) : NULL,
        .list_unsubscribe = s->list_unsubscribe,
        .feedback_id = s->feedback_id,
    };
    char err[512];
    struct render_template *t = render_compile(&spec, err, sizeof err);
    if (!t) {
        fprintf(stderr, "ringmail campaign create: template %s\n", err);
        return 2;
    }
    render_free(t);
    if (!s->dkim_key_path) {
        return 0;
    }
    struct dkim_spec dk = {
        .domain = s->dkim_domain,
        .selector = s->dkim_selector,
        .key_pem = buf_data(&files[2]),
    };
    struct dkim_signer *signer = dkim_signer_new(&dk, err, sizeof err);
    if (!signer) {
        fprintf(stderr, "ringmail campaign create: --dkim-key %s: %s\n", s->dkim_key_path, err);
        return 2;
    }
    dkim_signer_free(signer);
    return 0;
}

static int campaign_insert(PGconn *c, const struct campaign_spec *s, buf_t files[3])
{
    const char *values[10] = {
        s->name,
        s->from,
        s->subject,
        s->text_path ? buf_data(&files[0]) : NULL,
        s->html_path ? buf_data(&files[1]) : NULL,
        s->list_unsubscribe,
        s->feedback_id,
        s->dkim_domain,
        s->dkim_selector,
        s->dkim_key_path ? buf_data(&files[2]) : NULL,
    };
    PGresult *r = pq.PQexecParams(
        c,
        "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body, html_body,"
        " list_unsubscribe, feedback_id, dkim_domain, dkim_selector, dkim_key)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        10, NULL, values, NULL, NULL, 0);
    if (!r || pq.PQresultStatus(r) != PGRES_TUPLES_OK || pq.PQntuples(r) != 1) {
        const char *m = r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(c);
        fprintf(stderr, "ringmail campaign create: %.*s\n", (int)strcspn(m, "\n"), m);
        pq.PQclear(r);
        return 1;
    }
    printf("%s\n", pq.PQgetvalue(r, 0, 0));
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
    buf_t files[3] = {BUF_INIT, BUF_INIT, BUF_INIT};
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
    if (rc == 0) {
        int bad = import_address_problem(c, s.from, err, sizeof err);
        if (bad != 0) {
            fprintf(stderr, "ringmail campaign create: %s%s\n", bad > 0 ? "--from: " : "", err);
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
    }
    if (c) {
        pq.PQfinish(c);
    }
    for (int i = 0; i < 3; i++) {
        buf_free(&files[i]);
    }
    return rc;
}
