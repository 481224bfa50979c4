#!/usr/bin/env bash
# A campaign's life cycle and the operator's runtime controls (issue 14):
# draft -> running -> done through real sends to two sinks (ISPs a and b,
# [route]s), and what a running send does on `ringmail campaign pause`,
# `resume` and `cancel` (read within 2 seconds by the holds thread's poll).
#   1. draft -> running -> done: the send marks it done and says so; a
#      second send says "is complete" and exits 0; list and show agree
#   2. pause during a send (on a terminal): no new delivery within 2 s, the
#      live line says "paused by operator since ..."; resume: it finishes
#      without a restart, every recipient accepted exactly once
#   3. pause --isp a: a gets nothing while b keeps sending; resume --isp a
#   4. cancel: the send exits 0 within seconds; the recipients not sent stay
#      queued or deferred, none claimed; a cancelled campaign is refused
#   5. scheduled: a send waits for start_at, then sends; SIGINT while it
#      waits sends nothing
#   6. campaign show, and every refusal's text
# Nothing leaves 127.0.0.0/8.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
T_START=$(now_ms)
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null

# 8 messages/s per ISP: a campaign of 2 x 50 takes about 6 s.
two_isps "$E2E_TMP/l.conf" 8/s

campaign() { two_isp_campaign "$@"; }
status() { psql_q "SELECT status FROM ringmail.campaign WHERE id = $1"; }
deliveries() { psql_q "SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $1"; }
# twice ID: recipients with more than one accepted delivery row
twice() {
    psql_q "SELECT count(*) FROM (SELECT recipient_id FROM ringmail.delivery WHERE campaign_id = $1
        AND outcome = 'accepted' GROUP BY recipient_id HAVING count(*) > 1) AS t"
}
wait_sink() { # NAME N S
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        [ "$(sj "$1" accepted_rcpts 2>/dev/null || echo 0)" -ge "$2" ] 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
wait_until_ok() { # CMD S: until CMD succeeds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        "$1" && return 0
        sleep 0.1
    done
    return 1
}
wait_exit() { # PID S: its status in RC
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        _pid_alive "$1" || break
        sleep 0.1
    done
    wait "$1"
    RC=$?
}
# send_bg NAME ID: ringmail send --db in the background; SEND_PID
send_bg() {
    "$RM" send --db "$PG_URL" --campaign "$2" --config "$E2E_TMP/l.conf" --node "$1" \
        --journal "$E2E_TMP/$1.journal" >"$E2E_TMP/$1.out" 2>"$E2E_TMP/$1.err" &
    SEND_PID=$!
    e2e_cleanup "e2e_kill $SEND_PID"
}
send_fg() { # NAME ID
    timeout 40 "$RM" send --db "$PG_URL" --campaign "$2" --config "$E2E_TMP/l.conf" --node "$1" \
        --journal "$E2E_TMP/$1.journal" >"$E2E_TMP/$1.out" 2>"$E2E_TMP/$1.err"
}
# ctl NAME ARGS...: ringmail campaign ARGS --db URL; stdout NAME.out, stderr NAME.err, RC
ctl() {
    local name=$1
    shift
    "$RM" campaign "$@" --db "$PG_URL" >"$E2E_TMP/$name.out" 2>"$E2E_TMP/$name.err"
    RC=$?
}

# ============================================================ 1. draft -> running -> done
C1=$(campaign one 10)
check_eq "draft: a new campaign is a draft" draft "$(status "$C1")"
send_fg s1 "$C1"
check_eq "done: the send exits 0" 0 "$?"
check_eq "done: every recipient sent" 20 "$(count_state "$C1" sent)"
check_eq "done: the send marked it done, with its reason" "done|all 20 recipients final: 20 sent" \
    "$(psql_q "SELECT status || '|' || status_reason FROM ringmail.campaign WHERE id = $C1")"
check_eq "done: status_at moved" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.campaign WHERE id = $C1 AND status_at > created_at")"
check_grep "done: the send says so" \
    "^ringmail send: campaign $C1 is done: all 20 recipients final: 20 sent$" "$E2E_TMP/s1.err"
send_fg s1b "$C1"
check_eq "complete: a second send exits 0" 0 "$?"
check_eq "complete: it says so and prints no table" \
    "ringmail send: campaign $C1 is complete (20 recipients final: 20 sent); nothing to send" \
    "$(cat "$E2E_TMP/s1b.out")"
check_eq "complete: nothing more was attempted" 20 "$(deliveries "$C1")"
"$RM" send --db "$PG_URL" --campaign "$C1" --config "$E2E_TMP/l.conf" --node s1j \
    --journal "$E2E_TMP/s1j.journal" --json >"$E2E_TMP/s1j.out" 2>"$E2E_TMP/s1j.err"
check_eq "complete --json: one object, exit 0" "0 $C1 done True 20 20 sent" \
    "$? $(jeval "$E2E_TMP/s1j.out" '"%d %s %s %d %s" % (d["campaign"], d["status"], d["complete"], d["recipients"], d["summary"])')"
# A campaign whose rows say running but whose recipients are all final
# (a send stopped before it saw the last result) is done for list and show.
psql_q "UPDATE ringmail.campaign SET status = 'running' WHERE id = $C1" >/dev/null
ctl list1 list
check_grep "list: all final is done, whatever the row says" "^ *$C1  done  +20  +0  +0  +20  " \
    "$E2E_TMP/list1.out"
send_fg s1c "$C1"
check_eq "complete: the send marks such a campaign done" "0 done" "$? $(status "$C1")"

# ============================================================ 2. pause and resume a send
C2=$(campaign two 50)
A0=$(sj a accepted_rcpts)
B0=$(sj b accepted_rcpts)
# On a terminal (script(1) gives it one), for the live line.
script -qfec "exec $(printf '%q ' "$RM" send --db "$PG_URL" --campaign "$C2" --config "$E2E_TMP/l.conf" \
    --node s2 --journal "$E2E_TMP/s2.journal")" "$E2E_TMP/s2.tty" >/dev/null 2>&1 &
SEND_PID=$!
e2e_cleanup "e2e_kill $SEND_PID"
check "pause: the send is sending" wait_sink a $((A0 + 10)) 15
check_eq "running: the send set it running" running "$(status "$C2")"
ctl p2 pause "$C2"
check_eq "pause: exit 0" 0 "$RC"
T_PAUSE=$(now_ms)
check_grep "pause: says what happens" \
    "^campaign $C2 paused \(it was running\): a running send starts no new transaction within 2 seconds" \
    "$E2E_TMP/p2.out"
check "pause: the send says it paused" wait_for_log "$E2E_TMP/s2.tty" \
    "ringmail: campaign $C2 paused \(paused by operator, since [0-9:]+ UTC\)" 3
sleep 2
D1=$(deliveries "$C2")
LAST=$(psql_q "SELECT (extract(epoch FROM max(at)) * 1000)::bigint FROM ringmail.delivery WHERE campaign_id = $C2")
echo "# pause: the last delivery row $((LAST - T_PAUSE)) ms after the pause command"
check_le "pause: no delivery row later than 2 s after the pause" $((T_PAUSE + 2000)) "$LAST"
sleep 1.5
check_eq "pause: no new delivery row while paused" "$D1" "$(deliveries "$C2")"
check_le "pause: it was paused before the end" 99 "$D1"
check_grep "pause: the live line says paused by operator since HH:MM:SS" \
    "paused by operator since [0-9]{2}:[0-9]{2}:[0-9]{2} UTC" "$E2E_TMP/s2.tty"
check "pause: the send waits (still running)" _pid_alive "$SEND_PID"
ctl show2 show "$C2"
check_grep "show: paused, by whom" "^  status +paused since [0-9-]+ [0-9:]+ UTC: paused by operator$" \
    "$E2E_TMP/show2.out"
check_grep "show: the live node" "^  node s2 on .* \(pid [0-9]+\), started " "$E2E_TMP/show2.out"
ctl r2 resume "$C2"
check_eq "resume: exit 0" 0 "$RC"
check_grep "resume: says so" \
    "^campaign $C2 resumed \(it was paused since [0-9-]+ [0-9:]+ UTC: paused by operator\); a running send continues within 2 seconds$" \
    "$E2E_TMP/r2.out"
wait_exit "$SEND_PID" 20
check_eq "resume: the same send finishes, exit 0" 0 "$RC"
check_grep "resume: the send said it resumed" "ringmail: campaign $C2 resumed" "$E2E_TMP/s2.tty"
check_eq "resume: every recipient sent" 100 "$(count_state "$C2" sent)"
check_eq "resume: none accepted twice" 0 "$(twice "$C2")"
check_eq "resume: the sinks got each once" "$((A0 + 50)) $((B0 + 50))" \
    "$(sj a accepted_rcpts) $(sj b accepted_rcpts)"
check_eq "resume: done" done "$(status "$C2")"

# ============================================================ 3. pause one ISP
C3=$(campaign three 40)
A0=$(sj a accepted_rcpts)
B0=$(sj b accepted_rcpts)
send_bg s3 "$C3"
check "pause --isp: a is receiving" wait_sink a $((A0 + 5)) 15
ctl p3 pause "$C3" --isp a
check_eq "pause --isp: exit 0" 0 "$RC"
check_grep "pause --isp: says so" \
    "^campaign $C3: isp a paused by operator; a running send holds it within 2 seconds \(\`ringmail campaign resume $C3 --isp a\` lifts it\)$" \
    "$E2E_TMP/p3.out"
check "pause --isp: the send holds a" wait_for_log "$E2E_TMP/s3.err" \
    "^ringmail: campaign $C3: isp a held: paused by operator; " 3
sleep 0.5
A1=$(sj a accepted_rcpts)
B1=$(sj b accepted_rcpts)
sleep 2
echo "# pause --isp: a $A1 -> $(sj a accepted_rcpts), b $B1 -> $(sj b accepted_rcpts) over 2 s"
check_eq "pause --isp: a's sink gets nothing more" "$A1" "$(sj a accepted_rcpts)"
check_ge "pause --isp: b keeps receiving" $((B1 + 8)) "$(sj b accepted_rcpts)"
ctl p3b pause "$C3" --isp a
check_eq "pause --isp twice: exit 1" 1 "$RC"
check_grep "pause --isp twice: already held" \
    "^ringmail campaign pause: campaign $C3: isp a is already held since [0-9-]+ [0-9:]+ UTC: paused by operator$" \
    "$E2E_TMP/p3b.err"
ctl h3 holds "$C3"
check_grep "holds: lists the operator's hold" "^campaign $C3: isp a held since .*: paused by operator$" \
    "$E2E_TMP/h3.out"
ctl r3 resume "$C3" --isp a
check_eq "resume --isp: exit 0" 0 "$RC"
wait_exit "$SEND_PID" 20
check_eq "resume --isp: the send finishes, exit 0" 0 "$RC"
check_eq "resume --isp: every recipient sent, none twice" "80 0" \
    "$(count_state "$C3" sent) $(twice "$C3")"

# ============================================================ 4. cancel
C4=$(campaign four 60)
send_bg s4 "$C4"
some4() { [ "$(count_state "$C4" sent)" -ge 10 ]; }
check "cancel: the send is sending" wait_until_ok some4 15
ctl c4 cancel "$C4"
check_eq "cancel: exit 0" 0 "$RC"
check_grep "cancel: says what happens" \
    "^campaign $C4 cancelled \(it was running\) with [0-9]+ recipients not sent: they stay in the database; a running send finishes what is in flight and stops within 2 seconds" \
    "$E2E_TMP/c4.out"
t0=$(now_ms)
wait_exit "$SEND_PID" 10
echo "# cancel: the send ended $(($(now_ms) - t0)) ms after the cancel"
check_eq "cancel: the send exits 0" 0 "$RC"
check_le "cancel: within 5 s" 5000 $(($(now_ms) - t0))
NOT4=$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C4 AND state IN ('queued', 'deferred')")
check_grep "cancel: the send says how many were not sent" \
    "^ringmail send: campaign $C4 cancelled with $NOT4 recipients not sent \(they stay queued or deferred in the database; [0-9]+ claims? went back\); every result is written$" \
    "$E2E_TMP/s4.err"
check_ge "cancel: some were not sent" 1 "$NOT4"
check_eq "cancel: none claimed, none lost" "0 120" \
    "$(count_state "$C4" claimed) $(($(count_state "$C4" sent) + NOT4))"
check_eq "cancel: none accepted twice" 0 "$(twice "$C4")"
check_eq "cancel: the status" "cancelled|cancelled by operator" \
    "$(psql_q "SELECT status || '|' || status_reason FROM ringmail.campaign WHERE id = $C4")"
send_fg s4b "$C4"
check_eq "cancelled: a send refuses, exit 2" 2 "$?"
check_grep "cancelled: says why" \
    "^ringmail send: campaign $C4 was cancelled \([0-9-]+ [0-9:]+ UTC: cancelled by operator\); a cancelled campaign never sends again$" \
    "$E2E_TMP/s4b.err"
check_eq "cancelled: nothing more was sent" "$NOT4" \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C4 AND state IN ('queued', 'deferred')")"
# A node that crashed holding claims of a campaign cancelled since: its
# next start settles them (back to the queue), then refuses to send.
C9=$(campaign nine 2)
psql_q "UPDATE ringmail.recipient SET state = 'claimed', lease_owner = 's9', next_attempt_at = NULL,
    lease_expires_at = now() + interval '10 s' WHERE id IN (SELECT id FROM ringmail.recipient
    WHERE campaign_id = $C9 ORDER BY id LIMIT 2)" >/dev/null
ctl c9 cancel "$C9"
send_fg s9 "$C9"
check_eq "cancelled, claims left by a crash: the node's restart refuses to send, exit 2" 2 "$?"
check_grep "cancelled, claims left by a crash: ... once it gave them back" \
    "^ringmail send: recovered from an earlier stop of node s9: 2 queued again, 0 ambiguous" \
    "$E2E_TMP/s9.err"
check_grep "cancelled, claims left by a crash: says why it sends nothing" \
    "^ringmail send: campaign $C9 was cancelled \(.*\); a cancelled campaign never sends again$" \
    "$E2E_TMP/s9.err"
check_eq "cancelled, claims left by a crash: none claimed, none sent" "0 4 0" \
    "$(count_state "$C9" claimed) $(count_state "$C9" queued) $(deliveries "$C9")"
ctl show4 show "$C4"
check_grep "show: cancelled with N recipients not sent" \
    "^  status +cancelled since .*: cancelled by operator; cancelled with $NOT4 recipients not sent$" \
    "$E2E_TMP/show4.out"

# ============================================================ 5. scheduled
C5=$(campaign five 5)
psql_q "UPDATE ringmail.campaign SET status = 'scheduled', start_at = now() + interval '3 s' WHERE id = $C5" >/dev/null
t0=$(now_ms)
send_fg s5 "$C5"
RC5=$?
took=$(($(now_ms) - t0))
echo "# scheduled: the send took $took ms"
check_eq "scheduled: the send exits 0" 0 "$RC5"
check_grep "scheduled: it says when the campaign starts, once" \
    "^ringmail send: campaign $C5 starts at [0-9-]+ [0-9:]+ UTC \(in [123]s\)$" "$E2E_TMP/s5.err"
check_eq "scheduled: one such line" 1 "$(grep -c 'starts at' "$E2E_TMP/s5.err")"
FIRST=$(psql_q "SELECT (extract(epoch FROM min(d.at) - c.start_at) * 1000)::bigint FROM ringmail.delivery d
    JOIN ringmail.campaign c ON c.id = d.campaign_id WHERE d.campaign_id = $C5 GROUP BY c.start_at")
check_ge "scheduled: nothing was sent before start_at" 0 "$FIRST"
check_eq "scheduled: then everything was sent, done" "10 done" "$(count_state "$C5" sent) $(status "$C5")"
# More recipients for a done campaign: it runs again, and is done again.
psql_q "INSERT INTO ringmail.recipient (campaign_id, address) VALUES ($C5, 'late@a.test')" >/dev/null
ctl list5 list
check_grep "list: a done campaign with a recipient pending again is running" "^ *$C5  running  +11  +1  " \
    "$E2E_TMP/list5.out"
send_fg s5b "$C5"
check_eq "done, then one more: the send sends it, exit 0, done again" "0 11 done|all 11 recipients final: 11 sent" \
    "$? $(count_state "$C5" sent) $(psql_q "SELECT status || '|' || status_reason FROM ringmail.campaign WHERE id = $C5")"
C6=$(campaign six 5)
psql_q "UPDATE ringmail.campaign SET status = 'scheduled', start_at = now() + interval '1 hour' WHERE id = $C6" >/dev/null
send_bg s6 "$C6"
check "scheduled an hour ahead: says so" wait_for_log "$E2E_TMP/s6.err" \
    "^ringmail send: campaign $C6 starts at [0-9-]+ [0-9:]+ UTC \(in (59m [0-9]{2}s|1h 00m)\)$" 5
ctl show6 show "$C6"
check_grep "show: the start time" "^  start at +[0-9-]+ [0-9:]+ UTC \(in " "$E2E_TMP/show6.out"
kill -INT "$SEND_PID"
wait_exit "$SEND_PID" 3
check_eq "scheduled: SIGINT while waiting ends it, exit 1" 1 "$RC"
check_grep "scheduled: SIGINT: says nothing was sent" \
    "^ringmail send: Interrupt: stopped before campaign $C6 started; nothing was sent$" "$E2E_TMP/s6.err"
check_eq "scheduled: still scheduled, nothing sent" "scheduled 0" \
    "$(status "$C6") $(deliveries "$C6")"

C8=$(campaign eight 2)
psql_q "UPDATE ringmail.campaign SET status = 'scheduled', start_at = now() + interval '1 hour' WHERE id = $C8" >/dev/null
send_bg s8 "$C8"
check "scheduled, then cancelled: the send waits" wait_for_log "$E2E_TMP/s8.err" "starts at" 5
ctl c8 cancel "$C8"
wait_exit "$SEND_PID" 4
check_eq "scheduled, then cancelled: the waiting send refuses, exit 2" 2 "$RC"
check_grep "scheduled, then cancelled: says so" \
    "^ringmail send: campaign $C8 was cancelled while waiting to start \(cancelled by operator\)$" \
    "$E2E_TMP/s8.err"
check_eq "scheduled, then cancelled: nothing sent" 0 "$(deliveries "$C8")"

# ============================================================ 6. show, list and the refusals
psql_q "UPDATE ringmail.campaign SET from_name = 'Acme News', reply_to = 'help@sender.test',
    dkim_domain = 'sender.test', dkim_selector = 's1', dkim_key = 'SECRET-KEY-TEXT' WHERE id = $C1" >/dev/null
ctl show1 show "$C1"
check_eq "show: exit 0" 0 "$RC"
check_grep "show: the name" "^campaign $C1: one$" "$E2E_TMP/show1.out"
check_grep "show: from with its display name" "^  from +Acme News <news@sender.test>$" "$E2E_TMP/show1.out"
check_grep "show: reply-to" "^  reply-to +help@sender.test$" "$E2E_TMP/show1.out"
check_grep "show: subject" "^  subject +Hello$" "$E2E_TMP/show1.out"
check_grep "show: body sizes" "^  text body +13 bytes$" "$E2E_TMP/show1.out"
check_grep "show: no html" "^  html body +none$" "$E2E_TMP/show1.out"
check_grep "show: DKIM domain and selector" "^  dkim +d=sender.test s=s1 \(private key stored, not shown\)$" "$E2E_TMP/show1.out"
check_no_grep "show: never the key" "SECRET-KEY-TEXT" "$E2E_TMP/show1.out"
check_grep "show: status with its reason" "^  status +done since [0-9-]+ [0-9:]+ UTC: all 20 recipients final: 20 sent$" "$E2E_TMP/show1.out"
check_grep "show: counts" "^recipients +20: 20 final, 0 not final$" "$E2E_TMP/show1.out"
check_grep "show: sent" "^  sent +20$" "$E2E_TMP/show1.out"
check_grep "show: expired is a state" "^  expired +0$" "$E2E_TMP/show1.out"
check_grep "show: no holds" "^ISP holds +none$" "$E2E_TMP/show1.out"
check_grep "show: no live node" "^live nodes +none$" "$E2E_TMP/show1.out"

ctl e1 pause "$C1"
check_eq "pause done: exit 1" 1 "$RC"
check_eq "pause done: says so" \
    "ringmail campaign pause: campaign $C1 is done (all 20 recipients final: 20 sent); there is nothing to pause" \
    "$(cat "$E2E_TMP/e1.err")"
ctl e2 pause "$C4"
check_eq "pause cancelled: exit 1" 1 "$RC"
check_grep "pause cancelled: says so" \
    "^ringmail campaign pause: campaign $C4 was cancelled \([0-9-]+ [0-9:]+ UTC: cancelled by operator\); there is nothing to pause$" \
    "$E2E_TMP/e2.err"
ctl e3 resume "$C1"
check_eq "resume not paused: exit 1" 1 "$RC"
check_eq "resume not paused: says so" \
    "ringmail campaign resume: campaign $C1 is not paused (it is done)" "$(cat "$E2E_TMP/e3.err")"
ctl e4 pause 999999
check_eq "pause unknown campaign: exit 1" 1 "$RC"
check_eq "pause unknown campaign: says so" \
    "ringmail campaign pause: no campaign 999999 (ringmail campaign list)" "$(cat "$E2E_TMP/e4.err")"
ctl e5 cancel 999999
check_eq "cancel unknown campaign: says so" "1 ringmail campaign cancel: no campaign 999999 (ringmail campaign list)" \
    "$RC $(cat "$E2E_TMP/e5.err")"
ctl e6 show 999999
check_eq "show unknown campaign: says so" "1 ringmail campaign show: no campaign 999999 (ringmail campaign list)" \
    "$RC $(cat "$E2E_TMP/e6.err")"
ctl e7 resume "$C3" --isp zz
check_eq "resume --isp not held: exit 1" 1 "$RC"
check_eq "resume --isp not held: says so" \
    "ringmail campaign resume: campaign $C3: isp zz is not held" "$(cat "$E2E_TMP/e7.err")"
ctl e8 cancel "$C4"
check_eq "cancel cancelled: says so" "1 yes" \
    "$RC $(grep -Eq "^ringmail campaign cancel: campaign $C4 is already cancelled \(since [0-9-]+ [0-9:]+ UTC: cancelled by operator\)$" "$E2E_TMP/e8.err" && echo yes)"
ctl e9 cancel "$C1"
check_eq "cancel done: says so" \
    "1 ringmail campaign cancel: campaign $C1 is done (all 20 recipients final: 20 sent); there is nothing to cancel" \
    "$RC $(cat "$E2E_TMP/e9.err")"
C7=$(campaign seven 2)
ctl e10 pause "$C7"
check_eq "pause a draft: exit 0" "0 paused" "$RC $(status "$C7")"
ctl e11 pause "$C7"
check_grep "pause paused: says so" \
    "^ringmail campaign pause: campaign $C7 is already paused \(since [0-9-]+ [0-9:]+ UTC: paused by operator\)$" \
    "$E2E_TMP/e11.err"
ctl e12 pause "$C7" --isp gmial
check_eq "pause --isp before any attempt: exit 0, no note" "0 0" "$RC $(wc -c <"$E2E_TMP/e12.err")"
psql_q "INSERT INTO ringmail.delivery (campaign_id, recipient_id, attempt, outcome, final, isp)
    VALUES ($C7, 0, 1, 'deferred', false, 'gmail')" >/dev/null
ctl e13 pause "$C7" --isp yahooo
check_eq "pause --isp an ISP no attempt went to: held anyway, exit 0" 0 "$RC"
check_eq "pause --isp an ISP no attempt went to: a note names the ones seen" \
    "ringmail campaign pause: note: no attempt of campaign $C7 went to an ISP called 'yahooo' so far (they went to gmail); ISPs are named by [isp NAME] in the send's --config" \
    "$(cat "$E2E_TMP/e13.err")"
ctl e14 pause
check_eq "pause without an id: exit 2" 2 "$RC"
check_grep "pause without an id: asks which" "^ringmail campaign pause: which campaign\? " "$E2E_TMP/e14.err"
ctl e18 pause "$C7" --isp ""
check_eq "pause --isp with no name: exit 2, says so" \
    "2 ringmail campaign pause: --isp wants the name of an ISP ([isp NAME] in the send's --config)" \
    "$RC $(cat "$E2E_TMP/e18.err")"
ctl e19 show "$C7" --isp a
check_eq "show --isp: refused, exit 2" \
    "2 ringmail campaign show: --isp belongs to campaign pause and resume" "$RC $(cat "$E2E_TMP/e19.err")"
ctl e20 resume
check_grep "resume without an id: asks which" "^ringmail campaign resume: which campaign\? " "$E2E_TMP/e20.err"
ctl e15 cancel "$C7" --isp a
check_grep "cancel --isp: refused" "^ringmail campaign cancel: a campaign is cancelled whole" "$E2E_TMP/e15.err"
ctl e16 resume "$C1" --isp a
check_eq "resume --isp on a campaign that holds nothing: exit 1" 1 "$RC"
# A send started on a paused campaign claims nothing until the resume.
send_bg s7 "$C7"
check "paused at start: the send says so" wait_for_log "$E2E_TMP/s7.err" \
    "^ringmail: campaign $C7 paused \(paused by operator, since [0-9:]+ UTC\)" 5
sleep 1.5
check_eq "paused at start: nothing claimed, nothing sent" "0 0" \
    "$(count_state "$C7" claimed) $(count_state "$C7" sent)"
ctl r7 resume "$C7"
wait_exit "$SEND_PID" 15
check_eq "paused at start: resumed, all sent, exit 0" "0 4 done" \
    "$RC $(count_state "$C7" sent) $(status "$C7")"
ctl list2 list
check_grep "list: a cancelled campaign" "^ *$C4  cancelled  +120  " "$E2E_TMP/list2.out"
check_grep "list: a done campaign" "^ *$C7  done  +4  " "$E2E_TMP/list2.out"
check_grep "list: a scheduled campaign" "^ *$C6  scheduled  +10  " "$E2E_TMP/list2.out"
ctl e17 pause "$C6"
ctl list3 list
check_grep "list: a paused campaign" "^ *$C6  paused  +10  " "$E2E_TMP/list3.out"
check_grep "list: the EXPIRED column" "^ *ID  STATUS  +TOTAL  QUEUED  CLAIMED  SENT  DEFERRED  BOUNCED  FAILED  EXPIRED  INVALID" \
    "$E2E_TMP/list2.out"
"$RM" campaign frobnicate 2>"$E2E_TMP/sub.err"
check_grep "campaign frobnicate: names every subcommand" \
    "^ringmail campaign: unknown subcommand 'frobnicate' \(one of: create, list, show, pause, resume, cancel, holds" \
    "$E2E_TMP/sub.err"
for f in "$E2E_TMP"/s[0-9]*.err; do
    check_no_grep "no sanitizer report in $(basename "$f")" Sanitizer "$f"
done

echo "# test_lifecycle.sh: $(($(now_ms) - T_START)) ms"
e2e_finish
