#!/usr/bin/env bash
# The complaint guard in a running campaign (issue 13 item 5): an ISP held
# for the campaign (a ringmail.isp_hold row) gets nothing more while the
# other ISPs keep sending, and `ringmail campaign resume ID --isp NAME`
# lifts it. The hold rows are inserted here with psql, simulating what the
# feedback store writes when the complaint rate passes [feedback]
# complaint_pause (its own tests cover the rate: complaints over delivered
# per ISP in complaint_window, complaint_min_sample). Two sinks, one per
# ISP (a.test, b.test, [route]s), and a PostgreSQL of its own.
#   1. a hold present at start, with a window of 10: ISP a gets nothing, ISP
#      b is delivered whole (held mail leaves the window: parked, its claims
#      kept); the loud line, /metrics, `campaign holds`; resume: a is sent,
#      every recipient accepted exactly once, the run ends by itself
#   2. a hold while sending: seen within seconds (the loud line), a's sink
#      gets nothing more while b's keeps receiving; resume: all sent, once
#   3. resume's refusals: no such hold, no such campaign, no --isp
#   4. a stop while held: the parked claims go back to the queue; a kill -9
#      while parked loses nothing (the restart queues them again)
#   5. on a terminal, the status line says "held: a"
#   6. the whole loop: an ARF complaint through `ringmail feedback ingest`
#      (the real feedback store) holds a, and the running send obeys
# Nothing leaves 127.0.0.0/8.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
T_START=$(now_ms)
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null
check "schema has ringmail.isp_hold" psql_q "SELECT 1 FROM ringmail.isp_hold LIMIT 0"

two_isps "$E2E_TMP/g.conf" 20/s

campaign() { two_isp_campaign "$@"; }
# hold ID ISP REASON: what the feedback store writes
hold() {
    psql_q "INSERT INTO ringmail.isp_hold (campaign_id, isp, reason) VALUES ($1, '$2', '$3')
        ON CONFLICT (campaign_id, isp) DO UPDATE SET reason = excluded.reason, held_at = now(),
        resumed_at = NULL" >/dev/null
}
# once ID: recipients sent but not accepted exactly once by the sinks, plus
# addresses of the campaign the sinks accepted that are not sent
once() {
    sink_stats_settled "${SINK_STATS[a]}"
    sink_stats_settled "${SINK_STATS[b]}"
    psql_q "SELECT address || ' ' || state FROM ringmail.recipient WHERE campaign_id = $1" \
        >"$E2E_TMP/states.$1"
    "$E2E_PY" - "$E2E_TMP/states.$1" "${SINK_STATS[a]}" "${SINK_STATS[b]}" <<'PY'
import json, sys
state = dict(l.split() for l in open(sys.argv[1]) if l.strip())
seen = {}
for f in sys.argv[2:]:
    for a, n in json.load(open(f)).get("deliveries", {}).items():
        seen[a] = seen.get(a, 0) + n
bad = [a for a, s in state.items() if s == "sent" and seen.get(a, 0) != 1]
bad += [a for a in seen if a in state and state[a] != "sent"]
for a in bad[:5]:
    print("# mismatch:", a, state.get(a), seen.get(a, 0), file=sys.stderr)
print(len(bad))
PY
}
METRICS_PORT=$(free_port)
scrape() { # OUTFILE
    "$E2E_PY" -c '
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=3).read()
open(sys.argv[2], "wb").write(body)' "$METRICS_PORT" "$1"
}
# metric FILE LINE_START: the value of the first sample line starting so
metric() { awk -v k="$2" 'index($0, k) == 1 { print $NF; exit }' "$1"; }
# wait_sink NAME N S: until sink NAME accepted N recipients (S seconds at most)
wait_sink() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        [ "$(sj "$1" accepted_rcpts 2>/dev/null || echo 0)" -ge "$2" ] 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
# wait_exit PID S: until PID exits (S seconds at most); its status in RC
wait_exit() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        _pid_alive "$1" || break
        sleep 0.1
    done
    wait "$1"
    RC=$?
}
# wait_until CMD S: until CMD succeeds (S seconds at most)
wait_until() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        "$1" && return 0
        sleep 0.1
    done
    return 1
}
# send_bg NAME ID ARGS...: ringmail send --db in the background; SEND_PID
send_bg() {
    local name=$1 id=$2
    shift 2
    "$RM" send --db "$PG_URL" --campaign "$id" --config "$E2E_TMP/g.conf" --node "$name" \
        --journal "$E2E_TMP/$name.journal" --json "$@" \
        >"$E2E_TMP/$name.json" 2>"$E2E_TMP/$name.err" &
    SEND_PID=$!
    e2e_cleanup "e2e_kill $SEND_PID"
}

# ============================================================ 1. held at start, small window
N1=60
C1=$(campaign one "$N1")
hold "$C1" a "test: 3 complaints over 1000 delivered in 24h (0.30% > 0.20%)"
t0=$(now_ms)
# --lease 2: the parked claims outlive their rows' lease (the node's heartbeat
# keeps them), and nobody takes them while they wait.
send_bg g1 "$C1" --window 10 --lease 2 --metrics "127.0.0.1:$METRICS_PORT"
check "held at start: ISP b is delivered whole while a is held (window 10)" wait_sink b "$N1" 20
echo "# held at start: b's $N1 delivered after $(($(now_ms) - t0)) ms"
check "held at start: the send is still running (a's recipients wait for a resume)" \
    _pid_alive "$SEND_PID"
check_eq "held at start: a's sink got nothing" 0 "$(sj a accepted_rcpts)"
check_grep "held at start: the loud line names the campaign, the ISP, the reason and the resume" \
    "^ringmail: campaign $C1: isp a held: test: 3 complaints over 1000 delivered in 24h \(0\.30% > 0\.20%\); \`ringmail campaign resume $C1 --isp a\` lifts it$" \
    "$E2E_TMP/g1.err"
check "held at start: /metrics answers" scrape "$E2E_TMP/m1.txt"
check_eq "held at start: ringmail_isp_held{isp=\"a\"} 1" 1 "$(metric "$E2E_TMP/m1.txt" 'ringmail_isp_held{isp="a"}')"
check_eq "held at start: ringmail_isp_held{isp=\"b\"} 0" 0 "$(metric "$E2E_TMP/m1.txt" 'ringmail_isp_held{isp="b"}')"
check_eq "held at start: ringmail_parked counts a's $N1 recipients" "$N1" \
    "$(metric "$E2E_TMP/m1.txt" 'ringmail_parked ')"
check_eq "held at start: a's recipients stay claimed (parked, never attempted)" "$N1" \
    "$(psql_q "SELECT count(*) FROM ringmail.held h JOIN ringmail.recipient r ON r.id = h.recipient_id WHERE h.campaign_id = $C1 AND h.node = 'g1' AND r.address LIKE '%@a.test' AND r.attempts = 0")"
sleep 2.5 # longer than the node's 2 s lease: its claims are the node's, not a row's lease
check_eq "held at start: ... past the node's 2 s lease, they stay the node's" "$N1" \
    "$(psql_q "SELECT count(*) FROM ringmail.held h JOIN ringmail.recipient r ON r.id = h.recipient_id WHERE h.campaign_id = $C1 AND h.node = 'g1' AND r.address LIKE '%@a.test'")"
check_eq "held at start: a's sink still got nothing" 0 "$(sj a accepted_rcpts)"
check_eq "held at start: no delivery row for ISP a" 0 \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C1 AND isp = 'a'")"
# With only parked claims left, the claimer looks at the campaign once a
# second (LOADER_HOLDS_POLL_MS), not five times: scans of ringmail.recipient
# over 3 quiet seconds (PostgreSQL's own counters, flushed within a second).
# Since schema 8 a look is about six index scans (the due claim, the sweep,
# and loader_check_done's due index, fresh rows above the sweep, the fresh
# rows of the node's claims), none of the whole campaign, and the heartbeat
# counts every 2 s: 20 to 23 measured once a second, about 90 five times.
scans() { psql_q "SELECT seq_scan + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relid = 'ringmail.recipient'::regclass"; }
sleep 1.2
s0=$(scans)
sleep 3
s1=$(scans)
echo "# held at start: $((s1 - s0)) scans of ringmail.recipient in 3 s with only parked claims"
check_le "held at start: the claimer looks about once a second while only parked claims are left" \
    30 "$((s1 - s0))"
"$RM" campaign holds --db "$PG_URL" "$C1" >"$E2E_TMP/holds1.txt" 2>&1
check_grep "campaign holds: lists the hold" \
    "^campaign $C1: isp a held since [0-9-]+ [0-9:]+ UTC: test: 3 complaints" "$E2E_TMP/holds1.txt"
"$RM" campaign resume --db "$PG_URL" "$C1" --isp a >"$E2E_TMP/resume1.out" 2>&1
check_eq "resume: exit 0" 0 "$?"
check_grep "resume: says what it lifted" \
    "^campaign $C1: isp a resumed \(it was held since [0-9-]+ [0-9:]+ UTC: test: 3 complaints over 1000 delivered in 24h \(0\.30% > 0\.20%\)\)$" \
    "$E2E_TMP/resume1.out"
t0=$(now_ms)
check "resume: the running send sends a's $N1 recipients" wait_sink a "$N1" 20
echo "# resume: a's $N1 delivered $(($(now_ms) - t0)) ms after the resume"
wait_exit "$SEND_PID" 15
check_eq "resume: the run ends by itself, exit 0" 0 "$RC"
check_grep "resume: the send says so" "^ringmail: campaign $C1: isp a resumed" "$E2E_TMP/g1.err"
check_eq "resume: every recipient sent" $((2 * N1)) "$(count_state "$C1" sent)"
check_eq "resume: each accepted exactly once, nothing else accepted" 0 "$(once "$C1")"
check_eq "resume: one attempt each (a parked claim costs no attempt)" $((2 * N1)) \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C1")"
check_eq "json: isps.a.held false at the end, a parked $N1, b none" "false $N1 0" \
    "$(jeval "$E2E_TMP/g1.json" '"%s %d %d" % (str(d["isps"]["a"]["held"]).lower(), d["isps"]["a"]["parked"], d["isps"]["b"]["parked"])')"
check_eq "json: guard: no hold left, $N1 requeued, none parked" "0 $N1 0" \
    "$(jeval "$E2E_TMP/g1.json" '"%d %d %d" % (len(d["guard"]["holds"]), d["guard"]["requeued"], d["guard"]["parked"])')"
check_no_grep "held at start: no sanitizer report" Sanitizer "$E2E_TMP/g1.err"

# ============================================================ 2. a hold while sending
N2=120
C2=$(campaign two "$N2")
A0=$(sj a accepted_rcpts)
B0=$(sj b accepted_rcpts)
send_bg g2 "$C2" --metrics "127.0.0.1:$METRICS_PORT"
check "while sending: a is receiving" wait_sink a $((A0 + 20)) 20
hold "$C2" a "3 complaints over 1000 delivered in 24h (0.30% > 0.20%)"
t0=$(now_ms)
check "while sending: the send sees the hold (the loud line)" \
    wait_for_log "$E2E_TMP/g2.err" "^ringmail: campaign $C2: isp a held: 3 complaints" 5
SEEN_MS=$(($(now_ms) - t0))
echo "# while sending: hold seen after $SEEN_MS ms"
check_le "while sending: seen within 3 s" 3000 "$SEEN_MS"
sleep 0.5 # transactions under way when it was seen finish
A1=$(sj a accepted_rcpts)
B1=$(sj b accepted_rcpts)
check "while sending: /metrics answers" scrape "$E2E_TMP/m2.txt"
check_eq "while sending: ringmail_isp_held{isp=\"a\"} 1" 1 "$(metric "$E2E_TMP/m2.txt" 'ringmail_isp_held{isp="a"}')"
sleep 2
A2=$(sj a accepted_rcpts)
B2=$(sj b accepted_rcpts)
echo "# while sending: a $A1 -> $A2, b $B1 -> $B2 over 2 s"
check_eq "while sending: a's sink gets nothing more while held" "$A1" "$A2"
check_ge "while sending: b's sink keeps receiving (20 or more in 2 s)" $((B1 + 20)) "$B2"
check_le "while sending: a was not done when held" $((A0 + N2 - 1)) "$A2"
"$RM" campaign resume --db "$PG_URL" "$C2" --isp a >"$E2E_TMP/resume2.out" 2>&1
check_eq "while sending: resume exit 0" 0 "$?"
check "while sending: after the resume a gets the rest" wait_sink a $((A0 + N2)) 20
wait_exit "$SEND_PID" 15
check_eq "while sending: the run ends by itself, exit 0" 0 "$RC"
check_eq "while sending: every recipient sent" $((2 * N2)) "$(count_state "$C2" sent)"
check_eq "while sending: each accepted exactly once, nothing else accepted" 0 "$(once "$C2")"
check_eq "while sending: b's sink got all of b" $((B0 + N2)) "$(sj b accepted_rcpts)"
check_no_grep "while sending: no sanitizer report" Sanitizer "$E2E_TMP/g2.err"

# ============================================================ 3. resume's refusals
"$RM" campaign resume --db "$PG_URL" "$C2" --isp a >"$E2E_TMP/r3.out" 2>"$E2E_TMP/r3.err"
check_eq "refused: no such hold: exit 1" 1 "$?"
check_grep "refused: no such hold: says so" "^ringmail campaign resume: campaign $C2: isp a is not held$" \
    "$E2E_TMP/r3.err"
hold "$C2" b "test"
"$RM" campaign resume --db "$PG_URL" "$C2" --isp a >"$E2E_TMP/r3.out" 2>"$E2E_TMP/r3.err"
check_grep "refused: ... and names the ISPs that are held" \
    "campaign $C2: isp a is not held \(held: b\)$" "$E2E_TMP/r3.err"
"$RM" campaign resume --db "$PG_URL" 999999 --isp a >"$E2E_TMP/r3.out" 2>"$E2E_TMP/r3.err"
check_eq "refused: no such campaign: exit 1" 1 "$?"
check_grep "refused: no such campaign: says so" "no campaign 999999" "$E2E_TMP/r3.err"
"$RM" campaign resume --db "$PG_URL" "$C2" >"$E2E_TMP/r3.out" 2>"$E2E_TMP/r3.err"
check_eq "refused: no --isp, and the campaign is not paused: exit 1" 1 "$?"
check_grep "refused: no --isp: says so, and names the held ISPs" \
    "campaign $C2 is not paused \(it is done\); held ISPs: b \(--isp NAME resumes one\)$" "$E2E_TMP/r3.err"
"$RM" campaign resume --db "$PG_URL" seven --isp a >"$E2E_TMP/r3.out" 2>"$E2E_TMP/r3.err"
check_eq "refused: a campaign that is not a number: exit 2" 2 "$?"
check_grep "refused: a campaign that is not a number: says so" "numeric id" "$E2E_TMP/r3.err"
"$RM" campaign resume --db "$PG_URL" --isp a >"$E2E_TMP/r3.out" 2>"$E2E_TMP/r3.err"
check_eq "refused: no campaign given: exit 2" 2 "$?"
check_grep "refused: no campaign given: says so" "which campaign\\?" "$E2E_TMP/r3.err"
"$RM" campaign holds --db "$PG_URL" --isp a >"$E2E_TMP/r3.out" 2>"$E2E_TMP/r3.err"
check_eq "holds: --isp is refused: exit 2" 2 "$?"
check_grep "holds: --isp is refused: says so" "\-\-isp belongs to campaign resume" "$E2E_TMP/r3.err"
"$RM" campaign holds --db "$PG_URL" 999999 >"$E2E_TMP/r3.out" 2>"$E2E_TMP/r3.err"
check_eq "holds: no such campaign: exit 1" 1 "$?"
check_grep "holds: no such campaign: says so" "^ringmail campaign holds: no campaign 999999" "$E2E_TMP/r3.err"
check_eq "refused: the hold on b is still there" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.isp_hold WHERE campaign_id = $C2 AND resumed_at IS NULL")"
"$RM" campaign resume --db "$PG_URL" "$C2" --isp b >/dev/null 2>&1
"$RM" campaign holds --db "$PG_URL" "$C2" >"$E2E_TMP/holds3.txt" 2>&1
check_grep "campaign holds: none left" "^campaign $C2: no ISP is held$" "$E2E_TMP/holds3.txt"

# ============================================================ 4. a stop while held
N4=10
C4=$(campaign four "$N4")
hold "$C4" a "test"
B0=$(sj b accepted_rcpts)
send_bg g4 "$C4"
check "stop while held: b delivered" wait_sink b $((B0 + N4)) 20
sleep 0.3
kill -TERM "$SEND_PID" 2>/dev/null
wait_exit "$SEND_PID" 15
check_eq "stop while held: exit 1 (work left)" 1 "$RC"
check_grep "stop while held: the parked claims went back to the queue" \
    "every result is written; $N4 claimed recipients went back to the queue" "$E2E_TMP/g4.err"
check_eq "stop while held: a's recipients queued again, never attempted" "$N4" \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C4 AND state = 'queued' AND attempts = 0 AND address LIKE '%@a.test'")"
check_eq "stop while held: nothing left claimed" 0 "$(count_state "$C4" claimed)"
check_eq "stop while held: the hold stays" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.isp_hold WHERE campaign_id = $C4 AND resumed_at IS NULL")"
# Again, and kill -9 while a's claims are parked: the node's next start
# (after the resume) queues them again and sends them, once.
send_bg g4 "$C4"
parked_again() {
    [ "$(count_state "$C4" claimed)" -eq "$N4" ]
}
check "kill -9 while parked: a's claims parked again" wait_until parked_again 10
kill -KILL "$SEND_PID" 2>/dev/null
wait "$SEND_PID" 2>/dev/null
"$RM" campaign resume --db "$PG_URL" "$C4" --isp a >/dev/null 2>&1
A0=$(sj a accepted_rcpts)
timeout 30 "$RM" send --db "$PG_URL" --campaign "$C4" --config "$E2E_TMP/g.conf" --node g4 \
    --journal "$E2E_TMP/g4.journal" --json >"$E2E_TMP/g4b.json" 2>"$E2E_TMP/g4b.err"
check_eq "kill -9 while parked: the restart sends them, exit 0" 0 "$?"
check_grep "kill -9 while parked: the restart queued them again (recovered)" \
    "recovered from an earlier stop of node g4: $N4 queued again, 0 ambiguous" "$E2E_TMP/g4b.err"
check_eq "kill -9 while parked: all sent, each once" "$((2 * N4)) $((A0 + N4)) 0" \
    "$(count_state "$C4" sent) $(sj a accepted_rcpts) $(once "$C4")"

# ============================================================ 5. the status line says why a waits
# On a terminal (script(1) gives it one) the status line names the held ISP.
N5=5
C5=$(campaign five "$N5")
hold "$C5" a "test"
B0=$(sj b accepted_rcpts)
script -qfec "exec $(printf '%q ' "$RM" send --db "$PG_URL" --campaign "$C5" --config "$E2E_TMP/g.conf" \
    --node g5 --journal "$E2E_TMP/g5.journal")" "$E2E_TMP/g5.tty" >/dev/null 2>&1 &
SCRIPT_PID=$!
e2e_cleanup "e2e_kill $SCRIPT_PID"
check "status line: b delivered" wait_sink b $((B0 + N5)) 20
sleep 1.5 # a status line or two
check_grep "status line: says why a waits ('a: held: ' and the hold's reason)" '^  a: held: ' "$E2E_TMP/g5.tty"
"$RM" campaign resume --db "$PG_URL" "$C5" --isp a >/dev/null 2>&1
wait_exit "$SCRIPT_PID" 15
check_eq "status line: after the resume the run ends by itself, exit 0" 0 "$RC"
check_eq "status line: every recipient sent" $((2 * N5)) "$(count_state "$C5" sent)"

# ============================================================ 6. the whole loop: a complaint holds a
# No row written by hand here: an ARF complaint about a delivered recipient
# of ISP a goes through `ringmail feedback ingest` (the feedback store),
# which holds a (1 complaint over 10 or more delivered > 5%, sample 5), and
# the running send stops sending to a.
SECRET=$E2E_TMP/feedback.secret
head -c 48 /dev/urandom >"$SECRET"
chmod 600 "$SECRET"
{
    cat "$E2E_TMP/g.conf"
    printf '[feedback]\nreturn_path = bounces.sender.test\nsecret_file = %s\n' "$SECRET"
    printf 'complaint_pause = 5%%\ncomplaint_min_sample = 5\n'
} >"$E2E_TMP/fb.conf"
N6=120
C6=$(campaign six "$N6")
A0=$(sj a accepted_rcpts)
B0=$(sj b accepted_rcpts)
"$RM" send --db "$PG_URL" --campaign "$C6" --config "$E2E_TMP/fb.conf" --node g6 \
    --journal "$E2E_TMP/g6.journal" --json >"$E2E_TMP/g6.json" 2>"$E2E_TMP/g6.err" &
SEND_PID=$!
e2e_cleanup "e2e_kill $SEND_PID"
delivered_a() {
    [ "$(psql_q "SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C6 AND isp = 'a' AND outcome = 'accepted'")" -ge 10 ]
}
check "the whole loop: 10 of a's recipients delivered (delivery rows)" wait_until delivered_a 20
R6=$(psql_q "SELECT d.recipient_id || ' ' || r.address FROM ringmail.delivery d
    JOIN ringmail.recipient r ON r.id = d.recipient_id
    WHERE d.campaign_id = $C6 AND d.isp = 'a' AND d.outcome = 'accepted' ORDER BY d.id LIMIT 1")
"$E2E_PY" "$E2E_DIR/feedback_mail.py" arf --secret "$SECRET" --campaign "$C6" \
    --recipient "${R6% *}" --address "${R6#* }" >"$E2E_TMP/c6.eml"
"$RM" feedback ingest --db "$PG_URL" --config "$E2E_TMP/fb.conf" --rcpt abuse@bounces.sender.test \
    <"$E2E_TMP/c6.eml" >"$E2E_TMP/ingest6.out" 2>"$E2E_TMP/ingest6.err"
check_eq "the whole loop: the complaint is recorded (ingest exit 0)" 0 "$?"
t0=$(now_ms)
check_eq "the whole loop: the store held a" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.isp_hold WHERE campaign_id = $C6 AND isp = 'a' AND resumed_at IS NULL")"
check "the whole loop: the running send holds a, saying the store's reason" \
    wait_for_log "$E2E_TMP/g6.err" \
    "^ringmail: campaign $C6: isp a held: 1 complaints over [0-9]+ delivered in 24h \([0-9.]+% > 5\.00%\); \`ringmail campaign resume $C6 --isp a\` lifts it$" 5
echo "# the whole loop: the send held a $(($(now_ms) - t0)) ms after the complaint was recorded"
sleep 0.5
A1=$(sj a accepted_rcpts)
B1=$(sj b accepted_rcpts)
sleep 1.5
check_eq "the whole loop: a's sink gets nothing more" "$A1" "$(sj a accepted_rcpts)"
check_ge "the whole loop: b's sink keeps receiving" $((B1 + 10)) "$(sj b accepted_rcpts)"
"$RM" campaign resume --db "$PG_URL" "$C6" --isp a >/dev/null 2>&1
wait_exit "$SEND_PID" 20
check_eq "the whole loop: resumed, the run ends by itself, exit 0" 0 "$RC"
check_eq "the whole loop: every recipient sent" $((2 * N6)) "$(count_state "$C6" sent)"
check_eq "the whole loop: a and b each got theirs once" "$((A0 + N6)) $((B0 + N6)) 0" \
    "$(sj a accepted_rcpts) $(sj b accepted_rcpts) $(once "$C6")"

# ============================================================ 7. the holds table unreadable
# At start: the send refuses (it cannot know what is held). While running:
# one line per outage, the holds last read stay, one line when it is back.
C7=$(campaign seven 100)
psql_q "ALTER TABLE ringmail.isp_hold RENAME TO isp_hold_away" >/dev/null
"$RM" send --db "$PG_URL" --campaign "$C7" --config "$E2E_TMP/g.conf" --node g7 \
    --journal "$E2E_TMP/g7.journal" >/dev/null 2>"$E2E_TMP/g7.err"
check_ne "holds unreadable at start: the send refuses" 0 "$?"
check_grep "holds unreadable at start: says why" \
    "^ringmail send: campaign $C7: reading the campaign's ISP holds: .*isp_hold.* does not exist" "$E2E_TMP/g7.err"
check_eq "holds unreadable at start: nothing was sent" 0 "$(count_state "$C7" sent)"
psql_q "ALTER TABLE ringmail.isp_hold_away RENAME TO isp_hold" >/dev/null
send_bg g7b "$C7"
some_sent7() { [ "$(count_state "$C7" sent)" -gt 0 ]; }
wait_until some_sent7 10
psql_q "ALTER TABLE ringmail.isp_hold RENAME TO isp_hold_away" >/dev/null
check "holds unreadable while running: one line, the holds last read stay" \
    wait_for_log "$E2E_TMP/g7b.err" \
    "^ringmail: database: holds: reading ringmail.isp_hold: .*does not exist.* \(retrying; the holds last read stay\)$" 5
psql_q "ALTER TABLE ringmail.isp_hold_away RENAME TO isp_hold" >/dev/null
check "holds readable again: says so" wait_for_log "$E2E_TMP/g7b.err" "^ringmail: database: holds: reading again$" 5
wait_exit "$SEND_PID" 20
check_eq "holds outage: the run ends by itself, exit 0, every recipient sent" "0 200" \
    "$RC $(count_state "$C7" sent)"

echo "# test_complaint_guard.sh: $(($(now_ms) - T_START)) ms"
e2e_finish
