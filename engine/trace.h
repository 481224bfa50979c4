/*
 * trace - one line per state transition, for following one session
 *
 * Off by default. `--verbose` on send/blast, or RINGMAIL_TRACE=1 in the
 * environment of any command, turns it on. Each state machine
 * (smtp_client, client_conn, pool_conn) calls trace_state from its one
 * setter, so every transition of a connection is on stderr, tagged with
 * the connection's number:
 *
 *     ringmail trace: conn 17 smtp_client MAIL -> RCPT
 *     ringmail trace: conn 17 client_conn STARTTLS -> HANDSHAKE (250 ready)
 *
 * Never a secret: machines pass state names and short reasons, never
 * AUTH data or message text.
 */
#ifndef RINGMAIL_TRACE_H
#define RINGMAIL_TRACE_H

/* Read by the setters on every transition: a plain int, set once at start. */
extern int trace_enabled;

/* trace_init - on if RINGMAIL_TRACE is set to anything but "" or "0" */
void trace_init(void);
/* trace_enable - on (a command's --verbose) */
void trace_enable(void);
/* trace_next_id - a fresh connection number for the trace lines */
unsigned long trace_next_id(void);
/* trace_state - MACHINE of connection ID went FROM -> TO; WHY may be NULL */
void trace_state(const char *machine, unsigned long id, const char *from, const char *to,
                 const char *why);

#endif
