/*
 * opt - getopt_long without abbreviations
 *
 * glibc's getopt_long takes any unambiguous prefix of a long option:
 * `--conf` becomes `--config`, `--d` becomes `--db`. For a command that
 * sends mail a mistyped flag must be an error, never a guess. opt_getopt
 * is getopt_long(argc, argv, "", longopts, NULL) that, on its first call
 * of a parse (optind 0 or 1), first checks every `--name` in argv up to
 * a bare `--` against longopts by its whole name, and refuses the first
 * one that is not an option, naming the options it abbreviates.
 *
 * Diagnostics: on an unknown or abbreviated option, one line on stderr,
 * "ringmail: unknown option '--conf' (options are spelled in full: did
 * you mean --config?)", and '?' is returned, as getopt_long does for an
 * option it does not know. opt_no_subcommand words the line for a command
 * whose subcommand is missing or unknown: "ringmail campaign: unknown
 * subcommand 'frob' (one of: create, list)".
 */
#ifndef RINGMAIL_OPT_H
#define RINGMAIL_OPT_H

#include <getopt.h>

/* opt_getopt - getopt_long(ARGC, ARGV, "", LONGOPTS, NULL), whole names only */
int opt_getopt(int argc, char **argv, const struct option *longopts);

/* opt_no_subcommand - say on stderr that CMD needs one of SUBS ("create, list"):
 * ARG is what was given instead, or NULL when nothing was */
void opt_no_subcommand(const char *cmd, const char *arg, const char *subs);

#endif
