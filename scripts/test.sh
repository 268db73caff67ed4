#!/usr/bin/env bash
# scripts/test.sh: the project's test command (README Quickstart, `make test`, .ci/run).
# 1. installs the Debian packages it needs when missing (apt-get, as root),
# 2. builds warning-free (-Werror) the library, CLI and test runner,
# 3. generates PyTorch/PIL reference fixtures into build/fixtures (tests/py/gen_*.py),
# 4. runs the C test runner and the CLI tests,
# and ends with one line "N passed, N failed". Exit status 0 only if nothing failed.
# Environment: JOBS (make -j, default 2), SAN=address,undefined for a sanitizer build,
# DINOC_SKIP_APT=1 to skip the package check.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3   # Debian's python: python3-torch lives there, not in a pyenv/venv
JOBS=${JOBS:-2}

source scripts/deps.sh
dinoc_install_deps || { echo "error: apt-get install failed"; echo "0 passed, 1 failed"; exit 1; }

BUILD=build
[ -n "${SAN:-}" ] && BUILD=build-san
if ! make -j"$JOBS" BUILD=$BUILD SAN="${SAN:-}" WERROR=1 all >&2; then
    echo "error: build failed"
    echo "0 passed, 1 failed"
    exit 1
fi

# Fixtures: regenerated when a generator changes (a stamp holds their checksum).
FIX=build/fixtures
mkdir -p "$FIX"
sum=$(cat tests/py/*.py | sha1sum | cut -d' ' -f1)
if [ "$(cat "$FIX/.stamp" 2>/dev/null)" != "$sum" ]; then
    rm -rf "$FIX" && mkdir -p "$FIX"
    for g in tests/py/gen_*.py; do
        echo "fixtures: $g" >&2
        OMP_NUM_THREADS=2 $PY "$g" "$FIX" >&2 || { echo "error: $g failed"; echo "0 passed, 1 failed"; exit 1; }
    done
    echo "$sum" > "$FIX/.stamp"
fi

passed=0 failed=0
# run_part NAME LOG CMD...: runs a part, shows its log, adds its closing "N passed, N failed" line
# (a part that prints no such line counts as one failure)
run_part() {
    local name=$1 log=$2; shift 2
    "$@" > "$log" 2>&1
    local rc=$?
    cat "$log" >&2
    local out
    out=$(tail -n 1 "$log")
    if [[ "$out" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2]))
        if [ $rc != 0 ] && [ "${BASH_REMATCH[2]}" = 0 ]; then
            echo "error: $name exited $rc after reporting no failure" >&2; failed=$((failed + 1))
        fi
    else
        echo "error: $name crashed or printed no summary" >&2; failed=$((failed + 1))
    fi
}
# (logs go to files and are shown afterwards: `tee /dev/stderr` would truncate a redirected log)
run_part "C tests" $BUILD/c_tests.log env DINOC_FIXTURES=$FIX DINOC_TMP=$BUILD/tmp ./$BUILD/dinoc_tests
if [ "${DNNL:-1}" = 1 ]; then # (built with DNNL=1 by default)
    if make -s BUILD=$BUILD $BUILD/bf16_dnnl_f32 >&2; then
        run_part "oneDNN bf16 plumbing (fp32 operands)" $BUILD/bf16_dnnl_f32.log ./$BUILD/bf16_dnnl_f32
    else
        echo "error: the bf16_dnnl_f32 harness did not build" >&2; failed=$((failed + 1))
    fi
fi
# fp32 products run on oneDNN's sgemm where the CPU has AVX-512 (dinoc_fp32_backend): the gradient
# and PyTorch-parity tests once more on OpenBLAS, the fallback elsewhere
run_part "gradients on OpenBLAS sgemm" $BUILD/openblas_grad.log env DINOC_SGEMM=openblas DINOC_TMP=$BUILD/tmp \
    ./$BUILD/dinoc_tests grad
run_part "PyTorch parity on OpenBLAS sgemm" $BUILD/openblas_parity.log env DINOC_SGEMM=openblas DINOC_FIXTURES=$FIX \
    DINOC_TMP=$BUILD/tmp ./$BUILD/dinoc_tests parity
# the bf16 tests once more with the native dispatch on (a plain-C stand-in for oneDNN)
if make -s BUILD=$BUILD SAN="${SAN:-}" $BUILD/dinoc_tests_fakebf16 >&2; then
    run_part "bf16 native dispatch (stand-in backend)" $BUILD/fakebf16.log env DINOC_FIXTURES=$FIX \
        DINOC_TMP=$BUILD/tmp ./$BUILD/dinoc_tests_fakebf16 bf16
else
    echo "error: dinoc_tests_fakebf16 did not build" >&2; failed=$((failed + 1))
fi
run_part "CLI tests" $BUILD/cli_tests.log env DINOC=./$BUILD/dinoc FIX=$FIX PY=$PY bash tests/cli_test.sh
run_part "bad-input CLI tests" $BUILD/bad_inputs.log env DINOC=./$BUILD/dinoc bash tests/bad_inputs.sh
run_part "eval CLI tests" $BUILD/cli_eval.log env DINOC=./$BUILD/dinoc PY=$PY bash tests/cli_eval_test.sh
run_part "attn/report CLI tests" $BUILD/attn_report.log env DINOC=./$BUILD/dinoc PY=$PY bash tests/cli_attn_report_test.sh
run_part "tokenize CLI tests" $BUILD/cli_tokenize.log env DINOC=./$BUILD/dinoc PY=$PY bash tests/cli_tokenize_test.sh
run_part "data CLI tests" $BUILD/cli_data.log env DINOC=./$BUILD/dinoc PY=$PY bash tests/cli_data_test.sh
run_part "CLIP uses CLI tests" $BUILD/cli_clip_eval.log env DINOC=./$BUILD/dinoc FIX=$FIX PY=$PY bash tests/cli_clip_eval_test.sh
run_part "MLM CLI tests" $BUILD/cli_mlm.log env DINOC=./$BUILD/dinoc PY=$PY bash tests/cli_mlm_test.sh
run_part "dense CLI tests" $BUILD/cli_dense.log env DINOC=./$BUILD/dinoc PY=$PY bash tests/cli_dense_test.sh
run_part "kill/resume tests" $BUILD/kill_resume.log env DINOC=./$BUILD/dinoc KILL_TMP=$BUILD/tmp bash tests/kill_resume.sh
# data-parallel DINO, DINOv2 and CLIP on 2 ranks (build/dinoc-mpi shares every object but src/core/dist.c)
if make -j"$JOBS" BUILD=$BUILD SAN="${SAN:-}" WERROR=1 mpi >&2; then
    run_part "MPI tests" $BUILD/mpi.log env DINOC=./$BUILD/dinoc-mpi PY=$PY bash tests/mpi_test.sh
    run_part "MPI CLIP tests" $BUILD/mpi_clip.log env DINOC=./$BUILD/dinoc-mpi PY=$PY bash tests/mpi_clip_test.sh
    run_part "MPI DINOv2 tests" $BUILD/mpi_dinov2.log env DINOC=./$BUILD/dinoc-mpi PY=$PY bash tests/mpi_dinov2_test.sh
else
    echo "error: the MPI build failed" >&2; failed=$((failed + 1))
fi
# Hardening passes (skip with DINOC_SKIP_SAN=1 / DINOC_SKIP_TSAN=1 / DINOC_SKIP_FUZZ=1): the suite
# under ASan + UBSan, the threaded tests under ThreadSanitizer, and a short libFuzzer smoke run of
# every parser target.
if [ "${DINOC_SKIP_SAN:-0}" != 1 ] && [ -z "${SAN:-}" ]; then
    run_part "sanitizer pass" build/sanitize.log env DINOC_SKIP_APT=1 FIX=$FIX bash scripts/sanitize.sh
fi
if [ "${DINOC_SKIP_TSAN:-0}" != 1 ] && [ -z "${SAN:-}" ]; then
    run_part "ThreadSanitizer pass" build/tsan.log env bash scripts/tsan.sh
fi
if [ "${DINOC_SKIP_FUZZ:-0}" != 1 ]; then
    run_part "fuzz smoke" build/fuzz.log env DINOC_SKIP_APT=1 bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
