/*
 * trace - state transitions on stderr. See trace.h.
 */
#include "engine/trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int trace_enabled;
static unsigned long trace_ids; /* atomic */

void trace_init(void)
{
    const char *v = getenv("RINGMAIL_TRACE");
    if (v && *v && strcmp(v, "0") != 0) {
        trace_enabled = 1;
    }
}

void trace_enable(void)
{
    trace_enabled = 1;
}

unsigned long trace_next_id(void)
{
    return __atomic_add_fetch(&trace_ids, 1, __ATOMIC_RELAXED);
}

void trace_state(const char *machine, unsigned long id, const char *from, const char *to,
                 const char *why)
{
    if (!trace_enabled) {
        return;
    }
    /* One fprintf: lines from several threads do not interleave. */
    fprintf(stderr, "ringmail trace: conn %lu %s %s -> %s%s%s%s\n", id, machine, from, to,
            why ? " (" : "", why ? why : "", why ? ")" : "");
}
