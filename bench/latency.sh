#!/usr/bin/env bash
# bench/latency.sh [BUILD]: figure 12, sender CPU per message against slow
# servers. `ringmail blast --threads 1 --tls verify` sends COUNT 2 KB
# messages over SESSIONS STARTTLS sessions (TLS 1.3, connections reused)
# to a fresh `ringmail sink --threads 1` that holds every reply
# --latency-ms L, for each L of LATENCIES; RUNS rounds, the latencies
# interleaved in each round so the machine's noise falls on all alike.
#
# Printed per latency, medians of RUNS: msgs/s (blast's wall: first
# connection to last reply), sender CPU per message (blast's getrusage,
# user+system, start-up and the SESSIONS full handshakes included) and its
# ratio to the 0 ms figure of the same build in the same run (the target of
# issue 16: <= 1.5x at 5 and 100 ms). Also a reference point, 0 ms over
# REF_CONC connections (figure 1's setting, the "fast sink" figure), and
# the sink's peak of concurrent sessions (proof that SESSIONS were open).
#
# The whole-run figure carries a fixed cost: SESSIONS connections opened
# at once, all full handshakes (no ticket yet), ~0.7 s of CPU for 1,000,
# i.e. ~15 us on each of 50,000 messages. So each round also runs
# SHORT_COUNT messages at each latency, and the "steady" columns give the
# CPU of one more message, (CPU(COUNT) - CPU(SHORT_COUNT)) / (COUNT -
# SHORT_COUNT), run by run, medians: what a message costs once the
# sessions are up, and its ratio to 0 ms.
#
# OLD=DIR adds DIR/ringmail's blast beside BUILD's (A B A B within each
# round, the same sink binary, BUILD's, for both): before and after.
#
# Environment (defaults in brackets): LATENCIES ["0 5 100"], SESSIONS
# [1000], COUNT [50000: ~11 s at 100 ms, two round trips per message],
# SHORT_COUNT [10000; 0: no steady columns], RUNS [3], SIZE [2048],
# REF_CONC [20; empty: no reference point], OLD [].
# Takes ~1.5 min with the defaults (a round: 100 ms ~12 s + ~4 s short,
# 0 and 5 ms ~3 s + ~1.5 s each), twice that with OLD. Writes
# bench/results/latency.json (every run, medians, ratios) and
# bench/results/runs/latency-*.json (each blast object, checked). Exit 1
# if a run failed (accepted != its count, or blast's exit status), or 2 on
# bad usage.
#
#   bench/latency.sh build
#   OLD=/tmp/before RUNS=5 bench/latency.sh build
set -u
BUILD=${1:-build}
cd "$(dirname "$0")/.." || exit 1
case "$BUILD" in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
LATENCIES=${LATENCIES:-0 5 100}
SESSIONS=${SESSIONS:-1000}
COUNT=${COUNT:-50000}
SHORT_COUNT=${SHORT_COUNT:-10000}
RUNS=${RUNS:-3}
SIZE=${SIZE:-2048}
REF_CONC=${REF_CONC-20}
OLD=${OLD:-}
OUT=bench/results
RAW=$OUT/runs
for b in "$BUILD" ${OLD:+"$OLD"}; do
    [ -x "$b/ringmail" ] || { echo "latency.sh: $b/ringmail not found (make -j2)" >&2; exit 2; }
done
case " $LATENCIES " in *" 0 "*) ;; *) echo "latency.sh: LATENCIES must include 0 (the ratios' base)" >&2; exit 2 ;; esac
if [ "$SHORT_COUNT" -ge "$COUNT" ]; then
    echo "latency.sh: SHORT_COUNT ($SHORT_COUNT) must be below COUNT ($COUNT)" >&2
    exit 2
fi
mkdir -p "$OUT" "$RAW"
# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh
e2e_tmpdir
make_certs "$E2E_TMP/certs" >/dev/null || exit 1
C=$E2E_TMP/certs
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((SESSIONS + 100)) ]; then
    echo "latency.sh: open-file limit $(ulimit -n) is too low for $SESSIONS sessions" >&2
    exit 2
fi
SINK=""
# shellcheck disable=SC2016 # evaluated on exit
e2e_cleanup '[ -n "$SINK" ] && e2e_kill "$SINK"'
STATUS=0
rm -f "$RAW"/latency-*.json

# one LABEL BUILD_DIR LATENCY CONC RUN [N]: one blast run of N messages
# (COUNT) against a fresh sink, its JSON checked and kept as
# $RAW/latency-LABEL-LATENCY[-cCONC][-nN].RUN.json.
one() {
    local label=$1 build=$2 lat=$3 conc=$4 run=$5 count=${6:-$COUNT} name port rc=0
    name=latency-$label-$lat
    [ "$conc" != "$SESSIONS" ] && name=$name-c$conc
    [ "$count" != "$COUNT" ] && name=$name-n$count
    port=$(free_port)
    rm -f "$E2E_TMP/sink.json"
    "$BUILD/ringmail" sink --listen 127.0.0.1:"$port" --tls-cert "$C/server.pem" \
        --tls-key "$C/server.key" --threads 1 --latency-ms "$lat" --stats "$E2E_TMP/sink.json" \
        >"$E2E_TMP/sink.log" 2>&1 &
    SINK=$!
    if wait_port 127.0.0.1 "$port" 10 "$SINK"; then
        "$build/ringmail" blast --server localhost:"$port" --json --threads 1 --tls verify \
            --ca "$C/ca.pem" --count "$count" --concurrency "$conc" --msgs-per-conn 0 \
            --size "$SIZE" --timeout-ms 60000 >"$RAW/$name.$run.json" 2>"$E2E_TMP/blast.err" || rc=$?
    else
        rc=125
        echo "sink did not start: $(tail -c 200 "$E2E_TMP/sink.log")" >"$E2E_TMP/blast.err"
    fi
    e2e_kill "$SINK" 20
    SINK=""
    python3 - "$RAW/$name.$run.json" "$label" "$lat" "$conc" "$run" "$count" "$rc" \
        "$E2E_TMP/blast.err" "$E2E_TMP/sink.json" <<'PY' || STATUS=1
import json, sys
f, label, lat, conc, run, count, rc, errf, sinkf = sys.argv[1:10]
try:
    d = json.load(open(f))
except Exception:
    d = {}
try:
    s = json.load(open(sinkf))
except Exception:
    s = {}
reason = ""
if not d:
    reason = "no JSON from blast (exit %s): %s" % (rc, open(errf, errors="replace").read()[-200:].strip())
elif d.get("accepted") != int(count):
    reason = "accepted %s of %s" % (d.get("accepted"), count)
elif int(rc):
    reason = "blast exit status %s" % rc
d.update(label=label, latency_ms=int(lat), concurrency=int(conc), run=int(run), count=int(count), ok=not reason,
         reason=reason, sink_peak_concurrent=s.get("peak_concurrent"))
json.dump(d, open(f, "w"), indent=1)
if reason:
    print("  latency-%s-%s run %s FAILED: %s" % (label, lat, run, reason), file=sys.stderr)
    sys.exit(1)
PY
}

echo "bench/latency.sh: figure 12, sender CPU per message at sink latency $LATENCIES ms"
echo "  $SESSIONS sessions, $COUNT msgs of $SIZE B over verified STARTTLS, RUNS=$RUNS (medians)," \
    "$(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "  new = $BUILD${OLD:+, old = $OLD (interleaved, the same sink)}"
labels="new:$BUILD"
[ -n "$OLD" ] && labels="old:$OLD new:$BUILD"
for run in $(seq 1 "$RUNS"); do
    for lat in $LATENCIES; do
        for lb in $labels; do
            one "${lb%%:*}" "${lb#*:}" "$lat" "$SESSIONS" "$run"
            if [ "$SHORT_COUNT" -gt 0 ]; then
                one "${lb%%:*}" "${lb#*:}" "$lat" "$SESSIONS" "$run" "$SHORT_COUNT"
            fi
        done
    done
    if [ -n "$REF_CONC" ]; then
        for lb in $labels; do
            one "${lb%%:*}" "${lb#*:}" 0 "$REF_CONC" "$run"
        done
    fi
    echo "  round $run of $RUNS done"
done

python3 - "$RAW" "$OUT/latency.json" "$SESSIONS" "$COUNT" "$SIZE" "${REF_CONC:-0}" "$LATENCIES" "$SHORT_COUNT" <<'PY' || STATUS=1
import glob, json, math, os, statistics, sys, time
raw, outf, sessions, count, size, ref, lats, short = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    int(sys.argv[5]), int(sys.argv[6]), [int(x) for x in sys.argv[7].split()], int(sys.argv[8])
allruns = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(raw, "latency-*.json")))]
runs = [r for r in allruns if r["count"] == count]
shorts = [r for r in allruns if r["count"] == short]
labels = [l for l in ("old", "new") if any(r["label"] == l for r in runs)]
NAN = float("nan")
def sel(rs, label, lat, conc):
    return [r for r in rs if r["label"] == label and r["latency_ms"] == lat and r["concurrency"] == conc]
def med(label, lat, conc, key):
    v = [float(r[key]) for r in sel(runs, label, lat, conc) if r.get("ok") and r.get(key) is not None]
    return statistics.median(v) if v else NAN
def bad(label, lat, conc):
    return [r for r in sel(allruns, label, lat, conc) if not r.get("ok")]
def steady(label, lat, conc):
    # the CPU of one more message: run by run, long minus short, medians
    long_ = {r["run"]: r for r in sel(runs, label, lat, conc) if r.get("ok")}
    v = [(long_[r["run"]]["cpu_s"] - r["cpu_s"]) * 1e6 / (count - short)
         for r in sel(shorts, label, lat, conc) if r.get("ok") and r["run"] in long_]
    return statistics.median(v) if v else NAN
def f(v, fmt):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt % v
doc = dict(figure=12, date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), cores=os.cpu_count(),
           sessions=sessions, count=count, short_count=short or None, size=size, ref_concurrency=ref or None,
           latencies_ms=lats,
           client="ringmail blast --threads 1 --tls verify (CPU: getrusage user+system of the process)",
           server="ringmail sink --threads 1 --latency-ms L, same machine", points={}, runs=allruns)
failed = 0
print()
print("  %-5s %8s %6s %9s %12s %10s %10s %13s %10s %9s  %s" % (
    "build", "latency", "conns", "msgs/s", "CPU us/msg", "vs 0 ms", "vs ref", "steady us/msg", "vs 0 ms",
    "sink peak", "runs"))
for label in labels:
    base = med(label, 0, sessions, "cpu_us_per_msg")
    refv = med(label, 0, ref, "cpu_us_per_msg") if ref else NAN
    sbase = steady(label, 0, sessions) if short else NAN
    pts = [(lat, sessions) for lat in lats] + ([(0, ref)] if ref else [])
    for lat, conc in pts:
        cpu = med(label, lat, conc, "cpu_us_per_msg")
        st = steady(label, lat, conc) if short and conc == sessions else NAN
        b = bad(label, lat, conc)
        n = len(sel(allruns, label, lat, conc))
        failed += len(b)
        p = dict(latency_ms=lat, concurrency=conc, runs=n, runs_ok=n - len(b),
                 msgs_per_s=med(label, lat, conc, "msgs_per_s"), cpu_us_per_msg=cpu,
                 cpu_s=med(label, lat, conc, "cpu_s"), wall_s=med(label, lat, conc, "wall_s"),
                 peak_rss_kb=med(label, lat, conc, "peak_rss_kb"),
                 sink_peak_concurrent=med(label, lat, conc, "sink_peak_concurrent"),
                 ratio_to_0ms=cpu / base if conc == sessions and base else None,
                 ratio_to_ref=cpu / refv if ref and refv else None,
                 steady_cpu_us_per_msg=None if math.isnan(st) else st,
                 steady_ratio_to_0ms=None if math.isnan(st) or math.isnan(sbase) else st / sbase)
        doc["points"]["%s-%d-c%d" % (label, lat, conc)] = p
        state = "ok %d/%d" % (n - len(b), n) if not b else "FAILED %d/%d: %s" % (len(b), n, b[0]["reason"])
        print("  %-5s %5d ms %6d %9s %12s %10s %10s %13s %10s %9s  %s" % (
            label, lat, conc, f(p["msgs_per_s"], "%.0f"), f(cpu, "%.1f"),
            f(p["ratio_to_0ms"], "%.2fx") if p["ratio_to_0ms"] else "-",
            f(p["ratio_to_ref"], "%.2fx") if p["ratio_to_ref"] else "-",
            f(st, "%.1f"), f(p["steady_ratio_to_0ms"], "%.2fx") if p["steady_ratio_to_0ms"] else "-",
            f(p["sink_peak_concurrent"], "%.0f"), state))
if "old" in labels:
    print()
    for lat, conc in [(lat, sessions) for lat in lats] + ([(0, ref)] if ref else []):
        o, nw = med("old", lat, conc, "cpu_us_per_msg"), med("new", lat, conc, "cpu_us_per_msg")
        line = "  %4d ms, %5d conns: CPU/msg new/old %s (%s -> %s us)" % (
            lat, conc, f(nw / o if o else NAN, "%.3f"), f(o, "%.1f"), f(nw, "%.1f"))
        if short and conc == sessions:
            so, sn = steady("old", lat, conc), steady("new", lat, conc)
            line += "; steady %s (%s -> %s us)" % (f(sn / so if so else NAN, "%.3f"), f(so, "%.1f"), f(sn, "%.1f"))
        print(line)
print()
for label in labels:
    for lat in lats:
        if lat == 0:
            continue
        pt = doc["points"]["%s-%d-c%d" % (label, lat, sessions)]
        r, sr = pt["ratio_to_0ms"], pt["steady_ratio_to_0ms"]
        print("  target (issue 16), %s, %d ms: CPU/msg %s of the 0 ms figure (steady %s), <= 1.50x: %s" % (
            label, lat, f(r, "%.2fx"), f(sr, "%.2fx"),
            "-" if r is None or math.isnan(r) else "met" if r <= 1.5 else "NOT met"))
json.dump(doc, open(outf, "w"), indent=1)
print("  written: %s" % outf)
sys.exit(1 if failed else 0)
PY
exit $STATUS
