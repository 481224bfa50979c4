/*
 * campaign_int - what the `ringmail campaign` subcommand files share
 * (campaign_cmd.c dispatches; campaign_create.c creates; campaign_test.c
 * sends seeds and writes previews).
 */
#ifndef RINGMAIL_CAMPAIGN_INT_H
#define RINGMAIL_CAMPAIGN_INT_H

#include "campaign/campaign_cmd.h"

/* `ringmail campaign create ...` (argv[0] is "create"); the exit status */
int campaign_create(int argc, char **argv);

/* `ringmail campaign test ID --to ADDR ...` (argv[0] is "test"): the
 * campaign's message to seed addresses; the exit status */
int campaign_test(int argc, char **argv);
/* `ringmail campaign preview ID --to ADDR --out FILE.eml` (argv[0] is "preview") */
int campaign_preview(int argc, char **argv);

#include <stdio.h>

/* create's usage (also what `ringmail campaign --help` prints) */
void campaign_create_usage(FILE *f);

#endif
