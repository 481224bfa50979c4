/*
 * import - `ringmail recipients import`: a campaign's recipients from a CSV
 * file or from an SQL query, checked and inserted inside PostgreSQL; and
 * `ringmail recipients list`
 *
 * Both forms end in one INSERT ... SELECT that normalizes each address
 * (trimmed, domain lower-cased), marks undeliverable ones `invalid` with
 * the reason ringmail send would give, marks those on the suppression list
 * `suppressed`, and keeps the first of several rows with one address (in
 * the file, or already in the campaign). The CSV file is parsed here
 * first (RFC 4180; --delimiter, --encoding through iconv) and its good
 * rows streamed with COPY into a temporary table; a bad row is named by
 * its line and column ("line 17: column 'city': unterminated quoted
 * field") and either stops the import with nothing stored or, with
 * --skip-bad-rows FILE, is written to FILE with its reason. Merge fields
 * the templates use without a default and the data does not provide are
 * warned about. On a terminal a progress line shows rows/s, % and ETA.
 *
 * Diagnostics: `ringmail recipients import` prints "read N rows: imported
 * Q (queued), invalid I, suppressed S, duplicates D, skipped B" and exits
 * 0, or 3 when bad rows were skipped; 2 on bad options, an unreadable file
 * or a bad row; 1 on a database error or a campaign that does not exist.
 */
#ifndef RINGMAIL_IMPORT_H
#define RINGMAIL_IMPORT_H

#include <stddef.h>

#include "campaign/pq.h"

/* Check one address with the import's rules (the server evaluates them):
 * 0 when deliverable, 1 with the reason in reason, -1 with a database
 * error in reason. */
int import_address_problem(PGconn *c, const char *address, char *reason, size_t reasonlen);

/* `ringmail recipients import|list ...` (argv[0] is "recipients") */
int import_main(int argc, char **argv);

/* `ringmail recipients list --db URL --campaign ID [--state STATE] [--limit N]`
 * (argv[0] is "list"): one line per recipient; exit 2 on bad options or an
 * unknown state, 1 on a database error or no such campaign. */
int recipients_list_main(int argc, char **argv);

#endif
