/*
 * top_view - what `ringmail top` shows. See top_int.h.
 *
 * The text view: a header (the clock, the campaigns, totals with the share
 * final, the rate and an ETA, the live nodes, problem lines), then one row
 * per ISP that has something to show (recipients waiting or in flight,
 * attempts in the deferral window, a last error, a suspension or a hold,
 * a sender's connections, queue, backoff or hold), sorted by --sort.
 * Every string from the database or a sender (a server's reply text, a
 * reason) is shown with control characters and bad UTF-8 as '?', so a
 * reply cannot move the cursor; free text is cut to the width with "...".
 * The JSON document has the same numbers, raw counts beside each rate and
 * share (see the README for each field).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "campaign/top_int.h"

/* Longest free text of a row when there is no width to fit (not a terminal). */
#define TOP_STATE_MAX 100
#define TOP_ERROR_MAX 120

void top_problem(struct top *t, const char *fmt, ...)
{
    if (t->nproblems >= TOP_PROBLEMS_MAX) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->problems[t->nproblems++], sizeof t->problems[0], fmt, ap);
    va_end(ap);
}

/* ---- text helpers ---- */

/* The length of the valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t top_utf8_len(const unsigned char *s, size_t n)
{
    size_t len = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 ? 2 : 0;
    if (len == 0 || s[0] >= 0xf8 || len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    return len;
}

/* A character that must not reach a terminal: C0, DEL, C1 (U+0080..U+009F). */
static int top_control(const unsigned char *s, size_t len)
{
    return (len == 1 && (s[0] < 0x20 || s[0] == 0x7f)) || (len == 2 && s[0] == 0xc2 && s[1] < 0xa0);
}

/* s made safe for a terminal into out, at most cols columns (0: no limit),
 * "..." at the end when cut; returns the columns used. */
static int top_put(buf_t *out, const char *s, int cols)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = strlen((const char *)p);
    /* Count first: whether it fits decides the "...". */
    int total = 0;
    for (size_t i = 0; i < n;) {
        size_t l = p[i] >= 0x80 ? top_utf8_len(p + i, n - i) : 1;
        i += l ? l : 1;
        total++;
    }
    int keep = cols > 0 && total > cols ? (cols > 3 ? cols - 3 : cols) : total;
    int used = 0;
    for (size_t i = 0; i < n && used < keep;) {
        size_t l = p[i] >= 0x80 ? top_utf8_len(p + i, n - i) : 1;
        if (l == 0 || top_control(p + i, l)) {
            buf_append(out, "?", 1);
            i += l ? l : 1;
        } else {
            buf_append(out, p + i, l);
            i += l;
        }
        used++;
    }
    if (keep < total && cols > 3) {
        buf_append_str(out, "...");
        used += 3;
    }
    return used;
}

/* top_put padded with spaces to cols (left-aligned). */
static void top_put_pad(buf_t *out, const char *s, int cols)
{
    int used = top_put(out, s, cols);
    for (; used < cols; used++) {
        buf_append(out, " ", 1);
    }
}

static int top_cols(const char *s)
{
    buf_t b = BUF_INIT;
    int n = top_put(&b, s, 0);
    buf_free(&b);
    return n;
}

/* "45s", "12m05s", "3h02m", "2d03h". */
static void top_duration(char *out, size_t cap, double s)
{
    long long v = s < 0 ? 0 : (long long)(s + 0.5);
    if (v < 60) {
        snprintf(out, cap, "%llds", v);
    } else if (v < 3600) {
        snprintf(out, cap, "%lldm%02llds", v / 60, v % 60);
    } else if (v < 86400) {
        snprintf(out, cap, "%lldh%02lldm", v / 3600, v % 3600 / 60);
    } else {
        snprintf(out, cap, "%lldd%02lldh", v / 86400, v % 86400 / 3600);
    }
}

/* An ISO UTC time as the view says it: "14:03:22Z" on today's date (the
 * database's), else "2026-12-07 14:03Z". */
static void top_when(const struct top *t, const char *iso, char *out, size_t cap)
{
    if (strlen(iso) < 19) {
        snprintf(out, cap, "%s", iso);
    } else if (strncmp(iso, t->now, 10) == 0) {
        snprintf(out, cap, "%.8sZ", iso + 11);
    } else {
        snprintf(out, cap, "%.10s %.5sZ", iso, iso + 11);
    }
}

/* ---- per ISP ---- */

static int top_isp_shown(const struct top_isp *i)
{
    return i->due || i->waiting || i->in_flight || i->answered_5m || i->err.id || i->suspended ||
           i->held ||
           (i->m_seen &&
            (i->m_conns > 0 || i->m_queue > 0 || i->m_held || i->m_paused || i->m_backoff < 1));
}

static double top_rate(const struct top_isp *i)
{
    return (double)i->answered_1m / TOP_RATE_S;
}

/* The deferral share in percent, < 0 without attempts. */
static double top_defer_pct(const struct top_isp *i)
{
    return i->answered_5m ? 100.0 * (double)i->deferred_5m / (double)i->answered_5m : -1;
}

/* The limit the row shows: the senders' effective one when a --metrics
 * endpoint names the ISP, else --config's; *from says which (NULL: none). */
static int top_limit(const struct top_isp *i, double *limit, const char **from)
{
    if (i->m_seen) {
        *limit = i->m_limit;
        *from = "metrics";
        return 1;
    }
    if (i->in_config) {
        *limit = i->cfg_limit;
        *from = "config";
        return 1;
    }
    *from = NULL;
    return 0;
}

/* top_cmp - the order of rows by sort (a pointer to enum top_sort): the
 * key descending, then the name */
static int top_cmp(const void *a, const void *b, void *sort)
{
    const struct top_isp *x = *(const struct top_isp *const *)a;
    const struct top_isp *y = *(const struct top_isp *const *)b;
    double kx, ky;
    switch (*(const enum top_sort *)sort) {
    case TOP_SORT_RATE:
        kx = (double)x->answered_1m;
        ky = (double)y->answered_1m;
        break;
    case TOP_SORT_DEFERRALS:
        kx = top_defer_pct(x) * 1e9 + (double)x->deferred_5m;
        ky = top_defer_pct(y) * 1e9 + (double)y->deferred_5m;
        break;
    default:
        kx = (double)(x->due + x->waiting) * 1e6 + (double)x->in_flight;
        ky = (double)(y->due + y->waiting) * 1e6 + (double)y->in_flight;
        break;
    }
    if (kx != ky) {
        return kx > ky ? -1 : 1;
    }
    return strcmp(x->name, y->name);
}

/* The ISPs shown, sorted; *n of them (free the array). */
static struct top_isp **top_rows(struct top *t, size_t *n)
{
    struct top_isp **rows = calloc(t->nisps + 1, sizeof *rows);
    if (!rows) {
        abort();
    }
    *n = 0;
    for (size_t i = 0; i < t->nisps; i++) {
        if (top_isp_shown(&t->isps[i])) {
            rows[(*n)++] = &t->isps[i];
        }
    }
    qsort_r(rows, *n, sizeof *rows, top_cmp, &t->o.sort);
    return rows;
}

/* Append a part of the state to out ("; " between parts) within cols
 * columns in all (0: no limit): head, reason cut to what is left, tail;
 * when not even a few columns of the reason fit, brief instead (the head
 * and tail without the reason: "held since 10:03:20Z"). */
static void top_state_part(buf_t *out, int cols, const char *head, const char *reason,
                           const char *tail, const char *brief)
{
    int used = top_cols(buf_cstr(out));
    if (cols > 0 && used >= cols) {
        return;
    }
    buf_t part = BUF_INIT;
    if (buf_len(out)) {
        buf_append_str(&part, "; ");
    }
    int room = cols > 0 ? cols - used : 0;
    int left = TOP_STATE_MAX;
    if (reason && cols > 0) {
        left = room - top_cols(buf_cstr(&part)) - top_cols(head) - top_cols(tail ? tail : "");
    }
    if (reason && left < 8 && brief) {
        buf_append_str(&part, brief);
    } else {
        buf_append_str(&part, head);
        if (reason) {
            top_put(&part, reason, left > 4 ? left : 4);
        }
        if (tail) {
            buf_append_str(&part, tail);
        }
    }
    if (cols > 0) {
        top_put(out, buf_cstr(&part), room);
    } else {
        buf_append(out, buf_data(&part), buf_len(&part));
    }
    buf_free(&part);
}

/* Why the ISP waits, within cols columns (0: no limit). */
static void top_state(const struct top *t, const struct top_isp *i, buf_t *out, int cols)
{
    char a[160], b[96], w[48], l[32], brief[160];
    if (i->suspended) {
        top_when(t, i->suspend_until, w, sizeof w);
        top_duration(l, sizeof l, i->suspend_left_s);
        snprintf(a, sizeof a, "suspended until %s (%s left): ", w, l);
        snprintf(brief, sizeof brief, "suspended until %s (%s left)", w, l);
        top_state_part(out, cols, a, i->suspend_reason, NULL, brief);
    }
    if (i->held) {
        top_when(t, i->hold_since, w, sizeof w);
        snprintf(b, sizeof b, " since %s", w);
        snprintf(brief, sizeof brief, "held since %s", w);
        top_state_part(out, cols, "held: ", i->hold_reason, b, brief);
    }
    if (i->m_seen && i->m_held && !i->held) {
        top_state_part(out, cols, "held by the sender", NULL, NULL, NULL);
    }
    if (i->m_seen && (i->m_paused || i->m_backoff < 1)) {
        snprintf(a, sizeof a, "%sbackoff %.2f", i->m_paused ? "paused, " : "", i->m_backoff);
        top_state_part(out, cols, a, NULL, NULL, NULL);
    }
    if (!buf_len(out) && i->due == 0 && i->waiting > 0 && i->in_flight == 0) {
        top_state_part(out, cols, "waiting for retries", NULL, NULL, NULL);
    }
    if (!buf_len(out)) {
        top_state_part(out, cols, "ok", NULL, NULL, NULL);
    }
}

/* The last error as a row says it: "14:03:22Z 451 4.3.0 text". */
static void top_error_text(const struct top *t, const struct top_err *e, buf_t *out)
{
    if (!e->id) {
        buf_append_str(out, "-");
        return;
    }
    char w[48];
    top_when(t, e->at, w, sizeof w);
    buf_appendf(out, "%s ", w);
    if (e->code) {
        /* The reply text may begin with its enhanced code: say it once. */
        size_t el = strlen(e->enhanced);
        const char *text = e->text;
        if (el && strncmp(text, e->enhanced, el) == 0 && text[el] == ' ') {
            text += el + 1;
        }
        buf_appendf(out, "%d%s%s %s", e->code, el ? " " : "", e->enhanced, text);
    } else {
        buf_appendf(out, "%s: %s%s%s", e->outcome, e->reason, *e->text ? " " : "", e->text);
    }
}

/* ---- text ---- */

static void top_line_end(buf_t *out, int *lines)
{
    buf_append_str(out, "\n");
    (*lines)++;
}

static void top_header(struct top *t, buf_t *out, int width, int interactive, int *lines)
{
    buf_t line = BUF_INIT;
    char iv[32];
    top_duration(iv, sizeof iv, t->o.interval_ms / 1000.0);
    if (t->o.interval_ms % 1000) {
        snprintf(iv, sizeof iv, "%ums", t->o.interval_ms);
    }
    buf_appendf(&line, "ringmail top  %s", *t->now ? t->now : "-");
    if (interactive) {
        buf_appendf(&line, "  every %s", iv);
        if (t->paced_ms > 0) {
            buf_appendf(&line, " (%.1fs: the database's pace)", t->paced_ms / 1000.0);
        }
        buf_appendf(&line, "  db %.1f ms  (q quits)", t->query_ms);
    }
    top_put(out, buf_cstr(&line), width);
    top_line_end(out, lines);
    buf_reset(&line);
    if (!t->ok) {
        /* Nothing read this time: the problem lines say why. */
    } else if (t->ncamps == 0) {
        top_put(out,
                "no campaign running, paused or worked on by a live node (--campaign ID shows "
                "one)",
                width);
        top_line_end(out, lines);
    } else {
        buf_append_str(&line, t->ncamps == 1 ? "campaign " : "campaigns ");
        for (size_t i = 0; i < t->ncamps; i++) {
            buf_appendf(&line, "%s%lld \"%s\" %s", i ? ", " : "", t->camps[i].id, t->camps[i].name,
                        t->camps[i].status);
        }
        top_put(out, buf_cstr(&line), width);
        top_line_end(out, lines);
        buf_reset(&line);
        long long left = t->total - t->final;
        double per_s = (double)t->final_1m / TOP_RATE_S;
        char eta[32] = "-";
        if (left == 0) {
            snprintf(eta, sizeof eta, "done");
        } else if (per_s > 0) {
            top_duration(eta, sizeof eta, (double)left / per_s);
        }
        buf_appendf(&line, "recipients %lld  final %lld (%.1f%%)  rate %.1f/s  ETA %s", t->total,
                    t->final, t->total ? 100.0 * (double)t->final / (double)t->total : 0.0,
                    (double)t->answered_1m / TOP_RATE_S, eta);
        top_put(out, buf_cstr(&line), width);
        top_line_end(out, lines);
        buf_reset(&line);
    }
    if (t->ok) {
        buf_append_str(&line, "nodes:");
        if (t->nnodes == 0) {
            buf_append_str(&line, " none live");
        }
        for (size_t i = 0; i < t->nnodes; i++) {
            const struct top_node *n = &t->nodes[i];
            buf_appendf(&line, "%s %s (", i ? "," : "", n->name);
            if (n->campaign_id) {
                buf_appendf(&line, "campaign %lld, ", n->campaign_id);
            }
            buf_appendf(&line, "pid %d on %s)", n->pid, n->host);
        }
        top_put(out, buf_cstr(&line), width);
        top_line_end(out, lines);
    }
    for (size_t i = 0; i < t->nproblems; i++) {
        top_put(out, t->problems[i], width);
        top_line_end(out, lines);
    }
    buf_free(&line);
}

#define TOP_FIXED_COLS " %8s %8s %6s %7s %9s %6s %5s %7s"
#define TOP_FIXED_WIDTH 64 /* of TOP_FIXED_COLS */

/* The widths of the table's text columns. */
struct top_layout {
    int name_w, state_w, err_w; /* err_w < 8: no LAST ERROR column */
};

/* top_layout_fit - share what the fixed columns leave of width (0: no
 * limit) between STATE and LAST ERROR: each what it needs when both fit,
 * else one what it needs when that is at most half, else STATE three
 * fifths (why it waits before what the server said) */
static void top_layout_fit(struct top_layout *l, int width, int state_d, int err_d)
{
    if (width <= 0) {
        l->state_w = state_d > TOP_STATE_MAX ? TOP_STATE_MAX : state_d;
        l->err_w = TOP_ERROR_MAX;
        return;
    }
    int room = width - l->name_w - TOP_FIXED_WIDTH - 2;
    int half = (room - 2) / 2;
    if (state_d + 2 + err_d <= room) {
        l->state_w = state_d;
        l->err_w = err_d;
    } else if (state_d <= half) {
        l->state_w = state_d;
        l->err_w = room - 2 - state_d;
    } else if (err_d <= half) {
        l->err_w = err_d;
        l->state_w = room - 2 - err_d;
    } else {
        l->state_w = room * 3 / 5 < state_d ? room * 3 / 5 : state_d;
        l->state_w = l->state_w > half ? l->state_w : half;
        l->err_w = room - 2 - l->state_w;
    }
    if (l->err_w < 8) {
        l->state_w = room; /* too narrow for both: the state alone */
    }
}

/* top_layout_make - the layout for rows, from what their texts need */
static void top_layout_make(const struct top *t, struct top_isp *const *rows, size_t n, int width,
                            struct top_layout *l)
{
    int state_d = 5, err_d = 10;
    l->name_w = 3;
    for (size_t i = 0; i < n; i++) {
        buf_t st = BUF_INIT, er = BUF_INIT;
        top_state(t, rows[i], &st, 0);
        top_error_text(t, &rows[i]->err, &er);
        int c = top_cols(rows[i]->name), s = top_cols(buf_cstr(&st)), e = top_cols(buf_cstr(&er));
        l->name_w = c > l->name_w ? c : l->name_w;
        state_d = s > state_d ? s : state_d;
        err_d = e > err_d ? e : err_d;
        buf_free(&st);
        buf_free(&er);
    }
    l->name_w = l->name_w > 24 ? 24 : l->name_w;
    top_layout_fit(l, width, state_d, err_d);
}

/* top_row - one ISP's line (without its newline) */
static void top_row(const struct top *t, const struct top_isp *x, const struct top_layout *l,
                    buf_t *line)
{
    char q[24], due[24], inf[24], rate[24], lim[24] = "-", dp[16] = "-", conn[24] = "-",
                                            old[24] = "-";
    snprintf(q, sizeof q, "%lld", x->due + x->waiting);
    snprintf(due, sizeof due, "%lld", x->due);
    snprintf(inf, sizeof inf, "%lld", x->in_flight);
    snprintf(rate, sizeof rate, "%.1f", top_rate(x));
    double limit, pct = top_defer_pct(x);
    const char *from;
    if (top_limit(x, &limit, &from) && limit < 0) {
        snprintf(lim, sizeof lim, "unlimited");
    } else if (from) {
        snprintf(lim, sizeof lim, "%.4g", limit);
    }
    if (pct >= 0) {
        snprintf(dp, sizeof dp, "%.1f%%", pct);
    }
    if (x->m_seen) {
        snprintf(conn, sizeof conn, "%.0f", x->m_conns);
    }
    if (x->oldest_s >= 0) {
        top_duration(old, sizeof old, x->oldest_s);
    }
    top_put_pad(line, x->name, l->name_w);
    buf_appendf(line, TOP_FIXED_COLS "  ", q, due, inf, rate, lim, dp, conn, old);
    buf_t st = BUF_INIT, er = BUF_INIT;
    top_state(t, x, &st, l->state_w);
    if (l->err_w >= 8) {
        top_put_pad(line, buf_cstr(&st), l->state_w);
        buf_append_str(line, "  ");
        top_error_text(t, &x->err, &er);
        top_put(line, buf_cstr(&er), l->err_w);
    } else {
        top_put(line, buf_cstr(&st), l->state_w);
    }
    buf_free(&st);
    buf_free(&er);
}

void top_view_text(struct top *t, buf_t *out, int width, int height, int interactive)
{
    int lines = 0;
    top_header(t, out, width, interactive, &lines);
    if (!t->ok) {
        return;
    }
    size_t n, shown = 0;
    struct top_isp **rows = top_rows(t, &n);
    struct top_layout l;
    top_layout_make(t, rows, n, width, &l);
    top_line_end(out, &lines);
    buf_t line = BUF_INIT;
    top_put_pad(&line, "ISP", l.name_w);
    buf_appendf(&line, TOP_FIXED_COLS "  ", "QUEUED", "DUE", "INFLT", "RATE/s", "LIMIT", "DEFER%",
                "CONN", "OLDEST");
    top_put_pad(&line, "STATE", l.err_w >= 8 ? l.state_w : 0);
    buf_append_str(&line, l.err_w >= 8 ? "  LAST ERROR" : "");
    top_put(out, buf_cstr(&line), width);
    top_line_end(out, &lines);
    /* On a terminal, as many rows as fit; the last line says how many not. */
    for (; shown < n && !(height > 0 && lines >= height - 1 && shown + 1 < n); shown++) {
        buf_reset(&line);
        top_row(t, rows[shown], &l, &line);
        top_put(out, buf_cstr(&line), width);
        top_line_end(out, &lines);
    }
    buf_reset(&line);
    if (n == 0) {
        buf_append_str(&line, "(no ISP has recipients waiting, in flight or recent attempts)");
    } else if (shown < n) {
        buf_appendf(&line, "... %zu more ISPs (a taller terminal shows them)", n - shown);
    }
    if (buf_len(&line)) {
        top_put(out, buf_cstr(&line), width);
        top_line_end(out, &lines);
    }
    buf_free(&line);
    free(rows);
}

/* ---- JSON ---- */

static json_t *top_round(double v, double unit)
{
    return json_real(round(v / unit) * unit);
}

static json_t *top_json_isp(const struct top *t, const struct top_isp *x)
{
    json_t *o = json_object();
    json_object_set_new(o, "isp", json_string(x->name));
    json_object_set_new(o, "queued", json_integer(x->due + x->waiting));
    json_object_set_new(o, "due", json_integer(x->due));
    json_object_set_new(o, "waiting", json_integer(x->waiting));
    json_object_set_new(o, "in_flight", json_integer(x->in_flight));
    json_object_set_new(o, "rate", top_round(top_rate(x), 0.01));
    json_object_set_new(o, "attempts_1m", json_integer(x->answered_1m));
    double limit;
    const char *from;
    if (!top_limit(x, &limit, &from)) {
        json_object_set_new(o, "limit", json_null());
    } else if (limit < 0) {
        json_object_set_new(o, "limit", json_string("unlimited"));
    } else {
        json_object_set_new(o, "limit", top_round(limit, 0.001));
    }
    json_object_set_new(o, "limit_from", from ? json_string(from) : json_null());
    double pct = top_defer_pct(x);
    json_object_set_new(o, "deferral_pct", pct < 0 ? json_null() : top_round(pct, 0.01));
    json_object_set_new(o, "attempts_5m", json_integer(x->answered_5m));
    json_object_set_new(o, "deferred_5m", json_integer(x->deferred_5m));
    json_object_set_new(o, "oldest_s",
                        x->oldest_s < 0 ? json_null() : json_integer((json_int_t)x->oldest_s));
    json_object_set_new(o, "suspend",
                        x->suspended
                            ? json_pack("{s:s, s:I, s:s}", "until", x->suspend_until, "left_s",
                                        (json_int_t)x->suspend_left_s, "reason", x->suspend_reason)
                            : json_null());
    json_object_set_new(
        o, "hold",
        x->held ? json_pack("{s:s, s:s}", "since", x->hold_since, "reason", x->hold_reason)
                : json_null());
    if (x->m_seen) {
        json_object_set_new(
            o, "metrics",
            json_pack("{s:o, s:b, s:o, s:b, s:I, s:I}", "backoff", top_round(x->m_backoff, 0.001),
                      "backoff_active", x->m_paused, "rate_limit",
                      x->m_limit < 0 ? json_string("unlimited") : top_round(x->m_limit, 0.001),
                      "held", x->m_held, "connections", (json_int_t)x->m_conns, "queue",
                      (json_int_t)x->m_queue));
    } else {
        json_object_set_new(o, "metrics", json_null());
    }
    if (x->err.id) {
        const struct top_err *e = &x->err;
        json_object_set_new(o, "last_error",
                            json_pack("{s:s, s:s, s:o, s:s, s:s, s:s}", "at", e->at, "outcome",
                                      e->outcome, "code",
                                      e->code ? json_integer(e->code) : json_null(), "enhanced",
                                      e->enhanced, "text", e->text, "reason", e->reason));
    } else {
        json_object_set_new(o, "last_error", json_null());
    }
    buf_t st = BUF_INIT;
    top_state(t, x, &st, 0);
    json_object_set_new(o, "state", json_string(buf_cstr(&st)));
    buf_free(&st);
    return o;
}

json_t *top_view_json(struct top *t)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "at", json_string(t->now));
    json_object_set_new(doc, "query_ms", top_round(t->query_ms, 0.1));
    json_t *a = json_array();
    for (size_t i = 0; i < t->ncamps; i++) {
        json_array_append_new(a, json_pack("{s:I, s:s, s:s}", "id", (json_int_t)t->camps[i].id,
                                           "name", t->camps[i].name, "status", t->camps[i].status));
    }
    json_object_set_new(doc, "campaigns", a);
    long long left = t->total - t->final;
    double per_s = (double)t->final_1m / TOP_RATE_S;
    json_object_set_new(
        doc, "recipients",
        json_pack("{s:I, s:I, s:o, s:I, s:O}", "total", (json_int_t)t->total, "final",
                  (json_int_t)t->final, "final_pct",
                  t->total ? top_round(100.0 * (double)t->final / (double)t->total, 0.01)
                           : json_real(0),
                  "open", (json_int_t)left, "states", t->states ? t->states : json_object()));
    json_object_set_new(doc, "rate", top_round((double)t->answered_1m / TOP_RATE_S, 0.01));
    json_object_set_new(doc, "attempts_1m", json_integer(t->answered_1m));
    json_object_set_new(doc, "final_1m", json_integer(t->final_1m));
    json_object_set_new(doc, "eta_s",
                        left == 0   ? json_integer(0)
                        : per_s > 0 ? json_integer((json_int_t)((double)left / per_s + 0.5))
                                    : json_null());
    a = json_array();
    for (size_t i = 0; i < t->nnodes; i++) {
        const struct top_node *n = &t->nodes[i];
        json_array_append_new(a,
                              json_pack("{s:s, s:o, s:s, s:i, s:o}", "name", n->name, "campaign_id",
                                        n->campaign_id ? json_integer(n->campaign_id) : json_null(),
                                        "host", n->host, "pid", n->pid, "heartbeat_age_s",
                                        top_round(n->heartbeat_age_s, 0.1)));
    }
    json_object_set_new(doc, "nodes", a);
    size_t n;
    struct top_isp **rows = top_rows(t, &n);
    a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(a, top_json_isp(t, rows[i]));
    }
    free(rows);
    json_object_set_new(doc, "isps", a);
    a = json_array();
    for (size_t i = 0; i < t->nproblems; i++) {
        json_array_append_new(a, json_string(t->problems[i]));
    }
    json_object_set_new(doc, "problems", a);
    return doc;
}
