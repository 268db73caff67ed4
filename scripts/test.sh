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
# (logs are written to files and then shown: `tee /dev/stderr` would truncate a redirected log)
DINOC_FIXTURES=$FIX DINOC_TMP=$BUILD/tmp ./$BUILD/dinoc_tests > $BUILD/c_tests.log 2>&1
cat $BUILD/c_tests.log >&2
out=$(tail -n 1 $BUILD/c_tests.log)
if [[ "$out" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2]))
else
    echo "error: the test runner crashed or printed no summary" >&2; failed=$((failed + 1))
fi
DINOC=./$BUILD/dinoc FIX=$FIX PY=$PY bash tests/cli_test.sh > $BUILD/cli_tests.log 2>&1
cat $BUILD/cli_tests.log >&2
out=$(tail -n 1 $BUILD/cli_tests.log)
if [[ "$out" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    passed=$((passed + BASH_REMATCH[1])); failed=$((failed + BASH_REMATCH[2]))
else
    echo "error: tests/cli_test.sh printed no summary" >&2; failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
