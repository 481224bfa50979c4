#!/usr/bin/env python3
"""inbound_load.py - DSNs into `ringmail inbound`, as reporting MTAs send them
(bench/inbound.sh).

    inbound_load.py --port P --secret F --campaign C --ids FILE [--conns N]
                    [--domain bounces.sender.test]

One RFC 3464 report (Postfix's layout, 5.1.1 bad mailbox) per recipient id
in FILE (one per line), each to b-TOKEN@DOMAIN from the null sender, the
token made as campaign/feedback.h makes it. N connections (default 50)
share the messages; each connection, like an MTA, sends MAIL RCPT DATA in
one write (PIPELINING), waits for 354, sends the content and waits for the
final reply before its next message. Prints one JSON object: sent, ok
(250), failed (anything else), wall_s (first connection to last reply).
"""
import argparse
import asyncio
import json
import os
import sys
import time

# The VERP token as campaign/feedback.c makes it: one Python copy, the tests'.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from feedback_mail import token  # noqa: E402

DSN = """Return-Path: <>\r
From: MAILER-DAEMON@mx.receiver.test (Mail Delivery System)\r
To: {rcpt}\r
Subject: Undelivered Mail Returned to Sender\r
Auto-Submitted: auto-replied\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status;\r
 boundary="B{n}/mx.receiver.test"\r
Message-Id: <{n}.bench@mx.receiver.test>\r
\r
--B{n}/mx.receiver.test\r
Content-Description: Notification\r
Content-Type: text/plain; charset=us-ascii\r
\r
This is the mail system at host mx.receiver.test.\r
\r
I'm sorry to have to inform you that your message could not\r
be delivered to one or more recipients.\r
\r
<{addr}>: host mx.x.test[127.0.0.1] said: 550 5.1.1 <{addr}>:\r
    Recipient address rejected: User unknown (in reply to RCPT TO command)\r
\r
--B{n}/mx.receiver.test\r
Content-Description: Delivery report\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.receiver.test\r
Arrival-Date: Sun,  6 Dec 2026 10:00:00 +0000 (UTC)\r
\r
Final-Recipient: rfc822; {addr}\r
Original-Recipient: rfc822;{addr}\r
Action: failed\r
Status: 5.1.1\r
Remote-MTA: dns; mx.x.test\r
Diagnostic-Code: smtp; 550 5.1.1 <{addr}>: Recipient address rejected: User unknown\r
\r
--B{n}/mx.receiver.test\r
Content-Description: Undelivered Message Headers\r
Content-Type: text/rfc822-headers\r
\r
Return-Path: <{rcpt}>\r
From: News <news@sender.test>\r
To: <{addr}>\r
Subject: Hello\r
Message-ID: <{n}.campaign@sender.test>\r
\r
--B{n}/mx.receiver.test--\r
"""


async def reply(reader):
    """one (multiline) reply's code"""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line[:3].decode()


async def client(port, queue, stats):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reply(reader)
    writer.write(b"EHLO load.test\r\n")
    await reply(reader)
    while queue:
        rcpt, body = queue.pop()
        writer.write(b"MAIL FROM:<>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt.encode())
        codes = [await reply(reader) for _ in range(3)]
        stats["sent"] += 1
        if codes != ["250", "250", "354"]:
            stats["failed"] += 1
            if codes[-1] == "354":
                writer.write(b".\r\n")
                await reply(reader)
            continue
        writer.write(body)
        code = await reply(reader)
        stats["ok" if code == "250" else "failed"] += 1
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


async def run(a, messages):
    stats = {"sent": 0, "ok": 0, "failed": 0}
    t0 = time.monotonic()
    await asyncio.gather(*(client(a.port, messages, stats) for _ in range(a.conns)))
    stats["wall_s"] = time.monotonic() - t0
    return stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--campaign", type=int, required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--domain", default="bounces.sender.test")
    a = ap.parse_args()
    key = open(a.secret, "rb").read()
    messages = []
    for n, line in enumerate(open(a.ids)):
        rid, addr = line.split()
        rcpt = "%s@%s" % (token(key, "b", a.campaign, int(rid)), a.domain)
        body = DSN.format(n=n, rcpt=rcpt, addr=addr).replace("\r\n.", "\r\n..") + ".\r\n"
        messages.append((rcpt, body.encode()))
    messages.reverse()  # pop() from the end: in file order
    print(json.dumps(asyncio.run(run(a, messages))))


if __name__ == "__main__":
    main()
