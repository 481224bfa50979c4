/*
 * campaign_int - what the `ringmail campaign` subcommand files share
 * (campaign_cmd.c dispatches; campaign_create.c creates).
 */
#ifndef RINGMAIL_CAMPAIGN_INT_H
#define RINGMAIL_CAMPAIGN_INT_H

#include "campaign/campaign_cmd.h"

/* `ringmail campaign create ...` (argv[0] is "create"); the exit status */
int campaign_create(int argc, char **argv);

#include <stdio.h>

/* create's usage (also what `ringmail campaign --help` prints) */
void campaign_create_usage(FILE *f);

#endif
