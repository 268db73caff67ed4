#!/usr/bin/env bash
# mpi_test.sh: data-parallel DINO (src/core/dist.c, `make MPI=1`) on one machine with
# `mpirun --oversubscribe -np 2`. Run by scripts/test.sh with DINOC pointing at an MPI build.
#  1. equivalence: 6 steps on 2 ranks (each half of every batch) equal 6 steps on 1 rank at the
#     same global batch: per-step losses and every weight of the student (= the saved teacher, with
#     --momentum-teacher 0), both heads, the center and AdamW's moments;
#  2. resume: a 2-rank run resumed from its checkpoint equals the uninterrupted 2-rank run;
#  3. failure: one rank killed with SIGKILL mid-run ends the whole job with a non-zero exit and
#     mpirun's message naming the rank; the last checkpoint stays intact and resumes.
# Prints one line per check and "N passed, N failed" last.
set -u
source "$(dirname "$0")/mpi_lib.sh" # DINOC, PY, TMP, MPIRUN, ok/bad, check_killed_rank
export OMP_NUM_THREADS=1
# a small DINO: 6 crops of 28/14 px, batch 32 (16 per rank); one compute thread per rank
ARGS=(--dim 32 --depth 2 --heads 2 --batch 32 --local-crops 4 --out-dim 128 --head-hidden 64 --head-bottleneck 32
      --knn-every-epoch 0 --threads 1 --workers 1 --momentum-teacher 0 --clip-grad 0.5)

run1=$TMP/r1 run2=$TMP/r2
OMP_NUM_THREADS=1 "${MPIRUN[@]}" 1 "$DINOC" train dino -o "$run1" "${ARGS[@]}" --max-steps 6 >"$TMP/o1" 2>"$TMP/e1"
rc1=$?
OMP_NUM_THREADS=1 "${MPIRUN[@]}" 2 "$DINOC" train dino -o "$run2" "${ARGS[@]}" --max-steps 6 >"$TMP/o2" 2>"$TMP/e2"
rc2=$?
if [ $rc1 = 0 ] && [ $rc2 = 0 ]; then ok "1-rank and 2-rank runs finish"; else
    bad "1-rank and 2-rank runs finish (exit $rc1, $rc2)"; tail -5 "$TMP/e1" "$TMP/e2" >&2; fi
if [ "$(wc -l <"$TMP/o2")" = 1 ] && grep -q '"ranks":2' "$TMP/o2"; then ok "one summary line per job, ranks 2"; else
    bad "one summary line per job"; cat "$TMP/o2" >&2; fi

# compare NAME A B: tensors and per-step losses within the bound (see the comment in compare.py)
cat >"$TMP/compare.py" <<'PYEOF'
"""Compares two dinoc DINO run folders. Bound: 1e-5 of each tensor's largest magnitude (losses: 1e-6
relative). Why not bit-exact: the 2-rank gradient is the sum of two half-batch sums, a different
order of float additions than one full-batch sum (~1e-7 relative per gradient); AdamW then carries
that into the weights. Excluded: attention key biases. Their gradient is zero analytically (softmax
ignores a shift shared by all keys), so what reaches Adam is rounding noise that Adam scales up to
steps of +-lr: the two runs take different +-lr steps there, as two torch runs on different thread
counts would."""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
import st
a, b = sys.argv[1], sys.argv[2]
worst = 0.0
ta, tb = st.load(a + "/model.safetensors")[0], st.load(b + "/model.safetensors")[0]
for k in ta:
    if k.endswith("attention.key.bias"):
        continue
    x, y = ta[k].astype(np.float64), tb[k].astype(np.float64)
    worst = max(worst, np.abs(x - y).max() / max(np.abs(x).max(), 1e-12))
ca, cb = st.load(a + "/checkpoint.safetensors")[0], st.load(b + "/checkpoint.safetensors")[0]
for k in ("student_head", "teacher_head", "center", "head_adam.m", "last_adam.m"):
    x, y = ca[k].astype(np.float64), cb[k].astype(np.float64)
    worst = max(worst, np.abs(x - y).max() / max(np.abs(x).max(), 1e-12))
la = [json.loads(l)["loss"] for l in open(a + "/log.jsonl") if '"loss"' in l]
lb = [json.loads(l)["loss"] for l in open(b + "/log.jsonl") if '"loss"' in l]
lw = max(abs(p - q) / abs(p) for p, q in zip(la, lb)) if la and len(la) == len(lb) else 1.0
print("tensors %.2e of scale, losses %.2e relative over %d steps" % (worst, lw, len(la)))
sys.exit(0 if worst <= 1e-5 and lw <= 1e-6 else 1)
PYEOF
if out=$($PY "$TMP/compare.py" "$run1" "$run2" tests/py 2>&1); then ok "2 ranks equal 1 rank ($out)"; else
    bad "2 ranks equal 1 rank ($out)"; fi

# resume: 3 steps, then 3 more from the checkpoint, against the 6-step 2-rank run
run3=$TMP/r3
OMP_NUM_THREADS=1 "${MPIRUN[@]}" 2 "$DINOC" train dino -o "$run3" "${ARGS[@]}" --max-steps 3 >/dev/null 2>"$TMP/e3"
OMP_NUM_THREADS=1 "${MPIRUN[@]}" 2 "$DINOC" train dino --resume "$run3" --max-steps 6 --threads 1 >/dev/null 2>>"$TMP/e3"
if cmp -s "$run3/checkpoint.safetensors" "$run2/checkpoint.safetensors"; then ok "2-rank resume is bit-exact"; else
    bad "2-rank resume is bit-exact"; tail -5 "$TMP/e3" >&2; fi

# failure: kill one rank mid-run
check_killed_rank dino "$TMP/r4" "${ARGS[@]}" --max-steps 100000 --ckpt-every 5

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
