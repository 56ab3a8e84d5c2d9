#!/usr/bin/env bash
# One go on a GPU machine: show the GPU, build Release with the CUDA backend, run the GPU
# tests (ctest -L gpu), run kv-bench-cuda, and end with a summary table. Exit status is 0
# only when the build, the tests and the benchmark all succeeded. Takes a few minutes on an
# H100 box with 16 cores. Build directory: $KVSERVE_GPU_BUILD (default build-gpu).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KVSERVE_ROOT"

build="${KVSERVE_GPU_BUILD:-build-gpu}"
jobs="$(nproc)"
mkdir -p "$build"
logs="$build/gpu-check"
mkdir -p "$logs"
t_all=$(date +%s)
elapsed() { echo $(( $(date +%s) - $1 )); }

echo "== GPU"
if ! gpu_line="$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1)"; then
  echo "gpu-check: nvidia-smi failed, no usable GPU here: $gpu_line" >&2
  exit 1
fi
echo "$gpu_line"
if ! command -v nvcc >/dev/null 2>&1; then
  echo "gpu-check: nvcc not found (install the CUDA toolkit or put /usr/local/cuda/bin on PATH)" >&2
  exit 1
fi

# Missing Debian packages only (no-op when all are there); a failure here shows up at configure.
timeout 180 bash scripts/install-deps.sh || echo "gpu-check: install-deps failed, trying the build anyway" >&2

echo "== configure + build (Release, KVSERVE_CUDA=ON, $jobs jobs)"
t=$(date +%s)
build_status=ok
if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVSERVE_CUDA=ON >"$logs/configure.log" 2>&1; then
  tail -30 "$logs/configure.log"
  echo "gpu-check: configure failed (log: $logs/configure.log)" >&2
  exit 1
fi
if ! ninja -C "$build" -j "$jobs" >"$logs/build.log" 2>&1; then
  grep -E "error|FAILED" "$logs/build.log" | head -20
  # Someone else's target may be broken: still check the GPU pieces so the GPU time counts.
  build_status="FAILED (all); GPU targets only"
  if ! ninja -C "$build" -j "$jobs" test_cuda_kernels kv-bench-cuda >>"$logs/build.log" 2>&1; then
    tail -30 "$logs/build.log"
    echo "gpu-check: the CUDA targets do not build (log: $logs/build.log)" >&2
    exit 1
  fi
fi
t_build=$(elapsed "$t")
echo "build: $build_status in ${t_build}s"

echo "== ctest -L gpu"
t=$(date +%s)
(cd "$build" && ctest -L gpu --output-on-failure --timeout 300) 2>&1 | tee "$logs/ctest.log"
test_rc=${PIPESTATUS[0]}
t_test=$(elapsed "$t")

echo "== kv-bench-cuda"
t=$(date +%s)
timeout 240 "$build/bin/kv-bench-cuda" 2>&1 | tee "$logs/bench.log"
bench_rc=${PIPESTATUS[0]}
t_bench=$(elapsed "$t")

tests_line="$(grep -E "tests passed|tests failed" "$logs/ctest.log" | tail -1)"
[ -n "$tests_line" ] || tests_line="no result (see $logs/ctest.log)"
# On a GPU machine a skipped GPU test means it did not see the GPU: count it as a failure.
skipped="$(grep -c '\*\*\*Skipped' "$logs/ctest.log" || true)"
[ "$skipped" -eq 0 ] || test_rc=1
echo
echo "================ gpu-check summary ================"
printf "%-10s %s\n" "gpu" "$gpu_line"
printf "%-10s %-44s %5ss\n" "build" "$build_status" "$t_build"
printf "%-10s %-44s %5ss\n" "gpu tests" "$([ "$test_rc" -eq 0 ] && echo ok || echo FAILED): $tests_line, $skipped skipped" "$t_test"
printf "%-10s %-44s %5ss\n" "bench" "$([ "$bench_rc" -eq 0 ] && echo ok || echo "FAILED (rc $bench_rc)")" "$t_bench"
grep -E "^(copy|gemm|prefill attn bf16 seq=8192|decode attn bf16 batch=(1|64) ctx=8192)" "$logs/bench.log" | sed 's/^/  /'
printf "%-10s %ss\n" "total" "$(elapsed "$t_all")"
[ "$build_status" = ok ] && [ "$test_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
