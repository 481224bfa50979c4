/*
 * inbound_http - `ringmail inbound --http ADDR:PORT`: one-click unsubscribe
 * (RFC 8058) and a health check, over libmicrohttpd
 *
 *     POST /u/TOKEN  body List-Unsubscribe=One-Click
 *                    -> the recipient is suppressed (committed), then 200
 *     GET  /u/TOKEN  -> a small page with one button that POSTs; never
 *                    unsubscribes on GET (link scanners prefetch)
 *     bad or forged TOKEN -> 404 with no detail
 *     GET  /healthz  -> 200 "ok" when the database answers, else 503
 *     database away  -> 503 (the recipient's click can be tried again)
 *
 * The server runs on a thread of libmicrohttpd's own with its own
 * PostgreSQL connection (campaign/feedback_store.h); the caller's loop is
 * never blocked by it.
 *
 * Diagnostics: inbound_http_start: "--http ADDR:PORT: ..." (a bad
 * address, or the port cannot be bound), and the store's messages.
 */
#ifndef RINGMAIL_INBOUND_HTTP_H
#define RINGMAIL_INBOUND_HTTP_H

#include <stddef.h>

struct config;
struct inbound_http;

/* inbound_http_start - listen on addr ("127.0.0.1:8080", "[::1]:8080")
 * and serve; cfg must have [feedback] (it is read, not kept: what is
 * needed is copied). NULL + err on failure. */
struct inbound_http *inbound_http_start(const char *addr, const char *conninfo,
                                        const struct config *cfg, char *err, size_t errlen);
/* inbound_http_stop - stop serving (requests in progress finish) and free */
void inbound_http_stop(struct inbound_http *h);

/* inbound_http_token_of - the token a request path names, as the server
 * reads it: path must be the path of unsubscribe_url ("https://HOST/u",
 * "" for the default "/u") plus "/" and one segment of letters, digits and
 * '-'; that segment goes into token as "K-TOKEN" ("u-" added when it has
 * no kind). 0 when it is a token's path (its MAC is not checked here),
 * -1 when not (the server answers 404). */
int inbound_http_token_of(const char *unsubscribe_url, const char *path, char *token,
                          size_t tokenlen);

#endif
