/*
 * db - schema and migrations. See db.h.
 *
 * Diagnostics: every failure names the statement's purpose and carries
 * PostgreSQL's own message; `ringmail db migrate` exits 1 on a database
 * error, 2 on bad options.
 */
#include "campaign/db.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/opt.h"
#include "engine/num.h"

/* Append-only: a released version is never edited, only followed. */
static const char *const db_migrations[] = {
    /* 1: the campaign model */
    "CREATE TABLE ringmail.campaign ("
    "  id bigserial PRIMARY KEY,"
    "  name text NOT NULL,"
    "  mail_from text NOT NULL,"
    "  subject text NOT NULL,"
    "  text_body text,"
    "  html_body text,"
    "  list_unsubscribe text,"
    "  feedback_id text,"
    "  dkim_domain text,"
    "  dkim_selector text,"
    "  dkim_key text,"
    "  status text NOT NULL DEFAULT 'ready' CHECK (status IN ('ready', 'running', 'done')),"
    "  created_at timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE ringmail.recipient ("
    "  id bigserial PRIMARY KEY,"
    "  campaign_id bigint NOT NULL REFERENCES ringmail.campaign(id) ON DELETE CASCADE,"
    "  address text NOT NULL,"
    "  vars jsonb NOT NULL DEFAULT '{}',"
    "  state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'claimed', 'sent',"
    "    'deferred', 'bounced', 'failed', 'invalid', 'suppressed', 'ambiguous')),"
    "  reason text,"
    "  attempts int NOT NULL DEFAULT 0,"
    "  first_attempt_at timestamptz,"
    "  next_attempt_at timestamptz NOT NULL DEFAULT now(),"
    "  lease_owner text,"
    "  lease_expires_at timestamptz,"
    "  updated_at timestamptz NOT NULL DEFAULT now(),"
    "  UNIQUE (campaign_id, address));"
    /* The loader's question: what is due in this campaign? */
    "CREATE INDEX recipient_due ON ringmail.recipient (campaign_id, next_attempt_at)"
    "  WHERE state IN ('queued', 'deferred');"
    "CREATE INDEX recipient_leased ON ringmail.recipient (campaign_id, lease_expires_at)"
    "  WHERE state = 'claimed';"
    "CREATE TABLE ringmail.delivery ("
    "  id bigserial PRIMARY KEY,"
    "  campaign_id bigint NOT NULL,"
    "  recipient_id bigint NOT NULL,"
    "  attempt int NOT NULL,"
    "  outcome text NOT NULL,"
    "  final boolean NOT NULL,"
    "  reason text,"
    "  at timestamptz NOT NULL DEFAULT now(),"
    "  connect_ms int,"
    "  tls_ms int,"
    "  transaction_ms int,"
    "  isp text,"
    "  mx text,"
    "  peer text,"
    "  source text,"
    "  code int,"
    "  enhanced text,"
    "  reply text,"
    "  tls_version text,"
    "  tls_cipher text,"
    "  tls_group text,"
    "  tls_resumed boolean,"
    "  tls_verify text,"
    "  peer_subject text,"
    "  peer_issuer text,"
    "  peer_sha256 text,"
    "  data_in_flight boolean NOT NULL DEFAULT false,"
    "  node text);"
    "CREATE INDEX delivery_campaign ON ringmail.delivery (campaign_id, recipient_id);"
    "CREATE TABLE ringmail.suppression ("
    "  address text PRIMARY KEY,"
    "  reason text,"
    "  campaign_id bigint,"
    "  created_at timestamptz NOT NULL DEFAULT now());",
    /* 2: results rewrite the row in place (HOT). No index depends on a
     * recipient's state or lease any more: a row is due while it has a
     * next_attempt_at (queued or deferred; NULL once claimed or final), so
     * a final result changes no indexed column and PostgreSQL updates it
     * without touching an index. Expired leases are found by a scan, once
     * the due rows run out. */
    "ALTER TABLE ringmail.recipient ALTER COLUMN next_attempt_at DROP NOT NULL;"
    "UPDATE ringmail.recipient SET next_attempt_at = NULL"
    "  WHERE state NOT IN ('queued', 'deferred');"
    "DROP INDEX ringmail.recipient_due;"
    "DROP INDEX ringmail.recipient_leased;"
    "CREATE INDEX recipient_due ON ringmail.recipient (campaign_id, next_attempt_at)"
    "  WHERE next_attempt_at IS NOT NULL;"
    "ALTER TABLE ringmail.recipient SET (fillfactor = 85);",
    /* 3: nodes and what they armed. A node is alive while its heartbeat
     * keeps expires_at ahead of now(); a dead node's claims are taken over
     * by any live node. Before a body goes out, its recipient id is
     * committed in `armed` (checked against the node's incarnation), so a
     * takeover knows which claims may have reached a server (`ambiguous`)
     * and queues the rest again. */
    "CREATE SEQUENCE ringmail.node_incarnation;"
    "CREATE TABLE ringmail.node ("
    "  name text PRIMARY KEY,"
    "  incarnation bigint," /* NULL: stopped, or taken over */
    "  campaign_id bigint,"
    "  host text,"
    "  pid int,"
    "  lease_s int NOT NULL,"
    "  started_at timestamptz NOT NULL DEFAULT now(),"
    "  heartbeat_at timestamptz NOT NULL DEFAULT now(),"
    "  expires_at timestamptz NOT NULL,"
    "  stopped_at timestamptz,"
    "  taken_over_by text,"
    "  taken_over_at timestamptz);"
    "CREATE TABLE ringmail.armed ("
    "  node text NOT NULL,"
    "  seq bigint NOT NULL,"
    "  ids bigint[] NOT NULL,"
    "  at timestamptz NOT NULL DEFAULT now(),"
    "  PRIMARY KEY (node, seq));",
    /* 4: what comes back after the 250 (campaign/feedback_store.h). Each
     * bounce, complaint, unsubscribe, auto-reply, delay report or message
     * that matched no recipient is one feedback_event row, written in the
     * same transaction as the recipient's feedback and the suppression
     * list. Delivery rows carry the bounce classifier's word; a complaint
     * rate over [feedback] complaint_pause holds an ISP for a campaign
     * (isp_hold, in force while resumed_at is NULL) until `ringmail
     * campaign resume ID --isp NAME`, which keeps the row: the guard's
     * window starts again at resumed_at. */
    "ALTER TABLE ringmail.delivery ADD COLUMN category text,"
    "  ADD COLUMN bounce text CHECK (bounce IN ('hard', 'soft')),"
    "  ADD COLUMN bounce_rule text;"
    "ALTER TABLE ringmail.recipient ADD COLUMN feedback text CHECK (feedback IN ('bounce',"
    "    'soft-bounce', 'complaint', 'unsubscribe')),"
    "  ADD COLUMN feedback_at timestamptz;"
    "ALTER TABLE ringmail.suppression ADD COLUMN kind text NOT NULL DEFAULT 'bounce'"
    "  CHECK (kind IN ('bounce', 'soft-bounces', 'complaint', 'unsubscribe', 'manual'));"
    "CREATE TABLE ringmail.feedback_event ("
    "  id bigserial PRIMARY KEY,"
    "  kind text NOT NULL CHECK (kind IN ('bounce', 'delay', 'complaint', 'unsubscribe',"
    "    'auto_reply', 'unmatched')),"
    "  source text CHECK (source IN ('dsn', 'text', 'arf', 'http', 'mailto', 'smtp')),"
    "  campaign_id bigint,"
    "  recipient_id bigint,"
    "  address text,"
    "  isp text,"
    "  category text,"
    "  bounce text CHECK (bounce IN ('hard', 'soft')),"
    "  bounce_rule text,"
    "  status text,"
    "  diagnostic text,"
    "  reason text,"
    "  suppressed boolean NOT NULL DEFAULT false,"
    "  received_at timestamptz NOT NULL DEFAULT now(),"
    "  reporting_mta text,"
    "  remote_mta text,"
    "  client text,"
    "  envelope_from text,"
    "  envelope_to text,"
    "  message_id text,"
    "  raw bytea,"
    "  digest bytea);" /* SHA-256 of the envelope recipient and the whole message */
    "CREATE INDEX feedback_event_campaign ON ringmail.feedback_event (campaign_id, kind);"
    "CREATE INDEX feedback_event_soft ON ringmail.feedback_event (address, received_at)"
    "  WHERE bounce = 'soft';"
    "CREATE INDEX feedback_event_digest ON ringmail.feedback_event (digest)"
    "  WHERE digest IS NOT NULL;"
    "CREATE TABLE ringmail.isp_hold ("
    "  campaign_id bigint NOT NULL,"
    "  isp text NOT NULL,"
    "  reason text NOT NULL,"
    "  held_at timestamptz NOT NULL DEFAULT now(),"
    "  resumed_at timestamptz,"
    "  PRIMARY KEY (campaign_id, isp));",
    /* 5: what an operator and a marketer steer and read. A campaign's
     * status is its life cycle: draft (created), scheduled (start_at in the
     * future), running (a send may claim), paused (sends claim nothing,
     * in-flight messages finish), done (every recipient final), cancelled
     * (never sends again); status_at and status_reason say when and why it
     * changed. An operator's per-ISP pause is an isp_hold row like the
     * complaint guard's. A deferral past max_age is its own final state,
     * `expired`, not `failed`. delivery.conn_first marks the first attempt
     * on its connection (counts connections and TLS handshakes, so
     * resumption is a share of handshakes, not of attempts). isp_suspend
     * keeps an ISP's suspension (S3150, a suspend rule) across restarts and
     * nodes. seed_delivery records `campaign test` sends, apart from the
     * campaign's recipients and delivery rows. */
    "ALTER TABLE ringmail.campaign DROP CONSTRAINT campaign_status_check;"
    "UPDATE ringmail.campaign SET status = 'draft' WHERE status = 'ready';"
    "ALTER TABLE ringmail.campaign ALTER COLUMN status SET DEFAULT 'draft',"
    "  ADD CONSTRAINT campaign_status_check CHECK (status IN ('draft', 'scheduled', 'running',"
    "    'paused', 'done', 'cancelled')),"
    "  ADD COLUMN start_at timestamptz,"
    "  ADD COLUMN from_name text,"
    "  ADD COLUMN reply_to text,"
    "  ADD COLUMN status_at timestamptz NOT NULL DEFAULT now(),"
    "  ADD COLUMN status_reason text;"
    "ALTER TABLE ringmail.recipient DROP CONSTRAINT recipient_state_check;"
    "ALTER TABLE ringmail.recipient ADD CONSTRAINT recipient_state_check CHECK (state IN ("
    "  'queued', 'claimed', 'sent', 'deferred', 'bounced', 'failed', 'expired', 'invalid',"
    "  'suppressed', 'ambiguous'));"
    "ALTER TABLE ringmail.delivery ADD COLUMN conn_first boolean;"
    "CREATE TABLE ringmail.isp_suspend ("
    "  isp text PRIMARY KEY,"
    "  until timestamptz NOT NULL,"
    "  reason text NOT NULL,"
    "  node text,"
    "  at timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE ringmail.seed_delivery ("
    "  id bigserial PRIMARY KEY,"
    "  campaign_id bigint NOT NULL REFERENCES ringmail.campaign(id) ON DELETE CASCADE,"
    "  address text NOT NULL,"
    "  at timestamptz NOT NULL DEFAULT now(),"
    "  outcome text NOT NULL,"
    "  reason text,"
    "  code int,"
    "  enhanced text,"
    "  reply text,"
    "  mx text,"
    "  tls_version text,"
    "  tls_cipher text,"
    "  message_id text);",
    /* 6: destination TLS policy (MTA-STS, DANE, TLS-RPT). Every attempt
     * records the policy that applied: tls_policy is 'dane', 'mta-sts' or
     * 'config'; tls_policy_mode is 'enforce' or 'testing' (mta-sts),
     * 'enforce' (dane) or the configured policy's name (required, verify,
     * opportunistic, none); tls_result is the RFC 8460 result type of a
     * failure (or what would have failed under testing), NULL when the
     * policy was met; tls_policy_id names the policy's text in
     * tls_policy_text (the MTA-STS id, or a hash of the TLSA set), so a
     * TLS-RPT report can quote the policy-string (tlsrpt finds a day's rows
     * through a BRIN index on at). mta_sts_policy is the
     * policy cache every node shares (one row per domain: the last good
     * policy, when it expires, and who fetches it now). tlsrpt_report
     * records each report sent (once per day, domain and rua). */
    "ALTER TABLE ringmail.delivery ADD COLUMN tls_policy text,"
    "  ADD COLUMN tls_policy_mode text,"
    "  ADD COLUMN tls_result text,"
    "  ADD COLUMN tls_policy_id text;"
    /* tlsrpt reads a day of delivery rows by time: a BRIN index costs next
     * to nothing on insert (rows arrive in time order). */
    "CREATE INDEX delivery_at_brin ON ringmail.delivery USING brin (at);"
    "CREATE TABLE ringmail.tls_policy_text ("
    "  type text NOT NULL CHECK (type IN ('sts', 'tlsa')),"
    "  domain text NOT NULL,"
    "  policy_id text NOT NULL,"
    "  policy text NOT NULL,"
    "  first_seen timestamptz NOT NULL DEFAULT now(),"
    "  PRIMARY KEY (type, domain, policy_id));"
    "CREATE TABLE ringmail.mta_sts_policy ("
    "  domain text PRIMARY KEY,"
    "  sts_id text,"
    "  mode text CHECK (mode IN ('enforce', 'testing', 'none')),"
    "  mx text[],"
    "  max_age int,"
    "  policy text,"
    "  fetched_at timestamptz,"
    "  expires_at timestamptz,"
    "  checked_at timestamptz,"
    "  last_error text,"
    "  last_error_type text,"
    "  last_error_id text,"
    "  fetch_node text,"
    "  fetch_until timestamptz);"
    "CREATE TABLE ringmail.tlsrpt_report ("
    "  id bigserial PRIMARY KEY,"
    "  day date NOT NULL,"
    "  domain text NOT NULL,"
    "  rua text NOT NULL,"
    "  report_id text NOT NULL,"
    "  at timestamptz NOT NULL DEFAULT now(),"
    "  sent_at timestamptz,"
    "  outcome text,"
    "  detail text,"
    "  UNIQUE (day, domain, rua));",
    /* 7: one cluster, one sender (README "Many nodes, one PostgreSQL").
     * Every send --db beats (node.beat_at, every beat_ms) and says which
     * source addresses it sends from; node_lane says, per ISP lane (source
     * '' = the ISP as a whole), how much work the node has in hand for it
     * (demand), so each live node with demand takes its share of the ISP's
     * limits. A node whose beat_at is older than two beats counts no more.
     * isp_backoff is the last backoff or pause an ISP lane met on any node,
     * which every node applies at its next beat. A campaign may carry a
     * second DKIM key (dkim_selector2, dkim_key2: same d=), so each message
     * is signed twice (RSA beside Ed25519). */
    "ALTER TABLE ringmail.node ADD COLUMN sources text[],"
    "  ADD COLUMN beat_at timestamptz,"
    "  ADD COLUMN beat_ms int;"
    "CREATE TABLE ringmail.node_lane ("
    "  isp text NOT NULL,"
    "  source text NOT NULL DEFAULT '',"
    "  node text NOT NULL,"
    "  demand int NOT NULL,"
    "  at timestamptz NOT NULL DEFAULT now(),"
    "  PRIMARY KEY (isp, source, node));"
    "CREATE TABLE ringmail.isp_backoff ("
    "  isp text NOT NULL,"
    "  source text NOT NULL DEFAULT '',"
    "  factor real NOT NULL,"
    "  paused_until timestamptz NOT NULL,"
    "  reason text,"
    "  node text,"
    "  at timestamptz NOT NULL DEFAULT now(),"
    "  PRIMARY KEY (isp, source));"
    "ALTER TABLE ringmail.campaign ADD COLUMN dkim_selector2 text,"
    "  ADD COLUMN dkim_key2 text;",
    /* 8: claims by range (loader_claims.c). A recipient never attempted
     * is *fresh*: queued with no next_attempt_at (the import's rows and,
     * by the new default, rows inserted by hand), outside the due index.
     * Fresh rows are claimed in id order by moving the campaign's sweep
     * (sweep.upto) past them and writing one claim row with their range
     * (lo, hi): the recipients themselves are not written at claim time;
     * a fresh row at or below upto is held by the claim whose range holds
     * it, and its result is its first write, in place (HOT: no indexed
     * column changes, and fillfactor 50 leaves room on the page for the
     * new version of every row of a page within one results
     * transaction; at 85, most result updates moved their row and wrote
     * two index entries). Due rows (deferred, or queued again after a
     * stop or a takeover) are still claimed row by row (`claimed`, lease
     * owner); that claim writes a claim row too, with the ids, so what
     * each node holds is a few rows of this table. recipient_campaign
     * orders a campaign's rows by id for the sweep. held lists every
     * recipient a node holds, either way. */
    "CREATE TABLE ringmail.sweep ("
    "  campaign_id bigint PRIMARY KEY,"
    "  upto bigint NOT NULL DEFAULT 0,"
    "  swept bigint NOT NULL DEFAULT 0);" /* fresh rows claimed so far, in all */
    "CREATE TABLE ringmail.claim ("
    "  id bigserial PRIMARY KEY,"
    "  node text NOT NULL,"
    "  campaign_id bigint NOT NULL,"
    "  lo bigint," /* a sweep's range: its fresh rows are this claim's */
    "  hi bigint,"
    "  ids bigint[]," /* a claim of due rows: the rows it made `claimed` */
    "  at timestamptz NOT NULL DEFAULT now());"
    "CREATE INDEX claim_node ON ringmail.claim (node);"
    "CREATE INDEX claim_campaign ON ringmail.claim (campaign_id, lo);"
    "CREATE INDEX recipient_campaign ON ringmail.recipient (campaign_id, id);"
    "ALTER TABLE ringmail.recipient ALTER COLUMN next_attempt_at DROP DEFAULT,"
    "  SET (fillfactor = 50);"
    "CREATE VIEW ringmail.held AS"
    "  SELECT q.id AS recipient_id, q.campaign_id, q.lease_owner AS node"
    "  FROM ringmail.recipient q WHERE q.state = 'claimed'"
    " UNION ALL"
    "  SELECT q.id, q.campaign_id, c.node FROM ringmail.claim c"
    "  JOIN ringmail.recipient q"
    "   ON q.campaign_id = c.campaign_id AND q.id BETWEEN c.lo AND c.hi"
    "  WHERE q.state = 'queued' AND q.next_attempt_at IS NULL;",
    /* 9: the delivery record in two tables (PostgreSQL's CPU per
     * recipient). What every attempt of one connection shares (the
     * exchanger, peer and source address, the connect and TLS times, the
     * TLS version, cipher, group, resumption, verify result and peer
     * certificate, the destination TLS policy that applied, the node) is
     * one ringmail.session row, written with the connection's first
     * attempt, or with an attempt no connection carried; each attempt is
     * one ringmail.attempt row that points to it (session_id). The view
     * ringmail.delivery joins them back, column for column the table it
     * was, so every delivery record still carries its TLS details and
     * every query of it (report, top, tlsrpt, an operator's own) reads
     * it as before; a row inserted into the view is split by a trigger.
     * A writer numbers its sessions from a block of 2^40 ids of its own
     * (session_block: one per process, the block plus the connection's
     * number, so no round trip per session); the trigger and the rows
     * moved here take theirs from session_id, below the first block.
     * The attempt rows are indexed by BRINs only (id, campaign, time:
     * each grows with the rows, or nearly), which cost next to nothing per
     * row; the b-trees they had (the id's, and campaign and recipient's)
     * cost every row a descent, 1.2 us for the latter. The attempt's id is
     * unique by its sequence. What was looked up by recipient (the ISP of
     * a recipient's attempts, for feedback and top) is the recipient's
     * own isp column now, set by every result. The old rows move: one
     * session each. */
    "CREATE TABLE ringmail.session ("
    "  id bigint PRIMARY KEY,"
    "  node text,"
    "  at timestamptz NOT NULL DEFAULT now(),"
    "  mx text, peer text, source text, connect_ms int, tls_ms int,"
    "  tls_version text, tls_cipher text, tls_group text, tls_resumed boolean, tls_verify text,"
    "  peer_subject text, peer_issuer text, peer_sha256 text,"
    "  tls_policy text, tls_policy_mode text, tls_policy_id text);"
    "CREATE SEQUENCE ringmail.session_id MAXVALUE 1099511627775;"
    "CREATE SEQUENCE ringmail.session_block INCREMENT BY 1099511627776"
    "  MINVALUE 1099511627776 START WITH 1099511627776;"
    "CREATE TABLE ringmail.attempt ("
    "  id bigint NOT NULL DEFAULT nextval('ringmail.delivery_id_seq'),"
    "  campaign_id bigint NOT NULL,"
    "  recipient_id bigint NOT NULL,"
    "  attempt int NOT NULL,"
    "  outcome text NOT NULL,"
    "  final boolean NOT NULL,"
    "  reason text,"
    "  at timestamptz NOT NULL DEFAULT now(),"
    "  transaction_ms int,"
    "  isp text,"
    "  code int,"
    "  enhanced text,"
    "  reply text,"
    "  data_in_flight boolean NOT NULL DEFAULT false,"
    "  category text,"
    "  bounce text CHECK (bounce IN ('hard', 'soft')),"
    "  bounce_rule text,"
    "  conn_first boolean,"
    "  tls_result text,"
    "  session_id bigint);"
    "INSERT INTO ringmail.session (id, node, at, mx, peer, source, connect_ms, tls_ms,"
    "  tls_version, tls_cipher, tls_group, tls_resumed, tls_verify, peer_subject, peer_issuer,"
    "  peer_sha256, tls_policy, tls_policy_mode, tls_policy_id)"
    " SELECT id, node, at, mx, peer, source, connect_ms, tls_ms, tls_version, tls_cipher,"
    "  tls_group, tls_resumed, tls_verify, peer_subject, peer_issuer, peer_sha256, tls_policy,"
    "  tls_policy_mode, tls_policy_id FROM ringmail.delivery;"
    "INSERT INTO ringmail.attempt (id, campaign_id, recipient_id, attempt, outcome, final, reason,"
    "  at, transaction_ms, isp, code, enhanced, reply, data_in_flight, category, bounce,"
    "  bounce_rule, conn_first, tls_result, session_id)"
    " SELECT id, campaign_id, recipient_id, attempt, outcome, final, reason, at, transaction_ms,"
    "  isp, code, enhanced, reply, data_in_flight, category, bounce, bounce_rule, conn_first,"
    "  tls_result, id FROM ringmail.delivery;"
    "SELECT setval('ringmail.session_id', coalesce(max(id), 0) + 1, false) FROM ringmail.delivery;"
    "ALTER TABLE ringmail.recipient ADD COLUMN isp text;"
    "UPDATE ringmail.recipient r SET isp = d.isp FROM (SELECT DISTINCT ON (recipient_id)"
    "  recipient_id, isp FROM ringmail.delivery WHERE isp <> ''"
    "  ORDER BY recipient_id, outcome = 'accepted' DESC, id DESC) d WHERE r.id = d.recipient_id;"
    "ALTER SEQUENCE ringmail.delivery_id_seq OWNED BY ringmail.attempt.id;"
    "DROP TABLE ringmail.delivery;"
    "CREATE INDEX attempt_campaign_brin ON ringmail.attempt USING brin (campaign_id);"
    "CREATE INDEX delivery_at_brin ON ringmail.attempt USING brin (at);"
    "CREATE INDEX attempt_id_brin ON ringmail.attempt USING brin (id);"
    "CREATE VIEW ringmail.delivery AS"
    " SELECT a.id, a.campaign_id, a.recipient_id, a.attempt, a.outcome, a.final, a.reason, a.at,"
    "  s.connect_ms, s.tls_ms, a.transaction_ms, a.isp, s.mx, s.peer, s.source, a.code,"
    "  a.enhanced, a.reply, s.tls_version, s.tls_cipher, s.tls_group, s.tls_resumed,"
    "  s.tls_verify, s.peer_subject, s.peer_issuer, s.peer_sha256, a.data_in_flight, s.node,"
    "  a.category, a.bounce, a.bounce_rule, a.conn_first, s.tls_policy, s.tls_policy_mode,"
    "  a.tls_result, s.tls_policy_id, a.session_id"
    " FROM ringmail.attempt a LEFT JOIN ringmail.session s ON s.id = a.session_id;"
    "CREATE FUNCTION ringmail.delivery_insert() RETURNS trigger LANGUAGE plpgsql AS $f$"
    " BEGIN"
    "  NEW.id := coalesce(NEW.id, nextval('ringmail.delivery_id_seq'));"
    "  NEW.at := coalesce(NEW.at, now());"
    "  NEW.data_in_flight := coalesce(NEW.data_in_flight, false);"
    "  IF NEW.session_id IS NULL THEN"
    "   NEW.session_id := nextval('ringmail.session_id');"
    "   INSERT INTO ringmail.session (id, node, at, mx, peer, source, connect_ms, tls_ms,"
    "    tls_version, tls_cipher, tls_group, tls_resumed, tls_verify, peer_subject,"
    "    peer_issuer, peer_sha256, tls_policy, tls_policy_mode, tls_policy_id)"
    "   VALUES (NEW.session_id, NEW.node, NEW.at, NEW.mx, NEW.peer, NEW.source,"
    "    NEW.connect_ms, NEW.tls_ms, NEW.tls_version, NEW.tls_cipher, NEW.tls_group,"
    "    NEW.tls_resumed, NEW.tls_verify, NEW.peer_subject, NEW.peer_issuer, NEW.peer_sha256,"
    "    NEW.tls_policy, NEW.tls_policy_mode, NEW.tls_policy_id);"
    "  END IF;"
    "  INSERT INTO ringmail.attempt (id, campaign_id, recipient_id, attempt, outcome, final,"
    "   reason, at, transaction_ms, isp, code, enhanced, reply, data_in_flight, category,"
    "   bounce, bounce_rule, conn_first, tls_result, session_id)"
    "  VALUES (NEW.id, NEW.campaign_id, NEW.recipient_id, NEW.attempt, NEW.outcome, NEW.final,"
    "   NEW.reason, NEW.at, NEW.transaction_ms, NEW.isp, NEW.code, NEW.enhanced, NEW.reply,"
    "   NEW.data_in_flight, NEW.category, NEW.bounce, NEW.bounce_rule, NEW.conn_first,"
    "   NEW.tls_result, NEW.session_id);"
    "  RETURN NEW;"
    " END $f$;"
    "CREATE TRIGGER delivery_insert INSTEAD OF INSERT ON ringmail.delivery"
    "  FOR EACH ROW EXECUTE FUNCTION ringmail.delivery_insert();",
};

#define DB_NMIGRATIONS (int)(sizeof db_migrations / sizeof db_migrations[0])

int db_schema_latest(void)
{
    return DB_NMIGRATIONS;
}

void db_trim(char *msg)
{
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) {
        msg[--n] = '\0';
    }
    /* One line: libpq's "\n\tIs the server running ...", a syntax error's
     * "\nLINE 1: ..." become " Is the server ...", " LINE 1: ...". */
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (msg[i] == '\n' || msg[i] == '\t' || msg[i] == '\r') {
            if (o > 0 && msg[o - 1] != ' ') {
                msg[o++] = ' ';
            }
            continue;
        }
        msg[o++] = msg[i];
    }
    msg[o] = '\0';
}

static void db_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* NOTICEs ("already exists, skipping") are not news */
}

/* A value of an option list (PQconninfoParse, PQconndefaults, PQconninfo). */
static const char *db_opt(const PQconninfoOption *opts, const char *key)
{
    for (const PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (strcmp(o->keyword, key) == 0) {
            return o->val && *o->val ? o->val : NULL;
        }
    }
    return NULL;
}

/* What in opts asks for an encrypted connection this build cannot make
 * (into what, e.g. "sslmode=require"), or NULL. */
static const char *db_wants_tls(const PQconninfoOption *opts, char *what, size_t n)
{
    const char *v = db_opt(opts, "sslmode");
    if (v && strcmp(v, "disable") != 0 && strcmp(v, "allow") != 0 && strcmp(v, "prefer") != 0) {
        snprintf(what, n, "sslmode=%s", v);
        return what;
    }
    v = db_opt(opts, "requiressl");
    if (v && strcmp(v, "0") != 0) {
        snprintf(what, n, "requiressl=%s", v);
        return what;
    }
    v = db_opt(opts, "gssencmode");
    if (v && strcmp(v, "require") == 0) {
        snprintf(what, n, "gssencmode=%s", v);
        return what;
    }
    return NULL;
}

/*
 * libpq's TLS cannot run beside BoringSSL (pq.h), and every connection is
 * made with sslmode=disable: so refuse any way of asking for TLS, not only
 * the URL's own sslmode: PGSSLMODE or PGREQUIRESSL in the environment, a
 * service file entry (service= in the URL, or PGSERVICE). The effective
 * options are libpq's own: the URL's, then for a service= in the URL those
 * libpq computes for a connection it is asked to start (and that is closed
 * before it does anything), else PQconndefaults (environment, PGSERVICE).
 * 0, or -1 with the reason and where it came from in err.
 */
static int db_refuse_tls(const char *url, const PQconninfoOption *parsed, char *err, size_t errlen)
{
    char what[128];
    const char *from = NULL;
    char where[256];
    if (db_wants_tls(parsed, what, sizeof what)) {
        from = "the connection URL";
    } else if (db_opt(parsed, "service")) {
        const char *const keys[] = {"dbname", NULL};
        const char *const vals[] = {url, NULL};
        PGconn *probe = pq.PQconnectStartParams(keys, vals, 1);
        PQconninfoOption *eff = probe ? pq.PQconninfo(probe) : NULL;
        if (!eff && probe && pq.PQstatus(probe) == CONNECTION_BAD) {
            snprintf(err, errlen, "cannot connect to PostgreSQL: %s", pq.PQerrorMessage(probe));
            db_trim(err);
            pq.PQfinish(probe);
            return -1;
        }
        if (eff && db_wants_tls(eff, what, sizeof what)) {
            snprintf(where, sizeof where, "service %s (the connection service file)",
                     db_opt(parsed, "service"));
            from = where;
        }
        if (eff) {
            pq.PQconninfoFree(eff);
        }
        if (probe) {
            pq.PQfinish(probe);
        }
    } else {
        PQconninfoOption *defs = pq.PQconndefaults();
        if (defs && db_wants_tls(defs, what, sizeof what)) {
            const char *env = getenv("PGSSLMODE");
            const char *svc = getenv("PGSERVICE");
            if (env && *env && strncmp(what, "sslmode=", 8) == 0 && strcmp(env, what + 8) == 0) {
                from = "the environment (PGSSLMODE)";
            } else if (getenv("PGREQUIRESSL") && strncmp(what, "gssencmode=", 11) != 0) {
                from = "the environment (PGREQUIRESSL)";
            } else if (strncmp(what, "gssencmode=", 11) == 0 && getenv("PGGSSENCMODE")) {
                from = "the environment (PGGSSENCMODE)";
            } else if (svc && *svc) {
                snprintf(where, sizeof where, "service %s (PGSERVICE, the connection service file)",
                         svc);
                from = where;
            } else {
                from = "libpq's defaults";
            }
        }
        if (defs) {
            pq.PQconninfoFree(defs);
        }
    }
    if (!from) {
        return 0;
    }
    snprintf(err, errlen,
             "%s (from %s): this build cannot use TLS to PostgreSQL (libpq's OpenSSL 3 and the "
             "engine's BoringSSL clash) and never connects in plaintext instead; connect over a "
             "Unix socket or localhost, or through a TLS tunnel (stunnel, an SSH forward)",
             what, from);
    return -1;
}

/* Every connection gets these unless the URL or the environment sets them:
 * a bounded connect, and TCP keepalives so a dead peer is noticed. */
static const char *const db_conn_defaults[][2] = {
    {"connect_timeout", "10"},    {"keepalives", "1"},       {"keepalives_idle", "5"},
    {"keepalives_interval", "2"}, {"keepalives_count", "3"}, {"tcp_user_timeout", "10000"},
};
#define DB_NCONN_DEFAULTS (sizeof db_conn_defaults / sizeof db_conn_defaults[0])

PGconn *db_connect(const char *url, char *err, size_t errlen)
{
    if (pq_load(err, errlen) < 0) {
        return NULL;
    }
    char *perr = NULL;
    PQconninfoOption *opts = pq.PQconninfoParse(url, &perr);
    if (!opts) {
        snprintf(err, errlen, "bad connection string: %s", perr ? perr : "out of memory");
        if (perr) {
            pq.PQfreemem(perr);
        }
        return NULL;
    }
    if (db_refuse_tls(url, opts, err, errlen) < 0) {
        pq.PQconninfoFree(opts);
        return NULL;
    }
    /* dbname carries the whole URL (expand_dbname); later keywords win. */
    const char *keys[4 + DB_NCONN_DEFAULTS] = {"dbname", "sslmode", "gssencmode"};
    const char *vals[4 + DB_NCONN_DEFAULTS] = {url, "disable", "disable"};
    size_t n = 3;
    PQconninfoOption *defs = pq.PQconndefaults();
    for (size_t i = 0; i < DB_NCONN_DEFAULTS; i++) {
        const char *k = db_conn_defaults[i][0];
        if (!db_opt(opts, k) && !db_opt(defs, k)) {
            keys[n] = k;
            vals[n++] = db_conn_defaults[i][1];
        }
    }
    keys[n] = vals[n] = NULL;
    if (defs) {
        pq.PQconninfoFree(defs);
    }
    pq.PQconninfoFree(opts);
    PGconn *c = pq.PQconnectdbParams(keys, vals, 1);
    if (!c || pq.PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to PostgreSQL: %s",
                 c ? pq.PQerrorMessage(c) : "out of memory");
        db_trim(err);
        if (c) {
            pq.PQfinish(c);
        }
        return NULL;
    }
    pq.PQsetNoticeProcessor(c, db_notice, NULL);
    return c;
}

PGconn *db_connect_current(const char *url, char *err, size_t errlen)
{
    PGconn *c = db_connect(url, err, errlen);
    if (!c) {
        return NULL;
    }
    int v = db_schema_version(c);
    if (v < db_schema_latest()) {
        if (v <= 0) {
            snprintf(err, errlen,
                     "the database has no ringmail schema (or it cannot be read): run `ringmail "
                     "db migrate --db URL` first");
        } else {
            snprintf(err, errlen,
                     "the database schema is at version %d and this ringmail needs version %d: "
                     "run `ringmail db migrate --db URL` first",
                     v, db_schema_latest());
        }
        pq.PQfinish(c);
        return NULL;
    }
    return c;
}

static void db_result_error(PGresult *r, PGconn *c, char *err, size_t errlen)
{
    const char *m = r ? pq.PQresultErrorMessage(r) : pq.PQerrorMessage(c);
    snprintf(err, errlen, "%s", m && *m ? m : "unknown database error");
    db_trim(err);
}

PGresult *db_checked(PGconn *c, PGresult *r, ExecStatusType want, char *err, size_t errlen)
{
    if (!r || pq.PQresultStatus(r) != want) {
        db_result_error(r, c, err, errlen);
        pq.PQclear(r);
        return NULL;
    }
    return r;
}

int db_exec(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = pq.PQexec(c, sql);
    ExecStatusType st = r ? pq.PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        db_result_error(r, c, err, errlen);
        pq.PQclear(r);
        return -1;
    }
    pq.PQclear(r);
    return 0;
}

int db_schema_version(PGconn *c)
{
    PGresult *r = pq.PQexec(c, "SELECT coalesce(max(version), 0) FROM ringmail.schema_migrations");
    int v = -1;
    if (r && pq.PQresultStatus(r) == PGRES_TUPLES_OK && pq.PQntuples(r) == 1) {
        v = atoi(pq.PQgetvalue(r, 0, 0));
    }
    pq.PQclear(r);
    return v;
}

int db_migrate(PGconn *c, int to, int *applied, char *err, size_t errlen)
{
    char why[1024];
    int n = 0;
    if (applied) {
        *applied = 0;
    }
    if (db_exec(c,
                "CREATE SCHEMA IF NOT EXISTS ringmail;"
                "CREATE TABLE IF NOT EXISTS ringmail.schema_migrations ("
                "  version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                why, sizeof why) < 0) {
        /* Two first migrations racing on CREATE SCHEMA: the loser retries once. */
        if (db_exec(c,
                    "CREATE SCHEMA IF NOT EXISTS ringmail;"
                    "CREATE TABLE IF NOT EXISTS ringmail.schema_migrations ("
                    "  version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                    why, sizeof why) < 0) {
            snprintf(err, errlen, "creating schema ringmail: %s", why);
            return -1;
        }
    }
    int last = to > 0 && to < DB_NMIGRATIONS ? to : DB_NMIGRATIONS;
    for (int v = 1; v <= last; v++) {
        if (db_exec(c, "BEGIN; SELECT pg_advisory_xact_lock(7412, 1)", why, sizeof why) < 0) {
            snprintf(err, errlen, "migration %d: %s", v, why);
            return -1;
        }
        char q[128];
        snprintf(q, sizeof q, "SELECT 1 FROM ringmail.schema_migrations WHERE version = %d", v);
        PGresult *r = pq.PQexec(c, q);
        int have = r && pq.PQresultStatus(r) == PGRES_TUPLES_OK && pq.PQntuples(r) == 1;
        pq.PQclear(r);
        if (have) {
            db_exec(c, "COMMIT", why, sizeof why);
            continue;
        }
        snprintf(q, sizeof q, "INSERT INTO ringmail.schema_migrations (version) VALUES (%d)", v);
        if (db_exec(c, db_migrations[v - 1], why, sizeof why) < 0 ||
            db_exec(c, q, why, sizeof why) < 0 || db_exec(c, "COMMIT", why, sizeof why) < 0) {
            char ignore[64];
            db_exec(c, "ROLLBACK", ignore, sizeof ignore);
            snprintf(err, errlen, "migration %d: %s", v, why);
            return -1;
        }
        n++;
    }
    if (applied) {
        *applied = n;
    }
    return 0;
}

static void db_usage(FILE *f)
{
    fprintf(f,
            "usage: ringmail db migrate --db URL [--to VERSION]\n"
            "\n"
            "  Create or upgrade the ringmail schema (idempotent). URL is a libpq\n"
            "  connection string: postgresql://user@host:port/dbname or \"host=... dbname=...\".\n"
            "  --to VERSION stops at that version (default: the latest, %d).\n",
            DB_NMIGRATIONS);
}

int db_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "migrate") != 0) {
        if (argc < 2 || strcmp(argv[1], "--help") != 0) {
            opt_no_subcommand("db", argc >= 2 ? argv[1] : NULL, "migrate");
        }
        db_usage(argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
        return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
    }
    static const struct option longopts[] = {
        {"db", required_argument, 0, 'd'},
        {"to", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *url = NULL;
    int to = 0, ch;
    optind = 1;
    while ((ch = opt_getopt(argc - 1, argv + 1, longopts)) != -1) {
        if (ch == 'd') {
            url = optarg;
        } else if (ch == 't') {
            unsigned long v;
            if (num_parse_ulong(optarg, 1, DB_NMIGRATIONS, &v) < 0) {
                fprintf(stderr, "ringmail db migrate: --to: a version from 1 to %d\n",
                        DB_NMIGRATIONS);
                return 2;
            }
            to = (int)v;
        } else if (ch == 'h') {
            db_usage(stdout);
            return 0;
        } else {
            db_usage(stderr);
            return 2;
        }
    }
    if (!url) {
        fprintf(stderr, "ringmail db migrate: --db URL is required\n");
        return 2;
    }
    char err[1024];
    PGconn *c = db_connect(url, err, sizeof err);
    if (!c) {
        fprintf(stderr, "ringmail db migrate: %s\n", err);
        return 1;
    }
    int applied = 0;
    int rc = db_migrate(c, to, &applied, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "ringmail db migrate: %s\n", err);
    } else {
        printf("schema ringmail at version %d (%d migration%s applied)\n", db_schema_version(c),
               applied, applied == 1 ? "" : "s");
    }
    pq.PQfinish(c);
    return rc < 0 ? 1 : 0;
}
