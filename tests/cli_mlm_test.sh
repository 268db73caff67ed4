#!/usr/bin/env bash
# cli_mlm_test.sh: end-to-end tests of `dinoc train mlm` and `dinoc eval mlm`: a tiny run on a small
# fortune-format file (run folder contents, metrics), resume to a longer schedule, --json of eval and
# its repeatability, the fortunes default folder, and errors with their exit codes (0 ok, 1 runtime
# error, 2 usage error). Run by scripts/test.sh with DINOC and PY set.
# Prints one line per check and "N passed, N failed" last; exits non-zero on any failure.
set -u
source "$(dirname "$0")/cli_lib.sh"
source "$(dirname "$0")/cli_lib.sh"
DINOC=${DINOC:-./build/dinoc}
DINOC=$(cd "$(dirname "$DINOC")" && pwd)/$(basename "$DINOC")
PY=${PY:-/usr/bin/python3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# 60 small entries in the fortune format, plus a paragraph file
for i in $(seq 1 60); do
    case $((i % 3)) in 0) echo "the cat sat on the mat number $i" ;; 1) echo "a dog ate a bone, then $i more" ;;
    *) echo "birds fly south in winter $i times" ;; esac
    echo "%"
done >"$TMP/corpus"
printf 'the cat sat on the mat\nthen a dog\n\nbirds fly south in winter\n' >"$TMP/para.txt"
printf 'words never seen\n' >"$TMP/unseen.txt"
TINY="--dim 32 --layers 1 --heads 2 --ffn 64 --ctx 16 --batch 4 --warmup 2 --ckpt-every 3"

expect_rc "train mlm: tiny run (stopped at 6 of 9 steps)" 0 "$DINOC" train mlm --text "$TMP/corpus" -o "$TMP/run" $TINY --steps 9 --max-steps 6
expect_json "summary JSON: 6 steps, accuracies in [0, 1]" \
    "j['steps'] == 6 and 0 <= j['accuracy'] <= 1 and 0 <= j['unigram_accuracy'] <= 1 and j['masked'] > 0 and j['perplexity'] > 1"
for f in config.json model.safetensors mlm_vocab.json checkpoint.safetensors log.jsonl metrics.json; do
    [ -s "$TMP/run/$f" ] && ok "run folder has $f" || bad "run folder has $f"
done
[ "$(wc -l <"$TMP/run/log.jsonl")" = 6 ] && ok "log.jsonl: one line per step" || bad "log.jsonl: one line per step"
grep -q '"model_type":[[:space:]]*"bert"' "$TMP/run/config.json" && ok "config.json is a BERT config" || bad "config.json is a BERT config"

expect_rc "resume to the schedule's 9 steps" 0 "$DINOC" train mlm --resume "$TMP/run"
expect_json "resumed run reached step 9" "j['steps'] == 9"
[ "$(wc -l <"$TMP/run/log.jsonl")" = 9 ] && ok "resumed log: 9 lines" || bad "resumed log: 9 lines"

expect_rc "eval mlm --json" 0 "$DINOC" eval mlm -m "$TMP/run" --text "$TMP/corpus" --json
expect_json "eval JSON fields" \
    "j['masked'] > 0 and 0 <= j['accuracy'] <= 1 and j['perplexity'] > 1 and 0 <= j['unigram_accuracy'] <= 1 and j['unigram_perplexity'] > 1"
cp "$TMP/out" "$TMP/eval1"
expect_rc "eval mlm again, other batch size" 0 "$DINOC" eval mlm -m "$TMP/run" --text "$TMP/corpus" --json -b 3
cmp -s "$TMP/out" "$TMP/eval1" && ok "eval repeats for a seed whatever the batch" || bad "eval repeats for a seed whatever the batch"
expect_rc "eval mlm text output" 0 "$DINOC" eval mlm -m "$TMP/run" --text "$TMP/corpus"
grep -q "unigram: accuracy" "$TMP/out" && ok "text output shows the baseline" || bad "text output shows the baseline"
# the training text with another held-out split would score entries the run trained on
expect_rc "eval mlm: the run's text with --holdout 0 is refused" 1 "$DINOC" eval mlm -m "$TMP/run" --text "$TMP/corpus" --holdout 0
expect_err "names the run's split" "held out one text entry in 10"
expect_rc "paragraph file, all of it" 0 "$DINOC" eval mlm -m "$TMP/run" --text "$TMP/para.txt" --holdout 0 --json
expect_json "paragraphs: 2 sequences" "j['sequences'] == 2 and j['masked'] > 0"
expect_rc "text of unseen words only" 1 "$DINOC" eval mlm -m "$TMP/run" --text "$TMP/unseen.txt" --holdout 0
expect_err "nothing to mask" "no maskable tokens"

# the default corpus: the fortunes folder (a small copy keeps it fast)
mkdir -p "$TMP/fort" && cp "$TMP/corpus" "$TMP/fort/cookie" && printf 'x' >"$TMP/fort/cookie.dat"
expect_rc "default corpus from --fortunes-dir" 0 "$DINOC" train mlm --fortunes-dir "$TMP/fort" -o "$TMP/run2" $TINY --steps 2 --no-eval
expect_json "no eval: nothing masked" "j['steps'] == 2 and j['masked'] == 0"

expect_rc "unknown option" 2 "$DINOC" train mlm --nope
expect_rc "eval without --model" 2 "$DINOC" eval mlm --text "$TMP/corpus"
expect_rc "missing text file" 1 "$DINOC" train mlm --text "$TMP/nothing.txt" -o "$TMP/run3" $TINY --steps 1
expect_err "error names the file" "nothing.txt"
expect_rc "batch larger than the text" 1 "$DINOC" train mlm --text "$TMP/para.txt" -o "$TMP/run3" $TINY --steps 1
expect_err "error names the sequence count" "sequences"
expect_rc "eval of a folder without mlm_vocab.json" 1 "$DINOC" eval mlm -m "$TMP/fort" --text "$TMP/corpus"
expect_rc "--help" 0 "$DINOC" train mlm --help
grep -q -- "--time-budget" "$TMP/out" && ok "help lists --time-budget" || bad "help lists --time-budget"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
