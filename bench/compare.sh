#!/usr/bin/env bash
# bench/compare.sh BUILD: ringmail blast beside two other senders, in the
# same run, against the same `ringmail sink` on this machine:
#
#   ringmail          BUILD/ringmail blast --threads 1
#   postfix-default   a private Postfix instance as the sending MTA, upstream
#                     defaults (no TLS connection reuse: one connection and
#                     one full TLS handshake per message)
#   postfix-tuned     the same with smtp_tls_connection_reuse = yes (through
#                     the tlsproxy service, connections kept in scache) and
#                     an SMTP client TLS session cache
#   nodemailer        bench/nodemailer/send.js: one pooled transport
#
# Every sender: COUNT (10,000) messages of ~SIZE (2,048) bytes, one
# recipient each, 20 connections at most, STARTTLS required (TLS 1.2 or
# later; the sink negotiates 1.3), the sink's certificate verified against
# the test CA (tests/e2e/lib.sh make_certs). Rounds are interleaved
# (A B C D, A B C D, ...), RUNS rounds (default 3), and the figures are
# medians over the successful runs. Each run gets a fresh sink (one thread,
# as in bench/run.sh) whose --stats file must show all COUNT messages, once
# per recipient; a run where fewer arrived is reported as failed and left
# out of the medians.
#
# What is timed:
#   ringmail, nodemailer  wall time measured by the sender itself (first
#                         connection to last reply; process start-up not
#                         included in the wall time)
#   postfix               messages are injected with sendmail(1) and put on
#                         hold by a cleanup header check (not timed); then
#                         `postsuper -H ALL` (not timed) moves them to the
#                         deferred queue and the clock starts at `postqueue
#                         -f` and stops when the queue is empty (polled
#                         every 10 ms, without forking)
# Sender CPU (user+system), in this order of preference:
#   cgroup v2 (cpu.stat usage_usec) or v1 (cpuacct.usage): each sender is
#   started inside its own cgroup, so every process and thread it has is
#   counted -- for Postfix, master, qmgr, smtp, tlsproxy, tlsmgr, scache,
#   postlogd, cleanup, ... (the instance is started from a shell that first
#   moves itself into the cgroup) and `postqueue -f`; read before and after
#   the timed window. ringmail and nodemailer: the whole process, start-up
#   included.
#   otherwise (no writable cgroup): ringmail and nodemailer by getrusage()
#   of the child; Postfix by summing utime+stime+cutime+cstime over the
#   master's process tree from /proc before and after the window (a reaped
#   child's time is in its parent's cutime/cstime).
#
# Output: a table on stdout, bench/results/compare.json (every run, raw,
# and the medians and ratios), logs of the last run in bench/results/compare/.
#
# Environment: RUNS (3), COUNT (10000), SIZE (2048), CONNS (20),
#   SENDERS ("ringmail postfix-default postfix-tuned nodemailer"),
#   INJECT_PARALLEL (8 sendmail processes at once),
#   PF_QUEUE_DISK=1 to put Postfix's queue under the temp dir instead of
#   /dev/shm (tmpfs: no fsync cost, Postfix's best case),
#   SINK_ARGS (extra sink options, e.g. "--defer-pct 1" to see the failure
#   path), CG_DISABLE=1 to force the /proc + getrusage method, E2E_KEEP=1 to keep
#   the temp dir.
#
# Needs: root, postfix (tools/install-deps.sh), node >= 20 and npm (the
# nodemailer package is installed into bench/nodemailer/node_modules the
# first time). Nothing is sent anywhere but 127.0.0.1: Postfix's relayhost
# is [localhost] with DNS disabled (hosts file), nodemailer connects to
# 127.0.0.1 (checking the certificate for "localhost").
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}
COUNT=${COUNT:-10000}
SIZE=${SIZE:-2048}
CONNS=${CONNS:-20}
SENDERS=${SENDERS:-ringmail postfix-default postfix-tuned nodemailer}
INJECT_PARALLEL=${INJECT_PARALLEL:-8}
OUT=bench/results
LOGS=$OUT/compare
NM_DIR=bench/nodemailer
PY=/usr/bin/python3

. tests/e2e/lib.sh
e2e_tmpdir
T=$E2E_TMP
mkdir -p "$OUT" "$LOGS"
rm -f "$LOGS"/*.log "$LOGS"/*.json "$LOGS"/*.maillog 2>/dev/null
RECORDS=$T/records.jsonl
: >"$RECORDS"

die() { echo "compare.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------- preflight

[ -x "$RM" ] || die "$RM not found (build it with make -j2)"
[ "$(id -u)" -eq 0 ] || die "must run as root (private Postfix instances, cgroups)"
for s in $SENDERS; do
    case $s in
    ringmail) ;;
    postfix-default | postfix-tuned)
        command -v postfix >/dev/null 2>&1 || die "postfix is not installed (sh tools/install-deps.sh)" ;;
    nodemailer)
        if ! command -v node >/dev/null 2>&1; then
            # Only the benchmark needs Node.js: installed here, on demand,
            # not by tools/install-deps.sh (CI never runs it).
            echo "# installing nodejs and npm (Debian)" >&2
            apt-get install -y -q --no-install-recommends nodejs npm >&2 ||
                die "node is not installed and apt-get install nodejs npm failed"
        fi
        if [ ! -d "$NM_DIR/node_modules/nodemailer" ]; then
            echo "# installing nodemailer into $NM_DIR/node_modules" >&2
            (cd "$NM_DIR" && npm install --no-audit --no-fund >&2) || die "npm install failed"
        fi ;;
    *) die "unknown sender '$s'" ;;
    esac
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

make_certs "$T/certs" || die "make_certs failed"
C=$T/certs
CA=$C/ca.pem

# ---------------------------------------------------------------- python helper

cat >"$T/helper.py" <<'PY'
import json, os, resource, statistics, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor

def cg_usage_us(kind, path):
    if kind == "v2":
        for l in open(os.path.join(path, "cpu.stat")):
            k, v = l.split()
            if k == "usage_usec":
                return int(v)
    if kind == "v1":
        return int(open(os.path.join(path, "cpuacct.usage")).read()) // 1000
    raise SystemExit("no cgroup")

TICK = os.sysconf("SC_CLK_TCK")

def tree_usage_us(root):
    """utime+stime+cutime+cstime over root's process tree, in us."""
    procs = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            s = open("/proc/%s/stat" % p).read()
        except OSError:
            continue
        f = s[s.rindex(")") + 2:].split()
        procs[int(p)] = (int(f[1]), sum(int(x) for x in f[11:15]))
    keep, total, changed = {root}, 0, True
    while changed:
        changed = False
        for pid, (ppid, _) in procs.items():
            if ppid in keep and pid not in keep:
                keep.add(pid)
                changed = True
    for pid in keep:
        if pid in procs:
            total += procs[pid][1]
    return total * 1000000 // TICK

def usage(kind, path, pidfile=None):
    if kind in ("v2", "v1"):
        return cg_usage_us(kind, path)
    pid = int(open(pidfile).read().strip())
    return tree_usage_us(pid)

def nonempty(d, depth=0):
    try:
        with os.scandir(d) as it:
            for e in it:
                if depth == 0:
                    return True
                if e.is_dir() and nonempty(e.path, depth - 1):
                    return True
    except FileNotFoundError:
        pass
    return False

def count_files(d):
    n = 0
    for dp, dn, fn in os.walk(d):
        n += len(fn)
    return n

def cmd_usage(a):
    # usage KIND PATH
    print(cg_usage_us(a[0], a[1]))

def cmd_rusage(a):
    # rusage OUTFILE ERRFILE CMD...: run CMD, its user+sys CPU (getrusage) on stdout
    with open(a[0], "w") as out, open(a[1], "w") as err:
        r = subprocess.run(a[2:], stdout=out, stderr=err)
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    print("%d %d" % (r.returncode, int((u.ru_utime + u.ru_stime) * 1e6)))

def cmd_inject(a):
    # inject CONFDIR QUEUEDIR COUNT SIZE PARALLEL: COUNT messages through
    # sendmail(1), then wait until all are in the hold queue.
    conf, q, count, size, par = a[0], a[1], int(a[2]), int(a[3]), int(a[4])
    line = b"The quick brown fox jumps over the lazy dog. 0123456789 abcdefghijklmnopqrst"
    def msg(i):
        h = ("From: Postfix bench <postfix@bench.test>\n"
             "To: user%d@example.test\n"
             "Subject: ringmail bench message %d\n"
             "Date: %s\n"
             "Message-ID: <%d.%d@bench.test>\n"
             "MIME-Version: 1.0\n"
             "Content-Type: text/plain; charset=us-ascii\n"
             "Content-Transfer-Encoding: 7bit\n\n"
             % (i, i, time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()), i, os.getpid())).encode()
        # Postfix adds a Received: header (~110 bytes); lines go out with CRLF.
        target = size - 110
        cur = len(h) + h.count(b"\n")
        body = b""
        while True:
            n = min(76, target - cur - 2)
            if n <= 0:
                break
            body += line[:n] + b"\n"
            cur += n + 2
        return h + body
    env = dict(os.environ, MAIL_CONFIG=conf)
    def one(i):
        r = subprocess.run(["/usr/sbin/sendmail", "-C", conf, "-i", "-f", "postfix@bench.test",
                            "--", "user%d@example.test" % i], input=msg(i), env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return r.returncode, r.stderr[:200]
    bad = 0
    first_err = b""
    with ThreadPoolExecutor(par) as ex:
        for rc, err in ex.map(one, range(count)):
            if rc:
                bad += 1
                first_err = first_err or err
    if bad:
        print("inject: %d sendmail failures, first: %s" % (bad, first_err.decode(errors="replace")), file=sys.stderr)
        sys.exit(1)
    deadline = time.time() + 300
    held = 0
    while time.time() < deadline:
        held = count_files(os.path.join(q, "hold"))
        if held >= count and not nonempty(os.path.join(q, "maildrop")) \
                and not nonempty(os.path.join(q, "incoming")):
            break
        time.sleep(0.2)
    other = sum(count_files(os.path.join(q, d)) for d in ("active", "deferred", "incoming"))
    if held != count or other:
        print("inject: %d held (want %d), %d elsewhere in the queue" % (held, count, other), file=sys.stderr)
        sys.exit(1)

def cmd_release(a):
    # release KIND CGPATH PIDFILE CONFDIR QUEUEDIR TIMEOUT: postqueue -f, wait
    # until the queue is empty; JSON with wall_s and cpu_us.
    kind, cg, pidfile, conf, q, timeout = a[0], a[1], a[2], a[3], a[4], float(a[5])
    d = {x: os.path.join(q, x) for x in ("incoming", "active", "deferred", "maildrop", "hold")}
    def enter_cg():
        if kind in ("v2", "v1"):
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
    cpu0 = usage(kind, cg, pidfile)
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/sbin/postqueue", "-c", conf, "-f"], preexec_fn=enter_cg,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    reason = "" if r.returncode == 0 else "postqueue -f: " + r.stderr.decode(errors="replace")[:200]
    stuck_since = None
    while not reason:
        busy = nonempty(d["active"]) or nonempty(d["incoming"]) or nonempty(d["maildrop"])
        deferred = nonempty(d["deferred"], 1) or nonempty(d["hold"])
        now = time.perf_counter()
        if not busy and not deferred:
            break
        if not busy:
            stuck_since = stuck_since or now
            if now - stuck_since > 5:
                reason = "messages left in the deferred queue (delivery failed, see maillog)"
        else:
            stuck_since = None
        if now - t0 > timeout:
            reason = "timeout after %.0f s" % timeout
        time.sleep(0.01)
    t1 = time.perf_counter()
    cpu1 = usage(kind, cg, pidfile)
    left = {x: count_files(p) for x, p in d.items()}
    print(json.dumps({"wall_s": t1 - t0, "cpu_us": cpu1 - cpu0, "queue_left": left, "reason": reason}))

def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return None

def cmd_record(a):
    # record SENDER RUN COUNT SINKSTATS SENDERJSON WALL_S CPU_US RC [REASON]
    sender, run, count, sinkf, sjf = a[0], int(a[1]), int(a[2]), a[3], a[4]
    wall = float(a[5]) if a[5] else None
    cpu_us = int(a[6]) if a[6] else None
    rc = int(a[7]) if a[7] else 0
    reason = a[8] if len(a) > 8 else ""
    sink = load(sinkf) or {}
    sj = load(sjf) if sjf else None
    dl = sink.pop("deliveries", {}) or {}
    want = {"user%d@example.test" % i for i in range(count)}
    got = set(dl)
    dup = sum(1 for v in dl.values() if v != 1)
    arrived = int(sink.get("messages", 0))
    if not reason and not sink:
        reason = "no sink statistics"
    if not reason and arrived != count:
        reason = "sink accepted %d of %d messages" % (arrived, count)
    if not reason and (got != want or dup):
        reason = "recipients: %d missing, %d unexpected, %d more than once" % (
            len(want - got), len(got - want), dup)
    if not reason and rc:
        reason = "sender exit status %d" % rc
    if not reason and isinstance(sj, dict) and "accepted" in sj and int(sj["accepted"]) != count:
        reason = "sender reports %s accepted of %d" % (sj["accepted"], count)
    if not reason and (not wall or cpu_us is None):
        reason = "no wall time or CPU measurement"
    ok = not reason
    cpu_s = cpu_us / 1e6 if cpu_us is not None else None
    span = None
    if sink.get("first_accept_ms") and sink.get("last_accept_ms"):
        span = (sink["last_accept_ms"] - sink["first_accept_ms"]) / 1000.0
    rec = {
        "sender": sender, "run": run, "ok": ok, "reason": reason, "count": count,
        "sink_messages": arrived,
        "wall_s": wall,
        "msgs_per_s": count / wall if ok else None,
        "cpu_s": cpu_s,
        "cpu_s_per_10k": cpu_s * 10000.0 / count if cpu_s is not None else None,
        "msgs_per_cpu_s": count / cpu_s if ok and cpu_s else None,
        "sink_first_to_last_accept_s": span,
        "sink_bytes_per_msg": sink.get("bytes", 0) / arrived if arrived else None,
        "sink_connections": sink.get("connections"),
        "sink_tls_handshakes": sink.get("tls_handshakes"),
        "sink_tls_resumed": sink.get("tls_resumed"),
        "sink_peak_concurrent": sink.get("peak_concurrent"),
        "sink": sink,
        "sender_report": sj,
    }
    print(json.dumps(rec))
    st = "ok" if ok else "FAILED: " + reason
    print("# %-16s run %d: %s  wall %s s  cpu %s s  conns %s  handshakes %s (resumed %s)  %s" % (
        sender, run, "%.0f msgs/s" % rec["msgs_per_s"] if ok else "-",
        "%.2f" % wall if wall else "-", "%.2f" % cpu_s if cpu_s is not None else "-",
        rec["sink_connections"], rec["sink_tls_handshakes"], rec["sink_tls_resumed"], st),
        file=sys.stderr)

def cmd_report(a):
    # report RECORDS OUTJSON META_JSON
    recs = [json.loads(l) for l in open(a[0]) if l.strip()]
    meta = json.loads(a[2])
    order = []
    for r in recs:
        if r["sender"] not in order:
            order.append(r["sender"])
    med = {}
    for s in order:
        ok = [r for r in recs if r["sender"] == s and r["ok"]]
        allr = [r for r in recs if r["sender"] == s]
        m = lambda k: statistics.median([r[k] for r in ok]) if ok else None
        med[s] = {
            "runs": len(allr), "ok_runs": len(ok),
            "failed": [{"run": r["run"], "reason": r["reason"]} for r in allr if not r["ok"]],
            "msgs_per_s": m("msgs_per_s"), "wall_s": m("wall_s"),
            "cpu_s_per_10k": m("cpu_s_per_10k"), "msgs_per_cpu_s": m("msgs_per_cpu_s"),
            "sink_connections": m("sink_connections"), "sink_tls_handshakes": m("sink_tls_handshakes"),
            "sink_bytes_per_msg": m("sink_bytes_per_msg"),
        }
    ratios = {}
    rm = med.get("ringmail")
    for s in order:
        if s == "ringmail" or not rm:
            continue
        o = med[s]
        ratios["ringmail_vs_" + s] = {
            "msgs_per_s": rm["msgs_per_s"] / o["msgs_per_s"] if rm["msgs_per_s"] and o["msgs_per_s"] else None,
            "msgs_per_cpu_s": rm["msgs_per_cpu_s"] / o["msgs_per_cpu_s"]
                if rm["msgs_per_cpu_s"] and o["msgs_per_cpu_s"] else None,
        }
    doc = dict(meta, medians=med, ratios=ratios, runs=recs)
    with open(a[1], "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    f = lambda v, fmt: (fmt % v) if v is not None else "-"
    print("%-16s %10s %12s %12s %8s %6s %11s %11s" % (
        "sender", "msgs/s", "CPU s/10k", "msgs/CPU-s", "conns", "ok", "rm x msg/s", "rm x msg/cpu"))
    for s in order:
        d = med[s]
        r = ratios.get("ringmail_vs_" + s, {})
        print("%-16s %10s %12s %12s %8s %6s %11s %11s" % (
            s, f(d["msgs_per_s"], "%.0f"), f(d["cpu_s_per_10k"], "%.2f"), f(d["msgs_per_cpu_s"], "%.0f"),
            f(d["sink_connections"], "%.0f"), "%d/%d" % (d["ok_runs"], d["runs"]),
            f(r.get("msgs_per_s"), "%.1fx") if s != "ringmail" else ("1.0x" if d["ok_runs"] else "-"),
            f(r.get("msgs_per_cpu_s"), "%.1fx") if s != "ringmail" else ("1.0x" if d["ok_runs"] else "-")))
    for s in order:
        for x in med[s]["failed"]:
            print("FAILED %s run %d: %s" % (s, x["run"], x["reason"]))

getattr(sys.modules[__name__], "cmd_" + sys.argv[1])(sys.argv[2:])
PY
helper() { "$PY" "$T/helper.py" "$@"; }

# ---------------------------------------------------------------- CPU accounting

# CG_KIND: v2 (cgroup2 cpu.stat), v1 (cpuacct), or proc (getrusage and /proc).
CG_KIND=proc
CG_BASE=""
CG_TAG=rmbench-$$
_cg_try() { # _cg_try KIND BASE: a child cgroup can be made, entered and read
    local d=$2/$CG_TAG-probe ok=1
    mkdir "$d" 2>/dev/null || return 1
    if sh -c 'echo $$ >"$1/cgroup.procs"' sh "$d" 2>/dev/null &&
        helper usage "$1" "$d" >/dev/null 2>&1; then ok=0; fi
    cg_rmdir "$d"
    return $ok
}
cg_rmdir() {
    local i
    for ((i = 0; i < 100; i++)); do
        rmdir "$1" 2>/dev/null && return 0
        [ -d "$1" ] || return 0
        sleep 0.05
    done
    echo "# could not remove cgroup $1" >&2
    return 1
}
cg_detect() {
    local b
    [ -n "${CG_DISABLE:-}" ] && return
    for b in /sys/fs/cgroup /sys/fs/cgroup/unified; do
        if [ -f "$b/cgroup.controllers" ] && _cg_try v2 "$b"; then
            CG_KIND=v2 CG_BASE=$b
            return
        fi
    done
    for b in /sys/fs/cgroup/cpuacct /sys/fs/cgroup/cpu,cpuacct; do
        if [ -f "$b/cpuacct.usage" ] && _cg_try v1 "$b"; then
            CG_KIND=v1 CG_BASE=$b
            return
        fi
    done
}
cg_new() { # cg_new NAME: make a cgroup, print its path ("" without cgroups)
    [ "$CG_KIND" = proc ] && { echo ""; return 0; }
    local d=$CG_BASE/$CG_TAG-$1
    mkdir -p "$d" && echo "$d"
}
cg_usage() { # cg_usage PATH: microseconds
    helper usage "$CG_KIND" "$1"
}
cg_remove_all() {
    local d
    [ -n "$CG_BASE" ] || return 0
    for d in "$CG_BASE/$CG_TAG"-*; do
        [ -d "$d" ] && cg_rmdir "$d"
    done
    return 0
}
cg_detect
e2e_cleanup cg_remove_all
case $CG_KIND in
v2) CPU_METHOD="cgroup v2 cpu.stat usage_usec of a cgroup per sender run ($CG_BASE)" ;;
v1) CPU_METHOD="cgroup v1 cpuacct.usage of a cgroup per sender run ($CG_BASE)" ;;
*) CPU_METHOD="getrusage of the child (ringmail, nodemailer); Postfix: utime+stime+cutime+cstime summed over the master's process tree from /proc" ;;
esac

# run_measured CG OUT ERR CMD...: run CMD (in cgroup CG when there is one);
# sets RUN_RC and RUN_CPU_US (whole process, start-up included).
run_measured() {
    local cg=$1 out=$2 err=$3 u0 u1 r
    shift 3
    if [ "$CG_KIND" = proc ]; then
        r=$(helper rusage "$out" "$err" "$@")
        RUN_RC=${r% *} RUN_CPU_US=${r#* }
    else
        u0=$(cg_usage "$cg")
        sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cg" "$@" >"$out" 2>"$err"
        RUN_RC=$?
        u1=$(cg_usage "$cg")
        RUN_CPU_US=$((u1 - u0))
    fi
}

# ---------------------------------------------------------------- sink

SINK=""
CMP_SINK_STATS=""
e2e_cleanup '[ -n "$SINK" ] && e2e_kill "$SINK"'
sink_start() { # sink_start TAG
    PORT=$(free_port)
    CMP_SINK_STATS=$T/$1.sink.json
    rm -f "$CMP_SINK_STATS"
    "$RM" sink --listen 127.0.0.1:$PORT --tls-cert "$C/server.pem" --tls-key "$C/server.key" \
        --threads 1 --stats "$CMP_SINK_STATS" ${SINK_ARGS:-} >"$T/$1.sink.log" 2>&1 &
    SINK=$!
    wait_port 127.0.0.1 "$PORT" 10 "$SINK"
}
sink_stop() { # writes the --stats file
    e2e_kill "$SINK" 10
    SINK=""
}

# ---------------------------------------------------------------- Postfix

# pf_setup DIR VARIANT: a private sending instance in DIR (conf/, data/,
# maillog), its queue in /dev/shm (or DIR/queue with PF_QUEUE_DISK=1). No
# listener at all: mail enters through sendmail(1)/postdrop, is put on hold
# by the pickup service's cleanup, and leaves through the smtp client to
# relayhost [localhost]:PORT only.
pf_setup() {
    local d=$1 variant=$2 q
    rm -rf "$d"
    q=$(postfix_instance "$d" "${PF_QUEUE_DISK:-}") || return 1
    printf '/^Subject:/ HOLD ringmail bench: held until the timed release\n' >"$d/conf/hold_checks"
    {
        echo "# Private sending instance of bench/compare.sh ($variant)."
        postfix_main_cf_base "$d" "$q" postfix-rmbench sender.bench.test bench.test
    } >"$d/conf/main.cf"
    cat >>"$d/conf/main.cf" <<CF
inet_interfaces = loopback-only
# Everything goes to the sink, nowhere else; no DNS (localhost from /etc/hosts).
relayhost = [localhost]:$PORT
smtp_host_lookup = native
# STARTTLS required, the sink's certificate verified against the test CA.
smtp_tls_security_level = verify
smtp_tls_verify_cert_match = hostname
smtp_tls_CAfile = $CA
smtp_tls_protocols = >=TLSv1.2
smtp_tls_mandatory_protocols = >=TLSv1.2
# 20 connections to the one destination (20 is also Postfix's default).
default_destination_concurrency_limit = $CONNS
smtp_destination_concurrency_limit = $CONNS
smtp_connection_cache_on_demand = yes
CF
    if [ "$variant" = tuned ]; then
        cat >>"$d/conf/main.cf" <<CF
# Tuned: TLS connections are reused (the tlsproxy service keeps the TLS
# state, scache the connection) and TLS sessions cached for resumption.
smtp_tls_connection_reuse = yes
smtp_tls_session_cache_database = btree:\$data_directory/smtp_scache
CF
    fi
    cat >"$d/conf/master.cf" <<MF
# service  type  private unpriv chroot wakeup maxproc command
pickup     unix  n       -      n      60     1       pickup
  -o cleanup_service_name=holdcleanup
cleanup    unix  n       -      n      -      0       cleanup
holdcleanup unix n       -      n      -      0       cleanup
  -o header_checks=regexp:$d/conf/hold_checks
MF
    postfix_master_cf_base >>"$d/conf/master.cf"
    cat >>"$d/conf/master.cf" <<MF
smtp       unix  -       -      n      -      -       smtp
relay      unix  -       -      n      -      -       smtp
tlsproxy   unix  -       -      n      -      0       tlsproxy
postlog    unix-dgram n  -      n      -      1       postlogd
MF
    # Postfix waits until a config file is over a second old.
    touch -d '-1 minute' "$d/conf/main.cf" "$d/conf/master.cf" "$d/conf/hold_checks"
    PF_QUEUE=$q
}

PF_DIR=""
e2e_cleanup '[ -n "$PF_DIR" ] && stop_postfix "$PF_DIR"'

# pf_start DIR CG: start the instance from a shell inside cgroup CG, so the
# master and every process it forks are accounted there.
pf_start() {
    local d=$1 cg=$2 i
    PF_DIR=$d
    if [ -n "$cg" ]; then
        sh -c 'echo $$ >"$1/cgroup.procs" && exec postfix -c "$2" start' sh "$cg" "$d/conf" \
            </dev/null >"$d/start.log" 2>&1
    else
        postfix -c "$d/conf" start </dev/null >"$d/start.log" 2>&1
    fi || { cat "$d/start.log" "$d/maillog" >&2; return 1; }
    for ((i = 0; i < 100; i++)); do
        [ -n "$(_postfix_master_pid "$d")" ] && return 0
        sleep 0.1
    done
    echo "postfix master did not start" >&2
    cat "$d/start.log" "$d/maillog" >&2
    return 1
}

# ---------------------------------------------------------------- one run per sender

# run_sender SENDER RUN: appends one JSON line to $RECORDS.
run_sender() {
    local s=$1 i=$2 tag="$1.$2" cg sj="" wall="" cpu="" rc=0 reason="" d rel
    cg=$(cg_new "$tag") || { reason="cannot create cgroup"; cg=""; }
    sink_start "$tag" || reason="sink did not start"
    if [ -z "$reason" ]; then
        case $s in
        ringmail)
            sj=$T/$tag.json
            run_measured "$cg" "$sj" "$T/$tag.err" "$RM" blast --server "localhost:$PORT" \
                --count "$COUNT" --concurrency "$CONNS" --size "$SIZE" --ca "$CA" --json --threads 1
            rc=$RUN_RC cpu=$RUN_CPU_US
            wall=$(jget "$sj" wall_s)
            ;;
        nodemailer)
            sj=$T/$tag.json
            run_measured "$cg" "$sj" "$T/$tag.err" node "$NM_DIR/send.js" --port "$PORT" --ca "$CA" \
                --count "$COUNT" --size "$SIZE" --conns "$CONNS" --inflight 200 \
                --host 127.0.0.1 --servername localhost
            rc=$RUN_RC cpu=$RUN_CPU_US
            wall=$(jget "$sj" wall_s)
            ;;
        postfix-*)
            d=$T/pf-$tag
            pf_setup "$d" "${s#postfix-}" || reason="postfix setup failed"
            [ -z "$reason" ] && { pf_start "$d" "$cg" || reason="postfix did not start"; }
            if [ -z "$reason" ]; then
                # not timed: injection (held on arrival), then hold -> deferred
                helper inject "$d/conf" "$PF_QUEUE" "$COUNT" "$SIZE" "$INJECT_PARALLEL" 2>"$T/$tag.err" ||
                    reason="injection failed: $(tail -c 300 "$T/$tag.err")"
            fi
            if [ -z "$reason" ]; then
                postsuper -c "$d/conf" -H ALL >>"$T/$tag.err" 2>&1 || reason="postsuper -H failed"
            fi
            if [ -z "$reason" ]; then
                sj=$T/$tag.json
                helper release "$CG_KIND" "${cg:-none}" "$PF_QUEUE/pid/master.pid" "$d/conf" "$PF_QUEUE" 600 \
                    >"$sj" 2>>"$T/$tag.err" || reason="release failed: $(tail -c 300 "$T/$tag.err")"
                rel=$(jget "$sj" reason)
                [ -n "$rel" ] && [ "$rel" != 0 ] && reason=$rel
                wall=$(jget "$sj" wall_s)
                cpu=$(jget "$sj" cpu_us)
            fi
            stop_postfix "$d"
            # shellcheck disable=SC2034 # read by the exit trap
            PF_DIR=""
            cp "$d/maillog" "$LOGS/$tag.maillog" 2>/dev/null
            [ -z "${E2E_KEEP:-}" ] && rm -rf "$d"
            ;;
        esac
    fi
    sink_stop
    [ -n "$cg" ] && cg_rmdir "$cg"
    [ -n "$sj" ] && cp "$sj" "$LOGS/$tag.json" 2>/dev/null
    cp "$T/$tag.err" "$LOGS/$tag.err.log" 2>/dev/null
    cp "$T/$tag.sink.log" "$LOGS/$tag.sink.log" 2>/dev/null
    [ "$wall" = 0 ] && wall=""
    helper record "$s" "$i" "$COUNT" "$CMP_SINK_STATS" "$sj" "$wall" "$cpu" "$rc" "$reason" >>"$RECORDS"
}

# ---------------------------------------------------------------- main

echo "# ringmail vs Postfix vs nodemailer: $(nproc) cores, $COUNT msgs of $SIZE B, $CONNS conns, $RUNS runs each, interleaved"
echo "# CPU: $CPU_METHOD"
for i in $(seq 1 "$RUNS"); do
    for s in $SENDERS; do
        run_sender "$s" "$i"
        sleep 1
    done
done

META=$("$PY" - "$COUNT" "$SIZE" "$CONNS" "$RUNS" "$CG_KIND" "$CPU_METHOD" "$SENDERS" <<'PY'
import json, os, subprocess, sys, time
def out(*c):
    try:
        return subprocess.run(c, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""
print(json.dumps({
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "cores": os.cpu_count(), "count": int(sys.argv[1]), "size": int(sys.argv[2]),
    "connections": int(sys.argv[3]), "runs_per_sender": int(sys.argv[4]),
    "order": "interleaved rounds: " + sys.argv[7],
    "cpu_kind": sys.argv[5], "cpu_method": sys.argv[6],
    "wall_method": {
        "ringmail": "blast --json wall_s (first connection to last reply)",
        "nodemailer": "send.js wall_s (first sendMail to last reply)",
        "postfix": "postqueue -f until the queue is empty (injection and postsuper -H not timed)"},
    "tls": "STARTTLS required, TLS >= 1.2 (sink negotiates 1.3), certificate verified against the test CA",
    "sink": "ringmail sink --threads 1, fresh per run, --stats counts every message",
    "versions": {"postfix": out("postconf", "-d", "-h", "mail_version"), "node": out("node", "--version"),
                 "openssl": out("openssl", "version")},
}))
PY
)
echo
helper report "$RECORDS" "$OUT/compare.json" "$META"
echo
echo "msgs/s: medians, end to end; CPU s/10k: sender CPU (all its processes) per 10,000 msgs;"
echo "rm x: ringmail's figure divided by that sender's (msgs/s, msgs per sender CPU-second)."
echo "raw runs and medians: $OUT/compare.json; logs of this run: $LOGS/"
