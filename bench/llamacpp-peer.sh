#!/usr/bin/env bash
# Speed peer: runs llama.cpp's llama-bench on a GGUF so kvserve numbers have an
# outside yardstick on the same machine. A benchmark, not a test; llama.cpp is
# never built into or vendored by this repo.
# usage: bench/llamacpp-peer.sh MODEL.gguf [THREADS=2] [extra llama-bench flags...]
# e.g.   bench/llamacpp-peer.sh ../shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf 2
# Without extra flags runs -p 128,512 -n 128 -r 3; extra flags replace that set (llama-bench
# appends list flags such as -p rather than overriding them).
# env LLAMACPP_DIR: directory holding llama-bench (default /work/peers/llama.cpp/build/bin).
set -euo pipefail
dir="${LLAMACPP_DIR:-/work/peers/llama.cpp/build/bin}"
if [ "$#" -lt 1 ]; then
  sed -n '5,9p' "$0" >&2
  exit 2
fi
model=$1 threads=${2:-2}
shift $(( $# >= 2 ? 2 : 1 ))
if [ ! -x "$dir/llama-bench" ]; then
  cat >&2 <<EOF
llama-bench not found in $dir (set LLAMACPP_DIR). To build a CPU-only llama.cpp outside this repo:
  git clone https://github.com/ggerganov/llama.cpp /work/peers/llama.cpp   # or: fetch github:ggerganov/llama.cpp, then
                                                                           # git --git-dir=MIRROR archive HEAD -- . ':(exclude)models/*.gguf' | tar -x -C /work/peers/llama.cpp
  cmake -S /work/peers/llama.cpp -B /work/peers/llama.cpp/build -G Ninja -DCMAKE_BUILD_TYPE=Release \\
        -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DGGML_CUDA=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF
  nice -n 15 ninja -C /work/peers/llama.cpp/build -j2 llama-bench llama-cli llama-quantize
EOF
  exit 1
fi
[ -f "$model" ] || { echo "no such model file: $model" >&2; exit 1; }
echo "== llama-bench $(basename "$model") -t $threads; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
[ "$#" -gt 0 ] || set -- -p 128,512 -n 128 -r 3
"$dir/llama-bench" -m "$model" -t "$threads" "$@"
