/*
 * campaign_cmd - `ringmail campaign create`, `list`, `show`, `pause`,
 * `resume`, `cancel` and `holds`
 *
 * create checks its options before anything is stored: the sender is an
 * address by the same rules the import applies to recipients, header
 * values hold no line breaks, at least one body template is given, DKIM
 * options come all together with a PEM private key, and the template
 * files are read whole into the campaign row. It prints the new id alone
 * on stdout, for scripts. list shows every campaign with its status (done
 * once every recipient is final, see lifecycle.h) and its recipients
 * counted by state. show prints one campaign: its settings (never the
 * DKIM key), status with its time and reason, recipients by state, the
 * ISP holds in force and the live nodes sending it. pause, resume and
 * cancel change the status (a running send obeys within 2 seconds); with
 * --isp NAME, pause and resume hold or lift one ISP (ringmail.isp_hold,
 * the complaint guard's table). holds lists the ISPs held.
 *
 * Diagnostics: one line on stderr; exit 2 for bad options or unreadable
 * files; 1 for a database error, no such campaign ("no campaign 7
 * (ringmail campaign list)") or a change its state does not allow
 * ("campaign 7 is done (...); there is nothing to pause", "campaign 7 is
 * not paused (it is running)", "campaign 7: isp gmail is not held (held:
 * yahoo)").
 */
#ifndef RINGMAIL_CAMPAIGN_CMD_H
#define RINGMAIL_CAMPAIGN_CMD_H

/* The recipient states of the schema, in the order a campaign moves through them. */
#define CAMPAIGN_NSTATES 10
extern const char *const campaign_states[CAMPAIGN_NSTATES];

/* The largest --campaign ID the commands take: 18 digits, a bigint whatever
 * they are (num_parse_ulong's max). */
#define CAMPAIGN_ID_MAX 999999999999999999ul

/* `ringmail campaign create|list|show|pause|resume|cancel|holds ...` */
int campaign_main(int argc, char **argv);

#endif
