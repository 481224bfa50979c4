/*
 * loop - one io_uring ring per thread, with typed completions and timers.
 * See loop.h.
 *
 * Design notes. Completions are dispatched through the struct loop_op the
 * submitter embedded in its own object, so user_data is never a guess.
 * Timers are a binary min-heap of deadlines, and each iteration waits for
 * completions no longer than the nearest deadline: precise latency
 * emulation in the sink and per-command timeouts in the client cost one
 * heap operation each and no kernel work. loop_stop() may come from
 * another thread: it sets a flag and writes an eventfd the ring reads.
 */
#include "loop.h"

#include <errno.h>
#include <limits.h>
#include <liburing.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "engine/clock.h"
#include "engine/heap.h"
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#else
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#define RUNNING_ON_VALGRIND 0
#endif

/* The shared receive buffers of loop_recv_multishot: a ring of
 * LOOP_RECV_BUFS buffers of LOOP_RECV_BUF_SIZE bytes each (a power of two),
 * provided to the kernel as buffer group LOOP_RECV_BGID. A buffer is
 * taken by the kernel for one chunk and given back as soon as the
 * completion's callback has returned, so the ring only runs dry when more
 * completions than buffers wait in one batch (-ENOBUFS: re-armed). */
#define LOOP_RECV_BUFS 256
#define LOOP_RECV_BGID 0

struct loop {
    struct io_uring ring;
    uint64_t now_ms;
    uint64_t pending; /* submitted, completion not yet dispatched (excludes wake op) */
    atomic_int stopping;
    int stop_when_idle; /* stop once no operation and no timer is left */
    int wake_fd;        /* eventfd written by loop_stop */
    uint64_t wake_value;
    struct loop_op wake_op;
    struct heap timers; /* by key_ms (lazy: see the timers); the timers are their owners' */
    int poll_wait;      /* under valgrind: block in poll(2) on the ring, not in io_uring_enter */
    /* loop_recv_multishot's buffers, set up on first use; recv_state -1
     * when the kernel refused them (loop_recv_multishot then says so). */
    int recv_state;                      /* 0 not yet, 1 ready, -1 unavailable */
    struct io_uring_buf_ring *recv_ring; /* owned, page aligned */
    char *recv_bufs;                     /* owned: LOOP_RECV_BUFS x LOOP_RECV_BUF_SIZE */
};

static struct io_uring_sqe *loop_sqe(struct loop *loop)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&loop->ring);
    while (!sqe) {
        /* Submission queue full: hand what we have to the kernel. */
        io_uring_submit(&loop->ring);
        sqe = io_uring_get_sqe(&loop->ring);
    }
    return sqe;
}

static void loop_wake_arm(struct loop *loop);

static void loop_on_wake(struct loop_op *op, int res, unsigned flags)
{
    (void)res;
    (void)flags;
    struct loop *loop = op->owner;
    if (!atomic_load(&loop->stopping)) {
        loop_wake_arm(loop);
    }
}

static void loop_wake_arm(struct loop *loop)
{
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_read(sqe, loop->wake_fd, &loop->wake_value, sizeof loop->wake_value, 0);
    io_uring_sqe_set_data(sqe, &loop->wake_op);
}

struct loop *loop_new(unsigned entries)
{
    struct loop *loop = calloc(1, sizeof *loop);
    if (!loop) {
        return NULL;
    }
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    /* Under valgrind the loop sleeps in poll(2) (loop_poll_wait): no deferred
     * task running there, completions must be posted without io_uring_enter. */
    loop->poll_wait = RUNNING_ON_VALGRIND ? 1 : 0;
    p.flags = IORING_SETUP_CQSIZE |
              (loop->poll_wait ? 0 : IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
    p.cq_entries = entries * 4;
    int rc = io_uring_queue_init_params(entries, &loop->ring, &p);
    if (rc < 0) {
        /* Older kernels: no single-issuer/deferred task running. */
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = entries * 4;
        rc = io_uring_queue_init_params(entries, &loop->ring, &p);
    }
    if (rc < 0) {
        free(loop);
        errno = -rc;
        return NULL;
    }
    loop->wake_fd = eventfd(0, EFD_CLOEXEC);
    if (loop->wake_fd < 0) {
        int e = errno;
        io_uring_queue_exit(&loop->ring);
        free(loop);
        errno = e;
        return NULL;
    }
    loop->wake_op.cb = loop_on_wake;
    loop->wake_op.owner = loop;
    heap_init(&loop->timers, offsetof(struct loop_timer, key_ms),
              offsetof(struct loop_timer, heap_index));
    loop->now_ms = clock_ms();
    loop_wake_arm(loop);
    return loop;
}

void loop_free(struct loop *loop)
{
    if (!loop) {
        return;
    }
    io_uring_queue_exit(&loop->ring); /* the kernel lets go of the buffer ring too */
    close(loop->wake_fd);
    heap_free(&loop->timers);
    free(loop->recv_ring);
    free(loop->recv_bufs);
    free(loop);
}

void loop_stop(struct loop *loop)
{
    atomic_store(&loop->stopping, 1);
    uint64_t one = 1;
    ssize_t n = write(loop->wake_fd, &one, sizeof one);
    (void)n;
}

void loop_stop_when_idle(struct loop *loop)
{
    loop->stop_when_idle = 1;
}

uint64_t loop_now_ms(struct loop *loop)
{
    return loop->now_ms;
}

uint64_t loop_clock_ms(struct loop *loop)
{
    loop->now_ms = clock_ms();
    return loop->now_ms;
}

void loop_mark_received(const void *buf, size_t n)
{
    (void)VALGRIND_MAKE_MEM_DEFINED(buf, n);
}

int loop_cqe_more(unsigned cqe_flags)
{
    return (cqe_flags & IORING_CQE_F_MORE) != 0;
}

uint64_t loop_pending(const struct loop *loop)
{
    return loop->pending;
}

uint64_t loop_nofile_raise(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        return 1024;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            getrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
}

/* ---- submissions ---- */

static void loop_submitted(struct loop *loop, struct io_uring_sqe *sqe, struct loop_op *op)
{
    io_uring_sqe_set_data(sqe, op);
    loop->pending++;
}

void loop_connect(struct loop *loop, struct loop_op *op, int fd, const struct sockaddr *addr,
                  socklen_t addrlen)
{
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_connect(sqe, fd, addr, addrlen);
    loop_submitted(loop, sqe, op);
}

void loop_accept(struct loop *loop, struct loop_op *op, int listen_fd)
{
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_multishot_accept(sqe, listen_fd, NULL, NULL, SOCK_CLOEXEC);
    loop_submitted(loop, sqe, op);
}

void loop_recv(struct loop *loop, struct loop_op *op, int fd, void *buf, size_t len)
{
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_recv(sqe, fd, buf, len, 0);
    loop_submitted(loop, sqe, op);
}

/* loop_recv_setup - register the shared receive buffers with the kernel,
 * once; 0, or -1 when it refuses them (kernel older than 5.19) */
static int loop_recv_setup(struct loop *loop)
{
    if (loop->recv_state) {
        return loop->recv_state > 0 ? 0 : -1;
    }
    loop->recv_state = -1;
    size_t ring_size = LOOP_RECV_BUFS * sizeof(struct io_uring_buf);
    void *ring = NULL;
    if (posix_memalign(&ring, 4096, ring_size < 4096 ? 4096 : ring_size) != 0) {
        return -1;
    }
    char *bufs = malloc((size_t)LOOP_RECV_BUFS * LOOP_RECV_BUF_SIZE);
    if (!bufs) {
        free(ring);
        return -1;
    }
    memset(ring, 0, ring_size);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)ring;
    reg.ring_entries = LOOP_RECV_BUFS;
    reg.bgid = LOOP_RECV_BGID;
    if (io_uring_register_buf_ring(&loop->ring, &reg, 0) < 0) {
        free(ring);
        free(bufs);
        return -1;
    }
    loop->recv_ring = ring;
    loop->recv_bufs = bufs;
    io_uring_buf_ring_init(loop->recv_ring);
    int mask = io_uring_buf_ring_mask(LOOP_RECV_BUFS);
    for (unsigned i = 0; i < LOOP_RECV_BUFS; i++) {
        io_uring_buf_ring_add(loop->recv_ring, bufs + (size_t)i * LOOP_RECV_BUF_SIZE,
                              LOOP_RECV_BUF_SIZE, (unsigned short)i, mask, (int)i);
    }
    io_uring_buf_ring_advance(loop->recv_ring, LOOP_RECV_BUFS);
    loop->recv_state = 1;
    return 0;
}

int loop_recv_multishot(struct loop *loop, struct loop_op *op, int fd)
{
    if (loop_recv_setup(loop) < 0) {
        errno = EOPNOTSUPP;
        return -1;
    }
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = LOOP_RECV_BGID;
    loop_submitted(loop, sqe, op);
    return 0;
}

const char *loop_recv_data(const struct loop *loop, unsigned cqe_flags)
{
    if (!(cqe_flags & IORING_CQE_F_BUFFER) || !loop->recv_bufs) {
        return NULL;
    }
    unsigned bid = cqe_flags >> IORING_CQE_BUFFER_SHIFT;
    return loop->recv_bufs + (size_t)bid * LOOP_RECV_BUF_SIZE;
}

/* loop_recv_return - the buffer of a completion goes back to the kernel at
 * once: without deferred task running (valgrind, older kernels) receives
 * complete while a batch is being dispatched, and must find it. */
static void loop_recv_return(struct loop *loop, unsigned cqe_flags)
{
    unsigned bid = cqe_flags >> IORING_CQE_BUFFER_SHIFT;
    io_uring_buf_ring_add(loop->recv_ring, loop->recv_bufs + (size_t)bid * LOOP_RECV_BUF_SIZE,
                          LOOP_RECV_BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(LOOP_RECV_BUFS), 0);
    io_uring_buf_ring_advance(loop->recv_ring, 1);
}

void loop_send(struct loop *loop, struct loop_op *op, int fd, const void *buf, size_t len)
{
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
    loop_submitted(loop, sqe, op);
}

void loop_poll_add(struct loop *loop, struct loop_op *op, int fd, unsigned events)
{
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_poll_add(sqe, fd, events);
    loop_submitted(loop, sqe, op);
}

void loop_close(struct loop *loop, int fd)
{
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_data(sqe, NULL); /* skipped on dispatch, like a cancel */
}

void loop_cancel(struct loop *loop, struct loop_op *target)
{
    struct io_uring_sqe *sqe = loop_sqe(loop);
    io_uring_prep_cancel(sqe, target, 0);
    /* The cancel's own completion carries no op: it is skipped on dispatch. */
    io_uring_sqe_set_data(sqe, NULL);
}

/* ---- timers: the engine's binary min-heap ----
 *
 * Lazy re-arming: a connection moves its one timer on at every reply, and
 * almost always later (a new wait's deadline), so a later deadline only
 * updates deadline_ms and leaves the timer where it sits in the heap,
 * under its old key. When that key comes due, loop_run_timers sees the
 * deadline moved and puts the timer back under it: one heap operation per
 * timeout period instead of one per reply (each a sift to the bottom of a
 * heap of thousands, over cold cache lines). An earlier deadline re-keys
 * at once, so no timer ever fires late; a stale key costs at most one
 * early wake-up. */

void loop_timer_init(struct loop_timer *t, loop_timer_cb cb, void *owner)
{
    t->cb = cb;
    t->owner = owner;
    t->deadline_ms = 0;
    t->key_ms = 0;
    t->heap_index = -1;
}

void loop_timer_cancel(struct loop *loop, struct loop_timer *t)
{
    heap_remove(&loop->timers, t);
}

void loop_timer_set(struct loop *loop, struct loop_timer *t, uint64_t ms_from_now)
{
    t->deadline_ms = loop->now_ms + ms_from_now;
    if (heap_contains(&loop->timers, t)) {
        if (t->deadline_ms >= t->key_ms) {
            return; /* later: re-keyed when the old key comes due */
        }
        t->key_ms = t->deadline_ms;
        heap_fix(&loop->timers, t);
    } else {
        t->key_ms = t->deadline_ms;
        heap_push(&loop->timers, t);
    }
}

/* loop_next_timer - the armed timer whose key is due first, or NULL */
static struct loop_timer *loop_next_timer(const struct loop *loop)
{
    return heap_top(&loop->timers);
}

static void loop_run_timers(struct loop *loop)
{
    struct loop_timer *t;
    while ((t = loop_next_timer(loop)) != NULL && t->key_ms <= loop->now_ms) {
        if (t->key_ms != t->deadline_ms) {
            /* Moved on since it was keyed. Keys never exceed deadlines, so
             * one fires only as the smallest deadline: in deadline order. */
            t->key_ms = t->deadline_ms;
            heap_fix(&loop->timers, t);
            continue;
        }
        heap_remove(&loop->timers, t);
        t->cb(t);
    }
}

/* ---- the loop ---- */

static unsigned loop_dispatch(struct loop *loop)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&loop->ring, head, cqe)
    {
        struct loop_op *op = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        unsigned flags = cqe->flags;
        seen++;
        if (!op) {
            continue; /* completion of a cancel request */
        }
        if (op != &loop->wake_op && !(flags & IORING_CQE_F_MORE)) {
            loop->pending--;
        }
        if (flags & IORING_CQE_F_BUFFER) {
            /* A chunk in a shared receive buffer: the callback consumes it,
             * then the buffer goes back. */
            if (res > 0) {
                loop_mark_received(loop_recv_data(loop, flags), (size_t)res);
            }
            op->cb(op, res, flags);
            loop_recv_return(loop, flags);
            continue;
        }
        op->cb(op, res, flags);
    }
    io_uring_cq_advance(&loop->ring, seen);
    return seen;
}

/* valgrind runs one thread at a time and does not know that io_uring_enter
 * may sleep: a thread asleep in it keeps the others (the database thread)
 * from running. poll(2) on the ring's fd sleeps the same way and valgrind
 * lets the other threads run meanwhile. */
static int loop_poll_wait(struct loop *loop)
{
    int rc = io_uring_submit(&loop->ring);
    if (rc < 0 && rc != -EBUSY && rc != -EAGAIN) {
        return rc;
    }
    if (io_uring_cq_ready(&loop->ring) > 0) {
        return 0;
    }
    int timeout = -1;
    struct loop_timer *next = loop_next_timer(loop);
    if (next) {
        uint64_t wait = next->key_ms - loop->now_ms;
        timeout = wait > INT_MAX ? INT_MAX : (int)wait;
    }
    struct pollfd pfd = {.fd = loop->ring.ring_fd, .events = POLLIN};
    if (poll(&pfd, 1, timeout) < 0 && errno != EINTR) {
        return -errno;
    }
    return 0;
}

int loop_run(struct loop *loop)
{
    while (!atomic_load(&loop->stopping)) {
        struct io_uring_cqe *cqe = NULL;
        struct loop_timer *next;
        int rc;
        loop_clock_ms(loop);
        loop_run_timers(loop);
        if (atomic_load(&loop->stopping) ||
            (loop->stop_when_idle && loop->pending == 0 && heap_len(&loop->timers) == 0)) {
            break;
        }
        if (loop->poll_wait) {
            rc = loop_poll_wait(loop);
        } else if ((next = loop_next_timer(loop)) != NULL) {
            uint64_t wait = next->key_ms - loop->now_ms;
            struct __kernel_timespec ts = {.tv_sec = (long long)(wait / 1000),
                                           .tv_nsec = (long long)(wait % 1000) * 1000000};
            rc = io_uring_submit_and_wait_timeout(&loop->ring, &cqe, 1, &ts, NULL);
        } else {
            rc = io_uring_submit_and_wait(&loop->ring, 1);
        }
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            return rc;
        }
        loop_clock_ms(loop);
        loop_dispatch(loop);
    }
    /* Hand any submissions made during the last dispatch to the kernel. */
    io_uring_submit(&loop->ring);
    return 0;
}
