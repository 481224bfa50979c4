/*
 * client_conn - one outbound SMTP connection on the ring
 *
 * Owns the socket, the TLS state, the SMTP state machine and their
 * buffers, and moves bytes between them: received ciphertext goes through
 * tls_read into the machine, the machine's commands go through tls_write
 * into the send queue, and one SEND is in flight at a time. A single
 * timer covers connect, handshake and every SMTP wait; each wait's
 * deadline runs from its start, not from the last byte received. The connection
 * frees itself once closed and no operation of it is left in the kernel;
 * on_closed runs first, after every message it held has its outcome.
 */
#ifndef RINGMAIL_CLIENT_CONN_H
#define RINGMAIL_CLIENT_CONN_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "loop.h"
#include "smtp_client.h"
#include "tls.h"

struct tls_session_cache;
struct client_conn;
struct dane_tlsa;

struct client_conn_config {
    struct sockaddr_storage addr; /* the server */
    socklen_t addrlen;
    struct sockaddr_storage source; /* local address to bind, when source_len > 0 */
    socklen_t source_len;
    const char *server_name; /* SNI and certificate name (MX host name); may be an IP */
    struct tls_ctx *tls_ctx; /* NULL only with policy none */
    struct tls_session_cache *session_cache; /* the worker's; NULL: no resumption */
    const char *session_key;                 /* tls_session_cache_key()'s; NULL: none */
    /* DANE: the TLSA set that authenticates the server (tls_conn_set_dane;
     * server_name is the TLSA base domain); NULL: none. Borrowed. */
    const struct dane_tlsa *dane;
    size_t ndane;
    struct smtp_client_config smtp;
    unsigned timeout_connect_ms;
    unsigned timeout_tls_ms;
};

struct client_conn_times {
    uint64_t started_ms; /* connect submitted */
    uint64_t connect_ms; /* TCP connect took */
    uint64_t tls_ms;     /* handshake took (0 without TLS) */
};

typedef void (*client_conn_closed_cb)(void *owner, struct client_conn *conn);

/* cfg's strings and objects must outlive the connection. */
struct client_conn *client_conn_new(struct loop *loop, const struct client_conn_config *cfg,
                                    const struct smtp_client_ops *ops,
                                    client_conn_closed_cb on_closed, void *owner);
/* Open the socket and connect. Failures are reported through the ops
 * (session_failed, reason connect_failed) and on_closed, never here.
 * Out of file descriptors (EMFILE, ENFILE) is not a failure: the connection
 * waits and tries again until one is free, with no outcome for anyone. */
void client_conn_start(struct client_conn *conn);
/* End the session now for a local reason (the owner is shutting down):
 * what it holds is settled as deferred with reason and text, then on_closed. */
void client_conn_abort(struct client_conn *conn, const char *reason, const char *text);
/* Once per client TLS context, before connections use it: route new
 * sessions into each connection's session cache. */
void client_conn_tls_setup(struct tls_ctx *ctx);
/* A worker thread that ran connections calls this before it exits. */
void client_conn_thread_done(void);
/* The owner has a message for an idle session (or wants it to QUIT):
 * ask the machine again. No effect unless the session is idle. */
void client_conn_resume(struct client_conn *conn);
/* 1 while the session is idle, waiting for client_conn_resume. */
int client_conn_idle(const struct client_conn *conn);
/* TLS facts of the session, or NULL when it runs in plaintext. */
const struct tls_info *client_conn_tls(const struct client_conn *conn);
/* The TLS facts of a handshake that failed (its verify result says why a
 * certificate was refused: RFC 8460's result type), or NULL. */
const struct tls_info *client_conn_tls_failed(const struct client_conn *conn);
const struct client_conn_times *client_conn_times(const struct client_conn *conn);
/* The SMTP machine (for capabilities and the opportunistic-fallback flag). */
const struct smtp_client *client_conn_smtp(const struct client_conn *conn);
/* The connection's number in trace lines (engine/trace.h), for an owner
 * that traces its own machine for this connection. */
unsigned long client_conn_trace_id(const struct client_conn *conn);

#endif
