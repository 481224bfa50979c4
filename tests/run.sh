#!/usr/bin/env bash
# tests/run.sh BUILD_DIR [unit|e2e] - the runner behind `make test`.
# Runs every cmocka binary BUILD_DIR/tests/test_*, then every
# tests/e2e/test_*.sh, counts individual checks, and ends with one line
# "N passed, N failed". Exits non-zero on any failure or if nothing ran.
set -u
BUILD=${1:-build}
WHAT=${2:-all}
cd "$(dirname "$0")/.."
export RINGMAIL_BUILD=$BUILD RINGMAIL=$BUILD/ringmail
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
PASS=0
FAIL=0
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

if [ "$WHAT" != e2e ]; then
    for t in "$BUILD"/tests/test_*; do
        [ -x "$t" ] && [ -f "$t" ] || continue
        case "$t" in *.d) continue ;; esac
        echo "== unit: $(basename "$t")"
        "$t" >"$LOG" 2>&1
        rc=$?
        cat "$LOG"
        p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$LOG" | tail -1)
        f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$LOG" | tail -1)
        PASS=$((PASS + ${p:-0}))
        FAIL=$((FAIL + ${f:-0}))
        if [ $rc -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
            echo "not ok - $(basename "$t") exited with status $rc"
            FAIL=$((FAIL + 1))
        fi
    done
fi

if [ "$WHAT" != unit ]; then
    export RINGMAIL_E2E_CERTS=$(mktemp -d /tmp/ringmail-certs.XXXXXX)
    trap 'rm -f "$LOG"; rm -rf "$RINGMAIL_E2E_CERTS"' EXIT
    for t in tests/e2e/test_*.sh; do
        [ -f "$t" ] || continue
        echo "== e2e: $(basename "$t")"
        timeout 600 bash "$t" >"$LOG" 2>&1
        rc=$?
        cat "$LOG"
        p=$(grep -c '^ok - ' "$LOG")
        f=$(grep -c '^not ok - ' "$LOG")
        PASS=$((PASS + p))
        FAIL=$((FAIL + f))
        if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
            echo "not ok - $(basename "$t") exited with status $rc"
            FAIL=$((FAIL + 1))
        fi
    done
fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ] && [ "$PASS" -gt 0 ]
