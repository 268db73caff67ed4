#!/usr/bin/env bash
# cli_clip_eval_test.sh: end-to-end tests of the CLIP uses: `dinoc zeroshot`, `dinoc retrieve
# index|query`, `dinoc eval zeroshot|retrieval|fewshot`, on the tiny random CLIP model that
# tests/py/gen_clip.py writes to $FIX/clip/model (with PyTorch's embeddings of two photos and four
# texts in $FIX/clip/io.safetensors) and on a small shapes set made by `dinoc data shapes`.
# Checks numbers against PyTorch/numpy where they exist (zero-shot probabilities with a "{}"
# template are softmax(logits_per_image); index embeddings; recall at K), --json output, exit codes
# (0 ok, 1 runtime error, 2 usage error) and that errors name their cause.
# Run by scripts/test.sh with DINOC, FIX and PY set. Prints one line per check and
# "N passed, N failed" last; exits non-zero on any failure.
set -u
source "$(dirname "$0")/cli_lib.sh"
DINOC=${DINOC:-./build/dinoc}
FIX=${FIX:-build/fixtures}
PY=${PY:-/usr/bin/python3}

# expect_py NAME PYTHON-EXPR: the last stdout is one JSON object j, io holds $FIX/clip/io.safetensors
# (numpy arrays), np is numpy; EXPR must hold. expect_py_code NAME CODE: CODE (statements, same
# names) must set ok to a true value.
expect_py_code() {
    if $PY -c "
import json, sys
sys.path.insert(0, 'tests/py')
import numpy as np, st
io, _ = st.load('$CLIP/io.safetensors')
j = json.load(open('$TMP/out'))
$2
sys.exit(0 if ok else 1)" 2>"$TMP/pyerr"; then
        ok "$1"
    else
        bad "$1"; sed 's/^/    /' "$TMP/out" | head -c 600 >&2; echo >&2; tail -3 "$TMP/pyerr" >&2
    fi
}
expect_py() { expect_py_code "$1" "ok = ($2)"; }

CLIP=$FIX/clip
M=$CLIP/model
if [ ! -f "$M/config.json" ] || [ ! -f "$CLIP/io.safetensors" ]; then
    bad "fixture $M missing: run /usr/bin/python3 tests/py/gen_clip.py $FIX"
    echo "$passed passed, $failed failed"
    exit 1
fi

# ---- dinoc zeroshot against PyTorch: one "{}" template makes each class weight the text embedding
printf 'a photo of a cat\na diagram\nHello, World!!\n2025\n' >"$TMP/texts.txt"
printf '{}\n' >"$TMP/bare.txt"
expect_rc "zeroshot --json with a bare template" 0 "$DINOC" zeroshot -m "$M" --classes "$TMP/texts.txt" \
    --templates "$TMP/bare.txt" -k 4 --json -q "$CLIP/chelsea.png" "$CLIP/coffee.png"
# 2e-4: the towers match PyTorch to 1e-4 on unit embeddings (tests/test_clip.c); logit_scale ~10
expect_py_code "probabilities equal softmax(logits_per_image)" "
names = ['a photo of a cat', 'a diagram', 'Hello, World!!', '2025']
ok = j['templates'] == 1 and j['classes'] == 4 and len(j['results']) == 2
for r, z in zip(j['results'], io['logits_per_image']):
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    ok &= len(r['top']) == 4 and all(abs(h['prob'] - p[names.index(h['label'])]) < 2e-4 for h in r['top'])"
expect_py "ranked best first" "all(r['top'][i]['prob'] >= r['top'][i + 1]['prob'] for r in j['results'] for i in range(3))"
expect_rc "zeroshot with --labels and the 80 templates" 0 "$DINOC" zeroshot -m "$M" --labels "cat, coffee cup ,dog" -k 9 -q "$CLIP"
[ "$(grep -c '^ *[0-9]\. ' "$TMP/out")" = 6 ] && ok "human output: 3 classes x 2 images (k clipped)" \
    || bad "human output: 3 classes x 2 images (k clipped)"
expect_rc "zeroshot --simple --json" 0 "$DINOC" zeroshot -m "$M" --labels cat,dog --simple --json -q "$CLIP/chelsea.png"
expect_py "7 templates, probabilities sum to 1" "j['templates'] == 7 and abs(sum(h['prob'] for h in j['results'][0]['top']) - 1) < 1e-5"
printf 'a photo of a {}\nno slot\n' >"$TMP/badtmpl.txt"
expect_rc "template without {} fails" 1 "$DINOC" zeroshot -m "$M" --labels cat,dog --templates "$TMP/badtmpl.txt" "$CLIP/chelsea.png"
expect_err "error names the file and line" "badtmpl.txt:2"
expect_rc "missing model fails" 1 "$DINOC" zeroshot -m "$TMP/nomodel" --labels cat,dog "$CLIP/chelsea.png"
expect_err "error names the model" "$TMP/nomodel"
expect_rc "missing image fails" 1 "$DINOC" zeroshot -m "$M" --labels cat,dog "$TMP/none.png"
expect_rc "one class fails" 1 "$DINOC" zeroshot -m "$M" --labels cat "$CLIP/chelsea.png"
expect_err "error asks for 2 classes" "at least 2 classes"
expect_rc "zeroshot without classes" 2 "$DINOC" zeroshot -m "$M" "$CLIP/chelsea.png"
expect_rc "zeroshot with --classes and --labels" 2 "$DINOC" zeroshot -m "$M" --labels a,b --classes "$TMP/texts.txt" "$CLIP/chelsea.png"
expect_rc "zeroshot --simple with --templates" 2 "$DINOC" zeroshot -m "$M" --labels a,b --simple --templates "$TMP/bare.txt" "$CLIP/chelsea.png"
expect_rc "zeroshot without images" 2 "$DINOC" zeroshot -m "$M" --labels a,b
expect_rc "zeroshot --help" 0 "$DINOC" zeroshot --help

# ---- dinoc retrieve: an index of the two photos and the four texts
printf 'chelsea.png\ta photo of a cat\nchelsea.png\tHello, World!!\ncoffee.png\ta diagram\ncoffee.png\t2025\ncoffee.png\ta diagram\n' >"$TMP/pairs.tsv"
cp "$CLIP/chelsea.png" "$CLIP/coffee.png" "$TMP/"
expect_rc "retrieve index --pairs" 0 "$DINOC" retrieve index -m "$M" -o "$TMP/ix.safetensors" --pairs "$TMP/pairs.tsv" -q
grep -q "indexed 2 images, 4 captions, 5 pairs" "$TMP/out" && ok "index counts distinct images and captions" || bad "index counts distinct images and captions"
# 1e-4 as tests/test_clip.c: unit embeddings against PyTorch
expect_rc "index embeddings match PyTorch" 0 $PY -c "
import sys; sys.path.insert(0, 'tests/py'); import numpy as np, st, json
t, meta = st.load('$TMP/ix.safetensors'); io, _ = st.load('$CLIP/io.safetensors')
caps = json.loads(meta['captions']); order = [['a photo of a cat', 'a diagram', 'Hello, World!!', '2025'].index(c) for c in caps]
ok = np.abs(t['image_embeds'] - io['image_embeds']).max() < 1e-4 and np.abs(t['text_embeds'] - io['text_embeds'][order]).max() < 1e-4
ok &= meta['format'] == 'dinoc-clip-index' and meta['embed_dim'] == '24' and t['pairs'].shape == (5, 2)
sys.exit(0 if ok else 1)"
expect_rc "retrieve query: texts -> images" 0 "$DINOC" retrieve query -i "$TMP/ix.safetensors" -m "$M" -k 2 --json "a photo of a cat" "2025"
expect_py "best image per text as PyTorch ranks it" "
[r['hits'][0]['index'] for r in j['results']] == [int(np.argmax(io['logits_per_image'][:, c])) for c in (0, 3)] and j['target'] == 'images'
and all(r['hits'][0]['cosine'] >= r['hits'][1]['cosine'] for r in j['results'])"
expect_rc "retrieve query: image -> captions" 0 "$DINOC" retrieve query -i "$TMP/ix.safetensors" -m "$M" --image -k 4 --json "$CLIP/coffee.png"
expect_py "captions ranked as PyTorch's logits" "
[h['match'] for h in j['results'][0]['hits']] == [['a photo of a cat', 'a diagram', 'Hello, World!!', '2025'][c] for c in np.argsort(-io['logits_per_image'][1])]"
expect_rc "retrieve query: image -> images" 0 "$DINOC" retrieve query -i "$TMP/ix.safetensors" -m "$M" --image --target images -k 1 "$CLIP/coffee.png"
grep -q "1.0000  .*coffee.png" "$TMP/out" && ok "an indexed image finds itself (cosine 1)" || bad "an indexed image finds itself (cosine 1)"
expect_rc "retrieve index of images only" 0 "$DINOC" retrieve index -m "$M" -o "$TMP/imgs.safetensors" -q "$CLIP"
expect_rc "image query on an index without captions searches images" 0 "$DINOC" retrieve query -i "$TMP/imgs.safetensors" -m "$M" --image "$CLIP/chelsea.png"
expect_rc "--target texts on an index without captions fails" 1 "$DINOC" retrieve query -i "$TMP/imgs.safetensors" -m "$M" --target texts "a cat"
expect_err "error asks for --pairs" "holds no captions"
# another model: the probe embedding in the index no longer matches
$PY -c "
import sys; sys.path.insert(0, 'tests/py'); import st
t, meta = st.load('$TMP/ix.safetensors'); t['probe'] = -t['probe']; st.save('$TMP/other.safetensors', t, meta)"
expect_rc "an index of another model is refused" 1 "$DINOC" retrieve query -i "$TMP/other.safetensors" -m "$M" "a cat"
expect_err "error says another model" "built with another model"
head -c 100 "$TMP/ix.safetensors" >"$TMP/trunc.safetensors"
expect_rc "a truncated index fails" 1 "$DINOC" retrieve query -i "$TMP/trunc.safetensors" -m "$M" "a cat"
expect_err "error names the file" "trunc.safetensors"
expect_rc "retrieve without a command" 2 "$DINOC" retrieve
expect_rc "retrieve index with --pairs and images" 2 "$DINOC" retrieve index -m "$M" -o "$TMP/x.st" --pairs "$TMP/pairs.tsv" "$CLIP"
expect_rc "retrieve query without queries" 2 "$DINOC" retrieve query -i "$TMP/ix.safetensors" -m "$M"
expect_rc "retrieve query bad --target" 2 "$DINOC" retrieve query -i "$TMP/ix.safetensors" -m "$M" --target both "a cat"

# ---- dinoc eval retrieval: recall against numpy on PyTorch's similarities (same tie rule)
expect_rc "eval retrieval --json" 0 "$DINOC" eval retrieval -m "$M" --data "$TMP/pairs.tsv" --save-index "$TMP/ev.safetensors" --json -q
RECALL="
S = io['logits_per_image']                      # [2 images, 4 texts], texts in TEXTS order
pairs = {0: [0, 2], 1: [1, 3]}                  # image -> texts
def rank(z, pos):
    order = sorted(range(len(z)), key=lambda c: (-z[c], c))
    return min(order.index(p) for p in pos)
t2i = [rank(S[:, t], [i for i in pairs if t in pairs[i]]) for t in range(4)]
i2t = [rank(S[i], pairs[i]) for i in range(2)]
ok = all(abs(j['text_to_image']['R@%d' % k] - np.mean([r < k for r in t2i])) < 1e-12 and
    abs(j['image_to_text']['R@%d' % k] - np.mean([r < k for r in i2t])) < 1e-12 for k in (1, 5, 10))
ok = ok and abs(j['text_to_image']['mean_rank'] - np.mean(t2i) - 1) < 1e-9 and j['pairs'] == 5 and j['texts'] == 4"
expect_py_code "recall at 1/5/10 and mean ranks equal numpy's" "$RECALL"
expect_rc "eval retrieval from the saved index (no model)" 0 "$DINOC" eval retrieval --index "$TMP/ev.safetensors" --json
expect_py_code "same recall from the index" "$RECALL"
expect_rc "eval retrieval on an index without pairs fails" 1 "$DINOC" eval retrieval --index "$TMP/imgs.safetensors"
expect_err "error asks for --pairs" "build it with --pairs"
printf 'chelsea.png a cat without a tab\n' >"$TMP/badpairs.tsv"
expect_rc "malformed pairs file fails" 1 "$DINOC" eval retrieval -m "$M" --data "$TMP/badpairs.tsv" -q
expect_err "error names file:line" "badpairs.tsv:1"
expect_rc "eval retrieval with --index and --model" 2 "$DINOC" eval retrieval --index "$TMP/ev.safetensors" -m "$M"
expect_rc "eval retrieval without data" 2 "$DINOC" eval retrieval -m "$M"

# ---- a shapes set: zero-shot over the held-out labels, retrieval with repeated captions, few-shot
"$DINOC" data shapes --out "$TMP/shapes" -n 150 --size 32 -q -t 1 >/dev/null 2>&1
S=$TMP/shapes
expect_rc "eval zeroshot on a shapes root (test split)" 0 "$DINOC" eval zeroshot -m "$M" --data "$S" --simple --json -q
expect_py "12 held-out classes, 30 images, per-class list" "
j['classes'] == 12 and j['n'] == 30 and j['templates'] == 7 and 0 <= j['top1'] <= j['top5'] <= 1 and len(j['per_class']) == 12"
expect_rc "eval zeroshot over all 48 labels" 0 "$DINOC" eval zeroshot -m "$M" --data "$S/test/labels.tsv" --classes "$S/label_names.txt" --limit 10 --json -q
expect_py "48 classes, 10 images, absent classes null" "j['classes'] == 48 and j['n'] == 10 and any(c['top1'] is None for c in j['per_class'])"
expect_rc "eval zeroshot human output" 0 "$DINOC" eval zeroshot -m "$M" --data "$S" --train-split --simple --limit 12 -q
grep -q "^top-1 .*top-5" "$TMP/out" && ok "human output ends with top-1 / top-5" || bad "human output ends with top-1 / top-5"
printf 'red circle\nblue star\n' >"$TMP/two.txt"
expect_rc "a label missing from --classes fails" 1 "$DINOC" eval zeroshot -m "$M" --data "$S" --classes "$TMP/two.txt" -q
expect_err "error names the label" "is not among the 2 class names"
expect_rc "eval zeroshot missing data" 1 "$DINOC" eval zeroshot -m "$M" --data "$TMP/nodata" -q
expect_err "error names the data path" "$TMP/nodata"
expect_rc "eval zeroshot without --data" 2 "$DINOC" eval zeroshot -m "$M"
expect_rc "eval retrieval on a shapes root" 0 "$DINOC" eval retrieval -m "$M" --data "$S" --json -q
expect_py "distinct captions, one query each" "j['images'] == 30 and j['pairs'] == 30 and j['texts'] <= 30 and j['text_to_image']['queries'] == j['texts']"
expect_rc "eval fewshot (CLIP, same split)" 0 "$DINOC" eval fewshot -m "$M" --data "$S" --same-split --shots 1 --seeds 2 --epochs 20 --json -q
expect_py "few-shot JSON: both classifiers, 2 draws" "
j['features'] == 'clip' and j['classes'] == 12 and len(j['proto_by_seed']) == 2 and 0 <= j['proto_top1'] <= 1 and 0 <= j['probe_top1'] <= 1 and j['same_split']"
cp "$TMP/out" "$TMP/fs1.json"
expect_rc "eval fewshot again" 0 "$DINOC" eval fewshot -m "$M" --data "$S" --same-split --shots 1 --seeds 2 --epochs 20 --json -q -t 1
cp "$TMP/out" "$TMP/fs2.json"
expect_rc "few-shot is deterministic (any threads)" 0 $PY -c "
import json, sys
a, b = json.load(open('$TMP/fs1.json')), json.load(open('$TMP/fs2.json'))
sys.exit(0 if (a['proto_by_seed'], a['probe_by_seed']) == (b['proto_by_seed'], b['probe_by_seed']) else 1)"
expect_rc "few-shot train -> test on held-out classes fails" 1 "$DINOC" eval fewshot -m "$M" --data "$S" --shots 1 -q
expect_err "error suggests --same-split" "absent from the train split"
expect_rc "few-shot on one split without --same-split fails" 1 "$DINOC" eval fewshot -m "$M" --data "$S/test" --shots 1 -q
expect_err "error asks for --same-split" "no train/ and test/ splits"
expect_rc "retrieve index of a shapes root's pairs" 0 "$DINOC" retrieve index -m "$M" -o "$TMP/sh.safetensors" --pairs "$S" --limit 8 -q
grep -q "indexed .* 8 pairs" "$TMP/out" && ok "--limit reads the first 8 rows of test/pairs.tsv" || bad "--limit reads the first 8 rows of test/pairs.tsv"
expect_rc "too many shots fails" 1 "$DINOC" eval fewshot -m "$M" --data "$S" --same-split --shots 50 -q
expect_err "error names the class" "class 0 has"
expect_rc "eval fewshot --shots 0" 2 "$DINOC" eval fewshot -m "$M" --data "$S" --shots 0

# ---- few-shot on a ViT (DINO features) over Fashion-MNIST, when Debian's copy is installed
if [ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || [ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte ]; then
    FM=$TMP/fm
    "$DINOC" init --arch vit-tiny-dino --depth 1 --image-size 28 -o "$FM" 2>/dev/null
    cat >"$FM/preprocessor_config.json" <<'JSON'
{"do_convert_rgb": false, "do_resize": false, "do_center_crop": false, "do_rescale": true,
 "rescale_factor": 0.00392156862745098, "do_normalize": true, "image_mean": [0.286, 0.286, 0.286],
 "image_std": [0.353, 0.353, 0.353], "image_processor_type": "ViTImageProcessor"}
JSON
    expect_rc "eval fewshot on a ViT (Fashion-MNIST)" 0 "$DINOC" eval fewshot -m "$FM" --data fashion-mnist \
        --limit-pool 100 --limit-test 50 --shots 2 --seeds 2 --epochs 10 --json -q
    expect_py "ViT CLS features, 10 classes" "j['features'] == 'vit-cls' and j['dim'] == 192 and j['classes'] == 10 and j['n_test'] == 50"
else
    bad "Fashion-MNIST not installed (/usr/share/datasets/fashion-mnist): the ViT few-shot check cannot run"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
