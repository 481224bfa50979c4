/*
 * smtp_data - a message as it travels after DATA (RFC 5321 4.5.2, 2.3.8)
 *
 * Every line ending becomes CRLF (a bare LF, a bare CR, or CRLF in the
 * input: the output never carries a bare CR or LF, which closes the SMTP
 * smuggling hole), a line starting with '.' gets one more '.', a missing
 * final line ending is added, and the ".\r\n" terminator follows. A line
 * longer than 998 octets (without its CRLF) is refused before anything is
 * sent. Bytes >= 0x80 are reported so the caller can ask for BODY=8BITMIME
 * or refuse the message when the server lacks it.
 */
#ifndef RINGMAIL_SMTP_DATA_H
#define RINGMAIL_SMTP_DATA_H

#include <stddef.h>

#include "buf.h"

#define SMTP_LINE_MAX 998

struct smtp_data_info {
    int has_8bit;        /* some byte >= 0x80 */
    size_t longest;      /* longest line in octets, without line ending */
    size_t lines;        /* number of lines */
    int as_is;           /* already the wire form: CRLF endings only, the last line
                            ended, no line starting with '.' (what a renderer makes) */
    const char *scanned; /* the message scanned, and its length: smtp_data_write */
    size_t scanned_len;  /* sends it as it is only when handed the same one */
};

/*
 * Append the transparent form of msg[0..len) plus ".\r\n" to out.
 * Returns 0, or -1 with *err = "line longer than 998 octets" (out is then
 * left as it was on entry). info may be NULL.
 */
int smtp_data_encode(buf_t *out, const char *msg, size_t len, struct smtp_data_info *info,
                     const char **err);

/* Encode a message already scanned by smtp_data_scan (longest line checked
 * by the caller): the hot path scans once, not twice, and a message the scan
 * found as_is (the same pointer and length, unchanged since) is copied in
 * one piece instead of line by line. */
void smtp_data_write(buf_t *out, const char *msg, size_t len, const struct smtp_data_info *scanned);

/* Inspect without encoding (for SIZE= and 8BITMIME decisions). */
void smtp_data_scan(const char *msg, size_t len, struct smtp_data_info *info);

#endif
