/*
 * tls_session_cache - client TLS sessions kept for resumption. See the header.
 *
 * A chained hash table of keys, each with a small stack of sessions. The
 * table doubles when it holds more keys than buckets. Expired sessions are
 * dropped when met, so a destination not seen for a while costs nothing.
 */
#include "tls_session_cache.h"

#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "netaddr.h"
#include "tls.h"

struct tls_session_entry {
    struct tls_session_entry *next;
    char *key;                                                  /* owned */
    struct ssl_session_st *sessions[TLS_SESSION_CACHE_PER_KEY]; /* owned references, [0] newest */
    size_t count;
};

struct tls_session_cache {
    struct tls_session_entry **buckets; /* owned */
    size_t nbuckets, nkeys;
};

static uint64_t tls_session_cache_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    }
    return h;
}

const char *tls_session_cache_key(char *buf, size_t size, const char *server_name,
                                  const struct sockaddr *addr, const char *policy)
{
    char where[64];
    netaddr_format(addr, where, sizeof where);
    int n = snprintf(buf, size, "%s|%s|%s", server_name ? server_name : "", where,
                     policy ? policy : "");
    return n >= 0 && (size_t)n < size ? buf : NULL;
}

struct tls_session_cache *tls_session_cache_new(void)
{
    struct tls_session_cache *c = calloc(1, sizeof *c);
    if (!c) {
        return NULL;
    }
    c->nbuckets = 64;
    c->buckets = calloc(c->nbuckets, sizeof *c->buckets);
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    return c;
}

static void tls_session_entry_free(struct tls_session_entry *e)
{
    for (size_t i = 0; i < e->count; i++) {
        tls_session_free(e->sessions[i]);
    }
    free(e->key);
    free(e);
}

void tls_session_cache_free(struct tls_session_cache *c)
{
    if (!c) {
        return;
    }
    for (size_t b = 0; b < c->nbuckets; b++) {
        struct tls_session_entry *e = c->buckets[b], *next;
        for (; e; e = next) {
            next = e->next;
            tls_session_entry_free(e);
        }
    }
    free(c->buckets);
    free(c);
}

static struct tls_session_entry *tls_session_cache_find(const struct tls_session_cache *c,
                                                        const char *key)
{
    struct tls_session_entry *e = c->buckets[tls_session_cache_hash(key) & (c->nbuckets - 1)];
    for (; e; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            return e;
        }
    }
    return NULL;
}

static void tls_session_cache_grow(struct tls_session_cache *c)
{
    size_t n = c->nbuckets * 2;
    struct tls_session_entry **nb = calloc(n, sizeof *nb);
    if (!nb) {
        return; /* keep the longer chains; still correct */
    }
    for (size_t b = 0; b < c->nbuckets; b++) {
        struct tls_session_entry *e = c->buckets[b], *next;
        for (; e; e = next) {
            next = e->next;
            size_t i = tls_session_cache_hash(e->key) & (n - 1);
            e->next = nb[i];
            nb[i] = e;
        }
    }
    free(c->buckets);
    c->buckets = nb;
    c->nbuckets = n;
}

static int tls_session_expired(const SSL_SESSION *s, uint64_t now)
{
    return !SSL_SESSION_is_resumable(s) ||
           SSL_SESSION_get_time(s) + SSL_SESSION_get_timeout(s) <= now;
}

void tls_session_cache_put(struct tls_session_cache *c, const char *key,
                           struct ssl_session_st *session)
{
    struct tls_session_entry *e = tls_session_cache_find(c, key);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e || !(e->key = strdup(key))) {
            free(e);
            tls_session_free(session);
            return;
        }
        if (c->nkeys >= c->nbuckets) {
            tls_session_cache_grow(c);
        }
        size_t i = tls_session_cache_hash(key) & (c->nbuckets - 1);
        e->next = c->buckets[i];
        c->buckets[i] = e;
        c->nkeys++;
    }
    if (e->count == TLS_SESSION_CACHE_PER_KEY) {
        tls_session_free(e->sessions[--e->count]); /* drop the oldest */
    }
    memmove(&e->sessions[1], &e->sessions[0], e->count * sizeof e->sessions[0]);
    e->sessions[0] = session;
    e->count++;
}

struct ssl_session_st *tls_session_cache_take(struct tls_session_cache *c, const char *key)
{
    struct tls_session_entry *e = tls_session_cache_find(c, key);
    uint64_t now = (uint64_t)time(NULL);
    while (e && e->count > 0) {
        SSL_SESSION *s = e->sessions[0];
        if (tls_session_expired(s, now)) {
            memmove(&e->sessions[0], &e->sessions[1], (e->count - 1) * sizeof e->sessions[0]);
            e->count--;
            tls_session_free(s);
            continue;
        }
        if (SSL_SESSION_should_be_single_use(s)) {
            memmove(&e->sessions[0], &e->sessions[1], (e->count - 1) * sizeof e->sessions[0]);
            e->count--;
            return s;
        }
        SSL_SESSION_up_ref(s);
        return s;
    }
    return NULL;
}

size_t tls_session_cache_count(const struct tls_session_cache *c, const char *key)
{
    const struct tls_session_entry *e = tls_session_cache_find(c, key);
    return e ? e->count : 0;
}
