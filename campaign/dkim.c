/*
 * dkim - DKIM signatures for rendered messages (RFC 6376, RFC 8463)
 *
 * SYNOPSIS
 *     #include "campaign/dkim.h"
 *
 *     struct dkim_spec spec = {.domain = "example.com", .selector = "s1",
 *                              .key_file = "/etc/ringmail/s1.pem"};
 *     struct dkim_signer *s = dkim_signer_new(&spec, err, sizeof err);   per campaign
 *     dkim_sign(s, msg, len, date, &out, err, sizeof err);               per message
 *     buf_append(&out, msg, len);
 *
 * DESCRIPTION
 *     Per campaign: the key is parsed once (for Ed25519 the expanded
 *     64-byte private key is derived once), the names to sign are copied
 *     and lower-cased, and the constant head of the signature field
 *     ("DKIM-Signature: v=1; a=...; c=relaxed/relaxed; d=...; s=...;") is
 *     laid out and folded once.
 *
 *     Per message: the header is split into fields (with their folding),
 *     the body is canonicalized straight into SHA-256 (no copy), the
 *     signature field is written into the caller's buffer with b= empty,
 *     and the header hash covers the signed fields (each name's instances
 *     bottom-up, RFC 6376 5.4.2) and then that field in relaxed form
 *     without its CRLF (3.7). rsa-sha256 is RSASSA-PKCS1-v1_5 over that
 *     hash; ed25519-sha256 is PureEd25519 over the same 32-byte hash
 *     (RFC 8463 3). Both are deterministic, so a fixed time gives a fixed
 *     signature (the unit tests rely on it). b= is appended folded: FWS is
 *     allowed inside its base64, and verifiers delete the whole value.
 *
 *     Nothing is allocated per message except growth of the caller's
 *     buffer; a signer is read-only after creation, so worker threads share it.
 *
 *     Key holders: a signer made with spec->holder has no key here, only
 *     the algorithm (for a=) and the holder's number for the key; the
 *     digest goes to holder->sign (campaign/sign_client.c: the signer
 *     processes, OpenSSL 3) and the signature comes back. Canonicalization
 *     and both hashes stay here. dkim_sign_all signs one message with
 *     several signers (dual signing): the body is hashed once, each field
 *     is laid out up to "b=" and hashed, the holder is asked for all its
 *     signatures at once, and the b= values are filled in last to first
 *     (each insertion moves only the fields after it).
 *
 *     The cryptography (key reading, SHA-256, signing, base64) is
 *     engine/crypto.h's; this file includes no BoringSSL header.
 *
 *     DNS onboarding: dkim_key_record is the TXT record of a key's public
 *     half (crypto_key_public: DER SubjectPublicKeyInfo for RSA, the raw
 *     32 bytes for Ed25519), dkim_zone_txt the zone line cut into 255-byte
 *     strings, dkim_domains_align DMARC's identifier alignment;
 *     dkim_create_advice puts them together for `campaign create`, and
 *     campaign/check_dns.c uses them against what DNS answers.
 *
 * DIAGNOSTICS
 *     dkim_signer_new: "cannot read a private key from FILE" (missing,
 *     encrypted or not PEM), "RSA key of N bits ...", "unsupported key
 *     type", "bad DKIM domain"/"bad DKIM selector", "bad header name".
 *     dkim_sign: "header field without a colon", "more than 128 header fields".
 */
#include "dkim.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/crypto.h"

#define DKIM_FOLD_AT 78
#define DKIM_MAX_FIELDS 128
#define DKIM_MAX_SIG CRYPTO_SIG_MAX /* RSA-8192 */

struct dkim_signer {
    enum dkim_algorithm algorithm;
    struct crypto_key *key; /* owned */
    char *head;             /* owned: "DKIM-Signature: v=1; ... s=...;" folded */
    size_t head_len;        /* its length */
    size_t head_col;        /* column after it */
    char **names;           /* owned (one block with the strings): lower-case names to sign */
    size_t n_names;
    const struct dkim_keyholder *holder; /* borrowed; NULL: key is here */
    unsigned holder_key;                 /* the holder's number for the key */
};

/* Where canonical bytes go: a buffer (tests) or a running hash (signing). */
struct dkim_sink {
    void (*put)(void *ctx, const char *p, size_t n);
    void *ctx;
};

static void dkim_put_buf(void *ctx, const char *p, size_t n)
{
    buf_append(ctx, p, n);
}

static void dkim_put_sha256(void *ctx, const char *p, size_t n)
{
    crypto_sha256_update(ctx, p, n);
}

static int dkim_is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

static void dkim_error(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
}

/* ---------------------------------------------------------------- canonicalization */

/* RFC 6376 3.4.2: lower-case name, no WSP around the colon, CRLFs
 * removed, WSP runs as one SP, no WSP at either end of the value. */
static void dkim_canon_header(const char *f, size_t len, int with_crlf, const struct dkim_sink *k)
{
    const char *colon = memchr(f, ':', len);
    size_t name_len = colon ? (size_t)(colon - f) : len;
    while (name_len > 0 && dkim_is_wsp(f[name_len - 1])) {
        name_len--;
    }
    char lower[64];
    for (size_t i = 0; i < name_len; i += sizeof lower) {
        size_t n = name_len - i < sizeof lower ? name_len - i : sizeof lower;
        for (size_t j = 0; j < n; j++) {
            char c = f[i + j];
            lower[j] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
        }
        k->put(k->ctx, lower, n);
    }
    k->put(k->ctx, ":", 1);
    const char *p = colon ? colon + 1 : f + len, *end = f + len;
    int space = 0, started = 0;
    while (p < end) {
        if (*p == '\r' || *p == '\n') {
            p++;
        } else if (dkim_is_wsp(*p)) {
            space = 1;
            p++;
        } else {
            if (space && started) {
                k->put(k->ctx, " ", 1);
            }
            const char *run = p;
            while (p < end && !dkim_is_wsp(*p) && *p != '\r' && *p != '\n') {
                p++;
            }
            k->put(k->ctx, run, (size_t)(p - run));
            space = 0;
            started = 1;
        }
    }
    if (with_crlf) {
        k->put(k->ctx, "\r\n", 2);
    }
}

/* RFC 6376 3.4.4: WSP runs as one SP, none at line ends, no empty lines
 * at the end, a final CRLF when anything is left. */
static void dkim_canon_body(const char *body, size_t len, const struct dkim_sink *k)
{
    static const char crlfs[] = "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n";
    const char *p = body, *end = body + len;
    size_t empty = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl ? nl : end;
        const char *next = nl ? nl + 1 : end;
        if (nl && e > p && e[-1] == '\r') {
            e--;
        }
        while (e > p && dkim_is_wsp(e[-1])) {
            e--;
        }
        if (e == p) {
            empty++;
            p = next;
            continue;
        }
        for (; empty > 0;) {
            size_t n = empty < 8 ? empty : 8;
            k->put(k->ctx, crlfs, 2 * n);
            empty -= n;
        }
        while (p < e) {
            const char *run = p;
            while (p < e && !dkim_is_wsp(*p)) {
                p++;
            }
            k->put(k->ctx, run, (size_t)(p - run));
            if (p < e) {
                k->put(k->ctx, " ", 1);
                while (p < e && dkim_is_wsp(*p)) {
                    p++;
                }
            }
        }
        k->put(k->ctx, "\r\n", 2);
        p = next;
    }
}

void dkim_canon_header_relaxed(const char *field, size_t len, buf_t *out)
{
    struct dkim_sink k = {dkim_put_buf, out};
    dkim_canon_header(field, len, 1, &k);
}

void dkim_canon_body_relaxed(const char *body, size_t len, buf_t *out)
{
    struct dkim_sink k = {dkim_put_buf, out};
    dkim_canon_body(body, len, &k);
}

/* ---------------------------------------------------------------- folding */

/* Appends tokens to a header field, breaking the line before a token
 * that would pass column 78. sep is written when the token stays on the line. */
struct dkim_fold {
    buf_t *out;
    size_t col;
};

static void dkim_fold_put(struct dkim_fold *f, const char *sep, const char *tok, size_t n)
{
    size_t seplen = strlen(sep);
    if (f->col + seplen + n > DKIM_FOLD_AT && f->col > 1) {
        buf_append(f->out, "\r\n ", 3);
        f->col = 1;
    } else {
        buf_append(f->out, sep, seplen);
        f->col += seplen;
    }
    buf_append(f->out, tok, n);
    f->col += n;
}

/* ---------------------------------------------------------------- signer */

static int dkim_valid_label_text(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.') {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.')) {
            return 0;
        }
    }
    return 1;
}

/* The key of spec (PEM text wins over the file); NULL with a reason in err. */
static struct crypto_key *dkim_load_key(const struct dkim_spec *spec, char *err, size_t errlen)
{
    return spec->key_pem ? crypto_key_read_pem(spec->key_pem, err, errlen)
                         : crypto_key_load_pem(spec->key_file, err, errlen);
}

/* The algorithm key signs with; -1 and why when DKIM cannot use it. */
static int dkim_key_algorithm(const struct crypto_key *key, enum dkim_algorithm *alg, char *err,
                              size_t errlen)
{
    if (crypto_key_type(key) == CRYPTO_KEY_RSA) {
        unsigned bits = crypto_key_bits(key);
        if (bits < 1024 || bits > 8192) {
            snprintf(err, errlen, "RSA key of %u bits (DKIM needs 1024 to 8192, 2048 advised)",
                     bits);
            return -1;
        }
        *alg = DKIM_RSA_SHA256;
        return 0;
    }
    if (crypto_key_type(key) == CRYPTO_KEY_ED25519) {
        *alg = DKIM_ED25519_SHA256;
        return 0;
    }
    dkim_error(err, errlen, "unsupported key type (DKIM keys are RSA or Ed25519)");
    return -1;
}

static int dkim_take_key(struct dkim_signer *s, struct crypto_key *key, char *err, size_t errlen)
{
    s->key = key;
    return dkim_key_algorithm(key, &s->algorithm, err, errlen);
}

static int dkim_take_names(struct dkim_signer *s, const char *const *names, char *err,
                           size_t errlen)
{
    static const char *const defaults[] = {DKIM_DEFAULT_HEADERS, NULL};
    if (!names) {
        names = defaults;
    }
    size_t n = 0, bytes = 0;
    for (; names[n]; n++) {
        bytes += strlen(names[n]) + 1;
    }
    s->names = malloc(n * sizeof *s->names + bytes + 1);
    if (!s->names) {
        dkim_error(err, errlen, "out of memory");
        return -1;
    }
    char *text = (char *)(s->names + n);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (len == 0) {
            dkim_error(err, errlen, "bad header name to sign (empty)");
            return -1;
        }
        for (size_t j = 0; j < len; j++) {
            unsigned char c = (unsigned char)names[i][j];
            if (c <= ' ' || c >= 0x7f || c == ':') {
                dkim_error(err, errlen, "bad header name to sign");
                return -1;
            }
            text[j] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
        }
        text[len] = '\0';
        s->names[i] = text;
        text += len + 1;
    }
    s->n_names = n;
    return 0;
}

static void dkim_lay_out_head(struct dkim_signer *s, const struct dkim_spec *spec)
{
    buf_t b = BUF_INIT;
    struct dkim_fold f = {&b, 0};
    buf_append_str(&b, "DKIM-Signature:");
    f.col = buf_len(&b);
    dkim_fold_put(&f, " ", "v=1;", 4);
    const char *a = s->algorithm == DKIM_RSA_SHA256 ? "a=rsa-sha256;" : "a=ed25519-sha256;";
    dkim_fold_put(&f, " ", a, strlen(a));
    dkim_fold_put(&f, " ", "c=relaxed/relaxed;", 18);
    buf_t tag = BUF_INIT;
    buf_appendf(&tag, "d=%s;", spec->domain);
    dkim_fold_put(&f, " ", buf_data(&tag), buf_len(&tag));
    buf_reset(&tag);
    buf_appendf(&tag, "s=%s;", spec->selector);
    dkim_fold_put(&f, " ", buf_data(&tag), buf_len(&tag));
    buf_free(&tag);
    s->head_len = buf_len(&b);
    s->head_col = f.col;
    s->head = b.data; /* off is 0: nothing was consumed */
}

struct dkim_signer *dkim_signer_new(const struct dkim_spec *spec, char *err, size_t errlen)
{
    if (!spec->domain || !dkim_valid_label_text(spec->domain)) {
        dkim_error(err, errlen, "bad DKIM domain (ASCII, an IDN as its A-label)");
        return NULL;
    }
    if (!spec->selector || !dkim_valid_label_text(spec->selector)) {
        dkim_error(err, errlen, "bad DKIM selector");
        return NULL;
    }
    struct dkim_signer *s = calloc(1, sizeof *s);
    if (!s) {
        dkim_error(err, errlen, "out of memory");
        return NULL;
    }
    if (spec->holder) { /* the key stays in the holder's process */
        s->holder = spec->holder;
        s->holder_key = spec->holder_key;
        s->algorithm = spec->holder_alg;
    }
    struct crypto_key *key = spec->holder ? NULL : dkim_load_key(spec, err, errlen);
    if ((!spec->holder && (!key || dkim_take_key(s, key, err, errlen) < 0)) ||
        dkim_take_names(s, spec->headers, err, errlen) < 0) {
        dkim_signer_free(s);
        return NULL;
    }
    dkim_lay_out_head(s, spec);
    return s;
}

void dkim_signer_free(struct dkim_signer *s)
{
    if (!s) {
        return;
    }
    crypto_key_free(s->key);
    free(s->head);
    free(s->names);
    free(s);
}

enum dkim_algorithm dkim_signer_algorithm(const struct dkim_signer *s)
{
    return s->algorithm;
}

/* "v=DKIM1; k=...; p=..." for key, appended to out; 0, or -1 with out as it was. */
static int dkim_append_record(const struct crypto_key *key, enum dkim_algorithm alg, buf_t *out)
{
    buf_t pub = BUF_INIT;
    int rc = crypto_key_public(key, &pub);
    if (rc == 0) {
        buf_append_str(out, alg == DKIM_ED25519_SHA256 ? "v=DKIM1; k=ed25519; p="
                                                       : "v=DKIM1; k=rsa; p=");
        crypto_base64_append(out, buf_data(&pub), buf_len(&pub));
    }
    buf_free(&pub);
    return rc;
}

void dkim_signer_dns_record(const struct dkim_signer *s, buf_t *out)
{
    if (s->key) { /* a holder's key: its public half is not here either */
        dkim_append_record(s->key, s->algorithm, out);
    }
}

/* ---------------------------------------------------------------- signing */

struct dkim_field {
    const char *p;   /* first byte of the name */
    size_t len;      /* through the last folded line, without the final CRLF */
    size_t name_len; /* without WSP before the colon */
};

/* Split the header into fields; *body is the first byte after the empty line. */
static int dkim_split_header(const char *msg, size_t len, struct dkim_field *f, size_t *n,
                             const char **body, char *err, size_t errlen)
{
    const char *p = msg, *end = msg + len;
    *n = 0;
    *body = end;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *next = nl ? nl + 1 : end;
        const char *e = nl ? nl : end;
        if (nl && e > p && e[-1] == '\r') {
            e--;
        }
        if (e == p) { /* the empty line */
            *body = next;
            return 0;
        }
        if (dkim_is_wsp(*p)) {
            if (*n == 0) {
                dkim_error(err, errlen, "message starts with a folded line");
                return -1;
            }
            f[*n - 1].len = (size_t)(e - f[*n - 1].p);
        } else {
            const char *colon = memchr(p, ':', (size_t)(e - p));
            if (!colon) {
                dkim_error(err, errlen, "header field without a colon");
                return -1;
            }
            if (*n == DKIM_MAX_FIELDS) {
                dkim_error(err, errlen, "more than 128 header fields");
                return -1;
            }
            size_t name_len = (size_t)(colon - p);
            while (name_len > 0 && dkim_is_wsp(p[name_len - 1])) {
                name_len--;
            }
            f[*n] = (struct dkim_field){p, (size_t)(e - p), name_len};
            (*n)++;
        }
        p = next;
    }
    return 0;
}

/* Hash the fields named in h= (each name's instances bottom-up) and write
 * the h= tag. Returns how many fields were signed. */
static size_t dkim_sign_fields(const struct dkim_signer *s, const struct dkim_field *f, size_t n,
                               struct crypto_sha256 *hash, struct dkim_fold *fold)
{
    struct dkim_sink k = {dkim_put_sha256, hash};
    size_t signed_n = 0;
    char tok[80];
    for (size_t i = 0; i < s->n_names; i++) {
        size_t name_len = strlen(s->names[i]);
        for (size_t j = n; j-- > 0;) {
            if (f[j].name_len != name_len || strncasecmp(f[j].p, s->names[i], name_len) != 0) {
                continue;
            }
            dkim_canon_header(f[j].p, f[j].len, 1, &k);
            /* "h=a:b:c;" folded after a colon; long names go as they are. */
            const char *pre = signed_n == 0 ? "h=" : "";
            int tn = snprintf(tok, sizeof tok, "%s%s:", pre, s->names[i]);
            if (tn > 0 && (size_t)tn < sizeof tok) {
                dkim_fold_put(fold, signed_n == 0 ? " " : "", tok, (size_t)tn);
            } else {
                dkim_fold_put(fold, signed_n == 0 ? " " : "", pre, strlen(pre));
                buf_append(fold->out, s->names[i], name_len);
                buf_append(fold->out, ":", 1);
                fold->col += name_len + 1;
            }
            signed_n++;
        }
    }
    if (signed_n > 0) {
        /* The last ':' becomes the tag's ';'. */
        fold->out->data[fold->out->len - 1] = ';';
    }
    return signed_n;
}

/* Append b=<base64> folded: as much as fits on the line, then whole lines. */
static void dkim_put_b(struct dkim_fold *fold, const uint8_t *sig, size_t sig_len)
{
    char b64[CRYPTO_BASE64_LEN(DKIM_MAX_SIG) + 1];
    size_t n = crypto_base64_encode(b64, sig, sig_len);
    size_t i = 0;
    while (i < n) {
        if (fold->col + 8 > DKIM_FOLD_AT) {
            buf_append(fold->out, "\r\n ", 3);
            fold->col = 1;
        }
        size_t room = DKIM_FOLD_AT - fold->col;
        size_t take = n - i < room ? n - i : room;
        buf_append(fold->out, b64 + i, take);
        fold->col += take;
        i += take;
    }
}

/* Where a field waits for its b= value: the offset in out just after its
 * "b=", and the fold column there. */
struct dkim_pending {
    size_t at;
    size_t col;
};

/* dkim_field_head - the signature field of s up to an empty b=, appended
 * to out, and the header hash over the signed fields and that field */
static void dkim_field_head(const struct dkim_signer *s, const struct dkim_field *fields,
                            size_t n_fields, const uint8_t bh[CRYPTO_SHA256_LEN], time_t t,
                            buf_t *out, struct dkim_pending *p, uint8_t digest[CRYPTO_SHA256_LEN])
{
    size_t start = buf_len(out);
    buf_append(out, s->head, s->head_len);
    struct dkim_fold fold = {out, s->head_col};
    char tok[64];
    if (t > 0) {
        int tn = snprintf(tok, sizeof tok, "t=%lld;", (long long)t);
        dkim_fold_put(&fold, " ", tok, (size_t)tn);
    }
    struct crypto_sha256 hash;
    crypto_sha256_init(&hash);
    dkim_sign_fields(s, fields, n_fields, &hash, &fold);
    memcpy(tok, "bh=", 3);
    size_t bn = crypto_base64_encode(tok + 3, bh, CRYPTO_SHA256_LEN);
    tok[3 + bn] = ';';
    dkim_fold_put(&fold, " ", tok, 3 + bn + 1);
    dkim_fold_put(&fold, " ", "b=", 2);

    /* The signature field itself, b= empty, relaxed, without its CRLF. */
    struct dkim_sink head_sink = {dkim_put_sha256, &hash};
    dkim_canon_header(buf_data(out) + start, buf_len(out) - start, 0, &head_sink);
    crypto_sha256_final(&hash, digest);
    p->at = buf_len(out);
    p->col = fold.col;
}

/* dkim_put_b_at - b=<sig> folded and the field's CRLF, inserted into out
 * at p (the fields after it move up; nothing is allocated but growth) */
static void dkim_put_b_at(buf_t *out, const struct dkim_pending *p, const uint8_t *sig,
                          size_t sig_len)
{
    size_t tail = buf_len(out) - p->at;
    struct dkim_fold fold = {out, p->col};
    dkim_put_b(&fold, sig, sig_len);
    buf_append(out, "\r\n", 2);
    size_t add = buf_len(out) - p->at - tail;
    if (tail > 0) {
        char moved[CRYPTO_BASE64_LEN(DKIM_MAX_SIG) + DKIM_MAX_SIG / 8 + 8];
        char *d = out->data + out->off + p->at;
        memcpy(moved, d + tail, add);
        memmove(d + add, d, tail);
        memcpy(d, moved, add);
    }
}

/* dkim_sign_held - the signatures of the signers whose key a holder has:
 * one call per holder; 0, or DKIM_HOLDER_FAILED + err */
static int dkim_sign_held(const struct dkim_signer *const *signers, size_t n, struct dkim_sig *sigs,
                          char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const struct dkim_keyholder *h = signers[i]->holder;
        if (!h || (i > 0 && signers[i - 1]->holder == h)) {
            continue; /* in-process, or asked with the one before (a run of one holder) */
        }
        size_t m = 1;
        while (i + m < n && signers[i + m]->holder == h) {
            m++;
        }
        if (h->sign(h->ctx, sigs + i, m, err, errlen) < 0) {
            return DKIM_HOLDER_FAILED;
        }
    }
    return 0;
}

#define DKIM_SIGNERS_MAX 4

int dkim_sign_all(const struct dkim_signer *const *signers, size_t n, const char *msg, size_t len,
                  time_t t, buf_t *out, char *err, size_t errlen)
{
    struct dkim_field fields[DKIM_MAX_FIELDS];
    size_t n_fields;
    const char *body;
    if (n > DKIM_SIGNERS_MAX) {
        dkim_error(err, errlen, "more than 4 DKIM signatures");
        return -1;
    }
    if (dkim_split_header(msg, len, fields, &n_fields, &body, err, errlen) < 0) {
        return -1;
    }
    int has_from = 0;
    for (size_t i = 0; i < n_fields; i++) {
        has_from |= fields[i].name_len == 4 && strncasecmp(fields[i].p, "from", 4) == 0;
    }
    if (!has_from) {
        dkim_error(err, errlen, "no From header field to sign");
        return -1;
    }
    size_t start = buf_len(out);

    /* relaxed body, no l=: one body hash serves every signature */
    uint8_t bh[CRYPTO_SHA256_LEN];
    struct crypto_sha256 hash;
    crypto_sha256_init(&hash);
    struct dkim_sink body_sink = {dkim_put_sha256, &hash};
    dkim_canon_body(body, (size_t)(msg + len - body), &body_sink);
    crypto_sha256_final(&hash, bh);

    struct dkim_sig sigs[DKIM_SIGNERS_MAX];
    struct dkim_pending pend[DKIM_SIGNERS_MAX];
    for (size_t i = 0; i < n; i++) {
        dkim_field_head(signers[i], fields, n_fields, bh, t, out, &pend[i], sigs[i].digest);
        sigs[i].key = signers[i]->holder_key;
        sigs[i].sig_len = 0;
        if (!signers[i]->holder && crypto_sign_sha256(signers[i]->key, sigs[i].digest, sigs[i].sig,
                                                      sizeof sigs[i].sig, &sigs[i].sig_len) < 0) {
            out->len = out->off + start;
            dkim_error(err, errlen, "signing failed");
            return -1;
        }
    }
    int rc = dkim_sign_held(signers, n, sigs, err, errlen);
    if (rc < 0) {
        out->len = out->off + start;
        return rc;
    }
    for (size_t i = n; i-- > 0;) { /* the last first: the earlier offsets stay good */
        dkim_put_b_at(out, &pend[i], sigs[i].sig, sigs[i].sig_len);
    }
    return 0;
}

int dkim_sign(const struct dkim_signer *s, const char *msg, size_t len, time_t t, buf_t *out,
              char *err, size_t errlen)
{
    return dkim_sign_all(&s, 1, msg, len, t, out, err, errlen);
}

/* ---------------------------------------------------------------- DNS onboarding */

int dkim_key_record(const struct dkim_spec *spec, enum dkim_algorithm *alg, buf_t *out, char *err,
                    size_t errlen)
{
    struct crypto_key *key = dkim_load_key(spec, err, errlen);
    enum dkim_algorithm a;
    int rc = key ? dkim_key_algorithm(key, &a, err, errlen) : -1;
    if (rc == 0 && dkim_append_record(key, a, out) < 0) {
        dkim_error(err, errlen, "cannot encode the public key");
        rc = -1;
    }
    if (rc == 0 && alg) {
        *alg = a;
    }
    crypto_key_free(key);
    return rc;
}

void dkim_zone_txt(const char *name, const char *text, size_t len, buf_t *out)
{
    size_t n = strlen(name);
    buf_append(out, name, n);
    if (n == 0 || name[n - 1] != '.') {
        buf_append(out, ".", 1);
    }
    buf_append_str(out, " IN TXT");
    size_t at = 0;
    do {
        size_t chunk = len - at < DKIM_TXT_STRING_MAX ? len - at : DKIM_TXT_STRING_MAX;
        buf_append(out, " \"", 2);
        for (size_t i = at; i < at + chunk; i++) {
            unsigned char c = (unsigned char)text[i];
            if (c == '"' || c == '\\') {
                buf_appendf(out, "\\%c", c);
            } else if (c < 0x20 || c >= 0x7f) {
                buf_appendf(out, "\\%03u", c);
            } else {
                buf_append(out, &text[i], 1);
            }
        }
        buf_append(out, "\"", 1);
        at += chunk;
    } while (at < len);
}

void dkim_address_domain(const char *addr, char *out, size_t outlen)
{
    if (outlen == 0) {
        return;
    }
    out[0] = '\0';
    const char *at = strrchr(addr, '@');
    const char *p = at ? at + 1 : addr;
    size_t n = strcspn(p, "> \t\r\n");
    while (n > 0 && p[n - 1] == '.') {
        n--;
    }
    if (n == 0 || n >= outlen || memchr(p, '@', n)) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
    }
    out[n] = '\0';
}

/* Length of d without one trailing dot. */
static size_t dkim_domain_len(const char *d)
{
    size_t n = strlen(d);
    return n > 0 && d[n - 1] == '.' ? n - 1 : n;
}

/* 1 when sub[0..sn) is a proper subdomain of parent[0..pn) (case-insensitive). */
static int dkim_is_subdomain(const char *sub, size_t sn, const char *parent, size_t pn)
{
    return pn > 0 && sn > pn + 1 && sub[sn - pn - 1] == '.' &&
           strncasecmp(sub + sn - pn, parent, pn) == 0;
}

int dkim_domains_align(const char *d, const char *from, int strict)
{
    size_t dn = dkim_domain_len(d), fn = dkim_domain_len(from);
    if (dn == 0 || fn == 0) {
        return 0;
    }
    if (dn == fn && strncasecmp(d, from, dn) == 0) {
        return 1;
    }
    return !strict && (dkim_is_subdomain(from, fn, d, dn) || dkim_is_subdomain(d, dn, from, fn));
}

const char *dkim_shared_parent(const char *a, const char *b)
{
    size_t an = dkim_domain_len(a), bn = dkim_domain_len(b);
    /* Walk a's parents from the longest: the first one b is under (or is). */
    for (const char *p = strchr(a, '.'); p && p < a + an; p = strchr(p + 1, '.')) {
        const char *parent = p + 1;
        size_t pn = an - (size_t)(parent - a);
        if (!memchr(parent, '.', pn)) {
            return NULL; /* a top-level domain is no one's organizational domain */
        }
        if ((bn == pn && strncasecmp(b, parent, pn) == 0) || dkim_is_subdomain(b, bn, parent, pn)) {
            return parent;
        }
    }
    return NULL;
}

void dkim_create_advice(FILE *f, const char *from, const char *domain, const char *selector,
                        const char *key_pem)
{
    if (!domain || !selector || !key_pem) {
        return;
    }
    const struct dkim_spec one = {.domain = domain, .selector = selector, .key_pem = key_pem};
    const struct dkim_spec *spec = &one;
    buf_t txt = BUF_INIT, line = BUF_INIT, name = BUF_INIT;
    char err[256];
    if (dkim_key_record(spec, NULL, &txt, err, sizeof err) == 0) {
        buf_appendf(&name, "%s._domainkey.%s", spec->selector, spec->domain);
        dkim_zone_txt(buf_cstr(&name), buf_data(&txt), buf_len(&txt), &line);
        fprintf(f, "publish this DNS record for DKIM:\n  %s\n", buf_cstr(&line));
    } else {
        fprintf(f, "cannot derive the DKIM DNS record: %s\n", err);
    }
    char fd[256];
    dkim_address_domain(from ? from : "", fd, sizeof fd);
    if (fd[0] && !dkim_domains_align(spec->domain, fd, 0)) {
        const char *common = dkim_shared_parent(spec->domain, fd);
        fprintf(f,
                "warning: DKIM d=%s does not align with the From domain %s%s%s%s: DMARC will "
                "fail for Gmail/Yahoo bulk-sender rules (they need the DKIM d= or the SPF "
                "return path aligned with From); sign with --dkim-domain %s or a parent domain "
                "of it\n",
                spec->domain, fd, common ? " (unless their common parent " : "",
                common ? common : "", common ? " is the organizational domain)" : "", fd);
    }
    buf_free(&txt);
    buf_free(&line);
    buf_free(&name);
}
