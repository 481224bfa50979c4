#!/usr/bin/env python3
"""bench/pg_procs.py POSTMASTER_PID OUT.json: samples the CPU time of every
process of one PostgreSQL cluster every 20 ms until SIGTERM, then writes
per process its title (ps display: "postgres: ringmail db [local] idle",
"postgres: walwriter", ...) and the last user+system ticks seen, sorted by
ticks. A backend's last 20 ms before it exits are missed; over a run of
seconds that is noise. bench/nodes.sh sums the client backends from it
(the issue's "backend CPU per recipient") beside the whole cluster's."""
import json, os, signal, sys, time

pm = int(open(sys.argv[1]).readline())
out = sys.argv[2]
hz = os.sysconf("SC_CLK_TCK")
seen = {}  # pid -> {"title", "ticks"}
base = {}  # pid -> ticks when first seen (a process older than the sampler)
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
first = True
while True:
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
rows = sorted(seen.values(), key=lambda x: -x["ticks"])
for r in rows:
    r["cpu_s"] = r["ticks"] / hz
json.dump(rows, open(out, "w"))
