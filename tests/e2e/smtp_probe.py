#!/usr/bin/python3
"""smtp_probe.py [--host H] PORT STEP... - a raw, scriptable SMTP client for
the e2e tests (standard library only). Steps run in order:

  <CODE      read one reply (multiline aware); its code must be CODE
             ("2xx"/"4.."-style patterns allowed, "*" = any). The reply is
             printed as "<- ..." lines.
  >TEXT      send TEXT + CRLF in its own write
  +TEXT      append TEXT + CRLF to a buffer sent by the next "flush" (or the
             next "<" step): several commands in ONE write (pipelining)
  flush      send the buffer now
  raw:TEXT   send TEXT as is (Python escapes: \\r \\n \\x00 ...)
  tls        TLS handshake (SNI --sni, no verification unless --ca)
  sleep:S    wait S seconds
  silent:S   no byte may arrive within S seconds
  eof[:S]    the server must close within S seconds (5)
  pending    bytes must already have arrived behind the last reply (e.g. a
             reply injected behind STARTTLS's 220 in the same write)

Exit 0 when every step passed; else 1 with "probe: FAILED ..." on stderr.
--implicit-tls starts with a handshake. --timeout S per read (10)."""
import argparse
import codecs
import re
import socket
import ssl
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--sni", default="localhost")
    ap.add_argument("--ca")
    ap.add_argument("--implicit-tls", action="store_true")
    ap.add_argument("port", type=int)
    ap.add_argument("steps", nargs="*")
    a = ap.parse_args()

    sock = socket.create_connection((a.host, a.port), timeout=a.timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    state = {"sock": sock, "buf": b"", "out": b""}

    def fail(msg):
        sys.stderr.write("probe: FAILED %s\n" % msg)
        sys.stdout.flush()
        sys.exit(1)

    def tls():
        ctx = ssl.create_default_context(cafile=a.ca) if a.ca else ssl._create_unverified_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if state["buf"]:
            fail("%d bytes arrived before the TLS handshake: %r" % (len(state["buf"]), state["buf"][:60]))
        state["sock"] = ctx.wrap_socket(state["sock"], server_hostname=a.sni)
        print("== TLS %s %s" % (state["sock"].version(), state["sock"].cipher()[0]))

    def recv():
        try:
            data = state["sock"].recv(65536)
        except socket.timeout:
            fail("timed out waiting for the server")
        except (OSError, ssl.SSLError) as e:
            fail("connection error: %s" % e)
        if not data:
            fail("connection closed by the server")
        return data

    def flush():
        if state["out"]:
            state["sock"].sendall(state["out"])
            for l in state["out"].decode("utf-8", "replace").split("\r\n")[:-1]:
                print("-> " + l)
            state["out"] = b""

    def reply():
        lines = []
        while True:
            while b"\n" not in state["buf"]:
                state["buf"] += recv()
            line, state["buf"] = state["buf"].split(b"\n", 1)
            line = line.rstrip(b"\r").decode("utf-8", "replace")
            print("<- " + line)
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return lines

    if a.implicit_tls:
        tls()
    for step in a.steps:
        if step.startswith("<"):
            flush()
            want = step[1:]
            lines = reply()
            code = lines[-1][:3]
            pat = "^" + want.replace("x", ".").replace("*", "...") + "$"
            if not re.match(pat, code):
                fail("step %r: got %r" % (step, lines))
        elif step.startswith(">"):
            flush()
            state["out"] = step[1:].encode() + b"\r\n"
            flush()
        elif step.startswith("+"):
            state["out"] += step[1:].encode() + b"\r\n"
        elif step == "flush":
            flush()
        elif step.startswith("raw:"):
            flush()
            data = codecs.escape_decode(step[4:].encode())[0]
            state["sock"].sendall(data)
            print("-> (raw %d bytes)" % len(data))
        elif step == "tls":
            flush()
            tls()
        elif step.startswith("sleep:"):
            time.sleep(float(step[6:]))
        elif step.startswith("silent:"):
            flush()
            state["sock"].settimeout(float(step[7:]))
            try:
                data = state["sock"].recv(65536)
            except socket.timeout:
                data = None
            state["sock"].settimeout(a.timeout)
            if data is not None:
                fail("step %r: got %r" % (step, data[:80]))
            print("== silent for %ss" % step[7:])
        elif step.startswith("eof"):
            flush()
            limit = float(step[4:] or 5)
            state["sock"].settimeout(limit)
            try:
                while True:
                    data = state["sock"].recv(65536)
                    if not data:
                        break
                    state["buf"] += data
            except socket.timeout:
                fail("step %r: connection still open after %ss" % (step, limit))
            except OSError:
                pass  # reset counts as closed
            print("== closed by the server")
        elif step == "pending":
            # the bytes left after the last reply (e.g. an injected reply)
            print("== pending %r" % state["buf"])
            if not state["buf"]:
                fail("step 'pending': nothing arrived after the last reply")
        else:
            fail("unknown step %r" % step)
    flush()


if __name__ == "__main__":
    main()
