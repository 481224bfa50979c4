/*
 * fuzz_smtp_data - DATA encoding against a byte-at-a-time reference.
 *
 * For any message: smtp_data_encode must produce exactly what the
 * reference encoder (the RFC 5321 rules, one byte at a time) produces,
 * report the same lines, longest line and 8-bit flag, never emit a bare
 * CR or LF, refuse exactly the messages with a line over 998 octets and
 * then leave the output as it was; scan + write must equal encode, and
 * write must stay memory-safe given the scan of another message. A scan
 * that finds the message as_is (sent in one piece) must be right: the
 * reference's output is then the message itself and ".\r\n"; and the
 * as_is scan of another message must not be trusted.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_data.h"

static void fuzz_reference(const char *in, size_t n, buf_t *out, struct smtp_data_info *info)
{
    size_t cur = 0;
    int bol = 1;
    memset(info, 0, sizeof *info);
    for (size_t i = 0; i < n; i++) {
        info->has_8bit |= (unsigned char)in[i] >= 0x80;
        if (in[i] == '\r' || in[i] == '\n') {
            i += in[i] == '\r' && i + 1 < n && in[i + 1] == '\n';
            buf_append(out, "\r\n", 2);
            info->lines++;
            info->longest = cur > info->longest ? cur : info->longest;
            cur = 0;
            bol = 1;
            continue;
        }
        if (bol && in[i] == '.') {
            buf_append(out, ".", 1);
        }
        buf_append(out, in + i, 1);
        cur++;
        bol = 0;
    }
    if (!bol) {
        buf_append(out, "\r\n", 2);
        info->lines++;
        info->longest = cur > info->longest ? cur : info->longest;
    }
    buf_append(out, ".\r\n", 3);
}

static int fuzz_same(const buf_t *a, const buf_t *b)
{
    return buf_len(a) == buf_len(b) && memcmp(buf_data(a), buf_data(b), buf_len(a)) == 0;
}

static void fuzz_no_bare_cr_lf(const buf_t *b)
{
    const char *s = buf_data(b);
    size_t n = buf_len(b);
    for (size_t i = 0; i < n; i++) {
        if ((s[i] == '\r' && (i + 1 == n || s[i + 1] != '\n')) ||
            (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *msg = (const char *)data;
    buf_t out = BUF_INIT, want = BUF_INIT, two = BUF_INIT;
    struct smtp_data_info info, ref, stale = {0}, clean;
    static const char clean_msg[] = "a\r\nb\r\n";
    const char *err = NULL;
    fuzz_reference(msg, size, &want, &ref);
    buf_append_str(&out, "xxDATA\r\n");
    buf_consume(&out, 2);
    buf_t before = out;
    int rc = smtp_data_encode(&out, msg, size, &info, &err);
    if (info.lines != ref.lines || info.longest != ref.longest || !info.has_8bit != !ref.has_8bit) {
        abort();
    }
    if (rc != 0) {
        if (rc != -1 || ref.longest <= SMTP_LINE_MAX || !err || out.data != before.data ||
            out.off != before.off || out.len != before.len || out.cap != before.cap) {
            abort();
        }
    } else {
        buf_consume(&out, 6);
        if (ref.longest > SMTP_LINE_MAX || !fuzz_same(&out, &want)) {
            abort();
        }
        fuzz_no_bare_cr_lf(&out);
    }
    /* The hot path's two calls, and a write trusting the wrong scan. */
    smtp_data_scan(msg, size, &info);
    if (info.as_is &&
        (buf_len(&want) != size + 3 || (size && memcmp(buf_data(&want), msg, size)))) {
        abort();
    }
    smtp_data_write(&two, msg, size, &info);
    if (!fuzz_same(&two, &want)) {
        abort();
    }
    buf_reset(&two);
    smtp_data_write(&two, msg, size, &stale);
    if (!fuzz_same(&two, &want)) {
        abort();
    }
    smtp_data_scan(clean_msg, sizeof clean_msg - 1, &clean);
    buf_reset(&two);
    smtp_data_write(&two, msg, size, &clean);
    if (!fuzz_same(&two, &want)) {
        abort();
    }
    buf_free(&out);
    buf_free(&want);
    buf_free(&two);
    return 0;
}
