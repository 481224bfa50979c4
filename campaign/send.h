/*
 * send - `ringmail send`: deliver to a list of recipients, or a campaign's
 * (--db), through the pool (MX routing, per-ISP throttles, reply rules,
 * retries, suppression list).
 */
#ifndef RINGMAIL_SEND_H
#define RINGMAIL_SEND_H

int send_main(int argc, char **argv);

#endif
