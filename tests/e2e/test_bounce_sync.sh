#!/usr/bin/env bash
# Synchronous bounces: what a rejection (or an expiry) does to the address.
# One sink per domain, each with its own permanent reply for permfail@:
#   user.test   550 5.1.1 User unknown           hard bad-mailbox: suppressed
#   ms.test     550 5.7.1 ... block list (S3150) policy-related: bounced, not suppressed
#   seq.test    503 5.5.1 bad sequence           protocol-errors: deferred until
#                                                max_age, never suppressed
#   full.test   552 5.2.2 Mailbox full           soft quota-issues: a feedback_event
#                                                row; suppressed (kind soft-bounces)
#                                                at soft_bounce_limit = 2; tempfail@
#               452 4.2.2 ... over quota         deferred until max_age: its expiry is
#                                                a soft bounce too (message-expired)
#   spam.test   554 5.7.1 ... likely unsolicited spam-related (gmail): not suppressed
#   1. campaign mode: delivery rows carry category, bounce and bounce_rule
#      (accepted rows NULL); suppression rows and kinds; a second campaign
#      to full.test reaches the limit; user.test is suppressed at claim
#   2. list mode: --suppress gets the bad mailbox only; with
#      soft_bounce_limit = 1 the full mailbox too (the window is the run)
#   3. blast --records: a rejection's category, bounce and bounce_rule
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null

SINK_PORT=$(free_port)
declare -A REPLY=(
    [user]="550 5.1.1 User unknown (sink)"
    [ms]="550 5.7.1 Unfortunately, messages from [{ip}] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150)."
    [seq]="503 5.5.1 bad sequence of commands"
    [full]="552 5.2.2 Mailbox full"
    [spam]="554 5.7.1 [{ip}] Our system has detected that this message is likely unsolicited mail."
)
declare -A IPS
IPS=([user]=127.0.0.81 [ms]=127.0.0.82 [seq]=127.0.0.83 [full]=127.0.0.84 [spam]=127.0.0.85)

SECRET=$E2E_TMP/feedback.secret
head -c 32 /dev/urandom >"$SECRET"
chmod 600 "$SECRET"
conf() { # conf FILE LIMIT
    {
        printf '[global]\ntls = none\nretry = 200ms\nmax_age = 1500ms\n'
        for d in user ms seq full spam; do
            printf '[isp %s]\ndomains = %s.test\n[route %s.test]\nserver = %s:%s\n' \
                "$d" "$d" "$d" "${IPS[$d]}" "$SINK_PORT"
        done
        printf '[feedback]\nreturn_path = bounces.sender.test\nsecret_file = %s\n' "$SECRET"
        printf 'soft_bounce_limit = %s\nsoft_bounce_window = 7d\n' "$2"
    } >"$1"
}
conf "$E2E_TMP/c2.conf" 2
conf "$E2E_TMP/c1.conf" 1

for d in user ms seq full spam; do
    printf '{"name": "%s", "perm_reply": "%s", "temp_reply": "%s"}\n' "$d" "${REPLY[$d]}" \
        "452 4.2.2 The email account that you tried to reach is over quota." >"$E2E_TMP/$d.json"
    start_sink "$d" "${IPS[$d]}" --profile-file "$E2E_TMP/$d.json" ||
        { check "sink $d starts" false; e2e_finish; exit 1; }
done

# campaign NAME ADDRESS...: a campaign to these addresses; prints its id.
campaign() {
    local id name=$1
    shift
    id=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
        VALUES ('$name', 'news@sender.test', 'Hello', 'Campaign $name.') RETURNING id")
    for a in "$@"; do
        psql_q "INSERT INTO ringmail.recipient (campaign_id, address) VALUES ($id, '$a')" >/dev/null
    done
    echo "$id"
}
send_db() { # send_db NAME ID CONF
    timeout 40 "$RM" send --db "$PG_URL" --campaign "$2" --config "$3" --node "$1" \
        --journal "$E2E_TMP/$1.journal" --json >"$E2E_TMP/$1.json" 2>"$E2E_TMP/$1.err"
}
# row ID ADDRESS COLUMNS: the last delivery row of ADDRESS in campaign ID
row() {
    psql_q "SELECT $3 FROM ringmail.delivery d JOIN ringmail.recipient r ON r.id = d.recipient_id
        WHERE d.campaign_id = $1 AND r.address = '$2' ORDER BY d.id DESC LIMIT 1"
}
state() { psql_q "SELECT state FROM ringmail.recipient WHERE campaign_id = $1 AND address = '$2'"; }
supp() { psql_q "SELECT kind FROM ringmail.suppression WHERE address = '$1'"; }

# ============================================================ 1. campaign mode
ALL="permfail@user.test permfail@ms.test permfail@seq.test permfail@full.test permfail@spam.test tempfail@full.test ok@user.test"
# shellcheck disable=SC2086
C1=$(campaign one $ALL)
send_db one "$C1" "$E2E_TMP/c2.conf"
check_eq "one: exit 0" 0 "$?"
check_eq "one: every recipient final" 0 "$(nonfinal "$C1")"
check_eq "one: ok@user.test sent; its row's category, bounce, bounce_rule are NULL" "sent|t" \
    "$(state "$C1" ok@user.test)|$(row "$C1" ok@user.test "d.category IS NULL AND d.bounce IS NULL AND d.bounce_rule IS NULL")"
check_eq "one: 550 5.1.1 bounced, bad-mailbox hard (rfc3463)" \
    "bounced|bad-mailbox|hard|rfc3463: X.1.1 bad destination mailbox" \
    "$(state "$C1" permfail@user.test)|$(row "$C1" permfail@user.test "d.category || '|' || d.bounce || '|' || d.bounce_rule")"
check_eq "one: S3150 bounced, policy-related hard (microsoft)" \
    "bounced|policy-related|hard|microsoft: (S3150)" \
    "$(state "$C1" permfail@ms.test)|$(row "$C1" permfail@ms.test "d.category || '|' || d.bounce || '|' || d.bounce_rule")"
check_eq "one: 554 5.7.1 likely unsolicited bounced, spam-related hard (gmail)" \
    "bounced|spam-related|hard|gmail: likely unsolicited mail" \
    "$(state "$C1" permfail@spam.test)|$(row "$C1" permfail@spam.test "d.category || '|' || d.bounce || '|' || d.bounce_rule")"
check_eq "one: 552 5.2.2 bounced, quota-issues soft" \
    "bounced|quota-issues|soft|rfc3463: X.2.2 mailbox full" \
    "$(state "$C1" permfail@full.test)|$(row "$C1" permfail@full.test "d.category || '|' || d.bounce || '|' || d.bounce_rule")"
check_eq "one: 503 to RCPT expired at max_age: the final row is message-expired soft" \
    "expired|expired|message-expired|soft|ringmail: max_age passed" \
    "$(state "$C1" permfail@seq.test)|$(row "$C1" permfail@seq.test "d.outcome || '|' || d.category || '|' || d.bounce || '|' || d.bounce_rule")"
check_ge "one: 503's deferrals are protocol-errors (503 bad sequence of commands)" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery d JOIN ringmail.recipient r ON r.id = d.recipient_id
        WHERE d.campaign_id = $C1 AND r.address = 'permfail@seq.test' AND d.outcome = 'deferred'
        AND d.category = 'protocol-errors' AND d.bounce_rule = 'protocol: 503 bad sequence of commands'")"
check_eq "one: 452 4.2.2 over quota until max_age: expired, the final row message-expired soft" \
    "expired|expired|message-expired|soft" \
    "$(state "$C1" tempfail@full.test)|$(row "$C1" tempfail@full.test "d.outcome || '|' || d.category || '|' || d.bounce")"
check_ge "one: its deferrals are quota-issues soft (gmail's text)" 1 \
    "$(psql_q "SELECT count(*) FROM ringmail.delivery d JOIN ringmail.recipient r ON r.id = d.recipient_id
        WHERE d.campaign_id = $C1 AND r.address = 'tempfail@full.test' AND d.outcome = 'deferred'
        AND d.category = 'quota-issues' AND d.bounce = 'soft'
        AND d.bounce_rule = 'gmail: The email account that you tried to reach is over quota'")"
check_eq "one: only the bad mailbox is suppressed, kind bounce" "permfail@user.test|bounce" \
    "$(psql_q "SELECT string_agg(address || '|' || kind, ',') FROM ringmail.suppression")"
check_eq "one: its reason names the category and the reply" \
    "bad-mailbox bounce: 550 5.1.1 User unknown (sink)" \
    "$(psql_q "SELECT reason FROM ringmail.suppression WHERE address = 'permfail@user.test'")"
check_eq "one: one feedback_event: the soft bounce of full.test" \
    "bounce|smtp|soft|quota-issues|5.2.2|552 5.2.2 Mailbox full|full|f" \
    "$(psql_q "SELECT concat_ws('|', e.kind, e.source, e.bounce, e.category, e.status, e.diagnostic, e.isp, e.suppressed)
        FROM ringmail.feedback_event e JOIN ringmail.recipient r ON r.id = e.recipient_id
        WHERE e.campaign_id = $C1 AND r.address = e.address AND e.address = 'permfail@full.test'")"
check_eq "one: the expiry after 452 4.2.2 is a soft bounce event too" \
    "message-expired|4.2.2|452 4.2.2 The email account that you tried to reach is over quota." \
    "$(psql_q "SELECT concat_ws('|', category, status, diagnostic) FROM ringmail.feedback_event
        WHERE address = 'tempfail@full.test'")"
check_eq "one: no other feedback_event rows (the 503's expiry is not a soft bounce)" 2 \
    "$(psql_q "SELECT count(*) FROM ringmail.feedback_event")"
check_eq "one: send --json counts the rejections by category" "1 1 1 1" \
    "$(jeval "$E2E_TMP/one.json" '"%d %d %d %d" % (d["bounce_categories"]["bad-mailbox"], d["bounce_categories"]["policy-related"], d["bounce_categories"]["spam-related"], d["bounce_categories"]["quota-issues"])')"

# The second campaign: full.test's second soft bounce within 7d reaches the
# limit of 2; the bad mailbox is suppressed at claim, the others go out again.
C2=$(campaign two permfail@full.test permfail@user.test permfail@ms.test)
send_db two "$C2" "$E2E_TMP/c2.conf"
check_eq "two: exit 0" 0 "$?"
check_eq "two: the bad mailbox is suppressed at claim" suppressed "$(state "$C2" permfail@user.test)"
check_eq "two: S3150 bounced again, still not suppressed" "bounced|" \
    "$(state "$C2" permfail@ms.test)|$(supp permfail@ms.test)"
check_eq "two: full.test's second soft bounce suppresses it, kind soft-bounces" \
    "bounced|soft-bounces" "$(state "$C2" permfail@full.test)|$(supp permfail@full.test)"
check_eq "two: the reason counts them in the window and quotes the last" \
    "2 soft bounces within 7d (last: 552 5.2.2 Mailbox full)" \
    "$(psql_q "SELECT reason FROM ringmail.suppression WHERE address = 'permfail@full.test'")"
check_eq "two: that event says suppressed, the first does not" "f t" \
    "$(psql_q "SELECT string_agg(CASE WHEN suppressed THEN 't' ELSE 'f' END, ' ' ORDER BY id)
        FROM ringmail.feedback_event WHERE address = 'permfail@full.test'")"
check_eq "two: suppression kinds" "bounce soft-bounces" \
    "$(psql_q "SELECT string_agg(kind, ' ' ORDER BY kind) FROM ringmail.suppression")"

# An old soft bounce falls out of the window: it does not count.
psql_q "DELETE FROM ringmail.suppression WHERE address = 'permfail@full.test'" >/dev/null
psql_q "UPDATE ringmail.feedback_event SET received_at = now() - interval '8 days'" >/dev/null
C3=$(campaign three permfail@full.test)
send_db three "$C3" "$E2E_TMP/c2.conf"
check_eq "three: soft bounces older than the window do not count" "bounced|" \
    "$(state "$C3" permfail@full.test)|$(supp permfail@full.test)"

# ============================================================ 2. list mode
printf '%s\n' $ALL >"$E2E_TMP/list.txt"
list() { # list NAME CONF
    timeout 40 "$RM" send --recipients "$E2E_TMP/list.txt" --config "$2" --from news@sender.test \
        --records "$E2E_TMP/$1.records" --suppress "$E2E_TMP/$1.supp" --json \
        >"$E2E_TMP/$1.json" 2>"$E2E_TMP/$1.err"
}
list l2 "$E2E_TMP/c2.conf"
check_eq "list, limit 2: exit 0" 0 "$?"
check_eq "list, limit 2: --suppress has the bad mailbox only" "permfail@user.test" \
    "$(cat "$E2E_TMP/l2.supp")"
check_eq "list, limit 2: 4 rejected, 2 expired (the 503, the 452)" "4 2" \
    "$(jget "$E2E_TMP/l2.json" rejected) $(jget "$E2E_TMP/l2.json" expired)"
check_eq "list: the final records carry the same categories" \
    "bad-mailbox policy-related message-expired quota-issues spam-related" \
    "$("$E2E_PY" -c '
import json, sys
last = {}
for l in open(sys.argv[1]):
    r = json.loads(l)
    last[r["rcpt"]] = r.get("category")
print(" ".join(last[a + ".test"] for a in ("permfail@user", "permfail@ms", "permfail@seq", "permfail@full", "permfail@spam")))' "$E2E_TMP/l2.records")"
list l1 "$E2E_TMP/c1.conf"
check_eq "list, limit 1: the full mailboxes are suppressed too" \
    "permfail@full.test permfail@user.test tempfail@full.test" \
    "$(sort "$E2E_TMP/l1.supp" | tr '\n' ' ' | sed 's/ $//')"

# ============================================================ 3. blast --records
start_sink blast 127.0.0.86 --profile outlook --reject-pct 100
timeout 30 "$RM" blast --server "127.0.0.86:$SINK_PORT" --tls none --count 3 --concurrency 1 \
    --records "$E2E_TMP/blast.records" --json >"$E2E_TMP/blast.json" 2>"$E2E_TMP/blast.err"
check_eq "blast: 3 rejected" 3 "$(jget "$E2E_TMP/blast.json" rejected)"
check_eq "blast: records say policy-related hard (microsoft: (S3150))" 3 \
    "$(jcount "$E2E_TMP/blast.records" 'd["category"] == "policy-related" and d["bounce"] == "hard" and d["bounce_rule"] == "microsoft: (S3150)"')"

e2e_finish
