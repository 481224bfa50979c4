#!/usr/bin/env python3
"""feedback_mail.py - ringmail's VERP tokens and the reports that come back,
built with Python's email package the way real MTAs and ISPs send them.

    feedback_mail.py token --secret F KIND CAMPAIGN RECIPIENT
        prints KIND-TOKEN (KIND b or u), as campaign/feedback.c makes it
    feedback_mail.py dsn --secret F --campaign C --recipient R --address A
        [--status 5.1.1] [--action failed] [--diag TEXT] [--token TOKEN]
        [--final-address A2] > FILE
        an RFC 3464 report (Postfix's layout) to b-TOKEN@bounces.sender.test
    feedback_mail.py arf --secret F --campaign C --recipient R --address A
        [--via return-path|unsubscribe|message-id|none] > FILE
        an RFC 5965 abuse report (Yahoo's and Microsoft's layout: the
        returned message's headers carry the token)
    feedback_mail.py vacation --secret F --campaign C --recipient R > FILE
        an out-of-office auto-reply to b-TOKEN@...

The token: lower-case base32 (no padding) of the campaign and recipient ids
as LEB128 varints and the first 96 bits of HMAC-SHA256 over the kind
letter and the varints (campaign/feedback.h).
"""
import argparse
import base64
import hashlib
import hmac
import os
import sys
from email.message import EmailMessage
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email import message_from_string
from email.policy import SMTP

DOMAIN = "bounces.sender.test"
NONCE = os.urandom(6).hex()  # each report made is a new message (the store skips repeats)


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def token(key, kind, campaign, recipient):
    payload = varint(campaign) + varint(recipient)
    mac = hmac.new(key, kind.encode() + payload, hashlib.sha256).digest()[:12]
    return kind + "-" + base64.b32encode(payload + mac).decode().rstrip("=").lower()


def returned(a, tok_b, tok_u, message_id):
    """the headers of the message ringmail sent"""
    h = []
    if tok_b:
        h.append("Return-Path: <%s@%s>" % (tok_b, DOMAIN))
    h += ["From: News <news@sender.test>", "To: <%s>" % a, "Subject: Hello",
          "Date: Sun, 06 Dec 2026 10:00:00 +0000",
          "Message-ID: <%s>" % message_id]
    if tok_u:
        h.append("List-Unsubscribe: <https://unsub.sender.test/u/%s>, <mailto:%s@%s>"
                 % (tok_u[2:], tok_u, DOMAIN))
    return "\r\n".join(h) + "\r\n\r\nCampaign text.\r\n"


def dsn(o, key):
    """laid out as Postfix's bounce(8) writes it"""
    tok = o.token or token(key, "b", o.campaign, o.recipient)
    final = o.final_address or o.address
    b = "4ABCD123.1765015200/mx.receiver.test"
    lines = [
        "From: MAILER-DAEMON@mx.receiver.test (Mail Delivery System)",
        "Subject: Undelivered Mail Returned to Sender",
        "To: %s@%s" % (tok, DOMAIN),
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        '\tboundary="%s"' % b,
        "Message-Id: <20261206.%d.%d.%s@mx.receiver.test>" % (o.campaign, o.recipient, NONCE),
        "",
        "This is a MIME-encapsulated message.",
        "",
        "--" + b,
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients.",
        "",
        "<%s>: %s" % (final, o.diag),
        "",
        "--" + b,
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mx.receiver.test",
        "X-Postfix-Queue-ID: 4ABCD123",
        "X-Postfix-Sender: rfc822; %s@%s" % (tok, DOMAIN),
        "Arrival-Date: Sun,  6 Dec 2026 10:00:00 +0000 (UTC)",
        "",
        "Final-Recipient: rfc822; %s" % final,
        "Original-Recipient: rfc822;%s" % final,
        "Action: %s" % o.action,
        "Status: %s" % o.status,
        "Remote-MTA: dns; inbox.receiver.test",
        "Diagnostic-Code: smtp; %s" % o.diag,
        "",
        "--" + b,
        "Content-Description: Undelivered Message Headers",
        "Content-Type: text/rfc822-headers",
        "",
        returned(o.address, tok, None, "m.%d@sender.test" % o.recipient).split("\r\n\r\n")[0]
        .replace("\r\n", "\n"),
        "",
        "--%s--" % b,
        "",
    ]
    return "\r\n".join(lines)


def arf(o, key):
    tb = token(key, "b", o.campaign, o.recipient)
    tu = token(key, "u", o.campaign, o.recipient)
    mid = "%s.5f3e.1765015200@sender.test" % tu if o.via == "message-id" else "r%d@sender.test" % o.recipient
    m = MIMEMultipart("report", report_type="feedback-report")
    m["From"] = "Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.test>"
    m["To"] = "abuse@%s" % DOMAIN
    m["Subject"] = "FW: Hello"
    m["Message-ID"] = "<arf.%d.%s@yahoo.test>" % (o.recipient, NONCE)
    m.attach(MIMEText("This is an email abuse report for an email message received from IP "
                      "127.0.0.1 on Sun, 06 Dec 2026 10:00:00 +0000.\n"))
    fr = MIMEText("", "plain")
    fr.replace_header("Content-Type", "message/feedback-report")
    fr.set_payload("Feedback-Type: abuse\nUser-Agent: Yahoo!-Mail-Feedback/2.0\nVersion: 1\n"
                   "Original-Mail-From: <%s>\n"
                   "Arrival-Date: Sun, 06 Dec 2026 10:00:00 +0000\n"
                   "Reported-Domain: sender.test\nSource-IP: 127.0.0.1\n"
                   % ("%s@%s" % (tb, DOMAIN) if o.via == "mail-from" else "news@sender.test"))
    m.attach(fr)
    body = returned(o.address, tb if o.via == "return-path" else None,
                    tu if o.via == "unsubscribe" else None, mid)
    m.attach(MIMEMessage(message_from_string(body)))
    return m.as_string(policy=SMTP)


def vacation(o, key):
    tok = token(key, "b", o.campaign, o.recipient)
    m = EmailMessage()
    m["From"] = o.address or "someone@x.test"
    m["To"] = "%s@%s" % (tok, DOMAIN)
    m["Subject"] = "Out of Office: Hello"
    m["Auto-Submitted"] = "auto-replied"
    m["X-Autoreply"] = "yes"
    m["Message-ID"] = "<ooo.%d.%s@x.test>" % (o.recipient, NONCE)
    m.set_content("I am out of the office until Monday.\n")
    return m.as_string(policy=SMTP)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["token", "dsn", "arf", "vacation"])
    p.add_argument("args", nargs="*")
    p.add_argument("--secret", required=True)
    p.add_argument("--campaign", type=int, default=0)
    p.add_argument("--recipient", type=int, default=0)
    p.add_argument("--address", default="")
    p.add_argument("--final-address", default="")
    p.add_argument("--status", default="5.1.1")
    p.add_argument("--action", default="failed")
    p.add_argument("--diag", default="550 5.1.1 <user@x.test>: Recipient address rejected: "
                   "User unknown in virtual mailbox table")
    p.add_argument("--token", default="")
    p.add_argument("--via", default="return-path")
    o = p.parse_args()
    key = open(o.secret, "rb").read()
    if o.what == "token":
        kind, c, r = o.args
        print(token(key, kind, int(c), int(r)))
        return
    sys.stdout.write({"dsn": dsn, "arf": arf, "vacation": vacation}[o.what](o, key))


if __name__ == "__main__":
    main()
