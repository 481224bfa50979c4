#!/usr/bin/env bash
# Bounded pool (issue 11, items 4 and 5), all on loopback: dnsmasq serves
# the MX records, ringmail sinks the mail.
#   1. 20,000 one-recipient domains (no MX: each its own exchanger, from a
#      hosts file; one sink), max_connections
#      200: an idle session yields its slot at once to a waiting destination
#      of its lane, and the DNS burst is capped, so the run ends in < 30 s
#      with no dns_* failure and every recipient accepted exactly once
#      (before: 2 s of linger per slot, about 200 s, thousands of dns_*).
#   2. a lane of max_connections 1 and 10 one-recipient domains: each next
#      destination starts within ~100 ms of the previous one's message
#      (before: 2 s of linger each).
#   3. [route r.test] server = mx.route.test:PORT: the host name is resolved
#      through --resolver on the ring (before: getaddrinfo with the system's
#      resolver, which does not know it: route_invalid).
#   4. a DNS burst through a forwarding dnsmasq with --dns-forward-max 20:
#      2,000 domains, no spurious dns_* failure.
#   5. an exchanger whose address lookup times out (its zone forwarded to a
#      UDP port that never answers): dns_tempfail, not dns_no_address.
#   6. SIGTERM during the DNS burst of 20,000 domains: the lookups cancelled
#      by the stop are no attempt (no dns_* record), every recipient is
#      accounted for, and nothing leaks (a sanitizer build says so).
# Nothing leaves 127.0.0.0/8: dnsmasq has no upstream but its loopback peer.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
e2e_require dnsmasq || { e2e_finish; exit 1; }

T_START=$(date +%s%3N)
MX_PORT=$(free_port)
DNS_PORT=$(free_port)
UP_PORT=$(free_port) # upstream dnsmasq of the forwarding one (section 4)
BH_PORT=$(free_port) # UDP port that swallows queries (section 5)
FW_PORT=$(free_port) # forwarding dnsmasq with a small --dns-forward-max
N_BIG=${BOUNDED_DOMAINS:-20000}

# ---------------------------------------------------------------- servers
# A UDP "DNS server" that never answers (section 5).
cat >"$E2E_TMP/blackhole.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    s.recvfrom(4096)
PY
e2e_bg blackhole "$E2E_PY" "$E2E_TMP/blackhole.py" "$BH_PORT"
# Every uN.d.test has an A record (127.0.0.51) from a hosts file and no MX,
# so it is its own exchanger (a hosts file is hashed by dnsmasq: 20,000
# mx-host lines are scanned per query and made dnsmasq the bottleneck).
# vN.y.test: one MX host, mx.y.test (127.0.0.53), for section 2.
HOSTS=$E2E_TMP/hosts
for ((i = 1; i <= N_BIG; i++)); do echo "127.0.0.51 u$i.d.test"; done >"$HOSTS"
MXCONF=$E2E_TMP/mx.conf
for ((i = 1; i <= 10; i++)); do echo "mx-host=v$i.y.test,mx.y.test,10"; done >"$MXCONF"
e2e_bg dnsmasq dnsmasq --keep-in-foreground --port="$DNS_PORT" --listen-address=127.0.0.1 \
    --bind-interfaces --no-resolv --no-hosts --local=/test/ --local-ttl=300 --pid-file= \
    --addn-hosts="$HOSTS" --address=/y.test/127.0.0.53 \
    --host-record=mx.route.test,127.0.0.52 --conf-file="$MXCONF" \
    --mx-host=tmo.test,mx.slow.test,10 --server=/slow.test/127.0.0.1#"$BH_PORT"
check "dnsmasq serves the test zone" wait_port 127.0.0.1 "$DNS_PORT" 10 "$E2E_BG_PID"

FWCONF=$E2E_TMP/fw.conf
for ((i = 1; i <= 2000; i++)); do echo "mx-host=w$i.f.test,mx.f.test,10"; done >"$FWCONF"
e2e_bg upstream dnsmasq --keep-in-foreground --port="$UP_PORT" --listen-address=127.0.0.1 \
    --bind-interfaces --no-resolv --no-hosts --local=/test/ --pid-file= \
    --address=/f.test/127.0.0.54 --conf-file="$FWCONF"
check "upstream dnsmasq listens" wait_port 127.0.0.1 "$UP_PORT" 10 "$E2E_BG_PID"
e2e_bg forwarder dnsmasq --keep-in-foreground --port="$FW_PORT" --listen-address=127.0.0.1 \
    --bind-interfaces --no-resolv --no-hosts --pid-file= --dns-forward-max=20 \
    --server=/f.test/127.0.0.1#"$UP_PORT"
check "forwarding dnsmasq (--dns-forward-max 20) listens" wait_port 127.0.0.1 "$FW_PORT" 10 \
    "$E2E_BG_PID"

SINK_PORT=$MX_PORT
# shellcheck source=tests/e2e/pool_lib.sh
. "$(dirname "$0")/pool_lib.sh"
RESOLVER=(--resolver "127.0.0.1:$DNS_PORT" --mx-port "$MX_PORT")
dns_failures() { grep -c '"reason": *"dns_' "$1" 2>/dev/null; }

# ================================================================ 1. 20,000 domains
start_sink big 127.0.0.51
cat >"$E2E_TMP/big.conf" <<'CONF'
[global]
retry = 1s
max_age = 20s
tls = none

[isp bulk]
domains = *.d.test
max_connections = 200
CONF
RB=$E2E_TMP/big.rcpts
for ((i = 1; i <= N_BIG; i++)); do echo "r@u$i.d.test"; done >"$RB"
SEND_TIMEOUT=30 send_run big --recipients "$RB" --config "$E2E_TMP/big.conf" "${RESOLVER[@]}"
# The sink writes its statistics every 100 ms: on a loaded machine the last
# write may come later. Wait for it (bounded), rather than a fixed 0.3 s.
for _ in $(seq 1 50); do
    [ "$(sj big accepted_rcpts 2>/dev/null)" = "$N_BIG" ] && break
    sleep 0.1
done
check_eq "$N_BIG domains: exit 0 within 30 s" 0 "$RC"
check_range "$N_BIG domains: finished in < 30 s" 0 29999 "$ELAPSED_MS"
check_eq "$N_BIG domains: all accepted" "$N_BIG" "$(jget "$E2E_TMP/big.json" accepted)"
check_eq "$N_BIG domains: no dns_* failure in the records" 0 "$(dns_failures "$E2E_TMP/big.records")"
check_range "$N_BIG domains: sink peak_concurrent <= max_connections 200" 1 200 \
    "$(sj big peak_concurrent)"
check "$N_BIG domains: every recipient accepted exactly once" pc once "${SINK_STATS[big]}" "$RB"
stop_sink big

# ================================================================ 2. yield at once
start_sink one 127.0.0.53
cat >"$E2E_TMP/one.conf" <<'CONF'
[global]
retry = 1s
max_age = 20s
tls = none

[isp narrow]
domains = *.y.test
max_connections = 1
CONF
RY=$E2E_TMP/one.rcpts
for ((i = 1; i <= 10; i++)); do echo "r@v$i.y.test"; done >"$RY"
SEND_TIMEOUT=8 send_run one --recipients "$RY" --config "$E2E_TMP/one.conf" "${RESOLVER[@]}"
sleep 0.3
check_eq "one slot, 10 domains: exit 0" 0 "$RC"
check_eq "one slot, 10 domains: 10 accepted" 10 "$(jget "$E2E_TMP/one.json" accepted)"
check_eq "one slot, 10 domains: 10 connections, one after the other" 10 \
    "$(jget "$E2E_TMP/one.json" isps.narrow.connections)"
# 10 sessions in turn; a 2 s linger between them would take 18 s.
check_range "one slot: the next destination starts within ~100 ms (whole run < 1.5 s)" 0 1499 \
    "$ELAPSED_MS"
check "one slot: every recipient accepted exactly once" pc once "${SINK_STATS[one]}" "$RY"
stop_sink one

# ================================================================ 3. [route] host name
start_sink route 127.0.0.52
cat >"$E2E_TMP/route.conf" <<CONF
[global]
retry = 500ms
max_age = 3s
tls = none

[route r.test]
server = mx.route.test:$MX_PORT
CONF
RR=$E2E_TMP/route.rcpts
recipients "$RR" r r.test 5
SEND_TIMEOUT=20 send_run route --recipients "$RR" --config "$E2E_TMP/route.conf" "${RESOLVER[@]}"
sleep 0.3
check_eq "route by host name: exit 0" 0 "$RC"
check_eq "route by host name: 5 accepted" 5 "$(jget "$E2E_TMP/route.json" accepted)"
check "route by host name: mx.route.test (127.0.0.52) through --resolver" pc each \
    "$E2E_TMP/route.records" '@r\.test$' \
    'd["outcome"] == "accepted" and d.get("mx") == "mx.route.test" and d.get("addr", "").startswith("127.0.0.52")'
check "route by host name: every recipient accepted exactly once" pc once "${SINK_STATS[route]}" "$RR"
stop_sink route

# ================================================================ 4. DNS burst, forwarder
start_sink fw 127.0.0.54
cat >"$E2E_TMP/fw.conf" <<'CONF'
[global]
retry = 1s
max_age = 30s
tls = none

[isp fwd]
mx = mx.f.test
max_connections = 200
CONF
RF=$E2E_TMP/fw.rcpts
for ((i = 1; i <= 2000; i++)); do echo "r@w$i.f.test"; done >"$RF"
SEND_TIMEOUT=40 send_run fw --recipients "$RF" --config "$E2E_TMP/fw.conf" \
    --resolver "127.0.0.1:$FW_PORT" --mx-port "$MX_PORT"
sleep 0.3
check_eq "forward-max 20, 2,000 domains: exit 0" 0 "$RC"
check_eq "forward-max 20, 2,000 domains: all accepted" 2000 "$(jget "$E2E_TMP/fw.json" accepted)"
check_eq "forward-max 20, 2,000 domains: no dns_* failure in the records" 0 \
    "$(dns_failures "$E2E_TMP/fw.records")"
check "forward-max 20: every recipient accepted exactly once" pc once "${SINK_STATS[fw]}" "$RF"
stop_sink fw

# ================================================================ 5. address lookup timeout
cat >"$E2E_TMP/tmo.conf" <<'CONF'
[global]
retry = 1s
max_age = 2s
tls = none
CONF
echo "r@tmo.test" >"$E2E_TMP/tmo.rcpts"
SEND_TIMEOUT=40 send_run tmo --recipients "$E2E_TMP/tmo.rcpts" --config "$E2E_TMP/tmo.conf" \
    "${RESOLVER[@]}"
# Two rounds of c-ares's two tries (2 s, then 4 s) take 12 s, past max_age:
# the first attempt is also the last.
check "address lookup timed out: the first attempt is dns_tempfail (not dns_no_address)" \
    pc any "$E2E_TMP/tmo.records" '@tmo\.test$' \
    'd["attempt"] == 1 and d["outcome"] in ("deferred", "expired") and d.get("reason") == "dns_tempfail"'
check_eq "address lookup timed out: no dns_no_address record" 0 \
    "$(grep -c dns_no_address "$E2E_TMP/tmo.records")"

# ================================================================ 6. stop mid-burst
start_sink stop 127.0.0.51
"$RM" send --json --records "$E2E_TMP/stop.records" --from bounce@sender.test --helo sender.test \
    --recipients "$RB" --config "$E2E_TMP/big.conf" "${RESOLVER[@]}" \
    >"$E2E_TMP/stop.json" 2>"$E2E_TMP/stop.err" &
STOP_PID=$!
sleep 0.3
kill -TERM "$STOP_PID"
timeout 30 tail --pid="$STOP_PID" -f /dev/null
wait "$STOP_PID"
check_eq "stopped mid-burst: exit 1 (interrupted)" 1 "$?"
check_eq "stopped mid-burst: accepted + unsent = $N_BIG" "$N_BIG" \
    "$(($(jget "$E2E_TMP/stop.json" accepted) + $(jget "$E2E_TMP/stop.json" unsent)))"
check_eq "stopped mid-burst: the cancelled lookups wrote no dns_* record" 0 \
    "$(dns_failures "$E2E_TMP/stop.records")"
stop_sink stop

cat "$E2E_TMP"/*.err >"$E2E_TMP/all-send.stderr" 2>/dev/null
check_no_grep "no sanitizer report from any ringmail send run" 'Sanitizer|runtime error:' \
    "$E2E_TMP/all-send.stderr"
echo "# runtime: $(($(now_ms) - T_START)) ms"
e2e_finish
