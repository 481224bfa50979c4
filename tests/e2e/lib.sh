# lib.sh - shared helpers for the end-to-end tests (sourced, bash).
#
#   e2e_tmpdir            private temp dir in $E2E_TMP, removed on exit
#   e2e_cleanup CMD       run CMD on exit (servers), even on failure
#   e2e_setup             e2e_tmpdir, $RM and $CERTS (test CA and certificates)
#   free_port             print an unused TCP port on 127.0.0.1
#   wait_port H P [S]     wait up to S seconds (10) for a listener
#   make_certs DIR        test CA, server (localhost, sink.test, 127.0.0.1), self-signed, expired
#   check NAME CMD...     one "ok - NAME" / "not ok - NAME" line
#   check_eq NAME EXP ACT
#   jget FILE a.b         a JSON field (0 when missing)
#   e2e_finish            exit 0 only if every check passed
E2E_PASS=0
E2E_FAIL=0
E2E_CLEANUP=()

# Runs on exit; keeps the script's own exit status.
e2e_run_cleanup() {
    local rc=$? i
    set +e
    for ((i = ${#E2E_CLEANUP[@]} - 1; i >= 0; i--)); do eval "${E2E_CLEANUP[$i]}" >/dev/null 2>&1; done
    if [ -n "${E2E_TMP:-}" ] && [ -z "${E2E_KEEP:-}" ]; then rm -rf "$E2E_TMP"; fi
    exit "$rc"
}

e2e_tmpdir() {
    E2E_TMP=$(mktemp -d /tmp/ringmail-e2e.XXXXXX)
    trap e2e_run_cleanup EXIT
}

e2e_cleanup() { E2E_CLEANUP+=("$1"); }

# e2e_setup: temp dir, $RM (the ringmail binary) and $CERTS (made once per run).
e2e_setup() {
    e2e_tmpdir
    RM=${RINGMAIL:-build/ringmail}
    CERTS=${RINGMAIL_E2E_CERTS:-$E2E_TMP/certs}
    make_certs "$CERTS"
}

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    local host=$1 port=$2 limit=${3:-10} i
    for ((i = 0; i < limit * 20; i++)); do
        (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $host:$port after ${limit}s" >&2
    return 1
}

make_certs() {
    local d=$1
    [ -f "$d/.done" ] && return 0
    mkdir -p "$d"
    (
        cd "$d" || exit 1
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key
        openssl req -new -x509 -key ca.key -out ca.pem -days 365 -subj "/CN=ringmail test CA"
        openssl ecparam -name prime256v1 -genkey -noout -out server.key
        openssl req -new -key server.key -out server.csr -subj "/CN=sink.test"
        printf 'subjectAltName=DNS:localhost,DNS:sink.test,DNS:mx.test,IP:127.0.0.1\n' >san.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out server.leaf.pem -days 365 -extfile san.ext
        cat server.leaf.pem ca.pem >server.pem
        openssl ecparam -name prime256v1 -genkey -noout -out selfsigned.key
        openssl req -new -x509 -key selfsigned.key -out selfsigned.pem -days 365 \
            -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost"
        # An expired certificate: signed by the CA with a validity in the past.
        openssl ecparam -name prime256v1 -genkey -noout -out expired.key
        openssl req -new -key expired.key -out expired.csr -subj "/CN=localhost"
        mkdir -p ca.db && : >ca.db/index.txt && echo 01 >ca.db/serial
        cat >ca.cnf <<CNF
[ca]
default_ca = t
[t]
database = ca.db/index.txt
serial = ca.db/serial
new_certs_dir = ca.db
default_md = sha256
policy = p
copy_extensions = none
[p]
commonName = supplied
[ext]
subjectAltName = DNS:localhost
CNF
        openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr \
            -out expired.pem -startdate 20200101000000Z -enddate 20200201000000Z \
            -extensions ext -notext
    ) >"$d/make_certs.log" 2>&1 || { cat "$d/make_certs.log" >&2; return 1; }
    touch "$d/.done"
}

check() {
    local name=$1; shift
    if "$@" >/dev/null 2>&1; then
        echo "ok - $name"; E2E_PASS=$((E2E_PASS + 1))
    else
        echo "not ok - $name"; E2E_FAIL=$((E2E_FAIL + 1))
    fi
}

check_eq() {
    if [ "$2" = "$3" ]; then
        echo "ok - $1"; E2E_PASS=$((E2E_PASS + 1))
    else
        echo "not ok - $1: expected '$2', got '$3'"; E2E_FAIL=$((E2E_FAIL + 1))
    fi
}

# jget FILE a.b.c: a field of a JSON file (0 when missing).
jget() {
    /usr/bin/python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d.get(k, 0) if isinstance(d, dict) else 0
print(d)' "$1" "$2"
}

e2e_finish() {
    echo "# $(basename "$0"): $E2E_PASS passed, $E2E_FAIL failed"
    [ "$E2E_FAIL" -eq 0 ] && [ "$E2E_PASS" -gt 0 ]
}

# ---- real third-party servers ----

# start_postfix DIR PORT CERT KEY: a private Postfix instance as a TLS sink
# (smtpd on 127.0.0.1:PORT with STARTTLS, every transport discard:). Logs
# to DIR/maillog (postfix_log DIR).
start_postfix() {
    local d=$1 port=$2 cert=$3 key=$4
    mkdir -p "$d/conf" "$d/queue" "$d/data"
    # Postfix's daemons run as the postfix user: they must reach their dirs.
    chmod 755 "$E2E_TMP" "$d"
    cp /etc/postfix/master.cf.proto "$d/conf/master.cf" 2>/dev/null || cp /etc/postfix/master.cf "$d/conf/master.cf"
    cp /etc/postfix/dynamicmaps.cf "$d/conf/" 2>/dev/null
    # Our smtpd on the high port instead of 25; the postlog service for maillog_file.
    sed -i -E 's/^smtp( +)inet/#smtp\1inet/' "$d/conf/master.cf"
    printf '127.0.0.1:%s inet n - n - - smtpd\n' "$port" >>"$d/conf/master.cf"
    grep -q '^postlog' "$d/conf/master.cf" ||
        printf 'postlog unix-dgram n - n - 1 postlogd\n' >>"$d/conf/master.cf"
    cat >"$d/conf/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
maillog_file = $d/maillog
maillog_file_prefixes = $d
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.test
mydestination =
mynetworks = 127.0.0.0/8
relay_domains = static:ALL
smtpd_relay_restrictions = permit_mynetworks, reject
default_transport = discard:
relay_transport = discard:
local_transport = discard:
virtual_transport = discard:
disable_dns_lookups = yes
smtp_dns_support_level = disabled
smtpd_tls_security_level = may
smtpd_tls_chain_files = $key, $cert
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_loglevel = 1
smtpd_client_connection_rate_limit = 0
smtpd_client_connection_count_limit = 0
default_process_limit = 50
smtpd_peername_lookup = no
CF
    chown -R postfix "$d/data" 2>/dev/null
    postfix -c "$d/conf" check >/dev/null 2>&1
    # postfix reports fatal start-up errors only to a terminal (or syslog): give it one.
    script -qec "postfix -c $d/conf start" /dev/null >"$d/start.log" 2>&1 || { cat "$d/start.log" >&2; return 1; }
    e2e_cleanup "postfix -c '$d/conf' stop"
    wait_port 127.0.0.1 "$port" 15
}
stop_postfix() { postfix -c "$1/conf" stop >/dev/null 2>&1; }
postfix_log() { echo "$1/maillog"; }

# wait_for_log FILE REGEX [S]: until FILE has a line matching REGEX.
wait_for_log() {
    local f=$1 re=$2 limit=${3:-10} i
    for ((i = 0; i < limit * 10; i++)); do
        grep -Eq "$re" "$f" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
# wait_for_count FILE REGEX N [S]: until N lines match.
wait_for_count() {
    local f=$1 re=$2 n=$3 limit=${4:-10} i
    for ((i = 0; i < limit * 10; i++)); do
        [ "$(grep -Ec "$re" "$f" 2>/dev/null)" -ge "$n" ] && return 0
        sleep 0.1
    done
    echo "wanted $n lines matching '$re' in $f, have $(grep -Ec "$re" "$f" 2>/dev/null)" >&2
    return 1
}

# start_aiosmtpd PORT CERT KEY [--implicit-tls] [--auth U:P] [--count-file F]
AIOSMTPD_PID=""
start_aiosmtpd() {
    local port=$1 cert=$2 key=$3; shift 3
    /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/aiosmtpd_server.py" --port "$port" \
        --cert "$cert" --key "$key" "$@" >"$E2E_TMP/aiosmtpd.$port.log" 2>&1 &
    AIOSMTPD_PID=$!
    e2e_cleanup "kill $AIOSMTPD_PID"
    wait_port 127.0.0.1 "$port" 15
}
stop_aiosmtpd() { kill "$AIOSMTPD_PID" 2>/dev/null; wait "$AIOSMTPD_PID" 2>/dev/null; }
