"""aiosmtpd_server.py - python3-aiosmtpd as a real third-party SMTP server for
the interop tests: STARTTLS (required before MAIL) with AUTH PLAIN/LOGIN
offered only inside TLS, or implicit TLS (port 465 style). Each accepted
message is appended as one JSON line to --count-file."""
import argparse
import asyncio
import json
import ssl

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Recorder:
    def __init__(self, path):
        self.path = path

    async def handle_DATA(self, server, session, envelope):
        tls = session.ssl
        version = None
        if tls is not None:
            obj = server.transport.get_extra_info("ssl_object")
            version = obj.version() if obj else None
        rec = {"from": envelope.mail_from, "rcpts": envelope.rcpt_tos,
               "size": len(envelope.content or b""), "tls": tls is not None,
               "tls_version": version, "auth": bool(session.authenticated)}
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        return "250 2.0.0 OK"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--implicit-tls", action="store_true")
    ap.add_argument("--auth")
    ap.add_argument("--count-file")
    a = ap.parse_args()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    user, password = (a.auth.split(":", 1) if a.auth else (None, None))

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and user is not None
              and auth_data.login.decode() == user and auth_data.password.decode() == password)
        return AuthResult(success=ok, handled=False)

    kw = dict(hostname="127.0.0.1", port=a.port, server_hostname="mx.test")
    if user:
        kw.update(authenticator=authenticator, auth_require_tls=True, auth_required=True)
    if a.implicit_tls:
        # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; here
        # every byte is already encrypted.
        kw.update(ssl_context=ctx, auth_require_tls=False)
    else:
        kw.update(tls_context=ctx, require_starttls=True)
    c = Controller(Recorder(a.count_file), **kw)
    c.start()
    try:
        asyncio.get_event_loop().run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()


if __name__ == "__main__":
    main()
