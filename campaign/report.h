/*
 * report - `ringmail report`: what happened to a campaign, from its rows
 *
 * Recipients by state; per ISP the attempts and their outcomes; reply
 * codes (with enhanced status codes); TLS versions and ciphers over the
 * attempts that reached a server; the TLS resumption rate; accepted
 * messages per minute; what came back: bounces by category, synchronous
 * (final rejections and expiries of delivery rows) and asynchronous (bounce
 * reports), feedback events by kind (unsubscribes by source, auto-replies,
 * unmatched), the complaint rate per ISP (complaints over accepted
 * deliveries), the time from delivery to unsubscribe (median, p90, max) and
 * the ISPs held by the complaint guard. All read in one snapshot
 * (REPEATABLE READ), so the sections agree with each other while the
 * campaign is running.
 *
 * Formats: text (tables for people), json (one object), csv (one table of
 * section,key,metric,value rows).
 *
 * Diagnostics: exit 2 for bad options, 1 for a database error or a
 * campaign that does not exist.
 */
#ifndef RINGMAIL_REPORT_H
#define RINGMAIL_REPORT_H

/* `ringmail report --db URL --campaign ID [--format text|csv|json]` */
int report_main(int argc, char **argv);

#endif
