#!/usr/bin/env bash
# ringmail send end to end (issue: per-ISP routing and throttling), all on
# loopback: dnsmasq serves the MX records, one ringmail sink per "ISP" MX
# (127.0.0.21/22/23 ... on one shared port, reached with --mx-port),
# python3-aiosmtpd as an authenticated smarthost.
#   1. per-ISP limits: connections, messages per connection, message rate,
#      backoff on 421 4.7.28 (gmail) without slowing the others, exactly-once
#      delivery through retries, permanent rejection -> suppression list
#   2. DNS outcomes: MX fallback (refused / 421 greeting, next address), no MX
#      (implicit MX), IDN domains, null MX, NXDOMAIN,
#      DNS SERVFAIL and timeout deferred (dns_*), then expired after max_age
#   3. relay mode: STARTTLS and implicit TLS with AUTH, password from a file
#      and from the environment, wrong password fails fast without a storm
#   4. SIGHUP reload: new rate within a second, a broken file refused with its
#      line number (old config stays); Prometheus /metrics during the run
#   5. source addresses: --source, config sources with weights;
#      RCPT batching (--message, max_rcpts_per_msg)
# Nothing leaves 127.0.0.0/8: dnsmasq has no upstream, every MX is 127.0.0.x.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
e2e_require dnsmasq || { e2e_finish; exit 1; }

T_START=$(date +%s%3N)
MX_PORT=$(free_port)   # every sink listens on 127.0.0.x:MX_PORT
DNS_PORT=$(free_port)
BH_PORT=$(free_port)   # UDP "DNS server" that never answers (slow.test)
SF_PORT=$(free_port)   # UDP "DNS server" that answers SERVFAIL (servfail.test)
SEND_TIMEOUT=60

# ---------------------------------------------------------------- servers

# Upstreams for dnsmasq: a UDP port that swallows queries (slow.test: the
# lookups time out) and one that answers SERVFAIL at once (servfail.test).
cat >"$E2E_TMP/upstream.py" <<'PY'
import socket, sys
mode, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
while True:
    q, peer = s.recvfrom(4096)
    if mode != "servfail" or len(q) < 12:
        continue
    i = 12
    while i < len(q) and q[i]:
        i += q[i] + 1
    question = q[12:i + 5]
    # id, QR + RD copied, RA + RCODE 2 (SERVFAIL), 1 question, no records
    s.sendto(q[:2] + bytes([0x80 | (q[2] & 1), 0x82]) + b"\0\1\0\0\0\0\0\0" + question, peer)
PY
e2e_bg blackhole "$E2E_PY" "$E2E_TMP/upstream.py" blackhole "$BH_PORT"
e2e_bg servfail "$E2E_PY" "$E2E_TMP/upstream.py" servfail "$SF_PORT"

e2e_bg dnsmasq dnsmasq --keep-in-foreground --port="$DNS_PORT" --listen-address=127.0.0.1 \
    --bind-interfaces --no-resolv --no-hosts --local=/test/ --local-ttl=300 --pid-file= \
    --no-round-robin --log-queries --log-facility="$E2E_TMP/queries.log" \
    --host-record=localhost,127.0.0.1 \
    --mx-host=gmail.test,mx.gmail.test,10 --host-record=mx.gmail.test,127.0.0.21 \
    --mx-host=hosted.test,mx.gmail.test,10 \
    --mx-host=outlook.test,mx.outlook.test,10 --host-record=mx.outlook.test,127.0.0.22 \
    --mx-host=qq.test,mx.qq.test,10 --host-record=mx.qq.test,127.0.0.23 \
    --mx-host=fallback.test,mx1.fallback.test,10 --mx-host=fallback.test,mx2.fallback.test,20 \
    --host-record=mx1.fallback.test,127.0.0.31 --host-record=mx2.fallback.test,127.0.0.32 \
    --mx-host=fallback421.test,mx1.fallback421.test,10 \
    --mx-host=fallback421.test,mx2.fallback.test,20 \
    --host-record=mx1.fallback421.test,127.0.0.33 \
    --mx-host=multiaddr.test,mx.multiaddr.test,10 \
    --mx-host=xn--bcher-kva.test,mx.idn.test,10 --host-record=mx.idn.test,127.0.0.36 \
    --host-record=nomx.test,127.0.0.37 \
    --host-record=mx.multiaddr.test,127.0.0.31 --host-record=mx.multiaddr.test,127.0.0.32 \
    --mx-host=nullmx.test,.,0 \
    --server=/slow.test/127.0.0.1#"$BH_PORT" --server=/servfail.test/127.0.0.1#"$SF_PORT"
DNSMASQ_PID=$E2E_BG_PID
# dnsmasq binds UDP and TCP; wait for the TCP listener.
check "dnsmasq serves the test zone" wait_port 127.0.0.1 "$DNS_PORT" 10 "$DNSMASQ_PID"
RESOLVER=(--resolver "127.0.0.1:$DNS_PORT" --mx-port "$MX_PORT")

SINK_PORT=$MX_PORT
# shellcheck source=tests/e2e/pool_lib.sh
. "$(dirname "$0")/pool_lib.sh"

# ================================================================ 0. options
check "send --help works" "$RM" send --help
"$RM" send --recipients /dev/null --no-such-option >/dev/null 2>&1
check_eq "bad option: exit 2" 2 "$?"
printf '[global]\nretry = 1s\n[isp x]\nmsg_rate = fast\n' >"$E2E_TMP/bad-start.conf"
"$RM" send --recipients /dev/null --config "$E2E_TMP/bad-start.conf" >/dev/null 2>"$E2E_TMP/bad-start.err"
check_eq "bad config at start: exit 2" 2 "$?"
check_grep "bad config at start: FILE:LINE in the message" 'bad-start\.conf:4' "$E2E_TMP/bad-start.err"

# ================================================================ 1. per-ISP limits
start_sink gmail 127.0.0.21 --defer-pct 30 --defer-reply "421 4.7.28 Our system has detected an unusual rate of unsolicited mail"
start_sink outlook 127.0.0.22
start_sink qq 127.0.0.23
# gmail answers 421 4.7.28 to 30% of RCPTs. Each backoff pauses gmail and
# closes its idle sessions, so pauses are short (100 ms) and recovery fast
# here, or 100 recipients would take minutes; real configs use minutes.
cat >"$E2E_TMP/isp.conf" <<'CONF'
# test_pool.sh scenario 1
[global]
retry = 300ms, 500ms, 1s
max_age = 30s
tls = none
backoff_step = 0.5
backoff_interval = 200ms

[isp gmail]
domains = gmail.test
mx = *.gmail.test
max_connections = 3
max_msgs_per_conn = 10
msg_rate = 100/s
rule = 421 4.7.28 => backoff 0.5 100ms

[isp microsoft]
domains = outlook.test
max_connections = 4
msg_rate = 150/s

[isp tencent]
domains = qq.test
max_connections = 2
msg_rate = 100/s
CONF
R1=$E2E_TMP/isp.rcpts
printf '# comment line, then a blank line\n\n' >"$R1"
recipients "$R1" g gmail.test 100
recipients "$R1" h hosted.test 5
echo "# another comment" >>"$R1"
recipients "$R1" o outlook.test 300
recipients "$R1" q qq.test 300
echo "permfail@qq.test" >>"$R1"
echo >>"$R1"
SUPP=$E2E_TMP/suppress.txt
send_run isp --recipients "$R1" --config "$E2E_TMP/isp.conf" "${RESOLVER[@]}" --suppress "$SUPP"
OUT=$E2E_TMP/isp.json
REC=$E2E_TMP/isp.records
sleep 0.4 # a few stats intervals
check_eq "isp: exit 0, every recipient final" 0 "$RC"
check_eq "isp: 706 recipients (blank and # lines skipped)" 706 "$(jget "$OUT" recipients)"
check_eq "isp: 705 accepted" 705 "$(jget "$OUT" accepted)"
check_eq "isp: 1 rejected" 1 "$(jget "$OUT" rejected)"
check_range "gmail: sink peak_concurrent <= max_connections 3" 1 3 "$(sj gmail peak_concurrent)"
check_range "microsoft: sink peak_concurrent <= max_connections 4" 1 4 "$(sj outlook peak_concurrent)"
check_range "tencent: sink peak_concurrent <= max_connections 2" 1 2 "$(sj qq peak_concurrent)"
check_range "gmail: at most max_msgs_per_conn 10 messages per session (and more than 1)" 2 10 \
    "$(sj gmail max_msgs_per_session)"
check_ge "gmail: the sink deferred some RCPTs with 421 4.7.28" 1 "$(sj gmail deferred_rcpts)"
check_ge "gmail: backoff_triggers > 0 in the summary" 1 "$(jget "$OUT" isps.gmail.backoff_triggers)"
check_ge "gmail: deferrals counted in the summary" 1 "$(jget "$OUT" isps.gmail.deferred)"
check "microsoft: measured rate within 10% of msg_rate 150/s while gmail backs off" \
    pc rate_within "${SINK_STATS[outlook]}" 150 0.10
check "tencent: not faster than msg_rate 100/s" pc rate_max "${SINK_STATS[qq]}" 100 0.10
check "gmail: backoff held it well below its msg_rate 100/s (< 60/s)" \
    pc rate_max "${SINK_STATS[gmail]}" 60 0
check "gmail: deferred recipients were retried and finally accepted" pc any "$REC" '@gmail\.test$' \
    'd["outcome"] == "accepted" and d.get("attempt", 0) >= 2 and d.get("final") is True' 
check "gmail: every recipient (and MX-rollup hosted.test) accepted exactly once" \
    pc once "${SINK_STATS[gmail]}" "$R1" '@(gmail|hosted)\.test$'
check "microsoft: every recipient accepted exactly once" pc once "${SINK_STATS[outlook]}" "$R1" '@outlook\.test$'
check "tencent: every other recipient accepted exactly once" pc once "${SINK_STATS[qq]}" "$R1" '^q[0-9]+@qq\.test$'
check "MX rollup: hosted.test (MX mx.gmail.test) is ISP gmail" pc each "$REC" '@hosted\.test$' 'd.get("isp") == "gmail"'
check "records: every recipient has one final record" pc finals "$REC" "$R1" 'd["outcome"] in ("accepted", "rejected")'
check "records: a deferral of gmail carries 421 4.7.28" pc any "$REC" '@gmail\.test$' \
    'd["outcome"] == "deferred" and d.get("code") == 421 and d.get("enhanced") == "4.7.28" and d.get("final") is False'
check "permfail@qq.test: rejected 550 5.1.1, final" pc final "$REC" permfail@qq.test \
    'd["outcome"] == "rejected" and d.get("code") == 550 and d.get("enhanced") == "5.1.1"'
check "permfail@qq.test: category bad-mailbox, hard, by RFC 3463 X.1.1" pc final "$REC" permfail@qq.test \
    'd.get("category") == "bad-mailbox" and d.get("bounce") == "hard" and d.get("bounce_rule", "").startswith("rfc3463: X.1.1")'
check "records: a 421 4.7.28 deferral of gmail is soft spam-related (Gmail's text)" pc any "$REC" '@gmail\.test$' \
    'd["outcome"] == "deferred" and d.get("code") == 421 and d.get("category") == "spam-related" and d.get("bounce") == "soft" and d.get("bounce_rule", "").startswith("gmail: ")'
check "records: no accepted attempt carries a category" pc each "$REC" '@' \
    'd["outcome"] != "accepted" or ("category" not in d and "bounce" not in d)'
check_eq "isp: --json counts the rejection under bounce_categories.bad-mailbox" 1 \
    "$(jget "$OUT" bounce_categories.bad-mailbox)"
check_eq "isp: bounce_categories has all 11 categories, summing to rejected" "11 1" "$("$E2E_PY" -c '
import json, sys
c = json.load(open(sys.argv[1]))["bounce_categories"]
print(len(c), sum(c.values()))' "$OUT")"
check_eq "tencent: the sink rejected one RCPT" 1 "$(sj qq rejected_rcpts)"
check_grep "permfail@qq.test appended to the suppression file" 'permfail@qq\.test' "$SUPP"
check_eq "only the permanent rejection is in the suppression file" 1 "$(grep -c '@' "$SUPP" 2>/dev/null)"

# Second run with the same suppression file: permfail is not sent.
R1B=$E2E_TMP/isp2.rcpts
echo "permfail@qq.test" >"$R1B"
recipients "$R1B" again qq.test 5
send_run isp2 --recipients "$R1B" --config "$E2E_TMP/isp.conf" "${RESOLVER[@]}" --suppress "$SUPP"
stop_sink qq
check_eq "suppressed run: exit 0" 0 "$RC"
check_eq "suppressed run: 1 suppressed" 1 "$(jget "$E2E_TMP/isp2.json" suppressed)"
check_eq "suppressed run: the other 5 accepted" 5 "$(jget "$E2E_TMP/isp2.json" accepted)"
check "suppressed run: permfail@qq.test recorded suppressed, final" \
    pc final "$E2E_TMP/isp2.records" permfail@qq.test 'd["outcome"] == "suppressed"'
check_eq "suppressed run: the sink never saw permfail@qq.test again (still 1 rejected RCPT)" 1 \
    "$(sj qq rejected_rcpts)"
check_eq "suppressed run: the sink did get the other 5" 305 "$(sj qq accepted_rcpts)"
stop_sink gmail
stop_sink outlook

# ================================================================ 2. DNS outcomes
start_sink mx2 127.0.0.32
start_sink mx421 127.0.0.33 --fault greeting-421
start_sink idn 127.0.0.36
start_sink nomx 127.0.0.37
cat >"$E2E_TMP/dns.conf" <<'CONF'
[global]
retry = 1s
max_age = 3s
tls = none
CONF
R2=$E2E_TMP/dns.rcpts
: >"$R2"
recipients "$R2" f fallback.test 10
recipients "$R2" g fallback421.test 5
recipients "$R2" m multiaddr.test 5
printf '%s\n' anna@bücher.test bob@BÜCHER.test jörg@bücher.test >>"$R2"
recipients "$R2" a nomx.test 3
printf '%s\n' someone@nullmx.test someone@nosuch.test someone@slow.test someone@servfail.test >>"$R2"
send_run dns --recipients "$R2" --config "$E2E_TMP/dns.conf" "${RESOLVER[@]}"
REC=$E2E_TMP/dns.records
OUT=$E2E_TMP/dns.json
stop_sink mx2
stop_sink mx421
check_eq "dns: exit 0, every recipient final" 0 "$RC"
stop_sink idn
stop_sink nomx
check_eq "fallback: 20 accepted (and 3 IDN, 3 without MX)" 26 "$(jget "$OUT" accepted)"
check "fallback: every recipient delivered once to mx2" pc once "${SINK_STATS[mx2]}" "$R2" '@(fallback(421)?|multiaddr)\.test$'
check "fallback: accepted through mx2 (127.0.0.32) on the first attempt, no deferral charged" \
    pc each "$REC" '@fallback(421)?\.test$' \
    'd["outcome"] == "accepted" and d.get("attempt") == 1 and d.get("mx") == "mx2.fallback.test" and str(d.get("addr", "")).startswith("127.0.0.32")'
check_ge "fallback: the 421-greeting MX was tried first" 1 "$(sj mx421 connections)"
# One MX host with two addresses, the first refusing connections.
# dnsmasq answers them in the order given (--no-round-robin): by default it
# rotates them per query, and one more query (a retry under load) flipped
# the premise.
# Even so, one CI run in several saw .32 first: the premise is that the
# resolver gives .31 first, checked over up to three lookups.
premise_31_first() {
    local i
    for i in 1 2 3; do
        "$RM" resolve --resolver "127.0.0.1:$DNS_PORT" multiaddr.test >"$E2E_TMP/multiaddr.json" 2>/dev/null
        "$E2E_PY" -c 'import json, sys; a = json.load(open(sys.argv[1]))["mx"][0]["addrs"]; print(a); assert a == ["127.0.0.31", "127.0.0.32"]' \
            "$E2E_TMP/multiaddr.json" && return 0
    done
    return 1
}
check "next address: the MX's first address is the refusing 127.0.0.31 (the test's premise)" \
    premise_31_first
check "next address: accepted through the second address 127.0.0.32 on the first attempt" \
    pc each "$REC" '@multiaddr\.test$' \
    'd["outcome"] == "accepted" and d.get("attempt") == 1 and d.get("mx") == "mx.multiaddr.test" and str(d.get("addr", "")).startswith("127.0.0.32")'
check "IDN: the RCPT names the A-label domain when the local part is ASCII (no SMTPUTF8 needed)" \
    "$E2E_PY" -c 'import json, sys; d = json.load(open(sys.argv[1]))["deliveries"]; print(d)
assert d.get("anna@xn--bcher-kva.test") == 1 and d.get("bob@xn--bcher-kva.test") == 1' "${SINK_STATS[idn]}"
check "IDN: a UTF-8 local part keeps the address as written (SMTPUTF8)" "$E2E_PY" -c '
import json, sys; d = json.load(open(sys.argv[1]))["deliveries"]; assert d.get("jörg@bücher.test") == 1, d' \
    "${SINK_STATS[idn]}"
check "IDN: bücher.test and BÜCHER.test cost one MX query (A-label, lower case)" "$E2E_PY" -c '
import sys; n = sum(1 for l in open(sys.argv[1]) if "query[MX] xn--bcher-kva.test" in l); print(n); assert n == 1' \
    "$E2E_TMP/queries.log"
check "no MX: delivered to the domain's own address (implicit MX, RFC 5321 5.1)" \
    pc each "$REC" '@nomx\.test$' \
    'd["outcome"] == "accepted" and d.get("mx") == "nomx.test" and str(d.get("addr", "")).startswith("127.0.0.37")'
check "no MX: the sink at the A record got all 3" pc once "${SINK_STATS[nomx]}" "$R2" '@nomx\.test$'
check "null MX: final, reason null_mx" pc final "$REC" someone@nullmx.test \
    'd["reason"] == "null_mx" and d["outcome"] in ("rejected", "failed")'
check "NXDOMAIN: final, reason nxdomain" pc final "$REC" someone@nosuch.test \
    'd["reason"] == "nxdomain" and d["outcome"] in ("rejected", "failed")'
check "SERVFAIL: deferred (not final) with a dns_ reason" pc any "$REC" '@servfail\.test$' \
    'd["attempt"] == 1 and d["outcome"] == "deferred" and str(d.get("reason", "")).startswith("dns_") and d.get("final") is False'
check "SERVFAIL: retried every second until max_age 3s, then final (expired)" \
    pc final "$REC" someone@servfail.test 'd["outcome"] != "accepted" and 3 <= d["attempt"] <= 6'
check "DNS timeout: a temporary failure (dns_ reason, not rejected), final after max_age" \
    pc final "$REC" someone@slow.test \
    'str(d.get("reason", "")).startswith("dns_") and d["outcome"] not in ("accepted", "rejected", "failed")'
check_eq "DNS timeout and SERVFAIL: counted as expired" 2 "$(jget "$OUT" expired)"
# One lookup times out after 15 s (c-ares: 5 s, then 10 s); by then the
# recipient is older than max_age 3 s and must not get a second lookup.
check_range "DNS timeout: expired once older than max_age, no second lookup (run < 20 s)" \
    3000 20000 "$ELAPSED_MS"

# ================================================================ 3. relay (aiosmtpd smarthost)
AI1=$(free_port)
AI1_COUNT=$E2E_TMP/ai587.jsonl
AI1_LOG=$E2E_TMP/aiosmtpd.$AI1.log
start_aiosmtpd "$AI1" "$CERTS/server.pem" "$CERTS/server.key" --auth alice:s3cret \
    --count-file "$AI1_COUNT" --debug
R3=$E2E_TMP/relay.rcpts
: >"$R3"
for d in gmail.test outlook.test qq.test nosuch.test example.test; do recipients "$R3" r "$d" 4; done
PW=$E2E_TMP/relay.pw
(umask 077 && echo s3cret >"$PW")
send_run relay --recipients "$R3" "${RESOLVER[@]}" --relay "localhost:$AI1" --relay-user alice \
    --relay-password-file "$PW" --tls verify --ca "$CERTS/ca.pem"
check_eq "relay STARTTLS: exit 0" 0 "$RC"
check_eq "relay STARTTLS: 20 accepted" 20 "$(jget "$E2E_TMP/relay.json" accepted)"
check "relay STARTTLS: aiosmtpd got every recipient (any domain) once, TLS + AUTH" \
    pc aio_rcpts "$AI1_COUNT" "$R3"
check_no_grep "relay: the password never appears in stderr" 's3cret' "$E2E_TMP/relay.err"
check_no_grep "relay: the password never appears in the records" 's3cret' "$E2E_TMP/relay.records"

# Wrong password: every recipient fails at once with auth_failed, no storm.
R3B=$E2E_TMP/relay-bad.rcpts
: >"$R3B"
recipients "$R3B" bad gmail.test 15
recipients "$R3B" bad outlook.test 15
(umask 077 && echo wrong >"$E2E_TMP/bad.pw")
AUTH_BEFORE=$(grep -Eci ">> b'AUTH " "$AI1_LOG")
COUNT_BEFORE=$(wc -l <"$AI1_COUNT")
send_run relay-bad --recipients "$R3B" "${RESOLVER[@]}" --relay "localhost:$AI1" --relay-user alice \
    --relay-password-file "$E2E_TMP/bad.pw" --tls required
AUTH_TRIES=$(($(grep -Eci ">> b'AUTH " "$AI1_LOG") - AUTH_BEFORE))
echo "# wrong password: $AUTH_TRIES AUTH commands seen by aiosmtpd"
check_eq "wrong password: exit 0 (every recipient final)" 0 "$RC"
check_eq "wrong password: 30 failed" 30 "$(jget "$E2E_TMP/relay-bad.json" failed)"
check "wrong password: every recipient final with reason auth_failed" \
    pc finals "$E2E_TMP/relay-bad.records" "$R3B" 'd["reason"] == "auth_failed"'
check_le "wrong password: the run ends within 5 s" 5000 "$ELAPSED_MS"
check_ge "wrong password: AUTH was tried" 1 "$AUTH_TRIES"
check_le "wrong password: at most 5 AUTH attempts for 30 recipients (no retry storm)" 5 "$AUTH_TRIES"
check_eq "wrong password: nothing delivered" "$COUNT_BEFORE" "$(wc -l <"$AI1_COUNT")"
# The same with the relay's connections capped: the first failure ends the queue.
printf '[global]\nretry = 1s\n[isp default]\nmax_connections = 2\n' >"$E2E_TMP/relay2.conf"
AUTH_BEFORE=$(grep -Eci ">> b'AUTH " "$AI1_LOG")
send_run relay-bad2 --recipients "$R3B" "${RESOLVER[@]}" --config "$E2E_TMP/relay2.conf" \
    --relay "localhost:$AI1" --relay-user alice --relay-password-file "$E2E_TMP/bad.pw" --tls required
AUTH_TRIES=$(($(grep -Eci ">> b'AUTH " "$AI1_LOG") - AUTH_BEFORE))
echo "# wrong password, max_connections 2: $AUTH_TRIES AUTH commands seen by aiosmtpd"
check_eq "wrong password, max_connections 2: 30 failed auth_failed" 30 \
    "$(jcount "$E2E_TMP/relay-bad2.records" 'd.get("final") is True and d.get("reason") == "auth_failed"')"
check_range "wrong password, max_connections 2: 1..4 AUTH attempts, no retries" 1 4 "$AUTH_TRIES"
check_le "wrong password, max_connections 2: the run ends within 5 s" 5000 "$ELAPSED_MS"
"$RM" send --recipients "$R3B" --relay "localhost:$AI1" --relay-user alice --relay-password s3cret \
    >/dev/null 2>&1
check_eq "no option takes the password on the command line (exit 2)" 2 "$?"
stop_aiosmtpd "$AI1"

# Implicit TLS (465), password from the environment.
AI2=$(free_port)
AI2_COUNT=$E2E_TMP/ai465.jsonl
start_aiosmtpd "$AI2" "$CERTS/server.pem" "$CERTS/server.key" --implicit-tls --auth alice:s3cret \
    --count-file "$AI2_COUNT"
R3C=$E2E_TMP/relay465.rcpts
: >"$R3C"
recipients "$R3C" s gmail.test 5
recipients "$R3C" s other.test 5
RINGMAIL_RELAY_PASSWORD=s3cret send_run relay465 --recipients "$R3C" "${RESOLVER[@]}" \
    --relay "localhost:$AI2" --relay-implicit-tls --relay-user alice --tls verify --ca "$CERTS/ca.pem"
check_eq "relay implicit TLS, password from env: exit 0" 0 "$RC"
check_eq "relay implicit TLS: 10 accepted" 10 "$(jget "$E2E_TMP/relay465.json" accepted)"
check "relay implicit TLS: aiosmtpd got every recipient once, TLS + AUTH" pc aio_rcpts "$AI2_COUNT" "$R3C"
stop_aiosmtpd "$AI2"

# ================================================================ 4. SIGHUP reload + /metrics
start_sink hup 127.0.0.41
hup_conf() { # RATE [broken]
    {
        printf '[global]\ntls = none\nretry = 1s\nmax_age = 60s\n'
        [ -n "${2:-}" ] && printf 'this line is not a setting\n' # line 5
        printf '[isp hup]\ndomains = hup.test\nmax_connections = 4\nmsg_rate = %s\n' "$1"
        printf '[route hup.test]\nserver = 127.0.0.41:%s\n' "$MX_PORT"
    } >"$E2E_TMP/hup.conf.new" && mv "$E2E_TMP/hup.conf.new" "$E2E_TMP/hup.conf"
}
hup_conf 50/s
R4=$E2E_TMP/hup.rcpts
: >"$R4"
recipients "$R4" h hup.test 800
SAMPLES=$E2E_TMP/hup.samples
e2e_bg sampler "$E2E_PY" -c '
import json, sys, time
stats, out = sys.argv[1], sys.argv[2]
with open(out, "a") as f:
    while True:
        try:
            n = json.load(open(stats)).get("accepted_rcpts", 0)
            f.write("%d %d\n" % (int(time.time() * 1000), n)); f.flush()
        except (OSError, ValueError):
            pass
        time.sleep(0.05)' "${SINK_STATS[hup]}" "$SAMPLES"
SAMPLER_PID=$E2E_BG_PID
METRICS_PORT=$(free_port)
scrape() { # OUTFILE
    "$E2E_PY" -c '
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=3).read()
open(sys.argv[2], "wb").write(body)' "$METRICS_PORT" "$1"
}
t0=$(now_ms)
# Not under timeout(1): it would catch our SIGHUP, pass it on and then
# SIGKILL ringmail after its -k delay. A watchdog below bounds the wait.
"$RM" send --json --records "$E2E_TMP/hup.records" \
    --from bounce@sender.test --helo sender.test --recipients "$R4" --config "$E2E_TMP/hup.conf" \
    "${RESOLVER[@]}" --metrics "127.0.0.1:$METRICS_PORT" \
    >"$E2E_TMP/hup.json" 2>"$E2E_TMP/hup.err" &
SEND_PID=$!
e2e_cleanup "e2e_kill $SEND_PID"
# Wait for the first delivery (the SIGHUP handler is surely installed by then).
for ((i = 0; i < 100; i++)); do
    [ "$(tail -n 1 "$SAMPLES" 2>/dev/null | cut -d' ' -f2)" -ge 1 ] 2>/dev/null && break
    sleep 0.05
done
T1=$(now_ms)
check "metrics: GET /metrics answers during the run" scrape "$E2E_TMP/metrics1.txt"
for m in ringmail_messages_total ringmail_connections_open ringmail_rate_limit; do
    check "metrics: $m with isp=\"hup\"" pc metric "$E2E_TMP/metrics1.txt" "$m" hup
done
# sleep_until EPOCH_MS
sleep_until() {
    local d=$(($1 - $(now_ms)))
    [ "$d" -gt 0 ] && sleep "$((d / 1000)).$(printf '%03d' $((d % 1000)))"
    return 0
}
sleep_until $((T1 + 1500))
hup_conf 200/s broken
kill -HUP "$SEND_PID"
T_BAD1=$(now_ms)
sleep_until $((T1 + 3000))
hup_conf 200/s
kill -HUP "$SEND_PID"
T_GOOD=$(now_ms)
sleep_until $((T_GOOD + 1000))
scrape "$E2E_TMP/metrics2.txt" >/dev/null 2>&1
hup_conf 10/s broken
kill -HUP "$SEND_PID"
T_BAD2=$(now_ms)
for ((i = 0; i < SEND_TIMEOUT * 20; i++)); do
    _pid_alive "$SEND_PID" || break
    sleep 0.05
done
if _pid_alive "$SEND_PID"; then
    echo "# send hup: still running after ${SEND_TIMEOUT}s, killed"
    e2e_kill "$SEND_PID" 1
    RC=124
else
    wait "$SEND_PID"
    RC=$?
fi
echo "# send hup: exit $RC after $(($(now_ms) - t0)) ms: $(head -c 2000 "$E2E_TMP/hup.json" | tr '\n' ' ')"
sleep 0.3
e2e_kill "$SAMPLER_PID"
stop_sink hup
sed 's/^/#   stderr: /' "$E2E_TMP/hup.err" | head -n 10
echo "# hup: bad1 at +$((T_BAD1 - T1)) ms, good at +$((T_GOOD - T1)) ms, bad2 at +$((T_BAD2 - T1)) ms"
check_eq "hup: exit 0" 0 "$RC"
RATE_BEFORE=$(pc window_rate "$SAMPLES" $((T1 + 700)) "$T_BAD1")
RATE_REFUSED=$(pc window_rate "$SAMPLES" $((T_BAD1 + 300)) "$T_GOOD")
RATE_AFTER=$(pc window_rate "$SAMPLES" $((T_GOOD + 700)) $((T_GOOD + 1700)))
RATE_AFTER_BAD2=$(pc window_rate "$SAMPLES" $((T_BAD2 + 300)) $((T_BAD2 + 1300)))
echo "# hup rates: before $RATE_BEFORE/s, after refused reload $RATE_REFUSED/s, after reload $RATE_AFTER/s, after 2nd refused $RATE_AFTER_BAD2/s"
check_range "hup: 50/s in force at first (30..65/s)" 30 65 "$RATE_BEFORE"
check_grep "hup: broken file refused with FILE:LINE" 'config reload refused: .*hup\.conf:5: ' "$E2E_TMP/hup.err"
check_eq "hup: both broken reloads refused" 2 "$(grep -c 'config reload refused' "$E2E_TMP/hup.err")"
check_range "hup: refused reload left the old 50/s in force (30..65/s)" 30 65 "$RATE_REFUSED"
check_grep "hup: good file reloaded" 'config reloaded' "$E2E_TMP/hup.err"
check_ge "hup: new rate 200/s applies within a second (>= 150/s)" 150 "$RATE_AFTER"
check_ge "hup: refused reload keeps the reloaded 200/s (not 10/s, >= 150/s)" 150 "$RATE_AFTER_BAD2"
check "hup: every recipient accepted exactly once" pc once "${SINK_STATS[hup]}" "$R4" 'hup\.test$'
check_eq "hup: 800 accepted in the summary" 800 "$(jget "$E2E_TMP/hup.json" accepted)"
mval() { pc metric "$1" "$2" "$3" 2>/dev/null | awk '{ printf "%g", $1 }'; }
check_eq "metrics: ringmail_rate_limit{isp=\"hup\"} is 50 before the reload" 50 \
    "$(mval "$E2E_TMP/metrics1.txt" ringmail_rate_limit hup)"
check_eq "metrics: ringmail_rate_limit{isp=\"hup\"} is 200 after it" 200 \
    "$(mval "$E2E_TMP/metrics2.txt" ringmail_rate_limit hup)"

# ================================================================ 5. source addresses
start_sink srcA 127.0.0.51
start_sink srcB 127.0.0.52
src_conf() { # FILE SINK_IP MAX_CONNECTIONS MAX_MSGS_PER_CONN
    cat >"$1" <<CONF
[global]
tls = none
retry = 1s
source = 127.0.0.4
source = 127.0.0.5 2

[isp src]
domains = src.test
max_connections = $3
max_msgs_per_conn = $4

[route src.test]
server = $2:$MX_PORT
CONF
}
# A: config sources, weights 1 and 2; limits high enough that the weights,
# not max_connections, decide which source opens a connection.
src_conf "$E2E_TMP/srcA.conf" 127.0.0.51 100 1
src_conf "$E2E_TMP/srcB.conf" 127.0.0.52 2 2
R5=$E2E_TMP/src.rcpts
: >"$R5"
recipients "$R5" s src.test 120
send_run srcA --recipients "$R5" --config "$E2E_TMP/srcA.conf" "${RESOLVER[@]}"
RC_A=$RC
send_run srcB --recipients "$R5" --config "$E2E_TMP/srcB.conf" "${RESOLVER[@]}" \
    --source 127.0.0.2 --source 127.0.0.3
stop_sink srcA
stop_sink srcB
check_eq "config sources: exit 0" 0 "$RC_A"
check_eq "config sources: 120 accepted" 120 "$(jget "$E2E_TMP/srcA.json" accepted)"
check "config sources: connections from exactly 127.0.0.4 and 127.0.0.5" pc peers "${SINK_STATS[srcA]}" 127.0.0.4,127.0.0.5 100
check "config sources: the weight-2 source opened about twice the sessions" "$E2E_PY" -c '
import json, sys; p = json.load(open(sys.argv[1]))["peers"]
print(p); assert p["127.0.0.5"]["sessions"] >= 1.5 * p["127.0.0.4"]["sessions"]' "${SINK_STATS[srcA]}"
check_eq "--source: exit 0" 0 "$RC"
check_eq "--source: 120 accepted" 120 "$(jget "$E2E_TMP/srcB.json" accepted)"
check "--source overrides config sources: peers exactly 127.0.0.2 and 127.0.0.3, each <= 2 concurrent" \
    pc peers "${SINK_STATS[srcB]}" 127.0.0.2,127.0.0.3 2
check_range "--source: at most 2 connections per source address in all (<= 4)" 1 4 "$(sj srcB peak_concurrent)"
check "--source: records name the source address" pc each "$E2E_TMP/srcB.records" '@src\.test$' \
    'd.get("source") in ("127.0.0.2", "127.0.0.3")'

# A warming IP: [isp NAME source ADDR] gives one source its own limits with
# the ISP; the other source keeps the ISP's. 127.0.0.5 may have 1 connection
# and 20 msgs/s, 127.0.0.4 the ISP's 4 and 100/s: of 240 recipients the
# warming IP carries about a sixth (without its limits: about half).
start_sink srcW 127.0.0.55
cat >"$E2E_TMP/srcW.conf" <<CONF
[global]
tls = none
retry = 1s
source = 127.0.0.4
source = 127.0.0.5

[isp warm]
domains = warm.test
max_connections = 4
msg_rate = 100/s

[isp warm source 127.0.0.5]
max_connections = 1
msg_rate = 20/s

[route warm.test]
server = 127.0.0.55:$MX_PORT
CONF
R5W=$E2E_TMP/warm.rcpts
: >"$R5W"
recipients "$R5W" w warm.test 240
METRICS_W=$(free_port)
"$RM" send --json --records "$E2E_TMP/srcW.records" --from bounce@sender.test --helo sender.test \
    --recipients "$R5W" --config "$E2E_TMP/srcW.conf" --metrics "127.0.0.1:$METRICS_W" \
    >"$E2E_TMP/srcW.json" 2>"$E2E_TMP/srcW.err" &
WPID=$!
e2e_cleanup "e2e_kill $WPID"
wait_port 127.0.0.1 "$METRICS_W" 10 "$WPID"
"$E2E_PY" -c '
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=3).read()
open(sys.argv[2], "wb").write(body)' "$METRICS_W" "$E2E_TMP/srcW.metrics" 2>/dev/null
wait "$WPID"
RC=$?
sleep 0.3
stop_sink srcW
check_eq "warming IP: exit 0, 240 accepted" "0 240" "$RC $(jget "$E2E_TMP/srcW.json" accepted)"
check_eq "warming IP: the ISP's limit is the sum of its lanes (100 + 20/s)" 120 \
    "$(jget "$E2E_TMP/srcW.json" isps.warm.msg_rate_limit | cut -d. -f1)"
check "warming IP: 127.0.0.5 never had more than its 1 connection, 127.0.0.4 up to 4" "$E2E_PY" -c '
import json, sys; p = json.load(open(sys.argv[1]))["peers"]; print(p)
assert p["127.0.0.5"]["peak_concurrent"] == 1 and 1 <= p["127.0.0.4"]["peak_concurrent"] <= 4' \
    "${SINK_STATS[srcW]}"
check "warming IP: 127.0.0.5 carried its share at 20/s of 120/s (10..25%, not half)" "$E2E_PY" -c '
import json, sys; p = json.load(open(sys.argv[1]))["peers"]
a, b = p["127.0.0.4"]["accepted"], p["127.0.0.5"]["accepted"]
print("127.0.0.4: %d, 127.0.0.5: %d (%.0f%%)" % (a, b, 100.0 * b / (a + b)))
assert a + b == 240 and 0.10 <= b / 240.0 <= 0.25' "${SINK_STATS[srcW]}"
check "warming IP: /metrics shows each source's own rate with the ISP (100 and 20/s)" \
    grep -q 'ringmail_source_rate_limit{isp="warm",source="127.0.0.5"} 20$' "$E2E_TMP/srcW.metrics"
check "warming IP: ... and the other source at the ISP's 100/s" \
    grep -q 'ringmail_source_rate_limit{isp="warm",source="127.0.0.4"} 100$' "$E2E_TMP/srcW.metrics"
check "warming IP: /metrics has open connections per source" \
    grep -Eq 'ringmail_source_connections_open\{isp="warm",source="127.0.0.5"\} [01]$' "$E2E_TMP/srcW.metrics"
sed 's/source = 127.0.0.5$/source = 127.0.0.6/' "$E2E_TMP/srcW.conf" >"$E2E_TMP/srcW-typo.conf"
"$RM" send --recipients "$R5W" --config "$E2E_TMP/srcW-typo.conf" >/dev/null 2>"$E2E_TMP/srcW-typo.err"
check_eq "warming IP: limits for an address that is not a source: refused at start, exit 2" 2 "$?"
check_grep "warming IP: ... and says which section and why" \
    'isp warm source 127\.0\.0\.5\]: 127\.0\.0\.5 is not one of the source addresses' "$E2E_TMP/srcW-typo.err"
printf '[isp warm source 127.0.0.5]\nrule = 421 => bounce\n' >"$E2E_TMP/srcW-bad.conf"
"$RM" send --recipients "$R5W" --config "$E2E_TMP/srcW-bad.conf" >/dev/null 2>"$E2E_TMP/srcW-bad.err"
check_grep "warming IP: a setting that is per ISP only is refused with FILE:LINE" \
    "srcW-bad\.conf:2: 'rule' cannot be set per source" "$E2E_TMP/srcW-bad.err"

# ================================================================ 5b. RCPT batching
# --message: one body for every recipient, so the recipients of one
# destination share transactions, at most max_rcpts_per_msg RCPTs each; every
# recipient still gets its own outcome (permfail@ refused, tempfail@ retried
# alone) and nobody gets the body twice.
start_sink batch 127.0.0.53
start_sink batch1 127.0.0.54
batch_conf() { # FILE MAX_RCPTS_PER_MSG SINK_IP
    cat >"$1" <<CONF
[global]
tls = none
retry = 300ms
max_age = 1s

[isp batch]
domains = batch.test, batch2.test
max_connections = 2
max_rcpts_per_msg = $2

[route batch.test]
server = $3:$MX_PORT
[route batch2.test]
server = $3:$MX_PORT
CONF
}
batch_conf "$E2E_TMP/batch7.conf" 7 127.0.0.53
batch_conf "$E2E_TMP/batch1.conf" 1 127.0.0.54
printf 'From: News <news@sender.test>\nTo: undisclosed-recipients:;\nSubject: one body for all\n\nHello.\n.a line that starts with a dot\n' \
    >"$E2E_TMP/batch.eml"
R6=$E2E_TMP/batch.rcpts
: >"$R6"
recipients "$R6" b batch.test 60
printf '%s\n' permfail@batch.test tempfail@batch.test >>"$R6"
recipients "$R6" c batch2.test 10
send_run batch --recipients "$R6" --message "$E2E_TMP/batch.eml" --config "$E2E_TMP/batch7.conf"
check_eq "batching: exit 0" 0 "$RC"
check_eq "batching: 70 accepted" 70 "$(jget "$E2E_TMP/batch.json" accepted)"
check_eq "batching: permfail@ rejected" 1 "$(jget "$E2E_TMP/batch.json" rejected)"
check_eq "batching: tempfail@ expired after its retries" 1 "$(jget "$E2E_TMP/batch.json" expired)"
sleep 0.3
check_eq "batching: the sink saw at most max_rcpts_per_msg 7 RCPTs in a message (and 7)" 7 \
    "$(sj batch max_rcpts_per_msg)"
# 60 + permfail + tempfail on batch.test (62, so 9 transactions), 10 on
# batch2.test (2): permfail's and tempfail's messages still carry others.
check_range "batching: 70 recipients in 11..13 accepted messages" 11 13 "$(sj batch messages)"
check "batching: every accepted recipient got the body exactly once" \
    pc once "${SINK_STATS[batch]}" "$R6" '^[bc][0-9]+@'
check "batching: permfail@ rejected 550 5.1.1 on its own, final" \
    pc final "$E2E_TMP/batch.records" permfail@batch.test \
    'd["outcome"] == "rejected" and d.get("code") == 550 and d.get("data_in_flight") is False'
check "batching: tempfail@ retried alone (attempt >= 2), the others accepted at attempt 1" "$E2E_PY" -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
t = [r for r in rows if r["rcpt"] == "tempfail@batch.test"]
others = [r for r in rows if r["rcpt"][0] in "bc" and r["outcome"] == "accepted"]
print(len(t), "tempfail attempts;", len(others), "accepted")
assert len(t) >= 2 and all(r["outcome"] == "deferred" for r in t[:-1])
assert t[-1]["outcome"] == "expired" and t[-1]["final"] is True
assert len(others) == 70 and all(r["attempt"] == 1 for r in others)' "$E2E_TMP/batch.records"
check "batching: tempfail@'s 451 4.7.1 deferrals are soft policy-related, its expiry message-expired" "$E2E_PY" -c '
import json, sys
t = [json.loads(l) for l in open(sys.argv[1]) if l.strip() and "tempfail@" in l]
print([(r["outcome"], r.get("category"), r.get("bounce")) for r in t])
assert all(r["code"] == 451 and r["category"] == "policy-related" and r["bounce"] == "soft"
           and r["bounce_rule"].startswith("rfc3463: X.7.") for r in t[:-1])
assert t[-1]["category"] == "message-expired" and t[-1]["bounce"] == "soft"' "$E2E_TMP/batch.records"
# An operator's [bounce] rule comes before the shipped ones.
printf '\n[bounce]\nrule = sink tempfail => quota-issues soft\n' >>"$E2E_TMP/batch1.conf"
send_run batch1 --recipients "$R6" --message "$E2E_TMP/batch.eml" --config "$E2E_TMP/batch1.conf"
stop_sink batch
stop_sink batch1
check_eq "max_rcpts_per_msg 1: 70 accepted" 70 "$(jget "$E2E_TMP/batch1.json" accepted)"
check "[bounce] rule: tempfail@'s deferrals are quota-issues by 'config: sink tempfail'" \
    pc any "$E2E_TMP/batch1.records" '^tempfail@' \
    'd["outcome"] == "deferred" and d.get("category") == "quota-issues" and d.get("bounce_rule") == "config: sink tempfail"'
check_eq "max_rcpts_per_msg 1: one RCPT per message" 1 "$(sj batch1 max_rcpts_per_msg)"
check_eq "max_rcpts_per_msg 1: 70 accepted messages" 70 "$(sj batch1 messages)"
printf '[global]\ntls = none\n[isp x]\nmax_rcpts_per_msg = 0\n' >"$E2E_TMP/batch0.conf"
"$RM" send --recipients "$R6" --message "$E2E_TMP/batch.eml" --config "$E2E_TMP/batch0.conf" \
    >/dev/null 2>"$E2E_TMP/batch0.out"
check_eq "max_rcpts_per_msg 0: config refused, exit 2" 2 "$?"
check_grep "max_rcpts_per_msg 0: FILE:LINE and the range" 'batch0\.conf:4: max_rcpts_per_msg.*1\.\.1000' \
    "$E2E_TMP/batch0.out"
printf 'Subject: no blank line, no body\n' >"$E2E_TMP/nobody.eml"
"$RM" send --recipients "$R6" --message "$E2E_TMP/nobody.eml" >/dev/null 2>"$E2E_TMP/nobody.out"
check_eq "--message without a header/body separator: exit 2" 2 "$?"
check_grep "--message without a separator: says why" 'not a message: no blank line ends the header' \
    "$E2E_TMP/nobody.out"

cat "$E2E_TMP"/*.err >"$E2E_TMP/all-send.stderr" 2>/dev/null
# ================================================================ 6. terminal status + ISP table
start_sink tty 127.0.0.61
cat >"$E2E_TMP/tty.conf" <<CONF
[global]
tls = none
[isp slow]
domains = tty.test
msg_rate = 60/s
[route tty.test]
server = 127.0.0.61:$MX_PORT
CONF
recipients "$E2E_TMP/tty.rcpts" t tty.test 150
script -qec "$RM send --recipients $E2E_TMP/tty.rcpts --config $E2E_TMP/tty.conf" /dev/null \
    >"$E2E_TMP/tty.out" 2>&1
stop_sink tty
check "terminal: a live status line (done / total, %, rate, outcomes, connections)" \
    grep -Eq "[0-9,]+ / 150 recipients final \([0-9.]+%\)  [0-9,]+ msgs/s .*accepted [0-9,]+  deferrals 0  in flight [0-9,]+  connections [0-9]+" \
    "$E2E_TMP/tty.out"
check "terminal: the exit table has the ISP with its limit and delivered rate" \
    grep -Eq "^slow +150 +150 +0 +0 +0 +[0-9.]+ +60\.0 " "$E2E_TMP/tty.out"

check_no_grep "no sanitizer report from any ringmail send run" 'Sanitizer|runtime error:' \
    "$E2E_TMP/all-send.stderr"
echo "# runtime: $(($(now_ms) - T_START)) ms"
e2e_finish
