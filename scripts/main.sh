#!/usr/bin/env bash
# scripts/main.sh: the main job (README Quickstart). Installs what is missing, builds, pretrains a
# small ViT with DINO on Fashion-MNIST (Debian's dataset-fashion-mnist) within a time budget, then
# evaluates the teacher with weighted k-NN and a linear probe, draws attention maps, and writes the
# run folder's report:
#   RUN/config.json, model.safetensors, preprocessor_config.json   the teacher backbone (HF ViT)
#   RUN/checkpoint.safetensors, log.jsonl, metrics.json            training state and curves
#   RUN/knn.json, linear.json                                      evaluation (test split)
#   RUN/attn.png, report.md, *.svg                                 the report
# Environment: RUN (default runs/dino, or runs/dino-2, -3, ... if taken: nothing is overwritten),
# BUDGET (seconds of pretraining, default 840 = 14 min), THREADS (0 = all cores), PRECISION (default
# auto: bf16 products where the CPU has bf16 instructions, AMX or AVX512-BF16, else fp32; the run
# records which). Extra arguments go to `dinoc train dino` (the extended recipe: BUDGET=7200 and
# --epochs 60 --local-crops 4, as measured in README).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
dinoc_install_deps
make -j"${JOBS:-2}" build/dinoc >&2
BIN=./build/dinoc
BUDGET=${BUDGET:-840}
THREADS=${THREADS:-0}
PRECISION=${PRECISION:-auto}
if [ -z "${RUN:-}" ]; then
    RUN=runs/dino
    i=2
    while [ -e "$RUN" ]; do RUN=runs/dino-$i; i=$((i + 1)); done
fi
echo "main job: DINO pretraining on Fashion-MNIST into $RUN (budget ${BUDGET}s)" >&2
mkdir -p "$(dirname "$RUN")"
t0=$(date +%s)
$BIN train dino -o "$RUN" --time-budget "$BUDGET" --threads "$THREADS" --precision "$PRECISION" -v "$@" > "$RUN.train.json"
mv "$RUN.train.json" "$RUN/train.json"
t1=$(date +%s)
echo "evaluation: weighted k-NN (k 20, T 0.07) and linear probe on the teacher" >&2
$BIN eval knn -m "$RUN" --data fashion-mnist --threads "$THREADS" --json > "$RUN/knn.json"
$BIN eval linear -m "$RUN" --data fashion-mnist --threads "$THREADS" --json > "$RUN/linear.json"
$BIN attn -m "$RUN" --data fashion-mnist --index 0-7 --threads "$THREADS" -o "$RUN/attn.png"
$BIN report "$RUN" >&2
t2=$(date +%s)
/usr/bin/python3 - "$RUN" "$((t1 - t0))" "$((t2 - t1))" <<'PYEOF'
import json, os, sys
run, tt, te = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
k = json.load(open(os.path.join(run, "knn.json")))
l = json.load(open(os.path.join(run, "linear.json")))
def top1(o):
    for key in ("top1", "test_top1"):
        if isinstance(o.get(key), (int, float)):
            return o[key]
    return float("nan")
print(f"{run}: k-NN top-1 {100 * top1(k):.2f}%  linear top-1 {100 * top1(l):.2f}%  "
      f"(pretraining {tt} s, evaluation {te} s); report: {run}/report.md")
PYEOF
