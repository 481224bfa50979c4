# lib.sh - shared helpers for the end-to-end tests (sourced, bash).
#
#   e2e_tmpdir            private temp dir in $E2E_TMP, removed on exit
#   e2e_cleanup CMD       run CMD on exit (servers), even on failure
#   free_port             print an unused TCP port on 127.0.0.1
#   wait_port H P [S]     wait up to S seconds (10) for a listener
#   make_certs DIR        test CA, server (localhost, sink.test, 127.0.0.1), self-signed, expired
#   check NAME CMD...     one "ok - NAME" / "not ok - NAME" line
#   check_eq NAME EXP ACT
#   e2e_finish            exit 0 only if every check passed
E2E_PASS=0
E2E_FAIL=0
E2E_CLEANUP=()

e2e_run_cleanup() {
    local i
    for ((i = ${#E2E_CLEANUP[@]} - 1; i >= 0; i--)); do eval "${E2E_CLEANUP[$i]}" >/dev/null 2>&1; done
    [ -n "${E2E_TMP:-}" ] && [ -z "${E2E_KEEP:-}" ] && rm -rf "$E2E_TMP"
}

e2e_tmpdir() {
    E2E_TMP=$(mktemp -d /tmp/ringmail-e2e.XXXXXX)
    trap e2e_run_cleanup EXIT
}

e2e_cleanup() { E2E_CLEANUP+=("$1"); }

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

e2e_finish() {
    echo "# $(basename "$0"): $E2E_PASS passed, $E2E_FAIL failed"
    [ "$E2E_FAIL" -eq 0 ] && [ "$E2E_PASS" -gt 0 ]
}
