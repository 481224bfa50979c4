/*
 * outfile - output files created 0600, never through a symbolic link. See outfile.h.
 */
#include "campaign/outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

FILE *outfile_open(const char *path, int append, char *err, size_t errlen)
{
    int flags = O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (append ? O_APPEND : O_TRUNC);
    if (strncmp(path, "/dev/", 5) == 0) {
        /* /dev/stdout, /dev/fd/N: links to what exists; nothing is created. */
        flags = O_WRONLY | O_CLOEXEC | (append ? O_APPEND : 0);
    }
    int fd = open(path, flags, 0600);
    if (fd < 0) {
        if (errno == ELOOP) {
            snprintf(err, errlen,
                     "is a symbolic link: refused (output files are never written "
                     "through a link; give the real path)");
        } else {
            snprintf(err, errlen, "%s", strerror(errno));
        }
        return NULL;
    }
    FILE *f = fdopen(fd, append ? "a" : "w");
    if (!f) {
        snprintf(err, errlen, "%s", strerror(errno));
        close(fd);
    }
    return f;
}
