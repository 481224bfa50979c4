/*
 * sign_client - DKIM signatures made by ringmail-signer processes
 *
 * The delivery process never holds a DKIM private key: sign_client_start
 * spawns signer processes (build/ringmail-signer beside the ringmail
 * binary, or $RINGMAIL_SIGNER) that read the campaign's keys from
 * PostgreSQL themselves (or from PEM files, for tests), and
 * sign_client_holder is the dkim_keyholder (campaign/dkim.h) a dkim_spec
 * names: render workers hand it SHA-256 header hashes, it hands back
 * signatures. One socketpair per process; a caller takes a free process
 * for one message (one write of its digests, one read of its signatures),
 * so with as many processes as render workers nobody waits for another.
 *
 * A signer that dies, closes its socket, answers an error or does not
 * answer within SIGN_CLIENT_TIMEOUT_S fails the client for good: every
 * signature asked from then on fails at once with the first reason
 * (sign_client_failed), so the caller stops rather than send unsigned.
 *
 * DIAGNOSTICS
 *     sign_client_start: "cannot start the DKIM signer PATH: No such file
 *     or directory (ringmail-signer is installed beside ringmail;
 *     RINGMAIL_SIGNER names another)", "the DKIM signer: dkim_key: RSA key
 *     of 512 bits (...)" (its ERROR), "the DKIM signer (pid N) did not
 *     answer within 30 s". Signing: "the DKIM signer (pid N) died: killed
 *     by signal 9 (Killed)", "the DKIM signer (pid N) exited with status 1",
 *     "the DKIM signer (pid N) failed a signature: signing failed".
 */
#ifndef RINGMAIL_SIGN_CLIENT_H
#define RINGMAIL_SIGN_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "campaign/dkim.h"
#include "campaign/sign_proto.h"

#define SIGN_CLIENT_TIMEOUT_S 30

struct sign_client;

struct sign_client_options {
    /* where the signers find the keys: a campaign's row ... */
    const char *db_url;
    int64_t campaign;
    /* ... or PEM files (db_url NULL) */
    const char *const *key_files;
    size_t nkey_files;
    unsigned processes; /* at least 1 */
};

/* sign_client_start - the signer processes started, their keys loaded; NULL + err */
struct sign_client *sign_client_start(const struct sign_client_options *o, char *err,
                                      size_t errlen);
/* sign_client_keys - the algorithm and size of each key (at most
 * SIGN_PROTO_KEYS_MAX, in the row's order: dkim_key, dkim_key2) */
size_t sign_client_keys(const struct sign_client *c, struct sign_key_info *keys);
/* sign_client_holder - the key holder for dkim_spec.holder (its key numbers
 * are sign_client_keys' indexes) */
const struct dkim_keyholder *sign_client_holder(const struct sign_client *c);
/* sign_client_failed - 1 and the first reason once a signer failed, else 0 */
int sign_client_failed(struct sign_client *c, char *why, size_t len);

struct sign_client_stats {
    unsigned processes;
    uint64_t signatures; /* made, all keys */
    double cpu_s;        /* the signer processes' CPU (user + system, /proc/PID/stat) */
};
/* sign_client_stats - what the signers did so far */
void sign_client_stats(struct sign_client *c, struct sign_client_stats *st);
/* sign_client_stop - sockets closed, processes reaped (killed after 2 s), freed */
void sign_client_stop(struct sign_client *c);

#endif
