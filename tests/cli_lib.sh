# cli_lib.sh: what every CLI test script shares (sourced after `set -u`): a scratch folder $TMP
# (removed at exit), the pass/fail counters and the checks. Each check prints one line; the script
# prints "N passed, N failed" last (scripts/test.sh adds those up).
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
passed=0 failed=0

ok() { echo "[  OK  ] $1" >&2; passed=$((passed + 1)); }
bad() { echo "[ FAIL ] $1" >&2; failed=$((failed + 1)); }
# expect_rc NAME RC CMD...: runs CMD (stdout to $TMP/out, stderr to $TMP/err), requires exit status
# RC; measurement lines the command prints (indented by 4 spaces) are shown
expect_rc() {
    local name=$1 want=$2; shift 2
    "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
    grep '^    ' "$TMP/err" >&2
    if [ "$rc" = "$want" ]; then ok "$name"; else bad "$name (exit $rc, wanted $want)"; sed 's/^/    /' "$TMP/err" | tail -8 >&2; fi
}
# expect_out NAME TEXT: the last command's stdout is exactly TEXT
expect_out() {
    if [ "$(cat "$TMP/out")" = "$2" ]; then ok "$1"; else bad "$1 (stdout '$(head -c 300 "$TMP/out")', wanted '$2')"; fi
}
# expect_err NAME TEXT: the last command's stderr contains TEXT
expect_err() {
    if grep -qF -- "$2" "$TMP/err"; then ok "$1"; else bad "$1 (stderr lacks '$2')"; sed 's/^/    /' "$TMP/err" | tail -8 >&2; fi
}
# expect_json NAME PYTHON-EXPR: the last stdout is one JSON object j for which EXPR holds ($PY)
expect_json() {
    if ${PY:-/usr/bin/python3} -c "import json,sys; j = json.load(sys.stdin); sys.exit(0 if ($2) else 1)" <"$TMP/out" 2>/dev/null; then
        ok "$1"
    else
        bad "$1"; sed 's/^/    /' "$TMP/out" | head -5 >&2
    fi
}

# expect_py NAME SCRIPT ARGS...: a Python check (PY) that exits 0
expect_py() {
    local name=$1 script=$2; shift 2
    if ${PY:-/usr/bin/python3} -c "$script" "$@" >"$TMP/py" 2>&1; then ok "$name"; else bad "$name"; sed 's/^/    /' "$TMP/py" | tail -8 >&2; fi
}
