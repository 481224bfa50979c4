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
check_eq "schema migrated to the latest version" 9 "$(psql_q 'SELECT max(version) FROM ringmail.schema_migrations')"

SINK_PORT=$(free_port)

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

# new_campaign NAME N (lib.sh's, redefined here): a campaign with N recipients split over a.test and
# b.test (plus tempfail/permfail ones); prints its id.
new_campaign() {
    local id
    id=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
        VALUES ('$1', 'news@sender.test', 'Hello {{first_name|there}}',
                'Dear {{first_name|friend}}, this is campaign $1.') RETURNING id")
    psql_q "INSERT INTO ringmail.recipient (campaign_id, address, vars)
        SELECT $id, '$1' || g || '@' || CASE WHEN g % 2 = 0 THEN 'a.test' ELSE 'b.test' END,
               jsonb_build_object('first_name', 'U' || g)
        FROM generate_series(1, $2) g" >/dev/null
    psql_q "INSERT INTO ringmail.recipient (campaign_id, address) VALUES
        ($id, '$1-extra@b.test')" >/dev/null
    # permfail@ is a 550 at the sink: once bounced it is suppressed for good,
    # so only the first campaign has it.
    [ "$1" = one ] && psql_q "INSERT INTO ringmail.recipient (campaign_id, address) VALUES
        ($id, 'permfail@a.test')" >/dev/null
    echo "$id"
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

# ============================================================ 1. one process, MX from dnsmasq
DNS_PORT=$(free_port)
e2e_bg dnsmasq dnsmasq --keep-in-foreground --port="$DNS_PORT" --listen-address=127.0.0.1 \
    --bind-interfaces --no-resolv --no-hosts --local=/test/ --local-ttl=300 --pid-file= \
    --mx-host=a.test,mx.a.test,10 --host-record=mx.a.test,127.0.0.71 \
    --mx-host=b.test,mx.b.test,10 --host-record=mx.b.test,127.0.0.72
check "dnsmasq serves a.test and b.test" wait_port 127.0.0.1 "$DNS_PORT" 10 "$E2E_BG_PID"
grep -v '^\[route\|^server' "$E2E_TMP/c.conf" >"$E2E_TMP/mx.conf"
start_sink a 127.0.0.71 --defer-pct 10 --reject-pct 3 --seed 7
start_sink b 127.0.0.72
C1=$(new_campaign one 20000)
psql_q "INSERT INTO ringmail.suppression (address, reason) VALUES ('one3@b.test', 'test')" >/dev/null
t0=$(now_ms)
timeout 120 "$RM" send --db "$PG_URL" --campaign "$C1" --config "$E2E_TMP/mx.conf" --node n1 \
    --resolver "127.0.0.1:$DNS_PORT" --mx-port "$SINK_PORT" \
    --journal "$E2E_TMP/n1.journal" --json >"$E2E_TMP/one.json" 2>"$E2E_TMP/one.err"
rc=$?
echo "# campaign of 20002 recipients through dnsmasq MX: $(($(now_ms) - t0)) ms"
sleep 0.3
check_eq "one: exit 0" 0 "$rc"
check_eq "one: every recipient final" 0 "$(nonfinal "$C1")"
check_eq "one: sinks saw each sent recipient exactly once" 0 \
    "$(sink_once "$C1" "${SINK_STATS[a]}" "${SINK_STATS[b]}")"
check_eq "one: every attempt a connection carried records the configured TLS policy (config/none, met)" \
    "config none 0" \
    "$(psql_q "SELECT string_agg(DISTINCT tls_policy || ' ' || tls_policy_mode, ',') || ' ' || count(tls_result) FROM ringmail.delivery WHERE campaign_id = $C1 AND peer IS NOT NULL")"
"$RM" report --db "$PG_URL" --campaign "$C1" >"$E2E_TMP/one.report" 2>&1
check_grep "one: report: the destination TLS policy table (policy, mode, result, attempts, connections)" \
    '^  config +none +met +[0-9]+ +[1-9][0-9]*$' "$E2E_TMP/one.report"
check_grep "one: report: the posture names the recorded policy" \
    '^  plaintext +config none +[0-9]+$' "$E2E_TMP/one.report"
check_ge "one: some were deferred and retried (attempts > 1 and sent)" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C1 AND state = 'sent' AND attempts > 1")"
check_eq "one: an address suppressed after the import is not sent" "suppressed" \
    "$(psql_q "SELECT state FROM ringmail.recipient WHERE campaign_id = $C1 AND address = 'one3@b.test'")"
check_eq "one: ... and no sink saw it" 0 "$(grep -c '"one3@b.test"' "${SINK_STATS[b]}")"
check_eq "one: permfail@a.test bounced 550" "bounced" \
    "$(psql_q "SELECT state FROM ringmail.recipient WHERE campaign_id = $C1 AND address = 'permfail@a.test'")"
check_ge "one: the sink's 3% rejections bounced" 100 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C1 AND state = 'bounced'")"
check_eq "one: bounces joined the suppression list" \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C1 AND state = 'bounced'")" \
    "$(psql_q "SELECT count(*) FROM ringmail.suppression WHERE campaign_id = $C1")"
check_eq "one: one delivery row per attempt" \
    "$(psql_q "SELECT sum(attempts) FROM ringmail.recipient WHERE campaign_id = $C1 AND state IN ('sent', 'bounced')")" \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery d JOIN ringmail.recipient r ON r.id = d.recipient_id WHERE d.campaign_id = $C1 AND r.state IN ('sent', 'bounced')")"
check_eq "one: accepted delivery rows = sink's accepted RCPTs" \
    "$(($(jget "${SINK_STATS[a]}" accepted_rcpts) + $(jget "${SINK_STATS[b]}" accepted_rcpts)))" \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C1 AND outcome = 'accepted'")"
check_eq "one: routed by MX: accepted rows name mx.a.test / mx.b.test" 0 \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C1 AND outcome = 'accepted' AND mx NOT IN ('mx.a.test', 'mx.b.test')")"
check_eq "one: accepted rows carry connect and transaction times" 0 \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C1 AND outcome = 'accepted' AND (connect_ms IS NULL OR transaction_ms IS NULL OR transaction_ms < 0)")"
check_eq "one: the reply is recorded (250 2.0.0 on accepted rows)" 0 \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C1 AND outcome = 'accepted' AND (code <> 250 OR reply IS NULL OR isp IS NULL OR peer IS NULL)")"
# Schema 9: an attempt row points to its connection's session row.
check_eq "one: every attempt row has its session (none dangling)" 0 \
    "$(psql_q "SELECT count(*) FROM ringmail.attempt a LEFT JOIN ringmail.session s ON s.id = a.session_id WHERE a.campaign_id = $C1 AND s.id IS NULL")"
check_eq "one: one session per connection (attempts on a connection share one)" "t" \
    "$(psql_q "SELECT count(DISTINCT session_id) = count(*) FILTER (WHERE conn_first) AND count(*) FILTER (WHERE conn_first) < count(*) FROM ringmail.attempt WHERE campaign_id = $C1 AND conn_first IS NOT NULL")"
check_eq "one: every recipient tried has the ISP of its attempts" 0 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient r WHERE r.campaign_id = $C1 AND r.first_attempt_at IS NOT NULL AND r.isp IS DISTINCT FROM (SELECT d.isp FROM ringmail.attempt d WHERE d.campaign_id = $C1 AND d.recipient_id = r.id ORDER BY d.id DESC LIMIT 1)")"
check_eq "one: every message rendered (no recipient invalid)" "0 0" \
    "$(jget "$E2E_TMP/one.json" invalid) $(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C1 AND state = 'invalid'")"
stop_sink a
stop_sink b

# ============================================================ 1b. injection, ambiguous resend
start_sink a 127.0.0.71
start_sink b 127.0.0.72
C5=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
    VALUES ('inj', 'news@sender.test', 'Hi {{first_name}}', 'Body') RETURNING id")
psql_q "INSERT INTO ringmail.recipient (campaign_id, address, vars, state, reason) VALUES
    ($C5, 'evil@a.test', jsonb_build_object('first_name', E'Eve\r\nBcc: all@b.test'), 'queued', NULL),
    ($C5, 'fine@a.test', '{\"first_name\": \"Fay\"}', 'queued', NULL),
    ($C5, 'again@b.test', '{}', 'ambiguous', 'DATA was in flight when node x stopped')" >/dev/null
"$RM" send --db "$PG_URL" --campaign "$C5" --config "$E2E_TMP/c.conf" --node n5 \
    --journal "$E2E_TMP/n5.journal" --json >"$E2E_TMP/inj.json" 2>"$E2E_TMP/inj.err"
check_eq "injection: exit 0" 0 "$?"
check_eq "injection: CR/LF bound for a header makes the recipient invalid" "invalid" \
    "$(psql_q "SELECT state FROM ringmail.recipient WHERE campaign_id = $C5 AND address = 'evil@a.test'")"
check_grep "injection: the reason names the header injection" 'CR or LF' \
    <(psql_q "SELECT text FROM (SELECT reply AS text FROM ringmail.delivery d JOIN ringmail.recipient r ON r.id = d.recipient_id WHERE r.address = 'evil@a.test' AND d.campaign_id = $C5) x")
check_eq "injection: nothing was sent for it" 0 "$(grep -c 'evil@a.test\|all@b.test' "${SINK_STATS[a]}")"
check_eq "injection: the other recipient was sent" "sent" \
    "$(psql_q "SELECT state FROM ringmail.recipient WHERE campaign_id = $C5 AND address = 'fine@a.test'")"
check_eq "ambiguous: left alone without --resend-ambiguous" "ambiguous" \
    "$(psql_q "SELECT state FROM ringmail.recipient WHERE campaign_id = $C5 AND address = 'again@b.test'")"
"$RM" send --db "$PG_URL" --campaign "$C5" --config "$E2E_TMP/c.conf" --node n5 \
    --journal "$E2E_TMP/n5.journal" --resend-ambiguous --json >/dev/null 2>"$E2E_TMP/inj2.err"
check_eq "ambiguous: --resend-ambiguous sends it" "sent" \
    "$(psql_q "SELECT state FROM ringmail.recipient WHERE campaign_id = $C5 AND address = 'again@b.test'")"

stop_sink a
stop_sink b

# ============================================================ 1c. where rendering runs
# The same campaign rendered on the delivery thread (--render-threads 0)
# and on three render workers: every recipient sent exactly once, the
# header injection refused either way.
for rt in 0 3; do
    start_sink a 127.0.0.71
    start_sink b 127.0.0.72
    CR=$(new_campaign "rt$rt" 3000)
    psql_q "INSERT INTO ringmail.recipient (campaign_id, address, vars) VALUES
        ($CR, 'evil$rt@a.test', jsonb_build_object('first_name', E'Eve\nBcc: x@b.test'))" >/dev/null
    timeout 120 "$RM" send --db "$PG_URL" --campaign "$CR" --config "$E2E_TMP/c.conf" --node "rt$rt" \
        --journal "$E2E_TMP/rt$rt.journal" --render-threads $rt --json >"$E2E_TMP/rt$rt.json" \
        2>"$E2E_TMP/rt$rt.err"
    check_eq "render threads $rt: exit 0" 0 "$?"
    stop_sink a
    stop_sink b
    check_eq "render threads $rt: 3001 sent, 1 invalid, nothing left" "3001 1 0" \
        "$(psql_q "SELECT count(*) FILTER (WHERE state = 'sent') || ' ' || count(*) FILTER (WHERE state = 'invalid') || ' ' || count(*) FILTER (WHERE state IN ('queued', 'claimed', 'deferred')) FROM ringmail.recipient WHERE campaign_id = $CR")"
    check_eq "render threads $rt: the sinks saw each sent recipient once, nothing else" 0 \
        "$(sink_once "$CR" "${SINK_STATS[a]}" "${SINK_STATS[b]}" | tail -1)"
done

# Scenarios 2-4 run at a bounded rate so that there is time to interfere.
sed -e 's/^max_connections = 4$/max_connections = 4\nmsg_rate = 700\/s/' "$E2E_TMP/c.conf" >"$E2E_TMP/slow.conf"

# seen_ok ID SINK...: nobody was accepted twice, and everyone the sinks
# accepted is `sent` or `ambiguous` in the database. Prints a problem count.
seen_ok() {
    local id=$1
    shift
    psql_q "SELECT address FROM ringmail.recipient WHERE campaign_id = $id
            AND state IN ('sent', 'ambiguous')" >"$E2E_TMP/ok.$id"
    "$E2E_PY" - "$E2E_TMP/ok.$id" "$@" <<'PY'
import json, sys
ok = set(l.strip() for l in open(sys.argv[1]) if l.strip())
seen = {}
for f in sys.argv[2:]:
    for a, n in json.load(open(f)).get("deliveries", {}).items():
        seen[a] = seen.get(a, 0) + n
bad = [a for a, n in seen.items() if n != 1 or a not in ok]
for a in bad[:5]:
    print("problem:", a, seen[a], a in ok, file=sys.stderr)
print(len(bad))
PY
}

# ============================================================ 2. two processes
start_sink a 127.0.0.71
start_sink b 127.0.0.72
C2=$(new_campaign two 4000)
for n in n2a n2b; do
    timeout 120 "$RM" send --db "$PG_URL" --campaign "$C2" --config "$E2E_TMP/slow.conf" \
        --node $n --journal "$E2E_TMP/$n.journal" --batch 100 --json \
        >"$E2E_TMP/$n.json" 2>"$E2E_TMP/$n.err" &
    eval "P_$n=\$!"
done
wait "$P_n2a"; r1=$?
wait "$P_n2b"; r2=$?
sleep 0.3
check_eq "two: both processes exit 0" "0 0" "$r1 $r2"
check_eq "two: every recipient final" 0 "$(nonfinal "$C2")"
check_eq "two: sinks saw each sent recipient exactly once" 0 \
    "$(sink_once "$C2" "${SINK_STATS[a]}" "${SINK_STATS[b]}")"
check_eq "two: both nodes delivered a share" 2 \
    "$(psql_q "SELECT count(DISTINCT node) FROM ringmail.delivery WHERE campaign_id = $C2 AND outcome = 'accepted'")"
check_eq "two: 4001 sent, none bounced" "4001 0" \
    "$(psql_q "SELECT count(*) FILTER (WHERE state = 'sent') || ' ' || count(*) FILTER (WHERE state = 'bounced') FROM ringmail.recipient WHERE campaign_id = $C2")"
stop_sink a
stop_sink b

# ============================================================ 3. kill -9, three times
start_sink a 127.0.0.71
start_sink b 127.0.0.72
C3=$(new_campaign crash 6000)
for k in 1 2 3; do
    before=$(count_state "$C3" sent)
    "$RM" send --db "$PG_URL" --campaign "$C3" --config "$E2E_TMP/slow.conf" --node n3 \
        --journal "$E2E_TMP/n3.journal" --json >"$E2E_TMP/crash$k.json" 2>"$E2E_TMP/crash$k.err" &
    pid=$!
    # A random moment once this process is sending (a slow sanitizer build
    # can take longer than the moment to start; the claims the last one
    # left behind do not count): its claims are held when it dies.
    for _ in $(seq 1 100); do
        [ "$(count_state "$C3" sent)" -gt "$before" ] && break
        sleep 0.1
    done
    sleep "0.$((RANDOM % 9 + 1))"
    kill -9 "$pid"
    wait "$pid" 2>/dev/null
    echo "# kill -9 number $k after a random moment; sent so far: $(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C3 AND state = 'sent'")"
done
timeout 120 "$RM" send --db "$PG_URL" --campaign "$C3" --config "$E2E_TMP/slow.conf" --node n3 \
    --journal "$E2E_TMP/n3.journal" --json >"$E2E_TMP/crash-final.json" 2>"$E2E_TMP/crash-final.err"
rc=$?
sleep 0.3
AMB=$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C3 AND state = 'ambiguous'")
echo "# after 3 kills: $AMB ambiguous: $(psql_q "SELECT string_agg(address, ' ') FROM ringmail.recipient WHERE campaign_id = $C3 AND state = 'ambiguous'")"
check_eq "crash: the restart runs to the end" 0 "$rc"
check_grep "crash: the restart reports what it recovered" 'recovered from an earlier stop of node n3' \
    "$E2E_TMP/crash-final.err"
check_eq "crash: every recipient in exactly one final state" 0 "$(nonfinal "$C3")"
check_eq "crash: nobody accepted twice; everyone accepted is sent or ambiguous" 0 \
    "$(seen_ok "$C3" "${SINK_STATS[a]}" "${SINK_STATS[b]}")"
check_le "crash: ambiguous only for DATA in flight (at most 8 connections x 3 kills)" 24 "$AMB"
check_eq "crash: none lost (sent + ambiguous = all 6001)" 6001 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C3 AND state IN ('sent', 'ambiguous')")"
stop_sink a
stop_sink b

# ============================================================ 3b. SIGTERM: a clean stop, then resume
start_sink a 127.0.0.71
start_sink b 127.0.0.72
C6=$(new_campaign term 4000)
"$RM" send --db "$PG_URL" --campaign "$C6" --config "$E2E_TMP/slow.conf" --node n6 \
    --journal "$E2E_TMP/n6.journal" --json >"$E2E_TMP/term.json" 2>"$E2E_TMP/term.err" &
pid=$!
sleep 1
kill -TERM "$pid"
wait "$pid"
check_eq "sigterm: exit 1 (work is left)" 1 "$?"
check_grep "sigterm: says it stopped, what went back to the queue and how to resume" \
    'stopped after [0-9.]+ s; every result is written; [0-9]+ claimed recipients? went back to the queue; run again to resume' \
    "$E2E_TMP/term.err"
check_eq "sigterm: nothing left claimed" 0 \
    "$(count_state "$C6" claimed)"
check_ge "sigterm: part of the campaign is still queued" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C6 AND state = 'queued'")"
check_eq "sigterm: nothing ambiguous after a clean stop" 0 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C6 AND state = 'ambiguous'")"
"$RM" send --db "$PG_URL" --campaign "$C6" --config "$E2E_TMP/slow.conf" --node n6 \
    --journal "$E2E_TMP/n6.journal" --json >/dev/null 2>"$E2E_TMP/term2.err"
sleep 0.3
check_eq "sigterm: the rerun finishes the campaign" 0 "$(nonfinal "$C6")"
check_eq "sigterm: sinks saw each recipient exactly once across both runs" 0 \
    "$(sink_once "$C6" "${SINK_STATS[a]}" "${SINK_STATS[b]}")"
stop_sink a
stop_sink b

# ============================================================ 4. PostgreSQL restarted mid-campaign
start_sink a 127.0.0.71
start_sink b 127.0.0.72
C4=$(new_campaign pgrestart 5000)
timeout 120 "$RM" send --db "$PG_URL" --campaign "$C4" --config "$E2E_TMP/slow.conf" --node n4 \
    --journal "$E2E_TMP/n4.journal" --json >"$E2E_TMP/pg.json" 2>"$E2E_TMP/pg.err" &
pid=$!
sleep 1.5
_pg_as "'$(pg_bin)/pg_ctl' -D '$PG_DIR/data' -m fast -w restart -l '$PG_DIR/pg.log'" >/dev/null 2>&1
check_eq "pg restart: PostgreSQL came back" 0 "$?"
wait "$pid"
rc=$?
sleep 0.3
check_eq "pg restart: the campaign finishes (exit 0)" 0 "$rc"
check_grep "pg restart: the engine noticed and reconnected" 'database: connected again' "$E2E_TMP/pg.err"
check_eq "pg restart: every recipient final" 0 "$(nonfinal "$C4")"
check_eq "pg restart: sinks saw each sent recipient exactly once, none lost" 0 \
    "$(sink_once "$C4" "${SINK_STATS[a]}" "${SINK_STATS[b]}")"
check_eq "pg restart: 5001 sent" 5001 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C4 AND state = 'sent'")"
stop_sink a
stop_sink b

e2e_finish
