#!/usr/bin/env bash
# Rendered and DKIM-signed messages checked by independent implementations:
# keys made by openssl (RSA-2048, Ed25519) and their TXT records derived by
# openssl, signatures verified by python3-dkim (rsa-sha256, ed25519-sha256),
# a one-byte body change or a changed signed header failing, and every
# message decoded by python3's email package (Chinese subject, names and
# bodies intact, CRLF lines within limits). A merge value with CR LF bound
# for a header is refused. The driver is the test_dkim unit binary with
# RINGMAIL_RENDER_TOOL set (render a JSON spec to stdout, or print the
# key's DNS record).
set -u
. "$(dirname "$0")/lib.sh"
e2e_tmpdir
BUILD=${RINGMAIL_BUILD:-build}
TOOL=$BUILD/tests/test_dkim
T=$E2E_TMP

e2e_require openssl || { e2e_finish; exit 1; }
check "python3-dkim and python3-nacl are installed (tools/install-deps.sh)" \
    "$E2E_PY" -c 'import dkim, nacl.signing'
check "the render driver is built ($TOOL)" test -x "$TOOL"

# ---------------------------------------------------------------- keys, DNS records by openssl

check "openssl makes an RSA-2048 key" \
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/rsa.pem"
check "openssl makes an Ed25519 key" openssl genpkey -algorithm ED25519 -out "$T/ed.pem"
RSA_P=$(openssl pkey -in "$T/rsa.pem" -pubout -outform DER | base64 -w0)
# An Ed25519 SubjectPublicKeyInfo ends with the 32-byte raw key (RFC 8463: p= is that key).
ED_P=$(openssl pkey -in "$T/ed.pem" -pubout -outform DER | tail -c 32 | base64 -w0)
echo "v=DKIM1; k=rsa; p=$RSA_P" >"$T/rsa.txt"
echo "v=DKIM1; k=ed25519; p=$ED_P" >"$T/ed.txt"

# ---------------------------------------------------------------- specs

# One JSON spec per message and key; "expect" is what python must decode.
"$E2E_PY" - "$T" <<'PY'
import json, sys
d = sys.argv[1]
messages = {
    "text": {
        "from": "news@acme.example", "from_name": "Acme News",
        "to_name": "{{first_name}} {{last_name}}",
        "subject": "Hello {{first_name|there}}, your weekly digest",
        "text": "Hi {{first_name|there}},\n\nYour code: {{code}}.\n  Indented line with trailing spaces   \n\n\n",
        "list_unsubscribe": "https://acme.example/u/{{id}}", "feedback_id": "c1:acme:digest",
        "rcpt": "ann@example.org", "vars": {"first_name": "Ann", "last_name": "Lee", "code": "X-1", "id": 7},
        "expect": {"subject": "Hello Ann, your weekly digest", "from": "Acme News <news@acme.example>",
                   "to": "Ann Lee <ann@example.org>",
                   "parts": [["text/plain", "7bit", "Hi Ann,\n\nYour code: X-1.\n  Indented line with trailing spaces   \n\n\n"]],
                   "unsubscribe": "<https://acme.example/u/7>"},
    },
    "html": {
        "from": "news@acme.example", "subject": "Deals for {{first_name}}",
        "html": "<p>Hi <b>{{first_name}}</b>, caf\u00e9 d\u00e9j\u00e0 vu: {{offer}}</p>\n",
        "rcpt": "tom@example.org", "vars": {"first_name": "Tom & \"Jerry\"", "offer": "<20% off>"},
        "expect": {"subject": "Deals for Tom & \"Jerry\"", "from": "news@acme.example", "to": "tom@example.org",
                   "parts": [["text/html", "quoted-printable",
                              "<p>Hi <b>Tom &amp; &quot;Jerry&quot;</b>, caf\u00e9 d\u00e9j\u00e0 vu: &lt;20% off&gt;</p>\n"]]},
    },
    "chinese": {
        "from": "news@acme.example", "from_name": "阿克米 新闻中心",
        "to_name": "{{name}}",
        "subject": "{{name}}，您好：本周精选商品全场八折，会员再享专属优惠券，详情请查看邮件正文与附带说明",
        "text": "{{name}}，您好！\n感谢您订阅我们的新闻。本周精选商品全场八折，会员再享专属优惠券。\n",
        "html": "<html><body><p>{{name}}，您好！</p><p>感谢您订阅我们的新闻。</p></body></html>\n",
        "list_unsubscribe": "https://acme.example/u/{{id}}", "feedback_id": "c2:acme:zh",
        "rcpt": "zhang.wei@example.cn", "vars": {"name": "张伟", "id": 8},
        "expect": {"subject": "张伟，您好：本周精选商品全场八折，会员再享专属优惠券，详情请查看邮件正文与附带说明",
                   "from": "阿克米 新闻中心 <news@acme.example>", "to": "张伟 <zhang.wei@example.cn>",
                   "parts": [["text/plain", "base64", "张伟，您好！\n感谢您订阅我们的新闻。本周精选商品全场八折，会员再享专属优惠券。\n"],
                             ["text/html", "base64", "<html><body><p>张伟，您好！</p><p>感谢您订阅我们的新闻。</p></body></html>\n"]],
                   "unsubscribe": "<https://acme.example/u/8>"},
    },
    "mixed": {
        "from": "offers@acme.example", "from_name": "Acme Offers",
        "to_name": "{{name|Customer}}",
        "subject": "Last chance {{name|}}: 最后机会 – long subject that keeps going past the fold at seventy-eight columns",
        "text": "Dear {{name|Customer}},\n" + "This line is deliberately long and mostly ASCII so quoted-printable must wrap it with soft breaks, naïvely. " * 3 + "\n",
        "html": "<p>Dear {{name|Customer}}</p>",
        "rcpt": "x@example.net", "vars": {},
        "expect": {"subject": "Last chance : 最后机会 – long subject that keeps going past the fold at seventy-eight columns",
                   "from": "Acme Offers <offers@acme.example>", "to": "Customer <x@example.net>",
                   "parts": [["text/plain", "quoted-printable", "Dear Customer,\n" + "This line is deliberately long and mostly ASCII so quoted-printable must wrap it with soft breaks, naïvely. " * 3 + "\n"],
                             ["text/html", "7bit", "<p>Dear Customer</p>\n"]]},
    },
}
for key, selector in (("rsa", "rsa2048"), ("ed", "ed1")):
    for name, m in messages.items():
        spec = dict(m)
        spec["fixed_date"] = 0
        spec["dkim"] = {"domain": "acme.example", "selector": selector, "key_file": f"{d}/{key}.pem"}
        json.dump(spec, open(f"{d}/{key}-{name}.json", "w"), ensure_ascii=False)
bad = dict(messages["text"])
bad["vars"] = dict(bad["vars"], first_name="Ann\r\nBcc: victim@evil.example")
json.dump(bad, open(f"{d}/inject.json", "w"))
PY

# ---------------------------------------------------------------- the checker

cat >"$T/check.py" <<'PY'
import email, email.policy, re, sys
import dkim

def record_for(path):
    rec = open(path, "rb").read().strip()
    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        return rec if name.rstrip(".") == SELECTOR + "._domainkey.acme.example" else None
    return dnsfunc

mode, msgfile = sys.argv[1], sys.argv[2]
msg = open(msgfile, "rb").read()
if mode in ("verify", "tamper-body", "tamper-header", "wrong-key"):
    SELECTOR, recfile = sys.argv[3], sys.argv[4]
    if mode == "tamper-body":
        head, body = msg.split(b"\r\n\r\n", 1)
        i = next(i for i, c in enumerate(body) if chr(c).isalnum())
        body = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:]
        msg = head + b"\r\n\r\n" + body
    elif mode == "tamper-header":
        msg = msg.replace(b"\r\nMessage-ID: <", b"\r\nMessage-ID: <x", 1)
    ok = dkim.verify(msg, dnsfunc=record_for(recfile))
    want = mode == "verify"
    print("dkim.verify:", ok)
    sys.exit(0 if ok == want else 1)
if mode == "algorithm":
    m = re.search(rb"a=([a-z0-9-]+);", msg)
    print(m.group(1).decode() if m else "none")
    sys.exit(0)
if mode == "lines":
    head = msg.split(b"\r\n\r\n", 1)[0]
    bad = [l for l in msg.split(b"\r\n") if len(l) > 998 or b"\n" in l or b"\r" in l]
    long_head = [l for l in head.split(b"\r\n") if len(l) > 78]
    print("bad lines:", bad[:3], "header lines over 78:", long_head[:3])
    sys.exit(0 if msg.endswith(b"\r\n") and not bad and not long_head else 1)
if mode == "decode":
    import json
    want = json.load(open(sys.argv[3]))["expect"]
    m = email.message_from_bytes(msg, policy=email.policy.default)
    got = {"subject": str(m["Subject"]), "from": str(m["From"]), "to": str(m["To"])}
    errors = [f"{k}: {got[k]!r} != {want[k]!r}" for k in ("subject", "from", "to") if got[k] != want[k]]
    if "unsubscribe" in want:
        if m["List-Unsubscribe"] != want["unsubscribe"] or m["List-Unsubscribe-Post"] != "List-Unsubscribe=One-Click":
            errors.append("List-Unsubscribe headers")
    if not re.fullmatch(r"<[0-9a-f]{20}\.[0-9]+@acme\.example>", str(m["Message-ID"])):
        errors.append(f"Message-ID {m['Message-ID']}")
    if m["Date"].datetime is None:
        errors.append("Date")
    parts = [p for p in m.walk() if not p.is_multipart()]
    if len(want["parts"]) == 2 and m.get_content_type() != "multipart/alternative":
        errors.append("not multipart/alternative")
    if len(parts) != len(want["parts"]):
        errors.append(f"{len(parts)} parts")
    for p, (ctype, cte, text) in zip(parts, want["parts"]):
        content = p.get_content().replace("\r\n", "\n")
        if p.get_content_type() != ctype or p["Content-Transfer-Encoding"] != cte:
            errors.append(f"{p.get_content_type()} {p['Content-Transfer-Encoding']} != {ctype} {cte}")
        if p.get_content_charset() != "utf-8":
            errors.append("charset")
        # A multipart part's last line end belongs to the boundary.
        if content.rstrip("\n") != text.rstrip("\n") or (len(parts) == 1 and content != text):
            errors.append(f"{ctype} body {content!r} != {text!r}")
    print("\n".join(errors))
    sys.exit(1 if errors else 0)
sys.exit(2)
PY

# ---------------------------------------------------------------- render, sign, verify

for key in rsa ed; do
    case $key in rsa) sel=rsa2048 alg=rsa-sha256 ;; ed) sel=ed1 alg=ed25519-sha256 ;; esac
    check_eq "$key: the signer's DNS record equals the one openssl derives" \
        "$(cat "$T/$key.txt")" "$(RINGMAIL_RENDER_TOOL=dns "$TOOL" "$T/$key-text.json" 2>&1)"
    for name in text html chinese mixed; do
        m=$T/$key-$name.eml
        RINGMAIL_RENDER_TOOL=render "$TOOL" "$T/$key-$name.json" >"$m" 2>"$m.err"
        if ! check_eq "$key/$name: rendered and signed" 0 "$?"; then
            sed 's/^/#   /' "$m.err"
            continue
        fi
        check_eq "$key/$name: signed with $alg" "$alg" "$("$E2E_PY" "$T/check.py" algorithm "$m")"
        check "$key/$name: python3-dkim verifies the signature" \
            "$E2E_PY" "$T/check.py" verify "$m" "$sel" "$T/$key.txt"
        check "$key/$name: one byte of the body changed fails verification" \
            "$E2E_PY" "$T/check.py" tamper-body "$m" "$sel" "$T/$key.txt"
        check "$key/$name: a changed signed header fails verification" \
            "$E2E_PY" "$T/check.py" tamper-header "$m" "$sel" "$T/$key.txt"
        check "$key/$name: python3 email decodes subject, names and bodies intact" \
            "$E2E_PY" "$T/check.py" decode "$m" "$T/$key-$name.json"
        check "$key/$name: CRLF lines, header lines <= 78, all <= 998" \
            "$E2E_PY" "$T/check.py" lines "$m"
    done
done
check "another key's record does not verify" \
    "$E2E_PY" "$T/check.py" wrong-key "$T/ed-text.eml" ed1 "$T/rsa.txt"

RINGMAIL_RENDER_TOOL=render "$TOOL" "$T/inject.json" >"$T/inject.eml" 2>"$T/inject.err"
check_eq "CR LF in a merge value bound for Subject: refused" 1 "$?"
check_eq "nothing written for the refused recipient" 0 "$(wc -c <"$T/inject.eml")"
check_grep "the reason names the field and the injection" \
    '(To|Subject): merge field first_name contains CR or LF \(header injection refused\)' "$T/inject.err"

e2e_finish
