#!/usr/bin/env bash
# ringmail report's feedback sections (issue 13 item 6), over rows written
# here with psql (what send's results and the feedback store write): bounces
# by category, synchronous (final delivery rows) and asynchronous (bounce
# reports); feedback events by kind (unsubscribes by source, auto-replies,
# unmatched); the complaint rate per ISP; the time from delivery to
# unsubscribe; the ISPs held. The same numbers in text, CSV and JSON, and
# rows of another campaign, of non-final attempts or of events from before
# the campaign do not count, nor is a synchronous soft bounce's event
# (source smtp) counted again as a report.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null
T=$E2E_TMP

C=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body, created_at)
    VALUES ('fb', 'news@sender.test', 'Hi', 'Body', '2026-05-01 09:00:00+00') RETURNING id")
OTHER=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
    VALUES ('other', 'news@sender.test', 'Hi', 'Body') RETURNING id")
psql_q "INSERT INTO ringmail.recipient (campaign_id, address, state)
    SELECT $C, 'r' || g || CASE WHEN g <= 6 THEN '@gmail.test' ELSE '@yahoo.test' END,
           CASE WHEN g <= 8 THEN 'sent' WHEN g = 10 THEN 'failed' ELSE 'bounced' END
    FROM generate_series(1, 11) g" >/dev/null
# rid N: the id of rN
rid() { psql_q "SELECT id FROM ringmail.recipient WHERE campaign_id = $C AND address LIKE 'r$1@%'"; }
for n in $(seq 1 11); do eval "R$n=$(rid "$n")"; done
T0="'2026-05-01 10:00:00+00'::timestamptz"
# Deliveries: r1-r6 accepted (gmail), r7-r8 accepted (yahoo); r9 rejected
# bad-mailbox hard; r10 expired (message-expired, soft) after a deferral;
# r11 rejected by a row without the classifier's columns (older rows).
psql_q "INSERT INTO ringmail.delivery (campaign_id, recipient_id, attempt, outcome, final, isp, at,
        code, category, bounce) VALUES
    ($C, $R1, 1, 'accepted', true, 'gmail', $T0, 250, NULL, NULL),
    ($C, $R2, 1, 'accepted', true, 'gmail', $T0, 250, NULL, NULL),
    ($C, $R3, 1, 'accepted', true, 'gmail', $T0, 250, NULL, NULL),
    ($C, $R4, 1, 'accepted', true, 'gmail', $T0, 250, NULL, NULL),
    ($C, $R5, 1, 'accepted', true, 'gmail', $T0, 250, NULL, NULL),
    ($C, $R6, 1, 'accepted', true, 'gmail', $T0, 250, NULL, NULL),
    ($C, $R7, 1, 'accepted', true, 'yahoo', $T0, 250, NULL, NULL),
    ($C, $R8, 1, 'accepted', true, 'yahoo', $T0, 250, NULL, NULL),
    ($C, $R9, 1, 'rejected', true, 'yahoo', $T0, 550, 'bad-mailbox', 'hard'),
    ($C, $R10, 1, 'deferred', false, 'yahoo', $T0, 452, 'quota-issues', 'soft'),
    ($C, $R10, 2, 'expired', true, 'yahoo', $T0, 452, 'message-expired', 'soft'),
    ($C, $R11, 1, 'rejected', true, 'yahoo', $T0, 550, NULL, NULL),
    ($OTHER, 1, 1, 'rejected', true, 'yahoo', $T0, 550, 'spam-related', 'hard'),
    ($OTHER, 2, 1, 'accepted', true, 'gmail', $T0, 250, NULL, NULL)" >/dev/null
# ev KIND SOURCE RECIPIENT ISP CATEGORY BOUNCE SECONDS_AFTER_T0 [CAMPAIGN]
ev() {
    local camp=${8:-$C}
    psql_q "INSERT INTO ringmail.feedback_event (kind, source, campaign_id, recipient_id, isp,
            category, bounce, received_at) VALUES ('$1', $2, $camp, $3, $4, $5, $6,
            $T0 + $7 * interval '1 second')" >/dev/null
}
ev bounce "'dsn'" "$R1" "'gmail'" "'bad-mailbox'" "'hard'" 30
ev bounce "'dsn'" "$R2" "'gmail'" "'quota-issues'" "'soft'" 40
ev bounce "'text'" "$R2" "'gmail'" "'quota-issues'" "'soft'" 50
ev delay "'dsn'" "$R2" "'gmail'" NULL NULL 20
# r10's expiry as the results writer also records it (source smtp, for the
# soft-bounce limit): a synchronous bounce, counted from its delivery row.
ev bounce "'smtp'" "$R10" "'yahoo'" "'message-expired'" "'soft'" 0
ev complaint "'arf'" "$R3" "'gmail'" NULL NULL 100
ev complaint "'arf'" "$R4" "'gmail'" NULL NULL 200
ev complaint "'arf'" "$R7" "'yahoo'" NULL NULL 300
ev unsubscribe "'http'" "$R5" "'gmail'" NULL NULL 60
ev unsubscribe "'mailto'" "$R6" "'gmail'" NULL NULL 120
ev unsubscribe "'http'" "$R6" "'gmail'" NULL NULL 300 # again: the first one counts for the delay
ev unsubscribe "'http'" "$R8" "'yahoo'" NULL NULL 1000
ev auto_reply "'text'" "$R1" "'gmail'" NULL NULL 10
ev complaint "'arf'" 2 "'gmail'" NULL NULL 10 "$OTHER"
# Unmatched reports name no campaign: one after this campaign was created
# counts, one from the day before does not.
psql_q "INSERT INTO ringmail.feedback_event (kind, source, reason, received_at) VALUES
    ('unmatched', 'dsn', 'forged token (MAC mismatch): b-x', $T0),
    ('unmatched', 'dsn', 'no ringmail token in the message', $T0 - interval '1 day')" >/dev/null
psql_q "INSERT INTO ringmail.isp_hold (campaign_id, isp, reason, held_at) VALUES
    ($C, 'gmail', '2 complaints over 6 delivered in 24h (33.33% > 0.20%)', $T0 + interval '200 s'),
    ($OTHER, 'yahoo', 'other campaign', $T0)" >/dev/null

# ---- JSON
"$RM" report --db "$PG_URL" --campaign "$C" --format json >"$T/r.json" 2>"$T/r.err"
check_eq "json: exit 0" 0 "$?"
check_eq "json: synchronous bounces by category (final rejections and expiries only)" \
    '[["bad-mailbox", 1, 0], ["message-expired", 0, 1], ["unclassified", 1, 0]]' \
    "$(jeval "$T/r.json" '[[x["category"], x["bounces"], x["soft_bounces"]] for x in d["bounces_synchronous"]]')"
check_eq "json: asynchronous bounces by category (bounce reports; not the smtp event)" \
    '[["quota-issues", 0, 2], ["bad-mailbox", 1, 0]]' \
    "$(jeval "$T/r.json" '[[x["category"], x["bounces"], x["soft_bounces"]] for x in d["bounces_asynchronous"]]')"
check_eq "json: feedback events by kind" \
    '{"events": 13, "bounces": 1, "soft_bounces": 2, "synchronous_soft_bounces": 1, "delays": 1, "complaints": 3, "unsubscribes": 4, "unsubscribes_http": 3, "unsubscribes_mailto": 1, "auto_replies": 1, "unmatched": 1}' \
    "$(jeval "$T/r.json" 'd["feedback"]')"
check_eq "json: complaint rate per ISP (complaints / accepted deliveries)" \
    '[["gmail", 6, 2, 0.333333], ["yahoo", 2, 1, 0.5]]' \
    "$(jeval "$T/r.json" '[[x["isp"], x["accepted"], x["complaints"], x["complaint_rate"]] for x in d["complaint_rates"]]')"
check_eq "json: delivery to unsubscribe: 3 recipients, median 120 s, p90 824 s, max 1000 s" \
    '{"recipients": 3, "median_s": 120.0, "p90_s": 824.0, "max_s": 1000.0}' \
    "$(jeval "$T/r.json" 'd["unsubscribe_delay"]')"
check_eq "json: the campaign's hold, not the other's" \
    '[["gmail", "2026-05-01T10:03:20Z", "2 complaints over 6 delivered in 24h (33.33% > 0.20%)"]]' \
    "$(jeval "$T/r.json" '[[x["isp"], x["held_at"], x["reason"]] for x in d["holds"]]')"
check_eq "json: the sections before stay (isps)" '[["gmail", 6], ["yahoo", 6]]' \
    "$(jeval "$T/r.json" '[[x["isp"], x["attempts"]] for x in d["isps"]]')"

# ---- text: each section's own lines
"$RM" report --db "$PG_URL" --campaign "$C" >"$T/r.txt" 2>&1
check_eq "text: exit 0" 0 "$?"
# section FILE TITLE_START: the lines of that table (after its title, to the blank line)
section() { awk -v t="$2" 'index($0, t) == 1 { on = 1; next } on && /^$/ { exit } on' "$1"; }
section "$T/r.txt" "bounces by category, synchronous" >"$T/sync.txt"
check_grep "text: synchronous: header" '^  category +bounces +soft_bounces$' "$T/sync.txt"
check_grep "text: synchronous: bad-mailbox 1 0" '^  bad-mailbox +1 +0$' "$T/sync.txt"
check_grep "text: synchronous: message-expired 0 1" '^  message-expired +0 +1$' "$T/sync.txt"
check_grep "text: synchronous: unclassified 1 0" '^  unclassified +1 +0$' "$T/sync.txt"
check_no_grep "text: synchronous: the deferral is not a bounce" 'quota-issues' "$T/sync.txt"
section "$T/r.txt" "bounces by category, asynchronous" >"$T/async.txt"
check_grep "text: asynchronous: quota-issues 0 2" '^  quota-issues +0 +2$' "$T/async.txt"
check_grep "text: asynchronous: bad-mailbox 1 0" '^  bad-mailbox +1 +0$' "$T/async.txt"
check_no_grep "text: asynchronous: the smtp event is not a report" 'message-expired' "$T/async.txt"
section "$T/r.txt" "feedback (events by kind)" >"$T/fb.txt"
check_grep "text: feedback: complaints 3" '^  complaints +3$' "$T/fb.txt"
check_grep "text: feedback: unsubscribes by source" '^  unsubscribes_mailto +1$' "$T/fb.txt"
check_grep "text: feedback: auto-replies 1" '^  auto_replies +1$' "$T/fb.txt"
check_grep "text: feedback: unmatched 1" '^  unmatched +1$' "$T/fb.txt"
section "$T/r.txt" "complaint rate per ISP" >"$T/rate.txt"
check_grep "text: complaint rate: gmail 6 2 0.333333" '^  gmail +6 +2 +0\.333333$' "$T/rate.txt"
check_grep "text: complaint rate: yahoo 2 1 0.5" '^  yahoo +2 +1 +0\.5$' "$T/rate.txt"
section "$T/r.txt" "time from delivery to unsubscribe" >"$T/unsub.txt"
check_grep "text: delivery to unsubscribe" '^ +3 +120 +824 +1000$' "$T/unsub.txt"
section "$T/r.txt" "ISPs held by the complaint guard" >"$T/holds.txt"
check_grep "text: holds" '^  gmail +2026-05-01T10:03:20Z +2 complaints over 6 delivered in 24h \(33\.33% > 0\.20%\)$' \
    "$T/holds.txt"

# ---- CSV
"$RM" report --db "$PG_URL" --campaign "$C" --format csv >"$T/r.csv" 2>&1
check_eq "csv: exit 0" 0 "$?"
check_grep "csv: synchronous bounce" '^bounces_synchronous,bad-mailbox,bounces,1$' "$T/r.csv"
check_grep "csv: synchronous soft bounce" '^bounces_synchronous,message-expired,soft_bounces,1$' "$T/r.csv"
check_grep "csv: asynchronous soft bounces" '^bounces_asynchronous,quota-issues,soft_bounces,2$' "$T/r.csv"
check_grep "csv: complaints" '^feedback,complaints,count,3$' "$T/r.csv"
check_grep "csv: unsubscribes over http" '^feedback,unsubscribes_http,count,3$' "$T/r.csv"
check_grep "csv: unmatched" '^feedback,unmatched,count,1$' "$T/r.csv"
check_grep "csv: complaint rate" '^complaint_rates,gmail,complaint_rate,0\.333333$' "$T/r.csv"
check_grep "csv: accepted deliveries beside it" '^complaint_rates,yahoo,accepted,2$' "$T/r.csv"
check_grep "csv: delivery to unsubscribe, p90" '^unsubscribe_delay,delivery_to_unsubscribe,p90_s,824$' \
    "$T/r.csv"
check_grep "csv: hold reason" \
    '^holds,gmail,reason,2 complaints over 6 delivered in 24h \(33\.33% > 0\.20%\)$' "$T/r.csv"
check_eq "csv: every row has four fields" 0 \
    "$("$E2E_PY" -c 'import csv, sys; print(sum(1 for r in csv.reader(open(sys.argv[1])) if len(r) != 4))' "$T/r.csv")"

# ---- a campaign with nothing back: zeros and empty tables, no error
E=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
    VALUES ('empty', 'news@sender.test', 'Hi', 'Body') RETURNING id")
"$RM" report --db "$PG_URL" --campaign "$E" --format json >"$T/e.json" 2>&1
check_eq "empty: json exit 0" 0 "$?"
check_eq "empty: no events, no bounces, no rates, no holds, no delay" "0 0 0 0 0 0 None" \
    "$(jeval "$T/e.json" '"%d %d %d %d %d %d %s" % (d["feedback"]["events"], len(d["bounces_synchronous"]), len(d["bounces_asynchronous"]), len(d["complaint_rates"]), len(d["holds"]), d["unsubscribe_delay"]["recipients"], d["unsubscribe_delay"]["median_s"])')"
"$RM" report --db "$PG_URL" --campaign "$E" >"$T/e.txt" 2>&1
check_eq "empty: text exit 0" 0 "$?"
check_eq "empty: the held table says (none)" "  (none)" "$(section "$T/e.txt" "ISPs held by the complaint guard")"
check_grep "empty: the delay's median is '-'" '^ +0 +- +- +-$' "$T/e.txt"
e2e_finish
