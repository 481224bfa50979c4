/*
 * send_report - `ringmail send`'s summary on stdout: the totals and the
 * per-ISP table, or (--json) one object. See send_int.h.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>

#include "campaign/send_int.h"

static double send_tv(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

void send_report(struct send *s, double wall)
{
    struct pool_isp_stats st[SEND_MAX_ISPS];
    size_t n = pool_isp_stats(s->pool, st, SEND_MAX_ISPS);
    if (n > SEND_MAX_ISPS) {
        n = SEND_MAX_ISPS;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = send_tv(&ru.ru_utime) + send_tv(&ru.ru_stime);
    /* The README's vocabulary: recipients are distinct (a campaign claims a
     * deferred one again: the same recipient), each in one final state or
     * still waiting for its retry. */
    struct loader_stats ls;
    memset(&ls, 0, sizeof ls);
    if (s->loader) {
        loader_stats(s->loader, &ls);
    }
    unsigned long recipients = send_view_recipients(s);
    unsigned long suppressed = s->t.suppressed + (unsigned long)ls.suppressed;
    unsigned long final =
        s->t.accepted + s->t.rejected + s->t.failed + s->t.expired + s->t.ambiguous + suppressed;
    unsigned long waiting = s->loader && recipients > final ? recipients - final : 0;
    if (!s->o.json) {
        printf("recipients %lu: accepted %lu, rejected %lu, failed %lu, expired %lu, ambiguous "
               "%lu, suppressed %lu",
               recipients, s->t.accepted, s->t.rejected, s->t.failed, s->t.expired, s->t.ambiguous,
               suppressed);
        if (s->loader) {
            printf(", waiting for retry %lu", waiting);
        }
        printf("; %lu attempts, %lu deferrals\n", s->t.attempts, s->t.deferrals);
        if (s->loader) {
            struct loader_counts c;
            loader_counts(s->loader, &c);
            printf("campaign %lld: %llu recipients\n", s->o.campaign, (unsigned long long)c.total);
            printf("database: %llu claimed (a deferred recipient is claimed again), %llu results "
                   "written, %llu waiting, %llu errors\n",
                   (unsigned long long)ls.claimed, (unsigned long long)ls.written,
                   (unsigned long long)ls.backlog, (unsigned long long)ls.db_errors);
        }
        printf("%-14s %9s %9s %9s %9s %7s %9s %9s %6s %8s %8s\n", "isp", "attempts", "accepted",
               "deferred", "rejected", "failed", "rate/s", "limit/s", "conns", "resumed%",
               "backoffs");
        for (size_t i = 0; i < n; i++) {
            const struct pool_isp_stats *x = &st[i];
            if (!x->attempts && !x->connections) {
                continue;
            }
            uint64_t tls = x->tls_full + x->tls_resumed;
            char limit[32];
            if (x->rate_limit < 0) {
                snprintf(limit, sizeof limit, "-");
            } else {
                snprintf(limit, sizeof limit, "%.1f", x->rate_limit);
            }
            printf("%-14s %9llu %9llu %9llu %9llu %7llu %9.1f %9s %6llu %7.1f%% %8llu\n", x->name,
                   (unsigned long long)x->attempts, (unsigned long long)x->accepted,
                   (unsigned long long)x->deferred, (unsigned long long)x->rejected,
                   (unsigned long long)x->failed, wall > 0 ? (double)x->accepted / wall : 0.0,
                   limit, (unsigned long long)x->connections,
                   tls ? 100.0 * (double)x->tls_resumed / (double)tls : 0.0,
                   (unsigned long long)x->backoff_triggers);
        }
        printf("resumed%%: resumed TLS handshakes of all TLS handshakes (one per connection "
               "with TLS)\n");
        send_hold_text(s);
        printf("wall %.3f s, cpu %.3f s, peak rss %ld KB\n", wall, cpu, ru.ru_maxrss);
        return;
    }
    json_t *isps = json_object();
    for (size_t i = 0; i < n; i++) {
        const struct pool_isp_stats *x = &st[i];
        json_object_set_new(
            isps, x->name,
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:I, s:f}",
                      "attempts", (json_int_t)x->attempts, "accepted", (json_int_t)x->accepted,
                      "deferred", (json_int_t)x->deferred, "rejected", (json_int_t)x->rejected,
                      "failed", (json_int_t)x->failed, "connections", (json_int_t)x->connections,
                      "tls_full", (json_int_t)x->tls_full, "tls_resumed",
                      (json_int_t)x->tls_resumed, "tls_none", (json_int_t)x->tls_none,
                      "msg_rate_limit", x->rate_limit, "backoff_factor", x->backoff,
                      "backoff_triggers", (json_int_t)x->backoff_triggers, "effective_rate",
                      wall > 0 ? (double)x->accepted / wall : 0.0));
        /* The complaint guard: held now, why, and what it handed back. */
        json_t *o = json_object_get(isps, x->name);
        json_object_set_new(o, "held", json_boolean(x->held));
        json_object_set_new(o, "held_reason", x->held_why ? json_string(x->held_why) : json_null());
        json_object_set_new(o, "parked", json_integer((json_int_t)x->parked));
    }
    json_t *j = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:f, s:f, s:I}", "recipients",
        (json_int_t)recipients, "accepted", (json_int_t)s->t.accepted, "rejected",
        (json_int_t)s->t.rejected, "failed", (json_int_t)s->t.failed, "expired",
        (json_int_t)s->t.expired, "ambiguous", (json_int_t)s->t.ambiguous, "suppressed",
        (json_int_t)suppressed, "invalid", (json_int_t)s->t.invalid, "attempts",
        (json_int_t)s->t.attempts, "deferrals", (json_int_t)s->t.deferrals, "unsent",
        (json_int_t)(s->t.recipients - s->t.accepted - s->t.rejected - s->t.failed - s->t.expired -
                     s->t.ambiguous - s->t.suppressed + (s->nlines - s->next)),
        "isps", isps, "wall_s", wall, "cpu_s", cpu, "peak_rss_kb", (json_int_t)ru.ru_maxrss);
    json_t *categories = json_object();
    for (int i = 0; i < BOUNCE_CATEGORIES; i++) {
        json_object_set_new(categories, bounce_category_name((enum bounce_category)i),
                            json_integer((json_int_t)s->t.bounce_categories[i]));
    }
    json_object_set_new(j, "bounce_categories", categories);
    uint64_t sts_txt, sts_txt_failed, sts_fetches, sts_shared;
    pool_mta_sts_stats(s->pool, &sts_txt, &sts_txt_failed, &sts_fetches, &sts_shared);
    json_object_set_new(j, "mta_sts",
                        json_pack("{s:I, s:I, s:I, s:I}", "txt_lookups", (json_int_t)sts_txt,
                                  "txt_lookups_failed", (json_int_t)sts_txt_failed, "fetches",
                                  (json_int_t)sts_fetches, "shared_cache_answers",
                                  (json_int_t)sts_shared));
    if (s->signer) {
        /* The DKIM signer processes' CPU (/proc/PID/stat), read while they
         * are idle: every signature of the run is in it. */
        struct sign_client_stats ss;
        sign_client_stats(s->signer, &ss);
        json_object_set_new(j, "dkim",
                            json_pack("{s:I, s:I, s:f}", "signers", (json_int_t)ss.processes,
                                      "signatures", (json_int_t)ss.signatures, "signer_cpu_s",
                                      ss.cpu_s));
    }
    uint64_t tlsa_q, tlsa_hits;
    pool_dane_stats(s->pool, &tlsa_q, &tlsa_hits);
    json_object_set_new(j, "dane",
                        json_pack("{s:I, s:I}", "tlsa_queries", (json_int_t)tlsa_q,
                                  "tlsa_cache_hits", (json_int_t)tlsa_hits));
    if (s->loader) {
        /* Campaign mode: a deferral goes back to the database and is claimed
         * again; "recipients" are distinct, "claims" counts the claims. */
        struct loader_counts c;
        loader_counts(s->loader, &c);
        json_object_del(j, "unsent");
        json_object_set_new(j, "waiting_for_retry", json_integer((json_int_t)waiting));
        json_object_set_new(j, "claims", json_integer((json_int_t)s->t.recipients));
        json_object_set_new(j, "campaign_recipients", json_integer((json_int_t)c.total));
        json_object_set_new(
            j, "db",
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, "
                      "s:f}",
                      "claimed", (json_int_t)ls.claimed, "written", (json_int_t)ls.written,
                      "backlog", (json_int_t)ls.backlog, "db_errors", (json_int_t)ls.db_errors,
                      "recovered_queued", (json_int_t)ls.recovered_queued, "recovered_ambiguous",
                      (json_int_t)ls.recovered_ambiguous, "suppressed_at_claim",
                      (json_int_t)ls.suppressed, "claims", (json_int_t)ls.claims, "flushes",
                      (json_int_t)ls.flushes, "taken_over_nodes", (json_int_t)ls.taken_over_nodes,
                      "taken_over_queued", (json_int_t)ls.taken_over_queued, "taken_over_ambiguous",
                      (json_int_t)ls.taken_over_ambiguous, "arms", (json_int_t)ls.arms, "armed",
                      (json_int_t)ls.armed, "claim_s", (double)ls.claim_us / 1e6, "write_s",
                      (double)ls.write_us / 1e6));
        json_object_set_new(json_object_get(j, "db"), "recovered_results",
                            json_integer((json_int_t)ls.recovered_results));
        json_object_set_new(j, "guard", send_hold_json(s));
        send_cluster_json(s, j);
    }
    char *txt = json_dumps(j, JSON_COMPACT);
    printf("%s\n", txt);
    free(txt);
    json_decref(j);
}
