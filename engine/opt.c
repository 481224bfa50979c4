/*
 * opt - getopt_long without abbreviations. See opt.h.
 */
#include "engine/opt.h"

#include <stdio.h>
#include <string.h>

static const struct option *opt_find(const struct option *lo, const char *name, size_t n)
{
    for (; lo->name; lo++) {
        if (strlen(lo->name) == n && strncmp(lo->name, name, n) == 0) {
            return lo;
        }
    }
    return NULL;
}

/* 0 when every long option in argv is spelled in full, else -1 (said when SAY:
 * getopt's opterr) */
static int opt_check(int argc, char **argv, const struct option *longopts, int say)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            return 0;
        }
        if (strncmp(a, "--", 2) != 0) {
            continue;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        const struct option *o = opt_find(longopts, name, n);
        if (o) {
            if (o->has_arg == required_argument && !eq) {
                i++; /* its value, whatever it looks like */
            }
            continue;
        }
        char guesses[256] = "";
        size_t used = 0;
        for (const struct option *lo = longopts; lo->name && n > 0; lo++) {
            if (strncmp(lo->name, name, n) == 0 && used + strlen(lo->name) + 8 < sizeof guesses) {
                used += (size_t)snprintf(guesses + used, sizeof guesses - used, "%s--%s",
                                         used ? " or " : "", lo->name);
            }
        }
        if (!say) {
            return -1;
        }
        if (used) {
            fprintf(stderr,
                    "ringmail: unknown option '--%.*s' (options are spelled in full: did you mean "
                    "%s?)\n",
                    (int)n, name, guesses);
        } else {
            fprintf(stderr, "ringmail: unknown option '--%.*s'\n", (int)n, name);
        }
        return -1;
    }
    return 0;
}

int opt_getopt(int argc, char **argv, const struct option *longopts)
{
    if (optind <= 1 && opt_check(argc, argv, longopts, opterr) < 0) {
        optind = argc; /* a caller that loops on '?' still ends */
        return '?';
    }
    return getopt_long(argc, argv, "", longopts, NULL);
}

void opt_no_subcommand(const char *cmd, const char *arg, const char *subs)
{
    if (arg) {
        fprintf(stderr, "ringmail %s: unknown subcommand '%s' (one of: %s)\n", cmd, arg, subs);
    } else {
        fprintf(stderr, "ringmail %s: a subcommand is required (one of: %s)\n", cmd, subs);
    }
}
