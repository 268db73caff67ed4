#!/usr/bin/env bash
# scripts/sanitize.sh: the test suite under AddressSanitizer + UndefinedBehaviorSanitizer.
# Builds everything with SAN=address,undefined (make BUILD=build-san-h ... WERROR=1 all), runs the
# C test runner, the CLI tests and the bad-input CLI tests against the sanitized binaries, and ends
# with "N passed, N failed". Any leak, memory error or undefined behaviour aborts the process at
# fault, which counts as a failure (a crashed runner prints no summary).
#   scripts/sanitize.sh              everything
#   scripts/sanitize.sh vit_         only C tests whose name contains "vit_" (CLI tests skipped)
# Fixtures: build/fixtures as scripts/test.sh makes them; generated here if missing (needs the
# Python packages of scripts/deps.sh). Environment: JOBS (make -j, default 2), SAN_BUILD (default
# build-san-h), FIX (fixtures folder), DINOC_SKIP_APT=1.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
JOBS=${JOBS:-2}
B=${SAN_BUILD:-build-san-h}
FIX=${FIX:-build/fixtures}
FILTER=${1:-}
t0=$(date +%s)

# Leaks are fatal (LeakSanitizer runs at exit and makes the exit status non-zero); allocation
# failures return NULL as they would in production, since the library turns them into
# DINOC_ERR_NOMEM. UBSan stops at the first error (also compiled in: -fno-sanitize-recover=all).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-exitcode=23}
# OpenMP's and OpenBLAS's thread pools are not leaks; keep threads few so the run stays quick.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OPENBLAS_NUM_THREADS=1
# full-depth ViT parity is slow under ASan: one case per model folder covers the same code
export DINOC_VIT_CASES=${DINOC_VIT_CASES:-1}

source scripts/deps.sh
dinoc_install_deps || { echo "error: apt-get install failed"; echo "0 passed, 1 failed"; exit 1; }

if ! make -j"$JOBS" BUILD="$B" SAN=address,undefined WERROR=1 all >&2; then
    echo "error: sanitized build failed"
    echo "0 passed, 1 failed"
    exit 1
fi

if [ ! -f "$FIX/.stamp" ]; then
    echo "fixtures: $FIX missing, generating (as scripts/test.sh does)" >&2
    mkdir -p "$FIX"
    for g in tests/py/gen_*.py; do
        OMP_NUM_THREADS=2 $PY "$g" "$FIX" >&2 || { echo "error: $g failed"; echo "0 passed, 1 failed"; exit 1; }
    done
    cat tests/py/*.py | sha1sum | cut -d' ' -f1 > "$FIX/.stamp"
fi

passed=0 failed=0
# add_summary LOG NAME: adds the "N passed, N failed" last line of LOG, or one failure if missing
add_summary() {
    local out
    out=$(tail -n 1 "$1")
    if [[ "$out" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2]))
    else
        echo "error: $2 crashed or printed no summary (a sanitizer report is above)" >&2
        failed=$((failed + 1))
    fi
}

DINOC_FIXTURES=$FIX DINOC_TMP=$B/tmp ./$B/dinoc_tests $FILTER > $B/c_tests.log 2>&1
rc=$?
cat $B/c_tests.log >&2
add_summary $B/c_tests.log "the C test runner"
# a leak report comes after the summary line: the exit status catches it
if [ $rc != 0 ] && [ "$(tail -n 1 $B/c_tests.log | grep -c ' 0 failed$')" = 1 ]; then
    echo "error: dinoc_tests exited $rc after passing (leak or sanitizer report at exit)" >&2
    failed=$((failed + 1))
fi

if [ -z "$FILTER" ]; then
    DINOC=./$B/dinoc FIX=$FIX PY=$PY bash tests/cli_test.sh > $B/cli_tests.log 2>&1
    cat $B/cli_tests.log >&2
    add_summary $B/cli_tests.log tests/cli_test.sh
    if [ -f tests/bad_inputs.sh ]; then
        DINOC=./$B/dinoc bash tests/bad_inputs.sh > $B/bad_inputs.log 2>&1
        cat $B/bad_inputs.log >&2
        add_summary $B/bad_inputs.log tests/bad_inputs.sh
    fi
fi
echo "sanitized run took $(( $(date +%s) - t0 )) s" >&2
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
