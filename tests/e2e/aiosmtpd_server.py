#!/usr/bin/python3
"""aiosmtpd_server.py --port P --cert C --key K [options] - python3-aiosmtpd
as a real third-party SMTP server for the interop tests, on 127.0.0.1:P.

Default: STARTTLS offered and required before MAIL (require_starttls); with
--auth USER:PASS, AUTH PLAIN and LOGIN are offered only after TLS
(auth_require_tls), checked against USER:PASS, and required before MAIL.
--implicit-tls: TLS from the first byte (port 465 style); AUTH then offered
at once. TLS 1.2 is the minimum.

Each accepted message is appended to --count-file as one JSON line:
  {"from", "rcpts", "size", "tls", "tls_version", "cipher", "auth",
   "auth_user", "helo", "mail_options", "rcpt_options", "smtputf8",
   "bare_lf", "bare_cr", "n"}
--save-dir D keeps each message's content as D/<n>.eml.
--starttls-optional accepts mail in plaintext too (STARTTLS still offered).
--size N advertises SIZE N and enforces it (552).
Run with Debian's /usr/bin/python3. SIGTERM stops it (exit 0)."""
import argparse
import asyncio
import json
import logging
import os
import re
import signal
import ssl

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Recorder:
    def __init__(self, count_file, save_dir, auth_configured):
        self.count_file = count_file
        self.save_dir = save_dir
        self.auth_configured = auth_configured
        self.n = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if not self.auth_configured:
            responses = [r for r in responses if not r[4:].upper().startswith("AUTH")]
        return responses

    async def handle_DATA(self, server, session, envelope):
        obj = server.transport.get_extra_info("ssl_object") if server.transport else None
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        self.n += 1
        rec = {
            "n": self.n,
            "from": envelope.mail_from,
            "rcpts": envelope.rcpt_tos,
            "size": len(content),
            "tls": obj is not None,
            "tls_version": obj.version() if obj else None,
            "cipher": obj.cipher()[0] if obj else None,
            "auth": bool(session.authenticated),
            "auth_user": getattr(session, "e2e_auth_user", None),
            "helo": session.host_name,
            "mail_options": envelope.mail_options,
            "rcpt_options": envelope.rcpt_options,
            "smtputf8": bool(envelope.smtp_utf8),
            "bare_lf": re.search(rb"(?<!\r)\n", content) is not None,
            "bare_cr": re.search(rb"\r(?!\n)", content) is not None,
        }
        if self.save_dir:
            with open(os.path.join(self.save_dir, "%d.eml" % self.n), "wb") as f:
                f.write(content)
        if self.count_file:
            with open(self.count_file, "a") as f:
                f.write(json.dumps(rec) + "\n")
        return "250 2.0.0 OK queued as A%d" % self.n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--implicit-tls", action="store_true")
    ap.add_argument("--auth", help="USER:PASS")
    ap.add_argument("--count-file")
    ap.add_argument("--save-dir")
    ap.add_argument("--starttls-optional", action="store_true")
    ap.add_argument("--size", type=int, default=33554432)
    ap.add_argument("--hostname", default="mx.test")
    ap.add_argument("--debug", action="store_true")
    a = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.WARNING)
    if a.save_dir:
        os.makedirs(a.save_dir, exist_ok=True)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(a.cert, a.key)
    user, password = a.auth.split(":", 1) if a.auth else (None, None)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and user is not None
              and auth_data.login.decode("utf-8", "replace") == user
              and auth_data.password.decode("utf-8", "replace") == password)
        if ok:
            session.e2e_auth_user = user
        return AuthResult(success=ok, handled=False)

    handler = Recorder(a.count_file, a.save_dir, user is not None)
    kw = dict(hostname=a.hostname, ident="aiosmtpd (ringmail e2e)", enable_SMTPUTF8=True,
              data_size_limit=a.size)
    if user is not None:
        kw.update(authenticator=authenticator, auth_required=True, auth_require_tls=True)
    else:
        kw.update(auth_require_tls=True)
    if a.implicit_tls:
        # aiosmtpd counts only STARTTLS as TLS for auth_require_tls; here every
        # byte is already encrypted.
        kw.update(auth_require_tls=False)
    else:
        kw.update(tls_context=ctx, require_starttls=not a.starttls_optional)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(
        lambda: SMTP(handler, loop=loop, **kw), host=a.host, port=a.port,
        ssl=ctx if a.implicit_tls else None, reuse_address=True))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    print("aiosmtpd listening on %s:%d (%s)" % (a.host, a.port,
          "implicit TLS" if a.implicit_tls else "STARTTLS"), flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
