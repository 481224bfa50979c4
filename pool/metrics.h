/*
 * metrics - a Prometheus text-exposition endpoint on a ringmail loop
 *
 * A tiny HTTP/1.0 server for scrapes. It listens on one address, accepts
 * through a multishot accept, reads one request per connection (the
 * header block only, at most 8 KiB), answers it and closes. GET /metrics
 * and GET / get 200 with whatever the render callback wrote, any other
 * path 404, any other method 405, a header block over 8 KiB 431 and a
 * request line that is not HTTP 400. A client that sends nothing for 5 s
 * is dropped. Everything runs on the loop's thread through the ring:
 * nothing blocks and no thread is started.
 *
 * metrics_line and metrics_help format exposition lines for the render
 * callback; label values must already be escaped by the caller.
 *
 * Diagnostics: metrics_new returns NULL with a reason in err (bad address,
 * socket, bind or listen failure). An accept error is one line on stderr
 * (level=error event=accept); peers get HTTP status codes, never a log line.
 */
#ifndef RINGMAIL_METRICS_H
#define RINGMAIL_METRICS_H

#include <stddef.h>

#include "engine/buf.h"
#include "engine/loop.h"

struct metrics;

/* Fill out with the exposition text (called once per scrape, on the loop thread).
 * It must not call metrics_free. */
typedef void (*metrics_render_cb)(void *user, buf_t *out);

/*
 * Listen on "ADDR:PORT" (port 0 = any; metrics_port() tells which). NULL and
 * a reason in err on error. A host name is resolved with getaddrinfo, so call
 * this at start-up, not from a running loop's callbacks.
 */
struct metrics *metrics_new(struct loop *loop, const char *listen, metrics_render_cb render,
                            void *user, char *err, size_t errlen);
unsigned metrics_port(const struct metrics *m);
/* HTTP clients connected now (a gauge for the endpoint itself; tests). */
unsigned metrics_clients(const struct metrics *m);
/* Idle timeout for clients accepted from now on (default 5000 ms). */
void metrics_set_idle_timeout(struct metrics *m, unsigned ms);
/*
 * Stop listening and drop clients; the object frees itself once the kernel
 * returned every operation (the loop must keep running until loop_pending()
 * says so, as with connections). NULL is a no-op.
 */
void metrics_free(struct metrics *m);

/* "name{labels} value\n"; labels may be NULL or "" (e.g. "isp=\"gmail\""). */
void metrics_line(buf_t *out, const char *name, const char *labels, double value);
/* "# HELP name help\n# TYPE name type\n"; type is counter or gauge; help is escaped. */
void metrics_help(buf_t *out, const char *name, const char *type, const char *help);

#endif
