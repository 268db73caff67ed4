#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]: builds the libFuzzer targets of tests/fuzz/ with
# clang + ASan + UBSan and runs each for SECONDS_PER_TARGET (default 10) seconds.
#   scripts/fuzz.sh                      every target, 10 s each
#   scripts/fuzz.sh 3600 fuzz_config     a one-hour campaign on one target
# Targets: fuzz_safetensors fuzz_config fuzz_preprocess_config fuzz_image fuzz_weights_index fuzz_idx fuzz_tokenizer,
# fuzz_pairs fuzz_textfiles fuzz_clip_index fuzz_model_config.
# Seeds come from tests/fuzz/corpus/<target>/ and are copied into build-fuzz/corpus/<target>/,
# which keeps growing across runs (the repo is never written). Crashes, leaks, timeouts and
# out-of-memory inputs land in build-fuzz/artifacts/<target>/; reproduce one with
#   build-fuzz/<target> build-fuzz/artifacts/<target>/crash-...
# Environment: CLANG (default clang), FUZZ_JOBS (targets run at once, default 1), FUZZ_BUILD
# (default build-fuzz), FUZZ_ARGS (extra libFuzzer flags). Exits non-zero if any target found
# something or failed to build; prints the executions of each target and a summary line last.
set -uo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
shift $(( $# > 0 ? 1 : 0 ))
ALL=(fuzz_safetensors fuzz_config fuzz_preprocess_config fuzz_image fuzz_weights_index fuzz_idx fuzz_tokenizer
     fuzz_pairs fuzz_textfiles fuzz_clip_index fuzz_model_config)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")
CLANG=${CLANG:-clang}
B=${FUZZ_BUILD:-build-fuzz}
JOBS=${FUZZ_JOBS:-1}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
# No OpenMP and no BLAS: the parsers are single-threaded and the reference loops are simpler to
# instrument. -O1 -g as libFuzzer's docs suggest.
CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -Wall -Wno-unused-parameter -Wno-unknown-pragmas $SAN"
LIBS="-lcjson -lstb -ljpeg -lz -lm -lpthread"

# Per-target input size caps (bytes) and dictionaries.
max_len() {
    case $1 in
        fuzz_image) echo 32768 ;;
        fuzz_safetensors) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

mkdir -p "$B/lib" "$B/corpus" "$B/artifacts" "$B/logs"

# ---- build: library objects once (rebuilt when a source or header is newer), then each target
hdrs=$(ls include/*.h src/*.h src/*/*.h 2>/dev/null)
objs=()
for src in src/*/*.c; do objs+=("$B/lib/$(echo "$src" | tr / _).o"); done
# (library warnings are the library's business: the normal build has -Werror; -w here)
for src in src/*/*.c; do
    obj="$B/lib/$(echo "$src" | tr / _).o"
    stale=0
    [ -f "$obj" ] || stale=1
    if [ $stale = 0 ]; then
        for dep in "$src" $hdrs; do [ "$dep" -nt "$obj" ] && { stale=1; break; }; done
    fi
    if [ $stale = 1 ]; then echo "$src $obj"; fi
done | xargs -r -P "$(nproc)" -n 2 sh -c "$CLANG $CFLAGS -w -fsanitize=fuzzer-no-link -c \"\$0\" -o \"\$1\" || exit 255"
if [ $? != 0 ]; then
    echo "error: library build failed"
    echo "0 passed, ${#TARGETS[@]} failed"
    exit 1
fi
# An archive, so that only the objects a target needs are linked (and their libraries).
rm -f "$B/libdinoc-fuzz.a" && ar rcs "$B/libdinoc-fuzz.a" "${objs[@]}"
for t in "${TARGETS[@]}"; do
    if [ ! -f "tests/fuzz/$t.c" ]; then echo "error: no tests/fuzz/$t.c" >&2; exit 2; fi
    # fuzz_image compiles stb_image's implementation into the harness (for coverage); stb 2.27's PNG
    # reader adds offset 0 to a null pointer on a zero-length IDAT chunk (z->idata + 0 before any
    # allocation), then memcpy(NULL, p, 0): nothing is read or written. That benign UB in stb is not checked
    # there; our own code keeps the pointer-overflow check (finding F15 in docs/hardening.md).
    extra=""
    [ "$t" = fuzz_image ] && extra="-fno-sanitize=pointer-overflow,nonnull-attribute"
    if ! $CLANG $CFLAGS $extra -fsanitize=fuzzer "tests/fuzz/$t.c" "$B/libdinoc-fuzz.a" $LIBS -o "$B/$t"; then
        echo "error: $t does not build"
        echo "0 passed, ${#TARGETS[@]} failed"
        exit 1
    fi
done

# A dictionary of the tokens of JSON and of these formats: mutations find keys much sooner.
cat > "$B/json.dict" <<'DICT'
"{"
"}"
"["
"]"
":"
","
"\""
"true"
"false"
"null"
"-1"
"0"
"1e309"
"4294967296"
"9007199254740993"
"\\u0000"
"\\ud800"
"\"dtype\""
"\"shape\""
"\"data_offsets\""
"\"__metadata__\""
"\"F32\""
"\"F16\""
"\"BF16\""
"\"F64\""
"\"I64\""
"\"U8\""
"\"BOOL\""
"\"F8_E4M3\""
"\"weight_map\""
"\"metadata\""
"\"model.safetensors\""
"\"model-00001-of-00002.safetensors\""
"\"model-00002-of-00002.safetensors\""
"\"a.weight\""
"\"a.bias\""
"\"b.weight\""
"\"model_type\""
"\"dinov2\""
"\"dinov2_with_registers\""
"\"vit\""
"\"hidden_size\""
"\"num_hidden_layers\""
"\"num_attention_heads\""
"\"mlp_ratio\""
"\"intermediate_size\""
"\"hidden_act\""
"\"gelu\""
"\"layer_norm_eps\""
"\"image_size\""
"\"patch_size\""
"\"num_channels\""
"\"qkv_bias\""
"\"layerscale_value\""
"\"use_swiglu_ffn\""
"\"num_register_tokens\""
"\"use_mask_token\""
"\"architectures\""
"\"size\""
"\"shortest_edge\""
"\"height\""
"\"width\""
"\"crop_size\""
"\"resample\""
"\"do_resize\""
"\"do_center_crop\""
"\"do_rescale\""
"\"rescale_factor\""
"\"do_normalize\""
"\"image_mean\""
"\"image_std\""
"\"do_convert_rgb\""
"\"image_processor_type\""
"\"BitImageProcessor\""
"\"ViTImageProcessor\""
"\"CLIPImageProcessor\""
"\"vocab_size\""
"\"max_position_embeddings\""
"\"type_vocab_size\""
"\"projection_dim\""
"\"num_channels\""
"\"quick_gelu\""
"\"bert\""
"\"clip\""
"\"clip_text_model\""
"\"text_config\""
"\"vision_config\""
"\"position_embedding_type\""
"\"absolute\""
"\"pad_token_id\""
"\"eos_token_id\""
"\"resnet\""
"\"embedding_size\""
"\"hidden_sizes\""
"\"depths\""
"\"layer_type\""
"\"basic\""
"\"bottleneck\""
"\"downsample_in_first_stage\""
"\"dinoc-clip-index\""
"\"embed_dim\""
"\"paths\""
"\"captions\""
"\"image_embeds\""
"\"text_embeds\""
"\"pairs\""
"\"probe\""
"\"I32\""
"\x09"
"{}"
DICT
cat > "$B/image.dict" <<'DICT'
"\x89PNG\x0d\x0a\x1a\x0a"
"IHDR"
"IDAT"
"IEND"
"PLTE"
"tRNS"
"\xff\xd8\xff"
"\xff\xc0"
"\xff\xc2"
"\xff\xc4"
"\xff\xda"
"\xff\xdb"
"\xff\xdd"
"\xff\xd9"
"BM"
"P5"
"P6"
"255"
"GIF89a"
"GIF87a"
DICT

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0:detect_stack_use_after_return=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

run_one() {
    local t=$1 dict=$B/json.dict
    [ "$t" = fuzz_image ] && dict=$B/image.dict
    mkdir -p "$B/corpus/$t" "$B/artifacts/$t"
    [ -d "tests/fuzz/corpus/$t" ] && cp -n tests/fuzz/corpus/"$t"/* "$B/corpus/$t/" 2>/dev/null
    "$B/$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=4096 -malloc_limit_mb=2048 \
        -max_len="$(max_len "$t")" -dict="$dict" -print_final_stats=1 \
        -artifact_prefix="$B/artifacts/$t/" ${FUZZ_ARGS:-} "$B/corpus/$t" > "$B/logs/$t.log" 2>&1
    echo $? > "$B/logs/$t.rc"
}

echo "fuzzing ${TARGETS[*]} for ${SECS}s each ($JOBS at a time); logs in $B/logs" >&2
running=0
for t in "${TARGETS[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ $running -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait

passed=0 failed=0
for t in "${TARGETS[@]}"; do
    rc=$(cat "$B/logs/$t.rc" 2>/dev/null || echo 99)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$B/logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$B/logs/$t.log" | tail -1)
    if [ "$rc" = 0 ]; then
        passed=$((passed + 1))
        printf '[  OK  ] %-24s %12s executions, %s, corpus %s files\n' "$t" "${execs:-?}" "${cov:-cov: ?}" \
            "$(ls "$B/corpus/$t" | wc -l)"
    else
        failed=$((failed + 1))
        printf '[ FAIL ] %-24s %12s executions, exit %s; see %s\n' "$t" "${execs:-?}" "$rc" "$B/logs/$t.log"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|artifact_prefix|Test unit written)' "$B/logs/$t.log" \
            | head -8 | sed 's/^/    /'
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
