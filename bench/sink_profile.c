/*
 * sink_profile - what a provider does, as its sender guidelines document
 * it: the built-in profiles (--profile gmail, outlook, yahoo, qq, 163,
 * legacy) and profile files (--profile-file, a JSON object). See
 * sink_int.h.
 *
 * A profile sets defaults before the other options, which override it:
 * STARTTLS required or not offered, the temporary and permanent replies
 * for tempfail@/permfail@ and the --defer-pct/--reject-pct shares ("{ip}"
 * in a reply is the client's address), the percentages, the latency, the
 * per-source rate and the connection limit.
 *
 * Diagnostics: "sink: unknown --profile NAME (want ...)" and "sink: bad
 * --profile-file FILE: REASON" on stderr (exit status 2).
 */
#include "bench/sink_int.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/num.h"

#define SINK_PROFILE_FILE_MAX 65536

/* What a provider does, as its sender guidelines document it: the
 * defaults a --profile or --profile-file sets before the other options. */
struct sink_profile {
    char name[SINK_PROFILE_NAME_MAX];
    int tls_required;                    /* MAIL before STARTTLS gets 530 5.7.0 */
    int starttls;                        /* STARTTLS offered (with a certificate) */
    char temp_reply[SINK_REPLY_MAX + 1]; /* tempfail@ and the --defer-pct share */
    char perm_reply[SINK_REPLY_MAX + 1]; /* permfail@ and the --reject-pct share */
    unsigned defer_pct, reject_pct, latency_ms, max_conns;
    unsigned latency_jitter_ms; /* each reply waits latency_ms + uniform [0, this] */
    unsigned source_rate;       /* messages per second per client address; over it: temp_reply */
};

struct sink_profile_builtin {
    const char *name, *summary;
    int tls_required, starttls;
    const char *temp_reply, *perm_reply;
    unsigned source_rate;
};

static const struct sink_profile_builtin sink_profiles[] = {
    {"gmail",
     "STARTTLS required (530 5.7.0 before it); 421 4.7.28 over 500 msgs/s per source; 550 5.1.1", 1,
     1,
     "421 4.7.28 [{ip}] Our system has detected an unusual rate of unsolicited mail originating "
     "from your IP address. To protect our users from spam, mail sent from your IP address has "
     "been temporarily rate limited.",
     "550 5.1.1 The email account that you tried to reach does not exist.", 500},
    {"outlook", "451 4.7.500 server busy (also over 500 msgs/s per source); 550 5.7.1 (S3150)", 0,
     1, "451 4.7.500 Server busy. Please try again later.",
     "550 5.7.1 Unfortunately, messages from [{ip}] weren't sent. Please contact your Internet "
     "service provider since part of their network is on our block list (S3150).",
     500},
    {"yahoo", "421 4.7.0 [TSS04] deferred (also over 500 msgs/s per source); 554 5.7.9 policy", 0,
     1,
     "421 4.7.0 [TSS04] Messages from {ip} temporarily deferred due to unexpected volume or "
     "user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
     "554 5.7.9 Message not accepted for policy reasons. See "
     "https://postmaster.yahooinc.com/error-codes",
     500},
    {"qq", "451 4.3.0 temporarily rejected; 550 mailbox not found", 0, 1,
     "451 4.3.0 Mail server temporarily rejected message.",
     "550 Mailbox not found or access denied", 0},
    {"163", "451 4.7.1 RP:TRC try again later; 550 user not found", 0, 1,
     "451 4.7.1 RP:TRC Try again later", "550 User not found or mailbox unavailable", 0},
    {"legacy", "no STARTTLS offered, accepts everything else", 0, 0, NULL, NULL, 0},
};

/* ---- profiles ---- */

static void sink_profile_defaults(struct sink_profile *p, const char *name)
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->starttls = 1;
    snprintf(p->temp_reply, sizeof p->temp_reply, "%s", sink_reply_tempfail);
    snprintf(p->perm_reply, sizeof p->perm_reply, "%s", sink_reply_reject);
}

static int sink_profile_builtin(const char *name, struct sink_profile *p)
{
    for (size_t i = 0; i < sizeof sink_profiles / sizeof sink_profiles[0]; i++) {
        const struct sink_profile_builtin *b = &sink_profiles[i];
        if (strcmp(name, b->name) == 0) {
            sink_profile_defaults(p, b->name);
            p->tls_required = b->tls_required;
            p->starttls = b->starttls;
            if (b->temp_reply) {
                snprintf(p->temp_reply, sizeof p->temp_reply, "%s", b->temp_reply);
            }
            if (b->perm_reply) {
                snprintf(p->perm_reply, sizeof p->perm_reply, "%s", b->perm_reply);
            }
            p->source_rate = b->source_rate;
            return 0;
        }
    }
    return -1;
}

/* False at even indexes, true at odd ones. */
static const char *const sink_bool_words[] = {"false", "true", "no", "yes", "off", "on", "0", "1"};

static int sink_parse_bool(const char *text, int *out)
{
    for (size_t i = 0; i < sizeof sink_bool_words / sizeof sink_bool_words[0]; i++) {
        if (strcasecmp(text, sink_bool_words[i]) == 0) {
            *out = (int)(i % 2);
            return 0;
        }
    }
    return -1;
}

/* One key of a profile file. NULL when it is set, else what was wrong. */
static const char *sink_profile_set(struct sink_profile *p, const char *key, const char *value)
{
    const struct {
        const char *key;
        unsigned long max;
        unsigned *field;
    } numbers[] = {{"defer_pct", 100, &p->defer_pct},
                   {"reject_pct", 100, &p->reject_pct},
                   {"latency_ms", UINT_MAX, &p->latency_ms},
                   {"latency_jitter_ms", UINT_MAX, &p->latency_jitter_ms},
                   {"source_rate", UINT_MAX, &p->source_rate},
                   {"max_conns", UINT_MAX, &p->max_conns}};
    unsigned long v;
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        if (strcmp(key, numbers[i].key) == 0) {
            if (num_parse_ulong(value, 0, numbers[i].max, &v) < 0) {
                return numbers[i].max == 100 ? "want a whole number 0..100"
                                             : "want a non-negative whole number";
            }
            *numbers[i].field = (unsigned)v;
            return NULL;
        }
    }
    if (strcmp(key, "name") == 0) {
        size_t n = strlen(value);
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)value[i] <= 0x20 || value[i] == 0x7f) {
                return "want a name without spaces or control characters";
            }
        }
        if (n == 0 || n >= sizeof p->name) {
            return "want a name of 1 to 63 characters";
        }
        memcpy(p->name, value, n + 1);
        return NULL;
    }
    if (strcmp(key, "tls_required") == 0 || strcmp(key, "starttls") == 0) {
        int *field = key[0] == 't' ? &p->tls_required : &p->starttls;
        return sink_parse_bool(value, field) < 0 ? "want true or false" : NULL;
    }
    if (strcmp(key, "temp_reply") == 0) {
        return sink_parse_reply(value, '4', p->temp_reply, sizeof p->temp_reply) < 0
                   ? "want \"4xx TEXT\", one line of at most 510 characters"
                   : NULL;
    }
    if (strcmp(key, "perm_reply") == 0) {
        return sink_parse_reply(value, '5', p->perm_reply, sizeof p->perm_reply) < 0
                   ? "want \"5xx TEXT\", one line of at most 510 characters"
                   : NULL;
    }
    return "unknown key (name, tls_required, starttls, temp_reply, perm_reply, defer_pct, "
           "reject_pct, latency_ms, latency_jitter_ms, source_rate, max_conns)";
}

/* JSON: one object of strings, booleans and integers. */
static int sink_profile_json(struct sink_profile *p, const char *text, size_t len, char *err,
                             size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root || !json_is_object(root)) {
        if (root) {
            snprintf(err, errlen, "want a JSON object");
        } else {
            snprintf(err, errlen, "line %d: %s", jerr.line, jerr.text);
        }
        json_decref(root);
        return -1;
    }
    const char *key;
    json_t *value;
    const char *why = NULL;
    json_object_foreach(root, key, value)
    {
        char number[32];
        const char *text_value = number;
        if (json_is_string(value)) {
            text_value = json_string_value(value);
        } else if (json_is_boolean(value)) {
            text_value = json_is_true(value) ? "true" : "false";
        } else if (json_is_integer(value)) {
            snprintf(number, sizeof number, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        } else {
            why = "want a string, a boolean or an integer";
        }
        if (why || (why = sink_profile_set(p, key, text_value)) != NULL) {
            snprintf(err, errlen, "key \"%s\": %s", key, why);
            break;
        }
    }
    json_decref(root);
    return why ? -1 : 0;
}

/* A JSON object (read with jansson) over p's defaults. */
static int sink_profile_load(struct sink_profile *p, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s", strerror(errno));
        return -1;
    }
    char *text = malloc(SINK_PROFILE_FILE_MAX + 1);
    size_t len = text ? fread(text, 1, SINK_PROFILE_FILE_MAX + 1, f) : 0;
    int failed = ferror(f);
    fclose(f);
    int rc = -1;
    if (!text || failed) {
        snprintf(err, errlen, "cannot read it");
    } else if (len > SINK_PROFILE_FILE_MAX) {
        snprintf(err, errlen, "larger than %d bytes", SINK_PROFILE_FILE_MAX);
    } else if (memchr(text, '\0', len)) {
        snprintf(err, errlen, "not a text file");
    } else {
        text[len] = '\0';
        const char *first = text + strspn(text, " \t\r\n");
        if (*first == '{') {
            rc = sink_profile_json(p, text, len, err, errlen);
        } else {
            snprintf(err, errlen, "not a JSON object (a profile file is JSON: {\"name\": ...})");
        }
    }
    free(text);
    return rc;
}

static void sink_profile_apply(struct sink_config *cfg, const struct sink_profile *p)
{
    snprintf(cfg->profile, sizeof cfg->profile, "%s", p->name);
    cfg->tls_required = p->tls_required;
    cfg->no_starttls = !p->starttls;
    memcpy(cfg->temp_reply, p->temp_reply, sizeof cfg->temp_reply);
    memcpy(cfg->perm_reply, p->perm_reply, sizeof cfg->perm_reply);
    memcpy(cfg->defer_reply, p->temp_reply, sizeof cfg->defer_reply);
    memcpy(cfg->reject_reply, p->perm_reply, sizeof cfg->reject_reply);
    cfg->defer_pct = p->defer_pct;
    cfg->reject_pct = p->reject_pct;
    cfg->latency_ms = p->latency_ms;
    cfg->latency_jitter_ms = p->latency_jitter_ms;
    cfg->source_rate = p->source_rate;
    cfg->max_conns = p->max_conns;
}

int sink_profile_select(struct sink_config *cfg, const char *name, const char *file)
{
    struct sink_profile p;
    sink_profile_defaults(&p, "file");
    if (name && sink_profile_builtin(name, &p) < 0) {
        fprintf(stderr, "sink: unknown --profile %s (want", name);
        for (size_t i = 0; i < sizeof sink_profiles / sizeof sink_profiles[0]; i++) {
            fprintf(stderr, " %s", sink_profiles[i].name);
        }
        fputs(")\n", stderr);
        return 2;
    }
    char err[256];
    if (file && sink_profile_load(&p, file, err, sizeof err) < 0) {
        fprintf(stderr, "sink: bad --profile-file %s: %s\n", file, err);
        return 2;
    }
    sink_profile_apply(cfg, &p);
    return 0;
}

void sink_profile_usage(FILE *f)
{
    for (size_t i = 0; i < sizeof sink_profiles / sizeof sink_profiles[0]; i++) {
        fprintf(f, "  %-8s %s\n", sink_profiles[i].name, sink_profiles[i].summary);
    }
}
