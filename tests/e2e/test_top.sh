#!/usr/bin/env bash
# ringmail top (issue 14, live view): the operator's per-ISP view of a
# running campaign, checked against the database. A campaign of two ISPs
# (alpha: a.test, beta: b.test, by the config's domain lists; one sink each
# through [route]s, alpha deferring 20%, beta deferring 10% and rejecting
# 5%) is sent with a small window, so that recipients are due, in flight
# and waiting for their retry (retry = 1h) at once.
#   1. metrics: while the send runs, `top --metrics` takes each ISP's limit
#      and backoff from the send's /metrics (the values a scrape shows);
#      an endpoint that does not answer is a line of the view, not an exit
#   2. the snapshot: with the send stopped (SIGSTOP), `top --once --format
#      json` and the text view show per ISP queued, due, in flight, attempts
#      of the last minute and the rate, deferrals of the last 5 minutes,
#      the last error, and the totals, as psql counts them; without
#      --config the recipients never tried are "(not yet routed)"
#   3. an isp_suspend row and an isp_hold row appear with reason and end
#   4. on a terminal (tmux): the header and an ISP row, redrawn; q, Ctrl-C
#      and SIGTERM end it with the terminal settings as they were
#   5. errors: database unreachable, schema missing, unknown campaign, bad
#      --interval, bad --sort; stdout not a terminal: one snapshot
# Nothing leaves 127.0.0.0/8.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
T_START=$(now_ms)
e2e_require tmux psql || { e2e_finish; exit 1; }
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null

SINK_PORT=$(free_port)
start_sink a 127.0.0.91 --defer-pct 20 --seed 7
start_sink b 127.0.0.92 --defer-pct 10 --reject-pct 5 --seed 3

CONF=$E2E_TMP/top.conf
cat >"$CONF" <<CONF
[global]
tls = none
retry = 1h
max_age = 2h
[isp alpha]
domains = a.test
max_connections = 2
msg_rate = 20/s
[isp beta]
domains = b.test
max_connections = 2
msg_rate = 10/s
[route a.test]
server = 127.0.0.91:$SINK_PORT
[route b.test]
server = 127.0.0.92:$SINK_PORT
CONF

N=150 # per ISP
C=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
    VALUES ('top', 'news@sender.test', 'Hello', 'Hello.') RETURNING id")
psql_q "INSERT INTO ringmail.recipient (campaign_id, address)
    SELECT $C, 'r' || g || '@' || CASE WHEN g % 2 = 0 THEN 'a.test' ELSE 'b.test' END
    FROM generate_series(1, 2 * $N) g" >/dev/null

METRICS_PORT=$(free_port)
DEAD_PORT=$(free_port)
"$RM" send --db "$PG_URL" --campaign "$C" --config "$CONF" --node topnode \
    --journal "$E2E_TMP/topnode.journal" --window 30 --batch 15 --lease 60 \
    --metrics "127.0.0.1:$METRICS_PORT" --json >"$E2E_TMP/send.json" 2>"$E2E_TMP/send.err" &
SEND_PID=$!
e2e_cleanup "kill -CONT $SEND_PID; e2e_kill $SEND_PID"
wait_port 127.0.0.1 "$METRICS_PORT" 10 "$SEND_PID"

TOP=("$RM" top --db "$PG_URL" --campaign "$C")
# isp FILE NAME FIELD[.SUB]: a field of one ISP's object in a top JSON document
isp() {
    jeval "$1" "__import__('functools').reduce(lambda v, k: v.get(k) if isinstance(v, dict) else None,
        '$3'.split('.'), next((x for x in d['isps'] if x['isp'] == '$2'), None))"
}
# wait_until CMD S: until CMD succeeds (S seconds at most)
wait_until() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        "$1" && return 0
        sleep 0.1
    done
    return 1
}
some_deferred() {
    [ "$(psql_q "SELECT count(DISTINCT isp) FROM ringmail.delivery WHERE campaign_id = $C
        AND outcome = 'deferred'")" -ge 2 ]
}
check "the send defers some recipients of both ISPs" wait_until some_deferred 15

# ============================================================ 1. metrics
scrape() {
    "$E2E_PY" -c '
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=3).read()
open(sys.argv[2], "wb").write(body)' "$METRICS_PORT" "$1"
}
metric() { awk -v k="$2" 'index($0, k) == 1 { print $NF; exit }' "$1"; }
M=$E2E_TMP/top.metrics.json
"${TOP[@]}" --config "$CONF" --metrics "127.0.0.1:$METRICS_PORT" --metrics "127.0.0.1:$DEAD_PORT" \
    --format json >"$M" 2>"$E2E_TMP/top.metrics.err"
RC=$?
scrape "$E2E_TMP/scrape.txt"
check_eq "metrics: top --format json exits 0 with an endpoint that does not answer" 0 "$RC"
check_eq "metrics: alpha's limit comes from the send's /metrics" metrics "$(isp "$M" alpha limit_from)"
check_eq "metrics: alpha's limit is ringmail_rate_limit{isp=\"alpha\"}" \
    "$(metric "$E2E_TMP/scrape.txt" 'ringmail_rate_limit{isp="alpha"}')" \
    "$(jeval "$M" "'%g' % next(x for x in d['isps'] if x['isp'] == 'alpha')['limit']")"
check_eq "metrics: beta's limit is ringmail_rate_limit{isp=\"beta\"}" \
    "$(metric "$E2E_TMP/scrape.txt" 'ringmail_rate_limit{isp="beta"}')" \
    "$(jeval "$M" "'%g' % next(x for x in d['isps'] if x['isp'] == 'beta')['limit']")"
check_eq "metrics: alpha's backoff factor is ringmail_backoff_factor{isp=\"alpha\"}" \
    "$(metric "$E2E_TMP/scrape.txt" 'ringmail_backoff_factor{isp="alpha"}')" \
    "$(jeval "$M" "'%g' % next(x for x in d['isps'] if x['isp'] == 'alpha')['metrics']['backoff']")"
check_eq "metrics: backoff_active is ringmail_backoff_active (false)" false \
    "$(isp "$M" alpha metrics.backoff_active)"
check "metrics: connections open come from the endpoint (a number)" \
    "$E2E_PY" -c 'import json, sys; d = json.load(open(sys.argv[1]))
assert all(isinstance(x["metrics"]["connections"], int) for x in d["isps"] if x["isp"] in ("alpha", "beta"))' "$M"
check_eq "metrics: the endpoint that does not answer is a problem line" \
    "metrics 127.0.0.1:$DEAD_PORT: connection refused" "$(jeval "$M" 'd["problems"][0]')"
"${TOP[@]}" --config "$CONF" --metrics "127.0.0.1:$DEAD_PORT" --once >"$E2E_TMP/top.dead.txt" 2>&1
check_eq "metrics: the text view exits 0 too" 0 "$?"
check_grep "metrics: the text view says: metrics 127.0.0.1:$DEAD_PORT: connection refused" \
    "^metrics 127\\.0\\.0\\.1:$DEAD_PORT: connection refused$" "$E2E_TMP/top.dead.txt"
check_grep "metrics: the text view still has the alpha row" "^alpha " "$E2E_TMP/top.dead.txt"
# Two senders: the send's endpoint and a second one (a file served over
# HTTP) with a campaign label before the isp label, an escaped quote in a
# name and an unlimited lane; and one that answers 404.
mkdir -p "$E2E_TMP/m2" "$E2E_TMP/m404"
cat >"$E2E_TMP/m2/metrics" <<'PROM'
# HELP ringmail_rate_limit Effective message rate limit.
# TYPE ringmail_rate_limit gauge
ringmail_rate_limit{campaign="1",isp="alpha"} 5
ringmail_rate_limit{isp="odd \"one\""} -1
ringmail_backoff_factor{isp="alpha"} 0.5
ringmail_backoff_active{isp="alpha"} 1
ringmail_connections_open{isp="alpha"} 3
ringmail_queue_depth{isp="odd \"one\""} 4
PROM
M2_PORT=$(free_port)
M404_PORT=$(free_port)
e2e_bg m2 "$E2E_PY" -m http.server --bind 127.0.0.1 --directory "$E2E_TMP/m2" "$M2_PORT"
wait_port 127.0.0.1 "$M2_PORT" 10 "$E2E_BG_PID"
e2e_bg m404 "$E2E_PY" -m http.server --bind 127.0.0.1 --directory "$E2E_TMP/m404" "$M404_PORT"
wait_port 127.0.0.1 "$M404_PORT" 10 "$E2E_BG_PID"
M2=$E2E_TMP/top.m2.json
"${TOP[@]}" --config "$CONF" --metrics "127.0.0.1:$METRICS_PORT" --metrics "127.0.0.1:$M2_PORT" \
    --metrics "127.0.0.1:$M404_PORT" --format json >"$M2"
scrape "$E2E_TMP/scrape2.txt"
check_eq "metrics, two senders: alpha's limits add up (the send's + 5)" \
    "$(awk -v k='ringmail_rate_limit{isp="alpha"}' 'index($0, k) == 1 { print $NF + 5; exit }' "$E2E_TMP/scrape2.txt")" \
    "$(jeval "$M2" "'%g' % next(x for x in d['isps'] if x['isp'] == 'alpha')['limit']")"
check_eq "metrics, two senders: the lowest backoff factor, paused when one is" "0.5 True" \
    "$(jeval "$M2" "(lambda m: '%g %s' % (m['backoff'], m['backoff_active']))(next(x for x in d['isps'] if x['isp'] == 'alpha')['metrics'])")"
check_eq "metrics: an escaped label value, unlimited, its queue" 'unlimited metrics 4' \
    "$(jeval "$M2" "next('%s %s %d' % (x['limit'], x['limit_from'], x['metrics']['queue']) for x in d['isps'] if x['isp'] == 'odd \"one\"')")"
check_eq "metrics: a 404 is a problem line" "metrics 127.0.0.1:$M404_PORT: HTTP 404" \
    "$(jeval "$M2" 'd["problems"][0]')"
check_grep "metrics: alpha's state says paused, backoff 0.50" 'paused, backoff 0\.50' \
    <("${TOP[@]}" --config "$CONF" --metrics "127.0.0.1:$M2_PORT" --once)
T1=$E2E_TMP/top.config.json
"${TOP[@]}" --config "$CONF" --format json >"$T1"
check_eq "limit: without --metrics alpha's limit is --config's msg_rate" "20 config" \
    "$(jeval "$T1" "'%g %s' % next((x['limit'], x['limit_from']) for x in d['isps'] if x['isp'] == 'alpha')")"
check_eq "limit: without --config there is none (null)" "None" \
    "$("${TOP[@]}" --format json | "$E2E_PY" -c 'import json, sys; d = json.load(sys.stdin)
print(next(x["limit"] for x in d["isps"] if x["isp"] == "alpha"))')"

# ============================================================ 2. the snapshot
kill -STOP "$SEND_PID"
sleep 0.5 # what the writer had committed is all there is now
J=$E2E_TMP/top.json
"${TOP[@]}" --config "$CONF" --format json >"$J"
echo "# top: $(head -c 3000 "$J" | tr -s ' \n' ' ')"
# upto: the campaign's sweep (fresh rows above it are queued and due, at or
# below it held by a node's claim: in flight)
upto() { psql_q "SELECT coalesce((SELECT upto FROM ringmail.sweep WHERE campaign_id = $C), 0)"; }
# expect ISP DOMAIN: the database's numbers, as top defines them
expect() {
    psql_q "SELECT
      (SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C AND address LIKE '%@$2'
        AND (next_attempt_at IS NOT NULL OR (state = 'queued' AND id > $(upto)))) || ' ' ||
      (SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C AND address LIKE '%@$2'
        AND (next_attempt_at <= now() OR (state = 'queued' AND next_attempt_at IS NULL
        AND id > $(upto)))) || ' ' ||
      (SELECT count(*) FROM ringmail.held h JOIN ringmail.recipient r ON r.id = h.recipient_id
        WHERE h.campaign_id = $C AND r.address LIKE '%@$2') || ' ' ||
      (SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C AND isp = '$1'
        AND outcome IN ('accepted', 'deferred', 'rejected', 'expired')
        AND floor(extract(epoch FROM at)) > floor(extract(epoch FROM now())) - 60) || ' ' ||
      (SELECT count(*) FROM ringmail.delivery WHERE campaign_id = $C AND isp = '$1'
        AND outcome IN ('deferred', 'expired')
        AND floor(extract(epoch FROM at)) > floor(extract(epoch FROM now())) - 300)"
}
got() {
    jeval "$J" "' '.join(str(x[k]) for x in d['isps'] if x['isp'] == '$1'
        for k in ('queued', 'due', 'in_flight', 'attempts_1m', 'deferred_5m'))"
}
EA=$(expect alpha a.test)
EB=$(expect beta b.test)
echo "# expected (queued due in_flight attempts_1m deferred_5m): alpha $EA, beta $EB"
check_eq "snapshot: alpha queued, due, in flight, attempts 1m, deferred 5m as psql counts" "$EA" "$(got alpha)"
check_eq "snapshot: beta queued, due, in flight, attempts 1m, deferred 5m as psql counts" "$EB" "$(got beta)"
check "snapshot: recipients are due, waiting for their retry and in flight at once" \
    "$E2E_PY" -c 'import json, sys; d = json.load(open(sys.argv[1]))
s = {k: sum(x[k] for x in d["isps"]) for k in ("due", "waiting", "in_flight")}
print(s); assert all(s.values())' "$J"
ER=$(psql_q "SELECT count(*) FILTER (WHERE outcome IN ('accepted', 'deferred', 'rejected', 'expired'))
    || ' ' || count(*) FILTER (WHERE outcome IN ('deferred', 'expired'))
    FROM ringmail.delivery WHERE campaign_id = $C AND isp = 'alpha'")
check_eq "snapshot: alpha's deferral % is deferred / attempts of 5 minutes" \
    "$(echo "$ER" | awk '{ printf "%.2f", 100 * $2 / $1 }')" \
    "$(jeval "$J" "'%.2f' % next(x['deferral_pct'] for x in d['isps'] if x['isp'] == 'alpha')")"
check_eq "snapshot: alpha's rate is its attempts of the last minute / 60" \
    "$(echo "$EA" | awk '{ printf "%.2f", $4 / 60 }')" \
    "$(jeval "$J" "'%.2f' % next(x['rate'] for x in d['isps'] if x['isp'] == 'alpha')")"
for i in alpha beta; do
    check_eq "snapshot: $i's last error is its newest deferral or rejection (code, enhanced, text)" \
        "$(psql_q "SELECT code || ' ' || enhanced || ' ' || reply FROM ringmail.delivery
            WHERE campaign_id = $C AND isp = '$i' AND outcome IN ('deferred', 'rejected',
            'expired', 'failed') ORDER BY id DESC LIMIT 1")" \
        "$(jeval "$J" "(lambda e: '%s %s %s' % (e['code'], e['enhanced'], e['text']))(
            next(x['last_error'] for x in d['isps'] if x['isp'] == '$i'))")"
done
check_eq "snapshot: totals: recipients and final as psql counts" \
    "$(psql_q "SELECT count(*) || ' ' || count(*) FILTER (WHERE state NOT IN ('queued',
        'claimed', 'deferred')) FROM ringmail.recipient WHERE campaign_id = $C")" \
    "$(jeval "$J" '"%d %d" % (d["recipients"]["total"], d["recipients"]["final"])')"
check_eq "snapshot: the live node" "topnode $C" \
    "$(jeval "$J" '" ".join("%s %s" % (n["name"], n["campaign_id"]) for n in d["nodes"])')"
# The oldest waiting recipient, as a moment: top's clock minus its age.
check_eq "snapshot: the oldest waiting alpha recipient, as psql finds it (s, +-2)" ok \
    "$(jeval "$J" "(lambda a, e: 'ok' if abs(a - e) <= 2 else '%s vs %s' % (a, e))(
        __import__('calendar').timegm(__import__('time').strptime(d['at'], '%Y-%m-%dT%H:%M:%SZ'))
        - next(x['oldest_s'] for x in d['isps'] if x['isp'] == 'alpha'),
        $(psql_q "SELECT floor(extract(epoch FROM min(coalesce(first_attempt_at, next_attempt_at))))
            FROM ringmail.recipient WHERE campaign_id = $C AND address LIKE '%@a.test'
            AND next_attempt_at IS NOT NULL
            AND (first_attempt_at IS NOT NULL OR next_attempt_at <= now())"))")"
echo "# top query: $(jget "$J" query_ms) ms"

# The text view: the same numbers in the alpha row.
TX=$E2E_TMP/top.txt
"${TOP[@]}" --config "$CONF" --once >"$TX"
sed 's/^/#   /' "$TX"
check_grep "text: the header names the campaign" "^campaign $C \"top\" " "$TX"
check_grep "text: the totals line" "^recipients $((2 * N))  final [0-9]+ \\([0-9.]+%\\)  rate [0-9.]+/s  ETA " "$TX"
check_grep "text: the live node" "^nodes: topnode \\(campaign $C, pid $SEND_PID on " "$TX"
check_grep "text: the column heads" "^ISP +QUEUED +DUE +INFLT +RATE/s +LIMIT +DEFER% +CONN +OLDEST +STATE +LAST ERROR" "$TX"
check_eq "text: alpha row: queued, due, in flight, limit" \
    "$(echo "$EA" | awk '{ print $1, $2, $3 }') 20" \
    "$(awk '$1 == "alpha" { print $2, $3, $4, $6 }' "$TX")"
check_grep "text: beta's last error is in its row (code, enhanced code once, text)" \
    "^beta .*Z $(psql_q "SELECT code || ' ' || reply FROM ringmail.delivery WHERE campaign_id = $C
        AND isp = 'beta' AND outcome IN ('deferred', 'rejected', 'expired', 'failed')
        ORDER BY id DESC LIMIT 1" | sed 's/[().]/\\&/g')\$" "$TX"

# Without --config: what was never tried has no ISP yet.
J0=$E2E_TMP/top.noconfig.json
"${TOP[@]}" --format json >"$J0"
check_eq "no config: recipients never tried are \"(not yet routed)\" (queued + in flight)" \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C
        AND first_attempt_at IS NULL AND state IN ('queued', 'claimed', 'deferred')")" \
    "$(jeval "$J0" "next((x['queued'] + x['in_flight'] for x in d['isps'] if x['isp'] == '(not yet routed)'), 0)")"
check_eq "no config: alpha keeps the recipients tried before (by their delivery rows)" \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C AND address LIKE '%@a.test'
        AND first_attempt_at IS NOT NULL AND state IN ('queued', 'claimed', 'deferred')")" \
    "$(jeval "$J0" "next((x['queued'] + x['in_flight'] for x in d['isps'] if x['isp'] == 'alpha'), 0)")"
check_eq "sort: --sort rate puts the faster ISP (alpha) first" alpha \
    "$("${TOP[@]}" --config "$CONF" --sort rate --format json | "$E2E_PY" -c 'import json, sys
print(json.load(sys.stdin)["isps"][0]["isp"])')"

# ============================================================ 3. suspend and hold
psql_q "INSERT INTO ringmail.isp_suspend (isp, until, reason, node) VALUES ('beta',
    now() + interval '30 minutes', '550 5.7.1 S3150 test suspension: blocked', 'topnode')" >/dev/null
psql_q "INSERT INTO ringmail.isp_hold (campaign_id, isp, reason) VALUES ($C, 'alpha',
    'test: 3 complaints over 1000 delivered in 24h (0.30% > 0.20%)')" >/dev/null
J3=$E2E_TMP/top.controls.json
"${TOP[@]}" --config "$CONF" --format json >"$J3"
check_eq "suspend: beta's suspension: reason and end (UTC) from ringmail.isp_suspend" \
    "$(psql_q "SELECT reason || ' ' || to_char(until AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
        FROM ringmail.isp_suspend WHERE isp = 'beta'")" \
    "$(jeval "$J3" "(lambda s: s['reason'] + ' ' + s['until'])(next(x['suspend'] for x in d['isps'] if x['isp'] == 'beta'))")"
LEFT=$(jeval "$J3" "next(x['suspend']['left_s'] for x in d['isps'] if x['isp'] == 'beta')")
check_ge "suspend: time left about 30 minutes (s, >= 1790)" 1790 "$LEFT"
check_le "suspend: time left about 30 minutes (s, <= 1800)" 1800 "$LEFT"
check_eq "hold: alpha's hold: reason and since from ringmail.isp_hold" \
    "$(psql_q "SELECT reason || ' ' || to_char(held_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
        FROM ringmail.isp_hold WHERE campaign_id = $C AND isp = 'alpha'")" \
    "$(jeval "$J3" "(lambda s: s['reason'] + ' ' + s['since'])(next(x['hold'] for x in d['isps'] if x['isp'] == 'alpha'))")"
T3=$E2E_TMP/top.controls.txt
COLUMNS=220 "${TOP[@]}" --config "$CONF" --once >"$T3"
sed 's/^/#   /' "$T3"
# when COL TABLE: a time as the view says it, "14:03:22Z" today (UTC), else "2026-12-07 14:03Z"
when() {
    psql_q "SELECT CASE WHEN ($1 AT TIME ZONE 'UTC')::date = (now() AT TIME ZONE 'UTC')::date
        THEN to_char($1 AT TIME ZONE 'UTC', 'HH24:MI:SS\"Z\"')
        ELSE to_char($1 AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI\"Z\"') END FROM ringmail.$2"
}
UNTIL=$(when until isp_suspend)
SINCE=$(when held_at isp_hold)
check_grep "suspend: the beta row says: suspended until $UNTIL (...left): REASON" \
    "^beta .* suspended until ${UNTIL} \\((29m[0-9]{2}s|30m00s) left\\): 550 5\\.7\\.1 S3150 test suspension: blocked" "$T3"
check_grep "hold: the alpha row says: held: REASON since $SINCE" \
    "^alpha .* held: test: 3 complaints over 1000 delivered in 24h \\(0\\.30% > 0\\.20%\\) since ${SINCE}" "$T3"
COLUMNS=140 "${TOP[@]}" --config "$CONF" --once >"$E2E_TMP/top.narrow.txt"
sed 's/^/#   /' "$E2E_TMP/top.narrow.txt"
check "narrow: at 140 columns no line is longer" \
    awk 'length($0) > 140 { exit 1 }' "$E2E_TMP/top.narrow.txt"
check_grep "narrow: the hold keeps its time, the reason is cut" \
    "^alpha .*held: test: 3 compl.*\\.\\.\\. since ${SINCE}" "$E2E_TMP/top.narrow.txt"
psql_q "DELETE FROM ringmail.isp_hold WHERE campaign_id = $C" >/dev/null
psql_q "DELETE FROM ringmail.isp_suspend" >/dev/null
kill -CONT "$SEND_PID"

# ============================================================ 4. on a terminal
TM=(tmux -S "$E2E_TMP/tmux.sock" -f /dev/null) # a server of its own, its socket in the temp dir
e2e_cleanup "${TM[*]} kill-server"
# term NAME ARGS...: top in a 160x40 tmux pane; the terminal's settings
# before and after it (stty -g), and its exit status, in $E2E_TMP/NAME.*
term() {
    local name=$1
    shift
    "${TM[@]}" new-session -d -s "$name" -x 160 -y 40 \
        "stty -g >'$E2E_TMP/$name.before'; $(printf '%q ' "$@"); echo \$? >'$E2E_TMP/$name.rc';
         stty -g >'$E2E_TMP/$name.after'; sleep 600"
}
pane() { "${TM[@]}" capture-pane -p -t "$1"; }
shows_row() { pane tty1 | grep -q '^alpha '; }
rc_file() { [ -s "$E2E_TMP/$1.rc" ] && [ -s "$E2E_TMP/$1.after" ]; }
rc1() { rc_file tty1; }
rc2() { rc_file tty2; }
rc3() { rc_file tty3; }
term tty1 "${TOP[@]}" --config "$CONF" --metrics "127.0.0.1:$METRICS_PORT" --interval 500ms
check "terminal: an ISP row appears" wait_until shows_row 10
pane tty1 >"$E2E_TMP/tty1.screen1"
sed 's/^/#   /' "$E2E_TMP/tty1.screen1" | head -12
check_grep "terminal: the header line (clock, interval, q quits)" \
    "^ringmail top  [0-9-]+T[0-9:]+Z  every 500ms( \\([0-9.]+s: the database's pace\\))?  db [0-9.]+ ms  \\(q quits\\)" "$E2E_TMP/tty1.screen1"
check_grep "terminal: the campaign line" "^campaign $C \"top\" " "$E2E_TMP/tty1.screen1"
check_grep "terminal: the column heads" "^ISP +QUEUED +DUE" "$E2E_TMP/tty1.screen1"
grep -v -E '^(ringmail top|campaign|recipients|nodes:|ISP |alpha |beta |$)' "$E2E_TMP/tty1.screen1" \
    >"$E2E_TMP/tty1.other"
check_no_grep "terminal: every line fits the pane (none wrapped onto the next)" . "$E2E_TMP/tty1.other"
sleep 1.2
pane tty1 >"$E2E_TMP/tty1.screen2"
check "terminal: redrawn in place (the clock moved)" \
    test "$(head -1 "$E2E_TMP/tty1.screen1")" != "$(head -1 "$E2E_TMP/tty1.screen2")"
check_eq "terminal: one header line after redraws (drawn over, not scrolled)" 1 \
    "$(grep -c '^ringmail top' "$E2E_TMP/tty1.screen2")"
"${TM[@]}" send-keys -t tty1 q
check "terminal: q quits" wait_until rc1 3
check_eq "terminal: q exits 0" 0 "$(cat "$E2E_TMP/tty1.rc" 2>/dev/null)"
check_eq "terminal: the settings are back after q (stty -g before = after)" \
    "$(cat "$E2E_TMP/tty1.before")" "$(cat "$E2E_TMP/tty1.after" 2>/dev/null)"
check "terminal: the main screen is back after q (the view is gone)" \
    sh -c "! ${TM[*]} capture-pane -p -t tty1 | grep -q QUEUED"

# The live view reads a delivery row settled (2 minutes old) once and keeps
# it; its rows must say what a fresh snapshot says, after the first read and
# after new rows arrive. A campaign of delivery rows written here: settled
# ones (200 s old, the newest error of xisp among them), fresh ones (30 s),
# ones before the deferral window (400 s: yisp's last error).
C2=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
    VALUES ('kept', 'news@sender.test', 'Hello', 'Hello.') RETURNING id")
psql_q "INSERT INTO ringmail.recipient (campaign_id, address, state, attempts, first_attempt_at,
    next_attempt_at) SELECT $C2, 'k' || g || '@x.test', 'sent', 1, now() - interval '400 s', NULL
    FROM generate_series(1, 20) g" >/dev/null
deliveries() { # ISP N OUTCOME AGE_S REPLY
    psql_q "INSERT INTO ringmail.delivery (campaign_id, recipient_id, attempt, outcome, final, at,
        isp, code, enhanced, reply) SELECT $C2, (SELECT min(id) FROM ringmail.recipient
        WHERE campaign_id = $C2), 1, '$3', '$3' <> 'deferred', now() - $4 * interval '1 s', '$1',
        CASE '$3' WHEN 'accepted' THEN 250 WHEN 'deferred' THEN 451 ELSE 550 END,
        CASE '$3' WHEN 'accepted' THEN '2.0.0' WHEN 'deferred' THEN '4.3.0' ELSE '5.1.1' END,
        '$5' FROM generate_series(1, $2)" >/dev/null
}
deliveries yisp 3 rejected 400 "y old error"
deliveries xisp 2 deferred 400 "x old error"
deliveries xisp 30 accepted 200 ok
deliveries xisp 10 deferred 200 "x settled error"
deliveries xisp 15 accepted 30 ok
deliveries yisp 10 accepted 30 ok
deliveries xisp 5 accepted 30 ok
TOP2=("$RM" top --db "$PG_URL" --campaign "$C2")
# rows NAME: the ISP rows of a screen capture or a --once at 160 columns
rows() { grep -E '^(xisp|yisp) ' "$1"; }
term tty4 "${TOP2[@]}" --interval 300ms
shows4() { pane tty4 | grep -q '^xisp '; }
check "kept: the view appears" wait_until shows4 10
sleep 1.2 # a few refreshes after the first (which kept the settled rows)
pane tty4 >"$E2E_TMP/tty4.screen1"
COLUMNS=160 "${TOP2[@]}" --once >"$E2E_TMP/kept.once1"
sed 's/^/#   /' "$E2E_TMP/kept.once1"
check_eq "kept: the live rows after kept reads = a fresh snapshot's"     "$(rows "$E2E_TMP/kept.once1")" "$(rows "$E2E_TMP/tty4.screen1")"
check_grep "kept: xisp: 10 deferred of 60 attempts in 5 minutes; 20 in the last minute"     "^xisp .* 0\.3 +- +16\.7% .* 451 4\.3\.0 x settled error" "$E2E_TMP/tty4.screen1"
check_grep "kept: yisp's last error is older than the windows" "^yisp .* 550 5\.1\.1 y old error"     "$E2E_TMP/tty4.screen1"
deliveries xisp 6 deferred 0 "x fresh error"
sleep 1
pane tty4 >"$E2E_TMP/tty4.screen2"
COLUMNS=160 "${TOP2[@]}" --once >"$E2E_TMP/kept.once2"
check_eq "kept: new rows are counted on top of the kept ones (= a fresh snapshot)"     "$(rows "$E2E_TMP/kept.once2")" "$(rows "$E2E_TMP/tty4.screen2")"
check_grep "kept: xisp: 16 deferred of 66 attempts; the newest error"     "^xisp .* 0\.4 +- +24\.2% .* 451 4\.3\.0 x fresh error" "$E2E_TMP/tty4.screen2"
"${TM[@]}" send-keys -t tty4 q
# A reply text is the server's: escape sequences in it must not reach the terminal.
psql_q "INSERT INTO ringmail.delivery (campaign_id, recipient_id, attempt, outcome, final, isp,
    code, enhanced, reply) VALUES ($C2, 0, 1, 'deferred', false, 'zisp', 451, '4.3.0',
    E'4.3.0 evil \\x1b]0;pwned\\x07\\x1b[2J text \\xc2\\x9b1m end')" >/dev/null
"${TOP2[@]}" --once >"$E2E_TMP/evil.txt"
check_grep "text: control characters of a reply are shown as ?" \
    '^zisp .*451 4\.3\.0 evil \?\]0;pwned\?\?\[2J text \?1m end$' "$E2E_TMP/evil.txt"
check_no_grep "text: no escape byte reaches the output" $'\x1b' "$E2E_TMP/evil.txt"

term tty2 "${TOP[@]}" --interval 500ms
shows2() { pane tty2 | grep -q '^ISP '; }
check "terminal (Ctrl-C): the view appears" wait_until shows2 10
"${TM[@]}" send-keys -t tty2 C-c
check "terminal: Ctrl-C quits" wait_until rc2 3
check_eq "terminal: Ctrl-C exits 0" 0 "$(cat "$E2E_TMP/tty2.rc" 2>/dev/null)"
check_eq "terminal: the settings are back after Ctrl-C" \
    "$(cat "$E2E_TMP/tty2.before")" "$(cat "$E2E_TMP/tty2.after" 2>/dev/null)"

term tty3 "${TOP[@]}" --interval 500ms
shows3() { pane tty3 | grep -q '^ISP '; }
check "terminal (SIGTERM): the view appears" wait_until shows3 10
SHELL_PID=$("${TM[@]}" display-message -p -t tty3 '#{pane_pid}')
TOP_PID=$(ps -o pid= --ppid "$SHELL_PID" | head -1 | tr -d ' ')
kill -TERM "$TOP_PID"
check "terminal: SIGTERM ends it" wait_until rc3 3
check_eq "terminal: SIGTERM: killed by the signal, as the shell sees it (143)" 143 \
    "$(cat "$E2E_TMP/tty3.rc" 2>/dev/null)"
check_eq "terminal: the settings are back after SIGTERM" \
    "$(cat "$E2E_TMP/tty3.before")" "$(cat "$E2E_TMP/tty3.after" 2>/dev/null)"

# ============================================================ 5. errors, one snapshot
t0=$(now_ms)
"${TOP[@]}" | cat >"$E2E_TMP/top.pipe.txt"
check_le "pipe: stdout not a terminal: one snapshot, at once (ms)" 3000 $(($(now_ms) - t0))
check_eq "pipe: one header" 1 "$(grep -c '^ringmail top' "$E2E_TMP/top.pipe.txt")"
err_case() { # NAME EXPECTED_RC ERE ARGS...
    local name=$1 want=$2 ere=$3
    shift 3
    "$RM" top "$@" >"$E2E_TMP/err.out" 2>"$E2E_TMP/err.txt" </dev/null
    local rc=$?
    check_eq "error: $name: exit $want" "$want" "$rc"
    check_grep "error: $name: says so" "$ere" "$E2E_TMP/err.txt"
}
NOPG="host=127.0.0.1 port=$(free_port) user=postgres dbname=postgres connect_timeout=3"
err_case "database unreachable" 1 "^ringmail top: cannot connect to PostgreSQL: .*(refused|Connection)" \
    --db "$NOPG" --once
psql_q "CREATE DATABASE bare" >/dev/null
err_case "schema missing" 1 \
    '^ringmail top: the database has no ringmail schema \(or it cannot be read\): run `ringmail db migrate --db URL` first$' \
    --db "${PG_URL/dbname=postgres/dbname=bare}" --once
err_case "unknown campaign" 1 '^ringmail top: campaign 987654 does not exist \(ringmail campaign list\)$' \
    --db "$PG_URL" --campaign 987654 --once
err_case "bad --interval (0s)" 2 "^ringmail top: --interval: '0s' is outside 200ms to 1h$" \
    --db "$PG_URL" --interval 0s
err_case "bad --interval (words)" 2 "^ringmail top: --interval: .* \\(e\\.g\\. 2s, 500ms, 1m\\)$" \
    --db "$PG_URL" --interval soon
err_case "bad --sort" 2 "^ringmail top: --sort is queued, rate or deferrals, not 'speed'$" \
    --db "$PG_URL" --sort speed
err_case "no --db" 2 "^ringmail top: --db URL is required$" --once
err_case "abbreviated option" 2 "unknown option '--camp'" --db "$PG_URL" --camp 1

# Without --campaign: the campaigns a live node works on.
check_eq "no --campaign: the campaign the live node sends" "$C" \
    "$("$RM" top --db "$PG_URL" --format json | "$E2E_PY" -c 'import json, sys
print(" ".join(str(c["id"]) for c in json.load(sys.stdin)["campaigns"]))')"

kill -TERM "$SEND_PID" 2>/dev/null
wait "$SEND_PID" 2>/dev/null
check_no_grep "no sanitizer report from send" Sanitizer "$E2E_TMP/send.err"
# Stopped with recipients left, the campaign is still running (no node
# sends it now): top still shows it. Cancelled, it is not shown any more.
check_eq "after the stop: the campaign is still running, so top still shows it" "$C" \
    "$("$RM" top --db "$PG_URL" --format json | "$E2E_PY" -c 'import json, sys
print(" ".join(str(c["id"]) for c in json.load(sys.stdin)["campaigns"]))')"
"$RM" campaign cancel --db "$PG_URL" "$C" >/dev/null 2>&1
check_grep "after a cancel, no campaign is running: the header says what to do" \
    '^no campaign running, paused or worked on by a live node \(--campaign ID shows one\)$' \
    <("$RM" top --db "$PG_URL" --once)

# The database goes away under a running view: a line in the view, no exit.
term tty5 "${TOP[@]}" --interval 300ms
shows5() { pane tty5 | grep -q '^ISP '; }
check "database lost: the view appears" wait_until shows5 10
stop_postgres "$E2E_TMP/pg"
says_lost() { pane tty5 | grep -q '^database (retrying): '; }
check "database lost: the view says so (database (retrying): ...) and keeps running" \
    wait_until says_lost 10
pane tty5 | grep '^database ' | head -1 | sed 's/^/#   /'
rc5() { rc_file tty5; }
"${TM[@]}" send-keys -t tty5 q
check "database lost: q still quits" wait_until rc5 5
check_eq "database lost: exit 0, terminal settings back" "0 same" \
    "$(cat "$E2E_TMP/tty5.rc" 2>/dev/null) $(cmp -s "$E2E_TMP/tty5.before" "$E2E_TMP/tty5.after" && echo same)"
echo "# test_top.sh: $(($(now_ms) - T_START)) ms"
e2e_finish
