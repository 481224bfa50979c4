/*
 * loop - one io_uring ring per thread, with typed completions and timers
 *
 * Every submission carries a pointer to a struct loop_op that the caller
 * embeds in its own object (a connection, a listener). When the operation
 * completes, op->cb(op, res, cqe_flags) runs on the loop's thread; res is
 * the kernel's result (bytes, fd, or -errno). The caller must keep the op
 * (and any buffer it named) alive until that callback has run: an object
 * with operations in flight counts them and frees itself only at zero.
 *
 * Timers live in a binary heap ordered by deadline; the loop waits for
 * completions with a timeout equal to the nearest deadline
 * (io_uring_submit_and_wait_timeout, one wait per iteration), so there is
 * no per-operation linked timeout and no periodic wake-up when idle.
 * Moving an armed timer later (a connection's timeout, at every reply)
 * costs no heap operation: the timer is re-keyed once its old deadline
 * comes (see loop.c); it never fires before its last deadline.
 *
 * Each iteration hands every submission made since the last one to the
 * kernel and dispatches every completion ready, in one io_uring_enter.
 *
 * No call here blocks except loop_run's wait for completions. Socket
 * creation, setsockopt and close() of a socket are non-blocking syscalls
 * made directly.
 *
 * Diagnostics: loop_new returns NULL with errno when the ring cannot be set up.
 */
#ifndef RINGMAIL_LOOP_H
#define RINGMAIL_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct loop;
struct loop_op;

typedef void (*loop_cb)(struct loop_op *op, int res, unsigned cqe_flags);

struct loop_op {
    loop_cb cb;
    void *owner; /* the object this op is embedded in; the callback's context */
};

struct loop_timer;
typedef void (*loop_timer_cb)(struct loop_timer *t);

struct loop_timer {
    loop_timer_cb cb;
    void *owner;
    uint64_t deadline_ms; /* absolute, loop_now_ms() clock: when it fires */
    uint64_t key_ms;      /* the timer heap's key, <= deadline_ms: a later re-arm leaves
                             the timer where it is until this comes due (loop.c) */
    int heap_index;       /* -1 when not armed: the timer heap's index (engine/heap.h) */
};

/* entries: submission queue size (rounded up to a power of two by the kernel). */
struct loop *loop_new(unsigned entries);
void loop_free(struct loop *loop);

/* Run until loop_stop() is called. Returns 0, or -errno if the ring failed. */
int loop_run(struct loop *loop);
void loop_stop(struct loop *loop);
/* Return from loop_run once no operation is in flight and no timer armed:
 * objects closing down get their last completions and free themselves. */
void loop_stop_when_idle(struct loop *loop);

/* Monotonic milliseconds, refreshed once per loop iteration (cheap to call). */
uint64_t loop_now_ms(struct loop *loop);
/* Refresh and return the clock now (for measuring durations precisely). */
uint64_t loop_clock_ms(struct loop *loop);

/* Submissions. Each completes exactly once through op->cb, except multishot
 * accept, which completes once per connection while cqe_flags has
 * IORING_CQE_F_MORE, and must be re-armed when a completion lacks it. */
void loop_connect(struct loop *loop, struct loop_op *op, int fd, const struct sockaddr *addr,
                  socklen_t addrlen);
void loop_accept(struct loop *loop, struct loop_op *op, int listen_fd);
void loop_recv(struct loop *loop, struct loop_op *op, int fd, void *buf, size_t len);
void loop_send(struct loop *loop, struct loop_op *op, int fd, const void *buf, size_t len);
/* Multishot receive into the loop's shared receive buffers (a ring of
 * LOOP_RECV_BUF_SIZE-byte buffers the kernel picks from, set up on first
 * use): one submission, then op->cb once per chunk received, res its byte
 * count, as long as cqe_flags has IORING_CQE_F_MORE (loop_cqe_more). A
 * completion without it is the last: 0 (EOF), -errno, or -ENOBUFS when
 * every buffer was in use at once (the bytes wait in the socket: arm
 * again). The chunk is at loop_recv_data(loop, cqe_flags) and only until
 * the callback returns: its buffer then goes back to the kernel. Saves a
 * submission and a poll arming per receive, and a connection's own
 * receive buffer. Returns -1 (errno EOPNOTSUPP) when this kernel cannot
 * provide buffers: use loop_recv. */
#define LOOP_RECV_BUF_SIZE 4096
int loop_recv_multishot(struct loop *loop, struct loop_op *op, int fd);
const char *loop_recv_data(const struct loop *loop, unsigned cqe_flags);
/* One-shot poll for events (POLLIN/POLLOUT); res is the returned mask. */
void loop_poll_add(struct loop *loop, struct loop_op *op, int fd, unsigned events);
/* Close fd through the ring; nobody waits for the completion. */
void loop_close(struct loop *loop, int fd);
/* Ask the kernel to cancel the operation submitted with target; target's
 * callback still runs (typically with -ECANCELED). */
void loop_cancel(struct loop *loop, struct loop_op *target);

/* Timers: set (re-arms if already armed) and cancel; safe from callbacks. */
void loop_timer_init(struct loop_timer *t, loop_timer_cb cb, void *owner);
void loop_timer_set(struct loop *loop, struct loop_timer *t, uint64_t ms_from_now);
void loop_timer_cancel(struct loop *loop, struct loop_timer *t);
static inline int loop_timer_active(const struct loop_timer *t)
{
    return t->heap_index >= 0;
}

/* A receive completed: n bytes at buf were written by the kernel behind
 * valgrind's back (io_uring); tell memcheck they are defined. Free
 * outside valgrind. */
void loop_mark_received(const void *buf, size_t n);

/* 1 when a multishot operation's completion (cqe_flags) says more will
 * follow (IORING_CQE_F_MORE); 0 when it must be re-armed. For callers that
 * do not include liburing. */
int loop_cqe_more(unsigned cqe_flags);

/* Number of submitted operations whose completion has not run yet. */
uint64_t loop_pending(const struct loop *loop);

/* Raise the open-file soft limit to the hard one (every connection is a
 * descriptor) and return the soft limit now in force. Once, at start. */
uint64_t loop_nofile_raise(void);

#endif
