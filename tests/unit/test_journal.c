/*
 * test_journal - the loader's crash journal without a database: lines
 * written by the loader and read back in order at recovery (per recipient
 * the last line wins; a body with no outcome after it is ambiguous; an
 * outcome the database already has is stale), and compaction, which must
 * keep exactly the live lines and the node's lock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "campaign/loader_int.h"

#define NODE "n1"

/* A journal in a directory of its own. */
struct fixture {
    char dir[64];
    char path[128];
    struct loader_journal j;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/ringmail-journal.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/journal", f->dir);
    char err[512];
    loader_journal_init(&f->j, f->path);
    assert_int_equal(loader_journal_open(&f->j, err, sizeof err), 0);
    assert_int_equal(loader_journal_lock(&f->j, NODE, err, sizeof err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    loader_journal_free(&f->j);
    char tmp[160];
    unlink(f->path);
    snprintf(tmp, sizeof tmp, "%s.compact", f->path);
    unlink(tmp);
    snprintf(tmp, sizeof tmp, "%s/copy", f->dir);
    unlink(tmp);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* An outcome as the loop hands it to loader_result. */
static struct loader_result outcome(int64_t id, unsigned attempt, const char *state)
{
    struct loader_result r;
    memset(&r, 0, sizeof r);
    r.recipient_id = id;
    r.attempt = attempt;
    r.final = strcmp(state, "deferred") != 0;
    r.retry_in_s = r.final ? 0 : 60;
    r.code = strcmp(state, "sent") == 0 ? 250 : 451;
    snprintf(r.outcome, sizeof r.outcome, "%s",
             strcmp(state, "sent") == 0 ? "accepted" : "deferred");
    snprintf(r.state, sizeof r.state, "%s", state);
    return r;
}

static void result_line(struct fixture *f, int64_t id, unsigned attempt, const char *state)
{
    struct loader_result r = outcome(id, attempt, state);
    loader_journal_result(&f->j, &r);
}

/* The held set of a recovery: ids (ascending) with the database's attempts. */
static void held_init(struct loader_held *h, size_t n, const int64_t *ids, const unsigned *attempts)
{
    memset(h, 0, n * sizeof *h);
    for (size_t i = 0; i < n; i++) {
        h[i].id = ids[i];
        h[i].attempts = attempts ? attempts[i] : 0;
    }
}

static struct loader_held *held_find(struct loader_held *h, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++) {
        if (h[i].id == id) {
            return &h[i];
        }
    }
    fail_msg("recipient %lld is not held", (long long)id);
    return NULL;
}

static enum loader_settle verdict(struct loader_held *h, size_t n, int64_t id)
{
    return loader_settle(held_find(h, n, id), 1);
}

/* ---- reading in order ---- */

static void test_result_after_body_wins(void **state)
{
    struct fixture *f = *state;
    loader_journal_body(&f->j, 7);
    result_line(f, 7, 1, "sent");
    int64_t ids[] = {7};
    struct loader_held h[1];
    held_init(h, 1, ids, NULL);
    loader_journal_read(f->path, h, 1, NODE);
    assert_int_equal(h[0].last, 'R');
    assert_int_equal(loader_settle(&h[0], 1), LOADER_SETTLE_RESULT);
    assert_int_equal(h[0].result.recipient_id, 7);
    assert_int_equal(h[0].result.attempt, 1);
    assert_int_equal(h[0].result.final, 1);
    assert_int_equal(h[0].result.code, 250);
    assert_string_equal(h[0].result.outcome, "accepted");
    assert_string_equal(h[0].result.state, "sent");
    assert_string_equal(h[0].result.reason, "-"); /* an empty word is written as "-" */
    assert_int_equal(h[0].result.connect_ms, -1);
    assert_non_null(strstr(h[0].result.text, "crash journal of node " NODE));
}

static void test_body_without_result_is_ambiguous(void **state)
{
    struct fixture *f = *state;
    loader_journal_body(&f->j, 3);
    loader_journal_body(&f->j, 4);
    int64_t ids[] = {3, 4};
    struct loader_held h[2];
    held_init(h, 2, ids, NULL);
    h[1].ambiguous = 1; /* a takeover made it ambiguous already */
    loader_journal_read(f->path, h, 2, NODE);
    assert_int_equal(h[0].last, 'D');
    assert_int_equal(loader_settle(&h[0], 1), LOADER_SETTLE_AMBIGUOUS);
    assert_int_equal(loader_settle(&h[1], 1), LOADER_SETTLE_LEAVE);
}

static void test_result_before_a_later_body_does_not_win(void **state)
{
    struct fixture *f = *state;
    /* A deferral, then the retry's DATA, then a kill: the deferral is old news. */
    loader_journal_body(&f->j, 9);
    result_line(f, 9, 1, "deferred");
    loader_journal_body(&f->j, 9);
    /* The same, and the retry's outcome came: that one wins. */
    loader_journal_body(&f->j, 10);
    result_line(f, 10, 1, "deferred");
    loader_journal_body(&f->j, 10);
    result_line(f, 10, 2, "sent");
    int64_t ids[] = {9, 10};
    struct loader_held h[2];
    held_init(h, 2, ids, NULL);
    loader_journal_read(f->path, h, 2, NODE);
    assert_int_equal(verdict(h, 2, 9), LOADER_SETTLE_AMBIGUOUS);
    assert_int_equal(verdict(h, 2, 10), LOADER_SETTLE_RESULT);
    assert_int_equal(held_find(h, 2, 10)->result.attempt, 2);
    assert_string_equal(held_find(h, 2, 10)->result.state, "sent");
}

static void test_recipients_are_read_independently(void **state)
{
    struct fixture *f = *state;
    /* Interleaved, as many transactions run at once. */
    loader_journal_body(&f->j, 1);
    loader_journal_body(&f->j, 2);
    loader_journal_body(&f->j, 3);
    result_line(f, 2, 1, "sent");
    result_line(f, 1, 1, "deferred");
    loader_journal_body(&f->j, 1);
    int64_t ids[] = {1, 2, 3, 4};
    struct loader_held h[4];
    held_init(h, 4, ids, NULL);
    loader_journal_read(f->path, h, 4, NODE);
    assert_int_equal(verdict(h, 4, 1), LOADER_SETTLE_AMBIGUOUS);
    assert_int_equal(verdict(h, 4, 2), LOADER_SETTLE_RESULT);
    assert_int_equal(verdict(h, 4, 3), LOADER_SETTLE_AMBIGUOUS);
    assert_int_equal(verdict(h, 4, 4), LOADER_SETTLE_REQUEUE); /* nothing went out */
}

static void test_stale_lines_are_skipped(void **state)
{
    struct fixture *f = *state;
    /* An outcome the database already has (its attempts reached it): the
     * recipient was claimed again and nothing went out since. */
    loader_journal_body(&f->j, 5);
    result_line(f, 5, 1, "deferred");
    /* Lines of recipients this node no longer holds. */
    loader_journal_body(&f->j, 6);
    result_line(f, 8, 1, "sent");
    /* Lines that do not parse (a torn or foreign line). */
    FILE *x = fopen(f->path, "a");
    assert_non_null(x);
    fputs("R 12 1 x\nD\nX 12\nR 13\n", x);
    fclose(x);
    int64_t ids[] = {5, 12, 13};
    unsigned attempts[] = {1, 0, 0};
    struct loader_held h[3];
    held_init(h, 3, ids, attempts);
    loader_journal_read(f->path, h, 3, NODE);
    assert_int_equal(held_find(h, 3, 5)->last, 'R');
    assert_int_equal(verdict(h, 3, 5), LOADER_SETTLE_REQUEUE);
    assert_int_equal(held_find(h, 3, 12)->last, 0);
    assert_int_equal(held_find(h, 3, 13)->last, 0);
    assert_int_equal(verdict(h, 3, 12), LOADER_SETTLE_REQUEUE);
    /* The same outcome against a database that has not seen it is written. */
    held_find(h, 3, 5)->attempts = 0;
    assert_int_equal(verdict(h, 3, 5), LOADER_SETTLE_RESULT);
}

static void test_untrusted_journal_counts_arms(void **state)
{
    (void)state;
    /* A journal from another host is not read: what the node armed counts
     * as sent, the rest is queued again. */
    struct loader_held h[2];
    int64_t ids[] = {1, 2};
    held_init(h, 2, ids, NULL);
    h[0].armed = 1;
    assert_int_equal(loader_settle(&h[0], 0), LOADER_SETTLE_AMBIGUOUS);
    assert_int_equal(loader_settle(&h[1], 0), LOADER_SETTLE_REQUEUE);
    assert_int_equal(loader_settle(&h[0], 1), LOADER_SETTLE_REQUEUE); /* ours: no line, no body */
}

/* ---- compaction ---- */

/* The file's lines, sorted, joined. */
static char *file_lines_sorted(const char *path)
{
    FILE *x = fopen(path, "r");
    assert_non_null(x);
    char *lines[64];
    size_t n = 0;
    char line[256];
    while (fgets(line, sizeof line, x)) {
        assert_true(n < 64);
        lines[n++] = strdup(line);
    }
    fclose(x);
    for (size_t i = 1; i < n; i++) {
        for (size_t k = i; k > 0 && strcmp(lines[k - 1], lines[k]) > 0; k--) {
            char *t = lines[k];
            lines[k] = lines[k - 1];
            lines[k - 1] = t;
        }
    }
    char *out = calloc(1, 64 * 256);
    assert_non_null(out);
    for (size_t i = 0; i < n; i++) {
        strcat(out, lines[i]);
        free(lines[i]);
    }
    return out;
}

static void commit(struct fixture *f, int64_t id, unsigned attempt)
{
    buf_t b;
    buf_init(&b);
    struct loader_result r = outcome(id, attempt, "sent");
    loader_pack(&b, &r);
    loader_journal_committed(&f->j, &b);
    buf_free(&b);
}

static void copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "r"), *b = fopen(to, "w");
    assert_non_null(a);
    assert_non_null(b);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) {
        assert_int_equal(fwrite(buf, 1, n, b), n);
    }
    fclose(a);
    fclose(b);
}

static void test_compaction_keeps_exactly_the_live_lines(void **state)
{
    struct fixture *f = *state;
    /* 1: sent, committed: dead. */
    loader_journal_body(&f->j, 1);
    result_line(f, 1, 1, "sent");
    commit(f, 1, 1);
    /* 2: sent, not committed yet: its R is live. */
    loader_journal_body(&f->j, 2);
    result_line(f, 2, 1, "sent");
    /* 3: a body in flight: live. */
    loader_journal_body(&f->j, 3);
    /* 4: deferred, retry in flight, then the deferral commits: the D stays. */
    result_line(f, 4, 1, "deferred");
    loader_journal_body(&f->j, 4);
    commit(f, 4, 1);
    /* 5: a retry's outcome not committed, the first one committed: R 5 2 stays. */
    result_line(f, 5, 1, "deferred");
    result_line(f, 5, 2, "sent");
    commit(f, 5, 1);
    /* 6: committed, then a new body after the commit: live again. */
    result_line(f, 6, 1, "deferred");
    commit(f, 6, 1);
    loader_journal_body(&f->j, 6);
    char copy[160];
    snprintf(copy, sizeof copy, "%s/copy", f->dir);
    copy_file(f->path, copy);

    pthread_mutex_lock(&f->j.mu);
    assert_int_equal(loader_journal_compact(&f->j), 0);
    pthread_mutex_unlock(&f->j.mu);

    char *got = file_lines_sorted(f->path);
    assert_string_equal(got, "D 3\n"
                             "D 4\n"
                             "D 6\n"
                             "R 2 1 1 0.000 250 accepted sent -\n"
                             "R 5 2 1 0.000 250 accepted sent -\n");
    free(got);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal((size_t)st.st_size, f->j.bytes);
    assert_int_equal(f->j.bytes, f->j.live);
    assert_int_equal(f->j.compactions, 1);

    /* A recovery reads the compacted file as it read the whole one (the
     * database has the committed attempts). */
    int64_t ids[] = {1, 2, 3, 4, 5, 6};
    unsigned attempts[] = {1, 0, 0, 1, 1, 1};
    struct loader_held a[6], b[6];
    held_init(a, 6, ids, attempts);
    held_init(b, 6, ids, attempts);
    loader_journal_read(copy, a, 6, NODE);
    loader_journal_read(f->path, b, 6, NODE);
    enum loader_settle want[] = {LOADER_SETTLE_REQUEUE,   LOADER_SETTLE_RESULT,
                                 LOADER_SETTLE_AMBIGUOUS, LOADER_SETTLE_AMBIGUOUS,
                                 LOADER_SETTLE_RESULT,    LOADER_SETTLE_AMBIGUOUS};
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(loader_settle(&a[i], 1), want[i]);
        assert_int_equal(loader_settle(&b[i], 1), want[i]);
    }
}

static void test_compaction_moves_the_lock_and_the_appends(void **state)
{
    struct fixture *f = *state;
    loader_journal_body(&f->j, 1);
    result_line(f, 1, 1, "sent");
    commit(f, 1, 1);
    loader_journal_body(&f->j, 2);
    pthread_mutex_lock(&f->j.mu);
    assert_int_equal(loader_journal_compact(&f->j), 0);
    pthread_mutex_unlock(&f->j.mu);
    /* The new file is locked: another process of the node is refused. */
    struct loader_journal other;
    char err[512];
    loader_journal_init(&other, f->path);
    assert_int_equal(loader_journal_open(&other, err, sizeof err), 0);
    assert_int_equal(loader_journal_lock(&other, NODE, err, sizeof err), -1);
    assert_non_null(strstr(err, "node " NODE " is already running on this host"));
    loader_journal_free(&other);
    /* Later lines land in the new file, and no temporary is left. */
    loader_journal_body(&f->j, 3);
    char *got = file_lines_sorted(f->path);
    assert_string_equal(got, "D 2\nD 3\n");
    free(got);
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.compact", f->path);
    assert_int_equal(access(tmp, F_OK), -1);
}

static void test_compaction_runs_once_the_file_is_mostly_dead(void **state)
{
    struct fixture *f = *state;
    /* Thousands of recipients sent and committed in batches (the live map
     * grows and loses entries across its probe runs), two left live. */
    loader_journal_body(&f->j, 1000000);
    result_line(f, 1000001, 3, "sent");
    int64_t id = 1;
    size_t before = 0; /* the file's size before the commit that compacted it */
    while (f->j.compactions == 0) {
        assert_true(id < 200000);
        buf_t b;
        buf_init(&b);
        for (int k = 0; k < 100; k++, id++) {
            loader_journal_body(&f->j, id);
            struct loader_result r = outcome(id, 1, "sent");
            loader_journal_result(&f->j, &r);
            loader_pack(&b, &r);
        }
        before = f->j.bytes;
        loader_journal_committed(&f->j, &b);
        buf_free(&b);
    }
    assert_true(before > LOADER_JOURNAL_COMPACT_BYTES);
    assert_true(before < LOADER_JOURNAL_COMPACT_BYTES + 100 * 64); /* no later than that */
    char *got = file_lines_sorted(f->path);
    assert_string_equal(got, "D 1000000\nR 1000001 3 1 0.000 250 accepted sent -\n");
    free(got);
    assert_int_equal(f->j.n, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_result_after_body_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_without_result_is_ambiguous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_before_a_later_body_does_not_win, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_recipients_are_read_independently, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_lines_are_skipped, setup, teardown),
        cmocka_unit_test(test_untrusted_journal_counts_arms),
        cmocka_unit_test_setup_teardown(test_compaction_keeps_exactly_the_live_lines, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_compaction_moves_the_lock_and_the_appends, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_compaction_runs_once_the_file_is_mostly_dead, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
