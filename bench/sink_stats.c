/*
 * sink_stats - the sink's statistics: per-worker counters merged into the
 * JSON file, and the per-client-address table ("peers"). See sink_int.h.
 *
 * Counters and the per-recipient map are per worker, so the hot path takes
 * no lock; the --stats-interval-ms file is written from copies each worker
 * takes on its own thread. The peers table is shared by the workers: its
 * mutex is taken when a connection opens and closes and for --source-rate,
 * and an accepted message adds to its entry's atomic counter, never locking.
 *
 * Diagnostics: "sink: cannot write stats to FILE: REASON" on stderr;
 * "sink: out of memory" and abort when an empty map cannot be had.
 */
#include "bench/sink_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const sink_counter_names[SINK_COUNTERS] = {
    "connections", "refused",        "tls_handshakes",      "tls_resumed",    "tls_failures",
    "messages",    "accepted_rcpts", "deferred_rcpts",      "rejected_rcpts", "dropped",
    "bytes",       "bytes_received", "starttls_violations",
};

/* ---- peers: per client address, shared by the workers ---- */

/* FNV-1a */
static unsigned sink_peers_bucket(const char *address)
{
    uint32_t h = 2166136261u;
    for (const char *p = address; *p; p++) {
        h = (h ^ (uint8_t)*p) * 16777619u;
    }
    return h % SINK_PEER_BUCKETS;
}

/* Under the lock. NULL when memory runs out. */
static struct sink_peer *sink_peers_find(struct sink_peers *t, const char *address)
{
    struct sink_peer **head = &t->buckets[sink_peers_bucket(address)];
    for (struct sink_peer *p = *head; p; p = p->next) {
        if (strcmp(p->address, address) == 0) {
            return p;
        }
    }
    struct sink_peer *p = calloc(1, sizeof *p);
    if (!p) {
        return NULL;
    }
    snprintf(p->address, sizeof p->address, "%s", address);
    atomic_init(&p->accepted, 0);
    p->next = *head;
    *head = p;
    return p;
}

/* A connection from address opened; a refused one is only counted as such. */
struct sink_peer *sink_peers_open(struct sink_peers *t, const char *address, int refused)
{
    pthread_mutex_lock(&t->lock);
    struct sink_peer *p = sink_peers_find(t, address);
    if (p && refused) {
        p->refused++;
    } else if (p) {
        p->sessions++;
        p->open++;
        p->peak = p->open > p->peak ? p->open : p->peak;
    }
    pthread_mutex_unlock(&t->lock);
    return p;
}

/* One message from p against --source-rate: 1 if within the rate. The
 * bucket holds one second's worth. */
int sink_peers_take(struct sink_peers *t, struct sink_peer *p, unsigned rate, uint64_t now)
{
    pthread_mutex_lock(&t->lock);
    if (p->tokens_ms == 0) {
        p->tokens = rate;
    } else if (now > p->tokens_ms) {
        p->tokens += (double)(now - p->tokens_ms) * rate / 1000.0;
        if (p->tokens > rate) {
            p->tokens = rate;
        }
    }
    p->tokens_ms = now;
    int ok = p->tokens >= 1.0;
    if (ok) {
        p->tokens -= 1.0;
    } else {
        p->rate_limited++;
    }
    pthread_mutex_unlock(&t->lock);
    return ok;
}

void sink_peers_close(struct sink_peers *t, struct sink_peer *p)
{
    pthread_mutex_lock(&t->lock);
    p->open--;
    pthread_mutex_unlock(&t->lock);
}

static json_t *sink_peers_json(struct sink_peers *t)
{
    json_t *all = json_object();
    pthread_mutex_lock(&t->lock);
    for (unsigned i = 0; i < SINK_PEER_BUCKETS; i++) {
        for (const struct sink_peer *p = t->buckets[i]; p; p = p->next) {
            json_object_set_new(
                all, p->address,
                json_pack("{s:I, s:I, s:I, s:I, s:I}", "sessions", (json_int_t)p->sessions,
                          "peak_concurrent", (json_int_t)p->peak, "refused", (json_int_t)p->refused,
                          "accepted",
                          (json_int_t)atomic_load_explicit(&p->accepted, memory_order_relaxed),
                          "rate_limited", (json_int_t)p->rate_limited));
        }
    }
    pthread_mutex_unlock(&t->lock);
    return all;
}

void sink_peers_free(struct sink_peers *t)
{
    for (unsigned i = 0; i < SINK_PEER_BUCKETS; i++) {
        while (t->buckets[i]) {
            struct sink_peer *p = t->buckets[i];
            t->buckets[i] = p->next;
            free(p);
        }
    }
}

/* ---- statistics ---- */

void sink_stats_init(struct sink_stats *st)
{
    memset(st, 0, sizeof *st);
    st->deliveries = json_object();
    if (!st->deliveries) {
        fprintf(stderr, "sink: out of memory\n");
        abort();
    }
}

void sink_stats_count(json_t *map, const char *address, json_int_t n)
{
    json_t *have = json_object_get(map, address);
    if (have) {
        json_integer_set(have, json_integer_value(have) + n);
        return;
    }
    /* Fails (and counts nothing) for a key that is not UTF-8. */
    json_object_set_new(map, address, json_integer(n));
}

static void sink_stats_add(struct sink_stats *into, const struct sink_stats *from)
{
    for (int i = 0; i < SINK_COUNTERS; i++) {
        into->n[i] += from->n[i];
    }
    if (from->max_rcpts_per_msg > into->max_rcpts_per_msg) {
        into->max_rcpts_per_msg = from->max_rcpts_per_msg;
    }
    if (from->max_msgs_per_session > into->max_msgs_per_session) {
        into->max_msgs_per_session = from->max_msgs_per_session;
    }
    if (from->first_accept_ms &&
        (!into->first_accept_ms || from->first_accept_ms < into->first_accept_ms)) {
        into->first_accept_ms = from->first_accept_ms;
    }
    if (from->last_accept_ms > into->last_accept_ms) {
        into->last_accept_ms = from->last_accept_ms;
    }
    const char *key;
    json_t *value;
    json_object_foreach(from->deliveries, key, value)
    {
        sink_stats_count(into->deliveries, key, json_integer_value(value));
    }
}

/* Write atomically (temporary file, then rename), so a reader never sees half. */
static int sink_stats_write(const char *path, const struct sink_stats *st, long peak, json_t *peers,
                            const char *profile)
{
    json_t *root = json_object();
    for (int i = 0; i < SINK_COUNTERS; i++) {
        json_object_set_new(root, sink_counter_names[i], json_integer((json_int_t)st->n[i]));
    }
    json_object_set_new(root, "peak_concurrent", json_integer(peak));
    json_object_set_new(root, "max_rcpts_per_msg", json_integer((json_int_t)st->max_rcpts_per_msg));
    json_object_set_new(root, "max_msgs_per_session",
                        json_integer((json_int_t)st->max_msgs_per_session));
    json_object_set_new(root, "first_accept_ms", json_integer((json_int_t)st->first_accept_ms));
    json_object_set_new(root, "last_accept_ms", json_integer((json_int_t)st->last_accept_ms));
    json_object_set_new(root, "peers", peers);
    if (profile[0]) {
        json_object_set_new(root, "profile", json_string(profile));
    }
    json_object_set(root, "deliveries", st->deliveries);
    char tmp[PATH_MAX];
    int rc = -1;
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) < sizeof tmp) {
        /* Addresses inside: 0600, and never through a link at tmp. */
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
            rc = json_dumpfd(root, fd, JSON_INDENT(2) | JSON_SORT_KEYS);
            if (close(fd) != 0) {
                rc = -1;
            }
        }
        if (rc == 0 && rename(tmp, path) != 0) {
            rc = -1;
        }
    }
    json_decref(root);
    if (rc != 0) {
        fprintf(stderr, "sink: cannot write stats to %s: %s\n", path, strerror(errno));
    }
    return rc;
}

/* A worker's copy of its statistics, for the periodic file: taken on its
 * own thread, so the hot path never locks. */
void sink_worker_on_snapshot(struct loop_timer *t)
{
    struct sink_worker *w = t->owner;
    json_t *copy = json_deep_copy(w->stats.deliveries);
    pthread_mutex_lock(&w->snapshot_lock);
    json_t *old = w->snapshot.deliveries;
    w->snapshot = w->stats;
    w->snapshot.deliveries = copy ? copy : json_object();
    pthread_mutex_unlock(&w->snapshot_lock);
    json_decref(old);
    loop_timer_set(w->loop, t, w->sink->cfg.stats_interval_ms);
}

int sink_write_stats(struct sink *sk, int final)
{
    struct sink_stats total;
    sink_stats_init(&total);
    for (unsigned i = 0; i < sk->nworkers; i++) {
        struct sink_worker *w = &sk->workers[i];
        if (final) {
            sink_stats_add(&total, &w->stats);
            continue;
        }
        pthread_mutex_lock(&w->snapshot_lock);
        sink_stats_add(&total, &w->snapshot);
        pthread_mutex_unlock(&w->snapshot_lock);
    }
    int rc = sink_stats_write(sk->cfg.stats_file, &total, atomic_load(&sk->peak),
                              sink_peers_json(&sk->peers), sk->cfg.profile);
    json_decref(total.deliveries);
    return rc;
}
