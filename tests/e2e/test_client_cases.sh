#!/usr/bin/env bash
# The client-robustness checklist (shared SMTP-CLIENT-CASES.md) end to end:
# ringmail blast against a scripted raw server per case. Every message must
# end with a recorded, explained outcome; none lost (sent == count).
set -u
. "$(dirname "$0")/lib.sh"
e2e_tmpdir
RM=${RINGMAIL:-build/ringmail}


# scripted MODE COUNT [blast args...]: result in $OUT, transcript in $TR
scripted() {
    local mode=$1 count=$2; shift 2
    local port; port=$(free_port)
    TR=$E2E_TMP/$mode.transcript
    /usr/bin/python3 "$(dirname "$0")/scripted_server.py" "$port" "$mode" --transcript "$TR" \
        >"$E2E_TMP/$mode.log" 2>&1 &
    local pid=$!
    e2e_cleanup "kill $pid"
    wait_port 127.0.0.1 "$port" 10
    OUT=$E2E_TMP/$mode.json
    timeout 60 "$RM" blast --server "127.0.0.1:$port" --tls none --count "$count" --json \
        --records "$E2E_TMP/$mode.records" "$@" >"$OUT" 2>"$E2E_TMP/$mode.err"
    kill "$pid" 2>/dev/null
    check_eq "$mode: nothing lost (sent == $count)" "$count" "$(jget "$OUT" sent)"
}

scripted multiline-greeting 5 --concurrency 1
check "with PIPELINING, MAIL RCPT DATA travel in one segment" /usr/bin/python3 -c '
import sys; segs=open(sys.argv[1],"rb").read().split(b"|SEGMENT|\n")
assert any(b"MAIL FROM" in s and b"RCPT TO" in s and b"DATA" in s for s in segs)' "$TR"
check_eq "multiline greeting: accepted" 5 "$(jget "$OUT" accepted)"

scripted multiline-everywhere 5 --concurrency 1
check_eq "multiline replies on every command: accepted" 5 "$(jget "$OUT" accepted)"
check "multiline final reply text kept" grep -q 'queued\\nas X' "$E2E_TMP/multiline-everywhere.records"

scripted split-replies 5 --concurrency 1
check_eq "replies split one byte per segment: accepted" 5 "$(jget "$OUT" accepted)"

scripted bare-code 5 --concurrency 1
check_eq "bare codes (\"250\"): accepted" 5 "$(jget "$OUT" accepted)"

scripted slow-greeting 2 --concurrency 1 --timeout-ms 500
check_eq "slow greeting: deferred" 2 "$(jget "$OUT" deferred)"
check_eq "slow greeting: reason timeout_greeting" 2 "$(jget "$OUT" reasons.timeout_greeting)"

scripted greeting-554 3 --concurrency 1
check_eq "554 greeting: rejected" 3 "$(jget "$OUT" rejected)"
check_eq "554 greeting: reason greeting_refused" 3 "$(jget "$OUT" reasons.greeting_refused)"
check "client never spoke before the greeting / after 554" sh -c "! grep -q MAIL '$TR'"

scripted close-after-greeting 3 --concurrency 1
check_eq "close after greeting: deferred" 3 "$(jget "$OUT" deferred)"
check_eq "close after greeting: reason connection_lost" 3 "$(jget "$OUT" reasons.connection_lost)"

scripted ehlo-502 6 --concurrency 1
check_eq "EHLO 502 -> HELO: accepted" 6 "$(jget "$OUT" accepted)"
check "HELO fallback used" grep -q "^HELO " "$TR"
check "without PIPELINING the client waits (lock step): no segment carries MAIL and RCPT" \
    /usr/bin/python3 -c 'import sys; segs=open(sys.argv[1],"rb").read().split(b"|SEGMENT|\n")
assert sum(b"MAIL FROM" in s for s in segs) == 6
assert not any(b"MAIL FROM" in s and b"RCPT TO" in s for s in segs)' "$TR"

scripted data-451 4 --concurrency 1
check_eq "451 after the dot: deferred" 4 "$(jget "$OUT" deferred)"
check_eq "451 after the dot: reason data_deferred" 4 "$(jget "$OUT" reasons.data_deferred)"
check "RSET after a failed transaction" grep -q "^RSET" "$TR"

scripted data-554 4 --concurrency 1
check_eq "554 after the dot: rejected" 4 "$(jget "$OUT" rejected)"
check "554 reply text recorded" grep -q 'content rejected' "$E2E_TMP/data-554.records"

scripted 421-mid-pipeline 3 --concurrency 1
check_eq "421 mid-pipeline: deferred" 3 "$(jget "$OUT" deferred)"
check_eq "421 mid-pipeline: code recorded" 3 "$(grep -c '"code": *421' "$E2E_TMP/421-mid-pipeline.records")"

scripted rcpt-452 3 --concurrency 1
check_eq "452 to RCPT: deferred, retried later" 3 "$(jget "$OUT" deferred)"
check_eq "452: reason rcpt_deferred" 3 "$(jget "$OUT" reasons.rcpt_deferred)"

scripted close-after-first 6 --concurrency 1 --msgs-per-conn 10
check_eq "pooled connection closed while idle: all still accepted" 6 "$(jget "$OUT" accepted)"
check_eq "idle close is a retry, not a failure" 0 "$(jget "$OUT" deferred)"

e2e_finish
