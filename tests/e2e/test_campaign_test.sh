#!/usr/bin/env bash
# campaign create's templates and sender, campaign test and campaign preview,
# against a private PostgreSQL and python3-aiosmtpd (which keeps each
# message it accepts):
#   1. create refuses a template that does not compile (subject, --text,
#      --html and --list-unsubscribe files and values), by option and
#      position, exit 2, nothing stored
#   2. --from "Acme News <news@acme.test>", --from-name, --reply-to; both a
#      display name and --from-name refused
#   3. --start-at: +2h, ISO 8601 with an offset (stored, status scheduled,
#      said on stderr), a time in the past and a non-time refused
#   4. campaign test to two seeds: delivered as recipients get them (From
#      with its name, Reply-To, DKIM, merge values percent-encoded in URLs,
#      the first recipient's variables), one row each in seed_delivery,
#      the campaign's recipients, deliveries and status untouched; --as,
#      --vars; a seed that cannot be reached: exit 1, its row says so
#   5. campaign preview: the .eml is what the seed got (but Date,
#      Message-ID and the DKIM signature over them), nothing on stdout
#   6. a merge field without a value: warned once per field in test,
#      preview and send, with send's total at the end
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
T=$E2E_TMP
start_postgres "$T/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
check "db migrate" "$RM" db migrate --db "$PG_URL"

AI_PORT=$(free_port)
DEAD_PORT=$(free_port)
AI=$T/ai.jsonl
EML=$T/eml
start_aiosmtpd "$AI_PORT" "$CERTS/server.pem" "$CERTS/server.key" --starttls-optional \
    --count-file "$AI" --save-dir "$EML" || { check "aiosmtpd starts" false; e2e_finish; exit 1; }
cat >"$T/send.conf" <<CONF
[global]
tls = none
retry = 300ms
max_age = 20s
[isp x]
domains = x.test, seed.test
[isp dead]
domains = dead.test
[route x.test]
server = 127.0.0.1:$AI_PORT
[route seed.test]
server = 127.0.0.1:$AI_PORT
[route dead.test]
server = 127.0.0.1:$DEAD_PORT
CONF

ncampaigns() { psql_q "SELECT count(*) FROM ringmail.campaign"; }
# create_refused NAME ERE ARGS...: campaign create exits 2, says ERE (one line), stores nothing.
create_refused() {
    local name=$1 re=$2 before
    shift 2
    before=$(ncampaigns)
    "$RM" campaign create --db "$PG_URL" --name x "$@" >"$T/cr.out" 2>"$T/cr.err"
    check_eq "create refuses $name: exit 2, nothing stored, nothing on stdout" "2 $before 0" \
        "$? $(ncampaigns) $(wc -c <"$T/cr.out")"
    check_grep "create refuses $name: says why" "$re" "$T/cr.err"
    check_eq "create refuses $name: one line" 1 "$(wc -l <"$T/cr.err")"
}

# ============================================================ 1. templates checked at create
printf 'Hello {{first_name|there}},\n' >"$T/ok.txt"
create_refused "an unterminated subject field" \
    "^ringmail campaign create: --subject: unterminated merge field '\{\{first_name' at character 4$" \
    --from a@acme.test --subject "Hi {{first_name" --text "$T/ok.txt"
printf 'Dear all,\n\nZoë says {{ first name }} hi\n' >"$T/bad.txt"
create_refused "a bad field name in --text" \
    "^ringmail campaign create: --text $T/bad.txt: bad merge field name '\{\{ first name \}\}' at line 3, character 10 \(a name is letters, digits, _ - \.\)$" \
    --from a@acme.test --subject "Hi" --text "$T/bad.txt"
printf '<p>Hi {{first_name</p>\n' >"$T/bad.html"
create_refused "an unterminated field in --html" \
    "^ringmail campaign create: --html $T/bad.html: unterminated merge field '\{\{first_name</p>' at line 1, character 7$" \
    --from a@acme.test --subject "Hi" --text "$T/ok.txt" --html "$T/bad.html"
create_refused "an unterminated field in --list-unsubscribe" \
    "^ringmail campaign create: --list-unsubscribe: unterminated merge field '\{\{email' at character 23$" \
    --from a@acme.test --subject "Hi" --text "$T/ok.txt" --list-unsubscribe 'https://acme.test/u?e={{email'

# ============================================================ 2. sender
C=$("$RM" campaign create --db "$PG_URL" --name named --from "Acme News <news@acme.test>" \
    --subject s --text "$T/ok.txt" 2>"$T/named.err")
check_eq "create --from 'Name <addr>': exit 0" 0 "$?"
check_eq "create --from 'Name <addr>': the address and the name stored apart" \
    "news@acme.test|Acme News|" "$(psql_q "SELECT mail_from || '|' || from_name || '|' || coalesce(reply_to, '') FROM ringmail.campaign WHERE id = $C")"
C=$("$RM" campaign create --db "$PG_URL" --name named2 --from '"Acme, Inc." <news@acme.test>' \
    --subject s --text "$T/ok.txt")
check_eq "create --from with a quoted display name" "Acme, Inc." \
    "$(psql_q "SELECT from_name FROM ringmail.campaign WHERE id = $C")"
C=$("$RM" campaign create --db "$PG_URL" --name named3 --from news@acme.test --from-name "Acme 新闻" \
    --reply-to help@acme.test --subject s --text "$T/ok.txt")
check_eq "create --from-name --reply-to: stored" "news@acme.test|Acme 新闻|help@acme.test|draft|" \
    "$(psql_q "SELECT mail_from || '|' || from_name || '|' || reply_to || '|' || status || '|' || coalesce(start_at::text, '') FROM ringmail.campaign WHERE id = $C")"
create_refused "a display name twice" \
    '^ringmail campaign create: --from has a display name \("Acme"\) and --from-name gives one too: give the name once$' \
    --from "Acme <a@acme.test>" --from-name "Other" --subject s --text "$T/ok.txt"
create_refused "a bad --reply-to" "^ringmail campaign create: --reply-to: no '@' in the address$" \
    --from a@acme.test --reply-to help.acme.test --subject s --text "$T/ok.txt"

# ============================================================ 3. --start-at
C=$("$RM" campaign create --db "$PG_URL" --name later --from a@acme.test --subject s \
    --text "$T/ok.txt" --start-at +2h 2>"$T/sched.err")
check_eq "create --start-at +2h: exit 0" 0 "$?"
check_eq "create --start-at +2h: scheduled, about two hours from now" "scheduled t" \
    "$(psql_q "SELECT status, start_at BETWEEN now() + interval '119 minutes' AND now() + interval '121 minutes' FROM ringmail.campaign WHERE id = $C" | tr '\t' ' ')"
check_grep "create --start-at +2h: says when, in UTC" \
    "^campaign $C scheduled for $(psql_q "SELECT to_char(start_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM ringmail.campaign WHERE id = $C") UTC$" "$T/sched.err"
C=$("$RM" campaign create --db "$PG_URL" --name later2 --from a@acme.test --subject s \
    --text "$T/ok.txt" --start-at "2031-12-06T14:00:00+02:00" 2>"$T/sched2.err")
check_eq "create --start-at with an offset: stored in UTC" "2031-12-06 12:00:00" \
    "$(psql_q "SELECT to_char(start_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM ringmail.campaign WHERE id = $C")"
check_grep "create --start-at with an offset: said in UTC" "^campaign $C scheduled for 2031-12-06 12:00:00 UTC$" "$T/sched2.err"
C=$("$RM" campaign create --db "$PG_URL" --name later3 --from a@acme.test --subject s \
    --text "$T/ok.txt" --start-at "2031-12-06 14:00" 2>/dev/null)
check_eq "create --start-at without a zone: UTC" "2031-12-06 14:00:00" \
    "$(psql_q "SELECT to_char(start_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM ringmail.campaign WHERE id = $C")"
create_refused "a start in the past" \
    "^ringmail campaign create: --start-at 2020-01-01 00:00: that is in the past \(2020-01-01 00:00:00 UTC; it is .* UTC now\)$" \
    --from a@acme.test --subject s --text "$T/ok.txt" --start-at "2020-01-01 00:00"
create_refused "a start that is not a time" "^ringmail campaign create: --start-at 2031-02-30 10:00: not a time" \
    --from a@acme.test --subject s --text "$T/ok.txt" --start-at "2031-02-30 10:00"

# ============================================================ 4. campaign test
openssl genpkey -algorithm ed25519 -out "$T/dkim.pem" 2>/dev/null
printf 'Dear {{first_name}},\nyour link: https://acme.test/t?e={{email}}&n={{first_name}}\nfrom {{city|your town}}\n' >"$T/body.txt"
printf '<p>Dear {{first_name}}, <a href="https://acme.test/t?n={{first_name}}">here</a></p>\n' >"$T/body.html"
C=$("$RM" campaign create --db "$PG_URL" --name seeds --from "Acme News <news@acme.test>" \
    --reply-to help@acme.test --subject "Hi {{first_name}}" --text "$T/body.txt" --html "$T/body.html" \
    --list-unsubscribe 'https://acme.test/u?e={{email}}' \
    --dkim-domain acme.test --dkim-selector s1 --dkim-key "$T/dkim.pem")
psql_q "INSERT INTO ringmail.recipient (campaign_id, address, vars) VALUES
    ($C, 'ann@x.test', '{\"first_name\": \"Ann Lee\"}'), ($C, 'bob@x.test', '{\"first_name\": \"Bob\"}'),
    ($C, 'cy@x.test', '{}')" >/dev/null
snapshot() {
    psql_q "SELECT md5(string_agg(r.id || r.state || r.attempts || r.updated_at, ',' ORDER BY r.id))
              || ' ' || (SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C)
              || ' ' || (SELECT status || status_at FROM ringmail.campaign WHERE id = $C)
            FROM ringmail.recipient r WHERE r.campaign_id = $C"
}
BEFORE=$(snapshot)
# eml_of ADDR: the last message aiosmtpd kept for ADDR
eml_of() { echo "$EML/$(jeval "$AI" "[r['n'] for r in rows if '$1' in r['rcpts']][-1]").eml"; }

timeout 30 "$RM" campaign test "$C" --to seed1@seed.test --to seed2@seed.test --db "$PG_URL" \
    --config "$T/send.conf" >"$T/t1.out" 2>"$T/t1.err"
check_eq "test: exit 0 (both accepted)" 0 "$?"
check_eq "test: one line per seed, outcome and reply" \
    "seed seed1@seed.test: accepted: 250 2.0.0 OK queued as A1|seed seed2@seed.test: accepted: 250 2.0.0 OK queued as A2" \
    "$(paste -sd'|' "$T/t1.out")"
check_eq "test: one row per seed in seed_delivery" \
    "seed1@seed.test accepted 250 2.0.0 2.0.0 OK queued as A1|seed2@seed.test accepted 250 2.0.0 2.0.0 OK queued as A2" \
    "$(psql_q "SELECT address, outcome, code, enhanced, reply FROM ringmail.seed_delivery WHERE campaign_id = $C ORDER BY id" | tr '\t' ' ' | paste -sd'|')"
check_eq "test: the campaign's recipients, deliveries and status untouched" "$BEFORE" "$(snapshot)"
S1=$(eml_of seed1@seed.test)
check_eq "test: seed_delivery keeps the Message-ID the seed got" \
    "$(grep -m1 '^Message-ID: ' "$S1" | tr -d '\r' | cut -d' ' -f2)" \
    "$(psql_q "SELECT message_id FROM ringmail.seed_delivery WHERE address = 'seed1@seed.test'")"
check_eq "test: MAIL FROM is the campaign's" "news@acme.test" "$(jeval "$AI" "rows[0]['from']")"
check_grep "test: From with its display name" $'^From: Acme News <news@acme.test>\r$' "$S1"
check_grep "test: Reply-To" $'^Reply-To: help@acme.test\r$' "$S1"
check_grep "test: To is the seed" $'^To: seed1@seed.test\r$' "$S1"
check_grep "test: the first recipient's variables" $'^Subject: Hi Ann Lee\r$' "$S1"
check_grep "test: DKIM-signed" '^DKIM-Signature: v=1; a=ed25519-sha256; .*d=acme\.test' "$S1"
check_grep "test: List-Unsubscribe names the seed, encoded" \
    $'^List-Unsubscribe: <https://acme.test/u\\?e=seed1%40seed.test>\r$' "$S1"
check_grep "test: a value inside a text URL is percent-encoded" \
    $'^your link: https://acme.test/t\\?e=seed1%40seed.test&n=Ann%20Lee\r$' "$S1"
check_grep "test: a value inside an href is percent-encoded, outside it HTML text" \
    '^<p>Dear Ann Lee, <a href="https://acme.test/t\?n=Ann%20Lee">here</a></p>' "$S1"

timeout 30 "$RM" campaign test "$C" --to seed3@seed.test --as BOB@x.test --db "$PG_URL" \
    --config "$T/send.conf" >"$T/t2.out" 2>"$T/t2.err"
check_eq "test --as: exit 0" 0 "$?"
check_grep "test --as: that recipient's variables" $'^Subject: Hi Bob\r$' "$(eml_of seed3@seed.test)"
timeout 30 "$RM" campaign test "$C" --to seed4@seed.test --vars '{"first_name": "Zoë", "city": "Paris"}' \
    --db "$PG_URL" --config "$T/send.conf" >"$T/t3.out" 2>"$T/t3.err"
check_eq "test --vars: exit 0, no warning" "0 0" "$? $(wc -c <"$T/t3.err")"
check_grep "test --vars: those variables" '^from Paris' "$(eml_of seed4@seed.test)"
"$RM" campaign test "$C" --to seed5@seed.test --as nobody@x.test --db "$PG_URL" >/dev/null 2>"$T/t4.err"
check_eq "test --as an unknown recipient: exit 1" 1 "$?"
check_grep "test --as an unknown recipient: says so" "^ringmail campaign test: campaign $C has no recipient nobody@x.test$" "$T/t4.err"
"$RM" campaign test "$C" --db "$PG_URL" >/dev/null 2>"$T/t5.err"
check_eq "test without --to: exit 2" 2 "$?"
check_grep "test without --to: says so" "^ringmail campaign test: --to ADDR is required" "$T/t5.err"
"$RM" campaign test "$C" --to a@seed.test --window 5 --db "$PG_URL" >/dev/null 2>"$T/t6.err"
check_grep "test --window: not one of its options" "^ringmail campaign test: --window is not an option of campaign test$" "$T/t6.err"
"$RM" campaign test "$C" --to a@seed.test --vars '[1]' --db "$PG_URL" >/dev/null 2>"$T/t7.err"
check_eq "test --vars not an object: exit 2" 2 "$?"
check_grep "test --vars not an object: says what it wants" \
    '^ringmail campaign test: --vars must be a JSON object, \{"first_name": "Ann"\}$' "$T/t7.err"
"$RM" campaign test 999999 --to a@seed.test --db "$PG_URL" >/dev/null 2>"$T/t8.err"
check_eq "test of no campaign: exit 1" 1 "$?"
check_grep "test of no campaign: says so" "^ringmail campaign test: no campaign 999999" "$T/t8.err"

timeout 30 "$RM" campaign test "$C" --to seed6@seed.test --to down@dead.test --db "$PG_URL" \
    --config "$T/send.conf" --timeout-ms 3000 >"$T/t9.out" 2>"$T/t9.err"
check_eq "test with a seed not reached: exit 1" 1 "$?"
check_grep "test with a seed not reached: the other one accepted" '^seed seed6@seed.test: accepted: 250 ' "$T/t9.out"
check_grep "test with a seed not reached: says it was deferred" '^seed down@dead.test: deferred: ' "$T/t9.out"
check_eq "test with a seed not reached: recorded deferred" "deferred" \
    "$(psql_q "SELECT outcome FROM ringmail.seed_delivery WHERE address = 'down@dead.test'")"
check_eq "tests never touched the campaign" "$BEFORE" "$(snapshot)"

# ============================================================ 5. campaign preview
"$RM" campaign preview "$C" --to seed1@seed.test --out "$T/p.eml" --db "$PG_URL" \
    --config "$T/send.conf" >"$T/p.out" 2>"$T/p.err"
check_eq "preview: exit 0, nothing on stdout or stderr" "0 0 0" "$? $(wc -c <"$T/p.out") $(wc -c <"$T/p.err")"
check_eq "preview: the file is private" 600 "$(stat -c %a "$T/p.eml")"
# same_but_dated A B: the two messages, without Date, Message-ID and the
# DKIM signature (which signs those two), are the same bytes
same_but_dated() {
    "$E2E_PY" - "$1" "$2" <<'PY'
import re, sys
def strip(path):
    m = open(path, "rb").read()
    head, body = m.split(b"\r\n\r\n", 1)
    fields = re.split(rb"\r\n(?![ \t])", head)
    keep = [f for f in fields if not re.match(rb"(?i)(date|message-id|dkim-signature):", f)]
    return b"\r\n".join(keep) + b"\r\n\r\n" + body
a, b = strip(sys.argv[1]), strip(sys.argv[2])
print("same" if a == b else "differ:\n%r\n%r" % (a[:400], b[:400]))
PY
}
check_eq "preview: what the seed got, but Date, Message-ID and DKIM-Signature" same "$(same_but_dated "$T/p.eml" "$S1")"
check_grep "preview: signed too" '^DKIM-Signature: ' "$T/p.eml"
"$RM" campaign preview "$C" --to someone@seed.test --as cy@x.test --out "$T/p2.eml" --db "$PG_URL" >"$T/p2.out" 2>"$T/p2.err"
check_eq "preview of a recipient without first_name: exit 0, nothing on stdout" "0 0" "$? $(wc -c <"$T/p2.out")"
check_grep "preview: the missing field said on stderr" \
    "^ringmail campaign preview: warning: campaign $C: \{\{first_name\}\} has no value for someone@seed.test \(rendered empty; give it a default: \{\{first_name\|there\}\}\)$" "$T/p2.err"
check_grep "preview: rendered empty" $'^Subject: Hi\r$' "$T/p2.eml"
"$RM" campaign preview "$C" --to a@seed.test --db "$PG_URL" >/dev/null 2>"$T/p3.err"
check_eq "preview without --out: exit 2" 2 "$?"
check_grep "preview without --out: says so" '^ringmail campaign preview: --out FILE.eml is required$' "$T/p3.err"
"$RM" campaign preview "$C" --to a@seed.test --to b@seed.test --out "$T/p4.eml" --db "$PG_URL" >/dev/null 2>"$T/p4.err"
check_grep "preview for two addresses: refused" '^ringmail campaign preview: one --to for a preview$' "$T/p4.err"
check "preview refused: no file written" test ! -e "$T/p4.eml"

# With [feedback]: VERP and the token List-Unsubscribe, both naming recipient 0
# (no row), and the preview still the same message.
SECRET=$T/feedback.secret
head -c 48 /dev/urandom >"$SECRET"
chmod 600 "$SECRET"
cp "$T/send.conf" "$T/fb.conf"
printf '[feedback]\nreturn_path = bounces.acme.test\nsecret_file = %s\nunsubscribe_url = https://unsub.acme.test/u\n' \
    "$SECRET" >>"$T/fb.conf"
timeout 30 "$RM" campaign test "$C" --to seed8@seed.test --db "$PG_URL" --config "$T/fb.conf" \
    >/dev/null 2>"$T/fb.err"
check_eq "test with [feedback]: exit 0" 0 "$?"
S8=$(eml_of seed8@seed.test)
# ids TOKEN: the (campaign, recipient) varints of a token
ids() { "$E2E_PY" -c 'import base64, sys
t = sys.argv[1]; raw = base64.b32decode(t.upper() + "=" * (-len(t) % 8))[:-12]
out, x, sh = [], 0, 0
for c in raw:
    x |= (c & 0x7F) << sh; sh += 7
    if not c & 0x80: out.append(x); x, sh = 0, 0
print(*out)' "$1"; }
MF=$(jeval "$AI" "[r['from'] for r in rows if 'seed8@seed.test' in r['rcpts']][-1]")
check_eq "test with [feedback]: VERP names the campaign and no recipient" "$C 0" \
    "$(ids "$(echo "$MF" | sed -n 's/^b-\([a-z2-7]*\)@bounces\.acme\.test$/\1/p')")"
UT=$(sed -n 's|^List-Unsubscribe: <https://unsub\.acme\.test/u/\([a-z2-7]*\)>,\r$|\1|p' "$S8")
check_eq "test with [feedback]: the unsubscribe token names no recipient" "$C 0" "$(ids "$UT")"
check_grep "test with [feedback]: it replaces the campaign's List-Unsubscribe (said)" \
    "^ringmail campaign test: \[feedback\] unsubscribe_url replaces campaign $C's list_unsubscribe$" "$T/fb.err"
"$RM" campaign preview "$C" --to seed8@seed.test --out "$T/p8.eml" --db "$PG_URL" \
    --config "$T/fb.conf" 2>/dev/null
check_eq "preview with [feedback]: what the seed got, but Date, Message-ID and DKIM-Signature" same \
    "$(same_but_dated "$T/p8.eml" "$S8")"

# ============================================================ 6. missing values in a send
timeout 30 "$RM" campaign test "$C" --to seed7@seed.test --as cy@x.test --db "$PG_URL" \
    --config "$T/send.conf" >/dev/null 2>"$T/t10.err"
check_grep "test: the missing field said once" \
    "^ringmail campaign test: warning: campaign $C: \{\{first_name\}\} has no value for seed7@seed.test \(rendered empty; give it a default: \{\{first_name\|there\}\}\)$" "$T/t10.err"
check_eq "test: said once although the field is there three times" 1 "$(grep -c warning "$T/t10.err")"
psql_q "INSERT INTO ringmail.recipient (campaign_id, address, vars) VALUES ($C, 'dee@x.test', '{\"city\": \"\"}')" >/dev/null
timeout 60 "$RM" send --db "$PG_URL" --campaign "$C" --config "$T/send.conf" --node n1 \
    --journal "$T/n1.journal" --json >"$T/send.json" 2>"$T/send.err"
check_eq "send: exit 0" 0 "$?"
check_eq "send: every recipient sent" 4 "$(count_state "$C" sent)"
check_eq "send: the missing field said once when first met, and its total at the end" 2 \
    "$(grep -c "^ringmail send: warning: campaign $C: {{first_name}} has no value for " "$T/send.err")"
check_grep "send: the total" \
    "^ringmail send: warning: campaign $C: \{\{first_name\}\} has no value for 2 recipients \(rendered empty; give it a default: \{\{first_name\|there\}\}\)$" "$T/send.err"
check_no_grep "send: a field with a default is never missing" "city" "$T/send.err"
B=$(eml_of bob@x.test)
check_grep "send: From with its display name (the campaign row)" $'^From: Acme News <news@acme.test>\r$' "$B"
check_grep "send: Reply-To (the campaign row)" $'^Reply-To: help@acme.test\r$' "$B"
check_grep "send: the value in the URL encoded" $'^List-Unsubscribe: <https://acme.test/u\\?e=bob%40x.test>\r$' "$B"

"$RM" campaign --help >"$T/help.out"
check_grep "campaign --help: test" '^ +ringmail campaign test ' "$T/help.out"
check_grep "campaign --help: preview" '^ +ringmail campaign preview ' "$T/help.out"
e2e_finish
