/*
 * sink - `ringmail sink`, a fast io_uring TLS SMTP sink for tests and benchmarks
 *
 * One worker thread per core, each with its own io_uring loop and its own
 * SO_REUSEPORT listening socket per address; the SMTP dialogue is
 * engine/smtp_server, TLS is engine/tls. Recipients can be deferred,
 * rejected and transactions dropped by percentage (a PRNG seeded by
 * --seed) or by local part (tempfail@, permfail@), with the replies
 * --defer-reply and --reject-reply set (a 421 also closes the connection,
 * as a real server does); fault modes emulate broken servers. Counters and
 * per-recipient delivery counts are kept per thread and written as JSON
 * (--stats FILE) on SIGTERM/SIGINT, and periodically with
 * --stats-interval-ms, with the most messages on one session, the wall
 * clock of the first and last accepted message (a delivered rate), and per
 * client address its sessions, their peak at once and its messages.
 * --profile NAME (gmail, outlook, yahoo, qq, 163, legacy) or --profile-file
 * (INI or JSON) behave like a provider: STARTTLS required or not offered,
 * its temporary and permanent replies for tempfail@/permfail@ and the
 * --defer-pct/--reject-pct shares ("{ip}" in a reply is the client's
 * address), and defaults for the percentages, latency and connection limit
 * that the options given still override.
 * `ringmail sink --help` lists the options.
 *
 * Diagnostics: setup errors (bad option, unknown profile, bad profile
 * file, certificate, bind) on stderr with exit status 2 (usage) or 1; one
 * line per connection error on stderr with --verbose; "sink: listening on
 * ADDR:PORT" on stdout once every worker accepts.
 */
#ifndef RINGMAIL_SINK_H
#define RINGMAIL_SINK_H

/* argv[0] is "sink". Returns the process exit status. */
int sink_main(int argc, char **argv);

#endif
