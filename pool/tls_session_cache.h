/*
 * tls_session_cache - client TLS sessions kept for resumption
 *
 * Keyed by a destination string the caller builds from MX host name, port
 * and TLS policy (never the IP: one name, many addresses, one session).
 * Each key keeps up to TLS_SESSION_CACHE_PER_KEY sessions, newest first
 * (enough for the connections one destination has open at once),
 * because TLS 1.3 tickets are single use and a server sends several per
 * handshake. One cache per worker thread: no locks.
 *
 * Exports: tls_session_cache_new, tls_session_cache_free,
 * tls_session_cache_put, tls_session_cache_take, tls_session_cache_count.
 */
#ifndef RINGMAIL_TLS_SESSION_CACHE_H
#define RINGMAIL_TLS_SESSION_CACHE_H

#include <stddef.h>

#define TLS_SESSION_CACHE_PER_KEY 32

struct ssl_session_st;
struct tls_session_cache;

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
