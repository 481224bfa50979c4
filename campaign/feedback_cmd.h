/*
 * feedback_cmd - `ringmail feedback ingest` (record messages sent to the
 * return path, from files or stdin: an MTA's pipe transport) and
 * `ringmail feedback parse` (what a message says). See feedback_cmd.c.
 */
#ifndef RINGMAIL_FEEDBACK_CMD_H
#define RINGMAIL_FEEDBACK_CMD_H

/* `ringmail feedback ingest|parse ...`: an exit status (sysexits for ingest) */
int feedback_main(int argc, char **argv);

#endif
