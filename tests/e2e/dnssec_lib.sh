# dnssec_lib.sh - a DNSSEC testbed on loopback for the DANE tests
# (/work/shared/DANE-TESTBED.md), sourced after lib.sh and e2e_setup:
# an authoritative nsd with signed (and unsigned) zones, and unbound as the
# validating resolver that trusts the signed zones' keys. Nothing leaves
# 127.0.0.0/8: unbound has no root hints it could use (every zone it may
# ask is a stub to nsd, the rest is refused by nsd).
#   dnssec_zone NAME SIGNED BODY    write zone NAME (SIGNED 1: signed with a
#                                   fresh ECDSA P-256 KSK/ZSK, its DS the
#                                   trust anchor; 0: insecure); BODY is the
#                                   zone's records after SOA and NS
#   dnssec_corrupt NAME OWNER TYPE  break the signature over OWNER's TYPE
#                                   RRset in NAME's signed file (a bogus answer)
#   dnssec_start                    nsd on 127.0.0.53:$NSD_PORT, unbound on
#                                   127.0.0.54:$DNSSEC_PORT (both stopped on exit)
#   spki_sha256 CERT.pem            hex SHA-256 of the certificate's SPKI (TLSA 3 1 1)
#   dnssec_queries NAME TYPE        how many queries for NAME TYPE unbound got
#   (unbound logs every query to $DNSSEC_DIR/unbound.log)
# shellcheck shell=bash

DNSSEC_DIR=""
DNSSEC_ZONES=()
NSD_PORT=""
DNSSEC_PORT=""

_dnssec_dir() {
    [ -n "$DNSSEC_DIR" ] && return 0
    DNSSEC_DIR=$E2E_TMP/dnssec
    mkdir -p "$DNSSEC_DIR"
    chmod 755 "$E2E_TMP" "$DNSSEC_DIR" 2>/dev/null
}

spki_sha256() {
    openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER |
        openssl dgst -sha256 -binary | od -An -tx1 | tr -d ' \n'
}

dnssec_zone() {
    local name=$1 signed=$2 body=$3 zsk ksk
    _dnssec_dir
    cat >"$DNSSEC_DIR/$name.zone" <<ZONE
\$ORIGIN $name.
\$TTL 300
@ IN SOA ns.$name. hostmaster.$name. 1 3600 600 86400 300
@ IN NS ns.$name.
ns IN A 127.0.0.53
$body
ZONE
    if [ "$signed" = 1 ]; then
        (
            cd "$DNSSEC_DIR" || exit 1
            zsk=$(ldns-keygen -a ECDSAP256SHA256 "$name") &&
                ksk=$(ldns-keygen -a ECDSAP256SHA256 -k "$name") &&
                ldns-signzone -n "$name.zone" "$zsk" "$ksk" &&
                cat "$ksk.ds" >>trust-anchors.ds
        ) >"$DNSSEC_DIR/$name.sign.log" 2>&1 || { cat "$DNSSEC_DIR/$name.sign.log" >&2; return 1; }
        DNSSEC_ZONES+=("$name:$name.zone.signed:1")
    else
        DNSSEC_ZONES+=("$name:$name.zone:0")
    fi
}

# Flip a character of the signature field of the RRSIG covering OWNER TYPE:
# the record still parses, its signature no longer verifies.
dnssec_corrupt() {
    "$E2E_PY" - "$DNSSEC_DIR/$1.zone.signed" "$2" "$3" <<'PY'
import sys
path, owner, rtype = sys.argv[1], sys.argv[2].lower(), sys.argv[3].upper()
lines = open(path).read().split("\n")
done = False
for i, l in enumerate(lines):
    f = l.split()
    if len(f) > 5 and f[0].lower() == owner and f[3] == "RRSIG" and f[4].upper() == rtype:
        sig = f[-1]
        c = "A" if sig[5] != "A" else "B"
        f[-1] = sig[:5] + c + sig[6:]
        lines[i] = "\t".join(f)
        done = True
open(path, "w").write("\n".join(lines))
sys.exit(0 if done else 1)
PY
}

dnssec_start() {
    local z name file signed insecure="" stubs=""
    _dnssec_dir
    NSD_PORT=$(free_port)
    DNSSEC_PORT=$(free_port)
    {
        echo "server:"
        echo "  ip-address: 127.0.0.53@$NSD_PORT"
        echo "  port: $NSD_PORT"
        echo "  zonesdir: \"$DNSSEC_DIR\""
        echo "  database: \"\""
        echo "  pidfile: \"$DNSSEC_DIR/nsd.pid\""
        echo "  username: \"\""
        echo "  logfile: \"$DNSSEC_DIR/nsd.log\""
        echo "  xfrdfile: \"$DNSSEC_DIR/xfrd.state\""
        echo "  zonelistfile: \"$DNSSEC_DIR/zone.list\""
        echo "remote-control:"
        echo "  control-enable: no"
        for z in "${DNSSEC_ZONES[@]}"; do
            IFS=: read -r name file signed <<<"$z"
            printf 'zone:\n  name: %s\n  zonefile: %s\n' "$name" "$file"
        done
    } >"$DNSSEC_DIR/nsd.conf"
    for z in "${DNSSEC_ZONES[@]}"; do
        IFS=: read -r name file signed <<<"$z"
        [ "$signed" = 1 ] || insecure+="  domain-insecure: \"$name\""$'\n'
        stubs+="stub-zone:"$'\n'"  name: \"$name\""$'\n'"  stub-addr: 127.0.0.53@$NSD_PORT"$'\n'
    done
    [ -f "$DNSSEC_DIR/trust-anchors.ds" ] || : >"$DNSSEC_DIR/trust-anchors.ds"
    cat >"$DNSSEC_DIR/unbound.conf" <<CONF
server:
  interface: 127.0.0.54@$DNSSEC_PORT
  port: $DNSSEC_PORT
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$DNSSEC_DIR"
  pidfile: "$DNSSEC_DIR/unbound.pid"
  use-syslog: no
  logfile: "$DNSSEC_DIR/unbound.log"
  verbosity: 1
  log-queries: yes
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  trust-anchor-file: "$DNSSEC_DIR/trust-anchors.ds"
  module-config: "validator iterator"
  local-zone: "test." nodefault
  val-log-level: 2
  do-ip6: no
$insecure$stubs
remote-control:
  control-enable: no
CONF
    e2e_bg nsd nsd -c "$DNSSEC_DIR/nsd.conf" -d
    wait_port 127.0.0.53 "$NSD_PORT" 10 "$E2E_BG_PID" || {
        cat "$E2E_TMP/nsd.log" "$DNSSEC_DIR/nsd.log" >&2
        return 1
    }
    e2e_bg unbound unbound -d -c "$DNSSEC_DIR/unbound.conf"
    wait_port 127.0.0.54 "$DNSSEC_PORT" 10 "$E2E_BG_PID" || {
        cat "$E2E_TMP/unbound.log" "$DNSSEC_DIR/unbound.log" >&2
        return 1
    }
}

dnssec_queries() {
    grep -ciE " $1\.? $2 IN" "$DNSSEC_DIR/unbound.log"
}
