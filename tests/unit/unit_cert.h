/*
 * unit_cert - the unit tests' TLS identity: a self-signed ECDSA P-256
 * certificate for unit.test (valid for 100 years) and its key, shared by
 * test_tls and test_client_conn, and a way to put them in files.
 */
#ifndef RINGMAIL_TEST_UNIT_CERT_H
#define RINGMAIL_TEST_UNIT_CERT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char unit_cert[] = "-----BEGIN CERTIFICATE-----\n"
                                "MIIBlDCCATugAwIBAgIUQhBjg59pSbnDsAu+fk0/I8wHNE8wCgYIKoZIzj0EAwIw\n"
                                "FDESMBAGA1UEAwwJdW5pdC50ZXN0MCAXDTI2MTEyMzIzNTg0OVoYDzIxMjYxMDMw\n"
                                "MjM1ODQ5WjAUMRIwEAYDVQQDDAl1bml0LnRlc3QwWTATBgcqhkjOPQIBBggqhkjO\n"
                                "PQMBBwNCAATk6MjLYqUNrMLOnXOyCj+h8oPoEs86DiVJ14E5AhWbutC2bW5kNhK2\n"
                                "I11nm0LvmmJzuL5LoESP4L/KtvF06U8Po2kwZzAdBgNVHQ4EFgQUN6Dd+zcVQc6G\n"
                                "rQb1sQwIWgspRsAwHwYDVR0jBBgwFoAUN6Dd+zcVQc6GrQb1sQwIWgspRsAwDwYD\n"
                                "VR0TAQH/BAUwAwEB/zAUBgNVHREEDTALggl1bml0LnRlc3QwCgYIKoZIzj0EAwID\n"
                                "RwAwRAIgYlgMWKdyGroEkTlUhNgK+QFFoNqNjDte66mTeXwAHuICIAUdZDIQKA88\n"
                                "ToWjn1pTSEL3RUGaZ4tJKXCnGlb69l+Q\n"
                                "-----END CERTIFICATE-----\n";
static const char unit_key[] = "-----BEGIN EC PRIVATE KEY-----\n"
                               "MHcCAQEEIPkeMH6PPo1TGIkNCkcVtMgiBfI8xXxeH1as0Gqeh7/JoAoGCCqGSM49\n"
                               "AwEHoUQDQgAE5OjIy2KlDazCzp1zsgo/ofKD6BLPOg4lSdeBOQIVm7rQtm1uZDYS\n"
                               "tiNdZ5tC75pic7i+S6BEj+C/yrbxdOlPDw==\n"
                               "-----END EC PRIVATE KEY-----\n";

/* unit_write_temp - DATA into a new file made from TMPL (mkstemp's
 * XXXXXX), its name into PATH (64 bytes); 0 or -1 */
static inline int unit_write_temp(char *path, const char *tmpl, const char *data)
{
    snprintf(path, 64, "%s", tmpl);
    int fd = mkstemp(path);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = write(fd, data, strlen(data));
    close(fd);
    return n == (ssize_t)strlen(data) ? 0 : -1;
}

#endif
