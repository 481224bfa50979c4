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
PORT=$(free_port) # every sink listens on 127.0.0.x:PORT

SINK_PORT=$PORT
# shellcheck source=tests/e2e/pool_lib.sh
. "$(dirname "$0")/pool_lib.sh"

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
SEND_TIMEOUT=15 send_run crate --recipients "$R1" --config "$E2E_TMP/crate.conf"
RC_CRATE=$RC
ELAPSED_CRATE=$ELAPSED_MS
SEND_TIMEOUT=10 send_run cfree --recipients "$R1F" --config "$E2E_TMP/cfree.conf"
RC_CFREE=$RC
sleep 0.3 # a few stats intervals
stop_sink crate
stop_sink cfree
check_eq "conn_rate: exit 0, every recipient final" 0 "$RC_CRATE"
check_eq "conn_rate: 60 accepted in the summary" 60 "$(jget "$E2E_TMP/crate.json" accepted)"
check "conn_rate: every recipient accepted exactly once by the sink" \
    pc once "${SINK_STATS[crate]}" "$R1"
check_eq "conn_rate: the sink counted 60 connections (max_msgs_per_conn 1)" 60 "$(sj crate connections)"
check_eq "conn_rate: at most 1 message per session" 1 "$(sj crate max_msgs_per_session)"
check "conn_rate: delivered rate within 10% of conn_rate 20/s (18..22/s)" \
    pc rate_within "${SINK_STATS[crate]}" 20 0.10
# 59 intervals at 20/s: about 2.95 s; an ignored conn_rate takes a fraction of that.
check_range "conn_rate: the run took about 60/20 s (2.5..8 s)" 2500 8000 "$ELAPSED_CRATE"
CFREE_RATE=$(pc rate "${SINK_STATS[cfree]}")
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
SEND_TIMEOUT=25 send_run stall --recipients "$R2" --config "$E2E_TMP/stall.conf"
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
    pc each "$REC" '@stall\.test$' \
    'str(d.get("reason", "")).startswith("timeout_") and d.get("outcome") == ("expired" if d.get("final") else "deferred")'
check "timeout: each attempt gave up after about the ISP's 1 s (transaction_ms 900..5000)" \
    pc each "$REC" '@stall\.test$' '900 <= d.get("transaction_ms", -1) <= 5000'
check "timeout: every recipient has one final record, expired with a timeout_ reason" \
    pc finals "$REC" "$R2" 'd.get("outcome") == "expired" and str(d.get("reason", "")).startswith("timeout_")'
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
SEND_TIMEOUT=20 send_run tls --recipients "$R3" --config "$E2E_TMP/tls.conf" --ca "$CERTS/ca.pem"
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
    pc once "${SINK_STATS[tlsv]}" "$R3V"
check "verify: records show TLS 1.2 or 1.3 and verify ok" pc each "$REC" '@verify\.test$' \
    'd.get("outcome") == "accepted" and d.get("tls") in ("TLSv1.2", "TLSv1.3") and d.get("verify") == "ok"'
check_ge "verify: several connections (max_msgs_per_conn 2)" 5 "$(jget "$OUT" isps.verified.connections)"
check_ge "verify: resumed handshakes > 0 in the ISP's TLS counts" 1 "$(jget "$OUT" isps.verified.tls_resumed)"
check_ge "verify: the sink counted resumed handshakes too" 1 "$(sj tlsv tls_resumed)"
check_ge "verify: some records say resumed" 1 \
    "$(jcount "$REC" 'd.get("isp") == "verified" and d.get("resumed") is True')"
check_eq "verify: no plaintext connection" 0 "$(jget "$OUT" isps.verified.tls_none)"
# B: required, no STARTTLS offered
check "required: every recipient final, not accepted, reason tls_not_offered" \
    pc finals "$REC" "$R3R" 'd.get("outcome") != "accepted" and d.get("reason") == "tls_not_offered"'
check "required: every attempt tls_not_offered, deferred (expired when final)" \
    pc each "$REC" '@required\.test$' \
    'd.get("reason") == "tls_not_offered" and d.get("outcome") == ("expired" if d.get("final") else "deferred")'
check_eq "required: 0 accepted (ISP summary)" 0 "$(jget "$OUT" isps.strict.accepted)"
check_ge "required: the sink without STARTTLS was connected to" 1 "$(sj tlsreq connections)"
check_eq "required: the sink received 0 messages (never plaintext)" 0 "$(sj tlsreq messages)"
check_eq "required: the sink accepted 0 recipients" 0 "$(sj tlsreq accepted_rcpts)"
# C: opportunistic, no STARTTLS offered
check_eq "opportunistic: 5 accepted (ISP summary)" 5 "$(jget "$OUT" isps.lax.accepted)"
check "opportunistic: every recipient accepted exactly once by the sink" \
    pc once "${SINK_STATS[tlsopp]}" "$R3O"
check "opportunistic: records say no TLS" pc each "$REC" '@opportunistic\.test$' \
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
