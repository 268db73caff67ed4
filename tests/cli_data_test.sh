#!/usr/bin/env bash
# cli_data_test.sh: end-to-end tests of `dinoc data shapes` and `dinoc data fashion-mnist`: the
# files of the layout (checked by an independent reader, PIL), byte-identical output for the same
# seed at 1 and 2 threads, another seed giving other images, the preview sheet, help text with
# defaults, exit codes (0 ok, 1 runtime error, 2 usage error) and errors naming their cause.
# Run by scripts/test.sh with DINOC and PY set. Prints one line per check and "N passed, N failed"
# last; exits non-zero on any failure. About 5 s.
set -u
source "$(dirname "$0")/cli_lib.sh"
DINOC=${DINOC:-./build/dinoc}
PY=${PY:-/usr/bin/python3}


S1=$TMP/s1
expect_rc "data shapes writes a set" 0 "$DINOC" data shapes --out "$S1" -n 120 --seed 5 -t 1 --preview "$TMP/prev.png"
expect_err "progress and summary on stderr" "96 train + 24 test items of 64 x 64 px"
expect_py "layout, PNGs, masks and captions agree (read by PIL)" '
import json, sys, os
import numpy as np
from PIL import Image
d = sys.argv[1]
meta = json.load(open(os.path.join(d, "meta.json")))
classes = open(os.path.join(d, "classes.txt")).read().split("\n")[:-1]
assert classes == ["background"] + meta["kinds"], classes
assert meta["splits"]["train"]["n"] == 96 and meta["splits"]["test"]["n"] == 24 and meta["size"] == 64
held = set(meta["held_out"])
assert len(held) == 12
words = set(meta["vocab"])
for split in ("train", "test"):
    pairs = [l.split("\t") for l in open(os.path.join(d, split, "pairs.tsv")).read().split("\n")[:-1]]
    labels = [l.split("\t") for l in open(os.path.join(d, split, "labels.tsv")).read().split("\n")[:-1]]
    names = open(os.path.join(d, split, "label_names.txt")).read().split("\n")[:-1]
    assert len(pairs) == len(labels) == meta["splits"][split]["n"]
    assert set(l for _, l in labels) == set(names)
    assert len(set(c for _, c in pairs)) == meta["splits"][split]["distinct_captions"]
    for (p, cap), (p2, lab) in zip(pairs, labels):
        assert p == p2
        assert set(cap.split()) <= words, cap
        toks = cap.split()
        assert " ".join(toks[2:4]) == lab, (cap, lab)          # "a SIZE COLOUR KIND ..."
        assert (lab in held) == (split == "test"), (split, lab)
        assert len(toks) == 4 or " ".join(toks[-2:]) not in held, cap   # second shape: never held out
        im = np.asarray(Image.open(os.path.join(d, split, p)))
        mk = np.asarray(Image.open(os.path.join(d, split, p.replace("images/", "masks/"))))
        assert im.shape == (64, 64, 3) and im.dtype == np.uint8, im.shape
        assert mk.shape == (64, 64) and mk.dtype == np.uint8, mk.shape
        kinds = {classes.index(toks[3])} | ({classes.index(toks[-1])} if len(toks) > 4 else set())
        present = set(np.unique(mk)) - {0}
        assert present == kinds, (cap, present, kinds)          # every named kind is in the mask
' "$S1"
expect_py "preview sheet is 4 x 4 cells of image | mask" '
import sys
from PIL import Image
im = Image.open(sys.argv[1]); assert im.size == (4 * (2 * 64 + 2) + 2, 4 * 66 + 2), im.size
' "$TMP/prev.png"

expect_rc "same seed at 2 threads" 0 "$DINOC" data shapes --out "$TMP/s2" -n 120 --seed 5 -t 2 -q
[ ! -s "$TMP/err" ] && ok "--quiet prints nothing" || bad "--quiet prints nothing"
diff -r "$S1" "$TMP/s2" >/dev/null && ok "byte-identical at 1 and 2 threads" || bad "byte-identical at 1 and 2 threads"
expect_rc "another seed" 0 "$DINOC" data shapes --out "$TMP/s3" -n 120 --seed 6 -q
cmp -s "$S1/train/images/000000.png" "$TMP/s3/train/images/000000.png" && bad "another seed gives other images" || ok "another seed gives other images"
expect_rc "single shapes, 32 px, no test split" 0 "$DINOC" data shapes -o "$TMP/s4" -n 20 --single --size 32 --test-frac 0 -q
expect_py "single: one shape per caption, 32 px, empty test split" '
import sys, os
from PIL import Image
d = sys.argv[1]
caps = [l.split("\t")[1] for l in open(os.path.join(d, "train/pairs.tsv")).read().split("\n")[:-1]]
assert len(caps) == 20 and all(len(c.split()) == 4 for c in caps), caps[:3]
assert Image.open(os.path.join(d, "train/images/000019.png")).size == (32, 32)
assert open(os.path.join(d, "test/pairs.tsv")).read() == ""
' "$TMP/s4"
expect_rc "--part-captions" 0 "$DINOC" data shapes -o "$TMP/s5" -n 120 --seed 5 --part-captions -q
expect_py "part captions: each two-shape training image also with each phrase; test unchanged" '
import sys, os, json
d, ref = sys.argv[1], sys.argv[2]
rows = [l.split("\t") for l in open(os.path.join(d, "train/pairs.tsv")).read().split("\n")[:-1]]
base = [l.split("\t") for l in open(os.path.join(ref, "train/pairs.tsv")).read().split("\n")[:-1]]
by = {}
for img, cap in rows: by.setdefault(img, []).append(cap)
assert len(by) == len(base), (len(by), len(base))
for img, cap in base:
    w = cap.split()
    want = [cap] if len(w) == 4 else [cap, " ".join(w[:4]), " ".join(w[-4:])]
    assert by[img] == want, (img, by[img], want)
assert open(os.path.join(d, "test/pairs.tsv")).read() == open(os.path.join(ref, "test/pairs.tsv")).read()
assert json.load(open(os.path.join(d, "meta.json")))["part_captions"] is True
' "$TMP/s5" "$S1"
expect_rc "--hard-negatives" 0 "$DINOC" data shapes -o "$TMP/s6" -n 120 --seed 5 --part-captions --hard-negatives -q
expect_py "hard negatives: two-shape rows get the colours swapped, phrases the other colour; test unchanged" '
import sys, os, json
d, ref = sys.argv[1], sys.argv[2]
rows = [l.split("\t") for l in open(os.path.join(d, "train/pairs.tsv")).read().split("\n")[:-1]]
plain = [l.split("\t") for l in open(os.path.join(ref, "train/pairs.tsv")).read().split("\n")[:-1]]
assert [r[:2] for r in rows] == plain, "captions changed"
per = {}
for r in rows: per[r[0]] = per.get(r[0], 0) + 1
n3 = 0
for r in rows:
    w = r[1].split()
    if per[r[0]] == 1:
        assert len(r) == 2, r          # a single-shape image: no negative
        continue
    if len(r) == 2:                     # equal colours and kinds: nothing to swap
        continue
    n3 += 1
    nw = r[2].split()
    assert len(nw) == len(w) and nw != w and sorted(nw) != [] and r[2] != r[1], r
    if len(w) >= 9:                     # the whole caption: the same words, two of them swapped
        assert sorted(nw) == sorted(w) and sum(a != b for a, b in zip(w, nw)) == 2, r
    else:                               # a phrase: one word replaced
        assert sum(a != b for a, b in zip(w, nw)) == 1, r
assert n3 > 20, n3
assert open(os.path.join(d, "test/pairs.tsv")).read() == open(os.path.join(ref, "test/pairs.tsv")).read()
assert json.load(open(os.path.join(d, "meta.json")))["hard_negatives"] == "seen"
# every colour-kind phrase of a negative is one the training captions show (held-out pairs never
# appear, not even as negatives)
def phrases(c):
    w = c.split()
    return {" ".join(w[2:4]), " ".join(w[-2:])}
seen = set().union(*(phrases(r[1]) for r in rows))
for r in rows:
    if len(r) == 3: assert phrases(r[2]) <= seen, (r, phrases(r[2]) - seen)
' "$TMP/s6" "$TMP/s5"
expect_rc "--relation-negatives" 0 "$DINOC" data shapes -o "$TMP/s6r" -n 120 --seed 5 --part-captions --relation-negatives -q
expect_py "relation negatives: whole two-shape captions get the relation reversed, phrases none; test unchanged" '
import sys, os, json
d, ref = sys.argv[1], sys.argv[2]
rows = [l.split("\t") for l in open(os.path.join(d, "train/pairs.tsv")).read().split("\n")[:-1]]
plain = [l.split("\t") for l in open(os.path.join(ref, "train/pairs.tsv")).read().split("\n")[:-1]]
assert [r[:2] for r in rows] == plain, "captions changed"
inv = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
n3 = 0
for r in rows:
    w = r[1].split()
    if len(w) < 9:
        assert len(r) == 2, r           # a phrase or a single shape: no negative
        continue
    n3 += 1
    rel = " ".join(w[4:-4])
    assert len(r) == 3 and r[2] == " ".join(w[:4] + [inv[rel]] + w[-4:]), r
assert n3 > 20, n3
assert open(os.path.join(d, "test/pairs.tsv")).read() == open(os.path.join(ref, "test/pairs.tsv")).read()
assert json.load(open(os.path.join(d, "meta.json")))["hard_negatives"] == "relation"
' "$TMP/s6r" "$TMP/s5"
expect_rc "two kinds of negatives at once" 2 "$DINOC" data shapes -o "$TMP/s6x" -n 10 --hard-negatives --relation-negatives -q

expect_rc "data shapes --help" 0 "$DINOC" data shapes --help
grep -q -- "--size N.*(default: 64)" "$TMP/out" && grep -q -- "--test-frac X.*(default: 0.2)" "$TMP/out" &&
    ok "help lists defaults" || bad "help lists defaults"
expect_rc "data --help lists the sets" 0 "$DINOC" data --help
grep -q "fashion-mnist" "$TMP/out" && ok "sets listed" || bad "sets listed"
expect_rc "unknown set" 2 "$DINOC" data mnist --out "$TMP/x"
expect_err "unknown set named" "unknown data set 'mnist'"
expect_rc "missing --out" 2 "$DINOC" data shapes -n 10
expect_rc "size too small" 2 "$DINOC" data shapes --out "$TMP/x" --size 16
expect_rc "bad seed" 2 "$DINOC" data shapes --out "$TMP/x" --seed -3
expect_rc "stray argument" 2 "$DINOC" data shapes --out "$TMP/x" extra
expect_err "stray argument named" "'extra'"
echo x >"$TMP/file"
expect_rc "unwritable output" 1 "$DINOC" data shapes --out "$TMP/file/sub" -n 10 -q
expect_err "error names the path" "$TMP/file"

# Fashion-MNIST (Debian's dataset-fashion-mnist; scripts/test.sh installs it)
F=$TMP/fm
expect_rc "data fashion-mnist, 30 test items" 0 "$DINOC" data fashion-mnist --out "$F" --split test -n 30 -q
expect_py "fashion-mnist layout, captions and threshold masks" '
import json, sys, os, gzip
import numpy as np
from PIL import Image
d = sys.argv[1]
names = open(os.path.join(d, "label_names.txt")).read().split("\n")[:-1]
classes = open(os.path.join(d, "classes.txt")).read().split("\n")[:-1]
assert classes == ["background"] + names and len(names) == 10 and names[9] == "ankle boot"
meta = json.load(open(os.path.join(d, "meta.json")))
thr = meta["mask_threshold"]
assert meta["splits"]["test"]["n"] == 30 and meta["splits"]["train"]["n"] == 0 and not os.path.exists(os.path.join(d, "train"))
src = "/usr/share/datasets/fashion-mnist/t10k-"
x = np.frombuffer(gzip.open(src + "images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 28, 28)
y = np.frombuffer(gzip.open(src + "labels-idx1-ubyte.gz").read()[8:], np.uint8)
pairs = [l.split("\t") for l in open(os.path.join(d, "test/pairs.tsv")).read().split("\n")[:-1]]
labels = [l.split("\t")[1] for l in open(os.path.join(d, "test/labels.tsv")).read().split("\n")[:-1]]
for i, ((p, cap), lab) in enumerate(zip(pairs, labels)):
    assert lab == names[y[i]] and cap.endswith(" " + lab), (cap, lab)
    assert ("an " + lab) in cap if lab[0] in "aeiou" else ("a " + lab) in cap, cap
    im = np.asarray(Image.open(os.path.join(d, "test", p)))
    mk = np.asarray(Image.open(os.path.join(d, "test", p.replace("images/", "masks/"))))
    assert (im == x[i]).all()
    assert (mk == np.where(x[i] > thr, y[i] + 1, 0)).all()
' "$F"
expect_rc "fashion-mnist bad split" 2 "$DINOC" data fashion-mnist --out "$F" --split val
expect_rc "fashion-mnist missing data" 1 "$DINOC" data fashion-mnist --out "$TMP/fm2" --data-dir "$TMP/nowhere" -q
expect_err "missing data named" "$TMP/nowhere"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
