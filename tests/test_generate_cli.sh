#!/usr/bin/env bash
# kvctl generate --local end to end: the reference text byte for byte, the same output for
# every prefill chunk size and without KV cache, and clear errors for bad models and flags.
# Usage: test_generate_cli.sh BIN_DIR MODELS_DIR
set -u
bin="$1/kvctl"
models="${KVSERVE_TEST_MODELS:-$2}"
model="$models/stories260K"
fail=0; checks=0
check() { checks=$((checks + 1)); if ! eval "$2"; then echo "FAIL: $1" >&2; fail=$((fail + 1)); fi; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# Errors that need no model files.
"$bin" generate --local --model "$tmp/nope" -- hi >/dev/null 2>"$tmp/err"; rc=$?
check "missing model dir exits 1" '[ $rc -eq 1 ] && grep -q "config.json" "$tmp/err"'
mkdir -p "$tmp/bad"; echo '{"architectures":["BertModel"],"hidden_size":4}' > "$tmp/bad/config.json"
"$bin" generate --local --model "$tmp/bad" -- hi >/dev/null 2>"$tmp/err"; rc=$?
check "unsupported architecture" '[ $rc -eq 1 ] && grep -q "unsupported architecture \"BertModel\"" "$tmp/err"'
for flags in "--max-tokens -3" "--temperature abc" "--top-p 0" "--top-p 1.5" "--prefill-chunk 0" "--bogus" "--max-tokens"; do
  "$bin" generate --local --model "$model" $flags -- hi >/dev/null 2>"$tmp/err"; rc=$?
  check "bad flag '$flags' exits 2 with a message" '[ $rc -eq 2 ] && [ -s "$tmp/err" ]'
done
"$bin" generate --local --model "$model" >/dev/null 2>"$tmp/err"; rc=$?
check "missing prompt exits 2" '[ $rc -eq 2 ] && grep -q PROMPT "$tmp/err"'

if [ ! -f "$model/config.json" ]; then
  echo "$checks checks, $fail failed; SKIP: shared models not found" >&2
  [ $fail -eq 0 ] && exit 77 || exit 1
fi

ref="$model/reference/once_upon_a_time.n256.txt"
"$bin" generate --local --model "$model" --max-tokens 252 -- "Once upon a time" >"$tmp/out" 2>"$tmp/err"; rc=$?
check "generate exits 0" '[ $rc -eq 0 ]'
check "timings on stderr" 'grep -q "ttft_ms=" "$tmp/err" && grep -q "decode_tok_s=" "$tmp/err"'
check "reference text byte for byte" '{ printf "Once upon a time"; cat "$tmp/out"; echo; } | cmp -s - "$ref"'
for c in 1 7 64; do
  "$bin" generate --local --model "$model" --max-tokens 252 --prefill-chunk $c -- "Once upon a time" >"$tmp/out$c" 2>/dev/null
  check "prefill chunk $c gives the same text" 'cmp -s "$tmp/out" "$tmp/out$c"'
done
"$bin" generate --local --model "$model" --max-tokens 252 --no-kv-cache -- "Once upon a time" >"$tmp/outnokv" 2>/dev/null
check "--no-kv-cache gives the same text" 'cmp -s "$tmp/out" "$tmp/outnokv"'
# Seeded sampling is reproducible; the context limit (512) stops generation with a message.
"$bin" generate --local --model "$model" --temperature 0.9 --top-p 0.9 --seed 5 --max-tokens 40 -- "Once" >"$tmp/s1" 2>/dev/null
"$bin" generate --local --model "$model" --temperature 0.9 --top-p 0.9 --seed 5 --max-tokens 40 -- "Once" >"$tmp/s2" 2>/dev/null
check "same seed, same text" 'cmp -s "$tmp/s1" "$tmp/s2" && [ -s "$tmp/s1" ]'
"$bin" generate --local --model "$model" --max-tokens 1000 --ignore-eos -- "Once upon a time" >/dev/null 2>"$tmp/err"; rc=$?
check "context full is reported" '[ $rc -eq 0 ] && grep -q "context full" "$tmp/err" && grep -q "finish=context_full" "$tmp/err"'
echo "$checks checks, $fail failed" >&2
[ $fail -eq 0 ]
