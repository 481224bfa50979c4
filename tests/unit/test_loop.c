/*
 * test_loop - the ring: timers fire in deadline order, cancel works,
 * send/recv complete through typed ops, loop_stop from another thread.
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_order_and_cancel),
        cmocka_unit_test(test_send_recv_through_ops),
        cmocka_unit_test(test_stop_from_another_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
