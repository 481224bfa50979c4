#!/usr/bin/env python3
"""Checks for the pool's end-to-end tests (test_pool.sh, test_pool_limits.sh):
python3 pool_checks.py COMMAND ARGS... (exit 0 = pass)."""
import json, re, sys

def rows(path):
    out = []
    for l in open(path, errors="replace"):
        l = l.strip()
        if l:
            out.append(json.loads(l))
    return out

def addrs(path, pattern=None):
    out = []
    for l in open(path):
        l = l.strip()
        if not l or l.startswith("#"):
            continue
        if pattern is None or re.search(pattern, l):
            out.append(l)
    return out

def stats(path):
    return json.load(open(path))

def once(stats_file, rcpt_file, pattern=None):
    """Every address of rcpt_file matching pattern delivered exactly once, nothing else."""
    d = stats(stats_file).get("deliveries", {})
    want = addrs(rcpt_file, pattern)
    bad = {w: d.get(w, 0) for w in want if d.get(w, 0) != 1}
    extra = sorted(set(d) - set(want))
    print("want %d, delivered %d distinct, %d not exactly once, %d unexpected"
          % (len(want), len(d), len(bad), len(extra)))
    print("not exactly once (first 10):", sorted(bad.items())[:10])
    print("unexpected (first 10):", extra[:10])
    assert want and not bad and not extra

def _rate(stats_file):
    """Accepted messages/s between the sink's first and last acceptance."""
    s = stats(stats_file)
    n, first, last = s.get("accepted_rcpts", 0), s.get("first_accept_ms", 0), s.get("last_accept_ms", 0)
    print("accepted %s first_accept_ms %s last_accept_ms %s" % (n, first, last))
    assert n > 10 and first > 0 and last > first, "not enough data"
    r = (n - 1) * 1000.0 / (last - first)
    print("measured %.1f/s over %d ms" % (r, last - first))
    return r

def rate(stats_file):
    """Prints the sink's delivered rate, (n-1)*1000/(last-first), as an integer (0: no data)."""
    s = json.load(open(stats_file))
    n, first, last = s.get("accepted_rcpts", 0), s.get("first_accept_ms", 0), s.get("last_accept_ms", 0)
    if n < 10 or first <= 0 or last <= first:
        print(0)
        return
    print(int(round((n - 1) * 1000.0 / (last - first))))

def rate_within(stats_file, limit, tol):
    limit, tol = float(limit), float(tol)
    r = _rate(stats_file)
    assert abs(r - limit) <= tol * limit, "%.1f/s not within %.0f%% of %.0f/s" % (r, tol * 100, limit)

def rate_max(stats_file, limit, tol):
    limit, tol = float(limit), float(tol)
    r = _rate(stats_file)
    assert r <= limit * (1 + tol), "%.1f/s is faster than %.0f/s" % (r, limit)

def window_rate(samples, t1, t2):
    """Messages/s between the first sample at or after t1 and the last at or before t2."""
    t1, t2 = int(t1), int(t2)
    pts = [tuple(map(int, l.split())) for l in open(samples) if len(l.split()) == 2]
    a = next((p for p in pts if p[0] >= t1), None)
    b = next((p for p in reversed(pts) if p[0] <= t2), None)
    if not a or not b or b[0] - a[0] < 300:
        print(0)
        return
    print(int(round((b[1] - a[1]) * 1000.0 / (b[0] - a[0]))))

def peers(stats_file, allowed, maxconc):
    """peers = exactly the allowed IPs, each with peak_concurrent <= maxconc."""
    p = stats(stats_file).get("peers", {})
    print("peers:", json.dumps(p))
    want = set(allowed.split(","))
    assert set(p) == want, "peers %s, want %s" % (sorted(p), sorted(want))
    for ip, v in p.items():
        assert 1 <= v.get("peak_concurrent", 0) <= int(maxconc), (ip, v)
        assert v.get("accepted", 0) > 0, (ip, v)

def final(records, rcpt, expr):
    """The last final record of rcpt satisfies expr (d = that record)."""
    rs = [r for r in rows(records) if r.get("rcpt") == rcpt]
    for r in rs:
        print(json.dumps(r))
    fin = [r for r in rs if r.get("final") is True]
    assert len(fin) == 1, "%d final records" % len(fin)
    assert eval(expr, {}, {"d": fin[0]}), expr

def each(records, pattern, expr):
    """Every record of a recipient matching pattern satisfies expr; there is one."""
    rs = [r for r in rows(records) if re.search(pattern, r.get("rcpt", ""))]
    bad = [r for r in rs if not eval(expr, {}, {"d": r})]
    print("%d records, %d failing %s; first: %s" % (len(rs), len(bad), expr, bad[:3]))
    assert rs and not bad

def any_(records, pattern, expr):
    rs = [r for r in rows(records) if re.search(pattern, r.get("rcpt", ""))]
    for r in rs[:10]:
        print(json.dumps(r))
    assert any(eval(expr, {}, {"d": r}) for r in rs), expr

def finals(records, rcpt_file, expr):
    """Every recipient of rcpt_file has exactly one final record, and it satisfies expr."""
    rs = rows(records)
    want = addrs(rcpt_file)
    fin = {}
    for r in rs:
        if r.get("final") is True:
            fin.setdefault(r.get("rcpt"), []).append(r)
    bad = [w for w in want if len(fin.get(w, [])) != 1 or not eval(expr, {}, {"d": fin[w][0]})]
    print("%d recipients, %d bad: %s" % (len(want), len(bad), [(w, fin.get(w)) for w in bad[:3]]))
    assert want and not bad

def aio_rcpts(count_file, rcpt_file):
    """aiosmtpd got every recipient exactly once, over TLS, authenticated as alice."""
    msgs = rows(count_file)
    got = [r for m in msgs for r in m["rcpts"]]
    want = addrs(rcpt_file)
    print("%d messages, %d rcpts; want %d" % (len(msgs), len(got), len(want)))
    assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))[:10]
    bad = [m for m in msgs if not m["tls"] or m.get("auth_user") != "alice"]
    assert not bad, bad[:2]

def metric(path, name, isp):
    """A sample line of metric name with label isp="isp"; prints its value."""
    pat = re.compile(r'^%s\{[^}]*\bisp="%s"[^}]*\}\s+(\S+)' % (re.escape(name), re.escape(isp)))
    vals = [m.group(1) for m in map(pat.match, open(path)) if m]
    print(" ".join(vals))
    assert vals, "no %s{isp=\"%s\"} sample" % (name, isp)

if __name__ == "__main__":
    cmd = sys.argv[1].rstrip("_")
    globals()[cmd if cmd != "any" else "any_"](*sys.argv[2:])
