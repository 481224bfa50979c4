#!/usr/bin/python3
"""sts_server.py ADDR PORT CERT KEY DIR LOG - an HTTPS server for MTA-STS
policies (RFC 8461 3.3), standard library only, one thread per request.

GET /.well-known/mta-sts.txt with Host mta-sts.DOMAIN serves DIR/DOMAIN as
text/plain. DIR/DOMAIN.mode (read at each request, so a test may change it
between runs) makes it misbehave:
  404        HTTP 404
  redirect   301 to https://elsewhere.test/.well-known/mta-sts.txt
  html       the policy as text/html
  big        70,000 bytes of text/plain (over the 64 KiB cap)
  slow N     wait N seconds, then the policy
  slow404 N  wait N seconds, then HTTP 404
  chunked    the policy in chunks (Transfer-Encoding: chunked)
Every request is one line in LOG: "DOMAIN PATH MODE UNIXTIME CLIENT".
"""
import http.server
import os
import ssl
import sys
import threading
import time

ADDR, PORT, CERT, KEY, DIR, LOG = sys.argv[1:7]
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, ctype, body, extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        domain = host[len("mta-sts."):] if host.startswith("mta-sts.") else host
        mode = ""
        try:
            with open(os.path.join(DIR, domain + ".mode")) as f:
                mode = f.read().strip()
        except OSError:
            pass
        with LOCK, open(LOG, "a") as f:
            f.write("%s %s %s %.3f %s\n" % (domain, self.path, mode or "ok", time.time(),
                                            self.client_address[0]))
        try:
            with open(os.path.join(DIR, domain), "rb") as f:
                policy = f.read()
        except OSError:
            policy = None
        if mode.startswith("slow404"):
            time.sleep(float(mode.split()[1]))
            mode = "404"
        if self.path != "/.well-known/mta-sts.txt" or policy is None or mode == "404":
            return self.send(404, "text/plain", b"not found\n")
        if mode == "redirect":
            return self.send(301, "text/plain", b"", [("Location", "https://elsewhere.test/.well-known/mta-sts.txt")])
        if mode == "html":
            return self.send(200, "text/html", policy)
        if mode == "big":
            return self.send(200, "text/plain", policy + b"x" * 70000)
        if mode.startswith("slow"):
            time.sleep(float(mode.split()[1]))
        if mode == "chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(0, len(policy), 10):
                part = policy[i:i + 10]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send(200, "text/plain", policy)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def get_request(self):
        sock, addr = super().get_request()
        return CTX.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        pass  # a client that refused our certificate: expected in the tests


CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
CTX.load_cert_chain(CERT, KEY)
srv = Server((ADDR, int(PORT)), Handler)
print("listening", flush=True)
srv.serve_forever()
