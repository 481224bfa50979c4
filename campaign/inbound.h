/*
 * inbound - `ringmail inbound`: the SMTP server that takes the bounces,
 * complaints and unsubscribe mails sent to [feedback] return_path, and
 * records them in PostgreSQL before it answers 250. See inbound.c.
 */
#ifndef RINGMAIL_INBOUND_H
#define RINGMAIL_INBOUND_H

/* inbound_main - argv[0] is "inbound"; 0 after a clean stop, 1 on a
 * failure, 2 on a usage error */
int inbound_main(int argc, char **argv);

#endif
