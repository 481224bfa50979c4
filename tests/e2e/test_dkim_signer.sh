#!/usr/bin/env bash
# The DKIM signer processes (ringmail-signer, OpenSSL 3) beside a real
# PostgreSQL and python3-aiosmtpd (which keeps every message), signatures
# checked by python3-dkim:
#   1. a campaign signed RSA-2048 through the signers: every message
#      verifies (rsa-sha256); the send reports its signers in --json
#   2. the key stays out of the delivery process: PostgreSQL's statement
#      log shows dkim_key read by application ringmail-signer only, and
#      the memory of a running send holds none of the key's PEM lines
#      (while the same scan finds the campaign's subject there)
#   3. dual signing (campaign create --dkim-selector2 --dkim-key2): two
#      DKIM-Signature fields, rsa-sha256 then ed25519-sha256, both verify;
#      campaign show lists both selectors; create's refusals
#   4. a signer killed during a send: the send says which signer died and
#      how, stops, exit 1; no recipient invalid, none left claimed, every
#      message that reached the server signed; the next send finishes
#   5. a key the signer cannot use (RSA-512, garbage put in by SQL), and no
#      signer binary: send refuses with the reason, nothing claimed or sent
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
T=$E2E_TMP
e2e_require openssl || { e2e_finish; exit 1; }
check "python3-dkim is installed" "$E2E_PY" -c 'import dkim'
start_postgres "$T/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
check "db migrate" "$RM" db migrate --db "$PG_URL"
psql_q "ALTER SYSTEM SET log_statement = 'all'" >/dev/null
psql_q "ALTER SYSTEM SET log_line_prefix = 'app=%a '" >/dev/null
psql_q "SELECT pg_reload_conf()" >/dev/null

AI_PORT=$(free_port)
AI=$T/ai.jsonl
EML=$T/eml
start_aiosmtpd "$AI_PORT" "$CERTS/server.pem" "$CERTS/server.key" --starttls-optional \
    --count-file "$AI" --save-dir "$EML" || { check "aiosmtpd starts" false; e2e_finish; exit 1; }
conf() { # conf FILE RATE
    cat >"$1" <<CONF
[global]
tls = none
retry = 300ms
max_age = 30s
[isp x]
domains = x.test
msg_rate = $2
[route x.test]
server = 127.0.0.1:$AI_PORT
CONF
}
conf "$T/fast.conf" 1000/s
conf "$T/slow.conf" 8/s

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/rsa.pem" 2>/dev/null
openssl genpkey -algorithm ED25519 -out "$T/ed.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:512 -out "$T/rsa512.pem" 2>/dev/null
RSA_P=$(openssl pkey -in "$T/rsa.pem" -pubout -outform DER | base64 -w0)
ED_P=$(openssl pkey -in "$T/ed.pem" -pubout -outform DER | tail -c 32 | base64 -w0)
printf 'Hello {{first_name|there}},\nthe signer signs this.\n' >"$T/body.txt"

# create NAME KEYARGS...: a campaign of From news@acme.test; its id
create() {
    local name=$1
    shift
    "$RM" campaign create --db "$PG_URL" --name "$name" --from news@acme.test \
        --subject "Signed by the signer $name" --text "$T/body.txt" --dkim-domain acme.test "$@" \
        2>"$T/create.$name.err"
}
# recipients ID N: N recipients NAME1..N@x.test
recipients() {
    psql_q "INSERT INTO ringmail.recipient (campaign_id, address, vars)
        SELECT $1, 'r$1-' || g || '@x.test', '{\"first_name\": \"Ann\"}'
        FROM generate_series(1, $2) g" >/dev/null
}
# states ID: "state count" pairs
states() {
    psql_q "SELECT state || ' ' || count(*) FROM ringmail.recipient WHERE campaign_id = $1
            GROUP BY state ORDER BY state" | paste -sd' '
}
cat >"$T/verify.py" <<'PY'
# verify.py DIR PREFIX RSA_P ED_P: every saved message of the campaign's
# recipients (To: PREFIX...) has its DKIM-Signature fields verified;
# prints "N messages; signatures a1,a2 all verified" or what failed.
import dkim, glob, re, sys
d, prefix, rsa_p, ed_p = sys.argv[1:5]
records = {"rsa2048._domainkey.acme.test": b"v=DKIM1; k=rsa; p=" + rsa_p.encode(),
           "ed._domainkey.acme.test": b"v=DKIM1; k=ed25519; p=" + ed_p.encode()}
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    return records.get(name.rstrip("."))
n, algs, bad = 0, set(), []
for path in sorted(glob.glob(d + "/*.eml")):
    msg = open(path, "rb").read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    head = msg.split(b"\r\n\r\n", 1)[0]
    if not re.search(rb"(?m)^To: " + re.escape(prefix.encode()), head):
        continue
    n += 1
    sigs = re.findall(rb"(?m)^DKIM-Signature:.*?a=([a-z0-9-]+);", head)
    algs.add(",".join(s.decode() for s in sigs))
    if not sigs:
        bad.append(path + ": unsigned")
    v = dkim.DKIM(msg)
    for i in range(len(sigs)):
        if not v.verify(idx=i, dnsfunc=dnsfunc):
            bad.append("%s: signature %d does not verify" % (path, i + 1))
if bad:
    print("\n".join(bad[:5]))
    sys.exit(1)
print("%d messages; signatures %s all verified" % (n, "|".join(sorted(algs))))
PY
verified() { "$E2E_PY" "$T/verify.py" "$EML" "$1" "$RSA_P" "$ED_P"; }

# ============================================================ 1. RSA-2048 through the signers
C1=$(create rsa --dkim-selector rsa2048 --dkim-key "$T/rsa.pem")
check_eq "create: an RSA-2048 campaign" 0 "$?"
recipients "$C1" 40
"$RM" send --db "$PG_URL" --campaign "$C1" --config "$T/fast.conf" --node n1 \
    --journal "$T/n1.journal" --render-threads 2 --json >"$T/s1.json" 2>"$T/s1.err"
check_eq "send an RSA-signed campaign: exit 0, all 40 sent" "0 sent 40" "$? $(states "$C1")"
check_eq "every message verifies, rsa-sha256" "40 messages; signatures rsa-sha256 all verified" \
    "$(verified "r$C1-")"
check_eq "--json: two signers made the 40 signatures" "2 40" \
    "$(jget "$T/s1.json" dkim.signers) $(jget "$T/s1.json" dkim.signatures)"
check "--json: the signers' CPU is reported" "$E2E_PY" -c \
    "import json,sys; sys.exit(0 if json.load(open('$T/s1.json'))['dkim']['signer_cpu_s'] >= 0 else 1)"

# ============================================================ 2. the key out of the send process
C2=$(create mem --dkim-selector rsa2048 --dkim-key "$T/rsa.pem")
recipients "$C2" 24
"$RM" send --db "$PG_URL" --campaign "$C2" --config "$T/slow.conf" --node n2 \
    --journal "$T/n2.journal" --window 2 >/dev/null 2>"$T/s2.err" &
SEND=$!
wait_for_count "$AI" "r$C2-" 2 15
grep -v -- '-----' "$T/rsa.pem" >"$T/rsa.lines"
"$E2E_PY" - "$SEND" "$T/rsa.lines" "Signed by the signer mem" >"$T/scan.out" 2>&1 <<'PY'
# scan PID LINES MARKER: which of the key's PEM lines, and the marker, are
# anywhere in the readable memory of PID
import re, sys
pid, lines, marker = int(sys.argv[1]), open(sys.argv[2]).read().split(), sys.argv[3].encode()
found_key, found_marker = 0, False
with open("/proc/%d/maps" % pid) as maps, open("/proc/%d/mem" % pid, "rb", 0) as mem:
    for m in maps:
        a, perms = m.split()[:2]
        if not perms.startswith("r"):
            continue
        lo, hi = (int(x, 16) for x in a.split("-"))
        if hi - lo > 1 << 33:
            continue  # a sanitizer's shadow or reserve, not data
        keys = set()
        for at in range(lo, hi, 1 << 24):  # 16 MB at a time, 64 bytes of overlap
            try:
                mem.seek(at)
                chunk = mem.read(min(hi, at + (1 << 24) + 64) - at)
            except (OSError, ValueError, OverflowError):
                continue
            found_marker |= marker in chunk
            keys |= {l for l in lines if l.encode() in chunk}
        found_key += len(keys)
print("marker %s key-lines %d" % ("found" if found_marker else "missing", found_key))
PY
check_eq "the send's memory: the subject is there, none of the key's PEM lines" \
    "marker found key-lines 0" "$(cat "$T/scan.out")"
SIGNERS=$(pgrep -P "$SEND" -x ringmail-signer | paste -sd' ')
check_eq "the send runs one signer per render worker" "$(nproc | awk '{print ($1 > 8 ? 8 : $1)}')" \
    "$(echo "$SIGNERS" | wc -w)"
wait "$SEND"
check_eq "that send: exit 0, all 24 sent" "0 sent 24" "$? $(states "$C2")"
check_eq "its signers ended with it" "" \
    "$(for p in $SIGNERS; do kill -0 "$p" 2>/dev/null && echo "$p"; done)"
check_eq "its messages verify" "24 messages; signatures rsa-sha256 all verified" "$(verified "r$C2-")"
"$E2E_PY" - "$T/pg/pg.log" >"$T/log.out" <<'PY'
# every statement that reads dkim_key or dkim_key2 (a SELECT naming the
# column, not as "... IS NOT NULL"): by which application. campaign
# create's INSERT writes the key; it is not the delivery process.
import re, sys
apps = set()
for line in open(sys.argv[1], errors="replace"):
    if not re.search(r"(statement|execute [^:]*):.*SELECT", line):
        continue
    if re.search(r"dkim_key2?\b(?! IS NOT NULL)", line):
        m = re.match(r"app=(\S*) ", line)
        apps.add(m.group(1) if m else "?")
print(" ".join(sorted(apps)))
PY
check_eq "PostgreSQL's log: dkim_key read by ringmail-signer and by no one else" \
    "ringmail-signer" "$(cat "$T/log.out")"

# ============================================================ 3. dual signing
C3=$(create dual --dkim-selector rsa2048 --dkim-key "$T/rsa.pem" --dkim-selector2 ed \
    --dkim-key2 "$T/ed.pem")
check_eq "create --dkim-selector2 --dkim-key2: exit 0, both stored" "0 ed t" \
    "$? $(psql_q "SELECT dkim_selector2, dkim_key2 IS NOT NULL FROM ringmail.campaign WHERE id = $C3" | tr '\t' ' ')"
check_grep "create: the second key's DNS record to publish" \
    "^  ed\._domainkey\.acme\.test\. IN TXT \"v=DKIM1; k=ed25519; p=$(sed 's/[+.]/\\&/g' <<<"$ED_P")\"" \
    "$T/create.dual.err"
"$RM" campaign show --db "$PG_URL" "$C3" >"$T/show.out" 2>&1
check_grep "show: the first key" '^  dkim +d=acme\.test s=rsa2048 \(private key stored, not shown\)$' "$T/show.out"
check_grep "show: the second key" '^  dkim \(second\) +d=acme\.test s=ed \(private key stored, not shown\)$' "$T/show.out"
recipients "$C3" 30
"$RM" send --db "$PG_URL" --campaign "$C3" --config "$T/fast.conf" --node n3 \
    --journal "$T/n3.journal" --json >"$T/s3.json" 2>"$T/s3.err"
check_eq "send a dual-signed campaign: exit 0, all 30 sent" "0 sent 30" "$? $(states "$C3")"
check_eq "every message: rsa-sha256 then ed25519-sha256, both verify" \
    "30 messages; signatures rsa-sha256,ed25519-sha256 all verified" "$(verified "r$C3-")"
check_eq "--json: 60 signatures" 60 "$(jget "$T/s3.json" dkim.signatures)"
mkdir -p "$T/preview"
"$RM" campaign preview "$C3" --to seed@x.test --out "$T/preview/p.eml" --db "$PG_URL" 2>"$T/s3p.err"
check_eq "campaign preview of the dual campaign: exit 0" 0 "$?"
check_eq "the preview is signed twice too, through a signer, and both verify" \
    "1 messages; signatures rsa-sha256,ed25519-sha256 all verified" \
    "$("$E2E_PY" "$T/verify.py" "$T/preview" seed@ "$RSA_P" "$ED_P")"
C6=$(create loop --dkim-selector rsa2048 --dkim-key "$T/rsa.pem" --dkim-selector2 ed \
    --dkim-key2 "$T/ed.pem")
recipients "$C6" 10
"$RM" send --db "$PG_URL" --campaign "$C6" --config "$T/fast.conf" --node n6 \
    --journal "$T/n6.journal" --render-threads 0 --json >"$T/s6l.json" 2>"$T/s6l.err"
check_eq "--render-threads 0 (render on the delivery thread): one signer, all 10 sent" \
    "0 sent 10 1" "$? $(states "$C6") $(jget "$T/s6l.json" dkim.signers)"
check_eq "those messages verify, signed twice" \
    "10 messages; signatures rsa-sha256,ed25519-sha256 all verified" "$(verified "r$C6-")"
refused() { # refused NAME ERE ARGS...
    local name=$1 re=$2
    shift 2
    "$RM" campaign create --db "$PG_URL" --name refused --from news@acme.test --subject s \
        --text "$T/body.txt" "$@" >/dev/null 2>"$T/ref.err"
    check_eq "create refuses $name: exit 2" 2 "$?"
    check_grep "create refuses $name: says why" "$re" "$T/ref.err"
}
refused "--dkim-key2 without --dkim-selector2" "^ringmail campaign create: --dkim-selector2 and --dkim-key2 go together$" \
    --dkim-domain acme.test --dkim-selector a --dkim-key "$T/rsa.pem" --dkim-key2 "$T/ed.pem"
refused "a second key without a first" "^ringmail campaign create: --dkim-selector2 and --dkim-key2 sign a second time: they need --dkim-domain, --dkim-selector and --dkim-key$" \
    --dkim-selector2 b --dkim-key2 "$T/ed.pem"
refused "the same selector twice" "^ringmail campaign create: --dkim-selector2 must differ from --dkim-selector" \
    --dkim-domain acme.test --dkim-selector a --dkim-key "$T/rsa.pem" --dkim-selector2 a --dkim-key2 "$T/ed.pem"
refused "an RSA-512 second key" "^ringmail campaign create: --dkim-key2 $T/rsa512.pem: RSA key of 512 bits \(DKIM needs 1024 to 8192, 2048 advised\)$" \
    --dkim-domain acme.test --dkim-selector a --dkim-key "$T/rsa.pem" --dkim-selector2 b --dkim-key2 "$T/rsa512.pem"

# ============================================================ 4. a signer killed during a send
C4=$(create kill --dkim-selector ed --dkim-key "$T/ed.pem")
recipients "$C4" 40
"$RM" send --db "$PG_URL" --campaign "$C4" --config "$T/slow.conf" --node n4 \
    --journal "$T/n4.journal" --window 2 --render-threads 2 >/dev/null 2>"$T/s4.err" &
SEND=$!
wait_for_count "$AI" "r$C4-" 3 15
SIGNER=$(pgrep -P "$SEND" -x ringmail-signer | head -1)
check "the send has its signer processes" test -n "$SIGNER"
kill -KILL "$SIGNER"
wait "$SEND"
check_eq "send with a killed signer: exit 1" 1 "$?"
check_grep "it says which signer died, how, and that nothing goes unsigned" \
    "^ringmail send: campaign $C4: the DKIM signer \(pid $SIGNER\) died: killed by signal 9 \(Killed\): stopping; nothing is sent unsigned, the recipients not sent go back to the queue$" "$T/s4.err"
check_grep "the stop says where the recipients are" \
    "^ringmail send: stopped: the DKIM signer failed \(see above\); every result is written; [0-9]+ claimed recipients? went back to the queue; none was sent unsigned$" "$T/s4.err"
S4=$(states "$C4")
check_eq "no recipient invalid, none claimed" "" "$(echo "$S4" | grep -oE '(invalid|claimed) [0-9]+')"
check "some were sent before, the rest went back to the queue" \
    "$E2E_PY" -c "import re,sys; d=dict((s,int(n)) for s,n in re.findall(r'(\w+) (\d+)', '$S4')); sys.exit(0 if d.get('sent',0)>=3 and d.get('sent',0)+d.get('queued',0)==40 else 1)"
check_eq "every message the server got is signed and verifies" \
    "$(psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $C4 AND state = 'sent'") messages; signatures ed25519-sha256 all verified" \
    "$(verified "r$C4-")"
"$RM" send --db "$PG_URL" --campaign "$C4" --config "$T/fast.conf" --node n4 \
    --journal "$T/n4.journal" >/dev/null 2>"$T/s4b.err"
check_eq "the next send finishes the campaign" "0 sent 40" "$? $(states "$C4")"
check_eq "each recipient got one message, signed" "40 messages; signatures ed25519-sha256 all verified" \
    "$(verified "r$C4-")"

# ============================================================ 5. keys the signer refuses, no signer
C5=$(create bad --dkim-selector rsa2048 --dkim-key "$T/rsa.pem")
recipients "$C5" 5
psql_q "UPDATE ringmail.campaign SET dkim_key = \$\$$(cat "$T/rsa512.pem")\$\$ WHERE id = $C5" >/dev/null
"$RM" send --db "$PG_URL" --campaign "$C5" --config "$T/fast.conf" --node n5 \
    --journal "$T/n5.journal" >/dev/null 2>"$T/s5.err"
check_eq "an RSA-512 key in the row: send exit 2, nothing sent or claimed" "2 queued 5" "$? $(states "$C5")"
check_grep "it says the signer's reason" \
    "^ringmail send: campaign $C5: the DKIM signer: dkim_key: RSA key of 512 bits \(DKIM needs 1024 to 8192, 2048 advised\)$" "$T/s5.err"
psql_q "UPDATE ringmail.campaign SET dkim_key = 'not a key' WHERE id = $C5" >/dev/null
"$RM" send --db "$PG_URL" --campaign "$C5" --config "$T/fast.conf" --node n5 \
    --journal "$T/n5.journal" >/dev/null 2>"$T/s6.err"
check_eq "garbage in dkim_key: send exit 2, nothing sent" "2 queued 5" "$? $(states "$C5")"
check_grep "it says the key cannot be read" \
    "^ringmail send: campaign $C5: the DKIM signer: dkim_key: cannot read a private key from the PEM text \(PEM, unencrypted\)$" "$T/s6.err"
psql_q "UPDATE ringmail.campaign SET dkim_key = \$\$$(cat "$T/ed.pem")\$\$ WHERE id = $C5" >/dev/null
RINGMAIL_SIGNER=$T/nowhere "$RM" send --db "$PG_URL" --campaign "$C5" --config "$T/fast.conf" \
    --node n5 --journal "$T/n5.journal" >/dev/null 2>"$T/s7.err"
check_eq "no signer binary: send exit 2, nothing sent" "2 queued 5" "$? $(states "$C5")"
check_grep "it names the binary it looked for" \
    "^ringmail send: campaign $C5: cannot start the DKIM signer $T/nowhere: No such file or directory \(ringmail-signer is installed beside ringmail; RINGMAIL_SIGNER names another\)$" "$T/s7.err"

for f in "$T"/s*.err; do
    check_no_grep "no sanitizer report in $(basename "$f")" Sanitizer "$f"
done
e2e_finish
