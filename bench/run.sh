#!/usr/bin/env bash
# bench/run.sh: ViT-S/14 forward at 224x224 in dinoc and in PyTorch (Debian's python3-torch), side by
# side in one command, on the same random weights (one folder written by `dinoc init` and read by
# both), for batch 1, 8, 32 and threads 1, 2. Prints img/s for each and the ratio dinoc / PyTorch,
# and writes bench/results.txt. Interleaves the two implementations per point so machine-speed drift
# hits both alike.
#   BATCHES="1 8 32" THREADS="1 2" MIN_TIME=2 bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
BATCHES=${BATCHES:-"1 8 32"}
THREADS=${THREADS:-"1 2"}
MIN_TIME=${MIN_TIME:-2}
make -s -j2 all >&2
W=build/bench/vits14
[ -f "$W/model.safetensors" ] || ./build/dinoc init --arch vits14 --seed 1 -o "$W" >&2
OUT=bench/results.txt
{
    echo "# ViT-S/14 forward, 224x224, fp32; $(date -u +%Y-%m-%dT%H:%MZ); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    printf "%-7s %-7s %12s %12s %8s\n" threads batch "dinoc img/s" "torch img/s" ratio
} | tee "$OUT"
for t in $THREADS; do
    for b in $BATCHES; do
        d=$(./build/dinoc bench -m "$W" --batch "$b" --threads "$t" --min-time "$MIN_TIME" --json)
        p=$(OMP_NUM_THREADS=$t $PY bench/bench_torch.py --weights "$W" --batch "$b" --threads "$t" \
              --min-time "$MIN_TIME" --json 2>/dev/null | tail -n 1)
        $PY - "$d" "$p" "$t" "$b" <<'PYEOF' | tee -a "$OUT"
import json, sys
d = json.loads(sys.argv[1]); p = json.loads(sys.argv[2])
p = p[0] if isinstance(p, list) else p
print(f"{sys.argv[3]:<7} {sys.argv[4]:<7} {d['img_s']:12.2f} {p['img_s']:12.2f} {d['img_s'] / p['img_s']:8.2f}")
PYEOF
    done
done
