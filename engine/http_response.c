/*
 * http_response - parse an HTTP/1.1 response. See http_response.h.
 */
#include "engine/http_response.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define HTTP_CHUNK_LINE_MAX 1024

/* The framing a header announced. */
struct http_head {
    int status;
    int chunked;
    int has_length;
    uint64_t length;
};

/* http_line - the line at data[off..len) ending in LF: its length without the
 * CR LF into *linelen, the offset after it returned; 0 when incomplete. */
static size_t http_line(const char *data, size_t len, size_t off, size_t *linelen)
{
    const char *lf = memchr(data + off, '\n', len - off);
    if (!lf) {
        return 0;
    }
    size_t n = (size_t)(lf - (data + off));
    *linelen = n > 0 && data[off + n - 1] == '\r' ? n - 1 : n;
    return (size_t)(lf - data) + 1;
}

/* http_copy_value - value (trimmed) into out, truncated to outlen. */
static void http_copy_value(const char *v, size_t n, char *out, size_t outlen)
{
    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) {
        n--;
    }
    if (n >= outlen) {
        n = outlen - 1;
    }
    memcpy(out, v, n);
    out[n] = '\0';
}

static int http_status_line(const char *l, size_t n, struct http_head *h)
{
    if (n < 12 || memcmp(l, "HTTP/1.", 7) != 0 || (l[7] != '0' && l[7] != '1') || l[8] != ' ' ||
        !isdigit((unsigned char)l[9]) || !isdigit((unsigned char)l[10]) ||
        !isdigit((unsigned char)l[11]) || (n > 12 && l[12] != ' ')) {
        return -1;
    }
    h->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
    return h->status >= 100 ? 0 : -1;
}

/* http_header - one "Name: value" line into h and resp; -1 with err. */
static int http_header(const char *l, size_t n, struct http_head *h, struct https_response *resp,
                       char *err, size_t errlen)
{
    const char *colon = memchr(l, ':', n);
    if (!colon || colon == l) {
        snprintf(err, errlen, "malformed response: header line without a name");
        return -1;
    }
    size_t nl = (size_t)(colon - l);
    for (size_t i = 0; i < nl; i++) {
        if (!isgraph((unsigned char)l[i])) {
            snprintf(err, errlen, "malformed response: bad header name");
            return -1;
        }
    }
    const char *v = colon + 1;
    size_t vn = n - nl - 1;
    char val[512];
    http_copy_value(v, vn, val, sizeof val);
    if (nl == 12 && strncasecmp(l, "Content-Type", nl) == 0) {
        http_copy_value(v, vn, resp->content_type, sizeof resp->content_type);
    } else if (nl == 8 && strncasecmp(l, "Location", nl) == 0) {
        http_copy_value(v, vn, resp->location, sizeof resp->location);
    } else if (nl == 17 && strncasecmp(l, "Transfer-Encoding", nl) == 0) {
        size_t vl = strlen(val);
        if (vl < 7 || strcasecmp(val + vl - 7, "chunked") != 0) {
            snprintf(err, errlen, "unsupported transfer-encoding \"%s\"", val);
            return -1;
        }
        h->chunked = 1;
    } else if (nl == 14 && strncasecmp(l, "Content-Length", nl) == 0) {
        uint64_t x = 0;
        size_t i = 0;
        for (; val[i] && isdigit((unsigned char)val[i]) && x < UINT64_MAX / 20; i++) {
            x = x * 10 + (uint64_t)(val[i] - '0');
        }
        if (i == 0 || val[i] || (h->has_length && h->length != x)) {
            snprintf(err, errlen, "malformed response: bad content-length \"%s\"", val);
            return -1;
        }
        h->has_length = 1;
        h->length = x;
    }
    return 0;
}

/* http_head_parse - the header block at data[off..): 1 with *body_off, 0 for
 * more, -1 with err. */
static int http_head_parse(const char *data, size_t len, size_t off, struct http_head *h,
                           struct https_response *resp, size_t *body_off, char *err, size_t errlen)
{
    memset(h, 0, sizeof *h);
    resp->content_type[0] = '\0';
    resp->location[0] = '\0';
    size_t start = off, n, next = http_line(data, len, off, &n);
    if (!next) {
        goto more;
    }
    if (http_status_line(data + off, n, h) < 0) {
        snprintf(err, errlen, "malformed response: bad status line");
        return -1;
    }
    for (off = next; (next = http_line(data, len, off, &n)) != 0; off = next) {
        if (n == 0) {
            *body_off = next;
            return 1;
        }
        if (next - start > HTTP_HEAD_MAX) {
            break;
        }
        if (http_header(data + off, n, h, resp, err, errlen) < 0) {
            return -1;
        }
    }
more:
    if (len - start > HTTP_HEAD_MAX) {
        snprintf(err, errlen, "response header over %d bytes", HTTP_HEAD_MAX);
        return -1;
    }
    return 0;
}

static int http_oversize(size_t max_body, char *err, size_t errlen)
{
    snprintf(err, errlen, "response body over %zu bytes", max_body);
    return -1;
}

/* http_chunked - decode a chunked body from data[off..); 1, 0 or -1. */
static int http_chunked(const char *data, size_t len, size_t off, size_t max_body, buf_t *body,
                        char *err, size_t errlen)
{
    for (;;) {
        size_t n, next = http_line(data, len, off, &n);
        if (!next) {
            if (len - off > HTTP_CHUNK_LINE_MAX) {
                snprintf(err, errlen, "malformed response: chunk-size line too long");
                return -1;
            }
            return 0;
        }
        uint64_t size = 0;
        size_t i = 0;
        for (; i < n && isxdigit((unsigned char)data[off + i]); i++) {
            int c = tolower((unsigned char)data[off + i]);
            if (size <= max_body) { /* saturates: anything over max_body is refused */
                size = size * 16 + (uint64_t)(isdigit(c) ? c - '0' : c - 'a' + 10);
            }
        }
        if (i == 0 || (i < n && data[off + i] != ';' && data[off + i] != ' ')) {
            snprintf(err, errlen, "malformed response: bad chunk size");
            return -1;
        }
        if (size > max_body || buf_len(body) + size > max_body) {
            return http_oversize(max_body, err, errlen);
        }
        off = next;
        if (size == 0) {
            /* Trailer fields up to an empty line; their content is ignored. */
            while ((next = http_line(data, len, off, &n)) != 0 && n > 0) {
                off = next;
            }
            return next ? 1 : 0;
        }
        if (len - off < size + 1) {
            return 0;
        }
        buf_append(body, data + off, (size_t)size);
        off += (size_t)size;
        next = http_line(data, len, off, &n);
        if (!next) {
            return 0;
        }
        if (n != 0) {
            snprintf(err, errlen, "malformed response: chunk longer than its size");
            return -1;
        }
        off = next;
    }
}

/* http_body - the body framed by h from data[off..); 1, 0 or -1. */
static int http_body(const char *data, size_t len, size_t off, int eof, size_t max_body,
                     const struct http_head *h, buf_t *body, char *err, size_t errlen)
{
    size_t have = len - off;
    if (h->status == 204 || h->status == 304) {
        return 1;
    }
    if (h->chunked) {
        int r = http_chunked(data, len, off, max_body, body, err, errlen);
        if (r == 0 && eof) {
            snprintf(err, errlen, "connection closed inside a chunked body");
            return -1;
        }
        return r;
    }
    if (h->has_length) {
        if (h->length > max_body) {
            return http_oversize(max_body, err, errlen);
        }
        if (have < h->length) {
            if (eof) {
                snprintf(err, errlen, "connection closed after %zu of %llu body bytes", have,
                         (unsigned long long)h->length);
                return -1;
            }
            return 0;
        }
        buf_append(body, data + off, (size_t)h->length);
        return 1;
    }
    if (have > max_body) {
        return http_oversize(max_body, err, errlen);
    }
    if (!eof) {
        return 0;
    }
    buf_append(body, data + off, have);
    return 1;
}

int http_response_parse(const char *data, size_t len, int eof, size_t max_body,
                        struct https_response *resp, char *err, size_t errlen)
{
    struct http_head h;
    size_t off = 0, body_off = 0;
    buf_reset(&resp->body);
    resp->status = 0;
    for (;;) {
        int r = http_head_parse(data, len, off, &h, resp, &body_off, err, errlen);
        if (r < 0) {
            return -1;
        }
        if (r == 0) {
            if (!eof) {
                return 0;
            }
            snprintf(err, errlen, "%s",
                     len == 0 ? "connection closed without a response"
                              : "connection closed inside the response header");
            return -1;
        }
        if (h.status >= 200) {
            break;
        }
        off = body_off; /* 1xx: an interim response, the real one follows */
    }
    resp->status = h.status;
    int r = http_body(data, len, body_off, eof, max_body, &h, &resp->body, err, errlen);
    if (r != 1) {
        buf_reset(&resp->body);
    }
    return r;
}
