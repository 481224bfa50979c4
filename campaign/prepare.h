/*
 * prepare - render and sign campaign messages on worker threads
 *
 * Between the loader (claimed recipients) and the delivery loop: worker
 * threads take claimed recipients from the loader, check the address,
 * merge the variables, render the MIME message and sign it with DKIM,
 * and hand finished messages to the loop through a queue and an eventfd
 * the loop polls on its ring. The loop thread keeps only the network
 * work (SMTP, TLS), so rendering and the DKIM signature, the costliest
 * steps of a campaign message, run beside it on the other cores.
 *
 * At most `ahead` recipients are held here at once (being rendered or
 * waiting for the loop); their rows stay `claimed` under this node's
 * lease until the loop has sent them, so a stop releases them with the
 * loader's other unsent claims.
 */
#ifndef RINGMAIL_PREPARE_H
#define RINGMAIL_PREPARE_H

#include <stddef.h>
#include <stdint.h>

#include "campaign/loader.h"
#include "campaign/render.h"
#include "engine/buf.h"

struct prepare;

struct prepare_item {
    struct loader_rcpt r; /* r.address owned; r.vars freed (NULL) */
    buf_t body;           /* the signed message, when err is empty (owned) */
    char err[256];        /* why this recipient cannot be sent: `invalid` */
};

/* [feedback]'s unsubscribe token, offered to the templates as the merge
 * variable PREPARE_TOKEN_VAR (TOKEN of u-TOKEN, campaign/feedback.h); key
 * NULL: no such variable. */
#define PREPARE_TOKEN_VAR RENDER_TOKEN_VAR
struct prepare_token {
    const uint8_t *key; /* borrowed */
    size_t keylen;
    uint64_t campaign;
};

struct prepare_options {
    struct loader *loader;
    const struct render_template *tpl;
    unsigned threads; /* workers, at least 1 */
    size_t ahead;     /* recipients held at most (default 4096) */
    /* NULL or why an address cannot be sent (called on a worker thread). */
    const char *(*address_problem)(const char *address);
    struct prepare_token token;
};

/* Starts the workers; the loader tells them of new claims (loader_set_notify)
 * until prepare_stop. NULL + err. */
struct prepare *prepare_start(const struct prepare_options *o, char *err, size_t errlen);
/* Stops and joins the workers; frees what is still held. */
void prepare_stop(struct prepare *p);
/* An eventfd, readable when finished messages wait (read it to reset it). */
int prepare_fd(const struct prepare *p);
/* Up to max finished items, without blocking; the caller owns them. */
size_t prepare_take(struct prepare *p, struct prepare_item *out, size_t max);
/* Recipients taken from the loader and not yet handed to the loop. */
size_t prepare_held(struct prepare *p);
/* Render and sign it->r into it->body, or say in it->err why it cannot be
 * sent; frees it->r.vars. What a worker does, for the delivery thread too
 * when there are no workers. */
void prepare_render(const struct render_template *tpl, struct render_scratch *scratch,
                    const char *(*address_problem)(const char *), const struct prepare_token *token,
                    struct prepare_item *it);

#endif
