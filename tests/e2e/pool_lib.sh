# pool_lib.sh - shared by the pool's end-to-end tests (test_pool.sh,
# test_pool_limits.sh), sourced after lib.sh and e2e_setup. The caller sets
# SINK_PORT: every sink listens on 127.0.0.x:SINK_PORT.
#   pc CHECK ARGS...                   a check of pool_checks.py (exit 0 = pass)
#   start_sink NAME IP [options...]    stop_sink NAME    sj NAME FIELD
#   send_run NAME ARGS...              check_range NAME MIN MAX ACTUAL
#   recipients FILE PREFIX DOMAIN N    now_ms
# shellcheck shell=bash

now_ms() { date +%s%3N; }
pc() { "$E2E_PY" "$(dirname "${BASH_SOURCE[0]}")/pool_checks.py" "$@"; }

declare -A SINK_PID=() SINK_STATS=()
# start_sink NAME IP [sink options...]: plaintext sink on IP:SINK_PORT, stats every 100 ms.
start_sink() {
    local name=$1 ip=$2
    shift 2
    SINK_STATS[$name]=$E2E_TMP/sink.$name.json
    e2e_bg "sink.$name" "$RM" sink --listen "$ip:$SINK_PORT" --threads 1 --hostname "$name.test" \
        --stats "${SINK_STATS[$name]}" --stats-interval-ms 100 "$@"
    SINK_PID[$name]=$E2E_BG_PID
    wait_port "$ip" "$SINK_PORT" 10 "$E2E_BG_PID" || cat "$E2E_TMP/sink.$name.log" >&2
}
# stop_sink NAME: SIGTERM (the sink writes its final stats), wait.
stop_sink() { e2e_kill "${SINK_PID[$1]}"; }
# sj NAME FIELD: a field of a sink's stats.
sj() { jget "${SINK_STATS[$1]}" "$2"; }

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

