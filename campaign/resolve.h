/*
 * resolve - `ringmail resolve`: how ringmail sees a domain (MX order,
 * addresses, permanent or temporary failure, ISP), through the same
 * resolver delivery uses.
 */
#ifndef RINGMAIL_RESOLVE_H
#define RINGMAIL_RESOLVE_H

int resolve_main(int argc, char **argv);

#endif
