/*
 * fuzz_smtp_server - the sink's protocol side on arbitrary client bytes.
 */
#include <stddef.h>
#include <stdint.h>

#include "engine/smtp_server.h"

static int fuzz_auth(void *user, const char *mech, const char *authzid, const char *username,
                     const char *password)
{
    (void)user;
    (void)mech;
    (void)authzid;
    (void)username;
    return password && password[0] == 'x';
}

/* Every other message is answered later (SMTP_SERVER_DEFER), as
 * `ringmail inbound` does after its database commit. */
static void fuzz_message(void *user, const struct smtp_server_message *m,
                         struct smtp_server_decision *d)
{
    (void)user;
    if (m->size % 2) {
        d->verdict = SMTP_SERVER_DEFER;
    }
}

/* Feed in; answer a deferred message and feed again until nothing waits. */
static enum smtp_server_action fuzz_input(struct smtp_server *s, buf_t *in, buf_t *out)
{
    enum smtp_server_action a = smtp_server_input(s, in, out);
    while (a == SMTP_SERVER_WAIT && smtp_server_deferred(s)) {
        smtp_server_answer(s, out, "250 2.0.0 Ok: recorded");
        a = smtp_server_input(s, in, out);
    }
    return a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_server_config cfg = {.hostname = "fuzz.test",
                                     .offer_starttls = 1,
                                     .offer_auth = 1,
                                     .auth_plaintext = 1,
                                     .keep_data = 1};
    struct smtp_server_hooks hooks = {.auth = fuzz_auth, .message = fuzz_message};
    struct smtp_server *s = smtp_server_new(&cfg, &hooks, NULL);
    buf_t in = BUF_INIT, out = BUF_INIT;
    smtp_server_greeting(s, &out);
    /* Two reads, split where the first byte says, as the network would. */
    size_t split = size ? data[0] % (size + 1) : 0;
    buf_append(&in, data, split);
    if (fuzz_input(s, &in, &out) == SMTP_SERVER_WAIT) {
        buf_append(&in, data + split, size - split);
        fuzz_input(s, &in, &out);
    }
    buf_free(&in);
    buf_free(&out);
    smtp_server_free(s);
    return 0;
}
