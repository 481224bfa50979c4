#!/usr/bin/env bash
# DANE for SMTP (RFC 7672; issue 15) end to end, all on loopback: nsd serves
# a zone signed with ldns-signzone (dane.test) and an unsigned one
# (plain.test), unbound validates with dane.test's key and is the config's
# dnssec_resolver; one ringmail sink per MX (127.0.0.71..77, one port, which
# is also the TLSA name's port: _PORT._tcp.MXHOST). The config's policy is
# `verify` against the test CA, so a delivery to a certificate for another
# name can only be DANE's doing.
#   1. DANE-EE match -> delivered without a name check (the sink's
#      certificate names other.test) and without an expiry check
#   1b. DANE-TA: the test CA as trust anchor (2 0 1), the leaf names the MX
#      host -> delivered with no CA bundle at all; a leaf of that CA for
#      another name -> deferred (the name check of DANE-TA)
#   2. TLSA mismatch -> deferred (dane_mismatch, tlsa-invalid), never sent
#   2b. no STARTTLS under DANE -> deferred (tls_not_offered,
#      starttls-not-supported), never plaintext
#   3. TLSA answer bogus (signature broken: SERVFAIL) -> deferred without
#      connecting (dane_tlsa_tempfail, dnssec-invalid)
#   3b. a TLSA lookup that times out (its name is delegated to a server
#      that does not answer: unbound keeps trying, ringmail gives up after
#      its tries, ~8 s) -> deferred the same way
#   4. MX answer bogus -> deferred (dns_tempfail), never connected
#   5. insecure zone with a (wrong) TLSA record -> the configured policy;
#      a secure MX host without TLSA records (NODATA) -> the same
#   6. an ISP with dane = off, and a config without dnssec_resolver -> the
#      configured policy even where the TLSA set would refuse the server
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
e2e_require nsd unbound ldns-signzone ldns-keygen || { e2e_finish; exit 1; }
# shellcheck source=tests/e2e/dnssec_lib.sh
. "$(dirname "$0")/dnssec_lib.sh"

MX_PORT=$(free_port)
SINK_PORT=$MX_PORT
SEND_TIMEOUT=40
# shellcheck source=tests/e2e/pool_lib.sh
. "$(dirname "$0")/pool_lib.sh"

# ---------------------------------------------------------------- DNS

WRONG=$(spki_sha256 "$CERTS/wrongname.pem")     # the sink of mx1: names other.test only
SERVER=$(spki_sha256 "$CERTS/server.pem")       # mx7's sink (127.0.0.78)
EXPIRED=$(spki_sha256 "$CERTS/expired.pem")     # mx5: expired in 2020
T="_$MX_PORT._tcp"
# DANE-TA: the test CA's certificate (DER) as the anchor, and a leaf of it
# for mx6.dane.test (the chain the sink sends: leaf, then the CA).
CA_HASH=$(openssl x509 -in "$CERTS/ca.pem" -outform DER | openssl dgst -sha256 -binary |
    od -An -tx1 | tr -d ' \n')
(
    cd "$E2E_TMP" &&
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out mx6.key &&
        openssl req -new -key mx6.key -subj /CN=mx6.dane.test -out mx6.csr &&
        printf 'subjectAltName=DNS:mx6.dane.test\nextendedKeyUsage=serverAuth\n' >mx6.ext &&
        openssl x509 -req -in mx6.csr -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
            -CAcreateserial -CAserial mx6.srl -days 30 -extfile mx6.ext -out mx6.leaf.pem &&
        cat mx6.leaf.pem "$CERTS/ca.pem" >mx6.pem
) >"$E2E_TMP/mx6.log" 2>&1
check "testbed: a leaf for mx6.dane.test from the test CA" test -s "$E2E_TMP/mx6.pem"
dnssec_zone dane.test 1 "
match IN MX 10 mx1
shared IN MX 10 mx1
mismatch IN MX 10 mx2
tlsafail IN MX 10 mx3
bogus IN MX 10 mx4
expired IN MX 10 mx5
nodane IN MX 10 mx2
ta IN MX 10 mx6
starttls IN MX 10 mx8
lame IN MX 10 mx10
mx10 IN A 127.0.0.70
$T.mx10 IN NS ns-lame.dane.test.
ns-lame IN A 127.0.0.59
notlsa IN MX 10 mx9
aaaabad IN MX 10 mx11
mx11 IN A 127.0.0.78
mx11 IN AAAA ::1
$T.mx11 IN TLSA 3 1 1 $SERVER
mx8 IN A 127.0.0.79
mx9 IN A 127.0.0.80
$T.mx8 IN TLSA 3 1 1 $WRONG
taname IN MX 10 mx7
mx6 IN A 127.0.0.77
mx7 IN A 127.0.0.78
$T.mx6 IN TLSA 2 0 1 $CA_HASH
$T.mx7 IN TLSA 2 0 1 $CA_HASH
mx1 IN A 127.0.0.71
mx2 IN A 127.0.0.72
mx3 IN A 127.0.0.73
mx4 IN A 127.0.0.74
mx5 IN A 127.0.0.75
$T.mx1 IN TLSA 3 1 1 $WRONG
$T.mx1 IN TLSA 0 0 1 0000000000000000000000000000000000000000000000000000000000000000
$T.mx2 IN TLSA 3 1 1 $WRONG
$T.mx3 IN TLSA 3 1 1 $WRONG
$T.mx4 IN TLSA 3 1 1 $WRONG
$T.mx5 IN TLSA 3 1 1 $EXPIRED" || { e2e_finish; exit 1; }
check "testbed: the TLSA signature of mx3 is broken" dnssec_corrupt dane.test "$T.mx3.dane.test." TLSA
check "testbed: the MX signature of bogus.dane.test is broken" \
    dnssec_corrupt dane.test bogus.dane.test. MX
check "testbed: the AAAA signature of mx11.dane.test is broken (its A is fine)" \
    dnssec_corrupt dane.test mx11.dane.test. AAAA
dnssec_zone plain.test 0 "
@ IN MX 10 mx
mx IN A 127.0.0.76
$T.mx IN TLSA 3 1 1 $WRONG" || { e2e_finish; exit 1; }
check "testbed: nsd and unbound run" dnssec_start
RESOLVER=127.0.0.54:$DNSSEC_PORT

# ---------------------------------------------------------------- sinks

start_sink mx1 127.0.0.71 --tls-cert "$CERTS/wrongname.pem" --tls-key "$CERTS/wrongname.key"
start_sink mx2 127.0.0.72 --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key"
start_sink mx3 127.0.0.73 --tls-cert "$CERTS/wrongname.pem" --tls-key "$CERTS/wrongname.key"
start_sink mx4 127.0.0.74 --tls-cert "$CERTS/wrongname.pem" --tls-key "$CERTS/wrongname.key"
start_sink mx5 127.0.0.75 --tls-cert "$CERTS/expired.pem" --tls-key "$CERTS/expired.key"
start_sink mx6 127.0.0.77 --tls-cert "$E2E_TMP/mx6.pem" --tls-key "$E2E_TMP/mx6.key"
start_sink mx7 127.0.0.78 --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key"
start_sink mx8 127.0.0.79 --tls-cert "$CERTS/wrongname.pem" --tls-key "$CERTS/wrongname.key" \
    --no-starttls
start_sink mx9 127.0.0.80 --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key"
start_sink plain 127.0.0.76 --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key"

# ---------------------------------------------------------------- 1-6 with DANE

cat >"$E2E_TMP/dane.conf" <<CONF
[global]
tls = verify
retry = 400ms
max_age = 2s
dnssec_resolver = $RESOLVER
[isp plain]
domains = plain.test
domains = notlsa.dane.test
tls = required
[isp match]
domains = match.dane.test
max_connections = 1
max_msgs_per_conn = 1
[isp nodane]
domains = nodane.dane.test
tls = required
dane = off
CONF
R=$E2E_TMP/dane.rcpts
for d in match shared mismatch tlsafail lame bogus expired nodane ta taname starttls notlsa aaaabad; do echo "a@$d.dane.test"; done >"$R"
echo "a@plain.test" >>"$R"
echo "b@match.dane.test" >>"$R" # one message per connection: b resumes a's session
# --resolver names a server that does not exist: dnssec_resolver answers
# every lookup. No --ca: the test CA is in no bundle, only in DNS.
send_run dane --recipients "$R" --config "$E2E_TMP/dane.conf" --resolver 127.0.0.1:9 \
    --mx-port "$MX_PORT"
REC=$E2E_TMP/dane.records
check_eq "the run ends (no hang)" 1 "$([ "$RC" -ne 124 ] && echo 1)"
# The summary counts TLSA lookups: one per MX host looked at (match and
# shared share mx1's), retries of the timed-out one aside.
check_range "summary: dane.tlsa_queries counts the TLSA lookups" 9 30 \
    "$(jget "$E2E_TMP/dane.json" dane.tlsa_queries)"

# has TEXT STRING: TEXT contains STRING.
has() { case "$1" in *"$2"*) return 0 ;; esac; echo "'$1' lacks '$2'"; return 1; }
# hex16 TEXT: 16 lower-case hex digits.
hex16() { [[ $1 =~ ^[0-9a-f]{16}$ ]] || { echo "'$1' is not 16 hex digits"; return 1; }; }
# got SINK ADDR: how many times the sink accepted ADDR (its stats settled first).
got() { sink_stats_settled "${SINK_STATS[$1]}"; jeval "${SINK_STATS[$1]}" "d.get('deliveries', {}).get('$2', 0)"; }
# last ADDR PYEXPR: PYEXPR of the last record of ADDR.
last() { jeval "$REC" "[d for d in rows if d.get('rcpt') == '$1'][-1]$2" 2>/dev/null; }

check_eq "match: delivered" accepted "$(last a@match.dane.test "['outcome']")"
# A secure host whose AAAA lookup fails (SERVFAIL) while its A is secure:
# DANE still applies over the A address (a missing answer is not an
# insecure one: no silent fallback under DNS trouble).
check_eq "AAAA bogus, A secure: delivered" accepted "$(last a@aaaabad.dane.test "['outcome']")"
check_eq "AAAA bogus, A secure: under DANE, not the configured policy" dane \
    "$(last a@aaaabad.dane.test "['tls_policy']")"
check_eq "match: policy dane" dane "$(last a@match.dane.test "['tls_policy']")"
check_eq "match: mode enforce" enforce "$(last a@match.dane.test "['tls_policy_mode']")"
check "match: the policy id is the set's hash (16 hex)" \
    hex16 "$(last a@match.dane.test "['tls_policy_id']")"
check_eq "match: no RFC 8460 result" null "$(last a@match.dane.test ".get('tls_result')")"
check_eq "match: the sink (a certificate for other.test) got it" 1 "$(got mx1 a@match.dane.test)"
check_eq "match: two connections" 2 "$(jcount "$REC" "d.get('rcpt', '').endswith('@match.dane.test') and d.get('conn_first')")"
check_eq "shared MX: delivered under DANE" dane "$(last a@shared.dane.test "['tls_policy']")"
check_eq "one TLSA query for the MX host two domains share (TTL cache)" 1 \
    "$(dnssec_queries "$T.mx1.dane.test" TLSA)"
check_eq "match: the next connection resumes the DANE session" true \
    "$(last b@match.dane.test "['resumed']")"
check_eq "match: ... and says so" "DANE verified (resumed session)" \
    "$(last b@match.dane.test "['verify']")"
check_eq "match: the record says DANE verified" "DANE verified" "$(last a@match.dane.test "['verify']")"

check_eq "DANE-TA: delivered (anchor from TLSA, no CA bundle)" accepted \
    "$(last a@ta.dane.test "['outcome']")"
check_eq "DANE-TA: policy dane" dane "$(last a@ta.dane.test "['tls_policy']")"
check_eq "DANE-TA: the sink got it" 1 "$(got mx6 a@ta.dane.test)"
check_eq "DANE-TA, leaf for another name: reason dane_mismatch" dane_mismatch \
    "$(last a@taname.dane.test "['reason']")"
check "DANE-TA, leaf for another name: the text says why" has \
    "$(last a@taname.dane.test "['text']")" "matched, but the chain does not verify: Hostname mismatch"
check_eq "DANE-TA, leaf for another name: never sent" 0 "$(got mx7 a@taname.dane.test)"
check_eq "expired certificate, DANE-EE: delivered (no expiry check)" accepted \
    "$(last a@expired.dane.test "['outcome']")"
check_eq "expired: policy dane" dane "$(last a@expired.dane.test "['tls_policy']")"

check_eq "mismatch: never delivered" 0 "$(jcount "$REC" "d.get('rcpt') == 'a@mismatch.dane.test' and d['outcome'] == 'accepted'")"
check_eq "mismatch: reason dane_mismatch" dane_mismatch "$(last a@mismatch.dane.test "['reason']")"
check_eq "mismatch: result tlsa-invalid" tlsa-invalid "$(last a@mismatch.dane.test "['tls_result']")"
check_eq "mismatch: policy dane" dane "$(last a@mismatch.dane.test "['tls_policy']")"
check "mismatch: the text says which record did not match" has \
    "$(last a@mismatch.dane.test "['text']")" \
    "DANE: no TLSA record matches the server's certificate (3 1 1 ${WRONG:0:20}"
check_eq "mismatch: the sink got nothing" 0 "$(got mx2 a@mismatch.dane.test)"

check_eq "no STARTTLS under DANE: reason tls_not_offered" tls_not_offered \
    "$(last a@starttls.dane.test "['reason']")"
check_eq "no STARTTLS under DANE: result starttls-not-supported" starttls-not-supported \
    "$(last a@starttls.dane.test "['tls_result']")"
check_eq "no STARTTLS under DANE: policy dane" dane "$(last a@starttls.dane.test "['tls_policy']")"
check_eq "no STARTTLS under DANE: never sent" 0 "$(got mx8 a@starttls.dane.test)"

check_eq "TLSA bogus: reason dane_tlsa_tempfail" dane_tlsa_tempfail \
    "$(last a@tlsafail.dane.test "['reason']")"
check_eq "TLSA bogus: result dnssec-invalid" dnssec-invalid \
    "$(last a@tlsafail.dane.test "['tls_result']")"
check_eq "TLSA bogus: policy dane" dane "$(last a@tlsafail.dane.test "['tls_policy']")"
check "TLSA bogus: the text names the TLSA lookup" has \
    "$(last a@tlsafail.dane.test "['text']")" "DANE: TLSA lookup of $T.mx3.dane.test failed"
check_eq "TLSA bogus: never connected" 0 "$(sj mx3 connections)"
check_eq "TLSA bogus: final after max_age" expired "$(last a@tlsafail.dane.test "['outcome']")"

check_eq "TLSA timeout: reason dane_tlsa_tempfail" dane_tlsa_tempfail \
    "$(last a@lame.dane.test "['reason']")"
check_eq "TLSA timeout: result dnssec-invalid" dnssec-invalid \
    "$(last a@lame.dane.test "['tls_result']")"
check "TLSA timeout: the text says timeout" has "$(last a@lame.dane.test "['text']")" \
    "failed (timeout: the resolver did not answer)"
check_eq "TLSA timeout: never connected" 0 "$(jcount "$REC" "d.get('addr', '').startswith('127.0.0.70')")"

check_eq "MX bogus: deferred as dns_tempfail" dns_tempfail "$(last a@bogus.dane.test "['reason']")"
check_eq "MX bogus: never connected" 0 "$(sj mx4 connections)"

check_eq "insecure zone: delivered" accepted "$(last a@plain.test "['outcome']")"
check_eq "insecure zone: the configured policy" config "$(last a@plain.test "['tls_policy']")"
check_eq "insecure zone: its mode" required "$(last a@plain.test "['tls_policy_mode']")"

check_eq "secure MX without TLSA: delivered" accepted "$(last a@notlsa.dane.test "['outcome']")"
check_eq "secure MX without TLSA: the configured policy" config \
    "$(last a@notlsa.dane.test "['tls_policy']")"

check_eq "dane = off: delivered under the config" accepted "$(last a@nodane.dane.test "['outcome']")"
check_eq "dane = off: policy config" config "$(last a@nodane.dane.test "['tls_policy']")"
check_eq "mx2's sink got the dane = off message" 1 "$(got mx2 a@nodane.dane.test)"

# ---------------------------------------------------------------- ringmail resolve
"$RM" resolve --config "$E2E_TMP/dane.conf" --mx-port "$MX_PORT" match.dane.test \
    tlsafail.dane.test notlsa.dane.test plain.test >"$E2E_TMP/resolve.json" 2>"$E2E_TMP/resolve.err"
# rv DOMAIN PYEXPR: PYEXPR of DOMAIN's line (d: that object)
rv() { "$E2E_PY" -c 'import json,sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d["domain"] == sys.argv[2]: print(eval(sys.argv[3]))' "$E2E_TMP/resolve.json" "$1" "$2"; }
check_eq "resolve: a signed zone's MX answer is secure" True "$(rv match.dane.test 'd["mx_secure"]')"
check_eq "resolve: DANE usable for match's MX host" dane "$(rv match.dane.test 'd["mx"][0]["dane"]["verdict"]')"
check "resolve: the line names the usable record" has \
    "$(rv match.dane.test 'd["mx"][0]["dane"]["text"]')" "usable TLSA record"
check_eq "resolve: a failed TLSA lookup is tempfail" tempfail \
    "$(rv tlsafail.dane.test 'd["mx"][0]["dane"]["verdict"]')"
check_eq "resolve: a secure MX host without TLSA" none "$(rv notlsa.dane.test 'd["mx"][0]["dane"]["verdict"]')"
check_eq "resolve: an unsigned zone is not secure, DANE insecure" "False insecure" \
    "$(rv plain.test 'd["mx_secure"], d["mx"][0]["dane"]["verdict"]' | tr -d "(),'")"
"$RM" resolve --resolver "$RESOLVER" match.dane.test >"$E2E_TMP/resolve-off.json" 2>&1
check_grep "resolve: without a dnssec_resolver DANE is off, said" \
    '"dane": *"off \(no dnssec_resolver in \[global\]\)"' "$E2E_TMP/resolve-off.json"

# ---------------------------------------------------------------- without dnssec_resolver

cat >"$E2E_TMP/nodnssec.conf" <<CONF
[global]
tls = required
retry = 400ms
max_age = 2s
CONF
echo "b@mismatch.dane.test" >"$E2E_TMP/nodnssec.rcpts"
send_run nodnssec --recipients "$E2E_TMP/nodnssec.rcpts" --config "$E2E_TMP/nodnssec.conf" \
    --resolver "$RESOLVER" --mx-port "$MX_PORT"
REC=$E2E_TMP/nodnssec.records
check_eq "no dnssec_resolver: DANE is off, delivered" accepted \
    "$(last b@mismatch.dane.test "['outcome']")"
check_eq "no dnssec_resolver: policy config" config "$(last b@mismatch.dane.test "['tls_policy']")"
check_eq "mx2's sink got it" 1 "$(got mx2 b@mismatch.dane.test)"

e2e_finish
