#!/usr/bin/python3
"""tlsrpt_https.py --port P --cert C --key K --dir D [--fail-file F] - a
TLS-RPT HTTPS endpoint (RFC 8460 5.4) on 127.0.0.1:P for the tlsrpt test.

Each POST is kept as D/<n>.json ({"path", "content_type", "length"}) and
D/<n>.body (the body as received). While F exists, a request to the path F holds
gets 503 (a failed endpoint) and is not kept. Anything but POST gets 405. Writes
D/ready once listening. SIGTERM stops it."""
import argparse
import http.server
import json
import os
import ssl


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--fail-file")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    count = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, code, text):
            body = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.reply(405, "POST only")

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            if a.fail_file and os.path.exists(a.fail_file) and \
                    open(a.fail_file).read().strip() == self.path:
                self.reply(503, "unavailable")
                return
            count[0] += 1
            base = os.path.join(a.dir, str(count[0]))
            with open(base + ".body", "wb") as f:
                f.write(body)
            with open(base + ".json", "w") as f:
                json.dump({"path": self.path, "content_type": self.headers.get("Content-Type"),
                           "length": n}, f)
            self.reply(201, "stored")

        def log_message(self, fmt, *args):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", a.port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(a.cert, a.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    open(os.path.join(a.dir, "ready"), "w").close()
    srv.serve_forever()


if __name__ == "__main__":
    main()
