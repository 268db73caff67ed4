#!/usr/bin/env bash
# cli_eval_test.sh: end-to-end tests of `dinoc eval knn` and `dinoc eval linear` on tiny random
# models: a 1-channel 28-px ViT on Fashion-MNIST (limited to a few hundred images) and a 3-channel
# 224-px DINO ViT on an image folder with train/ and test/ splits. Checks --json output (exactly one
# JSON object on stdout), human output, exit codes (0 ok, 1 runtime error, 2 usage error) and that
# errors name their cause. Also a random 1-channel resnet_small folder (written by torch through
# tests/py/gen_resnet.py's ResNet): eval knn / linear / embed take it like a ViT; and the 1-channel
# `embed` regression (a 3-plane preprocess overran the 1-plane batch: "double free or corruption").
# Run by scripts/test.sh with DINOC and PY set.
# Prints one line per check and "N passed, N failed" last; exits non-zero on any failure.
set -u
source "$(dirname "$0")/cli_lib.sh"
DINOC=${DINOC:-./build/dinoc}
PY=${PY:-/usr/bin/python3}


# a 1-channel 28-px model with the Fashion-MNIST processor (no resize, no crop, FMNIST mean/std)
FM=$TMP/fm
"$DINOC" init --arch vit-tiny-dino --depth 2 --image-size 28 -o "$FM" 2>/dev/null
cat >"$FM/preprocessor_config.json" <<'EOF'
{"do_convert_rgb": false, "do_resize": false, "do_center_crop": false, "do_rescale": true,
 "rescale_factor": 0.00392156862745098, "do_normalize": true, "image_mean": [0.286, 0.286, 0.286],
 "image_std": [0.353, 0.353, 0.353], "image_processor_type": "ViTImageProcessor"}
EOF
LIM=(--limit-train 300 --limit-test 100)

expect_rc "eval knn --json" 0 "$DINOC" eval knn -m "$FM" "${LIM[@]}" --json
expect_json "knn JSON has top1/top5/k/sizes" \
    "0 <= j['top1'] <= j['top5'] <= 1 and j['k'] == 20 and j['n_train'] == 300 and j['n_test'] == 100 and j['dim'] == 192 and j['T'] == 0.07"
expect_err "progress goes to stderr" "train features 300/300"
expect_rc "eval knn with several k" 0 "$DINOC" eval knn -m "$FM" "${LIM[@]}" -k 1,5,20 -T 0.1 --json -q
expect_json "one result per k" "[r['k'] for r in j['results']] == [1, 5, 20] and j['results'][0]['top1'] == j['results'][0]['top5']"
[ ! -s "$TMP/err" ] && ok "--quiet prints nothing on stderr" || bad "--quiet prints nothing on stderr"
expect_rc "eval knn human output" 0 "$DINOC" eval knn -m "$FM" "${LIM[@]}" -k 10 -q
grep -q "^k   10: top-1" "$TMP/out" && ok "human output lists top-1 per k" || bad "human output lists top-1 per k"
expect_rc "eval knn on CLS x2 + avgpool" 0 "$DINOC" eval knn -m "$FM" "${LIM[@]}" --n-last-blocks 2 --avgpool --json -q
expect_json "features are 3 x 192 wide" "j['dim'] == 576"
expect_rc "eval knn at one thread, batch 64" 0 "$DINOC" eval knn -m "$FM" "${LIM[@]}" -t 1 -b 64 --json -q
cp "$TMP/out" "$TMP/knn1.json"
expect_rc "eval knn at two threads" 0 "$DINOC" eval knn -m "$FM" "${LIM[@]}" -t 2 --json -q
cp "$TMP/out" "$TMP/knn2.json"
expect_rc "same accuracy for any threads and batch" 0 $PY -c "
import json, sys
a, b = json.load(open('$TMP/knn1.json')), json.load(open('$TMP/knn2.json'))
sys.exit(0 if (a['top1'], a['top5']) == (b['top1'], b['top5']) else 1)"

# --val: rows held out of the training split are scored, the test split is not used
expect_rc "eval knn --val 50" 0 "$DINOC" eval knn -m "$FM" --limit-train 300 --val 50 --json -q
expect_json "val split: 250 bank rows, 50 held out" "j['split'] == 'val' and j['n_train'] == 250 and j['n_test'] == 50"
expect_rc "eval linear --val 50" 0 "$DINOC" eval linear -m "$FM" --limit-train 300 --val 50 --n-last-blocks 2 --epochs 1 --json -q
expect_json "linear on the held-out rows" "j['split'] == 'val' and j['n_train'] == 250 and j['n_test'] == 50"
expect_rc "--val leaving fewer than 2 train rows" 1 "$DINOC" eval knn -m "$FM" --limit-train 30 --val 29 -k 1 -q
expect_err "--val names the rows" "--val 29 must leave at least 2"
expect_rc "--val negative" 2 "$DINOC" eval knn -m "$FM" --val -1 -q

expect_rc "eval linear --json" 0 "$DINOC" eval linear -m "$FM" "${LIM[@]}" --n-last-blocks 2 --epochs 2 --json -q
expect_json "linear JSON: test, chosen lr, val per lr" \
    "0 <= j['top1'] <= j['top5'] <= 1 and j['best_lr'] in [v['lr'] for v in j['val']] and len(j['val']) == 9 and j['dim'] == 384 and j['epochs'] == 2 and j['n_train'] == 300"
cp "$TMP/out" "$TMP/lin1.json"
expect_rc "eval linear again with the same seed" 0 "$DINOC" eval linear -m "$FM" "${LIM[@]}" --n-last-blocks 2 --epochs 2 --json -q
cp "$TMP/out" "$TMP/lin2.json"
expect_rc "linear probe is deterministic" 0 $PY -c "
import json, sys
a, b = json.load(open('$TMP/lin1.json')), json.load(open('$TMP/lin2.json'))
sys.exit(0 if (a['top1'], a['val'], a['best_lr']) == (b['top1'], b['val'], b['best_lr']) else 1)"
expect_rc "eval linear with --lrs, --avgpool, human output" 0 "$DINOC" eval linear -m "$FM" "${LIM[@]}" \
    --n-last-blocks 1 --avgpool --lrs 0.01,0.1 --epochs 1 --batch 32 --val-fraction 0.2 --seed 3 -q
grep -q "<- chosen" "$TMP/out" && grep -q "^test with lr" "$TMP/out" && ok "human output marks the chosen lr" \
    || bad "human output marks the chosen lr"

# runtime errors (exit 1)
expect_rc "n-last-blocks above the depth fails" 1 "$DINOC" eval linear -m "$FM" "${LIM[@]}" -q
expect_err "error names n_last_blocks" "n_last_blocks 4"
expect_rc "k above the train rows fails" 1 "$DINOC" eval knn -m "$FM" "${LIM[@]}" -k 500 -q
expect_err "error names k" "k = 500"
expect_rc "missing model fails" 1 "$DINOC" eval knn -m "$TMP/nomodel" -q
expect_err "error names the model path" "$TMP/nomodel"
expect_rc "missing IDX folder fails" 1 "$DINOC" eval knn -m "$FM" --data-dir "$TMP/noidx" -q
expect_err "error names the IDX folder" "$TMP/noidx"

# usage errors (exit 2)
expect_rc "eval without a command" 2 "$DINOC" eval
expect_rc "eval --help" 0 "$DINOC" eval --help
expect_rc "eval knn --help" 0 "$DINOC" eval knn --help
grep -q "default: 0.07" "$TMP/out" && ok "knn help shows defaults" || bad "knn help shows defaults"
expect_rc "eval linear --help" 0 "$DINOC" eval linear --help
expect_rc "knn without --model" 2 "$DINOC" eval knn
expect_rc "knn with a positional argument" 2 "$DINOC" eval knn -m "$FM" extra
expect_rc "knn bad k list" 2 "$DINOC" eval knn -m "$FM" -k 10,x
expect_rc "knn k = 0" 2 "$DINOC" eval knn -m "$FM" -k 0
expect_rc "knn temperature 0" 2 "$DINOC" eval knn -m "$FM" -T 0
expect_rc "knn unknown option" 2 "$DINOC" eval knn -m "$FM" --frob
expect_rc "knn batch 0" 2 "$DINOC" eval knn -m "$FM" -b 0
expect_rc "linear bad lrs" 2 "$DINOC" eval linear -m "$FM" --lrs 0.1,-1
expect_rc "linear val-fraction 1.5" 2 "$DINOC" eval linear -m "$FM" --val-fraction 1.5
expect_rc "linear epochs 0" 2 "$DINOC" eval linear -m "$FM" --epochs 0

# an image folder (train/ and test/ class subfolders, 40 x 30 colour images) and a 3-channel
# 224-px model whose processor resizes and crops
$PY - "$TMP/imgs" <<'PYEOF'
import os, random, sys
random.seed(0)
for split, n in (("train", 8), ("test", 3)):
    for ci, cls in enumerate(("cat", "dog")):
        d = os.path.join(sys.argv[1], split, cls)
        os.makedirs(d)
        for i in range(n):
            w, h = 40, 30
            px = bytes(min(255, max(0, (120 if ci else 40) + random.randint(-30, 30) + (c * 50 if ci else 0)))
                       for _ in range(w * h) for c in range(3))
            with open(os.path.join(d, f"{i}.ppm"), "wb") as f:
                f.write(b"P6 %d %d 255\n" % (w, h) + px)
PYEOF
RGB=$TMP/rgb
"$DINOC" init --arch dino-vits16 --depth 1 -o "$RGB" 2>/dev/null
expect_rc "eval knn on an image folder" 0 "$DINOC" eval knn -m "$RGB" --data "$TMP/imgs" -k 3 --json -q
expect_json "folder: 16 train, 6 test, 2 classes" "j['n_train'] == 16 and j['n_test'] == 6 and j['classes'] == 2 and j['dim'] == 384"
expect_rc "eval linear on an image folder" 0 "$DINOC" eval linear -m "$RGB" --data "$TMP/imgs" --n-last-blocks 1 --epochs 3 --json -q
expect_json "folder linear probe JSON" "j['n_train'] == 16 and 0 <= j['top1'] <= 1"
mkdir -p "$TMP/onlytrain/train/a" "$TMP/onlytrain/train/b"
cp "$TMP/imgs/train/cat/0.ppm" "$TMP/onlytrain/train/a/" && cp "$TMP/imgs/train/dog/0.ppm" "$TMP/onlytrain/train/b/"
expect_rc "a folder without test/ fails" 1 "$DINOC" eval knn -m "$RGB" --data "$TMP/onlytrain" -k 1 -q
expect_err "error asks for train/ and test/" "train/ and test/"

# ---- a ResNet folder (config.json model_type "resnet") and 1-channel embed ----------------------
HERE=$(cd "$(dirname "$0")" && pwd)
RN=$TMP/rn
$PY - "$RN" "$HERE/py" <<'PYEOF'
import json, os, sys
sys.path.insert(0, sys.argv[2])
import torch, gen_resnet, st
torch.manual_seed(0)
m = gen_resnet.ResNet(False, [2, 2, 2], [16, 32, 64], 16, 1, 0, True)
gen_resnet.randomize(m)
os.makedirs(sys.argv[1])
st.save(os.path.join(sys.argv[1], "model.safetensors"), {k: v.clone() for k, v in m.state_dict().items()}, {"format": "pt"})
json.dump({"model_type": "resnet", "arch": "resnet_small", "in_channels": 1, "num_classes": 0},
          open(os.path.join(sys.argv[1], "config.json"), "w"))
PYEOF
cp "$FM/preprocessor_config.json" "$RN/"
expect_rc "eval knn on a ResNet folder" 0 "$DINOC" eval knn -m "$RN" "${LIM[@]}" --json -q
expect_json "ResNet knn: pooled 64-wide features" "j['dim'] == 64 and j['n_train'] == 300 and 0.1 < j['top1'] <= 1"
expect_rc "eval linear on a ResNet folder" 0 "$DINOC" eval linear -m "$RN" "${LIM[@]}" --epochs 2 --json -q
expect_json "ResNet linear: 64 wide whatever --n-last-blocks" "j['dim'] == 64 and 0 <= j['top1'] <= 1"
$PY - "$TMP/png" <<'PYEOF'
import os, sys
from PIL import Image
os.makedirs(sys.argv[1])
for i in range(5):
    Image.new("L", (28, 28), 40 * i).save(os.path.join(sys.argv[1], "%d.png" % i))
PYEOF
expect_rc "embed a ResNet" 0 "$DINOC" embed -q -m "$RN" -b 2 -o "$TMP/rn.npy" "$TMP/png"
expect_rc "ResNet embeddings are [5, 64]" 0 $PY -c "import numpy as np, sys; sys.exit(0 if np.load('$TMP/rn.npy').shape == (5, 64) else 1)"
expect_rc "embed a ResNet with --pool patch is a usage error" 2 "$DINOC" embed -q -m "$RN" -p patch -o "$TMP/rn.npy" "$TMP/png"
expect_err "the error says why" "is a ResNet"
for b in 1 5; do
    expect_rc "1-channel ViT embed -p patch -b $b (was: double free)" 0 "$DINOC" embed -q -m "$FM" -p patch -b $b -o "$TMP/p.npy" "$TMP/png"
done
expect_rc "patch embeddings are [5, 49, 192]" 0 $PY -c "import numpy as np, sys; sys.exit(0 if np.load('$TMP/p.npy').shape == (5, 49, 192) else 1)"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
