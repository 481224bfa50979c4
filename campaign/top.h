/*
 * top - `ringmail top`: the operator's live view of a campaign per ISP
 *
 *   ringmail top --db URL [--campaign ID] [--config FILE] [--metrics HOST:PORT ...]
 *                [--interval 2s] [--once] [--sort queued|rate|deferrals]
 *                [--format text|json]
 *
 * One row per ISP, like PowerMTA's `pmta show topdomains` or KumoMTA's
 * `kcli top`: recipients queued (due, or waiting for their retry time) and
 * in flight (claimed), the attempt rate of the last minute against the
 * ISP's limit (--config's msg_rate, or a sender's effective limit from its
 * --metrics endpoint), the deferral share of the last 5 minutes, a
 * suspension (ringmail.isp_suspend) or hold (ringmail.isp_hold) with its
 * reason and end, a sender's backoff, the oldest waiting recipient, the
 * last error; above them the campaigns, totals, rate, ETA and live nodes.
 * Everything comes from PostgreSQL (three statements a refresh, one
 * snapshot: campaign/top_db.c) and the senders' /metrics.
 *
 * On a terminal the view is redrawn in place every --interval until q or
 * Ctrl-C (the terminal is put back as it was on every way out, SIGTERM,
 * SIGHUP and Ctrl-Z included); with --once, --format json or when stdout
 * is not a terminal one snapshot is printed.
 *
 * Diagnostics: bad options exit 2 ("--interval: ..."); a database that
 * cannot be reached or has no current schema (db_connect_current's words)
 * and an unknown campaign ("campaign 12 does not exist (ringmail campaign
 * list)") exit 1; while running, a lost database and a --metrics endpoint
 * that does not answer are lines in the view ("metrics 127.0.0.1:9100:
 * connection refused"), never an exit.
 */
#ifndef RINGMAIL_TOP_H
#define RINGMAIL_TOP_H

/* `ringmail top ...` */
int top_main(int argc, char **argv);

#endif
