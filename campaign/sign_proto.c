/*
 * sign_proto - the frames between ringmail and ringmail-signer. See
 * sign_proto.h.
 *
 * Integers are written byte by byte in little-endian order, so the head
 * is the same whatever the compiler makes of a struct.
 */
#include "campaign/sign_proto.h"

#include <stdio.h>
#include <string.h>

/* sign_proto_u32 - little-endian u32 at p */
static uint32_t sign_proto_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* sign_proto_put32 - v little-endian at p */
static void sign_proto_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void sign_proto_put(buf_t *out, enum sign_type type, unsigned key, uint32_t seq, const void *p,
                    size_t len)
{
    uint8_t head[SIGN_PROTO_HEAD] = {0};
    sign_proto_put32(head, (uint32_t)len);
    head[4] = (uint8_t)type;
    head[5] = (uint8_t)key;
    sign_proto_put32(head + 8, seq);
    buf_append(out, head, sizeof head);
    if (len) {
        buf_append(out, p, len);
    }
}

int sign_proto_get(const void *data, size_t len, struct sign_frame *f, size_t *used, char *err,
                   size_t errlen)
{
    const uint8_t *d = data;
    if (len < SIGN_PROTO_HEAD) {
        return 0;
    }
    uint32_t n = sign_proto_u32(d);
    if (n > SIGN_PROTO_PAYLOAD_MAX) {
        snprintf(err, errlen, "frame of %u bytes (at most %u)", n, SIGN_PROTO_PAYLOAD_MAX);
        return -1;
    }
    if (d[4] < SIGN_HELLO_DB || d[4] > SIGN_FAIL || d[6] || d[7]) {
        snprintf(err, errlen, "unknown frame type %u", d[4]);
        return -1;
    }
    if (len - SIGN_PROTO_HEAD < n) {
        return 0;
    }
    f->type = d[4];
    f->key = d[5];
    f->seq = sign_proto_u32(d + 8);
    f->payload = d + SIGN_PROTO_HEAD;
    f->len = n;
    *used = SIGN_PROTO_HEAD + (size_t)n;
    return 1;
}

void sign_proto_keys_put(buf_t *out, const struct sign_key_info *keys, size_t n)
{
    uint8_t p[3 * SIGN_PROTO_KEYS_MAX];
    for (size_t i = 0; i < n && i < SIGN_PROTO_KEYS_MAX; i++) {
        p[3 * i] = (uint8_t)keys[i].alg;
        p[3 * i + 1] = (uint8_t)keys[i].bits;
        p[3 * i + 2] = (uint8_t)(keys[i].bits >> 8);
    }
    sign_proto_put(out, SIGN_KEYS, 0, 0, p,
                   3 * (n < SIGN_PROTO_KEYS_MAX ? n : SIGN_PROTO_KEYS_MAX));
}

int sign_proto_keys_get(const struct sign_frame *f, struct sign_key_info *keys)
{
    if (f->type != SIGN_KEYS || f->len == 0 || f->len % 3 || f->len / 3 > SIGN_PROTO_KEYS_MAX) {
        return -1;
    }
    int n = (int)(f->len / 3);
    for (int i = 0; i < n; i++) {
        const uint8_t *p = f->payload + 3 * i;
        if (p[0] != SIGN_ALG_RSA_SHA256 && p[0] != SIGN_ALG_ED25519_SHA256) {
            return -1;
        }
        keys[i].alg = (enum sign_alg)p[0];
        keys[i].bits = (unsigned)p[1] | (unsigned)p[2] << 8;
    }
    return n;
}
