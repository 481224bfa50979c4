/*
 * buf - length-tracked, growable byte strings. See buf.h.
 */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(buf_t *b)
{
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

void buf_free(buf_t *b)
{
    free(b->data);
    buf_init(b);
}

char *buf_reserve(buf_t *b, size_t n)
{
    if (b->off == b->len) {
        b->off = b->len = 0;
    }
    if (b->cap - b->len >= n) {
        return b->data + b->len;
    }
    /* Reclaim the consumed prefix before growing. */
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= n) {
            return b->data + b->len;
        }
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n) {
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) {
        fprintf(stderr, "ringmail: out of memory (%zu bytes)\n", cap);
        abort();
    }
    b->data = p;
    b->cap = cap;
    return b->data + b->len;
}

void buf_commit(buf_t *b, size_t n)
{
    b->len += n;
}

void buf_append(buf_t *b, const void *p, size_t n)
{
    if (n == 0) {
        return;
    }
    memcpy(buf_reserve(b, n), p, n);
    b->len += n;
}

void buf_append_str(buf_t *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_appendf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *w = buf_reserve(b, 128);
    int n = vsnprintf(w, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n >= b->cap - b->len) {
        w = buf_reserve(b, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(w, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void buf_consume(buf_t *b, size_t n)
{
    if (n >= b->len - b->off) {
        b->off = b->len = 0;
        return;
    }
    b->off += n;
}

void buf_reset(buf_t *b)
{
    b->off = b->len = 0;
}

void buf_shrink(buf_t *b, size_t keep)
{
    if (b->off == b->len && b->cap > keep) {
        free(b->data);
        buf_init(b);
    }
}

const char *buf_cstr(buf_t *b)
{
    *buf_reserve(b, 1) = '\0';
    return buf_data(b);
}
