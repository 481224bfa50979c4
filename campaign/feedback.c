/*
 * feedback - VERP and unsubscribe tokens. See feedback.h.
 *
 * The MAC is over the kind letter and the varints exactly as they appear
 * in the token, so any other spelling of the same ids (a varint padded
 * with 0x80 bytes) fails the MAC instead of needing its own check.
 */
#include "campaign/feedback.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "engine/crypto.h"

#define FEEDBACK_VARINT_MAX 10 /* bytes of a uint64_t as LEB128 */
#define FEEDBACK_BYTES_MAX (2 * FEEDBACK_VARINT_MAX + FEEDBACK_MAC_LEN)
#define FEEDBACK_CHARS_MAX ((FEEDBACK_BYTES_MAX * 8 + 4) / 5)

static const char feedback_b32[] = "abcdefghijklmnopqrstuvwxyz234567";

/* feedback_varint - v as unsigned LEB128 at p; returns its length */
static size_t feedback_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

/* feedback_varint_read - one varint from p[*at..end) into *v; -1 when it runs out or overflows */
static int feedback_varint_read(const uint8_t *p, size_t end, size_t *at, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; *at < end && shift < 64; shift += 7) {
        uint8_t b = p[(*at)++];
        if (shift == 63 && b > 1) {
            return -1;
        }
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* feedback_mac - the truncated MAC of kind and payload */
static void feedback_mac(const uint8_t *key, size_t keylen, char kind, const uint8_t *payload,
                         size_t n, uint8_t mac[FEEDBACK_MAC_LEN])
{
    uint8_t msg[1 + 2 * FEEDBACK_VARINT_MAX], full[CRYPTO_SHA256_LEN];
    msg[0] = (uint8_t)kind;
    memcpy(msg + 1, payload, n);
    crypto_hmac_sha256(key, keylen, msg, 1 + n, full);
    memcpy(mac, full, FEEDBACK_MAC_LEN);
}

size_t feedback_token_make(const uint8_t *key, size_t keylen, const struct feedback_id *t,
                           char out[FEEDBACK_LOCAL_MAX])
{
    uint8_t b[FEEDBACK_BYTES_MAX];
    size_t n = feedback_varint(b, t->campaign);
    n += feedback_varint(b + n, t->recipient);
    feedback_mac(key, keylen, (char)t->kind, b, n, b + n);
    n += FEEDBACK_MAC_LEN;
    size_t w = 0;
    out[w++] = (char)t->kind;
    out[w++] = '-';
    unsigned acc = 0, bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | b[i];
        for (bits += 8; bits >= 5; bits -= 5) {
            out[w++] = feedback_b32[(acc >> (bits - 5)) & 31];
        }
    }
    if (bits) {
        out[w++] = feedback_b32[(acc << (5 - bits)) & 31];
    }
    out[w] = '\0';
    return w;
}

void feedback_address_make(const uint8_t *key, size_t keylen, const struct feedback_id *t,
                           const char *domain, buf_t *out)
{
    char local[FEEDBACK_LOCAL_MAX];
    size_t n = feedback_token_make(key, keylen, t, local);
    buf_append(out, local, n);
    buf_appendf(out, "@%s", domain);
}

static int feedback_refuse(char *why, size_t whylen, const char *reason)
{
    snprintf(why, whylen, "%s", reason);
    return -1;
}

/* feedback_b32_decode - c characters of s into b; the byte count, or -1
 * when a character is not base32 or the form is not canonical (a length
 * no byte count gives, or bits set past the last byte) */
static int feedback_b32_decode(const char *s, size_t c, uint8_t *b)
{
    unsigned acc = 0, bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < c; i++) {
        const char *hit = strchr(feedback_b32, tolower((unsigned char)s[i]));
        if (!s[i] || !hit) {
            return -1;
        }
        acc = (acc << 5) | (unsigned)(hit - feedback_b32);
        bits += 5;
        if (bits >= 8) {
            b[n++] = (uint8_t)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    /* RFC 4648 3.5: a canonical encoder leaves the pad bits zero, and never
     * ends on a character that carries none of a byte's bits. */
    return bits >= 5 || (acc & ((1u << bits) - 1)) ? -1 : (int)n;
}

int feedback_token_parse(const uint8_t *key, size_t keylen, const char *s, struct feedback_id *out,
                         char *why, size_t whylen)
{
    const char *at = strrchr(s, '@');
    size_t len = at ? (size_t)(at - s) : strlen(s);
    if (len < 3 || s[1] != '-' || !isalpha((unsigned char)s[0]) || len - 2 > FEEDBACK_CHARS_MAX) {
        return feedback_refuse(why, whylen, "not a ringmail token");
    }
    uint8_t b[FEEDBACK_BYTES_MAX];
    int n = feedback_b32_decode(s + 2, len - 2, b);
    if (n < 0) {
        return feedback_refuse(why, whylen, "bad token characters");
    }
    size_t end = (size_t)n >= FEEDBACK_MAC_LEN ? (size_t)n - FEEDBACK_MAC_LEN : 0, pos = 0;
    struct feedback_id t;
    if (end == 0 || feedback_varint_read(b, end, &pos, &t.campaign) < 0 ||
        feedback_varint_read(b, end, &pos, &t.recipient) < 0 || pos != end) {
        return feedback_refuse(why, whylen, "truncated token");
    }
    char kind = (char)tolower((unsigned char)s[0]);
    if (kind != FEEDBACK_ID_BOUNCE && kind != FEEDBACK_ID_UNSUBSCRIBE) {
        return feedback_refuse(why, whylen, "unknown token kind");
    }
    uint8_t mac[FEEDBACK_MAC_LEN], diff = 0;
    feedback_mac(key, keylen, kind, b, end, mac);
    for (size_t i = 0; i < FEEDBACK_MAC_LEN; i++) { /* constant time: no early exit */
        diff |= (uint8_t)(mac[i] ^ b[end + i]);
    }
    if (diff) {
        return feedback_refuse(why, whylen, "forged token (MAC mismatch)");
    }
    t.kind = (enum feedback_id_kind)kind;
    *out = t;
    return 0;
}
