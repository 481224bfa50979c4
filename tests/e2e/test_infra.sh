#!/usr/bin/env bash
# Self-test of the e2e infrastructure (lib.sh and the three servers), with
# swaks and smtp_probe.py as clients; needs no ringmail binary. Certificates,
# ports, a private Postfix sink (STARTTLS, TLS 1.2+, discard, bare LF refused,
# 20 concurrent TLS connections), aiosmtpd (STARTTLS + AUTH, AUTH refused
# before TLS, implicit TLS) and the scripted server's fault modes.
set -u
. "$(dirname "$0")/lib.sh"
e2e_tmpdir
T=$E2E_TMP
PROBE=("$E2E_PY" "$E2E_DIR/smtp_probe.py")
probe() { smtp_probe "$@"; }
# swaks_to NAME PORT ARGS...: swaks output in $T/NAME.swaks, its status returned.
swaks_to() {
    local name=$1 port=$2
    shift 2
    timeout 60 swaks --server "127.0.0.1:$port" --timeout 10 --from sender@ringmail.test "$@" \
        >"$T/$name.swaks" 2>&1
}

e2e_require swaks openssl postfix flock || { e2e_finish; exit 1; }

# ------------------------------------------------------------ certificates
C=$T/certs
t0=$(date +%s%N)
check "make_certs: creates the set" make_certs "$C"
echo "# make_certs: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
for f in ca.pem server.pem server.key selfsigned.pem selfsigned.key expired.pem expired.key \
    wrongname.pem wrongname.key; do
    [ -s "$C/$f" ] || _e2e_not_ok "make_certs: $f exists"
done
check "server cert verifies for localhost, sink.test, mx.test and 127.0.0.1" sh -c "
    for h in localhost sink.test mx.test; do
        openssl verify -CAfile '$C/ca.pem' -verify_hostname \$h '$C/server.leaf.pem' || exit 1
    done
    openssl verify -CAfile '$C/ca.pem' -verify_ip 127.0.0.1 '$C/server.leaf.pem'"
check_eq "server.pem is leaf + chain" 2 "$(grep -c 'BEGIN CERTIFICATE' "$C/server.pem")"
check "server key is ECDSA P-256" sh -c "openssl pkey -in '$C/server.key' -noout -text | grep -q 'NIST CURVE: P-256'"
check "server cert signed with ECDSA" sh -c "openssl x509 -in '$C/server.leaf.pem' -noout -text | grep -q 'Signature Algorithm: ecdsa-with-SHA256'"
check_grep "expired cert: verify says expired" "certificate has expired" \
    <(openssl verify -CAfile "$C/ca.pem" "$C/expired.leaf.pem" 2>&1)
check_grep "self-signed cert: verify says self-signed" "self-signed certificate" \
    <(openssl verify -CAfile "$C/ca.pem" "$C/selfsigned.pem" 2>&1)
check_grep "wrongname cert: verify says hostname mismatch" "hostname mismatch" \
    <(openssl verify -CAfile "$C/ca.pem" -verify_hostname localhost "$C/wrongname.leaf.pem" 2>&1)
CACHE=$T/cache
t0=$(date +%s%N)
RINGMAIL_E2E_CERTS=$CACHE make_certs "$T/copy1" >/dev/null
RINGMAIL_E2E_CERTS=$CACHE make_certs "$T/copy2" >/dev/null
check_eq "RINGMAIL_E2E_CERTS: made once, copied" "$(cat "$T/copy1/ca.pem")" "$(cat "$T/copy2/ca.pem")"
echo "# make_certs cached twice: $(( ($(date +%s%N) - t0) / 1000000 )) ms"

# ------------------------------------------------------------ ports
P1=$(free_port)
P2=$(free_port)
check_ne "free_port: two calls, two ports" "$P1" "$P2"
check "free_port: below the ephemeral range" test "$P1" -lt "$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range)"
t0=$(date +%s)
check "wait_port: fails on a closed port" eval "! wait_port 127.0.0.1 $P1 1"
check "wait_port: gave up after about 1 s" test $(($(date +%s) - t0)) -le 3

# ------------------------------------------------------------ Postfix
PF=$T/postfix
PF_PORT=$(free_port)
t0=$(date +%s%N)
check "postfix: private instance starts" start_postfix "$PF" "$PF_PORT" "$C/server.pem" "$C/server.key"
echo "# postfix start: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
check "postfix: our master.cf has no port-25 smtpd" sh -c "! grep -Eq '^(smtp|25|[^ ]*:25) +inet' '$PF/conf/master.cf'"
check "postfix: queue on tmpfs" sh -c "postconf -c '$PF/conf' -h queue_directory | grep -q '^/dev/shm/'"
check "postfix: swaks STARTTLS with verified certificate" swaks_to pf-tls "$PF_PORT" \
    --to a@example.test --tls --tls-verify --tls-ca-path "$C/ca.pem"
check_grep "postfix: swaks saw TLSv1.3" "TLS started with cipher TLSv1.3" "$T/pf-tls.swaks"
check_grep "postfix: message queued" "250 2.0.0 Ok: queued as" "$T/pf-tls.swaks"
check "postfix: log has 'TLS connection established ... TLSv1.3'" \
    wait_for_log "$(postfix_log "$PF")" "TLS connection established from .*: TLSv1\.3 " 5
check "postfix: relays any domain (gmail.com, plaintext)" swaks_to pf-relay "$PF_PORT" --to b@gmail.com
check "postfix: TLS 1.1 refused" sh -c "! swaks --server 127.0.0.1:$PF_PORT --to c@example.test --tls \
    --tls-protocol tlsv1_1 --timeout 10 >'$T/pf-tls11.swaks' 2>&1"
check_grep "postfix: TLS 1.1 handshake failed" "TLS startup failed|protocol version" "$T/pf-tls11.swaks"
check "postfix: bare LF in DATA refused" probe "$PF_PORT" '<220' '>EHLO probe.test' '<250' \
    '>MAIL FROM:<a@ringmail.test>' '<250' '>RCPT TO:<b@example.test>' '<250' '>DATA' '<354' \
    'raw:Subject: x\r\n\r\nbare\nLF\r\n.\r\n' '<5xx' '>QUIT' '<221'
check "postfix: log says bare <LF>" wait_for_log "$(postfix_log "$PF")" "bare <LF> received" 5
# 20 connections at once, 5 messages each over STARTTLS.
cat >"$T/load.py" <<'PY'
import smtplib, ssl, sys, threading
port, ca = int(sys.argv[1]), sys.argv[2]
errors = []
def one(i):
    try:
        ctx = ssl.create_default_context(cafile=ca)
        s = smtplib.SMTP("localhost", port, timeout=30)
        s.starttls(context=ctx)
        for j in range(5):
            s.sendmail("load@ringmail.test", ["u%d.%d@example.test" % (i, j)], b"Subject: load\r\n\r\nhi\r\n")
        s.quit()
    except Exception as e:
        errors.append(repr(e))
ts = [threading.Thread(target=one, args=(i,)) for i in range(20)]
[t.start() for t in ts]
[t.join() for t in ts]
print("\n".join(errors))
sys.exit(1 if errors else 0)
PY
check "postfix: 20 concurrent STARTTLS connections x 5 messages" "$E2E_PY" "$T/load.py" "$PF_PORT" "$C/ca.pem"
check "postfix: 102 recipients discarded" postfix_wait "$PF" delivered 102 20
check_eq "postfix: 102 messages queued" 102 "$(postfix_count "$PF" messages)"
check_ge "postfix: 21 TLS sessions logged" 21 "$(postfix_count "$PF" tls13)"
check_eq "postfix: nothing deferred or bounced" 0 "$(grep -Ec 'status=(deferred|bounced)' "$(postfix_log "$PF")")"
PF_Q=$(postconf -c "$PF/conf" -h queue_directory)
PF_PID=$(_postfix_master_pid "$PF")
t0=$(date +%s%N)
stop_postfix "$PF"
echo "# postfix stop: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
check "postfix: port closed after stop_postfix" wait_port_free 127.0.0.1 "$PF_PORT" 2
check "postfix: its master ($PF_PID) is gone" eval "! _pid_alive '$PF_PID'"
check "postfix: tmpfs queue removed" test ! -e "$PF_Q"
check "postfix: restart in the same DIR with an extra main.cf parameter" \
    start_postfix "$PF" "$PF_PORT" "$C/server.pem" "$C/server.key" message_size_limit=5000
check "postfix: the parameter applies (SIZE=9000 gets 552)" probe "$PF_PORT" '<220' '>EHLO x' '<250' \
    '>MAIL FROM:<a@b.test> SIZE=9000' '<552' '>QUIT' '<221'
stop_postfix "$PF"

# ------------------------------------------------------------ aiosmtpd
AI_PORT=$(free_port)
AI_COUNT=$T/ai.jsonl
check "aiosmtpd: starts (STARTTLS + AUTH)" start_aiosmtpd "$AI_PORT" "$C/server.pem" "$C/server.key" \
    --auth alice:s3cret --count-file "$AI_COUNT" --save-dir "$T/ai-saved"
check "aiosmtpd: swaks STARTTLS + AUTH PLAIN" swaks_to ai-plain "$AI_PORT" --to a@example.test \
    --tls --tls-verify --tls-ca-path "$C/ca.pem" --auth PLAIN --auth-user alice --auth-password s3cret
check "aiosmtpd: swaks STARTTLS + AUTH LOGIN" swaks_to ai-login "$AI_PORT" --to b@example.test \
    --tls --auth LOGIN --auth-user alice --auth-password s3cret
check "aiosmtpd: wrong password refused" sh -c "! swaks --server 127.0.0.1:$AI_PORT --to c@example.test \
    --tls --auth PLAIN --auth-user alice --auth-password wrong --timeout 10 >'$T/ai-wrong.swaks' 2>&1"
check_grep "aiosmtpd: 535 for the wrong password" "535 5\.7\.8" "$T/ai-wrong.swaks"
check "aiosmtpd: AUTH before TLS refused (530/538), and MAIL (530)" probe "$AI_PORT" \
    '<220' '>EHLO probe.test' '<250' '>AUTH PLAIN AGFsaWNlAHMzY3JldA==' '<53x' \
    '>MAIL FROM:<a@ringmail.test>' '<530' '>QUIT' '<221'
check "aiosmtpd: EHLO before TLS lists no AUTH" sh -c "
    ${PROBE[*]} $AI_PORT '<220' '>EHLO probe.test' '<250' '>QUIT' '<221' >'$T/ai-ehlo.out' &&
    grep -q STARTTLS '$T/ai-ehlo.out' && ! grep -qi AUTH '$T/ai-ehlo.out'"
check "aiosmtpd: EHLO after TLS lists AUTH LOGIN PLAIN" sh -c "
    ${PROBE[*]} $AI_PORT '<220' '>EHLO probe.test' '<250' '>STARTTLS' '<220' tls '>EHLO probe.test' \
        '<250' '>QUIT' '<221' >'$T/ai-ehlo2.out' && grep -q 'AUTH LOGIN PLAIN' '$T/ai-ehlo2.out'"
check_eq "aiosmtpd: count file has the 2 accepted messages" 2 "$(jcount "$AI_COUNT")"
check_eq "aiosmtpd: both over TLS 1.3, authenticated as alice" 2 \
    "$(jcount "$AI_COUNT" 'd["tls"] and d["tls_version"]=="TLSv1.3" and d["auth_user"]=="alice"')"
check_eq "aiosmtpd: recipients recorded" "a@example.test b@example.test" \
    "$(jeval "$AI_COUNT" '" ".join(r["rcpts"][0] for r in rows)')"
check "aiosmtpd: --save-dir kept the messages" test -s "$T/ai-saved/2.eml"
stop_aiosmtpd
check "aiosmtpd: port closed after stop_aiosmtpd" wait_port_free 127.0.0.1 "$AI_PORT" 2

AI_PORT=$(free_port)
check "aiosmtpd: starts (implicit TLS + AUTH)" start_aiosmtpd "$AI_PORT" "$C/server.pem" "$C/server.key" \
    --implicit-tls --auth alice:s3cret --count-file "$T/ai465.jsonl"
check "aiosmtpd 465: swaks --tls-on-connect + AUTH" swaks_to ai465 "$AI_PORT" --to d@example.test \
    --tls-on-connect --tls-verify --tls-ca-path "$C/ca.pem" --auth PLAIN --auth-user alice --auth-password s3cret
check_eq "aiosmtpd 465: recorded with TLS" 1 "$(jcount "$T/ai465.jsonl" 'd["tls"] and d["auth"]')"
check "aiosmtpd 465: plaintext client gets no greeting" probe --timeout 2 "$AI_PORT" 'silent:1'
stop_aiosmtpd

# ------------------------------------------------------------ scripted server
# scripted MODE [ARG] [options]: a fresh server; $SP port, $EV events, $TR transcript.
scripted() {
    local mode=$1
    shift
    SP=$(free_port)
    EV=$T/$mode.events
    TR=$T/$mode.transcript
    start_scripted "$SP" "$mode" "$@" --events "$EV" --transcript "$TR"
}
# events MODE EXPR: count of event lines d matching EXPR
events() { jcount "$EV" "$1"; }

scripted ok --tls-cert "$C/server.pem" --tls-key "$C/server.key"
check "scripted ok: swaks STARTTLS delivers" swaks_to sc-ok "$SP" --to a@example.test --tls
check_eq "scripted ok: one message, over TLS" 1 "$(events 'd["event"]=="message" and d["tls"]')"
check_eq "scripted ok: TLS 1.3 recorded" 1 "$(events 'd["event"]=="tls" and d["version"]=="TLSv1.3"')"
check_eq "scripted ok: no MAIL FROM in plaintext" 0 "$(events 'd["event"]=="cmd" and d["verb"]=="MAIL" and not d["tls"]')"
check_grep "scripted ok: transcript has segments and the TLS mark" '^\|TLS 1\|$' "$TR"
check "scripted ok: pipelined MAIL/RCPT/DATA accepted without violation" probe "$SP" '<220' \
    '>EHLO probe.test' '<250' '+MAIL FROM:<a@b.test>' '+RCPT TO:<c@d.test>' '+DATA' '<250' '<250' '<354' \
    '>body' '>.' '<250' '>QUIT' '<221'
check_eq "scripted ok: no violation" 0 "$(events 'd["event"]=="violation"')"
stop_scripted

scripted greeting-421
check "greeting-421: 421 then close" probe "$SP" '<421' eof
stop_scripted
scripted greeting-554
check "greeting-554: 554, 503 to EHLO, 221 to QUIT" probe "$SP" '<554' '>EHLO x' '<503' '>QUIT' '<221' eof
stop_scripted
scripted close-after-greeting
check "close-after-greeting: 220 then close" probe "$SP" '<220' eof
stop_scripted
scripted slow-greeting 1
t0=$(date +%s%N)
check "slow-greeting 1: silent for 0.7 s, then 220" probe "$SP" silent:0.7 '<220' '>QUIT' '<221'
check "slow-greeting 1: speaking first is a violation" probe "$SP" '>EHLO early' '<220' '<250' '>QUIT' '<221'
check_eq "slow-greeting: violation recorded" 1 "$(events 'd["event"]=="violation" and "before the greeting" in d["what"]')"
stop_scripted
scripted multiline-greeting
check "multiline-greeting: swaks delivers" swaks_to sc-mlg "$SP" --to a@example.test
check_grep "multiline-greeting: three 220 lines" '^<- +220-second line' "$T/sc-mlg.swaks"
stop_scripted

scripted ehlo-502
check "ehlo-502: swaks falls back to HELO and delivers" swaks_to sc-helo "$SP" --to a@example.test
check_grep "ehlo-502: HELO sent" '^HELO ' "$TR"
check_eq "ehlo-502: lock step (swaks) is no violation" 0 "$(events 'd["event"]=="violation"')"
check "ehlo-502: a pipelining client is caught" probe "$SP" '<220' '>HELO x' '<250' \
    '+MAIL FROM:<a@b.test>' '+RCPT TO:<c@d.test>' '<250' '<250' '>QUIT' '<221'
check_eq "ehlo-502: violation recorded" 1 "$(events 'd["event"]=="violation" and "without PIPELINING" in d["what"]')"
stop_scripted

scripted no-pipelining
check "no-pipelining: swaks (lock step) delivers" swaks_to sc-nopipe "$SP" --to a@example.test
check_eq "no-pipelining: no violation from swaks" 0 "$(events 'd["event"]=="violation"')"
check "no-pipelining: EHLO does not offer PIPELINING" sh -c "! grep -q PIPELINING '$T/sc-nopipe.swaks'"
probe "$SP" '<220' '>EHLO x' '<250' '+MAIL FROM:<a@b.test>' '+RCPT TO:<c@d.test>' '<250' '<250' '>QUIT' '<221' >/dev/null 2>&1
check_eq "no-pipelining: pipelined MAIL+RCPT recorded as a violation" 1 "$(events 'd["event"]=="violation"')"
stop_scripted

scripted ehlo-odd
check "ehlo-odd: swaks copes with odd EHLO keywords" swaks_to sc-odd "$SP" --to a@example.test --pipeline
stop_scripted

scripted garbage
check "garbage: HTTP/1.1 400 as greeting and answer" probe "$SP" '<*' '>EHLO x' '<*'
check_grep "garbage: it was HTTP" "HTTP/1.1 400 Bad Request" <(probe "$SP" '<*' 2>&1)
check "garbage: swaks fails" sh -c "! swaks --server 127.0.0.1:$SP --to a@example.test --timeout 1 >/dev/null 2>&1"
stop_scripted

scripted stall-after-mail
check "stall-after-mail: no reply to MAIL" probe "$SP" '<220' '>EHLO x' '<250' '>MAIL FROM:<a@b.test>' silent:1
stop_scripted

scripted drop-mid-data
check "drop-mid-data: closed after part of DATA" probe "$SP" '<220' '>EHLO x' '<250' \
    '+MAIL FROM:<a@b.test>' '+RCPT TO:<c@d.test>' '+DATA' '<250' '<250' '<354' '>Subject: part' eof
check_eq "drop-mid-data: no message accepted" 0 "$(events 'd["event"]=="message"')"
stop_scripted
scripted drop-mid-data rst
check "drop-mid-data rst: reset after part of DATA" probe "$SP" '<220' '>EHLO x' '<250' \
    '+MAIL FROM:<a@b.test>' '+RCPT TO:<c@d.test>' '+DATA' '<250' '<250' '<354' '>Subject: part' eof
stop_scripted

scripted starttls-inject
check "starttls-inject: 220 and an injected 250 in one write" probe "$SP" '<220' '>EHLO x' '<250' \
    '>STARTTLS' '<220' pending
check "starttls-inject: swaks (not an oracle) follows the injection" sh -c "! swaks --server 127.0.0.1:$SP \
    --to a@example.test --tls --timeout 5 >'$T/sc-inject.swaks' 2>&1"
check_eq "starttls-inject: the TLS handshake after the injection is recorded" 1 \
    "$(events 'd["event"]=="violation" and "injected" in d["what"]')"
stop_scripted

scripted starttls-454
check "starttls-454: swaks --tls gives up" sh -c "! swaks --server 127.0.0.1:$SP --to a@example.test --tls \
    --timeout 5 >'$T/sc-454.swaks' 2>&1"
check_grep "starttls-454: 454 reply" '454 4\.7\.0' "$T/sc-454.swaks"
check_eq "starttls-454: no MAIL FROM from a TLS-required client" 0 "$(events 'd["event"]=="cmd" and d["verb"]=="MAIL"')"
check "starttls-454: swaks --tls-optional delivers in plaintext" swaks_to sc-454opt "$SP" --to a@example.test --tls-optional
check_eq "starttls-454: plaintext MAIL FROM recorded" 1 "$(events 'd["event"]=="cmd" and d["verb"]=="MAIL" and not d["tls"]')"
stop_scripted

scripted no-starttls
check "no-starttls: swaks delivers in plaintext" swaks_to sc-nostarttls "$SP" --to a@example.test
check "no-starttls: STARTTLS not offered" sh -c "! grep -q STARTTLS '$T/sc-nostarttls.swaks'"
check_eq "no-starttls: plaintext MAIL FROM recorded" 1 "$(events 'd["event"]=="cmd" and d["verb"]=="MAIL" and not d["tls"]')"
stop_scripted

scripted rcpt-mixed
check "rcpt-mixed: 250/550/450 by local part, DATA accepted" probe "$SP" '<220' '>EHLO x' '<250' \
    '+MAIL FROM:<a@b.test>' '+RCPT TO:<user3@x.test>' '+RCPT TO:<user4@x.test>' '+RCPT TO:<user5@x.test>' \
    '+RCPT TO:<551.moved@x.test>' '+RCPT TO:<reject-me@x.test>' '+DATA' \
    '<250' '<250' '<550' '<450' '<551' '<550' '<354' '>hi' '>.' '<250' '>QUIT' '<221'
check_eq "rcpt-mixed: decisions recorded" "250 550 450 551 550" \
    "$(jeval "$EV" '" ".join(str(r["code"]) for r in rows if r["event"]=="rcpt")')"
check_eq "rcpt-mixed: message for the one accepted recipient" '["user3@x.test"]' \
    "$(jeval "$EV" '[r["rcpts"] for r in rows if r["event"]=="message"][0]')"
stop_scripted

scripted all-rcpt-fail-data-ok
check "all-rcpt-fail-data-ok: 550s, 354, lone dot, 554" probe "$SP" '<220' '>EHLO x' '<250' \
    '+MAIL FROM:<a@b.test>' '+RCPT TO:<a@x.test>' '+RCPT TO:<b@x.test>' '+DATA' '<250' '<550' '<550' '<354' \
    '>.' '<554' '>QUIT' '<221'
check_eq "all-rcpt-fail-data-ok: an empty body is no violation" 0 "$(events 'd["event"]=="violation"')"
probe "$SP" '<220' '>EHLO x' '<250' '+MAIL FROM:<a@b.test>' '+RCPT TO:<a@x.test>' '+DATA' '<250' '<550' '<354' \
    '>body' '>.' '<554' '>QUIT' '<221' >/dev/null 2>&1
check_eq "all-rcpt-fail-data-ok: a body is a violation" 1 "$(events 'd["event"]=="violation" and "every RCPT failed" in d["what"]')"
stop_scripted

scripted rcpt-452 1
check "rcpt-452 1: first recipient 250, then 452" probe "$SP" '<220' '>EHLO x' '<250' \
    '+MAIL FROM:<a@b.test>' '+RCPT TO:<a@x.test>' '+RCPT TO:<b@x.test>' '<250' '<250' '<452' '>QUIT' '<221'
stop_scripted

scripted 421-mid-pipeline
check "421-mid-pipeline: 421 to RCPT, then close" probe "$SP" '<220' '>EHLO x' '<250' \
    '+MAIL FROM:<a@b.test>' '+RCPT TO:<a@x.test>' '+DATA' '<250' '<421' eof
stop_scripted

for m in data-451:451 data-554:554; do
    scripted "${m%:*}"
    check "${m%:*}: ${m#*:} after the final dot (swaks)" sh -c "! swaks --server 127.0.0.1:$SP \
        --to a@example.test --timeout 5 >'$T/sc-${m%:*}.swaks' 2>&1"
    check_grep "${m%:*}: swaks saw ${m#*:}" "^<\*\* +${m#*:} " "$T/sc-${m%:*}.swaks"
    stop_scripted
done

scripted close-after-first
check "close-after-first: closes right after the first 250" probe "$SP" '<220' '>EHLO x' '<250' \
    '+MAIL FROM:<a@b.test>' '+RCPT TO:<a@x.test>' '+DATA' '<250' '<250' '<354' '>x' '>.' '<250' eof
stop_scripted

scripted split-replies
check "split-replies: swaks delivers" swaks_to sc-split "$SP" --to a@example.test
stop_scripted
scripted bare-code
check "bare-code: '250' with no text" probe "$SP" '<220' '>EHLO x' '<250' '>MAIL FROM:<a@b.test>' '<250' \
    '>QUIT' '<221'
check_grep "bare-code: the reply was exactly 250" '^<- 250$' <(probe "$SP" '<220' '>EHLO x' '<250' \
    '>MAIL FROM:<a@b.test>' '<250' '>QUIT' '<221' 2>&1)
# (swaks cannot parse a reply without text: it waits for more.)
check "bare-code: a whole transaction with bare codes" probe "$SP" '<220' '>EHLO x' '<250' \
    '+MAIL FROM:<a@b.test>' '+RCPT TO:<c@d.test>' '+DATA' '<250' '<250' '<354' '>hi' '>.' '<250' '>QUIT' '<221'
stop_scripted
scripted multiline-everywhere
check "multiline-everywhere: swaks delivers" swaks_to sc-mle "$SP" --to a@example.test
check_grep "multiline-everywhere: multiline 354" '^<- +354-' "$T/sc-mle.swaks"
check_grep "multiline-everywhere: multiline reply after the dot" '^<- +250-2.0.0 queued' "$T/sc-mle.swaks"
stop_scripted

scripted ok
probe "$SP" '<220' '>EHLO x' '<250' '>MAIL FROM:<a@b.test>' '<250' '>RCPT TO:<c@d.test>' '<250' '>DATA' '<354' \
    'raw:smuggled\n.\r\nMAIL FROM:<x@y>\r\n.\r\n' '<250' '>QUIT' '<221' >/dev/null 2>&1
check_eq "scripted: bare LF in DATA recorded as a violation" 1 "$(events 'd["event"]=="violation" and "bare CR or LF" in d["what"]')"
stop_scripted

e2e_finish
