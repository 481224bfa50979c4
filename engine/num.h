/*
 * num - the one number parser of the command lines and config files
 *
 * num_parse_ulong accepts plain decimal digits only: no sign, no
 * leading space, no suffix, nothing after the number, no overflow. The
 * caller words the error, because only it knows which option was bad.
 *
 * Diagnostics: -1 on anything but a number in [min, max]; *out untouched.
 */
#ifndef RINGMAIL_NUM_H
#define RINGMAIL_NUM_H

/* num_parse_ulong - TEXT as a decimal in [MIN, MAX] into *OUT; 0 or -1 */
int num_parse_ulong(const char *text, unsigned long min, unsigned long max, unsigned long *out);

#endif
