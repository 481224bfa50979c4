/*
 * campaign_cmd - `ringmail campaign create`, `list`, `holds` and `resume`
 *
 * create checks its options before anything is stored: the sender is an
 * address by the same rules the import applies to recipients, header
 * values hold no line breaks, at least one body template is given, DKIM
 * options come all together with a PEM private key, and the template
 * files are read whole into the campaign row. It prints the new id alone
 * on stdout, for scripts. list shows every campaign with its recipients
 * counted by state. holds lists the ISPs the complaint guard holds
 * (ringmail.isp_hold), resume lifts one ("campaign 7: isp gmail resumed (it
 * was held since ...: REASON)"), refused with "campaign 7: isp gmail is not
 * held" or "no campaign 7".
 *
 * Diagnostics: one line on stderr; exit 2 for bad options or unreadable
 * files, 1 for a database error.
 */
#ifndef RINGMAIL_CAMPAIGN_CMD_H
#define RINGMAIL_CAMPAIGN_CMD_H

/* The recipient states of the schema, in the order a campaign moves through them. */
#define CAMPAIGN_NSTATES 10
extern const char *const campaign_states[CAMPAIGN_NSTATES];

/* The largest --campaign ID the commands take: 18 digits, a bigint whatever
 * they are (num_parse_ulong's max). */
#define CAMPAIGN_ID_MAX 999999999999999999ul

/* `ringmail campaign create|list|holds|resume ...` */
int campaign_main(int argc, char **argv);

#endif
