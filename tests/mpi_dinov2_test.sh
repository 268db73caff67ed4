#!/usr/bin/env bash
# mpi_dinov2_test.sh: data-parallel DINOv2 (src/train/dinov2.c, dinov2_loss.c) on one machine with
# `mpirun --oversubscribe -np 2`. Run by scripts/test.sh with DINOC pointing at an MPI build.
#  1. equivalence, 6 steps on 2 ranks against 1 rank at the same global batch (32 images), twice:
#     centering with the DINO head shared by iBOT, and Sinkhorn-Knopp with a separate iBOT head:
#     per-step losses and every checkpoint tensor (student, teacher, heads, AdamW moments, centers);
#  2. KoLeo over the global batch: the first step's KoLeo loss on 2 ranks equals 1 rank's (a
#     per-rank KoLeo over 16 rows would not);
#  3. resume: a 2-rank run resumed from its checkpoint equals the uninterrupted 2-rank run exactly;
#  4. failure: one rank killed with SIGKILL ends the job with a non-zero exit and a message; the
#     last checkpoint stays intact and resumes.
# Why KoLeo is off in (1): a small ViT at initialisation gives nearly identical CLS features (KoLeo
# ~12 per crop: nearest-neighbour distances ~1e-5), so which row is a row's nearest neighbour flips
# on rounding-level differences, and KoLeo's gradient (~1/distance) turns a 1e-7 difference into a
# different step. That is the loss's own sensitivity, not the data parallelism: (2) checks KoLeo
# where both runs still hold the same weights.
# Prints one line per check and "N passed, N failed" last.
set -u
source "$(dirname "$0")/mpi_lib.sh" # DINOC, PY, TMP, MPIRUN, ok/bad, check_killed_rank
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
BASE=(--dim 32 --depth 2 --heads 2 --batch 32 --out-dim 128 --head-hidden 64 --head-bottleneck 32
      --knn-every-epoch 0 --threads 1 --workers 1)
SK=(--targets sinkhorn --ibot-separate-head 1 --ibot-out-dim 96 --ibot-hidden 48 --ibot-bottleneck 24)

cat >"$TMP/compare.py" <<'PYEOF'
"""Compares two dinoc DINOv2 run folders: every float tensor of checkpoint.safetensors within BOUND
of its largest magnitude (0: bit-exact) and the per-step losses (log.jsonl, key KEY) within 1e-6
relative. Why 2 ranks are not bit-exact against 1: the gradient is the sum of two half-batch sums
and the centers' and Sinkhorn-Knopp's sums are summed in another order (~1e-7 relative per sum);
AdamW carries that into the weights. Bound 1e-5 (measured ~1e-7)."""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[5])
import st
a, b, bound, key = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
ta, tb = st.load(a + "/checkpoint.safetensors")[0], st.load(b + "/checkpoint.safetensors")[0]
worst, wk = 0.0, "-"
for k in ta:
    x, y = ta[k].astype(np.float64), tb[k].astype(np.float64)
    if bound == 0 and not np.array_equal(ta[k], tb[k]):
        worst, wk = 1.0, k
    if ta[k].dtype.kind == "f" and bound > 0:
        e = np.abs(x - y).max() / max(np.abs(x).max(), 1e-12)
        if e > worst: worst, wk = e, k
la = [json.loads(l)[key] for l in open(a + "/log.jsonl") if '"loss"' in l]
lb = [json.loads(l)[key] for l in open(b + "/log.jsonl") if '"loss"' in l]
lw = max(abs(p - q) / max(abs(p), 1e-12) for p, q in zip(la, lb)) if la and len(la) == len(lb) else 1.0
print("%d tensors: worst %.2e of scale (%s); %s %.2e relative over %d steps" % (len(ta), worst, wk, key, lw, len(la)))
sys.exit(0 if worst <= bound and lw <= (1e-6 if bound > 0 else 0) else 1)
PYEOF
cmp_runs() { $PY "$TMP/compare.py" "$1" "$2" "$3" "$4" tests/py 2>&1; }

# 1. equivalence, two target kinds
for kind in centering sinkhorn; do
    extra=(); [ $kind = sinkhorn ] && extra=("${SK[@]}")
    r1=$TMP/$kind.1 r2=$TMP/$kind.2
    "${MPIRUN[@]}" 1 "$DINOC" train dinov2 -o "$r1" "${BASE[@]}" "${extra[@]}" --koleo-weight 0 --max-steps 6 \
        >"$TMP/o1" 2>"$TMP/e1"
    rc1=$?
    "${MPIRUN[@]}" 2 "$DINOC" train dinov2 -o "$r2" "${BASE[@]}" "${extra[@]}" --koleo-weight 0 --max-steps 6 \
        >"$TMP/o2" 2>"$TMP/e2"
    rc2=$?
    if [ $rc1 != 0 ] || [ $rc2 != 0 ]; then bad "$kind: runs finish (exit $rc1, $rc2)"; tail -5 "$TMP/e1" "$TMP/e2" >&2
    elif out=$(cmp_runs "$r1" "$r2" 1e-5 loss); then ok "$kind: 2 ranks equal 1 rank ($out)"
    else bad "$kind: 2 ranks equal 1 rank ($out)"; fi
done
if [ "$(wc -l <"$TMP/o2")" = 1 ] && grep -q '"ranks":2' "$TMP/o2"; then ok "one summary line per job, ranks 2"; else
    bad "one summary line per job"; cat "$TMP/o2" >&2; fi

# 2. KoLeo over the global batch: step 1
k1=$TMP/k1 k2=$TMP/k2
"${MPIRUN[@]}" 1 "$DINOC" train dinov2 -o "$k1" "${BASE[@]}" --max-steps 1 >/dev/null 2>"$TMP/ek"
"${MPIRUN[@]}" 2 "$DINOC" train dinov2 -o "$k2" "${BASE[@]}" --max-steps 1 >/dev/null 2>>"$TMP/ek"
if out=$($PY - "$k1" "$k2" <<'PYEOF' 2>&1
import json, sys
k = [[json.loads(l)["koleo_loss"] for l in open(d + "/log.jsonl") if '"loss"' in l][0] for d in sys.argv[1:3]]
print("KoLeo %.6f vs %.6f" % (k[0], k[1]))
sys.exit(0 if k[0] > 0 and abs(k[0] - k[1]) <= 1e-6 * abs(k[0]) else 1)
PYEOF
); then ok "KoLeo is the global batch's ($out)"; else bad "KoLeo is the global batch's ($out)"; tail -3 "$TMP/ek" >&2; fi

# 3. resume: 3 steps, then 3 more from the checkpoint, against the 6-step 2-rank run
r3=$TMP/r3
"${MPIRUN[@]}" 2 "$DINOC" train dinov2 -o "$r3" "${BASE[@]}" --koleo-weight 0 --max-steps 3 >/dev/null 2>"$TMP/e3"
"${MPIRUN[@]}" 2 "$DINOC" train dinov2 --resume "$r3" --max-steps 6 --threads 1 >/dev/null 2>>"$TMP/e3"
if out=$(cmp_runs "$TMP/centering.2" "$r3" 0 loss); then ok "2-rank resume is exact ($out)"; else
    bad "2-rank resume is exact ($out)"; tail -5 "$TMP/e3" >&2; fi

# 4. failure: kill one rank mid-run
check_killed_rank dinov2 "$TMP/r4" "${BASE[@]}" --max-steps 100000 --ckpt-every 5

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
