/*
 * clock - the one monotonic clock
 *
 * Every timer, deadline, rate and elapsed figure in ringmail reads
 * CLOCK_MONOTONIC through these: wall-clock steps (NTP, an operator's
 * `date -s`) never move a deadline.
 *
 * Diagnostics: none; clock_gettime(CLOCK_MONOTONIC) cannot fail on Linux.
 */
#ifndef RINGMAIL_CLOCK_H
#define RINGMAIL_CLOCK_H

#include <stdint.h>
#include <time.h>

/* clock_ms - monotonic milliseconds */
static inline uint64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* clock_us - monotonic microseconds */
static inline uint64_t clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* clock_s - monotonic seconds, for elapsed figures in reports */
static inline double clock_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
