#!/usr/bin/env bash
# A stop has a bound, TLS to PostgreSQL is refused however it is asked
# for, output files are private, the journal stays small.
#   1. the database blackholed (a proxy that stops forwarding): SIGTERM
#      ends `send` within the documented 10 s, exit 1, with a true message
#      (results wait in the journal; nothing said to go back to the queue);
#      a second signal ends it at once; the next start loses nothing
#   2. a 30 s lock on the recipient table + SIGTERM: a bounded exit, and the
#      next start of the node settles everything (0 lost, 0 duplicates)
#   3. PGSSLMODE=require and a service file entry with sslmode=require are
#      refused, each naming where it came from
#   4. --records is created 0600; a symbolic link at its path is refused
#   5. the journal is compacted during a 20,000-recipient run (10,000
#      under ASan; it stays far below the ~55 bytes per attempt it would
#      reach), and a kill -9 after a compaction still loses nothing
#   6. the database stopped: SIGTERM ends send within the bound, saying so
#   7. `timeout 1 ringmail send`: timeout(1) sends its SIGTERM to the child
#      and then to the whole process group; that is one stop, not two (the
#      run finishes what is in flight and prints its summary)
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null
PG_TCP="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres"

SINK_PORT=$(free_port)
start_sink x 127.0.0.75 --latency-ms 20

cat >"$E2E_TMP/c.conf" <<CONF
[global]
tls = none
[isp x]
domains = x.test
max_connections = 20
[route x.test]
server = 127.0.0.75:$SINK_PORT
CONF

# audit ID: campaign_audit (lib.sh) against the sink x.
audit() { campaign_audit "$1" "${SINK_STATS[x]}"; }
# wait_sent ID N: until N recipients are sent (at most 30 s)
wait_sent() {
    for _ in $(seq 1 300); do
        [ "$(count_state "$1" sent)" -ge "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
# wait_exit PID LIMIT: seconds (one decimal) until PID exits, killing it
# (-9) after LIMIT s; its exit status in WAIT_RC (137 when killed).
wait_exit() {
    local pid=$1 limit=$2 t0 t1
    t0=$(date +%s.%N)
    for ((i = 0; i < limit * 10; i++)); do
        _pid_alive "$pid" || break
        sleep 0.1
    done
    _pid_alive "$pid" && kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    WAIT_RC=$?
    t1=$(date +%s.%N)
    WAIT_S=$("$E2E_PY" -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$t1")
}
# finish ID NODE: run the node to the end on the direct URL.
finish() {
    timeout 120 "$RM" send --db "$PG_URL" --campaign "$1" --config "$E2E_TMP/c.conf" \
        --node "$2" --journal "$E2E_TMP/$2.journal" --window 40 --json >"$E2E_TMP/$2.final.out" \
        2>"$E2E_TMP/$2.final.err"
}

# A TCP proxy in front of PostgreSQL that forwards until FILE exists, then
# swallows everything in both directions (a blackholed database: the
# connections stay open, nothing answers).
cat >"$E2E_TMP/proxy.py" <<'PY'
import os, socket, sys, threading
listen, target, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen))
srv.listen(64)
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            if not os.path.exists(flag):
                b.sendall(d)
    except OSError:
        pass
while True:
    c, _ = srv.accept()
    u = socket.create_connection(("127.0.0.1", target))
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
PY
PROXY_PORT=$(free_port)
BLACKHOLE=$E2E_TMP/blackhole
e2e_bg proxy "$E2E_PY" "$E2E_TMP/proxy.py" "$PROXY_PORT" "$PG_PORT" "$BLACKHOLE"
wait_port 127.0.0.1 "$PROXY_PORT" 10 "$E2E_BG_PID"
PROXY_URL="host=127.0.0.1 port=$PROXY_PORT user=postgres dbname=postgres"

# ============================================================ 1. blackholed database
CB=$(new_campaign bh 4000)
rm -f "$BLACKHOLE"
"$RM" send --db "$PROXY_URL" --campaign "$CB" --config "$E2E_TMP/c.conf" --node bh \
    --journal "$E2E_TMP/bh.journal" --window 40 >"$E2E_TMP/bh.out" 2>"$E2E_TMP/bh.err" &
PID=$!
wait_sent "$CB" 200
touch "$BLACKHOLE"
sleep 2
kill -TERM "$PID"
wait_exit "$PID" 30
echo "# blackholed database: exit $WAIT_RC after ${WAIT_S} s"
check_le "blackholed database: SIGTERM ends send within the 10 s bound (+1 s)" 11 "${WAIT_S%.*}"
check_eq "blackholed database: exit 1 (work left)" 1 "$WAIT_RC"
check_grep "blackholed database: the message says what waits in the journal for the next start" \
    "[0-9]+ results? waits? in the journal .*bh.journal for the next start of node bh" "$E2E_TMP/bh.err"
check_no_grep "blackholed database: it does not claim claims went back to the queue" \
    "go back to the queue|went back to the queue" "$E2E_TMP/bh.err"

# the same with a second SIGTERM: it ends at once
"$RM" send --db "$PROXY_URL" --campaign "$CB" --config "$E2E_TMP/c.conf" --node bh2 \
    --journal "$E2E_TMP/bh2.journal" --window 40 >"$E2E_TMP/bh2.out" 2>"$E2E_TMP/bh2.err" &
PID=$!
rm -f "$BLACKHOLE"
wait_sent "$CB" "$(($(count_state "$CB" sent) + 200))"
touch "$BLACKHOLE"
sleep 2
kill -TERM "$PID"
sleep 1
kill -TERM "$PID"
wait_exit "$PID" 30
echo "# blackholed database, second SIGTERM 1 s after the first: exit $WAIT_RC ${WAIT_S} s after it"
check_le "a second signal ends send at once (within 1 s)" 1 "${WAIT_S%.*}"
check_eq "a second signal: exit 1" 1 "$WAIT_RC"
check_grep "a second signal: the message says the journal keeps the outcomes" \
    "second signal .*exiting now; every body that went out and every outcome is in the journal" \
    "$E2E_TMP/bh2.err"
rm -f "$BLACKHOLE"
sleep 11 # the nodes' leases (10 s) run out: bh2 is taken over by bh's restart, or restarts itself
finish "$CB" bh
check_eq "blackholed database: the next start of node bh finishes (exit 0)" 0 "$?"
finish "$CB" bh2
check_eq "blackholed database: the next start of node bh2 finishes (exit 0)" 0 "$?"
read -r twice silent lost <<<"$(audit "$CB")"
echo "# blackholed: $(count_state "$CB" sent) sent, $(count_state "$CB" ambiguous) ambiguous, $twice accepted twice"
check_eq "blackholed database: every recipient final after the restarts" 0 "$(nonfinal "$CB")"
check_eq "blackholed database: no silent duplicate" 0 "$silent"
check_eq "blackholed database: nothing lost" 0 "$lost"

# ============================================================ 2. a 30 s table lock
CL=$(new_campaign lk 4000)
"$RM" send --db "$PG_URL" --campaign "$CL" --config "$E2E_TMP/c.conf" --node lk \
    --journal "$E2E_TMP/lk.journal" --window 40 >"$E2E_TMP/lk.out" 2>"$E2E_TMP/lk.err" &
PID=$!
wait_sent "$CL" 200
psql "$PG_URL" -X -q -c "BEGIN; LOCK TABLE ringmail.recipient IN ACCESS EXCLUSIVE MODE;
    SELECT pg_sleep(30); COMMIT" >/dev/null 2>&1 &
LOCKER=$!
sleep 2
kill -TERM "$PID"
wait_exit "$PID" 45
echo "# 30 s table lock: exit $WAIT_RC after ${WAIT_S} s"
check_le "30 s table lock: SIGTERM ends send within the 10 s bound (+1 s)" 11 "${WAIT_S%.*}"
check_eq "30 s table lock: exit 1 (work left)" 1 "$WAIT_RC"
check_grep "30 s table lock: the message says what waits in the journal" \
    "results? waits? in the journal .*lk.journal for the next start of node lk" "$E2E_TMP/lk.err"
wait "$LOCKER" 2>/dev/null
finish "$CL" lk
check_eq "30 s table lock: the next start of node lk finishes (exit 0)" 0 "$?"
check_ge "30 s table lock: the next start writes the outcomes the journal kept" 1 \
    "$(jget "$E2E_TMP/lk.final.out" db.recovered_results)"
read -r twice silent lost <<<"$(audit "$CL")"
echo "# table lock: $(count_state "$CL" sent) sent, $(count_state "$CL" ambiguous) ambiguous, $twice accepted twice"
check_eq "30 s table lock: every recipient final" 0 "$(nonfinal "$CL")"
check_eq "30 s table lock: no duplicate at all" 0 "$twice"
check_eq "30 s table lock: nothing lost" 0 "$lost"

# ============================================================ 3. TLS asked for outside the URL
PGSSLMODE=require "$RM" db migrate --db "$PG_URL" >"$E2E_TMP/ssl1.out" 2>"$E2E_TMP/ssl1.err"
check_eq "PGSSLMODE=require: refused (exit 1)" 1 "$?"
check_grep "PGSSLMODE=require: the reason names PGSSLMODE" \
    "sslmode=require \(from the environment \(PGSSLMODE\)\): this build cannot use TLS" "$E2E_TMP/ssl1.err"
cat >"$E2E_TMP/pg_service.conf" <<SVC
[rmtls]
host=127.0.0.1
port=$PG_PORT
user=postgres
dbname=postgres
sslmode=require
SVC
PGSERVICEFILE=$E2E_TMP/pg_service.conf "$RM" db migrate --db "service=rmtls" \
    >"$E2E_TMP/ssl2.out" 2>"$E2E_TMP/ssl2.err"
check_eq "a service file entry with sslmode=require: refused (exit 1)" 1 "$?"
check_grep "a service file entry with sslmode=require: the reason names the service" \
    "sslmode=require \(from service rmtls" "$E2E_TMP/ssl2.err"
PGSERVICEFILE=$E2E_TMP/pg_service.conf PGSERVICE=rmtls "$RM" db migrate --db "dbname=postgres" \
    >"$E2E_TMP/ssl3.out" 2>"$E2E_TMP/ssl3.err"
check_eq "PGSERVICE naming such an entry: refused (exit 1)" 1 "$?"
PGSSLMODE=prefer "$RM" db migrate --db "$PG_URL" >/dev/null 2>"$E2E_TMP/ssl4.err"
check_eq "PGSSLMODE=prefer still connects (without TLS, as before)" 0 "$?"

# ============================================================ 4. --records
printf 'r1@x.test\nr2@x.test\n' >"$E2E_TMP/list"
(umask 022 && "$RM" send --recipients "$E2E_TMP/list" --config "$E2E_TMP/c.conf" \
    --records "$E2E_TMP/records.json" >/dev/null 2>"$E2E_TMP/rec.err")
check_eq "--records: the run succeeds" 0 "$?"
check_eq "--records: created 0600 (umask 022)" 600 "$(stat -c %a "$E2E_TMP/records.json")"
echo "precious" >"$E2E_TMP/precious"
ln -s "$E2E_TMP/precious" "$E2E_TMP/records.link"
"$RM" send --recipients "$E2E_TMP/list" --config "$E2E_TMP/c.conf" \
    --records "$E2E_TMP/records.link" >/dev/null 2>"$E2E_TMP/rec2.err"
check_ne "--records through a symbolic link: refused" 0 "$?"
check_grep "--records through a symbolic link: says why" "symbolic link: refused" "$E2E_TMP/rec2.err"
check_eq "--records through a symbolic link: the link's target is untouched" precious \
    "$(cat "$E2E_TMP/precious")"
ln -s "$E2E_TMP/precious" "$E2E_TMP/journal.link"
"$RM" send --db "$PG_URL" --campaign 1 --config "$E2E_TMP/c.conf" --node jl \
    --journal "$E2E_TMP/journal.link" >/dev/null 2>"$E2E_TMP/jl.err"
check_ne "--journal through a symbolic link: refused" 0 "$?"
check_grep "--journal through a symbolic link: says why" "symbolic link: refused" "$E2E_TMP/jl.err"
check_eq "--journal through a symbolic link: the link's target is untouched" precious \
    "$(cat "$E2E_TMP/precious")"

# ============================================================ 5. the journal stays small
# Under ASan (make asan: RINGMAIL_SAN=1) half of it: the restart after the
# kill -9 sent its 12,000 in 137 to 259 s there, against a 300 s bound.
N=20000
KILL_AT=8000
if [ -n "${RINGMAIL_SAN:-}" ]; then
    N=10000
    KILL_AT=4000
fi
CJ=$(new_campaign jr "$N")
JR=$E2E_TMP/jr.journal
MAX=0
SHRANK=0
# sample NODE-PID: the journal's size every 50 ms while the process runs
sample() {
    local pid=$1 last=0 sz
    while _pid_alive "$pid"; do
        sz=$(stat -c %s "$JR" 2>/dev/null || echo 0)
        [ "$sz" -gt "$MAX" ] && MAX=$sz
        [ "$sz" -lt "$last" ] && [ "$last" -gt 100000 ] && SHRANK=$((SHRANK + 1))
        last=$sz
        [ -n "${2:-}" ] && [ "$SHRANK" -ge 1 ] && [ "$(count_state "$CJ" sent)" -ge "$2" ] && return 0
        sleep 0.05
    done
}
"$RM" send --db "$PG_URL" --campaign "$CJ" --config "$E2E_TMP/c.conf" --node jr \
    --journal "$JR" --window 200 >"$E2E_TMP/jr.1.out" 2>"$E2E_TMP/jr.1.err" &
PID=$!
sample "$PID" "$KILL_AT"
# the node's lock moved with the compacted file: a second process is refused
"$RM" send --db "$PG_URL" --campaign "$CJ" --config "$E2E_TMP/c.conf" --node jr \
    --journal "$JR" >/dev/null 2>"$E2E_TMP/jr.dup.err"
DUP_RC=$?
SENT_AT_KILL=$(count_state "$CJ" sent)
kill -9 "$PID"
wait "$PID" 2>/dev/null
echo "# journal: kill -9 with $SENT_AT_KILL sent, after $SHRANK compaction(s) seen; largest ${MAX} bytes"
check_ge "journal: compacted during the run (its size went down)" 1 "$SHRANK"
check_eq "journal: after a compaction a second process of the node is still refused (exit 2)" 2 "$DUP_RC"
check_grep "journal: ... because the compacted journal is locked" \
    "node jr is already running on this host: another ringmail process holds its journal" \
    "$E2E_TMP/jr.dup.err"
# The restart sends the rest (the bound is for a hang: under ASan on a
# loaded 2-core machine the restart of 12,000 took up to 259 s).
t0=$(date +%s)
timeout 300 "$RM" send --db "$PG_URL" --campaign "$CJ" --config "$E2E_TMP/c.conf" --node jr \
    --journal "$JR" --window 200 --json >"$E2E_TMP/jr.2.json" 2>"$E2E_TMP/jr.2.err" &
PID=$!
sample "$PID"
wait "$PID"
rc=$?
echo "# journal: the restart after kill -9: exit $rc after $(($(date +%s) - t0)) s"
check_eq "journal: the restart after kill -9 finishes (exit 0)" 0 "$rc"
echo "# journal over $N recipients: largest ${MAX} bytes (uncompacted it reaches about $((N * 55)))"
check_le "journal: stays under 400,000 bytes over $N recipients" 400000 "$MAX"
read -r twice silent lost <<<"$(audit "$CJ")"
echo "# journal kill: $(count_state "$CJ" sent) sent, $(count_state "$CJ" ambiguous) ambiguous, $twice accepted twice"
check_eq "journal: every recipient final after a kill -9 past a compaction" 0 "$(nonfinal "$CJ")"
check_eq "journal: no silent duplicate" 0 "$silent"
check_eq "journal: nothing lost" 0 "$lost"
check_eq "journal: sent + ambiguous = all" "$N" \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $CJ AND state IN ('sent', 'ambiguous')")"

# ============================================================ 6. the database stopped
CS=$(new_campaign st 4000)
"$RM" send --db "$PG_URL" --campaign "$CS" --config "$E2E_TMP/c.conf" --node st \
    --journal "$E2E_TMP/st.journal" --window 40 >"$E2E_TMP/st.out" 2>"$E2E_TMP/st.err" &
PID=$!
wait_sent "$CS" 200
stop_postgres "$E2E_TMP/pg"
sleep 1
kill -TERM "$PID"
wait_exit "$PID" 30
echo "# database stopped: exit $WAIT_RC after ${WAIT_S} s"
check_le "database stopped: SIGTERM ends send within the 10 s bound (+1 s)" 11 "${WAIT_S%.*}"
check_eq "database stopped: exit 1 (work left)" 1 "$WAIT_RC"
check_grep "database stopped: the message says what waits in the journal" \
    "results? waits? in the journal .*st.journal for the next start of node st" "$E2E_TMP/st.err"

# ============================================================ 7. timeout(1)'s double SIGTERM
# A sink slow enough (1 s a reply) that a stop waits for what is in flight.
SLOW_PORT=$(free_port)
e2e_bg slowsink "$RM" sink --listen "127.0.0.76:$SLOW_PORT" --threads 1 --latency-ms 1000
wait_port 127.0.0.76 "$SLOW_PORT" 10 "$E2E_BG_PID"
sed "s/^server = .*/server = 127.0.0.76:$SLOW_PORT/" "$E2E_TMP/c.conf" >"$E2E_TMP/slow.conf"
seq 1 2000 | sed 's/$/@x.test/' >"$E2E_TMP/to.list"
timeout --preserve-status -s TERM 8 "$RM" send --json --config "$E2E_TMP/slow.conf" \
    --from news@sender.test --helo sender.test --recipients "$E2E_TMP/to.list" \
    >"$E2E_TMP/to.out" 2>"$E2E_TMP/to.err"
RC=$?
tr '\r' '\n' <"$E2E_TMP/to.err" | grep -i "signal\|stop\|interrupted" | sed 's/^/# timeout: /'
check_eq "timeout(1): exit 1 (recipients left unsent)" 1 "$RC"
check_grep "timeout(1): the SIGTERM stops the run gracefully" \
    "Terminated: stopping; what is in flight finishes" "$E2E_TMP/to.err"
check_no_grep "timeout(1): its second copy of the SIGTERM is not taken as a second signal" \
    "a second signal \(" "$E2E_TMP/to.err"
check_ge "timeout(1): the run's summary is printed with what was accepted" 1 \
    "$(jget "$E2E_TMP/to.out" accepted)"
# The same sender repeating its signal 0.1 s later (what timeout(1) does
# when the first copy has been read already) is the same stop; a second
# signal 1 s later ends the process at once (section 1).
"$RM" send --json --config "$E2E_TMP/slow.conf" --from news@sender.test --helo sender.test \
    --recipients "$E2E_TMP/to.list" >"$E2E_TMP/tw.out" 2>"$E2E_TMP/tw.err" &
PID=$!
sleep 3
kill -TERM "$PID"
sleep 0.1
kill -TERM "$PID"
wait_exit "$PID" 30
check_eq "the same sender's SIGTERM twice within 0.5 s: exit 1" 1 "$WAIT_RC"
check_grep "the same sender's SIGTERM twice within 0.5 s: said to be the same stop" \
    "Terminated again from pid [0-9]+ \(as timeout\(1\) sends it\): the same stop, still stopping" \
    "$E2E_TMP/tw.err"
check_no_grep "the same sender's SIGTERM twice within 0.5 s: not a second signal" \
    "a second signal \(" "$E2E_TMP/tw.err"

e2e_finish
