/*
 * report - `ringmail report`: what happened to a campaign, from its rows
 *
 * Recipients by state (expired included); per ISP the attempts and their
 * outcomes; reply codes (with enhanced status codes); deferrals and
 * rejections/failures/expiries by ISP and reason with the last reply of
 * each; TLS versions, ciphers and posture over the attempts that reached a
 * server; the TLS resumption rate (a share of TLS handshakes: the first
 * attempt of each connection, delivery.conn_first; over attempts, said so,
 * for rows written before connections were recorded); attempts per minute
 * by outcome, every minute from the first attempt to the last (an empty
 * minute is a row of zeros, so a stall shows); queue age (from the
 * campaign's first attempt to each recipient's final attempt, or to now
 * while it waits); what came back: bounces by category, synchronous (final
 * rejections and expiries of delivery rows) and asynchronous (bounce
 * reports), feedback events by kind (unsubscribes by source, auto-replies,
 * unmatched), the complaint rate per ISP (complaints over accepted
 * deliveries), the time from delivery to unsubscribe (median, p90, max) and
 * the ISPs held by the complaint guard. All read in one snapshot
 * (REPEATABLE READ), so the sections agree with each other while the
 * campaign is running.
 *
 * Formats: text (tables for people), json (one object, with the charts'
 * data per ISP and minute besides), csv (the text's tables as
 * section,key,metric,value rows), html (one self-contained page: charts
 * drawn with the vendored uPlot and the text's tables, no network).
 * --out FILE writes there (created 0600: replies name recipients) instead
 * of standard output.
 *
 * Diagnostics: exit 2 for bad options, 1 for a database error, a campaign
 * that does not exist or an output file that cannot be written.
 */
#ifndef RINGMAIL_REPORT_H
#define RINGMAIL_REPORT_H

/* `ringmail report --db URL --campaign ID [--format text|csv|json|html] [--out FILE]` */
int report_main(int argc, char **argv);

#endif
