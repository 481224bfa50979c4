/*
 * sink_int - what the files of `ringmail sink` share; private to them.
 *
 * One object, struct sink, allocated by sink_main: the options, the TLS
 * context, the workers and the per-client-address table. No file keeps
 * state of its own. The files:
 *
 *   sink.c          sink_main: set up, start the workers, wait for a
 *                   signal, stop them, write the statistics
 *   sink_options.c  the command line and --help
 *   sink_profile.c  the providers' profiles and --profile-file
 *   sink_conn.c     the protocol side: a connection's lifetime, output,
 *                   input, the SMTP hooks (what the sink answers) and
 *                   accepting
 *   sink_stats.c    the counters, the per-client-address table and the
 *                   JSON statistics file
 *
 * Nothing here is for callers outside bench/sink*.c: sink.h is the
 * command's public face.
 */
#ifndef RINGMAIL_SINK_INT_H
#define RINGMAIL_SINK_INT_H

#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "engine/buf.h"
#include "engine/list.h"
#include "engine/loop.h"
#include "engine/smtp_server.h"
#include "engine/tls.h"

#define SINK_MAX_LISTEN 16
#define SINK_MAX_THREADS 256
#define SINK_HELD_MAX 16
#define SINK_REPLY_MAX 510 /* an SMTP reply line without CRLF (RFC 5321 4.5.3.1.5) */
#define SINK_PEER_BUCKETS 1024

/* In a profile's replies "{ip}" stands for the client's address. */
#define SINK_REPLY_IP "{ip}"
#define SINK_PROFILE_NAME_MAX 64

/* The replies without a profile (sink_options.c); a profile starts from them. */
extern const char sink_reply_tempfail[];
extern const char sink_reply_reject[];
extern const char sink_reply_rate[]; /* over --source-rate without a profile: Gmail's 421 4.7.28 */

enum sink_fault {
    SINK_FAULT_NONE = 0,
    SINK_FAULT_GARBAGE,         /* HTTP errors to every line after the greeting */
    SINK_FAULT_STALL,           /* no answer from MAIL on */
    SINK_FAULT_STARTTLS_INJECT, /* a reply injected after STARTTLS's 220, same write */
    SINK_FAULT_GREETING_421,    /* 421 instead of the greeting */
};

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
    char rate_reply[SINK_REPLY_MAX + 1];   /* over --source-rate; 4xx ("": see sink.c) */
    int rate_closes;                       /* rate_reply is a 421: close after it */
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
    struct list_node link; /* in the worker's conns */
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
    struct list_head conns;  /* live connections (sink_conn.link), owned */
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

/* sink_options.c */

/* sink_parse_args - the command line into cfg; 0 to run, -1 after --help, 2 on a usage error */
int sink_parse_args(struct sink_config *cfg, int argc, char **argv);
/* sink_parse_reply - "CODE TEXT" of class class ('4', '5') into out; 0 or -1 */
int sink_parse_reply(const char *text, char class, char *out, size_t outlen);

/* sink_profile.c */

/* sink_profile_select - --profile name, then --profile-file file over it (either may be
 * NULL), become cfg's defaults; 0, or 2 after a message on stderr */
int sink_profile_select(struct sink_config *cfg, const char *name, const char *file);
/* sink_profile_usage - the built-in profiles, one line each, for --help */
void sink_profile_usage(FILE *f);

/* sink_conn.c */

/* The SMTP hooks of every connection (user is the connection). */
extern const struct smtp_server_hooks sink_conn_hooks;

/* sink_conn_release - free c and everything it owns, unlinked from its worker; its timers
 * cancelled already (or the loop gone), no operation in flight */
void sink_conn_release(struct sink_conn *c);
/* sink_listener_start - arm l's multishot accept on its worker's loop */
void sink_listener_start(struct sink_listener *l);

/* sink_stats.c */

/* sink_stats_init - zero counters and an empty deliveries map (aborts without memory) */
void sink_stats_init(struct sink_stats *st);
/* sink_stats_count - n more deliveries to address */
void sink_stats_count(json_t *map, const char *address, json_int_t n);
/* sink_worker_on_snapshot - the periodic copy of a worker's statistics (its timer) */
void sink_worker_on_snapshot(struct loop_timer *t);
/* sink_write_stats - the merged statistics into --stats: the workers' own when final
 * (after join), else their snapshots; 0 or -1 */
int sink_write_stats(struct sink *sk, int final);

/* sink_peers_open - a connection from address opened (refused: only counted as such);
 * NULL when memory runs out */
struct sink_peer *sink_peers_open(struct sink_peers *t, const char *address, int refused);
/* sink_peers_take - one message from p against rate (per second) at now; 1 if within it */
int sink_peers_take(struct sink_peers *t, struct sink_peer *p, unsigned rate, uint64_t now);
/* sink_peers_close - one open session of p fewer */
void sink_peers_close(struct sink_peers *t, struct sink_peer *p);
/* sink_peers_free - free every entry of t; its lock is left to the caller */
void sink_peers_free(struct sink_peers *t);

#endif
