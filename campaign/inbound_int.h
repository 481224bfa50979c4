/*
 * inbound_int - what the files of `ringmail inbound` share; private to them.
 *
 * One object, struct inbound, allocated by inbound_main: the options, the
 * config, the TLS context, the listeners, the connections, the table of
 * client addresses and the writer. The files:
 *
 *   inbound.c         inbound_main: the command line, set-up, the signal,
 *                     shutting down, the summary
 *   inbound_conn.c    the SMTP side on the ring: accepting, a connection's
 *                     lifetime, its input and output, STARTTLS, the hooks
 *                     (what is accepted), the limits and the timeouts
 *   inbound_writer.c  the writer thread: messages in, group commits through
 *                     campaign/feedback_store.h, verdicts back to the loop
 *
 * Threads. The loop thread owns every connection. The writer thread owns
 * the feedback_store (its PostgreSQL connection) and touches a job only
 * between inbound_writer_submit and the loop's taking it back: the job's
 * message points into its connection's smtp_server, which keeps it
 * unchanged while the message is deferred, and the connection is not
 * freed while its job is out.
 */
#ifndef RINGMAIL_INBOUND_INT_H
#define RINGMAIL_INBOUND_INT_H

#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "campaign/feedback_store.h"
#include "engine/buf.h"
#include "engine/list.h"
#include "engine/loop.h"
#include "engine/smtp_server.h"
#include "engine/tls.h"

#define INBOUND_MAX_LISTEN 16
#define INBOUND_PEER_BUCKETS 256

struct inbound_listen {
    struct sockaddr_storage addr;
    socklen_t len;
};

/* Everything the command line says; read-only once the loop runs. */
struct inbound_options {
    struct inbound_listen listen[INBOUND_MAX_LISTEN];
    unsigned nlisten;
    const char *db_url;      /* borrowed from argv */
    const char *config_path; /* borrowed from argv */
    const char *cert_file, *key_file;
    const char *http; /* --http ADDR:PORT, or NULL */
    char hostname[256];
    unsigned long max_size;       /* --max-size, bytes */
    unsigned long max_per_client; /* --max-per-client */
    unsigned long max_conns;      /* --max-conns */
    unsigned long timeout_ms;     /* --timeout: idle between commands */
    unsigned long session_ms;     /* --session-timeout: a whole session */
    unsigned long batch_max;      /* --batch: messages per commit */
    unsigned long batch_bytes;    /* bytes per commit */
    int verbose;
};

/* Where a job stands; set by the writer, read by the loop once it is back. */
enum inbound_job_result {
    INBOUND_JOB_COMMITTED, /* answer 250 */
    INBOUND_JOB_FAILED,    /* the database failed: 451 */
    INBOUND_JOB_SHUTDOWN,  /* never tried: shutting down, 421 */
};

struct inbound_conn;

/* One deferred message; embedded in its connection (one at a time). */
struct inbound_job {
    struct inbound_job *next;  /* in the writer's queue or done list */
    struct inbound_conn *conn; /* borrowed: the owner */
    struct feedback_msg msg;   /* points into conn->smtp and conn->client */
    enum inbound_job_result result;
    size_t batch;                          /* messages committed together with it */
    struct feedback_store_outcome outcome; /* its batch's (with --verbose) */
    char err[256];                         /* the database's message when FAILED */
};

/* The writer thread and its two lists, guarded by lock. */
struct inbound_writer {
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct inbound_job *queue, *queue_tail; /* waiting for a commit */
    struct inbound_job *done, *done_tail;   /* verdicts for the loop */
    int stopping;
    int efd;                      /* eventfd: done has jobs */
    struct feedback_store *store; /* owned; the writer thread's */
    size_t batch_max, batch_bytes;
    int verbose;
    int db_down; /* the last commit failed (log transitions only) */
    /* Written by the writer thread only; read after it is joined. */
    uint64_t batches, committed, failed, events, suppressed, held;
    uint64_t store_ns, store_cpu_ns; /* in feedback_store_messages: wall, thread CPU */
};

/* A client address and its open sessions. */
struct inbound_peer {
    struct inbound_peer *next; /* in the bucket */
    char address[INET6_ADDRSTRLEN];
    unsigned long open;
};

struct inbound_listener {
    struct loop_op op;
    struct loop_timer retry; /* re-arm after an accept error */
    struct inbound *ib;
    int fd;
    int armed;
};

enum inbound_conn_state {
    INBOUND_CONN_HANDSHAKE, /* TLS handshake after STARTTLS */
    INBOUND_CONN_SMTP,      /* commands and data, plaintext or inside TLS */
    INBOUND_CONN_CLOSING,   /* sending what is queued, reading nothing more */
    INBOUND_CONN_DEAD,      /* shut down; freed once nothing is in flight */
};

/* Owned by the inbound's conns list; owns its buffers, TLS and SMTP state. */
struct inbound_conn {
    struct inbound *ib;
    struct list_node link;
    uint64_t id;
    int fd;
    enum inbound_conn_state state;
    int recv_busy, send_busy, job_busy;
    int counted; /* in nconns (not refused at the greeting) */
    int eof;     /* the client half-closed while its message was deferred */
    struct loop_op recv_op, send_op;
    struct loop_timer timer; /* idle and session limits */
    uint64_t started_ms, active_ms;
    buf_t raw;                /* received: ciphertext under TLS, else plaintext */
    buf_t plain;              /* decrypted, for the SMTP machine */
    buf_t reply;              /* SMTP output under TLS, before encryption */
    buf_t wire;               /* bytes to send */
    buf_t sending;            /* what the in-flight SEND reads */
    struct tls_conn *tls;     /* owned, after STARTTLS */
    struct smtp_server *smtp; /* owned */
    char client[INET6_ADDRSTRLEN];
    struct inbound_peer *peer; /* borrowed from the table; NULL: not counted */
    struct inbound_job job;
};

struct inbound {
    struct inbound_options o;
    struct config *cfg;  /* owned */
    struct tls_ctx *tls; /* owned; NULL without --tls-cert */
    struct loop *loop;   /* owned */
    struct smtp_server_config smtp;
    struct inbound_listener listeners[INBOUND_MAX_LISTEN];
    struct list_head conns; /* owned */
    unsigned long nconns;
    struct inbound_peer *peers[INBOUND_PEER_BUCKETS]; /* owned chains */
    struct inbound_writer writer;
    struct loop_op writer_op; /* POLLIN on writer.efd */
    int writer_armed;
    struct loop_op sig_op; /* POLLIN on sigfd */
    int sigfd;
    int sig_armed;
    int stopping;
    struct loop_timer stop_timer; /* the shutdown's deadline */
    uint64_t next_conn_id;
    uint64_t outstanding; /* jobs submitted, not yet back */
    char rcpt_reply[320];
    /* counters (loop thread) */
    uint64_t connections, refused, messages, answered_250, answered_451, answered_421;
    uint64_t relay_denied, too_big, timeouts;
};

/* inbound_conn.c */

/* inbound_listener_start - arm l's multishot accept */
void inbound_listener_start(struct inbound_listener *l);
/* inbound_conn_release - free c and what it owns (timers cancelled or the loop gone) */
void inbound_conn_release(struct inbound_conn *c);
/* inbound_conn_answer - the writer's verdict on c's deferred message */
void inbound_conn_answer(struct inbound_conn *c);
/* inbound_conn_shutdown - shutting down: a connection with no message out
 * gets 421 and closes; one with a message out closes after its answer */
void inbound_conn_shutdown(struct inbound_conn *c);

/* inbound_writer.c */

/* inbound_writer_start - the thread, with store (owned from now on); 0 or -1 */
int inbound_writer_start(struct inbound_writer *w, struct feedback_store *store, size_t batch_max,
                         size_t batch_bytes, int verbose);
/* inbound_writer_submit - queue job for a commit (loop thread) */
void inbound_writer_submit(struct inbound_writer *w, struct inbound_job *job);
/* inbound_writer_take - every verdict ready, as a list (loop thread) */
struct inbound_job *inbound_writer_take(struct inbound_writer *w);
/* inbound_writer_request_stop - finish the batch in progress, hand the
 * rest back as INBOUND_JOB_SHUTDOWN, then end (does not wait) */
void inbound_writer_request_stop(struct inbound_writer *w);
/* inbound_writer_join - stop the thread, wait up to timeout_ms, free the
 * store; -1 when the thread is still inside PostgreSQL (nothing freed) */
int inbound_writer_join(struct inbound_writer *w, unsigned timeout_ms);

#endif
