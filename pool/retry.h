/*
 * retry - when a temporarily failed recipient is tried again
 *
 * A schedule is a list of delays ("5m,15m,30m,1h,2h,4h"); attempts past
 * the end repeat the last delay, and a recipient whose first attempt is
 * older than max_age is not retried again (it expires as failed, like
 * Postfix's maximal_queue_lifetime). Defaults: the list above and 3 days.
 */
#ifndef RINGMAIL_RETRY_H
#define RINGMAIL_RETRY_H

#include <stddef.h>
#include <stdint.h>

#define RETRY_MAX_STEPS 32

struct retry_schedule {
    uint64_t delays_ms[RETRY_MAX_STEPS];
    size_t n;
    uint64_t max_age_ms;
};

/* The default schedule. */
void retry_schedule_init(struct retry_schedule *s);
/* "5m,15m,1h" and a max age ("3d"); max_age may be NULL (keep the default).
 * Returns 0, or -1 with a reason in err (s unchanged). */
int retry_schedule_parse(struct retry_schedule *s, const char *delays, const char *max_age,
                         char *err, size_t errlen);
/*
 * After attempt number `attempts` (1 = the first try failed) of a recipient
 * first tried at first_ms, now now_ms: the delay before the next try, or
 * UINT64_MAX when it must not be retried (too old).
 */
uint64_t retry_next_delay_ms(const struct retry_schedule *s, unsigned attempts, uint64_t first_ms,
                             uint64_t now_ms);

#endif
