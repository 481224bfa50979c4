/*
 * outfile - output files a run writes (--records, --suppress)
 *
 * Such files hold recipients' addresses and replies: they are created
 * 0600 (the umask may narrow that, never widen it), and a symbolic link at
 * the path is refused instead of followed (O_NOFOLLOW), so a link planted
 * in a shared directory cannot redirect or truncate another file. Paths
 * under /dev/ (/dev/stdout, /dev/fd/N) are opened as they are, never
 * created.
 */
#ifndef RINGMAIL_OUTFILE_H
#define RINGMAIL_OUTFILE_H

#include <stddef.h>
#include <stdio.h>

/* Open path for writing: truncated (append 0) or appended to (append 1),
 * created 0600 if missing. NULL with the reason in err. */
FILE *outfile_open(const char *path, int append, char *err, size_t errlen);

#endif
