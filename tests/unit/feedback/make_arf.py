#!/usr/bin/env python3
"""make_arf.py - the ARF complaint samples (RFC 5965), built with Python's
email package the way Yahoo's and Microsoft's (JMRP) feedback loops send
them. Run from this folder: writes yahoo_arf.eml and microsoft_jmrp.eml."""
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email import policy

TOKEN = "mfrggzdfmztwq2lknnwg23tpobyxe"


def original(to, extra=()):
    m = Message()
    m["Return-Path"] = "<b-%s@bounces.sender.test>" % TOKEN
    m["Received"] = "from out1.sender.test (out1.sender.test [192.0.2.25]) by mta7.example.net with ESMTPS; Sun, 06 Dec 2026 07:12:09 +0000"
    m["From"] = "Offers <offers@sender.test>"
    m["To"] = to
    m["Subject"] = "Your December offers"
    m["Date"] = "Sun, 06 Dec 2026 07:12:01 +0000"
    m["Message-ID"] = "<20261206.1.campaign-7@sender.test>"
    m["List-Unsubscribe"] = ("<https://sender.test/u/%s>, <mailto:u-%s@bounces.sender.test>"
                             % (TOKEN, TOKEN))
    m["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for k, v in extra:
        m[k] = v
    m.set_payload("Hello, here are this month's offers.\r\n")
    return m


def report(fields, human, orig, headers_only, frm, subject):
    r = MIMEMultipart("report", report_type="feedback-report")
    r["From"] = frm
    r["To"] = "fbl@sender.test"
    r["Subject"] = subject
    r["Date"] = "Sun, 06 Dec 2026 09:00:00 +0000"
    r["Message-ID"] = "<fbl.20261206.4711@%s>" % frm.split("@")[1].rstrip(">")
    r.attach(MIMEText(human, "plain", "us-ascii"))
    fb = MIMEBase("message", "feedback-report")
    fb.set_payload("".join("%s: %s\r\n" % kv for kv in fields))
    r.attach(fb)
    if headers_only:
        h = MIMEText(orig.as_string().split("\n\n", 1)[0] + "\n", "rfc822-headers")
        r.attach(h)
    else:
        r.attach(MIMEMessage(orig))
    return r


yahoo = report(
    [("Feedback-Type", "abuse"), ("User-Agent", "Yahoo!-Mail-Feedback/2.0"), ("Version", "0.1"),
     ("Original-Mail-From", "<b-%s@bounces.sender.test>" % TOKEN),
     ("Original-Rcpt-To", "reader@yahoo.example"),
     ("Received-Date", "Sun, 06 Dec 2026 07:12:09 +0000"),
     ("Reported-Domain", "sender.test"), ("Authentication-Results", "mta7.example.net; dkim=pass header.d=sender.test")],
    "This is an email abuse report for an email message from sender.test on Sun, 06 Dec 2026 07:12:09 +0000\r\n",
    original("reader@yahoo.example"), True,
    "Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.example>", "FW: Your December offers")
open("yahoo_arf.eml", "wb").write(yahoo.as_bytes(policy=policy.SMTP))

jmrp = report(
    [("Feedback-Type", "abuse"), ("User-Agent", "Microsoft JMRP"), ("Version", "1"),
     ("Source-IP", "192.0.2.25"), ("Arrival-Date", "Sun, 06 Dec 2026 07:12:09 -0800")],
    "This is an email abuse report for an email message received from IP 192.0.2.25.\r\n",
    original("reader@outlook.example", [("X-HmXmrOriginalRecipient", "<reader@outlook.example>")]),
    False, "staff@hotmail.example", "complaint about message from 192.0.2.25")
open("microsoft_jmrp.eml", "wb").write(jmrp.as_bytes(policy=policy.SMTP))
