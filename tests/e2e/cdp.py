#!/usr/bin/env python3
"""cdp.py - drive headless Chromium over the DevTools protocol (CDP) to test a page.

    cdp.py [--chromium PATH] [--timeout S] [--no-click] [--full-page] [--eval JS] URL OUTDIR

Opens URL in Debian's chromium (--headless=new), records every console
error, uncaught exception and failed load, saves a screenshot of the page
(OUTDIR/1-page.png), checks its form, clicks its button, waits for the page
the click loads and saves that one too (OUTDIR/2-after-click.png). Prints
one JSON object on stdout:

    {"page":  {"status": 200, "title": ..., "h1": ..., "form": {...}, "buttons": N},
     "after": {"status": 200, "url": ..., "title": ..., "h1": ..., "text": ...},
     "errors": ["console error: ...", ...],
     "screenshots": ["OUTDIR/1-page.png", "OUTDIR/2-after-click.png"]}

and exits 0 (the caller judges), or 2 with a reason on stderr when the
browser could not be driven at all. With --no-click it stops after the
first screenshot (no "after"). --full-page takes the first screenshot of
the whole page, not the window. --eval JS evaluates the expression JS once
the page has loaded (after the click, if any) and puts its value (returned
by value: a JSON-able one) in "eval". "requests" lists every URL the page
asked for besides URL itself (a self-contained page asks for none). A
dialog (alert, confirm) is dismissed and counted as an error.

CDP goes over --remote-debugging-pipe (JSON messages ending in NUL on file
descriptors 3 and 4), not a TCP port: Debian's python3 has no websocket
module, and a pipe needs no free port and reaches no one else.
"""
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time


class CdpError(Exception):
    pass


class Browser:
    """One headless Chromium and the pipe to it."""

    def __init__(self, chromium, profile, deadline):
        self.deadline = deadline
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        args = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                "--remote-debugging-pipe", "--user-data-dir=" + profile,
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--mute-audio",
                "--window-size=800,600", "about:blank"]
        # The pipe ends must be descriptors 3 (commands) and 4 (answers).
        shell = 'exec "$@" 3<&%d 4>&%d' % (to_chrome_r, from_chrome_w)
        self.log = open(os.path.join(profile, "chromium.log"), "wb")
        self.proc = subprocess.Popen(["sh", "-c", shell, "sh"] + args,
                                     pass_fds=(to_chrome_r, from_chrome_w),
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.next_id = 0
        self.buf = b""
        self.events = []  # (sessionId, method, params), in arrival order

    def close(self):
        try:
            self.call("Browser.close", timeout=3)
        except (CdpError, OSError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.to_chrome, self.from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()

    def _read_one(self, until):
        """The next message, or None at until."""
        while b"\0" not in self.buf:
            left = until - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.from_chrome], [], [], left)
            if not r:
                return None
            chunk = os.read(self.from_chrome, 1 << 16)
            if not chunk:
                raise CdpError("chromium closed the DevTools pipe (exit %s)" % self.proc.poll())
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=None, timeout=None):
        """Send a command and wait for its answer (events meanwhile are kept)."""
        self.next_id += 1
        my_id = self.next_id  # a dialog dismissed meanwhile takes the next one
        msg = {"id": my_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        until = min(self.deadline, time.monotonic() + (timeout or 1e9))
        while True:
            m = self._read_one(until)
            if m is None:
                raise CdpError("no answer to %s" % method)
            if m.get("id") == my_id:
                if "error" in m:
                    raise CdpError("%s: %s" % (method, m["error"].get("message")))
                return m.get("result", {})
            if "method" in m:
                self.event(m)

    def event(self, m):
        """Keep an event; dismiss a dialog at once, which would stop the page."""
        self.events.append((m.get("sessionId"), m["method"], m.get("params", {})))
        if m["method"] == "Page.javascriptDialogOpening":
            self.dismiss(m.get("sessionId"))

    def wait_event(self, method, session, since, timeout=20):
        """The first event named method at or after events[since]."""
        until = min(self.deadline, time.monotonic() + timeout)
        i = since
        while True:
            while i < len(self.events):
                s, name, params = self.events[i]
                i += 1
                if name == method and s == session:
                    return params
            m = self._read_one(until)
            if m is None:
                raise CdpError("no %s within %d s" % (method, timeout))
            if "method" in m:
                self.event(m)

    def dismiss(self, session):
        """Close an open dialog (its answer is not awaited)."""
        self.next_id += 1
        msg = {"id": self.next_id, "method": "Page.handleJavaScriptDialog",
               "params": {"accept": False}, "sessionId": session}
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")


def errors_of(events):
    """Console errors, uncaught exceptions, failed loads and error log entries."""
    out = []
    for _, name, p in events:
        if name == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = [a.get("value", a.get("description", "")) for a in p.get("args", [])]
            out.append("console %s: %s" % (p["type"], " ".join(map(str, args))))
        elif name == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append("exception: %s" % d.get("exception", {}).get("description", d.get("text")))
        elif name == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            out.append("log %s: %s %s" % (e.get("source"), e.get("text"), e.get("url", "")))
        elif name == "Network.loadingFailed" and not p.get("canceled"):
            out.append("load failed: %s" % p.get("errorText"))
        elif name == "Page.javascriptDialogOpening":
            out.append("dialog %s: %s" % (p.get("type"), p.get("message")))
    return out


def document_status(events, since, session):
    """The HTTP status of the last document response at or after events[since]."""
    status = None
    for s, name, p in events[since:]:
        if s == session and name == "Network.responseReceived" and p.get("type") == "Document":
            status = p["response"].get("status")
    return status


PAGE_JS = """JSON.stringify((() => {
  const f = document.querySelector('form');
  const h = f && f.querySelector('input[type=hidden]');
  return {title: document.title,
          h1: (document.querySelector('h1') || {}).textContent || null,
          text: document.body ? document.body.innerText : null,
          url: location.href,
          buttons: document.querySelectorAll('button').length,
          scripts: document.scripts.length,
          form: f ? {method: f.method, action: f.getAttribute('action'),
                     hidden_name: h && h.name, hidden_value: h && h.value,
                     button: (f.querySelector('button') || {}).textContent || null} : null};
})())"""


def snapshot(b, session):
    r = b.call("Runtime.evaluate", {"expression": PAGE_JS, "returnByValue": True}, session)
    return json.loads(r["result"]["value"])


def screenshot(b, session, path, full_page=False):
    params = {"format": "png"}
    if full_page:
        size = b.call("Page.getLayoutMetrics", {}, session)["cssContentSize"]
        params["captureBeyondViewport"] = True
        params["clip"] = {"x": 0, "y": 0, "width": size["width"],
                          "height": min(size["height"], 16000), "scale": 1}
    r = b.call("Page.captureScreenshot", params, session)
    with open(path, "wb") as f:
        f.write(base64.b64decode(r["data"]))
    return path


def run(chromium, url, outdir, timeout, click, full_page=False, expr=None):
    os.makedirs(outdir, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="ringmail-chromium.")
    b = Browser(chromium, profile, time.monotonic() + timeout)
    try:
        target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            b.call(domain + ".enable", {}, session)
        out = {"screenshots": []}

        mark = len(b.events)
        b.call("Page.navigate", {"url": url}, session)
        b.wait_event("Page.loadEventFired", session, mark)
        out["page"] = snapshot(b, session)
        out["page"]["status"] = document_status(b.events, mark, session)
        out["screenshots"].append(
            screenshot(b, session, os.path.join(outdir, "1-page.png"), full_page))

        if click:
            mark = len(b.events)
            b.call("Runtime.evaluate",
                   {"expression": "document.querySelector('button').click()"}, session)
            b.wait_event("Page.loadEventFired", session, mark)
            out["after"] = snapshot(b, session)
            out["after"]["status"] = document_status(b.events, mark, session)
            out["screenshots"].append(
                screenshot(b, session, os.path.join(outdir, "2-after-click.png")))

        time.sleep(0.2)  # late console messages
        b.call("Runtime.evaluate", {"expression": "1"}, session)
        if expr:
            r = b.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
            if "exceptionDetails" in r:
                out["eval_error"] = r["exceptionDetails"].get("exception", {}).get(
                    "description", r["exceptionDetails"].get("text"))
            out["eval"] = r.get("result", {}).get("value")
        out["errors"] = errors_of(b.events)
        out["requests"] = [p["request"]["url"] for s, name, p in b.events
                           if s == session and name == "Network.requestWillBeSent"
                           and p["request"]["url"] not in (url, "about:blank")]
        return out
    finally:
        b.close()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv):
    chromium, timeout, click = shutil.which("chromium") or "chromium", 30.0, True
    full_page, expr = False, None
    args = []
    it = iter(argv)
    for a in it:
        if a == "--chromium":
            chromium = next(it)
        elif a == "--timeout":
            timeout = float(next(it))
        elif a == "--no-click":
            click = False
        elif a == "--full-page":
            full_page = True
        elif a == "--eval":
            expr = next(it)
        else:
            args.append(a)
    if len(args) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        out = run(chromium, args[0], args[1], timeout, click, full_page, expr)
    except (CdpError, OSError, KeyError, ValueError) as e:
        print("cdp.py: %s" % e, file=sys.stderr)
        return 2
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
