#!/usr/bin/env bash
# Many nodes, one sender: an ISP's limits hold for the cluster, not per node.
#   1. three `send --db` nodes (n1 n2 n3, sources 127.0.0.11-13) on one
#      campaign against sinks that count per client address: each ISP's
#      delivered rate within 10% of its limit, not three times it; each node
#      sends about a third; n3 killed with SIGKILL: the others say they took
#      its share within two heartbeats, and the rate holds at the limit with
#      two; no recipient delivered twice, none lost
#   2. a backoff on one node (421 4.7.28 from its sink) slows the ISP on
#      the other node within a second or two (it says so, and its sink sees
#      nothing new during the pause)
#   3. PostgreSQL away with two nodes: each gives up its share, and says so;
#      back: shares restored
#   4. the start refuses when the shares cannot be read, and says why
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null

SINK_PORT=$(free_port)
start_sink g 127.0.0.81
start_sink y 127.0.0.82
GRATE=90 YRATE=45

cat >"$E2E_TMP/c.conf" <<CONF
[global]
tls = none
retry = 300ms
max_age = 1h
[isp gm]
domains = gm.test
msg_rate = $GRATE/s
max_connections = 6
[isp yy]
domains = yy.test
msg_rate = $YRATE/s
max_connections = 3
[route gm.test]
server = 127.0.0.81:$SINK_PORT
[route yy.test]
server = 127.0.0.82:$SINK_PORT
CONF

C=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
    VALUES ('cluster', 'news@sender.test', 'Hello', 'Cluster.') RETURNING id")
# Interleaved, as a real list is: every claim has both ISPs' recipients.
# Each node holds at most --window 300 (10 s of its share), so the nodes
# that start first do not claim the whole campaign.
psql_q "INSERT INTO ringmail.recipient (campaign_id, address)
    SELECT $C, CASE WHEN g % 3 = 0 THEN 'y' || g || '@yy.test' ELSE 'g' || g || '@gm.test' END
    FROM generate_series(1, 2700) g" >/dev/null

# accepted SINK: recipients the sink accepted so far
accepted() { sj "$1" accepted_rcpts; }
# peer SINK ADDR: what the sink accepted from client address ADDR
peer() {
    "$E2E_PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("peers", {}).get(sys.argv[2], {}).get("accepted", 0))' \
        "${SINK_STATS[$1]}" "$2" 2>/dev/null || echo 0
}
# rate SINK SECONDS: the sink's accepted messages per second over SECONDS
rate() {
    local a0 a1 t0 t1
    a0=$(accepted "$1") t0=$(now_ms)
    sleep "$2"
    a1=$(accepted "$1") t1=$(now_ms)
    echo "$a0 $a1 $t0 $t1" | awk '{ printf "%.1f", ($2 - $1) * 1000 / ($4 - $3) }'
}
within() { # NAME VALUE LIMIT: VALUE within 10% of LIMIT
    check "$1 ($2/s against $3/s)" awk -v v="$2" -v l="$3" 'BEGIN { exit !(v >= 0.9 * l && v <= 1.1 * l) }'
}

# ============================================================ 1. three nodes, one killed
declare -A PID=()
METRICS_PORT=$(free_port)
for n in 1 2 3; do
    m=()
    [ "$n" = 1 ] && m=(--metrics "127.0.0.1:$METRICS_PORT")
    "$RM" send --db "$PG_URL" --campaign "$C" --config "$E2E_TMP/c.conf" --node "n$n" \
        --source "127.0.0.1$n" --lease 5 --window 300 --batch 100 \
        --journal "$E2E_TMP/n$n.journal" --json "${m[@]}" \
        >"$E2E_TMP/n$n.json" 2>"$E2E_TMP/n$n.err" &
    PID[$n]=$!
done
# All three sending before the rate is measured.
for _ in $(seq 1 100); do
    [ "$(peer g 127.0.0.11)" -gt 0 ] && [ "$(peer g 127.0.0.12)" -gt 0 ] &&
        [ "$(peer g 127.0.0.13)" -gt 0 ] && break
    sleep 0.1
done
sleep 2
p0=$(peer g 127.0.0.11) q0=$(peer g 127.0.0.12) r0=$(peer g 127.0.0.13)
read -r G3 Y3 <<<"$(
    rate g 6 >"$E2E_TMP/g3" &
    rate y 6 >"$E2E_TMP/y3"
    wait
    echo "$(cat "$E2E_TMP/g3") $(cat "$E2E_TMP/y3")"
)"
p1=$(peer g 127.0.0.11) q1=$(peer g 127.0.0.12) r1=$(peer g 127.0.0.13)
echo "# three nodes: gm $G3/s (limit $GRATE), yy $Y3/s (limit $YRATE); per source over 6 s: $((p1 - p0)) $((q1 - q0)) $((r1 - r0))"
within "three nodes: gm's cluster rate is its limit, not three times it" "$G3" "$GRATE"
within "three nodes: yy's cluster rate is its limit" "$Y3" "$YRATE"
for x in "$((p1 - p0))" "$((q1 - q0))" "$((r1 - r0))"; do
    check "three nodes: each source sends about a third of gm ($x of $((p1 - p0 + q1 - q0 + r1 - r0)))" \
        awk -v x="$x" -v t="$((p1 - p0 + q1 - q0 + r1 - r0))" 'BEGIN { exit !(t > 0 && x >= 0.2 * t && x <= 0.45 * t) }'
done
check_grep "three nodes: n1 says the cluster shares gm's limits" \
    'cluster: gm: 3 nodes share its limits: this node takes 30/s of 90/s, 2 of 6 connections' \
    "$E2E_TMP/n1.err"
"$E2E_PY" -c '
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=3).read()
open(sys.argv[2], "wb").write(body)' "$METRICS_PORT" "$E2E_TMP/n1.metrics"
check_grep "three nodes: /metrics says three nodes share gm" '^ringmail_isp_cluster_nodes\{isp="gm"\} 3$' \
    "$E2E_TMP/n1.metrics"
check_grep "three nodes: /metrics: n1's share of gm's rate" '^ringmail_rate_limit\{isp="gm"\} 30$' \
    "$E2E_TMP/n1.metrics"
check_eq "three nodes: the node table knows each node's source" "{127.0.0.11} {127.0.0.12} {127.0.0.13}" \
    "$(psql_q "SELECT string_agg(sources::text, ' ' ORDER BY name) FROM ringmail.node WHERE name IN ('n1', 'n2', 'n3')")"

# Only what they say after the kill counts (a start may have said "2 nodes").
l1=$(wc -l <"$E2E_TMP/n1.err") l2=$(wc -l <"$E2E_TMP/n2.err")
kill -9 "${PID[3]}"
kill_ms=$(now_ms)
wait "${PID[3]}" 2>/dev/null
took=""
for _ in $(seq 1 60); do
    if tail -n +"$((l1 + 1))" "$E2E_TMP/n1.err" | grep -q 'cluster: gm: 2 nodes share its limits' &&
        tail -n +"$((l2 + 1))" "$E2E_TMP/n2.err" | grep -q 'cluster: gm: 2 nodes share its limits'; then
        took=$(($(now_ms) - kill_ms))
        break
    fi
    sleep 0.05
done
echo "# n3 killed: n1 and n2 took its share ${took:-never} ms later (heartbeat 1 s)"
check "kill -9 n3: n1 and n2 take its share within two heartbeats (${took:-never} ms)" \
    test -n "$took" -a "${took:-9999}" -le 2000
r_kill=$(peer g 127.0.0.13)
sleep 0.5
p0=$(peer g 127.0.0.11) q0=$(peer g 127.0.0.12)
G2=$(rate g 6)
p1=$(peer g 127.0.0.11) q1=$(peer g 127.0.0.12)
echo "# two nodes: gm $G2/s; per source over 6 s: $((p1 - p0)) $((q1 - q0))"
within "two nodes after the kill: gm's cluster rate is its limit again" "$G2" "$GRATE"
check_eq "two nodes after the kill: nothing more from n3's source" "$r_kill" "$(peer g 127.0.0.13)"

# n1 and n2 finish (n3's claims come back when its lease lapses).
for n in 1 2; do
    timeout 120 tail --pid="${PID[$n]}" -f /dev/null
    wait "${PID[$n]}"
    check_eq "n$n finishes the campaign (exit 0)" 0 "$?"
done
check_eq "every recipient final" 0 "$(nonfinal "$C")"
check_grep "the status line says why the rate is lower here" \
    'gm: [23] nodes share its limits \([0-9.]+ msgs/s here\)' "$E2E_TMP/n1.err"
sink_stats_settled "${SINK_STATS[g]}"
sink_stats_settled "${SINK_STATS[y]}"
psql_q "SELECT address || ' ' || state FROM ringmail.recipient WHERE campaign_id = $C" >"$E2E_TMP/states"
read -r twice silent lost <<<"$("$E2E_PY" - "$E2E_TMP/states" "${SINK_STATS[g]}" "${SINK_STATS[y]}" <<'PY'
import json, sys
state = dict(l.split() for l in open(sys.argv[1]) if l.strip())
seen = {}
for f in sys.argv[2:]:
    for a, n in json.load(open(f)).get("deliveries", {}).items():
        seen[a] = seen.get(a, 0) + n
twice = [a for a, n in seen.items() if n > 1 and a in state]
silent = [a for a in twice if state[a] != "ambiguous"]
lost = [a for a, s in state.items() if s == "sent" and seen.get(a, 0) != 1]
for a in (silent + lost)[:5]:
    print("# mismatch:", a, state.get(a), seen.get(a, 0), file=sys.stderr)
print(len(twice), len(silent), len(lost))
PY
)"
echo "# three nodes, one killed: $twice recipients accepted twice ($((twice - silent)) of them ambiguous)"
check_eq "no recipient delivered twice unless ambiguous" 0 "$silent"
check_eq "nothing lost: every sent recipient accepted exactly once" 0 "$lost"
check_eq "a clean stop leaves no demand rows behind" 0 \
    "$(psql_q "SELECT count(*) FROM ringmail.node_lane WHERE node IN ('n1', 'n2')")"
check_eq "--json: the cluster's beats, none failed" "0" "$(jget "$E2E_TMP/n1.json" cluster.beats_failed)"

# ============================================================ 2. a backoff on one node slows the other
stop_sink g
stop_sink y
start_sink d 127.0.0.83 --defer-pct 40 --defer-reply "421 4.7.28 [127.0.0.21] unusual rate of unsolicited mail" --seed 3
start_sink e 127.0.0.84
for n in 1 2; do
    server=127.0.0.83
    [ "$n" = 2 ] && server=127.0.0.84
    cat >"$E2E_TMP/b$n.conf" <<CONF
[global]
tls = none
retry = 300ms
max_age = 1h
[isp gb]
domains = gb.test
msg_rate = 60/s
max_connections = 4
rule = 421 4.7.28 => backoff 0.5 4s
[route gb.test]
server = $server:$SINK_PORT
CONF
done
CB=$(new_campaign b 3000 gb.test)
for n in 1 2; do
    "$RM" send --db "$PG_URL" --campaign "$CB" --config "$E2E_TMP/b$n.conf" --node "b$n" \
        --source "127.0.0.2$n" --window 200 --batch 50 --journal "$E2E_TMP/b$n.journal" \
        >"$E2E_TMP/b$n.out" 2>"$E2E_TMP/b$n.err" &
    PID[$n]=$!
done
cut_ms="" adopt_ms="" e_adopt=""
for _ in $(seq 1 400); do
    [ -z "$cut_ms" ] && grep -q 'gb: backoff: rate' "$E2E_TMP/b1.err" && cut_ms=$(now_ms)
    if [ -z "$adopt_ms" ] && grep -q 'gb: backoff: rate .* on node b1: 421 4.7.28' "$E2E_TMP/b2.err"; then
        adopt_ms=$(now_ms)
        e_adopt=$(accepted e)
    fi
    [ -n "$cut_ms" ] && [ -n "$adopt_ms" ] && break
    sleep 0.05
done
echo "# backoff: b1 cut at +0 ms, b2 adopted it at +$((${adopt_ms:-0} - ${cut_ms:-0})) ms"
check_grep "backoff: b2 says it slowed for b1's 421 4.7.28" \
    'ringmail: gb: backoff: rate 30/s -> 15/s, paused [0-9.]+ s: on node b1: 421 4.7.28' "$E2E_TMP/b2.err"
check "backoff: b2 slows within two seconds of b1's cut" \
    test -n "$cut_ms" -a -n "$adopt_ms" -a "$((${adopt_ms:-99999} - ${cut_ms:-0}))" -le 2000
sleep 0.5 # transactions in flight at the cut finish
e0=$(accepted e)
sleep 2
check_eq "backoff: b2's sink sees nothing new while the ISP is paused" "$e0" "$(accepted e)"

# ============================================================ 3. PostgreSQL away with peers
_pg_as "'$(pg_bin)/pg_ctl' -D '$PG_DIR/data' -m fast -w stop" >/dev/null 2>&1
sleep 3
_pg_as "'$(pg_bin)/pg_ctl' -D '$PG_DIR/data' -w -t 30 -l '$PG_DIR/pg.log' \
    -o \"-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1 -c fsync=off\" start" >/dev/null 2>&1
check_eq "PostgreSQL is back" 0 "$?"
for _ in $(seq 1 100); do
    grep -q 'shares restored' "$E2E_TMP/b1.err" && break
    sleep 0.1
done
check_grep "PostgreSQL away: b1 gives its share up, and says why" \
    'cluster: PostgreSQL out of reach for [0-9.]+ s \(.*\): this node gives up its share of gb until it answers' \
    "$E2E_TMP/b1.err"
check_grep "PostgreSQL back: b1 says its shares are restored" \
    'cluster: PostgreSQL answers again: shares restored' "$E2E_TMP/b1.err"

for n in 1 2; do
    kill -TERM "${PID[$n]}"
    timeout 60 tail --pid="${PID[$n]}" -f /dev/null
    wait "${PID[$n]}"
done
# The stop right after PostgreSQL came back: a connection that broke with
# the restart is made again, and every claim goes back.
for n in 1 2; do
    check_grep "backoff campaign stopped: b$n gave its claims back" \
        'every result is written; [0-9]+ claimed recipients? went back to the queue' "$E2E_TMP/b$n.err"
done
check_eq "backoff campaign stopped: no node holds anything" 0 \
    "$(psql_q "SELECT count(*) FROM ringmail.held WHERE campaign_id = $CB")"

# ============================================================ 5. one word for what a node holds
# Claims by range leave a held fresh row `queued` in its column: every
# command says `claimed` for it, as ringmail.held does (a node frozen by
# SIGSTOP while it holds claims, so nothing moves while they are counted).
start_sink h 127.0.0.85 --latency-ms 100
cat >"$E2E_TMP/h.conf" <<CONF
[global]
tls = none
[isp hh]
domains = hh.test
max_connections = 4
[route hh.test]
server = 127.0.0.85:$SINK_PORT
CONF
CH=$(new_campaign h 200 hh.test)
"$RM" send --db "$PG_URL" --campaign "$CH" --config "$E2E_TMP/h.conf" --node h1 --window 100 \
    --batch 50 --journal "$E2E_TMP/h1.journal" >/dev/null 2>"$E2E_TMP/h1.err" &
hpid=$!
for _ in $(seq 1 100); do
    [ "$(psql_q "SELECT count(*) FROM ringmail.held WHERE campaign_id = $CH")" -gt 0 ] &&
        [ "$(count_state "$CH" sent)" -gt 0 ] && break
    sleep 0.1
done
kill -STOP "$hpid"
sleep 0.5
HELD=$(psql_q "SELECT count(*) FROM ringmail.held WHERE campaign_id = $CH")
RAW=$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $CH AND state = 'claimed'")
echo "# held by h1: $HELD (the state column says claimed for $RAW of them)"
check_ge "vocabulary: the premise: h1 holds recipients" 1 "$HELD"
check "vocabulary: the premise: some it holds are fresh rows the column calls queued ($RAW of $HELD say claimed)" \
    test "$RAW" -lt "$HELD"
check_eq "vocabulary: recipients list --state claimed lists what h1 holds" "$HELD" \
    "$("$RM" recipients list --db "$PG_URL" --campaign "$CH" --state claimed | grep -c '@hh.test')"
check_eq "vocabulary: report counts it claimed" "$HELD" \
    "$("$RM" report --db "$PG_URL" --campaign "$CH" --format json |
        "$E2E_PY" -c 'import json, sys; print(json.load(sys.stdin)["recipients"]["claimed"])')"
check_grep "vocabulary: campaign show counts it claimed" "^  claimed +$HELD\$" \
    <("$RM" campaign show --db "$PG_URL" "$CH")
kill -CONT "$hpid"
timeout 60 tail --pid="$hpid" -f /dev/null
wait "$hpid"
check_eq "vocabulary: h1 finishes (exit 0)" 0 "$?"

# ============================================================ 4. the start needs the shares
psql_q "ALTER TABLE ringmail.node_lane RENAME TO node_lane_gone" >/dev/null
C4=$(new_campaign s 5 gb.test)
timeout 30 "$RM" send --db "$PG_URL" --campaign "$C4" --config "$E2E_TMP/b2.conf" --node s1 \
    --journal "$E2E_TMP/s1.journal" >/dev/null 2>"$E2E_TMP/s1.err"
check_eq "unreadable shares: the send does not start (exit 2)" 2 "$?"
check_grep "unreadable shares: it says why" \
    "ringmail send: cluster: reading the other nodes' shares: .*node_lane" "$E2E_TMP/s1.err"
psql_q "ALTER TABLE ringmail.node_lane_gone RENAME TO node_lane" >/dev/null
e2e_finish
