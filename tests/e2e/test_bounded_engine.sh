#!/usr/bin/env bash
# The engine's bounds (issue 11, items 1, 3 and 6), end to end:
#   a. a reply's deadline does not restart on every byte: a greeting that
#      trickles a line every 2 s, or "220 " then a byte a second, or a
#      reply to the final dot a line a second, ends at --timeout-ms
#      (within a second of it)
#   b. SIGTERM to blast while a session is stalled ends blast within 2 s
#   c. out of file descriptors: blast caps --concurrency to RLIMIT_NOFILE
#      with a WARNING, send's pool waits for descriptors; every message is
#      delivered and none is recorded connect_failed
#   d. TLS records: a protocol-version failure under --tls verify is
#      tls_handshake_failed with BoringSSL's reason; a real verify failure
#      stays tls_verify_failed; tls_ms is the handshake's duration; an
#      implicit-TLS reset is connection_lost; implicit TLS never warns of
#      plaintext; starttls_injection carries ringmail's explanation
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup


# trickle MODE: blast --timeout-ms 3000 against a scripted server in MODE;
# $ELAPSED is how long blast ran (ms), records in $REC.
trickle() {
    local mode=$1 port t0
    port=$(free_port)
    start_scripted "$port" "$mode"
    REC=$E2E_TMP/$mode.records
    t0=$(now_ms)
    timeout -k 1 12 "$RM" blast --server "127.0.0.1:$port" --tls none --count 1 --concurrency 1 \
        --timeout-ms 3000 --json --records "$REC" >"$E2E_TMP/$mode.json" 2>"$E2E_TMP/$mode.err"
    ELAPSED=$(($(now_ms) - t0))
    echo "# $mode: blast ran $ELAPSED ms: $(cat "$REC" 2>/dev/null)"
    stop_scripted "$port"
}

# ---------------------------------------------------------------- a. deadlines
trickle slow-lines
check_le "a greeting line every 2 s: the session ends by the 3 s deadline + 1 s" 4000 "$ELAPSED"
check_eq "a greeting line every 2 s: timeout_greeting" 1 \
    "$(jcount "$REC" 'd["reason"] == "timeout_greeting"')"

trickle slow-bytes
check_le "\"220 \" then a byte a second: the session ends by the 3 s deadline + 1 s" 4000 "$ELAPSED"
check_eq "\"220 \" then a byte a second: timeout_greeting" 1 \
    "$(jcount "$REC" 'd["reason"] == "timeout_greeting"')"

trickle slow-dot
check_eq "the final dot answered a line a second: ends by the 3 s deadline + 1 s, timeout_data_done, data_in_flight" \
    "true 1" \
    "$([ "$ELAPSED" -le 4000 ] && echo true || echo "false($ELAPSED ms)") $(jcount "$REC" 'd["reason"] == "timeout_data_done" and d["data_in_flight"]')"

# ---------------------------------------------------------------- b. SIGTERM
PORT=$(free_port)
start_scripted "$PORT" stall-after-mail
"$RM" blast --server "127.0.0.1:$PORT" --tls none --count 4 --concurrency 2 --timeout-ms 60000 \
    --json --records "$E2E_TMP/term.records" >"$E2E_TMP/term.json" 2>"$E2E_TMP/term.err" &
BLAST=$!
e2e_cleanup "kill -KILL $BLAST 2>/dev/null"
sleep 1.5
T0=$(now_ms)
kill -TERM "$BLAST"
for ((i = 0; i < 40; i++)); do
    _pid_alive "$BLAST" || break
    sleep 0.05
done
ENDED=0
_pid_alive "$BLAST" || ENDED=1
kill -KILL "$BLAST" 2>/dev/null
wait "$BLAST" 2>/dev/null
echo "# SIGTERM: blast gone after $(($(now_ms) - T0)) ms: $(cat "$E2E_TMP/term.json")"
check_eq "SIGTERM while every session is stalled: blast ends within 2 s" 1 "$ENDED"
check_eq "SIGTERM: the stalled messages are recorded deferred, reason interrupted" 2 \
    "$(jcount "$E2E_TMP/term.records" 'd["reason"] == "interrupted" and d["outcome"] == "deferred"')"
stop_scripted "$PORT"

# ---------------------------------------------------------------- c. descriptors
PORT=$(free_port)
e2e_bg sink-plain "$RM" sink --listen "127.0.0.1:$PORT" --threads 1
SINK=$E2E_BG_PID
wait_port 127.0.0.1 "$PORT" 10 "$SINK"
prlimit --nofile=2000:2000 timeout -k 1 120 "$RM" blast --server "127.0.0.1:$PORT" --tls none \
    --count 6000 --concurrency 3000 --json --records "$E2E_TMP/nofile.records" \
    >"$E2E_TMP/nofile.json" 2>"$E2E_TMP/nofile.err"
echo "# nofile 2000, concurrency 3000: $(cat "$E2E_TMP/nofile.json")"
check_grep "concurrency over the open-file limit: a WARNING names the limit" \
    'WARNING: --concurrency 3000 is over the open-file limit \(RLIMIT_NOFILE 2000\)' \
    "$E2E_TMP/nofile.err"
check_eq "concurrency over the open-file limit: every message accepted" 6000 \
    "$(jget "$E2E_TMP/nofile.json" accepted)"
check_eq "concurrency over the open-file limit: no connect_failed record" 0 \
    "$(jcount "$E2E_TMP/nofile.records" 'd["reason"] == "connect_failed"')"
e2e_kill "$SINK"

# send's pool past the limit: 400 connections allowed, 120 descriptors.
PORT=$(free_port)
e2e_bg sink-slow "$RM" sink --listen "127.0.0.1:$PORT" --threads 1 --latency-ms 300
SINK=$E2E_BG_PID
wait_port 127.0.0.1 "$PORT" 10 "$SINK"
for i in $(seq 1 600); do echo "u$i@ex.test"; done >"$E2E_TMP/rcpts"
printf '[global]\ntls = none\nretry = 300ms\nmax_age = 30s\n[route ex.test]\nserver = 127.0.0.1:%s\n[isp default]\nmax_connections = 400\n' \
    "$PORT" >"$E2E_TMP/nofile.conf"
prlimit --nofile=120:120 timeout -k 1 120 "$RM" send --recipients "$E2E_TMP/rcpts" \
    --config "$E2E_TMP/nofile.conf" --max-connections 400 --from b@sender.test --json \
    --records "$E2E_TMP/send-nofile.records" >"$E2E_TMP/send-nofile.json" 2>"$E2E_TMP/send-nofile.err"
echo "# send, nofile 120, 400 connections allowed: $(head -c 300 "$E2E_TMP/send-nofile.json")"
# Over 120 connections opened (so some waited for a descriptor), every
# recipient accepted at its first attempt, no connect_failed record.
check_eq "send out of descriptors: all 600 accepted, none deferred, no connect_failed" \
    "true 600 0 0" \
    "$(jeval "$E2E_TMP/send-nofile.json" 'd["isps"]["default"]["connections"] > 120') $(jget "$E2E_TMP/send-nofile.json" accepted) $(jget "$E2E_TMP/send-nofile.json" deferrals) $(jcount "$E2E_TMP/send-nofile.records" 'd["reason"] == "connect_failed"')"
e2e_kill "$SINK"

# ---------------------------------------------------------------- d. TLS records
# tls_record NAME ARGS...: one blast message at $PORT; its record in $REC.
tls_record() {
    local name=$1
    shift
    REC=$E2E_TMP/$name.records
    timeout -k 1 30 "$RM" blast --server "127.0.0.1:$PORT" --count 1 --concurrency 1 --json \
        --records "$REC" "$@" >"$E2E_TMP/$name.json" 2>"$E2E_TMP/$name.err"
    echo "# $name: $(cat "$REC" 2>/dev/null)"
}

PORT=$(free_port)
e2e_bg sink-tls11 "$RM" sink --listen "127.0.0.1:$PORT" --threads 1 --tls-max 1.1 \
    --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key"
SINK=$E2E_BG_PID
wait_port 127.0.0.1 "$PORT" 10 "$SINK"
tls_record tls11 --tls verify --ca "$CERTS/ca.pem"
check_eq "TLS 1.1 server under verify: tls_handshake_failed with the alert as its text" 1 \
    "$(jcount "$REC" 'd["reason"] == "tls_handshake_failed" and "PROTOCOL_VERSION" in d["text"]')"
check_eq "TLS 1.1 server: tls_ms is the handshake's duration (< 5 s)" 1 \
    "$(jcount "$REC" '0 <= d["tls_ms"] < 5000')"
e2e_kill "$SINK"

PORT=$(free_port)
e2e_bg sink-tls "$RM" sink --listen "127.0.0.1:$PORT" --threads 1 \
    --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key"
SINK=$E2E_BG_PID
wait_port 127.0.0.1 "$PORT" 10 "$SINK"
tls_record verify-fail --tls verify
check_eq "a certificate that does not verify: tls_verify_failed, its error as text, tls_ms < 5 s" 1 \
    "$(jcount "$REC" 'd["reason"] == "tls_verify_failed" and d["text"].startswith("certificate verify failed: ") and 0 <= d["tls_ms"] < 5000')"
e2e_kill "$SINK"

PORT=$(free_port)
e2e_bg sink-implicit "$RM" sink --listen "127.0.0.1:$PORT" --threads 1 --implicit-tls \
    --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key"
SINK=$E2E_BG_PID
wait_port 127.0.0.1 "$PORT" 10 "$SINK"
tls_record implicit-opp --tls opportunistic --implicit-tls
check_eq "opportunistic + implicit TLS: delivered, and no plaintext warning" "1 0" \
    "$(jget "$E2E_TMP/implicit-opp.json" accepted) $(grep -c PLAINTEXT "$E2E_TMP/implicit-opp.err")"
e2e_kill "$SINK"

PORT=$(free_port)
start_scripted "$PORT" reset-on-connect
tls_record implicit-reset --tls required --implicit-tls
check_eq "implicit TLS reset during the handshake: connection_lost, tls_ms < 5 s" 1 \
    "$(jcount "$REC" 'd["reason"] == "connection_lost" and 0 <= d["tls_ms"] < 5000')"
stop_scripted "$PORT"

PORT=$(free_port)
start_scripted "$PORT" starttls-inject
tls_record inject --tls required
check_eq "starttls_injection: the record carries ringmail's explanation, no server code" 1 \
    "$(jcount "$REC" 'd["reason"] == "starttls_injection" and d["code"] == 0 and d["text"] == "server sent data after its STARTTLS reply, before TLS"')"
stop_scripted "$PORT"

e2e_finish
