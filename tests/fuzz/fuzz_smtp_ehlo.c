/*
 * fuzz_smtp_ehlo - EHLO capabilities from arbitrary reply text.
 *
 * The input becomes the text of a 250 reply directly (not through the
 * reply parser, so texts the parser would never build are tried too),
 * with the first byte choosing how many lines the reply claims. The
 * capabilities found must be known bits only, and describing them, then
 * announcing the description as an EHLO reply, must give them back.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_ehlo.h"

static const unsigned fuzz_all_caps =
    SMTP_CAP_PIPELINING | SMTP_CAP_STARTTLS | SMTP_CAP_8BITMIME | SMTP_CAP_SMTPUTF8 |
    SMTP_CAP_ENHANCEDSTATUSCODES | SMTP_CAP_SIZE | SMTP_CAP_AUTH | SMTP_CAP_CHUNKING | SMTP_CAP_DSN;
static const unsigned fuzz_all_mechs =
    SMTP_AUTH_PLAIN | SMTP_AUTH_LOGIN | SMTP_AUTH_CRAM_MD5 | SMTP_AUTH_XOAUTH2;

/* "PIPELINING SIZE=10 AUTH=PLAIN,LOGIN" -> "mx\nPIPELINING\nSIZE 10\nAUTH PLAIN LOGIN". */
static void fuzz_as_ehlo_text(const char *d, size_t n, struct smtp_reply *r)
{
    buf_reset(&r->text);
    buf_append_str(&r->text, "fuzz.test");
    r->lines = 1;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || d[i] == ' ') {
            buf_append(&r->text, "\n", 1);
            r->lines++;
        }
        if (d[i] != ' ') {
            buf_append(&r->text, d[i] == '=' || d[i] == ',' ? " " : d + i, 1);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_reply r;
    struct smtp_caps caps, again;
    smtp_reply_init(&r);
    r.code = 250;
    r.lines = size ? data[0] % (SMTP_REPLY_LINES_MAX + 1) : 1;
    buf_append(&r.text, data, size);
    smtp_ehlo_parse(&r, &caps);
    if ((caps.flags & ~fuzz_all_caps) || (caps.auth & ~fuzz_all_mechs) ||
        (caps.size_max && !(caps.flags & SMTP_CAP_SIZE)) ||
        (caps.auth && !(caps.flags & SMTP_CAP_AUTH))) {
        abort();
    }
    buf_t d = BUF_INIT;
    smtp_caps_describe(&caps, &d);
    for (size_t i = 0; i < buf_len(&d); i++) {
        char c = buf_data(&d)[i];
        if (c < ' ' || c > '~') {
            abort();
        }
    }
    fuzz_as_ehlo_text(buf_data(&d), buf_len(&d), &r);
    smtp_ehlo_parse(&r, &again);
    if (again.flags != caps.flags || again.auth != caps.auth || again.size_max != caps.size_max) {
        abort();
    }
    r.code = 550; /* not an EHLO success: nothing is learned from it */
    smtp_ehlo_parse(&r, &again);
    if (again.flags || again.auth || again.size_max) {
        abort();
    }
    buf_free(&d);
    smtp_reply_free(&r);
    return 0;
}
