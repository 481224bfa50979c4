/*
 * blast - `ringmail blast`: deliver N generated messages to one server
 *
 * The TLS-capable answer to Postfix's smtp-source: W worker threads, each
 * with its own ring, session cache and share of the connections, deliver
 * messages to user<i>@<domain> and print a summary (or one JSON object).
 */
#ifndef RINGMAIL_BLAST_H
#define RINGMAIL_BLAST_H

int blast_main(int argc, char **argv);

#endif
