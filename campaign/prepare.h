/*
 * prepare - render and sign campaign messages on worker threads
 *
 * prepare_compile is the one way a campaign's row and [feedback] become
 * templates (send --db, campaign test, campaign preview); prepare_render
 * the one way a recipient's message is made, counting the merge fields
 * it had no value for (warned once per field, totals at the end).
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
 *
 * Diagnostics: prepare_compile returns NULL with render_compile's reason;
 * a recipient that cannot be rendered gets its reason in it->err (the
 * caller marks it `invalid`; with it->retry, the DKIM signer failed: the
 * caller stops, the recipient stays claimed and goes back to the queue); a merge field rendered
 * empty is warned on stderr, once per field, and prepare_token_done says the totals.
 */
#ifndef RINGMAIL_PREPARE_H
#define RINGMAIL_PREPARE_H

#include <stddef.h>
#include <stdint.h>

#include "campaign/loader.h"
#include "campaign/render.h"
#include "campaign/sign_client.h"
#include "engine/buf.h"
#include "pool/config.h"

struct prepare;

struct prepare_item {
    struct loader_rcpt r; /* r.address owned; r.vars freed (NULL) */
    buf_t body;           /* the signed message, when err is empty (owned) */
    char err[256];        /* why this recipient cannot be sent: `invalid`, unless retry */
    /* err is no fault of the recipient: the DKIM signer failed. Neither
     * sent (never unsigned) nor marked; its claim goes back to the queue. */
    int retry;
};

/* Counts, per merge field, the recipients rendered without its value. */
struct prepare_missing;

/* What prepare_render adds to the templates, per campaign: [feedback]'s
 * unsubscribe token, offered as the merge variable PREPARE_TOKEN_VAR
 * (TOKEN of u-TOKEN, campaign/feedback.h; key NULL: no such variable), and
 * the count of merge fields rendered empty (missing NULL: not counted). */
#define PREPARE_TOKEN_VAR RENDER_TOKEN_VAR
struct prepare_token {
    const uint8_t *key; /* borrowed */
    size_t keylen;
    uint64_t campaign;
    struct prepare_missing *missing; /* owned by whoever called prepare_compile */
};

/*
 * The campaign's templates compiled as every sender of it compiles them
 * (`send --db`, `campaign test`, `campaign preview`): its row (From and its
 * display name, Reply-To, subject, bodies, List-Unsubscribe, Feedback-ID,
 * DKIM) and [feedback] (f NULL or not enabled: none), whose
 * unsubscribe_url replaces the row's List-Unsubscribe with the token URLs
 * `ringmail inbound` honours (said on stderr after WHO, "ringmail send").
 * *token is set up for prepare_render: the token's key, and the counts of
 * missing merge values (their warnings start with WHO). NULL + err.
 */
struct render_template *prepare_compile(const struct loader_campaign *c,
                                        const struct config_feedback *f, const char *who,
                                        struct sign_client *signer, struct prepare_token *token,
                                        char *err, size_t errlen);
/* The campaign's DKIM keys in signer processes (campaign/sign_client.h):
 * `processes` of them, each reading the keys from the database at url
 * itself; the campaign's row (dkim_domain, dkim_selector, dkim_selector2)
 * says whether it signs once, twice or not at all. NULL with err "" when
 * it does not sign, NULL + err when the signers cannot start. What
 * prepare_compile's signer is: the delivery process never reads a key. */
struct sign_client *prepare_signer_start(const struct loader_campaign *c, const char *url,
                                         unsigned processes, char *err, size_t errlen);
/* What prepare_compile set up in *token: the totals said (prepare_missing_report), freed. */
void prepare_token_done(struct prepare_token *token);

/* Missing merge values of campaign CAMPAIGN; lines on stderr start with WHO. */
struct prepare_missing *prepare_missing_new(int64_t campaign, const char *who);
/* The fields scratch names as missing (render_message) for recipient rcpt:
 * counted, and the first time for a field one line on stderr, "WHO:
 * warning: campaign 3: {{first_name}} has no value for ann@x.test
 * (rendered empty; give it a default: {{first_name|there}})". Any thread. */
void prepare_missing_note(struct prepare_missing *m, const struct render_scratch *s,
                          const char *rcpt);
/* The totals, one line per field that was missing: "WHO: warning: campaign
 * 3: {{first_name}} has no value for 12 recipients (rendered empty; give
 * it a default: {{first_name|there}})". */
void prepare_missing_report(const struct prepare_missing *m);
void prepare_missing_free(struct prepare_missing *m);

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
 * sent; frees it->r.vars; counts its missing merge values (token->missing).
 * What a worker does, for the delivery thread too when there are no
 * workers, and for `campaign test` and `campaign preview`. scratch and
 * token may be NULL. */
void prepare_render(const struct render_template *tpl, struct render_scratch *scratch,
                    const char *(*address_problem)(const char *), const struct prepare_token *token,
                    struct prepare_item *it);

#endif
