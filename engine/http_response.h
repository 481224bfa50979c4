/*
 * http_response - parse an HTTP/1.1 response from the bytes received so far
 *
 * A pure function (no I/O) so the parsing is unit-tested byte for byte and
 * the client (engine/https.c) only moves bytes. It is called again, from
 * the start, after every read: a response is small (an MTA-STS policy is at
 * most 64 KiB), and re-parsing keeps the parser free of saved state.
 *
 * The peer is distrusted: the header is capped (HTTP_HEAD_MAX), a chunk-size
 * line is capped, the body is capped by max_body before it is stored (a
 * Content-Length over it is refused at once), and a body cut short by the
 * close is an error, never a truncated success. 1xx interim responses are
 * skipped. Framing: Transfer-Encoding chunked, else Content-Length, else
 * up to the close (RFC 9112 6.3); 204 and 304 have no body.
 */
#ifndef RINGMAIL_HTTP_RESPONSE_H
#define RINGMAIL_HTTP_RESPONSE_H

#include <stddef.h>

#include "engine/https.h"

#define HTTP_HEAD_MAX 16384

/*
 * data/len: the whole response received so far; eof: the peer closed.
 * 1: complete, resp's status, content_type, location and body filled (the
 * body replaced); 0: more bytes needed (only when !eof); -1: malformed,
 * oversize or cut short, with why in err.
 */
int http_response_parse(const char *data, size_t len, int eof, size_t max_body,
                        struct https_response *resp, char *err, size_t errlen);

#endif
