#!/usr/bin/env bash
# tests/kill_resume.sh: crash safety of `dinoc train supervised` (docs/hardening.md, "Crash safety").
#   DINOC=./build/dinoc bash tests/kill_resume.sh
# 1. kill_resume_exact: a tiny Fashion-MNIST run (60 steps, checkpoint every 5) straight through (A),
#    the same run killed with SIGKILL at a random moment after its first checkpoint (B), then
#    `--resume B --max-steps 60`: checkpoint.safetensors (params, head, AdamW moments, RNG, step,
#    data position, config), model.safetensors and log.jsonl (wall-clock field removed) must be
#    byte-identical to A's.
# 2. kill_mid_write: 30 steps with a checkpoint at every step (C straight through; D killed KILLS
#    times, each time after it wrote a checkpoint: odd kills the moment a *.tmp.<pid> file of the
#    run appears, i.e. mid-write, even ones at a random moment; resumed after each kill). After
#    every kill D/checkpoint.safetensors is absent or a
#    complete, valid file (`dinoc info` exits 0; *.tmp.* files left by an interrupted write are
#    never read), D's final checkpoint is byte-identical to C's, and no *.tmp.* file is left at the
#    end (each write removes those of writers that no longer run).
# Environment: DINOC (the CLI), KILL_SEED (the random seed, printed), KILLS (default 8), KILL_TMP
# (scratch parent, default build/tmp), DINOC_FASHION_MNIST (IDX folder; default Debian's).
# Ends with "N passed, N failed"; exit status 0 only if nothing failed. 45-75 s on 2 busy cores.
set -uo pipefail
cd "$(dirname "$0")/.."
DINOC=${DINOC:-./build/dinoc}
SEED=${KILL_SEED:-$(( $$ % 32768 ))}
RANDOM=$SEED
KILLS=${KILLS:-8}
W=${KILL_TMP:-build/tmp}/kill_resume.$$
rm -rf "$W" && mkdir -p "$W" || { echo "cannot create $W"; echo "0 passed, 1 failed"; exit 1; }
trap 'rm -rf "$W"' EXIT
echo "kill_resume: seed $SEED (rerun with KILL_SEED=$SEED), scratch $W" >&2

passed=0 failed=0
ok()   { passed=$((passed + 1)); echo "[  OK  ] $1" >&2; }
fail() { failed=$((failed + 1)); echo "[ FAIL ] $1" >&2; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
sleep_ms() { local s; printf -v s '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); sleep "$s"; }
# the "step" of a checkpoint's metadata (the safetensors header is at the start of the file)
ckpt_step() { head -c 65536 "$1" 2>/dev/null | grep -ao '"step":"[0-9]*"' | head -1 | grep -o '[0-9]*'; }
# wait_for_new_checkpoint FILE OLD_INODE PID: until FILE exists with an inode other than OLD_INODE
# (each checkpoint is renamed into place, so a new one has a new inode) or PID has exited
wait_for_new_checkpoint() {
    while kill -0 "$3" 2>/dev/null; do
        local ino
        ino=$(stat -c %i "$1" 2>/dev/null) && [ "$ino" != "$2" ] && return 0
        sleep 0.01
    done
    return 1
}
# the log without its wall-clock field
log_nospeed() { sed 's/,"img_s":[^,}]*//' "$1"; }

if [ ! -x "$DINOC" ]; then echo "error: $DINOC not built"; echo "0 passed, 1 failed"; exit 1; fi
STEPS=60   # case 1
STEPS2=30  # case 2: a checkpoint per step costs an fsync and a model.safetensors each
COMMON=(train supervised --dim 32 --depth 2 --heads 2 --patch 7 --batch 16 --epochs 1
        --eval-every-epoch 0 --threads 2)
TRAIN=("${COMMON[@]}" --max-steps $STEPS)
TRAIN2=("${COMMON[@]}" --max-steps $STEPS2)

# same_run REF GOT LABEL: the two run folders hold byte-identical checkpoints, weights and logs
same_run() {
    local ref=$1 got=$2 why=""
    cmp -s "$ref/checkpoint.safetensors" "$got/checkpoint.safetensors" || why+=" checkpoint.safetensors"
    cmp -s "$ref/model.safetensors" "$got/model.safetensors" || why+=" model.safetensors"
    cmp -s <(log_nospeed "$ref/log.jsonl") <(log_nospeed "$got/log.jsonl") || why+=" log.jsonl"
    if [ -z "$why" ]; then return 0; fi
    echo "    differs from the uninterrupted run:$why" >&2
    if [[ $why == *checkpoint* ]]; then
        echo "    steps: $(ckpt_step "$ref/checkpoint.safetensors") vs $(ckpt_step "$got/checkpoint.safetensors");" \
             "first differing bytes:" >&2
        cmp -l "$ref/checkpoint.safetensors" "$got/checkpoint.safetensors" 2>&1 | head -3 | sed 's/^/      /' >&2
    fi
    if [[ $why == *log* ]]; then
        diff <(log_nospeed "$ref/log.jsonl") <(log_nospeed "$got/log.jsonl") | head -6 | sed 's/^/      /' >&2
    fi
    return 1
}

# ---- 1. kill at a random moment, resume, compare with the straight run --------------------------
t0=$(now_ms)
"$DINOC" "${TRAIN[@]}" --ckpt-every 5 --out "$W/A" > "$W/A.out" 2> "$W/A.err"
rc=$?
dur=$(( $(now_ms) - t0 ))
echo "reference run: exit $rc, ${dur} ms" >&2
if [ $rc != 0 ] || [ "$(ckpt_step "$W/A/checkpoint.safetensors")" != $STEPS ]; then
    tail -3 "$W/A.err" >&2
    fail "kill_resume_exact (the reference run failed)"
    echo "$passed passed, $failed failed"
    exit 1
fi

# B: started, then (once its first checkpoint exists) killed after a random part of what the
# reference run had left; a run that finished first is retried with a shorter wait
span=$dur killed=0 at=0
for try in 1 2 3 4 5 6; do
    rm -rf "$W/B"
    "$DINOC" "${TRAIN[@]}" --ckpt-every 5 --out "$W/B" > /dev/null 2> "$W/B.err" &
    pid=$!
    t1=$(now_ms)
    wait_for_new_checkpoint "$W/B/checkpoint.safetensors" "" $pid
    left=$(( span - ($(now_ms) - t1) ))
    at=$(( RANDOM % (left > 100 ? left : 100) ))
    sleep_ms $at
    kill -KILL $pid 2>/dev/null
    wait $pid 2>/dev/null
    rc=$?
    at=$(( $(now_ms) - t1 ))
    if [ $rc = 137 ] && [ -f "$W/B/checkpoint.safetensors" ]; then killed=1; break; fi
    span=$(( span * 2 / 3 ))
    echo "    try $try: killed at $at ms: exit $rc, checkpoint $([ -f "$W/B/checkpoint.safetensors" ] && echo yes || echo no); retrying" >&2
done
if [ $killed = 0 ]; then
    fail "kill_resume_exact (no kill landed between the first checkpoint and the end)"
else
    step=$(ckpt_step "$W/B/checkpoint.safetensors")
    echo "    killed at $at ms; last checkpoint at step $step of $STEPS" >&2
    if ! "$DINOC" info "$W/B/checkpoint.safetensors" > /dev/null 2> "$W/B.info"; then
        fail "kill_resume_exact (the checkpoint left by the kill is not valid: $(tail -1 "$W/B.info"))"
    elif ! "$DINOC" train supervised --resume "$W/B" --max-steps $STEPS --threads 2 > "$W/B.out" 2> "$W/B.err"; then
        fail "kill_resume_exact (the resume failed: $(tail -1 "$W/B.err"))"
    elif same_run "$W/A" "$W/B"; then
        ok "kill_resume_exact (killed after step $step at $at ms, resumed: identical)"
    else
        fail "kill_resume_exact (killed after step $step at $at ms)"
    fi
fi

# ---- 2. repeated kills with a checkpoint write at every step ------------------------------------
t0=$(now_ms)
"$DINOC" "${TRAIN2[@]}" --ckpt-every 1 --out "$W/C" > /dev/null 2> "$W/C.err"
rc=$?
dur1=$(( $(now_ms) - t0 ))
echo "reference run with --ckpt-every 1: exit $rc, ${dur1} ms" >&2
if [ $rc != 0 ]; then
    fail "kill_mid_write (the reference run failed: $(tail -1 "$W/C.err"))"
else
    bad="" kills=0 tmps=0 done_early=0
    for k in $(seq 1 "$KILLS"); do
        if [ -f "$W/D/checkpoint.safetensors" ]; then
            cmd=("$DINOC" train supervised --resume "$W/D" --max-steps $STEPS2 --threads 2)
        else
            cmd=("$DINOC" "${TRAIN2[@]}" --ckpt-every 1 --out "$W/D")
        fi
        ino=$(stat -c %i "$W/D/checkpoint.safetensors" 2>/dev/null)
        "${cmd[@]}" > /dev/null 2> "$W/D.err" &
        pid=$!
        t1=$(now_ms)
        # past the start-up (reading Fashion-MNIST) once this run wrote a checkpoint; then odd kills
        # strike as soon as one of this process's *.tmp.<pid> files shows up (a write in progress),
        # even kills at a random moment within the next two steps
        wait_for_new_checkpoint "$W/D/checkpoint.safetensors" "$ino" $pid
        if [ $((k % 2)) = 1 ]; then
            end=$(( ${EPOCHREALTIME/./} + 3000000 ))
            while [ ${EPOCHREALTIME/./} -lt $end ] && ! compgen -G "$W/D/*.tmp.$pid" > /dev/null; do :; done
        else
            sleep_ms $(( RANDOM % (2 * dur1 / STEPS2 + 1) ))
        fi
        kill -KILL $pid 2>/dev/null
        wait $pid 2>/dev/null
        rc=$?
        at=$(( $(now_ms) - t1 ))
        if [ $rc = 0 ]; then done_early=1; break; fi
        if [ $rc != 137 ]; then bad+=" kill $k: the run failed by itself (exit $rc: $(tail -1 "$W/D.err"));"; break; fi
        kills=$((kills + 1))
        n=$(ls "$W/D" 2>/dev/null | grep -c '\.tmp\.')
        tmps=$((tmps + n))
        ck="$W/D/checkpoint.safetensors"
        if [ -e "$ck" ] && ! "$DINOC" info "$ck" > /dev/null 2> "$W/D.info"; then
            bad+=" kill $k at $at ms: checkpoint.safetensors is not valid ($(tail -1 "$W/D.info"));"
            cp "$ck" "$W/bad-checkpoint.$k"
            break
        fi
        echo "    kill $k at $at ms: checkpoint $([ -e "$ck" ] && echo "at step $(ckpt_step "$ck")" || echo absent)," \
             "$n *.tmp.* file(s) beside it" >&2
    done
    if [ -z "$bad" ]; then
        # the last resume, to the end; its first checkpoint write removes the stale *.tmp.* files
        if [ -f "$W/D/checkpoint.safetensors" ] && [ $done_early = 0 ]; then
            "$DINOC" train supervised --resume "$W/D" --max-steps $STEPS2 --threads 2 > /dev/null 2> "$W/D.err" \
                || bad+=" the final resume failed: $(tail -1 "$W/D.err");"
        elif [ $done_early = 0 ]; then
            "$DINOC" "${TRAIN2[@]}" --ckpt-every 1 --out "$W/D" > /dev/null 2> "$W/D.err" \
                || bad+=" the final run failed: $(tail -1 "$W/D.err");"
        fi
    fi
    if [ -z "$bad" ] && ! same_run "$W/C" "$W/D"; then bad+=" the run killed $kills times and resumed differs;"; fi
    # a later write removes the temp files of killed writers (their pid is gone)
    left=$(ls "$W/D" 2>/dev/null | grep -c '\.tmp\.' || true)
    if [ -z "$bad" ] && [ "$left" != 0 ]; then bad+=" $left stale *.tmp.* file(s) left after the final run;"; fi
    if [ -z "$bad" ]; then
        ok "kill_mid_write ($kills kills, $tmps *.tmp.* file(s) seen from interrupted writes; every checkpoint valid; final state identical)"
    else
        fail "kill_mid_write:$bad"
    fi
fi
echo "$passed passed, $failed failed"
[ $failed = 0 ]
