/*
 * test_tls - BoringSSL over memory buffers and the client session cache:
 * real handshakes between a client and a server tls_conn, bytes moved by
 * hand between their buffers (no sockets), so resumption, version floors
 * and the recorded TLS facts are checked exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/crypto.h"
#include "engine/dane.h"
#include "engine/tls.h"
#include "engine/tls_session_cache.h"

#include "unit_cert.h"

static char cert_path[64], key_path[64];

static int setup(void **state)
{
    (void)state;
    if (unit_write_temp(cert_path, "/tmp/ringmail-ut-cert.XXXXXX", unit_cert) < 0 ||
        unit_write_temp(key_path, "/tmp/ringmail-ut-key.XXXXXX", unit_key) < 0) {
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(cert_path);
    unlink(key_path);
    return 0;
}

struct pair {
    buf_t c_in, c_out, s_in, s_out; /* c_out feeds s_in, s_out feeds c_in */
    struct tls_conn *client, *server;
    struct tls_session_cache *cache;
};

static int on_session(void *user, struct ssl_session_st *session)
{
    struct pair *p = user;
    tls_session_cache_put(p->cache, "unit.test:25:required", session);
    return 1;
}

static void pair_move(struct pair *p)
{
    buf_append(&p->s_in, buf_data(&p->c_out), buf_len(&p->c_out));
    buf_reset(&p->c_out);
    buf_append(&p->c_in, buf_data(&p->s_out), buf_len(&p->s_out));
    buf_reset(&p->s_out);
}

/* Drive both sides until the client's handshake ends; returns its result. */
static enum tls_result pair_handshake(struct pair *p)
{
    enum tls_result c = TLS_WANT, s = TLS_WANT;
    for (int i = 0; i < 20 && c == TLS_WANT; i++) {
        c = tls_handshake(p->client);
        pair_move(p);
        if (s == TLS_WANT) {
            s = tls_handshake(p->server);
        }
        pair_move(p);
    }
    if (c == TLS_OK) {
        tls_handshake(p->server);
        pair_move(p);
    }
    return c;
}

static void pair_open(struct pair *p, struct tls_ctx *cctx, struct tls_ctx *sctx,
                      struct tls_session_cache *cache)
{
    memset(p, 0, sizeof *p);
    p->cache = cache;
    p->client = tls_conn_new(cctx, &p->c_in, &p->c_out, "unit.test", p);
    p->server = tls_conn_new(sctx, &p->s_in, &p->s_out, NULL, NULL);
    struct ssl_session_st *s = tls_session_cache_take(cache, "unit.test:25:required");
    if (s) {
        tls_conn_set_session(p->client, s);
        tls_session_free(s);
    }
}

/* Application data both ways: the server's first write carries the TLS 1.3
 * tickets, which the client takes in during its next read. */
static void pair_exchange(struct pair *p)
{
    buf_t plain = BUF_INIT;
    assert_int_equal(tls_write(p->client, "EHLO x\r\n", 8), TLS_OK);
    pair_move(p);
    assert_int_equal(tls_read(p->server, &plain), TLS_WANT);
    assert_int_equal(buf_len(&plain), 8);
    buf_reset(&plain);
    assert_int_equal(tls_write(p->server, "250 ok\r\n", 8), TLS_OK);
    pair_move(p);
    assert_int_equal(tls_read(p->client, &plain), TLS_WANT);
    assert_memory_equal(buf_data(&plain), "250 ok\r\n", 8);
    buf_free(&plain);
}

static void pair_close(struct pair *p)
{
    tls_conn_free(p->client);
    tls_conn_free(p->server);
    buf_free(&p->c_in);
    buf_free(&p->c_out);
    buf_free(&p->s_in);
    buf_free(&p->s_out);
}

static struct tls_ctx *server_ctx(uint16_t max)
{
    char err[256];
    struct tls_server_options so = {
        .cert_file = cert_path, .key_file = key_path, .max_version = max};
    struct tls_ctx *c = tls_server_ctx_new(&so, err, sizeof err);
    assert_non_null(c);
    return c;
}

static void test_handshake_records_facts_and_resumes(void **state)
{
    (void)state;
    char err[256];
    struct tls_client_options co = {0};
    struct tls_ctx *cctx = tls_client_ctx_new(&co, err, sizeof err);
    struct tls_ctx *sctx = server_ctx(0);
    assert_non_null(cctx);
    tls_ctx_set_session_cb(cctx, on_session);
    struct tls_session_cache *cache = tls_session_cache_new();
    struct pair p;
    struct tls_info info;

    pair_open(&p, cctx, sctx, cache);
    assert_int_equal(pair_handshake(&p), TLS_OK);
    tls_conn_info(p.client, &info);
    assert_string_equal(info.version, "TLSv1.3");
    assert_string_equal(info.group, "X25519");
    assert_true(strncmp(info.cipher, "TLS_", 4) == 0);
    assert_false(info.resumed);
    assert_int_not_equal(info.verify_result, 0); /* self-signed: recorded, not fatal */
    assert_string_equal(info.subject, "/CN=unit.test");
    assert_int_equal(strlen(info.sha256), 64);
    pair_exchange(&p);
    /* BoringSSL servers send two single-use TLS 1.3 tickets. */
    assert_int_equal(tls_session_cache_count(cache, "unit.test:25:required"), 2);
    pair_close(&p);

    pair_open(&p, cctx, sctx, cache);
    assert_int_equal(tls_session_cache_count(cache, "unit.test:25:required"), 1);
    assert_int_equal(pair_handshake(&p), TLS_OK);
    tls_conn_info(p.client, &info);
    assert_true(info.resumed);
    pair_close(&p);

    tls_session_cache_free(cache);
    tls_ctx_free(cctx);
    tls_ctx_free(sctx);
}

static void test_verify_refuses_untrusted_and_old_tls(void **state)
{
    (void)state;
    char err[256];
    struct tls_client_options verify = {.verify_peer = 1};
    struct tls_client_options trusting = {.ca_file = cert_path, .verify_peer = 1};
    struct tls_client_options plain = {0};
    struct tls_ctx *vctx = tls_client_ctx_new(&verify, err, sizeof err);
    struct tls_ctx *tctx = tls_client_ctx_new(&trusting, err, sizeof err);
    struct tls_ctx *pctx = tls_client_ctx_new(&plain, err, sizeof err);
    struct tls_ctx *sctx = server_ctx(0);
    struct tls_ctx *old = server_ctx(TLS_VERSION_1_1);
    struct tls_session_cache *cache = tls_session_cache_new();
    struct pair p;

    pair_open(&p, vctx, sctx, cache);
    assert_int_equal(pair_handshake(&p), TLS_ERROR);
    assert_non_null(strstr(tls_conn_error(p.client), "certificate verify failed"));
    pair_close(&p);

    pair_open(&p, tctx, sctx, cache);
    assert_int_equal(pair_handshake(&p), TLS_OK); /* trusted and the name matches */
    pair_close(&p);

    pair_open(&p, pctx, old, cache);
    assert_int_equal(pair_handshake(&p), TLS_ERROR); /* TLS 1.1 is below our floor */
    pair_close(&p);

    tls_session_cache_free(cache);
    tls_ctx_free(vctx);
    tls_ctx_free(tctx);
    tls_ctx_free(pctx);
    tls_ctx_free(sctx);
    tls_ctx_free(old);
}

static void test_cache_keeps_destinations_apart(void **state)
{
    (void)state;
    struct tls_session_cache *cache = tls_session_cache_new();
    assert_null(tls_session_cache_take(cache, "a:25:required"));
    assert_int_equal(tls_session_cache_count(cache, "b:25:required"), 0);
    tls_session_cache_free(cache);
}

/* The unit certificate's DER, from its PEM. */
static size_t unit_cert_der(uint8_t *out, size_t size)
{
    const char *b = strchr(unit_cert, '\n') + 1, *e = strstr(unit_cert, "-----END");
    char b64[2048];
    size_t n = 0, got = 0;
    for (; b < e && n < sizeof b64; b++) {
        if (*b != '\n') {
            b64[n++] = *b;
        }
    }
    assert_int_equal(crypto_base64_decode(out, size, &got, b64, n), 0);
    return got;
}

static void test_dane_authenticates_by_tlsa_alone(void **state)
{
    (void)state;
    char err[256];
    /* As the pool does: a context that verifies nothing by itself. */
    struct tls_client_options plain = {0};
    struct tls_ctx *pctx = tls_client_ctx_new(&plain, err, sizeof err);
    struct tls_ctx *sctx = server_ctx(0);
    struct tls_session_cache *cache = tls_session_cache_new();
    uint8_t der[1024], digest[CRYPTO_SHA256_LEN], wrong[CRYPTO_SHA256_LEN];
    struct crypto_sha256 h;
    crypto_sha256_init(&h);
    crypto_sha256_update(&h, der, unit_cert_der(der, sizeof der));
    crypto_sha256_final(&h, digest);
    memcpy(wrong, digest, sizeof wrong);
    wrong[0] ^= 1;
    struct dane_tlsa good = {3, 0, 1, digest, sizeof digest};
    struct dane_tlsa bad = {3, 0, 1, wrong, sizeof wrong};
    struct dane_tlsa pkix = {1, 0, 1, wrong, sizeof wrong}; /* unusable for SMTP */
    struct pair p;
    struct tls_info info;

    /* a match: no CA and no name check ("unit.test" is not the MX's name here) */
    pair_open(&p, pctx, sctx, cache);
    tls_conn_set_dane(p.client, &good, 1, "mx.example");
    assert_int_equal(pair_handshake(&p), TLS_OK);
    tls_conn_info(p.client, &info);
    assert_int_equal(info.verify_result, 0);
    assert_string_equal(info.verify_text, "DANE verified");
    pair_close(&p);

    /* no match: the handshake fails, whatever the context allows */
    pair_open(&p, pctx, sctx, cache);
    tls_conn_set_dane(p.client, &bad, 1, "mx.example");
    assert_int_equal(pair_handshake(&p), TLS_ERROR);
    char want[120];
    snprintf(want, sizeof want,
             "DANE: no TLSA record matches the server's certificate (3 0 1 %02x%02x", wrong[0],
             wrong[1]);
    assert_true(strncmp(tls_conn_error(p.client), want, strlen(want)) == 0);
    pair_close(&p);

    /* an unusable set changes nothing: TLS, unauthenticated */
    pair_open(&p, pctx, sctx, cache);
    tls_conn_set_dane(p.client, &pkix, 1, "mx.example");
    assert_int_equal(pair_handshake(&p), TLS_OK);
    tls_conn_info(p.client, &info);
    assert_string_not_equal(info.verify_text, "DANE verified");
    pair_close(&p);

    tls_session_cache_free(cache);
    tls_ctx_free(pctx);
    tls_ctx_free(sctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_records_facts_and_resumes),
        cmocka_unit_test(test_verify_refuses_untrusted_and_old_tls),
        cmocka_unit_test(test_cache_keeps_destinations_apart),
        cmocka_unit_test(test_dane_authenticates_by_tlsa_alone),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
