#!/usr/bin/env bash
# bench/run_mpi.sh: data-parallel scaling of DINO training (build/dinoc-mpi, `make mpi`) on this
# machine: the same global batch on 1 rank and on 2 ranks, 1 compute thread per rank, for the
# main job's model (ViT D96 L4 P7 on 28-px Fashion-MNIST, 2x28 + 4x14 crops, head 512/128/1024, batch
# 256). Throughput is the median of the per-step img/s (source images of the global batch per second)
# after WARM warm-up steps, read from rank 0's log.jsonl; efficiency = img/s(2) / (2 x img/s(1)).
# The two alternate ROUNDS times so machine-speed drift hits both alike. Then the communication
# volume per step for ViT-S/14 and ViT-B/14 with DINOv2's default head (65536 prototypes, hidden
# 2048, bottleneck 256): one allreduce of the student backbone + head gradients (fp32) plus 2K+2
# doubles for the loss and center. Writes bench/results_mpi.txt.
#   STEPS=40 WARM=5 ROUNDS=2 bash bench/run_mpi.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
STEPS=${STEPS:-40}
WARM=${WARM:-5}
ROUNDS=${ROUNDS:-2}
BUILD=${BUILD:-build}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} OMP_NUM_THREADS=1
make -s -j2 BUILD="$BUILD" "$BUILD/dinoc" mpi >&2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
OUT=bench/results_mpi.txt
MPIRUN=(mpirun --allow-run-as-root --oversubscribe --mca btl self,vader --bind-to none -np)
median_img_s() {
    $PY -c "import json,sys,statistics as s
v=[json.loads(l)['img_s'] for l in open(sys.argv[1]) if '\"img_s\"' in l][int(sys.argv[2]):]
print('%.1f' % s.median(v))" "$1" "$WARM"
}
{
    echo "# DINO data-parallel scaling, main-job model, global batch 256, 1 thread per rank ($(date -u +%F), $(getconf _NPROCESSORS_ONLN) cores)"
    r1=() r2=()
    for round in $(seq 1 "$ROUNDS"); do
        for np in 1 2; do
            rm -rf "$TMP/run"
            "${MPIRUN[@]}" "$np" "$BUILD/dinoc-mpi" train dino -o "$TMP/run" --max-steps "$STEPS" --knn-every-epoch 0 \
                --ckpt-every 0 --threads 1 --workers 1 >/dev/null 2>"$TMP/err" || { tail -5 "$TMP/err" >&2; exit 1; }
            v=$(median_img_s "$TMP/run/log.jsonl")
            echo "round $round: $np rank(s): $v img/s"
            if [ "$np" = 1 ]; then r1+=("$v"); else r2+=("$v"); fi
        done
    done
    $PY -c "import sys,statistics as s
a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]
m1,m2=s.median(a),s.median(b)
print('median: 1 rank %.1f img/s, 2 ranks %.1f img/s: speed-up %.2fx, efficiency %.0f%%' % (m1,m2,m2/m1,50*m2/m1))" \
        "${r1[*]}" "${r2[*]}"
    echo "# bytes per step (fp32 gradients of student backbone + DINO head, one allreduce; ring: each rank sends 2(N-1)/N of it)"
    for arch in vits14 vitb14; do
        "$BUILD/dinoc" init --arch $arch -o "$TMP/$arch" 2>/dev/null
        $PY - "$TMP/$arch" $arch <<'PYEOF'
import json, os, sys
d, arch = sys.argv[1], sys.argv[2]
c = json.load(open(os.path.join(d, "config.json")))
D = c["hidden_size"]
n = 0
sys.path.insert(0, "tests/py")
import st
t, _ = st.load(os.path.join(d, "model.safetensors"))
n = sum(v.size for v in t.values())
H, BN, K = 2048, 256, 65536
head = D * H + H + H * H + H + H * BN + BN + K * BN + K
tot = n + head
print("%s: backbone %.1fM + head %.1fM params = %.0f MB per allreduce (+ %d bytes of loss/center sums)"
      % (arch, n / 1e6, head / 1e6, tot * 4 / 1e6, (2 * K + 2) * 8))
PYEOF
    done
} | tee "$OUT"
