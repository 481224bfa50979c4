/*
 * retry - when a temporarily failed recipient is tried again. See retry.h.
 */
#include "pool/retry.h"

#include <stdio.h>
#include <string.h>

#include "pool/throttle.h"

void retry_schedule_init(struct retry_schedule *s)
{
    static const uint64_t minute = 60000;
    static const uint64_t defaults[] = {5, 15, 30, 60, 120, 240};
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i++) {
        s->delays_ms[s->n++] = defaults[i] * minute;
    }
    s->max_age_ms = 3 * 24 * 60 * minute;
}

int retry_schedule_parse(struct retry_schedule *s, const char *delays, const char *max_age,
                         char *err, size_t errlen)
{
    struct retry_schedule t = *s;
    char copy[512], *save = NULL;
    if (snprintf(copy, sizeof copy, "%s", delays) >= (int)sizeof copy) {
        snprintf(err, errlen, "retry schedule too long");
        return -1;
    }
    t.n = 0;
    for (char *tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (t.n == RETRY_MAX_STEPS) {
            snprintf(err, errlen, "retry schedule has more than %d steps", RETRY_MAX_STEPS);
            return -1;
        }
        if (throttle_duration_parse(tok, &t.delays_ms[t.n], err, errlen) < 0) {
            return -1;
        }
        if (t.delays_ms[t.n] == 0) {
            snprintf(err, errlen, "retry delay must be more than zero ('%s')", tok);
            return -1;
        }
        t.n++;
    }
    if (t.n == 0) {
        snprintf(err, errlen, "empty retry schedule");
        return -1;
    }
    if (max_age && throttle_duration_parse(max_age, &t.max_age_ms, err, errlen) < 0) {
        return -1;
    }
    *s = t;
    return 0;
}

uint64_t retry_next_delay_ms(const struct retry_schedule *s, unsigned attempts, uint64_t first_ms,
                             uint64_t now_ms)
{
    size_t i = attempts == 0 ? 0 : attempts - 1;
    uint64_t delay = s->delays_ms[i < s->n ? i : s->n - 1];
    uint64_t age = now_ms > first_ms ? now_ms - first_ms : 0;
    if (age + delay > s->max_age_ms) {
        return UINT64_MAX;
    }
    return delay;
}
