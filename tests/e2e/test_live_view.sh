#!/usr/bin/env bash
# ringmail send's live view and its one vocabulary of counts, as a person
# sees them:
#   1. a campaign on a terminal (script(1)): the status block shows total,
#      %, ETA; a log line printed meanwhile (a SIGHUP reload) is never glued
#      onto it; the run ends with the final block and a clean newline; the
#      exit table counts the campaign's recipients; conn_first marks one
#      delivery row per connection the sink counted; every metric the
#      Grafana dashboard queries is exported by --metrics
#   2. stderr to a file, a campaign that defers and retries: whole status
#      lines every 10 s (no \r), "waiting for retry N" from the database,
#      the loud line for tls_verify_failed, deferrals past max_age end
#      `expired` in the database and in the exit table, and the exit
#      table's recipients equal the campaign's size after retries
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
T_START=$(now_ms)
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null
SINK_PORT=$(free_port)

# screen FILE: a typescript as a terminal shows it (the few sequences the
# status block uses: \r, \n, ESC[2K, ESC[K, ESC[nA), one line per screen line.
screen() {
    "$E2E_PY" - "$1" <<'PY'
import re, sys
data = open(sys.argv[1], "rb").read().decode("utf-8", "replace")
data = data.split("\n", 1)[1] if data.startswith("Script started") else data
rows, r, c = [[]], 0, 0
i = 0
while i < len(data):
    ch = data[i]
    if ch == "\x1b":
        m = re.match(r"\x1b\[(\d*)([A-Za-z])", data[i:])
        if m:
            n, op = int(m.group(1) or 1), m.group(2)
            if op == "A":
                r = max(0, r - n)
            elif op == "K":
                if (m.group(1) or "0") == "2":
                    rows[r] = []
                else:
                    del rows[r][c:]
            i += m.end()
            continue
    if ch == "\r":
        c = 0
    elif ch == "\n":
        r += 1
        if r == len(rows):
            rows.append([])
    else:
        row = rows[r]
        while len(row) < c:
            row.append(" ")
        if c < len(row):
            row[c] = ch
        else:
            row.append(ch)
        c += 1
    i += 1
for row in rows:
    print("".join(row).rstrip())
PY
}

# ============================================================ 1. a terminal
start_sink a 127.0.0.81
cat >"$E2E_TMP/a.conf" <<CONF
[global]
tls = none
[isp a]
domains = a.test
max_connections = 2
msg_rate = 150/s
[route a.test]
server = 127.0.0.81:$SINK_PORT
CONF
N1=450
C1=$(new_campaign live "$N1" a.test)
MPORT=$(free_port)
script -qfec "exec $(printf '%q ' "$RM" send --db "$PG_URL" --campaign "$C1" --config "$E2E_TMP/a.conf" \
    --node v1 --journal "$E2E_TMP/v1.journal" --metrics "127.0.0.1:$MPORT")" "$E2E_TMP/v1.tty" \
    >/dev/null 2>&1 &
SCRIPT_PID=$!
e2e_cleanup "e2e_kill $SCRIPT_PID"
wait_port 127.0.0.1 "$MPORT" 10
sleep 1.2
# A log line while the block is up: the reload's (SIGHUP to the send under script).
descendants() { local p; for p in $(pgrep -P "$1"); do echo "$p"; descendants "$p"; done; }
# script(1) runs the command through $SHELL -c; the exec makes the send that
# shell's process, and the name check makes sure a shell that did not exec
# (dash as $SHELL) is never the one signalled: its death would hang up the
# terminal under the send.
SEND_PID=$(for p in $(descendants "$SCRIPT_PID"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = ringmail ] || continue
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- '--node v1 ' && echo "$p"; done | head -1)
check "terminal: the send's process found under script(1)" test -n "$SEND_PID"
[ -n "$SEND_PID" ] && kill -HUP "$SEND_PID"
"$E2E_PY" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:'"$MPORT"'/metrics", timeout=5).read().decode())' \
    >"$E2E_TMP/v1.metrics" 2>"$E2E_TMP/v1.metrics.err"
for _ in $(seq 1 200); do _pid_alive "$SCRIPT_PID" || break; sleep 0.1; done
wait "$SCRIPT_PID"
check_eq "terminal: the send exits 0" 0 "$?"
screen "$E2E_TMP/v1.tty" >"$E2E_TMP/v1.screen"
check_grep "terminal: the block shows done / total, % and ETA while it runs" \
    "^[0-9,]+ / $N1 recipients final \([0-9.]+%\)  [0-9,]+ msgs/s  ETA [0-9hms-]+  accepted " "$E2E_TMP/v1.tty"
check_grep "terminal: the reload's line is on a line of its own" \
    "^ringmail send: config reloaded from " "$E2E_TMP/v1.screen"
check_no_grep "terminal: no log line glued onto the status" \
    "/ [0-9,]+ recipients final.*ringmail|ringmail.*[0-9,]+ / [0-9,]+ recipients final" "$E2E_TMP/v1.screen"
check "terminal: the final block (100.0%), then a clean newline, then the exit table" "$E2E_PY" -c '
import sys
lines = open(sys.argv[1]).read().split("\n")
i = max(k for k, l in enumerate(lines) if " recipients final (" in l and " / " in l and not l.startswith("ringmail"))
assert lines[i].startswith("%d / %d recipients final (100.0%%)" % (int(sys.argv[2]), int(sys.argv[2]))), lines[i]
assert lines[i + 1].startswith("recipients %s: accepted %s," % (sys.argv[2], sys.argv[2])), lines[i + 1]
' "$E2E_TMP/v1.screen" "$N1"
check_grep "terminal: the exit table names the campaign's size" "^campaign $C1: $N1 recipients" "$E2E_TMP/v1.screen"
check_grep "terminal: TLS resumption's denominator in words" \
    "^resumed%: resumed TLS handshakes of all TLS handshakes \(one per connection with TLS\)" "$E2E_TMP/v1.screen"
stop_sink a
check_eq "conn_first: one delivery row per connection the sink counted" "$(sj a connections)" \
    "$(psql_q "SELECT count(*) FILTER (WHERE conn_first) FROM ringmail.delivery WHERE campaign_id = $C1")"
check_eq "conn_first: every attempt a connection carried says true or false" 0 \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C1 AND conn_first IS NULL")"

# The dashboard: every metric its PromQL names is exported.
check "grafana: the dashboard is JSON with panels" "$E2E_PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["panels"] and all(t["expr"] for p in d["panels"] for t in p["targets"])' contrib/grafana/ringmail.json
check "grafana: every metric the dashboard queries is exported by send --metrics" "$E2E_PY" -c '
import json, re, sys
d = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
exprs += [v.get("query", "") for v in d["templating"]["list"] if v.get("type") == "query"]
used = set(n for e in exprs for n in re.findall(r"\bringmail_[a-z_]+", e))
exported = set(re.findall(r"^(ringmail_[a-z_]+)[{ ]", open(sys.argv[2]).read(), re.M))
missing = sorted(used - exported)
print("used:", len(used), "exported:", len(exported), "missing:", missing)
assert len(used) >= 12 and not missing' contrib/grafana/ringmail.json "$E2E_TMP/v1.metrics"
check_grep "metrics: the campaign's recipients carry its id" \
    "^ringmail_recipients_total\{campaign=\"$C1\",state=\"accepted\"\} " "$E2E_TMP/v1.metrics"
check_grep "metrics: remaining in the database, by campaign" \
    "^ringmail_campaign_remaining\{campaign=\"$C1\"\} [0-9]+" "$E2E_TMP/v1.metrics"

# ============================================================ 2. a log file, retries, expiry
start_sink b 127.0.0.82 --defer-pct 25 --seed 3
start_sink d 127.0.0.83 --defer-pct 100
e2e_bg sink.v "$RM" sink --listen "127.0.0.84:$SINK_PORT" --threads 1 --hostname v.test \
    --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key"
wait_port 127.0.0.84 "$SINK_PORT" 10
cat >"$E2E_TMP/b.conf" <<CONF
[global]
tls = none
retry = 3s
max_age = 14s
[isp b]
domains = b.test
[isp d]
domains = d.test
[isp v]
domains = v.test
tls = verify
[route b.test]
server = 127.0.0.82:$SINK_PORT
[route d.test]
server = 127.0.0.83:$SINK_PORT
[route v.test]
server = 127.0.0.84:$SINK_PORT
CONF
C2=$(new_campaign mix 60 b.test)
psql_q "INSERT INTO ringmail.recipient (campaign_id, address)
    SELECT $C2, 'd' || g || '@d.test' FROM generate_series(1, 5) g
    UNION ALL SELECT $C2, 'v' || g || '@v.test' FROM generate_series(1, 4) g" >/dev/null
N2=69
# List mode beside it: five recipients that always defer, waiting in the
# pool's retry heap (retry 6s, max_age 13s: attempts at 0, 6 and 12 s).
cat >"$E2E_TMP/l.conf" <<CONF
[global]
tls = none
retry = 6s
max_age = 13s
[isp d]
domains = d.test
[route d.test]
server = 127.0.0.83:$SINK_PORT
CONF
for i in 1 2 3 4 5; do echo "l$i@d.test"; done >"$E2E_TMP/l.rcpts"
timeout 40 "$RM" send --recipients "$E2E_TMP/l.rcpts" --config "$E2E_TMP/l.conf" \
    >"$E2E_TMP/l.out" 2>"$E2E_TMP/l.err" &
LIST_PID=$!
timeout 40 "$RM" send --db "$PG_URL" --campaign "$C2" --config "$E2E_TMP/b.conf" --node v2 \
    --journal "$E2E_TMP/v2.journal" >"$E2E_TMP/v2.out" 2>"$E2E_TMP/v2.err"
check_eq "log file: the send exits 0" 0 "$?"
check_no_grep "log file: no carriage return, no escape sequence" $'\r|\x1b' "$E2E_TMP/v2.err"
check_grep "log file: a whole status line (after 10 s)" \
    "^ringmail send: [0-9,]+ / $N2 recipients final \([0-9.]+%\)" "$E2E_TMP/v2.err"
check_grep "log file: waiting for retry, counted in the database, with the next time" \
    "^ringmail send: .*  waiting for retry [0-9]+ \(next in [0-9]+s\)" "$E2E_TMP/v2.err"
check_grep "log file: why nothing moves: every due recipient waits for its retry" \
    "^ringmail send:   all due recipients wait for their retry \(next in [0-9]+s\)" "$E2E_TMP/v2.err"
check_grep "log file: the loud line for tls_verify_failed, with max_age and what to check" \
    "^ringmail send:   v: [0-9]+ deferrals are tls_verify_failed: they will keep deferring until max_age \(14s\); check the CA" \
    "$E2E_TMP/v2.err"
check_grep "log file: the last status line at exit says 100%" \
    "^ringmail send: $N2 / $N2 recipients final \(100.0%\)" "$E2E_TMP/v2.err"
wait "$LIST_PID"
check_eq "list mode: the send exits 0" 0 "$?"
check_grep "list mode: waiting for retry, from the pool's retry heap" \
    "^ringmail send: 0 / 5 recipients final \(0.0%\)  .*  waiting for retry 5 \(next in [0-9]+s\)" "$E2E_TMP/l.err"
check_grep "list mode: the ISP says why it waits" \
    "^ringmail send:   d: all due recipients wait for their retry \(next in [0-9]+s\)" "$E2E_TMP/l.err"
check_grep "list mode: the exit line says expired" \
    "^recipients 5: accepted 0, rejected 0, failed 0, expired 5, ambiguous 0, suppressed 0; 15 attempts, 15 deferrals" \
    "$E2E_TMP/l.out"
EXP=$(count_state "$C2" expired)
ACC=$(count_state "$C2" sent)
check_eq "expired: the always-deferred and the unverifiable end 'expired' in the database" 9 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C2 AND state = 'expired' AND address !~ '@b.test'")"
check_eq "expired: none is written 'failed'" 0 "$(count_state "$C2" failed)"
check_eq "expired: every b.test recipient accepted after its retries (or expired)" 60 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C2 AND address ~ '@b.test' AND state IN ('sent', 'expired')")"
check_ge "retries: some b.test recipients took more than one attempt" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C2 AND state = 'sent' AND attempts > 1")"
check_grep "exit table: recipients = the campaign's size (not claims), states as the database has them" \
    "^recipients $N2: accepted $ACC, rejected 0, failed 0, expired $EXP, ambiguous 0, suppressed 0, waiting for retry 0; [0-9]+ attempts, [1-9][0-9]* deferrals" \
    "$E2E_TMP/v2.out"
check_eq "delivery rows: the expiry is the final row, outcome expired" "$EXP" \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C2 AND final AND outcome = 'expired'")"

echo "# runtime: $(($(now_ms) - T_START)) ms"
e2e_finish
