#!/usr/bin/env bash
# What comes back after the 250, recorded through the feedback store by
# `ringmail feedback ingest` (the same store `ringmail inbound` writes
# through). A real campaign is sent to a local sink first, so recipients
# have accepted delivery rows with their ISP. The reports are built the way
# MTAs and ISPs send them (tests/e2e/feedback_mail.py, Python's email).
#   1. DSN, hard bad-mailbox: bounce row, recipient feedback, suppressed
#   2. DSN, policy-related (Microsoft S3150): recorded, never suppressed
#   3. DSN, soft (quota): suppressed only at soft_bounce_limit in the window
#   4. DSN, delayed: recorded only
#   5. ARF complaint by Return-Path, by List-Unsubscribe, by Message-ID;
#      an ARF with no token at all is unmatched
#   6. auto-reply: recorded, never suppresses; mail to u-TOKEN unsubscribes
#   7. forged, truncated tokens, a DSN about another campaign's recipient,
#      a bounce of our own bounce: unmatched with the reason, nothing else
#   8. complaint guard: over complaint_pause with the minimum sample, the
#      ISP is held for the campaign, loudly
#   9. exit codes an MTA's pipe transport reads: 75 with PostgreSQL away
#      (then recorded once when back), 65 over --max-size, 66, 78; 10 MB
#      of garbage is recorded unmatched; several files, one transaction
#  10. list mode tokens (campaign 0): the report's address is suppressed
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null

SECRET=$E2E_TMP/feedback.secret
head -c 48 /dev/urandom >"$SECRET"
chmod 600 "$SECRET"
FM() { "$E2E_PY" "$E2E_DIR/feedback_mail.py" "$@" --secret "$SECRET"; }

SINK_PORT=$(free_port)
start_sink x 127.0.0.81 || { check "sink starts" false; e2e_finish; exit 1; }
cat >"$E2E_TMP/fb.conf" <<CONF
[global]
tls = none
retry = 300ms
max_age = 20s
[isp x]
domains = x.test
max_connections = 4
[route x.test]
server = 127.0.0.81:$SINK_PORT
[feedback]
return_path = bounces.sender.test
secret_file = $SECRET
soft_bounce_limit = 2
soft_bounce_window = 1d
complaint_pause = 20%
complaint_min_sample = 5
CONF

C=$(new_campaign fb 12)
C2=$(new_campaign other 2)
for c in "$C" "$C2"; do
    timeout 60 "$RM" send --db "$PG_URL" --campaign "$c" --config "$E2E_TMP/fb.conf" \
        --node "n$c" --journal "$E2E_TMP/n$c.journal" >"$E2E_TMP/send$c.out" 2>&1
done
check_eq "setup: the campaign's 12 recipients were accepted by the sink" 12 "$(count_state "$C" sent)"

# rid N: the row id of fbN@x.test
rid() { psql_q "SELECT id FROM ringmail.recipient WHERE campaign_id = $C AND address = 'fb$1@x.test'"; }
ingest() { "$RM" feedback ingest --db "$PG_URL" --config "$E2E_TMP/fb.conf" "$@"; }
ev() { psql_q "SELECT $1 FROM ringmail.feedback_event ORDER BY id DESC LIMIT 1"; }
# evs F,G,...: those fields of the last event joined by '|', NULL as '-'
evs() { ev "array_to_string(ARRAY[$1]::text[], '|', '-')"; }
nev() { psql_q "SELECT count(*) FROM ringmail.feedback_event"; }
sup() { psql_q "SELECT coalesce((SELECT kind FROM ringmail.suppression WHERE address = '$1'), 'none')"; }
fbk() { psql_q "SELECT coalesce(feedback, 'none') FROM ringmail.recipient WHERE address = '$1' AND campaign_id = $C"; }

# 1. hard bad-mailbox
R1=$(rid 1)
T1=$(FM token b "$C" "$R1")
FM dsn --campaign "$C" --recipient "$R1" --address fb1@x.test >"$E2E_TMP/d1.eml"
out=$(ingest --rcpt "$T1@bounces.sender.test" --client 127.0.0.9 --sender '' <"$E2E_TMP/d1.eml")
check_eq "dsn: exit 0" 0 "$?"
check_grep "dsn: says what it recorded" 'recorded 1 message: 1 event: 1 bounce, 0 soft bounces.*1 address suppressed' <(echo "$out")
check_eq "dsn: one bounce event from the DSN, for the recipient" \
    "bounce|dsn|$C|$R1|fb1@x.test|x|bad-mailbox|hard|5.1.1|true" \
    "$(evs "kind, source, campaign_id, recipient_id, address, isp, category, bounce, status, suppressed")"
check_grep "dsn: the diagnostic and the reporting MTA are kept" \
    'smtp; 550 5.1.1 .*User unknown.*\|mx.receiver.test\|127.0.0.9\|' <(evs "diagnostic, reporting_mta, client, ''")
check_eq "dsn: the raw message's first bytes are kept" 1 \
    "$(ev "(position('Undelivered Mail' in convert_from(raw, 'UTF8')) > 0)::int")"
check_eq "dsn: the recipient's feedback is bounce" bounce "$(fbk fb1@x.test)"
check_eq "dsn: the address is suppressed (kind bounce)" bounce "$(sup fb1@x.test)"

# 2. policy-related: the sending IP, not the mailbox
R2=$(rid 2)
FM dsn --campaign "$C" --recipient "$R2" --address fb2@x.test --status 5.7.1 \
    --diag "550 5.7.1 Unfortunately, messages from [127.0.0.1] weren't sent. (S3150) [x.prod.outlook.com]" \
    >"$E2E_TMP/d2.eml"
ingest --rcpt "$(FM token b "$C" "$R2")@bounces.sender.test" <"$E2E_TMP/d2.eml" >/dev/null
check_eq "policy: recorded as a hard policy-related bounce, not suppressed" "policy-related|hard|false" \
    "$(evs "category, bounce, suppressed")"
check_eq "policy: the address is not on the suppression list" none "$(sup fb2@x.test)"

# 3. soft: quota; suppressed at the second within the window (soft_bounce_limit = 2)
R3=$(rid 3)
FM dsn --campaign "$C" --recipient "$R3" --address fb3@x.test --status 4.2.2 \
    --diag "452 4.2.2 The email account that you tried to reach is over quota." >"$E2E_TMP/d3.eml"
T3=$(FM token b "$C" "$R3")
ingest --rcpt "$T3@bounces.sender.test" <"$E2E_TMP/d3.eml" >/dev/null
check_eq "soft: a soft quota-issues bounce, not suppressed yet" "quota-issues|soft|false|none|soft-bounce" \
    "$(evs "category, bounce, suppressed")|$(sup fb3@x.test)|$(fbk fb3@x.test)"
FM dsn --campaign "$C" --recipient "$R3" --address fb3@x.test --status 4.2.2 \
    --diag "452 4.2.2 The email account that you tried to reach is over quota." >"$E2E_TMP/d3b.eml"
out=$(ingest --rcpt "$T3@bounces.sender.test" <"$E2E_TMP/d3b.eml")
check_grep "soft: the second one says it suppressed" '1 soft bounce, .*1 address suppressed' <(echo "$out")
check_eq "soft: the second within the window suppresses (kind soft-bounces)" soft-bounces "$(sup fb3@x.test)"
check_grep "soft: the suppression says why" '^2 soft bounces within 1d \(last: smtp; 452 4.2.2' \
    <(psql_q "SELECT reason FROM ringmail.suppression WHERE address = 'fb3@x.test'")

# A soft bounce about the sender (Yahoo's TSS04: our IP, not the mailbox)
# never counts towards the limit, however many.
R4=$(rid 4)
for i in 1 2 3; do
    FM dsn --campaign "$C" --recipient "$R4" --address fb4@x.test --status 4.7.0 \
        --diag "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or user complaints" \
        >"$E2E_TMP/d4s.eml"
    ingest --rcpt "$(FM token b "$C" "$R4")@bounces.sender.test" <"$E2E_TMP/d4s.eml" >/dev/null
done
check_eq "soft about the sender: three recorded, soft spam-related (Yahoo's rule), none counts" \
    "3|spam-related|soft|none|none" \
    "$(psql_q "SELECT count(*) FROM ringmail.feedback_event WHERE recipient_id = $R4 AND kind = 'bounce'")|$(evs "category, bounce")|$(sup fb4@x.test)|$(fbk fb4@x.test)"

# 4. delayed: recorded only
FM dsn --campaign "$C" --recipient "$R4" --address fb4@x.test --action delayed --status 4.4.1 \
    --diag "451 4.4.1 No answer from host" >"$E2E_TMP/d4.eml"
ingest --rcpt "$(FM token b "$C" "$R4")@bounces.sender.test" <"$E2E_TMP/d4.eml" >/dev/null
check_eq "delayed: a delay event; the recipient and the suppression list unchanged" "delay|none|none" \
    "$(ev kind)|$(fbk fb4@x.test)|$(sup fb4@x.test)"

# 5. ARF complaints, matched three ways
for via in return-path:5 unsubscribe:6 message-id:7; do
    n=${via#*:}
    v=${via%:*}
    FM arf --campaign "$C" --recipient "$(rid "$n")" --address "fb$n@x.test" --via "$v" >"$E2E_TMP/a$n.eml"
    ingest --rcpt abuse@bounces.sender.test <"$E2E_TMP/a$n.eml" >/dev/null
    check_eq "arf ($v): a complaint for fb$n, suppressed, feedback complaint" \
        "complaint|arf|$(rid "$n")|true|complaint|complaint" \
        "$(evs "kind, source, recipient_id, suppressed")|$(sup "fb$n@x.test")|$(fbk "fb$n@x.test")"
done
FM arf --campaign "$C" --recipient "$(rid 8)" --address fb8@x.test --via none >"$E2E_TMP/a8.eml"
ingest --rcpt abuse@bounces.sender.test <"$E2E_TMP/a8.eml" >/dev/null
check_eq "arf without a token: unmatched, nothing changes" "unmatched|none|none" \
    "$(ev kind)|$(sup fb8@x.test)|$(fbk fb8@x.test)"
check_grep "arf without a token: the reason says so" 'no ringmail token' <(ev reason)

# 6. auto-reply; mailto unsubscribe
R9=$(rid 9)
FM vacation --campaign "$C" --recipient "$R9" --address fb9@x.test >"$E2E_TMP/v9.eml"
ingest --rcpt "$(FM token b "$C" "$R9")@bounces.sender.test" <"$E2E_TMP/v9.eml" >/dev/null
check_eq "auto-reply: recorded for the recipient, never suppresses" "auto_reply|$R9|false|none|none" \
    "$(evs "kind, recipient_id, suppressed")|$(sup fb9@x.test)|$(fbk fb9@x.test)"
R10=$(rid 10)
printf 'From: fb10@x.test\r\nTo: u@x\r\nSubject: unsubscribe\r\n\r\nunsubscribe\r\n' >"$E2E_TMP/u10.eml"
out=$(ingest --rcpt "$(FM token u "$C" "$R10")@bounces.sender.test" <"$E2E_TMP/u10.eml")
check_grep "mailto: counted as an unsubscribe" '1 unsubscribe, ' <(echo "$out")
check_eq "mailto: unsubscribe by mail, suppressed" "unsubscribe|mailto|$R10|unsubscribe|unsubscribe" \
    "$(evs "kind, source, recipient_id")|$(sup fb10@x.test)|$(fbk fb10@x.test)"

# 7. bad input: nothing about any recipient changes
R11=$(rid 11)
T11=$(FM token b "$C" "$R11")
FORGED=${T11:0:10}$(echo "${T11:10:1}" | tr 'a-z2-7' 'b-z2-7a')${T11:11}
FM dsn --campaign "$C" --recipient "$R11" --address fb11@x.test --token "$FORGED" >"$E2E_TMP/f.eml"
ingest --rcpt "$FORGED@bounces.sender.test" <"$E2E_TMP/f.eml" >/dev/null
check_eq "forged token: unmatched with the reason" "unmatched|forged token (MAC mismatch): $FORGED" \
    "$(evs "kind, reason")"
FM dsn --campaign "$C" --recipient "$R11" --address fb11@x.test --token "${T11:0:18}" >"$E2E_TMP/t.eml"
ingest --rcpt "${T11:0:18}@bounces.sender.test" <"$E2E_TMP/t.eml" >/dev/null
check_eq "truncated token: unmatched with the reason" "unmatched|truncated token: ${T11:0:18}" \
    "$(evs "kind, reason")"
O1=$(psql_q "SELECT address FROM ringmail.recipient WHERE campaign_id = $C2 ORDER BY id LIMIT 1")
FM dsn --campaign "$C" --recipient "$R11" --address fb11@x.test --final-address "$O1" >"$E2E_TMP/o.eml"
ingest --rcpt "$T11@bounces.sender.test" <"$E2E_TMP/o.eml" >/dev/null
check_eq "another campaign's recipient: unmatched, the reason names both" \
    "unmatched|the report is about $O1, the token names recipient $R11 of campaign $C (fb11@x.test)" \
    "$(evs "kind, reason")"
check_eq "bad input: fb11 and the other campaign's address untouched" "none|none|none" \
    "$(fbk fb11@x.test)|$(sup fb11@x.test)|$(sup "$O1")"
ingest --rcpt "$T11@bounces.sender.test" <tests/unit/feedback/bounce_loop.eml >/dev/null
check_grep "a bounce of our own bounce: unmatched, a bounce loop" '^unmatched\|bounce loop' \
    <(evs "kind, reason")
check_eq "bad input: still nothing about fb11" "none|none" "$(fbk fb11@x.test)|$(sup fb11@x.test)"

# 8. complaint guard: 3 complaints over 12 delivered to isp x = 25% > 20%, sample 12 >= 5
check_eq "guard: no hold after 3 complaints? (3/12 = 25% > 20%: held)" "1|x" \
    "$(psql_q "SELECT count(*) || '|' || string_agg(isp, ',') FROM ringmail.isp_hold WHERE campaign_id = $C")"
check_grep "guard: the hold says why" '^3 complaints over 12 delivered in 24h \(25.00% > 20.00%\)$' \
    <(psql_q "SELECT reason FROM ringmail.isp_hold WHERE campaign_id = $C")
psql_q "DELETE FROM ringmail.isp_hold" >/dev/null
FM arf --campaign "$C" --recipient "$(rid 12)" --address fb12@x.test >"$E2E_TMP/a12.eml"
ingest --rcpt abuse@bounces.sender.test <"$E2E_TMP/a12.eml" >/dev/null 2>"$E2E_TMP/guard.err"
check_grep "guard: a loud line when it holds" \
    "^ringmail: complaint guard: campaign $C, isp x: 4 complaints over 12 delivered in 24h \(33.33% > 20.00%\): sending to x held; \`ringmail campaign resume $C --isp x\` lifts it" \
    "$E2E_TMP/guard.err"
"$RM" campaign resume --db "$PG_URL" "$C" --isp x >"$E2E_TMP/resume.out" 2>&1
check_grep "guard: campaign resume lifts it" "^campaign $C: isp x resumed \(it was held since .*: 4 complaints over 12" \
    "$E2E_TMP/resume.out"
FM arf --campaign "$C" --recipient "$(rid 12)" --address fb12@x.test >"$E2E_TMP/a12b.eml"
ingest --rcpt abuse@bounces.sender.test <"$E2E_TMP/a12b.eml" >/dev/null 2>"$E2E_TMP/guard1.err"
check_eq "guard: a resume starts the window again (one complaint, nothing delivered since: no hold)" \
    "0|" "$(psql_q "SELECT count(*) FROM ringmail.isp_hold WHERE resumed_at IS NULL")|$(cat "$E2E_TMP/guard1.err")"
sed -i 's/^complaint_min_sample = 5/complaint_min_sample = 100/' "$E2E_TMP/fb.conf"
psql_q "DELETE FROM ringmail.isp_hold" >/dev/null
FM arf --campaign "$C" --recipient "$(rid 12)" --address fb12@x.test >"$E2E_TMP/a12c.eml"
ingest --rcpt abuse@bounces.sender.test <"$E2E_TMP/a12c.eml" >/dev/null 2>"$E2E_TMP/guard2.err"
check_eq "guard: under the minimum sample, no hold" 0 "$(psql_q "SELECT count(*) FROM ringmail.isp_hold")"

# 9. what an MTA's pipe transport reads
FM dsn --campaign "$C" --recipient "$R1" --address fb1@x.test >"$E2E_TMP/d1b.eml"
stop_postgres "$E2E_TMP/pg"
ingest --rcpt "$T1@bounces.sender.test" <"$E2E_TMP/d1b.eml" >/dev/null 2>"$E2E_TMP/away.err"
check_eq "database away: exit 75 (EX_TEMPFAIL: the MTA retries)" 75 "$?"
check_grep "database away: says nothing was recorded and why" \
    '^ringmail feedback ingest: database: connecting to PostgreSQL: .*: nothing recorded \(exit 75: the sender keeps the message and retries\)$' \
    "$E2E_TMP/away.err"
_pg_as "'$(pg_bin)/pg_ctl' -D '$E2E_TMP/pg/data' -w -t 30 -l '$E2E_TMP/pg/pg.log' \
    -o \"-p $PG_PORT -k '$E2E_TMP/pg' -c listen_addresses=127.0.0.1 -c fsync=off\" start" >/dev/null 2>&1
before=$(nev)
ingest --rcpt "$T1@bounces.sender.test" <"$E2E_TMP/d1b.eml" >"$E2E_TMP/back.out" 2>&1
check_eq "database back: exit 0" 0 "$?"
check_eq "database back: the retried message is recorded once" "$((before + 1))" "$(nev)"
# Its 250 lost, the MTA sends it again: the same bytes to the same address
# are recorded once (a complaint or a soft bounce is not counted twice).
out=$(ingest --rcpt "$T1@bounces.sender.test" <"$E2E_TMP/d1b.eml")
check_eq "a retry of a recorded message: exit 0 (the MTA is done with it)" 0 "$?"
check_eq "a retry of a recorded message: no new row" "$((before + 1))" "$(nev)"
check_grep "a retry of a recorded message: says it skipped it" \
    '^skipped 1 message recorded before \(the same bytes to the same recipient: a retry\)$' <(echo "$out")
out=$(ingest --rcpt "postmaster@bounces.sender.test" <"$E2E_TMP/d1b.eml")
check_eq "the same message to another recipient: recorded" "$((before + 2))" "$(nev)"
head -c 100 /dev/zero | tr '\0' 'x' >"$E2E_TMP/big"
ingest --max-size 50 "$E2E_TMP/big" >/dev/null 2>"$E2E_TMP/big.err"
check_eq "over --max-size: exit 65" 65 "$?"
check_grep "over --max-size: says so" "is over --max-size \(50 bytes\): not recorded" "$E2E_TMP/big.err"
ingest "$E2E_TMP/missing.eml" >/dev/null 2>"$E2E_TMP/miss.err"
check_eq "unreadable file: exit 66" 66 "$?"
check_grep "unreadable file: names it" "missing.eml: No such file or directory" "$E2E_TMP/miss.err"
grep -v '^\[feedback\]\|^return_path\|^secret_file\|^soft_\|^complaint_' "$E2E_TMP/fb.conf" >"$E2E_TMP/plain.conf"
"$RM" feedback ingest --db "$PG_URL" --config "$E2E_TMP/plain.conf" <"$E2E_TMP/d1.eml" \
    >/dev/null 2>"$E2E_TMP/nofb.err"
check_eq "no [feedback]: exit 78" 78 "$?"
check_grep "no [feedback]: says what is missing" 'has no \[feedback\] section: its return_path and secret_file are needed' \
    "$E2E_TMP/nofb.err"
head -c 10485760 /dev/urandom >"$E2E_TMP/garbage"
before=$(nev)
out=$(ingest --rcpt postmaster@bounces.sender.test "$E2E_TMP/garbage" "$E2E_TMP/d4.eml" "$E2E_TMP/v9.eml")
check_eq "10 MB of garbage with two reports: exit 0" 0 "$?"
check_grep "three files: one summary" '^recorded 3 messages: 3 events: .*1 delay, .*0 auto-replies, 2 unmatched' <(echo "$out")
check_eq "garbage: recorded unmatched, raw kept to 4096 bytes" "unmatched|4096" \
    "$(psql_q "SELECT kind || '|' || length(raw) FROM ringmail.feedback_event WHERE id = (SELECT min(id) FROM ringmail.feedback_event WHERE id > (SELECT max(id) - 3 FROM ringmail.feedback_event))")"

# 10. list mode: campaign 0, the recipient is a line number; the report's address
LT=$(FM token b 0 7)
FM dsn --campaign 0 --recipient 7 --address Line7@List.Test --token "$LT" >"$E2E_TMP/l.eml"
ingest --rcpt "$LT@bounces.sender.test" <"$E2E_TMP/l.eml" >/dev/null
check_eq "list mode: campaign 0, line 7, the report's address, suppressed" "0|7|line7@list.test|true|bounce" \
    "$(evs "campaign_id, recipient_id, address, suppressed")|$(sup line7@list.test)"

# feedback parse: what a message says, without a database
out=$("$RM" feedback parse tests/unit/feedback/postfix_dsn.eml)
check_grep "feedback parse: the DSN's event" '^bounce dsn status=5.1.1 ' <(echo "$out")
"$RM" feedback parse >/dev/null 2>"$E2E_TMP/p.err"
check_eq "feedback parse without FILE: exit 2" 2 "$?"
check_grep "feedback parse without FILE: says so" 'one FILE, please' "$E2E_TMP/p.err"
e2e_finish
