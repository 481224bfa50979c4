/*
 * inbound_writer - `ringmail inbound`'s writer thread: group commits of
 * received messages into PostgreSQL. See inbound_int.h.
 *
 * The loop queues a job per message (inbound_writer_submit) and never
 * waits. The thread takes everything queued when it becomes free, up to
 * batch_max messages or batch_bytes, and writes them in ONE transaction
 * (feedback_store_messages); while it commits, new messages queue, so the
 * batch grows with the load and the commit cost is shared. A batch that
 * fails is tried again one message at a time, so that a message the
 * database refuses for itself does not take the others down with it (when
 * the database is away each try fails at once). The verdicts go to the
 * done list and the loop is woken through an eventfd it polls on its ring.
 *
 * Timing: the wall time and the thread's CPU time inside
 * feedback_store_messages are summed; their difference is the time spent
 * waiting for PostgreSQL (network, the server's work, the commit).
 *
 * Diagnostics (stderr, always): "ringmail inbound: database unavailable:
 * ERROR; answering 451 until it is back", "ringmail inbound: database
 * back: committing again", "ringmail inbound: complaint guard: WHY" for
 * every hold the store reports (the store's words: campaign, ISP, the
 * rate, and how to lift the hold).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "campaign/inbound_int.h"

static uint64_t inbound_writer_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* inbound_writer_take_batch - up to the limits from the queue (lock held);
 * the batch is a list, its length in *n */
static struct inbound_job *inbound_writer_take_batch(struct inbound_writer *w, size_t *n)
{
    struct inbound_job *first = w->queue, *last = NULL, *j = first;
    size_t count = 0, bytes = 0;
    while (j && count < w->batch_max && (count == 0 || bytes + j->msg.len <= w->batch_bytes)) {
        bytes += j->msg.len;
        count++;
        last = j;
        j = j->next;
    }
    if (last) {
        w->queue = last->next;
        if (!w->queue) {
            w->queue_tail = NULL;
        }
        last->next = NULL;
    }
    *n = count;
    return first;
}

/* inbound_writer_store - one transaction for msgs[0..n): 0 or -1 */
static int inbound_writer_store(struct inbound_writer *w, const struct feedback_msg *msgs, size_t n,
                                struct feedback_store_outcome *out, char *err, size_t errlen)
{
    uint64_t t0 = inbound_writer_ns(CLOCK_MONOTONIC);
    uint64_t c0 = inbound_writer_ns(CLOCK_THREAD_CPUTIME_ID);
    memset(out, 0, sizeof *out);
    int rc = feedback_store_messages(w->store, msgs, n, out, err, errlen);
    w->store_ns += inbound_writer_ns(CLOCK_MONOTONIC) - t0;
    w->store_cpu_ns += inbound_writer_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
    if (rc == 0) {
        w->batches++;
        w->committed += n;
        w->events += out->events;
        w->suppressed += out->suppressed;
        w->held += out->held;
        if (out->held == 1) {
            fprintf(stderr, "ringmail inbound: complaint guard: %s\n", out->held_why);
        } else if (out->held > 1) {
            fprintf(stderr,
                    "ringmail inbound: complaint guard: %zu holds in one commit, the last: %s\n",
                    out->held, out->held_why);
        }
        if (w->db_down) {
            w->db_down = 0;
            fprintf(stderr, "ringmail inbound: database back: committing again\n");
        }
    } else {
        w->failed += n;
        if (!w->db_down) {
            w->db_down = 1;
            fprintf(stderr,
                    "ringmail inbound: database unavailable: %s; answering 451 until it is back\n",
                    err);
        }
    }
    return rc;
}

/* inbound_writer_verdict - set the job's result (and the batch's outcome) */
static void inbound_writer_verdict(struct inbound_writer *w, struct inbound_job *j, int rc,
                                   size_t batch, const struct feedback_store_outcome *out,
                                   const char *err)
{
    j->result = rc == 0 ? INBOUND_JOB_COMMITTED : INBOUND_JOB_FAILED;
    j->batch = batch;
    if (w->verbose && rc == 0) {
        j->outcome = *out;
    }
    if (rc != 0) {
        snprintf(j->err, sizeof j->err, "%s", err);
    }
}

/* inbound_writer_commit - the batch, then one by one if it failed */
static void inbound_writer_commit(struct inbound_writer *w, struct inbound_job *batch, size_t n,
                                  struct feedback_msg *msgs)
{
    struct feedback_store_outcome out;
    char err[256] = "";
    size_t i = 0;
    for (struct inbound_job *j = batch; j; j = j->next) {
        msgs[i++] = j->msg;
    }
    int rc = inbound_writer_store(w, msgs, n, &out, err, sizeof err);
    if (rc == 0 || n == 1) {
        for (struct inbound_job *j = batch; j; j = j->next) {
            inbound_writer_verdict(w, j, rc, n, &out, err);
        }
        return;
    }
    i = 0;
    for (struct inbound_job *j = batch; j; j = j->next, i++) {
        w->failed -= 1; /* counted again, or committed, by the single try */
        rc = inbound_writer_store(w, &msgs[i], 1, &out, err, sizeof err);
        inbound_writer_verdict(w, j, rc, 1, &out, err);
    }
}

/* inbound_writer_hand_back - batch to the done list, wake the loop (lock not held) */
static void inbound_writer_hand_back(struct inbound_writer *w, struct inbound_job *batch)
{
    struct inbound_job *last = batch;
    while (last->next) {
        last = last->next;
    }
    pthread_mutex_lock(&w->lock);
    if (w->done_tail) {
        w->done_tail->next = batch;
    } else {
        w->done = batch;
    }
    w->done_tail = last;
    pthread_mutex_unlock(&w->lock);
    uint64_t one = 1;
    ssize_t r = write(w->efd, &one, sizeof one);
    (void)r; /* the counter cannot overflow in practice; a full one is still readable */
}

static void *inbound_writer_main(void *arg)
{
    struct inbound_writer *w = arg;
    struct feedback_msg *msgs = calloc(w->batch_max, sizeof *msgs);
    if (!msgs) {
        abort();
    }
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->queue && !w->stopping) {
            pthread_cond_wait(&w->cond, &w->lock);
        }
        if (w->stopping) {
            break;
        }
        size_t n;
        struct inbound_job *batch = inbound_writer_take_batch(w, &n);
        pthread_mutex_unlock(&w->lock);
        inbound_writer_commit(w, batch, n, msgs);
        inbound_writer_hand_back(w, batch);
        pthread_mutex_lock(&w->lock);
    }
    /* Stopping: what was never tried goes back untried (the client retries). */
    struct inbound_job *rest = w->queue;
    w->queue = w->queue_tail = NULL;
    pthread_mutex_unlock(&w->lock);
    for (struct inbound_job *j = rest; j; j = j->next) {
        j->result = INBOUND_JOB_SHUTDOWN;
    }
    if (rest) {
        inbound_writer_hand_back(w, rest);
    }
    free(msgs);
    return NULL;
}

int inbound_writer_start(struct inbound_writer *w, struct feedback_store *store, size_t batch_max,
                         size_t batch_bytes, int verbose)
{
    w->store = store;
    w->batch_max = batch_max ? batch_max : 1;
    w->batch_bytes = batch_bytes;
    w->verbose = verbose;
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) {
        return -1;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    if (pthread_create(&w->thread, NULL, inbound_writer_main, w) != 0) {
        return -1;
    }
    w->started = 1;
    return 0;
}

void inbound_writer_submit(struct inbound_writer *w, struct inbound_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->queue_tail) {
        w->queue_tail->next = job;
    } else {
        w->queue = job;
    }
    w->queue_tail = job;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

struct inbound_job *inbound_writer_take(struct inbound_writer *w)
{
    uint64_t v;
    ssize_t r = read(w->efd, &v, sizeof v);
    (void)r; /* EAGAIN: nothing was signalled, the list says what is there */
    pthread_mutex_lock(&w->lock);
    struct inbound_job *done = w->done;
    w->done = w->done_tail = NULL;
    pthread_mutex_unlock(&w->lock);
    return done;
}

void inbound_writer_request_stop(struct inbound_writer *w)
{
    if (!w->started) {
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

int inbound_writer_join(struct inbound_writer *w, unsigned timeout_ms)
{
    if (w->started) {
        inbound_writer_request_stop(w);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (pthread_timedjoin_np(w->thread, NULL, &ts) != 0) {
            return -1; /* still inside a call to PostgreSQL: everything stays */
        }
        w->started = 0;
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->cond);
    }
    if (w->efd >= 0) {
        close(w->efd);
        w->efd = -1;
    }
    if (w->store) {
        feedback_store_close(w->store);
        w->store = NULL;
    }
    return 0;
}
