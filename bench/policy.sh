#!/usr/bin/env bash
# bench/policy.sh BUILD - what destination TLS policy costs (make bench, step 9).
#
# A campaign of COUNT recipients over DOMAINS domains (COUNT/DOMAINS each),
# sent by `ringmail send --db` to one ringmail sink over STARTTLS, with the
# DNS of a loopback testbed (tests/e2e/dnssec_lib.sh: nsd, and unbound as
# the resolver) and an HTTPS policy server (tests/e2e/sts_server.py):
#   off       pol.test's domains, mta_sts = off: the configured policy
#   sts-cold  the same domains, mta_sts = on, the PostgreSQL policy cache
#             emptied first: every domain's TXT looked up, its policy
#             (enforce, mx: mx.pol.test) fetched once
#   sts-warm  the same again, the cache kept: TXT lookups, no fetch
#   dane      sec.test's domains (a signed zone; every domain its own MX
#             host with a TLSA 3 1 1 record), dnssec_resolver = unbound:
#             one TLSA lookup per MX host
# Per run: sender CPU per message (send's own user+system over the run,
# start-up, database threads and fetcher threads included), messages/s, and
# the counts of MTA-STS TXT lookups, policy fetches (the policy server's own
# log) and TLSA queries (send's summary). The four runs alternate, RUNS
# rounds; medians in bench/results/policy.json. Every run must deliver
# COUNT messages under the policy it is about (delivery.tls_policy), or it
# is FAILED and the bench exits 1.
#
# Environment: RUNS [3], COUNT [100000], DOMAINS [1000], CONNS [50],
# VARIANTS ["off sts-cold sts-warm dane"]
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}
COUNT=${COUNT:-100000}
DOMAINS=${DOMAINS:-1000}
CONNS=${CONNS:-50}
OUT=bench/results
mkdir -p "$OUT/runs"
. tests/e2e/lib.sh
e2e_tmpdir
. tests/e2e/dnssec_lib.sh
PY=${E2E_PY:-/usr/bin/python3}

fail() { echo "  policy bench: $*"; exit 1; }

make_certs "$E2E_TMP/certs" || fail "certificates"
C=$E2E_TMP/certs
SINK_PORT=$(free_port)
HTTPS_PORT=$(free_port)

# ---- certificates: the exchanger mx.pol.test, and one policy host per domain
leaf() { # NAME SAN-LIST
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$E2E_TMP/$1.key" 2>/dev/null &&
        printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
            "$2" >"$E2E_TMP/$1.ext" &&
        openssl req -new -key "$E2E_TMP/$1.key" -subj "/CN=$1" -out "$E2E_TMP/$1.csr" 2>/dev/null &&
        openssl x509 -req -in "$E2E_TMP/$1.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" \
            -CAcreateserial -CAserial "$E2E_TMP/ca.srl" -days 30 -extfile "$E2E_TMP/$1.ext" \
            -out "$E2E_TMP/$1.leaf.pem" 2>/dev/null &&
        cat "$E2E_TMP/$1.leaf.pem" "$C/ca.pem" >"$E2E_TMP/$1.pem"
}
doms() { seq -f "d%04g" 1 "$DOMAINS"; }
leaf mx "DNS:mx.pol.test" || fail "the exchanger's certificate"
leaf sts "$(doms | sed 's/^/DNS:mta-sts./; s/$/.pol.test/' | paste -sd,)" || fail "the policy host certificate"

# ---- DNS: pol.test unsigned (MTA-STS), sec.test signed (DANE)
SPKI=$(spki_sha256 "$E2E_TMP/mx.pem")
T="_$SINK_PORT._tcp"
dnssec_zone pol.test 0 "mx IN A 127.0.0.61
$(doms | while read -r d; do
    printf '%s IN MX 10 mx.pol.test.\n_mta-sts.%s IN TXT "v=STSv1; id=20261206"\nmta-sts.%s IN A 127.0.0.60\n' "$d" "$d" "$d"
done)" || fail "zone pol.test"
dnssec_zone sec.test 1 "$(doms | while read -r d; do
    printf '%s IN MX 10 mx.%s\nmx.%s IN A 127.0.0.61\n%s.mx.%s IN TLSA 3 1 1 %s\n' "$d" "$d" "$d" "$T" "$d" "$SPKI"
done)" || fail "zone sec.test"
dnssec_start || fail "nsd and unbound"
RESOLVER=127.0.0.54:$DNSSEC_PORT

# ---- the policy server, the sink, PostgreSQL
POL=$E2E_TMP/policies
mkdir -p "$POL"
for d in $(doms); do
    printf 'version: STSv1\r\nmode: enforce\r\nmx: mx.pol.test\r\nmax_age: 86400\r\n' >"$POL/$d.pol.test"
done
HTTPS_LOG=$E2E_TMP/https.log
: >"$HTTPS_LOG"
e2e_bg sts "$PY" tests/e2e/sts_server.py 127.0.0.60 "$HTTPS_PORT" "$E2E_TMP/sts.pem" \
    "$E2E_TMP/sts.key" "$POL" "$HTTPS_LOG"
wait_port 127.0.0.60 "$HTTPS_PORT" 10 "$E2E_BG_PID" || fail "the policy server"
e2e_bg sink "$RM" sink --listen "127.0.0.61:$SINK_PORT" --threads 1 --hostname mx.pol.test \
    --tls-cert "$E2E_TMP/mx.pem" --tls-key "$E2E_TMP/mx.key"
wait_port 127.0.0.61 "$SINK_PORT" 10 "$E2E_BG_PID" || fail "the sink"
start_postgres "$E2E_TMP/pg" || fail "postgres does not start"
"$RM" db migrate --db "$PG_URL" >/dev/null || fail "db migrate"

conf() { # NAME EXTRA-GLOBAL
    printf '[global]\ntls = required\nretry = 1s\nmax_age = 1m\n%s\n[isp pol]\ndomains = *.pol.test, *.sec.test\nmax_connections = %s\n' \
        "$2" "$CONNS" >"$E2E_TMP/$1.conf"
}
conf off "mta_sts = off"
conf sts "mta_sts = on"
conf dane "mta_sts = off
dnssec_resolver = $RESOLVER"

# run VARIANT ROUND: one campaign, its send's JSON summary and the counts
run() {
    local v=$1 i=$2 zone=pol.test id
    [ "$v" = dane ] && zone=sec.test
    [ "$v" = sts-cold ] && psql_q "DELETE FROM ringmail.mta_sts_policy" >/dev/null
    id=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
        VALUES ('$v $i', 'news@sender.test', 'Policy', repeat('x', 2000)) RETURNING id")
    psql_q "INSERT INTO ringmail.recipient (campaign_id, address)
        SELECT $id, 'u' || g || '@d' || lpad((g % $DOMAINS + 1)::text, 4, '0') || '.$zone'
        FROM generate_series(1, $COUNT) g" >/dev/null
    local f0 c=${v%%-*}
    f0=$(wc -l <"$HTTPS_LOG")
    "$RM" send --db "$PG_URL" --campaign "$id" --config "$E2E_TMP/$c.conf" --node "b$v$i" \
        --journal "$E2E_TMP/$v.$i.journal" --resolver "$RESOLVER" --mx-port "$SINK_PORT" \
        --ca "$C/ca.pem" --mta-sts-port "$HTTPS_PORT" --json \
        >"$OUT/runs/policy-$v.$i.json" 2>"$E2E_TMP/$v.$i.err" ||
        echo "  $v run $i: exit $? ($(tail -1 "$E2E_TMP/$v.$i.err"))"
    [ -n "${POLICY_KEEP_ERR:-}" ] && cp "$E2E_TMP/$v.$i.err" "$POLICY_KEEP_ERR.$v.$i"
    # What was not delivered under the policy the run is about, and why (a few rows).
    psql_q "SELECT DISTINCT ON (split_part(r.address, '@', 2)) split_part(r.address, '@', 2),
            d.outcome, d.tls_policy, d.tls_policy_mode, d.reason, d.tls_result, left(d.reply, 160)
        FROM ringmail.delivery d JOIN ringmail.recipient r ON r.id = d.recipient_id
        WHERE d.campaign_id = $id AND coalesce(d.tls_policy, '-') <> '$(case $v in off) echo config ;; dane) echo dane ;; *) echo mta-sts ;; esac)'
        LIMIT 3" | sed "s/^/  $v run $i: not under its policy: /"
    "$PY" - "$OUT/runs/policy-$v.$i.json" "$v" \
        "$(($(wc -l <"$HTTPS_LOG") - f0))" \
        "$(psql_q "SELECT string_agg(p || '=' || n, ' ') FROM (SELECT coalesce(tls_policy, '-') AS p,
            count(*) AS n FROM ringmail.delivery WHERE campaign_id = $id AND outcome = 'accepted'
            GROUP BY 1 ORDER BY 1) x")" <<'PY'
import json, sys
path, v, fetches, policies = sys.argv[1:5]
try:
    d = json.load(open(path))
except Exception:
    d = {}
d["bench"] = {"variant": v, "policy_fetches": int(fetches), "accepted_by_policy": policies}
json.dump(d, open(path, "w"), indent=1)
PY
}

echo "  $COUNT recipients over $DOMAINS domains, $CONNS connections, 2 KB, STARTTLS; $RUNS rounds of: off sts-cold sts-warm dane"
for i in $(seq 1 "$RUNS"); do
    for v in ${VARIANTS:-off sts-cold sts-warm dane}; do
        run "$v" "$i"
    done
done

"$PY" - "$COUNT" "$DOMAINS" "$RUNS" <<'PY'
import json, statistics, sys
count, domains, runs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
want = {"off": "config", "sts-cold": "mta-sts", "sts-warm": "mta-sts", "dane": "dane"}
res, bad = {"count": count, "domains": domains, "runs": {}, "medians": {}}, 0
for v in ("off", "sts-cold", "sts-warm", "dane"):
    rows = []
    for i in range(1, runs + 1):
        try:
            d = json.load(open("bench/results/runs/policy-%s.%d.json" % (v, i)))
        except Exception:
            d = {}
        b = d.get("bench", {})
        # A domain whose _mta-sts TXT lookup got no answer (said on stderr,
        # counted) goes as configured when nothing is cached (RFC 8461 5.1):
        # allowed, and reported, never silent.
        by = dict(x.split("=") for x in (b.get("accepted_by_policy") or "").split())
        dns_fallback = int(by.get("config", 0)) if v.startswith("sts") else 0
        per_domain = count // domains
        if dns_fallback > d.get("mta_sts", {}).get("txt_lookups_failed", 0) * per_domain:
            dns_fallback = -1
        if (d.get("accepted") != count or dns_fallback < 0
                or int(by.get(want[v], 0)) + max(dns_fallback, 0) != count):
            print("  %-8s run %d: FAILED (accepted %s of %d; by policy: %s)"
                  % (v, i, d.get("accepted"), count, b.get("accepted_by_policy")))
            bad = 1
            continue
        sts = d.get("mta_sts", {})
        isp = d.get("isps", {}).get("pol", {})
        rows.append({"msgs_per_s": count / d["wall_s"], "cpu_us_per_msg": d["cpu_s"] * 1e6 / count,
                     "connections": isp.get("connections", 0), "tls_full": isp.get("tls_full", 0),
                     "cpu_s": d["cpu_s"], "wall_s": d["wall_s"],
                     "txt_lookups": sts.get("txt_lookups", 0), "policy_fetches": b["policy_fetches"],
                     "tlsa_queries": d.get("dane", {}).get("tlsa_queries", 0),
                     "txt_failed": d.get("mta_sts", {}).get("txt_lookups_failed", 0)})
    res["runs"][v] = rows
    if rows:
        m = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        res["medians"][v] = m
off = res["medians"].get("off")
print("  %-9s %9s %11s %7s %12s %10s %8s %8s" % ("", "msgs/s", "CPU us/msg", "vs off",
      "connections", "full TLS", "fetches", "TLSA"))
for v, m in res["medians"].items():
    print("  %-9s %9.0f %11.1f %6.2fx %12d %10d %8d %8d" % (v, m["msgs_per_s"], m["cpu_us_per_msg"],
          m["cpu_us_per_msg"] / off["cpu_us_per_msg"] if off else float("nan"),
          m["connections"], m["tls_full"], m["policy_fetches"], m["tlsa_queries"]))
print("  (medians of %d runs; sender CPU per message follows the connections and full handshakes"
      " the pool opened, which vary from run to run)" % runs)
for v, rows in res["runs"].items():
    failed = sum(r["txt_failed"] for r in rows)
    if failed:
        print("  %s: %d _mta-sts TXT lookups got no answer over %d runs (those domains went as"
              " configured)" % (v, failed, len(rows)))
json.dump(res, open("bench/results/policy.json", "w"), indent=1)
sys.exit(bad)
PY
