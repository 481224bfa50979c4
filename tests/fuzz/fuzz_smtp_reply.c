/*
 * fuzz_smtp_reply - the reply parser on arbitrary server bytes.
 *
 * The same bytes are fed whole, one byte per read, and in reads of sizes
 * taken from the input; every way must yield the same replies and the
 * same error, and every reply must keep the header's promises (code
 * 200..599, 1..SMTP_REPLY_LINES_MAX lines, text within
 * SMTP_REPLY_TEXT_MAX, an enhanced code of the reply's class). Any
 * difference aborts, so libFuzzer reports it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_reply.h"

static void fuzz_check_reply(const struct smtp_reply *r)
{
    size_t tlen = buf_len(&r->text);
    if (r->code < 200 || r->code > 599 || r->lines < 1 || r->lines > SMTP_REPLY_LINES_MAX ||
        tlen > SMTP_REPLY_TEXT_MAX) {
        abort();
    }
    size_t e = strnlen(r->enhanced, sizeof r->enhanced);
    if (e == sizeof r->enhanced || (e > 0 && (r->enhanced[0] != '0' + r->code / 100 ||
                                              memcmp(r->enhanced, buf_data(&r->text), e) != 0))) {
        abort();
    }
    for (int i = 0; i < r->lines; i++) {
        size_t n = 0;
        const char *s = smtp_reply_line(r, i, &n);
        /* An empty buf's data is a "" literal, a different one in each file: compare n only. */
        if (s && (tlen == 0 ? n != 0
                            : s < buf_data(&r->text) || s + n > buf_data(&r->text) + tlen ||
                                  memchr(s, '\n', n) != NULL)) {
            abort();
        }
        if (!s && tlen < SMTP_REPLY_TEXT_MAX) {
            abort(); /* a line may only be missing when the text was cut */
        }
    }
}

/* Feed data in reads of the sizes step(i) returns; serialise what comes out into o. */
static void fuzz_run(const uint8_t *data, size_t size, const uint8_t *steps, size_t nsteps,
                     buf_t *o)
{
    struct smtp_reply_parser p;
    struct smtp_reply r;
    smtp_reply_parser_init(&p);
    smtp_reply_init(&r);
    size_t at = 0, k = 0;
    const char *err = NULL;
    int failed = 0;
    while (at < size && !failed) {
        size_t chunk = nsteps ? (size_t)steps[k++ % nsteps] + 1 : size - at;
        chunk = chunk < size - at ? chunk : size - at;
        size_t off = 0;
        while (off < chunk) {
            size_t used = 0;
            enum smtp_reply_status st =
                smtp_reply_parse(&p, (const char *)data + at + off, chunk - off, &used, &r, &err);
            if (st == SMTP_REPLY_ERROR) {
                failed = 1;
                break;
            }
            if (used == 0 || used > chunk - off || (st == SMTP_REPLY_MORE && used != chunk - off)) {
                abort();
            }
            off += used;
            if (st == SMTP_REPLY_DONE) {
                fuzz_check_reply(&r);
                buf_appendf(o, "%d %d %s %zu:", r.code, r.lines, r.enhanced, buf_len(&r.text));
                buf_append(o, buf_data(&r.text), buf_len(&r.text));
            }
        }
        at += chunk;
    }
    buf_appendf(o, "|%s|%d", failed ? err : "-", failed ? 0 : smtp_reply_parser_pending(&p));
    smtp_reply_free(&r);
    smtp_reply_parser_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t one[] = {0};
    buf_t whole = BUF_INIT, bytes = BUF_INIT, varied = BUF_INIT;
    fuzz_run(data, size, NULL, 0, &whole);
    fuzz_run(data, size, one, 1, &bytes);
    /* Read sizes from the input's own first bytes: libFuzzer steers them. */
    fuzz_run(data, size, data, size < 8 ? size : 8, &varied);
    if (buf_len(&whole) != buf_len(&bytes) || buf_len(&whole) != buf_len(&varied) ||
        memcmp(buf_data(&whole), buf_data(&bytes), buf_len(&whole)) != 0 ||
        memcmp(buf_data(&whole), buf_data(&varied), buf_len(&whole)) != 0) {
        abort();
    }
    buf_free(&whole);
    buf_free(&bytes);
    buf_free(&varied);
    return 0;
}
