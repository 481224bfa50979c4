/*
 * ringmail-signer - holds a campaign's DKIM private keys and signs digests
 *
 * SYNOPSIS
 *     started by ringmail (campaign/sign_client.c), never by hand:
 *     fd 0 is a socketpair to the ringmail process; fd 1 /dev/null.
 *
 * DESCRIPTION
 *     Privilege separation: the delivery process (`ringmail send`, its
 *     render workers, `campaign test` and `preview`) never reads or maps a
 *     DKIM private key. This process does. It is its own binary, linked
 *     against OpenSSL 3's libcrypto (and libpq), never against BoringSSL:
 *     the two export the same names and cannot share a process, and
 *     OpenSSL 3 signs RSA-2048 two to three times faster than Debian's
 *     BoringSSL on this machine (`openssl speed rsa2048` against
 *     `bssl-tool speed`).
 *
 *     The first frame (campaign/sign_proto.h) says where the keys are:
 *     HELLO_DB gives a campaign id and the libpq connection string (over
 *     the socket, never in argv or the environment); this process connects
 *     as application_name "ringmail-signer", reads ringmail.campaign's
 *     dkim_key and dkim_key2 and disconnects. HELLO_FILES gives PEM file
 *     paths (tests, benchmarks). Each key must be RSA of 1024 to 8192 bits
 *     or Ed25519, as campaign/dkim.c requires; the answer is KEYS (the
 *     algorithm and size of each) or ERROR (why), after which it exits.
 *
 *     Then it serves REQ frames: a key number and a 32-byte SHA-256
 *     digest (the DKIM header hash; canonicalization and hashing stay in
 *     the render workers, campaign/dkim.c). rsa-sha256 is EVP_PKEY_sign
 *     with RSA_PKCS1_PADDING and EVP_sha256 as the signature digest (the
 *     DigestInfo is added here: RSASSA-PKCS1-v1_5); ed25519-sha256 is
 *     PureEd25519 over the 32 digest bytes (RFC 8463 3). The contexts are
 *     made once per key and reused. Every frame that has arrived is
 *     answered before the next read, and the answers go out in one write,
 *     so a worker that asks for two signatures (dual signing) costs one
 *     read and one write here.
 *
 *     The process makes itself non-dumpable (prctl PR_SET_DUMPABLE 0): no
 *     core file, and another process of the same user (the send process
 *     included) cannot read its memory through /proc or ptrace. It runs
 *     in a process group of its own (ringmail spawns it so), so a Ctrl-C
 *     at the terminal stops the send gracefully and not its signer first.
 *     It ends when the socket closes (ringmail exited or stopped it).
 *
 * DIAGNOSTICS
 *     To ringmail, in ERROR: "no campaign N", "campaign N has no DKIM
 *     key", "cannot connect to PostgreSQL: ...", "dkim_key: cannot read a
 *     private key from the PEM text (PEM, unencrypted)", "dkim_key2: RSA
 *     key of N bits (DKIM needs 1024 to 8192, 2048 advised)", "dkim_key:
 *     unsupported key type (DKIM signs with RSA or Ed25519)", "FILE:
 *     cannot read a private key ...", "protocol version V (this signer
 *     speaks 1): install ringmail and ringmail-signer together". In FAIL:
 *     "no key N", "signing failed". On stderr, prefixed "ringmail-signer:",
 *     only what cannot go to ringmail (a frame it cannot parse, fd 0 not
 *     a socket).
 */
#include <errno.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "campaign/sign_proto.h"

#if defined(OPENSSL_IS_BORINGSSL) || !defined(OPENSSL_VERSION_MAJOR) || OPENSSL_VERSION_MAJOR < 3
#error "ringmail-signer is built against OpenSSL 3 (/usr/include/openssl), never BoringSSL"
#endif

#define SIGNER_IN_MAX (SIGN_PROTO_HEAD + SIGN_PROTO_PAYLOAD_MAX)

struct signer_key {
    EVP_PKEY *pkey;    /* owned */
    EVP_PKEY_CTX *rsa; /* owned: RSA, initialized for PKCS#1 v1.5 with SHA-256 */
    EVP_MD_CTX *ed;    /* owned: Ed25519 */
    struct sign_key_info info;
};

struct signer {
    struct signer_key keys[SIGN_PROTO_KEYS_MAX];
    size_t nkeys;
    uint8_t in[SIGNER_IN_MAX]; /* received, not yet parsed: in[at..end) */
    size_t at, end;
    buf_t out; /* answers not yet written */
};

/* signer_say - a line on stderr (what cannot go to ringmail) */
static void signer_say(const char *what)
{
    fprintf(stderr, "ringmail-signer: %s\n", what);
}

/* signer_write_all - out written to fd 0; 0 or -1 (ringmail went away) */
static int signer_write_all(buf_t *out)
{
    while (buf_len(out) > 0) {
        ssize_t n = send(0, buf_data(out), buf_len(out), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        buf_consume(out, (size_t)n);
    }
    buf_reset(out);
    return 0;
}

/* signer_read - more bytes into s->in; >0, 0 at EOF, -1 on error */
static ssize_t signer_read(struct signer *s)
{
    if (s->at > 0) {
        memmove(s->in, s->in + s->at, s->end - s->at);
        s->end -= s->at;
        s->at = 0;
    }
    for (;;) {
        ssize_t n = recv(0, s->in + s->end, sizeof s->in - s->end, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n > 0) {
            s->end += (size_t)n;
        }
        return n;
    }
}

/* signer_next - the next whole frame: 1, 0 at EOF, -1 on a bad frame (said) */
static int signer_next(struct signer *s, struct sign_frame *f)
{
    for (;;) {
        size_t used;
        char err[128];
        int rc = sign_proto_get(s->in + s->at, s->end - s->at, f, &used, err, sizeof err);
        if (rc > 0) {
            s->at += used;
            return 1;
        }
        if (rc < 0) {
            signer_say(err);
            return -1;
        }
        if (signer_write_all(&s->out) < 0) { /* answer what came before waiting */
            return 0;
        }
        ssize_t n = signer_read(s);
        if (n <= 0) {
            return n < 0 ? -1 : 0;
        }
    }
}

/* ---- keys ---- */

/* signer_no_pass - never ask for a passphrase: an encrypted key is refused */
static int signer_no_pass(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/* signer_key_take - key k from PEM text (named what in reasons); 0 or -1 + err */
static int signer_key_take(struct signer_key *k, const char *pem, size_t len, const char *what,
                           const char *from, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    k->pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, signer_no_pass, NULL) : NULL;
    BIO_free(bio);
    if (!k->pkey) {
        snprintf(err, errlen, "%s: cannot read a private key from %s (PEM, unencrypted)", what,
                 from);
        return -1;
    }
    int id = EVP_PKEY_get_base_id(k->pkey);
    k->info.bits = (unsigned)EVP_PKEY_get_bits(k->pkey);
    if (id == EVP_PKEY_RSA) {
        if (k->info.bits < 1024 || k->info.bits > 8192) {
            snprintf(err, errlen, "%s: RSA key of %u bits (DKIM needs 1024 to 8192, 2048 advised)",
                     what, k->info.bits);
            return -1;
        }
        k->info.alg = SIGN_ALG_RSA_SHA256;
        k->rsa = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
        if (!k->rsa || EVP_PKEY_sign_init(k->rsa) <= 0 ||
            EVP_PKEY_CTX_set_rsa_padding(k->rsa, RSA_PKCS1_PADDING) <= 0 ||
            EVP_PKEY_CTX_set_signature_md(k->rsa, EVP_sha256()) <= 0) {
            snprintf(err, errlen, "%s: cannot set up RSA signing", what);
            return -1;
        }
        return 0;
    }
    if (id == EVP_PKEY_ED25519) {
        k->info.alg = SIGN_ALG_ED25519_SHA256;
        k->ed = EVP_MD_CTX_new();
        if (!k->ed || EVP_DigestSignInit_ex(k->ed, NULL, NULL, NULL, NULL, k->pkey, NULL) <= 0) {
            snprintf(err, errlen, "%s: cannot set up Ed25519 signing", what);
            return -1;
        }
        return 0;
    }
    snprintf(err, errlen, "%s: unsupported key type (DKIM signs with RSA or Ed25519)", what);
    return -1;
}

/* signer_keys_db - the campaign's dkim_key and dkim_key2 from PostgreSQL */
static int signer_keys_db(struct signer *s, const char *id, const char *conninfo, char *err,
                          size_t errlen)
{
    const char *keys[] = {"dbname", "application_name", "connect_timeout", NULL};
    const char *vals[] = {conninfo, "ringmail-signer", "10", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        const char *m = c ? PQerrorMessage(c) : "out of memory";
        snprintf(err, errlen, "cannot connect to PostgreSQL: %.*s", (int)strcspn(m, "\n"), m);
        PQfinish(c);
        return -1;
    }
    const char *p[] = {id};
    PGresult *r = PQexecParams(c,
                               "SELECT dkim_key, dkim_key2 FROM ringmail.campaign"
                               " WHERE id = $1::bigint",
                               1, NULL, p, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *m = PQresultErrorMessage(r);
        snprintf(err, errlen, "reading campaign %s: %.*s", id, (int)strcspn(m, "\n"), m);
    } else if (PQntuples(r) != 1) {
        snprintf(err, errlen, "no campaign %s", id);
    } else if (PQgetisnull(r, 0, 0)) {
        snprintf(err, errlen, "campaign %s has no DKIM key", id);
    } else {
        static const char *const what[] = {"dkim_key", "dkim_key2"};
        rc = 0;
        for (int i = 0; i < 2 && rc == 0 && !PQgetisnull(r, 0, i); i++) {
            char *pem = PQgetvalue(r, 0, i);
            size_t len = (size_t)PQgetlength(r, 0, i);
            rc = signer_key_take(&s->keys[i], pem, len, what[i], "the PEM text", err, errlen);
            OPENSSL_cleanse(pem, len);
            s->nkeys += rc == 0;
        }
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

/* signer_keys_files - keys from PEM files (paths NUL-separated in p[0..len)) */
static int signer_keys_files(struct signer *s, const char *p, size_t len, char *err, size_t errlen)
{
    const char *end = p + len;
    while (p < end && s->nkeys < SIGN_PROTO_KEYS_MAX) {
        size_t n = strnlen(p, (size_t)(end - p));
        char path[4096];
        snprintf(path, sizeof path, "%.*s", (int)n, p);
        FILE *f = fopen(path, "r");
        char pem[65536];
        size_t got = f ? fread(pem, 1, sizeof pem - 1, f) : 0;
        if (f) {
            fclose(f);
        }
        int rc = signer_key_take(&s->keys[s->nkeys], pem, got, path, path, err, errlen);
        OPENSSL_cleanse(pem, sizeof pem);
        if (rc < 0) {
            return -1;
        }
        s->nkeys++;
        p += n + 1;
    }
    if (s->nkeys == 0) {
        snprintf(err, errlen, "no key file named");
        return -1;
    }
    return 0;
}

/* signer_hello - the keys the first frame names; 0, or -1 + err */
static int signer_hello(struct signer *s, const struct sign_frame *f, char *err, size_t errlen)
{
    if ((f->type != SIGN_HELLO_DB && f->type != SIGN_HELLO_FILES) || f->len < 2) {
        snprintf(err, errlen, "the first frame is not a HELLO");
        return -1;
    }
    if (f->payload[0] != SIGN_PROTO_VERSION) {
        snprintf(err, errlen,
                 "protocol version %u (this signer speaks %u): install ringmail and "
                 "ringmail-signer together",
                 f->payload[0], SIGN_PROTO_VERSION);
        return -1;
    }
    const char *p = (const char *)f->payload + 1;
    size_t len = f->len - 1;
    if (f->type == SIGN_HELLO_FILES) {
        return signer_keys_files(s, p, len, err, errlen);
    }
    size_t idlen = strnlen(p, len);
    if (idlen + 1 >= len || p[len - 1] != '\0') {
        snprintf(err, errlen, "a HELLO without campaign and connection string");
        return -1;
    }
    return signer_keys_db(s, p, p + idlen + 1, err, errlen);
}

/* ---- signing ---- */

/* signer_sign - one REQ answered into s->out */
static void signer_sign(struct signer *s, const struct sign_frame *f)
{
    uint8_t sig[SIGN_PROTO_SIG_MAX];
    size_t len = sizeof sig;
    const char *why = NULL;
    struct signer_key *k = f->key < s->nkeys ? &s->keys[f->key] : NULL;
    if (!k) {
        why = "no such key";
    } else if (f->len != SIGN_PROTO_DIGEST) {
        why = "a digest is 32 bytes";
    } else if (k->rsa) {
        if (EVP_PKEY_sign(k->rsa, sig, &len, f->payload, SIGN_PROTO_DIGEST) <= 0) {
            why = "signing failed";
        }
    } else if (EVP_DigestSign(k->ed, sig, &len, f->payload, SIGN_PROTO_DIGEST) <= 0) {
        why = "signing failed";
    }
    if (why) {
        sign_proto_put(&s->out, SIGN_FAIL, f->key, f->seq, why, strlen(why));
    } else {
        sign_proto_put(&s->out, SIGN_SIG, f->key, f->seq, sig, len);
    }
}

/* signer_free - the keys (OpenSSL clears private key material as it frees) */
static void signer_free(struct signer *s)
{
    for (size_t i = 0; i < SIGN_PROTO_KEYS_MAX; i++) {
        EVP_PKEY_CTX_free(s->keys[i].rsa);
        EVP_MD_CTX_free(s->keys[i].ed);
        EVP_PKEY_free(s->keys[i].pkey);
    }
    buf_free(&s->out);
    free(s);
}

int main(void)
{
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    signal(SIGPIPE, SIG_IGN);
    struct signer *s = calloc(1, sizeof *s);
    if (!s) {
        signer_say("out of memory");
        return 1;
    }
    struct sign_frame f;
    int rc = signer_next(s, &f);
    if (rc <= 0) {
        signer_free(s);
        return rc < 0;
    }
    char err[512];
    if (signer_hello(s, &f, err, sizeof err) < 0) {
        sign_proto_put(&s->out, SIGN_ERROR, 0, 0, err, strlen(err));
        signer_write_all(&s->out);
        signer_free(s);
        return 1;
    }
    struct sign_key_info info[SIGN_PROTO_KEYS_MAX];
    for (size_t i = 0; i < s->nkeys; i++) {
        info[i] = s->keys[i].info;
    }
    sign_proto_keys_put(&s->out, info, s->nkeys);
    while ((rc = signer_next(s, &f)) > 0) {
        if (f.type != SIGN_REQ) {
            signer_say("a frame that is not a signature request");
            rc = -1;
            break;
        }
        signer_sign(s, &f);
    }
    signer_free(s);
    return rc < 0;
}
