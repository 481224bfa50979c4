/*
 * sign_client - DKIM signatures made by ringmail-signer processes. See
 * sign_client.h; the signer's side is campaign/signer/signer.c, the
 * frames campaign/sign_proto.h.
 *
 * Spawning: posix_spawn (the send is multi-threaded by then) with the
 * socket as fd 0, /dev/null as fd 1, stderr shared, every other descriptor
 * closed (the journal's lock must not outlive the send), an empty signal mask
 * and default SIGPIPE/SIGINT/SIGTERM/SIGHUP (the send blocks and ignores
 * some), in a process group of its own: a Ctrl-C at the terminal reaches
 * the send, which stops gracefully while its signers keep signing.
 *
 * Locking: one mutex guards the free list and the failure; a channel is
 * used by one thread at a time (taken from the list, given back), so its
 * I/O needs no lock. Lock order: none other is held.
 */
#include "campaign/sign_client.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define SIGN_CHAN_IN (SIGN_PROTO_HEAD + SIGN_PROTO_PAYLOAD_MAX)

struct sign_chan {
    int fd;    /* owned: our end of the socketpair; -1 when closed */
    pid_t pid; /* the signer; 0 once reaped */
    uint32_t seq;
    buf_t out;   /* owned: frames being written */
    uint8_t *in; /* owned: SIGN_CHAN_IN bytes; in[at..end) unparsed */
    size_t at, end;
    struct sign_chan *next; /* on the free list */
};

struct sign_client {
    struct sign_chan *chans; /* owned: n of them */
    unsigned n;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* a channel came back */
    struct sign_chan *free; /* under mu */
    int failed;             /* under mu */
    char why[512];          /* under mu: the first failure */
    uint64_t signatures;    /* atomic */
    struct sign_key_info keys[SIGN_PROTO_KEYS_MAX];
    size_t nkeys;
    struct dkim_keyholder holder;
};

/* ---- processes ---- */

/* sign_client_path - the signer binary: $RINGMAIL_SIGNER, else beside this one */
static void sign_client_path(char *path, size_t len)
{
    const char *env = getenv("RINGMAIL_SIGNER");
    if (env && *env) {
        snprintf(path, len, "%s", env);
        return;
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) {
        *slash = '\0';
    }
    snprintf(path, len, "%s/ringmail-signer", slash ? self : ".");
}

/* sign_chan_spawn - one signer on a new socketpair; 0 or -1 + err */
static int sign_chan_spawn(struct sign_chan *ch, const char *path, char *err, size_t errlen)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        snprintf(err, errlen, "cannot start the DKIM signer: socketpair: %s", strerror(errno));
        return -1;
    }
    if (sv[1] < 3) { /* dup2 onto fd 0 must not be a no-op that keeps CLOEXEC */
        int fd = fcntl(sv[1], F_DUPFD_CLOEXEC, 3);
        close(sv[1]);
        sv[1] = fd;
    }
    struct timeval tv = {SIGN_CLIENT_TIMEOUT_S, 0};
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    /* nothing else of the send (its journal's lock, the ring, sockets) */
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_init(&at);
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    int sigs[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        sigaddset(&dfl, sigs[i]);
    }
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dfl);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
    char *argv[] = {"ringmail-signer", NULL};
    int rc = posix_spawn(&ch->pid, path, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(sv[1]);
    if (rc != 0) {
        close(sv[0]);
        ch->pid = 0;
        snprintf(err, errlen,
                 "cannot start the DKIM signer %s: %s (ringmail-signer is installed beside "
                 "ringmail; RINGMAIL_SIGNER names another)",
                 path, strerror(rc));
        return -1;
    }
    ch->fd = sv[0];
    ch->in = malloc(SIGN_CHAN_IN);
    if (!ch->in) {
        abort();
    }
    return 0;
}

/* sign_chan_reap - wait for the signer to end (up to ms), its status in *st; 1 when reaped */
static int sign_chan_reap(struct sign_chan *ch, int *st, unsigned ms)
{
    for (unsigned waited = 0; ch->pid > 0; waited += 2) {
        pid_t r = waitpid(ch->pid, st, WNOHANG);
        if (r == ch->pid || (r < 0 && errno == ECHILD)) {
            ch->pid = 0;
            return r > 0;
        }
        if (waited >= ms) {
            return 0;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* sign_chan_why - why the signer of ch stopped answering, into err */
static void sign_chan_why(struct sign_chan *ch, const char *what, char *err, size_t errlen)
{
    pid_t pid = ch->pid;
    int st = 0;
    if (sign_chan_reap(ch, &st, 200) && WIFSIGNALED(st)) {
        snprintf(err, errlen, "the DKIM signer (pid %d) died: killed by signal %d (%s)", (int)pid,
                 WTERMSIG(st), strsignal(WTERMSIG(st)));
    } else if (pid > 0 && ch->pid == 0 && WIFEXITED(st)) {
        snprintf(err, errlen, "the DKIM signer (pid %d) exited with status %d", (int)pid,
                 WEXITSTATUS(st));
    } else {
        snprintf(err, errlen, "the DKIM signer (pid %d) %s", (int)pid, what);
    }
}

/* sign_chan_send - ch->out written; 0 or -1 + err */
static int sign_chan_send(struct sign_chan *ch, char *err, size_t errlen)
{
    while (buf_len(&ch->out) > 0) {
        ssize_t n = send(ch->fd, buf_data(&ch->out), buf_len(&ch->out), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            char what[128];
            snprintf(what, sizeof what, "cannot be written to: %s", strerror(errno));
            sign_chan_why(ch, what, err, errlen);
            return -1;
        }
        buf_consume(&ch->out, (size_t)n);
    }
    buf_reset(&ch->out);
    return 0;
}

/* sign_chan_frame - the next frame from the signer (its payload valid
 * until the next call); 0 or -1 + err */
static int sign_chan_frame(struct sign_chan *ch, struct sign_frame *f, char *err, size_t errlen)
{
    for (;;) {
        size_t used;
        char why[128];
        int rc = sign_proto_get(ch->in + ch->at, ch->end - ch->at, f, &used, why, sizeof why);
        if (rc > 0) {
            ch->at += used;
            return 0;
        }
        if (rc < 0) {
            snprintf(err, errlen, "the DKIM signer (pid %d) sent a bad frame: %s", (int)ch->pid,
                     why);
            return -1;
        }
        if (ch->at > 0) {
            memmove(ch->in, ch->in + ch->at, ch->end - ch->at);
            ch->end -= ch->at;
            ch->at = 0;
        }
        ssize_t n = recv(ch->fd, ch->in + ch->end, SIGN_CHAN_IN - ch->end, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n > 0) {
            ch->end += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            char what[64];
            snprintf(what, sizeof what, "did not answer within %d s", SIGN_CLIENT_TIMEOUT_S);
            sign_chan_why(ch, what, err, errlen);
        } else {
            sign_chan_why(ch, "closed its socket", err, errlen);
        }
        return -1;
    }
}

/* sign_chan_close - socket closed, signer reaped (killed when it lingers) */
static void sign_chan_close(struct sign_chan *ch)
{
    if (ch->fd >= 0) {
        close(ch->fd);
        ch->fd = -1;
    }
    int st;
    if (ch->pid > 0 && !sign_chan_reap(ch, &st, 2000) && ch->pid > 0) {
        kill(ch->pid, SIGKILL);
        sign_chan_reap(ch, &st, 2000);
    }
    buf_free(&ch->out);
    free(ch->in);
    ch->in = NULL;
}

/* ---- start ---- */

/* sign_client_hello - the HELLO of o appended to out */
static void sign_client_hello(const struct sign_client_options *o, buf_t *out)
{
    buf_t p = BUF_INIT;
    uint8_t v = SIGN_PROTO_VERSION;
    buf_append(&p, &v, 1);
    if (o->db_url) {
        buf_appendf(&p, "%lld", (long long)o->campaign);
        buf_append(&p, "", 1);
        buf_append(&p, o->db_url, strlen(o->db_url) + 1);
    } else {
        for (size_t i = 0; i < o->nkey_files; i++) {
            buf_append(&p, o->key_files[i], strlen(o->key_files[i]) + 1);
        }
    }
    sign_proto_put(out, o->db_url ? SIGN_HELLO_DB : SIGN_HELLO_FILES, 0, 0, buf_data(&p),
                   buf_len(&p));
    buf_free(&p);
}

/* sign_client_keys_read - ch's answer to HELLO: its keys into c; 0 or -1 + err */
static int sign_client_keys_read(struct sign_client *c, struct sign_chan *ch, char *err,
                                 size_t errlen)
{
    struct sign_frame f;
    if (sign_chan_frame(ch, &f, err, errlen) < 0) {
        return -1;
    }
    if (f.type == SIGN_ERROR) {
        snprintf(err, errlen, "the DKIM signer: %.*s", (int)f.len, (const char *)f.payload);
        return -1;
    }
    struct sign_key_info keys[SIGN_PROTO_KEYS_MAX];
    int n = sign_proto_keys_get(&f, keys);
    if (n < 0) {
        snprintf(err, errlen, "the DKIM signer (pid %d) answered no keys", (int)ch->pid);
        return -1;
    }
    c->nkeys = (size_t)n;
    memcpy(c->keys, keys, sizeof keys);
    return 0;
}

static int sign_client_sign(void *ctx, struct dkim_sig *reqs, size_t n, char *err, size_t errlen);

struct sign_client *sign_client_start(const struct sign_client_options *o, char *err, size_t errlen)
{
    struct sign_client *c = calloc(1, sizeof *c);
    unsigned n = o->processes ? o->processes : 1;
    if (!c || !(c->chans = calloc(n, sizeof *c->chans))) {
        abort();
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->holder = (struct dkim_keyholder){sign_client_sign, c};
    char path[PATH_MAX + 32];
    sign_client_path(path, sizeof path);
    int rc = 0;
    for (; c->n < n && rc == 0; c->n++) { /* all started first: they read their keys at once */
        struct sign_chan *ch = &c->chans[c->n];
        ch->fd = -1;
        rc = sign_chan_spawn(ch, path, err, errlen);
        if (rc == 0) {
            sign_client_hello(o, &ch->out);
            rc = sign_chan_send(ch, err, errlen);
        }
    }
    for (unsigned i = 0; i < c->n && rc == 0; i++) {
        rc = sign_client_keys_read(c, &c->chans[i], err, errlen);
    }
    if (rc < 0) {
        sign_client_stop(c);
        return NULL;
    }
    for (unsigned i = c->n; i-- > 0;) {
        c->chans[i].next = c->free;
        c->free = &c->chans[i];
    }
    return c;
}

/* ---- signing ---- */

/* sign_client_take - a free channel, waiting for one; NULL once failed (why in err) */
static struct sign_chan *sign_client_take(struct sign_client *c, char *err, size_t errlen)
{
    pthread_mutex_lock(&c->mu);
    while (!c->failed && !c->free) {
        pthread_cond_wait(&c->cv, &c->mu);
    }
    struct sign_chan *ch = c->failed ? NULL : c->free;
    if (ch) {
        c->free = ch->next;
    } else {
        snprintf(err, errlen, "%s", c->why);
    }
    pthread_mutex_unlock(&c->mu);
    return ch;
}

/* sign_client_give - ch back on the list; failed with why when why is not NULL */
static void sign_client_give(struct sign_client *c, struct sign_chan *ch, const char *why)
{
    pthread_mutex_lock(&c->mu);
    if (why && !c->failed) {
        c->failed = 1;
        snprintf(c->why, sizeof c->why, "%s", why);
    }
    ch->next = c->free;
    c->free = ch;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* sign_chan_answers - the SIG frames of reqs[0..n) asked from seq on; 0 or -1 + err */
static int sign_chan_answers(struct sign_chan *ch, struct dkim_sig *reqs, size_t n, uint32_t seq,
                             char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        struct sign_frame f;
        if (sign_chan_frame(ch, &f, err, errlen) < 0) {
            return -1;
        }
        if (f.type == SIGN_FAIL) {
            snprintf(err, errlen, "the DKIM signer (pid %d) failed a signature: %.*s", (int)ch->pid,
                     (int)f.len, (const char *)f.payload);
            return -1;
        }
        if (f.type != SIGN_SIG || f.seq != seq + i || f.len == 0 || f.len > DKIM_SIG_MAX) {
            snprintf(err, errlen, "the DKIM signer (pid %d) answered out of turn", (int)ch->pid);
            return -1;
        }
        memcpy(reqs[i].sig, f.payload, f.len);
        reqs[i].sig_len = f.len;
    }
    return 0;
}

/* sign_client_sign - the dkim_keyholder's sign: one write, the answers read */
static int sign_client_sign(void *ctx, struct dkim_sig *reqs, size_t n, char *err, size_t errlen)
{
    struct sign_client *c = ctx;
    struct sign_chan *ch = sign_client_take(c, err, errlen);
    if (!ch) {
        return -1;
    }
    if (ch->fd < 0) { /* a channel that failed before (with the client) */
        sign_client_give(c, ch, NULL);
        return -1;
    }
    uint32_t seq = ch->seq;
    for (size_t i = 0; i < n; i++) {
        sign_proto_put(&ch->out, SIGN_REQ, reqs[i].key, ch->seq++, reqs[i].digest, DKIM_DIGEST_LEN);
    }
    int rc = sign_chan_send(ch, err, errlen);
    if (rc == 0) {
        rc = sign_chan_answers(ch, reqs, n, seq, err, errlen);
    }
    if (rc < 0) {
        close(ch->fd);
        ch->fd = -1;
        buf_reset(&ch->out);
    } else {
        __atomic_add_fetch(&c->signatures, n, __ATOMIC_RELAXED);
    }
    sign_client_give(c, ch, rc < 0 ? err : NULL);
    return rc;
}

/* ---- the rest ---- */

size_t sign_client_keys(const struct sign_client *c, struct sign_key_info *keys)
{
    memcpy(keys, c->keys, c->nkeys * sizeof *keys);
    return c->nkeys;
}

const struct dkim_keyholder *sign_client_holder(const struct sign_client *c)
{
    return &c->holder;
}

int sign_client_failed(struct sign_client *c, char *why, size_t len)
{
    pthread_mutex_lock(&c->mu);
    int failed = c->failed;
    if (failed) {
        snprintf(why, len, "%s", c->why);
    }
    pthread_mutex_unlock(&c->mu);
    return failed;
}

/* sign_client_cpu - user + system seconds of pid from /proc/PID/stat (0 when gone) */
static double sign_client_cpu(pid_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(line, 1, sizeof line - 1, f) : 0;
    if (f) {
        fclose(f);
    }
    line[n] = '\0';
    const char *p = strrchr(line, ')'); /* the name may hold spaces */
    unsigned long long utime = 0, stime = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                     &stime) != 2) {
        return 0;
    }
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

void sign_client_stats(struct sign_client *c, struct sign_client_stats *st)
{
    st->processes = c->n;
    st->signatures = __atomic_load_n(&c->signatures, __ATOMIC_RELAXED);
    st->cpu_s = 0;
    for (unsigned i = 0; i < c->n; i++) {
        if (c->chans[i].pid > 0) {
            st->cpu_s += sign_client_cpu(c->chans[i].pid);
        }
    }
}

void sign_client_stop(struct sign_client *c)
{
    if (!c) {
        return;
    }
    for (unsigned i = 0; i < c->n; i++) {
        sign_chan_close(&c->chans[i]);
    }
    free(c->chans);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}
