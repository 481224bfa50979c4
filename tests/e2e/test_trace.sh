#!/usr/bin/env bash
# End to end, the state trace (engine/trace.h): `blast --verbose`,
# `send --verbose` and RINGMAIL_TRACE=1 print one "ringmail trace: conn N
# MACHINE FROM -> TO" line per state transition on stderr; without them,
# none. The positive checks need the state machines' setters to call
# trace_state (engine/, pool/); until those land they fail.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup

PORT=$(free_port)
"$RM" sink --listen 127.0.0.1:"$PORT" --threads 1 >"$E2E_TMP/sink.log" 2>&1 &
SINK_PID=$!
e2e_cleanup "kill $SINK_PID 2>/dev/null"
check "sink listening" wait_port 127.0.0.1 "$PORT" 10

TRACE='^ringmail trace: conn [0-9]+ [a-z_]+ [A-Za-z_0-9]+ -> [A-Za-z_0-9]+'

# blast
timeout 60 "$RM" blast --server 127.0.0.1:"$PORT" --tls none --count 3 --concurrency 1 --json \
    >"$E2E_TMP/b.json" 2>"$E2E_TMP/b.err"
check_eq "blast without --verbose: exit 0" 0 "$?"
check_no_grep "blast without --verbose: no trace line" "ringmail trace:" "$E2E_TMP/b.err"

timeout 60 "$RM" blast --server 127.0.0.1:"$PORT" --tls none --count 3 --concurrency 1 --json \
    --verbose >"$E2E_TMP/bv.json" 2>"$E2E_TMP/bv.err"
check_eq "blast --verbose: exit 0" 0 "$?"
check_eq "blast --verbose: all accepted" 3 "$(jget "$E2E_TMP/bv.json" accepted)"
check_grep "blast --verbose: a trace line per transition on stderr" "$TRACE" "$E2E_TMP/bv.err"

RINGMAIL_TRACE=1 timeout 60 "$RM" blast --server 127.0.0.1:"$PORT" --tls none --count 3 \
    --concurrency 1 --json >"$E2E_TMP/be.json" 2>"$E2E_TMP/be.err"
check_eq "RINGMAIL_TRACE=1 blast: exit 0" 0 "$?"
check_grep "RINGMAIL_TRACE=1 blast: trace lines on stderr" "$TRACE" "$E2E_TMP/be.err"

# send, list mode through a relay (no DNS)
printf 'a@trace.test\nb@trace.test\n' >"$E2E_TMP/rcpts"
SEND=(send --recipients "$E2E_TMP/rcpts" --relay 127.0.0.1:"$PORT" --tls none --json)
timeout 60 "$RM" "${SEND[@]}" >"$E2E_TMP/s.json" 2>"$E2E_TMP/s.err"
check_eq "send without --verbose: exit 0" 0 "$?"
check_no_grep "send without --verbose: no trace line" "ringmail trace:" "$E2E_TMP/s.err"

timeout 60 "$RM" "${SEND[@]}" --verbose >"$E2E_TMP/sv.json" 2>"$E2E_TMP/sv.err"
check_eq "send --verbose: exit 0" 0 "$?"
check_eq "send --verbose: both accepted" 2 "$(jget "$E2E_TMP/sv.json" accepted)"
check_grep "send --verbose: a trace line per transition on stderr" "$TRACE" "$E2E_TMP/sv.err"

e2e_finish
