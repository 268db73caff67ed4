#!/usr/bin/env bash
# bench/run_dino.sh: DINO training-step throughput in dinoc (`dinoc bench dino`) and in PyTorch
# (bench/bench_dino_torch.py, Debian's python3-torch), side by side, for the same step: teacher
# forward on the global crops, student forward on the global and local crops, DINOHead, DINO loss,
# backward, per-tensor clip 3.0, AdamW, EMA teacher, center update, on random crops held in memory.
# Model: the issue's ViT-tiny (D 192, 12 blocks, 3 heads, patch 4, 1 channel; 2 global crops of 32
# and 6 local of 16; head 1024/256/4096; batch 64; drop path 0.1 in both). Prints img/s (source
# images per second = batch / median step) for each and the ratio dinoc / PyTorch per thread count,
# then the mean ms of each phase, and writes bench/results_dino.txt. The two implementations
# alternate per point so machine-speed drift hits both alike. ITERS > 0 times exactly that many
# steps (after 2 warm-up steps); otherwise each side runs until MIN_TIME seconds (and >= 3 steps).
# EXTRA passes more options to both (e.g. EXTRA="--batch 32 --depth 6"). Both run under the same
# OMP_WAIT_POLICY (default PASSIVE, what bench_dino_torch.py sets for itself): with libgomp's default
# spin-waiting, a 2-thread dinoc step on 2 busy shared cores ran 3-5x slower than with PASSIVE.
# PRECISIONS="fp32 bf16" adds the bf16 step: dinoc --precision bf16 (bf16 products, fp32 master
# weights; oneDNN where the CPU has AMX / AVX512-BF16, emulated elsewhere) against PyTorch's CPU
# autocast to bfloat16.
#   THREADS="1 2" PRECISIONS="fp32 bf16" MIN_TIME=20 ITERS=0 DROP_PATH=0.1 BUILD=build bash bench/run_dino.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
THREADS=${THREADS:-"1 2"}
MIN_TIME=${MIN_TIME:-20}
ITERS=${ITERS:-0}
DROP_PATH=${DROP_PATH:-0.1}
EXTRA=${EXTRA:-}
PRECISIONS=${PRECISIONS:-fp32}
BUILD=${BUILD:-build}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
make -s -j2 BUILD="$BUILD" "$BUILD/dinoc" >&2
OUT=bench/results_dino.txt
ARGS="--iters $ITERS --min-time $MIN_TIME --drop-path $DROP_PATH $EXTRA"
{
    echo "# DINO step (teacher fwd + student fwd on 2x32 + 6x16 crops + heads + loss + bwd + clip + AdamW + EMA + center)," \
         "ViT D192 L12 H3 P4 1ch, head 1024/256/4096, batch 64, drop path $DROP_PATH ${EXTRA:+[$EXTRA] };" \
         "bf16: dinoc $("./$BUILD/dinoc" bench dino --iters 1 --batch 2 --depth 1 --precision bf16 --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["backend"])'), torch autocast;" \
         "OMP_WAIT_POLICY=$OMP_WAIT_POLICY;" \
         "$(date -u +%Y-%m-%dT%H:%MZ); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
    printf "%-7s %-9s %12s %12s %8s\n" threads precision "dinoc img/s" "torch img/s" ratio
} | tee "$OUT"
PHASES=""
for pr in $PRECISIONS; do
for t in $THREADS; do
    # shellcheck disable=SC2086
    d=$("./$BUILD/dinoc" bench dino --threads "$t" $ARGS --precision "$pr" --json)
    # shellcheck disable=SC2086
    p=$(OMP_NUM_THREADS=$t $PY bench/bench_dino_torch.py --threads "$t" $ARGS --precision "$pr" --json 2>/dev/null | tail -n 1)
    PHASES+="$t $pr"$'\t'"$d"$'\t'"$p"$'\n'
    $PY - "$d" "$p" "$t" "$pr" <<'PYEOF' | tee -a "$OUT"
import json, sys
d = json.loads(sys.argv[1]); p = json.loads(sys.argv[2])
print(f"{sys.argv[3]:<7} {sys.argv[4]:<9} {d['img_s']:12.2f} {p['img_s']:12.2f} {d['img_s'] / p['img_s']:8.2f}")
PYEOF
done
done
printf '%s' "$PHASES" | $PY -c '
import json, sys
print("# mean ms per phase, dinoc / torch (teacher: backbone + head; student fwd: backbones; heads+loss: student head + loss;")
print("# backward: head + backbones; update: clip + AdamW + EMA + center; step: median)")
print("%-12s %17s %17s %17s %17s %17s %17s" % ("thr prec", "teacher", "student fwd", "heads+loss", "backward", "update", "step"))
for line in sys.stdin:
    t, d, p = line.rstrip("\n").split("\t")
    d, p = json.loads(d), json.loads(p)
    cols = [("ms_teacher", "ms_teacher"), ("ms_student_fwd", "ms_student_fwd"), ("ms_heads_loss", "ms_heads_loss"),
            ("ms_backward", "ms_backward"), ("ms_update", "ms_update"), ("ms_per_step", "ms_per_step")]
    print("%-12s " % t + " ".join("%8.0f/%-8.0f" % (d[a], p[b]) for a, b in cols))
' | tee -a "$OUT"
echo "# loadavg after: $(cut -d" " -f1-3 /proc/loadavg)" | tee -a "$OUT"
