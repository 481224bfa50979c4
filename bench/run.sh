#!/usr/bin/env bash
# make bench (bench/run.sh BUILD): every benchmark figure in one command.
# Prints a table, writes bench/results/<step>.json (raw runs and medians),
# the raw blast objects in bench/results/runs/NAME.RUN.json, small .dat
# files and PNG plots (bench/plot.gp, gnuplot). Unless said otherwise the
# client is `ringmail blast --threads 1 --tls verify` (the sink's
# certificate checked against the test CA) and the server `ringmail sink
# --threads 1` on this machine, 2 KB messages over STARTTLS (TLS 1.3);
# figures are medians of RUNS runs; client CPU is blast's own getrusage
# (user+system, start-up and handshakes included); wall time is blast's own
# (first connection to last reply). A run whose `accepted` is not the
# message count (or whose exit status is not 0) is shown as FAILED and
# left out of the medians; `make bench` then exits 1.
#
#   1. throughput side by side: bench/compare.sh (ringmail, Postfix
#      defaults, Postfix tuned, nodemailer; sender CPU by cgroup), then
#      ringmail alone at 20, 50 and 100 connections, COUNT msgs each, best
#   2. handshakes: full vs resumed TLS 1.3 and TLS 1.2, one message per
#      connection, connections per client CPU-second, side by side
#   3. scale: 100, 1,000 and 10,000 sessions open at once against a sink
#      that delays every reply by 100 ms: msgs/s and client RSS per session
#   4. cost growth: client CPU per message for 10k, 100k and 1M messages
#   5. message size: 2 KB, 20 KB and 100 KB, msgs/s and MB/s
#   6. a campaign from PostgreSQL (bench/demo.sh), last
#   7. RCPT batching (runs before 6): ringmail send --message, one body for
#      BATCH_COUNT recipients of one domain, 20 connections, verified
#      STARTTLS, max_rcpts_per_msg 1 against 50, side by side (A B A B)
#   8. inbound (runs before 6): 10,000 DSNs through `ringmail inbound`,
#      events/s, CPU and database time per event (bench/inbound.sh)
#   9. destination TLS policy (runs before 6): a 100,000-recipient campaign
#      over 1,000 domains with MTA-STS off, on (cache cold, warm) and DANE:
#      CPU per message, policy fetches, TLSA lookups (bench/policy.sh)
#  10. nodes on one PostgreSQL (runs before 6): 1, 2 and 3 send --db nodes
#      on one campaign: aggregate msgs/s, sender CPU per message,
#      PostgreSQL CPU per recipient (bench/nodes.sh)
#  12. slow servers (runs before 6): sender CPU per message at sink latency
#      0, 5 and 100 ms, 1,000 sessions (bench/latency.sh)
#  11. DKIM signing (runs before 6): RSA-2048, Ed25519 and dual-signed
#      campaigns through the ringmail-signer processes beside `openssl speed`
#      in the same round (bench/dkim.sh)
#
# Environment (defaults in brackets):
#   STEPS ["1 2 3 4 5 6 7 8 9 10 11 12"]  which steps to run, e.g. STEPS="3 5"
#   RUNS [3]               runs per point (medians)
#   COUNT [100000]         messages per ringmail-alone run in step 1
#   COMPARE [run]          "skip": step 1 reuses bench/results/compare.json
#   COMPARE_COUNT [10000]  messages per sender in compare.sh
#   THROUGHPUT_CONCS ["20 50 100"]
#   HS_COUNT [5000]        connections per handshake run
#   SCALE_CONCS ["100 1000 10000"], SCALE_LATENCY_MS [100],
#   SCALE_PER_SESSION [20], SCALE_MIN_COUNT [20000]: count per point is
#                          max(SCALE_MIN_COUNT, SCALE_PER_SESSION x sessions)
#   COST_COUNTS ["10000 100000 1000000"]: counts above 100,000 run once
#   SIZES ["2048 20480 102400"], SIZE_COUNT [20000]
#   CAMPAIGN_SIZES ["100000 1000000"]  step 6
#   BATCH_COUNT [100000]   step 7
#   INBOUND_COUNT [10000]  step 8: DSNs per run
#   POLICY_COUNT [100000], POLICY_DOMAINS [1000]  step 9
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}
COUNT=${COUNT:-100000}
STEPS=${STEPS:-1 2 3 4 5 6 7 8 9 10 11 12}
COMPARE=${COMPARE:-run}
COMPARE_COUNT=${COMPARE_COUNT:-10000}
THROUGHPUT_CONCS=${THROUGHPUT_CONCS:-20 50 100}
HS_COUNT=${HS_COUNT:-5000}
SCALE_CONCS=${SCALE_CONCS:-100 1000 10000}
SCALE_LATENCY_MS=${SCALE_LATENCY_MS:-100}
SCALE_PER_SESSION=${SCALE_PER_SESSION:-20}
SCALE_MIN_COUNT=${SCALE_MIN_COUNT:-20000}
COST_COUNTS=${COST_COUNTS:-10000 100000 1000000}
SIZES=${SIZES:-2048 20480 102400}
SIZE_COUNT=${SIZE_COUNT:-20000}
OUT=bench/results
RAW=$OUT/runs
PY=/usr/bin/python3
STATUS=0

[ -x "$RM" ] || { echo "run.sh: $RM not found (make -j2)" >&2; exit 1; }
mkdir -p "$OUT" "$RAW"
# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh
e2e_tmpdir
make_certs "$E2E_TMP/certs" || exit 1
C=$E2E_TMP/certs
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

want() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }

# ---------------------------------------------------------------- python helper

cat >"$E2E_TMP/bench.py" <<'PY'
import glob, json, math, os, re, statistics, sys, time

RAW = "bench/results/runs"
OUT = "bench/results"
NAN = float("nan")

def load(p):
    try:
        with open(p) as f:
            return json.load(f)
    except Exception:
        return None

def save(p, d):
    with open(p, "w") as f:
        json.dump(d, f, indent=1)
        f.write("\n")

def tail(p, n=200):
    try:
        return open(p, errors="replace").read()[-n:].strip().replace("\n", " | ")
    except OSError:
        return ""

def runs(name):
    """Every run of NAME, in run order."""
    fs = glob.glob(os.path.join(RAW, name + ".*.json"))
    fs = [f for f in fs if re.fullmatch(re.escape(name) + r"\.\d+\.json", os.path.basename(f))]
    fs.sort(key=lambda f: int(f.rsplit(".", 2)[1]))
    return [r for r in (load(f) for f in fs) if isinstance(r, dict)]

def ok_runs(name):
    return [r for r in runs(name) if r.get("ok")]

def med(name, field):
    v = [float(r[field]) for r in ok_runs(name) if r.get(field) is not None]
    return statistics.median(v) if v else NAN

def medians(name):
    ok = ok_runs(name)
    keys = [k for k, v in (ok[0].items() if ok else []) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    m = {k: statistics.median(float(r[k]) for r in ok) for k in keys}
    if ok and "sink" in ok[0]:
        m["sink_peak_concurrent"] = statistics.median(float(r["sink"].get("peak_concurrent", 0)) for r in ok)
    return m

def point(name, **params):
    rs = runs(name)
    return dict(params, name=name, runs_total=len(rs), runs_ok=sum(1 for r in rs if r.get("ok")),
                failed=[{"run": r.get("run"), "reason": r.get("reason")} for r in rs if not r.get("ok")],
                median=medians(name), runs=rs)

def status(p):
    if p["runs_total"] == 0:
        return "no runs"
    if p["failed"]:
        return "FAILED %d/%d: %s" % (len(p["failed"]), p["runs_total"], p["failed"][0]["reason"])
    return "ok %d/%d" % (p["runs_ok"], p["runs_total"])

def n(v, fmt="{:,.0f}"):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

def dat(v, fmt="%.6g"):
    return "?" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt % v

def meta(step, **kw):
    return dict(step=step, date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), cores=os.cpu_count(),
                client="ringmail blast --threads 1 (CPU: getrusage user+system of the client process)",
                server="ringmail sink --threads 1, same machine", **kw)

# ---- commands

def cmd_record(a):
    # record FILE NAME RUN EXPECTED RC ERRFILE SINKSTATS|- ARGS: check one blast run, rewrite FILE
    f, name, run, exp, rc, errf, sinkf, args = a[0], a[1], int(a[2]), int(a[3]), int(a[4]), a[5], a[6], a[7]
    d = load(f)
    reason = ""
    if not isinstance(d, dict):
        reason = "no JSON from blast (exit %d) %s" % (rc, tail(errf))
        d = {}
    rec = dict(d)
    rec.update(name=name, run=run, expected=exp, rc=rc, blast_args=args)
    if sinkf != "-":
        s = load(sinkf) or {}
        s.pop("deliveries", None)
        rec["sink"] = s
    acc = d.get("accepted")
    if not reason and acc != exp:
        reason = "accepted %s of %d" % (acc, exp)
    if not reason and rc:
        reason = "blast exit status %d %s" % (rc, tail(errf))
    rec["ok"] = not reason
    rec["reason"] = reason
    save(f, rec)
    if reason:
        print("# %s run %d FAILED: %s" % (name, run, reason), file=sys.stderr)
        sys.exit(1)

def cmd_med(a):
    # med NAME FIELD: median over the successful runs (nan if none)
    print(med(a[0], a[1]))

def cmd_throughput(a):
    # throughput COMPARE_FRESH COUNT CONCS...
    fresh, count, concs = a[0] == "1", int(a[1]), [int(x) for x in a[2:]]
    cmp = load(os.path.join(OUT, "compare.json"))
    doc = meta(1, count=count, size=2048)
    bad = 0
    if cmp:
        print("  compare.sh%s: %s msgs of %s B, %s conns, %s runs each interleaved; sender CPU: %s" % (
            "" if fresh else " (reused, not rerun: %s)" % cmp.get("date"), n(cmp.get("count")), cmp.get("size"),
            cmp.get("connections"), cmp.get("runs_per_sender"), cmp.get("cpu_method")))
        print("  %-16s %9s %11s %11s %12s %14s %s" % ("sender", "msgs/s", "CPU s/10k", "msgs/CPU-s",
                                                       "rm x msgs/s", "rm x msgs/CPU-s", "runs"))
        for s, m in cmp["medians"].items():
            r = cmp["ratios"].get("ringmail_vs_" + s, {})
            one = s == "ringmail"
            st = "ok %d/%d" % (m["ok_runs"], m["runs"])
            if m["failed"]:
                bad += 1
                st = "FAILED %d/%d: %s" % (len(m["failed"]), m["runs"], m["failed"][0]["reason"])
            print("  %-16s %9s %11s %11s %12s %14s %s" % (
                s, n(m["msgs_per_s"]), n(m["cpu_s_per_10k"], "{:.2f}"), n(m["msgs_per_cpu_s"]),
                "1.0x" if one else n(r.get("msgs_per_s"), "{:.1f}x"),
                "1.0x" if one else n(r.get("msgs_per_cpu_s"), "{:.1f}x"), st))
        doc["compare"] = {k: cmp.get(k) for k in ("date", "count", "size", "connections", "runs_per_sender",
                                                    "cpu_method", "wall_method", "tls", "versions", "medians", "ratios")}
        doc["compare"]["fresh"] = fresh
    else:
        print("  compare.sh: no bench/results/compare.json (FAILED)")
        bad += 1
    pts = []
    for c in concs:
        name = "throughput" if c == 20 else "throughput-c%d" % c
        p = point(name, concurrency=c, count=count)
        pts.append(p)
        bad += bool(p["failed"]) or not p["runs_total"]
        m = p["median"]
        print("  ringmail alone, %3d conns, %s msgs: %9s msgs/s  %5s us CPU/msg  %s CPU s/10k  %s" % (
            c, n(count), n(m.get("msgs_per_s")), n(m.get("cpu_us_per_msg"), "{:.1f}"),
            n(m.get("cpu_us_per_msg", NAN) / 100, "{:.2f}"), status(p)))
    good = [p for p in pts if p["runs_ok"]]
    best = max(good, key=lambda p: p["median"]["msgs_per_s"]) if good else None
    if best:
        print("  best: %d conns, %s msgs/s (median of %d), %.1f us CPU/msg" % (
            best["concurrency"], n(best["median"]["msgs_per_s"]), best["runs_ok"], best["median"]["cpu_us_per_msg"]))
    doc["ringmail_alone"] = pts
    doc["best"] = {k: best[k] for k in ("concurrency", "count", "name")} if best else None
    if best:
        doc["best"].update(best["median"])
    save(os.path.join(OUT, "throughput.json"), doc)
    sys.exit(1 if bad else 0)

def cmd_handshakes(a):
    # handshakes COUNT VERSIONS...
    count, vers = int(a[0]), a[1:]
    doc = meta(2, connections=count, concurrency=20, msgs_per_conn=1, versions={})
    bad = 0
    for v in vers:
        full, res = point("full-" + v, tls=v, tickets=False), point("resumed-" + v, tls=v, tickets=True)
        bad += sum(bool(p["failed"]) or not p["runs_total"] for p in (full, res))
        fc, rc = full["median"].get("cpu_s", NAN), res["median"].get("cpu_s", NAN)
        f_ps, r_ps = count / fc if fc else NAN, count / rc if rc else NAN
        ratio = fc / rc if rc else NAN
        print("  TLS %s  full %7s conns/CPU-s  resumed %7s conns/CPU-s  ratio %sx  (resumed %s of %s conns)  %s / %s" % (
            v, n(f_ps), n(r_ps), n(ratio, "{:.2f}"), n(res["median"].get("tls_resumed")), n(count),
            status(full), status(res)))
        doc["versions"][v] = dict(full=full, resumed=res, full_conns_per_cpu_s=f_ps,
                                  resumed_conns_per_cpu_s=r_ps, ratio=ratio)
    save(os.path.join(OUT, "handshakes.json"), doc)
    sys.exit(1 if bad else 0)

def cmd_scale(a):
    # scale LATENCY_MS COUNT:CONC...
    lat, pts_in = int(a[0]), [tuple(int(y) for y in x.split(":")) for x in a[1:]]
    doc = meta(3, latency_ms=lat, msgs_per_conn="unlimited")
    pts, bad, prev = [], 0, None
    rows = []
    for count, c in pts_in:
        p = point("scale-c%d" % c, concurrency=c, count=count)
        bad += bool(p["failed"]) or not p["runs_total"]
        m = p["median"]
        rss = m.get("peak_rss_kb", NAN)
        p["kb_per_session"] = rss / c
        p["marginal_kb_per_session"] = (rss - prev[1]) / (c - prev[0]) if prev else None
        if p["runs_ok"]:
            prev = (c, rss)
        print("  %6s sessions, %7s msgs: %8s msgs/s  peak RSS %7.1f MB = %6.1f KB/session%s  %5s us CPU/msg  sink peak %s  %s" % (
            n(c), n(count), n(m.get("msgs_per_s")), rss / 1024, p["kb_per_session"],
            "" if p["marginal_kb_per_session"] is None else " (+%.1f KB per added session)" % p["marginal_kb_per_session"],
            n(m.get("cpu_us_per_msg"), "{:.1f}"), n(m.get("sink_peak_concurrent")), status(p)))
        pts.append(p)
    good = [p for p in pts if p["runs_ok"]]
    fit = None
    if len(good) >= 2:
        xs = [p["concurrency"] for p in good]
        ys = [p["median"]["peak_rss_kb"] for p in good]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
        a0 = my - b * mx
        ss = sum((y - my) ** 2 for y in ys)
        r2 = 1 - sum((y - a0 - b * x) ** 2 for x, y in zip(xs, ys)) / ss if ss else 1.0
        fit = dict(base_kb=a0, kb_per_session=b, r2=r2)
        print("  RSS = %.1f MB + %.1f KB x sessions (least squares, R^2 %.4f): linear in sessions" % (a0 / 1024, b, r2))
    doc["points"], doc["rss_fit"] = pts, fit
    save(os.path.join(OUT, "scale.json"), doc)
    with open(os.path.join(OUT, "scale.dat"), "w") as f:
        f.write("# sessions msgs_per_s kb_per_session peak_rss_mb fit_mb\n")
        for p in pts:
            m = p["median"]
            f.write("%d %s %s %s %s\n" % (p["concurrency"], dat(m.get("msgs_per_s", NAN)), dat(p["kb_per_session"]),
                    dat(m.get("peak_rss_kb", NAN) / 1024),
                    dat((fit["base_kb"] + fit["kb_per_session"] * p["concurrency"]) / 1024) if fit else "?"))
    sys.exit(1 if bad else 0)

def cmd_cost(a):
    # cost RUNS COUNTS...
    counts = [int(x) for x in a[1:]]
    doc = meta(4, size=2048, concurrency=20)
    pts, bad = [], 0
    for c in counts:
        p = point("cost-%d" % c, count=c)
        bad += bool(p["failed"]) or not p["runs_total"]
        m = p["median"]
        print("  %9s msgs: %6s us CPU/msg  %8s msgs/s  peak RSS %6.1f MB  %s" % (
            n(c), n(m.get("cpu_us_per_msg"), "{:.1f}"), n(m.get("msgs_per_s")),
            m.get("peak_rss_kb", NAN) / 1024, status(p)))
        pts.append(p)
    good = [p for p in pts if p["runs_ok"]]
    v = [p["median"]["cpu_us_per_msg"] for p in good]
    ratio = max(v) / min(v) if len(v) >= 2 and min(v) > 0 else NAN
    flat = ratio <= 1.2
    grows = len(v) >= 2 and v[-1] > 1.2 * min(v)
    marginal = []
    for p, q in zip(good, good[1:]):
        d = (q["median"]["cpu_s"] - p["median"]["cpu_s"]) * 1e6 / (q["count"] - p["count"])
        marginal.append(dict(from_count=p["count"], to_count=q["count"], cpu_us_per_added_msg=d))
    if len(v) >= 2:
        print("  CPU/msg max/min = %.2f over %s..%s msgs: %s" % (
            ratio, n(good[0]["count"]), n(good[-1]["count"]),
            "flat (within 20%)" if flat else
            ("GROWS with the message count" if grows else
             "not flat, but it does not grow: higher at small counts only (fixed start-up CPU spread over fewer messages)")))
        print("  marginal CPU per added message: " + ", ".join(
            "%s->%s: %.1f us" % (n(m["from_count"]), n(m["to_count"]), m["cpu_us_per_added_msg"]) for m in marginal))
    doc.update(points=pts, max_min_ratio=ratio, flat=flat, grows=grows, marginal=marginal)
    save(os.path.join(OUT, "cost.json"), doc)
    with open(os.path.join(OUT, "cost.dat"), "w") as f:
        f.write("# messages cpu_us_per_msg msgs_per_s peak_rss_mb\n")
        for p in pts:
            m = p["median"]
            f.write("%d %s %s %s\n" % (p["count"], dat(m.get("cpu_us_per_msg", NAN)), dat(m.get("msgs_per_s", NAN)),
                                       dat(m.get("peak_rss_kb", NAN) / 1024)))
    sys.exit(1 if bad else 0)

KUMO = 3.3e6 / 3600  # KumoMTA's published 3.3M msgs of 100 KB per hour, 8 cores

def cmd_size(a):
    # size COUNT SIZES...
    count, sizes = int(a[0]), [int(x) for x in a[1:]]
    doc = meta(5, count=count, concurrency=20, kumomta_msgs_per_s_100kb_8_cores=KUMO, target_100kb_msgs_per_s=2000)
    pts, bad = [], 0
    for s in sizes:
        p = point("size-%d" % s, size=s, count=count)
        bad += bool(p["failed"]) or not p["runs_total"]
        m = p["median"]
        p["mb_per_s"] = m.get("msgs_per_s", NAN) * s / 1e6
        print("  %4d KB: %8s msgs/s  %6.1f MB/s  %6s us CPU/msg  %s" % (
            s // 1024, n(m.get("msgs_per_s")), p["mb_per_s"], n(m.get("cpu_us_per_msg"), "{:.1f}"), status(p)))
        pts.append(p)
    big = [p for p in pts if p["size"] == 102400 and p["runs_ok"]]
    if big:
        r = big[0]["median"]["msgs_per_s"]
        print("  100 KB: %s msgs/s = %.1fx KumoMTA's published ~917 msgs/s (3.3M/hour, 8 cores); "
              "target >= 2,000 msgs/s: %s" % (n(r), r / KUMO, "met" if r >= 2000 else "NOT met"))
        doc["msgs_per_s_100kb"] = r
    doc["points"] = pts
    save(os.path.join(OUT, "size.json"), doc)
    with open(os.path.join(OUT, "size.dat"), "w") as f:
        f.write("# size_kb msgs_per_s mb_per_s cpu_us_per_msg\n")
        for p in pts:
            m = p["median"]
            f.write("%g %s %s %s\n" % (p["size"] / 1024, dat(m.get("msgs_per_s", NAN)), dat(p["mb_per_s"]),
                                       dat(m.get("cpu_us_per_msg", NAN))))
    sys.exit(1 if bad else 0)

def cmd_targets(a):
    # targets: the issue's targets from whatever step JSON files exist
    def row(name, val, ok, target):
        print("  %-44s %-34s %-22s %s" % (name, val, target, "-" if ok is None else ("met" if ok else "NOT met")))
    t = load(os.path.join(OUT, "throughput.json")) or {}
    cr = (t.get("compare") or {}).get("ratios") or {}
    for s, want in (("postfix-tuned", 20), ("nodemailer", 10)):
        v = (cr.get("ringmail_vs_" + s) or {}).get("msgs_per_cpu_s")
        row("msgs per sender CPU-s vs " + s, n(v, "{:.1f}x"), None if v is None else v >= want, ">= %dx" % want)
    b = (t.get("best") or {}).get("msgs_per_s")
    row("end to end, 2 KB STARTTLS (best conns)", n(b, "{:,.0f} msgs/s"), None if b is None else b >= 20000, ">= 20,000 msgs/s")
    sc = load(os.path.join(OUT, "scale.json")) or {}
    p = [x for x in sc.get("points", []) if x["concurrency"] == 10000 and x["runs_ok"]]
    v = p[0]["kb_per_session"] if p else None
    row("10,000 TLS sessions, client RSS/session", n(v, "{:.1f} KB"), None if v is None else v <= 64, "<= 64 KB/session")
    h = (load(os.path.join(OUT, "handshakes.json")) or {}).get("versions", {})
    for v in ("1.3", "1.2"):
        r = (h.get(v) or {}).get("ratio")
        ok = None if r is None or math.isnan(r) else r >= 1.5
        row("resumed vs full handshake, TLS " + v, n(r, "{:.2f}x cheaper"), ok, ">= 1.5x")
    z = (load(os.path.join(OUT, "size.json")) or {}).get("msgs_per_s_100kb")
    row("100 KB messages", n(z, "{:,.0f} msgs/s"), None if z is None else z >= 2000, ">= 2,000 msgs/s")

getattr(sys.modules[__name__], "cmd_" + sys.argv[1])(sys.argv[2:])
PY
helper() { "$PY" "$E2E_TMP/bench.py" "$@"; }

# ---------------------------------------------------------------- sink, runs

SINK=""
# shellcheck disable=SC2016 # evaluated on exit
e2e_cleanup '[ -n "$SINK" ] && e2e_kill "$SINK"'
sink_start() { # sink_start [STATS] -- SINKARGS...
    PORT=$(free_port)
    "$RM" sink --listen 127.0.0.1:"$PORT" --tls-cert "$C/server.pem" --tls-key "$C/server.key" \
        --threads 1 "$@" >"$E2E_TMP/sink.log" 2>&1 &
    SINK=$!
    wait_port 127.0.0.1 "$PORT" 10 "$SINK"
}
sink_stop() { e2e_kill "$SINK" 20; SINK=""; }

# run NAME N [stats] SINKARGS -- BLASTARGS: N runs of blast (its --count is
# taken from BLASTARGS), each checked and kept in $RAW/NAME.RUN.json.
run() {
    local name=$1 nruns=$2 stats=- sargs=() count="" i rc prev="" a sa
    shift 2
    if [ "${1:-}" = stats ]; then stats=$E2E_TMP/$name.sink.json; shift; fi
    while [ "$1" != "--" ]; do sargs+=("$1"); shift; done
    shift
    for a in "$@"; do
        [ "$prev" = --count ] && count=$a
        prev=$a
    done
    rm -f "$RAW/$name".*.json
    for i in $(seq 1 "$nruns"); do
        sa=("${sargs[@]}")
        if [ "$stats" != - ]; then rm -f "$stats"; sa+=(--stats "$stats"); fi
        rc=0
        if sink_start "${sa[@]}"; then
            "$RM" blast --server localhost:"$PORT" --json --threads 1 --tls verify --ca "$C/ca.pem" "$@" \
                >"$RAW/$name.$i.json" 2>"$E2E_TMP/blast.err" || rc=$?
        else
            rc=125
            echo "sink did not start: $(tail -c 200 "$E2E_TMP/sink.log")" >"$E2E_TMP/blast.err"
        fi
        sink_stop
        helper record "$RAW/$name.$i.json" "$name" "$i" "$count" "$rc" "$E2E_TMP/blast.err" "$stats" "$*" ||
            STATUS=1
    done
}

plot() { # plot WHAT: bench/plot.gp -> $OUT/WHAT.png
    if command -v gnuplot >/dev/null 2>&1; then
        if gnuplot -e "dir='$OUT'; what='$1'" bench/plot.gp 2>"$E2E_TMP/gnuplot.err"; then
            echo "  plot: $OUT/$1.png"
        else
            echo "  plot $1 FAILED: $(tail -c 300 "$E2E_TMP/gnuplot.err")"
            STATUS=1
        fi
    else
        echo "  plot $1 skipped: gnuplot not installed (tools/install-deps.sh)"
    fi
}

echo "ringmail bench: $(nproc) cores, RUNS=$RUNS (medians), steps: $STEPS, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "client: ringmail blast --threads 1 (CPU = its getrusage); server: ringmail sink --threads 1; same machine"

# ---------------------------------------------------------------- 1. throughput

if want 1; then
    echo
    echo "1. throughput, 2 KB over STARTTLS (TLS 1.3), connections reused"
    fresh=0
    if [ "$COMPARE" != skip ]; then
        echo "  running bench/compare.sh (log: $OUT/compare.log; ~10 min with RUNS=3)"
        if RUNS=$RUNS COUNT=$COMPARE_COUNT bench/compare.sh "$BUILD" >"$OUT/compare.log" 2>&1; then
            fresh=1
        else
            echo "  compare.sh FAILED (exit $?): $(tail -n 3 "$OUT/compare.log" | tr '\n' ' ')"
            STATUS=1
        fi
    fi
    for c in $THROUGHPUT_CONCS; do
        name=throughput-c$c
        [ "$c" = 20 ] && name=throughput # the reference rate step 6 compares with
        run "$name" "$RUNS" -- --count "$COUNT" --concurrency "$c" --size 2048
    done
    # shellcheck disable=SC2086 # word splitting intended
    helper throughput "$fresh" "$COUNT" $THROUGHPUT_CONCS || STATUS=1
fi

# ---------------------------------------------------------------- 2. handshakes

if want 2; then
    echo
    echo "2. handshakes: $HS_COUNT connections, 20 at a time, one message each, full (sink issues no tickets) vs resumed"
    for v in 1.3 1.2; do
        run "full-$v" "$RUNS" --no-tickets --tls-max $v -- --count "$HS_COUNT" --concurrency 20 --msgs-per-conn 1
        run "resumed-$v" "$RUNS" --tls-max $v -- --count "$HS_COUNT" --concurrency 20 --msgs-per-conn 1
    done
    helper handshakes "$HS_COUNT" 1.3 1.2 || STATUS=1
fi

# ---------------------------------------------------------------- 3. scale

if want 3; then
    echo
    echo "3. scale: sessions open at once, sink delays every reply ${SCALE_LATENCY_MS} ms, connections reused (unlimited msgs/conn)"
    pts=()
    for c in $SCALE_CONCS; do
        n=$((SCALE_PER_SESSION * c))
        [ "$n" -lt "$SCALE_MIN_COUNT" ] && n=$SCALE_MIN_COUNT
        run "scale-c$c" "$RUNS" stats --latency-ms "$SCALE_LATENCY_MS" -- \
            --count "$n" --concurrency "$c" --msgs-per-conn 0 --timeout-ms 60000
        pts+=("$n:$c")
    done
    helper scale "$SCALE_LATENCY_MS" "${pts[@]}" || STATUS=1
    plot scale
fi

# ---------------------------------------------------------------- 4. cost growth

if want 4; then
    echo
    echo "4. cost growth: client CPU per message, 2 KB, 20 conns, STARTTLS (counts above 100,000: one run)"
    for n in $COST_COUNTS; do
        r=$RUNS
        [ "$n" -gt 100000 ] && r=1
        run "cost-$n" "$r" -- --count "$n" --concurrency 20 --size 2048
    done
    # shellcheck disable=SC2086 # word splitting intended
    helper cost "$RUNS" $COST_COUNTS || STATUS=1
    plot cost
fi

# ---------------------------------------------------------------- 5. message size

if want 5; then
    echo
    echo "5. message size: $SIZE_COUNT msgs each, 20 conns, STARTTLS"
    for s in $SIZES; do
        run "size-$s" "$RUNS" -- --count "$SIZE_COUNT" --concurrency 20 --size "$s"
    done
    # shellcheck disable=SC2086 # word splitting intended
    helper size "$SIZE_COUNT" $SIZES || STATUS=1
    plot size
fi

# ---------------------------------------------------------------- 7. RCPT batching

if want 7; then
    BATCH_COUNT=${BATCH_COUNT:-100000}
    echo
    echo "7. RCPT batching: send --message, $BATCH_COUNT recipients of one domain, 20 conns, verified STARTTLS; 1 vs 50 RCPTs per transaction, A B A B"
    seq 1 "$BATCH_COUNT" | sed 's/^/u/; s/$/@batch.test/' >"$E2E_TMP/batch.rcpts"
    { printf 'From: <news@sender.test>\nTo: undisclosed-recipients:;\nSubject: one body for all\n\n'
      head -c 1900 /dev/zero | tr '\0' x | fold -w 76; echo; } >"$E2E_TMP/batch.eml"
    rm -f "$RAW"/batch-*.json
    for i in $(seq 1 "$RUNS"); do
        for n in 1 50; do
            if sink_start; then
                printf '[global]\ntls = verify\n[isp batch]\ndomains = batch.test\nmax_connections = 20\nmax_rcpts_per_msg = %s\n[route batch.test]\nserver = 127.0.0.1:%s\n' \
                    "$n" "$PORT" >"$E2E_TMP/batch-$n.conf"
                "$RM" send --json --recipients "$E2E_TMP/batch.rcpts" --message "$E2E_TMP/batch.eml" \
                    --config "$E2E_TMP/batch-$n.conf" --ca "$C/ca.pem" \
                    >"$RAW/batch-$n.$i.json" 2>"$E2E_TMP/batch.err" || echo "  batch $n run $i: exit $?"
            fi
            sink_stop
        done
    done
    "$PY" - "$BATCH_COUNT" "$RUNS" <<'PY' || STATUS=1
import json, statistics, sys
count, runs = int(sys.argv[1]), int(sys.argv[2])
res, bad = {"count": count, "runs": {}, "medians": {}}, 0
for n in (1, 50):
    rows = []
    for i in range(1, runs + 1):
        try:
            d = json.load(open("bench/results/runs/batch-%d.%d.json" % (n, i)))
        except Exception:
            d = {}
        if d.get("accepted") != count:
            print("  %d RCPTs/transaction, run %d: FAILED (accepted %s of %d)" % (n, i, d.get("accepted"), count))
            bad = 1
            continue
        rows.append({"rcpts_per_s": count / d["wall_s"], "cpu_us_per_rcpt": d["cpu_s"] * 1e6 / count,
                     "wall_s": d["wall_s"], "cpu_s": d["cpu_s"], "peak_rss_kb": d["peak_rss_kb"]})
    res["runs"][n] = rows
    if rows:
        m = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        res["medians"][n] = m
        print("  max_rcpts_per_msg %2d: %9.0f recipients/s  %5.1f us CPU per recipient  (%d runs)"
              % (n, m["rcpts_per_s"], m["cpu_us_per_rcpt"], len(rows)))
if 1 in res["medians"] and 50 in res["medians"]:
    a, b = res["medians"][1], res["medians"][50]
    print("  batching: %.1fx the recipients/s, %.1fx less CPU per recipient"
          % (b["rcpts_per_s"] / a["rcpts_per_s"], a["cpu_us_per_rcpt"] / b["cpu_us_per_rcpt"]))
json.dump(res, open("bench/results/batch.json", "w"), indent=1)
sys.exit(bad)
PY
fi

# ---------------------------------------------------------------- inbound

if want 8; then
    echo
    echo "8. inbound: DSNs through ringmail inbound into PostgreSQL (bench/inbound.sh)"
    RUNS=$RUNS COUNT=${INBOUND_COUNT:-10000} bench/inbound.sh "$BUILD" ||
        { echo "  inbound bench FAILED"; STATUS=1; }
fi

# ---------------------------------------------------------------- 9. destination TLS policy

if want 9; then
    echo
    echo "9. destination TLS policy: a campaign under off, MTA-STS (cache cold, warm) and DANE (bench/policy.sh)"
    RUNS=$RUNS COUNT=${POLICY_COUNT:-100000} DOMAINS=${POLICY_DOMAINS:-1000} bench/policy.sh "$BUILD" ||
        { echo "  policy bench FAILED"; STATUS=1; }
fi

# ---------------------------------------------------------------- 10. nodes on one PostgreSQL

if want 10; then
    echo
    echo "10. nodes on one PostgreSQL: 1, 2 and 3 send --db nodes, msgs/s and PostgreSQL CPU per recipient (bench/nodes.sh)"
    RUNS=$RUNS COUNT=${NODES_COUNT:-100000} bench/nodes.sh "$BUILD" ||
        { echo "  nodes bench FAILED"; STATUS=1; }
fi

# ---------------------------------------------------------------- 11. DKIM signing

if want 11; then
    echo
    echo "11. DKIM signing: RSA-2048, Ed25519 and dual through the signer processes, beside openssl speed (bench/dkim.sh)"
    RUNS=$RUNS COUNT=${DKIM_COUNT:-20000} bench/dkim.sh "$BUILD" ||
        { echo "  dkim bench FAILED"; STATUS=1; }
fi

# ---------------------------------------------------------------- 12. slow servers

if want 12; then
    echo
    echo "12. slow servers: sender CPU per message at sink latency 0, 5 and 100 ms, 1,000 sessions (bench/latency.sh)"
    RUNS=$RUNS bench/latency.sh "$BUILD" || { echo "  latency bench FAILED"; STATUS=1; }
fi

# ---------------------------------------------------------------- targets

echo
echo "targets (issue #2), from bench/results/*.json (steps not run this time: earlier results or -)"
helper targets
[ "$STATUS" -ne 0 ] && echo "some runs FAILED (see above); raw runs in $RAW/"

want 6 || exit "$STATUS"
echo

# 6. a campaign from PostgreSQL (make demo's setup: a throw-away PostgreSQL,
# 5 ISP-like sinks over verified STARTTLS, every sink accepting), side by
# side with blast: each campaign run sits between two blast runs (100,000
# msgs, 2 KB, 20 connections, the same CA check) and is compared with
# their mean. Campaign sizes from CAMPAIGN_SIZES ("100000 1000000"): the
# first size runs RUNS times with the Ed25519 DKIM signature and RUNS
# times without it (what the signature costs), the others once, signed.
# Peak RSS must not grow with the campaign.
echo "6. a campaign from PostgreSQL: rendered per recipient, results written back, beside blast"
CAMPAIGN_SIZES=${CAMPAIGN_SIZES:-100000 1000000}
first=${CAMPAIGN_SIZES%% *}
for n in $CAMPAIGN_SIZES; do
    for dkim in 1 0; do
        [ "$dkim" = 0 ] && [ "$n" != "$first" ] && continue
        nruns=1
        [ "$n" = "$first" ] && nruns=$RUNS
        for i in $(seq 1 "$nruns"); do
            tag=campaign-$n-dkim$dkim.$i
            run "ref-$tag-a" 1 -- --count 100000 --concurrency 20 --size 2048
            DEMO_CLEAN=1 DEMO_DKIM=$dkim COUNT=$n DEMO_JSON="$RAW/$tag.json" bench/demo.sh "$BUILD" \
                >"$RAW/$tag.log" 2>&1 || { echo "  campaign $tag FAILED (log: $RAW/$tag.log)"; STATUS=1; }
            run "ref-$tag-b" 1 -- --count 100000 --concurrency 20 --size 2048
        done
    done
done
# shellcheck disable=SC2086 # one argument per size
/usr/bin/python3 - "$RAW" "$OUT/campaign.json" "$RUNS" $CAMPAIGN_SIZES <<'PY'
import json, os, statistics, sys
raw, out, runs, sizes = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
def load(p):
    try:
        return json.load(open(p))
    except (OSError, ValueError):
        return None
result = {"sizes": sizes, "runs": {}, "medians": {}}
for n in sizes:
    for dkim in (1, 0):
        rows = []
        for i in range(1, runs + 1):
            tag = "campaign-%s-dkim%d.%d" % (n, dkim, i)
            d = load(os.path.join(raw, tag + ".json"))
            a = load(os.path.join(raw, "ref-%s-a.1.json" % tag))
            b = load(os.path.join(raw, "ref-%s-b.1.json" % tag))
            if not d or d.get("accepted") != int(n):
                continue
            refs = [r["msgs_per_s"] for r in (a, b) if r and r.get("accepted") == 100000]
            db = d["db"]
            row = {
                "msgs_per_s": d["accepted"] / d["wall_s"],
                "blast_msgs_per_s": sum(refs) / len(refs) if refs else float("nan"),
                "cpu_us_per_msg": d["cpu_s"] * 1e6 / d["accepted"],
                "claims_per_s": db["claimed"] / d["wall_s"],
                "writes_per_s": db["written"] / d["wall_s"],
                "claim_capacity": db["claimed"] / db["claim_s"] if db.get("claim_s") else float("nan"),
                "write_capacity": db["written"] / db["write_s"] if db.get("write_s") else float("nan"),
                "claim_busy": db.get("claim_s", 0) / d["wall_s"],
                "write_busy": db.get("write_s", 0) / d["wall_s"],
                "peak_rss_kb": d["peak_rss_kb"],
            }
            row["share_of_blast"] = row["msgs_per_s"] / row["blast_msgs_per_s"]
            rows.append(row)
        if not rows:
            continue
        key = "%s-%s" % (n, "dkim" if dkim else "nodkim")
        result["runs"][key] = rows
        m = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        result["medians"][key] = m
        print("  %9s recipients, %-12s %7.0f msgs/s = %3.0f%% of blast beside it (%5.0f)  %5.1f us CPU/msg"
              "  peak RSS %5.1f MB  (%d run%s)" % (
                  "{:,}".format(int(n)), "DKIM ed25519" if dkim else "no DKIM", m["msgs_per_s"],
                  100 * m["share_of_blast"], m["blast_msgs_per_s"], m["cpu_us_per_msg"],
                  m["peak_rss_kb"] / 1024, len(rows), "" if len(rows) == 1 else "s"))
        print("  %9s database: claims %7.0f/s, results %7.0f/s; per second of database time %7.0f claimed,"
              " %7.0f written (claimer busy %2.0f%%, writer busy %2.0f%% of the run)" % (
                  "", m["claims_per_s"], m["writes_per_s"], m["claim_capacity"], m["write_capacity"],
                  100 * m["claim_busy"], 100 * m["write_busy"]))
rss = [result["medians"][k]["peak_rss_kb"] for k in result["medians"] if k.endswith("-dkim")]
if len(rss) >= 2:
    print("  peak RSS across sizes: max/min %.2f (flat: within 20%% is the target)" % (max(rss) / min(rss)))
json.dump(result, open(out, "w"), indent=1)
PY
exit "$STATUS"
