/*
 * test_tls_session_cache - engine/tls_session_cache.h on its own: the one
 * key function (every field it is built from keeps sessions apart), and
 * the store's contract: newest first, single-use sessions handed out once,
 * reusable ones kept, a bounded stack per key that drops its oldest, and
 * sessions past their lifetime never offered. The sessions are made here
 * with BoringSSL (an id, a version, a time), no handshake needed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>

#include "engine/tls.h"
#include "engine/tls_session_cache.h"

static SSL_CTX *ssl_ctx;

static int setup(void **state)
{
    (void)state;
    ssl_ctx = SSL_CTX_new(TLS_method());
    return ssl_ctx ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    SSL_CTX_free(ssl_ctx);
    return 0;
}

/* A resumable session with id byte `id`; TLS 1.3 ones are single use. */
static SSL_SESSION *session(uint8_t id, uint16_t version, uint64_t made, uint32_t lifetime)
{
    SSL_SESSION *s = SSL_SESSION_new(ssl_ctx);
    assert_non_null(s);
    uint8_t sid[32];
    memset(sid, id, sizeof sid);
    assert_true(SSL_SESSION_set1_id(s, sid, sizeof sid));
    assert_true(SSL_SESSION_set_protocol_version(s, version));
    SSL_SESSION_set_time(s, made);
    SSL_SESSION_set_timeout(s, lifetime);
    return s;
}

static SSL_SESSION *fresh(uint8_t id, uint16_t version)
{
    return session(id, version, (uint64_t)time(NULL), 3600);
}

static int id_of(const SSL_SESSION *s)
{
    unsigned len = 0;
    const uint8_t *sid = SSL_SESSION_get_id(s, &len);
    return len ? sid[0] : -1;
}

static struct sockaddr_storage v4(const char *ip, unsigned port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    assert_int_equal(inet_pton(AF_INET, ip, &a->sin_addr), 1);
    return ss;
}

static void test_key_tells_every_field_apart(void **state)
{
    (void)state;
    struct sockaddr_storage a = v4("192.0.2.1", 25), b = v4("192.0.2.2", 25),
                            p = v4("192.0.2.1", 587);
    struct sockaddr_storage a6;
    memset(&a6, 0, sizeof a6);
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a6;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(25);
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &s6->sin6_addr), 1);
    const struct sockaddr *sa = (const struct sockaddr *)&a;

    char base[300], k[300];
    assert_ptr_equal(tls_session_cache_key(base, sizeof base, "mx.example", sa, "verify"), base);
    assert_string_equal(base, "mx.example|192.0.2.1:25|verify");
    /* The same destination: the same key. */
    assert_non_null(tls_session_cache_key(k, sizeof k, "mx.example", sa, "verify"));
    assert_string_equal(k, base);

    struct {
        const char *name;
        const struct sockaddr *addr;
        const char *policy;
    } other[] = {
        {"mx2.example", sa, "verify"},                          /* server name */
        {"mx.example", (const struct sockaddr *)&b, "verify"},  /* address */
        {"mx.example", (const struct sockaddr *)&p, "verify"},  /* port */
        {"mx.example", (const struct sockaddr *)&a6, "verify"}, /* family */
        {"mx.example", sa, "opportunistic"},                    /* policy */
        {"mx.example|192.0.2.1:25", sa, "verify"},              /* a '|' in the name */
    };
    char keys[6][300];
    for (size_t i = 0; i < 6; i++) {
        assert_non_null(tls_session_cache_key(keys[i], sizeof keys[i], other[i].name, other[i].addr,
                                              other[i].policy));
        assert_string_not_equal(keys[i], base);
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(keys[i], keys[j]);
        }
    }
    assert_string_equal(keys[3], "mx.example|[2001:db8::1]:25|verify");

    /* A key that does not fit is no key (no resumption), never a cut one
     * that another destination could share. */
    size_t need = strlen(base) + 1;
    assert_null(tls_session_cache_key(k, need - 1, "mx.example", sa, "verify"));
    assert_non_null(tls_session_cache_key(k, need, "mx.example", sa, "verify"));
}

static void test_single_use_sessions_are_taken_once(void **state)
{
    (void)state;
    struct tls_session_cache *c = tls_session_cache_new();
    tls_session_cache_put(c, "k", fresh(1, TLS1_3_VERSION));
    tls_session_cache_put(c, "k", fresh(2, TLS1_3_VERSION));
    assert_int_equal(tls_session_cache_count(c, "k"), 2);

    SSL_SESSION *first = tls_session_cache_take(c, "k");
    assert_non_null(first);
    assert_int_equal(id_of(first), 2); /* newest first */
    assert_int_equal(tls_session_cache_count(c, "k"), 1);
    SSL_SESSION *second = tls_session_cache_take(c, "k");
    assert_non_null(second);
    assert_int_equal(id_of(second), 1);
    assert_null(tls_session_cache_take(c, "k"));
    assert_int_equal(tls_session_cache_count(c, "k"), 0);
    tls_session_free(first);
    tls_session_free(second);
    tls_session_cache_free(c);
}

static void test_reusable_sessions_stay(void **state)
{
    (void)state;
    struct tls_session_cache *c = tls_session_cache_new();
    tls_session_cache_put(c, "k", fresh(7, TLS1_2_VERSION));
    SSL_SESSION *a = tls_session_cache_take(c, "k");
    SSL_SESSION *b = tls_session_cache_take(c, "k");
    assert_non_null(a);
    assert_ptr_equal(a, b); /* the same session, one reference for each taker */
    assert_int_equal(id_of(a), 7);
    assert_int_equal(tls_session_cache_count(c, "k"), 1);
    tls_session_free(a);
    tls_session_free(b);
    tls_session_cache_free(c); /* frees the cache's own reference */
}

static void test_keys_are_kept_apart(void **state)
{
    (void)state;
    struct tls_session_cache *c = tls_session_cache_new();
    tls_session_cache_put(c, "a|192.0.2.1:25|verify", fresh(1, TLS1_3_VERSION));
    assert_null(tls_session_cache_take(c, "a|192.0.2.1:25|opportunistic"));
    assert_null(tls_session_cache_take(c, "a|192.0.2.2:25|verify"));
    assert_null(tls_session_cache_take(c, "b|192.0.2.1:25|verify"));
    assert_int_equal(tls_session_cache_count(c, "a|192.0.2.1:25|verify"), 1);

    /* Enough keys to make the table grow: each keeps its own session. */
    char key[32];
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof key, "host%d", i);
        tls_session_cache_put(c, key, fresh((uint8_t)i, TLS1_3_VERSION));
    }
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof key, "host%d", i);
        assert_int_equal(tls_session_cache_count(c, key), 1);
        SSL_SESSION *s = tls_session_cache_take(c, key);
        assert_non_null(s);
        assert_int_equal(id_of(s), i & 0xff);
        tls_session_free(s);
    }
    tls_session_cache_free(c);
}

static void test_capacity_drops_the_oldest(void **state)
{
    (void)state;
    struct tls_session_cache *c = tls_session_cache_new();
    for (int i = 0; i <= TLS_SESSION_CACHE_PER_KEY; i++) {
        tls_session_cache_put(c, "k", fresh((uint8_t)i, TLS1_3_VERSION));
    }
    assert_int_equal(tls_session_cache_count(c, "k"), TLS_SESSION_CACHE_PER_KEY);
    for (int i = TLS_SESSION_CACHE_PER_KEY; i >= 1; i--) {
        SSL_SESSION *s = tls_session_cache_take(c, "k");
        assert_non_null(s);
        assert_int_equal(id_of(s), i); /* id 0, the oldest, was dropped */
        tls_session_free(s);
    }
    assert_null(tls_session_cache_take(c, "k"));
    tls_session_cache_free(c);
}

static void test_expired_sessions_are_never_offered(void **state)
{
    (void)state;
    struct tls_session_cache *c = tls_session_cache_new();
    uint64_t now = (uint64_t)time(NULL);
    tls_session_cache_put(c, "k", fresh(1, TLS1_3_VERSION));
    tls_session_cache_put(c, "k", session(2, TLS1_3_VERSION, now - 1000, 10)); /* expired */
    tls_session_cache_put(c, "k", session(3, TLS1_2_VERSION, now - 1000, 10)); /* expired */
    assert_int_equal(tls_session_cache_count(c, "k"), 3);
    SSL_SESSION *s = tls_session_cache_take(c, "k");
    assert_non_null(s);
    assert_int_equal(id_of(s), 1);
    assert_int_equal(tls_session_cache_count(c, "k"), 0); /* the dead ones went too */
    tls_session_free(s);

    /* Without an id or ticket a session cannot resume: not offered. */
    SSL_SESSION *blank = SSL_SESSION_new(ssl_ctx);
    assert_non_null(blank);
    tls_session_cache_put(c, "k", blank);
    assert_null(tls_session_cache_take(c, "k"));
    tls_session_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_tells_every_field_apart),
        cmocka_unit_test(test_single_use_sessions_are_taken_once),
        cmocka_unit_test(test_reusable_sessions_stay),
        cmocka_unit_test(test_keys_are_kept_apart),
        cmocka_unit_test(test_capacity_drops_the_oldest),
        cmocka_unit_test(test_expired_sessions_are_never_offered),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
