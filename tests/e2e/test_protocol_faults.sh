#!/usr/bin/env bash
# Servers that break the protocol (issue 10, items 5, 7, 8 and 9), end to
# end with ringmail blast and ringmail send (list mode) against scripted
# raw servers (tests/e2e/scripted_server.py), ringmail sink and aiosmtpd:
#   a. two 250s to one final dot: a reply nobody waits for is protocol_error;
#      it never answers the next MAIL, and every body reaches the server once
#   b. 421 to MAIL after two messages per connection: server_closing, the
#      unattempted message goes to a new connection without an attempt
#   c. 503 to RCPT: deferred, reason bad_sequence, never suppressed
#   d. TLS counts: every connection is in exactly one of tls_full,
#      tls_resumed, tls_none, failed sessions included
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup

# scripted NAME MODE [MODE_ARG]: a scripted server on a fresh port ($PORT),
# its events in $EV.
scripted() {
    local name=$1
    shift
    PORT=$(free_port)
    EV=$E2E_TMP/$name.events
    start_scripted "$PORT" "$@" --events "$EV"
}
# blast NAME ARGS...: plaintext blast at $PORT; JSON in $OUT.
blast() {
    local name=$1
    shift
    OUT=$E2E_TMP/$name.json
    timeout 60 "$RM" blast --server "127.0.0.1:$PORT" --tls none --json \
        --records "$E2E_TMP/$name.records" "$@" >"$OUT" 2>"$E2E_TMP/$name.err"
    echo "# blast $name: $(cat "$OUT")"
}
# send_list NAME RCPTS [ARGS...]: ringmail send --recipients, every domain
# routed to $PORT in plaintext, retries quick; JSON in $OUT, records in $REC.
send_list() {
    local name=$1 rcpts=$2
    shift 2
    printf '[global]\ntls = none\nretry = 300ms\nmax_age = 2s\n[route ex.test]\nserver = 127.0.0.1:%s\n' \
        "$PORT" >"$E2E_TMP/$name.conf"
    OUT=$E2E_TMP/$name.json
    REC=$E2E_TMP/$name.records
    timeout 60 "$RM" send --recipients "$rcpts" --config "$E2E_TMP/$name.conf" --json \
        --records "$REC" --from bounce@sender.test --helo sender.test "$@" \
        >"$OUT" 2>"$E2E_TMP/$name.err"
    echo "# send $name: exit $?: $(cat "$OUT")"
}
# bodies_once EVENTS N: the server received N message bodies, each
# recipient's exactly once.
bodies_once() {
    /usr/bin/python3 - "$1" "$2" <<'EOF'
import collections, json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
bodies = [e for e in ev if e["event"] == "data" and not e["empty"]]
per = collections.Counter(r for e in ev if e["event"] == "message" for r in e["rcpts"])
assert len(bodies) == int(sys.argv[2]), "%d bodies received" % len(bodies)
assert len(per) == int(sys.argv[2]) and set(per.values()) == {1}, per.most_common(3)
EOF
}
# tls_adds_up JSON [PREFIX]: connections == tls_full + tls_resumed + tls_none.
tls_adds_up() {
    local j=$1 p=${2:-} c f r n
    c=$(jget "$j" "${p}connections")
    f=$(jget "$j" "${p}tls_full")
    r=$(jget "$j" "${p}tls_resumed")
    n=$(jget "$j" "${p}tls_none")
    echo "# connections $c: full $f, resumed $r, none $n"
    [ "$c" -gt 0 ] && [ "$c" -eq $((f + r + n)) ]
}
# ends_add_up JSON: blast's session_ends count every connection once.
ends_add_up() {
    /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
assert sum(d["session_ends"].values()) == d["connections"], d' "$1"
}

RCPTS=$E2E_TMP/rcpts
for i in $(seq 1 20); do echo "u$i@ex.test"; done >"$RCPTS"

# ---------------------------------------------------------------- a. extra 250
# Both 250s in one write: read together with the real one.
scripted extra dot-extra-250
blast extra --count 20 --concurrency 2
check_eq "extra 250 (same read): blast accepted every message" 20 "$(jget "$OUT" accepted)"
check_eq "extra 250 (same read): nothing deferred" 0 "$(jget "$OUT" deferred)"
check_eq "extra 250 (same read): no deferral with reason accepted" 0 "$(jget "$OUT" reasons.accepted)"
check_eq "extra 250 (same read): each session ends protocol_error" 20 \
    "$(jget "$OUT" session_ends.protocol_error)"
check "extra 250 (same read): the server got each body once" bodies_once "$EV" 20
check "extra 250: sessions counted once each (session_ends)" ends_add_up "$OUT"
: >"$EV"
send_list extra-send "$RCPTS"
check_eq "extra 250 (same read): send accepted 20" 20 "$(jget "$OUT" accepted)"
check_eq "extra 250 (same read): send spent one attempt each" 20 "$(jget "$OUT" attempts)"
check "extra 250 (same read): send delivered each body once" bodies_once "$EV" 20
stop_scripted

# The second 250 50 ms later, when the next MAIL/RCPT/DATA already went out:
# it would answer MAIL and shift the RCPT's 250 onto DATA.
scripted extra-late dot-extra-250 50
blast extra-late --count 20 --concurrency 2
check_eq "extra 250 (later read): blast accepted every message" 20 "$(jget "$OUT" accepted)"
check_eq "extra 250 (later read): nothing deferred" 0 "$(jget "$OUT" deferred)"
check_ge "extra 250 (later read): sessions end protocol_error" 1 \
    "$(jget "$OUT" session_ends.protocol_error)"
check "extra 250 (later read): the server got each body once" bodies_once "$EV" 20
check "extra 250 (later read): no body after a shifted reply (nothing sent after 354-less DATA)" \
    sh -c "! grep -q '\"violation\"' '$EV'"
: >"$EV"
send_list extra-late-send "$RCPTS"
check_eq "extra 250 (later read): send accepted 20" 20 "$(jget "$OUT" accepted)"
check_eq "extra 250 (later read): send deferred nothing" 0 "$(jget "$OUT" deferrals)"
check "extra 250 (later read): send delivered each body once" bodies_once "$EV" 20
stop_scripted

# ---------------------------------------------------------------- b. 421 to MAIL
scripted mail421 mail-421 2
blast mail421 --count 300 --concurrency 4
check_eq "421 to MAIL: blast accepted all 300" 300 "$(jget "$OUT" accepted)"
check_eq "421 to MAIL: nothing deferred" 0 "$(jget "$OUT" deferred)"
check_eq "421 to MAIL: no mail_deferred" 0 "$(jget "$OUT" reasons.mail_deferred)"
check_ge "421 to MAIL: the sessions it ended are server_closing" 140 \
    "$(jget "$OUT" session_ends.server_closing)"
check "421 to MAIL: the server got each body once" bodies_once "$EV" 300
check "421 to MAIL: connections counted once each" ends_add_up "$OUT"
: >"$EV"
send_list mail421-send "$RCPTS"
check_eq "421 to MAIL: send accepted 20" 20 "$(jget "$OUT" accepted)"
check_eq "421 to MAIL: send deferred nothing" 0 "$(jget "$OUT" deferrals)"
check_eq "421 to MAIL: send spent no attempt on the unattempted (20 attempts)" 20 \
    "$(jget "$OUT" attempts)"
check_eq "421 to MAIL: every record is a first attempt" 20 "$(jcount "$REC" 'd["attempt"] == 1')"
check "421 to MAIL: send delivered each body once" bodies_once "$EV" 20
stop_scripted

# A 421 read together with the last 250 (a server closing after N messages
# without waiting for the next command) and a 421 greeting: server_closing.
scripted greet421 greeting-421
blast greet421 --count 2 --concurrency 1
check_eq "421 greeting: deferred" 2 "$(jget "$OUT" deferred)"
check_eq "421 greeting: reason server_closing" 2 "$(jget "$OUT" reasons.server_closing)"
stop_scripted

# ---------------------------------------------------------------- c. 503 to RCPT
scripted rcpt503 rcpt-503
blast rcpt503 --count 5 --concurrency 1
check_eq "503 to RCPT: blast deferred all 5" 5 "$(jget "$OUT" deferred)"
check_eq "503 to RCPT: none rejected" 0 "$(jget "$OUT" rejected)"
check_eq "503 to RCPT: reason bad_sequence" 5 "$(jget "$OUT" reasons.bad_sequence)"
SUPP=$E2E_TMP/suppress
: >"$SUPP"
send_list rcpt503-send "$RCPTS" --suppress "$SUPP"
check_eq "503 to RCPT: send rejected nothing" 0 "$(jget "$OUT" rejected)"
check_eq "503 to RCPT: send ends every recipient expired (temporary until max_age)" 20 \
    "$(jget "$OUT" expired)"
check_ge "503 to RCPT: records say deferred, bad_sequence" 20 \
    "$(jcount "$REC" 'd["reason"] == "bad_sequence" and d["outcome"] in ("deferred", "expired")')"
check_eq "503 to RCPT: nothing added to --suppress" 0 "$(wc -l <"$SUPP" | tr -d ' ')"
stop_scripted

# ---------------------------------------------------------------- d. TLS counts
# A sink without STARTTLS under --tls required: every session fails before TLS.
PORT=$(free_port)
e2e_bg sink-nostarttls "$RM" sink --listen "127.0.0.1:$PORT" --threads 1 --no-starttls \
    --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key"
SINK=$E2E_BG_PID
wait_port 127.0.0.1 "$PORT" 10 "$SINK"
timeout 60 "$RM" blast --server "127.0.0.1:$PORT" --tls required --count 30 --concurrency 3 \
    --json >"$E2E_TMP/nostarttls.json" 2>/dev/null
echo "# blast nostarttls: $(cat "$E2E_TMP/nostarttls.json")"
check_eq "no STARTTLS: every message deferred tls_not_offered" 30 \
    "$(jget "$E2E_TMP/nostarttls.json" reasons.tls_not_offered)"
check "no STARTTLS: connections == tls_full + tls_resumed + tls_none" tls_adds_up "$E2E_TMP/nostarttls.json"
check_eq "no STARTTLS: every connection in tls_none" "$(jget "$E2E_TMP/nostarttls.json" connections)" \
    "$(jget "$E2E_TMP/nostarttls.json" tls_none)"
printf '[global]\ntls = required\nretry = 300ms\nmax_age = 1s\n[route ex.test]\nserver = 127.0.0.1:%s\n' \
    "$PORT" >"$E2E_TMP/nostarttls.conf"
timeout 60 "$RM" send --recipients "$RCPTS" --config "$E2E_TMP/nostarttls.conf" --json \
    --from bounce@sender.test >"$E2E_TMP/nostarttls-send.json" 2>/dev/null
echo "# send nostarttls: $(cat "$E2E_TMP/nostarttls-send.json")"
check "no STARTTLS: send's per-ISP connections == full + resumed + none" \
    tls_adds_up "$E2E_TMP/nostarttls-send.json" isps.default.
e2e_kill "$SINK"

# TLS 1.3 done, then AUTH refused: counted as TLS, not left out.
PORT=$(free_port)
e2e_bg sink-auth "$RM" sink --listen "127.0.0.1:$PORT" --threads 1 --auth alice:s3cret \
    --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key"
SINK=$E2E_BG_PID
wait_port 127.0.0.1 "$PORT" 10 "$SINK"
RINGMAIL_AUTH=alice:wrong timeout 60 "$RM" blast --server "127.0.0.1:$PORT" --tls required \
    --count 20 --concurrency 2 --json >"$E2E_TMP/badauth.json" 2>/dev/null
echo "# blast badauth: $(cat "$E2E_TMP/badauth.json")"
check_eq "wrong AUTH: every message failed auth_failed" 20 "$(jget "$E2E_TMP/badauth.json" reasons.auth_failed)"
check "wrong AUTH: connections == tls_full + tls_resumed + tls_none" tls_adds_up "$E2E_TMP/badauth.json"
check_eq "wrong AUTH: every connection finished its handshake and is counted so" \
    "$(jget "$E2E_TMP/badauth.json" connections)" \
    "$(($(jget "$E2E_TMP/badauth.json" tls_full) + $(jget "$E2E_TMP/badauth.json" tls_resumed)))"
check_eq "wrong AUTH: sessions end auth_failed" "$(jget "$E2E_TMP/badauth.json" connections)" \
    "$(jget "$E2E_TMP/badauth.json" session_ends.auth_failed)"
e2e_kill "$SINK"

# A connection that never connects counts in none (README).
PORT=$(free_port)
timeout 60 "$RM" blast --server "127.0.0.1:$PORT" --tls required --count 3 --concurrency 1 \
    --json >"$E2E_TMP/refused.json" 2>/dev/null
check_eq "connect refused: reason connect_failed" 3 "$(jget "$E2E_TMP/refused.json" reasons.connect_failed)"
check "connect refused: counted in tls_none" tls_adds_up "$E2E_TMP/refused.json"

# A third-party server: aiosmtpd with STARTTLS, sessions of 7 messages, and
# more connections than messages need at the end (idle sessions just QUIT).
PORT=$(free_port)
start_aiosmtpd "$PORT" "$CERTS/server.pem" "$CERTS/server.key"
timeout 60 "$RM" blast --server "localhost:$PORT" --tls verify --ca "$CERTS/ca.pem" --count 100 \
    --concurrency 8 --msgs-per-conn 7 --json >"$E2E_TMP/aio.json" 2>"$E2E_TMP/aio.err"
echo "# blast aiosmtpd: $(cat "$E2E_TMP/aio.json")"
check_eq "aiosmtpd: 100 accepted" 100 "$(jget "$E2E_TMP/aio.json" accepted)"
check "aiosmtpd: connections == tls_full + tls_resumed + tls_none" tls_adds_up "$E2E_TMP/aio.json"
check "aiosmtpd: session_ends count every connection" ends_add_up "$E2E_TMP/aio.json"
# More connections than messages: sessions that got ready, found nothing
# left and said QUIT carried no message, and still count.
timeout 60 "$RM" blast --server "localhost:$PORT" --tls verify --ca "$CERTS/ca.pem" --count 10 \
    --concurrency 20 --json >"$E2E_TMP/aio-idle.json" 2>"$E2E_TMP/aio-idle.err"
echo "# blast aiosmtpd idle: $(cat "$E2E_TMP/aio-idle.json")"
check_eq "aiosmtpd, 20 connections for 10 messages: 10 accepted" 10 "$(jget "$E2E_TMP/aio-idle.json" accepted)"
check_eq "aiosmtpd, 20 connections for 10 messages: all 20 opened" 20 \
    "$(jget "$E2E_TMP/aio-idle.json" connections)"
check "aiosmtpd, idle sessions too: connections == tls_full + tls_resumed + tls_none" \
    tls_adds_up "$E2E_TMP/aio-idle.json"
check_eq "aiosmtpd, idle sessions too: every session ended by our QUIT (session_ends.quit)" 20 \
    "$(jget "$E2E_TMP/aio-idle.json" session_ends.quit)"
stop_aiosmtpd

e2e_finish
