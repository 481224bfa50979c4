#!/usr/bin/env bash
# ringmail send end to end (issue 10 item 6): a suspension of one ISP must not
# stall the others. Two sinks answering like Gmail and Microsoft
# (--profile gmail / outlook, STARTTLS), reached through [route DOMAIN]
# sections; Microsoft's S3150 rule suspends it for an hour, Gmail's
# 421 4.7.28 rule backs off for 5 s, and the Gmail sink answers 421 4.7.28
# over 60 messages/s per client address (--source-rate) while ringmail sends
# at 100/s. permfail@outlook.test is first in the list, so Microsoft is
# suspended (its lane paused until one hour from now) before Gmail's first
# backoff. Before the fix the pump timer stayed armed an hour ahead and
# Gmail was never pumped again when its 5 s pause ended.
#   1. isolation: every Gmail recipient is delivered exactly once, far
#      within the suspension (< 30 s); Microsoft's other recipients stay
#      queued and are reported not final (unsent) when the run is stopped,
#      none lost and none sent to the suspended ISP
#   2. resumption: every Gmail pause (measured from the sink's statistics,
#      written every 100 ms) ends in new acceptances within 2 s of its end,
#      while Microsoft is still suspended
#   3. SIGHUP during the suspension reloads the config and re-pumps;
#      Microsoft stays suspended
# The run itself cannot end (Microsoft's recipients wait an hour): the test
# stops it with SIGTERM once Gmail is done. Nothing leaves 127.0.0.0/8.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup

T_START=$(date +%s%3N)
PORT=$(free_port) # both sinks listen on 127.0.0.x:PORT
SINK_PORT=$PORT
# shellcheck source=tests/e2e/pool_lib.sh
. "$(dirname "$0")/pool_lib.sh"

GMAIL_N=300
OUTLOOK_N=20 # queued behind permfail@outlook.test
PAUSE_MS=5000
DONE_WITHIN_S=30

TLS=(--tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key")
start_sink gmail 127.0.0.101 "${TLS[@]}" --profile gmail --source-rate 60
start_sink outlook 127.0.0.102 "${TLS[@]}" --profile outlook

cat >"$E2E_TMP/isolation.conf" <<CONF
# test_isp_isolation.sh: ringmail.conf.example's gmail and microsoft rules,
# with a 5 s gmail pause (the example has 10m) and no rate recovery during the run
[global]
retry = 1s, 2s
max_age = 10m
tls = required
backoff_step = 0.1
backoff_interval = 60s

[isp gmail]
domains = gmail.test
max_connections = 4
msg_rate = 100/s
rule = 421 4.7.28 => backoff 0.5 5s
rule = 421 4.7.0 => backoff 0.7 5m
rule = 550 5.7.1 => bounce

[isp microsoft]
domains = outlook.test
max_connections = 1
msg_rate = 100/s
rule = 451 4.7.500 => backoff 0.5 15m
rule = S3150 => suspend 1h
rule = S3140 => suspend 1h

[route gmail.test]
server = 127.0.0.101:$PORT

[route outlook.test]
server = 127.0.0.102:$PORT
CONF

R=$E2E_TMP/isolation.rcpts
echo "permfail@outlook.test" >"$R"
recipients "$R" o outlook.test "$OUTLOOK_N"
recipients "$R" g gmail.test "$GMAIL_N"

# watch.py STATS N DEADLINE_S PAUSE_MS: polls the gmail sink's statistics
# every 50 ms until N recipients were accepted or DEADLINE_S passed, then
# prints one JSON line: done, done_ms (since it started), the pauses (a
# 421 seen while not paused starts one; later 421s inside it do not extend
# it, as in backoff_trigger) with the first acceptance after each and how
# late that was after the pause's end, and the timeline's length.
cat >"$E2E_TMP/watch.py" <<'PY'
import json, sys, time
path, n, deadline_s, pause_ms = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
t0 = time.monotonic()
def ms():
    return int((time.monotonic() - t0) * 1000)
samples, done = [], False
while ms() < deadline_s * 1000:
    try:
        s = json.load(open(path))
        samples.append((ms(), s.get("accepted_rcpts", 0), s.get("deferred_rcpts", 0)))
        if samples[-1][1] >= n:
            done = True
            break
    except (OSError, ValueError):
        pass
    time.sleep(0.05)
defers = [t for (t, _, d), (_, _, d0) in zip(samples[1:], samples) if d > d0]
accepts = [t for (t, a, _), (_, a0, _) in zip(samples[1:], samples) if a > a0]
pauses, end = [], -1
for t in defers:
    if t >= end:
        end = t + pause_ms
        # Acceptances within 500 ms of the 421 are of sessions already in flight.
        after = [a for a in accepts if a > t + 500]
        resume = after[0] if after else None
        pauses.append({"start_ms": t, "end_ms": end, "resume_ms": resume,
                       "late_ms": None if resume is None else resume - end})
print(json.dumps({"done": done, "done_ms": ms() if done else None, "pauses": pauses,
                  "accepted": samples[-1][1] if samples else 0, "samples": len(samples)}))
PY

# ---------------------------------------------------------------- the run
OUT=$E2E_TMP/isolation.json
REC=$E2E_TMP/isolation.records
timeout -k 5 120 "$RM" send --json --records "$REC" --from bounce@sender.test --helo sender.test \
    --recipients "$R" --config "$E2E_TMP/isolation.conf" >"$OUT" 2>"$E2E_TMP/isolation.err" &
SEND_PID=$!
e2e_cleanup "e2e_kill $SEND_PID"
"$E2E_PY" "$E2E_TMP/watch.py" "${SINK_STATS[gmail]}" "$GMAIL_N" $((DONE_WITHIN_S + 10)) "$PAUSE_MS" \
    >"$E2E_TMP/watch.json"
echo "# gmail timeline: $(cat "$E2E_TMP/watch.json")"
W=$E2E_TMP/watch.json
check "send still running after gmail's part (microsoft's recipients wait out the suspension)" \
    kill -0 "$SEND_PID"
# A reload during the suspension re-pumps (pool_reload kicks): nothing
# breaks and the suspension holds.
kill -HUP "$SEND_PID" 2>/dev/null
check "sighup: the config is reloaded during the suspension" \
    wait_for_log "$E2E_TMP/isolation.err" 'config reloaded from' 5
sleep 0.5
check_eq "sighup: microsoft stays suspended after the reload (the outlook sink got nothing)" 0 \
    "$(sj outlook accepted_rcpts)"
# Microsoft is still suspended: stop the run, as an operator would.
T_TERM=$(now_ms)
kill -TERM "$SEND_PID" 2>/dev/null
wait "$SEND_PID"
RC=$?
STOP_MS=$(($(now_ms) - T_TERM))
echo "# send: exit $RC ${STOP_MS} ms after SIGTERM: $(head -c 2000 "$OUT" | tr '\n' ' ')"
tail -n 5 "$E2E_TMP/isolation.err" | sed 's/^/#   stderr: /'
sleep 0.3 # a few stats intervals
stop_sink gmail
stop_sink outlook

# ---------------------------------------------------------------- 1. isolation
check_eq "isolation: all $GMAIL_N gmail recipients accepted by the sink while microsoft is suspended" \
    "$GMAIL_N" "$(jget "$W" accepted)"
check_eq "isolation: gmail finished (no stall behind microsoft's one-hour suspension)" true \
    "$(jget "$W" "done")"
check_le "isolation: gmail finished within ${DONE_WITHIN_S} s" $((DONE_WITHIN_S * 1000)) \
    "$(jeval "$W" 'd["done_ms"] if d["done_ms"] is not None else -1' | sed 's/^-1$/never/')"
check "isolation: every gmail recipient accepted exactly once" \
    pc once "${SINK_STATS[gmail]}" "$R" '@gmail\.test$'
check_ge "isolation: the gmail sink answered 421 4.7.28 over its source rate" 1 \
    "$(sj gmail deferred_rcpts)"
check_ge "isolation: gmail backed off (backoff_triggers)" 1 "$(jget "$OUT" isps.gmail.backoff_triggers)"
check "isolation: a gmail deferral carries 421 4.7.28 and the rule, not final" \
    pc any "$REC" '@gmail\.test$' \
    'd["outcome"] == "deferred" and d.get("code") == 421 and d.get("enhanced") == "4.7.28" and d.get("rule") == "421 4.7.28" and d.get("final") is False'
check "isolation: permfail@outlook.test rejected 550 5.7.1 (S3150), rule S3150, final" \
    pc final "$REC" permfail@outlook.test \
    'd["outcome"] == "rejected" and d.get("code") == 550 and "S3150" in d.get("text", "") and d.get("rule") == "S3150"'
check_eq "isolation: microsoft suspended once" 1 "$(jget "$OUT" isps.microsoft.backoff_triggers)"
check_eq "isolation: the outlook sink saw only permfail (nothing sent while suspended)" 0 \
    "$(sj outlook accepted_rcpts)"
check_eq "isolation: one RCPT rejected by the outlook sink" 1 "$(sj outlook rejected_rcpts)"
check_eq "isolation: stopped with recipients not final: exit 1" 1 "$RC"
check_le "isolation: SIGTERM stops the run within 5 s" 5000 "$STOP_MS"
check_no_grep "isolation: no sanitizer report from send" Sanitizer "$E2E_TMP/isolation.err"
check_eq "isolation: microsoft's $OUTLOOK_N waiting recipients reported unsent (not lost)" \
    "$OUTLOOK_N" "$(jget "$OUT" unsent)"
check_grep "isolation: send says $OUTLOOK_N recipients are not final" \
    "interrupted: $OUTLOOK_N recipients not final" "$E2E_TMP/isolation.err"
check_eq "isolation: summary: $GMAIL_N accepted, 1 rejected, nothing failed or expired" \
    "$GMAIL_N 1 0 0" \
    "$(jeval "$OUT" '"%d %d %d %d" % (d["accepted"], d["rejected"], d["failed"], d["expired"])')"
check "isolation: no record for microsoft's waiting recipients (never attempted)" \
    "$E2E_PY" -c 'import json, re, sys
n = sum(1 for l in open(sys.argv[1]) if l.strip() and re.match(r"^o[0-9]+@", json.loads(l)["rcpt"]))
print(n); assert n == 0' "$REC"

# ---------------------------------------------------------------- 2. resumption
check_ge "resume: gmail paused at least once during the run" 1 "$(jeval "$W" 'len(d["pauses"])')"
check_eq "resume: every gmail pause was followed by new acceptances" 0 \
    "$(jeval "$W" 'sum(1 for p in d["pauses"] if p["resume_ms"] is None)')"
# Sampling: the sink writes every 100 ms and the watcher reads every 50 ms,
# so a pause's start (and end) may be seen up to ~150 ms late.
check_range "resume: gmail resumed within 2 s of each pause's end (worst case, ms)" -500 2000 \
    "$(jeval "$W" 'max((p["late_ms"] if p["late_ms"] is not None else 10**9) for p in d["pauses"]) if d["pauses"] else "none"')"
check_range "resume: the first pause lasted its 5 s (start to first acceptance, ms)" 4500 7000 \
    "$(jeval "$W" '(d["pauses"][0]["resume_ms"] or 10**9) - d["pauses"][0]["start_ms"] if d["pauses"] else "none"')"

echo "# test_isp_isolation.sh: $(($(date +%s%3N) - T_START)) ms"
e2e_finish
