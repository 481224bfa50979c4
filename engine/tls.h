/*
 * tls - BoringSSL over memory buffers
 *
 * The ring moves ciphertext; this module turns it into plaintext and back.
 * A tls_conn reads ciphertext from an inbound buf_t and appends ciphertext
 * to an outbound buf_t, both owned by the caller (the connection), through
 * a custom BIO: no socket is ever touched here, and no copy is made beyond
 * the one into the caller's buffers. After every call the caller sends
 * whatever appeared in the outbound buffer.
 *
 * The protocol code never calls BoringSSL itself: everything it needs
 * (handshake, read, write, close, the facts for the delivery record) is
 * here. Contexts are shared by threads; a tls_conn belongs to one thread.
 *
 * Policy (the TLS policy table of DESIGN.md) is the caller's: this module
 * reports what happened (verify result, version) and never decides to send.
 * Minimum version is TLS 1.2 for clients; servers may be capped lower with
 * tls_server_ctx_new's max_version, to prove old servers are refused.
 * Both kinds of context share one set-up (tls.c's tls_ctx_new).
 */
#ifndef RINGMAIL_TLS_H
#define RINGMAIL_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct tls_ctx;
struct tls_conn;
struct ssl_session_st; /* BoringSSL's SSL_SESSION, opaque to callers */

enum tls_result {
    TLS_ERROR = -1, /* fatal; tls_conn_error() says why */
    TLS_OK = 0,     /* done (handshake complete / data processed) */
    TLS_WANT = 1,   /* needs more inbound ciphertext */
    TLS_CLOSED = 2, /* the peer sent close_notify */
};

#define TLS_VERSION_1_0 0x0301
#define TLS_VERSION_1_1 0x0302
#define TLS_VERSION_1_2 0x0303
#define TLS_VERSION_1_3 0x0304

struct tls_client_options {
    const char *ca_file;  /* NULL: /etc/ssl/certs/ca-certificates.crt */
    int verify_peer;      /* 1: handshake fails unless chain + host name verify */
    uint16_t min_version; /* 0: TLS 1.2 */
    uint16_t max_version; /* 0: TLS 1.3 */
};

struct tls_server_options {
    const char *cert_file; /* PEM chain */
    const char *key_file;  /* PEM key */
    uint16_t min_version;  /* 0: TLS 1.0 (a sink may emulate old servers) */
    uint16_t max_version;  /* 0: TLS 1.3 */
    int no_tickets;        /* 1: issue no session tickets */
};

/* Return NULL and write a reason into err (errlen bytes) on failure. */
struct tls_ctx *tls_client_ctx_new(const struct tls_client_options *opt, char *err, size_t errlen);
struct tls_ctx *tls_server_ctx_new(const struct tls_server_options *opt, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *ctx);

/*
 * New sessions (TLS 1.2 tickets at handshake end, TLS 1.3 tickets after it)
 * are handed to cb together with the conn's user pointer. If cb returns 1
 * it owns one reference to the session (free with tls_session_free);
 * returning 0 leaves it to the library.
 */
typedef int (*tls_session_cb)(void *user, struct ssl_session_st *session);
void tls_ctx_set_session_cb(struct tls_ctx *ctx, tls_session_cb cb);
void tls_session_free(struct ssl_session_st *session);
/* Sessions that may be offered only once (TLS 1.3). */
int tls_session_single_use(const struct ssl_session_st *session);
/* Whether the session can still be offered at all. */
int tls_session_resumable(const struct ssl_session_st *session);

/*
 * in: ciphertext received, consumed as the library reads it.
 * out: ciphertext to send, appended to.
 * server_name: SNI and the name to verify (clients); NULL for servers.
 */
struct tls_conn *tls_conn_new(struct tls_ctx *ctx, buf_t *in, buf_t *out, const char *server_name,
                              void *user);
void tls_conn_free(struct tls_conn *c);

/* Offer a cached session on the next handshake; the caller keeps its reference. */
void tls_conn_set_session(struct tls_conn *c, struct ssl_session_st *session);

struct dane_tlsa;
/* DANE (RFC 7672) for a client connection, before its handshake: the
 * usable records of recs (n of them; borrowed, they must outlive c) alone
 * authenticate the server, for the MX host name host (DANE-TA's name
 * check; borrowed). No match fails the handshake and tls_conn_error says
 * "DANE: no TLSA record matches the server's certificate (3 1 1 ...)";
 * tls_info.verify_text says "DANE verified" when one matched. A set
 * without usable records changes nothing: TLS without authentication. */
void tls_conn_set_dane(struct tls_conn *c, const struct dane_tlsa *recs, size_t n,
                       const char *host);

enum tls_result tls_handshake(struct tls_conn *c);
/* Decrypt everything available into plain (appended). TLS_WANT when the
 * inbound buffer is drained (normal); TLS_CLOSED on close_notify. */
enum tls_result tls_read(struct tls_conn *c, buf_t *plain);
/* Encrypt all of data into the outbound buffer. */
enum tls_result tls_write(struct tls_conn *c, const void *data, size_t len);
/* Queue close_notify. */
void tls_shutdown(struct tls_conn *c);
const char *tls_conn_error(const struct tls_conn *c);

struct tls_info {
    char version[16];     /* "TLSv1.3" */
    char cipher[64];      /* "TLS_AES_128_GCM_SHA256" */
    char group[32];       /* "X25519" */
    int resumed;          /* abbreviated handshake */
    long verify_result;   /* X509_V_OK (0) or the verify error */
    char verify_text[96]; /* "ok" or the error string */
    char subject[256];    /* peer leaf certificate, one line */
    char issuer[256];
    char sha256[65]; /* hex SHA-256 of the leaf certificate (DER) */
};
void tls_conn_info(const struct tls_conn *c, struct tls_info *info);

/* The RFC 8460 result type of a verify error (tls_info.verify_result):
 * "certificate-host-mismatch", "certificate-expired" or
 * "certificate-not-trusted"; NULL when it verified. */
const char *tls_verify_result_type(long verify_result);

#endif
