/*
 * sts_fetch - an MTA-STS policy fetch (RFC 8461 3.3). See sts_fetch.h.
 */
#include "pool/sts_fetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "engine/https.h"
#include "engine/netaddr.h"

void sts_job_init(struct sts_job *j, const char *domain, const char *txt_id,
                  const struct sockaddr_storage *addr, unsigned port, const char *ca_file,
                  unsigned timeout_ms)
{
    snprintf(j->domain, sizeof j->domain, "%s", domain);
    snprintf(j->txt_id, sizeof j->txt_id, "%s", txt_id);
    j->port = port ? port : 443;
    j->ca_file = ca_file;
    j->timeout_ms = timeout_ms;
    if (addr) {
        char ip[NETADDR_HOST_MAX];
        netaddr_format_host((const struct sockaddr *)addr, ip);
        snprintf(j->connect_buf, sizeof j->connect_buf,
                 addr->ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, j->port);
        j->connect_to = j->connect_buf;
    }
}

/* sts_fetch_fail - -1 with why and its result type */
static int sts_fetch_fail(struct sts_job *j, const char *type, const char *why)
{
    snprintf(j->error, sizeof j->error, "%.399s", why);
    j->error_type = type;
    j->ok = 0;
    return -1;
}

/* sts_text_plain - the media type is text/plain (parameters aside) */
static int sts_text_plain(const char *ct)
{
    size_t n = strcspn(ct, "; \t");
    return n == 10 && strncasecmp(ct, "text/plain", 10) == 0;
}

int sts_fetch_run(struct sts_job *j)
{
    char url[400], err[300], why[400];
    if (j->port && j->port != 443) {
        snprintf(url, sizeof url, "https://mta-sts.%s:%u/.well-known/mta-sts.txt", j->domain,
                 j->port);
    } else {
        snprintf(url, sizeof url, "https://mta-sts.%s/.well-known/mta-sts.txt", j->domain);
    }
    struct https_request req = {
        .url = url,
        .ca_file = j->ca_file,
        .connect_to = j->connect_to,
        .max_body = MTA_STS_POLICY_MAX,
        .timeout_ms = j->timeout_ms,
    };
    struct https_response resp;
    j->fetched = 1;
    if (https_request(&req, &resp, err, sizeof err) < 0) {
        snprintf(why, sizeof why, "policy fetch: %s", err);
        return sts_fetch_fail(j,
                              strstr(err, "certificate verify failed") ? "sts-webpki-invalid"
                                                                       : "sts-policy-fetch-error",
                              why);
    }
    int rc = -1;
    if (resp.status != 200) {
        if (resp.status >= 300 && resp.status < 400) {
            snprintf(why, sizeof why, "policy fetch: HTTP %d (redirect to %.300s, not followed)",
                     resp.status, resp.location[0] ? resp.location : "nowhere");
        } else {
            snprintf(why, sizeof why, "policy fetch: HTTP %d", resp.status);
        }
        sts_fetch_fail(j, "sts-policy-fetch-error", why);
    } else if (!sts_text_plain(resp.content_type)) {
        snprintf(why, sizeof why, "policy fetch: content type \"%s\", not text/plain",
                 resp.content_type);
        sts_fetch_fail(j, "sts-policy-fetch-error", why);
    } else if (mta_sts_policy_parse(buf_data(&resp.body), buf_len(&resp.body), &j->pol, err,
                                    sizeof err) < 0) {
        snprintf(why, sizeof why, "policy invalid: %s", err);
        sts_fetch_fail(j, "sts-policy-invalid", why);
    } else {
        free(j->text);
        j->text = strndup(buf_data(&resp.body), buf_len(&resp.body));
        if (!j->text) {
            abort();
        }
        snprintf(j->id, sizeof j->id, "%s", j->txt_id);
        j->fetched_at = (int64_t)time(NULL);
        j->expires_at = j->fetched_at + j->pol.max_age;
        j->ok = 1;
        j->error[0] = '\0';
        j->error_type = NULL;
        rc = 0;
    }
    https_response_free(&resp);
    return rc;
}

void sts_job_free(struct sts_job *j, int heap)
{
    if (j) {
        free(j->text);
        j->text = NULL;
        if (heap) {
            free(j);
        }
    }
}
