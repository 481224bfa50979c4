#!/usr/bin/env bash
# DNS onboarding against a real dnsmasq on loopback:
#   1. campaign create with a DKIM key prints the TXT record to publish on
#      stderr (stdout stays the id): p= is what `openssl pkey -pubout` gives
#      (RSA: base64 of the DER SubjectPublicKeyInfo, cut into strings of at
#      most 255 bytes; Ed25519: the raw 32 bytes, RFC 8463), and a d= that
#      does not align with the From domain is a warning naming both;
#   2. check-dns: the records create printed, published in dnsmasq, are
#      "met" (exit 0); a missing DMARC, two SPF records, a DKIM record of
#      another key, +all, a return path that does not align (with and
#      without DKIM to carry DMARC), the return path from --config; a
#      dual-signed campaign's second selector (--dkim-selector2), published
#      or not;
#   3. lookups that fail: SERVFAIL for one name (the rest is checked), a
#      silent resolver (timeout, bounded) and a closed port: "could not be
#      checked" with the name, exit 1, never "missing";
#   4. bad options: exit 2 and why.
set -u
. "$(dirname "$0")/lib.sh"
e2e_tmpdir
RM=${RINGMAIL:-build/ringmail}
T=$E2E_TMP
e2e_require dnsmasq openssl || { e2e_finish; exit 1; }

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/rsa.pem" 2>/dev/null
openssl genpkey -algorithm ED25519 -out "$T/ed.pem" 2>/dev/null
openssl genpkey -algorithm ED25519 -out "$T/other.pem" 2>/dev/null
RSA_P=$(openssl pkey -in "$T/rsa.pem" -pubout -outform DER | base64 -w0)
# An Ed25519 SubjectPublicKeyInfo ends with the raw 32-byte key.
ED_P=$(openssl pkey -in "$T/ed.pem" -pubout -outform DER | tail -c 32 | base64 -w0)
OTHER_P=$(openssl pkey -in "$T/other.pem" -pubout -outform DER | tail -c 32 | base64 -w0)
ED_RE=${ED_P//+/\\+} # base64's '+' in an ERE

# zone_strings FILE: the quoted strings of the zone line in FILE, one per line, unescaped.
zone_strings() {
    "$E2E_PY" -c 'import re, sys
line = [l for l in open(sys.argv[1]) if " IN TXT " in l][0]
for s in re.findall(r"\"((?:[^\"\\]|\\.)*)\"", line):
    print(re.sub(r"\\(.)", r"\1", s))' "$1"
}

# ================================================================ 1. campaign create
printf 'Hello {{first_name|friend}}\n' >"$T/body.txt"
RSA_REC="" ED_REC=""
if start_postgres "$T/pg"; then
    check "db migrate" "$RM" db migrate --db "$PG_URL"
    create() { # create NAME KEY DKIM_DOMAIN: stdout to NAME.out, stderr to NAME.err
        "$RM" campaign create --db "$PG_URL" --name "$1" --from news@good.test --subject Hi \
            --text "$T/body.txt" --dkim-domain "$3" --dkim-selector s1 --dkim-key "$2" \
            >"$T/$1.out" 2>"$T/$1.err"
    }
    create rsa "$T/rsa.pem" good.test
    check_eq "create (RSA): exit 0" 0 "$?"
    check_grep "create (RSA): stdout is the id alone" '^[0-9]+$' "$T/rsa.out"
    check_eq "create (RSA): one line on stdout" 1 "$(wc -l <"$T/rsa.out")"
    check_grep "create (RSA): says what to publish" '^publish this DNS record for DKIM:$' "$T/rsa.err"
    check_grep "create (RSA): the zone line, k=rsa" \
        '^  s1\._domainkey\.good\.test\. IN TXT "v=DKIM1; k=rsa; p=' "$T/rsa.err"
    zone_strings "$T/rsa.err" >"$T/rsa.strings"
    check_eq "create (RSA): cut into 2 strings (a TXT string holds 255 bytes)" 2 \
        "$(wc -l <"$T/rsa.strings")"
    check_eq "create (RSA): the first string is 255 bytes" 255 "$(head -1 "$T/rsa.strings" | tr -d '\n' | wc -c)"
    RSA_REC=$(tr -d '\n' <"$T/rsa.strings")
    check_eq "create (RSA): p= is openssl's DER SubjectPublicKeyInfo" "v=DKIM1; k=rsa; p=$RSA_P" "$RSA_REC"
    check_no_grep "create (RSA): aligned d=: no warning" 'warning' "$T/rsa.err"
    check_no_grep "create (RSA): no key material on stderr" 'PRIVATE' "$T/rsa.err"

    create ed "$T/ed.pem" good.test
    check_eq "create (Ed25519): exit 0" 0 "$?"
    check_grep "create (Ed25519): stdout is the id alone" '^[0-9]+$' "$T/ed.out"
    ED_REC=$(zone_strings "$T/ed.err")
    check_eq "create (Ed25519): p= is the raw 32-byte key (RFC 8463)" \
        "v=DKIM1; k=ed25519; p=$ED_P" "$ED_REC"
    check_grep "create (Ed25519): the zone line" \
        "^  s1\\._domainkey\\.good\\.test\\. IN TXT \"v=DKIM1; k=ed25519; p=$ED_RE\"\$" "$T/ed.err"

    create mis "$T/ed.pem" mailer.test
    check_eq "create (d=mailer.test, From good.test): still created (exit 0)" 0 "$?"
    check_grep "create (misaligned): stdout is the id alone" '^[0-9]+$' "$T/mis.out"
    check_grep "create (misaligned): the warning names both and what fails" \
        '^warning: DKIM d=mailer\.test does not align with the From domain good\.test: DMARC will fail for Gmail/Yahoo bulk-sender rules' \
        "$T/mis.err"
    check_grep "create (misaligned): says how to fix it" 'sign with --dkim-domain good\.test' "$T/mis.err"
    check_grep "create (misaligned): the record is printed for mailer.test" \
        '^  s1\._domainkey\.mailer\.test\. IN TXT ' "$T/mis.err"

    "$RM" campaign create --db "$PG_URL" --name sub --from news@mail.good.test --subject Hi \
        --text "$T/body.txt" --dkim-domain good.test --dkim-selector s1 --dkim-key "$T/ed.pem" \
        >/dev/null 2>"$T/sub.err"
    check_no_grep "create (d=good.test, From mail.good.test): a parent aligns, no warning" \
        'warning' "$T/sub.err"
    "$RM" campaign create --db "$PG_URL" --name nodkim --from news@good.test --subject Hi \
        --text "$T/body.txt" >"$T/nodkim.out" 2>"$T/nodkim.err"
    check_eq "create without DKIM: exit 0, nothing on stderr" "0 0" "$? $(wc -c <"$T/nodkim.err")"
else
    check "postgres starts" false
fi
# Without PostgreSQL the records are made here, so part 2 still runs.
[ -n "$RSA_REC" ] || RSA_REC="v=DKIM1; k=rsa; p=$RSA_P"
[ -n "$ED_REC" ] || ED_REC="v=DKIM1; k=ed25519; p=$ED_P"

# ================================================================ 2. check-dns
cat >"$T/dnsd.py" <<'PY'
# A UDP "resolver" on 127.0.0.1:PORT that answers SERVFAIL to everything
# (servfail) or never answers (silent). Writes READY_FILE once bound.
import socket, sys
mode, port, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
open(ready, "w").close()
while True:
    q, addr = s.recvfrom(4096)
    if mode == "servfail" and len(q) >= 12:
        flags = 0x8000 | (q[2] & 0x01) << 8 | 0x0080 | 2  # QR, RD copied, RA, SERVFAIL
        s.sendto(q[:2] + flags.to_bytes(2, "big") + q[4:6] + b"\0" * 6 + q[12:], addr)
PY
SF_PORT=$(free_port)
SILENT_PORT=$(free_port)
e2e_bg servfail "$E2E_PY" "$T/dnsd.py" servfail "$SF_PORT" "$T/servfail.ready"
e2e_bg silent "$E2E_PY" "$T/dnsd.py" silent "$SILENT_PORT" "$T/silent.ready"

RSA_A=${RSA_REC:0:255}
RSA_B=${RSA_REC:255}
DNS_PORT=$(free_port)
DMARC_OK="v=DMARC1; p=reject; rua=mailto:dmarc@good.test"
e2e_bg dnsmasq dnsmasq --keep-in-foreground --port="$DNS_PORT" --listen-address=127.0.0.1 \
    --bind-interfaces --no-resolv --no-hosts --local=/test/ --pid-file= \
    --txt-record="s1._domainkey.good.test,$RSA_A,$RSA_B" \
    --txt-record="ed._domainkey.good.test,$ED_REC" \
    --txt-record="good.test,google-site-verification=abc123" \
    --txt-record="good.test,v=spf1 ip4:127.0.0.1 -all" \
    --txt-record="_dmarc.good.test,$DMARC_OK" \
    --txt-record="bounces.good.test,v=spf1 ip4:127.0.0.1 -all" \
    --txt-record="mailer.test,v=spf1 ip4:127.0.0.1 ~all" \
    --txt-record="s1._domainkey.nodmarc.test,$ED_REC" \
    --txt-record="nodmarc.test,v=spf1 ip4:127.0.0.1 -all" \
    --txt-record="s1._domainkey.twospf.test,$ED_REC" \
    --txt-record="twospf.test,v=spf1 ip4:127.0.0.1 -all" \
    --txt-record="twospf.test,v=spf1 include:_spf.mailer.test ~all" \
    --txt-record="_dmarc.twospf.test,$DMARC_OK" \
    --txt-record="s1._domainkey.wrongkey.test,v=DKIM1; k=ed25519; p=$OTHER_P" \
    --txt-record="wrongkey.test,v=spf1 ip4:127.0.0.1 -all" \
    --txt-record="_dmarc.wrongkey.test,$DMARC_OK" \
    --txt-record="s1._domainkey.open.test,$ED_REC" \
    --txt-record="open.test,v=spf1 +all" \
    --txt-record="_dmarc.open.test,$DMARC_OK" \
    --txt-record="s1._domainkey.broken.test,$ED_REC" \
    --txt-record="broken.test,v=spf1 ip4:127.0.0.1 -all" \
    --server="/_dmarc.broken.test/127.0.0.1#$SF_PORT"
DNSMASQ_PID=$E2E_BG_PID
for _ in $(seq 50); do
    [ -e "$T/servfail.ready" ] && [ -e "$T/silent.ready" ] &&
        ss -Hlun "sport = :$DNS_PORT" 2>/dev/null | grep -q . && break
    sleep 0.1
done
check "dnsmasq is running" kill -0 "$DNSMASQ_PID"

R="--resolver 127.0.0.1:$DNS_PORT"
# cd NAME ARGS...: check-dns ARGS, stdout+stderr in NAME.txt, exit status in $RC.
cd_run() {
    local name=$1
    shift
    timeout 20 "$RM" check-dns "$@" >"$T/$name.txt" 2>&1
    RC=$?
    sed "s/^/# $name: /" "$T/$name.txt"
}

# shellcheck disable=SC2086 # $R is two words
cd_run good --from good.test --dkim-selector s1 --dkim-key "$T/rsa.pem" $R
check_eq "good.test (RSA key, as create printed it): exit 0" 0 "$RC"
check_grep "good.test: DKIM OK, 2048-bit, the key given" \
    "^OK +DKIM s1\\._domainkey\\.good\\.test: v=DKIM1, k=rsa, 2048-bit key, the public key of $T/rsa\\.pem\$" "$T/good.txt"
check_grep "good.test: SPF OK, the one v=spf1 among other TXT, ends with -all" \
    '^OK +SPF good\.test: "v=spf1 ip4:127\.0\.0\.1 -all" ends with -all' "$T/good.txt"
check_grep "good.test: DMARC OK with p= and rua=" \
    '^OK +DMARC _dmarc\.good\.test: p=reject, rua=mailto:dmarc@good\.test$' "$T/good.txt"
check_grep "good.test: SPF aligned (MAIL FROM is the From address)" \
    '^OK +SPF alignment: return path good\.test \(MAIL FROM is the From address\) is the From domain good\.test$' "$T/good.txt"
check_grep "good.test: DKIM aligned" '^OK +DKIM alignment: d=good\.test is the From domain good\.test$' "$T/good.txt"
check_grep "good.test: requirements met" '^Gmail and Yahoo bulk-sender requirements: met$' "$T/good.txt"
check_no_grep "good.test: nothing but OK lines" '^(WARN|MISSING|ERROR)' "$T/good.txt"

# shellcheck disable=SC2086
cd_run ed --from news@good.test --dkim-selector ed --dkim-key "$T/ed.pem" $R
check_eq "good.test, Ed25519 selector (--from as an address): exit 0" 0 "$RC"
check_grep "good.test ed: DKIM OK, k=ed25519, the key given" \
    '^OK +DKIM ed\._domainkey\.good\.test: v=DKIM1, k=ed25519, the public key of ' "$T/ed.txt"

# shellcheck disable=SC2086
cd_run dual --from good.test --dkim-selector s1 --dkim-key "$T/rsa.pem" --dkim-selector2 ed \
    --dkim-key2 "$T/ed.pem" $R
check_eq "dual-signed (--dkim-selector2 --dkim-key2): exit 0" 0 "$RC"
check_grep "dual: the first key OK" '^OK +DKIM s1\._domainkey\.good\.test: v=DKIM1, k=rsa, 2048-bit key' "$T/dual.txt"
check_grep "dual: the second key OK, the key given" \
    "^OK +DKIM ed\\._domainkey\\.good\\.test: v=DKIM1, k=ed25519, the public key of $T/ed\\.pem\$" "$T/dual.txt"
# shellcheck disable=SC2086
cd_run dual2 --from good.test --dkim-selector s1 --dkim-selector2 nokey --dkim-key2 "$T/ed.pem" $R
check_eq "dual, the second record not published: exit 1" 1 "$RC"
check_grep "dual: the second one MISSING, with the record to publish" \
    "^MISSING +DKIM nokey\\._domainkey\\.good\\.test: no key record \\(NXDOMAIN\\); publish  nokey\\._domainkey\\.good\\.test\\. IN TXT \"v=DKIM1; k=ed25519; p=$ED_RE\"\$" \
    "$T/dual2.txt"

# shellcheck disable=SC2086
cd_run nodmarc --from nodmarc.test --dkim-selector s1 $R
check_eq "no DMARC: exit 1" 1 "$RC"
check_grep "no DMARC: MISSING and the record to publish" \
    '^MISSING DMARC _dmarc\.nodmarc\.test: no v=DMARC1 record; publish  _dmarc\.nodmarc\.test\. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@nodmarc\.test"$' \
    "$T/nodmarc.txt"
check_grep "no DMARC: not met, says why" \
    '^Gmail and Yahoo bulk-sender requirements: not met: DMARC missing$' "$T/nodmarc.txt"

# shellcheck disable=SC2086
cd_run twospf --from twospf.test --dkim-selector s1 $R
check_eq "two SPF records: exit 1" 1 "$RC"
check_grep "two SPF records: ERROR permerror, merge them" \
    '^ERROR +SPF twospf\.test: 2 v=spf1 records: permerror.*merge them into one record$' "$T/twospf.txt"
check_grep "two SPF records: not met" 'requirements: not met: SPF permerror' "$T/twospf.txt"

# shellcheck disable=SC2086
cd_run wrongkey --from wrongkey.test --dkim-selector s1 --dkim-key "$T/ed.pem" $R
check_eq "DKIM record of another key: exit 1" 1 "$RC"
check_grep "wrong key: ERROR, names the key file and the record to publish" \
    "^ERROR +DKIM s1\\._domainkey\\.wrongkey\\.test: the published key \\(k=ed25519\\) is not the public key of $T/ed\\.pem; publish  s1\\._domainkey\\.wrongkey\\.test\\. IN TXT \"v=DKIM1; k=ed25519; p=$ED_RE\"\$" \
    "$T/wrongkey.txt"
check_grep "wrong key: not met" 'requirements: not met: DKIM key does not match --dkim-key$' "$T/wrongkey.txt"
# shellcheck disable=SC2086
cd_run wrongtype --from good.test --dkim-selector s1 --dkim-key "$T/ed.pem" $R
check_grep "an RSA record checked against an Ed25519 key: mismatch" \
    'the published key \(k=rsa\) is not the public key of' "$T/wrongtype.txt"

# shellcheck disable=SC2086
cd_run open --from open.test --dkim-selector s1 $R
check_eq "SPF +all: exit 1" 1 "$RC"
check_grep "SPF +all: ERROR, anyone may send" \
    '^ERROR +SPF open\.test: "v=spf1 \+all" ends with \+all: anyone may send as open\.test' "$T/open.txt"

# A return path elsewhere: DKIM still carries DMARC (a warning) ...
# shellcheck disable=SC2086
cd_run rp --from good.test --dkim-selector s1 --return-path bounce@mailer.test $R
check_eq "misaligned return path, DKIM aligned: exit 0" 0 "$RC"
check_grep "misaligned return path: SPF checked there" \
    '^OK +SPF mailer\.test: "v=spf1 ip4:127\.0\.0\.1 ~all" ends with ~all' "$T/rp.txt"
check_grep "misaligned return path: From domain's SPF still shown" '^OK +SPF good\.test:' "$T/rp.txt"
check_grep "misaligned return path: WARN naming both" \
    '^WARN +SPF alignment: return path mailer\.test \(--return-path\) does not align with the From domain good\.test: SPF does not count for DMARC \(DKIM carries it\)' \
    "$T/rp.txt"
check_grep "misaligned return path, DKIM aligned: met" 'requirements: met$' "$T/rp.txt"
# ... and without DKIM nothing aligns.
# shellcheck disable=SC2086
cd_run rp2 --from good.test --return-path mailer.test $R
check_eq "misaligned return path, no DKIM: exit 1" 1 "$RC"
check_grep "misaligned return path, no DKIM: ERROR" '^ERROR +SPF alignment: return path mailer\.test' "$T/rp2.txt"
check_grep "misaligned return path, no DKIM: not met, both reasons" \
    'not met: DKIM not checked \(no --dkim-selector\), neither DKIM nor SPF aligned with the From domain$' \
    "$T/rp2.txt"

# The return path from the config's [feedback] section; sources for the SPF hint.
head -c 48 /dev/urandom >"$T/fb.secret"
chmod 600 "$T/fb.secret"
cat >"$T/rm.conf" <<CONF
[global]
source = 192.0.2.10
source = 2001:db8::25

[feedback]
return_path = bounces.good.test
secret_file = $T/fb.secret
CONF
# shellcheck disable=SC2086
cd_run conf --from good.test --dkim-selector s1 --config "$T/rm.conf" $R
check_eq "return path from --config: exit 0" 0 "$RC"
check_grep "return path from --config: named, under the From domain" \
    "^OK +SPF alignment: return path bounces\\.good\\.test \\(\\[feedback\\] return_path of $T/rm\\.conf\\) is under the From domain good\\.test\$" \
    "$T/conf.txt"
# shellcheck disable=SC2086
cd_run hint --from nospf.test --config "$T/rm.conf" --return-path nospf.test $R
check_grep "no SPF: MISSING, a record made of the [global] sources" \
    '^MISSING SPF nospf\.test: no v=spf1 record \(NXDOMAIN: no such domain\); publish  nospf\.test\. IN TXT "v=spf1 ip4:192\.0\.2\.10 ip6:2001:db8::25 -all"$' \
    "$T/hint.txt"

# ================================================================ 3. lookups that fail
# shellcheck disable=SC2086
cd_run servfail --from broken.test --dkim-selector s1 $R --timeout-ms 500
check_eq "SERVFAIL for _dmarc: exit 1" 1 "$RC"
check_grep "SERVFAIL: the name, and that it could not be checked" \
    '^ERROR +DMARC _dmarc\.broken\.test: lookup failed \(SERVFAIL.*\): could not be checked$' "$T/servfail.txt"
check_no_grep "SERVFAIL: never MISSING" '^MISSING' "$T/servfail.txt"
check_grep "SERVFAIL: the other records are still checked" '^OK +SPF broken\.test:' "$T/servfail.txt"
check_grep "SERVFAIL: not met, could not be checked" \
    'requirements: not met: DMARC could not be checked \(_dmarc\.broken\.test lookup failed\)$' \
    "$T/servfail.txt"

start=$(date +%s%N)
cd_run timeout --from good.test --dkim-selector s1 --resolver "127.0.0.1:$SILENT_PORT" --timeout-ms 200
ms=$((($(date +%s%N) - start) / 1000000))
check_eq "silent resolver: exit 1" 1 "$RC"
check_le "silent resolver: bounded (ms)" 5000 "$ms"
check_eq "silent resolver: each of the 3 names could not be checked (timeout)" 3 \
    "$(grep -cE '^ERROR +(DKIM|SPF|DMARC) [^ ]+: lookup failed \(timeout: the resolver did not answer\): could not be checked$' "$T/timeout.txt")"
check_no_grep "silent resolver: never MISSING" '^MISSING' "$T/timeout.txt"

DEAD=$(free_port)
cd_run dead --from good.test --dkim-selector s1 --resolver "127.0.0.1:$DEAD" --timeout-ms 200
check_eq "closed resolver port: exit 1" 1 "$RC"
check_grep "closed resolver port: could not be checked" \
    '^ERROR +DMARC _dmarc\.good\.test: lookup failed \(.*no resolver at its address\): could not be checked$' \
    "$T/dead.txt"
check_no_grep "closed resolver port: never MISSING" '^MISSING' "$T/dead.txt"

# ================================================================ 4. bad options
bad() { # bad NAME TEXT ARGS...: exit 2 and TEXT on stderr, nothing on stdout
    local name=$1 text=$2
    shift 2
    "$RM" check-dns "$@" >"$T/bad.out" 2>"$T/bad.err"
    local rc=$?
    check_eq "$name: exit 2, nothing on stdout" "2 0" "$rc $(wc -c <"$T/bad.out")"
    check_grep "$name: says why" "$text" "$T/bad.err"
}
bad "no --from" '^ringmail check-dns: --from DOMAIN is required$'
bad "--from not a domain" "^ringmail check-dns: --from: 'localhost' is not a domain name" --from localhost
bad "--timeout-ms 2s" "bad value for --timeout-ms: '2s' \\(want 1..600000\\)" --from good.test --timeout-ms 2s
bad "--dkim-key without a selector" 'need --dkim-selector' --from good.test --dkim-key "$T/ed.pem"
bad "--dkim-key not a key" "^ringmail check-dns: --dkim-key $T/body.txt: cannot read a private key" \
    --from good.test --dkim-selector s1 --dkim-key "$T/body.txt"
bad "--dkim-selector with a space" 'dkim-selector must be' --from good.test --dkim-selector 'a b'
bad "--dkim-key2 without --dkim-selector2" '^ringmail check-dns: --dkim-key2 needs --dkim-selector2 S2$' \
    --from good.test --dkim-selector s1 --dkim-key2 "$T/ed.pem"
bad "--dkim-selector2 without a first" '^ringmail check-dns: --dkim-selector2 is a second key: it needs --dkim-selector S$' \
    --from good.test --dkim-selector2 ed
bad "--dkim-key2 not a key" "^ringmail check-dns: --dkim-key2 $T/body.txt: cannot read a private key" \
    --from good.test --dkim-selector s1 --dkim-selector2 ed --dkim-key2 "$T/body.txt"
bad "--conf (abbreviation)" "unknown option '--conf'" --from good.test --conf "$T/rm.conf"
bad "a config with an error" "^ringmail check-dns: $T/body.txt:1: syntax error" \
    --from good.test --config "$T/body.txt"
bad "a stray argument" "^ringmail check-dns: unexpected argument 'extra'\$" --from good.test extra
"$RM" check-dns --help >"$T/help.out" 2>&1
check_eq "--help: exit 0" 0 "$?"
check_grep "--help: the usage" '^usage: ringmail check-dns --from DOMAIN' "$T/help.out"
"$RM" help | grep -q '^  check-dns ' >/dev/null
check_eq "ringmail help lists check-dns" 0 "$?"
e2e_finish
