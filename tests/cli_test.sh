#!/usr/bin/env bash
# cli_test.sh: end-to-end tests of the dinoc command line: exit codes (0 ok, 1 runtime error, 2 usage
# error), `info`, `embed` (against the PyTorch reference on scikit-image photos preprocessed by PIL),
# bad inputs, and `init`/`bench` smoke runs. Run by scripts/test.sh with DINOC, FIX and PY set.
# Prints one line per check and "N passed, N failed" last.
set -u
source "$(dirname "$0")/cli_lib.sh"
DINOC=${DINOC:-./build/dinoc}
FIX=${FIX:-build/fixtures}
PY=${PY:-/usr/bin/python3}
SK=$($PY -c 'import skimage, os; print(os.path.join(os.path.dirname(skimage.__file__), "data"))')


M=$FIX/vit/dinov2_s
expect_rc "no arguments is a usage error" 2 "$DINOC"
expect_rc "unknown command is a usage error" 2 "$DINOC" frobnicate
expect_rc "unknown option is a usage error" 2 "$DINOC" embed -m "$M" --frob x.png
expect_rc "embed --help" 0 "$DINOC" embed --help
grep -q "default: cls" "$TMP/out" && ok "help shows defaults" || bad "help shows defaults"
expect_rc "bad --pool value is a usage error" 2 "$DINOC" embed -m "$M" --pool max "$SK/astronaut.png"

expect_rc "info on a HF folder" 0 "$DINOC" info "$M"
grep -q "encoder.layer.11.mlp.fc2.weight" "$TMP/out" && grep -q "^arch *dinov2" "$TMP/out" \
    && ok "info lists config and tensors" || bad "info lists config and tensors"
expect_rc "info on a missing folder fails" 1 "$DINOC" info "$TMP/nope"
expect_err "info names the missing path" "$TMP/nope"

# embed: CLS and all tokens against PyTorch on PIL-preprocessed photos (tests/py/gen_vit.py e2e)
expect_rc "embed two photos" 0 "$DINOC" embed -q -m "$M" -o "$TMP/e.npy" --pool cls "$SK/astronaut.png" "$SK/chelsea.png"
expect_rc "embed patch tokens" 0 "$DINOC" embed -q -m "$M" -o "$TMP/p.npy" --pool patch --batch 1 "$SK/astronaut.png" "$SK/chelsea.png"
expect_rc "embed matches PyTorch end to end (<= 1e-4)" 0 $PY - "$FIX/vit/e2e.safetensors" "$TMP/e.npy" "$TMP/p.npy" <<'PYEOF'
import sys, numpy as np
sys.path.insert(0, "tests/py")
import st
ref, meta = st.load(sys.argv[1])
cls = np.load(sys.argv[2]); patch = np.load(sys.argv[3])
want = ref["last_hidden_state"]
e1 = np.abs(cls - want[:, 0]).max(); e2 = np.abs(patch - want[:, 1:]).max()
print(f"    e2e CLS max abs {e1:.3g}, patch tokens max abs {e2:.3g}", file=sys.stderr)
sys.exit(0 if cls.shape == want[:, 0].shape and patch.shape == want[:, 1:].shape and e1 <= 1e-4 and e2 <= 1e-4 else 1)
PYEOF
[ "$(cat "$TMP/e.txt" 2>/dev/null)" = "$(printf '%s\n%s' "$SK/astronaut.png" "$SK/chelsea.png")" ] \
    && ok "file list beside the .npy" || bad "file list beside the .npy"

mkdir -p "$TMP/imgs/b" && cp "$SK/coffee.png" "$TMP/imgs/b/1.png" && cp "$SK/camera.png" "$TMP/imgs/a.png" \
    && cp "$SK/chelsea.png" "$TMP/imgs/c.png" && echo "not an image" > "$TMP/imgs/notes.txt"
expect_rc "embed a directory (grey image included)" 0 "$DINOC" embed -q -m "$M" -o "$TMP/d.npy" --pool cls+mean "$TMP/imgs"
expect_rc "directory rows sorted, cls+mean is 2D wide" 0 $PY -c "
import numpy as np, sys
a = np.load('$TMP/d.npy'); names = open('$TMP/d.txt').read().split()
sys.exit(0 if a.shape == (3, 768) and [n.split('imgs/')[1] for n in names] == ['a.png', 'b/1.png', 'c.png'] and np.isfinite(a).all() else 1)"
expect_rc "embed register tokens" 0 "$DINOC" embed -q -m "$FIX/vit/dinov2_s_reg" -o "$TMP/r.npy" --pool reg "$SK/astronaut.png"
expect_rc "register tokens are [N, 4, D]" 0 $PY -c "
import numpy as np, sys; a = np.load('$TMP/r.npy'); sys.exit(0 if a.shape == (1, 4, 384) and np.isfinite(a).all() else 1)"
expect_rc "--pool reg without registers fails" 1 "$DINOC" embed -q -m "$M" -o "$TMP/r2.npy" --pool reg "$SK/astronaut.png"
expect_err "error says there are no registers" "no register tokens"
expect_rc "embed at --size 518 with an intermediate layer" 0 "$DINOC" embed -q -m "$M" -o "$TMP/s.npy" --size 518 --layer 5 --pool mean "$SK/astronaut.png"

echo "garbage" > "$TMP/broken.jpg"
echo "keep" > "$TMP/keep.npy"
expect_rc "corrupt image fails" 1 "$DINOC" embed -q -m "$M" -o "$TMP/keep.npy" "$SK/astronaut.png" "$TMP/broken.jpg"
expect_err "error names the corrupt file" "broken.jpg"
[ "$(cat "$TMP/keep.npy")" = "keep" ] && ok "existing output untouched on failure" || bad "existing output untouched on failure"
: > "$TMP/empty.png"
expect_rc "zero-byte image fails" 1 "$DINOC" embed -q -m "$M" -o "$TMP/z.npy" "$TMP/empty.png"
expect_rc "unwritable output fails" 1 "$DINOC" embed -q -m "$M" -o /nonexistent-dir/e.npy "$SK/astronaut.png"
expect_err "error names the output path" "/nonexistent-dir/e.npy"
expect_rc "missing model fails" 1 "$DINOC" embed -m "$TMP/nomodel" "$SK/astronaut.png"

expect_rc "init a random model" 0 "$DINOC" init --arch vits14-reg --depth 2 -o "$TMP/rnd"
expect_rc "unknown preset is a usage error" 2 "$DINOC" init --arch vitx -o "$TMP/x"
expect_rc "bench smoke run" 0 "$DINOC" bench -m "$TMP/rnd" --batch 2 --iters 1 --json
grep -q '"img_s"' "$TMP/out" && ok "bench prints JSON" || bad "bench prints JSON"
expect_rc "training-step bench smoke run" 0 "$DINOC" bench --train --batch 4 --iters 1 --json
expect_rc "bf16 bench smoke run" 0 "$DINOC" bench -m "$TMP/rnd" --batch 2 --iters 1 --json --precision bf16
grep -q '"precision":"bf16","backend":"' "$TMP/out" && ok "bf16 bench names its backend" || bad "bf16 bench names its backend"
expect_rc "unknown precision is a usage error" 2 "$DINOC" bench --precision fp16
expect_rc "bf16 training bench refused" 2 "$DINOC" bench --train --precision bf16
expect_rc "bf16 DINO-step bench smoke run" 0 "$DINOC" bench dino --depth 1 --batch 2 --iters 1 --precision bf16 --json
grep -q '"precision":"bf16","backend":"' "$TMP/out" && ok "bf16 DINO-step bench names its backend" || bad "bf16 DINO-step bench names its backend"
expect_rc "train dino: unknown precision" 1 "$DINOC" train dino -o "$TMP/dino16" --precision fp16 --max-steps 1
expect_err "the error names the precision" "precision 'fp16'"
# embed in bf16: rows close to fp32's (cosine > 0.999), not equal to them
expect_rc "embed --precision bf16" 0 "$DINOC" embed -q -m "$TMP/rnd" --precision bf16 -o "$TMP/e16.npy" "$SK/astronaut.png" "$SK/chelsea.png"
expect_rc "embed fp32 for comparison" 0 "$DINOC" embed -q -m "$TMP/rnd" -o "$TMP/e32.npy" "$SK/astronaut.png" "$SK/chelsea.png"
expect_py "bf16 embeddings within bf16 distance of fp32" '
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
assert a.shape == b.shape and cos.min() > 0.999 and not np.array_equal(a, b), (cos, a.shape)
' "$TMP/e16.npy" "$TMP/e32.npy"
expect_rc "embed --precision nonsense" 2 "$DINOC" embed -q -m "$TMP/rnd" --precision fp8 -o "$TMP/x.npy" "$SK/astronaut.png"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
