#!/usr/bin/env bash
# One command on a GPU machine (CUDA toolkit, CMake, ninja, a C compiler; no apt, no network,
# none of the service libraries needed): prints the GPU and toolchain, builds the GPU-only
# configuration (engine, kernels, GPU tests, benchmarks), runs the GPU tests, then, when
# .gpu-bundle holds the service built elsewhere (scripts/gpu-bundle.sh), the worker pair and
# cluster tests with the workers on the GPU (KV over cuda-ipc), writes a synthetic bf16
# model, runs the engine benchmark, kv-bench-cuda, kv-bench-transport (the cuda-ipc / nccl
# KV transports between two processes) and the PyTorch reference, and prints a summary
# table LAST. Fits one 10-minute command on an H100 (stages report their time; optional
# ones are dropped when the budget runs short).
#
# usage: scripts/gpu-check.sh [--quick] [--bench-only] [--tests-only] [--shape NAME]
#   --quick       benchmark a TinyLlama-1.1B-shaped model (2.2 GB) instead of Llama-3-8B (16 GB)
#   --bench-only  no GPU tests (the model, the benchmarks)
#   --tests-only  build and GPU tests only
#   --shape NAME  any kv-synth shape (llama3-8b, tinyllama-1.1b, llama2-7b, ...)
# Environment: OUT (full logs land there: 8 files at most), KVSERVE_TEST_MODELS (the shared
# test models; also found in ./.gpu-models or ./shared/models), KVSERVE_GPU_BUILD (build
# dir, default build-gpu), KVSERVE_SYNTH_DIR (default /tmp/kvserve-models), BUDGET_S (540).
# Exit status 0 only when the build, every GPU test and every benchmark that ran succeeded.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
cd "$KVSERVE_ROOT"

shape=llama3-8b tests=1 benches=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) shape=tinyllama-1.1b ;;
    --bench-only) tests=0 ;;
    --tests-only) benches=0 ;;
    --shape) shift; shape="${1:?--shape needs a name}" ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

build="${KVSERVE_GPU_BUILD:-build-gpu}"
logs="${OUT:-$build/gpu-check}"
mkdir -p "$logs"
budget="${BUDGET_S:-540}"
synth_root="${KVSERVE_SYNTH_DIR:-/tmp/kvserve-models}"
t_all=$(date +%s)
now() { echo $(( $(date +%s) - t_all )); }
stage() { echo; echo "== [$(now)s] $*"; }
declare -a summary=()
status=0
note() { summary+=("$(printf '%-8s %s' "$1" "$2")"); }

# The shared test models (stories260K + README.md) do not travel with the repository:
# carry them as .gpu-models (see the report of the CUDA engine work), or set the variable.
for d in "${KVSERVE_TEST_MODELS:-}" "$KVSERVE_ROOT/.gpu-models" "$KVSERVE_ROOT/shared/models" "$KVSERVE_ROOT/../shared/models"; do
  if [ -n "$d" ] && [ -f "$d/README.md" ]; then export KVSERVE_TEST_MODELS="$d"; break; fi
done

stage "machine and toolchain"
{
  nvidia-smi 2>&1 | head -20
  echo "--"
  command -v nvcc >/dev/null && nvcc --version | tail -2 || echo "nvcc: not found"
  cmake --version | head -1
  echo "ninja $(ninja --version 2>/dev/null || echo missing)"
  cc --version | head -1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1
  echo "cores $(nproc); $(free -g | awk '/Mem:/ {print $2 " GiB RAM"}'); /tmp: $(df -h /tmp | awk 'NR==2 {print $4 " free"}')"
  echo "test models: ${KVSERVE_TEST_MODELS:-none} $([ -f "${KVSERVE_TEST_MODELS:-/x}/stories260K/config.json" ] && echo '(stories260K found)' || echo '(stories260K MISSING: engine tests will skip)')"
} 2>&1 | tee "$logs/build.log"
gpu_line="$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -1)"
[ -n "$gpu_line" ] || { echo "gpu-check: nvidia-smi sees no GPU" >&2; gpu_line="none"; }
note gpu "$gpu_line"

stage "configure + build ($build: Release, GPU-only, -j$(nproc))"
t=$(date +%s)
cuda_cc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
# NCCL: the toolkit's, or PyTorch's wheel (nvidia-nccl); the header to build, the library to dlopen.
nccl_args=()
if [ ! -f "$(dirname "$cuda_cc")/../include/nccl.h" ]; then
  nccl_root="$(python3 -c 'import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])' 2>/dev/null)"
  if [ -n "$nccl_root" ] && [ -f "$nccl_root/include/nccl.h" ]; then
    nccl_args=(-DNCCL_INCLUDE_DIR="$nccl_root/include")
    [ -f "$nccl_root/lib/libnccl.so.2" ] && export KVSERVE_NCCL_LIB="${KVSERVE_NCCL_LIB:-$nccl_root/lib/libnccl.so.2}"
  fi
fi
if cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVSERVE_GPU_ONLY=ON -DKVSERVE_WERROR=OFF \
     -DCMAKE_CUDA_COMPILER="$cuda_cc" "${nccl_args[@]}" >>"$logs/build.log" 2>&1 &&
   ninja -C "$build" -j "$(nproc)" >>"$logs/build.log" 2>&1; then
  note build "ok in $(( $(date +%s) - t ))s ($(grep -c warning "$logs/build.log") warning lines)"
  echo "build ok"
else
  grep -E "error|FAILED|Error" "$logs/build.log" | head -30
  note build "FAILED (see build.log)"
  printf '%s\n' "" "================ gpu-check summary ================" "${summary[@]}"
  exit 1
fi
bin="$build/bin"

if [ "$tests" = 1 ]; then
  stage "GPU tests: ctest -L gpu"
  # Among them test_cuda_kv_quant: the int8/int4/int2 KV kernels (seal a block, decode
  # attention over codes + f32 window) against kq_quantize_block / kq_attend_one.
  t=$(date +%s)
  (cd "$build" && ctest -L gpu --output-on-failure --timeout 420) >"$logs/ctest.log" 2>&1
  rc=$?
  grep -vE "^ *ts=" "$logs/ctest.log" | grep -E "logits|greedy|batched|synth|checks,|CHECK failed|Test +#|tests passed|tests failed" | head -60
  # A skipped GPU test on a GPU machine did not see the GPU (or the models): a failure here.
  while read -r line; do
    name="$(echo "$line" | sed -E 's/.*Test +#[0-9]+: ([^ ]+) .*/\1/')"
    verdict="$(echo "$line" | grep -oE 'Passed|\*\*\*Failed|\*\*\*Skipped|\*\*\*Timeout|\*\*\*Exception[^0-9]*' | head -1 | tr -d '*')"
    secs="$(echo "$line" | grep -oE '[0-9.]+ sec' | tail -1)"
    note test "$(printf '%-22s %-8s %s' "$name" "$verdict" "$secs")"
    [ "$verdict" = Passed ] || status=1
  done < <(grep -E "Test +#[0-9]+: " "$logs/ctest.log")
  [ $rc -eq 0 ] || status=1
  echo "tests: $(( $(date +%s) - t ))s"
fi

# The service's own tests with the workers on the GPU, from binaries built on a machine
# that has its libraries (this one has no libzmq / protobuf-c): CUDA's libraries from here.
if [ "$tests" = 1 ] && [ -f .gpu-bundle/bundle.tar.xz ]; then
  stage "service on the GPU: worker pair + cluster, KV over cuda-ipc (.gpu-bundle)"
  t=$(date +%s)
  sdir="$(mktemp -d)"
  tar -xJf .gpu-bundle/bundle.tar.xz -C "$sdir"
  libpath="$sdir/lib"
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
           $(python3 -c 'import glob, site; [print(f.rsplit("/", 1)[0]) for p in site.getsitepackages() for f in glob.glob(p + "/nvidia/**/libcublas.so.13", recursive=True)]' 2>/dev/null); do
    [ -f "$d/libcublas.so.13" ] && libpath="$libpath:$d"
  done
  svc=(env LD_LIBRARY_PATH="$libpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" KV_TEST_BIN_DIR="$sdir/bin"
       KV_TEST_EXPECT_TRANSPORT=cuda-ipc)
  missing="$("${svc[@]}" ldd "$sdir/bin/kv-decode" | grep "not found" | tr -s ' \t\n' ' ')"
  if [ -n "$missing" ]; then
    note service "FAILED: libraries not found: $missing"
    status=1
  else
    for run in test_workers_pair test_cluster; do
      if [ $run = test_workers_pair ]; then
        "${svc[@]}" KV_TEST_WORKER_DEVICE=cuda:0 timeout 240 "$sdir/bin/test_workers_pair" >"$logs/service.log" 2>&1
      else
        "${svc[@]}" KV_TEST_PREFILL_ARGS="--device cuda:0 --precision f32" \
          KV_TEST_DECODE_ARGS="--device cuda:0 --precision f32" KV_CLUSTER_ONLY=1p1d,2p2d,kill-decode,corrupt-kv,no-transport,fuzz \
          timeout 240 "$sdir/bin/test_cluster" >>"$logs/service.log" 2>&1
      fi
      rc=$?
      verdict="$(grep -E "^[0-9]+ checks, [0-9]+ failed" "$logs/service.log" | tail -1)"
      [ $rc -eq 0 ] || status=1
      note service "$(printf '%-22s %-8s %s' "$run" "$([ $rc -eq 0 ] && echo Passed || echo "FAILED($rc)")" "$verdict")"
    done
    grep -vE "^ *ts=" "$logs/service.log" | grep -E "scenario|CHECK failed|checks," | head -30
  fi
  rm -rf "$sdir"
  echo "service: $(( $(date +%s) - t ))s"
fi

if [ "$benches" = 1 ]; then
  model="$synth_root/$shape-bf16"
  : >"$logs/bench_engine.log"
  stage "synthetic model $shape (bf16) in $model"
  t=$(date +%s)
  if [ -f "$model/config.json" ]; then
    echo "already there"
    note synth "$shape: reused $model"
  else
    mkdir -p "$synth_root"
    if "$bin/kv-synth" --shape "$shape" --dtype bf16 --out "$model" 2>&1 | tee "$logs/bench_engine.log" | tail -2; then
      note synth "$shape bf16: $(tail -1 "$logs/bench_engine.log" | grep -oE '[0-9.]+ GB in.*' || echo written) (total $(( $(date +%s) - t ))s)"
    else
      note synth "FAILED (see bench_engine.log)"
      status=1
    fi
  fi

  if [ -f "$model/config.json" ]; then
    stage "kv-bench-engine-cuda (bf16, CUDA graphs on)"
    t=$(date +%s)
    # Log lines go, except the engine's choice of GEMV kernel per projection.
    timeout 300 "$bin/kv-bench-engine-cuda" --model "$model" 2>&1 | awk '!/^ts=/ || /msg="decode projections"/' |
      tee -a "$logs/bench_engine.log"
    rc=${PIPESTATUS[0]}
    [ $rc -eq 0 ] || { status=1; note bench "kv-bench-engine-cuda FAILED (rc $rc)"; }
    note bench "kv-bench-engine-cuda: $(( $(date +%s) - t ))s; $(grep -oE 'load [0-9.]+ s.*engine create [0-9.]+ s' "$logs/bench_engine.log" | head -1)"
  fi

  if [ "$(now)" -lt $(( budget - 180 )) ]; then
    stage "kv-bench-transport (cuda-ipc; nccl with two GPUs)"
    timeout 60 "$bin/kv-bench-transport" 2>&1 | tee "$logs/bench_transport.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { status=1; note bench "kv-bench-transport FAILED"; }
  else
    note bench "kv-bench-transport skipped: $(now)s of ${budget}s used"
  fi

  if [ "$(now)" -lt $(( budget - 150 )) ]; then
    stage "kv-bench-cuda (kernels)"
    timeout 150 "$bin/kv-bench-cuda" 2>&1 | tee "$logs/bench_cuda.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { status=1; note bench "kv-bench-cuda FAILED"; }
  else
    note bench "kv-bench-cuda skipped: $(now)s of ${budget}s used"
  fi

  left=$(( budget - $(now) - 20 ))
  if [ "$left" -gt 60 ]; then
    stage "torch_reference.py ($shape, ${left}s left)"
    PYTHONUNBUFFERED=1 timeout "$left" python3 bench/torch_reference.py --shape "$shape" 2>&1 | tee "$logs/torch.log"
    rc=${PIPESTATUS[0]}
    case $rc in
      0) ;;
      77) note torch "skipped: $(tail -1 "$logs/torch.log")" ;;
      124) note torch "cut at the time budget (rows above are complete)" ;;
      *) note torch "FAILED (rc $rc, see torch.log)"; status=1 ;;
    esac
  else
    note torch "skipped: $(now)s of ${budget}s used"
  fi
fi

{
  echo
  echo "================ gpu-check summary ($(now)s) ================"
  printf '%s\n' "${summary[@]}"
  if [ -f "$logs/bench_engine.log" ]; then
    echo "-- engine ($shape bf16): measured vs floor"
    grep -E "^floors:" "$logs/bench_engine.log" | head -1
    grep -E 'msg="decode projections"' "$logs/bench_engine.log" | head -1 | sed 's/.*msg="decode projections"/gemv choice:/'
    grep -E "^\| (prefill|decode)" "$logs/bench_engine.log"
  fi
  if [ -f "$logs/bench_cuda.log" ]; then
    echo "-- kernels (kv-bench-cuda)"
    grep -E "^(copy|gemm|gemv|wgemv|prefill attn|decode attn)" "$logs/bench_cuda.log"
  fi
  if [ -f "$logs/bench_transport.log" ]; then
    echo "-- KV transports between two processes (kv-bench-transport)"
    grep -E "^(kv-bench-transport:|\| )" "$logs/bench_transport.log"
  fi
  if [ -f "$logs/torch.log" ]; then
    echo "-- PyTorch reference"
    grep -E "floors:|^\| (sdpa|torch)" "$logs/torch.log"
  fi
  echo "logs: $logs; exit status $status"
} | tee "$logs/summary.txt"
exit $status
