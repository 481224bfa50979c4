/*
 * fuzz_smtp_reply - the reply parser and EHLO capabilities on arbitrary
 * server bytes, fed in two pieces split at the first input byte's value.
 */
#include <stddef.h>
#include <stdint.h>

#include "engine/smtp_ehlo.h"
#include "engine/smtp_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_reply_parser p;
    struct smtp_reply r;
    struct smtp_caps caps;
    smtp_reply_parser_init(&p);
    smtp_reply_init(&r);
    size_t split = size ? data[0] % (size + 1) : 0;
    const char *s = (const char *)data;
    size_t pieces[2][2] = {{0, split}, {split, size}};
    for (int i = 0; i < 2; i++) {
        size_t off = pieces[i][0];
        while (off < pieces[i][1]) {
            size_t used = 0;
            const char *err;
            enum smtp_reply_status st =
                smtp_reply_parse(&p, s + off, pieces[i][1] - off, &used, &r, &err);
            if (st == SMTP_REPLY_ERROR) {
                goto out;
            }
            off += used;
            if (st == SMTP_REPLY_MORE) {
                break;
            }
            smtp_ehlo_parse(&r, &caps);
        }
    }
out:
    smtp_reply_free(&r);
    smtp_reply_parser_free(&p);
    return 0;
}
