#!/usr/bin/env bash
# tests/valgrind.sh BUILD: ringmail blast under valgrind memcheck against
# ringmail sink (STARTTLS, resumption, several threads): no invalid access,
# no definite or indirect leak. Prints "N passed, N failed".
set -u
BUILD=${1:-build-vg}
. "$(dirname "$0")/e2e/lib.sh"
e2e_tmpdir
make_certs "$E2E_TMP/certs"
PORT=$(free_port)
"$BUILD/ringmail" sink --listen 127.0.0.1:$PORT --tls-cert "$E2E_TMP/certs/server.pem" \
    --tls-key "$E2E_TMP/certs/server.key" --threads 1 --stats "$E2E_TMP/stats.json" \
    >"$E2E_TMP/sink.log" 2>&1 &
SINK=$!
e2e_cleanup "kill $SINK"
wait_port 127.0.0.1 "$PORT" 10
timeout 600 valgrind --error-exitcode=9 --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect "$BUILD/ringmail" blast --server localhost:$PORT \
    --count 300 --concurrency 6 --msgs-per-conn 25 --threads 2 --json \
    >"$E2E_TMP/blast.json" 2>"$E2E_TMP/valgrind.log"
rc=$?
tail -12 "$E2E_TMP/valgrind.log"
check_eq "valgrind: blast exits 0 with no memcheck error" 0 "$rc"
check "valgrind: no definite leak" grep -q "definitely lost: 0 bytes\|no leaks are possible" "$E2E_TMP/valgrind.log"
check "valgrind: all 300 accepted" grep -q '"accepted":300' "$E2E_TMP/blast.json"

# ringmail send: the pool's whole life under memcheck - routes, STARTTLS
# with resumption, rate limits with idle sessions, deferrals and retries,
# a dead exchanger, expiry, rejections, the suppression list, metrics.
cat >"$E2E_TMP/vg.conf" <<CONF
[global]
retry = 200ms, 200ms
max_age = 2s
tls = required
[isp vg]
domains = vg.test
max_connections = 3
max_msgs_per_conn = 20
msg_rate = 200/s
rule = 451 4.7.1 => backoff 0.5 100ms
[route vg.test]
server = 127.0.0.1:$PORT
[route dead.test]
server = 127.0.0.1:1
CONF
{ for i in $(seq 1 120); do echo "user$i@vg.test"; done
  echo tempfail@vg.test; echo permfail@vg.test; echo "not an address"; echo x@dead.test; } \
    >"$E2E_TMP/vg.rcpts"
MPORT=$(free_port)
timeout 600 valgrind --error-exitcode=9 --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect "$BUILD/ringmail" send \
    --recipients "$E2E_TMP/vg.rcpts" --config "$E2E_TMP/vg.conf" --json \
    --suppress "$E2E_TMP/vg.suppress" --records "$E2E_TMP/vg.records" \
    --metrics 127.0.0.1:$MPORT >"$E2E_TMP/send.json" 2>"$E2E_TMP/valgrind-send.log"
rc=$?
tail -12 "$E2E_TMP/valgrind-send.log"
check_eq "valgrind: send exits 0 with no memcheck error" 0 "$rc"
check "valgrind: send has no definite leak" \
    grep -q "definitely lost: 0 bytes\|no leaks are possible" "$E2E_TMP/valgrind-send.log"
check "valgrind: send accepted 120, rejected 1, failed 1 (invalid), expired 2" \
    grep -q '"accepted":120,"rejected":1,"failed":1,"expired":2' "$E2E_TMP/send.json"

# Shared-body transactions (several RCPTs, each its own outcome and retry)
# and IDN recipients (A-label RCPTs the pool allocates) under memcheck.
cat >"$E2E_TMP/vgb.conf" <<CONF
[global]
retry = 200ms
max_age = 1s
tls = required
[isp vg]
domains = vg.test, xn--bcher-kva.test
max_connections = 2
max_rcpts_per_msg = 10
[route vg.test]
server = 127.0.0.1:$PORT
[route xn--bcher-kva.test]
server = 127.0.0.1:$PORT
CONF
{ for i in $(seq 1 40); do echo "user$i@vg.test"; done
  echo tempfail@vg.test; echo permfail@vg.test; echo anna@bücher.test; echo jörg@BÜCHER.test; } \
    >"$E2E_TMP/vgb.rcpts"
printf 'From: <news@sender.test>\nTo: undisclosed-recipients:;\nSubject: vg\n\nbody\n' >"$E2E_TMP/vgb.eml"
timeout 600 valgrind --error-exitcode=9 --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect "$BUILD/ringmail" send \
    --recipients "$E2E_TMP/vgb.rcpts" --message "$E2E_TMP/vgb.eml" --config "$E2E_TMP/vgb.conf" \
    --json >"$E2E_TMP/sendb.json" 2>"$E2E_TMP/valgrind-sendb.log"
rc=$?
tail -12 "$E2E_TMP/valgrind-sendb.log"
check_eq "valgrind: send --message (batched RCPTs, IDN) exits 0 with no memcheck error" 0 "$rc"
check "valgrind: send --message has no definite leak" \
    grep -q "definitely lost: 0 bytes\|no leaks are possible" "$E2E_TMP/valgrind-sendb.log"
check "valgrind: send --message accepted 42, rejected 1, expired 1" \
    grep -q '"accepted":42,"rejected":1,"failed":0,"expired":1' "$E2E_TMP/sendb.json"

# A campaign from PostgreSQL under memcheck: the loader thread, rendering,
# DKIM, results, retries and the suppression list.
if start_postgres "$E2E_TMP/pg"; then
    "$BUILD/ringmail" db migrate --db "$PG_URL" >/dev/null
    openssl genpkey -algorithm ed25519 -out "$E2E_TMP/dkim.pem" 2>/dev/null
    KEY=$(cat "$E2E_TMP/dkim.pem")
    CID=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body, html_body,
        dkim_domain, dkim_selector, dkim_key) VALUES ('vg', 'news@sender.test',
        'Hi {{first_name|there}}', 'Text {{first_name}}', '<p>HTML {{first_name}}</p>',
        'sender.test', 'vg', '$KEY') RETURNING id")
    psql_q "INSERT INTO ringmail.recipient (campaign_id, address, vars)
        SELECT $CID, 'user' || g || '@vg.test', jsonb_build_object('first_name', 'Ann ' || g)
        FROM generate_series(1, 150) g" >/dev/null
    psql_q "INSERT INTO ringmail.recipient (campaign_id, address) VALUES
        ($CID, 'tempfail@vg.test'), ($CID, 'permfail@vg.test')" >/dev/null
    timeout 600 valgrind --error-exitcode=9 --leak-check=full \
        --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
        "$BUILD/ringmail" send --db "$PG_URL" --campaign "$CID" --config "$E2E_TMP/vg.conf" \
        --node vg --journal "$E2E_TMP/vg.journal" --json \
        >"$E2E_TMP/campaign.json" 2>"$E2E_TMP/valgrind-campaign.log"
    rc=$?
    tail -12 "$E2E_TMP/valgrind-campaign.log"
    check_eq "valgrind: campaign send exits 0 with no memcheck error" 0 "$rc"
    check "valgrind: campaign send has no definite leak" \
        grep -q "definitely lost: 0 bytes\|no leaks are possible" "$E2E_TMP/valgrind-campaign.log"
    check_eq "valgrind: campaign: 150 sent, 1 bounced, 1 expired (tempfail past max_age)" "150 1 1" \
        "$(psql_q "SELECT count(*) FILTER (WHERE state = 'sent') || ' ' || count(*) FILTER (WHERE state = 'bounced') || ' ' || count(*) FILTER (WHERE state = 'expired') FROM ringmail.recipient WHERE campaign_id = $CID")"
    # The feedback store under memcheck: GMime parsing of a DSN, an ARF
    # report and garbage, token checks, one transaction.
    head -c 40 /dev/urandom >"$E2E_TMP/fb.secret"
    chmod 600 "$E2E_TMP/fb.secret"
    printf '[feedback]\nreturn_path = bounces.sender.test\nsecret_file = %s\n' \
        "$E2E_TMP/fb.secret" >"$E2E_TMP/fb.conf"
    RID=$(psql_q "SELECT id FROM ringmail.recipient WHERE address = 'user1@vg.test'")
    FMAIL="$(dirname "$0")/e2e/feedback_mail.py"
    python3 "$FMAIL" dsn --secret "$E2E_TMP/fb.secret" --campaign "$CID" --recipient "$RID" \
        --address user1@vg.test >"$E2E_TMP/fb1.eml"
    python3 "$FMAIL" arf --secret "$E2E_TMP/fb.secret" --campaign "$CID" --recipient "$RID" \
        --address user1@vg.test >"$E2E_TMP/fb2.eml"
    head -c 200000 /dev/urandom >"$E2E_TMP/fb3.eml"
    timeout 600 valgrind --error-exitcode=9 --leak-check=full \
        --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
        "$BUILD/ringmail" feedback ingest --db "$PG_URL" --config "$E2E_TMP/fb.conf" \
        "$E2E_TMP/fb1.eml" "$E2E_TMP/fb2.eml" "$E2E_TMP/fb3.eml" \
        >"$E2E_TMP/ingest.out" 2>"$E2E_TMP/valgrind-ingest.log"
    rc=$?
    tail -12 "$E2E_TMP/valgrind-ingest.log"
    check_eq "valgrind: feedback ingest exits 0 with no memcheck error" 0 "$rc"
    check "valgrind: feedback ingest has no definite leak" \
        grep -q "definitely lost: 0 bytes\|no leaks are possible" "$E2E_TMP/valgrind-ingest.log"
    check "valgrind: feedback ingest recorded a bounce, a complaint and an unmatched message" \
        grep -q '1 bounce, .* 1 complaint, .* 1 unmatched' "$E2E_TMP/ingest.out"
    # ringmail inbound under memcheck: the ring, STARTTLS, the writer
    # thread's commits, a relay refusal, an open session at SIGTERM.
    IPORT=$(free_port)
    valgrind --error-exitcode=9 --leak-check=full --show-leak-kinds=definite,indirect \
        --errors-for-leak-kinds=definite,indirect "$BUILD/ringmail" inbound \
        --listen "127.0.0.1:$IPORT" --db "$PG_URL" --config "$E2E_TMP/fb.conf" --verbose \
        --tls-cert "$E2E_TMP/certs/server.pem" --tls-key "$E2E_TMP/certs/server.key" \
        >/dev/null 2>"$E2E_TMP/valgrind-inbound.log" &
    INBOUND=$!
    wait_port 127.0.0.1 "$IPORT" 60 "$INBOUND"
    for f in fb1 fb2 fb3; do
        swaks --server "127.0.0.1:$IPORT" --from '<>' --to "b-x@bounces.sender.test" \
            --data "@$E2E_TMP/$f.eml" >/dev/null 2>&1
    done
    swaks --server "127.0.0.1:$IPORT" --tls --from '<>' --to "b-x@bounces.sender.test" \
        --data "@$E2E_TMP/fb1.eml" >/dev/null 2>&1
    swaks --server "127.0.0.1:$IPORT" --to x@other.test >/dev/null 2>&1
    exec 7<>"/dev/tcp/127.0.0.1/$IPORT"
    sleep 1
    kill -TERM "$INBOUND"
    wait "$INBOUND"
    rc=$?
    exec 7>&-
    tail -12 "$E2E_TMP/valgrind-inbound.log"
    check_eq "valgrind: inbound exits 0 with no memcheck error" 0 "$rc"
    check "valgrind: inbound recorded 4 messages" \
        grep -q "summary .* answered_250=4 .* relay_denied=1 " "$E2E_TMP/valgrind-inbound.log"
else
    check "valgrind: a private PostgreSQL starts" false
fi
kill -TERM "$SINK"; wait "$SINK"
e2e_finish
echo "$E2E_PASS passed, $E2E_FAIL failed"
