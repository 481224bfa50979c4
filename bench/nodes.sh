#!/usr/bin/env bash
# bench/nodes.sh BUILD: figure 10, nodes on one PostgreSQL. 1, 2 and 3
# `ringmail send --db` processes (distinct --node) share one campaign of
# COUNT recipients on one throw-away PostgreSQL (bench/demo.sh's: fsync
# off), delivering to one `ringmail sink` over verified STARTTLS, ISP
# limits unlimited (20 connections per node, no rate). Per run:
#   - aggregate msgs/s: recipients / wall time from the first node's start
#     to the last node's exit;
#   - sender CPU per message: the nodes' own user+system CPU (--json
#     cpu_s, summed) / recipients;
#   - PostgreSQL CPU per recipient: user+system time of every process of
#     the cluster (postmaster, backends, background workers; /proc/PID/stat,
#     the exited backends through the postmaster's cutime+cstime), after
#     the run minus before, / recipients. Taken after the nodes exited, so
#     every statement they caused (claims, arms, results, counts,
#     heartbeats, autovacuum meanwhile) is in it; the import is not (the
#     campaign is imported, vacuumed and checkpointed before);
#   - of it, the client backends' CPU per recipient (the statements the
#     nodes ran: claims, arms, results, heartbeats), sampled every 20 ms
#     by bench/pg_procs.py; the rest is the cluster's own processes (WAL
#     writer, checkpointer, autovacuum).
# Every run is checked: every recipient `sent`. Medians of RUNS rounds, the
# node counts alternated in each round. With OLD=DIR (another build, e.g.
# a worktree of the commit before a change), each run of this build follows
# the same run of OLD's ringmail on a PostgreSQL of its own (migrated by
# it), side by side. Prints a table; writes bench/results/nodes.json
# (every run, medians).
#
# Environment (defaults in brackets): NODES ["1 2 3"], RUNS [3], COUNT
# [100000], DKIM [1: Ed25519 signature; 0: none], TLS [1: STARTTLS verify;
# 0: plaintext], BATCH [send's default], CONNS [20, per node], RATE
# [unlimited: the ISP's msg_rate, shared by the nodes],
# SEND_ARGS [extra send options], PG_SHARED_BUFFERS [1GB], KEEP_RUNS [0;
# 1: every run's campaign stays in the tables], PG_STATS [0; 1: pg_stat_statements
# loaded, the statements by total time printed after each run],
# PG_PROCS [unset; 1: the busiest processes of the cluster printed after
# each run],
# OLD [none: a build directory to run beside this one], PG_CORE [none;
# N: PostgreSQL pinned to CPU N, the nodes and the sink to the others],
# OUT [bench/results/nodes.json].
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
OLD=${OLD:-}
[ -n "$OLD" ] && case "$OLD" in /*) ;; *) OLD=$PWD/$OLD ;; esac
RUNS=${RUNS:-3}
COUNT=${COUNT:-100000}
NODES=${NODES:-1 2 3}
DKIM=${DKIM:-1}
TLS=${TLS:-1}
CONNS=${CONNS:-20}
RATE=${RATE:-unlimited}
PG_STATS=${PG_STATS:-0}
PG_SHARED_BUFFERS=${PG_SHARED_BUFFERS:-1GB}
KEEP_RUNS=${KEEP_RUNS:-0}
OUT=${OUT:-bench/results/nodes.json}
PY=/usr/bin/python3
# PG_CORE=N: PostgreSQL on CPU N alone, the sink and the nodes on the
# others (as in production, where the database has a machine of its own:
# its CPU per recipient is then not inflated by sharing cores with them).
PG_CORE=${PG_CORE:-}
PIN=()
if [ -n "$PG_CORE" ]; then
    others=$("$PY" -c 'import os, sys; print(",".join(str(c) for c in sorted(os.sched_getaffinity(0)) if c != int(sys.argv[1])))' "$PG_CORE")
    [ -n "$others" ] || { echo "nodes.sh: PG_CORE=$PG_CORE leaves no CPU for the nodes" >&2; exit 1; }
    PIN=(taskset -c "$others")
fi
[ -x "$RM" ] || { echo "nodes.sh: $RM not found (make -j2)" >&2; exit 1; }
[ -z "$OLD" ] || [ -x "$OLD/ringmail" ] || { echo "nodes.sh: $OLD/ringmail not found" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
# shellcheck source=tests/e2e/lib.sh
. tests/e2e/lib.sh
e2e_tmpdir
RAW=$E2E_TMP/runs
mkdir -p "$RAW"
make_certs "$E2E_TMP/certs" || exit 1
CERTS=$E2E_TMP/certs

# cluster DIR BIN: a PostgreSQL in DIR migrated by BIN; its URL in PG_URL_<tag>
cluster() {
    start_postgres "$1" || exit 1
    # shared_buffers as a PostgreSQL serving campaigns is set (the default,
    # 128 MB, holds little more than one campaign's rows: every later page
    # came from the kernel's cache, a copy each time)
    psql_q "ALTER SYSTEM SET shared_buffers = '$PG_SHARED_BUFFERS'" >/dev/null
    [ "$PG_STATS" = 1 ] &&
        psql_q "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'" >/dev/null
    _pg_as "'$(pg_bin)/pg_ctl' -D '$PG_DIR/data' -w -t 30 restart" >/dev/null 2>&1 || exit 1
    [ "$PG_STATS" = 1 ] && psql_q "CREATE EXTENSION pg_stat_statements" >/dev/null
    "$2" db migrate --db "$PG_URL" >/dev/null || exit 1
    if [ -n "$PG_CORE" ]; then # the postmaster and every process it forks from now on
        taskset -a -p -c "$PG_CORE" "$(head -1 "$PG_DIR/data/postmaster.pid")" >/dev/null || exit 1
    fi
}
cluster "$E2E_TMP/pg" "$RM"
NEW_DIR=$PG_DIR NEW_URL=$PG_URL
if [ -n "$OLD" ]; then
    cluster "$E2E_TMP/pg-old" "$OLD/ringmail"
    OLD_DIR=$PG_DIR OLD_URL=$PG_URL
fi

# pg_cpu: the cluster's CPU seconds so far (every process, exited backends included).
pg_cpu() {
    "$PY" - "$PG_DIR/data/postmaster.pid" <<'PY'
import os, sys
pm = int(open(sys.argv[1]).readline())
hz = os.sysconf("SC_CLK_TCK")
total = 0
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        s = open("/proc/%s/stat" % p).read()
    except OSError:
        continue
    f = s[s.rindex(")") + 2:].split()  # fields from 3 (state) on
    pid, ppid = int(p), int(f[1])
    if pid == pm:
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])  # utime stime cutime cstime
    elif ppid == pm:
        total += int(f[11]) + int(f[12])
print("%.2f" % (total / hz))
PY
}

PORT=$(free_port)
TLSARGS=()
[ "$TLS" = 1 ] && TLSARGS=(--tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key")
e2e_bg sink "${PIN[@]}" "$RM" sink --listen "127.0.0.81:$PORT" --threads 1 --hostname mx.x.test \
    "${TLSARGS[@]}" # no --stats: its per-address table grows with every run
wait_port 127.0.0.81 "$PORT" 10 "$E2E_BG_PID" || { cat "$E2E_TMP/sink.log" >&2; exit 1; }
POLICY=none
[ "$TLS" = 1 ] && POLICY=verify
cat >"$E2E_TMP/nodes.conf" <<CONF
[global]
tls = $POLICY
retry = 1s
max_age = 1h
[isp x]
domains = a.test b.test c.test d.test e.test
max_connections = $CONNS
msg_rate = $RATE
[route a.test]
server = 127.0.0.81:$PORT
[route b.test]
server = 127.0.0.81:$PORT
[route c.test]
server = 127.0.0.81:$PORT
[route d.test]
server = 127.0.0.81:$PORT
[route e.test]
server = 127.0.0.81:$PORT
CONF
DKIMARGS=()
if [ "$DKIM" = 1 ]; then
    openssl genpkey -algorithm ed25519 -out "$E2E_TMP/dkim.pem" 2>/dev/null
    DKIMARGS=(--dkim-domain sender.test --dkim-selector b --dkim-key "$E2E_TMP/dkim.pem")
fi
printf 'Hello {{first_name|there}},\n\nthis is a ringmail benchmark campaign.\n' >"$E2E_TMP/body.txt"
printf '<p>Hello <b>{{first_name|there}}</b>,</p><p>this is a benchmark.</p>\n' >"$E2E_TMP/body.html"
awk -v n="$COUNT" 'BEGIN {
    split("a.test b.test c.test d.test e.test", d, " ");
    print "email,first_name,city";
    for (i = 1; i <= n; i++) printf "user%d@%s,Name%d,City %d\n", i, d[i % 5 + 1], i % 50, i % 97;
}' >"$E2E_TMP/recipients.csv"

# one_run TAG N BIN DIR URL: a fresh campaign of COUNT recipients sent by N
# nodes (ringmail BIN) at once, on the PostgreSQL in DIR at URL.
one_run() {
    local tag=$1 n=$2 RM=$3 PG_DIR=$4 PG_URL=$5 cid k t0 t1 c0 c1 pids=()
    # Every run on the same tables: the last run's campaign goes first, so
    # the third run (or the 3-node one) does not pay for bigger tables
    # than the first (KEEP_RUNS=1 keeps them).
    if [ "$KEEP_RUNS" != 1 ]; then
        # Whichever of these tables the build's schema has (OLD= may be
        # a build from before claims by range, schema 8, or before the
        # delivery record became attempt and session, schema 9: from then
        # on delivery is a view).
        psql_q "DO \$\$ DECLARE t text; BEGIN
              FOREACH t IN ARRAY ARRAY['recipient', 'claim', 'armed', 'sweep', 'node',
                  'node_lane', 'isp_backoff', 'attempt', 'session', 'delivery'] LOOP
                IF EXISTS (SELECT 1 FROM pg_class
                           WHERE oid = to_regclass('ringmail.' || t) AND relkind = 'r') THEN
                  EXECUTE 'TRUNCATE ringmail.' || t || ' CASCADE';
                END IF;
              END LOOP; END \$\$" >/dev/null || return 1
    fi
    cid=$("$RM" campaign create --db "$PG_URL" --name "$tag" --from news@sender.test \
        --subject "{{first_name|Friend}}, a benchmark" --text "$E2E_TMP/body.txt" \
        --html "$E2E_TMP/body.html" "${DKIMARGS[@]}" 2>/dev/null) || return 1
    "$RM" recipients import --db "$PG_URL" --campaign "$cid" --csv "$E2E_TMP/recipients.csv" \
        >/dev/null 2>&1 || return 1
    psql_q "VACUUM ANALYZE ringmail.recipient" >/dev/null
    psql_q "CHECKPOINT" >/dev/null
    [ "$PG_STATS" = 1 ] && psql_q "SELECT pg_stat_statements_reset(), pg_stat_reset()" >/dev/null
    sleep 1
    # Every process of the cluster, sampled: the client backends' CPU
    # apart from the background processes' (bench/pg_procs.py).
    "$PY" bench/pg_procs.py "$PG_DIR/data/postmaster.pid" "$RAW/$tag.procs.json" "$PG_URL" &
    local sampler=$!
    sleep 0.3
    c0=$(pg_cpu)
    t0=$(date +%s.%N)
    for ((k = 1; k <= n; k++)); do
        # shellcheck disable=SC2086 # SEND_ARGS: words
        "${PIN[@]}" "$RM" send --db "$PG_URL" --campaign "$cid" --config "$E2E_TMP/nodes.conf" \
            --ca "$CERTS/ca.pem" --node "$tag-n$k" --journal "$E2E_TMP/$tag-n$k.journal" \
            --json ${BATCH:+--batch $BATCH} ${SEND_ARGS:-} \
            >"$RAW/$tag-n$k.json" 2>"$RAW/$tag-n$k.err" &
        pids+=($!)
    done
    local rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    t1=$(date +%s.%N)
    sleep 0.5 # the postmaster reaps the nodes' backends
    c1=$(pg_cpu)
    kill "$sampler"
    wait "$sampler"
    if [ -n "${PG_PROCS:-}" ]; then # diagnostics: the busiest processes
        "$PY" -c 'import json, sys
for x in json.load(open(sys.argv[1]))[:12]:
    print("      %5d ticks  %s" % (x["ticks"], x["title"]))' "$RAW/$tag.procs.json"
    fi
    local sent
    sent=$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $cid AND state = 'sent'")
    if [ "$PG_STATS" = 1 ]; then
        psql_q "SELECT calls, rows, round(total_exec_time::numeric, 0) AS ms,
            round((total_exec_time * 1000 / $COUNT)::numeric, 2) AS us_per_rcpt,
            left(regexp_replace(query, '\s+', ' ', 'g'), 110)
            FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 14" >"$RAW/$tag.stmts"
        sed 's/^/      /' "$RAW/$tag.stmts"
        # in place (HOT) or moved to another page (every index written again)
        psql_q "SELECT 'recipient updates: ' || n_tup_upd || ', in place (HOT): ' || n_tup_hot_upd
            FROM pg_stat_user_tables WHERE relid = 'ringmail.recipient'::regclass" | sed 's/^/      /'
    fi
    "$PY" - "$RAW" "$tag" "$n" "$COUNT" "$t0" "$t1" "$c0" "$c1" "$sent" "$rc" <<'PY'
import json, sys
raw, tag, n, count, t0, t1, c0, c1, sent, rc = sys.argv[1:]
n, count, sent = int(n), int(count), int(sent)
nodes = []
for k in range(1, n + 1):
    try:
        nodes.append(json.load(open("%s/%s-n%d.json" % (raw, tag, k))))
    except (OSError, ValueError):
        nodes.append({})
wall = float(t1) - float(t0)
cpu = sum(x.get("cpu_s", 0) for x in nodes)
pg = float(c1) - float(c0)
# client backends: a title naming the client ("[local]", "host(port)");
# the rest (walwriter, checkpointer, autovacuum, ...) are the cluster's own
import re
procs = json.load(open("%s/%s.procs.json" % (raw, tag)))
be = sum(p["cpu_s"] for p in procs if re.search(r"\[local\]|\(\d+\)", p["title"]))
# by role (bench/pg_procs.py): the claimer's and the results writer's
# backends (the issue's "claim update, result update, delivery row") and
# the heartbeat connection's (arms, heartbeats, takeovers, counts)
by_role = {k: sum(p["cpu_s"] for p in procs if p.get("role") == k) * 1e6 / count
           for k in ("claims", "results", "node")}
row = {"tag": tag, "nodes": n, "count": count, "sent": sent, "exit_ok": rc == "0",
       "wall_s": wall, "msgs_per_s": count / wall, "sender_cpu_s": cpu,
       "sender_us_per_msg": cpu * 1e6 / count, "pg_cpu_s": pg, "pg_us_per_rcpt": pg * 1e6 / count,
       "backend_cpu_s": be, "backend_us_per_rcpt": be * 1e6 / count,
       "claims_us_per_rcpt": by_role["claims"], "results_us_per_rcpt": by_role["results"],
       "claim_result_us_per_rcpt": by_role["claims"] + by_role["results"],
       "node_conn_us_per_rcpt": by_role["node"],
       "per_node_accepted": [x.get("accepted") for x in nodes],
       "ok": sent == count and rc == "0"}
with open("%s/%s.row.json" % (raw, tag), "w") as f:
    json.dump(row, f)
print("  %-10s %d node%s %7.0f msgs/s  sender %5.1f us/msg  PostgreSQL %5.1f us/rcpt, backends %5.1f"
      " (claims %.1f + results %.1f, node %.1f)  (%.1f s, PG %.2f CPU s)%s" % (
    tag, n, " " if n == 1 else "s", row["msgs_per_s"], row["sender_us_per_msg"], row["pg_us_per_rcpt"],
    row["backend_us_per_rcpt"], by_role["claims"], by_role["results"], by_role["node"], wall, pg,
    "" if row["ok"] else "  FAILED: %d of %d sent, exit %s" % (sent, count, rc)))
PY
}

echo "10. nodes on one PostgreSQL: $COUNT recipients per campaign, sink over $([ "$TLS" = 1 ] && echo "verified STARTTLS" || echo plaintext), DKIM $([ "$DKIM" = 1 ] && echo Ed25519 || echo off), $CONNS connections per node"
for ((r = 1; r <= RUNS; r++)); do
    for n in $NODES; do
        [ -n "$OLD" ] && one_run "old-r$r-$n" "$n" "$OLD/ringmail" "$OLD_DIR" "$OLD_URL"
        one_run "r$r-$n" "$n" "$RM" "$NEW_DIR" "$NEW_URL"
    done
done
"$PY" - "$RAW" "$OUT" "$RUNS" $NODES <<'PY'
import glob, json, os, statistics, sys
raw, out, runs, nodes = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(x) for x in sys.argv[4:]]
res = {"runs": [], "medians": {}}
for p in sorted(glob.glob(os.path.join(raw, "*.row.json"))):
    res["runs"].append(json.load(open(p)))
print("  %-6s %5s  %12s  %18s  %22s  %18s  %20s  %s" % ("build", "nodes", "msgs/s", "sender CPU/msg", "PostgreSQL CPU/rcpt", "backends/rcpt", "claims+results/rcpt", "runs ok"))
status = 0
for build in ("old", "new"):
    for n in nodes:
        rows = [r for r in res["runs"] if r["nodes"] == n and r["tag"].startswith("old-") == (build == "old")]
        if not rows:
            continue
        good = [r for r in rows if r["ok"]]
        if len(good) < len(rows):
            status = 1
        if not good:
            print("  %-6s %5d  FAILED" % (build, n))
            continue
        m = {k: statistics.median(r[k] for r in good) for k in ("msgs_per_s", "sender_us_per_msg", "pg_us_per_rcpt", "backend_us_per_rcpt", "claim_result_us_per_rcpt", "node_conn_us_per_rcpt", "wall_s")}
        res["medians"]["%s-%d" % (build, n)] = m
        print("  %-6s %5d  %12.0f  %15.1f us  %19.1f us  %15.1f us  %17.1f us  %d/%d" % (build, n, m["msgs_per_s"], m["sender_us_per_msg"], m["pg_us_per_rcpt"], m["backend_us_per_rcpt"], m["claim_result_us_per_rcpt"], len(good), len(rows)))
json.dump(res, open(out, "w"), indent=1)
sys.exit(status)
PY
