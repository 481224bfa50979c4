#!/usr/bin/env bash
# ringmail send end to end: per-ISP settings no other test checks, all on
# loopback with [route DOMAIN] sections (no DNS), one ringmail sink per ISP
# (127.0.0.7x / 127.0.0.8x on one shared port):
#   1. conn_rate: max_msgs_per_conn 1 + conn_rate 20/s, no msg_rate -> the
#      sink counts one connection per message and a delivered rate within
#      10% of 20/s (both bounds); the same run without conn_rate is faster
#      than the upper bound, so the bound would catch an ignored conn_rate
#   2. per-ISP timeout: a sink that stalls at MAIL, the ISP's timeout 1s
#      (defaults 30 s): every attempt deferred with a timeout_ reason, all
#      final (expired after max_age), the run ends long before 30 s
#   3. per-ISP TLS policy in one run: verify (STARTTLS, the test CA, the
#      certificate's IP name) -> accepted, TLS 1.2/1.3, verify ok, resumed
#      handshakes; required to a server without STARTTLS -> tls_not_offered,
#      never plaintext; opportunistic to one -> plaintext, tls none, WARNING
# Nothing leaves 127.0.0.0/8.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup

T_START=$(date +%s%3N)
now_ms() { date +%s%3N; }
PORT=$(free_port) # every sink listens on 127.0.0.x:PORT
PL=$E2E_TMP/pl.py

# ---------------------------------------------------------------- python helpers
cat >"$PL" <<'PY'
"""Checks for test_pool_limits.sh: python3 pl.py COMMAND ARGS... (exit 0 = pass)."""
import json, re, sys

def rows(path):
    return [json.loads(l) for l in open(path, errors="replace") if l.strip()]

def addrs(path):
    return [l.strip() for l in open(path) if l.strip() and not l.startswith("#")]

def once(stats_file, rcpt_file):
    """Every address of rcpt_file delivered exactly once, nothing else."""
    d = json.load(open(stats_file)).get("deliveries", {})
    want = addrs(rcpt_file)
    bad = {w: d.get(w, 0) for w in want if d.get(w, 0) != 1}
    extra = sorted(set(d) - set(want))
    print("want %d, delivered %d distinct, %d not exactly once, %d unexpected"
          % (len(want), len(d), len(bad), len(extra)))
    print("not exactly once (first 10):", sorted(bad.items())[:10])
    print("unexpected (first 10):", extra[:10])
    assert want and not bad and not extra

def rate(stats_file):
    """Prints the sink's delivered rate, (n-1)*1000/(last-first), as an integer (0: no data)."""
    s = json.load(open(stats_file))
    n, first, last = s.get("accepted_rcpts", 0), s.get("first_accept_ms", 0), s.get("last_accept_ms", 0)
    if n < 10 or first <= 0 or last <= first:
        print(0)
        return
    print(int(round((n - 1) * 1000.0 / (last - first))))

def rate_within(stats_file, limit, tol):
    """Delivered rate within tol (a fraction) of limit, above and below."""
    s = json.load(open(stats_file))
    n, first, last = s.get("accepted_rcpts", 0), s.get("first_accept_ms", 0), s.get("last_accept_ms", 0)
    print("accepted %s first_accept_ms %s last_accept_ms %s" % (n, first, last))
    assert n > 10 and first > 0 and last > first, "not enough data"
    r = (n - 1) * 1000.0 / (last - first)
    limit, tol = float(limit), float(tol)
    print("measured %.2f/s over %d ms; want %.1f..%.1f/s" % (r, last - first, limit * (1 - tol), limit * (1 + tol)))
    assert limit * (1 - tol) <= r <= limit * (1 + tol)

def each(records, pattern, expr):
    """Every record of a recipient matching pattern satisfies expr; there is one."""
    rs = [r for r in rows(records) if re.search(pattern, r.get("rcpt", ""))]
    bad = [r for r in rs if not eval(expr, {}, {"d": r})]
    print("%d records, %d failing %s; first: %s" % (len(rs), len(bad), expr, bad[:3]))
    assert rs and not bad

def finals(records, rcpt_file, expr):
    """Every recipient of rcpt_file has exactly one final record, and it satisfies expr."""
    want = addrs(rcpt_file)
    fin = {}
    for r in rows(records):
        if r.get("final") is True:
            fin.setdefault(r.get("rcpt"), []).append(r)
    bad = [w for w in want if len(fin.get(w, [])) != 1 or not eval(expr, {}, {"d": fin[w][0]})]
    print("%d recipients, %d bad: %s" % (len(want), len(bad), [(w, fin.get(w)) for w in bad[:3]]))
    assert want and not bad

if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
PY
pl() { "$E2E_PY" "$PL" "$@"; }

declare -A SINK_PID=() SINK_STATS=()
# start_sink NAME IP [sink options...]: a sink on IP:PORT, stats every 100 ms.
start_sink() {
    local name=$1 ip=$2
    shift 2
    SINK_STATS[$name]=$E2E_TMP/sink.$name.json
    e2e_bg "sink.$name" "$RM" sink --listen "$ip:$PORT" --threads 1 --hostname "$name.test" \
        --stats "${SINK_STATS[$name]}" --stats-interval-ms 100 "$@"
    SINK_PID[$name]=$E2E_BG_PID
    wait_port "$ip" "$PORT" 10 "$E2E_BG_PID" || cat "$E2E_TMP/sink.$name.log" >&2
}
# stop_sink NAME: SIGTERM (the sink writes its final stats), wait.
stop_sink() { e2e_kill "${SINK_PID[$1]}"; }
# sj NAME FIELD: a field of a sink's stats.
sj() { jget "${SINK_STATS[$1]}" "$2"; }

# send_run NAME LIMIT_S ARGS...: ringmail send with --json and --records under
# timeout LIMIT_S; sets RC and ELAPSED_MS; output in $E2E_TMP/NAME.{json,err,records}.
send_run() {
    local name=$1 limit=$2 t0
    shift 2
    t0=$(now_ms)
    timeout -k 2 "$limit" "$RM" send --json --records "$E2E_TMP/$name.records" \
        --from bounce@sender.test --helo sender.test "$@" \
        >"$E2E_TMP/$name.json" 2>"$E2E_TMP/$name.err"
    RC=$?
    ELAPSED_MS=$(($(now_ms) - t0))
    echo "# send $name: exit $RC after ${ELAPSED_MS} ms: $(head -c 2000 "$E2E_TMP/$name.json" | tr '\n' ' ')"
    [ "$RC" -ne 0 ] && tail -n 5 "$E2E_TMP/$name.err" | sed 's/^/#   stderr: /'
    return 0
}
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

# ================================================================ 1. conn_rate
# One message per connection, so conn_rate alone sets the delivered rate.
start_sink crate 127.0.0.71
start_sink cfree 127.0.0.72
cat >"$E2E_TMP/crate.conf" <<CONF
[global]
tls = none
retry = 1s
max_age = 10s

[isp crate]
domains = crate.test
max_msgs_per_conn = 1
conn_rate = 20/s

[route crate.test]
server = 127.0.0.71:$PORT
CONF
# The control: the same ISP without conn_rate.
cat >"$E2E_TMP/cfree.conf" <<CONF
[global]
tls = none
retry = 1s
max_age = 10s

[isp cfree]
domains = cfree.test
max_msgs_per_conn = 1

[route cfree.test]
server = 127.0.0.72:$PORT
CONF
R1=$E2E_TMP/crate.rcpts
recipients "$R1" c crate.test 60
R1F=$E2E_TMP/cfree.rcpts
recipients "$R1F" c cfree.test 60
send_run crate 15 --recipients "$R1" --config "$E2E_TMP/crate.conf"
RC_CRATE=$RC
ELAPSED_CRATE=$ELAPSED_MS
send_run cfree 10 --recipients "$R1F" --config "$E2E_TMP/cfree.conf"
RC_CFREE=$RC
sleep 0.3 # a few stats intervals
stop_sink crate
stop_sink cfree
check_eq "conn_rate: exit 0, every recipient final" 0 "$RC_CRATE"
check_eq "conn_rate: 60 accepted in the summary" 60 "$(jget "$E2E_TMP/crate.json" accepted)"
check "conn_rate: every recipient accepted exactly once by the sink" \
    pl once "${SINK_STATS[crate]}" "$R1"
check_eq "conn_rate: the sink counted 60 connections (max_msgs_per_conn 1)" 60 "$(sj crate connections)"
check_eq "conn_rate: at most 1 message per session" 1 "$(sj crate max_msgs_per_session)"
check "conn_rate: delivered rate within 10% of conn_rate 20/s (18..22/s)" \
    pl rate_within "${SINK_STATS[crate]}" 20 0.10
# 59 intervals at 20/s: about 2.95 s; an ignored conn_rate takes a fraction of that.
check_range "conn_rate: the run took about 60/20 s (2.5..8 s)" 2500 8000 "$ELAPSED_CRATE"
CFREE_RATE=$(pl rate "${SINK_STATS[cfree]}")
echo "# without conn_rate: $CFREE_RATE/s delivered"
check_eq "control without conn_rate: exit 0" 0 "$RC_CFREE"
check_eq "control without conn_rate: 60 connections" 60 "$(sj cfree connections)"
check_ge "control without conn_rate: faster than 22/s (the upper bound above catches an ignored conn_rate)" \
    23 "$CFREE_RATE"

# ================================================================ 2. per-ISP timeout
# The sink stops answering at MAIL; only the ISP's timeout (1s) ends each
# attempt, the default timeouts are 30 s (no --timeout-ms).
start_sink stall 127.0.0.73 --fault stall
cat >"$E2E_TMP/stall.conf" <<CONF
[global]
tls = none
retry = 1s
max_age = 2s

[isp stall]
domains = stall.test
timeout = 1s

[route stall.test]
server = 127.0.0.73:$PORT
CONF
R2=$E2E_TMP/stall.rcpts
recipients "$R2" s stall.test 3
# Bounded at 25 s: were the ISP's timeout ignored, the first attempt alone
# would wait 30 s (and this run would end 124).
send_run stall 25 --recipients "$R2" --config "$E2E_TMP/stall.conf"
sleep 0.2
stop_sink stall
REC=$E2E_TMP/stall.records
check_eq "timeout: exit 0, every recipient final" 0 "$RC"
check_eq "timeout: 3 expired in the summary" 3 "$(jget "$E2E_TMP/stall.json" expired)"
check_eq "timeout: nothing accepted" 0 "$(jget "$E2E_TMP/stall.json" accepted)"
check_ge "timeout: the stalled sink saw connections" 1 "$(sj stall connections)"
# A temporary failure is recorded deferred, or expired on the attempt that
# passes max_age (the final one).
check "timeout: every attempt's record has a timeout_ reason, deferred (expired when final)" \
    pl each "$REC" '@stall\.test$' \
    'str(d.get("reason", "")).startswith("timeout_") and d.get("outcome") == ("expired" if d.get("final") else "deferred")'
check "timeout: each attempt gave up after about the ISP's 1 s (transaction_ms 900..5000)" \
    pl each "$REC" '@stall\.test$' '900 <= d.get("transaction_ms", -1) <= 5000'
check "timeout: every recipient has one final record, expired with a timeout_ reason" \
    pl finals "$REC" "$R2" 'd.get("outcome") == "expired" and str(d.get("reason", "")).startswith("timeout_")'
check_ge "timeout: at least one attempt per recipient" 3 "$(jcount "$REC")"
check_le "timeout: the run ends well before the 30 s default (< 15 s)" 15000 "$ELAPSED_MS"

# ================================================================ 3. per-ISP TLS policy
TLS=(--tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key")
start_sink tlsv 127.0.0.81 "${TLS[@]}"
start_sink tlsreq 127.0.0.82 "${TLS[@]}" --no-starttls
start_sink tlsopp 127.0.0.83 "${TLS[@]}" --no-starttls
# The certificate names IP 127.0.0.81, which a route to that literal verifies.
cat >"$E2E_TMP/tls.conf" <<CONF
[global]
retry = 1s
max_age = 2s

[isp verified]
domains = verify.test
tls = verify
max_connections = 2
max_msgs_per_conn = 2

[isp strict]
domains = required.test
tls = required

[isp lax]
domains = opportunistic.test
tls = opportunistic

[route verify.test]
server = 127.0.0.81:$PORT

[route required.test]
server = 127.0.0.82:$PORT

[route opportunistic.test]
server = 127.0.0.83:$PORT
CONF
R3=$E2E_TMP/tls.rcpts
R3V=$E2E_TMP/tlsv.rcpts
R3R=$E2E_TMP/tlsreq.rcpts
R3O=$E2E_TMP/tlsopp.rcpts
recipients "$R3V" v verify.test 20
recipients "$R3R" r required.test 5
recipients "$R3O" o opportunistic.test 5
cat "$R3V" "$R3R" "$R3O" >"$R3"
send_run tls 20 --recipients "$R3" --config "$E2E_TMP/tls.conf" --ca "$CERTS/ca.pem"
sleep 0.2
stop_sink tlsv
stop_sink tlsreq
stop_sink tlsopp
REC=$E2E_TMP/tls.records
OUT=$E2E_TMP/tls.json
sed 's/^/#   stderr: /' "$E2E_TMP/tls.err" | head -n 10
check_eq "tls: exit 0, every recipient final" 0 "$RC"
# A: verify
check_eq "verify: 20 accepted (ISP summary)" 20 "$(jget "$OUT" isps.verified.accepted)"
check "verify: every recipient accepted exactly once by the STARTTLS sink" \
    pl once "${SINK_STATS[tlsv]}" "$R3V"
check "verify: records show TLS 1.2 or 1.3 and verify ok" pl each "$REC" '@verify\.test$' \
    'd.get("outcome") == "accepted" and d.get("tls") in ("TLSv1.2", "TLSv1.3") and d.get("verify") == "ok"'
check_ge "verify: several connections (max_msgs_per_conn 2)" 5 "$(jget "$OUT" isps.verified.connections)"
check_ge "verify: resumed handshakes > 0 in the ISP's TLS counts" 1 "$(jget "$OUT" isps.verified.tls_resumed)"
check_ge "verify: the sink counted resumed handshakes too" 1 "$(sj tlsv tls_resumed)"
check_ge "verify: some records say resumed" 1 \
    "$(jcount "$REC" 'd.get("isp") == "verified" and d.get("resumed") is True')"
check_eq "verify: no plaintext connection" 0 "$(jget "$OUT" isps.verified.tls_none)"
# B: required, no STARTTLS offered
check "required: every recipient final, not accepted, reason tls_not_offered" \
    pl finals "$REC" "$R3R" 'd.get("outcome") != "accepted" and d.get("reason") == "tls_not_offered"'
check "required: every attempt tls_not_offered, deferred (expired when final)" \
    pl each "$REC" '@required\.test$' \
    'd.get("reason") == "tls_not_offered" and d.get("outcome") == ("expired" if d.get("final") else "deferred")'
check_eq "required: 0 accepted (ISP summary)" 0 "$(jget "$OUT" isps.strict.accepted)"
check_ge "required: the sink without STARTTLS was connected to" 1 "$(sj tlsreq connections)"
check_eq "required: the sink received 0 messages (never plaintext)" 0 "$(sj tlsreq messages)"
check_eq "required: the sink accepted 0 recipients" 0 "$(sj tlsreq accepted_rcpts)"
# C: opportunistic, no STARTTLS offered
check_eq "opportunistic: 5 accepted (ISP summary)" 5 "$(jget "$OUT" isps.lax.accepted)"
check "opportunistic: every recipient accepted exactly once by the sink" \
    pl once "${SINK_STATS[tlsopp]}" "$R3O"
check "opportunistic: records say no TLS" pl each "$REC" '@opportunistic\.test$' \
    'd.get("outcome") == "accepted" and d.get("tls") == "none"'
check_eq "opportunistic: the sink made no TLS handshake" 0 "$(sj tlsopp tls_handshakes)"
# README, TLS policy: opportunistic sends in plaintext "with a WARNING on stderr".
check_grep "opportunistic: at start, a WARNING names the ISP (lax) whose mail may go in plaintext" \
    "WARNING: TLS policy 'opportunistic' for ISP lax: mail goes IN PLAINTEXT" "$E2E_TMP/tls.err"
check_grep "opportunistic: a WARNING names the destination that got plaintext" \
    'WARNING: opportunistic\.test: 127\.0\.0\.83 .*has no working STARTTLS; mail for it goes IN PLAINTEXT' \
    "$E2E_TMP/tls.err"
check_eq "opportunistic: that WARNING once per destination, not per message" 1 \
    "$(grep -c 'WARNING: opportunistic\.test' "$E2E_TMP/tls.err")"
check_no_grep "no plaintext WARNING for the verify or required ISPs" \
    'WARNING: (verify|required)\.test|for ISPs? [^:]*(verified|strict)' "$E2E_TMP/tls.err"
# Every connection that got a handshake or a ready session is in exactly one
# TLS count: connections opened = full + resumed + none for the verify ISP
# (all its sessions got ready), as in the sink's handshake count.
check_eq "verify: TLS counts add up to the connections opened" \
    "$(jget "$OUT" isps.verified.connections)" \
    "$(($(jget "$OUT" isps.verified.tls_full) + $(jget "$OUT" isps.verified.tls_resumed) + $(jget "$OUT" isps.verified.tls_none)))"
check_eq "verify: the sink's handshakes equal ringmail's full + resumed" "$(sj tlsv tls_handshakes)" \
    "$(($(jget "$OUT" isps.verified.tls_full) + $(jget "$OUT" isps.verified.tls_resumed)))"

cat "$E2E_TMP"/*.err >"$E2E_TMP/all-send.stderr" 2>/dev/null
check_no_grep "no sanitizer report from any ringmail send run" 'Sanitizer|runtime error:' \
    "$E2E_TMP/all-send.stderr"
echo "# runtime: $(($(now_ms) - T_START)) ms"
e2e_finish
