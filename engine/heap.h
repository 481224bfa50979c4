/*
 * heap - the one binary min-heap
 *
 * A heap of borrowed pointers ordered by a 64-bit key the caller keeps
 * in each element (a deadline, a due time). The element also keeps its
 * own index (`int`, -1 when not in a heap) so it can be removed or
 * re-keyed in O(log n) without a search; the heap finds both through
 * offsets given at heap_init.
 *
 * Diagnostics: allocation failure aborts (as buf does).
 */
#ifndef RINGMAIL_HEAP_H
#define RINGMAIL_HEAP_H

#include <stddef.h>
#include <stdint.h>

struct heap {
    void **items; /* owned array; the elements are borrowed */
    size_t len, cap;
    size_t key_off;   /* offset of the element's uint64_t key */
    size_t index_off; /* offset of the element's int index (-1: not in a heap) */
};

/* heap_init - an empty heap of elements keyed at KEY_OFF, indexed at INDEX_OFF */
void heap_init(struct heap *h, size_t key_off, size_t index_off);
/* heap_free - the array (the elements are the caller's) */
void heap_free(struct heap *h);
/* heap_push - E into the heap by its current key */
void heap_push(struct heap *h, void *e);
/* heap_top - the element with the smallest key, or NULL */
void *heap_top(const struct heap *h);
/* heap_pop - take the element with the smallest key, or NULL */
void *heap_pop(struct heap *h);
/* heap_remove - take E out (a no-op if it is in no heap) */
void heap_remove(struct heap *h, void *e);
/* heap_fix - E's key changed: restore the order */
void heap_fix(struct heap *h, void *e);
/* heap_contains - E is in a heap */
int heap_contains(const struct heap *h, const void *e);

static inline size_t heap_len(const struct heap *h)
{
    return h->len;
}

#endif
