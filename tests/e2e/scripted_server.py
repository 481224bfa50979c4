#!/usr/bin/python3
"""scripted_server.py PORT MODE [MODE_ARG] [options] - a raw SMTP server on
127.0.0.1:PORT that misbehaves on purpose, one behaviour per MODE, for the
client-robustness cases of SMTP-CLIENT-CASES.md. Standard library only; one
thread per connection, every connection independent.

Options
  --transcript F   every byte the client sent, appended as received, each
                   read followed by a "|SEGMENT|\\n" line (segment boundaries
                   show pipelining); "|CONNECT n|", "|TLS n|" and "|CLOSE n|"
                   lines mark connection n opening, turning to TLS, closing.
  --events F       one JSON object per line, each with "conn" and "event":
                     connect, close {"by": "client"|"server"|"error"}
                     cmd      {"verb", "line", "tls"}  every command line
                     rcpt     {"rcpt", "code"}         each RCPT decision
                     tls      {"version", "cipher"}    handshake done
                     data     {"bytes", "empty", "tls", "bare_lf", "bare_cr",
                               "long_line", "eight_bit"}  content received
                     message  {"from", "rcpts", "size", "tls"}  accepted (250)
                     violation {"what"}  something a correct client must not do
                   e.g. MAIL in plaintext: event cmd, verb MAIL, tls false.
  --tls-cert C --tls-key K
                   offer STARTTLS (real TLS, 1.2+) in the modes that accept
                   mail; without them STARTTLS is only offered by the
                   starttls-* modes.
  --hostname H     the server's name (mx.test)

Modes (MODE_ARG in brackets)
  ok                     a correct ESMTP server that accepts everything
  greeting-421           421 instead of 220, then close
  greeting-554           554 instead of 220; then 503 to everything but QUIT (RFC 5321 3.1)
  close-after-greeting   220, then close
  slow-greeting [S]      wait S seconds (5) before the 220
  multiline-greeting     a three-line 220
  ehlo-502               EHLO rejected (502): HELO works, no extensions (so no
                         PIPELINING: lock step expected, violations recorded)
  ehlo-odd               EHLO keywords in mixed case, unknown keywords, the old
                         AUTH= form and a 900-octet line
  no-pipelining          ESMTP without PIPELINING; records a violation if the
                         client sends a command before the previous reply
  garbage                "HTTP/1.1 400 Bad Request" as greeting and to every line
  stall-after-mail       reads but never answers anything after MAIL
  drop-mid-data [rst]    closes the socket once part of the DATA content arrived
                         (rst: with a TCP reset)
  starttls-inject        offers STARTTLS; to STARTTLS sends "220 go ahead\\r\\n250
                         injected\\r\\n" in one write and no TLS: a correct client
                         aborts (a TLS ClientHello afterwards is a violation)
  starttls-454           offers STARTTLS, answers it 454; accepts mail in plaintext
  no-starttls            plain ESMTP, never STARTTLS; accepts mail (see events)
  rcpt-mixed             per recipient, by local part: a leading 3-digit code
                         ("550.x", "451-y") is the reply code; "reject"/"bad"
                         -> 550 5.1.1; "defer"/"temp" -> 450 4.2.1; otherwise
                         trailing number n: n%3==1 -> 550 5.1.1, n%3==2 ->
                         450 4.2.1, n%3==0 -> 250; no number -> 250
  all-rcpt-fail-data-ok  every RCPT 550, yet DATA gets 354 (the client must send
                         a lone "."; a non-empty body is a violation); 554 after it
  rcpt-452 [N]           the first N (0) recipients of a transaction 250, then 452
  421-mid-pipeline       421 to the first RCPT, then close
  data-451               451 (multiline) after the final dot
  data-554               554 (multiline) after the final dot
  close-after-first      closes the connection right after the first 250 to a dot
  split-replies          every reply one byte per write (TCP_NODELAY, 2 ms apart)
  bare-code              replies "250\\r\\n", "354\\r\\n", "221\\r\\n" with no text
  multiline-everywhere   every reply multiline, including 354 and after the dot
  dot-extra-250 [MS]     answers the final dot twice, "250 ok one" and "250 ok two":
                         in one write, or the second MS milliseconds later (a
                         reply nobody waits for; a correct client closes and
                         sends nothing more on that session)
  mail-421 [N]           accepts N (2) messages per connection, then answers the
                         next MAIL "421 4.7.0" and closes
  rcpt-503               every RCPT answered "503 5.5.1 bad sequence of commands"
  slow-lines [S]         a greeting that never ends: "220-line N" every S (2)
                         seconds, for ever (a reply deadline must end it)
  slow-bytes [S]         "220 " then one byte every S (1) seconds, for ever
  slow-dot [S]           answers the final dot with "250-" lines, one every S (1)
                         seconds, for ever (the DATA phase's deadline must end it)
  reset-on-connect       reads what the client sends first (a TLS ClientHello
                         under implicit TLS), then closes with a TCP reset

In every mode: a command sent before the previous reply where RFC 2920 does
not allow it (after EHLO/HELO, DATA, STARTTLS, QUIT, NOOP, or anything when
PIPELINING was not offered), bare CR or LF in DATA (SMTP smuggling), lines
over 1000 octets, and 8-bit content when 8BITMIME was not offered are all
recorded as violations."""
import argparse
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time

MODES = """ok greeting-421 greeting-554 close-after-greeting slow-greeting
multiline-greeting ehlo-502 ehlo-odd no-pipelining garbage stall-after-mail
drop-mid-data starttls-inject starttls-454 no-starttls rcpt-mixed
all-rcpt-fail-data-ok rcpt-452 421-mid-pipeline data-451 data-554
close-after-first split-replies bare-code multiline-everywhere dot-extra-250
mail-421 rcpt-503 slow-lines slow-bytes reset-on-connect slow-dot""".split()

# Commands after which RFC 2920 (and 3207) forbids sending more before the reply.
GROUP_END = {"EHLO", "HELO", "DATA", "STARTTLS", "QUIT", "NOOP", "VRFY", "EXPN", "TURN", "AUTH"}


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("port", type=int)
    ap.add_argument("mode", choices=MODES)
    ap.add_argument("mode_arg", nargs="?")
    ap.add_argument("--transcript")
    ap.add_argument("--events")
    ap.add_argument("--tls-cert", "--cert")
    ap.add_argument("--tls-key", "--key")
    ap.add_argument("--hostname", default="mx.test")
    return ap.parse_args()


ARGS = parse()
MODE = ARGS.mode
HOST = ARGS.hostname
LOCK = threading.Lock()
COUNTER = [0]
TLS_CTX = None
if ARGS.tls_cert:
    TLS_CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    TLS_CTX.minimum_version = ssl.TLSVersion.TLSv1_2
    TLS_CTX.load_cert_chain(ARGS.tls_cert, ARGS.tls_key or ARGS.tls_cert)


def append(path, data):
    if path:
        with LOCK:
            with open(path, "ab") as f:
                f.write(data)


def log(msg):
    sys.stderr.write("scripted[%s] %s\n" % (MODE, msg))
    sys.stderr.flush()


class Closed(Exception):
    pass


class Session:
    def __init__(self, sock, n):
        self.sock = sock
        self.n = n
        self.buf = b""
        self.tls = False
        self.greeted = False  # EHLO/HELO seen
        self.esmtp = False
        self.pipelining = False
        self.eightbit = False
        self.mail_from = None
        self.rcpts = []
        self.rcpt_n = 0
        self.done = 0
        self.closed_by = "client"

    # -- recording
    def event(self, event, **kw):
        if ARGS.events:
            rec = {"conn": self.n, "event": event}
            rec.update(kw)
            append(ARGS.events, (json.dumps(rec) + "\n").encode())

    def violation(self, what):
        log("conn %d: violation: %s" % (self.n, what))
        self.event("violation", what=what)

    def mark(self, what):
        append(ARGS.transcript, ("|%s %d|\n" % (what, self.n)).encode())

    # -- I/O
    def recv(self):
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionError, ssl.SSLError, OSError) as e:
            self.closed_by = "error"
            raise Closed(str(e))
        if not chunk:
            raise Closed("eof")
        append(ARGS.transcript, chunk + b"|SEGMENT|\n")
        self.buf += chunk
        return chunk

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 100000:
                self.violation("command line without CRLF over 100000 octets")
                raise Closed("line too long")
            self.recv()
        line, self.buf = self.buf.split(b"\r\n", 1)
        if b"\n" in line or b"\r" in line:
            self.violation("bare CR or LF in a command line")
        return line.decode("utf-8", "replace")

    def raw(self, data):
        try:
            if MODE == "split-replies":
                for i in range(len(data)):
                    self.sock.sendall(data[i:i + 1])
                    time.sleep(0.002)
            else:
                self.sock.sendall(data)
        except (ConnectionError, ssl.SSLError, OSError) as e:
            self.closed_by = "error"
            raise Closed(str(e))

    def reply(self, code, *lines, ehlo=False):
        """One reply; lines[0] is the normal single-line text, the others
        only appear in multiline-everywhere (EHLO replies are always whole)."""
        lines = list(lines) or [""]
        if ehlo:
            pass
        elif MODE == "bare-code" and code != 220:
            self.raw(b"%d\r\n" % code)
            return
        elif MODE == "multiline-everywhere":
            if len(lines) == 1:
                lines.append("(multiline reply)")
        else:
            lines = lines[:1]
        out = "".join("%d-%s\r\n" % (code, l) for l in lines[:-1]) + "%d %s\r\n" % (code, lines[-1])
        self.raw(out.encode())

    def close(self, rst=False):
        self.closed_by = "server"
        try:
            if rst:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.sock.close()
        except OSError:
            pass
        raise Closed("server closed")

    # -- the session
    def run(self):
        self.event("connect")
        self.mark("CONNECT")
        try:
            self.greet()
            while True:
                self.command(self.line())
        except Closed as e:
            self.close_detail = str(e)
        finally:
            self.event("close", by=self.closed_by, detail=getattr(self, "close_detail", ""))
            self.mark("CLOSE")
            try:
                self.sock.close()
            except OSError:
                pass

    def greet_slowly(self):
        """Bytes that trickle in but never finish a reply."""
        pause = float(ARGS.mode_arg or (2 if MODE == "slow-lines" else 1))
        n = 0
        if MODE == "slow-bytes":
            self.raw(b"220 ")
        while True:
            n += 1
            self.raw(("220-line %d\r\n" % n).encode() if MODE == "slow-lines" else b"x")
            time.sleep(pause)

    def greet(self):
        if MODE in ("slow-lines", "slow-bytes"):
            self.greet_slowly()
        if MODE == "reset-on-connect":
            self.sock.settimeout(5)
            try:
                self.sock.recv(4096)
            except OSError:
                pass
            self.close(rst=True)
        if MODE == "slow-greeting":
            time.sleep(float(ARGS.mode_arg or 5))
        try:  # RFC 5321 3.1: the client waits for the greeting
            if self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                self.violation("spoke before the greeting")
        except OSError:
            pass
        if MODE == "greeting-421":
            self.reply(421, "4.3.2 %s service not available, closing transmission channel" % HOST)
            self.close()
        if MODE == "greeting-554":
            self.reply(554, "5.7.1 %s no SMTP service here" % HOST)
            self.sock.settimeout(30)
            while True:  # RFC 5321 3.1: wait for QUIT, 503 to anything else
                l = self.line()
                self.event("cmd", verb=l[:4].upper(), line=l, tls=self.tls)
                if l[:4].upper() == "QUIT":
                    self.reply(221, "2.0.0 bye")
                    self.close()
                self.reply(503, "5.5.1 no SMTP service here")
        if MODE == "garbage":
            self.raw(b"HTTP/1.1 400 Bad Request\r\n")
            while True:
                self.line()
                self.raw(b"HTTP/1.1 400 Bad Request\r\n")
        if MODE in ("multiline-greeting", "multiline-everywhere"):
            self.raw(("220-%s first greeting line\r\n220-second line\r\n220 %s ESMTP ready\r\n" % (HOST, HOST)).encode())
        else:
            self.reply(220, "%s ESMTP scripted %s" % (HOST, MODE))
        if MODE == "close-after-greeting":
            self.close()

    def starttls_offered(self):
        if self.tls or MODE == "no-starttls":
            return False
        return MODE in ("starttls-inject", "starttls-454") or TLS_CTX is not None

    def ehlo_lines(self):
        lines = ["%s greets you" % HOST]
        if MODE == "ehlo-odd":
            lines += ["pipelining", "8bitMime", "X-UNKNOWN-EXTENSION with args", "AUTH=LOGIN PLAIN",
                      "X-LONG " + "x" * 900, "Size 10240000", "enhancedstatuscodes", "smtputf8"]
        else:
            if MODE != "no-pipelining":
                lines.append("PIPELINING")
            lines += ["SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]
        if self.starttls_offered():
            lines.append("STARTTLS")
        return lines

    def check_pipelining(self, verb):
        """Data already buffered while we have not answered `verb` was sent
        before our reply: fine only for MAIL/RCPT/RSET with PIPELINING."""
        if not self.buf:
            return
        if not self.pipelining:
            self.violation("sent %r before the reply to %s without PIPELINING" % (self.buf[:40], verb))
        elif verb == "DATA":
            self.violation("sent message content before the 354 reply")
        elif verb in GROUP_END:
            self.violation("sent %r before the reply to %s (must end a pipelined group)" % (self.buf[:40], verb))

    def reset(self):
        self.mail_from = None
        self.rcpts = []
        self.rcpt_n = 0

    def command(self, l):
        verb = l.split(" ", 1)[0].upper()
        self.event("cmd", verb=verb, line=l, tls=self.tls)
        self.check_pipelining(verb)
        arg = l[len(verb) + 1:]
        if verb == "EHLO":
            if MODE == "ehlo-502":
                return self.reply(502, "5.5.1 EHLO not implemented")
            self.reset()
            self.greeted = self.esmtp = True
            self.pipelining = MODE not in ("no-pipelining",)
            self.eightbit = True
            return self.reply(250, *self.ehlo_lines(), ehlo=True)
        if verb == "HELO":
            self.reset()
            self.greeted, self.esmtp, self.pipelining, self.eightbit = True, False, False, False
            return self.reply(250, HOST, ehlo=True)
        if verb == "STARTTLS":
            return self.starttls()
        if verb == "MAIL":
            if not self.greeted:
                return self.reply(503, "5.5.1 send HELO/EHLO first")
            if self.mail_from is not None:
                return self.reply(503, "5.5.1 nested MAIL command")
            m = re.match(r"(?i)FROM:\s*<([^>]*)>", arg)
            if not m:
                return self.reply(501, "5.5.4 syntax: MAIL FROM:<address>")
            if MODE == "mail-421" and self.done >= int(ARGS.mode_arg or 2):
                self.reply(421, "4.7.0 %s too many messages in this session, closing" % HOST)
                self.close()
            self.mail_from = m.group(1)
            if MODE == "stall-after-mail":
                log("conn %d: stalling after MAIL" % self.n)
                while True:
                    self.recv()
            return self.reply(250, "2.1.0 sender ok", "(sender %s)" % self.mail_from)
        if verb == "RCPT":
            if self.mail_from is None:
                return self.reply(503, "5.5.1 need MAIL command")
            m = re.match(r"(?i)TO:\s*<([^>]*)>", arg)
            if not m:
                return self.reply(501, "5.5.4 syntax: RCPT TO:<address>")
            return self.rcpt(m.group(1))
        if verb == "DATA":
            return self.data()
        if verb == "RSET":
            self.reset()
            return self.reply(250, "2.0.0 ok")
        if verb == "NOOP":
            return self.reply(250, "2.0.0 ok")
        if verb == "QUIT":
            self.reply(221, "2.0.0 %s closing connection" % HOST)
            self.close()
        if verb == "VRFY":
            return self.reply(252, "2.5.2 cannot VRFY user")
        if verb == "AUTH":
            return self.reply(502, "5.5.1 AUTH not offered")
        if verb == "HELP":
            return self.reply(214, "2.0.0 see RFC 5321")
        return self.reply(500, "5.5.2 command unrecognized")

    def starttls(self):
        if not self.starttls_offered():
            return self.reply(502, "5.5.1 STARTTLS not offered")
        if MODE == "starttls-454":
            return self.reply(454, "4.7.0 TLS not available due to local problem")
        if MODE == "starttls-inject":
            self.raw(b"220 go ahead\r\n250 injected\r\n")  # one write, before any TLS
            self.sock.settimeout(10)
            self.buf = b""
            while True:
                self.recv()
                if self.buf[:1] == b"\x16":
                    self.violation("TLS handshake started after a reply injected behind 220")
                    self.close()
        self.reply(220, "2.0.0 ready to start TLS")
        if self.buf:
            self.violation("sent %r after STARTTLS before the TLS handshake" % self.buf[:40])
            self.buf = b""
        try:
            self.sock = TLS_CTX.wrap_socket(self.sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log("conn %d: TLS handshake failed: %s" % (self.n, e))
            self.event("tls_failed", error=str(e))
            self.closed_by = "error"
            raise Closed(str(e))
        self.tls = True
        self.mark("TLS")
        self.event("tls", version=self.sock.version(), cipher=self.sock.cipher()[0])
        # RFC 3207 4.2: forget everything learned before TLS.
        self.greeted = self.esmtp = self.pipelining = False
        self.reset()

    def rcpt_code(self, addr):
        local = addr.split("@", 1)[0].lower()
        if MODE == "all-rcpt-fail-data-ok":
            return 550
        if MODE == "rcpt-452":
            return 250 if self.rcpt_n <= int(ARGS.mode_arg or 0) else 452
        if MODE == "rcpt-503":
            return 503
        if MODE != "rcpt-mixed":
            return 250
        m = re.match(r"(\d{3})(\D|$)", local)
        if m:
            return int(m.group(1))
        if "reject" in local or "bad" in local:
            return 550
        if "defer" in local or "temp" in local:
            return 450
        m = re.search(r"(\d+)$", local)
        if m:
            return (250, 550, 450)[int(m.group(1)) % 3]
        return 250

    def rcpt(self, addr):
        self.rcpt_n += 1
        if MODE == "421-mid-pipeline":
            self.reply(421, "4.7.0 %s closing connection" % HOST)
            self.close()
        code = self.rcpt_code(addr)
        self.event("rcpt", rcpt=addr, code=code)
        text = {250: "2.1.5 recipient ok", 251: "2.1.5 user not local; will forward",
                252: "2.1.5 cannot verify, will attempt delivery",
                450: "4.2.1 mailbox temporarily unavailable", 451: "4.3.0 local error",
                452: "4.5.3 too many recipients", 503: "5.5.1 bad sequence of commands",
                550: "5.1.1 no such user",
                551: "5.1.6 user not local", 552: "5.2.2 mailbox full",
                553: "5.1.3 mailbox name not allowed", 554: "5.7.1 recipient rejected"}
        if code < 300:
            self.rcpts.append(addr)
        return self.reply(code, "%s <%s>" % (text.get(code, "%d.0.0 scripted" % (code // 100)), addr))

    def data(self):
        if self.mail_from is None:
            return self.reply(503, "5.5.1 need MAIL command")
        if not self.rcpts and MODE != "all-rcpt-fail-data-ok":
            return self.reply(554 if self.rcpt_n else 503, "5.5.1 no valid recipients")
        self.reply(354, "end data with <CR><LF>.<CR><LF>", "(scripted)")
        if MODE == "drop-mid-data":
            if not self.buf:
                self.recv()
            log("conn %d: dropping the connection mid-DATA" % self.n)
            self.close(rst=(ARGS.mode_arg == "rst"))
        # Content up to CRLF.CRLF (or a lone "." right away).
        while True:
            if self.buf.startswith(b".\r\n"):
                content, self.buf = b"", self.buf[3:]
                break
            end = self.buf.find(b"\r\n.\r\n")
            if end >= 0:
                content, self.buf = self.buf[:end + 2], self.buf[end + 5:]
                break
            self.recv()
        self.analyse(content)
        if self.buf and not self.pipelining:
            self.violation("sent %r before the reply to the final dot without PIPELINING" % self.buf[:40])
        if MODE == "all-rcpt-fail-data-ok" or not self.rcpts:
            if content:
                self.violation("sent a message body although every RCPT failed")
            self.reset()
            return self.reply(554, "5.5.1 no valid recipients", "(nothing delivered)")
        if MODE == "data-451":
            self.reset()
            return self.reply(451, "4.3.0 queue trouble", "try again later")
        if MODE == "data-554":
            self.reset()
            return self.reply(554, "5.6.0 content rejected", "bye")
        self.done += 1
        size = len(content.replace(b"\r\n..", b"\r\n.")) - (1 if content.startswith(b"..") else 0)
        self.event("message", **{"from": self.mail_from}, rcpts=self.rcpts, size=size, tls=self.tls)
        self.reset()
        if MODE == "dot-extra-250":
            return self.extra_250()
        if MODE == "slow-dot":
            n = 0
            while True:
                n += 1
                self.raw(("250-still queueing %d\r\n" % n).encode())
                time.sleep(float(ARGS.mode_arg or 1))
        self.reply(250, "2.0.0 queued", "as X%d" % self.done)
        if MODE == "close-after-first":
            self.close()

    def extra_250(self):
        """Two replies to one dot: in one write (the client reads them
        together), or the second after a pause, when the client may have
        pipelined its next MAIL/RCPT/DATA already."""
        delay = int(ARGS.mode_arg or 0)
        if not delay:
            return self.raw(b"250 ok one\r\n250 ok two\r\n")
        self.raw(b"250 ok one\r\n")
        time.sleep(delay / 1000.0)
        self.raw(b"250 ok two\r\n")

    def analyse(self, content):
        bare_lf = re.search(rb"(?<!\r)\n", content) is not None
        bare_cr = re.search(rb"\r(?!\n)", content) is not None
        long_line = any(len(l) > 998 for l in content.split(b"\r\n"))
        eight_bit = re.search(rb"[\x80-\xff]", content) is not None
        self.event("data", bytes=len(content), empty=not content, tls=self.tls, bare_lf=bare_lf,
                   bare_cr=bare_cr, long_line=long_line, eight_bit=eight_bit)
        if bare_lf or bare_cr:
            self.violation("bare CR or LF in DATA content (SMTP smuggling risk)")
        if long_line:
            self.violation("DATA line over 998 octets")
        if eight_bit and not self.eightbit:
            self.violation("8-bit content although 8BITMIME was not offered")


def serve(conn, n):
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        Session(conn, n).run()
    except Exception as e:  # never let one connection kill the server
        log("conn %d: internal error: %r" % (n, e))


def main():
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", ARGS.port))
    srv.listen(128)
    log("listening on 127.0.0.1:%d" % ARGS.port)
    while True:
        try:
            conn, _ = srv.accept()
        except InterruptedError:
            continue
        COUNTER[0] += 1
        threading.Thread(target=serve, args=(conn, COUNTER[0]), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
