/*
 * settle - what an attempt comes to, and the retry heap. See deliver_int.h.
 *
 * Every attempt's outcome goes through pool_settle: the ISP's reply rules
 * may turn it into backoff, suspension or a bounce; a deferral is retried
 * by the schedule (in the retry heap, by due time) until max_age; anything
 * final, or any deferral with external_retry, releases the message to its
 * owner.
 */
#include <stdlib.h>

#include "pool/deliver_int.h"
#include "pool/sts_dest.h"

/* ---- the retry heap ---- */

void pool_retry_init(struct pool *p)
{
    heap_init(&p->retry, offsetof(struct pool_msg, due_ms), offsetof(struct pool_msg, heap_index));
}

void pool_retry_push(struct pool *p, struct pool_msg *m)
{
    heap_push(&p->retry, m);
    pool_timer_at(p, &p->retry_timer, ((struct pool_msg *)heap_top(&p->retry))->due_ms);
}

void pool_retry_due(struct loop_timer *t)
{
    struct pool *p = t->owner;
    uint64_t now = pool_now(p);
    struct pool_msg *m;
    while ((m = heap_top(&p->retry)) != NULL && m->due_ms <= now) {
        pool_route(p, heap_pop(&p->retry));
    }
    if (m) {
        pool_timer_at(p, &p->retry_timer, m->due_ms);
    }
}

/* ---- outcomes ---- */

/* What the pool allocated for m, freed as m leaves it. */
void pool_msg_private_free(struct pool_msg *m)
{
    free(m->rcpt_ascii);
    m->rcpt_ascii = NULL;
}

void pool_settle(struct pool *p, struct pool_msg *m, struct pool_conn *c,
                 const struct pool_outcome *out)
{
    uint64_t now = pool_now(p);
    enum smtp_outcome o = out->outcome;
    int code = out->code, data_in_flight = out->data_in_flight;
    const char *enhanced = out->enhanced ? out->enhanced : "";
    const char *text = out->text ? out->text : "";
    struct pool_dest *d = m->dest;
    struct pool_isp *isp = c ? c->lane->isp : d && d->isp ? d->isp : pool_isp_named(p, "default");
    m->attempts++;
    struct pool_attempt a = {
        .outcome = o,
        .reason = out->reason,
        .code = code,
        .enhanced = enhanced,
        .text = text,
        .isp = isp->name,
        .mx = c ? c->host : "",
        .addr = c ? c->addr : "",
        .source = c && p->nsources ? p->sources[c->lane->source].addr : "",
        .tls = c && c->conn ? client_conn_tls(c->conn) : NULL,
        .attempt = m->attempts,
        .data_in_flight = data_in_flight,
    };
    a.connect_ms = a.tls_ms = a.transaction_ms = -1;
    const struct tlsp *tp = c                                           ? &c->tlsp
                            : d && (d->tlsp.mode[0] || d->tlsp.fail[0]) ? &d->tlsp
                                                                        : NULL;
    if (tp) {
        a.tls_policy = tlsp_type_name(tp->type);
        a.tls_policy_mode = tp->mode;
        a.tls_policy_id = tp->policy_id;
        /* a refused certificate: the failed handshake's verify result */
        const struct tls_info *failed = c && c->conn ? client_conn_tls_failed(c->conn) : NULL;
        a.tls_result = tlsp_result(tp, out->reason, a.tls ? a.tls : failed);
        a.reason = pool_sts_reason(tp, a.reason);
    }
    if (c) {
        /* One attempt per connection says so: the delivery rows count
         * connections and handshakes, not attempts. */
        a.conn_first = !c->carried;
        c->carried = 1;
        a.conn_id = c->conn ? c->trace_id : 0;
    }
    if (c && c->conn) {
        const struct client_conn_times *tm = client_conn_times(c->conn);
        a.connect_ms = (int)tm->connect_ms;
        a.tls_ms = a.tls ? (int)tm->tls_ms : -1;
        if (c->txn_started_ms) {
            a.transaction_ms = (int)(pool_clock_ms(p) - c->txn_started_ms);
        }
    }
    isp->st.attempts++;
    const struct config_rule *rule = NULL;
    if (code > 0 && (o == SMTP_OUTCOME_DEFERRED || o == SMTP_OUTCOME_REJECTED) && isp->cfg) {
        rule = config_rule_match(isp->cfg, code, enhanced, text);
    }
    if (rule) {
        a.rule = rule->pattern;
        if (rule->action == CONFIG_ACTION_BOUNCE) {
            a.outcome = o = SMTP_OUTCOME_REJECTED;
        } else if (!c) {
            for (size_t i = 0; i < isp->nlanes; i++) {
                pool_backoff(p, &isp->lanes[i], rule, code, enhanced, text);
            }
        }
    }
    if (c && code > 0) { /* every reply counts in the lane's backoff window */
        pool_backoff(p, c->lane, rule && rule->action != CONFIG_ACTION_BOUNCE ? rule : NULL, code,
                     enhanced, text);
    }
    switch (o) {
    case SMTP_OUTCOME_ACCEPTED:
        isp->st.accepted++;
        a.final = 1;
        break;
    case SMTP_OUTCOME_DEFERRED: {
        isp->st.deferred++;
        uint64_t delay = retry_next_delay_ms(&p->config->retry, m->attempts, m->first_ms, now);
        if (data_in_flight) {
            /* The crash rule on a live connection: the body went out and
             * the reply was lost (connection gone, timeout, a reply out of
             * step); the server may have it, so it is not sent again. */
            a.final = 1;
            a.ambiguous = 1;
        } else if (delay == UINT64_MAX || p->stopped) {
            a.final = !p->stopped;
            a.expired = !p->stopped;
        } else {
            a.retry_in_ms = delay;
        }
        break;
    }
    case SMTP_OUTCOME_REJECTED:
        isp->st.rejected++;
        a.final = 1;
        break;
    default:
        isp->st.failed++;
        a.final = 1;
        break;
    }
    if (a.final || (p->opt.external_retry && o == SMTP_OUTCOME_DEFERRED)) {
        p->pending--;
        m->dest = NULL;
        pool_msg_private_free(m);
        a.released = 1;
        p->opt.on_result(p->opt.user, m, &a);
        return;
    }
    p->opt.on_result(p->opt.user, m, &a);
    if (!p->stopped) {
        m->due_ms = now + a.retry_in_ms;
        pool_retry_push(p, m);
    } else {
        m->dest = NULL; /* stays pending: the owner sees pool_pending() > 0 */
        pool_msg_private_free(m);
    }
}
