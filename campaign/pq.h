/*
 * pq - libpq beside BoringSSL
 *
 * Debian's libpq is built against OpenSSL 3, whose libssl/libcrypto export
 * the same SSL_* and EVP_* names as BoringSSL. Measured on this machine:
 *   - linked into one process, libpq's own TLS (sslmode=require or prefer
 *     over TCP) crosses into BoringSSL and aborts ("free(): invalid
 *     pointer"); without TLS it works, SCRAM authentication included, from
 *     any thread;
 *   - loaded with dlmopen(LM_ID_NEWLM) into a namespace of its own, TLS and
 *     SCRAM work from the main thread, but PQconnectdb from a second thread
 *     crashes inside libpq (the second libc does not know that thread), and
 *     ASan cannot follow a second namespace at all.
 * So libpq is linked directly and every connection is made with
 * sslmode=disable and gssencmode=disable; a URL that asks for TLS is
 * refused with an explanation (use a Unix socket, localhost, or a TLS
 * tunnel such as stunnel or an SSH forward). Calls go through the table
 * below so that another loading strategy stays a one-file change.
 */
#ifndef RINGMAIL_PQ_H
#define RINGMAIL_PQ_H

#include <libpq-fe.h>
#include <stddef.h>

#define PQ_API(X)                                                                                  \
    X(PQconnectdb)                                                                                 \
    X(PQconnectdbParams)                                                                           \
    X(PQconnectStartParams)                                                                        \
    X(PQconninfo)                                                                                  \
    X(PQconndefaults)                                                                              \
    X(PQsocket)                                                                                    \
    X(PQconninfoParse)                                                                             \
    X(PQconninfoFree)                                                                              \
    X(PQstatus)                                                                                    \
    X(PQerrorMessage)                                                                              \
    X(PQfinish)                                                                                    \
    X(PQexec)                                                                                      \
    X(PQexecParams)                                                                                \
    X(PQprepare)                                                                                   \
    X(PQexecPrepared)                                                                              \
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
