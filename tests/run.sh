#!/usr/bin/env bash
# tests/run.sh BUILD_DIR [unit|e2e|all] [PATTERN] - the runner behind `make test`.
#
# 1. unit: every executable BUILD_DIR/tests/test_* (cmocka). Each binary's
#    output is shown; its checks are counted from cmocka's summary lines
#    "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s)" (summed over all
#    groups). A binary that exits non-zero with no failed test counted (a
#    crash, a sanitizer abort) is one more failure; one that exits 0 without
#    a summary counts as one passed check.
# 2. e2e: every tests/e2e/test_*.sh, run from the repository root with
#    RINGMAIL_BUILD=BUILD_DIR and RINGMAIL=BUILD_DIR/ringmail (absolute), a
#    shared certificate cache (RINGMAIL_E2E_CERTS) and a per-script timeout
#    (RINGMAIL_E2E_TIMEOUT seconds, default 300). Output is streamed; checks
#    are the "ok - " / "not ok - " lines. A script that exits non-zero without
#    a "not ok" line, times out, or runs no check at all is one failure.
#    Servers and temp dirs a killed script left behind (registered by lib.sh)
#    are stopped and removed.
# PATTERN (optional) keeps only the binaries/scripts whose name contains it.
# RINGMAIL_E2E_DIR overrides the e2e script directory (tests/e2e).
#
# The last line of output is always "N passed, N failed". Exit status is 0
# only if nothing failed and at least one check ran.
set -u
BUILD=${1:-build}
WHAT=${2:-all}
PATTERN=${3:-}
case "$WHAT" in unit | e2e | all) ;; *)
    echo "usage: $0 BUILD_DIR [unit|e2e|all] [PATTERN]" >&2
    echo "0 passed, 1 failed"
    exit 2
    ;;
esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD=$(cd "$BUILD" 2>/dev/null && pwd || echo "$PWD/$BUILD") ;; esac
cd "$ROOT" || exit 2

if [ -z "${ASAN_OPTIONS+x}" ]; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
export RINGMAIL_BUILD=$BUILD RINGMAIL=$BUILD/ringmail
# cmocka's plain summary format, which is what we parse.
export CMOCKA_MESSAGE_OUTPUT=stdout
unset CMOCKA_XML_FILE
# $SHELL as on a bare CI machine, where it is unset: script(1) then runs
# commands with /bin/sh (dash, which need not exec a simple command) and
# tmux with the user's login shell. A developer's SHELL=/bin/bash would
# hide that difference.
unset SHELL
TIMEOUT=${RINGMAIL_E2E_TIMEOUT:-300}

PASS=0
FAIL=0
FAILED_NAMES=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringmail-run.XXXXXX") || exit 2
LOG=$WORK/log
export RINGMAIL_E2E_CERTS=$WORK/certs
export RINGMAIL_E2E_STATE=$WORK/state

# Stop whatever an e2e script registered and left running (its own trap
# normally did already): processes by pid, Postfix instances by directory.
reap_leftovers() {
    local pid start stat d
    if [ -f "$RINGMAIL_E2E_STATE/pids" ]; then
        # "PID STARTTIME": kill only if that pid is still the same process.
        while read -r pid start; do
            [ -n "$pid" ] && [ -n "$start" ] || continue
            stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
            stat=${stat##*) }
            # shellcheck disable=SC2086
            set -- $stat
            [ "${20}" = "$start" ] && kill -KILL "$pid" 2>/dev/null
        done <"$RINGMAIL_E2E_STATE/pids"
    fi
    if [ -f "$RINGMAIL_E2E_STATE/postfix" ]; then
        while read -r d; do
            [ -n "$d" ] && (. tests/e2e/lib.sh && stop_postfix "$d") >/dev/null 2>&1
        done <"$RINGMAIL_E2E_STATE/postfix"
    fi
    if [ -f "$RINGMAIL_E2E_STATE/tmpdirs" ]; then
        while read -r d; do
            case "$d" in */ringmail-e2e.*) rm -rf "$d" ;; esac
        done <"$RINGMAIL_E2E_STATE/tmpdirs"
    fi
    rm -rf "$RINGMAIL_E2E_STATE"
    mkdir -p "$RINGMAIL_E2E_STATE"
}

finish() {
    reap_leftovers
    local st
    for st in "$WORK"/state-*; do
        [ -d "$st" ] && RINGMAIL_E2E_STATE=$st reap_leftovers
    done
    rm -rf "$WORK"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$RINGMAIL_E2E_STATE"

now_ms() { echo $(($(date +%s%N) / 1000000)); }

if [ "$WHAT" != e2e ]; then
    n=0
    for t in "$BUILD"/tests/test_*; do
        [ -f "$t" ] && [ -x "$t" ] || continue
        case "$t" in *.d | *.o) continue ;; esac
        name=$(basename "$t")
        [ -n "$PATTERN" ] && [[ $name != *"$PATTERN"* ]] && continue
        n=$((n + 1))
        echo "== unit: $name"
        t0=$(now_ms)
        "$t" </dev/null 2>&1 | tee "$LOG"
        rc=${PIPESTATUS[0]}
        # cmocka writes these two lines to stderr and the rest to (buffered)
        # stdout, so they need not start a line of the merged log.
        p=$(grep -Eo '\[  PASSED  \] [0-9]+ test' "$LOG" | awk '{s += $4} END {print s + 0}')
        f=$(grep -Eo '\[  FAILED  \] [0-9]+ test' "$LOG" | awk '{s += $4} END {print s + 0}')
        summaries=$(grep -Eo '\[  (PASSED|FAILED)  \] [0-9]+ test' "$LOG" | wc -l)
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
            echo "not ok - $name exited with status $rc"
            f=1
        elif [ "$rc" -eq 0 ] && [ "$summaries" -eq 0 ]; then
            p=1 # not cmocka output: the binary counts as one check
        fi
        PASS=$((PASS + p))
        FAIL=$((FAIL + f))
        [ "$f" -gt 0 ] && FAILED_NAMES+=("unit $name")
        echo "== unit: $name: $p passed, $f failed ($(($(now_ms) - t0)) ms)"
    done
    [ "$n" -eq 0 ] && echo "== unit: no test binaries in $BUILD/tests"
fi

# e2e_count NAME RC LOG: the pass/fail counts of one e2e script's run
# into PASS, FAIL and FAILED_NAMES, and its summary line.
e2e_count() {
    local name=$1 rc=$2 log=$3 ms=$4 p f
    p=$(grep -c '^ok - ' "$log")
    f=$(grep -c '^not ok - ' "$log")
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "not ok - $name timed out after ${TIMEOUT}s"
        f=$((f + 1))
    elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "not ok - $name exited with status $rc"
        f=1
    elif [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        echo "not ok - $name ran no check"
        f=1
    fi
    PASS=$((PASS + p))
    FAIL=$((FAIL + f))
    [ "$f" -gt 0 ] && FAILED_NAMES+=("e2e $name")
    echo "== e2e: $name: $p passed, $f failed ($ms ms)"
}

# The two longest scripts spend most of their minutes waiting (a 30 s
# table lock, leases running out, kill loops against a slow sink): they
# run side by side, after the others, each with its own state directory
# (so neither's leftovers are reaped under the other), their output
# printed whole, one after the other. RINGMAIL_E2E_PAIRED="" runs every
# script alone.
PAIRED=${RINGMAIL_E2E_PAIRED-test_exactly_once.sh test_bounded_stop.sh}
is_paired() { case " $PAIRED " in *" $1 "*) return 0 ;; esac; return 1; }

if [ "$WHAT" != unit ]; then
    pair=()
    for t in "${RINGMAIL_E2E_DIR:-tests/e2e}"/test_*.sh; do
        [ -f "$t" ] || continue
        name=$(basename "$t")
        [ -n "$PATTERN" ] && [[ $name != *"$PATTERN"* ]] && continue
        if is_paired "$name"; then
            pair+=("$t")
            continue
        fi
        echo "== e2e: $name"
        t0=$(now_ms)
        timeout -k 10 "$TIMEOUT" bash "$t" </dev/null 2>&1 | tee "$LOG"
        rc=${PIPESTATUS[0]}
        reap_leftovers
        e2e_count "$name" "$rc" "$LOG" "$(($(now_ms) - t0))"
    done
    if [ ${#pair[@]} -gt 0 ]; then
        echo "== e2e: side by side: $(for t in "${pair[@]}"; do basename "$t"; done | tr '\n' ' ')"
        declare -A PAIR_PID PAIR_T0
        main_state=$RINGMAIL_E2E_STATE
        for t in "${pair[@]}"; do
            name=$(basename "$t")
            mkdir -p "$WORK/state-$name"
            PAIR_T0[$name]=$(now_ms)
            (
                RINGMAIL_E2E_STATE=$WORK/state-$name \
                    timeout -k 10 "$TIMEOUT" bash "$t" </dev/null >"$WORK/$name.log" 2>&1
                echo "$? $(now_ms)" >"$WORK/$name.end"
            ) &
            PAIR_PID[$name]=$!
        done
        for t in "${pair[@]}"; do
            name=$(basename "$t")
            wait "${PAIR_PID[$name]}"
            read -r rc end <"$WORK/$name.end"
            ms=$((end - PAIR_T0[$name]))
            echo "== e2e: $name"
            cat "$WORK/$name.log"
            RINGMAIL_E2E_STATE=$WORK/state-$name
            reap_leftovers
            RINGMAIL_E2E_STATE=$main_state
            e2e_count "$name" "$rc" "$WORK/$name.log" "$ms"
        done
    fi
fi

if [ ${#FAILED_NAMES[@]} -gt 0 ]; then
    echo "== failures in: ${FAILED_NAMES[*]}"
fi
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ]
