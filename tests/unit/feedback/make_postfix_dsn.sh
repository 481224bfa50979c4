#!/usr/bin/env bash
# make_postfix_dsn.sh OUT: have a real, private Postfix write a DSN, as a
# receiving MX that accepted a message and then could not deliver it.
#
# Postfix takes a message from b-TOKEN@bounces.sender.test to
# nobody@example.test over SMTP, relays it to a server that refuses the
# recipient (550 5.1.1), and delivers its bounce to b-TOKEN@... at a
# second server that saves it: that saved message is OUT, byte for byte
# as Postfix's bounce(8) wrote it (Received: and Return-Path aside, which
# the capturing server does not add). Run as root, from the repository.
set -eu
OUT=$(realpath -m "$1")
cd "$(dirname "$0")/../../.."
. tests/e2e/lib.sh
e2e_tmpdir
make_certs "$E2E_TMP/certs"
PF=$(free_port) REFUSE=$(free_port) CAPTURE=$(free_port)
cat >"$E2E_TMP/servers.py" <<PY
import asyncio, sys
from aiosmtpd.controller import Controller
class Refuse:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual mailbox table" % address
class Capture:
    async def handle_DATA(self, server, session, envelope):
        open("$OUT", "wb").write(envelope.original_content)
        return "250 2.0.0 Ok: saved"
a = Controller(Refuse(), hostname="127.0.0.1", port=$REFUSE, server_hostname="mx.example.test"); a.start()
b = Controller(Capture(), hostname="127.0.0.1", port=$CAPTURE, server_hostname="in.sender.test"); b.start()
print("up", flush=True)
asyncio.get_event_loop().run_forever()
PY
"$E2E_PY" "$E2E_TMP/servers.py" >"$E2E_TMP/servers.log" 2>&1 &
SRV=$!
e2e_cleanup "kill $SRV"
wait_port 127.0.0.1 "$REFUSE" 10
wait_port 127.0.0.1 "$CAPTURE" 10
start_postfix "$E2E_TMP/pf" "$PF" "$E2E_TMP/certs/server.pem" "$E2E_TMP/certs/server.key" \
    "myhostname=mx1.relay.test" \
    "transport_maps=inline:{example.test=smtp:[127.0.0.1]:$REFUSE, bounces.sender.test=smtp:[127.0.0.1]:$CAPTURE}" \
    "smtp_tls_security_level=none"
echo "smtp      unix  -       -      n      -      -       smtp" >>"$E2E_TMP/pf/conf/master.cf"
touch -d '-1 minute' "$E2E_TMP/pf/conf/master.cf"
postfix -c "$E2E_TMP/pf/conf" reload >/dev/null 2>&1
sleep 2
rm -f "$OUT"
swaks --server 127.0.0.1:$PF --from b-mfrggzdfmztwq2lknnwg23tpobyxe@bounces.sender.test \
    --to nobody@example.test --helo sender.test \
    --header "Subject: Your December offers" \
    --header "Message-Id: <20261206.1.campaign-7@sender.test>" --header "From: Offers <offers@sender.test>" --header "X-Mailer: ringmail" \
    --header "List-Unsubscribe: <https://sender.test/u/mfrggzdfmztwq2lknnwg23tpobyxe>, <mailto:u-mfrggzdfmztwq2lknnwg23tpobyxe@bounces.sender.test>" \
    --body "Hello, here are this month's offers." >/dev/null
for _ in $(seq 60); do [ -s "$OUT" ] && break; sleep 0.5; done
[ -s "$OUT" ] || { cat "$E2E_TMP/pf/maillog" >&2; exit 1; }
echo "wrote $OUT"
