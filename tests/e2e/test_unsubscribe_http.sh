#!/usr/bin/env bash
# One-click unsubscribe over HTTP (RFC 8058): `ringmail inbound --http`.
# A campaign goes out with [feedback] unsubscribe_url = http://127.0.0.1:PORT/u
# to python3-aiosmtpd, which keeps each message; the URLs are taken from the
# List-Unsubscribe headers of the messages really sent.
#   1. GET /u/TOKEN: the page (a form that POSTs List-Unsubscribe=One-Click,
#      one button), its headers; HEAD too; the database is unchanged
#   2. POST List-Unsubscribe=One-Click: 200, and right after curl returns
#      the event (unsubscribe, http), the recipient's feedback and the
#      suppression are committed; multipart/form-data works as well
#   3. a forged token (one character changed), a truncated one, garbage, a
#      bounce token: 404 "Not Found", no detail; nothing written
#   4. another body 400, PUT 405 (with Allow), an unknown path 404, a body
#      over 4 KB 413 (chunked: closed), the bare text (text/plain) accepted,
#      /healthz 200 "ok"
#   5. PostgreSQL stopped: POST 503 "try again later", /healthz 503; after
#      a restart the same POST 200 and the rows are there
#   6. headless Chromium (over the DevTools protocol, tests/e2e/cdp.py)
#      opens the page: no console error, screenshot kept; clicks the button:
#      the confirmation page, screenshot kept, the rows are there
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
e2e_require curl chromium psql || { e2e_finish; exit 1; }

OUT=${E2E_OUT:-$E2E_DIR/out}/unsubscribe_http
rm -rf "$OUT"
mkdir -p "$OUT"

AI_PORT=$(free_port)
HTTP_PORT=$(free_port)
BASE=http://127.0.0.1:$HTTP_PORT
EML=$E2E_TMP/eml
start_aiosmtpd "$AI_PORT" "$CERTS/server.pem" "$CERTS/server.key" --starttls-optional \
    --count-file "$E2E_TMP/ai.jsonl" --save-dir "$EML" ||
    { check "aiosmtpd starts" false; e2e_finish; exit 1; }

SECRET=$E2E_TMP/feedback.secret
head -c 48 /dev/urandom >"$SECRET"
chmod 600 "$SECRET"
CONF=$E2E_TMP/fb.conf
cat >"$CONF" <<CONF
[global]
tls = none
retry = 300ms
max_age = 20s
[isp x]
domains = x.test
max_connections = 2
[route x.test]
server = 127.0.0.1:$AI_PORT
[feedback]
return_path = bounces.sender.test
secret_file = $SECRET
unsubscribe_url = $BASE/u
CONF

start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null
C=$(new_campaign c 6 x.test)
timeout 60 "$RM" send --db "$PG_URL" --campaign "$C" --config "$CONF" --node n1 \
    --journal "$E2E_TMP/n1.journal" --json >"$E2E_TMP/send.json" 2>"$E2E_TMP/send.err"
check_eq "the campaign is sent" 6 "$(count_state "$C" sent)"

# URLS: "ADDRESS URL MAIL_FROM" per message, from the List-Unsubscribe header.
"$E2E_PY" - "$E2E_TMP/ai.jsonl" "$EML" >"$E2E_TMP/urls" <<'PY'
import json, os, re, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    body = open(os.path.join(sys.argv[2], "%d.eml" % r["n"]), "rb").read().decode()
    m = re.search(r"\nList-Unsubscribe: <(http://[^>]+)>", body)
    print(r["rcpts"][0], m.group(1) if m else "-", r["from"])
PY
url_of() { awk -v a="$1" '$1 == a {print $2}' "$E2E_TMP/urls"; }
rid_of() { psql_q "SELECT id FROM ringmail.recipient WHERE campaign_id = $C AND address = '$1'"; }
U1=$(url_of c1@x.test)
check_grep "the sent message's List-Unsubscribe is $BASE/u/TOKEN" \
    "^c1@x\.test $BASE/u/[a-z2-7]{23,52} b-" "$E2E_TMP/urls"

e2e_bg inbound "$RM" inbound --http "127.0.0.1:$HTTP_PORT" --db "$PG_URL" --config "$CONF"
INBOUND_PID=$E2E_BG_PID
INBOUND_LOG=$E2E_TMP/inbound.log
wait_port 127.0.0.1 "$HTTP_PORT" 10 "$INBOUND_PID" ||
    { check "ringmail inbound --http listens" false; cat "$INBOUND_LOG" >&2; e2e_finish; exit 1; }

# refused NAME HTTP_ARG TEXT: a second inbound exits 1 and says TEXT.
refused() {
    timeout 20 "$RM" inbound --http "$2" --db "$PG_URL" --config "$CONF" \
        >/dev/null 2>"$E2E_TMP/refused.err"
    check_eq "--http $1: exit 1" 1 "$?"
    check_grep "--http $1: says why" "$3" "$E2E_TMP/refused.err"
}
refused "on a port in use" "127.0.0.1:$HTTP_PORT" \
    "^ringmail inbound: --http 127\.0\.0\.1:$HTTP_PORT: cannot bind: Address already in use$"
refused "with a bad port" "127.0.0.1:x" "^ringmail inbound: --http 127\.0\.0\.1:x: bad port in '127\.0\.0\.1:x'$"
refused "without a port" "127.0.0.1" \
    "^ringmail inbound: --http 127\.0\.0\.1: bad address '127\.0\.0\.1' \(want host:port\)$"

# req NAME CURL_ARGS...: the status code; headers in $E2E_TMP/NAME.h, body in NAME.b.
req() {
    local name=$1
    shift
    curl -sS -o "$E2E_TMP/$name.b" -D "$E2E_TMP/$name.h" -w '%{http_code}' --max-time 20 "$@"
}
# rows ADDRESS: "events feedback suppression" for a recipient of the campaign.
rows() {
    psql_q "SELECT (SELECT count(*) FROM ringmail.feedback_event e JOIN ringmail.recipient r
                      ON r.id = e.recipient_id
                    WHERE r.address = '$1' AND e.kind = 'unsubscribe' AND e.source = 'http'
                      AND e.campaign_id = $C)
           || ' ' || coalesce((SELECT feedback FROM ringmail.recipient
                               WHERE campaign_id = $C AND address = '$1'), '-')
           || ' ' || coalesce((SELECT kind FROM ringmail.suppression WHERE address = '$1'), '-')"
}
# written: every feedback_event and suppression row, and recipients with feedback.
written() {
    psql_q "SELECT (SELECT count(*) FROM ringmail.feedback_event) || ' '
                || (SELECT count(*) FROM ringmail.suppression) || ' '
                || (SELECT count(*) FROM ringmail.recipient WHERE feedback IS NOT NULL)"
}
ONE_CLICK=(-X POST -H 'Content-Type: application/x-www-form-urlencoded'
    --data-raw 'List-Unsubscribe=One-Click')

# ============================================================ 1. GET: the page, nothing written
PATH1=${U1#"$BASE"}
check_eq "GET /u/TOKEN: 200" 200 "$(req get "$U1")"
check_grep "GET: a form that POSTs to its own path" \
    "<form method=\"post\" action=\"$PATH1\">" "$E2E_TMP/get.b"
check_grep "GET: the hidden List-Unsubscribe=One-Click field" \
    '<input type="hidden" name="List-Unsubscribe" value="One-Click">' "$E2E_TMP/get.b"
check_eq "GET: one button, Unsubscribe" "1 <button type=\"submit\">Unsubscribe</button>" \
    "$(grep -c '<button' "$E2E_TMP/get.b") $(grep -o '<button[^<]*</button>' "$E2E_TMP/get.b")"
check_grep "GET: HTML5" '^<!DOCTYPE html>$' "$E2E_TMP/get.b"
check_no_grep "GET: no script, no external resource" '<script|src=|href=|https?://' "$E2E_TMP/get.b"
check_grep "GET: Content-Type text/html" '^Content-Type: text/html; charset=utf-8' "$E2E_TMP/get.h"
check_grep "GET: Content-Security-Policy" \
    "^Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; form-action 'self'" \
    "$E2E_TMP/get.h"
check_grep "GET: Cache-Control: no-store" '^Cache-Control: no-store' "$E2E_TMP/get.h"
check_grep "GET: X-Content-Type-Options: nosniff" '^X-Content-Type-Options: nosniff' "$E2E_TMP/get.h"
check_grep "GET: Referrer-Policy: no-referrer" '^Referrer-Policy: no-referrer' "$E2E_TMP/get.h"
check_eq "HEAD /u/TOKEN: 200, no body" "200 0" \
    "$(curl -sS -I -o /dev/null -w '%{http_code} %{size_download}' --max-time 20 "$U1")"
check_eq "GET and HEAD wrote nothing (events, suppressions, recipients with feedback)" \
    "0 0 0" "$(written)"

# ============================================================ 2. POST: committed before the 200
check_eq "POST List-Unsubscribe=One-Click: 200" 200 "$(req post "${ONE_CLICK[@]}" "$U1")"
check_eq "POST: the event (unsubscribe, http), feedback and suppression are committed" \
    "1 unsubscribe unsubscribe" "$(rows c1@x.test)"
check_eq "POST: the event records the client" "127.0.0.1" \
    "$(psql_q "SELECT DISTINCT client FROM ringmail.feedback_event")"
check_grep "POST: the confirmation page" '<h1>You are unsubscribed</h1>' "$E2E_TMP/post.b"
check_grep "POST: Cache-Control: no-store" '^Cache-Control: no-store' "$E2E_TMP/post.h"
check_eq "POST again: 200 (already unsubscribed)" 200 "$(req post2 "${ONE_CLICK[@]}" "$U1")"
check_eq "POST again: one more event, still suppressed once" \
    "2 unsubscribe unsubscribe" "$(rows c1@x.test)"
check_eq "POST multipart/form-data (RFC 8058 allows it): 200" 200 \
    "$(req multi -F 'List-Unsubscribe=One-Click' "$(url_of c2@x.test)")"
check_eq "multipart: committed" "1 unsubscribe unsubscribe" "$(rows c2@x.test)"
check_grep "the log names the recipient" \
    "^ringmail inbound: http: 127\.0\.0\.1 unsubscribed recipient $(rid_of c1@x.test) of campaign $C$" \
    "$INBOUND_LOG"

# ============================================================ 3. bad tokens: 404, no detail
BEFORE=$(written)
U3=$(url_of c3@x.test)
LAST=${U3: -1}
FORGED=${U3%?}$([ "$LAST" = a ] && echo b || echo a)
# The return path's b-TOKEN of the same recipient: a good MAC of another
# kind; and its bare TOKEN, which as an unsubscribe token is forged.
BOUNCE=$BASE/u/$(awk -v a=c3@x.test '$1 == a {print $3}' "$E2E_TMP/urls" | sed 's/@.*//')
n=0
for u in "$FORGED" "${U3%?????}" "$BASE/u/hello-world" "$BASE/u/" "$BASE/u/${U3##*/}/x" \
    "$BOUNCE" "$BASE/u/${BOUNCE#"$BASE/u/b-"}"; do
    n=$((n + 1))
    check_eq "bad token $n (${u#"$BASE"}): GET 404" 404 "$(req bad$n.g "$u")"
    check_eq "bad token $n: POST 404" 404 "$(req bad$n.p "${ONE_CLICK[@]}" "$u")"
    check_eq "bad token $n: GET and POST say only Not Found" "Not Found|Not Found" \
        "$(cat "$E2E_TMP/bad$n.g.b")|$(cat "$E2E_TMP/bad$n.p.b")"
done
check_eq "bad tokens wrote nothing" "$BEFORE" "$(written)"
check_grep "the log says why (and only the log)" \
    "^ringmail inbound: http: 127\.0\.0\.1 POST: bad token: forged token \(MAC mismatch\)$" \
    "$INBOUND_LOG"
check_grep "the log: a bounce token is not an unsubscribe token" \
    "^ringmail inbound: http: 127\.0\.0\.1 POST: bad token: not an unsubscribe token$" \
    "$INBOUND_LOG"

# ============================================================ 4. bodies, methods, paths, health
check_eq "POST with another body: 400" 400 \
    "$(req wrong -X POST --data-raw 'List-Unsubscribe=Yes' "$U3")"
check_eq "400 says what is expected" "expected List-Unsubscribe=One-Click" "$(cat "$E2E_TMP/wrong.b")"
check_eq "POST with no body: 400" 400 "$(req empty -X POST -H 'Content-Length: 0' "$U3")"
check_eq "PUT /u/TOKEN: 405" 405 "$(req put -X PUT --data-raw 'List-Unsubscribe=One-Click' "$U3")"
check_grep "405 says what is allowed" '^Allow: GET, HEAD, POST' "$E2E_TMP/put.h"
check_eq "DELETE /u/TOKEN: 405" 405 "$(req del -X DELETE "$U3")"
check_eq "a body over 4 KB: 413" 413 \
    "$(req big -X POST --data-raw "List-Unsubscribe=One-Click&x=$(head -c 5000 /dev/zero | tr '\0' x)" "$U3")"
head -c 5000 /dev/zero | tr '\0' x >"$E2E_TMP/big.txt"
check_eq "a chunked body over 4 KB: the connection is closed" 000 \
    "$(req chunked -X POST -H 'Transfer-Encoding: chunked' --data-binary @"$E2E_TMP/big.txt" "$U3" \
        2>/dev/null)"
check_grep "the log says why the connection was closed" \
    "^ringmail inbound: http: 127\.0\.0\.1 POST: a body over 4096 bytes or not a form: connection closed$" \
    "$INBOUND_LOG"
check_eq "those wrote nothing" "$BEFORE" "$(written)"
check_eq "POST the bare text List-Unsubscribe=One-Click (text/plain): 200" 200 \
    "$(req plain -H 'Content-Type: text/plain' --data-raw 'List-Unsubscribe=One-Click' \
        "$(url_of c6@x.test)")"
check_eq "text/plain: committed" "1 unsubscribe unsubscribe" "$(rows c6@x.test)"
BEFORE=$(written)
check_eq "GET /nowhere: 404" 404 "$(req nowhere "$BASE/nowhere")"
check_eq "GET /: 404" 404 "$(req root "$BASE/")"
check_eq "GET /healthz: 200" 200 "$(req health "$BASE/healthz")"
check_eq "/healthz says ok" "ok" "$(cat "$E2E_TMP/health.b")"
check_eq "POST /healthz: 405" 405 "$(req health.p -X POST "$BASE/healthz")"

# ============================================================ 5. PostgreSQL away: 503, nothing lost
stop_postgres "$PG_DIR"
check_eq "PostgreSQL stopped: POST 503" 503 "$(req down "${ONE_CLICK[@]}" "$U3")"
check_eq "503 says try again later" "try again later" "$(cat "$E2E_TMP/down.b")"
check_grep "503 has Retry-After" '^Retry-After: ' "$E2E_TMP/down.h"
check_eq "PostgreSQL stopped: /healthz 503" 503 "$(req health.down "$BASE/healthz")"
check_grep "the log says the database failed" \
    "^ringmail inbound: http: 127\.0\.0\.1 unsubscribe: database error, answered 503: " "$INBOUND_LOG"
_pg_as "'$(pg_bin)/pg_ctl' -D '$PG_DIR/data' -w -t 30 -l '$PG_DIR/pg.log' \
    -o \"-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1 -c fsync=off\" start" \
    >/dev/null 2>&1
check_eq "PostgreSQL back: /healthz 200" 200 "$(req health.up "$BASE/healthz")"
check_eq "PostgreSQL back: the same POST 200" 200 "$(req up "${ONE_CLICK[@]}" "$U3")"
check_eq "PostgreSQL back: committed, once" "1 unsubscribe unsubscribe" "$(rows c3@x.test)"

# ============================================================ 6. a real browser
# First that the browser check can fail: a forged token's 404 is an error
# Chromium reports.
timeout 60 "$E2E_PY" "$E2E_DIR/cdp.py" --no-click "$FORGED" "$E2E_TMP/cdp404" \
    >"$E2E_TMP/cdp404.json" 2>"$E2E_TMP/cdp404.err"
check_eq "chromium, forged token: Not Found, and the 404 is seen as an error" "404 Not Found 1" \
    "$(jeval "$E2E_TMP/cdp404.json" 'd["page"]["status"]') $(jeval "$E2E_TMP/cdp404.json" 'd["page"]["text"]') $(jeval "$E2E_TMP/cdp404.json" 'int(any("404" in e for e in d["errors"]))')"
U4=$(url_of c4@x.test)
timeout 60 "$E2E_PY" "$E2E_DIR/cdp.py" "$U4" "$OUT" >"$E2E_TMP/cdp.json" 2>"$E2E_TMP/cdp.err"
check_eq "chromium: the page was driven" 0 "$?"
[ -s "$E2E_TMP/cdp.err" ] && sed 's/^/# /' "$E2E_TMP/cdp.err"
cj() { jeval "$E2E_TMP/cdp.json" "$1"; }
check_eq "chromium: the page 200, titled Unsubscribe, one button, no script" \
    "200 Unsubscribe 1 0" \
    "$(cj 'd["page"]["status"]') $(cj 'd["page"]["title"]') $(cj 'd["page"]["buttons"]') $(cj 'd["page"]["scripts"]')"
check_eq "chromium: the form posts List-Unsubscribe=One-Click to the page's path" \
    "post ${U4#"$BASE"} List-Unsubscribe One-Click" \
    "$(cj 'd["page"]["form"]["method"]') $(cj 'd["page"]["form"]["action"]') $(cj 'd["page"]["form"]["hidden_name"]') $(cj 'd["page"]["form"]["hidden_value"]')"
check_eq "chromium: the button clicked, the confirmation page 200" "200 You are unsubscribed" \
    "$(cj 'd["after"]["status"]') $(cj 'd["after"]["h1"]')"
check_eq "chromium: no console error, exception or failed load" "[]" "$(cj 'd["errors"]')"
for f in 1-page.png 2-after-click.png; do
    check "chromium: screenshot $f kept (a PNG)" \
        sh -c "head -c 8 '$OUT/$f' | od -An -c | grep -q 'P   N   G'"
done
echo "# screenshots: $OUT/1-page.png $OUT/2-after-click.png"
check_eq "chromium: the click committed the unsubscribe" "1 unsubscribe unsubscribe" \
    "$(rows c4@x.test)"
check_eq "c5 (never clicked) is untouched" "0 - -" "$(rows c5@x.test)"

e2e_kill "$INBOUND_PID"
check_no_grep "inbound stopped without a sanitizer report (an ASan build)" \
    'AddressSanitizer|LeakSanitizer|runtime error' "$INBOUND_LOG"
check_eq "inbound's log: one line per event, each ringmail inbound: ..." 0 \
    "$(grep -vc '^ringmail inbound: ' "$INBOUND_LOG")"
check_no_grep "inbound's log: nothing from libmicrohttpd about its options" 'MHD_OPTION' "$INBOUND_LOG"
stop_aiosmtpd
e2e_finish
