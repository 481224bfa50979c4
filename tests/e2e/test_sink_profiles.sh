#!/usr/bin/env bash
# End to end, `ringmail sink --profile NAME` and --profile-file: for every
# built-in provider profile, blast delivers to ordinary recipients while
# tempfail@ gets the provider's exact temporary reply and permfail@ its
# permanent one (a 421 also closes the session); gmail refuses MAIL before
# STARTTLS with 530 5.7.0; legacy offers no STARTTLS (blast --tls required
# defers with tls_not_offered, opportunistic delivers); options given on the
# command line override a profile's defaults; a profile file (JSON)
# works and a bad one is refused with exit status 2 and a clear message.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup

SINK_PID=""
SINK_NAME=""
# start_sink NAME ARGS... : a sink on a fresh port; sets PORT and STATS.
start_sink() {
    local name=$1
    shift
    SINK_NAME=$name
    PORT=$(free_port)
    STATS=$E2E_TMP/$name.stats.json
    "$RM" sink --listen 127.0.0.1:"$PORT" --threads 1 --stats "$STATS" "$@" \
        >"$E2E_TMP/$name.sink.log" 2>&1 &
    SINK_PID=$!
    e2e_cleanup "kill $SINK_PID 2>/dev/null"
    wait_port 127.0.0.1 "$PORT" 10 "$SINK_PID"
}
stop_sink() {
    kill -TERM "$SINK_PID" 2>/dev/null
    wait "$SINK_PID"
    local rc=$?
    check_eq "$SINK_NAME: sink exited cleanly on SIGTERM" 0 "$rc"
    check_no_grep "$SINK_NAME: no sanitizer report from the sink" Sanitizer \
        "$E2E_TMP/$SINK_NAME.sink.log"
}
# blast NAME ARGS... : result JSON in $OUT, records in $E2E_TMP/NAME.records
blast() {
    local name=$1
    shift
    timeout 60 "$RM" blast --server "localhost:$PORT" --json --records "$E2E_TMP/$name.records" \
        --threads 1 "$@" >"$E2E_TMP/$name.json" 2>"$E2E_TMP/$name.err"
    echo "# blast $name: $(cat "$E2E_TMP/$name.json")"
    OUT=$E2E_TMP/$name.json
}
# probe_reply NAME RCPT CODE EXPECTED [MODE]: one RCPT through smtp_probe
# (inside STARTTLS unless MODE is "plain"); the reply line must be EXPECTED
# exactly, and a 421 must close the session.
probe_reply() {
    local name=$1 rcpt=$2 code=$3 expected=$4 mode=${5:-tls}
    local steps=('<220' '>EHLO probe.test' '<250')
    if [ "$mode" = tls ]; then
        steps+=('>STARTTLS' '<220' tls '>EHLO probe.test' '<250')
    fi
    steps+=('>MAIL FROM:<probe@ringmail.test>' '<250' ">RCPT TO:<$rcpt>" "<$code")
    if [ "$code" = 421 ]; then
        steps+=(eof)
    else
        steps+=('>QUIT' '<221')
    fi
    local log=$E2E_TMP/$name.probe
    smtp_probe "$PORT" "${steps[@]}" >"$log" 2>&1
    check_eq "$name: $rcpt gets $code" 0 "$?" || sed 's/^/#   /' "$log"
    check "$name: $rcpt reply is exactly the provider's" grep -qxF -- "<- $expected" "$log"
}
TLS=(--tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key")
IP=127.0.0.1

GMAIL_TEMP="421 4.7.28 [$IP] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited."
GMAIL_PERM="550 5.1.1 The email account that you tried to reach does not exist."
OUTLOOK_TEMP="451 4.7.500 Server busy. Please try again later."
OUTLOOK_PERM="550 5.7.1 Unfortunately, messages from [$IP] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150)."
YAHOO_TEMP="421 4.7.0 [TSS04] Messages from $IP temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"
YAHOO_PERM="554 5.7.9 Message not accepted for policy reasons. See https://postmaster.yahooinc.com/error-codes"
QQ_TEMP="451 4.3.0 Mail server temporarily rejected message."
QQ_PERM="550 Mailbox not found or access denied"
NETEASE_TEMP="451 4.7.1 RP:TRC Try again later"
NETEASE_PERM="550 User not found or mailbox unavailable"

# profile_case NAME TEMP PERM: ordinary recipients delivered, tempfail@ and
# permfail@ get the provider's replies, the statistics name the profile.
profile_case() {
    local name=$1 temp=$2 perm=$3
    start_sink "$name" "${TLS[@]}" --profile "$name"
    blast "$name" --count 20 --concurrency 2 --domain "$name.example"
    probe_reply "$name-temp" "tempfail@$name.example" "${temp:0:3}" "$temp"
    probe_reply "$name-perm" "permfail+x@$name.example" "${perm:0:3}" "$perm"
    stop_sink
    check_eq "$name: blast delivered every ordinary recipient" 20 "$(jget "$OUT" accepted)"
    check_eq "$name: sink counted 20 messages" 20 "$(jget "$STATS" messages)"
    check_eq "$name: sink counted one deferred and one rejected recipient" "1 1" \
        "$(jget "$STATS" deferred_rcpts) $(jget "$STATS" rejected_rcpts)"
    check_eq "$name: statistics name the profile" "$name" "$(jget "$STATS" profile)"
}

# 1. The provider profiles.
profile_case gmail "$GMAIL_TEMP" "$GMAIL_PERM"
profile_case outlook "$OUTLOOK_TEMP" "$OUTLOOK_PERM"
profile_case yahoo "$YAHOO_TEMP" "$YAHOO_PERM"
profile_case qq "$QQ_TEMP" "$QQ_PERM"
profile_case 163 "$NETEASE_TEMP" "$NETEASE_PERM"

# 2. gmail: MAIL before STARTTLS is refused; after it, accepted.
start_sink gmail-tls "${TLS[@]}" --profile gmail
check "gmail: MAIL before STARTTLS gets 530" smtp_probe "$PORT" '<220' '>EHLO probe.test' '<250' \
    '>MAIL FROM:<probe@ringmail.test>' '<530' '>QUIT' '<221'
smtp_probe "$PORT" '<220' '>EHLO probe.test' '<250' '>MAIL FROM:<probe@ringmail.test>' '<530' \
    >"$E2E_TMP/gmail-530.probe" 2>&1
check "gmail: the 530 is gmail's text" \
    grep -qxF -- "<- 530 5.7.0 Must issue a STARTTLS command first" "$E2E_TMP/gmail-530.probe"
check "gmail: MAIL inside TLS is accepted" smtp_probe "$PORT" '<220' '>EHLO probe.test' '<250' \
    '>STARTTLS' '<220' tls '>EHLO probe.test' '<250' '>MAIL FROM:<probe@ringmail.test>' '<250' \
    '>QUIT' '<221'
blast gmail-plain --count 5 --concurrency 1 --tls none
stop_sink
check_eq "gmail: a plaintext sender delivers nothing" 0 "$(jget "$OUT" accepted)"
check_eq "gmail: ... and is told so (5 not accepted)" 5 \
    "$(($(jget "$OUT" deferred) + $(jget "$OUT" rejected) + $(jget "$OUT" failed)))"
check_eq "gmail: the sink delivered nothing in plaintext" 0 "$(jget "$STATS" messages)"
check "gmail without a certificate is refused" sh -c \
    "! '$RM' sink --listen 127.0.0.1:$(free_port) --profile gmail 2>'$E2E_TMP/gmail-nocert.err'"
check_grep "gmail without a certificate: says TLS is needed" "requires TLS" \
    "$E2E_TMP/gmail-nocert.err"

# 3. legacy: no STARTTLS even with a certificate; required defers, opportunistic delivers.
start_sink legacy "${TLS[@]}" --profile legacy
smtp_probe "$PORT" '<220' '>EHLO probe.test' '<250' '>QUIT' '<221' >"$E2E_TMP/legacy-ehlo.probe" 2>&1
check_grep "legacy: EHLO answered" "^<- 250 " "$E2E_TMP/legacy-ehlo.probe"
check_no_grep "legacy: no STARTTLS in EHLO" STARTTLS "$E2E_TMP/legacy-ehlo.probe"
blast legacy-required --count 10 --concurrency 2
check_eq "legacy + required: all deferred" 10 "$(jget "$OUT" deferred)"
check_eq "legacy + required: reason tls_not_offered" 10 "$(jget "$OUT" reasons.tls_not_offered)"
blast legacy-opportunistic --count 10 --concurrency 2 --tls opportunistic
check_eq "legacy + opportunistic: all accepted" 10 "$(jget "$OUT" accepted)"
probe_reply legacy-temp tempfail@legacy.example 451 "451 4.7.1 Temporary failure (sink tempfail)" plain
probe_reply legacy-perm permfail@legacy.example 550 "550 5.1.1 User unknown (sink)" plain
stop_sink
check_eq "legacy: the sink got only the 10 opportunistic messages" 10 "$(jget "$STATS" messages)"

# 4. Options override a profile: the --reject-pct share gets the profile's permanent reply.
start_sink outlook-override "${TLS[@]}" --profile outlook --reject-pct 100
blast outlook-override --count 6 --concurrency 1
stop_sink
check_eq "outlook --reject-pct 100: all rejected" 6 "$(jget "$OUT" rejected)"
check "outlook --reject-pct 100: records carry 550 5.7.1 ... [127.0.0.1] ... (S3150)" "$E2E_PY" -c '
import json,sys; rs=[json.loads(l) for l in open(sys.argv[1])]
assert len(rs)==6 and all(r["code"]==550 and r["enhanced"]=="5.7.1" for r in rs), rs[:1]
assert all("from [127.0.0.1] weren" in r["text"] and "(S3150)" in r["text"] for r in rs), rs[:1]' "$E2E_TMP/outlook-override.records"

# 5. --profile-file (JSON): every key; its reject_pct rejects, its replies are used.
cat >"$E2E_TMP/custom.json" <<'EOF'
{"name": "custom", "tls_required": true, "starttls": true,
 "temp_reply": "452 4.2.2 Custom mailbox busy",
 "perm_reply": "550 5.7.26 Custom policy; unauthenticated mail is rejected",
 "defer_pct": 0, "reject_pct": 100, "latency_ms": 5, "max_conns": 50}
EOF
start_sink custom-ini "${TLS[@]}" --profile-file "$E2E_TMP/custom.json"
blast custom-ini --count 6 --concurrency 2
probe_reply custom-ini-temp tempfail@custom.example 452 "452 4.2.2 Custom mailbox busy"
check "custom profile file: tls_required refuses MAIL before STARTTLS" smtp_probe "$PORT" '<220' \
    '>EHLO probe.test' '<250' '>MAIL FROM:<probe@ringmail.test>' '<530' '>QUIT' '<221'
stop_sink
check_eq "custom profile file: reject_pct 100 rejects all" 6 "$(jget "$OUT" rejected)"
check_eq "custom profile file: with its perm_reply's enhanced code" 6 \
    "$(jcount "$E2E_TMP/custom-ini.records" 'd["enhanced"]=="5.7.26"')"
check_eq "custom profile file: statistics name it" custom "$(jget "$STATS" profile)"

# 6. --profile-file, JSON over a built-in; an option overrides the file's defer_pct.
cat >"$E2E_TMP/custom.json" <<'EOF'
{"name": "yahoo-slow", "defer_pct": 100, "latency_ms": 5, "max_conns": 10,
 "temp_reply": "451 4.7.0 Slow down"}
EOF
start_sink custom-json "${TLS[@]}" --profile yahoo --profile-file "$E2E_TMP/custom.json"
blast custom-json-deferred --count 4 --concurrency 1
stop_sink
check_eq "custom JSON: defer_pct 100 defers all" 4 "$(jget "$OUT" deferred)"
check_eq "custom JSON: with its temp_reply" 4 \
    "$(jcount "$E2E_TMP/custom-json-deferred.records" 'd["code"]==451 and d["text"]=="4.7.0 Slow down"')"
start_sink custom-json2 "${TLS[@]}" --profile yahoo --profile-file "$E2E_TMP/custom.json" \
    --defer-pct 0
blast custom-json-override --count 8 --concurrency 2
probe_reply custom-json-perm permfail@y.example 554 "$YAHOO_PERM"
stop_sink
check_eq "custom JSON + --defer-pct 0: the option wins, all accepted" 8 "$(jget "$OUT" accepted)"

# 7. A per-source rate (gmail: 421 4.7.28 over it, naming the sender's
# address): a sender far over the rate is deferred, the sink counts it per
# source, and once the second has passed the same sender is accepted again.
start_sink gmail-rate "${TLS[@]}" --profile gmail --source-rate 100
blast gmail-rate --count 1000 --concurrency 10
check "source rate: some accepted, most deferred" "$E2E_PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert 50 <= d["accepted"] <= 400 and d["deferred"] >= 600, d' "$OUT"
check "source rate: the deferrals carry 421 4.7.28 [127.0.0.1] ... rate limited" "$E2E_PY" -c '
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
t = [r for r in rs if r.get("code") == 421]
assert t and all(r["text"].startswith("4.7.28 [127.0.0.1] Our system has detected") or
                 "4.7.28 [127.0.0.1]" in r["text"] for r in t), t[:1]' "$E2E_TMP/gmail-rate.records"
sleep 1.2
blast gmail-rate-later --count 50 --concurrency 2
check_eq "source rate: a second later the sender is accepted again" 50 "$(jget "$OUT" accepted)"
stop_sink
check "source rate: the sink counts the limited RCPTs of 127.0.0.1" "$E2E_PY" -c '
import json, sys
p = json.load(open(sys.argv[1]))["peers"]["127.0.0.1"]
assert p["rate_limited"] >= 600, p' "$STATS"

# 8. A latency distribution: --latency-ms 20 --latency-jitter-ms 80 spreads
# the transaction times between 20 ms and a few hundred, not one value.
start_sink jitter "${TLS[@]}" --latency-ms 20 --latency-jitter-ms 80 --seed 7
blast jitter --count 40 --concurrency 1
check_eq "jitter: all accepted" 40 "$(jget "$OUT" accepted)"
check "jitter: transaction times spread out, none under the base latency" "$E2E_PY" -c '
import json, sys
t = sorted(json.loads(l)["transaction_ms"] for l in open(sys.argv[1]))
assert t[0] >= 20 and t[-1] - t[0] >= 40, t' "$E2E_TMP/jitter.records"
stop_sink
printf '{"name": "slow-isp", "latency_ms": 5, "latency_jitter_ms": 10, "source_rate": 1000}\n' \
    >"$E2E_TMP/slow-isp.json"
start_sink slow-isp "${TLS[@]}" --profile-file "$E2E_TMP/slow-isp.json"
blast slow-isp --count 20 --concurrency 2
check_eq "profile file with latency_jitter_ms and source_rate: all accepted" 20 \
    "$(jget "$OUT" accepted)"
stop_sink

# 9. Bad profiles: exit status 2 and a message that names the problem.
bad_profile() {
    local name=$1 pattern=$2
    shift 2
    "$RM" sink --listen 127.0.0.1:"$(free_port)" "$@" >"$E2E_TMP/$name.out" 2>"$E2E_TMP/$name.err"
    check_eq "$name: refused with exit status 2" 2 "$?"
    check_grep "$name: says why" "$pattern" "$E2E_TMP/$name.err"
}
printf '{"name": "x", "colour": "blue"}\n' >"$E2E_TMP/bad-key.json"
printf '{"temp_reply": "250 all fine"}\n' >"$E2E_TMP/bad-reply.json"
printf '{"reject_pct": 101}\n' >"$E2E_TMP/bad-pct.json"
printf 'name = x\n' >"$E2E_TMP/bad-line.ini"
printf '{"name": "x", "defer_pct": 5,\n' >"$E2E_TMP/bad-syntax.json"
printf '{"tls_required": [true]}\n' >"$E2E_TMP/bad-type.json"
bad_profile bad-key 'bad --profile-file .*key "colour": unknown key' \
    --profile-file "$E2E_TMP/bad-key.json"
bad_profile bad-reply 'key "temp_reply": want "4xx TEXT"' \
    --profile-file "$E2E_TMP/bad-reply.json"
bad_profile bad-pct 'key "reject_pct": want a whole number 0..100' \
    --profile-file "$E2E_TMP/bad-pct.json"
bad_profile bad-line 'not a JSON object' --profile-file "$E2E_TMP/bad-line.ini"
bad_profile bad-syntax 'bad --profile-file .*bad-syntax.json: line [0-9]+' \
    --profile-file "$E2E_TMP/bad-syntax.json"
bad_profile bad-type 'key "tls_required": want a string, a boolean or an integer' \
    --profile-file "$E2E_TMP/bad-type.json"
bad_profile bad-missing 'bad --profile-file .*: No such file' \
    --profile-file "$E2E_TMP/does-not-exist.ini"
bad_profile bad-name 'unknown --profile aol' --profile aol

e2e_finish
