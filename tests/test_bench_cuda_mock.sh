#!/usr/bin/env bash
# kv-bench-engine-cuda on the mock GPU (tests/cuda_mock.c) with a tiny synthetic model:
# every row of its table appears (prefill, decode, the skip + "largest that fits" path).
# Usage: test_bench_cuda_mock.sh BIN_DIR
set -u
bin="$1"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$bin/kv-synth" --shape tiny --dtype bf16 --layers 2 --out "$tmp/tiny" >/dev/null 2>&1 || { echo "synth failed" >&2; exit 1; }
# A pool too small for batch 32 at context 512: that row is skipped and 16 (what fits) runs.
"$bin/kv-bench-engine-cuda-mock" --model "$tmp/tiny" --batches 1,4,32 --contexts 64,512 --prefill 16,200 \
  --steps 3 --repeats 2 --gemm-size 64 --copy-mib 4 --kv-mib 2 >"$tmp/out" 2>"$tmp/err"
rc=$?
cat "$tmp/out"
fail=0
[ $rc -eq 0 ] || { echo "FAIL: exit $rc" >&2; cat "$tmp/err" >&2; fail=1; }
for row in "prefill | 16 tokens" "prefill | 200 tokens" "decode | batch 1, context 64 |" "decode | batch 4, context 512 |" \
           "decode | batch 32, context 64 |" "decode | batch 32, context 512 | skipped" "largest power of 2 that fits"; do
  grep -qF "$row" "$tmp/out" || { echo "FAIL: no row '$row'" >&2; fail=1; }
done
grep -q "failed" "$tmp/out" && { echo "FAIL: a row failed" >&2; fail=1; }
exit $fail
