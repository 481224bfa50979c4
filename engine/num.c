/*
 * num - the one number parser. See num.h.
 */
#include "engine/num.h"

#include <errno.h>
#include <stdlib.h>

int num_parse_ulong(const char *text, unsigned long min, unsigned long max, unsigned long *out)
{
    if (!text || *text < '0' || *text > '9') {
        return -1; /* strtoul would take a sign or leading space */
    }
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || *end || v < min || v > max) {
        return -1;
    }
    *out = v;
    return 0;
}
