/*
 * list - the one intrusive doubly linked list
 *
 * A struct that lives on a list embeds a `struct list_node`; the list is
 * a `struct list_head`. Unlinking is O(1) and knows nothing about the
 * owner, and a node that is on no list has both pointers NULL, so
 * list_linked() answers "is it on the list?" without a flag beside it.
 * The list owns nothing: its members belong to whoever allocated them.
 */
#ifndef RINGMAIL_LIST_H
#define RINGMAIL_LIST_H

#include <stddef.h>

struct list_node {
    struct list_node *next, *prev; /* borrowed; both NULL when unlinked */
};

struct list_head {
    struct list_node *first, *last; /* borrowed */
    size_t len;
};

/* list_entry - the struct of type TYPE whose MEMBER is NODE (NULL stays NULL) */
#define list_entry(node, type, member)                                                             \
    ((node) ? (type *)(void *)((char *)(node)-offsetof(type, member)) : (type *)NULL)

static inline int list_linked(const struct list_head *h, const struct list_node *n)
{
    return n->prev || n->next || h->first == n;
}

/* list_push_front - N becomes the first of H */
static inline void list_push_front(struct list_head *h, struct list_node *n)
{
    n->prev = NULL;
    n->next = h->first;
    if (h->first) {
        h->first->prev = n;
    } else {
        h->last = n;
    }
    h->first = n;
    h->len++;
}

/* list_push_back - N becomes the last of H */
static inline void list_push_back(struct list_head *h, struct list_node *n)
{
    n->next = NULL;
    n->prev = h->last;
    if (h->last) {
        h->last->next = n;
    } else {
        h->first = n;
    }
    h->last = n;
    h->len++;
}

/* list_unlink - N leaves H (N must be on H) */
static inline void list_unlink(struct list_head *h, struct list_node *n)
{
    if (n->prev) {
        n->prev->next = n->next;
    } else {
        h->first = n->next;
    }
    if (n->next) {
        n->next->prev = n->prev;
    } else {
        h->last = n->prev;
    }
    n->next = n->prev = NULL;
    h->len--;
}

#endif
