/*
 * sign_proto - the frames between ringmail and ringmail-signer
 *
 * A signer process (campaign/signer/, OpenSSL 3) holds a campaign's DKIM
 * private keys; the render workers of `ringmail send` (BoringSSL) send it
 * SHA-256 digests over a socketpair and get signatures back. This file is
 * the framing both sides share; it holds no cryptography and includes no
 * <openssl/...> header, so it is compiled into both binaries.
 *
 * A frame is a 12-byte head and a payload:
 *     u32 payload length (little-endian, at most SIGN_PROTO_PAYLOAD_MAX)
 *     u8  type (enum sign_type)      u8 key (which of the keys)
 *     u16 0                           u32 seq (little-endian; echoed)
 *
 * Conversation: ringmail sends one HELLO (DB: "campaign id\0conninfo",
 * FILES: "path\0path", each after a version byte); the signer answers
 * KEYS (per key: algorithm, bits) or ERROR (why, then it exits). Then any
 * number of REQ (key, seq, a 32-byte digest), each answered in order by
 * SIG (seq, the signature) or FAIL (seq, why).
 *
 * DIAGNOSTICS
 *     sign_proto_get: "frame of N bytes (at most M)", "unknown frame type
 *     T": the peer is not a ringmail signer of this version.
 */
#ifndef RINGMAIL_SIGN_PROTO_H
#define RINGMAIL_SIGN_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "engine/buf.h"

#define SIGN_PROTO_VERSION 1
#define SIGN_PROTO_HEAD 12
#define SIGN_PROTO_PAYLOAD_MAX 65536
#define SIGN_PROTO_DIGEST 32
#define SIGN_PROTO_SIG_MAX 1024 /* RSA-8192 */
#define SIGN_PROTO_KEYS_MAX 2   /* dkim_key and dkim_key2 */

enum sign_type {
    SIGN_HELLO_DB = 1,    /* ringmail -> signer: version byte, "campaign id\0conninfo" */
    SIGN_HELLO_FILES = 2, /* ringmail -> signer: version byte, "path\0path..." */
    SIGN_KEYS = 3,        /* signer -> ringmail: per key 3 bytes: algorithm, bits (u16) */
    SIGN_ERROR = 4,       /* signer -> ringmail: why the keys cannot be used (text) */
    SIGN_REQ = 5,         /* ringmail -> signer: key, seq, the digest */
    SIGN_SIG = 6,         /* signer -> ringmail: seq, the signature */
    SIGN_FAIL = 7,        /* signer -> ringmail: seq, why this one failed (text) */
};

/* The algorithm byte of KEYS (dkim.h's enum dkim_algorithm + 1). */
enum sign_alg { SIGN_ALG_RSA_SHA256 = 1, SIGN_ALG_ED25519_SHA256 = 2 };

struct sign_frame {
    uint8_t type, key;
    uint32_t seq;
    const uint8_t *payload; /* borrowed: inside the bytes given to sign_proto_get */
    uint32_t len;
};

struct sign_key_info {
    enum sign_alg alg;
    unsigned bits;
};

/* sign_proto_put - append one frame to out */
void sign_proto_put(buf_t *out, enum sign_type type, unsigned key, uint32_t seq, const void *p,
                    size_t len);
/* sign_proto_get - the frame at data[0..len): 1 and its bytes in *used; 0
 * when more bytes are needed; -1 and why in err when it can be no frame */
int sign_proto_get(const void *data, size_t len, struct sign_frame *f, size_t *used, char *err,
                   size_t errlen);
/* sign_proto_keys_put - a KEYS frame of keys[0..n) appended to out */
void sign_proto_keys_put(buf_t *out, const struct sign_key_info *keys, size_t n);
/* sign_proto_keys_get - the keys of a KEYS frame: their number (1 to
 * SIGN_PROTO_KEYS_MAX), or -1 when the payload is not one */
int sign_proto_keys_get(const struct sign_frame *f, struct sign_key_info *keys);

#endif
