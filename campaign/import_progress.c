/*
 * import_progress - the progress line of `ringmail recipients import` on a
 * terminal. See import_int.h.
 *
 * One line on stderr, rewritten in place at most four times a second:
 * while the file is read, rows read, rows/s and the share of the file's
 * bytes; then the database's two long steps, checking (addresses, merge
 * variables) and storing (the INSERT), as the share of rows done, which
 * the server reports with notices as it goes (import.c); then finishing
 * (the foreign key checks queued by the INSERT, COMMIT, ANALYZE), which
 * says nothing while it runs. While the database works, a thread redraws
 * the line twice a second so that the ETA keeps moving through the quiet
 * steps.
 *
 * The ETA weighs the steps by their share of the time of a measured
 * import (1,000,000 rows of four columns, twice, on a busy machine:
 * reading 4%, checking 22%, the sorts between checking and storing 6%,
 * storing 35%, the quiet tail 33%).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "campaign/import_int.h"
#include "engine/clock.h"

#define PROGRESS_INTERVAL 0.25 /* at most four updates a second */
#define PROGRESS_TICK 0.5      /* the thread's redraw, while nothing else draws */

#define W_READ 0.04
#define W_CHECK 0.22
#define W_SORT 0.06
#define W_STORE 0.35
#define W_BEFORE_TAIL (W_READ + W_CHECK + W_SORT + W_STORE)

/* n with thousands separators ("1,234,567"). */
static const char *progress_count(long long n, char *out, size_t outlen)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%lld", n < 0 ? 0 : n);
    size_t o = 0;
    for (int i = 0; i < len && o + 2 < outlen; i++) {
        if (i > 0 && (len - i) % 3 == 0) {
            out[o++] = ',';
        }
        out[o++] = digits[i];
    }
    out[o] = '\0';
    return out;
}

static const char *progress_duration(double s, char *out, size_t outlen)
{
    long t = (long)(s + 0.5);
    if (t < 90) {
        snprintf(out, outlen, "%ld s", t);
    } else if (t < 5400) {
        snprintf(out, outlen, "%ld min %02ld s", t / 60, t % 60);
    } else {
        snprintf(out, outlen, "%ld h %02ld min", t / 3600, t / 60 % 60);
    }
    return out;
}

void import_progress_init(struct import_progress *p, int on, long long size)
{
    memset(p, 0, sizeof *p);
    p->on = on;
    p->size = size;
    p->start = p->last = p->phase_at = clock_s();
    pthread_mutex_init(&p->lock, NULL);
}

/* Seconds left, or -1 when there is nothing to go by. */
static double progress_eta(const struct import_progress *p, double now, double read)
{
    double elapsed = now - p->start, f;
    if (p->tail_at > 0) {
        /* the quiet tail: as long, against the rest, as it was measured */
        double tail = (p->tail_at - p->start) * (1 - W_BEFORE_TAIL) / W_BEFORE_TAIL;
        double left = tail - (now - p->tail_at);
        return left >= 1 ? left : -1;
    }
    switch (p->phase) {
    case IMPORT_PHASE_READ:
        if (p->size <= 0) {
            return -1; /* a pipe: no size to go by */
        }
        f = W_READ * read;
        break;
    case IMPORT_PHASE_CHECK:
        f = W_READ + W_CHECK * p->done;
        break;
    default:
        f = W_READ + W_CHECK + W_SORT + W_STORE * p->done;
        break;
    }
    return f > 0.005 && elapsed > 0.5 ? elapsed * (1 - f) / f : -1;
}

/* Draw the line (the lock held). */
static void progress_draw(struct import_progress *p, double now)
{
    char rows[32], rate[32], eta[32], line[256];
    double read = p->size > 0 ? (double)p->bytes / (double)p->size : 0;
    if (read > 1 || p->phase != IMPORT_PHASE_READ) {
        read = 1;
    }
    size_t n;
    if (p->size > 0) {
        n = (size_t)snprintf(line, sizeof line, "read %s rows (%d%% of %.1f MB)",
                             progress_count(p->rows, rows, sizeof rows), (int)(read * 100),
                             (double)p->size / 1e6);
    } else {
        n = (size_t)snprintf(line, sizeof line, "read %s rows (%.1f MB)",
                             progress_count(p->rows, rows, sizeof rows), (double)p->bytes / 1e6);
    }
    double in_phase = now - p->phase_at;
    long long done_rows = p->rows;
    switch (p->tail_at > 0 ? IMPORT_PHASE_FINISH : p->phase) {
    case IMPORT_PHASE_CHECK:
        if (p->done >= 0.99) {
            /* the sorts that keep the first of each address, then the row order */
            n += (size_t)snprintf(line + n, sizeof line - n, "; checked, sorting");
            in_phase = 0;
            break;
        }
        /* fall through */
    case IMPORT_PHASE_STORE:
        n += (size_t)snprintf(line + n, sizeof line - n, "; %s %d%%",
                              p->phase == IMPORT_PHASE_CHECK ? "checking" : "storing",
                              (int)(p->done * 100));
        done_rows = (long long)(p->done * (double)p->rows);
        break;
    case IMPORT_PHASE_FINISH:
        n += (size_t)snprintf(line + n, sizeof line - n, "; stored, finishing");
        in_phase = 0;
        break;
    default:
        break;
    }
    if (in_phase > 0.2 && done_rows > 0 && n < sizeof line) {
        n += (size_t)snprintf(
            line + n, sizeof line - n, ", %s rows/s",
            progress_count((long long)((double)done_rows / in_phase), rate, sizeof rate));
    }
    double left = progress_eta(p, now, read);
    if (left >= 0 && n < sizeof line) {
        snprintf(line + n, sizeof line - n, ", ETA %s", progress_duration(left, eta, sizeof eta));
    }
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
    p->shown = p->drawn = 1;
    p->last = now;
}

void import_progress_read(struct import_progress *p, long long rows, long long bytes)
{
    if (!p->on) {
        return;
    }
    if (++p->ticks % 256 != 0) {
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->rows = rows;
    p->bytes = bytes;
    double now = clock_s();
    if (now - p->last >= PROGRESS_INTERVAL) {
        progress_draw(p, now);
    }
    pthread_mutex_unlock(&p->lock);
}

void import_progress_rows(struct import_progress *p, long long rows, long long bytes)
{
    pthread_mutex_lock(&p->lock);
    p->rows = rows;
    p->bytes = bytes;
    pthread_mutex_unlock(&p->lock);
}

void import_progress_db(struct import_progress *p, int phase, long line)
{
    if (!p->on || phase < IMPORT_PHASE_CHECK || phase > IMPORT_PHASE_FINISH) {
        return;
    }
    pthread_mutex_lock(&p->lock);
    double now = clock_s();
    if (phase > p->phase) {
        p->phase = phase;
        p->phase_at = now;
        p->done = 0;
    }
    if (phase == p->phase && phase != IMPORT_PHASE_FINISH) {
        double f = p->last_line > 0 ? (double)line / (double)p->last_line : 0;
        p->done = f > 1 ? 1 : f > p->done ? f : p->done;
    }
    /* The last rows are stored: what follows says nothing until it ends. */
    if (p->tail_at == 0 &&
        (phase == IMPORT_PHASE_FINISH || (phase == IMPORT_PHASE_STORE && p->done >= 0.99))) {
        p->tail_at = now;
    }
    if (now - p->last >= PROGRESS_INTERVAL) {
        progress_draw(p, now);
    }
    pthread_mutex_unlock(&p->lock);
}

static void *progress_ticker(void *arg)
{
    struct import_progress *p = arg;
    for (;;) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&p->lock);
        if (p->stop) {
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        double now = clock_s();
        if (now - p->last >= PROGRESS_TICK) {
            progress_draw(p, now);
        }
        pthread_mutex_unlock(&p->lock);
    }
}

void import_progress_ticker_start(struct import_progress *p)
{
    if (!p->on || p->ticking) {
        return;
    }
    p->stop = 0;
    p->ticking = pthread_create(&p->ticker, NULL, progress_ticker, p) == 0;
}

void import_progress_ticker_stop(struct import_progress *p)
{
    if (!p->ticking) {
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->ticker, NULL);
    p->ticking = 0;
}

void import_progress_clear(struct import_progress *p)
{
    if (!p->on) {
        return;
    }
    pthread_mutex_lock(&p->lock);
    if (p->shown) {
        fputs("\r\033[K", stderr);
        p->shown = 0;
        p->last = clock_s(); /* the line comes back at the next interval, not at once */
    }
    pthread_mutex_unlock(&p->lock);
}

void import_progress_end(struct import_progress *p, int ok)
{
    import_progress_ticker_stop(p);
    if (!p->on || !p->drawn) {
        return;
    }
    if (ok) {
        char rows[32], rate[32], took[32], line[256];
        double elapsed = clock_s() - p->start;
        size_t n = (size_t)snprintf(line, sizeof line, "read %s rows",
                                    progress_count(p->rows, rows, sizeof rows));
        if (p->size > 0) {
            n += (size_t)snprintf(line + n, sizeof line - n, " (100%% of %.1f MB)",
                                  (double)p->size / 1e6);
        }
        if (elapsed < 90) {
            snprintf(took, sizeof took, "%.1f s", elapsed);
        } else {
            progress_duration(elapsed, took, sizeof took);
        }
        snprintf(line + n, sizeof line - n, " in %s, %s rows/s", took,
                 progress_count(elapsed > 0 ? (long long)((double)p->rows / elapsed) : p->rows,
                                rate, sizeof rate));
        fprintf(stderr, "\r%s\033[K", line);
    } else if (!p->shown) {
        return;
    }
    fputc('\n', stderr);
    fflush(stderr);
    p->shown = 0;
}

void import_progress_notice(void *arg, const char *message)
{
    struct import_progress *p = arg;
    const char *m = strstr(message, "ringmail-progress ");
    if (m) {
        char *end;
        long phase = strtol(m + 18, &end, 10);
        long line = strtol(end, NULL, 10);
        import_progress_db(p, (int)phase, line);
        return;
    }
    import_progress_clear(p);
    fputs(message, stderr);
}
