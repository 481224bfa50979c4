/*
 * inbound_http - one-click unsubscribe (RFC 8058) and /healthz over
 * libmicrohttpd. See inbound_http.h.
 *
 * NAME
 *     inbound_http_start, inbound_http_stop
 *
 * DESCRIPTION
 *     libmicrohttpd parses HTTP (this file is the only one that includes
 *     microhttpd.h) and runs one polling thread of its own; every callback
 *     below runs on that thread, so the feedback store and the health
 *     connection, each one PostgreSQL connection, are used from one thread
 *     only. Unsubscribes are rare and each is one short transaction; a
 *     database that does not answer blocks the thread at most libpq's
 *     connect_timeout and tcp_user_timeout (campaign/db.c: 10 s).
 *
 *     Routes (PREFIX is the path of [feedback] unsubscribe_url plus "/",
 *     "/u/" for https://HOST/u; "/u/" when unsubscribe_url is not set):
 *       GET|HEAD PREFIX TOKEN  the page with one button that POSTs; the
 *                              token's MAC is checked (404 if forged), the
 *                              database is not touched
 *       POST PREFIX TOKEN      body List-Unsubscribe=One-Click (urlencoded
 *                              or multipart/form-data, parsed by
 *                              libmicrohttpd's post processor, or the bare
 *                              text): feedback_store_unsubscribe, then 200
 *                              once it committed; 404 for a bad token, 503
 *                              on a database error, 400 for another body,
 *                              413 over INBOUND_HTTP_BODY_MAX
 *       GET|HEAD /healthz      200 "ok" when `SELECT 1` answers on a
 *                              connection of its own, else 503
 *       other methods          405 with Allow; other paths 404
 *     A token is checked before anything else (feedback_token_parse, kind
 *     'u'), so a forged one reaches neither the database nor the log's
 *     detail; every 404 says only "Not Found".
 *
 *     Every response carries Cache-Control: no-store, X-Content-Type-Options:
 *     nosniff, Referrer-Policy: no-referrer and a Content-Security-Policy
 *     that allows nothing but inline style and a form posting to itself.
 *
 * DIAGNOSTICS
 *     inbound_http_start: "--http ADDR:PORT: ..." (a bad address, "cannot
 *     bind: Address already in use", "cannot start the HTTP server"),
 *     "--http needs a [feedback] section (its secret checks the tokens)",
 *     and feedback_store_open's. While serving, one line on stderr per
 *     unsubscribe ("ringmail inbound: http: 127.0.0.1 unsubscribed
 *     recipient 12 of campaign 3"), per refused token ("... 127.0.0.1
 *     POST: bad token: forged token (MAC mismatch)"), per database error
 *     ("... unsubscribe: database error, answered 503: ...", "healthz:
 *     database unavailable: ...") and per body cut off ("... POST: a body
 *     over 4096 bytes or not a form: connection closed"); libpq's
 *     multi-line messages are joined into the one line.
 */
#include "campaign/inbound_http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "campaign/db.h"
#include "campaign/feedback.h"
#include "campaign/feedback_store.h"
#include "engine/netaddr.h"
#include "pool/config.h"

#define INBOUND_HTTP_BODY_MAX 4096     /* bytes of a POST body */
#define INBOUND_HTTP_CONNECTIONS 64    /* connections at once */
#define INBOUND_HTTP_TIMEOUT_S 10      /* idle seconds before a connection is closed */
#define INBOUND_HTTP_CONN_MEMORY 16384 /* per connection: the header block must fit */
#define INBOUND_HTTP_PREFIX_MAX 400    /* the path of unsubscribe_url, plus '/' */
#define INBOUND_HTTP_VALUE_MAX 32      /* bytes kept of the List-Unsubscribe value */
#define INBOUND_HTTP_ONE_CLICK "List-Unsubscribe=One-Click"

struct inbound_http {
    struct MHD_Daemon *daemon;         /* owned */
    struct feedback_store *store;      /* owned; used on the daemon's thread only */
    PGconn *health;                    /* owned, may be NULL; the daemon's thread only */
    char *conninfo;                    /* owned: for the health connection */
    uint8_t secret[CONFIG_SECRET_MAX]; /* wiped on stop */
    size_t secret_len;
    char prefix[INBOUND_HTTP_PREFIX_MAX + 2]; /* "/u/" */
};

enum http_route { HTTP_NOWHERE, HTTP_HEALTHZ, HTTP_TOKEN };

/* One request, from its first callback to MHD's "completed" notice. */
struct http_req {
    enum http_route route;
    char token[FEEDBACK_LOCAL_MAX]; /* "u-TOKEN", checked */
    struct feedback_id id;
    struct MHD_PostProcessor *pp;                /* owned; NULL for a body of another type */
    size_t body;                                 /* bytes of body seen */
    char raw[sizeof INBOUND_HTTP_ONE_CLICK + 2]; /* the bare body, when pp is NULL */
    size_t rawlen;
    char value[INBOUND_HTTP_VALUE_MAX + 1]; /* List-Unsubscribe's value in a form */
    size_t valuelen;
    int value_seen;
};

/* ---------------------------------------------------------------- pages */

#define HTTP_CSP                                                                                   \
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "  \
    "base-uri 'none'"

#define HTTP_PAGE_HEAD                                                                             \
    "<!DOCTYPE html>\n"                                                                            \
    "<html lang=\"en\">\n"                                                                         \
    "<head>\n"                                                                                     \
    "<meta charset=\"utf-8\">\n"                                                                   \
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"                   \
    "<meta name=\"robots\" content=\"noindex\">\n"                                                 \
    "<title>%s</title>\n"                                                                          \
    "<style>\n"                                                                                    \
    "body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f5;color:#18181b}\n"           \
    "main{max-width:28rem;margin:4rem auto;padding:2rem;background:#fff;border-radius:8px;"        \
    "box-shadow:0 1px 3px rgba(0,0,0,.15)}\n"                                                      \
    "h1{font-size:1.4rem;margin:0 0 1rem}\n"                                                       \
    "button{font:inherit;font-size:1rem;padding:.6rem 1.4rem;border:0;border-radius:6px;"          \
    "background:#b91c1c;color:#fff;cursor:pointer}\n"                                              \
    "button:focus{outline:3px solid #fca5a5}\n"                                                    \
    "</style>\n"                                                                                   \
    "</head>\n"                                                                                    \
    "<body>\n"                                                                                     \
    "<main>\n"

#define HTTP_PAGE_TAIL                                                                             \
    "</main>\n"                                                                                    \
    "</body>\n"                                                                                    \
    "</html>\n"

/* ---------------------------------------------------------------- routing */

/* http_token_char - base32's letters and digits in either case, and '-'
 * of the optional "u-" */
static int http_token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

/* http_route_of - which route path is; for HTTP_TOKEN the segment after
 * prefix as "K-TOKEN" into token ("u-" added when no kind is there; a
 * kind other than u is refused later, by its name).
 * A segment that is empty, too long, holds another '/' or a character no
 * token has is HTTP_NOWHERE. */
static enum http_route http_route_of(const char *prefix, const char *path,
                                     char token[FEEDBACK_LOCAL_MAX])
{
    if (strcmp(path, "/healthz") == 0) {
        return HTTP_HEALTHZ;
    }
    size_t plen = strlen(prefix);
    if (strncmp(path, prefix, plen) != 0) {
        return HTTP_NOWHERE;
    }
    const char *seg = path + plen;
    size_t n = strlen(seg);
    int has_kind = n >= 2 && seg[1] == '-';
    if (n == 0 || n + (has_kind ? 0 : 2) >= FEEDBACK_LOCAL_MAX) {
        return HTTP_NOWHERE;
    }
    for (size_t i = 0; i < n; i++) {
        if (!http_token_char(seg[i])) {
            return HTTP_NOWHERE;
        }
    }
    snprintf(token, FEEDBACK_LOCAL_MAX, "%s%s", has_kind ? "" : "u-", seg);
    return HTTP_TOKEN;
}

/* http_prefix_of - the path of url ("https://HOST/u" -> "/u/", "https://HOST"
 * -> "/") into out */
static void http_prefix_of(const char *url, char *out, size_t outlen)
{
    const char *p = strstr(url, "://");
    p = p ? strchr(p + 3, '/') : NULL;
    if (!url[0]) {
        p = "/u";
    }
    snprintf(out, outlen, "%s/", p ? p : "");
}

int inbound_http_token_of(const char *unsubscribe_url, const char *path, char *token,
                          size_t tokenlen)
{
    char prefix[INBOUND_HTTP_PREFIX_MAX + 2], t[FEEDBACK_LOCAL_MAX];
    http_prefix_of(unsubscribe_url, prefix, sizeof prefix);
    if (http_route_of(prefix, path, t) != HTTP_TOKEN) {
        return -1;
    }
    snprintf(token, tokenlen, "%s", t);
    return 0;
}

/* ---------------------------------------------------------------- responses */

/* http_log - one line on stderr (libpq's multi-line messages joined) */
__attribute__((format(printf, 1, 2))) static void http_log(const char *fmt, ...)
{
    char line[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    size_t o = 0;
    for (size_t i = 0; line[i]; i++) {
        char c = (unsigned char)line[i] < ' ' ? ' ' : line[i];
        if (c != ' ' || (o > 0 && line[o - 1] != ' ')) {
            line[o++] = c;
        }
    }
    while (o > 0 && line[o - 1] == ' ') {
        o--;
    }
    line[o] = '\0';
    fprintf(stderr, "ringmail inbound: http: %s\n", line);
}

/* http_send - queue status with body (copied) of type, and the headers
 * every response carries; allow, when not NULL, as Allow */
static enum MHD_Result http_send(struct MHD_Connection *c, unsigned status, const char *type,
                                 const char *body, const char *allow)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) {
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "Content-Security-Policy", HTTP_CSP);
    if (allow) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    }
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "60");
    }
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result http_text(struct MHD_Connection *c, unsigned status, const char *body)
{
    return http_send(c, status, "text/plain; charset=utf-8", body, NULL);
}

/* http_attr - s with & < > " ' escaped for an HTML attribute, into out */
static void http_attr(const char *s, char *out, size_t outlen)
{
    size_t o = 0;
    for (; *s && o + 7 < outlen; s++) {
        const char *e = *s == '&'    ? "&amp;"
                        : *s == '<'  ? "&lt;"
                        : *s == '>'  ? "&gt;"
                        : *s == '"'  ? "&quot;"
                        : *s == '\'' ? "&#39;"
                                     : NULL;
        if (e) {
            o += (size_t)snprintf(out + o, outlen - o, "%s", e);
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
}

/* http_page_form - the GET page: one button that POSTs to the same path */
static enum MHD_Result http_page_form(struct MHD_Connection *c, const char *path)
{
    char action[3 * INBOUND_HTTP_PREFIX_MAX + 6 * FEEDBACK_LOCAL_MAX];
    http_attr(path, action, sizeof action);
    char page[4096 + sizeof action];
    snprintf(page, sizeof page,
             HTTP_PAGE_HEAD
             "<h1>Unsubscribe</h1>\n"
             "<p>Stop receiving these emails? Press the button and this address is "
             "removed from the list.</p>\n"
             "<form method=\"post\" action=\"%s\">\n"
             "<input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\n"
             "<button type=\"submit\">Unsubscribe</button>\n"
             "</form>\n" HTTP_PAGE_TAIL,
             "Unsubscribe", action);
    return http_send(c, MHD_HTTP_OK, "text/html; charset=utf-8", page, NULL);
}

/* http_page_done - the answer to the POST */
static enum MHD_Result http_page_done(struct MHD_Connection *c)
{
    char page[4096];
    snprintf(page, sizeof page,
             HTTP_PAGE_HEAD "<h1>You are unsubscribed</h1>\n"
                            "<p>You will not receive these emails any more.</p>\n" HTTP_PAGE_TAIL,
             "Unsubscribed");
    return http_send(c, MHD_HTTP_OK, "text/html; charset=utf-8", page, NULL);
}

/* ---------------------------------------------------------------- handlers */

/* http_client - the peer's address as text ("127.0.0.1", "::1") */
static void http_client(struct MHD_Connection *c, char *out, size_t outlen)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char full[96] = "";
    if (ci && ci->client_addr) {
        netaddr_format(ci->client_addr, full, sizeof full);
    }
    /* "127.0.0.1:5000" / "[::1]:5000" without the port and brackets */
    char *colon = strrchr(full, ':');
    if (colon) {
        *colon = '\0';
    }
    size_t n = strlen(full);
    if (n >= 2 && full[0] == '[' && full[n - 1] == ']') {
        full[n - 1] = '\0';
        memmove(full, full + 1, n - 1);
    }
    snprintf(out, outlen, "%s", full[0] ? full : "unknown");
}

/* http_healthz - 200 when SELECT 1 answers on the health connection (made
 * again after a failure), else 503 */
static enum MHD_Result http_healthz(struct inbound_http *h, struct MHD_Connection *c)
{
    char err[256] = "";
    if (h->health && pq.PQstatus(h->health) != CONNECTION_OK) {
        pq.PQfinish(h->health);
        h->health = NULL;
    }
    if (!h->health) {
        h->health = db_connect(h->conninfo, err, sizeof err);
    }
    if (h->health && db_exec(h->health, "SELECT 1", err, sizeof err) == 0) {
        return http_text(c, MHD_HTTP_OK, "ok\n");
    }
    if (h->health) {
        pq.PQfinish(h->health);
        h->health = NULL;
    }
    http_log("healthz: database unavailable: %s", err);
    return http_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "database unavailable\n");
}

/* http_token_ok - the token's MAC is good and it is an unsubscribe token */
static int http_token_ok(struct inbound_http *h, struct http_req *r, const char *client,
                         const char *method)
{
    char why[128];
    if (feedback_token_parse(h->secret, h->secret_len, r->token, &r->id, why, sizeof why) < 0) {
        http_log("%s %s: bad token: %s", client, method, why);
        return 0;
    }
    if (r->id.kind != FEEDBACK_ID_UNSUBSCRIBE) {
        http_log("%s %s: bad token: not an unsubscribe token", client, method);
        return 0;
    }
    return 1;
}

/* http_form_field - MHD's post processor: keep List-Unsubscribe's value */
static enum MHD_Result http_form_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *filename, const char *type, const char *encoding,
                                       const char *data, uint64_t off, size_t size)
{
    (void)kind, (void)filename, (void)type, (void)encoding;
    struct http_req *r = cls;
    if (strcmp(key, "List-Unsubscribe") != 0) {
        return MHD_YES;
    }
    r->value_seen = 1;
    if (off != r->valuelen || r->valuelen + size > INBOUND_HTTP_VALUE_MAX) {
        r->valuelen = INBOUND_HTTP_VALUE_MAX + 1; /* too long: never One-Click */
        return MHD_YES;
    }
    memcpy(r->value + r->valuelen, data, size);
    r->valuelen += size;
    r->value[r->valuelen] = '\0';
    return MHD_YES;
}

/* http_body - one piece of a POST body; 0, or -1 when over the limit */
static int http_body(struct http_req *r, const char *data, size_t size)
{
    r->body += size;
    if (r->body > INBOUND_HTTP_BODY_MAX) {
        return -1;
    }
    if (r->pp) {
        return MHD_post_process(r->pp, data, size) == MHD_YES ? 0 : -1;
    }
    if (r->rawlen + size < sizeof r->raw) {
        memcpy(r->raw + r->rawlen, data, size);
    }
    r->rawlen += size;
    return 0;
}

/* http_one_click - the body said List-Unsubscribe=One-Click */
static int http_one_click(struct http_req *r)
{
    if (r->pp) {
        return r->value_seen && r->valuelen == strlen("One-Click") &&
               memcmp(r->value, "One-Click", r->valuelen) == 0;
    }
    size_t n = r->rawlen < sizeof r->raw ? r->rawlen : 0;
    while (n > 0 && (r->raw[n - 1] == '\n' || r->raw[n - 1] == '\r')) {
        n--;
    }
    return n == strlen(INBOUND_HTTP_ONE_CLICK) && memcmp(r->raw, INBOUND_HTTP_ONE_CLICK, n) == 0;
}

/* http_unsubscribe - the body is complete: write, then answer */
static enum MHD_Result http_unsubscribe(struct inbound_http *h, struct MHD_Connection *c,
                                        struct http_req *r)
{
    char client[64], err[512] = "";
    http_client(c, client, sizeof client);
    if (!http_one_click(r)) {
        return http_text(c, MHD_HTTP_BAD_REQUEST, "expected List-Unsubscribe=One-Click\n");
    }
    int rc = feedback_store_unsubscribe(h->store, r->token, FEEDBACK_STORE_HTTP, client, err,
                                        sizeof err);
    if (rc > 0) {
        http_log("%s unsubscribed recipient %llu of campaign %llu", client,
                 (unsigned long long)r->id.recipient, (unsigned long long)r->id.campaign);
        return http_page_done(c);
    }
    if (rc == 0) {
        http_log("%s POST: bad token: %s", client, err);
        return http_text(c, MHD_HTTP_NOT_FOUND, "Not Found\n");
    }
    http_log("%s unsubscribe: database error, answered 503: %s", client, err);
    return http_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "try again later\n");
}

/* http_post_start - the first call of a POST to a token: refuse a bad
 * token or a declared length over the limit now, else get ready for the body */
static enum MHD_Result http_post_start(struct inbound_http *h, struct MHD_Connection *c,
                                       struct http_req *r)
{
    char client[64];
    http_client(c, client, sizeof client);
    if (!http_token_ok(h, r, client, "POST")) {
        return http_text(c, MHD_HTTP_NOT_FOUND, "Not Found\n");
    }
    const char *len =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (len && strtoull(len, NULL, 10) > INBOUND_HTTP_BODY_MAX) {
        return http_text(c, MHD_HTTP_CONTENT_TOO_LARGE, "Payload Too Large\n");
    }
    /* NULL for a body that is not a form: then the bare text is compared */
    r->pp = MHD_create_post_processor(c, 1024, http_form_field, r);
    return MHD_YES;
}

/* http_first - the first call of a request: route it; answer now unless a
 * body is to come */
static enum MHD_Result http_first(struct inbound_http *h, struct MHD_Connection *c,
                                  struct http_req *r, const char *url, const char *method)
{
    int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    int post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    r->route = http_route_of(h->prefix, url, r->token);
    switch (r->route) {
    case HTTP_HEALTHZ:
        return get ? http_healthz(h, c)
                   : http_send(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
                               "Method Not Allowed\n", "GET, HEAD");
    case HTTP_TOKEN:
        if (post) {
            return http_post_start(h, c, r);
        }
        if (!get) {
            return http_send(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8",
                             "Method Not Allowed\n", "GET, HEAD, POST");
        }
        char client[64];
        http_client(c, client, sizeof client);
        if (!http_token_ok(h, r, client, method)) {
            return http_text(c, MHD_HTTP_NOT_FOUND, "Not Found\n");
        }
        return http_page_form(c, url);
    case HTTP_NOWHERE:
        break;
    }
    return http_text(c, MHD_HTTP_NOT_FOUND, "Not Found\n");
}

/* http_request - MHD's access handler: called once with the headers, then
 * once per piece of body, then once with the body complete */
static enum MHD_Result http_request(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version, const char *upload,
                                    size_t *upload_size, void **req)
{
    (void)version;
    struct inbound_http *h = cls;
    struct http_req *r = *req;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) {
            return MHD_NO;
        }
        *req = r;
        return http_first(h, c, r, url, method);
    }
    if (*upload_size) {
        /* Over the limit without a Content-Length (chunked): close. */
        if (http_body(r, upload, *upload_size) < 0) {
            char client[64];
            http_client(c, client, sizeof client);
            http_log("%s POST: a body over %d bytes or not a form: connection closed", client,
                     INBOUND_HTTP_BODY_MAX);
            return MHD_NO;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    return http_unsubscribe(h, c, r);
}

/* http_completed - MHD's notice that a request is over: free its state */
static void http_completed(void *cls, struct MHD_Connection *c, void **req,
                           enum MHD_RequestTerminationCode why)
{
    (void)cls, (void)c, (void)why;
    struct http_req *r = *req;
    if (r) {
        if (r->pp) {
            MHD_destroy_post_processor(r->pp);
        }
        free(r);
        *req = NULL;
    }
}

/* http_mhd_log - libmicrohttpd's own messages, one line each */
static void http_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == '\n') {
        line[--n] = '\0';
    }
    http_log("%s", line);
}

/* ---------------------------------------------------------------- start, stop */

/* http_listen - a listening socket on addr; -1 and err on failure */
static int http_listen(const char *addr, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    char why[256];
    if (netaddr_parse(addr, &ss, &sslen, NULL, 0, why, sizeof why) < 0) {
        snprintf(err, errlen, "--http %s: %s", addr, why);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "--http %s: socket: %s", addr, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "--http %s: cannot bind: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

struct inbound_http *inbound_http_start(const char *addr, const char *conninfo,
                                        const struct config *cfg, char *err, size_t errlen)
{
    const struct config_feedback *fb = &cfg->feedback;
    if (!fb->enabled) {
        snprintf(err, errlen, "--http needs a [feedback] section (its secret checks the tokens)");
        return NULL;
    }
    struct inbound_http *h = calloc(1, sizeof *h);
    if (!h || !(h->conninfo = strdup(conninfo))) {
        free(h);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    memcpy(h->secret, fb->secret, fb->secret_len);
    h->secret_len = fb->secret_len;
    http_prefix_of(fb->unsubscribe_url, h->prefix, sizeof h->prefix);
    /* The address first: a typo is told without waiting for the database. */
    int fd = http_listen(addr, err, errlen);
    if (fd < 0) {
        inbound_http_stop(h);
        return NULL;
    }
    h->store = feedback_store_open(conninfo, fb, NULL, err, errlen);
    if (!h->store) {
        close(fd);
        inbound_http_stop(h);
        return NULL;
    }
    /* The logger first: MHD reports options given before it on its own. */
    h->daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, http_request, h,
        MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, h, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)INBOUND_HTTP_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)INBOUND_HTTP_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)INBOUND_HTTP_CONN_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, http_completed, h, MHD_OPTION_END);
    if (!h->daemon) {
        /* fd is not closed here: MHD closes it on some of its failure
         * paths, and closing a descriptor twice may close another's. */
        snprintf(err, errlen, "--http %s: cannot start the HTTP server", addr);
        inbound_http_stop(h);
        return NULL;
    }
    return h;
}

void inbound_http_stop(struct inbound_http *h)
{
    if (!h) {
        return;
    }
    if (h->daemon) {
        MHD_stop_daemon(h->daemon); /* joins its thread: no callback runs after */
    }
    if (h->store) {
        feedback_store_close(h->store);
    }
    if (h->health) {
        pq.PQfinish(h->health);
    }
    explicit_bzero(h->secret, sizeof h->secret);
    free(h->conninfo);
    free(h);
}
