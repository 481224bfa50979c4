#!/usr/bin/env bash
# MTA-STS (RFC 8461) end to end, on loopback with real servers: dnsmasq
# serves the _mta-sts TXT records, MX and addresses; a Python `ssl` HTTPS
# server (sts_server.py) serves the policies with a certificate of the test
# CA; ringmail sinks with good, wrong-host and self-signed certificates, and
# one without STARTTLS, are the exchangers; --ca is the test CA. Cases:
# enforce delivers over verified TLS; an attacker's certificate or a
# stripped STARTTLS defers and nothing reaches the sink; an MX the policy
# does not name is skipped; testing delivers and records what failed;
# fetch errors (404, redirect, content type, oversize, timeout, bad
# certificate, invalid policy) mean no policy and are recorded; the
# PostgreSQL cache survives a restart, refetches on a new id, keeps the
# last good policy when a refresh fails, and two `send` processes make one
# fetch.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
e2e_require dnsmasq openssl || { e2e_finish; exit 1; }
T0=$(date +%s)

SINK_PORT=$(free_port)
DNS_PORT=$(free_port)
HTTPS_PORT=$(free_port)
POL=$E2E_TMP/policies
mkdir -p "$POL"
HTTPS_LOG=$E2E_TMP/https.log
: >"$HTTPS_LOG"

# ---- certificates: the MX hosts' and the policy hosts', from the test CA
DOMAINS="enf bad self skip strip tst nomatch e404 redir html big slow inv chk nocert sh1 idc tstmx tstplain offisp sh2 age dberr"
mx_san=""
sts_san=""
for d in $DOMAINS; do
    mx_san="$mx_san,DNS:mx.$d.test"
    [ "$d" = nocert ] || sts_san="$sts_san,DNS:mta-sts.$d.test"
done
leaf() { # NAME SAN
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$E2E_TMP/$1.key" 2>/dev/null &&
        printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
            "$2" >"$E2E_TMP/$1.ext" &&
        openssl req -new -key "$E2E_TMP/$1.key" -subj "/CN=$1" -out "$E2E_TMP/$1.csr" 2>/dev/null &&
        openssl x509 -req -in "$E2E_TMP/$1.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
            -CAcreateserial -CAserial "$E2E_TMP/ca.srl" -days 3650 -extfile "$E2E_TMP/$1.ext" \
            -out "$E2E_TMP/$1.leaf.pem" 2>/dev/null &&
        cat "$E2E_TMP/$1.leaf.pem" "$CERTS/ca.pem" >"$E2E_TMP/$1.pem"
}
check "certificates for the MX hosts and the policy hosts" leaf mx "${mx_san#,}"
leaf sts "${sts_san#,}"

# ---- DNS: every test domain has MX mx.DOMAIN, mta-sts.DOMAIN at the HTTPS server
GOOD=127.0.0.61 WRONG=127.0.0.62 SELF=127.0.0.63 EVIL=127.0.0.64 STRIP=127.0.0.65 WEB=127.0.0.60
mx_ip() {
    case $1 in bad | tst | offisp) echo $WRONG ;; self) echo $SELF ;; strip | tstplain) echo $STRIP ;; *) echo $GOOD ;; esac
}
dns_start() { # ID of idc.test's TXT
    local args=() d
    for d in $DOMAINS; do
        args+=(--mx-host="$d.test,mx.$d.test,20" --host-record="mx.$d.test,$(mx_ip "$d")"
            --host-record="mta-sts.$d.test,$WEB")
        case " ${DROP_TXT:-} " in *" $d "*) continue ;; esac # no TXT record at all
        case $d in
        idc) args+=(--txt-record="_mta-sts.$d.test,v=STSv1; id=$1") ;;
        *) args+=(--txt-record="_mta-sts.$d.test,v=STSv1; id=1") ;;
        esac
    done
    # skip.test: a preferred exchanger the policy does not name (an attacker's MX)
    args+=(--mx-host="skip.test,evil.skip.test,10" --host-record="evil.skip.test,$EVIL")
    # noaddr.test: a TXT record, and no address for its policy host
    args+=(--mx-host="noaddr.test,mx.enf.test,10" --txt-record="_mta-sts.noaddr.test,v=STSv1; id=1")
    # bad.test asks for TLS reports by mail (TLS-RPT: the report must get
    # through the very policy failure it reports: TLS-Required: No)
    args+=(--txt-record="_smtp._tls.bad.test,v=TLSRPTv1; rua=mailto:tlsrpt@bad.test")
    # txtfail.test: its _mta-sts TXT lookup gets no answer (forwarded to a
    # port where nothing listens)
    args+=(--mx-host="txtfail.test,mx.enf.test,10" --server="/_mta-sts.txtfail.test/127.0.0.1#$SERVFAIL_PORT")
    # plain.test: no MTA-STS at all
    args+=(--mx-host="plain.test,mx.enf.test,10" --txt-record="_mta-sts.plain.test,v=spf1 -all")
    dnsmasq --keep-in-foreground --port="$DNS_PORT" --listen-address=127.0.0.1 --bind-interfaces \
        --no-resolv --no-hosts --local=/test/ --local-ttl=300 --pid-file= "${args[@]}" \
        >"$E2E_TMP/dnsmasq.log" 2>&1 &
    DNS_PID=$!
    e2e_cleanup "kill $DNS_PID"
    sleep 0.3
}
# A DNS server that answers SERVFAIL to everything (what dnsmasq forwards
# _mta-sts.txtfail.test to): a TXT lookup that fails at once.
SERVFAIL_PORT=$(free_port)
e2e_bg servfail "$E2E_PY" -c 'import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    q, a = s.recvfrom(4096)
    s.sendto(q[:2] + bytes([0x81, 0x82]) + q[4:6] + bytes(6) + q[12:], a)' "$SERVFAIL_PORT"
dns_start 1

# ---- the policies
policy() { # DOMAIN MODE MX...
    local d=$1 m=$2
    shift 2
    { printf 'version: STSv1\r\nmode: %s\r\n' "$m"; for mx in "$@"; do printf 'mx: %s\r\n' "$mx"; done
      printf 'max_age: 86400\r\n'; } >"$POL/$d"
}
for d in enf bad self strip chk sh1 sh2 idc dberr; do policy $d.test enforce "mx.$d.test"; done
policy skip.test enforce mx.skip.test
policy tst.test testing mx.tst.test
printf 'version: STSv1\nmode: enforce\nmx: mx.age.test\nmax_age: 6\n' >"$POL/age.test"
policy tstmx.test testing "*.elsewhere.test"
policy tstplain.test testing mx.tstplain.test
policy offisp.test enforce mx.offisp.test
policy nomatch.test enforce "*.elsewhere.test"
for d in e404 redir html big slow nocert; do policy $d.test enforce "mx.$d.test"; done
echo 404 >"$POL/e404.test.mode"
echo redirect >"$POL/redir.test.mode"
echo html >"$POL/html.test.mode"
echo big >"$POL/big.test.mode"
echo "slow 4" >"$POL/slow.test.mode"
echo chunked >"$POL/chk.test.mode"
printf 'version: STSv1\nmode: strict\nmx: mx.inv.test\nmax_age: 86400\n' >"$POL/inv.test"

e2e_bg https "$E2E_PY" "$E2E_DIR/sts_server.py" $WEB "$HTTPS_PORT" "$E2E_TMP/sts.pem" \
    "$E2E_TMP/sts.key" "$POL" "$HTTPS_LOG"
wait_port $WEB "$HTTPS_PORT" 10 "$E2E_BG_PID"

# ---- the exchangers
start_sink good $GOOD --tls-cert "$E2E_TMP/mx.pem" --tls-key "$E2E_TMP/mx.key"
start_sink wrong $WRONG --tls-cert "$CERTS/wrongname.pem" --tls-key "$CERTS/wrongname.key"
start_sink self $SELF --tls-cert "$CERTS/selfsigned.pem" --tls-key "$CERTS/selfsigned.key"
start_sink evil $EVIL --tls-cert "$CERTS/selfsigned.pem" --tls-key "$CERTS/selfsigned.key"
start_sink strip $STRIP --no-starttls

cat >"$E2E_TMP/sts.conf" <<CONF
[global]
tls = required
retry = 200ms
max_age = 1s
[isp weak]
domains = tstplain.test
tls = opportunistic
[isp nosts]
domains = offisp.test
mta_sts = off
CONF

# send_list NAME RCPT... : list mode, records in $E2E_TMP/NAME.jsonl
send_list() {
    local name=$1
    shift
    printf '%s\n' "$@" >"$E2E_TMP/$name.rcpts"
    timeout 60 "$RM" send --recipients "$E2E_TMP/$name.rcpts" --from news@sender.test \
        --config "$E2E_TMP/sts.conf" --resolver "127.0.0.1:$DNS_PORT" --mx-port "$SINK_PORT" \
        --mta-sts-port "$HTTPS_PORT" --ca "$CERTS/ca.pem" --timeout-ms 2000 \
        --records "$E2E_TMP/$name.jsonl" --json >"$E2E_TMP/$name.out" 2>"$E2E_TMP/$name.err"
}
# rec NAME RCPT EXPR: EXPR over the first attempt's record d of RCPT in NAME's records
rec() {
    "$E2E_PY" -c 'import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
r = [x for x in rows if x.get("rcpt") == sys.argv[2]]
print(eval(sys.argv[3], {}, {"d": r[0]}) if r else "no record")' "$E2E_TMP/$1.jsonl" "$2" "$3"
}

# ---- list mode: the memory cache, one process
send_list run1 a@enf.test b@bad.test c@self.test d@skip.test e@strip.test f@tst.test \
    g@nomatch.test h@plain.test i@chk.test j@tstmx.test k@tstplain.test l@offisp.test
check_eq "run1: exit 0" 0 "$?"
# nomatch.test is looked up again at each retry (its policy then comes from memory)
check_ge "run1's summary: a TXT lookup per domain (12) at least" 12 \
    "$(jeval "$E2E_TMP/run1.out" "d['mta_sts']['txt_lookups']")"
check_eq "run1's summary: one policy fetch per MTA-STS domain whose ISP has it on (10), none shared" "10 0" \
    "$(jeval "$E2E_TMP/run1.out" "'%d %d' % (d['mta_sts']['fetches'], d['mta_sts']['shared_cache_answers'])")"
cat "$E2E_TMP/run1.err" | sed 's/^/#   /'
P="[d['outcome'], d['reason'], d.get('tls_policy'), d.get('tls_policy_mode'), d.get('tls_policy_id', ''), d.get('tls_result')]"
check_eq "enforce, valid certificate: delivered under mta-sts enforce, id 1" \
    "['accepted', 'accepted', 'mta-sts', 'enforce', '1', None]" "$(rec run1 a@enf.test "$P")"
check_eq "enforce: the certificate was verified for the MX host" "ok mx.enf.test" \
    "$(rec run1 a@enf.test "d['verify'] + ' ' + d['mx']")"
check_eq "enforce, wrong-host certificate: deferred, certificate-host-mismatch" \
    "['deferred', 'mta_sts_tls_verify_failed', 'mta-sts', 'enforce', '1', 'certificate-host-mismatch']" \
    "$(rec run1 b@bad.test "$P")"
check_eq "enforce, self-signed certificate: deferred, certificate-not-trusted" \
    "['deferred', 'mta_sts_tls_verify_failed', 'mta-sts', 'enforce', '1', 'certificate-not-trusted']" \
    "$(rec run1 c@self.test "$P")"
check_eq "enforce: an MX the policy does not name is skipped (the named one delivers)" \
    "accepted mx.skip.test" "$(rec run1 d@skip.test "d['outcome'] + ' ' + d['mx']")"
check_eq "enforce, STARTTLS stripped: deferred, starttls-not-supported" \
    "['deferred', 'mta_sts_tls_not_offered', 'mta-sts', 'enforce', '1', 'starttls-not-supported']" \
    "$(rec run1 e@strip.test "$P")"
check_eq "testing, wrong-host certificate: delivered, the failure recorded" \
    "['accepted', 'accepted', 'mta-sts', 'testing', '1', 'certificate-host-mismatch']" \
    "$(rec run1 f@tst.test "$P")"
check_eq "enforce, no MX matches: deferred, validation-failure" \
    "['deferred', 'mta_sts_no_matching_mx', 'mta-sts', 'enforce', '1', 'validation-failure']" \
    "$(rec run1 g@nomatch.test "$P")"
check_grep "no matching MX: the reason names the policy's patterns" \
    '"text":"no MX host of nomatch.test matches its MTA-STS policy \(enforce; mx: \*\.elsewhere\.test\)' \
    "$E2E_TMP/run1.jsonl"
check_eq "no v=STSv1 record: the configured policy" \
    "['accepted', 'accepted', 'config', 'required', '', None]" "$(rec run1 h@plain.test "$P")"
check_eq "a chunked policy response: enforce applies" \
    "['accepted', 'accepted', 'mta-sts', 'enforce', '1', None]" "$(rec run1 i@chk.test "$P")"
check_eq "testing, no MX matches: delivered, validation-failure recorded" \
    "['accepted', 'accepted', 'mta-sts', 'testing', '1', 'validation-failure']" \
    "$(rec run1 j@tstmx.test "$P")"
check_eq "testing over an opportunistic ISP, no STARTTLS: delivered, starttls-not-supported" \
    "['accepted', 'accepted', 'mta-sts', 'testing', '1', 'starttls-not-supported']" \
    "$(rec run1 k@tstplain.test "$P")"
check_eq "[isp] mta_sts = off: an enforce domain goes as configured" \
    "['accepted', 'accepted', 'config', 'required', '', None]" "$(rec run1 l@offisp.test "$P")"
sleep 0.3
check_eq "attacker's exchangers got nothing (self-signed, unnamed MX)" \
    "0 0" "$(sj self accepted_rcpts) $(sj evil accepted_rcpts)"
check_eq "the STARTTLS-less exchanger got only the opportunistic testing domain's message" 1 \
    "$(sj strip accepted_rcpts)"
check_eq "the wrong-host exchanger got only the testing and mta_sts-off domains' messages" 2 \
    "$(sj wrong accepted_rcpts)"

# A TXT lookup that fails: said, counted, and (nothing cached) the configured policy.
T_TF=$(date +%s%N)
send_list tf a@txtfail.test
echo "# the failing TXT lookup run: $((($(date +%s%N) - T_TF) / 1000000)) ms"
check_eq "TXT lookup failed: delivered under the configured policy" \
    "['accepted', 'accepted', 'config', 'required', '', None]" "$(rec tf a@txtfail.test "$P")"
check_grep "TXT lookup failed: said" \
    "^ringmail: MTA-STS txtfail\.test: the _mta-sts TXT lookup failed \(.*\): a cached policy still applies, else the configured one$" \
    "$E2E_TMP/tf.err"
check_eq "TXT lookup failed: counted in the summary" 1 \
    "$(jeval "$E2E_TMP/tf.out" "d['mta_sts']['txt_lookups_failed']")"

# ---- ringmail resolve: the policy as send sees it
"$RM" resolve --resolver "127.0.0.1:$DNS_PORT" --ca "$CERTS/ca.pem" --mta-sts-port "$HTTPS_PORT" \
    skip.test plain.test e404.test >"$E2E_TMP/resolve.json" 2>"$E2E_TMP/resolve.err"
# rv DOMAIN PYEXPR: PYEXPR of DOMAIN's line (d: that object)
rv() { "$E2E_PY" -c 'import json,sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d["domain"] == sys.argv[2]: print(eval(sys.argv[3]))' "$E2E_TMP/resolve.json" "$1" "$2"; }
sed "s/^/#   /" "$E2E_TMP/resolve.json"
check_eq "resolve: the policy's id, mode, mx and max_age" "1 enforce ['mx.skip.test'] 86400" \
    "$(rv skip.test '" ".join(str(x) for x in (d["mta_sts"]["id"], d["mta_sts"]["mode"], d["mta_sts"]["mx"], d["mta_sts"]["max_age"]))')"
check_eq "resolve: each MX host marked by the policy (evil not named, mx named)" "False True" \
    "$(rv skip.test '" ".join(str(m.get("mta_sts_match")) for m in d["mx"])')"
check_grep "resolve: a domain without MTA-STS says so" \
    '"mta_sts": *\{"txt": *"none \(no v=STSv1 record\): no MTA-STS policy"\}' "$E2E_TMP/resolve.json"
check_eq "resolve: a fetch that fails is said, with its RFC 8460 type" sts-policy-fetch-error \
    "$(rv e404.test 'd["mta_sts"]["error_type"]')"
check "resolve: the fetch error names the status" grep -q 'HTTP 404' "$E2E_TMP/resolve.json"
printf '[global]\nmta_sts = off\n' >"$E2E_TMP/off.conf"
"$RM" resolve --config "$E2E_TMP/off.conf" --resolver "127.0.0.1:$DNS_PORT" skip.test \
    >"$E2E_TMP/resolve-off.json" 2>&1
check_grep "resolve: mta_sts = off is said" '"mta_sts": *"off \(mta_sts = off\)"' "$E2E_TMP/resolve-off.json"

# ---- policy fetch errors, no policy cached: delivered as configured, the error recorded
send_list run2 a@e404.test b@redir.test c@html.test d@big.test e@slow.test f@inv.test \
    g@nocert.test h@noaddr.test
check_eq "run2: exit 0" 0 "$?"
sed 's/^/#   /' "$E2E_TMP/run2.err"
F="[d['outcome'], d.get('tls_policy'), d.get('tls_policy_mode'), d.get('tls_result')]"
for r in a@e404.test b@redir.test c@html.test d@big.test e@slow.test h@noaddr.test; do
    check_eq "fetch error ($r): delivered as configured, sts-policy-fetch-error" \
        "['accepted', 'config', 'required', 'sts-policy-fetch-error']" "$(rec run2 $r "$F")"
done
check_eq "invalid policy: delivered as configured, sts-policy-invalid" \
    "['accepted', 'config', 'required', 'sts-policy-invalid']" "$(rec run2 f@inv.test "$F")"
check_eq "policy host's certificate not for its name: sts-webpki-invalid" \
    "['accepted', 'config', 'required', 'sts-webpki-invalid']" "$(rec run2 g@nocert.test "$F")"
E2=$E2E_TMP/run2.err
check_grep "404 said" '^ringmail: MTA-STS e404\.test: policy fetch: HTTP 404 \(no policy: delivering as configured\)$' "$E2"
check_grep "redirect not followed, said" '^ringmail: MTA-STS redir\.test: policy fetch: HTTP 301 \(redirect to https://elsewhere\.test/\.well-known/mta-sts\.txt, not followed\)' "$E2"
check_grep "content type said" '^ringmail: MTA-STS html\.test: policy fetch: content type "text/html", not text/plain' "$E2"
check_grep "oversize said" '^ringmail: MTA-STS big\.test: policy fetch: response body over 65536 bytes' "$E2"
check_grep "timeout said" '^ringmail: MTA-STS slow\.test: policy fetch: timed out after 2000 ms \(reading the response\)' "$E2"
check_grep "no address for the policy host said" '^ringmail: MTA-STS noaddr\.test: policy fetch: no address for mta-sts\.noaddr\.test \(' "$E2"
check_grep "invalid policy said" '^ringmail: MTA-STS inv\.test: policy invalid: bad mode "strict"' "$E2"
check_grep "certificate said" '^ringmail: MTA-STS nocert\.test: policy fetch: TLS with mta-sts\.nocert\.test: certificate verify failed: Hostname mismatch' "$E2"
check_eq "no redirect followed: one request to redir.test" 1 "$(grep -c '^redir.test ' "$HTTPS_LOG")"

# ---- campaign mode: the policy cache in PostgreSQL, shared by processes and nodes
if start_postgres "$E2E_TMP/pg"; then
    "$RM" db migrate --db "$PG_URL" >/dev/null
    # send_db NAME NODE DOMAIN: a one-recipient campaign to DOMAIN sent by node NODE
    send_db() {
        local id
        id=$(new_campaign "$1" 1 "$3")
        timeout 60 "$RM" send --db "$PG_URL" --campaign "$id" --config "$E2E_TMP/sts.conf" \
            --node "$2" --resolver "127.0.0.1:$DNS_PORT" --mx-port "$SINK_PORT" \
            --mta-sts-port "$HTTPS_PORT" --ca "$CERTS/ca.pem" --timeout-ms 2000 \
            --journal "$E2E_TMP/$1.journal" --json >"$E2E_TMP/$1.out" 2>"$E2E_TMP/$1.err"
        echo "$id"
    }
    row() { # CAMPAIGN: its delivery row, as "outcome reason policy mode id result"
        psql_q "SELECT outcome, reason, tls_policy, tls_policy_mode, tls_policy_id,
                coalesce(tls_result, '-') FROM ringmail.delivery WHERE campaign_id = $1
                ORDER BY id LIMIT 1" | tr '\t' ' '
    }
    fetches() { grep -c "^$1 " "$HTTPS_LOG"; }
    C=$(send_db c1 n1 idc.test)
    check_eq "campaign: delivered under the policy fetched (id 1)" \
        "accepted accepted mta-sts enforce 1 -" "$(row "$C")"
    check_eq "campaign: the policy is in mta_sts_policy" \
        "1|enforce|{mx.idc.test}|86400|t|" \
        "$(psql_q "SELECT sts_id, mode, mx, max_age, expires_at > now() + interval '23 hours',
                   coalesce(fetch_node, '') FROM ringmail.mta_sts_policy WHERE domain = 'idc.test'" | tr '\t' '|')"
    check_eq "campaign: its text in tls_policy_text (for TLS-RPT)" "sts 1 t" \
        "$(psql_q "SELECT type, policy_id, policy LIKE 'version: STSv1%mx: mx.idc.test%'
                   FROM ringmail.tls_policy_text WHERE domain = 'idc.test'" | tr '\t' ' ')"
    C=$(send_db b1 n1 bad.test)
    check_eq "campaign, enforce, wrong-host certificate: the delivery row" \
        "deferred mta_sts_tls_verify_failed mta-sts enforce 1 certificate-host-mismatch" "$(row "$C")"
    C=$(send_db b2 n1 strip.test)
    check_eq "campaign, enforce, no STARTTLS: the delivery row" \
        "deferred mta_sts_tls_not_offered mta-sts enforce 1 starttls-not-supported" "$(row "$C")"
    C=$(send_db c2 n2 idc.test)
    check_eq "a restart (another node) uses the cached policy: no fetch" 1 "$(fetches idc.test)"
    check_eq "... and applies it" "accepted accepted mta-sts enforce 1 -" "$(row "$C")"
    check_eq "... its summary: no fetch, one answer from the shared cache" "0 1" \
        "$(jeval "$E2E_TMP/c2.out" "'%d %d' % (d['mta_sts']['fetches'], d['mta_sts']['shared_cache_answers'])")"
    # The TXT id changes: the policy is fetched again.
    kill "$DNS_PID"
    policy idc.test enforce mx.idc.test mx2.idc.test
    dns_start 2
    C=$(send_db c3 n1 idc.test)
    check_eq "a new TXT id: fetched again" 2 "$(fetches idc.test)"
    check_eq "... the new policy applies (id 2)" "accepted accepted mta-sts enforce 2 -" "$(row "$C")"
    check_eq "... and is cached" "2|{mx.idc.test,mx2.idc.test}" \
        "$(psql_q "SELECT sts_id, mx FROM ringmail.mta_sts_policy WHERE domain = 'idc.test'" | tr '\t' '|')"
    # A refresh (id 3) that fails: the last good policy stays in force.
    kill "$DNS_PID"
    echo 404 >"$POL/idc.test.mode"
    dns_start 3
    C=$(send_db c4 n1 idc.test)
    check_eq "a failed refresh was tried" 3 "$(fetches idc.test)"
    check_eq "... the last good policy stays in force (RFC 8461 5.1)" \
        "accepted accepted mta-sts enforce 2 -" "$(row "$C")"
    check_eq "... the error is kept beside it" "2|policy fetch: HTTP 404|sts-policy-fetch-error" \
        "$(psql_q "SELECT sts_id, last_error, last_error_type FROM ringmail.mta_sts_policy
                   WHERE domain = 'idc.test'" | tr '\t' '|')"
    check_grep "... and said" "MTA-STS idc\.test: policy fetch: HTTP 404 \(the cached policy stays in force\)" "$E2E_TMP/c4.err"
    # Two send processes at once, the policy host slow: one fetch between them.
    echo "slow 1" >"$POL/sh1.test.mode"
    send_db s1 na sh1.test >"$E2E_TMP/s1.id" &
    p1=$!
    send_db s2 nb sh1.test >"$E2E_TMP/s2.id" &
    p2=$!
    wait $p1 $p2
    check_eq "two send processes at once: ONE policy fetch" 1 "$(fetches sh1.test)" ||
        { grep "^sh1.test " "$HTTPS_LOG"; grep -h "MTA-STS" "$E2E_TMP/s1.err" "$E2E_TMP/s2.err"; } |
        sed 's/^/# /'

    check_eq "... both delivered under it" \
        "accepted accepted mta-sts enforce 1 - accepted accepted mta-sts enforce 1 -" \
        "$(row "$(cat "$E2E_TMP/s1.id")") $(row "$(cat "$E2E_TMP/s2.id")")"
    # ... and when that one fetch fails, the waiting process takes its error, not a second request.
    echo "slow404 1" >"$POL/sh2.test.mode"
    send_db s3 na sh2.test >"$E2E_TMP/s3.id" &
    p1=$!
    send_db s4 nb sh2.test >"$E2E_TMP/s4.id" &
    p2=$!
    wait $p1 $p2
    check_eq "two processes, the fetch fails: still ONE request" 1 "$(fetches sh2.test)" ||
        { grep "^sh2.test " "$HTTPS_LOG"; grep -h "MTA-STS" "$E2E_TMP/s3.err" "$E2E_TMP/s4.err"; } |
        sed 's/^/# /'

    check_eq "... both record the fetch error and deliver as configured" \
        "accepted accepted config required  sts-policy-fetch-error accepted accepted config required  sts-policy-fetch-error" \
        "$(row "$(cat "$E2E_TMP/s3.id")") $(row "$(cat "$E2E_TMP/s4.id")")"
    # A third process after that failure (moments later, the same TXT id):
    # the failure is taken from the row, the failing host not asked again.
    C=$(send_db s5 nc sh2.test)
    check_eq "a fetch that failed moments ago (same id): not asked again by another node" 1 \
        "$(fetches sh2.test)"
    check_eq "... its error recorded, delivered as configured" \
        "accepted accepted config required  sts-policy-fetch-error" "$(row "$C")"
    # Refresh before expiry: a policy in the second half of its max_age is fetched again.
    C=$(send_db a1 n1 age.test)
    check_eq "max_age 6: applied" "accepted accepted mta-sts enforce 1 -" "$(row "$C")"
    C=$(send_db a2 n1 age.test)
    check_eq "max_age 6, at once again: from the cache" 1 "$(fetches age.test)"
    sleep 3.5
    C=$(send_db a3 n1 age.test)
    check_eq "max_age 6, 3.5 s later (second half of its life): fetched again" 2 "$(fetches age.test)"
    check_eq "... and applied" "accepted accepted mta-sts enforce 1 -" "$(row "$C")"
    # The cache table unusable: the node fetches alone, says so, delivers.
    psql_q "ALTER TABLE ringmail.mta_sts_policy RENAME TO mta_sts_policy_away" >/dev/null
    C=$(send_db d1 n1 dberr.test)
    psql_q "ALTER TABLE ringmail.mta_sts_policy_away RENAME TO mta_sts_policy" >/dev/null
    check_eq "cache table away: fetched alone, the policy applies" \
        "accepted accepted mta-sts enforce 1 -" "$(row "$C")"
    check_grep "cache table away: said" \
        '^ringmail send: MTA-STS cache in PostgreSQL: ERROR: +relation "ringmail.mta_sts_policy" does not exist' \
        "$E2E_TMP/d1.err"
    # The TXT record gone (stripped by an attacker, or a lookup that fails):
    # a new process still applies the policy cached in PostgreSQL (RFC 8461
    # 5.1), without fetching.
    C=$(send_db t1 n1 enf.test)
    check_eq "enf.test cached by a campaign" "accepted accepted mta-sts enforce 1 -" "$(row "$C")"
    F0=$(fetches enf.test)
    kill "$DNS_PID"
    DROP_TXT=enf dns_start 3
    C=$(send_db t2 n2 enf.test)
    check_eq "no TXT record: a new process applies the cached policy" \
        "accepted accepted mta-sts enforce 1 -" "$(row "$C")"
    check_eq "... from the shared cache, no fetch" "$F0 1" \
        "$(fetches enf.test) $(jeval "$E2E_TMP/t2.out" "d['mta_sts']['shared_cache_answers']")"
    C=$(send_db t3 n2 plain.test)
    check_eq "no TXT record and nothing cached: the configured policy" \
        "accepted accepted config required  -" "$(row "$C")"
    kill "$DNS_PID"
    dns_start 3
    # TLS-RPT from these rows: bad.test's day under its enforce policy.
    TODAY=$(date -u +%F)
    RPT=(--db "$PG_URL" --day "$TODAY" --resolver "127.0.0.1:$DNS_PORT" --submitter mail.sender.test
        --contact tlsrpt-admin@sender.test)
    mkdir -p "$E2E_TMP/rpt"
    "$RM" tlsrpt "${RPT[@]}" --out "$E2E_TMP/rpt" >"$E2E_TMP/rpt.out" 2>"$E2E_TMP/rpt.err"
    RF=$(ls "$E2E_TMP/rpt"/*'!bad.test!'*.json.gz 2>/dev/null | head -1)
    check "tlsrpt: a report for bad.test from the campaign's rows" test -s "$RF"
    # every attempt of b1's recipient (retried until max_age) was a session that failed
    NB=$(psql_q "SELECT count(*) FROM ringmail.delivery d JOIN ringmail.recipient r ON r.id = d.recipient_id
        WHERE r.address LIKE '%@bad.test' AND d.conn_first AND d.tls_result = 'certificate-host-mismatch'")
    check_ge "tlsrpt: bad.test's failed sessions in the delivery rows" 1 "$NB"
    check_eq "tlsrpt: its policy is the MTA-STS one, quoted from tls_policy_text, with the failures" \
        "sts ['version: STSv1', 'mode: enforce', 'mx: mx.bad.test', 'max_age: 86400'] 0 $NB certificate-host-mismatch mx.bad.test" \
        "$("$E2E_PY" -c 'import gzip, json, sys
r = json.loads(gzip.open(sys.argv[1]).read())
p = [x for x in r["policies"] if x["policy"]["policy-type"] == "sts"][0]
f = p["failure-details"][0]
print(p["policy"]["policy-type"], p["policy"]["policy-string"], p["summary"]["total-successful-session-count"],
      p["summary"]["total-failure-session-count"], f["result-type"], f["receiving-mx-hostname"])' "$RF" 2>&1)"
    # --send: the report goes to bad.test's MX, whose certificate fails the
    # enforce policy; TLS-Required: No lets it through (RFC 8689).
    W0=$(jeval "${SINK_STATS[wrong]}" "d.get('deliveries', {}).get('tlsrpt@bad.test', 0)")
    timeout 60 "$RM" tlsrpt "${RPT[@]}" --send --config "$E2E_TMP/sts.conf" --ca "$CERTS/ca.pem" \
        --mx-port "$SINK_PORT" --mta-sts-port "$HTTPS_PORT" >"$E2E_TMP/rptsend.out" 2>"$E2E_TMP/rptsend.err"
    sink_stats_settled "${SINK_STATS[wrong]}"
    check_eq "tlsrpt --send: the report reached bad.test's MX despite its enforce policy (TLS-Required: No)" \
        $((W0 + 1)) "$(jeval "${SINK_STATS[wrong]}" "d.get('deliveries', {}).get('tlsrpt@bad.test', 0)")"
    check_eq "tlsrpt --send: recorded sent" "sent" \
        "$(psql_q "SELECT outcome FROM ringmail.tlsrpt_report WHERE domain = 'bad.test'")"
else
    _e2e_not_ok "PostgreSQL for the shared cache" "start_postgres failed"
fi
cat "$E2E_TMP"/*.err >"$E2E_TMP/all.stderr"
check_no_grep "no sanitizer report in any run" "Sanitizer|runtime error" "$E2E_TMP/all.stderr"
echo "# test_mta_sts: $(($(date +%s) - T0)) s"

e2e_finish
