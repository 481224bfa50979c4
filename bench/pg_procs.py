#!/usr/bin/env python3
"""bench/pg_procs.py POSTMASTER_PID OUT.json: samples the CPU time of every
process of one PostgreSQL cluster every 20 ms until SIGTERM, then writes
per process its title (ps display: "postgres: ringmail db [local] idle",
"postgres: walwriter", ...) and the last user+system ticks seen, sorted by
ticks. A backend's last 20 ms before it exits are missed; over a run of
seconds that is noise. bench/nodes.sh sums the client backends from it
(the issue's "backend CPU per recipient") beside the whole cluster's.

With a third argument, a psql connection string: every 0.5 s one psql
session (kept open, its own backend left out) reads pg_stat_activity, and
each backend of a node gets the role its statements show most often
over those looks ("role"; a backend idle shows its last statement):
  claims  - the claimer: a claim (SKIP LOCKED) or the sweep of fresh rows;
  results - the results writer: the state update, the attempt COPY;
  node    - the heartbeat's connection: arms (INSERT INTO ringmail.armed),
            the node's heartbeat (UPDATE ringmail.node), takeovers, counts.
The issue's "claim update, result update, delivery row" is claims +
results; node is what a node adds to know what it may have sent. The same
text names them in the build the issue was filed on."""
import json, os, signal, subprocess, sys, time

pm = int(open(sys.argv[1]).readline())
out = sys.argv[2]
conninfo = sys.argv[3] if len(sys.argv) > 3 else None
ROLES = (("node", ("INSERT INTO ringmail.armed", "UPDATE ringmail.node SET heartbeat_at",
                   "UPDATE ringmail.node SET beat_at")),
         ("claims", ("SKIP LOCKED", "ringmail.sweep w")),
         ("results", ("x.state", "COPY ringmail.", "INSERT INTO ringmail.session (",
                      "DELETE FROM ringmail.claim c WHERE c.node")))
votes = {}  # pid -> {role: looks that showed it}
psql = None
own = None
if conninfo:
    psql = subprocess.Popen(["psql", "-qAtX", "-F", "\x1f", conninfo], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def read_roles():
    """one look at pg_stat_activity: a vote for each backend's role"""
    global own
    psql.stdin.write("SELECT pid, pg_backend_pid(), regexp_replace(query, '\\s+', ' ', 'g')"
                     " FROM pg_stat_activity WHERE backend_type = 'client backend';\n"
                     "SELECT 'end-of-sample';\n")
    psql.stdin.flush()
    for line in psql.stdout:
        line = line.rstrip("\n")
        if line == "end-of-sample":
            return
        f = line.split("\x1f")
        if len(f) < 3:
            continue
        pid, own = int(f[0]), int(f[1])
        for name, marks in ROLES:
            if any(m in f[2] for m in marks):
                v = votes.setdefault(pid, {})
                v[name] = v.get(name, 0) + 1
                break

hz = os.sysconf("SC_CLK_TCK")
seen = {}  # pid -> {"title", "ticks"}
base = {}  # pid -> ticks when first seen (a process older than the sampler)
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
first = True
next_roles = 0.0
while True:
    if psql and time.monotonic() >= next_roles:
        try:
            read_roles()
        except (OSError, ValueError, StopIteration):
            pass
        next_roles = time.monotonic() + 0.5
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            s = open("/proc/%s/stat" % p).read()
            f = s[s.rindex(")") + 2:].split()
            if int(f[1]) != pm:
                continue
            ticks = int(f[11]) + int(f[12])
            title = open("/proc/%s/cmdline" % p).read().replace("\0", " ").strip()
        except (OSError, ValueError):
            continue
        pid = int(p)
        if pid not in seen:
            base[pid] = ticks if first else 0
            seen[pid] = {"pid": pid, "title": title, "ticks": 0}
        seen[pid]["ticks"] = ticks - base[pid]
        if title and (not seen[pid]["title"] or not title.endswith("idle")):
            seen[pid]["title"] = title  # the last busy one: what it does
    first = False
    if stop:
        break
    time.sleep(0.02)
if psql:
    try:
        read_roles()
    except (OSError, ValueError, StopIteration):
        pass
    psql.stdin.close()
    psql.wait()
    seen.pop(own, None)  # the sampler's own psql session
rows = sorted(seen.values(), key=lambda x: -x["ticks"])
for r in rows:
    v = votes.get(r["pid"], {})
    r["role"] = max(v, key=v.get) if v else ""
for r in rows:
    r["cpu_s"] = r["ticks"] / hz
json.dump(rows, open(out, "w"))
