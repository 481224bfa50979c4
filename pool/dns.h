/*
 * dns - MX and address resolution with c-ares, driven by the ring
 *
 * c-ares tells us which sockets it wants watched (ARES_OPT_SOCK_STATE_CB);
 * each is polled with a one-shot POLL_ADD on the worker's loop and handed
 * to ares_process_fd when ready, and one loop timer follows ares_timeout().
 * No resolver call ever blocks the loop.
 *
 * MX answers are sorted by preference, equal preferences shuffled; a
 * single "0 ." MX is a null MX (RFC 7505, permanent); NXDOMAIN is
 * permanent; no MX records means the domain itself is the exchanger
 * (RFC 5321 5.1); SERVFAIL, refusal and timeouts are temporary. IDN
 * domains are converted to A-labels with libidn2 first. MX answers are
 * cached until their TTL expires (NXDOMAIN for 5 minutes; temporary
 * failures never), so a campaign asks once per domain, not per recipient.
 *
 * At most a window of queries is on the wire (128, halved once per burst of
 * timeouts or refusals, grown back by one per window of answers); the rest
 * wait in line, address lookups before new MX lookups. A lookup that timed
 * out after c-ares's tries is asked once more, a refused one four times,
 * before it is DNS_TEMPFAIL. An address lookup asks A, then AAAA, so a
 * timeout or refusal of one is DNS_TEMPFAIL, never "no address".
 *
 * TXT lookups (SPF, DKIM, DMARC records: `ringmail check-dns`) go in line
 * with MX lookups; a failed one is DNS_TEMPFAIL, never "no record".
 *
 * DNSSEC (dns_set_dnssec): with a trusted validating resolver every query
 * is built here (ares_create_query), sent with the AD bit set (RFC 6840
 * 5.7: c-ares 1.18 has no DO flag of its own) and the answer header's AD
 * bit read back: MX, address and TLSA results say `secure` when the
 * resolver validated them. Address lookups then ask A and AAAA themselves
 * (no hosts file; a numeric host is its own, insecure, answer). A
 * bogus answer comes back from a validating resolver as SERVFAIL:
 * DNS_TEMPFAIL. TLSA lookups (RFC 6698, `_PORT._tcp.HOST`) are cached by
 * TTL as MX answers are, and queued with the address lookups.
 */
#ifndef RINGMAIL_DNS_H
#define RINGMAIL_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine/dane.h"
#include "engine/loop.h"

struct dns;

enum dns_status {
    DNS_OK = 0,
    DNS_NULL_MX,  /* permanent: the domain accepts no mail */
    DNS_NXDOMAIN, /* permanent: no such domain */
    DNS_TEMPFAIL, /* SERVFAIL, refused, timeout: try later */
    DNS_BAD_NAME, /* not a valid (IDN) domain name */
};

struct dns_mx_host {
    char name[256];
    unsigned pref;
};

struct dns_mx_result {
    enum dns_status status;
    int implicit;                    /* no MX records: the domain itself (A/AAAA) */
    const struct dns_mx_host *hosts; /* valid during the callback */
    size_t n;
    uint32_t ttl;             /* smallest TTL of the answer, seconds */
    const char *ascii_domain; /* the A-label form that was queried */
    const char *error;        /* human reason when status != DNS_OK */
    int secure;               /* DNSSEC: the trusted resolver set AD (dns_set_dnssec) */
};

struct dns_addr_result {
    enum dns_status status;
    const struct sockaddr_storage *addrs; /* valid during the callback; port 0 */
    size_t n;
    const char *error;
    int secure; /* DNSSEC: every answer that came (A, AAAA; a lookup that failed is none)
                 * had AD from the trusted resolver, and there are addresses */
};

#define DNS_TLSA_MAX 16        /* records kept of one TLSA answer */
#define DNS_TLSA_DATA_MAX 8192 /* their association data, in all */

/* A TLSA answer's records as parsed (dns_tlsa_parse); recs[i].data point
 * into data, so an answer is never copied, only pointed to. */
struct dns_tlsa_answer {
    size_t n;
    uint32_t ttl; /* smallest TTL of the TLSA records */
    struct dane_tlsa recs[DNS_TLSA_MAX];
    uint8_t data[DNS_TLSA_DATA_MAX];
};

/* status DNS_OK with n 0: the name exists without TLSA records (NODATA);
 * DNS_NXDOMAIN: no such name (both mean "no TLSA": DANE does not apply);
 * DNS_TEMPFAIL: SERVFAIL (a bogus answer from a validating resolver),
 * REFUSED or timeout, error says which: DANE cannot be decided. */
struct dns_tlsa_result {
    enum dns_status status;
    int secure;                   /* the trusted resolver set AD */
    const struct dane_tlsa *recs; /* valid during the callback */
    size_t n;
    const char *name;  /* "_25._tcp.mx.example" as queried */
    const char *error; /* human reason when status != DNS_OK */
};

/* A TXT answer: each record's character-strings joined into one string
 * (RFC 7208 3.3, RFC 6376 3.6.2.2), in answer order. status DNS_OK with n 0:
 * the name exists without TXT records (NODATA); DNS_NXDOMAIN: no such name;
 * DNS_TEMPFAIL: SERVFAIL, REFUSED or timeout, error says which: nothing is
 * known about the name. */
struct dns_txt_result {
    enum dns_status status;
    const char *const *records; /* valid during the callback; NUL-terminated */
    const size_t *lens;         /* each record's length (a NUL byte inside stays) */
    size_t n;
    const char *ascii_name; /* the A-label form that was queried */
    const char *error;      /* human reason when status != DNS_OK */
};

typedef void (*dns_mx_cb)(void *user, const struct dns_mx_result *res);
typedef void (*dns_addr_cb)(void *user, const struct dns_addr_result *res);
typedef void (*dns_txt_cb)(void *user, const struct dns_txt_result *res);
typedef void (*dns_tlsa_cb)(void *user, const struct dns_tlsa_result *res);

/* server: "127.0.0.1:5353" (or NULL: the system's resolv.conf). timeout_ms per try. */
struct dns *dns_new(struct loop *loop, const char *server, unsigned timeout_ms, char *err,
                    size_t errlen);
/* Cancels outstanding queries (their callbacks run with DNS_TEMPFAIL). */
void dns_free(struct dns *d);
/* Exactly one callback per call, possibly before this returns (bad name). */
void dns_resolve_mx(struct dns *d, const char *domain, dns_mx_cb cb, void *user);
void dns_resolve_addr(struct dns *d, const char *host, dns_addr_cb cb, void *user);
/* The TXT records at name (underscore labels allowed: _dmarc, S._domainkey).
 * Not cached; queued and retried as MX lookups are. */
void dns_resolve_txt(struct dns *d, const char *name, dns_txt_cb cb, void *user);
/* The TLSA records of _PORT._tcp.HOST (RFC 6698 3). Cached by TTL
 * (NXDOMAIN and NODATA 5 minutes, failures never). */
void dns_resolve_tlsa(struct dns *d, const char *host, unsigned port, dns_tlsa_cb cb, void *user);
/* Trust the resolver's AD bit: ask for it on every query and report it as
 * `secure`. Only for a resolver named as validating (dnssec_resolver). */
void dns_set_dnssec(struct dns *d, int on);
/* TLSA queries sent and TLSA lookups answered from the TTL cache. */
void dns_tlsa_stats(const struct dns *d, uint64_t *queries, uint64_t *cache_hits);
/* 1 after dns_set_dnssec(d, 1). */
int dns_dnssec(const struct dns *d);
/* Parse the TLSA records of a raw answer (abuf, alen) into out: 0, or -1
 * when the message is malformed. Records whose RDATA is shorter than 3
 * bytes are skipped; past DNS_TLSA_MAX or DNS_TLSA_DATA_MAX the rest. */
int dns_tlsa_parse(const unsigned char *abuf, int alen, struct dns_tlsa_answer *out);
const char *dns_status_name(enum dns_status s);
/* MX queries sent and MX lookups answered from the TTL cache. */
void dns_stats(const struct dns *d, uint64_t *queries, uint64_t *cache_hits);

/* name as a lower-case A-label domain (IDN via libidn2, UTS #46
 * non-transitional; a trailing dot dropped) into out; -1 and why when it is
 * not a valid domain name. */
int dns_domain_ascii(const char *name, char *out, size_t outlen, const char **why);

#endif
