#!/usr/bin/env bash
# cli_attn_report_test.sh: end-to-end tests of `dinoc attn` and `dinoc report`.
#   attn:   the grid PNG's size and content (input panel = the preprocessed input, masks made of
#           input pixels), the --npy maps against PyTorch (tests/py/vit_ref.py) on a model with
#           registers and on Fashion-MNIST items with a 1-channel model, usage and runtime errors.
#   report: a synthetic run folder (log with malformed lines, metrics.json, knn.json, linear.json,
#           attn.png): numbers in report.md, every SVG parses as XML, every linked file exists,
#           the collapse note, a run without metrics.json, missing folder / log.
# Needs DINOC (the binary) and /usr/bin/python3 with torch, numpy and PIL. Fashion-MNIST checks run
# when the IDX files are in $DINOC_FASHION_MNIST or /usr/share/datasets/fashion-mnist.
# Prints one line per check and "N passed, N failed" last; exits 1 if any failed.
set -u
source "$(dirname "$0")/cli_lib.sh"
DINOC=${DINOC:-./build/dinoc}
PY=${PY:-/usr/bin/python3}
FMNIST=${DINOC_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
TESTS_PY=$(cd "$(dirname "$0")/py" && pwd)

# pycheck NAME ARGS... <<EOF: a python check; exit 0 = pass
pycheck() { local name=$1; shift; expect_rc "$name" 0 env PYTHONPATH="$TESTS_PY" $PY - "$@"; }

# ---- models: dinoc's folders with vit_ref.init_random weights (far-from-uniform attention) --------
reinit() {
    env PYTHONPATH="$TESTS_PY" $PY - "$1" <<'PYEOF'
import os, sys, torch, st, vit_ref
torch.manual_seed(0)
m = vit_ref.from_pretrained(sys.argv[1])
vit_ref.init_random(m, seed=7)
st.save(os.path.join(sys.argv[1], "model.safetensors"), m.state_dict(), {"format": "pt"})
PYEOF
}
REG=$TMP/reg TINY=$TMP/tiny
"$DINOC" init --arch vits14-reg --depth 2 -o "$REG" 2>/dev/null && reinit "$REG" \
    && "$DINOC" init --arch vit-tiny-dino --depth 2 -o "$TINY" 2>/dev/null && reinit "$TINY" \
    && ok "test models (registers; 1 channel)" || bad "test models (registers; 1 channel)"
# REG: no resize or crop, so the PNG's pixels are the model input
cat > "$REG/preprocessor_config.json" <<'EOF'
{"do_resize": false, "do_center_crop": false, "do_rescale": true, "rescale_factor": 0.00392156862745098,
 "do_normalize": true, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
EOF
$PY -c "
import numpy as np; from PIL import Image
r = np.random.default_rng(1); y, x = np.mgrid[0:56, 0:70]
img = np.stack([(x * 3) % 256, (y * 4) % 256, ((x + y) * 2) % 256], -1) + r.integers(0, 40, (56, 70, 3))
Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save('$TMP/a.png')"

# ---- attn: usage and runtime errors ------------------------------------------------------------
expect_rc "attn --help" 0 "$DINOC" attn --help
grep -q "default: 112" "$TMP/out" && ok "attn help shows defaults" || bad "attn help shows defaults"
expect_rc "attn without -m is a usage error" 2 "$DINOC" attn "$TMP/a.png"
expect_rc "attn without inputs is a usage error" 2 "$DINOC" attn -m "$REG"
expect_rc "attn --threshold 2 is a usage error" 2 "$DINOC" attn -m "$REG" --threshold 2 "$TMP/a.png"
expect_rc "attn --index 3-1 is a usage error" 2 "$DINOC" attn -m "$REG" --data fashion-mnist --index 3-1
expect_rc "attn unknown option is a usage error" 2 "$DINOC" attn -m "$REG" --frob "$TMP/a.png"
expect_rc "attn on a missing model fails" 1 "$DINOC" attn -m "$TMP/nope" -o "$TMP/x.png" "$TMP/a.png"
expect_err "error names the missing model" "$TMP/nope"
expect_rc "attn on a missing image fails" 1 "$DINOC" attn -m "$REG" -o "$TMP/x.png" "$TMP/missing.png"
[ ! -e "$TMP/x.png" ] && ok "no PNG left after a failure" || bad "no PNG left after a failure"

# ---- attn: a model with 4 registers, 6 heads, patch 14, on a 70 x 56 image (5 x 4 patches) ------
expect_rc "attn on an image" 0 "$DINOC" attn -m "$REG" -o "$TMP/a_attn.png" --npy "$TMP/a.npy" "$TMP/a.png"
pycheck "grid PNG: 1 row of [input, 6 heads, mean], panels x2 to >= 112 px" "$TMP/a_attn.png" "$TMP/a.png" <<'PYEOF'
import sys, numpy as np; from PIL import Image
g = np.asarray(Image.open(sys.argv[1]).convert("RGB")); a = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
want = (2 * 56 + 2 * 4, 8 * 2 * 70 + 9 * 4)  # (H, W): 8 panels of 140 x 112, 4 px gaps
panel = g[4:4 + 112, 4:4 + 140].astype(int)
up = np.repeat(np.repeat(a, 2, 0), 2, 1).astype(int)
print(f"    grid {g.shape[:2]}, wanted {want}; input panel max diff {np.abs(panel - up).max()}", file=sys.stderr)
sys.exit(0 if g.shape[:2] == want and np.abs(panel - up).max() <= 1 else 1)
PYEOF
pycheck "--npy maps match PyTorch (CLS row, registers skipped, <= 1e-5)" "$REG" "$TMP/a.png" "$TMP/a.npy" <<'PYEOF'
import sys, numpy as np, torch, vit_ref; from PIL import Image
m = vit_ref.from_pretrained(sys.argv[1])
u8 = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
mean = np.array([0.485, 0.456, 0.406], np.float32); std = np.array([0.229, 0.224, 0.225], np.float32)
x = ((u8.astype(np.float64) * (1 / 255)).astype(np.float32) - mean) / std
with torch.no_grad():
    att = m(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))["attentions_last"].numpy()
want = att[:, :, 0, 1 + 4:].reshape(1, 6, 4, 5)
got = np.load(sys.argv[3])
err = np.abs(got - want).max() if got.shape == want.shape else np.inf
rest = 1 - att[:, :, 0, :5].sum(-1)  # mass left for the patches after CLS and the registers
sums = got.sum((2, 3))
print(f"    shape {got.shape}, max abs diff {err:.3g}, row sums {sums.min():.4f}..{sums.max():.4f}, "
      f"max peak {got.max():.3f}", file=sys.stderr)
sys.exit(0 if err <= 1e-5 and np.all(sums > 0) and np.all(sums <= 1 + 1e-6) and np.abs(sums - rest).max() < 1e-5 else 1)
PYEOF
expect_rc "attn --size 60 --threshold 0.6" 0 "$DINOC" attn -m "$REG" --size 60 --threshold 0.6 -o "$TMP/t.png" --npy "$TMP/t.npy" "$TMP/a.png"
pycheck "--size 60 crops to 56 (4 x 4 patches); masks hold >= 60% of the mass, drawn over the input" "$TMP/t.png" "$TMP/t.npy" <<'PYEOF'
import sys, numpy as np; from PIL import Image
g = np.asarray(Image.open(sys.argv[1]).convert("RGB")).astype(int); maps = np.load(sys.argv[2])
ok = maps.shape == (1, 6, 4, 4) and g.shape[:2] == (2 * 56 + 8, 8 * 112 + 9 * 4)
inp = g[4:116, 4:116]
for h in range(7):  # each head panel and the mean: kept = (input + yellow) // 2, dropped = input // 4
    p = g[4:116, 4 + (h + 1) * 116: 4 + (h + 1) * 116 + 112]
    keep = np.all(p == (inp + [253, 231, 37]) // 2, -1); dim = np.all(p == inp // 4, -1)
    ok &= bool(np.all(keep | dim)) and keep.any()
    if h < 6:  # the kept patches (8 x 8 px blocks at x2 of 14 px) hold >= 60% of the head's mass
        m = maps[0, h]
        ok &= m[keep[::28, ::28]].sum() >= 0.6 * m.sum() - 1e-6
print(f"    maps {maps.shape}, grid {g.shape[:2]}", file=sys.stderr)
sys.exit(0 if ok else 1)
PYEOF

# ---- attn: Fashion-MNIST items, 1-channel model (3 heads, patch 4) ------------------------------
if [ -e "$FMNIST/t10k-images-idx3-ubyte.gz" ] || [ -e "$FMNIST/t10k-images-idx3-ubyte" ]; then
    expect_rc "attn on fashion-mnist items" 0 "$DINOC" attn -m "$TINY" --data fashion-mnist --data-dir "$FMNIST" \
        --index 0,1,2-3 --size 28 -o "$TMP/f.png" --npy "$TMP/f.npy"
    expect_err "rows name the items' classes" "item 0 (Ankle boot)"
    pycheck "fashion-mnist grid 4 rows x 5 panels of 112 px; maps match PyTorch" "$TINY" "$FMNIST" "$TMP/f.png" "$TMP/f.npy" <<'PYEOF'
import sys, os, gzip, json, numpy as np, torch, vit_ref; from PIL import Image
m = vit_ref.from_pretrained(sys.argv[1])
pp = json.load(open(os.path.join(sys.argv[1], "preprocessor_config.json")))
p = os.path.join(sys.argv[2], "t10k-images-idx3-ubyte")
raw = gzip.open(p + ".gz").read() if os.path.exists(p + ".gz") else open(p, "rb").read()
u8 = np.frombuffer(raw, np.uint8, offset=16)[:4 * 784].reshape(4, 1, 28, 28)
x = ((u8.astype(np.float64) * (1 / 255)).astype(np.float32) - np.float32(pp["image_mean"][0])) / np.float32(pp["image_std"][0])
with torch.no_grad():
    att = m(torch.from_numpy(x))["attentions_last"].numpy()
want = att[:, :, 0, 1:].reshape(4, 3, 7, 7); got = np.load(sys.argv[4])
g = np.asarray(Image.open(sys.argv[3]).convert("RGB"))
err = np.abs(got - want).max() if got.shape == want.shape else np.inf
inp = g[4:116, 4:116, 0].astype(int)  # item 0 shown grey, x4
print(f"    maps {got.shape} max abs diff {err:.3g}; grid {g.shape[:2]}", file=sys.stderr)
sys.exit(0 if err <= 1e-5 and g.shape[:2] == (4 * 112 + 5 * 4, 5 * 112 + 6 * 4)
         and np.abs(inp - np.kron(u8[0, 0].astype(int), np.ones((4, 4), int))).max() <= 1 else 1)
PYEOF
    expect_rc "attn --index past the end fails" 1 "$DINOC" attn -m "$TINY" --data fashion-mnist --data-dir "$FMNIST" --index 10000 -o "$TMP/f2.png"
    expect_err "error names the index" "--index 10000"
    expect_rc "attn --npy with two grid sizes fails" 1 "$DINOC" attn -m "$REG" --npy "$TMP/two.npy" -o "$TMP/two.png" \
        "$TMP/a.png" --data fashion-mnist --data-dir "$FMNIST" --index 0
    expect_err "error says to use --size" "use --size"
else
    echo "skip: no Fashion-MNIST in $FMNIST (the fashion-mnist checks did not run)" >&2
fi

# ---- report --------------------------------------------------------------------------------------
RUN=$TMP/run
mkdir -p "$RUN"
$PY - "$RUN" <<'PYEOF'
import sys, json, math
run = sys.argv[1]; K = 1024
with open(f"{run}/log.jsonl", "w") as f:
    for s in range(1, 301):
        e = (s - 1) // 100
        f.write(json.dumps({"step": s, "epoch": e, "loss": math.log(K) * (0.4 + 0.6 * math.exp(-s / 60)) + 0.05 * math.sin(s),
                            "lr": 5e-4 * min(1, s / 50), "wd": 0.04, "momentum": 0.996 + 4e-3 * s / 300,
                            "teacher_temp": 0.04, "grad_norm": 1 + 0.1 * math.cos(s), "img_s": 300 + s % 7,
                            "teacher_entropy": 5 - s / 100}) + "\n")
        if s % 100 == 0:
            f.write(json.dumps({"step": s, "epoch": e, "knn_top1": 0.5 + 0.1 * e, "knn_top5": 0.8 + 0.05 * e}) + "\n")
        if s == 150:
            f.write('{"step": 150, "loss": \n')   # a line cut short by a crash
            f.write("\n")                           # blank lines are not counted
            f.write("[1, 2, 3]\n")                  # JSON but not an object
json.dump({"steps": 300, "final_loss": 3.01, "seconds": 123.4, "threads": 2, "images_per_second": 250.5,
           "config": {"out_dim": K, "batch": 64, "lr": 0.0005, "data": "fashion-mnist", "teacher_temp": 0.04}},
          open(f"{run}/metrics.json", "w"))
json.dump({"top1": 0.8123, "top5": 0.9712, "k": 20, "T": 0.07, "n_train": 60000}, open(f"{run}/knn.json", "w"))
json.dump({"test_top1": 0.8456, "val_top1": 0.85, "best_lr": 0.01}, open(f"{run}/linear.json", "w"))
PYEOF
cp "$TMP/a_attn.png" "$RUN/attn.png"
expect_rc "report --help" 0 "$DINOC" report --help
expect_rc "report without RUN is a usage error" 2 "$DINOC" report
expect_rc "report with two RUNs is a usage error" 2 "$DINOC" report "$RUN" "$RUN"
expect_rc "report unknown option is a usage error" 2 "$DINOC" report --frob "$RUN"
expect_rc "report on a missing folder fails" 1 "$DINOC" report "$TMP/norun"
expect_err "error names the folder" "$TMP/norun"
mkdir -p "$TMP/nolog"
expect_rc "report on a folder without log.jsonl fails" 1 "$DINOC" report "$TMP/nolog"
expect_err "error names log.jsonl" "log.jsonl"
expect_rc "report on a synthetic run" 0 "$DINOC" report "$RUN"
expect_err "malformed lines are counted on stderr" "2 of 305 lines"
pycheck "report.md: headline numbers, charts, attention maps, notes" "$RUN" <<'PYEOF'
import sys, re, os
run = sys.argv[1]; md = open(f"{run}/report.md").read()
need = ["81.23%", "97.12%", "84.56%", "k = 20, T = 0.07", "250.5 img/s", "0:02:03", "out_dim | 1024",
        "![loss](loss.svg)", "![lr](lr.svg)", "![accuracy](accuracy.svg)", "![teacher_entropy](teacher_entropy.svg)",
        "attn.png", "2 of 305 lines", "ln K = 6.9315", "`wd` = 0.04", "n_train | 60000", "best_lr | 0.01"]
missing = [n for n in need if n not in md]
links = re.findall(r"!\[[^\]]*\]\(<?([^)>]+)>?\)", md)
absent = [l for l in links if not os.path.exists(os.path.join(run, l))]
leftovers = [f for f in os.listdir(run) if ".tmp." in f]
print(f"    missing {missing}, broken links {absent}, temp files {leftovers}", file=sys.stderr)
sys.exit(0 if not missing and not absent and not leftovers and len(links) >= 8 else 1)
PYEOF
pycheck "every SVG is well-formed XML with axes and lines" "$RUN" <<'PYEOF'
import sys, glob, xml.etree.ElementTree as ET
bad = []; files = sorted(glob.glob(sys.argv[1] + "/*.svg"))
for f in files:
    try:
        r = ET.parse(f).getroot(); ns = "{http://www.w3.org/2000/svg}"
        if r.tag != ns + "svg" or not r.findall(f".//{ns}path") or len(r.findall(f".//{ns}text")) < 6: bad.append(f)
    except ET.ParseError as e:
        bad.append(f"{f}: {e}")
loss = ET.parse(sys.argv[1] + "/loss.svg").getroot()
paths = loss.findall(".//{http://www.w3.org/2000/svg}path")
print(f"    {len(files)} SVGs, bad {bad}, loss paths {len(paths)}", file=sys.stderr)
sys.exit(0 if len(files) >= 6 and not bad and len(paths) == 2 else 1)
PYEOF
expect_rc "report again (replaces its files)" 0 "$DINOC" report "$RUN"

# a collapsed run (loss and teacher entropy at ln K); first without metrics.json (a run still going)
COL=$TMP/collapsed
mkdir -p "$COL"
$PY - "$COL" <<'PYEOF'
import sys, json, math
with open(sys.argv[1] + "/log.jsonl", "w") as f:
    for s in range(1, 201):
        f.write(json.dumps({"step": s, "loss": math.log(4096) + 0.001 * math.sin(s), "lr": 1e-4,
                            "teacher_entropy": math.log(4096), "batch_entropy": math.log(4096)}) + "\n")
PYEOF
expect_rc "report on a run without metrics.json" 0 "$DINOC" report "$COL"
grep -q "No \`metrics.json\`" "$COL/report.md" && ok "report notes the missing metrics.json" || bad "report notes the missing metrics.json"
echo '{"steps": 200, "config": {"out_dim": 4096}}' > "$COL/metrics.json"
expect_rc "report on a collapsed run" 0 "$DINOC" report "$COL"
grep -q "Possible collapse" "$COL/report.md" && grep -q "near uniform" "$COL/report.md" \
    && ok "report flags the loss at ln K" || bad "report flags the loss at ln K"
grep -q "Possible collapse" "$RUN/report.md" && bad "healthy run not flagged" || ok "healthy run not flagged"

# a supervised run: test_top1 per epoch; a malformed metrics.json is left out with a note
SUP=$TMP/sup
mkdir -p "$SUP"
printf '%s\n' '{"step":1,"epoch":0,"loss":2.3,"lr":0,"wd":0.05,"grad_norm":11,"img_s":330}' \
    '{"step":2,"epoch":0,"loss":2.2,"lr":1e-4,"wd":0.05,"grad_norm":10,"img_s":340}' \
    '{"step":2,"epoch":0,"test_top1":0.7225}' > "$SUP/log.jsonl"
echo '{"steps": 2,' > "$SUP/metrics.json"
expect_rc "report on a supervised run with a broken metrics.json" 0 "$DINOC" report "$SUP"
grep -q "could not be read" "$SUP/report.md" && [ -s "$SUP/accuracy.svg" ] \
    && ok "broken metrics.json noted; accuracy chart drawn" || bad "broken metrics.json noted; accuracy chart drawn"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
