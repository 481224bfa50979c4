/*
 * test_loop - the ring: timers fire in deadline order, cancel works, a
 * timer moved later or earlier fires at its last deadline (lazy re-keying),
 * send/recv complete through typed ops, a multishot receive into the
 * shared buffers delivers every chunk (more chunks than buffers, and more
 * sockets than buffers at once: -ENOBUFS, re-armed), loop_stop from
 * another thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/loop.h"

struct order {
    struct loop *loop;
    int fired[8];
    int n;
};

struct tagged_timer {
    struct loop_timer t;
    struct order *o;
    int tag;
};

static void on_timer(struct loop_timer *t)
{
    struct tagged_timer *tt = t->owner;
    tt->o->fired[tt->o->n++] = tt->tag;
    if (tt->o->n == 3) {
        loop_stop(tt->o->loop);
    }
}

static void test_timers_fire_in_order_and_cancel(void **state)
{
    (void)state;
    struct order o = {.loop = loop_new(64)};
    assert_non_null(o.loop);
    struct tagged_timer t[4];
    unsigned delays[4] = {30, 10, 50, 20};
    uint64_t start = loop_clock_ms(o.loop); /* timers count from the loop's clock */
    for (int i = 0; i < 4; i++) {
        t[i].o = &o;
        t[i].tag = i;
        loop_timer_init(&t[i].t, on_timer, &t[i]);
        loop_timer_set(o.loop, &t[i].t, delays[i]);
    }
    loop_timer_cancel(o.loop, &t[3].t);
    assert_false(loop_timer_active(&t[3].t));
    assert_int_equal(loop_run(o.loop), 0);
    assert_int_equal(o.n, 3);
    assert_int_equal(o.fired[0], 1);
    assert_int_equal(o.fired[1], 0);
    assert_int_equal(o.fired[2], 2);
    assert_true(loop_clock_ms(o.loop) - start >= 50);
    loop_free(o.loop);
}

struct io {
    struct loop *loop;
    struct loop_op send_op, recv_op;
    char buf[64];
    int sent, received;
};

static void on_send(struct loop_op *op, int res, unsigned flags)
{
    (void)flags;
    ((struct io *)op->owner)->sent = res;
}

static void on_recv(struct loop_op *op, int res, unsigned flags)
{
    (void)flags;
    struct io *io = op->owner;
    io->received = res;
    loop_stop(io->loop);
}

static void test_send_recv_through_ops(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct io io = {.loop = loop_new(64)};
    io.send_op = (struct loop_op){on_send, &io};
    io.recv_op = (struct loop_op){on_recv, &io};
    loop_recv(io.loop, &io.recv_op, sv[1], io.buf, sizeof io.buf);
    loop_send(io.loop, &io.send_op, sv[0], "hello", 5);
    assert_int_equal(loop_pending(io.loop), 2);
    loop_run(io.loop);
    assert_int_equal(io.sent, 5);
    assert_int_equal(io.received, 5);
    assert_memory_equal(io.buf, "hello", 5);
    assert_int_equal(loop_pending(io.loop), 0);
    loop_free(io.loop);
    close(sv[0]);
    close(sv[1]);
}

static void *stopper(void *arg)
{
    usleep(20000);
    loop_stop(arg);
    return NULL;
}

static void test_stop_from_another_thread(void **state)
{
    (void)state;
    struct loop *loop = loop_new(64);
    pthread_t t;
    pthread_create(&t, NULL, stopper, loop);
    assert_int_equal(loop_run(loop), 0); /* returns instead of waiting forever */
    pthread_join(t, NULL);
    loop_free(loop);
}

/* ---- lazy re-keying: a timer moved later is re-keyed when its old key comes due ---- */

struct moving {
    struct loop *loop;
    struct loop_timer t, mover, stopper;
    uint64_t start, fired_at;
    int fired;
    unsigned move_to; /* ms from the mover's run */
};

static void moving_fired(struct loop_timer *t)
{
    struct moving *m = t->owner;
    m->fired++;
    m->fired_at = loop_clock_ms(m->loop);
}

static void moving_move(struct loop_timer *t)
{
    struct moving *m = t->owner;
    loop_timer_set(m->loop, &m->t, m->move_to);
}

static void moving_stop(struct loop_timer *t)
{
    struct moving *m = t->owner;
    loop_stop(m->loop);
}

static void test_timer_moved_later_or_earlier(void **state)
{
    (void)state;
    /* Later: armed for 20 ms, moved at 5 ms to 45 ms from then: fires once, at >= 50. */
    struct moving m = {.loop = loop_new(64), .move_to = 45};
    loop_timer_init(&m.t, moving_fired, &m);
    loop_timer_init(&m.mover, moving_move, &m);
    loop_timer_init(&m.stopper, moving_stop, &m);
    m.start = loop_clock_ms(m.loop);
    loop_timer_set(m.loop, &m.t, 20);
    loop_timer_set(m.loop, &m.mover, 5);
    loop_timer_set(m.loop, &m.stopper, 80);
    assert_int_equal(loop_run(m.loop), 0);
    assert_int_equal(m.fired, 1);
    assert_true(m.fired_at - m.start >= 50);
    assert_false(loop_timer_active(&m.t));
    loop_free(m.loop);

    /* Earlier: armed for 200 ms, moved at 5 ms to 10 ms from then: fires at ~15. */
    struct moving e = {.loop = loop_new(64), .move_to = 10};
    loop_timer_init(&e.t, moving_fired, &e);
    loop_timer_init(&e.mover, moving_move, &e);
    loop_timer_init(&e.stopper, moving_stop, &e);
    e.start = loop_clock_ms(e.loop);
    loop_timer_set(e.loop, &e.t, 200);
    loop_timer_set(e.loop, &e.mover, 5);
    loop_timer_set(e.loop, &e.stopper, 60);
    assert_int_equal(loop_run(e.loop), 0);
    assert_int_equal(e.fired, 1);
    assert_true(e.fired_at - e.start >= 15 && e.fired_at - e.start < 60);
    loop_free(e.loop);
}

static void test_timer_cancel_after_moving_later(void **state)
{
    (void)state;
    struct moving m = {.loop = loop_new(64)};
    loop_timer_init(&m.t, moving_fired, &m);
    loop_timer_init(&m.stopper, moving_stop, &m);
    loop_timer_set(m.loop, &m.t, 10);
    loop_timer_set(m.loop, &m.t, 30); /* later: only the deadline moves */
    assert_true(loop_timer_active(&m.t));
    assert_int_equal(m.t.deadline_ms, loop_now_ms(m.loop) + 30);
    loop_timer_cancel(m.loop, &m.t);
    assert_false(loop_timer_active(&m.t));
    loop_timer_set(m.loop, &m.stopper, 50);
    assert_int_equal(loop_run(m.loop), 0);
    assert_int_equal(m.fired, 0);
    loop_free(m.loop);
}

/* Many timers moved at random, later and earlier, many times: each fires
 * once, never before its last deadline, and in deadline order. */
struct herd_timer {
    struct loop_timer t;
    struct herd *h;
    uint64_t last_deadline;
    int fired;
};

struct herd {
    struct loop *loop;
    struct herd_timer *ts;
    size_t n, fired;
    uint64_t prev_deadline;
    uint32_t seed;
    int out_of_order, early;
};

static void herd_fired(struct loop_timer *t)
{
    struct herd_timer *ht = t->owner;
    struct herd *h = ht->h;
    ht->fired++;
    if (loop_now_ms(h->loop) < ht->last_deadline) {
        h->early = 1;
    }
    if (ht->last_deadline < h->prev_deadline) {
        h->out_of_order = 1;
    }
    h->prev_deadline = ht->last_deadline;
    if (++h->fired == h->n) {
        loop_stop(h->loop);
    }
}

static void test_timer_herd_moved_at_random(void **state)
{
    (void)state;
    struct herd h = {.loop = loop_new(64), .n = 300, .seed = 99};
    h.ts = calloc(h.n, sizeof *h.ts);
    assert_non_null(h.ts);
    for (int round = 0; round < 5; round++) {
        for (size_t i = 0; i < h.n; i++) {
            struct herd_timer *ht = &h.ts[i];
            if (round == 0) {
                ht->h = &h;
                loop_timer_init(&ht->t, herd_fired, ht);
            }
            h.seed = h.seed * 1103515245u + 12345u;
            unsigned ms = 5 + (h.seed >> 16) % 60;
            loop_timer_set(h.loop, &ht->t, ms);
            ht->last_deadline = ht->t.deadline_ms;
        }
    }
    assert_int_equal(loop_run(h.loop), 0);
    assert_int_equal(h.fired, h.n);
    for (size_t i = 0; i < h.n; i++) {
        assert_int_equal(h.ts[i].fired, 1);
    }
    assert_false(h.early);
    assert_false(h.out_of_order);
    free(h.ts);
    loop_free(h.loop);
}

/* ---- multishot receive into the loop's shared buffers ---- */

#define MS_CHUNKS 700 /* well over the ring's buffers: they must come back */

struct ms {
    struct loop *loop;
    struct loop_op op;
    int fd, peer;
    unsigned chunks, completions_without_more, arms;
    int eof, bad;
};

static void ms_write_chunk(struct ms *m)
{
    char line[32];
    int n = snprintf(line, sizeof line, "chunk %u\n", m->chunks);
    assert_int_equal(write(m->peer, line, (size_t)n), n);
}

static void ms_on_recv(struct loop_op *op, int res, unsigned flags)
{
    struct ms *m = op->owner;
    if (!loop_cqe_more(flags)) {
        m->completions_without_more++;
    }
    if (res == 0) {
        m->eof = 1;
        loop_stop(m->loop);
        return;
    }
    if (res < 0) {
        m->bad = 1;
        loop_stop(m->loop);
        return;
    }
    char want[32];
    int n = snprintf(want, sizeof want, "chunk %u\n", m->chunks);
    const char *got = loop_recv_data(m->loop, flags);
    if (!got || res != n || memcmp(got, want, (size_t)n) != 0) {
        m->bad = 1;
    }
    m->chunks++;
    if (!loop_cqe_more(flags)) {
        m->arms++;
        assert_int_equal(loop_recv_multishot(m->loop, &m->op, m->fd), 0);
    }
    if (m->chunks < MS_CHUNKS) {
        ms_write_chunk(m);
    } else {
        shutdown(m->peer, SHUT_WR); /* EOF: the last completion, without "more" */
    }
}

static void test_recv_multishot_chunks_and_eof(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct ms m = {.loop = loop_new(64), .fd = sv[1], .peer = sv[0]};
    m.op = (struct loop_op){ms_on_recv, &m};
    if (loop_recv_multishot(m.loop, &m.op, m.fd) < 0) {
        assert_int_equal(errno, EOPNOTSUPP); /* an old kernel: callers use loop_recv */
        loop_free(m.loop);
        close(sv[0]);
        close(sv[1]);
        skip();
    }
    assert_int_equal(loop_pending(m.loop), 1);
    ms_write_chunk(&m);
    assert_int_equal(loop_run(m.loop), 0);
    assert_false(m.bad);
    assert_true(m.eof);
    assert_int_equal(m.chunks, MS_CHUNKS);
    /* One submission served the chunks (a re-arm only where the kernel ended it). */
    assert_int_equal(m.completions_without_more, m.arms + 1);
    assert_true(m.arms < MS_CHUNKS / 10);
    assert_int_equal(loop_pending(m.loop), 0);
    loop_free(m.loop);
    close(sv[0]);
    close(sv[1]);
}

/* More sockets with data waiting than the ring has buffers: some receives
 * end with -ENOBUFS, are armed again, and every byte still arrives. */
#define MS_SOCKETS 400

struct ms_many {
    struct loop *loop;
    struct loop_op op[MS_SOCKETS];
    int fd[MS_SOCKETS], peer[MS_SOCKETS];
    int got[MS_SOCKETS];
    unsigned enobufs, done;
    int bad;
};

static void ms_many_on_recv(struct loop_op *op, int res, unsigned flags)
{
    struct ms_many *mm = op->owner;
    size_t i = (size_t)(op - mm->op);
    if (res == -ENOBUFS) {
        mm->enobufs++;
        assert_int_equal(loop_recv_multishot(mm->loop, op, mm->fd[i]), 0);
        return;
    }
    if (res <= 0) {
        if (!loop_cqe_more(flags) && ++mm->done == MS_SOCKETS) {
            loop_stop(mm->loop);
        }
        if (res < 0) {
            mm->bad = 1;
        }
        return;
    }
    const char *d = loop_recv_data(mm->loop, flags);
    for (int k = 0; k < res; k++) {
        if (d[k] != (char)('A' + i % 26)) {
            mm->bad = 1;
        }
    }
    mm->got[i] += res;
    if (!loop_cqe_more(flags)) {
        assert_int_equal(loop_recv_multishot(mm->loop, op, mm->fd[i]), 0);
    }
    if (mm->got[i] == 1000) {
        shutdown(mm->peer[i], SHUT_WR);
    }
}

static void test_recv_multishot_more_sockets_than_buffers(void **state)
{
    (void)state;
    struct ms_many *mm = calloc(1, sizeof *mm);
    assert_non_null(mm);
    mm->loop = loop_new(1024);
    char payload[1000];
    for (size_t i = 0; i < MS_SOCKETS; i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        mm->peer[i] = sv[0];
        mm->fd[i] = sv[1];
        mm->op[i] = (struct loop_op){ms_many_on_recv, mm};
        memset(payload, 'A' + (int)(i % 26), sizeof payload);
        assert_int_equal(write(sv[0], payload, sizeof payload), (ssize_t)sizeof payload);
    }
    for (size_t i = 0; i < MS_SOCKETS; i++) {
        if (loop_recv_multishot(mm->loop, &mm->op[i], mm->fd[i]) < 0) {
            skip();
        }
    }
    assert_int_equal(loop_run(mm->loop), 0);
    assert_false(mm->bad);
    for (size_t i = 0; i < MS_SOCKETS; i++) {
        assert_int_equal(mm->got[i], 1000);
        close(mm->fd[i]);
        close(mm->peer[i]);
    }
    assert_int_equal(mm->done, MS_SOCKETS);
    print_message("# %u of %d receives ended -ENOBUFS and were armed again\n", mm->enobufs,
                  MS_SOCKETS);
    loop_free(mm->loop);
    free(mm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_order_and_cancel),
        cmocka_unit_test(test_send_recv_through_ops),
        cmocka_unit_test(test_stop_from_another_thread),
        cmocka_unit_test(test_timer_moved_later_or_earlier),
        cmocka_unit_test(test_timer_cancel_after_moving_later),
        cmocka_unit_test(test_timer_herd_moved_at_random),
        cmocka_unit_test(test_recv_multishot_chunks_and_eof),
        cmocka_unit_test(test_recv_multishot_more_sockets_than_buffers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
