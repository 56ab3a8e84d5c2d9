#!/usr/bin/env bash
# Side by side: kvserve's CPU engine (kv-bench-engine) and llama.cpp (llama-bench) on the same
# GGUF files, run alternately, ROUNDS rounds, same thread count, prefill of 128 tokens (pp128)
# and 128 generated tokens (tg128). Prints per format the tok/s of each as min/median/max,
# the per-round ratio kvserve / llama.cpp, and the decode memory floor: weight bytes in their
# format plus KV bytes, over the read bandwidth kv-bench-engine measures in the same run.
# A benchmark, not a test: it asserts nothing; exit 77 when llama.cpp or the model is absent.
#
# usage: bench/vs-llamacpp.sh [ROUNDS=3] [THREADS=2] [FORMATS="f32 q8_0 q4_0 q4_1"]
# env:
#   LLAMA_CPP_DIR   llama-bench and llama-quantize (default /work/peers/llama.cpp/build/bin;
#                   bench/llamacpp-peer.sh says how to build one outside this repo)
#   KVSERVE_BUILD   kvserve build dir holding bin/kv-bench-engine (default: build)
#   KVSERVE_GGUF    the source GGUF (default SmolLM2-135M-Instruct.Q4_1.gguf under
#                   $KVSERVE_TEST_MODELS or ../shared/models)
#   KVSERVE_BENCH_DIR  where the other formats' GGUFs are written (default $KVSERVE_BUILD/bench-models)
#
# The formats other than the source's are made by `llama-quantize --allow-requantize` from the
# source GGUF (F32 is its exact dequantization; Q8_0 / Q4_0 are requantized from it, which
# costs quality, not speed), so both programs always read the same file. llama.cpp keeps its
# default f16 KV cache; kvserve's is f32 (at tg128 the KV bytes are under 5 % of SmolLM2's).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3} threads=${2:-2} formats=${3:-"f32 q8_0 q4_0 q4_1"}
lcpp=${LLAMA_CPP_DIR:-/work/peers/llama.cpp/build/bin}
build=${KVSERVE_BUILD:-$repo/build}
models=${KVSERVE_TEST_MODELS:-$repo/../shared/models}
src=${KVSERVE_GGUF:-$models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
outdir=${KVSERVE_BENCH_DIR:-$build/bench-models}

skip() { echo "vs-llamacpp: skipped: $*" >&2; exit 77; }
[ -x "$lcpp/llama-bench" ] && [ -x "$lcpp/llama-quantize" ] ||
  skip "no llama-bench / llama-quantize in $lcpp (set LLAMA_CPP_DIR; bench/llamacpp-peer.sh shows how to build them)"
[ -f "$src" ] || skip "no source GGUF $src (set KVSERVE_GGUF or KVSERVE_TEST_MODELS)"
kvb=$build/bin/kv-bench-engine
[ -x "$kvb" ] || { echo "vs-llamacpp: no $kvb (ninja -C $build kv-bench-engine, or set KVSERVE_BUILD)" >&2; exit 1; }
case "$rounds$threads" in *[!0-9]*) echo "usage: $0 [ROUNDS] [THREADS] [FORMATS]" >&2; exit 2 ;; esac
# OMP_WAIT_POLICY / GOMP_SPINCOUNT pass through from the caller: the engine's defaults are what
# is measured unless they are set (PASSIVE makes each of decode's ~200 barriers per token a
# futex sleep and wake: SmolLM2 Q4_1 decode fell from ~72 to ~26 tok/s in one trial). Both
# programs' decode collapses when other jobs hold the cores: read the load lines it prints.

src_type=$(basename "$src" .gguf | sed -n 's/.*\.\([A-Za-z0-9_]*\)$/\1/p' | tr 'A-Z' 'a-z')
gguf_for() { # FORMAT -> path of a GGUF in that format (written once)
  local f=$1 up
  if [ "$f" = "$src_type" ]; then echo "$src"; return; fi
  up=$(echo "$f" | tr 'a-z' 'A-Z')
  local out="$outdir/$(basename "$src" .gguf).from-$src_type.$up.gguf"
  if [ ! -f "$out" ]; then
    mkdir -p "$outdir"
    "$lcpp/llama-quantize" --allow-requantize "$src" "$out.tmp" "$up" "$threads" >"$out.log" 2>&1 ||
      { echo "vs-llamacpp: llama-quantize to $up failed, see $out.log" >&2; return 1; }
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
res=$tmp/results.tsv # format  phase  who  round  value
: >"$res"

run_kvserve() { # FORMAT FILE ROUND
  local log=$tmp/kv.$1.$3.log
  "$kvb" --model "$2" --prompt-len 128 --tokens 128 --no-kv-tokens 0 --threads "$threads" >"$log" 2>&1 ||
    { echo "vs-llamacpp: kv-bench-engine failed on $2:" >&2; tail -5 "$log" >&2; return 1; }
  awk -v f="$1" -v r="$3" -F'|' '
    /^weights:/ { sub(/^weights: /, ""); sub(/, loaded.*/, ""); print f "\tweights\tkv\t" r "\t\"" $0 "\"" }
    /decode \(KV cache/ { split($3, a, " "); print f "\ttg\tkv\t" r "\t" a[1] }
    /decode vs read-only bw/ { split($4, a, " "); print f "\tfloor\tkv\t" r "\t" a[1] }
    /^\| prefill/ { split($3, a, " "); print f "\tpp\tkv\t" r "\t" a[1] }
    /^machine:/ { match($0, /read [0-9.]+ GB\/s/); split(substr($0, RSTART, RLENGTH), a, " "); print f "\tread_gbs\tkv\t" r "\t" a[2] }
  ' "$log" >>"$res"
}

run_llama() { # FORMAT FILE ROUND
  local log=$tmp/ll.$1.$3.log
  "$lcpp/llama-bench" -m "$2" -t "$threads" -p 128 -n 128 -r 1 -o jsonl >"$log" 2>"$log.err" ||
    { echo "vs-llamacpp: llama-bench failed on $2:" >&2; tail -5 "$log.err" >&2; return 1; }
  sed -n 's/.*"n_prompt": \([0-9]*\), "n_gen": \([0-9]*\),.*"avg_ts": \([0-9.e+-]*\),.*/\1 \2 \3/p' "$log" |
    while read -r np ng ts; do
      if [ "$np" -gt 0 ]; then echo -e "$1\tpp\tll\t$3\t$ts"; else echo -e "$1\ttg\tll\t$3\t$ts"; fi
    done >>"$res"
}

declare -A file
for f in $formats; do file[$f]=$(gguf_for "$f"); done
echo "# kvserve $(basename "$kvb") vs llama.cpp $lcpp; $threads threads, $rounds rounds, source $(basename "$src"); $(date -u +%FT%TZ)" >&2
for r in $(seq 1 "$rounds"); do
  for f in $formats; do
    echo "# round $r $f; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
    if [ $((r % 2)) = 1 ]; then # alternate which goes first
      run_kvserve "$f" "${file[$f]}" "$r"; run_llama "$f" "${file[$f]}" "$r"
    else
      run_llama "$f" "${file[$f]}" "$r"; run_kvserve "$f" "${file[$f]}" "$r"
    fi
  done
done

# min/median/max of a column of numbers
mmm() { sort -g | awk '{ v[NR] = $1 } END { if (!NR) { print "-"; exit }
  m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3g / %.3g / %.3g", v[1], m, v[NR] }'; }
val() { awk -F'\t' -v f="$1" -v p="$2" -v w="$3" '$1 == f && $2 == p && $3 == w { print $5 }' "$res"; }
ratio() { # per round kvserve / llama.cpp
  awk -F'\t' -v f="$1" -v p="$2" '$1 == f && $2 == p { x[$3, $4] = $5; r[$4] = 1 }
    END { for (i in r) if (x["ll", i] > 0) print x["kv", i] / x["ll", i] }' "$res"; }
pct_floor() { # per round value / floor, in %
  awk -F'\t' -v f="$1" -v w="$2" '$1 == f && $2 == "tg" && $3 == w { t[$4] = $5 } $1 == f && $2 == "floor" { fl[$4] = $5 }
    END { for (i in t) if (fl[i] > 0) print 100 * t[i] / fl[i] }' "$res"; }

echo
echo "| format (weights as kvserve loads them) | phase | kvserve tok/s | llama.cpp tok/s | ratio | decode floor tok/s | kvserve % of floor | llama.cpp % of floor |"
echo "|---|---|---|---|---|---|---|---|"
for f in $formats; do
  w=$(awk -F'\t' -v f="$f" '$1 == f && $2 == "weights" { gsub(/"/, "", $5); print $5; exit }' "$res")
  echo "| $f: $w | pp128 | $(val "$f" pp kv | mmm) | $(val "$f" pp ll | mmm) | $(ratio "$f" pp | mmm) | | | |"
  echo "| $f | tg128 | $(val "$f" tg kv | mmm) | $(val "$f" tg ll | mmm) | $(ratio "$f" tg | mmm) |" \
       "$(val "$f" floor kv | mmm) | $(pct_floor "$f" kv | mmm) | $(pct_floor "$f" ll | mmm) |"
done
echo
echo "min / median / max over $rounds rounds; ratio = kvserve / llama.cpp of the same round. Floor: (weight bytes +"
echo "KV bytes at the mean context) / read bandwidth, as kv-bench-engine measures around its decode run" \
     "(read GB/s: $(awk -F'\t' '$2 == "read_gbs" { print $5 }' "$res" | mmm))."
