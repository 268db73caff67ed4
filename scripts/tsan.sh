#!/usr/bin/env bash
# scripts/tsan.sh: the multi-threaded tests under ThreadSanitizer (docs/hardening.md, "Thread safety").
# Builds the test runner with `make BUILD=build-tsan SAN=thread OMP=0` and runs
#   threads_*      one dinoc_model shared by 4 pthreads, each with its own dinoc_state (tests/test_threads.c)
#   data_loader    the batch loader's worker threads (tests/test_data.c)
#   multicrop_threads  the multi-crop transform from two threads at once (tests/test_multicrop.c)
#   dino_run_resume    a DINO run: loader workers + multi-crop (tests/test_dino_run.c)
# and ends with "N passed, N failed". A data race aborts the runner (halt_on_error), which counts as
# a failure. OMP=0 because Debian's libgomp is not built with TSan: its barriers and task queues
# are invisible to TSan and every OpenMP region would be reported as a race; with OMP=0 the OpenMP
# pragmas compile to the same loops run serially, so what remains is dinoc's own sharing between
# user threads. OpenBLAS (not instrumented) runs single-threaded inside the caller's thread.
#   scripts/tsan.sh                 everything above
#   scripts/tsan.sh data_loader     only the C tests whose name contains the filter
# Environment: JOBS (make -j, default 2), TSAN_BUILD (default build-tsan), TSAN_WERROR (1: -Werror),
# TSAN_CFLAGS (extra compiler flags, e.g. --param=tsan-instrument-func-entry-exit=0 for a library
# whose ifunc resolvers are instrumented: they run before TSan's runtime starts; use a fresh
# TSAN_BUILD when changing flags), TSAN_OPTIONS.
set -uo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}
B=${TSAN_BUILD:-build-tsan}
t0=$(date +%s)
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:second_deadlock_stack=1}

if ! CFLAGS="${TSAN_CFLAGS:-}" make -j"$JOBS" BUILD="$B" SAN=thread OMP=0 WERROR="${TSAN_WERROR:-0}" "$B/dinoc_tests" >&2; then
    echo "error: ThreadSanitizer build failed"
    echo "0 passed, 1 failed"
    exit 1
fi
mkdir -p "$B/tmp"

# Each filter in its own process: threads_first_use_concurrent must be the first call of the
# process that asks for the thread count, and "threads_" alone would also match optim_threads_*.
FILTERS=("$@")
[ ${#FILTERS[@]} -eq 0 ] && FILTERS=(threads_first threads_shared threads_last data_loader multicrop_threads dino_run_resume)
# TSan needs a fixed memory layout; with a large mmap ASLR entropy (recent kernels) it dies with
# "unexpected memory mapping" unless ASLR is off for the process.
RUN=()
if setarch "$(uname -m)" -R true 2>/dev/null; then RUN=(setarch "$(uname -m)" -R); fi

passed=0 failed=0
for f in "${FILTERS[@]}"; do
    log="$B/tsan_${f}.log"
    DINOC_TMP="$B/tmp" "${RUN[@]}" "./$B/dinoc_tests" "$f" > "$log" 2>&1
    rc=$?
    cat "$log" >&2
    out=$(tail -n 1 "$log")
    if [[ "$out" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2]))
        if [ "${BASH_REMATCH[1]}" = 0 ] && [ "${BASH_REMATCH[2]}" = 0 ]; then
            echo "error: no test matches '$f'" >&2; failed=$((failed + 1))
        elif [ $rc != 0 ] && [ "${BASH_REMATCH[2]}" = 0 ]; then
            echo "error: '$f' exited $rc after passing (a ThreadSanitizer report at exit?)" >&2; failed=$((failed + 1))
        fi
    else
        echo "error: '$f' stopped without a summary (ThreadSanitizer report above, exit $rc)" >&2
        grep -E '^(WARNING: ThreadSanitizer|SUMMARY: ThreadSanitizer)' "$log" | head -4 | sed 's/^/    /' >&2
        failed=$((failed + 1))
    fi
done
echo "ThreadSanitizer run took $(( $(date +%s) - t0 )) s" >&2
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
