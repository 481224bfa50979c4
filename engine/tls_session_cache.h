/*
 * tls_session_cache - client TLS sessions kept for resumption
 *
 * Keyed by the string tls_session_cache_key() builds from the server name
 * (SNI and certificate name), the server's address and port, and the TLS
 * policy: a session is offered only to the server, name and policy it was
 * made with. Every caller builds its key with that one function.
 * Each key keeps up to TLS_SESSION_CACHE_PER_KEY sessions, newest first
 * (enough for the connections one destination has open at once),
 * because TLS 1.3 tickets are single use and a server sends several per
 * handshake. One cache per worker thread: no locks.
 */
#ifndef RINGMAIL_TLS_SESSION_CACHE_H
#define RINGMAIL_TLS_SESSION_CACHE_H

#include <stddef.h>
#include <sys/socket.h>

#define TLS_SESSION_CACHE_PER_KEY 32

struct ssl_session_st;
struct tls_session_cache;

/*
 * tls_session_cache_key - write "NAME|ADDR:PORT|POLICY" into buf (size
 * bytes) and return buf, or NULL (no resumption) when it does not fit.
 * server_name is the SNI / certificate name, addr the server's address
 * with its port, policy the TLS policy's name. Neither the address nor a
 * policy name holds a '|', so two different triples never make one key.
 */
const char *tls_session_cache_key(char *buf, size_t size, const char *server_name,
                                  const struct sockaddr *addr, const char *policy);

struct tls_session_cache *tls_session_cache_new(void);
void tls_session_cache_free(struct tls_session_cache *cache);
/* Store a session (the cache takes over the caller's reference). */
void tls_session_cache_put(struct tls_session_cache *cache, const char *key,
                           struct ssl_session_st *session);
/*
 * A session to offer for key, or NULL. The caller owns one reference and
 * frees it with tls_session_free() once tls_conn_set_session() took its own.
 * Single-use (TLS 1.3) sessions leave the cache; reusable ones stay.
 */
struct ssl_session_st *tls_session_cache_take(struct tls_session_cache *cache, const char *key);
/* Sessions stored under key (for tests and metrics). */
size_t tls_session_cache_count(const struct tls_session_cache *cache, const char *key);

#endif
