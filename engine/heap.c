/*
 * heap - the one binary min-heap. See heap.h.
 */
#include "engine/heap.h"

#include <stdlib.h>

static uint64_t heap_key(const struct heap *h, size_t i)
{
    return *(const uint64_t *)(const void *)((const char *)h->items[i] + h->key_off);
}

static int *heap_index(const struct heap *h, const void *e)
{
    return (int *)(void *)((char *)e + h->index_off);
}

static void heap_set(struct heap *h, size_t i, void *e)
{
    h->items[i] = e;
    *heap_index(h, e) = (int)i;
}

static void heap_up(struct heap *h, size_t i)
{
    void *e = h->items[i];
    uint64_t k = heap_key(h, i);
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap_key(h, parent) <= k) {
            break;
        }
        heap_set(h, i, h->items[parent]);
        i = parent;
    }
    heap_set(h, i, e);
}

static void heap_down(struct heap *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->len && heap_key(h, l) < heap_key(h, m)) {
            m = l;
        }
        if (r < h->len && heap_key(h, r) < heap_key(h, m)) {
            m = r;
        }
        if (m == i) {
            return;
        }
        void *e = h->items[i];
        heap_set(h, i, h->items[m]);
        heap_set(h, m, e);
        i = m;
    }
}

void heap_init(struct heap *h, size_t key_off, size_t index_off)
{
    h->items = NULL;
    h->len = h->cap = 0;
    h->key_off = key_off;
    h->index_off = index_off;
}

void heap_free(struct heap *h)
{
    free(h->items);
    h->items = NULL;
    h->len = h->cap = 0;
}

void heap_push(struct heap *h, void *e)
{
    if (h->len == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        void **items = realloc(h->items, cap * sizeof *items);
        if (!items) {
            abort();
        }
        h->items = items;
        h->cap = cap;
    }
    h->items[h->len] = e;
    *heap_index(h, e) = (int)h->len;
    h->len++;
    heap_up(h, h->len - 1);
}

void *heap_top(const struct heap *h)
{
    return h->len ? h->items[0] : NULL;
}

void heap_remove(struct heap *h, void *e)
{
    int *ip = heap_index(h, e);
    if (*ip < 0) {
        return;
    }
    size_t i = (size_t)*ip, last = h->len - 1;
    *ip = -1;
    h->len--;
    if (i != last) {
        void *moved = h->items[last];
        heap_set(h, i, moved);
        heap_down(h, i);
        heap_up(h, (size_t)*heap_index(h, moved));
    }
}

void *heap_pop(struct heap *h)
{
    void *top = heap_top(h);
    if (top) {
        heap_remove(h, top);
    }
    return top;
}

void heap_fix(struct heap *h, void *e)
{
    int i = *heap_index(h, e);
    if (i >= 0) {
        heap_down(h, (size_t)i);
        heap_up(h, (size_t)*heap_index(h, e));
    }
}

int heap_contains(const struct heap *h, const void *e)
{
    return *heap_index(h, e) >= 0;
}
