#!/usr/bin/env bash
# bench/run_train.sh: supervised training-step throughput in dinoc (`dinoc bench --train`) and in
# PyTorch (bench/bench_train_torch.py, Debian's python3-torch), side by side, for the same step:
# ViT forward, CLS -> linear head -> cross-entropy, backward, global-norm clip 1.0, AdamW, on random
# data held in memory. Model: dinoc's Fashion-MNIST classifier (D 128, 6 blocks, 4 heads, patch 7,
# 28x28x1, 10 classes). Prints img/s for each and the ratio dinoc / PyTorch for batch 64, 128 and
# threads 1, 2, and writes bench/results_train.txt. The two implementations alternate per point so
# machine-speed drift hits both alike.
#   BATCHES="64 128" THREADS="1 2" MIN_TIME=3 BUILD=build bash bench/run_train.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
BATCHES=${BATCHES:-"64 128"}
THREADS=${THREADS:-"1 2"}
MIN_TIME=${MIN_TIME:-3}
BUILD=${BUILD:-build}
make -s -j2 BUILD="$BUILD" "$BUILD/dinoc" >&2
OUT=bench/results_train.txt
{
    echo "# supervised training step (fwd + head + CE + bwd + clip + AdamW), ViT D128 L6 H4 P7 28x28x1, 10 classes, fp32;" \
         "$(date -u +%Y-%m-%dT%H:%MZ); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    printf "%-7s %-7s %12s %12s %8s\n" threads batch "dinoc img/s" "torch img/s" ratio
} | tee "$OUT"
for t in $THREADS; do
    for b in $BATCHES; do
        d=$("./$BUILD/dinoc" bench --train --batch "$b" --threads "$t" --min-time "$MIN_TIME" --json)
        p=$(OMP_NUM_THREADS=$t $PY bench/bench_train_torch.py --batch "$b" --threads "$t" \
              --min-time "$MIN_TIME" --json 2>/dev/null | tail -n 1)
        $PY - "$d" "$p" "$t" "$b" <<'PYEOF' | tee -a "$OUT"
import json, sys
d = json.loads(sys.argv[1]); p = json.loads(sys.argv[2])
p = p[0] if isinstance(p, list) else p
print(f"{sys.argv[3]:<7} {sys.argv[4]:<7} {d['img_s']:12.2f} {p['img_s']:12.2f} {d['img_s'] / p['img_s']:8.2f}")
PYEOF
    done
done
