/*
 * prepare - render and sign campaign messages on worker threads. See
 * prepare.h.
 *
 * Locking: one mutex guards the finished queue and the counters; a worker
 * renders with it released. Lock order: prepare, then loader (a worker
 * calls loader_take holding the prepare mutex; the loader calls
 * prepare_notify holding none of its own).
 */
#include "campaign/prepare.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "campaign/feedback.h"

#define PREPARE_BATCH 64 /* recipients a worker takes at once */

struct prepare {
    struct prepare_options o;
    pthread_t *threads;
    unsigned nthreads;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* room, new claims, stopping */
    int efd;
    /* under mu */
    struct prepare_item *done; /* ring of finished items */
    size_t done_cap, done_head, done_n;
    size_t held; /* taken from the loader, not yet taken by the loop */
    int stopping;
};

static void prepare_signal(struct prepare *p)
{
    uint64_t one = 1;
    ssize_t n = write(p->efd, &one, sizeof one);
    (void)n;
}

/* The recipient's variables, and the unsubscribe token before them. */
struct prepare_vars {
    struct render_vars json; /* lookup NULL: the recipient has none */
    const char *token;       /* NULL: no [feedback] token */
};

static int prepare_lookup(void *ctx, const char *name, buf_t *value)
{
    struct prepare_vars *v = ctx;
    if (v->token && strcmp(name, PREPARE_TOKEN_VAR) == 0) {
        buf_append_str(value, v->token);
        return 1;
    }
    return v->json.lookup && v->json.lookup(v->json.ctx, name, value);
}

/* ---- templates ---- */

/* prepare_signs - the campaign signs (a domain, a selector and a key); 2 when twice */
static int prepare_signs(const struct loader_campaign *c)
{
    if (!c->dkim_domain || !c->dkim_selector || !c->has_dkim_key) {
        return 0;
    }
    return c->dkim_selector2 && c->has_dkim_key2 ? 2 : 1;
}

struct sign_client *prepare_signer_start(const struct loader_campaign *c, const char *url,
                                         unsigned processes, char *err, size_t errlen)
{
    err[0] = '\0';
    if (!prepare_signs(c)) {
        return NULL;
    }
    struct sign_client_options o = {.db_url = url, .campaign = c->id, .processes = processes};
    return sign_client_start(&o, err, errlen);
}

/* prepare_dkim - the dkim_spec of key number i of signer (NULL: unsigned) */
static const struct dkim_spec *prepare_dkim(const struct loader_campaign *c,
                                            struct sign_client *signer, size_t i,
                                            struct dkim_spec *dk)
{
    struct sign_key_info keys[SIGN_PROTO_KEYS_MAX];
    if (!signer || i >= (size_t)prepare_signs(c) || i >= sign_client_keys(signer, keys)) {
        return NULL;
    }
    *dk = (struct dkim_spec){
        .domain = c->dkim_domain,
        .selector = i ? c->dkim_selector2 : c->dkim_selector,
        .holder = sign_client_holder(signer),
        .holder_key = (unsigned)i,
        .holder_alg = keys[i].alg == SIGN_ALG_RSA_SHA256 ? DKIM_RSA_SHA256 : DKIM_ED25519_SHA256,
    };
    return dk;
}

struct render_template *prepare_compile(const struct loader_campaign *c,
                                        const struct config_feedback *f, const char *who,
                                        struct sign_client *signer, struct prepare_token *token,
                                        char *err, size_t errlen)
{
    if (prepare_signs(c) && !signer) {
        snprintf(err, errlen, "the campaign is DKIM-signed and its signer is not started");
        return NULL;
    }
    struct dkim_spec dk[2];
    struct render_spec spec = {
        .from_addr = c->mail_from,
        .from_name = c->from_name,
        .reply_to = c->reply_to,
        .subject = c->subject,
        .text = c->text_body,
        .html = c->html_body,
        .list_unsubscribe = c->list_unsubscribe,
        .feedback_id = c->feedback_id,
        .dkim = prepare_dkim(c, signer, 0, &dk[0]),
        .dkim2 = prepare_dkim(c, signer, 1, &dk[1]),
    };
    memset(token, 0, sizeof *token);
    token->campaign = (uint64_t)c->id;
    char url[CONFIG_URL_MAX + 64], mailto[CONFIG_DOMAIN_MAX + 64];
    if (f && f->enabled && f->unsubscribe_url[0]) {
        /* [feedback] unsubscribe_url: the one-click URL and the mailto name
         * the recipient by token, and `ringmail inbound` honours both. */
        if (c->list_unsubscribe) {
            fprintf(stderr,
                    "%s: [feedback] unsubscribe_url replaces campaign %" PRId64
                    "'s list_unsubscribe\n",
                    who, c->id);
        }
        snprintf(url, sizeof url, "%s/{{" PREPARE_TOKEN_VAR "}}", f->unsubscribe_url);
        snprintf(mailto, sizeof mailto, "mailto:u-{{" PREPARE_TOKEN_VAR "}}@%s", f->return_path);
        spec.list_unsubscribe = url;
        spec.list_unsubscribe_mailto = mailto;
        token->key = f->secret;
        token->keylen = f->secret_len;
    }
    struct render_template *t = render_compile(&spec, err, errlen);
    if (t) {
        token->missing = prepare_missing_new(c->id, who);
    }
    return t;
}

void prepare_token_done(struct prepare_token *token)
{
    if (token->missing) {
        prepare_missing_report(token->missing);
        prepare_missing_free(token->missing);
        token->missing = NULL;
    }
}

/* ---- missing merge values ---- */

struct prepare_missing_field {
    char *name;
    uint64_t recipients;
};

struct prepare_missing {
    int64_t campaign;
    char *who;
    pthread_mutex_t mu;
    struct prepare_missing_field *fields; /* under mu */
    size_t n, cap;
};

struct prepare_missing *prepare_missing_new(int64_t campaign, const char *who)
{
    struct prepare_missing *m = calloc(1, sizeof *m);
    if (!m || !(m->who = strdup(who))) {
        abort();
    }
    m->campaign = campaign;
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

/* The warning's advice: the field with a default. */
#define PREPARE_MISSING_ADVICE "(rendered empty; give it a default: {{%s|there}})"

void prepare_missing_note(struct prepare_missing *m, const struct render_scratch *s,
                          const char *rcpt)
{
    if (!m || s->nmissing == 0) {
        return;
    }
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < s->nmissing; i++) {
        size_t k = 0;
        while (k < m->n && strcmp(m->fields[k].name, s->missing[i]) != 0) {
            k++;
        }
        if (k == m->n) {
            if (m->n == m->cap) {
                m->cap = m->cap ? 2 * m->cap : 8;
                m->fields = realloc(m->fields, m->cap * sizeof *m->fields);
                if (!m->fields) {
                    abort();
                }
            }
            m->fields[m->n++] = (struct prepare_missing_field){strdup(s->missing[i]), 0};
            fprintf(stderr,
                    "%s: warning: campaign %" PRId64
                    ": {{%s}} has no value for %s " PREPARE_MISSING_ADVICE "\n",
                    m->who, m->campaign, s->missing[i], rcpt, s->missing[i]);
        }
        m->fields[k].recipients++;
    }
    pthread_mutex_unlock(&m->mu);
}

void prepare_missing_report(const struct prepare_missing *m)
{
    for (size_t k = 0; m && k < m->n; k++) {
        const struct prepare_missing_field *f = &m->fields[k];
        fprintf(stderr,
                "%s: warning: campaign %" PRId64 ": {{%s}} has no value for %" PRIu64
                " recipient%s " PREPARE_MISSING_ADVICE "\n",
                m->who, m->campaign, f->name, f->recipients, f->recipients == 1 ? "" : "s",
                f->name);
    }
}

void prepare_missing_free(struct prepare_missing *m)
{
    if (!m) {
        return;
    }
    for (size_t k = 0; k < m->n; k++) {
        free(m->fields[k].name);
    }
    free(m->fields);
    free(m->who);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* ---- one recipient ---- */

void prepare_render(const struct render_template *tpl, struct render_scratch *scratch,
                    const char *(*address_problem)(const char *), const struct prepare_token *token,
                    struct prepare_item *it)
{
    struct render_scratch local;
    if (!scratch) {
        render_scratch_init(&local);
    }
    struct render_scratch *rs = scratch ? scratch : &local;
    buf_init(&it->body);
    it->err[0] = '\0';
    it->retry = 0;
    const char *problem = address_problem ? address_problem(it->r.address) : NULL;
    if (problem) {
        snprintf(it->err, sizeof it->err, "%s", problem);
    } else {
        json_t *vars = json_loads(it->r.vars, 0, NULL);
        struct prepare_vars pv = {{0}, NULL};
        char local[FEEDBACK_LOCAL_MAX];
        if (vars) {
            render_vars_json(&pv.json, vars);
        }
        if (token && token->key) {
            struct feedback_id t = {FEEDBACK_ID_UNSUBSCRIBE, token->campaign, (uint64_t)it->r.id};
            feedback_token_make(token->key, token->keylen, &t, local);
            pv.token = local + 2; /* TOKEN of "u-TOKEN" */
        }
        struct render_vars rv = {prepare_lookup, &pv};
        if (render_message(tpl, it->r.address, vars || pv.token ? &rv : NULL, rs, &it->body,
                           it->err, sizeof it->err) < 0) {
            buf_free(&it->body);
            it->retry = rs->sign_failed;
            if (!it->err[0]) {
                snprintf(it->err, sizeof it->err, "cannot render the message");
            }
        } else if (token) {
            prepare_missing_note(token->missing, rs, it->r.address);
        }
        json_decref(vars);
    }
    free(it->r.vars);
    it->r.vars = NULL;
    if (!scratch) {
        render_scratch_free(&local);
    }
}

static void *prepare_run(void *arg)
{
    struct prepare *p = arg;
    struct render_scratch scratch;
    render_scratch_init(&scratch);
    struct loader_rcpt batch[PREPARE_BATCH];
    struct prepare_item items[PREPARE_BATCH];
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        size_t room = p->o.ahead > p->held ? p->o.ahead - p->held : 0;
        if (room == 0) {
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        size_t max = room < PREPARE_BATCH ? room : PREPARE_BATCH;
        size_t n = loader_take(p->o.loader, batch, max);
        if (n == 0) {
            /* prepare_notify wakes it: the loader adds rows, then notifies,
             * and this thread holds mu from loader_take to the wait. */
            pthread_cond_wait(&p->cv, &p->mu);
            continue;
        }
        p->held += n;
        pthread_mutex_unlock(&p->mu);
        for (size_t i = 0; i < n; i++) {
            items[i].r = batch[i];
            prepare_render(p->o.tpl, &scratch, p->o.address_problem, &p->o.token, &items[i]);
        }
        pthread_mutex_lock(&p->mu);
        for (size_t i = 0; i < n; i++) {
            p->done[(p->done_head + p->done_n) % p->done_cap] = items[i];
            p->done_n++;
        }
        prepare_signal(p);
    }
    pthread_mutex_unlock(&p->mu);
    render_scratch_free(&scratch);
    return NULL;
}

static void prepare_notify(void *arg);

struct prepare *prepare_start(const struct prepare_options *o, char *err, size_t errlen)
{
    struct prepare *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->o = *o;
    if (!p->o.ahead) {
        p->o.ahead = 4096;
    }
    if (p->o.threads < 1) {
        p->o.threads = 1;
    }
    /* Every held item fits: a worker adds at most what it took. */
    p->done_cap = p->o.ahead;
    p->done = calloc(p->done_cap, sizeof *p->done);
    p->threads = calloc(p->o.threads, sizeof *p->threads);
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (!p->done || !p->threads || p->efd < 0) {
        snprintf(err, errlen, "cannot set up the render workers: %s", strerror(errno));
        prepare_stop(p);
        return NULL;
    }
    /* Told of every claim from now on; a worker looks at the queue before
     * it first waits, so rows claimed before this are seen too. */
    loader_set_notify(p->o.loader, prepare_notify, p);
    for (unsigned i = 0; i < p->o.threads; i++) {
        if (pthread_create(&p->threads[i], NULL, prepare_run, p) != 0) {
            snprintf(err, errlen, "cannot start the render workers");
            prepare_stop(p);
            return NULL;
        }
        p->nthreads++;
    }
    return p;
}

void prepare_stop(struct prepare *p)
{
    if (!p) {
        return;
    }
    loader_set_notify(p->o.loader, NULL, NULL);
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->nthreads; i++) {
        pthread_join(p->threads[i], NULL);
    }
    /* What was never sent stays claimed: the loader releases it. */
    for (size_t k = 0; k < p->done_n; k++) {
        struct prepare_item *it = &p->done[(p->done_head + k) % p->done_cap];
        free(it->r.address);
        buf_free(&it->body);
    }
    free(p->done);
    free(p->threads);
    if (p->efd >= 0) {
        close(p->efd);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int prepare_fd(const struct prepare *p)
{
    return p->efd;
}

size_t prepare_take(struct prepare *p, struct prepare_item *out, size_t max)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->done_n < max ? p->done_n : max;
    for (size_t k = 0; k < n; k++) {
        out[k] = p->done[p->done_head];
        p->done_head = (p->done_head + 1) % p->done_cap;
    }
    p->done_n -= n;
    p->held -= n;
    if (n > 0) {
        pthread_cond_broadcast(&p->cv); /* room for the workers */
    }
    pthread_mutex_unlock(&p->mu);
    return n;
}

size_t prepare_held(struct prepare *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->held;
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* The loader has new claimed recipients (its notify callback). */
static void prepare_notify(void *arg)
{
    struct prepare *p = arg;
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}
