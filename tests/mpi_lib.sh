# mpi_lib.sh: what the MPI tests share (sourced): the binary (DINOC, default build/dinoc-mpi), PY,
# a scratch folder TMP removed at exit (with any process still running from it), the passed/failed
# counters with ok/bad, the mpirun command line MPIRUN, and the killed-rank check.
DINOC=${DINOC:-./build/dinoc-mpi}
PY=${PY:-/usr/bin/python3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"; pkill -9 -f "$TMP/" 2>/dev/null' EXIT
passed=0 failed=0
ok() { echo "[  OK  ] $1" >&2; passed=$((passed + 1)); }
bad() { echo "[ FAIL ] $1" >&2; failed=$((failed + 1)); }
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --mca btl self,vader -np)

# check_killed_rank METHOD RUN ARGS...: starts `train METHOD -o RUN ARGS...` on 2 ranks (ARGS must
# make it checkpoint every few steps and run long), kills one rank process with SIGKILL once the
# first checkpoint exists, and requires that the job ends by itself with a non-zero exit and a
# message naming the kill, and that the last checkpoint resumes for two more steps.
check_killed_rank() {
    local method=$1 run=$2; shift 2
    "${MPIRUN[@]}" 2 "$DINOC" train "$method" -o "$run" "$@" >/dev/null 2>"$TMP/kill.err" &
    local mp=$!
    for _ in $(seq 1 300); do [ -f "$run/checkpoint.safetensors" ] && break; sleep 0.1; done
    sleep 0.5
    # the victim: one of the two rank processes (not mpirun), whatever the binary is called
    local victim
    victim=$(pgrep -f -- "-o $run" | grep -v "^$mp\$" | while read -r p; do
        case "$(ps -o comm= -p "$p")" in dinoc*) echo "$p" ;; esac; done | tail -n 1)
    if [ -n "$victim" ]; then kill -9 "$victim"; fi
    local ended=0 rc
    timeout 60 tail --pid=$mp -f /dev/null && ended=1
    kill -9 $mp 2>/dev/null # (only if the job did not end by itself within 60 s: a failure below)
    wait $mp; rc=$?
    if [ -n "$victim" ] && [ $ended = 1 ] && [ $rc != 0 ]; then ok "$method: a killed rank ends the job (exit $rc)"; else
        bad "$method: a killed rank ends the job (victim '${victim}', ended by itself: $ended, exit $rc)"; fi
    if grep -qi "signal 9\|killed" "$TMP/kill.err"; then ok "$method: the job says a rank was killed"; else
        bad "$method: the job says a rank was killed"; tail -5 "$TMP/kill.err" >&2; fi
    local steps
    steps=$($PY -c "import sys; sys.path.insert(0,'tests/py'); import st; print(st.load('$run/checkpoint.safetensors')[1]['step'])" 2>/dev/null)
    "${MPIRUN[@]}" 2 "$DINOC" train "$method" --resume "$run" --threads 1 --max-steps $(( ${steps:-0} + 2 )) \
        >/dev/null 2>"$TMP/kill.resume.err"
    if [ $? = 0 ] && [ -n "$steps" ]; then ok "$method: the last checkpoint (step $steps) resumes"; else
        bad "$method: the last checkpoint resumes (step '$steps')"; tail -5 "$TMP/kill.resume.err" >&2; fi
}
