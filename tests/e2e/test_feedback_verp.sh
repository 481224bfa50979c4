#!/usr/bin/env bash
# [feedback]: the return path names the recipient (VERP), and campaigns get
# the one-click unsubscribe headers. python3-aiosmtpd is the receiver: it
# records each transaction's MAIL FROM and RCPTs, and keeps each message.
#   1. list mode (--message, so the pool may batch RCPTs): every MAIL FROM
#      is b-TOKEN@return_path, one recipient per transaction, each token
#      verified here with the secret (HMAC) and naming campaign 0 and the
#      recipient's line in --recipients; without [feedback], unchanged
#   2. campaign mode (PostgreSQL): the token names the campaign and the
#      recipient's row; List-Unsubscribe <https://.../u/TOKEN>,
#      <mailto:u-TOKEN@return_path> and One-Click; without [feedback],
#      MAIL FROM is the campaign's and no List-Unsubscribe
#   3. a secret_file missing, short or readable by others: send refuses
#      to start (exit 2) and says why, at the config line
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup

AI_PORT=$(free_port)
AI=$E2E_TMP/ai.jsonl
EML=$E2E_TMP/eml
start_aiosmtpd "$AI_PORT" "$CERTS/server.pem" "$CERTS/server.key" --starttls-optional \
    --count-file "$AI" --save-dir "$EML" || { check "aiosmtpd starts" false; e2e_finish; exit 1; }

SECRET=$E2E_TMP/feedback.secret
head -c 48 /dev/urandom >"$SECRET"
chmod 600 "$SECRET"

cat >"$E2E_TMP/plain.conf" <<CONF
[global]
tls = none
retry = 300ms
max_age = 20s
[isp x]
domains = x.test
max_connections = 2
max_rcpts_per_msg = 50
[route x.test]
server = 127.0.0.1:$AI_PORT
CONF
cp "$E2E_TMP/plain.conf" "$E2E_TMP/fb.conf"
cat >>"$E2E_TMP/fb.conf" <<CONF
[feedback]
return_path = bounces.sender.test
secret_file = $SECRET
unsubscribe_url = https://unsub.sender.test/u/
CONF

# verp_check PREFIX CAMPAIGN MAP: the transactions to PREFIX* recipients.
# MAP has "ADDRESS ID" lines: the id each recipient's token must name.
# Prints what is wrong, one line each (nothing: all good).
verp_check() {
    "$E2E_PY" - "$AI" "$EML" "$SECRET" "$1" "$2" "$3" <<'PY'
import base64, hmac, hashlib, json, os, re, sys
ai, eml, secret_path, prefix, campaign, map_path = sys.argv[1:]
key = open(secret_path, "rb").read()
want = dict(l.split() for l in open(map_path) if l.strip())
bad = []

def varints(b):
    out, x, shift = [], 0, 0
    for c in b:
        x |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            out.append(x)
            x, shift = 0, 0
    return out

def token(kind, text):
    """(campaign, recipient) of a verified token, else None."""
    if not re.fullmatch(r"[a-z2-7]{23,52}", text):
        return None
    raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    payload, mac = raw[:-12], raw[-12:]
    if hmac.new(key, kind.encode() + payload, hashlib.sha256).digest()[:12] != mac:
        return None
    ids = varints(payload)
    return tuple(ids) if len(ids) == 2 else None

froms, seen = set(), {}
for line in open(ai):
    r = json.loads(line)
    if not r["rcpts"][0].startswith(prefix):
        continue
    if len(r["rcpts"]) != 1:
        bad.append("%d recipients in one transaction: %s" % (len(r["rcpts"]), r["rcpts"][:3]))
    m = re.fullmatch(r"b-([a-z2-7]+)@bounces\.sender\.test", r["from"])
    ids = token("b", m.group(1)) if m else None
    rcpt = r["rcpts"][0]
    if ids != (int(campaign), int(want.get(rcpt, -1))):
        bad.append("MAIL FROM %s for %s: names %s" % (r["from"], rcpt, ids))
    froms.add(r["from"])
    seen[rcpt] = seen.get(rcpt, 0) + 1
    if int(campaign):
        body = open(os.path.join(eml, "%d.eml" % r["n"]), "rb").read().decode()
        h = re.search(r"\nList-Unsubscribe: <https://unsub\.sender\.test/u/([a-z2-7]+)>,\r\n"
                      r" <mailto:u-([a-z2-7]+)@bounces\.sender\.test>\r\n"
                      r"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", body)
        if not h or h.group(1) != h.group(2) or token("u", h.group(1)) != ids:
            bad.append("List-Unsubscribe of %s: %s" % (rcpt, h and h.group(0)))
        mid = re.search(r"\nMessage-ID: <u-([a-z2-7]+)\.[0-9a-f]{20}\.[0-9]+@sender\.test>\r\n", body)
        if not mid or token("u", mid.group(1)) != ids:
            bad.append("Message-ID of %s does not start with its u- token: %s" % (rcpt, mid))
if seen != {a: 1 for a in want}:
    bad.append("recipients seen %s, want each of %d once" % (sorted(seen.items())[:3], len(want)))
if len(froms) != len(want):
    bad.append("%d distinct MAIL FROM for %d recipients" % (len(froms), len(want)))
print("\n".join(bad[:10]))
PY
}

# plain_check PREFIX FROM: MAIL FROM of PREFIX* transactions, as "FROM count
# transactions count recipients", and whether any message has List-Unsubscribe.
plain_check() {
    "$E2E_PY" - "$AI" "$EML" "$1" "$2" <<'PY'
import json, os, sys
ai, eml, prefix, sender = sys.argv[1:]
rs = [r for r in map(json.loads, open(ai)) if r["rcpts"][0].startswith(prefix)]
other = [r["from"] for r in rs if r["from"] != sender]
unsub = sum(b"List-Unsubscribe" in open(os.path.join(eml, "%d.eml" % r["n"]), "rb").read()
            for r in rs)
print(len(other), len(rs), sum(len(r["rcpts"]) for r in rs), unsub)
PY
}

# ============================================================ 1. list mode
# Comments, blank lines and a duplicate: the token names the line, not the index.
LIST=$E2E_TMP/rcpts.txt
MAP=$E2E_TMP/list.map
{
    echo "# recipients"
    for i in $(seq 1 20); do
        echo "l$i@x.test"
        [ $((i % 3)) = 0 ] && echo ""
        [ "$i" = 7 ] && echo "l7@x.test"
    done
} >"$LIST"
grep -n '^l' "$LIST" | awk -F: '!seen[$2]++ {print $2, $1}' >"$MAP"
printf 'From: <news@sender.test>\r\nSubject: list\r\n\r\nHello.\r\n' >"$E2E_TMP/msg.eml"
timeout 60 "$RM" send --recipients "$LIST" --message "$E2E_TMP/msg.eml" --config "$E2E_TMP/fb.conf" \
    --window 50 --json >"$E2E_TMP/l1.json" 2>"$E2E_TMP/l1.err"
check_eq "list: exit 0" 0 "$?"
check_eq "list: 20 accepted" 20 "$(jget "$E2E_TMP/l1.json" accepted)"
check_eq "list: every MAIL FROM is b-TOKEN@return_path naming campaign 0 and its line, one RCPT each, unique" \
    "" "$(verp_check l 0 "$MAP")"
check_eq "list: the map names lines, not positions (l7 on line 10)" "l7@x.test 10" "$(grep '^l7@' "$MAP")"

sed 's/^l/p/' "$LIST" >"$E2E_TMP/plain.txt"
timeout 60 "$RM" send --recipients "$E2E_TMP/plain.txt" --message "$E2E_TMP/msg.eml" \
    --config "$E2E_TMP/plain.conf" --window 50 --json >"$E2E_TMP/l0.json" 2>"$E2E_TMP/l0.err"
check_eq "list without [feedback]: exit 0" 0 "$?"
read -r OTHER TXNS RCPTS UNSUB <<<"$(plain_check p send@ringmail.test)"
check_eq "list without [feedback]: MAIL FROM is --from's default" 0 "$OTHER"
check_eq "list without [feedback]: 20 recipients" 20 "$RCPTS"
check "list without [feedback]: RCPTs still batched ($TXNS transactions)" test "$TXNS" -lt 20

# ============================================================ 2. campaign mode
start_postgres "$E2E_TMP/pg" || { check "postgres starts" false; e2e_finish; exit 1; }
"$RM" db migrate --db "$PG_URL" >/dev/null
C1=$(new_campaign c 12 x.test)
psql_q "SELECT address, id FROM ringmail.recipient WHERE campaign_id = $C1" | tr '\t' ' ' >"$E2E_TMP/c.map"
timeout 60 "$RM" send --db "$PG_URL" --campaign "$C1" --config "$E2E_TMP/fb.conf" --node n1 \
    --journal "$E2E_TMP/n1.journal" --json >"$E2E_TMP/c1.json" 2>"$E2E_TMP/c1.err"
check_eq "campaign: exit 0" 0 "$?"
check_eq "campaign: 12 sent" 12 "$(count_state "$C1" sent)"
check_eq "campaign: MAIL FROM names campaign and row, List-Unsubscribe URL and mailto name them too" \
    "" "$(verp_check c "$C1" "$E2E_TMP/c.map")"

C0=$(new_campaign q 5 x.test)
timeout 60 "$RM" send --db "$PG_URL" --campaign "$C0" --config "$E2E_TMP/plain.conf" --node n0 \
    --journal "$E2E_TMP/n0.journal" --json >"$E2E_TMP/c0.json" 2>"$E2E_TMP/c0.err"
check_eq "campaign without [feedback]: exit 0" 0 "$?"
read -r OTHER TXNS RCPTS UNSUB <<<"$(plain_check q news@sender.test)"
check_eq "campaign without [feedback]: MAIL FROM is the campaign's" 0 "$OTHER"
check_eq "campaign without [feedback]: 5 recipients" 5 "$RCPTS"
check_eq "campaign without [feedback]: no List-Unsubscribe" 0 "$UNSUB"

# ============================================================ 3. the secret refused
# refused NAME SECRET_FILE TEXT: send exits 2 and prints TEXT.
refused() {
    sed "s|^secret_file = .*|secret_file = $2|" "$E2E_TMP/fb.conf" >"$E2E_TMP/bad.conf"
    timeout 30 "$RM" send --recipients "$LIST" --config "$E2E_TMP/bad.conf" \
        >/dev/null 2>"$E2E_TMP/bad.err"
    check_eq "secret $1: exit 2" 2 "$?"
    check_grep "secret $1: says why" "$3" "$E2E_TMP/bad.err"
}
LINE=$(grep -n '^secret_file' "$E2E_TMP/fb.conf" | cut -d: -f1)
BEFORE=$(wc -l <"$AI")
refused missing "$E2E_TMP/none.secret" \
    "^ringmail send: $E2E_TMP/bad.conf:$LINE: feedback secret_file $E2E_TMP/none.secret: cannot read: No such file or directory$"
head -c 31 /dev/urandom >"$E2E_TMP/short.secret"
chmod 600 "$E2E_TMP/short.secret"
refused short "$E2E_TMP/short.secret" \
    "^ringmail send: $E2E_TMP/bad.conf:$LINE: feedback secret_file $E2E_TMP/short.secret is 31 bytes: at least 32 are needed$"
cp "$SECRET" "$E2E_TMP/open.secret"
chmod 644 "$E2E_TMP/open.secret"
refused "readable by others" "$E2E_TMP/open.secret" \
    "^ringmail send: $E2E_TMP/bad.conf:$LINE: feedback secret_file $E2E_TMP/open.secret is readable or writable by group or others \(mode 0644\): chmod 600 it$"
check_eq "nothing was sent by the refused runs" "$BEFORE" "$(wc -l <"$AI")"

stop_aiosmtpd
e2e_finish
