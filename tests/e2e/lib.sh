# lib.sh - shared helpers for the end-to-end tests. Source it from bash
# (works under `set -u`; `set -e` is not required and not recommended):
#
#   set -u
#   . "$(dirname "$0")/lib.sh"
#   e2e_tmpdir                      # or e2e_setup (also $RM and $CERTS)
#   ...
#   check_eq "name" 3 "$(jget out.json accepted)"
#   e2e_finish
#
# Output convention (read by tests/run.sh): one line per check,
# "ok - NAME" or "not ok - NAME: details"; diagnostic lines start with "#".
# A script exits 0 only if it ran at least one check and none failed; the
# exit trap enforces that even when e2e_finish is never reached.
#
# Temp dir and clean-up
#   e2e_tmpdir                  make $E2E_TMP (private, removed on exit; keep it with E2E_KEEP=1)
#   e2e_cleanup CMD             run CMD (a string, eval'd) on exit, last registered first
#   e2e_setup                   e2e_tmpdir + $RM (ringmail binary) + $CERTS (make_certs)
#   e2e_bg NAME CMD...          start CMD in the background, output in $E2E_TMP/NAME.log,
#                               killed on exit; its pid in $E2E_BG_PID
#   e2e_kill PID [S]            SIGTERM, then SIGKILL after S seconds (5); reaps it
#   e2e_require CMD...          a failed check per missing command; returns 1 if any missing
# Ports
#   free_port                   print an unused TCP port on 127.0.0.1 (below the ephemeral range)
#   wait_port HOST PORT [S] [PID]  wait up to S s (10) until PORT listens; fails early if PID dies
#   wait_port_free HOST PORT [S]   wait until nothing listens on PORT
# Certificates
#   make_certs DIR              test CA and certificates (see the function)
# Checks
#   check NAME CMD...           ok if CMD exits 0 (its output is shown only on failure)
#   check_eq NAME EXPECTED ACTUAL
#   check_ne NAME UNEXPECTED ACTUAL
#   check_ge NAME MIN ACTUAL    integers
#   check_le NAME MAX ACTUAL    integers
#   check_grep NAME ERE FILE    FILE has a line matching ERE
#   check_no_grep NAME ERE FILE no line of FILE matches ERE
#   e2e_finish                  "# script: N passed, N failed"; status 0 only if all passed
# JSON (python3 from Debian, no jq needed)
#   jget FILE a.b.0.c           a field of a JSON file; 0 when missing; bools as true/false
#   jcount FILE [PYEXPR]        JSON-lines FILE: how many rows d make PYEXPR true (default: all)
#   jeval FILE PYEXPR           print PYEXPR (strings raw, the rest as JSON) where
#                               rows = the JSON-lines rows of FILE (a list, also with one line)
#                               d = FILE as one JSON document (or rows if it is not one)
# Logs
#   wait_for_log FILE ERE [S]       until a line matches (S = 10)
#   wait_for_count FILE ERE N [S]   until at least N lines match
# Servers (all stopped on exit)
#   start_postfix DIR PORT CERT KEY [param=value...]   private Postfix sink, see below
#   stop_postfix DIR ; postfix_log DIR ; postfix_count DIR WHAT ; postfix_wait DIR WHAT N [S]
#   start_aiosmtpd PORT CERT KEY [aiosmtpd_server.py options...] ; stop_aiosmtpd [PORT]
#   start_scripted PORT MODE [MODE_ARG] [scripted_server.py options...] ; stop_scripted [PORT]
# Clients
#   smtp_probe PORT STEP...     tests/e2e/smtp_probe.py: a raw scripted SMTP client
#                               ('<250' '>EHLO x' '+MAIL...' tls eof silent:1 ...)
#   two_isps CONF RATE          sinks a, b (127.0.0.81/.82) and a config: ISPs a.test, b.test
#   two_isp_campaign NAME N     a campaign of N a.test + N b.test recipients; its id

E2E_PY=${E2E_PY:-/usr/bin/python3}
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_PASS=0
E2E_FAIL=0
E2E_CLEANUP=()
E2E_TMP=""
E2E_CHECK_N=0

# ---------------------------------------------------------------- temp dir, clean-up

# Runs on exit (and on INT/TERM/HUP): clean-ups in reverse order, then the
# temp dir. Keeps the script's exit status, but never 0 if a check failed.
e2e_run_cleanup() {
    local rc=$? i
    set +e
    trap - EXIT INT TERM HUP
    for ((i = ${#E2E_CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${E2E_CLEANUP[$i]}" >/dev/null 2>&1
    done
    if [ -n "$E2E_TMP" ] && [ -d "$E2E_TMP" ]; then
        if [ -n "${E2E_KEEP:-}" ]; then
            echo "# kept $E2E_TMP" >&2
        else
            rm -rf "$E2E_TMP"
        fi
    fi
    [ "$rc" -eq 0 ] && [ "$E2E_FAIL" -gt 0 ] && rc=1
    exit "$rc"
}

e2e_tmpdir() {
    if [ -z "$E2E_TMP" ] || [ ! -d "$E2E_TMP" ]; then
        E2E_TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringmail-e2e.XXXXXX") || return 1
        # Postfix's unprivileged daemons must be able to traverse it.
        chmod 711 "$E2E_TMP"
        [ -z "${E2E_KEEP:-}" ] && _e2e_register tmpdirs "$E2E_TMP"
    fi
    trap e2e_run_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

e2e_cleanup() { E2E_CLEANUP+=("$1"); }

_e2e_need_tmp() { [ -n "$E2E_TMP" ] && [ -d "$E2E_TMP" ] || e2e_tmpdir; }

# Tell tests/run.sh about a process or a Postfix instance, so that it can
# stop it if this script is killed before its trap runs.
_e2e_register() {
    [ -n "${RINGMAIL_E2E_STATE:-}" ] && [ -d "$RINGMAIL_E2E_STATE" ] &&
        echo "$2" >>"$RINGMAIL_E2E_STATE/$1"
    return 0
}

e2e_setup() {
    e2e_tmpdir
    # shellcheck disable=SC2034 # used by the test scripts
    RM=${RINGMAIL:-build/ringmail}
    CERTS=${RINGMAIL_E2E_CERTS:-$E2E_TMP/certs}
    make_certs "$CERTS"
}

# _pid_alive PID: running (a zombie, not yet reaped by its parent, is not).
_pid_alive() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat:0:1}" != Z ]
}

# _pid_start PID: its start time (field 22 of /proc/PID/stat), which tells a
# pid apart from a later process that reuses the number.
_pid_start() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    set -- $stat
    echo "${20}"
}

e2e_kill() {
    local pid=$1 limit=${2:-5} i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    for ((i = 0; i < limit * 20; i++)); do
        _pid_alive "$pid" || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

e2e_bg() {
    local name=$1
    shift
    _e2e_need_tmp
    "$@" >"$E2E_TMP/$name.log" 2>&1 </dev/null &
    E2E_BG_PID=$!
    e2e_cleanup "e2e_kill $E2E_BG_PID"
    _e2e_register pids "$E2E_BG_PID $(_pid_start "$E2E_BG_PID")"
}

e2e_require() {
    local c missing=0
    for c in "$@"; do
        if ! command -v "$c" >/dev/null 2>&1; then
            _e2e_not_ok "required command '$c' is installed" "not found in PATH"
            missing=1
        fi
    done
    return $missing
}

# ---------------------------------------------------------------- ports

# A port below the kernel's ephemeral range (so no client connection can be
# using it as a source port), not bound on 127.0.0.1 and not handed out
# before in this test.
free_port() {
    local used=/dev/null
    [ -n "$E2E_TMP" ] && [ -d "$E2E_TMP" ] && used=$E2E_TMP/.ports
    "$E2E_PY" - "$used" <<'PY'
import random, socket, sys
used_file = sys.argv[1]
try:
    used = {int(x) for x in open(used_file).read().split()}
except OSError:
    used = set()
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except OSError:
    low = 32768
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
port = 0
if low > 12000:
    for _ in range(200):
        p = random.randint(10000, low - 1)
        if p not in used and free(p):
            port = p
            break
if not port:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
if used_file != "/dev/null":
    with open(used_file, "a") as f:
        f.write("%d\n" % port)
print(port)
PY
}

# _port_listening HOST PORT: a listening TCP socket on PORT (on HOST or the
# wildcard address), read from /proc/net/tcp{,6} without connecting (a test
# connection would show up in the server's logs and counters).
_port_listening() {
    local host=$1 port=$2 hexport hexip=""
    printf -v hexport '%04X' "$port"
    if [[ $host =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)$ ]]; then
        printf -v hexip '%02X%02X%02X%02X' "${BASH_REMATCH[4]}" "${BASH_REMATCH[3]}" \
            "${BASH_REMATCH[2]}" "${BASH_REMATCH[1]}"
    fi
    awk -v p="$hexport" -v ip="$hexip" '
        $4 == "0A" {
            n = split($2, a, ":")
            if (a[n] != p) next
            if (ip == "" || a[1] == ip || a[1] ~ /^0+$/ || FILENAME ~ /tcp6$/) { found = 1; exit }
        }
        END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

wait_port() {
    local host=$1 port=$2 limit=${3:-10} pid=${4:-} i
    for ((i = 0; i < limit * 20; i++)); do
        _port_listening "$host" "$port" && return 0
        if [ -n "$pid" ] && ! _pid_alive "$pid"; then
            echo "process $pid exited before listening on $host:$port" >&2
            return 1
        fi
        sleep 0.05
    done
    echo "nothing listens on $host:$port after ${limit}s" >&2
    return 1
}

wait_port_free() {
    local host=$1 port=$2 limit=${3:-10} i
    for ((i = 0; i < limit * 20; i++)); do
        _port_listening "$host" "$port" || return 0
        sleep 0.05
    done
    echo "$host:$port still listening after ${limit}s" >&2
    return 1
}

# ---------------------------------------------------------------- certificates

# make_certs DIR: ECDSA P-256 everywhere (cheap handshakes for the sink).
#   ca.pem ca.key                 test CA (not in any system bundle)
#   server.pem server.key         leaf for localhost, sink.test, mx.test, 127.0.0.1,
#                                 signed by the CA; server.pem = leaf + CA chain;
#                                 server.leaf.pem = the leaf alone
#   selfsigned.pem selfsigned.key self-signed, same names
#   expired.pem expired.key       signed by the CA, same names, valid Jan 2020 only
#                                 (expired.pem = leaf + CA chain)
#   wrongname.pem wrongname.key   signed by the CA for other.test only (name mismatch)
# With RINGMAIL_E2E_CERTS set (tests/run.sh sets it), the set is made once
# there and copied into DIR. Safe against concurrent callers (flock).
make_certs() {
    local d=$1 cache=${RINGMAIL_E2E_CERTS:-}
    if [ -n "$cache" ] && [ "$(realpath -m "$cache")" != "$(realpath -m "$d")" ]; then
        _make_certs_in "$cache" || return 1
        mkdir -p "$d" && cp -p "$cache"/*.pem "$cache"/*.key "$d"/ && touch "$d/.done"
        return
    fi
    _make_certs_in "$d"
}

_make_certs_in() {
    local d=$1
    [ -f "$d/.done" ] && return 0
    mkdir -p "$d" || return 1
    (
        flock 9
        [ -f "$d/.done" ] && exit 0
        cd "$d" && _make_certs_steps && touch .done
    ) 9>"$d/.lock" >"$d/make_certs.log" 2>&1
    if [ ! -f "$d/.done" ]; then
        echo "make_certs $d failed:" >&2
        cat "$d/make_certs.log" >&2
        return 1
    fi
}

# Every step chained with &&: `set -e` is not reliable in a function that
# may be called from a `||` or `if` context.
_make_certs_steps() {
    local k
    rm -rf ca.db && mkdir ca.db && : >ca.db/index.txt && echo 1000 >ca.db/serial &&
        cat >certs.cnf <<'CNF' || return 1
[req]
distinguished_name = dn
prompt = no
[dn]
CN = ringmail
[ca]
default_ca = test_ca
[test_ca]
database = ca.db/index.txt
serial = ca.db/serial
new_certs_dir = ca.db
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
email_in_dn = no
[any]
commonName = supplied
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost,DNS:sink.test,DNS:mx.test,IP:127.0.0.1,IP:127.0.0.81,IP:127.0.0.82,IP:127.0.0.83,IP:127.0.0.84,IP:127.0.0.85
[wrong_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:other.test
[self_ext]
# like `openssl req -x509`'s default (v3_ca), plus the names
basicConstraints = critical,CA:TRUE
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost,DNS:sink.test,DNS:mx.test,IP:127.0.0.1,IP:127.0.0.81,IP:127.0.0.82,IP:127.0.0.83,IP:127.0.0.84,IP:127.0.0.85
CNF
    for k in ca server selfsigned expired wrongname; do
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $k.key &&
            chmod 600 $k.key || return 1
    done
    # CA: self-signed through `openssl ca` so its validity can start in the past.
    openssl req -new -config certs.cnf -key ca.key -subj "/CN=ringmail test CA" -out ca.csr &&
        openssl ca -batch -notext -config certs.cnf -selfsign -keyfile ca.key -in ca.csr \
            -out ca.pem -extensions ca_ext -startdate 20190101000000Z -enddate 20491231235959Z ||
        return 1
    # Leaves signed by the CA; name, extensions, validity.
    _leaf() {
        openssl req -new -config certs.cnf -key "$1.key" -subj "/CN=$2" -out "$1.csr" &&
            openssl ca -batch -notext -config certs.cnf -cert ca.pem -keyfile ca.key -in "$1.csr" \
                -out "$1.leaf.pem" -extensions "$3" -startdate "$4" -enddate "$5" &&
            cat "$1.leaf.pem" ca.pem >"$1.pem"
    }
    _leaf server sink.test leaf_ext 20190101000000Z 20491231235959Z &&
        _leaf expired sink.test leaf_ext 20200101000000Z 20200201000000Z &&
        _leaf wrongname other.test wrong_ext 20190101000000Z 20491231235959Z &&
        openssl req -new -x509 -config certs.cnf -key selfsigned.key -subj "/CN=sink.test" \
            -days 3650 -extensions self_ext -out selfsigned.pem &&
        rm -f ./*.csr
}

# ---------------------------------------------------------------- checks

_e2e_ok() {
    echo "ok - $1"
    E2E_PASS=$((E2E_PASS + 1))
}
_e2e_not_ok() {
    echo "not ok - $1${2:+: $2}"
    E2E_FAIL=$((E2E_FAIL + 1))
}

# check NAME CMD...: runs CMD in this shell (so functions may start servers
# and register clean-ups); its output is kept and shown only on failure.
check() {
    local name=$1 out rc
    shift
    _e2e_need_tmp
    E2E_CHECK_N=$((E2E_CHECK_N + 1))
    out=$E2E_TMP/.check.$E2E_CHECK_N
    "$@" >"$out" 2>&1 </dev/null
    rc=$?
    if [ $rc -eq 0 ]; then
        _e2e_ok "$name"
    else
        _e2e_not_ok "$name" "exit status $rc from: $*"
        [ -s "$out" ] && head -c 4000 "$out" | head -n 20 | sed 's/^/#   /'
    fi
    rm -f "$out"
    return $rc
}

check_eq() {
    if [ "$2" = "$3" ]; then _e2e_ok "$1"; else _e2e_not_ok "$1" "expected '$2', got '$3'"; return 1; fi
}

check_ne() {
    if [ "$2" != "$3" ]; then _e2e_ok "$1"; else _e2e_not_ok "$1" "got '$3', which it must not be"; return 1; fi
}

_e2e_int() { [[ $1 =~ ^-?[0-9]+$ ]]; }

check_ge() {
    if _e2e_int "$2" && _e2e_int "$3" && [ "$3" -ge "$2" ]; then
        _e2e_ok "$1"
    else
        _e2e_not_ok "$1" "expected >= $2, got '$3'"
        return 1
    fi
}

check_le() {
    if _e2e_int "$2" && _e2e_int "$3" && [ "$3" -le "$2" ]; then
        _e2e_ok "$1"
    else
        _e2e_not_ok "$1" "expected <= $2, got '$3'"
        return 1
    fi
}

check_grep() {
    if grep -Eq -- "$2" "$3" 2>/dev/null; then
        _e2e_ok "$1"
    else
        _e2e_not_ok "$1" "no line matching /$2/ in $(basename "$3")"
        [ -f "$3" ] && tail -n 5 "$3" | sed 's/^/#   /'
        return 1
    fi
}

check_no_grep() {
    local hit
    if [ ! -f "$3" ]; then
        _e2e_not_ok "$1" "$3 does not exist"
        return 1
    fi
    hit=$(grep -Em1 -- "$2" "$3")
    if [ -z "$hit" ]; then
        _e2e_ok "$1"
    else
        _e2e_not_ok "$1" "found /$2/: ${hit:0:200}"
        return 1
    fi
}

e2e_finish() {
    echo "# $(basename "$0"): $E2E_PASS passed, $E2E_FAIL failed"
    [ "$E2E_FAIL" -eq 0 ] && [ "$E2E_PASS" -gt 0 ]
}

# ---------------------------------------------------------------- JSON

jget() {
    "$E2E_PY" - "$1" "$2" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    print(0); sys.exit(0)
for k in sys.argv[2].split("."):
    if isinstance(d, dict):
        d = d.get(k, 0)
    elif isinstance(d, list) and k.lstrip("-").isdigit() and -len(d) <= int(k) < len(d):
        d = d[int(k)]
    else:
        d = 0
print(d if isinstance(d, str) else json.dumps(d))
PY
}

jcount() {
    "$E2E_PY" - "$1" "${2:-True}" <<'PY'
import json, sys
n = 0
try:
    lines = open(sys.argv[1], errors="replace").read().splitlines()
except OSError:
    lines = []
for l in lines:
    if not l.strip():
        continue
    try:
        d = json.loads(l)
    except ValueError:
        continue
    try:
        if eval(sys.argv[2], {}, {"d": d}):
            n += 1
    except Exception:
        pass
print(n)
PY
}

jeval() {
    "$E2E_PY" - "$1" "$2" <<'PY'
import json, sys
text = open(sys.argv[1], errors="replace").read()
try:
    rows = [json.loads(l) for l in text.splitlines() if l.strip()]
except ValueError:
    rows = None
try:
    d = json.loads(text)
except ValueError:
    d = rows
if rows is None:
    rows = [d]
v = eval(sys.argv[2], {}, {"d": d, "rows": rows})
print(v if isinstance(v, str) else json.dumps(v))
PY
}

# ---------------------------------------------------------------- logs

wait_for_log() {
    local f=$1 re=$2 limit=${3:-10} i
    for ((i = 0; i < limit * 10; i++)); do
        grep -Eq -- "$re" "$f" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no line matching '$re' in $f after ${limit}s" >&2
    return 1
}

wait_for_count() {
    local f=$1 re=$2 n=$3 limit=${4:-10} i
    for ((i = 0; i < limit * 10; i++)); do
        [ "$(grep -Ec -- "$re" "$f" 2>/dev/null)" -ge "$n" ] && return 0
        sleep 0.1
    done
    echo "wanted $n lines matching '$re' in $f, have $(grep -Ec -- "$re" "$f" 2>/dev/null)" >&2
    return 1
}

# ---------------------------------------------------------------- Postfix

# postfix_instance DIR [ON_DISK]: a private Postfix instance's conf/ and
# data/ (the latter postfix's own) and an empty maillog in DIR; prints its
# queue directory: in /dev/shm, or DIR/queue (emptied) when ON_DISK is set
# or there is no /dev/shm. Shared by start_postfix and bench/compare.sh.
postfix_instance() {
    local d=$1 q
    mkdir -p "$d/conf" "$d/data" || return 1
    chmod 755 "$d" "$d/conf"
    chown postfix "$d/data" && chmod 700 "$d/data"
    if [ -z "${2:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
        q=$(mktemp -d /dev/shm/ringmail-postfix.XXXXXX) || return 1
    else
        q=$d/queue
        rm -rf "$q"
        mkdir -p "$q"
    fi
    chmod 755 "$q"
    : >"$d/maillog"
    echo "$q"
}
# postfix_master_cf_base: the master.cf services every private instance
# runs (no chroot, nothing listening: the caller adds its listeners,
# pickup, cleanup and delivery transports, and postlog).
postfix_master_cf_base() {
    cat <<MF
qmgr       unix  n       -      n      300    1       qmgr
tlsmgr     unix  -       -      n      1000?  1       tlsmgr
rewrite    unix  -       -      n      -      -       trivial-rewrite
bounce     unix  -       -      n      -      0       bounce
defer      unix  -       -      n      -      0       bounce
trace      unix  -       -      n      -      0       bounce
verify     unix  -       -      n      -      1       verify
flush      unix  n       -      n      1000?  0       flush
proxymap   unix  -       -      n      -      -       proxymap
proxywrite unix  -       -      n      -      1       proxymap
showq      unix  n       -      n      -      -       showq
error      unix  -       -      n      -      -       error
retry      unix  -       -      n      -      -       error
discard    unix  -       -      n      -      -       discard
anvil      unix  -       -      n      -      1       anvil
scache     unix  -       -      n      -      1       scache
MF
}
# postfix_main_cf_base DIR QUEUE SYSLOG_NAME MYHOSTNAME MYDOMAIN: the
# main.cf lines every private instance has: its own directories and log,
# no local delivery, IPv4 on 127.0.0.0/8, no DNS.
postfix_main_cf_base() {
    cat <<CF
compatibility_level = 3.6
queue_directory = $2
data_directory = $1/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = $1/maillog
maillog_file_prefixes = $1
syslog_name = $3
myhostname = $4
mydomain = $5
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
biff = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
CF
}

# start_postfix DIR PORT CERT KEY [param=value...]
# A private Postfix instance as a TLS-capable sink, independent of the system
# instance (which need not be configured or running):
#   DIR/conf/{main,master}.cf   its configuration (postfix -c DIR/conf)
#   DIR/maillog                 its log (postlogd), see postfix_log/postfix_count
#   queue on tmpfs (/dev/shm) when available, else DIR/queue
# smtpd on 127.0.0.1:PORT only; STARTTLS offered (may) with CERT (leaf+chain)
# and KEY, TLS 1.2+; relays anything from 127.0.0.0/8; every transport is
# discard: so nothing leaves; no DNS; bare LF in SMTP input is rejected
# (smuggling); no error sleeps or rate limits; up to 100 smtpd processes.
# Extra param=value arguments are appended to main.cf (they win).
# Must run as root. Returns non-zero (and prints the log) if it did not start.
start_postfix() {
    local d=$1 port=$2 cert=$3 key=$4 q p
    shift 4
    _e2e_need_tmp
    if [ "$(id -u)" -ne 0 ]; then
        echo "start_postfix: must run as root" >&2
        return 1
    fi
    if ! command -v postfix >/dev/null 2>&1; then
        echo "start_postfix: postfix is not installed" >&2
        return 1
    fi
    mkdir -p "$d" || return 1
    d=$(realpath "$d")
    stop_postfix "$d" # a restart in the same DIR
    cert=$(realpath "$cert")
    key=$(realpath "$key")
    rm -rf "$d/conf" "$d/data"
    q=$(postfix_instance "$d" "${RINGMAIL_E2E_NO_TMPFS:-}") || return 1
    {
        echo "# Private ringmail e2e sink instance (tests/e2e/lib.sh start_postfix)."
        postfix_main_cf_base "$d" "$q" postfix mx.test test
    } >"$d/conf/main.cf"
    cat >>"$d/conf/main.cf" <<CF
inet_interfaces = 127.0.0.1
relay_domains =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
default_transport = discard:ringmail-e2e-sink
relay_transport = discard:ringmail-e2e-sink
local_transport = discard:ringmail-e2e-sink
virtual_transport = discard:ringmail-e2e-sink
smtpd_peername_lookup = no
smtpd_banner = \$myhostname ESMTP Postfix (ringmail e2e sink)
in_flow_delay = 0
default_process_limit = 100
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_new_tls_session_rate_limit = 0
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_junk_command_limit = 1000000
smtpd_timeout = 60s
smtpd_forbid_bare_newline = reject
smtpd_forbid_bare_newline_exclusions =
smtpd_tls_security_level = may
smtpd_tls_chain_files = $key, $cert
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
CF
    for p in "$@"; do
        printf '%s\n' "${p/=/ = }" >>"$d/conf/main.cf"
    done
    # Our own master.cf: smtpd on the test port only (never port 25), no
    # chroot, postlogd for maillog_file, discard for every delivery.
    cat >"$d/conf/master.cf" <<MF
# service  type  private unpriv chroot wakeup maxproc command
127.0.0.1:$port inet n   -      n      -      -       smtpd
pickup     unix  n       -      n      60     1       pickup
cleanup    unix  n       -      n      -      0       cleanup
MF
    postfix_master_cf_base >>"$d/conf/master.cf"
    cat >>"$d/conf/master.cf" <<MF
postlog    unix-dgram n  -      n      -      1       postlogd
MF
    # Postfix waits (in 300 ms steps) until a config file is over a second
    # old, in case it is still being edited: backdate ours.
    touch -d '-1 minute' "$d/conf/main.cf" "$d/conf/master.cf"
    _e2e_register postfix "$d"
    e2e_cleanup "stop_postfix '$d'"
    if ! postfix -c "$d/conf" start </dev/null >"$d/start.log" 2>&1; then
        echo "start_postfix: postfix start failed:" >&2
        cat "$d/start.log" "$d/maillog" >&2
        return 1
    fi
    if ! wait_port 127.0.0.1 "$port" 15; then
        cat "$d/maillog" >&2
        return 1
    fi
}

# _postfix_master_pid DIR: the running master's pid, or nothing.
_postfix_master_pid() {
    local q pid
    [ -f "$1/conf/main.cf" ] || return 1
    q=$(postconf -c "$1/conf" -h queue_directory 2>/dev/null) || return 1
    pid=$(tr -dc 0-9 <"$q/pid/master.pid" 2>/dev/null)
    [ -n "$pid" ] && _pid_alive "$pid" && echo "$pid"
}

# stop_postfix DIR: stop the instance (SIGTERM to its master, as `postfix
# stop` does, without that command's 1-second polling), wait until the
# master is gone (SIGKILL to its process group after 5 s), then remove its
# tmpfs queue. Idempotent.
stop_postfix() {
    local d=$1 pid q i
    [ -f "$d/conf/main.cf" ] || return 0
    q=$(postconf -c "$d/conf" -h queue_directory 2>/dev/null)
    pid=$(_postfix_master_pid "$d")
    if [ -n "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 100; i++)); do
            _pid_alive "$pid" || break
            sleep 0.02
        done
        _pid_alive "$pid" && kill -KILL -- "-$pid" 2>/dev/null
    fi
    case "$q" in /dev/shm/ringmail-postfix.*) rm -rf "$q" ;; esac
    return 0
}

postfix_log() { echo "$1/maillog"; }

# postfix_count DIR WHAT: count log events of a private instance.
#   messages     messages received and queued (one per message)
#   delivered    recipients discarded, i.e. "delivered" (one per recipient)
#   connections  SMTP connections
#   tls          TLS sessions established; tls12 / tls13 by version
#   rejects      NOQUEUE rejections by smtpd
#   bare_lf      "bare <LF> received" errors
postfix_count() {
    local f=$1/maillog re
    case "$2" in
    messages) re='postfix/qmgr\[[0-9]+\]: [0-9A-Za-z]+: from=<.*nrcpt=' ;;
    delivered) re='postfix/discard\[[0-9]+\]: [0-9A-Za-z]+: to=<.*status=sent' ;;
    connections) re='postfix/smtpd\[[0-9]+\]: connect from ' ;;
    tls) re='postfix/smtpd\[[0-9]+\]: .*TLS connection established from ' ;;
    tls12) re='postfix/smtpd\[[0-9]+\]: .*TLS connection established from .*: TLSv1\.2 ' ;;
    tls13) re='postfix/smtpd\[[0-9]+\]: .*TLS connection established from .*: TLSv1\.3 ' ;;
    rejects) re='postfix/smtpd\[[0-9]+\]: NOQUEUE: reject' ;;
    bare_lf) re='bare <LF> received' ;;
    *)
        echo "postfix_count: unknown WHAT '$2'" >&2
        return 2
        ;;
    esac
    re=$(grep -Ec -- "$re" "$f" 2>/dev/null)
    echo "${re:-0}"
}

# postfix_wait DIR WHAT N [S]: until postfix_count DIR WHAT >= N (S = 20).
postfix_wait() {
    local d=$1 what=$2 n=$3 limit=${4:-20} i c
    for ((i = 0; i < limit * 10; i++)); do
        c=$(postfix_count "$d" "$what")
        [ "$c" -ge "$n" ] && return 0
        sleep 0.1
    done
    echo "postfix $what: wanted $n, have $c after ${limit}s" >&2
    return 1
}

# ---------------------------------------------------------------- aiosmtpd

# start_aiosmtpd PORT CERT KEY [--implicit-tls] [--auth USER:PASS] [--count-file F]
#                [--save-dir D] [--starttls-optional] [--size N]
# python3-aiosmtpd on 127.0.0.1:PORT: STARTTLS required before MAIL, AUTH
# PLAIN/LOGIN offered only after TLS (and then required), or TLS from the
# first byte with --implicit-tls. Each accepted message is one JSON line in
# the count file: from, rcpts, size, tls, tls_version, cipher, auth, helo,
# mail_options, smtputf8, bare_lf, bare_cr. Sets AIOSMTPD_PID; log in
# $E2E_TMP/aiosmtpd.PORT.log.
declare -gA AIOSMTPD_PIDS=()
AIOSMTPD_PID=""
AIOSMTPD_PORT=""
start_aiosmtpd() {
    local port=$1 cert=$2 key=$3
    shift 3
    _helper_server_start aiosmtpd "$port" 15 "$E2E_DIR/aiosmtpd_server.py" --port "$port" \
        --cert "$cert" --key "$key" "$@" || return 1
    AIOSMTPD_PID=$E2E_BG_PID
    AIOSMTPD_PORT=$port
    AIOSMTPD_PIDS[$port]=$E2E_BG_PID
}

# stop_aiosmtpd [PORT]: the one on PORT, or the last one started.
stop_aiosmtpd() { _helper_server_stop AIOSMTPD_PIDS "${1:-$AIOSMTPD_PORT}"; }

# _helper_server_start KIND PORT WAIT_S SCRIPT ARGS...: a Python test server
# on 127.0.0.1:PORT (log $E2E_TMP/KIND.PORT.log); its pid in E2E_BG_PID.
_helper_server_start() {
    local kind=$1 port=$2 wait_s=$3
    shift 3
    _e2e_need_tmp
    e2e_bg "$kind.$port" "$E2E_PY" "$@"
    wait_port 127.0.0.1 "$port" "$wait_s" "$E2E_BG_PID" || {
        cat "$E2E_TMP/$kind.$port.log" >&2
        return 1
    }
}
# _helper_server_stop PIDS_ARRAY PORT: stop the one on PORT (none: nothing).
_helper_server_stop() {
    local -n pids=$1
    local port=$2
    [ -n "$port" ] || return 0
    e2e_kill "${pids[$port]:-}"
    unset "pids[$port]"
    return 0
}

# ---------------------------------------------------------------- scripted server

# start_scripted PORT MODE [MODE_ARG] [--transcript F] [--events F]
#                [--tls-cert C --tls-key K]
# tests/e2e/scripted_server.py (see its header for the modes). Sets
# SCRIPTED_PID; log in $E2E_TMP/scripted.PORT.log.
declare -gA SCRIPTED_PIDS=()
SCRIPTED_PID=""
SCRIPTED_PORT=""
start_scripted() {
    local port=$1
    shift
    _helper_server_start scripted "$port" 10 "$E2E_DIR/scripted_server.py" "$port" "$@" || return 1
    SCRIPTED_PID=$E2E_BG_PID
    SCRIPTED_PORT=$port
    SCRIPTED_PIDS[$port]=$E2E_BG_PID
}

stop_scripted() { _helper_server_stop SCRIPTED_PIDS "${1:-$SCRIPTED_PORT}"; }

# ---------------------------------------------------------------- clients

smtp_probe() { "$E2E_PY" "$E2E_DIR/smtp_probe.py" "$@"; }

# ---- PostgreSQL ---------------------------------------------------------
# start_postgres DIR: a throw-away cluster (initdb in DIR, trust auth, a
# private port on 127.0.0.1 and a Unix socket in DIR). Sets PG_PORT, PG_DIR
# and PG_URL (a libpq connection string over the socket). initdb refuses
# root, so as root the cluster runs as the `postgres` user. Stops on exit.
pg_bin() {
    local d
    for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return 0; }; done
    return 1
}
_pg_as() {
    if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}
start_postgres() {
    PG_DIR=$1
    local bin
    bin=$(pg_bin) || { echo "# postgresql server not installed" >&2; return 1; }
    mkdir -p "$PG_DIR"
    chmod 755 "$E2E_TMP" 2>/dev/null
    [ "$(id -u)" -eq 0 ] && chown postgres "$PG_DIR"
    PG_PORT=$(free_port)
    _pg_as "'$bin/initdb' -D '$PG_DIR/data' -A trust -U postgres --no-sync -E UTF8" \
        >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; return 1; }
    _pg_as "'$bin/pg_ctl' -D '$PG_DIR/data' -w -t 30 -l '$PG_DIR/pg.log' \
        -o \"-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1 -c fsync=off \
        -c synchronous_commit=off -c full_page_writes=off\" start" >/dev/null 2>&1 ||
        { cat "$PG_DIR/pg.log" >&2; return 1; }
    PG_URL="host=$PG_DIR port=$PG_PORT user=postgres dbname=postgres"
    e2e_cleanup "stop_postgres '$PG_DIR'"
}
stop_postgres() {
    local bin
    bin=$(pg_bin) || return 0
    _pg_as "'$bin/pg_ctl' -D '$1/data' -m immediate -w stop" >/dev/null 2>&1 || true
}
# psql_q SQL: one value (or rows, tab-separated) from the test cluster.
psql_q() { psql "$PG_URL" -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 -c "$1"; }

# ---- named sinks (the caller sets SINK_PORT: every sink listens on 127.0.0.x:SINK_PORT)
now_ms() { date +%s%3N; }
declare -A SINK_PID=() SINK_STATS=()
# start_sink NAME IP [sink options...]: plaintext sink on IP:SINK_PORT, stats every 100 ms.
start_sink() {
    local name=$1 ip=$2
    shift 2
    SINK_STATS[$name]=$E2E_TMP/sink.$name.json
    e2e_bg "sink.$name" "$RM" sink --listen "$ip:$SINK_PORT" --threads 1 --hostname "$name.test" \
        --stats "${SINK_STATS[$name]}" --stats-interval-ms 100 "$@"
    SINK_PID[$name]=$E2E_BG_PID
    wait_port "$ip" "$SINK_PORT" 10 "$E2E_BG_PID" || { cat "$E2E_TMP/sink.$name.log" >&2; return 1; }
}
# stop_sink NAME: SIGTERM (the sink writes its final stats), wait.
stop_sink() { e2e_kill "${SINK_PID[$1]}"; }
# sj NAME FIELD: a field of a sink's stats.
sj() { jget "${SINK_STATS[$1]}" "$2"; }

# two_isps CONF MSG_RATE: sinks a (127.0.0.81) and b (127.0.0.82) on a new
# SINK_PORT, and a config CONF with ISPs a (a.test) and b (b.test), 2
# connections and MSG_RATE each, routed to them (retry 300ms, max_age 60s).
two_isps() {
    SINK_PORT=$(free_port)
    start_sink a 127.0.0.81
    start_sink b 127.0.0.82
    cat >"$1" <<CONF
[global]
tls = none
retry = 300ms
max_age = 60s
[isp a]
domains = a.test
max_connections = 2
msg_rate = $2
[isp b]
domains = b.test
max_connections = 2
msg_rate = $2
[route a.test]
server = 127.0.0.81:$SINK_PORT
[route b.test]
server = 127.0.0.82:$SINK_PORT
CONF
}

# two_isp_campaign NAME N: a campaign with N recipients on a.test and N on
# b.test, interleaved; prints its id
two_isp_campaign() {
    local id
    id=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
        VALUES ('$1', 'news@sender.test', 'Hello', 'Campaign $1.') RETURNING id")
    psql_q "INSERT INTO ringmail.recipient (campaign_id, address)
        SELECT $id, '$1' || g || '@' || CASE WHEN g % 2 = 0 THEN 'a.test' ELSE 'b.test' END
        FROM generate_series(1, 2 * $2) g" >/dev/null
    echo "$id"
}

# ---- campaigns in the test cluster
# new_campaign NAME N [DOMAIN]: a campaign of N recipients NAME1@DOMAIN ..
# (DOMAIN x.test by default); prints its id.
new_campaign() {
    local id
    id=$(psql_q "INSERT INTO ringmail.campaign (name, mail_from, subject, text_body)
        VALUES ('$1', 'news@sender.test', 'Hello', 'Campaign $1.') RETURNING id")
    psql_q "INSERT INTO ringmail.recipient (campaign_id, address)
        SELECT $id, '$1' || g || '@${3:-x.test}' FROM generate_series(1, $2) g" >/dev/null
    echo "$id"
}
# count_state ID STATE: recipients of campaign ID in STATE. `claimed` counts
# what nodes hold (ringmail.held, schema 8): rows `claimed` and fresh rows
# (queued, never attempted) within a node's claim range.
count_state() {
    if [ "$2" = claimed ]; then
        psql_q "SELECT count(*) FROM ringmail.held WHERE campaign_id = $1"
    else
        psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $1 AND state = '$2'"
    fi
}
# held_by ID NODE: recipients of campaign ID that node NODE holds.
held_by() {
    psql_q "SELECT count(*) FROM ringmail.held WHERE campaign_id = $1 AND node = '$2'"
}
# nonfinal ID: recipients of campaign ID not yet in a final state.
nonfinal() {
    psql_q "SELECT count(*) FROM ringmail.recipient WHERE campaign_id = $1
            AND state IN ('queued', 'claimed', 'deferred')"
}
# sink_stats_settled FILE: until a sink's stats file (written every
# --stats-interval-ms) has shown the same accepted count three times 200 ms
# apart (at most 10 s): under load its last write can lag the deliveries.
sink_stats_settled() {
    local last=-1 same=0 n
    for _ in $(seq 1 50); do
        n=$(jget "$1" accepted_rcpts 2>/dev/null)
        if [ "$n" = "$last" ]; then
            same=$((same + 1))
            [ "$same" -ge 2 ] && return 0
        else
            same=0
            last=$n
        fi
        sleep 0.2
    done
}
# campaign_audit ID SINK_STATS_FILE: what the sink accepted against the
# recipients' states, as "twice silent lost": addresses accepted twice or
# more, of those the ones not ambiguous, and sent ones not accepted exactly
# once (or accepted but neither sent nor ambiguous).
campaign_audit() {
    sink_stats_settled "$2"
    psql_q "SELECT address || ' ' || state FROM ringmail.recipient WHERE campaign_id = $1" \
        >"$E2E_TMP/states.$1"
    "$E2E_PY" - "$E2E_TMP/states.$1" "$2" <<'PY'
import json, sys
state = dict(l.split() for l in open(sys.argv[1]) if l.strip())
seen = json.load(open(sys.argv[2])).get("deliveries", {})
twice = [a for a, n in seen.items() if n > 1 and a in state]
silent = [a for a in twice if state[a] != "ambiguous"]
lost = [a for a, s in state.items() if s == "sent" and seen.get(a, 0) != 1]
lost += [a for a, n in seen.items() if a in state and n >= 1 and state[a] not in ("sent", "ambiguous")]
for a in (silent + lost)[:5]:
    print("# mismatch:", a, state.get(a), seen.get(a, 0), file=sys.stderr)
print(len(twice), len(silent), len(lost))
PY
}
