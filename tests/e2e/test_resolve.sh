#!/usr/bin/env bash
# MX resolution with c-ares on the ring against a real dnsmasq on loopback:
# preference order, MX rollup to an ISP, implicit MX (A only), null MX,
# NXDOMAIN, IDN A-labels, TTLs, and a dead resolver as a temporary failure.
set -u
. "$(dirname "$0")/lib.sh"
e2e_tmpdir
RM=${RINGMAIL:-build/ringmail}
DNS_PORT=$(free_port)
dnsmasq --keep-in-foreground --port="$DNS_PORT" --listen-address=127.0.0.1 --bind-interfaces \
    --no-resolv --no-hosts --local=/test/ --local-ttl=300 --pid-file= \
    --log-queries --log-facility="$E2E_TMP/queries.log" \
    --mx-host=gmail.test,mx2.gmail.test,20 --mx-host=gmail.test,mx1.gmail.test,10 \
    --host-record=mx1.gmail.test,127.0.0.11 --host-record=mx2.gmail.test,127.0.0.12 \
    --mx-host=hosted.test,alt1.aspmx.l.google.com,5 \
    --host-record=plain.test,127.0.0.13 --mx-host=nullmx.test,.,0 \
    --mx-host=xn--bcher-kva.test,mx.xn--bcher-kva.test,10 \
    --host-record=mx.xn--bcher-kva.test,127.0.0.14 >"$E2E_TMP/dnsmasq.log" 2>&1 &
e2e_cleanup "kill $!"
sleep 0.3
R=$E2E_TMP/resolve.jsonl
"$RM" resolve --resolver "127.0.0.1:$DNS_PORT" --config ringmail.conf.example \
    gmail.test hosted.test plain.test nullmx.test nosuch.test bücher.test >"$R" 2>"$E2E_TMP/err"
rc=$?
cat "$R"
field() { /usr/bin/python3 -c 'import json,sys
for l in open(sys.argv[1]):
    d=json.loads(l)
    if d["domain"]==sys.argv[2]:
        v=eval(sys.argv[3], {}, {"d": d}); print(v)' "$R" "$1" "$2"; }
check_eq "exit status 1 when some domain failed" 1 "$rc"
check_eq "MX in preference order" "mx1.gmail.test mx2.gmail.test" "$(field gmail.test '" ".join(m["host"] for m in d["mx"])')"
check_eq "MX host addresses" "127.0.0.11" "$(field gmail.test 'd["mx"][0]["addrs"][0]')"
check_eq "TTL taken from the answer" 300 "$(field gmail.test 'd["ttl"]')"
check_eq "MX rollup: a domain on Google's exchangers is gmail" gmail "$(field hosted.test 'd["isp"]')"
check_eq "no MX: the domain itself (implicit MX)" "True 127.0.0.13" "$(field plain.test 'str(d["implicit_mx"])+" "+d["mx"][0]["addrs"][0]')"
check_eq "null MX is permanent" null_mx "$(field nullmx.test 'd["status"]')"
check_eq "NXDOMAIN is permanent" nxdomain "$(field nosuch.test 'd["status"]')"
check_eq "IDN domain queried as its A-label" "xn--bcher-kva.test ok" "$(field bücher.test 'd["ascii"]+" "+d["status"]')"
: >"$E2E_TMP/queries.log"
"$RM" resolve --resolver "127.0.0.1:$DNS_PORT" gmail.test gmail.test gmail.test nosuch.test \
    nosuch.test >"$R" 2>"$E2E_TMP/cache.err"
check_eq "answers cached by TTL: gmail.test asked once for 3 lookups" 1 \
    "$(grep -c 'query\[MX\] gmail.test from' "$E2E_TMP/queries.log")"
check_eq "NXDOMAIN cached too" 1 "$(grep -c 'query\[MX\] nosuch.test from' "$E2E_TMP/queries.log")"
check "cache hits reported" grep -q "2 MX queries, 3 answered from the cache" "$E2E_TMP/cache.err"
check_eq "cached answers are the same answer" "mx1.gmail.test" "$(field gmail.test 'd["mx"][0]["host"]' | sort -u)"
DEAD=$(free_port)
"$RM" resolve --resolver "127.0.0.1:$DEAD" --timeout-ms 200 gmail.test >"$R" 2>/dev/null
check_eq "a dead resolver is a temporary failure" tempfail "$(field gmail.test 'd["status"]')"
"$RM" resolve --timeout-ms 2s gmail.test >/dev/null 2>"$E2E_TMP/bad.err"
check_eq "--timeout-ms 2s: refused (exit 2)" 2 "$?"
check_grep "--timeout-ms 2s: says why" "bad value for --timeout-ms: '2s' \\(want 1..600000\\)" "$E2E_TMP/bad.err"
e2e_finish
