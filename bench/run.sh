#!/usr/bin/env bash
# bench/run.sh: ViT-S/14 forward at 224x224 in dinoc, PyTorch (Debian's python3-torch; fp32, and
# bf16 under torch.autocast) and, when bench/ort/node_modules/onnxruntime-node exists, ONNX Runtime
# (CPU execution provider), side by side in one command on the same random weights (one folder
# written by `dinoc init`, read by all three; ORT runs its ONNX export by bench_torch.py
# --export-onnx), for each batch and thread count. Prints img/s, the ratios dinoc / peer and each
# process's peak RSS, and writes bench/results.txt. The implementations are interleaved per point, so
# machine-speed drift hits them alike; every point is a fresh process (RSS is per point).
#   BATCHES="1 8" THREADS="1 2" MIN_TIME=2 bash bench/run.sh
# Set up ONNX Runtime once (its postinstall only fetches CUDA binaries; the CPU ones are in the
# package): (cd bench/ort && npm install --ignore-scripts)
# dinoc bf16 (--precision bf16) runs on oneDNN where the CPU has AMX / AVX512-BF16 and is emulated in
# fp32 elsewhere (same numbers, no speed-up); the backend it used is printed under the table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
BATCHES=${BATCHES:-"1 8"}
THREADS=${THREADS:-"1 2"}
MIN_TIME=${MIN_TIME:-2}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
make -s -j2 all >&2
W=build/bench/vits14
[ -f "$W/model.safetensors" ] || ./build/dinoc init --arch vits14 --seed 1 -o "$W" >&2
ORT=0
if [ -d bench/ort/node_modules/onnxruntime-node ] && command -v node >/dev/null; then
    ORT=1
    [ -f "$W/model.onnx" ] || $PY bench/bench_torch.py --weights "$W" --export-onnx "$W/model.onnx" >&2
fi
OUT=bench/results.txt
{
    echo "# ViT-S/14 forward, 224x224; $(date -u +%Y-%m-%dT%H:%MZ); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
         "$(getconf _NPROCESSORS_ONLN) cores; img/s (peak RSS MB); ratios are dinoc / peer"
    printf "%-3s %-3s %15s %15s %15s %15s %15s %9s %9s %9s\n" thr bat "dinoc fp32" "dinoc bf16" "torch fp32" \
        "torch bf16" "ORT fp32" "d/torch" "d16/t16" "d/ORT"
} | tee "$OUT"
for t in $THREADS; do
    for b in $BATCHES; do
        d=$(./build/dinoc bench -m "$W" --batch "$b" --threads "$t" --min-time "$MIN_TIME" --json)
        e=$(./build/dinoc bench -m "$W" --batch "$b" --threads "$t" --min-time "$MIN_TIME" --json --precision bf16 2>/dev/null)
        p=$(OMP_NUM_THREADS=$t $PY bench/bench_torch.py --weights "$W" --batch "$b" --threads "$t" \
              --min-time "$MIN_TIME" --json 2>/dev/null | tail -n 1)
        q=$(OMP_NUM_THREADS=$t $PY bench/bench_torch.py --weights "$W" --batch "$b" --threads "$t" --bf16 \
              --min-time "$MIN_TIME" --json 2>/dev/null | tail -n 1)
        o='{}'
        [ $ORT = 1 ] && o=$(node bench/ort/bench_ort.js "$W/model.onnx" --batch "$b" --threads "$t" --min-time "$MIN_TIME")
        echo "$e" | $PY -c 'import json,sys; print(json.loads(sys.stdin.read())["backend"])' > build/bench/bf16_backend.txt
        $PY - "$d" "$e" "$p" "$q" "$o" "$t" "$b" <<'PYEOF' | tee -a "$OUT"
import json, sys
d, e, p, q, o = (json.loads(a) for a in sys.argv[1:6])
p, q = (x[0] if isinstance(x, list) else x for x in (p, q))
cell = lambda r: "%7.2f (%4.0f)" % (r["img_s"], r["rss_mb"]) if r else "%15s" % "-"
ratio = lambda a, r: "%9.2f" % (a["img_s"] / r["img_s"]) if r else "%9s" % "-"
print("%-3s %-3s %s %s %s %s %s %s %s %s" % (sys.argv[6], sys.argv[7], cell(d), cell(e), cell(p), cell(q), cell(o),
                                             ratio(d, p), ratio(e, q), ratio(d, o)))
PYEOF
    done
done
echo "# dinoc bf16 products: $(cat build/bench/bf16_backend.txt)" | tee -a "$OUT"
