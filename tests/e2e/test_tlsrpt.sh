#!/usr/bin/env bash
# ringmail tlsrpt (RFC 8460 TLS reporting) against a private PostgreSQL,
# dnsmasq serving the _smtp._tls records, ringmail sinks, python3-aiosmtpd
# (the mailto: mailbox) and a Python ssl HTTPS endpoint (the https: rua):
#   1. a day of mixed outcomes made by a real `send --db`: ok.test to a TLS
#      sink (success), plain.test under tls = required to a sink without
#      STARTTLS (starttls-not-supported), wrong.test under tls = verify to
#      a certificate for another name (certificate-host-mismatch),
#      norecord.test (no _smtp._tls record); and INSERTED ROWS (SQL, not a
#      send) for the policy types the send cannot make here: sts.test
#      (mta-sts, its policy text) and dane.test (tlsa, and a failure
#      before any connection, dnssec-invalid)
#   2. without --send: one file per domain with a record, named per RFC
#      8460 5.1, each validating against an RFC 8460 JSON Schema with the
#      counts the rows say; norecord.test said and counted
#   3. --send: the mailto: reports arrive (multipart/report, TLS-Report-*
#      headers, TLS-Required: No, a DKIM signature python3-dkim verifies,
#      the gzip attachment is the same report; unsigned ones said),
#      the https: ones are POSTed as application/tlsrpt+gzip; a failing
#      endpoint is recorded 'failed' (exit 1) and retried by the next run;
#      a run after that sends nothing (said); a row left without outcome
#      (a crash) is not resent without --resend-unfinished
#   4. a resolver that fails: "lookup failed", never "no record"
#   5. error texts: an --out that cannot be written, bad --day, a day not
#      begun, database not migrated, missing options, options not its own
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup
T=$E2E_TMP
e2e_require dnsmasq psql || { e2e_finish; exit 1; }
start_postgres "$T/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
check "db migrate" "$RM" db migrate --db "$PG_URL"

# ============================================================ servers
OK_PORT=$(free_port)
PLAIN_PORT=$(free_port)
WRONG_PORT=$(free_port)
AI_PORT=$(free_port)
H_PORT=$(free_port)
DNS_PORT=$(free_port)
SF_PORT=$(free_port)
DEAD_PORT=$(free_port)
TXT_PORT=$(free_port)
e2e_bg sink.ok "$RM" sink --listen "127.0.0.1:$OK_PORT" --threads 1 \
    --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key"
e2e_bg sink.plain "$RM" sink --listen "127.0.0.1:$PLAIN_PORT" --threads 1
e2e_bg sink.wrong "$RM" sink --listen "127.0.0.1:$WRONG_PORT" --threads 1 \
    --tls-cert "$CERTS/wrongname.pem" --tls-key "$CERTS/wrongname.key"
start_aiosmtpd "$AI_PORT" "$CERTS/server.pem" "$CERTS/server.key" --count-file "$T/ai.jsonl" \
    --save-dir "$T/eml" || { check "aiosmtpd starts" false; e2e_finish; exit 1; }
echo /wrong >"$T/https.fail" # the https: endpoint of wrong.test fails until this goes
e2e_bg https "$E2E_PY" "$E2E_DIR/tlsrpt_https.py" --port "$H_PORT" --cert "$CERTS/server.pem" \
    --key "$CERTS/server.key" --dir "$T/posts" --fail-file "$T/https.fail"
cat >"$T/dnsd.py" <<'PY'
# dnsd.py servfail PORT | dnsd.py txt PORT TEXT: a UDP "resolver" on
# 127.0.0.1:PORT answering SERVFAIL to everything, or TEXT as the one TXT
# record of any name (dnsmasq's --txt-record cannot hold a comma, which
# separates an rua's URIs).
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[2])))
while True:
    q, addr = s.recvfrom(4096)
    if len(q) < 12:
        continue
    if sys.argv[1] == "servfail":
        flags = 0x8000 | (q[2] & 0x01) << 8 | 0x0080 | 2
        s.sendto(q[:2] + flags.to_bytes(2, "big") + q[4:6] + b"\0" * 6 + q[12:], addr)
        continue
    end = q.index(b"\0", 12) + 5
    text = sys.argv[3].encode()
    rdata = bytes([len(text)]) + text
    answer = b"\xc0\x0c" + struct.pack(">HHIH", 16, 1, 60, len(rdata)) + rdata
    flags = 0x8400 | (q[2] & 0x01) << 8 | 0x0080
    s.sendto(q[:2] + struct.pack(">HHHHH", flags, 1, 1, 0, 0) + q[12:end] + answer, addr)
PY
e2e_bg servfail "$E2E_PY" "$T/dnsd.py" servfail "$SF_PORT"
e2e_bg txt "$E2E_PY" "$T/dnsd.py" txt "$TXT_PORT" \
    "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,https://localhost:$H_PORT/ok"
e2e_bg dnsmasq dnsmasq --keep-in-foreground --port="$DNS_PORT" --listen-address=127.0.0.1 \
    --bind-interfaces --no-resolv --no-hosts --local=/test/ --pid-file= \
    --server="/_smtp._tls.ok.test/127.0.0.1#$TXT_PORT" \
    --txt-record="_smtp._tls.plain.test,v=TLSRPTv1;rua=mailto:tlsrpt%40reports.test" \
    --txt-record="_smtp._tls.wrong.test,v=TLSRPTv1; rua=https://localhost:$H_PORT/wrong" \
    --txt-record="_smtp._tls.sts.test,v=TLSRPTv1; rua=mailto:tlsrpt@reports.test" \
    --txt-record="_smtp._tls.dane.test,v=TLSRPTv1; rua=mailto:tlsrpt@reports.test" \
    --txt-record="_smtp._tls.norecord.test,v=spf1 -all" \
    --txt-record="_smtp._tls.badrua.test,v=TLSRPTv1; rua=mailto:nobody" \
    --txt-record="_smtp._tls.deadhttps.test,v=TLSRPTv1; rua=https://localhost:$DEAD_PORT/x" \
    --host-record=mx.wrong.test,127.0.0.1
for _ in $(seq 50); do
    [ -e "$T/posts/ready" ] && ss -Hlun "sport = :$DNS_PORT" 2>/dev/null | grep -q . &&
        ss -Hltn "sport = :$WRONG_PORT" 2>/dev/null | grep -q . && break
    sleep 0.1
done
check "the HTTPS endpoint is up" test -e "$T/posts/ready"

cat >"$T/rm.conf" <<CONF
[global]
tls = required
retry = 200ms
max_age = 1200ms
[isp ok]
domains = ok.test, norecord.test
[isp plain]
domains = plain.test
[isp wrong]
domains = wrong.test
tls = verify
[isp reports]
domains = reports.test
[route ok.test]
server = 127.0.0.1:$OK_PORT
[route norecord.test]
server = 127.0.0.1:$OK_PORT
[route plain.test]
server = 127.0.0.1:$PLAIN_PORT
[route wrong.test]
server = mx.wrong.test:$WRONG_PORT
[route reports.test]
server = 127.0.0.1:$AI_PORT
CONF

# ============================================================ 1. the day
C=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
    VALUES ('day', 'news@sender.test', 'Hello', 'Hello.') RETURNING id")
psql_q "INSERT INTO ringmail.recipient (campaign_id, address) VALUES
    ($C, 'a1@ok.test'), ($C, 'a2@ok.test'), ($C, 'a3@ok.test'),
    ($C, 'b1@plain.test'), ($C, 'b2@plain.test'),
    ($C, 'c1@wrong.test'), ($C, 'd1@norecord.test')" >/dev/null
timeout 60 "$RM" send --db "$PG_URL" --campaign "$C" --config "$T/rm.conf" --ca "$CERTS/ca.pem" \
    --resolver "127.0.0.1:$DNS_PORT" \
    --node n1 --journal "$T/n1.journal" --json >"$T/send.json" 2>"$T/send.err"
echo "# send: exit $? ($(jget "$T/send.json" accepted) accepted)"
check_eq "the day's send: ok.test and norecord.test accepted, the others expired" \
    "sent 4 deferred 3" \
    "$(psql_q "SELECT string_agg(s || ' ' || n, ' ' ORDER BY s DESC) FROM (SELECT CASE WHEN state = 'sent' THEN 'sent' ELSE 'deferred' END s, count(*) n FROM ringmail.recipient WHERE campaign_id = $C GROUP BY 1) x")"
check_eq "plain.test: starttls-not-supported recorded by the send" "t" \
    "$(psql_q "SELECT bool_and(tls_result = 'starttls-not-supported') AND count(*) > 0 FROM ringmail.delivery d JOIN ringmail.recipient r ON r.id = d.recipient_id WHERE r.address LIKE '%@plain.test' AND d.conn_first")"
check_eq "wrong.test: certificate-host-mismatch recorded by the send" "t" \
    "$(psql_q "SELECT bool_and(tls_result = 'certificate-host-mismatch') AND count(*) > 0 FROM ringmail.delivery d JOIN ringmail.recipient r ON r.id = d.recipient_id WHERE r.address LIKE '%@wrong.test' AND d.conn_first")"

# INSERTED ROWS (not made by a send): the mta-sts and dane policy types.
STS_TEXT=$'version: STSv1\nmode: enforce\nmx: mx1.sts.test\nmx: *.backup.sts.test\nmax_age: 86400'
psql_q "INSERT INTO ringmail.recipient (campaign_id, address, state) VALUES
    ($C, 's1@sts.test', 'sent'), ($C, 's2@sts.test', 'sent'), ($C, 's3@sts.test', 'deferred'),
    ($C, 't1@dane.test', 'sent'), ($C, 't2@dane.test', 'deferred'), ($C, 't3@dane.test', 'deferred')" >/dev/null
psql_q "INSERT INTO ringmail.tls_policy_text (type, domain, policy_id, policy) VALUES
    ('sts', 'sts.test', '20261201T000000', \$\$$STS_TEXT\$\$),
    ('tlsa', 'dane.test', 'h1', \$\$3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\$\$)" >/dev/null
ins() { # ins ADDRESS POLICY ID RESULT|NULL CONN_FIRST|NULL PEER|NULL MX: one inserted delivery row
    psql_q "INSERT INTO ringmail.delivery (campaign_id, recipient_id, attempt, outcome, final,
        reason, mx, peer, source, tls_policy, tls_policy_mode, tls_policy_id, tls_result, conn_first)
        SELECT $C, id, 1, CASE WHEN $4 IS NULL THEN 'accepted' ELSE 'deferred' END, false,
        'inserted', '$7', $6, '127.0.0.1', '$2', 'enforce', '$3', $4, $5
        FROM ringmail.recipient WHERE campaign_id = $C AND address = '$1'" >/dev/null
}
ins s1@sts.test mta-sts 20261201T000000 NULL true "'192.0.2.10:25'" mx1.sts.test
ins s2@sts.test mta-sts 20261201T000000 NULL false "'192.0.2.10:25'" mx1.sts.test # no session: 2nd on its connection
ins s3@sts.test mta-sts 20261201T000000 "'certificate-expired'" true "'192.0.2.11:25'" mx2.backup.sts.test
ins t1@dane.test dane h1 NULL true "'[2001:db8::25]:25'" mx.dane.test
ins t2@dane.test dane h1 "'tlsa-invalid'" true "'192.0.2.20:25'" mx.dane.test
ins t3@dane.test dane h1 "'dnssec-invalid'" NULL NULL "" # failed before any connection

# What the rows say, by the test's own reading of a session.
expected() {
    psql_q "SELECT lower(split_part(r.address, '@', 2)),
        CASE d.tls_policy WHEN 'mta-sts' THEN 'sts' WHEN 'dane' THEN 'tlsa' ELSE 'no-policy-found' END,
        coalesce(d.tls_result, ''), count(*)
        FROM ringmail.delivery d JOIN ringmail.recipient r ON r.id = d.recipient_id
        WHERE d.tls_policy IS NOT NULL AND (d.conn_first OR (d.peer IS NULL AND d.tls_result IS NOT NULL))
        GROUP BY 1, 2, 3" >"$T/expected.tsv"
}
expected
check_eq "inserted rows: sts.test 1 ok + 1 failed session, dane.test 1 ok + 2 failed" \
    "dane.test:tlsa::1 dane.test:tlsa:dnssec-invalid:1 dane.test:tlsa:tlsa-invalid:1 sts.test:sts::1 sts.test:sts:certificate-expired:1" \
    "$(grep -E '^(sts|dane)\.test' "$T/expected.tsv" | tr '\t' ':' | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//')"

# ============================================================ 2. reports as files
cat >"$T/schema.json" <<'JSON'
{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "title": "RFC 8460 section 4 aggregate report",
  "type": "object",
  "required": ["organization-name", "date-range", "contact-info", "report-id", "policies"],
  "properties": {
    "organization-name": {"type": "string", "minLength": 1},
    "date-range": {
      "type": "object", "required": ["start-datetime", "end-datetime"],
      "properties": {
        "start-datetime": {"type": "string", "pattern": "^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ$"},
        "end-datetime": {"type": "string", "pattern": "^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ$"}
      }
    },
    "contact-info": {"type": "string", "minLength": 1},
    "report-id": {"type": "string", "minLength": 1},
    "policies": {
      "type": "array", "minItems": 1,
      "items": {
        "type": "object", "required": ["policy", "summary"], "additionalProperties": false,
        "properties": {
          "policy": {
            "type": "object", "required": ["policy-type", "policy-domain"], "additionalProperties": false,
            "properties": {
              "policy-type": {"enum": ["tlsa", "sts", "no-policy-found"]},
              "policy-string": {"type": "array", "items": {"type": "string"}},
              "policy-domain": {"type": "string", "minLength": 1},
              "mx-host": {"type": "array", "items": {"type": "string"}}
            }
          },
          "summary": {
            "type": "object", "additionalProperties": false,
            "required": ["total-successful-session-count", "total-failure-session-count"],
            "properties": {
              "total-successful-session-count": {"type": "integer", "minimum": 0},
              "total-failure-session-count": {"type": "integer", "minimum": 0}
            }
          },
          "failure-details": {
            "type": "array",
            "items": {
              "type": "object", "required": ["result-type", "failed-session-count"],
              "additionalProperties": false,
              "properties": {
                "result-type": {"enum": ["starttls-not-supported", "certificate-host-mismatch",
                  "certificate-expired", "certificate-not-trusted", "validation-failure",
                  "tlsa-invalid", "dnssec-invalid", "dane-required", "sts-policy-fetch-error",
                  "sts-policy-invalid", "sts-webpki-invalid"]},
                "sending-mta-ip": {"type": "string"},
                "receiving-mx-hostname": {"type": "string"},
                "receiving-mx-helo": {"type": "string"},
                "receiving-ip": {"type": "string"},
                "failed-session-count": {"type": "integer", "minimum": 1},
                "additional-information": {"type": "string"},
                "failure-reason-code": {"type": "string"}
              }
            }
          }
        }
      }
    }
  }
}
JSON
cat >"$T/check.py" <<'PY'
# check.py SCHEMA EXPECTED.tsv DOMAIN FILE.json.gz: the report validates and
# its counts are the rows'; prints "ok" or the problems.
import collections, gzip, json, sys, jsonschema
schema, exp, domain, path = sys.argv[1:5]
rep = json.load(gzip.open(path))
jsonschema.validate(rep, json.load(open(schema)))
want_ok, want_fail, want_res = collections.Counter(), collections.Counter(), collections.Counter()
for line in open(exp):
    d, pt, res, n = line.rstrip("\n").split("\t")
    if d != domain:
        continue
    if res:
        want_fail[pt] += int(n)
        want_res[(pt, res)] += int(n)
    else:
        want_ok[pt] += int(n)
got_ok, got_fail, got_res = collections.Counter(), collections.Counter(), collections.Counter()
problems = []
for p in rep["policies"]:
    pt = p["policy"]["policy-type"]
    if p["policy"]["policy-domain"] != domain:
        problems.append("policy-domain %s" % p["policy"]["policy-domain"])
    got_ok[pt] += p["summary"]["total-successful-session-count"]
    got_fail[pt] += p["summary"]["total-failure-session-count"]
    for f in p.get("failure-details", []):
        got_res[(pt, f["result-type"])] += f["failed-session-count"]
for what, a, b in (("ok", want_ok, got_ok), ("failed", want_fail, got_fail), ("by result", want_res, got_res)):
    if +a != +b:
        problems.append("%s: rows say %s, report says %s" % (what, dict(+a), dict(+b)))
print("ok" if not problems else "; ".join(problems))
PY
TODAY=$(date -u +%F)
BEGIN=$(date -u -d "$TODAY 00:00:00" +%s)
R=(--db "$PG_URL" --day "$TODAY" --resolver "127.0.0.1:$DNS_PORT" --submitter mail.sender.test
    --org "Sender Org" --contact tlsrpt-admin@sender.test)
mkdir -p "$T/out"
"$RM" tlsrpt "${R[@]}" --out "$T/out" >"$T/files.out" 2>"$T/files.err"
check_eq "files: exit 0" 0 "$?"
check_grep "files: the day not over is said" \
    "^ringmail tlsrpt: warning: $TODAY is not over yet \(UTC\): the reports cover its sessions until now$" "$T/files.err"
for d in ok.test plain.test wrong.test sts.test dane.test; do
    f="$T/out/mail.sender.test!$d!$BEGIN!$((BEGIN + 86399)).json.gz"
    check "files: $d's report is named per RFC 8460 5.1" test -s "$f"
    check_eq "files: $d's report validates against the schema with the rows' counts" ok \
        "$("$E2E_PY" "$T/check.py" "$T/schema.json" "$T/expected.tsv" "$d" "$f" 2>&1 | tail -1)"
done
check_eq "files: none for norecord.test" 5 "$(ls "$T/out" | wc -l)"
check_grep "files: norecord.test said" \
    "^norecord\.test: no report: _smtp\._tls\.norecord\.test: no TLSRPTv1 record$" "$T/files.out"
check_grep "files: the count line" \
    "^$TODAY: 6 domains with sessions, 5 reports, 1 without a TLSRPT record$" "$T/files.out"
check_grep "files: the table has ok.test's https rua and its counts" \
    "^ok\.test +https://localhost:$H_PORT/ok +[0-9]+ +0  $T/out/mail\.sender\.test!ok\.test!" "$T/files.out"
jq_py() { "$E2E_PY" -c "import gzip,json,sys; r=json.load(gzip.open(sys.argv[1])); print($2)" "$1"; }
STS_F="$T/out/mail.sender.test!sts.test!$BEGIN!$((BEGIN + 86399)).json.gz"
DANE_F="$T/out/mail.sender.test!dane.test!$BEGIN!$((BEGIN + 86399)).json.gz"
WRONG_F="$T/out/mail.sender.test!wrong.test!$BEGIN!$((BEGIN + 86399)).json.gz"
check_eq "sts.test: the policy-string is the policy's lines, mx-host its patterns" \
    "sts|version: STSv1,mode: enforce,mx: mx1.sts.test,mx: *.backup.sts.test,max_age: 86400|mx1.sts.test,*.backup.sts.test" \
    "$(jq_py "$STS_F" "'|'.join([r['policies'][0]['policy']['policy-type'], ','.join(r['policies'][0]['policy']['policy-string']), ','.join(r['policies'][0]['policy']['mx-host'])])")"
check_eq "sts.test: the failure's MX, receiving and sending IP" \
    "certificate-expired mx2.backup.sts.test 192.0.2.11 127.0.0.1 1" \
    "$(jq_py "$STS_F" "' '.join(str(x) for x in (lambda f: [f['result-type'], f['receiving-mx-hostname'], f['receiving-ip'], f['sending-mta-ip'], f['failed-session-count']])(r['policies'][0]['failure-details'][0]))")"
check_eq "dane.test: tlsa with its record; dnssec-invalid without an MX or IP" \
    "tlsa ['3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'] dnssec-invalid:False:False tlsa-invalid:True:True" \
    "$(jq_py "$DANE_F" "r['policies'][0]['policy']['policy-type'], r['policies'][0]['policy']['policy-string'], ' '.join(sorted('%s:%s:%s' % (f['result-type'], 'receiving-ip' in f, 'receiving-mx-hostname' in f) for f in r['policies'][0]['failure-details']))" | tr -d "(),'" | sed "s/tlsa \[/tlsa ['/; s/\] /'] /")"
check_eq "wrong.test: certificate-host-mismatch at mx.wrong.test, 127.0.0.1, no-policy-found" \
    "no-policy-found certificate-host-mismatch mx.wrong.test 127.0.0.1" \
    "$(jq_py "$WRONG_F" "' '.join([r['policies'][0]['policy']['policy-type'], r['policies'][0]['failure-details'][0]['result-type'], r['policies'][0]['failure-details'][0]['receiving-mx-hostname'], r['policies'][0]['failure-details'][0]['receiving-ip']])")"
check_eq "the report's header fields" \
    "Sender Org|tlsrpt-admin@sender.test|${TODAY//-/}.ok.test@mail.sender.test|${TODAY}T00:00:00Z|${TODAY}T23:59:59Z" \
    "$(jq_py "$T/out/mail.sender.test!ok.test!$BEGIN!$((BEGIN + 86399)).json.gz" "'|'.join([r['organization-name'], r['contact-info'], r['report-id'], r['date-range']['start-datetime'], r['date-range']['end-datetime']])")"
check_eq "files: nothing recorded as sent" 0 "$(psql_q "SELECT count(*) FROM ringmail.tlsrpt_report")"

# ============================================================ 3. --send
openssl genpkey -algorithm ed25519 -out "$T/dkim.pem" 2>/dev/null
echo "v=DKIM1; k=ed25519; p=$(openssl pkey -in "$T/dkim.pem" -pubout -outform DER | tail -c 32 | base64 -w0)" \
    >"$T/dkim.txt"
DK=(--dkim-key "$T/dkim.pem" --dkim-selector rpt)
"$RM" tlsrpt "${R[@]}" --send --config "$T/rm.conf" --ca "$CERTS/ca.pem" "${DK[@]}" \
    >"$T/send1.out" 2>"$T/send1.err"
check_eq "send 1: exit 1 (wrong.test's endpoint fails)" 1 "$?"
check_eq "send 1: four mails arrived" 4 "$(wc -l <"$T/ai.jsonl" 2>/dev/null || echo 0)"
check_eq "send 1: one POST kept (ok.test's)" 1 "$(ls "$T/posts"/*.json 2>/dev/null | wc -l)"
check_grep "send 1: the failed endpoint said" \
    "^wrong\.test +https://localhost:$H_PORT/wrong +0 +[0-9]+  refused: HTTP 503$" "$T/send1.out"
check_grep "send 1: ok.test's mail said sent" \
    "^ok\.test +mailto:tlsrpt@reports\.test +[0-9]+ +0  sent: accepted: 250 " "$T/send1.out"
check_eq "send 1: recorded: 5 sent, 1 failed, one row per (day, domain, rua)" "failed 1|sent 5" \
    "$(psql_q "SELECT string_agg(outcome || ' ' || n, '|' ORDER BY outcome) FROM (SELECT outcome, count(*) n FROM ringmail.tlsrpt_report WHERE day = '$TODAY' GROUP BY 1) x")"
check_eq "send 1: the failure's detail and no sent_at" "refused: HTTP 503|true" \
    "$(psql_q "SELECT detail || '|' || (sent_at IS NULL) FROM ringmail.tlsrpt_report WHERE outcome = 'failed'")"
check_no_grep "send 1: signed: no warning about DKIM" "DKIM" "$T/send1.err"
check_eq "send 1: no files without --out" 0 "$(ls mail.sender.test* 2>/dev/null | wc -l)"

# The mail of ok.test: headers, and the attachment is the same report.
OK_EML=$(grep -l '^TLS-Report-Domain: ok.test' "$T/eml"/*.eml | head -1)
check "send 1: ok.test's mail is in the mailbox" test -n "$OK_EML"
cat >"$T/mail.py" <<'PY'
# mail.py EML FILE.json.gz: the headers that matter, and whether the
# application/tlsrpt+gzip attachment decodes to FILE's report.
import email, email.policy, gzip, json, sys
import dkim
raw = open(sys.argv[1], "rb").read()
rec = open(sys.argv[3], "rb").read().strip()
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    return rec if name.rstrip(".") == "rpt._domainkey.mail.sender.test" else None
print("dkim-verify=%s" % dkim.verify(raw, dnsfunc=dnsfunc))
m = email.message_from_bytes(raw, policy=email.policy.compat32)
print("type=%s report-type=%s" % (m.get_content_type(), m.get_param("report-type")))
for h in ("TLS-Required", "TLS-Report-Domain", "TLS-Report-Submitter", "Subject", "From", "To"):
    print("%s: %s" % (h, " ".join((m.get(h) or "").split())))
parts = [p for p in m.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
print("attachments=%d" % len(parts))
if parts:
    got = json.loads(gzip.decompress(parts[0].get_payload(decode=True)))
    want = json.load(gzip.open(sys.argv[2]))
    print("filename=%s" % parts[0].get_filename())
    print("same-report=%s" % (got == want))
PY
"$E2E_PY" "$T/mail.py" "$OK_EML" "$T/out/mail.sender.test!ok.test!$BEGIN!$((BEGIN + 86399)).json.gz" \
    "$T/dkim.txt" >"$T/mail.txt" 2>&1
check_grep "mail: DKIM-signed for the submitter (python3-dkim verifies it)" '^dkim-verify=True$' "$T/mail.txt"
check_grep "mail: multipart/report; report-type=tlsrpt" '^type=multipart/report report-type=tlsrpt$' "$T/mail.txt"
check_grep "mail: TLS-Required: No (RFC 8689)" '^TLS-Required: No$' "$T/mail.txt"
check_grep "mail: TLS-Report-Domain" '^TLS-Report-Domain: ok\.test$' "$T/mail.txt"
check_grep "mail: TLS-Report-Submitter" '^TLS-Report-Submitter: mail\.sender\.test$' "$T/mail.txt"
check_grep "mail: the Subject of RFC 8460 5.3" \
    "^Subject: Report Domain: ok\.test Submitter: mail\.sender\.test Report-ID: <${TODAY//-/}\.ok\.test@mail\.sender\.test>$" "$T/mail.txt"
check_grep "mail: From the contact, To the rua's address" '^To: tlsrpt@reports\.test$' "$T/mail.txt"
check_grep "mail: one application/tlsrpt+gzip attachment" '^attachments=1$' "$T/mail.txt"
check_grep "mail: its file name is the report's" "^filename=mail\.sender\.test!ok\.test!$BEGIN!$((BEGIN + 86399))\.json\.gz$" "$T/mail.txt"
check_grep "mail: the attachment decodes to the same report as the file" '^same-report=True$' "$T/mail.txt"
check_eq "mail: delivered over TLS, MAIL FROM the contact" "True tlsrpt-admin@sender.test" \
    "$("$E2E_PY" -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][0]; print(r['tls'], r['from'])" "$T/ai.jsonl")"
check_eq "mail: plain.test's percent-encoded rua (tlsrpt%40reports.test) reached the mailbox" 1 \
    "$(grep -l '^TLS-Report-Domain: plain.test' "$T/eml"/*.eml | wc -l)"
check_eq "https: POST with Content-Type application/tlsrpt+gzip to /ok, the same report" \
    "/ok application/tlsrpt+gzip True" \
    "$("$E2E_PY" -c "
import gzip, json, sys
m = json.load(open(sys.argv[1])); body = open(sys.argv[2], 'rb').read()
print(m['path'], m['content_type'], json.loads(gzip.decompress(body)) == json.load(gzip.open(sys.argv[3])))" \
        "$T/posts/1.json" "$T/posts/1.body" "$T/out/mail.sender.test!ok.test!$BEGIN!$((BEGIN + 86399)).json.gz" 2>&1)"

# A second run: the failed endpoint works now; only it is sent.
rm -f "$T/https.fail"
"$RM" tlsrpt "${R[@]}" --send --config "$T/rm.conf" --ca "$CERTS/ca.pem" \
    >"$T/send2.out" 2>"$T/send2.err"
check_eq "send 2: exit 0" 0 "$?"
check_eq "send 2: no new mail" 4 "$(wc -l <"$T/ai.jsonl")"
check_eq "send 2: the failed one retried: a POST to /wrong" "2 /wrong" \
    "$(ls "$T/posts"/*.json | wc -l) $(jget "$T/posts/2.json" path)"
check_grep "send 2: the sent ones said, not again" \
    "^ok\.test +mailto:tlsrpt@reports\.test +[0-9]+ +0  already sent at $TODAY [0-9:]+ UTC \(not again\)$" "$T/send2.out"
check_eq "send 2: all six recorded sent" "sent 6" \
    "$(psql_q "SELECT string_agg(outcome || ' ' || n, '|') FROM (SELECT outcome, count(*) n FROM ringmail.tlsrpt_report GROUP BY 1) x")"

# A third run sends nothing.
"$RM" tlsrpt "${R[@]}" --send --config "$T/rm.conf" --ca "$CERTS/ca.pem" >"$T/send3.out" 2>&1
check_eq "send 3: exit 0, nothing new" "0 4 2" "$? $(wc -l <"$T/ai.jsonl") $(ls "$T/posts"/*.json | wc -l)"
check_eq "send 3: every rua said already sent" 6 "$(grep -c 'already sent at' "$T/send3.out")"

# A row left without outcome (a crash while sending): not sent again on its own.
psql_q "UPDATE ringmail.tlsrpt_report SET outcome = NULL, sent_at = NULL WHERE domain = 'sts.test'" >/dev/null
"$RM" tlsrpt "${R[@]}" --send --config "$T/rm.conf" --ca "$CERTS/ca.pem" >"$T/send4.out" 2>&1
check_eq "unfinished: exit 1, nothing sent" "1 4" "$? $(wc -l <"$T/ai.jsonl")"
check_grep "unfinished: said, with the way out" \
    "^sts\.test +mailto:tlsrpt@reports\.test +1 +1  unfinished: a run started sending it at $TODAY [0-9:]+ UTC and recorded no outcome \(it may have arrived; --resend-unfinished sends it again\)$" \
    "$T/send4.out"
"$RM" tlsrpt "${R[@]}" --send --resend-unfinished --config "$T/rm.conf" --ca "$CERTS/ca.pem" \
    >"$T/send5.out" 2>&1
check_eq "--resend-unfinished: exit 0, sts.test's report sent again" "0 5" "$? $(wc -l <"$T/ai.jsonl")"
check_grep "without --dkim-key: the mailto: reports unsigned, said" \
    '^ringmail tlsrpt: warning: the mailto: reports are not DKIM-signed \(--dkim-key FILE --dkim-selector S\): RFC 8460 5\.3 has receivers ignore unsigned reports$' \
    "$T/send5.out"

# A report whose body went out with no reply (a server that cuts the
# connection inside DATA): ambiguous, left unfinished, never "failed".
DROP_PORT=$(free_port)
e2e_bg sink.drop "$RM" sink --listen "127.0.0.1:$DROP_PORT" --threads 1 --drop-pct 100 \
    --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key"
wait_port 127.0.0.1 "$DROP_PORT" 10 "$E2E_BG_PID"
sed "s/^server = 127.0.0.1:$AI_PORT\$/server = 127.0.0.1:$DROP_PORT/" "$T/rm.conf" >"$T/drop.conf"
psql_q "UPDATE ringmail.tlsrpt_report SET outcome = NULL, sent_at = NULL WHERE domain = 'sts.test'" >/dev/null
"$RM" tlsrpt "${R[@]}" --send --resend-unfinished --config "$T/drop.conf" "${DK[@]}" \
    >"$T/send6.out" 2>&1
check_eq "ambiguous: exit 1, nothing in the mailbox" "1 5" "$? $(wc -l <"$T/ai.jsonl")"
check_grep "ambiguous: said" "^sts\.test +mailto:tlsrpt@reports\.test +1 +1  ambiguous: " "$T/send6.out"
check_eq "ambiguous: the row keeps no outcome (unfinished), its detail says why" "t ambiguous" \
    "$(psql_q "SELECT outcome IS NULL, split_part(detail, ':', 1) FROM ringmail.tlsrpt_report WHERE domain = 'sts.test'" | tr '\t' ' ')"

# INSERTED ROWS for two more domains: a mailto: rua that is no address, an
# https: rua where nothing listens. Neither is claimed or sent; each says why.
psql_q "INSERT INTO ringmail.recipient (campaign_id, address, state) VALUES
    ($C, 'x1@badrua.test', 'sent'), ($C, 'x1@deadhttps.test', 'sent')" >/dev/null
ins x1@badrua.test mta-sts none NULL true "'192.0.2.30:25'" mx.badrua.test
ins x1@deadhttps.test mta-sts none NULL true "'192.0.2.31:25'" mx.deadhttps.test
"$RM" tlsrpt "${R[@]}" --send --config "$T/rm.conf" --ca "$CERTS/ca.pem" "${DK[@]}" \
    >"$T/send7.out" 2>&1
check_eq "bad ruas: exit 1" 1 "$?"
check_grep "bad ruas: a mailto: that is no address, said" \
    "^badrua\.test +mailto:nobody +1 +0  not sent: mailto:nobody: " "$T/send7.out"
check_grep "bad ruas: an https: endpoint that does not answer, said" \
    "^deadhttps\.test +https://localhost:$DEAD_PORT/x +1 +0  not sent: .+" "$T/send7.out"
check_eq "bad ruas: the bad address is never claimed, the dead endpoint recorded failed" \
    "deadhttps.test failed" \
    "$(psql_q "SELECT string_agg(domain || ' ' || outcome, ',') FROM ringmail.tlsrpt_report WHERE domain IN ('badrua.test', 'deadhttps.test')")"

# ============================================================ 4. a resolver that fails
"$RM" tlsrpt --db "$PG_URL" --day "$TODAY" --resolver "127.0.0.1:$SF_PORT" --submitter s.test \
    --out "$T/out" >"$T/sf.out" 2>&1
check_eq "servfail: exit 1" 1 "$?"
check_grep "servfail: the lookup failed, said as such" \
    "^ok\.test: no report: the lookup of _smtp\._tls\.ok\.test failed \(.*\): not known whether it publishes a TLSRPT record$" "$T/sf.out"
check_no_grep "servfail: never 'no TLSRPTv1 record'" "no TLSRPTv1 record" "$T/sf.out"

# ============================================================ 5. error texts
"$RM" tlsrpt "${R[@]}" --out "$T/no/such/dir" >"$T/noout.out" 2>"$T/noout.err"
check_eq "--out that cannot be written: exit 1" 1 "$?"
check_grep "--out that cannot be written: said with the path" \
    "^ringmail tlsrpt: --out $T/no/such/dir: " "$T/noout.err"
check_grep "--out that cannot be written: the table says not written" \
    "^ok\.test +mailto:tlsrpt@reports\.test +[0-9]+ +0  not written$" "$T/noout.out"
bad() { # bad NAME ERE ARGS...: exit 2, ERE on stderr (one line), nothing on stdout
    local name=$1 re=$2
    shift 2
    "$RM" tlsrpt "$@" >"$T/bad.out" 2>"$T/bad.err"
    check_eq "$name: exit 2, nothing on stdout" "2 0" "$? $(wc -c <"$T/bad.out")"
    check_grep "$name: says why" "$re" "$T/bad.err"
}
bad "no --db" '^ringmail tlsrpt: --db URL is required$' --day "$TODAY"
bad "no --day" '^ringmail tlsrpt: --day YYYY-MM-DD is required: the UTC day to report$' --db "$PG_URL"
bad "--day 2026-13-01" "^ringmail tlsrpt: --day '2026-13-01' is not a date \(YYYY-MM-DD, UTC\)$" \
    --db "$PG_URL" --day 2026-13-01 --submitter s.test
bad "--day 2026-02-30" "^ringmail tlsrpt: --day '2026-02-30' is not a date" --db "$PG_URL" --day 2026-02-30 --submitter s.test
bad "--day yesterday" "^ringmail tlsrpt: --day 'yesterday' is not a date" --db "$PG_URL" --day yesterday --submitter s.test
bad "a day not begun" "^ringmail tlsrpt: --day 2099-01-01 has not begun yet \(UTC\)$" \
    --db "$PG_URL" --day 2099-01-01 --submitter s.test
bad "--submitter not a domain" "^ringmail tlsrpt: --submitter 'nodots' is not a domain name" \
    --db "$PG_URL" --day "$TODAY" --submitter nodots
bad "--contact not an address" "^ringmail tlsrpt: --contact nobody: " --db "$PG_URL" --day "$TODAY" --contact nobody
bad "--resend-unfinished without --send" '^ringmail tlsrpt: --resend-unfinished goes with --send$' \
    --db "$PG_URL" --day "$TODAY" --submitter s.test --resend-unfinished
bad "--json is send's" '^ringmail tlsrpt: --json is not an option of tlsrpt$' \
    --db "$PG_URL" --day "$TODAY" --submitter s.test --json
bad "--sub (abbreviation)" "unknown option '--sub'.*did you mean --submitter" --db "$PG_URL" --day "$TODAY" --sub s.test
bad "a stray argument" "^ringmail tlsrpt: unexpected argument 'extra'$" --db "$PG_URL" --day "$TODAY" extra
bad "--dkim-key without a selector" '^ringmail tlsrpt: --dkim-key needs --dkim-selector S$' \
    --db "$PG_URL" --day "$TODAY" --submitter s.test --dkim-key "$T/dkim.pem"
bad "--dkim-selector without a key" '^ringmail tlsrpt: --dkim-selector and --dkim-domain go with --dkim-key FILE$' \
    --db "$PG_URL" --day "$TODAY" --submitter s.test --dkim-selector rpt
bad "--dkim-key not a key" "^ringmail tlsrpt: --dkim-key $T/rm.conf: " \
    --db "$PG_URL" --day "$TODAY" --submitter s.test --dkim-key "$T/rm.conf" --dkim-selector rpt
bad "--relay-user without --relay" '^ringmail tlsrpt: --relay-\* options need --relay HOST:PORT$' \
    --db "$PG_URL" --day "$TODAY" --submitter s.test --relay-user u
bad "a config with an error" "^ringmail tlsrpt: $T/schema.json:1: " \
    --db "$PG_URL" --day "$TODAY" --submitter s.test --send --config "$T/schema.json"
bad "--https-timeout-ms 2s" "^ringmail tlsrpt: bad value for --https-timeout-ms: '2s' \(want 1\.\.600000\)$" \
    --db "$PG_URL" --day "$TODAY" --https-timeout-ms 2s
psql_q "CREATE DATABASE fresh" >/dev/null
bad "a database not migrated" 'run `ringmail db migrate --db .*` first' \
    --db "${PG_URL/dbname=postgres/dbname=fresh}" --day "$TODAY" --submitter s.test
bad "no database" '^ringmail tlsrpt: ' --db "host=$T/nothing port=1 dbname=x" --day "$TODAY" --submitter s.test
"$RM" tlsrpt --help >"$T/help.out" 2>&1
check_eq "--help: exit 0" 0 "$?"
check_grep "--help: the usage" '^usage: ringmail tlsrpt --db URL --day YYYY-MM-DD' "$T/help.out"
"$RM" help | grep -q '^  tlsrpt ' >/dev/null
check_eq "ringmail help lists tlsrpt" 0 "$?"
e2e_finish
