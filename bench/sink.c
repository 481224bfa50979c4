/*
 * sink - `ringmail sink`, a fast io_uring TLS SMTP sink. See sink.h.
 *
 * Threads. The main thread parses options, loads the certificate, opens
 * one listening socket per address per worker (SO_REUSEPORT spreads the
 * connections), blocks SIGTERM/SIGINT and starts the workers, which
 * inherit the mask. Each worker creates its own ring (SINGLE_ISSUER wants
 * the creating thread to be the submitting one), arms a multishot accept
 * per socket and runs its loop. The main thread sits in sigwait(); on a
 * signal it calls loop_stop() on every worker, joins them, merges their
 * statistics and writes the JSON. Counters and the per-recipient map are
 * per worker, so the hot path takes no lock; only the connection count
 * (--max-conns and peak_concurrent are global by nature) is an atomic,
 * touched once per connection. The per-client-address table ("peers") is
 * shared too: its mutex is taken when a connection opens and closes, and
 * an accepted message adds to its entry's atomic counter, never locking.
 *
 * A connection. Bytes from the socket land in raw (16 KB at a time); under
 * TLS they are decrypted into plain. The SMTP machine reads plaintext and
 * writes replies into wire (plaintext session) or reply (TLS, encrypted
 * into wire right away). Wire bytes become sendable at once, or after
 * --latency-ms for SMTP replies (a small FIFO of deadlines on one loop
 * timer); handshake bytes queue behind held replies, never ahead. One SEND
 * is in flight per socket, reading the `sending` buffer, which nothing
 * touches until the completion; when it is idle the released wire bytes
 * are swapped (or copied) into it. A connection that stops reading its
 * replies stops being read (1 MB of unsent output at most).
 *
 * Closing. CLOSING flushes what is queued, then the socket is shut down
 * (DEAD); shutdown() wakes the pending RECV, and the connection is freed
 * only when neither RECV nor SEND is in flight, at the end of a completion
 * or timer callback, never inside a helper.
 */
#include "sink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/buf.h"
#include "engine/loop.h"
#include "engine/smtp_server.h"
#include "engine/tls.h"

#define SINK_MAX_LISTEN 16
#define SINK_MAX_THREADS 256
#define SINK_RECV_SIZE 16384
#define SINK_HELD_MAX 16
#define SINK_MAX_PENDING_OUT (1u << 20)
#define SINK_RING_ENTRIES 4096
#define SINK_LISTEN_BACKLOG 4096
#define SINK_ACCEPT_RETRY_MS 100
#define SINK_GARBAGE_LINE_MAX 4096
#define SINK_REPLY_MAX 510 /* an SMTP reply line without CRLF (RFC 5321 4.5.3.1.5) */
#define SINK_PEER_BUCKETS 1024

static const char sink_reply_tempfail[] = "451 4.7.1 Temporary failure (sink tempfail)";
static const char sink_reply_defer[] = "451 4.3.0 Temporary failure (sink)";
static const char sink_reply_reject[] = "550 5.1.1 User unknown (sink)";
static const char sink_reply_busy[] = "421 4.7.0 Too many connections";
static const char sink_reply_unavailable[] = "421 4.3.2 Service not available (sink)";
static const char sink_reply_timeout[] = "421 4.4.2 Error: timeout exceeded";
static const char sink_reply_garbage[] = "HTTP/1.1 400 Bad Request\r\n";
static const char sink_reply_tls_required[] = "530 5.7.0 Must issue a STARTTLS command first";

/* In a profile's replies "{ip}" stands for the client's address. */
#define SINK_REPLY_IP "{ip}"
#define SINK_PROFILE_NAME_MAX 64
#define SINK_PROFILE_FILE_MAX 65536

/* What a provider does, as its sender guidelines document it: the
 * defaults a --profile or --profile-file sets before the other options. */
struct sink_profile {
    char name[SINK_PROFILE_NAME_MAX];
    int tls_required;                    /* MAIL before STARTTLS gets 530 5.7.0 */
    int starttls;                        /* STARTTLS offered (with a certificate) */
    char temp_reply[SINK_REPLY_MAX + 1]; /* tempfail@ and the --defer-pct share */
    char perm_reply[SINK_REPLY_MAX + 1]; /* permfail@ and the --reject-pct share */
    unsigned defer_pct, reject_pct, latency_ms, max_conns;
    unsigned latency_jitter_ms; /* each reply waits latency_ms + uniform [0, this] */
    unsigned source_rate;       /* messages per second per client address; over it: temp_reply */
};

struct sink_profile_builtin {
    const char *name, *summary;
    int tls_required, starttls;
    const char *temp_reply, *perm_reply;
    unsigned source_rate;
};

static const struct sink_profile_builtin sink_profiles[] = {
    {"gmail",
     "STARTTLS required (530 5.7.0 before it); 421 4.7.28 over 500 msgs/s per source; 550 5.1.1", 1,
     1,
     "421 4.7.28 [{ip}] Our system has detected an unusual rate of unsolicited mail originating "
     "from your IP address. To protect our users from spam, mail sent from your IP address has "
     "been temporarily rate limited.",
     "550 5.1.1 The email account that you tried to reach does not exist.", 500},
    {"outlook", "451 4.7.500 server busy (also over 500 msgs/s per source); 550 5.7.1 (S3150)", 0,
     1, "451 4.7.500 Server busy. Please try again later.",
     "550 5.7.1 Unfortunately, messages from [{ip}] weren't sent. Please contact your Internet "
     "service provider since part of their network is on our block list (S3150).",
     500},
    {"yahoo", "421 4.7.0 [TSS04] deferred (also over 500 msgs/s per source); 554 5.7.9 policy", 0,
     1,
     "421 4.7.0 [TSS04] Messages from {ip} temporarily deferred due to unexpected volume or "
     "user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
     "554 5.7.9 Message not accepted for policy reasons. See "
     "https://postmaster.yahooinc.com/error-codes",
     500},
    {"qq", "451 4.3.0 temporarily rejected; 550 mailbox not found", 0, 1,
     "451 4.3.0 Mail server temporarily rejected message.",
     "550 Mailbox not found or access denied", 0},
    {"163", "451 4.7.1 RP:TRC try again later; 550 user not found", 0, 1,
     "451 4.7.1 RP:TRC Try again later", "550 User not found or mailbox unavailable", 0},
    {"legacy", "no STARTTLS offered, accepts everything else", 0, 0, NULL, NULL, 0},
};

enum sink_fault {
    SINK_FAULT_NONE = 0,
    SINK_FAULT_GARBAGE,         /* HTTP errors to every line after the greeting */
    SINK_FAULT_STALL,           /* no answer from MAIL on */
    SINK_FAULT_STARTTLS_INJECT, /* a reply injected after STARTTLS's 220, same write */
    SINK_FAULT_GREETING_421,    /* 421 instead of the greeting */
};

static const char *const sink_fault_names[] = {"none", "garbage", "stall", "starttls-inject",
                                               "greeting-421"};

struct sink_listen {
    struct sockaddr_storage addr;
    socklen_t len;
};

/* Everything the options say; read-only once the workers run. */
struct sink_config {
    struct sink_listen listen[SINK_MAX_LISTEN];
    unsigned nlisten;
    const char *cert_file, *key_file;
    int implicit_tls, no_starttls, no_tickets;
    uint16_t tls_min, tls_max;
    unsigned latency_ms, defer_pct, reject_pct, drop_pct;
    unsigned latency_jitter_ms, source_rate;
    unsigned max_conns, threads, stats_interval_ms, idle_timeout_ms;
    const char *stats_file;
    char auth_user[256], auth_pass[256];
    int auth, auth_plaintext, verbose;
    char hostname[256];
    enum sink_fault fault;
    uint64_t seed;
    char defer_reply[SINK_REPLY_MAX + 1];  /* --defer-pct share; 4xx */
    char reject_reply[SINK_REPLY_MAX + 1]; /* --reject-pct share; 5xx */
    int defer_closes;                      /* defer_reply is a 421: close after it */
    char profile[SINK_PROFILE_NAME_MAX];   /* "" without --profile/--profile-file */
    int tls_required;                      /* MAIL outside TLS gets 530 5.7.0 */
    char temp_reply[SINK_REPLY_MAX + 1];   /* tempfail@; 4xx */
    char perm_reply[SINK_REPLY_MAX + 1];   /* permfail@; 5xx */
    int temp_closes;                       /* temp_reply is a 421: close after it */
};

enum sink_counter {
    SINK_CONNECTIONS,
    SINK_REFUSED,
    SINK_TLS_HANDSHAKES,
    SINK_TLS_RESUMED,
    SINK_TLS_FAILURES,
    SINK_MESSAGES,
    SINK_ACCEPTED_RCPTS,
    SINK_DEFERRED_RCPTS,
    SINK_REJECTED_RCPTS,
    SINK_DROPPED,
    SINK_BYTES,
    SINK_BYTES_RECEIVED,
    SINK_STARTTLS_VIOLATIONS,
    SINK_COUNTERS,
};

static const char *const sink_counter_names[SINK_COUNTERS] = {
    "connections", "refused",        "tls_handshakes",      "tls_resumed",    "tls_failures",
    "messages",    "accepted_rcpts", "deferred_rcpts",      "rejected_rcpts", "dropped",
    "bytes",       "bytes_received", "starttls_violations",
};

/* Merged across workers: n by sum, the rest as their comments say. */
struct sink_stats {
    uint64_t n[SINK_COUNTERS];
    uint64_t max_msgs_per_session; /* max */
    uint64_t max_rcpts_per_msg;    /* max: accepted recipients of one message */
    uint64_t first_accept_ms;      /* CLOCK_REALTIME; earliest non-zero */
    uint64_t last_accept_ms;       /* latest */
    json_t *deliveries;            /* owned: recipient address -> accepted messages */
};

/* One client source address. Owned by the sink's peer table and freed with
 * it; connections borrow it. The counts are guarded by the table's lock,
 * except accepted, which the hot path adds to without it. */
struct sink_peer {
    struct sink_peer *next; /* in the bucket */
    char address[INET6_ADDRSTRLEN];
    uint64_t sessions, refused, open, peak;
    atomic_uint_least64_t accepted;
    double tokens;         /* --source-rate bucket (under the table's lock) */
    uint64_t tokens_ms;    /* when it was last filled */
    uint64_t rate_limited; /* RCPTs refused for the rate */
};

struct sink_peers {
    pthread_mutex_t lock;
    struct sink_peer *buckets[SINK_PEER_BUCKETS]; /* owned chains */
};

struct sink_worker;

struct sink_listener {
    struct loop_op op;
    struct loop_timer retry; /* re-arm after an accept error, not in a tight loop */
    struct sink_worker *w;
    int fd;
};

enum sink_conn_state {
    SINK_CONN_HANDSHAKE, /* TLS handshake: implicit TLS, or after STARTTLS */
    SINK_CONN_SMTP,      /* SMTP commands and data, plaintext or inside TLS */
    SINK_CONN_GARBAGE,   /* --fault garbage: every line gets an HTTP error */
    SINK_CONN_CLOSING,   /* sending what is queued, reading nothing more */
    SINK_CONN_DEAD,      /* shut down; freed once no operation is in flight */
};

struct sink_held {
    uint64_t deadline_ms;
    uint64_t upto; /* wire byte count (absolute) released at the deadline */
};

/* Owned by its worker (the conns list); owns its buffers, TLS and SMTP state. */
struct sink_conn {
    struct sink_worker *w;
    struct sink_conn *prev, *next;
    uint64_t id;
    int fd;
    enum sink_conn_state state;
    int refused;  /* over --max-conns: 421 instead of the greeting */
    int dropping; /* this transaction is cut inside DATA */
    int recv_busy, send_busy;
    struct loop_op recv_op, send_op;
    struct loop_timer idle_timer, held_timer;
    uint64_t last_active_ms;
    buf_t raw;              /* received: ciphertext under TLS, else plaintext */
    buf_t plain;            /* decrypted, for the SMTP machine */
    buf_t reply;            /* SMTP output under TLS, before encryption */
    buf_t wire;             /* bytes to send; TLS appends here */
    buf_t sending;          /* what the in-flight SEND reads */
    uint64_t wire_taken;    /* bytes moved from wire to sending, ever */
    uint64_t wire_assigned; /* bytes of wire released or held, ever */
    uint64_t release_upto;  /* bytes of wire that may be sent now, ever */
    struct sink_held held[SINK_HELD_MAX];
    unsigned held_first, held_count;
    struct tls_conn *tls;
    struct smtp_server *smtp;
    char peer[INET6_ADDRSTRLEN + 8];
    struct sink_peer *peer_stats; /* borrowed from the sink's table; NULL if unknown */
    int peer_open;                /* counted as open in peer_stats */
    uint64_t accepted;            /* messages accepted in this session */
};

struct sink;

struct sink_worker {
    struct sink *sink;
    unsigned index;
    pthread_t thread;
    int started;
    struct loop *loop; /* owned, created on the worker's thread */
    struct sink_listener listeners[SINK_MAX_LISTEN];
    struct sink_conn *conns; /* live connections, owned */
    struct sink_stats stats; /* this thread's; others read it only after join */
    pthread_mutex_t snapshot_lock;
    struct sink_stats snapshot; /* a copy for --stats-interval-ms */
    struct loop_timer snapshot_timer;
    uint64_t rng;
    uint64_t next_conn_id;
    uint64_t queued;                     /* queue ids in final replies */
    char reply[96];                      /* the final reply being formatted */
    char rcpt_reply[SINK_REPLY_MAX + 1]; /* a RCPT reply with the client address in it */
};

struct sink {
    struct sink_config cfg;
    struct tls_ctx *tls; /* owned; shared by the workers */
    struct smtp_server_config smtp;
    struct smtp_server_hooks hooks;
    struct sink_worker *workers; /* owned array */
    unsigned nworkers;
    atomic_long current, peak;
    struct sink_peers peers;
    pthread_mutex_t ready_lock;
    pthread_cond_t ready_cond;
    unsigned ready, failed;
};

/* ---- small helpers ---- */

static void sink_conn_log(const struct sink_conn *c, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void sink_conn_log(const struct sink_conn *c, const char *event, const char *fmt, ...)
{
    if (!c->w->sink->cfg.verbose) {
        return;
    }
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    fprintf(stderr, "sink: level=error thread=%u conn=%" PRIu64 " peer=%s event=%s reason=\"%s\"\n",
            c->w->index, c->id, c->peer[0] ? c->peer : "-", event, detail);
}

/* splitmix64: fast, and reproducible from --seed. */
static uint64_t sink_random(struct sink_worker *w)
{
    uint64_t z = (w->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned sink_percent(struct sink_worker *w)
{
    return (unsigned)(sink_random(w) % 100);
}

/* "tempfail@x", "tempfail+tag@x" (case-insensitive) */
static int sink_local_part_is(const char *address, const char *word)
{
    size_t n = strlen(word);
    return strncasecmp(address, word, n) == 0 &&
           (address[n] == '@' || address[n] == '+' || address[n] == '\0');
}

/* The IP address alone ("127.0.0.2", "::1"); returns the port. */
static unsigned sink_format_host(const struct sockaddr *sa, char host[INET6_ADDRSTRLEN])
{
    snprintf(host, INET6_ADDRSTRLEN, "?");
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, INET6_ADDRSTRLEN);
        return ntohs(s6->sin6_port);
    }
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &s4->sin_addr, host, INET6_ADDRSTRLEN);
    return ntohs(s4->sin_port);
}

static void sink_format_address(const struct sockaddr *sa, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN];
    unsigned port = sink_format_host(sa, host);
    snprintf(out, outlen, sa->sa_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
}

/* Wall-clock milliseconds, for timestamps a test compares with its own. */
static uint64_t sink_realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

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
static struct sink_peer *sink_peers_open(struct sink_peers *t, const char *address, int refused)
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
static int sink_peers_take(struct sink_peers *t, struct sink_peer *p, unsigned rate, uint64_t now)
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

static void sink_peers_close(struct sink_peers *t, struct sink_peer *p)
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

static void sink_peers_free(struct sink_peers *t)
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

static void sink_stats_init(struct sink_stats *st)
{
    memset(st, 0, sizeof *st);
    st->deliveries = json_object();
    if (!st->deliveries) {
        fprintf(stderr, "sink: out of memory\n");
        abort();
    }
}

static void sink_stats_count(json_t *map, const char *address, json_int_t n)
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
static void sink_worker_on_snapshot(struct loop_timer *t)
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

static int sink_write_stats(struct sink *sk, int final)
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

/* ---- connection: lifetime ---- */

static void sink_conn_flush(struct sink_conn *c);
static void sink_conn_output(struct sink_conn *c, int is_reply);

/*
 * The SMTP session is over for its peer's open count: at QUIT, or when the
 * sink decides to close (421, a cut, a timeout), before the client hears of
 * it, or at the latest when the connection is freed. Counting until the
 * socket is gone would overlap a client's next connection, which it opens
 * as soon as it has the 221, and overstate its concurrency.
 */
static void sink_conn_session_end(struct sink_conn *c)
{
    if (c->peer_open) {
        c->peer_open = 0;
        sink_peers_close(&c->w->sink->peers, c->peer_stats);
    }
}

/* Free everything the connection owns. Timers must be cancelled already
 * (or the loop gone); no operation may be in flight. */
static void sink_conn_release(struct sink_conn *c)
{
    struct sink_worker *w = c->w;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        w->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    close(c->fd);
    tls_conn_free(c->tls);
    smtp_server_free(c->smtp);
    buf_free(&c->raw);
    buf_free(&c->plain);
    buf_free(&c->reply);
    buf_free(&c->wire);
    buf_free(&c->sending);
    if (!c->refused) {
        atomic_fetch_sub(&w->sink->current, 1);
    }
    sink_conn_session_end(c);
    free(c);
}

/* Shut the socket down now; the pending RECV completes and the connection
 * is freed by sink_conn_check at the end of the callback. */
static void sink_conn_abort(struct sink_conn *c)
{
    if (c->state == SINK_CONN_DEAD) {
        return;
    }
    c->state = SINK_CONN_DEAD;
    sink_conn_session_end(c);
    loop_timer_cancel(c->w->loop, &c->idle_timer);
    loop_timer_cancel(c->w->loop, &c->held_timer);
    shutdown(c->fd, SHUT_RDWR);
    if (c->recv_busy) {
        loop_cancel(c->w->loop, &c->recv_op);
    }
}

/* Called last in every callback that touched c. */
static void sink_conn_check(struct sink_conn *c)
{
    if (c->state == SINK_CONN_DEAD && !c->recv_busy && !c->send_busy) {
        sink_conn_release(c);
    }
}

static int sink_conn_tls_up(const struct sink_conn *c)
{
    return c->tls && (c->state == SINK_CONN_SMTP || c->state == SINK_CONN_GARBAGE);
}

/* Send what is queued (after a close_notify when notify), then close. */
static void sink_conn_close(struct sink_conn *c, int notify)
{
    if (c->state == SINK_CONN_CLOSING || c->state == SINK_CONN_DEAD) {
        return;
    }
    sink_conn_session_end(c);
    if (notify && sink_conn_tls_up(c)) {
        tls_shutdown(c->tls);
        sink_conn_output(c, 0);
    }
    c->state = SINK_CONN_CLOSING;
    sink_conn_flush(c);
}

/* ---- connection: output ---- */

static void sink_conn_hold(struct sink_conn *c, uint64_t upto)
{
    struct loop *loop = c->w->loop;
    const struct sink_config *cfg = &c->w->sink->cfg;
    uint64_t delay = cfg->latency_ms;
    if (cfg->latency_jitter_ms) {
        delay += sink_random(c->w) % ((uint64_t)cfg->latency_jitter_ms + 1);
    }
    uint64_t deadline = loop_now_ms(loop) + delay;
    if (c->held_count == SINK_HELD_MAX) {
        /* Full: the newest entry absorbs this batch and its later deadline. */
        struct sink_held *last = &c->held[(c->held_first + c->held_count - 1) % SINK_HELD_MAX];
        last->upto = upto;
        last->deadline_ms = deadline;
    } else {
        struct sink_held *h = &c->held[(c->held_first + c->held_count) % SINK_HELD_MAX];
        h->upto = upto;
        h->deadline_ms = deadline;
        c->held_count++;
    }
    if (!loop_timer_active(&c->held_timer)) {
        loop_timer_set(loop, &c->held_timer, delay);
    }
}

static void sink_conn_on_held(struct loop_timer *t)
{
    struct sink_conn *c = t->owner;
    uint64_t now = loop_now_ms(c->w->loop);
    while (c->held_count && c->held[c->held_first].deadline_ms <= now) {
        c->release_upto = c->held[c->held_first].upto;
        c->held_first = (c->held_first + 1) % SINK_HELD_MAX;
        c->held_count--;
    }
    if (c->held_count) {
        loop_timer_set(c->w->loop, t, c->held[c->held_first].deadline_ms - now);
    }
    sink_conn_flush(c);
    sink_conn_check(c);
}

/*
 * Encrypt the SMTP output (under TLS) and account the new wire bytes:
 * replies are held --latency-ms, other bytes (handshake) are released at
 * once unless replies are held, which they must not overtake.
 */
static void sink_conn_output(struct sink_conn *c, int is_reply)
{
    if (c->state == SINK_CONN_DEAD) {
        return;
    }
    if (c->tls && buf_len(&c->reply) > 0) {
        enum tls_result r = tls_write(c->tls, buf_data(&c->reply), buf_len(&c->reply));
        buf_reset(&c->reply);
        if (r != TLS_OK) {
            sink_conn_log(c, "tls_write", "%s", tls_conn_error(c->tls));
            sink_conn_abort(c);
            return;
        }
    }
    uint64_t total = c->wire_taken + buf_len(&c->wire);
    if (total > c->wire_assigned) {
        if (is_reply && c->w->sink->cfg.latency_ms) {
            sink_conn_hold(c, total);
        } else if (c->held_count) {
            c->held[(c->held_first + c->held_count - 1) % SINK_HELD_MAX].upto = total;
        } else {
            c->release_upto = total;
        }
        c->wire_assigned = total;
    }
    sink_conn_flush(c);
}

/* Start a SEND if none is in flight and released bytes wait. */
static void sink_conn_flush(struct sink_conn *c)
{
    if (c->send_busy || c->state == SINK_CONN_DEAD) {
        return;
    }
    if (buf_len(&c->sending) == 0) {
        size_t n = (size_t)(c->release_upto - c->wire_taken);
        if (n == 0) {
            if (c->state == SINK_CONN_CLOSING && c->held_count == 0) {
                sink_conn_abort(c); /* everything went out */
            }
            return;
        }
        if (n == buf_len(&c->wire)) {
            buf_t t = c->sending; /* empty, keeps its storage */
            c->sending = c->wire;
            c->wire = t;
        } else {
            buf_append(&c->sending, buf_data(&c->wire), n);
            buf_consume(&c->wire, n);
        }
        c->wire_taken += n;
    }
    c->send_busy = 1;
    loop_send(c->w->loop, &c->send_op, c->fd, buf_data(&c->sending), buf_len(&c->sending));
}

/* Ask for room so that raw stays at SINK_RECV_SIZE when a few bytes are
 * left over (a partial line, a partial TLS record), instead of doubling. */
static void sink_conn_recv(struct sink_conn *c)
{
    size_t left = buf_len(&c->raw);
    char *w = buf_reserve(&c->raw,
                          left < SINK_RECV_SIZE / 2 ? SINK_RECV_SIZE - left : SINK_RECV_SIZE / 2);
    c->recv_busy = 1;
    loop_recv(c->w->loop, &c->recv_op, c->fd, w, c->raw.cap - c->raw.len);
}

/* Read on, unless closing or the peer is not reading its replies. */
static void sink_conn_resume_recv(struct sink_conn *c)
{
    if (c->recv_busy || c->state == SINK_CONN_CLOSING || c->state == SINK_CONN_DEAD) {
        return;
    }
    if (buf_len(&c->wire) + buf_len(&c->sending) >= SINK_MAX_PENDING_OUT) {
        return;
    }
    sink_conn_recv(c);
}

static void sink_conn_on_send(struct loop_op *op, int res, unsigned flags)
{
    struct sink_conn *c = op->owner;
    (void)flags;
    c->send_busy = 0;
    if (res <= 0) {
        if (c->state != SINK_CONN_DEAD) {
            sink_conn_log(c, "send", "%s", res ? strerror(-res) : "sent nothing");
        }
        sink_conn_abort(c);
    } else {
        buf_consume(&c->sending, (size_t)res);
        sink_conn_flush(c);
        sink_conn_resume_recv(c);
    }
    sink_conn_check(c);
}

/* ---- connection: input ---- */

static buf_t *sink_conn_out(struct sink_conn *c)
{
    return c->tls ? &c->reply : &c->wire;
}

/* The plaintext the client sent: raw, or raw decrypted into plain. NULL
 * when TLS failed (the connection is aborted). *peer_closed on close_notify. */
static buf_t *sink_conn_plaintext(struct sink_conn *c, int *peer_closed)
{
    *peer_closed = 0;
    if (!c->tls) {
        return &c->raw;
    }
    enum tls_result r = tls_read(c->tls, &c->plain);
    if (r == TLS_ERROR) {
        sink_conn_log(c, "tls_read", "%s", tls_conn_error(c->tls));
        sink_conn_abort(c);
        return NULL;
    }
    *peer_closed = r == TLS_CLOSED;
    return &c->plain;
}

static void sink_conn_greet(struct sink_conn *c)
{
    const struct sink_config *cfg = &c->w->sink->cfg;
    const char *refusal = c->refused                              ? sink_reply_busy
                          : cfg->fault == SINK_FAULT_GREETING_421 ? sink_reply_unavailable
                                                                  : NULL;
    c->state = cfg->fault == SINK_FAULT_GARBAGE ? SINK_CONN_GARBAGE : SINK_CONN_SMTP;
    if (refusal) {
        smtp_server_refuse(c->smtp, sink_conn_out(c), refusal);
        sink_conn_output(c, 1);
        sink_conn_close(c, 1);
        return;
    }
    smtp_server_greeting(c->smtp, sink_conn_out(c));
    sink_conn_output(c, 1);
}

/* STARTTLS accepted: whatever the client pipelined after it is an attack
 * or a bug (RFC 3207 5), and is discarded, never read as a command. */
static void sink_conn_starttls(struct sink_conn *c)
{
    if (buf_len(&c->raw) > 0) {
        sink_conn_log(c, "starttls_violation", "%zu bytes after STARTTLS discarded",
                      buf_len(&c->raw));
        c->w->stats.n[SINK_STARTTLS_VIOLATIONS]++;
        buf_reset(&c->raw);
    }
    c->tls = tls_conn_new(c->w->sink->tls, &c->raw, &c->wire, NULL, c);
    if (!c->tls) {
        sink_conn_log(c, "tls_new", "cannot create TLS state");
        sink_conn_abort(c);
        return;
    }
    c->state = SINK_CONN_HANDSHAKE;
}

static void sink_conn_smtp(struct sink_conn *c)
{
    int peer_closed;
    buf_t *in = sink_conn_plaintext(c, &peer_closed);
    if (!in) {
        return;
    }
    enum smtp_server_action a = smtp_server_input(c->smtp, in, sink_conn_out(c));
    sink_conn_output(c, 1);
    if (c->state == SINK_CONN_DEAD) {
        return;
    }
    switch (a) {
    case SMTP_SERVER_WAIT:
        if (peer_closed) {
            sink_conn_close(c, 1);
        }
        break;
    case SMTP_SERVER_STARTTLS:
        sink_conn_starttls(c);
        break;
    case SMTP_SERVER_CLOSE:
        if (c->dropping) {
            sink_conn_abort(c); /* a cut, not a goodbye */
        } else {
            sink_conn_close(c, 1);
        }
        break;
    }
}

static void sink_conn_garbage(struct sink_conn *c)
{
    int peer_closed;
    buf_t *in = sink_conn_plaintext(c, &peer_closed);
    if (!in) {
        return;
    }
    const char *p = buf_data(in), *end = p + buf_len(in), *q = p, *next = p;
    while ((q = memchr(q, '\n', (size_t)(end - q))) != NULL) {
        buf_append_str(sink_conn_out(c), sink_reply_garbage);
        next = ++q;
    }
    buf_consume(in, (size_t)(next - p));
    if (buf_len(in) > SINK_GARBAGE_LINE_MAX) {
        buf_reset(in);
    }
    sink_conn_output(c, 1);
    if (peer_closed) {
        sink_conn_close(c, 1);
    }
}

static void sink_conn_handshake(struct sink_conn *c)
{
    struct sink_worker *w = c->w;
    enum tls_result r = tls_handshake(c->tls);
    if (r == TLS_WANT) {
        sink_conn_output(c, 0);
        return;
    }
    if (r != TLS_OK) {
        sink_conn_log(c, "tls_handshake", "%s", tls_conn_error(c->tls));
        w->stats.n[SINK_TLS_FAILURES]++;
        sink_conn_output(c, 0); /* the alert, if any */
        sink_conn_close(c, 0);
        return;
    }
    struct tls_info info;
    tls_conn_info(c->tls, &info);
    w->stats.n[SINK_TLS_HANDSHAKES]++;
    w->stats.n[SINK_TLS_RESUMED] += info.resumed ? 1 : 0;
    c->state = SINK_CONN_SMTP;
    sink_conn_output(c, 0); /* session tickets */
    if (w->sink->cfg.implicit_tls) {
        sink_conn_greet(c);
    }
}

static void sink_conn_input(struct sink_conn *c)
{
    switch (c->state) {
    case SINK_CONN_HANDSHAKE:
        sink_conn_handshake(c);
        if (c->state == SINK_CONN_HANDSHAKE || buf_len(&c->raw) == 0) {
            break;
        }
        /* The client's first records may have come with its Finished. */
        sink_conn_input(c);
        break;
    case SINK_CONN_SMTP:
        sink_conn_smtp(c);
        break;
    case SINK_CONN_GARBAGE:
        sink_conn_garbage(c);
        break;
    case SINK_CONN_CLOSING:
        buf_reset(&c->raw);
        break;
    case SINK_CONN_DEAD:
        break;
    }
}

static void sink_conn_on_recv(struct loop_op *op, int res, unsigned flags)
{
    struct sink_conn *c = op->owner;
    (void)flags;
    c->recv_busy = 0;
    if (c->state == SINK_CONN_DEAD) {
        sink_conn_check(c);
        return;
    }
    if (res <= 0) {
        if (res < 0 && res != -ECONNRESET && res != -ECANCELED) {
            sink_conn_log(c, "recv", "%s", strerror(-res));
        }
        if (res == 0) {
            sink_conn_close(c, 0); /* peer half-closed: still send what is queued */
        } else {
            sink_conn_abort(c);
        }
        sink_conn_check(c);
        return;
    }
    loop_mark_received(buf_data(&c->raw) + buf_len(&c->raw), (size_t)res);
    buf_commit(&c->raw, (size_t)res);
    c->w->stats.n[SINK_BYTES_RECEIVED] += (uint64_t)res;
    c->last_active_ms = loop_now_ms(c->w->loop);
    sink_conn_input(c);
    sink_conn_resume_recv(c);
    sink_conn_check(c);
}

static void sink_conn_on_idle(struct loop_timer *t)
{
    struct sink_conn *c = t->owner;
    struct loop *loop = c->w->loop;
    uint64_t timeout = c->w->sink->cfg.idle_timeout_ms;
    uint64_t idle = loop_now_ms(loop) - c->last_active_ms;
    if (idle < timeout) {
        loop_timer_set(loop, t, timeout - idle);
        return;
    }
    sink_conn_log(c, "idle_timeout", "no input for %" PRIu64 " ms", idle);
    if (c->state == SINK_CONN_SMTP) {
        smtp_server_refuse(c->smtp, sink_conn_out(c), sink_reply_timeout);
        sink_conn_output(c, 0);
        sink_conn_close(c, 1);
        c->last_active_ms = loop_now_ms(loop);
        if (c->state == SINK_CONN_CLOSING) {
            loop_timer_set(loop, t, timeout); /* next expiry aborts */
        }
    } else {
        sink_conn_abort(c);
    }
    sink_conn_check(c);
}

/* ---- SMTP hooks (user is the connection) ---- */

static void sink_on_mail(void *user, const char *from, struct smtp_server_decision *d)
{
    struct sink_conn *c = user;
    (void)from;
    const struct sink_config *cfg = &c->w->sink->cfg;
    c->dropping = 0;
    if (cfg->tls_required && !smtp_server_tls_active(c->smtp)) {
        d->reply = sink_reply_tls_required;
    } else if (cfg->fault == SINK_FAULT_STALL) {
        d->verdict = SMTP_SERVER_STALL;
    }
}

/* A 421 ends the session (RFC 5321 3.8): the machine appends the hook's
 * reply itself, so it is closed through smtp_server_refuse into a scratch
 * buffer; it then ignores what the client pipelined after this RCPT and
 * asks the connection to close once the 421 is out. */
static void sink_conn_close_after_reply(struct sink_conn *c, const char *reply)
{
    buf_t scratch = BUF_INIT;
    smtp_server_refuse(c->smtp, &scratch, reply);
    buf_free(&scratch);
    sink_conn_session_end(c);
}

/* A profile's reply names the client as the provider's does: "{ip}"
 * becomes its address, in the worker's buffer (valid until the hook's
 * caller returns). A reply that would outgrow an SMTP line stays as it is. */
static const char *sink_conn_reply(struct sink_conn *c, const char *reply)
{
    const char *at = strstr(reply, SINK_REPLY_IP);
    if (!at) {
        return reply;
    }
    const char *ip = c->peer_stats ? c->peer_stats->address : "unknown";
    int n = snprintf(c->w->rcpt_reply, sizeof c->w->rcpt_reply, "%.*s%s%s", (int)(at - reply),
                     reply, ip, at + strlen(SINK_REPLY_IP));
    return n > 0 && (size_t)n < sizeof c->w->rcpt_reply ? c->w->rcpt_reply : reply;
}

static void sink_on_rcpt(void *user, const char *rcpt, struct smtp_server_decision *d)
{
    struct sink_conn *c = user;
    struct sink_worker *w = c->w;
    const struct sink_config *cfg = &w->sink->cfg;
    int closes = 0;
    if (sink_local_part_is(rcpt, "tempfail")) {
        d->reply = cfg->temp_reply;
        closes = cfg->temp_closes;
    } else if (sink_local_part_is(rcpt, "permfail")) {
        d->reply = cfg->perm_reply;
    } else if (cfg->source_rate && c->peer_stats &&
               !sink_peers_take(&w->sink->peers, c->peer_stats, cfg->source_rate,
                                loop_now_ms(w->loop))) {
        d->reply = cfg->temp_reply; /* the provider's answer to a sender over its rate */
        closes = cfg->temp_closes;
    } else if (cfg->defer_pct || cfg->reject_pct) {
        unsigned r = sink_percent(w);
        if (r < cfg->defer_pct) {
            d->reply = cfg->defer_reply;
            closes = cfg->defer_closes;
        } else if (r < cfg->defer_pct + cfg->reject_pct) {
            d->reply = cfg->reject_reply;
        }
    }
    if (d->reply) {
        d->reply = sink_conn_reply(c, d->reply);
    }
    if (closes) {
        sink_conn_close_after_reply(c, d->reply);
    }
    if (!d->reply) {
        w->stats.n[SINK_ACCEPTED_RCPTS]++;
    } else if (d->reply[0] == '4') {
        w->stats.n[SINK_DEFERRED_RCPTS]++;
    } else {
        w->stats.n[SINK_REJECTED_RCPTS]++;
    }
}

static void sink_on_data(void *user, struct smtp_server_decision *d)
{
    struct sink_conn *c = user;
    unsigned drop = c->w->sink->cfg.drop_pct;
    if (drop && sink_percent(c->w) < drop) {
        d->verdict = SMTP_SERVER_DROP;
        c->dropping = 1;
        c->w->stats.n[SINK_DROPPED]++;
    }
}

static void sink_on_message(void *user, const struct smtp_server_message *m,
                            struct smtp_server_decision *d)
{
    struct sink_conn *c = user;
    struct sink_worker *w = c->w;
    w->stats.n[SINK_MESSAGES]++;
    w->stats.n[SINK_BYTES] += m->size;
    /* The machine calls this hook only for a transaction with an accepted
     * recipient, so every call is an accepted message. */
    c->accepted++;
    if (c->accepted > w->stats.max_msgs_per_session) {
        w->stats.max_msgs_per_session = c->accepted;
    }
    w->stats.last_accept_ms = sink_realtime_ms();
    if (!w->stats.first_accept_ms) {
        w->stats.first_accept_ms = w->stats.last_accept_ms;
    }
    if (c->peer_stats) {
        atomic_fetch_add_explicit(&c->peer_stats->accepted, 1, memory_order_relaxed);
    }
    for (size_t i = 0; i < m->nrcpts; i++) {
        sink_stats_count(w->stats.deliveries, m->rcpts[i], 1);
    }
    if (m->nrcpts > w->stats.max_rcpts_per_msg) {
        w->stats.max_rcpts_per_msg = m->nrcpts;
    }
    snprintf(w->reply, sizeof w->reply, "250 2.0.0 Ok: queued as %02X%014" PRIX64, w->index,
             ++w->queued);
    d->reply = w->reply;
}

static int sink_on_auth(void *user, const char *mechanism, const char *authzid,
                        const char *username, const char *password)
{
    struct sink_conn *c = user;
    const struct sink_config *cfg = &c->w->sink->cfg;
    int ok = (!*authzid || strcmp(authzid, username) == 0) &&
             strcmp(username, cfg->auth_user) == 0 && strcmp(password, cfg->auth_pass) == 0;
    if (!ok) {
        sink_conn_log(c, "auth", "%s authentication failed for user %s", mechanism, username);
    }
    return ok;
}

static void sink_on_quit(void *user)
{
    sink_conn_session_end(user);
}

static void sink_on_starttls(void *user, buf_t *out)
{
    struct sink_conn *c = user;
    if (c->w->sink->cfg.fault == SINK_FAULT_STARTTLS_INJECT) {
        buf_append_str(out, "250 injected\r\n");
    }
}

/* ---- accepting ---- */

/* Count the connection globally and for its source address (NULL: unknown). */
static void sink_conn_count(struct sink_conn *c, const char *source)
{
    struct sink *sk = c->w->sink;
    long cur = atomic_fetch_add(&sk->current, 1) + 1;
    if (sk->cfg.max_conns && cur > (long)sk->cfg.max_conns) {
        atomic_fetch_sub(&sk->current, 1);
        c->refused = 1;
        c->w->stats.n[SINK_REFUSED]++;
    }
    if (source) {
        c->peer_stats = sink_peers_open(&sk->peers, source, c->refused);
        c->peer_open = c->peer_stats && !c->refused;
    }
    if (c->refused) {
        return;
    }
    c->w->stats.n[SINK_CONNECTIONS]++;
    long peak = atomic_load(&sk->peak);
    while (cur > peak && !atomic_compare_exchange_weak(&sk->peak, &peak, cur)) {
    }
}

/* A connection with its SMTP (and, for implicit TLS, TLS) state, linked
 * into the worker; NULL when memory runs out. */
static struct sink_conn *sink_conn_alloc(struct sink_worker *w, int fd)
{
    struct sink *sk = w->sink;
    struct sink_conn *c = calloc(1, sizeof *c);
    if (!c) {
        return NULL;
    }
    c->w = w;
    c->fd = fd;
    c->smtp = smtp_server_new(&sk->smtp, &sk->hooks, c);
    c->tls = sk->cfg.implicit_tls ? tls_conn_new(sk->tls, &c->raw, &c->wire, NULL, c) : NULL;
    if (!c->smtp || (sk->cfg.implicit_tls && !c->tls)) {
        smtp_server_free(c->smtp);
        tls_conn_free(c->tls);
        free(c);
        return NULL;
    }
    c->id = ++w->next_conn_id;
    c->recv_op = (struct loop_op){sink_conn_on_recv, c};
    c->send_op = (struct loop_op){sink_conn_on_send, c};
    loop_timer_init(&c->idle_timer, sink_conn_on_idle, c);
    loop_timer_init(&c->held_timer, sink_conn_on_held, c);
    c->next = w->conns;
    if (w->conns) {
        w->conns->prev = c;
    }
    w->conns = c;
    return c;
}

static void sink_conn_new(struct sink_worker *w, int fd)
{
    const struct sink_config *cfg = &w->sink->cfg;
    struct sink_conn *c = sink_conn_alloc(w, fd);
    if (!c) {
        fprintf(stderr, "sink: out of memory for a connection\n");
        close(fd);
        return;
    }
    /* A client reset before this point has no address: counted, not per peer. */
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    char source[INET6_ADDRSTRLEN];
    int known = getpeername(fd, (struct sockaddr *)&peer, &len) == 0;
    if (known) {
        sink_format_host((struct sockaddr *)&peer, source);
        if (cfg->verbose) {
            sink_format_address((struct sockaddr *)&peer, c->peer, sizeof c->peer);
        }
    }
    sink_conn_count(c, known ? source : NULL);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->last_active_ms = loop_now_ms(w->loop);
    loop_timer_set(w->loop, &c->idle_timer, cfg->idle_timeout_ms);
    if (c->tls) {
        c->state = SINK_CONN_HANDSHAKE;
    } else {
        sink_conn_greet(c);
    }
    sink_conn_resume_recv(c);
    sink_conn_check(c);
}

static void sink_listener_arm(struct sink_listener *l)
{
    loop_accept(l->w->loop, &l->op, l->fd);
}

static void sink_listener_on_retry(struct loop_timer *t)
{
    sink_listener_arm(t->owner);
}

static void sink_listener_on_accept(struct loop_op *op, int res, unsigned flags)
{
    struct sink_listener *l = op->owner;
    if (res >= 0) {
        sink_conn_new(l->w, res);
    } else if (res != -ECANCELED && l->w->sink->cfg.verbose) {
        fprintf(stderr, "sink: level=error thread=%u event=accept reason=\"%s\"\n", l->w->index,
                strerror(-res));
    }
    if (flags & IORING_CQE_F_MORE) {
        return;
    }
    /* The multishot accept ended: re-arm, after a pause if it failed. */
    if (res >= 0) {
        sink_listener_arm(l);
    } else {
        loop_timer_set(l->w->loop, &l->retry, SINK_ACCEPT_RETRY_MS);
    }
}

/* ---- workers ---- */

static void sink_ready(struct sink *sk, int ok)
{
    pthread_mutex_lock(&sk->ready_lock);
    sk->ready++;
    sk->failed += ok ? 0 : 1;
    pthread_cond_broadcast(&sk->ready_cond);
    pthread_mutex_unlock(&sk->ready_lock);
}

/* After loop_run: cancel timers while the loop exists, tear the ring down
 * (the kernel drops what was in flight), then free the connections. */
static void sink_worker_cleanup(struct sink_worker *w)
{
    for (struct sink_conn *c = w->conns; c; c = c->next) {
        loop_timer_cancel(w->loop, &c->idle_timer);
        loop_timer_cancel(w->loop, &c->held_timer);
        shutdown(c->fd, SHUT_RDWR);
    }
    for (unsigned i = 0; i < w->sink->cfg.nlisten; i++) {
        loop_timer_cancel(w->loop, &w->listeners[i].retry);
    }
    loop_timer_cancel(w->loop, &w->snapshot_timer);
    pthread_mutex_lock(&w->sink->ready_lock); /* sink_workers_stop may be calling loop_stop */
    struct loop *loop = w->loop;
    w->loop = NULL;
    pthread_mutex_unlock(&w->sink->ready_lock);
    loop_free(loop);
    while (w->conns) {
        sink_conn_release(w->conns);
    }
}

static void *sink_worker_main(void *arg)
{
    struct sink_worker *w = arg;
    w->loop = loop_new(SINK_RING_ENTRIES);
    if (!w->loop) {
        fprintf(stderr, "sink: cannot set up io_uring: %s\n", strerror(errno));
        sink_ready(w->sink, 0);
        return NULL;
    }
    for (unsigned i = 0; i < w->sink->cfg.nlisten; i++) {
        struct sink_listener *l = &w->listeners[i];
        l->op = (struct loop_op){sink_listener_on_accept, l};
        loop_timer_init(&l->retry, sink_listener_on_retry, l);
        sink_listener_arm(l);
    }
    loop_timer_init(&w->snapshot_timer, sink_worker_on_snapshot, w);
    if (w->sink->cfg.stats_interval_ms) {
        loop_timer_set(w->loop, &w->snapshot_timer, w->sink->cfg.stats_interval_ms);
    }
    sink_ready(w->sink, 1);
    int rc = loop_run(w->loop);
    if (rc < 0) {
        fprintf(stderr, "sink: thread %u: io_uring failed: %s\n", w->index, strerror(-rc));
    }
    sink_worker_cleanup(w);
    return NULL;
}

/* A listening socket for one worker; port 0 is resolved by the first bind
 * and reused by the other workers' sockets. */
static int sink_listen_socket(struct sink_listen *l)
{
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        (l->addr.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) < 0) ||
        bind(fd, (struct sockaddr *)&l->addr, l->len) < 0 || listen(fd, SINK_LISTEN_BACKLOG) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    socklen_t len = l->len;
    getsockname(fd, (struct sockaddr *)&l->addr, &len);
    return fd;
}

static int sink_workers_start(struct sink *sk)
{
    for (unsigned i = 0; i < sk->nworkers; i++) {
        struct sink_worker *w = &sk->workers[i];
        for (unsigned j = 0; j < sk->cfg.nlisten; j++) {
            w->listeners[j].w = w;
            w->listeners[j].fd = sink_listen_socket(&sk->cfg.listen[j]);
            if (w->listeners[j].fd < 0) {
                char text[80];
                sink_format_address((struct sockaddr *)&sk->cfg.listen[j].addr, text, sizeof text);
                fprintf(stderr, "sink: cannot listen on %s: %s\n", text, strerror(errno));
                return -1;
            }
        }
    }
    for (unsigned i = 0; i < sk->nworkers; i++) {
        struct sink_worker *w = &sk->workers[i];
        if (pthread_create(&w->thread, NULL, sink_worker_main, w) != 0) {
            fprintf(stderr, "sink: cannot start thread %u\n", i);
            return -1;
        }
        w->started = 1;
    }
    pthread_mutex_lock(&sk->ready_lock);
    while (sk->ready < sk->nworkers) {
        pthread_cond_wait(&sk->ready_cond, &sk->ready_lock);
    }
    pthread_mutex_unlock(&sk->ready_lock);
    return sk->failed ? -1 : 0;
}

static void sink_workers_stop(struct sink *sk)
{
    for (unsigned i = 0; i < sk->nworkers; i++) {
        struct sink_worker *w = &sk->workers[i];
        /* loop_stop before loop_run is fine: the loop then returns at once. */
        pthread_mutex_lock(&sk->ready_lock);
        if (w->loop) {
            loop_stop(w->loop);
        }
        pthread_mutex_unlock(&sk->ready_lock);
    }
    for (unsigned i = 0; i < sk->nworkers; i++) {
        struct sink_worker *w = &sk->workers[i];
        if (w->started) {
            pthread_join(w->thread, NULL);
        }
        for (unsigned j = 0; j < sk->cfg.nlisten; j++) {
            if (w->listeners[j].fd >= 0) {
                close(w->listeners[j].fd);
            }
        }
    }
}

/* ---- options ---- */

enum sink_option {
    SINK_OPT_LISTEN = 256,
    SINK_OPT_CERT,
    SINK_OPT_KEY,
    SINK_OPT_IMPLICIT_TLS,
    SINK_OPT_NO_STARTTLS,
    SINK_OPT_TLS_MIN,
    SINK_OPT_TLS_MAX,
    SINK_OPT_NO_TICKETS,
    SINK_OPT_LATENCY,
    SINK_OPT_LATENCY_JITTER,
    SINK_OPT_SOURCE_RATE,
    SINK_OPT_DEFER,
    SINK_OPT_REJECT,
    SINK_OPT_DROP,
    SINK_OPT_MAX_CONNS,
    SINK_OPT_THREADS,
    SINK_OPT_STATS,
    SINK_OPT_STATS_INTERVAL,
    SINK_OPT_AUTH,
    SINK_OPT_AUTH_PLAINTEXT,
    SINK_OPT_HOSTNAME,
    SINK_OPT_FAULT,
    SINK_OPT_SEED,
    SINK_OPT_IDLE_TIMEOUT,
    SINK_OPT_VERBOSE,
    SINK_OPT_DEFER_REPLY,
    SINK_OPT_REJECT_REPLY,
    SINK_OPT_PROFILE,
    SINK_OPT_PROFILE_FILE,
    SINK_OPT_HELP,
};

static const struct option sink_options[] = {
    {"listen", required_argument, NULL, SINK_OPT_LISTEN},
    {"tls-cert", required_argument, NULL, SINK_OPT_CERT},
    {"tls-key", required_argument, NULL, SINK_OPT_KEY},
    {"implicit-tls", no_argument, NULL, SINK_OPT_IMPLICIT_TLS},
    {"no-starttls", no_argument, NULL, SINK_OPT_NO_STARTTLS},
    {"tls-min", required_argument, NULL, SINK_OPT_TLS_MIN},
    {"tls-max", required_argument, NULL, SINK_OPT_TLS_MAX},
    {"no-tickets", no_argument, NULL, SINK_OPT_NO_TICKETS},
    {"latency-ms", required_argument, NULL, SINK_OPT_LATENCY},
    {"latency-jitter-ms", required_argument, NULL, SINK_OPT_LATENCY_JITTER},
    {"source-rate", required_argument, NULL, SINK_OPT_SOURCE_RATE},
    {"defer-pct", required_argument, NULL, SINK_OPT_DEFER},
    {"reject-pct", required_argument, NULL, SINK_OPT_REJECT},
    {"drop-pct", required_argument, NULL, SINK_OPT_DROP},
    {"max-conns", required_argument, NULL, SINK_OPT_MAX_CONNS},
    {"threads", required_argument, NULL, SINK_OPT_THREADS},
    {"stats", required_argument, NULL, SINK_OPT_STATS},
    {"stats-interval-ms", required_argument, NULL, SINK_OPT_STATS_INTERVAL},
    {"auth", required_argument, NULL, SINK_OPT_AUTH},
    {"auth-plaintext", no_argument, NULL, SINK_OPT_AUTH_PLAINTEXT},
    {"hostname", required_argument, NULL, SINK_OPT_HOSTNAME},
    {"fault", required_argument, NULL, SINK_OPT_FAULT},
    {"seed", required_argument, NULL, SINK_OPT_SEED},
    {"idle-timeout-ms", required_argument, NULL, SINK_OPT_IDLE_TIMEOUT},
    {"verbose", no_argument, NULL, SINK_OPT_VERBOSE},
    {"defer-reply", required_argument, NULL, SINK_OPT_DEFER_REPLY},
    {"reject-reply", required_argument, NULL, SINK_OPT_REJECT_REPLY},
    {"profile", required_argument, NULL, SINK_OPT_PROFILE},
    {"profile-file", required_argument, NULL, SINK_OPT_PROFILE_FILE},
    {"help", no_argument, NULL, SINK_OPT_HELP},
    {NULL, 0, NULL, 0},
};
_Static_assert(sizeof sink_options / sizeof sink_options[0] == SINK_OPT_HELP - SINK_OPT_LISTEN + 2,
               "sink_options must list the options in enum order");

static void sink_usage(FILE *f)
{
    fputs("usage: ringmail sink --listen ADDR:PORT [options]\n"
          "  --listen ADDR:PORT      127.0.0.1:2525, [::1]:2525, *:25 (repeatable; port 0: any)\n"
          "  --tls-cert F --tls-key F  PEM certificate chain and key (enables STARTTLS)\n"
          "  --implicit-tls          TLS from the first byte (port 465 style)\n"
          "  --no-starttls           do not offer STARTTLS\n"
          "  --tls-min V, --tls-max V  1.0, 1.1, 1.2 or 1.3\n"
          "  --no-tickets            issue no session tickets\n"
          "  --latency-ms N          delay every reply by N ms\n"
          "  --latency-jitter-ms N   ... plus a uniform random 0..N ms (a spread of round trips)\n"
          "  --source-rate N         at most N messages/s per client address; over it RCPT\n"
          "                          gets the profile's temporary reply (gmail: 421 4.7.28)\n"
          "  --defer-pct N           N% of RCPTs get the --defer-reply\n"
          "  --defer-reply \"CODE TEXT\"  4xx, default \"451 4.3.0 Temporary failure (sink)\";\n"
          "                          a 421 also closes the connection\n"
          "  --reject-pct N          N% of RCPTs get the --reject-reply\n"
          "  --reject-reply \"CODE TEXT\" 5xx, default \"550 5.1.1 User unknown (sink)\"\n"
          "  --drop-pct N            N% of transactions are cut inside DATA\n"
          "  --max-conns N           421 to connections beyond N\n"
          "  --threads N             worker threads (default: number of cores)\n"
          "  --stats FILE            JSON statistics, written on SIGTERM/SIGINT\n"
          "  --stats-interval-ms N   ... and every N ms\n"
          "  --auth USER:PASS        require AUTH PLAIN/LOGIN (offered inside TLS)\n"
          "  --auth-plaintext        offer AUTH outside TLS too\n"
          "  --hostname NAME         name in the greeting and EHLO reply\n"
          "  --fault MODE            garbage, stall, starttls-inject, greeting-421\n"
          "  --seed N                PRNG seed for the percentages (default 1)\n"
          "  --idle-timeout-ms N     close idle connections (default 60000)\n"
          "  --verbose               one line per connection error on stderr\n"
          "  --profile NAME          behave like a provider (below); options given override\n"
          "  --profile-file F        a profile from a JSON file, keys: name,\n"
          "                          tls_required, starttls (true/false), temp_reply,\n"
          "                          perm_reply, defer_pct, reject_pct, latency_ms,\n"
          "                          latency_jitter_ms, source_rate, max_conns\n"
          "                          (in a reply, {ip} is the client's address)\n"
          "Local parts tempfail@ always get 451 4.7.1, permfail@ always 550 5.1.1;\n"
          "with a profile, its temporary and permanent replies. Profiles:\n",
          f);
    for (size_t i = 0; i < sizeof sink_profiles / sizeof sink_profiles[0]; i++) {
        fprintf(f, "  %-8s %s\n", sink_profiles[i].name, sink_profiles[i].summary);
    }
}

static int sink_parse_uint(const char *text, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static int sink_parse_listen(const char *text, struct sink_listen *l)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port;
    size_t hlen;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':') {
            return -1;
        }
        hlen = (size_t)(close - text - 1);
        text++;
        port = close + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon) {
            return -1;
        }
        hlen = (size_t)(colon - text);
        port = colon + 1;
    }
    unsigned long p;
    if (hlen >= sizeof host || sink_parse_uint(port, 65535, &p) < 0) {
        return -1;
    }
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    memset(l, 0, sizeof *l);
    struct sockaddr_in *s4 = (struct sockaddr_in *)&l->addr;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&l->addr;
    if (hlen == 0 || strcmp(host, "*") == 0) {
        snprintf(host, sizeof host, "0.0.0.0");
    }
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)p);
        l->len = sizeof *s4;
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)p);
        l->len = sizeof *s6;
    } else {
        return -1;
    }
    return 0;
}

static int sink_parse_version(const char *text, uint16_t *out)
{
    static const struct {
        const char *name;
        uint16_t version;
    } versions[] = {{"1.0", TLS_VERSION_1_0},
                    {"1.1", TLS_VERSION_1_1},
                    {"1.2", TLS_VERSION_1_2},
                    {"1.3", TLS_VERSION_1_3}};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        if (strcmp(text, versions[i].name) == 0) {
            *out = versions[i].version;
            return 0;
        }
    }
    return -1;
}

static int sink_parse_fault(const char *text, enum sink_fault *out)
{
    for (size_t i = 1; i < sizeof sink_fault_names / sizeof sink_fault_names[0]; i++) {
        if (strcmp(text, sink_fault_names[i]) == 0) {
            *out = (enum sink_fault)i;
            return 0;
        }
    }
    return -1;
}

/* "CODE TEXT" or "CODE": three digits, the first one class, then one
 * printable line short enough for SMTP (the machine adds CRLF). */
static int sink_parse_reply(const char *text, char class, char *out, size_t outlen)
{
    size_t n = strlen(text);
    if (n < 3 || n > SINK_REPLY_MAX || n >= outlen || text[0] != class || text[1] < '0' ||
        text[1] > '9' || text[2] < '0' || text[2] > '9' || (text[3] != ' ' && text[3] != '\0')) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) {
            return -1;
        }
    }
    memcpy(out, text, n + 1);
    return 0;
}

static int sink_parse_auth(const char *text, struct sink_config *cfg)
{
    const char *colon = strchr(text, ':');
    if (!colon || colon == text || (size_t)(colon - text) >= sizeof cfg->auth_user ||
        strlen(colon + 1) >= sizeof cfg->auth_pass) {
        return -1;
    }
    memcpy(cfg->auth_user, text, (size_t)(colon - text));
    cfg->auth_user[colon - text] = '\0';
    snprintf(cfg->auth_pass, sizeof cfg->auth_pass, "%s", colon + 1);
    cfg->auth = 1;
    return 0;
}

/* Options that take a number. */
static int sink_parse_number(struct sink_config *cfg, int opt, const char *arg)
{
    unsigned long v;
    unsigned long max = opt == SINK_OPT_DEFER || opt == SINK_OPT_REJECT || opt == SINK_OPT_DROP
                            ? 100
                        : opt == SINK_OPT_THREADS ? SINK_MAX_THREADS
                        : opt == SINK_OPT_SEED    ? ULONG_MAX
                                                  : UINT_MAX;
    if (sink_parse_uint(arg, max, &v) < 0) {
        return -1;
    }
    switch (opt) {
    case SINK_OPT_LATENCY:
        cfg->latency_ms = (unsigned)v;
        break;
    case SINK_OPT_LATENCY_JITTER:
        cfg->latency_jitter_ms = (unsigned)v;
        break;
    case SINK_OPT_SOURCE_RATE:
        cfg->source_rate = (unsigned)v;
        break;
    case SINK_OPT_DEFER:
        cfg->defer_pct = (unsigned)v;
        break;
    case SINK_OPT_REJECT:
        cfg->reject_pct = (unsigned)v;
        break;
    case SINK_OPT_DROP:
        cfg->drop_pct = (unsigned)v;
        break;
    case SINK_OPT_MAX_CONNS:
        cfg->max_conns = (unsigned)v;
        break;
    case SINK_OPT_THREADS:
        cfg->threads = (unsigned)v;
        break;
    case SINK_OPT_STATS_INTERVAL:
        cfg->stats_interval_ms = (unsigned)v;
        break;
    case SINK_OPT_SEED:
        cfg->seed = v;
        break;
    case SINK_OPT_IDLE_TIMEOUT:
        cfg->idle_timeout_ms = (unsigned)v;
        break;
    default:
        return -1;
    }
    return 0;
}

static int sink_parse_option(struct sink_config *cfg, int opt, const char *arg)
{
    switch (opt) {
    case SINK_OPT_LISTEN:
        if (cfg->nlisten == SINK_MAX_LISTEN) {
            return -1;
        }
        return sink_parse_listen(arg, &cfg->listen[cfg->nlisten++]);
    case SINK_OPT_CERT:
        cfg->cert_file = arg;
        return 0;
    case SINK_OPT_KEY:
        cfg->key_file = arg;
        return 0;
    case SINK_OPT_IMPLICIT_TLS:
        cfg->implicit_tls = 1;
        return 0;
    case SINK_OPT_NO_STARTTLS:
        cfg->no_starttls = 1;
        return 0;
    case SINK_OPT_TLS_MIN:
        return sink_parse_version(arg, &cfg->tls_min);
    case SINK_OPT_TLS_MAX:
        return sink_parse_version(arg, &cfg->tls_max);
    case SINK_OPT_NO_TICKETS:
        cfg->no_tickets = 1;
        return 0;
    case SINK_OPT_STATS:
        cfg->stats_file = arg;
        return 0;
    case SINK_OPT_AUTH:
        return sink_parse_auth(arg, cfg);
    case SINK_OPT_AUTH_PLAINTEXT:
        cfg->auth_plaintext = 1;
        return 0;
    case SINK_OPT_HOSTNAME:
        return (size_t)snprintf(cfg->hostname, sizeof cfg->hostname, "%s", arg) <
                       sizeof cfg->hostname
                   ? 0
                   : -1;
    case SINK_OPT_FAULT:
        return sink_parse_fault(arg, &cfg->fault);
    case SINK_OPT_VERBOSE:
        cfg->verbose = 1;
        return 0;
    case SINK_OPT_DEFER_REPLY:
        return sink_parse_reply(arg, '4', cfg->defer_reply, sizeof cfg->defer_reply);
    case SINK_OPT_REJECT_REPLY:
        return sink_parse_reply(arg, '5', cfg->reject_reply, sizeof cfg->reject_reply);
    default:
        return sink_parse_number(cfg, opt, arg);
    }
}

/* What a rejected value should have looked like, when that is not obvious. */
static const char *sink_option_hint(int opt)
{
    switch (opt) {
    case SINK_OPT_DEFER_REPLY:
        return " (want \"4xx TEXT\": a 3-digit 4xx code, a space, the text; one line of at most "
               "510 characters)";
    case SINK_OPT_REJECT_REPLY:
        return " (want \"5xx TEXT\": a 3-digit 5xx code, a space, the text; one line of at most "
               "510 characters)";
    default:
        return "";
    }
}

/* ---- profiles ---- */

static void sink_profile_defaults(struct sink_profile *p, const char *name)
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->starttls = 1;
    snprintf(p->temp_reply, sizeof p->temp_reply, "%s", sink_reply_tempfail);
    snprintf(p->perm_reply, sizeof p->perm_reply, "%s", sink_reply_reject);
}

static int sink_profile_builtin(const char *name, struct sink_profile *p)
{
    for (size_t i = 0; i < sizeof sink_profiles / sizeof sink_profiles[0]; i++) {
        const struct sink_profile_builtin *b = &sink_profiles[i];
        if (strcmp(name, b->name) == 0) {
            sink_profile_defaults(p, b->name);
            p->tls_required = b->tls_required;
            p->starttls = b->starttls;
            if (b->temp_reply) {
                snprintf(p->temp_reply, sizeof p->temp_reply, "%s", b->temp_reply);
            }
            if (b->perm_reply) {
                snprintf(p->perm_reply, sizeof p->perm_reply, "%s", b->perm_reply);
            }
            p->source_rate = b->source_rate;
            return 0;
        }
    }
    return -1;
}

static int sink_parse_bool(const char *text, int *out)
{
    static const char *const words[] = {"false", "true", "no", "yes", "off", "on", "0", "1"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (strcasecmp(text, words[i]) == 0) {
            *out = (int)(i % 2);
            return 0;
        }
    }
    return -1;
}

/* One key of a profile file. NULL when it is set, else what was wrong. */
static const char *sink_profile_set(struct sink_profile *p, const char *key, const char *value)
{
    const struct {
        const char *key;
        unsigned long max;
        unsigned *field;
    } numbers[] = {{"defer_pct", 100, &p->defer_pct},
                   {"reject_pct", 100, &p->reject_pct},
                   {"latency_ms", UINT_MAX, &p->latency_ms},
                   {"latency_jitter_ms", UINT_MAX, &p->latency_jitter_ms},
                   {"source_rate", UINT_MAX, &p->source_rate},
                   {"max_conns", UINT_MAX, &p->max_conns}};
    unsigned long v;
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        if (strcmp(key, numbers[i].key) == 0) {
            if (sink_parse_uint(value, numbers[i].max, &v) < 0) {
                return numbers[i].max == 100 ? "want a whole number 0..100"
                                             : "want a non-negative whole number";
            }
            *numbers[i].field = (unsigned)v;
            return NULL;
        }
    }
    if (strcmp(key, "name") == 0) {
        size_t n = strlen(value);
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)value[i] <= 0x20 || value[i] == 0x7f) {
                return "want a name without spaces or control characters";
            }
        }
        if (n == 0 || n >= sizeof p->name) {
            return "want a name of 1 to 63 characters";
        }
        memcpy(p->name, value, n + 1);
        return NULL;
    }
    if (strcmp(key, "tls_required") == 0 || strcmp(key, "starttls") == 0) {
        int *field = key[0] == 't' ? &p->tls_required : &p->starttls;
        return sink_parse_bool(value, field) < 0 ? "want true or false" : NULL;
    }
    if (strcmp(key, "temp_reply") == 0) {
        return sink_parse_reply(value, '4', p->temp_reply, sizeof p->temp_reply) < 0
                   ? "want \"4xx TEXT\", one line of at most 510 characters"
                   : NULL;
    }
    if (strcmp(key, "perm_reply") == 0) {
        return sink_parse_reply(value, '5', p->perm_reply, sizeof p->perm_reply) < 0
                   ? "want \"5xx TEXT\", one line of at most 510 characters"
                   : NULL;
    }
    return "unknown key (name, tls_required, starttls, temp_reply, perm_reply, defer_pct, "
           "reject_pct, latency_ms, latency_jitter_ms, source_rate, max_conns)";
}

/* JSON: one object of strings, booleans and integers. */
static int sink_profile_json(struct sink_profile *p, const char *text, size_t len, char *err,
                             size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root || !json_is_object(root)) {
        if (root) {
            snprintf(err, errlen, "want a JSON object");
        } else {
            snprintf(err, errlen, "line %d: %s", jerr.line, jerr.text);
        }
        json_decref(root);
        return -1;
    }
    const char *key;
    json_t *value;
    const char *why = NULL;
    json_object_foreach(root, key, value)
    {
        char number[32];
        const char *text_value = number;
        if (json_is_string(value)) {
            text_value = json_string_value(value);
        } else if (json_is_boolean(value)) {
            text_value = json_is_true(value) ? "true" : "false";
        } else if (json_is_integer(value)) {
            snprintf(number, sizeof number, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
        } else {
            why = "want a string, a boolean or an integer";
        }
        if (why || (why = sink_profile_set(p, key, text_value)) != NULL) {
            snprintf(err, errlen, "key \"%s\": %s", key, why);
            break;
        }
    }
    json_decref(root);
    return why ? -1 : 0;
}

/* A JSON object (read with jansson) over p's defaults. */
static int sink_profile_load(struct sink_profile *p, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s", strerror(errno));
        return -1;
    }
    char *text = malloc(SINK_PROFILE_FILE_MAX + 1);
    size_t len = text ? fread(text, 1, SINK_PROFILE_FILE_MAX + 1, f) : 0;
    int failed = ferror(f);
    fclose(f);
    int rc = -1;
    if (!text || failed) {
        snprintf(err, errlen, "cannot read it");
    } else if (len > SINK_PROFILE_FILE_MAX) {
        snprintf(err, errlen, "larger than %d bytes", SINK_PROFILE_FILE_MAX);
    } else if (memchr(text, '\0', len)) {
        snprintf(err, errlen, "not a text file");
    } else {
        text[len] = '\0';
        const char *first = text + strspn(text, " \t\r\n");
        if (*first == '{') {
            rc = sink_profile_json(p, text, len, err, errlen);
        } else {
            snprintf(err, errlen, "not a JSON object (a profile file is JSON: {\"name\": ...})");
        }
    }
    free(text);
    return rc;
}

static void sink_profile_apply(struct sink_config *cfg, const struct sink_profile *p)
{
    snprintf(cfg->profile, sizeof cfg->profile, "%s", p->name);
    cfg->tls_required = p->tls_required;
    cfg->no_starttls = !p->starttls;
    memcpy(cfg->temp_reply, p->temp_reply, sizeof cfg->temp_reply);
    memcpy(cfg->perm_reply, p->perm_reply, sizeof cfg->perm_reply);
    memcpy(cfg->defer_reply, p->temp_reply, sizeof cfg->defer_reply);
    memcpy(cfg->reject_reply, p->perm_reply, sizeof cfg->reject_reply);
    cfg->defer_pct = p->defer_pct;
    cfg->reject_pct = p->reject_pct;
    cfg->latency_ms = p->latency_ms;
    cfg->latency_jitter_ms = p->latency_jitter_ms;
    cfg->source_rate = p->source_rate;
    cfg->max_conns = p->max_conns;
}

/* The first pass over the options: --profile, then --profile-file over it,
 * become the defaults the other options override. Returns 0, or 2. */
static int sink_parse_profile(struct sink_config *cfg, int argc, char **argv)
{
    const char *name = NULL, *file = NULL;
    int opt;
    opterr = 0; /* the second pass reports bad options */
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", sink_options, NULL)) != -1) {
        if (opt == SINK_OPT_PROFILE) {
            name = optarg;
        } else if (opt == SINK_OPT_PROFILE_FILE) {
            file = optarg;
        }
    }
    opterr = 1;
    if (!name && !file) {
        return 0;
    }
    struct sink_profile p;
    sink_profile_defaults(&p, "file");
    if (name && sink_profile_builtin(name, &p) < 0) {
        fprintf(stderr, "sink: unknown --profile %s (want", name);
        for (size_t i = 0; i < sizeof sink_profiles / sizeof sink_profiles[0]; i++) {
            fprintf(stderr, " %s", sink_profiles[i].name);
        }
        fputs(")\n", stderr);
        return 2;
    }
    char err[256];
    if (file && sink_profile_load(&p, file, err, sizeof err) < 0) {
        fprintf(stderr, "sink: bad --profile-file %s: %s\n", file, err);
        return 2;
    }
    sink_profile_apply(cfg, &p);
    return 0;
}

/* Returns 0 to run, -1 after --help, 2 on a usage error. */
static int sink_parse_args(struct sink_config *cfg, int argc, char **argv)
{
    cfg->seed = 1;
    cfg->idle_timeout_ms = 60000;
    snprintf(cfg->defer_reply, sizeof cfg->defer_reply, "%s", sink_reply_defer);
    snprintf(cfg->reject_reply, sizeof cfg->reject_reply, "%s", sink_reply_reject);
    snprintf(cfg->temp_reply, sizeof cfg->temp_reply, "%s", sink_reply_tempfail);
    snprintf(cfg->perm_reply, sizeof cfg->perm_reply, "%s", sink_reply_reject);
    int rc = sink_parse_profile(cfg, argc, argv);
    if (rc != 0) {
        return rc;
    }
    optind = 0; /* campaign/main may have run getopt already */
    int opt;
    while ((opt = getopt_long(argc, argv, "", sink_options, NULL)) != -1) {
        if (opt == SINK_OPT_HELP) {
            sink_usage(stdout);
            return -1;
        }
        if (opt == SINK_OPT_PROFILE || opt == SINK_OPT_PROFILE_FILE) {
            continue; /* the first pass took them */
        }
        if (opt == '?' || sink_parse_option(cfg, opt, optarg) < 0) {
            if (opt != '?') {
                fprintf(stderr, "sink: bad value for --%s: %s%s\n", sink_options[opt - 256].name,
                        optarg ? optarg : "", sink_option_hint(opt));
            }
            sink_usage(stderr);
            return 2;
        }
    }
    if (optind < argc || cfg->nlisten == 0) {
        fprintf(stderr, "sink: %s\n",
                optind < argc ? "unexpected argument" : "--listen is required");
        return 2;
    }
    return 0;
}

/* ---- setup and main ---- */

static int sink_check_config(struct sink_config *cfg)
{
    if (cfg->defer_pct + cfg->reject_pct > 100) {
        fprintf(stderr, "sink: --defer-pct plus --reject-pct exceeds 100\n");
        return -1;
    }
    if (!cfg->cert_file != !cfg->key_file) {
        fprintf(stderr, "sink: --tls-cert and --tls-key go together\n");
        return -1;
    }
    if (cfg->implicit_tls && !cfg->cert_file) {
        fprintf(stderr, "sink: --implicit-tls needs --tls-cert and --tls-key\n");
        return -1;
    }
    if (cfg->tls_min && cfg->tls_max && cfg->tls_min > cfg->tls_max) {
        fprintf(stderr, "sink: --tls-min is above --tls-max\n");
        return -1;
    }
    if (!cfg->threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->threads = n < 1 ? 1 : n > SINK_MAX_THREADS ? SINK_MAX_THREADS : (unsigned)n;
    }
    if (!cfg->idle_timeout_ms) {
        cfg->idle_timeout_ms = 60000;
    }
    cfg->defer_closes = strncmp(cfg->defer_reply, "421", 3) == 0;
    cfg->temp_closes = strncmp(cfg->temp_reply, "421", 3) == 0;
    if (cfg->tls_required && (!cfg->cert_file || (cfg->no_starttls && !cfg->implicit_tls))) {
        fprintf(stderr,
                "sink: profile %s requires TLS: it needs --tls-cert and --tls-key, and "
                "STARTTLS offered or --implicit-tls\n",
                cfg->profile);
        return -1;
    }
    if (!cfg->hostname[0] && gethostname(cfg->hostname, sizeof cfg->hostname - 1) != 0) {
        snprintf(cfg->hostname, sizeof cfg->hostname, "ringmail-sink");
    }
    return 0;
}

static int sink_setup(struct sink *sk)
{
    const struct sink_config *cfg = &sk->cfg;
    if (cfg->cert_file) {
        struct tls_server_options opt = {.cert_file = cfg->cert_file,
                                         .key_file = cfg->key_file,
                                         .min_version = cfg->tls_min,
                                         .max_version = cfg->tls_max,
                                         .no_tickets = cfg->no_tickets};
        char err[256];
        sk->tls = tls_server_ctx_new(&opt, err, sizeof err);
        if (!sk->tls) {
            fprintf(stderr, "sink: %s\n", err);
            return -1;
        }
    }
    sk->smtp = (struct smtp_server_config){
        .hostname = cfg->hostname,
        .offer_starttls = sk->tls && !cfg->implicit_tls && !cfg->no_starttls,
        .offer_auth = cfg->auth,
        .auth_plaintext = cfg->auth_plaintext,
        .auth_required = cfg->auth,
        .tls_active = cfg->implicit_tls,
    };
    sk->hooks = (struct smtp_server_hooks){.mail = sink_on_mail,
                                           .rcpt = sink_on_rcpt,
                                           .data = sink_on_data,
                                           .message = sink_on_message,
                                           .auth = sink_on_auth,
                                           .starttls = sink_on_starttls,
                                           .quit = sink_on_quit};
    sk->nworkers = cfg->threads;
    sk->workers = calloc(sk->nworkers, sizeof *sk->workers);
    if (!sk->workers) {
        return -1;
    }
    for (unsigned i = 0; i < sk->nworkers; i++) {
        struct sink_worker *w = &sk->workers[i];
        w->sink = sk;
        w->index = i;
        w->rng = cfg->seed * 0x9e3779b97f4a7c15ull + i;
        for (unsigned j = 0; j < SINK_MAX_LISTEN; j++) {
            w->listeners[j].fd = -1;
        }
        sink_stats_init(&w->stats);
        sink_stats_init(&w->snapshot);
        pthread_mutex_init(&w->snapshot_lock, NULL);
    }
    return 0;
}

static void sink_teardown(struct sink *sk)
{
    for (unsigned i = 0; sk->workers && i < sk->nworkers; i++) {
        json_decref(sk->workers[i].stats.deliveries);
        json_decref(sk->workers[i].snapshot.deliveries);
        pthread_mutex_destroy(&sk->workers[i].snapshot_lock);
    }
    free(sk->workers);
    tls_ctx_free(sk->tls);
    pthread_mutex_destroy(&sk->ready_lock);
    pthread_cond_destroy(&sk->ready_cond);
    sink_peers_free(&sk->peers);
    pthread_mutex_destroy(&sk->peers.lock);
    explicit_bzero(sk->cfg.auth_pass, sizeof sk->cfg.auth_pass);
    free(sk);
}

/* Until SIGTERM or SIGINT; rewrites the statistics every interval. */
static void sink_wait_for_signal(struct sink *sk, const sigset_t *signals)
{
    unsigned interval = sk->cfg.stats_file ? sk->cfg.stats_interval_ms : 0;
    for (;;) {
        if (!interval) {
            int sig;
            if (sigwait(signals, &sig) == 0) {
                return;
            }
            continue;
        }
        struct timespec ts = {.tv_sec = interval / 1000,
                              .tv_nsec = (long)(interval % 1000) * 1000000};
        if (sigtimedwait(signals, NULL, &ts) >= 0) {
            return;
        }
        if (errno == EAGAIN) {
            sink_write_stats(sk, 0);
        }
    }
}

static void sink_print_listening(const struct sink *sk)
{
    for (unsigned i = 0; i < sk->cfg.nlisten; i++) {
        char text[80];
        sink_format_address((const struct sockaddr *)&sk->cfg.listen[i].addr, text, sizeof text);
        printf("sink: listening on %s\n", text);
    }
    fflush(stdout);
}

int sink_main(int argc, char **argv)
{
    struct sink *sk = calloc(1, sizeof *sk);
    if (!sk) {
        return 1;
    }
    pthread_mutex_init(&sk->ready_lock, NULL);
    pthread_cond_init(&sk->ready_cond, NULL);
    pthread_mutex_init(&sk->peers.lock, NULL);
    int rc = sink_parse_args(&sk->cfg, argc, argv);
    if (rc != 0 || sink_check_config(&sk->cfg) < 0 || sink_setup(sk) < 0) {
        sink_teardown(sk);
        return rc < 0 ? 0 : rc > 0 ? rc : 1;
    }
    /* Workers inherit the mask: only the main thread takes the signals. */
    sigset_t signals, old;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, &old);
    signal(SIGPIPE, SIG_IGN);
    rc = sink_workers_start(sk);
    if (rc == 0) {
        sink_print_listening(sk);
        sink_wait_for_signal(sk, &signals);
    }
    sink_workers_stop(sk);
    if (rc == 0 && sk->cfg.stats_file && sink_write_stats(sk, 1) != 0) {
        rc = -1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    sink_teardown(sk);
    return rc == 0 ? 0 : 1;
}
