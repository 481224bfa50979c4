/*
 * config_int - what config.c (the file, [global], [isp], [route]) and
 * config_feedback.c (the feedback loop's [feedback] and [bounce]) share.
 * Private to the config loader: pool/config.h is its public face.
 */
#ifndef RINGMAIL_CONFIG_INT_H
#define RINGMAIL_CONFIG_INT_H

#include <stdio.h>

#include "pool/config.h"

struct config_seen { /* a section or a setting, and where it was first given */
    char *name;      /* owned */
    int line;
};

/* One config_load: the config being built and where the reader is. */
struct config_parse {
    struct config *c;
    char err[256];
    int err_line;           /* the line of err; 0: none yet */
    unsigned char *tls_set; /* per ISP: tls given explicitly; owned */
    FILE *f;                /* borrowed */
    char *line;             /* owned: getline's buffer */
    size_t line_cap;
    int lineno;                   /* the line inih is handling */
    struct config_seen *sections; /* owned: every [section] so far */
    size_t nsections;
    struct config_seen *keys; /* owned: the settings of the current section */
    size_t nkeys;
    char *key_section; /* owned: the section keys belong to */
};

/* config_fail - the first error only ("LINE: " is added later); 0 */
int config_fail(struct config_parse *p, const char *fmt, const char *a, const char *b);

/* config_bounce_entry - one setting of [bounce] */
int config_bounce_entry(struct config_parse *p, const char *name, const char *v);
/* config_feedback_defaults - [feedback]'s defaults, before the file is read */
void config_feedback_defaults(struct config_feedback *f);
/* config_feedback_entry - one setting of [feedback] (the secret is read here) */
int config_feedback_entry(struct config_parse *p, const char *name, const char *v);
/* config_feedback_finish - after the file: a [feedback] section is whole */
void config_feedback_finish(struct config_parse *p);

#endif
