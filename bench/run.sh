#!/usr/bin/env bash
# make bench: ringmail blast against ringmail sink on this machine.
# Prints a table and writes bench/results/*.json. Medians of RUNS runs;
# CPU seconds are the client's own (getrusage), the wall time is end to end.
#
#   1. throughput: 2 KB over STARTTLS, reused connections (20 connections)
#   2. handshakes: full vs resumed TLS 1.3 and TLS 1.2, one message per
#      connection, handshakes per client CPU-second, side by side
#   3. sessions: 10,000 TLS sessions open at once (sink holds each reply
#      --latency-ms), client peak RSS per session
set -u
BUILD=${1:-build}
RM=$BUILD/ringmail
RUNS=${RUNS:-3}
COUNT=${COUNT:-100000}
OUT=bench/results
mkdir -p "$OUT"
. tests/e2e/lib.sh
e2e_tmpdir
make_certs "$E2E_TMP/certs"
C=$E2E_TMP/certs
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

SINK=""
sink_start() {
    PORT=$(free_port)
    "$RM" sink --listen 127.0.0.1:$PORT --tls-cert $C/server.pem --tls-key $C/server.key \
        --threads 1 "$@" >"$E2E_TMP/sink.log" 2>&1 &
    SINK=$!
    wait_port 127.0.0.1 "$PORT" 10
}
sink_stop() { kill -TERM "$SINK" 2>/dev/null; wait "$SINK" 2>/dev/null; }

# run NAME SINKARGS -- BLASTARGS: RUNS runs, each result in $OUT/NAME.N.json
run() {
    local name=$1; shift
    local sargs=()
    while [ "$1" != "--" ]; do sargs+=("$1"); shift; done
    shift
    for i in $(seq 1 "$RUNS"); do
        sink_start "${sargs[@]}"
        "$RM" blast --server localhost:$PORT --json --threads 1 "$@" >"$OUT/$name.$i.json"
        sink_stop
    done
}
med() { for i in $(seq 1 "$RUNS"); do field "$OUT/$1.$i.json" "$2"; done | median; }

echo "ringmail bench: $(nproc) cores, $RUNS runs each, medians"
run throughput -- --count "$COUNT" --concurrency 20 --size 2048
printf '%-34s %8.0f msgs/s  %6.1f us cpu/msg  (accepted %s of %s)\n' "1. 2KB STARTTLS, 20 conns" \
    "$(med throughput msgs_per_s)" "$(med throughput cpu_us_per_msg)" "$(med throughput accepted)" "$COUNT"

for v in 1.3 1.2; do
    run "full-$v" --no-tickets --tls-max $v -- --count 5000 --concurrency 20 --msgs-per-conn 1
    run "resumed-$v" --tls-max $v -- --count 5000 --concurrency 20 --msgs-per-conn 1
    full=$(med "full-$v" cpu_s); res=$(med "resumed-$v" cpu_s)
    rr=$(med "resumed-$v" tls_resumed)
    printf '%-34s full %6.0f/cpu-s  resumed %6.0f/cpu-s  ratio %.2fx (resumed conns %s)\n' \
        "2. handshakes TLS $v" "$(echo "5000 / $full" | bc -l)" "$(echo "5000 / $res" | bc -l)" \
        "$(echo "$full / $res" | bc -l)" "$rr"
done

RUNS_SAVED=$RUNS; RUNS=1
run sessions --latency-ms 2000 --stats "$OUT/sessions.sink.json" -- --count 20000 --concurrency 10000 --msgs-per-conn 2 --timeout-ms 60000
RUNS=$RUNS_SAVED
rss=$(field "$OUT/sessions.1.json" peak_rss_kb)
printf '%-34s peak rss %s KB = %.1f KB/session (accepted %s, sink peak concurrent %s)\n' \
    "3. 10,000 TLS sessions" "$rss" "$(echo "$rss / 10000" | bc -l)" \
    "$(field "$OUT/sessions.1.json" accepted)" "$(field "$OUT/sessions.sink.json" peak_concurrent)"

# 4. a campaign from PostgreSQL (make demo's setup, every sink accepting):
# end-to-end messages/s beside blast's, and peak RSS at two sizes (memory
# must not grow with the campaign). CAMPAIGN_SIZES="100000 1000000" by default.
for n in ${CAMPAIGN_SIZES:-100000 1000000}; do
    DEMO_CLEAN=1 COUNT=$n DEMO_JSON="$OUT/campaign-$n.json" bench/demo.sh "$BUILD" >"$OUT/campaign-$n.log" 2>&1
    /usr/bin/python3 - "$OUT/campaign-$n.json" "$n" "$(med throughput msgs_per_s)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); n = int(sys.argv[2]); blast = float(sys.argv[3])
rate = d["accepted"] / d["wall_s"]
print("%-34s %8.0f msgs/s (%.0f%% of blast)  %5.1f us cpu/msg  claims %.0f/s  results %.0f/s  peak rss %d KB"
      % ("4. campaign %d from PostgreSQL" % n, rate, 100 * rate / blast, d["cpu_s"] * 1e6 / max(1, d["accepted"]),
         d["db"]["claimed"] / d["wall_s"], d["db"]["written"] / d["wall_s"], d["peak_rss_kb"]))
PY
done
