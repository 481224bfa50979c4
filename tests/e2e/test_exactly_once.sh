#!/usr/bin/env bash
# Exactly once under faults: every recipient ends in one recorded state,
# none is lost, and none reaches a server twice unless it is `ambiguous`.
#   1. kill -9 loops, with deferrals and retries in the same process (the
#      journal read in order: a retry killed during its DATA is ambiguous,
#      not sent again under an old deferral), and without
#   2. a second process with the same --node is refused
#   3. a 20 s lock on the recipient table with two nodes on --lease 10:
#      neither takes the other over, nothing becomes ambiguous
#   4. two nodes, one killed: the survivor takes it over within two
#      heartbeats and only armed claims (DATA possibly in flight) are
#      ambiguous; the killed node's restart settles those its journal knows
#   5. a body whose reply never comes on a live connection is ambiguous at
#      once, never retried on its own; --resend-ambiguous sends it
#   6. PostgreSQL away: nothing new starts once the node's lease lapses, the
#      status line and /metrics say so, and the campaign finishes after
#   7. one ISP suspended (S3150 => suspend 1h) while another sends: the other
#      finishes, the suspended one's recipients wait, nothing lost or doubled
#   8. kill -9 loops on claims by range (fresh recipients, schema 8) over two
#      ISPs, one deferring (its retries claimed row by row in the same
#      process), the other suspended for 3 s by a reply while the first sends
# EXO_COUNT (recipients per kill loop, default 3000), EXO_KILLS (default 5)
# and EXO_LATENCY (ms, default 50) make it the issue's 50,000-recipient probe.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null
COUNT=${EXO_COUNT:-3000}
KILLS=${EXO_KILLS:-5}
LAT=${EXO_LATENCY:-50} # the sink's reply delay, ms

SINK_PORT=$(free_port)

# Deferred recipients come back 300 ms later and are claimed again by the
# same process: a kill during a retry's DATA is the journal's hard case.
cat >"$E2E_TMP/c.conf" <<CONF
[global]
tls = none
retry = 300ms
max_age = 1h
[isp x]
domains = x.test
max_connections = 20
[route x.test]
server = 127.0.0.74:$SINK_PORT
CONF

delivered() { # ADDRESS: how many times the sink x accepted it
    "$E2E_PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("deliveries", {}).get(sys.argv[2], 0))' \
        "${SINK_STATS[x]}" "$1"
}
# audit ID: campaign_audit (lib.sh) against the sink x.
audit() { campaign_audit "$1" "${SINK_STATS[x]}"; }

# kill_loop NAME ID [CONF]: KILLS kill -9s at random moments while node NAME
# sends, each followed by a restart, then a run to the end.
kill_loop() {
    local name=$1 id=$2 conf=${3:-$E2E_TMP/c.conf} k pid rc
    for ((k = 1; k <= KILLS; k++)); do
        "$RM" send --db "$PG_URL" --campaign "$id" --config "$conf" --node "$name" \
            --journal "$E2E_TMP/$name.journal" --window 40 --json \
            >"$E2E_TMP/$name.$k.json" 2>"$E2E_TMP/$name.$k.err" &
        pid=$!
        for _ in $(seq 1 100); do
            [ "$(held_by "$id" "$name")" -gt 0 ] && break
            sleep 0.1
        done
        sleep "$((RANDOM % 3 + 3)).$((RANDOM % 10))" # 3-6 s: retries come back in-process
        kill -9 "$pid"
        wait "$pid" 2>/dev/null
        echo "# $name: kill -9 number $k; sent so far $(count_state "$id" sent)," \
            "ambiguous $(count_state "$id" ambiguous)"
    done
    timeout $((120 + COUNT / 20)) "$RM" send --db "$PG_URL" --campaign "$id" --config "$conf" \
        --node "$name" --journal "$E2E_TMP/$name.journal" --window 40 --json \
        >"$E2E_TMP/$name.final.json" 2>"$E2E_TMP/$name.final.err"
    rc=$?
    sleep 0.3 # the sink's stats file, every 100 ms
    check_eq "$name: the run after $KILLS kills finishes (exit 0)" 0 "$rc"
}

# ============================================================ 1a. the journal, read in order
# Four recipients node jn held when it died, and its journal: j1 deferred
# once, then retried, killed during the retry's DATA (ambiguous, never
# sent again); j2 accepted before the kill (its outcome is written, not
# sent again); j3's deferral is already in the database (the line is
# stale: j3 is queued and sent once, with no recovered row); j4 nothing.
start_sink x 127.0.0.74
CJ=$(new_campaign j 4)
psql_q "UPDATE ringmail.recipient SET state = 'claimed', lease_owner = 'jn',
    attempts = CASE WHEN address = 'j3@x.test' THEN 1 ELSE 0 END
    WHERE campaign_id = $CJ" >/dev/null
id_of() { psql_q "SELECT id FROM ringmail.recipient WHERE campaign_id = $CJ AND address = '$1@x.test'"; }
J1=$(id_of j1) J2=$(id_of j2) J3=$(id_of j3)
cat >"$E2E_TMP/jn.journal" <<JOURNAL
D $J1
R $J1 1 0 0.300 451 deferred deferred rcpt_deferred
R $J3 1 0 0.300 451 deferred deferred rcpt_deferred
D $J2
D $J1
R $J2 1 1 0.000 250 accepted sent accepted
JOURNAL
timeout 60 "$RM" send --db "$PG_URL" --campaign "$CJ" --config "$E2E_TMP/c.conf" --node jn \
    --journal "$E2E_TMP/jn.journal" --json >"$E2E_TMP/jn.json" 2>"$E2E_TMP/jn.err"
check_eq "journal: the restart runs (exit 0)" 0 "$?"
sleep 0.3
check_eq "journal: a retry killed during its DATA is ambiguous, not sent again" \
    "ambiguous 0" "$(psql_q "SELECT state FROM ringmail.recipient WHERE id = $J1") $(delivered j1@x.test)"
check_eq "journal: an outcome the journal knows is written, not sent again" "sent 0" \
    "$(psql_q "SELECT state FROM ringmail.recipient WHERE id = $J2") $(delivered j2@x.test)"
check_eq "journal: the recovered outcome says where it came from" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery WHERE recipient_id = $J2 AND reply LIKE 'outcome recovered from the crash journal of node jn'")"
check_eq "journal: a stale line is not written again; that recipient is sent once" "sent 1 0" \
    "$(psql_q "SELECT state FROM ringmail.recipient WHERE id = $J3") $(delivered j3@x.test) $(psql_q "SELECT count(*) FROM ringmail.delivery WHERE recipient_id = $J3 AND reply LIKE 'outcome recovered%'")"
check_eq "journal: a recipient with no line is queued again and sent once" 1 \
    "$(delivered j4@x.test)"
stop_sink x

# ============================================================ 1b. a lease no node row accounts for
# Rows claimed by a ringmail before schema 3 (its lease owner has no node
# row, its journal is not ours) whose lease ran out: another node takes
# them in the campaign's tail, once its count of every row finds claims no
# claim row holds, as ambiguous (their DATA may have gone out), and the
# campaign still finishes.
start_sink x 127.0.0.74
CL=$(new_campaign l 6)
psql_q "UPDATE ringmail.recipient SET state = 'claimed', lease_owner = 'legacy-7',
    lease_expires_at = now() - interval '1 minute', next_attempt_at = NULL
    WHERE id IN (SELECT id FROM ringmail.recipient WHERE campaign_id = $CL ORDER BY id LIMIT 2)" >/dev/null
timeout 60 "$RM" send --db "$PG_URL" --campaign "$CL" --config "$E2E_TMP/c.conf" --node ln \
    --journal "$E2E_TMP/ln.journal" --json >"$E2E_TMP/ln.json" 2>"$E2E_TMP/ln.err"
check_eq "expired lease with no node row: the run finishes (exit 0)" 0 "$?"
check_eq "expired lease with no node row: 4 sent, the 2 leased ones ambiguous, none held" "4 2 0" \
    "$(count_state "$CL" sent) $(count_state "$CL" ambiguous) $(count_state "$CL" claimed)"
check_eq "expired lease with no node row: says whose lease expired" 2 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $CL AND reason = 'lease of node legacy-7 expired'")"
check_eq "expired lease with no node row: the campaign is done" done \
    "$(psql_q "SELECT status FROM ringmail.campaign WHERE id = $CL")"
stop_sink x

# ============================================================ 1. kill -9 loops
start_sink x 127.0.0.74 --defer-pct 50 --latency-ms "$LAT" --seed 11
CD=$(new_campaign defer "$COUNT")
kill_loop kd "$CD"
read -r twice silent lost <<<"$(audit "$CD")"
AMB=$(count_state "$CD" ambiguous)
echo "# deferrals: $COUNT recipients, $KILLS kills: $(count_state "$CD" sent) sent, $AMB ambiguous, $twice accepted twice (all ambiguous: $((twice - silent)))"
check_eq "kill loop with deferrals: every recipient final" 0 "$(nonfinal "$CD")"
check_eq "kill loop with deferrals: no silent duplicate (accepted twice and not ambiguous)" 0 "$silent"
check_eq "kill loop with deferrals: nothing lost (sent = accepted once)" 0 "$lost"
check_eq "kill loop with deferrals: sent + ambiguous = all" "$COUNT" \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $CD AND state IN ('sent', 'ambiguous')")"
check_le "kill loop with deferrals: ambiguous only for DATA in flight (20 connections x $KILLS kills)" \
    $((20 * KILLS)) "$AMB"
check_ge "kill loop with deferrals: some recipients were deferred and retried" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $CD AND attempts > 1 AND state = 'sent'")"
check_eq "kill loop with deferrals: a sent recipient has exactly one accepted delivery row" 0 \
    "$(psql_q "SELECT count(*) FROM (SELECT recipient_id FROM ringmail.delivery WHERE campaign_id = $CD AND outcome = 'accepted' GROUP BY recipient_id HAVING count(*) > 1) x")"
cat "$E2E_TMP"/kd.*.err >"$E2E_TMP/kd.all.err"
check_grep "kill loop with deferrals: the restarts say what they recovered" \
    'recovered from an earlier stop of node kd: [0-9]+ queued again, [0-9]+ ambiguous' \
    "$E2E_TMP/kd.all.err"
stop_sink x

start_sink x 127.0.0.74 --latency-ms "$LAT"
CP=$(new_campaign plain "$COUNT")
kill_loop kp "$CP"
read -r twice silent lost <<<"$(audit "$CP")"
AMB=$(count_state "$CP" ambiguous)
echo "# no deferrals: $COUNT recipients, $KILLS kills: $(count_state "$CP" sent) sent, $AMB ambiguous, $twice accepted twice"
check_eq "kill loop: every recipient final" 0 "$(nonfinal "$CP")"
check_eq "kill loop: no silent duplicate" 0 "$silent"
check_eq "kill loop: nothing lost" 0 "$lost"
check_le "kill loop: ambiguous only for DATA in flight (20 connections x $KILLS kills)" \
    $((20 * KILLS)) "$AMB"
stop_sink x

# ============================================================ 2. the same --node twice
start_sink x 127.0.0.74 --latency-ms "$LAT"
C2=$(new_campaign dup 1500)
"$RM" send --db "$PG_URL" --campaign "$C2" --config "$E2E_TMP/c.conf" --node dup \
    --journal "$E2E_TMP/dup.journal" --json >"$E2E_TMP/dup1.json" 2>"$E2E_TMP/dup1.err" &
pid=$!
for _ in $(seq 1 100); do
    [ "$(count_state "$C2" claimed)" -gt 0 ] && break
    sleep 0.1
done
timeout 20 "$RM" send --db "$PG_URL" --campaign "$C2" --config "$E2E_TMP/c.conf" --node dup \
    --journal "$E2E_TMP/dup.journal" >/dev/null 2>"$E2E_TMP/dup2.err"
check_eq "same node, same journal: refused (exit 2)" 2 "$?"
check_grep "same node, same journal: says another process holds the journal" \
    'node dup is already running on this host: another ringmail process holds its journal .*dup.journal; give this process another --node' \
    "$E2E_TMP/dup2.err"
timeout 20 "$RM" send --db "$PG_URL" --campaign "$C2" --config "$E2E_TMP/c.conf" --node dup \
    --journal "$E2E_TMP/dup-elsewhere.journal" >/dev/null 2>"$E2E_TMP/dup3.err"
check_eq "same node, another journal (another host's view): refused (exit 2)" 2 "$?"
check_grep "same node, another journal: names the live process and its heartbeat" \
    "node dup is already running \(pid $pid on host .*, last heartbeat [0-9.]+ s ago\)" \
    "$E2E_TMP/dup3.err"
check "same node: the refused processes left the live one's claims alone" \
    test "$(count_state "$C2" claimed)" -gt 0
wait "$pid"
check_eq "same node: the first process finishes (exit 0)" 0 "$?"
sleep 0.3
read -r twice silent lost <<<"$(audit "$C2")"
check_eq "same node: all 1500 sent, each accepted once" "1500 0 0" \
    "$(count_state "$C2" sent) $twice $lost"
stop_sink x

# ============================================================ 3. a 20 s table lock, two nodes, --lease 10
start_sink x 127.0.0.74 --latency-ms "$LAT"
C3=$(new_campaign lock 3000)
for n in l1 l2; do
    "$RM" send --db "$PG_URL" --campaign "$C3" --config "$E2E_TMP/c.conf" --node $n --lease 10 \
        --journal "$E2E_TMP/$n.journal" --json >"$E2E_TMP/$n.json" 2>"$E2E_TMP/$n.err" &
    eval "pid_$n=$!"
done
for _ in $(seq 1 100); do
    [ "$(count_state "$C3" sent)" -gt 200 ] && break
    sleep 0.1
done
lock_t0=$(date +%s%3N)
psql "$PG_URL" -X -q -c "BEGIN; LOCK TABLE ringmail.recipient IN ACCESS EXCLUSIVE MODE;
    SELECT pg_sleep(20); COMMIT" >/dev/null 2>"$E2E_TMP/lock.err" &
lockpid=$!
# shellcheck disable=SC2154
wait "$pid_l1"
r1=$?
# shellcheck disable=SC2154
wait "$pid_l2"
r2=$?
wait "$lockpid"
lock_ms=$(($(date +%s%3N) - lock_t0))
check_ge "table lock: the lock was held 20 s (twice the lease)" 19500 "$lock_ms"
check_eq "table lock: both nodes finish (exit 0)" "0 0" "$r1 $r2"
sleep 0.3
read -r twice silent lost <<<"$(audit "$C3")"
check_eq "table lock: all 3000 sent, none ambiguous, none twice, none lost" "3000 0 0 0" \
    "$(count_state "$C3" sent) $(count_state "$C3" ambiguous) $twice $lost"
cat "$E2E_TMP/l1.err" "$E2E_TMP/l2.err" >"$E2E_TMP/lock.both.err"
check_no_grep "table lock: no node took the other over" 'took over' "$E2E_TMP/lock.both.err"
stop_sink x

# ============================================================ 4. two nodes, one killed
start_sink x 127.0.0.74 --latency-ms "$LAT"
C4=$(new_campaign takeover 4000)
"$RM" send --db "$PG_URL" --campaign "$C4" --config "$E2E_TMP/c.conf" --node k1 --lease 4 \
    --window 1000 --journal "$E2E_TMP/k1.journal" --json >"$E2E_TMP/k1.json" 2>"$E2E_TMP/k1.err" &
pid_k1=$!
"$RM" send --db "$PG_URL" --campaign "$C4" --config "$E2E_TMP/c.conf" --node k2 --lease 4 \
    --window 1000 --journal "$E2E_TMP/k2.journal" --json >"$E2E_TMP/k2.json" 2>"$E2E_TMP/k2.err" &
pid_k2=$!
# Both nodes sending, and k1 holding claims, when it is killed (a loaded
# machine, an ASan build, may start one node well after the other: with
# the default window of 10,000 the first would claim all 4,000 and the
# other find nothing left to claim; a window of 1,000 leaves it work).
k1_held() { held_by "$C4" k1; }
for _ in $(seq 1 200); do
    [ "$(count_state "$C4" sent)" -gt 500 ] && [ "$(k1_held)" -gt 0 ] && break
    sleep 0.1
done
HELD=$(k1_held)
kill -9 "$pid_k1"
check_ge "takeover: the premise: k1 held claims when it was killed" 1 "$HELD"
kill_at=$(psql_q "SELECT extract(epoch FROM now())")
wait "$pid_k1" 2>/dev/null
timeout 120 tail --pid="$pid_k2" -f /dev/null
wait "$pid_k2"
check_eq "takeover: the survivor finishes the campaign (exit 0)" 0 "$?"
TOOK=$(psql_q "SELECT round((extract(epoch FROM taken_over_at) - $kill_at)::numeric, 1) FROM ringmail.node WHERE name = 'k1'")
AMB=$(count_state "$C4" ambiguous)
echo "# takeover: k1 held $HELD claims when killed; k2 took it over ${TOOK} s later; $AMB ambiguous"
check_grep "takeover: the survivor says what it took over" \
    'node k1 stopped heartbeating .*: node k2 took over its [0-9]+ claims: [0-9]+ queued again, [0-9]+ ambiguous' \
    "$E2E_TMP/k2.err"
check "takeover: within two heartbeats of the last one (lease 4 s: <= 4.5 s after the kill)" \
    awk -v t="$TOOK" 'BEGIN { exit !(t != "" && t <= 4.5) }'
check "takeover: the claims k1 held were mostly queued again, not made ambiguous" \
    test "$AMB" -lt "$HELD"
check_eq "takeover: every recipient final" 0 "$(nonfinal "$C4")"
# k1 comes back: its journal settles what the takeover left ambiguous.
timeout 60 "$RM" send --db "$PG_URL" --campaign "$C4" --config "$E2E_TMP/c.conf" --node k1 \
    --lease 4 --journal "$E2E_TMP/k1.journal" --json >"$E2E_TMP/k1b.json" 2>"$E2E_TMP/k1b.err"
check_eq "takeover: k1's restart runs (exit 0)" 0 "$?"
# What the takeover made ambiguous: bodies in flight (at most one per
# connection), arms asked ahead (two per connection), and results k1 had
# in its journal but not yet in the database (its restart writes them).
RESULTS=$(jget "$E2E_TMP/k1b.json" db.recovered_results)
RQ=$(jget "$E2E_TMP/k1b.json" db.recovered_queued)
RA=$(jget "$E2E_TMP/k1b.json" db.recovered_ambiguous)
echo "# takeover: k1's restart: $RESULTS results written from its journal, $RQ armed but never started (queued again), $RA stay ambiguous"
check_eq "takeover: every ambiguous claim was armed: a result, a body in flight, or asked ahead" \
    "$AMB" "$((RESULTS + RQ + $(count_state "$C4" ambiguous)))"
check_le "takeover: armed but never started: at most the heads and two per connection (60)" 60 "$RQ"
AMB2=$(count_state "$C4" ambiguous)
echo "# takeover: after k1's restart $AMB2 ambiguous (DATA in flight at the kill)"
check_le "takeover: after k1's restart only DATA in flight is ambiguous (20 connections)" 20 "$AMB2"
check_eq "takeover: what stays ambiguous is nobody's after k1's restart (no lease owner)" 0 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C4 AND lease_owner IS NOT NULL")"
sleep 0.3
read -r twice silent lost <<<"$(audit "$C4")"
check_eq "takeover: no silent duplicate, nothing lost" "0 0" "$silent $lost"
check_eq "takeover: sent + ambiguous = all" 4000 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C4 AND state IN ('sent', 'ambiguous')")"
stop_sink x

# ============================================================ 5. a body with no reply, on a live connection
# The sink cuts 20% of transactions during DATA: the body went out and no
# reply came, so the server may have it. Such a recipient is ambiguous at
# once (never retried on its own), in a campaign and in list mode.
start_sink x 127.0.0.74 --drop-pct 20 --seed 5
C5=$(new_campaign drop 500)
timeout 60 "$RM" send --db "$PG_URL" --campaign "$C5" --config "$E2E_TMP/c.conf" --node dr \
    --journal "$E2E_TMP/dr.journal" --json >"$E2E_TMP/dr.json" 2>"$E2E_TMP/dr.err"
check_eq "lost reply: the campaign finishes (exit 0)" 0 "$?"
sleep 0.3
AMB=$(count_state "$C5" ambiguous)
echo "# lost reply: $(count_state "$C5" sent) sent, $AMB ambiguous of 500"
check_ge "lost reply: bodies whose reply was cut are ambiguous" 20 "$AMB"
check_eq "lost reply: sent + ambiguous = all, nothing left" "500 0" \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C5 AND state IN ('sent', 'ambiguous')") $(nonfinal "$C5")"
check_eq "lost reply: an ambiguous recipient had one attempt, DATA in flight, connection_lost_after_data" 0 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient r WHERE campaign_id = $C5 AND state = 'ambiguous' AND (attempts <> 1 OR NOT EXISTS (SELECT 1 FROM ringmail.delivery d WHERE d.recipient_id = r.id AND d.data_in_flight AND d.reason = 'connection_lost_after_data'))")"
read -r twice silent lost <<<"$(audit "$C5")"
check_eq "lost reply: none accepted twice, none lost" "0 0" "$twice $lost"
psql_q "SELECT address FROM ringmail.recipient WHERE campaign_id = $C5 LIMIT 200" >"$E2E_TMP/drop.list"
timeout 60 "$RM" send --recipients "$E2E_TMP/drop.list" --config "$E2E_TMP/c.conf" --json \
    >"$E2E_TMP/drop-list.json" 2>"$E2E_TMP/drop-list.err"
check_eq "lost reply, list mode: exit 0" 0 "$?"
check_ge "lost reply, list mode: --json counts ambiguous" 5 "$(jget "$E2E_TMP/drop-list.json" ambiguous)"
check_eq "lost reply, list mode: one attempt per recipient (nothing retried)" 200 \
    "$(jget "$E2E_TMP/drop-list.json" attempts)"
timeout 60 "$RM" send --recipients "$E2E_TMP/drop.list" --config "$E2E_TMP/c.conf" \
    >"$E2E_TMP/drop-list.out" 2>&1
check_grep "lost reply, list mode: the summary line counts them" \
    'recipients 200: accepted [0-9]+, rejected 0, failed 0, expired 0, ambiguous [1-9][0-9]*,' \
    "$E2E_TMP/drop-list.out"
stop_sink x
# The operator's word: --resend-ambiguous sends them again.
start_sink x 127.0.0.74
timeout 60 "$RM" send --db "$PG_URL" --campaign "$C5" --config "$E2E_TMP/c.conf" --node dr \
    --journal "$E2E_TMP/dr.journal" --resend-ambiguous --json >/dev/null 2>"$E2E_TMP/dr2.err"
check_eq "lost reply: --resend-ambiguous sends them; all 500 sent" "0 500" \
    "$? $(count_state "$C5" sent)"
stop_sink x

# ============================================================ 6. PostgreSQL away: the node stops starting bodies, and says so
# With --lease 2 the node may start bodies for 1.5 s after its last
# heartbeat; with the database stopped longer, transactions wait for arms,
# the status line and /metrics say why, nothing is lost, and the campaign
# finishes once the database is back.
start_sink x 127.0.0.74 --latency-ms 20
C6=$(new_campaign away 3000)
METRICS_PORT=$(free_port)
scrape() { # OUTFILE
    "$E2E_PY" -c '
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=3).read()
open(sys.argv[2], "wb").write(body)' "$METRICS_PORT" "$1"
}
script -qec "$RM send --db '$PG_URL' --campaign $C6 --config $E2E_TMP/c.conf --node aw --lease 2 \
    --journal $E2E_TMP/aw.journal --metrics 127.0.0.1:$METRICS_PORT" /dev/null \
    >"$E2E_TMP/aw.out" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    [ "$(count_state "$C6" sent)" -gt 300 ] && break
    sleep 0.1
done
check "database away: /metrics answers while it is up" scrape "$E2E_TMP/aw.m1"
check_grep "database away: the lease is good while the database is up" '^ringmail_node_lease_ok 1$' \
    "$E2E_TMP/aw.m1"
check_grep "database away: arms are counted" '^ringmail_arms_total [1-9]' "$E2E_TMP/aw.m1"
_pg_as "'$(pg_bin)/pg_ctl' -D '$PG_DIR/data' -m fast -w stop" >/dev/null 2>&1
sleep 4
scrape "$E2E_TMP/aw.m2"
check_grep "database away: /metrics says the lease is not renewed" '^ringmail_node_lease_ok 0$' \
    "$E2E_TMP/aw.m2"
check_grep "database away: connections wait for their arm" \
    '^ringmail_connections_waiting_arm [1-9]' "$E2E_TMP/aw.m2"
sleep 1.2 # two status lines
check_grep "database away: the status line says why nothing moves" \
    'waiting for the database \(arm\)  NODE LEASE NOT RENEWED: nothing new starts' "$E2E_TMP/aw.out"
_pg_as "'$(pg_bin)/pg_ctl' -D '$PG_DIR/data' -w -t 30 -l '$PG_DIR/pg.log' \
    -o \"-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1 -c fsync=off\" start" >/dev/null 2>&1
check_eq "database away: PostgreSQL is back" 0 "$?"
timeout 120 tail --pid="$pid" -f /dev/null
wait "$pid"
check_eq "database away: the campaign finishes (exit 0)" 0 "$?"
sleep 0.3
read -r twice silent lost <<<"$(audit "$C6")"
check_eq "database away: all 3000 sent, none twice, none lost, none ambiguous" "3000 0 0 0" \
    "$(count_state "$C6" sent) $twice $lost $(count_state "$C6" ambiguous)"
stop_sink x

# ============================================================ 7. one ISP suspended while another sends (campaign)
# permfail@b.test gets Microsoft's S3150 and suspends ISP b for an hour;
# ISP a sends all of its recipients meanwhile, each once. b's recipients
# wait (never armed while suspended) and a stop puts them back, not lost.
SB_PORT=$(free_port)
e2e_bg sink.b "$RM" sink --listen "127.0.0.75:$SB_PORT" --threads 1 --profile outlook \
    --stats "$E2E_TMP/sink.b.json" --stats-interval-ms 100
check "suspend: outlook-profile sink up" wait_port 127.0.0.75 "$SB_PORT" 10 "$E2E_BG_PID"
start_sink x 127.0.0.74 --latency-ms "$LAT"
cat >"$E2E_TMP/s.conf" <<CONF
[global]
tls = none
retry = 300ms
max_age = 1h
[isp a]
domains = x.test
max_connections = 20
[isp b]
domains = b.test
max_connections = 1
rule = S3150 => suspend 1h
[route x.test]
server = 127.0.0.74:$SINK_PORT
[route b.test]
server = 127.0.0.75:$SB_PORT
CONF
C7=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
    VALUES ('suspend', 'news@sender.test', 'Hello', 'Campaign suspend.') RETURNING id")
psql_q "INSERT INTO ringmail.recipient (campaign_id, address, next_attempt_at)
    VALUES ($C7, 'permfail@b.test', now() - interval '1 minute')" >/dev/null
# b's other recipients come due 3 s later, after permfail's S3150 (render
# workers may reorder recipients claimed together).
psql_q "INSERT INTO ringmail.recipient (campaign_id, address, next_attempt_at)
    SELECT $C7, 'm' || g || '@' || CASE WHEN g % 20 = 0 THEN 'b.test' ELSE 'x.test' END,
        CASE WHEN g % 20 = 0 THEN now() + interval '3 seconds' ELSE now() END
    FROM generate_series(1, 2000) g" >/dev/null
"$RM" send --db "$PG_URL" --campaign "$C7" --config "$E2E_TMP/s.conf" --node su \
    --journal "$E2E_TMP/su.journal" --json >"$E2E_TMP/su.json" 2>"$E2E_TMP/su.err" &
pid=$!
for _ in $(seq 1 300); do
    [ "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C7 AND state = 'sent' AND address LIKE '%@x.test'")" -ge 1900 ] && break
    sleep 0.1
done
kill -TERM "$pid"
wait "$pid"
sleep 0.3
check_eq "suspend: ISP a sent all 1900 while b was suspended" 1900 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C7 AND state = 'sent' AND address LIKE '%@x.test'")"
check_eq "suspend: permfail@b.test bounced (S3150)" bounced \
    "$(psql_q "SELECT state FROM ringmail.recipient WHERE campaign_id = $C7 AND address = 'permfail@b.test'")"
check_eq "suspend: b's 100 recipients wait, not lost, not sent, not ambiguous" "100 0" \
    "$(psql_q "SELECT count(*) FILTER (WHERE state IN ('queued', 'deferred')) || ' ' || count(*) FILTER (WHERE state IN ('sent', 'ambiguous', 'claimed')) FROM ringmail.recipient WHERE campaign_id = $C7 AND address LIKE 'm%@b.test'")"
check_eq "suspend: the outlook sink saw nothing but permfail" 0 \
    "$(jget "$E2E_TMP/sink.b.json" accepted_rcpts)"
read -r twice silent lost <<<"$(audit "$C7")"
check_eq "suspend: nothing accepted twice, nothing lost on ISP a" "0 0" "$twice $lost"
stop_sink x

# ============================================================ 8. kill -9 loops on claims by range, one ISP suspended
# Fresh recipients (never attempted: claimed by range, no row written at
# claim time) over two ISPs: x defers 30% (the retries come back as due
# rows, claimed row by row by the same process), b suspends itself for 3 s
# at permfail's S3150 while x sends. KILLS kill -9s at random moments, each
# followed by a restart, then a run to the end.
start_sink x 127.0.0.74 --defer-pct 30 --latency-ms "$LAT" --seed 17
sed 's/S3150 => suspend 1h/S3150 => suspend 3s/' "$E2E_TMP/s.conf" >"$E2E_TMP/s8.conf"
psql_q "DELETE FROM ringmail.isp_suspend" >/dev/null # section 7's hour (kept across runs)
C8=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
    VALUES ('ranges', 'news@sender.test', 'Hello', 'Campaign ranges.') RETURNING id")
psql_q "INSERT INTO ringmail.recipient (campaign_id, address) VALUES ($C8, 'permfail@b.test')" >/dev/null
psql_q "INSERT INTO ringmail.recipient (campaign_id, address)
    SELECT $C8, 'r' || g || '@' || CASE WHEN g % 10 = 0 THEN 'b.test' ELSE 'x.test' END
    FROM generate_series(1, $COUNT) g" >/dev/null
check_eq "ranges: the recipients are fresh (queued, no next attempt time)" "$((COUNT + 1))" \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C8 AND state = 'queued' AND next_attempt_at IS NULL")"
kill_loop kr "$C8" "$E2E_TMP/s8.conf"
sink_stats_settled "${SINK_STATS[x]}"
sink_stats_settled "$E2E_TMP/sink.b.json"
"$E2E_PY" - "${SINK_STATS[x]}" "$E2E_TMP/sink.b.json" "$E2E_TMP/sink.xb.json" <<'PY'
import json, sys
d = {}
for p in sys.argv[1:3]:
    for a, n in json.load(open(p)).get("deliveries", {}).items():
        d[a] = d.get(a, 0) + n
json.dump({"deliveries": d, "accepted_rcpts": sum(d.values())}, open(sys.argv[3], "w"))
PY
read -r twice silent lost <<<"$(campaign_audit "$C8" "$E2E_TMP/sink.xb.json")"
AMB=$(count_state "$C8" ambiguous)
echo "# ranges: $COUNT + 1 recipients, $KILLS kills: $(count_state "$C8" sent) sent, $AMB ambiguous, $twice accepted twice (all ambiguous: $((twice - silent)))"
check_eq "ranges: every recipient final" 0 "$(nonfinal "$C8")"
check_eq "ranges: no silent duplicate (accepted twice and not ambiguous)" 0 "$silent"
check_eq "ranges: nothing lost (sent = accepted once, on either sink)" 0 "$lost"
check_eq "ranges: permfail@b.test bounced (S3150), the rest sent or ambiguous" "bounced $COUNT" \
    "$(psql_q "SELECT state FROM ringmail.recipient WHERE campaign_id = $C8 AND address = 'permfail@b.test'") $(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C8 AND state IN ('sent', 'ambiguous')")"
check_le "ranges: ambiguous only for DATA in flight (21 connections x $KILLS kills)" \
    $((21 * KILLS)) "$AMB"
check_ge "ranges: some recipients were deferred and retried" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C8 AND attempts > 1 AND state = 'sent'")"
check_ge "ranges: b's recipients went out after its suspension" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C8 AND address LIKE 'r%@b.test' AND state = 'sent'")"
cat "$E2E_TMP"/kr.*.err >"$E2E_TMP/kr.all.err"
check_grep "ranges: the restarts say what they recovered" \
    'recovered from an earlier stop of node kr: [0-9]+ queued again, [0-9]+ ambiguous' \
    "$E2E_TMP/kr.all.err"
check_grep "ranges: b was suspended while x sent" 'ringmail: b: suspended for' "$E2E_TMP/kr.all.err"
check_eq "ranges: no claim is left, nothing is held" "0 0" \
    "$(psql_q "SELECT count(*) FROM ringmail.claim WHERE campaign_id = $C8") $(count_state "$C8" claimed)"
stop_sink x
e2e_finish
