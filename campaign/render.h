/*
 * render - one RFC 5322 message per recipient from a campaign's templates
 *
 * A campaign's templates (subject, text, HTML, recipient display name,
 * List-Unsubscribe URL) are compiled once into segments; per recipient,
 * render_message merges the recipient's variables and writes the whole
 * message (CRLF line endings, no line over 998 octets): From, Reply-To, To,
 * Subject, Date, Message-ID, MIME-Version, List-Unsubscribe (+ One-Click
 * Post), Feedback-ID, the campaign's extra headers, then a text/plain,
 * text/html or multipart/alternative body in utf-8 with a transfer
 * encoding chosen by content (7bit, quoted-printable, base64), and a
 * DKIM-Signature in front when the campaign signs (two with dkim2: dual
 * signing). A key may be held by another process (dkim_spec.holder: the
 * signer processes of campaign/sign_client.h); when that holder fails,
 * render_message fails with scratch->sign_failed set: the recipient is not
 * to blame.
 *
 * Merge fields: {{name}} or {{name|default}} (spaces around either are
 * ignored; names are letters, digits, '_', '-', '.'). The default is used
 * when the variable is missing, null or empty; a field without a default
 * is then empty, and render_message names it in the scratch (missing[]).
 * {{email}} is the recipient address unless the variables define it.
 *
 * Escaping, by where the field stands (defaults too): inside a URL its
 * value is percent-encoded (RFC 3986: only unreserved characters, A-Z
 * a-z 0-9 - . _ ~, stay as they are; in the address of a mailto: URL '@'
 * too); elsewhere in the HTML part it is HTML-escaped; elsewhere it goes
 * as it is. Inside a URL means: anywhere in the List-Unsubscribe
 * templates; in the HTML part, in the value of an href or src attribute
 * after its first character (href="{{link}}" is a whole URL, HTML-escaped;
 * href="https://x.test/?e={{email}}" encodes the address); in the text
 * part, after "http://" or "https://" up to the next whitespace or one of
 * < > " '.
 *
 * Diagnostics: render_compile and render_message return a reason in err;
 * a template's syntax error names the template and where it is
 * ("subject: unterminated merge field '{{first_name' at character 4").
 * A recipient whose message cannot be rendered (a merge value with CR or
 * LF bound for a header, invalid UTF-8, a bad address) is the caller's to
 * mark `invalid`. A field rendered empty for want of a value is no error:
 * the scratch names it, the caller warns.
 */
#ifndef RINGMAIL_RENDER_H
#define RINGMAIL_RENDER_H

#include <stddef.h>
#include <time.h>

#include <jansson.h>

#include "engine/buf.h"
#include "campaign/dkim.h"

/* Per campaign. Strings are copied by render_compile. */
struct render_spec {
    const char *from_addr; /* news@example.com (required, ASCII) */
    const char *from_name; /* display name, UTF-8; NULL: none */
    const char *reply_to;  /* Reply-To address (plain, ASCII); NULL: none */
    const char *to_name;   /* template of the recipient's display name; NULL: none */
    const char *subject;   /* template (required) */
    const char *text;      /* template of the text/plain part; NULL: none */
    const char *html;      /* template of the text/html part; NULL: none (one is required) */
    /* template: "https://..." (adds One-Click Post; also "http://" to 127.0.0.1, [::1] or
     * localhost, to test with) or "mailto:..." */
    const char *list_unsubscribe;
    /* template of a second List-Unsubscribe URI, "mailto:..." (after the
     * first: "<https://...>, <mailto:...>"); NULL: none */
    const char *list_unsubscribe_mailto;
    const char *feedback_id;          /* constant Feedback-ID value; NULL: none */
    const char *const *extra_headers; /* NULL-terminated constant "Name: value" lines (ASCII) */
    const struct dkim_spec *dkim;     /* sign with this key; NULL: unsigned */
    const struct dkim_spec *dkim2;    /* and with this one too (dual signing); NULL: once */
    /* Tests: a fixed clock (Date and DKIM t=) and a fixed Message-ID ("<...@...>"). */
    time_t fixed_date;            /* 0: the clock */
    const char *fixed_message_id; /* NULL: "<20 random hex.unix time@from domain>" */
};

struct render_template;

/* The merge variable of [feedback]'s unsubscribe token (campaign/prepare.h
 * offers it). When the recipient has it, the Message-ID starts with
 * "u-TOKEN." so a complaint that returns only the Message-ID is matched. */
#define RENDER_TOKEN_VAR "ringmail_unsubscribe_token"

/* Where merge variables come from. lookup appends the value of name to
 * value and returns 1, or returns 0 when the recipient has no such variable. */
struct render_vars {
    int (*lookup)(void *ctx, const char *name, buf_t *value);
    void *ctx;
};

/* Variables from a JSON object (the recipient's jsonb column): strings as
 * they are, integers and reals in decimal, true/false; null, arrays and
 * objects count as missing. The object is borrowed. */
void render_vars_json(struct render_vars *vars, const json_t *object);

#define RENDER_MISSING_MAX 16

/* Reusable working memory for render_message: one per worker thread. */
struct render_scratch {
    buf_t value;   /* one merge value */
    buf_t field;   /* one merged header value */
    buf_t merged;  /* one merged body part */
    buf_t part[2]; /* text and HTML, line endings normalized */
    buf_t message; /* the message before its signature */
    /* After render_message (success or not): the merge fields without a
     * default that had no value for this recipient and rendered empty,
     * each name once, in the order met: the first RENDER_MISSING_MAX, and
     * missing_more when there were others. The names belong to the
     * template. */
    const char *missing[RENDER_MISSING_MAX];
    size_t nmissing;
    int missing_more;
    /* After render_message: 1 when it failed because the DKIM key holder
     * (the signer process) failed, which is no fault of the recipient: not
     * to be marked invalid, nor sent unsigned. */
    int sign_failed;
};

void render_scratch_init(struct render_scratch *s);
void render_scratch_free(struct render_scratch *s);

/* Well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF) without NUL. */
int render_utf8_ok(const char *s, size_t n);
/* The length (2 to 4) of the well-formed multi-byte UTF-8 sequence at p
 * (before end), 0 when it is not one. */
size_t render_utf8_len(const unsigned char *p, const unsigned char *end);
/* NULL with a reason in err (a template syntax error, a bad address or
 * header, an unreadable DKIM key). A template's error starts with its
 * name ("subject", "text", "html", "to_name", "list_unsubscribe",
 * "list_unsubscribe_mailto", "from_addr", "from_name", "reply_to") and a
 * colon, and says where: "subject: unterminated merge field '{{first_name'
 * at character 4"; "at line 3, character 7" in a template of several
 * lines (characters are UTF-8 characters, counted from 1). */
struct render_template *render_compile(const struct render_spec *spec, char *err, size_t errlen);
void render_free(struct render_template *t);

/* Every merge field of the templates, in order (repeats included): WHERE is
 * "subject", "text", "html", "display name", "list-unsubscribe" or
 * "list-unsubscribe mailto"; NAME the field; HAS_DEFAULT for {{name|x}}. */
typedef void (*render_field_cb)(void *user, const char *where, const char *name, int has_default);
void render_fields(const struct render_template *t, render_field_cb cb, void *user);

/*
 * Append the message for rcpt to out. vars may be NULL (no variables);
 * scratch may be NULL (temporary memory, freed before returning; the
 * missing fields are then not told). Returns 0, or -1 with a reason in
 * err and out as it was. The template is only read: threads may share
 * it, each with its own scratch.
 */
int render_message(const struct render_template *t, const char *rcpt,
                   const struct render_vars *vars, struct render_scratch *scratch, buf_t *out,
                   char *err, size_t errlen);

#endif
