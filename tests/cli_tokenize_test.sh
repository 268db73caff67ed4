#!/usr/bin/env bash
# cli_tokenize_test.sh: end-to-end tests of `dinoc tokenize`: the reference's ids (A.6), padding and
# truncation at --context, --raw, --tokens, --json (one object per line), stdin ('-'), --decode,
# the vocabulary search ($DINOC_VOCAB, --vocab, data/ beside the build folder, whatever the working
# folder), and errors with their exit codes (0 ok, 1 runtime error, 2 usage error).
# Run by scripts/test.sh with DINOC and PY set.
# Prints one line per check and "N passed, N failed" last; exits non-zero on any failure.
set -u
source "$(dirname "$0")/cli_lib.sh"
DINOC=${DINOC:-./build/dinoc}
DINOC=$(cd "$(dirname "$DINOC")" && pwd)/$(basename "$DINOC")
PY=${PY:-/usr/bin/python3}


expect_rc "tokenize two texts" 0 "$DINOC" tokenize "a photo of a cat" "Hello, World!!"
expect_out "ids as clip.tokenize (A.6)" "49406 320 1125 539 320 2368 49407
49406 3306 267 1002 748 49407"
expect_rc "digits, html, non-ASCII" 0 "$DINOC" tokenize --raw "2025" "&amp; html" "corazón" "it's a photo of the big dog's toy."
expect_out "raw ids (A.6)" "273 271 273 276
261 18231
851 854 13926
585 568 320 1125 539 518 1205 1929 568 5988 269"
expect_rc "--pad to a context of 8" 0 "$DINOC" tokenize --pad -c 8 "a dog"
expect_out "zero padding" "49406 320 1929 49407 0 0 0 0"
expect_rc "too long for the context" 1 "$DINOC" tokenize -c 4 "a photo of a cat"
expect_err "error says how many tokens" "7 tokens"
expect_rc "--truncate" 0 "$DINOC" tokenize -c 4 --truncate "a photo of a cat"
expect_out "truncated: last id is <|endoftext|>" "49406 320 1125 49407"
expect_rc "--tokens" 0 "$DINOC" tokenize --tokens "my dog"
expect_out "spellings" "<|startoftext|> my</w> dog</w> <|endoftext|>"
expect_rc "empty and whitespace-only texts" 0 "$DINOC" tokenize "" "  	 "
expect_out "only start/end" "49406 49407
49406 49407"
expect_rc "--json" 0 "$DINOC" tokenize --json --pad -c 6 "a cat" 'say "hi"'
if $PY -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 2 and rows[0] == {'text': 'a cat', 'ids': [49406, 320, 2368, 49407, 0, 0], 'n': 4}
assert rows[1]['text'] == 'say \"hi\"' and len(rows[1]['ids']) == 6
" "$TMP/out" 2>/dev/null; then ok "JSON lines: text, ids, n"; else bad "JSON lines: text, ids, n"; cat "$TMP/out" >&2; fi
printf 'a dog\n\nhello world\n' > "$TMP/lines.txt"
expect_rc "stdin lines" 0 sh -c "\"$DINOC\" tokenize - < \"$TMP/lines.txt\""
expect_out "one line per stdin line" "49406 320 1929 49407
49406 49407
49406 3306 1002 49407"
expect_rc "--decode" 0 "$DINOC" tokenize --decode 49406 320 1125 539 320 2368 49407
expect_out "decoded text" "<|startoftext|>a photo of a cat <|endoftext|>"
expect_rc "--decode from stdin" 0 sh -c "printf '320 1929\n3306, 1002\n' | \"$DINOC\" tokenize --decode -"
expect_out "decoded lines" "a dog 
hello world "
expect_rc "--decode an id outside the vocabulary" 1 "$DINOC" tokenize --decode 320 49408
expect_err "error names the id" "49408"
expect_rc "--decode a non-number" 1 "$DINOC" tokenize --decode 320 cat
expect_err "error names the argument" "'cat'"
printf 'ab\x80\n' > "$TMP/bad.txt"
expect_rc "invalid UTF-8 on stdin" 1 sh -c "\"$DINOC\" tokenize - < \"$TMP/bad.txt\""
expect_err "error names the byte" "invalid UTF-8 at byte 2"

# the vocabulary search
VOCAB=$(cd "$(dirname "$DINOC")/.." && pwd)/data/bpe_simple_vocab_16e6.txt.gz
expect_rc "found from another working folder" 0 sh -c "cd \"$TMP\" && \"$DINOC\" tokenize 'a cat'"
expect_out "same ids from elsewhere" "49406 320 2368 49407"
expect_rc "--vocab" 0 "$DINOC" tokenize --vocab "$VOCAB" "a cat"
expect_rc "--vocab missing file" 1 "$DINOC" tokenize --vocab "$TMP/nope.gz" "a cat"
expect_err "error names the file" "$TMP/nope.gz"
expect_rc "\$DINOC_VOCAB missing file" 1 env DINOC_VOCAB="$TMP/nope2.gz" "$DINOC" tokenize "a cat"
expect_err "error names \$DINOC_VOCAB" "DINOC_VOCAB"
cp "$VOCAB" "$TMP/v.gz"
expect_rc "\$DINOC_VOCAB" 0 env DINOC_VOCAB="$TMP/v.gz" "$DINOC" tokenize "a cat"
head -c 1000 "$VOCAB" > "$TMP/trunc.gz"
expect_rc "a truncated vocabulary" 1 "$DINOC" tokenize --vocab "$TMP/trunc.gz" "a cat"
expect_err "error says gzip" "gzip"

# usage errors
expect_rc "no text" 2 "$DINOC" tokenize
expect_rc "unknown option" 2 "$DINOC" tokenize --nope "a"
expect_rc "--context 0" 2 "$DINOC" tokenize -c 0 "a"
expect_rc "--pad with --raw" 2 "$DINOC" tokenize --pad --raw "a"
expect_rc "--help" 0 "$DINOC" tokenize --help
grep -q -- "--truncate" "$TMP/out" && ok "help lists --truncate" || bad "help lists --truncate"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
