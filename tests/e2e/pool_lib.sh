# pool_lib.sh - shared by the pool's end-to-end tests (test_pool.sh,
# test_pool_limits.sh), sourced after lib.sh and e2e_setup. The caller sets
# SINK_PORT: every sink listens on 127.0.0.x:SINK_PORT.
#   pc CHECK ARGS...                   a check of pool_checks.py (exit 0 = pass)
#   send_run NAME ARGS...              check_range NAME MIN MAX ACTUAL
#   recipients FILE PREFIX DOMAIN N
# (start_sink, stop_sink, sj and now_ms are in lib.sh)
# shellcheck shell=bash

pc() { "$E2E_PY" "$(dirname "${BASH_SOURCE[0]}")/pool_checks.py" "$@"; }

# send_run NAME ARGS...: ringmail send with --json and --records under
# timeout SEND_TIMEOUT seconds (default 60); sets RC and ELAPSED_MS; output in $E2E_TMP/NAME.{json,err,records}.
send_run() {
    local name=$1 t0
    shift
    t0=$(now_ms)
    timeout -k 5 "${SEND_TIMEOUT:-60}" "$RM" send --json --records "$E2E_TMP/$name.records" \
        --from bounce@sender.test --helo sender.test "$@" \
        >"$E2E_TMP/$name.json" 2>"$E2E_TMP/$name.err"
    RC=$?
    ELAPSED_MS=$(($(now_ms) - t0))
    echo "# send $name: exit $RC after ${ELAPSED_MS} ms: $(head -c 2000 "$E2E_TMP/$name.json" | tr '\n' ' ')"
    [ "$RC" -ne 0 ] && tail -n 5 "$E2E_TMP/$name.err" | sed 's/^/#   stderr: /'
    return 0
}
# check_range NAME MIN MAX ACTUAL: integers, MIN <= ACTUAL <= MAX.
check_range() {
    if _e2e_int "$4" && [ "$4" -ge "$2" ] && [ "$4" -le "$3" ]; then
        _e2e_ok "$1"
    else
        _e2e_not_ok "$1" "expected $2..$3, got '$4'"
        return 1
    fi
}
# recipients FILE LOCALPREFIX DOMAIN N: append N addresses.
recipients() {
    local i
    for ((i = 1; i <= $4; i++)); do echo "$2$i@$3"; done >>"$1"
}

