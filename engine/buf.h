/*
 * buf - length-tracked, growable byte strings
 *
 * A buf_t owns its storage. Bytes are appended at the end and consumed
 * from the front; consumption only moves an offset, so draining a buffer
 * piecewise (the send path, the parsers) costs no memmove until the next
 * append needs the room.
 *
 * Diagnostics: allocation failure aborts (out of memory is not a peer
 * input we can recover from per message).
 */
#ifndef RINGMAIL_BUF_H
#define RINGMAIL_BUF_H

#include <stddef.h>

typedef struct buf {
    char *data; /* owned; NULL until the first append */
    size_t off; /* start of unconsumed bytes */
    size_t len; /* end of valid bytes (absolute, >= off) */
    size_t cap;
} buf_t;

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }

void buf_init(buf_t *b);
void buf_free(buf_t *b);
/* Ensure room for n more bytes after the end; returns the write pointer. */
char *buf_reserve(buf_t *b, size_t n);
/* The data with a NUL after it (not counted in buf_len), for libpq and printf. */
const char *buf_cstr(buf_t *b);
/* Mark n bytes written at the pointer buf_reserve returned. */
void buf_commit(buf_t *b, size_t n);
void buf_append(buf_t *b, const void *p, size_t n);
void buf_append_str(buf_t *b, const char *s);
/* printf-style append; the formatted length is bounded by the call, never guessed. */
void buf_appendf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_consume(buf_t *b, size_t n);
/* Drop all contents, keep the storage for reuse. */
void buf_reset(buf_t *b);
/* Release storage if it grew beyond keep bytes and is empty (idle sessions stay small). */
void buf_shrink(buf_t *b, size_t keep);

static inline const char *buf_data(const buf_t *b)
{
    return b->data ? b->data + b->off : "";
}

static inline size_t buf_len(const buf_t *b)
{
    return b->len - b->off;
}

#endif
