#!/usr/bin/env bash
# bad_inputs.sh: the dinoc command line on bad input. Each case gives the exit code it must end
# with (1 runtime error, 2 usage error), text its stderr must contain, and an output path that must
# not exist afterwards (no partial output) or, for `keep` cases, an existing output that must be
# left as it was. No "*.tmp.*" file may be left anywhere under the scratch folder.
# Run by scripts/test.sh with DINOC set (default ./build/dinoc); needs no fixtures (a random
# model is written with `dinoc init`). Prints one line per case and "N passed, N failed" last.
# Cases marked pending need a fix listed in docs/hardening.md; DINOC_TEST_PENDING=1 runs them.
set -u
DINOC=${DINOC:-./build/dinoc}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
passed=0 failed=0 skipped=0

ok() { echo "[  OK  ] $1" >&2; passed=$((passed + 1)); }
bad() { echo "[ FAIL ] $1" >&2; failed=$((failed + 1)); }

# check NAME RC TEXT OUT MODE CMD...: runs CMD; requires exit status RC, TEXT in stderr, and
#   MODE absent: OUT must not exist afterwards;  MODE keep: OUT holds "keep" before and after.
check() {
    local name=$1 want=$2 text=$3 out=$4 mode=$5; shift 5
    if [ "$mode" = keep ]; then printf keep > "$out"; elif [ "$out" != - ]; then rm -rf "$out"; fi
    "$@" >"$TMP/stdout" 2>"$TMP/stderr"; local rc=$?
    local why=""
    [ "$rc" = "$want" ] || why="exit $rc, wanted $want"
    [ $rc -ge 128 ] && why="killed by signal $((rc - 128))"
    grep -qF -- "$text" "$TMP/stderr" || why="${why:+$why; }stderr lacks '$text'"
    if [ "$mode" = keep ]; then
        [ "$(cat "$out" 2>/dev/null)" = keep ] || why="${why:+$why; }$out was changed"
    elif [ "$out" != - ] && [ -e "$out" ]; then
        why="${why:+$why; }partial output $out left behind"
    fi
    local tmps
    tmps=$(find "$TMP" -name '*.tmp.*' 2>/dev/null | head -3)
    [ -n "$tmps" ] && why="${why:+$why; }temp files left: $tmps" && find "$TMP" -name '*.tmp.*' -delete
    if [ -z "$why" ]; then ok "$name"; else bad "$name ($why)"; sed 's/^/    /' "$TMP/stderr" | head -4 >&2; fi
    [ "$mode" = keep ] && rm -f "$out"
    return 0
}
pending() { # pending NAME ...: runs the check only with DINOC_TEST_PENDING=1
    if [ "${DINOC_TEST_PENDING:-0}" = 1 ]; then check "$@"; else skipped=$((skipped + 1)); fi
}

# ---- fixtures: a valid tiny model, broken copies of it, and bad images
M=$TMP/model
if ! "$DINOC" init --arch vits14 --depth 1 --image-size 28 -o "$M" 2>"$TMP/stderr"; then
    cat "$TMP/stderr" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
# a real 3x2 PPM image (the CLI takes any format stb decodes)
printf 'P6\n3 2\n255\n' > "$TMP/ok.ppm" && head -c 18 /dev/zero >> "$TMP/ok.ppm"
echo "not an image" > "$TMP/text.jpg"
: > "$TMP/empty.png"
printf 'BM\x36\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0\xff\xff\0\0\xff\xff\0\0\x01\0\x18\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0' > "$TMP/huge.bmp"
printf 'P5\n4 4\n255\n\x01\x02' > "$TMP/truncated.pgm"
mkfifo "$TMP/fifo.png"
mkdir -p "$TMP/noimages" && echo hi > "$TMP/noimages/readme.txt"
echo data > "$TMP/afile"

copy_model() { rm -rf "$2" && cp -r "$M" "$2"; }
copy_model x "$TMP/m_badst"   && printf '\xff\xff\xff\xff\xff\xff\xff\x7f{}' > "$TMP/m_badst/model.safetensors"
copy_model x "$TMP/m_trunc"   && head -c 1000 "$M/model.safetensors" > "$TMP/m_trunc/model.safetensors"
copy_model x "$TMP/m_cfgjson" && echo '{"model_type": "dinov2",' > "$TMP/m_cfgjson/config.json"
copy_model x "$TMP/m_cfgkey"  && sed -i 's/"hidden_size"/"frobnicate": 1, "hidden_size"/' "$TMP/m_cfgkey/config.json"
copy_model x "$TMP/m_heads"   && sed -i 's/"num_attention_heads":[^,]*/"num_attention_heads": 5/' "$TMP/m_heads/config.json"
copy_model x "$TMP/m_pp"      && echo '{"size": {"shortest_edge": 0}}' > "$TMP/m_pp/preprocessor_config.json"
copy_model x "$TMP/m_nost"    && rm "$TMP/m_nost/model.safetensors"
copy_model x "$TMP/m_nocfg"   && rm "$TMP/m_nocfg/config.json"

E=$TMP/e.npy
# ---- usage errors: exit 2
check "no command"                         2 "usage: dinoc"          - absent "$DINOC"
check "unknown command"                    2 "unknown command 'frob'" - absent "$DINOC" frob
check "info: unknown flag"                 2 "unknown option '--frob'" - absent "$DINOC" info --frob "$M"
check "info: no model"                     2 "exactly one MODEL"     - absent "$DINOC" info
check "embed: unknown short flag"          2 "unknown option '-Z'"   "$E" absent "$DINOC" embed -Z -m "$M" -o "$E" "$TMP/ok.ppm"
check "embed: flag missing its value"      2 "needs a value"         "$E" absent "$DINOC" embed -o "$E" "$TMP/ok.ppm" -m
check "embed: --batch 0"                   2 "--batch 0: expected 1..1048576" "$E" absent "$DINOC" embed -m "$M" --batch 0 -o "$E" "$TMP/ok.ppm"
check "embed: --batch over 2^20"           2 "--batch 2000000: expected" "$E" absent "$DINOC" embed -m "$M" --batch 2000000 -o "$E" "$TMP/ok.ppm"
check "embed: --size over 16384"           2 "--size 20000: expected" "$E" absent "$DINOC" embed -m "$M" --size 20000 -o "$E" "$TMP/ok.ppm"
check "embed: --size -1"                   2 "--size -1: expected"   "$E" absent "$DINOC" embed -m "$M" --size -1 -o "$E" "$TMP/ok.ppm"
check "embed: --batch not a number"        2 "bad value 'x' for --batch" "$E" absent "$DINOC" embed -m "$M" --batch x -o "$E" "$TMP/ok.ppm"
check "embed: --size 1e3"                  2 "bad value"             "$E" absent "$DINOC" embed -m "$M" --size 1e3 -o "$E" "$TMP/ok.ppm"
check "embed: --threads overflow"          2 "bad value"             "$E" absent "$DINOC" embed -m "$M" -t 99999999999 -o "$E" "$TMP/ok.ppm"
check "embed: bad --pool"                  2 "--pool"                "$E" absent "$DINOC" embed -m "$M" --pool max -o "$E" "$TMP/ok.ppm"
check "embed: bad --interp"                2 "--interp"              "$E" absent "$DINOC" embed -m "$M" --interp cubic -o "$E" "$TMP/ok.ppm"
check "embed: no images given"             2 "embed needs"           "$E" absent "$DINOC" embed -m "$M" -o "$E"
check "embed: flag takes no value"         2 "takes no value"        "$E" absent "$DINOC" embed -m "$M" --quiet=1 -o "$E" "$TMP/ok.ppm"
check "init: unknown preset"               2 "vitx"                  "$TMP/i1" absent "$DINOC" init --arch vitx -o "$TMP/i1"
check "init: no --out"                     2 "needs --out"           - absent "$DINOC" init --arch vits14
check "init: --depth not a number"         2 "bad value"             "$TMP/i2" absent "$DINOC" init --depth two -o "$TMP/i2"
check "init: stray positional"             2 "no positional"         "$TMP/i3" absent "$DINOC" init -o "$TMP/i3" extra

# ---- bad models: exit 1, the file at fault named
check "info: hostile header length"        1 "model.safetensors"     - absent "$DINOC" info "$TMP/m_badst"
check "info: truncated safetensors"        1 "model.safetensors"     - absent "$DINOC" info "$TMP/m_trunc"
check "info: config.json not JSON"         1 "config.json: invalid JSON" - absent "$DINOC" info "$TMP/m_cfgjson"
check "info: unknown config key"           1 "unknown field 'frobnicate'" - absent "$DINOC" info "$TMP/m_cfgkey"
check "info: heads do not divide"          1 "5 heads do not divide" - absent "$DINOC" info "$TMP/m_heads"
check "info: bad preprocessor_config"      1 "preprocessor_config.json" - absent "$DINOC" info "$TMP/m_pp"
check "info: no weights"                   1 "no model.safetensors"  - absent "$DINOC" info "$TMP/m_nost"
check "info: missing path"                 1 "$TMP/nope"             - absent "$DINOC" info "$TMP/nope"
check "info: a text file as model"         1 "afile"                 - absent "$DINOC" info "$TMP/afile"
check "embed: hostile safetensors"         1 "model.safetensors"     "$E" keep   "$DINOC" embed -q -m "$TMP/m_badst" -o "$E" "$TMP/ok.ppm"
check "embed: truncated safetensors"       1 "model.safetensors"     "$E" absent "$DINOC" embed -q -m "$TMP/m_trunc" -o "$E" "$TMP/ok.ppm"
check "embed: bad config.json"             1 "config.json"           "$E" keep   "$DINOC" embed -q -m "$TMP/m_cfgjson" -o "$E" "$TMP/ok.ppm"
check "embed: no config.json"              1 "no config.json"        "$E" absent "$DINOC" embed -q -m "$TMP/m_nocfg" -o "$E" "$TMP/ok.ppm"
check "embed: bad preprocessor_config"     1 "shortest_edge"         "$E" absent "$DINOC" embed -q -m "$TMP/m_pp" -o "$E" "$TMP/ok.ppm"

# ---- bad images: exit 1, the image named, no output
check "embed: text as image"               1 "text.jpg"              "$E" keep   "$DINOC" embed -q -m "$M" -o "$E" "$TMP/ok.ppm" "$TMP/text.jpg"
check "embed: zero-byte image"             1 "empty.png: empty file" "$E" absent "$DINOC" embed -q -m "$M" -o "$E" "$TMP/empty.png"
check "embed: 65535x65535 BMP header"      1 "exceeds the limits"    "$E" absent "$DINOC" embed -q -m "$M" -o "$E" "$TMP/huge.bmp"
# stb pads a truncated PGM/PPM with zeros and reports success (finding F6)
check "embed: truncated PGM"               1 "truncated.pgm"         "$E" absent "$DINOC" embed -q -m "$M" -o "$E" "$TMP/truncated.pgm"
# a crafted progressive JPEG on which stb_image reads out of bounds (finding F18): libjpeg refuses it
check "embed: hostile JPEG (F18)"         1 "cannot decode JPEG"    "$E" absent "$DINOC" embed -q -m "$M" -o "$E" tests/fuzz/known/F18_stb_jpeg_huff_oob.jpg
check "embed: JPEG behind fill bytes (F18)" 1 "Not a JPEG file"     "$E" absent "$DINOC" embed -q -m "$M" -o "$E" tests/fuzz/known/F18b_stb_jpeg_fill_bytes.jpg
# a 99-byte PNG whose chunk claims 1.2 GB: stb allocated 2 GiB before reading it (finding F19)
check "embed: PNG chunk past the end (F19)" 1 "truncated or corrupt PNG" "$E" absent "$DINOC" embed -q -m "$M" -o "$E" tests/fuzz/known/F19_stb_png_chunk_alloc.png
check "embed: FIFO as image"               1 "not a regular file"    "$E" absent "$DINOC" embed -q -m "$M" -o "$E" "$TMP/fifo.png"
check "embed: missing image"               1 "nope.png"              "$E" absent "$DINOC" embed -q -m "$M" -o "$E" "$TMP/nope.png"
check "embed: folder without images"       1 "no images found"       "$E" absent "$DINOC" embed -q -m "$M" -o "$E" "$TMP/noimages"
check "embed: missing model"               1 "$TMP/nomodel"          "$E" absent "$DINOC" embed -q -m "$TMP/nomodel" -o "$E" "$TMP/ok.ppm"

# ---- unwritable outputs: exit 1, the path named, nothing left behind
check "embed: -o in a missing folder"      1 "/nonexistent-dir/e.npy" - absent "$DINOC" embed -q -m "$M" -o /nonexistent-dir/e.npy "$TMP/ok.ppm"
check "embed: -o under a file"             1 "afile/e.npy"           - absent "$DINOC" embed -q -m "$M" -o "$TMP/afile/e.npy" "$TMP/ok.ppm"
mkdir -p "$TMP/isdir.npy"
check "embed: -o is a folder"              1 "isdir.npy"             - absent "$DINOC" embed -q -m "$M" -o "$TMP/isdir.npy" "$TMP/ok.ppm"
# the .npy is written, then the file list beside it fails: no half-written pair may stay (finding F5)
mkdir -p "$TMP/pair.txt"
check "embed: file list unwritable"        1 "pair.txt"              "$TMP/pair.npy" absent "$DINOC" embed -q -m "$M" -o "$TMP/pair.npy" "$TMP/ok.ppm"
check "init: -o under a file"              1 "cannot create directory" - absent "$DINOC" init --depth 1 -o "$TMP/afile/m"

# ---- text-side and CLIP inputs: exit 1, the file (and line) named, no run folder left
printf 'images/0.png a caption without a tab\n' > "$TMP/notab.tsv"
printf 'ok.ppm\tfine\nmissing.png\ta missing image\n' > "$TMP/missing.tsv"
printf 'ok.ppm\tcap\000tion\n' > "$TMP/nul.tsv"
printf 'ok.ppm\t\xff\xfe not UTF-8\n' > "$TMP/badutf8.tsv"
printf 'a photo of a thing.\n' > "$TMP/notmpl.txt"
printf 'good text\n%%\n\xc3\x28 invalid UTF-8\n%%\n' > "$TMP/badcorpus.txt"
printf 'not a safetensors index' > "$TMP/bad.index"
check "train clip: TSV line without a tab"  1 "notab.tsv:1: expected" "$TMP/rc1" absent "$DINOC" train clip --pairs "$TMP/notab.tsv" --preset tiny -o "$TMP/rc1"
check "train clip: TSV names a missing image" 1 "missing.png"       "$TMP/rc2" absent "$DINOC" train clip --pairs "$TMP/missing.tsv" --preset tiny -o "$TMP/rc2"
check "train clip: a 0 byte in the TSV"     1 "nul.tsv: a 0 byte"    "$TMP/rc3" absent "$DINOC" train clip --pairs "$TMP/nul.tsv" --preset tiny -o "$TMP/rc3"
check "train clip: caption not UTF-8"       1 "UTF-8"                "$TMP/rc4" absent "$DINOC" train clip --pairs "$TMP/badutf8.tsv" --preset tiny -o "$TMP/rc4"
check "train clip: missing --pairs file"    1 "nope.tsv"             "$TMP/rc5" absent "$DINOC" train clip --pairs "$TMP/nope.tsv" --preset tiny -o "$TMP/rc5"
check "tokenize: invalid UTF-8"             1 "UTF-8"                - absent "$DINOC" tokenize "$(printf 'ok \xff')"
check "train mlm: corpus with invalid UTF-8" 1 "badcorpus.txt"       "$TMP/rm1" absent "$DINOC" train mlm --text "$TMP/badcorpus.txt" -o "$TMP/rm1"
check "zeroshot: template without {}"       1 "notmpl.txt:1"         - absent "$DINOC" zeroshot -m "$M" --labels "a,b" --templates "$TMP/notmpl.txt" "$TMP/ok.ppm"
check "retrieve query: not an index"        1 "bad.index"            - absent "$DINOC" retrieve query -i "$TMP/bad.index" -m "$M" "a red circle"

# ---- numeric options: non-finite or out-of-range numbers, negative seeds: usage errors naming the option
check "train supervised: --lr inf"          2 "for --lr (not a finite number)" "$TMP/rs1" absent "$DINOC" train supervised --lr inf --data "$TMP/noimages" -o "$TMP/rs1"
check "train supervised: --clip-grad nan"   2 "for --clip-grad (not a finite number)" "$TMP/rs2" absent "$DINOC" train supervised --clip-grad nan --data "$TMP/noimages" -o "$TMP/rs2"
check "train supervised: --lr 1e39"         2 "for --lr (out of range)" "$TMP/rs3" absent "$DINOC" train supervised --lr 1e39 --data "$TMP/noimages" -o "$TMP/rs3"
check "train supervised: --seed -1"         2 "--seed -1"            "$TMP/rs4" absent "$DINOC" train supervised --seed -1 --data "$TMP/noimages" -o "$TMP/rs4"
check "train dino: --seed -1"               2 "--seed -1"            "$TMP/rd1" absent "$DINOC" train dino --seed -1 --data "$TMP/noimages" -o "$TMP/rd1"
check "train dinov2: --seed -1"             2 "--seed -1"            "$TMP/rd2" absent "$DINOC" train dinov2 --seed -1 --data "$TMP/noimages" -o "$TMP/rd2"
check "train clip: --seed -1"               2 "--seed -1"            "$TMP/rc6" absent "$DINOC" train clip --seed -1 --pairs "$TMP/notab.tsv" --preset tiny -o "$TMP/rc6"
check "train mlm: --seed -1"                2 "--seed -1"            "$TMP/rm2" absent "$DINOC" train mlm --seed -1 --text "$TMP/badcorpus.txt" -o "$TMP/rm2"
check "init: --seed -1"                     2 "--seed -1"            "$TMP/mneg" absent "$DINOC" init --seed -1 --depth 1 --image-size 28 -o "$TMP/mneg"
check "eval mlm: --seed -1"                 2 "--seed -1"            - absent "$DINOC" eval mlm --seed -1 --model "$TMP/nomodel"
check "data shapes: --seed ' -1'"           2 "--seed a non-negative integer" "$TMP/sh1" absent "$DINOC" data shapes -n 1 --seed " -1" -o "$TMP/sh1"
check "data shapes: --seed 2^64"            2 "--seed a non-negative integer" "$TMP/sh2" absent "$DINOC" data shapes -n 1 --seed 18446744073709551616 -o "$TMP/sh2"
check "attn: --index out of range"          2 "--index like"         "$TMP/a1.png" absent "$DINOC" attn -m "$M" --data fashion-mnist --index 99999999999999999999 -o "$TMP/a1.png"
check "attn: --index with a sign"           2 "--index like"         "$TMP/a2.png" absent "$DINOC" attn -m "$M" --data fashion-mnist --index +1 -o "$TMP/a2.png"

# ---- folder walks: a symbolic-link cycle lists each image once; a too-deep tree is an error
mkdir -p "$TMP/loop/sub" && cp "$TMP/ok.ppm" "$TMP/loop/" && ln -s .. "$TMP/loop/sub/up"
check "embed: symlink cycle walked once"    0 "loop.npy: 1 x 384"    - absent "$DINOC" embed -q -m "$M" -o "$TMP/loop.npy" "$TMP/loop"
deep=$TMP/deep; for i in $(seq 1 34); do deep=$deep/d$i; done
mkdir -p "$deep" && cp "$TMP/ok.ppm" "$deep/"
check "embed: folders nested too deep"      1 "nested deeper than 32" "$E" absent "$DINOC" embed -q -m "$M" -o "$E" "$TMP/deep"

# a valid run still works (the harness itself is sound)
check "embed: valid input succeeds"        0 "wrote"                 - absent "$DINOC" embed -q -m "$M" -o "$TMP/good.npy" "$TMP/ok.ppm"

[ $skipped -gt 0 ] && echo "    $skipped pending cases skipped (DINOC_TEST_PENDING=1 runs them; docs/hardening.md)" >&2
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
