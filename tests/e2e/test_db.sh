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
    'schema is at version 2 and this ringmail needs version 8: run `ringmail db migrate' "$E2E_TMP/old.err"
out=$("$RM" db migrate --db "$PG_URL" 2>&1)
check_grep "migrate: upgrades version 2 to 8" 'version 8 \(6 migrations applied\)' <(echo "$out")

check_eq "migrate: the seventeen tables exist" "armed campaign claim delivery feedback_event isp_backoff isp_hold isp_suspend mta_sts_policy node node_lane recipient seed_delivery suppression sweep tls_policy_text tlsrpt_report" \
    "$(psql_q "SELECT string_agg(table_name, ' ' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'ringmail' AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations'")"
check_eq "migrate: the view of what nodes hold exists" "held" \
    "$(psql_q "SELECT string_agg(table_name, ' ') FROM information_schema.views WHERE table_schema = 'ringmail'")"
out=$("$RM" db migrate --db "$PG_URL" 2>&1)
check_eq "migrate twice: exit 0" 0 "$?"
check_grep "migrate twice: nothing applied" '0 migrations applied' <(echo "$out")
check_eq "migrate twice: one row per version" 8 "$(psql_q 'SELECT count(*) FROM ringmail.schema_migrations')"

# Two processes on a fresh database at once: each version applied exactly once.
psql_q "CREATE DATABASE race" >/dev/null
RACE="host=$PG_DIR port=$PG_PORT user=postgres dbname=race"
"$RM" db migrate --db "$RACE" >"$E2E_TMP/r1.log" 2>&1 & p1=$!
"$RM" db migrate --db "$RACE" >"$E2E_TMP/r2.log" 2>&1 & p2=$!
wait $p1; r1=$?; wait $p2; r2=$?
check_eq "concurrent migrate: both exit 0" "0 0" "$r1 $r2"
check_eq "concurrent migrate: versions 1 to 8 recorded once each" "1 2 3 4 5 6 7 8" \
    "$(psql "$RACE" -X -A -t -c "SELECT string_agg(version::text, ' ' ORDER BY version) FROM ringmail.schema_migrations")"

"$RM" db migrate --db "host=127.0.0.1 port=1 dbname=x connect_timeout=2" >/dev/null 2>"$E2E_TMP/down.err"
check_eq "server down: exit 1" 1 "$?"
check_grep "server down: says it cannot connect, and why" 'cannot connect to PostgreSQL: .*refused' "$E2E_TMP/down.err"
"$RM" db migrate >/dev/null 2>"$E2E_TMP/noarg.err"
check_eq "no --db: exit 2" 2 "$?"
e2e_finish
