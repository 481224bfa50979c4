/*
 * pq - libpq, kept away from BoringSSL
 *
 * Debian's libpq is linked against OpenSSL 3, and OpenSSL 3 and BoringSSL
 * export the same SSL_* and EVP_* names. Linked into one namespace, libpq's
 * TLS calls land in BoringSSL (measured: sslmode=require aborts with
 * "free(): invalid pointer"). So libpq is loaded with dlmopen(LM_ID_NEWLM)
 * into a link namespace of its own, with its own libssl.so.3, and called
 * through the table below; TLS and SCRAM to PostgreSQL then work (measured:
 * TLSv1.3 + scram-sha-256 beside BoringSSL in one process). Memory from
 * libpq is only ever freed by libpq (PQclear, PQfreemem).
 *
 * ASan cannot follow a second libc namespace (it crashes in libgssapi's
 * constructor), so sanitizer builds (RINGMAIL_PQ_DIRECT) link libpq
 * directly; tests then talk to their private PostgreSQL without TLS.
 *
 * Exports: pq (the function table), pq_load.
 */
#ifndef RINGMAIL_PQ_H
#define RINGMAIL_PQ_H

#include <libpq-fe.h>
#include <stddef.h>

#define PQ_API(X)                                                                                  \
    X(PQconnectdb)                                                                                 \
    X(PQstatus)                                                                                    \
    X(PQerrorMessage)                                                                              \
    X(PQfinish)                                                                                    \
    X(PQexec)                                                                                      \
    X(PQexecParams)                                                                                \
    X(PQresultStatus)                                                                              \
    X(PQresultErrorMessage)                                                                        \
    X(PQresultErrorField)                                                                          \
    X(PQntuples)                                                                                   \
    X(PQnfields)                                                                                   \
    X(PQfname)                                                                                     \
    X(PQgetvalue)                                                                                  \
    X(PQgetisnull)                                                                                 \
    X(PQgetlength)                                                                                 \
    X(PQcmdTuples)                                                                                 \
    X(PQclear)                                                                                     \
    X(PQputCopyData)                                                                               \
    X(PQputCopyEnd)                                                                                \
    X(PQgetResult)                                                                                 \
    X(PQsslInUse)                                                                                  \
    X(PQescapeLiteral)                                                                             \
    X(PQescapeIdentifier)                                                                          \
    X(PQfreemem)                                                                                   \
    X(PQsetNoticeProcessor)                                                                        \
    X(PQserverVersion)

#define PQ_FIELD(name) __typeof__(&name) name;
struct pq_api {
    PQ_API(PQ_FIELD)
};
#undef PQ_FIELD

extern struct pq_api pq;

/* Make pq usable (idempotent). 0, or -1 with the reason in err. */
int pq_load(char *err, size_t errlen);

#endif
