#!/usr/bin/env bash
# Bounded input (issue 11, items 8-10): what used to be accepted and then
# misbehaved is refused where it comes in, with where and why.
#   1. the config: a route port past 65535, a section or a setting given
#      twice, max_connections = 0, msg_rate = 1e-300/s, a 100 KB domains
#      line, each refused by `ringmail send --config F` with exit 2 and
#      `F:LINE: reason` (and the lists that may repeat still load)
#   2. campaign create: an unclosed {{, {{ }}, PEM armour with garbage inside
#      refused (exit 2, nothing stored), as send would refuse them later
#   3. send --recipients: a NUL inside a line and a local part that is not
#      UTF-8 refuse the file with the line number (nothing sent); an address
#      listed several times is delivered once (the sink's per-address count)
# Nothing leaves 127.0.0.0/8: every route is a 127.0.0.x sink or a dead port.
set -u
. "$(dirname "$0")/lib.sh"
e2e_setup

PORT=$(free_port)
DEAD=$(free_port) # nothing listens there
SINK_PORT=$PORT
# shellcheck source=tests/e2e/pool_lib.sh
. "$(dirname "$0")/pool_lib.sh"
T=$E2E_TMP

# ================================================================ 1. config
echo "b@b.test" >"$T/one.rcpts"
# conf NAME LINES...: a config whose first 10 lines route b.test to a dead
# port, then LINES from line 11.
conf() {
    local name=$1
    shift
    {
        printf '[global]\ntls = none\nretry = 1s\nmax_age = 2s\n\n'
        printf '[route b.test]\nserver = 127.0.0.1:%s\n\n[isp a]\n' "$DEAD"
        printf 'domains = b.test\n'
        printf '%s\n' "$@"
    } >"$T/$name.conf"
}
# refused NAME RE: send --config NAME.conf exits 2 at once, saying RE.
refused() {
    timeout -k 2 15 "$RM" send --config "$T/$1.conf" --recipients "$T/one.rcpts" \
        >"$T/$1.out" 2>"$T/$1.err"
    local rc=$?
    [ "$rc" -eq 2 ] && grep -Fq -- "$T/$1.conf:$2" "$T/$1.err" || {
        echo "rc=$rc (want 2), stderr: $(head -c 600 "$T/$1.err")"
        return 1
    }
}
conf port '[route c.test]' 'server = 127.0.0.1:99999'
check "config: route port 99999 -> 2, F:12: the port must be 1..65535" \
    refused port "12: server '127.0.0.1:99999': the port must be a number 1..65535"
conf dupsec 'msg_rate = 10/s' '' '[isp a]' 'msg_rate = 20/s'
check "config: [isp a] twice -> 2, F:13: duplicate section" \
    refused dupsec "13: duplicate section [isp a] (first at line 9)"
conf dupkey 'msg_rate = 10/s' 'max_connections = 2' 'msg_rate = 20/s'
check "config: msg_rate twice in one section -> 2, F:13: duplicate setting" \
    refused dupkey "13: duplicate setting 'msg_rate' in [isp a] (first at line 11)"
conf conns0 'max_connections = 0'
check "config: max_connections = 0 -> 2, F:11: must be at least 1" \
    refused conns0 "11: max_connections: '0' must be at least 1"
conf tinyrate 'msg_rate = 1e-300/s'
check "config: msg_rate = 1e-300/s -> 2, F:11: below the slowest rate" \
    refused tinyrate "11: msg_rate: '1e-300/s' is below the slowest rate accepted, 0.001/s"
conf longline "domains = $(head -c 102400 /dev/zero | tr '\0' 'x').test" 'msg_rate = 10/s'
check "config: a 100 KB domains line -> 2, F:11: line longer than 199 characters" \
    refused longline "11: line longer than 199 characters (split a long domains or mx list"
# The lists still repeat and add up; the file loads and the run ends.
conf lists 'domains = c.test' 'rule = 421 => bounce' 'rule = 450 => bounce'
timeout -k 2 20 "$RM" send --config "$T/lists.conf" --recipients "$T/one.rcpts" \
    >"$T/lists.out" 2>"$T/lists.err"
check_ne "config: repeated domains and rule lines load (not exit 2)" 2 "$?"

# ================================================================ 2. campaign create
if start_postgres "$T/pg"; then
    check "db migrate" "$RM" db migrate --db "$PG_URL"
    printf 'Hello {{first_name|friend}}\n' >"$T/ok.txt"
    printf 'Hello {{first_name\n' >"$T/unclosed.txt"
    printf 'Hello {{ }}\n' >"$T/empty.txt"
    printf -- '-----BEGIN PRIVATE KEY-----\nthis is no key at all!\n-----END PRIVATE KEY-----\n' \
        >"$T/garbage.pem"
    openssl genpkey -algorithm ed25519 -out "$T/dkim.pem" 2>/dev/null
    create_fails() { # ERE ARGS...: exit 2, says ERE, stores nothing
        local re=$1 before after got
        shift
        before=$(psql_q "SELECT count(*) FROM ringmail.campaign")
        "$RM" campaign create --db "$PG_URL" --name x --from a@example.com "$@" \
            >"$T/cf.out" 2>"$T/cf.err"
        got=$?
        after=$(psql_q "SELECT count(*) FROM ringmail.campaign")
        [ "$got" -eq 2 ] && grep -Fq -- "$re" "$T/cf.err" && [ "$before" = "$after" ] || {
            echo "rc=$got (want 2), stderr: $(cat "$T/cf.err"), campaigns $before -> $after"
            return 1
        }
    }
    check "create: an unclosed {{ in --text -> 2, nothing stored" create_fails \
        "--text $T/unclosed.txt: unterminated merge field '{{first_name' at line 1, character 7" \
        --subject s --text "$T/unclosed.txt"
    check "create: {{ }} in --text -> 2, nothing stored" create_fails \
        "--text $T/empty.txt: bad merge field name '{{ }}' at line 1, character 7" \
        --subject s --text "$T/empty.txt"
    check "create: an unclosed {{ in --subject -> 2" create_fails \
        "--subject: unterminated merge field '{{name' at character 4" --subject 'Hi {{name' \
        --text "$T/ok.txt"
    check "create: PEM armour with garbage inside -> 2, nothing stored" create_fails \
        "--dkim-key $T/garbage.pem: cannot read a private key" --subject s --text "$T/ok.txt" \
        --dkim-domain example.com --dkim-selector s1 --dkim-key "$T/garbage.pem"
    check "create: good templates and a real key still create" "$RM" campaign create \
        --db "$PG_URL" --name ok --from a@example.com --subject 'Hi {{first_name}}' \
        --text "$T/ok.txt" --dkim-domain example.com --dkim-selector s1 --dkim-key "$T/dkim.pem"
else
    check "postgres starts" false
fi

# ================================================================ 3. send --recipients
start_sink dup 127.0.0.91
cat >"$T/dup.conf" <<CONF
[global]
tls = none
retry = 1s
max_age = 5s

[isp dup]
domains = dup.test

[route dup.test]
server = 127.0.0.91:$PORT
CONF
# list_refused NAME RE: exit 2 at once, saying RE, nothing sent.
list_refused() {
    SEND_TIMEOUT=15 send_run "$1" --recipients "$T/$1.rcpts" --config "$T/dup.conf"
    [ "$RC" -eq 2 ] && grep -Fq -- "$T/$1.rcpts:$2" "$T/$1.err" || {
        echo "rc=$RC (want 2), stderr: $(head -c 600 "$T/$1.err")"
        return 1
    }
}
printf '# a list\nfirst@dup.test\na@dup.test\0x\n' >"$T/nul.rcpts"
check "send: a NUL inside line 3 -> 2, F:3: a NUL byte" list_refused nul "3: a NUL byte in the line"
printf 'first@dup.test\n\n\xff\xfeuser@dup.test\n' >"$T/utf8.rcpts"
check "send: a local part not UTF-8 on line 3 -> 2, F:3: not valid UTF-8" \
    list_refused utf8 "3: the address is not valid UTF-8"
sleep 0.3
check_eq "send: nothing delivered from a refused list" 0 \
    "$("$E2E_PY" -c 'import json,sys; print(sum(json.load(open(sys.argv[1])).get("deliveries", {}).values()))' "${SINK_STATS[dup]}")"
{
    for i in $(seq 1 50); do echo "same@dup.test"; done
    echo "Same@DUP.test"
    echo "other@dup.test"
    echo "other@dup.test"
} >"$T/dups.rcpts"
SEND_TIMEOUT=30 send_run dups --recipients "$T/dups.rcpts" --config "$T/dup.conf"
check_eq "send: a list with duplicates exits 0" 0 "$RC"
check_grep "send: the duplicates are reported" "dups.rcpts: 51 duplicate lines skipped" "$T/dups.err"
sleep 0.3 # a few stats intervals
stop_sink dup
dl() { "$E2E_PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("deliveries", {}).get(sys.argv[2], 0))' "${SINK_STATS[dup]}" "$1"; }
check_eq "send: same@dup.test (51 lines, two spellings) delivered once" 1 "$(dl same@dup.test)"
check_eq "send: Same@DUP.test not sent as another address" 0 "$(dl Same@DUP.test)"
check_eq "send: other@dup.test (2 lines) delivered once" 1 "$(dl other@dup.test)"
check_eq "send: the summary counts 2 recipients" 2 "$(jget "$T/dups.json" recipients)"

e2e_finish
