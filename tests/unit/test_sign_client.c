/*
 * test_sign_client - the DKIM signer processes: the frames between ringmail
 * and ringmail-signer (whole, cut at every byte, too long, of an unknown
 * type), then the real build/ringmail-signer (OpenSSL 3) started with PEM
 * files: its signatures, through dkim_sign and dkim_sign_all (dual), are
 * byte for byte those of the in-process BoringSSL signer (RSASSA-PKCS1-v1_5
 * and Ed25519 are deterministic); a key it cannot read, a binary that is
 * not there, and a signer killed under the client, each with its message.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "campaign/dkim.h"
#include "campaign/sign_client.h"
#include "campaign/sign_proto.h"

/* RFC 8463 A.1's Ed25519 key. */
static const char ed_pem[] = "-----BEGIN PRIVATE KEY-----\n"
                             "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n"
                             "-----END PRIVATE KEY-----\n";

static const char message[] = "From: Joe <joe@acme.example>\r\n"
                              "To: ann@example.org\r\n"
                              "Subject: Hello\r\n"
                              "Message-ID: <1@acme.example>\r\n"
                              "\r\n"
                              "Hi.\r\n";

static char dir[64], rsa_path[96], ed_path[96], bad_path[96];
static char *rsa_text; /* the RSA key's PEM */

static const char *cstr(buf_t *b)
{
    buf_reserve(b, 1)[0] = '\0';
    return buf_data(b);
}

/* write_file - text into path */
static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    char self[512], signer[600];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = '\0';
    *strrchr(self, '/') = '\0'; /* build/tests */
    snprintf(signer, sizeof signer, "%s/../ringmail-signer", self);
    setenv("RINGMAIL_SIGNER", signer, 1);
    snprintf(dir, sizeof dir, "/tmp/test_sign_client.XXXXXX");
    if (!mkdtemp(dir)) {
        return -1;
    }
    RSA *rsa = RSA_new();
    BIGNUM *e = BN_new();
    BN_set_word(e, RSA_F4);
    RSA_generate_key_ex(rsa, 2048, e, NULL);
    BN_free(e);
    EVP_PKEY *pkey = EVP_PKEY_new();
    EVP_PKEY_assign_RSA(pkey, rsa);
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL);
    const uint8_t *p;
    size_t len;
    BIO_mem_contents(bio, &p, &len);
    rsa_text = strndup((const char *)p, len);
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    snprintf(rsa_path, sizeof rsa_path, "%s/rsa.pem", dir);
    snprintf(ed_path, sizeof ed_path, "%s/ed.pem", dir);
    snprintf(bad_path, sizeof bad_path, "%s/bad.pem", dir);
    write_file(rsa_path, rsa_text);
    write_file(ed_path, ed_pem);
    write_file(bad_path, "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(rsa_path);
    unlink(ed_path);
    unlink(bad_path);
    rmdir(dir);
    free(rsa_text);
    return 0;
}

/* ---------------------------------------------------------------- frames */

static void test_frames(void **state)
{
    (void)state;
    buf_t b = BUF_INIT;
    uint8_t digest[SIGN_PROTO_DIGEST];
    for (size_t i = 0; i < sizeof digest; i++) {
        digest[i] = (uint8_t)i;
    }
    sign_proto_put(&b, SIGN_REQ, 1, 0x01020304, digest, sizeof digest);
    sign_proto_put(&b, SIGN_FAIL, 0, 7, "no", 2);
    assert_int_equal(buf_len(&b), 2 * SIGN_PROTO_HEAD + sizeof digest + 2);
    struct sign_frame f;
    size_t used;
    char err[128];
    /* cut anywhere before its end, the first frame needs more */
    for (size_t cut = 0; cut < SIGN_PROTO_HEAD + sizeof digest; cut++) {
        assert_int_equal(sign_proto_get(buf_data(&b), cut, &f, &used, err, sizeof err), 0);
    }
    assert_int_equal(sign_proto_get(buf_data(&b), buf_len(&b), &f, &used, err, sizeof err), 1);
    assert_int_equal(f.type, SIGN_REQ);
    assert_int_equal(f.key, 1);
    assert_int_equal(f.seq, 0x01020304);
    assert_int_equal(f.len, sizeof digest);
    assert_memory_equal(f.payload, digest, sizeof digest);
    assert_int_equal(used, SIGN_PROTO_HEAD + sizeof digest);
    const char *next = buf_data(&b) + used;
    assert_int_equal(sign_proto_get(next, buf_len(&b) - used, &f, &used, err, sizeof err), 1);
    assert_int_equal(f.type, SIGN_FAIL);
    assert_int_equal(f.seq, 7);
    assert_memory_equal(f.payload, "no", 2);

    /* little-endian on the wire, whatever the host */
    const uint8_t *h = (const uint8_t *)buf_data(&b);
    assert_int_equal(h[0], 32);
    assert_int_equal(h[8], 4);
    assert_int_equal(h[11], 1);

    uint8_t big[SIGN_PROTO_HEAD] = {0x01, 0x00, 0x01, 0x00, SIGN_SIG}; /* 65537 bytes */
    assert_int_equal(sign_proto_get(big, sizeof big, &f, &used, err, sizeof err), -1);
    assert_string_equal(err, "frame of 65537 bytes (at most 65536)");
    uint8_t odd[SIGN_PROTO_HEAD] = {0, 0, 0, 0, 9};
    assert_int_equal(sign_proto_get(odd, sizeof odd, &f, &used, err, sizeof err), -1);
    assert_string_equal(err, "unknown frame type 9");

    buf_reset(&b);
    struct sign_key_info keys[2] = {{SIGN_ALG_RSA_SHA256, 2048}, {SIGN_ALG_ED25519_SHA256, 253}};
    sign_proto_keys_put(&b, keys, 2);
    assert_int_equal(sign_proto_get(buf_data(&b), buf_len(&b), &f, &used, err, sizeof err), 1);
    struct sign_key_info got[SIGN_PROTO_KEYS_MAX];
    assert_int_equal(sign_proto_keys_get(&f, got), 2);
    assert_int_equal(got[0].alg, SIGN_ALG_RSA_SHA256);
    assert_int_equal(got[0].bits, 2048);
    assert_int_equal(got[1].alg, SIGN_ALG_ED25519_SHA256);
    assert_int_equal(got[1].bits, 253);
    f.len = 4;
    assert_int_equal(sign_proto_keys_get(&f, got), -1);
    buf_free(&b);
}

/* ---------------------------------------------------------------- the signer */

static struct sign_client *start(const char *const *files, size_t n, unsigned procs, char *err,
                                 size_t errlen)
{
    struct sign_client_options o = {.key_files = files, .nkey_files = n, .processes = procs};
    return sign_client_start(&o, err, errlen);
}

/* sign_both - msg signed by spec in-process and through holder key k: equal */
static void assert_same_signature(const char *pem, const struct dkim_keyholder *h, unsigned k,
                                  enum dkim_algorithm alg, buf_t *field)
{
    char err[256];
    struct dkim_spec here = {.domain = "acme.example", .selector = "s1", .key_pem = pem};
    struct dkim_spec held = {.domain = "acme.example",
                             .selector = "s1",
                             .holder = h,
                             .holder_key = k,
                             .holder_alg = alg};
    struct dkim_signer *a = dkim_signer_new(&here, err, sizeof err);
    struct dkim_signer *b = dkim_signer_new(&held, err, sizeof err);
    assert_non_null(a);
    assert_non_null(b);
    buf_t x = BUF_INIT, y = BUF_INIT;
    assert_int_equal(dkim_sign(a, message, strlen(message), 1700000000, &x, err, sizeof err), 0);
    assert_int_equal(dkim_sign(b, message, strlen(message), 1700000000, &y, err, sizeof err), 0);
    assert_string_equal(cstr(&x), cstr(&y));
    buf_append(field, buf_data(&x), buf_len(&x));
    buf_free(&x);
    buf_free(&y);
    dkim_signer_free(a);
    dkim_signer_free(b);
}

static void test_signer_signs_as_boringssl(void **state)
{
    (void)state;
    const char *files[] = {rsa_path, ed_path};
    char err[512];
    struct sign_client *c = start(files, 2, 2, err, sizeof err);
    if (!c) {
        fail_msg("%s", err);
    }
    struct sign_key_info keys[SIGN_PROTO_KEYS_MAX];
    assert_int_equal(sign_client_keys(c, keys), 2);
    assert_int_equal(keys[0].alg, SIGN_ALG_RSA_SHA256);
    assert_int_equal(keys[0].bits, 2048);
    assert_int_equal(keys[1].alg, SIGN_ALG_ED25519_SHA256);
    const struct dkim_keyholder *h = sign_client_holder(c);
    buf_t fields = BUF_INIT;
    assert_same_signature(rsa_text, h, 0, DKIM_RSA_SHA256, &fields);
    assert_same_signature(ed_pem, h, 1, DKIM_ED25519_SHA256, &fields);

    /* dual: both fields, in order, one call to the holder */
    struct dkim_spec s0 = {.domain = "acme.example",
                           .selector = "s1",
                           .holder = h,
                           .holder_key = 0,
                           .holder_alg = DKIM_RSA_SHA256};
    struct dkim_spec s1 = s0;
    s1.holder_key = 1;
    s1.holder_alg = DKIM_ED25519_SHA256;
    struct dkim_signer *d[2] = {dkim_signer_new(&s0, err, sizeof err),
                                dkim_signer_new(&s1, err, sizeof err)};
    buf_t out = BUF_INIT;
    buf_append_str(&out, "kept:");
    assert_int_equal(dkim_sign_all((const struct dkim_signer *const *)d, 2, message,
                                   strlen(message), 1700000000, &out, err, sizeof err),
                     0);
    assert_memory_equal(buf_data(&out), "kept:", 5);
    assert_int_equal(buf_len(&out) - 5, buf_len(&fields));
    assert_memory_equal(buf_data(&out) + 5, buf_data(&fields), buf_len(&fields));
    struct sign_client_stats st;
    sign_client_stats(c, &st);
    assert_int_equal(st.processes, 2);
    assert_int_equal(st.signatures, 4);
    char why[256];
    assert_int_equal(sign_client_failed(c, why, sizeof why), 0);
    buf_free(&out);
    buf_free(&fields);
    dkim_signer_free(d[0]);
    dkim_signer_free(d[1]);
    sign_client_stop(c);
}

static void test_signer_refusals(void **state)
{
    (void)state;
    char err[512], want[600];
    const char *bad[] = {ed_path, bad_path};
    assert_null(start(bad, 2, 1, err, sizeof err));
    snprintf(want, sizeof want,
             "the DKIM signer: %s: cannot read a private key from %s (PEM, unencrypted)", bad_path,
             bad_path);
    assert_string_equal(err, want);

    const char *saved = getenv("RINGMAIL_SIGNER");
    char *keep = strdup(saved);
    setenv("RINGMAIL_SIGNER", "/nonexistent/ringmail-signer", 1);
    const char *one[] = {ed_path};
    assert_null(start(one, 1, 1, err, sizeof err));
    assert_string_equal(err, "cannot start the DKIM signer /nonexistent/ringmail-signer: No such "
                             "file or directory (ringmail-signer is installed beside ringmail; "
                             "RINGMAIL_SIGNER names another)");
    setenv("RINGMAIL_SIGNER", keep, 1);
    free(keep);
}

/* A signer killed: the signature fails with how it died, and so does
 * every later one, at once, with the same reason. */
static void test_signer_killed(void **state)
{
    (void)state;
    const char *one[] = {ed_path};
    char err[512];
    struct sign_client *c = start(one, 1, 1, err, sizeof err);
    assert_non_null(c);
    struct dkim_spec held = {.domain = "acme.example",
                             .selector = "s1",
                             .holder = sign_client_holder(c),
                             .holder_alg = DKIM_ED25519_SHA256};
    struct dkim_signer *s = dkim_signer_new(&held, err, sizeof err);
    buf_t out = BUF_INIT;
    assert_int_equal(dkim_sign(s, message, strlen(message), 0, &out, err, sizeof err), 0);
    /* its pid: the only child of this process whose name is ringmail-signer */
    char cmd[128], line[64] = "";
    snprintf(cmd, sizeof cmd, "pgrep -P %d -x ringmail-signer", (int)getpid());
    FILE *p = popen(cmd, "r");
    assert_non_null(fgets(line, sizeof line, p));
    pclose(p);
    int pid = atoi(line);
    assert_true(pid > 0);
    assert_int_equal(kill(pid, SIGKILL), 0);
    buf_reset(&out);
    assert_int_equal(dkim_sign(s, message, strlen(message), 0, &out, err, sizeof err),
                     DKIM_HOLDER_FAILED);
    char want[128];
    snprintf(want, sizeof want, "the DKIM signer (pid %d) died: killed by signal 9 (Killed)", pid);
    assert_string_equal(err, want);
    assert_int_equal(buf_len(&out), 0);
    err[0] = '\0';
    assert_int_equal(dkim_sign(s, message, strlen(message), 0, &out, err, sizeof err),
                     DKIM_HOLDER_FAILED);
    assert_string_equal(err, want);
    char why[256];
    assert_int_equal(sign_client_failed(c, why, sizeof why), 1);
    assert_string_equal(why, want);
    buf_free(&out);
    dkim_signer_free(s);
    sign_client_stop(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames),
        cmocka_unit_test(test_signer_signs_as_boringssl),
        cmocka_unit_test(test_signer_refusals),
        cmocka_unit_test(test_signer_killed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
