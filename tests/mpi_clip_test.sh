#!/usr/bin/env bash
# mpi_clip_test.sh: data-parallel CLIP training (src/train/clip_train.c, clip_run.c) on one machine
# with `mpirun --oversubscribe -np 2`. Run by scripts/test.sh with DINOC pointing at an MPI build.
#  1. equivalence: 6 steps on 2 ranks (each computes its half of every batch, the loss is the
#     global batch's over gathered embeddings) equal 6 steps on 1 rank at the same global batch:
#     per-step losses, every weight of both towers, the projection, logit_scale, AdamW's moments;
#  2. resume: a 2-rank run resumed from its checkpoint equals the uninterrupted 2-rank run exactly,
#     and a 1-rank checkpoint resumed on 2 ranks stays within the bound of (1);
#  3. failure: one rank killed with SIGKILL mid-run ends the job with a non-zero exit and a message;
#     the last checkpoint stays intact and resumes;
#  4. a batch that does not divide among the ranks is refused with a message.
# Prints one line per check and "N passed, N failed" last.
set -u
source "$(dirname "$0")/mpi_lib.sh" # DINOC, PY, TMP, MPIRUN, ok/bad, check_killed_rank
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive

# 64 shapes items at 32 px (the tiny preset's size), two-shape images also listed with each shape's
# phrase alone (several captions per image: each rank must draw the same one), with hard-negative
# captions (gathered across ranks beside the captions; single-shape rows have none); global batch 16
"$DINOC" data shapes --out "$TMP/shapes" -n 64 --size 32 --seed 3 --part-captions --hard-negatives -q >/dev/null 2>"$TMP/ed" ||
    { bad "make the pairs"; cat "$TMP/ed" >&2; }
ARGS=(--pairs "$TMP/shapes" --preset tiny --batch 16 --warmup 2 --lr 2e-3 --threads 1 --ckpt-every 0)

run1=$TMP/r1 run2=$TMP/r2
"${MPIRUN[@]}" 1 "$DINOC" train clip -o "$run1" "${ARGS[@]}" --max-steps 6 >"$TMP/o1" 2>"$TMP/e1"
rc1=$?
"${MPIRUN[@]}" 2 "$DINOC" train clip -o "$run2" "${ARGS[@]}" --max-steps 6 >"$TMP/o2" 2>"$TMP/e2"
rc2=$?
if [ $rc1 = 0 ] && [ $rc2 = 0 ]; then ok "1-rank and 2-rank runs finish"; else
    bad "1-rank and 2-rank runs finish (exit $rc1, $rc2)"; tail -5 "$TMP/e1" "$TMP/e2" >&2; fi
if [ "$(wc -l <"$TMP/o2")" = 1 ] && grep -q '"ranks":2' "$TMP/o2"; then ok "one summary line per job, ranks 2"; else
    bad "one summary line per job"; cat "$TMP/o2" >&2; fi
if $PY -c "import json,sys; m=json.load(open(sys.argv[1])); sys.exit(0 if m['images'] == 51 and m['captions'] > 51 and m['hard_negatives'] else 1)" \
    "$run1/metrics.json" 2>/dev/null; then ok "several captions per image: one item per image ($(cut -c1-200 "$run1/metrics.json"))"
else bad "several captions per image: one item per image"; cat "$run1/metrics.json" >&2; fi

# compare A B BOUND: every checkpoint tensor and the per-step losses
cat >"$TMP/compare.py" <<'PYEOF'
"""Compares two dinoc CLIP run folders: every tensor of checkpoint.safetensors (both towers, the
head, AdamW's moments) within BOUND of the tensor's largest magnitude, per-step losses within 1e-6
relative. BOUND 0 means bit-exact. Why 2 ranks are not bit-exact against 1: each rank's gradient
is a sum over its own 8 rows and the allreduce adds the two (a different order of float additions
than one 16-row sum, ~1e-7 relative); the towers' products also run at other matrix sizes. AdamW
carries that into the weights over 6 steps. Bound 1e-5 (measured ~1e-6). Excluded: the attention
key biases (k_proj.bias), whose gradient is zero analytically (softmax ignores a shift shared by all
keys): Adam scales their rounding noise up to steps of +-lr, different in any two summation orders."""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[4])
import st
a, b, bound = sys.argv[1], sys.argv[2], float(sys.argv[3])
ta, tb = st.load(a + "/checkpoint.safetensors")[0], st.load(b + "/checkpoint.safetensors")[0]
# the key biases sit inside the flat buffers: compare the exported model's tensors for the towers
ma, mb = st.load(a + "/model.safetensors")[0], st.load(b + "/model.safetensors")[0]
worst, n, wk = 0.0, 0, "-"
for k in ma:
    if k.endswith("k_proj.bias") or ma[k].dtype.kind != "f":
        continue
    x, y = ma[k].astype(np.float64), mb[k].astype(np.float64)
    e = np.abs(x - y).max() / max(np.abs(x).max(), 1e-12); n += 1
    if e > worst: worst, wk = e, k
if set(ta) != set(tb):
    print("checkpoint tensors differ: %s" % sorted(set(ta) ^ set(tb))); sys.exit(1)
# AdamW's moments (Adam's update is blind to a gradient's scale, the moments are not: a gradient
# counted twice shows here); the key biases' noise is tiny against each moment buffer's largest
# value. (The flat *.params buffers hold the key biases themselves: the model tensors above cover
# every other weight.)
for k in ta:
    if k.endswith(".params"):
        continue
    x, y = ta[k].astype(np.float64), tb[k].astype(np.float64)
    e = np.abs(x - y).max() / max(np.abs(x).max(), 1e-12); n += 1
    if e > worst: worst, wk = e, k
la = [json.loads(l)["loss"] for l in open(a + "/log.jsonl") if '"loss"' in l]
lb = [json.loads(l)["loss"] for l in open(b + "/log.jsonl") if '"loss"' in l]
lw = max(abs(p - q) / abs(p) for p, q in zip(la, lb)) if la and len(la) == len(lb) else 1.0
if bound == 0:  # exact: every checkpoint tensor, bit for bit
    same = all(np.array_equal(ta[k], tb[k]) for k in ta) and all(np.array_equal(ma[k], mb[k]) for k in ma)
    print("%d checkpoint tensors %s, losses %.2e" % (len(ta), "identical" if same else "DIFFER", lw))
    sys.exit(0 if same and lw == 0 else 1)
print("%d tensors: worst %.2e of scale (%s), losses %.2e relative over %d steps" % (n, worst, wk, lw, len(la)))
sys.exit(0 if worst <= bound and lw <= 1e-6 and len(la) > 0 else 1)
PYEOF
if out=$($PY "$TMP/compare.py" "$run1" "$run2" 1e-5 tests/py 2>&1); then ok "2 ranks equal 1 rank ($out)"; else
    bad "2 ranks equal 1 rank ($out)"; fi

# resume: 3 steps, then 3 more from the checkpoint, against the 6-step 2-rank run
run3=$TMP/r3
"${MPIRUN[@]}" 2 "$DINOC" train clip -o "$run3" "${ARGS[@]}" --max-steps 3 >/dev/null 2>"$TMP/e3"
"${MPIRUN[@]}" 2 "$DINOC" train clip --resume "$run3" --max-steps 6 --threads 1 >/dev/null 2>>"$TMP/e3"
if out=$($PY "$TMP/compare.py" "$run2" "$run3" 0 tests/py 2>&1); then ok "2-rank resume is exact ($out)"; else
    bad "2-rank resume is exact ($out)"; tail -5 "$TMP/e3" >&2; fi
# a 1-rank checkpoint continued on 2 ranks (the batch of a step does not depend on the world size)
run6=$TMP/r6
"${MPIRUN[@]}" 1 "$DINOC" train clip -o "$run6" "${ARGS[@]}" --max-steps 3 >/dev/null 2>"$TMP/e6"
"${MPIRUN[@]}" 2 "$DINOC" train clip --resume "$run6" --max-steps 6 --threads 1 >/dev/null 2>>"$TMP/e6"
if out=$($PY "$TMP/compare.py" "$run1" "$run6" 1e-5 tests/py 2>&1); then ok "1-rank checkpoint resumed on 2 ranks ($out)"; else
    bad "1-rank checkpoint resumed on 2 ranks ($out)"; tail -5 "$TMP/e6" >&2; fi

# failure: kill one rank mid-run
check_killed_rank clip "$TMP/r4" "${ARGS[@]}" --epochs 100000 --ckpt-every 3

# a batch of 15 does not split between 2 ranks
"${MPIRUN[@]}" 2 "$DINOC" train clip -o "$TMP/r7" --pairs "$TMP/shapes" --preset tiny --batch 15 --max-steps 1 \
    --threads 1 >/dev/null 2>"$TMP/e7"
if [ $? != 0 ] && grep -q "does not divide among 2 ranks" "$TMP/e7"; then ok "an indivisible batch is refused"; else
    bad "an indivisible batch is refused"; tail -3 "$TMP/e7" >&2; fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
