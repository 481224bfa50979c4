/*
 * main - the `ringmail` command line: dispatch to a subcommand.
 *
 *   ringmail send ...        deliver to a recipient list, or a campaign (--db), through
 *                            the pool (MX, ISPs, throttles, retries)
 *   ringmail db ...          create or upgrade the PostgreSQL schema
 *   ringmail campaign ...    create or list campaigns
 *   ringmail recipients ...  import a campaign's recipients (CSV or SQL)
 *   ringmail report ...      a campaign's outcomes, TLS and throughput
 *   ringmail blast ...       deliver generated messages to one server (load, tests)
 *   ringmail inbound ...     the return path's SMTP server: bounces, complaints,
 *                            unsubscribes recorded in PostgreSQL
 *   ringmail sink ...        the TLS SMTP sink for tests and benchmarks
 *   ringmail resolve ...     MX order, addresses and ISP of domains
 *   ringmail check-dns ...   a From domain's DKIM, SPF and DMARC records and alignment
 *   ringmail top ...         the live view per ISP of the campaigns being sent
 *   ringmail tlsrpt ...      RFC 8460 TLS reports of a day, written or sent
 *   ringmail version         print the version
 *
 * RINGMAIL_TRACE=1 in the environment turns engine/trace.h's state
 * transition lines on for any command (send and blast: also --verbose).
 *
 * Diagnostics: unknown subcommands print the usage and exit 2.
 */
#include <stdio.h>
#include <string.h>

#include "bench/sink.h" /* sink_main: the one thing of bench/ campaign code uses */
#include "campaign/blast.h"
#include "campaign/campaign_cmd.h"
#include "campaign/check_dns.h"
#include "campaign/db.h"
#include "campaign/feedback_cmd.h"
#include "campaign/import.h"
#include "campaign/inbound.h"
#include "campaign/report.h"
#include "campaign/resolve.h"
#include "campaign/send.h"
#include "campaign/tlsrpt.h"
#include "campaign/top.h"
#include "engine/trace.h"

static void main_usage(FILE *f)
{
    fprintf(f,
            "usage: ringmail COMMAND [OPTIONS]\n"
            "\n"
            "commands:\n"
            "  send    deliver to a recipient list: MX routing, per-ISP throttles, retries\n"
            "          (ringmail send --help)\n"
            "  db      create or upgrade the PostgreSQL schema (ringmail db migrate --db URL)\n"
            "  campaign   create, show, test, pause, resume or cancel campaigns (ringmail campaign "
            "--help)\n"
            "  recipients import or list a campaign's recipients (ringmail recipients --help)\n"
            "  report  a campaign's outcomes, TLS and throughput (ringmail report --help)\n"
            "  blast   deliver generated messages to one SMTP server (ringmail blast --help)\n"
            "  inbound the return path's SMTP server: bounces, complaints, unsubscribes\n"
            "          recorded in PostgreSQL (ringmail inbound --help)\n"
            "  sink    run the io_uring TLS SMTP sink (ringmail sink --help)\n"
            "  resolve show MX order, addresses and ISP of domains (ringmail resolve --help)\n"
            "  check-dns a From domain's DKIM, SPF, DMARC and alignment (check-dns --help)\n"
            "  top     the live view per ISP of the campaigns being sent (ringmail top --help)\n"
            "  tlsrpt  RFC 8460 TLS reports of a day, written or sent (ringmail tlsrpt --help)\n"
            "  feedback record bounces, complaints, unsubscribes from files or a pipe\n"
            "          (ringmail feedback --help)\n"
            "  version print the version\n");
}

int main(int argc, char **argv)
{
    trace_init(); /* RINGMAIL_TRACE=1: state transitions on stderr, any command */
    if (argc < 2) {
        main_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "blast") == 0) {
        return blast_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "db") == 0) {
        return db_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "campaign") == 0) {
        return campaign_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "recipients") == 0) {
        return import_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "report") == 0) {
        return report_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "send") == 0) {
        return send_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "inbound") == 0) {
        return inbound_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "sink") == 0) {
        return sink_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "resolve") == 0) {
        return resolve_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "check-dns") == 0) {
        return check_dns_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "top") == 0) {
        return top_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "tlsrpt") == 0) {
        return tlsrpt_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "feedback") == 0) {
        return feedback_main(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("ringmail 0.1.0\n");
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        main_usage(stdout);
        return 0;
    }
    fprintf(stderr, "ringmail: unknown command '%s'\n", cmd);
    main_usage(stderr);
    return 2;
}
