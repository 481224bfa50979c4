#!/usr/bin/env bash
# bench/ab.sh OLD_BUILD NEW_BUILD: two builds side by side (A B A B ...),
# for a change that must not cost speed (a refactor). The same sink (from
# NEW_BUILD) serves both clients; each figure is the median of RUNS runs of
# each build, interleaved so the machine's noise falls on both alike.
#
#   cpu/msg    blast client CPU (user+system, its getrusage) per 2 KB message
#              over verified STARTTLS, COUNT messages, 20 connections reused
#   hs ratio   connections per client CPU-second, resumed over full TLS 1.3
#              (HS_COUNT connections, one message each, 20 at a time)
#   KB/session client RSS over SESSIONS sessions open at once, the sink
#              delaying every reply 100 ms
#   100 KB     msgs/s and client CPU per message for SIZE_COUNT 100 KB messages
#
# Usage: make bench-ab OLD=path/to/old/build (NEW defaults to build), or
#   bench/ab.sh /tmp/old-build build
# Environment: RUNS [5], COUNT [20000], HS_COUNT [3000], SESSIONS [1000],
# SIZE_COUNT [5000].
set -u
OLD=${1:?usage: bench/ab.sh OLD_BUILD NEW_BUILD}
NEW=${2:-build}
cd "$(dirname "$0")/.." || exit 1
RUNS=${RUNS:-5}
COUNT=${COUNT:-20000}
HS_COUNT=${HS_COUNT:-3000}
SESSIONS=${SESSIONS:-1000}
SIZE_COUNT=${SIZE_COUNT:-5000}
for b in "$OLD" "$NEW"; do
    [ -x "$b/ringmail" ] || { echo "ab.sh: $b/ringmail not found" >&2; exit 2; }
done
# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh
e2e_tmpdir
make_certs "$E2E_TMP/certs" || exit 1
C=$E2E_TMP/certs
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
SINK=""
# shellcheck disable=SC2016 # evaluated on exit
e2e_cleanup '[ -n "$SINK" ] && e2e_kill "$SINK"'
RES=$E2E_TMP/ab.tsv
: >"$RES"
STATUS=0

# one LABEL BUILD FIGURE SINKARGS -- BLASTARGS: one blast run, its JSON's
# figures appended to $RES as "figure label key value" lines.
one() {
    local label=$1 build=$2 fig=$3 sargs=()
    shift 3
    while [ "$1" != "--" ]; do sargs+=("$1"); shift; done
    shift
    local port
    port=$(free_port)
    "$NEW/ringmail" sink --listen 127.0.0.1:"$port" --tls-cert "$C/server.pem" \
        --tls-key "$C/server.key" --threads 1 "${sargs[@]}" >"$E2E_TMP/sink.log" 2>&1 &
    SINK=$!
    wait_port 127.0.0.1 "$port" 10 "$SINK" || { echo "ab.sh: sink did not start" >&2; exit 1; }
    "$build/ringmail" blast --server localhost:"$port" --json --threads 1 --tls verify \
        --ca "$C/ca.pem" "$@" >"$E2E_TMP/run.json" 2>"$E2E_TMP/run.err"
    local rc=$?
    e2e_kill "$SINK" 20
    SINK=""
    python3 - "$E2E_TMP/run.json" "$rc" "$fig" "$label" >>"$RES" <<'PY' || STATUS=1
import json, sys
f, rc, fig, label = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
try:
    d = json.load(open(f))
except Exception:
    d = {}
if rc or d.get("accepted") != d.get("sent") or not d.get("sent"):
    print("ab.sh: %s %s run FAILED (exit %d, %s of %s accepted)" % (fig, label, rc, d.get("accepted"), d.get("sent")), file=sys.stderr)
    sys.exit(1)
for k in ("cpu_us_per_msg", "cpu_s", "connections", "peak_rss_kb", "msgs_per_s", "tls_resumed"):
    print(fig, label, k, d.get(k))
PY
}

echo "bench/ab.sh: A = $OLD, B = $NEW; $RUNS runs each, interleaved A B A B; $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')"
for i in $(seq 1 "$RUNS"); do
    for lb in "A:$OLD" "B:$NEW"; do
        l=${lb%%:*} b=${lb#*:}
        one "$l" "$b" cpu -- --count "$COUNT" --concurrency 20 --size 2048
        one "$l" "$b" full --no-tickets --tls-max 1.3 -- --count "$HS_COUNT" --concurrency 20 --msgs-per-conn 1
        one "$l" "$b" resumed --tls-max 1.3 -- --count "$HS_COUNT" --concurrency 20 --msgs-per-conn 1
        one "$l" "$b" scale --latency-ms 100 -- --count $((SESSIONS * 20)) --concurrency "$SESSIONS" \
            --msgs-per-conn 0 --timeout-ms 60000
        one "$l" "$b" size -- --count "$SIZE_COUNT" --concurrency 20 --size 102400
    done
    echo "  round $i of $RUNS done"
done

python3 - "$RES" "$SESSIONS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
sessions = int(sys.argv[2])
def vals(fig, label, key):
    return [float(v) for f, l, k, v in rows if f == fig and l == label and k == key and v != "None"]
def med(fig, label, key):
    v = vals(fig, label, key)
    return statistics.median(v) if v else float("nan")
def conns_per_cpu(fig, label):
    c = [float(v) for f, l, k, v in rows if f == fig and l == label and k == "connections"]
    s = vals(fig, label, "cpu_s")
    return statistics.median(a / b for a, b in zip(c, s) if b > 0) if c and s else float("nan")
print()
print("  %-40s %12s %12s %8s" % ("figure (median)", "A (old)", "B (new)", "B/A"))
def row(name, a, b, fmt="%12.2f"):
    print("  %-40s " % name + fmt % a + " " + fmt % b + " %8.3f" % (b / a if a else float("nan")))
row("blast CPU us per 2 KB msg", med("cpu", "A", "cpu_us_per_msg"), med("cpu", "B", "cpu_us_per_msg"))
row("blast msgs/s (20 conns)", med("cpu", "A", "msgs_per_s"), med("cpu", "B", "msgs_per_s"), "%12.0f")
ra = conns_per_cpu("resumed", "A") / conns_per_cpu("full", "A")
rb = conns_per_cpu("resumed", "B") / conns_per_cpu("full", "B")
row("resumed/full TLS 1.3 (conns per CPU-s)", ra, rb)
row("client RSS KB per session (%d open)" % sessions, med("scale", "A", "peak_rss_kb") / sessions,
    med("scale", "B", "peak_rss_kb") / sessions)
row("100 KB msgs/s (20 conns)", med("size", "A", "msgs_per_s"), med("size", "B", "msgs_per_s"), "%12.0f")
row("blast CPU us per 100 KB msg", med("size", "A", "cpu_us_per_msg"), med("size", "B", "cpu_us_per_msg"))
print("  (per figure, every run: %s)" % ", ".join("%s %s %s" % (f, l, v) for f, l, k, v in rows if k == "cpu_us_per_msg"))
PY
exit $STATUS
