/*
 * import - `ringmail recipients import`: a campaign's recipients from a CSV
 * file or from an SQL query, checked and inserted inside PostgreSQL
 *
 * Both forms end in one INSERT ... SELECT that normalizes each address
 * (trimmed, domain lower-cased), marks undeliverable ones `invalid` with
 * the reason ringmail send would give, marks those on the suppression list
 * `suppressed`, and keeps the first of several rows with one address (in
 * the file, or already in the campaign). The CSV file is streamed with
 * COPY into a temporary table first; nothing is parsed row by row here.
 *
 * Diagnostics: `ringmail recipients import` exits 2 on bad options or an
 * unreadable file, 1 on a database error (the server's message, with the
 * CSV line number when COPY names one) or a campaign that does not exist.
 */
#ifndef RINGMAIL_IMPORT_H
#define RINGMAIL_IMPORT_H

#include <stddef.h>

#include "campaign/pq.h"

/* Check one address with the import's rules (the server evaluates them):
 * 0 when deliverable, 1 with the reason in reason, -1 with a database
 * error in reason. */
int import_address_problem(PGconn *c, const char *address, char *reason, size_t reasonlen);

/* `ringmail recipients import --db URL --campaign ID (--csv FILE | --sql QUERY)` */
int import_main(int argc, char **argv);

#endif
