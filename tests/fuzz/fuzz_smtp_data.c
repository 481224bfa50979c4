/*
 * fuzz_smtp_data - DATA encoding never emits a bare CR or LF, and the
 * output always ends with the terminator.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/smtp_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    buf_t out = BUF_INIT;
    const char *err;
    if (smtp_data_encode(&out, (const char *)data, size, NULL, &err) == 0) {
        const char *s = buf_data(&out);
        size_t n = buf_len(&out);
        if (n < 3 || memcmp(s + n - 3, ".\r\n", 3) != 0) {
            abort();
        }
        for (size_t i = 0; i < n; i++) {
            if ((s[i] == '\r' && (i + 1 == n || s[i + 1] != '\n')) ||
                (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))) {
                abort();
            }
        }
    }
    buf_free(&out);
    return 0;
}
