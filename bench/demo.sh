#!/usr/bin/env bash
# make demo: a real campaign end to end on this machine, nothing outside
# loopback. It starts a throw-away PostgreSQL (initdb in a private
# directory and port), five sinks on 127.0.0.81-85 that answer like
# Gmail, Microsoft, Yahoo, Tencent and NetEase (STARTTLS with a test CA,
# a few deferrals each with that provider's own reply text, some unknown
# users), creates a campaign with an Ed25519 DKIM key, imports COUNT
# (100,000) generated recipients from CSV, sends it with per-ISP limits
# and reply rules, and prints the report.
set -eu
BUILD=${1:-build}
COUNT=${COUNT:-100000}
RM=$BUILD/ringmail
. tests/e2e/lib.sh
e2e_tmpdir
make_certs "$E2E_TMP/certs"
CERTS=$E2E_TMP/certs

echo "== a throw-away PostgreSQL"
start_postgres "$E2E_TMP/pg"
"$RM" db migrate --db "$PG_URL"

echo "== five sinks emulating ISPs on 127.0.0.81-85"
PORT=$(free_port)
sink() { # IP NAME ARGS...
    local ip=$1 name=$2
    shift 2
    [ -n "${DEMO_CLEAN:-}" ] && set -- # DEMO_CLEAN=1: every sink accepts everything (benchmarks)
    "$RM" sink --listen "$ip:$PORT" --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key" \
        --threads 1 --hostname "mx.$name.test" --stats "$E2E_TMP/$name.json" "$@" >/dev/null 2>&1 &
    e2e_cleanup "kill $!; wait $! 2>/dev/null"
    wait_port "$ip" "$PORT" 10
}
sink 127.0.0.81 gmail --defer-pct 2 --reject-pct 1 \
    --defer-reply "421 4.7.28 Our system has detected an unusual rate of unsolicited mail"
sink 127.0.0.82 outlook --defer-pct 2 --reject-pct 1 \
    --defer-reply "451 4.7.500 Server busy. Please try again later."
sink 127.0.0.83 yahoo --defer-pct 2 \
    --defer-reply "421 4.7.0 [TSS04] Messages temporarily deferred due to unexpected volume"
sink 127.0.0.84 qq --reject-pct 1
sink 127.0.0.85 163 --defer-pct 1 --defer-reply "451 4.7.1 Try again later (RP:TRC)"

# DEMO_CLEAN=1 (benchmarks): rates ten times higher, so the engine and not
# the configured limits sets the pace.
X=1
[ -n "${DEMO_CLEAN:-}" ] && X=10
cat >"$E2E_TMP/ringmail.conf" <<CONF
[global]
tls = verify
retry = 1s, 2s, 4s
max_age = 60s
backoff_step = 0.5
backoff_interval = 200ms

[isp gmail]
domains = gmail.test
max_connections = 8
msg_rate = $((8000 * X))/s
rule = 421 4.7.28 => backoff 0.9 100ms

[isp microsoft]
domains = outlook.test
max_connections = 6
msg_rate = $((6000 * X))/s
rule = 451 4.7.500 => backoff 0.9 100ms

[isp yahoo]
domains = yahoo.test
max_connections = 6
msg_rate = $((5000 * X))/s
rule = TSS04 => backoff 0.9 100ms

[isp tencent]
domains = qq.test
max_connections = 4
msg_rate = $((4000 * X))/s

[isp netease]
domains = 163.test
max_connections = 4
msg_rate = $((4000 * X))/s

[route gmail.test]
server = 127.0.0.81:$PORT
[route outlook.test]
server = 127.0.0.82:$PORT
[route yahoo.test]
server = 127.0.0.83:$PORT
[route qq.test]
server = 127.0.0.84:$PORT
[route 163.test]
server = 127.0.0.85:$PORT
CONF

echo "== a campaign with an Ed25519 DKIM key"
openssl genpkey -algorithm ed25519 -out "$E2E_TMP/dkim.pem" 2>/dev/null
DKIM=(--dkim-domain sender.test --dkim-selector demo --dkim-key "$E2E_TMP/dkim.pem")
[ "${DEMO_DKIM:-1}" = 0 ] && DKIM=() # benchmarks: what the signature costs
printf 'Hello {{first_name|there}},\n\nthis is the ringmail demo campaign.\n' >"$E2E_TMP/body.txt"
printf '<p>Hello <b>{{first_name|there}}</b>,</p><p>this is the ringmail demo campaign.</p>\n' \
    >"$E2E_TMP/body.html"
CID=$("$RM" campaign create --db "$PG_URL" --name "demo" --from news@sender.test \
    --subject "{{first_name|Friend}}, your ringmail demo" --text "$E2E_TMP/body.txt" \
    --html "$E2E_TMP/body.html" --list-unsubscribe "https://sender.test/u/{{email}}" "${DKIM[@]}")
echo "campaign $CID"

echo "== importing $COUNT recipients from CSV"
awk -v n="$COUNT" 'BEGIN {
    split("gmail.test outlook.test yahoo.test qq.test 163.test", d, " ");
    split("Ann Bo 李雷 Chen 韩梅梅 Dana", f, " ");
    print "email,first_name,city";
    for (i = 1; i <= n; i++) printf "user%d@%s,%s,City %d\n", i, d[i % 5 + 1], f[i % 6 + 1], i % 97;
}' >"$E2E_TMP/recipients.csv"
"$RM" recipients import --db "$PG_URL" --campaign "$CID" --csv "$E2E_TMP/recipients.csv"

echo "== sending (STARTTLS, certificates verified against the test CA)"
if [ -n "${DEMO_JSON:-}" ]; then # benchmarks: the send summary as JSON in that file
    "$RM" send --db "$PG_URL" --campaign "$CID" --config "$E2E_TMP/ringmail.conf" \
        --ca "$CERTS/ca.pem" --node demo --journal "$E2E_TMP/demo.journal" --json \
        ${SEND_ARGS:-} >"$DEMO_JSON"
else
    "$RM" send --db "$PG_URL" --campaign "$CID" --config "$E2E_TMP/ringmail.conf" \
        --ca "$CERTS/ca.pem" --node demo --journal "$E2E_TMP/demo.journal" ${SEND_ARGS:-}
fi

echo "== report"
"$RM" report --db "$PG_URL" --campaign "$CID"
