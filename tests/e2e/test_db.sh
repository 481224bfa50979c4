#!/usr/bin/env bash
# ringmail db migrate against a real, private PostgreSQL: creates the
# schema, is idempotent (twice, and two processes at once), and explains
# an unreachable server.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }

out=$("$RM" db migrate --db "$PG_URL" 2>&1)
check_eq "migrate: exit 0" 0 "$?"
check_grep "migrate: reports the version and what it applied" 'version 1 \(1 migration applied\)' <(echo "$out")
check_eq "migrate: the four tables exist" "campaign delivery recipient suppression" \
    "$(psql_q "SELECT string_agg(table_name, ' ' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'ringmail' AND table_name <> 'schema_migrations'")"
out=$("$RM" db migrate --db "$PG_URL" 2>&1)
check_eq "migrate twice: exit 0" 0 "$?"
check_grep "migrate twice: nothing applied" '0 migrations applied' <(echo "$out")
check_eq "migrate twice: one row per version" 1 "$(psql_q 'SELECT count(*) FROM ringmail.schema_migrations')"

# Two processes on a fresh database at once: each version applied exactly once.
psql_q "CREATE DATABASE race" >/dev/null
RACE="host=$PG_DIR port=$PG_PORT user=postgres dbname=race"
"$RM" db migrate --db "$RACE" >"$E2E_TMP/r1.log" 2>&1 & p1=$!
"$RM" db migrate --db "$RACE" >"$E2E_TMP/r2.log" 2>&1 & p2=$!
wait $p1; r1=$?; wait $p2; r2=$?
check_eq "concurrent migrate: both exit 0" "0 0" "$r1 $r2"
check_eq "concurrent migrate: version 1 recorded once" 1 \
    "$(psql "$RACE" -X -A -t -c 'SELECT count(*) FROM ringmail.schema_migrations')"

"$RM" db migrate --db "host=127.0.0.1 port=1 dbname=x connect_timeout=2" >/dev/null 2>"$E2E_TMP/down.err"
check_eq "server down: exit 1" 1 "$?"
check_grep "server down: says it cannot connect, and why" 'cannot connect to PostgreSQL: .*refused' "$E2E_TMP/down.err"
"$RM" db migrate >/dev/null 2>"$E2E_TMP/noarg.err"
check_eq "no --db: exit 2" 2 "$?"
e2e_finish
