#!/usr/bin/env bash
# cli_dense_test.sh: end-to-end tests of `dinoc pca` and `dinoc eval segment` on tiny random-weight
# models. PCA: a picture with a planted bright square must come out with the square as the
# foreground (coloured) and the rest black, at the expected size; grids, --no-fg, --sign. Segment:
# a tiny folder in the shapes layout (made here with PIL: squares = class 1, discs = class 2), the
# set `dinoc data shapes` writes, and Fashion-MNIST masks; --json output (exactly one JSON object
# on stdout), human output, determinism, exit codes (0 ok, 1 runtime error, 2 usage error) and
# errors naming their cause. Run by scripts/test.sh with DINOC and PY set.
# Prints one line per check and "N passed, N failed" last; exits non-zero on any failure.
set -u
source "$(dirname "$0")/cli_lib.sh"
DINOC=${DINOC:-./build/dinoc}
PY=${PY:-/usr/bin/python3}

# expect_py NAME CODE: python CODE (with numpy as np, PIL.Image as Image) exits 0
expect_py() {
    if $PY -c "import sys, numpy as np; from PIL import Image
$2" 2>"$TMP/pyerr"; then ok "$1"; else bad "$1"; sed 's/^/    /' "$TMP/pyerr" | tail -5 >&2; fi
}

# ---- pca ------------------------------------------------------------------------------------------
M=$TMP/m
"$DINOC" init --arch vit-tiny-dino --depth 2 --image-size 32 -o "$M" >/dev/null 2>&1
# 32 x 32 black pictures with a bright rectangle; the default processor (resize 256, crop 224)
# maps sq.png's rectangle [8:20, 12:24] to pixels [48:144, 80:176] (patch-aligned for patch 4)
$PY -c "
import numpy as np; from PIL import Image
a = np.zeros((32, 32, 3), np.uint8); a[8:20, 12:24] = 220; Image.fromarray(a).save('$TMP/sq.png')
b = np.zeros((32, 32, 3), np.uint8); b[0:12, 0:8] = 220; Image.fromarray(b).save('$TMP/sq2.png')"

expect_rc "pca on one image" 0 "$DINOC" pca -m "$M" "$TMP/sq.png" -o "$TMP/p1.png"
expect_err "pca reports the foreground count" "576 of 3136 patches foreground"
expect_py "one picture at the input size; the planted square is the foreground, the rest black" "
a = np.asarray(Image.open('$TMP/p1.png').convert('RGB')).astype(int)
assert a.shape == (224, 224, 3), a.shape
lit = a.sum(2) > 0
inside = np.zeros_like(lit); inside[48:144, 80:176] = True
assert not lit[~inside].any(), 'background pixels are coloured'
assert lit[inside].mean() > 0.95, lit[inside].mean()
assert all(a[inside][:, c].max() == 255 for c in range(3)), 'each channel min-max scaled to 255'"
expect_rc "pca on two images at --size 64 with --cols 2" 0 "$DINOC" pca -m "$M" "$TMP/sq.png" "$TMP/sq2.png" --size 64 --cols 2 -o "$TMP/p2.png"
expect_err "one PCA over both images: 36 + 24 planted patches" "60 of 512 patches foreground"
expect_py "a grid of two cells with 4-px white gaps" "
a = np.asarray(Image.open('$TMP/p2.png').convert('RGB')).astype(int)
assert a.shape == (72, 140, 3), a.shape
assert (a[:4] == 255).all() and (a[:, 68:72] == 255).all(), 'gaps are white'
c1, c2 = a[4:68, 4:68].sum(2) > 0, a[4:68, 72:136].sum(2) > 0
assert c1[16:40, 24:48].mean() > 0.9 and c1.sum() <= 24 * 24, c1.sum()
assert c2[0:24, 0:16].mean() > 0.9 and c2.sum() <= 24 * 16, c2.sum()"
expect_rc "pca --no-fg" 0 "$DINOC" pca -m "$M" "$TMP/sq.png" --size 64 --no-fg -o "$TMP/p3.png"
expect_py "--no-fg colours every patch" "
a = np.asarray(Image.open('$TMP/p3.png').convert('RGB')).astype(int)
assert (a.sum(2) > 0).mean() > 0.95"
expect_rc "pca --sign neg" 0 "$DINOC" pca -m "$M" "$TMP/sq.png" --size 64 --sign neg -o "$TMP/p4.png"
expect_py "--sign neg makes the larger side (outside the square) the foreground" "
a = np.asarray(Image.open('$TMP/p4.png').convert('RGB')).astype(int); lit = a.sum(2) > 0
assert not lit[16:40, 24:48].any() and lit.mean() > 0.8"
expect_rc "pca without a model is a usage error" 2 "$DINOC" pca "$TMP/sq.png"
expect_rc "pca --sign bogus is a usage error" 2 "$DINOC" pca -m "$M" --sign up "$TMP/sq.png"
expect_rc "pca on a missing image fails" 1 "$DINOC" pca -m "$M" "$TMP/nope.png" -o "$TMP/x.png"
expect_err "the error names the file" "nope.png"
[ ! -e "$TMP/x.png" ] && ok "no picture written on failure" || bad "no picture written on failure"
mkdir -p "$TMP/empty"
expect_rc "pca on an empty folder fails" 1 "$DINOC" pca -m "$M" "$TMP/empty"
expect_err "and says so" "no images found"

# ---- eval segment -----------------------------------------------------------------------------------
# the shapes layout by hand: 32 x 32, a grey square (class 1) or a disc (class 2) on black
S=$TMP/seg
$PY -c "
import os, numpy as np; from PIL import Image
rng = np.random.default_rng(0)
open('$S/classes.txt', 'w').write('background\nsquare\ndisc\n') if os.makedirs('$S', exist_ok=True) is None else 0
for split, n in (('train', 30), ('test', 10)):
    for d in ('images', 'masks'): os.makedirs('$S/%s/%s' % (split, d), exist_ok=True)
    for i in range(n):
        img = np.zeros((32, 32, 3), np.uint8); m = np.zeros((32, 32), np.uint8)
        y, x, r = rng.integers(8, 24), rng.integers(8, 24), rng.integers(5, 8)
        yy, xx = np.mgrid[:32, :32]
        inside = (abs(yy - y) < r) & (abs(xx - x) < r) if i % 2 == 0 else (yy - y) ** 2 + (xx - x) ** 2 < r * r
        m[inside] = 1 + i % 2; img[inside] = (200, 180, 40) if i % 2 == 0 else (60, 120, 220)
        Image.fromarray(img).save('$S/%s/images/%06d.png' % (split, i))
        Image.fromarray(m).save('$S/%s/masks/%06d.png' % (split, i))"

expect_rc "eval segment --json on a shapes-layout folder" 0 "$DINOC" eval segment -m "$M" --data "shapes:$S" --json -q
expect_json "JSON: mIoU, pixel accuracy, IoU per class, sizes" \
    "0 <= j['miou'] <= 1 and 0 <= j['pixel_acc'] <= 1 and list(j['iou']) == ['background', 'square', 'disc'] and j['classes'] == 3 and j['n_train'] == 30 and j['n_test'] == 10 and j['grid_h'] == 8 and j['size'] == 32 and j['dim'] == 192 and len(j['val']) == 5 and j['best_lr'] in [v['lr'] for v in j['val']]"
expect_json "the probe separates the planted objects on a random model (mIoU > 0.5)" "j['miou'] > 0.5 and j['pixel_acc'] > 0.8"
[ "$(wc -l <"$TMP/out")" = 1 ] && ok "--json prints exactly one line" || bad "--json prints exactly one line"
[ ! -s "$TMP/err" ] && ok "--quiet prints nothing on stderr" || bad "--quiet prints nothing on stderr"
cp "$TMP/out" "$TMP/s1.json"
expect_rc "eval segment again" 0 "$DINOC" eval segment -m "$M" --data "shapes:$S" --json -q
cp "$TMP/out" "$TMP/s2.json"
expect_rc "same numbers on a second run" 0 $PY -c "
import json, sys
a, b = json.load(open('$TMP/s1.json')), json.load(open('$TMP/s2.json'))
sys.exit(0 if (a['miou'], a['iou'], a['val']) == (b['miou'], b['iou'], b['val']) else 1)"
expect_rc "eval segment human output, 2 blocks, --lrs, --size" 0 "$DINOC" eval segment -m "$M" --data "shapes:$S" \
    --n-last-blocks 2 --lrs 0.1,1 --epochs 2 --size 16 --batch 64
grep -q "^test: mIoU" "$TMP/out" && grep -q "<- chosen" "$TMP/out" && grep -q "features 384 wide" "$TMP/out" && \
    grep -q "4 x 4 patches" "$TMP/out" && ok "human output: chosen lr, IoU per class, mIoU" || bad "human output: chosen lr, IoU per class, mIoU"
expect_err "progress goes to stderr" "train features 30/30"

if "$DINOC" data shapes --help >/dev/null 2>&1; then
    "$DINOC" data shapes -o "$TMP/sh" -n 50 --size 32 -q -t 1 >/dev/null 2>&1
    expect_rc "eval segment on a set from dinoc data shapes" 0 "$DINOC" eval segment -m "$M" --data "shapes:$TMP/sh" --json -q --epochs 2
    expect_json "shapes classes come from classes.txt" "j['classes'] == 7 and 'circle' in j['iou'] and j['n_train'] + j['n_test'] == 50"
fi
expect_rc "eval segment on Fashion-MNIST masks" 0 "$DINOC" eval segment -m "$M" --data fashion-mnist --limit-train 100 --limit-test 20 --epochs 1 --json -q
expect_json "11 classes: background + the 10 labels" "j['classes'] == 11 and list(j['iou'])[0] == 'background' and j['n_train'] == 100 and j['n_test'] == 20"

# errors
expect_rc "unknown --data fails" 1 "$DINOC" eval segment -m "$M" --data bogus -q
expect_err "and names the accepted forms" "shapes:DIR or fashion-mnist"
expect_rc "a missing shapes folder fails" 1 "$DINOC" eval segment -m "$M" --data "shapes:$TMP/none" -q
expect_err "and names classes.txt" "classes.txt"
expect_rc "bad --lrs is a usage error" 2 "$DINOC" eval segment -m "$M" --data "shapes:$S" --lrs 0.1,-1
expect_rc "a positional argument is a usage error" 2 "$DINOC" eval segment -m "$M" extra
expect_rc "--size not a multiple of the patch fails" 1 "$DINOC" eval segment -m "$M" --data "shapes:$S" --size 30 -q
expect_err "and names the patch" "multiple of the patch 4"
$PY -c "
import numpy as np; from PIL import Image
m = np.zeros((32, 32), np.uint8); m[3, 4] = 9; Image.fromarray(m).save('$S/test/masks/000003.png')"
expect_rc "a mask value beyond classes.txt fails" 1 "$DINOC" eval segment -m "$M" --data "shapes:$S" -q
expect_err "and names the mask file" "test/masks/000003.png"
$PY -c "
import numpy as np; from PIL import Image
Image.fromarray(np.zeros((16, 32), np.uint8)).save('$S/test/masks/000003.png')"
expect_rc "a mask of another size fails" 1 "$DINOC" eval segment -m "$M" --data "shapes:$S" -q
expect_err "and gives both sizes" "is 32 x 16, its image"
rm "$S/test/masks/000003.png"
expect_rc "a missing mask fails" 1 "$DINOC" eval segment -m "$M" --data "shapes:$S" -q
expect_err "and names it" "000003.png"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
