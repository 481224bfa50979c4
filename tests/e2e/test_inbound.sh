#!/usr/bin/env bash
# `ringmail inbound`: the return path's SMTP server, recording what comes
# back in PostgreSQL before it answers 250.
#   1. usage: --help, every usage error and start-up failure by its text
#      (no --listen/--http, no --db, no --config, a config without
#      [feedback], TLS half given, bad numbers and addresses, the database
#      unreachable, the port taken); --http alone serves without --listen
#   2. a real bounce: `ringmail send` delivers a campaign to a private
#      Postfix (mx.receiver.test) that relays to a sink refusing with 550
#      5.1.1; Postfix writes the DSN itself and delivers it to inbound (its
#      transport for bounces.sender.test): a bounce row (dsn, the right
#      campaign and recipient, 5.1.1, the sink's text, the reporting MTA),
#      the recipient's feedback 'bounce', a suppression row
#   3. the server: relay denied, the null sender, SIZE over the limit
#      (552), STARTTLS, two messages pipelined on one connection (each
#      answered after its own commit), a complaint that holds the ISP
#      (said on stderr), the per-client and total session limits, the
#      idle timeout
#   4. PostgreSQL stopped: a message gets 451 and the session goes on;
#      Postfix's bounce is deferred (451) and queued; PostgreSQL back: the
#      same message gets 250, Postfix's retry is delivered: one row each
#   5. bad input: 10 MB of garbage (recorded unmatched), malformed MIME
#      (recorded), 13 MB over the limit (552), the server still serving
#   6. SIGTERM with the writer stuck behind a table lock: another session
#      is served meanwhile; the message in the commit gets 250 once it is
#      through, the queued one 421, an open session 421; exit 0, the summary;
#      PostgreSQL frozen in a commit: the stop's deadline, then exit 1
#      without the writer, said on stderr
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
e2e_require swaks postfix || { e2e_finish; exit 1; }
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null

SECRET=$E2E_TMP/feedback.secret
head -c 48 /dev/urandom >"$SECRET"
chmod 600 "$SECRET"
FM() { "$E2E_PY" "$E2E_DIR/feedback_mail.py" "$@" --secret "$SECRET"; }
RP=bounces.sender.test

# The pieces: a sink that refuses every recipient, Postfix in front of it,
# and inbound.
SINK_PORT=$(free_port)
start_sink refuser 127.0.0.1 --reject-pct 100 \
    --reject-reply "550 5.1.1 <pf1@x.test>: Recipient address rejected: User unknown (refusing sink)" ||
    { check "sink starts" false; e2e_finish; exit 1; }
IN_PORT=$(free_port)
PF_PORT=$(free_port)

cat >"$E2E_TMP/fb.conf" <<CONF
[global]
tls = none
retry = 300ms
max_age = 20s
[isp x]
domains = x.test
max_connections = 2
[route x.test]
server = 127.0.0.1:$PF_PORT
[feedback]
return_path = $RP
secret_file = $SECRET
complaint_pause = 20%
complaint_min_sample = 1
CONF

# ============================================================ 1. usage
"$RM" inbound --help >"$E2E_TMP/help.out" 2>&1
check_eq "--help: exit 0" 0 "$?"
check_grep "--help: names --listen and --http" "--listen ADDR:PORT.*--db URL" "$E2E_TMP/help.out"
"$RM" inbound --db "$PG_URL" --config "$E2E_TMP/fb.conf" >/dev/null 2>"$E2E_TMP/u1.err"
check_eq "no --listen nor --http: exit 2" 2 "$?"
check_grep "no --listen nor --http: says so" \
    "^ringmail inbound: give --listen ADDR:PORT or --http ADDR:PORT$" "$E2E_TMP/u1.err"
sed '/^\[feedback\]/,$d' "$E2E_TMP/fb.conf" >"$E2E_TMP/nofb.conf"
"$RM" inbound --listen "127.0.0.1:$IN_PORT" --db "$PG_URL" --config "$E2E_TMP/nofb.conf" \
    >/dev/null 2>"$E2E_TMP/u2.err"
check_eq "config without [feedback]: exit 1" 1 "$?"
check_grep "config without [feedback]: says what is needed" \
    "^ringmail inbound: --config $E2E_TMP/nofb.conf has no \[feedback\] section: inbound needs its return_path and secret_file$" \
    "$E2E_TMP/u2.err"

# usage_error NAME EXIT TEXT ARGS...: inbound ARGS exits EXIT and says TEXT (a whole line)
usage_error() {
    local name=$1 code=$2 text=$3
    shift 3
    "$RM" inbound "$@" >/dev/null 2>"$E2E_TMP/usage.err"
    check_eq "$name: exit $code" "$code" "$?"
    check_grep "$name: says so" "^ringmail inbound: $text\$" "$E2E_TMP/usage.err"
}
usage_error "no --db" 2 "--db URL is required" --listen "127.0.0.1:$IN_PORT" \
    --config "$E2E_TMP/fb.conf"
usage_error "no --config" 2 \
    "--config FILE is required: inbound needs the \[feedback\] return_path and secret_file" \
    --listen "127.0.0.1:$IN_PORT" --db "$PG_URL"
usage_error "--tls-cert alone" 2 "--tls-cert and --tls-key go together" \
    --listen "127.0.0.1:$IN_PORT" --db "$PG_URL" --config "$E2E_TMP/fb.conf" --tls-cert x.pem
usage_error "a bad --timeout" 2 "--timeout: not a number in \[1, 86400\]" \
    --listen "127.0.0.1:$IN_PORT" --db "$PG_URL" --config "$E2E_TMP/fb.conf" --timeout 0
usage_error "a bad --listen" 2 "--listen nowhere: .*" --listen nowhere --db "$PG_URL" \
    --config "$E2E_TMP/fb.conf"
usage_error "database unreachable at start" 1 "connecting to PostgreSQL: .*" \
    --listen "127.0.0.1:$IN_PORT" --db "host=127.0.0.1 port=1 connect_timeout=2" \
    --config "$E2E_TMP/fb.conf"
"$E2E_PY" -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
time.sleep(3)' "$IN_PORT" &
HOLDER=$!
wait_port 127.0.0.1 "$IN_PORT" 5
usage_error "the port taken" 1 "cannot listen on 127.0.0.1:$IN_PORT: Address already in use" \
    --listen "127.0.0.1:$IN_PORT" --db "$PG_URL" --config "$E2E_TMP/fb.conf"
kill "$HOLDER" 2>/dev/null
wait "$HOLDER" 2>/dev/null
wait_port_free 127.0.0.1 "$IN_PORT" 5

# --http alone: no SMTP, the endpoint only (campaign/inbound_http.c's own test covers it)
HTTP_PORT=$(free_port)
e2e_bg http "$RM" inbound --http "127.0.0.1:$HTTP_PORT" --db "$PG_URL" --config "$E2E_TMP/fb.conf"
HTTP_PID=$E2E_BG_PID
check "--http alone: serves without --listen" wait_port 127.0.0.1 "$HTTP_PORT" 10 "$HTTP_PID"
check_eq "--http alone: /healthz answers" ok "$(curl -s "http://127.0.0.1:$HTTP_PORT/healthz")"
kill -TERM "$HTTP_PID"
wait "$HTTP_PID"
check_eq "--http alone: SIGTERM, exit 0" 0 "$?"

# ============================================================ inbound and Postfix
start_inbound() { # NAME PORT [options]: inbound on 127.0.0.1:PORT, log $E2E_TMP/NAME.log
    local name=$1 port=$2
    shift 2
    e2e_bg "$name" "$RM" inbound --listen "127.0.0.1:$port" --db "$PG_URL" \
        --config "$E2E_TMP/fb.conf" --hostname "$RP" --verbose "$@"
    wait_port 127.0.0.1 "$port" 10 "$E2E_BG_PID"
}
start_inbound inbound "$IN_PORT" --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key" \
    --max-size 12000000 || { check "inbound starts" false; e2e_finish; exit 1; }
INBOUND_PID=$E2E_BG_PID

# Postfix as the recipients' MX: x.test is relayed to the refusing sink,
# bounces for the return path go to inbound; retries every second.
PF=$E2E_TMP/pf
pf_start() {
    local q
    q=$(postfix_instance "$PF") || return 1
    {
        postfix_main_cf_base "$PF" "$q" postfix-inbound mx.receiver.test receiver.test
        cat <<CF
inet_interfaces = 127.0.0.1
relay_domains = x.test
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
transport_maps = inline:{ x.test=smtp:[127.0.0.1]:$SINK_PORT, $RP=smtp:[127.0.0.1]:$IN_PORT }
smtp_tls_security_level = none
smtpd_peername_lookup = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 0
smtp_connection_cache_on_demand = no
in_flow_delay = 0
CF
    } >"$PF/conf/main.cf"
    {
        echo "127.0.0.1:$PF_PORT inet n - n - - smtpd"
        echo "pickup unix n - n 60 1 pickup"
        echo "cleanup unix n - n - 0 cleanup"
        postfix_master_cf_base
        echo "smtp unix - - n - - smtp"
        echo "relay unix - - n - - smtp"
        echo "postlog unix-dgram n - n - 1 postlogd"
    } >"$PF/conf/master.cf"
    touch -d '-1 minute' "$PF/conf/main.cf" "$PF/conf/master.cf"
    e2e_cleanup "stop_postfix '$PF'"
    postfix -c "$PF/conf" start </dev/null >"$PF/start.log" 2>&1 || { cat "$PF/start.log" >&2; return 1; }
    wait_port 127.0.0.1 "$PF_PORT" 15
}
pf_start || { check "postfix starts" false; cat "$PF/maillog"; e2e_finish; exit 1; }

# rows WHERE: feedback_event rows matching WHERE
rows() { psql_q "SELECT count(*) FROM ringmail.feedback_event WHERE $1"; }
# wait_rows WHERE N [S]: until at least N rows match
wait_rows() {
    local i
    for ((i = 0; i < ${3:-20} * 10; i++)); do
        [ "$(rows "$1")" -ge "$2" ] && return 0
        sleep 0.1
    done
    return 1
}

# ============================================================ 2. a real bounce through Postfix
C1=$(new_campaign pf 1 x.test)
R1=$(psql_q "SELECT id FROM ringmail.recipient WHERE campaign_id = $C1")
timeout 60 "$RM" send --db "$PG_URL" --campaign "$C1" --config "$E2E_TMP/fb.conf" --node n1 \
    --journal "$E2E_TMP/n1.journal" --json >"$E2E_TMP/c1.json" 2>"$E2E_TMP/c1.err"
check_eq "campaign: send exits 0" 0 "$?"
check "postfix bounced it and inbound recorded the DSN" wait_rows "campaign_id = $C1" 1 20
IFS=$'\t' read -r KIND SRC CAMP RCPT STATUS DIAG MTA <<<"$(psql_q "SELECT kind, source,
    campaign_id, recipient_id, status, diagnostic, reporting_mta FROM ringmail.feedback_event
    WHERE campaign_id = $C1")"
check_eq "postfix DSN: kind bounce" bounce "$KIND"
check_eq "postfix DSN: source dsn" dsn "$SRC"
check_eq "postfix DSN: the campaign" "$C1" "$CAMP"
check_eq "postfix DSN: the recipient" "$R1" "$RCPT"
check_eq "postfix DSN: status 5.1.1" 5.1.1 "$STATUS"
printf '%s\n' "$DIAG" >"$E2E_TMP/diag.txt"
check_grep "postfix DSN: the diagnostic is the refusing server's" \
    "^smtp; 550 5.1.1 <pf1@x.test>: Recipient address rejected: User unknown \(refusing sink\)$" \
    "$E2E_TMP/diag.txt"
check_eq "postfix DSN: the reporting MTA is Postfix" "mx.receiver.test" "$MTA"
check_eq "postfix DSN: the recipient's feedback is bounce" bounce \
    "$(psql_q "SELECT feedback FROM ringmail.recipient WHERE id = $R1")"
check_eq "postfix DSN: the bad mailbox is suppressed" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.suppression WHERE address = 'pf1@x.test'")"
check_grep "postfix DSN: postfix delivered the bounce to inbound with 250" \
    "to=<b-[a-z2-7]+@$RP>.*status=sent \(250 2.0.0 Ok: recorded\)" "$PF/maillog"
check_grep "postfix DSN: one log line for the message" \
    "client=127.0.0.1 from=<> rcpts=b-[a-z2-7]+@$RP size=[0-9]+: 250 recorded \(batch of 1: events 1, bounces 1" \
    "$E2E_TMP/inbound.log"

# ============================================================ 3. the server
probe() { smtp_probe "$IN_PORT" "$@" >"$E2E_TMP/probe.out" 2>&1; }
check "relay denied for another domain" probe '<220' '>EHLO c.test' '<250' '>MAIL FROM:<a@c.test>' \
    '<250' '>RCPT TO:<x@other.test>' \
    '<550' '>QUIT' '<221'
check_grep "relay denied: the text" \
    "550 5.7.1 Relaying denied: this server takes mail only for $RP" "$E2E_TMP/probe.out"
check "the return path's domain in any case, any local part; the null sender" \
    probe '<220' '>EHLO c.test' '<250' '>MAIL FROM:<>' '<250' \
    '>RCPT TO:<postmaster@BOUNCES.Sender.Test>' '<250' '>RCPT TO:<abuse@bounces.sender.test>' '<250' \
    '>RSET' '<250' '>QUIT' '<221'
check "SIZE over the limit: 552" probe '<220' '>EHLO c.test' '<250' \
    '>MAIL FROM:<> SIZE=20000000' '<552' '>QUIT' '<221'
check_grep "SIZE over the limit: the text" "552 5.3.4 Message size exceeds fixed limit" \
    "$E2E_TMP/probe.out"
FM dsn --campaign 999 --recipient 1 --address nobody@x.test >"$E2E_TMP/tls.eml"
swaks --server "127.0.0.1:$IN_PORT" --tls --from '<>' --to "b-tls@$RP" --data "@$E2E_TMP/tls.eml" \
    >"$E2E_TMP/swaks.tls" 2>&1
check_eq "STARTTLS: swaks --tls exits 0" 0 "$?"
check_grep "STARTTLS: recorded after TLS" "<~  250 2.0.0 Ok: recorded" "$E2E_TMP/swaks.tls"

# Two messages in one write: the second is read only after the first's commit.
C2=$(new_campaign pp 2 x.test)
psql_q "SELECT id FROM ringmail.recipient WHERE campaign_id = $C2 ORDER BY id" >"$E2E_TMP/c2.ids"
mapfile -t R2 <"$E2E_TMP/c2.ids"
dsn_steps() { # CAMPAIGN RECIPIENT ADDRESS: the pipelined steps of one DSN
    local tok
    tok=$(FM token b "$1" "$2")
    FM dsn --campaign "$1" --recipient "$2" --address "$3" | sed 's/^\./../' >"$E2E_TMP/p.eml"
    echo "+MAIL FROM:<>"
    echo "+RCPT TO:<$tok@$RP>"
    echo "+DATA"
    while IFS= read -r l; do echo "+${l%$'\r'}"; done <"$E2E_TMP/p.eml"
    echo "+."
}
{
    dsn_steps "$C2" "${R2[0]}" pp1@x.test
    dsn_steps "$C2" "${R2[1]}" pp2@x.test
} >"$E2E_TMP/pipe.steps"
BEFORE=$(grep -c "250 recorded (batch of 1" "$E2E_TMP/inbound.log")
mapfile -t STEPS <"$E2E_TMP/pipe.steps"
check "two messages pipelined: 250 250 354 250, twice" \
    probe '<220' '>EHLO c.test' '<250' "${STEPS[@]}" '+QUIT' \
    '<250' '<250' '<354' '<250' '<250' '<250' '<354' '<250' '<221'
check_eq "two messages pipelined: two rows" 2 "$(rows "campaign_id = $C2 AND kind = 'bounce'")"
check_eq "two messages pipelined: two commits of one message each" $((BEFORE + 2)) \
    "$(grep -c "250 recorded (batch of 1" "$E2E_TMP/inbound.log")"

# A complaint about the campaign's one delivered recipient: over 20%, held, said loudly.
FM arf --campaign "$C1" --recipient "$R1" --address pf1@x.test >"$E2E_TMP/arf.eml"
swaks --server "127.0.0.1:$IN_PORT" --from '<>' --to "abuse@$RP" --data "@$E2E_TMP/arf.eml" \
    >"$E2E_TMP/swaks.arf" 2>&1
check_grep "complaint: recorded (250)" "<- +250 2.0.0 Ok: recorded" "$E2E_TMP/swaks.arf"
check_eq "complaint: the ISP is held for the campaign" x \
    "$(psql_q "SELECT isp FROM ringmail.isp_hold WHERE campaign_id = $C1")"
check_grep "complaint: the hold is said on stderr" \
    "^ringmail inbound: complaint guard: campaign $C1, isp x: 1 complaints over 1 delivered .*held" \
    "$E2E_TMP/inbound.log"

# A second inbound with small limits: 2 sessions per client, 1 s idle.
IN2_PORT=$(free_port)
start_inbound inbound2 "$IN2_PORT" --max-per-client 2 --max-conns 3 --timeout 1 ||
    { check "inbound2 starts" false; e2e_finish; exit 1; }
INBOUND2_PID=$E2E_BG_PID
"$E2E_PY" - "$IN2_PORT" >"$E2E_TMP/limits.out" 2>&1 <<'PY'
import socket, sys, time
port = int(sys.argv[1])
def greet(source="127.0.0.1"):
    s = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
    s.settimeout(5)
    return s, s.recv(512).decode().strip()
held = [greet() for _ in range(2)]
third = greet()
print("third:", third[1])
held.append(greet("127.0.0.2"))
print("other address:", held[-1][1])
print("over the total:", greet("127.0.0.3")[1])
t0 = time.time()
s = held[0][0]
data = s.recv(512).decode().strip()
print("idle: %s after %.1fs" % (data, time.time() - t0))
PY
check_grep "per-client limit: the third session is refused" \
    "^third: 421 4.7.0 Too many connections from your address$" "$E2E_TMP/limits.out"
check_grep "per-client limit: another address still gets in" "^other address: 220 " \
    "$E2E_TMP/limits.out"
check_grep "--max-conns: over the total, refused" \
    "^over the total: 421 4.7.0 Too many connections, try again later$" "$E2E_TMP/limits.out"
check_grep "idle timeout: 421 after about a second" "^idle: 421 4.4.2 Timeout: closing after [01]\." \
    "$E2E_TMP/limits.out"

# ============================================================ 4. PostgreSQL stopped
C3=$(new_campaign down 2 x.test)
psql_q "SELECT id FROM ringmail.recipient WHERE campaign_id = $C3 ORDER BY id" >"$E2E_TMP/c3.ids"
mapfile -t R3 <"$E2E_TMP/c3.ids"
FM dsn --campaign "$C3" --recipient "${R3[0]}" --address down1@x.test >"$E2E_TMP/down.eml"
TOK3=$(FM token b "$C3" "${R3[0]}")
TOK4=$(FM token b "$C3" "${R3[1]}")
# The test cluster runs with synchronous_commit off: without a checkpoint the
# immediate stop could lose the campaign just created (then the DSNs below
# would rightly be unmatched).
psql_q "CHECKPOINT" >/dev/null
stop_postgres "$PG_DIR"
swaks --server "127.0.0.1:$IN_PORT" --from '<>' --to "$TOK3@$RP" --data "@$E2E_TMP/down.eml" \
    >"$E2E_TMP/swaks.down" 2>&1
check_grep "database away: 451 after the data" \
    "<\*\* +451 4.3.0 Feedback store unavailable, try again later" "$E2E_TMP/swaks.down"
check_grep "database away: the session goes on (QUIT answered)" "<- +221 " "$E2E_TMP/swaks.down"
check_grep "database away: said once on stderr" "^ringmail inbound: database unavailable: " \
    "$E2E_TMP/inbound.log"
# Postfix's bounce for down2 is refused with 451 and stays queued.
swaks --server "127.0.0.1:$PF_PORT" --from "$TOK4@$RP" --to down2@x.test >"$E2E_TMP/swaks.pf" 2>&1
check "postfix tries the bounce and is told 451" wait_for_log "$PF/maillog" \
    "to=<$TOK4@$RP>.*status=deferred.*451 4.3.0 Feedback store unavailable" 20
_pg_as "'$(pg_bin)/pg_ctl' -D '$PG_DIR/data' -w -t 30 -l '$PG_DIR/pg.log' \
    -o \"-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1 -c fsync=off\" start" >/dev/null 2>&1
check "postgres is back" psql_q "SELECT 1"
swaks --server "127.0.0.1:$IN_PORT" --from '<>' --to "$TOK3@$RP" --data "@$E2E_TMP/down.eml" \
    >"$E2E_TMP/swaks.back" 2>&1
check_grep "database back: the same message gets 250" "<- +250 2.0.0 Ok: recorded" "$E2E_TMP/swaks.back"
check_eq "database back: exactly one row for it" 1 "$(rows "recipient_id = ${R3[0]}")"
check "database back: postfix's retry is delivered" wait_rows "recipient_id = ${R3[1]}" 1 20
check_eq "database back: exactly one row for postfix's bounce" 1 "$(rows "recipient_id = ${R3[1]}")"
check_grep "database back: said on stderr" "^ringmail inbound: database back: committing again$" \
    "$E2E_TMP/inbound.log"

# ============================================================ 5. bad input
"$E2E_PY" - "$E2E_TMP" <<'PY'
import os, sys
d = sys.argv[1]
rnd = os.urandom(7_500_000)
import base64
garbage = base64.b64encode(rnd).replace(b"+", b"\r\n")[:10_000_000]
open(d + "/garbage.eml", "wb").write(garbage)
open(d + "/big.eml", "wb").write(b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n" + (b"y" * 998 + b"\r\n") * 13000)
open(d + "/badmime.eml", "wb").write(
    b"From: <mailer-daemon@x.test>\r\nSubject: Undelivered\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"nope\r\n\r\n"
    b"--nope\r\nContent-Type: message/delivery-status\r\n\r\nStatus: 5.1.1\r\nAction\r\n"
    b"--nope\r\nContent-Type: text/plain; charset=\"\xff\xfe\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"!!!!not base64\r\n--nope-")
PY
BEFORE=$(rows "kind = 'unmatched'")
swaks --server "127.0.0.1:$IN_PORT" --from '<>' --to "garbage@$RP" --data "@$E2E_TMP/garbage.eml" \
    >"$E2E_TMP/swaks.garbage" 2>&1
check_grep "10 MB of garbage: recorded (250)" "<- +250 2.0.0 Ok: recorded" "$E2E_TMP/swaks.garbage"
swaks --server "127.0.0.1:$IN_PORT" --from '<>' --to "b-broken@$RP" --data "@$E2E_TMP/badmime.eml" \
    >"$E2E_TMP/swaks.badmime" 2>&1
check_grep "malformed MIME: recorded (250)" "<- +250 2.0.0 Ok: recorded" "$E2E_TMP/swaks.badmime"
check_eq "garbage and malformed MIME: two unmatched rows" $((BEFORE + 2)) "$(rows "kind = 'unmatched'")"
check_le "garbage: the raw message kept is bounded" 4096 \
    "$(psql_q "SELECT max(octet_length(raw)) FROM ringmail.feedback_event")"
swaks --server "127.0.0.1:$IN_PORT" --from '<>' --to "big@$RP" --data "@$E2E_TMP/big.eml" \
    >"$E2E_TMP/swaks.big" 2>&1
check_grep "13 MB over --max-size: 552 after the data" "<\*\* +552 5.3.4 Message size exceeds fixed limit" \
    "$E2E_TMP/swaks.big"
check "still serving afterwards" probe '<220' '>EHLO c.test' '<250' '>QUIT' '<221'

# ============================================================ 6. SIGTERM
# The writer is stuck behind a table lock with message A in its commit and
# message B queued; a third session is served meanwhile (the loop never
# waits for PostgreSQL). SIGTERM: A is answered 250 once its commit is
# through, B gets 421 (never tried: its MTA retries), an open session 421.
C4=$(new_campaign stop 2 x.test)
psql_q "SELECT id FROM ringmail.recipient WHERE campaign_id = $C4 ORDER BY id" >"$E2E_TMP/c4.ids"
mapfile -t R4 <"$E2E_TMP/c4.ids"
FM dsn --campaign "$C4" --recipient "${R4[0]}" --address stop1@x.test >"$E2E_TMP/a.eml"
FM dsn --campaign "$C4" --recipient "${R4[1]}" --address stop2@x.test >"$E2E_TMP/b.eml"
psql "$PG_URL" -X -q -c "BEGIN; LOCK TABLE ringmail.feedback_event IN ACCESS EXCLUSIVE MODE;
    SELECT pg_sleep(4); COMMIT;" >/dev/null 2>&1 &
LOCKER=$!
waiting() { # N: until N backends wait for a lock
    local i
    for ((i = 0; i < 100; i++)); do
        [ "$(psql_q "SELECT count(*) FROM pg_locks WHERE NOT granted")" -ge "$1" ] && return 0
        sleep 0.05
    done
    return 1
}
sleep 0.3
swaks --server "127.0.0.1:$IN_PORT" --from '<>' --to "$(FM token b "$C4" "${R4[0]}")@$RP" \
    --data "@$E2E_TMP/a.eml" >"$E2E_TMP/swaks.a" 2>&1 &
SWAKS_A=$!
check "stop: message A's commit waits for the lock" waiting 1
swaks --server "127.0.0.1:$IN_PORT" --from '<>' --to "$(FM token b "$C4" "${R4[1]}")@$RP" \
    --data "@$E2E_TMP/b.eml" >"$E2E_TMP/swaks.b" 2>&1 &
SWAKS_B=$!
check "stop: another session is served while the writer waits" \
    smtp_probe --timeout 2 "$IN_PORT" '<220' '>EHLO c.test' '<250' '>NOOP' '<250' '>QUIT' '<221'
wait_for_log "$E2E_TMP/swaks.b" "^ -> \.$" 5 >/dev/null
# An open session hears 421 when inbound stops.
"$E2E_PY" - "$IN_PORT" "$E2E_TMP/open.ready" >"$E2E_TMP/open.out" 2>&1 <<'PY' &
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(10)
s.recv(512)
s.sendall(b"EHLO c.test\r\n")
s.recv(512)
open(sys.argv[2], "w").close()
print("open: " + s.recv(512).decode().strip())
PY
OPEN_PID=$!
for _ in $(seq 1 100); do [ -f "$E2E_TMP/open.ready" ] && break; sleep 0.05; done
kill -TERM "$INBOUND_PID"
wait "$INBOUND_PID"
check_eq "SIGTERM: exit 0" 0 "$?"
wait "$OPEN_PID"
check_grep "SIGTERM: an open session hears 421" "^open: 421 4.3.2 Shutting down, try again later$" \
    "$E2E_TMP/open.out"
wait "$SWAKS_A" "$SWAKS_B" "$LOCKER"
check_grep "SIGTERM: message A, in the commit, is answered 250" "<- +250 2.0.0 Ok: recorded" \
    "$E2E_TMP/swaks.a"
check_grep "SIGTERM: message B, never tried, gets 421" \
    "<\*\* +421 4.3.2 Shutting down, try again later" "$E2E_TMP/swaks.b"
check_eq "SIGTERM: A is recorded, B is not" "1 0" \
    "$(rows "recipient_id = ${R4[0]}") $(rows "recipient_id = ${R4[1]}")"
check_grep "SIGTERM: says it stops" "^ringmail inbound: Terminated: stopping" "$E2E_TMP/inbound.log"
check_grep "SIGTERM: the summary counts the 451s and the commits" \
    "summary .* answered_451=[1-9][0-9]* .* commits=[1-9][0-9]* committed=[1-9][0-9]* events=" "$E2E_TMP/inbound.log"
e2e_kill "$INBOUND2_PID"

# PostgreSQL stops answering in the middle of a commit (its backend frozen
# with SIGSTOP): at SIGTERM inbound waits 10 s for the commit, says so,
# waits 5 s more for the writer, then exits 1 without it.
IN3_PORT=$(free_port)
e2e_bg inbound3 "$RM" inbound --listen "127.0.0.1:$IN3_PORT" --db "$PG_URL application_name=inbound3" \
    --config "$E2E_TMP/fb.conf"
INBOUND3_PID=$E2E_BG_PID
wait_port 127.0.0.1 "$IN3_PORT" 10 "$INBOUND3_PID"
BACKEND=$(psql_q "SELECT pid FROM pg_stat_activity WHERE application_name = 'inbound3'")
kill -STOP "$BACKEND"
e2e_cleanup "kill -CONT $BACKEND"
swaks --server "127.0.0.1:$IN3_PORT" --from '<>' --to "stuck@$RP" --data "@$E2E_TMP/a.eml" \
    >"$E2E_TMP/swaks.stuck" 2>&1 &
SWAKS_S=$!
wait_for_log "$E2E_TMP/swaks.stuck" "^ -> \.$" 5 >/dev/null
sleep 0.3
kill -TERM "$INBOUND3_PID"
wait "$INBOUND3_PID"
check_eq "frozen database: exit 1" 1 "$?"
check_grep "frozen database: the stop's deadline is said" \
    "^ringmail inbound: 1 sessions still open after 10 s: stopping anyway$" "$E2E_TMP/inbound3.log"
check_grep "frozen database: exits without the writer, and says so" \
    "^ringmail inbound: the writer still waits for PostgreSQL after 5 s more: exiting without it" \
    "$E2E_TMP/inbound3.log"
check_no_grep "frozen database: the message was never answered 250" "<- +250 2.0.0 Ok: recorded" \
    "$E2E_TMP/swaks.stuck"
kill -CONT "$BACKEND"
wait "$SWAKS_S"
e2e_finish
