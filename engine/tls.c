/*
 * tls - BoringSSL over memory buffers. See tls.h.
 *
 * The custom BIO reads ciphertext from the connection's inbound buf_t and
 * appends ciphertext to its outbound buf_t: no socket here, no BIO pair
 * and its extra copy. An empty inbound buffer answers "retry", so
 * SSL_do_handshake/SSL_read report SSL_ERROR_WANT_READ and the connection
 * re-arms its receive. The error queue is per thread and shared by every
 * connection on it, so it is cleared before each SSL_* call and read right
 * after a failure.
 *
 * Diagnostics: tls_conn_error() gives one line: the verify error when the
 * peer's certificate was refused, the library's reason otherwise
 * ("tls: unsupported protocol", "peer closed connection during handshake").
 */
#include "tls.h"

#include "dane.h"

#include <openssl/base.h>
#ifndef OPENSSL_IS_BORINGSSL
#error "ringmail needs BoringSSL headers: put -I/usr/include/android before the system include path"
#endif

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TLS_DEFAULT_CA "/etc/ssl/certs/ca-certificates.crt"

struct tls_ctx {
    SSL_CTX *ssl_ctx; /* owned */
    int is_server;
    tls_session_cb session_cb;
};

struct tls_conn {
    SSL *ssl; /* owned; holds the BIO */
    struct tls_ctx *ctx;
    buf_t *in, *out; /* the connection's buffers, not owned */
    void *user;
    char error[256];
    /* DANE (tls_conn_set_dane): the TLSA set and the MX host, borrowed */
    const struct dane_tlsa *dane;
    size_t ndane;
    const char *dane_host;
    int dane_failed; /* the verify callback refused the chain: error says why */
    char dane_verified[48];
};

static BIO_METHOD *tls_bio_method;
static pthread_once_t tls_bio_once = PTHREAD_ONCE_INIT;
static int tls_conn_index = -1;

static int tls_bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int tls_bio_write(BIO *b, const char *data, int len)
{
    struct tls_conn *c = BIO_get_data(b);
    if (len <= 0) {
        return 0;
    }
    buf_append(c->out, data, (size_t)len);
    return len;
}

static int tls_bio_read(BIO *b, char *data, int len)
{
    struct tls_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    size_t avail = buf_len(c->in);
    if (avail == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t n = avail < (size_t)len ? avail : (size_t)len;
    memcpy(data, buf_data(c->in), n);
    buf_consume(c->in, n);
    return (int)n;
}

static long tls_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void tls_bio_init_once(void)
{
    tls_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ringmail-buf");
    BIO_meth_set_create(tls_bio_method, tls_bio_create);
    BIO_meth_set_write(tls_bio_method, tls_bio_write);
    BIO_meth_set_read(tls_bio_method, tls_bio_read);
    BIO_meth_set_ctrl(tls_bio_method, tls_bio_ctrl);
    tls_conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static void tls_last_error(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    if (e) {
        char reason[120];
        ERR_error_string_n(e, reason, sizeof reason);
        snprintf(err, errlen, "%s: %s", what, reason);
    } else {
        snprintf(err, errlen, "%s", what);
    }
}

static int tls_new_session(SSL *ssl, SSL_SESSION *session)
{
    struct tls_conn *c = SSL_get_ex_data(ssl, tls_conn_index);
    if (!c || !c->ctx->session_cb) {
        return 0;
    }
    return c->ctx->session_cb(c->user, session);
}

/*
 * tls_ctx_new - the set-up every context shares: the protocol range
 * (min_version/max_version, 0 for the role's default: TLS 1.2 for
 * clients, TLS 1.0 for servers, which may emulate old peers; TLS 1.3 at
 * most) and the key-exchange groups. The role's own set-up follows in
 * its constructor. NULL with a reason in err on failure.
 */
static struct tls_ctx *tls_ctx_new(int is_server, uint16_t min_version, uint16_t max_version,
                                   char *err, size_t errlen)
{
    pthread_once(&tls_bio_once, tls_bio_init_once);
    struct tls_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ctx->is_server = is_server;
    ctx->ssl_ctx = SSL_CTX_new(TLS_method());
    if (!ctx->ssl_ctx) {
        tls_last_error(err, errlen, "SSL_CTX_new");
        free(ctx);
        return NULL;
    }
    uint16_t default_min = is_server ? TLS1_VERSION : TLS1_2_VERSION;
    SSL_CTX_set_min_proto_version(ctx->ssl_ctx, min_version ? min_version : default_min);
    SSL_CTX_set_max_proto_version(ctx->ssl_ctx, max_version ? max_version : TLS1_3_VERSION);
    /* X25519 first: on this BoringSSL it is 6x cheaper than P-256. */
    SSL_CTX_set1_curves_list(ctx->ssl_ctx, "X25519:P-256:P-384");
    return ctx;
}

/* tls_ctx_fail - the reason for what (with the library's, if any) into err; frees ctx. */
static struct tls_ctx *tls_ctx_fail(struct tls_ctx *ctx, const char *what, const char *name,
                                    char *err, size_t errlen)
{
    char line[300];
    snprintf(line, sizeof line, "%s %s", what, name);
    tls_last_error(err, errlen, line);
    tls_ctx_free(ctx);
    return NULL;
}

struct tls_ctx *tls_client_ctx_new(const struct tls_client_options *opt, char *err, size_t errlen)
{
    struct tls_ctx *ctx = tls_ctx_new(0, opt->min_version, opt->max_version, err, errlen);
    if (!ctx) {
        return NULL;
    }
    SSL_CTX *sc = ctx->ssl_ctx;
    const char *ca = opt->ca_file ? opt->ca_file : TLS_DEFAULT_CA;
    ERR_clear_error();
    if (!SSL_CTX_load_verify_locations(sc, ca, NULL) && (opt->ca_file || opt->verify_peer)) {
        return tls_ctx_fail(ctx, "cannot load CA bundle", ca, err, errlen);
    }
    ERR_clear_error();
    /* The chain is verified either way, so the result is recorded for every
     * policy; only `verify` makes a failure abort the handshake. */
    SSL_CTX_set_verify(sc, opt->verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(sc, tls_new_session);
    return ctx;
}

struct tls_ctx *tls_server_ctx_new(const struct tls_server_options *opt, char *err, size_t errlen)
{
    struct tls_ctx *ctx = tls_ctx_new(1, opt->min_version, opt->max_version, err, errlen);
    if (!ctx) {
        return NULL;
    }
    SSL_CTX *sc = ctx->ssl_ctx;
    ERR_clear_error();
    if (!opt->cert_file || !SSL_CTX_use_certificate_chain_file(sc, opt->cert_file)) {
        return tls_ctx_fail(ctx, "cannot load certificate",
                            opt->cert_file ? opt->cert_file : "(none)", err, errlen);
    }
    if (!opt->key_file || !SSL_CTX_use_PrivateKey_file(sc, opt->key_file, SSL_FILETYPE_PEM) ||
        !SSL_CTX_check_private_key(sc)) {
        return tls_ctx_fail(ctx, "cannot load key", opt->key_file ? opt->key_file : "(none)", err,
                            errlen);
    }
    if (opt->no_tickets) {
        SSL_CTX_set_options(sc, SSL_OP_NO_TICKET);
        SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_OFF);
    }
    return ctx;
}

void tls_ctx_free(struct tls_ctx *ctx)
{
    if (ctx) {
        SSL_CTX_free(ctx->ssl_ctx);
        free(ctx);
    }
}

void tls_ctx_set_session_cb(struct tls_ctx *ctx, tls_session_cb cb)
{
    ctx->session_cb = cb;
}

void tls_session_free(struct ssl_session_st *session)
{
    SSL_SESSION_free(session);
}

int tls_session_single_use(const struct ssl_session_st *session)
{
    return SSL_SESSION_should_be_single_use(session);
}

int tls_session_resumable(const struct ssl_session_st *session)
{
    return SSL_SESSION_is_resumable(session);
}

static int tls_is_ip_literal(const char *name)
{
    unsigned char addr[16];
    return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx, buf_t *in, buf_t *out, const char *server_name,
                              void *user)
{
    struct tls_conn *c = calloc(1, sizeof *c);
    if (!c) {
        return NULL;
    }
    c->ctx = ctx;
    c->in = in;
    c->out = out;
    c->user = user;
    c->ssl = SSL_new(ctx->ssl_ctx);
    BIO *bio = BIO_new(tls_bio_method);
    if (!c->ssl || !bio) {
        BIO_free(bio);
        SSL_free(c->ssl);
        free(c);
        return NULL;
    }
    BIO_set_data(bio, c);
    SSL_set_bio(c->ssl, bio, bio);
    SSL_set_ex_data(c->ssl, tls_conn_index, c);
    if (ctx->is_server) {
        SSL_set_accept_state(c->ssl);
    } else {
        SSL_set_connect_state(c->ssl);
        if (server_name && *server_name) {
            if (tls_is_ip_literal(server_name)) {
                /* No SNI for address literals (RFC 6066 3); verify the IP. */
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), server_name);
            } else {
                SSL_set_tlsext_host_name(c->ssl, server_name);
                SSL_set1_host(c->ssl, server_name);
            }
        }
    }
    return c;
}

void tls_conn_free(struct tls_conn *c)
{
    if (c) {
        SSL_free(c->ssl);
        free(c);
    }
}

void tls_conn_set_session(struct tls_conn *c, struct ssl_session_st *session)
{
    SSL_set_session(c->ssl, session);
}

static enum tls_result tls_fail(struct tls_conn *c, int rc, const char *during)
{
    int e = SSL_get_error(c->ssl, rc);
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_CLOSED;
    case SSL_ERROR_SYSCALL:
        snprintf(c->error, sizeof c->error, "peer closed connection during %s", during);
        return TLS_ERROR;
    default:
        break;
    }
    if (c->dane_failed) {
        return TLS_ERROR; /* c->error is the DANE verdict */
    }
    /* Only a failed verification is a verify error: a handshake that ended
     * before the certificate (a protocol version nobody shares) leaves the
     * verify result at X509_V_ERR_INVALID_CALL, which says nothing. */
    unsigned long err = ERR_peek_last_error();
    long v = SSL_get_verify_result(c->ssl);
    if (ERR_GET_LIB(err) == ERR_LIB_SSL && ERR_GET_REASON(err) == SSL_R_CERTIFICATE_VERIFY_FAILED &&
        v != X509_V_OK && v != X509_V_ERR_INVALID_CALL) {
        snprintf(c->error, sizeof c->error, "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        return TLS_ERROR;
    }
    if (err) {
        snprintf(c->error, sizeof c->error, "%s: %s", during, ERR_reason_error_string(err));
    } else {
        snprintf(c->error, sizeof c->error, "%s failed (ssl error %d)", during, e);
    }
    return TLS_ERROR;
}

enum tls_result tls_handshake(struct tls_conn *c)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        return TLS_OK;
    }
    return tls_fail(c, rc, "handshake");
}

enum tls_result tls_read(struct tls_conn *c, buf_t *plain)
{
    for (;;) {
        ERR_clear_error();
        char *w = buf_reserve(plain, 16384);
        int rc = SSL_read(c->ssl, w, 16384);
        if (rc > 0) {
            buf_commit(plain, (size_t)rc);
            continue;
        }
        return tls_fail(c, rc, "read");
    }
}

enum tls_result tls_write(struct tls_conn *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        int chunk = len > INT_MAX / 2 ? INT_MAX / 2 : (int)len;
        ERR_clear_error();
        int rc = SSL_write(c->ssl, p, chunk);
        if (rc <= 0) {
            enum tls_result r = tls_fail(c, rc, "write");
            return r == TLS_WANT ? TLS_ERROR : r;
        }
        p += rc;
        len -= (size_t)rc;
    }
    return TLS_OK;
}

void tls_shutdown(struct tls_conn *c)
{
    ERR_clear_error();
    SSL_shutdown(c->ssl);
}

const char *tls_conn_error(const struct tls_conn *c)
{
    return c->error[0] ? c->error : "tls error";
}

/* The custom verify callback of a DANE connection: the TLSA set alone
 * decides (no CA bundle, and for DANE-EE no name or expiry check). */
static enum ssl_verify_result_t tls_dane_verify(SSL *ssl, uint8_t *out_alert)
{
    struct tls_conn *c = SSL_get_ex_data(ssl, tls_conn_index);
    const STACK_OF(CRYPTO_BUFFER) *chain = SSL_get0_peer_certificates(ssl);
    const uint8_t *ders[16];
    size_t lens[16], n = 0;
    for (size_t i = 0; chain && i < sk_CRYPTO_BUFFER_num(chain) && n < 16; i++) {
        const CRYPTO_BUFFER *b = sk_CRYPTO_BUFFER_value(chain, i);
        ders[n] = CRYPTO_BUFFER_data(b);
        lens[n++] = CRYPTO_BUFFER_len(b);
    }
    enum dane_result r =
        dane_match(c->dane, c->ndane, ders, lens, n, c->dane_host, c->error, sizeof c->error, NULL);
    /* What parsing and chain building left on the thread's error queue must
     * not make SSL_get_error call a later WANT_READ a failure. */
    ERR_clear_error();
    if (r != DANE_MATCHED) {
        c->dane_failed = 1;
        *out_alert = SSL_AD_BAD_CERTIFICATE;
        return ssl_verify_invalid;
    }
    snprintf(c->dane_verified, sizeof c->dane_verified, "DANE verified");
    return ssl_verify_ok;
}

void tls_conn_set_dane(struct tls_conn *c, const struct dane_tlsa *recs, size_t n, const char *host)
{
    if (dane_usable(recs, n) == 0) {
        /* An unusable set: TLS is mandatory but unauthenticated (RFC 7672
         * 2.2); the chain is still checked against the bundle, recorded only. */
        return;
    }
    c->dane = recs;
    c->ndane = n;
    c->dane_host = host;
    SSL_set_custom_verify(c->ssl, SSL_VERIFY_PEER, tls_dane_verify);
}

static void tls_name_line(X509_NAME *name, char *out, size_t outlen)
{
    if (!name) {
        out[0] = '\0';
        return;
    }
    X509_NAME_oneline(name, out, (int)outlen);
}

static void tls_peer_cert_info(const struct tls_conn *c, struct tls_info *info)
{
    const STACK_OF(CRYPTO_BUFFER) *chain = SSL_get0_peer_certificates(c->ssl);
    if (!chain || sk_CRYPTO_BUFFER_num(chain) == 0) {
        return;
    }
    const CRYPTO_BUFFER *leaf = sk_CRYPTO_BUFFER_value(chain, 0);
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256(CRYPTO_BUFFER_data(leaf), CRYPTO_BUFFER_len(leaf), digest);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof digest; i++) {
        info->sha256[2 * i] = hex[digest[i] >> 4];
        info->sha256[2 * i + 1] = hex[digest[i] & 15];
    }
    info->sha256[64] = '\0';
    const uint8_t *der = CRYPTO_BUFFER_data(leaf);
    X509 *x = d2i_X509(NULL, &der, (long)CRYPTO_BUFFER_len(leaf));
    if (x) {
        tls_name_line(X509_get_subject_name(x), info->subject, sizeof info->subject);
        tls_name_line(X509_get_issuer_name(x), info->issuer, sizeof info->issuer);
        X509_free(x);
    }
}

void tls_conn_info(const struct tls_conn *c, struct tls_info *info)
{
    memset(info, 0, sizeof *info);
    snprintf(info->version, sizeof info->version, "%s", SSL_get_version(c->ssl));
    const SSL_CIPHER *cipher = SSL_get_current_cipher(c->ssl);
    if (cipher) {
        snprintf(info->cipher, sizeof info->cipher, "%s", SSL_CIPHER_standard_name(cipher));
    }
    uint16_t curve = SSL_get_curve_id(c->ssl);
    const char *group = curve ? SSL_get_curve_name(curve) : NULL;
    snprintf(info->group, sizeof info->group, "%s", group ? group : "");
    info->resumed = SSL_session_reused(c->ssl);
    info->verify_result = SSL_get_verify_result(c->ssl);
    snprintf(info->verify_text, sizeof info->verify_text, "%s",
             info->verify_result != X509_V_OK ? X509_verify_cert_error_string(info->verify_result)
             : c->dane && info->resumed       ? "DANE verified (resumed session)"
             : c->dane                        ? c->dane_verified
                                              : "ok");
    tls_peer_cert_info(c, info);
}

const char *tls_verify_result_type(long verify_result)
{
    switch (verify_result) {
    case X509_V_OK:
        return NULL;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH: /* an exchanger named by its address (a route) */
        return "certificate-host-mismatch";
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return "certificate-expired";
    default:
        return "certificate-not-trusted";
    }
}
