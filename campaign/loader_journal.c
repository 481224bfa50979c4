/*
 * loader_journal - the node's crash journal. See loader_int.h.
 *
 * One text file per node on this host, appended to with one write per
 * line straight to the kernel (a kill -9 loses nothing):
 *   D id                                              a body is about to go out
 *   R id attempt final retry_s code outcome state reason   an outcome
 * Its flock makes the file the node's: one process at a time, released by
 * the kernel when the process dies.
 *
 * Recovery reads it in order (loader_journal_read): per recipient the last
 * line wins, so a deferral, a retry in the same process and a kill during
 * the retry's DATA end in "D". Lines of recipients the node no longer
 * holds, and lines that do not parse, are skipped.
 *
 * Live lines: recovery reads a recipient's last line only, and a recipient
 * whose last line is an outcome that is committed is no longer this node's
 * to settle (or the outcome is stale against the database's attempts). So
 * what a recovery needs is, per recipient, its last line unless that is a
 * committed 'R': the live set, kept here (under the journal's mutex) as
 * the lines are written and results commit. Once the file is large and
 * mostly dead, it is replaced by the live set: written to FILE.compact,
 * locked there (flock: the node's lock moves with it), renamed over FILE.
 * A kill -9 at any point leaves FILE whole, old or new.
 *
 * Diagnostics: a failed write prints "ringmail: journal PATH: ..." on
 * stderr; a failed compaction says so once and the file keeps growing.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "campaign/loader_int.h"

/* ---- the file ---- */

/* loader_journal_init - j knows its path, holds no file yet */
void loader_journal_init(struct loader_journal *j, const char *path)
{
    memset(j, 0, sizeof *j);
    j->path = strdup(path);
    if (!j->path) {
        abort();
    }
    j->fd = -1;
    pthread_mutex_init(&j->mu, NULL);
}

/* loader_journal_open - open (create) the file for appending; never
 * through a symbolic link */
int loader_journal_open(struct loader_journal *j, char *err, size_t errlen)
{
    j->fd = open(j->path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (j->fd < 0) {
        int e = errno;
        snprintf(err, errlen, "journal %s: %s%s", j->path, strerror(e),
                 e == ELOOP ? " (a symbolic link: refused, the journal is opened only as a "
                              "regular file)"
                            : "");
        return -1;
    }
    return 0;
}

/* loader_journal_lock - the journal is this host's record of the node: one
 * process at a time (flock, released by the kernel when the process dies,
 * kill -9 too) */
int loader_journal_lock(struct loader_journal *j, const char *node, char *err, size_t errlen)
{
    /* A compaction replaces the file (rename) holding a lock on the new
     * one: a lock won on the old one, just replaced, is not the node's. */
    for (int tries = 0; tries < 8; tries++) {
        if (flock(j->fd, LOCK_EX | LOCK_NB) < 0) {
            break;
        }
        struct stat a, b;
        if (fstat(j->fd, &a) == 0 && stat(j->path, &b) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino) {
            return 0;
        }
        int fd = open(j->path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            snprintf(err, errlen, "journal %s: %s", j->path, strerror(errno));
            return -1;
        }
        close(j->fd);
        j->fd = fd;
    }
    if (errno == EWOULDBLOCK) {
        snprintf(err, errlen,
                 "node %s is already running on this host: another ringmail process holds its "
                 "journal %s; give this process another --node, or stop that one first",
                 node, j->path);
    } else {
        snprintf(err, errlen, "journal %s: %s", j->path, strerror(errno));
    }
    return -1;
}

/* loader_journal_free - close the file, free the live lines and the path */
void loader_journal_free(struct loader_journal *j)
{
    if (j->fd >= 0) {
        close(j->fd);
        j->fd = -1;
    }
    for (size_t i = 0; i < j->cap; i++) {
        free(j->map[i].line);
    }
    free(j->map);
    j->map = NULL;
    j->cap = j->n = 0;
    pthread_mutex_destroy(&j->mu);
    free(j->path);
    j->path = NULL;
}

/* ---- the live lines ---- */

/* loader_jmap_home - where id's entry would sit in a map of cap slots */
static size_t loader_jmap_home(int64_t id, size_t cap)
{
    return (size_t)((uint64_t)id * 0x9E3779B97F4A7C15ull >> 17) & (cap - 1);
}

/* loader_jmap_slot - id's slot, or the free one where it would go */
static size_t loader_jmap_slot(const struct loader_journal *j, int64_t id)
{
    size_t mask = j->cap - 1;
    size_t i = loader_jmap_home(id, j->cap);
    while (j->map[i].id && j->map[i].id != id) {
        i = (i + 1) & mask;
    }
    return i;
}

/* loader_jmap_grow - twice the slots, entries rehashed */
static void loader_jmap_grow(struct loader_journal *j)
{
    struct loader_jent *old = j->map;
    size_t oldcap = j->cap;
    j->cap = oldcap ? oldcap * 2 : 1024;
    j->map = calloc(j->cap, sizeof *j->map);
    if (!j->map) {
        abort();
    }
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].id) {
            j->map[loader_jmap_slot(j, old[i].id)] = old[i];
        }
    }
    free(old);
}

/* loader_jmap_put - under mu: id's last line is now this one */
static void loader_jmap_put(struct loader_journal *j, int64_t id, char kind, uint32_t attempt,
                            const char *line, size_t n)
{
    if ((j->n + 1) * 4 > j->cap * 3) {
        loader_jmap_grow(j);
    }
    struct loader_jent *e = &j->map[loader_jmap_slot(j, id)];
    if (e->id) {
        j->live -= e->len;
        free(e->line);
    } else {
        j->n++;
    }
    e->id = id;
    e->kind = kind;
    e->attempt = attempt;
    e->line = malloc(n);
    if (!e->line) {
        abort();
    }
    memcpy(e->line, line, n);
    e->len = n;
    j->live += n;
}

/* loader_jmap_del - under mu: drop the slot i, moving later entries of its
 * run back (linear probing without tombstones) */
static void loader_jmap_del(struct loader_journal *j, size_t i)
{
    size_t mask = j->cap - 1;
    j->live -= j->map[i].len;
    free(j->map[i].line);
    j->map[i].line = NULL;
    j->map[i].id = 0;
    j->n--;
    for (size_t k = (i + 1) & mask; j->map[k].id; k = (k + 1) & mask) {
        size_t home = loader_jmap_home(j->map[k].id, j->cap);
        /* k's entry may move to i if its home is not in (i, k] (cyclically). */
        if (i <= k ? (home <= i || home > k) : (home <= i && home > k)) {
            j->map[i] = j->map[k];
            j->map[k].id = 0;
            j->map[k].line = NULL;
            i = k;
        }
    }
}

/* loader_journal_compact - under mu: replace the file by the live lines
 * (see the top of this file) */
int loader_journal_compact(struct loader_journal *j)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.compact", j->path);
    buf_t b;
    buf_init(&b);
    for (size_t i = 0; i < j->cap; i++) {
        if (j->map[i].id) {
            buf_append(&b, j->map[i].line, j->map[i].len);
        }
    }
    const char *why = NULL;
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        why = "create";
    } else if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        why = "lock";
    } else {
        const char *p = buf_data(&b);
        size_t left = buf_len(&b);
        while (left > 0 && !why) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w <= 0) {
                why = "write";
            } else {
                p += w;
                left -= (size_t)w;
            }
        }
        if (!why && rename(tmp, j->path) < 0) {
            why = "rename";
        }
    }
    if (why) {
        if (!j->compact_warned) {
            j->compact_warned = 1;
            fprintf(stderr,
                    "ringmail: journal %s: cannot compact it (%s %s: %s); it keeps growing\n",
                    j->path, why, tmp, strerror(errno));
        }
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        buf_free(&b);
        return -1;
    }
    /* The new file is the journal, locked by fd: the old one can go. */
    close(j->fd);
    j->fd = fd;
    j->bytes = buf_len(&b);
    buf_free(&b);
    __atomic_add_fetch(&j->compactions, 1, __ATOMIC_RELAXED);
    return 0;
}

/* loader_journal_committed - the writer committed these results: their 'R'
 * lines are dead (unless a later line of the recipient came since);
 * compact the file if it is worth it */
void loader_journal_committed(struct loader_journal *j, const buf_t *batch)
{
    pthread_mutex_lock(&j->mu);
    for (size_t at = 0; at < buf_len(batch) && j->cap;) {
        struct loader_rec h;
        memcpy(&h, (const char *)buf_data(batch) + at, sizeof h);
        at += h.len;
        size_t i = loader_jmap_slot(j, h.id);
        if (j->map[i].id && j->map[i].kind == 'R' && j->map[i].attempt == h.attempt) {
            loader_jmap_del(j, i);
        }
    }
    if (j->bytes > LOADER_JOURNAL_COMPACT_BYTES && j->bytes > 4 * j->live) {
        loader_journal_compact(j);
    }
    pthread_mutex_unlock(&j->mu);
}

/* ---- writing ---- */

/* loader_journal_write - append one line of recipient id, and make it the
 * recipient's live line */
static void loader_journal_write(struct loader_journal *j, int64_t id, char kind, uint32_t attempt,
                                 const char *line, int n)
{
    /* One write per line, straight to the kernel: a kill -9 loses nothing. */
    pthread_mutex_lock(&j->mu);
    if (write(j->fd, line, (size_t)n) != n) {
        fprintf(stderr, "ringmail: journal %s: %s\n", j->path, strerror(errno));
    }
    j->bytes += (size_t)n;
    loader_jmap_put(j, id, kind, attempt, line, (size_t)n);
    pthread_mutex_unlock(&j->mu);
}

/* loader_journal_body - "D id": the body of recipient id is about to go out */
void loader_journal_body(struct loader_journal *j, int64_t id)
{
    char line[40];
    int n = snprintf(line, sizeof line, "D %" PRId64 "\n", id);
    loader_journal_write(j, id, 'D', 0, line, n);
}

/* loader_journal_result - "R id attempt final retry_s code outcome state
 * reason": r's outcome, "-" for an empty word */
void loader_journal_result(struct loader_journal *j, const struct loader_result *r)
{
    char line[200];
    int n = snprintf(line, sizeof line, "R %" PRId64 " %u %d %.3f %d %s %s %s\n", r->recipient_id,
                     r->attempt, r->final, r->retry_in_s, r->code, r->outcome[0] ? r->outcome : "-",
                     r->state[0] ? r->state : "-", r->reason[0] ? r->reason : "-");
    if (n >= (int)sizeof line) {
        n = (int)sizeof line - 1;
        line[n - 1] = '\n';
    }
    loader_journal_write(j, r->recipient_id, 'R', r->attempt, line, n);
}

/* loader_journal_mark - the loop: the body of this recipient is about to
 * be sent */
void loader_journal_mark(struct loader *l, int64_t id)
{
    loader_journal_body(&l->j, id);
}

/* ---- reading, in order, at recovery ---- */

/* loader_held_cmp - held recipients by id */
int loader_held_cmp(const void *a, const void *b)
{
    int64_t x = ((const struct loader_held *)a)->id, y = ((const struct loader_held *)b)->id;
    return x < y ? -1 : x > y;
}

/* loader_journal_fold - one line into the held set: "D id" (a body about
 * to go out) or "R id attempt final retry_s code outcome state reason" (an
 * outcome) becomes the recipient's last state. The text of a recovered
 * outcome names node. */
void loader_journal_fold(const char *line, struct loader_held *held, size_t n, const char *node)
{
    struct loader_held key = {0};
    long long id;
    if (line[0] == 'D' && sscanf(line, "D %lld", &id) == 1) {
        key.id = id;
        struct loader_held *h = bsearch(&key, held, n, sizeof *held, loader_held_cmp);
        if (h) {
            h->last = 'D';
        }
        return;
    }
    struct loader_result r;
    memset(&r, 0, sizeof r);
    unsigned attempt;
    int final, code;
    double retry;
    if (line[0] == 'R' && sscanf(line, "R %lld %u %d %lf %d %15s %15s %47s", &id, &attempt, &final,
                                 &retry, &code, r.outcome, r.state, r.reason) == 8) {
        key.id = id;
        struct loader_held *h = bsearch(&key, held, n, sizeof *held, loader_held_cmp);
        if (h) {
            r.recipient_id = id;
            r.attempt = attempt;
            r.final = final;
            r.retry_in_s = retry;
            r.code = code;
            r.connect_ms = r.tls_ms = r.transaction_ms = -1;
            snprintf(r.text, sizeof r.text, "outcome recovered from the crash journal of node %s",
                     node);
            h->last = 'R';
            h->result = r;
        }
    }
}

/* loader_journal_read - the journal at path into the held set, in order:
 * the last line of a recipient wins */
void loader_journal_read(const char *path, struct loader_held *held, size_t n, const char *node)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return;
    }
    char line[256];
    while (fgets(line, sizeof line, f)) {
        loader_journal_fold(line, held, n, node);
    }
    fclose(f);
}
