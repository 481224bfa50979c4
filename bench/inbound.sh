#!/usr/bin/env bash
# bench/inbound.sh BUILD - `ringmail inbound` under load (make bench, step 8).
#
# A throw-away PostgreSQL (tests/e2e/lib.sh start_postgres: fsync off, as
# every bench here), a campaign of COUNT recipients, and COUNT DSNs (5.1.1,
# one per recipient, Postfix's layout) pushed through `ringmail inbound` by
# bench/inbound_load.py over CONNS connections (each waits for its final
# reply before its next message, as an MTA does). Per run, a new campaign:
#   events/s         COUNT / the client's wall time (first connect to last reply)
#   CPU us/event     inbound's user+system CPU over the run (/proc/PID/stat)
#   db wait us/event inbound's writer: wall time inside the store minus its
#                    own CPU there (waiting for PostgreSQL), from its summary
#   PG CPU us/event  the cluster's processes' user+system CPU over the run
#   mean batch       messages per commit (the group commit at work)
# Every run must end with COUNT bounce rows for its campaign (nothing
# lost). Medians of RUNS runs; bench/results/inbound.json. Three sets:
#   fast            the bench cluster as everywhere here (fsync off)
#   durable         fsync and synchronous_commit on (a real server's commit)
#   durable-batch1  the same with --batch 1: one commit per message
#
# Environment: RUNS [3], COUNT [10000], CONNS [50], BATCH [256]
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}
COUNT=${COUNT:-10000}
CONNS=${CONNS:-50}
BATCH=${BATCH:-256}
OUT=bench/results
mkdir -p "$OUT/runs"
. tests/e2e/lib.sh
e2e_tmpdir
PY=${E2E_PY:-/usr/bin/python3}

start_postgres "$E2E_TMP/pg" || { echo "inbound bench: postgres does not start"; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null || exit 1
SECRET=$E2E_TMP/secret
head -c 48 /dev/urandom >"$SECRET"
chmod 600 "$SECRET"
cat >"$E2E_TMP/fb.conf" <<CONF
[feedback]
return_path = bounces.sender.test
secret_file = $SECRET
CONF

TCK=$(getconf CLK_TCK)
# cpu_ticks PID...: user+system ticks of those processes
cpu_ticks() {
    local p t=0 stat
    for p in "$@"; do
        stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        # shellcheck disable=SC2086
        set -- $stat
        t=$((t + ${12} + ${13}))
    done
    echo "$t"
}
# pg_pids: the postmaster and its children
pg_pids() {
    local pm p
    pm=$(head -n 1 "$PG_DIR/data/postmaster.pid")
    echo "$pm"
    for p in /proc/[0-9]*; do
        [ "$(awk '{print $4}' "$p/stat" 2>/dev/null)" = "$pm" ] && echo "${p#/proc/}"
    done
}

STATUS=0
# run_set NAME BATCH: RUNS runs, each with a new campaign; medians into $OUT/inbound.json under NAME
run_set() {
    local name=$1 batch=$2 i c port log pid c0 c1 p0 p1 rows pgp
    echo "  $name: --batch $batch, $COUNT DSNs over $CONNS connections, $RUNS runs"
    for i in $(seq 1 "$RUNS"); do
        c=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
            VALUES ('inbound-bench-$name-$i', 'news@sender.test', 'Hello', 'Hi.') RETURNING id")
        psql_q "INSERT INTO ringmail.recipient (campaign_id, address)
            SELECT $c, 'r' || g || '@x.test' FROM generate_series(1, $COUNT) g" >/dev/null
        psql_q "SELECT id, address FROM ringmail.recipient WHERE campaign_id = $c" | tr '\t' ' ' \
            >"$E2E_TMP/ids"
        port=$(free_port)
        log=$OUT/runs/inbound-$name.$i.log
        "$RM" inbound --listen "127.0.0.1:$port" --db "$PG_URL" --config "$E2E_TMP/fb.conf" \
            --batch "$batch" --max-per-client "$CONNS" 2>"$log" &
        pid=$!
        wait_port 127.0.0.1 "$port" 10 "$pid" || { echo "inbound does not start: $(cat "$log")"; exit 1; }
        mapfile -t pgp < <(pg_pids)
        c0=$(cpu_ticks "$pid")
        p0=$(cpu_ticks "${pgp[@]}")
        "$PY" bench/inbound_load.py --port "$port" --secret "$SECRET" --campaign "$c" \
            --ids "$E2E_TMP/ids" --conns "$CONNS" >"$OUT/runs/inbound-$name.$i.json"
        c1=$(cpu_ticks "$pid")
        p1=$(cpu_ticks "${pgp[@]}")
        kill -TERM "$pid"
        wait "$pid"
        rows=$(psql_q "SELECT count(*) FROM ringmail.feedback_event WHERE campaign_id = $c
            AND kind = 'bounce'")
        "$PY" - "$OUT/runs/inbound-$name.$i.json" "$log" $((c1 - c0)) $((p1 - p0)) "$TCK" "$rows" \
            "$COUNT" <<'PY'
import json, re, sys
f, log, cpu, pgcpu, tck, rows, count = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
d = json.load(open(f))
s = dict(re.findall(r"(\w+)=([\d.]+)", [l for l in open(log) if " summary " in l][-1]))
d.update(events_per_s=count / d["wall_s"], cpu_us_per_event=cpu / tck * 1e6 / count,
         db_wait_us_per_event=float(s["db_wait_ms"]) * 1e3 / count,
         store_us_per_event=float(s["store_ms"]) * 1e3 / count,
         pg_cpu_us_per_event=pgcpu / tck * 1e6 / count,
         mean_batch=int(s["committed"]) / max(1, int(s["commits"])), rows=rows,
         lost=count - rows)
json.dump(d, open(f, "w"))
print("    run: %6.0f events/s  inbound CPU %5.0f us/event  store %5.0f us/event (db wait %5.0f)"
      "  PG CPU %5.0f us/event  mean batch %5.1f  rows %d/%d" % (
          d["events_per_s"], d["cpu_us_per_event"], d["store_us_per_event"],
          d["db_wait_us_per_event"], d["pg_cpu_us_per_event"], d["mean_batch"], rows, count))
sys.exit(0 if rows == count and d["ok"] == count else 1)
PY
        [ $? -eq 0 ] || { echo "    run $i FAILED: rows or answers short (log: $log)"; STATUS=1; }
    done
    "$PY" - "$OUT" "$name" "$RUNS" "$COUNT" "$CONNS" "$batch" <<'PY'
import json, statistics, sys
out, name, runs, count, conns, batch = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
rs = []
for i in range(1, runs + 1):
    try:
        d = json.load(open("%s/runs/inbound-%s.%d.json" % (out, name, i)))
    except (OSError, ValueError):
        continue
    if d.get("lost") == 0 and d.get("ok") == count:
        rs.append(d)
keys = ["events_per_s", "cpu_us_per_event", "store_us_per_event", "db_wait_us_per_event",
        "pg_cpu_us_per_event", "mean_batch"]
med = {k: statistics.median(r[k] for r in rs) for k in keys} if rs else {}
try:
    all_ = json.load(open(out + "/inbound.json"))
except (OSError, ValueError):
    all_ = {}
all_[name] = {"count": count, "conns": conns, "batch": batch, "runs": rs, "medians": med}
json.dump(all_, open(out + "/inbound.json", "w"), indent=1)
if med:
    print("    median of %d: %.0f DSNs/s; per event: inbound CPU %.0f us, store %.0f us (database"
          " wait %.0f us), PostgreSQL CPU %.0f us; %.1f messages per commit" % (
              len(rs), med["events_per_s"], med["cpu_us_per_event"], med["store_us_per_event"],
              med["db_wait_us_per_event"], med["pg_cpu_us_per_event"], med["mean_batch"]))
PY
}

rm -f "$OUT/inbound.json"
run_set fast "$BATCH"
# Durable: the same cluster restarted with fsync and synchronous_commit on
# (the bench's other runs keep them off): what the group commit is for.
stop_postgres "$PG_DIR"
_pg_as "'$(pg_bin)/pg_ctl' -D '$PG_DIR/data' -w -t 30 -l '$PG_DIR/pg.log' \
    -o \"-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1\" start" >/dev/null 2>&1 ||
    { echo "inbound bench: postgres does not restart"; exit 1; }
run_set durable "$BATCH"
run_set durable-batch1 1
exit "$STATUS"
