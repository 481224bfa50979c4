#!/usr/bin/env bash
# ringmail db migrate against a real, private PostgreSQL: creates the
# schema, is idempotent (twice, and two processes at once), and explains
# an unreachable server.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }

out=$("$RM" db migrate --db "$PG_URL" --to 1 2>&1)
check_eq "migrate --to 1: exit 0" 0 "$?"
check_grep "migrate --to 1: reports the version and what it applied" 'version 1 \(1 migration applied\)' <(echo "$out")
# Rows written under version 1 (next_attempt_at set whatever the state)
# must come out of the upgrade right: due only while queued or deferred.
C=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
    VALUES ('v1', 'a@sender.test', 's', 't') RETURNING id")
psql_q "INSERT INTO ringmail.recipient (campaign_id, address, state) VALUES
    ($C, 'q@a.test', 'queued'), ($C, 'd@a.test', 'deferred'), ($C, 's@a.test', 'sent'),
    ($C, 'b@a.test', 'bounced'), ($C, 'i@a.test', 'invalid')" >/dev/null
out=$("$RM" db migrate --db "$PG_URL" --to 2 2>&1)
check_eq "migrate: exit 0" 0 "$?"
check_grep "migrate: upgrades version 1 to 2" 'version 2 \(1 migration applied\)' <(echo "$out")
check_eq "upgrade: due rows keep next_attempt_at, the others lose it" "d@a.test q@a.test" \
    "$(psql_q "SELECT string_agg(address, ' ' ORDER BY address) FROM ringmail.recipient WHERE next_attempt_at IS NOT NULL")"
check_eq "upgrade: no index depends on state or lease (results update in place)" "0" \
    "$(psql_q "SELECT count(*) FROM pg_indexes WHERE schemaname = 'ringmail' AND tablename = 'recipient' AND (indexdef LIKE '%state%' OR indexdef LIKE '%lease%')")"

# send refuses a schema older than it writes, and says what to do.
timeout 20 "$RM" send --db "$PG_URL" --campaign "$C" --node old --journal "$E2E_TMP/old.journal" \
    >/dev/null 2>"$E2E_TMP/old.err"
check_eq "send on schema 2: exit 2 (refused at start)" 2 "$?"
check_grep "send on schema 2: names both versions and the command" \
    'schema is at version 2 and this ringmail needs version 9: run `ringmail db migrate' "$E2E_TMP/old.err"
out=$("$RM" db migrate --db "$PG_URL" 2>&1)
check_grep "migrate: upgrades version 2 to 9" 'version 9 \(7 migrations applied\)' <(echo "$out")

check_eq "migrate: the eighteen tables exist" "armed attempt campaign claim feedback_event isp_backoff isp_hold isp_suspend mta_sts_policy node node_lane recipient seed_delivery session suppression sweep tls_policy_text tlsrpt_report" \
    "$(psql_q "SELECT string_agg(table_name, ' ' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'ringmail' AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations'")"
check_eq "migrate: the views of delivery records and of what nodes hold exist" "delivery held" \
    "$(psql_q "SELECT string_agg(table_name, ' ' ORDER BY table_name) FROM information_schema.views WHERE table_schema = 'ringmail'")"
out=$("$RM" db migrate --db "$PG_URL" 2>&1)
check_eq "migrate twice: exit 0" 0 "$?"
check_grep "migrate twice: nothing applied" '0 migrations applied' <(echo "$out")
check_eq "migrate twice: one row per version" 9 "$(psql_q 'SELECT count(*) FROM ringmail.schema_migrations')"

# Schema 9 splits the delivery table into attempt and session rows behind a
# view of the same name and columns: rows written before it read the same
# after it, and a row inserted into the view by hand lands in both tables.
psql_q "CREATE DATABASE m8" >/dev/null
M8="host=$PG_DIR port=$PG_PORT user=postgres dbname=m8"
"$RM" db migrate --db "$M8" --to 8 >/dev/null 2>&1
check_eq "schema 8 -> 9: at 8 first" 8 "$(psql "$M8" -X -A -t -c 'SELECT max(version) FROM ringmail.schema_migrations')"
psql "$M8" -X -q -c "INSERT INTO ringmail.campaign (id, name, mail_from, subject, text_body)
    VALUES (1, 'm', 'news@sender.test', 's', 't');
    INSERT INTO ringmail.recipient (id, campaign_id, address) VALUES (10, 1, 'x@a.test'),
    (11, 1, 'y@b.test'), (12, 1, 'z@c.test')" >/dev/null
psql "$M8" -X -q -c "INSERT INTO ringmail.delivery (campaign_id, recipient_id, attempt, outcome, final,
    reason, connect_ms, tls_ms, transaction_ms, isp, mx, peer, source, code, enhanced, reply,
    tls_version, tls_cipher, tls_group, tls_resumed, tls_verify, peer_subject, peer_issuer,
    peer_sha256, data_in_flight, node, category, bounce, bounce_rule, conn_first, tls_policy,
    tls_policy_mode, tls_result, tls_policy_id) VALUES
    (1, 10, 1, 'accepted', true, 'accepted', 12, 30, 5, 'gmail', 'mx1.a.test', '127.0.0.1:25',
     '127.0.0.2', 250, '2.0.0', '2.0.0 Ok', 'TLSv1.3', 'TLS_AES_128_GCM_SHA256', 'X25519', false,
     'verified', 'CN=mx1', 'CN=ca', 'ab12', false, 'n1', NULL, NULL, NULL, true, 'mta-sts',
     'enforce', NULL, 'id1'),
    (1, 11, 1, 'deferred', false, 'rcpt_deferred', NULL, NULL, 7, 'before', NULL, NULL, NULL, 421,
     '4.7.0', '4.7.0 try later', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, 'n2',
     'throttled', 'soft', 'rfc3463: X.7.0', NULL, NULL, NULL, NULL, NULL),
    (1, 11, 2, 'deferred', false, 'rcpt_deferred', NULL, NULL, 7, 'yahoo', NULL, NULL, NULL, 421,
     '4.7.0', '4.7.0 try later', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, 'n2',
     'throttled', 'soft', 'rfc3463: X.7.0', NULL, NULL, NULL, 'dns-tlsa-invalid', NULL)" >/dev/null
cols="id, campaign_id, recipient_id, attempt, outcome, final, reason, at, connect_ms, tls_ms,
    transaction_ms, isp, mx, peer, source, code, enhanced, reply, tls_version, tls_cipher,
    tls_group, tls_resumed, tls_verify, peer_subject, peer_issuer, peer_sha256, data_in_flight,
    node, category, bounce, bounce_rule, conn_first, tls_policy, tls_policy_mode, tls_result,
    tls_policy_id"
before=$(psql "$M8" -X -A -t -c "SELECT $cols FROM ringmail.delivery ORDER BY id")
out=$("$RM" db migrate --db "$M8" 2>&1)
check_grep "schema 8 -> 9: migrated" 'version 9 \(1 migration applied\)' <(echo "$out")
after=$(psql "$M8" -X -A -t -c "SELECT $cols FROM ringmail.delivery ORDER BY id")
check_eq "schema 8 -> 9: the view shows every old row, column for column" "$before" "$after"
check_eq "schema 8 -> 9: one attempt and one session row each" "3 3" \
    "$(psql "$M8" -X -A -t -c "SELECT (SELECT count(*) FROM ringmail.attempt) || ' ' || (SELECT count(*) FROM ringmail.session)")"
psql "$M8" -X -q -c "INSERT INTO ringmail.delivery (campaign_id, recipient_id, attempt, outcome,
    final, isp, peer, tls_version, node) VALUES (1, 12, 1, 'accepted', true, 'gmail',
    '127.0.0.1:25', 'TLSv1.2', 'n3')" >/dev/null
check_eq "schema 8 -> 9: a row inserted into the view reads back whole, after the old ones" \
    "t|gmail|127.0.0.1:25|TLSv1.2|n3|f" \
    "$(psql "$M8" -X -A -t -c "SELECT id > 2, isp, peer, tls_version, node, data_in_flight FROM ringmail.delivery WHERE recipient_id = 12")"
check_eq "schema 8 -> 9: each recipient has the ISP of its last attempt (none: none)" \
    "10:gmail 11:yahoo 12:-" \
    "$(psql "$M8" -X -A -t -c "SELECT string_agg(id || ':' || coalesce(isp, '-'), ' ' ORDER BY id) FROM ringmail.recipient")"
check_eq "schema 8 -> 9: the id sequence goes on from the old rows" "4" \
    "$(psql "$M8" -X -A -t -c "SELECT max(id) FROM ringmail.attempt")"

# Two processes on a fresh database at once: each version applied exactly once.
psql_q "CREATE DATABASE race" >/dev/null
RACE="host=$PG_DIR port=$PG_PORT user=postgres dbname=race"
"$RM" db migrate --db "$RACE" >"$E2E_TMP/r1.log" 2>&1 & p1=$!
"$RM" db migrate --db "$RACE" >"$E2E_TMP/r2.log" 2>&1 & p2=$!
wait $p1; r1=$?; wait $p2; r2=$?
check_eq "concurrent migrate: both exit 0" "0 0" "$r1 $r2"
check_eq "concurrent migrate: versions 1 to 9 recorded once each" "1 2 3 4 5 6 7 8 9" \
    "$(psql "$RACE" -X -A -t -c "SELECT string_agg(version::text, ' ' ORDER BY version) FROM ringmail.schema_migrations")"

"$RM" db migrate --db "host=127.0.0.1 port=1 dbname=x connect_timeout=2" >/dev/null 2>"$E2E_TMP/down.err"
check_eq "server down: exit 1" 1 "$?"
check_grep "server down: says it cannot connect, and why" 'cannot connect to PostgreSQL: .*refused' "$E2E_TMP/down.err"
"$RM" db migrate >/dev/null 2>"$E2E_TMP/noarg.err"
check_eq "no --db: exit 2" 2 "$?"
e2e_finish
